/*
 * batches.h - Batch payloads built by hand, for tests that speak the wire protocol themselves
 * (hostile peers, overlapping ranges, sources fed without a client).
 */
#ifndef TT_TEST_BATCHES_H
#define TT_TEST_BATCHES_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* out := a Batch payload for instance with n one-word log events, sequence numbers first_seq ..
 * first_seq + n - 1, all at one fixed timestamp. */
void tt_test_batch_payload(tt__buf *out, const uint8_t inst[16], uint64_t first_seq, int n);

/* The same at time_ns (Unix ns): an agent whose clock is off. */
void tt_test_batch_payload_at(tt__buf *out, const uint8_t inst[16], uint64_t first_seq, int n,
                              uint64_t time_ns);

/* A batch frame whose body is body zero bytes (no valid batch: refused once complete), prefix
 * included, from calloc (the caller frees it): what a peer sends to hold a partial frame on the
 * ingest budget. */
uint8_t *tt_test_blank_batch_frame(size_t body);

#endif

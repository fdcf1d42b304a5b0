/*
 * nats_stored.h - a message as JetStream's STREAM.MSG.GET API answers it (the reply's
 * "message" object: "subject", "seq", "hdrs" and "data", the last two in base64), decoded into
 * what the NATS source needs to handle it like a fetched one: its sequence, subject,
 * Nats-Msg-Id header and body. The stalled-durable check's sweep reads messages this way
 * (nats.h). Bounded before anything is allocated; no libnats here, so that
 * tests/fuzz/fuzz_nats_stored.c drives it alone.
 */
#ifndef TT_COLLECTOR_NATS_STORED_H
#define TT_COLLECTOR_NATS_STORED_H

#include <stddef.h>
#include <stdint.h>

#include "collector/source/nats_msg.h"

struct nats_stored {
    uint64_t seq;
    char subject[256];
    char msg_id[NATS_MSG_ID_MAX + 1]; /* "" when the header is absent */
    int has_msg_id;
    uint8_t *data; /* the body (malloc'ed; NULL when empty) */
    size_t len;
};

/* Decode the whole reply (json, n bytes) of a STREAM.MSG.GET request. 0 on success (free with
 * nats_stored_free); 1 when the reply says there is no such message; -1 when it is malformed,
 * a field is above its limit (the body above max_data bytes, the subject or id above their
 * arrays) or memory runs out, with a static text in *why. */
int nats_stored_parse(const char *json, size_t n, size_t max_data, struct nats_stored *out,
                      const char **why);
void nats_stored_free(struct nats_stored *m);

#endif

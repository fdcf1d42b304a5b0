/*
 * batches.c - Batch payloads built by hand (batches.h), field numbers from proto/telltale.proto.
 */
#include "batches.h"

#include <stdlib.h>

#include "common/pb.h"
#include "common/wire.h"
#include "test.h"

void tt_test_batch_payload(tt__buf *out, const uint8_t inst[16], uint64_t first_seq, int n)
{
    tt_test_batch_payload_at(out, inst, first_seq, n, 1700000000000000000ull);
}

void tt_test_batch_payload_at(tt__buf *out, const uint8_t inst[16], uint64_t first_seq, int n,
                              uint64_t time_ns)
{
    uint8_t log[16], ev[32], head[64], *p;
    p = tt__pb_put_uint(log, 1, 9); /* Log.severity: info */
    p = tt__pb_put_bytes(p, 2, "x", 1);
    size_t ln = (size_t)(p - log);
    p = tt__pb_put_sint(ev, 1, 0); /* Event.time_delta */
    p = tt__pb_put_bytes(p, 3, log, ln);
    size_t en = (size_t)(p - ev);
    p = tt__pb_put_bytes(head, 1, inst, 16); /* Batch.instance, first_seq, base time */
    p = tt__pb_put_uint(p, 2, first_seq);
    p = tt__pb_put_fixed64(p, 3, time_ns);
    tt__buf_reset(out);
    CHECK_OK(tt__buf_append(out, head, (size_t)(p - head)));
    for (int i = 0; i < n; i++) {
        uint8_t one[40];
        uint8_t *q = tt__pb_put_bytes(one, 4, ev, en); /* Batch.events */
        CHECK_OK(tt__buf_append(out, one, (size_t)(q - one)));
    }
}

uint8_t *tt_test_blank_batch_frame(size_t body)
{
    uint8_t *frame = calloc(1, TT_FRAME_PREFIX + body);
    CHECK(frame != NULL);
    frame[0] = (uint8_t)body;
    frame[1] = (uint8_t)(body >> 8);
    frame[2] = (uint8_t)(body >> 16);
    frame[3] = (uint8_t)(body >> 24);
    frame[8] = TT_FT_BATCH;
    return frame;
}

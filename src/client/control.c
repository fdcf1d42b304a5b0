/*
 * control.c - orders from the collector that arrive over the ack channel (proto Control), on
 * the worker thread: Halt{session, reason}, Resume{session, reason}, GuardPolicy and the
 * compliance policy. Decoded with the bounds-checked reader; a malformed order is ignored (the
 * collector is trusted no more than any input). The guard (guard.c) applies them thread-safely,
 * so producers see them at their next token.
 */
#include "client/client.h"
#include "common/pb.h"

/* Halt{session, reason} (resume 0) or Resume{session, reason} (resume 1). */
static void on_halt(tt_client *c, const uint8_t *p, size_t n, int resume)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    const uint8_t *session = NULL, *reason = NULL;
    size_t session_len = 0, reason_len = 0;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == 1 && wt == TT_PB_LEN) {
            session = tt__pb_bytes(&r, &session_len);
        } else if (field == 2 && wt == TT_PB_LEN) {
            reason = tt__pb_bytes(&r, &reason_len);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (r.err) {
        return;
    }
    if (resume) {
        tt__guard_resume(c, (const char *)session, session_len);
    } else {
        tt__guard_halt(c, (const char *)session, session_len, (const char *)reason, reason_len);
    }
}

static void on_policy(tt_client *c, const uint8_t *p, size_t n)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    tt_guard_policy pol;
    if (tt_guard_policy_get(c, &pol) != 0) {
        return;
    }
    /* Fields absent from the order keep their proto3 default, zero: a full policy each time. */
    pol = (tt_guard_policy){.window = pol.window, .action = pol.action};
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == 1 && wt == TT_PB_I32) {
            pol.token_min_prob = tt__pb_float(&r);
        } else if (field == 2 && wt == TT_PB_I32) {
            pol.window_min_confidence = tt__pb_float(&r);
        } else if (field == 3 && wt == TT_PB_VARINT) {
            pol.window = (uint32_t)tt__pb_varint(&r);
        } else if (field == 4 && wt == TT_PB_I32) {
            pol.response_min_confidence = tt__pb_float(&r);
        } else if (field == 5 && wt == TT_PB_VARINT) {
            pol.action = (uint32_t)tt__pb_varint(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (!r.err) {
        tt_guard_policy_set(c, &pol); /* refuses an invalid policy */
    }
}

void tt__control_handle(tt_client *c, const uint8_t *payload, size_t n)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, payload, n);
    uint32_t field, wt;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field >= 1 && field <= 4 && wt == TT_PB_LEN) {
            size_t len;
            const uint8_t *p = tt__pb_bytes(&r, &len);
            if (r.err) {
                return;
            }
            if (field == 1 || field == 4) {
                on_halt(c, p, len, field == 4);
            } else if (field == 2) {
                on_policy(c, p, len);
            } else {
                /* The collector checked the text; an invalid one leaves the current policy. */
                tt_comply_policy_set(c, len ? (const char *)p : NULL, len, NULL, 0);
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
}

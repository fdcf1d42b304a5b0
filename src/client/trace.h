/*
 * trace.h - W3C trace context of steps and responses (docs/api.md, "Trace context").
 *
 * Every step and response carries a trace id (16 bytes), its own span id (8 bytes, never 0) and
 * its parent's span id (0 for a root span). Span ids come from a per-client generator without
 * state: a keyed bijection (the murmur3 finalizer) of the step id under a key from the client's
 * random instance id, so distinct steps get distinct span ids and any thread (or the worker) can
 * compute a step's span id from its id alone. A response's span id is its id (already random).
 * Trace ids are taken from a traceparent, inherited by the worker from the parent step (open
 * steps, stepmap.h), taken from a session's default (tt_session_traceparent), or made from the
 * root step's id under the same key.
 */
#ifndef TT_CLIENT_TRACE_H
#define TT_CLIENT_TRACE_H

#include <stdint.h>
#include <string.h>

/* A trace context as it travels in a ring record: trace id (16 bytes), then the parent span id
 * (u64, host order). */
#define TT_TRACE_CTX_BYTES 24
/* tt_rec_hdr.aux of a STEP_BEGIN record: low byte the kind, this bit: a context follows. */
#define TT_STEP_AUX_TRACED 0x100u
/* tt_rec_hdr.aux of an ENCODED record holding a ResponseBegin whose trace id and parent span id
 * (the last 36 bytes of the body) are for the worker to fill; the step id (u64) follows the
 * encoded bytes in the record. */
#define TT_ENC_AUX_TRACE_FILL 1u
/* The trace fields at the end of such a ResponseBegin: trace_id (5), span_id (6),
 * parent_span_id (7). */
#define TT_RESP_TRACE_BYTES 36

static inline uint64_t tt__trace_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* The span id of step id under instance (never 0). */
static inline uint64_t tt__step_span(const uint8_t instance[16], uint64_t id)
{
    uint64_t k;
    memcpy(&k, instance, 8);
    uint64_t s = tt__trace_mix(id ^ k);
    return s ? s : (k | 1);
}

/* A fresh trace id for a root of id (step id, or response id with salt 1), never all zero. */
static inline void tt__trace_fresh(const uint8_t instance[16], uint64_t id, uint64_t salt,
                                   uint8_t out[16])
{
    uint64_t k0, k1;
    memcpy(&k0, instance, 8);
    memcpy(&k1, instance + 8, 8);
    uint64_t a = tt__trace_mix(id ^ k1 ^ (salt * 0x9e3779b97f4a7c15ull));
    uint64_t b = tt__trace_mix(a ^ k0 ^ 0x6a09e667f3bcc909ull);
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(a >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(b >> (56 - 8 * i));
    }
    out[15] |= (uint8_t)((a | b) == 0);
}

/* Parse a W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>" strictly (lowercase hex, version 00
 * exactly 55 characters, or a later version other than ff with at least those fields followed
 * by '-' or the end; trace id and parent id not all zero) into ctx (TT_TRACE_CTX_BYTES).
 * Returns 0 or TT_EINVAL. */
int tt__traceparent_parse(const char *s, uint8_t ctx[TT_TRACE_CTX_BYTES]);

/* The default context of session (NULL or "": the client-wide default) into ctx: 1 if one is
 * set, else 0. Any thread; takes the client's trace lock (not for event calls). */
struct tt_client;
int tt__trace_session_ctx(struct tt_client *c, const uint8_t *session, uint32_t len,
                          uint8_t ctx[TT_TRACE_CTX_BYTES]);
void tt__trace_fini(struct tt_client *c);

#endif

/*
 * encode.c - the worker's encoder: ring records in, protobuf Event messages out
 * (proto/telltale.proto). Nested messages are written with a 3-byte hole for their length,
 * closed up once the length is known; events are far below the 2 MiB a 3-byte varint holds,
 * since max_event_bytes is at most 1 MiB.
 */
#include "client/encode.h"

#include <string.h>

#include "client/trace.h"
#include "common/pb.h"

typedef struct pw {
    uint8_t *base;
    size_t pos;
} pw;

/* A cursor over a ring record's payload (written by emit.c in host byte order). */
typedef struct rr {
    const uint8_t *p;
} rr;

static uint32_t rr_u32(rr *r)
{
    uint32_t v;
    memcpy(&v, r->p, 4);
    r->p += 4;
    return v;
}

static uint64_t rr_u64(rr *r)
{
    uint64_t v;
    memcpy(&v, r->p, 8);
    r->p += 8;
    return v;
}

static const uint8_t *rr_str(rr *r, uint32_t *n)
{
    *n = rr_u32(r);
    const uint8_t *s = r->p;
    r->p += *n;
    return s;
}

static size_t lp_begin(pw *w, uint32_t field)
{
    uint8_t *p = tt__pb_put_tag(w->base + w->pos, field, TT_PB_LEN);
    size_t mark = (size_t)(p - w->base);
    w->pos = mark + 3;
    return mark;
}

static void lp_end(pw *w, size_t mark)
{
    size_t n = w->pos - mark - 3;
    size_t vs = tt__pb_varint_size(n);
    if (vs < 3) {
        memmove(w->base + mark + vs, w->base + mark + 3, n);
    }
    tt__pb_put_varint(w->base + mark, n);
    w->pos = mark + vs + n;
}

static void put_uint(pw *w, uint32_t field, uint64_t v)
{
    w->pos = (size_t)(tt__pb_put_uint(w->base + w->pos, field, v) - w->base);
}

static void put_sint(pw *w, uint32_t field, int64_t v)
{
    w->pos = (size_t)(tt__pb_put_sint(w->base + w->pos, field, v) - w->base);
}

static void put_fixed64(pw *w, uint32_t field, uint64_t v)
{
    w->pos = (size_t)(tt__pb_put_fixed64(w->base + w->pos, field, v) - w->base);
}

static void put_double(pw *w, uint32_t field, double v)
{
    w->pos = (size_t)(tt__pb_put_double(w->base + w->pos, field, v) - w->base);
}

/* Strings are omitted when empty, as proto3 does. */
static void put_str(pw *w, uint32_t field, const uint8_t *s, uint32_t n)
{
    if (n) {
        w->pos = (size_t)(tt__pb_put_bytes(w->base + w->pos, field, s, n) - w->base);
    }
}

static void put_raw(pw *w, const uint8_t *s, size_t n)
{
    memcpy(w->base + w->pos, s, n);
    w->pos += n;
}

/* An attribute's value, of type, as emit.c wrote it: a bool in bool_bytes bytes (1 in a
 * tt_log record, the 8 of its tt_attr_value in a TT_LOG site's), the rest alike. */
static void encode_value(pw *w, rr *r, uint8_t type, size_t bool_bytes)
{
    uint32_t sl;
    double d;
    switch (type) {
    case TT_ATTR_STR: {
        const uint8_t *s = rr_str(r, &sl);
        /* An empty string value still has to say it is a string. */
        w->pos = (size_t)(tt__pb_put_bytes(w->base + w->pos, 2, s, sl) - w->base);
        break;
    }
    case TT_ATTR_INT:
        put_sint(w, 3, (int64_t)rr_u64(r));
        break;
    case TT_ATTR_DOUBLE:
        memcpy(&d, r->p, 8);
        r->p += 8;
        put_double(w, 4, d);
        break;
    case TT_ATTR_BOOL: {
        int b = 0; /* the first bytes of a tt_attr_value are its int b */
        memcpy(&b, r->p, bool_bytes == 1 ? 1 : sizeof b);
        r->p += bool_bytes;
        put_uint(w, 5, b ? 1 : 0);
        break;
    }
    }
}

static void encode_attrs(pw *w, rr *r, uint32_t field)
{
    uint32_t n = rr_u32(r);
    for (uint32_t i = 0; i < n; i++) {
        size_t m = lp_begin(w, field);
        uint32_t kl;
        const uint8_t *k = rr_str(r, &kl);
        put_str(w, 1, k, kl);
        uint8_t type = *r->p++;
        encode_value(w, r, type, 1);
        lp_end(w, m);
    }
}

static void encode_log(pw *w, const tt__rec_hdr *h, rr *r)
{
    uint32_t ls, lm;
    const uint8_t *session = rr_str(r, &ls);
    put_str(w, 2, session, ls);
    size_t m = lp_begin(w, 3);
    put_uint(w, 1, h->aux);
    const uint8_t *msg = rr_str(r, &lm);
    put_str(w, 2, msg, lm);
    encode_attrs(w, r, 3);
    lp_end(w, m);
}

/* A log of a TT_LOG site: the message and the keys from the site's registry entry, the rest
 * from the record (each value a string, or the 8 bytes of its tt_attr_value); the same fields
 * as encode_log writes. */
static void encode_log_site(pw *w, const tt__rec_hdr *h, rr *r)
{
    const tt__site_entry *e = tt__site_get(rr_u32(r));
    uint32_t ls;
    const uint8_t *session = rr_str(r, &ls);
    put_str(w, 2, session, ls);
    size_t m = lp_begin(w, 3);
    put_uint(w, 1, h->aux);
    if (e) { /* always: the id was registered before the record was written */
        put_str(w, 2, (const uint8_t *)e->message, e->message_len);
        for (uint32_t i = 0; i < e->nattrs; i++) {
            size_t ma = lp_begin(w, 3);
            put_str(w, 1, (const uint8_t *)e->keys[i], e->key_len[i]);
            encode_value(w, r, e->types[i], sizeof(tt_attr_value));
            lp_end(w, ma);
        }
    }
    lp_end(w, m);
}

static void encode_metric(pw *w, const tt__rec_hdr *h, rr *r)
{
    double value;
    memcpy(&value, r->p, 8);
    r->p += 8;
    uint32_t ls, ln, lu;
    const uint8_t *session = rr_str(r, &ls);
    put_str(w, 2, session, ls);
    size_t m = lp_begin(w, 4);
    put_uint(w, 1, h->aux);
    const uint8_t *name = rr_str(r, &ln);
    put_str(w, 2, name, ln);
    put_double(w, 3, value);
    const uint8_t *unit = rr_str(r, &lu);
    put_str(w, 4, unit, lu);
    encode_attrs(w, r, 5);
    lp_end(w, m);
}

/* The trace context of a root (no parent known): the session's default, else a new trace
 * made from id (salt 0 for a step, 1 for a response). */
static void root_trace(tt_client *c, const uint8_t *session, uint32_t ls, uint64_t id,
                       uint64_t salt, uint8_t trace[16], uint64_t *pspan)
{
    uint8_t ctx[TT_TRACE_CTX_BYTES];
    static const uint8_t zero[16];
    if (c && tt__trace_session_ctx(c, session, ls, ctx)) {
        memcpy(trace, ctx, 16);
        memcpy(pspan, ctx + 16, 8);
        return;
    }
    tt__trace_fresh(c ? c->instance : zero, id, salt, trace);
    *pspan = 0;
}

/* A step's trace id and parent span id: its own context, else its open parent's, else a
 * root's (a parent that already ended is no longer known: the step starts a trace). */
static void step_trace(tt_client *c, const tt__stepmap *steps, const uint8_t *ctx, uint64_t id,
                       uint64_t parent, const uint8_t *session, uint32_t ls, uint8_t trace[16],
                       uint64_t *pspan)
{
    static const uint8_t zero[16];
    const tt__step_info *pi;
    if (ctx) {
        memcpy(trace, ctx, 16);
        memcpy(pspan, ctx + 16, 8);
    } else if (parent && (pi = tt__stepmap_get(steps, parent)) != NULL) {
        memcpy(trace, pi->trace, 16);
        *pspan = tt__step_span(c ? c->instance : zero, parent);
    } else if (parent) {
        tt__trace_fresh(c ? c->instance : zero, id, 0, trace);
        *pspan = 0;
    } else {
        root_trace(c, session, ls, id, 0, trace, pspan);
    }
}

static void encode_step_begin(pw *w, const tt__rec_hdr *h, rr *r, tt__stepmap *steps, tt_client *c)
{
    static const uint8_t zero[16];
    uint64_t id = rr_u64(r), parent = rr_u64(r);
    uint32_t kind = h->aux & 0xffu;
    uint32_t ls, ln, lq;
    const uint8_t *session = rr_str(r, &ls);
    put_str(w, 2, session, ls);
    size_t m = lp_begin(w, 5);
    put_fixed64(w, 1, id);
    if (parent) {
        put_fixed64(w, 2, parent);
    }
    put_uint(w, 3, kind);
    const uint8_t *name = rr_str(r, &ln);
    put_str(w, 4, name, ln);
    const uint8_t *query = rr_str(r, &lq);
    put_str(w, 5, query, lq);
    uint8_t trace[16];
    uint64_t pspan;
    step_trace(c, steps, (h->aux & TT_STEP_AUX_TRACED) ? r->p : NULL, id, parent, session, ls,
               trace, &pspan);
    w->pos = (size_t)(tt__pb_put_bytes(w->base + w->pos, 6, trace, 16) - w->base);
    put_fixed64(w, 7, tt__step_span(c ? c->instance : zero, id));
    if (pspan) {
        put_fixed64(w, 8, pspan);
    }
    lp_end(w, m);
    tt__stepmap_put(steps, id, kind, session, ls, name, ln, trace);
}

/* An encoded ResponseBegin whose trace id and parent span are the worker's to fill: they are
 * the last TT_RESP_TRACE_BYTES of the event (trace_id, span_id, parent_span_id), and the step id
 * follows the encoded bytes. */
static void fill_response_trace(uint8_t *ev, uint32_t n, const uint8_t *after,
                                const tt__stepmap *steps, tt_client *c)
{
    static const uint8_t zero[16];
    if (n < TT_RESP_TRACE_BYTES + 2) {
        return;
    }
    uint64_t step, rid;
    memcpy(&step, after, 8);
    uint8_t *t = ev + n - TT_RESP_TRACE_BYTES; /* tag 5, len 16, trace id; tag 6, span; tag 7 */
    memcpy(&rid, t + 19, 8);                   /* fixed64 is little-endian on the wire */
    uint8_t trace[16];
    uint64_t pspan;
    const tt__step_info *si;
    if (step && (si = tt__stepmap_get(steps, step)) != NULL) {
        memcpy(trace, si->trace, 16);
        pspan = tt__step_span(c ? c->instance : zero, step);
    } else {
        /* The session: the Event's field 2 when it comes first. */
        const uint8_t *session = NULL;
        uint32_t ls = 0;
        if (ev[0] == 0x12 && n > 2 && ev[1] < 0x80) {
            session = ev + 2;
            ls = ev[1];
        } else if (ev[0] == 0x12 && n > 3 && ev[2] < 0x80) {
            session = ev + 3;
            ls = (uint32_t)(ev[1] & 0x7f) | (uint32_t)ev[2] << 7;
        }
        if (step) {
            tt__trace_fresh(c ? c->instance : zero, rid, 1, trace);
            pspan = 0;
        } else {
            root_trace(c, session, ls, rid, 1, trace, &pspan);
        }
    }
    memcpy(t + 2, trace, 16);
    for (int i = 0; i < 8; i++) {
        t[28 + i] = (uint8_t)(pspan >> (8 * i));
    }
}

static void encode_step_end(pw *w, const tt__rec_hdr *h, rr *r, const tt__clock_cal *cal,
                            tt__stepmap *steps)
{
    uint64_t id = rr_u64(r), start = rr_u64(r);
    int64_t result = (int64_t)rr_u64(r);
    uint32_t le;
    const uint8_t *err = rr_str(r, &le);
    /* The begin's session and name travel with the end, so that a reader of the end alone
     * (a query by session, tail, the live stream) knows which step it closes. */
    tt__step_info *si = tt__stepmap_take(steps, id);
    if (si) {
        put_str(w, 2, si->data, si->session_len);
    }
    size_t m = lp_begin(w, 6);
    put_fixed64(w, 1, id);
    if (h->aux) {
        put_uint(w, 2, h->aux);
    }
    put_uint(w, 3, h->ticks > start ? tt__clock_dur(cal, h->ticks - start) : 0);
    put_sint(w, 4, result);
    put_str(w, 5, err, le);
    if (si) {
        put_str(w, 6, si->data + si->session_len, si->name_len);
        put_uint(w, 7, si->kind);
        tt__step_info_free(si);
    }
    lp_end(w, m);
}

void tt__encode_record(tt__buf *b, const tt__rec_hdr *h, uint64_t time, uint64_t base,
                       const tt__clock_cal *cal, tt__stepmap *steps, tt_client *c)
{
    pw w = {b->data, b->len};
    rr r = {(const uint8_t *)h + TT_REC_HDR};
    size_t m = lp_begin(&w, 4);
    put_sint(&w, 1, (int64_t)(time - base));
    switch (h->kind) {
    case TT_REC_LOG:
        encode_log(&w, h, &r);
        break;
    case TT_REC_LOG_SITE:
        encode_log_site(&w, h, &r);
        break;
    case TT_REC_METRIC:
        encode_metric(&w, h, &r);
        break;
    case TT_REC_STEP_BEGIN:
        encode_step_begin(&w, h, &r, steps, c);
        break;
    case TT_REC_STEP_END:
        encode_step_end(&w, h, &r, cal, steps);
        break;
    case TT_REC_ENCODED: {
        uint32_t n = rr_u32(&r);
        uint8_t *ev = w.base + w.pos;
        put_raw(&w, r.p, n);
        if (h->aux & TT_ENC_AUX_TRACE_FILL) {
            fill_response_trace(ev, n, r.p + n, steps, c);
        }
        break;
    }
    default:
        break;
    }
    lp_end(&w, m);
    b->len = w.pos;
}

size_t tt__encode_batch_header(uint8_t *buf, size_t end, const uint8_t instance[16],
                               uint64_t first_seq, uint64_t base_unix_ns)
{
    uint8_t tmp[TT_BATCH_HDR_MAX];
    uint8_t *p = tt__pb_put_bytes(tmp, 1, instance, 16);
    p = tt__pb_put_uint(p, 2, first_seq);
    p = tt__pb_put_fixed64(p, 3, base_unix_ns);
    size_t n = (size_t)(p - tmp);
    memcpy(buf + end - n, tmp, n);
    return end - n;
}

int tt__encode_stats(tt__buf *b, const tt_stats *s)
{
    int rc = tt__buf_reserve(b, 16 + 11 * 6 + TT_DROP__COUNT * 10);
    if (rc) {
        return rc;
    }
    pw w = {b->data, b->len};
    size_t m = lp_begin(&w, 5);
    put_uint(&w, 1, s->emitted);
    put_uint(&w, 2, s->acked);
    put_uint(&w, 3, s->possibly_delivered);
    size_t d = lp_begin(&w, 4);
    for (int i = 0; i < TT_DROP__COUNT; i++) {
        w.pos = (size_t)(tt__pb_put_varint(w.base + w.pos, s->dropped[i]) - w.base);
    }
    lp_end(&w, d);
    put_uint(&w, 5, s->buffered);
    put_uint(&w, 6, s->spooled);
    lp_end(&w, m);
    b->len = w.pos;
    return 0;
}

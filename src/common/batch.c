/*
 * batch.c - the Batch decoder. tt__batch_parse walks the whole payload once and checks every
 * field it knows: wire types, lengths, counts against limits, a body on every event. Unknown
 * fields are skipped (a newer client may add some). Nothing is allocated.
 */
#include "common/batch.h"

#include <math.h>
#include <string.h>

#include "telltale.h"

static const char *const kind_names[TT_EV__MAX + 1] = {
    [TT_EV_LOG] = "log",
    [TT_EV_METRIC] = "metric",
    [TT_EV_STEP_BEGIN] = "step_begin",
    [TT_EV_STEP_END] = "step_end",
    [TT_EV_TOKENS] = "tokens",
    [TT_EV_RESPONSE_BEGIN] = "response_begin",
    [TT_EV_RESPONSE_END] = "response_end",
    [TT_EV_TENSOR] = "tensor",
    [TT_EV_GUARD] = "guard",
};

const char *tt__ev_kind_name(int kind)
{
    if (kind < TT_EV_LOG || kind > TT_EV__MAX) {
        return NULL;
    }
    return kind_names[kind];
}

uint32_t tt__ev_kind_mask(const char *name)
{
    if (strcmp(name, "step") == 0) {
        return (1u << TT_EV_STEP_BEGIN) | (1u << TT_EV_STEP_END);
    }
    if (strcmp(name, "response") == 0) {
        return (1u << TT_EV_RESPONSE_BEGIN) | (1u << TT_EV_RESPONSE_END);
    }
    for (int k = TT_EV_LOG; k <= TT_EV__MAX; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            return 1u << k;
        }
    }
    return 0;
}

/* Check that body is a well-formed message, counting attributes under attr_field. */
static int check_message(tt__bstr body, uint32_t attr_field, uint32_t max_attrs)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, body.p, body.n);
    uint32_t field, wt, attrs = 0;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == attr_field && wt == TT_PB_LEN) {
            size_t n;
            const uint8_t *p = tt__pb_bytes(&r, &n);
            /* An attribute is itself a message: key and one value. */
            tt__pb_reader ar;
            tt__pb_reader_init(&ar, p, n);
            uint32_t af, awt;
            while (tt__pb_next(&ar, &af, &awt) == 1) {
                tt__pb_skip(&ar, awt);
            }
            if (ar.err || ++attrs > max_attrs) {
                return -1;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

static int check_body(int kind, tt__bstr body, const tt__batch_limits *lim)
{
    switch (kind) {
    case TT_EV_LOG:
        return check_message(body, 3, lim->max_attrs);
    case TT_EV_METRIC:
        return check_message(body, 5, lim->max_attrs);
    case TT_EV_RESPONSE_BEGIN:
        return check_message(body, 3, lim->max_attrs);
    default:
        return check_message(body, 0, lim->max_attrs);
    }
}

/* Decode one Event message; returns 0 or -1. */
static int event_decode(const uint8_t *p, size_t n, int64_t *delta, tt__event *ev)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    memset(ev, 0, sizeof *ev);
    *delta = 0;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == 1 && wt == TT_PB_VARINT) {
            *delta = tt__pb_unzigzag(tt__pb_varint(&r));
        } else if (field == 2 && wt == TT_PB_LEN) {
            ev->session.p = tt__pb_bytes(&r, &ev->session.n);
        } else if (field >= TT_EV_LOG && field <= TT_EV__MAX && wt == TT_PB_LEN) {
            if (ev->kind) {
                return -1; /* a oneof holds one body */
            }
            ev->kind = (int)field;
            ev->body.p = tt__pb_bytes(&r, &ev->body.n);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return (r.err || ev->kind == 0) ? -1 : 0;
}

static int stats_decode(tt__bstr s, tt__client_stats *st)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, s.p, s.n);
    uint32_t field, wt;
    memset(st, 0, sizeof *st);
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == 4 && wt == TT_PB_LEN) {
            size_t n;
            const uint8_t *p = tt__pb_bytes(&r, &n);
            tt__pb_reader d;
            tt__pb_reader_init(&d, p, n);
            while (d.p < d.end && !d.err) {
                uint64_t v = tt__pb_varint(&d);
                if (st->n_dropped < TT_DROP_SLOTS) {
                    st->dropped[st->n_dropped++] = v;
                }
            }
            if (d.err) {
                return -1;
            }
        } else if (wt == TT_PB_VARINT && field >= 1 && field <= 6) {
            uint64_t v = tt__pb_varint(&r);
            uint64_t *dst[] = {NULL, &st->emitted,  &st->acked,  &st->possibly_delivered,
                               NULL, &st->buffered, &st->spooled};
            if (dst[field]) {
                *dst[field] = v;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

static int header_field(tt__batch *b, tt__pb_reader *r, uint32_t field, uint32_t wt,
                        int *have_instance, const char **why)
{
    size_t n;
    const uint8_t *p;
    if (field == 1 && wt == TT_PB_LEN) {
        p = tt__pb_bytes(r, &n);
        if (n != 16) {
            *why = "instance is not 16 bytes";
            return -1;
        }
        memcpy(b->instance, p, 16);
        *have_instance = 1;
    } else if (field == 2 && wt == TT_PB_VARINT) {
        b->first_seq = tt__pb_varint(r);
    } else if (field == 3 && wt == TT_PB_I64) {
        b->base_time = tt__pb_fixed64(r);
    } else if (field == 5 && wt == TT_PB_LEN) {
        p = tt__pb_bytes(r, &n);
        if (stats_decode((tt__bstr){p, n}, &b->stats) != 0) {
            *why = "bad client stats";
            return -1;
        }
        b->has_stats = 1;
    } else {
        tt__pb_skip(r, wt);
    }
    return 0;
}

/* Count an event in its session's summary (times as deltas until the base is known). The
 * last match is tried first: consecutive events usually share their session. */
static void session_add(tt__batch *b, tt__bstr name, int64_t delta, uint32_t *last)
{
    tt__batch_session *s = b->n_sessions ? &b->sessions[*last] : NULL;
    if (!s || s->name.n != name.n || memcmp(s->name.p, name.p, name.n) != 0) {
        s = NULL;
        for (uint32_t i = 0; i < b->n_sessions && !s; i++) {
            tt__batch_session *c = &b->sessions[i];
            if (c->name.n == name.n && memcmp(c->name.p, name.p, name.n) == 0) {
                s = c;
                *last = i;
            }
        }
    }
    if (!s) {
        if (b->n_sessions == TT_BATCH_SESSIONS) {
            b->sessions_overflow = 1;
            return;
        }
        *last = b->n_sessions;
        s = &b->sessions[b->n_sessions++];
        *s = (tt__batch_session){name, delta, delta, 0};
    }
    s->t_min = delta < s->t_min ? delta : s->t_min;
    s->t_max = delta > s->t_max ? delta : s->t_max;
    s->events++;
}

int tt__batch_parse(tt__batch *b, const uint8_t *payload, size_t n, const tt__batch_limits *lim,
                    const char **why)
{
    uint32_t last_session = 0;
    memset(b, 0, sizeof *b);
    b->data = payload;
    b->len = n;
    *why = "malformed protobuf";
    tt__pb_reader r;
    tt__pb_reader_init(&r, payload, n);
    uint32_t field, wt;
    int have_instance = 0;
    /* Event times are checked after the header, since the base may come after the events. */
    int64_t dmin = INT64_MAX, dmax = INT64_MIN;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field != 4 || wt != TT_PB_LEN) {
            if (header_field(b, &r, field, wt, &have_instance, why) != 0) {
                return -1;
            }
            continue;
        }
        size_t len;
        const uint8_t *p = tt__pb_bytes(&r, &len);
        tt__event ev;
        int64_t delta;
        if (r.err || event_decode(p, len, &delta, &ev) != 0) {
            *why = "malformed event";
            return -1;
        }
        if (check_body(ev.kind, ev.body, lim) != 0) {
            *why = "malformed event body or too many attributes";
            return -1;
        }
        if (++b->n_events > lim->max_events) {
            *why = "too many events in one batch";
            return -1;
        }
        b->kinds |= 1u << ev.kind;
        b->has_session |= ev.session.n > 0;
        if (ev.session.n && !b->sessions_overflow) {
            session_add(b, ev.session, delta, &last_session);
        }
        dmin = delta < dmin ? delta : dmin;
        dmax = delta > dmax ? delta : dmax;
    }
    if (r.err) {
        return -1;
    }
    if (!have_instance) {
        *why = "batch without instance";
        return -1;
    }
    if (b->n_events && b->first_seq == 0) {
        *why = "sequence numbers start at 1";
        return -1;
    }
    if (b->n_events && b->first_seq > UINT64_MAX - b->n_events) {
        *why = "sequence overflow";
        return -1;
    }
    if (b->n_events) {
        /* Times wrap rather than trap: a garbage delta makes a garbage time, not a crash. */
        b->t_min = (int64_t)(b->base_time + (uint64_t)dmin);
        b->t_max = (int64_t)(b->base_time + (uint64_t)dmax);
    }
    for (uint32_t i = 0; i < b->n_sessions; i++) {
        tt__batch_session *ss = &b->sessions[i];
        ss->t_min = (int64_t)(b->base_time + (uint64_t)ss->t_min);
        ss->t_max = (int64_t)(b->base_time + (uint64_t)ss->t_max);
    }
    tt__pb_reader_init(&b->it, payload, n);
    b->next_seq = b->first_seq;
    return 0;
}

int tt__batch_next(tt__batch *b, tt__event *ev)
{
    uint32_t field, wt;
    while (tt__pb_next(&b->it, &field, &wt) == 1) {
        if (field != 4 || wt != TT_PB_LEN) {
            tt__pb_skip(&b->it, wt);
            continue;
        }
        size_t len;
        const uint8_t *p = tt__pb_bytes(&b->it, &len);
        int64_t delta;
        if (event_decode(p, len, &delta, ev) != 0) {
            return 0;
        }
        ev->time = (int64_t)(b->base_time + (uint64_t)delta);
        ev->seq = b->next_seq++;
        ev->clock_skew_ms = b->clock_skew_ms;
        return 1;
    }
    return 0;
}

void tt__attr_iter_init(tt__attr_iter *it, tt__bstr body, uint32_t field)
{
    tt__pb_reader_init(&it->r, body.p, body.n);
    it->field = field;
}

static void attr_decode(const uint8_t *p, size_t n, tt__attr_val *a)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    memset(a, 0, sizeof *a);
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == 1 && wt == TT_PB_LEN) {
            a->key.p = tt__pb_bytes(&r, &a->key.n);
        } else if (field == 2 && wt == TT_PB_LEN) {
            a->type = TT_ATTR_STR;
            a->s.p = tt__pb_bytes(&r, &a->s.n);
        } else if (field == 3 && wt == TT_PB_VARINT) {
            a->type = TT_ATTR_INT;
            a->i = tt__pb_unzigzag(tt__pb_varint(&r));
        } else if (field == 4 && wt == TT_PB_I64) {
            a->type = TT_ATTR_DOUBLE;
            a->d = tt__pb_double(&r);
        } else if (field == 5 && wt == TT_PB_VARINT) {
            a->type = TT_ATTR_BOOL;
            a->b = tt__pb_varint(&r) != 0;
        } else {
            tt__pb_skip(&r, wt);
        }
    }
}

int tt__attr_next(tt__attr_iter *it, tt__attr_val *a)
{
    uint32_t field, wt;
    while (tt__pb_next(&it->r, &field, &wt) == 1) {
        if (field == it->field && wt == TT_PB_LEN) {
            size_t n;
            const uint8_t *p = tt__pb_bytes(&it->r, &n);
            attr_decode(p, n, a);
            return 1;
        }
        tt__pb_skip(&it->r, wt);
    }
    return 0;
}

#define DECODE_LOOP(body)                                                                          \
    tt__pb_reader r;                                                                               \
    tt__pb_reader_init(&r, (body).p, (body).n);                                                    \
    uint32_t field, wt;                                                                            \
    while (tt__pb_next(&r, &field, &wt) == 1)

int tt__ev_log_decode(tt__bstr body, tt__ev_log *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_VARINT) {
            out->severity = (uint32_t)tt__pb_varint(&r);
        } else if (field == 2 && wt == TT_PB_LEN) {
            out->message.p = tt__pb_bytes(&r, &out->message.n);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

int tt__ev_metric_decode(tt__bstr body, tt__ev_metric *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_VARINT) {
            out->kind = (uint32_t)tt__pb_varint(&r);
        } else if (field == 2 && wt == TT_PB_LEN) {
            out->name.p = tt__pb_bytes(&r, &out->name.n);
        } else if (field == 3 && wt == TT_PB_I64) {
            out->value = tt__pb_double(&r);
        } else if (field == 4 && wt == TT_PB_LEN) {
            out->unit.p = tt__pb_bytes(&r, &out->unit.n);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

/* A trace id field: kept when it is 16 bytes and not all zero (the W3C invalid id), else
 * ignored as if absent. */
static void trace_id(tt__pb_reader *r, uint8_t out[16], int *has)
{
    size_t n;
    const uint8_t *p = tt__pb_bytes(r, &n);
    uint8_t any = 0;
    for (size_t i = 0; p && n == 16 && i < 16; i++) {
        any |= p[i];
    }
    if (p && n == 16 && any) {
        memcpy(out, p, 16);
        *has = 1;
    }
}

int tt__ev_step_begin_decode(tt__bstr body, tt__ev_step_begin *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_I64) {
            out->step_id = tt__pb_fixed64(&r);
        } else if (field == 2 && wt == TT_PB_I64) {
            out->parent_id = tt__pb_fixed64(&r);
        } else if (field == 3 && wt == TT_PB_VARINT) {
            out->kind = (uint32_t)tt__pb_varint(&r);
        } else if (field == 4 && wt == TT_PB_LEN) {
            out->name.p = tt__pb_bytes(&r, &out->name.n);
        } else if (field == 5 && wt == TT_PB_LEN) {
            out->query.p = tt__pb_bytes(&r, &out->query.n);
        } else if (field == 6 && wt == TT_PB_LEN) {
            trace_id(&r, out->trace_id, &out->has_trace);
        } else if (field == 7 && wt == TT_PB_I64) {
            out->span_id = tt__pb_fixed64(&r);
        } else if (field == 8 && wt == TT_PB_I64) {
            out->parent_span_id = tt__pb_fixed64(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

int tt__ev_step_end_decode(tt__bstr body, tt__ev_step_end *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_I64) {
            out->step_id = tt__pb_fixed64(&r);
        } else if (field == 2 && wt == TT_PB_VARINT) {
            out->status = (uint32_t)tt__pb_varint(&r);
        } else if (field == 3 && wt == TT_PB_VARINT) {
            out->duration_ns = tt__pb_varint(&r);
        } else if (field == 4 && wt == TT_PB_VARINT) {
            out->result_bytes = tt__pb_unzigzag(tt__pb_varint(&r));
        } else if (field == 5 && wt == TT_PB_LEN) {
            out->error.p = tt__pb_bytes(&r, &out->error.n);
        } else if (field == 6 && wt == TT_PB_LEN) {
            out->name.p = tt__pb_bytes(&r, &out->name.n);
        } else if (field == 7 && wt == TT_PB_VARINT) {
            out->kind = (uint32_t)tt__pb_varint(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

int tt__ev_response_begin_decode(tt__bstr body, tt__ev_response_begin *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_I64) {
            out->response_id = tt__pb_fixed64(&r);
        } else if (field == 2 && wt == TT_PB_LEN) {
            out->model.p = tt__pb_bytes(&r, &out->model.n);
        } else if (field == 4 && wt == TT_PB_I64) {
            out->step_id = tt__pb_fixed64(&r);
        } else if (field == 5 && wt == TT_PB_LEN) {
            trace_id(&r, out->trace_id, &out->has_trace);
        } else if (field == 6 && wt == TT_PB_I64) {
            out->span_id = tt__pb_fixed64(&r);
        } else if (field == 7 && wt == TT_PB_I64) {
            out->parent_span_id = tt__pb_fixed64(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

int tt__ev_response_end_decode(tt__bstr body, tt__ev_response_end *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_I64) {
            out->response_id = tt__pb_fixed64(&r);
        } else if (wt == TT_PB_I32 && field >= 3 && field <= 8) {
            float v = tt__pb_float(&r);
            float *dst[] = {&out->mean_logprob,         &out->min_logprob,
                            &out->perplexity,           &out->mean_entropy,
                            &out->low_confidence_share, &out->min_window_confidence};
            *dst[field - 3] = v;
        } else if (wt == TT_PB_VARINT && (field == 2 || field == 9 || field == 11 || field == 12)) {
            uint64_t v = tt__pb_varint(&r);
            if (field == 2) {
                out->tokens = (uint32_t)v;
            } else if (field == 9) {
                out->verdict = (uint32_t)v;
            } else if (field == 11) {
                out->duration_ns = v;
            } else {
                out->estimated = (uint32_t)v;
            }
        } else if (field == 10 && wt == TT_PB_LEN) {
            out->reason.p = tt__pb_bytes(&r, &out->reason.n);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (out->tokens == 0) {
        /* No token, no figure: a client sends zeros then, which would read as confidence 1
         * (exp 0) and as the lowest window confidence. Unknown, as for an OTLP response. */
        out->mean_logprob = out->min_logprob = out->perplexity = NAN;
        out->mean_entropy = out->low_confidence_share = out->min_window_confidence = NAN;
    }
    return r.err ? -1 : 0;
}

int tt__ev_guard_decode(tt__bstr body, tt__ev_guard *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_I64) {
            out->response_id = tt__pb_fixed64(&r);
        } else if (field == 2 && wt == TT_PB_VARINT) {
            out->token_index = (uint32_t)tt__pb_varint(&r);
        } else if (field == 3 && wt == TT_PB_VARINT) {
            out->verdict = (uint32_t)tt__pb_varint(&r);
        } else if (field == 4 && wt == TT_PB_LEN) {
            out->reason.p = tt__pb_bytes(&r, &out->reason.n);
        } else if (field == 5 && wt == TT_PB_I32) {
            out->value = tt__pb_float(&r);
        } else if (field == 6 && wt == TT_PB_I32) {
            out->threshold = tt__pb_float(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

int tt__ev_tokens_decode(tt__bstr body, tt__ev_tokens *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        tt__bstr *packed[] = {NULL,
                              NULL,
                              NULL,
                              &out->token_ids,
                              &out->logprobs,
                              &out->entropies,
                              &out->margins,
                              &out->ranks,
                              &out->latency_us,
                              &out->flags,
                              NULL,
                              &out->topk_ids,
                              &out->topk_values};
        if (field == 1 && wt == TT_PB_I64) {
            out->response_id = tt__pb_fixed64(&r);
        } else if (field == 2 && wt == TT_PB_VARINT) {
            out->first_index = (uint32_t)tt__pb_varint(&r);
        } else if (field == 10 && wt == TT_PB_VARINT) {
            out->topk = (uint32_t)tt__pb_varint(&r);
        } else if (field == 13 && wt == TT_PB_VARINT) {
            out->topk_encoding = (uint32_t)tt__pb_varint(&r);
        } else if (field >= 3 && field <= 12 && field != 10 && wt == TT_PB_LEN) {
            packed[field]->p = tt__pb_bytes(&r, &packed[field]->n);
        } else if (field == 14 && wt == TT_PB_LEN) {
            size_t n;
            tt__pb_bytes(&r, &n);
            out->n_texts++;
        } else if (field == 15 && wt == TT_PB_LEN) {
            out->text_refs.p = tt__pb_bytes(&r, &out->text_refs.n);
        } else if (field == 16 && wt == TT_PB_LEN) {
            out->topk_text_refs.p = tt__pb_bytes(&r, &out->topk_text_refs.n);
        } else if (field == 17 && wt == TT_PB_VARINT) {
            out->text_base = (uint32_t)tt__pb_varint(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    out->body = body;
    if (r.err || out->logprobs.n % 4 || out->entropies.n % 4 || out->margins.n % 4) {
        return -1;
    }
    tt__bstr v[] = {out->token_ids, out->ranks,     out->latency_us,    out->flags,
                    out->topk_ids,  out->text_refs, out->topk_text_refs};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (tt__packed_varint_count(v[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

int tt__ev_tokens_text_next(const tt__ev_tokens *t, tt__tokens_text_iter *it, tt__bstr *s)
{
    if (!it->started) {
        tt__pb_reader_init(&it->r, t->body.p, t->body.n);
        it->started = 1;
    }
    tt__pb_reader *r = &it->r;
    uint32_t field, wt;
    while (tt__pb_next(r, &field, &wt) == 1) {
        if (field == 14 && wt == TT_PB_LEN) {
            s->p = tt__pb_bytes(r, &s->n);
            return !r->err;
        }
        tt__pb_skip(r, wt);
    }
    return 0;
}

int tt__ev_tensor_decode(tt__bstr body, tt__ev_tensor *out)
{
    memset(out, 0, sizeof *out);
    DECODE_LOOP(body)
    {
        if (field == 1 && wt == TT_PB_I64) {
            out->response_id = tt__pb_fixed64(&r);
        } else if (wt == TT_PB_VARINT && (field == 2 || field == 3 || field == 4 || field == 8)) {
            uint32_t v = (uint32_t)tt__pb_varint(&r);
            *(field == 2   ? &out->token_index
              : field == 3 ? &out->encoding
              : field == 4 ? &out->length
                           : &out->first) = v;
        } else if (field == 5 && wt == TT_PB_LEN) {
            out->values.p = tt__pb_bytes(&r, &out->values.n);
        } else if (field == 6 && wt == TT_PB_I32) {
            out->scale = tt__pb_float(&r);
        } else if (field == 7 && wt == TT_PB_I32) {
            out->offset = tt__pb_float(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -1 : 0;
}

long tt__packed_varint_count(tt__bstr b)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, b.p, b.n);
    long n = 0;
    while (r.p < r.end && !r.err) {
        tt__pb_varint(&r);
        n++;
    }
    return r.err ? -1 : n;
}

int tt__event_matches(const tt__event *ev, const char *session, uint32_t kinds,
                      uint32_t min_severity)
{
    if (kinds && !(kinds & (1u << ev->kind))) {
        return 0;
    }
    if (session[0] &&
        (ev->session.n != strlen(session) || memcmp(ev->session.p, session, ev->session.n))) {
        return 0;
    }
    if (min_severity && ev->kind == TT_EV_LOG) {
        tt__ev_log l;
        if (tt__ev_log_decode(ev->body, &l) != 0 || l.severity < min_severity) {
            return 0;
        }
    }
    return 1;
}

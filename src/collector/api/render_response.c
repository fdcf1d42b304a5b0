/*
 * render_response.c - JSON for the kinds that carry token confidence: tokens (the packed per-token
 * arrays of a response chunk, top-k dequantized), response_begin, response_end, guard decisions
 * and sampled tensors. docs/api.md shows the shapes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/render.h"
#include "common/half.h"

/* Entries of a response's text table read back at most (a client sends fewer: one per distinct
 * token, DICT_MAX remembered, so a table this large is hostile). */
#define TEXT_TABLE_MAX (1u << 20)

static void varints(tt__json *j, const char *key, tt__bstr b, int zigzag)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, b.p, b.n);
    tt__json_key(j, key);
    tt__json_arr_begin(j);
    while (r.p < r.end && !r.err) {
        uint64_t v = tt__pb_varint(&r);
        if (zigzag) {
            tt__json_i64(j, tt__pb_unzigzag(v));
        } else {
            tt__json_u64(j, v);
        }
    }
    tt__json_arr_end(j);
}

static void floats(tt__json *j, const char *key, tt__bstr b)
{
    tt__json_key(j, key);
    tt__json_arr_begin(j);
    for (size_t i = 0; i < b.n / 4; i++) {
        tt__json_f64(j, (double)tt__packed_float(b, i));
    }
    tt__json_arr_end(j);
}

static double topk_value(const tt__ev_tokens *t, size_t i)
{
    if (t->topk_encoding == 1 && 2 * i + 1 < t->topk_values.n) {
        return tt__f16_to_f32(
            (uint16_t)(t->topk_values.p[2 * i] | t->topk_values.p[2 * i + 1] << 8));
    }
    if (t->topk_encoding == 2 && i < t->topk_values.n) {
        return exp((double)tt__u8log_decode(t->topk_values.p[i]));
    }
    return NAN;
}

void render_tokens_fields(tt__json *j, const tt__ev_tokens *t)
{
    render_response_id(j, "response_id", t->response_id);
    tt__json_kv_u64(j, "first_index", t->first_index);
    tt__json_kv_u64(j, "count", t->logprobs.n / 4);
    varints(j, "token_ids", t->token_ids, 1);
    floats(j, "logprobs", t->logprobs);
    floats(j, "entropies", t->entropies);
    floats(j, "margins", t->margins);
    varints(j, "ranks", t->ranks, 0);
    varints(j, "latency_us", t->latency_us, 0);
    varints(j, "flags", t->flags, 0);
    if (t->n_texts || t->text_refs.n) {
        /* Token text as sent: the texts this chunk adds to the response's table (from index
         * text_base) and each token's index in it; /api/v1/responses/{id} resolves them. */
        tt__json_kv_u64(j, "text_base", t->text_base);
        tt__json_key(j, "texts");
        tt__json_arr_begin(j);
        tt__tokens_text_iter it = {0};
        tt__bstr s;
        while (tt__ev_tokens_text_next(t, &it, &s)) {
            tt__json_str(j, s.p, s.n);
        }
        tt__json_arr_end(j);
        varints(j, "text_refs", t->text_refs, 1);
        if (t->topk_text_refs.n) {
            varints(j, "topk_text_refs", t->topk_text_refs, 1);
        }
    }
    if (!t->topk) {
        return;
    }
    tt__json_kv_u64(j, "topk", t->topk);
    tt__json_kv_cstr(j, "topk_encoding",
                     t->topk_encoding == 1   ? "fp16"
                     : t->topk_encoding == 2 ? "uint8"
                                             : "unknown");
    /* Rows of k: ids and probabilities, padding (id -1) left out. */
    tt__pb_reader r;
    tt__pb_reader_init(&r, t->topk_ids.p, t->topk_ids.n);
    tt__json_key(j, "topk_ids");
    tt__json_arr_begin(j);
    size_t i = 0;
    while (r.p < r.end && !r.err) {
        tt__json_arr_begin(j);
        for (uint32_t q = 0; q < t->topk && r.p < r.end && !r.err; q++, i++) {
            int64_t id = tt__pb_unzigzag(tt__pb_varint(&r));
            if (id >= 0) {
                tt__json_i64(j, id);
            }
        }
        tt__json_arr_end(j);
    }
    tt__json_arr_end(j);
    tt__pb_reader_init(&r, t->topk_ids.p, t->topk_ids.n);
    tt__json_key(j, "topk_probs");
    tt__json_arr_begin(j);
    i = 0;
    while (r.p < r.end && !r.err) {
        tt__json_arr_begin(j);
        for (uint32_t q = 0; q < t->topk && r.p < r.end && !r.err; q++, i++) {
            int64_t id = tt__pb_unzigzag(tt__pb_varint(&r));
            if (id >= 0) {
                tt__json_f64(j, topk_value(t, i));
            }
        }
        tt__json_arr_end(j);
    }
    tt__json_arr_end(j);
}

void render_response_end_fields(tt__json *j, const tt__ev_response_end *e)
{
    render_response_id(j, "response_id", e->response_id);
    tt__json_kv_u64(j, "tokens", e->tokens);
    tt__json_kv_f64(j, "mean_logprob", (double)e->mean_logprob);
    tt__json_kv_f64(j, "min_logprob", (double)e->min_logprob);
    tt__json_kv_f64(j, "perplexity", (double)e->perplexity);
    tt__json_kv_f64(j, "mean_entropy", (double)e->mean_entropy);
    tt__json_kv_f64(j, "low_confidence_share", (double)e->low_confidence_share);
    tt__json_kv_f64(j, "min_window_confidence", (double)e->min_window_confidence);
    tt__json_kv_cstr(j, "verdict", render_verdict(e->verdict));
    tt__json_kv_str(j, "reason", e->reason.p, e->reason.n);
    tt__json_kv_u64(j, "duration_ns", e->duration_ns);
    tt__json_kv_bool(j, "estimated", e->estimated != 0);
}

void render_guard_fields(tt__json *j, const tt__ev_guard *g)
{
    render_response_id(j, "response_id", g->response_id);
    tt__json_kv_u64(j, "token_index", g->token_index);
    tt__json_kv_cstr(j, "verdict", render_verdict(g->verdict));
    tt__json_kv_str(j, "reason", g->reason.p, g->reason.n);
    tt__json_kv_f64(j, "value", (double)g->value);
    tt__json_kv_f64(j, "threshold", (double)g->threshold);
}

static void render_tensor(tt__json *j, const tt__ev_tensor *t)
{
    render_response_id(j, "response_id", t->response_id);
    tt__json_kv_u64(j, "token_index", t->token_index);
    tt__json_kv_cstr(j, "encoding",
                     t->encoding == 1   ? "fp16"
                     : t->encoding == 2 ? "uint8"
                                        : "unknown");
    tt__json_kv_u64(j, "length", t->length);
    tt__json_kv_u64(j, "first", t->first);
    tt__json_key(j, "logprobs");
    tt__json_arr_begin(j);
    if (t->encoding == 1) {
        for (size_t i = 0; i + 1 < t->values.n; i += 2) {
            tt__json_f64(j, tt__f16_to_f32((uint16_t)(t->values.p[i] | t->values.p[i + 1] << 8)));
        }
    } else if (t->encoding == 2) {
        for (size_t i = 0; i < t->values.n; i++) {
            uint8_t c = t->values.p[i];
            tt__json_f64(j, c == 255 ? -INFINITY : (double)t->offset - c * (double)t->scale);
        }
    }
    tt__json_arr_end(j);
}

int render_event_extra(tt__json *j, const tt__event *ev)
{
    switch (ev->kind) {
    case TT_EV_TOKENS: {
        tt__ev_tokens t;
        if (tt__ev_tokens_decode(ev->body, &t) != 0) {
            return -1;
        }
        render_tokens_fields(j, &t);
        return 0;
    }
    case TT_EV_RESPONSE_BEGIN: {
        tt__ev_response_begin b;
        if (tt__ev_response_begin_decode(ev->body, &b) != 0) {
            return -1;
        }
        render_response_id(j, "response_id", b.response_id);
        tt__json_kv_str(j, "model", b.model.p, b.model.n);
        render_attrs(j, ev->body, 3, "params");
        if (b.step_id) {
            render_response_id(j, "step_id", b.step_id);
        }
        if (b.has_trace) {
            render_trace(j, b.trace_id, b.span_id, b.parent_span_id);
        }
        return 0;
    }
    case TT_EV_RESPONSE_END: {
        tt__ev_response_end e;
        if (tt__ev_response_end_decode(ev->body, &e) != 0) {
            return -1;
        }
        render_response_end_fields(j, &e);
        return 0;
    }
    case TT_EV_GUARD: {
        tt__ev_guard g;
        if (tt__ev_guard_decode(ev->body, &g) != 0) {
            return -1;
        }
        render_guard_fields(j, &g);
        return 0;
    }
    case TT_EV_TENSOR: {
        tt__ev_tensor t;
        if (tt__ev_tensor_decode(ev->body, &t) != 0) {
            return -1;
        }
        render_tensor(j, &t);
        return 0;
    }
    default:
        return -1;
    }
}

/* The token arrays of a whole response from its chunks (in order) as one set of arrays. */
/* A response's text table, from its chunks (each adds n_texts from text_base on). */
struct text_table {
    tt__bstr *s;
    size_t n;
};

static void text_table_build(const tt__ev_tokens *t, size_t n, struct text_table *tab)
{
    size_t size = 0;
    tab->s = NULL;
    tab->n = 0;
    for (size_t c = 0; c < n; c++) {
        size_t end = (size_t)t[c].text_base + t[c].n_texts;
        if (t[c].n_texts && end <= TEXT_TABLE_MAX && end > size) {
            size = end;
        }
    }
    if (!size || !(tab->s = calloc(size, sizeof *tab->s))) {
        return;
    }
    tab->n = size;
    for (size_t c = 0; c < n; c++) {
        tt__tokens_text_iter it = {0};
        tt__bstr s;
        for (size_t i = t[c].text_base; i < size && tt__ev_tokens_text_next(&t[c], &it, &s); i++) {
            tab->s[i] = s;
        }
    }
}

/* The text of table index ref; p NULL when unknown. */
static tt__bstr text_at(const struct text_table *tab, int64_t ref)
{
    tt__bstr none = {NULL, 0};
    return ref >= 0 && (uint64_t)ref < tab->n ? tab->s[ref] : none;
}

static int tokens_have_text(const tt__ev_tokens *t, size_t n)
{
    for (size_t c = 0; c < n; c++) {
        if (t[c].text_refs.n) {
            return 1;
        }
    }
    return 0;
}

/* "texts": each token's text (null when unknown), in token order. */
static void merged_texts(tt__json *j, const tt__ev_tokens *t, size_t n,
                         const struct text_table *tab)
{
    tt__json_key(j, "texts");
    tt__json_arr_begin(j);
    for (size_t c = 0; c < n; c++) {
        size_t count = t[c].logprobs.n / 4;
        tt__pb_reader r;
        tt__pb_reader_init(&r, t[c].text_refs.p, t[c].text_refs.n);
        for (size_t i = 0; i < count; i++) {
            int64_t ref = r.p < r.end && !r.err ? tt__pb_unzigzag(tt__pb_varint(&r)) : -1;
            tt__bstr s = text_at(tab, ref);
            if (s.p) {
                tt__json_str(j, s.p, s.n);
            } else {
                tt__json_null(j);
            }
        }
    }
    tt__json_arr_end(j);
}

void render_response_text(tt__json *j, const tt__ev_tokens *t, size_t n)
{
    tt__json_key(j, "text");
    if (!tokens_have_text(t, n)) {
        tt__json_null(j);
        return;
    }
    struct text_table tab;
    text_table_build(t, n, &tab);
    size_t len = 0;
    for (int pass = 0; pass < 2; pass++) {
        char *out = pass ? malloc(len ? len : 1) : NULL;
        if (pass && !out) {
            tt__json_null(j);
            break;
        }
        size_t at = 0;
        for (size_t c = 0; c < n; c++) {
            tt__pb_reader r;
            tt__pb_reader_init(&r, t[c].text_refs.p, t[c].text_refs.n);
            while (r.p < r.end && !r.err) {
                tt__bstr s = text_at(&tab, tt__pb_unzigzag(tt__pb_varint(&r)));
                if (s.p && pass) {
                    memcpy(out + at, s.p, s.n);
                }
                at += s.p ? s.n : 0;
            }
        }
        len = at;
        if (pass) {
            tt__json_str(j, out, len);
            free(out);
        }
    }
    free(tab.s);
}

void render_tokens_merged(tt__json *j, const tt__ev_tokens *t, size_t n)
{
    static const char *const vkeys[] = {"token_ids", "ranks", "latency_us", "flags"};
    static const char *const fkeys[] = {"logprobs", "entropies", "margins"};
    for (int a = 0; a < 4; a++) {
        tt__json_key(j, vkeys[a]);
        tt__json_arr_begin(j);
        for (size_t c = 0; c < n; c++) {
            tt__bstr b = a == 0   ? t[c].token_ids
                         : a == 1 ? t[c].ranks
                         : a == 2 ? t[c].latency_us
                                  : t[c].flags;
            tt__pb_reader r;
            tt__pb_reader_init(&r, b.p, b.n);
            while (r.p < r.end && !r.err) {
                uint64_t v = tt__pb_varint(&r);
                if (a == 0) {
                    tt__json_i64(j, tt__pb_unzigzag(v));
                } else {
                    tt__json_u64(j, v);
                }
            }
        }
        tt__json_arr_end(j);
    }
    for (int a = 0; a < 3; a++) {
        tt__json_key(j, fkeys[a]);
        tt__json_arr_begin(j);
        for (size_t c = 0; c < n; c++) {
            tt__bstr b = a == 0 ? t[c].logprobs : a == 1 ? t[c].entropies : t[c].margins;
            for (size_t i = 0; i < b.n / 4; i++) {
                tt__json_f64(j, (double)tt__packed_float(b, i));
            }
        }
        tt__json_arr_end(j);
    }
    int with_text = tokens_have_text(t, n);
    struct text_table tab = {NULL, 0};
    if (with_text) {
        text_table_build(t, n, &tab);
        merged_texts(j, t, n, &tab);
    }
    /* Alternatives: padding (id -1 without a text) left out; an alternative known by its text
     * only (a provider's) has id -1. */
    for (int a = 0; a < (with_text ? 3 : 2); a++) {
        tt__json_key(j, a == 0 ? "topk_ids" : a == 1 ? "topk_probs" : "topk_texts");
        tt__json_arr_begin(j);
        for (size_t c = 0; c < n; c++) {
            tt__pb_reader r, tr;
            tt__pb_reader_init(&r, t[c].topk_ids.p, t[c].topk_ids.n);
            tt__pb_reader_init(&tr, t[c].topk_text_refs.p, t[c].topk_text_refs.n);
            size_t i = 0;
            while (t[c].topk && r.p < r.end && !r.err) {
                tt__json_arr_begin(j);
                for (uint32_t q = 0; q < t[c].topk && r.p < r.end && !r.err; q++, i++) {
                    int64_t id = tt__pb_unzigzag(tt__pb_varint(&r));
                    int64_t ref =
                        tr.p < tr.end && !tr.err ? tt__pb_unzigzag(tt__pb_varint(&tr)) : -1;
                    tt__bstr s = text_at(&tab, ref);
                    if (id < 0 && !s.p) {
                        continue;
                    }
                    if (a == 0) {
                        tt__json_i64(j, id);
                    } else if (a == 1) {
                        tt__json_f64(j, topk_value(&t[c], i));
                    } else if (s.p) {
                        tt__json_str(j, s.p, s.n);
                    } else {
                        tt__json_null(j);
                    }
                }
                tt__json_arr_end(j);
            }
        }
        tt__json_arr_end(j);
    }
    free(tab.s);
}

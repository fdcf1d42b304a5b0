/*
 * api/responses.c - responses and the guard's policy (halt and resume: api/halt.c):
 *   GET  /api/v1/responses?session=&agent=&limit=   summaries, newest first
 *   GET  /api/v1/responses/{id}                      summary, per-token arrays, top-k, guard
 *   POST /api/v1/agents/{agent}/guard-policy          Control{GuardPolicy} to an agent
 * They read the derived tables of derive.c; docs/api.md documents the shapes.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/source/nats.h"
#include "collector/api/http.h"
#include "collector/source/native.h"
#include "collector/api/render.h"
#include "collector/store/store.h"
#include "common/json.h"
#include "common/pb.h"

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000
#define CHUNKS_MAX 4096
#define HALT_WAIT_MS 2000

static void col_text(tt__json *j, const char *key, struct store_str v)
{
    if (!v.p) {
        tt__json_key(j, key);
        tt__json_null(j);
        return;
    }
    tt__json_kv_str(j, key, v.p, v.n);
}

static void col_i64(tt__json *j, const char *key, struct store_i64 v)
{
    tt__json_key(j, key);
    v.set ? tt__json_i64(j, v.v) : tt__json_null(j);
}

static void col_f64(tt__json *j, const char *key, struct store_f64 v)
{
    tt__json_key(j, key);
    v.set ? tt__json_f64(j, v.v) : tt__json_null(j);
}

/* The fields of one response row (without the closing brace). */
static void render_row(tt__json *j, const struct store_response *x)
{
    tt__json_obj_begin(j);
    render_response_id(j, "id", x->id);
    tt__json_kv_cstr(j, "agent", x->agent);
    tt__json_key(j, "instance");
    tt__json_hex(j, x->instance, x->instance_len);
    col_text(j, "session", x->session);
    col_text(j, "model", x->model);
    if (x->has_begin_body) {
        tt__bstr body = {x->begin_body, x->begin_body_len};
        render_attrs(j, body, 3, "params");
        tt__ev_response_begin b;
        if (tt__ev_response_begin_decode(body, &b) == 0 && b.step_id) {
            render_response_id(j, "step_id", b.step_id); /* 16 hex digits, as every id */
        }
        if (b.has_trace) { /* decoded above: the trace context sent with the begin */
            render_trace(j, b.trace_id, b.span_id, b.parent_span_id);
        }
    }
    col_i64(j, "begin_unix_ns", x->begin_ns);
    col_i64(j, "end_unix_ns", x->end_ns);
    int ended = x->end_ns.set;
    tt__json_kv_bool(j, "ended", ended);
    col_i64(j, "tokens", x->tokens);
    static const char *const reals[] = {"mean_logprob",         "min_logprob",
                                        "perplexity",           "mean_entropy",
                                        "low_confidence_share", "min_window_confidence"};
    for (int i = 0; i < 6; i++) {
        col_f64(j, reals[i], x->figures[i]);
    }
    tt__json_key(j, "verdict");
    if (ended) {
        tt__json_cstr(j, render_verdict(x->verdict));
    } else {
        tt__json_null(j);
    }
    col_text(j, "reason", x->reason);
    col_i64(j, "duration_ns", x->duration_ns);
    tt__json_key(j, "estimated");
    if (ended) {
        tt__json_bool(j, x->estimated);
    } else {
        tt__json_null(j);
    }
}

static int row_json(void *ctx, const struct store_response *x)
{
    render_row(ctx, x);
    tt__json_obj_end(ctx);
    return 0;
}

static enum MHD_Result reply(const struct http_req *r, unsigned status, tt__buf *b, tt__json *j)
{
    enum MHD_Result rc = j->err ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "answer too large")
                                : http_json(r, status, b);
    tt__buf_fini(b);
    return rc;
}

enum MHD_Result api_responses(const struct http_req *r)
{
    static const char *const allowed[] = {"session", "agent", "limit", NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *session = http_param(r, "session"), *agent = http_param(r, "agent");
    const char *lim = http_param(r, "limit");
    long limit = LIST_LIMIT_DEFAULT;
    if (lim) {
        char *end;
        errno = 0;
        limit = strtol(lim, &end, 10);
        if (errno || end == lim || *end || limit < 1 || limit > LIST_LIMIT_MAX) {
            return http_error(r, MHD_HTTP_BAD_REQUEST, "limit must be an integer in [1, %d]",
                              LIST_LIMIT_MAX);
        }
    }
    struct http_list l;
    if (http_list_open(r, &l, "responses") != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    struct store_response_filter f = {.session = session, .agent = agent, .limit = (uint64_t)limit};
    int n = store_responses(l.rd, &f, row_json, &l.j);
    http_list_end_array(&l);
    return http_list_reply(r, &l, n, "responses");
}

static int parse_id(const char *s, uint64_t *out)
{
    if (strlen(s) != 16) {
        return -1;
    }
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) {
            return -1;
        }
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

/* The Tokens messages of a response, decoded from private copies (they outlive the row). */
struct chunks {
    tt__ev_tokens *toks;
    void **copies;
    size_t n, cap;
};

static int chunk_add(void *ctx, const void *p, size_t len)
{
    struct chunks *c = ctx;
    if (c->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 16;
        tt__ev_tokens *g = realloc(c->toks, nc * sizeof *c->toks);
        if (g) {
            c->toks = g;
        }
        void **c2 = g ? realloc(c->copies, nc * sizeof *c->copies) : NULL;
        if (!c2) {
            return 1;
        }
        c->copies = c2;
        c->cap = nc;
    }
    void *copy = malloc(len ? len : 1);
    if (!copy) {
        return 1;
    }
    if (len) {
        memcpy(copy, p, len);
    }
    if (tt__ev_tokens_decode((tt__bstr){copy, len}, &c->toks[c->n]) != 0) {
        free(copy);
        return 0;
    }
    c->copies[c->n++] = copy;
    return c->n >= CHUNKS_MAX;
}

static int guard_json(void *ctx, const struct store_guard *g)
{
    tt__json *j = ctx;
    tt__json_obj_begin(j);
    tt__json_kv_i64(j, "token_index", g->token_index);
    tt__json_kv_cstr(j, "verdict", render_verdict(g->verdict));
    col_text(j, "reason", g->reason);
    col_f64(j, "value", g->value);
    col_f64(j, "threshold", g->threshold);
    col_i64(j, "time_unix_ns", g->time_ns);
    tt__json_obj_end(j);
    return 0;
}

static void render_detail(tt__json *j, struct store_read *rd, int64_t inst, uint64_t rid)
{
    struct chunks c = {NULL, NULL, 0, 0};
    store_response_tokens(rd, inst, rid, chunk_add, &c);
    tt__json_key(j, "token_data");
    tt__json_obj_begin(j);
    render_tokens_merged(j, c.toks, c.n);
    tt__json_obj_end(j);
    render_response_text(j, c.toks, c.n);
    for (size_t i = 0; i < c.n; i++) {
        free(c.copies[i]);
    }
    free(c.copies);
    free(c.toks);

    tt__json_key(j, "guard");
    tt__json_arr_begin(j);
    store_response_guard(rd, inst, rid, guard_json, j);
    tt__json_arr_end(j);
}

struct response_one {
    tt__json *j;
    struct store_read *rd;
};

static int response_full(void *ctx, const struct store_response *x)
{
    struct response_one *o = ctx;
    render_row(o->j, x);
    render_detail(o->j, o->rd, x->instance_key, x->id);
    tt__json_obj_end(o->j);
    return 1; /* one */
}

enum MHD_Result api_response_get(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *ids = http_path_param(r, "id");
    uint64_t id;
    if (!ids || parse_id(ids, &id) != 0) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "a response id is 16 hexadecimal digits");
    }
    struct store_read *rd;
    if (store_read_open(r->ctx->store, &rd) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    tt__buf b;
    tt__buf_init(&b, 256u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    struct response_one o = {&j, rd};
    struct store_response_filter f = {.id = id, .by_id = 1, .limit = 1};
    int n = store_responses(rd, &f, response_full, &o);
    store_read_close(rd);
    if (n <= 0) {
        tt__buf_fini(&b);
        return n == -ENOTSUP ? http_error(r, MHD_HTTP_NOT_IMPLEMENTED,
                                          "this store does not provide responses yet")
               : n < 0 ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query responses")
                       : http_error(r, MHD_HTTP_NOT_FOUND, "no response %s", ids);
    }
    return reply(r, MHD_HTTP_OK, &b, &j);
}

/* --- guard policy ------------------------------------------------------------------------------ */

/* A number in [lo, hi] from obj[key] (absent: def); -1 if present and not such a number. */
static int num_field(json_t *obj, const char *key, double lo, double hi, double def, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) {
        return -1;
    }
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) {
        return -1;
    }
    *out = d;
    return 0;
}

const char *api_agent_order(const struct http_req *r, json_t **body, enum MHD_Result *refused)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    const char *agent = http_path_param(r, "agent");
    *body = NULL;
    if (bad) {
        *refused = http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
        return NULL;
    }
    if (!agent || !*agent || strlen(agent) > 255) {
        *refused = http_error(r, MHD_HTTP_BAD_REQUEST, "an agent name is 1 to 255 bytes");
        return NULL;
    }
    json_error_t jerr;
    *body = r->body && r->body->len
                ? json_loadb((const char *)r->body->data, r->body->len, 0, &jerr)
                : NULL;
    return agent;
}

enum MHD_Result api_agent_guard_policy(const struct http_req *r)
{
    json_t *o;
    enum MHD_Result refused;
    const char *agent = api_agent_order(r, &o, &refused);
    if (!agent) {
        return refused;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST,
                          "the body must be a JSON object with the policy's fields");
    }
    static const char *const known[] = {"token_min_prob", "window_min_confidence", "window",
                                        "response_min_confidence", "action"};
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        size_t i = 0;
        while (i < 5 && strcmp(key, known[i]) != 0) {
            i++;
        }
        if (i == 5) {
            json_decref(o);
            return http_error(r, MHD_HTTP_BAD_REQUEST, "unknown policy field");
        }
    }
    double tp, wc, w, rc;
    json_t *act = json_object_get(o, "action");
    uint32_t action = 2;
    if (act && json_is_string(act) && strcmp(json_string_value(act), "flag") == 0) {
        action = 1;
    } else if (act && !(json_is_string(act) && strcmp(json_string_value(act), "halt") == 0)) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST, "action is \"flag\" or \"halt\"");
    }
    if (num_field(o, "token_min_prob", 0, 1, 0, &tp) ||
        num_field(o, "window_min_confidence", 0, 1, 0, &wc) ||
        num_field(o, "window", 1, 4096, 16, &w) || w != (double)(uint32_t)w ||
        num_field(o, "response_min_confidence", 0, 1, 0, &rc)) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST,
                          "thresholds are numbers in [0, 1], window an integer in [1, 4096]");
    }
    json_decref(o);
    if (!r->ctx->ingest) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "no ingest loop to send the order");
    }
    /* Control { policy = 2: GuardPolicy { 1..5 } } */
    uint8_t inner[64], payload[80];
    uint8_t *q = tt__pb_put_float(inner, 1, (float)tp);
    q = tt__pb_put_float(q, 2, (float)wc);
    q = tt__pb_put_uint(q, 3, (uint32_t)w);
    q = tt__pb_put_float(q, 4, (float)rc);
    q = tt__pb_put_uint(q, 5, action);
    uint8_t *p = tt__pb_put_bytes(payload, 2, inner, (size_t)(q - inner));
    int n = ingest_post_control_wait(r->ctx->ingest, agent, payload, (size_t)(p - payload),
                                     HALT_WAIT_MS);
    int nb = nats_publish_control(r->ctx->nats, agent, payload, (size_t)(p - payload),
                                  NATS_CONFIRM_WAIT_MS);
    tt__buf b;
    tt__buf_init(&b, 4096);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_cstr(&j, "agent", agent);
    tt__json_key(&j, "policy");
    tt__json_obj_begin(&j);
    tt__json_kv_f64(&j, "token_min_prob", (double)(float)tp);
    tt__json_kv_f64(&j, "window_min_confidence", (double)(float)wc);
    tt__json_kv_u64(&j, "window", (uint64_t)w);
    tt__json_kv_f64(&j, "response_min_confidence", (double)(float)rc);
    tt__json_kv_cstr(&j, "action", action == 1 ? "flag" : "halt");
    tt__json_obj_end(&j);
    tt__json_kv_i64(&j, "connections", n < 0 ? 0 : n);
    if (r->ctx->nats) {
        tt__json_kv_bool(&j, "nats_published", nb > 0);
        tt__json_kv_bool(&j, "nats_delivered", nb > 1);
    }
    tt__json_obj_end(&j);
    return reply(r, MHD_HTTP_ACCEPTED, &b, &j);
}

/*
 * export_encode.c - committed batches as OTLP requests (docs/otel.md, "Export"): a step is a span
 * from its begin to its end, a response a GenAI chat span with its confidence summary and guard
 * verdicts (gen_ai.evaluation.result events), a log a LogRecord, a metric a Gauge point. The
 * protobuf is written with common/pb.h; nested messages are written in place and their length
 * prefix made room for when they end.
 *
 * Begins wait in a table of open steps and responses until their end arrives in the same or a
 * later batch; the table is bounded (export.c: 65536 entries), a full one forgets its oldest
 * begin, whose end would then be counted unmatched.
 * Only the export thread uses these.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/export.h"
#include "common/batch.h"
#include "common/compat.h"
#include "common/pb.h"
#include "telltale.h"

/* --- a protobuf writer over a tt__buf, with nested messages --- */

#define W_DEPTH 8

struct pbw {
    tt__buf *b;
    int err;
    int depth;
    size_t at[W_DEPTH]; /* where each open message's payload starts (after a 1-byte length) */
};

static void w_raw(struct pbw *w, const void *p, size_t n)
{
    if (!w->err && tt__buf_append(w->b, p, n) != 0) {
        w->err = 1;
    }
}

static void w_uint(struct pbw *w, uint32_t field, uint64_t v)
{
    uint8_t t[2 * TT_PB_VARINT_MAX];
    w_raw(w, t, (size_t)(tt__pb_put_uint(t, field, v) - t));
}

static void w_fixed64(struct pbw *w, uint32_t field, uint64_t v)
{
    uint8_t t[TT_PB_VARINT_MAX + 8];
    w_raw(w, t, (size_t)(tt__pb_put_fixed64(t, field, v) - t));
}

static void w_double(struct pbw *w, uint32_t field, double d)
{
    uint8_t t[TT_PB_VARINT_MAX + 8];
    w_raw(w, t, (size_t)(tt__pb_put_double(t, field, d) - t));
}

static void w_bytes(struct pbw *w, uint32_t field, const void *p, size_t n)
{
    uint8_t t[2 * TT_PB_VARINT_MAX];
    uint8_t *e = tt__pb_put_tag(t, field, TT_PB_LEN);
    e = tt__pb_put_varint(e, n);
    w_raw(w, t, (size_t)(e - t));
    w_raw(w, p, n);
}

static void w_str(struct pbw *w, uint32_t field, const char *s)
{
    w_bytes(w, field, s, strlen(s));
}

static void w_begin(struct pbw *w, uint32_t field)
{
    uint8_t t[TT_PB_VARINT_MAX + 1];
    uint8_t *e = tt__pb_put_tag(t, field, TT_PB_LEN);
    *e++ = 0; /* the length, one byte until the message ends */
    w_raw(w, t, (size_t)(e - t));
    if (w->depth == W_DEPTH) {
        w->err = 1;
        return;
    }
    w->at[w->depth++] = w->b->len;
}

static void w_end(struct pbw *w)
{
    if (w->err || w->depth == 0) {
        w->err = 1;
        return;
    }
    size_t at = w->at[--w->depth];
    size_t n = w->b->len - at;
    size_t k = tt__pb_varint_size(n);
    if (k > 1) {
        if (tt__buf_reserve(w->b, k - 1) != 0) {
            w->err = 1;
            return;
        }
        memmove(w->b->data + at + k - 1, w->b->data + at, n);
        w->b->len += k - 1;
    }
    tt__pb_put_varint(w->b->data + at - 1, n);
}

/* KeyValue{key, AnyValue} under field. */
static void kv_begin(struct pbw *w, uint32_t field, const char *key, size_t keylen)
{
    w_begin(w, field);
    w_bytes(w, 1, key, keylen);
    w_begin(w, 2);
}

static void kv_str(struct pbw *w, uint32_t field, const char *key, const void *v, size_t n)
{
    kv_begin(w, field, key, strlen(key));
    w_bytes(w, 1, v, n);
    w_end(w);
    w_end(w);
}

static void kv_cstr(struct pbw *w, uint32_t field, const char *key, const char *v)
{
    kv_str(w, field, key, v, strlen(v));
}

static void kv_int(struct pbw *w, uint32_t field, const char *key, int64_t v)
{
    kv_begin(w, field, key, strlen(key));
    w_uint(w, 3, (uint64_t)v);
    w_end(w);
    w_end(w);
}

static void kv_double(struct pbw *w, uint32_t field, const char *key, double v)
{
    kv_begin(w, field, key, strlen(key));
    w_double(w, 4, v);
    w_end(w);
    w_end(w);
}

/* A telltale attribute (key, typed value) as a KeyValue, its key prefixed. */
static void kv_attr(struct pbw *w, uint32_t field, const char *prefix, const tt__attr_val *a)
{
    char key[320];
    int n = snprintf(key, sizeof key, "%s%.*s", prefix, (int)(a->key.n > 256 ? 256 : a->key.n),
                     (const char *)a->key.p);
    kv_begin(w, field, key, (size_t)n < sizeof key ? (size_t)n : sizeof key - 1);
    switch (a->type) {
    case TT_ATTR_STR:
        w_bytes(w, 1, a->s.p, a->s.n);
        break;
    case TT_ATTR_INT:
        w_uint(w, 3, (uint64_t)a->i);
        break;
    case TT_ATTR_DOUBLE:
        w_double(w, 4, a->d);
        break;
    case TT_ATTR_BOOL:
        w_uint(w, 2, a->b ? 1 : 0);
        break;
    default:
        break;
    }
    w_end(w);
    w_end(w);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

/* --- the table of open steps and responses --- */

struct open_entry {
    struct open_entry *next;          /* in its bucket */
    struct open_entry *older, *newer; /* in the order begins arrived */
    uint8_t instance[16];
    uint64_t id;
    int is_response;
    int64_t t_begin;
    uint8_t trace_id[16];
    uint64_t span_id, parent_span_id;
    uint32_t kind;   /* steps */
    char *name;      /* step name or response model (owned) */
    char *query;     /* steps (owned, may be NULL) */
    char *session;   /* owned, may be NULL */
    uint8_t *params; /* responses: the begin's body, for its params (owned) */
    size_t params_len;
    /* responses: guard events so far, encoded as Span.Event messages (owned); steps: the
     * events of the response merged into them (below) */
    tt__buf events;
    uint32_t n_events;
    uint64_t step_id; /* responses: the step it was opened in (0: none) */
    /* steps: the attributes (KeyValue fields) of a response with the step's own span id (an
     * OTLP-fed model call is a step and a response of one span): one span carries both */
    tt__buf merged;
    int has_response;
};

#define OPEN_BUCKETS 4096
#define OPEN_MAX_GUARD_EVENTS 64
#define OPEN_MAX_STR 4096

struct export_open {
    struct open_entry *b[OPEN_BUCKETS];
    struct open_entry *oldest, *newest;
    size_t n, max;
};

struct export_open *export_open_new(size_t max_entries)
{
    struct export_open *o = calloc(1, sizeof *o);
    if (o) {
        o->max = max_entries;
    }
    return o;
}

static void entry_free(struct open_entry *e)
{
    free(e->name);
    free(e->query);
    free(e->session);
    free(e->params);
    tt__buf_fini(&e->events);
    tt__buf_fini(&e->merged);
    free(e);
}

void export_open_free(struct export_open *o)
{
    if (!o) {
        return;
    }
    for (int i = 0; i < OPEN_BUCKETS; i++) {
        for (struct open_entry *e = o->b[i], *n; e; e = n) {
            n = e->next;
            entry_free(e);
        }
    }
    free(o);
}

static unsigned bucket_of(const uint8_t inst[16], uint64_t id, int resp)
{
    uint64_t h = id * 0x9e3779b97f4a7c15ull ^ (uint64_t)resp;
    for (int i = 0; i < 16; i++) {
        h = (h ^ inst[i]) * 0x100000001b3ull;
    }
    return (unsigned)(h >> 20) % OPEN_BUCKETS;
}

static void age_unlink(struct export_open *o, struct open_entry *e)
{
    *(e->older ? &e->older->newer : &o->oldest) = e->newer;
    *(e->newer ? &e->newer->older : &o->newest) = e->older;
    e->older = e->newer = NULL;
}

static struct open_entry **open_find(struct export_open *o, const uint8_t inst[16], uint64_t id,
                                     int resp)
{
    struct open_entry **pp = &o->b[bucket_of(inst, id, resp)];
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id && (*pp)->is_response == resp && !memcmp((*pp)->instance, inst, 16)) {
            return pp;
        }
    }
    return pp;
}

static char *dup_bstr(tt__bstr s)
{
    size_t n = s.n > OPEN_MAX_STR ? OPEN_MAX_STR : s.n;
    char *p = malloc(n + 1);
    if (p) {
        if (n) {
            memcpy(p, s.p, n);
        }
        p[n] = 0;
    }
    return p;
}

/* A new entry for a begin; NULL when memory ran out (its end is then unmatched). A begin seen
 * again (a replayed id) replaces the earlier one; a full table gives up its oldest entry. */
static struct open_entry *open_add(struct export_open *o, const uint8_t inst[16], uint64_t id,
                                   int resp)
{
    struct open_entry **pp = open_find(o, inst, id, resp);
    if (*pp) {
        struct open_entry *old = *pp;
        *pp = old->next;
        age_unlink(o, old);
        entry_free(old);
        o->n--;
    }
    if (o->n >= o->max && o->oldest) {
        /* Full (begins whose end never came: an end in a batch not exported, an agent that
         * died): the oldest goes; should its end come, it is counted unmatched. */
        struct open_entry *old = o->oldest;
        struct open_entry **op = open_find(o, old->instance, old->id, old->is_response);
        *op = old->next;
        age_unlink(o, old);
        entry_free(old);
        o->n--;
        pp = open_find(o, inst, id, resp);
    }
    if (o->n >= o->max) {
        return NULL;
    }
    struct open_entry *e = calloc(1, sizeof *e);
    if (!e) {
        return NULL;
    }
    memcpy(e->instance, inst, 16);
    e->id = id;
    e->is_response = resp;
    tt__buf_init(&e->events, 1u << 20);
    tt__buf_init(&e->merged, 1u << 20);
    e->next = *pp;
    *pp = e;
    e->older = o->newest;
    *(o->newest ? &o->newest->newer : &o->oldest) = e;
    o->newest = e;
    o->n++;
    return e;
}

static struct open_entry *open_take(struct export_open *o, const uint8_t inst[16], uint64_t id,
                                    int resp)
{
    struct open_entry **pp = open_find(o, inst, id, resp);
    struct open_entry *e = *pp;
    if (e) {
        *pp = e->next;
        age_unlink(o, e);
        o->n--;
    }
    return e;
}

/* --- requests --- */

void export_req_init(struct export_req *r, size_t max_bytes)
{
    memset(r, 0, sizeof *r);
    for (int s = 0; s < EXP__SIGNALS; s++) {
        tt__buf_init(&r->body[s], max_bytes);
    }
}

void export_req_reset(struct export_req *r)
{
    for (int s = 0; s < EXP__SIGNALS; s++) {
        tt__buf_reset(&r->body[s]);
        tt__buf_shrink(&r->body[s], 1u << 20);
        r->items[s] = 0;
        r->unmatched[s] = 0;
    }
}

void export_req_fini(struct export_req *r)
{
    for (int s = 0; s < EXP__SIGNALS; s++) {
        tt__buf_fini(&r->body[s]);
    }
}

static const char *kind_name(uint32_t k)
{
    static const char *const names[] = {"unknown", "reasoning", "tool",      "api",
                                        "llm",     "agent",     "retrieval", "other"};
    return k < sizeof names / sizeof names[0] ? names[k] : "unknown";
}

static const char *status_name(uint32_t s)
{
    static const char *const names[] = {"ok", "error", "timeout", "cancelled"};
    return s < sizeof names / sizeof names[0] ? names[s] : "error";
}

static const char *verdict_name(uint32_t v)
{
    return v == 0 ? "pass" : v == 1 ? "flag" : v == 2 ? "halt" : "unknown";
}

/* Resource{attributes} and the scope, opening ResourceX{resource, ScopeX{scope, ...}}: the
 * caller writes the items (field 2 of the scope message) and ends the two messages. */
static void resource_open(struct pbw *w, const struct agent_ident *id)
{
    w_begin(w, 1); /* ResourceSpans / ResourceLogs / ResourceMetrics */
    w_begin(w, 1); /* Resource */
    kv_cstr(w, 1, "service.name", id->agent);
    char hex[33];
    for (int i = 0; i < 16; i++) {
        snprintf(hex + 2 * i, 3, "%02x", id->instance[i]);
    }
    kv_cstr(w, 1, "service.instance.id", hex);
    if (id->host[0]) {
        kv_cstr(w, 1, "host.name", id->host);
    }
    if (id->pid) {
        kv_int(w, 1, "process.pid", id->pid);
    }
    if (id->library[0]) {
        kv_cstr(w, 1, "telemetry.sdk.name", "telltale");
        kv_cstr(w, 1, "telemetry.sdk.version", id->library);
    }
    w_end(w);
    w_begin(w, 2); /* ScopeSpans / ScopeLogs / ScopeMetrics */
    w_begin(w, 1); /* InstrumentationScope */
    w_str(w, 1, "telltale");
    w_str(w, 2, TT_VERSION_STRING);
    w_end(w);
}

static void resource_close(struct pbw *w)
{
    w_end(w);
    w_end(w);
}

/* Span ids: trace id, span id, parent span id (fields 1, 2, 4). */
static void span_ids(struct pbw *w, const uint8_t trace_id[16], uint64_t span, uint64_t parent)
{
    uint8_t id[8];
    w_bytes(w, 1, trace_id, 16);
    put_be64(id, span);
    w_bytes(w, 2, id, 8);
    if (parent) {
        put_be64(id, parent);
        w_bytes(w, 4, id, 8);
    }
}

enum { SPAN_KIND_INTERNAL = 1, SPAN_KIND_CLIENT = 3 };

/* A step's or response's end: its begin plus the duration its end event gives (saturated), else
 * the end event's own time; never before the begin. */
static int64_t span_end(int64_t t_begin, uint64_t duration_ns, int64_t t_end_event)
{
    int64_t end = duration_ns ? tt__add_sat_i64(t_begin, tt__dur_i64(duration_ns)) : t_end_event;
    return end < t_begin ? t_begin : end;
}

static void step_span(struct pbw *w, const struct open_entry *b, const tt__ev_step_end *e,
                      int64_t t_end_event)
{
    w_begin(w, 2); /* Span */
    span_ids(w, b->trace_id, b->span_id, b->parent_span_id);
    char name[600];
    const char *op = NULL;
    if (b->kind == TT_STEP_TOOL) {
        op = "execute_tool";
    } else if (b->kind == TT_STEP_LLM) {
        op = "chat";
    } else if (b->kind == TT_STEP_AGENT) {
        op = "invoke_agent";
    }
    size_t ol = op ? strlen(op) : 0;
    if (op && b->kind != TT_STEP_LLM && !(strncmp(b->name, op, ol) == 0 && b->name[ol] == ' ')) {
        /* "execute_tool NAME" (a name from OTLP may have the operation already) */
        snprintf(name, sizeof name, "%s %.500s", op, b->name);
    } else {
        snprintf(name, sizeof name, "%.500s", b->name);
    }
    w_str(w, 5, name);
    w_uint(w, 6, b->kind == TT_STEP_LLM ? SPAN_KIND_CLIENT : SPAN_KIND_INTERNAL);
    int64_t end = span_end(b->t_begin, e->duration_ns, t_end_event);
    w_fixed64(w, 7, (uint64_t)b->t_begin);
    w_fixed64(w, 8, (uint64_t)end);
    if (op) {
        kv_cstr(w, 9, "gen_ai.operation.name", op);
    }
    if (b->kind == TT_STEP_TOOL) {
        kv_cstr(w, 9, "gen_ai.tool.name", b->name);
    } else if (b->kind == TT_STEP_AGENT) {
        kv_cstr(w, 9, "gen_ai.agent.name", b->name);
    }
    if (b->session) {
        kv_cstr(w, 9, "gen_ai.conversation.id", b->session);
    }
    kv_cstr(w, 9, "telltale.step.kind", kind_name(b->kind));
    kv_cstr(w, 9, "telltale.step.status", status_name(e->status));
    if (b->query && b->query[0]) {
        kv_cstr(w, 9, "telltale.step.query", b->query);
    }
    if (e->result_bytes >= 0) {
        kv_int(w, 9, "telltale.step.result_bytes", e->result_bytes);
    }
    w_raw(w, b->merged.data, b->merged.len);
    w_raw(w, b->events.data, b->events.len);
    if (e->status != TT_STATUS_OK) {
        kv_cstr(w, 9, "error.type", status_name(e->status));
        w_begin(w, 15); /* Status */
        if (e->error.n) {
            w_bytes(w, 2, e->error.p, e->error.n > OPEN_MAX_STR ? OPEN_MAX_STR : e->error.n);
        }
        w_uint(w, 3, 2); /* STATUS_CODE_ERROR */
        w_end(w);
    }
    w_end(w);
}

/* The keys the response span writes itself: a param of the same name is not repeated. */
static int own_key(tt__bstr k)
{
    static const char *const own[] = {"gen_ai.operation.name", "gen_ai.request.model",
                                      "gen_ai.usage.output_tokens", "gen_ai.conversation.id",
                                      "trace_id"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        if (k.n == strlen(own[i]) && !memcmp(k.p, own[i], k.n)) {
            return 1;
        }
    }
    return 0;
}

static void kv_finite(struct pbw *w, const char *key, float v)
{
    if (isfinite(v)) {
        kv_double(w, 9, key, v);
    }
}

/* A gen_ai.evaluation.result span event (fields: time 1, name 2, attributes 3). */
static void eval_event(struct pbw *w, uint32_t field, int64_t t, const char *eval_name,
                       double score, const char *label, tt__bstr explanation)
{
    w_begin(w, field);
    w_fixed64(w, 1, (uint64_t)t);
    w_str(w, 2, "gen_ai.evaluation.result");
    kv_cstr(w, 3, "gen_ai.evaluation.name", eval_name);
    if (isfinite(score)) {
        kv_double(w, 3, "gen_ai.evaluation.score.value", score);
    }
    kv_cstr(w, 3, "gen_ai.evaluation.score.label", label);
    if (explanation.n) {
        kv_str(w, 3, "gen_ai.evaluation.explanation", explanation.p,
               explanation.n > OPEN_MAX_STR ? OPEN_MAX_STR : explanation.n);
    }
}

/* A response's attributes (field 9) and events (field 11, the guards' verdicts then its own);
 * in_step: written into its step's span, which has the operation and the session already. */
static void response_attrs(struct pbw *w, const struct open_entry *b, const tt__ev_response_end *e,
                           int in_step)
{
    if (!in_step) {
        kv_cstr(w, 9, "gen_ai.operation.name", "chat");
        if (b->session) {
            kv_cstr(w, 9, "gen_ai.conversation.id", b->session);
        }
    }
    kv_cstr(w, 9, "gen_ai.request.model", b->name);
    kv_int(w, 9, "gen_ai.usage.output_tokens", e->tokens);
    if (e->estimated) {
        kv_int(w, 9, "telltale.usage.estimated", 1);
    }
    if (b->params) {
        tt__attr_iter it;
        tt__attr_val a;
        tt__attr_iter_init(&it, (tt__bstr){b->params, b->params_len}, 3);
        while (tt__attr_next(&it, &a) == 1) {
            int genai = a.key.n > 7 && !memcmp(a.key.p, "gen_ai.", 7);
            if (!own_key(a.key)) {
                kv_attr(w, 9, genai ? "" : "telltale.param.", &a);
            }
        }
    }
    kv_finite(w, "telltale.confidence.mean_logprob", e->mean_logprob);
    kv_finite(w, "telltale.confidence.min_logprob", e->min_logprob);
    kv_finite(w, "telltale.confidence.perplexity", e->perplexity);
    kv_finite(w, "telltale.confidence.mean_entropy", e->mean_entropy);
    kv_finite(w, "telltale.confidence.low_confidence_share", e->low_confidence_share);
    kv_finite(w, "telltale.confidence.min_window_confidence", e->min_window_confidence);
    kv_cstr(w, 9, "telltale.verdict", verdict_name(e->verdict));
    if (e->reason.n) {
        kv_str(w, 9, "telltale.verdict.reason", e->reason.p,
               e->reason.n > OPEN_MAX_STR ? OPEN_MAX_STR : e->reason.n);
    }
}

static void response_events(struct pbw *w, const struct open_entry *b, const tt__ev_response_end *e,
                            int64_t end)
{
    w_raw(w, b->events.data, b->events.len);
    eval_event(w, 11, end, "telltale.response", e->min_window_confidence, verdict_name(e->verdict),
               e->reason);
    w_end(w);
}

static int64_t response_end_time(const struct open_entry *b, const tt__ev_response_end *e,
                                 int64_t t_end_event)
{
    return span_end(b->t_begin, e->duration_ns, t_end_event);
}

static void response_span(struct pbw *w, const struct open_entry *b, const tt__ev_response_end *e,
                          int64_t t_end_event)
{
    w_begin(w, 2); /* Span */
    span_ids(w, b->trace_id, b->span_id, b->parent_span_id);
    char name[600];
    snprintf(name, sizeof name, "chat %.500s", b->name);
    w_str(w, 5, name);
    w_uint(w, 6, SPAN_KIND_CLIENT);
    int64_t end = response_end_time(b, e, t_end_event);
    w_fixed64(w, 7, (uint64_t)b->t_begin);
    w_fixed64(w, 8, (uint64_t)end);
    response_attrs(w, b, e, 0);
    response_events(w, b, e, end);
    w_end(w);
}

/* A response whose span id is its open step's: its attributes and events go into the step's
 * span. Returns 1 when merged. */
static int merge_into_step(struct export_open *o, const uint8_t inst[16],
                           const struct open_entry *b, const tt__ev_response_end *e,
                           int64_t t_end_event)
{
    if (!b->step_id) {
        return 0;
    }
    struct open_entry *st = *open_find(o, inst, b->step_id, 0);
    if (!st || st->span_id != b->span_id || st->has_response) {
        return 0;
    }
    size_t ma = st->merged.len, ev = st->events.len;
    struct pbw w = {&st->merged, 0, 0, {0}};
    response_attrs(&w, b, e, 1);
    struct pbw we = {&st->events, 0, 0, {0}};
    w_raw(&we, b->events.data, b->events.len);
    eval_event(&we, 11, response_end_time(b, e, t_end_event), "telltale.response",
               e->min_window_confidence, verdict_name(e->verdict), e->reason);
    w_end(&we);
    if (w.err || we.err) {
        st->merged.len = ma;
        st->events.len = ev;
        return 0;
    }
    st->has_response = 1;
    return 1;
}

static void guard_event(struct open_entry *b, const tt__ev_guard *g, int64_t t)
{
    if (b->n_events >= OPEN_MAX_GUARD_EVENTS) {
        return;
    }
    struct pbw w = {&b->events, 0, 0, {0}};
    size_t before = b->events.len;
    eval_event(&w, 11, t, "telltale.guard", g->value, verdict_name(g->verdict), g->reason);
    kv_double(&w, 3, "telltale.guard.threshold", g->threshold);
    kv_int(&w, 3, "telltale.guard.token_index", g->token_index);
    w_end(&w);
    if (w.err) {
        b->events.len = before;
        return;
    }
    b->n_events++;
}

static void log_record(struct pbw *w, const tt__event *ev, const tt__ev_log *l)
{
    w_begin(w, 2); /* LogRecord */
    w_fixed64(w, 1, (uint64_t)ev->time);
    w_uint(w, 2, l->severity);
    w_begin(w, 5); /* body: AnyValue */
    w_bytes(w, 1, l->message.p, l->message.n);
    w_end(w);
    tt__attr_iter it;
    tt__attr_val a;
    tt__attr_iter_init(&it, ev->body, 3);
    while (tt__attr_next(&it, &a) == 1) {
        kv_attr(w, 6, "", &a);
    }
    if (ev->session.n) {
        kv_str(w, 6, "gen_ai.conversation.id", ev->session.p, ev->session.n);
    }
    w_end(w);
}

static void metric_point(struct pbw *w, const tt__event *ev, const tt__ev_metric *m)
{
    w_begin(w, 2); /* Metric */
    w_bytes(w, 1, m->name.p, m->name.n);
    if (m->unit.n) {
        w_bytes(w, 3, m->unit.p, m->unit.n);
    }
    w_begin(w, 5); /* Gauge */
    w_begin(w, 1); /* NumberDataPoint */
    w_fixed64(w, 3, (uint64_t)ev->time);
    w_double(w, 4, m->value);
    tt__attr_iter it;
    tt__attr_val a;
    tt__attr_iter_init(&it, ev->body, 5);
    while (tt__attr_next(&it, &a) == 1) {
        kv_attr(w, 7, "", &a);
    }
    if (ev->session.n) {
        kv_str(w, 7, "gen_ai.conversation.id", ev->session.p, ev->session.n);
    }
    w_end(w);
    w_end(w);
    w_end(w);
}

static int parse(tt__batch *b, const uint8_t *raw, size_t len)
{
    /* Committed batches passed the collector's limits already: no tighter ones here. */
    tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
    const char *why;
    return tt__batch_parse(b, raw, len, &lim, &why);
}

void export_batch_count(const uint8_t *raw, size_t len, uint64_t counts[EXP__SIGNALS])
{
    tt__batch b;
    tt__event ev;
    memset(counts, 0, EXP__SIGNALS * sizeof counts[0]);
    if (parse(&b, raw, len) != 0) {
        return;
    }
    while (tt__batch_next(&b, &ev) == 1) {
        if (ev.kind == TT_EV_STEP_END || ev.kind == TT_EV_RESPONSE_END) {
            counts[EXP_SPANS]++;
        } else if (ev.kind == TT_EV_LOG) {
            counts[EXP_LOGS]++;
        } else if (ev.kind == TT_EV_METRIC) {
            counts[EXP_POINTS]++;
        }
    }
}

static void begin_entry(struct open_entry *e, const tt__event *ev, const uint8_t trace_id[16],
                        uint64_t span, uint64_t parent, tt__bstr name)
{
    e->t_begin = ev->time;
    memcpy(e->trace_id, trace_id, 16);
    e->span_id = span;
    e->parent_span_id = parent;
    e->name = dup_bstr(name);
    e->session = ev->session.n ? dup_bstr(ev->session) : NULL;
}

int export_req_add(struct export_req *r, struct export_open *open, const struct agent_ident *id,
                   const uint8_t *raw, size_t len)
{
    tt__batch b;
    tt__event ev;
    if (parse(&b, raw, len) != 0) {
        return -1;
    }
    size_t before[EXP__SIGNALS];
    struct pbw w[EXP__SIGNALS];
    int opened[EXP__SIGNALS] = {0};
    for (int s = 0; s < EXP__SIGNALS; s++) {
        before[s] = r->body[s].len;
        w[s] = (struct pbw){&r->body[s], 0, 0, {0}};
    }
    uint64_t items[EXP__SIGNALS] = {0}, unmatched[EXP__SIGNALS] = {0};
#define OPEN(s)                                                                                    \
    do {                                                                                           \
        if (!opened[s]) {                                                                          \
            resource_open(&w[s], id);                                                              \
            opened[s] = 1;                                                                         \
        }                                                                                          \
    } while (0)
    while (tt__batch_next(&b, &ev) == 1) {
        switch (ev.kind) {
        case TT_EV_STEP_BEGIN: {
            tt__ev_step_begin sb;
            if (tt__ev_step_begin_decode(ev.body, &sb) != 0 || !sb.has_trace || !sb.span_id) {
                break; /* no trace context: its end is unmatched */
            }
            struct open_entry *e = open_add(open, b.instance, sb.step_id, 0);
            if (e) {
                begin_entry(e, &ev, sb.trace_id, sb.span_id, sb.parent_span_id, sb.name);
                e->kind = sb.kind;
                e->query = sb.query.n ? dup_bstr(sb.query) : NULL;
            }
            break;
        }
        case TT_EV_STEP_END: {
            tt__ev_step_end se;
            if (tt__ev_step_end_decode(ev.body, &se) != 0) {
                unmatched[EXP_SPANS]++;
                break;
            }
            struct open_entry *e = open_take(open, b.instance, se.step_id, 0);
            if (!e || !e->name) {
                unmatched[EXP_SPANS]++;
            } else {
                OPEN(EXP_SPANS);
                step_span(&w[EXP_SPANS], e, &se, ev.time);
                items[EXP_SPANS] += 1 + (uint64_t)e->has_response;
            }
            if (e) {
                entry_free(e);
            }
            break;
        }
        case TT_EV_RESPONSE_BEGIN: {
            tt__ev_response_begin rb;
            if (tt__ev_response_begin_decode(ev.body, &rb) != 0 || !rb.has_trace) {
                break;
            }
            struct open_entry *e = open_add(open, b.instance, rb.response_id, 1);
            if (e) {
                begin_entry(e, &ev, rb.trace_id, rb.span_id ? rb.span_id : rb.response_id,
                            rb.parent_span_id, rb.model);
                e->step_id = rb.step_id;
                e->params = malloc(ev.body.n ? ev.body.n : 1);
                if (e->params) {
                    memcpy(e->params, ev.body.p, ev.body.n);
                    e->params_len = ev.body.n;
                }
            }
            break;
        }
        case TT_EV_GUARD: {
            tt__ev_guard g;
            if (tt__ev_guard_decode(ev.body, &g) == 0) {
                struct open_entry **pp = open_find(open, b.instance, g.response_id, 1);
                if (*pp) {
                    guard_event(*pp, &g, ev.time);
                }
            }
            break;
        }
        case TT_EV_RESPONSE_END: {
            tt__ev_response_end re;
            if (tt__ev_response_end_decode(ev.body, &re) != 0) {
                unmatched[EXP_SPANS]++;
                break;
            }
            struct open_entry *e = open_take(open, b.instance, re.response_id, 1);
            if (!e || !e->name) {
                unmatched[EXP_SPANS]++;
            } else if (merge_into_step(open, b.instance, e, &re, ev.time)) {
                /* counted with its step's span */
            } else {
                OPEN(EXP_SPANS);
                response_span(&w[EXP_SPANS], e, &re, ev.time);
                items[EXP_SPANS]++;
            }
            if (e) {
                entry_free(e);
            }
            break;
        }
        case TT_EV_LOG: {
            tt__ev_log l;
            if (tt__ev_log_decode(ev.body, &l) == 0) {
                OPEN(EXP_LOGS);
                log_record(&w[EXP_LOGS], &ev, &l);
                items[EXP_LOGS]++;
            } else {
                unmatched[EXP_LOGS]++;
            }
            break;
        }
        case TT_EV_METRIC: {
            tt__ev_metric m;
            if (tt__ev_metric_decode(ev.body, &m) == 0) {
                OPEN(EXP_POINTS);
                metric_point(&w[EXP_POINTS], &ev, &m);
                items[EXP_POINTS]++;
            } else {
                unmatched[EXP_POINTS]++;
            }
            break;
        }
        default:
            break;
        }
    }
#undef OPEN
    int err = 0;
    for (int s = 0; s < EXP__SIGNALS; s++) {
        if (opened[s]) {
            resource_close(&w[s]);
        }
        err |= w[s].err || w[s].depth != 0;
    }
    if (err) {
        for (int s = 0; s < EXP__SIGNALS; s++) {
            r->body[s].len = before[s];
        }
        return -1;
    }
    for (int s = 0; s < EXP__SIGNALS; s++) {
        r->items[s] += items[s];
        r->unmatched[s] += unmatched[s];
    }
    return 0;
}

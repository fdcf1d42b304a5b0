/*
 * api/sessions.c - GET /api/v1/sessions (an agent's sessions, newest first) and
 * GET /api/v1/sessions/{id}: one session with its execution path as a tree of steps (kind,
 * name, query, start, latency, status, error) built from the steps table, and the ids of its
 * responses when the responses table exists.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/api/render.h"
#include "collector/store/store.h"
#include "common/json.h"

#define STEPS_MAX 10000   /* steps rendered per session; more are counted, not shown */
#define TREE_DEPTH_MAX 64 /* deeper steps are counted in steps_not_shown */
#define RESPONSES_MAX 10000

static int session_json(void *ctx, const struct store_session *s)
{
    tt__json *j = ctx;
    tt__json_obj_begin(j);
    tt__json_kv_cstr(j, "id", s->id);
    tt__json_kv_cstr(j, "agent", s->agent);
    tt__json_kv_i64(j, "first_seen_unix_ns", s->first_seen_ns);
    tt__json_kv_i64(j, "last_seen_unix_ns", s->last_seen_ns);
    tt__json_kv_i64(j, "events", s->events);
    tt__json_kv_i64(j, "steps", s->steps);
    tt__json_obj_end(j);
    return 0;
}

enum MHD_Result api_sessions(const struct http_req *r)
{
    static const char *const allowed[] = {"agent", "limit", NULL};
    const char *bad = http_params_check(r, allowed);
    uint64_t limit;
    if (bad || http_param_u64(r, "limit", 1, 10000, 100, &limit) != 0) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s",
                          bad ? bad : "limit: expected an integer from 1 to 10000");
    }
    const char *agent = http_param(r, "agent");
    struct http_list l;
    if (http_list_open(r, &l, "sessions") != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    int n = store_sessions(l.rd, agent, limit, session_json, &l.j);
    http_list_end_array(&l);
    return http_list_reply(r, &l, n, "sessions");
}

/* One step row, copied out of the store. */
struct step {
    int64_t inst, id, parent;
    int kind, status, has_end;
    int64_t start, duration, result_bytes;
    char *name, *query, *error;
    int has_trace;
    uint8_t trace_id[16];
    uint64_t span_id, parent_span_id;
};

struct tree {
    struct step *s;
    size_t n;
    size_t *by_parent; /* indexes sorted by (inst, parent, start) */
    size_t shown;
};

static __thread struct tree *sort_tree;

static int cmp_parent(const void *pa, const void *pb)
{
    const struct step *a = &sort_tree->s[*(const size_t *)pa];
    const struct step *b = &sort_tree->s[*(const size_t *)pb];
    if (a->inst != b->inst) {
        return a->inst < b->inst ? -1 : 1;
    }
    if (a->parent != b->parent) {
        return a->parent < b->parent ? -1 : 1;
    }
    return a->start < b->start ? -1 : a->start > b->start;
}

static int cmp_id(const void *pa, const void *pb)
{
    const struct step *a = pa, *b = pb;
    if (a->inst != b->inst) {
        return a->inst < b->inst ? -1 : 1;
    }
    return a->id < b->id ? -1 : a->id > b->id;
}

static const char *kind_name(int k)
{
    static const char *const names[] = {"unknown", "reasoning", "tool",      "api",
                                        "llm",     "agent",     "retrieval", "other"};
    return k >= 0 && k < 8 ? names[k] : "unknown";
}

static const char *status_name(int s)
{
    static const char *const names[] = {"ok", "error", "timeout", "cancelled"};
    return s >= 0 && s < 4 ? names[s] : "unknown";
}

/* First index in by_parent whose (inst, parent) is (inst, parent), or n. */
static size_t children_begin(const struct tree *t, int64_t inst, int64_t parent)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct step *m = &t->s[t->by_parent[mid]];
        if (m->inst < inst || (m->inst == inst && m->parent < parent)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void step_json(tt__json *j, struct tree *t, size_t i, int depth)
{
    const struct step *s = &t->s[i];
    t->shown++;
    tt__json_obj_begin(j);
    /* 16 hex digits, as in events and alerts; a root step has no parent_id. */
    render_response_id(j, "step_id", (uint64_t)s->id);
    if (s->parent) {
        render_response_id(j, "parent_id", (uint64_t)s->parent);
    }
    tt__json_kv_cstr(j, "kind", kind_name(s->kind));
    tt__json_kv_cstr(j, "name", s->name ? s->name : "");
    if (s->query) {
        tt__json_kv_cstr(j, "query", s->query);
    }
    tt__json_kv_i64(j, "start_unix_ns", s->start);
    tt__json_key(j, "latency_ns");
    s->has_end ? tt__json_i64(j, s->duration) : tt__json_null(j);
    tt__json_kv_cstr(j, "status", s->has_end ? status_name(s->status) : "running");
    if (s->has_end) {
        tt__json_kv_i64(j, "result_bytes", s->result_bytes);
    }
    if (s->error) {
        tt__json_kv_cstr(j, "error", s->error);
    }
    if (s->has_trace) {
        render_trace(j, s->trace_id, s->span_id, s->parent_span_id);
    }
    tt__json_key(j, "children");
    tt__json_arr_begin(j);
    if (depth < TREE_DEPTH_MAX && s->id != 0) {
        for (size_t k = children_begin(t, s->inst, s->id); k < t->n; k++) {
            const struct step *c = &t->s[t->by_parent[k]];
            if (c->inst != s->inst || c->parent != s->id) {
                break;
            }
            step_json(j, t, t->by_parent[k], depth + 1);
        }
    }
    tt__json_arr_end(j);
    tt__json_obj_end(j);
}

static char *dup_str(const char *v)
{
    return v ? strdup(v) : NULL;
}

struct steps_load {
    struct tree *t;
    int64_t total;
};

static int step_add(void *ctx, const struct store_step *r)
{
    struct steps_load *l = ctx;
    struct tree *t = l->t;
    l->total++;
    if (t->n == STEPS_MAX) {
        return 0; /* counted, not shown */
    }
    struct step *s = &t->s[t->n];
    s->inst = r->instance_key;
    s->id = r->step_id;
    s->parent = r->parent_id;
    s->kind = r->kind;
    s->name = dup_str(r->name);
    s->query = dup_str(r->query);
    s->start = r->start_ns;
    s->has_end = r->has_end;
    s->duration = r->duration_ns;
    s->status = r->status;
    s->result_bytes = r->result_bytes;
    s->error = dup_str(r->error);
    s->has_trace = r->trace_id != NULL;
    if (r->trace_id) {
        memcpy(s->trace_id, r->trace_id, 16);
    }
    s->span_id = r->span_id;
    s->parent_span_id = r->parent_span_id;
    t->by_parent[t->n] = t->n;
    t->n++;
    return 0;
}

static int load_steps(struct store_read *rd, int64_t agent_key, const char *session, struct tree *t,
                      int64_t *total)
{
    t->s = calloc(STEPS_MAX, sizeof *t->s);
    t->by_parent = calloc(STEPS_MAX, sizeof *t->by_parent);
    *total = 0;
    if (!t->s || !t->by_parent) {
        return -1;
    }
    struct steps_load l = {t, 0};
    int rc = store_session_steps(rd, agent_key, session, step_add, &l);
    *total = l.total;
    if (rc < 0) {
        return -1;
    }
    /* Steps by (instance, id) to find parents; an index by (instance, parent) for children. */
    qsort(t->s, t->n, sizeof *t->s, cmp_id);
    sort_tree = t;
    qsort(t->by_parent, t->n, sizeof *t->by_parent, cmp_parent);
    return 0;
}

static void tree_free(struct tree *t)
{
    for (size_t i = 0; t->s && i < t->n; i++) {
        free(t->s[i].name);
        free(t->s[i].query);
        free(t->s[i].error);
    }
    free(t->s);
    free(t->by_parent);
}

/* Whether a step's parent is among the loaded steps (else it is a root). */
static int has_parent(const struct tree *t, const struct step *s)
{
    if (s->parent == 0) {
        return 0;
    }
    struct step key = {.inst = s->inst, .id = s->parent};
    return bsearch(&key, t->s, t->n, sizeof *t->s, cmp_id) != NULL;
}

static void steps_json(tt__json *j, struct store_read *rd, int64_t agent_key, const char *session)
{
    struct tree t;
    memset(&t, 0, sizeof t);
    int64_t total = 0;
    int ok = load_steps(rd, agent_key, session, &t, &total) == 0;
    tt__json_key(j, "steps");
    tt__json_arr_begin(j);
    for (size_t i = 0; ok && i < t.n; i++) {
        if (!has_parent(&t, &t.s[i])) {
            step_json(j, &t, i, 0);
        }
    }
    tt__json_arr_end(j);
    tt__json_kv_i64(j, "steps_total", total);
    /* Beyond STEPS_MAX, deeper than TREE_DEPTH_MAX, or in a parent cycle (hostile input). */
    tt__json_kv_i64(j, "steps_not_shown", total - (int64_t)t.shown);
    tree_free(&t);
}

static int response_id_json(void *ctx, uint64_t id)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++) {
        be[i] = (uint8_t)(id >> (56 - 8 * i));
    }
    tt__json_hex(ctx, be, 8);
    return 0;
}

static void responses_json(tt__json *j, struct store_read *rd, int64_t agent_key,
                           const char *session)
{
    tt__json_key(j, "responses");
    tt__json_arr_begin(j);
    store_session_responses(rd, agent_key, session, RESPONSES_MAX, response_id_json, j);
    tt__json_arr_end(j);
}

struct session_find {
    struct store_session s;
    char agent[256];
};

static int session_keep(void *ctx, const struct store_session *s)
{
    struct session_find *f = ctx;
    f->s = *s;
    snprintf(f->agent, sizeof f->agent, "%s", s->agent ? s->agent : "");
    f->s.agent = f->agent;
    f->s.id = NULL;
    return 0;
}

enum MHD_Result api_session(const struct http_req *r)
{
    static const char *const allowed[] = {"agent", NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *id = http_path_param(r, "id"), *agent = http_param(r, "agent");
    struct store_read *rd;
    if (store_read_open(r->ctx->store, &rd) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    /* Two at most: one is the session, two say the name is ambiguous. */
    struct session_find found;
    memset(&found, 0, sizeof found);
    int rows = store_session_find(rd, id, agent, 2, session_keep, &found);
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    if (rows == 1) {
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, "id", id);
        tt__json_kv_cstr(&j, "agent", found.s.agent);
        tt__json_kv_i64(&j, "first_seen_unix_ns", found.s.first_seen_ns);
        tt__json_kv_i64(&j, "last_seen_unix_ns", found.s.last_seen_ns);
        tt__json_kv_i64(&j, "events", found.s.events);
        steps_json(&j, rd, found.s.agent_key, id);
        responses_json(&j, rd, found.s.agent_key, id);
        tt__json_obj_end(&j);
    }
    store_read_close(rd);
    enum MHD_Result rc;
    if (rows < 0) {
        rc = http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query sessions");
    } else if (rows == 0) {
        rc = http_error(r, MHD_HTTP_NOT_FOUND, "no session \"%.200s\"", id);
    } else if (rows > 1) {
        rc = http_error(r, MHD_HTTP_CONFLICT,
                        "session \"%.200s\" exists for several agents: add agent=", id);
    } else {
        rc = http_json(r, MHD_HTTP_OK, &b);
    }
    tt__buf_fini(&b);
    return rc;
}

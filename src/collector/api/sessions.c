/*
 * api/sessions.c - GET /api/v1/sessions (an agent's sessions, newest first) and
 * GET /api/v1/sessions/{id}: one session with its execution path as a tree of steps (kind,
 * name, query, start, latency, status, error) built from the steps table, and the ids of its
 * responses when the responses table exists.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/store/store.h"
#include "common/json.h"

#define STEPS_MAX 10000   /* steps rendered per session; more are counted, not shown */
#define TREE_DEPTH_MAX 64 /* deeper steps are counted in steps_not_shown */
#define RESPONSES_MAX 10000

static enum MHD_Result reader(const struct http_req *r, sqlite3 **db)
{
    if (store_reader_open(r->ctx->db_path, db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    return MHD_YES;
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
    sqlite3 *db;
    if (reader(r, &db) != MHD_YES) {
        return MHD_YES;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT s.name, a.name, s.first_seen, s.last_seen, s.events,"
                           " (SELECT COUNT(*) FROM steps t WHERE t.agent_id = s.agent_id AND"
                           "  t.session = s.name)"
                           " FROM sessions s JOIN agents a ON a.id = s.agent_id"
                           " WHERE ?1 IS NULL OR a.name = ?1 ORDER BY s.last_seen DESC LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query sessions");
    }
    if (agent) {
        sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 2, (int64_t)limit);
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_key(&j, "sessions");
    tt__json_arr_begin(&j);
    while (sqlite3_step(st) == SQLITE_ROW) {
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, "id", (const char *)sqlite3_column_text(st, 0));
        tt__json_kv_cstr(&j, "agent", (const char *)sqlite3_column_text(st, 1));
        tt__json_kv_i64(&j, "first_seen_unix_ns", sqlite3_column_int64(st, 2));
        tt__json_kv_i64(&j, "last_seen_unix_ns", sqlite3_column_int64(st, 3));
        tt__json_kv_i64(&j, "events", sqlite3_column_int64(st, 4));
        tt__json_kv_i64(&j, "steps", sqlite3_column_int64(st, 5));
        tt__json_obj_end(&j);
    }
    tt__json_arr_end(&j);
    tt__json_obj_end(&j);
    sqlite3_finalize(st);
    sqlite3_close(db);
    enum MHD_Result rc = http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

/* One step row, copied out of SQLite. */
struct step {
    int64_t inst, id, parent;
    int kind, status, has_end;
    int64_t start, duration, result_bytes;
    char *name, *query, *error;
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
    tt__json_kv_i64(j, "step_id", s->id);
    tt__json_kv_i64(j, "parent_id", s->parent);
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

static char *dup_col(sqlite3_stmt *st, int i)
{
    const char *v = (const char *)sqlite3_column_text(st, i);
    return v ? strdup(v) : NULL;
}

static int load_steps(sqlite3 *db, int64_t agent_id, const char *session, struct tree *t,
                      int64_t *total)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT instance_id, step_id, parent_id, kind, name, query, start_ns,"
                           " duration_ns, status, result_bytes, error FROM steps"
                           " WHERE agent_id = ?1 AND session = ?2 ORDER BY start_ns, step_id",
                           -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, agent_id);
    sqlite3_bind_text(st, 2, session, -1, SQLITE_STATIC);
    t->s = calloc(STEPS_MAX, sizeof *t->s);
    t->by_parent = calloc(STEPS_MAX, sizeof *t->by_parent);
    *total = 0;
    while (t->s && t->by_parent && sqlite3_step(st) == SQLITE_ROW) {
        (*total)++;
        if (t->n == STEPS_MAX) {
            continue;
        }
        struct step *s = &t->s[t->n];
        s->inst = sqlite3_column_int64(st, 0);
        s->id = sqlite3_column_int64(st, 1);
        s->parent = sqlite3_column_int64(st, 2);
        s->kind = sqlite3_column_int(st, 3);
        s->name = dup_col(st, 4);
        s->query = dup_col(st, 5);
        s->start = sqlite3_column_int64(st, 6);
        s->has_end = sqlite3_column_type(st, 7) != SQLITE_NULL;
        s->duration = sqlite3_column_int64(st, 7);
        s->status = sqlite3_column_int(st, 8);
        s->result_bytes = sqlite3_column_int64(st, 9);
        s->error = dup_col(st, 10);
        t->by_parent[t->n] = t->n;
        t->n++;
    }
    sqlite3_finalize(st);
    if (!t->s || !t->by_parent) {
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

static void steps_json(tt__json *j, sqlite3 *db, int64_t agent_id, const char *session)
{
    struct tree t;
    memset(&t, 0, sizeof t);
    int64_t total = 0;
    int ok = load_steps(db, agent_id, session, &t, &total) == 0;
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

static void responses_json(tt__json *j, sqlite3 *db, int64_t agent_id, const char *session)
{
    tt__json_key(j, "responses");
    tt__json_arr_begin(j);
    sqlite3_stmt *st;
    /* The responses table belongs to the responses part of the collector; absent, none. */
    if (sqlite3_prepare_v2(db,
                           "SELECT response_id FROM responses WHERE agent_id = ?1 AND session = ?2"
                           " ORDER BY COALESCE(begin_ns, end_ns), response_id LIMIT ?3",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, agent_id);
        sqlite3_bind_text(st, 2, session, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, RESPONSES_MAX);
        while (sqlite3_step(st) == SQLITE_ROW) {
            uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
            uint8_t be[8];
            for (int i = 0; i < 8; i++) {
                be[i] = (uint8_t)(id >> (56 - 8 * i));
            }
            tt__json_hex(j, be, 8);
        }
        sqlite3_finalize(st);
    }
    tt__json_arr_end(j);
}

enum MHD_Result api_session(const struct http_req *r)
{
    static const char *const allowed[] = {"agent", NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *id = http_path_param(r, "id"), *agent = http_param(r, "agent");
    sqlite3 *db;
    if (reader(r, &db) != MHD_YES) {
        return MHD_YES;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT s.agent_id, a.name, s.first_seen, s.last_seen, s.events"
                           " FROM sessions s JOIN agents a ON a.id = s.agent_id"
                           " WHERE s.name = ?1 AND (?2 IS NULL OR a.name = ?2) LIMIT 2",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query sessions");
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (agent) {
        sqlite3_bind_text(st, 2, agent, -1, SQLITE_STATIC);
    }
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    int rows = 0;
    while (rows < 2 && sqlite3_step(st) == SQLITE_ROW) {
        if (++rows > 1) {
            break;
        }
        int64_t agent_id = sqlite3_column_int64(st, 0);
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, "id", id);
        tt__json_kv_cstr(&j, "agent", (const char *)sqlite3_column_text(st, 1));
        tt__json_kv_i64(&j, "first_seen_unix_ns", sqlite3_column_int64(st, 2));
        tt__json_kv_i64(&j, "last_seen_unix_ns", sqlite3_column_int64(st, 3));
        tt__json_kv_i64(&j, "events", sqlite3_column_int64(st, 4));
        steps_json(&j, db, agent_id, id);
        responses_json(&j, db, agent_id, id);
        tt__json_obj_end(&j);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    enum MHD_Result rc;
    if (rows == 0) {
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

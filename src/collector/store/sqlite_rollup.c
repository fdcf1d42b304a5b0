/*
 * sqlite_rollup.c - the SQLite store's rollups (store.h "rollups"): the writer adds each
 * committed item's events into an in-memory accumulator of 1 s buckets (rollup_item, after
 * derive_item, so a step's begin is in the steps table when its end is counted), and writes it
 * into every stored level just before the transaction commits (rollup_flush): the rows commit
 * with the events they count, or not at all (rollup_discard after a rollback). Readers merge
 * the stored rows of one level into the buckets a query asks for.
 *
 * Table rollups(step_s, agent_id, bucket, metric, key, n, errors, sum, hist): bucket is the
 * bucket's start in Unix seconds, hist the encoded store_hist (NULL for counts only). The
 * upsert merges histograms with the SQL function tt_hist_merge, registered on the writer's
 * connection only.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/store/sqlite.h"
#include "common/clock.h"

const char rollup_schema[] =
    "CREATE TABLE IF NOT EXISTS rollups(step_s INTEGER NOT NULL, agent_id INTEGER NOT NULL,"
    " bucket INTEGER NOT NULL, metric INTEGER NOT NULL, key TEXT NOT NULL, n INTEGER NOT NULL,"
    " errors INTEGER NOT NULL, sum REAL NOT NULL, hist BLOB,"
    " PRIMARY KEY(step_s, agent_id, bucket, metric, key)) WITHOUT ROWID;";

static const int levels[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_LEVELS;
static const int64_t keep[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_KEEP;

/* Entries accumulated before a flush inside the transaction (bounds memory, not a batch). */
#define ACC_MAX 4096
#define HIST_ENC_MAX (STORE_HIST_BINS * 15)

struct acc {
    int64_t agent_id, sec;
    int metric;
    char key[STORE_ROLLUP_KEY_MAX + 1];
    uint64_t n, errors;
    double sum;
    struct store_hist *hist; /* owned; NULL for count-only metrics */
    int used;
};

struct rollup {
    sqlite3 *db;
    sqlite3_stmt *upsert, *step_of, *agents, *prune;
    struct acc *tab; /* open addressing, ACC_MAX * 2 slots */
    size_t used;
    int64_t last_prune_s;
    uint8_t enc[HIST_ENC_MAX];
};

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* tt_hist_merge(a, b): the encoded sum of two encoded histograms (NULL counts as empty). */
static void hist_merge_fn(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
    static _Thread_local struct store_hist h;
    static _Thread_local uint8_t out[HIST_ENC_MAX];
    memset(&h, 0, sizeof h);
    int any = 0;
    for (int i = 0; i < argc; i++) {
        if (sqlite3_value_type(argv[i]) != SQLITE_BLOB) {
            continue;
        }
        any = 1;
        const uint8_t *p = sqlite3_value_blob(argv[i]);
        if (store_hist_merge_encoded(&h, p, (size_t)sqlite3_value_bytes(argv[i])) != 0) {
            sqlite3_result_error(cx, "tt_hist_merge: malformed histogram", -1);
            return;
        }
    }
    if (!any) {
        sqlite3_result_null(cx);
        return;
    }
    size_t n = store_hist_encode(&h, out, sizeof out);
    sqlite3_result_blob(cx, out, (int)n, SQLITE_TRANSIENT);
}

int rollup_open(struct rollup **out, sqlite3 *db)
{
    struct rollup *r = calloc(1, sizeof *r);
    if (!r) {
        return -1;
    }
    r->db = db;
    r->tab = calloc(ACC_MAX * 2, sizeof *r->tab);
    int rc = r->tab ? SQLITE_OK : SQLITE_NOMEM;
    rc = rc ? rc
            : sqlite3_create_function(db, "tt_hist_merge", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                      NULL, hist_merge_fn, NULL, NULL);
    static const char *const sql[] = {
        "INSERT INTO rollups(step_s, agent_id, bucket, metric, key, n, errors, sum, hist)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9) ON CONFLICT(step_s, agent_id, bucket, metric, key)"
        " DO UPDATE SET n=n+excluded.n, errors=errors+excluded.errors, sum=sum+excluded.sum,"
        " hist=tt_hist_merge(hist, excluded.hist)",
        "SELECT kind, name FROM steps WHERE instance_id=?1 AND step_id=?2",
        "SELECT id FROM agents",
        "DELETE FROM rollups WHERE step_s=?3 AND agent_id=?1 AND bucket<?2",
    };
    sqlite3_stmt **dst[] = {&r->upsert, &r->step_of, &r->agents, &r->prune};
    for (size_t i = 0; i < 4 && rc == SQLITE_OK; i++) {
        rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, dst[i], NULL);
    }
    if (rc != SQLITE_OK) {
        rollup_close(r);
        return -1;
    }
    *out = r;
    return 0;
}

void rollup_discard(struct rollup *r)
{
    for (size_t i = 0; i < ACC_MAX * 2; i++) {
        free(r->tab[i].hist);
        r->tab[i].hist = NULL;
        r->tab[i].used = 0;
    }
    r->used = 0;
}

void rollup_close(struct rollup *r)
{
    if (!r) {
        return;
    }
    if (r->tab) {
        rollup_discard(r);
    }
    free(r->tab);
    sqlite3_finalize(r->upsert);
    sqlite3_finalize(r->step_of);
    sqlite3_finalize(r->agents);
    sqlite3_finalize(r->prune);
    free(r);
}

static uint64_t hash_key(int64_t agent, int64_t sec, int metric, const char *key)
{
    uint64_t h = 1469598103934665603ull;
    h = (h ^ (uint64_t)agent) * 1099511628211ull;
    h = (h ^ (uint64_t)sec) * 1099511628211ull;
    h = (h ^ (uint64_t)metric) * 1099511628211ull;
    for (const char *p = key; *p; p++) {
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static int write_rows(struct rollup *r, const struct acc *a)
{
    size_t enc = a->hist ? store_hist_encode(a->hist, r->enc, sizeof r->enc) : 0;
    for (int l = 0; l < STORE_ROLLUP_N_LEVELS; l++) {
        sqlite3_stmt *st = r->upsert;
        sqlite3_bind_int(st, 1, levels[l]);
        sqlite3_bind_int64(st, 2, a->agent_id);
        sqlite3_bind_int64(st, 3, floor_div(a->sec, levels[l]) * levels[l]);
        sqlite3_bind_int(st, 4, a->metric);
        sqlite3_bind_text(st, 5, a->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (int64_t)a->n);
        sqlite3_bind_int64(st, 7, (int64_t)a->errors);
        sqlite3_bind_double(st, 8, a->sum);
        if (a->hist) {
            sqlite3_bind_blob(st, 9, r->enc, (int)enc, SQLITE_STATIC);
        } else {
            sqlite3_bind_null(st, 9);
        }
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            return rc;
        }
    }
    return 0;
}

/* Drop the rows of the levels kept for a while (STORE_ROLLUP_KEEP) once they are older, at
 * most once a minute. */
static int prune(struct rollup *r)
{
    int64_t now = (int64_t)(tt__wall_ns() / 1000000000u);
    if (now - r->last_prune_s < 60) {
        return 0;
    }
    r->last_prune_s = now;
    int rc;
    while ((rc = sqlite3_step(r->agents)) == SQLITE_ROW) {
        for (int l = 0; l < STORE_ROLLUP_N_LEVELS; l++) {
            if (!keep[l]) {
                continue;
            }
            sqlite3_bind_int64(r->prune, 1, sqlite3_column_int64(r->agents, 0));
            sqlite3_bind_int64(r->prune, 2, now - keep[l]);
            sqlite3_bind_int(r->prune, 3, levels[l]);
            int prc = sqlite3_step(r->prune);
            sqlite3_reset(r->prune);
            if (prc != SQLITE_DONE) {
                sqlite3_reset(r->agents);
                return prc;
            }
        }
    }
    sqlite3_reset(r->agents);
    return rc == SQLITE_DONE ? 0 : rc;
}

int rollup_flush(struct rollup *r)
{
    int rc = 0;
    for (size_t i = 0; i < ACC_MAX * 2 && rc == 0; i++) {
        if (r->tab[i].used) {
            rc = write_rows(r, &r->tab[i]);
        }
    }
    rc = rc ? rc : prune(r);
    rollup_discard(r);
    return rc;
}

/* The accumulator of (agent, sec, metric, key), made when missing; NULL on allocation failure
 * or an SQLite error of the flush that made room (in *rc). */
static struct acc *slot(struct rollup *r, int64_t agent, int64_t sec, int metric, const char *key,
                        size_t keylen, int *rc)
{
    char k[STORE_ROLLUP_KEY_MAX + 1];
    keylen = keylen > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : keylen;
    memcpy(k, key, keylen);
    k[keylen] = 0;
    if (r->used >= ACC_MAX && (*rc = rollup_flush(r)) != 0) {
        return NULL;
    }
    size_t mask = ACC_MAX * 2 - 1, j = hash_key(agent, sec, metric, k) & mask;
    for (;; j = (j + 1) & mask) {
        struct acc *a = &r->tab[j];
        if (!a->used) {
            *a = (struct acc){.agent_id = agent, .sec = sec, .metric = metric, .used = 1};
            memcpy(a->key, k, keylen + 1);
            if (metric != STORE_ROLLUP_EVENTS && metric != STORE_ROLLUP_TOKENS) {
                a->hist = calloc(1, sizeof *a->hist);
                if (!a->hist) {
                    a->used = 0;
                    *rc = SQLITE_NOMEM;
                    return NULL;
                }
            }
            r->used++;
            return a;
        }
        if (a->agent_id == agent && a->sec == sec && a->metric == metric && !strcmp(a->key, k)) {
            return a;
        }
    }
}

static int add(struct rollup *r, int64_t agent, int64_t time_ns, int metric, const char *key,
               size_t keylen, uint64_t n, int error, double value)
{
    int rc = 0;
    struct acc *a = slot(r, agent, floor_div(time_ns, 1000000000), metric, key, keylen, &rc);
    if (!a) {
        return rc ? rc : SQLITE_NOMEM;
    }
    a->n += n;
    a->errors += error ? 1 : 0;
    if (a->hist && !isnan(value)) {
        a->sum += value;
        store_hist_add(a->hist, value, 1);
    }
    return 0;
}

static const char *kind_name(int kind)
{
    static const char *const names[] = {"unknown", "reasoning", "tool",      "api",
                                        "llm",     "agent",     "retrieval", "other"};
    return kind >= 0 && kind <= 7 ? names[kind] : "unknown";
}

/* Whether a step kind is an external call (its steps count per name as tools). */
static int external_kind(int kind)
{
    return kind == 2 || kind == 3 || kind == 6; /* tool, api, retrieval */
}

static int step_end(struct rollup *r, const tt__event *ev, int64_t agent, int64_t inst)
{
    tt__ev_step_end se;
    if (tt__ev_step_end_decode(ev->body, &se) != 0) {
        return 0;
    }
    int kind = 0;
    char name[STORE_ROLLUP_KEY_MAX + 1] = "";
    size_t name_len = 0;
    sqlite3_bind_int64(r->step_of, 1, inst);
    sqlite3_bind_int64(r->step_of, 2, (int64_t)se.step_id);
    int rc = sqlite3_step(r->step_of);
    if (rc == SQLITE_ROW) {
        kind = sqlite3_column_int(r->step_of, 0);
        const unsigned char *p = sqlite3_column_text(r->step_of, 1);
        name_len = p ? (size_t)sqlite3_column_bytes(r->step_of, 1) : 0;
        name_len = name_len > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : name_len;
        if (p) {
            memcpy(name, p, name_len);
        }
    }
    sqlite3_reset(r->step_of);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return rc;
    }
    int error = se.status == 1 || se.status == 2; /* error, timeout */
    double d = (double)se.duration_ns;
    const char *k = kind_name(kind);
    rc = add(r, agent, ev->time, STORE_ROLLUP_STEPS, k, strlen(k), 1, error, d);
    if (rc == 0 && external_kind(kind)) {
        rc = add(r, agent, ev->time, STORE_ROLLUP_TOOLS, name, name_len, 1, error, d);
    }
    return rc;
}

static int response_end(struct rollup *r, const tt__event *ev, int64_t agent)
{
    tt__ev_response_end e;
    if (tt__ev_response_end_decode(ev->body, &e) != 0) {
        return 0;
    }
    double conf = isnan(e.mean_logprob) ? NAN : exp((double)e.mean_logprob);
    int rc = add(r, agent, ev->time, STORE_ROLLUP_RESPONSES, "", 0, 1, e.verdict != 0, conf);
    if (rc == 0 && e.tokens > 0) {
        rc = add(r, agent, ev->time, STORE_ROLLUP_TOKENS, "", 0, (uint64_t)e.tokens, 0, NAN);
    }
    return rc;
}

int rollup_item(struct rollup *r, const struct store_item *it, int64_t agent_id,
                int64_t instance_id)
{
    tt__batch b = it->batch; /* a copy: iteration state is ours */
    uint32_t walk = (1u << TT_EV_STEP_END) | (1u << TT_EV_RESPONSE_END);
    if (b.n_events == 0) {
        return 0;
    }
    if (!(b.kinds & walk) && floor_div(b.t_min, 1000000000) == floor_div(b.t_max, 1000000000)) {
        /* Every event in one second: counted without decoding them. */
        return add(r, agent_id, b.t_min, STORE_ROLLUP_EVENTS, "", 0, b.n_events, 0, NAN);
    }
    tt__event ev;
    int rc = 0;
    int64_t run_sec = INT64_MIN, run_n = 0;
    while (rc == 0 && tt__batch_next(&b, &ev)) {
        int64_t sec = floor_div(ev.time, 1000000000);
        if (sec != run_sec) {
            if (run_n) {
                rc = add(r, agent_id, run_sec * 1000000000, STORE_ROLLUP_EVENTS, "", 0,
                         (uint64_t)run_n, 0, NAN);
            }
            run_sec = sec;
            run_n = 0;
        }
        run_n++;
        if (rc == 0 && ev.kind == TT_EV_STEP_END) {
            rc = step_end(r, &ev, agent_id, instance_id);
        } else if (rc == 0 && ev.kind == TT_EV_RESPONSE_END) {
            rc = response_end(r, &ev, agent_id);
        }
    }
    if (rc == 0 && run_n) {
        rc = add(r, agent_id, run_sec * 1000000000, STORE_ROLLUP_EVENTS, "", 0, (uint64_t)run_n, 0,
                 NAN);
    }
    return rc;
}

/* --- reading ------------------------------------------------------------------------------- */

/* One (metric, key) of the bucket being merged. */
struct merged {
    int metric;
    char key[STORE_ROLLUP_KEY_MAX + 1];
    uint64_t n, errors;
    double sum;
    struct store_hist *hist;
    int has_hist;
};

#define MERGE_MAX 4096 /* distinct (metric, key) in one answered bucket */

struct merger {
    struct merged *m;
    size_t n, cap;
};

static struct merged *merged_slot(struct merger *g, int metric, const char *key)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->m[i].metric == metric && !strcmp(g->m[i].key, key)) {
            return &g->m[i];
        }
    }
    if (g->n == g->cap) {
        if (g->cap >= MERGE_MAX) {
            return NULL;
        }
        size_t cap = g->cap ? g->cap * 2 : 16;
        struct merged *m = realloc(g->m, cap * sizeof *m);
        if (!m) {
            return NULL;
        }
        memset(m + g->cap, 0, (cap - g->cap) * sizeof *m);
        g->m = m;
        g->cap = cap;
    }
    struct merged *x = &g->m[g->n++];
    struct store_hist *h = x->hist;
    *x = (struct merged){.metric = metric, .hist = h};
    snprintf(x->key, sizeof x->key, "%s", key);
    if (x->hist) {
        memset(x->hist, 0, sizeof *x->hist);
    }
    return x;
}

static int emit(struct merger *g, const char *agent, int64_t bucket_s, store_rollup_fn fn,
                void *ctx)
{
    int stop = 0;
    for (size_t i = 0; i < g->n && !stop; i++) {
        const struct merged *x = &g->m[i];
        struct store_rollup row = {
            agent,  bucket_s * 1000000000,       x->metric, x->key, x->n, x->errors,
            x->sum, x->has_hist ? x->hist : NULL};
        stop = fn(ctx, &row);
    }
    g->n = 0;
    return stop;
}

static void merger_free(struct merger *g)
{
    for (size_t i = 0; i < g->cap; i++) {
        free(g->m[i].hist);
    }
    free(g->m);
}

int sqlite_rollups(struct store_read *base, const struct store_rollup_query *q, store_rollup_fn fn,
                   void *ctx)
{
    int level_ok = 0;
    for (int l = 0; l < STORE_ROLLUP_N_LEVELS; l++) {
        level_ok |= q->step_s == levels[l];
    }
    if (!level_ok || q->bucket_s < q->step_s || q->bucket_s % q->step_s != 0) {
        return -EINVAL;
    }
    sqlite3 *db = sqlite_read_db(base);
    sqlite3_stmt *ag = NULL, *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT id, name FROM agents WHERE ?1 IS NULL OR name=?1"
                                " ORDER BY name",
                                -1, &ag, NULL);
    rc = rc ? rc
            : sqlite3_prepare_v2(db,
                                 "SELECT bucket, metric, key, n, errors, sum, hist FROM rollups"
                                 " WHERE step_s=?1 AND agent_id=?2 AND bucket>=?3 AND bucket<?4"
                                 " ORDER BY bucket",
                                 -1, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(ag);
        sqlite3_finalize(st);
        return sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    if (q->agent) {
        sqlite3_bind_text(ag, 1, q->agent, -1, SQLITE_STATIC);
    }
    int64_t lo = floor_div(q->since_ns, 1000000000);
    int64_t hi = floor_div(q->until_ns, 1000000000) + (q->until_ns % 1000000000 != 0);
    struct merger g = {0};
    int rows = 0, stop = 0, err = 0;
    while (!stop && !err && (rc = sqlite3_step(ag)) == SQLITE_ROW) {
        int64_t aid = sqlite3_column_int64(ag, 0);
        const char *agent = (const char *)sqlite3_column_text(ag, 1);
        sqlite3_bind_int(st, 1, q->step_s);
        sqlite3_bind_int64(st, 2, aid);
        sqlite3_bind_int64(st, 3, lo);
        sqlite3_bind_int64(st, 4, hi);
        int64_t cur = INT64_MIN;
        while (!stop && !err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t b = floor_div(sqlite3_column_int64(st, 0), q->bucket_s) * q->bucket_s;
            if (b != cur && g.n) {
                rows += (int)g.n;
                stop = emit(&g, agent, cur, fn, ctx);
            }
            cur = b;
            const char *key = (const char *)sqlite3_column_text(st, 2);
            struct merged *x = merged_slot(&g, sqlite3_column_int(st, 1), key ? key : "");
            if (!x) {
                err = -E2BIG;
                break;
            }
            x->n += (uint64_t)sqlite3_column_int64(st, 3);
            x->errors += (uint64_t)sqlite3_column_int64(st, 4);
            x->sum += sqlite3_column_double(st, 5);
            if (sqlite3_column_type(st, 6) == SQLITE_BLOB) {
                if (!x->hist && !(x->hist = calloc(1, sizeof *x->hist))) {
                    err = -ENOMEM;
                    break;
                }
                x->has_hist = 1;
                if (store_hist_merge_encoded(x->hist, sqlite3_column_blob(st, 6),
                                             (size_t)sqlite3_column_bytes(st, 6)) != 0) {
                    err = -EIO;
                }
            }
        }
        if (!stop && !err && g.n) {
            rows += (int)g.n;
            stop = emit(&g, agent, cur, fn, ctx);
        }
        g.n = 0;
        sqlite3_reset(st);
        if (!stop && !err && rc != SQLITE_DONE && rc != SQLITE_ROW) {
            break;
        }
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(ag);
    sqlite3_finalize(st);
    merger_free(&g);
    if (err) {
        return err;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        return sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    return rows;
}

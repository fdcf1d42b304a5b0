/*
 * postgres_rollup.c - the PostgreSQL store's rollups (store.h "rollups"), as sqlite_rollup.c:
 * the writer adds each stored item's events into an in-memory accumulator of 1 s buckets
 * (pg_rollup_item, after the item's derived rows, so a step's begin is in the steps table when
 * its end is counted) and writes it into every stored level just before the transaction
 * commits (pg_rollup_flush): the rows commit with the events they count, or not at all
 * (pg_rollup_discard after a failed group). Readers merge the stored rows of one level into
 * the buckets a query asks for, exactly as the SQLite store does, so that both answer the same
 * series for the same stream.
 *
 * Table rollups(step_s, agent_id, bucket, metric, key, n, errors, sum, hist): bucket is the
 * bucket's start in Unix seconds, key the step kind or name (bytea, "" when none), hist the
 * encoded store_hist (NULL for counts only). PostgreSQL has no function to add two encoded
 * histograms, so the writer reads a row's histogram and writes the sum: it holds the writers'
 * advisory lock (PG_WRITER_LOCK), so no other writer moves the row in between.
 *
 * INVARIANTS
 * - Only the writer thread uses a struct pg_rollup (on the writer's connection, inside the
 *   group's transaction).
 * - A row counts each committed (instance, seq) once: items are added only once stored (not a
 *   DUP, not refused), and the accumulator is dropped with a failed group.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store/postgres.h"
#include "common/clock.h"

const char pg_rollup_schema[] =
    "CREATE TABLE IF NOT EXISTS rollups(step_s bigint NOT NULL, agent_id bigint NOT NULL,"
    " bucket bigint NOT NULL, metric bigint NOT NULL, key bytea NOT NULL, n bigint NOT NULL,"
    " errors bigint NOT NULL, sum float8 NOT NULL, hist bytea,"
    " PRIMARY KEY(step_s, agent_id, bucket, metric, key));";

static const int levels[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_LEVELS;
static const int64_t keep[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_KEEP;

/* Entries accumulated before a flush inside the transaction (bounds memory, not a batch). */
#define ACC_MAX 4096
#define HIST_ENC_MAX (STORE_HIST_BINS * 15)

struct acc {
    int64_t agent_id, sec;
    int metric;
    char key[STORE_ROLLUP_KEY_MAX + 1];
    size_t keylen;
    uint64_t n, errors;
    double sum;
    struct store_hist *hist; /* owned; NULL for count-only metrics */
    int used;
};

struct pg_rollup {
    PGconn *c;       /* the writer's connection, set by each call that writes */
    struct acc *tab; /* open addressing, ACC_MAX * 2 slots */
    size_t used;
    int64_t last_prune_s;
    struct store_hist merged;
    uint8_t enc[HIST_ENC_MAX];
};

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

struct pg_rollup *pg_rollup_new(void)
{
    struct pg_rollup *r = calloc(1, sizeof *r);
    if (r && !(r->tab = calloc(ACC_MAX * 2, sizeof *r->tab))) {
        free(r);
        r = NULL;
    }
    return r;
}

void pg_rollup_discard(struct pg_rollup *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < ACC_MAX * 2; i++) {
        free(r->tab[i].hist);
        r->tab[i].hist = NULL;
        r->tab[i].used = 0;
    }
    r->used = 0;
}

void pg_rollup_free(struct pg_rollup *r)
{
    if (!r) {
        return;
    }
    pg_rollup_discard(r);
    free(r->tab);
    free(r);
}

/* Run one statement of the flush: 0 or a negative errno of store.h's classes. */
static int exec_ok(PGconn *c, const char *sql, const struct pg_params *p, PGresult **out)
{
    PGresult *res = pg_exec(c, NULL, sql, p);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_errno(c, res);
        PQclear(res);
        return rc;
    }
    if (out) {
        *out = res;
    } else {
        PQclear(res);
    }
    return 0;
}

static uint64_t hash_key(int64_t agent, int64_t sec, int metric, const char *key, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    h = (h ^ (uint64_t)agent) * 1099511628211ull;
    h = (h ^ (uint64_t)sec) * 1099511628211ull;
    h = (h ^ (uint64_t)metric) * 1099511628211ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)key[i]) * 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* One accumulated entry into one level: counts are added by the upsert; a histogram is read,
 * added to and written back (the writers' lock is held). */
static int write_level(struct pg_rollup *r, const struct acc *a, int level)
{
    int64_t bucket = floor_div(a->sec, level) * level;
    struct pg_params p = {0};
    pg_p_i64(&p, level);
    pg_p_i64(&p, a->agent_id);
    pg_p_i64(&p, bucket);
    pg_p_i64(&p, a->metric);
    pg_p_bytes(&p, a->key, a->keylen);
    pg_p_i64(&p, (int64_t)a->n);
    pg_p_i64(&p, (int64_t)a->errors);
    pg_p_f64(&p, a->sum);
    if (!a->hist) {
        pg_p_null(&p);
    } else {
        r->merged = *a->hist;
        struct pg_params k = p;
        k.n = 5; /* the key's columns */
        PGresult *old;
        int rc = exec_ok(r->c,
                         "SELECT hist FROM rollups WHERE step_s = $1 AND agent_id = $2"
                         " AND bucket = $3 AND metric = $4 AND key = $5",
                         &k, &old);
        if (rc) {
            return rc;
        }
        if (PQntuples(old) == 1 && !pg_null(old, 0, 0)) {
            size_t n;
            const char *h = pg_bytes(old, 0, 0, &n);
            if (store_hist_merge_encoded(&r->merged, (const uint8_t *)h, n) != 0) {
                PQclear(old);
                return -EIO; /* a malformed row: the store is damaged */
            }
        }
        PQclear(old);
        size_t n = store_hist_encode(&r->merged, r->enc, sizeof r->enc);
        pg_p_bytes(&p, r->enc, n);
    }
    return exec_ok(r->c,
                   "INSERT INTO rollups(step_s, agent_id, bucket, metric, key, n, errors, sum,"
                   " hist) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                   " ON CONFLICT(step_s, agent_id, bucket, metric, key) DO UPDATE SET"
                   " n = rollups.n + excluded.n, errors = rollups.errors + excluded.errors,"
                   " sum = rollups.sum + excluded.sum, hist = excluded.hist",
                   &p, NULL);
}

/* Drop the rows of the levels kept for a while (STORE_ROLLUP_KEEP) once they are older, at
 * most once a minute. */
static int prune(struct pg_rollup *r)
{
    int64_t now = (int64_t)(tt__wall_ns() / 1000000000u);
    if (now - r->last_prune_s < 60) {
        return 0;
    }
    int rc = 0;
    for (int l = 0; l < STORE_ROLLUP_N_LEVELS && rc == 0; l++) {
        if (keep[l]) {
            struct pg_params p = {0};
            pg_p_i64(&p, levels[l]);
            pg_p_i64(&p, now - keep[l]);
            rc = exec_ok(r->c, "DELETE FROM rollups WHERE step_s = $1 AND bucket < $2", &p, NULL);
        }
    }
    if (rc == 0) {
        r->last_prune_s = now;
    }
    return rc;
}

int pg_rollup_flush(struct pg_rollup *r, PGconn *c)
{
    r->c = c;
    int rc = 0;
    for (size_t i = 0; i < ACC_MAX * 2 && rc == 0; i++) {
        if (r->tab[i].used) {
            for (int l = 0; l < STORE_ROLLUP_N_LEVELS && rc == 0; l++) {
                rc = write_level(r, &r->tab[i], levels[l]);
            }
        }
    }
    rc = rc ? rc : prune(r);
    pg_rollup_discard(r);
    return rc;
}

/* The accumulator of (agent, sec, metric, key), made when missing; NULL on allocation failure
 * or an error of the flush that made room (in *rc). */
static struct acc *slot(struct pg_rollup *r, int64_t agent, int64_t sec, int metric,
                        const char *key, size_t keylen, int *rc)
{
    /* As SQLite's text key: cut at a NUL byte and at STORE_ROLLUP_KEY_MAX. */
    keylen = strnlen(key, keylen > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : keylen);
    if (r->used >= ACC_MAX && (*rc = pg_rollup_flush(r, r->c)) != 0) {
        return NULL;
    }
    size_t mask = ACC_MAX * 2 - 1, j = hash_key(agent, sec, metric, key, keylen) & mask;
    for (;; j = (j + 1) & mask) {
        struct acc *a = &r->tab[j];
        if (!a->used) {
            *a = (struct acc){
                .agent_id = agent, .sec = sec, .metric = metric, .keylen = keylen, .used = 1};
            memcpy(a->key, key, keylen);
            if (metric != STORE_ROLLUP_EVENTS && metric != STORE_ROLLUP_TOKENS) {
                a->hist = calloc(1, sizeof *a->hist);
                if (!a->hist) {
                    a->used = 0;
                    *rc = -ENOMEM;
                    return NULL;
                }
            }
            r->used++;
            return a;
        }
        if (a->agent_id == agent && a->sec == sec && a->metric == metric && a->keylen == keylen &&
            !memcmp(a->key, key, keylen)) {
            return a;
        }
    }
}

static int add(struct pg_rollup *r, int64_t agent, int64_t time_ns, int metric, const char *key,
               size_t keylen, uint64_t n, int error, double value)
{
    int rc = 0;
    struct acc *a = slot(r, agent, floor_div(time_ns, 1000000000), metric, key, keylen, &rc);
    if (!a) {
        return rc ? rc : -ENOMEM;
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

static int step_end(struct pg_rollup *r, const tt__event *ev, int64_t agent, int64_t inst)
{
    tt__ev_step_end se;
    if (tt__ev_step_end_decode(ev->body, &se) != 0) {
        return 0;
    }
    struct pg_params p = {0};
    pg_p_i64(&p, inst);
    pg_p_i64(&p, (int64_t)se.step_id);
    PGresult *res;
    int rc = exec_ok(r->c, "SELECT kind, name FROM steps WHERE instance_id = $1 AND step_id = $2",
                     &p, &res);
    if (rc) {
        return rc;
    }
    int kind = 0;
    char name[STORE_ROLLUP_KEY_MAX] = "";
    size_t name_len = 0;
    if (PQntuples(res) == 1) {
        kind = (int)pg_i64(res, 0, 0);
        const char *nm = pg_bytes(res, 0, 1, &name_len);
        name_len = name_len > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : name_len;
        if (nm) {
            memcpy(name, nm, name_len);
        }
    }
    PQclear(res);
    int error = se.status == 1 || se.status == 2; /* error, timeout */
    double d = (double)se.duration_ns;
    const char *k = kind_name(kind);
    rc = add(r, agent, ev->time, STORE_ROLLUP_STEPS, k, strlen(k), 1, error, d);
    if (rc == 0 && external_kind(kind)) {
        rc = add(r, agent, ev->time, STORE_ROLLUP_TOOLS, name, name_len, 1, error, d);
    }
    return rc;
}

static int response_end(struct pg_rollup *r, const tt__event *ev, int64_t agent)
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

int pg_rollup_item(struct pg_rollup *r, PGconn *c, const struct store_item *it, int64_t agent_id,
                   int64_t instance_id)
{
    r->c = c;
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

static struct merged *merged_slot(struct merger *g, int metric, const char *key, size_t keylen)
{
    keylen = keylen > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : keylen;
    for (size_t i = 0; i < g->n; i++) {
        if (g->m[i].metric == metric && strlen(g->m[i].key) == keylen &&
            !memcmp(g->m[i].key, key, keylen)) {
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
    memcpy(x->key, key, keylen);
    x->key[keylen] = 0; /* as SQLite's text: a name with a NUL byte reads up to it */
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

/* Merge the rows of one agent (rows of res, by bucket) into the asked buckets. */
static int merge_agent(struct merger *g, const PGresult *res, const char *agent,
                       const struct store_rollup_query *q, store_rollup_fn fn, void *ctx, int *rows)
{
    int64_t cur = INT64_MIN;
    int stop = 0;
    for (int i = 0; i < PQntuples(res) && !stop; i++) {
        int64_t b = floor_div(pg_i64(res, i, 0), q->bucket_s) * q->bucket_s;
        if (b != cur && g->n) {
            *rows += (int)g->n;
            stop = emit(g, agent, cur, fn, ctx);
            if (stop) {
                break;
            }
        }
        cur = b;
        size_t kl;
        const char *key = pg_bytes(res, i, 2, &kl);
        struct merged *x = merged_slot(g, (int)pg_i64(res, i, 1), key ? key : "", key ? kl : 0);
        if (!x) {
            return -E2BIG;
        }
        x->n += (uint64_t)pg_i64(res, i, 3);
        x->errors += (uint64_t)pg_i64(res, i, 4);
        double sum = pg_f64(res, i, 5);
        x->sum += isnan(sum) ? 0 : sum;
        if (!pg_null(res, i, 6)) {
            if (!x->hist && !(x->hist = calloc(1, sizeof *x->hist))) {
                return -ENOMEM;
            }
            x->has_hist = 1;
            size_t hn;
            const char *h = pg_bytes(res, i, 6, &hn);
            if (store_hist_merge_encoded(x->hist, (const uint8_t *)h, hn) != 0) {
                return -EIO;
            }
        }
    }
    if (!stop && g->n) {
        *rows += (int)g->n;
        stop = emit(g, agent, cur, fn, ctx);
    }
    g->n = 0;
    return stop;
}

int pg_rollups(struct store_read *base, const struct store_rollup_query *q, store_rollup_fn fn,
               void *ctx)
{
    int level_ok = 0;
    for (int l = 0; l < STORE_ROLLUP_N_LEVELS; l++) {
        level_ok |= q->step_s == levels[l];
    }
    if (!level_ok || q->bucket_s < q->step_s || q->bucket_s % q->step_s != 0) {
        return -EINVAL;
    }
    PGconn *c = pg_read_conn(base);
    if (!c) {
        return -EAGAIN;
    }
    struct pg_params p = {0};
    if (q->agent) {
        pg_p_str(&p, q->agent);
    } else {
        pg_p_null(&p);
    }
    PGresult *ag;
    int rc = exec_ok(c,
                     "SELECT id, name FROM agents WHERE $1::bytea IS NULL OR name = $1"
                     " ORDER BY name",
                     &p, &ag);
    if (rc) {
        return rc;
    }
    int64_t lo = floor_div(q->since_ns, 1000000000);
    int64_t hi = floor_div(q->until_ns, 1000000000) + (q->until_ns % 1000000000 != 0);
    struct merger g = {0};
    int rows = 0, stop = 0;
    for (int i = 0; i < PQntuples(ag) && !stop && rc == 0; i++) {
        size_t nl;
        const char *nm = pg_bytes(ag, i, 1, &nl);
        char agent[256];
        nl = nl < sizeof agent ? nl : sizeof agent - 1;
        memcpy(agent, nm ? nm : "", nm ? nl : 0);
        agent[nm ? nl : 0] = 0;
        struct pg_params r = {0};
        pg_p_i64(&r, q->step_s);
        pg_p_i64(&r, pg_i64(ag, i, 0));
        pg_p_i64(&r, lo);
        pg_p_i64(&r, hi);
        PGresult *res;
        rc = exec_ok(c,
                     "SELECT bucket, metric, key, n, errors, sum, hist FROM rollups"
                     " WHERE step_s = $1 AND agent_id = $2 AND bucket >= $3 AND bucket < $4"
                     " ORDER BY bucket",
                     &r, &res);
        if (rc == 0) {
            int m = merge_agent(&g, res, agent, q, fn, ctx, &rows);
            PQclear(res);
            if (m < 0) {
                rc = m;
            }
            stop = m > 0;
        }
    }
    PQclear(ag);
    merger_free(&g);
    return rc ? rc : rows;
}

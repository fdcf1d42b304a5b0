/*
 * postgres_rollup.c - the PostgreSQL store's rollups (store.h "rollups"), as sqlite_rollup.c:
 * the writer adds each stored item's events into an in-memory accumulator of 1 s buckets
 * (pg_rollup_item, after the item's derived rows, so a step's begin is in the steps table when
 * its end is counted) and writes it into every stored level just before the transaction
 * commits (pg_rollup_flush): the rows commit with the events they count, or not at all
 * (pg_rollup_discard after a failed group). Readers merge the stored rows of one level into
 * the buckets a query asks for, with the SQLite store's code (rollup.c), so that both answer
 * the same series for the same stream; this file has the SQL.
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
#include "collector/store/rollup.h"
#include "common/clock.h"

const char pg_rollup_schema[] =
    "CREATE TABLE IF NOT EXISTS rollups(step_s bigint NOT NULL, agent_id bigint NOT NULL,"
    " bucket bigint NOT NULL, metric bigint NOT NULL, key bytea NOT NULL, n bigint NOT NULL,"
    " errors bigint NOT NULL, sum float8 NOT NULL, hist bytea,"
    " PRIMARY KEY(step_s, agent_id, bucket, metric, key));";

struct pg_rollup {
    PGconn *c; /* the writer's connection, set by each call that writes */
    struct rollup_acc acc;
    int64_t last_prune_s;
    struct store_hist merged;
    uint8_t enc[ROLLUP_HIST_ENC_MAX];
};

static int flush_full(void *ctx);
static int step_of(void *ctx, int64_t inst, uint64_t step_id, int *kind, char *name,
                   size_t *name_len);

struct pg_rollup *pg_rollup_new(void)
{
    struct pg_rollup *r = calloc(1, sizeof *r);
    if (r && rollup_acc_init(&r->acc, r, flush_full, step_of, -ENOMEM) != 0) {
        free(r);
        r = NULL;
    }
    return r;
}

void pg_rollup_discard(struct pg_rollup *r)
{
    if (r) {
        rollup_acc_discard(&r->acc);
    }
}

void pg_rollup_free(struct pg_rollup *r)
{
    if (!r) {
        return;
    }
    rollup_acc_fini(&r->acc);
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

/* One accumulated entry into one level: counts are added by the upsert; a histogram is read,
 * added to and written back (the writers' lock is held). */
static int write_level(struct pg_rollup *r, const struct rollup_cell *a, int level)
{
    int64_t bucket = rollup_floor_div(a->sec, level) * level;
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
        if (rollup_keep[l]) {
            struct pg_params p = {0};
            pg_p_i64(&p, rollup_levels[l]);
            pg_p_i64(&p, now - rollup_keep[l]);
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
    for (size_t i = 0; i < ROLLUP_ACC_SLOTS && rc == 0; i++) {
        if (r->acc.tab[i].used) {
            for (int l = 0; l < STORE_ROLLUP_N_LEVELS && rc == 0; l++) {
                rc = write_level(r, &r->acc.tab[i], rollup_levels[l]);
            }
        }
    }
    rc = rc ? rc : prune(r);
    rollup_acc_discard(&r->acc);
    return rc;
}

static int flush_full(void *ctx)
{
    struct pg_rollup *r = ctx;
    return pg_rollup_flush(r, r->c);
}

/* The kind and name of a step, from the steps table (rollup.h's step_of). */
static int step_of(void *ctx, int64_t inst, uint64_t step_id, int *kind, char *name,
                   size_t *name_len)
{
    struct pg_rollup *r = ctx;
    struct pg_params p = {0};
    pg_p_i64(&p, inst);
    pg_p_i64(&p, (int64_t)step_id);
    PGresult *res;
    int rc = exec_ok(r->c, "SELECT kind, name FROM steps WHERE instance_id = $1 AND step_id = $2",
                     &p, &res);
    if (rc) {
        return rc;
    }
    if (PQntuples(res) == 1) {
        *kind = (int)pg_i64(res, 0, 0);
        size_t n;
        const char *nm = pg_bytes(res, 0, 1, &n);
        *name_len = n > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : n;
        if (nm) {
            memcpy(name, nm, *name_len);
        } else {
            *name_len = 0;
        }
    }
    PQclear(res);
    return 0;
}

int pg_rollup_item(struct pg_rollup *r, PGconn *c, const struct store_item *it, int64_t agent_id,
                   int64_t instance_id)
{
    r->c = c;
    return rollup_acc_item(&r->acc, it, agent_id, instance_id);
}

/* --- reading ------------------------------------------------------------------------------- */

/* Merge the rows of one agent (rows of res, by bucket) into the asked buckets: 0, 1 when fn
 * asked to stop, or a negative errno. */
static int merge_agent(struct rollup_merger *g, const PGresult *res, const char *agent,
                       const struct store_rollup_query *q, store_rollup_fn fn, void *ctx)
{
    for (int i = 0; i < PQntuples(res); i++) {
        struct rollup_row row = {.bucket = pg_i64(res, i, 0),
                                 .metric = (int)pg_i64(res, i, 1),
                                 .n = (uint64_t)pg_i64(res, i, 3),
                                 .errors = (uint64_t)pg_i64(res, i, 4),
                                 .sum = pg_f64(res, i, 5)};
        row.key = pg_bytes(res, i, 2, &row.keylen);
        if (!pg_null(res, i, 6)) {
            row.hist = (const uint8_t *)pg_bytes(res, i, 6, &row.hist_len);
        }
        int m = rollup_merge_row(g, agent, q, &row, fn, ctx);
        if (m) {
            return m;
        }
    }
    return g->n ? rollup_merge_end(g, agent, fn, ctx) : 0;
}

int pg_rollups(struct store_read *base, const struct store_rollup_query *q, store_rollup_fn fn,
               void *ctx)
{
    int64_t lo, hi;
    if (!rollup_query_ok(q, &lo, &hi)) {
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
    struct rollup_merger g = {0};
    int stop = 0;
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
            int m = merge_agent(&g, res, agent, q, fn, ctx);
            PQclear(res);
            if (m < 0) {
                rc = m;
            }
            stop = m > 0;
        }
    }
    PQclear(ag);
    int rows = g.rows;
    rollup_merger_free(&g);
    return rc ? rc : rows;
}

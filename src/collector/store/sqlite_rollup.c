/*
 * sqlite_rollup.c - the SQLite store's rollups (store.h "rollups"): the writer adds each
 * committed item's events into an in-memory accumulator of 1 s buckets (rollup_item, after
 * derive_item, so a step's begin is in the steps table when its end is counted), and writes it
 * into every stored level just before the transaction commits (rollup_flush): the rows commit
 * with the events they count, or not at all (rollup_discard after a rollback). Readers merge
 * the stored rows of one level into the buckets a query asks for. The accumulator, what each
 * event counts into and the merge are rollup.c's, shared with postgres_rollup.c; this file
 * has the SQL.
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

#include "collector/store/rollup.h"
#include "collector/store/sqlite.h"
#include "common/clock.h"

const char rollup_schema[] =
    "CREATE TABLE IF NOT EXISTS rollups(step_s INTEGER NOT NULL, agent_id INTEGER NOT NULL,"
    " bucket INTEGER NOT NULL, metric INTEGER NOT NULL, key TEXT NOT NULL, n INTEGER NOT NULL,"
    " errors INTEGER NOT NULL, sum REAL NOT NULL, hist BLOB,"
    " PRIMARY KEY(step_s, agent_id, bucket, metric, key)) WITHOUT ROWID;";

struct rollup {
    sqlite3 *db;
    sqlite3_stmt *upsert, *step_of, *agents, *prune;
    struct rollup_acc acc;
    int64_t last_prune_s;
    uint8_t enc[ROLLUP_HIST_ENC_MAX];
};

/* tt_hist_merge(a, b): the encoded sum of two encoded histograms (NULL counts as empty). */
static void hist_merge_fn(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
    static _Thread_local struct store_hist h;
    static _Thread_local uint8_t out[ROLLUP_HIST_ENC_MAX];
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

/* The kind and name of a step, from the steps table (rollup.h's step_of). */
static int step_of(void *ctx, int64_t inst, uint64_t step_id, int *kind, char *name,
                   size_t *name_len)
{
    struct rollup *r = ctx;
    sqlite3_bind_int64(r->step_of, 1, inst);
    sqlite3_bind_int64(r->step_of, 2, (int64_t)step_id);
    int rc = sqlite3_step(r->step_of);
    if (rc == SQLITE_ROW) {
        *kind = sqlite3_column_int(r->step_of, 0);
        const unsigned char *p = sqlite3_column_text(r->step_of, 1);
        size_t n = p ? (size_t)sqlite3_column_bytes(r->step_of, 1) : 0;
        *name_len = n > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : n;
        if (p) {
            memcpy(name, p, *name_len);
        }
    }
    sqlite3_reset(r->step_of);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rc;
}

static int flush_full(void *ctx)
{
    return rollup_flush(ctx);
}

int rollup_open(struct rollup **out, sqlite3 *db)
{
    struct rollup *r = calloc(1, sizeof *r);
    if (!r) {
        return -1;
    }
    r->db = db;
    int rc = rollup_acc_init(&r->acc, r, flush_full, step_of, SQLITE_NOMEM) == 0 ? SQLITE_OK
                                                                                 : SQLITE_NOMEM;
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
    rollup_acc_discard(&r->acc);
}

void rollup_close(struct rollup *r)
{
    if (!r) {
        return;
    }
    rollup_acc_fini(&r->acc);
    sqlite3_finalize(r->upsert);
    sqlite3_finalize(r->step_of);
    sqlite3_finalize(r->agents);
    sqlite3_finalize(r->prune);
    free(r);
}

static int write_rows(struct rollup *r, const struct rollup_cell *a)
{
    size_t enc = a->hist ? store_hist_encode(a->hist, r->enc, sizeof r->enc) : 0;
    for (int l = 0; l < STORE_ROLLUP_N_LEVELS; l++) {
        sqlite3_stmt *st = r->upsert;
        int step = rollup_levels[l];
        sqlite3_bind_int(st, 1, step);
        sqlite3_bind_int64(st, 2, a->agent_id);
        sqlite3_bind_int64(st, 3, rollup_floor_div(a->sec, step) * step);
        sqlite3_bind_int(st, 4, a->metric);
        sqlite3_bind_text(st, 5, a->key, (int)a->keylen, SQLITE_STATIC);
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
            if (!rollup_keep[l]) {
                continue;
            }
            sqlite3_bind_int64(r->prune, 1, sqlite3_column_int64(r->agents, 0));
            sqlite3_bind_int64(r->prune, 2, now - rollup_keep[l]);
            sqlite3_bind_int(r->prune, 3, rollup_levels[l]);
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
    for (size_t i = 0; i < ROLLUP_ACC_SLOTS && rc == 0; i++) {
        if (r->acc.tab[i].used) {
            rc = write_rows(r, &r->acc.tab[i]);
        }
    }
    rc = rc ? rc : prune(r);
    rollup_acc_discard(&r->acc);
    return rc;
}

int rollup_item(struct rollup *r, const struct store_item *it, int64_t agent_id,
                int64_t instance_id)
{
    return rollup_acc_item(&r->acc, it, agent_id, instance_id);
}

/* --- reading ------------------------------------------------------------------------------- */

int sqlite_rollups(struct store_read *base, const struct store_rollup_query *q, store_rollup_fn fn,
                   void *ctx)
{
    int64_t lo, hi;
    if (!rollup_query_ok(q, &lo, &hi)) {
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
    struct rollup_merger g = {0};
    int stop = 0, err = 0;
    while (!stop && !err && (rc = sqlite3_step(ag)) == SQLITE_ROW) {
        const char *agent = (const char *)sqlite3_column_text(ag, 1);
        sqlite3_bind_int(st, 1, q->step_s);
        sqlite3_bind_int64(st, 2, sqlite3_column_int64(ag, 0));
        sqlite3_bind_int64(st, 3, lo);
        sqlite3_bind_int64(st, 4, hi);
        while (!stop && !err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            /* each pointer before its length, as SQLite asks */
            struct rollup_row row = {.bucket = sqlite3_column_int64(st, 0),
                                     .metric = sqlite3_column_int(st, 1),
                                     .n = (uint64_t)sqlite3_column_int64(st, 3),
                                     .errors = (uint64_t)sqlite3_column_int64(st, 4),
                                     .sum = sqlite3_column_double(st, 5)};
            row.key = (const char *)sqlite3_column_text(st, 2);
            row.keylen = (size_t)sqlite3_column_bytes(st, 2);
            if (sqlite3_column_type(st, 6) == SQLITE_BLOB) {
                row.hist = sqlite3_column_blob(st, 6);
                row.hist_len = (size_t)sqlite3_column_bytes(st, 6);
            }
            int m = rollup_merge_row(&g, agent, q, &row, fn, ctx);
            stop = m > 0;
            err = m < 0 ? m : 0;
        }
        if (!stop && !err && g.n) {
            stop = rollup_merge_end(&g, agent, fn, ctx);
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
    int rows = g.rows;
    rollup_merger_free(&g);
    if (err) {
        return err;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        return sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    return rows;
}

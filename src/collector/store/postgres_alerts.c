/*
 * postgres_alerts.c - the PostgreSQL store's operator writes: incidents raised by the
 * detectors (one row each, inserted by its first event and updated by the later ones) and
 * their acknowledgements, as sqlite_alerts.c does. They use a connection of their own (struct
 * pg_aux) under a mutex, reconnected when it was lost; reads go through the readers.
 *
 * Several collectors may share the database (docs/operations.md, "Several collectors"); one of
 * them leads and raises the incidents (postgres_follow.c). A collector numbers its incidents
 * itself (alerts.c, from pg_alert_max_id up), and a row carries its collector's id
 * (collector, DATA/collector-id) and that number (local_id): a collector inserts and updates
 * only the rows of its own collector id; a new leader takes over the firing rows of the one
 * before (re-keyed to its id and number) and resolves the rest. The id the API shows and
 * acknowledges comes from the sequence alerts_id_seq, shared by all, taken by the row's first
 * event only; pg_alert_put hands it back so that the stream and webhooks show it too. Rows
 * written before collector ids existed carry collector '' (resolved by the next leader).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/log.h"
#include "collector/store/postgres.h"

const char pg_alerts_schema[] =
    "CREATE TABLE IF NOT EXISTS alerts(id bigint PRIMARY KEY, time_ns bigint NOT NULL,"
    " agent bytea NOT NULL, detector bytea NOT NULL, type bytea NOT NULL,"
    " severity bytea NOT NULL, session bytea, message bytea NOT NULL, value float8,"
    " threshold float8, acked_ns bigint, key bytea NOT NULL DEFAULT '',"
    " status text NOT NULL DEFAULT 'resolved', last_ns bigint, resolved_ns bigint,"
    " count bigint NOT NULL DEFAULT 1, flaps bigint NOT NULL DEFAULT 0,"
    " unit bytea NOT NULL DEFAULT '', example_id bigint, example_kind bigint);"
    "CREATE INDEX IF NOT EXISTS alerts_agent ON alerts(agent, id);"
    "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS collector text NOT NULL DEFAULT '';"
    "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS local_id bigint;"
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_local ON alerts(collector, local_id);"
    "CREATE SEQUENCE IF NOT EXISTS alerts_id_seq;"
    /* A database whose ids came from MAX(id) + 1 before: the sequence starts above them. */
    "SELECT setval('alerts_id_seq', m) FROM (SELECT MAX(id) AS m FROM alerts) x"
    " WHERE m >= (SELECT last_value FROM alerts_id_seq);";

#define ALERT_COLUMNS                                                                              \
    "SELECT id, time_ns, agent, detector, type, severity, session, message, value, threshold,"     \
    " acked_ns, key, status, last_ns, resolved_ns, count, flaps, unit, example_id, example_kind"   \
    " FROM alerts"

/* The aux connection, (re)connected: NULL when the server cannot be reached. Lock held. */
static PGconn *aux_conn(struct store *s)
{
    struct pg_aux *a = pg_store_aux(s);
    if (a->c && PQstatus(a->c) == CONNECTION_OK) {
        return a->c;
    }
    PQfinish(a->c);
    char err[512];
    a->c = pg_connect(s, err, sizeof err);
    return a->c;
}

/* Run sql on the aux connection (lock held): the result, or NULL with the error's class in
 * *rc (logged with what). */
static PGresult *aux_exec(struct store *s, const char *sql, const struct pg_params *p, int *rc,
                          const char *what)
{
    PGconn *c = aux_conn(s);
    if (!c) {
        *rc = -EAGAIN;
        log_warn("alerts: cannot %s: the PostgreSQL server cannot be reached", what);
        return NULL;
    }
    PGresult *r = pg_exec(c, NULL, sql, p);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        *rc = pg_errno(c, r);
        const char *sqlstate = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        log_warn("alerts: cannot %s (SQLSTATE %s)", what, sqlstate ? sqlstate : "none");
        PQclear(r);
        return NULL;
    }
    *rc = 0;
    return r;
}

static void put_text(struct pg_params *p, const char *s)
{
    pg_p_str(p, s ? s : "");
}

/* NULL for "" or NULL. */
static void put_opt(struct pg_params *p, const char *s)
{
    pg_p_str(p, s && *s ? s : NULL);
}

int pg_alert_add(struct store *s, const struct store_alert *al, int64_t *id)
{
    struct pg_params p = {0};
    pg_p_i64(&p, al->time_ns);
    put_text(&p, al->agent);
    put_text(&p, al->detector);
    put_text(&p, al->type);
    put_text(&p, al->severity);
    put_opt(&p, al->session);
    put_text(&p, al->message);
    pg_p_f64(&p, al->value);
    pg_p_f64(&p, al->threshold);
    struct pg_aux *a = pg_store_aux(s);
    pthread_mutex_lock(&a->lock);
    int rc;
    pg_p_str(&p, pg_store_collector(s));
    /* The shared sequence: unique across the collectors of the database. */
    PGresult *r = aux_exec(s,
                           "INSERT INTO alerts(id, time_ns, agent, detector, type, severity,"
                           " session, message, value, threshold, collector)"
                           " VALUES(nextval('alerts_id_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9,"
                           " $10::text) RETURNING id",
                           &p, &rc, "store an alert");
    if (r && PQntuples(r) == 1) {
        *id = pg_i64(r, 0, 0);
    } else if (r) {
        rc = -EIO;
    }
    pthread_mutex_unlock(&a->lock);
    PQclear(r);
    return rc;
}

static const char *text_or_empty(const PGresult *r, int row, int col)
{
    size_t n;
    const char *v = pg_bytes(r, row, col, &n);
    return v ? v : "";
}

static int alert_row(const PGresult *r, int i, store_alert_fn fn, void *ctx)
{
    double value = pg_f64(r, i, 8), threshold = pg_f64(r, i, 9);
    struct store_alert al = {
        .id = pg_i64(r, i, 0),
        .time_ns = pg_i64(r, i, 1),
        .agent = text_or_empty(r, i, 2),
        .detector = text_or_empty(r, i, 3),
        .type = text_or_empty(r, i, 4),
        .severity = text_or_empty(r, i, 5),
        .session = text_or_empty(r, i, 6),
        .message = text_or_empty(r, i, 7),
        .value = pg_null(r, i, 8) ? 0 : value, /* as SQLite reads a NULL REAL */
        .threshold = pg_null(r, i, 9) ? 0 : threshold,
        .acked_ns = pg_i64(r, i, 10),
        .key = text_or_empty(r, i, 11),
        .unit = text_or_empty(r, i, 17),
        .last_ns = pg_null(r, i, 13) ? pg_i64(r, i, 1) : pg_i64(r, i, 13),
        .resolved_ns = pg_i64(r, i, 14),
        .count = (uint64_t)pg_i64(r, i, 15),
        .flaps = (uint32_t)pg_i64(r, i, 16),
        .example_id = (uint64_t)pg_i64(r, i, 18),
        .example_is_response = (int)pg_i64(r, i, 19),
    };
    al.resolved = strcmp(text_or_empty(r, i, 12), "firing") != 0;
    return fn(ctx, &al);
}

int pg_alert_ack(struct store *s, int64_t id, int64_t now_ns, store_alert_fn fn, void *ctx)
{
    struct pg_params p = {0};
    pg_p_i64(&p, now_ns);
    pg_p_i64(&p, id);
    struct pg_aux *a = pg_store_aux(s);
    pthread_mutex_lock(&a->lock);
    int rc;
    PGresult *r = aux_exec(s, "UPDATE alerts SET acked_ns = $1 WHERE id = $2 AND acked_ns IS NULL",
                           &p, &rc, "acknowledge an alert");
    PQclear(r);
    int res = rc;
    if (rc == 0) {
        struct pg_params q = {0};
        pg_p_i64(&q, id);
        r = aux_exec(s, ALERT_COLUMNS " WHERE id = $1", &q, &rc, "read an alert");
        res = rc ? rc : -ENOENT;
        if (r && PQntuples(r) == 1) {
            alert_row(r, 0, fn, ctx);
            res = 0;
        }
        PQclear(r);
    }
    pthread_mutex_unlock(&a->lock);
    return res;
}

int pg_alert_put(struct store *s, const struct store_alert *al, int64_t *id)
{
    struct pg_params p = {0};
    pg_p_i64(&p, al->id);
    pg_p_i64(&p, al->time_ns);
    put_text(&p, al->agent);
    put_text(&p, al->detector);
    put_text(&p, al->type);
    put_text(&p, al->severity);
    put_opt(&p, al->session);
    put_text(&p, al->message);
    pg_p_f64(&p, al->value);
    pg_p_f64(&p, al->threshold);
    put_text(&p, al->key);
    pg_p_str(&p, al->resolved ? "resolved" : "firing");
    pg_p_i64(&p, al->last_ns);
    if (al->resolved_ns) {
        pg_p_i64(&p, al->resolved_ns);
    } else {
        pg_p_null(&p);
    }
    pg_p_i64(&p, (int64_t)al->count);
    pg_p_i64(&p, al->flaps);
    put_text(&p, al->unit);
    if (al->example_id) {
        pg_p_i64(&p, (int64_t)al->example_id);
        pg_p_i64(&p, al->example_is_response);
    } else {
        pg_p_null(&p);
        pg_p_null(&p);
    }
    pg_p_str(&p, pg_store_collector(s));
    struct pg_aux *a = pg_store_aux(s);
    pthread_mutex_lock(&a->lock);
    int rc;
    /* The row of (this collector, its number) is updated when there is one, else inserted with
     * an id of the shared sequence (taken only then: the insert's SELECT has no row when the
     * update found one). Only this collector writes rows of its id, on this connection under
     * the lock: nothing can insert the same row between the two. */
    PGresult *r = aux_exec(
        s,
        "WITH upd AS (UPDATE alerts SET session = $7::bytea, message = $8::bytea,"
        " value = $9::float8, threshold = $10::float8, status = $12::text, last_ns = $13::bigint,"
        " resolved_ns = $14::bigint, count = $15::bigint, flaps = $16::bigint,"
        " example_id = $18::bigint, example_kind = $19::bigint"
        " WHERE collector = $20::text AND local_id = $1::bigint RETURNING id),"
        " ins AS (INSERT INTO alerts(id, local_id, time_ns, agent, detector, type, severity,"
        " session, message, value, threshold, key, status, last_ns, resolved_ns, count, flaps,"
        " unit, example_id, example_kind, collector)"
        " SELECT nextval('alerts_id_seq'), $1::bigint, $2::bigint, $3::bytea, $4::bytea,"
        " $5::bytea, $6::bytea, $7::bytea, $8::bytea, $9::float8, $10::float8, $11::bytea,"
        " $12::text, $13::bigint, $14::bigint, $15::bigint, $16::bigint, $17::bytea,"
        " $18::bigint, $19::bigint, $20::text WHERE NOT EXISTS (SELECT 1 FROM upd) RETURNING id)"
        " SELECT id FROM upd UNION ALL SELECT id FROM ins",
        &p, &rc, "store an incident");
    if (r && PQntuples(r) == 1) {
        *id = pg_i64(r, 0, 0);
    } else if (r) {
        rc = -EIO;
    }
    pthread_mutex_unlock(&a->lock);
    PQclear(r);
    return rc;
}

int64_t pg_alert_max_id(struct store *s)
{
    struct pg_params p = {0};
    pg_p_str(&p, pg_store_collector(s));
    struct pg_aux *a = pg_store_aux(s);
    pthread_mutex_lock(&a->lock);
    int rc;
    PGresult *r = aux_exec(s,
                           "SELECT COALESCE(MAX(local_id), 0)::bigint FROM alerts"
                           " WHERE collector = $1::text",
                           &p, &rc, "read the largest incident number of this collector");
    int64_t id = r && PQntuples(r) == 1 ? pg_i64(r, 0, 0) : 0;
    pthread_mutex_unlock(&a->lock);
    PQclear(r);
    return id;
}

int pg_alerts(struct store_read *rd, const struct store_alert_filter *f, store_alert_fn fn,
              void *ctx)
{
    struct pg_params p = {0};
    pg_p_i64(&p, f->before);
    pg_p_str(&p, f->agent);
    pg_p_i64(&p, f->state);
    pg_p_i64(&p, f->limit > INT64_MAX ? INT64_MAX : (int64_t)f->limit);
    pg_p_i64(&p, f->status);
    pg_p_i64(&p, f->id);
    PGconn *c = pg_read_conn(rd);
    PGresult *r = pg_exec(c, NULL,
                          ALERT_COLUMNS " WHERE id < $1 AND ($2::bytea IS NULL OR agent = $2) AND"
                                        " ($3::bigint = 0 OR ($3 = 1 AND acked_ns IS NULL) OR"
                                        " ($3 = 2 AND acked_ns IS NOT NULL)) AND"
                                        " ($5::bigint = 0 OR ($5 = 1 AND status = 'firing') OR"
                                        " ($5 = 2 AND status = 'resolved')) AND"
                                        " ($6::bigint = 0 OR id = $6)"
                                        " ORDER BY id DESC LIMIT $4",
                          &p);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = pg_errno(c, r);
        PQclear(r);
        return rc;
    }
    int n = 0, rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        n++;
        if (alert_row(r, i, fn, ctx) != 0) {
            break;
        }
    }
    PQclear(r);
    return n;
}

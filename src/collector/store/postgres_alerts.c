/*
 * postgres_alerts.c - the PostgreSQL store's operator writes: incidents raised by the
 * detectors (one row each, inserted by its first event and updated by the later ones) and
 * their acknowledgements, as sqlite_alerts.c does. They use a connection of their own (struct
 * pg_aux) under a mutex, reconnected when it was lost; reads go through the readers.
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
    "CREATE INDEX IF NOT EXISTS alerts_agent ON alerts(agent, id);";

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

int pg_alerts_open(struct store *s, char *err, size_t errlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct pg_params p = {0};
    pg_p_i64(&p, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
    struct pg_aux *a = pg_store_aux(s);
    pthread_mutex_lock(&a->lock);
    int rc;
    PGresult *r = aux_exec(
        s, "UPDATE alerts SET status = 'resolved', resolved_ns = $1 WHERE status = 'firing'", &p,
        &rc, "resolve the incidents of an earlier run");
    pthread_mutex_unlock(&a->lock);
    PQclear(r);
    if (rc) {
        snprintf(err, errlen, "alerts: cannot resolve the incidents of an earlier run");
    }
    return rc;
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
    /* Ids as SQLite's rowid: one above the largest. The table's lock keeps two adds apart. */
    PGresult *r = aux_exec(s,
                           "INSERT INTO alerts(id, time_ns, agent, detector, type, severity,"
                           " session, message, value, threshold)"
                           " SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9"
                           " FROM alerts RETURNING id",
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

int pg_alert_put(struct store *s, const struct store_alert *al)
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
    struct pg_aux *a = pg_store_aux(s);
    pthread_mutex_lock(&a->lock);
    int rc;
    PGresult *r = aux_exec(
        s,
        "INSERT INTO alerts(id, time_ns, agent, detector, type, severity, session, message, value,"
        " threshold, key, status, last_ns, resolved_ns, count, flaps, unit, example_id,"
        " example_kind) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text, $13, $14,"
        " $15, $16, $17, $18, $19)"
        " ON CONFLICT(id) DO UPDATE SET session = excluded.session, message = excluded.message,"
        " value = excluded.value, threshold = excluded.threshold, status = excluded.status,"
        " last_ns = excluded.last_ns, resolved_ns = excluded.resolved_ns, count = excluded.count,"
        " flaps = excluded.flaps, example_id = excluded.example_id,"
        " example_kind = excluded.example_kind",
        &p, &rc, "store an incident");
    pthread_mutex_unlock(&a->lock);
    PQclear(r);
    return rc;
}

int64_t pg_alert_max_id(struct store *s)
{
    struct pg_aux *a = pg_store_aux(s);
    pthread_mutex_lock(&a->lock);
    int rc;
    PGresult *r = aux_exec(s, "SELECT COALESCE(MAX(id), 0)::bigint FROM alerts", NULL, &rc,
                           "read the largest incident id");
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

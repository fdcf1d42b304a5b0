/*
 * sqlite_alerts.c - the SQLite store's operator writes: incidents raised by the detectors (one
 * row each, inserted by its first event and updated by the later ones) and their
 * acknowledgements. An older file (one row per alert) gains the incident columns when opened;
 * its rows read as resolved incidents of count 1. They use a connection of their own (synchronous=NORMAL: an alert
 * lost to a power failure is raised again by the detectors), shared under a mutex by the
 * alerts thread and the HTTP threads; its busy timeout waits out the writer's group commits.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/log.h"
#include "collector/store/sqlite.h"

const char sqlite_alerts_schema[] =
    "CREATE TABLE IF NOT EXISTS alerts(id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL,"
    " agent TEXT NOT NULL, detector TEXT NOT NULL, type TEXT NOT NULL, severity TEXT NOT NULL,"
    " session TEXT, message TEXT NOT NULL, value REAL, threshold REAL, acked_ns INTEGER);"
    "CREATE INDEX IF NOT EXISTS alerts_agent ON alerts(agent, id);";

struct sqlite_aux {
    pthread_mutex_t lock; /* guards db and the statements */
    sqlite3 *db;
    sqlite3_stmt *insert, *ack, *get, *put;
};

/* Columns added for incidents; ALTER TABLE adds those an older file lacks. */
static const struct {
    const char *name, *decl;
} added[] = {
    {"key", "key TEXT NOT NULL DEFAULT ''"},
    {"status", "status TEXT NOT NULL DEFAULT 'resolved'"},
    {"last_ns", "last_ns INTEGER"},
    {"resolved_ns", "resolved_ns INTEGER"},
    {"count", "count INTEGER NOT NULL DEFAULT 1"},
    {"flaps", "flaps INTEGER NOT NULL DEFAULT 0"},
    {"unit", "unit TEXT NOT NULL DEFAULT ''"},
    {"example_id", "example_id INTEGER"},
    {"example_kind", "example_kind INTEGER"},
};

static int has_column(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('alerts') WHERE name = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

/* Add the incident columns; incidents left firing by an earlier run are resolved now. */
static int migrate(sqlite3 *db, char **msg)
{
    for (size_t i = 0; i < sizeof added / sizeof added[0]; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "ALTER TABLE alerts ADD COLUMN %s", added[i].decl);
        if (!has_column(db, added[i].name) && sqlite3_exec(db, sql, NULL, NULL, msg) != SQLITE_OK) {
            return -1;
        }
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE alerts SET status = 'resolved', resolved_ns = %lld WHERE status = 'firing'",
             (long long)ts.tv_sec * 1000000000 + ts.tv_nsec);
    return sqlite3_exec(db, sql, NULL, NULL, msg) == SQLITE_OK ? 0 : -1;
}

/* One statement for every incident event: the first inserts, the later ones update. */
static const char put_sql[] =
    "INSERT INTO alerts(id, time_ns, agent, detector, type, severity, session, message, value,"
    " threshold, key, status, last_ns, resolved_ns, count, flaps, unit, example_id, example_kind)"
    " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
    " ON CONFLICT(id) DO UPDATE SET session = excluded.session, message = excluded.message,"
    " value = excluded.value, threshold = excluded.threshold, status = excluded.status,"
    " last_ns = excluded.last_ns, resolved_ns = excluded.resolved_ns, count = excluded.count,"
    " flaps = excluded.flaps, example_id = excluded.example_id,"
    " example_kind = excluded.example_kind";

int sqlite_aux_open(struct sqlite_aux **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct sqlite_aux *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&a->lock, NULL);
    char *msg = NULL;
    if (sqlite3_open_v2(path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(a->db, 5000) != SQLITE_OK ||
        sqlite3_exec(a->db, "PRAGMA synchronous=NORMAL", NULL, NULL, &msg) != SQLITE_OK ||
        migrate(a->db, &msg) != 0 ||
        sqlite3_prepare_v2(a->db, put_sql, -1, &a->put, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db,
                           "INSERT INTO alerts(time_ns, agent, detector, type, severity, session,"
                           " message, value, threshold) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                           -1, &a->insert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db,
                           "UPDATE alerts SET acked_ns = ?1 WHERE id = ?2 AND acked_ns IS NULL", -1,
                           &a->ack, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db, SQLITE_ALERT_COLUMNS " WHERE id = ?1", -1, &a->get, NULL) !=
            SQLITE_OK) {
        snprintf(err, errlen, "alerts: %s", msg ? msg : a->db ? sqlite3_errmsg(a->db) : "?");
        sqlite3_free(msg);
        sqlite_aux_close(a);
        return -1;
    }
    *out = a;
    return 0;
}

void sqlite_aux_close(struct sqlite_aux *a)
{
    if (!a) {
        return;
    }
    sqlite3_finalize(a->insert);
    sqlite3_finalize(a->ack);
    sqlite3_finalize(a->get);
    sqlite3_finalize(a->put);
    sqlite3_close(a->db);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s && s[0]) {
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    } else {
        sqlite3_bind_null(st, i);
    }
}

int sqlite_alert_add(struct store *s, const struct store_alert *al, int64_t *id)
{
    struct sqlite_aux *a = sqlite_store_aux(s);
    pthread_mutex_lock(&a->lock);
    sqlite3_stmt *st = a->insert;
    sqlite3_bind_int64(st, 1, al->time_ns);
    sqlite3_bind_text(st, 2, al->agent, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, al->detector, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, al->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, al->severity, -1, SQLITE_TRANSIENT);
    bind_text(st, 6, al->session);
    sqlite3_bind_text(st, 7, al->message, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 8, al->value);
    sqlite3_bind_double(st, 9, al->threshold);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_warn("alerts: cannot store an alert: %s", sqlite3_errmsg(a->db));
        pthread_mutex_unlock(&a->lock);
        return sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    *id = sqlite3_last_insert_rowid(a->db);
    pthread_mutex_unlock(&a->lock);
    return 0;
}

static const char *text_or_empty(sqlite3_stmt *st, int i)
{
    const char *v = (const char *)sqlite3_column_text(st, i);
    return v ? v : "";
}

int sqlite_alert_row(sqlite3_stmt *st, store_alert_fn fn, void *ctx)
{
    struct store_alert al = {
        .id = sqlite3_column_int64(st, 0),
        .time_ns = sqlite3_column_int64(st, 1),
        .agent = text_or_empty(st, 2),
        .detector = text_or_empty(st, 3),
        .type = text_or_empty(st, 4),
        .severity = text_or_empty(st, 5),
        .session = text_or_empty(st, 6),
        .message = text_or_empty(st, 7),
        .value = sqlite3_column_double(st, 8),
        .threshold = sqlite3_column_double(st, 9),
        .acked_ns = sqlite3_column_int64(st, 10),
        .key = text_or_empty(st, 11),
        .unit = text_or_empty(st, 17),
        .last_ns = sqlite3_column_type(st, 13) == SQLITE_NULL ? sqlite3_column_int64(st, 1)
                                                              : sqlite3_column_int64(st, 13),
        .resolved_ns = sqlite3_column_int64(st, 14),
        .count = (uint64_t)sqlite3_column_int64(st, 15),
        .flaps = (uint32_t)sqlite3_column_int64(st, 16),
        .example_id = (uint64_t)sqlite3_column_int64(st, 18),
        .example_is_response = sqlite3_column_int(st, 19),
    };
    const char *status = (const char *)sqlite3_column_text(st, 12);
    al.resolved = !status || strcmp(status, "firing") != 0;
    return fn(ctx, &al);
}

int sqlite_alert_ack(struct store *s, int64_t id, int64_t now_ns, store_alert_fn fn, void *ctx)
{
    struct sqlite_aux *a = sqlite_store_aux(s);
    pthread_mutex_lock(&a->lock);
    sqlite3_bind_int64(a->ack, 1, now_ns);
    sqlite3_bind_int64(a->ack, 2, id);
    int rc = sqlite3_step(a->ack);
    sqlite3_reset(a->ack);
    int res = -ENOENT;
    if (rc != SQLITE_DONE) {
        res = sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    } else {
        sqlite3_bind_int64(a->get, 1, id);
        rc = sqlite3_step(a->get);
        if (rc == SQLITE_ROW) {
            sqlite_alert_row(a->get, fn, ctx);
            res = 0;
        } else if (rc != SQLITE_DONE) {
            res = sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
        }
        sqlite3_reset(a->get);
    }
    pthread_mutex_unlock(&a->lock);
    return res;
}

int sqlite_alert_put(struct store *s, const struct store_alert *al, int64_t *id)
{
    *id = al->id; /* one collector per file: its numbers are the ids */
    struct sqlite_aux *a = sqlite_store_aux(s);
    pthread_mutex_lock(&a->lock);
    sqlite3_stmt *st = a->put;
    sqlite3_bind_int64(st, 1, al->id);
    sqlite3_bind_int64(st, 2, al->time_ns);
    sqlite3_bind_text(st, 3, al->agent, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, al->detector, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, al->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, al->severity, -1, SQLITE_TRANSIENT);
    bind_text(st, 7, al->session);
    sqlite3_bind_text(st, 8, al->message, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 9, al->value);
    sqlite3_bind_double(st, 10, al->threshold);
    sqlite3_bind_text(st, 11, al->key ? al->key : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 12, al->resolved ? "resolved" : "firing", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 13, al->last_ns);
    if (al->resolved_ns) {
        sqlite3_bind_int64(st, 14, al->resolved_ns);
    } else {
        sqlite3_bind_null(st, 14);
    }
    sqlite3_bind_int64(st, 15, (int64_t)al->count);
    sqlite3_bind_int64(st, 16, al->flaps);
    sqlite3_bind_text(st, 17, al->unit ? al->unit : "", -1, SQLITE_TRANSIENT);
    if (al->example_id) {
        sqlite3_bind_int64(st, 18, (int64_t)al->example_id);
        sqlite3_bind_int(st, 19, al->example_is_response);
    } else {
        sqlite3_bind_null(st, 18);
        sqlite3_bind_null(st, 19);
    }
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    int res = 0;
    if (rc != SQLITE_DONE) {
        log_warn("alerts: cannot store incident %lld: %s", (long long)al->id,
                 sqlite3_errmsg(a->db));
        res = sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    pthread_mutex_unlock(&a->lock);
    return res;
}

int64_t sqlite_alert_max_id(struct store *s)
{
    struct sqlite_aux *a = sqlite_store_aux(s);
    pthread_mutex_lock(&a->lock);
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(a->db, "SELECT COALESCE(MAX(id), 0) FROM alerts", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&a->lock);
    return id;
}

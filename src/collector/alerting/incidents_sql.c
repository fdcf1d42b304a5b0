/*
 * incidents_sql.c - the alerts table and every statement on it (incidents_sql.h). One row per
 * incident: its identity (agent, detector, key), its first and last time, count, last value,
 * status (firing, resolved) and acknowledgement. Rows written by an older collector (one row per
 * alert) read as resolved incidents of count 1.
 */
#include "collector/alerting/incidents_sql.h"

#include <stdio.h>
#include <string.h>

#include "collector/alerting/alerts.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS alerts(id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL,"
    " agent TEXT NOT NULL, detector TEXT NOT NULL, type TEXT NOT NULL, severity TEXT NOT NULL,"
    " session TEXT, message TEXT NOT NULL, value REAL, threshold REAL, acked_ns INTEGER);"
    "CREATE INDEX IF NOT EXISTS alerts_agent ON alerts(agent, id);";

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

#define COLUMNS                                                                                    \
    "SELECT id, time_ns, agent, detector, type, severity, session, message, value, threshold,"     \
    " acked_ns, key, status, last_ns, resolved_ns, count, flaps, unit, example_id, example_kind"   \
    " FROM alerts"

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

int incidents_sql_open(sqlite3 *db, int64_t now_ns, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        goto fail;
    }
    for (size_t i = 0; i < sizeof added / sizeof added[0]; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "ALTER TABLE alerts ADD COLUMN %s", added[i].decl);
        if (!has_column(db, added[i].name) &&
            sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
            goto fail;
        }
    }
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE alerts SET status = 'resolved', resolved_ns = %lld WHERE status = 'firing'",
             (long long)now_ns);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "alerts: %s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

int64_t incidents_sql_max_id(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(id), 0) FROM alerts", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return id;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s && s[0]) {
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    } else {
        sqlite3_bind_null(st, i);
    }
}

int incidents_sql_write(sqlite3 *db, const struct alert *al)
{
    /* One statement for every event: the first inserts, the later ones update what moves. */
    static const char sql[] =
        "INSERT INTO alerts(id, time_ns, agent, detector, type, severity, session, message,"
        " value, threshold, key, status, last_ns, resolved_ns, count, flaps, unit, example_id,"
        " example_kind) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,"
        "?19) ON CONFLICT(id) DO UPDATE SET session = excluded.session, message ="
        " excluded.message, value = excluded.value, threshold = excluded.threshold, status ="
        " excluded.status, last_ns = excluded.last_ns, resolved_ns = excluded.resolved_ns,"
        " count = excluded.count, flaps = excluded.flaps, example_id = excluded.example_id,"
        " example_kind = excluded.example_kind";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
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
    sqlite3_bind_text(st, 11, al->key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 12, al->event == INC_RESOLVED ? "resolved" : "firing", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 13, al->last_ns);
    if (al->resolved_ns) {
        sqlite3_bind_int64(st, 14, al->resolved_ns);
    }
    sqlite3_bind_int64(st, 15, (int64_t)al->count);
    sqlite3_bind_int64(st, 16, al->flaps);
    sqlite3_bind_text(st, 17, al->unit, -1, SQLITE_TRANSIENT);
    if (al->example_id) {
        sqlite3_bind_int64(st, 18, (int64_t)al->example_id);
        sqlite3_bind_int(st, 19, al->example_is_response);
    }
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void copy_col(sqlite3_stmt *st, int i, char *dst, size_t cap)
{
    const char *v = (const char *)sqlite3_column_text(st, i);
    snprintf(dst, cap, "%s", v ? v : "");
}

static void row_json(tt__json *j, sqlite3_stmt *st)
{
    static struct alert zero;
    struct alert al = zero;
    al.id = sqlite3_column_int64(st, 0);
    al.time_ns = sqlite3_column_int64(st, 1);
    copy_col(st, 2, al.agent, sizeof al.agent);
    copy_col(st, 3, al.detector, sizeof al.detector);
    copy_col(st, 4, al.type, sizeof al.type);
    copy_col(st, 5, al.severity, sizeof al.severity);
    copy_col(st, 6, al.session, sizeof al.session);
    copy_col(st, 7, al.message, sizeof al.message);
    al.value = sqlite3_column_double(st, 8);
    al.threshold = sqlite3_column_double(st, 9);
    copy_col(st, 11, al.key, sizeof al.key);
    const char *status = (const char *)sqlite3_column_text(st, 12);
    al.event = status && strcmp(status, "firing") == 0 ? INC_FIRING : INC_RESOLVED;
    al.last_ns =
        sqlite3_column_type(st, 13) == SQLITE_NULL ? al.time_ns : sqlite3_column_int64(st, 13);
    al.resolved_ns = sqlite3_column_int64(st, 14);
    al.count = (uint64_t)sqlite3_column_int64(st, 15);
    al.flaps = (uint32_t)sqlite3_column_int64(st, 16);
    copy_col(st, 17, al.unit, sizeof al.unit);
    al.example_id = (uint64_t)sqlite3_column_int64(st, 18);
    al.example_is_response = sqlite3_column_int(st, 19);
    alert_json(j, &al, sqlite3_column_int64(st, 10), 0);
}

int incidents_sql_list(sqlite3 *db, const struct incidents_query *q, tt__json *j, uint64_t *n,
                       int64_t *last)
{
    sqlite3_stmt *st = NULL;
    *n = 0;
    *last = 0;
    if (sqlite3_prepare_v2(db,
                           COLUMNS " WHERE id < ?1 AND (?2 IS NULL OR agent = ?2) AND"
                                   " (?3 = 0 OR (?3 = 1 AND acked_ns IS NULL) OR"
                                   " (?3 = 2 AND acked_ns IS NOT NULL)) AND"
                                   " (?4 = 0 OR (?4 = 1 AND status = 'firing') OR"
                                   " (?4 = 2 AND status = 'resolved'))"
                                   " ORDER BY id DESC LIMIT ?5",
                           -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, q->before);
    if (q->agent) {
        sqlite3_bind_text(st, 2, q->agent, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int(st, 3, q->ack);
    sqlite3_bind_int(st, 4, q->status);
    sqlite3_bind_int64(st, 5, q->limit);
    while (sqlite3_step(st) == SQLITE_ROW) {
        row_json(j, st);
        *last = sqlite3_column_int64(st, 0);
        (*n)++;
    }
    sqlite3_finalize(st);
    return 0;
}

int incidents_sql_get(sqlite3 *db, int64_t id, tt__json *j)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, COLUMNS " WHERE id = ?1", -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, id);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found) {
        row_json(j, st);
    }
    sqlite3_finalize(st);
    return found;
}

int incidents_sql_ack(sqlite3 *db, int64_t id, int64_t now_ns, tt__json *j)
{
    sqlite3_stmt *up = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE alerts SET acked_ns = ?1 WHERE id = ?2 AND acked_ns IS NULL",
                           -1, &up, NULL) != SQLITE_OK) {
        return -1;
    }
    sqlite3_bind_int64(up, 1, now_ns);
    sqlite3_bind_int64(up, 2, id);
    int ok = sqlite3_step(up) == SQLITE_DONE;
    sqlite3_finalize(up);
    return ok ? incidents_sql_get(db, id, j) : -1;
}

/*
 * api/alerts.c - GET /api/v1/alerts (newest first, by agent and state, paged with before=) and
 * POST /api/v1/alerts/{id}/ack (idempotent: acknowledging an acknowledged alert keeps its first
 * acknowledgement time).
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/alerting/alerts.h"
#include "collector/api/http.h"
#include "collector/store/store.h"
#include "common/json.h"

#define ALERT_COLUMNS                                                                              \
    "SELECT id, time_ns, agent, detector, type, severity, session, message, value, threshold,"     \
    " acked_ns FROM alerts"

static void copy_col(sqlite3_stmt *st, int i, char *dst, size_t cap)
{
    const char *v = (const char *)sqlite3_column_text(st, i);
    snprintf(dst, cap, "%s", v ? v : "");
}

static void row_json(tt__json *j, sqlite3_stmt *st)
{
    struct alert al;
    memset(&al, 0, sizeof al);
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
    alert_json(j, &al, sqlite3_column_int64(st, 10));
}

enum MHD_Result api_alerts(const struct http_req *r)
{
    static const char *const allowed[] = {"agent", "state", "limit", "before", NULL};
    const char *bad = http_params_check(r, allowed);
    uint64_t limit, before;
    const char *state = http_param(r, "state");
    if (!bad && http_param_u64(r, "limit", 1, 10000, 100, &limit) != 0) {
        bad = "limit: expected an integer from 1 to 10000";
    }
    if (!bad && http_param_u64(r, "before", 1, INT64_MAX, (uint64_t)INT64_MAX, &before) != 0) {
        bad = "before: expected an alert id";
    }
    if (!bad && state && strcmp(state, "open") && strcmp(state, "acked") && strcmp(state, "all")) {
        bad = "state: expected open, acked or all";
    }
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    int st_mode = !state || !strcmp(state, "all") ? 0 : !strcmp(state, "open") ? 1 : 2;
    sqlite3 *db;
    if (store_reader_open(r->ctx->db_path, &db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    sqlite3_stmt *st = NULL;
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_key(&j, "alerts");
    tt__json_arr_begin(&j);
    int64_t last = 0;
    uint64_t n = 0;
    if (sqlite3_prepare_v2(db,
                           ALERT_COLUMNS " WHERE id < ?1 AND (?2 IS NULL OR agent = ?2) AND"
                                         " (?3 = 0 OR (?3 = 1 AND acked_ns IS NULL) OR"
                                         " (?3 = 2 AND acked_ns IS NOT NULL))"
                                         " ORDER BY id DESC LIMIT ?4",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (int64_t)before);
        if (http_param(r, "agent")) {
            sqlite3_bind_text(st, 2, http_param(r, "agent"), -1, SQLITE_STATIC);
        }
        sqlite3_bind_int(st, 3, st_mode);
        sqlite3_bind_int64(st, 4, (int64_t)limit);
        while (sqlite3_step(st) == SQLITE_ROW) {
            row_json(&j, st);
            last = sqlite3_column_int64(st, 0);
            n++;
        }
    }
    tt__json_arr_end(&j);
    tt__json_key(&j, "next_before");
    n == limit ? tt__json_i64(&j, last) : tt__json_null(&j);
    tt__json_obj_end(&j);
    sqlite3_finalize(st);
    sqlite3_close(db);
    enum MHD_Result rc = http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

enum MHD_Result api_alert_ack(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    const char *ids = http_path_param(r, "id");
    char *end;
    errno = 0;
    long long id = ids && *ids >= '0' && *ids <= '9' ? strtoll(ids, &end, 10) : -1;
    if (bad || id <= 0 || errno || *end) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad ? bad : "expected an alert id");
    }
    sqlite3 *db;
    if (sqlite3_open_v2(r->ctx->db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *up = NULL, *sel = NULL;
    int ok =
        sqlite3_prepare_v2(db, "UPDATE alerts SET acked_ns = ?1 WHERE id = ?2 AND acked_ns IS NULL",
                           -1, &up, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, ALERT_COLUMNS " WHERE id = ?1", -1, &sel, NULL) == SQLITE_OK;
    int found = 0;
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    if (ok) {
        sqlite3_bind_int64(up, 1, wall_ns());
        sqlite3_bind_int64(up, 2, id);
        ok = sqlite3_step(up) == SQLITE_DONE;
        sqlite3_bind_int64(sel, 1, id);
        if (ok && sqlite3_step(sel) == SQLITE_ROW) {
            row_json(&j, sel);
            found = 1;
        }
    }
    sqlite3_finalize(up);
    sqlite3_finalize(sel);
    sqlite3_close(db);
    enum MHD_Result rc = !ok      ? http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot update")
                         : !found ? http_error(r, MHD_HTTP_NOT_FOUND, "no alert %lld", id)
                                  : http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

/*
 * api/alerts.c - incidents over HTTP (the alerts table holds one row per incident):
 * GET /api/v1/incidents and its older name GET /api/v1/alerts (newest first; by agent, status
 * firing|resolved and state open|acked; paged with before=), GET /api/v1/incidents/{id}, and
 * POST /api/v1/incidents/{id}/ack = POST /api/v1/alerts/{id}/ack (idempotent: acknowledging an
 * acknowledged incident keeps its first acknowledgement time). The SQL is in
 * alerting/incidents_sql.c.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/alerting/alerts.h"
#include "collector/alerting/incidents_sql.h"
#include "collector/api/http.h"
#include "collector/store/store.h"
#include "common/json.h"

static enum MHD_Result list(const struct http_req *r, const char *array_name)
{
    static const char *const allowed[] = {"agent", "state", "status", "limit", "before", NULL};
    const char *bad = http_params_check(r, allowed);
    uint64_t limit, before;
    const char *state = http_param(r, "state"), *status = http_param(r, "status");
    if (!bad && http_param_u64(r, "limit", 1, 10000, 100, &limit) != 0) {
        bad = "limit: expected an integer from 1 to 10000";
    }
    if (!bad && http_param_u64(r, "before", 1, INT64_MAX, (uint64_t)INT64_MAX, &before) != 0) {
        bad = "before: expected an incident id";
    }
    if (!bad && state && strcmp(state, "open") && strcmp(state, "acked") && strcmp(state, "all")) {
        bad = "state: expected open, acked or all";
    }
    if (!bad && status && strcmp(status, "firing") && strcmp(status, "resolved") &&
        strcmp(status, "all")) {
        bad = "status: expected firing, resolved or all";
    }
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    struct incidents_query q = {
        .agent = http_param(r, "agent"),
        .ack = !state || !strcmp(state, "all") ? 0
               : !strcmp(state, "open")        ? 1
                                               : 2,
        .status = !status || !strcmp(status, "all") ? 0
                  : !strcmp(status, "firing")       ? 1
                                                    : 2,
        .before = (int64_t)before,
        .limit = (int64_t)limit,
    };
    sqlite3 *db;
    if (store_reader_open(r->ctx->db_path, &db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_key(&j, array_name);
    tt__json_arr_begin(&j);
    uint64_t n = 0;
    int64_t last = 0;
    incidents_sql_list(db, &q, &j, &n, &last); /* no table yet reads as none */
    tt__json_arr_end(&j);
    tt__json_key(&j, "next_before");
    n == limit ? tt__json_i64(&j, last) : tt__json_null(&j);
    tt__json_obj_end(&j);
    sqlite3_close(db);
    enum MHD_Result rc = http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

enum MHD_Result api_alerts(const struct http_req *r)
{
    return list(r, "alerts");
}

enum MHD_Result api_incidents(const struct http_req *r)
{
    return list(r, "incidents");
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long long path_id(const struct http_req *r)
{
    const char *ids = http_path_param(r, "id");
    char *end;
    errno = 0;
    long long id = ids && *ids >= '0' && *ids <= '9' ? strtoll(ids, &end, 10) : -1;
    return id <= 0 || errno || *end ? -1 : id;
}

enum MHD_Result api_incident_get(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    long long id = path_id(r);
    if (bad || id <= 0) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad ? bad : "expected an incident id");
    }
    sqlite3 *db;
    if (store_reader_open(r->ctx->db_path, &db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    int found = incidents_sql_get(db, id, &j);
    sqlite3_close(db);
    enum MHD_Result rc = found > 0 ? http_json(r, MHD_HTTP_OK, &b)
                                   : http_error(r, MHD_HTTP_NOT_FOUND, "no incident %lld", id);
    tt__buf_fini(&b);
    return rc;
}

enum MHD_Result api_alert_ack(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    long long id = path_id(r);
    if (bad || id <= 0) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad ? bad : "expected an alert id");
    }
    sqlite3 *db;
    if (sqlite3_open_v2(r->ctx->db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    sqlite3_busy_timeout(db, 5000);
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    int found = incidents_sql_ack(db, id, wall_ns(), &j);
    sqlite3_close(db);
    enum MHD_Result rc = found < 0 ? http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot update")
                         : !found  ? http_error(r, MHD_HTTP_NOT_FOUND, "no alert %lld", id)
                                   : http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

/*
 * api/alerts.c - incidents over HTTP (the store keeps one alerts row per incident):
 * GET /api/v1/incidents and its older name GET /api/v1/alerts (newest first; by agent, status
 * firing|resolved and state open|acked; paged with before=), GET /api/v1/incidents/{id}, and
 * POST /api/v1/incidents/{id}/ack = POST /api/v1/alerts/{id}/ack (idempotent: acknowledging an
 * acknowledged incident keeps its first acknowledgement time).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/alerting/alerts.h"
#include "collector/api/http.h"
#include "collector/store/store.h"
#include "common/json.h"

struct alerts_walk {
    tt__json *j;
    int64_t last;
};

static int row_json(void *ctx, const struct store_alert *a)
{
    struct alerts_walk *w = ctx;
    static _Thread_local struct alert al; /* large: not on the HTTP thread's stack */
    alert_from_store(&al, a);
    alert_json(w->j, &al, a->acked_ns, 0);
    w->last = a->id;
    return 0;
}

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
    struct store_alert_filter f = {
        .agent = http_param(r, "agent"),
        .state = !state || !strcmp(state, "all") ? 0
                 : !strcmp(state, "open")        ? 1
                                                 : 2,
        .before = (int64_t)before,
        .limit = limit,
        .status = !status || !strcmp(status, "all") ? 0
                  : !strcmp(status, "firing")       ? 1
                                                    : 2,
    };
    struct http_list l;
    if (http_list_open(r, &l, array_name) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    struct alerts_walk w = {&l.j, 0};
    int n = store_alerts(l.rd, &f, row_json, &w);
    http_list_end_array(&l);
    tt__json_key(&l.j, "next_before");
    n >= 0 && (uint64_t)n == limit ? tt__json_i64(&l.j, w.last) : tt__json_null(&l.j);
    return http_list_reply(r, &l, n, array_name);
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
    struct store_read *rd;
    if (store_read_open(r->ctx->store, &rd) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    struct alerts_walk w = {&j, 0};
    struct store_alert_filter f = {.before = INT64_MAX, .limit = 1, .id = id};
    int n = store_alerts(rd, &f, row_json, &w);
    store_read_close(rd);
    enum MHD_Result rc = n > 0    ? http_json(r, MHD_HTTP_OK, &b)
                         : n == 0 ? http_error(r, MHD_HTTP_NOT_FOUND, "no incident %lld", id)
                                  : http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot read");
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
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    struct alerts_walk w = {&j, 0};
    int res = store_alert_ack(r->ctx->store, id, wall_ns(), row_json, &w);
    int ok = res == 0 || res == -ENOENT, found = res == 0;
    enum MHD_Result rc = !ok      ? http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot update")
                         : !found ? http_error(r, MHD_HTTP_NOT_FOUND, "no alert %lld", id)
                                  : http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

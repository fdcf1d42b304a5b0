/*
 * api/alerts.c - GET /api/v1/alerts (newest first, by agent and state, paged with before=) and
 * POST /api/v1/alerts/{id}/ack (idempotent: acknowledging an acknowledged alert keeps its first
 * acknowledgement time).
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
    struct alert al;
    memset(&al, 0, sizeof al);
    al.id = a->id;
    al.time_ns = a->time_ns;
    snprintf(al.agent, sizeof al.agent, "%s", a->agent);
    snprintf(al.detector, sizeof al.detector, "%s", a->detector);
    snprintf(al.type, sizeof al.type, "%s", a->type);
    snprintf(al.severity, sizeof al.severity, "%s", a->severity);
    snprintf(al.session, sizeof al.session, "%s", a->session ? a->session : "");
    snprintf(al.message, sizeof al.message, "%s", a->message);
    al.value = a->value;
    al.threshold = a->threshold;
    alert_json(w->j, &al, a->acked_ns);
    w->last = a->id;
    return 0;
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
    struct store_read *rd;
    if (store_read_open(r->ctx->store, &rd) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_key(&j, "alerts");
    tt__json_arr_begin(&j);
    struct alerts_walk w = {&j, 0};
    struct store_alert_filter f = {http_param(r, "agent"), st_mode, (int64_t)before, limit};
    int n = store_alerts(rd, &f, row_json, &w);
    tt__json_arr_end(&j);
    tt__json_key(&j, "next_before");
    n >= 0 && (uint64_t)n == limit ? tt__json_i64(&j, w.last) : tt__json_null(&j);
    tt__json_obj_end(&j);
    store_read_close(rd);
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

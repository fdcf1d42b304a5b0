/*
 * api/agents.c - GET /api/v1/agents and GET /api/v1/agents/{agent}: every agent (or one) with
 * when it was last heard from, what is stored, its loss two ways (what the collector can prove:
 * sequence numbers it never received; what the agent's library reported in band: its drop
 * counters), and, from the monitor, its live rates, confidence and alerts.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/alerting/monitor.h"
#include "collector/store/store.h"
#include "common/json.h"

static void live_json(tt__json *j, struct monitor *m, const char *agent)
{
    struct mon_agent_view v;
    tt__json_key(j, "live");
    if (monitor_agent(m, agent, &v) != 0) {
        tt__json_null(j);
        return;
    }
    tt__json_obj_begin(j);
    tt__json_kv_i64(j, "last_batch_unix_ns", v.last_seen_ns);
    tt__json_kv_f64(j, "events_per_s", v.events_per_s);
    tt__json_kv_f64(j, "responses_per_s", v.responses_per_s);
    tt__json_kv_f64(j, "tool_calls_per_s", v.tool_calls_per_s);
    tt__json_kv_f64(j, "confidence", v.confidence);
    tt__json_kv_f64(j, "confidence_last", v.confidence_last);
    tt__json_kv_u64(j, "events", v.events);
    tt__json_kv_u64(j, "responses", v.responses);
    tt__json_kv_u64(j, "tool_calls", v.tool_calls);
    tt__json_kv_u64(j, "tool_errors", v.tool_errors);
    tt__json_kv_u64(j, "loss_gaps", v.loss_gaps);
    tt__json_kv_u64(j, "loss_reported", v.loss_reported);
    tt__json_kv_u64(j, "alerts_raised", v.alerts);
    tt__json_kv_u64(j, "signals_unchecked", v.unchecked);
    /* Each drift detector's statistic against its threshold: stat / threshold is how close
     * the agent is to an alert. */
    tt__json_key(j, "detectors");
    tt__json_arr_begin(j);
    for (int i = 0; i < v.n_readings; i++) {
        tt__json_obj_begin(j);
        tt__json_kv_cstr(j, "detector", v.readings[i].detector);
        tt__json_kv_f64(j, "stat", v.readings[i].r.stat);
        tt__json_kv_f64(j, "threshold", v.readings[i].r.threshold);
        tt__json_kv_f64(j, "level", v.readings[i].r.level);
        tt__json_kv_u64(j, "samples", v.readings[i].r.n);
        tt__json_obj_end(j);
    }
    tt__json_arr_end(j);
    tt__json_obj_end(j);
}

struct agents_walk {
    tt__json *j;
    const struct http_req *r;
};

static int agent_json(void *ctx, const struct store_agent *a)
{
    struct agents_walk *w = ctx;
    tt__json *j = w->j;
    tt__json_obj_begin(j);
    tt__json_kv_cstr(j, "name", a->name);
    tt__json_kv_i64(j, "first_seen_unix_ns", a->first_seen_ns);
    tt__json_kv_i64(j, "last_seen_unix_ns", a->last_seen_ns);
    tt__json_kv_i64(j, "instances", a->instances);
    tt__json_kv_i64(j, "events_stored", a->events_stored);
    tt__json_kv_i64(j, "sessions", a->sessions);
    /* Proven loss, from the store: sequence numbers below the highest stored that were never
     * stored (lost, or still on their way from a spool). Reported loss: the sum of the agent's
     * instances' dropped_total as last reported in band. */
    tt__json_kv_i64(j, "loss_gaps", a->loss_gaps);
    tt__json_kv_i64(j, "loss_reported", a->reported_dropped);
    tt__json_key(j, "loss");
    tt__json_obj_begin(j);
    tt__json_kv_i64(j, "proven", a->loss_gaps);
    tt__json_kv_i64(j, "reported_emitted", a->reported_emitted);
    tt__json_kv_i64(j, "reported_dropped", a->reported_dropped);
    tt__json_kv_i64(j, "reported_possibly_delivered", a->reported_possibly_delivered);
    tt__json_obj_end(j);
    tt__json_kv_i64(j, "open_alerts", a->open_alerts);
    live_json(j, w->r->ctx->monitor, a->name);
    tt__json_obj_end(j);
    return 0;
}

static enum MHD_Result agents_query(const struct http_req *r, const char *one)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    struct store_read *rd;
    if (store_read_open(r->ctx->store, &rd) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    if (!one) {
        tt__json_obj_begin(&j);
        tt__json_key(&j, "agents");
        tt__json_arr_begin(&j);
    }
    struct agents_walk w = {&j, r};
    int found = store_agents(rd, one, agent_json, &w);
    if (!one) {
        tt__json_arr_end(&j);
        tt__json_obj_end(&j);
    }
    store_read_close(rd);
    enum MHD_Result rc =
        found < 0       ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query agents")
        : one && !found ? http_error(r, MHD_HTTP_NOT_FOUND, "no agent \"%.200s\"", one)
                        : http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

enum MHD_Result api_agents(const struct http_req *r)
{
    return agents_query(r, NULL);
}

enum MHD_Result api_agent(const struct http_req *r)
{
    return agents_query(r, http_path_param(r, "agent"));
}

/*
 * api/agents.c - GET /api/v1/agents and GET /api/v1/agents/{agent}: every agent (or one) with
 * when it was last heard from, what is stored, its loss two ways (what the collector can prove:
 * sequence numbers it never received; what the agent's library reported in band: its drop
 * counters), and, from the monitor, its live rates, confidence and alerts.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/alerting/monitor.h"
#include "collector/store/store.h"
#include "common/json.h"

#define AGENT_COLUMNS                                                                              \
    "SELECT a.name, a.first_seen,"                                                                 \
    " (SELECT COALESCE(MAX(i.last_seen), a.last_seen) FROM instances i WHERE i.agent_id = a.id),"  \
    " (SELECT COUNT(*) FROM instances i WHERE i.agent_id = a.id),"                                 \
    " (SELECT COALESCE(SUM(i.stored), 0) FROM instances i WHERE i.agent_id = a.id),"               \
    " (SELECT COALESCE(SUM(i.max_seq - i.stored), 0) FROM instances i WHERE i.agent_id = a.id),"   \
    " (SELECT COALESCE(SUM(i.c_emitted), 0) FROM instances i WHERE i.agent_id = a.id),"            \
    " (SELECT COALESCE(SUM(i.c_dropped_total), 0) FROM instances i WHERE i.agent_id = a.id),"      \
    " (SELECT COALESCE(SUM(i.c_possibly), 0) FROM instances i WHERE i.agent_id = a.id),"           \
    " (SELECT COUNT(*) FROM sessions s WHERE s.agent_id = a.id)"                                   \
    " FROM agents a"

static const char agents_sql[] = AGENT_COLUMNS " ORDER BY a.name";
static const char agent_sql[] = AGENT_COLUMNS " WHERE a.name = ?1";

/* Open alerts of an agent, if the alerts table exists yet. */
static int64_t open_alerts(sqlite3 *db, const char *agent)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM alerts WHERE agent = ?1 AND acked_ns IS NULL",
                           -1, &st, NULL) != SQLITE_OK) {
        return 0;
    }
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return n;
}

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

static void agent_json(tt__json *j, sqlite3 *db, sqlite3_stmt *st, const struct http_req *r)
{
    const char *name = (const char *)sqlite3_column_text(st, 0);
    tt__json_obj_begin(j);
    tt__json_kv_cstr(j, "name", name);
    tt__json_kv_i64(j, "first_seen_unix_ns", sqlite3_column_int64(st, 1));
    tt__json_kv_i64(j, "last_seen_unix_ns", sqlite3_column_int64(st, 2));
    tt__json_kv_i64(j, "instances", sqlite3_column_int64(st, 3));
    tt__json_kv_i64(j, "events_stored", sqlite3_column_int64(st, 4));
    tt__json_kv_i64(j, "sessions", sqlite3_column_int64(st, 9));
    /* Proven loss, from the store: sequence numbers below the highest stored that were never
     * stored (lost, or still on their way from a spool). Reported loss: the sum of the agent's
     * instances' dropped_total as last reported in band. */
    tt__json_kv_i64(j, "loss_gaps", sqlite3_column_int64(st, 5));
    tt__json_kv_i64(j, "loss_reported", sqlite3_column_int64(st, 7));
    tt__json_key(j, "loss");
    tt__json_obj_begin(j);
    tt__json_kv_i64(j, "proven", sqlite3_column_int64(st, 5));
    tt__json_kv_i64(j, "reported_emitted", sqlite3_column_int64(st, 6));
    tt__json_kv_i64(j, "reported_dropped", sqlite3_column_int64(st, 7));
    tt__json_kv_i64(j, "reported_possibly_delivered", sqlite3_column_int64(st, 8));
    tt__json_obj_end(j);
    tt__json_kv_i64(j, "open_alerts", open_alerts(db, name));
    live_json(j, r->ctx->monitor, name);
    tt__json_obj_end(j);
}

static enum MHD_Result agents_query(const struct http_req *r, const char *one)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    sqlite3 *db;
    sqlite3_stmt *st;
    if (store_reader_open(r->ctx->db_path, &db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    if (sqlite3_prepare_v2(db, one ? agent_sql : agents_sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query agents");
    }
    if (one) {
        sqlite3_bind_text(st, 1, one, -1, SQLITE_STATIC);
    }
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    int found = 0;
    if (!one) {
        tt__json_obj_begin(&j);
        tt__json_key(&j, "agents");
        tt__json_arr_begin(&j);
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        agent_json(&j, db, st, r);
        found++;
    }
    if (!one) {
        tt__json_arr_end(&j);
        tt__json_obj_end(&j);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    enum MHD_Result rc = one && !found
                             ? http_error(r, MHD_HTTP_NOT_FOUND, "no agent \"%.200s\"", one)
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

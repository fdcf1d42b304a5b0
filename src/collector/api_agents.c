/*
 * api_agents.c - GET /api/v1/agents: every agent with when it was last heard from, what is
 * stored, and its loss two ways: what the collector can prove (sequence numbers it never
 * received) and what the agent's library reported in band (its drop counters).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "collector/http.h"
#include "collector/store.h"
#include "common/json.h"

static const char agents_sql[] =
    "SELECT a.name, a.first_seen,"
    " (SELECT COALESCE(MAX(i.last_seen), a.last_seen) FROM instances i WHERE i.agent_id = a.id),"
    " (SELECT COUNT(*) FROM instances i WHERE i.agent_id = a.id),"
    " (SELECT COALESCE(SUM(i.stored), 0) FROM instances i WHERE i.agent_id = a.id),"
    " (SELECT COALESCE(SUM(i.max_seq - i.stored), 0) FROM instances i WHERE i.agent_id = a.id),"
    " (SELECT COALESCE(SUM(i.c_emitted), 0) FROM instances i WHERE i.agent_id = a.id),"
    " (SELECT COALESCE(SUM(i.c_dropped_total), 0) FROM instances i WHERE i.agent_id = a.id),"
    " (SELECT COALESCE(SUM(i.c_possibly), 0) FROM instances i WHERE i.agent_id = a.id)"
    " FROM agents a ORDER BY a.name";

enum MHD_Result api_agents(const struct http_req *r)
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
    if (sqlite3_prepare_v2(db, agents_sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query agents");
    }
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_key(&j, "agents");
    tt__json_arr_begin(&j);
    while (sqlite3_step(st) == SQLITE_ROW) {
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, "name", (const char *)sqlite3_column_text(st, 0));
        tt__json_kv_i64(&j, "first_seen_unix_ns", sqlite3_column_int64(st, 1));
        tt__json_kv_i64(&j, "last_seen_unix_ns", sqlite3_column_int64(st, 2));
        tt__json_kv_i64(&j, "instances", sqlite3_column_int64(st, 3));
        tt__json_kv_i64(&j, "events_stored", sqlite3_column_int64(st, 4));
        /* Proven loss: sequence numbers below the highest stored that were never stored (lost,
         * or still on their way from a spool). Reported loss: the agents' dropped_total. */
        tt__json_kv_i64(&j, "loss_gaps", sqlite3_column_int64(st, 5));
        tt__json_kv_i64(&j, "loss_reported", sqlite3_column_int64(st, 7));
        tt__json_key(&j, "loss");
        tt__json_obj_begin(&j);
        tt__json_kv_i64(&j, "proven", sqlite3_column_int64(st, 5));
        tt__json_kv_i64(&j, "reported_emitted", sqlite3_column_int64(st, 6));
        tt__json_kv_i64(&j, "reported_dropped", sqlite3_column_int64(st, 7));
        tt__json_kv_i64(&j, "reported_possibly_delivered", sqlite3_column_int64(st, 8));
        tt__json_obj_end(&j);
        tt__json_obj_end(&j);
    }
    tt__json_arr_end(&j);
    tt__json_obj_end(&j);
    sqlite3_finalize(st);
    sqlite3_close(db);
    enum MHD_Result rc = http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

/*
 * incidents_sql.h - every SQL statement about alerts and incidents, in one place so that it can
 * move behind the store interface as one piece: the alerts table (one row per incident), its
 * migration from the one-row-per-alert schema, the writes of the alerts thread and the reads
 * and acknowledgement of the HTTP API.
 *
 * Threads: each function uses the connection it is given, on the caller's thread.
 */
#ifndef TT_COLLECTOR_INCIDENTS_SQL_H
#define TT_COLLECTOR_INCIDENTS_SQL_H

#include <sqlite3.h>
#include <stdint.h>

#include "collector/alerting/monitor.h"
#include "common/json.h"

/* Create or migrate the alerts table; mark incidents left firing by an earlier run resolved
 * (now_ns). 0, or -1 with err set. */
int incidents_sql_open(sqlite3 *db, int64_t now_ns, char *err, size_t errlen);
/* The largest incident id stored (0 when none). */
int64_t incidents_sql_max_id(sqlite3 *db);

/* Insert or update one incident's row from one of its events. 0 or -1. */
int incidents_sql_write(sqlite3 *db, const struct alert *al);

/* A filter for listing: NULL / 0 fields do not filter. */
struct incidents_query {
    const char *agent;
    int ack;    /* 0 any, 1 open (not acknowledged), 2 acknowledged */
    int status; /* 0 any, 1 firing, 2 resolved */
    int64_t before;
    int64_t limit;
};

/* Append the JSON objects of the matching rows, newest first, to the open array in j; *n and
 * *last get how many and the last id. 0, or -1 on a store error. */
int incidents_sql_list(sqlite3 *db, const struct incidents_query *q, tt__json *j, uint64_t *n,
                       int64_t *last);
/* One incident's JSON object: 1 found, 0 not found, -1 store error. */
int incidents_sql_get(sqlite3 *db, int64_t id, tt__json *j);
/* Acknowledge (idempotent: the first time is kept), then render as incidents_sql_get. */
int incidents_sql_ack(sqlite3 *db, int64_t id, int64_t now_ns, tt__json *j);

#endif

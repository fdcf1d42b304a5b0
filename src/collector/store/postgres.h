/*
 * postgres.h - inside the PostgreSQL store (store.h's "postgres"; not part of the seam: only
 * store/postgres*.c include it). The URL is a libpq connection URI (postgres://... or
 * postgresql://...); the password is best left to libpq's own PGPASSFILE or PGPASSWORD.
 * Connections: one for the writer thread (postgres.c), one per reader and per events
 * iterator (postgres_read.c), each opened on the thread that uses it.
 *
 * Every parameter and result goes in binary form: bytea for anything that came from the wire
 * (names, sessions, hosts: any bytes, no encoding errors), int8 for every integer (sequence
 * numbers are unsigned 64-bit, stored as the signed value of the same bits, as in SQLite).
 */
#ifndef TT_COLLECTOR_STORE_POSTGRES_H
#define TT_COLLECTOR_STORE_POSTGRES_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <zstd.h>

#include "collector/store/store.h"

#define PG_SCHEMA_VERSION 1
/* The advisory lock every writer transaction takes first (and schema creation): writers of
 * all collectors sharing the database commit one at a time, so frame ids follow commit order
 * (the events cursor) and the dedup check sees every earlier commit. */
#define PG_WRITER_LOCK 0x74656c6c74616c65LL /* "telltale" */

/* Settings of every connection (docs/operations.md, "PostgreSQL store"); the URL's own
 * parameters override them (`?keepalives_idle=60`, `?options=-c%20statement_timeout%3D0`).
 * A statement that runs longer than the timeout is cancelled (57014, transient: the group is
 * refused and resent); keepalives and the TCP user timeout find a server or path gone
 * silent within about a minute instead of the kernel's two hours. */
#define PG_CONNECT_TIMEOUT_S "5"
#define PG_STATEMENT_TIMEOUT_MS "30000"
#define PG_KEEPALIVES_IDLE_S "30"
#define PG_KEEPALIVES_INTERVAL_S "10"
#define PG_KEEPALIVES_COUNT "3"
#define PG_TCP_USER_TIMEOUT_MS "60000"

/* A connection to the store's server, or NULL with the reason in err (no password in it). */
PGconn *pg_connect(const struct store *s, char *err, size_t errlen);

/* Readers' connections (the API's reads, exports, the hello's ownership check) come from a
 * pool: at most PG_READERS_MAX open at once per collector, so that a burst of API requests
 * (up to the HTTP layer's 1024 connections) cannot take the server's max_connections from the
 * writers of every collector sharing it; a reader waits up to PG_READERS_WAIT_MS for one to be
 * given back, then is refused (the API answers 503). An idle connection is kept for the next
 * reader (up to PG_READERS_IDLE) unless it was lost or left inside a transaction. */
#define PG_READERS_MAX 16
#define PG_READERS_IDLE 8
#define PG_READERS_WAIT_MS 5000

/* A reader's connection from the pool, or NULL with the reason in err. */
PGconn *pg_conn_take(struct store *s, char *err, size_t errlen);

/* Gives back what pg_conn_take returned (NULL is ignored). */
void pg_conn_give(struct store *s, PGconn *c);

/* A SQLSTATE (or the connection's state when res has none) as a negative errno of the
 * classes of store.h: connection loss, lock and serialization conflicts, disk full, out of
 * memory are transient; data corruption, I/O errors and anything unknown are fatal. */
int pg_errno(const PGconn *c, const PGresult *res);

/* Parameters of one statement, all in binary form (struct pg_params, at most PG_PARAMS_MAX). */
#define PG_PARAMS_MAX 24
struct pg_params {
    int n;
    const char *v[PG_PARAMS_MAX];
    int len[PG_PARAMS_MAX];
    int fmt[PG_PARAMS_MAX];
    unsigned char num[PG_PARAMS_MAX][8]; /* int8 and float8 values, big-endian */
};
void pg_p_i64(struct pg_params *p, int64_t v);
void pg_p_f64(struct pg_params *p, double v);                  /* NaN goes as NULL */
void pg_p_bytes(struct pg_params *p, const void *b, size_t n); /* NULL b: SQL NULL */
void pg_p_str(struct pg_params *p, const char *s);             /* NULL: SQL NULL */
void pg_p_null(struct pg_params *p);

/* Run sql (or the prepared statement named name when sql is NULL) with binary results. */
PGresult *pg_exec(PGconn *c, const char *name, const char *sql, const struct pg_params *p);

/* Result fields in binary form: int8/int4/int2 as int64, float8, bytea and text as bytes. */
int pg_null(const PGresult *r, int row, int col);
int64_t pg_i64(const PGresult *r, int row, int col);
double pg_f64(const PGresult *r, int row, int col);
const char *pg_bytes(const PGresult *r, int row, int col, size_t *n);

/* Operator writes (postgres_alerts.c): incidents and their acknowledgements, on a connection
 * of their own shared under a mutex by the alerts thread and the HTTP threads, reconnected
 * after a loss. */
struct pg_aux {
    pthread_mutex_t lock; /* guards c */
    PGconn *c;
};
struct pg_aux *pg_store_aux(struct store *s);

/* This collector's id among those sharing the database: the first line of DATA/collector-id,
 * made at first start from 64 random bits (16 hex digits), or written there by the operator
 * before (letters, digits, '-', '_', '.'; at most PG_COLLECTOR_ID_MAX - 1). Incidents carry
 * it: a collector numbers, updates and resolves only its own (postgres_alerts.c). */
#define PG_COLLECTOR_ID_MAX 64
#define PG_COLLECTOR_ID_FILE "collector-id"
const char *pg_store_collector(const struct store *s);
extern const char pg_alerts_schema[];
/* Incidents left firing by an earlier run are resolved by the leader when it takes the lead
 * (postgres_follow.c), not at open as with SQLite. */
int pg_alert_add(struct store *s, const struct store_alert *al, int64_t *id);
int pg_alert_ack(struct store *s, int64_t id, int64_t now_ns, store_alert_fn fn, void *ctx);
int pg_alert_put(struct store *s, const struct store_alert *al, int64_t *id);
int64_t pg_alert_max_id(struct store *s);
int pg_alerts(struct store_read *r, const struct store_alert_filter *f, store_alert_fn fn,
              void *ctx);
/* The reader's connection (postgres_read.c). */
PGconn *pg_read_conn(struct store_read *r);

/* Rollups (postgres_rollup.c): the writer's accumulator, added to by each stored item and
 * written just before the group commits (on the writer's connection c, inside its
 * transaction), dropped when the group fails; and the readers' series. */
struct pg_rollup;
extern const char pg_rollup_schema[];
struct pg_rollup *pg_rollup_new(void);
void pg_rollup_free(struct pg_rollup *r);
int pg_rollup_item(struct pg_rollup *r, PGconn *c, const struct store_item *it, int64_t agent_id,
                   int64_t instance_id);
int pg_rollup_flush(struct pg_rollup *r, PGconn *c);
void pg_rollup_discard(struct pg_rollup *r);
int pg_rollups(struct store_read *r, const struct store_rollup_query *q, store_rollup_fn fn,
               void *ctx);

/* Retention (postgres_retain.c): on the caller's thread and a connection of its own, in steps
 * under PG_WRITER_LOCK. The writer's dedup reads retain_instances (what went, per instance). */
struct pg_retain;
extern const char pg_retain_schema[];
struct pg_retain *pg_retain_new(struct store *s);
void pg_retain_free(struct pg_retain *r);
struct pg_retain *pg_store_retain(struct store *s);
int pg_retention_run(struct store *s, const struct store_retention *policy, int64_t now_ns,
                     struct store_retention_report *out);

/* A stored frame's payload (frames.data, compressed when codec is 1) into *buf, grown to
 * raw_len as needed: 0; -EINVAL when it is not what ingest stores (longer than
 * TT_FRAME_RAW_MAX, or not raw_len once decompressed); -ENOMEM. */
int pg_frame_payload(ZSTD_DCtx *dctx, int64_t codec, size_t raw_len, const char *data,
                     size_t data_len, uint8_t **buf, size_t *cap);

/* Following every collector's commits (postgres_follow.c; store.h's store_follow): the
 * leader holds the session advisory lock PG_LEADER_LOCK on its follower's connection. */
#define PG_LEADER_LOCK 0x74742d6c65616472LL /* "tt-leadr" */
#define PG_FOLLOW_ROWS 64 /* frames read per statement (the events iterator's page) */
int pg_follow_open(struct store *s, struct store_follow **out, char *err, size_t errlen);
int pg_follow_next(struct store_follow *f, int max, store_follow_fn fn, void *ctx);
int pg_follow_lead(struct store_follow *f);
int pg_follow_adopt(struct store_follow *f, const char *agent, const char *detector,
                    const char *key, int64_t local_id);
int pg_follow_settle(struct store_follow *f, const int64_t *keep, int n, int64_t now_ns);
void pg_follow_close(struct store_follow *f);

/* Readers and the events iterator (postgres_read.c). */
int pg_read_open(struct store *s, struct store_read **out);
void pg_read_close(struct store_read *r);
int pg_agents(struct store_read *r, const char *name, store_agent_fn fn, void *ctx);
int pg_agent_owner(struct store_read *r, const char *agent, char *out, size_t n);
int pg_sessions(struct store_read *r, const char *agent, uint64_t limit, store_session_fn fn,
                void *ctx);
int pg_session_find(struct store_read *r, const char *id, const char *agent, uint64_t limit,
                    store_session_fn fn, void *ctx);
int pg_session_agents(struct store_read *r, const char *id, uint64_t limit, store_name_fn fn,
                      void *ctx);
int pg_session_steps(struct store_read *r, int64_t agent_key, const char *session, store_step_fn fn,
                     void *ctx);
int pg_session_responses(struct store_read *r, int64_t agent_key, const char *session,
                         uint64_t limit, store_id_fn fn, void *ctx);
int pg_responses(struct store_read *r, const struct store_response_filter *f, store_response_fn fn,
                 void *ctx);
int pg_response_tokens(struct store_read *r, int64_t instance_key, uint64_t id, store_blob_fn fn,
                       void *ctx);
int pg_response_guard(struct store_read *r, int64_t instance_key, uint64_t id, store_guard_fn fn,
                      void *ctx);
int pg_events_open(struct store *s, const struct store_filter *f, struct store_events **out,
                   char *err, size_t errlen);
int pg_events_next(struct store_events *q, tt__event *ev, const char **agent,
                   const uint8_t **instance);
void pg_events_cursor(const struct store_events *q, char *out, size_t n);
void pg_events_close(struct store_events *q);
int64_t pg_events_count(struct store *s, const struct store_filter *f, char *err, size_t errlen);

#endif

/*
 * sqlite.h - inside the SQLite store (not part of the seam: only store/sqlite*.c and derive.c
 * include it). The database is DATA/telltale.db in WAL mode: one writer connection on the
 * writer thread (sqlite.c), one connection for operator writes under a mutex
 * (sqlite_alerts.c), and a private read-only connection per reader (sqlite_read.c,
 * sqlite_events.c).
 */
#ifndef TT_COLLECTOR_STORE_SQLITE_H
#define TT_COLLECTOR_STORE_SQLITE_H

#include <pthread.h>
#include <sys/types.h>
#include <sqlite3.h>

#include "collector/store/store.h"

#define SQLITE_DB_NAME "telltale.db"
#define SQLITE_SCHEMA_VERSION 1

struct sqlite_store;

/* The database file's path. */
const char *sqlite_store_path(const struct store *s);

/* A read-only connection on path; close with sqlite3_close. 0 or -1. */
int sqlite_reader_open(const char *path, sqlite3 **db);

/* An SQLite result code as a negative errno of the classes of store.h. */
int sqlite_errno(int rc);

/* Health (sqlite_health.c): whether the store still holds what it acknowledges. */
struct sqlite_health {
    const char *path; /* the database file (borrowed) */
    dev_t dev, wal_dev;
    ino_t ino, wal_ino;
    int known, wal_known; /* the files existed at open */
    uint64_t reports;     /* corruption reports of the process seen so far */
    uint64_t last_ns;     /* the last check (monotonic) */
};
enum { SQLITE_HEALTH_MOVED = 1, SQLITE_HEALTH_DAMAGED = 2 };
/* Route SQLite's error log to the corruption count (before any connection opens). */
void sqlite_health_global_init(void);
/* The start-up check of path (absent or empty is fine): header, then PRAGMA quick_check for at
 * most 10 s. 0, or -1 with a message naming the file and how to recover. */
int sqlite_check_at_start(const char *path, char *err, size_t errlen);
/* Remember the identity of path and its WAL (after open). */
void sqlite_health_init(struct sqlite_health *h, const char *path);
/* 0 while healthy; SQLITE_HEALTH_MOVED (deleted or replaced) or SQLITE_HEALTH_DAMAGED
 * (corruption reported) with the cause in out. Cost: two stat calls and an atomic load. */
int sqlite_health_check(struct sqlite_health *h, char *out, size_t n);
/* Copy what db holds into a new file PATH.salvaged-N (0600, never overwriting); its name into
 * saved. 0 or -1. */
int sqlite_salvage(sqlite3 *db, const char *path, char *saved, size_t n);
/* At start, when path is missing and a salvage of it exists: move the newest into place (a
 * WAL left without its database is moved aside), and log it. 1 when done, 0 when there was
 * nothing to do, -1 on failure. */
int sqlite_restore_salvage(const char *path);

/* Schemas other than the frames' (created by the writer at open). */
extern const char derive_schema[];
extern const char sqlite_alerts_schema[];
extern const char rollup_schema[];

/* Derived tables (derive.c): sessions, steps and responses from a batch, inside the writer's
 * transaction. */
struct derive;
int derive_open(struct derive **out, sqlite3 *db);
int derive_item(struct derive *d, const struct store_item *it, int64_t agent_id,
                int64_t instance_id);
void derive_close(struct derive *d);

/* Rollups (sqlite_rollup.c): rollup_item adds a stored item into the writer's accumulator
 * (after derive_item), rollup_flush writes it inside the transaction before the commit,
 * rollup_discard drops it after a rollback. Writer thread only. */
struct rollup;
int rollup_open(struct rollup **out, sqlite3 *db);
int rollup_item(struct rollup *r, const struct store_item *it, int64_t agent_id,
                int64_t instance_id);
int rollup_flush(struct rollup *r);
void rollup_discard(struct rollup *r);
void rollup_close(struct rollup *r);
int sqlite_rollups(struct store_read *r, const struct store_rollup_query *q, store_rollup_fn fn,
                   void *ctx);

/* Operator writes (sqlite_alerts.c): a connection of their own, opened with the store. */
struct sqlite_aux;
int sqlite_aux_open(struct sqlite_aux **out, const char *path, char *err, size_t errlen);
void sqlite_aux_close(struct sqlite_aux *a);
int sqlite_alert_add(struct store *s, const struct store_alert *al, int64_t *id);
int sqlite_alert_ack(struct store *s, int64_t id, int64_t now_ns, store_alert_fn fn, void *ctx);
int sqlite_alert_put(struct store *s, const struct store_alert *al, int64_t *id);
int64_t sqlite_alert_max_id(struct store *s);
/* An alerts row (id, time_ns, agent, detector, type, severity, session, message, value,
 * threshold, acked_ns) to fn. */
int sqlite_alert_row(sqlite3_stmt *st, store_alert_fn fn, void *ctx);
#define SQLITE_ALERT_COLUMNS                                                                       \
    "SELECT id, time_ns, agent, detector, type, severity, session, message, value, threshold,"     \
    " acked_ns, key, status, last_ns, resolved_ns, count, flaps, unit, example_id, example_kind"   \
    " FROM alerts"
/* The store's aux (sqlite.c). */
struct sqlite_aux *sqlite_store_aux(struct store *s);

/* Retention (sqlite_retain.c): its tables, the pruned high-water mark for dedup, and the
 * requests the writer runs in steps between commits. */
struct sqlite_retain;
int sqlite_retain_open(struct sqlite_retain **out, sqlite3 *db, const char *path);
void sqlite_retain_close(struct sqlite_retain *r);
/* For a range no stored batch overlaps: STORE_DUP below what retention removed, STORE_REJECT
 * across that mark, else STORE_OK. Writer thread. */
int sqlite_retain_dedup(struct sqlite_retain *r, int64_t instance_id, uint64_t first,
                        uint64_t last);
int sqlite_retain_pending(struct sqlite_retain *r);
/* One bounded step of the queued request, if any (writer thread). */
void sqlite_retain_step(struct sqlite_retain *r);
/* The writer is leaving: a queued request ends with -ECANCELED. */
void sqlite_retain_abort(struct sqlite_retain *r);
int sqlite_retention_run(struct store *s, const struct store_retention *policy, int64_t now_ns,
                         struct store_retention_report *out);
/* The store's retention state, and a wake-up of its writer for a queued request: 0 when the
 * writer will run it, 1 when no writer runs yet (the caller runs it), -1 when it is stopping. */
struct sqlite_retain *sqlite_store_retain(struct store *s);
int sqlite_store_wake(struct store *s);

/* Readers (sqlite_read.c) and the events iterator (sqlite_events.c). */
int sqlite_read_open(struct store *s, struct store_read **out);
sqlite3 *sqlite_read_db(struct store_read *r);
void sqlite_read_close(struct store_read *r);
int sqlite_agents(struct store_read *r, const char *name, store_agent_fn fn, void *ctx);
int sqlite_agent_owner(struct store_read *r, const char *agent, char *out, size_t n);
int sqlite_sessions(struct store_read *r, const char *agent, uint64_t limit, store_session_fn fn,
                    void *ctx);
int sqlite_session_find(struct store_read *r, const char *id, const char *agent, uint64_t limit,
                        store_session_fn fn, void *ctx);
int sqlite_session_agents(struct store_read *r, const char *id, uint64_t limit, store_name_fn fn,
                          void *ctx);
int sqlite_session_steps(struct store_read *r, int64_t agent_key, const char *session,
                         store_step_fn fn, void *ctx);
int sqlite_session_responses(struct store_read *r, int64_t agent_key, const char *session,
                             uint64_t limit, store_id_fn fn, void *ctx);
int sqlite_responses(struct store_read *r, const struct store_response_filter *f,
                     store_response_fn fn, void *ctx);
int sqlite_response_tokens(struct store_read *r, int64_t instance_key, uint64_t id,
                           store_blob_fn fn, void *ctx);
int sqlite_response_guard(struct store_read *r, int64_t instance_key, uint64_t id,
                          store_guard_fn fn, void *ctx);
int sqlite_alerts(struct store_read *r, const struct store_alert_filter *f, store_alert_fn fn,
                  void *ctx);

int sqlite_events_open(struct store *s, const struct store_filter *f, struct store_events **out,
                       char *err, size_t errlen);
int sqlite_events_next(struct store_events *q, tt__event *ev, const char **agent,
                       const uint8_t **instance);
void sqlite_events_cursor(const struct store_events *q, char *out, size_t n);
void sqlite_events_close(struct store_events *q);
int64_t sqlite_events_count(struct store *s, const struct store_filter *f, char *err,
                            size_t errlen);

#endif

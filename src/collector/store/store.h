/*
 * store.h - the store seam: where the sources' batches are committed and where the HTTP API,
 * the alerts, retention and rollups read and write the stored data. One interface;
 * implementations sit behind an ops table (struct store_ops) chosen at open time from a URL:
 * "sqlite" (the default: DATA/telltale.db, store/sqlite*.c) or "postgres" (a libpq URI,
 * `--store postgres://...`, store/postgres*.c). An implementation that lacks an operation says
 * so in store_ops.lacks (both built-in ones provide every one). Nothing outside store/ knows
 * which implementation runs, so another one is one more store/<name>*.c and one more row in the
 * table of store.c.
 *
 * CONTRACT (every implementation keeps it; docs/design.md "Seams" says the same)
 *
 * Committed. An item comes back STORE_OK only when its events are durable at the store's sync
 * level, and STORE_DUP only when an earlier commit holds the same events durably. The level
 * (full, normal, off: --sync) is chosen at open and stated at startup by store_describe: what
 * an acknowledged batch survives (collector crash, power failure). Sources acknowledge only
 * STORE_OK and STORE_DUP items, and only once they came back.
 *
 * Dedup on (instance, seq). Each (instance, seq) is stored at most once, for ever (it is the
 * data itself, not a time window). Appending is idempotent: a batch whose range equals a
 * committed batch's range comes back STORE_DUP and stores nothing; a batch whose range
 * overlaps committed sequence numbers in any other way comes back STORE_REJECT (never
 * storable: the agent must not resend it); a batch replayed under an instance of another
 * agent is STORE_REJECT; so is a batch whose agent name or instance belongs to another identity
 * (store_item.ident.identity): each agent name and each instance belongs, for ever, to the
 * identity that stored under it first (reason store_reason_not_owner); a batch without events (a heartbeat) is STORE_OK and only updates
 * the instance's reported counters.
 *
 * Ordering. Every submitted item comes back from store_take_done exactly once, in submission
 * order, whatever its result. Readers see a batch only once it is committed, never part of a
 * commit; stored events read back in storage order (commit order, then the batch's order),
 * which the events cursor follows.
 *
 * Errors. Functions return 0 (or a count) on success and a negative errno on failure, in
 * classes that store_error_class tells apart:
 *   transient  -EAGAIN, -EBUSY, -ENOSPC, -ENOMEM: the store is sound but the operation could
 *              not complete now (SQLite: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL, SQLITE_NOMEM).
 *              Retry later: items come back STORE_RETRY and the agents resend.
 *   fatal      -EIO and anything else: the store is unusable (SQLite: SQLITE_IOERR,
 *              SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_CANTOPEN, SQLITE_READONLY: disk error,
 *              corruption, the file deleted or replaced while open). Items still come back
 *              STORE_RETRY (the agents keep their data) and nothing is committed or
 *              acknowledged any more: store_failure gives the cause until the collector stops
 *              (after an I/O error the page cache cannot be trusted: PostgreSQL's "fsyncgate");
 *              an operator must act. An implementation refuses at open a store it finds
 *              damaged.
 *   -ENOTSUP   the implementation does not provide this operation (see the hooks below).
 *   -ENOENT    a read found nothing, where a function says so.
 *
 * Threads. store_submit, store_take_done, store_done_fd and store_pending_bytes: the source's
 * thread (the ingest loop). Batches are written by one writer thread of the store's own
 * (store_start), the only writer of batches and derived rows. Readers (struct store_read, the
 * events iterator): any thread, each reader used by one thread at a time, each seeing
 * committed data only. Operator writes (store_alert_add, store_alert_ack): any thread; the
 * implementation serialises them with the writer. store_open and store_close: the main thread,
 * store_close after every reader is closed and every other user has stopped.
 */
#ifndef TT_COLLECTOR_STORE_H
#define TT_COLLECTOR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"

/* The reason of a batch refused because its agent name or instance belongs to another
 * identity; store_reason_is_ownership tells it from the others (compares the pointer). */
extern const char store_reason_not_owner[];
int store_reason_is_ownership(const char *reason);

#define STORE_DEFAULT_URL "sqlite"

/* --- opening ------------------------------------------------------------------------------- */

struct store_config {
    const char *url;      /* "sqlite" (NULL: the default); see store_open */
    const char *data_dir; /* the data directory (created 0700 if missing) */
    int sync_level;       /* enum sync_level */
};

struct store;

/* Open the store that cfg->url names: its scheme picks the implementation ("sqlite", or
 * "sqlite:" followed by anything the implementation accepts). Unknown schemes are refused with
 * the list of known ones in err. */
int store_open(struct store **out, const struct store_config *cfg, char *err, size_t errlen);

/* Start the writer thread. */
int store_start(struct store *s);

/* Stop the writer after it has committed everything submitted, then close. */
void store_close(struct store *s);

/* One line for the startup log: implementation, location, sync level and what an
 * acknowledged batch survives at that level. */
void store_describe(const struct store *s, char *out, size_t n);

/* The sync level's name (for the ready file). */
const char *store_sync_name(int level);

/* The store's state, with its cause copied to out ("" when healthy): STORE_HEALTHY;
 * STORE_REFUSING while commits fail for a transient cause (disk full), until one succeeds;
 * STORE_FAILED after a fatal error (I/O error, corruption, the file deleted or replaced),
 * until the collector stops. Any thread. */
enum store_state { STORE_HEALTHY = 0, STORE_REFUSING = 1, STORE_FAILED = 2 };
int store_failure(struct store *s, char *out, size_t n);

enum store_error_class { STORE_ERR_NONE = 0, STORE_ERR_TRANSIENT = 1, STORE_ERR_FATAL = 2 };
int store_error_class(int rc);

/* --- the write path (the source's thread) -------------------------------------------------- */

/* Queue an item for commit. The store owns it until it comes back. */
void store_submit(struct store *s, struct store_item *it);

/* Items committed (or refused) since the last call, in submission order. */
struct store_item *store_take_done(struct store *s);

/* Readable when store_take_done has items. */
int store_done_fd(const struct store *s);

/* Bytes of items submitted and not yet taken back. */
size_t store_pending_bytes(struct store *s);

/* --- stored events ------------------------------------------------------------------------- */

struct store_filter {
    char agent[256];       /* empty: all */
    char session[256];     /* empty: all */
    uint32_t kinds;        /* 0: all */
    uint32_t min_severity; /* logs below are left out */
    int64_t since;         /* Unix ns, inclusive */
    int64_t until;         /* Unix ns, inclusive */
    int64_t after_frame;   /* cursor: resume after event after_index of this frame */
    uint32_t after_index;
    uint8_t instance[16];
    int has_instance;
};

void store_filter_init(struct store_filter *f);

/* Parse a cursor "FRAME.INDEX" into f. Returns 0 or -1. */
int store_cursor_parse(struct store_filter *f, const char *s);

struct store_events;

/* An iterator over the events matching f, in storage order, on a reader of its own. On
 * failure err says why (for the HTTP answer). */
int store_events_open(struct store *s, const struct store_filter *f, struct store_events **out,
                      char *err, size_t errlen);

/* The next matching event: 1, 0 at the end, negative on a storage error. agent and instance
 * point into the iterator and stay valid until the next call. */
int store_events_next(struct store_events *q, tt__event *ev, const char **agent,
                      const uint8_t **instance);

/* The cursor after the last event returned, "FRAME.INDEX". */
void store_events_cursor(const struct store_events *q, char *out, size_t n);

void store_events_close(struct store_events *q);

/* Count the matching events; negative on error, with err set. */
int64_t store_events_count(struct store *s, const struct store_filter *f, char *err, size_t errlen);

/* --- readers: what the HTTP API lists ------------------------------------------------------ */

/* A read session (any thread, one at a time). store_read_open fails (negative) when the store
 * cannot be read at all. */
struct store_read;
int store_read_open(struct store *s, struct store_read **out);
void store_read_close(struct store_read *r);

/* Text as stored: p NULL when absent (SQL NULL), else n bytes (may hold NUL bytes). */
struct store_str {
    const char *p;
    size_t n;
};

/* Numbers that may be absent. */
struct store_i64 {
    int64_t v;
    int set;
};
struct store_f64 {
    double v;
    int set;
};

/* Row callbacks: what a row points to is valid during the call only. Returning nonzero stops
 * the walk (the list function then returns the rows delivered so far). List functions return
 * the number of rows delivered, or a negative error. */

struct store_agent {
    const char *name;
    int64_t first_seen_ns, last_seen_ns; /* last_seen: the latest of its instances */
    int64_t instances, events_stored, sessions;
    int64_t loss_gaps; /* proven loss: seqs below the highest stored that never arrived */
    int64_t reported_emitted, reported_dropped, reported_possibly_delivered; /* in band */
    int64_t open_alerts;
};
typedef int (*store_agent_fn)(void *ctx, const struct store_agent *a);
/* Every agent by name, or the one named (name non-NULL). */
int store_agents(struct store_read *r, const char *name, store_agent_fn fn, void *ctx);

/* The identity that owns agent name (the first to store under it; docs/security.md) into out
 * (n bytes): 1, or 0 when nobody stored under it yet, or a negative error. */
int store_agent_owner(struct store_read *r, const char *agent, char *out, size_t n);

struct store_session {
    const char *id, *agent;
    int64_t agent_key; /* the implementation's key of the agent, for the calls below */
    int64_t first_seen_ns, last_seen_ns, events, steps;
};
typedef int (*store_session_fn)(void *ctx, const struct store_session *s);
/* Sessions (of agent, or of all agents when NULL), most recently seen first, at most limit.
 * steps is set. */
int store_sessions(struct store_read *r, const char *agent, uint64_t limit, store_session_fn fn,
                   void *ctx);
/* The sessions named id (of agent, when non-NULL), at most limit of them (several agents may
 * use the same session name); steps is not set (0). */
int store_session_find(struct store_read *r, const char *id, const char *agent, uint64_t limit,
                       store_session_fn fn, void *ctx);
/* The agents that have a session named id, by name, at most limit. */
typedef int (*store_name_fn)(void *ctx, const char *name);
int store_session_agents(struct store_read *r, const char *id, uint64_t limit, store_name_fn fn,
                         void *ctx);

struct store_step {
    int64_t instance_key, step_id, parent_id;
    int kind, status, has_end; /* has_end: the step's end was stored */
    int64_t start_ns, duration_ns, result_bytes;
    const char *name, *query, *error; /* NULL when absent */
    /* The W3C trace context of the begin (since 0.5): trace_id NULL when absent. */
    const uint8_t *trace_id; /* 16 bytes, valid during the callback */
    uint64_t span_id, parent_span_id;
};
typedef int (*store_step_fn)(void *ctx, const struct store_step *s);
/* A session's steps, by start time then step id. */
int store_session_steps(struct store_read *r, int64_t agent_key, const char *session,
                        store_step_fn fn, void *ctx);
/* The ids of a session's responses, by start (or end) time then id, at most limit. */
typedef int (*store_id_fn)(void *ctx, uint64_t id);
int store_session_responses(struct store_read *r, int64_t agent_key, const char *session,
                            uint64_t limit, store_id_fn fn, void *ctx);

struct store_response {
    uint64_t id;
    int64_t instance_key; /* for store_response_tokens and store_response_guard */
    const char *agent;
    const uint8_t *instance; /* instance_len bytes (16 as ingest stores them) */
    size_t instance_len;
    struct store_str session, model, reason;
    const uint8_t *begin_body; /* the ResponseBegin message as sent, when has_begin_body */
    size_t begin_body_len;
    int has_begin_body;
    struct store_i64 begin_ns, end_ns, tokens, duration_ns;
    /* mean_logprob, min_logprob, perplexity, mean_entropy, low_confidence_share,
     * min_window_confidence; NaN is stored as absent */
    struct store_f64 figures[6];
    uint32_t verdict; /* 0 unless ended */
    int estimated;
};
struct store_response_filter {
    const char *session, *agent; /* NULL: any */
    uint64_t id;                 /* with by_id: only this response id (the newest) */
    int by_id;
    uint64_t limit;
};
typedef int (*store_response_fn)(void *ctx, const struct store_response *r);
/* Responses newest first (by start, or end when the start is missing). */
int store_responses(struct store_read *r, const struct store_response_filter *f,
                    store_response_fn fn, void *ctx);
/* A response's Tokens messages as sent, by first token index. */
typedef int (*store_blob_fn)(void *ctx, const void *p, size_t n);
int store_response_tokens(struct store_read *r, int64_t instance_key, uint64_t id, store_blob_fn fn,
                          void *ctx);
struct store_guard {
    int64_t token_index;
    uint32_t verdict;
    struct store_str reason;
    struct store_f64 value, threshold;
    struct store_i64 time_ns;
};
typedef int (*store_guard_fn)(void *ctx, const struct store_guard *g);
/* A response's guard decisions, in sequence order. */
int store_response_guard(struct store_read *r, int64_t instance_key, uint64_t id, store_guard_fn fn,
                         void *ctx);

/* --- alerts -------------------------------------------------------------------------------- */

/* One row per incident (alerting/monitor.h): a condition's first raise inserts it, its later
 * events update it (store_alert_put). */
struct store_alert {
    int64_t id, time_ns; /* time_ns: first raised */
    const char *agent, *detector, *type, *severity, *message;
    const char *session; /* "" or NULL: none */
    double value, threshold;
    int64_t acked_ns;       /* 0: open */
    const char *key, *unit; /* the condition's key, the value's unit ("" or NULL: none) */
    int resolved;           /* status: 0 firing, 1 resolved */
    int64_t last_ns, resolved_ns;
    uint64_t count;
    uint32_t flaps;
    uint64_t example_id; /* a response or step id (0: none) */
    int example_is_response;
};
enum store_alert_state { STORE_ALERTS_ALL = 0, STORE_ALERTS_OPEN = 1, STORE_ALERTS_ACKED = 2 };
struct store_alert_filter {
    const char *agent; /* NULL: any */
    int state;         /* enum store_alert_state */
    int64_t before;    /* ids below this */
    uint64_t limit;
    int status; /* 0 any, 1 firing, 2 resolved */
    int64_t id; /* 0: any; else only this incident */
};
typedef int (*store_alert_fn)(void *ctx, const struct store_alert *a);
/* Alerts newest first (by id). Text fields are never NULL in rows ("" when absent). */
int store_alerts(struct store_read *r, const struct store_alert_filter *f, store_alert_fn fn,
                 void *ctx);
/* Store a raised alert (any thread); its id into *id. id and acked_ns of al are ignored. */
int store_alert_add(struct store *s, const struct store_alert *al, int64_t *id);
/* Insert incident al->id, or update what an event moves (message, value, threshold, session,
 * status, last_ns, resolved_ns, count, flaps, example). acked_ns is ignored. Any thread.
 * al->id is the collector's own number for the incident; *id (when id is non-NULL) receives
 * the id the store keeps it under, the one the API shows and acknowledges: the same number
 * with SQLite, one from a sequence shared by every collector with PostgreSQL. */
int store_alert_put(struct store *s, const struct store_alert *al, int64_t *id);
/* The largest incident number this collector has handed out (0: none), for numbers that stay
 * unique across its restarts (al->id of store_alert_put). */
int64_t store_alert_max_id(struct store *s);
/* Acknowledge alert id at now_ns unless it already is (the first acknowledgement stays), then
 * hand the row to fn. -ENOENT when there is no such alert. */
int store_alert_ack(struct store *s, int64_t id, int64_t now_ns, store_alert_fn fn, void *ctx);

/* --- following every collector's commits ---------------------------------------------------
 * A store that several collectors share (PostgreSQL) lets each of them follow every batch
 * committed, by any collector, in commit order, so that each collector's detectors see every
 * agent's whole stream; and it lets one of them lead: only the leader raises incidents, so
 * each is raised once (docs/design.md, "Several collectors"). An implementation without it
 * (SQLite: one collector per store) answers -ENOTSUP at open, and the monitor watches the
 * collector's own commits. A follower is used by one thread at a time. */
struct store_follow;
int store_follow_open(struct store *s, struct store_follow **out, char *err, size_t errlen);
/* Hand fn, one at a time, up to max batches committed after the last one handed (at the first
 * call: after the last one committed when the follower opened), in commit order: each a
 * store_item with ident.agent, ident.instance, received_ns, batch and raw set, valid during
 * the call only (one buffer, reused). Returns how many, 0 when there is nothing new, negative
 * on a storage error (the follower reconnects at its next call and, having lost its
 * connection, no longer leads). */
typedef void (*store_follow_fn)(void *ctx, const struct store_item *it);
int store_follow_next(struct store_follow *f, int max, store_follow_fn fn, void *ctx);
/* Try to lead, without waiting: 1 leading (until the follower's connection is lost: the next
 * store_follow_next failing says so), 0 another collector leads, negative: cannot tell. */
int store_follow_lead(struct store_follow *f);
/* The leader takes over the firing incident (agent, detector, key) that an earlier leader
 * stored (this collector in an earlier run or lead included), as its own number local_id
 * (store_alert_put then updates it): 1 taken over, 0 there is none, negative on error. */
int store_follow_adopt(struct store_follow *f, const char *agent, const char *detector,
                       const char *key, int64_t local_id);
/* Then resolve at now_ns every incident still firing but this collector's numbers in keep
 * (n of them): what earlier leaders left firing and no detector holds any more. The count
 * resolved, or negative on error. */
int store_follow_settle(struct store_follow *f, const int64_t *keep, int n, int64_t now_ns);
void store_follow_close(struct store_follow *f);

/* --- hooks for retention (issue 13) and rollups (issue 15) --------------------------------- */

/*
 * Retention: store_retention_run removes stored data by age and by size, keeping some longer.
 *  - Whole batches go, never part of one, with the derived rows that came from them: a
 *    session's count of events goes down by the batch's events of that session (the session
 *    goes when it reaches 0, with its resolved or acknowledged alerts); a step, a response
 *    (with its tokens and guard decisions) goes with the first of its batches to go. Agents
 *    and instances stay, and so do their counters (loss is computed from them).
 *  - A batch's time is its newest event's, but never later than when it was received (an
 *    agent whose clock runs ahead, even by years, does not keep its batches for ever nor
 *    outlive fresh data). By age: batches whose time is before now_ns - max_age_ns. By size:
 *    then the oldest batches until the bytes the store uses on disk are at most
 *    max_bytes less a headroom (SQLite: pages in use plus the WAL; PostgreSQL: the live bytes
 *    of its tables, their files near it; docs/operations.md).
 *  - Keep longer: batches holding events of a response flagged or halted by the guard
 *    (verdict other than pass), or of a response whose min_window_confidence is below
 *    keep_below_confidence, are kept until keep_flagged_ns; batches holding events of a
 *    session that raised an alert until keep_alerted_ns (0: the same as max_age_ns). By size
 *    they go only once no ordinary batch is left.
 *  - Dedup survives pruning: a resend of a pruned range is acknowledged as STORE_DUP, never
 *    stored again (the implementation keeps a high-water mark of what it pruned per instance;
 *    a late batch below it that was never stored is acknowledged and not stored either).
 *  - It runs between commits, never inside a commit's transaction, in steps short enough not
 *    to hold acknowledgements back by more than one commit's time (SQLite: on the writer
 *    thread, where it queues itself while the caller waits; PostgreSQL: on the caller's thread
 *    and a connection of its own, each step under the writers' advisory lock). The report says
 *    what went.
 *  - A policy with no limit removes nothing and only fills the report (what went before).
 * Rollups: store_rollups answers per-agent series over [since_ns, until_ns): see "rollups"
 *  below.
 * An implementation that does not provide them leaves the entries NULL: the calls return
 * -ENOTSUP and change nothing. Both stores provide them: store/sqlite_retain.c,
 * sqlite_rollup.c; store/postgres_retain.c, postgres_rollup.c.
 */
struct store_retention {
    int64_t max_age_ns;           /* 0: no age limit */
    uint64_t max_bytes;           /* 0: no size limit */
    int64_t keep_flagged_ns;      /* flagged, halted or low-confidence responses; 0: max_age_ns */
    int64_t keep_alerted_ns;      /* sessions with an alert; 0: as max_age_ns */
    double keep_below_confidence; /* min_window_confidence below this is kept; 0: none */
};
struct store_retention_report {
    uint64_t batches, events, bytes; /* removed by this run (bytes: as stored) */
    uint64_t kept_batches;           /* of the removed batches, those kept longer on purpose */
    uint64_t responses, sessions;    /* derived rows removed */
    int64_t oldest_kept_ns;          /* the oldest batch's newest event still stored; 0 if none */
    int64_t pruned_through_ns;       /* every event ever removed is at or before this; 0: none */
    uint64_t disk_bytes;             /* the store's files on disk after the run */
    uint64_t used_bytes;             /* of which in use (what max_bytes limits) */
    uint64_t kept_now;               /* batches held now because they are kept on purpose */
};
int store_retention_run(struct store *s, const struct store_retention *policy, int64_t now_ns,
                        struct store_retention_report *out);
/* For both stores' retention: whether ev is one of a response's events (its begin, end,
 * tokens or guard verdict); its response id in *id and the verdict it carries (the end's or
 * the guard's, else 0) in *verdict. */
int store_event_response(const tt__event *ev, uint64_t *id, uint32_t *verdict);

/* --- rollups (issue 15) ------------------------------------------------------------------
 *
 * Per agent and per bucket of step_s seconds aligned on Unix time, counted from committed
 * events only (each (instance, seq) once) and maintained inside the writer's transaction, so
 * that a query costs in buckets, never in events. One row per (agent, bucket, metric, key):
 *   STORE_ROLLUP_EVENTS     n events (by event time); key ""
 *   STORE_ROLLUP_RESPONSES  n ended responses, errors = flagged or halted (verdict not ok), sum
 *                           and hist of their confidence exp(mean log-prob); key ""
 *   STORE_ROLLUP_TOKENS     n tokens of the ended responses; key ""
 *   STORE_ROLLUP_STEPS      n ended steps of one kind (key: "tool", "api", ...), errors = status
 *                           not ok, sum and hist of their duration in ns
 *   STORE_ROLLUP_TOOLS      the same per step name (key), for the external-call kinds (tool,
 *                           api, retrieval)
 * A step or response counts in the bucket of its end. Quantiles come from the hist: a
 * log-scale histogram (STORE_HIST_SUB bins per octave, so a quantile is exact to 1/2 bin,
 * within 4.4%).
 * Stored levels: STORE_ROLLUP_LEVELS, each kept STORE_ROLLUP_KEEP seconds (0: as long as the
 * store; finer levels are pruned by the writer, at most once a minute). A query names the width of the buckets it wants (bucket_s, a
 * multiple of one stored level) and gets the stored rows merged into them.
 */
enum store_rollup_metric {
    STORE_ROLLUP_EVENTS = 0,
    STORE_ROLLUP_RESPONSES = 1,
    STORE_ROLLUP_TOKENS = 2,
    STORE_ROLLUP_STEPS = 3,
    STORE_ROLLUP_TOOLS = 4,
};
/* clang-format off */
#define STORE_ROLLUP_LEVELS {1, 10, 60, 300, 3600}
#define STORE_ROLLUP_KEEP {6 * 3600, 2 * 86400, 0, 0, 0}
/* clang-format on */
#define STORE_ROLLUP_N_LEVELS 5
#define STORE_ROLLUP_KEY_MAX 128 /* longer step names are cut */

#define STORE_HIST_SUB 8      /* bins per octave */
#define STORE_HIST_OFFSET 320 /* bin of 2^0 = 1 */
#define STORE_HIST_BINS 704   /* 2^-40 .. 2^48 */
struct store_hist {
    uint64_t total;
    uint32_t count[STORE_HIST_BINS];
};
/* The bin of v (v <= 0 and below the range: bin 0; above: the last). */
int store_hist_bin(double v);
void store_hist_add(struct store_hist *h, double v, uint64_t n);
/* The value of quantile q (0..1): the geometric middle of the bin that holds it; NaN if empty. */
double store_hist_quantile(const struct store_hist *h, double q);
/* The same for n (at most 16) quantiles q[] in ascending order, in one pass, into out[]. */
void store_hist_quantiles(const struct store_hist *h, const double *q, int n, double *out);
/* Encoded form (sparse: varint bin, varint count pairs): at most STORE_HIST_BINS * 15 bytes. */
size_t store_hist_encode(const struct store_hist *h, uint8_t *out, size_t cap);
/* Add an encoded histogram into h: 0, or -1 when p is malformed (h then partly added). */
int store_hist_merge_encoded(struct store_hist *h, const uint8_t *p, size_t n);

struct store_rollup_query {
    const char *agent; /* NULL: every agent */
    int64_t since_ns, until_ns;
    int step_s;   /* a stored level */
    int bucket_s; /* a multiple of step_s: the width of the rows answered */
};
struct store_rollup {
    const char *agent;
    int64_t bucket_ns; /* the bucket's start */
    int metric;        /* enum store_rollup_metric */
    const char *key;   /* "" when the metric has none */
    uint64_t n, errors;
    double sum;
    const struct store_hist *hist; /* NULL for EVENTS and TOKENS */
};
typedef int (*store_rollup_fn)(void *ctx, const struct store_rollup *row);
/* Rows by agent, then bucket (metric and key in no order within a bucket); buckets without
 * rows are left out. -EINVAL for a step_s that is not a level or a bucket_s that is not a
 * multiple of it. */
int store_rollups(struct store_read *r, const struct store_rollup_query *q, store_rollup_fn fn,
                  void *ctx);

/* --- implementations ----------------------------------------------------------------------- */

/*
 * What an implementation provides. Each struct store (and store_read, store_events) an
 * implementation returns starts with the base below, so that the functions above can find
 * the table. Every entry is required except the two hooks (NULL: -ENOTSUP).
 */
struct store_ops {
    const char *scheme; /* the URL's scheme: "sqlite" */
    const char *alias;  /* another scheme naming it ("postgresql"), or NULL */
    /* What this implementation does not provide yet (its entries answer -ENOTSUP), for the
     * start-up log; NULL: everything. */
    const char *lacks;
    int (*open)(struct store **out, const struct store_config *cfg, char *err, size_t errlen);
    int (*start)(struct store *s);
    void (*close)(struct store *s);
    void (*describe)(const struct store *s, char *out, size_t n);
    int (*failure)(struct store *s, char *out, size_t n);

    int (*events_open)(struct store *s, const struct store_filter *f, struct store_events **out,
                       char *err, size_t errlen);
    int (*events_next)(struct store_events *q, tt__event *ev, const char **agent,
                       const uint8_t **instance);
    void (*events_cursor)(const struct store_events *q, char *out, size_t n);
    void (*events_close)(struct store_events *q);
    int64_t (*events_count)(struct store *s, const struct store_filter *f, char *err,
                            size_t errlen);

    int (*read_open)(struct store *s, struct store_read **out);
    void (*read_close)(struct store_read *r);
    int (*agents)(struct store_read *r, const char *name, store_agent_fn fn, void *ctx);
    int (*agent_owner)(struct store_read *r, const char *agent, char *out, size_t n);
    int (*sessions)(struct store_read *r, const char *agent, uint64_t limit, store_session_fn fn,
                    void *ctx);
    int (*session_find)(struct store_read *r, const char *id, const char *agent, uint64_t limit,
                        store_session_fn fn, void *ctx);
    int (*session_agents)(struct store_read *r, const char *id, uint64_t limit, store_name_fn fn,
                          void *ctx);
    int (*session_steps)(struct store_read *r, int64_t agent_key, const char *session,
                         store_step_fn fn, void *ctx);
    int (*session_responses)(struct store_read *r, int64_t agent_key, const char *session,
                             uint64_t limit, store_id_fn fn, void *ctx);
    int (*responses)(struct store_read *r, const struct store_response_filter *f,
                     store_response_fn fn, void *ctx);
    int (*response_tokens)(struct store_read *r, int64_t instance_key, uint64_t id,
                           store_blob_fn fn, void *ctx);
    int (*response_guard)(struct store_read *r, int64_t instance_key, uint64_t id,
                          store_guard_fn fn, void *ctx);
    int (*alerts)(struct store_read *r, const struct store_alert_filter *f, store_alert_fn fn,
                  void *ctx);
    int (*alert_add)(struct store *s, const struct store_alert *al, int64_t *id);
    int (*alert_ack)(struct store *s, int64_t id, int64_t now_ns, store_alert_fn fn, void *ctx);
    int (*alert_put)(struct store *s, const struct store_alert *al, int64_t *id);
    int64_t (*alert_max_id)(struct store *s);

    /* following: NULL when the store is one collector's own */
    int (*follow_open)(struct store *s, struct store_follow **out, char *err, size_t errlen);
    int (*follow_next)(struct store_follow *f, int max, store_follow_fn fn, void *ctx);
    int (*follow_lead)(struct store_follow *f);
    int (*follow_adopt)(struct store_follow *f, const char *agent, const char *detector,
                        const char *key, int64_t local_id);
    int (*follow_settle)(struct store_follow *f, const int64_t *keep, int n, int64_t now_ns);
    void (*follow_close)(struct store_follow *f);

    /* hooks: NULL until implemented */
    int (*retention_run)(struct store *s, const struct store_retention *policy, int64_t now_ns,
                         struct store_retention_report *out);
    int (*rollups)(struct store_read *r, const struct store_rollup_query *q, store_rollup_fn fn,
                   void *ctx);
};

/* The bases (first members of each implementation's structs). */
struct store_queue;
struct store {
    const struct store_ops *ops;
    /* The source-to-writer hand-over (queue.h), set by open: store_submit, store_take_done,
     * store_done_fd and store_pending_bytes are its, the same for every implementation. */
    struct store_queue *queue;
};
struct store_read {
    struct store *store;
};
struct store_events {
    const struct store_ops *ops;
};
struct store_follow {
    const struct store_ops *ops;
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_postgres_ops;

/* What the open store does not provide ("" or NULL: everything), for the start-up log. */
const char *store_lacks(const struct store *s);

/* url with the password of its user information (scheme://user:PASSWORD@...) blotted out,
 * for messages (n bytes). */
void store_url_redact(const char *url, char *out, size_t n);

#endif

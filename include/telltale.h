/*
 * telltale.h - the public API of libtelltale, the client that an agent embeds to stream its
 * logs, metrics, execution path and token confidence to a telltale collector.
 *
 * The C header (telltale.hpp wraps it for C++17). Every handle is opaque; every name starts
 * with tt_ or TT_.
 * The rules that hold for every function, unless its comment says otherwise:
 *
 * - Errors: functions return int, 0 on success and a negative TT_E* code on failure; the codes
 *   equal -errno where the meaning matches. tt_strerror() names them.
 * - Ownership: arguments are borrowed for the duration of the call; the library copies what it
 *   keeps. Memory the library returns is released with tt_free(). Release functions accept NULL.
 * - Threads: a tt_client may be used from any number of threads at once. Event calls (tt_log,
 *   tt_metric, tt_step_begin, tt_step_end, tt_response_token..., TT_LOG) never block, never
 *   allocate, never make a system call and never log after a thread's first event (and a
 *   TT_LOG call site's first call, which registers the site); when the thread's ring
 *   is full the event is dropped and counted (tt_stats_get). tt_close must not race with other
 *   calls on the same client.
 * - Signals: the library installs no signal handler and blocks signals in its worker thread.
 *   Event calls are not async-signal-safe: do not call them from a signal handler.
 * - Fork: after fork() the child's client starts afresh (new instance id, empty rings, its own
 *   worker started at its first event); it never sends or spools the parent's events.
 *
 * docs/api.md is the reference; each declaration below also states the version it appeared in.
 */
#ifndef TELLTALE_H
#define TELLTALE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TT_BUILDING_LIBRARY) && defined(__GNUC__)
#define TT_API __attribute__((visibility("default")))
#else
#define TT_API
#endif

#define TT_VERSION_MAJOR 0
#define TT_VERSION_MINOR 7
#define TT_VERSION_PATCH 0
#define TT_VERSION_STRING "0.7.0"

/* ---------------------------------------------------------------------------------------------
 * Errors (since 0.1)
 */
enum {
    TT_OK = 0,
    TT_EPERM = -1,       /* operation not permitted (e.g. spool directory owned by another user) */
    TT_ENOENT = -2,      /* no such file or directory */
    TT_EIO = -5,         /* input/output error */
    TT_E2BIG = -7,       /* event larger than max_event_bytes: dropped, counted as too_large */
    TT_EAGAIN = -11,     /* try again */
    TT_ENOMEM = -12,     /* out of memory */
    TT_EACCES = -13,     /* permission denied */
    TT_EEXIST = -17,     /* already exists */
    TT_EINVAL = -22,     /* invalid argument */
    TT_ENOSPC = -28,     /* no space left on device */
    TT_ENOBUFS = -105,   /* the thread's ring is full: event dropped, counted as buffer_full */
    TT_EPROTO = -71,     /* protocol error */
    TT_ESHUTDOWN = -108, /* the client is closing or closed: event dropped, counted as closed */
    TT_ETIMEDOUT = -110, /* deadline expired */
    TT_ECONNREFUSED = -111, /* connection refused */
    TT_EBLOCKED = -1000     /* a compliance rule blocked the step (tt_step_begin). Since 0.3. */
};

/* A static, human-readable description of an error code; never NULL. Thread-safe. Since 0.1. */
TT_API const char *tt_strerror(int err);

/* The library version as "MAJOR.MINOR.PATCH"; static storage. Since 0.1. */
TT_API const char *tt_version(void);

/* Release memory that the library returned to the caller. Accepts NULL. Since 0.1. */
TT_API void tt_free(void *p);

/* ---------------------------------------------------------------------------------------------
 * Configuration (since 0.1)
 *
 * A tt_config is a set of string key/value settings with defaults. Keys (docs/api.md lists
 * them all with their defaults and limits):
 *   endpoint            "unix:PATH", "tcp://HOST:PORT", "tls://HOST:PORT", or (since 0.6)
 *                       "nats://HOST:PORT[,HOST:PORT...]"   default tcp://127.0.0.1:7370
 *                       nats://: publish to NATS JetStream (docs/api.md, docs/wire-format.md):
 *                       each batch one message whose PubAck is its acknowledgement, resent
 *                       with the same Nats-Msg-Id until acknowledged; orders arrive on the
 *                       agent's control subject. No user:password in the URL (TT_EINVAL): the
 *                       token goes in nats_token_file. A forked child's copy does not
 *                       publish (libnats is not fork-safe): its events go to the spool or
 *                       are counted at close (tt_connection_error says why).
 *   nats_subject        nats://: ingest subject prefix      default telltale.ingest
 *   nats_token_file     nats://: the NATS token, a file group and others cannot read (else
 *                       tt_config_set: TT_EINVAL with the reason; tt_open: TT_EACCES)
 *   agent               agent name                         default the program name
 *   token               ingest token (sent at connect)     default none
 *   ring_bytes          per-thread ring size, power of 2   default 1048576 (1 MiB)
 *   max_threads         rings at most (one per thread)     default 256
 *   max_event_bytes     largest single event               default 65536
 *   batch_bytes         flush a batch at this raw size     default 262144
 *   flush_interval_ms   flush a batch at this age          default 5 (at most 10 recommended)
 *   window_bytes        sent-but-unacked budget            default 16777216
 *   ack_timeout_ms      half-open detection                default 5000
 *   backoff_min_ms / backoff_max_ms  reconnect backoff     default 50 / 5000
 *   spool_dir           disk spool directory (off if unset)
 *   spool_max_bytes     spool cap                          default 1073741824
 *   spool_policy        "drop_newest" or "drop_oldest"     default drop_oldest
 *   replay_bytes_per_s  spool replay pace                  default 33554432 (32 MiB/s)
 *   compression_level   zstd level, 0 = no compression     default 1
 *   guard.token_min_prob, guard.window_min_confidence, guard.window,
 *   guard.response_min_confidence, guard.action        the guard policy (default off)
 *   response.topk, response.topk_encoding, response.chunk_tokens,
 *   response.low_confidence_prob, response.sample_budget_bytes, response.sample_every
 *
 * The environment overrides nothing by itself; tt_config_from_env() reads TELLTALE_<KEY>
 * (upper case, '.' as '_') for every key, for programs that want that.
 */
typedef struct tt_config tt_config;

/* Create a configuration holding the defaults. *out is NULL on failure. Since 0.1. */
TT_API int tt_config_new(tt_config **out);

/* Set one key. Returns TT_EINVAL for an unknown key or a value out of range, and leaves the
 * configuration unchanged; tt_config_error() then says why. Since 0.1. */
TT_API int tt_config_set(tt_config *cfg, const char *key, const char *value);

/* Apply TELLTALE_<KEY> environment variables. Returns the first error, as tt_config_set. */
TT_API int tt_config_from_env(tt_config *cfg);

/* The current value of a key as a string (borrowed, valid until the next set or free), or NULL
 * for an unknown key. Since 0.1. */
TT_API const char *tt_config_get(const tt_config *cfg, const char *key);

/* The reason of the last failed set on this configuration, or "" if none. Since 0.1. */
TT_API const char *tt_config_error(const tt_config *cfg);

/* Release a configuration. Accepts NULL. Since 0.1. */
TT_API void tt_config_free(tt_config *cfg);

/* ---------------------------------------------------------------------------------------------
 * Client lifecycle (since 0.1)
 */
typedef struct tt_client tt_client;

/* Open a client with cfg (copied; NULL means all defaults). Starts the worker thread; the
 * connection is made in the background, so an unreachable collector is not an error here.
 * Errors: TT_EINVAL (bad configuration), TT_ENOMEM, TT_EPERM / TT_EACCES (spool directory;
 * since 0.6 also a nats_token_file that group or others may read), or another negative
 * errno. *out is NULL on failure. Since 0.1. */
TT_API int tt_open(tt_client **out, const tt_config *cfg);

/* Flush and close within one deadline of timeout_ms milliseconds, whatever the network does:
 * what is still unsent then goes to the spool (if configured) or is counted as dropped
 * (shutdown). Returns 0 if everything emitted was acknowledged, TT_ETIMEDOUT if the deadline
 * expired first (the client is closed all the same), and frees the client. Accepts NULL.
 * Since 0.1. */
TT_API int tt_close(tt_client *c, uint32_t timeout_ms);

/* Ask the worker to send what is buffered now and wait up to timeout_ms for the collector's
 * acknowledgement of every event emitted before the call. Returns 0 or TT_ETIMEDOUT. Blocks
 * the caller (it is not an event call). Since 0.1. */
TT_API int tt_flush(tt_client *c, uint32_t timeout_ms);

/* ---------------------------------------------------------------------------------------------
 * Attributes (since 0.1): key/value pairs attached to an event, copied into the event.
 */
typedef enum tt_attr_type {
    TT_ATTR_STR = 1,
    TT_ATTR_INT = 2,
    TT_ATTR_DOUBLE = 3,
    TT_ATTR_BOOL = 4
} tt_attr_type;

typedef struct tt_attr {
    const char *key;
    tt_attr_type type;
    union {
        const char *s;
        int64_t i;
        double d;
        int b;
    } v;
} tt_attr;

#ifndef __cplusplus
#define TT_STR(k, x) ((tt_attr){.key = (k), .type = TT_ATTR_STR, .v.s = (x)})
#define TT_INT(k, x) ((tt_attr){.key = (k), .type = TT_ATTR_INT, .v.i = (x)})
#define TT_DOUBLE(k, x) ((tt_attr){.key = (k), .type = TT_ATTR_DOUBLE, .v.d = (x)})
#define TT_BOOL(k, x) ((tt_attr){.key = (k), .type = TT_ATTR_BOOL, .v.b = (x)})
#endif

/* ---------------------------------------------------------------------------------------------
 * Events (since 0.1). Every event call is non-blocking and returns 0 when the event is in the
 * ring, TT_ENOBUFS when the ring was full, TT_E2BIG when the event exceeds max_event_bytes,
 * TT_ESHUTDOWN after tt_close began, TT_EINVAL for a NULL client or bad arguments. A dropped
 * event is counted by cause. session may be NULL (no session). Strings are UTF-8.
 */
typedef enum tt_severity {
    TT_TRACE = 1,
    TT_DEBUG = 5,
    TT_INFO = 9,
    TT_WARN = 13,
    TT_ERROR = 17,
    TT_FATAL = 21
} tt_severity;

/* A log record. Since 0.1. */
TT_API int tt_log(tt_client *c, const char *session, tt_severity severity, const char *message,
                  const tt_attr *attrs, size_t nattrs);

/* ---------------------------------------------------------------------------------------------
 * Log call sites (since 0.7): TT_LOG is tt_log for a call site whose message and attribute
 * keys are string literals, for the hottest loops. The site's message, keys and types are
 * registered once, at its first call; every call after that writes only the session and the
 * values in the ring, and the library's worker puts the rest back: the event stored is the
 * one tt_log would have stored, with the same counters, limits, drops and compliance policy.
 *
 *   TT_LOG(c, session, TT_INFO, "request done", TT_LOG_INT("tokens", n),
 *          TT_LOG_DOUBLE("latency_ms", ms), TT_LOG_STR("model", model));
 *
 * The message and each key must be string literals (checked at compile time); values are any
 * expressions, evaluated once. Up to TT_LOG_MAX_ATTRS attributes. The first call of a site
 * allocates its registration (a few hundred bytes, kept until the process ends); later calls
 * never allocate, never block and make no system call, like tt_log. C only (it needs a GNU
 * statement expression: gcc or clang); C++ uses tt_log. Returns what tt_log returns.
 */
#define TT_LOG_MAX_ATTRS 8

typedef union tt_attr_value {
    const char *s;
    int64_t i;
    double d;
    int b;
} tt_attr_value;

/* A call site, made by TT_LOG as a static object: its fields are the library's. */
typedef struct tt_log_site {
    uint32_t abi; /* TT_LOG_SITE_ABI */
    uint32_t nattrs;
    const char *message;
    const char *const *keys;
    const unsigned char *types; /* tt_attr_type of each */
    uint32_t id;                /* the registration, set at the first call */
    uint32_t fixed;             /* bytes of the event but the session and strings: with id */
    uint32_t strs;              /* how many attributes are strings: with id */
} tt_log_site;

#define TT_LOG_SITE_ABI 1

/* The call behind TT_LOG: values holds site->nattrs values, in the site's order and types.
 * Since 0.7. */
TT_API int tt_log_at(tt_client *c, tt_log_site *site, const char *session, tt_severity severity,
                     const tt_attr_value *values);

#if !defined(__cplusplus) && defined(__GNUC__)
#define TT_LOG_STR(k, x) (TT_ATTR_STR, k, x)
#define TT_LOG_INT(k, x) (TT_ATTR_INT, k, x)
#define TT_LOG_DOUBLE(k, x) (TT_ATTR_DOUBLE, k, x)
#define TT_LOG_BOOL(k, x) (TT_ATTR_BOOL, k, x)

#define TT_LOG(c, session, severity, ...)                                                          \
    __extension__({                                                                                \
        static const char *const tt__log_keys[] = {TT__LOG_EACH(TT__LOG_KEY, __VA_ARGS__) 0};      \
        static const unsigned char tt__log_types[] = {TT__LOG_EACH(TT__LOG_TYPE, __VA_ARGS__) 0};  \
        static tt_log_site tt__log_site = {TT_LOG_SITE_ABI,                                        \
                                           TT__LOG_NATTRS(__VA_ARGS__),                            \
                                           "" TT__LOG_FIRST(__VA_ARGS__, 0),                       \
                                           tt__log_keys,                                           \
                                           tt__log_types,                                          \
                                           0,                                                      \
                                           0,                                                      \
                                           0};                                                     \
        const tt_attr_value tt__log_values[] = {TT__LOG_EACH(TT__LOG_VALUE, __VA_ARGS__){0}};      \
        tt_log_at((c), &tt__log_site, (session), (severity), tt__log_values);                      \
    })

/* The machinery of TT_LOG: the message, then up to 8 attributes, each (type, key, value). */
#define TT__LOG_FIRST(m, ...) m
#define TT__LOG_NATTRS(...) TT__LOG_NTH(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0, _)
#define TT__LOG_NTH(_m, _1, _2, _3, _4, _5, _6, _7, _8, n, ...) n
#define TT__LOG_CAT(a, b) TT__LOG_CAT_(a, b)
#define TT__LOG_CAT_(a, b) a##b
#define TT__LOG_EACH(f, ...) TT__LOG_CAT(TT__LOG_EACH_, TT__LOG_NATTRS(__VA_ARGS__))(f, __VA_ARGS__)
#define TT__LOG_EACH_0(f, m)
#define TT__LOG_EACH_1(f, m, a) f a
#define TT__LOG_EACH_2(f, m, a, ...) f a TT__LOG_EACH_1(f, m, __VA_ARGS__)
#define TT__LOG_EACH_3(f, m, a, ...) f a TT__LOG_EACH_2(f, m, __VA_ARGS__)
#define TT__LOG_EACH_4(f, m, a, ...) f a TT__LOG_EACH_3(f, m, __VA_ARGS__)
#define TT__LOG_EACH_5(f, m, a, ...) f a TT__LOG_EACH_4(f, m, __VA_ARGS__)
#define TT__LOG_EACH_6(f, m, a, ...) f a TT__LOG_EACH_5(f, m, __VA_ARGS__)
#define TT__LOG_EACH_7(f, m, a, ...) f a TT__LOG_EACH_6(f, m, __VA_ARGS__)
#define TT__LOG_EACH_8(f, m, a, ...) f a TT__LOG_EACH_7(f, m, __VA_ARGS__)
#define TT__LOG_KEY(t, k, x) "" k,
#define TT__LOG_TYPE(t, k, x) t,
#define TT__LOG_VALUE(t, k, x) TT__LOG_VALUE_##t(x),
#define TT__LOG_VALUE_TT_ATTR_STR(x)                                                               \
    {                                                                                              \
        .s = (x)                                                                                   \
    }
#define TT__LOG_VALUE_TT_ATTR_INT(x)                                                               \
    {                                                                                              \
        .i = (x)                                                                                   \
    }
#define TT__LOG_VALUE_TT_ATTR_DOUBLE(x)                                                            \
    {                                                                                              \
        .d = (x)                                                                                   \
    }
#define TT__LOG_VALUE_TT_ATTR_BOOL(x)                                                              \
    {                                                                                              \
        .b = (x)                                                                                   \
    }
#endif

typedef enum tt_metric_kind {
    TT_COUNTER = 1,   /* a delta to add */
    TT_GAUGE = 2,     /* a current value */
    TT_HISTOGRAM = 3, /* one sample of a distribution */
    TT_SCORE = 4      /* a named score of one response (see tt_score). Since 0.2. */
} tt_metric_kind;

/* A metric sample. unit may be NULL ("1"). Since 0.1. */
TT_API int tt_metric(tt_client *c, const char *session, tt_metric_kind kind, const char *name,
                     double value, const char *unit, const tt_attr *attrs, size_t nattrs);

/* ---------------------------------------------------------------------------------------------
 * Execution path (since 0.1): steps of reasoning, tool calls and API calls. A tt_step lives in
 * the caller's storage between begin and end; the library measures the latency between them.
 * Steps nest through the parent argument (NULL for a root step).
 */
typedef enum tt_step_kind {
    TT_STEP_REASONING = 1, /* a reasoning or planning step */
    TT_STEP_TOOL = 2,      /* a tool call (execute_tool) */
    TT_STEP_API = 3,       /* a call to an external API */
    TT_STEP_LLM = 4,       /* a model call (chat / completion) */
    TT_STEP_AGENT = 5,     /* an agent invocation (invoke_agent) */
    TT_STEP_RETRIEVAL = 6, /* a retrieval or database query */
    TT_STEP_OTHER = 7
} tt_step_kind;

typedef enum tt_status {
    TT_STATUS_OK = 0,
    TT_STATUS_ERROR = 1,
    TT_STATUS_TIMEOUT = 2,
    TT_STATUS_CANCELLED = 3
} tt_status;

typedef struct tt_step {
    uint64_t id;     /* non-zero once begun; unique within the client instance */
    uint64_t parent; /* the parent's id or 0 */
    uint64_t start;  /* private: start tick */
} tt_step;

/* Begin a step: kind, name (the tool or step name) and query (the tool's query or arguments,
 * may be NULL). Fills *step even when the event is dropped, so the matching tt_step_end works.
 * Since 0.1. */
TT_API int tt_step_begin(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                         const char *session, const char *name, const char *query);

/* End a step with its status, the size of its result in bytes (or -1 if unknown) and an
 * optional error text. The latency is measured from tt_step_begin. Since 0.1. */
TT_API int tt_step_end(tt_client *c, const tt_step *step, tt_status status, int64_t result_bytes,
                       const char *error);

/* Record a step that already ran: begun duration_ns before this call, ended now with status,
 * result size (-1 unknown) and optional error, as tt_step_begin then tt_step_end would have
 * (the same events; compliance rules apply as at tt_step_begin, and a step they block is
 * recorded as cancelled with TT_EBLOCKED returned: too late to stop it). For programs that learn
 * of a call after it ended (telltale emit's one-line steps). duration_ns is 0 to
 * TT_STEP_RECORD_MAX_NS (7 days), else TT_EINVAL; the first call within 10 ms of the first
 * tt_open may wait for the rest of those 10 ms (the clock's rate is measured). Since 0.4. */
#define TT_STEP_RECORD_MAX_NS (7 * 24 * 3600 * 1000000000LL)
TT_API int tt_step_record(tt_client *c, const tt_step *parent, tt_step_kind kind,
                          const char *session, const char *name, const char *query,
                          tt_status status, int64_t duration_ns, int64_t result_bytes,
                          const char *error);

/* ---------------------------------------------------------------------------------------------
 * Trace context (since 0.5): every step and response carries a W3C trace id (16 bytes), its own
 * span id (8 bytes, never 0) and its parent's span id, so that telltale's spans join the
 * application's traces (docs/api.md, "Trace context"). A traceparent is the W3C header value
 * "00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>", checked strictly: lowercase hex,
 * ids not all zero, version 00 exactly 55 characters, version ff refused (TT_EINVAL).
 *
 * A step's trace id comes from, in order: the traceparent of tt_step_begin_ctx (the step is then
 * a child of that span); its parent step's (the parent must still be open; the child's parent
 * span is the parent step's span); for a root step, the default of its session, then the
 * client-wide default (tt_session_traceparent); else a new trace id per root step. A response
 * likewise (tt_response_begin_ctx; its step; the defaults; a new trace). Span ids: a step's is
 * tt_step_span_id, a response's is its tt_response_id. Nothing here changes the event calls'
 * rules: tt_step_begin_ctx neither allocates nor makes a system call.
 */

/* tt_step_begin with a traceparent (NULL: as tt_step_begin). TT_EINVAL for an invalid one (no
 * event is then emitted and step->id is 0). Since 0.5. */
TT_API int tt_step_begin_ctx(tt_client *c, tt_step *step, const tt_step *parent,
                             const char *traceparent, tt_step_kind kind, const char *session,
                             const char *name, const char *query);

/* The span id of a begun step (0 for NULL or a step not begun): for the application's own
 * children of the step, as in "00-<trace id>-<span id>-01". Since 0.5. */
TT_API uint64_t tt_step_span_id(const tt_client *c, const tt_step *step);

/* Set the default traceparent of session's root steps and responses (session NULL or "": every
 * session without its own), or clear it with traceparent NULL. The library's worker looks the
 * default up when it sends a root step (within flush_interval_ms of its begin): it applies to
 * every root begun after the call, and a change or clear also reaches roots begun but not yet
 * sent (tt_flush first to keep them out). Not an event call (takes a lock; the first
 * allocates). Returns 0, TT_EINVAL (invalid traceparent, session over 255 bytes), TT_ENOSPC (64
 * sessions have defaults already), TT_ENOMEM. Since 0.5. */
TT_API int tt_session_traceparent(tt_client *c, const char *session, const char *traceparent);

/* 0 if traceparent is valid as above, else TT_EINVAL. Since 0.5. */
TT_API int tt_traceparent_check(const char *traceparent);

/* ---------------------------------------------------------------------------------------------
 * Statistics (since 0.1). At quiescence (nothing emitted, everything settled):
 *   emitted = acked + possibly_delivered + buffered + sum(dropped)
 * where buffered counts events still held by the library (rings, batch, unacked window, spool).
 */
typedef enum tt_drop_cause {
    TT_DROP_BUFFER_FULL = 0,   /* the thread's ring was full */
    TT_DROP_SPOOL_FULL = 1,    /* the spool was at its cap (per spool_policy) */
    TT_DROP_SPOOL_ERROR = 2,   /* the spool could not be written */
    TT_DROP_SPOOL_CORRUPT = 3, /* a spool record failed its check when read back */
    TT_DROP_TOO_LARGE = 4,     /* the event exceeded max_event_bytes */
    TT_DROP_SHUTDOWN = 5,      /* unsent at the close deadline without a spool */
    TT_DROP_OOM = 6,           /* memory could not be obtained */
    TT_DROP_CLOSED = 7,        /* emitted after tt_close began */
    TT_DROP_REJECTED = 8,      /* the collector permanently rejected the batch */
    TT_DROP_NO_RING = 9,       /* more threads than max_threads */
    TT_DROP__COUNT = 10
} tt_drop_cause;

typedef struct tt_stats {
    uint64_t emitted;            /* event calls made (accepted or dropped) */
    uint64_t sent;               /* events written to a connection at least once */
    uint64_t acked;              /* events the collector acknowledged as stored */
    uint64_t possibly_delivered; /* sent, never acknowledged, given up on */
    uint64_t buffered;           /* held by the library now */
    uint64_t spooled;            /* held in the spool now (part of buffered) */
    uint64_t dropped[TT_DROP__COUNT];
    uint64_t dropped_total;
    uint64_t frames_sent;
    uint64_t bytes_sent; /* framed, compressed bytes written */
    uint64_t reconnects; /* connections made after the first */
    uint64_t connected;  /* 1 while a connection is up */
    /* Events of earlier processes of the same agent found in the spool and taken over (since
     * 0.1): they settle into acked or dropped like this process's own. At quiescence,
     * emitted + inherited = acked + possibly_delivered + buffered + dropped_total. */
    uint64_t inherited;
    /* Compliance (since 0.3): steps blocked and flagged by the policy's rules, and sensitive
     * values masked before encoding (see tt_comply_policy_set). */
    uint64_t comply_blocked;
    uint64_t comply_flagged;
    uint64_t comply_masked;
    /* TLS handshakes that failed (since 0.1): the collector's certificate refused (unknown
     * CA, expired, another host's name), our client certificate refused, or credentials that
     * could not be loaded. The reason of the latest: tt_connection_error. */
    uint64_t tls_failures;
} tt_stats;

/* Snapshot the counters into *out; size is sizeof(tt_stats) as compiled by the caller (fields
 * the library does not know are zeroed). The worker's counters (in flight, acknowledged, spooled,
 * dropped by cause) are read between two of its cycles, so they add up with each other; emitted
 * and ring drops move with the emitting threads and are exact at quiescence. May wait up to
 * 100 ms for the worker to finish a cycle. Since 0.1. */
TT_API int tt_stats_get(tt_client *c, tt_stats *out, size_t size);

/* tt_close, and the final counters in *out (size as for tt_stats_get; out may be NULL): what
 * was acknowledged, spooled for the next process, or dropped by the shutdown. Since 0.1. */
TT_API int tt_close_stats(tt_client *c, uint32_t timeout_ms, tt_stats *out, size_t size);

/* The name of a drop cause ("buffer_full", ...) or "unknown". Since 0.1. */
TT_API const char *tt_drop_cause_name(int cause);

/* Why the latest connection attempt failed, as text ("tls: the collector's certificate was
 * refused: ...", "connection refused", "hello refused: ..."), into buf (n bytes, always
 * terminated; empty after a successful hello). Returns the length of the text. Any thread.
 * Since 0.1. */
TT_API int tt_connection_error(tt_client *c, char *buf, size_t n);

/* The client instance id, 16 bytes, new at every tt_open and in a child after fork. */
TT_API int tt_instance_id(tt_client *c, uint8_t out[16]);

/* ---------------------------------------------------------------------------------------------
 * Token statistics from one logits row (since 0.1). No allocation, no system call.
 */
typedef enum tt_dtype {
    TT_DTYPE_F32 = 1,
    TT_DTYPE_F16 = 2, /* IEEE binary16 */
    TT_DTYPE_BF16 = 3 /* bfloat16 (the upper half of a float32) */
} tt_dtype;

#define TT_TOPK_MAX 32

/* Flags in tt_token_stats.flags. */
#define TT_STATS_NAN 0x1u            /* the row held NaN entries; they were treated as -inf */
#define TT_STATS_ESTIMATED 0x2u      /* entropy and margin are estimates (from top-k log-probs) */
#define TT_STATS_DEGENERATE 0x4u     /* every entry was -inf or NaN: no distribution */
#define TT_STATS_CHOSEN_INVALID 0x8u /* chosen id out of range or its logit was -inf/NaN */
#define TT_STATS_INF 0x10u /* the row held +inf entries; they share the mass equally (since 0.1) */

typedef struct tt_token_stats {
    int32_t chosen;     /* the chosen token id */
    int32_t rank;       /* tokens with a strictly higher logit than the chosen one (0 = argmax) */
    float logprob;      /* natural log of p(chosen) */
    float prob;         /* p(chosen) */
    float entropy;      /* Shannon entropy of the distribution, in nats */
    float margin;       /* p(top-1) - p(top-2) */
    uint32_t nan_count; /* NaN entries seen in the row */
    uint32_t flags;     /* TT_STATS_* */
    uint32_t k;         /* number of valid entries in topk_ids / topk_probs */
    int32_t topk_ids[TT_TOPK_MAX]; /* highest probability first; ties by lower id */
    float topk_probs[TT_TOPK_MAX];
} tt_token_stats;

/* Compute the statistics of one row of n logits of type dtype, read with a stride of stride
 * elements (1 for a contiguous row) without copying it; chosen is the sampled token id; k
 * (0..TT_TOPK_MAX) is how many top entries to report. Returns 0, or TT_EINVAL (NULL pointer,
 * n == 0 or n > INT32_MAX, bad dtype, k too large, a stride past the address space). NaN entries
 * are counted and treated as -inf; they never reach the outputs. Thread-safe. Since 0.1. */
TT_API int tt_token_stats_compute(const void *logits, size_t n, size_t stride, tt_dtype dtype,
                                  int32_t chosen, uint32_t k, tt_token_stats *out);

/* Derive what can be derived from a hosted model's answer: the chosen token's log-prob and the
 * top-k alternatives (ids may be NULL when only text is known). prob and logprob are exact;
 * entropy and margin are estimates (flag TT_STATS_ESTIMATED): those of the least-entropy
 * distribution that fits the answer, the remainder (1 - the known mass) split into pieces no
 * larger than the least likely alternative, or one bucket without alternatives: a lower bound.
 * rank is exact when the chosen token is in the top-k, else k. docs/confidence.md lists what is
 * rejected (TT_EINVAL) and what is flagged. Since 0.1. */
TT_API int tt_token_stats_from_logprobs(int32_t chosen, float chosen_logprob,
                                        const int32_t *top_ids, const float *top_logprobs, size_t k,
                                        tt_token_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Responses and the guard (since 0.1). A response is one model answer, token by token: each
 * token's statistics go into packed per-response arrays that travel in chunks (never one event
 * per token); the end emits a summary. The guard is a local, synchronous policy over the token,
 * a sliding window and the whole response: every token call and the end return PASS, FLAG or
 * HALT, and every FLAG and HALT is recorded in the stream with its reason. docs/confidence.md
 * describes the statistics and the guard; config keys guard.* and response.* set them.
 *
 * A tt_response belongs to one thread at a time. tt_response_token and
 * tt_response_token_logprobs neither allocate nor make a system call; tt_response_begin
 * allocates the handle and tt_response_end frees it.
 */
typedef struct tt_response tt_response; /* opaque, one per response */
typedef enum tt_verdict { TT_PASS = 0, TT_FLAG = 1, TT_HALT = 2 } tt_verdict;

typedef struct tt_guard_policy {
    float token_min_prob;        /* a token with p(chosen) below this trips (0 = off) */
    float window_min_confidence; /* mean p(chosen) over the last `window` tokens below this trips */
    uint32_t window;             /* sliding window length in tokens (e.g. 16) */
    float response_min_confidence; /* at the end: exp(mean log-prob) below this trips */
    uint32_t action;               /* what a trip returns: TT_FLAG or TT_HALT */
} tt_guard_policy;

typedef struct tt_response_summary {
    uint32_t tokens;
    float mean_logprob, min_logprob, perplexity, mean_entropy;
    float low_confidence_share, min_window_confidence;
    tt_verdict verdict; /* the worst verdict of the response */
    uint32_t estimated; /* 1 if any token came from provider log-probs */
    char reason[128];   /* why, for FLAG/HALT ("operator halt", "token p=0.02 < 0.05", ...) */
} tt_response_summary;

/* A named score of one response, from whoever judged it: a provider's confidence, an
 * evaluator's or an LLM judge's score, a reward model's reward, in the scorer's own scale.
 * response_id is tt_response_id() of the response (0: not tied to one). The collector's
 * detectors watch it as the signal "score:NAME" (docs/detectors.md). On the wire it is a
 * Metric event of kind TT_SCORE whose first attribute, response_id, is the id in 16 hex digits
 * ("" for none), so older collectors store it as a metric. Same rules and errors as tt_metric (at most 63 attrs). Thread-safe; never blocks.
 * Since 0.1. */
TT_API int tt_score(tt_client *c, const char *session, uint64_t response_id, const char *name,
                    double value, const tt_attr *attrs, size_t nattrs);

/* Begin a response in a session (NULL: none) of a model, with its sampling parameters. Emits
 * a response_begin event. The guard policy in force now applies to the whole response. Errors:
 * TT_EINVAL (NULL client or out, a string longer than 255 bytes), TT_ENOMEM, TT_ESHUTDOWN.
 * *out is NULL on failure. Since 0.1. */
TT_API int tt_response_begin(tt_client *c, tt_response **out, const char *session,
                             const char *model, const tt_attr *params, size_t n_params);
/* tt_response_begin inside a step: the response belongs to step (its parent step; NULL: none)
 * and to session, which should be the step's session (the collector takes the step's session
 * when session is NULL). Same errors. Since 0.2. */
TT_API int tt_response_begin_in(tt_client *c, tt_response **out, const tt_step *step,
                                const char *session, const char *model, const tt_attr *params,
                                size_t n_params);
/* tt_response_begin_in with a traceparent (NULL: as tt_response_begin_in): the response is a
 * child span of it. Same errors, and TT_EINVAL for an invalid traceparent. Since 0.5. */
TT_API int tt_response_begin_ctx(tt_client *c, tt_response **out, const tt_step *step,
                                 const char *traceparent, const char *session, const char *model,
                                 const tt_attr *params, size_t n_params);
/* Add a token from one logits row (pointer + length + stride + dtype, read without a copy). Both
 * outputs may be NULL. An operator halt of the session (or of the agent) shows as TT_HALT; an
 * operator resume of the session lets its responses begun afterwards pass again. Returns 0, or TT_EINVAL (NULL response, or a row tt_token_stats_compute refuses: the token is
 * then not counted). Since 0.1. */
TT_API int tt_response_token(tt_response *r, const void *logits, size_t n, size_t stride,
                             tt_dtype dtype, int32_t chosen, tt_verdict *verdict,
                             tt_token_stats *stats);
/* Add a token from a hosted model's log-probs (top_ids may be NULL). Returns as
 * tt_response_token (TT_EINVAL for what tt_token_stats_from_logprobs refuses). Since 0.1. */
TT_API int tt_response_token_logprobs(tt_response *r, int32_t chosen, float chosen_logprob,
                                      const int32_t *top_ids, const float *top_logprobs, size_t k,
                                      tt_verdict *verdict, tt_token_stats *stats);
/* Token text (since 0.2): the same calls with each token's text beside its id, as a model's
 * tokenizer or a provider returns it (UTF-8, NUL-terminated; longer than 255 bytes is cut at a
 * character boundary; NULL: unknown). tt_response_token_logprobs_text also takes the
 * alternatives' texts (top_texts, k entries, any may be NULL; NULL: none): a provider that
 * returns alternatives by text ({"Hello": -0.1, ...}) passes top_ids NULL and top_texts, and
 * the chosen token is then found among them by its text. Each distinct text travels once per
 * response (docs/wire-format.md); the collector's /api/v1/responses/{id} returns every token's
 * text and the response's whole text. The first token with text allocates the response's text
 * table (about 100 KiB, once); no later call allocates. Returns as tt_response_token and
 * tt_response_token_logprobs. Since 0.2. */
TT_API int tt_response_token_text(tt_response *r, const void *logits, size_t n, size_t stride,
                                  tt_dtype dtype, int32_t chosen, const char *text,
                                  tt_verdict *verdict, tt_token_stats *stats);
TT_API int tt_response_token_logprobs_text(tt_response *r, int32_t chosen, const char *text,
                                           float chosen_logprob, const int32_t *top_ids,
                                           const char *const *top_texts, const float *top_logprobs,
                                           size_t k, tt_verdict *verdict, tt_token_stats *stats);
/* One decode step over a batch: row b of a [batch, n] logits matrix (row b starts row_stride
 * elements after row a's start; each row is read with a stride of stride elements, as in
 * tt_response_token) is token chosen[b] of responses[b], for b in 0..batch-1, in one call. A
 * NULL responses[b] (a finished sequence) is skipped and its verdict is TT_PASS. verdicts and
 * stats (batch entries each) may be NULL. Neither allocates nor makes a system call. Returns 0,
 * or TT_EINVAL (NULL responses, chosen or logits with batch > 0, a row shape that
 * tt_token_stats_compute refuses, a matrix past the address space): no token is then counted.
 * Since 0.4. */
TT_API int tt_response_token_batch(tt_response *const *responses, size_t batch, const void *logits,
                                   size_t n, size_t stride, size_t row_stride, tt_dtype dtype,
                                   const int32_t *chosen, tt_verdict *verdicts,
                                   tt_token_stats *stats);
/* Add a token from statistics computed elsewhere, as tt_token_stats_compute defines them (the
 * Python package computes them with torch on the accelerator that holds the logits, so that only
 * they cross to the host). text as in tt_response_token_text (NULL: unknown). Entries past the
 * response's top-k (config key response.topk) are dropped; stats receives what was kept.
 * Returns as tt_response_token; TT_EINVAL also for statistics out of their ranges (a probability
 * outside [0, 1], a positive log-prob, a negative entropy, NaN, k > TT_TOPK_MAX, unknown
 * flags). Since 0.4. */
TT_API int tt_response_token_stats(tt_response *r, const tt_token_stats *computed, const char *text,
                                   tt_verdict *verdict, tt_token_stats *stats);
/* The response's id (unique within the client instance), for tt_score and for the collector's
 * /api/v1/responses/{id} (16 hex digits). 0 for NULL. Since 0.2. */
TT_API uint64_t tt_response_id(const tt_response *r);
/* End the response: emits the summary record and frees r. summary may be NULL. Returns 0 or
 * TT_EINVAL (NULL r). Since 0.1. */
TT_API int tt_response_end(tt_response *r, tt_response_summary *summary);
/* The guard policy of the client (also settable with config keys guard.*; the collector can
 * push one over the ack channel). set returns TT_EINVAL for a threshold outside [0, 1], a
 * window outside 1..4096 or an action other than TT_FLAG / TT_HALT. Since 0.1. */
TT_API int tt_guard_policy_set(tt_client *c, const tt_guard_policy *p);
TT_API int tt_guard_policy_get(tt_client *c, tt_guard_policy *out);

/* ---------------------------------------------------------------------------------------------
 * Compliance (since 0.3): rules over the execution path, checked in the agent before a step
 * runs (docs/compliance.md has the policy format): forbidden tools and step kinds, destructive
 * SQL, hosts outside an allow list, PII and secrets, calls per session.
 *
 * With a policy set, tt_step_begin checks the step first. A blocking rule that matches makes it
 * return TT_EBLOCKED: the step is recorded as begun and ended with status cancelled and the
 * error "blocked by rule NAME: WHY", step->id is 0 (a later tt_step_end on it returns
 * TT_EINVAL), and the caller must not run the call. A flagging rule lets the step begin. Every
 * decision is also a log event (severity warn for flag, error for block) with the attributes
 * comply.rule, comply.verdict, comply.why, step.id, step.kind and step.name. With `redact = on`
 * in a pii rule, matching values in step queries, step errors, log messages and string
 * attributes are masked ("[card]", "[email]", ...) before they are encoded, so they reach
 * neither the spool nor the collector; tt_stats counts blocked, flagged and masked.
 *
 * Set the policy from its text (len bytes, at most 64 KiB), or clear it with text NULL.
 * Returns 0, or TT_EINVAL with a message naming the line in err (errlen bytes, may be 0),
 * TT_E2BIG for a text over 64 KiB. The config key comply.policy_file loads one at tt_open.
 * Thread-safe; steps begun on other threads see the new policy from their next step. The
 * replaced policy is freed once no step can still read it: the call waits for steps under way
 * on other threads (microseconds; at most 0.4 s for a thread stopped mid-step, whose policy is
 * then kept until tt_close). */
TT_API int tt_comply_policy_set(tt_client *c, const char *text, size_t len, char *err,
                                size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* TELLTALE_H */

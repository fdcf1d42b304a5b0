/*
 * client.h - the inside of a tt_client: its configuration, its list of per-thread rings
 * (ring.h), and the state the worker thread owns. Shared by the files of src/client only.
 * Files: emit.c (the event calls), ring.c (the rings), client.c (open, close, flush, fork,
 * stats), worker.c and conn.c (the worker), encode.c, spool.c, config.c, guard.c, control.c,
 * response.c, confidence*.c.
 *
 * Threads and what they own:
 *   producer threads  their own ring's head and producer counters (nothing else they write);
 *   the worker        ring tails, the batch, the window of unacked frames, the connection,
 *                     the spool, and the worker counters (published with relaxed atomics so
 *                     tt_stats_get can read them from any thread);
 *   reg_lock          the list of rings, taken by a thread's first event and by the worker
 *                     once per drain cycle (the ring itself: ring.h);
 *   ctl_lock          flush requests and their completion (with ctl_cond).
 */
#ifndef TT_CLIENT_CLIENT_H
#define TT_CLIENT_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "client/ring.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/compat.h"
#include "common/wire.h"
#include "telltale.h"

/* --- configuration ------------------------------------------------------------------------- */

enum tt__spool_policy { TT_SPOOL_DROP_OLDEST = 0, TT_SPOOL_DROP_NEWEST = 1 };

typedef struct tt__cfg {
    char endpoint[256];
    char agent[256];
    char token[256];
    char spool_dir[1024];
    /* tls:// endpoints (tls.c): trust anchors (empty: the system store), the client
     * certificate and key for mTLS (both or neither), the name checked in the collector's
     * certificate (empty: the endpoint's host) */
    char tls_ca[1024];
    char tls_cert[1024];
    char tls_key[1024];
    char tls_server_name[256];
    uint64_t ring_bytes;
    uint64_t max_threads;
    uint64_t max_event_bytes;
    uint64_t batch_bytes;
    uint64_t flush_interval_ms;
    uint64_t window_bytes;
    uint64_t ack_timeout_ms;
    uint64_t backoff_min_ms;
    uint64_t backoff_max_ms;
    uint64_t spool_max_bytes;
    uint64_t replay_bytes_per_s; /* the spool's replay pace (a token bucket, 1/4 s of burst) */
    uint64_t spool_policy;
    int64_t compression_level;
    uint64_t stats_interval_ms;
    /* the guard and responses (guard.c, response.c) */
    float guard_token_min_prob;
    float guard_window_min_confidence;
    float guard_response_min_confidence;
    uint64_t guard_window;
    uint64_t guard_action;           /* TT_FLAG or TT_HALT */
    uint64_t response_topk;          /* 0..TT_TOPK_MAX */
    uint64_t response_topk_encoding; /* TT_ENC_F16 or TT_ENC_U8LOG */
    uint64_t response_chunk_tokens;
    float response_low_prob;
    uint64_t response_sample_budget;
    uint64_t response_sample_every;
    char comply_policy_file[1024]; /* comply.policy_file: loaded at tt_open */
    /* nats:// endpoints (nats.c): the ingest subjects' prefix, and the file of the token */
    char nats_subject[208];
    char nats_token_file[1024];
} tt__cfg;

struct tt_config {
    tt__cfg v;
    char strval[64]; /* tt_config_get's formatting buffer */
    char error[256];
};

void tt__cfg_defaults(tt__cfg *v);
/* Checks that hold across keys (ring large enough for the largest event, ...). */
int tt__cfg_validate(const tt__cfg *v, char *err, size_t errlen);

/* --- frames in flight ---------------------------------------------------------------------- */

typedef struct tt__frame_out {
    uint8_t *data; /* the whole frame: prefix, body header, payload */
    size_t len;
    uint64_t first_seq; /* 0 for an empty (heartbeat) batch */
    uint32_t n_events;
    uint64_t frame_no;    /* number on the current connection, 0 if not sent on it */
    int ever_sent;        /* written to some connection at least once */
    int from_spool;       /* read back from the spool: delete its record on ack */
    uint64_t spool_id;    /* identity of the spool record, when from_spool */
    int spool_foreign;    /* from_spool, written by an earlier process (another instance) */
    uint8_t instance[16]; /* the instance its batch names (nats: the message's id) */
    void *nats_msg;       /* nats: the message published whose PubAck is awaited, or NULL */
    struct tt__frame_out *next;
} tt__frame_out;

/* A FIFO of frames. */
typedef struct tt__fq {
    tt__frame_out *head;
    tt__frame_out *tail;
    uint64_t n_frames;
    uint64_t n_events;
    uint64_t bytes;
} tt__fq;

void tt__fq_push(tt__fq *q, tt__frame_out *f);
tt__frame_out *tt__fq_pop(tt__fq *q);
void tt__frame_out_free(tt__frame_out *f);

/* --- the client ---------------------------------------------------------------------------- */

enum tt__conn_state {
    TT_CONN_IDLE = 0,       /* no socket; next attempt at next_attempt_ns */
    TT_CONN_CONNECTING = 1, /* non-blocking connect in progress */
    TT_CONN_TLS = 2,        /* TLS handshake in progress (tls:// endpoints) */
    TT_CONN_HELLO = 3,      /* hello sent, waiting for the reply */
    TT_CONN_READY = 4,
    TT_CONN_RESOLVING = 5 /* a host name is being resolved (resolve.h); no socket yet */
};

/* Worker counters, written by the worker only, read by tt_stats_get. */
typedef struct tt__wstats {
    /* Odd while the worker is in a cycle that moves events between the counters below (a
     * sequence lock): tt_stats_get reads them when it is even and unchanged, so the counters it
     * returns add up (an ack lowers in_window and raises acked in the same cycle). */
    _Atomic uint64_t gen;
    _Atomic uint64_t sent;
    _Atomic uint64_t acked;
    _Atomic uint64_t possibly_delivered;
    _Atomic uint64_t dropped[TT_DROP__COUNT];
    _Atomic uint64_t in_batch;
    _Atomic uint64_t in_window;
    _Atomic uint64_t in_spool;
    _Atomic uint64_t inherited; /* events of earlier processes found in the spool */
    _Atomic uint64_t frames_sent;
    _Atomic uint64_t bytes_sent;
    _Atomic uint64_t reconnects;
    _Atomic uint64_t connected;
    _Atomic uint64_t tls_failures; /* handshakes refused or failed (tt_stats.tls_failures) */
    /* counts of rings the worker freed, folded in so nothing is lost with them */
    _Atomic uint64_t orphan_emitted;
    _Atomic uint64_t orphan_drained;
    _Atomic uint64_t orphan_dropped_full;
    _Atomic uint64_t orphan_dropped_large;
} tt__wstats;

struct tt_spool;

/* Encodings of quantized values (Tokens.topk_encoding, Tensor.encoding; docs/wire-format.md). */
enum { TT_ENC_F16 = 1, TT_ENC_U8LOG = 2 };

/*
 * The guard's shared state (guard.c): the policy and the operator's halt orders. Orders arrive
 * on the worker thread (control.c) and are seen by producers at their next token: a producer
 * compares gen (one acquire load) with the value it saw last and takes the lock only when it
 * changed.
 */
#define TT_HALT_SESSIONS 64
typedef struct tt__guard {
    pthread_mutex_t lock;
    tt_guard_policy policy;    /* guarded by lock */
    _Atomic uint64_t gen;      /* bumped (release) after every halt or resume order */
    uint64_t halt_all_gen;     /* guarded by lock: responses begun before it are halted */
    char halt_all_reason[112]; /* guarded by lock */
    struct {
        char session[256];
        char reason[112];
    } halted[TT_HALT_SESSIONS]; /* guarded by lock; the latest session halts, oldest first */
    uint32_t n_halted;          /* guarded by lock */
} tt__guard;

struct tt__comply_policy;
struct tt__comply_client;
/* comply.c: a step under a policy (tt_step_begin's slow path), a log or step end whose text
 * may need masking, and the state's release at close. */
int tt__comply_step_begin(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                          const char *session, const char *name, const char *query,
                          const uint8_t *trace_ctx);
int tt__comply_log(tt_client *c, uint32_t kinds, const char *session, tt_severity severity,
                   const char *message, const tt_attr *attrs, size_t nattrs);
int tt__comply_step_end(tt_client *c, uint32_t kinds, const tt_step *step, tt_status status,
                        int64_t result_bytes, const char *error);
void tt__comply_stats(tt_client *c, tt_stats *s);
void tt__comply_fini(tt_client *c);
/* Load the policy file of comply.policy_file (tt_open): 0, or TT_EINVAL / TT_E2BIG / -errno. */
int tt__comply_load_file(tt_client *c, const char *path);
/* TT_LOG's call sites (site.c). A site's id: 0 before its registration, 1..TT__SITES_MAX
 * after, TT__SITE_WHOLE when its events go through tt_log whole (registry full, a string too
 * long), TT__SITE_INVALID (not stored) for a site that is not one. */
#define TT__SITES_MAX 16384u
#define TT__SITE_WHOLE UINT32_MAX
#define TT__SITE_INVALID (UINT32_MAX - 1)
typedef struct tt__site_entry {
    uint32_t nattrs;
    uint32_t message_len;
    const char *message;
    const char *keys[TT_LOG_MAX_ATTRS];
    uint32_t key_len[TT_LOG_MAX_ATTRS];
    uint8_t types[TT_LOG_MAX_ATTRS];
    char data[]; /* the message and the keys, each with its terminator */
} tt__site_entry;
/* Registers site (cold: one allocation); returns its id as above (0: out of memory now). */
uint32_t tt__site_register(tt_log_site *site);
/* The entry of a registered id, or NULL. */
const tt__site_entry *tt__site_get(uint32_t id);

/* emit.c: the event calls without the compliance checks. */
int tt__step_begin_raw(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                       const char *session, const char *name, const char *query,
                       const uint8_t *trace_ctx);
int tt__log_raw(tt_client *c, const char *session, tt_severity severity, const char *message,
                const tt_attr *attrs, size_t nattrs);
int tt__step_end_raw(tt_client *c, const tt_step *step, tt_status status, int64_t result_bytes,
                     const char *error);

void tt__guard_init(tt_client *c);
void tt__guard_fini(tt_client *c);
/* Apply a halt order (session NULL or empty: every response open now). Thread-safe. */
void tt__guard_halt(tt_client *c, const char *session, size_t session_len, const char *reason,
                    size_t reason_len);
/* Apply a resume order: lift the session's halt (NULL or empty: every session halt and an
 * agent-wide halt not yet seen by a response). Responses already halted stay so. Thread-safe. */
void tt__guard_resume(tt_client *c, const char *session, size_t session_len);

struct tt_client {
    /* read-mostly line, checked by every event call */
    _Alignas(TT_CACHELINE) uint64_t uid; /* unique per client and per fork generation */
    _Atomic int closing;                 /* release by tt_close, acquire on the hot path */
    uint64_t max_record;
    pthread_key_t key; /* this client's ring of the calling thread */
    /* The compliance policy (policy.c), NULL when none: published with a seq_cst store; a
     * step reads it only inside policy.c's reader section, which a replacement waits out
     * before freeing the old one. redact: its PII kinds to mask. */
    _Atomic(const struct tt__comply_policy *) comply_policy;
    _Atomic uint32_t comply_redact;

    /* events refused before a ring was involved */
    _Alignas(TT_CACHELINE) _Atomic uint64_t dropped_closed;
    _Atomic uint64_t dropped_no_ring;
    _Atomic uint64_t dropped_oom;

    tt__cfg cfg;
    tt__endpoint ep;
    int nats;             /* the endpoint is nats:// (nats.h): ep is unused */
    int nats_pid;         /* the process that opened it: libnats is not there after fork */
    char nats_token[256]; /* read from nats_token_file at tt_open; wiped at the end */
    uint8_t instance[16];
    uint64_t start_unix_ns;

    pthread_mutex_t reg_lock;
    tt__ring *rings;       /* guarded by reg_lock */
    uint32_t n_rings;      /* guarded by reg_lock */
    uint32_t next_ring_id; /* guarded by reg_lock */

    pthread_t worker;
    int worker_started; /* guarded by reg_lock (lazily restarted after fork) */
    int wake_fd;        /* eventfd: close and flush requests; never used per event */

    pthread_mutex_t ctl_lock;
    pthread_cond_t ctl_cond;
    uint64_t flush_req;         /* guarded by ctl_lock */
    uint64_t flush_done;        /* guarded by ctl_lock */
    uint64_t close_deadline_ns; /* guarded by ctl_lock; set once by tt_close */
    int worker_exited;          /* guarded by ctl_lock */
    int close_result;           /* guarded by ctl_lock */
    char conn_error[512];       /* guarded by ctl_lock: why the last attempt failed */

    tt__wstats ws;
    struct tt__worker *w;   /* the worker's private state */
    struct tt_spool *spool; /* worker-owned */

    tt__guard guard;                  /* the guard policy and halt orders (guard.c) */
    struct tt__comply_client *comply; /* compliance state (comply.c), NULL until a policy */
    pthread_mutex_t comply_lock;      /* guards setting the policy and *comply */
    /* Default trace contexts per session (tt_session_traceparent, trace.c): allocated at the
     * first, read by the worker for root steps and responses. */
    pthread_mutex_t trace_lock;                /* guards *trace_sessions */
    struct tt__trace_sessions *trace_sessions; /* NULL until a default is set */
    _Atomic uint32_t trace_defaults; /* how many defaults are set: the worker skips the lock at 0 */

    int fork_pending;           /* set in a forked child, cleared by its first event */
    struct tt_client *all_next; /* guarded by the global client list lock */
};

/* The calling thread's ring for c (client.c): found, or made and registered on the thread's
 * first event; NULL with *rc set (and the drop counted) when no ring can be had. */
tt__ring *tt__client_ring(tt_client *c, int *rc);

/* The calling thread's ring for c, fast path: one thread-local compare. */
struct tt__tls_cache {
    tt_client *c;
    uint64_t uid;
    tt__ring *r;
    int tsc; /* tt__clock_tsc, read here by the one-pass writer: its line is the thread's own,
              * which the first call after a pause finds in cache far more often */
};
extern __thread struct tt__tls_cache tt__tls __attribute__((tls_model("initial-exec")));

/* c->uid as the event calls read it: relaxed, since tt_close and fork change it while threads
 * emit (a plain load on x86-64, the same instruction as before). */
static inline uint64_t tt__client_uid(const tt_client *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)(uintptr_t)&c->uid, memory_order_relaxed);
}

static inline tt__ring *tt__ring_get(tt_client *c, int *rc)
{
    if (TT_LIKELY(tt__tls.c == c && tt__tls.uid == tt__client_uid(c))) {
        return tt__tls.r;
    }
    return tt__client_ring(c, rc);
}

/* Reserve a record for an already-encoded Event body (TT_REC_ENCODED), for modules whose
 * events are not on the 10 ns path (responses, tokens): the caller writes exactly payload
 * bytes of protobuf Event fields other than field 1 (the worker adds the time), then commits.
 * Returns where to write, or NULL with *rc set (and the drop counted). */
/* tt__emit_encoded_begin with the record's aux and extra bytes after the payload, for the
 * worker (trace.h's TT_ENC_AUX_TRACE_FILL). */
uint8_t *tt__emit_encoded_begin_aux(tt_client *c, size_t payload, size_t extra, uint16_t aux,
                                    tt__ring **r, uint64_t *new_head, int *rc);
uint8_t *tt__emit_encoded_begin(tt_client *c, size_t payload, tt__ring **r, uint64_t *new_head,
                                int *rc);
void tt__emit_encoded_commit(tt__ring *r, uint8_t *payload, uint64_t new_head);

/* Worker (worker.c). */
int tt__worker_start(tt_client *c);
void tt__worker_wake(tt_client *c);
void tt__worker_free(tt_client *c);

/* In a forked child: forget the parent's worker (its socket closed, never joined). Its memory
 * is freed, except under AddressSanitizer or ThreadSanitizer, whose allocators (GCC 12) are not
 * fork-safe: a parent thread may have held an allocator lock at the fork, and a free in the
 * child would wait for it for ever (seen with gdb in the TSan run of delivery_s8). There the
 * parent's worker state and rings are left allocated in the child instead. */
void tt__worker_forget(tt_client *c);
int tt__fork_child_may_free(void);

/* Lifecycle (client.c). Fork handling: reset a client in a forked child; c->reg_lock held. */
void tt__client_after_fork(tt_client *c);
/* The client's counters, as tt_stats_get reports them; for the worker (its heartbeat and batch
 * counters) and tt_stats_get. Any thread; outside the worker a read may catch events between
 * two counters: tt_stats_get waits for the worker's gen to be even (tt__wstats). */
void tt__client_stats_read(tt_client *c, tt_stats *s);

/* Control messages from the collector (halt, guard policy); implemented by the guard. */
void tt__control_handle(tt_client *c, const uint8_t *payload, size_t n);

#endif

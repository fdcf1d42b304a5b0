/*
 * client.h - the inside of a tt_client: its configuration, the per-thread rings, and the state
 * the worker thread owns. Shared by the files of src/client only.
 *
 * Threads and what they own:
 *   producer threads  their own ring's head and producer counters (nothing else they write);
 *   the worker        ring tails, the batch, the window of unacked frames, the connection,
 *                     the spool, and the worker counters (published with relaxed atomics so
 *                     tt_stats_get can read them from any thread);
 *   reg_lock          the list of rings, taken by a thread's first event and by the worker
 *                     once per drain cycle;
 *   ctl_lock          flush requests and their completion (with ctl_cond).
 */
#ifndef TT_CLIENT_CLIENT_H
#define TT_CLIENT_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

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
} tt__cfg;

struct tt_config {
    tt__cfg v;
    char strval[64]; /* tt_config_get's formatting buffer */
    char error[256];
};

void tt__cfg_defaults(tt__cfg *v);
/* Checks that hold across keys (ring large enough for the largest event, ...). */
int tt__cfg_validate(const tt__cfg *v, char *err, size_t errlen);

/* --- rings --------------------------------------------------------------------------------- */

/* Record kinds in a ring. Records are 8-byte aligned: a 16-byte header, then the payload. */
enum tt__rec_kind {
    TT_REC_PAD = 0, /* filler up to the end of the ring */
    TT_REC_LOG = 1,
    TT_REC_METRIC = 2,
    TT_REC_STEP_BEGIN = 3,
    TT_REC_STEP_END = 4,
    TT_REC_ENCODED = 5 /* payload is Event fields 2.. already in protobuf (session + body) */
};

typedef struct tt__rec_hdr {
    uint32_t len; /* whole record, header included, multiple of 8 */
    uint16_t kind;
    uint16_t aux;
    uint64_t ticks;
} tt__rec_hdr;

#define TT_REC_HDR ((uint32_t)sizeof(tt__rec_hdr))

/*
 * A single-producer single-consumer byte ring, one per (thread, client).
 *
 * INVARIANTS
 * - head and tail count bytes since creation and never decrease; tail <= head <= tail + size.
 * - Bytes in [tail, head) are committed records, each wholly before the wrap point: a record
 *   that does not fit before the end is preceded by a PAD record that fills the end.
 * - Only the owning thread writes head, committed, dropped_*, cached_tail and step_seq; only the
 *   worker writes tail and drained.
 * - The producer's release store of head pairs with the worker's acquire load of head; the
 *   worker's release store of tail pairs with the producer's acquire load of tail. A record's
 *   bytes are therefore complete before the worker reads them, and the worker is done reading
 *   them before the producer overwrites them.
 * - A ring whose orphaned flag is set (its thread exited) is freed by the worker once empty.
 */
typedef struct tt__ring {
    /* producer's cache line */
    _Alignas(TT_CACHELINE) _Atomic uint64_t head;
    _Atomic uint64_t committed;     /* events put in the ring */
    _Atomic uint64_t dropped_full;  /* events refused: ring full */
    _Atomic uint64_t dropped_large; /* events refused: larger than max_event_bytes */
    uint64_t cached_tail;           /* producer's last view of tail */
    uint64_t step_seq;              /* step ids made on this ring */
    /* worker's cache line */
    _Alignas(TT_CACHELINE) _Atomic uint64_t tail;
    _Atomic uint64_t drained; /* events taken out by the worker */
    /* set at creation, then read-only (next and orphaned excepted) */
    _Alignas(TT_CACHELINE) uint8_t *data;
    uint64_t size;
    uint64_t mask;
    uint64_t max_record;
    uint32_t id;
    _Atomic int orphaned;  /* release by the thread-exit destructor, acquire by worker */
    struct tt__ring *next; /* guarded by reg_lock */
} tt__ring;

/* --- frames in flight ---------------------------------------------------------------------- */

typedef struct tt__frame_out {
    uint8_t *data; /* the whole frame: prefix, body header, payload */
    size_t len;
    uint64_t first_seq; /* 0 for an empty (heartbeat) batch */
    uint32_t n_events;
    uint64_t frame_no; /* number on the current connection, 0 if not sent on it */
    int ever_sent;     /* written to some connection at least once */
    int from_spool;    /* read back from the spool: delete its record on ack */
    uint64_t spool_id; /* identity of the spool record, when from_spool */
    int spool_foreign; /* from_spool, written by an earlier process (another instance) */
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
    TT_CONN_HELLO = 2,      /* hello sent, waiting for the reply */
    TT_CONN_READY = 3
};

/* Worker counters, written by the worker only, read by tt_stats_get. */
typedef struct tt__wstats {
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
    _Atomic uint64_t gen;      /* bumped (release) after every halt order */
    uint64_t halt_all_gen;     /* guarded by lock: responses begun before it are halted */
    char halt_all_reason[112]; /* guarded by lock */
    struct {
        char session[256];
        char reason[112];
    } halted[TT_HALT_SESSIONS]; /* guarded by lock; a ring of the latest session halts */
    uint32_t n_halted;          /* guarded by lock */
    uint32_t next_halted;       /* guarded by lock */
} tt__guard;

void tt__guard_init(tt_client *c);
void tt__guard_fini(tt_client *c);
/* Apply a halt order (session NULL or empty: every response open now). Thread-safe. */
void tt__guard_halt(tt_client *c, const char *session, size_t session_len, const char *reason,
                    size_t reason_len);

struct tt_client {
    /* read-mostly line, checked by every event call */
    _Alignas(TT_CACHELINE) uint64_t uid; /* unique per client and per fork generation */
    _Atomic int closing;                 /* release by tt_close, acquire on the hot path */
    uint64_t max_record;
    pthread_key_t key; /* this client's ring of the calling thread */

    /* events refused before a ring was involved */
    _Alignas(TT_CACHELINE) _Atomic uint64_t dropped_closed;
    _Atomic uint64_t dropped_no_ring;
    _Atomic uint64_t dropped_oom;

    tt__cfg cfg;
    tt__endpoint ep;
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

    tt__wstats ws;
    struct tt__worker *w;   /* the worker's private state */
    struct tt_spool *spool; /* worker-owned */

    tt__guard guard; /* the guard policy and halt orders (guard.c) */

    int fork_pending;           /* set in a forked child, cleared by its first event */
    struct tt_client *all_next; /* guarded by the global client list lock */
};

/* Hot-path internals (emit.c). Returns the calling thread's ring, creating it on first use;
 * NULL with *rc set when no ring can be had. */
tt__ring *tt__ring_slow(tt_client *c, int *rc);
/* Free a ring and its bytes (NULL is accepted). */
void tt__ring_free(tt__ring *r);

/* Reserve a record of payload bytes on ring r. Returns NULL if the ring is full. */
static inline uint8_t *tt__ring_reserve(tt__ring *r, uint32_t payload, uint64_t *new_head)
{
    uint64_t len = ((uint64_t)TT_REC_HDR + payload + 7) & ~(uint64_t)7;
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t off = head & r->mask;
    uint64_t contig = r->size - off;
    uint64_t need = len <= contig ? len : contig + len;
    if (TT_UNLIKELY(head + need - r->cached_tail > r->size)) {
        /* Pairs with the worker's release store of tail in tt__worker_drain_ring. */
        r->cached_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (head + need - r->cached_tail > r->size) {
            return NULL;
        }
    }
    if (TT_UNLIKELY(len > contig)) {
        tt__rec_hdr *pad = (tt__rec_hdr *)(void *)(r->data + off);
        pad->len = (uint32_t)contig;
        pad->kind = TT_REC_PAD;
        head += contig;
        off = 0;
    }
    *new_head = head + len;
    tt__rec_hdr *h = (tt__rec_hdr *)(void *)(r->data + off);
    h->len = (uint32_t)len;
    return r->data + off;
}

static inline void tt__ring_commit(tt__ring *r, uint64_t new_head)
{
    atomic_store_explicit(&r->committed,
                          atomic_load_explicit(&r->committed, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    /* Pairs with the worker's acquire load of head in tt__worker_drain_ring. */
    atomic_store_explicit(&r->head, new_head, memory_order_release);
}

static inline void tt__ring_count_drop(_Atomic uint64_t *ctr)
{
    atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* The calling thread's ring for c, fast path: one thread-local compare. */
struct tt__tls_cache {
    tt_client *c;
    uint64_t uid;
    tt__ring *r;
};
extern __thread struct tt__tls_cache tt__tls __attribute__((tls_model("initial-exec")));

static inline tt__ring *tt__ring_get(tt_client *c, int *rc)
{
    if (TT_LIKELY(tt__tls.c == c && tt__tls.uid == c->uid)) {
        return tt__tls.r;
    }
    return tt__ring_slow(c, rc);
}

/* Reserve a record for an already-encoded Event body (TT_REC_ENCODED), for modules whose
 * events are not on the 10 ns path (responses, tokens): the caller writes exactly payload
 * bytes of protobuf Event fields other than field 1 (the worker adds the time), then commits.
 * Returns where to write, or NULL with *rc set (and the drop counted). */
uint8_t *tt__emit_encoded_begin(tt_client *c, size_t payload, tt__ring **r, uint64_t *new_head,
                                int *rc);
void tt__emit_encoded_commit(tt__ring *r, uint8_t *payload, uint64_t new_head);

/* Worker (worker.c). */
int tt__worker_start(tt_client *c);
void tt__worker_wake(tt_client *c);
void tt__worker_free(tt_client *c);

/* Fork handling (emit.c): reset a client in a forked child; c->reg_lock held. */
void tt__client_after_fork(tt_client *c);

/* Control messages from the collector (halt, guard policy); implemented by the guard. */
void tt__control_handle(tt_client *c, const uint8_t *payload, size_t n);

#endif

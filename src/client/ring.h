/*
 * ring.h - the per-thread ring: a single-producer single-consumer byte ring of records, one per
 * (thread, client). The producer side (reserve, the one-pass span, commit, drop counting) is
 * inline, for the event calls of emit.c and response.c; the consumer side (read, release) is
 * inline too, for the worker's drain; ring.c makes, resets and frees rings and reads their
 * counters.
 *
 * INVARIANTS
 * - head and tail count bytes since creation and never decrease; tail <= head <= tail + size.
 * - Bytes in [tail, head) are committed records, each wholly before the wrap point: a record
 *   that does not fit before the end is preceded by a PAD record that fills the end.
 * - Records are 8-byte aligned: a 16-byte header (tt__rec_hdr), then the payload; a record's
 *   len counts both and is a multiple of 8.
 * - Only the owning thread writes head, committed, dropped_*, cached_tail and step_seq; only the
 *   worker writes tail and drained.
 * - The producer's release store of head (tt__ring_commit) pairs with the worker's acquire load
 *   of head (tt__ring_read); the worker's release store of tail (tt__ring_release) pairs with
 *   the producer's acquire load of tail (tt__ring_reserve). A record's bytes are therefore
 *   complete before the worker reads them, and the worker is done reading them before the
 *   producer overwrites them. Nothing is visible to the worker before the release of head, so
 *   a producer may write ahead of head and abandon what it wrote (the one-pass span).
 * - committed + dropped_full + dropped_large counts every event call that reached the ring;
 *   drained <= committed, and committed - drained events are in the ring (or, at close, were
 *   counted by tt__ring_settle).
 * - A ring's bytes are mapped and populated when it is made: an event call never page-faults
 *   on them (ring.c says why).
 * - A ring whose orphaned flag is set (its thread exited) is freed by the worker once empty.
 */
#ifndef TT_CLIENT_RING_H
#define TT_CLIENT_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/compat.h"

/* Record kinds in a ring. */
enum tt__rec_kind {
    TT_REC_PAD = 0, /* filler up to the end of the ring */
    TT_REC_LOG = 1,
    TT_REC_METRIC = 2,
    TT_REC_STEP_BEGIN = 3,
    TT_REC_STEP_END = 4,
    TT_REC_ENCODED = 5, /* payload is Event fields 2.. already in protobuf (session + body) */
    TT_REC_LOG_SITE = 6 /* a log of a TT_LOG site: its id, the session, the values (emit.c) */
};

typedef struct tt__rec_hdr {
    uint32_t len; /* whole record, header included, multiple of 8 */
    uint16_t kind;
    uint16_t aux;
    uint64_t ticks;
} tt__rec_hdr;

#define TT_REC_HDR ((uint32_t)sizeof(tt__rec_hdr))

typedef struct tt__ring {
    /* The producer's line: all that an event call reads or writes in the ring's header, so that
     * the first call after a pause waits for one line of it, not two (docs/benchmarks.md,
     * "emit: the tail against Quill"). data, size, mask and max_record are set at creation, then
     * read-only. */
    _Alignas(TT_CACHELINE) _Atomic uint64_t head;
    _Atomic uint64_t committed; /* events put in the ring */
    uint64_t cached_tail;       /* producer's last view of tail */
    uint8_t *data;
    uint64_t size;
    uint64_t mask;
    uint64_t max_record;
    uint64_t step_seq; /* step ids made on this ring */
    /* the producer's drops, written only when an event is refused */
    _Alignas(TT_CACHELINE) _Atomic uint64_t dropped_full; /* events refused: ring full */
    _Atomic uint64_t dropped_large; /* events refused: larger than max_event_bytes */
    /* worker's cache line */
    _Alignas(TT_CACHELINE) _Atomic uint64_t tail;
    _Atomic uint64_t drained; /* events taken out by the worker */
    /* set at creation, then read-only (next and orphaned excepted) */
    _Alignas(TT_CACHELINE) uint32_t id;
    _Atomic int orphaned;  /* release by tt__ring_orphan, acquire by tt__ring_reapable */
    struct tt__ring *next; /* guarded by the client's reg_lock */
} tt__ring;

_Static_assert(offsetof(tt__ring, step_seq) + sizeof(uint64_t) <= TT_CACHELINE,
               "the producer's fields share one cache line");

/* --- making and freeing (ring.c) ------------------------------------------------------------ */

/* A ring of size bytes (a power of two) whose records carry at most max_record payload bytes;
 * NULL if memory is short. */
tt__ring *tt__ring_new(uint64_t size, uint64_t max_record, uint32_t id);
/* Free a ring and its bytes (NULL is accepted). */
void tt__ring_free(tt__ring *r);
/* The owning thread has exited: head is final. Any thread. */
void tt__ring_orphan(tt__ring *r);
/* Orphaned and empty: the worker may unlink and free it. Worker only. */
int tt__ring_reapable(tt__ring *r);
/* Empty the ring and zero its counters, in a forked child before any other thread exists. */
void tt__ring_reset(tt__ring *r);

/* --- counters (ring.c) ---------------------------------------------------------------------- */

typedef struct tt__ring_counts {
    uint64_t committed;
    uint64_t drained;
    uint64_t dropped_full;
    uint64_t dropped_large;
} tt__ring_counts;

/* A relaxed snapshot of the counters, from any thread: each one exact, not a consistent set. */
void tt__ring_counts_get(tt__ring *r, tt__ring_counts *out);
/* At close, the events still in the ring, which no batch can take any more, are counted as
 * drained; returns how many. Worker only. */
uint64_t tt__ring_settle(tt__ring *r);

/* --- producer side (the owning thread) ------------------------------------------------------ */

/*
 * The calling thread's copy of what the one-pass writer needs of its current ring (the ring of
 * client.h's thread-local cache), so that an event call reads nothing of the ring's header:
 * after a pause the header's line is often gone from the core (the worker and the collector
 * run there meanwhile), and the first call waited 60-280 ns for it. The call still writes head
 * and committed there, but a store does not wait for its line. The copy is the thread's own:
 * - head and committed equal the ring's whenever r is the ring: only the owning thread changes
 *   them, and only through tt__ring_commit, which updates the copy too;
 * - limit is cached_tail + size or less (cached_tail only grows; tt__ring_reserve updates it);
 * - data, size, mask and max_record do not change.
 * It is set when the thread's cache entry is filled (tt__ring_view_set) and dropped when the ring
 * is reset after fork.
 */
typedef struct tt__ring_view {
    tt__ring *r; /* the ring copied, or NULL */
    uint8_t *data;
    uint64_t size;
    uint64_t mask;
    uint64_t max_record;
    uint64_t head;
    uint64_t limit;
    uint64_t committed;
} tt__ring_view;

extern __thread tt__ring_view tt__view __attribute__((tls_model("initial-exec")));

/* Copy r into the calling thread's view. Owning thread. */
void tt__ring_view_set(tt__ring *r);

/* Reserve a record of payload bytes. Returns the record (its len is set) and the head to commit
 * in *new_head, or NULL if the ring is full. */
static inline uint8_t *tt__ring_reserve(tt__ring *r, uint32_t payload, uint64_t *new_head)
{
    uint64_t len = ((uint64_t)TT_REC_HDR + payload + 7) & ~(uint64_t)7;
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t off = head & r->mask;
    uint64_t contig = r->size - off;
    uint64_t need = len <= contig ? len : contig + len;
    if (TT_UNLIKELY(head + need - r->cached_tail > r->size)) {
        /* Pairs with the worker's release store of tail in tt__ring_release. */
        r->cached_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (tt__view.r == r) {
            tt__view.limit = r->cached_tail + r->size;
        }
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

/*
 * How far ahead of the head the producer takes ring lines for writing. A line of the ring is
 * last touched by the worker, which read it a lap ago, so the producer's first store to it
 * waits for the line to come back (from memory or from the worker's cache); stores queue up
 * behind it. Taking the lines about 25 events ahead (with prefetchw, which asks for them in a
 * writable state; 0F 0D is a hint, a NOP on CPUs without it) lets the next events, or the
 * next burst of them after a pause, find their lines ready. Two lines per event: a record of
 * 80 bytes crosses more than one line. Measured on bench/emit: calls 2..20 of a burst went
 * from about 20.5 to 16-18 ns per call; 4 KiB ahead was no better than none.
 */
#define TT_RING_PREFETCH_AHEAD 2048u

/*
 * And the three lines after the record's first two: after a pause, the lines the far prefetch
 * took in the last burst may be gone from this core's caches (the worker and the collector run
 * on it meanwhile), so each call also asks for the lines of the next one or two calls. Measured
 * in alternating runs of bench/emit on a quiet machine (docs/benchmarks.md, "emit: the tail
 * against Quill"): with two lines, calls 1-19 of a burst went from p90 125 to 85 ns. The third
 * line is for records of 130 bytes and more (attributes with the GenAI conventions' keys):
 * the call with three such attributes went from 47.4 to 40.0 ns (p50, 8 alternating runs), the
 * 80-byte record of bench/emit's log from 27.0 to 26.3 ns.
 */
#define TT_RING_PREFETCH_NEAR (2 * TT_CACHELINE)
#define TT_RING_PREFETCH_NEAR_LINES 3

static inline __attribute__((always_inline)) void tt__ring_prefetch_w(const uint8_t *p)
{
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" ::"m"(*(const uint8_t *)p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}

/* The one-pass span: where the producer may write its next record without reserving it first,
 * [*base, *end): the room it knows of before the wrap point (from its cached view of tail), at
 * most the largest record plus slack for 16-byte stores. *head receives the current head. The
 * producer then writes the record, stamps its header and commits head + len, or abandons it.
 * Read from the thread's view v of the ring (v->r is the ring). */
static inline __attribute__((always_inline)) void
tt__ring_span(const tt__ring_view *v, uint8_t **base, const uint8_t **end, uint64_t *head)
{
    const tt__ring_view *r = v; /* the same names as the ring's fields */
    uint64_t h = r->head;
    uint64_t off = h & r->mask;
    uint64_t room = r->limit - h;
    uint64_t contig = r->size - off;
    uint64_t cap = TT_REC_HDR + r->max_record + 32;
    room = room < contig ? room : contig;
    room = room < cap ? room : cap;
    *head = h;
    *base = r->data + off;
    *end = *base + room;
    tt__ring_prefetch_w(r->data + ((off + TT_RING_PREFETCH_AHEAD) & r->mask));
    tt__ring_prefetch_w(r->data + ((off + TT_RING_PREFETCH_AHEAD + TT_CACHELINE) & r->mask));
    for (unsigned i = 0; i < TT_RING_PREFETCH_NEAR_LINES; i++) {
        tt__ring_prefetch_w(r->data + ((off + TT_RING_PREFETCH_NEAR + i * TT_CACHELINE) & r->mask));
    }
}

/* Publish the records written up to new_head, and count one event. */
static inline void tt__ring_commit(tt__ring *r, uint64_t new_head)
{
    uint64_t n;
    if (TT_LIKELY(tt__view.r == r)) {
        n = ++tt__view.committed;
        tt__view.head = new_head;
    } else {
        n = atomic_load_explicit(&r->committed, memory_order_relaxed) + 1;
    }
    atomic_store_explicit(&r->committed, n, memory_order_relaxed);
    /* Pairs with the worker's acquire load of head in tt__ring_read. */
    atomic_store_explicit(&r->head, new_head, memory_order_release);
}

/* Count an event refused by the ring (dropped_full, dropped_large). Only the owner writes a
 * counter, so a plain add of relaxed loads and stores is exact. */
static inline void tt__ring_count_drop(_Atomic uint64_t *ctr)
{
    atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* --- consumer side (the worker) ------------------------------------------------------------- */

/* The committed records are [*tail, returned head). */
static inline uint64_t tt__ring_read(tt__ring *r, uint64_t *tail)
{
    *tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* Pairs with the producer's release store of head in tt__ring_commit. */
    return atomic_load_explicit(&r->head, memory_order_acquire);
}

/* The record at position pos (between tail and head). */
static inline const tt__rec_hdr *tt__ring_record(const tt__ring *r, uint64_t pos)
{
    return (const tt__rec_hdr *)(const void *)(r->data + (pos & r->mask));
}

/* The worker is done with everything before tail, n events of it: the producer may reuse it. */
static inline void tt__ring_release(tt__ring *r, uint64_t tail, uint64_t n)
{
    if (n) {
        atomic_store_explicit(&r->drained,
                              atomic_load_explicit(&r->drained, memory_order_relaxed) + n,
                              memory_order_relaxed);
    }
    /* Pairs with the producer's acquire load of tail in tt__ring_reserve. */
    atomic_store_explicit(&r->tail, tail, memory_order_release);
}

#endif

/*
 * emit.c - the hot path: tt_log, tt_metric, tt_step_begin/end, and the client's lifecycle.
 *
 * An event call finds the calling thread's ring through a one-entry thread-local cache,
 * writes its fields in place in one pass (measuring the strings as it copies them), stamps the
 * record with the cheap clock and its length, and publishes it with one release store. When the
 * one pass runs out of room (ring nearly full, wrap point, thread without a ring yet), the exact
 * path sizes the event first and reserves it, so a full ring drops the event and counts it
 * exactly. No lock, no system call, no allocation: the first event of a thread is the exception
 * (it creates the thread's ring).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "client/client.h"
#include "client/spool.h"

__thread struct tt__tls_cache tt__tls __attribute__((tls_model("initial-exec")));

#define MAX_ATTRS 64

/* Every client of the process, for fork handling. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static tt_client *all_clients;
static _Atomic uint64_t next_uid = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* --- errors and names ---------------------------------------------------------------------- */

TT_API const char *tt_strerror(int err)
{
    switch (err) {
    case TT_OK:
        return "success";
    case TT_ENOBUFS:
        return "ring full: event dropped (buffer_full)";
    case TT_E2BIG:
        return "event larger than max_event_bytes: dropped (too_large)";
    case TT_ESHUTDOWN:
        return "client closing: event dropped (closed)";
    case TT_EINVAL:
        return "invalid argument";
    case TT_ENOMEM:
        return "out of memory";
    case TT_ETIMEDOUT:
        return "deadline expired";
    case TT_EPROTO:
        return "protocol error";
    case TT_ECONNREFUSED:
        return "connection refused";
    default:
        if (err < 0 && err > -4096) {
            return strerror(-err);
        }
        return "unknown error";
    }
}

TT_API const char *tt_version(void)
{
    return TT_VERSION_STRING;
}

TT_API void tt_free(void *p)
{
    free(p);
}

TT_API const char *tt_drop_cause_name(int cause)
{
    static const char *const names[TT_DROP__COUNT] = {
        "buffer_full", "spool_full", "spool_error", "spool_corrupt", "too_large",
        "shutdown",    "oom",        "closed",      "rejected",      "no_ring"};
    if (cause < 0 || cause >= TT_DROP__COUNT) {
        return "unknown";
    }
    return names[cause];
}

/* --- rings --------------------------------------------------------------------------------- */

/* Runs when a thread that used the client exits: the worker drains and frees the ring. */
static void ring_thread_exit(void *p)
{
    tt__ring *r = p;
    /* Pairs with the worker's acquire load of orphaned in tt__worker_drain_all. */
    atomic_store_explicit(&r->orphaned, 1, memory_order_release);
}

/*
 * A ring's bytes are mapped on their own and populated at once (MAP_POPULATE), never left to be
 * faulted in by the event calls. A page fault on an anonymous page takes the process's mmap
 * lock when the page's mapping is being changed or is new, and any thread that maps, unmaps
 * or remaps memory (the worker's allocator, the application's) holds that lock for writing:
 * the producer then sleeps in the fault until it is released. With malloc'd rings that was
 * seen as 1-3 voluntary context switches per 2M events (test_stream.c's stopped-collector
 * test): glibc put the worker's 260 KiB frame buffers in mappings right beside the ring, so
 * every mmap and mremap of a frame touched the ring's mapping while its first lap faulted.
 */
static uint8_t *ring_data_map(uint64_t size)
{
    void *p =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void tt__ring_free(tt__ring *r)
{
    if (r) {
        if (r->data) {
            munmap(r->data, r->size);
        }
        free(r);
    }
}

static tt__ring *ring_new(tt_client *c, uint32_t id)
{
    tt__ring *r = aligned_alloc(TT_CACHELINE, sizeof *r);
    if (!r) {
        return NULL;
    }
    memset(r, 0, sizeof *r);
    r->size = c->cfg.ring_bytes;
    r->data = ring_data_map(r->size);
    if (!r->data) {
        free(r);
        return NULL;
    }
    r->mask = r->size - 1;
    r->max_record = c->max_record;
    r->id = id;
    return r;
}

tt__ring *tt__ring_slow(tt_client *c, int *rc)
{
    if (atomic_load_explicit(&c->closing, memory_order_acquire)) {
        atomic_fetch_add_explicit(&c->dropped_closed, 1, memory_order_relaxed);
        *rc = TT_ESHUTDOWN;
        return NULL;
    }
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    tt__ring *r = pthread_getspecific(c->key);
    if (!r) {
        if (c->n_rings >= c->cfg.max_threads) {
            pthread_mutex_unlock(&c->reg_lock);
            atomic_fetch_add_explicit(&c->dropped_no_ring, 1, memory_order_relaxed);
            *rc = TT_ENOBUFS;
            return NULL;
        }
        r = ring_new(c, ++c->next_ring_id);
        if (!r || pthread_setspecific(c->key, r) != 0) {
            pthread_mutex_unlock(&c->reg_lock);
            tt__ring_free(r);
            atomic_fetch_add_explicit(&c->dropped_oom, 1, memory_order_relaxed);
            *rc = TT_ENOMEM;
            return NULL;
        }
        r->next = c->rings;
        c->rings = r;
        c->n_rings++;
    }
    int started = c->worker_started;
    if (!started && tt__worker_start(c) == 0) {
        started = 1;
    }
    pthread_mutex_unlock(&c->reg_lock);
    if (!started) {
        atomic_fetch_add_explicit(&c->dropped_oom, 1, memory_order_relaxed);
        *rc = TT_ENOMEM;
        return NULL;
    }
    tt__tls.c = c;
    tt__tls.uid = atomic_load_explicit((_Atomic uint64_t *)&c->uid, memory_order_relaxed);
    tt__tls.r = r;
    return r;
}

/* --- record writing ------------------------------------------------------------------------ */

static inline uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
    return p + 4;
}

static inline uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
    return p + 8;
}

/* Copies n bytes of a string. The strings of an event are mostly short (names, keys), where a
 * call to memcpy costs more than the copy: up to 16 bytes are copied inline with at most two
 * overlapping loads and stores of a fixed size, which never touch a byte outside [s, s + n). */
static inline void copy_str(uint8_t *d, const char *s, uint32_t n)
{
    if (TT_LIKELY(n <= 16)) {
        if (n >= 8) {
            memcpy(d, s, 8);
            memcpy(d + n - 8, s + n - 8, 8);
        } else if (n >= 4) {
            memcpy(d, s, 4);
            memcpy(d + n - 4, s + n - 4, 4);
        } else if (n > 0) {
            d[0] = (uint8_t)s[0];
            d[n / 2] = (uint8_t)s[n / 2];
            d[n - 1] = (uint8_t)s[n - 1];
        }
        return;
    }
    memcpy(d, s, n);
}

static inline uint8_t *put_str(uint8_t *p, const char *s, uint32_t n)
{
    p = put_u32(p, n);
    copy_str(p, s, n);
    return p + n;
}

/* The length of a string (at most 2^24 bytes). The first 16 bytes are scanned inline, one at a
 * time (never reading past the terminator, so sanitizers stay quiet); longer strings go on
 * with strnlen. */
static inline uint32_t slen(const char *s)
{
    if (!s) {
        return 0;
    }
    for (uint32_t i = 0; i < 16; i++) {
        if (s[i] == 0) {
            return i;
        }
    }
    return 16 + (uint32_t)strnlen(s + 16, (1u << 24) - 16);
}

/* Sizes the attributes; lens receives the key and string lengths. Returns bytes or SIZE_MAX.
 * This and put_attrs are inline so that the two loops over the attributes sit in the event
 * call itself. */
static inline size_t attrs_size(const tt_attr *attrs, size_t n, uint32_t *lens)
{
    if (n > MAX_ATTRS || (n && !attrs)) {
        return SIZE_MAX;
    }
    size_t total = 4;
    for (size_t i = 0; i < n; i++) {
        uint32_t kl = slen(attrs[i].key);
        lens[2 * i] = kl;
        total += 4 + kl + 1;
        switch (attrs[i].type) {
        case TT_ATTR_STR:
            lens[2 * i + 1] = slen(attrs[i].v.s);
            total += 4 + lens[2 * i + 1];
            break;
        case TT_ATTR_INT:
        case TT_ATTR_DOUBLE:
            total += 8;
            break;
        case TT_ATTR_BOOL:
            total += 1;
            break;
        default:
            return SIZE_MAX;
        }
    }
    return total;
}

static inline uint8_t *put_attrs(uint8_t *p, const tt_attr *attrs, size_t n, const uint32_t *lens)
{
    p = put_u32(p, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        p = put_str(p, attrs[i].key ? attrs[i].key : "", lens[2 * i]);
        *p++ = (uint8_t)attrs[i].type;
        switch (attrs[i].type) {
        case TT_ATTR_STR:
            p = put_str(p, attrs[i].v.s ? attrs[i].v.s : "", lens[2 * i + 1]);
            break;
        case TT_ATTR_INT:
            p = put_u64(p, (uint64_t)attrs[i].v.i);
            break;
        case TT_ATTR_DOUBLE:
            memcpy(p, &attrs[i].v.d, 8);
            p += 8;
            break;
        case TT_ATTR_BOOL:
            *p++ = attrs[i].v.b ? 1 : 0;
            break;
        }
    }
    return p;
}

/* Reserve a record of kind with payload bytes on the calling thread's ring, counting a drop
 * when it cannot. On success *r and *nh are set and the header is stamped. Always inlined: as
 * a function of its own (gcc made one, called from five places) it cost a call, a frame and
 * the spills around them on every event. */
static inline __attribute__((always_inline)) uint8_t *rec_begin(tt_client *c, tt__ring **rp,
                                                                uint64_t *nh, uint16_t kind,
                                                                uint16_t aux, size_t payload,
                                                                int *rc)
{
    tt__ring *r = tt__ring_get(c, rc);
    if (TT_UNLIKELY(!r)) {
        return NULL;
    }
    if (TT_UNLIKELY(payload > r->max_record)) {
        tt__ring_count_drop(&r->dropped_large);
        *rc = TT_E2BIG;
        return NULL;
    }
    uint8_t *rec = tt__ring_reserve(r, (uint32_t)payload, nh);
    if (TT_UNLIKELY(!rec)) {
        tt__ring_count_drop(&r->dropped_full);
        *rc = TT_ENOBUFS;
        return NULL;
    }
    tt__rec_hdr *h = (tt__rec_hdr *)(void *)rec;
    h->kind = kind;
    h->aux = aux;
    h->ticks = tt__ticks();
    *rp = r;
    return rec + TT_REC_HDR;
}

/* --- the one-pass writer of tt_log and tt_metric -----------------------------------------------
 *
 * The usual event (a thread whose ring is cached, room in the ring) is written in one pass:
 * the writer takes all the contiguous room the producer knows of (up to the largest record),
 * writes every field while it measures the strings, and only then stamps the header with the
 * record's length and publishes it. Nothing is visible to the worker before the release store
 * of head, so a write that runs out of room is simply abandoned: the event then takes the
 * exact path below (sizes first, then reserve), which decides between success and an exactly
 * counted drop as before. The record format is the same on both paths.
 *
 * Strings are measured and copied 16 bytes at a time: one unaligned load, a compare with zero
 * and a store of all 16 bytes, whose bytes after the terminator are overwritten by the next
 * field or lie beyond the record (in free ring space, never past the writer's limit). The load
 * reads up to 15 bytes after the terminator, but never across a page boundary (a chunk that
 * would is copied a byte at a time), so it cannot fault. Sanitizer builds, which would
 * rightly flag those bytes, copy a byte at a time, and so do CPUs other than x86-64. Valgrind's
 * memcheck accepts the partial loads (tests/integration/test_valgrind.c).
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(TT_NO_OVERREAD) ||    \
    !defined(__x86_64__)
#define TT_OVERREAD 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define TT_OVERREAD 0
#endif
#endif
#ifndef TT_OVERREAD
#define TT_OVERREAD 1
#include <emmintrin.h>
#endif

#define PAGE_SIZE_MIN 4096u

/*
 * How far ahead of the head the writer takes ring lines for writing. A line of the ring is
 * last touched by the worker, which read it a lap ago, so the producer's first store to it
 * waits for the line to come back (from memory or from the worker's cache); stores queue up
 * behind it. Taking the lines about 25 events ahead (with prefetchw, which asks for them in a
 * writable state; 0F 0D is a hint, a NOP on CPUs without it) lets the next events, or the
 * next burst of them after a pause, find their lines ready. Two lines per event: a record of
 * 80 bytes crosses more than one line. Measured on bench/emit: calls 2..20 of a burst went
 * from about 20.5 to 16-18 ns per call; 4 KiB ahead was no better than none.
 */
#define PREFETCH_AHEAD 2048u

static inline __attribute__((always_inline)) void prefetch_w(const uint8_t *p)
{
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" ::"m"(*(const uint8_t *)p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}

/* Writes s (NULL: empty) as a 4-byte length and its bytes at p, never past end, and wants 16
 * bytes of room after the length even for a short string. Returns the byte after the string,
 * or NULL when it does not fit before end. */
static inline __attribute__((always_inline)) uint8_t *wr_str(uint8_t *p, const char *s,
                                                             const uint8_t *end)
{
    uint8_t *d = p + 4;
    if (TT_UNLIKELY(end - d < 16)) {
        return NULL;
    }
    if (!s) {
        put_u32(p, 0);
        return d;
    }
#if TT_OVERREAD
    for (;;) {
        if (TT_UNLIKELY(end - d < 16)) {
            return NULL;
        }
        uintptr_t in_page = (uintptr_t)s & (PAGE_SIZE_MIN - 1);
        if (TT_UNLIKELY(in_page > PAGE_SIZE_MIN - 16)) {
            /* The next 16 bytes cross a page: up to the boundary one at a time. */
            size_t k = PAGE_SIZE_MIN - in_page;
            for (size_t i = 0; i < k; i++) {
                if ((d[i] = (uint8_t)s[i]) == 0) {
                    d += i;
                    goto done;
                }
            }
            s += k;
            d += k;
            continue;
        }
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
        _mm_storeu_si128((__m128i *)(void *)d, x);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_setzero_si128()));
        if (TT_LIKELY(m)) {
            d += __builtin_ctz(m);
            break;
        }
        s += 16;
        d += 16;
    }
done:
#else
    for (;;) {
        if (TT_UNLIKELY(d >= end)) {
            return NULL;
        }
        uint8_t ch = (uint8_t)*s++;
        if (!ch) {
            break;
        }
        *d++ = ch;
    }
#endif
    put_u32(p, (uint32_t)(d - (p + 4)));
    return d;
}

/* Result of wr_attrs when an attribute has an unknown type. */
#define WR_BAD ((uint8_t *)1)

/* Writes the attribute list at p, never past end. Returns the byte after it, NULL when it does
 * not fit, WR_BAD for an attribute of an unknown type. */
static inline __attribute__((always_inline)) uint8_t *wr_attrs(uint8_t *p, const tt_attr *a,
                                                               size_t n, const uint8_t *end)
{
    if (TT_UNLIKELY(end - p < 4)) {
        return NULL;
    }
    p = put_u32(p, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        p = wr_str(p, a[i].key, end);
        if (TT_UNLIKELY(!p || end - p < 16)) {
            return NULL;
        }
        uint32_t t = (uint32_t)a[i].type;
        *p++ = (uint8_t)t;
        if (TT_LIKELY(t - TT_ATTR_INT <= TT_ATTR_DOUBLE - TT_ATTR_INT)) {
            memcpy(p, &a[i].v, 8); /* the int64 or the double, as put_attrs writes them */
            p += 8;
        } else if (t == TT_ATTR_STR) {
            p = wr_str(p, a[i].v.s, end);
            if (TT_UNLIKELY(!p)) {
                return NULL;
            }
        } else if (t == TT_ATTR_BOOL) {
            *p++ = a[i].v.b ? 1 : 0;
        } else {
            return WR_BAD;
        }
    }
    return p;
}

/* Where the one-pass writer may write on the calling thread's ring: [*base, *end), the room
 * the producer knows of before the wrap point, at most the largest record (with slack for the
 * 16-byte stores). NULL when the thread's ring is not cached (the exact path creates it). */
static inline __attribute__((always_inline)) tt__ring *wr_begin(tt_client *c, uint8_t **base,
                                                                const uint8_t **end, uint64_t *head)
{
    if (TT_UNLIKELY(tt__tls.c != c || tt__tls.uid != c->uid)) {
        return NULL;
    }
    tt__ring *r = tt__tls.r;
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t off = h & r->mask;
    uint64_t room = r->size - (h - r->cached_tail);
    uint64_t contig = r->size - off;
    uint64_t cap = TT_REC_HDR + r->max_record + 32;
    room = room < contig ? room : contig;
    room = room < cap ? room : cap;
    *head = h;
    *base = r->data + off;
    *end = *base + room;
    prefetch_w(r->data + ((off + PREFETCH_AHEAD) & r->mask));
    prefetch_w(r->data + ((off + PREFETCH_AHEAD + TT_CACHELINE) & r->mask));
    return r;
}

/* Stamps the record written at base up to p and publishes it. Returns 0, or -1 when its
 * payload is over the limit (nothing published: the exact path counts the drop). */
static inline __attribute__((always_inline)) int wr_commit(tt__ring *r, uint64_t head,
                                                           uint8_t *base, const uint8_t *p,
                                                           uint16_t kind, uint16_t aux,
                                                           uint64_t ticks)
{
    uint64_t payload = (uint64_t)(p - base) - TT_REC_HDR;
    if (TT_UNLIKELY(payload > r->max_record)) {
        return -1;
    }
    uint64_t len = (TT_REC_HDR + payload + 7) & ~(uint64_t)7;
    /* Room and contig are multiples of 8, so the rounded record is still within them. */
    tt__rec_hdr h = {.len = (uint32_t)len, .kind = kind, .aux = aux, .ticks = ticks};
    memcpy(base, &h, sizeof h);
    tt__ring_commit(r, head + len);
    return 0;
}

/* The exact path: sizes first, then a reservation that counts a drop when it fails. Arguments
 * that make no event (counted as too_large would be wrong) are refused without touching the
 * ring: the caller gets TT_EINVAL. */
static __attribute__((noinline)) int log_exact(tt_client *c, const char *session,
                                               tt_severity severity, const char *message,
                                               const tt_attr *attrs, size_t nattrs)
{
    uint32_t lens[2 * MAX_ATTRS];
    size_t asz = nattrs ? attrs_size(attrs, nattrs, lens) : 4;
    if (TT_UNLIKELY(asz == SIZE_MAX)) {
        return TT_EINVAL;
    }
    uint32_t ls = slen(session), lm = slen(message);
    size_t payload = 8 + ls + lm + asz;
    tt__ring *r;
    uint64_t nh;
    int rc = 0;
    uint8_t *p = rec_begin(c, &r, &nh, TT_REC_LOG, (uint16_t)severity, payload, &rc);
    if (TT_UNLIKELY(!p)) {
        return rc;
    }
    p = put_str(p, session, ls);
    p = put_str(p, message, lm);
    if (nattrs) {
        put_attrs(p, attrs, nattrs, lens);
    } else {
        put_u32(p, 0);
    }
    tt__ring_commit(r, nh);
    return 0;
}

TT_API int tt_log(tt_client *c, const char *session, tt_severity severity, const char *message,
                  const tt_attr *attrs, size_t nattrs)
{
    if (TT_UNLIKELY(!c || nattrs > MAX_ATTRS || (nattrs && !attrs))) {
        return TT_EINVAL;
    }
    uint8_t *base;
    const uint8_t *end;
    uint64_t head;
    tt__ring *r = wr_begin(c, &base, &end, &head);
    if (TT_LIKELY(r)) {
        uint64_t ticks = tt__ticks();
        uint8_t *p = wr_str(base + TT_REC_HDR, session, end);
        p = p ? wr_str(p, message, end) : NULL;
        p = p ? wr_attrs(p, attrs, nattrs, end) : NULL;
        if (TT_UNLIKELY(p == WR_BAD)) {
            return TT_EINVAL;
        }
        if (TT_LIKELY(p) &&
            wr_commit(r, head, base, p, TT_REC_LOG, (uint16_t)severity, ticks) == 0) {
            return 0;
        }
    }
    return log_exact(c, session, severity, message, attrs, nattrs);
}

static __attribute__((noinline)) int metric_exact(tt_client *c, const char *session,
                                                  tt_metric_kind kind, const char *name,
                                                  double value, const char *unit,
                                                  const tt_attr *attrs, size_t nattrs)
{
    uint32_t lens[2 * MAX_ATTRS];
    size_t asz = nattrs ? attrs_size(attrs, nattrs, lens) : 4;
    if (TT_UNLIKELY(asz == SIZE_MAX)) {
        return TT_EINVAL;
    }
    uint32_t ls = slen(session), ln = slen(name), lu = slen(unit);
    size_t payload = 8 + 12 + ls + ln + lu + asz;
    tt__ring *r;
    uint64_t nh;
    int rc = 0;
    uint8_t *p = rec_begin(c, &r, &nh, TT_REC_METRIC, (uint16_t)kind, payload, &rc);
    if (TT_UNLIKELY(!p)) {
        return rc;
    }
    memcpy(p, &value, 8);
    p += 8;
    p = put_str(p, session, ls);
    p = put_str(p, name, ln);
    p = put_str(p, unit, lu);
    if (nattrs) {
        put_attrs(p, attrs, nattrs, lens);
    } else {
        put_u32(p, 0);
    }
    tt__ring_commit(r, nh);
    return 0;
}

TT_API int tt_metric(tt_client *c, const char *session, tt_metric_kind kind, const char *name,
                     double value, const char *unit, const tt_attr *attrs, size_t nattrs)
{
    if (TT_UNLIKELY(!c || !name || kind < TT_COUNTER || kind > TT_SCORE || nattrs > MAX_ATTRS ||
                    (nattrs && !attrs))) {
        return TT_EINVAL;
    }
    uint8_t *base;
    const uint8_t *end;
    uint64_t head;
    tt__ring *r = wr_begin(c, &base, &end, &head);
    if (TT_LIKELY(r)) {
        uint64_t ticks = tt__ticks();
        uint8_t *p = NULL;
        if (TT_LIKELY(end - base >= TT_REC_HDR + 8)) {
            memcpy(base + TT_REC_HDR, &value, 8);
            p = wr_str(base + TT_REC_HDR + 8, session, end);
        }
        p = p ? wr_str(p, name, end) : NULL;
        p = p ? wr_str(p, unit, end) : NULL;
        p = p ? wr_attrs(p, attrs, nattrs, end) : NULL;
        if (TT_UNLIKELY(p == WR_BAD)) {
            return TT_EINVAL;
        }
        if (TT_LIKELY(p) &&
            wr_commit(r, head, base, p, TT_REC_METRIC, (uint16_t)kind, ticks) == 0) {
            return 0;
        }
    }
    return metric_exact(c, session, kind, name, value, unit, attrs, nattrs);
}

TT_API int tt_step_begin(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                         const char *session, const char *name, const char *query)
{
    if (TT_UNLIKELY(!c || !step || kind < TT_STEP_REASONING || kind > TT_STEP_OTHER)) {
        return TT_EINVAL;
    }
    step->id = 0;
    step->parent = parent ? parent->id : 0;
    step->start = tt__ticks();
    int rc = 0;
    tt__ring *r = tt__ring_get(c, &rc);
    if (TT_UNLIKELY(!r)) {
        return rc;
    }
    /* Ids are unique per instance without any shared counter: ring id, then a ring-local
     * sequence. */
    step->id = ((uint64_t)r->id << 40) | (++r->step_seq & ((1ull << 40) - 1));
    uint32_t ls = slen(session), ln = slen(name), lq = slen(query);
    size_t payload = 16 + 12 + ls + ln + lq;
    uint64_t nh;
    uint8_t *p = rec_begin(c, &r, &nh, TT_REC_STEP_BEGIN, (uint16_t)kind, payload, &rc);
    if (TT_UNLIKELY(!p)) {
        return rc;
    }
    ((tt__rec_hdr *)(void *)(p - TT_REC_HDR))->ticks = step->start;
    p = put_u64(p, step->id);
    p = put_u64(p, step->parent);
    p = put_str(p, session, ls);
    p = put_str(p, name, ln);
    put_str(p, query, lq);
    tt__ring_commit(r, nh);
    return 0;
}

TT_API int tt_step_end(tt_client *c, const tt_step *step, tt_status status, int64_t result_bytes,
                       const char *error)
{
    if (TT_UNLIKELY(!c || !step || status > TT_STATUS_CANCELLED)) {
        return TT_EINVAL;
    }
    if (TT_UNLIKELY(step->id == 0)) {
        return TT_EINVAL;
    }
    uint32_t le = slen(error);
    size_t payload = 24 + 4 + le;
    tt__ring *r;
    uint64_t nh;
    int rc = 0;
    uint8_t *p = rec_begin(c, &r, &nh, TT_REC_STEP_END, (uint16_t)status, payload, &rc);
    if (TT_UNLIKELY(!p)) {
        return rc;
    }
    p = put_u64(p, step->id);
    p = put_u64(p, step->start);
    p = put_u64(p, (uint64_t)result_bytes);
    put_str(p, error, le);
    tt__ring_commit(r, nh);
    return 0;
}

uint8_t *tt__emit_encoded_begin(tt_client *c, size_t payload, tt__ring **r, uint64_t *new_head,
                                int *rc)
{
    if (TT_UNLIKELY(!c)) {
        *rc = TT_EINVAL;
        return NULL;
    }
    uint8_t *p = rec_begin(c, r, new_head, TT_REC_ENCODED, 0, 4 + payload, rc);
    return p ? put_u32(p, (uint32_t)payload) : NULL;
}

void tt__emit_encoded_commit(tt__ring *r, uint8_t *payload, uint64_t new_head)
{
    (void)payload;
    tt__ring_commit(r, new_head);
}

/* --- statistics ---------------------------------------------------------------------------- */

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

TT_API int tt_stats_get(tt_client *c, tt_stats *out, size_t size)
{
    if (!c || !out || size == 0) {
        return TT_EINVAL;
    }
    tt_stats s;
    memset(&s, 0, sizeof s);
    uint64_t in_rings = 0;
    pthread_mutex_lock(&c->reg_lock);
    for (tt__ring *r = c->rings; r; r = r->next) {
        uint64_t committed = LD(r->committed), drained = LD(r->drained);
        s.emitted += committed + LD(r->dropped_full) + LD(r->dropped_large);
        s.dropped[TT_DROP_BUFFER_FULL] += LD(r->dropped_full);
        s.dropped[TT_DROP_TOO_LARGE] += LD(r->dropped_large);
        in_rings += committed > drained ? committed - drained : 0;
    }
    pthread_mutex_unlock(&c->reg_lock);
    tt__wstats *w = &c->ws;
    s.emitted +=
        LD(w->orphan_emitted) + LD(c->dropped_closed) + LD(c->dropped_no_ring) + LD(c->dropped_oom);
    s.dropped[TT_DROP_BUFFER_FULL] += LD(w->orphan_dropped_full);
    s.dropped[TT_DROP_TOO_LARGE] += LD(w->orphan_dropped_large);
    s.dropped[TT_DROP_CLOSED] += LD(c->dropped_closed);
    s.dropped[TT_DROP_NO_RING] += LD(c->dropped_no_ring);
    s.dropped[TT_DROP_OOM] += LD(c->dropped_oom);
    for (int i = 0; i < TT_DROP__COUNT; i++) {
        s.dropped[i] += LD(w->dropped[i]);
        s.dropped_total += s.dropped[i];
    }
    s.sent = LD(w->sent);
    s.acked = LD(w->acked);
    s.possibly_delivered = LD(w->possibly_delivered);
    s.spooled = LD(w->in_spool);
    s.buffered = in_rings + LD(w->in_batch) + LD(w->in_window) + s.spooled;
    s.frames_sent = LD(w->frames_sent);
    s.bytes_sent = LD(w->bytes_sent);
    s.reconnects = LD(w->reconnects);
    s.connected = LD(w->connected);
    s.inherited = LD(w->inherited);
    memset(out, 0, size);
    memcpy(out, &s, size < sizeof s ? size : sizeof s);
    return 0;
}

TT_API int tt_instance_id(tt_client *c, uint8_t out[16])
{
    if (!c || !out) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    memcpy(out, c->instance, 16);
    pthread_mutex_unlock(&c->reg_lock);
    return 0;
}

/* Condition variables here wait on the monotonic clock, like every deadline of the library. */
static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* --- fork ---------------------------------------------------------------------------------- */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
    for (tt_client *c = all_clients; c; c = c->all_next) {
        pthread_mutex_lock(&c->reg_lock);
        pthread_mutex_lock(&c->ctl_lock);
        pthread_mutex_lock(&c->guard.lock); /* the guard's state is whole in the child */
    }
}

static void atfork_parent(void)
{
    for (tt_client *c = all_clients; c; c = c->all_next) {
        pthread_mutex_unlock(&c->guard.lock);
        pthread_mutex_unlock(&c->ctl_lock);
        pthread_mutex_unlock(&c->reg_lock);
    }
    pthread_mutex_unlock(&all_lock);
}

/* In the child only the forking thread exists. Nothing here makes a system call: the client is
 * marked, and its first use in the child resets it (tt__client_after_fork). Changing uid makes
 * every thread-local cache miss. */
static void atfork_child(void)
{
    for (tt_client *c = all_clients; c; c = c->all_next) {
        pthread_mutex_unlock(&c->guard.lock);
        pthread_mutex_unlock(&c->ctl_lock);
        pthread_mutex_unlock(&c->reg_lock);
        c->fork_pending = 1;
        atomic_store_explicit((_Atomic uint64_t *)&c->uid, atomic_fetch_add(&next_uid, 1),
                              memory_order_relaxed);
    }
    pthread_mutex_unlock(&all_lock);
}

static void atfork_register(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int fill_random(uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom(p + got, n - got, 0);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        got += (size_t)k;
    }
    return 0;
}

/* Called with c->reg_lock held, in a forked child, before the child's first event. */
void tt__client_after_fork(tt_client *c)
{
    c->fork_pending = 0;
    if (fill_random(c->instance, sizeof c->instance) != 0) {
        /* Without entropy, derive a distinct id from the pid and the clock. */
        uint64_t a = (uint64_t)getpid(), b = tt__wall_ns();
        memcpy(c->instance, &a, 8);
        memcpy(c->instance + 8, &b, 8);
    }
    c->start_unix_ns = tt__wall_ns();
    /* The parent's threads do not exist here: their rings are freed, and the forking thread's
     * ring is emptied, so none of the parent's events is ever sent or spooled by the child. */
    tt__ring *mine = pthread_getspecific(c->key);
    tt__ring **pp = &c->rings;
    c->n_rings = 0;
    while (*pp) {
        tt__ring *r = *pp;
        if (r == mine) {
#ifdef MADV_POPULATE_WRITE
            /* The ring's pages are shared with the parent until written: copy them now rather
             * than in the child's next event calls (see ring_data_map). */
            madvise(r->data, r->size, MADV_POPULATE_WRITE);
#endif
            atomic_store(&r->tail, atomic_load(&r->head));
            r->cached_tail = atomic_load(&r->head);
            atomic_store(&r->committed, 0);
            atomic_store(&r->drained, 0);
            atomic_store(&r->dropped_full, 0);
            atomic_store(&r->dropped_large, 0);
            c->n_rings++;
            pp = &r->next;
        } else {
            *pp = r->next;
            tt__ring_free(r);
        }
    }
    tt__worker_free(c); /* forgets the parent's worker state without joining it */
    memset(&c->ws, 0, sizeof c->ws);
    atomic_store(&c->dropped_closed, 0);
    atomic_store(&c->dropped_no_ring, 0);
    atomic_store(&c->dropped_oom, 0);
    if (c->wake_fd >= 0) {
        close(c->wake_fd);
    }
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    cond_init_mono(&c->ctl_cond);
    c->flush_req = c->flush_done = 0;
    c->worker_exited = 0;
    c->close_deadline_ns = 0;
    c->worker_started = 0;
    if (c->spool) {
        tt__spool_after_fork(c->spool, c->instance);
    }
}

/* --- open and close ------------------------------------------------------------------------ */

static void client_free(tt_client *c)
{
    tt__ring *r = c->rings;
    while (r) {
        tt__ring *next = r->next;
        tt__ring_free(r);
        r = next;
    }
    if (c->wake_fd >= 0) {
        close(c->wake_fd);
    }
    tt__spool_close(c->spool);
    tt__guard_fini(c);
    pthread_key_delete(c->key);
    pthread_mutex_destroy(&c->reg_lock);
    pthread_mutex_destroy(&c->ctl_lock);
    pthread_cond_destroy(&c->ctl_cond);
    free(c);
}

TT_API int tt_open(tt_client **out, const tt_config *cfg)
{
    if (!out) {
        return TT_EINVAL;
    }
    *out = NULL;
    pthread_once(&atfork_once, atfork_register);
    tt__clock_init();
    tt__cfg v;
    if (cfg) {
        v = cfg->v;
    } else {
        tt__cfg_defaults(&v);
    }
    char err[256];
    if (tt__cfg_validate(&v, err, sizeof err) != 0) {
        return TT_EINVAL;
    }
    tt_client *c = aligned_alloc(TT_CACHELINE, (sizeof *c + TT_CACHELINE - 1) & ~(size_t)63);
    if (!c) {
        return TT_ENOMEM;
    }
    memset(c, 0, sizeof *c);
    c->cfg = v;
    c->wake_fd = -1;
    c->max_record = v.max_event_bytes;
    tt__endpoint_parse(v.endpoint, &c->ep, err, sizeof err);
    pthread_mutex_init(&c->reg_lock, NULL);
    pthread_mutex_init(&c->ctl_lock, NULL);
    cond_init_mono(&c->ctl_cond);
    tt__guard_init(c);
    int rc = pthread_key_create(&c->key, ring_thread_exit);
    if (rc) {
        tt__guard_fini(c);
        pthread_mutex_destroy(&c->reg_lock);
        pthread_mutex_destroy(&c->ctl_lock);
        pthread_cond_destroy(&c->ctl_cond);
        free(c);
        return -rc;
    }
    c->uid = atomic_fetch_add(&next_uid, 1);
    c->start_unix_ns = tt__wall_ns();
    rc = fill_random(c->instance, sizeof c->instance);
    if (rc == 0) {
        c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        rc = c->wake_fd < 0 ? -errno : 0;
    }
    if (rc == 0 && v.spool_dir[0]) {
        rc = tt__spool_open(&c->spool, v.spool_dir, v.spool_max_bytes, (int)v.spool_policy, v.agent,
                            c->instance);
    }
    if (rc == 0) {
        pthread_mutex_lock(&c->reg_lock);
        rc = tt__worker_start(c);
        pthread_mutex_unlock(&c->reg_lock);
    }
    if (rc) {
        client_free(c);
        return rc;
    }
    pthread_mutex_lock(&all_lock);
    c->all_next = all_clients;
    all_clients = c;
    pthread_mutex_unlock(&all_lock);
    *out = c;
    return 0;
}

static void unregister(tt_client *c)
{
    pthread_mutex_lock(&all_lock);
    for (tt_client **pp = &all_clients; *pp; pp = &(*pp)->all_next) {
        if (*pp == c) {
            *pp = c->all_next;
            break;
        }
    }
    pthread_mutex_unlock(&all_lock);
}

static int close_impl(tt_client *c, uint32_t timeout_ms, tt_stats *out, size_t size)
{
    if (!c) {
        return 0;
    }
    uint64_t deadline = tt__mono_ns() + (uint64_t)timeout_ms * 1000000u;
    /* Pairs with the acquire load in tt__ring_slow; the uid change sends every thread's next
     * event there. */
    atomic_store_explicit(&c->closing, 1, memory_order_release);
    atomic_store_explicit((_Atomic uint64_t *)&c->uid, atomic_fetch_add(&next_uid, 1),
                          memory_order_release);
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    int started = c->worker_started;
    pthread_mutex_unlock(&c->reg_lock);
    int result = 0;
    if (started) {
        pthread_mutex_lock(&c->ctl_lock);
        c->close_deadline_ns = deadline;
        pthread_mutex_unlock(&c->ctl_lock);
        tt__worker_wake(c);
        pthread_join(c->worker, NULL);
        pthread_mutex_lock(&c->ctl_lock);
        result = c->close_result;
        pthread_mutex_unlock(&c->ctl_lock);
    }
    tt__worker_free(c);
    unregister(c);
    if (out && size) {
        tt_stats_get(c, out, size);
    }
    client_free(c);
    return result;
}

TT_API int tt_close(tt_client *c, uint32_t timeout_ms)
{
    return close_impl(c, timeout_ms, NULL, 0);
}

TT_API int tt_close_stats(tt_client *c, uint32_t timeout_ms, tt_stats *out, size_t size)
{
    return close_impl(c, timeout_ms, out, size);
}

TT_API int tt_flush(tt_client *c, uint32_t timeout_ms)
{
    if (!c) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    int started = c->worker_started || tt__worker_start(c) == 0;
    pthread_mutex_unlock(&c->reg_lock);
    if (!started) {
        return TT_ENOMEM;
    }
    struct timespec until = tt__deadline_ms(CLOCK_MONOTONIC, timeout_ms);
    pthread_mutex_lock(&c->ctl_lock);
    uint64_t ticket = ++c->flush_req;
    pthread_mutex_unlock(&c->ctl_lock);
    tt__worker_wake(c);
    pthread_mutex_lock(&c->ctl_lock);
    int rc = 0;
    while (c->flush_done < ticket && !c->worker_exited) {
        if (pthread_cond_timedwait(&c->ctl_cond, &c->ctl_lock, &until) == ETIMEDOUT) {
            rc = c->flush_done >= ticket ? 0 : TT_ETIMEDOUT;
            break;
        }
    }
    if (c->flush_done < ticket) {
        rc = TT_ETIMEDOUT;
    }
    pthread_mutex_unlock(&c->ctl_lock);
    return rc;
}

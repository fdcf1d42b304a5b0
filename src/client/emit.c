/*
 * emit.c - the hot path: tt_log, tt_metric, tt_step_begin/end, and the records of the modules
 * whose events are encoded ahead (tt__emit_encoded_begin/commit, for responses and tokens).
 *
 * An event call finds the calling thread's ring through a one-entry thread-local cache,
 * writes its fields in place in one pass (measuring the strings as it copies them), stamps the
 * record with the cheap clock and its length, and publishes it with one release store. When the
 * one pass runs out of room (ring nearly full, wrap point, thread without a ring yet), the exact
 * path sizes the event first and reserves it, so a full ring drops the event and counts it
 * exactly. No lock, no system call, no allocation: the first event of a thread is the exception
 * (it creates the thread's ring, client.c). The ring's protocol is in ring.h; this file is its
 * record encoders.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "client/trace.h"

#define MAX_ATTRS 64

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

#if TT_OVERREAD
/* A string of fewer than 32 bytes, as short_len read it: n bytes, in x[0] and (n >= 16) x[1]. */
typedef struct short_str {
    __m128i x[2];
} short_str;

/* How many bytes of s come before its terminator, when fewer than 32 and the 16-byte blocks that
 * hold them lie in one page; -1 otherwise (NULL, a longer string, a page boundary). *v receives
 * the bytes: one 16-byte load for a string of up to 15 bytes, two for 16 to 31 (the attribute
 * keys of the GenAI conventions, gen_ai.usage.input_tokens and the like, are 17 to 31). */
static inline __attribute__((always_inline)) int short_len(const char *s, short_str *v)
{
    uintptr_t in_page = (uintptr_t)s & (PAGE_SIZE_MIN - 1);
    if (TT_UNLIKELY(!s || in_page > PAGE_SIZE_MIN - 16)) {
        return -1;
    }
    const __m128i zero = _mm_setzero_si128();
    v->x[0] = _mm_loadu_si128((const __m128i *)(const void *)s);
    unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v->x[0], zero));
    v->x[1] = zero; /* not stored (put_short stores it for n >= 16 only) */
    if (TT_LIKELY(m)) {
        return __builtin_ctz(m);
    }
    if (TT_UNLIKELY(in_page > PAGE_SIZE_MIN - 32)) {
        return -1;
    }
    v->x[1] = _mm_loadu_si128((const __m128i *)(const void *)(s + 16));
    m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v->x[1], zero));
    return m ? 16 + __builtin_ctz(m) : -1;
}

/* Writes a string measured by short_len (n bytes, held in v) as its length and one or two
 * 16-byte stores. Returns the byte after it. */
static inline __attribute__((always_inline)) uint8_t *put_short(uint8_t *p, int n,
                                                                const short_str *v)
{
    put_u32(p, (uint32_t)n);
    _mm_storeu_si128((__m128i *)(void *)(p + 4), v->x[0]);
    if (n >= 16) {
        _mm_storeu_si128((__m128i *)(void *)(p + 20), v->x[1]);
    }
    return p + 4 + n;
}

/* The most room an attribute takes when its strings are shorter than 32 bytes: key 4 + 32
 * (two 16-byte stores), type 1, value 4 + 32. */
#define WR_ATTR_SHORT 73
#endif

/* Writes the attribute list at p, never past end. Returns the byte after it, NULL when it does
 * not fit, WR_BAD for an attribute of an unknown type.
 *
 * The usual attribute has a key and a string value shorter than 32 bytes: when the room holds
 * n of those at their largest, the attributes are written without a room check per field,
 * each string with one or two 16-byte loads and stores, until one is not short; from there on
 * (or when the room is smaller) each field is checked. */
static inline __attribute__((always_inline)) uint8_t *wr_attrs(uint8_t *p, const tt_attr *a,
                                                               size_t n, const uint8_t *end)
{
    if (TT_UNLIKELY(end - p < 4)) {
        return NULL;
    }
    p = put_u32(p, (uint32_t)n);
    size_t i = 0;
#if TT_OVERREAD
    if (TT_LIKELY((size_t)(end - p) >= n * WR_ATTR_SHORT)) {
        for (; i < n; i++) {
            short_str x;
            int kl = short_len(a[i].key, &x);
            if (TT_UNLIKELY(kl < 0)) {
                break; /* the checked loop writes this attribute */
            }
            p = put_short(p, kl, &x);
            uint32_t t = (uint32_t)a[i].type;
            *p++ = (uint8_t)t;
            if (TT_LIKELY(t - TT_ATTR_INT <= TT_ATTR_DOUBLE - TT_ATTR_INT)) {
                memcpy(p, &a[i].v, 8);
                p += 8;
            } else if (t == TT_ATTR_STR) {
                int vl = short_len(a[i].v.s, &x);
                if (TT_UNLIKELY(vl < 0)) {
                    p = wr_str(p, a[i].v.s, end); /* the rest is checked */
                    if (TT_UNLIKELY(!p)) {
                        return NULL;
                    }
                    i++;
                    break;
                }
                p = put_short(p, vl, &x);
            } else if (t == TT_ATTR_BOOL) {
                *p++ = a[i].v.b ? 1 : 0;
            } else {
                return WR_BAD;
            }
        }
    }
#endif
    for (; i < n; i++) {
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

/* Where the one-pass writer may write on the calling thread's ring: [*base, *end), the ring's
 * span (tt__ring_span). NULL when the thread's ring is not cached (the exact path creates
 * it). */
static inline __attribute__((always_inline)) tt__ring *wr_begin(tt_client *c, uint8_t **base,
                                                                const uint8_t **end, uint64_t *head)
{
    if (TT_UNLIKELY(tt__tls.c != c || tt__tls.uid != tt__client_uid(c))) {
        return NULL;
    }
    tt__ring *r = tt__tls.r;
    if (TT_UNLIKELY(tt__view.r != r)) {
        tt__ring_view_set(r);
    }
    tt__ring_span(&tt__view, base, end, head);
    return r;
}

/* The one-pass writer's timestamp: tt__ticks() with the clock's kind read from the thread's own
 * cache line (tt__tls.tsc) rather than from the global. The benchmark build that stamps a
 * constant (bench/emit_nots.h) defines tt__ticks as a macro, which is kept. */
#ifdef tt__ticks
#define wr_ticks() tt__ticks()
#else
static inline __attribute__((always_inline)) uint64_t wr_ticks(void)
{
    return TT_LIKELY(tt__tls.tsc) ? __builtin_ia32_rdtsc() : tt__mono_ns();
}
#endif

/* Stamps the record written at base up to p and publishes it. Returns 0, or -1 when its
 * payload is over the limit (nothing published: the exact path counts the drop). */
static inline __attribute__((always_inline)) int wr_commit(tt__ring *r, uint64_t head,
                                                           uint8_t *base, const uint8_t *p,
                                                           uint16_t kind, uint16_t aux,
                                                           uint64_t ticks)
{
    uint64_t payload = (uint64_t)(p - base) - TT_REC_HDR;
    if (TT_UNLIKELY(payload > tt__view.max_record)) {
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
    uint32_t redact;
    if (TT_UNLIKELY(c && (redact = atomic_load_explicit(&c->comply_redact, memory_order_relaxed)) !=
                             0)) {
        return tt__comply_log(c, redact, session, severity, message, attrs, nattrs);
    }
    return tt__log_raw(c, session, severity, message, attrs, nattrs);
}

int tt__log_raw(tt_client *c, const char *session, tt_severity severity, const char *message,
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
        uint64_t ticks = wr_ticks();
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

/* --- TT_LOG's call sites (include/telltale.h, site.c) --------------------------------------
 *
 * A registered site's event is written as its id, the session and the values: the message and
 * the keys stay in the registry, and the worker's encoder puts them back (encode.c), so the
 * event stored is the one tt_log would store. Everything else (the site's first call, a site
 * past the registry's size, a compliance policy that redacts, a ring without room for the
 * one-pass writer, an event over max_event_bytes) goes through tt_log whole, which counts
 * and drops exactly as for any log. */

static __attribute__((noinline)) int log_site_whole(tt_client *c, tt_log_site *site,
                                                    const char *session, tt_severity severity,
                                                    const tt_attr_value *values)
{
    uint32_t id = __atomic_load_n(&site->id, __ATOMIC_ACQUIRE);
    if (id == 0) {
        id = tt__site_register(site);
    }
    if (id == TT__SITE_INVALID || site->nattrs > TT_LOG_MAX_ATTRS) {
        return TT_EINVAL;
    }
    tt_attr attrs[TT_LOG_MAX_ATTRS];
    for (uint32_t i = 0; i < site->nattrs; i++) {
        attrs[i].key = site->keys[i];
        attrs[i].type = (tt_attr_type)site->types[i];
        memcpy(&attrs[i].v, &values[i], sizeof attrs[i].v);
    }
    return tt_log(c, session, severity, site->message, attrs, site->nattrs);
}

TT_API int tt_log_at(tt_client *c, tt_log_site *site, const char *session, tt_severity severity,
                     const tt_attr_value *values)
{
    if (TT_UNLIKELY(!c || !site || !values)) {
        return TT_EINVAL;
    }
    uint32_t id = __atomic_load_n(&site->id, __ATOMIC_ACQUIRE);
    if (TT_UNLIKELY(id - 1 >= TT__SITES_MAX ||
                    atomic_load_explicit(&c->comply_redact, memory_order_relaxed) != 0)) {
        return log_site_whole(c, site, session, severity, values);
    }
    uint8_t *base;
    const uint8_t *end;
    uint64_t head;
    tt__ring *r = wr_begin(c, &base, &end, &head);
    if (TT_LIKELY(r)) {
        uint64_t ticks = wr_ticks();
        uint8_t *s = base + TT_REC_HDR + 4;
        /* The id, then the session (wr_str checks its own room), then the values: each a
         * string (its length and bytes) or the 8 bytes of its tt_attr_value. */
        uint8_t *p = wr_str(s, session, end); /* room for the id too, when not NULL */
        uint32_t n = site->nattrs;
        if (TT_LIKELY(p && end - p >= 8 * (ptrdiff_t)n)) {
            put_u32(s - 4, id);
            /* The bytes of the event as tt_log would write it (max_event_bytes): the site's
             * fixed part, the session, the strings (below). */
            uint64_t size = __atomic_load_n(&site->fixed, __ATOMIC_RELAXED) + (uint64_t)(p - s);
            if (TT_LIKELY(__atomic_load_n(&site->strs, __ATOMIC_RELAXED) == 0)) {
                for (uint32_t i = 0; i < n; i++) {
                    memcpy(p + 8 * i, &values[i], 8);
                }
                p += 8 * n;
            } else {
                const unsigned char *types = site->types;
                for (uint32_t i = 0; p && i < n; i++) {
                    if (types[i] != TT_ATTR_STR) {
                        if (TT_UNLIKELY(end - p < 8)) {
                            p = NULL;
                            break;
                        }
                        memcpy(p, &values[i], 8);
                        p += 8;
                    } else {
                        uint8_t *q = wr_str(p, values[i].s, end);
                        size += q ? (uint64_t)(q - p) : 0;
                        p = q;
                    }
                }
            }
            if (TT_LIKELY(p) && size <= tt__view.max_record &&
                wr_commit(r, head, base, p, TT_REC_LOG_SITE, (uint16_t)severity, ticks) == 0) {
                return 0;
            }
        }
    }
    return log_site_whole(c, site, session, severity, values);
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
        uint64_t ticks = wr_ticks();
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
    const struct tt__comply_policy *pol =
        atomic_load_explicit(&c->comply_policy, memory_order_acquire);
    if (TT_UNLIKELY(pol != NULL)) {
        return tt__comply_step_begin(c, step, parent, kind, session, name, query, NULL);
    }
    return tt__step_begin_raw(c, step, parent, kind, session, name, query, NULL);
}

TT_API int tt_step_begin_ctx(tt_client *c, tt_step *step, const tt_step *parent,
                             const char *traceparent, tt_step_kind kind, const char *session,
                             const char *name, const char *query)
{
    if (!traceparent) {
        return tt_step_begin(c, step, parent, kind, session, name, query);
    }
    uint8_t ctx[TT_TRACE_CTX_BYTES];
    if (TT_UNLIKELY(!c || !step || kind < TT_STEP_REASONING || kind > TT_STEP_OTHER ||
                    tt__traceparent_parse(traceparent, ctx) != 0)) {
        if (step) {
            step->id = 0;
        }
        return TT_EINVAL;
    }
    const struct tt__comply_policy *pol =
        atomic_load_explicit(&c->comply_policy, memory_order_acquire);
    if (TT_UNLIKELY(pol != NULL)) {
        return tt__comply_step_begin(c, step, parent, kind, session, name, query, ctx);
    }
    return tt__step_begin_raw(c, step, parent, kind, session, name, query, ctx);
}

static int step_begin_at(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                         const char *session, const char *name, const char *query, uint64_t start,
                         const uint8_t *ctx);

int tt__step_begin_raw(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                       const char *session, const char *name, const char *query, const uint8_t *ctx)
{
    return step_begin_at(c, step, parent, kind, session, name, query, tt__ticks(), ctx);
}

/* A step begun at start (ticks), now or before; ctx: its trace context (trace.h) or NULL. */
static int step_begin_at(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                         const char *session, const char *name, const char *query, uint64_t start,
                         const uint8_t *ctx)
{
    step->id = 0;
    step->parent = parent ? parent->id : 0;
    step->start = start;
    int rc = 0;
    tt__ring *r = tt__ring_get(c, &rc);
    if (TT_UNLIKELY(!r)) {
        return rc;
    }
    /* Ids are unique per instance without any shared counter: ring id, then a ring-local
     * sequence. */
    step->id = ((uint64_t)r->id << 40) | (++r->step_seq & ((1ull << 40) - 1));
    uint32_t ls = slen(session), ln = slen(name), lq = slen(query);
    size_t payload = 16 + 12 + ls + ln + lq + (ctx ? TT_TRACE_CTX_BYTES : 0);
    uint64_t nh;
    uint8_t *p = rec_begin(c, &r, &nh, TT_REC_STEP_BEGIN,
                           (uint16_t)(kind | (ctx ? TT_STEP_AUX_TRACED : 0)), payload, &rc);
    if (TT_UNLIKELY(!p)) {
        return rc;
    }
    ((tt__rec_hdr *)(void *)(p - TT_REC_HDR))->ticks = step->start;
    p = put_u64(p, step->id);
    p = put_u64(p, step->parent);
    p = put_str(p, session, ls);
    p = put_str(p, name, ln);
    p = put_str(p, query, lq);
    if (ctx) {
        memcpy(p, ctx, TT_TRACE_CTX_BYTES);
    }
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
    uint32_t redact = atomic_load_explicit(&c->comply_redact, memory_order_relaxed);
    if (TT_UNLIKELY(redact != 0 && error)) {
        return tt__comply_step_end(c, redact, step, status, result_bytes, error);
    }
    return tt__step_end_raw(c, step, status, result_bytes, error);
}

TT_API int tt_step_record(tt_client *c, const tt_step *parent, tt_step_kind kind,
                          const char *session, const char *name, const char *query,
                          tt_status status, int64_t duration_ns, int64_t result_bytes,
                          const char *error)
{
    if (!c || kind < TT_STEP_REASONING || kind > TT_STEP_OTHER || status > TT_STATUS_CANCELLED ||
        duration_ns < 0 || duration_ns > TT_STEP_RECORD_MAX_NS) {
        return TT_EINVAL;
    }
    uint64_t start = tt__ticks_ago((uint64_t)duration_ns);
    tt_step s;
    int rc;
    const struct tt__comply_policy *pol =
        atomic_load_explicit(&c->comply_policy, memory_order_acquire);
    if (pol != NULL) {
        /* The rules see it as at tt_step_begin (a block ends it as cancelled: too late to stop
         * it, but decided and logged); its begin is stamped now, its end carries duration_ns. */
        rc = tt__comply_step_begin(c, &s, parent, kind, session, name, query, NULL);
        s.start = start;
    } else {
        rc = step_begin_at(c, &s, parent, kind, session, name, query, start, NULL);
    }
    if (s.id == 0) {
        return rc;
    }
    int rc2 = tt_step_end(c, &s, status, result_bytes, error);
    return rc ? rc : rc2;
}

int tt__step_end_raw(tt_client *c, const tt_step *step, tt_status status, int64_t result_bytes,
                     const char *error)
{
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

uint8_t *tt__emit_encoded_begin_aux(tt_client *c, size_t payload, size_t extra, uint16_t aux,
                                    tt__ring **r, uint64_t *new_head, int *rc)
{
    if (TT_UNLIKELY(!c)) {
        *rc = TT_EINVAL;
        return NULL;
    }
    uint8_t *p = rec_begin(c, r, new_head, TT_REC_ENCODED, aux, 4 + payload + extra, rc);
    return p ? put_u32(p, (uint32_t)payload) : NULL;
}

void tt__emit_encoded_commit(tt__ring *r, uint8_t *payload, uint64_t new_head)
{
    (void)payload;
    tt__ring_commit(r, new_head);
}

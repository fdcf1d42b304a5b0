/*
 * compat.h - small helpers shared by the library, the collector and the CLI: branch hints,
 * cache-line alignment, little-endian loads and stores for anything on the wire or on disk,
 * saturating time arithmetic for values from outside, and TT_ASSERT, which checks programmer
 * errors in debug and sanitizer builds only.
 */
#ifndef TT_COMMON_COMPAT_H
#define TT_COMMON_COMPAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TT_LIKELY(x) __builtin_expect(!!(x), 1)
#define TT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TT_CACHELINE 64
#define TT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define TT_INTERNAL __attribute__((visibility("hidden")))

/* Times and durations an agent sent (nanoseconds) combined without signed overflow: a + b and
 * a - b clamped to the int64 range; a duration above INT64_MAX counts as INT64_MAX. */
static inline int64_t tt__dur_i64(uint64_t d)
{
    return d > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)d;
}

static inline int64_t tt__add_sat_i64(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? (b > 0 ? INT64_MAX : INT64_MIN) : r;
}

static inline int64_t tt__sub_sat_i64(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_sub_overflow(a, b, &r) ? (b < 0 ? INT64_MAX : INT64_MIN) : r;
}

#if defined(TT_DEBUG) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <stdio.h>
#include <stdlib.h>
#define TT_ASSERT(x)                                                                               \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)
#else
#define TT_ASSERT(x) ((void)0)
#endif

static inline void tt__st_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void tt__st_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void tt__st_le64(uint8_t *p, uint64_t v)
{
    tt__st_le32(p, (uint32_t)v);
    tt__st_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t tt__ld_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t tt__ld_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t tt__ld_le64(const uint8_t *p)
{
    return (uint64_t)tt__ld_le32(p) | ((uint64_t)tt__ld_le32(p + 4) << 32);
}

#endif

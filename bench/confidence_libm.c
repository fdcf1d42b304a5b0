/*
 * confidence_libm.c - the strongest libm baseline of bench/confidence.c: the same three passes
 * as its straightforward version (max; sum of expf; entropy and log-prob with expf again), but
 * compiled with -O3 -ffast-math so that GCC vectorises expf through glibc's libmvec
 * (mk/bench-confidence.mk compiles this file alone with those flags). One copy per ISA via
 * target attributes, chosen at run time; the library itself never uses fast-math.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

double bench_threepass_vec(const void *row, size_t n, int bf16, int32_t chosen);

static inline float widen(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;

    memcpy(&f, &bits, sizeof f);
    return f;
}

/* LOAD(i) reads entry i as a float. Returns the entropy; the log-prob and margin are folded in
 * so that the compiler cannot drop their work. */
#define THREEPASS_BODY(LOAD)                                                                       \
    float m = -INFINITY, m2 = -INFINITY;                                                           \
    double s = 0, h = 0;                                                                           \
    for (size_t i = 0; i < n; i++) {                                                               \
        m = LOAD(i) > m ? LOAD(i) : m;                                                             \
    }                                                                                              \
    for (size_t i = 0; i < n; i++) {                                                               \
        s += expf(LOAD(i) - m);                                                                    \
    }                                                                                              \
    float log_s = logf((float)s), inv_s = (float)(1.0 / s);                                        \
    for (size_t i = 0; i < n; i++) {                                                               \
        float d = LOAD(i) - m;                                                                     \
        h -= expf(d) * inv_s * (d - log_s);                                                        \
        m2 = fmaxf(LOAD(i) < m ? LOAD(i) : -INFINITY, m2);                                         \
    }                                                                                              \
    return h + 1e-30 * ((LOAD(chosen) - m - log_s) + (1.0f - expf(m2 - m)) * inv_s)

#define LOAD_F32(i) (x32[(i)])
#define LOAD_BF16(i) (widen(x16[(i)]))

#define THREEPASS_FN(name, attr)                                                                   \
    attr static double name##_f32(const float *x32, size_t n, int32_t chosen)                      \
    {                                                                                              \
        THREEPASS_BODY(LOAD_F32);                                                                  \
    }                                                                                              \
    attr static double name##_bf16(const uint16_t *x16, size_t n, int32_t chosen)                  \
    {                                                                                              \
        THREEPASS_BODY(LOAD_BF16);                                                                 \
    }

THREEPASS_FN(plain, )
#if defined(__x86_64__)
THREEPASS_FN(avx2, __attribute__((target("avx2,fma"))))
THREEPASS_FN(avx512, __attribute__((target("avx512f"))))
#endif

double bench_threepass_vec(const void *row, size_t n, int bf16, int32_t chosen)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
        return bf16 ? avx512_bf16(row, n, chosen) : avx512_f32(row, n, chosen);
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return bf16 ? avx2_bf16(row, n, chosen) : avx2_f32(row, n, chosen);
    }
#endif
    return bf16 ? plain_bf16(row, n, chosen) : plain_f32(row, n, chosen);
}

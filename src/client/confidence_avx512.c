/*
 * confidence_avx512.c - the AVX-512 kernels of the token-statistics path (see confidence.h for
 * the contract of each kernel and the exp they share).
 *
 * Every function carries target("avx512f") so the file builds without -march flags and the
 * binary still runs on any x86-64: confidence.c calls these only after __builtin_cpu_supports
 * said yes. Counts are kept in integer lanes (mask-subtract of -1) rather than popcounts, so the
 * hot loops stay in vector registers.
 */
#include "client/confidence.h"

#ifdef TT__CONF_X86

#include <immintrin.h>
#include <math.h>

#define TT__AVX512 __attribute__((target("avx512f")))

/* The fast kernel sums into 32 float lanes (two vectors), the careful one into 16: flushing to
 * double every 1024 and 512 entries keeps each lane at 32 terms. */
#define FLUSH_FAST 1024

TT__AVX512 static inline __m512 exp16(__m512 d)
{
    const __m512 magic = _mm512_set1_ps(TT__EXP_MAGIC);
    __m512 t = _mm512_fmadd_ps(d, _mm512_set1_ps(TT__EXP_LOG2E), magic);
    __m512 n = _mm512_sub_ps(t, magic);
    /* With FMA one step of the reduction is enough: n * (ln2 - LN2) <= 127 * 2e-9. */
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(TT__EXP_LN2), d);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(TT__EXP_C5), r, _mm512_set1_ps(TT__EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TT__EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TT__EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TT__EXP_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23));
    return _mm512_mul_ps(p, scale);
}

/* Add the 16 float lanes of v to the 8 double lanes of acc. */
TT__AVX512 static inline __m512d add_wide(__m512d acc, __m512 v)
{
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(lo));
    return _mm512_add_pd(acc, _mm512_cvtps_pd(hi));
}

TT__AVX512 static inline uint32_t sum_counts(__m512i c)
{
    return (uint32_t)_mm512_reduce_add_epi32(c);
}

TT__AVX512 static float max16(const float *x, size_t n, float *lanes, size_t *nlanes)
{
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;

    /* max(x, m) returns m when x is NaN: NaN entries are skipped here. */
    for (size_t i = 0; i < n; i += 64) {
        m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
        m2 = _mm512_max_ps(_mm512_loadu_ps(x + i + 32), m2);
        m3 = _mm512_max_ps(_mm512_loadu_ps(x + i + 48), m3);
    }
    _mm512_storeu_ps(lanes, m0);
    _mm512_storeu_ps(lanes + 16, m1);
    _mm512_storeu_ps(lanes + 32, m2);
    _mm512_storeu_ps(lanes + 48, m3);
    *nlanes = 64;
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}

TT__AVX512 static void widen16(const void *src, size_t n, tt_dtype dtype, float *dst)
{
    const uint16_t *s = src;
    size_t i = 0;

    if (dtype == TT_DTYPE_BF16) {
        for (; i + 16 <= n; i += 16) {
            __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
        }
    } else {
        for (; i + 16 <= n; i += 16) {
            _mm512_storeu_ps(dst + i,
                             _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
        }
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + i, sizeof h);
        dst[i] = dtype == TT_DTYPE_BF16 ? tt__conf_bf16_to_f32(h) : tt__conf_f16_to_f32(h);
    }
}

/* One step of the fast kernel: 16 entries into the sums, the block maximum and the rank. */
#define SUMS16_STEP(v, s, t)                                                                       \
    do {                                                                                           \
        __m512 d_ = _mm512_max_ps(floor, _mm512_sub_ps(v, vm));                                    \
        __m512 e_ = exp16(d_);                                                                     \
        s = _mm512_add_ps(s, e_);                                                                  \
        t = _mm512_fmadd_ps(e_, d_, t);                                                            \
        above =                                                                                    \
            _mm512_mask_sub_epi32(above, _mm512_cmp_ps_mask(v, vxc, _CMP_GT_OQ), above, minus1);   \
    } while (0)

/*
 * The fast kernel: four vectors per step, float partial sums moved into doubles every
 * FLUSH_FAST entries. max(floor, d) keeps a NaN d (the second operand wins) and
 * max(v, mx) skips a NaN v. Four lines of a block further on are prefetched per step, so the
 * memory works while this block is computed.
 */
TT__AVX512 static void sums16(const float *x, size_t n, float m, float xc, const char *pf,
                              size_t pf_len, tt__conf_sums *out)
{
    const __m512 vm = _mm512_set1_ps(m), vxc = _mm512_set1_ps(xc);
    const __m512 floor = _mm512_set1_ps(TT__EXP_FLOOR);
    const __m512i minus1 = _mm512_set1_epi32(-1);
    __m512d sd = _mm512_setzero_pd(), td = _mm512_setzero_pd();
    __m512i above = _mm512_setzero_si512();
    __m512 mx0 = _mm512_set1_ps(-INFINITY), mx1 = mx0;
    size_t pf_step = pf ? (pf_len * 64 + n - 1) / n : 0;

    for (size_t i = 0; i < n; i += FLUSH_FAST) {
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, t0 = s0, t1 = s0;
        size_t end = i + FLUSH_FAST < n ? i + FLUSH_FAST : n;
        for (size_t j = i; j < end; j += 64) {
            size_t pf_off = (j / 64) * pf_step;
            for (size_t l = 0; l < pf_step && pf_off + l < pf_len; l += 64) {
                _mm_prefetch(pf + pf_off + l, _MM_HINT_T0);
            }
            __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
            __m512 x2 = _mm512_loadu_ps(x + j + 32), x3 = _mm512_loadu_ps(x + j + 48);
            mx0 = _mm512_max_ps(x0, mx0);
            mx1 = _mm512_max_ps(x1, mx1);
            mx0 = _mm512_max_ps(x2, mx0);
            mx1 = _mm512_max_ps(x3, mx1);
            SUMS16_STEP(x0, s0, t0);
            SUMS16_STEP(x1, s1, t1);
            SUMS16_STEP(x2, s0, t0);
            SUMS16_STEP(x3, s1, t1);
        }
        sd = add_wide(sd, _mm512_add_ps(s0, s1));
        td = add_wide(td, _mm512_add_ps(t0, t1));
    }
    out->sum = _mm512_reduce_add_pd(sd);
    out->dot = _mm512_reduce_add_pd(td);
    out->max = _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1));
    _mm512_storeu_ps(out->lanes, mx0);
    _mm512_storeu_ps(out->lanes + 16, mx1);
    out->nlanes = 32;
    out->above = sum_counts(above);
    out->ties = 0;
    out->nans = 0;
}

/* The careful kernel: NaN entries become -inf and are counted; entries equal to m are counted
 * apart, so the sum holds only the small terms. */
TT__AVX512 static void sums16_careful(const float *x, size_t n, float m, float xc,
                                      tt__conf_sums *out)
{
    const __m512 vm = _mm512_set1_ps(m), vxc = _mm512_set1_ps(xc);
    const __m512 floor = _mm512_set1_ps(TT__EXP_FLOOR), ninf = _mm512_set1_ps(-INFINITY);
    const __m512i minus1 = _mm512_set1_epi32(-1);
    __m512d sd = _mm512_setzero_pd(), td = _mm512_setzero_pd();
    __m512i above = _mm512_setzero_si512(), ties = above, nans = above;

    for (size_t i = 0; i < n; i += FLUSH_FAST / 2) {
        __m512 s = _mm512_setzero_ps(), t = s;
        size_t end = i + FLUSH_FAST / 2 < n ? i + FLUSH_FAST / 2 : n;
        for (size_t j = i; j < end; j += 16) {
            __m512 v = _mm512_loadu_ps(x + j);
            __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            nans = _mm512_mask_sub_epi32(nans, nan, nans, minus1);
            v = _mm512_mask_mov_ps(v, nan, ninf);
            __mmask16 tie = _mm512_cmp_ps_mask(v, vm, _CMP_EQ_OQ);
            ties = _mm512_mask_sub_epi32(ties, tie, ties, minus1);
            __m512 d = _mm512_max_ps(floor, _mm512_sub_ps(v, vm));
            __m512 e = exp16(d);
            s = _mm512_mask_add_ps(s, (__mmask16)~tie, s, e);
            t = _mm512_fmadd_ps(e, d, t);
            above =
                _mm512_mask_sub_epi32(above, _mm512_cmp_ps_mask(v, vxc, _CMP_GT_OQ), above, minus1);
        }
        sd = add_wide(sd, s);
        td = add_wide(td, t);
    }
    out->sum = _mm512_reduce_add_pd(sd);
    out->dot = _mm512_reduce_add_pd(td);
    out->above = sum_counts(above);
    out->max = m;
    out->nlanes = 0;
    out->ties = sum_counts(ties);
    out->nans = sum_counts(nans);
}

TT__AVX512 static size_t count_nan16(const float *x, size_t n)
{
    const __m512i minus1 = _mm512_set1_epi32(-1);
    __m512i c = _mm512_setzero_si512();

    for (size_t i = 0; i < n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        c = _mm512_mask_sub_epi32(c, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), c, minus1);
    }
    return sum_counts(c);
}

TT__AVX512 static size_t next_hit16(const float *x, size_t pos, size_t n, float t, int strict,
                                    uint32_t *hits)
{
    const __m512 vt = _mm512_set1_ps(t);

    for (; pos < n; pos += 16) {
        __mmask16 m = strict ? _mm512_cmp_ps_mask(_mm512_loadu_ps(x + pos), vt, _CMP_GT_OQ)
                             : _mm512_cmp_ps_mask(_mm512_loadu_ps(x + pos), vt, _CMP_GE_OQ);
        if (m) {
            *hits = m;
            return pos;
        }
    }
    *hits = 0;
    return n;
}

const tt__conf_kernels tt__conf_avx512 = {
    .name = "avx512",
    .max = max16,
    .widen = widen16,
    .sums = sums16,
    .sums_careful = sums16_careful,
    .count_nan = count_nan16,
    .next_hit = next_hit16,
};

#endif

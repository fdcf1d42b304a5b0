/*
 * confidence_avx2.c - the AVX2 kernels of the token-statistics path (see confidence.h for the
 * contract of each kernel and the exp they share).
 *
 * Every function carries target("avx2,fma,f16c") so the file builds without -march flags;
 * confidence.c calls these only on a CPU that has all three. A comparison yields all-ones lanes,
 * so subtracting it from an integer vector counts the lanes where it held.
 */
#include "client/confidence.h"

#ifdef TT__CONF_X86

#include <immintrin.h>
#include <math.h>

#define TT__AVX2 __attribute__((target("avx2,fma,f16c")))

/* The fast kernel sums into 16 float lanes (two vectors), the careful one into 8: flushing to
 * double every 512 and 256 entries keeps each lane at 32 terms. */
#define FLUSH_FAST 512

TT__AVX2 static inline __m256 exp8(__m256 d)
{
    const __m256 magic = _mm256_set1_ps(TT__EXP_MAGIC);
    __m256 t = _mm256_fmadd_ps(d, _mm256_set1_ps(TT__EXP_LOG2E), magic);
    __m256 n = _mm256_sub_ps(t, magic);
    /* With FMA one step of the reduction is enough: n * (ln2 - LN2) <= 127 * 2e-9. */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(TT__EXP_LN2), d);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(TT__EXP_C5), r, _mm256_set1_ps(TT__EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TT__EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TT__EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TT__EXP_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
    return _mm256_mul_ps(p, scale);
}

TT__AVX2 static inline __m256d add_wide(__m256d acc, __m256 v)
{
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

TT__AVX2 static inline double hsum_pd(__m256d v)
{
    double a[4];

    _mm256_storeu_pd(a, v);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

TT__AVX2 static inline uint32_t hsum_epi32(__m256i v)
{
    uint32_t a[8], s = 0;

    _mm256_storeu_si256((__m256i *)a, v);
    for (int i = 0; i < 8; i++) {
        s += a[i];
    }
    return s;
}

TT__AVX2 static float max8(const float *x, size_t n, float *lanes, size_t *nlanes)
{
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    float best = -INFINITY;

    /* max(x, m) returns m when x is NaN: NaN entries are skipped here. */
    for (size_t i = 0; i < n; i += 32) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
        m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
        m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
    }
    _mm256_storeu_ps(lanes, m0);
    _mm256_storeu_ps(lanes + 8, m1);
    _mm256_storeu_ps(lanes + 16, m2);
    _mm256_storeu_ps(lanes + 24, m3);
    *nlanes = 32;
    for (int i = 0; i < 32; i++) {
        best = lanes[i] > best ? lanes[i] : best;
    }
    return best;
}

TT__AVX2 static void widen8(const void *src, size_t n, tt_dtype dtype, float *dst)
{
    const uint16_t *s = src;
    size_t i = 0;

    if (dtype == TT_DTYPE_BF16) {
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
    } else {
        for (; i + 8 <= n; i += 8) {
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
        }
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + i, sizeof h);
        dst[i] = dtype == TT_DTYPE_BF16 ? tt__conf_bf16_to_f32(h) : tt__conf_f16_to_f32(h);
    }
}

/*
 * The fast kernel: two vectors per step, float partial sums moved into doubles every
 * FLUSH_FAST entries. max(floor, d) keeps a NaN d (the second operand wins) and
 * max(v, mx) skips a NaN v. One line of a block further on is prefetched per step.
 */
TT__AVX2 static void sums8(const float *x, size_t n, float m, float xc, const char *pf,
                           size_t pf_len, tt__conf_sums *out)
{
    const __m256 vm = _mm256_set1_ps(m), vxc = _mm256_set1_ps(xc);
    const __m256 floor = _mm256_set1_ps(TT__EXP_FLOOR);
    __m256d sd = _mm256_setzero_pd(), td = _mm256_setzero_pd();
    __m256i above = _mm256_setzero_si256();
    __m256 mx0 = _mm256_set1_ps(-INFINITY), mx1 = mx0;
    size_t pf_step = pf ? (pf_len * 16 + n - 1) / n : 0;

    for (size_t i = 0; i < n; i += FLUSH_FAST) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, t0 = s0, t1 = s0;
        size_t end = i + FLUSH_FAST < n ? i + FLUSH_FAST : n;
        for (size_t j = i; j < end; j += 16) {
            size_t pf_off = (j / 16) * pf_step;
            if (pf_off < pf_len) {
                _mm_prefetch(pf + pf_off, _MM_HINT_T0);
            }
            __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
            mx0 = _mm256_max_ps(x0, mx0);
            mx1 = _mm256_max_ps(x1, mx1);
            __m256 d0 = _mm256_max_ps(floor, _mm256_sub_ps(x0, vm));
            __m256 d1 = _mm256_max_ps(floor, _mm256_sub_ps(x1, vm));
            __m256 e0 = exp8(d0), e1 = exp8(d1);
            s0 = _mm256_add_ps(s0, e0);
            s1 = _mm256_add_ps(s1, e1);
            t0 = _mm256_fmadd_ps(e0, d0, t0);
            t1 = _mm256_fmadd_ps(e1, d1, t1);
            above =
                _mm256_sub_epi32(above, _mm256_castps_si256(_mm256_cmp_ps(x0, vxc, _CMP_GT_OQ)));
            above =
                _mm256_sub_epi32(above, _mm256_castps_si256(_mm256_cmp_ps(x1, vxc, _CMP_GT_OQ)));
        }
        sd = add_wide(sd, _mm256_add_ps(s0, s1));
        td = add_wide(td, _mm256_add_ps(t0, t1));
    }
    _mm256_storeu_ps(out->lanes, mx0);
    _mm256_storeu_ps(out->lanes + 8, mx1);
    out->nlanes = 16;
    out->max = -INFINITY;
    for (int i = 0; i < 16; i++) {
        out->max = out->lanes[i] > out->max ? out->lanes[i] : out->max;
    }
    out->sum = hsum_pd(sd);
    out->dot = hsum_pd(td);
    out->above = hsum_epi32(above);
    out->ties = 0;
    out->nans = 0;
}

/* The careful kernel: NaN entries become -inf and are counted; entries equal to m are counted
 * apart, so the sum holds only the small terms. */
TT__AVX2 static void sums8_careful(const float *x, size_t n, float m, float xc, tt__conf_sums *out)
{
    const __m256 vm = _mm256_set1_ps(m), vxc = _mm256_set1_ps(xc);
    const __m256 floor = _mm256_set1_ps(TT__EXP_FLOOR), ninf = _mm256_set1_ps(-INFINITY);
    __m256d sd = _mm256_setzero_pd(), td = _mm256_setzero_pd();
    __m256i above = _mm256_setzero_si256(), ties = above, nans = above;

    for (size_t i = 0; i < n; i += FLUSH_FAST / 2) {
        __m256 s = _mm256_setzero_ps(), t = s;
        size_t end = i + FLUSH_FAST / 2 < n ? i + FLUSH_FAST / 2 : n;
        for (size_t j = i; j < end; j += 8) {
            __m256 v = _mm256_loadu_ps(x + j);
            __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
            nans = _mm256_sub_epi32(nans, _mm256_castps_si256(nan));
            v = _mm256_blendv_ps(v, ninf, nan);
            __m256 tie = _mm256_cmp_ps(v, vm, _CMP_EQ_OQ);
            ties = _mm256_sub_epi32(ties, _mm256_castps_si256(tie));
            __m256 d = _mm256_max_ps(floor, _mm256_sub_ps(v, vm));
            __m256 e = exp8(d);
            s = _mm256_add_ps(s, _mm256_andnot_ps(tie, e));
            t = _mm256_fmadd_ps(e, d, t);
            above = _mm256_sub_epi32(above, _mm256_castps_si256(_mm256_cmp_ps(v, vxc, _CMP_GT_OQ)));
        }
        sd = add_wide(sd, s);
        td = add_wide(td, t);
    }
    out->sum = hsum_pd(sd);
    out->dot = hsum_pd(td);
    out->above = hsum_epi32(above);
    out->max = m;
    out->nlanes = 0;
    out->ties = hsum_epi32(ties);
    out->nans = hsum_epi32(nans);
}

TT__AVX2 static size_t count_nan8(const float *x, size_t n)
{
    __m256i c = _mm256_setzero_si256();

    for (size_t i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    }
    return hsum_epi32(c);
}

TT__AVX2 static size_t next_hit8(const float *x, size_t pos, size_t n, float t, int strict,
                                 uint32_t *hits)
{
    const __m256 vt = _mm256_set1_ps(t);

    for (; pos < n; pos += 16) {
        __m256 a = _mm256_loadu_ps(x + pos), b = _mm256_loadu_ps(x + pos + 8);
        int m = strict ? _mm256_movemask_ps(_mm256_cmp_ps(a, vt, _CMP_GT_OQ)) |
                             _mm256_movemask_ps(_mm256_cmp_ps(b, vt, _CMP_GT_OQ)) << 8
                       : _mm256_movemask_ps(_mm256_cmp_ps(a, vt, _CMP_GE_OQ)) |
                             _mm256_movemask_ps(_mm256_cmp_ps(b, vt, _CMP_GE_OQ)) << 8;
        if (m) {
            *hits = (uint32_t)m;
            return pos;
        }
    }
    *hits = 0;
    return n;
}

const tt__conf_kernels tt__conf_avx2 = {
    .name = "avx2",
    .max = max8,
    .widen = widen8,
    .sums = sums8,
    .sums_careful = sums8_careful,
    .count_nan = count_nan8,
    .next_hit = next_hit8,
};

#endif

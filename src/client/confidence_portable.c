/*
 * confidence_portable.c - the portable kernels of the token-statistics path (see confidence.h
 * for the contract of each kernel and the exp they share), in GNU C vector extensions: SSE2 on
 * any x86-64, NEON on arm64, scalar code elsewhere. confidence.c uses them when the CPU has
 * neither AVX2 nor AVX-512, or when TELLTALE_SIMD=portable.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "client/confidence.h"
#include "common/compat.h"

/* --- portable kernels ---------------------------------------------------------------------- */

/* Both sums kernels sum into 8 float lanes (two vectors): flushing to double every 256 entries
 * keeps each lane at 32 terms. */
#define PORT_FLUSH 256

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));

static inline v4f ld4(const float *p)
{
    v4f v;

    memcpy(&v, p, sizeof v);
    return v;
}

static inline v4f splat(float f)
{
    return (v4f){f, f, f, f};
}

/* a > b ? a : b lane by lane, so b where a is NaN: written per lane, which compilers turn
 * into one instruction that has exactly these semantics (maxps on x86) where there is one. */
static inline v4f vmax(v4f a, v4f b)
{
    v4f r;

    for (int l = 0; l < 4; l++) {
        r[l] = a[l] > b[l] ? a[l] : b[l];
    }
    return r;
}

/* a < b ? a : b lane by lane (minps on x86). */
static inline v4f vmin(v4f a, v4f b)
{
    v4f r;

    for (int l = 0; l < 4; l++) {
        r[l] = a[l] < b[l] ? a[l] : b[l];
    }
    return r;
}

static inline double wide4(v4f v)
{
    return ((double)v[0] + (double)v[1]) + ((double)v[2] + (double)v[3]);
}

static inline uint32_t count4(v4i c)
{
    return (uint32_t)c[0] + (uint32_t)c[1] + (uint32_t)c[2] + (uint32_t)c[3];
}

/* The polynomial of confidence.h, which approximates e^r on [-ln2/2, ln2/2], rewritten for 2^f
 * on [-1/2, 1/2] (r = f ln 2): coefficient k times (ln 2)^k, folded at compile time. */
#define P2_LN2 0.693147180559945309
#define P2_C1 ((float)((double)TT__EXP_C1 * P2_LN2))
#define P2_C2 ((float)((double)TT__EXP_C2 * P2_LN2 * P2_LN2))
#define P2_C3 ((float)((double)TT__EXP_C3 * P2_LN2 * P2_LN2 * P2_LN2))
#define P2_C4 ((float)((double)TT__EXP_C4 * P2_LN2 * P2_LN2 * P2_LN2 * P2_LN2))
#define P2_C5 ((float)((double)TT__EXP_C5 * P2_LN2 * P2_LN2 * P2_LN2 * P2_LN2 * P2_LN2))

/* d clamped at the floor; a NaN d fails the comparison and stays NaN. */
static inline v4f clamp_floor(v4f d)
{
    return vmax(splat(TT__EXP_FLOOR), d);
}

static float port_max(const float *x, size_t n, float *lanes, size_t *nlanes)
{
    v4f m[8];
    float best = -INFINITY;

    for (int a = 0; a < 8; a++) {
        m[a] = splat(-INFINITY);
    }
    /* v > m is false for a NaN v: NaN entries are skipped. */
    for (size_t i = 0; i < n; i += 32) {
        for (int a = 0; a < 8; a++) {
            v4f v = ld4(x + i + 4 * a);
            m[a] = vmax(v, m[a]);
        }
    }
    memcpy(lanes, m, sizeof m);
    *nlanes = 32;
    for (int i = 0; i < 32; i++) {
        best = lanes[i] > best ? lanes[i] : best;
    }
    return best;
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector) && defined(__BYTE_ORDER__) &&                           \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PORT_WIDEN_VECTOR 1
#endif
#endif

#ifdef PORT_WIDEN_VECTOR
typedef uint16_t v8h __attribute__((vector_size(16)));

/* bf16 to fp32, eight at a time: each bf16 becomes the upper half of a 32-bit lane by
 * interleaving it with zeros (little-endian lanes; punpcklwd/punpckhwd on x86, zip on arm64).
 * Returns how many entries it converted. */
static size_t widen_bf16_vec(const unsigned char *s, size_t n, float *dst)
{
    const v8h z = {0};
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        v8h h;
        memcpy(&h, s + 2 * i, sizeof h);
        v8h lo = __builtin_shufflevector(z, h, 0, 8, 1, 9, 2, 10, 3, 11);
        v8h hi = __builtin_shufflevector(z, h, 4, 12, 5, 13, 6, 14, 7, 15);
        memcpy(dst + i, &lo, sizeof lo);
        memcpy(dst + i + 4, &hi, sizeof hi);
    }
    return i;
}
#endif

static void port_widen(const void *src, size_t n, tt_dtype dtype, float *dst)
{
    const unsigned char *s = src;
    size_t i = 0;

    if (dtype == TT_DTYPE_BF16) {
#ifdef PORT_WIDEN_VECTOR
        i = widen_bf16_vec(s, n, dst);
#endif
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, sizeof h);
            dst[i] = tt__conf_bf16_to_f32(h);
        }
        return;
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, sizeof h);
        dst[i] = tt__conf_f16_to_f32(h);
    }
}

/*
 * The fast kernel works on two vectors at a time and applies each step of the exp to both
 * before the next, so that the instruction stream interleaves two independent chains (the
 * compiler keeps the source order; x86 GCC does not reschedule before register allocation).
 * Wider GNU C vector types would do the same, but GCC lowers their comparisons to scalar code.
 */
#define PORT_K 2
#define PORT_EACH _Pragma("GCC unroll 8") for (int k = 0; k < PORT_K; k++)

/* The fast kernel's exp skips the floor for d >= PORT_FAST_FLOOR (the caller checks): then
 * n >= -124, and 2^n is applied by adding n to the exponent field of the polynomial's value
 * (in [2^-1/2, 2^1/2], so the result stays normal): an integer addition in place of a float
 * multiplication. A NaN d may come out of that addition as a number, but e * d is NaN, so the
 * dot still reports it. */
#define PORT_FAST_FLOOR (-86.0f)
#define PORT_MAGIC_N 12582912.0f /* 1.5 * 2^23: the low bits of y + magic hold n */

/*
 * The exp of confidence.h without FMA, on PORT_K vectors, in base 2: y = d log2(e), n = round(y)
 * by the magic-number addition, f = y - n exactly (|f| <= 1/2), 2^f by the polynomial above
 * (coefficients paired, the pairs combined by Horner's rule in f^2: 6 dependent steps instead
 * of Horner's 10, for one more operation) and 2^n from the low bits of t. This needs no
 * two-part ln 2: the only rounding beyond the FMA paths' is that of y, at most half an ulp of y
 * in the exponent (2.6e-6 relative for |d| >= 44, 6e-7 within 20 nats); the subtraction x - m
 * before it already rounds by as much (docs/confidence.md). fast: d in [PORT_FAST_FLOOR, 0] or NaN; otherwise d in
 * [TT__EXP_FLOOR, 0] or NaN, where n = -127 gives e = +0 as in the other paths.
 */
static inline __attribute__((always_inline)) void expk(const v4f *d, v4f *e, int fast)
{
    const float magic = fast ? PORT_MAGIC_N : TT__EXP_MAGIC;
    v4f y[PORT_K], t[PORT_K], f[PORT_K], p[PORT_K], f2[PORT_K], mid[PORT_K], hi[PORT_K];

    PORT_EACH y[k] = d[k] * splat(TT__EXP_LOG2E);
    PORT_EACH t[k] = y[k] + splat(magic);
    PORT_EACH f[k] = y[k] - (t[k] - splat(magic));
    PORT_EACH f2[k] = f[k] * f[k];
    PORT_EACH p[k] = splat(P2_C1) * f[k] + splat(1.0f);
    PORT_EACH mid[k] = splat(P2_C3) * f[k] + splat(P2_C2);
    PORT_EACH hi[k] = splat(P2_C5) * f[k] + splat(P2_C4);
    PORT_EACH mid[k] += f2[k] * hi[k];
    PORT_EACH p[k] += f2[k] * mid[k];
    if (fast) {
        PORT_EACH e[k] = (v4f)((v4u)p[k] + ((v4u)t[k] << 23));
    } else {
        PORT_EACH e[k] = p[k] * (v4f)((v4u)t[k] << 23);
    }
}

/*
 * One block of the fast kernel. With clamp = 0 no floor is applied, which keeps the floor off
 * the dependency chain and lets expk take its fast form: an entry more than 86 below m (whose e
 * is then meaningless) only shows in the running minimum of d, and the function returns 1 so
 * that the caller runs the block again with clamp = 1, the floor applied as in the other paths. Blocks holding -inf
 * entries (masked tokens, the padding of the last block) take that second run, from L1.
 */
static inline __attribute__((always_inline)) int port_sums_run(const float *x, size_t n, float m,
                                                               float xc, const char *pf,
                                                               size_t pf_len, tt__conf_sums *out,
                                                               int clamp)
{
    const v4f vm = splat(m), vxc = splat(xc);
    size_t pf_step = pf ? (pf_len * 4 * PORT_K + n - 1) / n : 0;
    double sd = 0, td = 0;
    v4i above = {0, 0, 0, 0};
    v4f mx[PORT_K], mn[PORT_K];
    int low = 0;

    PORT_EACH mx[k] = splat(-INFINITY);
    PORT_EACH mn[k] = splat(0);
    for (size_t i = 0; i < n; i += PORT_FLUSH) {
        v4f s[PORT_K], t[PORT_K];
        size_t end = i + PORT_FLUSH < n ? i + PORT_FLUSH : n;
        PORT_EACH s[k] = t[k] = splat(0);
        for (size_t j = i; j < end; j += 4 * PORT_K) {
            size_t pf_off = (j / (4 * PORT_K)) * pf_step;
            v4f v[PORT_K], d[PORT_K], e[PORT_K];
            if (pf_off < pf_len) {
                __builtin_prefetch(pf + pf_off);
            }
            PORT_EACH v[k] = ld4(x + j + 4 * k);
            PORT_EACH mx[k] = vmax(v[k], mx[k]);
            PORT_EACH above -= v[k] > vxc;
            PORT_EACH d[k] = v[k] - vm;
            if (clamp) {
                PORT_EACH d[k] = clamp_floor(d[k]);
            } else {
                PORT_EACH mn[k] = vmin(d[k], mn[k]);
            }
            expk(d, e, !clamp);
            PORT_EACH s[k] += e[k];
            PORT_EACH t[k] += e[k] * d[k];
        }
        PORT_EACH sd += wide4(s[k]);
        PORT_EACH td += wide4(t[k]);
    }
    out->sum = sd;
    out->dot = td;
    out->above = count4(above);
    out->ties = out->nans = 0;
    memcpy(out->lanes, mx, sizeof mx);
    out->nlanes = 4 * PORT_K;
    out->max = -INFINITY;
    for (int l = 0; l < 4 * PORT_K; l++) {
        out->max = out->lanes[l] > out->max ? out->lanes[l] : out->max;
    }
    for (int l = 0; l < 4; l++) {
        PORT_EACH low |= mn[k][l] < PORT_FAST_FLOOR;
    }
    return low;
}

static void port_sums(const float *x, size_t n, float m, float xc, const char *pf, size_t pf_len,
                      tt__conf_sums *out)
{
    if (port_sums_run(x, n, m, xc, pf, pf_len, out, 0)) {
        port_sums_run(x, n, m, xc, NULL, 0, out, 1);
    }
}

/* The careful kernel, two vectors at a time like the fast one, always with the floor. vmax(v,
 * -inf) turns a NaN entry into -inf. */
static void port_sums_careful(const float *x, size_t n, float m, float xc, tt__conf_sums *out)
{
    const v4f vm = splat(m), vxc = splat(xc);
    double sd = 0, td = 0;
    v4i above = {0, 0, 0, 0}, ties = above, nans = above;

    for (size_t i = 0; i < n; i += PORT_FLUSH) {
        v4f s[PORT_K], t[PORT_K];
        size_t end = i + PORT_FLUSH < n ? i + PORT_FLUSH : n;
        PORT_EACH s[k] = t[k] = splat(0);
        for (size_t j = i; j < end; j += 4 * PORT_K) {
            v4f v[PORT_K], d[PORT_K], e[PORT_K];
            v4i tie[PORT_K];
            PORT_EACH v[k] = ld4(x + j + 4 * k);
            PORT_EACH nans -= v[k] != v[k];
            PORT_EACH v[k] = vmax(v[k], splat(-INFINITY));
            PORT_EACH tie[k] = v[k] == vm;
            PORT_EACH ties -= tie[k];
            PORT_EACH above -= v[k] > vxc;
            PORT_EACH d[k] = clamp_floor(v[k] - vm);
            expk(d, e, 0);
            PORT_EACH s[k] += (v4f)((v4i)e[k] & ~tie[k]);
            PORT_EACH t[k] += e[k] * d[k];
        }
        PORT_EACH sd += wide4(s[k]);
        PORT_EACH td += wide4(t[k]);
    }
    out->sum = sd;
    out->dot = td;
    out->max = m;
    out->nlanes = 0;
    out->ties = count4(ties);
    out->above = count4(above);
    out->nans = count4(nans);
}

static size_t port_count_nan(const float *x, size_t n)
{
    v4i c = {0, 0, 0, 0};

    for (size_t i = 0; i < n; i += 4) {
        v4f v = ld4(x + i);
        c -= v != v;
    }
    return count4(c);
}

static size_t port_next_hit(const float *x, size_t pos, size_t n, float t, int strict,
                            uint32_t *hits)
{
    const v4f vt = splat(t);

    for (; pos < n; pos += 16) {
        v4f a = ld4(x + pos), b = ld4(x + pos + 4), c = ld4(x + pos + 8), d = ld4(x + pos + 12);
        v4i hit = strict ? (a > vt) | (b > vt) | (c > vt) | (d > vt)
                         : (a >= vt) | (b >= vt) | (c >= vt) | (d >= vt);
        uint64_t w[2];
        memcpy(w, &hit, sizeof w);
        if (w[0] | w[1]) {
            *hits = 0;
            for (uint32_t j = 0; j < 16; j++) {
                *hits |= (uint32_t)(x[pos + j] > t || (!strict && x[pos + j] == t)) << j;
            }
            return pos;
        }
    }
    *hits = 0;
    return n;
}

const tt__conf_kernels tt__conf_portable = {
    .name = "portable",
    .max = port_max,
    .widen = port_widen,
    .sums = port_sums,
    .sums_careful = port_sums_careful,
    .count_nan = port_count_nan,
    .next_hit = port_next_hit,
};

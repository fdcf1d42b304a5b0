/*
 * confidence.c - token statistics from one logits row (tt_token_stats_compute) or from a hosted
 * model's log-probs (tt_token_stats_from_logprobs).
 *
 * The row is cut into blocks of TT__CONF_BLOCK entries. The fast kernel reads each block once,
 * relative to the running maximum M of the blocks before it: the sum of e^(x-M), the sum of
 * e^(x-M)*(x-M), the rank of the chosen token and the block's own maximum. A block that raises
 * the maximum is summed again from L1 by the careful kernel, relative to its own maximum, and the
 * running sums are rescaled in double precision: an online normaliser (Milakov and Gimelshein
 * 2018) at block granularity, so the row crosses the memory bus once. A block whose maximum
 * cannot reach the current top-k never gets a top-k scan. The entropy then is
 *     H = log S - D / S,  with S = sum e^(x-M) >= 1 and D = sum e^(x-M)(x-M) <= 0,
 * a sum of two non-negative terms, so there is no cancellation. To keep tiny entropies accurate
 * (S = 1 + s with s << 1), entries equal to the running maximum are counted apart from the
 * small terms (the careful kernel), and log S is computed as log1p(ties - 1 + s).
 *
 * docs/confidence.md gives the accuracy argument, the edge cases and the benchmark figures.
 * This file also holds the portable kernels (GNU C vector extensions: SSE2 on any x86-64, NEON
 * on arm64, scalar code elsewhere) and the run-time choice of the path.
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "client/confidence.h"
#include "common/compat.h"

#ifdef TT__CONF_X86
#include <cpuid.h>
#endif

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

static const tt__conf_kernels conf_portable = {
    .name = "portable",
    .max = port_max,
    .widen = port_widen,
    .sums = port_sums,
    .sums_careful = port_sums_careful,
    .count_nan = port_count_nan,
    .next_hit = port_next_hit,
};

/* --- choosing the path --------------------------------------------------------------------- */

static const char *const path_names[TT__CONF_NPATHS] = {"portable", "avx2", "avx512"};

/* The path in use, -1 until the first call decides. Every thread computes the same answer from
 * the same environment and CPU, so a race only repeats the work: relaxed order is enough, no
 * other data is published with it. */
static _Atomic int active_path = -1;

const char *tt__conf_path_name(int path)
{
    return path >= 0 && path < TT__CONF_NPATHS ? path_names[path] : "?";
}

#ifdef TT__CONF_X86
/* F16C through CPUID: clang's __builtin_cpu_supports does not know it. The OS saves the AVX
 * state if "avx2" passed, which checks XCR0. */
static int has_f16c(void)
{
    unsigned a, b, c, d;

    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

/* Which paths this CPU runs, probed once: CPUID traps to the hypervisor in a virtual machine
 * (microseconds), far too slow for every call. */
static int probe_paths(void)
{
    int mask = 1 << TT__CONF_PORTABLE;

#ifdef TT__CONF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()) {
        mask |= 1 << TT__CONF_AVX2;
    }
    if (__builtin_cpu_supports("avx512f")) {
        mask |= 1 << TT__CONF_AVX512;
    }
#endif
    return mask;
}

/* Like active_path: every thread probes the same answer, so relaxed order is enough. */
static _Atomic int supported_paths = -1;

int tt__conf_path_supported(int path)
{
    int mask = atomic_load_explicit(&supported_paths, memory_order_relaxed);

    if (mask < 0) {
        mask = probe_paths();
        atomic_store_explicit(&supported_paths, mask, memory_order_relaxed);
    }
    return path >= 0 && path < TT__CONF_NPATHS && (mask >> path & 1);
}

int tt__conf_path_active(void)
{
    int path = atomic_load_explicit(&active_path, memory_order_relaxed);
    const char *want;

    if (path >= 0) {
        return path;
    }
    path = TT__CONF_NPATHS - 1;
    want = getenv("TELLTALE_SIMD");
    for (int i = 0; want && i < TT__CONF_NPATHS; i++) {
        if (strcmp(want, path_names[i]) == 0) {
            path = i;
        }
    }
    /* A forced path the CPU lacks falls back to the best one below it, never to a SIGILL. */
    while (!tt__conf_path_supported(path)) {
        path--;
    }
    atomic_store_explicit(&active_path, path, memory_order_relaxed);
    return path;
}

static const tt__conf_kernels *path_kernels(int path)
{
    switch (path) {
#ifdef TT__CONF_X86
    case TT__CONF_AVX2:
        return &tt__conf_avx2;
    case TT__CONF_AVX512:
        return &tt__conf_avx512;
#endif
    default:
        return &conf_portable;
    }
}

/* --- the row ------------------------------------------------------------------------------- */

typedef struct conf_row {
    const unsigned char *base;
    size_t n;
    size_t stride; /* in elements */
    size_t esize;  /* bytes per element */
    tt_dtype dtype;
    int in_place; /* fp32, contiguous, 4-aligned: whole blocks are read where they lie */
    int widen;    /* bf16/fp16, contiguous: the widen kernel converts blocks */
} conf_row;

static int row_init(conf_row *r, const void *logits, size_t n, size_t stride, tt_dtype dtype)
{
    if (!logits || n == 0 || n > INT32_MAX) {
        return TT_EINVAL;
    }
    if (dtype != TT_DTYPE_F32 && dtype != TT_DTYPE_F16 && dtype != TT_DTYPE_BF16) {
        return TT_EINVAL;
    }
    r->base = logits;
    r->n = n;
    r->stride = stride;
    r->dtype = dtype;
    r->esize = dtype == TT_DTYPE_F32 ? 4 : 2;
    /* The last entry's offset must be addressable. */
    if (stride > 1 && (n - 1) > (SIZE_MAX / r->esize) / stride) {
        return TT_EINVAL;
    }
    r->in_place = dtype == TT_DTYPE_F32 && stride == 1 && (uintptr_t)logits % 4 == 0;
    r->widen = dtype != TT_DTYPE_F32 && stride == 1;
    return 0;
}

static float row_at(const conf_row *r, size_t i)
{
    const unsigned char *p = r->base + i * r->stride * r->esize;
    uint16_t h;
    float f;

    if (r->dtype == TT_DTYPE_F32) {
        memcpy(&f, p, sizeof f);
        return f;
    }
    memcpy(&h, p, sizeof h);
    return r->dtype == TT_DTYPE_BF16 ? tt__conf_bf16_to_f32(h) : tt__conf_f16_to_f32(h);
}

/* The block [off, off+len) as contiguous fp32 whose length (*plen) is a multiple of
 * TT__CONF_PAD: in place when possible, else converted or gathered into stage and padded with
 * -inf, which no kernel counts (not NaN, never above a threshold, e^-inf = 0). */
static const float *block_fetch(const conf_row *r, const tt__conf_kernels *k, size_t off,
                                size_t len, float *stage, size_t *plen)
{
    size_t padded = (len + TT__CONF_PAD - 1) / TT__CONF_PAD * TT__CONF_PAD;
    const float *row32 = (const float *)(const void *)r->base;

    *plen = padded;
    if (r->in_place && padded == len) {
        return row32 + off;
    }
    if (r->in_place) {
        memcpy(stage, row32 + off, len * sizeof(float));
    } else if (r->widen) {
        k->widen(r->base + off * 2, len, r->dtype, stage);
    } else {
        for (size_t i = 0; i < len; i++) {
            stage[i] = row_at(r, off + i);
        }
    }
    for (size_t i = len; i < padded; i++) {
        stage[i] = -INFINITY;
    }
    return stage;
}

/* Blocks are prefetched this many blocks ahead: one block of compute (about 0.3 us) is too
 * short to hide the memory latency and bandwidth of the next one; two are enough (measured). */
#define PREFETCH_AHEAD 2

/* The bytes of the block PREFETCH_AHEAD blocks after the one at off, for the sums kernel to
 * prefetch; NULL if none or the row is strided. */
static const char *block_ahead(const conf_row *r, size_t off, size_t *bytes)
{
    size_t next = off + PREFETCH_AHEAD * (size_t)TT__CONF_BLOCK;

    *bytes = 0;
    if (next >= r->n || r->stride != 1) {
        return NULL;
    }
    *bytes = TT_MIN(r->n - next, (size_t)TT__CONF_BLOCK) * r->esize;
    return (const char *)r->base + next * r->esize;
}

/* --- top-k --------------------------------------------------------------------------------- */

/* The best `want` entries seen so far, as a heap with the worst at the root. Entries are offered
 * in increasing id order, so a later entry equal to the root loses the tie (lower id wins). */
typedef struct topk {
    float v[TT_TOPK_MAX];
    int32_t id[TT_TOPK_MAX];
    uint32_t n;
    uint32_t want;
} topk;

static inline int ent_better(float va, int32_t ia, float vb, int32_t ib)
{
    return va > vb || (va == vb && ia < ib);
}

static void topk_push(topk *h, float v, int32_t id)
{
    uint32_t i = h->n++;

    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!ent_better(h->v[p], h->id[p], v, id)) {
            break;
        }
        h->v[i] = h->v[p];
        h->id[i] = h->id[p];
        i = p;
    }
    h->v[i] = v;
    h->id[i] = id;
}

static void topk_offer(topk *h, float v, int32_t id)
{
    uint32_t i = 0;

    if (h->n < h->want) {
        topk_push(h, v, id);
        return;
    }
    if (!ent_better(v, id, h->v[0], h->id[0])) {
        return;
    }
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && ent_better(h->v[c], h->id[c], h->v[c + 1], h->id[c + 1])) {
            c++;
        }
        if (!ent_better(v, id, h->v[c], h->id[c])) {
            break;
        }
        h->v[i] = h->v[c];
        h->id[i] = h->id[c];
        i = c;
    }
    h->v[i] = v;
    h->id[i] = id;
}

/* Entries must exceed this to enter: the root once full, else anything above -inf. */
static inline float topk_floor(const topk *h)
{
    return h->n == h->want ? h->v[0] : -INFINITY;
}

/* Sort the heap best first (at most TT_TOPK_MAX entries: insertion sort). */
static void topk_sort(topk *h)
{
    for (uint32_t i = 1; i < h->n; i++) {
        float v = h->v[i];
        int32_t id = h->id[i];
        uint32_t j = i;
        for (; j > 0 && ent_better(v, id, h->v[j - 1], h->id[j - 1]); j--) {
            h->v[j] = h->v[j - 1];
            h->id[j] = h->id[j - 1];
        }
        h->v[j] = v;
        h->id[j] = id;
    }
}

/* If at least `want` of the partial maxima exceed t, the want-th largest of them is a lower
 * bound of the block's want-th largest entry (they are maxima of disjoint subsets), so entries
 * below it cannot enter the top-k. That keeps the scan short on rising rows. Counting first
 * makes the usual answer (too few) cheap; then the best `want` maxima are kept sorted in top[]. */
static int lanes_bound(const float *lanes, size_t nl, float t, uint32_t want, float *lb)
{
    float top[TT_TOPK_MAX];
    uint32_t m = 0;

    for (size_t i = 0; i < nl; i++) {
        m += lanes[i] > t;
    }
    if (m < want) {
        return 0;
    }
    m = 0;
    for (size_t i = 0; i < nl; i++) {
        float v = lanes[i];
        if (!(v > t) || (m == want && !(v > top[want - 1]))) {
            continue;
        }
        uint32_t j = m < want ? m++ : want - 1;
        for (; j > 0 && top[j - 1] < v; j--) {
            top[j] = top[j - 1];
        }
        top[j] = v;
    }
    *lb = top[want - 1];
    return 1;
}

/* Offer the block's entries that can enter the top-k: nothing if its maximum mb cannot, else
 * the hits of the 16-entry chunks that next_hit finds, with the threshold rising as the heap
 * fills. lanes[0..nl) are partial maxima of the block, recomputed if there are too few. */
static void topk_scan(topk *h, const tt__conf_kernels *k, const float *x, size_t n, size_t off,
                      float mb, const float *lanes, size_t nl)
{
    float own[TT__CONF_LANES_MAX], t = topk_floor(h), lb;
    int strict = 1;

    if (!(mb > t)) {
        return;
    }
    if (nl < h->want) {
        k->max(x, n, own, &nl);
        lanes = own;
    }
    if (lanes_bound(lanes, nl, t, h->want, &lb)) {
        t = lb;
        strict = 0;
    }
    uint32_t hits;
    for (size_t pos = k->next_hit(x, 0, n, t, strict, &hits); pos < n;
         pos = k->next_hit(x, pos + TT__CONF_CHUNK, n, t, strict, &hits)) {
        for (; hits; hits &= hits - 1) {
            size_t j = pos + (size_t)__builtin_ctz(hits);
            topk_offer(h, x[j], (int32_t)(off + j));
        }
        if (h->n == h->want && h->v[0] >= t) {
            t = h->v[0];
            strict = 1;
        }
    }
}

/* --- merging the blocks -------------------------------------------------------------------- */

/* The row so far, relative to its maximum m: S = ties + sum, D = dot. */
typedef struct conf_acc {
    float m;
    uint64_t ties; /* entries equal to m */
    double sum;    /* e^(x-m) over the entries below m */
    double dot;    /* e^(x-m) * (x-m) over all entries */
    uint64_t above;
    uint64_t nans;
} conf_acc;

/* A block whose maximum mb reaches the running maximum, summed by the careful kernel. */
static void acc_top(conf_acc *a, float mb, const tt__conf_sums *s)
{
    if (mb > a->m && a->m == -INFINITY) {
        a->sum = s->sum;
        a->dot = s->dot;
        a->ties = s->ties;
        a->m = mb;
    } else if (mb > a->m) {
        /* The old maximum and everything under it become small terms, scaled by w. */
        double dm = (double)a->m - (double)mb, w = exp(dm);
        double old = ((double)a->ties + a->sum) * w;
        a->dot = a->dot * w + dm * old + s->dot;
        a->sum = old + s->sum;
        a->ties = s->ties;
        a->m = mb;
    } else {
        a->ties += s->ties;
        a->sum += s->sum;
        a->dot += s->dot;
    }
    a->above += s->above;
    a->nans += s->nans;
}

/* A block whose entries stay below the running maximum: total and dot were taken relative to
 * ref (the running maximum itself, or the block's maximum), scaled into the running frame. */
static void acc_below(conf_acc *a, float ref, double total, const tt__conf_sums *s)
{
    double dm = (double)ref - (double)a->m, w = exp(dm), tw = total * w;

    a->sum += tw;
    a->dot += s->dot * w + dm * tw;
    a->above += s->above;
    a->nans += s->nans;
}

/* The careful kernel on a block with maximum mb: NaN counted, ties with mb kept apart. */
static void block_careful(const tt__conf_kernels *k, conf_acc *a, const float *x, size_t n,
                          float mb, float xc)
{
    tt__conf_sums s;

    k->sums_careful(x, n, mb, xc, &s);
    if (mb >= a->m) {
        acc_top(a, mb, &s);
    } else {
        acc_below(a, mb, (double)s.ties + s.sum, &s);
    }
}

/*
 * One block: the fast kernel relative to the running maximum, which also finds the block's
 * maximum mb and partial maxima (s->lanes, for the top-k scan). A block that raises the running
 * maximum (or holds the first finite entry) is summed again by the careful kernel, from L1; so
 * is a block whose sums came out NaN, which only a NaN entry causes. A block that merely ties
 * the maximum keeps its fast sums: the entropy is then at least that of two equal tokens, far
 * from the tiny values that need the ties kept apart. Returns mb, or +inf to give the row to
 * compute_inf().
 */
static float block_sums(const tt__conf_kernels *k, conf_acc *a, const float *x, size_t n, float xc,
                        const char *pf, size_t pf_len, tt__conf_sums *s)
{
    float mb;

    if (a->m == -INFINITY) {
        size_t nl;
        mb = k->max(x, n, s->lanes, &nl);
        s->nlanes = (uint32_t)nl;
    } else {
        k->sums(x, n, a->m, xc, pf, pf_len, s);
        mb = s->max;
        if (mb <= a->m && !isnan(s->sum) && !isnan(s->dot)) {
            acc_below(a, a->m, s->sum, s);
            return mb;
        }
    }
    if (mb == INFINITY) {
        return mb;
    }
    if (mb == -INFINITY) {
        a->nans += k->count_nan(x, n);
        return mb;
    }
    block_careful(k, a, x, n, mb, xc);
    return mb;
}

/* --- results ------------------------------------------------------------------------------- */

/* A finite log-prob never becomes -inf through the float conversion. */
static float logprob_f32(double lp)
{
    return lp < -(double)FLT_MAX ? -FLT_MAX : (float)lp;
}

static void stats_reset(tt_token_stats *out, int32_t chosen)
{
    memset(out, 0, sizeof *out);
    out->chosen = chosen;
    out->rank = -1;
    out->logprob = -INFINITY;
}

static void finish_topk(topk *h, uint32_t k, double m, double inv_s, tt_token_stats *out)
{
    double p[2] = {0, 0};

    topk_sort(h);
    for (uint32_t i = 0; i < h->n && i < 2; i++) {
        p[i] = exp((double)h->v[i] - m) * inv_s;
    }
    out->margin = (float)(p[0] - p[1]);
    out->k = TT_MIN(k, h->n);
    for (uint32_t i = 0; i < out->k; i++) {
        out->topk_ids[i] = h->id[i];
        out->topk_probs[i] = (float)(exp((double)h->v[i] - m) * inv_s);
    }
}

static void finish(const conf_acc *a, topk *h, int chosen_ok, float xc, uint32_t k,
                   tt_token_stats *out)
{
    out->nan_count = (uint32_t)TT_MIN(a->nans, (uint64_t)UINT32_MAX);
    out->flags |= a->nans ? TT_STATS_NAN : 0;
    out->rank = chosen_ok ? (int32_t)a->above : -1;
    if (!chosen_ok || xc == -INFINITY) {
        out->flags |= TT_STATS_CHOSEN_INVALID;
    }
    if (a->m == -INFINITY) {
        out->flags |= TT_STATS_DEGENERATE;
        return;
    }
    double s = (double)a->ties + a->sum;
    double log_s = log1p(((double)a->ties - 1.0) + a->sum);
    out->entropy = (float)(log_s - a->dot / s);
    if (chosen_ok && xc > -INFINITY) {
        double lp = ((double)xc - (double)a->m) - log_s;
        out->logprob = logprob_f32(lp);
        out->prob = (float)exp(lp);
    }
    finish_topk(h, k, (double)a->m, 1.0 / s, out);
}

/* A row holding +inf: the limit of the softmax as those logits grow together, i.e. the +inf
 * entries share the mass equally and every other entry gets 0. Rare, so plain scalar code. */
static void compute_inf(const conf_row *r, int chosen_ok, float xc, uint32_t k, tt_token_stats *out)
{
    topk h = {.want = TT_MAX(k, 2u)};
    uint64_t ninf = 0, nans = 0, above = 0;

    for (size_t i = 0; i < r->n; i++) {
        float v = row_at(r, i);
        if (isnan(v)) {
            nans++;
            continue;
        }
        ninf += v == INFINITY;
        above += v > xc;
        if (v > topk_floor(&h)) {
            topk_offer(&h, v, (int32_t)i);
        }
    }
    double p = 1.0 / (double)ninf;
    out->flags |= TT_STATS_INF | (nans ? TT_STATS_NAN : 0);
    out->flags |= !chosen_ok || xc == -INFINITY ? TT_STATS_CHOSEN_INVALID : 0;
    out->nan_count = (uint32_t)TT_MIN(nans, (uint64_t)UINT32_MAX);
    out->rank = chosen_ok ? (int32_t)above : -1;
    out->entropy = (float)log((double)ninf);
    out->margin = ninf >= 2 ? 0.0f : 1.0f;
    if (xc == INFINITY) {
        out->prob = (float)p;
        out->logprob = (float)-log((double)ninf);
    }
    topk_sort(&h);
    out->k = TT_MIN(k, h.n);
    for (uint32_t i = 0; i < out->k; i++) {
        out->topk_ids[i] = h.id[i];
        out->topk_probs[i] = h.v[i] == INFINITY ? (float)p : 0.0f;
    }
}

static void compute_row(const tt__conf_kernels *kern, const conf_row *r, int32_t chosen, uint32_t k,
                        tt_token_stats *out)
{
    float stage[TT__CONF_BLOCK] __attribute__((aligned(64)));
    tt__conf_sums s;
    conf_acc a = {.m = -INFINITY};
    topk h = {.want = TT_MAX(k, 2u)};
    int chosen_ok = chosen >= 0 && (size_t)chosen < r->n;
    float xc = chosen_ok ? row_at(r, (size_t)chosen) : -INFINITY;

    xc = isnan(xc) ? -INFINITY : xc;
    for (size_t off = 0; off < r->n; off += TT__CONF_BLOCK) {
        size_t len = TT_MIN(r->n - off, (size_t)TT__CONF_BLOCK), n, pf_len;
        const float *x = block_fetch(r, kern, off, len, stage, &n);
        const char *pf = block_ahead(r, off, &pf_len);
        float mb = block_sums(kern, &a, x, n, xc, pf, pf_len, &s);
        if (mb == INFINITY) {
            compute_inf(r, chosen_ok, xc, k, out);
            return;
        }
        topk_scan(&h, kern, x, n, off, mb, s.lanes, s.nlanes);
    }
    finish(&a, &h, chosen_ok, xc, k, out);
}

int tt__token_stats_compute_path(int path, const void *logits, size_t n, size_t stride,
                                 tt_dtype dtype, int32_t chosen, uint32_t k, tt_token_stats *out)
{
    conf_row r;
    int rc;

    if (!out) {
        return TT_EINVAL;
    }
    stats_reset(out, chosen);
    if (k > TT_TOPK_MAX || !tt__conf_path_supported(path)) {
        return TT_EINVAL;
    }
    rc = row_init(&r, logits, n, stride, dtype);
    if (rc < 0) {
        return rc;
    }
    compute_row(path_kernels(path), &r, chosen, k, out);
    return 0;
}

TT_API int tt_token_stats_compute(const void *logits, size_t n, size_t stride, tt_dtype dtype,
                                  int32_t chosen, uint32_t k, tt_token_stats *out)
{
    return tt__token_stats_compute_path(tt__conf_path_active(), logits, n, stride, dtype, chosen, k,
                                        out);
}

/* --- hosted-model log-probs ---------------------------------------------------------------- */

/* Providers round their figures; a log-prob up to this far above 0 is taken as 0. */
#define LOGPROB_TOLERANCE 1e-4f

typedef struct lp_ent {
    float lp;
    int32_t id;
    uint32_t order; /* position in the caller's array: the tie-break when ids are unknown */
} lp_ent;

static int lp_valid(float lp)
{
    return !isnan(lp) && lp <= LOGPROB_TOLERANCE;
}

static int lp_better(const lp_ent *a, const lp_ent *b, int have_ids)
{
    if (a->lp != b->lp) {
        return a->lp > b->lp;
    }
    return have_ids ? a->id < b->id : a->order < b->order;
}

/* Collect the usable alternatives, best first. NaN entries are counted and skipped, -inf ones
 * (no mass) skipped; anything else that is not a log-prob, or a repeated id, is an error. */
static int lp_collect(const int32_t *ids, const float *lps, size_t k, lp_ent *e, size_t *m,
                      uint32_t *nans)
{
    *m = 0;
    *nans = 0;
    for (size_t i = 0; i < k; i++) {
        if (isnan(lps[i])) {
            (*nans)++;
            continue;
        }
        if (!lp_valid(lps[i])) {
            return TT_EINVAL;
        }
        for (size_t j = 0; ids && j < i; j++) {
            if (ids[j] == ids[i]) {
                return TT_EINVAL;
            }
        }
        if (lps[i] == -INFINITY) {
            continue;
        }
        lp_ent x = {TT_MIN(lps[i], 0.0f), ids ? ids[i] : -1, (uint32_t)i};
        size_t j = (*m)++;
        for (; j > 0 && lp_better(&x, &e[j - 1], ids != NULL); j--) {
            e[j] = e[j - 1];
        }
        e[j] = x;
    }
    return 0;
}

/* The alternative that is the chosen token: by id, or without ids by an equal log-prob (the
 * provider reports the same figure twice). -1 if none. */
static int lp_find_chosen(const lp_ent *e, size_t m, int have_ids, int32_t chosen, float lp)
{
    for (size_t i = 0; i < m; i++) {
        if (have_ids ? e[i].id == chosen : fabsf(e[i].lp - lp) <= 1e-6f * (1.0f + fabsf(lp))) {
            return (int)i;
        }
    }
    return -1;
}

static void top2_add(double top[2], double v)
{
    if (v > top[0]) {
        top[1] = top[0];
        top[0] = v;
    } else if (v > top[1]) {
        top[1] = v;
    }
}

/* The least-entropy distribution consistent with the known probabilities p[0..np) (any order)
 * when the unknown remainder r must be split into pieces no larger than cap: floor(r/cap)
 * pieces of cap and one of the rest. Returns its entropy; top[0..1] get its two largest masses. */
static double lp_min_entropy(const double *p, size_t np, double r, double cap, double top[2])
{
    double h = 0, q = cap > 0 ? floor(r / cap) : 0, rest = r - q * cap;

    top[0] = top[1] = 0;
    for (size_t i = 0; i < np; i++) {
        h -= p[i] > 0 ? p[i] * log(p[i]) : 0;
        top2_add(top, p[i]);
    }
    if (q >= 1) {
        h -= q * cap * log(cap);
        top2_add(top, cap);
        if (q >= 2) {
            top2_add(top, cap);
        }
    }
    if (rest > 0) {
        h -= rest * log(rest);
        top2_add(top, rest);
    }
    return h;
}

TT_API int tt_token_stats_from_logprobs(int32_t chosen, float chosen_logprob,
                                        const int32_t *top_ids, const float *top_logprobs, size_t k,
                                        tt_token_stats *out)
{
    lp_ent e[TT_TOPK_MAX];
    double p[TT_TOPK_MAX + 1], mass = 0, top[2];
    size_t m, np = 0;
    uint32_t nans;
    int32_t higher = 0;
    int at;

    if (!out) {
        return TT_EINVAL;
    }
    stats_reset(out, chosen);
    if (k > TT_TOPK_MAX || (k > 0 && !top_logprobs) || !lp_valid(chosen_logprob)) {
        return TT_EINVAL;
    }
    if (lp_collect(top_ids, top_logprobs, k, e, &m, &nans) < 0) {
        return TT_EINVAL;
    }
    chosen_logprob = TT_MIN(chosen_logprob, 0.0f);
    at = chosen_logprob == -INFINITY
             ? -1
             : lp_find_chosen(e, m, top_ids != NULL, chosen, chosen_logprob);
    for (size_t i = 0; i < m; i++) {
        p[np++] = exp((double)e[i].lp);
        out->topk_ids[i] = e[i].id;
        out->topk_probs[i] = (float)p[i];
        higher += at >= 0 && e[i].lp > e[at].lp;
    }
    out->rank = at >= 0 ? higher : (int32_t)m;
    if (at < 0 && chosen_logprob > -INFINITY) {
        p[np++] = exp((double)chosen_logprob);
    }
    for (size_t i = 0; i < np; i++) {
        mass += p[i];
    }
    /* The unlisted tokens are no more likely than the least likely listed one. */
    double cap = m > 0 ? p[m - 1] : 1.0;
    out->entropy = (float)lp_min_entropy(p, np, TT_MAX(0.0, 1.0 - mass), cap, top);
    out->margin = (float)(top[0] - top[1]);
    out->k = (uint32_t)m;
    out->logprob = chosen_logprob;
    out->prob = (float)exp((double)chosen_logprob);
    out->nan_count = nans;
    out->flags = TT_STATS_ESTIMATED | (nans ? TT_STATS_NAN : 0) |
                 (chosen_logprob == -INFINITY ? TT_STATS_CHOSEN_INVALID : 0);
    return 0;
}

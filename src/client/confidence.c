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
 * This file also holds the run-time choice of the path; the kernels are in
 * confidence_portable.c, confidence_avx2.c and confidence_avx512.c.
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
        return &tt__conf_portable;
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

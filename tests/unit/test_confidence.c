/*
 * test_confidence.c - token statistics (src/client/confidence*.c) against a long-double
 * reference written from the definitions, on every path this CPU can run.
 *
 * The reference computes p_i = exp(x_i - M - log S) and H = -sum p_i log p_i, i.e. not the
 * formula the library uses (log S - D/S), with S - 1 summed apart from the maximum so that tiny
 * entropies are exact there too. Tolerances (docs/confidence.md explains them):
 *   entropy, log-prob: |got - ref| <= 1e-5 |ref| + floor, floor = n * FLT_MIN * (89 + log n),
 *     the most that entries below FLT_MIN relative to the max (flushed to 0) can contribute;
 *   prob, top-k probs: relative 1e-5 (1 + |log p|), since p = exp(log p);
 *   rank, top-k ids, NaN count, flags: exact.
 */
#include "test.h"

#include <float.h>
#include <math.h>
#include <pthread.h>

#include "client/confidence.h"
#include "common/compat.h"
#include "telltale.h"

/* --- rows ---------------------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void)
{
    return ((double)(rng_next() >> 11) + 0.5) * 0x1p-53;
}

static double rng_normal(void)
{
    return sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit());
}

enum shape { NORMAL, UNIFORM, PEAKED, FLAT, LLM, NSHAPES };
static const char *const shape_names[] = {"normal", "uniform", "peaked", "flat", "llm"};

static float *row_new(size_t n, enum shape shape, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);

    CHECK(x != NULL);
    rng_state = seed;
    for (size_t i = 0; i < n; i++) {
        switch (shape) {
        case NORMAL:
            x[i] = (float)(3.0 * rng_normal());
            break;
        case UNIFORM:
            x[i] = (float)(40.0 * rng_unit() - 20.0);
            break;
        case PEAKED:
            x[i] = (float)(rng_normal() - 10.0);
            break;
        case FLAT:
            x[i] = (float)(1e-3 * rng_normal() + 5.0);
            break;
        default:
            /* A heavy right tail, like a language model's logits. */
            x[i] = (float)(2.0 * rng_normal() + (rng_unit() < 0.001 ? 12.0 * rng_unit() : 0.0));
            break;
        }
    }
    if (shape == PEAKED) {
        x[(size_t)(rng_next() % n)] = 12.0f;
    }
    return x;
}

/* --- the reference ------------------------------------------------------------------------- */

typedef struct ref_stats {
    long double entropy, logprob, prob, margin;
    long double topk_probs[TT_TOPK_MAX];
    int32_t topk_ids[TT_TOPK_MAX];
    uint32_t k, nans, flags;
    int32_t rank;
    double floor; /* absolute allowance for flushed entries */
} ref_stats;

static int ref_better(const float *x, size_t a, size_t b)
{
    return x[a] > x[b] || (x[a] == x[b] && a < b);
}

static void ref_topk(const float *x, size_t n, uint32_t want, size_t *ids, uint32_t *got)
{
    *got = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]) || x[i] == -INFINITY) {
            continue;
        }
        uint32_t j = *got < want ? (*got)++ : want;
        if (j == want && !ref_better(x, i, ids[want - 1])) {
            continue;
        }
        j = j == want ? want - 1 : j;
        for (; j > 0 && ref_better(x, i, ids[j - 1]); j--) {
            ids[j] = ids[j - 1];
        }
        ids[j] = i;
    }
}

/* The statistics of a row with no +inf entry, from the definitions. */
static void ref_compute(const float *x, size_t n, int32_t chosen, uint32_t k, ref_stats *r)
{
    long double m = -INFINITY, small = 0, ties = 0, h = 0;
    size_t ids[TT_TOPK_MAX + 2];
    uint32_t got;

    memset(r, 0, sizeof *r);
    r->floor = (double)n * FLT_MIN * (89.0 + log((double)n));
    for (size_t i = 0; i < n; i++) {
        r->nans += isnan(x[i]) != 0;
        m = !isnan(x[i]) && x[i] > m ? x[i] : m;
    }
    int ok = chosen >= 0 && (size_t)chosen < n;
    float xc = ok && !isnan(x[chosen]) ? x[chosen] : -INFINITY;
    r->rank = -1;
    if (ok) {
        r->rank = 0;
        for (size_t i = 0; i < n; i++) {
            r->rank += x[i] > xc;
        }
    }
    r->flags =
        (r->nans ? TT_STATS_NAN : 0) | (!ok || xc == -INFINITY ? TT_STATS_CHOSEN_INVALID : 0);
    r->logprob = -INFINITY;
    if (m == -INFINITY) {
        r->flags |= TT_STATS_DEGENERATE;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]) || x[i] == -INFINITY) {
            continue;
        }
        if (x[i] == m) {
            ties += 1;
        } else {
            small += expl((long double)x[i] - m);
        }
    }
    long double log_s = log1pl(ties - 1 + small);
    for (size_t i = 0; i < n; i++) {
        if (!isnan(x[i]) && x[i] != -INFINITY) {
            long double lp = ((long double)x[i] - m) - log_s;
            h -= expl(lp) * lp;
        }
    }
    r->entropy = h;
    if (xc > -INFINITY) {
        r->logprob = ((long double)xc - m) - log_s;
        r->prob = expl(r->logprob);
    }
    ref_topk(x, n, k > 2 ? k : 2, ids, &got);
    long double p0 = got > 0 ? expl(x[ids[0]] - m - log_s) : 0;
    long double p1 = got > 1 ? expl(x[ids[1]] - m - log_s) : 0;
    r->margin = p0 - p1;
    r->k = got < k ? got : k;
    for (uint32_t i = 0; i < r->k; i++) {
        r->topk_ids[i] = (int32_t)ids[i];
        r->topk_probs[i] = expl(x[ids[i]] - m - log_s);
    }
}

/* --- checks -------------------------------------------------------------------------------- */

static double rel_tol_prob(long double p)
{
    return 1e-5 * (1.0 + fabs(p > 0 ? (double)logl(p) : 0.0)) * (double)p + 1e-38;
}

static void check_against(const tt_token_stats *s, const ref_stats *r, const char *what)
{
    double te = 1e-5 * (double)r->entropy + r->floor;
    double tl = 1e-5 * fabs((double)r->logprob) + r->floor;

    CHECK_MSG(fabs(s->entropy - (double)r->entropy) <= te, "%s: entropy %.9g vs %.9Lg", what,
              s->entropy, r->entropy);
    if (r->logprob == -INFINITY) {
        CHECK_MSG(s->logprob == -INFINITY && s->prob == 0, "%s: logprob %g", what, s->logprob);
    } else if (r->logprob < -FLT_MAX) {
        /* A finite log-prob beyond the float range is reported as -FLT_MAX, never -inf. */
        CHECK_MSG(s->logprob == -FLT_MAX && s->prob == 0, "%s: logprob %g", what, s->logprob);
    } else {
        CHECK_MSG(fabs(s->logprob - (double)r->logprob) <= tl, "%s: logprob %.9g vs %.9Lg", what,
                  s->logprob, r->logprob);
        CHECK_MSG(fabs(s->prob - (double)r->prob) <= rel_tol_prob(r->prob),
                  "%s: prob %.9g vs %.9Lg", what, s->prob, r->prob);
    }
    CHECK_MSG(fabs(s->margin - (double)r->margin) <= 1e-5, "%s: margin %.9g vs %.9Lg", what,
              s->margin, r->margin);
    CHECK_MSG(s->rank == r->rank, "%s: rank %d vs %d", what, s->rank, r->rank);
    CHECK_MSG(s->nan_count == r->nans, "%s: nans %u vs %u", what, s->nan_count, r->nans);
    CHECK_MSG(s->flags == r->flags, "%s: flags %#x vs %#x", what, s->flags, r->flags);
    CHECK_MSG(s->k == r->k, "%s: k %u vs %u", what, s->k, r->k);
    for (uint32_t i = 0; i < r->k; i++) {
        CHECK_MSG(s->topk_ids[i] == r->topk_ids[i], "%s: top %u id %d vs %d", what, i,
                  s->topk_ids[i], r->topk_ids[i]);
        CHECK_MSG(fabs(s->topk_probs[i] - (double)r->topk_probs[i]) <=
                      rel_tol_prob(r->topk_probs[i]),
                  "%s: top %u prob %.9g vs %.9Lg", what, i, s->topk_probs[i], r->topk_probs[i]);
    }
}

/* Run every path this CPU has on one row and check each against the reference. */
static void check_row_typed(const void *row, size_t n, size_t stride, tt_dtype dtype,
                            const float *values, int32_t chosen, uint32_t k, const char *what)
{
    ref_stats r;
    char label[160];

    ref_compute(values, n, chosen, k, &r);
    for (int path = 0; path < TT__CONF_NPATHS; path++) {
        tt_token_stats s;
        if (!tt__conf_path_supported(path)) {
            continue;
        }
        snprintf(label, sizeof label, "%s [%s]", what, tt__conf_path_name(path));
        CHECK_OK(tt__token_stats_compute_path(path, row, n, stride, dtype, chosen, k, &s));
        CHECK(s.chosen == chosen);
        check_against(&s, &r, label);
    }
}

static void check_row(const float *x, size_t n, int32_t chosen, uint32_t k, const char *what)
{
    check_row_typed(x, n, 1, TT_DTYPE_F32, x, chosen, k, what);
}

/* --- accuracy on random rows --------------------------------------------------------------- */

static void random_rows(size_t n, uint64_t seed)
{
    char what[96];

    for (int shape = 0; shape < NSHAPES; shape++) {
        float *x = row_new(n, (enum shape)shape, seed + (uint64_t)shape);
        int32_t chosen = (int32_t)(rng_next() % n);
        snprintf(what, sizeof what, "%s n=%zu", shape_names[shape], n);
        check_row(x, n, chosen, 8, what);
        /* The argmax as the chosen token: the log-prob closest to 0. */
        int32_t best = 0;
        for (size_t i = 1; i < n; i++) {
            best = x[i] > x[best] ? (int32_t)i : best;
        }
        check_row(x, n, best, 1, what);
        free(x);
    }
}

TEST(stats_match_double_reference_32k)
{
    random_rows(32000, 1);
    random_rows(32768, 2);
}

TEST(stats_match_double_reference_128k)
{
    random_rows(128256, 3);
}

TEST(stats_match_double_reference_256k)
{
    random_rows(256000, 4);
    random_rows(262144, 5);
}

TEST(stats_match_double_reference_beyond_256k)
{
    size_t n = ((size_t)1 << 20) + 3;
    float *x = row_new(n, LLM, 6);

    check_row(x, n, (int32_t)(n - 2), 32, "llm n=2^20+3");
    free(x);
}

TEST(stats_match_reference_for_every_length_up_to_300)
{
    char what[64];

    for (size_t n = 1; n <= 300; n++) {
        float *x = row_new(n, LLM, 100 + n);
        snprintf(what, sizeof what, "n=%zu", n);
        check_row(x, n, (int32_t)(n / 2), (uint32_t)(n % 33), what);
        free(x);
    }
}

TEST(stats_match_reference_around_block_and_vector_edges)
{
    static const size_t sizes[] = {2047, 2048, 2049, 4095, 4096, 4097, 6143, 32001, 65537};
    char what[64];

    for (size_t i = 0; i < TT_ARRAY_LEN(sizes); i++) {
        float *x = row_new(sizes[i], NORMAL, 200 + i);
        snprintf(what, sizeof what, "n=%zu", sizes[i]);
        check_row(x, sizes[i], (int32_t)(sizes[i] - 1), 32, what);
        free(x);
    }
}

TEST(stats_tiny_entropy_keeps_relative_precision)
{
    /* One token at 0, the rest 20..60 below: H down to about 1e-20, all representable. */
    static const float gaps[] = {20.0f, 30.0f, 45.0f, 60.0f};
    size_t n = 50000;
    char what[64];

    for (size_t g = 0; g < TT_ARRAY_LEN(gaps); g++) {
        float *x = row_new(n, NORMAL, 300 + g);
        for (size_t i = 0; i < n; i++) {
            x[i] = -gaps[g] + 0.1f * x[i];
        }
        x[7777] = 0.0f;
        snprintf(what, sizeof what, "gap %g", gaps[g]);
        ref_stats r;
        ref_compute(x, n, 7777, 4, &r);
        CHECK(r.entropy > 0 && r.entropy < 1e-2L);
        check_row(x, n, 7777, 4, what);
        check_row(x, n, 3, 4, what);
        free(x);
    }
}

TEST(stats_two_entry_rows_check_the_exp_at_every_gap)
{
    /* H of {0, -g} is log(1 + e^-g) + g e^-g / (1 + e^-g): its relative error is that of e^-g,
     * so this sweep checks the vector exp point by point, down to where it flushes to 0. */
    char what[64];

    for (int i = 0; i <= 20000; i++) {
        float x[2] = {0.0f, -(float)i * 0.0045f};
        snprintf(what, sizeof what, "gap %g", -x[1]);
        check_row(x, 2, 1, 2, what);
        x[0] = x[1];
        x[1] = 0.0f;
        check_row(x, 2, 0, 2, what);
    }
}

TEST(stats_bf16_and_f16_rows_match_reference_on_their_values)
{
    size_t n = 128256;
    float *x = row_new(n, LLM, 400), *v = malloc(n * sizeof *v);
    uint16_t *h = malloc(n * sizeof *h);

    CHECK(v && h);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        h[i] = (uint16_t)(bits >> 16);
        v[i] = tt__conf_bf16_to_f32(h[i]);
    }
    check_row_typed(h, n, 1, TT_DTYPE_BF16, v, 1234, 16, "bf16");
    for (size_t i = 0; i < n; i++) {
        /* Logits of a few units, exact in binary16: k / 256 for |k| < 2048. */
        int32_t q = (int32_t)lrintf(x[i] * 256.0f);
        q = q > 2047 ? 2047 : q < -2047 ? -2047 : q;
        v[i] = (float)q / 256.0f;
        uint16_t sign = q < 0 ? 0x8000 : 0;
        uint32_t a = (uint32_t)(q < 0 ? -q : q);
        if (a == 0) {
            h[i] = sign;
            continue;
        }
        int e = 0;
        while ((a >> e) > 1) {
            e++;
        }
        /* value = a * 2^-8 = 1.f * 2^(e-8); mantissa a << (10 - e) without the leading 1. */
        h[i] = (uint16_t)(sign | (uint16_t)((e - 8 + 15) << 10) |
                          (uint16_t)(((a << (10 - e)) & 0x3ffu)));
        CHECK(tt__conf_f16_to_f32(h[i]) == v[i]);
    }
    check_row_typed(h, n, 1, TT_DTYPE_F16, v, 99, 16, "f16");
    free(x);
    free(v);
    free(h);
}

TEST(stats_f16_conversion_is_exact_for_every_value)
{
    for (uint32_t b = 0; b < 65536; b++) {
        uint16_t h = (uint16_t)b;
        int e = (h >> 10) & 0x1f, man = h & 0x3ff;
        double want = e == 0    ? ldexp(man, -24)
                      : e == 31 ? (man ? NAN : INFINITY)
                                : ldexp(1024 + man, e - 25);
        want = (h & 0x8000) ? -want : want;
        float got = tt__conf_f16_to_f32(h);
        if (isnan(want)) {
            CHECK(isnan(got));
        } else {
            CHECK_MSG((double)got == want, "%#x: %g vs %g", b, got, want);
            CHECK(!signbit(got) == !signbit(want));
        }
    }
}

TEST(stats_strided_rows_match_contiguous)
{
    size_t n = 40000, stride = 3;
    float *x = row_new(n, NORMAL, 500), *wide = calloc(n * stride, sizeof *wide);
    uint16_t *h = calloc(n * stride, sizeof *h), *hc = malloc(n * sizeof *hc);
    float *v = malloc(n * sizeof *v);

    CHECK(wide && h && hc && v);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        wide[i * stride] = x[i];
        memcpy(&bits, &x[i], sizeof bits);
        h[i * stride] = hc[i] = (uint16_t)(bits >> 16);
        v[i] = tt__conf_bf16_to_f32(hc[i]);
        /* The gaps hold values that would win if they were read. */
        wide[i * stride + 1] = 1e9f;
        h[i * stride + 2] = 0x7f80; /* +inf in bf16 */
    }
    check_row_typed(wide, n, stride, TT_DTYPE_F32, x, 17, 5, "f32 stride 3");
    check_row_typed(h, n, stride, TT_DTYPE_BF16, v, 17, 5, "bf16 stride 3");
    check_row_typed(x + 1, n - 1, 1, TT_DTYPE_F32, x + 1, 17, 5, "f32 offset 1");
    /* A row that is not 4-byte aligned takes the gather path. */
    char *mis = malloc(n * sizeof(float) + 1);
    CHECK(mis);
    memcpy(mis + 1, x, n * sizeof(float));
    check_row_typed(mis + 1, n, 1, TT_DTYPE_F32, x, 17, 5, "f32 misaligned");
    free(mis);
    free(x);
    free(wide);
    free(h);
    free(hc);
    free(v);
}

/* --- edge cases ---------------------------------------------------------------------------- */

TEST(stats_ties_pick_lower_ids_and_rank_counts_strictly_greater)
{
    size_t n = 5000;
    float *x = malloc(n * sizeof *x);
    tt_token_stats s;

    CHECK(x);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i % 7);
    }
    check_row(x, n, 6, 10, "ties mod 7");
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 6, 10, &s));
    CHECK_EQ(s.rank, 0);
    for (uint32_t i = 0; i < 10; i++) {
        CHECK_EQ(s.topk_ids[i], 6 + 7 * (int32_t)i);
    }
    CHECK_NEAR(s.margin, 0.0, 1e-9);
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 5, 3, &s));
    CHECK_EQ(s.rank, 714); /* the entries equal to 6: 6, 13, ..., 4997 */
    for (size_t i = 0; i < n; i++) {
        x[i] = 1.5f;
    }
    check_row(x, n, 4321, 32, "all equal");
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 4321, 32, &s));
    CHECK_NEAR(s.entropy, log((double)n), 1e-5 * log((double)n));
    CHECK_EQ(s.topk_ids[31], 31);
    free(x);
}

TEST(stats_neg_inf_entries_get_no_mass)
{
    size_t n = 70000;
    float *x = row_new(n, NORMAL, 600);
    tt_token_stats s;

    /* A grammar mask: all but every 1000th entry is -inf. */
    for (size_t i = 0; i < n; i++) {
        x[i] = i % 1000 == 3 ? x[i] : -INFINITY;
    }
    check_row(x, n, 3003, 32, "masked row");
    check_row(x, n, 5, 4, "masked row, chosen masked");
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 5, 4, &s));
    CHECK(s.flags == TT_STATS_CHOSEN_INVALID);
    CHECK_EQ(s.rank, 70);
    CHECK(s.logprob == -INFINITY && s.prob == 0.0f);
    /* Fewer finite entries than k: only those are reported. */
    CHECK_OK(tt_token_stats_compute(x, 2500, 1, TT_DTYPE_F32, 3, 32, &s));
    CHECK_EQ(s.k, 3);
    free(x);
}

TEST(stats_nan_entries_are_counted_flagged_and_ignored)
{
    size_t n = 30000;
    float *x = row_new(n, NORMAL, 700);
    tt_token_stats s;

    /* NaN in the first block (careful path), in later blocks (fast path, then redone) and at
     * the chosen position; one block entirely NaN. */
    x[0] = NAN;
    x[5000] = NAN;
    x[29999] = -NAN;
    for (size_t i = 10240; i < 12288; i++) {
        x[i] = NAN;
    }
    check_row(x, n, 123, 8, "nan row");
    check_row(x, n, 5000, 8, "nan chosen");
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 5000, 8, &s));
    CHECK_EQ(s.nan_count, 3 + 2048);
    CHECK(s.flags == (TT_STATS_NAN | TT_STATS_CHOSEN_INVALID));
    CHECK(isfinite(s.entropy) && isfinite(s.margin));
    for (uint32_t i = 0; i < s.k; i++) {
        CHECK(isfinite(s.topk_probs[i]));
    }
    free(x);
}

TEST(stats_pos_inf_entries_share_the_mass)
{
    size_t n = 9000;
    float *x = row_new(n, NORMAL, 800);
    tt_token_stats s;

    x[4000] = INFINITY;
    x[100] = NAN;
    for (int path = 0; path < TT__CONF_NPATHS; path++) {
        if (!tt__conf_path_supported(path)) {
            continue;
        }
        CHECK_OK(tt__token_stats_compute_path(path, x, n, 1, TT_DTYPE_F32, 4000, 3, &s));
        CHECK(s.flags == (TT_STATS_INF | TT_STATS_NAN));
        CHECK_EQ(s.nan_count, 1);
        CHECK(s.prob == 1.0f && s.logprob == 0.0f && s.entropy == 0.0f && s.margin == 1.0f);
        CHECK_EQ(s.rank, 0);
        CHECK_EQ(s.topk_ids[0], 4000);
        CHECK(s.topk_probs[0] == 1.0f && s.topk_probs[1] == 0.0f);
        x[8999] = INFINITY;
        CHECK_OK(tt__token_stats_compute_path(path, x, n, 1, TT_DTYPE_F32, 17, 3, &s));
        CHECK(s.flags == (TT_STATS_INF | TT_STATS_NAN));
        CHECK(s.prob == 0.0f && s.logprob == -INFINITY && s.margin == 0.0f);
        CHECK_NEAR(s.entropy, log(2.0), 1e-7);
        CHECK_EQ(s.topk_ids[0], 4000);
        CHECK_EQ(s.topk_ids[1], 8999);
        CHECK(s.topk_probs[1] == 0.5f);
        CHECK(s.rank >= 2);
        x[8999] = 0.0f;
    }
    /* +inf in the first block, which takes the two-pass route. */
    x[4000] = 1.0f;
    x[5] = INFINITY;
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 5, 3, &s));
    CHECK(s.flags == (TT_STATS_INF | TT_STATS_NAN) && s.prob == 1.0f && s.topk_ids[0] == 5);
    free(x);
}

TEST(stats_huge_magnitudes_do_not_overflow)
{
    float x[4100];
    size_t n = TT_ARRAY_LEN(x);

    for (size_t i = 0; i < n; i++) {
        x[i] = i % 2 ? -1e30f : 1e30f;
    }
    check_row(x, n, 2, 4, "+-1e30 alternating");
    check_row(x, n, 3, 4, "+-1e30, chosen low");
    for (size_t i = 0; i < n; i++) {
        x[i] = i % 3 == 0 ? -FLT_MAX : i % 3 == 1 ? FLT_MAX * 0.999f : (float)i;
    }
    check_row(x, n, 1, 4, "near FLT_MAX");
    check_row(x, n, 0, 4, "-FLT_MAX chosen");
    tt_token_stats s;
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 0, 4, &s));
    CHECK(s.logprob == -FLT_MAX && s.prob == 0.0f);
    CHECK(!(s.flags & TT_STATS_CHOSEN_INVALID));
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i % 11) * 1e4f;
    }
    check_row(x, n, 10, 4, "steps of 1e4");
}

TEST(stats_single_entry_row)
{
    float one = 3.0f;
    uint16_t bf = 0x4040; /* 3.0 in bf16 */
    tt_token_stats s;

    for (int path = 0; path < TT__CONF_NPATHS; path++) {
        if (!tt__conf_path_supported(path)) {
            continue;
        }
        CHECK_OK(tt__token_stats_compute_path(path, &one, 1, 1, TT_DTYPE_F32, 0, 5, &s));
        CHECK(s.prob == 1.0f && s.logprob == 0.0f && s.entropy == 0.0f && s.margin == 1.0f);
        CHECK(s.rank == 0 && s.k == 1 && s.topk_ids[0] == 0 && s.topk_probs[0] == 1.0f);
        CHECK(s.flags == 0);
        CHECK_OK(tt__token_stats_compute_path(path, &bf, 1, 1, TT_DTYPE_BF16, 0, 0, &s));
        CHECK(s.prob == 1.0f && s.k == 0 && s.margin == 1.0f);
    }
}

TEST(stats_chosen_out_of_range_is_flagged)
{
    size_t n = 1000;
    float *x = row_new(n, NORMAL, 900);
    tt_token_stats s;

    check_row(x, n, -1, 3, "chosen -1");
    check_row(x, n, (int32_t)n, 3, "chosen n");
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 1000, 3, &s));
    CHECK(s.flags == TT_STATS_CHOSEN_INVALID && s.rank == -1 && s.chosen == 1000);
    CHECK(s.prob == 0.0f && s.logprob == -INFINITY && s.entropy > 0);
    free(x);
}

TEST(stats_row_without_finite_entries_is_degenerate)
{
    size_t n = 5000;
    float *x = malloc(n * sizeof *x);
    tt_token_stats s;

    CHECK(x);
    for (size_t i = 0; i < n; i++) {
        x[i] = i % 5 == 0 ? NAN : -INFINITY;
    }
    check_row(x, n, 2, 5, "-inf and NaN");
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 2, 5, &s));
    CHECK(s.flags == (TT_STATS_DEGENERATE | TT_STATS_NAN | TT_STATS_CHOSEN_INVALID));
    CHECK(s.nan_count == 1000 && s.k == 0 && s.entropy == 0.0f && s.margin == 0.0f);
    CHECK(s.prob == 0.0f && s.logprob == -INFINITY && s.rank == 0);
    /* Finite entries only after two blocks without any: the first finite block starts the
     * running maximum. */
    x[4500] = 1.0f;
    x[4999] = 2.0f;
    check_row(x, n, 4500, 5, "finite after two empty blocks");
    CHECK_OK(tt_token_stats_compute(x, n, 1, TT_DTYPE_F32, 4500, 5, &s));
    CHECK(s.flags == TT_STATS_NAN && s.k == 2 && s.rank == 1 && s.nan_count == 999);
    free(x);
}

TEST(stats_topk_is_right_on_rising_falling_and_shuffled_rows)
{
    size_t n = 100000;
    float *x = malloc(n * sizeof *x);

    CHECK(x);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)i * 1e-4f;
    }
    check_row(x, n, 5, 32, "rising");
    for (size_t i = 0; i < n; i++) {
        x[i] = -(float)i * 1e-4f;
    }
    check_row(x, n, 5, 32, "falling");
    /* Rising in steps with duplicates: many ties at the top-k boundary. */
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i / 50);
    }
    check_row(x, n, 99999, 32, "rising steps");
    free(x);
}

TEST(stats_topk_is_right_when_the_largest_entries_cluster_in_some_lanes)
{
    /* The top-k lower bound comes from partial maxima over lanes of the kernels; rows whose large
     * entries all sit in some lanes (every period/2 out of period) catch a bound taken from the
     * wrong lanes. One later block jumps up, so that it holds the whole top-k and its bound
     * decides. */
    static const size_t periods[] = {8, 16, 32, 64, 128};
    size_t n = 20000;
    char what[64];

    for (size_t p = 0; p < TT_ARRAY_LEN(periods); p++) {
        float *x = row_new(n, NORMAL, 1300 + p);
        for (size_t i = 0; i < n; i++) {
            x[i] = 0.1f * x[i] + ((i % periods[p]) < periods[p] / 2 ? 10.0f : 0.0f) +
                   (i >= 10240 && i < 12288 ? 30.0f : 0.0f);
        }
        snprintf(what, sizeof what, "period %zu", periods[p]);
        check_row(x, n, 11, 32, what);
        check_row(x, n, 11, 7, what);
        free(x);
    }
}

TEST(stats_reject_bad_arguments)
{
    float x[4] = {1, 2, 3, 4};
    tt_token_stats s;

    CHECK_EQ(tt_token_stats_compute(NULL, 4, 1, TT_DTYPE_F32, 0, 1, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_compute(x, 0, 1, TT_DTYPE_F32, 0, 1, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_compute(x, 4, 1, (tt_dtype)7, 0, 1, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_compute(x, 4, 1, TT_DTYPE_F32, 0, TT_TOPK_MAX + 1, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_compute(x, 4, 1, TT_DTYPE_F32, 0, 1, NULL), TT_EINVAL);
    CHECK_EQ(tt_token_stats_compute(x, (size_t)INT32_MAX + 1, 1, TT_DTYPE_F32, 0, 1, &s),
             TT_EINVAL);
    CHECK_EQ(tt_token_stats_compute(x, 4, SIZE_MAX / 2, TT_DTYPE_F32, 0, 1, &s), TT_EINVAL);
    /* A failed call leaves no stale figures behind. */
    CHECK(s.k == 0 && s.prob == 0.0f && s.rank == -1);
    CHECK_OK(tt_token_stats_compute(x, 4, 1, TT_DTYPE_F32, 3, 0, &s));
    CHECK(s.k == 0 && s.rank == 0);
}

TEST(stats_stride_zero_reads_one_entry_n_times)
{
    float v = 2.0f;
    tt_token_stats s;

    CHECK_OK(tt_token_stats_compute(&v, 1000, 0, TT_DTYPE_F32, 999, 2, &s));
    CHECK_NEAR(s.entropy, log(1000.0), 1e-5);
    CHECK_NEAR(s.prob, 1e-3, 1e-8);
    CHECK(s.rank == 0 && s.topk_ids[0] == 0 && s.topk_ids[1] == 1);
}

/* --- paths and threads --------------------------------------------------------------------- */

TEST(stats_every_supported_path_agrees_with_portable)
{
    size_t n = 131072;
    float *x = row_new(n, LLM, 1000);
    tt_token_stats p, s;

    CHECK_OK(tt__token_stats_compute_path(TT__CONF_PORTABLE, x, n, 1, TT_DTYPE_F32, 77, 32, &p));
    for (int path = 1; path < TT__CONF_NPATHS; path++) {
        if (!tt__conf_path_supported(path)) {
            printf("  path %s not supported here\n", tt__conf_path_name(path));
            continue;
        }
        CHECK_OK(tt__token_stats_compute_path(path, x, n, 1, TT_DTYPE_F32, 77, 32, &s));
        CHECK_NEAR(s.entropy, p.entropy, 1e-6 * p.entropy);
        CHECK_NEAR(s.logprob, p.logprob, 1e-6 * fabs(p.logprob));
        CHECK(s.rank == p.rank && s.k == p.k && s.flags == p.flags);
        CHECK(memcmp(s.topk_ids, p.topk_ids, sizeof s.topk_ids) == 0);
    }
    free(x);
}

TEST(stats_this_cpu_gets_its_best_path)
{
    unsetenv("TELLTALE_SIMD");
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        CHECK_EQ(tt__conf_path_active(), TT__CONF_AVX512);
    } else if (__builtin_cpu_supports("avx2")) {
        CHECK(tt__conf_path_active() >= TT__CONF_AVX2);
    }
#endif
    CHECK(tt__conf_path_supported(tt__conf_path_active()));
}

TEST(stats_env_forces_a_path)
{
    /* Each test runs in a fresh process, so the variable is read here for the first time. */
    setenv("TELLTALE_SIMD", "portable", 1);
    CHECK_EQ(tt__conf_path_active(), TT__CONF_PORTABLE);
    setenv("TELLTALE_SIMD", "avx512", 1);
    CHECK_EQ(tt__conf_path_active(), TT__CONF_PORTABLE); /* read once */
    CHECK_STR(tt__conf_path_name(tt__conf_path_active()), "portable");
}

TEST(stats_env_cannot_force_a_path_the_cpu_lacks)
{
    setenv("TELLTALE_SIMD", "avx512", 1);
    int p = tt__conf_path_active();
    CHECK(tt__conf_path_supported(p));
    CHECK(p == TT__CONF_AVX512 || !tt__conf_path_supported(TT__CONF_AVX512));
}

struct thread_job {
    const float *x;
    size_t n;
    tt_token_stats want;
    int bad;
};

static void *thread_main(void *arg)
{
    struct thread_job *j = arg;
    tt_token_stats s;

    for (int i = 0; i < 20; i++) {
        if (tt_token_stats_compute(j->x, j->n, 1, TT_DTYPE_F32, 5, 8, &s) != 0 ||
            memcmp(&s, &j->want, sizeof s) != 0) {
            j->bad = 1;
        }
    }
    return NULL;
}

TEST(stats_threads_compute_at_once_with_identical_results)
{
    size_t n = 65536;
    float *x = row_new(n, NORMAL, 1100);
    struct thread_job jobs[4];
    pthread_t th[4];

    /* The threads race to the first dispatch; the expected results come from the best path
     * named explicitly, which does not touch it. */
    unsetenv("TELLTALE_SIMD");
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct thread_job){.x = x, .n = n - (size_t)i};
        CHECK_OK(tt__token_stats_compute_path(
            tt__conf_path_supported(TT__CONF_AVX512) ? TT__CONF_AVX512
            : tt__conf_path_supported(TT__CONF_AVX2) ? TT__CONF_AVX2
                                                     : TT__CONF_PORTABLE,
            x, n - (size_t)i, 1, TT_DTYPE_F32, 5, 8, &jobs[i].want));
    }
    for (int i = 0; i < 4; i++) {
        CHECK(pthread_create(&th[i], NULL, thread_main, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(!jobs[i].bad);
    }
    free(x);
}

/* --- hosted-model log-probs ---------------------------------------------------------------- */

TEST(logprobs_give_exact_prob_and_rank_in_topk)
{
    const int32_t ids[4] = {11, 22, 33, 44};
    const float lps[4] = {-0.5f, -1.5f, -2.0f, -3.0f};
    tt_token_stats s;

    CHECK_OK(tt_token_stats_from_logprobs(33, -2.0f, ids, lps, 4, &s));
    CHECK(s.logprob == -2.0f);
    CHECK_NEAR(s.prob, exp(-2.0), 1e-7);
    CHECK_EQ(s.rank, 2);
    CHECK(s.flags == TT_STATS_ESTIMATED && s.k == 4 && s.chosen == 33);
    CHECK(s.topk_ids[0] == 11 && s.topk_ids[3] == 44);
    CHECK_NEAR(s.topk_probs[1], exp(-1.5), 1e-7);
    CHECK_NEAR(s.margin, exp(-0.5) - exp(-1.5), 1e-7);
}

TEST(logprobs_entropy_is_the_least_consistent_with_the_topk)
{
    /* p = 0.5, 0.2, 0.1, 0.05, 0.05; remainder 0.1 in pieces of at most 0.05: two of 0.05. */
    const float lps[5] = {logf(0.5f), logf(0.2f), logf(0.1f), logf(0.05f), logf(0.05f)};
    const double p[7] = {0.5, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05};
    double h = 0, one_bucket;
    tt_token_stats s;

    for (int i = 0; i < 7; i++) {
        h -= p[i] * log(p[i]);
    }
    one_bucket = h + 2 * 0.05 * log(0.05) - 0.1 * log(0.1);
    CHECK_OK(tt_token_stats_from_logprobs(-1, logf(0.5f), NULL, lps, 5, &s));
    CHECK_NEAR(s.entropy, h, 1e-6);
    CHECK(s.entropy > one_bucket);
    CHECK_EQ(s.rank, 0); /* matched by its log-prob */
    CHECK_EQ(s.topk_ids[0], -1);
    CHECK_NEAR(s.margin, 0.3, 1e-6);
    /* Only the chosen token known: the remainder is one bucket. */
    CHECK_OK(tt_token_stats_from_logprobs(7, logf(0.7f), NULL, NULL, 0, &s));
    CHECK_NEAR(s.entropy, -(0.7 * log(0.7) + 0.3 * log(0.3)), 1e-6);
    CHECK_NEAR(s.margin, 0.4, 1e-6);
    CHECK(s.k == 0 && s.rank == 0);
}

TEST(logprobs_chosen_outside_topk_has_rank_k)
{
    const int32_t ids[3] = {1, 2, 3};
    const float lps[3] = {-0.1f, -3.0f, -4.0f};
    tt_token_stats s;

    CHECK_OK(tt_token_stats_from_logprobs(9, -5.0f, ids, lps, 3, &s));
    CHECK_EQ(s.rank, 3);
    CHECK_NEAR(s.prob, exp(-5.0), 1e-9);
    double known[4] = {exp(-0.1), exp(-3.0), exp(-4.0), exp(-5.0)}, mass = 0, h = 0;
    for (int i = 0; i < 4; i++) {
        mass += known[i];
        h -= known[i] * log(known[i]);
    }
    double r = 1 - mass, cap = exp(-4.0), q = floor(r / cap), rest = r - q * cap;
    h += -q * cap * log(cap) - (rest > 0 ? rest * log(rest) : 0);
    CHECK_NEAR(s.entropy, h, 1e-6);
}

TEST(logprobs_flag_nan_alternatives_and_reject_impossible_values)
{
    const int32_t ids[3] = {1, 2, 3};
    float lps[3] = {-0.1f, NAN, -4.0f};
    tt_token_stats s;

    CHECK_OK(tt_token_stats_from_logprobs(1, -0.1f, ids, lps, 3, &s));
    CHECK(s.flags == (TT_STATS_ESTIMATED | TT_STATS_NAN) && s.nan_count == 1 && s.k == 2);
    CHECK(isfinite(s.entropy) && s.rank == 0);
    CHECK_EQ(tt_token_stats_from_logprobs(1, NAN, ids, lps, 3, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_from_logprobs(1, 0.5f, ids, lps, 3, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_from_logprobs(1, INFINITY, ids, lps, 3, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_from_logprobs(1, -0.1f, ids, NULL, 3, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_from_logprobs(1, -0.1f, ids, lps, TT_TOPK_MAX + 1, &s), TT_EINVAL);
    CHECK_EQ(tt_token_stats_from_logprobs(1, -0.1f, ids, lps, 3, NULL), TT_EINVAL);
    lps[1] = 2.0f;
    CHECK_EQ(tt_token_stats_from_logprobs(1, -0.1f, ids, lps, 3, &s), TT_EINVAL);
    const int32_t dup[3] = {1, 2, 1};
    lps[1] = -1.0f;
    CHECK_EQ(tt_token_stats_from_logprobs(1, -0.1f, dup, lps, 3, &s), TT_EINVAL);
    /* Rounding noise just above 0 is taken as 0. */
    CHECK_OK(tt_token_stats_from_logprobs(1, 5e-5f, NULL, NULL, 0, &s));
    CHECK(s.logprob == 0.0f && s.prob == 1.0f && s.entropy == 0.0f);
    /* A chosen token without mass. */
    CHECK_OK(tt_token_stats_from_logprobs(1, -INFINITY, ids, lps, 3, &s));
    CHECK(s.flags == (TT_STATS_ESTIMATED | TT_STATS_CHOSEN_INVALID) && s.prob == 0.0f);
    CHECK_EQ(s.rank, 3);
}

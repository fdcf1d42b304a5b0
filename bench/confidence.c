/*
 * confidence.c - benchmark of tt_token_stats_compute: microseconds per logits row for vocab
 * 32k, 128k and 256k, fp32 and bf16, on every path the CPU has (portable, avx2, avx512), with
 * the row hot (in cache) and cold (visited once per pass over a pool of rows four times the
 * size of the last-level cache, in a fixed shuffled order).
 *
 * Baselines measured in the same run, on the same rows:
 *   floor      the memory-read floor: a plain vectorised sum over the row;
 *   threepass  a straightforward libm version: max and top-2; sum of expf; entropy and log-prob
 *              with expf again (double accumulators, -O2, no top-k);
 *   threepass_vec  the same three passes built with -O3 -ffast-math in bench/confidence_libm.c,
 *              so that expf is vectorised by glibc's libmvec (the strongest libm baseline);
 *   numpy      the lean numpy version of bench/confidence_numpy.py (max, exp, logsumexp, e.d),
 *              run in a fresh /usr/bin/python3 per vocabulary, which prints its own medians.
 * Every figure is the median of per-call times (CLOCK_MONOTONIC). Output: JSON lines
 * {"bench":"confidence","metric":..,"value":..,"unit":"us","baseline":..,"ratio":..,"note":..}
 * where ratio = value / baseline value. Fixed seeds throughout.
 *
 * Environment: TT_SRCDIR (where bench/ lives, default "."), TT_BENCH_PYTHON (default
 * /usr/bin/python3; "none" skips the numpy baseline).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "client/confidence.h"
#include "telltale.h"

#define TOPK 5
#define HOT_REPS 301
#define POOL_BYTES ((size_t)128 << 20)
#define CHOSEN 12345

static const size_t vocabs[] = {32000, 128256, 256000};
static const char *const vocab_names[] = {"32k", "128k", "256k"};
static volatile double sink;

/* --- rows ---------------------------------------------------------------------------------- */

static uint64_t rng = 20240611;

static double rng_unit(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) * 0x1p-53;
}

typedef struct pool {
    unsigned char *mem;
    size_t n, row_bytes, nrows;
    tt_dtype dtype;
    size_t *order; /* the visiting order for cold runs */
} pool;

/* Logits like a language model's: 2 * N(0,1) with a rare right tail. Pool rows are rotations
 * of one master row, so every row has the same distribution but its own addresses. */
static void pool_init(pool *p, size_t n, tt_dtype dtype)
{
    float *master = malloc(n * sizeof *master);
    size_t esize = dtype == TT_DTYPE_F32 ? 4 : 2;

    for (size_t i = 0; i < n; i++) {
        double g = sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit());
        master[i] = (float)(2.0 * g + (rng_unit() < 0.001 ? 12.0 * rng_unit() : 0.0));
    }
    p->n = n;
    p->dtype = dtype;
    p->row_bytes = (n * esize + 4095) / 4096 * 4096;
    p->nrows = POOL_BYTES / p->row_bytes > 16 ? POOL_BYTES / p->row_bytes : 16;
    p->mem = aligned_alloc(4096, p->nrows * p->row_bytes);
    p->order = malloc(p->nrows * sizeof *p->order);
    if (!master || !p->mem || !p->order) {
        fprintf(stderr, "confidence: out of memory\n");
        exit(1);
    }
    for (size_t r = 0; r < p->nrows; r++) {
        unsigned char *row = p->mem + r * p->row_bytes;
        for (size_t i = 0; i < n; i++) {
            float v = master[(i + 7919 * r) % n];
            uint32_t bits;
            memcpy(&bits, &v, sizeof bits);
            if (dtype == TT_DTYPE_F32) {
                memcpy(row + 4 * i, &v, 4);
            } else {
                uint16_t h = (uint16_t)(bits >> 16);
                memcpy(row + 2 * i, &h, 2);
            }
        }
        p->order[r] = r;
    }
    for (size_t r = p->nrows - 1; r > 0; r--) {
        size_t j = (size_t)(rng_unit() * (double)(r + 1)), t = p->order[r];
        p->order[r] = p->order[j];
        p->order[j] = t;
    }
    free(master);
}

static void pool_fini(pool *p)
{
    free(p->mem);
    free(p->order);
}

/* --- what is timed ------------------------------------------------------------------------- */

typedef double (*op_fn)(const void *row, size_t n, tt_dtype dtype, int path);

static float bf16_at(const void *row, size_t i)
{
    uint16_t h;

    memcpy(&h, (const unsigned char *)row + 2 * i, 2);
    return tt__conf_bf16_to_f32(h);
}

static float any_at(const void *row, size_t i, tt_dtype dtype)
{
    float f;

    if (dtype == TT_DTYPE_BF16) {
        return bf16_at(row, i);
    }
    memcpy(&f, (const unsigned char *)row + 4 * i, 4);
    return f;
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static double floor_avx512(const void *row, size_t n,
                                                              tt_dtype dtype)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    double s = 0;

    if (dtype == TT_DTYPE_F32) {
        const float *x = row;
        for (; i + 64 <= n; i += 64) {
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
            a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
            a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
        }
    } else {
        const uint16_t *x = row;
        for (; i + 32 <= n; i += 32) {
            __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i)));
            __m512i w1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i + 16)));
            a0 = _mm512_add_ps(a0, _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)));
            a1 = _mm512_add_ps(a1, _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)));
        }
    }
    for (; i < n; i++) {
        s += any_at(row, i, dtype);
    }
    return s + _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#endif

static double floor_plain(const void *row, size_t n, tt_dtype dtype)
{
    float a[8] = {0};
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            a[j] += any_at(row, i + j, dtype);
        }
    }
    for (; i < n; i++) {
        a[0] += any_at(row, i, dtype);
    }
    return (double)(a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7]);
}

static int have_avx512;

static double op_floor(const void *row, size_t n, tt_dtype dtype, int path)
{
    (void)path;
#if defined(__x86_64__)
    if (have_avx512) {
        return floor_avx512(row, n, dtype);
    }
#endif
    return floor_plain(row, n, dtype);
}

/* The version one writes first: three passes, expf from libm. Returns the entropy. */
static double op_threepass(const void *row, size_t n, tt_dtype dtype, int path)
{
    float m = -INFINITY, m2 = -INFINITY;
    double s = 0, h = 0;

    (void)path;
    for (size_t i = 0; i < n; i++) {
        float v = any_at(row, i, dtype);
        if (v > m) {
            m2 = m;
            m = v;
        } else if (v > m2) {
            m2 = v;
        }
    }
    for (size_t i = 0; i < n; i++) {
        s += expf(any_at(row, i, dtype) - m);
    }
    double log_s = log(s);
    for (size_t i = 0; i < n; i++) {
        float d = any_at(row, i, dtype) - m;
        double p = expf(d) / s;
        h -= p * ((double)d - log_s);
    }
    double logprob = (double)(any_at(row, CHOSEN, dtype) - m) - log_s;
    double margin = (1.0 - exp((double)m2 - m)) / s;
    sink = logprob + margin;
    return h;
}

double bench_threepass_vec(const void *row, size_t n, int bf16, int32_t chosen);

static double op_threepass_vec(const void *row, size_t n, tt_dtype dtype, int path)
{
    (void)path;
    return bench_threepass_vec(row, n, dtype == TT_DTYPE_BF16, CHOSEN);
}

static double op_ours(const void *row, size_t n, tt_dtype dtype, int path)
{
    tt_token_stats s;

    if (tt__token_stats_compute_path(path, row, n, 1, dtype, CHOSEN, TOPK, &s) != 0) {
        fprintf(stderr, "confidence: compute failed\n");
        exit(1);
    }
    return s.entropy;
}

/* --- timing -------------------------------------------------------------------------------- */

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double time_one(op_fn op, const void *row, const pool *p, int path)
{
    double t0 = now_us();

    sink = op(row, p->n, p->dtype, path);
    return now_us() - t0;
}

static double time_hot(op_fn op, const pool *p, int path)
{
    double t[HOT_REPS];

    for (int i = 0; i < 3; i++) {
        time_one(op, p->mem, p, path);
    }
    for (int i = 0; i < HOT_REPS; i++) {
        t[i] = time_one(op, p->mem, p, path);
    }
    return median(t, HOT_REPS);
}

/* One untimed pass first, so that every row was last touched a whole pool (4 x LLC) ago. */
static double time_cold(op_fn op, const pool *p, int path)
{
    double *t = malloc(p->nrows * sizeof *t), med;

    for (size_t r = 0; r < p->nrows; r++) {
        sink = op(p->mem + p->order[r] * p->row_bytes, p->n, p->dtype, path);
    }
    for (size_t r = 0; r < p->nrows; r++) {
        t[r] = time_one(op, p->mem + p->order[r] * p->row_bytes, p, path);
    }
    med = median(t, p->nrows);
    free(t);
    return med;
}

/* --- numpy --------------------------------------------------------------------------------- */

typedef struct numpy_fig {
    double hot, cold; /* 0 when not measured */
} numpy_fig;

static numpy_fig numpy_figs[3][2];

/* One python process per vocabulary: in one long process glibc's malloc ends up mmapping the
 * 1 MB temporaries of every call after the smaller sizes ran, which tripled numpy's 256k
 * figure; a fresh process gives numpy its better case. */
static void numpy_run(void)
{
    const char *py = getenv("TT_BENCH_PYTHON"), *src = getenv("TT_SRCDIR");
    char cmd[1024], line[512], dt[16];

    py = py ? py : "/usr/bin/python3";
    src = src ? src : ".";
    if (strcmp(py, "none") == 0) {
        return;
    }
    for (size_t v = 0; v < 3; v++) {
        snprintf(cmd, sizeof cmd, "%s %s/bench/confidence_numpy.py %zu", py, src, vocabs[v]);
        FILE *f = popen(cmd, "r");
        if (!f) {
            continue;
        }
        while (fgets(line, sizeof line, f)) {
            size_t vocab;
            double hot, cold;
            if (sscanf(line,
                       "{\"vocab\": %zu, \"dtype\": \"%15[a-z0-9]\", \"hot_us\": %lf, "
                       "\"cold_us\": %lf}",
                       &vocab, dt, &hot, &cold) == 4 &&
                vocab == vocabs[v]) {
                numpy_figs[v][strcmp(dt, "bf16") == 0] = (numpy_fig){hot, cold};
            }
        }
        if (pclose(f) != 0) {
            fprintf(stderr, "confidence: '%s' failed; numpy figures missing\n", cmd);
        }
    }
}

/* --- output -------------------------------------------------------------------------------- */

static void emit(const char *metric, double value, const char *baseline, double base,
                 const char *note)
{
    printf("{\"bench\":\"confidence\",\"metric\":\"%s\",\"value\":%.2f,\"unit\":\"us\"", metric,
           value);
    if (baseline && base > 0) {
        printf(",\"baseline\":\"%s\",\"ratio\":%.3f", baseline, value / base);
    } else {
        printf(",\"baseline\":null,\"ratio\":null");
    }
    printf(",\"note\":\"%s\"}\n", note);
    fflush(stdout);
}

typedef struct figs {
    double floor[2], three[2], three_vec[2], ours[TT__CONF_NPATHS][2]; /* [hot, cold] */
} figs;

static const char *const temp_names[2] = {"hot", "cold"};

static void emit_figs(size_t v, int bf16, const figs *f)
{
    const char *dt = bf16 ? "bf16" : "f32";
    const numpy_fig *np = &numpy_figs[v][bf16];
    double npv[2] = {np->hot, np->cold};
    char m[96], b[96];
    int best = -1, bestvec = -1;

    for (int p = 0; p < TT__CONF_NPATHS; p++) {
        best = f->ours[p][0] > 0 ? p : best;
        bestvec = f->ours[p][0] > 0 && p > 0 ? p : bestvec;
    }
    for (int t = 0; t < 2; t++) {
        snprintf(m, sizeof m, "%s_%s_floor_%s", vocab_names[v], dt, temp_names[t]);
        emit(m, f->floor[t], NULL, 0, "plain vector sum over the row (memory-read floor)");
        snprintf(m, sizeof m, "%s_%s_threepass_%s", vocab_names[v], dt, temp_names[t]);
        emit(m, f->three[t], NULL, 0, "max+top2; sum expf; entropy pass with expf (libm, -O2)");
        snprintf(m, sizeof m, "%s_%s_threepass_vec_%s", vocab_names[v], dt, temp_names[t]);
        emit(m, f->three_vec[t], NULL, 0, "the same, -O3 -ffast-math: expf from libmvec");
        snprintf(m, sizeof m, "%s_%s_numpy_%s", vocab_names[v], dt, temp_names[t]);
        emit(m, npv[t], NULL, 0, "lean numpy: max, exp, logsumexp, e.d (fresh python)");
    }
    for (int p = 0; p < TT__CONF_NPATHS; p++) {
        for (int t = 0; f->ours[p][0] > 0 && t < 2; t++) {
            snprintf(m, sizeof m, "%s_%s_%s_%s", vocab_names[v], dt, tt__conf_path_name(p),
                     temp_names[t]);
            snprintf(b, sizeof b, "floor_%s", temp_names[t]);
            emit(m, f->ours[p][t], b, f->floor[t],
                 "tt_token_stats_compute (k=5) vs the memory-read floor");
        }
    }
    for (int t = 0; best >= 0 && t < 2; t++) {
        snprintf(m, sizeof m, "%s_%s_%s_%s_vs_numpy", vocab_names[v], dt, tt__conf_path_name(best),
                 temp_names[t]);
        snprintf(b, sizeof b, "numpy_%s", temp_names[t]);
        emit(m, f->ours[best][t], b, npv[t], "best path vs lean numpy (goal ratio <= 0.2)");
        snprintf(m, sizeof m, "%s_%s_%s_%s_vs_threepass", vocab_names[v], dt,
                 tt__conf_path_name(best), temp_names[t]);
        snprintf(b, sizeof b, "threepass_%s", temp_names[t]);
        emit(m, f->ours[best][t], b, f->three[t], "best path vs libm 3-pass (goal <= 0.25)");
        snprintf(m, sizeof m, "%s_%s_%s_%s_vs_threepass_vec", vocab_names[v], dt,
                 tt__conf_path_name(best), temp_names[t]);
        snprintf(b, sizeof b, "threepass_vec_%s", temp_names[t]);
        emit(m, f->ours[best][t], b, f->three_vec[t], "best path vs libmvec 3-pass (goal <= 0.25)");
        if (bestvec > 0) {
            snprintf(m, sizeof m, "%s_%s_portable_%s_vs_%s", vocab_names[v], dt, temp_names[t],
                     tt__conf_path_name(bestvec));
            snprintf(b, sizeof b, "%s_%s", tt__conf_path_name(bestvec), temp_names[t]);
            emit(m, f->ours[0][t], b, f->ours[bestvec][t],
                 "portable C path vs the best vector path (goal <= 2)");
        }
        if (f->ours[TT__CONF_AVX2][t] > 0 && f->ours[TT__CONF_AVX512][t] > 0) {
            snprintf(m, sizeof m, "%s_%s_avx2_%s_vs_avx512", vocab_names[v], dt, temp_names[t]);
            snprintf(b, sizeof b, "avx512_%s", temp_names[t]);
            emit(m, f->ours[TT__CONF_AVX2][t], b, f->ours[TT__CONF_AVX512][t],
                 "the fallback without AVX-512 (AVX2) vs AVX-512 (goal <= 2)");
        }
    }
}

/* The figures are only worth comparing if everyone computes the same entropy. */
static void check_agree(const pool *p, int path)
{
    double ours = op_ours(p->mem, p->n, p->dtype, path);
    double ref = op_threepass(p->mem, p->n, p->dtype, 0);
    double vec = op_threepass_vec(p->mem, p->n, p->dtype, 0);

    if (fabs(ours - ref) > 1e-4 * ref || fabs(vec - ref) > 1e-3 * ref) {
        fprintf(stderr, "confidence: entropy %s %.7g, 3-pass %.7g, libmvec 3-pass %.7g\n",
                tt__conf_path_name(path), ours, ref, vec);
    }
}

static void bench_one(size_t v, int bf16)
{
    pool p;
    figs f = {0};

    pool_init(&p, vocabs[v], bf16 ? TT_DTYPE_BF16 : TT_DTYPE_F32);
    f.floor[0] = time_hot(op_floor, &p, 0);
    f.floor[1] = time_cold(op_floor, &p, 0);
    f.three[0] = time_hot(op_threepass, &p, 0);
    f.three[1] = time_cold(op_threepass, &p, 0);
    f.three_vec[0] = time_hot(op_threepass_vec, &p, 0);
    f.three_vec[1] = time_cold(op_threepass_vec, &p, 0);
    for (int path = 0; path < TT__CONF_NPATHS; path++) {
        if (!tt__conf_path_supported(path)) {
            continue;
        }
        check_agree(&p, path);
        f.ours[path][0] = time_hot(op_ours, &p, path);
        f.ours[path][1] = time_cold(op_ours, &p, path);
    }
    emit_figs(v, bf16, &f);
    pool_fini(&p);
}

int main(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_avx512 = __builtin_cpu_supports("avx512f");
#endif
    numpy_run();
    for (size_t v = 0; v < 3; v++) {
        bench_one(v, 0);
        bench_one(v, 1);
    }
    return 0;
}

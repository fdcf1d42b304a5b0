/*
 * detect_cost.c - what the change detectors cost per sample, and how well they detect.
 *
 * Cost: each detector (defaults, called through its ops table as the alerting layer will)
 * is fed a Gaussian stream from a 16 K-sample buffer that stays in cache; the baseline, in the
 * same run, is a loop that only reads each sample and adds it to a sum. Seven runs each, the
 * median reported, as ns per sample and as a ratio to the baseline. Goals (performance-anchors
 * goal 15): <= 20 ns for CUSUM and Page-Hinkley, <= 200 ns amortised for ADWIN.
 *
 * Quality: Gaussian streams N(0, sigma^2), sigma = 1 and 0.5, whose mean rises by 0.5, 1, 2 or
 * 3 sigma at t = 1000, 1000 runs of 2000 samples with a fresh detector each; a detection counts
 * when it falls in [1000, 1999] (delta_max = 1000). Reported with river's definitions
 * (river/drift/evaluate.py, after CD-MOA): MTD, the mean delay of the first alarm after the
 * change; MDR, the share of runs with no alarm in the window; MTFA, the mean gap between
 * consecutive false alarms on a 2 * 10^6-sample stationary stream; MTR = MTFA / MTD * (1 - MDR).
 * Every detector sees the same random numbers (the sigma = 0.5 stream is the sigma = 1 stream
 * halved), so differences between rows come from the detectors, not from the draws.
 *
 *   detect_cost [--quick]     JSON lines on stdout, a Markdown table of the quality on stderr
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/alerting/detect.h"
#include "common/rng.h"

#define COST_BUF 16384
#define COST_RUNS 7
#define CHANGE_AT 1000
#define RUN_LEN 2000

static int quick;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* The defaults of `ops` overridden by `spec`; the benchmark stops on a bad spec. */
static void parse_params(const struct detect_ops *ops, const char *spec, union detect_params *p)
{
    ops->defaults(p);
    if (detect_parse(ops, p, spec) != 0) {
        fprintf(stderr, "detect_cost: bad parameters for %s: %s\n", ops->name, spec);
        exit(1);
    }
}

/* A detector state in storage of the size and alignment the interface asks for. */
static void *make_state(const struct detect_ops *ops, const union detect_params *p)
{
    size_t align = sizeof(max_align_t);
    void *state = aligned_alloc(align, (ops->size(p) + align - 1) / align * align);
    if (!state || ops->init(state, p) != 0) {
        fprintf(stderr, "detect_cost: cannot make %s\n", ops->name);
        exit(1);
    }
    return state;
}

/* --- cost ------------------------------------------------------------------------------- */

static volatile double sink;

static double time_sum(const double *buf, long samples)
{
    double t0 = now_ns(), sum = 0.0;
    for (long i = 0; i < samples; i++) {
        sum += buf[i & (COST_BUF - 1)];
    }
    double dt = now_ns() - t0;
    sink = sum;
    return dt / (double)samples;
}

static double time_detector(const struct detect_ops *ops, const char *spec, const double *buf,
                            long samples, uint64_t *width)
{
    union detect_params p;
    parse_params(ops, spec, &p);
    void *state = make_state(ops, &p);
    long fired = 0;
    double t0 = now_ns();
    for (long i = 0; i < samples; i++) {
        fired += ops->update(state, buf[i & (COST_BUF - 1)]);
    }
    double dt = now_ns() - t0;
    struct detect_reading rd;
    ops->read(state, &rd);
    *width = rd.n;
    sink = (double)fired;
    free(state);
    return dt / (double)samples;
}

static void emit_cost(const char *metric, double value, double base, const char *note)
{
    printf("{\"bench\":\"detect\",\"metric\":\"%s\",\"value\":%.3f,\"unit\":\"ns\","
           "\"baseline\":\"sum loop\",\"ratio\":%.2f,\"note\":\"%s\"}\n",
           metric, value, value / base, note);
}

static void bench_cost(void)
{
    static double buf[COST_BUF];
    tt__rng r;
    tt__rng_seed(&r, 1);
    for (int i = 0; i < COST_BUF; i++) {
        buf[i] = tt__rng_gauss(&r);
    }
    const struct detect_ops *ops[] = {&detect_cusum, &detect_ph, &detect_adwin};
    const char *goal[] = {"goal <= 20 ns", "goal <= 20 ns", "goal <= 200 ns amortised"};
    long samples = quick ? 1L << 20 : 1L << 23;
    double base[COST_RUNS], t[4][COST_RUNS];
    uint64_t width = 0, width1 = 0;
    for (int run = 0; run < COST_RUNS; run++) {
        base[run] = time_sum(buf, samples);
        for (int k = 0; k < 3; k++) {
            t[k][run] = time_detector(ops[k], "", buf, samples, &width);
        }
        t[3][run] = time_detector(&detect_adwin, "clock=1", buf, samples / 8, &width1);
    }
    double b = median(base, COST_RUNS);
    printf("{\"bench\":\"detect\",\"metric\":\"sum_loop_ns\",\"value\":%.3f,\"unit\":\"ns\","
           "\"baseline\":null,\"ratio\":null,\"note\":\"read and add one sample\"}\n",
           b);
    for (int k = 0; k < 3; k++) {
        char metric[64], note[128];
        snprintf(metric, sizeof metric, "%s_update_ns", ops[k]->name);
        if (k == 2) {
            snprintf(note, sizeof note, "%s; defaults, window of %llu samples at the end", goal[k],
                     (unsigned long long)width);
        } else {
            snprintf(note, sizeof note, "%s; defaults, called through the ops table", goal[k]);
        }
        emit_cost(metric, median(t[k], COST_RUNS), b, note);
    }
    char note[128];
    snprintf(note, sizeof note, "clock=1: one full test per sample, window of %llu at the end",
             (unsigned long long)width1);
    emit_cost("adwin_update_clock1_ns", median(t[3], COST_RUNS), b, note);
}

/* --- quality ---------------------------------------------------------------------------- */

/* One row of the quality table: a detector and its parameters, which may depend on sigma. */
struct config {
    const char *label;
    const struct detect_ops *ops;
    const char *spec; /* "<number>S" means number * sigma, see config_params() */
};

static const struct config configs[] = {
    {"cusum_known", &detect_cusum, "mean=0 sigma=S"},
    {"cusum_warmup", &detect_cusum, ""},
    {"cusum_warmup_h10", &detect_cusum, "h=10"},
    {"ph_river", &detect_ph, ""},
    {"ph_scaled", &detect_ph, "delta=0.01S threshold=100S"},
    {"ph_gauss", &detect_ph, "alpha=1 delta=0.25S threshold=25S"},
    {"adwin", &detect_adwin, ""},
};
#define NCONFIGS (sizeof configs / sizeof configs[0])

/* The parameters of a row for one sigma: "<number>S" (or a bare "S") in the spec stands for
 * number * sigma. */
static void config_params(const struct config *c, double sigma, union detect_params *p)
{
    char out[256];
    size_t len = sizeof out;
    size_t o = 0;
    for (const char *s = c->spec; *s && o + 32 < len;) {
        char *end;
        double v = strtod(s, &end);
        if (end != s && *end == 'S') {
            o += (size_t)snprintf(out + o, len - o, "%.17g", v * sigma);
            s = end + 1;
        } else if (*s == 'S') {
            o += (size_t)snprintf(out + o, len - o, "%.17g", sigma);
            s++;
        } else {
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
    parse_params(c->ops, out, p);
}

struct quality {
    double mtd;  /* mean delay of the first alarm in the window, over the runs with one */
    double mdr;  /* share of runs with no alarm in the window */
    double mtfa; /* mean gap between false alarms on the stationary stream */
    long false_alarms;
};

/* First alarm index at or after the change in one run, or -1. */
static int run_once(const struct detect_ops *ops, void *state, const double *g, double sigma,
                    double shift)
{
    for (int i = 0; i < RUN_LEN; i++) {
        double x = sigma * g[i] + (i >= CHANGE_AT ? shift * sigma : 0.0);
        if (ops->update(state, x) == 1 && i >= CHANGE_AT) {
            return i;
        }
    }
    return -1;
}

static void detection(const struct config *c, double sigma, double shift, int runs,
                      struct quality *q)
{
    union detect_params p;
    config_params(c, sigma, &p);
    void *state = make_state(c->ops, &p);
    static double g[RUN_LEN];
    double delay = 0.0;
    int hits = 0;
    for (int run = 0; run < runs; run++) {
        tt__rng r;
        tt__rng_seed(&r, 1000 + (uint64_t)run);
        for (int i = 0; i < RUN_LEN; i++) {
            g[i] = tt__rng_gauss(&r);
        }
        c->ops->init(state, &p);
        int at = run_once(c->ops, state, g, sigma, shift);
        if (at >= 0) {
            delay += at - CHANGE_AT;
            hits++;
        }
    }
    q->mtd = hits ? delay / hits : NAN;
    q->mdr = 1.0 - (double)hits / runs;
    free(state);
}

/* river's mean time between false alarms: the mean gap between consecutive alarms on a stream
 * without change; with fewer than two alarms it is undefined and the stream length is
 * reported as a lower bound. */
static void false_alarms(const struct config *c, double sigma, long len, struct quality *q)
{
    union detect_params p;
    config_params(c, sigma, &p);
    void *state = make_state(c->ops, &p);
    tt__rng r;
    tt__rng_seed(&r, 77);
    long first = -1, last = -1, count = 0;
    for (long i = 0; i < len; i++) {
        if (c->ops->update(state, sigma * tt__rng_gauss(&r)) == 1) {
            first = first < 0 ? i : first;
            last = i;
            count++;
        }
    }
    q->false_alarms = count;
    q->mtfa = count >= 2 ? (double)(last - first) / (double)(count - 1) : (double)len;
    free(state);
}

static void emit_quality(const struct config *c, double sigma, double shift,
                         const struct quality *q)
{
    double mtr = q->mtfa / q->mtd * (1.0 - q->mdr);
    const char *bound = q->false_alarms < 2 ? ">=" : "";
    printf("{\"bench\":\"detect-quality\",\"metric\":\"%s_sigma%g_shift%g_mtd\",\"value\":%.2f,"
           "\"unit\":\"samples\",\"baseline\":null,\"ratio\":null,\"mdr\":%.4f,\"mtfa\":%.1f,"
           "\"mtr\":%.2f,\"note\":\"MDR %.1f %%, MTFA %s%.0f, MTR %s%.1f\"}\n",
           c->label, sigma, shift, q->mtd, q->mdr, q->mtfa, mtr, 100.0 * q->mdr, bound, q->mtfa,
           bound, mtr);
    fprintf(stderr, "| %s | %g | %g | %.1f | %.1f %% | %s%.0f | %s%.1f |\n", c->label, sigma, shift,
            q->mtd, 100.0 * q->mdr, bound, q->mtfa, bound, mtr);
}

static void bench_quality(void)
{
    const double sigmas[] = {1.0, 0.5};
    const double shifts[] = {0.5, 1.0, 2.0, 3.0};
    int runs = quick ? 100 : 1000;
    long len = quick ? 200000 : 2000000;
    fprintf(stderr, "| detector | sigma | shift (sigma) | MTD | MDR | MTFA | MTR |\n");
    fprintf(stderr, "|---|---|---|---|---|---|---|\n");
    for (size_t k = 0; k < NCONFIGS; k++) {
        for (int s = 0; s < 2; s++) {
            struct quality q;
            false_alarms(&configs[k], sigmas[s], len, &q);
            for (int j = 0; j < 4; j++) {
                detection(&configs[k], sigmas[s], shifts[j], runs, &q);
                emit_quality(&configs[k], sigmas[s], shifts[j], &q);
            }
        }
    }
}

int main(int argc, char **argv)
{
    quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    bench_cost();
    bench_quality();
    return 0;
}

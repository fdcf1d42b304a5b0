/*
 * emit_harness.h - the measurement method shared by every contender of the emit benchmark
 * (bench/emit.c for telltale, bench/emit_spdlog.cpp, bench/emit_lttng.c), so that each one is
 * timed in exactly the same way. C and C++.
 *
 * The method (the one of research/performance-anchors.md, section 1):
 * - each producer thread makes bursts of burst_len calls, then sleeps pause_us
 *   (clock_nanosleep), for bursts bursts;
 * - the bursts take turns in three kinds, burst % 3:
 *   0: every call is timed on its own: lfence; rdtsc; lfence | call | rdtscp; lfence. The
 *      percentiles (nearest rank, over all these calls of all threads) are the per-call
 *      figures. The cost of the bracket around nothing is measured by the "empty" contender
 *      of bench/emit.c, in the same way;
 *   1: the first call is made untimed, then one bracket goes around the other burst_len - 1
 *      calls, divided by their number: the cost of a call in steady state, without the
 *      bracket's own cost per call (burst_p50_ns);
 *   2: one bracket goes around all burst_len calls, the first one after the pause included,
 *      divided by burst_len: the method of Quill's own hot-path benchmark, whose percentiles
 *      over the bursts (avg_p50_ns, avg_p99_ns, avg_p999_ns) are the figures that benchmark
 *      reports;
 * - the arguments (two integers and a double) come from a xorshift generator with a fixed seed
 *   and are drawn for the whole burst before it starts;
 * - a warm-up of warmup calls per thread (bursts of burst_len with 100 us pauses) is made first
 *   and not timed, so first-touch page faults of a queue or ring are not in the figures;
 * - ticks become ns with the TSC rate measured against CLOCK_MONOTONIC over the whole run.
 *
 * On a machine whose TSC advances in coarse steps (this project's AMD Zen 4 VM: 26 ticks,
 * 10 ns) the per-call percentiles are multiples of that step; a burst timed as a whole is not
 * (19 calls share one bracket, and their phase against the step is uniform), so costs below
 * the step are read from burst_p50_ns, the median over those bursts of the cost per call.
 *
 * A contender file defines its call as a function or macro CALL(ctx, a, b, x) and instantiates
 * a thread body with EH_DEFINE_LOOP(name, CALL); eh_run() then runs the threads and prints one
 * JSON line.
 */
#ifndef TT_BENCH_EMIT_HARNESS_H
#define TT_BENCH_EMIT_HARNESS_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

typedef struct eh_opts {
    const char *contender; /* the name printed in the result line */
    int threads;
    int bursts;    /* per thread, half timed per call and half as a whole */
    int burst_len; /* calls per burst */
    int pause_us;  /* sleep after each burst */
    int warmup;    /* untimed calls per thread before the measurement */
    int cpu;       /* pin the producer threads to this CPU, or -1 (the default: no pinning) */
    uint64_t seed;
} eh_opts;

typedef struct eh_thread {
    const eh_opts *o;
    void *ctx; /* the contender's state (client, logger) */
    int index;
    uint32_t *lat; /* ticks per call, in the per-call bursts */
    size_t n;
    uint32_t *burst; /* ticks of calls 2..len, in the steady bursts */
    size_t nb;
    uint32_t *avg; /* ticks of all len calls, in the bursts timed as Quill's benchmark does */
    size_t na;
    int64_t *arg_a, *arg_b;
    double *arg_x;
    pthread_barrier_t *start;
} eh_thread;

static inline uint64_t eh_tick_begin(void)
{
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
}

static inline uint64_t eh_tick_end(void)
{
    unsigned aux;
    uint64_t t = __rdtscp(&aux);
    _mm_lfence();
    return t;
}

static inline uint32_t eh_clamp32(uint64_t d)
{
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static inline uint64_t eh_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void eh_sleep_us(int us)
{
    struct timespec ts;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (long)(us % 1000000) * 1000L;
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

static inline uint64_t eh_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Pins the calling thread to one CPU (cpu >= 0), for experiments on thread placement. */
static inline void eh_pin(int cpu)
{
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
            fprintf(stderr, "cannot pin to CPU %d\n", cpu);
        }
    }
}

/* Draws the arguments of the next burst: two integers of agent-like magnitude and a double. */
static inline void eh_draw(eh_thread *t, uint64_t *rng)
{
    for (int k = 0; k < t->o->burst_len; k++) {
        uint64_t r = eh_rand(rng);
        t->arg_a[k] = (int64_t)(r & 0xffff);
        t->arg_b[k] = (int64_t)((r >> 16) & 0xffffff);
        t->arg_x[k] = (double)(r >> 40) * 0x1p-24;
    }
}

/* Defines static void *name(void *eh_thread_ptr), the body of one producer thread. */
#define EH_DEFINE_LOOP(name, CALL)                                                                 \
    static void *name(void *arg)                                                                   \
    {                                                                                              \
        eh_thread *t = (eh_thread *)arg;                                                           \
        const eh_opts *o = t->o;                                                                   \
        const int len = o->burst_len;                                                              \
        const int64_t *A = t->arg_a, *B = t->arg_b;                                                \
        const double *X = t->arg_x;                                                                \
        uint64_t rng = o->seed + 0x9e3779b97f4a7c15ull * (uint64_t)(t->index + 1);                 \
        eh_pin(o->cpu);                                                                            \
        for (int w = 0; w < o->warmup; w += len) {                                                 \
            eh_draw(t, &rng);                                                                      \
            for (int k = 0; k < len; k++) {                                                        \
                CALL(t->ctx, A[k], B[k], X[k]);                                                    \
            }                                                                                      \
            eh_sleep_us(100);                                                                      \
        }                                                                                          \
        pthread_barrier_wait(t->start);                                                            \
        for (int burst = 0; burst < o->bursts; burst++) {                                          \
            eh_draw(t, &rng);                                                                      \
            if (burst % 3 == 0) {                                                                  \
                for (int k = 0; k < len; k++) {                                                    \
                    uint64_t s_ = eh_tick_begin();                                                 \
                    CALL(t->ctx, A[k], B[k], X[k]);                                                \
                    uint64_t e_ = eh_tick_end();                                                   \
                    t->lat[t->n++] = eh_clamp32(e_ - s_);                                          \
                }                                                                                  \
            } else {                                                                               \
                /* 1: steady, the first call untimed; 2: whole, as Quill times a burst */          \
                const int k0 = burst % 3 == 1;                                                     \
                if (k0) {                                                                          \
                    CALL(t->ctx, A[0], B[0], X[0]);                                                \
                }                                                                                  \
                uint64_t s_ = eh_tick_begin();                                                     \
                for (int k = k0; k < len; k++) {                                                   \
                    CALL(t->ctx, A[k], B[k], X[k]);                                                \
                }                                                                                  \
                uint64_t e_ = eh_tick_end();                                                       \
                if (k0) {                                                                          \
                    t->burst[t->nb++] = eh_clamp32(e_ - s_);                                       \
                } else {                                                                           \
                    t->avg[t->na++] = eh_clamp32(e_ - s_);                                         \
                }                                                                                  \
            }                                                                                      \
            eh_sleep_us(o->pause_us);                                                              \
        }                                                                                          \
        return NULL;                                                                               \
    }

static int eh_cmp_u32(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return a < b ? -1 : a > b;
}

/* Nearest rank: the smallest value with at least p of the samples at or below it. */
static inline double eh_pct(const uint32_t *v, size_t n, double p)
{
    size_t rank = (size_t)(p * (double)n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return n ? (double)v[rank - 1] : 0.0;
}

static inline int eh_parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo || v > hi) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

static inline void eh_defaults(eh_opts *o)
{
    o->contender = "";
    o->threads = 1;
    o->bursts = 4500;
    o->burst_len = 20;
    o->pause_us = 2000;
    o->warmup = 20000;
    o->cpu = -1;
    o->seed = 20240601;
}

/* Takes one option every contender shares: returns 1 if k was one (and v valid), 0 if k is
 * not a harness option, -1 (after a message) on a bad value. */
static inline int eh_option(eh_opts *o, const char *k, const char *v)
{
    int bad = 0;
    if (strcmp(k, "--threads") == 0) {
        bad = eh_parse_int(v, 1, 64, &o->threads);
    } else if (strcmp(k, "--bursts") == 0) {
        bad = eh_parse_int(v, 3, 10000000, &o->bursts);
    } else if (strcmp(k, "--burst-len") == 0) {
        bad = eh_parse_int(v, 1, 100000, &o->burst_len);
    } else if (strcmp(k, "--pause-us") == 0) {
        bad = eh_parse_int(v, 0, 1000000, &o->pause_us);
    } else if (strcmp(k, "--warmup") == 0) {
        bad = eh_parse_int(v, 0, 100000000, &o->warmup);
    } else if (strcmp(k, "--cpu") == 0) {
        bad = eh_parse_int(v, -1, 4095, &o->cpu);
    } else if (strcmp(k, "--seed") == 0) {
        o->seed = strtoull(v, NULL, 10) | 1;
    } else {
        return 0;
    }
    if (bad) {
        fprintf(stderr, "bad value for %s: %s\n", k, v);
        return -1;
    }
    return 1;
}

#define EH_USAGE                                                                                   \
    "[--threads N] [--bursts N] [--burst-len N] [--pause-us N] [--warmup N] [--cpu N] "            \
    "[--seed N]"

typedef void (*eh_after_fn)(void *ctx, char *extra, size_t n);

/* The step of the TSC in ticks: the greatest common divisor of the differences between two
 * consecutive reads that are each seen in at least 1% of them (a rare odd difference is an
 * adjustment, not the step). 1 on a TSC that counts every cycle; every per-call figure is a
 * multiple of it. */
static inline uint64_t eh_tsc_step(void)
{
    enum { N = 200000, MAXD = 4096 };
    static uint32_t count[MAXD];
    memset(count, 0, sizeof count);
    uint64_t prev = __rdtsc();
    for (int i = 0; i < N; i++) {
        uint64_t now = __rdtsc();
        if (now - prev < MAXD) {
            count[now - prev]++;
        }
        prev = now;
    }
    uint64_t g = 0;
    for (uint64_t d = 1; d < MAXD; d++) {
        if (count[d] >= N / 100) {
            uint64_t a = g, b = d;
            while (b) {
                uint64_t r = a % b;
                a = b;
                b = r;
            }
            g = a;
        }
    }
    return g;
}

/* The summary of one run, in ns. */
typedef struct eh_result {
    size_t samples, bursts;
    double p50, p90, p99, p999, max, mean;
    double first_p50; /* median of the first call of each burst (just after the pause) */
    double burst_p50, burst_mean; /* per-call cost of calls 2..len of the bursts timed whole */
    size_t avg_bursts;
    double avg_p50, avg_p99, avg_p999; /* per-call cost of whole bursts, first call included */
} eh_result;

static inline void eh_summarize(eh_thread *th, int nt, uint32_t *all, uint32_t *first, double npt,
                                eh_result *r)
{
    const int len = th[0].o->burst_len;
    size_t n = 0, nf = 0;
    double sum = 0;
    for (int i = 0; i < nt; i++) {
        for (size_t j = 0; j < th[i].n; j++) {
            uint32_t v = th[i].lat[j];
            sum += v;
            if (j % (size_t)len == 0) {
                first[nf++] = v;
            }
            all[n++] = v;
        }
    }
    qsort(all, n, sizeof *all, eh_cmp_u32);
    qsort(first, nf, sizeof *first, eh_cmp_u32);
    r->samples = n;
    r->p50 = eh_pct(all, n, 0.50) * npt;
    r->p90 = eh_pct(all, n, 0.90) * npt;
    r->p99 = eh_pct(all, n, 0.99) * npt;
    r->p999 = eh_pct(all, n, 0.999) * npt;
    r->max = n ? all[n - 1] * npt : 0;
    r->mean = n ? sum / (double)n * npt : 0;
    r->first_p50 = eh_pct(first, nf, 0.50) * npt;
    /* The whole-burst samples reuse the first array. */
    size_t nb = 0;
    double bsum = 0;
    for (int i = 0; i < nt; i++) {
        for (size_t j = 0; j < th[i].nb; j++) {
            first[nb++] = th[i].burst[j];
            bsum += th[i].burst[j];
        }
    }
    qsort(first, nb, sizeof *first, eh_cmp_u32);
    r->bursts = nb;
    int per = len > 1 ? len - 1 : 1;
    r->burst_p50 = eh_pct(first, nb, 0.50) * npt / per;
    r->burst_mean = nb ? bsum / (double)nb * npt / per : 0;
    /* The bursts timed as Quill's benchmark times them, in the same array. */
    size_t na = 0;
    for (int i = 0; i < nt; i++) {
        for (size_t j = 0; j < th[i].na; j++) {
            first[na++] = th[i].avg[j];
        }
    }
    qsort(first, na, sizeof *first, eh_cmp_u32);
    r->avg_bursts = na;
    r->avg_p50 = eh_pct(first, na, 0.50) * npt / len;
    r->avg_p99 = eh_pct(first, na, 0.99) * npt / len;
    r->avg_p999 = eh_pct(first, na, 0.999) * npt / len;
}

/*
 * Run o->threads producer threads of body with ctx, then print one JSON line:
 * {"contender":..,"threads":..,"samples":..,"p50_ns":..,"p90_ns":..,"p99_ns":..,"p999_ns":..,
 *  "max_ns":..,"mean_ns":..,"first_p50_ns":..,"burst_p50_ns":..,
 *  "burst_mean_ns":..,"avg_bursts":..,"avg_p50_ns":..,"avg_p99_ns":..,"avg_p999_ns":..,
 *  "ns_per_tick":..,"tsc_step_ns":.. <extra>}
 * after, if not NULL, runs once the threads are done and may write JSON fields (starting with
 * a comma) into extra, which is appended verbatim. Returns 0 or -1.
 */
static inline int eh_run(const eh_opts *o, void *(*body)(void *), void *ctx, eh_after_fn after)
{
    char extra[1024] = "";
    int nt = o->threads, len = o->burst_len;
    size_t nbursts = (size_t)(o->bursts + 2) / 3; /* of each kind, at most */
    size_t per = nbursts * (size_t)len;
    eh_thread *th = (eh_thread *)calloc((size_t)nt, sizeof *th);
    pthread_t *tid = (pthread_t *)calloc((size_t)nt, sizeof *tid);
    uint32_t *all = (uint32_t *)calloc(per * (size_t)nt, sizeof *all);
    uint32_t *first = (uint32_t *)calloc(nbursts * (size_t)nt, sizeof *first);
    uint32_t *lat = (uint32_t *)calloc(per * (size_t)nt, sizeof *lat);
    uint32_t *burst = (uint32_t *)calloc(nbursts * (size_t)nt, sizeof *burst);
    uint32_t *avg = (uint32_t *)calloc(nbursts * (size_t)nt, sizeof *avg);
    int64_t *args = (int64_t *)calloc((size_t)nt * (size_t)len * 3, sizeof *args);
    if (!th || !tid || !all || !first || !lat || !burst || !avg || !args) {
        fprintf(stderr, "out of memory\n");
        return -1;
    }
    /* Touch the sample arrays now, so that the measurement takes no page fault of its own. */
    memset(lat, 1, per * (size_t)nt * sizeof *lat);
    memset(burst, 1, nbursts * (size_t)nt * sizeof *burst);
    memset(avg, 1, nbursts * (size_t)nt * sizeof *avg);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)nt + 1);
    for (int i = 0; i < nt; i++) {
        eh_thread *t = &th[i];
        t->o = o;
        t->ctx = ctx;
        t->index = i;
        t->lat = lat + per * (size_t)i;
        t->burst = burst + nbursts * (size_t)i;
        t->avg = avg + nbursts * (size_t)i;
        t->arg_a = args + (size_t)len * 3 * (size_t)i;
        t->arg_b = t->arg_a + len;
        t->arg_x = (double *)(void *)(t->arg_b + len);
        t->start = &start;
        if (pthread_create(&tid[i], NULL, body, t) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return -1;
        }
    }
    pthread_barrier_wait(&start);
    uint64_t tick0 = __rdtsc(), mono0 = eh_mono_ns();
    for (int i = 0; i < nt; i++) {
        pthread_join(tid[i], NULL);
    }
    uint64_t tick1 = __rdtsc(), mono1 = eh_mono_ns();
    uint64_t step = eh_tsc_step();
    if (after) {
        after(ctx, extra, sizeof extra);
    }
    double npt = (double)(mono1 - mono0) / (double)(tick1 - tick0);
    eh_result r;
    eh_summarize(th, nt, all, first, npt, &r);
    printf("{\"contender\":\"%s\",\"threads\":%d,\"samples\":%zu,\"bursts_whole\":%zu,"
           "\"burst_len\":%d,\"pause_us\":%d,\"p50_ns\":%.2f,\"p90_ns\":%.2f,\"p99_ns\":%.2f,"
           "\"p999_ns\":%.2f,\"max_ns\":%.1f,\"mean_ns\":%.3f,"
           "\"first_p50_ns\":%.2f,\"burst_p50_ns\":%.3f,\"burst_mean_ns\":%.3f,"
           "\"avg_bursts\":%zu,\"avg_p50_ns\":%.3f,\"avg_p99_ns\":%.3f,\"avg_p999_ns\":%.3f,"
           "\"ns_per_tick\":%.6f,\"tsc_step_ns\":%.2f%s}\n",
           o->contender, nt, r.samples, r.bursts, len, o->pause_us, r.p50, r.p90, r.p99, r.p999,
           r.max, r.mean, r.first_p50, r.burst_p50, r.burst_mean, r.avg_bursts, r.avg_p50,
           r.avg_p99, r.avg_p999, npt, (double)step * npt, extra);
    fflush(stdout);
    pthread_barrier_destroy(&start);
    free(args);
    free(avg);
    free(burst);
    free(lat);
    free(first);
    free(all);
    free(tid);
    free(th);
    return 0;
}

#endif

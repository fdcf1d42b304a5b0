/*
 * client_faults.c - the driver of tests/integration/test_clientfault.c: an agent linked against
 * libtelltale.a with the library's calls to the allocator, to getaddrinfo, to clock_gettime
 * and to connect wrapped (-Wl,--wrap=..., mk/clientfault.mk), so that the test can make them
 * fail, hang or lie without any hook in the library. Only the library's calls are wrapped
 * (the wrap applies to references from the objects linked here), and this file calls the
 * allocator only outside the armed phases.
 *
 *   client_faults oom ENDPOINT single|from K OUT   S5: the Nth allocation fails (single), or
 *                                                   the Nth and every later one until disarmed
 *                                                   (from), for N = 1..K, then 40 values of N
 *                                                   spread over the rest of a client's life
 *   client_faults dns PORT HANG_MS OUT              S7: a host name whose resolution hangs
 *   client_faults clock ENDPOINT DEAD_ENDPOINT OUT  S14: wall-clock steps while batching and
 *                                                   while reconnects are pending
 *   client_faults exit HOW DELAY_US ENDPOINT SPOOL OUT  S10: the process ends abruptly from
 *                                                   another thread mid-emit
 *
 * Each client run writes one line to OUT:
 *   run TAG INSTANCE emitted inherited acked possibly buffered dropped_total oom shutdown
 *       buffer_full EXTRA...
 * which the test reads back to check the store (tt_test_check_store) and conservation. A
 * broken expectation that only the driver can see prints "FAIL: ..." and exits 1.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "telltale.h"

/* --- the wrapped calls ---------------------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
int __real_clock_gettime(clockid_t clk, struct timespec *ts);
int __real_connect(int fd, const struct sockaddr *sa, socklen_t len);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_connect(int fd, const struct sockaddr *sa, socklen_t len);

/* ARM_THREAD: like ARM_SINGLE, counting only the allocations of threads that set
 * alloc_target (an emitting thread's own: its ring), so the fault lands on the event path
 * whatever the other threads allocate meanwhile. */
enum { ARM_OFF = 0, ARM_SINGLE = 1, ARM_FROM = 2, ARM_THREAD = 3 };
static _Thread_local int alloc_target;
static _Atomic int arm_mode;
static _Atomic long arm_n;      /* the allocation (from 1) that fails */
static _Atomic long alloc_seen; /* library allocations since arming */
static _Atomic long alloc_failed;

static int alloc_fails(void)
{
    if (atomic_load(&arm_mode) == ARM_OFF) {
        atomic_fetch_add(&alloc_seen, 1);
        return 0;
    }
    int mode = atomic_load(&arm_mode);
    if (mode == ARM_THREAD && !alloc_target) {
        return 0;
    }
    long k = atomic_fetch_add(&alloc_seen, 1) + 1;
    long n = atomic_load(&arm_n);
    int fail = mode == ARM_FROM ? k >= n : k == n;
    if (fail) {
        atomic_fetch_add(&alloc_failed, 1);
    }
    return fail;
}

void *__wrap_malloc(size_t n)
{
    return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
    return alloc_fails() ? NULL : __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
    return alloc_fails() ? NULL : __real_realloc(p, n);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    return alloc_fails() ? NULL : __real_aligned_alloc(a, n);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (alloc_fails()) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap(addr, len, prot, flags, fd, off);
}

static void arm(int mode, long n)
{
    atomic_store(&alloc_seen, 0);
    atomic_store(&arm_n, n);
    atomic_store(&arm_mode, mode);
}

static void disarm(void)
{
    atomic_store(&arm_mode, ARM_OFF);
}

static double now_ms(void)
{
    struct timespec ts;
    __real_clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Names of the DNS scenario: "hang" never answers before hang_until_ms, "slow" answers
 * 127.0.0.1 at slow_until_ms. */
#define HANG_HOST "hang.telltale.test"
#define SLOW_HOST "slow.telltale.test"
static _Atomic double hang_until_ms, slow_until_ms;
static _Atomic long hang_calls, slow_calls;

int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res)
{
    int numeric = hints && (hints->ai_flags & AI_NUMERICHOST);
    if (!numeric && node && strcmp(node, HANG_HOST) == 0) {
        atomic_fetch_add(&hang_calls, 1);
        while (now_ms() < atomic_load(&hang_until_ms)) {
            usleep(10000);
        }
        return EAI_AGAIN;
    }
    if (!numeric && node && strcmp(node, SLOW_HOST) == 0) {
        atomic_fetch_add(&slow_calls, 1);
        while (now_ms() < atomic_load(&slow_until_ms)) {
            usleep(10000);
        }
        return __real_getaddrinfo("127.0.0.1", service, hints, res);
    }
    return __real_getaddrinfo(node, service, hints, res);
}

/* The wall clock as the library sees it: the real one plus a step, or frozen. */
static _Atomic int64_t wall_step_ns;
static _Atomic int wall_frozen;
static _Atomic int64_t wall_frozen_ns;

int __wrap_clock_gettime(clockid_t clk, struct timespec *ts)
{
    int rc = __real_clock_gettime(clk, ts);
    if (rc != 0 || clk != CLOCK_REALTIME) {
        return rc;
    }
    int64_t ns = (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec + atomic_load(&wall_step_ns);
    if (atomic_load(&wall_frozen)) {
        ns = atomic_load(&wall_frozen_ns);
    }
    ts->tv_sec = (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
    return 0;
}

/* Connection attempts, with their monotonic times. */
#define MAX_CONNECTS 4096
static double connect_ms[MAX_CONNECTS];
static _Atomic int n_connects;

int __wrap_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    int i = atomic_fetch_add(&n_connects, 1);
    if (i < MAX_CONNECTS) {
        connect_ms[i] = now_ms();
    }
    return __real_connect(fd, sa, len);
}

/* --- shared helpers -------------------------------------------------------------------------- */

static FILE *out;

static void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    fflush(stdout);
    exit(1);
}

static void hex16(const uint8_t id[16], char s[33])
{
    for (int i = 0; i < 16; i++) {
        snprintf(s + 2 * i, 3, "%02x", id[i]);
    }
}

static void write_run(const char *tag, const uint8_t id[16], const tt_stats *st, const char *extra)
{
    char h[33];
    hex16(id, h);
    fprintf(out, "run %s %s %llu %llu %llu %llu %llu %llu %llu %llu %llu %s\n", tag, h,
            (unsigned long long)st->emitted, (unsigned long long)st->inherited,
            (unsigned long long)st->acked, (unsigned long long)st->possibly_delivered,
            (unsigned long long)st->buffered, (unsigned long long)st->dropped_total,
            (unsigned long long)st->dropped[TT_DROP_OOM],
            (unsigned long long)st->dropped[TT_DROP_SHUTDOWN],
            (unsigned long long)st->dropped[TT_DROP_BUFFER_FULL], extra);
    fflush(out);
}

static int make_config(tt_config **cfg, const char *endpoint, const char *agent,
                       const char *const *kv)
{
    int rc = tt_config_new(cfg);
    if (rc != 0) {
        return rc;
    }
    if (tt_config_set(*cfg, "endpoint", endpoint) != 0 || tt_config_set(*cfg, "agent", agent)) {
        fail("config endpoint/agent");
    }
    for (; kv && kv[0]; kv += 2) {
        if (tt_config_set(*cfg, kv[0], kv[1]) != 0) {
            fail(tt_config_error(*cfg));
        }
    }
    return 0;
}

/* --- S5: allocation failures ------------------------------------------------------------------ */

#define OOM_EVENTS 600
#define OOM_RECOVERY 200

struct rc_counts {
    _Atomic long ok, nobufs, nomem, other;
};

static void count_rc(struct rc_counts *k, int rc)
{
    if (rc == 0) {
        atomic_fetch_add(&k->ok, 1);
    } else if (rc == TT_ENOBUFS) {
        atomic_fetch_add(&k->nobufs, 1);
    } else if (rc == TT_ENOMEM) {
        atomic_fetch_add(&k->nomem, 1);
    } else {
        atomic_fetch_add(&k->other, 1);
    }
}

struct oom_arg {
    tt_client *c;
    struct rc_counts *k;
    int n;
};

/* Every kind of event call, responses included (they allocate at begin). */
static void *oom_emitter(void *p)
{
    struct oom_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        switch (i % 5) {
        case 0:
            count_rc(a->k, tt_log(a->c, "s", TT_INFO, "an event under allocation faults", NULL, 0));
            break;
        case 1:
            count_rc(a->k, tt_metric(a->c, "s", TT_GAUGE, "m", i, "1", NULL, 0));
            break;
        case 2: {
            tt_step st;
            int rc = tt_step_begin(a->c, &st, NULL, TT_STEP_TOOL, "s", "tool", "q");
            count_rc(a->k, rc);
            if (st.id) {
                count_rc(a->k, tt_step_end(a->c, &st, TT_STATUS_OK, 1, NULL));
            }
            break;
        }
        case 3: {
            tt_response *r = NULL;
            int rc = tt_response_begin(a->c, &r, "s", "model", NULL, 0);
            if (rc != 0 && rc != TT_ENOMEM && rc != TT_ENOBUFS) {
                atomic_fetch_add(&a->k->other, 1);
            }
            if (r) {
                int32_t ids[2] = {1, 2};
                float lps[2] = {-0.1f, -2.5f};
                for (int t = 0; t < 8; t++) {
                    tt_verdict v;
                    if (tt_response_token_logprobs(r, 1, -0.1f, ids, lps, 2, &v, NULL) != 0) {
                        atomic_fetch_add(&a->k->other, 1);
                    }
                }
                tt_response_end(r, NULL);
            }
            break;
        }
        default:
            count_rc(a->k, tt_log(a->c, NULL, TT_WARN, "x", NULL, 0));
            break;
        }
    }
    return NULL;
}

/* An emitter whose allocations are the ones ARM_THREAD counts. */
static void *oom_target_emitter(void *p)
{
    alloc_target = 1;
    return oom_emitter(p);
}

static void emit_threads(tt_client *c, struct rc_counts *k, int threads, int n)
{
    pthread_t t[8];
    struct oom_arg a = {c, k, n};
    int made = 0;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&t[made], NULL,
                           atomic_load(&arm_mode) == ARM_THREAD ? oom_target_emitter : oom_emitter,
                           &a) == 0) {
            made++;
        }
    }
    for (int i = 0; i < made; i++) {
        pthread_join(t[i], NULL);
    }
}

/* One client's life with the allocation faults armed as (mode, n). */
static void oom_run(const char *endpoint, int mode, long n, char *tag)
{
    static const char *const kv[] = {"ring_bytes",  "65536", "max_event_bytes",   "8192",
                                     "batch_bytes", "4096",  "flush_interval_ms", "2",
                                     NULL};
    tt_config *cfg = NULL;
    tt_client *c = NULL;
    int open_failures = 0;
    arm(mode, n);
    int rc;
    while ((rc = make_config(&cfg, endpoint, "oom", kv)) != 0 || (rc = tt_open(&c, cfg)) != 0) {
        if (rc != TT_ENOMEM) {
            fprintf(stderr, "rc %d (%s)\n", rc, tt_strerror(rc));
            fail("tt_config_new or tt_open failed with another error than TT_ENOMEM");
        }
        tt_config_free(cfg);
        cfg = NULL;
        if (++open_failures > 2) {
            fail("tt_open kept failing after the fault");
        }
        if (mode == ARM_FROM) {
            disarm();
        }
    }
    tt_config_free(cfg);
    struct rc_counts k = {0};
    emit_threads(c, &k, 2, OOM_EVENTS);
    oom_emitter(&(struct oom_arg){c, &k, 50}); /* the main thread too */
    if (mode == ARM_FROM) {
        usleep(20000); /* the worker meets the faults too */
    }
    disarm();
    if (atomic_load(&k.other) != 0) {
        fail("an event call returned an error other than ENOBUFS/ENOMEM");
    }
    /* Recovery: once memory comes back, new events (a new thread's ring included) go through
     * and are acknowledged, and nothing more is dropped. */
    if (tt_flush(c, 10000) != 0) {
        fail("flush after the faults timed out");
    }
    tt_stats s1, s2;
    tt_stats_get(c, &s1, sizeof s1);
    struct rc_counts k2 = {0};
    emit_threads(c, &k2, 1, OOM_RECOVERY / 2);
    oom_emitter(&(struct oom_arg){c, &k2, OOM_RECOVERY / 2});
    if (atomic_load(&k2.ok) == 0 || atomic_load(&k2.nomem) || atomic_load(&k2.other)) {
        fail("event calls failed after memory came back");
    }
    if (tt_flush(c, 10000) != 0) {
        fail("flush after recovery timed out");
    }
    tt_stats_get(c, &s2, sizeof s2);
    uint64_t emitted = s2.emitted - s1.emitted;
    if (s2.acked - s1.acked != emitted || s2.dropped_total != s1.dropped_total) {
        fprintf(stderr, "recovery: emitted %llu acked %llu dropped %llu -> %llu\n",
                (unsigned long long)emitted, (unsigned long long)(s2.acked - s1.acked),
                (unsigned long long)s1.dropped_total, (unsigned long long)s2.dropped_total);
        fail("events after recovery were not all acknowledged");
    }
    uint8_t id[16];
    tt_instance_id(c, id);
    tt_stats st;
    tt_close_stats(c, 5000, &st, sizeof st);
    char extra[128];
    snprintf(extra, sizeof extra, "open_failures=%d nomem=%ld failed=%ld", open_failures,
             atomic_load(&k.nomem), atomic_load(&alloc_failed));
    write_run(tag, id, &st, extra);
}

static int run_oom(int argc, char **argv)
{
    if (argc != 6) {
        return 2;
    }
    const char *endpoint = argv[2];
    int mode = strcmp(argv[3], "from") == 0 ? ARM_FROM : ARM_SINGLE;
    long k = atol(argv[4]);
    /* A run without faults counts the allocations of one client's life. */
    char tag[64];
    snprintf(tag, sizeof tag, "count");
    oom_run(endpoint, ARM_OFF, 0, tag);
    long total = atomic_load(&alloc_seen);
    long last = total + 2 < k ? total + 2 : k;
    fprintf(out, "allocations %ld\n", total);
    for (long n = 1; n <= last; n++) {
        atomic_store(&alloc_failed, 0);
        snprintf(tag, sizeof tag, "%s:%ld", argv[3], n);
        oom_run(endpoint, mode, n, tag);
    }
    /* Beyond K, 40 samples spread over the rest of a client's life (frames, responses). */
    for (long i = 1; last < total && i <= 40; i++) {
        long n = last + i * (total - last) / 40;
        atomic_store(&alloc_failed, 0);
        snprintf(tag, sizeof tag, "%s:%ld", argv[3], n);
        oom_run(endpoint, mode, n, tag);
    }
    /* Where those single faults land depends on how the threads interleave: one run where the
     * first allocation of an emitting thread (its ring) fails, an event lost to it for sure. */
    if (mode == ARM_SINGLE) {
        atomic_store(&alloc_failed, 0);
        oom_run(endpoint, ARM_THREAD, 1, (char[]){"ring:1"});
    }
    return 0;
}

/* --- S7: name resolution that hangs ------------------------------------------------------------- */

static int run_dns(int argc, char **argv)
{
    if (argc != 5) {
        return 2;
    }
    const char *port = argv[2];
    double hang = atof(argv[3]);
    char ep[128];
    static const char *const kv[] = {
        "ack_timeout_ms", "300", "backoff_min_ms", "50", "backoff_max_ms", "200", NULL};
    /* A name that hangs: open, emit, flush and close keep their limits. */
    atomic_store(&hang_until_ms, now_ms() + hang);
    snprintf(ep, sizeof ep, "tcp://%s:%s", HANG_HOST, port);
    tt_config *cfg;
    tt_client *c;
    if (make_config(&cfg, ep, "dns", kv) != 0) {
        fail("config");
    }
    double t0 = now_ms();
    if (tt_open(&c, cfg) != 0) {
        fail("tt_open with a hanging name");
    }
    double open_ms = now_ms() - t0;
    tt_config_free(cfg);
    double emit_max = 0;
    for (int i = 0; i < 2000; i++) {
        double a = now_ms();
        if (tt_log(c, "s", TT_INFO, "while the name hangs", NULL, 0) != 0) {
            fail("emit while the name hangs");
        }
        double d = now_ms() - a;
        emit_max = d > emit_max ? d : emit_max;
        if (i % 100 == 0) {
            usleep(20000); /* 0.4 s in all: several connection attempts */
        }
    }
    t0 = now_ms();
    int frc = tt_flush(c, 200);
    double flush_ms = now_ms() - t0;
    uint8_t id[16];
    tt_instance_id(c, id);
    tt_stats st;
    t0 = now_ms();
    int crc = tt_close_stats(c, 300, &st, sizeof st);
    double close_ms = now_ms() - t0;
    char extra[256];
    snprintf(extra, sizeof extra,
             "open_ms=%.1f emit_max_ms=%.3f flush_rc=%d flush_ms=%.1f close_rc=%d close_ms=%.1f "
             "resolver_calls=%ld",
             open_ms, emit_max, frc, flush_ms, crc, close_ms, atomic_load(&hang_calls));
    write_run("hang", id, &st, extra);

    /* A name that answers after 1.5 s, beyond the attempt's timeout: one request serves the
     * attempts, the events get through once it answers. */
    atomic_store(&slow_until_ms, now_ms() + 1500);
    snprintf(ep, sizeof ep, "tcp://%s:%s", SLOW_HOST, port);
    if (make_config(&cfg, ep, "dns", kv) != 0 || tt_open(&c, cfg) != 0) {
        fail("tt_open with a slow name");
    }
    tt_config_free(cfg);
    for (int i = 0; i < 2000; i++) {
        if (tt_log(c, "s", TT_INFO, "while the name is slow", NULL, 0) != 0) {
            fail("emit while the name is slow");
        }
    }
    frc = tt_flush(c, 15000);
    tt_instance_id(c, id);
    crc = tt_close_stats(c, 2000, &st, sizeof st);
    snprintf(extra, sizeof extra, "flush_rc=%d close_rc=%d resolver_calls=%ld", frc, crc,
             atomic_load(&slow_calls));
    write_run("slow", id, &st, extra);
    return 0;
}

/* --- S14: wall-clock steps ---------------------------------------------------------------------- */

#define HOUR_NS (3600ll * 1000000000ll)
#define YEAR_NS (365ll * 24 * HOUR_NS)

/* The wall clock's schedule: a step every 200 ms through -1 h, +1 h, +10 y, frozen, back. */
static void wall_phase(int i)
{
    static const int64_t steps[] = {-HOUR_NS, HOUR_NS, 10 * YEAR_NS, 0, -10 * YEAR_NS, 0};
    int k = i % 6;
    atomic_store(&wall_step_ns, steps[k]);
    if (k == 3) {
        struct timespec ts;
        __real_clock_gettime(CLOCK_REALTIME, &ts);
        atomic_store(&wall_frozen_ns, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
        atomic_store(&wall_frozen, 1);
    } else {
        atomic_store(&wall_frozen, 0);
    }
}

static int run_clock(int argc, char **argv)
{
    if (argc != 5) {
        return 2;
    }
    /* Batching: one event every 5 ms for 2.4 s, flush interval 50 ms. */
    static const char *const kv[] = {"flush_interval_ms", "50", NULL};
    tt_config *cfg;
    tt_client *c;
    if (make_config(&cfg, argv[2], "clock", kv) != 0 || tt_open(&c, cfg) != 0) {
        fail("open");
    }
    tt_config_free(cfg);
    tt_stats s0;
    tt_stats_get(c, &s0, sizeof s0);
    double t0 = now_ms();
    for (int i = 0; i < 480; i++) {
        if (i % 40 == 0) {
            wall_phase(i / 40);
        }
        tt_log(c, "s", TT_INFO, "while the wall clock jumps", NULL, 0);
        usleep(5000);
    }
    double batching_ms = now_ms() - t0;
    atomic_store(&wall_step_ns, 0);
    atomic_store(&wall_frozen, 0);
    int frc = tt_flush(c, 5000);
    uint8_t id[16];
    tt_instance_id(c, id);
    tt_stats st;
    tt_close_stats(c, 2000, &st, sizeof st);
    char extra[256];
    snprintf(extra, sizeof extra, "flush_rc=%d frames=%llu batching_ms=%.0f", frc,
             (unsigned long long)(st.frames_sent - s0.frames_sent), batching_ms);
    write_run("batching", id, &st, extra);

    /* Reconnects pending: nothing listens at the dead endpoint; backoff 100..400 ms. */
    static const char *const kv2[] = {"backoff_min_ms", "100", "backoff_max_ms", "400", NULL};
    if (make_config(&cfg, argv[3], "clock", kv2) != 0 || tt_open(&c, cfg) != 0) {
        fail("open");
    }
    tt_config_free(cfg);
    tt_log(c, "s", TT_INFO, "waiting for a collector", NULL, 0);
    int first = atomic_load(&n_connects);
    t0 = now_ms();
    for (int i = 0; i < 15; i++) {
        wall_phase(i);
        usleep(200000);
    }
    double pending_ms = now_ms() - t0;
    int last = atomic_load(&n_connects);
    atomic_store(&wall_step_ns, 0);
    atomic_store(&wall_frozen, 0);
    tt_instance_id(c, id);
    tt_close_stats(c, 200, &st, sizeof st);
    double min_gap = 1e9, max_gap = 0;
    for (int i = first + 1; i < last && i < MAX_CONNECTS; i++) {
        double g = connect_ms[i] - connect_ms[i - 1];
        min_gap = g < min_gap ? g : min_gap;
        max_gap = g > max_gap ? g : max_gap;
    }
    snprintf(extra, sizeof extra, "attempts=%d pending_ms=%.0f min_gap_ms=%.1f max_gap_ms=%.1f",
             last - first, pending_ms, min_gap, max_gap);
    write_run("retries", id, &st, extra);
    return 0;
}

/* --- S10: abrupt exits ------------------------------------------------------------------------- */

enum s10_how { S10_EXIT, S10_UNDERSCORE_EXIT, S10_ABORT, S10_MAIN_PTHREAD_EXIT };

static tt_client *s10_client;
static int s10_how;
static useconds_t s10_delay;

static void s10_atexit(void)
{
    /* Emit from an atexit handler, with the emitters still running (S6). */
    for (int i = 0; i < 100; i++) {
        tt_log(s10_client, "s", TT_INFO, "from atexit", NULL, 0);
    }
}

static void *s10_emitter(void *p)
{
    (void)p;
    for (;;) {
        for (int i = 0; i < 50; i++) {
            tt_log(s10_client, "s", TT_INFO, "an event as the process ends", NULL, 0);
            tt_metric(s10_client, "s", TT_COUNTER, "n", 1, NULL, NULL, 0);
        }
        usleep(500);
    }
    return NULL;
}

static void *s10_killer(void *p)
{
    (void)p;
    usleep(s10_delay);
    switch (s10_how) {
    case S10_UNDERSCORE_EXIT:
        _exit(0);
    case S10_ABORT:
        abort();
    default:
        exit(0); /* S10_EXIT, and S10_MAIN_PTHREAD_EXIT once main has gone */
    }
    return NULL;
}

/* client_faults exit HOW DELAY_US ENDPOINT SPOOL OUT: writes the instance to OUT, emits from
 * three threads, and after DELAY_US a fourth ends the process as HOW says (0 exit, 1 _exit,
 * 2 abort, 3 exit after main left with pthread_exit). */
static int run_exit(int argc, char **argv)
{
    if (argc != 7) {
        return 2;
    }
    s10_how = atoi(argv[2]);
    s10_delay = (useconds_t)atol(argv[3]);
    static const char *const kv[] = {
        "window_bytes", "65536", "compression_level", "0", "batch_bytes", "8192", NULL};
    const char *const kv2[] = {"spool_dir", argv[5], NULL};
    tt_config *cfg;
    if (make_config(&cfg, argv[4], "exits", kv) != 0) {
        fail("config");
    }
    if (tt_config_set(cfg, kv2[0], kv2[1]) != 0 || tt_open(&s10_client, cfg) != 0) {
        fail("open");
    }
    tt_config_free(cfg);
    uint8_t id[16];
    char h[33];
    tt_instance_id(s10_client, id);
    hex16(id, h);
    fprintf(out, "instance %s\n", h);
    fclose(out);
    out = NULL;
    atexit(s10_atexit);
    pthread_t t;
    for (int i = 0; i < 3; i++) {
        if (pthread_create(&t, NULL, s10_emitter, NULL) != 0) {
            fail("thread");
        }
    }
    if (pthread_create(&t, NULL, s10_killer, NULL) != 0) {
        fail("thread");
    }
    if (s10_how == S10_MAIN_PTHREAD_EXIT) {
        pthread_exit(NULL);
    }
    for (;;) {
        pause();
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: client_faults oom|dns|clock ...\n");
        return 2;
    }
    out = fopen(argv[argc - 1], "w");
    if (!out) {
        perror(argv[argc - 1]);
        return 2;
    }
    int rc = 2;
    if (strcmp(argv[1], "oom") == 0) {
        rc = run_oom(argc, argv);
    } else if (strcmp(argv[1], "dns") == 0) {
        rc = run_dns(argc, argv);
    } else if (strcmp(argv[1], "clock") == 0) {
        rc = run_clock(argc, argv);
    } else if (strcmp(argv[1], "exit") == 0) {
        rc = run_exit(argc, argv);
    }
    if (out) {
        fclose(out);
    }
    return rc;
}

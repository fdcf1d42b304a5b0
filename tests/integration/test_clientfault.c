/*
 * test_clientfault.c - the client under faults and misuse (docs/reliability.md S5, S6, S7,
 * S10, S11, S14), against a real `telltale serve`, each ending with the conservation check of
 * tests/support/serve.c for every client whose events flow.
 *
 * S5, S7 (name resolution), S10 and S14 run tests/drivers/client_faults ($TT_BUILD/tests/),
 * an agent whose allocator, getaddrinfo, clock_gettime and connect calls from the library are
 * wrapped by the linker; it writes one line per client (instance and counters), read back
 * here. S6 and S11 run in the test's own process.
 */
#include "test.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultproxy.h"
#include "serve.h"

static int soak(void)
{
    const char *s = getenv("TT_SOAK");
    return s && *s && *s != '0';
}

/* Slack for timing bounds: sanitizer builds run slower. */
static double mult(void)
{
    const char *m = getenv("TT_SANITIZE") ? getenv("TT_TEST_TIMEOUT_MULT") : NULL;
    double v = m ? strtod(m, NULL) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* --- the driver ------------------------------------------------------------------------------ */

/* Runs the driver with args (NULL-terminated) and returns the path of its output file; fails
 * the test unless it exits 0. */
static const char *run_driver(const char *name, const char *const *args)
{
    const char *build = getenv("TT_BUILD");
    CHECK_MSG(build, "TT_BUILD is not set (make test sets it)");
    static char outpath[1024];
    char driver[1024], logpath[1024];
    snprintf(driver, sizeof driver, "%s/tests/client_faults", build);
    snprintf(outpath, sizeof outpath, "%s/%s.out", tt_test_outdir(), name);
    snprintf(logpath, sizeof logpath, "%s/%s.log", tt_test_outdir(), name);
    CHECK_MSG(access(driver, X_OK) == 0, "%s is missing (make test builds it)", driver);
    const char *argv[16];
    int n = 0;
    argv[n++] = driver;
    for (; *args && n < 14; args++) {
        argv[n++] = *args;
    }
    argv[n++] = outpath;
    argv[n] = NULL;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(logpath, "w", stdout);
        if (!f || dup2(fileno(stdout), 2) < 0) {
            _exit(126);
        }
        execv(driver, (char *const *)argv);
        _exit(127);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "driver %s ended with status %d (signal %d): see %s", name,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0, logpath);
    return outpath;
}

struct run_line {
    char tag[64];
    uint8_t instance[16];
    tt_stats st;
    char extra[512];
};

static void unhex16(const char *h, uint8_t out[16])
{
    for (int i = 0; i < 16; i++) {
        unsigned v;
        CHECK(sscanf(h + 2 * i, "%2x", &v) == 1);
        out[i] = (uint8_t)v;
    }
}

/* Parses a "run ..." line of the driver; 0 when it is not one. */
static int parse_run(const char *line, struct run_line *r)
{
    char hex[40];
    unsigned long long v[9];
    int used = 0;
    memset(r, 0, sizeof *r);
    if (sscanf(line, "run %63s %32s %llu %llu %llu %llu %llu %llu %llu %llu %llu %n", r->tag, hex,
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &used) != 11) {
        return 0;
    }
    unhex16(hex, r->instance);
    r->st.emitted = v[0];
    r->st.inherited = v[1];
    r->st.acked = v[2];
    r->st.possibly_delivered = v[3];
    r->st.buffered = v[4];
    r->st.dropped_total = v[5];
    r->st.dropped[TT_DROP_OOM] = v[6];
    r->st.dropped[TT_DROP_SHUTDOWN] = v[7];
    r->st.dropped[TT_DROP_BUFFER_FULL] = v[8];
    snprintf(r->extra, sizeof r->extra, "%s", line + used);
    return 1;
}

/* A number after "key=" in the extra fields of a run line. */
static double extra_num(const struct run_line *r, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "%s=", key);
    const char *p = strstr(r->extra, k);
    CHECK_MSG(p, "no %s in \"%s\"", key, r->extra);
    return strtod(p + strlen(k), NULL);
}

static void check_run(const struct tt_test_serve *s, const struct run_line *r)
{
    struct tt_store_check sc;
    tt_test_check_store(s->db, r->instance, &sc);
    tt_test_check_conservation(&r->st, &sc);
    CHECK_EQ_U64(r->st.buffered, 0);
}

static int read_run(FILE *f, const char *tag, struct run_line *r)
{
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        if (parse_run(line, r) && (!tag || strcmp(r->tag, tag) == 0)) {
            return 1;
        }
    }
    return 0;
}

/* --- S5: allocation failures --------------------------------------------------------------------- */

/* Fails the Nth allocation of the library, for N = 1..K (and samples beyond K up to a whole
 * client life), in mode "single" (that one only) or "from" (that one and every later one until
 * the driver disarms). Each run must end in a conserved, stored state, recover, and the faults
 * must have cost events counted as oom somewhere. */
static void s5_run(const char *mode, const char *k)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s5", NULL);
    const char *args[] = {"oom", s.endpoint, mode, k, NULL};
    char name[64];
    snprintf(name, sizeof name, "oom-%s", mode);
    const char *out = run_driver(name, args);
    FILE *f = fopen(out, "r");
    CHECK(f);
    struct run_line r;
    int runs = 0, open_failures = 0, ring_runs = 0;
    uint64_t oom = 0, nomem = 0, ring_oom = 0;
    while (read_run(f, NULL, &r)) {
        check_run(&s, &r);
        const char *colon = strchr(r.tag, ':');
        if (colon) {
            runs++;
            /* The first K allocations all come before the driver disarms (a client's life
             * makes thousands); the samples beyond may fall after it. */
            if (atol(colon + 1) <= atol(k)) {
                CHECK_MSG(extra_num(&r, "failed") >= 1, "run %s: no allocation failed", r.tag);
            }
        }
        if (strcmp(r.tag, "ring:1") == 0) { /* an emitting thread's first allocation failed */
            ring_runs++;
            ring_oom = r.st.dropped[TT_DROP_OOM];
        }
        open_failures += (int)extra_num(&r, "open_failures");
        oom += r.st.dropped[TT_DROP_OOM];
        nomem += (uint64_t)extra_num(&r, "nomem");
    }
    fclose(f);
    fprintf(stderr,
            "S5 %s: %d runs, tt_open failed %d times, %llu events dropped as oom, "
            "%llu event calls returned TT_ENOMEM\n",
            mode, runs, open_failures, (unsigned long long)oom, (unsigned long long)nomem);
    CHECK(runs >= atoi(k));
    CHECK(open_failures > 0);
    CHECK(oom > 0);
    if (strcmp(mode, "single") == 0) {
        CHECK_EQ(ring_runs, 1);
        CHECK_MSG(ring_oom > 0, "a thread's ring could not be allocated: no event counted oom");
    }
    tt_test_serve_stop(&s);
}

TEST_T(clientfault_s5_each_single_allocation_failure_is_survived_counted_and_recovered, 600)
{
    s5_run("single", soak() ? "4000" : "120");
}

TEST_T(clientfault_s5_allocation_failing_from_n_on_is_survived_counted_and_recovered, 600)
{
    s5_run("from", soak() ? "4000" : "120");
}

/* --- S7: a name whose resolution hangs ------------------------------------------------------------ */

TEST_T(clientfault_s7_hanging_name_resolution_never_blocks_emit_open_flush_or_close, 180)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s7", "--listen", "tcp://127.0.0.1:0", NULL);
    const char *port = strrchr(s.tcp, ':');
    CHECK(port);
    const char *args[] = {"dns", port + 1, soak() ? "30000" : "5000", NULL};
    const char *out = run_driver("dns", args);
    FILE *f = fopen(out, "r");
    CHECK(f);
    struct run_line hang, slow;
    CHECK(read_run(f, "hang", &hang));
    CHECK(read_run(f, "slow", &slow));
    fclose(f);
    fprintf(stderr, "S7 hang: %s", hang.extra);
    fprintf(stderr, "S7 slow: %s", slow.extra);
    /* The name hangs for 5 s (30 s in make soak): open and every emit return at once (the
     * bounds leave room for a loaded machine, far below the hang), flush and close keep their
     * deadlines (200 and 300 ms), and one resolution runs at a time. */
    CHECK(extra_num(&hang, "open_ms") < 1000 * mult());
    CHECK(extra_num(&hang, "emit_max_ms") < 1000 * mult());
    CHECK_EQ(extra_num(&hang, "flush_rc"), TT_ETIMEDOUT);
    CHECK(extra_num(&hang, "flush_ms") < 200 + 500 * mult());
    CHECK_EQ(extra_num(&hang, "close_rc"), TT_ETIMEDOUT);
    CHECK(extra_num(&hang, "close_ms") < 300 + 500 * mult());
    CHECK_EQ(extra_num(&hang, "resolver_calls"), 1);
    CHECK_EQ_U64(hang.st.emitted, 2000);
    CHECK_EQ_U64(hang.st.dropped[TT_DROP_SHUTDOWN], 2000);
    check_run(&s, &hang);
    /* The name answers after 1.5 s (five attempt timeouts): the attempts share the one
     * request, and every event is stored once it answers. */
    CHECK_EQ(extra_num(&slow, "flush_rc"), 0);
    CHECK_EQ(extra_num(&slow, "close_rc"), 0);
    CHECK_EQ(extra_num(&slow, "resolver_calls"), 1);
    CHECK_EQ_U64(slow.st.acked, 2000);
    check_run(&s, &slow);
    tt_test_serve_stop(&s);
}

/* --- S14: wall-clock steps ------------------------------------------------------------------------ */

TEST_T(clientfault_s14_wall_clock_steps_change_no_flush_or_backoff_timing, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s14", NULL);
    /* Nothing listens on port 1 of the loopback: every attempt is refused at once. */
    const char *args[] = {"clock", s.endpoint, "tcp://127.0.0.1:1", NULL};
    const char *out = run_driver("clock", args);
    FILE *f = fopen(out, "r");
    CHECK(f);
    struct run_line b, r;
    CHECK(read_run(f, "batching", &b));
    CHECK(read_run(f, "retries", &r));
    fclose(f);
    fprintf(stderr, "S14 batching: %s", b.extra);
    fprintf(stderr, "S14 retries: %s", r.extra);
    /* Batching: an event every 5 ms with a flush interval of 50 ms while the wall clock jumps
     * -1 h, +1 h, +10 y, stands still and comes back: about one frame per 50 ms, never a
     * storm of them (a timer on the wall clock would flush at every turn after +1 h) and never
     * a stall (it would wait an hour after -1 h). */
    CHECK_EQ(extra_num(&b, "flush_rc"), 0);
    double expect = extra_num(&b, "batching_ms") / 50.0;
    double frames = extra_num(&b, "frames");
    CHECK_MSG(frames <= expect * 1.3 + 4, "%.0f frames, %.0f expected", frames, expect);
    CHECK_MSG(frames >= expect / 3, "%.0f frames, %.0f expected", frames, expect);
    CHECK_EQ_U64(b.st.acked, 480);
    check_run(&s, &b);
    /* Reconnects with backoff 100..400 ms (jitter: each wait in [b/2, b]) over 3 s of jumps:
     * no wait shorter than 50 ms, none much longer than 400 ms (a timer on the wall clock
     * would wait an hour after the -1 h step). */
    double attempts = extra_num(&r, "attempts");
    CHECK_MSG(attempts >= 5 && attempts <= 3000 / 50 + 2, "%.0f attempts", attempts);
    CHECK_MSG(extra_num(&r, "min_gap_ms") >= 49, "min gap %.1f ms", extra_num(&r, "min_gap_ms"));
    CHECK_MSG(extra_num(&r, "max_gap_ms") <= 400 + 500 * mult(), "max gap %.1f ms",
              extra_num(&r, "max_gap_ms"));
    CHECK_EQ_U64(r.st.dropped[TT_DROP_SHUTDOWN], 1);
    check_run(&s, &r);
    tt_test_serve_stop(&s);
}

/* --- S6: misuse and odd events -------------------------------------------------------------------- */

/* Every function of include/telltale.h with NULL where a pointer goes: an error code (or the
 * documented neutral answer), never a crash. */
TEST(clientfault_s6_null_arguments_everywhere_in_the_public_api_are_refused)
{
    tt_config *cfg;
    CHECK_EQ(tt_config_new(NULL), TT_EINVAL);
    CHECK_OK(tt_config_new(&cfg));
    CHECK_EQ(tt_config_set(NULL, "agent", "a"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, NULL, "a"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "agent", NULL), TT_EINVAL);
    CHECK_EQ(tt_config_from_env(NULL), TT_EINVAL);
    CHECK(tt_config_get(NULL, "agent") == NULL);
    CHECK(tt_config_get(cfg, NULL) == NULL);
    CHECK(tt_config_error(NULL) != NULL);
    tt_config_free(NULL);
    tt_free(NULL);
    CHECK(tt_strerror(0) && tt_strerror(-99999) && tt_strerror(12345));
    CHECK_STR(tt_drop_cause_name(-1), "unknown");
    CHECK_STR(tt_drop_cause_name(TT_DROP__COUNT), "unknown");
    CHECK(tt_version() != NULL);
    CHECK_EQ(tt_open(NULL, cfg), TT_EINVAL);
    CHECK_EQ(tt_close(NULL, 0), 0);
    CHECK_EQ(tt_close_stats(NULL, 0, NULL, 0), 0);
    CHECK_EQ(tt_flush(NULL, 0), TT_EINVAL);

    struct tt_test_serve s;
    tt_test_serve_start(&s, "s6null", NULL);
    tt_client *c = tt_test_client(s.endpoint, "s6null", NULL);
    tt_step st = {0};
    tt_attr nulls[2] = {{.key = NULL, .type = TT_ATTR_STR, .v.s = NULL},
                        {.key = NULL, .type = TT_ATTR_INT, .v.i = 1}};
    CHECK_EQ(tt_log(NULL, "s", TT_INFO, "m", NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_log(c, "s", TT_INFO, "m", NULL, 2), TT_EINVAL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, NULL, NULL, 0));  /* an empty log record */
    CHECK_OK(tt_log(c, NULL, TT_INFO, NULL, nulls, 2)); /* empty keys and strings */
    CHECK_EQ(TT_LOG(NULL, "s", TT_INFO, "m", TT_LOG_INT("n", 1)), TT_EINVAL);
    CHECK_OK(TT_LOG(c, NULL, TT_INFO, "m", TT_LOG_STR("s", NULL))); /* an empty string */
    const tt_attr_value one[1] = {{.i = 1}};
    CHECK_EQ(tt_log_at(NULL, NULL, NULL, TT_INFO, NULL), TT_EINVAL);
    CHECK_EQ(tt_log_at(c, NULL, "s", TT_INFO, one), TT_EINVAL);
    CHECK_EQ(tt_metric(NULL, "s", TT_GAUGE, "m", 1, NULL, NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_metric(c, "s", TT_GAUGE, NULL, 1, NULL, NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_metric(c, "s", TT_GAUGE, "m", 1, NULL, NULL, 3), TT_EINVAL);
    CHECK_OK(tt_metric(c, NULL, TT_GAUGE, "m", 1, NULL, nulls, 2));
    CHECK_EQ(tt_step_begin(NULL, &st, NULL, TT_STEP_TOOL, NULL, "t", NULL), TT_EINVAL);
    CHECK_EQ(tt_step_begin(c, NULL, NULL, TT_STEP_TOOL, NULL, "t", NULL), TT_EINVAL);
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, NULL, NULL, NULL));
    CHECK_EQ(tt_step_end(NULL, &st, TT_STATUS_OK, 0, NULL), TT_EINVAL);
    CHECK_EQ(tt_step_end(c, NULL, TT_STATUS_OK, 0, NULL), TT_EINVAL);
    CHECK_EQ(tt_step_record(NULL, NULL, TT_STEP_TOOL, NULL, "t", NULL, TT_STATUS_OK, 0, -1, NULL),
             TT_EINVAL);
    CHECK_EQ(tt_step_record(c, NULL, TT_STEP_TOOL, NULL, "t", NULL, TT_STATUS_OK, -1, -1, NULL),
             TT_EINVAL);
    CHECK_EQ(tt_step_record(c, NULL, TT_STEP_TOOL, NULL, "t", NULL, TT_STATUS_OK,
                            TT_STEP_RECORD_MAX_NS + 1, -1, NULL),
             TT_EINVAL);
    CHECK_EQ(tt_step_record(c, NULL, (tt_step_kind)99, NULL, "t", NULL, TT_STATUS_OK, 0, -1, NULL),
             TT_EINVAL);
    CHECK_OK(tt_step_record(c, NULL, TT_STEP_TOOL, NULL, NULL, NULL, TT_STATUS_OK, 0, -1, NULL));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, -1, NULL));
    CHECK_EQ(tt_score(NULL, NULL, 0, "q", 1, NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_score(c, NULL, 0, NULL, 1, NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_score(c, NULL, 0, "q", 1, NULL, 1), TT_EINVAL);
    CHECK_OK(tt_score(c, NULL, 0, "q", 1, NULL, 0));
    CHECK_EQ(tt_stats_get(NULL, NULL, 0), TT_EINVAL);
    tt_stats stats;
    CHECK_EQ(tt_stats_get(c, NULL, sizeof stats), TT_EINVAL);
    CHECK_EQ(tt_instance_id(NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_instance_id(c, NULL), TT_EINVAL);
    tt_token_stats ts;
    float row[4] = {1, 2, 3, 4};
    CHECK_EQ(tt_token_stats_compute(NULL, 4, 1, TT_DTYPE_F32, 0, 1, &ts), TT_EINVAL);
    CHECK_EQ(tt_token_stats_compute(row, 4, 1, TT_DTYPE_F32, 0, 1, NULL), TT_EINVAL);
    CHECK_EQ(tt_token_stats_from_logprobs(0, -0.1f, NULL, NULL, 0, NULL), TT_EINVAL);
    CHECK_EQ(tt_token_stats_from_logprobs(0, -0.1f, NULL, NULL, 2, &ts), TT_EINVAL);
    tt_response *r = (tt_response *)&ts; /* must be set to NULL on failure */
    CHECK_EQ(tt_response_begin(NULL, &r, NULL, NULL, NULL, 0), TT_EINVAL);
    CHECK(r == NULL);
    CHECK_EQ(tt_response_begin(c, NULL, NULL, NULL, NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_response_begin(c, &r, NULL, NULL, NULL, 1), TT_EINVAL);
    CHECK_EQ(tt_response_token(NULL, row, 4, 1, TT_DTYPE_F32, 0, NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_response_token_logprobs(NULL, 0, -0.1f, NULL, NULL, 0, NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_response_id(NULL), 0);
    CHECK_EQ(tt_response_end(NULL, NULL), TT_EINVAL);
    CHECK_OK(tt_response_begin(c, &r, NULL, NULL, NULL, 0));
    CHECK_EQ(tt_response_token(r, NULL, 4, 1, TT_DTYPE_F32, 0, NULL, NULL), TT_EINVAL);
    CHECK_OK(tt_response_token(r, row, 4, 1, TT_DTYPE_F32, 3, NULL, NULL));
    CHECK_OK(tt_response_token_logprobs(r, 0, -0.1f, NULL, NULL, 0, NULL, NULL));
    CHECK_OK(tt_response_end(r, NULL));
    CHECK_EQ(tt_guard_policy_set(NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_guard_policy_set(c, NULL), TT_EINVAL);
    CHECK_EQ(tt_guard_policy_get(NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_guard_policy_get(c, NULL), TT_EINVAL);
    /* Everything accepted above is one event or more, stored. */
    CHECK_OK(tt_flush(c, 10000));
    uint8_t id[16];
    CHECK_OK(tt_instance_id(c, id));
    CHECK_OK(tt_close_stats(c, 2000, &stats, sizeof stats));
    CHECK(stats.emitted >= 7);
    CHECK_EQ_U64(stats.dropped_total, 0);
    CHECK_EQ_U64(stats.acked, stats.emitted);
    struct tt_store_check sc;
    tt_test_check_store(s.db, id, &sc);
    tt_test_check_conservation(&stats, &sc);
    tt_config_free(cfg);
    tt_test_serve_stop(&s);
}

/* Odd events: 10 MiB, invalid UTF-8, a NUL inside, control bytes. The oversized one is
 * dropped and counted as too_large; the others are stored (strings end at their NUL, as C
 * strings do), and none of them costs its batch. */
TEST(clientfault_s6_oversized_and_odd_strings_are_counted_or_stored_never_fatal)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s6odd", NULL);
    tt_client *c = tt_test_client(s.endpoint, "s6odd", NULL);
    size_t big = 10u << 20;
    char *huge = malloc(big + 1);
    CHECK(huge);
    memset(huge, 'x', big);
    huge[big] = 0;
    CHECK_EQ(tt_log(c, "s", TT_INFO, huge, NULL, 0), TT_E2BIG);
    CHECK_EQ(tt_metric(c, huge, TT_GAUGE, "m", 1, NULL, NULL, 0), TT_E2BIG);
    tt_step st;
    CHECK_EQ(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s", "t", huge), TT_E2BIG);
    CHECK_EQ(tt_step_end(c, &st, TT_STATUS_OK, 0, huge), TT_E2BIG);
    free(huge);
    static const char *const odd[] = {"\xff\xfe invalid utf-8 \xc3\x28 \xe2\x82 \xf0\x28\x8c\xbc",
                                      "before\0after",
                                      "\x01\x02\x1b[31m control \x7f",
                                      "\xed\xa0\x80 surrogate",
                                      "",
                                      "ok"};
    int n = 0;
    for (int round = 0; round < 100; round++) {
        for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
            tt_attr a = TT_STR(odd[i], odd[i]);
            CHECK_OK(tt_log(c, odd[i], TT_INFO, odd[i], &a, 1));
            CHECK_OK(tt_metric(c, odd[i], TT_GAUGE, odd[i], 1, odd[i], &a, 1));
            n += 2;
        }
    }
    CHECK_OK(tt_flush(c, 10000));
    uint8_t id[16];
    CHECK_OK(tt_instance_id(c, id));
    tt_stats stats;
    CHECK_OK(tt_close_stats(c, 2000, &stats, sizeof stats));
    CHECK_EQ_U64(stats.dropped[TT_DROP_TOO_LARGE], 4);
    CHECK_EQ_U64(stats.dropped_total, 4);
    CHECK_EQ_U64(stats.acked, (uint64_t)n);
    struct tt_store_check sc;
    tt_test_check_store(s.db, id, &sc);
    tt_test_check_conservation(&stats, &sc);
    CHECK_EQ_U64(sc.events, (uint64_t)n);
    tt_test_serve_stop(&s);
}

/* 256 threads emit at once (max_threads, one ring each), and 16 more find no ring: their
 * first events at least are counted as no_ring. */
#define S6_THREADS 256
#define S6_EXTRA 16

struct s6_arg {
    tt_client *c;
    pthread_barrier_t *go;
    pthread_barrier_t *held; /* every thread has made its first call */
    int n;
    _Atomic int *refused;
};

static void *s6_thread(void *p)
{
    struct s6_arg *a = p;
    pthread_barrier_wait(a->go);
    for (int i = 0; i < a->n; i++) {
        if (i == 1) {
            pthread_barrier_wait(a->held);
        }
        int rc = tt_log(a->c, "s", TT_INFO, "one of many threads", NULL, 0);
        if (rc == TT_ENOBUFS) {
            atomic_fetch_add(a->refused, 1);
        } else if (rc != 0) {
            atomic_fetch_add(a->refused, 1000000);
        }
    }
    return NULL;
}

TEST_T(clientfault_s6_256_threads_at_once_are_served_and_extra_threads_counted, 180)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s6threads", NULL);
    tt_client *c =
        tt_test_client(s.endpoint, "s6threads", "ring_bytes=131072", "max_event_bytes=8192", NULL);
    int total = S6_THREADS + S6_EXTRA, per = soak() ? 20000 : 500;
    pthread_t *t = calloc((size_t)total, sizeof *t);
    pthread_barrier_t go, held;
    pthread_barrier_init(&go, NULL, (unsigned)total);
    pthread_barrier_init(&held, NULL, (unsigned)total);
    _Atomic int refused = 0;
    struct s6_arg a = {c, &go, &held, per, &refused};
    for (int i = 0; i < total; i++) {
        CHECK_OK(pthread_create(&t[i], NULL, s6_thread, &a));
    }
    for (int i = 0; i < total; i++) {
        pthread_join(t[i], NULL);
    }
    free(t);
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&held);
    CHECK_MSG(atomic_load(&refused) < 1000000, "an emit returned another error than ENOBUFS");
    CHECK_OK(tt_flush(c, 30000));
    uint8_t id[16];
    CHECK_OK(tt_instance_id(c, id));
    tt_stats st;
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    fprintf(stderr, "S6 threads: emitted %llu, acked %llu, buffer_full %llu, no_ring %llu\n",
            (unsigned long long)st.emitted, (unsigned long long)st.acked,
            (unsigned long long)st.dropped[TT_DROP_BUFFER_FULL],
            (unsigned long long)st.dropped[TT_DROP_NO_RING]);
    CHECK_EQ_U64(st.emitted, (uint64_t)total * (uint64_t)per);
    /* Every refused call returned TT_ENOBUFS and is counted: buffer_full, or no_ring for a
     * thread beyond max_threads (threads that exit give their ring back once it is drained,
     * so a late thread may still find one). */
    CHECK(st.dropped[TT_DROP_NO_RING] <= (uint64_t)S6_EXTRA * (uint64_t)per);
    /* The first calls all happen while every thread lives: 16 of them find no ring. */
    CHECK(st.dropped[TT_DROP_NO_RING] >= S6_EXTRA);
    CHECK_EQ_U64(st.dropped_total, (uint64_t)atomic_load(&refused));
    CHECK_EQ_U64(st.dropped_total, st.dropped[TT_DROP_NO_RING] + st.dropped[TT_DROP_BUFFER_FULL]);
    struct tt_store_check sc;
    tt_test_check_store(s.db, id, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(sc.events, st.acked);
    tt_test_serve_stop(&s);
}

/* Emit once tt_close has begun: a counted no-op (TT_ESHUTDOWN, dropped[closed]). The emitting
 * thread stops at its first TT_ESHUTDOWN, long before tt_close returns (it waits for its
 * deadline: nothing listens), so no call races with the free that ends tt_close. */
struct s6_close_arg {
    tt_client *c;
    _Atomic int calls_after;
};

static void *s6_close_emitter(void *p)
{
    struct s6_close_arg *a = p;
    for (;;) {
        int rc = tt_log(a->c, "s", TT_INFO, "racing the close", NULL, 0);
        if (rc == TT_ESHUTDOWN) {
            CHECK_EQ(tt_metric(a->c, "s", TT_GAUGE, "m", 1, NULL, NULL, 0), TT_ESHUTDOWN);
            atomic_store(&a->calls_after, 2);
            return NULL;
        }
        usleep(100);
    }
}

TEST(clientfault_s6_emit_after_close_began_is_a_counted_no_op)
{
    /* Nothing listens on port 1: the close waits for its whole deadline. */
    tt_client *c = tt_test_client("tcp://127.0.0.1:1", "s6closed", NULL);
    struct s6_close_arg a = {c, 0};
    pthread_t t;
    CHECK_OK(pthread_create(&t, NULL, s6_close_emitter, &a));
    usleep(50000);
    tt_stats st;
    double t0 = tt_test_now_ms();
    CHECK_EQ(tt_close_stats(c, 1000, &st, sizeof st), TT_ETIMEDOUT);
    CHECK(tt_test_now_ms() - t0 >= 900);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&a.calls_after), 2);
    CHECK_EQ_U64(st.dropped[TT_DROP_CLOSED], 2);
    struct tt_store_check none;
    memset(&none, 0, sizeof none);
    tt_test_check_conservation(&st, &none);
}

/* --- S10: abrupt exits ---------------------------------------------------------------------------- */

enum { S10_HOWS = 4 }; /* exit, _exit, abort, pthread_exit on main (client_faults exit) */

/* Runs the driver's exit mode and returns its wait status; *inst gets its instance. */
static int s10_run(const char *endpoint, const char *spool, int how, useconds_t delay,
                   uint8_t inst[16])
{
    char driver[1024], outpath[1024], hows[16], delays[32];
    snprintf(driver, sizeof driver, "%s/tests/client_faults", getenv("TT_BUILD"));
    snprintf(outpath, sizeof outpath, "%s/exit.out", tt_test_outdir());
    snprintf(hows, sizeof hows, "%d", how);
    snprintf(delays, sizeof delays, "%u", (unsigned)delay);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl(driver, driver, "exit", hows, delays, endpoint, spool, outpath, (char *)NULL);
        _exit(127);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    FILE *f = fopen(outpath, "r");
    CHECK(f);
    char hex[40];
    CHECK(fscanf(f, "instance %32s", hex) == 1);
    fclose(f);
    unhex16(hex, inst);
    return status;
}

/* exit() and _exit() from another thread mid-emit, abort(), and main leaving with
 * pthread_exit: the process ends as asked (under ASan with no report: the worker never
 * touches freed memory during exit, and nothing leaks), and the spool it leaves opens and
 * replays every whole record once. */
TEST_T(clientfault_s10_exit_and_abort_from_another_thread_mid_emit_leave_a_clean_spool, 300)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s10", NULL);
    tt_test_serve_stop(&s);
    char spool[700];
    snprintf(spool, sizeof spool, "%s/spool", tt_test_tmpdir());
    int runs = (soak() ? 25 : 2) * S10_HOWS;
    static uint8_t inst[25 * S10_HOWS][16];
    unsigned seed = (unsigned)getpid();
    for (int r = 0; r < runs; r++) {
        int how = r % S10_HOWS;
        useconds_t delay = 100000 + (useconds_t)(rand_r(&seed) % 200000);
        int status = s10_run(s.endpoint, spool, how, delay, inst[r]);
        if (how == 2) {
            CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "run %d: status %#x", r,
                      status);
        } else {
            CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run %d (how %d): status %#x",
                      r, how, status);
        }
    }
    tt_test_serve_restart(&s);
    char kv[800];
    snprintf(kv, sizeof kv, "spool_dir=%s", spool);
    tt_client *c = tt_test_client(s.endpoint, "exits", kv, NULL);
    tt_stats st;
    double t0 = tt_test_now_ms();
    for (;;) {
        CHECK_OK(tt_stats_get(c, &st, sizeof st));
        if (st.inherited > 0 && st.buffered == 0) {
            break;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 30000 * mult(), "spool not drained: buffered %llu",
                  (unsigned long long)st.buffered);
        usleep(20000);
    }
    CHECK_OK(tt_close_stats(c, 2000, &st, sizeof st));
    struct tt_store_check all;
    memset(&all, 0, sizeof all);
    for (int r = 0; r < runs; r++) {
        struct tt_store_check sc;
        tt_test_check_store(s.db, inst[r], &sc);
        CHECK_EQ_U64(sc.overlaps, 0);
        all.events += sc.events;
        all.decoded += sc.decoded;
    }
    fprintf(stderr, "S10: %d abrupt ends, inherited %llu, stored %llu, spool_corrupt %llu\n", runs,
            (unsigned long long)st.inherited, (unsigned long long)all.events,
            (unsigned long long)st.dropped[TT_DROP_SPOOL_CORRUPT]);
    tt_test_check_conservation(&st, &all);
    CHECK_EQ_U64(st.acked, all.events);
    CHECK(st.inherited > 0);
    tt_test_serve_stop(&s);
}

/* --- S11: signals ------------------------------------------------------------------------------ */

static _Atomic long s11_signals;
static _Atomic int s11_stop_emit, s11_stop_signals, s11_emitters_done;

static void s11_handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&s11_signals, 1);
}

struct s11_arg {
    tt_client *c;
    _Atomic long bad;
};

/* About 8,000 events a second, paced by the clock (signals cut the sleeps short). */
static void *s11_emitter(void *p)
{
    struct s11_arg *a = p;
    double t0 = tt_test_now_ms();
    long n = 0;
    while (!atomic_load(&s11_stop_emit)) {
        long due = (long)((tt_test_now_ms() - t0) * 8);
        for (; n < due; n++) {
            if (tt_log(a->c, "s", TT_INFO, "under a signal storm", NULL, 0) != 0) {
                atomic_fetch_add(&a->bad, 1);
            }
        }
        usleep(1000);
    }
    atomic_fetch_add(&s11_emitters_done, 1);
    /* Stay alive (a target of the signaller) until the storm ends. */
    while (!atomic_load(&s11_stop_signals)) {
        usleep(1000);
    }
    return NULL;
}

struct s11_sig_arg {
    pthread_t *targets;
    int n;
};

static void *s11_signaller(void *p)
{
    struct s11_sig_arg *a = p;
    static const int sigs[] = {SIGUSR1, SIGTERM, SIGINT};
    unsigned seed = 7;
    for (long i = 0; !atomic_load(&s11_stop_signals); i++) {
        int sig = sigs[i % 3];
        if (i % 10 == 0) {
            kill(getpid(), sig); /* any thread that does not block it: the worker does */
        } else {
            pthread_kill(a->targets[rand_r(&seed) % (unsigned)a->n], sig);
        }
        usleep(100);
    }
    return NULL;
}

#define S11_SIGMAX 64

static void dispositions(struct sigaction *out)
{
    for (int sig = 1; sig <= S11_SIGMAX; sig++) {
        memset(&out[sig], 0, sizeof out[sig]);
        if (sig != SIGKILL && sig != SIGSTOP) {
            sigaction(sig, NULL, &out[sig]);
        }
    }
}

/* SIGUSR1, SIGTERM and SIGINT at about 10 kHz on the emitting threads and the process while
 * the collector's side resets the connection every 300 ms (the worker's writes then meet
 * EPIPE): no SIGPIPE death, nothing lost, no handler of the library's anywhere. */
TEST_T(clientfault_s11_signal_storm_and_resets_lose_nothing_and_install_no_handler, 180)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s11_handler; /* no SA_RESTART: interrupted calls see EINTR */
    sigemptyset(&sa.sa_mask);
    CHECK_OK(sigaction(SIGUSR1, &sa, NULL));
    CHECK_OK(sigaction(SIGTERM, &sa, NULL));
    CHECK_OK(sigaction(SIGINT, &sa, NULL));
    CHECK_OK(sigaction(SIGPIPE, &(struct sigaction){.sa_handler = SIG_DFL}, NULL));
    static struct sigaction before[S11_SIGMAX + 1], after[S11_SIGMAX + 1];
    dispositions(before);

    struct tt_test_serve s;
    tt_test_serve_start(&s, "s11", "--listen", "tcp://127.0.0.1:0", NULL);
    struct tt_fault_proxy *px = tt_fault_proxy_start(s.tcp);
    tt_client *c = tt_test_client(tt_fault_proxy_endpoint(px), "s11", "backoff_min_ms=20",
                                  "backoff_max_ms=200", NULL);
    struct s11_arg a = {c, 0};
    pthread_t threads[5];
    for (int i = 0; i < 4; i++) {
        CHECK_OK(pthread_create(&threads[i], NULL, s11_emitter, &a));
    }
    threads[4] = pthread_self();
    struct s11_sig_arg sa2 = {threads, 5};
    pthread_t sig_thread;
    CHECK_OK(pthread_create(&sig_thread, NULL, s11_signaller, &sa2));
    double seconds = soak() ? 30 : 3, t0 = tt_test_now_ms();
    int resets = 0;
    double last = t0;
    while (tt_test_now_ms() - t0 < seconds * 1000) {
        usleep(10000); /* cut short by the signals: the clock paces the resets */
        if (tt_test_now_ms() - last >= 300) {
            tt_fault_proxy_reset(px);
            resets++;
            last = tt_test_now_ms();
        }
    }
    atomic_store(&s11_stop_emit, 1);
    while (atomic_load(&s11_emitters_done) < 4) {
        usleep(1000);
    }
    /* flush and close under the storm too */
    int frc = tt_flush(c, 30000);
    uint8_t id[16];
    CHECK_OK(tt_instance_id(c, id));
    tt_stats st;
    int crc = tt_close_stats(c, 5000, &st, sizeof st);
    atomic_store(&s11_stop_signals, 1);
    pthread_join(sig_thread, NULL);
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
    }
    dispositions(after);
    fprintf(stderr,
            "S11: %ld signals handled, %d resets, %llu reconnects, %llu events, acked "
            "%llu, dropped %llu\n",
            atomic_load(&s11_signals), resets, (unsigned long long)st.reconnects,
            (unsigned long long)st.emitted, (unsigned long long)st.acked,
            (unsigned long long)st.dropped_total);
    CHECK_EQ(frc, 0);
    CHECK_EQ(crc, 0);
    CHECK_EQ(atomic_load(&a.bad), 0);
    CHECK(atomic_load(&s11_signals) > 1000);
    CHECK(st.reconnects >= 1);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.acked, st.emitted);
    for (int sig = 1; sig <= S11_SIGMAX; sig++) {
        CHECK_MSG(before[sig].sa_handler == after[sig].sa_handler &&
                      before[sig].sa_flags == after[sig].sa_flags,
                  "the disposition of signal %d changed", sig);
    }
    struct tt_store_check sc;
    tt_test_check_store(s.db, id, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(sc.events, st.emitted);
    tt_fault_proxy_stop(px);
    tt_test_serve_stop(&s);
}

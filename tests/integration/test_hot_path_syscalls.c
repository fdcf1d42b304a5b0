/*
 * test_hot_path_syscalls.c - the hot path makes no system call: producer threads emit
 * 10,000,000 events under `strace -ff` (one trace file per thread), and each producer's trace
 * must hold nothing between the marker calls the driver makes just before and just after its
 * loop (tests/drivers/hot_path_syscalls.c, built into $TT_BUILD/tests/). The worker thread and
 * the setup may make system calls; the producers, during the loop, none.
 *
 * The events go to a real `telltale serve` when $TT_BIN can start one; otherwise to an
 * endpoint where nothing listens (the worker then retries in the background while the rings
 * fill and drop, counted). The log says which was used.
 */
#include "test.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MARK_BEGIN "\"tt-hot-path-begin\""
#define MARK_END "\"tt-hot-path-end\""
#define PRODUCERS 4
#define EVENTS "10000000"

/* --- a collector, when one can be had -------------------------------------------------- */

static pid_t collector_start(const char *dir, char *endpoint, size_t n)
{
    const char *bin = getenv("TT_BIN");
    if (!bin || access(bin, X_OK) != 0) {
        return -1;
    }
    char data[4096], sock[4096], ready[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(sock, sizeof sock, "unix:%s/s.sock", dir);
    snprintf(ready, sizeof ready, "%s/ready.json", dir);
    mkdir(data, 0700);
    pid_t pid = fork();
    if (pid == 0) {
        execl(bin, bin, "serve", "--data", data, "--listen", sock, "--http", "127.0.0.1:0",
              "--ready-file", ready, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; pid > 0 && i < 200; i++) {
        struct stat st;
        if (stat(ready, &st) == 0 && st.st_size > 0) {
            snprintf(endpoint, n, "%s", sock);
            return pid;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            return -1;
        }
        usleep(50000);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

static void collector_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

/* --- running the driver under strace --------------------------------------------------- */

/* Runs the driver under strace -ff with the trace files at prefix.<tid>; the driver's JSON
 * line goes to out. Returns strace's exit status. */
static int run_traced_args(const char *prefix, const char *endpoint, const char *inject,
                           const char *extra, char *out, size_t n)
{
    const char *build = getenv("TT_BUILD");
    CHECK_MSG(build, "TT_BUILD is not set (make test sets it)");
    char driver[4096], cmd[16384];
    snprintf(driver, sizeof driver, "%s/tests/hot_path_syscalls", build);
    CHECK_MSG(access(driver, X_OK) == 0, "%s is not built", driver);
    CHECK_MSG(system("strace -V >/dev/null 2>&1") == 0,
              "strace is missing (scripts/install-deps test)");
    /* LeakSanitizer cannot run under ptrace: the traced driver of an ASan build runs without
     * leak checking (the rest of the suite keeps it). */
    snprintf(cmd, sizeof cmd,
             "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 "
             "strace -ff -qq -s 64 -o '%s' '%s' --threads %d %s"
             " --endpoint '%s'%s%s",
             prefix, driver, PRODUCERS, extra ? extra : "--events " EVENTS, endpoint,
             inject ? " --inject-syscall " : "", inject ? inject : "");
    printf("running: %s\n", cmd);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    out[0] = 0;
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        if (line[0] == '{') {
            snprintf(out, n, "%s", line);
        }
    }
    int status = pclose(p);
    printf("driver: %s", out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_traced(const char *prefix, const char *endpoint, const char *inject, char *out,
                      size_t n)
{
    return run_traced_args(prefix, endpoint, inject, NULL, out, n);
}

/* --- reading the traces ---------------------------------------------------------------- */

typedef struct trace_check {
    int producers;     /* trace files holding both markers in order */
    int bad_markers;   /* files with a marker missing, repeated or out of order */
    int calls_between; /* lines between the markers, over every producer */
    int tsan_futex;    /* futex calls of ThreadSanitizer's runtime, not counted (see below) */
} trace_check;

/* Under ThreadSanitizer, the instrumented producers make futex calls of the sanitizer's own
 * runtime (its internal mutexes, contended by the worker's instrumented accesses); the library
 * itself calls no futex on the hot path in the normal build, which the same test checks with
 * nothing filtered. Only in a TSan build are futex lines set aside, and counted in the log. */
static int tsan_runtime_call(const char *line)
{
    const char *san = getenv("TT_SANITIZE");
    return san && strstr(san, "thread") && strncmp(line, "futex(", 6) == 0;
}

/* Checks one thread's trace file: if it holds the begin marker, counts what lies between the
 * markers and prints it. */
static void check_file(const char *path, trace_check *tc)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f, "cannot open %s", path);
    char line[4096];
    int begins = 0, ends = 0, inside = 0, between = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, MARK_BEGIN)) {
            begins++;
            inside = ends == 0;
            continue;
        }
        if (strstr(line, MARK_END)) {
            ends++;
            inside = 0;
            continue;
        }
        if (inside && tsan_runtime_call(line)) {
            tc->tsan_futex++;
            continue;
        }
        if (inside) {
            between++;
            if (between <= 20) {
                printf("%s: between the markers: %s", path, line);
            }
        }
    }
    fclose(f);
    if (begins == 0 && ends == 0) {
        return;
    }
    if (begins == 1 && ends == 1) {
        tc->producers++;
    } else {
        tc->bad_markers++;
        printf("%s: %d begin and %d end markers\n", path, begins, ends);
    }
    tc->calls_between += between;
}

static trace_check check_traces(const char *dir, const char *base)
{
    trace_check tc = {0, 0, 0, 0};
    DIR *d = opendir(dir);
    CHECK(d);
    struct dirent *e;
    size_t bl = strlen(base);
    int files = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, base, bl) == 0 && e->d_name[bl] == '.') {
            char path[8192];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            check_file(path, &tc);
            files++;
        }
    }
    closedir(d);
    printf("%d trace files, %d producers with both markers, %d system calls between markers"
           " (%d futex calls of the TSan runtime set aside)\n",
           files, tc.producers, tc.calls_between, tc.tsan_futex);
    return tc;
}

static uint64_t json_u64(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

/* --- the tests ------------------------------------------------------------------------- */

TEST_T(hot_path_makes_no_syscall_in_10m_events, 180)
{
    const char *tmp = tt_test_tmpdir();
    char endpoint[4200], prefix[4200], out[1024];
    pid_t coll = collector_start(tmp, endpoint, sizeof endpoint);
    if (coll > 0) {
        printf("collector: telltale serve at %s\n", endpoint);
    } else {
        snprintf(endpoint, sizeof endpoint, "unix:%s/nobody-listens.sock", tmp);
        printf("collector: none (telltale serve unavailable); endpoint %s has no listener, "
               "the rings fill and drop\n",
               endpoint);
    }
    snprintf(prefix, sizeof prefix, "%s/trace", tmp);
    int rc = run_traced(prefix, endpoint, NULL, out, sizeof out);
    collector_stop(coll);
    CHECK_EQ(rc, 0);
    CHECK_EQ_U64(json_u64(out, "loop_events"), 10000000u);
    /* Every event made was counted: the loop's, plus two first events per producer (its
     * ring's, and its TT_LOG site's registration). */
    CHECK_EQ_U64(json_u64(out, "emitted"), 10000000u + 2 * PRODUCERS);
    trace_check tc = check_traces(tmp, "trace");
    CHECK_EQ(tc.producers, PRODUCERS);
    CHECK_EQ(tc.bad_markers, 0);
    CHECK_EQ(tc.calls_between, 0);
}

/* The check itself can fail: a getppid() every 500,000 events of each producer's loop must be
 * seen, all of them. */
TEST_T(hot_path_syscall_check_catches_an_injected_syscall, 180)
{
    const char *tmp = tt_test_tmpdir();
    char endpoint[4200], prefix[4200], out[1024];
    snprintf(endpoint, sizeof endpoint, "unix:%s/nobody-listens.sock", tmp);
    snprintf(prefix, sizeof prefix, "%s/trace", tmp);
    CHECK_EQ(run_traced(prefix, endpoint, "500000", out, sizeof out), 0);
    trace_check tc = check_traces(tmp, "trace");
    CHECK_EQ(tc.producers, PRODUCERS);
    CHECK_EQ(tc.calls_between, PRODUCERS * (10000000 / PRODUCERS / 500000));
}

/* Response tokens (statistics, packed chunks, guard decisions with their reasons) make no
 * system call either; mode 1 adds them one row per call, mode 2 by tt_response_token_batch. */
static void response_tokens_make_no_syscall(const char *mode)
{
    const char *tmp = tt_test_tmpdir();
    char endpoint[4200], prefix[4200], out[1024];
    pid_t coll = collector_start(tmp, endpoint, sizeof endpoint);
    if (coll <= 0) {
        snprintf(endpoint, sizeof endpoint, "unix:%s/nobody-listens.sock", tmp);
    }
    snprintf(prefix, sizeof prefix, "%s/trace", tmp);
    char args[64];
    snprintf(args, sizeof args, "--events 400000 --tokens %s", mode);
    int rc = run_traced_args(prefix, endpoint, NULL, args, out, sizeof out);
    collector_stop(coll);
    CHECK_EQ(rc, 0);
    CHECK_EQ_U64(json_u64(out, "loop_events"), 400000u);
    CHECK_EQ_U64(json_u64(out, "refused"), 0);
    /* chunks of 64 tokens and guard events were emitted (the begin and first event besides) */
    CHECK(json_u64(out, "emitted") > 400000u / 64);
    trace_check tc = check_traces(tmp, "trace");
    CHECK_EQ(tc.producers, PRODUCERS);
    CHECK_EQ(tc.bad_markers, 0);
    CHECK_EQ(tc.calls_between, 0);
}

TEST_T(hot_path_response_tokens_make_no_syscall, 180)
{
    response_tokens_make_no_syscall("1");
}

TEST_T(hot_path_batched_response_tokens_make_no_syscall, 180)
{
    response_tokens_make_no_syscall("2");
}

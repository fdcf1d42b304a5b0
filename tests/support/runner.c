/*
 * runner.c - runs the registered tests, each in its own forked process group with a timeout,
 * so that a crash or a hang fails one test instead of the run. Closes with the line
 * "N passed, N failed".
 *
 *   runner [--list] [-x EXCLUDED]... [PATTERN...]   run the tests whose name or file contains
 *   a PATTERN (all without one), except those whose name or file contains an EXCLUDED one
 *
 * Each test gets an output directory ($TT_TEST_OUTROOT/<name>, kept) and a private temporary
 * directory (removed afterwards). TT_TEST_TIMEOUT_MULT scales every timeout (sanitizer builds).
 */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct test {
    const char *name;
    const char *file;
    tt_test_fn fn;
    int timeout_s;
};

#define MAX_TESTS 4096
static struct test tests[MAX_TESTS];
static int ntests;
static char outdir[4096];
static char tmpdir[4096];

void tt_test_register(const char *name, const char *file, tt_test_fn fn, int timeout_s)
{
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "runner: too many tests\n");
        exit(2);
    }
    tests[ntests++] = (struct test){name, file, fn, timeout_s};
}

void tt_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: FAILED: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stdout);
    fflush(stderr);
    _exit(1);
}

const char *tt_test_outdir(void)
{
    return outdir;
}

const char *tt_test_tmpdir(void)
{
    return tmpdir;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    mkdir(buf, 0755);
}

static int cmp_test(const void *a, const void *b)
{
    const struct test *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : (x < y ? -1 : 1);
}

static void print_log_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > 6000 ? size - 6000 : 0, SEEK_SET);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        fprintf(stdout, "    | %s", line);
    }
    fclose(f);
}

static void child_run(const struct test *t, const char *logpath)
{
    setpgid(0, 0);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    setenv("TT_TEST_OUT", outdir, 1);
    setenv("TT_TEST_TMP", tmpdir, 1);
    setvbuf(stdout, NULL, _IOLBF, 0);
    t->fn();
    fflush(stdout);
    fflush(stderr);
    _exit(0);
}

/* Returns 1 if the test passed, 0 if it failed, -1 if it does not apply to this build. */
static int run_one(const struct test *t, const char *outroot, double mult)
{
    snprintf(outdir, sizeof outdir, "%s/%s", outroot, t->name);
    mkdir_p(outdir);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tt-%s-XXXXXX", t->name);
    if (!mkdtemp(tmpdir)) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/tt-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            return 0;
        }
    }
    char logpath[4200];
    snprintf(logpath, sizeof logpath, "%s/log.txt", outdir);
    fflush(stdout);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 0;
    }
    if (pid == 0) {
        child_run(t, logpath);
    }
    setpgid(pid, pid);
    double limit = t->timeout_s * mult;
    int status = 0, timed_out = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            break;
        }
        if (now_s() - t0 > limit) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    /* Anything the test started and left behind goes with its process group. */
    kill(-pid, SIGKILL);
    double dt = now_s() - t0;
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    int ok = !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == TT_TEST_SKIP_EXIT) {
        printf("SKIP  %-58s %7.2fs\n", t->name, dt);
        print_log_tail(logpath);
        fflush(stdout);
        return -1;
    }
    if (ok) {
        printf("ok    %-58s %7.2fs\n", t->name, dt);
    } else {
        if (timed_out) {
            printf("FAIL  %-58s %7.2fs  (timeout after %.0fs)\n", t->name, dt, limit);
        } else if (WIFSIGNALED(status)) {
            printf("FAIL  %-58s %7.2fs  (signal %d)\n", t->name, dt, WTERMSIG(status));
        } else {
            printf("FAIL  %-58s %7.2fs  (exit %d)\n", t->name, dt, WEXITSTATUS(status));
        }
        printf("    %s (log: %s)\n", t->file, logpath);
        print_log_tail(logpath);
    }
    fflush(stdout);
    return ok;
}

static int matches(const struct test *t, int npat, char **pat)
{
    for (int i = 0; i < npat; i++) {
        if (strstr(t->name, pat[i]) || strstr(t->file, pat[i])) {
            return 1;
        }
    }
    return 0;
}

/* A test runs when it matches a pattern (or none is given) and no exclusion. */
static int selected(const struct test *t, int npat, char **pat, int nexcl, char **excl)
{
    return (npat == 0 || matches(t, npat, pat)) && !matches(t, nexcl, excl);
}

int main(int argc, char **argv)
{
    int list = 0, npat = 0, nexcl = 0;
    char **pat = calloc((size_t)argc, sizeof *pat);
    char **excl = calloc((size_t)argc, sizeof *excl);
    if (!pat || !excl) {
        fprintf(stderr, "runner: out of memory\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0) {
            list = 1;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: %s [--list] [-x EXCLUDED]... [PATTERN...]\n"
                   "runs the tests whose name or file contains a PATTERN (all without one),\n"
                   "except those whose name or file contains an EXCLUDED pattern\n",
                   argv[0]);
            return 0;
        } else if (strcmp(argv[i], "-x") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "runner: -x needs a pattern\n");
                return 2;
            }
            excl[nexcl++] = argv[++i];
        } else {
            pat[npat++] = argv[i];
        }
    }
    signal(SIGPIPE, SIG_IGN);
    qsort(tests, (size_t)ntests, sizeof tests[0], cmp_test);
    const char *outroot = getenv("TT_TEST_OUTROOT");
    if (!outroot) {
        outroot = "build/test-out";
    }
    double mult = 1.0;
    const char *m = getenv("TT_TEST_TIMEOUT_MULT");
    if (m) {
        mult = strtod(m, NULL);
        if (mult <= 0) {
            mult = 1.0;
        }
    }
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < ntests; i++) {
        if (!selected(&tests[i], npat, pat, nexcl, excl)) {
            continue;
        }
        if (list) {
            printf("%s\t%s\n", tests[i].name, tests[i].file);
            continue;
        }
        int r = run_one(&tests[i], outroot, mult);
        if (r < 0) {
            skipped++;
        } else if (r) {
            passed++;
        } else {
            failed++;
        }
    }
    free(pat);
    free(excl);
    if (list) {
        return 0;
    }
    if (skipped) {
        printf("%d skipped: not applicable to this build (see SKIP lines above)\n", skipped);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return (failed == 0 && passed > 0) ? 0 : 1;
}

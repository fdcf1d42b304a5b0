/*
 * pytest.c - run one pytest function of python/tests as a runner test (see
 * scripts/gen-python-tests): /usr/bin/python3 -m pytest FILE::FUNCTION in the source tree, its
 * output in the test's log; the test fails unless pytest reports it passed. TELLTALE_IMPL names
 * the implementation of the package's hot calls under test (ext or ctypes): an explicit choice,
 * so a missing extension fails the .ext tests instead of falling back.
 *
 * Under a sanitizer build the library is instrumented, so the sanitizer's runtime is preloaded
 * into the interpreter (TT_SANITIZE names it; leaks are the interpreter's own, so leak checks
 * are off there).
 */
#include "test.h"

#include <sys/wait.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"

/* Called by the generated registrations ($(BUILD)/gen/python_tests.c). */
void tt_test_pytest(const char *file, const char *function, const char *impl);

/* In a child about to run the interpreter: the sanitizer's runtime preloaded (also used by
 * tests that run the demo agent). */
void tt_test_preload_sanitizer(void);

void tt_test_preload_sanitizer(void)
{
    const char *san = getenv("TT_SANITIZE");
    if (!san || !*san) {
        return;
    }
    const char *rt = strstr(san, "thread") ? "libtsan.so" : "libasan.so";
    char cmd[256], path[1024] = "";
    snprintf(cmd, sizeof cmd, "%s -print-file-name=%s", getenv("CC") ? getenv("CC") : "gcc", rt);
    FILE *p = popen(cmd, "r");
    CHECK_MSG(p != NULL, "cannot run %s", cmd);
    if (!fgets(path, sizeof path, p)) {
        path[0] = 0;
    }
    pclose(p);
    path[strcspn(path, "\n")] = 0;
    CHECK_MSG(path[0] == '/', "no sanitizer runtime %s: %s", rt, path);
    setenv("LD_PRELOAD", path, 1);
    if (strstr(san, "thread")) {
        /* The library starts its worker in a forked child: allowed (the fork test). */
        char opts[1024];
        const char *prev = getenv("TSAN_OPTIONS");
        snprintf(opts, sizeof opts, "%s%sdie_after_fork=0", prev ? prev : "", prev ? ":" : "");
        setenv("TSAN_OPTIONS", opts, 1);
    }
    if (strstr(san, "address")) {
        setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1:verify_asan_link_order=0", 1);
    }
}

void tt_test_pytest(const char *file, const char *function, const char *impl)
{
    const char *src = getenv("TT_SRCDIR");
    CHECK_MSG(src != NULL, "TT_SRCDIR is not set (run through make test)");
    CHECK_MSG(access(PYTHON, X_OK) == 0, "%s is missing: scripts/install-deps test", PYTHON);
    char node[1024], basetemp[1024], junit[1200];
    snprintf(node, sizeof node, "%s::%s", file, function);
    snprintf(basetemp, sizeof basetemp, "--basetemp=%s/pytest", tt_test_tmpdir());
    snprintf(junit, sizeof junit, "--junit-xml=%s/junit.xml", tt_test_tmpdir());
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (chdir(src) != 0) {
            _exit(126);
        }
        setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
        unsetenv("PYTHONPATH");
        setenv("TELLTALE_IMPL", impl, 1);
        tt_test_preload_sanitizer();
        execl(PYTHON, PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", basetemp,
              junit, node, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    /* pytest: 0 all passed, 1 some failed, 5 nothing collected (a stale test list). */
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "pytest %s: %s %d (5: not collected, 127: no python)", node,
              WIFEXITED(status) ? "exit" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    /* A pytest.skip() (a sanitizer that cannot run the test) is a skip here too, never a pass. */
    char path[1300], buf[65536];
    snprintf(path, sizeof path, "%s/junit.xml", tt_test_tmpdir());
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "pytest wrote no report at %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (strstr(buf, "<skipped")) {
        SKIP("pytest skipped %s (reason in the output above)", node);
    }
}

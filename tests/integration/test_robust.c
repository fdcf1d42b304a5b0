/*
 * test_robust.c - the collector under attack and fault (issue 13), against a real
 * `telltale serve` on loopback: one collector per data directory, HTTP that keeps answering
 * under thousands of connections and half-sent requests, a live stream whose slow or absent
 * readers never slow ingest and whose oversized fields are truncated, not fatal.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

static const char *bin(void)
{
    const char *b = getenv("TT_BIN");
    return b ? b : "build/telltale";
}

/* Run `telltale serve` with argv (NULL-terminated after "serve") to its exit, stderr into
 * err; returns the exit status, or -1 if it was still running after timeout_ms (then killed). */
static int run_serve(char *err, size_t errlen, double timeout_ms, const char *const *args)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 2);
        dup2(p[1], 1);
        close(p[0]);
        const char *argv[32];
        int n = 0;
        argv[n++] = bin();
        argv[n++] = "serve";
        for (; *args && n < 31; args++) {
            argv[n++] = *args;
        }
        argv[n] = NULL;
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    double t0 = tt_test_now_ms();
    int st = 0, done = 0;
    while (!done) {
        struct pollfd pf = {p[0], POLLIN, 0};
        if (poll(&pf, 1, 50) > 0) {
            ssize_t k = read(p[0], err + len, errlen - 1 - len);
            len += k > 0 ? (size_t)k : 0;
        }
        if (waitpid(pid, &st, WNOHANG) == pid) {
            done = 1;
        } else if (tt_test_now_ms() - t0 > timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            close(p[0]);
            err[len] = 0;
            return -1;
        }
    }
    ssize_t k;
    while (len < errlen - 1 && (k = read(p[0], err + len, errlen - 1 - len)) > 0) {
        len += (size_t)k;
    }
    close(p[0]);
    err[len] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* --- one collector per data directory ------------------------------------------------------ */

TEST_T(robust_second_collector_on_a_data_directory_refuses_naming_the_holder, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "locked", NULL);
    char sock[700], err[4096], pid[32];
    snprintf(sock, sizeof sock, "unix:%s/second.sock", s.dir);
    snprintf(pid, sizeof pid, "pid %d", (int)s.pid);
    const char *args[] = {"--data", s.dir, "--listen", sock, "--no-http", NULL};
    int rc = run_serve(err, sizeof err, 10000 * tt_test_mult(), args);
    CHECK_MSG(rc == 1, "second serve: status %d, said: %s", rc, err);
    CHECK_MSG(strstr(err, "in use by another collector") && strstr(err, pid),
              "the refusal names the holder (%s): %s", pid, err);
    /* The first one is untouched: still answering, its socket still there. */
    CHECK_EQ(tt_test_http(s.http, "GET", "/healthz", NULL, NULL), 200);
    struct stat sb;
    CHECK(stat(s.sock, &sb) == 0);
    /* Once it stops (or dies), the directory is free again: the lock is not a stale file. */
    tt_test_serve_kill(&s);
    tt_test_serve_restart(&s);
    CHECK_EQ(tt_test_http(s.http, "GET", "/healthz", NULL, NULL), 200);
    tt_test_serve_stop(&s);
}

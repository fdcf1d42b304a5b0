/*
 * test_make_run.c - `make run` as a new user meets it: scripts/run-demo (what `make run` runs)
 * starts the collector and the demo agent, and within 60 s the dashboard URL it prints (with the
 * operator token in its fragment) shows the demo agent live in a real browser
 * (tests/browser/make-run.test.mjs). The script's output is read from a pipe, so the token is
 * never written to a file here. The run's data go to
 * the test's directory and its ports are free ones, so it never meets a `make run` of the user.
 *
 * In sanitizer builds the demo agent is the C one (`telltale demo`): the Python agent would
 * load an instrumented library into an uninstrumented interpreter (the py_ tests preload the
 * runtime for that; this test checks the run script and the page, not the agent).
 */
#include "test.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

/* A TCP port on 127.0.0.1 that nothing listens on now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t n = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &n) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static double now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec * 1000.0 + (double)tv.tv_usec / 1000.0;
}

/* Read the script's output from fd until its "dashboard" line, within timeout_ms; copy the URL
 * into url. Everything read goes to out (at most cap bytes). 0 if found. */
static int read_dashboard_url(int fd, char *out, size_t cap, char *url, size_t urlcap,
                              double timeout_ms)
{
    size_t len = 0;
    double until = now_ms() + timeout_ms;
    out[0] = 0;
    while (now_ms() < until && len + 1 < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) {
            continue;
        }
        ssize_t n = read(fd, out + len, cap - 1 - len);
        if (n <= 0) {
            return -1;
        }
        len += (size_t)n;
        out[len] = 0;
        const char *d = strstr(out, "dashboard    http://");
        const char *eol = d ? strchr(d, '\n') : NULL;
        if (eol) {
            d += strlen("dashboard    ");
            snprintf(url, urlcap, "%.*s", (int)(eol - d), d);
            return 0;
        }
    }
    return -1;
}

TEST_T(make_run_shows_the_demo_agent_live_on_the_dashboard, 180)
{
    const char *src = env_or("TT_SRCDIR", ".");
    const char *build = env_or("TT_BUILD", "build");
    const char *san = getenv("TT_SANITIZE");
    CHECK_MSG(access("/usr/bin/chromium", X_OK) == 0,
              "/usr/bin/chromium is missing: scripts/install-deps test");
    char http[64], tcp[64], dir[4096], script[4096], runner[4096], started[64];
    snprintf(http, sizeof http, "127.0.0.1:%d", free_port());
    snprintf(tcp, sizeof tcp, "127.0.0.1:%d", free_port());
    snprintf(dir, sizeof dir, "%s/run-data", tt_test_tmpdir());
    snprintf(runner, sizeof runner, "%s/scripts/run-demo", src);
    snprintf(script, sizeof script, "%s/tests/browser/make-run.test.mjs", src);
    snprintf(started, sizeof started, "%.0f", now_ms());

    int out[2];
    CHECK(pipe2(out, O_CLOEXEC) == 0);
    pid_t run = fork();
    CHECK(run >= 0);
    if (run == 0) {
        setpgid(0, 0); /* a process group of its own, like a shell job */
        /* ... with the signals a user's interactive shell gives a job: if this test runs under
         * something that ignores SIGINT (a non-interactive `cmd &` starts it so), bash would
         * inherit that and could not trap Ctrl-C ("signals ignored upon entry cannot be
         * trapped"), and the script would never stop the demo agent. */
        signal(SIGINT, SIG_DFL);
        signal(SIGQUIT, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(out[1], STDOUT_FILENO);
        if (chdir(src) != 0) {
            _exit(126);
        }
        setenv("BUILD", build, 1);
        setenv("RUN_DIR", dir, 1);
        setenv("RUN_SECONDS", "150", 1);
        setenv("RUN_DRIFT_AFTER", "never", 1);
        setenv("TELLTALE_RUN_HTTP", http, 1);
        setenv("TELLTALE_RUN_TCP", tcp, 1);
        if (san && *san) {
            setenv("RUN_AGENT", "c", 1);
        }
        execl("/bin/bash", "bash", runner, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    printf("scripts/run-demo pid %d, dashboard http://%s/, data in %s\n", (int)run, http, dir);
    fflush(stdout);
    static char said[65536];
    char url[512] = "";
    int found = read_dashboard_url(out[0], said, sizeof said, url, sizeof url, 60000) == 0;
    if (!found) {
        kill(-run, SIGKILL);
        waitpid(run, NULL, 0);
    }
    CHECK_MSG(found, "scripts/run-demo printed no dashboard URL within 60 s:\n%s", said);
    /* The URL a user opens: the collector's address with the operator token in the fragment. */
    char prefix[128];
    snprintf(prefix, sizeof prefix, "http://%s/#token=", http);
    CHECK_MSG(strncmp(url, prefix, strlen(prefix)) == 0 && strlen(url) == strlen(prefix) + 64,
              "the printed dashboard URL is not http://%s/#token=<64 hex digits>", http);

    pid_t node = fork();
    CHECK(node >= 0);
    if (node == 0) {
        setenv("TT_RUN_HTTP", http, 1);
        setenv("TT_RUN_URL", url, 1);
        setenv("TT_RUN_STARTED_MS", started, 1);
        setenv("TT_RUN_WITHIN_S", "60", 1);
        setenv("TT_TEST_OUT", tt_test_outdir(), 1);
        execlp("node", "node", script, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(node, &st, 0) < 0) {
    }
    int node_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;

    /* Ctrl-C as the user would: SIGINT to the job's process group; the script stops the agent
     * and the collector. */
    kill(-run, SIGINT);
    int rst = 0;
    int waited = 0;
    while (waitpid(run, &rst, WNOHANG) == 0 && waited < 300) {
        usleep(100000);
        waited++;
    }
    if (waited >= 300) {
        kill(-run, SIGKILL); /* the whole job: an agent left behind would run on */
        waitpid(run, &rst, 0);
    }
    close(out[0]);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "tail -n 5 '%s/serve.log' '%s/agent.log'", dir, dir);
    CHECK(system(cmd) >= 0);
    CHECK_MSG(node_ok, "the dashboard did not show the demo agent live within 60 s (%s)",
              tt_test_outdir());
    CHECK_MSG(waited < 300, "scripts/run-demo did not stop within 30 s of Ctrl-C");
}

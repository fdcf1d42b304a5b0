/*
 * test_comply_console.c - the demo agent's blocked statement seen in the console: the Python
 * demo agent (python/telltale_demo, its policy loaded) drifts against a real `telltale serve`
 * and attempts a DELETE without WHERE, which its policy blocks before SQLite runs it; the
 * decision and the blocked step are found through the API, then a real browser
 * (tests/browser/comply.test.mjs) opens the session's view and finds the decision listed and
 * the step marked. The compliance incident of the block is there too.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

void tt_test_preload_sanitizer(void); /* tests/support/pytest.c */

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static int run_demo(const struct tt_test_serve *s)
{
    const char *src = env_or("TT_SRCDIR", "."), *build = env_or("TT_BUILD", "build");
    char lib[4096], pypath[4096], endpoint[800], log[4096];
    snprintf(lib, sizeof lib, "%s/libtelltale.so", build);
    snprintf(pypath, sizeof pypath, "%s/python", src);
    snprintf(endpoint, sizeof endpoint, "%s", s->endpoint);
    snprintf(log, sizeof log, "%s/agent.log", tt_test_outdir());
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setenv("TELLTALE_LIBRARY", lib, 1);
        setenv("PYTHONPATH", pypath, 1);
        setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
        tt_test_preload_sanitizer();
        if (!freopen(log, "w", stderr)) {
            _exit(126);
        }
        execl("/usr/bin/python3", "python3", "-m", "telltale_demo", "--endpoint", endpoint,
              "--agent", "demo-comply", "--rate", "100", "--turns", "20", "--seed", "4", "--drift",
              (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST_T(comply_console_shows_the_demo_agents_blocked_statement, 240)
{
    CHECK_MSG(access("/usr/bin/chromium", X_OK) == 0,
              "/usr/bin/chromium is missing: scripts/install-deps test");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "console", NULL);
    int rc = run_demo(&s);
    CHECK_MSG(rc == 0, "the demo agent exited with %d (log: %s/agent.log)", rc, tt_test_outdir());

    /* The blocked step and its decision, as the API has them. */
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET",
                          "/api/v1/events?agent=demo-comply&kind=log&min_severity=error&limit=1000",
                          NULL, &body),
             200);
    json_error_t e;
    json_t *doc = json_loads(body, 0, &e);
    CHECK_MSG(doc, "bad JSON: %s", e.text);
    free(body);
    json_t *evs = json_object_get(doc, "events"), *ev, *decision = NULL;
    size_t i;
    json_array_foreach(evs, i, ev)
    {
        json_t *a = json_object_get(ev, "attrs");
        const char *v = a ? json_string_value(json_object_get(a, "comply.verdict")) : NULL;
        if (v && strcmp(v, "block") == 0 && !decision) {
            decision = ev;
        }
    }
    CHECK_MSG(decision != NULL, "the drifting demo agent was never blocked (log: %s/agent.log)",
              tt_test_outdir());
    json_t *a = json_object_get(decision, "attrs");
    char session[256], step[32];
    snprintf(session, sizeof session, "%s",
             json_string_value(json_object_get(decision, "session")));
    snprintf(step, sizeof step, "%s", json_string_value(json_object_get(a, "step.id")));
    CHECK_STR(json_string_value(json_object_get(a, "comply.rule")), "destructive_sql");
    CHECK_EQ(strlen(step), 16);
    json_decref(doc);

    /* Its incident: critical, keyed by the rule. */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/incidents?agent=demo-comply", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"detector\":\"compliance\"") &&
                  strstr(body, "\"key\":\"destructive_sql\"") &&
                  strstr(body, "\"severity\":\"critical\""),
              "%s", body);
    free(body);

    const char *src = env_or("TT_SRCDIR", ".");
    char script[4096];
    snprintf(script, sizeof script, "%s/tests/browser/comply.test.mjs", src);
    setenv("TT_HTTP", s.http, 1);
    setenv("TT_TOKEN", tt_test_token(s.http), 1);
    setenv("TT_SESSION", session, 1);
    setenv("TT_STEP", step, 1);
    setenv("TT_TEST_OUT", tt_test_outdir(), 1);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        unsetenv("LD_PRELOAD");
        execlp("node", "node", script, (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    tt_test_serve_stop(&s);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "the browser test failed (log and failure.png in %s)", tt_test_outdir());
}

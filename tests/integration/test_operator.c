/*
 * test_operator.c - the operator's view against a real `telltale serve`: the operator token,
 * bad requests that get a JSON error and change nothing, a session's execution path as a tree,
 * /metrics accepted by promtool, `telltale top --once`, and what the CLI says when the collector
 * refuses it (a missing or wrong operator token, an agent without an ingest token).
 */
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

#define TOKEN "op-token-0123456789"

static int run(const char *cmd, char **out);

static void start_with_token(struct tt_test_serve *s, const char *name, const char *config)
{
    char tok[512];
    snprintf(tok, sizeof tok, "%s/%s.token", tt_test_tmpdir(), name);
    tt_test_write_file(tok, TOKEN "\n");
    if (config) {
        tt_test_serve_start(s, name, "--operator-token-file", tok, "--config", config, NULL);
    } else {
        tt_test_serve_start(s, name, "--operator-token-file", tok, NULL);
    }
}

/* An agent with a session: a model step holding two tool calls (one failing), a retrieval
 * step on its own, two responses, and three identical calls for the loop detector. */
static void demo_agent_q(const struct tt_test_serve *s, const char *agent, const char *loop_query)
{
    tt_client *c = tt_test_client(s->endpoint, agent, NULL);
    tt_step plan, search, fetch, lookup;
    CHECK_OK(tt_step_begin(c, &plan, NULL, TT_STEP_LLM, "demo-session", "plan", NULL));
    CHECK_OK(
        tt_step_begin(c, &search, &plan, TT_STEP_TOOL, "demo-session", "search", "weather paris"));
    CHECK_OK(tt_step_end(c, &search, TT_STATUS_OK, 512, NULL));
    CHECK_OK(tt_step_begin(c, &fetch, &plan, TT_STEP_TOOL, "demo-session", "fetch", "url=x"));
    CHECK_OK(tt_step_end(c, &fetch, TT_STATUS_TIMEOUT, -1, "timed out after 5 s"));
    CHECK_OK(tt_step_end(c, &plan, TT_STATUS_OK, 100, NULL));
    CHECK_OK(tt_step_begin(c, &lookup, NULL, TT_STEP_RETRIEVAL, "demo-session", "lookup", "k"));
    CHECK_OK(tt_test_emit_response(c, "demo-session", 0.9));
    CHECK_OK(tt_test_emit_response(c, "demo-session", 0.85));
    for (int i = 0; i < 3; i++) {
        tt_step st;
        CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "loop-session", "search", loop_query));
        CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    }
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_close(c, 5000));
}

static void demo_agent(const struct tt_test_serve *s, const char *agent)
{
    demo_agent_q(s, agent, "same");
}

static void loop_config(char *path, size_t n, const char *name)
{
    snprintf(path, n, "%s/%s.conf", tt_test_tmpdir(), name);
    tt_test_write_file(path, "[detector.looping]\ntype = loop\nrepeats = 3\n"
                             "[detector.conf]\ntype = drift\nsignal = confidence\nwarmup = 50\n");
}

/* Wait until the loop alert is stored. */
static void wait_alert(const struct tt_test_serve *s)
{
    for (int i = 0; i < 500; i++) {
        char *body;
        CHECK_EQ(tt_test_http_auth(s->http, "GET", "/api/v1/alerts", TOKEN, &body), 200);
        int found = strstr(body, "\"type\":\"loop\"") != NULL;
        free(body);
        if (found) {
            return;
        }
        usleep(20000);
    }
    CHECK_MSG(0, "the loop alert was never stored");
}

TEST(operator_token_guards_api_and_metrics_with_json_401)
{
    struct tt_test_serve s;
    start_with_token(&s, "token", NULL);
    static const char *const paths[] = {"/api/v1/agents",   "/api/v1/status",
                                        "/metrics",         "/api/v1/alerts",
                                        "/api/v1/sessions", "/api/v1/no-such-route"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char *body;
        CHECK_EQ(tt_test_http_auth(s.http, "GET", paths[i], NULL, &body), 401);
        CHECK(strstr(body, "\"status\":401") != NULL);
        free(body);
        CHECK_EQ(tt_test_http_auth(s.http, "GET", paths[i], "op-token-012345678", &body), 401);
        CHECK(strstr(body, "wrong operator token") != NULL);
        free(body);
        CHECK_EQ(tt_test_http_auth(s.http, "GET", paths[i], TOKEN "9", &body), 401);
        free(body);
    }
    char *body;
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/agents", TOKEN, &body), 200);
    CHECK(strstr(body, "Access-Control") == NULL);
    free(body);
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/healthz", NULL, &body), 200);
    free(body);
    CHECK_EQ(tt_test_http_auth(s.http, "POST", "/api/v1/alerts/1/ack", NULL, &body), 401);
    free(body);
    tt_test_serve_stop(&s);
}

TEST(operator_token_from_environment_and_bad_token_or_config_files_stop_startup)
{
    /* Each test runs in its own process: the environment is ours to change. */
    setenv("TELLTALE_OPERATOR_TOKEN", "env-token-7", 1);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "envtoken", NULL);
    char *body;
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/status", NULL, &body), 401);
    free(body);
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/status", "env-token-7", &body), 200);
    free(body);
    tt_test_serve_stop(&s);
    unsetenv("TELLTALE_OPERATOR_TOKEN");
    /* A token file holding a token with a space: refused at startup, exit status 1. */
    char tok[512], cmd[2048], *out;
    snprintf(tok, sizeof tok, "%s/bad.token", tt_test_tmpdir());
    tt_test_write_file(tok, "two words\n");
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s/badtok' --listen unix:'%s/badtok.sock' "
             "--http 127.0.0.1:0 --operator-token-file '%s' 2>&1",
             getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", tt_test_tmpdir(),
             tt_test_tmpdir(), tok);
    CHECK_EQ(run(cmd, &out), 1);
    CHECK_MSG(strstr(out, "operator token") != NULL, "%s", out);
    free(out);
    /* So does a bad alerting configuration, naming its line. */
    char conf[512];
    snprintf(conf, sizeof conf, "%s/bad.conf", tt_test_tmpdir());
    tt_test_write_file(conf, "[detector.x]\ntype = loop\nrepeats = many\n");
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s/badconf' --listen unix:'%s/badconf.sock' "
             "--http 127.0.0.1:0 --config '%s' 2>&1",
             getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", tt_test_tmpdir(),
             tt_test_tmpdir(), conf);
    CHECK_EQ(run(cmd, &out), 1);
    CHECK_MSG(strstr(out, "bad.conf:3: bad value for repeats") != NULL, "%s", out);
    free(out);
}

/* What a bad request must not change: stored frames and events, alerts and their states. */
static void snapshot(const char *db, char *out, size_t n)
{
    sqlite3 *h;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(h,
                             "SELECT (SELECT COUNT(*) FROM frames), (SELECT COUNT(*) FROM steps),"
                             " (SELECT COUNT(*) FROM alerts),"
                             " (SELECT COALESCE(SUM(acked_ns), 0) FROM alerts),"
                             " (SELECT COUNT(*) FROM agents)",
                             -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    snprintf(out, n, "%lld %lld %lld %lld %lld", sqlite3_column_int64(st, 0),
             sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
             sqlite3_column_int64(st, 4));
    sqlite3_finalize(st);
    sqlite3_close(h);
}

TEST(operator_bad_requests_get_json_errors_and_change_nothing)
{
    char cfg[512];
    loop_config(cfg, sizeof cfg, "bad");
    struct tt_test_serve s;
    start_with_token(&s, "bad", cfg);
    demo_agent(&s, "demo-agent");
    wait_alert(&s);
    char before[256], after[256];
    snapshot(s.db, before, sizeof before);
    /* 100 KB of query: ours to refuse (parameters are at most 1024 bytes). */
    char *huge = malloc(100100);
    memcpy(huge, "/api/v1/alerts?agent=", 21);
    memset(huge + 21, 'a', 100000);
    huge[100021] = 0;
    struct {
        const char *method, *path, *token;
        long status;
    } cases[] = {
        {"GET", "/api/v1/nothing", TOKEN, 404},
        {"GET", "/api/v1/sessions?limit=abc", TOKEN, 400},
        {"GET", "/api/v1/sessions?limit=0", TOKEN, 400},
        {"GET", "/api/v1/sessions?colour=red", TOKEN, 400},
        {"GET", "/api/v1/alerts?state=closed", TOKEN, 400},
        {"GET", "/api/v1/alerts?before=-1", TOKEN, 400},
        {"GET", "/api/v1/agents/nobody", TOKEN, 404},
        {"GET", "/api/v1/sessions/nope", TOKEN, 404},
        {"DELETE", "/api/v1/alerts", TOKEN, 405},
        {"POST", "/api/v1/alerts/abc/ack", TOKEN, 400},
        {"POST", "/api/v1/alerts/0/ack", TOKEN, 400},
        {"POST", "/api/v1/alerts/99999/ack", TOKEN, 404},
        {"POST", "/api/v1/alerts/1/ack?x=1", TOKEN, 400},
        {"POST", "/api/v1/alerts/1/ack", NULL, 401},
        {"POST", "/api/v1/alerts/1/ack", "wrong", 401},
        {"GET", "/metrics?x=1", TOKEN, 400},
        {"GET", "/api/v1/events?kind=alert", TOKEN, 400},
        {"GET", "/api/v1/stream?kind=nonsense", TOKEN, 400},
        {"GET", huge, TOKEN, 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body;
        long st = tt_test_http_auth(s.http, cases[i].method, cases[i].path, cases[i].token, &body);
        CHECK_MSG(st == cases[i].status, "%s %.60s: %ld, expected %ld (%s)", cases[i].method,
                  cases[i].path, st, cases[i].status, body);
        CHECK_MSG(body[0] == '{' && strstr(body, "\"error\":"), "%s %.60s: not a JSON error: %s",
                  cases[i].method, cases[i].path, body);
        free(body);
    }
    free(huge);
    /* Past libmicrohttpd's 256 KiB per-connection memory: it refuses the request line itself
     * with 414 and its own body, before any route (docs/http-api.md, "Access"). */
    char *giant = malloc(400100);
    memcpy(giant, "/api/v1/alerts?agent=", 21);
    memset(giant + 21, 'a', 400000);
    giant[400021] = 0;
    char *body;
    CHECK_EQ(tt_test_http_auth(s.http, "GET", giant, TOKEN, &body), 414);
    free(body);
    free(giant);
    snapshot(s.db, after, sizeof after);
    CHECK_STR(after, before);
    tt_test_serve_stop(&s);
}

TEST(operator_session_shows_execution_path_as_tree)
{
    struct tt_test_serve s;
    start_with_token(&s, "tree", NULL);
    demo_agent(&s, "demo-agent");
    char *body;
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/sessions?agent=demo-agent", TOKEN, &body),
             200);
    CHECK(strstr(body, "\"id\":\"demo-session\"") != NULL);
    CHECK(strstr(body, "\"id\":\"loop-session\"") != NULL);
    free(body);
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/sessions/demo-session", TOKEN, &body), 200);
    /* plan holds search and fetch, in order; lookup is a second root, still running. */
    const char *plan = strstr(body, "\"name\":\"plan\"");
    const char *search = strstr(body, "\"name\":\"search\"");
    const char *fetch = strstr(body, "\"name\":\"fetch\"");
    const char *lookup = strstr(body, "\"name\":\"lookup\"");
    CHECK(plan && search && fetch && lookup);
    CHECK(plan < search && search < fetch && fetch < lookup);
    CHECK(strstr(body, "\"kind\":\"llm\",\"name\":\"plan\"") != NULL);
    CHECK(strstr(body, "\"kind\":\"tool\",\"name\":\"search\",\"query\":\"weather paris\"") !=
          NULL);
    /* fetch timed out, and is a leaf (its trace ids come between its error and children) */
    const char *timeout = strstr(
        body, "\"status\":\"timeout\",\"result_bytes\":-1,\"error\":\"timed out after 5 s\"");
    CHECK(timeout != NULL && timeout > fetch && timeout < lookup);
    const char *kids = strstr(timeout, "\"children\":");
    CHECK(kids != NULL && kids < lookup && strncmp(kids, "\"children\":[]", 13) == 0);
    CHECK(strstr(lookup, "\"latency_ns\":null,\"status\":\"running\"") != NULL);
    /* The two tools are children of plan: its children array opens before search. */
    const char *children = strstr(plan, "\"children\":[");
    CHECK(children && children < search);
    CHECK(strstr(body, "\"steps_total\":4,\"steps_not_shown\":0") != NULL);
    /* The session's two responses, as 16-hex-digit ids. */
    const char *resp = strstr(body, "\"responses\":[\"");
    CHECK_MSG(resp != NULL, "%s", body);
    CHECK_MSG(resp[14 + 16] == '"' && resp[14 + 17] == ',' && resp[14 + 18] == '"', "%s", resp);
    CHECK(resp[14 + 36] == ']');
    free(body);
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/agents/demo-agent", TOKEN, &body), 200);
    CHECK(strstr(body, "\"name\":\"demo-agent\"") != NULL);
    /* Two tools, three loop calls and the retrieval: every external-call kind counts. */
    CHECK(strstr(body, "\"tool_calls\":6") != NULL);
    CHECK(strstr(body, "\"tool_errors\":1") != NULL);
    const char *conf = strstr(body, "\"confidence_last\":");
    CHECK(conf != NULL);
    CHECK_NEAR(strtod(conf + 18, NULL), 0.85, 1e-6);
    /* The default drift detectors show how far each is from an alert. */
    const char *det = strstr(body, "\"detector\":\"confidence_drift\"");
    CHECK_MSG(det != NULL, "%s", body);
    CHECK(strstr(det, "\"threshold\":25,") != NULL); /* DRIFT_CUSUM_DEFAULTS h */
    CHECK(strstr(det, "\"samples\":2}") != NULL);
    CHECK(strstr(body, "\"detector\":\"latency_drift\"") != NULL);
    free(body);
    tt_test_serve_stop(&s);
}

/* Run a shell command; its stdout into *out (malloc'd); returns the exit status. */
static int run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n, p)) > 0) {
        n += k;
    }
    buf[n] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(operator_metrics_pass_promtool_with_hostile_agent_names)
{
    char cfg[512];
    loop_config(cfg, sizeof cfg, "metrics");
    struct tt_test_serve s;
    start_with_token(&s, "metrics", cfg);
    demo_agent(&s, "demo-agent");
    demo_agent(&s, "quote\" back\\slash {x=\"y\"}");
    wait_alert(&s);
    char *body;
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/metrics", TOKEN, &body), 200);
    CHECK(strstr(body, "telltale_agent_events_total{agent=\"demo-agent\"}") != NULL);
    CHECK(strstr(body, "telltale_agent_tool_calls_total{agent=\"quote\\\" back\\\\slash "
                       "{x=\\\"y\\\"}\"} 6") != NULL);
    CHECK(strstr(body, "telltale_agent_confidence_bucket{agent=\"demo-agent\",le=\"0.95\"} 2") !=
          NULL);
    CHECK(strstr(body, "telltale_agent_tool_latency_seconds_count{agent=\"demo-agent\"} 5") !=
          NULL);
    CHECK(
        strstr(body, "telltale_agent_alerts_total{agent=\"demo-agent\",detector=\"looping\"} 1") !=
        NULL);
    CHECK(strstr(body, "telltale_store_commit_seconds_count") != NULL);
    CHECK(strstr(body, "telltale_rejected_total{reason=\"bad_crc\"} 0") != NULL);
    char path[600], cmd[1400], *out;
    snprintf(path, sizeof path, "%s/metrics.txt", tt_test_outdir());
    tt_test_write_file(path, body);
    free(body);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    int rc = run(cmd, &out);
    CHECK_MSG(rc == 0, "promtool check metrics: %d: %s", rc, out);
    free(out);
    tt_test_serve_stop(&s);
}

TEST(operator_top_once_prints_agents_and_alerts_without_control_sequences)
{
    char cfg[512];
    loop_config(cfg, sizeof cfg, "top");
    struct tt_test_serve s;
    start_with_token(&s, "top", cfg);
    demo_agent(&s, "demo-agent");
    demo_agent_q(&s, "other-agent", "evil\x1b]0;pwned\x07\x1b[31m");
    wait_alert(&s);
    char cmd[1400], *out;
    snprintf(cmd, sizeof cmd, "NO_COLOR=1 '%s' top --once --http %s --token %s --width 160",
             getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", s.http, TOKEN);
    CHECK_EQ(run(cmd, &out), 0);
    CHECK_MSG(strstr(out, "AGENT") && strstr(out, "CONF") && strstr(out, "ALERTS") &&
                  strstr(out, "DRIFT"),
              "%s", out);
    CHECK(strstr(out, "demo-agent") != NULL);
    CHECK_MSG(strstr(out, "evil?]0;pwned??[31m") != NULL, "%s", out);
    CHECK(strstr(out, "OPEN ALERTS") != NULL);
    CHECK(strstr(out, "looping") != NULL);
    CHECK(strchr(out, '\x1b') == NULL);
    CHECK(strchr(out, '\x07') == NULL);
    free(out);
    /* A narrow terminal: no line wider than 40 columns, RESP/S dropped. */
    snprintf(cmd, sizeof cmd, "NO_COLOR=1 '%s' top --once --http %s --token %s --width 40",
             getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", s.http, TOKEN);
    CHECK_EQ(run(cmd, &out), 0);
    CHECK(strstr(out, "RESP/S") == NULL);
    CHECK(strstr(out, "DRIFT") == NULL);
    for (char *line = out; *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        CHECK_MSG(len <= 40, "line of %zu columns: %.*s", len, (int)len, line);
        line = nl ? nl + 1 : line + len;
    }
    free(out);
    /* A wrong token: exit 1 and the collector's error. */
    snprintf(cmd, sizeof cmd, "'%s' top --once --http %s --token nope 2>&1",
             getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", s.http);
    CHECK_EQ(run(cmd, &out), 1);
    CHECK(strstr(out, "401") != NULL);
    free(out);
    tt_test_serve_stop(&s);
}

/* Every CLI verb that asks the HTTP API, run where no token is to be found (no telltale-data in
 * its directory, no TELLTALE_* variable): it exits 1, prints nothing on standard output, and its
 * error says where it looked and what to give; with a token file the collector refuses, it names
 * that file; given the collector's data directory (--data), it is answered. */
TEST(operator_cli_refused_says_where_the_token_was_sought_and_prints_no_data)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "cli401", NULL); /* its token generated in s.dir/operator.token */
    CHECK(s.token[0]);
    char dir[600], wrong[700], outp[700], errp[700];
    snprintf(dir, sizeof dir, "%s/elsewhere", tt_test_tmpdir());
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(wrong, sizeof wrong, "%s/wrong.token", tt_test_tmpdir());
    tt_test_write_file(wrong, "not-the-token\n");
    snprintf(outp, sizeof outp, "%s/out", tt_test_tmpdir());
    snprintf(errp, sizeof errp, "%s/err", tt_test_tmpdir());
    char bin[4096];
    CHECK(realpath(getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", bin));
    static const char *const verbs[] = {
        "query --agent a", "query --count",     "query --responses",   "tail --count 1",
        "top --once",      "halt --session s1", "resume --session s1",
    };
    char cmd[12000], *out, *err;
    for (size_t i = 0; i < sizeof verbs / sizeof *verbs; i++) {
        for (int with_file = 0; with_file < 2; with_file++) {
            snprintf(cmd, sizeof cmd,
                     "cd '%s' && env -u TELLTALE_TOKEN -u TELLTALE_TOKEN_FILE -u TELLTALE_DATA "
                     "'%s' %s --http %s %s%s >'%s' 2>'%s'",
                     dir, bin, verbs[i], s.http, with_file ? "--token-file " : "",
                     with_file ? wrong : "", outp, errp);
            CHECK_EQ(run(cmd, &out), 1);
            free(out);
            out = tt_test_read_file(outp);
            err = tt_test_read_file(errp);
            CHECK_MSG(out[0] == 0, "%s printed on stdout: %s", verbs[i], out);
            CHECK_MSG(strstr(err, "HTTP 401: "), "%s: %s", verbs[i], err);
            if (with_file) {
                CHECK_MSG(strstr(err, "refused the operator token from ") && strstr(err, wrong),
                          "%s: %s", verbs[i], err);
            } else {
                CHECK_MSG(strstr(err, "no telltale-data/operator.token") &&
                              strstr(err, "--data DIR"),
                          "%s: %s", verbs[i], err);
            }
            free(out);
            free(err);
        }
    }
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' query --count --http %s --data '%s'", dir, bin,
             s.http, s.dir);
    CHECK_EQ(run(cmd, &out), 0);
    CHECK_STR(out, "0\n");
    free(out);
    tt_test_serve_stop(&s);
}

/* `telltale emit` and `telltale demo` against a collector that refuses them (TCP without an
 * ingest token): each says why, from the library's tt_connection_error, while it runs or when
 * it gives up, instead of counting unacknowledged events in silence; the demo with its token
 * file is taken. */
TEST_T(operator_cli_emit_and_demo_say_why_the_collector_refuses_them, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "refuses", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens",
                        tt_test_tokens_file("demo", 1), NULL);
    char bin[4096], cmd[6000], *out;
    CHECK(realpath(getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", bin));
    snprintf(cmd, sizeof cmd,
             "echo '{\"kind\":\"log\",\"message\":\"m\"}' | '%s' emit --endpoint %s --agent e "
             "--timeout-ms 2000 2>&1",
             bin, s.tcp);
    CHECK_EQ(run(cmd, &out), 3);
    CHECK_MSG(strstr(out, "telltale emit: not connected: hello refused: ") &&
                  strstr(out, "ingest token") && strstr(out, "0 of 1 events acknowledged"),
              "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' demo --endpoint %s --duration 3 2>&1", bin, s.tcp);
    CHECK_EQ(run(cmd, &out), 0);
    CHECK_MSG(strstr(out, "telltale demo: not connected: hello refused: ") &&
                  strstr(out, " 0 acknowledged"),
              "%s", out);
    free(out);
    char tok[160], tokfile[700];
    tt_test_agent_token("demo", 0, tok, sizeof tok);
    snprintf(tokfile, sizeof tokfile, "%s/demo.token", tt_test_tmpdir());
    strcat(tok, "\n");
    tt_test_write_file(tokfile, tok);
    /* With the token, both are taken and say nothing of the kind. */
    snprintf(cmd, sizeof cmd, "'%s' demo --endpoint %s --duration 2 --token-file '%s' 2>&1", bin,
             s.tcp, tokfile);
    CHECK_EQ(run(cmd, &out), 0);
    CHECK_MSG(!strstr(out, "not connected") && !strstr(out, " 0 acknowledged"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "echo '{\"kind\":\"log\",\"message\":\"m\"}' | '%s' emit --endpoint %s --agent e "
             "--token-file '%s' 2>&1",
             bin, s.tcp, tokfile);
    CHECK_EQ(run(cmd, &out), 0);
    CHECK_MSG(!strstr(out, "not connected"), "%s", out);
    free(out);
    tt_test_serve_stop(&s);
}

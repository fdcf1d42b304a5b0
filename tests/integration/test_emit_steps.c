/*
 * test_emit_steps.c - `telltale emit` reports steps from JSON lines, as a shell script would:
 * a step_begin and its step_end become a stored step with its kind, name, query, session,
 * parent, status, error, result size and the latency between the two lines; bad step lines are
 * named and skipped, and a step left open at the end of the input is ended as cancelled.
 */
#include <jansson.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve.h"
#include "test.h"

#define MAX_EVENTS 32

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f, "cannot read %s", path);
    char *buf = malloc(1 << 16);
    CHECK(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static json_t *find(json_t **ev, size_t n, const char *kind, const char *key, const char *value)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(str(ev[i], "kind"), kind) == 0 && strcmp(str(ev[i], key), value) == 0) {
            return ev[i];
        }
    }
    return NULL;
}

static json_t *end_of(json_t **ev, size_t n, json_t *begin)
{
    CHECK(begin);
    json_t *end = find(ev, n, "step_end", "step_id", str(begin, "step_id"));
    CHECK_MSG(end, "no step_end for %s", str(begin, "name"));
    return end;
}

TEST_T(cli_emit_reports_steps_with_query_status_and_latency, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "serve", NULL);
    const char *bin = getenv("TT_BIN");
    char script[600], err[600], cmd[4096];
    snprintf(script, sizeof script, "%s/steps.sh", tt_test_tmpdir());
    snprintf(err, sizeof err, "%s/emit.err", tt_test_outdir());

    /* The lines arrive as a script writes them. */
    FILE *f = fopen(script, "w");
    CHECK(f);
    fputs("b() { printf '%s\\n' \"$1\"; }\n"
          "b '{\"kind\":\"step_begin\",\"id\":\"plan\",\"name\":\"plan\","
          "\"step_kind\":\"reasoning\",\"session\":\"sh-1\"}'\n"
          "b '{\"kind\":\"step_begin\",\"id\":\"t1\",\"name\":\"search\",\"parent\":\"plan\","
          "\"query\":\"weather in Lyon\",\"session\":\"sh-1\"}'\n"
          /* The tool call starts once emit has read the begin lines (their events are
           * stored): from then on it takes 0.3 s. */
          "i=0\n"
          "until [ \"$($TT_BIN query --http $TT_HTTP --agent sh --kind step_begin --count)\" "
          "= 2 ] || [ $i -ge 400 ]; do i=$((i + 1)); sleep 0.05; done\n"
          "sleep 0.3\n"
          "b '{\"kind\":\"step_end\",\"id\":\"t1\",\"result_bytes\":512}'\n"
          /* line 4: a step_end of no open step */
          "b '{\"kind\":\"step_end\",\"id\":\"t1\"}'\n"
          "b '{\"kind\":\"step_begin\",\"id\":\"t2\",\"name\":\"fetch\",\"step_kind\":\"api\","
          "\"parent\":\"plan\",\"session\":\"sh-1\"}'\n"
          /* lines 6-9: a duplicate id, a bad kind, a parent not open, attributes */
          "b '{\"kind\":\"step_begin\",\"id\":\"t2\",\"name\":\"again\"}'\n"
          "b '{\"kind\":\"step_begin\",\"id\":\"t3\",\"name\":\"x\",\"step_kind\":\"magic\"}'\n"
          "b '{\"kind\":\"step_begin\",\"id\":\"t4\",\"name\":\"x\",\"parent\":\"nope\"}'\n"
          "b '{\"kind\":\"step_begin\",\"id\":\"t5\",\"name\":\"x\",\"attrs\":{\"a\":1}}'\n"
          "b '{\"kind\":\"step_end\",\"id\":\"t2\",\"error\":\"HTTP 503\"}'\n"
          "b '{\"kind\":\"step_begin\",\"id\":\"t6\",\"name\":\"slow\",\"parent\":\"plan\"}'\n"
          "b '{\"kind\":\"step_end\",\"id\":\"t6\",\"status\":\"timeout\",\"error\":\"30 s\"}'\n"
          /* line 13: plan is never ended */
          "b '{\"kind\":\"log\",\"message\":\"done\",\"session\":\"sh-1\"}'\n",
          f);
    fclose(f);
    /* The script's `telltale query` finds the collector's operator token through the file. */
    snprintf(cmd, sizeof cmd,
             "TT_HTTP=%s TELLTALE_TOKEN_FILE=%s/operator.token sh %s | %s emit --endpoint %s "
             "--agent sh 2> %s",
             s.http, s.dir, script, bin, s.endpoint, err);
    CHECK_EQ(sh(cmd), 1); /* some lines were bad */
    char *e = slurp(err);
    for (int line = 4; line <= 9; line++) {
        if (line == 5) {
            continue; /* a good line */
        }
        char want[32];
        snprintf(want, sizeof want, "line %d:", line);
        CHECK_MSG(strstr(e, want), "%s not reported:\n%s", want, e);
    }
    CHECK_MSG(strstr(e, "line 5:") == NULL, "%s", e);
    CHECK_MSG(strstr(e, "already open") && strstr(e, "step_kind") && strstr(e, "not an open") &&
                  strstr(e, "no \"attrs\"") && strstr(e, "no open step"),
              "%s", e);
    CHECK_MSG(strstr(e, "line 1: step \"plan\" never ended"), "%s", e);
    free(e);

    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=sh&format=ndjson", NULL, &body),
             200);
    json_t *ev[MAX_EVENTS];
    size_t n = 0;
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
        CHECK(n < MAX_EVENTS);
        ev[n] = json_loads(line, 0, NULL);
        CHECK(ev[n]);
        n++;
    }
    free(body);
    CHECK_EQ(n, 9); /* 4 step begins, 4 step ends, 1 log */

    json_t *plan = find(ev, n, "step_begin", "name", "plan");
    json_t *search = find(ev, n, "step_begin", "name", "search");
    json_t *fetch = find(ev, n, "step_begin", "name", "fetch");
    json_t *slow = find(ev, n, "step_begin", "name", "slow");
    CHECK(plan && search && fetch && slow);
    CHECK_STR(str(plan, "step_kind"), "reasoning");
    CHECK_STR(str(plan, "session"), "sh-1");
    CHECK_STR(str(search, "step_kind"), "tool"); /* the default */
    CHECK_STR(str(search, "query"), "weather in Lyon");
    CHECK_STR(str(search, "parent_id"), str(plan, "step_id"));
    CHECK_STR(str(fetch, "step_kind"), "api");
    CHECK_STR(str(fetch, "parent_id"), str(plan, "step_id"));

    json_t *e1 = end_of(ev, n, search);
    CHECK_STR(str(e1, "status"), "ok");
    CHECK_EQ(json_integer_value(json_object_get(e1, "result_bytes")), 512);
    /* The latency is the time between the two lines: at least the script's 0.3 s. */
    json_int_t lat = json_integer_value(json_object_get(e1, "duration_ns"));
    CHECK_MSG(lat >= 300000000 && lat < 60000000000LL, "latency %lld ns", (long long)lat);
    json_t *e2 = end_of(ev, n, fetch);
    CHECK_STR(str(e2, "status"), "error"); /* implied by "error" */
    CHECK_STR(str(e2, "error"), "HTTP 503");
    CHECK_EQ(json_integer_value(json_object_get(e2, "result_bytes")), -1);
    json_t *e3 = end_of(ev, n, slow);
    CHECK_STR(str(e3, "status"), "timeout");
    CHECK_STR(str(e3, "error"), "30 s");
    json_t *e4 = end_of(ev, n, plan);
    CHECK_STR(str(e4, "status"), "cancelled");
    CHECK_STR(str(e4, "error"), "the input ended before its step_end");
    for (size_t i = 0; i < n; i++) {
        json_decref(ev[i]);
    }
    tt_test_serve_stop(&s);
}

static int64_t num(json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

TEST_T(cli_emit_records_a_step_that_already_ran_from_one_line_with_its_latency, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "serve", NULL);
    const char *bin = getenv("TT_BIN");
    char in[600], err[600], cmd[4096];
    snprintf(in, sizeof in, "%s/steps.jsonl", tt_test_tmpdir());
    snprintf(err, sizeof err, "%s/emit.err", tt_test_outdir());
    FILE *f = fopen(in, "w");
    CHECK(f);
    fputs("{\"kind\":\"step_begin\",\"id\":\"job\",\"name\":\"nightly\",\"step_kind\":\"agent\","
          "\"session\":\"cron-1\"}\n"
          "{\"kind\":\"step\",\"name\":\"grep\",\"query\":\"-r TODO src\",\"status\":\"ok\","
          "\"latency_ms\":250,\"result_bytes\":2048,\"session\":\"cron-1\",\"parent\":\"job\"}\n"
          "{\"kind\":\"step\",\"name\":\"curl\",\"step_kind\":\"api\",\"latency_ms\":1500.5,"
          "\"error\":\"HTTP 503\",\"session\":\"cron-1\"}\n"
          /* lines 4-8: no latency, a negative one, not a number, beyond 7 days, no open
           * parent */
          "{\"kind\":\"step\",\"name\":\"x\"}\n"
          "{\"kind\":\"step\",\"name\":\"x\",\"latency_ms\":-1}\n"
          "{\"kind\":\"step\",\"name\":\"x\",\"latency_ms\":\"fast\"}\n"
          "{\"kind\":\"step\",\"name\":\"x\",\"latency_ms\":604800001}\n"
          "{\"kind\":\"step\",\"name\":\"x\",\"latency_ms\":1,\"parent\":\"nope\"}\n"
          "{\"kind\":\"step_end\",\"id\":\"job\"}\n",
          f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s emit --endpoint %s --agent cron < %s 2> %s", bin, s.endpoint, in,
             err);
    CHECK_EQ(sh(cmd), 1); /* some lines were bad, the others stored */
    char *e = slurp(err);
    for (int line = 4; line <= 8; line++) {
        char want[32];
        snprintf(want, sizeof want, "line %d:", line);
        CHECK_MSG(strstr(e, want), "%s not reported:\n%s", want, e);
    }
    CHECK_MSG(!strstr(e, "line 2:") && !strstr(e, "line 3:") && !strstr(e, "line 9:"), "%s", e);
    CHECK_MSG(strstr(e, "needs \"name\" and \"latency_ms\"") && strstr(e, "7 days") &&
                  strstr(e, "not an open step"),
              "%s", e);
    free(e);

    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=cron&format=ndjson", NULL, &body),
             200);
    json_t *ev[MAX_EVENTS];
    size_t n = 0;
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
        CHECK(n < MAX_EVENTS);
        ev[n] = json_loads(line, 0, NULL);
        CHECK(ev[n]);
        n++;
    }
    free(body);
    CHECK_EQ(n, 6); /* 3 steps, each a begin and an end */
    json_t *job = find(ev, n, "step_begin", "name", "nightly");
    json_t *grep = find(ev, n, "step_begin", "name", "grep");
    json_t *curl = find(ev, n, "step_begin", "name", "curl");
    CHECK(job && grep && curl);
    CHECK_STR(str(grep, "step_kind"), "tool"); /* the default */
    CHECK_STR(str(grep, "query"), "-r TODO src");
    CHECK_STR(str(grep, "session"), "cron-1");
    CHECK_STR(str(grep, "parent_id"), str(job, "step_id"));
    CHECK_STR(str(curl, "step_kind"), "api");
    json_t *ge = end_of(ev, n, grep);
    CHECK_STR(str(ge, "status"), "ok");
    CHECK_EQ(num(ge, "result_bytes"), 2048);
    CHECK_STR(str(ge, "name"), "grep");
    /* The latency is the one given (the clock's rate converts it to ticks and back). */
    int64_t lat = num(ge, "duration_ns");
    CHECK_MSG(lat >= 249000000 && lat <= 251000000, "latency %lld ns", (long long)lat);
    /* The step began that long before it ended: its begin is backdated. */
    int64_t span = num(ge, "time_unix_ns") - num(grep, "time_unix_ns");
    CHECK_MSG(span >= 245000000 && span <= 255000000, "begin %lld ns before the end",
              (long long)span);
    json_t *ce = end_of(ev, n, curl);
    CHECK_STR(str(ce, "status"), "error"); /* implied by "error" */
    CHECK_STR(str(ce, "error"), "HTTP 503");
    CHECK_EQ(num(ce, "result_bytes"), -1);
    lat = num(ce, "duration_ns");
    CHECK_MSG(lat >= 1499500000 && lat <= 1501500000, "latency %lld ns", (long long)lat);
    json_t *je = end_of(ev, n, job);
    CHECK_STR(str(je, "status"), "ok");
    for (size_t i = 0; i < n; i++) {
        json_decref(ev[i]);
    }
    tt_test_serve_stop(&s);
}

/*
 * test_resume.c - halt and resume end to end against a real `telltale serve` with a real agent
 * (libtelltale): a halted session's responses are halted (sticky) while its steps still reach
 * the store; a resume (HTTP route and `telltale resume`) lets the session's next responses pass;
 * the orders are audited in the collector's log; the races: a resume before any halt, a halt of
 * the whole agent then a resume of one session, a resume of the whole agent, and a halt that
 * survives the agent's reconnection and is lifted over the new connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *bin(void)
{
    const char *b = getenv("TT_BIN");
    return b ? b : "build/telltale";
}

/* POST /api/v1/{what}/{name}/{verb} {"reason": reason}: the status; the body must name conns
 * connections in all when the status is 202. */
static long order(struct tt_test_serve *s, const char *what, const char *name, const char *verb,
                  const char *reason, int conns)
{
    char path[512], req[256], *body = NULL, want[64];
    snprintf(path, sizeof path, "/api/v1/%s/%s/%s", what, name, verb);
    snprintf(req, sizeof req, "{\"reason\": \"%s\"}", reason);
    long st = tt_test_http(s->http, "POST", path, req, &body);
    if (st == 202) {
        snprintf(want, sizeof want, "\"connections\":%d}", conns);
        const char *last = NULL, *q = body;
        while ((q = strstr(q, "\"connections\":")) != NULL) {
            last = q++;
        }
        CHECK_MSG(last && strcmp(last, want) == 0, "%s %s: %s", path, want, body ? body : "");
        char ord[32];
        snprintf(ord, sizeof ord, "\"order\":\"%s\"", verb);
        CHECK_MSG(strstr(body, ord), "%s", body);
    }
    free(body);
    return st;
}

/* One response of n tokens in session: the verdict of its first token, the summary's in *sum. */
static tt_verdict one_response(tt_client *c, const char *session, int n, tt_response_summary *sum)
{
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, session, "m", NULL, 0));
    tt_verdict first = TT_PASS;
    for (int i = 0; i < n; i++) {
        tt_verdict v;
        CHECK_OK(tt_response_token_logprobs(r, i, -0.05f, NULL, NULL, 0, &v, NULL));
        if (i == 0) {
            first = v;
        }
        CHECK_MSG(v == first, "token %d: verdict %d after %d", i, v, first);
    }
    CHECK_OK(tt_response_end(r, sum));
    return first;
}

/* Orders reach the agent's worker asynchronously: new responses until one's first token gives
 * want (within 10 s); the count of responses it took. */
static int until_verdict(tt_client *c, const char *session, tt_verdict want)
{
    double t0 = tt_test_now_ms();
    for (int k = 1;; k++) {
        tt_response_summary sum;
        if (one_response(c, session, 3, &sum) == want) {
            CHECK_EQ(sum.verdict, want);
            return k;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * tt_test_mult(), "no verdict %d in %s", want,
                  session);
        usleep(2000);
    }
}

/* A step in session, begun and ended: both calls must succeed. */
static void step(tt_client *c, const char *session, const char *name)
{
    tt_step st;
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, session, name, "q"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 10, NULL));
}

static long count(struct tt_test_serve *s, const char *query)
{
    char path[512], *body = NULL;
    snprintf(path, sizeof path, "/api/v1/events/count?%s", query);
    CHECK_EQ(tt_test_http(s->http, "GET", path, NULL, &body), 200);
    const char *p = strstr(body, "\"count\":");
    CHECK_MSG(p, "%s", body);
    long n = strtol(p + 8, NULL, 10);
    free(body);
    return n;
}

static int log_has(const struct tt_test_serve *s, const char *text)
{
    FILE *f = fopen(s->log, "r");
    CHECK_MSG(f, "cannot read %s", s->log);
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        found = strstr(line, text) != NULL;
    }
    fclose(f);
    return found;
}

TEST_T(halted_session_resumes_and_its_new_steps_and_responses_reach_the_store, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "resume", NULL);
    tt_client *c = tt_test_client(s.endpoint, "resumer", NULL);
    uint8_t inst[16];
    CHECK_OK(tt_instance_id(c, inst));
    tt_response_summary sum;
    CHECK_EQ(one_response(c, "rs-1", 5, &sum), TT_PASS);
    step(c, "rs-1", "before");
    CHECK_OK(tt_flush(c, 20000)); /* the session is known to the collector */

    CHECK_EQ(order(&s, "sessions", "rs-1", "halt", "look first", 1), 202);
    until_verdict(c, "rs-1", TT_HALT);
    /* Sticky: every later response of the session is halted at its first token, with the
     * operator's reason; steps are not refused. */
    CHECK_EQ(one_response(c, "rs-1", 4, &sum), TT_HALT);
    CHECK_STR(sum.reason, "operator halt: look first");
    step(c, "rs-1", "while-halted");
    /* Another session of the same agent is not halted. */
    CHECK_EQ(one_response(c, "rs-other", 4, &sum), TT_PASS);

    CHECK_EQ(order(&s, "sessions", "rs-1", "resume", "checked", 1), 202);
    until_verdict(c, "rs-1", TT_PASS);
    CHECK_EQ(one_response(c, "rs-1", 8, &sum), TT_PASS);
    CHECK_STR(sum.reason, "");
    step(c, "rs-1", "after");
    CHECK_OK(tt_flush(c, 20000));

    /* The store: three steps of the session, halted and passed responses in it. */
    CHECK_EQ(count(&s, "session=rs-1&kind=step_end"), 3);
    CHECK(count(&s, "session=rs-1&kind=guard") >= 2);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?session=rs-1&limit=1", NULL, &body),
             200);
    CHECK_MSG(strstr(body, "\"verdict\":\"pass\"") && strstr(body, "\"tokens\":8"), "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?session=rs-1", NULL, &body), 200);
    CHECK_MSG(strstr(body, "operator halt: look first"), "%s", body);
    free(body);

    /* Audited in the collector's log, escaped. */
    CHECK(log_has(&s, "operator halt of session \"rs-1\" (reason \"look first\"): sent to 1 "
                      "agent(s), 1 connection(s)"));
    CHECK(log_has(&s, "operator resume of session \"rs-1\" (reason \"checked\")"));

    /* Counters: everything emitted was stored once, nothing dropped. */
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.buffered, 0);
    CHECK_EQ_U64(st.acked, st.emitted);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(sc.gaps, 0);
    CHECK_OK(tt_close(c, 5000));
    tt_test_serve_stop(&s);
}

TEST_T(resume_races_and_agent_wide_orders, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "resumerace", NULL);
    tt_client *c = tt_test_client(s.endpoint, "racer", NULL);
    tt_response_summary sum;
    CHECK_EQ(one_response(c, "ra", 2, &sum), TT_PASS);
    CHECK_EQ(one_response(c, "rb", 2, &sum), TT_PASS);
    CHECK_OK(tt_flush(c, 20000));

    /* A resume before any halt changes nothing: the halt that follows it halts. Orders go out
     * in the order they were given. */
    CHECK_EQ(order(&s, "sessions", "ra", "resume", "early", 1), 202);
    CHECK_EQ(order(&s, "sessions", "ra", "halt", "late", 1), 202);
    until_verdict(c, "ra", TT_HALT);
    CHECK_EQ(one_response(c, "ra", 2, &sum), TT_HALT);

    /* A halt then a resume sent back to back: the session ends resumed. */
    CHECK_EQ(order(&s, "sessions", "rb", "halt", "x", 1), 202);
    CHECK_EQ(order(&s, "sessions", "rb", "resume", "y", 1), 202);
    CHECK_OK(tt_flush(c, 20000)); /* a round trip: both orders have arrived */
    CHECK_EQ(one_response(c, "rb", 2, &sum), TT_PASS);

    /* A halt of the whole agent halts the responses open now, not later ones; a resume of one
     * session does not revive a response it already halted. */
    tt_response *open;
    tt_verdict v;
    CHECK_OK(tt_response_begin(c, &open, "rb", "m", NULL, 0));
    CHECK_OK(tt_response_token_logprobs(open, 0, -0.05f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_PASS);
    CHECK_EQ(order(&s, "agents", "racer", "halt", "all stop", 1), 202);
    double t0 = tt_test_now_ms();
    for (int i = 1; v == TT_PASS; i++) {
        CHECK_OK(tt_response_token_logprobs(open, i, -0.05f, NULL, NULL, 0, &v, NULL));
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * tt_test_mult(), "agent halt not seen");
        usleep(1000);
    }
    CHECK_EQ(v, TT_HALT);
    CHECK_EQ(order(&s, "sessions", "rb", "resume", "one", 1), 202);
    CHECK_OK(tt_flush(c, 20000));
    CHECK_OK(tt_response_token_logprobs(open, 1000, -0.05f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_HALT); /* a halted response stays halted */
    CHECK_OK(tt_response_end(open, &sum));
    CHECK_STR(sum.reason, "operator halt: all stop");
    CHECK_EQ(one_response(c, "rb", 2, &sum), TT_PASS); /* the agent halt is not sticky */
    CHECK_EQ(one_response(c, "ra", 2, &sum), TT_HALT); /* ra's own halt still holds */

    /* A resume of the whole agent lifts every session halt (here ra's), with the CLI. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s resume --http %s --data %s --agent racer > /dev/null", bin(),
             s.http, s.dir);
    CHECK_EQ(sh(cmd), 0);
    until_verdict(c, "ra", TT_PASS);
    CHECK(log_has(&s, "operator halt of agent \"racer\" (reason \"all stop\"): sent to 1 "
                      "agent(s), 1 connection(s)"));
    CHECK(log_has(&s, "operator resume of agent \"racer\" (reason \"no reason given\")"));

    /* A halt lives in the agent's process: it holds across a reconnection, and the resume
     * reaches the new connection. */
    CHECK_EQ(order(&s, "sessions", "ra", "halt", "across", 1), 202);
    until_verdict(c, "ra", TT_HALT);
    tt_test_serve_stop(&s);
    tt_test_serve_restart(&s);
    CHECK_EQ(one_response(c, "ra", 2, &sum), TT_HALT);
    CHECK_OK(tt_flush(c, 20000)); /* reconnected */
    snprintf(cmd, sizeof cmd,
             "%s resume --http %s --data %s --session ra --reason 'after restart' > /dev/null",
             bin(), s.http, s.dir);
    CHECK_EQ(sh(cmd), 0);
    until_verdict(c, "ra", TT_PASS);
    CHECK_OK(tt_close(c, 5000));
    tt_test_serve_stop(&s);
}

TEST(resume_routes_and_cli_refuse_bad_input)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "resumebad", NULL);
    tt_client *c = tt_test_client(s.endpoint, "bad", NULL);
    tt_log(c, "known", TT_INFO, "hello", NULL, 0);
    CHECK_OK(tt_flush(c, 20000));
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/sessions/nobody/resume", "{}", &body), 404);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/sessions/known/resume", "{\"why\": 1}", &body),
             400);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/sessions/known/resume?x=1", "{}", &body), 400);
    free(body);
    /* An agent that is not connected: accepted, reaching no connection. */
    CHECK_EQ(order(&s, "agents", "ghost", "resume", "r", 0), 202);
    CHECK_EQ(order(&s, "sessions", "known", "resume", "r", 1), 202);
    /* The operator's text reaches the log escaped: no forged line, no raw quote. */
    CHECK_EQ(order(&s, "sessions", "known", "resume", "two\\ntelltale: forged \\\"q\\\"", 1), 202);
    CHECK(log_has(&s, "(reason \"two\\u000atelltale: forged \\\"q\\\"\"): sent to 1 agent(s)"));
    CHECK(!log_has(&s, "forged \"q\")")); /* what a raw reason would have written */
    /* Without the operator token: 401, and nothing is sent. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "curl -s -o /dev/null -w '%%{http_code}' -X POST -H 'Content-Type: application/json' "
             "-d '{}' http://%s/api/v1/sessions/known/resume | grep -qx 401",
             s.http);
    CHECK_EQ(sh(cmd), 0);
    /* The CLI: usage errors, unknown session, help, an unconnected agent. */
    snprintf(cmd, sizeof cmd, "%s resume --http %s --data %s > /dev/null 2>&1", bin(), s.http,
             s.dir);
    CHECK_EQ(sh(cmd), 2);
    snprintf(cmd, sizeof cmd,
             "%s resume --http %s --data %s --session a --agent b > /dev/null 2>&1", bin(), s.http,
             s.dir);
    CHECK_EQ(sh(cmd), 2);
    snprintf(cmd, sizeof cmd, "%s resume --http %s --data %s --session nobody 2> /dev/null", bin(),
             s.http, s.dir);
    CHECK_EQ(sh(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s resume --http %s --data %s --agent ghost > /dev/null 2>&1", bin(),
             s.http, s.dir);
    CHECK_EQ(sh(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s resume --help | grep -q 'telltale resume'", bin());
    CHECK_EQ(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s --help | grep -q 'resume'", bin());
    CHECK_EQ(sh(cmd), 0);
    CHECK_OK(tt_close(c, 5000));
    tt_test_serve_stop(&s);
    snprintf(cmd, sizeof cmd, "%s resume --http %s --data %s --session x 2> /dev/null", bin(),
             s.http, s.dir);
    CHECK_EQ(sh(cmd), 3); /* unreachable */
}

/*
 * test_otlp_export.c - OTLP/HTTP export (docs/otel.md, "Export") of a real `telltale serve`
 * to a receiver the test starts on loopback (tests/otel/receive.mjs), which decodes each request
 * with the OpenTelemetry project's own protobuf definitions (the generated code of
 * @opentelemetry/otlp-transformer from npm), not telltale's: a native agent's steps and
 * responses arrive as spans with the ids, names and GenAI attributes the API returns, logs and
 * metrics with their values; a receiver answering 503 with Retry-After gets everything once; a
 * 400 drops what it refused, counted, while ingest goes on; a receiver that is down leaves the
 * queue within its bound and every dropped item counted.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve.h"
#include "telltale.h"
#include "test.h"

struct receiver {
    pid_t pid;
    int port;
    char out[4096];
};

/* Start tests/otel/receive.mjs with an answer plan (receive.mjs's PLAN). */
static void receiver_start(struct receiver *r, const char *name, const char *plan)
{
    const char *src = getenv("TT_SRCDIR") && *getenv("TT_SRCDIR") ? getenv("TT_SRCDIR") : ".";
    char script[4096];
    snprintf(script, sizeof script, "%s/tests/otel/receive.mjs", src);
    snprintf(r->out, sizeof r->out, "%s/%s.jsonl", tt_test_outdir(), name); /* kept */
    unlink(r->out);
    int fds[2];
    CHECK(pipe(fds) == 0);
    r->pid = fork();
    CHECK(r->pid >= 0);
    if (r->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execlp("node", "node", script, r->out, plan, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    CHECK(f);
    char line[256] = "";
    CHECK_MSG(fgets(line, sizeof line, f) && sscanf(line, "{\"port\":%d}", &r->port) == 1,
              "receive.mjs did not start (tests/otel/node_modules missing?): %s", line);
    fclose(f);
}

static void receiver_stop(struct receiver *r)
{
    kill(r->pid, SIGTERM);
    int st;
    waitpid(r->pid, &st, 0);
}

/* Every request the receiver took so far, as a JSON array. */
static json_t *receiver_requests(const struct receiver *r)
{
    json_t *all = json_array();
    FILE *f = fopen(r->out, "r");
    if (!f) {
        return all;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        CHECK_MSG(j, "receiver line not JSON: %s", line);
        CHECK_MSG(!json_object_get(j, "error"),
                  "the OpenTelemetry definitions refused a request: %s", line);
        json_array_append_new(all, j);
    }
    free(line);
    fclose(f);
    return all;
}

/* The items of every request on path answered with status (0: any), in one array. */
static json_t *items_of(json_t *reqs, const char *path, int status)
{
    json_t *out = json_array();
    size_t i;
    json_t *rq;
    json_array_foreach(reqs, i, rq)
    {
        if (strcmp(json_string_value(json_object_get(rq, "path")), path) != 0 ||
            (status && json_integer_value(json_object_get(rq, "status")) != status)) {
            continue;
        }
        json_array_extend(out, json_object_get(rq, "items"));
    }
    return out;
}

static json_t *api_json(const char *http, const char *path)
{
    char *body = NULL;
    long st = tt_test_http(http, "GET", path, NULL, &body);
    CHECK_MSG(st == 200, "GET %s: %ld %s", path, st, body);
    json_error_t err;
    json_t *j = json_loads(body, 0, &err);
    CHECK_MSG(j, "GET %s: not JSON: %s", path, body);
    free(body);
    return j;
}

/* /api/v1/status's otlp_export object (a new reference). */
static json_t *export_status(const char *http)
{
    json_t *st = api_json(http, "/api/v1/status");
    json_t *e = json_object_get(st, "otlp_export");
    CHECK_MSG(e, "no otlp_export in /api/v1/status");
    json_incref(e);
    json_decref(st);
    return e;
}

static uint64_t exported(json_t *e, const char *signal)
{
    return (uint64_t)json_integer_value(json_object_get(json_object_get(e, "exported"), signal));
}

static uint64_t dropped(json_t *e, const char *signal, const char *reason)
{
    json_t *d = json_object_get(json_object_get(e, "dropped"), signal);
    if (reason) {
        return (uint64_t)json_integer_value(json_object_get(d, reason));
    }
    uint64_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(d, k, v)
    {
        n += (uint64_t)json_integer_value(v);
    }
    return n;
}

/* Wait until the exporter has nothing queued and has accounted for spans, logs and points
 * (exported + dropped); fails after timeout_ms. Returns the status object. */
static json_t *wait_accounted(const char *http, uint64_t spans, uint64_t logs, uint64_t points,
                              double timeout_ms)
{
    double t0 = tt_test_now_ms();
    for (;;) {
        json_t *e = export_status(http);
        uint64_t s = exported(e, "spans") + dropped(e, "spans", NULL);
        uint64_t l = exported(e, "logs") + dropped(e, "logs", NULL);
        uint64_t p = exported(e, "points") + dropped(e, "points", NULL);
        if (s >= spans && l >= logs && p >= points &&
            json_integer_value(json_object_get(e, "queue_batches")) == 0) {
            return e;
        }
        if (tt_test_now_ms() - t0 > timeout_ms) {
            char *d = json_dumps(e, 0);
            CHECK_MSG(0, "export not accounted for in time: %s", d);
        }
        json_decref(e);
        usleep(50000);
    }
}

static json_t *span_by_id(json_t *spans, const char *span_id)
{
    size_t i;
    json_t *s;
    json_t *found = NULL;
    json_array_foreach(spans, i, s)
    {
        if (!strcmp(json_string_value(json_object_get(s, "spanId")), span_id)) {
            CHECK_MSG(!found, "span %s exported twice", span_id);
            found = s;
        }
    }
    CHECK_MSG(found, "no span %s exported", span_id);
    return found;
}

static const char *attr_s(json_t *o, const char *key)
{
    json_t *v = json_object_get(json_object_get(o, "attributes"), key);
    CHECK_MSG(json_is_string(v), "attribute %s missing or not a string", key);
    return json_string_value(v);
}

static double attr_n(json_t *o, const char *key)
{
    json_t *v = json_object_get(json_object_get(o, "attributes"), key);
    CHECK_MSG(json_is_number(v), "attribute %s missing or not a number", key);
    return json_number_value(v);
}

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

/* A step's object in a session's steps (nested under "children"), by its step id. */
static json_t *find_step(json_t *steps, const char *id)
{
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s)
    {
        if (!strcmp(str(s, "step_id"), id)) {
            return s;
        }
        json_t *c = find_step(json_object_get(s, "children"), id);
        if (c) {
            return c;
        }
    }
    return NULL;
}

#define TP_TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define TP_PARENT "00f067aa0ba902b7"
#define TP "00-" TP_TRACE "-" TP_PARENT "-01"

static void emit_turn(tt_client *c, const char *session, tt_step *root, tt_step *tool, tt_step *llm,
                      uint64_t *rid)
{
    CHECK_OK(tt_step_begin_ctx(c, root, NULL, TP, TT_STEP_AGENT, session, "turn", NULL));
    CHECK_OK(tt_step_begin(c, tool, root, TT_STEP_TOOL, session, "search", "weather in Oslo"));
    CHECK_OK(tt_step_end(c, tool, TT_STATUS_ERROR, 42, "timed out upstream"));
    CHECK_OK(tt_step_begin(c, llm, root, TT_STEP_LLM, session, "answer", NULL));
    tt_response *r = NULL;
    tt_attr params[] = {{"temperature", TT_ATTR_DOUBLE, {.d = 0.5}}};
    CHECK_OK(tt_response_begin_in(c, &r, llm, session, "tiny-model", params, 1));
    *rid = tt_response_id(r);
    float lp[3] = {-0.1f, -2.5f, -0.3f};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(tt_response_token_logprobs(r, i + 7, lp[i], NULL, NULL, 0, NULL, NULL));
    }
    CHECK_OK(tt_response_end(r, NULL));
    CHECK_OK(tt_step_end(c, llm, TT_STATUS_OK, 10, NULL));
    CHECK_OK(tt_step_end(c, root, TT_STATUS_OK, 0, NULL));
    tt_attr la[] = {{"city", TT_ATTR_STR, {.s = "Oslo"}}};
    CHECK_OK(tt_log(c, session, TT_WARN, "upstream slow", la, 1));
    CHECK_OK(tt_metric(c, session, TT_GAUGE, "queue.depth", 17.5, "items", NULL, 0));
}

TEST_T(otlp_export_spans_logs_and_metrics_decode_with_opentelemetry_definitions, 90)
{
    struct receiver rcv;
    receiver_start(&rcv, "recv-ok", "200");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rcv.port);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "export-ok", "--otlp-export", url, NULL);
    tt_client *c = tt_test_client(s.endpoint, "export-agent", NULL);
    tt_step root, tool, llm;
    uint64_t rid;
    emit_turn(c, "conv-1", &root, &tool, &llm, &rid);
    CHECK_OK(tt_flush(c, 10000));
    json_t *e = wait_accounted(s.http, 4, 1, 1, 20000);
    CHECK_EQ(exported(e, "spans"), 4);
    CHECK_EQ(exported(e, "logs"), 1);
    CHECK_EQ(exported(e, "points"), 1);
    CHECK_EQ(dropped(e, "spans", NULL) + dropped(e, "logs", NULL) + dropped(e, "points", NULL), 0);
    json_decref(e);

    json_t *reqs = receiver_requests(&rcv);
    size_t i;
    json_t *rq;
    json_array_foreach(reqs, i, rq)
    {
        CHECK_STR(str(rq, "contentType"), "application/x-protobuf");
    }
    json_t *spans = items_of(reqs, "/v1/traces", 200);
    CHECK_EQ(json_array_size(spans), 4);

    /* Each step as the API returns it: the same ids, its name, its GenAI attributes. */
    json_t *sess = api_json(s.http, "/api/v1/sessions/conv-1?agent=export-agent");
    json_t *steps = json_object_get(sess, "steps");
    CHECK_MSG(json_array_size(steps) > 0, "no steps in the session");
    const tt_step *mine[3] = {&root, &tool, &llm};
    for (int k = 0; k < 3; k++) {
        char id[17];
        snprintf(id, sizeof id, "%016" PRIx64, mine[k]->id);
        json_t *st = find_step(steps, id);
        CHECK_MSG(st, "step %s not in the API", id);
        json_t *sp = span_by_id(spans, str(st, "span_id"));
        CHECK_STR(str(sp, "traceId"), str(st, "trace_id"));
        CHECK_STR(str(sp, "traceId"), TP_TRACE);
        CHECK_STR(str(sp, "parentSpanId"), str(st, "parent_span_id"));
        CHECK_STR(attr_s(sp, "gen_ai.conversation.id"), "conv-1");
        CHECK_STR(str(json_object_get(sp, "resource"), "service.name"), "export-agent");
        CHECK_STR(str(sp, "scope"), "telltale");
        CHECK(strstr(str(sp, "name"), str(st, "name")) != NULL);
        /* latency: the span lasts the step's duration */
        uint64_t start = strtoull(str(sp, "start"), NULL, 10);
        uint64_t end = strtoull(str(sp, "end"), NULL, 10);
        json_t *lat = json_object_get(st, "latency_ns");
        CHECK_MSG(json_is_integer(lat), "step %s without latency_ns", id);
        CHECK(end >= start && start > 1700000000000000000ull);
        CHECK_EQ(end - start, (uint64_t)json_integer_value(lat));
    }
    char id[17];
    snprintf(id, sizeof id, "%016" PRIx64, root.id);
    json_t *sp = span_by_id(spans, str(find_step(steps, id), "span_id"));
    CHECK_STR(str(sp, "parentSpanId"), TP_PARENT);
    CHECK_STR(attr_s(sp, "gen_ai.operation.name"), "invoke_agent");
    CHECK_STR(attr_s(sp, "gen_ai.agent.name"), "turn");
    snprintf(id, sizeof id, "%016" PRIx64, tool.id);
    sp = span_by_id(spans, str(find_step(steps, id), "span_id"));
    CHECK_STR(str(sp, "name"), "execute_tool search");
    CHECK_STR(attr_s(sp, "gen_ai.operation.name"), "execute_tool");
    CHECK_STR(attr_s(sp, "gen_ai.tool.name"), "search");
    CHECK_STR(attr_s(sp, "telltale.step.query"), "weather in Oslo");
    CHECK_STR(attr_s(sp, "telltale.step.status"), "error");
    CHECK_STR(attr_s(sp, "error.type"), "error");
    CHECK_EQ(attr_n(sp, "telltale.step.result_bytes"), 42);
    CHECK_EQ(json_integer_value(json_object_get(json_object_get(sp, "status"), "code")), 2);
    CHECK_STR(str(json_object_get(sp, "status"), "message"), "timed out upstream");
    CHECK_EQ(json_integer_value(json_object_get(sp, "kind")), 1);
    json_decref(sess);

    /* The response: a GenAI chat span, its confidence summary, its verdict as an evaluation. */
    json_t *resps = api_json(s.http, "/api/v1/responses?session=conv-1");
    json_t *items = json_object_get(resps, "responses");
    if (!items) {
        items = resps;
    }
    char rhex[17];
    snprintf(rhex, sizeof rhex, "%016" PRIx64, rid);
    json_t *ar = NULL;
    json_array_foreach(items, i, rq)
    {
        if (!strcmp(str(rq, "id"), rhex)) {
            ar = rq;
        }
    }
    CHECK_MSG(ar, "response %s not in the API", rhex);
    json_t *rs = span_by_id(spans, str(ar, "span_id"));
    CHECK_STR(str(rs, "traceId"), str(ar, "trace_id"));
    CHECK_STR(str(rs, "parentSpanId"), str(ar, "parent_span_id"));
    CHECK_STR(str(rs, "name"), "chat tiny-model");
    CHECK_EQ(json_integer_value(json_object_get(rs, "kind")), 3);
    CHECK_STR(attr_s(rs, "gen_ai.operation.name"), "chat");
    CHECK_STR(attr_s(rs, "gen_ai.request.model"), "tiny-model");
    CHECK_EQ(attr_n(rs, "gen_ai.usage.output_tokens"), 3);
    CHECK_NEAR(attr_n(rs, "telltale.param.temperature"), 0.5, 1e-9);
    CHECK_NEAR(attr_n(rs, "telltale.confidence.mean_logprob"),
               json_number_value(json_object_get(ar, "mean_logprob")), 1e-5);
    CHECK_NEAR(attr_n(rs, "telltale.confidence.min_logprob"), -2.5, 1e-5);
    json_t *evs = json_object_get(rs, "events");
    CHECK(json_array_size(evs) >= 1);
    json_t *last = json_array_get(evs, json_array_size(evs) - 1);
    CHECK_STR(str(last, "name"), "gen_ai.evaluation.result");
    CHECK_STR(attr_s(last, "gen_ai.evaluation.name"), "telltale.response");
    CHECK_STR(attr_s(last, "gen_ai.evaluation.score.label"),
              str(ar, "verdict")[0] ? str(ar, "verdict") : "pass");
    json_decref(resps);

    /* The log and the metric point with their values. */
    json_t *logs = items_of(reqs, "/v1/logs", 200);
    CHECK_EQ(json_array_size(logs), 1);
    json_t *lg = json_array_get(logs, 0);
    CHECK_STR(str(lg, "body"), "upstream slow");
    CHECK_EQ(json_integer_value(json_object_get(lg, "severity")), 13);
    CHECK_STR(attr_s(lg, "city"), "Oslo");
    CHECK_STR(attr_s(lg, "gen_ai.conversation.id"), "conv-1");
    CHECK_STR(str(json_object_get(lg, "resource"), "service.name"), "export-agent");
    json_t *pts = items_of(reqs, "/v1/metrics", 200);
    CHECK_EQ(json_array_size(pts), 1);
    json_t *pt = json_array_get(pts, 0);
    CHECK_STR(str(pt, "name"), "queue.depth");
    CHECK_STR(str(pt, "unit"), "items");
    CHECK_NEAR(json_number_value(json_object_get(pt, "value")), 17.5, 1e-12);
    CHECK_STR(attr_s(pt, "gen_ai.conversation.id"), "conv-1");
    CHECK_EQ(tt_test_metric(s.http, "telltale_otlp_export_items_total{signal=\"spans\"}"), 4);

    json_decref(spans);
    json_decref(logs);
    json_decref(pts);
    json_decref(reqs);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    receiver_stop(&rcv);
}

/* Every event the client emitted is acknowledged as stored. */
static void check_all_acked(tt_client *c)
{
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ(st.dropped_total, 0);
    CHECK_EQ(st.acked, st.emitted);
}

TEST_T(otlp_export_retries_after_503_with_retry_after_and_delivers_once, 90)
{
    struct receiver rcv;
    receiver_start(&rcv, "recv-503", "503r1,200");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rcv.port);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "export-503", "--otlp-export", url, NULL);
    tt_client *c = tt_test_client(s.endpoint, "export-agent", NULL);
    tt_step root, tool, llm;
    uint64_t rid;
    emit_turn(c, "conv-r", &root, &tool, &llm, &rid);
    CHECK_OK(tt_flush(c, 10000));
    json_t *e = wait_accounted(s.http, 4, 1, 1, 30000);
    CHECK_EQ(exported(e, "spans"), 4);
    CHECK_EQ(exported(e, "logs"), 1);
    CHECK_EQ(exported(e, "points"), 1);
    CHECK_EQ(dropped(e, "spans", NULL), 0);
    CHECK(json_integer_value(json_object_get(e, "retries")) >= 1);
    json_decref(e);

    json_t *reqs = receiver_requests(&rcv);
    json_t *first = json_array_get(reqs, 0);
    CHECK_STR(str(first, "path"), "/v1/traces");
    CHECK_EQ(json_integer_value(json_object_get(first, "status")), 503);
    /* The retry is the same request, sent after the Retry-After second, and taken once. The
     * client may ship the first step's end in a frame of its own, so the refused request holds
     * one to four spans: whatever it held comes again, span for span, in the next request. */
    json_t *ok = items_of(reqs, "/v1/traces", 200);
    CHECK_EQ(json_array_size(ok), 4);
    json_t *refused = items_of(reqs, "/v1/traces", 503);
    CHECK(json_array_size(refused) >= 1);
    json_t *second = json_array_get(reqs, 1);
    CHECK_STR(str(second, "path"), "/v1/traces");
    CHECK_EQ(json_integer_value(json_object_get(second, "status")), 200);
    json_t *again = json_object_get(second, "items");
    CHECK_EQ(json_array_size(again), json_array_size(refused));
    size_t k;
    json_t *rsp;
    json_array_foreach(refused, k, rsp)
    {
        CHECK_STR(str(json_array_get(again, k), "spanId"), str(rsp, "spanId"));
    }
    json_decref(refused);
    double gap = (double)(json_integer_value(json_object_get(second, "at")) -
                          json_integer_value(json_object_get(first, "at")));
    CHECK_MSG(gap >= 900, "retried %.0f ms after a Retry-After of 1 s", gap);
    size_t i;
    json_t *sp;
    json_array_foreach(ok, i, sp)
    {
        span_by_id(ok, str(sp, "spanId")); /* each span once */
    }
    CHECK_EQ(json_array_size(items_of(reqs, "/v1/logs", 0)), 1);
    CHECK_EQ(json_array_size(items_of(reqs, "/v1/metrics", 0)), 1);
    json_decref(reqs);
    check_all_acked(c);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    receiver_stop(&rcv);
}

TEST_T(otlp_export_counts_what_a_receiver_refuses_with_400_and_ingest_goes_on, 90)
{
    struct receiver rcv;
    receiver_start(&rcv, "recv-400", "400");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rcv.port);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "export-400", "--otlp-export", url, NULL);
    tt_client *c = tt_test_client(s.endpoint, "export-agent", NULL);
    enum { TURNS = 20 };
    for (int t = 0; t < TURNS; t++) {
        tt_step root, tool, llm;
        uint64_t rid;
        emit_turn(c, "conv-400", &root, &tool, &llm, &rid);
        if (t % 5 == 4) {
            CHECK_OK(tt_flush(c, 10000));
        }
    }
    CHECK_OK(tt_flush(c, 10000));
    json_t *e = wait_accounted(s.http, 4 * TURNS, TURNS, TURNS, 30000);
    CHECK_EQ(dropped(e, "spans", "rejected"), 4 * TURNS);
    CHECK_EQ(dropped(e, "logs", "rejected"), TURNS);
    CHECK_EQ(dropped(e, "points", "rejected"), TURNS);
    CHECK_EQ(dropped(e, "spans", NULL), 4 * TURNS); /* no other reason */
    CHECK_EQ(exported(e, "spans") + exported(e, "logs") + exported(e, "points"), 0);
    CHECK_EQ(json_integer_value(json_object_get(e, "retries")), 0);
    json_decref(e);
    CHECK_EQ(tt_test_metric(s.http, "telltale_otlp_export_dropped_total{signal=\"spans\","
                                    "reason=\"rejected\"}"),
             4 * TURNS);
    /* not retried: one request per round of batches, each answered 400 once */
    json_t *reqs = receiver_requests(&rcv);
    CHECK_EQ(json_array_size(items_of(reqs, "/v1/traces", 400)), 4 * TURNS);
    json_decref(reqs);
    /* ingest unaffected: everything acknowledged and in the API */
    check_all_acked(c);
    json_t *sess = api_json(s.http, "/api/v1/sessions/conv-400?agent=export-agent");
    CHECK_EQ(json_array_size(json_object_get(sess, "steps")), TURNS);
    json_decref(sess);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    receiver_stop(&rcv);
}

TEST_T(otlp_export_receiver_down_stays_bounded_counts_drops, 120)
{
    int port = tt_test_free_port(); /* nothing listens there */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "export-down", "--otlp-export", url, "--otlp-export-queue", "65536",
                        "--otlp-export-retry", "4000", "--sync", "off", NULL);
    tt_client *c = tt_test_client(s.endpoint, "export-agent", NULL);
    enum { TURNS = 300 };
    for (int t = 0; t < TURNS; t++) {
        tt_step root, tool, llm;
        uint64_t rid;
        emit_turn(c, "conv-down", &root, &tool, &llm, &rid);
        CHECK_OK(tt_flush(c, 10000)); /* a batch per turn */
    }
    /* every event stored and acknowledged, whatever the exporter does */
    check_all_acked(c);
    json_t *e = wait_accounted(s.http, 4 * TURNS, TURNS, TURNS, 60000);
    CHECK_EQ(exported(e, "spans") + exported(e, "logs") + exported(e, "points"), 0);
    /* each item accounted for exactly once, by its reason */
    CHECK_EQ(dropped(e, "spans", NULL), 4 * TURNS);
    CHECK_EQ(dropped(e, "logs", NULL), TURNS);
    CHECK_EQ(dropped(e, "points", NULL), TURNS);
    CHECK(dropped(e, "spans", "queue_full") > 0);
    CHECK(dropped(e, "spans", "retries_exhausted") > 0);
    CHECK_EQ(dropped(e, "spans", "rejected"), 0);
    uint64_t peak = (uint64_t)json_integer_value(json_object_get(e, "queue_peak_bytes"));
    CHECK_MSG(peak > 0 && peak <= 65536, "queue peak %llu bytes, bound 65536",
              (unsigned long long)peak);
    CHECK_EQ(json_integer_value(json_object_get(e, "queue_bytes")), 0);
    json_decref(e);
    json_t *sess = api_json(s.http, "/api/v1/sessions/conv-down?agent=export-agent");
    CHECK_EQ(json_array_size(json_object_get(sess, "steps")), TURNS);
    json_decref(sess);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

/* The collector's log holds no secret. */
static void check_log_lacks(const struct tt_test_serve *s, const char *secret)
{
    FILE *f = fopen(s->log, "r");
    CHECK(f);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        CHECK_MSG(!strstr(line, secret), "the collector logged a secret: %s", line);
    }
    fclose(f);
}

TEST_T(otlp_export_takes_the_standard_variables_and_the_option_wins_over_them, 90)
{
    struct receiver a, b;
    receiver_start(&a, "recv-env", "200");
    receiver_start(&b, "recv-opt", "200");
    char base[96], own[96], opt[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/base/", a.port);
    snprintf(own, sizeof own, "http://127.0.0.1:%d/own/v1/metrics", a.port);
    snprintf(opt, sizeof opt, "http://127.0.0.1:%d", b.port);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base, 1);
    setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", own, 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20sekret-4711 , X-Tenant=acme", 1);
    setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", 1);
    setenv("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none", 1); /* a signal's own wins */
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5000", 1);
    struct tt_test_serve s, s2;
    tt_test_serve_start(&s, "export-env", NULL);
    tt_client *c = tt_test_client(s.endpoint, "export-agent", NULL);
    tt_step root, tool, llm;
    uint64_t rid;
    emit_turn(c, "conv-env", &root, &tool, &llm, &rid);
    CHECK_OK(tt_flush(c, 10000));
    json_decref(wait_accounted(s.http, 4, 1, 1, 30000));
    json_t *reqs = receiver_requests(&a);
    /* The client may send the turn in more than one batch (a slow build does), and the
     * exporter may then send a signal in more than one request: count items, not requests. */
    size_t sent_to_a = json_array_size(reqs);
    CHECK(sent_to_a >= 3);
    CHECK_EQ(json_array_size(items_of(reqs, "/base/v1/traces", 200)), 4);
    CHECK_EQ(json_array_size(items_of(reqs, "/base/v1/logs", 200)), 1);
    CHECK_EQ(json_array_size(items_of(reqs, "/own/v1/metrics", 200)), 1); /* used as it is */
    size_t i;
    json_t *rq;
    json_array_foreach(reqs, i, rq)
    {
        const char *path = str(rq, "path");
        CHECK_MSG(!strcmp(path, "/base/v1/traces") || !strcmp(path, "/base/v1/logs") ||
                      !strcmp(path, "/own/v1/metrics"),
                  "request to an unexpected path %s", path);
        CHECK_STR(str(rq, "authorization"), "Bearer sekret-4711");
        CHECK_STR(str(rq, "tenant"), "acme");
        CHECK_STR(str(rq, "encoding"), strcmp(str(rq, "path"), "/base/v1/logs") ? "gzip" : "");
    }
    json_decref(reqs);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    check_log_lacks(&s, "sekret-4711");

    /* --otlp-export wins over every variable */
    tt_test_serve_start(&s2, "export-env-opt", "--otlp-export", opt, NULL);
    c = tt_test_client(s2.endpoint, "export-agent", NULL);
    emit_turn(c, "conv-opt", &root, &tool, &llm, &rid);
    CHECK_OK(tt_flush(c, 10000));
    json_decref(wait_accounted(s2.http, 4, 1, 1, 30000));
    reqs = receiver_requests(&b);
    CHECK_EQ(json_array_size(items_of(reqs, "/v1/traces", 200)), 4);
    CHECK_EQ(json_array_size(items_of(reqs, "/v1/metrics", 200)), 1);
    json_decref(reqs);
    reqs = receiver_requests(&a);
    CHECK_EQ(json_array_size(reqs), sent_to_a); /* nothing more */
    json_decref(reqs);
    tt_close(c, 5000);
    tt_test_serve_stop(&s2);
    check_log_lacks(&s2, "sekret-4711");
    receiver_stop(&a);
    receiver_stop(&b);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    unsetenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    unsetenv("OTEL_EXPORTER_OTLP_HEADERS");
    unsetenv("OTEL_EXPORTER_OTLP_COMPRESSION");
    unsetenv("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION");
    unsetenv("OTEL_EXPORTER_OTLP_PROTOCOL");
    unsetenv("OTEL_EXPORTER_OTLP_TIMEOUT");
}

/* `telltale serve` with one variable set; its exit status, its stderr in err. */
static int serve_with_env(const char *var, const char *value, char *err, size_t cap)
{
    char dir[4200], sock[4300], log[4300];
    snprintf(dir, sizeof dir, "%s/refused", tt_test_tmpdir());
    snprintf(sock, sizeof sock, "unix:%s/r.sock", tt_test_tmpdir());
    snprintf(log, sizeof log, "%s/refused.log", tt_test_outdir());
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setenv(var, value, 1);
        FILE *o = freopen(log, "w", stderr);
        (void)o;
        execl(getenv("TT_BIN"), "telltale", "serve", "--data", dir, "--listen", sock, "--no-http",
              (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    FILE *f = fopen(log, "r");
    CHECK(f);
    size_t n = fread(err, 1, cap - 1, f);
    err[n] = 0;
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(otlp_export_refuses_a_protocol_other_than_http_protobuf_at_start)
{
    char err[4096];
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9", 1);
    CHECK_EQ(serve_with_env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", err, sizeof err), 1);
    CHECK_MSG(strstr(err, "\"grpc\"") && strstr(err, "http/protobuf"), "%s", err);
    CHECK_EQ(serve_with_env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", err, sizeof err), 1);
    CHECK_MSG(strstr(err, "http/json"), "%s", err);
    CHECK_EQ(serve_with_env("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", err, sizeof err), 1);
    CHECK_MSG(strstr(err, "gzip or none"), "%s", err);
    CHECK_EQ(serve_with_env("OTEL_EXPORTER_OTLP_HEADERS", "Bad Name=secret-x", err, sizeof err), 1);
    CHECK_MSG(strstr(err, "OTEL_EXPORTER_OTLP_HEADERS") && !strstr(err, "secret-x"), "%s", err);
    /* a percent-encoded line break cannot smuggle a header in */
    CHECK_EQ(
        serve_with_env("OTEL_EXPORTER_OTLP_HEADERS", "X-A=secret-y%0d%0aX-B: 1", err, sizeof err),
        1);
    CHECK_MSG(strstr(err, "control character") && !strstr(err, "secret-y"), "%s", err);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    CHECK_EQ(
        serve_with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://127.0.0.1:4317", err, sizeof err), 1);
    CHECK_MSG(strstr(err, "http:// or https://"), "%s", err);
}

/* The round trip: the official OpenTelemetry JS SDK (tests/otel/send.mjs) exports GenAI spans to
 * telltale's OTLP ingest, telltale exports them again, and the receiver finds the SDK's ids. */
TEST_T(otlp_export_keeps_the_ids_of_spans_the_js_sdk_sent_to_telltale, 90)
{
    struct receiver rcv;
    receiver_start(&rcv, "recv-rt", "200");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rcv.port);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "export-rt", "--otlp-export", url, NULL);
    const char *src = getenv("TT_SRCDIR") && *getenv("TT_SRCDIR") ? getenv("TT_SRCDIR") : ".";
    char script[4096], in[512], out[4200];
    snprintf(script, sizeof script, "%s/tests/otel/send.mjs", src);
    snprintf(in, sizeof in, "http://%s/v1/traces", s.http);
    snprintf(out, sizeof out, "%s/sdk.out", tt_test_outdir());
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setenv("TT_OTLP_URL", in, 1);
        setenv("TT_OTLP_TOKEN", "", 1); /* --ingest-open: a loopback exporter needs none */
        setenv("TT_OTLP_SERVICE", "rt-agent", 1);
        setenv("TT_OTLP_SESSION", "conv-rt", 1);
        FILE *o = freopen(out, "w", stdout);
        (void)o;
        execlp("node", "node", script, (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "send.mjs failed: %d", st);
    struct {
        char name[64], trace[40], span[24];
    } sdk[4];
    int n = 0;
    FILE *f = fopen(out, "r");
    CHECK(f);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (n < 4 &&
            sscanf(line, "span %63s %39s %23s", sdk[n].name, sdk[n].trace, sdk[n].span) == 3) {
            n++;
        }
    }
    fclose(f);
    CHECK_EQ(n, 4);
    json_decref(wait_accounted(s.http, 4, 0, 0, 30000));
    json_t *reqs = receiver_requests(&rcv);
    json_t *spans = items_of(reqs, "/v1/traces", 200);
    CHECK_EQ(json_array_size(spans), 4);
    const char *agent_span = NULL;
    for (int k = 0; k < 4; k++) {
        json_t *sp = span_by_id(spans, sdk[k].span);
        CHECK_STR(str(sp, "traceId"), sdk[k].trace);
        CHECK_STR(str(json_object_get(sp, "resource"), "service.name"), "rt-agent");
        CHECK_STR(attr_s(sp, "gen_ai.conversation.id"), "conv-rt");
        if (!strcmp(str(sp, "parentSpanId"), "")) {
            CHECK_MSG(!agent_span, "two root spans");
            agent_span = sdk[k].span;
            CHECK_STR(str(sp, "name"), "invoke_agent planner");
            CHECK_STR(attr_s(sp, "gen_ai.operation.name"), "invoke_agent");
        }
    }
    CHECK(agent_span);
    for (int k = 0; k < 4; k++) {
        json_t *sp = span_by_id(spans, sdk[k].span);
        if (strcmp(sdk[k].span, agent_span) != 0) {
            CHECK_STR(str(sp, "parentSpanId"), agent_span);
        }
        double dur =
            (double)(strtoull(str(sp, "end"), NULL, 10) - strtoull(str(sp, "start"), NULL, 10));
        const char *name = str(sp, "name");
        if (!strcmp(name, "chat gpt-4o-mini")) {
            /* one span for the step and the response telltale made of it */
            CHECK_STR(attr_s(sp, "gen_ai.operation.name"), "chat");
            CHECK_STR(attr_s(sp, "gen_ai.request.model"), "gpt-4o-mini");
            CHECK_STR(attr_s(sp, "gen_ai.provider.name"), "openai");
            CHECK_EQ(attr_n(sp, "gen_ai.usage.input_tokens"), 120);
            CHECK_EQ(attr_n(sp, "gen_ai.usage.output_tokens"), 42);
            CHECK_NEAR(dur, 750e6, 1.0);
        } else if (!strcmp(name, "execute_tool get_weather")) {
            CHECK_STR(attr_s(sp, "gen_ai.tool.name"), "get_weather");
            CHECK_NEAR(dur, 250e6, 1.0);
        } else if (!strcmp(name, "execute_tool search")) {
            CHECK_EQ(json_integer_value(json_object_get(json_object_get(sp, "status"), "code")), 2);
            CHECK_STR(str(json_object_get(sp, "status"), "message"), "search timed out");
            CHECK_NEAR(dur, 300e6, 1.0);
        } else {
            CHECK_STR(name, "invoke_agent planner");
            CHECK_NEAR(dur, 2000e6, 1.0);
        }
    }
    json_decref(spans);
    json_decref(reqs);
    tt_test_serve_stop(&s);
    receiver_stop(&rcv);
}

/* A receiver that takes connections into its backlog and never answers: the collector still
 * stops within its grace, the request under way cut. */
TEST_T(otlp_export_to_a_receiver_that_never_answers_does_not_hold_the_stop, 90)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 64) == 0);
    socklen_t len = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "600000", 1); /* the request alone would wait 10 min */
    struct tt_test_serve s;
    tt_test_serve_start(&s, "export-hang", "--otlp-export", url, "--grace-ms", "1000", NULL);
    unsetenv("OTEL_EXPORTER_OTLP_TIMEOUT");
    tt_client *c = tt_test_client(s.endpoint, "export-agent", NULL);
    tt_step root, tool, llm;
    uint64_t rid;
    emit_turn(c, "conv-hang", &root, &tool, &llm, &rid);
    CHECK_OK(tt_flush(c, 10000));
    check_all_acked(c);
    /* the request is under way: it waits for an answer that never comes */
    double t0 = tt_test_now_ms();
    for (;;) {
        json_t *e = export_status(s.http);
        int busy = json_integer_value(json_object_get(e, "queue_batches")) > 0;
        json_decref(e);
        if (busy) {
            break;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 10000, "nothing queued for export");
        usleep(20000);
    }
    usleep(300000);
    tt_close(c, 5000);
    t0 = tt_test_now_ms();
    tt_test_serve_stop(&s);
    double took = tt_test_now_ms() - t0;
    CHECK_MSG(took < 4000, "stopping took %.0f ms with a grace of 1000 ms", took);
    close(fd);
}

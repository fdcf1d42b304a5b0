/*
 * test_fidelity.c - what the operator reads is what the agent did, against a real `telltale
 * serve`: a response opened in a step belongs to the step and its session; a step's end carries
 * its session and name to every reader (stored events by session, `telltale query`, `tail`, the
 * live stream); failing calls of every external-call kind raise the error-rate alert, which
 * names the failed step in the ids' one format (16 hex digits, as events and the API).
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

static json_t *get_json(const char *http, const char *path)
{
    char *body = NULL;
    long st = tt_test_http(http, "GET", path, NULL, &body);
    CHECK_MSG(st == 200, "GET %s: %ld %s", path, st, body ? body : "");
    json_error_t e;
    json_t *o = json_loads(body, 0, &e);
    CHECK_MSG(o, "GET %s: not JSON: %s", path, body);
    free(body);
    return o;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void hex16(char out[17], uint64_t v)
{
    snprintf(out, 17, "%016llx", (unsigned long long)v);
}

TEST_T(fidelity_response_in_a_step_belongs_to_step_and_session, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "resp-step", NULL);
    tt_client *c = tt_test_client(s.endpoint, "in-step", NULL);
    tt_step turn, gen;
    CHECK_OK(tt_step_begin(c, &turn, NULL, TT_STEP_AGENT, "fid-1", "turn", NULL));
    CHECK_OK(tt_step_begin(c, &gen, &turn, TT_STEP_LLM, "fid-1", "generate", NULL));
    /* No session given: the response takes its step's. */
    tt_response *r;
    CHECK_OK(tt_response_begin_in(c, &r, &gen, NULL, "m", NULL, 0));
    uint64_t rid = tt_response_id(r);
    CHECK_OK(tt_response_token_logprobs(r, 7, -0.1f, NULL, NULL, 0, NULL, NULL));
    CHECK_OK(tt_response_end(r, NULL));
    CHECK_OK(tt_step_end(c, &gen, TT_STATUS_OK, 0, NULL));
    CHECK_OK(tt_step_end(c, &turn, TT_STATUS_OK, 0, NULL));
    CHECK_OK(tt_flush(c, 10000));

    char rh[17], gh[17], path[200];
    hex16(rh, rid);
    hex16(gh, gen.id);
    snprintf(path, sizeof path, "/api/v1/responses/%s", rh);
    json_t *o = get_json(s.http, path);
    json_t *resp = json_object_get(o, "response");
    if (!resp) {
        resp = o;
    }
    CHECK_STR(str(resp, "session"), "fid-1");
    CHECK_STR(str(resp, "step_id"), gh);
    json_decref(o);
    /* The session's view lists the response, and its steps by the same hex ids as events. */
    o = get_json(s.http, "/api/v1/sessions/fid-1?agent=in-step");
    char *dump = json_dumps(o, JSON_COMPACT);
    CHECK_MSG(strstr(dump, rh) != NULL, "session view without the response: %s", dump);
    char want[64];
    snprintf(want, sizeof want, "\"step_id\":\"%s\"", gh);
    CHECK_MSG(strstr(dump, want) != NULL, "session steps without hex id %s: %s", gh, dump);
    free(dump);
    json_decref(o);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST_T(fidelity_step_end_has_session_name_status_error_for_readers, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "step-ends", NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "session=fid-2&kind=step", NULL);
    tt_client *c = tt_test_client(s.endpoint, "ends", NULL);
    tt_step turn, sql;
    CHECK_OK(tt_step_begin(c, &turn, NULL, TT_STEP_AGENT, "fid-2", "turn", NULL));
    CHECK_OK(tt_step_begin(c, &sql, &turn, TT_STEP_RETRIEVAL, "fid-2", "sql", "SELECT 1"));
    usleep(20000);
    CHECK_OK(tt_step_end(c, &sql, TT_STATUS_ERROR, -1, "no such table: orders"));
    CHECK_OK(tt_step_end(c, &turn, TT_STATUS_OK, 10, NULL));
    CHECK_OK(tt_flush(c, 10000));

    /* Stored events, by session: both ends, with what they close. */
    json_t *o = get_json(s.http, "/api/v1/events?session=fid-2&kind=step_end");
    json_t *evs = json_object_get(o, "events");
    CHECK_EQ(json_array_size(evs), 2);
    json_t *e = json_array_get(evs, 0);
    CHECK_STR(str(e, "session"), "fid-2");
    CHECK_STR(str(e, "name"), "sql");
    CHECK_STR(str(e, "step_kind"), "retrieval");
    CHECK_STR(str(e, "status"), "error");
    CHECK_STR(str(e, "error"), "no such table: orders");
    CHECK(json_integer_value(json_object_get(e, "duration_ns")) >= 20000000);
    CHECK_STR(str(json_array_get(evs, 1), "name"), "turn");
    json_decref(o);

    /* The live stream, filtered by the session, shows the ends too. */
    int from = 0;
    char *live = tt_test_sse_wait(sse, "\"kind\":\"step_end\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(live, "no step_end in the session's live stream");
    CHECK(strstr(live, "\"name\":\"sql\"") && strstr(live, "\"status\":\"error\""));
    CHECK(strstr(live, "no such table: orders"));
    free(live);

    /* The CLI: query --session --kind step prints the ends with status and error; tail's
     * human lines show status, latency and error. */
    const char *bin = getenv("TT_BIN");
    char cmd[2048], out[600];
    snprintf(out, sizeof out, "%s/query.out", tt_test_outdir());
    snprintf(cmd, sizeof cmd,
             "TELLTALE_TOKEN_FILE=%s/operator.token %s query --http %s --session fid-2 --kind step"
             " > %s",
             s.dir, bin, s.http, out);
    CHECK_EQ(sh(cmd), 0);
    FILE *f = fopen(out, "r");
    CHECK(f);
    char line[4096];
    int ends = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "\"kind\":\"step_end\"") && strstr(line, "\"name\":\"sql\"") &&
            strstr(line, "\"status\":\"error\"") && strstr(line, "\"duration_ns\"")) {
            ends++;
        }
    }
    fclose(f);
    CHECK_EQ(ends, 1);

    snprintf(out, sizeof out, "%s/tail.out", tt_test_outdir());
    snprintf(cmd, sizeof cmd,
             "TELLTALE_TOKEN_FILE=%s/operator.token %s tail --http %s --session fid-2 --kind "
             "step_end --count 1 > %s &",
             s.dir, bin, s.http, out);
    CHECK_EQ(sh(cmd), 0);
    usleep(500000);
    tt_step again;
    CHECK_OK(tt_step_begin(c, &again, NULL, TT_STEP_API, "fid-2", "weather", NULL));
    CHECK_OK(tt_step_end(c, &again, TT_STATUS_TIMEOUT, -1, "deadline exceeded"));
    CHECK_OK(tt_flush(c, 10000));
    int seen = 0;
    for (int i = 0; i < 100 && !seen; i++) {
        usleep(100000);
        f = fopen(out, "r");
        if (f) {
            seen = fgets(line, sizeof line, f) != NULL;
            fclose(f);
        }
    }
    CHECK_MSG(seen, "tail printed nothing");
    CHECK_MSG(strstr(line, "step_end") && strstr(line, "fid-2") && strstr(line, "weather") &&
                  strstr(line, "timeout") && strstr(line, "ms") &&
                  strstr(line, "error: deadline exceeded"),
              "tail line: %s", line);
    tt_close(c, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

/* Ten failing calls of one kind against the default detectors; 1 if an error-rate alert came
 * (its text in *alert). */
static int failing_calls_alert(const char *name, const char *config, tt_step_kind kind,
                               char **alert, uint64_t steps[12])
{
    struct tt_test_serve s;
    if (config) {
        char cfg[512];
        snprintf(cfg, sizeof cfg, "%s/%s.conf", tt_test_tmpdir(), name);
        tt_test_write_file(cfg, config);
        tt_test_serve_start(&s, name, "--config", cfg, NULL);
    } else {
        tt_test_serve_start(&s, name, NULL);
    }
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "kind=alert", NULL);
    tt_client *c = tt_test_client(s.endpoint, name, NULL);
    for (int i = 0; i < 12; i++) {
        tt_step st;
        CHECK_OK(tt_step_begin(c, &st, NULL, kind, "fid-3", "orders", "SELECT * FROM orders"));
        CHECK_OK(tt_step_end(c, &st, TT_STATUS_ERROR, -1, "no such table: orders"));
        steps[i] = st.id;
    }
    CHECK_OK(tt_flush(c, 10000));
    int from = 0;
    *alert = tt_test_sse_wait(sse, "\"type\":\"error_rate\"", &from,
                              (config ? 1500 : 10000) * tt_test_mult());
    tt_close(c, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
    return *alert != NULL;
}

TEST_T(fidelity_failing_retrieval_and_api_calls_alert_with_step, 90)
{
    const tt_step_kind kinds[] = {TT_STEP_RETRIEVAL, TT_STEP_API};
    const char *names[] = {"fid-retrieval", "fid-api"};
    for (int k = 0; k < 2; k++) {
        char *alert = NULL;
        uint64_t steps[12];
        CHECK_MSG(failing_calls_alert(names[k], NULL, kinds[k], &alert, steps),
                  "no error-rate alert for failing %s calls", names[k]);
        /* The alert names a failed step (the one that tipped the rate) in hex, its session,
         * and links to them. */
        int named = 0;
        for (int i = 0; i < 12 && !named; i++) {
            char want[64];
            snprintf(want, sizeof want, "\"step_id\":\"%016llx\"", (unsigned long long)steps[i]);
            named = strstr(alert, want) != NULL;
        }
        CHECK_MSG(named, "alert without one of the failed steps' hex id: %s", alert);
        CHECK(strstr(alert, "\"session\":\"fid-3\"") != NULL);
        CHECK(strstr(alert, "/api/v1/sessions/fid-3#step-") != NULL);
        free(alert);
    }
    /* [calls] kinds sets what counts: with tools only, failing retrievals raise nothing. */
    char *alert = NULL;
    uint64_t steps[12];
    CHECK_MSG(!failing_calls_alert("fid-toolsonly",
                                   "[calls]\nkinds = tool\n[detector.tool_errors]\n"
                                   "type = error_rate\nwindow = 10\nmin_calls = 5\n",
                                   TT_STEP_RETRIEVAL, &alert, steps),
              "alert for retrievals when only tools count: %s", alert ? alert : "");
}

TEST_T(fidelity_token_text_travels_once_per_distinct_token_and_reads_back, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "text", NULL);
    tt_client *c = tt_test_client(s.endpoint, "texts", NULL);
    static const char *const words[] = {"The", " cat", " sat", " on", " the", " mat", "."};
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "fid-4", "m", NULL, 0));
    /* 200 tokens over 7 distinct texts: several chunks (64 tokens each by default). */
    float logits[16];
    char want[4096] = "";
    for (int i = 0; i < 200; i++) {
        for (int v = 0; v < 16; v++) {
            logits[v] = v == i % 7 ? 3.0f : 0.0f;
        }
        const char *w = words[i % 7];
        if (i == 150) {
            CHECK_OK(tt_response_token(r, logits, 16, 1, TT_DTYPE_F32, i % 7, NULL, NULL));
            continue; /* a token without text in the middle */
        }
        CHECK_OK(tt_response_token_text(r, logits, 16, 1, TT_DTYPE_F32, i % 7, w, NULL, NULL));
        strcat(want, w);
    }
    uint64_t rid = tt_response_id(r);
    CHECK_OK(tt_response_end(r, NULL));
    /* A hosted model's answer: alternatives known by their text only. */
    tt_response *h;
    CHECK_OK(tt_response_begin(c, &h, "fid-4", "hosted", NULL, 0));
    const char *alts[] = {"Hi", "Hello", "Hey"};
    const float alp[] = {-1.5f, -0.2f, -2.5f};
    tt_token_stats st;
    CHECK_OK(tt_response_token_logprobs_text(h, -1, "Hello", -0.2f, NULL, alts, alp, 3, NULL, &st));
    CHECK_EQ(st.rank, 0); /* found among the alternatives by its text */
    CHECK_OK(
        tt_response_token_logprobs_text(h, -1, " world", -0.7f, NULL, NULL, NULL, 0, NULL, NULL));
    uint64_t hid = tt_response_id(h);
    CHECK_OK(tt_response_end(h, NULL));
    CHECK_OK(tt_flush(c, 10000));
    tt_stats sts;
    CHECK_OK(tt_stats_get(c, &sts, sizeof sts));
    CHECK_MSG(sts.dropped_total == 0, "dropped %llu (rejected %llu)",
              (unsigned long long)sts.dropped_total,
              (unsigned long long)sts.dropped[TT_DROP_REJECTED]);

    /* On the wire (the stored Tokens events): each distinct text once. */
    char path[200], rh[17];
    hex16(rh, rid);
    json_t *o = get_json(s.http, "/api/v1/events?kind=tokens&agent=texts&limit=1000");
    size_t sent = 0, chunks = 0;
    json_t *e;
    size_t i;
    json_array_foreach(json_object_get(o, "events"), i, e)
    {
        if (strcmp(str(e, "response_id"), rh) == 0) {
            chunks++;
            sent += json_array_size(json_object_get(e, "texts"));
        }
    }
    CHECK_MSG(chunks >= 4, "chunks %zu of %s in %s", chunks, rh, json_dumps(o, JSON_COMPACT));
    CHECK_EQ(sent, 7);
    json_decref(o);

    /* Read back: every token's text, the whole text. */
    snprintf(path, sizeof path, "/api/v1/responses/%s", rh);
    o = get_json(s.http, path);
    json_t *texts = json_object_get(json_object_get(o, "token_data"), "texts");
    CHECK_EQ(json_array_size(texts), 200);
    CHECK_STR(json_string_value(json_array_get(texts, 1)), " cat");
    CHECK(json_is_null(json_array_get(texts, 150)));
    CHECK_STR(json_string_value(json_array_get(texts, 199)), words[199 % 7]);
    CHECK_STR(str(o, "text"), want);
    json_decref(o);

    hex16(rh, hid);
    snprintf(path, sizeof path, "/api/v1/responses/%s", rh);
    o = get_json(s.http, path);
    CHECK_STR(str(o, "text"), "Hello world");
    json_t *td = json_object_get(o, "token_data");
    json_t *row = json_array_get(json_object_get(td, "topk_texts"), 0);
    CHECK_EQ(json_array_size(row), 3);
    CHECK_STR(json_string_value(json_array_get(row, 0)), "Hello"); /* most likely first */
    CHECK_STR(json_string_value(json_array_get(row, 1)), "Hi");
    CHECK_STR(json_string_value(json_array_get(row, 2)), "Hey");
    json_decref(o);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

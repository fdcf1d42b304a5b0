/*
 * test_http_doc.c - every example of docs/http-api.md, run against a real collector: each
 * ```sh block holds one curl command and an optional "# expect STATUS" line; the command runs
 * in a shell with TELLTALE_HTTP and TOKEN set, and must answer that status (200 by default)
 * with a JSON body (except /metrics and the live stream). A route added to the code without an
 * example, or an example that no longer works, fails here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

#define TOKEN "doc-token-42"

static char *read_doc(void)
{
    char path[1024];
    const char *src = getenv("TT_SRCDIR");
    snprintf(path, sizeof path, "%s/docs/http-api.md", src ? src : ".");
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot read %s", path);
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static char response_id[17];

static void demo_data(const struct tt_test_serve *s)
{
    tt_client *c = tt_test_client(s->endpoint, "demo-agent", NULL);
    tt_step plan, tool;
    CHECK_OK(tt_step_begin(c, &plan, NULL, TT_STEP_LLM, "demo-session", "plan", NULL));
    CHECK_OK(tt_step_begin(c, &tool, &plan, TT_STEP_TOOL, "demo-session", "search", "q"));
    CHECK_OK(tt_step_end(c, &tool, TT_STATUS_OK, 10, NULL));
    CHECK_OK(tt_step_end(c, &plan, TT_STATUS_OK, 10, NULL));
    CHECK_OK(tt_test_emit_response(c, "demo-session", 0.9));
    for (int i = 0; i < 3; i++) {
        tt_step st;
        CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "demo-session", "search", "again"));
        CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 10, NULL));
    }
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_close(c, 5000));
    for (int i = 0; i < 500; i++) {
        char *body;
        CHECK_EQ(tt_test_http_auth(s->http, "GET", "/api/v1/alerts", TOKEN, &body), 200);
        int found = strstr(body, "\"id\":1,") != NULL;
        free(body);
        if (found) {
            return;
        }
        usleep(20000);
    }
    CHECK_MSG(0, "alert 1 never stored");
}

/* The id of the session's response, for the examples that take one. */
static void find_response(const struct tt_test_serve *s)
{
    char *body;
    CHECK_EQ(tt_test_http_auth(s->http, "GET", "/api/v1/sessions/demo-session", TOKEN, &body),
             200);
    const char *r = strstr(body, "\"responses\":[\"");
    CHECK_MSG(r != NULL, "no response in %s", body);
    memcpy(response_id, r + 14, 16);
    response_id[16] = 0;
    free(body);
}

/* Run one example; returns the HTTP status it got and its body in *out. */
static long run_example(const char *cmd, const char *http, char **out)
{
    char bodyf[600], full[8192], status[32] = "";
    snprintf(bodyf, sizeof bodyf, "%s/example-body", tt_test_tmpdir());
    snprintf(full, sizeof full,
             "TELLTALE_HTTP='%s' TOKEN='%s' RESPONSE_ID='%s'; export TELLTALE_HTTP TOKEN "
             "RESPONSE_ID; %s -o '%s' -w '%%{http_code}'",
             http, TOKEN, response_id, cmd, bodyf);
    FILE *p = popen(full, "r");
    CHECK(p != NULL);
    size_t n = fread(status, 1, sizeof status - 1, p);
    status[n] = 0;
    pclose(p);
    FILE *f = fopen(bodyf, "r");
    *out = calloc(1, 1 << 20);
    if (f) {
        size_t k = fread(*out, 1, (1 << 20) - 1, f);
        (*out)[k] = 0;
        fclose(f);
    }
    return strtol(status, NULL, 10);
}

TEST(http_doc_examples_run_against_a_real_collector)
{
    char cfg[512], tok[512];
    snprintf(cfg, sizeof cfg, "%s/doc.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.looping]\ntype = loop\nrepeats = 3\n");
    snprintf(tok, sizeof tok, "%s/doc.token", tt_test_tmpdir());
    tt_test_write_file(tok, TOKEN "\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "doc", "--operator-token-file", tok, "--config", cfg, NULL);
    demo_data(&s);
    find_response(&s);
    char *doc = read_doc();
    int examples = 0;
    const char *routes[] = {"/healthz", "/api/v1/status", "/api/v1/agents\"", "/api/v1/agents/",
                            "/api/v1/sessions?", "/api/v1/sessions/", "/api/v1/events?",
                            "/api/v1/events/count", "/api/v1/stream", "/api/v1/alerts?",
                            "/ack", "/metrics", "/api/v1/responses?", "/api/v1/responses/",
                            "/halt"};
    int seen[sizeof routes / sizeof routes[0]] = {0};
    for (char *p = strstr(doc, "```sh\n"); p; p = strstr(p, "```sh\n")) {
        p += 6;
        char *end = strstr(p, "```");
        CHECK(end != NULL);
        *end = 0;
        long expect = 200;
        char *cmd = NULL;
        for (char *line = p; *line;) {
            char *nl = strchr(line, '\n');
            if (nl) {
                *nl = 0;
            }
            if (!strncmp(line, "# expect ", 9)) {
                expect = strtol(line + 9, NULL, 10);
            } else if (!strncmp(line, "curl ", 5)) {
                cmd = line;
            }
            line = nl ? nl + 1 : line + strlen(line);
        }
        CHECK_MSG(cmd != NULL, "an sh block without a curl command");
        char *body;
        long got = run_example(cmd, s.http, &body);
        CHECK_MSG(got == expect, "%s: HTTP %ld, the doc says %ld (%.200s)", cmd, got, expect, body);
        if (!strstr(cmd, "/metrics") && !strstr(cmd, "/stream")) {
            CHECK_MSG(body[0] == '{', "%s: not JSON: %.200s", cmd, body);
        }
        if (expect == 200 || expect == 202) {
            for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
                seen[i] |= strstr(cmd, routes[i]) != NULL;
            }
        }
        free(body);
        examples++;
        p = end + 3;
    }
    CHECK_MSG(examples >= 15, "only %d examples", examples);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        CHECK_MSG(seen[i], "no working example for %s", routes[i]);
    }
    free(doc);
    tt_test_serve_stop(&s);
}

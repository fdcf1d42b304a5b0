/*
 * test_http_doc.c - every example of docs/http-api.md, run against a real collector: each
 * ```sh block holds one curl command and an optional "# expect STATUS" line; the command runs
 * in a shell with TELLTALE_HTTP and TOKEN set, and must answer that status (200 by default)
 * with a JSON body (except /metrics, the live stream and the dashboard's files). Every route of
 * the table in src/collector/api/http.c needs a working example: a route added without one, or an
 * example that no longer works, fails here.
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

/* The route table of src/collector/api/http.c: every route must have a working example. */
#define ROUTES_MAX 64

struct route {
    char method[8];
    char path[128];
    int seen;
};

static int load_routes(struct route *out)
{
    char path[1024], line[512];
    const char *src = getenv("TT_SRCDIR");
    snprintf(path, sizeof path, "%s/src/collector/api/http.c", src ? src : ".");
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot read %s", path);
    int n = 0, in_table = 0;
    while (fgets(line, sizeof line, f) && n < ROUTES_MAX) {
        if (strstr(line, "routes[] = {")) {
            in_table = 1;
        } else if (in_table && strstr(line, "};")) {
            break;
        } else if (in_table &&
                   sscanf(line, " {\"%7[A-Z]\", \"%127[^\"]\"", out[n].method, out[n].path) == 2) {
            out[n].seen = 0;
            n++;
        }
    }
    fclose(f);
    return n;
}

/* Whether url's path (up to ? or end) matches a route path with {param} segments. */
static int path_matches(const char *route, const char *url)
{
    while (*route && *url && *url != '?') {
        if (*route != '/' || *url != '/') {
            return 0;
        }
        route++;
        url++;
        size_t rn = strcspn(route, "/"), un = strcspn(url, "/?");
        if (!(rn > 2 && route[0] == '{') && (rn != un || memcmp(route, url, rn) != 0)) {
            return 0;
        }
        if (un == 0 && rn != 0) {
            return 0;
        }
        route += rn;
        url += un;
    }
    return *route == 0 && (*url == 0 || *url == '?');
}

static void mark_route(struct route *routes, int n, const char *cmd)
{
    const char *u = strstr(cmd, "$TELLTALE_HTTP");
    if (!u) {
        return;
    }
    char url[1024];
    snprintf(url, sizeof url, "%s", u + 14);
    url[strcspn(url, "\" ")] = 0;
    const char *method = strstr(cmd, "-X POST") ? "POST" : "GET";
    for (int i = 0; i < n; i++) {
        if (!strcmp(routes[i].method, method) && path_matches(routes[i].path, url)) {
            routes[i].seen = 1;
        }
    }
}

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
    CHECK_EQ(tt_test_http_auth(s->http, "GET", "/api/v1/sessions/demo-session", TOKEN, &body), 200);
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
    struct route routes[ROUTES_MAX];
    int n_routes = load_routes(routes);
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
        if (!strstr(cmd, "/metrics") && !strstr(cmd, "/stream") && !strstr(cmd, "/assets/") &&
            !strstr(cmd, "$TELLTALE_HTTP/\"")) {
            CHECK_MSG(body[0] == '{', "%s: not JSON: %.200s", cmd, body);
        }
        if (expect == 200 || expect == 202) {
            mark_route(routes, n_routes, cmd);
        }
        free(body);
        examples++;
        p = end + 3;
    }
    CHECK_MSG(examples >= 15, "only %d examples", examples);
    CHECK_MSG(n_routes >= 15, "only %d routes found in src/collector/api/http.c", n_routes);
    for (int i = 0; i < n_routes; i++) {
        CHECK_MSG(routes[i].seen, "no working example for %s %s", routes[i].method, routes[i].path);
    }
    free(doc);
    tt_test_serve_stop(&s);
}

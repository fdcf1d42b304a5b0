/*
 * test_otlp.c - OTLP/HTTP ingest (docs/otel.md) of a real `telltale serve`: the official
 * OpenTelemetry JS SDK (tests/otel, its OTLP protobuf and JSON exporters) sends GenAI spans and
 * the HTTP API shows them as a session's steps and responses with the right names, kinds,
 * latencies, tokens and ids, a resent export stored once; hand-made requests check the
 * answers: malformed bodies, limits, content types, gzip, the ingest token rules and partial
 * success.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zlib.h>

#include "common/pb.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

#define TOKEN "tok-otel-agent-0123456789abcdef"
#define OTHER_TOKEN "tok-other-agent-0123456789abcdef"

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

/* DIR/ingest.tokens (mode 0600) with lines (AGENT TOKEN per line); its path, in a static
 * buffer. */
static const char *tokens_file(const char *lines)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/ingest.tokens", tt_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs(lines, f);
    CHECK(fclose(f) == 0);
    CHECK(chmod(path, 0600) == 0);
    return path;
}

/* A collector whose ingest tokens give TOKEN to otel-agent and OTHER_TOKEN to other-agent. */
static void start_with_tokens(struct tt_test_serve *s, const char *name)
{
    tt_test_serve_start(s, name, "--ingest-tokens",
                        tokens_file("otel-agent " TOKEN "\nother-agent " OTHER_TOKEN "\n"), NULL);
}

struct answer {
    long status;
    char *body;
    size_t len;
    char ctype[128];
    char retry_after[32];
    char challenge[128];
};

static size_t on_header(char *p, size_t size, size_t n, void *cls)
{
    struct answer *a = cls;
    size_t len = size * n;
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), p);
    line[strcspn(line, "\r\n")] = 0;
    if (strncasecmp(line, "Content-Type: ", 14) == 0) {
        snprintf(a->ctype, sizeof a->ctype, "%.100s", line + 14);
    } else if (strncasecmp(line, "Retry-After: ", 13) == 0) {
        snprintf(a->retry_after, sizeof a->retry_after, "%.20s", line + 13);
    } else if (strncasecmp(line, "WWW-Authenticate: ", 18) == 0) {
        snprintf(a->challenge, sizeof a->challenge, "%.100s", line + 18);
    }
    return len;
}

/* POST body to http://HTTP/PATH with the given headers (NULL: left out). */
static void post_to(const char *http, const char *path, const char *ctype, const char *encoding,
                    const char *token, const void *body, size_t len, struct answer *a)
{
    memset(a, 0, sizeof *a);
    CURL *h = curl_easy_init();
    char url[512], hdr[3][600];
    snprintf(url, sizeof url, "http://%s%s", http, path);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    if (ctype) {
        snprintf(hdr[0], sizeof hdr[0], "Content-Type: %s", ctype);
        hdrs = curl_slist_append(hdrs, hdr[0]);
    }
    if (encoding) {
        snprintf(hdr[1], sizeof hdr[1], "Content-Encoding: %s", encoding);
        hdrs = curl_slist_append(hdrs, hdr[1]);
    }
    if (token) {
        snprintf(hdr[2], sizeof hdr[2], "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, hdr[2]);
    }
    struct tt_test_body b = {NULL, 0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tt_test_curl_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    a->status = -1;
    /* A request refused on its headers is answered while curl still sends the body, and the
     * collector closes the connection: curl may then report a send error after the status. */
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (cc == CURLE_OK || code != 0) {
        a->status = code;
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    a->body = b.p ? b.p : strdup("");
    a->len = b.n;
}

static void post(const char *http, const char *ctype, const char *encoding, const char *token,
                 const void *body, size_t len, struct answer *a)
{
    post_to(http, "/v1/traces", ctype, encoding, token, body, len, a);
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

static long long events_stored(const char *http)
{
    json_t *j = api_json(http, "/api/v1/events/count");
    long long n = json_integer_value(json_object_get(j, "count"));
    json_decref(j);
    return n;
}

/* A JSON export of one resource (service) with n spans of trace "0102..." named by their
 * span ids; extra is put into each span's fields (for example a status). */
static char *json_export(const char *service, int n, const char *conv, const char *extra)
{
    size_t cap = 4096 + (size_t)n * 1024;
    char *b = malloc(cap);
    CHECK(b);
    int off = snprintf(b, cap,
                       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service."
                       "name\",\"value\":{\"stringValue\":\"%s\"}}]},\"scopeSpans\":[{\"scope\":{"
                       "\"name\":\"t\"},\"spans\":[",
                       service);
    for (int i = 0; i < n; i++) {
        off += snprintf(b + off, cap - (size_t)off,
                        "%s{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":"
                        "\"%016x\",\"name\":\"tool-%d\",\"kind\":1,"
                        "\"startTimeUnixNano\":\"1796000000000000000\",\"endTimeUnixNano\":"
                        "%llu,\"attributes\":[{\"key\":\"gen_ai.operation.name\",\"value\":{"
                        "\"stringValue\":\"execute_tool\"}},{\"key\":\"gen_ai.conversation.id\","
                        "\"value\":{\"stringValue\":\"%s\"}}]%s%s}",
                        i ? "," : "", i + 1, i, 1796000000000000000ull + 1000000ull * (i + 1), conv,
                        extra ? "," : "", extra ? extra : "");
    }
    snprintf(b + off, cap - (size_t)off, "]}]}]}");
    return b;
}

/* --- the JS SDK ------------------------------------------------------------------------------ */

struct js_span {
    char name[64], trace[40], span[24];
};

/* When set, the SDK exports over HTTPS and trusts this CA file (a collector with --https). */
static const char *sdk_https_ca;

/* Run tests/otel/SCRIPT against s's /v1/PATH; for send.mjs its span lines into spans (4). */
static void run_sdk_script(const struct tt_test_serve *s, const char *name, const char *path,
                           const char *protocol, const char *session, int exports,
                           struct js_span *spans)
{
    const char *src = env_or("TT_SRCDIR", ".");
    char script[4096], url[512], out[4096], n[16];
    snprintf(script, sizeof script, "%s/tests/otel/%s", src, name);
    snprintf(url, sizeof url, "%s://%s/v1/%s", sdk_https_ca ? "https" : "http", s->http, path);
    snprintf(out, sizeof out, "%s/sdk-%s-%s.out", tt_test_tmpdir(), path, protocol);
    snprintf(n, sizeof n, "%d", exports);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setenv("TT_OTLP_URL", url, 1);
        setenv("TT_OTLP_TOKEN", TOKEN, 1);
        setenv("TT_OTLP_PROTOCOL", protocol, 1);
        setenv("TT_OTLP_SESSION", session, 1);
        setenv("TT_OTLP_EXPORTS", n, 1);
        if (sdk_https_ca) {
            setenv("NODE_EXTRA_CA_CERTS", sdk_https_ca, 1); /* Node's own trust store, plus it */
        }
        FILE *o = freopen(out, "w", stdout);
        (void)o;
        execlp("node", "node", script, (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "%s (%s) failed with status %d (tests/otel/node_modules missing?)", name, protocol,
              st);
    FILE *f = fopen(out, "r");
    CHECK(f);
    char line[512];
    int ns = 0, ne = 0;
    while (fgets(line, sizeof line, f)) {
        struct js_span sp;
        int code;
        if (spans && sscanf(line, "span %63s %39s %23s", sp.name, sp.trace, sp.span) == 3 &&
            ns < 4) {
            spans[ns++] = sp;
        } else if (sscanf(line, "export %d", &code) == 1) {
            CHECK_EQ(code, 0);
            ne++;
        }
    }
    fclose(f);
    CHECK_EQ(ns, spans ? 4 : 0);
    CHECK_EQ(ne, exports);
}

static void run_sdk(const struct tt_test_serve *s, const char *protocol, const char *session,
                    int exports, struct js_span *spans)
{
    run_sdk_script(s, "send.mjs", "traces", protocol, session, exports, spans);
}

static const struct js_span *by_name(const struct js_span *spans, const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(spans[i].name, name) == 0) {
            return &spans[i];
        }
    }
    tt_test_fail(__FILE__, __LINE__, "no span %s from send.mjs", name);
}

static json_t *find_step(json_t *steps, const char *id)
{
    size_t i;
    json_t *st;
    json_array_foreach(steps, i, st)
    {
        if (strcmp(json_string_value(json_object_get(st, "step_id")), id) == 0) {
            return st;
        }
        json_t *c = find_step(json_object_get(st, "children"), id);
        if (c) {
            return c;
        }
    }
    return NULL;
}

static void check_step(json_t *steps, const struct js_span *sp, const char *parent,
                       const char *kind, const char *name, long long latency_ms, const char *status)
{
    json_t *st = find_step(steps, sp->span);
    CHECK_MSG(st, "no step %s (%s)", sp->span, sp->name);
    CHECK_MSG(strcmp(json_string_value(json_object_get(st, "kind")), kind) == 0, "%s kind %s",
              sp->name, json_string_value(json_object_get(st, "kind")));
    CHECK_MSG(strcmp(json_string_value(json_object_get(st, "name")), name) == 0, "%s name %s",
              sp->name, json_string_value(json_object_get(st, "name")));
    CHECK_EQ(json_integer_value(json_object_get(st, "latency_ns")), latency_ms * 1000000);
    CHECK_MSG(strcmp(json_string_value(json_object_get(st, "status")), status) == 0, "%s status %s",
              sp->name, json_string_value(json_object_get(st, "status")));
    const char *p = json_string_value(json_object_get(st, "parent_id"));
    if (parent) {
        CHECK_MSG(p && strcmp(p, parent) == 0, "%s parent %s", sp->name, p ? p : "none");
    } else {
        CHECK_MSG(!p || strcmp(p, "0000000000000000") == 0, "%s has a parent", sp->name);
    }
    /* The W3C trace context is the SDK's own: its trace id, its span id, its parent span. */
    const char *tr = json_string_value(json_object_get(st, "trace_id"));
    const char *sid = json_string_value(json_object_get(st, "span_id"));
    const char *ps = json_string_value(json_object_get(st, "parent_span_id"));
    CHECK_MSG(tr && strcmp(tr, sp->trace) == 0, "%s trace %s", sp->name, tr ? tr : "none");
    CHECK_MSG(sid && strcmp(sid, sp->span) == 0, "%s span %s", sp->name, sid ? sid : "none");
    CHECK_MSG(parent ? ps && strcmp(ps, parent) == 0 : ps == NULL, "%s parent span %s", sp->name,
              ps ? ps : "none");
}

static void sdk_spans_show_up(const char *protocol)
{
    struct tt_test_serve s;
    start_with_tokens(&s, protocol);
    struct js_span spans[4];
    char session[64];
    snprintf(session, sizeof session, "conv-%s", protocol);
    /* Exported twice: a retry after a lost answer must not be stored twice. */
    run_sdk(&s, protocol, session, 2, spans);
    const struct js_span *agent = by_name(spans, "invoke_agent_planner");
    const struct js_span *chat = by_name(spans, "chat_gpt-4o-mini");
    const struct js_span *tool = by_name(spans, "execute_tool_get_weather");
    const struct js_span *failed = by_name(spans, "execute_tool_search");

    char path[256];
    snprintf(path, sizeof path, "/api/v1/sessions/%s", session);
    json_t *sess = api_json(s.http, path);
    CHECK(strcmp(json_string_value(json_object_get(sess, "agent")), "otel-agent") == 0);
    json_t *steps = json_object_get(sess, "steps");
    CHECK_EQ(json_integer_value(json_object_get(sess, "steps_total")), 4);
    check_step(steps, agent, NULL, "agent", "invoke_agent planner", 2000, "ok");
    check_step(steps, chat, agent->span, "llm", "chat gpt-4o-mini", 750, "ok");
    check_step(steps, tool, agent->span, "tool", "get_weather", 250, "ok");
    check_step(steps, failed, agent->span, "tool", "search", 300, "error");
    json_t *fs = find_step(steps, failed->span);
    CHECK(strcmp(json_string_value(json_object_get(fs, "error")), "search timed out") == 0);
    /* 4 steps (begin and end) and one response (begin and end) */
    CHECK_EQ(json_integer_value(json_object_get(sess, "events")), 10);
    json_decref(sess);

    snprintf(path, sizeof path, "/api/v1/responses/%s", chat->span);
    json_t *resp = api_json(s.http, path);
    json_t *r = json_object_get(resp, "response") ? json_object_get(resp, "response") : resp;
    CHECK(strcmp(json_string_value(json_object_get(r, "model")), "gpt-4o-mini") == 0);
    CHECK(strcmp(json_string_value(json_object_get(r, "session")), session) == 0);
    CHECK(strcmp(json_string_value(json_object_get(r, "step_id")), chat->span) == 0);
    CHECK_EQ(json_integer_value(json_object_get(r, "tokens")), 42);
    CHECK_EQ(json_integer_value(json_object_get(r, "duration_ns")), 750000000);
    json_t *params = json_object_get(r, "params");
    CHECK_EQ(json_integer_value(json_object_get(params, "gen_ai.usage.input_tokens")), 120);
    CHECK_EQ(json_integer_value(json_object_get(params, "gen_ai.usage.output_tokens")), 42);
    CHECK(strcmp(json_string_value(json_object_get(params, "gen_ai.provider.name")), "openai") ==
          0);
    CHECK(strcmp(json_string_value(json_object_get(params, "trace_id")), chat->trace) == 0);
    CHECK(strcmp(json_string_value(json_object_get(r, "trace_id")), chat->trace) == 0);
    CHECK(strcmp(json_string_value(json_object_get(r, "span_id")), chat->span) == 0);
    CHECK(strcmp(json_string_value(json_object_get(r, "parent_span_id")), agent->span) == 0);
    json_decref(resp);

    /* Stored once although exported twice. */
    CHECK_EQ(events_stored(s.http), 10);
    tt_test_serve_stop(&s);
}

TEST_T(otlp_js_sdk_protobuf_spans_become_steps_and_responses_stored_once, 120)
{
    sdk_spans_show_up("proto");
}

TEST_T(otlp_js_sdk_json_spans_become_steps_and_responses_stored_once, 120)
{
    sdk_spans_show_up("json");
}

/* --- answers --------------------------------------------------------------------------------- */

/* The rejected spans of a 200 JSON answer (0 when there is no partialSuccess). */
static long long rejected_json(const struct answer *a, char *msg, size_t n)
{
    json_t *j = json_loads(a->body, 0, NULL);
    CHECK_MSG(j, "not JSON: %s", a->body);
    json_t *ps = json_object_get(j, "partialSuccess");
    long long r = 0;
    msg[0] = 0;
    if (ps) {
        const char *rs = json_string_value(json_object_get(ps, "rejectedSpans"));
        CHECK_MSG(rs, "rejectedSpans is not a decimal string: %s", a->body);
        r = atoll(rs);
        snprintf(msg, n, "%s", json_string_value(json_object_get(ps, "errorMessage")));
    }
    json_decref(j);
    return r;
}

TEST(otlp_token_rules_decide_who_may_export_and_as_which_agent)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "tokens");
    char *body = json_export("otel-agent", 2, "c-tok", NULL);
    struct answer a;
    post(s.http, "application/json", NULL, NULL, body, strlen(body), &a);
    CHECK_MSG(a.status == 401, "no token: %ld %s", a.status, a.body);
    CHECK(strncmp(a.challenge, "Bearer", 6) == 0);
    CHECK(strstr(a.body, "\"code\":16")); /* google.rpc.Status UNAUTHENTICATED */
    free(a.body);
    post(s.http, "application/json", NULL, "not-a-token", body, strlen(body), &a);
    CHECK_MSG(a.status == 403, "wrong token: %ld %s", a.status, a.body);
    free(a.body);
    /* The operator token is not an ingest token. */
    post(s.http, "application/json", NULL, s.token, body, strlen(body), &a);
    CHECK_EQ(a.status, 403);
    free(a.body);
    CHECK_EQ(events_stored(s.http), 0);
    /* Another agent's token: its spans are refused, as partial success. */
    char msg[256];
    post(s.http, "application/json", NULL, OTHER_TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "other agent: %ld %s", a.status, a.body);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 2);
    CHECK(strstr(msg, "service.name"));
    free(a.body);
    CHECK_EQ(events_stored(s.http), 0);
    post(s.http, "application/json", NULL, TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "right token: %ld %s", a.status, a.body);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 0);
    free(a.body);
    CHECK_EQ(events_stored(s.http), 4);
    free(body);
    /* A resource without service.name belongs to the token's agent. */
    const char *anon =
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
        "\"0102030405060708090a0b0c0d0e0f11\",\"spanId\":\"1111111111111111\",\"name\":\"x\","
        "\"startTimeUnixNano\":1796000000000000000,\"endTimeUnixNano\":1796000000001000000}]}]}]}";
    post(s.http, "application/json", NULL, OTHER_TOKEN, anon, strlen(anon), &a);
    CHECK_EQ(a.status, 200);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 0);
    free(a.body);
    json_t *ag = api_json(s.http, "/api/v1/agents/other-agent");
    json_decref(ag);
    tt_test_serve_stop(&s);
}

TEST(otlp_without_ingest_tokens_needs_ingest_open_and_a_loopback_peer)
{
    struct tt_test_serve s;
    char *body = json_export("open-agent", 1, "c-open", NULL);
    struct answer a;
    tt_test_serve_start(&s, "closed", TT_TEST_NO_INGEST_OPEN, NULL);
    post(s.http, "application/json", NULL, NULL, body, strlen(body), &a);
    CHECK_MSG(a.status == 401, "closed: %ld %s", a.status, a.body);
    free(a.body);
    post(s.http, "application/json", NULL, "anything", body, strlen(body), &a);
    CHECK_EQ(a.status, 403);
    free(a.body);
    CHECK_EQ(events_stored(s.http), 0);
    tt_test_serve_stop(&s);

    tt_test_serve_start(&s, "open", NULL); /* --ingest-open */
    post(s.http, "application/json", NULL, NULL, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "open: %ld %s", a.status, a.body);
    free(a.body);
    CHECK_EQ(events_stored(s.http), 2);
    json_t *ag = api_json(s.http, "/api/v1/agents/open-agent");
    json_decref(ag);
    free(body);
    tt_test_serve_stop(&s);
}

TEST(otlp_malformed_bodies_and_content_types_are_refused_with_the_right_status)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "malformed");
    struct answer a;
    const char *garbage = "\x0a\xff\xff\xff\xff\x0f"; /* a length far past the end */
    post(s.http, "application/x-protobuf", NULL, TOKEN, garbage, 6, &a);
    CHECK_MSG(a.status == 400, "pb: %ld", a.status);
    CHECK(strcmp(a.ctype, "application/x-protobuf") == 0);
    /* google.rpc.Status { code = 3 (INVALID_ARGUMENT), message } */
    CHECK(a.len > 2 && (unsigned char)a.body[0] == 0x08 && a.body[1] == 3);
    free(a.body);
    post(s.http, "application/json", NULL, TOKEN, "{\"resourceSpans\":[", 18, &a);
    CHECK_EQ(a.status, 400);
    CHECK(strstr(a.body, "\"code\":3"));
    free(a.body);
    const char *bad_id = "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\","
                         "\"spanId\":\"1111111111111111\"}]}]}]}";
    post(s.http, "application/json", NULL, TOKEN, bad_id, strlen(bad_id), &a);
    CHECK_EQ(a.status, 400);
    CHECK(strstr(a.body, "traceId"));
    free(a.body);
    post(s.http, "text/plain", NULL, TOKEN, "hello", 5, &a);
    CHECK_EQ(a.status, 415);
    free(a.body);
    post(s.http, NULL, NULL, TOKEN, "hello", 5, &a);
    CHECK_EQ(a.status, 415);
    free(a.body);
    post(s.http, "application/json", "br", TOKEN, "{}", 2, &a);
    CHECK_EQ(a.status, 415);
    free(a.body);
    post(s.http, "application/json", "gzip", TOKEN, "{}", 2, &a);
    CHECK_EQ(a.status, 400);
    free(a.body);
    /* An empty request is a valid one. */
    post(s.http, "application/x-protobuf", NULL, TOKEN, "", 0, &a);
    CHECK_EQ(a.status, 200);
    CHECK_EQ(a.len, 0);
    free(a.body);
    CHECK_EQ(events_stored(s.http), 0);
    tt_test_serve_stop(&s);
}

static size_t gzip_buf(const void *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    return len;
}

TEST(otlp_limits_body_size_gzip_bombs_attributes_and_partial_success)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "limits");
    struct answer a;
    char msg[256];
    /* Above 4 MiB: refused before it is buffered. */
    size_t big = (4u << 20) + 1;
    char *huge = calloc(1, 5u << 20);
    CHECK(huge);
    post(s.http, "application/x-protobuf", NULL, TOKEN, huge, big, &a);
    CHECK_MSG(a.status == 413, "huge: %ld", a.status);
    free(a.body);
    /* 5 MiB of zeros gzip to a few KiB: the decompressed limit holds. */
    size_t zcap = 64u << 10;
    uint8_t *z = malloc(zcap);
    size_t zn = gzip_buf(huge, 5u << 20, z, zcap);
    post(s.http, "application/x-protobuf", "gzip", TOKEN, z, zn, &a);
    CHECK_MSG(a.status == 413, "gzip bomb: %ld %s", a.status, a.body);
    free(a.body);
    free(huge);
    /* gzip works. */
    char *body = json_export("otel-agent", 3, "c-gz", NULL);
    CHECK(zn < zcap / 2); /* a bomb indeed */
    zn = gzip_buf(body, strlen(body), z, zcap);
    post(s.http, "application/json", "gzip", TOKEN, z, zn, &a);
    CHECK_MSG(a.status == 200, "gzip: %ld %s", a.status, a.body);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 0);
    free(a.body);
    free(body);
    free(z);
    CHECK_EQ(events_stored(s.http), 6);
    /* 300 attributes on each span: refused spans, reported as partial success. */
    size_t cap = 64u << 10;
    char *attrs = malloc(cap);
    int off = snprintf(attrs, cap, "\"attributes\":[");
    for (int i = 0; i < 300; i++) {
        off += snprintf(attrs + off, cap - (size_t)off,
                        "%s{\"key\":\"k%d\",\"value\":{\"intValue\":\"%d\"}}", i ? "," : "", i, i);
    }
    snprintf(attrs + off, cap - (size_t)off, "]");
    size_t bcap = 256u << 10;
    body = malloc(bcap);
    snprintf(body, bcap,
             "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
             "\"0102030405060708090a0b0c0d0e0f12\",\"spanId\":\"2222222222222222\",\"name\":"
             "\"many\",\"startTimeUnixNano\":\"1796000000000000000\",\"endTimeUnixNano\":"
             "\"1796000000001000000\",%s},{\"traceId\":\"0102030405060708090a0b0c0d0e0f12\","
             "\"spanId\":\"3333333333333333\",\"name\":\"fine\",\"startTimeUnixNano\":"
             "\"1796000000000000000\",\"endTimeUnixNano\":\"1796000000002000000\"},{\"traceId\":"
             "\"0102030405060708090a0b0c0d0e0f12\",\"spanId\":\"4444444444444444\",\"name\":"
             "\"backwards\",\"startTimeUnixNano\":\"1796000000002000000\",\"endTimeUnixNano\":"
             "\"1796000000001000000\"},{\"traceId\":\"0102030405060708090a0b0c0d0e0f12\","
             "\"spanId\":\"5555555555555555\",\"name\":\"beyond 2262\",\"startTimeUnixNano\":"
             "\"1796000000000000000\",\"endTimeUnixNano\":\"18446744073709551615\"}]}]}]}",
             attrs);
    free(attrs);
    post(s.http, "application/json", NULL, TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "partial: %ld %s", a.status, a.body);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 3);
    CHECK(msg[0]);
    free(a.body);
    free(body);
    CHECK_EQ(events_stored(s.http), 8); /* "fine" alone: its begin and end */
    json_t *st = api_json(s.http, "/api/v1/sessions/0102030405060708090a0b0c0d0e0f12");
    CHECK_EQ(json_integer_value(json_object_get(st, "steps_total")), 1);
    json_decref(st);
    tt_test_serve_stop(&s);
}

/* The same spans in protobuf, by hand: the partial success answer in protobuf, and a resend. */
static size_t pb_export(uint8_t *out, const char *service, uint64_t end_ns)
{
    uint8_t kv[256], res[300], span[512], scope[600], rs[1024];
    uint8_t *q;
    /* AnyValue { string_value = 1 } inside KeyValue { key = 1, value = 2 } */
    uint8_t av[128];
    q = tt__pb_put_bytes(av, 1, service, strlen(service));
    size_t avn = (size_t)(q - av);
    q = tt__pb_put_bytes(kv, 1, "service.name", 12);
    q = tt__pb_put_bytes(q, 2, av, avn);
    size_t kvn = (size_t)(q - kv);
    q = tt__pb_put_bytes(res, 1, kv, kvn); /* Resource.attributes */
    size_t resn = (size_t)(q - res);
    static const uint8_t trace[16] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1};
    static const uint8_t sid[8] = {0xab, 0xcd, 0, 0, 0, 0, 0, 1};
    q = tt__pb_put_bytes(span, 1, trace, 16);
    q = tt__pb_put_bytes(q, 2, sid, 8);
    q = tt__pb_put_bytes(q, 5, "pb-step", 7);
    q = tt__pb_put_fixed64(q, 7, 1796000000000000000ull);
    q = tt__pb_put_fixed64(q, 8, end_ns);
    size_t spn = (size_t)(q - span);
    q = tt__pb_put_bytes(scope, 2, span, spn); /* ScopeSpans.spans */
    size_t scn = (size_t)(q - scope);
    q = tt__pb_put_bytes(rs, 1, res, resn);
    q = tt__pb_put_bytes(q, 2, scope, scn);
    size_t rsn = (size_t)(q - rs);
    q = tt__pb_put_bytes(out, 1, rs, rsn);
    return (size_t)(q - out);
}

TEST(otlp_protobuf_partial_success_and_a_resent_export_stored_once)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "pb");
    struct answer a;
    uint8_t body[4096];
    /* A span that ends before it starts: refused, reported in the protobuf answer. */
    size_t n = pb_export(body, "otel-agent", 1795000000000000000ull);
    post(s.http, "application/x-protobuf", NULL, TOKEN, body, n, &a);
    CHECK_EQ(a.status, 200);
    CHECK(strcmp(a.ctype, "application/x-protobuf") == 0);
    /* ExportTraceServiceResponse { partial_success = 1 { rejected_spans = 1: 1, message } } */
    CHECK_MSG(a.len > 4 && (unsigned char)a.body[0] == 0x0a && (unsigned char)a.body[2] == 0x08 &&
                  a.body[3] == 1,
              "answer of %zu bytes", a.len);
    free(a.body);
    CHECK_EQ(events_stored(s.http), 0);
    n = pb_export(body, "otel-agent", 1796000000005000000ull);
    for (int i = 0; i < 3; i++) {
        post(s.http, "application/x-protobuf", NULL, TOKEN, body, n, &a);
        CHECK_EQ(a.status, 200);
        CHECK_EQ(a.len, 0); /* all accepted: an empty response */
        free(a.body);
    }
    CHECK_EQ(events_stored(s.http), 2);
    json_t *sess = api_json(s.http, "/api/v1/sessions/09090909090909090909090909090901");
    json_t *st = json_array_get(json_object_get(sess, "steps"), 0);
    CHECK(strcmp(json_string_value(json_object_get(st, "step_id")), "abcd000000000001") == 0);
    CHECK(strcmp(json_string_value(json_object_get(st, "kind")), "other") == 0);
    CHECK_EQ(json_integer_value(json_object_get(st, "latency_ns")), 5000000);
    json_decref(sess);
    tt_test_serve_stop(&s);
}

/* A request refused on its headers (type, token, size) has its body dropped as it arrives,
 * never buffered, and is answered once the body is in: a large body still gets the answer, not
 * a connection reset. */
TEST(otlp_refusals_on_the_headers_answer_cleanly_after_a_large_body)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "early");
    size_t n = 3u << 20;
    char *body = calloc(1, 5u << 20);
    CHECK(body);
    struct answer a;
    for (int i = 0; i < 3; i++) {
        post(s.http, "application/x-protobuf", NULL, NULL, body, n, &a);
        CHECK_MSG(a.status == 401, "no token: %ld", a.status);
        free(a.body);
        post(s.http, "application/x-protobuf", NULL, "wrong", body, n, &a);
        CHECK_MSG(a.status == 403, "wrong token: %ld", a.status);
        free(a.body);
        post(s.http, "text/plain", NULL, TOKEN, body, n, &a);
        CHECK_MSG(a.status == 415, "content type: %ld", a.status);
        free(a.body);
        post(s.http, "application/x-protobuf", NULL, TOKEN, body, 5u << 20, &a);
        CHECK_MSG(a.status == 413, "too large: %ld", a.status);
        free(a.body);
    }
    free(body);
    CHECK_EQ(events_stored(s.http), 0);
    tt_test_serve_stop(&s);
}

/* --- logs ------------------------------------------------------------------------------------ */

static json_t *session_logs(const char *http, const char *session)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/events?session=%s&kind=log", session);
    json_t *j = api_json(http, path);
    json_t *ev = json_incref(json_object_get(j, "events"));
    json_decref(j);
    return ev;
}

TEST_T(otlp_js_sdk_log_records_become_logs_with_severity_and_attributes_stored_once, 120)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "logs");
    const char *protocols[] = {"proto", "json"};
    for (int p = 0; p < 2; p++) {
        char session[64];
        snprintf(session, sizeof session, "logs-%s", protocols[p]);
        run_sdk_script(&s, "send-logs.mjs", "logs", protocols[p], session, 2, NULL);
        json_t *ev = session_logs(s.http, session);
        CHECK_MSG(json_array_size(ev) == 2, "%s: %zu logs", protocols[p], json_array_size(ev));
        json_t *a = json_array_get(ev, 0), *b = json_array_get(ev, 1);
        CHECK(strcmp(json_string_value(json_object_get(a, "agent")), "otel-agent") == 0);
        CHECK(strcmp(json_string_value(json_object_get(a, "message")), "planning the trip") == 0);
        CHECK_EQ(json_integer_value(json_object_get(a, "severity_number")), 9);
        CHECK(strcmp(json_string_value(json_object_get(b, "message")),
                     "weather service unreachable") == 0);
        CHECK_EQ(json_integer_value(json_object_get(b, "severity_number")), 17);
        CHECK_EQ(json_integer_value(json_object_get(b, "time_unix_ns")) -
                     json_integer_value(json_object_get(a, "time_unix_ns")),
                 10000000);
        json_t *attrs = json_object_get(b, "attrs");
        CHECK_EQ(json_integer_value(json_object_get(attrs, "retries")), 3);
        CHECK(json_is_false(json_object_get(attrs, "fatal")));
        CHECK(json_real_value(json_object_get(attrs, "load")) == 0.75);
        json_decref(ev);
    }
    CHECK_EQ(events_stored(s.http), 4); /* each exported twice, stored once */
    tt_test_serve_stop(&s);
}

TEST(otlp_logs_answers_partial_success_malformed_bodies_and_tokens)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "logs-answers");
    struct answer a;
    char msg[256];
    const char *body =
        "{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{"
        "\"stringValue\":\"otel-agent\"}}]},\"scopeLogs\":[{\"logRecords\":[{\"timeUnixNano\":"
        "\"1796000000000000000\",\"severityNumber\":13,\"body\":{\"stringValue\":\"warn\"},"
        "\"traceId\":\"0102030405060708090a0b0c0d0e0f77\"},{\"timeUnixNano\":"
        "\"1796000000000000001\",\"severityNumber\":99},{\"severityNumber\":9}]}]}]}";
    post_to(s.http, "/v1/logs", "application/json", NULL, NULL, body, strlen(body), &a);
    CHECK_EQ(a.status, 401);
    free(a.body);
    post_to(s.http, "/v1/logs", "application/json", NULL, TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "%ld %s", a.status, a.body);
    json_t *j = json_loads(a.body, 0, NULL);
    json_t *ps = json_object_get(j, "partialSuccess");
    CHECK_MSG(ps && strcmp(json_string_value(json_object_get(ps, "rejectedLogRecords")), "2") == 0,
              "%s", a.body);
    snprintf(msg, sizeof msg, "%s", json_string_value(json_object_get(ps, "errorMessage")));
    CHECK(msg[0]);
    json_decref(j);
    free(a.body);
    /* Without a conversation id the trace id is the session. */
    json_t *ev = session_logs(s.http, "0102030405060708090a0b0c0d0e0f77");
    CHECK_EQ(json_array_size(ev), 1);
    CHECK_EQ(json_integer_value(json_object_get(json_array_get(ev, 0), "severity_number")), 13);
    json_decref(ev);
    post_to(s.http, "/v1/logs", "application/json", NULL, TOKEN, "[1,2]", 5, &a);
    CHECK_EQ(a.status, 400);
    free(a.body);
    post_to(s.http, "/v1/logs", "application/x-protobuf", NULL, TOKEN, "\x0a\x05\x12", 3, &a);
    CHECK_EQ(a.status, 400);
    free(a.body);
    /* A protobuf record: LogRecord { time 1, severity_number 2, body 5 } in ScopeLogs 2, in
     * ResourceLogs 2, in the request's resource_logs 1; sent twice, stored once. */
    uint8_t any[32], rec[96], sl[128], rl[160], req[200], *q;
    q = tt__pb_put_bytes(any, 1, "from protobuf", 13);
    size_t anyn = (size_t)(q - any);
    q = tt__pb_put_fixed64(rec, 1, 1796000000000000000ull);
    q = tt__pb_put_uint(q, 2, 21);
    q = tt__pb_put_bytes(q, 5, any, anyn);
    size_t recn = (size_t)(q - rec);
    q = tt__pb_put_bytes(sl, 2, rec, recn);
    size_t sln = (size_t)(q - sl);
    q = tt__pb_put_bytes(rl, 2, sl, sln);
    size_t rln = (size_t)(q - rl);
    q = tt__pb_put_bytes(req, 1, rl, rln);
    size_t reqn = (size_t)(q - req);
    long long before = events_stored(s.http);
    for (int i = 0; i < 2; i++) {
        post_to(s.http, "/v1/logs", "application/x-protobuf", NULL, TOKEN, req, reqn, &a);
        CHECK_EQ(a.status, 200);
        CHECK_EQ(a.len, 0);
        free(a.body);
    }
    CHECK_EQ(events_stored(s.http), before + 1);
    tt_test_serve_stop(&s);
}

/* --- confidence, shutdown, owners, HTTPS --------------------------------------------------- */

/* A JSON export of n chat spans of service otel-agent in conversation conv, span ids
 * first+1 .. first+n, each with 7 output tokens. */
static char *json_chats(int n, int first, const char *conv)
{
    size_t cap = 4096 + (size_t)n * 1024;
    char *b = malloc(cap);
    CHECK(b);
    int off = snprintf(b, cap,
                       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service."
                       "name\",\"value\":{\"stringValue\":\"otel-agent\"}}]},\"scopeSpans\":[{"
                       "\"spans\":[");
    for (int i = 0; i < n; i++) {
        off += snprintf(
            b + off, cap - (size_t)off,
            "%s{\"traceId\":\"0102030405060708090a0b0c0d0e0f20\",\"spanId\":\"00000000000001%02x\","
            "\"name\":\"chat m\",\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\","
            "\"attributes\":[{\"key\":\"gen_ai.operation.name\",\"value\":{\"stringValue\":"
            "\"chat\"}},{\"key\":\"gen_ai.request.model\",\"value\":{\"stringValue\":\"m\"}},{"
            "\"key\":\"gen_ai.usage.output_tokens\",\"value\":{\"intValue\":\"7\"}},{\"key\":"
            "\"gen_ai.conversation.id\",\"value\":{\"stringValue\":\"%s\"}}]}",
            i ? "," : "", first + i + 1, 1796000000000000000ull + 1000000000ull * (uint64_t)i,
            1796000000500000000ull + 1000000000ull * (uint64_t)i, conv);
    }
    snprintf(b + off, cap - (size_t)off, "]}]}]}");
    return b;
}

static size_t incidents_of(const char *http, const char *agent)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/incidents?agent=%s", agent);
    json_t *j = api_json(http, path);
    size_t n = json_array_size(json_object_get(j, "incidents"));
    json_decref(j);
    return n;
}

/* A span has no per-token statistics: its response is stored with no confidence known (null,
 * as the store keeps NaN), not with 0 (which the detectors read as exp(0) = 1) - and the
 * default detectors, which do raise low_confidence for a native agent beside it, raise
 * nothing for the OTLP agent. */
TEST_T(otlp_responses_carry_no_confidence_and_raise_no_low_confidence_incident, 90)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "noconf"); /* the default detectors: low_confidence below 0.1 */
    /* The control: a native agent (other-agent) whose responses are below 0.1 is alerted. */
    tt_client *c = tt_test_client(s.endpoint, "other-agent", "token=" OTHER_TOKEN,
                                  "flush_interval_ms=5", NULL);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(tt_test_emit_response(c, "s-native", 0.05));
    }
    CHECK_OK(tt_flush(c, 10000));
    double t0 = tt_test_now_ms();
    while (incidents_of(s.http, "other-agent") == 0 &&
           tt_test_now_ms() - t0 < 10000 * tt_test_mult()) {
        usleep(50000);
    }
    CHECK_MSG(incidents_of(s.http, "other-agent") == 1, "the native control raised nothing");

    char *body = json_chats(20, 0, "c-noconf");
    struct answer a;
    post(s.http, "application/json", NULL, TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "%ld %s", a.status, a.body);
    free(a.body);
    free(body);
    /* And the JS SDK's chat span. */
    struct js_span spans[4];
    run_sdk(&s, "proto", "c-noconf-sdk", 1, spans);

    json_t *resp = api_json(s.http, "/api/v1/responses/0000000000000101");
    CHECK_EQ(json_integer_value(json_object_get(resp, "tokens")), 7);
    static const char *const figures[] = {"mean_logprob",         "min_logprob",
                                          "perplexity",           "mean_entropy",
                                          "low_confidence_share", "min_window_confidence"};
    for (size_t i = 0; i < sizeof figures / sizeof *figures; i++) {
        CHECK_MSG(json_is_null(json_object_get(resp, figures[i])), "%s is not null", figures[i]);
    }
    json_decref(resp);
    /* The live figures: 21 responses, no confidence sample in them. */
    json_t *ag = api_json(s.http, "/api/v1/agents/otel-agent");
    json_t *agent = json_object_get(ag, "agent") ? json_object_get(ag, "agent") : ag;
    json_t *live = json_object_get(agent, "live");
    CHECK_MSG(live, "no live figures");
    CHECK_EQ(json_integer_value(json_object_get(live, "responses")), 21);
    CHECK_MSG(json_is_null(json_object_get(live, "confidence")), "live confidence %g",
              json_number_value(json_object_get(live, "confidence")));
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(live, "detectors"), i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "detector")), "confidence_drift") == 0) {
            CHECK_EQ(json_integer_value(json_object_get(d, "samples")), 0);
        }
    }
    json_decref(ag);
    CHECK_EQ(incidents_of(s.http, "otel-agent"), 0);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

struct post_job {
    const char *http;
    char *body;
    struct answer a;
};

static void *post_thread(void *arg)
{
    struct post_job *j = arg;
    post(j->http, "application/json", NULL, TOKEN, j->body, strlen(j->body), &j->a);
    return NULL;
}

/* A request whose batch is at the store when the collector stops: the loop ends before its
 * completion, the request answers 503 (Retry-After) and its wait record is freed at the end
 * (LeakSanitizer checks the exit under make test SANITIZE=address); the store committed what
 * it took, so the exporter's retry is a duplicate, stored once. A slow disk (the tests' I/O
 * shim, every sync 1.5 s slower) keeps the batch at the store. */
TEST_T(otlp_request_in_flight_at_shutdown_answers_503_and_is_stored_once, 120)
{
    const char *build = getenv("TT_BUILD");
    CHECK_MSG(build, "TT_BUILD is not set (run through make test)");
    char so[700], asan[1024], ready[700], tokens[700];
    snprintf(so, sizeof so, "%s/tests/libiofault.so", build);
    CHECK_MSG(access(so, R_OK) == 0, "%s is missing (make builds it with the tests)", so);
    snprintf(tokens, sizeof tokens, "%s", tokens_file("otel-agent " TOKEN "\n"));
    const char *old_asan = getenv("ASAN_OPTIONS");
    char *saved = old_asan ? strdup(old_asan) : NULL;
    /* The shim is not built with ASan: a sanitized collector loads it first. */
    snprintf(asan, sizeof asan, "%s%sverify_asan_link_order=0", saved ? saved : "",
             saved ? ":" : "");
    snprintf(ready, sizeof ready, "%s/inflight/ready.json", tt_test_tmpdir());
    setenv("ASAN_OPTIONS", asan, 1);
    setenv("LD_PRELOAD", so, 1);
    setenv("TT_IOFAULT_SLOW_SYNC_MS", "1500", 1);
    setenv("TT_IOFAULT_ARM_FILE", ready, 1); /* start-up is left alone */
    struct tt_test_serve s;
    tt_test_serve_start(&s, "inflight", "--ingest-tokens", tokens, "--grace-ms", "100", NULL);
    unsetenv("LD_PRELOAD");
    unsetenv("TT_IOFAULT_SLOW_SYNC_MS");
    unsetenv("TT_IOFAULT_ARM_FILE");
    if (saved) {
        setenv("ASAN_OPTIONS", saved, 1);
        free(saved);
    } else {
        unsetenv("ASAN_OPTIONS");
    }

    struct post_job job = {s.http, json_chats(3, 0x40, "c-inflight"), {0}};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, post_thread, &job) == 0);
    usleep(500000);         /* decoded and submitted in microseconds; the sync takes 1.5 s */
    tt_test_serve_stop(&s); /* exit status 0: under ASan, nothing leaked */
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_MSG(job.a.status == 503, "in flight at shutdown: %ld %s", job.a.status, job.a.body);
    CHECK(strcmp(job.a.retry_after, "1") == 0);
    free(job.a.body);

    tt_test_serve_restart(&s);
    CHECK_EQ(events_stored(s.http), 12); /* 3 steps and 3 responses, begin and end */
    post(s.http, "application/json", NULL, TOKEN, job.body, strlen(job.body), &job.a);
    CHECK_MSG(job.a.status == 200, "the retry: %ld %s", job.a.status, job.a.body);
    free(job.a.body);
    CHECK_EQ(events_stored(s.http), 12);
    free(job.body);
    tt_test_serve_stop(&s);
}

/* The owners table holds across protocols: an agent name belongs to the identity that stored
 * under it first. Under --ingest-open a native agent and an OTLP exporter of the same user are
 * the same identity (uid:N); once tokens are required, the token's identity (token:AGENT) may
 * not write under that name (partial success, nothing stored), while a fresh name is taken. */
TEST_T(otlp_exporter_cannot_write_under_an_agent_name_another_identity_owns, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "owners", NULL); /* --ingest-open, no tokens */
    tt_client *c = tt_test_client(s.endpoint, "otel-agent", NULL);
    CHECK_OK(tt_log(c, "native", TT_INFO, "first, natively", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    tt_close(c, 5000);
    long long n0 = events_stored(s.http);
    CHECK(n0 >= 1);
    char *body = json_export("otel-agent", 2, "c-owners", NULL);
    struct answer a;
    char msg[256];
    post(s.http, "application/json", NULL, NULL, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "%ld %s", a.status, a.body);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 0); /* the same user: the same identity */
    free(a.body);
    CHECK_EQ(events_stored(s.http), n0 + 4);
    tt_test_serve_stop(&s);

    start_with_tokens(&s, "owners"); /* the same data directory, tokens now */
    free(body);
    body = json_export("otel-agent", 2, "c-owners-2", NULL);
    post(s.http, "application/json", NULL, TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "%ld %s", a.status, a.body);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 2);
    CHECK_MSG(strstr(msg, "another identity"), "%s", msg);
    free(a.body);
    CHECK_EQ(events_stored(s.http), n0 + 4);
    free(body);
    body = json_export("other-agent", 2, "c-owners-3", NULL);
    post(s.http, "application/json", NULL, OTHER_TOKEN, body, strlen(body), &a);
    CHECK_EQ(a.status, 200);
    CHECK_EQ(rejected_json(&a, msg, sizeof msg), 0);
    free(a.body);
    CHECK_EQ(events_stored(s.http), n0 + 8);
    free(body);
    tt_test_serve_stop(&s);
}

/* With --https the OTLP routes are served over TLS like the rest of the port: the JS SDK's
 * exporter that trusts the collector's CA exports, plain HTTP gets no answer. */
TEST_T(otlp_over_https_when_the_collector_serves_https, 120)
{
    char dir[600], cmd[1400], cert[700], key[700], ca[700], tokens[700];
    snprintf(dir, sizeof dir, "%s/pki", tt_test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s/scripts/make-test-pki %s", env_or("TT_SRCDIR", "."), dir);
    CHECK_MSG(system(cmd) == 0, "scripts/make-test-pki failed (is certtool, gnutls-bin, there?)");
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(tokens, sizeof tokens, "%s", tokens_file("otel-agent " TOKEN "\n"));
    struct tt_test_serve s;
    tt_test_serve_start(&s, "https", "--https", "--tls-cert", cert, "--tls-key", key,
                        "--ingest-tokens", tokens, NULL);
    struct js_span spans[4];
    sdk_https_ca = ca;
    run_sdk(&s, "proto", "c-https", 1, spans); /* every export answered 200 */
    sdk_https_ca = NULL;
    char *body = json_export("otel-agent", 1, "c-plain", NULL);
    struct answer a;
    post(s.http, "application/json", NULL, TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == -1, "plain HTTP on the HTTPS port: %ld", a.status);
    free(a.body);
    free(body);
    tt_test_serve_stop(&s);
    /* Read back on the same data directory, served on plain HTTP. */
    start_with_tokens(&s, "https");
    json_t *sess = api_json(s.http, "/api/v1/sessions/c-https");
    CHECK_EQ(json_integer_value(json_object_get(sess, "steps_total")), 4);
    json_decref(sess);
    CHECK_EQ(events_stored(s.http), 10);
    tt_test_serve_stop(&s);
}

/* A JSON body within 4 MiB whose tree would take hundreds of MB (1.4 million empty objects) is
 * refused with 413 once jansson's allocations pass 64 MiB, traces and logs alike; a body of
 * the same size made of spans is taken. */
TEST_T(otlp_json_body_whose_tree_is_too_large_is_refused_413, 60)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "jsoncap");
    size_t cap = 4u << 20;
    char *b = malloc(cap);
    CHECK(b);
    size_t off = (size_t)snprintf(b, cap, "{\"x\":[{}");
    while (off + 16 < cap) {
        memcpy(b + off, ",{}", 3);
        off += 3;
    }
    off += (size_t)snprintf(b + off, cap - off, "]}");
    struct answer a;
    post(s.http, "application/json", NULL, TOKEN, b, off, &a);
    CHECK_MSG(a.status == 413, "traces: %ld %s", a.status, a.body);
    CHECK(strstr(a.body, "64 MiB"));
    free(a.body);
    post_to(s.http, "/v1/logs", "application/json", NULL, TOKEN, b, off, &a);
    CHECK_MSG(a.status == 413, "logs: %ld %s", a.status, a.body);
    free(a.body);
    free(b);
    /* 12000 spans, about 4 MiB of JSON with their attributes: taken. */
    char *spans = json_export("otel-agent", 12000, "c-big", NULL);
    CHECK(strlen(spans) > (3u << 20) && strlen(spans) < (4u << 20));
    post(s.http, "application/json", NULL, TOKEN, spans, strlen(spans), &a);
    CHECK_MSG(a.status == 200, "spans: %ld %s", a.status, a.body);
    free(a.body);
    free(spans);
    CHECK_EQ(events_stored(s.http), 24000);
    tt_test_serve_stop(&s);
}

/* --- metrics ------------------------------------------------------------------------------- */

static json_t *session_metrics(const char *http, const char *session)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/events?session=%s&kind=metric", session);
    json_t *j = api_json(http, path);
    json_t *ev = json_incref(json_object_get(j, "events"));
    json_decref(j);
    return ev;
}

/* The metric event named name in ev (an array), checked for kind, value and unit. */
static json_t *check_metric(json_t *ev, const char *name, const char *kind, double value,
                            const char *unit)
{
    size_t i;
    json_t *m;
    json_array_foreach(ev, i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), name) != 0) {
            continue;
        }
        CHECK_MSG(strcmp(json_string_value(json_object_get(m, "metric_kind")), kind) == 0,
                  "%s: kind %s", name, json_string_value(json_object_get(m, "metric_kind")));
        CHECK_MSG(json_number_value(json_object_get(m, "value")) == value, "%s: value %g", name,
                  json_number_value(json_object_get(m, "value")));
        CHECK_MSG(strcmp(json_string_value(json_object_get(m, "unit")), unit) == 0, "%s: unit %s",
                  name, json_string_value(json_object_get(m, "unit")));
        CHECK(strcmp(json_string_value(json_object_get(m, "agent")), "otel-agent") == 0);
        return m;
    }
    tt_test_fail(__FILE__, __LINE__, "no metric %s", name);
}

/* tests/otel/send-metrics.mjs: the JS SDK's metric exporters (protobuf and JSON) export a delta
 * counter, a cumulative up-down counter, a gauge, a histogram and an exponential histogram,
 * each collection twice; the HTTP API shows each as telltale metrics with the SDK's values,
 * units and attributes, stored once. */
TEST_T(otlp_js_sdk_metrics_become_metrics_with_their_values_stored_once, 120)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "metrics");
    const char *protocols[] = {"proto", "json"};
    for (int p = 0; p < 2; p++) {
        char session[64];
        snprintf(session, sizeof session, "m-%s", protocols[p]);
        run_sdk_script(&s, "send-metrics.mjs", "metrics", protocols[p], session, 2, NULL);
        json_t *ev = session_metrics(s.http, session);
        CHECK_MSG(json_array_size(ev) == 11, "%s: %zu metrics", protocols[p], json_array_size(ev));
        /* A monotonic delta sum of integers (asInt): a counter, its delta. */
        json_t *m = check_metric(ev, "gen_ai.tool.calls", "counter", 5, "{call}");
        json_t *attrs = json_object_get(m, "attrs");
        CHECK(strcmp(json_string_value(json_object_get(attrs, "gen_ai.tool.name")), "search") == 0);
        CHECK(strcmp(json_string_value(json_object_get(m, "session")), session) == 0);
        /* A cumulative non-monotonic sum, a gauge: levels. */
        check_metric(ev, "agent.queue.depth", "gauge", 5, "{item}");
        check_metric(ev, "agent.temperature", "gauge", 0.75, "");
        /* A cumulative histogram: count, sum, min, max. */
        m = check_metric(ev, "gen_ai.client.token.usage.count", "gauge", 3, "");
        attrs = json_object_get(m, "attrs");
        CHECK(strcmp(json_string_value(json_object_get(attrs, "gen_ai.token.type")), "output") ==
              0);
        check_metric(ev, "gen_ai.client.token.usage.sum", "gauge", 60, "{token}");
        check_metric(ev, "gen_ai.client.token.usage.min", "gauge", 10, "{token}");
        check_metric(ev, "gen_ai.client.token.usage.max", "gauge", 30, "{token}");
        /* An exponential histogram likewise. */
        check_metric(ev, "gen_ai.client.operation.duration.count", "gauge", 2, "");
        check_metric(ev, "gen_ai.client.operation.duration.sum", "gauge", 2, "s");
        check_metric(ev, "gen_ai.client.operation.duration.min", "gauge", 0.5, "s");
        check_metric(ev, "gen_ai.client.operation.duration.max", "gauge", 1.5, "s");
        json_decref(ev);
    }
    CHECK_EQ(events_stored(s.http), 22); /* each collection exported twice, stored once */
    tt_test_serve_stop(&s);
}

/* Hand-made metric exports: refused points as partial success ("rejectedDataPoints"), a point
 * flagged "no recorded value" skipped without refusal, a delta histogram's count and sum as
 * counters, a summary's count and sum, a protobuf gauge of asInt answered in protobuf and
 * stored once when resent; malformed bodies and a missing token refused. */
TEST(otlp_metrics_answers_partial_success_and_malformed_bodies)
{
    struct tt_test_serve s;
    start_with_tokens(&s, "mans");
    struct answer a;
    const char *body =
        "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
        "\"value\":{\"stringValue\":\"otel-agent\"}}]},\"scopeMetrics\":[{\"metrics\":["
        "{\"name\":\"g\",\"gauge\":{\"dataPoints\":["
        "{\"timeUnixNano\":\"1796000000000000000\",\"asDouble\":1.5,\"attributes\":[{\"key\":"
        "\"gen_ai.conversation.id\",\"value\":{\"stringValue\":\"m-hand\"}}]},"
        "{\"asDouble\":2},"
        "{\"timeUnixNano\":\"1796000000000000001\",\"asDouble\":\"NaN\"},"
        "{\"timeUnixNano\":\"1796000000000000002\",\"flags\":1}]}},"
        "{\"name\":\"h\",\"unit\":\"ms\",\"histogram\":{\"aggregationTemporality\":1,"
        "\"dataPoints\":[{\"timeUnixNano\":\"1796000000000000003\",\"count\":\"4\",\"sum\":10,"
        "\"bucketCounts\":[\"1\",\"3\"],\"explicitBounds\":[2],\"attributes\":[{\"key\":"
        "\"gen_ai.conversation.id\",\"value\":{\"stringValue\":\"m-hand\"}}]}]}},"
        "{\"name\":\"q\",\"summary\":{\"dataPoints\":[{\"timeUnixNano\":\"1796000000000000004\","
        "\"count\":2,\"sum\":0.5,\"attributes\":[{\"key\":\"gen_ai.conversation.id\",\"value\":{"
        "\"stringValue\":\"m-hand\"}}]}]}}]}]}]}";
    post_to(s.http, "/v1/metrics", "application/json", NULL, NULL, body, strlen(body), &a);
    CHECK_EQ(a.status, 401);
    free(a.body);
    post_to(s.http, "/v1/metrics", "application/json", NULL, TOKEN, body, strlen(body), &a);
    CHECK_MSG(a.status == 200, "%ld %s", a.status, a.body);
    json_t *j = json_loads(a.body, 0, NULL);
    json_t *ps = json_object_get(j, "partialSuccess");
    CHECK_MSG(ps && strcmp(json_string_value(json_object_get(ps, "rejectedDataPoints")), "2") == 0,
              "%s", a.body);
    CHECK(json_string_value(json_object_get(ps, "errorMessage"))[0]);
    json_decref(j);
    free(a.body);
    json_t *ev = session_metrics(s.http, "m-hand");
    CHECK_MSG(json_array_size(ev) == 5, "%zu metrics", json_array_size(ev));
    check_metric(ev, "g", "gauge", 1.5, "");
    check_metric(ev, "h.count", "counter", 4, "");
    check_metric(ev, "h.sum", "counter", 10, "ms");
    check_metric(ev, "q.count", "gauge", 2, "");
    check_metric(ev, "q.sum", "gauge", 0.5, "");
    json_decref(ev);
    CHECK_EQ(events_stored(s.http), 5);
    post_to(s.http, "/v1/metrics", "application/json", NULL, TOKEN, "{\"resourceMetrics\":{}}", 22,
            &a);
    CHECK_EQ(a.status, 400);
    free(a.body);
    post_to(s.http, "/v1/metrics", "application/x-protobuf", NULL, TOKEN, "\x0a\x05\x12", 3, &a);
    CHECK_EQ(a.status, 400);
    free(a.body);
    /* NumberDataPoint { time 3, as_int 6 } in Gauge 5 of Metric { name 1 }, in ScopeMetrics 2,
     * ResourceMetrics 2, the request's resource_metrics 1; no session. Sent twice. */
    uint8_t dp[32], gauge[48], metric[80], sm[96], rm[112], req[128], *q;
    q = tt__pb_put_fixed64(dp, 3, 1796000000000000000ull);
    q = tt__pb_put_fixed64(q, 6, (uint64_t)(int64_t)-42);
    size_t dpn = (size_t)(q - dp);
    q = tt__pb_put_bytes(gauge, 1, dp, dpn);
    size_t gn = (size_t)(q - gauge);
    q = tt__pb_put_bytes(metric, 1, "pb.level", 8);
    q = tt__pb_put_bytes(q, 5, gauge, gn);
    size_t mn = (size_t)(q - metric);
    q = tt__pb_put_bytes(sm, 2, metric, mn);
    size_t smn = (size_t)(q - sm);
    q = tt__pb_put_bytes(rm, 2, sm, smn);
    size_t rmn = (size_t)(q - rm);
    q = tt__pb_put_bytes(req, 1, rm, rmn);
    size_t reqn = (size_t)(q - req);
    for (int i = 0; i < 2; i++) {
        post_to(s.http, "/v1/metrics", "application/x-protobuf", NULL, TOKEN, req, reqn, &a);
        CHECK_MSG(a.status == 200, "protobuf: %ld", a.status);
        CHECK(strcmp(a.ctype, "application/x-protobuf") == 0);
        CHECK_EQ(a.len, 0);
        free(a.body);
    }
    CHECK_EQ(events_stored(s.http), 6);
    j = api_json(s.http, "/api/v1/events?agent=otel-agent&kind=metric");
    int found = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "events"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), "pb.level") == 0) {
            CHECK(json_number_value(json_object_get(m, "value")) == -42);
            found++;
        }
    }
    CHECK_EQ(found, 1);
    json_decref(j);
    tt_test_serve_stop(&s);
}

/* --otlp-http: a listener of its own for OTLP (4318 by convention). The official SDK exports
 * to it and the spans show up through the API on --http; the listener answers nothing but
 * OTLP (404 for the API, /metrics and the dashboard, with or without a token), and the ready
 * file names its address. */
TEST_T(otlp_dedicated_listener_takes_otlp_alone, 120)
{
    char tokens[4096], addr[64];
    snprintf(tokens, sizeof tokens, "%s", tokens_file("otel-agent " TOKEN "\n"));
    snprintf(addr, sizeof addr, "127.0.0.1:%d", tt_test_free_port());
    struct tt_test_serve s;
    tt_test_serve_start(&s, "own", "--ingest-tokens", tokens, "--otlp-http", addr, NULL);
    struct tt_test_serve o = s; /* the same collector, seen through its OTLP listener */
    snprintf(o.http, sizeof o.http, "%s", addr);
    struct js_span spans[4];
    run_sdk(&o, "proto", "c-own", 1, spans);
    json_t *sess = api_json(s.http, "/api/v1/sessions/c-own");
    CHECK_EQ(json_integer_value(json_object_get(sess, "steps_total")), 4);
    json_decref(sess);
    CHECK_EQ(events_stored(s.http), 10);
    static const char *const others[] = {"/api/v1/agents", "/metrics", "/", "/healthz"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        char *body = NULL;
        long code = tt_test_http_auth(addr, "GET", others[i], tt_test_token(s.http), &body);
        CHECK_MSG(code == 404 && body && strstr(body, "OTLP/HTTP only"), "%s: %ld %s", others[i],
                  code, body ? body : "");
        free(body);
    }
    char ready[1200], *text = NULL;
    snprintf(ready, sizeof ready, "%s/ready.json", s.dir);
    FILE *r = fopen(ready, "r");
    CHECK_MSG(r != NULL, "no ready file %s", ready);
    size_t cap = 0;
    CHECK(getdelim(&text, &cap, 0, r) > 0);
    fclose(r);
    char want[128];
    snprintf(want, sizeof want, "\"otlp_http\":\"%s\"", addr);
    CHECK_MSG(strstr(text, want) != NULL, "%s", text);
    free(text);
    tt_test_serve_stop(&s);
}

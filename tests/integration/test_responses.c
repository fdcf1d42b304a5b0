/*
 * test_responses.c - responses end to end against a real `telltale serve` on loopback: a
 * 500-token response whose confidence collapses halfway is halted by the guard at the right
 * token and stored (per-token arrays, summary, verdict, guard decision) where the API and
 * `telltale query` show it; an operator halt (HTTP route and `telltale halt`) reaches a running
 * agent at its next token within 100 ms; bad input to the new routes gets a JSON error.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve.h"
#include "test.h"

#define VOCAB 4096
#define TOKENS 500
#define COLLAPSE 250

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f, "cannot read %s", path);
    char *buf = malloc(4 << 20);
    size_t n = fread(buf, 1, (4 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static const char *bin(void)
{
    const char *b = getenv("TT_BIN");
    return b ? b : "build/telltale";
}

static double mult(void)
{
    const char *m = getenv("TT_TEST_TIMEOUT_MULT");
    double v = m ? strtod(m, NULL) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* Synthetic logits: confident (the chosen token well ahead) before COLLAPSE, flat after. */
static int32_t make_row(float *row, int t, uint64_t *seed)
{
    for (int i = 0; i < VOCAB; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        row[i] = (float)((double)(*seed >> 11) * 0x1p-53 * 2.0 - 1.0);
    }
    int32_t chosen = (int32_t)((unsigned)t * 2654435761u % VOCAB);
    if (t < COLLAPSE) {
        row[chosen] += 14.0f;
    }
    return chosen;
}

/* The double-precision reference of p(chosen). */
static double ref_prob(const float *row, int32_t chosen)
{
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < VOCAB; i++) {
        mx = row[i] > mx ? row[i] : mx;
    }
    for (int i = 0; i < VOCAB; i++) {
        z += exp((double)row[i] - mx);
    }
    return exp((double)row[chosen] - mx) / z;
}

/* The value of "key": in json as a string (into out) or a number. */
static int json_str(const char *json, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(json, pat);
    if (!p) {
        return -1;
    }
    p += strlen(pat);
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < cap) {
        out[n++] = *p++;
    }
    out[n] = 0;
    return 0;
}

static long json_count(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":[", key);
    const char *p = strstr(json, pat);
    if (!p) {
        return -1;
    }
    p += strlen(pat);
    if (*p == ']') {
        return 0;
    }
    long n = 1;
    int depth = 0;
    for (; *p && !(depth == 0 && *p == ']'); p++) {
        depth += *p == '[' || *p == '{';
        depth -= *p == ']' || *p == '}';
        n += depth == 0 && *p == ',';
    }
    return n;
}

TEST_T(response_collapse_is_halted_at_the_right_token_and_stored, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "collapse", NULL);
    tt_client *c =
        tt_test_client(s.endpoint, "collapse", "guard.window=16", "guard.window_min_confidence=0.5",
                       "guard.action=halt", "response.topk=4", NULL);
    tt_response *r;
    tt_attr params[] = {TT_DOUBLE("temperature", 0.7)};
    CHECK_OK(tt_response_begin(c, &r, "collapse-1", "synthetic-4k", params, 1));
    static float row[VOCAB];
    static float lps[TOKENS];
    double win[TOKENS];
    uint64_t seed = 12345;
    int want = -1, first_halt = -1;
    for (int t = 0; t < TOKENS; t++) {
        int32_t chosen = make_row(row, t, &seed);
        win[t] = ref_prob(row, chosen);
        if (want < 0 && t >= 15) {
            double m = 0;
            for (int k = t - 15; k <= t; k++) {
                m += win[k];
            }
            if (m / 16 < 0.5) {
                want = t;
            }
        }
        tt_verdict v;
        tt_token_stats st;
        CHECK_OK(tt_response_token(r, row, VOCAB, 1, TT_DTYPE_F32, chosen, &v, &st));
        lps[t] = st.logprob;
        if (v == TT_HALT && first_halt < 0) {
            first_halt = t;
        }
        CHECK_MSG(v == (first_halt >= 0 ? TT_HALT : TT_PASS), "token %d verdict %d", t, v);
    }
    CHECK_MSG(want > COLLAPSE && want < COLLAPSE + 16, "reference halt at %d", want);
    CHECK_MSG(first_halt == want, "halted at %d, reference %d", first_halt, want);
    tt_response_summary sum;
    CHECK_OK(tt_response_end(r, &sum));
    CHECK_EQ(sum.verdict, TT_HALT);
    CHECK_EQ(sum.tokens, TOKENS);
    CHECK_OK(tt_flush(c, 20000));
    tt_close(c, 5000);

    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?session=collapse-1", NULL, &body), 200);
    char id[32];
    CHECK_MSG(json_str(body, "id", id, sizeof id) == 0 && strlen(id) == 16, "%s", body);
    CHECK_MSG(strstr(body, "\"verdict\":\"halt\"") && strstr(body, "\"tokens\":500") &&
                  strstr(body, "\"model\":\"synthetic-4k\"") &&
                  strstr(body, "\"params\":{\"temperature\":0.7"),
              "%s", body);
    free(body);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/responses/%s", id);
    CHECK_EQ(tt_test_http(s.http, "GET", path, NULL, &body), 200);
    CHECK_MSG(json_count(body, "logprobs") == TOKENS, "logprobs: %ld",
              json_count(body, "logprobs"));
    CHECK_EQ(json_count(body, "token_ids"), TOKENS);
    CHECK_EQ(json_count(body, "entropies"), TOKENS);
    CHECK_EQ(json_count(body, "latency_us"), TOKENS);
    CHECK_EQ(json_count(body, "topk_ids"), TOKENS);
    CHECK_EQ(json_count(body, "guard"), 1);
    /* the stored log-probs are the ones the agent saw, exactly */
    const char *p = strstr(body, "\"logprobs\":[") + 12;
    for (int t = 0; t < TOKENS; t++) {
        char *end;
        double v = strtod(p, &end);
        CHECK_MSG((float)v == lps[t], "token %d: stored %g, agent %g", t, v, (double)lps[t]);
        p = end + 1;
    }
    char tok[64];
    snprintf(tok, sizeof tok, "\"token_index\":%d,\"verdict\":\"halt\"", want);
    CHECK_MSG(strstr(body, tok) != NULL, "guard event at %d missing: %.300s", want,
              strstr(body, "\"guard\""));
    CHECK_MSG(strstr(body, "window mean p="), "reason missing");
    free(body);

    /* telltale query shows the response and its token records */
    char out[700], cmd[2048];
    snprintf(out, sizeof out, "%s/query.out", tt_test_outdir());
    snprintf(cmd, sizeof cmd, "%s query --http %s --data %s --response %s > %s 2>&1", bin(), s.http,
             s.dir, id, out);
    CHECK_EQ(sh(cmd), 0);
    body = slurp(out);
    CHECK_MSG(strstr(body, "\"verdict\":\"halt\"") && json_count(body, "logprobs") == TOKENS,
              "%.500s", body);
    free(body);
    snprintf(cmd, sizeof cmd,
             "%s query --http %s --data %s --session collapse-1 --kind tokens,response,guard > %s "
             "2>&1",
             bin(), s.http, s.dir, out);
    CHECK_EQ(sh(cmd), 0);
    body = slurp(out);
    int lines = 0, tokens = 0;
    for (char *q = body; (q = strchr(q, '\n')); q++) {
        lines++;
    }
    for (char *q = body; (q = strstr(q, "\"kind\":\"tokens\"")); q++) {
        tokens++;
    }
    CHECK_MSG(tokens == (TOKENS + 63) / 64, "tokens records: %d", tokens);
    CHECK_MSG(lines == tokens + 3, "lines %d: %.400s", lines, body); /* begin, end, guard */
    CHECK(strstr(body, "\"kind\":\"response_end\"") && strstr(body, "\"kind\":\"guard\""));
    free(body);
    tt_test_serve_stop(&s);
}

/* An agent generating tokens until it sees TT_HALT. */
struct agent {
    tt_client *c;
    char session[64];
    _Atomic int running; /* tokens flowing and stored at the collector */
    _Atomic double halted_ms;
    char reason[128];
};

static void *agent_main(void *arg)
{
    struct agent *a = arg;
    tt_response *r;
    CHECK_OK(tt_response_begin(a->c, &r, a->session, "m", NULL, 0));
    for (int i = 0; i < 1000000; i++) {
        tt_verdict v;
        CHECK_OK(tt_response_token_logprobs(r, i, -0.05f, NULL, NULL, 0, &v, NULL));
        if (v == TT_HALT) {
            atomic_store(&a->halted_ms, tt_test_now_ms());
            break;
        }
        if (i == 10) {
            CHECK_OK(tt_flush(a->c, 20000)); /* the session is known to the collector */
            atomic_store(&a->running, 1);
        }
        usleep(200); /* a token every ~0.2 ms: the halt shows at the next one */
    }
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    snprintf(a->reason, sizeof a->reason, "%s", s.reason);
    return NULL;
}

/* Start an agent, order its halt with order(), return the latency in ms. */
static double halt_latency(struct tt_test_serve *s, const char *session, int use_cli)
{
    struct agent a;
    memset(&a, 0, sizeof a);
    a.c = tt_test_client(s->endpoint, "halter", NULL);
    snprintf(a.session, sizeof a.session, "%s", session);
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, agent_main, &a));
    while (!atomic_load(&a.running)) {
        usleep(1000);
    }
    double t0 = tt_test_now_ms();
    if (use_cli) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "%s halt --http %s --data %s --session %s --reason 'cli says stop' > /dev/null",
                 bin(), s->http, s->dir, session);
        CHECK_EQ(sh(cmd), 0);
    } else {
        char path[128], *body = NULL;
        snprintf(path, sizeof path, "/api/v1/sessions/%s/halt", session);
        long st = tt_test_http(s->http, "POST", path, "{\"reason\": \"too costly\"}", &body);
        CHECK_MSG(st == 202 && strstr(body, "\"connections\":1}"), "%ld %s", st, body);
        free(body);
    }
    pthread_join(th, NULL);
    double lat = atomic_load(&a.halted_ms) - t0;
    CHECK_STR(a.reason, use_cli ? "operator halt: cli says stop" : "operator halt: too costly");
    tt_close(a.c, 5000);
    return lat;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

TEST_T(operator_halt_reaches_a_running_agent_within_100ms, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "halt", NULL);
    double lat[5];
    for (int i = 0; i < 5; i++) {
        char session[32];
        snprintf(session, sizeof session, "op-%d", i);
        lat[i] = halt_latency(&s, session, 0);
    }
    double cli = halt_latency(&s, "op-cli", 1);
    qsort(lat, 5, sizeof lat[0], cmp_double);
    fprintf(stderr, "halt latency over HTTP: min %.2f median %.2f max %.2f ms; CLI %.2f ms\n",
            lat[0], lat[2], lat[4], cli);
    /* The goal is 100 ms; the median must meet it (scaled for sanitizer builds), and no order
     * may take more than a second on a loaded machine. */
    CHECK_MSG(lat[2] < 100.0 * mult(), "median halt latency %.1f ms", lat[2]);
    CHECK_MSG(lat[4] < 1000.0 * mult(), "worst halt latency %.1f ms", lat[4]);
    CHECK_MSG(cli < 1000.0 * mult(), "CLI halt latency %.1f ms", cli);
    tt_test_serve_stop(&s);
}

TEST(halt_cli_exit_statuses)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "haltcli", NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s halt --http %s --data %s > /dev/null 2>&1", bin(), s.http, s.dir);
    CHECK_EQ(sh(cmd), 2); /* no --session */
    snprintf(cmd, sizeof cmd, "%s halt --http %s --data %s --session nobody 2> /dev/null", bin(),
             s.http, s.dir);
    CHECK_EQ(sh(cmd), 1); /* unknown session */
    snprintf(cmd, sizeof cmd, "%s halt --help > /dev/null", bin());
    CHECK_EQ(sh(cmd), 0);
    tt_test_serve_stop(&s);
    snprintf(cmd, sizeof cmd, "%s halt --http %s --data %s --session x 2> /dev/null", bin(), s.http,
             s.dir);
    CHECK_EQ(sh(cmd), 3); /* unreachable */
}

TEST(response_routes_answer_bad_input_with_json_errors)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "badroutes", NULL);
    tt_client *c = tt_test_client(s.endpoint, "bad", NULL);
    tt_log(c, "known", TT_INFO, "hello", NULL, 0);
    CHECK_OK(tt_flush(c, 20000));
    static const struct {
        const char *method, *path, *body;
        long status;
    } cases[] = {
        {"GET", "/api/v1/responses/xyz", NULL, 400},
        {"GET", "/api/v1/responses/0123456789abcdefg", NULL, 400},
        {"GET", "/api/v1/responses/00000000000000ff", NULL, 404},
        {"GET", "/api/v1/responses?limit=0", NULL, 400},
        {"GET", "/api/v1/responses?limit=abc", NULL, 400},
        {"GET", "/api/v1/responses?bogus=1", NULL, 400},
        {"GET", "/api/v1/responses/00000000000000ff?x=1", NULL, 400},
        {"POST", "/api/v1/responses", NULL, 405},
        {"GET", "/api/v1/sessions/known/halt", NULL, 405},
        {"POST", "/api/v1/sessions/nobody/halt", NULL, 404},
        {"POST", "/api/v1/sessions/known/halt", "not json", 400},
        {"POST", "/api/v1/sessions/known/halt", "{\"reason\": 5}", 400},
        {"POST", "/api/v1/sessions/known/halt", "{\"why\": \"x\"}", 400},
        {"POST", "/api/v1/sessions/known/halt", "{\"reason\": \"x\"} trailing", 400},
        {"POST", "/api/v1/sessions/known/halt", "{\"reason\": \"unterminated}", 400},
        {"POST", "/api/v1/sessions/known/halt",
         "{\"reason\": "
         "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxx\"}",
         400},
        {"POST", "/api/v1/sessions/known/halt?x=1", NULL, 400},
        {"POST", "/api/v1/agents/bad/guard-policy", NULL, 400},
        {"POST", "/api/v1/agents/bad/guard-policy", "[1]", 400},
        {"POST", "/api/v1/agents/bad/guard-policy", "{\"token_min_prob\": 2}", 400},
        {"POST", "/api/v1/agents/bad/guard-policy", "{\"window\": 0}", 400},
        {"POST", "/api/v1/agents/bad/guard-policy", "{\"window\": 2.5}", 400},
        {"POST", "/api/v1/agents/bad/guard-policy", "{\"action\": \"stop\"}", 400},
        {"POST", "/api/v1/agents/bad/guard-policy", "{\"colour\": 1}", 400},
        {"GET", "/api/v1/agents/bad/guard-policy", NULL, 405},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = NULL;
        long st = tt_test_http(s.http, cases[i].method, cases[i].path, cases[i].body, &body);
        CHECK_MSG(st == cases[i].status, "%s %s: %ld, want %ld (%s)", cases[i].method,
                  cases[i].path, st, cases[i].status, body ? body : "");
        CHECK_MSG(body && strncmp(body, "{\"error\":", 9) == 0, "%s %s: %s", cases[i].method,
                  cases[i].path, body ? body : "(none)");
        free(body);
    }
    /* a good halt of a known session with its agent connected: 202 and one connection */
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/sessions/known/halt", NULL, &body), 202);
    CHECK_MSG(strstr(body, "\"reason\":\"no reason given\"") && strstr(body, "\"connections\":1}"),
              "%s", body);
    free(body);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

TEST(guard_policy_pushed_by_the_collector_reaches_the_agent)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "policy", NULL);
    tt_client *c = tt_test_client(s.endpoint, "pushed", NULL);
    tt_log(c, NULL, TT_INFO, "connected", NULL, 0);
    CHECK_OK(tt_flush(c, 20000));
    char *body = NULL;
    long st =
        tt_test_http(s.http, "POST", "/api/v1/agents/pushed/guard-policy",
                     "{\"token_min_prob\": 0.25, \"window\": 8, \"action\": \"flag\"}", &body);
    CHECK_MSG(st == 202 && strstr(body, "\"connections\":1}"), "%ld %s", st, body);
    free(body);
    tt_guard_policy pol = {0};
    double t0 = tt_test_now_ms();
    while (tt_test_now_ms() - t0 < 5000 * mult()) {
        CHECK_OK(tt_guard_policy_get(c, &pol));
        if (pol.token_min_prob == 0.25f) {
            break;
        }
        usleep(1000);
    }
    CHECK(pol.token_min_prob == 0.25f && pol.window == 8 && pol.action == TT_FLAG &&
          pol.window_min_confidence == 0.0f);
    tt_response *r;
    tt_verdict v;
    CHECK_OK(tt_response_begin(c, &r, "p", "m", NULL, 0));
    CHECK_OK(tt_response_token_logprobs(r, 1, logf(0.2f), NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_FLAG);
    CHECK_OK(tt_response_end(r, NULL));
    /* an agent that is not connected: accepted, zero connections */
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/agents/nobody/guard-policy", "{}", &body), 202);
    CHECK_MSG(strstr(body, "\"connections\":0}"), "%s", body);
    free(body);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

/* A response that ended without a token has no confidence: its figures are null in the API
 * (not the zeros the client sends, which would read as confidence 1), the agent's live
 * confidence stays unknown, and no detector takes it as a sample. */
TEST(response_without_tokens_has_no_confidence)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "notokens", NULL);
    tt_client *c = tt_test_client(s.endpoint, "quiet-model", NULL);
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "nt-1", "m", NULL, 0));
    uint64_t id = tt_response_id(r);
    CHECK_OK(tt_response_end(r, NULL));
    CHECK_OK(tt_flush(c, 10000));
    char path[128], *body = NULL;
    snprintf(path, sizeof path, "/api/v1/responses/%016llx", (unsigned long long)id);
    CHECK_EQ(tt_test_http(s.http, "GET", path, NULL, &body), 200);
    static const char *const nulls[] = {"mean_logprob", "min_logprob", "perplexity", "mean_entropy",
                                        "min_window_confidence"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"%s\":null", nulls[i]);
        CHECK_MSG(strstr(body, want) != NULL, "%s not null: %s", nulls[i], body);
    }
    CHECK_MSG(strstr(body, "\"tokens\":0") != NULL, "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"confidence\":null") && strstr(body, "\"confidence_last\":null") &&
                  strstr(body, "\"responses\":1"),
              "%s", body);
    free(body);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

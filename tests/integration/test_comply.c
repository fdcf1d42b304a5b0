/*
 * test_comply.c - compliance in the agent against a real `telltale serve`: a blocking rule stops
 * the step before it runs (TT_EBLOCKED) and the stream records the blocked step and the
 * decision; a flagging rule lets it run and records the decision; a call limit per session
 * holds; with redaction on, no planted secret reaches the store (the SQLite file's bytes are
 * searched) while the masked events arrive; the policy file loads at tt_open; a policy replaced
 * thousands of times under running steps keeps the agent's memory bounded.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve.h"
#include "test.h"

static const char policy[] = "[rule.destructive_sql]\n"
                             "match = sql\n"
                             "kinds = tool, retrieval\n"
                             "action = block\n"
                             "[rule.apis]\n"
                             "match = host\n"
                             "kinds = api\n"
                             "allow = api.example.com\n"
                             "action = flag\n"
                             "[rule.budget]\n"
                             "match = limit\n"
                             "kinds = tool\n"
                             "calls = 3\n"
                             "action = block\n"
                             "[rule.secrets]\n"
                             "match = pii\n"
                             "redact = on\n";

/* The events of the agent as the API returns them (a JSON array, owned by the caller). */
static json_t *events(struct tt_test_serve *s, const char *agent)
{
    char path[256], *body = NULL;
    snprintf(path, sizeof path, "/api/v1/events?agent=%s&limit=1000", agent);
    CHECK_EQ(tt_test_http(s->http, "GET", path, NULL, &body), 200);
    json_error_t e;
    json_t *doc = json_loads(body, 0, &e);
    CHECK_MSG(doc, "bad JSON: %s", e.text);
    free(body);
    json_t *ev = json_incref(json_object_get(doc, "events"));
    json_decref(doc);
    CHECK(json_is_array(ev));
    return ev;
}

static const char *str(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static json_t *attr(json_t *ev, const char *key)
{
    json_t *a = json_object_get(ev, "attrs");
    return a ? json_object_get(a, key) : NULL;
}

static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return 0;
    }
    static char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++) {
        if (memcmp(buf + i, needle, k) == 0) {
            return 1;
        }
    }
    return 0;
}

TEST_T(comply_blocks_flags_limits_and_masks_before_anything_is_sent, 90)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "serve", NULL);
    char path[700];
    snprintf(path, sizeof path, "%s/policy.conf", tt_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs(policy, f);
    fclose(f);
    char key[800];
    snprintf(key, sizeof key, "comply.policy_file=%s", path);
    tt_client *c = tt_test_client(s.endpoint, "comply-agent", key, NULL);

    /* A destructive statement: refused before the call runs. */
    tt_step st;
    CHECK_EQ(tt_step_begin(c, &st, NULL, TT_STEP_RETRIEVAL, "s-1", "sql", "DELETE FROM orders"),
             TT_EBLOCKED);
    CHECK_EQ_U64(st.id, 0);
    CHECK_EQ(tt_step_end(c, &st, TT_STATUS_OK, 0, NULL), TT_EINVAL); /* nothing to end */
    /* A bounded one runs. */
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_RETRIEVAL, "s-1", "sql",
                           "DELETE FROM orders WHERE id = 7"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    /* A host outside the list: flagged, runs. */
    CHECK_OK(
        tt_step_begin(c, &st, NULL, TT_STEP_API, "s-1", "http", "https://exfil.example.net/x"));
    CHECK(st.id != 0);
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 10, NULL));
    /* Three tool calls per session, the fourth is blocked; another session has its own. */
    for (int i = 0; i < 3; i++) {
        CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s-2", "search", "weather"));
        CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    }
    CHECK_EQ(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s-2", "search", "weather"), TT_EBLOCKED);
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s-3", "search", "weather"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    /* Secrets in a query, a log message, a string attribute and a step error are masked. */
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s-4", "mail",
                           "send to carol.secret@example.com"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_ERROR, -1, "card 4111 1111 1111 1111 refused"));
    tt_attr a[2] = {{.key = "key", .type = TT_ATTR_STR, .v.s = "AKIAIOSFODNN7EXAMPLE"},
                    {.key = "n", .type = TT_ATTR_INT, .v.i = 3}};
    CHECK_OK(tt_log(c, "s-4", TT_INFO, "paid with 5500 0055 5555 5559 today", a, 2));

    tt_stats sts;
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_stats_get(c, &sts, sizeof sts));
    CHECK_EQ_U64(sts.comply_blocked, 2);
    CHECK_EQ_U64(sts.comply_flagged, 2); /* the host, and the e-mail address in a query */
    CHECK_EQ_U64(sts.comply_masked, 4);
    CHECK_EQ_U64(sts.acked, sts.emitted);
    tt_close(c, 5000);

    json_t *ev = events(&s, "comply-agent");
    size_t i;
    json_t *e;
    int blocked_sql = 0, blocked_limit = 0, decisions_block = 0, decisions_flag = 0, masked = 0;
    json_array_foreach(ev, i, e)
    {
        const char *kind = str(e, "kind");
        if (strcmp(kind, "step_end") == 0 &&
            strncmp(str(e, "error"), "blocked by rule destructive_sql: DELETE without WHERE", 52) ==
                0) {
            CHECK_STR(str(e, "status"), "cancelled");
            blocked_sql++;
        }
        if (strcmp(kind, "step_end") == 0 && strstr(str(e, "error"), "rule budget")) {
            blocked_limit++;
        }
        if (strcmp(kind, "log") == 0 && attr(e, "comply.verdict")) {
            const char *v = json_string_value(attr(e, "comply.verdict"));
            decisions_block += strcmp(v, "block") == 0;
            decisions_flag += strcmp(v, "flag") == 0;
            CHECK(json_string_value(attr(e, "step.id")) != NULL);
        }
        if (strcmp(kind, "step_begin") == 0 && strcmp(str(e, "name"), "mail") == 0) {
            CHECK_STR(str(e, "query"), "send to [email]");
            masked++;
        }
        if (strcmp(kind, "step_end") == 0 && strstr(str(e, "error"), "[card] refused")) {
            masked++;
        }
        if (strcmp(kind, "log") == 0 && strstr(str(e, "message"), "paid with")) {
            CHECK_STR(str(e, "message"), "paid with [card] today");
            CHECK_STR(json_string_value(attr(e, "key")), "[api_key]");
            masked++;
        }
    }
    json_decref(ev);
    CHECK_EQ(blocked_sql, 1);
    CHECK_EQ(blocked_limit, 1);
    CHECK_EQ(decisions_block, 2);
    CHECK_EQ(decisions_flag, 2);
    CHECK_EQ(masked, 3);
    tt_test_serve_stop(&s);
    /* Not one planted value in the database, its WAL or anything else in the data directory. */
    const char *planted[] = {"carol.secret@example.com", "4111 1111 1111 1111",
                             "AKIAIOSFODNN7EXAMPLE", "5500 0055 5555 5559"};
    char wal[800];
    snprintf(wal, sizeof wal, "%s-wal", s.db);
    for (size_t k = 0; k < 4; k++) {
        CHECK_MSG(!file_contains(s.db, planted[k]), "%s is in the store", planted[k]);
        CHECK_MSG(!file_contains(wal, planted[k]), "%s is in the WAL", planted[k]);
    }
}

TEST(comply_policy_errors_are_refused_at_open_and_set)
{
    char err[256];
    tt_config *cfg = NULL;
    CHECK_OK(tt_config_new(&cfg));
    char path[700];
    snprintf(path, sizeof path, "%s/bad.conf", tt_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs("[rule.x]\nmatch = sql\naction = maybe\n", f);
    fclose(f);
    CHECK_OK(tt_config_set(cfg, "endpoint", "unix:/nonexistent/sock"));
    CHECK_OK(tt_config_set(cfg, "agent", "a"));
    CHECK_OK(tt_config_set(cfg, "comply.policy_file", path));
    tt_client *c = NULL;
    CHECK_EQ(tt_open(&c, cfg), TT_EINVAL);
    CHECK_OK(tt_config_set(cfg, "comply.policy_file", "/nonexistent/policy.conf"));
    CHECK_EQ(tt_open(&c, cfg), TT_ENOENT);
    CHECK_OK(tt_config_set(cfg, "comply.policy_file", ""));
    CHECK_OK(tt_open(&c, cfg));
    CHECK_EQ(tt_comply_policy_set(c, "[rule.x]\nmatch = tool\n", 21, err, sizeof err), TT_EINVAL);
    CHECK_STR(err, "line 2: rule x needs names = ...");
    /* a valid one, then cleared: steps run again */
    const char *kinds = "[rule.x]\nmatch = kind\nkinds = api\naction = block\n";
    CHECK_OK(tt_comply_policy_set(c, kinds, strlen(kinds), err, sizeof err));
    tt_step st;
    CHECK_EQ(tt_step_begin(c, &st, NULL, TT_STEP_API, NULL, "x", NULL), TT_EBLOCKED);
    CHECK_OK(tt_comply_policy_set(c, NULL, 0, err, sizeof err));
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_API, NULL, "x", NULL));
    tt_close(c, 100);
    tt_config_free(cfg);
}

TEST_T(comply_policy_set_by_the_operator_reaches_the_agent, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "serve", NULL);
    tt_client *c = tt_test_client(s.endpoint, "pushed-agent", NULL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "hello", NULL, 0));
    CHECK_OK(tt_flush(c, 10000)); /* connected */
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/agents/pushed-agent/comply-policy",
                          "{\"policy\": \"[rule.t]\\nmatch = sql\\naction = maybe\\n\"}", &body),
             400);
    CHECK_MSG(body && strstr(body, "line 3: action must be block or flag"), "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/agents/pushed-agent/comply-policy",
                          "{\"policy\": \"[rule.t]\\nmatch = tool\\nnames = shell\\n"
                          "action = block\\n\"}",
                          &body),
             202);
    CHECK_MSG(body && strstr(body, "\"rules\":1") && strstr(body, "\"connections\":1"), "%s", body);
    free(body);
    /* The order travels on the connection: the agent's next steps after it are blocked. */
    tt_step st;
    int rc = 0;
    double deadline = tt_test_now_ms() + 10000;
    while ((rc = tt_step_begin(c, &st, NULL, TT_STEP_TOOL, NULL, "shell", "ls")) == 0 &&
           tt_test_now_ms() < deadline) {
        tt_step_end(c, &st, TT_STATUS_OK, 0, NULL);
        usleep(10000);
    }
    CHECK_EQ(rc, TT_EBLOCKED);
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, NULL, "search", "x"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 0, NULL));
    /* Cleared: the same step runs again. */
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/agents/pushed-agent/comply-policy",
                          "{\"policy\": \"\"}", NULL),
             202);
    deadline = tt_test_now_ms() + 10000;
    while ((rc = tt_step_begin(c, &st, NULL, TT_STEP_TOOL, NULL, "shell", "ls")) == TT_EBLOCKED &&
           tt_test_now_ms() < deadline) {
        usleep(10000);
    }
    CHECK_OK(rc);
    tt_step_end(c, &st, TT_STATUS_OK, 0, NULL);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

struct stepper {
    tt_client *c;
    _Atomic int *stop;
    long blocked, ran, wrong;
};

static void *steps_under_policies(void *arg)
{
    struct stepper *s = arg;
    while (!atomic_load(s->stop)) {
        tt_step st;
        int rc = tt_step_begin(s->c, &st, NULL, TT_STEP_API, NULL, "x", "SELECT 1");
        if (rc == TT_EBLOCKED) {
            s->blocked++;
        } else if (rc == 0 || rc == TT_ENOBUFS) {
            s->ran++;
            tt_step_end(s->c, &st, TT_STATUS_OK, 0, NULL);
        } else {
            s->wrong++;
        }
    }
    return NULL;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
        }
    }
    if (f) {
        fclose(f);
    }
    return kb;
}

/* Under a sanitizer the test is about races and use-after-free (each replacement costs tens of
 * milliseconds there, and ASan's quarantine holds freed memory back); the memory bound is
 * checked in the plain build. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define POLICY_SETS 500
#define CHECK_RSS 0
#else
#define POLICY_SETS 2000
#define CHECK_RSS 1
#endif

/* A policy replaced thousands of times (each about 270 KB) while another thread runs steps under
 * it: every step sees one whole policy or the other, and the agent's memory stays bounded (a
 * replaced policy is freed once no step can still read it; kept until tt_close before, which
 * fuzz_client's out-of-memory found). */
TEST_T(comply_policy_replaced_many_times_under_steps_keeps_memory_bounded, 120)
{
    enum { THREADS = 1, SETS = POLICY_SETS };
    tt_client *c = tt_test_client("unix:/nonexistent/telltale.sock", "replaced", NULL);
    CHECK(c != NULL);
    const char *block = "[rule.x]\nmatch = kind\nkinds = api\naction = block\n";
    const char *allow = "[rule.y]\nmatch = kind\nkinds = tool\naction = block\n";
    CHECK_OK(tt_comply_policy_set(c, block, strlen(block), NULL, 0));
    _Atomic int stop = 0;
    pthread_t th[THREADS];
    struct stepper st[THREADS];
    for (int i = 0; i < THREADS; i++) {
        st[i] = (struct stepper){c, &stop, 0, 0, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, steps_under_policies, &st[i]), 0);
    }
    long before = rss_kb();
    for (int i = 0; i < SETS; i++) {
        const char *p = i % 2 ? block : allow;
        CHECK_OK(tt_comply_policy_set(c, p, strlen(p), NULL, 0));
    }
    long after = rss_kb();
    atomic_store(&stop, 1);
    long blocked = 0, ran = 0, wrong = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        blocked += st[i].blocked;
        ran += st[i].ran;
        wrong += st[i].wrong;
    }
    fprintf(stderr, "%d replacements: RSS %ld -> %ld KiB; steps blocked %ld, ran %ld\n", SETS,
            before, after, blocked, ran);
    CHECK_EQ(wrong, 0);
    CHECK(blocked > 0);
    CHECK(ran > 0);
    /* kept, they would take SETS x 270 KB = 540 MB; freed, the growth is the allocator's
     * (about 20 MB) */
    if (CHECK_RSS) {
        CHECK_MSG(after - before < 200 * 1024, "RSS grew by %ld KiB", after - before);
    }
    tt_close(c, 100);
}

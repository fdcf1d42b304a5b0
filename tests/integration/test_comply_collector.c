/*
 * test_comply_collector.c - compliance seen by a real `telltale serve` (docs/compliance.md,
 * "Incidents" and "The collector's checks"): an enforcing agent's blocks open one critical
 * incident per rule, its flags a warning one; an agent that enforces nothing (no policy in the
 * library: what an older client or an OTLP-fed agent sends) has its destructive query and its
 * leaked card number judged by the collector under --comply-policy, which records decisions of
 * its own (comply.by = collector) and raises incidents; an enforcing agent under the same
 * collector policy gets no second decision and no second incident; the operator's POST becomes
 * the collector's policy for that agent; a policy file others may write, or a bad one, stops
 * the collector at start.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
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
                             "[rule.cards]\n"
                             "match = pii\n"
                             "types = card\n"
                             "action = block\n";

static char *policy_file(const char *name)
{
    static char path[700];
    snprintf(path, sizeof path, "%s/%s", tt_test_tmpdir(), name);
    tt_test_write_file(path, policy);
    CHECK(chmod(path, 0600) == 0);
    return path;
}

static json_t *get_json(struct tt_test_serve *s, const char *path, const char *member)
{
    char *body = NULL;
    CHECK_EQ(tt_test_http(s->http, "GET", path, NULL, &body), 200);
    json_error_t e;
    json_t *doc = json_loads(body, 0, &e);
    CHECK_MSG(doc, "bad JSON from %s: %s", path, e.text);
    free(body);
    json_t *v = json_incref(json_object_get(doc, member));
    json_decref(doc);
    CHECK_MSG(json_is_array(v), "no %s in %s", member, path);
    return v;
}

static const char *str(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static const char *attr(json_t *ev, const char *key)
{
    json_t *a = json_object_get(ev, "attrs");
    const char *v = a ? json_string_value(json_object_get(a, key)) : NULL;
    return v ? v : "";
}

/* The agent's incidents of the compliance detector, waiting until there are at least `want`
 * (and then WATCH_GRACE_MS and more, so that a late second one would show). */
static json_t *incidents(struct tt_test_serve *s, const char *agent, size_t want)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/incidents?agent=%s", agent);
    double deadline = tt_test_now_ms() + 15000 * tt_test_mult();
    json_t *inc = NULL;
    for (;;) {
        json_decref(inc);
        inc = get_json(s, path, "incidents");
        if (json_array_size(inc) >= want || tt_test_now_ms() > deadline) {
            break;
        }
        usleep(100000);
    }
    usleep(3000000); /* the collector's grace (2 s) and a tick: nothing more may come */
    json_decref(inc);
    return get_json(s, path, "incidents");
}

static json_t *by_key(json_t *inc, const char *key)
{
    size_t i;
    json_t *e;
    json_array_foreach(inc, i, e)
    {
        if (strcmp(str(e, "key"), key) == 0) {
            return e;
        }
    }
    return NULL;
}

static json_t *decisions(struct tt_test_serve *s, const char *agent)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/events?agent=%s&kind=log&limit=1000", agent);
    json_t *all = get_json(s, path, "events"), *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        if (attr(e, "comply.verdict")[0]) {
            json_array_append(out, e);
        }
    }
    json_decref(all);
    return out;
}

TEST_T(comply_agent_blocks_open_one_incident_per_rule_and_none_twice, 90)
{
    struct tt_test_serve s;
    /* The collector holds the same policy: it must not judge the agent's steps a second time.
     * A short cooldown, so that the incident's repeat is stored within the test. */
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/detectors.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.compliance]\ntype = comply\ncooldown_ms = 200\n");
    tt_test_serve_start(&s, "enforcing", "--comply-policy", policy_file("collector.conf"),
                        "--config", cfg, NULL);
    char key[800];
    snprintf(key, sizeof key, "comply.policy_file=%s", policy_file("agent.conf"));
    tt_client *c = tt_test_client(s.endpoint, "enforcer", key, "flush_interval_ms=5", NULL);
    tt_step st;
    CHECK_EQ(tt_step_begin(c, &st, NULL, TT_STEP_RETRIEVAL, "s-1", "sql", "DROP TABLE users"),
             TT_EBLOCKED);
    CHECK_EQ(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s-1", "sql", "TRUNCATE orders"),
             TT_EBLOCKED);
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_API, "s-1", "http", "https://evil.example/x"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_RETRIEVAL, "s-1", "sql",
                           "SELECT * FROM users WHERE id = 1"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_flush(c, 10000));

    json_t *inc = incidents(&s, "enforcer", 2);
    CHECK_MSG(json_array_size(inc) == 2, "%zu incidents, expected 2 (one per rule)",
              json_array_size(inc));
    json_t *sql = by_key(inc, "destructive_sql"), *host = by_key(inc, "apis");
    CHECK(sql && host);
    CHECK_STR(str(sql, "detector"), "compliance");
    CHECK_STR(str(sql, "severity"), "critical");
    CHECK_EQ(json_integer_value(json_object_get(sql, "count")), 2); /* two blocks, one incident */
    CHECK_STR(str(sql, "session"), "s-1");
    CHECK(strstr(str(sql, "message"), "blocked step sql: TRUNCATE") != NULL);
    CHECK_STR(str(host, "severity"), "warning");
    CHECK_EQ(json_integer_value(json_object_get(host, "count")), 1);
    json_decref(inc);

    /* Three decisions in the stream, all the agent's: the collector deferred to them. */
    json_t *d = decisions(&s, "enforcer");
    CHECK_EQ(json_array_size(d), 3);
    size_t i;
    json_t *e;
    json_array_foreach(d, i, e)
    {
        CHECK_MSG(attr(e, "comply.by")[0] == 0, "a decision by %s", attr(e, "comply.by"));
    }
    json_decref(d);
    char *metrics = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &metrics), 200);
    CHECK_MSG(strstr(metrics, "telltale_comply_deferred_total 3\n") != NULL, "%s",
              strstr(metrics, "telltale_comply_"));
    CHECK(strstr(metrics, "telltale_comply_decisions_total 0\n") != NULL);
    free(metrics);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

TEST_T(comply_collector_judges_an_agent_that_enforces_nothing, 90)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "judge", "--comply-policy", policy_file("collector.conf"), NULL);
    /* No policy in the library: it records what it does and stops nothing. */
    tt_client *c = tt_test_client(s.endpoint, "old-agent", "flush_interval_ms=5", NULL);
    tt_step st, drop;
    CHECK_OK(tt_step_begin(c, &drop, NULL, TT_STEP_RETRIEVAL, "s-9", "sql", "DROP TABLE users"));
    CHECK_OK(tt_step_end(c, &drop, TT_STATUS_OK, 0, NULL));
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_RETRIEVAL, "s-9", "sql",
                           "DELETE FROM users WHERE id = 4"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 0, NULL));
    /* A card in the message and another in an attribute: one log, one decision. */
    tt_attr card_attr = TT_STR("card", "5500 0055 5555 5559");
    CHECK_OK(tt_log(c, "s-9", TT_INFO, "charged 4111 1111 1111 1111 for the order", &card_attr, 1));
    CHECK_OK(tt_log(c, "s-9", TT_INFO, "order 4111 1111 1111 1112 is not a card", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));

    json_t *inc = incidents(&s, "old-agent", 2);
    CHECK_MSG(json_array_size(inc) == 2, "%zu incidents, expected 2", json_array_size(inc));
    json_t *sql = by_key(inc, "destructive_sql"), *card = by_key(inc, "cards");
    CHECK(sql && card);
    CHECK_STR(str(sql, "severity"), "critical");
    CHECK(strstr(str(sql, "message"), "would block (the collector saw it run) step sql: DROP "
                                      "TABLE") != NULL);
    char id[24];
    snprintf(id, sizeof id, "%016llx", (unsigned long long)drop.id);
    CHECK_STR(str(sql, "step_id"), id);
    CHECK_STR(str(card, "severity"), "critical");
    json_decref(inc);

    /* The collector's decisions are in the agent's stream, queryable like an agent's. */
    json_t *d = decisions(&s, "old-agent");
    CHECK_EQ(json_array_size(d), 2);
    int seen_sql = 0, seen_card = 0;
    size_t i;
    json_t *e;
    json_array_foreach(d, i, e)
    {
        CHECK_STR(attr(e, "comply.by"), "collector");
        CHECK_STR(attr(e, "comply.verdict"), "block");
        CHECK_STR(str(e, "session"), "s-9");
        if (strcmp(attr(e, "comply.rule"), "destructive_sql") == 0) {
            CHECK_STR(attr(e, "comply.why"), "DROP TABLE");
            CHECK_STR(attr(e, "step.id"), id);
            CHECK_STR(attr(e, "step.name"), "sql");
            CHECK_STR(attr(e, "step.kind"), "retrieval");
            seen_sql++;
        } else {
            CHECK_STR(attr(e, "comply.rule"), "cards");
            CHECK_STR(attr(e, "comply.why"), "card in a log");
            seen_card++;
        }
    }
    CHECK_EQ(seen_sql, 1);
    CHECK_EQ(seen_card, 1);
    json_decref(d);
    /* It could not stop the step: the step ran and ended ok. */
    json_t *steps = get_json(&s, "/api/v1/events?agent=old-agent&kind=step_end", "events");
    CHECK_EQ(json_array_size(steps), 2);
    CHECK_STR(str(json_array_get(steps, 0), "status"), "ok");
    json_decref(steps);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

TEST_T(comply_operator_policy_is_the_collectors_for_that_agent, 90)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "posted", NULL); /* no --comply-policy */
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "POST", "/api/v1/agents/late-agent/comply-policy",
                          "{\"policy\": \"[rule.no_shell]\\nmatch = tool\\nnames = shell\\n"
                          "action = block\\n\"}",
                          &body),
             202);
    CHECK_MSG(body && strstr(body, "\"connections\":0") && strstr(body, "\"collector\":true"), "%s",
              body);
    free(body);
    /* The agent connects after the order: its library never got the policy, the collector has
     * it; another agent is not concerned. */
    tt_client *c = tt_test_client(s.endpoint, "late-agent", "flush_interval_ms=5", NULL);
    tt_client *o = tt_test_client(s.endpoint, "other-agent", "flush_interval_ms=5", NULL);
    tt_step st;
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s", "shell", "rm -rf /tmp/x"));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 0, NULL));
    CHECK_OK(tt_step_begin(o, &st, NULL, TT_STEP_TOOL, "s", "shell", "rm -rf /tmp/x"));
    CHECK_OK(tt_step_end(o, &st, TT_STATUS_OK, 0, NULL));
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_flush(o, 10000));
    json_t *inc = incidents(&s, "late-agent", 1);
    CHECK_EQ(json_array_size(inc), 1);
    CHECK_STR(str(json_array_get(inc, 0), "key"), "no_shell");
    json_decref(inc);
    inc = get_json(&s, "/api/v1/incidents?agent=other-agent", "incidents");
    CHECK_EQ(json_array_size(inc), 0);
    json_decref(inc);
    json_t *d = decisions(&s, "other-agent");
    CHECK_EQ(json_array_size(d), 0);
    json_decref(d);
    tt_close(c, 5000);
    tt_close(o, 5000);
    tt_test_serve_stop(&s);
}

/* `telltale serve` with the extra options; its exit status, stderr in err. */
static int serve_refused(const char *name, const char *policy_path, char *err, size_t errlen)
{
    const char *b = getenv("TT_BUILD");
    char dir[700], log[800], cmd[3000];
    snprintf(dir, sizeof dir, "%s/%s", tt_test_tmpdir(), name);
    snprintf(log, sizeof log, "%s/%s.log", tt_test_tmpdir(), name);
    snprintf(cmd, sizeof cmd,
             "'%s/telltale' serve --data '%s' --listen 'unix:%s/s.sock' --no-http "
             "--comply-policy '%s' 2>'%s'",
             b ? b : "build", dir, dir, policy_path, log);
    int st = system(cmd);
    FILE *f = fopen(log, "r");
    CHECK(f);
    size_t n = fread(err, 1, errlen - 1, f);
    err[n] = 0;
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST_T(comply_policy_file_others_may_write_or_bad_stops_the_collector, 60)
{
    char err[4096], path[700];
    snprintf(path, sizeof path, "%s", policy_file("open.conf"));
    CHECK(chmod(path, 0666) == 0);
    CHECK_EQ(serve_refused("open", path, err, sizeof err), 1);
    CHECK_MSG(strstr(err, "group or others may write it") != NULL, "%s", err);
    snprintf(path, sizeof path, "%s/bad.conf", tt_test_tmpdir());
    tt_test_write_file(path, "[rule.x]\nmatch = sql\naction = maybe\n");
    CHECK(chmod(path, 0600) == 0);
    CHECK_EQ(serve_refused("bad", path, err, sizeof err), 1);
    CHECK_MSG(strstr(err, "line 3: action must be block or flag") != NULL, "%s", err);
    CHECK_EQ(serve_refused("missing", "/nonexistent/policy.conf", err, sizeof err), 1);
    CHECK_MSG(strstr(err, "No such file") != NULL, "%s", err);
}

/*
 * test_incidents.c - incidents against a real `telltale serve`: a lasting fall of confidence
 * opens one incident, which is updated while the fall lasts (count, last seen, an explaining
 * message with links), resolves by itself once the stream is back, and reopens as the same
 * incident when the fall returns within the flap time; repeated low-confidence responses update
 * one incident instead of raising one alert per cooldown; and incidents reach a real Prometheus
 * Alertmanager (Debian's prometheus-alertmanager on loopback) grouped by agent, and resolve
 * there.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/rng.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

/* The number in "key":N of the first occurrence of "key" in s, or -1. */
static char *get(const char *http, const char *path)
{
    char *body = NULL;
    CHECK_EQ(tt_test_http(http, "GET", path, NULL, &body), 200);
    return body;
}

TEST_T(incidents_lasting_fall_is_one_incident_updated_resolved_reopened, 120)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/drift.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.conf_drift]\ntype = drift\nsignal = confidence\n"
                            "cooldown_ms = 300\nresolve_ms = 1500\nflap_ms = 60000\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "incdrift", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "kind=alert", NULL);
    tt_client *c = tt_test_client(s.endpoint, "drifty", "flush_interval_ms=5", NULL);
    tt__rng r;
    tt__rng_seed(&r, 7);
    const double mean = 0.8, sigma = 0.04;
    for (int i = 0; i < 500; i++) {
        CHECK_OK(tt_test_emit_response(c, "calm", mean + sigma * tt__rng_gauss(&r)));
    }
    CHECK_OK(tt_flush(c, 10000));
    int from = 0;
    char *none = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 300);
    CHECK_MSG(none == NULL, "incident before the fall: %s", none ? none : "");
    /* A one-sigma fall that lasts: one firing, then updates. */
    for (int i = 0; i < 300; i++) {
        CHECK_OK(tt_test_emit_response(c, "fallen", mean - sigma + sigma * tt__rng_gauss(&r)));
    }
    CHECK_OK(tt_flush(c, 10000));
    char *firing = tt_test_sse_wait(sse, "\"event\":\"firing\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(firing != NULL, "no incident after a lasting one-sigma fall");
    long long id = tt_test_json_i64(firing, NULL, "id");
    CHECK(id > 0);
    /* The message explains: agent, signal and meaning, direction, magnitude in units and in
     * sigma, when it began, baseline and recent mean with counts; links to the evidence. */
    static const char *const explains[] = {
        "agent drifty: confidence drift (cusum)",
        "response confidence = exp(mean token log-prob)",
        "fell by 0.0",
        "sigma of the baseline",
        "change began about",
        "responses), recent mean ",
        "\"links\":{\"incident\":\"/api/v1/incidents/",
        "\"response\":\"/api/v1/responses/",
        "\"session\":\"/api/v1/sessions/fallen\"",
        "\"status\":\"firing\"",
        "\"key\":\"confidence\"",
    };
    for (size_t i = 0; i < sizeof explains / sizeof explains[0]; i++) {
        CHECK_MSG(strstr(firing, explains[i]) != NULL, "missing \"%s\" in %s", explains[i], firing);
    }
    const char *bm = strstr(firing, "baseline mean "), *rm = strstr(firing, "recent mean ");
    CHECK(bm && rm);
    double base = strtod(bm + 14, NULL), recent = strtod(rm + 12, NULL);
    CHECK_NEAR(base, mean, sigma / 4);
    CHECK_MSG(recent < base - sigma / 3, "recent mean %g, baseline %g", recent, base);
    for (int i = 0; i < 150; i++) { /* still fallen, over about a second */
        CHECK_OK(tt_test_emit_response(c, "fallen", mean - sigma + sigma * tt__rng_gauss(&r)));
        if (i % 10 == 0) {
            CHECK_OK(tt_flush(c, 10000));
            usleep(60000);
        }
    }
    CHECK_OK(tt_flush(c, 10000));
    char *updated = tt_test_sse_wait(sse, "\"event\":\"updated\"", &from, 5000 * tt_test_mult());
    CHECK_MSG(updated != NULL, "no update while the fall lasted");
    CHECK_EQ(tt_test_json_i64(updated, NULL, "id"), id);
    CHECK(tt_test_json_i64(updated, NULL, "count") > 1);
    CHECK_EQ(tt_test_sse_count(sse, "\"event\":\"firing\""), 1);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/incidents/%lld", id);
    char *one = get(s.http, path);
    CHECK(strstr(one, "\"status\":\"firing\"") != NULL);
    CHECK(tt_test_json_i64(one, NULL, "last_unix_ns") >
          tt_test_json_i64(one, NULL, "time_unix_ns"));
    free(one);
    /* Back to normal: the detector returns in control, and 1.5 s later the incident resolves. */
    for (int i = 0; i < 400; i++) {
        CHECK_OK(tt_test_emit_response(c, "calm", mean + sigma * tt__rng_gauss(&r)));
    }
    CHECK_OK(tt_flush(c, 10000));
    char *resolved = tt_test_sse_wait(sse, "\"event\":\"resolved\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(resolved != NULL, "the incident did not resolve once the stream was back");
    CHECK_EQ(tt_test_json_i64(resolved, NULL, "id"), id);
    CHECK(tt_test_json_i64(resolved, NULL, "resolved_unix_ns") > 0);
    one = get(s.http, path);
    CHECK(strstr(one, "\"status\":\"resolved\"") != NULL);
    free(one);
    char *body = get(s.http, "/api/v1/incidents?status=firing");
    CHECK(strstr(body, "\"agent\":\"drifty\"") == NULL);
    free(body);
    /* The fall again, within the flap time: the same incident fires again, flaps 1. */
    for (int i = 0; i < 400; i++) {
        CHECK_OK(tt_test_emit_response(c, "fallen", mean - sigma + sigma * tt__rng_gauss(&r)));
    }
    CHECK_OK(tt_flush(c, 10000));
    char *again = tt_test_sse_wait(sse, "\"event\":\"firing\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(again != NULL, "the returning fall raised nothing");
    CHECK_EQ(tt_test_json_i64(again, NULL, "id"), id);
    CHECK_EQ(tt_test_json_i64(again, NULL, "flaps"), 1);
    body = get(s.http, "/api/v1/incidents?agent=drifty");
    CHECK_EQ(tt_test_json_i64(body, NULL, "id"), id);
    CHECK(strstr(strstr(body, "\"id\":") + 5, "\"id\":") == NULL); /* one incident in all */
    free(body);
    body = get(s.http, "/metrics");
    CHECK(strstr(body, "telltale_incident_events_total{event=\"resolved\"} 1\n") != NULL);
    CHECK(strstr(body, "telltale_incident_events_total{event=\"firing\"} 2\n") != NULL);
    CHECK(strstr(body, "telltale_incidents_firing{agent=\"drifty\",detector=\"conf_drift\"} 1\n") !=
          NULL);
    CHECK(
        strstr(body, "telltale_agent_alerts_total{agent=\"drifty\",detector=\"conf_drift\"} 1\n") !=
        NULL);
    free(body);
    /* `telltale top` shows it: firing, its detector and key, how many repeats. */
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "NO_COLOR=1 TELLTALE_TOKEN_FILE='%s/operator.token' '%s' top --once --http %s "
             "--width 200",
             s.dir, getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", s.http);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    static char out[65536];
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    CHECK_EQ(pclose(p), 0);
    char row[128];
    snprintf(row, sizeof row, "#%lld FIRING warning drifty conf_drift[confidence] x", id);
    CHECK_MSG(strstr(out, row) != NULL, "%s", out);
    /* Acknowledged through the incidents route. */
    snprintf(path, sizeof path, "/api/v1/incidents/%lld/ack", id);
    CHECK_EQ(tt_test_http_auth(s.http, "POST", path, tt_test_token(s.http), &body), 200);
    CHECK(strstr(body, "\"state\":\"acked\"") != NULL);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/incidents/999999", NULL, &body), 404);
    free(body);
    free(firing);
    free(updated);
    free(resolved);
    free(again);
    tt_close(c, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

TEST_T(incidents_low_confidence_repeats_update_one_incident, 60)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/low.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.low]\ntype = threshold\nmin = 0.5\ncooldown_ms = 200\n"
                            "resolve_ms = 1000\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "inclow", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "kind=alert", NULL);
    tt_client *c = tt_test_client(s.endpoint, "unsure", "flush_interval_ms=5", NULL);
    for (int i = 0; i < 30; i++) {
        CHECK_OK(tt_test_emit_response(c, "s", 0.2));
        if (i % 10 == 9) {
            CHECK_OK(tt_flush(c, 10000));
            usleep(300000);
        }
    }
    int from = 0;
    char *resolved = tt_test_sse_wait(sse, "\"event\":\"resolved\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(resolved != NULL, "no resolution a second after the last low response");
    CHECK_EQ(tt_test_json_i64(resolved, NULL, "count"), 30);
    CHECK_EQ(tt_test_sse_count(sse, "\"event\":\"firing\""), 1);
    CHECK(tt_test_sse_count(sse, "\"event\":\"updated\"") >= 1);
    char *body = get(s.http, "/api/v1/alerts?agent=unsure");
    CHECK(strstr(body, "\"count\":30") != NULL);
    CHECK(strstr(strstr(body, "\"id\":") + 5, "\"id\":") == NULL);
    free(body);
    free(resolved);
    tt_close(c, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t n = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &n) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A real Alertmanager on 127.0.0.1:port, its configuration and storage in the test directory,
 * clustering off; returns its pid once its API answers. */
static pid_t alertmanager_start(int port)
{
    const char *bin = "/usr/bin/prometheus-alertmanager";
    CHECK_MSG(access(bin, X_OK) == 0, "%s missing: scripts/install-deps test", bin);
    char cfg[600], data[600], listen[64], log[600];
    snprintf(cfg, sizeof cfg, "%s/alertmanager.yml", tt_test_tmpdir());
    snprintf(data, sizeof data, "%s/am-data", tt_test_tmpdir());
    snprintf(log, sizeof log, "%s/alertmanager.log", tt_test_tmpdir());
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    tt_test_write_file(cfg, "route:\n  receiver: nobody\n  group_by: [agent]\n"
                            "  group_wait: 100ms\n  group_interval: 1s\n"
                            "receivers:\n  - name: nobody\n");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        char a1[700], a2[700], a3[100];
        snprintf(a1, sizeof a1, "--config.file=%s", cfg);
        snprintf(a2, sizeof a2, "--storage.path=%s", data);
        snprintf(a3, sizeof a3, "--web.listen-address=%s", listen);
        execl(bin, bin, a1, a2, a3, "--cluster.listen-address=", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        char *body = NULL;
        if (tt_test_http(listen, "GET", "/api/v2/status", NULL, &body) == 200) {
            free(body);
            return pid;
        }
        free(body);
        usleep(50000);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    CHECK_MSG(0, "alertmanager did not start (log: %s)", log);
    return -1;
}

static void call_tool(tt_client *c, const char *name, const char *query)
{
    tt_step st;
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "am-session", name, query));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 10, NULL));
}

/* Alerts in Alertmanager's active list that carry our agent label. */
static int am_count(const char *am, const char *needle)
{
    char *body = NULL;
    if (tt_test_http(am, "GET", "/api/v2/alerts", NULL, &body) != 200) {
        free(body);
        return -1;
    }
    int n = 0;
    for (const char *p = body; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    free(body);
    return n;
}

TEST_T(incidents_reach_alertmanager_grouped_and_resolve, 90)
{
    int port = free_port();
    pid_t am_pid = alertmanager_start(port);
    char am[64], cfg[512], text[1024];
    snprintf(am, sizeof am, "127.0.0.1:%d", port);
    snprintf(cfg, sizeof cfg, "%s/am.conf", tt_test_tmpdir());
    snprintf(text, sizeof text,
             "[detector.looping]\ntype = loop\nrepeats = 3\nresolve_ms = 2000\nseverity = "
             "critical\n"
             "[alertmanager.local]\nurl = http://127.0.0.1:%d/\n"
             "generator_url = http://telltale.example:8080\n",
             port);
    tt_test_write_file(cfg, text);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "incam", "--config", cfg, NULL);
    tt_client *a = tt_test_client(s.endpoint, "agent-a", NULL);
    tt_client *b = tt_test_client(s.endpoint, "agent-b", NULL);
    for (int i = 0; i < 3; i++) {
        call_tool(a, "search", "same");
        call_tool(b, "search", "same");
    }
    for (int i = 0; i < 3; i++) {
        call_tool(a, "fetch", "same page");
    }
    CHECK_OK(tt_flush(a, 10000));
    CHECK_OK(tt_flush(b, 10000));
    /* Three incidents (a/search, a/fetch, b/search) arrive, active, in two groups. */
    int n = 0;
    for (int i = 0; i < 200 && n < 3; i++) {
        n = am_count(am, "\"alertname\":\"looping\"");
        usleep(50000);
    }
    CHECK_MSG(n == 3, "%d of 3 incidents in alertmanager", n);
    char *groups = NULL;
    for (int i = 0; i < 100; i++) {
        free(groups);
        groups = get(am, "/api/v2/alerts/groups");
        if (strstr(groups, "\"labels\":{\"agent\":\"agent-a\"}") &&
            strstr(groups, "\"labels\":{\"agent\":\"agent-b\"}")) {
            break;
        }
        usleep(50000);
    }
    CHECK_MSG(strstr(groups, "\"labels\":{\"agent\":\"agent-a\"}") != NULL, "%s", groups);
    CHECK_MSG(strstr(groups, "\"labels\":{\"agent\":\"agent-b\"}") != NULL, "%s", groups);
    /* agent-a's group holds its two incidents, agent-b's one. */
    char *ga = strstr(groups, "\"labels\":{\"agent\":\"agent-a\"}");
    char *gb = strstr(groups, "\"labels\":{\"agent\":\"agent-b\"}");
    CHECK(ga && gb);
    char *all = get(am, "/api/v2/alerts");
    CHECK(strstr(all, "\"key\":\"fetch\"") != NULL);
    CHECK(strstr(all, "\"key\":\"search\"") != NULL);
    CHECK(strstr(all, "\"severity\":\"critical\"") != NULL);
    CHECK(strstr(all, "\"generatorURL\":\"http://telltale.example:8080/api/v1/incidents/") != NULL);
    CHECK(strstr(all, "called 3 times in a row") != NULL);
    free(all);
    int in_a = 0, in_b = 0;
    for (char *p = groups; (p = strstr(p, "\"alertname\":\"looping\"")) != NULL; p++) {
        /* Each alert object sits inside the group that precedes its group's labels. */
        const char *next_a = strstr(p, "\"labels\":{\"agent\":\"agent-a\"}");
        const char *next_b = strstr(p, "\"labels\":{\"agent\":\"agent-b\"}");
        const char *first = !next_a ? next_b : !next_b ? next_a : next_a < next_b ? next_a : next_b;
        in_a += first == next_a && next_a;
        in_b += first == next_b && next_b;
    }
    CHECK_EQ(in_a, 2);
    CHECK_EQ(in_b, 1);
    free(groups);
    /* Nothing repeats: two seconds later telltale resolves them, and Alertmanager drops them
     * from its active list. */
    n = 3;
    for (int i = 0; i < 300 && n > 0; i++) {
        usleep(50000);
        n = am_count(am, "\"alertname\":\"looping\"");
    }
    CHECK_MSG(n == 0, "%d incidents still active in alertmanager", n);
    char *body = get(s.http, "/api/v1/incidents?status=resolved");
    CHECK(strstr(body, "\"agent\":\"agent-a\"") && strstr(body, "\"agent\":\"agent-b\""));
    free(body);
    body = get(s.http, "/metrics");
    CHECK(strstr(body, "telltale_webhook_deliveries_total{result=\"sent\"} 6") != NULL);
    free(body);
    tt_close(a, 5000);
    tt_close(b, 5000);
    tt_test_serve_stop(&s);
    kill(am_pid, SIGTERM);
    int st = 0;
    waitpid(am_pid, &st, 0);
}

/* A response with a judge's score tied to it: returns the response id. */
static uint64_t judged_response(tt_client *c, double score)
{
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "judged", "m", NULL, 0));
    uint64_t id = tt_response_id(r);
    CHECK(id != 0);
    CHECK_OK(tt_response_token_logprobs(r, 1, -0.1f, NULL, NULL, 0, NULL, NULL));
    CHECK_OK(tt_response_end(r, NULL));
    tt_attr why = TT_STR("judge_model", "j-1");
    CHECK_OK(tt_score(c, "judged", id, "judge", score, &why, 1));
    return id;
}

TEST_T(incidents_watch_any_score_and_any_metric, 90)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/any.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.judge_drift]\ntype = drift\nsignal = score:judge\n"
                            "[detector.loss_drift]\ntype = drift\nsignal = metric:loss\n"
                            "[detector.loss_high]\ntype = threshold\nsignal = metric:loss\n"
                            "max = 10\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "incany", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "kind=alert", NULL);
    tt_client *c = tt_test_client(s.endpoint, "scored", "flush_interval_ms=5", NULL);
    tt_client *t = tt_test_client(s.endpoint, "trainer", "flush_interval_ms=5", NULL);
    tt__rng r;
    tt__rng_seed(&r, 11);
    for (int i = 0; i < 400; i++) {
        judged_response(c, 4 + 0.5 * tt__rng_gauss(&r));
        CHECK_OK(
            tt_metric(t, NULL, TT_GAUGE, "loss", 2 + 0.1 * tt__rng_gauss(&r), "nats", NULL, 0));
        CHECK_OK(tt_metric(t, NULL, TT_GAUGE, "accuracy", 0.5, NULL, NULL, 0)); /* not watched */
    }
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_flush(t, 10000));
    int from = 0;
    char *none = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 300);
    CHECK_MSG(none == NULL, "incident on steady streams: %s", none ? none : "");
    /* The judge's scores fall by a sigma; the loss rises by two. */
    uint64_t last = 0;
    for (int i = 0; i < 200; i++) {
        last = judged_response(c, 3.5 + 0.5 * tt__rng_gauss(&r));
        CHECK_OK(
            tt_metric(t, NULL, TT_GAUGE, "loss", 2.2 + 0.1 * tt__rng_gauss(&r), "nats", NULL, 0));
    }
    CHECK_OK(tt_metric(t, NULL, TT_GAUGE, "loss", 12.5, "nats", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_flush(t, 10000));
    char *judge =
        tt_test_sse_wait(sse, "\"detector\":\"judge_drift\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(judge != NULL, "no incident for the judge's falling scores");
    CHECK(strstr(judge, "\"agent\":\"scored\"") != NULL);
    CHECK_MSG(strstr(judge, "\"key\":\"score:judge\"") != NULL, "%s", judge);
    CHECK(strstr(judge, "score judge drift (cusum): a score reported for each response") != NULL);
    CHECK(strstr(judge, "fell by") != NULL);
    CHECK(strstr(judge, "\"response\":\"/api/v1/responses/") != NULL);
    from = 0;
    char *loss =
        tt_test_sse_wait(sse, "\"detector\":\"loss_drift\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(loss != NULL, "no incident for the rising loss");
    CHECK(strstr(loss, "\"agent\":\"trainer\"") != NULL);
    CHECK(strstr(loss, "\"key\":\"metric:loss\"") != NULL);
    CHECK(strstr(loss, "metric loss drift (cusum)") != NULL);
    CHECK_MSG(strstr(loss, "rose by 0.") != NULL && strstr(loss, " nats (") != NULL, "%s", loss);
    CHECK(strstr(loss, "\"unit\":\"nats\"") != NULL);
    from = 0;
    char *high = tt_test_sse_wait(sse, "\"detector\":\"loss_high\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(high != NULL, "no incident for a loss above 10");
    CHECK(strstr(high, "metric:loss 12.5 nats above 10 nats") != NULL);
    /* The score is stored as a metric of kind score, tied to its response. */
    char path[160], *body;
    snprintf(path, sizeof path, "/api/v1/events?agent=scored&kind=metric&limit=1000");
    body = get(s.http, path);
    CHECK(strstr(body, "\"metric_kind\":\"score\"") != NULL);
    char needle[64];
    snprintf(needle, sizeof needle, "\"response_id\":\"%016llx\"", (unsigned long long)last);
    CHECK_MSG(strstr(body, needle) != NULL, "no score tied to response %llu",
              (unsigned long long)last);
    free(body);
    free(judge);
    free(loss);
    free(high);
    tt_close(c, 5000);
    tt_close(t, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

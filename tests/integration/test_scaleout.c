/*
 * test_scaleout.c - telltale scaled out (issue "Scale-out on NATS JetStream and PostgreSQL";
 * docs/operations.md, "Scaling out"): every part real and started here on loopback, a 3-node
 * nats-server cluster with an R3 work-queue stream (tests/support/natsd.h), a private
 * PostgreSQL cluster (pgcluster.h), three `telltale serve --nats ... --store postgres://...`
 * sharing one durable consumer and one database, and eight agents on the client library
 * publishing to nats:// endpoints. In the middle of the stream one NATS node and one collector
 * are killed with SIGKILL; an operator halts one agent's response through another collector.
 * At the end every event each agent emitted is in PostgreSQL exactly once (no gap, no overlap),
 * the client's conservation law holds with the store's view, the halt reached the agent, and
 * each agent's incident (a metric over a threshold, sampled all along) was raised once.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "natsd.h"
#include "operator.h"
#include "pgcluster.h"
#include "serve.h"
#include "telltale.h"
#include "test.h"

#define AGENTS 8
#define COLLECTORS 3
#define EVENTS 6000 /* logs per agent */
#define HALTED 5    /* the agent whose response the operator halts */

struct agent {
    int i;
    const struct tt_nats *ns;
    tt_client *c;
    _Atomic uint64_t emitted; /* logs so far */
    _Atomic int halted;       /* the halted agent: its response saw TT_HALT */
    _Atomic int go_on;        /* main: the kills are done */
    char reason[256];
};

static tt_client *open_agent(const struct tt_nats *ns, int i)
{
    char a[64], t[64];
    tt_test_agent_name("scale", i, a, sizeof a);
    tt_test_agent_token("scale", i, t, sizeof t);
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", ns->urls));
    CHECK_OK(tt_config_set(cfg, "agent", a));
    CHECK_OK(tt_config_set(cfg, "token", t));
    CHECK_OK(tt_config_set(cfg, "nats_token_file", ns->token_file));
    CHECK_OK(tt_config_set(cfg, "batch_bytes", "16384"));
    CHECK_OK(tt_config_set(cfg, "ring_bytes", "8388608"));
    CHECK_OK(tt_config_set(cfg, "ack_timeout_ms", "2000"));
    CHECK_OK(tt_config_set(cfg, "backoff_max_ms", "500"));
    tt_client *c;
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    return c;
}

static void emit_some(struct agent *g, uint64_t n)
{
    char msg[96];
    for (uint64_t k = 0; k < n; k++) {
        uint64_t i = atomic_fetch_add(&g->emitted, 1);
        snprintf(msg, sizeof msg, "agent %d event %llu, padded to about sixty-four bytes", g->i,
                 (unsigned long long)i);
        CHECK_OK(tt_log(g->c, NULL, TT_INFO, msg, NULL, 0));
        if (i % 500 == 0) { /* over the "hot" detector's bound: one incident per agent */
            CHECK_OK(tt_metric(g->c, NULL, TT_GAUGE, "scale.temp", 100.0, "C", NULL, 0));
        }
        if (i % 256 == 255) {
            usleep(2000); /* spread the stream over the kills; no ring-full drop */
        }
    }
}

static void *run_agent(void *arg)
{
    struct agent *g = arg;
    tt_response *r = NULL;
    int tok = 0;
    if (g->i == HALTED) {
        CHECK_OK(tt_response_begin(g->c, &r, "scale-session", "m", NULL, 0));
    }
    emit_some(g, EVENTS / 3);
    while (!atomic_load(&g->go_on)) {
        usleep(5000);
    }
    emit_some(g, EVENTS - EVENTS / 3);
    if (r) {
        /* Tokens until the operator's halt arrives (through NATS, from another collector). */
        double t0 = tt_test_now_ms();
        tt_verdict v = TT_PASS;
        while (v != TT_HALT) {
            CHECK_OK(tt_response_token_logprobs(r, tok++, -0.05f, NULL, NULL, 0, &v, NULL));
            CHECK_MSG(tt_test_now_ms() - t0 < 30000, "agent %d: no halt after 30 s", g->i);
            usleep(2000);
        }
        tt_response_summary s;
        CHECK_OK(tt_response_end(r, &s));
        snprintf(g->reason, sizeof g->reason, "%s", s.reason);
        atomic_store(&g->halted, 1);
    }
    return NULL;
}

TEST_T(scaleout_8_agents_3_collectors_node_and_collector_killed, 240)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 3);
    struct tt_pg pg;
    tt_pg_start(&pg);
    const char *toks = tt_test_tokens_file("scale", AGENTS);
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/scale.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.hot]\ntype = threshold\nsignal = metric:scale.temp\n"
                            "max = 50\n");
    struct tt_test_serve col[COLLECTORS];
    for (int k = 0; k < COLLECTORS; k++) {
        char name[16];
        snprintf(name, sizeof name, "col%d", k);
        tt_test_serve_start(&col[k], name, TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", toks,
                            "--store", pg.url, "--nats", ns.urls, "--nats-token-file",
                            ns.token_file, "--nats-replicas", "3", "--nats-ack-wait", "3000",
                            "--config", cfg, NULL);
    }
    static struct agent ag[AGENTS];
    pthread_t th[AGENTS];
    for (int i = 0; i < AGENTS; i++) {
        memset(&ag[i], 0, sizeof ag[i]);
        ag[i].i = i;
        ag[i].ns = &ns;
        ag[i].c = open_agent(&ns, i);
        CHECK(pthread_create(&th[i], NULL, run_agent, &ag[i]) == 0);
    }
    for (int i = 0; i < AGENTS; i++) {
        while (atomic_load(&ag[i].emitted) < EVENTS / 3) {
            usleep(5000);
        }
    }
    /* Mid-stream: a NATS node and a collector die without a word. */
    tt_nats_kill(&ns, 0, 1);
    tt_test_serve_kill(&col[0]);
    for (int i = 0; i < AGENTS; i++) {
        atomic_store(&ag[i].go_on, 1);
    }
    /* The operator talks to another collector; the order travels over NATS. */
    char path[128], an[64];
    tt_test_agent_name("scale", HALTED, an, sizeof an);
    snprintf(path, sizeof path, "/api/v1/agents/%s/halt", an);
    char *body = NULL;
    CHECK_EQ(tt_test_http(col[2].http, "POST", path, "{\"reason\":\"scale-out halt\"}", &body),
             202);
    free(body);
    for (int i = 0; i < AGENTS; i++) {
        CHECK(pthread_join(th[i], NULL) == 0);
    }
    CHECK(atomic_load(&ag[HALTED].halted));
    CHECK_MSG(strstr(ag[HALTED].reason, "scale-out halt") != NULL, "reason: %s", ag[HALTED].reason);

    /* Every agent's batches acknowledged by JetStream; then every event in PostgreSQL once,
     * whichever collector stored it (the killed one's unacked messages went to the others). */
    for (int i = 0; i < AGENTS; i++) {
        CHECK_OK(tt_flush(ag[i].c, 60000));
    }
    for (int i = 0; i < AGENTS; i++) {
        tt_stats st;
        CHECK_OK(tt_stats_get(ag[i].c, &st, sizeof st));
        uint8_t inst[16];
        CHECK_OK(tt_instance_id(ag[i].c, inst));
        struct tt_store_check sc;
        double t0 = tt_test_now_ms();
        for (;;) {
            tt_pg_check_store(&pg, inst, &sc);
            if (sc.events >= st.emitted || tt_test_now_ms() - t0 > 60000) {
                break;
            }
            usleep(100000);
        }
        CHECK_MSG(sc.events == st.emitted && sc.overlaps == 0 && sc.gaps == 0,
                  "agent %d: emitted %llu, stored %llu, overlaps %llu, gaps %llu", i,
                  (unsigned long long)st.emitted, (unsigned long long)sc.events,
                  (unsigned long long)sc.overlaps, (unsigned long long)sc.gaps);
        CHECK_EQ_U64(sc.decoded, sc.events);
        tt_test_check_conservation(&st, &sc);
    }
    /* The survivors stored the stream between them, and both took part. */
    for (int k = 1; k < COLLECTORS; k++) {
        CHECK_MSG(tt_test_metric(col[k].http,
                                 "telltale_nats_answered_total{result=\"ack_committed\"}") > 0,
                  "collector %d acknowledged nothing", k);
    }
    /* Each agent's incident raised once, whichever collectors took its batches and although
     * the first collector (the first to lead) died: the others' detectors followed the whole
     * stream, and the one that took the lead took the stored incidents over. */
    char out[512];
    for (int i = 0; i < AGENTS; i++) {
        char an2[64], sql[512];
        tt_test_agent_name("scale", i, an2, sizeof an2);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) || ':' || coalesce(sum(count), 0) FROM alerts WHERE"
                 " detector = 'hot'::bytea AND agent = '%s'::bytea",
                 an2);
        tt_pg_query(&pg, sql, out, sizeof out);
        CHECK_MSG(strncmp(out, "1:", 2) == 0, "agent %d: incidents:repeats %s", i, out);
    }
    int leads = 0;
    for (int k = 1; k < COLLECTORS; k++) {
        char *st = NULL;
        CHECK_EQ(tt_test_http(col[k].http, "GET", "/api/v1/status", NULL, &st), 200);
        leads += strstr(st, "\"leading\":true") != NULL;
        free(st);
    }
    CHECK_EQ(leads, 1);
    for (int i = 0; i < AGENTS; i++) {
        CHECK_OK(tt_close(ag[i].c, 5000));
    }
    for (int k = 1; k < COLLECTORS; k++) {
        tt_test_serve_stop(&col[k]);
    }
}

/*
 * test_nats_faults.c - reliability scenarios S20 and S21 (../shared/research/
 * reliability-anchors.md; docs/reliability.md) end to end with every part real: nats-server
 * nodes (tests/support/natsd.h), `telltale serve --nats` collectors, agents on the client
 * library publishing to nats:// endpoints.
 *
 * S21: the stream is made here before the collector starts (so the collector leaves it as is)
 * with a duplicate window of 1 s and work-queue retention; the only NATS server is killed while
 * batches are in flight and kept down 3 s, longer than the window; the clients republish their
 * unacked batches with the same ids, JetStream may take some twice, the collector's store
 * dedup removes them: every event stored once, the conservation law holds.
 *
 * S20: 3 nodes, R3 stream, two collectors on one PostgreSQL, 3 agents; the stream's leader
 * (else any node) is killed with SIGKILL every few seconds while the previous victim is
 * started again, for 10 s (every 10 s for 5 min in `make soak`): every acknowledged event is
 * stored exactly once and the conservation law holds.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "natsd.h"
#include "pgcluster.h"
#include "serve.h"
#include "telltale.h"
#include "test.h"

#define AGENTS 3
#define STREAM "TELLTALE"

static int soak(void)
{
    const char *s = getenv("TT_SOAK");
    return s && *s && *s != '0';
}

struct agent {
    int i;
    tt_client *c;
    _Atomic uint64_t emitted;
    _Atomic int stop;
    pthread_t th;
};

static tt_client *open_agent(const struct tt_nats *ns, int i, const char *spool)
{
    char a[64], t[64];
    tt_test_agent_name("faults", i, a, sizeof a);
    tt_test_agent_token("faults", i, t, sizeof t);
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", ns->urls));
    CHECK_OK(tt_config_set(cfg, "agent", a));
    CHECK_OK(tt_config_set(cfg, "token", t));
    CHECK_OK(tt_config_set(cfg, "nats_token_file", ns->token_file));
    CHECK_OK(tt_config_set(cfg, "batch_bytes", "8192"));
    CHECK_OK(tt_config_set(cfg, "ring_bytes", "16777216"));
    CHECK_OK(tt_config_set(cfg, "ack_timeout_ms", "2000"));
    CHECK_OK(tt_config_set(cfg, "backoff_max_ms", "500"));
    if (spool) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/agent%d", spool, i);
        CHECK_OK(tt_config_set(cfg, "spool_dir", dir));
        CHECK_OK(tt_config_set(cfg, "spool_max_bytes", "1073741824"));
    }
    tt_client *c;
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    return c;
}

/* About 1,000 events a second until told to stop. */
static void *run_agent(void *arg)
{
    struct agent *g = arg;
    char msg[96];
    while (!atomic_load(&g->stop)) {
        for (int k = 0; k < 10; k++) {
            uint64_t i = atomic_fetch_add(&g->emitted, 1);
            snprintf(msg, sizeof msg, "agent %d event %llu, padded to about sixty-four bytes", g->i,
                     (unsigned long long)i);
            CHECK_OK(tt_log(g->c, NULL, TT_INFO, msg, NULL, 0));
        }
        usleep(10000);
    }
    return NULL;
}

/* Start the agents, each with a spool under spool when it is not NULL. */
static void agents_start(struct agent *ag, const struct tt_nats *ns, const char *spool)
{
    for (int i = 0; i < AGENTS; i++) {
        memset(&ag[i], 0, sizeof ag[i]);
        ag[i].i = i;
        ag[i].c = open_agent(ns, i, spool);
        CHECK(pthread_create(&ag[i].th, NULL, run_agent, &ag[i]) == 0);
    }
}

static void agents_stop(struct agent *ag)
{
    for (int i = 0; i < AGENTS; i++) {
        atomic_store(&ag[i].stop, 1);
    }
    for (int i = 0; i < AGENTS; i++) {
        CHECK(pthread_join(ag[i].th, NULL) == 0);
    }
}

static uint64_t acked_total(struct agent *ag)
{
    uint64_t n = 0;
    for (int i = 0; i < AGENTS; i++) {
        tt_stats st;
        CHECK_OK(tt_stats_get(ag[i].c, &st, sizeof st));
        n += st.acked;
    }
    return n;
}

/* What the test knows when a check fails: the stream's and the durable's state and each
 * collector's answers, so that a failure in CI says where the events went. */
static struct {
    const struct tt_nats *ns;
    struct tt_nats_conn *t;
    struct tt_test_serve *col;
    int ncol;
} diag;

static void explain(void)
{
    if (diag.t) {
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        if (js_GetStreamInfo(&si, diag.t->js, STREAM, NULL, &jerr) == NATS_OK) {
            printf("stream %s: %llu messages, seq %llu..%llu, %llu deleted, leader %s\n", STREAM,
                   (unsigned long long)si->State.Msgs, (unsigned long long)si->State.FirstSeq,
                   (unsigned long long)si->State.LastSeq, (unsigned long long)si->State.NumDeleted,
                   si->Cluster && si->Cluster->Leader ? si->Cluster->Leader : "-");
            jsStreamInfo_Destroy(si);
        } else {
            printf("stream %s: no answer (%d)\n", STREAM, (int)jerr);
        }
        jsConsumerInfo *ci = NULL;
        if (js_GetConsumerInfo(&ci, diag.t->js, STREAM, "telltale", NULL, &jerr) == NATS_OK) {
            printf("durable telltale: pending %llu, ack pending %lld, redelivered %lld, "
                   "delivered stream seq %llu, ack floor stream seq %llu, leader %s\n",
                   (unsigned long long)ci->NumPending, (long long)ci->NumAckPending,
                   (long long)ci->NumRedelivered, (unsigned long long)ci->Delivered.Stream,
                   (unsigned long long)ci->AckFloor.Stream,
                   ci->Cluster && ci->Cluster->Leader ? ci->Cluster->Leader : "-");
            jsConsumerInfo_Destroy(ci);
        } else {
            printf("durable telltale: no answer (%d)\n", (int)jerr);
        }
    }
    static const char *const samples[] = {
        "telltale_nats_messages_total",
        "telltale_nats_answered_total{result=\"ack_committed\"}",
        "telltale_nats_answered_total{result=\"ack_duplicate\"}",
        "telltale_nats_answered_total{result=\"nak\"}",
        "telltale_nats_terminated_total{reason=\"refused\"}",
        "telltale_nats_terminated_total{reason=\"malformed\"}",
        "telltale_nats_terminated_total{reason=\"auth\"}",
        "telltale_nats_fetch_errors_total",
        "telltale_nats_consumer_checks_total",
        "telltale_nats_consumer_check_failures_total",
        "telltale_nats_consumer_checks_put_off_total",
        "telltale_nats_consumer_stepdowns_total",
        "telltale_nats_swept_total",
    };
    for (int k = 0; k < diag.ncol; k++) {
        for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
            printf("collector %d: %s %llu\n", k, samples[i],
                   (unsigned long long)tt_test_metric(diag.col[k].http, samples[i]));
        }
        /* Its NATS source as it sees itself: the last look of the stalled-durable check
         * (what it saw and decided), looks put off or failed, the last fetch error. */
        char *body = NULL;
        if (tt_test_http(diag.col[k].http, "GET", "/api/v1/status", NULL, &body) == 200 && body) {
            const char *n = strstr(body, "\"nats\":");
            printf("collector %d: %s\n", k, n ? n : body);
        }
        free(body);
    }
    if (diag.ns) {
        tt_nats_explain(diag.ns);
    }
    fflush(stdout);
}

/* Flush every agent (everything acknowledged by JetStream), then wait until its events are in
 * the store (pg, or the SQLite db) and check each once, no gap, conservation. */
static void check_agents(struct agent *ag, const struct tt_pg *pg, const char *db)
{
    double wait_ms = soak() ? 600000 : 60000; /* a soak replays minutes of spool */
    for (int i = 0; i < AGENTS; i++) {
        CHECK_OK(tt_flush(ag[i].c, (uint32_t)wait_ms));
    }
    for (int i = 0; i < AGENTS; i++) {
        tt_stats st;
        CHECK_OK(tt_stats_get(ag[i].c, &st, sizeof st));
        CHECK_EQ_U64(st.acked, st.emitted);
        CHECK_EQ_U64(st.dropped_total, 0);
        uint8_t inst[16];
        CHECK_OK(tt_instance_id(ag[i].c, inst));
        struct tt_store_check sc;
        double t0 = tt_test_now_ms();
        for (;;) {
            if (pg) {
                tt_pg_check_store(pg, inst, &sc);
            } else {
                tt_test_check_store(db, inst, &sc);
            }
            if (sc.events >= st.emitted || tt_test_now_ms() - t0 > wait_ms) {
                break;
            }
            usleep(100000);
        }
        if (sc.events != st.emitted || sc.overlaps || sc.gaps) {
            printf("agent %d: emitted %llu, stored %llu up to seq %llu (%llu gaps): %llu acked "
                   "(%llu frames sent, %llu reconnects, %llu spooled)\n",
                   i, (unsigned long long)st.emitted, (unsigned long long)sc.events,
                   (unsigned long long)sc.max_seq, (unsigned long long)sc.gaps,
                   (unsigned long long)st.acked, (unsigned long long)st.frames_sent,
                   (unsigned long long)st.reconnects, (unsigned long long)st.spooled);
            explain();
        }
        CHECK_MSG(sc.events == st.emitted && sc.overlaps == 0 && sc.gaps == 0,
                  "agent %d: emitted %llu, stored %llu, overlaps %llu, gaps %llu", i,
                  (unsigned long long)st.emitted, (unsigned long long)sc.events,
                  (unsigned long long)sc.overlaps, (unsigned long long)sc.gaps);
        tt_test_check_conservation(&st, &sc);
    }
}

static void agents_close(struct agent *ag)
{
    for (int i = 0; i < AGENTS; i++) {
        CHECK_OK(tt_close(ag[i].c, 5000));
    }
}

/* S21: the stream made here with a 1 s duplicate window and work-queue retention; the server
 * down 3 s with batches in flight. In `make soak`, the anchor's own figures: JetStream's
 * default window (2 min) and the server down 5 min, the agents going on emitting into their
 * spools meanwhile. */
TEST_T(nats_faults_s21_outage_longer_than_the_dup_window_stores_each_event_once, 120)
{
    int64_t window_s = soak() ? 120 : 1;
    unsigned outage_s = soak() ? 300 : 3;
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 1000);
    const char *subjects[] = {"telltale.ingest.>"};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = STREAM;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_WorkQueuePolicy;
    cfg.Duplicates = window_s * 1000000000;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, t.js, &cfg, NULL, &jerr);
    CHECK_MSG(s == NATS_OK, "js_AddStream: %s (%d)", natsStatus_GetText(s), (int)jerr);
    jsStreamInfo_Destroy(si);
    tt_nats_disconnect(&t);

    struct tt_test_serve col;
    tt_test_serve_start(&col, "s21", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens",
                        tt_test_tokens_file("faults", AGENTS), "--nats", ns.urls,
                        "--nats-token-file", ns.token_file, "--nats-ack-wait", "3000", NULL);
    diag.ns = &ns;
    diag.t = NULL; /* its connection is gone by the check */
    diag.col = &col;
    diag.ncol = 1;
    static struct agent ag[AGENTS];
    char spool[4096];
    snprintf(spool, sizeof spool, "%s/spool", tt_test_tmpdir());
    CHECK(mkdir(spool, 0700) == 0);
    agents_start(ag, &ns, soak() ? spool : NULL);
    double t0 = tt_test_now_ms();
    while (acked_total(ag) < 3000) {
        CHECK_MSG(tt_test_now_ms() - t0 < 30000, "nothing acked after 30 s");
        usleep(20000);
    }
    /* Mid-stream, acks partly outstanding: the broker dies and stays away past the window. */
    tt_nats_kill(&ns, 0, 1);
    usleep(200000);
    uint64_t at_kill = acked_total(ag);
    sleep(outage_s);
    CHECK_EQ_U64(acked_total(ag), at_kill); /* no PubAck without a server */
    tt_nats_restart(&ns, 0);
    sleep(2);
    agents_stop(ag);
    check_agents(ag, NULL, col.db);

    /* The collector left the stream as made here. */
    tt_nats_connect(&t, &ns, 1000);
    si = NULL;
    CHECK(js_GetStreamInfo(&si, t.js, STREAM, NULL, &jerr) == NATS_OK);
    CHECK_EQ(si->Config->Duplicates, window_s * 1000000000);
    CHECK_EQ((int)si->Config->Retention, (int)js_WorkQueuePolicy);
    jsStreamInfo_Destroy(si);
    tt_nats_disconnect(&t);

    uint64_t dup =
        tt_test_metric(col.http, "telltale_nats_answered_total{result=\"ack_duplicate\"}");
    uint64_t com =
        tt_test_metric(col.http, "telltale_nats_answered_total{result=\"ack_committed\"}");
    uint64_t emitted = 0;
    for (int i = 0; i < AGENTS; i++) {
        emitted += atomic_load(&ag[i].emitted);
    }
    printf("S21: %u s outage past a %lld s window: %llu events stored once; collector: %llu "
           "messages committed, %llu acked as duplicates (delivered twice by JetStream, removed "
           "by the store's dedup); %llu acked by JetStream before the outage\n",
           outage_s, (long long)window_s, (unsigned long long)emitted, (unsigned long long)com,
           (unsigned long long)dup, (unsigned long long)at_kill);
    fflush(stdout);
    agents_close(ag);
    tt_test_serve_stop(&col);
}

/* The index of the node leading the stream (named "n<i+1>"), or -1 when there is none now. */
static int stream_leader(struct tt_nats_conn *t)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    int who = -1;
    if (js_GetStreamInfo(&si, t->js, STREAM, NULL, &jerr) == NATS_OK && si->Cluster &&
        si->Cluster->Leader && si->Cluster->Leader[0] == 'n') {
        who = atoi(si->Cluster->Leader + 1) - 1; /* node i is named n<i+1> */
    }
    jsStreamInfo_Destroy(si);
    return who >= 0 && who < 3 ? who : -1;
}

/* S20: kill -9 the stream's leader every period_ms for seconds, restarting the previous one. */
static void s20_run(double seconds, int period_ms)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 3);
    struct tt_pg pg;
    tt_pg_start(&pg);
    const char *toks = tt_test_tokens_file("faults", AGENTS);
    struct tt_test_serve col[2];
    for (int k = 0; k < 2; k++) {
        char name[16];
        snprintf(name, sizeof name, "s20c%d", k);
        tt_test_serve_start(&col[k], name, TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", toks,
                            "--store", pg.url, "--nats", ns.urls, "--nats-token-file",
                            ns.token_file, "--nats-replicas", "3", "--nats-ack-wait", "3000", NULL);
    }
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 1000);
    diag.ns = &ns;
    diag.t = &t;
    diag.col = col;
    diag.ncol = 2;
    static struct agent ag[AGENTS];
    agents_start(ag, &ns, NULL);
    /* A kill per period: as many as the duration holds, however long the restarts take. A
     * node is killed only while all three are healthy: a restarted one whose copy of the
     * stream nats-server has not brought current yet is waited for (a period at a time, up to
     * 4 times the duration in all), so that no kill takes the stream's quorum away. */
    int target = (int)(seconds * 1000 / period_ms);
    int down = -1, kills = 0, leaders = 0, rr = 0, waits = 0;
    uint64_t acked_prev = 0, stalls = 0;
    double t_start = tt_test_now_ms();
    while (kills < target && tt_test_now_ms() - t_start < seconds * 4000) {
        usleep((useconds_t)period_ms * 1000);
        if (down >= 0) {
            tt_nats_restart_wait(&ns, down, 30000);
            down = -1;
        }
        int healthy = 1;
        for (int i = 0; i < 3; i++) {
            healthy &= tt_nats_healthy(&ns, i);
        }
        if (!healthy) {
            waits++;
            continue;
        }
        int v = -1;
        for (int tries = 0; v < 0 && tries < 5; tries++) {
            v = stream_leader(&t); /* none while the restarted node catches up: ask again */
            if (v < 0) {
                usleep(200000);
            }
        }
        if (v >= 0) {
            leaders++;
        } else {
            v = rr++ % 3;
        }
        uint64_t a = acked_total(ag);
        stalls += a == acked_prev;
        acked_prev = a;
        tt_nats_kill(&ns, v, 1);
        down = v;
        kills++;
    }
    if (down >= 0) {
        tt_nats_restart_wait(&ns, down, 30000);
    }
    agents_stop(ag);
    check_agents(ag, &pg, NULL);
    uint64_t emitted = 0;
    for (int i = 0; i < AGENTS; i++) {
        emitted += atomic_load(&ag[i].emitted);
    }
    uint64_t dup = 0, com = 0, downs = 0, swept = 0, looks = 0, failed = 0, put_off = 0;
    for (int k = 0; k < 2; k++) {
        looks += tt_test_metric(col[k].http, "telltale_nats_consumer_checks_total");
        failed += tt_test_metric(col[k].http, "telltale_nats_consumer_check_failures_total");
        put_off += tt_test_metric(col[k].http, "telltale_nats_consumer_checks_put_off_total");
        downs += tt_test_metric(col[k].http, "telltale_nats_consumer_stepdowns_total");
        swept += tt_test_metric(col[k].http, "telltale_nats_swept_total");
        dup +=
            tt_test_metric(col[k].http, "telltale_nats_answered_total{result=\"ack_duplicate\"}");
        com +=
            tt_test_metric(col[k].http, "telltale_nats_answered_total{result=\"ack_committed\"}");
    }
    printf("S20: %.0f s, %d kills -9 (%d of the stream's leader), %d periods waiting for a node "
           "to be current, %llu periods without a new ack; %llu events stored once; collectors: "
           "%llu committed, %llu duplicates, %llu "
           "step-downs of a stalled durable (after %llu looks; %llu failed, %llu put off), %llu "
           "messages swept\n",
           seconds, kills, leaders, waits, (unsigned long long)stalls, (unsigned long long)emitted,
           (unsigned long long)com, (unsigned long long)dup, (unsigned long long)downs,
           (unsigned long long)looks, (unsigned long long)failed, (unsigned long long)put_off,
           (unsigned long long)swept);
    fflush(stdout);
    CHECK_MSG(leaders >= 1, "no kill found the stream's leader (%d kills)", kills);
    CHECK_MSG(kills >= 1, "no kill: a node not current for %d periods", waits);
    tt_nats_disconnect(&t);
    agents_close(ag);
    for (int k = 0; k < 2; k++) {
        tt_test_serve_stop(&col[k]);
    }
}

TEST_T(nats_faults_s20_leader_killed_repeatedly_stores_each_acked_event_once, 180)
{
    if (soak()) {
        s20_run(300, 10000);
    } else {
        s20_run(10, 2500);
    }
}

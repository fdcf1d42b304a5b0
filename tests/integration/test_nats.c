/*
 * test_nats.c - `telltale serve --nats` (source/nats.c; docs/wire-format.md, "NATS JetStream")
 * against real nats-server nodes (tests/support/natsd.h): a publisher made here with libnats
 * and the project's own encoders sends hello + batch messages with the contract's subject and
 * Nats-Msg-Id, and the test checks the store (every event once), JetStream's view of the
 * durable consumer (everything acked), the counters, the terminated messages, a cluster with
 * a node and a collector killed, and operator orders published on an agent's control subject.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "batches.h"
#include "collector/source/nats.h"
#include "collector/source/nats_msg.h"
#include "common/wire.h"
#include "natsd.h"
#include "pgcluster.h"
#include "serve.h"
#include "test.h"

#define STREAM "TELLTALE"
#define DURABLE "telltale"
#define PREFIX "telltale.ingest"

static const char *const agents[3] = {"nats-a", "nats-b", "nats-c"};
static const char *const tokens[3] = {"tok-nats-a-0123456789abcdef", "tok-nats-b-0123456789abcdef",
                                      "tok-nats-c-0123456789abcdef"};

static const char *tokens_file(void)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/ingest.tokens", tt_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    for (int i = 0; i < 3; i++) {
        fprintf(f, "%s %s\n", agents[i], tokens[i]);
    }
    CHECK(fclose(f) == 0);
    CHECK(chmod(path, 0600) == 0);
    return path;
}

/* The stream as the collector would create it, but with a duplicate window of dup_ms. */
static void make_stream(struct tt_nats_conn *p, int replicas, int64_t dup_ms)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {PREFIX ".>"};
    sc.Name = STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = replicas;
    sc.Duplicates = dup_ms * 1000000;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, p->js, &sc, NULL, &jerr);
    CHECK_MSG(s == NATS_OK, "js_AddStream: %s (%d)", natsStatus_GetText(s), (int)jerr);
    jsStreamInfo_Destroy(si);
}

static void instance_of(uint8_t inst[16], int agent, int round)
{
    memset(inst, 0, 16);
    inst[0] = 0xa0;
    inst[1] = (uint8_t)agent;
    inst[2] = (uint8_t)round;
    inst[15] = 0x5a;
}

/* Which parts of a message to spoil. */
enum { MSG_OK, MSG_BAD_TOKEN, MSG_NO_ID, MSG_GARBAGE };

/* One hello + batch message of n events first_seq.. for agent i's instance inst, with its
 * contract subject and Nats-Msg-Id (spoiled as how says). */
static natsMsg *make_msg(int i, const uint8_t inst[16], uint64_t first_seq, int n, int how)
{
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memcpy(h.instance, inst, 16);
    snprintf(h.agent, sizeof h.agent, "%s", agents[i]);
    snprintf(h.token, sizeof h.token, "%s", how == MSG_BAD_TOKEN ? "tok-wrong" : tokens[i]);
    h.pid = 4242;
    snprintf(h.host, sizeof h.host, "test-host");
    snprintf(h.library, sizeof h.library, "test_nats");
    h.start_unix_ns = 1700000000000000000ull;
    tt__buf hp, bp, body;
    tt__buf_init(&hp, 4096);
    tt__buf_init(&bp, 1u << 20);
    tt__buf_init(&body, 1u << 20);
    CHECK(tt__hello_encode(&h, &hp) == 0);
    tt_test_batch_payload(&bp, inst, first_seq, n);
    CHECK(tt__frame_append(&body, TT_FT_HELLO, hp.data, hp.len) == 0);
    CHECK(tt__frame_append(&body, TT_FT_BATCH, bp.data, bp.len) == 0);
    if (how == MSG_GARBAGE) {
        body.data[body.len - 1] ^= 0x55; /* the batch frame's CRC no longer matches */
    }
    char subj[64], id[NATS_MSG_ID_MAX];
    snprintf(subj, sizeof subj, PREFIX ".%u", nats_partition(agents[i]));
    nats_msg_id(inst, first_seq, id, sizeof id);
    natsMsg *m = NULL;
    CHECK(natsMsg_Create(&m, subj, NULL, (const char *)body.data, (int)body.len) == NATS_OK);
    if (how != MSG_NO_ID) {
        CHECK(natsMsgHeader_Set(m, "Nats-Msg-Id", id) == NATS_OK);
    }
    tt__buf_fini(&hp);
    tt__buf_fini(&bp);
    tt__buf_fini(&body);
    return m;
}

/* make_msg, published and acked by JetStream; returns whether JetStream took it as a
 * duplicate. Retries while the cluster moves (a node killed). */
static int publish(struct tt_nats_conn *p, int i, const uint8_t inst[16], uint64_t first_seq, int n,
                   int how)
{
    int dup = -1;
    for (int attempt = 0; attempt < 200 && dup < 0; attempt++) {
        natsMsg *m = make_msg(i, inst, first_seq, n, how);
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        if (js_PublishMsg(&pa, p->js, m, NULL, &jerr) == NATS_OK) {
            dup = pa->Duplicate ? 1 : 0;
            jsPubAck_Destroy(pa);
        } else {
            usleep(100000);
        }
        natsMsg_Destroy(m);
    }
    CHECK_MSG(dup >= 0, "cannot publish for agent %s", agents[i]);
    return dup;
}

/* Wait until the durable consumer has nothing pending nor unacked (JetStream's own view). */
static void wait_all_acked(struct tt_nats_conn *p, double timeout_ms)
{
    double t0 = tt_test_now_ms();
    int64_t ack_pending = -1;
    uint64_t pending = 1;
    for (;;) {
        jsConsumerInfo *ci = NULL;
        jsErrCode jerr = 0;
        if (js_GetConsumerInfo(&ci, p->js, STREAM, DURABLE, NULL, &jerr) == NATS_OK) {
            ack_pending = ci->NumAckPending;
            pending = ci->NumPending;
            jsConsumerInfo_Destroy(ci);
            if (ack_pending == 0 && pending == 0) {
                return;
            }
        }
        CHECK_MSG(tt_test_now_ms() - t0 < timeout_ms,
                  "consumer not fully acked: NumAckPending %lld, NumPending %llu",
                  (long long)ack_pending, (unsigned long long)pending);
        usleep(100000);
    }
}

/* An integer field of /api/v1/status's "nats" object. */
static int64_t nats_status(const char *http, const char *key, const char *sub)
{
    char *body = NULL;
    CHECK_EQ(tt_test_http(http, "GET", "/api/v1/status", NULL, &body), 200);
    json_error_t e;
    json_t *o = json_loads(body, 0, &e);
    CHECK(o);
    json_t *n = json_object_get(o, "nats");
    CHECK(n);
    json_t *v = sub ? json_object_get(json_object_get(n, sub), key) : json_object_get(n, key);
    CHECK_MSG(v, "no nats.%s%s%s in %s", sub ? sub : "", sub ? "." : "", key, body);
    int64_t r = json_is_integer(v) ? json_integer_value(v) : json_is_true(v);
    json_decref(o);
    free(body);
    return r;
}

static void check_instance(const char *db, const struct tt_pg *pg, const uint8_t inst[16],
                           uint64_t events)
{
    struct tt_store_check sc;
    if (pg) {
        tt_pg_check_store(pg, inst, &sc);
    } else {
        tt_test_check_store(db, inst, &sc);
    }
    CHECK_EQ_U64(sc.events, events);
    CHECK_EQ_U64(sc.overlaps, 0);
    CHECK_EQ_U64(sc.gaps, 0);
    CHECK_EQ_U64(sc.decoded, events);
}

#define MSGS 20
#define EVENTS 10

/* (1) One server, one collector: every event stored once, JetStream fully acked, the agents
 * in the API; the same messages again after the broker's duplicate window: the store's dedup
 * keeps them once, and they are acked again. */
TEST_T(nats_single_exactly_once, 60)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    make_stream(&p, 1, 1000); /* the collector leaves an existing stream as it is */
    struct tt_test_serve s;
    tt_test_serve_start(&s, "single", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, NULL);
    uint8_t inst[3][16];
    for (int a = 0; a < 3; a++) {
        instance_of(inst[a], a, 0);
    }
    for (int k = 0; k < MSGS; k++) {
        for (int a = 0; a < 3; a++) {
            CHECK_EQ(publish(&p, a, inst[a], 1 + (uint64_t)k * EVENTS, EVENTS, MSG_OK), 0);
        }
    }
    wait_all_acked(&p, 20000);
    for (int a = 0; a < 3; a++) {
        check_instance(s.db, NULL, inst[a], MSGS * EVENTS);
    }
    CHECK_EQ(nats_status(s.http, "acked", NULL), 3 * MSGS);
    CHECK_EQ(nats_status(s.http, "enabled", NULL), 1);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    for (int a = 0; a < 3; a++) {
        CHECK_MSG(strstr(body, agents[a]), "agent %s not in %s", agents[a], body);
    }
    free(body);
    /* Past the broker's window the same ids are new messages to JetStream... */
    usleep(1500000);
    for (int k = 0; k < MSGS; k++) {
        for (int a = 0; a < 3; a++) {
            CHECK_EQ(publish(&p, a, inst[a], 1 + (uint64_t)k * EVENTS, EVENTS, MSG_OK), 0);
        }
    }
    wait_all_acked(&p, 20000);
    /* ...and the store's dedup on (instance, seq) keeps each event once. */
    for (int a = 0; a < 3; a++) {
        check_instance(s.db, NULL, inst[a], MSGS * EVENTS);
    }
    CHECK_EQ(nats_status(s.http, "acked_duplicate", NULL), 3 * MSGS);
    CHECK_EQ(tt_test_metric(s.http, "telltale_nats_answered_total{result=\"ack_duplicate\"}"),
             3 * MSGS);
    tt_test_serve_stop(&s);
    tt_nats_disconnect(&p);
}

/* (1b) The stalled-durable check (nats.h) looks at an idle durable every NATS_STALL_IDLE_MS and
 * leaves a healthy one alone, also in a stream shared with other publishers whose messages
 * came after the durable's own; the durable keeps consuming after the looks. */
TEST_T(nats_idle_durable_checked_and_left_alone_when_healthy, 60)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[2] = {PREFIX ".>", "elsewhere.>"};
    sc.Name = STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 2;
    sc.Storage = js_FileStorage;
    sc.Retention = js_WorkQueuePolicy;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    CHECK(js_AddStream(&si, p.js, &sc, NULL, &jerr) == NATS_OK);
    jsStreamInfo_Destroy(si);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "idle", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, NULL);
    uint8_t inst[16];
    instance_of(inst, 0, 0);
    for (int k = 0; k < 3; k++) {
        CHECK_EQ(publish(&p, 0, inst, 1 + (uint64_t)k * EVENTS, EVENTS, MSG_OK), 0);
    }
    /* Messages the durable never sees, after its own: past what it delivered. */
    for (int k = 0; k < 5; k++) {
        CHECK(js_Publish(NULL, p.js, "elsewhere.x", "not telltale's", 14, NULL, &jerr) == NATS_OK);
    }
    wait_all_acked(&p, 20000);
    /* Idle: the first look after NATS_STALL_IDLE_MS, then one every NATS_STALL_IDLE_MS; a stuck
     * durable would be stepped down at the second. */
    double t0 = tt_test_now_ms();
    while (nats_status(s.http, "consumer_checks", NULL) < 3) {
        CHECK_MSG(tt_test_now_ms() - t0 < 6 * NATS_STALL_IDLE_MS, "%lld looks after %.0f ms",
                  (long long)nats_status(s.http, "consumer_checks", NULL), tt_test_now_ms() - t0);
        usleep(200000);
    }
    CHECK_EQ(nats_status(s.http, "consumer_stepdowns", NULL), 0);
    CHECK_EQ(tt_test_metric(s.http, "telltale_nats_consumer_stepdowns_total"), 0);
    CHECK(tt_test_metric(s.http, "telltale_nats_consumer_checks_total") >= 3);
    CHECK_EQ(publish(&p, 0, inst, 1 + 3 * EVENTS, EVENTS, MSG_OK), 0);
    wait_all_acked(&p, 20000);
    check_instance(s.db, NULL, inst, 4 * EVENTS);
    CHECK_EQ(nats_status(s.http, "consumer_stepdowns", NULL), 0);
    tt_test_serve_stop(&s);
    tt_nats_disconnect(&p);
}

/* A publisher that keeps the durable delivering (as connected agents' heartbeats do): a
 * message of BUSY_EVENTS events for its own instance every 300 ms until told to stop. */
#define BUSY_EVENTS 2
struct busy {
    struct tt_nats_conn p;
    pthread_t th;
    atomic_int stop;
    uint8_t inst[16];
    int msgs;
};

static void *busy_main(void *arg)
{
    struct busy *b = arg;
    while (!atomic_load(&b->stop)) {
        CHECK_EQ(
            publish(&b->p, 2, b->inst, 1 + (uint64_t)b->msgs * BUSY_EVENTS, BUSY_EVENTS, MSG_OK),
            0);
        b->msgs++;
        usleep(300000);
    }
    return NULL;
}

/* (1c) A message JetStream will never deliver again (left in the work queue below what the
 * durable delivered, neither pending nor awaiting an ack: how nats-server 2.9 leaves a message
 * skipped by a new leader, made here by a durable with MaxDeliver 1 whose one delivery went
 * to a reader that never answered) is swept by the stalled-durable check: read from the
 * stream, stored once, deleted from the stream. With busy, other messages keep the durable
 * delivering all along (it is never idle for NATS_STALL_IDLE_MS): the check looks every
 * NATS_STALL_BUSY_MS and sweeps it all the same. */
static void skipped_is_swept(int busy, int n)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    make_stream(&p, 1, 1000);
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = DURABLE;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = 1000 * 1000000LL;
    cc.MaxDeliver = 1;
    cc.MaxAckPending = 1024;
    cc.FilterSubject = PREFIX ".>";
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    CHECK(js_AddConsumer(&ci, p.js, STREAM, &cc, NULL, &jerr) == NATS_OK);
    jsConsumerInfo_Destroy(ci);
    uint8_t inst[16];
    instance_of(inst, 1, 0);
    for (int k = 0; k < n; k++) {
        CHECK_EQ(publish(&p, 1, inst, 1 + (uint64_t)k * EVENTS, EVENTS, MSG_OK), 0);
    }
    /* The one delivery of each, to a reader that never answers. */
    for (int k = 0; k < n; k++) {
        natsMsg *got = NULL;
        CHECK(natsConnection_RequestString(&got, p.nc,
                                           "$JS.API.CONSUMER.MSG.NEXT." STREAM "." DURABLE, "1",
                                           2000) == NATS_OK);
        CHECK(natsMsg_GetDataLength(got) > 100); /* the message itself, not a status */
        natsMsg_Destroy(got);
    }
    /* Past AckWait, with MaxDeliver reached, JetStream gives up on it (at the next request for
     * messages, which finds none). */
    double t1 = tt_test_now_ms();
    for (;;) {
        usleep(200000);
        natsMsg *none = NULL;
        natsConnection_RequestString(&none, p.nc, "$JS.API.CONSUMER.MSG.NEXT." STREAM "." DURABLE,
                                     "{\"batch\":1,\"no_wait\":true}", 2000);
        CHECK(natsMsg_GetDataLength(none) == 0); /* a status: no message */
        natsMsg_Destroy(none);
        CHECK(js_GetConsumerInfo(&ci, p.js, STREAM, DURABLE, NULL, &jerr) == NATS_OK);
        if (ci->NumAckPending == 0) {
            break;
        }
        jsConsumerInfo_Destroy(ci);
        CHECK_MSG(tt_test_now_ms() - t1 < 20000, "still awaiting its ack after 20 s");
    }
    CHECK_EQ(ci->NumPending, 0);
    CHECK_EQ(ci->Delivered.Stream, (uint64_t)n);
    jsConsumerInfo_Destroy(ci);
    /* Back to the collector's own settings (redeliver for ever): the message stays skipped. */
    cc.MaxDeliver = -1;
    CHECK(js_UpdateConsumer(&ci, p.js, STREAM, &cc, NULL, &jerr) == NATS_OK);
    jsConsumerInfo_Destroy(ci);

    struct tt_test_serve s;
    char log[4096];
    snprintf(log, sizeof log, "%s/serve-swept.log", tt_test_outdir());
    uint64_t lines_before = access(log, F_OK) == 0
                                ? tt_test_count_lines(log, "swept from sequence 1")
                                : 0; /* a rerun's */
    tt_test_serve_start(&s, "swept", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, "--nats-ack-wait",
                        "1000", NULL);
    CHECK_EQ(publish(&p, 1, inst, 1 + (uint64_t)n * EVENTS, EVENTS, MSG_OK),
             0); /* delivered as usual */
    static struct busy b;
    memset(&b, 0, sizeof b);
    if (busy) {
        instance_of(b.inst, 2, 0);
        tt_nats_connect(&b.p, &ns, 0);
        CHECK(pthread_create(&b.th, NULL, busy_main, &b) == 0);
        /* Until both of the skipped message's events are stored: two busy looks and slack. */
        struct tt_store_check sc = {0};
        double t0 = tt_test_now_ms();
        while (sc.events < (uint64_t)(n + 1) * EVENTS) {
            CHECK_MSG(tt_test_now_ms() - t0 < 4 * NATS_STALL_BUSY_MS,
                      "%llu of %d events stored after %.0f ms", (unsigned long long)sc.events,
                      (n + 1) * EVENTS, tt_test_now_ms() - t0);
            usleep(200000);
            tt_test_check_store(s.db, inst, &sc);
        }
        atomic_store(&b.stop, 1);
        CHECK(pthread_join(b.th, NULL) == 0);
        tt_nats_disconnect(&b.p);
        wait_all_acked(&p, 20000);
    }
    double t0 = tt_test_now_ms();
    uint64_t left = UINT64_MAX; /* as last read */
    int info_failed = 0;
    for (;;) {
        jsStreamInfo *si = NULL;
        natsStatus st = js_GetStreamInfo(&si, p.js, STREAM, NULL, &jerr);
        if (st == NATS_OK) {
            left = si->State.Msgs;
            jsStreamInfo_Destroy(si);
        } else { /* said, and asked again: the state polled for is what counts */
            info_failed++;
            fprintf(stderr, "stream info: %s (JetStream error %d): %s\n", natsStatus_GetText(st),
                    (int)jerr, nats_GetLastError(NULL));
        }
        if (st == NATS_OK && left == 0) {
            break;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 8 * NATS_STALL_IDLE_MS,
                  "%llu messages left after %.0f ms (%d stream info requests failed)",
                  (unsigned long long)left, tt_test_now_ms() - t0, info_failed);
        usleep(200000);
    }
    check_instance(s.db, NULL, inst, (uint64_t)(n + 1) * EVENTS);
    if (busy) {
        uint8_t binst[16];
        instance_of(binst, 2, 0);
        check_instance(s.db, NULL, binst, (uint64_t)b.msgs * BUSY_EVENTS);
    }
    /* Swept: the skipped message, and any acked copy nats-server 2.9 left behind it in the work
     * queue (the delivered one here: its ack did not remove it while the skipped one held the
     * ack floor), which the store's dedup answers as a duplicate. */
    int64_t swept = nats_status(s.http, "swept", NULL);
    CHECK(swept >= n);
    CHECK_EQ(nats_status(s.http, "acked", NULL), n + 1 + b.msgs); /* each message committed once */
    CHECK_EQ(nats_status(s.http, "consumer_stepdowns", NULL), 0);
    if (!busy) {
        CHECK_EQ(tt_test_metric(s.http, "telltale_nats_swept_total"), (uint64_t)swept);
        CHECK_EQ(nats_status(s.http, "acked_duplicate", NULL), swept - n);
    }
    tt_test_serve_stop(&s);
    uint64_t sweeps = tt_test_count_lines(s.log, "swept from sequence 1") - lines_before;
    if (n > NATS_SWEEP_MAX) {
        /* Cut at the cap, and gone on with: at least one sweep said there was more. */
        CHECK(tt_test_count_lines(s.log, ", more to sweep") >= 1);
    } else if (busy) {
        CHECK(sweeps >= 1);
    } else {
        CHECK_EQ_U64(sweeps, 1);
    }
    tt_nats_disconnect(&p);
}

TEST_T(nats_message_the_durable_skipped_is_swept_from_the_stream_and_stored, 60)
{
    skipped_is_swept(0, 1);
}

TEST_T(nats_message_the_durable_skipped_is_swept_while_it_goes_on_delivering, 90)
{
    skipped_is_swept(1, 1);
}

/* Hundreds of orphans (one node death left 725 in a CI run), more than a sweep takes
 * (NATS_SWEEP_MAX): a sweep cut at its cap goes on at once, and all are stored within the
 * time the check takes for one (at two looks a sweep they took over 30 s). */
TEST_T(nats_hundreds_of_skipped_messages_are_swept_on_without_waiting_for_two_looks, 90)
{
    skipped_is_swept(0, 5 * NATS_SWEEP_MAX - 10);
}

/* (2) A malformed message, a hello with a bad token and one without Nats-Msg-Id are
 * terminated and counted, nothing of them stored, and the rest goes on. The collector creates
 * the stream itself. */
TEST_T(nats_terminated, 60)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "term", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, NULL);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    CHECK_MSG(js_GetStreamInfo(&si, p.js, STREAM, NULL, &jerr) == NATS_OK,
              "the collector did not create stream " STREAM);
    jsStreamInfo_Destroy(si);
    uint8_t good[16], bad[16], noid[16], junk[16];
    instance_of(good, 0, 1);
    instance_of(bad, 1, 1);
    instance_of(noid, 2, 1);
    instance_of(junk, 0, 2);
    CHECK_EQ(publish(&p, 0, good, 1, EVENTS, MSG_OK), 0);
    CHECK_EQ(publish(&p, 0, junk, 1, EVENTS, MSG_GARBAGE), 0);
    CHECK_EQ(publish(&p, 1, bad, 1, EVENTS, MSG_BAD_TOKEN), 0);
    CHECK_EQ(publish(&p, 2, noid, 1, EVENTS, MSG_NO_ID), 0);
    CHECK_EQ(publish(&p, 0, good, 1 + EVENTS, EVENTS, MSG_OK), 0);
    wait_all_acked(&p, 20000);
    check_instance(s.db, NULL, good, 2 * EVENTS);
    check_instance(s.db, NULL, bad, 0);
    check_instance(s.db, NULL, noid, 0);
    CHECK_EQ(nats_status(s.http, "malformed", "terminated"), 1);
    CHECK_EQ(nats_status(s.http, "auth", "terminated"), 1);
    CHECK_EQ(nats_status(s.http, "msg_id", "terminated"), 1);
    CHECK_EQ(nats_status(s.http, "acked", NULL), 2);
    CHECK_EQ(tt_test_metric(s.http, "telltale_nats_terminated_total{reason=\"auth\"}"), 1);
    tt_test_serve_stop(&s);
    tt_nats_disconnect(&p);
}

/* An agent's part of the order protocol: confirm each order with its Tt-Order id. */
static void confirm_order(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)sub;
    (void)closure;
    const char *id = NULL;
    if (natsMsgHeader_Get(m, "Tt-Order", &id) == NATS_OK && natsMsg_GetReply(m)) {
        natsConnection_Publish(nc, natsMsg_GetReply(m), id, (int)strlen(id));
    }
    natsMsg_Destroy(m);
}

/* (4) A halt through the API goes to the agent's control subject with Tt-Agent and Tt-Order,
 * and is resent until the agent confirms it: an agent that subscribes after the order was
 * posted (it was reconnecting) still receives it; once confirmed it is sent no more; an order
 * an agent confirms at once is answered "nats_delivered": true. */
TEST_T(nats_halt_resent_until_confirmed, 60)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "halt", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, NULL);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    char subj[64];
    CHECK(nats_control_subject(agents[1], subj, sizeof subj) == 0);
    char *body = NULL;
    char path[128];
    snprintf(path, sizeof path, "/api/v1/agents/%s/halt", agents[1]);
    CHECK_EQ(tt_test_http(s.http, "POST", path, "{\"reason\":\"test halt\"}", &body), 202);
    CHECK_MSG(strstr(body, "\"nats_published\":true") && strstr(body, "\"nats_delivered\":false"),
              "answer: %s", body);
    free(body);

    /* The agent comes (back) now: the order reaches it. */
    natsSubscription *sub = NULL;
    CHECK(natsConnection_SubscribeSync(&sub, p.nc, subj) == NATS_OK);
    CHECK(natsConnection_Flush(p.nc) == NATS_OK);
    natsMsg *m = NULL;
    CHECK_MSG(natsSubscription_NextMsg(&m, sub, 5000) == NATS_OK, "no control message on %s", subj);
    const char *who = NULL, *id = NULL;
    CHECK(natsMsgHeader_Get(m, "Tt-Agent", &who) == NATS_OK);
    CHECK_STR(who, agents[1]);
    CHECK(natsMsgHeader_Get(m, "Tt-Order", &id) == NATS_OK && id && *id);
    CHECK(natsMsg_GetReply(m) != NULL);
    CHECK_MSG(memmem(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), "test halt", 9),
              "the halt's reason is not in the payload");
    CHECK(natsConnection_Publish(p.nc, natsMsg_GetReply(m), id, (int)strlen(id)) == NATS_OK);
    CHECK(natsConnection_Flush(p.nc) == NATS_OK);
    natsMsg_Destroy(m);
    double t0 = tt_test_now_ms();
    while (nats_status(s.http, "control_delivered", NULL) != 1) {
        CHECK_MSG(tt_test_now_ms() - t0 < 5000, "the confirmation was not taken");
        usleep(20000);
    }
    CHECK(nats_status(s.http, "control_resent", NULL) >= 1);
    /* Confirmed: sent no more (a copy already on its way may still come). */
    while (natsSubscription_NextMsg(&m, sub, 300) == NATS_OK) {
        natsMsg_Destroy(m);
    }
    CHECK_MSG(natsSubscription_NextMsg(&m, sub, 1500) == NATS_TIMEOUT,
              "the order is still sent after its confirmation");
    natsSubscription_Destroy(sub);

    /* An agent that confirms at once: delivered, in the answer. */
    CHECK(natsConnection_Subscribe(&sub, p.nc, subj, confirm_order, NULL) == NATS_OK);
    CHECK(natsConnection_Flush(p.nc) == NATS_OK);
    snprintf(path, sizeof path, "/api/v1/agents/%s/resume", agents[1]);
    CHECK_EQ(tt_test_http(s.http, "POST", path, "{\"reason\":\"go on\"}", &body), 202);
    CHECK_MSG(strstr(body, "\"nats_delivered\":true"), "answer: %s", body);
    free(body);
    CHECK_EQ(nats_status(s.http, "control_published", NULL), 2);
    CHECK_EQ(nats_status(s.http, "control_delivered", NULL), 2);
    CHECK_EQ(nats_status(s.http, "control_expired", NULL), 0);
    CHECK_EQ(tt_test_metric(s.http, "telltale_nats_control_delivered_total"), 2);
    natsSubscription_Destroy(sub);
    tt_test_serve_stop(&s);
    tt_nats_disconnect(&p);
}

/* The publisher of the cluster test, on its own thread. */
#define CL_MSGS 60
struct feeder {
    struct tt_nats_conn *p;
    uint8_t inst[3][16];
    _Atomic int sent;
};

static void *feed(void *arg)
{
    struct feeder *f = arg;
    for (int k = 0; k < CL_MSGS; k++) {
        for (int a = 0; a < 3; a++) {
            publish(f->p, a, f->inst[a], 1 + (uint64_t)k * EVENTS, EVENTS, MSG_OK);
        }
        atomic_fetch_add(&f->sent, 1);
        usleep(10000);
    }
    return NULL;
}

/* (3) A 3-node cluster, an R3 stream, two collectors sharing one PostgreSQL and one durable:
 * one NATS node and one collector killed (-9) mid-stream; every event is stored exactly once
 * and JetStream ends fully acked (what the dead collector held is redelivered to the other). */
TEST_T(nats_cluster_kill, 90)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 3);
    struct tt_pg pg;
    tt_pg_start(&pg);
    const char *toks = tokens_file();
    struct tt_test_serve a, b;
    tt_test_serve_start(&a, "cl_a", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", toks, "--store",
                        pg.url, "--nats", ns.urls, "--nats-token-file", ns.token_file,
                        "--nats-replicas", "3", "--nats-ack-wait", "3000", NULL);
    tt_test_serve_start(&b, "cl_b", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", toks, "--store",
                        pg.url, "--nats", ns.urls, "--nats-token-file", ns.token_file,
                        "--nats-replicas", "3", "--nats-ack-wait", "3000", NULL);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    struct feeder f = {.p = &p};
    for (int i = 0; i < 3; i++) {
        instance_of(f.inst[i], i, 7);
    }
    pthread_t th;
    CHECK(pthread_create(&th, NULL, feed, &f) == 0);
    while (atomic_load(&f.sent) < CL_MSGS / 3) {
        usleep(10000);
    }
    /* Both collectors take part (one durable, split between them) before the kills. */
    double t0 = tt_test_now_ms();
    while (nats_status(a.http, "messages", NULL) == 0 ||
           nats_status(b.http, "messages", NULL) == 0) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000, "a collector fetched nothing");
        usleep(20000);
    }
    tt_nats_kill(&ns, 1, 1);
    tt_test_serve_kill(&a);
    CHECK(pthread_join(th, NULL) == 0);
    wait_all_acked(&p, 40000);
    for (int i = 0; i < 3; i++) {
        check_instance(NULL, &pg, f.inst[i], CL_MSGS * EVENTS);
    }
    CHECK(nats_status(b.http, "acked", NULL) > 0);
    tt_test_serve_stop(&b);
    tt_nats_disconnect(&p);
}

/* Run `telltale serve ARGS` (it must refuse to start): its exit status, its output in out. */
static int serve_refused(const char *args, char *out, size_t cap)
{
    const char *b = getenv("TT_BIN");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "%s serve --data %s/refused --no-http --listen unix:%s/r.sock %s 2>&1",
             b ? b : "build/telltale", tt_test_tmpdir(), tt_test_tmpdir(), args);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Secrets: a user and password in the URL and a token file others may read are refused at
 * start, each with a message that says what to do; the ready file names the servers. */
TEST_T(nats_options, 30)
{
    char out[8192], args[4200];
    CHECK_EQ(serve_refused("--nats nats://alice:secret@127.0.0.1:4222", out, sizeof out), 2);
    CHECK_MSG(strstr(out, "--nats-token-file") && !strstr(out, "secret"), "said: %s", out);
    CHECK_EQ(serve_refused("--nats tcp://127.0.0.1:4222", out, sizeof out), 2);
    CHECK_MSG(strstr(out, "nats://HOST:PORT"), "said: %s", out);
    char tok[4096];
    snprintf(tok, sizeof tok, "%s/open.token", tt_test_tmpdir());
    FILE *f = fopen(tok, "w");
    CHECK(f);
    fputs("tok\n", f);
    CHECK(fclose(f) == 0);
    CHECK(chmod(tok, 0644) == 0);
    snprintf(args, sizeof args, "--nats nats://127.0.0.1:4222 --nats-token-file %s", tok);
    CHECK_EQ(serve_refused(args, out, sizeof out), 2);
    CHECK_MSG(strstr(out, "chmod"), "said: %s", out);

    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "ready", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, NULL);
    char ready[800];
    snprintf(ready, sizeof ready, "%s/ready.json", s.dir);
    json_error_t e;
    json_t *o = json_load_file(ready, 0, &e);
    CHECK_MSG(o, "%s: %s", ready, e.text);
    CHECK_STR(json_string_value(json_object_get(o, "nats")), ns.urls);
    json_decref(o);
    CHECK_EQ(tt_test_count_lines(s.log, ns.token), 0);
    tt_test_serve_stop(&s);
}

/* A clean stop (SIGTERM) mid-stream: the collector exits 0 within its grace; what it had not
 * acked is redelivered, to it once restarted, and every event is stored once. */
TEST_T(nats_sigterm_midstream, 60)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "sigterm", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, "--nats-ack-wait",
                        "2000", "--grace-ms", "1000", NULL);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    struct feeder f = {.p = &p};
    for (int i = 0; i < 3; i++) {
        instance_of(f.inst[i], i, 9);
    }
    pthread_t th;
    CHECK(pthread_create(&th, NULL, feed, &f) == 0);
    while (atomic_load(&f.sent) < CL_MSGS / 3) {
        usleep(10000);
    }
    tt_test_serve_stop(&s);
    CHECK(pthread_join(th, NULL) == 0);
    tt_test_serve_restart(&s);
    wait_all_acked(&p, 30000);
    for (int i = 0; i < 3; i++) {
        check_instance(s.db, NULL, f.inst[i], CL_MSGS * EVENTS);
    }
    tt_test_serve_stop(&s);
    tt_nats_disconnect(&p);
}

static _Atomic int async_errors;

static void on_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pae;
    (void)closure;
    atomic_fetch_add(&async_errors, 1);
}

/* Volume: 3 agents x 1000 messages of 50 events published asynchronously (at most 256 pending)
 * while one collector consumes: every event stored once, the consumer fully acked; the time
 * from the first publish to the last ack goes to the test's log. */
TEST_T(nats_volume, 90)
{
#define VOL_MSGS 1000
#define VOL_EVENTS 50
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "volume", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", tokens_file(),
                        "--nats", ns.urls, "--nats-token-file", ns.token_file, NULL);
    struct tt_nats_conn p;
    tt_nats_connect(&p, &ns, 0);
    jsCtx_Destroy(p.js);
    jsOptions jo;
    CHECK(jsOptions_Init(&jo) == NATS_OK);
    jo.PublishAsync.MaxPending = 256;
    jo.PublishAsync.ErrHandler = on_pub_err;
    CHECK(natsConnection_JetStream(&p.js, p.nc, &jo) == NATS_OK);
    uint8_t inst[3][16];
    for (int a = 0; a < 3; a++) {
        instance_of(inst[a], a, 11);
    }
    double t0 = tt_test_now_ms();
    for (int k = 0; k < VOL_MSGS; k++) {
        for (int a = 0; a < 3; a++) {
            natsMsg *m = make_msg(a, inst[a], 1 + (uint64_t)k * VOL_EVENTS, VOL_EVENTS, MSG_OK);
            CHECK(js_PublishMsgAsync(p.js, &m, NULL) == NATS_OK);
        }
    }
    jsPubOptions po;
    CHECK(jsPubOptions_Init(&po) == NATS_OK);
    po.MaxWait = 30000;
    CHECK(js_PublishAsyncComplete(p.js, &po) == NATS_OK);
    CHECK_EQ(atomic_load(&async_errors), 0);
    double t1 = tt_test_now_ms();
    wait_all_acked(&p, 60000);
    double t2 = tt_test_now_ms();
    for (int a = 0; a < 3; a++) {
        check_instance(s.db, NULL, inst[a], (uint64_t)VOL_MSGS * VOL_EVENTS);
    }
    fprintf(stderr,
            "nats_volume: %d messages, %d events: published in %.0f ms, all acked %.0f ms after "
            "the first publish (%.0f events/s end to end)\n",
            3 * VOL_MSGS, 3 * VOL_MSGS * VOL_EVENTS, t1 - t0, t2 - t0,
            3.0 * VOL_MSGS * VOL_EVENTS / ((t2 - t0) / 1000));
    CHECK_EQ(nats_status(s.http, "acked", NULL), 3 * VOL_MSGS);
    tt_test_serve_stop(&s);
    tt_nats_disconnect(&p);
}

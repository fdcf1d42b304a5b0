/*
 * test_nats_client.c - libtelltale publishing to NATS JetStream (endpoint nats://, the client
 * side of the contract in docs/wire-format.md): real nats-server processes (tests/support/
 * natsd.h), the TELLTALE stream made here with libnats (the collector would make it), and
 * every message read back from the stream and decoded with the wire and batch decoders.
 */
#include <curl/curl.h>
#include <nats/nats.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zstd.h>

#include "common/batch.h"
#include "common/wire.h"
#include "natsd.h"
#include "serve.h"
#include "telltale.h"
#include "test.h"

#define AGENT "nats-agent"

/* FNV-1a, written out here again so that the test does not take the library's word. */
static uint32_t fnv32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

static uint64_t fnv64(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

/* The stream the collector would create (docs/wire-format.md): retried while a new cluster
 * elects its JetStream leader. */
static void make_stream(struct tt_nats_conn *t, int replicas)
{
    const char *subjects[] = {"telltale.ingest.>"};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "TELLTALE";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = replicas;
    double t0 = tt_test_now_ms();
    for (;;) {
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_AddStream(&si, t->js, &sc, NULL, &jerr);
        jsStreamInfo_Destroy(si);
        if (s == NATS_OK) {
            return;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 30000, "js_AddStream: %s (%d)", natsStatus_GetText(s),
                  (int)jerr);
        usleep(200000);
    }
}

static tt_client *open_client_spool(const struct tt_nats *ns, const char *endpoint,
                                    const char *agent, const char *spool)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    if (spool) {
        CHECK_OK(tt_config_set(cfg, "spool_dir", spool));
    }
    CHECK_OK(tt_config_set(cfg, "endpoint", endpoint));
    CHECK_OK(tt_config_set(cfg, "agent", agent));
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

static tt_client *open_client(const struct tt_nats *ns, const char *endpoint, const char *agent)
{
    return open_client_spool(ns, endpoint, agent, NULL);
}

static void emit_n(tt_client *c, uint64_t from, uint64_t n)
{
    char msg[96];
    for (uint64_t i = from; i < from + n; i++) {
        snprintf(msg, sizeof msg, "event %llu, padded to about sixty-four bytes of text",
                 (unsigned long long)i);
        CHECK_OK(tt_log(c, NULL, TT_INFO, msg, NULL, 0));
        if (i % 512 == 511) {
            usleep(1000); /* let the worker drain: no ring-full drop in these tests */
        }
    }
}

static void stats(tt_client *c, tt_stats *st)
{
    CHECK_OK(tt_stats_get(c, st, sizeof *st));
}

/* What the stream holds for one instance: every message checked against the contract. */
struct seen {
    uint8_t inst[16];  /* the batches' instance */
    uint8_t hello[16]; /* the hellos' instance (another for a replayed spool) */
    uint64_t max;      /* sequence numbers 1..max are counted */
    uint32_t *count;   /* per seq */
    uint64_t messages; /* with events */
    uint64_t heartbeats;
    uint64_t frames, events, overlaps;
    char subject[64];
};

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    }
}

/* One frame of type at *p (n bytes): its payload, decompressed into *raw if it was. */
static const uint8_t *frame_at(const uint8_t **p, size_t *n, uint8_t type, size_t *len,
                               uint8_t **raw)
{
    tt__frame f;
    size_t need = 0;
    CHECK_EQ(tt__frame_parse(*p, *n, 64u << 20, &f, &need), TT_FRAME_OK);
    CHECK_EQ(f.type, type);
    *p += f.frame_len;
    *n -= f.frame_len;
    *raw = NULL;
    if (!(f.flags & TT_FF_ZSTD)) {
        *len = f.payload_len;
        return f.payload;
    }
    CHECK(tt__frame_raw_ok(&f, TT_FRAME_RAW_MAX));
    *raw = malloc(f.raw_len ? f.raw_len : 1);
    CHECK(*raw != NULL);
    CHECK(ZSTD_decompress(*raw, f.raw_len, f.payload, f.payload_len) == f.raw_len);
    *len = f.raw_len;
    return *raw;
}

static void check_message(natsMsg *m, struct seen *sn)
{
    CHECK_STR(natsMsg_GetSubject(m), sn->subject);
    const uint8_t *p = (const uint8_t *)natsMsg_GetData(m);
    size_t n = (size_t)natsMsg_GetDataLength(m), len;
    uint8_t *raw;
    const uint8_t *hp = frame_at(&p, &n, TT_FT_HELLO, &len, &raw);
    tt__hello h;
    CHECK_OK(tt__hello_decode(hp, len, &h));
    free(raw);
    CHECK_STR(h.agent, AGENT);
    CHECK(memcmp(h.instance, sn->hello, 16) == 0);
    CHECK(h.pid == (uint32_t)getpid() && h.start_unix_ns && h.now_unix_ns);
    const uint8_t *bp = frame_at(&p, &n, TT_FT_BATCH, &len, &raw);
    CHECK_EQ(n, 0); /* exactly one hello and one batch */
    tt__batch b;
    tt__batch_limits lim = {1u << 20, 256};
    const char *why = NULL;
    CHECK_MSG(tt__batch_parse(&b, bp, len, &lim, &why) == 0, "batch: %s", why);
    /* A heartbeat is the sending process's own; a batch may be an earlier one's (spool). */
    CHECK(memcmp(b.instance, b.n_events ? sn->inst : sn->hello, 16) == 0);
    const char *id = NULL;
    natsStatus hs = natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
    if (b.n_events == 0) {
        CHECK(hs == NATS_NOT_FOUND); /* a heartbeat goes without an id */
        sn->heartbeats++;
        free(raw);
        return;
    }
    char want[64];
    hex(b.instance, 16, want);
    snprintf(want + 32, sizeof want - 32, ":%llu", (unsigned long long)b.first_seq);
    CHECK(hs == NATS_OK);
    CHECK_STR(id, want);
    sn->messages++;
    sn->frames++;
    tt__event ev;
    uint64_t expect = b.first_seq;
    while (tt__batch_next(&b, &ev) == 1) {
        CHECK_EQ_U64(ev.seq, expect);
        expect++;
        CHECK(ev.seq >= 1 && ev.seq <= sn->max);
        if (sn->count[ev.seq]++) {
            sn->overlaps++;
        }
        sn->events++;
    }
    CHECK_EQ_U64(expect - b.first_seq, b.n_events);
    free(raw);
}

/* Read the whole stream and check each message: batches of instance inst under hellos of
 * instance hello. Fills sn. */
static void read_stream_of(struct tt_nats_conn *t, const uint8_t inst[16], const uint8_t hello[16],
                           uint64_t max, struct seen *sn)
{
    memset(sn, 0, sizeof *sn);
    memcpy(sn->inst, inst, 16);
    memcpy(sn->hello, hello, 16);
    sn->max = max;
    sn->count = calloc(max + 1, sizeof *sn->count);
    CHECK(sn->count != NULL);
    snprintf(sn->subject, sizeof sn->subject, "telltale.ingest.%u", fnv32(AGENT) % 64);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    CHECK(js_GetStreamInfo(&si, t->js, "TELLTALE", NULL, &jerr) == NATS_OK);
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    for (uint64_t q = first; q && q <= last; q++) {
        natsMsg *m = NULL;
        natsStatus s = js_GetMsg(&m, t->js, "TELLTALE", q, NULL, &jerr);
        CHECK_MSG(s == NATS_OK, "js_GetMsg %llu: %s", (unsigned long long)q, natsStatus_GetText(s));
        check_message(m, sn);
        natsMsg_Destroy(m);
    }
}

static void read_stream(struct tt_nats_conn *t, tt_client *c, uint64_t max, struct seen *sn)
{
    uint8_t inst[16];
    CHECK_OK(tt_instance_id(c, inst));
    read_stream_of(t, inst, inst, max, sn);
}

/* Every seq in 1..n exactly once. */
static void check_once(const struct seen *sn, uint64_t n)
{
    CHECK_EQ_U64(sn->overlaps, 0);
    for (uint64_t q = 1; q <= n; q++) {
        CHECK_MSG(sn->count[q] == 1, "seq %llu stored %u times", (unsigned long long)q,
                  sn->count[q]);
    }
}

static void wait_acked(tt_client *c, uint64_t n, double ms)
{
    double t0 = tt_test_now_ms();
    tt_stats st;
    for (;;) {
        stats(c, &st);
        if (st.acked >= n) {
            return;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < ms, "acked %llu of %llu", (unsigned long long)st.acked,
                  (unsigned long long)n);
        usleep(20000);
    }
}

/* (1) Several batches to one server: each message is hello + batch under its own id, each seq
 * once, and the client counts everything acked. */
TEST_T(nats_client_publishes_batches_acked_by_puback, 120)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 0);
    make_stream(&t, 1);
    /* Each server in the endpoint may repeat the scheme or not. */
    char ep[128];
    snprintf(ep, sizeof ep, "nats://127.0.0.1:%d", ns.node[0].port);
    tt_client *c = open_client(&ns, ep, AGENT);
    const uint64_t n = 20000;
    emit_n(c, 0, n);
    CHECK_OK(tt_flush(c, 30000));
    tt_stats st;
    stats(c, &st);
    CHECK_EQ_U64(st.emitted, n);
    CHECK_EQ_U64(st.acked, n);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.buffered, 0);
    CHECK_EQ_U64(st.connected, 1);
    char why[256];
    tt_connection_error(c, why, sizeof why);
    CHECK_STR(why, "");
    struct seen sn;
    read_stream(&t, c, n, &sn);
    CHECK_MSG(sn.messages >= 10, "only %llu messages", (unsigned long long)sn.messages);
    check_once(&sn, n);
    CHECK_EQ_U64(sn.events, n);
    CHECK_OK(tt_close(c, 5000));
    free(sn.count);
    tt_nats_disconnect(&t);
}

/* (2) The server stops mid-stream and comes back: nothing is acked while it is down, and
 * afterwards everything is, once in the stream, with the conservation law holding. */
TEST_T(nats_client_server_restart_resends_same_ids, 180)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 0);
    make_stream(&t, 1);
    tt_client *c = open_client(&ns, ns.urls, AGENT);
    const uint64_t half = 8000, n = 2 * half;
    emit_n(c, 0, half);
    /* Connected and acknowledged before the server goes (the worker connects on its own time:
     * a slow run, under ThreadSanitizer, could kill the server before its first attempt). */
    wait_acked(c, 1, 30000);
    tt_nats_kill(&ns, 0, 0);
    tt_stats before, st;
    usleep(300000);
    stats(c, &before);
    emit_n(c, half, half);
    usleep(1500000);
    stats(c, &st);
    CHECK_EQ_U64(st.acked, before.acked); /* no PubAck without a server */
    CHECK_EQ_U64(st.connected, 0);
    CHECK(st.acked < n);
    char why[256];
    tt_connection_error(c, why, sizeof why);
    CHECK_MSG(strstr(why, "nats") != NULL, "connection error: %s", why);
    tt_nats_restart(&ns, 0);
    wait_acked(c, n, 60000);
    CHECK_OK(tt_flush(c, 30000));
    stats(c, &st);
    CHECK_EQ_U64(st.acked, n);
    CHECK(st.reconnects >= 1);
    tt_nats_disconnect(&t);
    tt_nats_connect(&t, &ns, 0);
    struct seen sn;
    read_stream(&t, c, n, &sn);
    check_once(&sn, n);
    struct tt_store_check sc = {.frames = sn.frames,
                                .events = sn.events,
                                .max_seq = n,
                                .overlaps = sn.overlaps,
                                .decoded = sn.events};
    tt_test_check_conservation(&st, &sc);
    CHECK_OK(tt_close(c, 5000));
    free(sn.count);
    tt_nats_disconnect(&t);
}

/* A client opened while NATS is down, whose events go to the spool at close; the next process
 * of the agent replays them, once NATS is back, as batches of the first instance. */
TEST_T(nats_client_spool_outage_replayed_by_next_process, 180)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 0);
    make_stream(&t, 1);
    tt_nats_disconnect(&t);
    tt_nats_kill(&ns, 0, 0);
    char spool[700];
    snprintf(spool, sizeof spool, "%s/spool", tt_test_tmpdir());
    tt_client *a = open_client_spool(&ns, ns.urls, AGENT, spool);
    const uint64_t n = 3000;
    emit_n(a, 0, n);
    usleep(300000);
    tt_stats st;
    stats(a, &st);
    CHECK_EQ_U64(st.connected, 0);
    CHECK_EQ_U64(st.acked, 0);
    uint8_t first[16];
    CHECK_OK(tt_instance_id(a, first));
    CHECK_EQ(tt_close_stats(a, 1000, &st, sizeof st), TT_ETIMEDOUT);
    CHECK_EQ_U64(st.spooled, n);
    CHECK_EQ_U64(st.dropped_total, 0);

    tt_nats_restart(&ns, 0);
    tt_client *b = open_client_spool(&ns, ns.urls, AGENT, spool);
    wait_acked(b, n, 60000);
    CHECK_OK(tt_flush(b, 30000));
    stats(b, &st);
    CHECK_EQ_U64(st.inherited, n);
    CHECK_EQ_U64(st.acked, n);
    CHECK_EQ_U64(st.buffered, 0);
    uint8_t second[16];
    CHECK_OK(tt_instance_id(b, second));
    tt_nats_connect(&t, &ns, 0);
    struct seen sn;
    read_stream_of(&t, first, second, n, &sn);
    check_once(&sn, n);
    CHECK_EQ_U64(sn.events, n);
    CHECK_OK(tt_close(b, 5000));
    free(sn.count);
    tt_nats_disconnect(&t);
}

/* The node the library's connection is on (its name "libtelltale" in /connz), or -1. */
static int client_node(const struct tt_nats *ns)
{
    for (int i = 0; i < ns->n; i++) {
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/connz", ns->node[i].http_port);
        struct tt_test_body body = {0};
        CURL *c = curl_easy_init();
        CHECK(c != NULL);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tt_test_curl_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
        CURLcode rc = curl_easy_perform(c);
        curl_easy_cleanup(c);
        int here = rc == CURLE_OK && body.p && strstr(body.p, "\"libtelltale\"");
        free(body.p);
        if (here) {
            return i;
        }
    }
    return -1;
}

/* A forked child never calls into libnats (its threads stayed in the parent): its events are
 * counted at close with the reason in tt_connection_error, and the parent goes on. */
TEST_T(nats_client_forked_child_does_not_use_libnats, 120)
{
    const char *san = getenv("TT_SANITIZE");
    if (san && strstr(san, "thread")) {
        /* The child's worker is a thread started after a multi-threaded fork. */
        SKIP("ThreadSanitizer cannot follow a thread started after a multi-threaded fork (the "
             "normal and AddressSanitizer builds run this test)");
    }
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 0);
    make_stream(&t, 1);
    tt_client *c = open_client(&ns, ns.urls, AGENT);
    emit_n(c, 0, 100);
    CHECK_OK(tt_flush(c, 20000));
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int ok = tt_log(c, NULL, TT_INFO, "from the child", NULL, 0) == 0;
        ok = ok && tt_flush(c, 300) == TT_ETIMEDOUT;
        char why[256] = "";
        tt_connection_error(c, why, sizeof why);
        ok = ok && strstr(why, "forked child") != NULL;
        tt_stats st;
        int rc = tt_close_stats(c, 300, &st, sizeof st);
        ok = ok && rc == TT_ETIMEDOUT && st.acked == 0 && st.emitted == 1 &&
             st.dropped[TT_DROP_SHUTDOWN] == 1;
        if (!ok) {
            fprintf(stderr, "child: %s, acked %llu emitted %llu shutdown %llu\n", why,
                    (unsigned long long)st.acked, (unsigned long long)st.emitted,
                    (unsigned long long)st.dropped[TT_DROP_SHUTDOWN]);
        }
        _exit(ok ? 0 : 1);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    emit_n(c, 100, 100);
    CHECK_OK(tt_flush(c, 20000));
    tt_stats st;
    stats(c, &st);
    CHECK_EQ_U64(st.acked, 200);
    CHECK_OK(tt_close(c, 5000));
    tt_nats_disconnect(&t);
}

/* (3) A 3-node cluster with an R3 stream; one node is killed -9 mid-stream. */
TEST_T(nats_client_cluster_node_killed_loses_nothing, 240)
{
    struct tt_nats ns;
    tt_nats_start(&ns, 3);
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 0);
    make_stream(&t, 3);
    tt_client *c = open_client(&ns, ns.urls, AGENT);
    const uint64_t part = 6000, n = 3 * part;
    emit_n(c, 0, part);
    int victim = client_node(&ns);
    CHECK_MSG(victim >= 0, "the client's connection is on no node");
    tt_nats_kill(&ns, victim, 1); /* the client's own node: it must fail over */
    emit_n(c, part, part);
    usleep(500000);
    emit_n(c, 2 * part, part);
    wait_acked(c, n, 90000);
    CHECK_OK(tt_flush(c, 30000));
    tt_stats st;
    stats(c, &st);
    CHECK_EQ_U64(st.acked, n);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK(st.reconnects >= 1);
    struct seen sn;
    read_stream(&t, c, n, &sn);
    check_once(&sn, n);
    CHECK_EQ_U64(sn.events, n);
    CHECK_OK(tt_close(c, 5000));
    free(sn.count);
    tt_nats_disconnect(&t);
}

/* A Control{halt = 1 | resume = 4: {session, reason}} payload (proto/telltale.proto). */
static size_t order_payload(uint8_t *out, int field, const char *session, const char *reason)
{
    size_t sl = strlen(session), rl = strlen(reason);
    size_t inner = 2 + sl + 2 + rl, k = 0;
    out[k++] = (uint8_t)(field << 3 | 2);
    out[k++] = (uint8_t)inner;
    out[k++] = 0x0a;
    out[k++] = (uint8_t)sl;
    memcpy(out + k, session, sl);
    k += sl;
    out[k++] = 0x12;
    out[k++] = (uint8_t)rl;
    memcpy(out + k, reason, rl);
    return k + rl;
}

/* A halt (field 1) or resume (4) for AGENT's subject with header Tt-Agent; with id, also
 * Tt-Order and the reply subject a collector's courier gives (nats_orders.h). */
static void publish_order_as(struct tt_nats_conn *t, int field, const char *agent_header,
                             const char *session, const char *reason, const char *id,
                             const char *reply)
{
    char subject[64];
    snprintf(subject, sizeof subject, "telltale.control.%016llx", (unsigned long long)fnv64(AGENT));
    uint8_t payload[256];
    size_t len = order_payload(payload, field, session, reason);
    natsMsg *m;
    CHECK(natsMsg_Create(&m, subject, reply, (const char *)payload, (int)len) == NATS_OK);
    CHECK(natsMsgHeader_Set(m, "Tt-Agent", agent_header) == NATS_OK);
    if (id) {
        CHECK(natsMsgHeader_Set(m, "Tt-Order", id) == NATS_OK);
    }
    CHECK(natsConnection_PublishMsg(t->nc, m) == NATS_OK);
    natsMsg_Destroy(m);
    CHECK(natsConnection_FlushTimeout(t->nc, 5000) == NATS_OK);
}

static void publish_order(struct tt_nats_conn *t, const char *agent_header, const char *session,
                          const char *reason)
{
    publish_order_as(t, 1, agent_header, session, reason, NULL, NULL);
}

static tt_verdict next_token(tt_response *r, int i)
{
    tt_verdict v = TT_PASS;
    CHECK_OK(tt_response_token_logprobs(r, i, -0.05f, NULL, NULL, 0, &v, NULL));
    return v;
}

/* A server with the stream, a test connection t to it and AGENT's client, connected and
 * subscribed to its control subject. */
static tt_client *control_agent(struct tt_nats *ns, struct tt_nats_conn *t)
{
    tt_nats_start(ns, 1);
    tt_nats_connect(t, ns, 0);
    make_stream(t, 1);
    tt_client *c = open_client(ns, ns->urls, AGENT);
    emit_n(c, 0, 10);
    CHECK_OK(tt_flush(c, 20000)); /* connected, and its subscription is at the server */
    return c;
}

/* (4) A halt on the agent's control subject halts its responses when its Tt-Agent header is
 * the agent's name, and not when it names another agent. */
TEST_T(nats_client_control_halt_needs_own_agent_header, 120)
{
    struct tt_nats ns;
    struct tt_nats_conn t;
    tt_client *c = control_agent(&ns, &t);
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "s1", "m", NULL, 0));
    int i = 0;
    CHECK_EQ(next_token(r, i++), TT_PASS);
    publish_order(&t, "another-agent", "s1", "not yours");
    double t0 = tt_test_now_ms();
    while (tt_test_now_ms() - t0 < 1000) {
        CHECK_EQ(next_token(r, i++), TT_PASS);
        usleep(2000);
    }
    publish_order(&t, AGENT, "s1", "nats says stop");
    t0 = tt_test_now_ms();
    while (next_token(r, i++) != TT_HALT) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000, "no halt after 10 s");
        usleep(2000);
    }
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    CHECK_MSG(strstr(s.reason, "nats says stop") != NULL, "reason: %s", s.reason);
    CHECK_OK(tt_close(c, 5000));
    tt_nats_disconnect(&t);
}

/* The next confirmation on the inbox is id. */
static void expect_confirmation(natsSubscription *inbox, const char *id)
{
    natsMsg *m = NULL;
    CHECK_MSG(natsSubscription_NextMsg(&m, inbox, 10000) == NATS_OK, "no confirmation of %s", id);
    CHECK_MSG(natsMsg_GetDataLength(m) == (int)strlen(id) &&
                  memcmp(natsMsg_GetData(m), id, strlen(id)) == 0,
              "confirmation %.*s, not %s", natsMsg_GetDataLength(m), natsMsg_GetData(m), id);
    natsMsg_Destroy(m);
}

/* (4b) An order a collector resends until it is confirmed (Tt-Order and a reply subject:
 * nats_orders.h) is confirmed on each copy and applied once: a halt, the resume after it, then
 * a late copy of the halt leave the session running. */
TEST_T(nats_client_resent_order_confirmed_each_time_applied_once, 120)
{
    struct tt_nats ns;
    struct tt_nats_conn t;
    tt_client *c = control_agent(&ns, &t);
    const char *reply = "tt-test.confirm";
    natsSubscription *inbox = NULL;
    CHECK(natsConnection_SubscribeSync(&inbox, t.nc, reply) == NATS_OK);
    CHECK(natsConnection_Flush(t.nc) == NATS_OK);

    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "s1", "m", NULL, 0));
    int i = 0;
    CHECK_EQ(next_token(r, i++), TT_PASS);
    publish_order_as(&t, 1, AGENT, "s1", "halt A", "c0ffee-1", reply);
    double t0 = tt_test_now_ms();
    while (next_token(r, i++) != TT_HALT) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000, "no halt after 10 s");
        usleep(2000);
    }
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    expect_confirmation(inbox, "c0ffee-1");

    publish_order_as(&t, 4, AGENT, "s1", "go on", "c0ffee-2", reply);
    expect_confirmation(inbox, "c0ffee-2");
    /* The resume is applied by the worker soon after its confirmation. */
    t0 = tt_test_now_ms();
    for (;;) {
        CHECK_OK(tt_response_begin(c, &r, "s1", "m", NULL, 0));
        i = 0;
        if (next_token(r, i++) == TT_PASS) {
            break;
        }
        CHECK_OK(tt_response_end(r, &s));
        CHECK_MSG(tt_test_now_ms() - t0 < 10000, "session s1 still halted 10 s after the resume");
        usleep(10000);
    }
    /* A late copy of the halt (the courier resent it before it saw the confirmation). */
    publish_order_as(&t, 1, AGENT, "s1", "halt A", "c0ffee-1", reply);
    expect_confirmation(inbox, "c0ffee-1");
    t0 = tt_test_now_ms();
    while (tt_test_now_ms() - t0 < 1000) {
        CHECK_MSG(next_token(r, i++) == TT_PASS, "the copy of the halt was applied again");
        usleep(2000);
    }
    /* An order of the same kind with a new id is applied. */
    publish_order_as(&t, 1, AGENT, "s1", "halt C", "c0ffee-3", reply);
    expect_confirmation(inbox, "c0ffee-3");
    t0 = tt_test_now_ms();
    while (next_token(r, i++) != TT_HALT) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000, "no halt after 10 s");
        usleep(2000);
    }
    CHECK_OK(tt_response_end(r, &s));
    CHECK_MSG(strstr(s.reason, "halt C") != NULL, "reason: %s", s.reason);
    natsSubscription_Destroy(inbox);
    CHECK_OK(tt_close(c, 5000));
    tt_nats_disconnect(&t);
}

/* (5) Settings refused with a reason that says what to do. */
TEST(nats_client_bad_settings_refused_clearly)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_EQ(tt_config_set(cfg, "endpoint", "nats://user:secret@127.0.0.1:4222"), TT_EINVAL);
    CHECK_MSG(strstr(tt_config_error(cfg), "nats_token_file") != NULL, "%s", tt_config_error(cfg));
    CHECK(strstr(tt_config_error(cfg), "secret") == NULL); /* the secret is not repeated */
    CHECK_EQ(tt_config_set(cfg, "endpoint", "nats://127.0.0.1:4222,nats://tok@h:1"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "endpoint", "nats://127.0.0.1"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "nats_subject", "telltale.*"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "nats_subject", "a..b"), TT_EINVAL);
    CHECK_OK(tt_config_set(cfg, "nats_subject", "tt.ingest"));
    CHECK_OK(tt_config_set(cfg, "endpoint", "nats://127.0.0.1:4222,127.0.0.1:4223"));
    CHECK_STR(tt_config_get(cfg, "endpoint"), "nats://127.0.0.1:4222,127.0.0.1:4223");

    char path[700];
    snprintf(path, sizeof path, "%s/token", tt_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f && fputs("sometoken\n", f) >= 0 && fclose(f) == 0);
    CHECK(chmod(path, 0644) == 0);
    CHECK_EQ(tt_config_set(cfg, "nats_token_file", path), TT_EINVAL);
    CHECK_MSG(strstr(tt_config_error(cfg), "chmod 600") != NULL, "%s", tt_config_error(cfg));
    CHECK(strstr(tt_config_error(cfg), "sometoken") == NULL);
    CHECK(chmod(path, 0600) == 0);
    CHECK_OK(tt_config_set(cfg, "nats_token_file", path));
    /* Made readable by others after it was set: tt_open refuses it. */
    CHECK(chmod(path, 0640) == 0);
    tt_client *c = NULL;
    CHECK_EQ(tt_open(&c, cfg), TT_EACCES);
    CHECK(c == NULL);
    tt_config_free(cfg);
}

/* The Python package over a nats:// endpoint, through each implementation of its hot calls
 * (the compiled extension and ctypes): the settings pass through as they are. */
static const char py_script[] =
    "import sys, telltale\n"
    "assert telltale.implementation == sys.argv[3], telltale.implementation\n"
    "c = telltale.Client(sys.argv[1], agent='nats-agent', nats_token_file=sys.argv[2])\n"
    "for i in range(300):\n"
    "    assert c.log('python event %d' % i) == 0\n"
    "assert c.flush(30.0)\n"
    "s = c.stats()\n"
    "assert s.acked == 300 and s.emitted == 300, (s.acked, s.emitted)\n"
    "c.close()\n"
    "try:\n"
    "    telltale.Client('nats://u:p@127.0.0.1:1', agent='x')\n"
    "    raise SystemExit('user:password accepted')\n"
    "except ValueError as e:\n"
    "    assert 'nats_token_file' in str(e), str(e)\n";

/* tests/support/pytest.c: the sanitizer's runtime for the interpreter. */
void tt_test_preload_sanitizer(void);

static void run_python(const struct tt_nats *ns, const char *impl)
{
    const char *src = getenv("TT_SRCDIR"), *build = getenv("TT_BUILD");
    CHECK_MSG(src && build, "TT_SRCDIR and TT_BUILD are set by make test");
    char lib[1024], pypath[1024], log[1024];
    snprintf(lib, sizeof lib, "%s/libtelltale.so", build);
    snprintf(pypath, sizeof pypath, "%s/python", src);
    snprintf(log, sizeof log, "%s/python-%s.log", tt_test_outdir(), impl);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setenv("TELLTALE_LIBRARY", lib, 1);
        setenv("PYTHONPATH", pypath, 1);
        setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
        setenv("TELLTALE_IMPL", impl, 1);
        tt_test_preload_sanitizer();
        if (!freopen(log, "w", stderr)) {
            _exit(126);
        }
        execl("/usr/bin/python3", "python3", "-c", py_script, ns->urls, ns->token_file, impl,
              (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "python (%s) failed: see %s", impl, log);
}

TEST_T(nats_client_python_endpoint_passes_through, 120)
{
    CHECK_MSG(access("/usr/bin/python3", X_OK) == 0, "no /usr/bin/python3");
    struct tt_nats ns;
    tt_nats_start(&ns, 1);
    struct tt_nats_conn t;
    tt_nats_connect(&t, &ns, 0);
    make_stream(&t, 1);
    run_python(&ns, "ext");
    run_python(&ns, "ctypes");
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    CHECK(js_GetStreamInfo(&si, t.js, "TELLTALE", NULL, &jerr) == NATS_OK);
    CHECK(si->State.Msgs >= 2); /* at least one batch of each run */
    jsStreamInfo_Destroy(si);
    tt_nats_disconnect(&t);
}

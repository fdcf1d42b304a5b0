/*
 * test_fault.c - delivery through a bad network (reliability scenario S17), against a real
 * `telltale serve` behind the tests' fault proxy (tests/support/faultproxy.c): latency steps up
 * to above the ack timeout, a 10 KB/s cap, connections reset mid-frame, a black hole. At the end
 * the shared conservation check holds, every event is stored exactly once, and a half-open link
 * was noticed by the agent within two ack timeouts.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/wire.h"
#include "faultproxy.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

static uint64_t emitted_here;

static void emit(tt_client *c, int n)
{
    char msg[96];
    for (int i = 0; i < n; i++) {
        snprintf(msg, sizeof msg, "event %llu through a bad network, about sixty-four bytes",
                 (unsigned long long)emitted_here++);
        CHECK_OK(tt_log(c, NULL, TT_INFO, msg, NULL, 0));
    }
}

TEST_T(fault_s17_latency_caps_resets_and_a_black_hole_store_every_event_once, 300)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s17", NULL);
    struct tt_fault_proxy *p = tt_fault_proxy_start(s.tcp);
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    const double ack_timeout = 1000;
    tt_client *c = tt_test_client(tt_fault_proxy_endpoint(p), "s17", spool, "ack_timeout_ms=1000",
                                  "backoff_min_ms=20", "backoff_max_ms=400", "ring_bytes=16M",
                                  "batch_bytes=8192", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    emit(c, 5000);
    CHECK_OK(tt_flush(c, (uint32_t)(20000 * tt_test_mult())));
    /* Latency in steps, the last above the ack timeout: frames time out, are resent, and the
     * collector's dedup keeps one copy (the librdkafka 0094 pattern). */
    const uint32_t steps[] = {20, 200, 1500};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        tt_fault_proxy_latency(p, steps[i]);
        emit(c, 2000);
        usleep(1500000);
    }
    tt_fault_proxy_latency(p, 0);
    /* A 10 KB/s cap for two seconds. */
    tt_fault_proxy_rate(p, 10000);
    emit(c, 3000);
    usleep(2000000);
    tt_fault_proxy_rate(p, 0);
    /* Resets in the middle of the stream. */
    for (int i = 0; i < 5; i++) {
        emit(c, 2000);
        usleep(50000);
        tt_fault_proxy_reset(p);
    }
    CHECK_OK(tt_flush(c, (uint32_t)(30000 * tt_test_mult())));
    /* A black hole with frames in flight: the agent must notice by its ack timeout, not TCP
     * keepalive, and reconnect (a new connection reaches the proxy). */
    uint64_t accepted = tt_fault_proxy_accepted(p);
    tt_fault_proxy_blackhole(p, 1);
    double t0 = tt_test_now_ms();
    emit(c, 1000);
    while (tt_fault_proxy_accepted(p) == accepted &&
           tt_test_now_ms() - t0 < 20 * ack_timeout * tt_test_mult()) {
        usleep(10000);
    }
    double noticed = tt_test_now_ms() - t0;
    printf("half-open link noticed after %.0f ms (ack timeout %.0f ms)\n", noticed, ack_timeout);
    CHECK_MSG(tt_fault_proxy_accepted(p) > accepted, "no reconnect from the black hole");
    /* Ack timeout, then the backoff (at most 400 ms) before the new connection. */
    CHECK(noticed <= (2 * ack_timeout + 400) * tt_test_mult());
    usleep(500000);
    tt_fault_proxy_blackhole(p, 0);
    CHECK_OK(tt_flush(c, (uint32_t)(60000 * tt_test_mult())));
    tt_stats st;
    double t1 = tt_test_now_ms();
    do {
        CHECK_OK(tt_stats_get(c, &st, sizeof st));
        if (st.buffered == 0) {
            break;
        }
        usleep(20000);
    } while (tt_test_now_ms() - t1 < 60000 * tt_test_mult());
    printf("emitted %llu, acked %llu, dropped %llu, reconnects %llu, proxy connections %llu\n",
           (unsigned long long)st.emitted, (unsigned long long)st.acked,
           (unsigned long long)st.dropped_total, (unsigned long long)st.reconnects,
           (unsigned long long)tt_fault_proxy_accepted(p));
    CHECK_EQ_U64(st.emitted, emitted_here);
    CHECK_EQ_U64(st.buffered, 0);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.acked, emitted_here);
    /* At least the black hole and one reset broke a connection (a reset that lands while the
     * agent is between connections breaks none). */
    CHECK(st.reconnects >= 2);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(sc.events, emitted_here);
    CHECK_EQ_U64(sc.overlaps, 0);
    CHECK_EQ_U64(sc.gaps, 0);
    CHECK_OK(tt_close(c, 10000));
    tt_fault_proxy_stop(p);
    tt_test_serve_stop(&s);
}

/* --- S27: graceful restart under load, and version skew ------------------------------------ */

struct paced {
    tt_client *c;
    double seconds;
    uint64_t rate;
    uint64_t calls;
};

static void *paced_emit(void *arg)
{
    struct paced *p = arg;
    double start = tt_test_now_ms();
    char msg[96];
    for (uint64_t i = 0;; i++) {
        if (i % 1000 == 0) {
            double due = start + (double)i * 1000.0 / (double)p->rate;
            while (tt_test_now_ms() < due) {
                usleep(200);
            }
            if (tt_test_now_ms() - start > p->seconds * 1000) {
                break;
            }
        }
        snprintf(msg, sizeof msg, "event %llu while the collector restarts", (unsigned long long)i);
        tt_log(p->c, NULL, TT_INFO, msg, NULL, 0);
        p->calls++;
    }
    return NULL;
}

TEST_T(fault_s27_sigterm_under_load_loses_no_acked_event_and_agents_come_back, 180)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s27", NULL);
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    tt_client *c = tt_test_client(s.endpoint, "s27", spool, "ring_bytes=64M", "backoff_min_ms=20",
                                  "backoff_max_ms=200", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    struct paced p = {c, 3.0, 200000, 0};
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, paced_emit, &p));
    usleep(1000000);
    /* SIGTERM mid-stream: the collector drains, commits and acks within its grace period and
     * exits 0 (tt_test_serve_stop checks both), then comes back on the same directory. */
    tt_stats before;
    CHECK_OK(tt_stats_get(c, &before, sizeof before));
    tt_test_serve_stop(&s);
    tt_stats stopped;
    CHECK_OK(tt_stats_get(c, &stopped, sizeof stopped));
    tt_test_serve_restart(&s);
    pthread_join(th, NULL);
    CHECK_OK(tt_flush(c, (uint32_t)(60000 * tt_test_mult())));
    tt_stats st;
    double t0 = tt_test_now_ms();
    do {
        CHECK_OK(tt_stats_get(c, &st, sizeof st));
        if (st.buffered == 0) {
            break;
        }
        usleep(20000);
    } while (tt_test_now_ms() - t0 < 60000 * tt_test_mult());
    printf("%llu events, %llu acked before the SIGTERM, %llu when it had exited; acked %llu, "
           "dropped %llu, reconnects %llu\n",
           (unsigned long long)p.calls, (unsigned long long)before.acked,
           (unsigned long long)stopped.acked, (unsigned long long)st.acked,
           (unsigned long long)st.dropped_total, (unsigned long long)st.reconnects);
    CHECK(st.reconnects >= 1);
    CHECK_EQ_U64(st.emitted, p.calls);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.acked, p.calls);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(sc.events, p.calls);
    CHECK_EQ_U64(sc.gaps, 0);
    CHECK_OK(tt_close(c, 10000));
    tt_test_serve_stop(&s);
}

/* An older collector, by hand: it accepts on loopback TCP, reads each hello and answers what
 * a collector answers a protocol it does not speak, then closes; it counts the hellos. */
struct old_collector {
    int lfd;
    char endpoint[64];
    pthread_t th;
    atomic_int stop, hellos;
};

static void *old_collector_main(void *arg)
{
    struct old_collector *o = arg;
    while (!atomic_load(&o->stop)) {
        struct pollfd lp = {o->lfd, POLLIN, 0};
        if (poll(&lp, 1, 50) <= 0) {
            continue;
        }
        int fd = accept(o->lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        uint8_t in[65536];
        size_t got = 0;
        tt__frame f;
        int rc = TT_FRAME_NEED_MORE;
        for (int waits = 0; rc == TT_FRAME_NEED_MORE && waits < 100; waits++) {
            struct pollfd pf = {fd, POLLIN, 0};
            if (poll(&pf, 1, 20) <= 0) {
                continue;
            }
            ssize_t k = read(fd, in + got, sizeof in - got);
            if (k <= 0) {
                break;
            }
            got += (size_t)k;
            size_t need;
            rc = tt__frame_parse(in, got, sizeof in, &f, &need);
        }
        tt__hello h;
        if (rc == TT_FRAME_OK && f.type == TT_FT_HELLO &&
            tt__hello_decode(f.payload, f.payload_len, &h) == 0) {
            atomic_fetch_add(&o->hellos, 1);
            tt__hello_reply r;
            memset(&r, 0, sizeof r);
            r.protocol = TT_PROTOCOL_VERSION - 1;
            snprintf(r.error, sizeof r.error,
                     "protocol %u not supported (this collector speaks %d)", h.protocol,
                     TT_PROTOCOL_VERSION - 1);
            tt__buf body, fr;
            tt__buf_init(&body, 4096);
            tt__buf_init(&fr, 8192);
            if (tt__hello_reply_encode(&r, &body) == 0 &&
                tt__frame_append(&fr, TT_FT_HELLO_REPLY, body.data, body.len) == 0) {
                ssize_t w = write(fd, fr.data, fr.len);
                (void)w;
            }
            tt__buf_fini(&body);
            tt__buf_fini(&fr);
        }
        close(fd);
    }
    return NULL;
}

/* S27, the other way: a new client and a collector that speaks an older protocol. The refusal
 * is explicit (the client's connection error quotes it), the client neither crashes nor
 * storms (it retries at its slowest backoff), nothing is taken as acknowledged, and every
 * event stays accounted for: buffered while it runs, and counted when it closes. */
TEST(fault_s27_a_new_client_and_an_older_collector_refuse_explicitly_and_lose_nothing_silently)
{
    struct old_collector o;
    memset(&o, 0, sizeof o);
    o.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(o.lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(bind(o.lfd, (struct sockaddr *)&a, sizeof a));
    CHECK_OK(listen(o.lfd, 16));
    socklen_t alen = sizeof a;
    CHECK_OK(getsockname(o.lfd, (struct sockaddr *)&a, &alen));
    snprintf(o.endpoint, sizeof o.endpoint, "tcp://127.0.0.1:%u", ntohs(a.sin_port));
    CHECK_OK(pthread_create(&o.th, NULL, old_collector_main, &o));
    tt_client *c =
        tt_test_client(o.endpoint, "new-client", "backoff_min_ms=20", "backoff_max_ms=500", NULL);
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(tt_log(c, NULL, TT_INFO, "an event for a collector that cannot take it", NULL, 0));
    }
    double t0 = tt_test_now_ms();
    char err[300] = "";
    while (!strstr(err, "not supported") && tt_test_now_ms() - t0 < 10000 * tt_test_mult()) {
        usleep(20000);
        tt_connection_error(c, err, sizeof err);
    }
    printf("connection error: %s\n", err);
    CHECK_MSG(strstr(err, "hello refused") && strstr(err, "protocol") &&
                  strstr(err, "not supported"),
              "connection error \"%s\"", err);
    /* Retried at the slowest pace, not in a loop: waits of backoff_max_ms with jitter, in
     * [250, 500] ms, so over 2 s at most 2000 / 250 + 1 hellos (a storm would be hundreds). */
    int h0 = atomic_load(&o.hellos);
    usleep(2000000);
    int retries = atomic_load(&o.hellos) - h0;
    printf("hellos in 2 s after the refusal: %d\n", retries);
    CHECK(retries >= 1);
    CHECK(retries <= 9);
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ_U64(st.emitted, 1000);
    CHECK_EQ_U64(st.acked, 0);
    CHECK_EQ_U64(st.connected, 0);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.buffered, 1000);
    /* Closed without a collector that takes them: the deadline passes (TT_ETIMEDOUT), and each
     * event is counted, none silently gone. */
    CHECK_EQ(tt_close_stats(c, 200, &st, sizeof st), TT_ETIMEDOUT);
    CHECK_EQ_U64(st.acked + st.possibly_delivered + st.buffered + st.dropped_total, 1000);
    CHECK_EQ_U64(st.dropped[TT_DROP_SHUTDOWN] + st.buffered, 1000);
    atomic_store(&o.stop, 1);
    pthread_join(o.th, NULL);
    close(o.lfd);
}

TEST(fault_s27_an_unknown_protocol_version_is_refused_explicitly)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "skew", NULL);
    const char *colon = strrchr(s.tcp, ':');
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION + 1; /* a newer client */
    snprintf(h.agent, sizeof h.agent, "future");
    tt__buf body, fr;
    tt__buf_init(&body, 4096);
    tt__buf_init(&fr, 8192);
    CHECK_OK(tt__hello_encode(&h, &body));
    CHECK_OK(tt__frame_append(&fr, TT_FT_HELLO, body.data, body.len));
    CHECK(write(fd, fr.data, fr.len) == (ssize_t)fr.len);
    uint8_t in[8192];
    size_t got = 0;
    tt__frame f;
    int rc = TT_FRAME_NEED_MORE;
    double t0 = tt_test_now_ms();
    while (rc == TT_FRAME_NEED_MORE && tt_test_now_ms() - t0 < 10000 * tt_test_mult()) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0) {
            continue;
        }
        ssize_t k = read(fd, in + got, sizeof in - got);
        CHECK_MSG(k > 0, "closed without a reply");
        got += (size_t)k;
        size_t need;
        rc = tt__frame_parse(in, got, sizeof in, &f, &need);
    }
    CHECK_EQ(rc, TT_FRAME_OK);
    CHECK_EQ(f.type, TT_FT_HELLO_REPLY);
    tt__hello_reply r;
    CHECK_OK(tt__hello_reply_decode(f.payload, f.payload_len, &r));
    CHECK_MSG(strstr(r.error, "not supported"), "reply error: \"%s\"", r.error);
    close(fd);
    tt__buf_fini(&body);
    tt__buf_fini(&fr);
    /* Refused, counted, and nothing else disturbed. */
    char *st = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/status", NULL, &st), 200);
    CHECK(st && strstr(st, "\"protocol\":1"));
    free(st);
    tt_client *c = tt_test_client(s.endpoint, "current", NULL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "still served", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    tt_stats cs;
    CHECK_OK(tt_stats_get(c, &cs, sizeof cs));
    CHECK_EQ_U64(cs.acked, 1);
    CHECK_OK(tt_close(c, 5000));
    tt_test_serve_stop(&s);
}

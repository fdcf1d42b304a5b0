/*
 * test_fault.c - delivery through a bad network (reliability scenario S17), against a real
 * `telltale serve` behind the tests' fault proxy (tests/support/faultproxy.c): latency steps up
 * to above the ack timeout, a 10 KB/s cap, connections reset mid-frame, a black hole. At the end
 * the shared conservation check holds, every event is stored exactly once, and a half-open link
 * was noticed by the agent within two ack timeouts.
 */
#include <unistd.h>

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

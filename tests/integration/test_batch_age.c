/*
 * test_batch_age.c - flush_interval_ms bounds the time from the emit call to the send, with a
 * real `telltale serve`: an event emitted while the worker sleeps idle must not wait one
 * interval in the ring and then a second one in the batch.
 */
#include <unistd.h>

#include "serve.h"
#include "test.h"

#define FLUSH_MS 300

static uint64_t acked(tt_client *c)
{
    tt_stats st;
    tt_stats_get(c, &st, sizeof st);
    return st.acked;
}

/* Emits one event and returns the milliseconds until it is acknowledged. */
static double emit_to_ack_ms(tt_client *c)
{
    uint64_t before = acked(c);
    double t0 = tt_test_now_ms();
    CHECK_OK(tt_log(c, NULL, TT_INFO, "one", NULL, 0));
    while (acked(c) == before) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000, "no ack within 10 s");
        usleep(1000);
    }
    return tt_test_now_ms() - t0;
}

TEST_T(an_idle_client_sends_an_event_within_one_flush_interval, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "age", NULL);
    char fl[64];
    snprintf(fl, sizeof fl, "flush_interval_ms=%d", FLUSH_MS);
    tt_client *c = tt_test_client(s.endpoint, "age", fl, NULL);
    emit_to_ack_ms(c); /* connected, and the worker has just gone idle after an ack */
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        /* The worker woke for the ack, drained nothing and sleeps a whole interval: an event
         * emitted now is drained only at the end of it. */
        usleep(50000);
        double ms = emit_to_ack_ms(c);
        worst = ms > worst ? ms : worst;
    }
    /* Counted from the drain, the batch would wait a second interval (about 2 x 300 - 50 ms). */
    CHECK_MSG(worst < FLUSH_MS + 150,
              "an event took %.0f ms from emit to ack with "
              "flush_interval_ms=%d",
              worst, FLUSH_MS);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

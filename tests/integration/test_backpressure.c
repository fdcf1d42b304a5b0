/*
 * test_backpressure.c - the client under backpressure from a real `telltale serve` that has
 * stopped answering (SIGSTOP): with the window full and a batch past its age, the worker must
 * wait for an ack, not spin; and once the collector resumes, everything is delivered.
 */
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "serve.h"
#include "test.h"

static double process_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Emits n varied events (little compressible, so the small window fills quickly). */
static void emit_some(tt_client *c, int n, uint64_t *x)
{
    for (int i = 0; i < n; i++) {
        *x = *x * 6364136223846793005ull + 1442695040888963407ull;
        tt_attr a[] = {TT_INT("r", (int64_t)(*x >> 1)), TT_DOUBLE("d", (double)(*x >> 11))};
        tt_log(c, NULL, TT_INFO, "backpressure", a, 2);
    }
}

TEST_T(worker_waits_without_spinning_when_the_window_is_full, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "spin", NULL);
    tt_client *c = tt_test_client(s.endpoint, "spin", "window_bytes=65536", "batch_bytes=4096",
                                  "flush_interval_ms=1", "ack_timeout_ms=60000", NULL);
    uint64_t x = 7;
    emit_some(c, 100, &x);
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(kill(s.pid, SIGSTOP));
    /* Enough to fill the socket buffers and the 64 KiB window, and to leave a batch open. */
    for (int k = 0; k < 40; k++) {
        emit_some(c, 2000, &x);
        usleep(5000);
    }
    usleep(200000);
    double cpu0 = process_cpu_ms(), t0 = tt_test_now_ms();
    usleep(1000000);
    double cpu = process_cpu_ms() - cpu0, wall = tt_test_now_ms() - t0;
    tt_stats st;
    tt_stats_get(c, &st, sizeof st);
    CHECK_OK(kill(s.pid, SIGCONT));
    /* A spinning worker burns a core (a third of one on a loaded 2-core machine); a waiting
     * one next to nothing. */
    CHECK_MSG(cpu < 0.1 * wall,
              "the client used %.0f ms of CPU in %.0f ms while blocked "
              "(buffered %llu)",
              cpu, wall, (unsigned long long)st.buffered);
    CHECK_MSG(st.buffered > 0, "nothing was held back: the window never filled");
    CHECK_OK(tt_flush(c, 30000));
    tt_stats_get(c, &st, sizeof st);
    CHECK_EQ_U64(st.acked + st.dropped_total, st.emitted);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

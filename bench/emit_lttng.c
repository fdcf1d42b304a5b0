/*
 * emit_lttng.c - the LTTng-UST baseline of the emit benchmark: per-call latency of the
 * tracepoint telltale_bench:example (bench/emit_lttng_tp.h; two integers and a double) with a
 * recording session, timed with the method of bench/emit_harness.h.
 *
 *   emit_lttng [--wait-ms N] [harness options]
 *
 * The session is set up outside (scripts/bench-emit: lttng-sessiond, create, enable-event,
 * start). This program refuses to measure a tracepoint that is not enabled: it waits up to
 * --wait-ms (default 10000) for the session daemon to enable it, then fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit_harness.h"
#include "emit_lttng_tp.h"

static inline void call_lttng(void *ctx, int64_t a, int64_t b, double x)
{
    (void)ctx;
    lttng_ust_tracepoint(telltale_bench, example, a, b, x);
}

EH_DEFINE_LOOP(loop_lttng, call_lttng)

int main(int argc, char **argv)
{
    eh_opts o;
    eh_defaults(&o);
    int wait_ms = 10000;
    for (int i = 1; i < argc; i += 2) {
        int r = i + 1 < argc ? eh_option(&o, argv[i], argv[i + 1]) : 0;
        if (r < 0) {
            return 2;
        } else if (r > 0) {
            continue;
        } else if (i + 1 < argc && strcmp(argv[i], "--wait-ms") == 0 &&
                   eh_parse_int(argv[i + 1], 0, 600000, &wait_ms) == 0) {
            continue;
        } else {
            fprintf(stderr, "usage: emit_lttng [--wait-ms N] " EH_USAGE "\n");
            return 2;
        }
    }
    int waited = 0;
    while (!lttng_ust_tracepoint_enabled(telltale_bench, example)) {
        if (waited >= wait_ms) {
            fprintf(stderr,
                    "emit_lttng: telltale_bench:example is not enabled after %d ms: "
                    "no recording session\n",
                    wait_ms);
            return 1;
        }
        eh_sleep_us(10000);
        waited += 10;
    }
    o.contender = "lttng";
    return eh_run(&o, loop_lttng, NULL, NULL) ? 1 : 0;
}

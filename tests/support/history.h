/*
 * history.h - feed a real collector events with chosen timestamps (the client stamps events
 * with the current time; history needs the past): hand-built Batch frames on the native
 * protocol, over its unix socket, waiting for every frame's acknowledgement. What was fed is
 * returned, so tests can hold the store's rollups and the console to it.
 */
#ifndef TT_TEST_HISTORY_H
#define TT_TEST_HISTORY_H

#include <stdint.h>

#define TT_HISTORY_MAX_BUCKETS 3600

struct tt_test_history {
    int64_t start_ns, span_ns; /* events at start_ns + i * span_ns / n */
    uint64_t events, logs, responses, flagged, tool_calls, tool_errors, tokens;
    double *confidence; /* the responses' confidences, in order (malloc'd, n responses) */
    double *tool_ms;    /* the tool steps' durations in ms (malloc'd) */
};

/* Feed n events of agent over [start_ns, start_ns + span_ns) to the collector listening on
 * unix socket sock: per 10 events, 7 logs, one tool step's begin and end ("search" or "fetch",
 * every 7th an error, 1 to 200 ms) and one ended response (confidence between 0.001 and 0.9,
 * every 11th flagged, 20 tokens), in session "hist-S" (S = event / 1000). Fails the test when
 * the collector does not acknowledge every frame within timeout_ms. */
void tt_test_feed_history(const char *sock, const char *agent, int n, int64_t start_ns,
                          int64_t span_ns, double timeout_ms, struct tt_test_history *out);
void tt_test_history_free(struct tt_test_history *h);

/* The exact q-quantile (nearest rank) of v[0..n) (sorted in place). */
double tt_test_quantile(double *v, uint64_t n, double q);

#endif

/*
 * test_history.c - history from the store's rollups on a real `telltale serve`: 10^5 events
 * with timestamps spread over 10 minutes (fed on the native protocol, tests/support/history.c)
 * answer GET /api/v1/series with exactly the counts the store holds (per bucket and in total,
 * against GET /api/v1/events/count), quantiles of confidence and tool latency within the
 * histogram's bin (4.4%) of the exact ones, the same after a restart, at every resolution.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "history.h"
#include "serve.h"
#include "test.h"

#define BIN_TOL 0.045 /* half a bin of the rollups' histogram is 4.4% */

static json_t *get_json(const struct tt_test_serve *s, const char *path, long want)
{
    char *body = NULL;
    long st = tt_test_http(s->http, "GET", path, NULL, &body);
    CHECK_MSG(st == want, "GET %s: %ld %s", path, st, body ? body : "");
    json_error_t e;
    json_t *j = json_loads(body ? body : "", 0, &e);
    CHECK_MSG(j, "GET %s: not JSON: %s", path, e.text);
    free(body);
    return j;
}

static int64_t count_events(const struct tt_test_serve *s, const char *agent, int64_t since,
                            int64_t until_incl)
{
    char q[256];
    snprintf(q, sizeof q, "agent=%s&since=%lld&until=%lld", agent, (long long)since,
             (long long)until_incl);
    return (int64_t)tt_test_events_count(s->http, q);
}

static uint64_t sum_array(json_t *a)
{
    uint64_t n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        n += (uint64_t)json_integer_value(v);
    }
    return n;
}

static void check_rel(double got, double want, const char *what)
{
    CHECK_MSG(fabs(got - want) <= BIN_TOL * want, "%s: %.6g, exact %.6g", what, got, want);
}

static json_t *agent_of(json_t *series, const char *agent)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(series, "agents"), i, a)
    {
        if (!strcmp(json_string_value(json_object_get(a, "agent")), agent)) {
            return a;
        }
    }
    return NULL;
}

/* The answer for [from, to) holds exactly what was fed; per bucket as the store counts. */
static void check_series(const struct tt_test_serve *s, struct tt_test_history *h,
                         const char *query, int buckets_to_check)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/series?agent=hist&%s", query);
    json_t *j = get_json(s, path, 200);
    json_t *a = agent_of(j, "hist");
    CHECK_MSG(a, "%s: no agent hist", path);
    json_t *t = json_object_get(j, "t");
    int64_t step = json_integer_value(json_object_get(j, "step_s"));
    CHECK(step > 0);
    CHECK_EQ(json_array_size(json_object_get(a, "events")), json_array_size(t));
    CHECK_EQ_U64(sum_array(json_object_get(a, "events")), h->events);
    CHECK_EQ_U64(sum_array(json_object_get(a, "responses")), h->responses);
    CHECK_EQ_U64(sum_array(json_object_get(a, "flagged")), h->flagged);
    CHECK_EQ_U64(sum_array(json_object_get(a, "tokens")), h->tokens);
    CHECK_EQ_U64(sum_array(json_object_get(a, "tool_calls")), h->tool_calls);
    CHECK_EQ_U64(sum_array(json_object_get(a, "tool_errors")), h->tool_errors);
    json_t *tot = json_object_get(a, "totals");
    CHECK_EQ_U64((uint64_t)json_integer_value(json_object_get(tot, "events")), h->events);
    /* Buckets against the store's own count of the events in their time range. */
    json_t *ev = json_object_get(a, "events");
    size_t n = json_array_size(t), checked = 0;
    for (size_t i = 0; i < n && (int)checked < buckets_to_check; i += n / 7 + 1) {
        int64_t b = json_integer_value(json_array_get(t, i)) * 1000000000;
        int64_t want = count_events(s, "hist", b, b + step * 1000000000 - 1);
        CHECK_EQ(json_integer_value(json_array_get(ev, i)), want);
        checked++;
    }
    /* Quantiles of the range against the exact ones. */
    json_t *conf = json_object_get(tot, "confidence");
    check_rel(json_real_value(json_object_get(conf, "p50")),
              tt_test_quantile(h->confidence, h->responses, 0.5), "confidence p50");
    check_rel(json_real_value(json_object_get(conf, "p95")),
              tt_test_quantile(h->confidence, h->responses, 0.95), "confidence p95");
    check_rel(json_real_value(json_object_get(conf, "p05")),
              tt_test_quantile(h->confidence, h->responses, 0.05), "confidence p05");
    json_t *tools = json_object_get(a, "tools");
    CHECK_EQ(json_array_size(tools), 2);
    uint64_t calls = 0;
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        calls += (uint64_t)json_integer_value(json_object_get(tool, "n"));
    }
    CHECK_EQ_U64(calls, h->tool_calls);
    json_t *kind = json_object_get(json_object_get(tot, "steps"), "tool");
    CHECK_MSG(kind, "no tool steps in the totals");
    check_rel(json_real_value(json_object_get(kind, "p50")) / 1e6,
              tt_test_quantile(h->tool_ms, h->tool_calls, 0.5), "tool latency p50");
    check_rel(json_real_value(json_object_get(kind, "p95")) / 1e6,
              tt_test_quantile(h->tool_ms, h->tool_calls, 0.95), "tool latency p95");
    CHECK_EQ_U64((uint64_t)json_integer_value(json_object_get(kind, "errors")), h->tool_errors);
    json_decref(j);
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

TEST_T(series_of_ten_minutes_of_history_match_the_store_exactly_and_after_a_restart, 240)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "history", NULL);
    /* 10^5 events over the 10 minutes that ended a minute ago. */
    int64_t start = (wall_ns() / 1000000000 - 660) * 1000000000;
    struct tt_test_history h;
    tt_test_feed_history(s.sock, "hist", 100000, start, 600 * 1000000000ll, 60000, &h);
    CHECK_EQ_U64(h.events, 100000);
    CHECK_EQ(count_events(&s, "hist", start, start + 600 * 1000000000ll - 1), 100000);

    char q[128];
    snprintf(q, sizeof q, "from=%lld&to=%lld", (long long)start,
             (long long)(start + 600 * 1000000000ll));
    check_series(&s, &h, q, 8);
    json_t *j = NULL;
    char path[256];
    snprintf(path, sizeof path, "/api/v1/series?agent=hist&%s", q);
    j = get_json(&s, path, 200);
    CHECK_EQ(json_integer_value(json_object_get(j, "step_s")), 2); /* 300 points */
    CHECK_EQ(json_integer_value(json_object_get(j, "source_step_s")), 1);
    json_decref(j);
    /* Coarser levels: 1 h (10 s from 1 s rows), 24 h (300 s rows), 7 d (1 h rows). */
    check_series(&s, &h, "range=1h", 4);
    check_series(&s, &h, "range=24h", 4);
    check_series(&s, &h, "range=7d", 2);
    j = get_json(&s, "/api/v1/series?range=24h", 200);
    CHECK_EQ(json_integer_value(json_object_get(j, "source_step_s")), 300);
    json_decref(j);

    /* From the store after a restart. */
    tt_test_serve_stop(&s);
    tt_test_serve_restart(&s);
    check_series(&s, &h, q, 3);
    check_series(&s, &h, "range=24h", 2);

    /* Refusals. */
    json_decref(get_json(&s, "/api/v1/series?range=3w", 400));
    json_decref(get_json(&s, "/api/v1/series?range=1h&from=1", 400));
    json_decref(get_json(&s, "/api/v1/series?from=2000&to=1000", 400));
    json_decref(get_json(&s, "/api/v1/series?bogus=1", 400));
    /* An agent without data in the range: no rows. */
    j = get_json(&s, "/api/v1/series?agent=nobody&range=5m", 200);
    CHECK_EQ(json_array_size(json_object_get(j, "agents")), 0);
    json_decref(j);
    tt_test_history_free(&h);
    tt_test_serve_stop(&s);
}

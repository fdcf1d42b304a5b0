/*
 * api/series.c - GET /api/v1/series: per-agent time series of a range from the store's rollups
 * (store.h "rollups"), for the console's charts and tables. The range is range=5m|15m|1h|6h|
 * 24h|7d|30d (ending now) or from= and to= (Unix ns or RFC 3339); the width of the answered
 * buckets (step_s) is chosen from the range so that it has at most SERIES_POINTS_MAX points,
 * and read from the coarsest stored level that divides it. Every series is dense over the
 * range (counts 0, figures null where a bucket has no data); "t" holds the buckets' starts.
 * Costs in buckets, never in events.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/api/http.h"
#include "collector/store/store.h"
#include "common/json.h"

#define SERIES_POINTS_MAX 400
#define SERIES_TOOLS_MAX 256
#define N_KINDS 8

static const char *const kind_names[N_KINDS] = {"unknown", "reasoning", "tool",      "api",
                                                "llm",     "agent",     "retrieval", "other"};

struct tool_total {
    char name[STORE_ROLLUP_KEY_MAX + 1];
    uint64_t calls, errors;
    double sum;
    struct store_hist h;
};

/* One agent's series while its rows arrive. */
struct agent_series {
    char name[256];
    int any;
    uint64_t *events, *responses, *flagged, *tokens, *tool_calls, *tool_errors;
    double *c_mean, *c_p05, *c_p50, *c_p95;
    uint64_t *k_n[N_KINDS], *k_err[N_KINDS];
    double *k_p50[N_KINDS], *k_p95[N_KINDS];
    int kind_seen[N_KINDS];
    struct store_hist conf_total, kind_total[N_KINDS];
    double conf_sum, kind_sum[N_KINDS];
    uint64_t kind_n[N_KINDS], kind_errors[N_KINDS];
    struct tool_total *tools;
    int n_tools, tools_cut;
};

struct series_walk {
    tt__json *j;
    int64_t from_s, step_s;
    int npts;
    struct agent_series *a; /* one, reused per agent */
    int agents;
};

static void *arr(int n, size_t sz)
{
    return calloc((size_t)n, sz);
}

static int agent_alloc(struct agent_series *a, int n)
{
    uint64_t **u[] = {&a->events, &a->responses,  &a->flagged,
                      &a->tokens, &a->tool_calls, &a->tool_errors};
    double **d[] = {&a->c_mean, &a->c_p05, &a->c_p50, &a->c_p95};
    int ok = 1;
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        ok &= (*u[i] = arr(n, sizeof(uint64_t))) != NULL;
    }
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        ok &= (*d[i] = arr(n, sizeof(double))) != NULL;
    }
    for (int k = 0; k < N_KINDS; k++) {
        ok &= (a->k_n[k] = arr(n, sizeof(uint64_t))) != NULL;
        ok &= (a->k_err[k] = arr(n, sizeof(uint64_t))) != NULL;
        ok &= (a->k_p50[k] = arr(n, sizeof(double))) != NULL;
        ok &= (a->k_p95[k] = arr(n, sizeof(double))) != NULL;
    }
    ok &= (a->tools = arr(SERIES_TOOLS_MAX, sizeof *a->tools)) != NULL;
    return ok ? 0 : -1;
}

static void agent_free(struct agent_series *a)
{
    void *all[] = {a->events, a->responses, a->flagged, a->tokens, a->tool_calls, a->tool_errors,
                   a->c_mean, a->c_p05,     a->c_p50,   a->c_p95,  a->tools};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]);
    }
    for (int k = 0; k < N_KINDS; k++) {
        free(a->k_n[k]);
        free(a->k_err[k]);
        free(a->k_p50[k]);
        free(a->k_p95[k]);
    }
}

/* Empty the series for the next agent (counts 0, figures NaN). */
static void agent_reset(struct agent_series *a, int n, const char *name)
{
    snprintf(a->name, sizeof a->name, "%s", name);
    a->any = 0;
    uint64_t *u[] = {a->events, a->responses, a->flagged, a->tokens, a->tool_calls, a->tool_errors};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        memset(u[i], 0, (size_t)n * sizeof(uint64_t));
    }
    for (int i = 0; i < n; i++) {
        a->c_mean[i] = a->c_p05[i] = a->c_p50[i] = a->c_p95[i] = NAN;
        for (int k = 0; k < N_KINDS; k++) {
            a->k_p50[k][i] = a->k_p95[k][i] = NAN;
        }
    }
    for (int k = 0; k < N_KINDS; k++) {
        memset(a->k_n[k], 0, (size_t)n * sizeof(uint64_t));
        memset(a->k_err[k], 0, (size_t)n * sizeof(uint64_t));
        memset(&a->kind_total[k], 0, sizeof a->kind_total[k]);
        a->kind_seen[k] = 0;
        a->kind_sum[k] = 0;
        a->kind_n[k] = a->kind_errors[k] = 0;
    }
    memset(&a->conf_total, 0, sizeof a->conf_total);
    a->conf_sum = 0;
    a->n_tools = a->tools_cut = 0;
}

static void merge_hist(struct store_hist *dst, const struct store_hist *src)
{
    for (int i = 0; i < STORE_HIST_BINS; i++) {
        dst->count[i] += src->count[i];
    }
    dst->total += src->total;
}

static void u64_series(tt__json *j, const char *key, const uint64_t *v, int n)
{
    tt__json_key(j, key);
    tt__json_arr_begin(j);
    for (int i = 0; i < n; i++) {
        tt__json_u64(j, v[i]);
    }
    tt__json_arr_end(j);
}

/* A figure with 6 significant digits (quantiles are exact to 4.4% anyway): the shortest
 * round-trip form of tt__json_f64 was most of the answer's cost. NaN: null. */
static void figure(tt__json *j, double v)
{
    if (!isfinite(v)) {
        tt__json_null(j);
        return;
    }
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%s%.6g", j->need_comma ? "," : "", v);
    j->need_comma = 1; /* as tt__json's own values do */
    tt__json_raw(j, tmp, (size_t)n);
}

static void f64_series(tt__json *j, const char *key, const double *v, int n)
{
    tt__json_key(j, key);
    tt__json_arr_begin(j);
    for (int i = 0; i < n; i++) {
        figure(j, v[i]);
    }
    tt__json_arr_end(j);
}

static void figures(tt__json *j, uint64_t n, uint64_t errors, double sum,
                    const struct store_hist *h)
{
    tt__json_kv_u64(j, "n", n);
    tt__json_kv_u64(j, "errors", errors);
    tt__json_kv_f64(j, "mean", h->total ? sum / (double)h->total : NAN);
    tt__json_kv_f64(j, "p50", store_hist_quantile(h, 0.5));
    tt__json_kv_f64(j, "p95", store_hist_quantile(h, 0.95));
}

static int tool_cmp(const void *x, const void *y)
{
    const struct tool_total *a = x, *b = y;
    return a->calls < b->calls ? 1 : a->calls > b->calls ? -1 : strcmp(a->name, b->name);
}

static void agent_json(struct series_walk *w)
{
    struct agent_series *a = w->a;
    tt__json *j = w->j;
    int n = w->npts;
    tt__json_obj_begin(j);
    tt__json_kv_cstr(j, "agent", a->name);
    u64_series(j, "events", a->events, n);
    u64_series(j, "responses", a->responses, n);
    u64_series(j, "flagged", a->flagged, n);
    u64_series(j, "tokens", a->tokens, n);
    u64_series(j, "tool_calls", a->tool_calls, n);
    u64_series(j, "tool_errors", a->tool_errors, n);
    tt__json_key(j, "confidence");
    tt__json_obj_begin(j);
    f64_series(j, "mean", a->c_mean, n);
    f64_series(j, "p05", a->c_p05, n);
    f64_series(j, "p50", a->c_p50, n);
    f64_series(j, "p95", a->c_p95, n);
    tt__json_obj_end(j);
    tt__json_key(j, "steps");
    tt__json_obj_begin(j);
    for (int k = 0; k < N_KINDS; k++) {
        if (!a->kind_seen[k]) {
            continue;
        }
        tt__json_key(j, kind_names[k]);
        tt__json_obj_begin(j);
        u64_series(j, "n", a->k_n[k], n);
        u64_series(j, "errors", a->k_err[k], n);
        f64_series(j, "p50", a->k_p50[k], n);
        f64_series(j, "p95", a->k_p95[k], n);
        tt__json_obj_end(j);
    }
    tt__json_obj_end(j);
    /* Totals over the range. */
    tt__json_key(j, "totals");
    tt__json_obj_begin(j);
    uint64_t sum_u[6] = {0};
    const uint64_t *u[] = {a->events, a->responses,  a->flagged,
                           a->tokens, a->tool_calls, a->tool_errors};
    static const char *const un[] = {"events", "responses",  "flagged",
                                     "tokens", "tool_calls", "tool_errors"};
    for (int s = 0; s < 6; s++) {
        for (int i = 0; i < n; i++) {
            sum_u[s] += u[s][i];
        }
        tt__json_kv_u64(j, un[s], sum_u[s]);
    }
    tt__json_key(j, "confidence");
    tt__json_obj_begin(j);
    figures(j, sum_u[1], sum_u[2], a->conf_sum, &a->conf_total);
    tt__json_kv_f64(j, "p05", store_hist_quantile(&a->conf_total, 0.05));
    tt__json_obj_end(j);
    tt__json_key(j, "steps");
    tt__json_obj_begin(j);
    for (int k = 0; k < N_KINDS; k++) {
        if (a->kind_seen[k]) {
            tt__json_key(j, kind_names[k]);
            tt__json_obj_begin(j);
            figures(j, a->kind_n[k], a->kind_errors[k], a->kind_sum[k], &a->kind_total[k]);
            tt__json_obj_end(j);
        }
    }
    tt__json_obj_end(j);
    tt__json_obj_end(j);
    qsort(a->tools, (size_t)a->n_tools, sizeof *a->tools, tool_cmp);
    tt__json_key(j, "tools");
    tt__json_arr_begin(j);
    for (int t = 0; t < a->n_tools; t++) {
        tt__json_obj_begin(j);
        tt__json_kv_cstr(j, "name", a->tools[t].name);
        figures(j, a->tools[t].calls, a->tools[t].errors, a->tools[t].sum, &a->tools[t].h);
        tt__json_obj_end(j);
    }
    tt__json_arr_end(j);
    tt__json_kv_bool(j, "tools_truncated", a->tools_cut);
    tt__json_obj_end(j);
    w->agents++;
}

static int kind_index(const char *key)
{
    for (int k = 0; k < N_KINDS; k++) {
        if (!strcmp(kind_names[k], key)) {
            return k;
        }
    }
    return 0;
}

static void tool_add(struct agent_series *a, const struct store_rollup *row)
{
    struct tool_total *t = NULL;
    for (int i = 0; i < a->n_tools && !t; i++) {
        t = strcmp(a->tools[i].name, row->key) == 0 ? &a->tools[i] : NULL;
    }
    if (!t) {
        if (a->n_tools == SERIES_TOOLS_MAX) {
            a->tools_cut = 1;
            return;
        }
        t = &a->tools[a->n_tools++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", row->key);
    }
    t->calls += row->n;
    t->errors += row->errors;
    t->sum += row->sum;
    if (row->hist) {
        merge_hist(&t->h, row->hist);
    }
}

static int on_row(void *ctx, const struct store_rollup *row)
{
    struct series_walk *w = ctx;
    struct agent_series *a = w->a;
    if (!a->any || strcmp(a->name, row->agent) != 0) {
        if (a->any) {
            agent_json(w);
        }
        agent_reset(a, w->npts, row->agent);
        a->any = 1;
    }
    int64_t i = (row->bucket_ns / 1000000000 - w->from_s) / w->step_s;
    if (i < 0 || i >= w->npts) {
        return 0;
    }
    const struct store_hist *h = row->hist;
    switch (row->metric) {
    case STORE_ROLLUP_EVENTS:
        a->events[i] += row->n;
        break;
    case STORE_ROLLUP_TOKENS:
        a->tokens[i] += row->n;
        break;
    case STORE_ROLLUP_RESPONSES:
        a->responses[i] += row->n;
        a->flagged[i] += row->errors;
        if (h && h->total) {
            static const double qs[] = {0.05, 0.5, 0.95};
            double out[3];
            store_hist_quantiles(h, qs, 3, out);
            a->c_mean[i] = row->sum / (double)h->total;
            a->c_p05[i] = out[0];
            a->c_p50[i] = out[1];
            a->c_p95[i] = out[2];
            merge_hist(&a->conf_total, h);
            a->conf_sum += row->sum;
        }
        break;
    case STORE_ROLLUP_STEPS: {
        int k = kind_index(row->key);
        a->kind_seen[k] = 1;
        a->k_n[k][i] += row->n;
        a->k_err[k][i] += row->errors;
        a->kind_n[k] += row->n;
        a->kind_errors[k] += row->errors;
        a->kind_sum[k] += row->sum;
        if (h && h->total) {
            static const double qs[] = {0.5, 0.95};
            double out[2];
            store_hist_quantiles(h, qs, 2, out);
            a->k_p50[k][i] = out[0];
            a->k_p95[k][i] = out[1];
            merge_hist(&a->kind_total[k], h);
        }
        break;
    }
    case STORE_ROLLUP_TOOLS:
        a->tool_calls[i] += row->n;
        a->tool_errors[i] += row->errors;
        tool_add(a, row);
        break;
    default:
        break;
    }
    return w->j->err != 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const struct {
    const char *name;
    int64_t s;
} ranges[] = {{"5m", 300},    {"15m", 900},   {"1h", 3600},    {"6h", 21600},
              {"24h", 86400}, {"7d", 604800}, {"30d", 2592000}};

/* The answered bucket width for a span: the smallest step giving at most SERIES_POINTS_MAX
 * points that some stored level divides and still holds at from (STORE_ROLLUP_KEEP); the
 * coarsest such level is read. */
int series_pick_step(int64_t from_s, int64_t span_s, int64_t now_s, int *step_s, int *level_s)
{
    static const int steps[] = {1,   2,    5,    10,   15,    30,    60,    120,   300,    600,
                                900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800};
    static const int levels[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_LEVELS;
    static const int64_t keep[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_KEEP;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int st = steps[i], lv = 0;
        if ((span_s + st - 1) / st > SERIES_POINTS_MAX) {
            continue;
        }
        for (int l = 0; l < STORE_ROLLUP_N_LEVELS; l++) {
            if (st % levels[l] == 0 && (!keep[l] || from_s >= now_s - keep[l] + 60)) {
                lv = levels[l];
            }
        }
        if (lv) {
            *step_s = st;
            *level_s = lv;
            return 0;
        }
    }
    return -1;
}

enum MHD_Result api_series(const struct http_req *r)
{
    static const char *const allowed[] = {"agent", "range", "from", "to", NULL};
    const char *bad = http_params_check(r, allowed);
    const char *range = http_param(r, "range"), *from = http_param(r, "from"),
               *to = http_param(r, "to");
    int64_t now = now_ns(), t0 = 0, t1 = now;
    if (!bad && range && (from || to)) {
        bad = "range and from/to: give one or the other";
    }
    if (!bad && !from && !to) {
        int64_t span = 0;
        for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
            span = !range || strcmp(ranges[i].name, range) ? span : ranges[i].s;
        }
        span = range ? span : 3600;
        if (!span) {
            bad = "range: expected 5m, 15m, 1h, 6h, 24h, 7d or 30d";
        }
        t0 = now - span * 1000000000;
    } else if (!bad) {
        if (!from || http_parse_time(from, &t0) != 0) {
            bad = "from: expected Unix nanoseconds or RFC 3339 UTC (2026-11-24T10:00:00Z)";
        } else if (to && http_parse_time(to, &t1) != 0) {
            bad = "to: expected Unix nanoseconds or RFC 3339 UTC (2026-11-24T10:00:00Z)";
        } else if (t1 <= t0) {
            bad = "to must be after from";
        } else if (t1 - t0 > (int64_t)400 * 86400 * 1000000000) {
            bad = "from/to: at most 400 days";
        }
    }
    int step = 0, level = 0;
    int64_t now_s = now / 1000000000;
    if (!bad && series_pick_step(t0 / 1000000000, (t1 - t0 + 999999999) / 1000000000, now_s, &step,
                                 &level) != 0) {
        bad = "from/to: range too long";
    }
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    /* Buckets aligned on step: the first holds t0, the last holds t1 - 1. */
    int64_t from_s = t0 / 1000000000;
    from_s -= ((from_s % step) + step) % step;
    int64_t last_s = (t1 - 1) / 1000000000;
    int npts = (int)((last_s - from_s) / step + 1);
    struct agent_series *a = calloc(1, sizeof *a);
    if (!a || agent_alloc(a, npts) != 0) {
        if (a) {
            agent_free(a);
        }
        free(a);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
    }
    struct http_list l;
    if (http_list_open(r, &l, "agents") != 0) {
        agent_free(a);
        free(a);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    struct series_walk w = {&l.j, from_s, step, npts, a, 0};
    struct store_rollup_query q = {http_param(r, "agent"), from_s * 1000000000,
                                   (from_s + (int64_t)npts * step) * 1000000000, level, step};
    int n = store_rollups(l.rd, &q, on_row, &w);
    if (n >= 0 && a->any) {
        agent_json(&w);
    }
    http_list_end_array(&l);
    tt__json_kv_i64(&l.j, "from", from_s * 1000000000);
    tt__json_kv_i64(&l.j, "to", (from_s + (int64_t)npts * step) * 1000000000);
    tt__json_kv_i64(&l.j, "step_s", step);
    tt__json_kv_i64(&l.j, "source_step_s", level);
    tt__json_kv_i64(&l.j, "now", now);
    tt__json_key(&l.j, "t");
    tt__json_arr_begin(&l.j);
    for (int i = 0; i < npts; i++) {
        tt__json_i64(&l.j, from_s + (int64_t)i * step);
    }
    tt__json_arr_end(&l.j);
    agent_free(a);
    free(a);
    return http_list_reply(r, &l, n, "series");
}

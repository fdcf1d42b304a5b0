/*
 * comply.c - what a compliance decision costs in the agent (docs/compliance.md): tt_step_begin
 * plus tt_step_end under a typical policy (destructive SQL blocked, an API host allow list, a
 * forbidden tool, a per-session call limit, PII flagged and masked) against the same pair with
 * no policy, in the same run; and the decision alone (tt__comply_step).
 *
 * The steps cycle through typical queries: a 100-byte SELECT, an API URL, a search text, a
 * bounded UPDATE. Rings are large and the collector absent, so every event stays in the ring
 * (nothing is sent, nothing dropped): what is timed is the call. Seven alternating runs, medians.
 *
 *   comply [--smoke]     JSON lines on stdout
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/comply.h"
#include "telltale.h"

#define RUNS 7

static const char policy[] = "[rule.destructive_sql]\nmatch = sql\nkinds = tool, retrieval\n"
                             "action = block\n"
                             "[rule.apis]\nmatch = host\nkinds = api\n"
                             "allow = api.example.com, *.corp.example\naction = block\n"
                             "[rule.no_shell]\nmatch = tool\nnames = shell, exec\naction = block\n"
                             "[rule.budget]\nmatch = limit\nkinds = tool, api, retrieval\n"
                             "calls = 1000000000\naction = block\n"
                             "[rule.pii]\nmatch = pii\nredact = on\n";

static const struct {
    tt_step_kind kind;
    const char *name, *query;
} steps[] = {
    {TT_STEP_RETRIEVAL, "sql",
     "SELECT id, total FROM orders WHERE customer_id = 42 AND status = 'open' ORDER BY "
     "created_at DESC LIMIT 20"},
    {TT_STEP_API, "http", "https://api.example.com/v1/weather?city=Lyon&units=metric"},
    {TT_STEP_TOOL, "search", "best hiking trails near Grenoble for a family with kids"},
    {TT_STEP_RETRIEVAL, "sql", "UPDATE carts SET updated_at = now() WHERE id = 991"},
};
#define NSTEPS (sizeof steps / sizeof steps[0])

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static tt_client *open_client(void)
{
    tt_config *cfg;
    tt_client *c;
    if (tt_config_new(&cfg) || tt_config_set(cfg, "endpoint", "unix:/nonexistent/telltale.sock") ||
        tt_config_set(cfg, "agent", "bench-comply") ||
        tt_config_set(cfg, "ring_bytes", "134217728") || tt_open(&c, cfg)) {
        fprintf(stderr, "comply: cannot open a client\n");
        exit(1);
    }
    tt_config_free(cfg);
    return c;
}

/* ns per begin + end pair over n pairs */
static double pairs(tt_client *c, int n)
{
    char session[32];
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        snprintf(session, sizeof session, "s-%d", i >> 4);
        tt_step st;
        int k = i % (int)NSTEPS;
        if (tt_step_begin(c, &st, NULL, steps[k].kind, session, steps[k].name, steps[k].query)) {
            fprintf(stderr, "comply: step refused\n");
            exit(1);
        }
        tt_step_end(c, &st, TT_STATUS_OK, 10, NULL);
    }
    return (now_ns() - t0) / n;
}

int main(int argc, char **argv)
{
    int smoke = argc > 1 && strcmp(argv[1], "--smoke") == 0;
    int n = smoke ? 2000 : 50000;
    tt_client *plain = open_client(), *ruled = open_client();
    char err[256];
    if (tt_comply_policy_set(ruled, policy, strlen(policy), err, sizeof err)) {
        fprintf(stderr, "comply: policy: %s\n", err);
        return 1;
    }
    static struct tt__comply_policy p;
    if (tt__comply_parse(&p, policy, strlen(policy), err, sizeof err)) {
        return 1;
    }
    double base[RUNS], with[RUNS], decide[RUNS];
    pairs(plain, n / 10); /* warm the rings */
    pairs(ruled, n / 10);
    for (int r = 0; r < RUNS; r++) {
        base[r] = pairs(plain, n);
        with[r] = pairs(ruled, n);
        uint64_t calls[TT_COMPLY_MAX_LIMITS] = {0};
        struct tt__comply_verdict v;
        int hits = 0;
        double t0 = now_ns();
        for (int i = 0; i < n; i++) {
            int k = i % (int)NSTEPS;
            hits += tt__comply_step(&p, steps[k].kind, steps[k].name, strlen(steps[k].name),
                                    steps[k].query, strlen(steps[k].query), calls, &v);
        }
        decide[r] = (now_ns() - t0) / n;
        if (hits) {
            fprintf(stderr, "comply: a benign step matched\n");
            return 1;
        }
    }
    qsort(base, RUNS, sizeof *base, cmp);
    qsort(with, RUNS, sizeof *with, cmp);
    qsort(decide, RUNS, sizeof *decide, cmp);
    double b = base[RUNS / 2], w = with[RUNS / 2], d = decide[RUNS / 2];
    printf(
        "{\"bench\":\"comply\",\"metric\":\"step_pair_policy_ns\",\"value\":%.1f,\"unit\":\"ns\","
        "\"baseline\":\"the same pair with no policy: %.1f ns\",\"ratio\":%.3f,\"note\":\"5 "
        "rules: SQL, hosts, tools, a call limit, PII masked; median of %d\"}\n",
        w, b, w / b, RUNS);
    printf(
        "{\"bench\":\"comply\",\"metric\":\"decision_overhead_ns\",\"value\":%.1f,\"unit\":\"ns\","
        "\"baseline\":\"the pair with no policy: %.1f ns\",\"ratio\":%.3f,\"note\":\"the "
        "policy's cost per step: the pair with it minus without (goal <= 1000 ns)\"}\n",
        w - b, b, (w - b) / b);
    printf("{\"bench\":\"comply\",\"metric\":\"decision_only_ns\",\"value\":%.1f,\"unit\":\"ns\","
           "\"baseline\":\"the pair with no policy: %.1f ns\",\"ratio\":%.3f,\"note\":"
           "\"tt__comply_step alone on the same steps\"}\n",
           d, b, d / b);
    tt_close(plain, 0);
    tt_close(ruled, 0);
    return 0;
}

/*
 * change_cases.c - the public change-case suite (tests/support/change_cases.h) run against the
 * drift detectors' default configuration and the alternatives, printed as the Markdown table of
 * docs/detectors.md ("The change-case suite"). `make bench BENCH=change_cases` runs it;
 * scripts/gen-change-table splices its output into the document.
 *
 * Usage: change_cases [ALGO:PARAMS ...]   (no argument: the configurations of the document).
 * Each configuration is a detector name and its parameter list, e.g. "cusum:h=12 warmup=200".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "change_cases.h"
#include "collector/alerting/monitor.h"

static const char *const doc_configs[] = {
    "cusum:" DRIFT_CUSUM_DEFAULTS,
    "cusum:" DRIFT_CUSUM_DEFAULTS " baseline=track halflife=50 delay=8",
    "cusum:h=12 warmup=200",
    "ph:alpha=1 delta=0.0125 threshold=1.25 min_instances=200",
    "adwin:",
};

static void row(const char *label, const struct cc_case *c, struct cc_result *r)
{
    if (c->budget) {
        double med = cc_median_delay(r);
        printf("| %s | %s | %u | %u/%u | %.0f | %u | %u |\n", label, c->name, c->budget,
               r->detected, r->runs, med, r->false_runs, r->extra_runs);
    } else {
        printf("| %s | %s | - | - | - | %u (%llu alarms in %llu samples) | - |\n", label, c->name,
               r->false_runs, (unsigned long long)r->false_alarms,
               (unsigned long long)r->quiet_samples);
    }
}

static int run_config(const char *spec)
{
    char algo[32];
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    if (n == 0 || n >= sizeof algo) {
        fprintf(stderr, "change_cases: expected ALGO:PARAMS, got %s\n", spec);
        return -1;
    }
    memcpy(algo, spec, n);
    algo[n] = 0;
    const struct detect_ops *ops = detect_find(algo);
    union detect_params p;
    if (!ops) {
        fprintf(stderr, "change_cases: no detector %s\n", algo);
        return -1;
    }
    ops->defaults(&p);
    if (colon && colon[1] && detect_parse(ops, &p, colon + 1) != 0) {
        fprintf(stderr, "change_cases: bad parameters %s\n", colon + 1);
        return -1;
    }
    void *state = aligned_alloc(64, (ops->size(&p) + 63) / 64 * 64);
    static struct cc_result r;
    for (size_t i = 0; i < CC_CASES; i++) {
        if (!state || cc_run(&cc_cases[i], ops, &p, state, &r) != 0) {
            free(state);
            return -1;
        }
        char label[300];
        snprintf(label, sizeof label, "`%s`%s", spec, i ? "" : "");
        row(i == 0 ? label : "", &cc_cases[i], &r);
    }
    free(state);
    return 0;
}

int main(int argc, char **argv)
{
    printf("| configuration | case | budget | detected in budget | median delay | runs with false "
           "alarms | runs with >1 alarm after the change |\n|---|---|---|---|---|---|---|\n");
    int bad = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            bad |= run_config(argv[i]) != 0;
        }
    } else {
        for (size_t i = 0; i < sizeof doc_configs / sizeof doc_configs[0]; i++) {
            bad |= run_config(doc_configs[i]) != 0;
        }
    }
    return bad;
}

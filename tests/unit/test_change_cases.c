/*
 * test_change_cases.c - the drift units' default detector against the public change-case suite
 * (tests/support/change_cases.h): every change found within its budget, one alarm per change,
 * no false alarm on the no-change streams; and the tracking option for periodic load.
 * docs/detectors.md prints the same results as a table (bench/change_cases.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "change_cases.h"
#include "collector/alerting/monitor.h"
#include "test.h"

static void *config(const char *spec, const struct detect_ops **ops, union detect_params *p)
{
    *ops = &detect_cusum;
    (*ops)->defaults(p);
    CHECK_OK(detect_parse(*ops, p, spec));
    void *st = aligned_alloc(64, ((*ops)->size(p) + 63) / 64 * 64);
    CHECK(st != NULL);
    return st;
}

TEST(change_cases_default_drift_detector_meets_every_budget_with_one_alarm_per_change)
{
    const struct detect_ops *ops;
    union detect_params p;
    void *st = config(DRIFT_CUSUM_DEFAULTS, &ops, &p);
    static struct cc_result r;
    for (size_t i = 0; i < CC_CASES; i++) {
        const struct cc_case *c = &cc_cases[i];
        if (c->kind == CC_QUIET_PERIODIC) {
            continue; /* the tracking option's case, below */
        }
        CHECK_OK(cc_run(c, ops, &p, st, &r));
        CHECK_MSG(r.false_runs == 0, "%s: %u runs with false alarms", c->name, r.false_runs);
        if (!c->budget) {
            CHECK_MSG(r.false_alarms == 0, "%s: %llu false alarms", c->name,
                      (unsigned long long)r.false_alarms);
            continue;
        }
        /* A half-sigma step 300 samples into a stream may fall in a warm-up that already
         * leaned its way: one such run of 30 is allowed, no more. */
        uint32_t need = c->kind == CC_STEP && c->size > -1 && c->size < 0 ? r.runs - 1 : r.runs;
        CHECK_MSG(r.detected >= need, "%s: %u of %u runs detected within %u samples", c->name,
                  r.detected, r.runs, c->budget);
        CHECK_MSG(r.extra_runs == 0, "%s: %u runs alarmed more than once", c->name, r.extra_runs);
    }
    free(st);
}

TEST(change_cases_tracking_baseline_stays_quiet_on_periodic_load_and_sees_a_large_step)
{
    const struct detect_ops *ops;
    union detect_params p;
    void *st = config(DRIFT_CUSUM_DEFAULTS " baseline=track halflife=50 delay=8", &ops, &p);
    static struct cc_result r;
    for (size_t i = 0; i < CC_CASES; i++) {
        const struct cc_case *c = &cc_cases[i];
        CHECK_OK(cc_run(c, ops, &p, st, &r));
        CHECK_MSG(r.false_runs == 0, "%s: %u runs with false alarms", c->name, r.false_runs);
        if (c->kind == CC_STEP && c->size == -2) {
            CHECK_MSG(r.detected >= r.runs - 1, "%s: %u of %u", c->name, r.detected, r.runs);
        }
    }
    free(st);
    /* The default, which must not follow a slow change, does alarm on the swing. */
    st = config(DRIFT_CUSUM_DEFAULTS, &ops, &p);
    for (size_t i = 0; i < CC_CASES; i++) {
        if (cc_cases[i].kind == CC_QUIET_PERIODIC) {
            CHECK_OK(cc_run(&cc_cases[i], ops, &p, st, &r));
            CHECK(r.false_alarms > 0);
        }
    }
    free(st);
}

TEST(change_cases_robust_cusum_reports_direction_baseline_and_change_point)
{
    const struct detect_ops *ops;
    union detect_params p;
    void *st = config(DRIFT_CUSUM_DEFAULTS, &ops, &p);
    CHECK_OK(ops->init(st, &p));
    tt__rng r;
    tt__rng_seed(&r, 99);
    int fired = -1;
    for (int i = 0; i < 3000 && fired < 0; i++) {
        double x = 10 + tt__rng_gauss(&r) - (i >= 2000 ? 1 : 0);
        if (ops->update(st, x) == 1) {
            fired = i;
        }
    }
    CHECK(fired >= 2000 && fired < 2100);
    struct detect_reading rd;
    ops->read(st, &rd);
    CHECK_EQ(rd.active, 1);
    CHECK_EQ(rd.direction, -1);
    CHECK_NEAR(rd.base_mean, 10, 0.15);
    CHECK_NEAR(rd.base_sigma, 1, 0.15);
    CHECK(rd.base_n > 1500);
    /* The change point: within 30 samples of 2000 (the last zero of a k = 0.25 sum leans early), and the recent mean near 9. */
    int64_t start = fired + 1 - (int64_t)rd.start_back;
    CHECK_MSG(start >= 1970 && start <= 2015, "change estimated at %lld", (long long)start);
    CHECK_NEAR(rd.recent_mean, 9, 0.35);
    /* Out of control while the change lasts: no second alarm; back in control after it. */
    for (int i = 0; i < 500; i++) {
        CHECK_EQ(ops->update(st, 9 + tt__rng_gauss(&r)), 0);
    }
    ops->read(st, &rd);
    CHECK_EQ(rd.active, 1);
    CHECK_NEAR(rd.base_mean, 10, 0.15); /* the baseline did not learn the change */
    for (int i = 0; i < 200; i++) {
        CHECK_EQ(ops->update(st, 10 + tt__rng_gauss(&r)), 0);
    }
    ops->read(st, &rd);
    CHECK_EQ(rd.active, 0);
    free(st);
}

/* Page-Hinkley and ADWIN explain their alarm too: direction, the baseline before the change with
 * its spread, the level after it, and where it began. A 1-sigma fall at sample 2000 of a stream
 * with mean 10; PH with a threshold scaled to the spread (docs/detectors.md). */
static void check_explained_fall(const char *algo, const char *spec, uint64_t seed, int64_t lo,
                                 int64_t hi)
{
    const struct detect_ops *ops = detect_find(algo);
    CHECK(ops != NULL);
    union detect_params p;
    ops->defaults(&p);
    CHECK_OK(detect_parse(ops, &p, spec));
    void *st = aligned_alloc(64, (ops->size(&p) + 63) / 64 * 64);
    CHECK(st != NULL);
    CHECK_OK(ops->init(st, &p));
    tt__rng r;
    tt__rng_seed(&r, seed);
    int fired = -1;
    for (int i = 0; i < 4000 && fired < 0; i++) {
        int rc = ops->update(st, 10 + tt__rng_gauss(&r) - (i >= 2000 ? 1 : 0));
        fired = rc == 1 ? i : fired;
        CHECK_MSG(rc != 1 || i >= 2000, "%s: false alarm at %d", algo, i);
    }
    CHECK_MSG(fired >= 2000, "%s: no alarm", algo);
    struct detect_reading rd;
    ops->read(st, &rd);
    CHECK_EQ(rd.direction, -1);
    CHECK_NEAR(rd.base_mean, 10, 0.2);
    CHECK_NEAR(rd.base_sigma, 1, 0.2);
    CHECK_MSG(rd.recent_mean < rd.base_mean - 0.4 && rd.recent_mean > 8.4, "%s: recent mean %g",
              algo, rd.recent_mean);
    CHECK(rd.base_n > 0 && rd.recent_n > 0);
    CHECK(rd.start_back >= 1);
    int64_t start = fired + 1 - (int64_t)rd.start_back;
    CHECK_MSG(start >= lo && start <= hi, "%s: change estimated at %lld, alarm at %d", algo,
              (long long)start, fired);
    free(st);
}

TEST(change_cases_page_hinkley_and_adwin_report_direction_baseline_and_change_point)
{
    for (uint64_t seed = 1; seed <= 8; seed++) {
        /* PH's turning point can lean early by a random walk's excursion. */
        check_explained_fall("ph", "threshold=25 delta=0.25", seed, 1880, 2040);
        /* ADWIN's split falls on a bucket edge; near the newest samples buckets are small. */
        check_explained_fall("adwin", "delta=0.002", seed, 1900, 2100);
    }
}

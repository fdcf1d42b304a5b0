/*
 * change_cases.h - the public suite of change cases for the drift detectors: steps of 0.5, 1
 * and 2 sigma, a rise, heavy tails, a slow drift, a variance change, a step of a discrete judge
 * score, and no-change streams (Gaussian, heavy-tailed, discrete, periodic). Each change case
 * has a detection budget in samples (responses); each runs with several seeds and change
 * placements. tests/unit/test_change_cases.c holds the collector's defaults to it;
 * bench/change_cases.c prints the table of docs/detectors.md from it.
 *
 * Header-only (static functions) so that the unit test and the bench share one definition.
 */
#ifndef TT_TESTS_CHANGE_CASES_H
#define TT_TESTS_CHANGE_CASES_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "collector/alerting/detect.h"
#include "common/rng.h"

#define CC_SEEDS 10
#define CC_AFTER 2000  /* samples after the change point */
#define CC_QUIET 20000 /* samples of a no-change stream */
#define CC_LEVEL 0.8   /* in-control level (a confidence-like score) */
#define CC_SIGMA 0.05  /* in-control standard deviation */

static const uint32_t cc_placements[] = {300, 1000, 3000};
#define CC_PLACEMENTS (sizeof cc_placements / sizeof cc_placements[0])

enum cc_kind {
    CC_STEP,     /* the mean moves by `size` sigma at the change point */
    CC_STEP_T3,  /* the same on Student-t(3) noise scaled to unit variance */
    CC_RAMP,     /* the mean moves by `size` sigma per 1000 samples from the change point */
    CC_VARIANCE, /* sigma is multiplied by `size` at the change point */
    CC_JUDGE,    /* a 1-5 judge score; at the change its mean falls by `size` sigma */
    CC_QUIET_GAUSS,
    CC_QUIET_T3,
    CC_QUIET_JUDGE,
    CC_QUIET_PERIODIC /* a swing of `size` sigma over a period of 2000 samples */
};

struct cc_case {
    const char *name;
    enum cc_kind kind;
    double size;
    uint32_t budget; /* samples after the change within which it must be detected; 0: none */
};

static const struct cc_case cc_cases[] = {
    {"step -0.5 sigma", CC_STEP, -0.5, 400},
    {"step -1 sigma", CC_STEP, -1, 100},
    {"step -2 sigma", CC_STEP, -2, 30},
    {"step +1 sigma (rise)", CC_STEP, 1, 100},
    {"step -1 sigma, t(3) noise", CC_STEP_T3, -1, 150},
    {"slow drift -1 sigma / 1000", CC_RAMP, -1, 1000},
    {"variance x2", CC_VARIANCE, 2, 150},
    {"judge score 1-5, mean -1 sigma", CC_JUDGE, -1, 150},
    {"no change, Gaussian", CC_QUIET_GAUSS, 0, 0},
    {"no change, t(3) noise", CC_QUIET_T3, 0, 0},
    {"no change, judge score 1-5", CC_QUIET_JUDGE, 0, 0},
    {"no change, periodic swing 2 sigma", CC_QUIET_PERIODIC, 2, 0},
};
#define CC_CASES (sizeof cc_cases / sizeof cc_cases[0])

/* Student-t with 3 degrees of freedom, scaled to unit variance (its variance is 3). */
static inline double cc_t3(tt__rng *r)
{
    double z = tt__rng_gauss(r), chi = 0;
    for (int i = 0; i < 3; i++) {
        double g = tt__rng_gauss(r);
        chi += g * g;
    }
    return z / sqrt(chi / 3) / sqrt(3.0);
}

/* A judge's 1-5 score: a rounded, clamped Gaussian of mean m and sd 1 (in score points). */
static inline double cc_judge(tt__rng *r, double m)
{
    double v = round(m + tt__rng_gauss(r));
    return v < 1 ? 1 : v > 5 ? 5 : v;
}

/* Sample i of a stream whose change starts at `at` (no-change kinds ignore it). */
static inline double cc_sample(const struct cc_case *c, tt__rng *r, uint32_t i, uint32_t at)
{
    int after = i >= at;
    switch (c->kind) {
    case CC_STEP:
        return CC_LEVEL + CC_SIGMA * (tt__rng_gauss(r) + (after ? c->size : 0));
    case CC_STEP_T3:
        return CC_LEVEL + CC_SIGMA * (cc_t3(r) + (after ? c->size : 0));
    case CC_RAMP:
        return CC_LEVEL + CC_SIGMA * (tt__rng_gauss(r) + (after ? c->size * (i - at) / 1000.0 : 0));
    case CC_VARIANCE:
        return CC_LEVEL + CC_SIGMA * tt__rng_gauss(r) * (after ? c->size : 1);
    case CC_JUDGE:
        return cc_judge(r, 3.5 + (after ? c->size : 0));
    case CC_QUIET_GAUSS:
        return CC_LEVEL + CC_SIGMA * tt__rng_gauss(r);
    case CC_QUIET_T3:
        return CC_LEVEL + CC_SIGMA * cc_t3(r);
    case CC_QUIET_JUDGE:
        return cc_judge(r, 3.5);
    case CC_QUIET_PERIODIC:
        return CC_LEVEL + CC_SIGMA * (tt__rng_gauss(r) + c->size / 2 * sin(2 * M_PI * i / 2000.0));
    }
    return 0;
}

/* What one configuration did on one case, over every seed and placement. */
struct cc_result {
    uint32_t runs;
    uint32_t detected;   /* change cases: runs with an alarm within the budget */
    uint32_t false_runs; /* runs with an alarm before the change (or any, for no-change) */
    uint64_t false_alarms;
    uint64_t quiet_samples; /* samples that could only give false alarms */
    uint32_t extra_runs;    /* change cases: runs with more than one alarm after the change */
    double delays[CC_SEEDS * CC_PLACEMENTS]; /* detected runs: samples from change to alarm */
};

static inline int cc_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline double cc_median_delay(struct cc_result *r)
{
    if (!r->detected) {
        return NAN;
    }
    qsort(r->delays, r->detected, sizeof r->delays[0], cc_cmp);
    return r->detected % 2 ? r->delays[r->detected / 2]
                           : (r->delays[r->detected / 2 - 1] + r->delays[r->detected / 2]) / 2;
}

/* Run one configuration (ops and params) over one case. state: ops->size(p) bytes at least. */
static inline int cc_run(const struct cc_case *c, const struct detect_ops *ops,
                         const union detect_params *p, void *state, struct cc_result *out)
{
    *out = (struct cc_result){0};
    int change = c->budget > 0;
    uint32_t nplace = change ? CC_PLACEMENTS : 1;
    for (uint32_t s = 0; s < CC_SEEDS; s++) {
        for (uint32_t k = 0; k < nplace; k++) {
            uint32_t at = change ? cc_placements[k] : UINT32_MAX;
            uint32_t n = change ? at + CC_AFTER : CC_QUIET;
            tt__rng r;
            tt__rng_seed(&r, 20261202u + 7919u * s + 104729u * k + 15485863u * (uint32_t)c->kind);
            if (ops->init(state, p) != 0) {
                return -1;
            }
            uint32_t before = 0, after = 0, first = 0;
            for (uint32_t i = 0; i < n; i++) {
                if (ops->update(state, cc_sample(c, &r, i, at)) != 1) {
                    continue;
                }
                if (i < at) {
                    before++;
                } else if (after++ == 0) {
                    first = i - at + 1;
                }
            }
            out->runs++;
            out->false_alarms += before;
            out->quiet_samples += change ? at : n;
            out->false_runs += before > 0;
            out->extra_runs += after > 1;
            if (change && after && first <= c->budget && before == 0) {
                out->delays[out->detected++] = first;
            }
        }
    }
    return 0;
}

#endif

/*
 * page_hinkley.c - the Page-Hinkley test (Page 1954; Hinkley 1971) exactly as river implements it
 * in river.drift.PageHinkley, with its defaults, so that the collector's alarms can be checked
 * against river's documented behaviour (tests/unit/test_detect.c: the doctest stream fires at
 * index 1006 here as there).
 *
 * With m the mean of every sample since the last reset (including this one), two cumulative
 * sums with a forgetting factor alpha track deviations from m:
 *
 *     U = alpha U + (x - m) - delta      a rise shows as U climbing above its running minimum
 *     L = alpha L + (x - m) + delta      a fall shows as L sinking below its running maximum
 *
 * and a change is declared when U - min U or max L - L exceeds the threshold lambda, once
 * min_instances samples were seen. delta and lambda are in the stream's units, which is why
 * river's lambda = 50 (tuned for 0/1 error streams) false-alarms on a stream with sigma = 1:
 * docs/detectors.md gives the measured trade-off and a lambda scaled with sigma.
 */
#include "collector/alerting/detect.h"

#include <errno.h>
#include <math.h>
#include <string.h>

struct ph {
    struct ph_params p;
    double mean;     /* running mean since the last reset */
    double up;       /* U */
    double up_min;   /* min U since the last reset */
    double down;     /* L */
    double down_max; /* max L since the last reset */
    double thr_up;   /* threshold, or +inf when the mode ignores rises */
    double thr_down; /* threshold, or +inf when the mode ignores falls */
    uint64_t n;      /* samples since the last reset */
    int fired;       /* 1 after an alarm: start afresh at the next update */
    /* For the explanation, not the test: sums of (x - first sample) and its square since the
     * last reset, and their values where min U and max L were last reached (the classic
     * Page-Hinkley estimate of the change point is where the test's sum turned). */
    double shift, s1, s2;
    struct ph_mark {
        uint64_t n;
        double s1, s2;
    } at_up, at_down;
};

static void ph_defaults(union detect_params *u)
{
    u->ph = (struct ph_params){
        .min_instances = 30,
        .delta = 0.005,
        .threshold = 50.0,
        .alpha = 1 - 0.0001,
        .mode = DETECT_BOTH,
    };
}

static int ph_check(const union detect_params *u)
{
    const struct ph_params *p = &u->ph;
    int ok = p->min_instances >= 1 && isfinite(p->delta) && p->delta >= 0 &&
             isfinite(p->threshold) && p->threshold > 0 && p->alpha > 0 && p->alpha <= 1 &&
             (p->mode == DETECT_BOTH || p->mode == DETECT_UP || p->mode == DETECT_DOWN);
    return ok ? 0 : -EINVAL;
}

static int ph_set(union detect_params *u, const char *key, const char *value)
{
    struct ph_params p = u->ph;
    int rc;
    if (strcmp(key, "min_instances") == 0) {
        rc = detect_parse_u32(value, &p.min_instances);
    } else if (strcmp(key, "delta") == 0) {
        rc = detect_parse_double(value, &p.delta);
    } else if (strcmp(key, "threshold") == 0) {
        rc = detect_parse_double(value, &p.threshold);
    } else if (strcmp(key, "alpha") == 0) {
        rc = detect_parse_double(value, &p.alpha);
    } else if (strcmp(key, "mode") == 0) {
        rc = detect_parse_mode(value, &p.mode);
    } else {
        return -ENOENT;
    }
    union detect_params next = {.ph = p};
    if (rc || ph_check(&next)) {
        return -EINVAL;
    }
    u->ph = p;
    return 0;
}

static size_t ph_size(const union detect_params *u)
{
    return ph_check(u) ? 0 : sizeof(struct ph);
}

/* river starts the maximum of L at -1 rather than -inf; the first L is delta >= 0, so the two
 * agree from the first sample on. */
static void ph_restart(struct ph *d)
{
    d->mean = 0.0;
    d->up = 0.0;
    d->up_min = INFINITY;
    d->down = 0.0;
    d->down_max = -INFINITY;
    d->n = 0;
    d->fired = 0;
    d->shift = d->s1 = d->s2 = 0.0;
    d->at_up = d->at_down = (struct ph_mark){0, 0.0, 0.0};
}

static int ph_init(void *state, const union detect_params *u)
{
    if (ph_check(u)) {
        return -EINVAL;
    }
    struct ph *d = state;
    memset(d, 0, sizeof *d);
    d->p = u->ph;
    d->thr_up = d->p.mode == DETECT_DOWN ? INFINITY : d->p.threshold;
    d->thr_down = d->p.mode == DETECT_UP ? INFINITY : d->p.threshold;
    ph_restart(d);
    return 0;
}

static int ph_update(void *state, double x)
{
    struct ph *d = state;
    if (!isfinite(x)) {
        return -EINVAL;
    }
    if (d->fired) {
        ph_restart(d);
    }
    d->n++;
    /* The same operation order as river's stats.Mean, so that the sums agree to the bit. */
    d->mean += (1.0 / (double)d->n) * (x - d->mean);
    double dev = x - d->mean;
    d->up = d->p.alpha * d->up + dev - d->p.delta;
    d->down = d->p.alpha * d->down + dev + d->p.delta;
    if (d->n == 1) {
        d->shift = x;
    }
    d->s1 += x - d->shift;
    d->s2 += (x - d->shift) * (x - d->shift);
    if (d->up < d->up_min) {
        d->up_min = d->up;
        d->at_up = (struct ph_mark){d->n, d->s1, d->s2};
    }
    if (d->down > d->down_max) {
        d->down_max = d->down;
        d->at_down = (struct ph_mark){d->n, d->s1, d->s2};
    }
    if (d->n < d->p.min_instances) {
        return 0;
    }
    d->fired = (d->up - d->up_min > d->thr_up) | (d->down_max - d->down > d->thr_down);
    return d->fired;
}

static void ph_reset(void *state)
{
    ph_restart(state);
}

static void ph_read(const void *state, struct detect_reading *out)
{
    const struct ph *d = state;
    double up = 0.0, down = 0.0;
    if (d->n > 0) {
        up = d->p.mode == DETECT_DOWN ? 0.0 : d->up - d->up_min;
        down = d->p.mode == DETECT_UP ? 0.0 : d->down_max - d->down;
    }
    out->stat = up > down ? up : down;
    out->threshold = d->p.threshold;
    out->level = d->mean;
    out->n = d->n;
    out->active = 0;
    out->direction = 0;
    out->start_back = 0;
    out->base_mean = out->base_sigma = out->recent_mean = NAN;
    out->base_n = out->recent_n = 0;
    if (d->n == 0) {
        return;
    }
    /* The larger test names the direction; the samples up to where its sum turned are the
     * baseline, those after it the change. */
    out->direction = up >= down ? 1 : -1;
    const struct ph_mark *m = up >= down ? &d->at_up : &d->at_down;
    if (m->n == 0 || m->n >= d->n) {
        return;
    }
    double bn = (double)m->n, rn = (double)(d->n - m->n);
    out->start_back = d->n - m->n;
    out->base_n = m->n;
    out->base_mean = d->shift + m->s1 / bn;
    double var = m->n > 1 ? (m->s2 - m->s1 * m->s1 / bn) / (bn - 1) : NAN;
    out->base_sigma = var >= 0 ? sqrt(var) : NAN;
    out->recent_n = d->n - m->n;
    out->recent_mean = d->shift + (d->s1 - m->s1) / rn;
}

const struct detect_ops detect_ph = {
    .name = "ph",
    .defaults = ph_defaults,
    .set = ph_set,
    .check = ph_check,
    .size = ph_size,
    .init = ph_init,
    .update = ph_update,
    .reset = ph_reset,
    .read = ph_read,
};

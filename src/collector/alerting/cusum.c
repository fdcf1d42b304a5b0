/*
 * cusum.c - two-sided tabular CUSUM (Page 1954; Montgomery, Introduction to Statistical
 * Quality Control, ch. 9) on standardised values.
 *
 * Each sample is standardised against an in-control mean and standard deviation, z = (x - mu)
 * / sigma, and feeds two one-sided sums that absorb deviations smaller than the reference value
 * k and accumulate larger ones:
 *
 *     S+ = max(0, S+ + z - k)     S- = max(0, S- - z - k)     alarm when S+ > h or S- > h
 *
 * With k = 0.5 and h = 5 the average run length is 465 samples in control and 10.4 after a
 * 1-sigma shift (tests/unit/test_detect.c checks both). The baseline is either given or
 * estimated over a warm-up of N samples and then frozen: a running mean would follow the very
 * shift the detector is meant to see. Cost: a subtraction, a multiplication and two max per
 * sample, no division (1/sigma is kept).
 */
#include "collector/alerting/detect.h"

#include <errno.h>
#include <math.h>
#include <string.h>

struct cusum {
    struct cusum_params p;
    double mu;        /* in-control mean, frozen while scoring */
    double inv_sigma; /* 1 / in-control standard deviation */
    double h_up;      /* h, or +inf when the mode ignores rises */
    double h_down;    /* h, or +inf when the mode ignores falls */
    double sp;        /* S+, in sigmas */
    double sm;        /* S-, in sigmas */
    double wmean;     /* running mean of the warm-up (Welford) */
    double wm2;       /* running sum of squared deviations of the warm-up */
    uint64_t n;       /* samples since the last reset */
    uint32_t learned; /* warm-up samples so far */
    int learning;     /* 1 while the baseline is being estimated */
    int fired;        /* 1 after an alarm: start afresh at the next update */
};

static void cusum_defaults(union detect_params *u)
{
    u->cusum = (struct cusum_params){
        .k = 0.5,
        .h = 5.0,
        .mean = NAN,
        .sigma = NAN,
        .sigma_min = 1e-9,
        .warmup = 100,
        .mode = DETECT_BOTH,
    };
}

static int cusum_check(const union detect_params *u)
{
    const struct cusum_params *p = &u->cusum;
    int ok = isfinite(p->k) && p->k >= 0 && isfinite(p->h) && p->h > 0 &&
             (isnan(p->mean) || isfinite(p->mean)) &&
             (isnan(p->sigma) || (isfinite(p->sigma) && p->sigma > 0)) && isfinite(p->sigma_min) &&
             p->sigma_min > 0 && p->warmup >= 2 &&
             (p->mode == DETECT_BOTH || p->mode == DETECT_UP || p->mode == DETECT_DOWN);
    return ok ? 0 : -EINVAL;
}

/* "auto" asks for the value to be estimated over the warm-up. */
static int parse_or_auto(const char *s, double *out)
{
    if (strcmp(s, "auto") == 0) {
        *out = NAN;
        return 0;
    }
    return detect_parse_double(s, out);
}

static int cusum_set(union detect_params *u, const char *key, const char *value)
{
    struct cusum_params p = u->cusum;
    int rc;
    if (strcmp(key, "k") == 0) {
        rc = detect_parse_double(value, &p.k);
    } else if (strcmp(key, "h") == 0) {
        rc = detect_parse_double(value, &p.h);
    } else if (strcmp(key, "mean") == 0) {
        rc = parse_or_auto(value, &p.mean);
    } else if (strcmp(key, "sigma") == 0) {
        rc = parse_or_auto(value, &p.sigma);
    } else if (strcmp(key, "sigma_min") == 0) {
        rc = detect_parse_double(value, &p.sigma_min);
    } else if (strcmp(key, "warmup") == 0) {
        rc = detect_parse_u32(value, &p.warmup);
    } else if (strcmp(key, "mode") == 0) {
        rc = detect_parse_mode(value, &p.mode);
    } else {
        return -ENOENT;
    }
    union detect_params next = {.cusum = p};
    if (rc || cusum_check(&next)) {
        return -EINVAL;
    }
    u->cusum = p;
    return 0;
}

static size_t cusum_size(const union detect_params *u)
{
    return cusum_check(u) ? 0 : sizeof(struct cusum);
}

/* Fix the baseline from what is given and what the warm-up estimated. */
static void cusum_freeze(struct cusum *c)
{
    c->mu = isnan(c->p.mean) ? c->wmean : c->p.mean;
    double sigma = c->p.sigma;
    if (isnan(sigma)) {
        sigma = sqrt(c->wm2 / (double)(c->learned - 1));
        sigma = sigma > c->p.sigma_min ? sigma : c->p.sigma_min;
    }
    c->inv_sigma = 1.0 / sigma;
    c->learning = 0;
}

/* Clear the sums and counters; learn the baseline again unless it is given in full. */
static void cusum_restart(struct cusum *c)
{
    c->sp = 0.0;
    c->sm = 0.0;
    c->n = 0;
    c->fired = 0;
    if (isnan(c->p.mean) || isnan(c->p.sigma)) {
        c->wmean = 0.0;
        c->wm2 = 0.0;
        c->learned = 0;
        c->learning = 1;
        c->mu = NAN;
    } else {
        c->learned = 0;
        cusum_freeze(c);
    }
}

static int cusum_init(void *state, const union detect_params *u)
{
    if (cusum_check(u)) {
        return -EINVAL;
    }
    struct cusum *c = state;
    memset(c, 0, sizeof *c);
    c->p = u->cusum;
    c->h_up = c->p.mode == DETECT_DOWN ? INFINITY : c->p.h;
    c->h_down = c->p.mode == DETECT_UP ? INFINITY : c->p.h;
    cusum_restart(c);
    return 0;
}

static void cusum_learn(struct cusum *c, double x)
{
    c->learned++;
    double d = x - c->wmean;
    c->wmean += d / (double)c->learned;
    c->wm2 += d * (x - c->wmean);
    if (c->learned == c->p.warmup) {
        cusum_freeze(c);
    }
}

static int cusum_update(void *state, double x)
{
    struct cusum *c = state;
    if (!isfinite(x)) {
        return -EINVAL;
    }
    if (c->fired) {
        cusum_restart(c);
    }
    c->n++;
    if (c->learning) {
        /* The sample that completes the warm-up is scored too, as river's CUSUM does. */
        cusum_learn(c, x);
        if (c->learning) {
            return 0;
        }
    }
    double z = (x - c->mu) * c->inv_sigma;
    double sp = c->sp + z - c->p.k;
    double sm = c->sm - z - c->p.k;
    c->sp = sp > 0.0 ? sp : 0.0;
    c->sm = sm > 0.0 ? sm : 0.0;
    c->fired = (c->sp > c->h_up) | (c->sm > c->h_down);
    return c->fired;
}

static void cusum_reset(void *state)
{
    cusum_restart(state);
}

static void cusum_read(const void *state, struct detect_reading *out)
{
    const struct cusum *c = state;
    double up = c->p.mode == DETECT_DOWN ? 0.0 : c->sp;
    double down = c->p.mode == DETECT_UP ? 0.0 : c->sm;
    out->stat = up > down ? up : down;
    out->threshold = c->p.h;
    out->level = c->learning ? NAN : c->mu;
    out->n = c->n;
}

const struct detect_ops detect_cusum = {
    .name = "cusum",
    .defaults = cusum_defaults,
    .set = cusum_set,
    .check = cusum_check,
    .size = cusum_size,
    .init = cusum_init,
    .update = cusum_update,
    .reset = cusum_reset,
    .read = cusum_read,
};

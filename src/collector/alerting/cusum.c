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
 *
 * The robust baselines (baseline=robust or track, what the collector's drift units use) do not
 * depend on which samples fall in the warm-up: the warm-up only starts the baseline (median and
 * 1.4826 MAD, found by quickselect in place), and every later in-control sample refines it once
 * it is `delay` samples old (a stochastic-approximation Huber M-estimate of level and scale with
 * gain 1/n, floored at 1/window; `track` floors the gain at ln 2 / halflife instead, so the
 * baseline follows a slow swing). A sample still in the delay line when an alarm fires is dropped, so the change
 * being detected never teaches the baseline. z is clipped at `clip` sigmas, so one outlier
 * adds at most clip - k to a sum; an optional third sum watches the spread (E min(|z|, clip)
 * rising). After an alarm the detector stays out of control, with the sums capped at h and the
 * baseline kept, until the sum that fired is back at 0: one alarm per change.
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
    /* The robust baseline (p.baseline != CUSUM_FROZEN); data[] holds the warm-up buffer
     * (p.warmup samples), its scratch copy (p.warmup) and the delay ring (p.delay samples). */
    int out;           /* out of control since an alarm */
    int side;          /* what fired: +1 rise, -1 fall, +2 spread */
    double sigma;      /* robust scale */
    double sv;         /* spread CUSUM */
    double m_c, s_c;   /* mean and sd of min(|Z|, clip) for a standard normal Z */
    double e1, e2, ea; /* in-control E zc, E zc^2, E |zc| of the clipped scores: they
                          standardise the sums whatever the distribution (heavy tails,
                          discrete scores) */
    uint64_t base_n;   /* samples behind the baseline */
    uint64_t out_n;    /* samples since the alarm */
    uint64_t len[3];   /* samples since S+, S-, the spread sum were last 0 */
    double sum[3];     /* their sum of x */
    uint32_t d_head, d_len;
    double data[];
};

static int robust(const struct cusum_params *p)
{
    return p->baseline != CUSUM_FROZEN;
}

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
        .baseline = CUSUM_FROZEN,
        .clip = 3.0,
        .window = 1000,
        .halflife = 50,
        .delay = 64,
        .scale_h = 0.0,
        .relearn = 0,
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
    if (ok && robust(p)) {
        ok = p->baseline <= CUSUM_TRACK && isfinite(p->clip) && p->clip > p->k && p->clip >= 1 &&
             p->warmup >= 5 && p->warmup <= 4096 && p->window >= p->warmup && p->halflife >= 2 &&
             p->delay >= 1 && p->delay <= 1024 && isfinite(p->scale_h) && p->scale_h >= 0;
    }
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
    } else if (strcmp(key, "baseline") == 0) {
        rc = 0;
        if (strcmp(value, "frozen") == 0) {
            p.baseline = CUSUM_FROZEN;
        } else if (strcmp(value, "robust") == 0) {
            p.baseline = CUSUM_ROBUST;
        } else if (strcmp(value, "track") == 0) {
            p.baseline = CUSUM_TRACK;
        } else {
            rc = -EINVAL;
        }
    } else if (strcmp(key, "clip") == 0) {
        rc = detect_parse_double(value, &p.clip);
    } else if (strcmp(key, "window") == 0) {
        rc = detect_parse_u32(value, &p.window);
    } else if (strcmp(key, "halflife") == 0) {
        rc = detect_parse_u32(value, &p.halflife);
    } else if (strcmp(key, "delay") == 0) {
        rc = detect_parse_u32(value, &p.delay);
    } else if (strcmp(key, "scale_h") == 0) {
        rc = detect_parse_double(value, &p.scale_h);
    } else if (strcmp(key, "relearn") == 0) {
        rc = detect_parse_u32(value, &p.relearn);
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
    if (cusum_check(u)) {
        return 0;
    }
    if (!robust(&u->cusum)) {
        return sizeof(struct cusum);
    }
    return sizeof(struct cusum) + ((size_t)2 * u->cusum.warmup + u->cusum.delay) * sizeof(double);
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
    c->out = 0;
    c->side = 0;
    c->sv = 0.0;
    c->base_n = 0;
    c->out_n = 0;
    c->d_head = c->d_len = 0;
    memset(c->len, 0, sizeof c->len);
    memset(c->sum, 0, sizeof c->sum);
    if (robust(&c->p)) {
        c->learned = 0;
        c->learning = 1;
        c->mu = NAN;
    } else if (isnan(c->p.mean) || isnan(c->p.sigma)) {
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
    /* E min(|Z|, c) and its standard deviation, for the scale estimate and the spread sum. */
    double cl = c->p.clip, q = 0.5 * erfc(cl / sqrt(2.0)), phi = exp(-cl * cl / 2) / sqrt(2 * M_PI);
    c->m_c = sqrt(2 / M_PI) * (1 - exp(-cl * cl / 2)) + 2 * cl * q;
    double m2 = 1 - 2 * q - 2 * cl * phi + 2 * cl * cl * q;
    c->s_c = sqrt(m2 - c->m_c * c->m_c);
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

/* Heapsort of v[0..n) in place: the fallback that bounds select_kth's worst case. */
static void sift_down(double *v, int64_t root, int64_t n)
{
    for (int64_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && v[child] < v[child + 1]) {
            child++;
        }
        if (!(v[root] < v[child])) {
            return;
        }
        double t = v[root];
        v[root] = v[child];
        v[child] = t;
    }
}

static void heap_sort(double *v, int64_t n)
{
    for (int64_t i = n / 2 - 1; i >= 0; i--) {
        sift_down(v, i, n);
    }
    for (int64_t end = n - 1; end > 0; end--) {
        double t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end);
    }
}

/* The k-th smallest of v[0..n) (0-based), by quickselect in place: no allocation. Values
 * arranged against the middle pivot (an agent controls its metrics and latencies) would make
 * quickselect quadratic, a millisecond per sample at a window of 1024: after 2 log2(n) + 4
 * rounds that did not narrow the range enough, what is left is heapsorted, so a median costs
 * O(n log n) at worst (introselect's idea). detect_select_kth takes the number of rounds (the
 * tests force the fallback at every point with small ones). */
double detect_select_kth(double *v, uint32_t n, uint32_t kth, int rounds)
{
    int64_t lo = 0, hi = (int64_t)n - 1, k = kth;
    while (lo < hi) {
        if (rounds-- == 0) {
            heap_sort(v + lo, hi - lo + 1);
            break;
        }
        double pivot = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) { /* Hoare's partition: equal keys split evenly */
            while (v[i] < pivot) {
                i++;
            }
            while (v[j] > pivot) {
                j--;
            }
            if (i <= j) {
                double t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j) {
            hi = j;
        } else if (k >= i) {
            lo = i;
        } else {
            break;
        }
    }
    return v[k];
}

static double select_kth(double *v, uint32_t n, uint32_t kth)
{
    int rounds = 4;
    for (uint32_t m = n; m > 1; m >>= 1) {
        rounds += 2;
    }
    return detect_select_kth(v, n, kth, rounds);
}

static double median_of(double *v, uint32_t n)
{
    double hi = select_kth(v, n, n / 2);
    if (n % 2) {
        return hi;
    }
    double lo = select_kth(v, n, n / 2 - 1);
    return (lo + hi) / 2;
}

double detect_median(double *v, uint32_t n)
{
    return n ? median_of(v, n) : NAN;
}

/* Start the robust baseline from the warm-up: median, 1.4826 MAD (or the standard deviation
 * when more than half the samples are equal), floored at sigma_min. */
static void robust_start(struct cusum *c)
{
    uint32_t n = c->p.warmup;
    double *v = c->data;
    double mean = 0, m2 = 0;
    for (uint32_t i = 0; i < n; i++) {
        double d = v[i] - mean;
        mean += d / (i + 1);
        m2 += d * (v[i] - mean);
    }
    double *dev = v + n; /* scratch: the warm-up itself stays for the M-estimate below */
    memcpy(dev, v, n * sizeof *v);
    double med = median_of(dev, n);
    for (uint32_t i = 0; i < n; i++) {
        dev[i] = fabs(v[i] - med);
    }
    double sigma = 1.482602218505602 * median_of(dev, n);
    if (!(sigma > 0)) {
        sigma = sqrt(m2 / (n - 1));
    }
    sigma = isnan(c->p.sigma) ? (sigma > c->p.sigma_min ? sigma : c->p.sigma_min) : c->p.sigma;
    /* From the median to the Huber M-estimate of level (what the refinement converges to):
     * on a lumpy or skewed stream the two differ, and the sums would see the difference. */
    double mu = med;
    for (int it = 0; it < 20 && isnan(c->p.mean); it++) {
        double s = 0;
        for (uint32_t i = 0; i < n; i++) {
            double z = (v[i] - mu) / sigma;
            s += z > c->p.clip ? c->p.clip : z < -c->p.clip ? -c->p.clip : z;
        }
        mu += sigma * s / n;
    }
    c->mu = isnan(c->p.mean) ? mu : c->p.mean;
    c->sigma = sigma;
    for (uint32_t i = 0; i < n; i++) {
        v[i] = fabs(v[i] - c->mu);
    }
    c->base_n = n;
    c->learning = 0;
    /* The clipped scores of the warm-up (v holds |x - median| in some order). */
    double a = 0, a2 = 0;
    for (uint32_t i = 0; i < n; i++) {
        double z = v[i] / c->sigma;
        z = z < c->p.clip ? z : c->p.clip;
        a += z;
        a2 += z * z;
    }
    c->e1 = 0;
    c->ea = a / n;
    c->e2 = a2 / n;
    /* Not less than a standard normal's: a short or lumpy warm-up must not shrink the unit. */
    c->e2 = c->e2 > c->s_c * c->s_c + c->m_c * c->m_c ? c->e2 : c->s_c * c->s_c + c->m_c * c->m_c;
}

/* One in-control sample, `delay` samples old, refines level and scale. */
static void robust_refine(struct cusum *c, double y)
{
    c->base_n++;
    uint64_t nb = c->base_n;
    double g;
    if (c->p.baseline == CUSUM_TRACK) {
        double floor = 0.6931471805599453 / c->p.halflife;
        g = 1.0 / (double)nb > floor ? 1.0 / (double)nb : floor;
    } else {
        g = 1.0 / (double)(nb < c->p.window ? nb : c->p.window);
    }
    double z = (y - c->mu) / c->sigma;
    double psi = z > c->p.clip ? c->p.clip : z < -c->p.clip ? -c->p.clip : z;
    if (isnan(c->p.mean)) {
        c->mu += g * c->sigma * psi;
    }
    c->e1 += g * (psi - c->e1);
    c->e2 += g * (psi * psi - c->e2);
    c->ea += g * (fabs(psi) - c->ea);
    if (isnan(c->p.sigma)) {
        double r = fabs(psi) / c->m_c - 1;
        c->sigma *= exp(g * (r > 2 ? 2 : r));
        c->sigma = c->sigma > c->p.sigma_min ? c->sigma : c->p.sigma_min;
    }
}

/* The sums since each was last 0 give the change point and the recent mean. */
static void track_len(struct cusum *c, int i, double s, double x)
{
    if (s > 0) {
        c->len[i]++;
        c->sum[i] += x;
    } else {
        c->len[i] = 0;
        c->sum[i] = 0;
    }
}

#define U_CAP 4.0

static int robust_update(struct cusum *c, double x)
{
    c->n++;
    if (c->learning) {
        c->data[c->learned++] = x;
        if (c->learned == c->p.warmup) {
            robust_start(c);
        }
        return 0;
    }
    double *ring = c->data + 2 * c->p.warmup;
    double z = (x - c->mu) / c->sigma;
    double zc = z > c->p.clip ? c->p.clip : z < -c->p.clip ? -c->p.clip : z;
    /* Standardised increments, floored in variance (a two-valued stream has almost no spread
     * of |z|) and capped at U_CAP: a skewed stream (rare events, 0/1 values) must not reach h
     * with a couple of samples, as its sums' tails are far heavier than a Gaussian's. */
    double var = c->e2 - c->e1 * c->e1, vara = c->e2 - c->ea * c->ea;
    double floor = 0.05 * c->e2 > 1e-6 ? 0.05 * c->e2 : 1e-6;
    double u = (zc - c->e1) / sqrt(var > floor ? var : floor);
    double w = (fabs(zc) - c->ea) / sqrt(vara > floor ? vara : floor);
    u = u > U_CAP ? U_CAP : u < -U_CAP ? -U_CAP : u;
    w = w > U_CAP ? U_CAP : w < -U_CAP ? -U_CAP : w;
    double sp = c->sp + u - c->p.k, sm = c->sm - u - c->p.k;
    double sv = c->sv + w - 0.5;
    c->sp = sp > 0 ? sp : 0;
    c->sm = sm > 0 ? sm : 0;
    c->sv = sv > 0 ? sv : 0;
    track_len(c, 0, c->sp, x);
    track_len(c, 1, c->sm, x);
    track_len(c, 2, c->sv, x);
    if (c->out) {
        c->out_n++;
        c->sp = c->sp < c->p.h ? c->sp : c->p.h;
        c->sm = c->sm < c->p.h ? c->sm : c->p.h;
        c->sv = c->sv < c->p.scale_h ? c->sv : c->p.scale_h;
        double fired = c->side == 1 ? c->sp : c->side == -1 ? c->sm : c->sv;
        if (fired <= 0) {
            c->out = 0; /* back in control: the baseline learns again */
        } else if (c->p.relearn && c->out_n >= c->p.relearn) {
            cusum_restart(c); /* the new level is the new normal */
        }
        return 0;
    }
    int up = c->sp > c->h_up, down = c->sm > c->h_down;
    int spread = c->p.scale_h > 0 && c->sv > c->p.scale_h;
    if (up || down || spread) {
        c->out = 1;
        c->out_n = 0;
        c->side = up ? 1 : down ? -1 : 2;
        c->d_len = 0; /* what the delay line holds may be the change itself */
        return 1;
    }
    if (c->d_len == c->p.delay) {
        double y = ring[c->d_head];
        ring[c->d_head] = x;
        c->d_head = (c->d_head + 1) % c->p.delay;
        /* Only while clearly in control: a sum half way to its alarm may be a change starting,
         * and the baseline must not learn it. A tracking baseline always learns: it must follow
         * the swing that raised the sum. */
        int calm = c->sp < c->p.h / 2 && c->sm < c->p.h / 2 &&
                   (c->p.scale_h == 0 || c->sv < c->p.scale_h / 2);
        if (calm || c->p.baseline == CUSUM_TRACK) {
            robust_refine(c, y);
        }
    } else {
        ring[(c->d_head + c->d_len++) % c->p.delay] = x;
    }
    return 0;
}

static int cusum_update(void *state, double x)
{
    struct cusum *c = state;
    if (!isfinite(x)) {
        return -EINVAL;
    }
    if (robust(&c->p)) {
        return robust_update(c, x);
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
    out->active = 0;
    out->direction = 0;
    out->start_back = 0;
    out->base_mean = out->level;
    out->base_sigma = c->learning ? NAN : robust(&c->p) ? c->sigma : 1.0 / c->inv_sigma;
    out->base_n = robust(&c->p) ? c->base_n : c->learned;
    out->recent_mean = NAN;
    out->recent_n = 0;
    if (!robust(&c->p)) {
        return;
    }
    out->level = c->learning ? NAN : c->mu;
    out->base_mean = out->level;
    out->active = c->out;
    int side = c->out ? c->side : up >= down ? 1 : -1;
    if (c->p.mode == DETECT_DOWN && !c->out) {
        side = -1;
    }
    int i = side == 1 ? 0 : side == -1 ? 1 : 2;
    out->direction = side;
    out->start_back = c->len[i];
    out->recent_n = c->len[i];
    out->recent_mean = c->len[i] ? c->sum[i] / (double)c->len[i] : NAN;
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

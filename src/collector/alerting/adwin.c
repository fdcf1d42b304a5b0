/*
 * adwin.c - ADWIN, adaptive windowing (Bifet and Gavalda, "Learning from time-changing
 * data with adaptive windowing", SDM 2007), in its ADWIN2 form with an exponential histogram,
 * following river.drift.ADWIN and its defaults so that the documented stream first fires at
 * index 1023 here as there (tests/unit/test_detect.c).
 *
 * The window is summarised by buckets of 1, 2, 4, ... samples: row r holds up to max_buckets
 * buckets of 2^r samples each, oldest first, and each bucket keeps its sum and its sum of
 * squared deviations. When a row reaches max_buckets + 1 its two oldest buckets merge into one
 * of the next row. Every `clock` samples (once the window holds more than grace_period), the
 * window is cut between every pair of adjacent buckets into an older part W0 and a newer part
 * W1; a cut where both parts hold at least min_window_length samples and
 *
 *     |mean(W0) - mean(W1)| > sqrt(2 m var dd) + 2/3 dd m,
 *     m = 1/(n0 - mwl + 1) + 1/(n1 - mwl + 1),  dd = ln(2 ln(W) / delta),  var = variance of W
 *
 * is a change. As in river, the detector then starts afresh at its next sample (river's ADWIN
 * resets its whole window after a detection); so a scan can stop at the first significant cut
 * instead of shrinking the window cut by cut, which gives the same alarms.
 *
 * INVARIANTS
 * - width = sum over rows r of count[r] * 2^r; total and variance describe exactly those samples.
 * - count[r] <= max_buckets after every update; only row rows-1 can be the oldest data.
 * - rows <= max_rows, fixed at init from max_window: when the last row would overflow, its
 *   oldest bucket is dropped instead (and the sums recomputed from the buckets), so width <=
 *   max_buckets * (2^max_rows - 1) and the state never grows. Memory: a 152-byte header plus
 *   max_rows * (max_buckets + 1) * 16 bytes (3032 bytes by default).
 * - Time: an insert is amortised O(1) (a merge cascade touches O(max_rows) rows at worst); a
 *   test visits at most max_buckets * rows cuts and runs every `clock` samples, so the amortised
 *   cost per sample is O(max_buckets * log2(width) / clock).
 */
#include "collector/alerting/detect.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

/* Rows of 2^0 .. 2^61 samples: more than any stream can fill. */
#define ADWIN_MAX_ROWS 62
#define ADWIN_MAX_BUCKETS 64

struct adwin_bucket {
    double total; /* sum of the samples */
    double var;   /* sum of their squared deviations from their mean */
};

struct adwin {
    struct adwin_params p;
    double width;       /* samples in the window (a double, as every formula uses it) */
    double total;       /* their sum */
    double variance;    /* their sum of squared deviations from the window's mean */
    double last_ratio;  /* largest |mean difference| / bound over the cuts of the last test */
    uint32_t countdown; /* samples until the next test (a modulo per sample costs more) */
    uint32_t rows;      /* rows in use */
    uint32_t max_rows;  /* rows the storage holds */
    uint32_t slots;     /* max_buckets + 1: room for the bucket that triggers a merge */
    int fired;          /* 1 after an alarm: start afresh at the next update */
    /* The split of the last alarm, for the explanation: the older part (n0 samples, sum u0,
     * sum of squared deviations v0) is the baseline, the newer (n1, u1) the change. */
    double cut_n0, cut_u0, cut_v0, cut_n1, cut_u1;
    uint8_t count[ADWIN_MAX_ROWS]; /* buckets in each row */
    struct adwin_bucket b[];       /* row r at b[r * slots], oldest first */
};

static void adwin_defaults(union detect_params *u)
{
    u->adwin = (struct adwin_params){
        .delta = 0.002,
        .clock = 32,
        .max_buckets = 5,
        .min_window_length = 5,
        .grace_period = 10,
        .max_window = (uint64_t)1 << 32,
    };
}

static int adwin_check(const union detect_params *u)
{
    const struct adwin_params *p = &u->adwin;
    int ok = p->delta > 0 && p->delta < 1 && p->clock >= 1 && p->max_buckets >= 1 &&
             p->max_buckets <= ADWIN_MAX_BUCKETS && p->min_window_length >= 1 && p->max_window >= 1;
    return ok ? 0 : -EINVAL;
}

static int adwin_set(union detect_params *u, const char *key, const char *value)
{
    struct adwin_params p = u->adwin;
    int rc;
    if (strcmp(key, "delta") == 0) {
        rc = detect_parse_double(value, &p.delta);
    } else if (strcmp(key, "clock") == 0) {
        rc = detect_parse_u32(value, &p.clock);
    } else if (strcmp(key, "max_buckets") == 0) {
        rc = detect_parse_u32(value, &p.max_buckets);
    } else if (strcmp(key, "min_window_length") == 0) {
        rc = detect_parse_u32(value, &p.min_window_length);
    } else if (strcmp(key, "grace_period") == 0) {
        rc = detect_parse_u32(value, &p.grace_period);
    } else if (strcmp(key, "max_window") == 0) {
        rc = detect_parse_u64(value, &p.max_window);
    } else {
        return -ENOENT;
    }
    union detect_params next = {.adwin = p};
    if (rc || adwin_check(&next)) {
        return -EINVAL;
    }
    u->adwin = p;
    return 0;
}

/* The fewest rows whose full capacity, max_buckets * (2^rows - 1), reaches max_window. */
static uint32_t adwin_rows_for(const struct adwin_params *p)
{
    uint64_t cap = p->max_buckets;
    uint32_t rows = 1;
    while (cap < p->max_window && rows < ADWIN_MAX_ROWS) {
        if (cap > (UINT64_MAX - p->max_buckets) / 2) {
            break;
        }
        cap = 2 * cap + p->max_buckets;
        rows++;
    }
    return rows;
}

static size_t adwin_size(const union detect_params *u)
{
    if (adwin_check(u)) {
        return 0;
    }
    size_t buckets = (size_t)adwin_rows_for(&u->adwin) * (u->adwin.max_buckets + 1);
    return offsetof(struct adwin, b) + buckets * sizeof(struct adwin_bucket);
}

static void adwin_restart(struct adwin *a)
{
    a->width = 0.0;
    a->total = 0.0;
    a->variance = 0.0;
    a->last_ratio = 0.0;
    a->countdown = a->p.clock;
    a->rows = 0;
    a->fired = 0;
    a->cut_n0 = a->cut_u0 = a->cut_v0 = a->cut_n1 = a->cut_u1 = 0.0;
    memset(a->count, 0, sizeof a->count);
}

static int adwin_init(void *state, const union detect_params *u)
{
    if (adwin_check(u)) {
        return -EINVAL;
    }
    struct adwin *a = state;
    a->p = u->adwin;
    a->max_rows = adwin_rows_for(&a->p);
    a->slots = a->p.max_buckets + 1;
    adwin_restart(a);
    return 0;
}

static struct adwin_bucket *adwin_row(struct adwin *a, uint32_t r)
{
    return &a->b[(size_t)r * a->slots];
}

/* Remove the n oldest buckets of row r, keeping the rest in order. */
static void adwin_shift(struct adwin *a, uint32_t r, uint32_t n)
{
    struct adwin_bucket *row = adwin_row(a, r);
    a->count[r] = (uint8_t)(a->count[r] - n);
    memmove(row, row + n, a->count[r] * sizeof *row);
}

/* Recompute width, total and variance from the buckets, oldest first, combining groups with
 * the pairwise formula (Chan, Golub and LeVeque). Subtracting a dropped bucket instead would let
 * rounding errors build up over a long stream, and could even leave a negative variance. */
static void adwin_recount(struct adwin *a)
{
    double n = 0.0, total = 0.0, var = 0.0;
    for (uint32_t r = a->rows; r-- > 0;) {
        const struct adwin_bucket *row = adwin_row(a, r);
        double size = ldexp(1.0, (int)r);
        for (uint32_t k = 0; k < a->count[r]; k++) {
            double d = n > 0.0 ? total / n - row[k].total / size : 0.0;
            var += row[k].var + n * size * d * d / (n + size);
            n += size;
            total += row[k].total;
        }
    }
    a->width = n;
    a->total = total;
    a->variance = var;
}

/* Drop the oldest bucket of the window (row rows-1, slot 0). This happens once per
 * 2^(rows-1) samples at most, so the O(rows * max_buckets) recount is cheap. */
static void adwin_drop_oldest(struct adwin *a)
{
    uint32_t r = a->rows - 1;
    adwin_shift(a, r, 1);
    if (a->count[r] == 0) {
        a->rows--;
    }
    adwin_recount(a);
}

/* Merge the two oldest buckets of every row that overflowed into one bucket of the next row;
 * a merge can overflow the next row, hence the cascade. */
static void adwin_compress(struct adwin *a)
{
    for (uint32_t r = 0; r < a->rows && a->count[r] > a->p.max_buckets; r++) {
        if (r + 1 == a->max_rows) {
            adwin_drop_oldest(a);
            return;
        }
        struct adwin_bucket *row = adwin_row(a, r);
        double size = ldexp(1.0, (int)r);
        double d = row[0].total / size - row[1].total / size;
        /* Two buckets of n samples each: n * n / (n + n) * d^2 = n / 2 * d^2. */
        struct adwin_bucket merged = {
            .total = row[0].total + row[1].total,
            .var = row[0].var + row[1].var + size * 0.5 * d * d,
        };
        if (r + 1 == a->rows) {
            a->rows++;
        }
        adwin_row(a, r + 1)[a->count[r + 1]++] = merged;
        adwin_shift(a, r, 2);
    }
}

static void adwin_insert(struct adwin *a, double x)
{
    if (a->rows == 0) {
        a->rows = 1;
    }
    adwin_row(a, 0)[a->count[0]++] = (struct adwin_bucket){.total = x, .var = 0.0};
    a->width += 1.0;
    if (a->width > 1.0) {
        double d = x - a->total / (a->width - 1.0);
        a->variance += (a->width - 1.0) * d * d / a->width;
    }
    a->total += x;
    adwin_compress(a);
}

/* Whether the means of W0 (n0 samples summing to u0) and W1 differ by more than the bound;
 * also raises last_ratio. dd is ln(2 ln(W) / delta), var_w the variance of the window. */
static int adwin_cut(struct adwin *a, double n0, double u0, double n1, double u1, double dd,
                     double var_w)
{
    double mwl = (double)a->p.min_window_length;
    double m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0);
    double eps = sqrt(2.0 * m_recip * var_w * dd) + 2.0 / 3.0 * dd * m_recip;
    double diff = fabs(u0 / n0 - u1 / n1);
    double ratio = diff / eps;
    if (ratio > a->last_ratio) {
        a->last_ratio = ratio;
    }
    return diff > eps;
}

/* Test every cut from the oldest bucket to the newest; 1 at the first significant one. */
static int adwin_test(struct adwin *a)
{
    double n0 = 0.0, u0 = 0.0, n1 = a->width, u1 = a->total;
    double dd = log(2.0 * log(a->width) / a->p.delta);
    double var_w = a->variance / a->width;
    double mwl = (double)a->p.min_window_length;
    a->last_ratio = 0.0;
    for (uint32_t r = a->rows; r-- > 0;) {
        const struct adwin_bucket *row = adwin_row(a, r);
        double size = ldexp(1.0, (int)r);
        for (uint32_t k = 0; k < a->count[r]; k++) {
            n0 += size;
            n1 -= size;
            u0 += row[k].total;
            u1 -= row[k].total;
            if (r == 0 && k + 1 == a->count[0]) {
                return 0; /* W1 would be empty */
            }
            if (n0 >= mwl && n1 >= mwl && adwin_cut(a, n0, u0, n1, u1, dd, var_w)) {
                return 1;
            }
        }
    }
    return 0;
}

/* After an alarm, for the explanation only: the split whose means differ most in units of
 * the bound (the first significant split, where the test stops, may still hold much of the
 * old level in its newer part). Runs once per alarm. */
static void adwin_explain(struct adwin *a)
{
    double n0 = 0.0, u0 = 0.0, v0 = 0.0, n1 = a->width, u1 = a->total, best = -1.0;
    double mwl = (double)a->p.min_window_length;
    double var_w = a->variance / a->width;
    for (uint32_t r = a->rows; r-- > 0;) {
        const struct adwin_bucket *row = adwin_row(a, r);
        double size = ldexp(1.0, (int)r);
        for (uint32_t k = 0; k < a->count[r]; k++) {
            /* v0 grows by the pairwise formula, as in adwin_recount. */
            double d = n0 > 0.0 ? u0 / n0 - row[k].total / size : 0.0;
            v0 += row[k].var + n0 * size * d * d / (n0 + size);
            n0 += size;
            n1 -= size;
            u0 += row[k].total;
            u1 -= row[k].total;
            if (n1 < mwl) {
                return;
            }
            if (n0 < mwl) {
                continue;
            }
            double m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0);
            double score = fabs(u0 / n0 - u1 / n1) / sqrt(m_recip * var_w);
            if (score > best) {
                best = score;
                a->cut_n0 = n0;
                a->cut_u0 = u0;
                a->cut_v0 = v0;
                a->cut_n1 = n1;
                a->cut_u1 = u1;
            }
        }
    }
}

static int adwin_update(void *state, double x)
{
    struct adwin *a = state;
    if (!isfinite(x)) {
        return -EINVAL;
    }
    if (a->fired) {
        adwin_restart(a);
    }
    adwin_insert(a, x);
    if (--a->countdown != 0) {
        return 0;
    }
    a->countdown = a->p.clock;
    if (a->width <= (double)a->p.grace_period) {
        return 0;
    }
    a->fired = adwin_test(a);
    if (a->fired) {
        adwin_explain(a);
    }
    return a->fired;
}

static void adwin_reset(void *state)
{
    adwin_restart(state);
}

static void adwin_read(const void *state, struct detect_reading *out)
{
    const struct adwin *a = state;
    out->stat = a->last_ratio;
    out->threshold = 1.0;
    out->level = a->width > 0 ? a->total / a->width : 0.0;
    out->n = (uint64_t)a->width;
    out->active = 0;
    out->direction = 0;
    out->start_back = 0;
    out->base_mean = out->base_sigma = out->recent_mean = NAN;
    out->base_n = out->recent_n = 0;
    if (!a->fired || a->cut_n0 <= 0.0 || a->cut_n1 <= 0.0) {
        return; /* ADWIN tells where a change was only when it finds one */
    }
    out->base_mean = a->cut_u0 / a->cut_n0;
    out->recent_mean = a->cut_u1 / a->cut_n1;
    out->direction = out->recent_mean >= out->base_mean ? 1 : -1;
    out->base_sigma = a->cut_n0 > 1.0 ? sqrt(a->cut_v0 / (a->cut_n0 - 1.0)) : NAN;
    out->base_n = (uint64_t)a->cut_n0;
    out->recent_n = (uint64_t)a->cut_n1;
    out->start_back = (uint64_t)a->cut_n1;
}

const struct detect_ops detect_adwin = {
    .name = "adwin",
    .defaults = adwin_defaults,
    .set = adwin_set,
    .check = adwin_check,
    .size = adwin_size,
    .init = adwin_init,
    .update = adwin_update,
    .reset = adwin_reset,
    .read = adwin_read,
};

/*
 * detect.h - the interface every scalar change detector of the collector implements, and the
 * parameters of the detectors that exist: two-sided tabular CUSUM ("cusum"), Page-Hinkley
 * ("ph") and ADWIN ("adwin"). docs/detectors.md explains each algorithm and what to set.
 *
 * A detector watches one stream of doubles (one metric of one agent: response confidence, tool
 * latency, ...) and says, sample by sample, whether its distribution has changed. The alerting
 * layer keeps one state per (agent, metric) and drives it through a const ops table, so it can
 * hold any detector by name, as a configuration file names it:
 *
 *     const struct detect_ops *ops = detect_find("ph");
 *     union detect_params p;
 *     ops->defaults(&p);
 *     detect_parse(ops, &p, "threshold=100 delta=0.01");    (or ops->set(&p, key, value))
 *     void *state = aligned storage of ops->size(&p) bytes;  (or detect_new())
 *     ops->init(state, &p);
 *     for each sample: if (ops->update(state, x) == 1) raise an alert;
 *
 * Rules shared by every detector:
 * - The state is caller storage of ops->size(params) bytes, aligned like max_align_t, holding
 *   its own copy of the parameters. update() never allocates, never blocks and runs in bounded
 *   time (ADWIN: amortised, see adwin.c). States are not shared: one thread drives one
 *   state; different states may be driven from different threads.
 * - update() returns 1 when this sample completes a detection, 0 otherwise, and -EINVAL for a
 *   sample that is not finite, which it ignores (one NaN would otherwise poison the sums for
 *   ever). After a detection the detector starts afresh at its next update, as river does, so a
 *   lasting change raises one alarm and not one per sample; read() in between still shows the
 *   statistic that fired.
 * - Parameters are checked by ops->check() and again by ops->init(): -EINVAL when out of range.
 */
#ifndef TT_COLLECTOR_DETECT_H
#define TT_COLLECTOR_DETECT_H

#include <stddef.h>
#include <stdint.h>

/* Which direction of change a one-dimensional detector reports. */
enum detect_mode {
    DETECT_BOTH = 0, /* a rise or a fall of the mean (default) */
    DETECT_UP = 1,   /* a rise only, e.g. latency */
    DETECT_DOWN = 2  /* a fall only, e.g. confidence */
};

/* Two-sided tabular CUSUM on standardised values z = (x - mean) / sigma:
 *   S+ = max(0, S+ + z - k),  S- = max(0, S- - z - k),  alarm when S+ > h or S- > h.
 * When mean or sigma is NAN it is estimated over the first `warmup` samples, then frozen (only
 * the last of them is scored, as in river.drift.CUSUM); after an alarm an estimated baseline is
 * learnt again from the next `warmup` samples, while a given one is kept and only the sums
 * restart. */
/* How CUSUM gets its in-control mean and sigma when they are not given. */
enum cusum_baseline {
    CUSUM_FROZEN = 0, /* textbook: estimated over `warmup` samples, then frozen (default) */
    CUSUM_ROBUST = 1, /* self-starting and robust: median and MAD of the warm-up, then a Huber
                         M-estimate of level and scale refined by every in-control sample once it
                         is `delay` samples old, over a horizon of `window` samples */
    CUSUM_TRACK = 2   /* as robust, with a level of half-life `halflife` refined by every sample:
                         follows slowly varying baselines such as periodic load */
};

struct cusum_params {
    double k;              /* reference value, in sigmas; default 0.5 (tuned to a 1-sigma shift) */
    double h;              /* decision interval, in sigmas; default 5 (in-control ARL 465) */
    double mean;           /* in-control mean; default NAN: estimated over the warm-up */
    double sigma;          /* in-control standard deviation (> 0); default NAN: estimated */
    double sigma_min;      /* floor under an estimated sigma, in stream units; default 1e-9 */
    uint32_t warmup;       /* samples in the baseline when estimating (>= 2); default 100 */
    enum detect_mode mode; /* default DETECT_BOTH */
    /* The robust baseline (CUSUM_ROBUST, CUSUM_TRACK); ignored by CUSUM_FROZEN. There, after an
     * alarm the detector stays out of control (sums capped at h, baseline kept) until the sum
     * that fired falls back to 0, and update() returns 1 only when it enters that state: one
     * alarm per change, however long the change lasts (read().active shows the state). */
    enum cusum_baseline baseline; /* default CUSUM_FROZEN */
    double clip;                  /* Huber clip of z, in sigmas (> k); default 3 */
    uint32_t window;   /* horizon of the robust baseline, samples (>= warmup); default 1000 */
    uint32_t halflife; /* CUSUM_TRACK: half-life of the level, samples; default 50 */
    uint32_t delay;    /* samples held back before they refine the baseline (1..1024); 64 */
    double scale_h;    /* threshold of the spread CUSUM (rise of sigma); 0 = off; default 0 */
    uint32_t relearn;  /* out of control this many samples: accept the new level (0 = never) */
};

/* Page-Hinkley as river implements it (river.drift.PageHinkley, defaults included): with the
 * running mean m of all samples since the last reset,
 *   U = alpha*U + (x - m) - delta,  L = alpha*L + (x - m) + delta,
 * alarm when U - min(U) > threshold (a rise) or max(L) - L > threshold (a fall), once at least
 * min_instances samples were seen. delta and threshold are in the stream's units: river's
 * threshold 50 suits a 0/1 error stream; for a stream of standard deviation sigma use about
 * delta = 0.01 sigma and threshold = 100 sigma (docs/detectors.md, measured). */
struct ph_params {
    uint32_t min_instances; /* samples before the first test (>= 1); default 30 */
    double delta;           /* tolerated drift per sample (>= 0); default 0.005 */
    double threshold;       /* lambda (> 0); default 50 */
    double alpha;           /* forgetting factor in (0, 1]; default 1 - 0.0001 */
    enum detect_mode mode;  /* default DETECT_BOTH */
};

/* ADWIN (Bifet and Gavalda, 2007) as river implements it (river.drift.ADWIN, defaults
 * included): a window kept as an exponential histogram of at most max_buckets buckets per size
 * 1, 2, 4, ...; every `clock` samples, once the window holds more than grace_period samples,
 * every split into an older and a newer part of at least min_window_length samples each is
 * tested, and a split whose means differ by more than the Hoeffding/Bernstein bound for
 * confidence delta is a change. The window never holds more than max_window samples (rounded
 * up to max_buckets * (2^rows - 1)): past that the oldest bucket is dropped, which fixes the
 * state size at ops->size() and makes it O(max_buckets * log2(max_window)). */
struct adwin_params {
    double delta;               /* confidence, in (0, 1); default 0.002 */
    uint32_t clock;             /* test every this many samples (>= 1); default 32 */
    uint32_t max_buckets;       /* buckets per size before merging (1..64); default 5 */
    uint32_t min_window_length; /* samples in each side of a split (>= 1); default 5 */
    uint32_t grace_period;      /* samples before the first test; default 10 */
    uint64_t max_window;        /* bound on the window, samples (>= max_buckets); default 2^32 */
};

union detect_params {
    struct cusum_params cusum;
    struct ph_params ph;
    struct adwin_params adwin;
};

/* What a dashboard shows for one detector state: the test statistic against its threshold
 * (stat > threshold means an alarm; stat / threshold is a fill level), the detector's idea of
 * the stream's current level, and how many samples it holds. */
struct detect_reading {
    double stat;      /* cusum: max(S+, S-) in sigmas; ph: the larger test; adwin: the largest
                         |mean difference| / bound over the splits of the last test */
    double threshold; /* cusum: h; ph: threshold; adwin: 1 */
    double level;     /* cusum: in-control mean (NAN while learning); ph: running mean;
                         adwin: mean of the window */
    uint64_t n;       /* cusum and ph: samples since the last reset; adwin: window width */
    /* What an alert message explains (detectors that cannot tell leave them 0 or NAN): */
    int active;                   /* 1 while out of control after an alarm (robust CUSUM) */
    int direction;                /* +1 the level rose, -1 it fell, +2 the spread rose, 0 unknown */
    uint64_t start_back;          /* estimated change point: this many samples before the last one
                            (1 = the last sample), 0 unknown */
    double base_mean, base_sigma; /* the in-control baseline (NAN unknown) */
    uint64_t base_n;              /* samples behind it */
    double recent_mean;           /* mean since the estimated change point (NAN unknown) */
    uint64_t recent_n;
};

/* One detector. All functions take caller storage and never allocate. */
struct detect_ops {
    const char *name; /* as a configuration file names it: "cusum", "ph", "adwin" */
    /* Fill *p with the documented defaults. */
    void (*defaults)(union detect_params *p);
    /* Set one parameter from text, e.g. ("threshold", "100"), ("mode", "up"), ("mean",
     * "auto"). Returns 0, -ENOENT for an unknown key, -EINVAL for a value that does not parse
     * or is out of range (*p unchanged). */
    int (*set)(union detect_params *p, const char *key, const char *value);
    /* 0 if *p is usable, -EINVAL if not. */
    int (*check)(const union detect_params *p);
    /* Bytes of state for these parameters (0 if they are invalid). */
    size_t (*size)(const union detect_params *p);
    /* Make `state` a fresh detector with a copy of *p. Returns 0 or -EINVAL. */
    int (*init)(void *state, const union detect_params *p);
    /* Feed one sample: 1 change detected, 0 none, -EINVAL sample not finite (ignored). */
    int (*update)(void *state, double x);
    /* Forget everything seen, keep the parameters. */
    void (*reset)(void *state);
    /* The current statistic, for display; does not change the state. */
    void (*read)(const void *state, struct detect_reading *out);
};

extern const struct detect_ops detect_cusum;
extern const struct detect_ops detect_ph;
extern const struct detect_ops detect_adwin;

/* The detector called `name`, or NULL if there is none. */
const struct detect_ops *detect_find(const char *name);

/* Apply a parameter list "key=value key=value" (separated by spaces or commas) on top of *p.
 * Returns 0, or the first error of ops->set() (*p may hold the earlier keys), or -EINVAL for
 * a malformed item or when the result fails ops->check(). */
int detect_parse(const struct detect_ops *ops, union detect_params *p, const char *spec);

/* A heap-allocated state with its ops, for callers that hold one detector at a time. */
struct detector {
    const struct detect_ops *ops;
    max_align_t state[]; /* ops->size() bytes */
};

/* *out = a new detector initialised from *p (or NULL on failure). Returns 0, -EINVAL (bad
 * parameters) or -ENOMEM. Free with detect_free(), which accepts NULL. */
int detect_new(struct detector **out, const struct detect_ops *ops, const union detect_params *p);
void detect_free(struct detector *d);

static inline int detect_update(struct detector *d, double x)
{
    return d->ops->update(d->state, x);
}

/* The median of v[0..n) (NAN for n = 0), reordering v in place (quickselect): no allocation. */
double detect_median(double *v, uint32_t n);
/* The k-th smallest of v[0..n) (reorders v): quickselect for at most `rounds` partitions, then
 * heapsort of what is left, so O(n log n) at worst whatever the values. detect_median uses
 * 2 log2(n) + 4 rounds. */
double detect_select_kth(double *v, uint32_t n, uint32_t kth, int rounds);

/* Parsing helpers shared by the detectors' set() functions. Each returns 0 or -EINVAL, and
 * writes *out only on success. */
int detect_parse_double(const char *s, double *out);
int detect_parse_u32(const char *s, uint32_t *out);
int detect_parse_u64(const char *s, uint64_t *out);
int detect_parse_mode(const char *s, enum detect_mode *out);

#endif

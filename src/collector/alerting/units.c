/*
 * units.c - the detector units of the alerting layer (monitor.h): threshold on response
 * confidence, drift on confidence or tool latency (CUSUM, Page-Hinkley or ADWIN from detect.h
 * after a warm-up), tool error rate, a looping agent, silence, sequence gaps, compliance
 * decisions, non-finite metric samples and spikes from a robust recent level. Every state
 * here starts as zero bytes: the monitor zeroes a new agent's block and nothing else.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "collector/alerting/monitor.h"

static int set_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint32_t x;
    if (detect_parse_u32(v, &x) != 0 || x < lo || x > hi) {
        return -EINVAL;
    }
    *out = x;
    return 0;
}

static int set_double(const char *v, double lo, double hi, double *out)
{
    double x;
    if (detect_parse_double(v, &x) != 0 || !(x >= lo && x <= hi)) {
        return -EINVAL;
    }
    *out = x;
    return 0;
}

static void bstr_copy(char *dst, size_t cap, tt__bstr s)
{
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    if (n) {
        memcpy(dst, s.p, n);
    }
    dst[n] = 0;
}

/* "confidence", "tool_latency", "metric:NAME" or "score:NAME" (NAME as a unit's name). */
static int parse_signal(const char *v, int *signal, char name[MON_NAME_MAX])
{
    const char *n = NULL;
    if (strcmp(v, "confidence") == 0) {
        *signal = DRIFT_CONFIDENCE;
    } else if (strcmp(v, "tool_latency") == 0) {
        *signal = DRIFT_TOOL_LATENCY;
    } else if (strncmp(v, "metric:", 7) == 0) {
        *signal = DRIFT_METRIC;
        n = v + 7;
    } else if (strncmp(v, "score:", 6) == 0) {
        *signal = DRIFT_SCORE;
        n = v + 6;
    } else {
        return -EINVAL;
    }
    if (n && (!*n || strlen(n) >= MON_NAME_MAX)) {
        return -EINVAL;
    }
    snprintf(name, MON_NAME_MAX, "%s", n ? n : "");
    return 0;
}

/* Whether signal s is the one a unit watches. */
static int signal_matches(int signal, const char *name, const struct mon_signal *s)
{
    static const int types[] = {SIG_CONFIDENCE, SIG_TOOL_END, SIG_METRIC, SIG_SCORE};
    if (s->type != types[signal]) {
        return 0;
    }
    if (signal < DRIFT_METRIC) {
        return 1;
    }
    return s->name.n == strlen(name) && memcmp(s->name.p, name, s->name.n) == 0;
}

/* The incident key of a signal: "confidence", "tool_latency", "metric:loss", "score:judge". */
static void signal_key(int signal, const char *name, char *out, size_t cap)
{
    static const char *const kinds[] = {"confidence", "tool_latency", "metric:", "score:"};
    snprintf(out, cap, "%s%s", kinds[signal], name);
}

/* --- threshold: a value below min or above max ------------------------------------------ */

/* A confidence bound is in [0, 1]; give `signal` before min or max for other signals. */
static int threshold_set(struct unit *u, const char *key, const char *value)
{
    double lo = u->cfg.threshold.signal == DRIFT_CONFIDENCE ? 0 : -1e300;
    double hi = u->cfg.threshold.signal == DRIFT_CONFIDENCE ? 1 : 1e300;
    if (strcmp(key, "min") == 0) {
        u->cfg.threshold.has_min = 1;
        return set_double(value, lo, hi, &u->cfg.threshold.min);
    }
    if (strcmp(key, "max") == 0) {
        u->cfg.threshold.has_max = 1;
        return set_double(value, lo, hi, &u->cfg.threshold.max);
    }
    if (strcmp(key, "signal") == 0) {
        return parse_signal(value, &u->cfg.threshold.signal, u->cfg.threshold.name);
    }
    return -ENOENT;
}

static int threshold_ready(struct unit *u, char *err, size_t errlen)
{
    const struct unit *t = u;
    if (!t->cfg.threshold.has_min && !t->cfg.threshold.has_max) {
        snprintf(err, errlen, "a threshold needs min or max");
        return -EINVAL;
    }
    if (t->cfg.threshold.signal == DRIFT_CONFIDENCE &&
        ((t->cfg.threshold.has_min && (t->cfg.threshold.min < 0 || t->cfg.threshold.min > 1)) ||
         (t->cfg.threshold.has_max && (t->cfg.threshold.max < 0 || t->cfg.threshold.max > 1)))) {
        snprintf(err, errlen, "bad value for a confidence bound: expected [0, 1]");
        return -EINVAL;
    }
    u->state_size = 0;
    return 0;
}

static int threshold_feed(const struct unit *u, void *state, const struct mon_signal *s,
                          struct alert *a)
{
    (void)state;
    const int sig = u->cfg.threshold.signal;
    if (!signal_matches(sig, u->cfg.threshold.name, s) || !isfinite(s->value)) {
        return 0;
    }
    double lo = u->cfg.threshold.min, hi = u->cfg.threshold.max;
    int below = s->value < lo && u->cfg.threshold.has_min;
    int above = s->value > hi && u->cfg.threshold.has_max;
    if (!below && !above) {
        return 0;
    }
    a->value = sig == DRIFT_TOOL_LATENCY ? s->value * 1000 : s->value;
    a->threshold = below ? lo : hi;
    signal_key(sig, u->cfg.threshold.name, a->key, sizeof a->key);
    a->example_id = s->id;
    a->example_is_response = sig == DRIFT_CONFIDENCE || sig == DRIFT_SCORE;
    if (sig == DRIFT_CONFIDENCE) {
        snprintf(a->message, sizeof a->message,
                 "response %016llx: confidence %.3f below %.3f (response confidence = exp(mean "
                 "token log-prob), in [0, 1])",
                 (unsigned long long)s->id, s->value, lo);
    } else {
        char what[128], unit[40] = "";
        if (sig == DRIFT_TOOL_LATENCY) {
            snprintf(unit, sizeof unit, " ms");
            a->threshold *= 1000;
            snprintf(a->unit, sizeof a->unit, "ms");
        } else if (sig == DRIFT_METRIC && s->query.n) {
            size_t n = s->query.n < sizeof a->unit - 1 ? s->query.n : sizeof a->unit - 1;
            memcpy(a->unit, s->query.p, n);
            a->unit[n] = 0;
            snprintf(unit, sizeof unit, " %s", a->unit);
        }
        snprintf(what, sizeof what, "%s", a->key);
        snprintf(a->message, sizeof a->message, "%s %.6g%s %s %.6g%s%s", what, a->value, unit,
                 below ? "below" : "above", a->threshold, unit,
                 sig == DRIFT_SCORE ? " (a score reported for one response)" : "");
    }
    return 1;
}

static const struct unit_ops unit_threshold = {
    "threshold", 10000, threshold_set, threshold_ready, threshold_feed, NULL, NULL, NULL};

/* --- drift: a change detector over one signal after a warm-up --------------------------- */

/* The last DRIFT_RING samples' times and ids: where the change point estimate lands. */
#define DRIFT_RING 256

struct drift_state {
    int inited;
    uint64_t n;
    struct {
        int64_t time_ns;
        uint64_t id;
    } ring[DRIFT_RING];
    max_align_t det[];
};

static int drift_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "signal") == 0) {
        return parse_signal(value, &u->cfg.drift.signal, u->cfg.drift.name);
    }
    if (strcmp(key, "algorithm") == 0) {
        const struct detect_ops *ops = detect_find(value);
        if (!ops) {
            return -EINVAL;
        }
        u->cfg.drift.algo = ops;
        return 0;
    }
    if (strcmp(key, "params") == 0) {
        if (strlen(value) >= sizeof u->cfg.drift.params) {
            return -EINVAL;
        }
        snprintf(u->cfg.drift.params, sizeof u->cfg.drift.params, "%s", value);
        return 0;
    }
    if (strcmp(key, "warmup") == 0) {
        return set_u32(value, 2, 1000000, &u->cfg.drift.warmup);
    }
    return -ENOENT;
}

static int drift_ready(struct unit *u, char *err, size_t errlen)
{
    if (!u->cfg.drift.algo) {
        u->cfg.drift.algo = &detect_cusum;
    }
    if (!u->cfg.drift.warmup) {
        u->cfg.drift.warmup = 200;
    }
    const struct detect_ops *ops = u->cfg.drift.algo;
    union detect_params *p = &u->cfg.drift.p;
    ops->defaults(p);
    if (ops == &detect_cusum) {
        /* The robust self-starting baseline, with the parameters the change-case suite chose
         * (docs/detectors.md); the unit's warmup starts it; params= still wins. */
        if (detect_parse(ops, p, DRIFT_CUSUM_DEFAULTS) != 0) {
            snprintf(err, errlen, "bad built-in CUSUM defaults");
            return -EINVAL;
        }
        p->cusum.warmup = u->cfg.drift.warmup;
        /* Confidence matters when it falls, latency when it rises; a named score or metric
         * either way (params = mode=... says otherwise). */
        int sig = u->cfg.drift.signal;
        p->cusum.mode = sig == DRIFT_CONFIDENCE     ? DETECT_DOWN
                        : sig == DRIFT_TOOL_LATENCY ? DETECT_UP
                                                    : DETECT_BOTH;
    } else if (ops == &detect_ph) {
        int sig = u->cfg.drift.signal;
        p->ph.mode = sig == DRIFT_CONFIDENCE     ? DETECT_DOWN
                     : sig == DRIFT_TOOL_LATENCY ? DETECT_UP
                                                 : DETECT_BOTH;
    }
    if (u->cfg.drift.params[0] && detect_parse(ops, p, u->cfg.drift.params) != 0) {
        snprintf(err, errlen, "params \"%s\" are not valid for %s", u->cfg.drift.params, ops->name);
        return -EINVAL;
    }
    size_t n = ops->size(p);
    if (n == 0) {
        snprintf(err, errlen, "parameters not valid for %s", ops->name);
        return -EINVAL;
    }
    u->state_size = sizeof(struct drift_state) + n;
    return 0;
}

/* What the drift unit's signal is, for messages: name, meaning, unit, scale to that unit. */
struct drift_meaning {
    const char *name, *meaning, *unit, *samples;
    double scale;
};

static struct drift_meaning drift_meaning(const struct unit *u, const struct mon_signal *s,
                                          char *name, size_t cap, char *unit, size_t ucap)
{
    switch (u->cfg.drift.signal) {
    case DRIFT_CONFIDENCE:
        return (struct drift_meaning){
            "confidence", "response confidence = exp(mean token log-prob)", "", "responses", 1};
    case DRIFT_TOOL_LATENCY:
        return (struct drift_meaning){"tool latency", "tool latency = a tool call's duration", "ms",
                                      "tool calls", 1000};
    case DRIFT_METRIC:
        snprintf(name, cap, "metric %s", u->cfg.drift.name);
        bstr_copy(unit, ucap, s->query);
        return (struct drift_meaning){name, "the metric's samples as the agent reports them", unit,
                                      "samples", 1};
    default:
        snprintf(name, cap, "score %s", u->cfg.drift.name);
        unit[0] = 0;
        return (struct drift_meaning){name, "a score reported for each response (tt_score)", unit,
                                      "responses", 1};
    }
}

/* The explanation: direction, magnitude in units and sigmas, change point, baseline and recent
 * mean with their counts, last value. */
static void drift_message(const struct unit *u, const struct drift_state *d,
                          const struct detect_reading *rd, const struct mon_signal *s,
                          struct alert *a)
{
    char name[96], unit[16];
    struct drift_meaning m = drift_meaning(u, s, name, sizeof name, unit, sizeof unit);
    const char *sp = m.unit[0] ? " " : "";
    double base = rd->base_mean * m.scale, recent = rd->recent_mean * m.scale;
    double sigma = rd->base_sigma * m.scale, diff = recent - base;
    char what[200], since[160] = "";
    if (rd->direction == 2) {
        snprintf(what, sizeof what,
                 "spread rose: values stray further from the baseline than "
                 "its sigma of %.4g%s%s allows",
                 sigma, sp, m.unit);
    } else if (isfinite(diff) && sigma > 0) {
        snprintf(what, sizeof what, "%s by %.4g%s%s (%.2f sigma of the baseline)",
                 diff < 0 ? "fell" : "rose", fabs(diff), sp, m.unit, fabs(diff) / sigma);
    } else {
        snprintf(what, sizeof what, "changed");
    }
    if (rd->start_back && d->n) {
        uint64_t back = rd->start_back <= d->n ? rd->start_back : d->n;
        back = back <= DRIFT_RING ? back : DRIFT_RING;
        uint64_t at = (d->n - back) % DRIFT_RING;
        int64_t t = d->ring[at].time_ns;
        time_t secs = (time_t)(t / 1000000000);
        struct tm tm;
        char stamp[32] = "?";
        if (gmtime_r(&secs, &tm)) {
            strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        snprintf(since, sizeof since, "; change began about %llu %s ago, at %s%s",
                 (unsigned long long)rd->start_back, m.samples, stamp,
                 rd->start_back > DRIFT_RING ? " or before" : "");
    }
    snprintf(a->message, sizeof a->message,
             "%s drift (%s): %s %s%s; baseline mean %.4g%s%s (sigma %.4g%s%s, %llu %s), recent "
             "mean %.4g%s%s (%llu %s), last value %.4g%s%s; statistic %.3g above %.3g",
             m.name, u->cfg.drift.algo->name, m.meaning, what, since, base, sp, m.unit, sigma, sp,
             m.unit, (unsigned long long)rd->base_n, m.samples, recent, sp, m.unit,
             (unsigned long long)rd->recent_n, m.samples, s->value * m.scale, sp, m.unit, rd->stat,
             rd->threshold);
    a->value = isfinite(recent) ? recent : s->value * m.scale;
    a->threshold = base;
    snprintf(a->unit, sizeof a->unit, "%s", m.unit);
    signal_key(u->cfg.drift.signal, u->cfg.drift.name, a->key, sizeof a->key);
    a->example_id = s->id;
    a->example_is_response =
        u->cfg.drift.signal == DRIFT_CONFIDENCE || u->cfg.drift.signal == DRIFT_SCORE;
}

static int drift_feed(const struct unit *u, void *state, const struct mon_signal *s,
                      struct alert *a)
{
    if (!signal_matches(u->cfg.drift.signal, u->cfg.drift.name, s)) {
        return 0;
    }
    struct drift_state *d = state;
    const struct detect_ops *ops = u->cfg.drift.algo;
    if (!d->inited) {
        if (ops->init(d->det, &u->cfg.drift.p) != 0) {
            return 0;
        }
        d->inited = 1;
    }
    int r = ops->update(d->det, s->value);
    if (r >= 0) {
        d->ring[d->n % DRIFT_RING].time_ns = s->time_ns;
        d->ring[d->n % DRIFT_RING].id = s->id;
        d->n++;
    }
    if (r < 0) {
        return 0;
    }
    struct detect_reading rd;
    memset(&rd, 0, sizeof rd);
    rd.base_mean = rd.recent_mean = rd.base_sigma = NAN;
    ops->read(d->det, &rd);
    /* A detection opens (or repeats) the incident; a robust CUSUM still out of control repeats
     * it with every sample, so the incident stays open while the change lasts. CUSUM learns its
     * baseline over the warm-up itself; the others may not alarm before it. */
    if (r == 1 && ops != &detect_cusum && d->n <= u->cfg.drift.warmup) {
        return 0;
    }
    if (r != 1 && !rd.active) {
        return 0;
    }
    if (!isfinite(rd.base_mean)) {
        rd.base_mean = rd.level;
    }
    drift_message(u, d, &rd, s, a);
    return 1;
}

static int drift_read(const struct unit *u, const void *state, struct detect_reading *out)
{
    const struct drift_state *d = state;
    if (!d->inited) {
        return -1;
    }
    u->cfg.drift.algo->read(d->det, out);
    return 0;
}

static const struct unit_ops unit_drift = {"drift",    0,    drift_set,  drift_ready,
                                           drift_feed, NULL, drift_read, NULL};

/* --- error_rate: the share of failed calls among the last `window` of each call name ------ */

#define ERR_WINDOW_MAX 1024
/* Call names watched apart (a failing "sql" is not diluted by the tools that work); beyond
 * them, the least recently seen name's window is reused. Ends without a name (clients before
 * 0.2) share one window. */
#define ERR_NAMES 8

struct err_window {
    uint64_t name;        /* hash of the call's name, 0: free */
    uint64_t used;        /* the feed count when last seen */
    uint64_t last_failed; /* the step id of the window's latest failed call */
    uint32_t n, pos, errors;
    uint8_t bits[ERR_WINDOW_MAX / 8];
};

struct err_state {
    uint64_t feeds;
    struct err_window w[ERR_NAMES];
};

static int err_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "window") == 0) {
        return set_u32(value, 1, ERR_WINDOW_MAX, &u->cfg.error_rate.window);
    }
    if (strcmp(key, "min_calls") == 0) {
        return set_u32(value, 1, ERR_WINDOW_MAX, &u->cfg.error_rate.min_calls);
    }
    if (strcmp(key, "max_rate") == 0) {
        return set_double(value, 0, 1, &u->cfg.error_rate.max_rate);
    }
    return -ENOENT;
}

static int err_ready(struct unit *u, char *err, size_t errlen)
{
    if (!u->cfg.error_rate.window) {
        u->cfg.error_rate.window = 20;
    }
    if (!u->cfg.error_rate.min_calls) {
        u->cfg.error_rate.min_calls = u->cfg.error_rate.window < 10 ? u->cfg.error_rate.window : 10;
    }
    if (u->cfg.error_rate.min_calls > u->cfg.error_rate.window) {
        snprintf(err, errlen, "min_calls above window");
        return -EINVAL;
    }
    u->state_size = sizeof(struct err_state);
    return 0;
}

static uint64_t fnv(uint64_t h, tt__bstr s);

/* The window of the call named name: its own, a free one, or the least recently seen. */
static struct err_window *err_window_of(struct err_state *st, tt__bstr name)
{
    uint64_t h = fnv(0xcbf29ce484222325ull ^ name.n, name) | 1;
    struct err_window *pick = &st->w[0];
    for (int i = 0; i < ERR_NAMES; i++) {
        if (st->w[i].name == h) {
            pick = &st->w[i];
            break;
        }
        if (st->w[i].used < pick->used) {
            pick = &st->w[i];
        }
    }
    if (pick->name != h) {
        memset(pick, 0, sizeof *pick);
        pick->name = h;
    }
    pick->used = ++st->feeds;
    return pick;
}

static int err_feed(const struct unit *u, void *state, const struct mon_signal *s, struct alert *a)
{
    if (s->type != SIG_TOOL_END) {
        return 0;
    }
    struct err_window *e = err_window_of(state, s->name);
    uint32_t w = u->cfg.error_rate.window;
    uint8_t mask = (uint8_t)(1u << (e->pos & 7));
    if (e->n == w) {
        e->errors -= (e->bits[e->pos >> 3] & mask) != 0;
    } else {
        e->n++;
    }
    e->bits[e->pos >> 3] =
        (uint8_t)(s->error ? e->bits[e->pos >> 3] | mask : e->bits[e->pos >> 3] & ~mask);
    e->errors += s->error != 0;
    if (s->error) {
        e->last_failed = s->id;
    }
    e->pos = (e->pos + 1) % w;
    double rate = (double)e->errors / e->n;
    if (e->n < u->cfg.error_rate.min_calls || !(rate > u->cfg.error_rate.max_rate)) {
        return 0;
    }
    a->value = rate;
    a->threshold = u->cfg.error_rate.max_rate;
    snprintf(a->unit, sizeof a->unit, "ratio");
    char name[96];
    bstr_copy(name, sizeof name, s->name);
    snprintf(a->key, sizeof a->key, "%s", name); /* one incident per failing call */
    if (name[0]) {
        snprintf(a->message, sizeof a->message,
                 "%u of the last %u tool calls failed (%.0f%% > %.0f%%): \"%s\"", e->errors, e->n,
                 rate * 100, u->cfg.error_rate.max_rate * 100, name);
    } else {
        snprintf(a->message, sizeof a->message,
                 "%u of the last %u tool calls failed (%.0f%% > %.0f%%)", e->errors, e->n,
                 rate * 100, u->cfg.error_rate.max_rate * 100);
    }
    /* The latest failed call (a step): the rate can cross at a call that worked, once the
     * window reaches min_calls. */
    a->example_id = e->last_failed;
    a->example_is_response = 0;
    uint64_t keep = e->name, used = e->used;
    memset(e, 0, sizeof *e); /* a fresh window before the next alert */
    e->name = keep;
    e->used = used;
    return 1;
}

static const struct unit_ops unit_error_rate = {"error_rate", 0,    err_set, err_ready,
                                                err_feed,     NULL, NULL,    NULL};

/* --- loop: the same tool with the same arguments N times in a row ------------------------- */

struct loop_state {
    uint64_t last;
    uint32_t count;
};

static int loop_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "repeats") == 0) {
        return set_u32(value, 2, 1000000, &u->cfg.loop.repeats);
    }
    return -ENOENT;
}

static int loop_ready(struct unit *u, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (!u->cfg.loop.repeats) {
        u->cfg.loop.repeats = 5;
    }
    u->state_size = sizeof(struct loop_state);
    return 0;
}

static uint64_t fnv(uint64_t h, tt__bstr s)
{
    for (size_t i = 0; i < s.n; i++) {
        h = (h ^ s.p[i]) * 0x100000001b3ull;
    }
    return h;
}

static int loop_feed(const struct unit *u, void *state, const struct mon_signal *s, struct alert *a)
{
    if (s->type != SIG_TOOL_BEGIN) {
        return 0;
    }
    struct loop_state *l = state;
    /* The name's length goes in too, so ("ab", "c") and ("a", "bc") differ. */
    uint64_t h = fnv(0xcbf29ce484222325ull ^ s->name.n, s->name);
    h = fnv(h * 31 + 1, s->query) | 1; /* never 0: 0 is "no call yet" */
    l->count = h == l->last ? l->count + 1 : 1;
    l->last = h;
    if (l->count != u->cfg.loop.repeats) {
        return 0;
    }
    char name[96], query[160];
    bstr_copy(name, sizeof name, s->name);
    bstr_copy(query, sizeof query, s->query);
    a->value = l->count;
    a->threshold = u->cfg.loop.repeats;
    snprintf(a->unit, sizeof a->unit, "calls");
    snprintf(a->key, sizeof a->key, "%s", name);
    a->example_id = s->id;
    snprintf(a->message, sizeof a->message,
             "tool \"%s\" with arguments \"%s\" called %u times in a row", name, query, l->count);
    return 1;
}

static const struct unit_ops unit_loop = {"loop",    0,    loop_set, loop_ready,
                                          loop_feed, NULL, NULL,     NULL};

/* --- silence: no batch from an agent for N seconds ---------------------------------------- */

struct silence_state {
    int64_t fired_for; /* the last_seen it alerted about: once per silence */
};

static int silence_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "seconds") == 0) {
        return set_double(value, 0.1, 86400 * 365, &u->cfg.silence.seconds);
    }
    return -ENOENT;
}

static int silence_ready(struct unit *u, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (!(u->cfg.silence.seconds > 0)) {
        u->cfg.silence.seconds = 60;
    }
    u->state_size = sizeof(struct silence_state);
    return 0;
}

static int silence_feed(const struct unit *u, void *state, const struct mon_signal *s,
                        struct alert *a)
{
    (void)u;
    (void)state;
    (void)s;
    (void)a;
    return 0;
}

static int silence_tick(const struct unit *u, void *state, int64_t now_ns, int64_t last_seen_ns,
                        struct alert *a)
{
    struct silence_state *st = state;
    double quiet = (double)(now_ns - last_seen_ns) / 1e9;
    if (last_seen_ns == 0 || st->fired_for == last_seen_ns || quiet < u->cfg.silence.seconds) {
        return 0;
    }
    st->fired_for = last_seen_ns;
    a->value = quiet;
    a->threshold = u->cfg.silence.seconds;
    snprintf(a->unit, sizeof a->unit, "s");
    snprintf(a->message, sizeof a->message, "silent: no event for %.1f s (limit %.1f s)", quiet,
             u->cfg.silence.seconds);
    return 1;
}

/* Still silent since the alert: no batch since the one it was about. */
static int silence_active(const struct unit *u, const void *state, int64_t last_seen_ns)
{
    (void)u;
    const struct silence_state *st = state;
    return st->fired_for != 0 && st->fired_for == last_seen_ns;
}

static const struct unit_ops unit_silence = {
    "silence", 0, silence_set, silence_ready, silence_feed, silence_tick, NULL, silence_active};

/* --- gap: sequence numbers never received ------------------------------------------------- */

static int gap_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "min_events") == 0) {
        return detect_parse_u64(value, &u->cfg.gap.min_events) == 0 && u->cfg.gap.min_events
                   ? 0
                   : -EINVAL;
    }
    return -ENOENT;
}

static int gap_ready(struct unit *u, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (!u->cfg.gap.min_events) {
        u->cfg.gap.min_events = 1;
    }
    u->state_size = 0;
    return 0;
}

static int gap_feed(const struct unit *u, void *state, const struct mon_signal *s, struct alert *a)
{
    (void)state;
    if (s->type != SIG_GAP || s->value < (double)u->cfg.gap.min_events) {
        return 0;
    }
    a->value = s->value;
    a->threshold = (double)u->cfg.gap.min_events;
    snprintf(a->unit, sizeof a->unit, "events");
    /* From the exact count: a gap of 2^64 - 2 events is no double's exact value. */
    snprintf(a->message, sizeof a->message, "loss: %llu events never received (seq %llu..%llu)",
             (unsigned long long)s->n, (unsigned long long)s->id,
             (unsigned long long)(s->id + s->n - 1));
    return 1;
}

static const struct unit_ops unit_gap = {"gap", 0, gap_set, gap_ready, gap_feed, NULL, NULL, NULL};

/* --- comply: compliance decisions (docs/compliance.md) ------------------------------------ */

static int comply_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "flags") == 0) {
        int on = strcmp(value, "on") == 0, off = strcmp(value, "off") == 0;
        u->cfg.comply.flags = on ? 1 : off ? -1 : 0;
        return on || off ? 0 : -EINVAL;
    }
    return -ENOENT;
}

static int comply_ready(struct unit *u, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (!u->cfg.comply.flags) {
        u->cfg.comply.flags = 1;
    }
    u->state_size = 0;
    return 0;
}

/* One incident per agent and rule: a block is critical, a flag has the unit's severity. */
static int comply_feed(const struct unit *u, void *state, const struct mon_signal *s,
                       struct alert *a)
{
    (void)state;
    if (s->type != SIG_DECISION || (s->value < 2 && u->cfg.comply.flags < 0)) {
        return 0;
    }
    int block = s->value >= 2;
    char rule[64], why[160], step[96];
    bstr_copy(rule, sizeof rule, s->name);
    bstr_copy(why, sizeof why, s->query);
    bstr_copy(step, sizeof step, s->step);
    a->value = s->value;
    a->threshold = 0;
    a->example_id = s->id;
    snprintf(a->key, sizeof a->key, "%s", rule);
    snprintf(a->severity, sizeof a->severity, "%s", block ? "critical" : u->severity);
    snprintf(a->message, sizeof a->message, "compliance rule %s: %s%s%s%s%s", rule,
             s->error
                 ? (block ? "would block (the collector saw it run)" : "flagged by the collector")
                 : (block ? "blocked" : "flagged"),
             step[0] ? " step " : "", step, why[0] ? ": " : "", why);
    return 1;
}

static const struct unit_ops unit_comply = {"comply",    0,    comply_set, comply_ready,
                                            comply_feed, NULL, NULL,       NULL};

/* --- nonfinite: a metric or score sample that is NaN or infinite -------------------------- */

/* What a training job's divergence looks like first: a loss or a gradient norm of NaN or inf.
 * The other units skip such samples (one NaN must not poison their sums); this one reports
 * them. signal = metric:NAME, score:NAME, or metric:* / score:* for every metric or score. */
struct nonfinite_state {
    uint64_t count; /* non-finite samples seen for this agent */
};

static int nonfinite_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "signal") == 0) {
        return parse_signal(value, &u->cfg.nonfinite.signal, u->cfg.nonfinite.name);
    }
    return -ENOENT;
}

static int nonfinite_ready(struct unit *u, char *err, size_t errlen)
{
    if (u->cfg.nonfinite.signal != DRIFT_METRIC && u->cfg.nonfinite.signal != DRIFT_SCORE) {
        snprintf(err, errlen,
                 "a nonfinite detector needs signal = metric:NAME or score:NAME "
                 "(NAME may be *)");
        return -EINVAL;
    }
    u->state_size = sizeof(struct nonfinite_state);
    return 0;
}

static int nonfinite_feed(const struct unit *u, void *state, const struct mon_signal *s,
                          struct alert *a)
{
    const int sig = u->cfg.nonfinite.signal;
    const char *name = u->cfg.nonfinite.name;
    if (isfinite(s->value)) {
        return 0;
    }
    if (strcmp(name, "*") == 0) {
        if (s->type != (sig == DRIFT_METRIC ? SIG_METRIC : SIG_SCORE)) {
            return 0;
        }
    } else if (!signal_matches(sig, name, s)) {
        return 0;
    }
    struct nonfinite_state *st = state;
    st->count++;
    char got[MON_NAME_MAX];
    bstr_copy(got, sizeof got, s->name);
    const char *kind = sig == DRIFT_METRIC ? "metric" : "score";
    snprintf(a->key, sizeof a->key, "%s:%s", kind, got);
    const char *what = isnan(s->value) ? "NaN" : s->value > 0 ? "+inf" : "-inf";
    /* The value itself has no JSON form: the incident carries the count, the message says
     * which of NaN, +inf, -inf it was. */
    a->value = (double)st->count;
    a->threshold = 0;
    snprintf(a->unit, sizeof a->unit, "samples");
    a->example_id = s->id;
    a->example_is_response = sig == DRIFT_SCORE && s->id != 0;
    snprintf(a->message, sizeof a->message,
             "%s %s is %s (%llu non-finite samples of this agent so far): a NaN or infinite "
             "value, e.g. a diverging loss or gradient",
             kind, got, what, (unsigned long long)st->count);
    return 1;
}

static const struct unit_ops unit_nonfinite = {
    "nonfinite", 10000, nonfinite_set, nonfinite_ready, nonfinite_feed, NULL, NULL, NULL};

/* --- spike: a sample far from the median of the recent in-range samples -------------------- */

/* One sample (or `consecutive` in a row) further than `sigmas` robust sigmas (1.4826 MAD) and
 * `min_change` of |median| from the median of the last `window` in-range samples: a loss
 * spike (direction up), a throughput drop (direction down, consecutive > 1). Out-of-range
 * samples stay out of the window, so a lasting change keeps its incident open (updated at every
 * sample) until the signal is back, unless `relearn` in a row make it the new level. */
#define SPIKE_WINDOW_MAX 1024

struct spike_state {
    uint32_t n, pos; /* samples in the window, next slot */
    uint32_t run;    /* out-of-range samples in a row */
    uint32_t pad;
    double v[]; /* window values, then as many of scratch for the median */
};

static int spike_set(struct unit *u, const char *key, const char *value)
{
    if (strcmp(key, "signal") == 0) {
        return parse_signal(value, &u->cfg.spike.signal, u->cfg.spike.name);
    }
    if (strcmp(key, "direction") == 0) {
        enum detect_mode m;
        if (detect_parse_mode(value, &m) != 0) {
            return -EINVAL;
        }
        u->cfg.spike.direction = m == DETECT_BOTH ? -1 : (int)m; /* 0 is "not set": up */
        return 0;
    }
    if (strcmp(key, "window") == 0) {
        return set_u32(value, 3, SPIKE_WINDOW_MAX, &u->cfg.spike.window);
    }
    if (strcmp(key, "min_samples") == 0) {
        return set_u32(value, 3, SPIKE_WINDOW_MAX, &u->cfg.spike.min_samples);
    }
    if (strcmp(key, "consecutive") == 0) {
        return set_u32(value, 1, 1000000, &u->cfg.spike.consecutive);
    }
    if (strcmp(key, "relearn") == 0) {
        return set_u32(value, 0, 1000000, &u->cfg.spike.relearn);
    }
    if (strcmp(key, "sigmas") == 0) {
        return set_double(value, 0, 1e6, &u->cfg.spike.sigmas);
    }
    if (strcmp(key, "min_change") == 0) {
        return set_double(value, 0, 1e6, &u->cfg.spike.min_change);
    }
    return -ENOENT;
}

static int spike_ready(struct unit *u, char *err, size_t errlen)
{
    struct unit *t = u;
    if (!t->cfg.spike.window) {
        t->cfg.spike.window = 50;
    }
    if (!t->cfg.spike.min_samples) {
        t->cfg.spike.min_samples = t->cfg.spike.window < 20 ? t->cfg.spike.window : 20;
    }
    if (t->cfg.spike.min_samples > t->cfg.spike.window) {
        snprintf(err, errlen, "min_samples above window");
        return -EINVAL;
    }
    if (!t->cfg.spike.consecutive) {
        t->cfg.spike.consecutive = 1;
    }
    if (t->cfg.spike.relearn && t->cfg.spike.relearn < t->cfg.spike.consecutive) {
        snprintf(err, errlen, "relearn below consecutive");
        return -EINVAL;
    }
    if (!(t->cfg.spike.sigmas > 0) && !(t->cfg.spike.min_change > 0)) {
        t->cfg.spike.sigmas = 6;
    }
    if (!t->cfg.spike.direction) {
        t->cfg.spike.direction = DETECT_UP;
    }
    if (t->cfg.spike.direction == -1) {
        t->cfg.spike.direction = DETECT_BOTH;
    }
    t->state_size = sizeof(struct spike_state) + 2 * (size_t)t->cfg.spike.window * sizeof(double);
    return 0;
}

static int spike_feed(const struct unit *u, void *state, const struct mon_signal *s,
                      struct alert *a)
{
    const int sig = u->cfg.spike.signal;
    if (!signal_matches(sig, u->cfg.spike.name, s) || !isfinite(s->value)) {
        return 0;
    }
    struct spike_state *st = state;
    const uint32_t w = u->cfg.spike.window;
    double x = s->value;
    if (st->n < u->cfg.spike.min_samples) {
        st->v[st->pos] = x;
        st->pos = (st->pos + 1) % w;
        st->n++;
        return 0;
    }
    double *scratch = st->v + w;
    memcpy(scratch, st->v, st->n * sizeof(double));
    double med = detect_median(scratch, st->n);
    for (uint32_t i = 0; i < st->n; i++) {
        scratch[i] = fabs(st->v[i] - med);
    }
    /* A window of equal values has no spread: a floor keeps the bound finite (min_change is
     * the setting that matters then). */
    double floor = 1e-9 * (fabs(med) > 1 ? fabs(med) : 1);
    double sigma = 1.482602218505602 * detect_median(scratch, st->n);
    sigma = sigma > floor ? sigma : floor;
    double dev = x - med, need = u->cfg.spike.sigmas * sigma;
    double rel = u->cfg.spike.min_change * fabs(med);
    need = need > rel ? need : rel;
    int dir = u->cfg.spike.direction;
    int up = dir != DETECT_DOWN && dev > need;
    int down = dir != DETECT_UP && -dev > need;
    if (!up && !down) {
        st->run = 0;
        st->v[st->pos] = x;
        st->pos = (st->pos + 1) % w;
        st->n += st->n < w;
        return 0;
    }
    st->run++;
    if (u->cfg.spike.relearn && st->run >= u->cfg.spike.relearn) {
        /* The level has moved for good: learn it afresh from this sample on. */
        st->n = 1;
        st->pos = 1 % w;
        st->v[0] = x;
        st->run = 0;
        return 0;
    }
    if (st->run < u->cfg.spike.consecutive) {
        return 0;
    }
    char unit[16] = "", sp[2] = "";
    if (sig == DRIFT_METRIC) {
        bstr_copy(unit, sizeof unit, s->query);
        sp[0] = unit[0] ? ' ' : 0;
    }
    double k = 1; /* tool latency is in seconds on the signal, in ms in messages */
    if (sig == DRIFT_TOOL_LATENCY) {
        snprintf(unit, sizeof unit, "ms");
        sp[0] = ' ';
        k = 1000;
    }
    signal_key(sig, u->cfg.spike.name, a->key, sizeof a->key);
    a->value = x * k;
    a->threshold = (up ? med + need : med - need) * k;
    snprintf(a->unit, sizeof a->unit, "%s", unit);
    a->example_id = s->id;
    a->example_is_response = sig == DRIFT_CONFIDENCE || (sig == DRIFT_SCORE && s->id != 0);
    char what[MON_NAME_MAX + 16];
    static const char *const shown[] = {"confidence", "tool latency", "metric ", "score "};
    snprintf(what, sizeof what, "%s%s", shown[sig], u->cfg.spike.name);
    char run[64] = "";
    if (u->cfg.spike.consecutive > 1) {
        snprintf(run, sizeof run, "; %u samples in a row", st->run);
    }
    snprintf(a->message, sizeof a->message,
             "%s %s: %.6g%s%s is %.1f sigma %s the median %.6g%s%s of the last %u samples "
             "(robust sigma %.3g%s%s, %+.0f%%)%s",
             what, up ? "spiked" : "dropped", x * k, sp, unit, fabs(dev) / sigma,
             up ? "above" : "below", med * k, sp, unit, st->n, sigma * k, sp, unit,
             med != 0 ? 100 * dev / fabs(med) : 0.0, run);
    return 1;
}

static const struct unit_ops unit_spike = {"spike",    0,    spike_set, spike_ready,
                                           spike_feed, NULL, NULL,      NULL};

const struct unit_ops *unit_find(const char *type)
{
    static const struct unit_ops *const all[] = {&unit_threshold, &unit_drift,     &unit_error_rate,
                                                 &unit_loop,      &unit_silence,   &unit_gap,
                                                 &unit_comply,    &unit_nonfinite, &unit_spike};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(all[i]->type, type) == 0) {
            return all[i];
        }
    }
    return NULL;
}

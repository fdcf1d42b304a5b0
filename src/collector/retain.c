/*
 * retain.c - retention in `telltale serve`: the thread that asks the store to prune, and its
 * figures for the API. The store does the work (store/sqlite_retain.c: by age, then by size,
 * classes kept longer), on its writer thread in short steps between commits; this thread only
 * decides when and with which policy, and keeps the totals.
 *
 * INVARIANTS
 * - The figures (g.*) are under g.lock; the thread is the only one that runs passes.
 * - retain_stop returns after the thread ended: no pass is under way when the store closes.
 */
#include "collector/retain.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/log.h"
#include "collector/store/store.h"
#include "common/clock.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    int running, stop;
    struct store *store;
    struct retain_opts o;
    struct store_retention policy;
    int supported; /* the store answered at least once */
    struct retain_clock clock;
    uint64_t clock_jumps;
    /* totals since start */
    uint64_t runs, errors, batches, events, bytes, kept_batches, responses, sessions;
    uint64_t last_run_ns, max_run_ns;
    int64_t last_now_ns;
    struct store_retention_report last;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static int64_t scaled(int64_t ns, double f)
{
    double v = (double)ns * f;
    return v >= 9.2e18 ? INT64_MAX : (int64_t)v;
}

int64_t retain_clock_now(struct retain_clock *c, int64_t wall_ns, uint64_t mono_ns, int *jumped)
{
    *jumped = 0;
    if (!c->set) {
        c->set = 1;
        c->last = wall_ns;
        c->mono = mono_ns;
        return wall_ns;
    }
    int64_t expect = c->last + (int64_t)(mono_ns - c->mono);
    int64_t now = wall_ns;
    if (wall_ns > expect + RETAIN_CLOCK_SLACK_NS) {
        now = expect;
        *jumped = 1;
    }
    c->last = now;
    c->mono = mono_ns;
    return now;
}

static int pass(void)
{
    int jumped;
    int64_t wall = (int64_t)tt__wall_ns();
    int64_t now = retain_clock_now(&g.clock, wall, tt__mono_ns(), &jumped);
    if (jumped && g.clock_jumps++ == 0) {
        log_warn("retention: the wall clock is %.0f s ahead of the time elapsed; retention "
                 "follows the elapsed time (nothing fresh is purged) until a restart",
                 (double)(wall - now) / 1e9);
    }
    struct store_retention_report rep;
    uint64_t t0 = tt__mono_ns();
    int rc = store_retention_run(g.store, &g.policy, now, &rep);
    uint64_t dt = tt__mono_ns() - t0;
    pthread_mutex_lock(&g.lock);
    g.runs++;
    g.last_run_ns = dt;
    g.max_run_ns = dt > g.max_run_ns ? dt : g.max_run_ns;
    g.last_now_ns = now;
    if (rc == 0) {
        g.supported = 1;
        g.batches += rep.batches;
        g.events += rep.events;
        g.bytes += rep.bytes;
        g.kept_batches += rep.kept_batches;
        g.responses += rep.responses;
        g.sessions += rep.sessions;
        g.last = rep;
    } else {
        g.errors++;
    }
    pthread_mutex_unlock(&g.lock);
    if (rc == 0 && rep.batches) {
        log_debug("retention: removed %llu batches (%llu events, %llu bytes); %llu bytes in use",
                  (unsigned long long)rep.batches, (unsigned long long)rep.events,
                  (unsigned long long)rep.bytes, (unsigned long long)rep.used_bytes);
    }
    return rc;
}

static void *retain_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g.lock);
    while (!g.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + g.o.interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&g.cond, &g.lock, &ts);
        if (g.stop) {
            break;
        }
        pthread_mutex_unlock(&g.lock);
        int rc = pass();
        if (rc < 0 && rc != -ECANCELED) {
            log_warn("retention: a pass failed (%s); trying again in %llu ms", strerror(-rc),
                     (unsigned long long)g.o.interval_ms);
        }
        pthread_mutex_lock(&g.lock);
    }
    pthread_mutex_unlock(&g.lock);
    return NULL;
}

int retain_start(struct store *s, const struct retain_opts *o)
{
    g.store = s;
    g.o = *o;
    if (!g.o.interval_ms) {
        g.o.interval_ms = o->max_bytes ? 200 : 1000;
    }
    g.policy.max_age_ns = o->max_age_ns;
    g.policy.max_bytes = o->max_bytes;
    g.policy.keep_flagged_ns = scaled(o->max_age_ns, o->keep_factor);
    g.policy.keep_alerted_ns = g.policy.keep_flagged_ns;
    g.policy.keep_below_confidence = o->keep_below_confidence;
    int rc = pass();
    int limited = o->max_age_ns || o->max_bytes;
    if (rc != 0) {
        return limited ? rc : 0;
    }
    if (!limited) {
        return 0;
    }
    g.stop = 0;
    if (pthread_create(&g.thread, NULL, retain_main, NULL) != 0) {
        return -EAGAIN;
    }
    pthread_setname_np(g.thread, "tt-retain");
    g.running = 1;
    return 0;
}

void retain_stop(void)
{
    if (!g.running) {
        return;
    }
    pthread_mutex_lock(&g.lock);
    g.stop = 1;
    pthread_cond_signal(&g.cond);
    pthread_mutex_unlock(&g.lock);
    pthread_join(g.thread, NULL);
    g.running = 0;
}

int64_t retain_pruned_through(void)
{
    pthread_mutex_lock(&g.lock);
    int64_t v = g.last.pruned_through_ns;
    pthread_mutex_unlock(&g.lock);
    return v;
}

static void horizon_kv(tt__json *j, const char *key, int64_t now, int64_t age)
{
    if (age > 0 && now) {
        tt__json_kv_i64(j, key, now - age);
    } else {
        tt__json_key(j, key);
        tt__json_null(j);
    }
}

void retain_status_json(tt__json *j)
{
    pthread_mutex_lock(&g.lock);
    tt__json_key(j, "retention");
    tt__json_obj_begin(j);
    tt__json_kv_bool(j, "enabled", g.running);
    tt__json_kv_bool(j, "supported", g.supported);
    tt__json_kv_i64(j, "max_age_ns", g.policy.max_age_ns);
    tt__json_kv_u64(j, "max_bytes", g.policy.max_bytes);
    tt__json_kv_f64(j, "keep_factor", g.o.keep_factor);
    tt__json_kv_f64(j, "keep_below_confidence", g.policy.keep_below_confidence);
    /* Events older than a class's horizon are removed (as of the last pass). */
    tt__json_key(j, "horizon_ns");
    tt__json_obj_begin(j);
    horizon_kv(j, "ordinary", g.last_now_ns, g.policy.max_age_ns);
    horizon_kv(j, "flagged", g.last_now_ns, g.policy.keep_flagged_ns);
    horizon_kv(j, "alerted", g.last_now_ns, g.policy.keep_alerted_ns);
    tt__json_obj_end(j);
    tt__json_key(j, "pruned");
    tt__json_obj_begin(j);
    tt__json_kv_u64(j, "batches", g.batches);
    tt__json_kv_u64(j, "events", g.events);
    tt__json_kv_u64(j, "bytes", g.bytes);
    tt__json_kv_u64(j, "kept_batches", g.kept_batches);
    tt__json_kv_u64(j, "responses", g.responses);
    tt__json_kv_u64(j, "sessions", g.sessions);
    tt__json_obj_end(j);
    tt__json_kv_i64(j, "pruned_through_ns", g.last.pruned_through_ns);
    tt__json_kv_i64(j, "oldest_kept_ns", g.last.oldest_kept_ns);
    tt__json_kv_u64(j, "kept_batches_now", g.last.kept_now);
    tt__json_kv_u64(j, "disk_bytes", g.last.disk_bytes);
    tt__json_kv_u64(j, "used_bytes", g.last.used_bytes);
    tt__json_kv_u64(j, "clock_jumps", g.clock_jumps);
    tt__json_kv_u64(j, "runs", g.runs);
    tt__json_kv_u64(j, "errors", g.errors);
    tt__json_kv_u64(j, "last_run_ns", g.last_run_ns);
    tt__json_kv_u64(j, "max_run_ns", g.max_run_ns);
    tt__json_obj_end(j);
    pthread_mutex_unlock(&g.lock);
}

int retain_parse_duration(const char *s, int64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0) || !isfinite(v)) {
        return -1;
    }
    static const struct {
        const char *unit;
        double ns;
    } units[] = {{"", 1e9},     {"ms", 1e6},    {"s", 1e9},        {"m", 60e9},
                 {"h", 3600e9}, {"d", 86400e9}, {"w", 7 * 86400e9}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            double t = v * units[i].ns;
            if (t < 1e6 || t > 9.2e18 / 64) { /* 1 ms to about 4.5 years */
                return -1;
            }
            *ns = (int64_t)t;
            return 0;
        }
    }
    return -1;
}

int retain_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0) || !isfinite(v)) {
        return -1;
    }
    static const struct {
        const char *unit;
        double mul;
    } units[] = {{"", 1},
                 {"K", 1024.0},
                 {"KiB", 1024.0},
                 {"M", 1048576.0},
                 {"MiB", 1048576.0},
                 {"G", 1073741824.0},
                 {"GiB", 1073741824.0},
                 {"T", 1099511627776.0},
                 {"TiB", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            double b = v * units[i].mul;
            if (b < 1048576.0 || b > 1e18) { /* at least 1 MiB */
                return -1;
            }
            *bytes = (uint64_t)b;
            return 0;
        }
    }
    return -1;
}

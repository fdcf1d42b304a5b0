/*
 * follow.c - the monitor fed from the store's commit sequence (follow.h).
 *
 * One thread: it reads what was committed since its last read, feeds the monitor and the live
 * stream in commit order, tries to lead every FOLLOW_LEAD_MS while it does not, and gives up
 * the lead the moment its connection fails (the server then frees the lock for another
 * collector). Taking the lead happens between two reads, so the monitor's incidents do not
 * move under it (only the tick's, which monitor_lead handles).
 */
#include "collector/alerting/follow.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/alerting/monitor.h"
#include "collector/hub.h"
#include "collector/log.h"
#include "collector/store/store.h"
#include "common/clock.h"

struct follow {
    struct store_follow *sf;
    struct monitor *m;
    struct hub *hub; /* the live stream, or NULL */
    pthread_t thread;
    pthread_mutex_t lock; /* guards stop and st */
    pthread_cond_t cond;
    int stop;
    int stopped; /* the thread was joined */
    struct follow_status st;
};

static void set_status(struct follow *f, const struct follow_status *st)
{
    pthread_mutex_lock(&f->lock);
    f->st = *st;
    pthread_mutex_unlock(&f->lock);
}

static int64_t wall_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* This collector leads from now: take over what the earlier leader stored, raise the rest.
 * Out of memory, or the lead lost on the way: nothing sent, tried again at the next try. */
static int take_lead(struct follow *f, struct follow_status *st)
{
    struct mon_incident_ref *refs = NULL;
    int n = monitor_incidents(f->m, &refs);
    int64_t *keep = n > 0 ? malloc((size_t)n * sizeof *keep) : NULL;
    if (n < 0 || (n > 0 && !keep)) {
        free(refs);
        return 0;
    }
    int taken = 0;
    for (int i = 0; i < n; i++) {
        refs[i].taken = store_follow_adopt(f->sf, refs[i].agent, refs[i].detector, refs[i].key,
                                           refs[i].id) == 1;
        taken += refs[i].taken;
        keep[i] = refs[i].id;
    }
    int settled = store_follow_settle(f->sf, keep, n, wall_now_ns());
    free(keep);
    if (store_follow_lead(f->sf) != 1) {
        free(refs); /* the connection went on the way: another collector may lead now */
        return 0;
    }
    monitor_lead(f->m, refs, n);
    free(refs);
    st->leads++;
    st->taken += (uint64_t)taken;
    log_info("incidents: this collector leads now (raises the incidents of every collector "
             "sharing the store); %d taken over from the earlier leader, %d it left firing "
             "resolved",
             taken, settled > 0 ? settled : 0);
    return 1;
}

/* One batch any collector committed: to the detectors and the live stream. */
static void feed(void *ctx, const struct store_item *it)
{
    const struct follow *f = ctx;
    monitor_on_commit(f->m, it);
    if (f->hub) {
        hub_publish(f->hub, it);
    }
}

static void *follow_main(void *arg)
{
    struct follow *f = arg;
    struct follow_status st = {0};
    int leading = 0; /* the monitor's own state says the same (monitor_leading) */
    uint64_t next_try = 0;
    for (;;) {
        uint64_t now = tt__mono_ns() / 1000000;
        if (leading && store_follow_lead(f->sf) != 1) {
            leading = 0;
            monitor_follow(f->m);
        } else if (!leading && now >= next_try) {
            next_try = now + FOLLOW_LEAD_MS;
            if (store_follow_lead(f->sf) == 1) {
                leading = take_lead(f, &st);
            }
        }
        int n = store_follow_next(f->sf, FOLLOW_BATCHES, feed, f);
        if (n > 0) {
            st.batches += (uint64_t)n;
        } else if (n < 0) {
            st.errors++;
            if (st.errors == 1 || st.errors % 60 == 0) {
                log_warn("incidents: cannot read the store's commits (%s); trying again",
                         strerror(-n));
            }
        }
        set_status(f, &st);
        uint64_t wait = n < 0 ? FOLLOW_RETRY_MS : n == FOLLOW_BATCHES ? 0 : FOLLOW_POLL_MS;
        pthread_mutex_lock(&f->lock);
        if (wait && !f->stop) {
            struct timespec until = tt__deadline_ms(CLOCK_MONOTONIC, wait);
            while (!f->stop && pthread_cond_timedwait(&f->cond, &f->lock, &until) == 0) {
            }
        }
        int stop = f->stop;
        pthread_mutex_unlock(&f->lock);
        if (stop) {
            break;
        }
    }
    return NULL;
}

int follow_start(struct follow **out, struct store *s, struct monitor *m, struct hub *hub,
                 char *err, size_t errlen)
{
    *out = NULL;
    struct store_follow *sf;
    int rc = store_follow_open(s, &sf, err, errlen);
    if (rc != 0) {
        return rc;
    }
    struct follow *f = calloc(1, sizeof *f);
    if (!f) {
        store_follow_close(sf);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    f->sf = sf;
    f->m = m;
    f->hub = hub;
    pthread_mutex_init(&f->lock, NULL);
    tt__cond_init_mono(&f->cond);
    monitor_follow(m); /* until this collector takes the lead */
    if (pthread_create(&f->thread, NULL, follow_main, f) != 0) {
        snprintf(err, errlen, "cannot start the follower's thread");
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->lock);
        store_follow_close(sf);
        free(f);
        return -EAGAIN;
    }
    *out = f;
    return 0;
}

void follow_stop(struct follow *f)
{
    if (!f || f->stopped) {
        return;
    }
    pthread_mutex_lock(&f->lock);
    f->stop = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    f->stopped = 1;
}

void follow_free(struct follow *f)
{
    if (!f) {
        return;
    }
    follow_stop(f);
    store_follow_close(f->sf); /* the lead goes with its connection */
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void follow_status(struct follow *f, struct follow_status *out)
{
    memset(out, 0, sizeof *out);
    if (!f) {
        return;
    }
    pthread_mutex_lock(&f->lock);
    *out = f->st;
    pthread_mutex_unlock(&f->lock);
}

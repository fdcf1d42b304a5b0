/*
 * hub.c - live fan-out to subscribers.
 *
 * INVARIANTS
 * - The list of subscribers is guarded by hub.lock; each subscriber's queue by its own lock.
 *   Publishing takes hub.lock, then one subscriber lock at a time, never the reverse.
 * - A queue never exceeds its bound: an append that would exceed it marks the subscriber
 *   dropped instead (counted), and its reader sees -1 and ends the stream.
 * - Publishing never waits for a reader: it only appends to queues and signals.
 * - An event is rendered to JSON at most once per publish, and only if a subscriber wants it.
 */
#include "collector/hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/api/render.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/json.h"

struct hub_sub {
    struct hub *hub;
    struct hub_filter f;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tt__buf q;  /* queued stream text */
    size_t off; /* bytes of q already read */
    int dropped;
    struct hub_sub *next;
};

struct hub {
    pthread_mutex_t lock;
    struct hub_sub *subs;
    size_t n_subs;
    size_t max_subs;
    size_t queue_bytes;
    int shutdown;
    uint64_t subscribed_total;
    uint64_t disconnected_slow;
    _Atomic uint64_t events_sent;
    _Atomic size_t n_subs_fast; /* read without the lock to skip work when nobody listens */
};

struct hub *hub_new(size_t max_subs, size_t queue_bytes)
{
    struct hub *h = calloc(1, sizeof *h);
    if (!h) {
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    h->max_subs = max_subs;
    h->queue_bytes = queue_bytes;
    return h;
}

void hub_free(struct hub *h)
{
    if (h) {
        pthread_mutex_destroy(&h->lock);
        free(h);
    }
}

static int filter_match(const struct hub_filter *f, const char *agent, const tt__event *ev)
{
    if (f->agent[0] && strcmp(f->agent, agent) != 0) {
        return 0;
    }
    return tt__event_matches(ev, f->session, f->kinds, f->min_severity);
}

/* Append to a subscriber's queue, or drop the subscriber when it is full. */
static void sub_append(struct hub *h, struct hub_sub *s, const char *p, size_t n)
{
    pthread_mutex_lock(&s->lock);
    if (!s->dropped) {
        if (s->off > 0 && s->off == s->q.len) {
            s->q.len = s->off = 0;
        }
        if (s->q.len - s->off + n > h->queue_bytes || tt__buf_append(&s->q, p, n) != 0) {
            s->dropped = 1;
            h->disconnected_slow++;
        } else {
            atomic_fetch_add_explicit(&h->events_sent, 1, memory_order_relaxed);
        }
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

void hub_publish(struct hub *h, const struct store_item *it)
{
    if (atomic_load_explicit(&h->n_subs_fast, memory_order_relaxed) == 0) {
        return;
    }
    tt__buf out;
    tt__buf_init(&out, 16u << 20);
    tt__batch b = it->batch;
    tt__event ev;
    pthread_mutex_lock(&h->lock);
    while (h->subs && tt__batch_next(&b, &ev)) {
        int rendered = 0;
        for (struct hub_sub *s = h->subs; s; s = s->next) {
            if (s->dropped || !filter_match(&s->f, it->ident.agent, &ev)) {
                continue;
            }
            if (!rendered) {
                tt__buf_reset(&out);
                tt__json j;
                tt__json_init(&j, &out);
                tt__json_raw(&j, "data: ", 6);
                render_event(&j, it->ident.agent, it->ident.instance, &ev);
                tt__json_raw(&j, "\n\n", 2);
                if (j.err) {
                    break;
                }
                rendered = 1;
            }
            sub_append(h, s, (const char *)out.data, out.len);
        }
    }
    pthread_mutex_unlock(&h->lock);
    tt__buf_fini(&out);
}

void hub_publish_json(struct hub *h, const char *type, const char *agent, const char *json,
                      size_t n)
{
    if (atomic_load_explicit(&h->n_subs_fast, memory_order_relaxed) == 0) {
        return;
    }
    tt__buf out;
    tt__buf_init(&out, n + 64);
    tt__buf_append(&out, "event: ", 7);
    tt__buf_append(&out, type, strlen(type));
    tt__buf_append(&out, "\ndata: ", 7);
    tt__buf_append(&out, json, n);
    int rc = tt__buf_append(&out, "\n\n", 2);
    pthread_mutex_lock(&h->lock);
    uint32_t bit = strcmp(type, "alert") == 0 ? HUB_KIND_ALERT : 0;
    for (struct hub_sub *s = h->subs; s && rc == 0; s = s->next) {
        if (s->f.kinds && !(s->f.kinds & bit)) {
            continue; /* a kind filter that does not name this message's kind */
        }
        if (!s->f.agent[0] || (agent && strcmp(s->f.agent, agent) == 0)) {
            sub_append(h, s, (const char *)out.data, out.len);
        }
    }
    pthread_mutex_unlock(&h->lock);
    tt__buf_fini(&out);
}

struct hub_sub *hub_subscribe(struct hub *h, const struct hub_filter *f)
{
    struct hub_sub *s = calloc(1, sizeof *s);
    if (!s) {
        return NULL;
    }
    s->hub = h;
    s->f = *f;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &a);
    pthread_condattr_destroy(&a);
    tt__buf_init(&s->q, h->queue_bytes + 4096);
    pthread_mutex_lock(&h->lock);
    if (h->shutdown || h->n_subs >= h->max_subs) {
        pthread_mutex_unlock(&h->lock);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
        return NULL;
    }
    s->next = h->subs;
    h->subs = s;
    h->n_subs++;
    h->subscribed_total++;
    atomic_store(&h->n_subs_fast, h->n_subs);
    pthread_mutex_unlock(&h->lock);
    return s;
}

ssize_t hub_read(struct hub_sub *s, char *buf, size_t n, int timeout_ms)
{
    struct timespec until =
        tt__deadline_ms(CLOCK_MONOTONIC, timeout_ms > 0 ? (uint64_t)timeout_ms : 0);
    pthread_mutex_lock(&s->lock);
    while (!s->dropped && s->off == s->q.len) {
        if (pthread_cond_timedwait(&s->cond, &s->lock, &until) == ETIMEDOUT) {
            break;
        }
    }
    ssize_t got;
    if (s->dropped) {
        got = -1;
    } else {
        size_t k = s->q.len - s->off < n ? s->q.len - s->off : n;
        memcpy(buf, s->q.data + s->off, k);
        s->off += k;
        if (s->off == s->q.len) {
            s->off = s->q.len = 0;
            tt__buf_shrink(&s->q, 65536);
        }
        got = (ssize_t)k;
    }
    pthread_mutex_unlock(&s->lock);
    return got;
}

void hub_unsubscribe(struct hub_sub *s)
{
    if (!s) {
        return;
    }
    struct hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    for (struct hub_sub **pp = &h->subs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            h->n_subs--;
            break;
        }
    }
    atomic_store(&h->n_subs_fast, h->n_subs);
    pthread_mutex_unlock(&h->lock);
    tt__buf_fini(&s->q);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

void hub_shutdown(struct hub *h)
{
    pthread_mutex_lock(&h->lock);
    h->shutdown = 1;
    for (struct hub_sub *s = h->subs; s; s = s->next) {
        pthread_mutex_lock(&s->lock);
        s->dropped = 1;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&h->lock);
}

void hub_counters(struct hub *h, struct hub_counters *out)
{
    pthread_mutex_lock(&h->lock);
    out->subscribers = h->n_subs;
    out->subscribed_total = h->subscribed_total;
    out->disconnected_slow = h->disconnected_slow;
    pthread_mutex_unlock(&h->lock);
    out->events_sent = atomic_load(&h->events_sent);
}

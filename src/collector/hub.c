/*
 * hub.c - live fan-out to subscribers.
 *
 * The ingest thread only hands a committed batch over (a copy of its payload onto a bounded
 * backlog); the fan-out thread renders each event once and appends it to the queues of the
 * subscribers that want it; each subscriber's HTTP thread reads its own queue. So a slow, stalled
 * or absent reader can cost the fan-out thread time, never the ingest loop: if the fan-out
 * falls behind, whole batches are left out of the live stream (counted), and every subscriber is
 * told how many events it missed with an "event: lag" message.
 *
 * INVARIANTS
 * - The backlog (jobs, backlog_bytes, pending_skip, stop) is guarded by hub.qlock; the list of
 *   subscribers by hub.lock; each subscriber's queue by its own lock. Order: hub.lock, then one
 *   subscriber lock at a time; hub.qlock is never held with another lock.
 * - backlog_bytes <= HUB_BACKLOG_BYTES: a batch that would exceed it is not queued, and its
 *   events are counted in events_skipped and owed to every subscriber as a lag notice.
 * - A subscriber queue never exceeds its bound: an append that would exceed it marks the
 *   subscriber dropped instead (counted), and its reader sees -1 and ends the stream.
 * - No field of an event in the live stream is longer than HUB_FIELD_MAX (it is cut, with a
 *   marker), and no event longer than HUB_EVENT_MAX (it is replaced by its envelope with
 *   "truncated"), so one large event cannot overflow the queues of every subscriber.
 * - Publishing never waits for a reader or for the fan-out thread.
 */
#include "collector/hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/api/render.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/json.h"

#define HUB_BACKLOG_BYTES (64u << 20)
#define HUB_FIELD_MAX (64u << 10)
#define HUB_EVENT_MAX (512u << 10)

struct hub_sub {
    struct hub *hub;
    struct hub_filter f;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tt__buf q;     /* queued stream text */
    size_t off;    /* bytes of q already read */
    int dropped;   /* too slow, or the hub is shutting down */
    uint64_t owed; /* events skipped while subscribed, not yet told (hub.lock) */
    int lagged;    /* it was ever told of skipped events (hub.lock) */
    struct hub_sub *next;
};

/* A committed batch waiting for the fan-out thread (owned by the backlog, then the thread). */
struct hub_job {
    struct hub_job *next;
    char agent[256];
    uint8_t instance[16];
    tt__batch batch; /* iterator rebased onto raw */
    size_t raw_len;
    uint8_t raw[];
};

struct hub {
    /* backlog: hub.qlock */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct hub_job *head, *tail;
    size_t backlog_bytes;
    uint64_t pending_skip; /* events skipped since the fan-out thread last looked */
    int stop;
    pthread_t thread;
    int thread_started;
    /* subscribers: hub.lock */
    pthread_mutex_t lock;
    struct hub_sub *subs;
    size_t n_subs;
    size_t max_subs;
    size_t queue_bytes;
    int shutdown;
    uint64_t subscribed_total;
    uint64_t disconnected_slow;
    uint64_t lagging; /* subscribers told of skipped events */
    /* statistics, relaxed atomics */
    _Atomic uint64_t events_sent;
    _Atomic uint64_t events_skipped;
    _Atomic uint64_t fields_truncated;
    _Atomic uint64_t events_truncated;
    _Atomic size_t n_live; /* subscribers not dropped (written under hub.lock): read without
                            * the lock to skip all work when nobody listens */
};

static int filter_match(const struct hub_filter *f, const char *agent, const tt__event *ev)
{
    if (f->agent[0] && strcmp(f->agent, agent) != 0) {
        return 0;
    }
    return tt__event_matches(ev, f->session, f->kinds, f->min_severity);
}

/* Append to a subscriber's queue, or drop the subscriber when it is full (hub.lock held).
 * Events skipped for it since the last message come first, as one "lag" message. */
static void sub_append(struct hub *h, struct hub_sub *s, const char *p, size_t n)
{
    char lag[96];
    size_t ln = 0;
    if (s->owed) {
        ln = (size_t)snprintf(lag, sizeof lag, "event: lag\ndata: {\"skipped\":%llu}\n\n",
                              (unsigned long long)s->owed);
    }
    pthread_mutex_lock(&s->lock);
    if (!s->dropped) {
        if (s->off > 0 && s->off == s->q.len) {
            s->q.len = s->off = 0;
        }
        /* Wake the reader only when its queue was empty: it then takes all there is, so a
         * busy stream costs one wake-up per read, not one per message. */
        int was_empty = s->q.len == s->off;
        if (s->q.len - s->off + n + ln > h->queue_bytes ||
            (ln && tt__buf_append(&s->q, lag, ln) != 0) || tt__buf_append(&s->q, p, n) != 0) {
            s->dropped = 1;
            h->disconnected_slow++;
            atomic_fetch_sub_explicit(&h->n_live, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&h->events_sent, 1, memory_order_relaxed);
            if (ln) {
                s->owed = 0;
                h->lagging += !s->lagged;
                s->lagged = 1;
            }
        }
        if (was_empty || s->dropped) {
            pthread_cond_signal(&s->cond);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* One event as an SSE message in out: fields cut at HUB_FIELD_MAX, and an event still above
 * HUB_EVENT_MAX replaced by its envelope. Returns 0, or -1 if not even that fits. */
static int render_live(struct hub *h, tt__buf *out, const struct hub_job *jb, const tt__event *ev)
{
    tt__buf_reset(out);
    tt__json j;
    tt__json_init(&j, out);
    j.str_max = HUB_FIELD_MAX;
    tt__json_raw(&j, "data: ", 6);
    render_event(&j, jb->agent, jb->instance, ev);
    if (!j.err && j.truncated) {
        /* Say so in the object itself: reopen it for one more key. */
        out->len--;
        j.need_comma = 1;
        tt__json_kv_u64(&j, "truncated_fields", j.truncated);
        tt__json_obj_end(&j);
        atomic_fetch_add_explicit(&h->fields_truncated, j.truncated, memory_order_relaxed);
    }
    if (j.err) {
        tt__buf_reset(out);
        tt__json_init(&j, out);
        tt__json_raw(&j, "data: ", 6);
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, "agent", jb->agent);
        tt__json_key(&j, "instance");
        tt__json_hex(&j, jb->instance, 16);
        tt__json_kv_u64(&j, "seq", ev->seq);
        const char *kind = tt__ev_kind_name(ev->kind);
        tt__json_kv_cstr(&j, "kind", kind ? kind : "unknown");
        tt__json_kv_cstr(&j, "truncated",
                         "event too large for the live stream; read it at "
                         "/api/v1/events");
        tt__json_obj_end(&j);
        atomic_fetch_add_explicit(&h->events_truncated, 1, memory_order_relaxed);
    }
    tt__json_raw(&j, "\n\n", 2);
    return j.err ? -1 : 0;
}

static void fan_out(struct hub *h, struct hub_job *jb, uint64_t skipped, tt__buf *out)
{
    tt__event ev;
    pthread_mutex_lock(&h->lock);
    for (struct hub_sub *s = h->subs; s && skipped; s = s->next) {
        s->owed += skipped;
    }
    while (atomic_load_explicit(&h->n_live, memory_order_relaxed) &&
           tt__batch_next(&jb->batch, &ev)) {
        int rendered = 0;
        for (struct hub_sub *s = h->subs; s; s = s->next) {
            if (s->dropped || !filter_match(&s->f, jb->agent, &ev)) {
                continue;
            }
            if (!rendered) {
                if (render_live(h, out, jb, &ev) != 0) {
                    break;
                }
                rendered = 1;
            }
            sub_append(h, s, (const char *)out->data, out->len);
        }
    }
    pthread_mutex_unlock(&h->lock);
}

static void *fan_out_main(void *arg)
{
    struct hub *h = arg;
    tt__buf out;
    tt__buf_init(&out, HUB_EVENT_MAX + 4096);
    pthread_mutex_lock(&h->qlock);
    for (;;) {
        while (!h->head && !h->stop) {
            pthread_cond_wait(&h->qcond, &h->qlock);
        }
        if (h->stop) {
            break;
        }
        struct hub_job *jb = h->head;
        h->head = jb->next;
        h->tail = h->head ? h->tail : NULL;
        uint64_t skipped = h->pending_skip;
        h->pending_skip = 0;
        pthread_mutex_unlock(&h->qlock);
        fan_out(h, jb, skipped, &out);
        tt__buf_shrink(&out, 65536);
        pthread_mutex_lock(&h->qlock);
        h->backlog_bytes -= jb->raw_len;
        free(jb);
    }
    pthread_mutex_unlock(&h->qlock);
    tt__buf_fini(&out);
    return NULL;
}

struct hub *hub_new(size_t max_subs, size_t queue_bytes)
{
    struct hub *h = calloc(1, sizeof *h);
    if (!h) {
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->qlock, NULL);
    pthread_cond_init(&h->qcond, NULL);
    h->max_subs = max_subs;
    h->queue_bytes = queue_bytes;
    if (pthread_create(&h->thread, NULL, fan_out_main, h) != 0) {
        hub_free(h);
        return NULL;
    }
    h->thread_started = 1;
    return h;
}

static void stop_thread(struct hub *h)
{
    pthread_mutex_lock(&h->qlock);
    h->stop = 1;
    pthread_cond_signal(&h->qcond);
    pthread_mutex_unlock(&h->qlock);
    if (h->thread_started) {
        pthread_join(h->thread, NULL);
        h->thread_started = 0;
    }
}

void hub_free(struct hub *h)
{
    if (!h) {
        return;
    }
    stop_thread(h);
    for (struct hub_job *jb = h->head, *next; jb; jb = next) {
        next = jb->next;
        free(jb);
    }
    pthread_cond_destroy(&h->qcond);
    pthread_mutex_destroy(&h->qlock);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void hub_publish(struct hub *h, const struct store_item *it)
{
    if (atomic_load_explicit(&h->n_live, memory_order_relaxed) == 0) {
        return;
    }
    const tt__batch *b = &it->batch;
    if (!it->raw || b->it.p < it->raw || b->it.end < b->it.p || b->it.end > it->raw + it->raw_len) {
        return; /* not an iterator over raw: nothing this hub can copy */
    }
    size_t start = (size_t)(b->it.p - it->raw), end = (size_t)(b->it.end - it->raw);
    struct hub_job *jb = NULL;
    pthread_mutex_lock(&h->qlock);
    int room = !h->stop && h->backlog_bytes + it->raw_len <= HUB_BACKLOG_BYTES;
    h->backlog_bytes += room ? it->raw_len : 0;
    pthread_mutex_unlock(&h->qlock);
    if (room) {
        jb = malloc(sizeof *jb + it->raw_len);
    }
    if (!jb) {
        pthread_mutex_lock(&h->qlock);
        h->backlog_bytes -= room ? it->raw_len : 0;
        h->pending_skip += b->n_events;
        pthread_mutex_unlock(&h->qlock);
        atomic_fetch_add_explicit(&h->events_skipped, b->n_events, memory_order_relaxed);
        return;
    }
    jb->next = NULL;
    snprintf(jb->agent, sizeof jb->agent, "%s", it->ident.agent);
    memcpy(jb->instance, it->ident.instance, 16);
    memcpy(jb->raw, it->raw, it->raw_len);
    jb->raw_len = it->raw_len;
    jb->batch = *b;
    jb->batch.data = jb->raw;
    tt__pb_reader_init(&jb->batch.it, jb->raw + start, end - start);
    pthread_mutex_lock(&h->qlock);
    if (h->tail) {
        h->tail->next = jb;
    } else {
        h->head = jb;
    }
    h->tail = jb;
    pthread_cond_signal(&h->qcond);
    pthread_mutex_unlock(&h->qlock);
}

void hub_publish_json(struct hub *h, const char *type, const char *agent, const char *json,
                      size_t n)
{
    if (atomic_load_explicit(&h->n_live, memory_order_relaxed) == 0) {
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
    tt__cond_init_mono(&s->cond);
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
    atomic_fetch_add_explicit(&h->n_live, 1, memory_order_relaxed);
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
        if (k) { /* an idle queue may have no buffer yet: memcpy from NULL is undefined */
            memcpy(buf, s->q.data + s->off, k);
        }
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
            h->lagging -= s->lagged;
            if (!s->dropped) {
                atomic_fetch_sub_explicit(&h->n_live, 1, memory_order_relaxed);
                /* Closed with messages it never took (the HTTP idle timeout ends a reader
                 * that stopped reading, often before its queue fills): it was behind. */
                pthread_mutex_lock(&s->lock);
                h->disconnected_slow += s->q.len > s->off && !h->shutdown;
                pthread_mutex_unlock(&s->lock);
            }
            break;
        }
    }
    pthread_mutex_unlock(&h->lock);
    tt__buf_fini(&s->q);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

void hub_shutdown(struct hub *h)
{
    stop_thread(h);
    pthread_mutex_lock(&h->lock);
    h->shutdown = 1;
    for (struct hub_sub *s = h->subs; s; s = s->next) {
        pthread_mutex_lock(&s->lock);
        if (!s->dropped) {
            atomic_fetch_sub_explicit(&h->n_live, 1, memory_order_relaxed);
        }
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
    out->lagging = h->lagging;
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_lock(&h->qlock);
    out->backlog_bytes = h->backlog_bytes;
    pthread_mutex_unlock(&h->qlock);
    out->events_sent = atomic_load(&h->events_sent);
    out->events_skipped = atomic_load(&h->events_skipped);
    out->fields_truncated = atomic_load(&h->fields_truncated);
    out->events_truncated = atomic_load(&h->events_truncated);
}

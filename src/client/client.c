/*
 * client.c - the life of a client: tt_open, tt_flush, tt_close, the calling thread's ring (made
 * and registered on its first event), fork handling, the counters (tt_stats_get), and the
 * library's error and cause names. The event calls are in emit.c, the rings in ring.c, the
 * background thread in worker.c.
 *
 * A client is registered in a process-wide list so that pthread_atfork handlers can take its
 * locks around fork(); the child resets it lazily, at its first use (tt__client_after_fork).
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "client/client.h"
#include "client/nats.h"
#include "client/spool.h"
#include "client/trace.h"
#include "common/clock.h"

__thread struct tt__tls_cache tt__tls __attribute__((tls_model("initial-exec")));

/* Every client of the process, for fork handling. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static tt_client *all_clients;
static _Atomic uint64_t next_uid = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* --- errors and names ---------------------------------------------------------------------- */

TT_API const char *tt_strerror(int err)
{
    switch (err) {
    case TT_OK:
        return "success";
    case TT_ENOBUFS:
        return "ring full: event dropped (buffer_full)";
    case TT_E2BIG:
        return "event larger than max_event_bytes: dropped (too_large)";
    case TT_ESHUTDOWN:
        return "client closing: event dropped (closed)";
    case TT_EINVAL:
        return "invalid argument";
    case TT_ENOMEM:
        return "out of memory";
    case TT_ETIMEDOUT:
        return "deadline expired";
    case TT_EPROTO:
        return "protocol error";
    case TT_ECONNREFUSED:
        return "connection refused";
    case TT_EBLOCKED:
        return "blocked by a compliance rule: the step must not run";
    default:
        if (err < 0 && err > -4096) {
            return strerror(-err);
        }
        return "unknown error";
    }
}

TT_API const char *tt_version(void)
{
    return TT_VERSION_STRING;
}

TT_API void tt_free(void *p)
{
    free(p);
}

TT_API const char *tt_drop_cause_name(int cause)
{
    static const char *const names[TT_DROP__COUNT] = {
        "buffer_full", "spool_full", "spool_error", "spool_corrupt", "too_large",
        "shutdown",    "oom",        "closed",      "rejected",      "no_ring"};
    if (cause < 0 || cause >= TT_DROP__COUNT) {
        return "unknown";
    }
    return names[cause];
}

/* --- the calling thread's ring ----------------------------------------------------------------------------- */

/* Runs when a thread that used the client exits: the worker drains and frees the ring. */
static void ring_thread_exit(void *p)
{
    tt__ring_orphan(p);
}

tt__ring *tt__client_ring(tt_client *c, int *rc)
{
    if (atomic_load_explicit(&c->closing, memory_order_acquire)) {
        atomic_fetch_add_explicit(&c->dropped_closed, 1, memory_order_relaxed);
        *rc = TT_ESHUTDOWN;
        return NULL;
    }
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    tt__ring *r = pthread_getspecific(c->key);
    if (!r) {
        if (c->n_rings >= c->cfg.max_threads) {
            pthread_mutex_unlock(&c->reg_lock);
            atomic_fetch_add_explicit(&c->dropped_no_ring, 1, memory_order_relaxed);
            *rc = TT_ENOBUFS;
            return NULL;
        }
        r = tt__ring_new(c->cfg.ring_bytes, c->max_record, ++c->next_ring_id);
        if (!r || pthread_setspecific(c->key, r) != 0) {
            pthread_mutex_unlock(&c->reg_lock);
            tt__ring_free(r);
            atomic_fetch_add_explicit(&c->dropped_oom, 1, memory_order_relaxed);
            *rc = TT_ENOMEM;
            return NULL;
        }
        r->next = c->rings;
        c->rings = r;
        c->n_rings++;
    }
    int started = c->worker_started;
    if (!started && tt__worker_start(c) == 0) {
        started = 1;
    }
    pthread_mutex_unlock(&c->reg_lock);
    if (!started) {
        atomic_fetch_add_explicit(&c->dropped_oom, 1, memory_order_relaxed);
        *rc = TT_ENOMEM;
        return NULL;
    }
    tt__tls.c = c;
    tt__tls.uid = atomic_load_explicit((_Atomic uint64_t *)&c->uid, memory_order_relaxed);
    tt__tls.r = r;
    tt__tls.tsc = tt__clock_tsc;
    tt__ring_view_set(r);
    return r;
}

/* --- statistics ---------------------------------------------------------------------------- */

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void tt__client_stats_read(tt_client *c, tt_stats *out)
{
    tt_stats s;
    memset(&s, 0, sizeof s);
    uint64_t in_rings = 0;
    pthread_mutex_lock(&c->reg_lock);
    for (tt__ring *r = c->rings; r; r = r->next) {
        tt__ring_counts n;
        tt__ring_counts_get(r, &n);
        s.emitted += n.committed + n.dropped_full + n.dropped_large;
        s.dropped[TT_DROP_BUFFER_FULL] += n.dropped_full;
        s.dropped[TT_DROP_TOO_LARGE] += n.dropped_large;
        in_rings += n.committed > n.drained ? n.committed - n.drained : 0;
    }
    pthread_mutex_unlock(&c->reg_lock);
    tt__wstats *w = &c->ws;
    s.emitted +=
        LD(w->orphan_emitted) + LD(c->dropped_closed) + LD(c->dropped_no_ring) + LD(c->dropped_oom);
    s.dropped[TT_DROP_BUFFER_FULL] += LD(w->orphan_dropped_full);
    s.dropped[TT_DROP_TOO_LARGE] += LD(w->orphan_dropped_large);
    s.dropped[TT_DROP_CLOSED] += LD(c->dropped_closed);
    s.dropped[TT_DROP_NO_RING] += LD(c->dropped_no_ring);
    s.dropped[TT_DROP_OOM] += LD(c->dropped_oom);
    for (int i = 0; i < TT_DROP__COUNT; i++) {
        s.dropped[i] += LD(w->dropped[i]);
        s.dropped_total += s.dropped[i];
    }
    s.sent = LD(w->sent);
    s.acked = LD(w->acked);
    s.possibly_delivered = LD(w->possibly_delivered);
    s.spooled = LD(w->in_spool);
    s.buffered = in_rings + LD(w->in_batch) + LD(w->in_window) + s.spooled;
    s.frames_sent = LD(w->frames_sent);
    s.bytes_sent = LD(w->bytes_sent);
    s.reconnects = LD(w->reconnects);
    s.connected = LD(w->connected);
    s.inherited = LD(w->inherited);
    s.tls_failures = LD(w->tls_failures);
    tt__comply_stats(c, &s);
    *out = s;
}

TT_API int tt_stats_get(tt_client *c, tt_stats *out, size_t size)
{
    if (!c || !out || size == 0) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c); /* the parent's worker may have been mid-cycle */
    }
    pthread_mutex_unlock(&c->reg_lock);
    /* A snapshot between two cycles of the worker (tt__wstats.gen), so that the counters add up:
     * the worker's cycles take microseconds; one stuck in a slow disk's fsync is waited for up to
     * 100 ms, after which the last read is returned as it is. */
    tt_stats s;
    uint64_t t0 = 0;
    for (unsigned tries = 0;; tries++) {
        uint64_t g = atomic_load_explicit(&c->ws.gen, memory_order_acquire);
        tt__client_stats_read(c, &s);
        atomic_thread_fence(memory_order_acquire);
        if ((g & 1) == 0 && atomic_load_explicit(&c->ws.gen, memory_order_relaxed) == g) {
            break;
        }
        if (tries < 64) {
            sched_yield();
            continue;
        }
        uint64_t now = tt__mono_ns();
        if (t0 == 0) {
            t0 = now;
        } else if (now - t0 >= 100000000u) {
            break;
        }
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    memset(out, 0, size);
    memcpy(out, &s, size < sizeof s ? size : sizeof s);
    return 0;
}

TT_API int tt_connection_error(tt_client *c, char *buf, size_t n)
{
    if (!c || !buf || n == 0) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->ctl_lock);
    int len = snprintf(buf, n, "%s", c->conn_error);
    pthread_mutex_unlock(&c->ctl_lock);
    return len;
}

TT_API int tt_instance_id(tt_client *c, uint8_t out[16])
{
    if (!c || !out) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    memcpy(out, c->instance, 16);
    pthread_mutex_unlock(&c->reg_lock);
    return 0;
}

/* --- fork ---------------------------------------------------------------------------------- */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
    for (tt_client *c = all_clients; c; c = c->all_next) {
        pthread_mutex_lock(&c->reg_lock);
        pthread_mutex_lock(&c->ctl_lock);
        pthread_mutex_lock(&c->guard.lock); /* the guard's state is whole in the child */
        pthread_mutex_lock(&c->trace_lock); /* so are the trace context defaults */
    }
}

static void atfork_parent(void)
{
    for (tt_client *c = all_clients; c; c = c->all_next) {
        pthread_mutex_unlock(&c->trace_lock);
        pthread_mutex_unlock(&c->guard.lock);
        pthread_mutex_unlock(&c->ctl_lock);
        pthread_mutex_unlock(&c->reg_lock);
    }
    pthread_mutex_unlock(&all_lock);
}

/* In the child only the forking thread exists. Nothing here makes a system call: the client is
 * marked, and its first use in the child resets it (tt__client_after_fork). Changing uid makes
 * every thread-local cache miss. */
static void atfork_child(void)
{
    for (tt_client *c = all_clients; c; c = c->all_next) {
        pthread_mutex_unlock(&c->trace_lock);
        pthread_mutex_unlock(&c->guard.lock);
        pthread_mutex_unlock(&c->ctl_lock);
        pthread_mutex_unlock(&c->reg_lock);
        c->fork_pending = 1;
        atomic_store_explicit((_Atomic uint64_t *)&c->uid, atomic_fetch_add(&next_uid, 1),
                              memory_order_relaxed);
    }
    pthread_mutex_unlock(&all_lock);
}

static void atfork_register(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int fill_random(uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom(p + got, n - got, 0);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        got += (size_t)k;
    }
    return 0;
}

/* Called with c->reg_lock held, in a forked child, before the child's first event. */
void tt__client_after_fork(tt_client *c)
{
    c->fork_pending = 0;
    if (fill_random(c->instance, sizeof c->instance) != 0) {
        /* Without entropy, derive a distinct id from the pid and the clock. */
        uint64_t a = (uint64_t)getpid(), b = tt__wall_ns();
        memcpy(c->instance, &a, 8);
        memcpy(c->instance + 8, &b, 8);
    }
    c->start_unix_ns = tt__wall_ns();
    /* The parent's threads do not exist here: their rings are freed, and the forking thread's
     * ring is emptied, so none of the parent's events is ever sent or spooled by the child. */
    tt__ring *mine = pthread_getspecific(c->key);
    tt__ring **pp = &c->rings;
    c->n_rings = 0;
    while (*pp) {
        tt__ring *r = *pp;
        if (r == mine) {
            tt__ring_reset(r);
            c->n_rings++;
            pp = &r->next;
        } else {
            *pp = r->next;
            if (tt__fork_child_may_free()) {
                tt__ring_free(r);
            }
        }
    }
    tt__worker_forget(c); /* the parent's worker state, never joined */
    memset(&c->ws, 0, sizeof c->ws);
    atomic_store(&c->dropped_closed, 0);
    atomic_store(&c->dropped_no_ring, 0);
    atomic_store(&c->dropped_oom, 0);
    if (c->wake_fd >= 0) {
        close(c->wake_fd);
    }
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    tt__cond_init_mono(&c->ctl_cond);
    c->flush_req = c->flush_done = 0;
    c->worker_exited = 0;
    c->close_deadline_ns = 0;
    c->worker_started = 0;
    if (c->spool) {
        tt__spool_after_fork(c->spool, c->instance);
    }
}

/* --- open and close ------------------------------------------------------------------------ */

static void client_free(tt_client *c)
{
    tt__ring *r = c->rings;
    while (r) {
        tt__ring *next = r->next;
        tt__ring_free(r);
        r = next;
    }
    if (c->wake_fd >= 0) {
        close(c->wake_fd);
    }
    explicit_bzero(c->nats_token, sizeof c->nats_token);
    tt__spool_close(c->spool);
    tt__guard_fini(c);
    tt__comply_fini(c);
    pthread_mutex_destroy(&c->comply_lock);
    tt__trace_fini(c);
    pthread_mutex_destroy(&c->trace_lock);
    pthread_key_delete(c->key);
    pthread_mutex_destroy(&c->reg_lock);
    pthread_mutex_destroy(&c->ctl_lock);
    pthread_cond_destroy(&c->ctl_cond);
    free(c);
}

TT_API int tt_open(tt_client **out, const tt_config *cfg)
{
    if (!out) {
        return TT_EINVAL;
    }
    *out = NULL;
    pthread_once(&atfork_once, atfork_register);
    tt__clock_init();
    tt__cfg v;
    if (cfg) {
        v = cfg->v;
    } else {
        tt__cfg_defaults(&v);
    }
    char err[256];
    if (tt__cfg_validate(&v, err, sizeof err) != 0) {
        return TT_EINVAL;
    }
    tt_client *c = aligned_alloc(TT_CACHELINE, (sizeof *c + TT_CACHELINE - 1) & ~(size_t)63);
    if (!c) {
        return TT_ENOMEM;
    }
    memset(c, 0, sizeof *c);
    c->cfg = v;
    c->wake_fd = -1;
    c->max_record = v.max_event_bytes;
    c->nats = tt__nats_is_endpoint(v.endpoint);
    c->nats_pid = (int)getpid();
    if (!c->nats) {
        tt__endpoint_parse(v.endpoint, &c->ep, err, sizeof err);
    }
    pthread_mutex_init(&c->reg_lock, NULL);
    pthread_mutex_init(&c->ctl_lock, NULL);
    tt__cond_init_mono(&c->ctl_cond);
    tt__guard_init(c);
    pthread_mutex_init(&c->comply_lock, NULL);
    pthread_mutex_init(&c->trace_lock, NULL);
    int rc = pthread_key_create(&c->key, ring_thread_exit);
    if (rc) {
        tt__guard_fini(c);
        pthread_mutex_destroy(&c->comply_lock);
        pthread_mutex_destroy(&c->trace_lock);
        pthread_mutex_destroy(&c->reg_lock);
        pthread_mutex_destroy(&c->ctl_lock);
        pthread_cond_destroy(&c->ctl_cond);
        free(c);
        return -rc;
    }
    c->uid = atomic_fetch_add(&next_uid, 1);
    c->start_unix_ns = tt__wall_ns();
    rc = fill_random(c->instance, sizeof c->instance);
    if (rc == 0) {
        c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        rc = c->wake_fd < 0 ? -errno : 0;
    }
    if (rc == 0 && c->nats && v.nats_token_file[0]) {
        /* TT_EACCES when group or others may read the file (tt_config_set says why). */
        rc = tt__nats_token_load(v.nats_token_file, c->nats_token, sizeof c->nats_token, err,
                                 sizeof err);
    }
    if (rc == 0 && v.comply_policy_file[0]) {
        rc = tt__comply_load_file(c, v.comply_policy_file);
    }
    if (rc == 0 && v.spool_dir[0]) {
        rc = tt__spool_open(&c->spool, v.spool_dir, v.spool_max_bytes, (int)v.spool_policy, v.agent,
                            c->instance);
    }
    if (rc == 0) {
        pthread_mutex_lock(&c->reg_lock);
        rc = tt__worker_start(c);
        pthread_mutex_unlock(&c->reg_lock);
    }
    if (rc) {
        client_free(c);
        return rc;
    }
    pthread_mutex_lock(&all_lock);
    c->all_next = all_clients;
    all_clients = c;
    pthread_mutex_unlock(&all_lock);
    *out = c;
    return 0;
}

static void unregister(tt_client *c)
{
    pthread_mutex_lock(&all_lock);
    for (tt_client **pp = &all_clients; *pp; pp = &(*pp)->all_next) {
        if (*pp == c) {
            *pp = c->all_next;
            break;
        }
    }
    pthread_mutex_unlock(&all_lock);
}

static int close_impl(tt_client *c, uint32_t timeout_ms, tt_stats *out, size_t size)
{
    if (!c) {
        return 0;
    }
    uint64_t deadline = tt__mono_ns() + (uint64_t)timeout_ms * 1000000u;
    /* Pairs with the acquire load in tt__client_ring; the uid change sends every thread's next
     * event there. */
    atomic_store_explicit(&c->closing, 1, memory_order_release);
    atomic_store_explicit((_Atomic uint64_t *)&c->uid, atomic_fetch_add(&next_uid, 1),
                          memory_order_release);
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    int started = c->worker_started;
    pthread_mutex_unlock(&c->reg_lock);
    int result = 0;
    if (started) {
        pthread_mutex_lock(&c->ctl_lock);
        c->close_deadline_ns = deadline;
        pthread_mutex_unlock(&c->ctl_lock);
        tt__worker_wake(c);
        pthread_join(c->worker, NULL);
        pthread_mutex_lock(&c->ctl_lock);
        result = c->close_result;
        pthread_mutex_unlock(&c->ctl_lock);
    }
    tt__worker_free(c);
    unregister(c);
    if (out && size) {
        tt_stats_get(c, out, size);
    }
    client_free(c);
    return result;
}

TT_API int tt_close(tt_client *c, uint32_t timeout_ms)
{
    return close_impl(c, timeout_ms, NULL, 0);
}

TT_API int tt_close_stats(tt_client *c, uint32_t timeout_ms, tt_stats *out, size_t size)
{
    return close_impl(c, timeout_ms, out, size);
}

TT_API int tt_flush(tt_client *c, uint32_t timeout_ms)
{
    if (!c) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->reg_lock);
    if (c->fork_pending) {
        tt__client_after_fork(c);
    }
    int started = c->worker_started || tt__worker_start(c) == 0;
    pthread_mutex_unlock(&c->reg_lock);
    if (!started) {
        return TT_ENOMEM;
    }
    struct timespec until = tt__deadline_ms(CLOCK_MONOTONIC, timeout_ms);
    pthread_mutex_lock(&c->ctl_lock);
    uint64_t ticket = ++c->flush_req;
    pthread_mutex_unlock(&c->ctl_lock);
    tt__worker_wake(c);
    pthread_mutex_lock(&c->ctl_lock);
    int rc = 0;
    while (c->flush_done < ticket && !c->worker_exited) {
        if (pthread_cond_timedwait(&c->ctl_cond, &c->ctl_lock, &until) == ETIMEDOUT) {
            rc = c->flush_done >= ticket ? 0 : TT_ETIMEDOUT;
            break;
        }
    }
    if (c->flush_done < ticket) {
        rc = TT_ETIMEDOUT;
    }
    pthread_mutex_unlock(&c->ctl_lock);
    return rc;
}

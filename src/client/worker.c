/*
 * worker.c - the client's one background thread: it drains every thread's ring, batches the
 * events by bytes and by time, encodes and compresses each batch into a frame, keeps the frames
 * until the collector acknowledges them, and settles everything at close.
 *
 * The worker is never woken per event. It sleeps in poll() for a period that depends on how
 * much it found last time (down to 100 us under load, up to the flush interval when idle),
 * and is woken early only by the collector's socket and by close or flush requests.
 *
 * INVARIANTS
 * - Every event taken from a ring is, at any time, in exactly one place: the batch, a frame in
 *   the window, the spool, or a settled counter (acked, possibly_delivered, dropped[cause]).
 *   ws.in_batch, ws.in_window and ws.in_spool mirror the first three.
 * - Sequence numbers are given in drain order, from 1, with no gap: a gap the collector sees
 *   is a loss after the worker, and the worker counts it.
 * - The window never holds more than window_bytes of frames, except one frame; when it is full
 *   and no spool is configured, the worker stops draining and the rings fill (buffer_full).
 * - Frames are immutable once sealed: a resend repeats the same (instance, seq) range, which is
 *   what makes the collector's dedup exact.
 */
#include "client/worker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/encode.h"
#include "client/nats.h"
#include "client/spool.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define ADD(x, v) ST(x, LD(x) + (v))

/* --- frames -------------------------------------------------------------------------------- */

void tt__fq_push(tt__fq *q, tt__frame_out *f)
{
    f->next = NULL;
    if (q->tail) {
        q->tail->next = f;
    } else {
        q->head = f;
    }
    q->tail = f;
    q->n_frames++;
    q->n_events += f->n_events;
    q->bytes += f->len;
}

tt__frame_out *tt__fq_pop(tt__fq *q)
{
    tt__frame_out *f = q->head;
    if (!f) {
        return NULL;
    }
    q->head = f->next;
    if (!q->head) {
        q->tail = NULL;
    }
    q->n_frames--;
    q->n_events -= f->n_events;
    q->bytes -= f->len;
    f->next = NULL;
    return f;
}

void tt__frame_out_free(tt__frame_out *f)
{
    if (f) {
        free(f->data);
        free(f);
    }
}

static void window_changed(tt__worker *w)
{
    ST(w->c->ws.in_window, w->window.n_events);
}

void tt__worker_frame_acked(tt__worker *w, tt__frame_out *f)
{
    ADD(w->c->ws.acked, f->n_events);
    if (f->from_spool && w->c->spool) {
        tt__spool_ack(w->c->spool, f->spool_id);
    }
    tt__frame_out_free(f);
}

void tt__worker_frame_rejected(tt__worker *w, tt__frame_out *f)
{
    ADD(w->c->ws.dropped[TT_DROP_REJECTED], f->n_events);
    if (f->from_spool && w->c->spool) {
        tt__spool_ack(w->c->spool, f->spool_id);
    }
    tt__frame_out_free(f);
}

/* --- sealing batches ----------------------------------------------------------------------- */

static int window_has_room(const tt__worker *w)
{
    return w->window.bytes < w->c->cfg.window_bytes;
}

/*
 * Compress the raw Batch payload into a new frame; NULL if memory is short. The compressor
 * writes into the worker's scratch buffer (allocated once), and the frame gets a buffer of its
 * exact size. Allocating compressBound() bytes per frame and shrinking them afterwards made
 * glibc mmap and mremap every frame (they are above its mmap threshold), and each of those
 * takes the process's mmap lock for writing, which stalls every thread that page-faults at
 * that moment, the application's included.
 */
static tt__frame_out *make_frame(tt__worker *w, const uint8_t *raw, size_t rawlen)
{
    tt__frame_out *f = calloc(1, sizeof *f);
    if (!f) {
        return NULL;
    }
    if (w->zc) {
        size_t n = ZSTD_compressCCtx(w->zc, w->zbuf + TT_FRAME_HDR_MAX, w->zcap - TT_FRAME_HDR_MAX,
                                     raw, rawlen, (int)w->c->cfg.compression_level);
        if (!ZSTD_isError(n) && n < rawlen) {
            size_t len = tt__frame_finish(w->zbuf, TT_FT_BATCH, TT_FF_ZSTD, (uint32_t)rawlen, n);
            f->data = malloc(len);
            if (!f->data) {
                free(f);
                return NULL;
            }
            memcpy(f->data, w->zbuf, len);
            f->len = len;
            return f;
        }
    }
    /* Incompressible or compression off: the payload goes as it is, after the 12-byte head. */
    f->data = malloc(TT_FRAME_PREFIX + TT_FRAME_BODY_HDR + rawlen);
    if (!f->data) {
        free(f);
        return NULL;
    }
    memcpy(f->data + TT_FRAME_PREFIX + TT_FRAME_BODY_HDR, raw, rawlen);
    f->len = tt__frame_finish(f->data, TT_FT_BATCH, 0, (uint32_t)rawlen, rawlen);
    return f;
}

static void batch_reset(tt__worker *w)
{
    w->batch.len = TT_BATCH_HDR_MAX;
    w->batch_n = 0;
    ST(w->c->ws.in_batch, 0);
}

/* Put a sealed frame where it belongs: the window, or the spool when the window is full. */
static void place_frame(tt__worker *w, tt__frame_out *f)
{
    tt_client *c = w->c;
    if (f->n_events == 0 || window_has_room(w) || !c->spool) {
        tt__fq_push(&w->window, f);
        if (!w->send_next && w->state == TT_CONN_READY) {
            w->send_next = f;
            w->send_off = 0;
        }
        window_changed(w);
        return;
    }
    tt__spool_append(c->spool, f); /* counts its own drops */
    tt__frame_out_free(f);
}

/* Seal the batch into a frame. A heartbeat seals an empty batch carrying only the client's
 * counters. Returns 0, or -1 when there is no room (window full, no spool). */
static int seal(tt__worker *w, int heartbeat, uint64_t now)
{
    tt_client *c = w->c;
    if (w->batch_n == 0 && !heartbeat) {
        return 0;
    }
    if (!window_has_room(w) && !c->spool) {
        return -1;
    }
    tt_stats s;
    tt__client_stats_read(c, &s);
    uint64_t first = w->batch_n ? w->batch_first_seq : w->next_seq;
    uint64_t base = w->batch_n ? w->batch_base : tt__clock_unix(&w->cal, tt__ticks());
    if (tt__encode_stats(&w->batch, &s) != 0) {
        /* The batch buffer has room for the counters by construction; if not, send without. */
        TT_ASSERT(0);
    }
    size_t start =
        tt__encode_batch_header(w->batch.data, TT_BATCH_HDR_MAX, c->instance, first, base);
    tt__frame_out *f = make_frame(w, w->batch.data + start, w->batch.len - start);
    if (!f) {
        ADD(c->ws.dropped[TT_DROP_OOM], w->batch_n);
        batch_reset(w);
        return 0;
    }
    f->first_seq = w->batch_n ? first : 0;
    f->n_events = w->batch_n;
    memcpy(f->instance, c->instance, 16);
    batch_reset(w);
    w->last_frame_ns = now;
    place_frame(w, f);
    return 0;
}

/* --- draining rings ------------------------------------------------------------------------ */

/* Drain one ring into the batch until the ring is empty or the batch is full. Returns the
 * bytes taken; *full is set when the batch filled up. */
static uint64_t drain_ring(tt__worker *w, tt__ring *r, int *full, uint64_t now)
{
    uint64_t tail;
    uint64_t head = tt__ring_read(r, &tail);
    uint64_t start = tail, n = 0;
    size_t limit = w->batch_limit;
    while (tail < head) {
        const tt__rec_hdr *h = tt__ring_record(r, tail);
        if (h->kind == TT_REC_PAD) {
            tail += h->len;
            continue;
        }
        if (w->batch.len >= limit) {
            *full = 1;
            break;
        }
        uint64_t t = tt__clock_unix(&w->cal, h->ticks);
        if (w->batch_n == 0) {
            w->batch_first_seq = w->next_seq;
            w->batch_base = t;
            /* The batch's age counts from the previous pass, not from now: its first event
             * may have waited in the ring since then, and flush_interval_ms bounds the time
             * from the emit call to the send, not from the drain. */
            w->batch_open_ns = w->prev_drain_ns && w->prev_drain_ns < now ? w->prev_drain_ns : now;
        }
        tt__encode_record(&w->batch, h, t, w->batch_base, &w->cal, w->steps, w->c);
        w->batch_n++;
        w->next_seq++;
        n++;
        tail += h->len;
    }
    if (n) {
        w->drained_total += n;
        ST(w->c->ws.in_batch, w->batch_n);
    }
    tt__ring_release(r, tail, n);
    return tail - start;
}

/* Free a ring whose thread has exited, once empty, keeping its counts. reg_lock held. */
static int reap_ring(tt__worker *w, tt__ring **pp)
{
    tt__ring *r = *pp;
    if (!tt__ring_reapable(r)) {
        return 0;
    }
    tt__ring_counts n;
    tt__ring_counts_get(r, &n);
    tt__wstats *ws = &w->c->ws;
    ADD(ws->orphan_emitted, n.committed + n.dropped_full + n.dropped_large);
    ADD(ws->orphan_drained, n.drained);
    ADD(ws->orphan_dropped_full, n.dropped_full);
    ADD(ws->orphan_dropped_large, n.dropped_large);
    *pp = r->next;
    w->c->n_rings--;
    if (w->resume == r) {
        w->resume = NULL;
    }
    tt__ring_free(r);
    return 1;
}

/* One pass over every ring, starting where the last pass stopped. reg_lock held. */
static uint64_t drain_pass(tt__worker *w, int *full, uint64_t now)
{
    tt_client *c = w->c;
    uint64_t bytes = 0;
    tt__ring *first = w->resume ? w->resume : c->rings;
    tt__ring *r = first;
    while (r && !*full) {
        bytes += drain_ring(w, r, full, now);
        if (*full) {
            w->resume = r;
            break;
        }
        r = r->next ? r->next : c->rings;
        if (r == first) {
            break;
        }
    }
    for (tt__ring **pp = &c->rings; *pp;) {
        if (!reap_ring(w, pp)) {
            pp = &(*pp)->next;
        }
    }
    return bytes;
}

static uint64_t drain_all(tt__worker *w, uint64_t now)
{
    uint64_t total = 0;
    for (;;) {
        int full = 0;
        pthread_mutex_lock(&w->c->reg_lock);
        total += drain_pass(w, &full, now);
        pthread_mutex_unlock(&w->c->reg_lock);
        if (!full || seal(w, 0, now) != 0) {
            break;
        }
    }
    return total;
}

/* --- spool replay -------------------------------------------------------------------------- */

static void replay_spool(tt__worker *w, uint64_t now)
{
    tt_client *c = w->c;
    if (!c->spool || w->state != TT_CONN_READY) {
        return;
    }
    /* A token bucket: at most replay_bytes_per_s, bursts of a quarter second, so a long outage's
     * spool does not arrive at the collector all at once (reliability scenario S19). */
    int64_t rate = (int64_t)c->cfg.replay_bytes_per_s; /* at most 2^32 (config.c) */
    uint64_t dt = now - w->replay_refill_ns;
    int64_t refill = dt >= 1000000000u ? rate : (int64_t)(dt * (uint64_t)rate / 1000000000u);
    if (refill == 0) {
        return; /* keep dt accumulating: a refill of 0 would be lost to rounding */
    }
    w->replay_tokens = TT_MIN(w->replay_tokens + refill, rate / 4);
    w->replay_refill_ns = now;
    /* Keep half the window for live traffic. */
    while (w->window.bytes < c->cfg.window_bytes / 2 && w->replay_tokens > 0) {
        tt__frame_out *f = tt__spool_next(c->spool);
        if (!f) {
            break;
        }
        w->replay_tokens -= (int64_t)f->len; /* a large frame leaves a debt */
        tt__fq_push(&w->window, f);
        if (!w->send_next) {
            w->send_next = f;
            w->send_off = 0;
        }
        window_changed(w);
    }
}

/* --- requests and shutdown ----------------------------------------------------------------- */

static void read_requests(tt__worker *w)
{
    tt_client *c = w->c;
    uint64_t v;
    while (read(c->wake_fd, &v, sizeof v) > 0) {
    }
    pthread_mutex_lock(&c->ctl_lock);
    int new_flush = c->flush_req > w->flush_ticket;
    if (new_flush) {
        /* A newer request re-arms the flush with a later target. */
        w->flush_ticket = c->flush_req;
        w->flush_pending = 1;
    }
    if (c->close_deadline_ns && !w->closing) {
        w->closing = 1;
        w->deadline_ns = c->close_deadline_ns;
        w->close_attempts = w->attempts;
    }
    pthread_mutex_unlock(&c->ctl_lock);
    if (new_flush) {
        /* Events committed before the request: the target is set once they are all drained
         * (the window may hold the worker back from draining them at once). */
        uint64_t committed = 0;
        pthread_mutex_lock(&c->reg_lock);
        for (tt__ring *r = c->rings; r; r = r->next) {
            tt__ring_counts n;
            tt__ring_counts_get(r, &n);
            committed += n.committed - n.drained;
        }
        pthread_mutex_unlock(&c->reg_lock);
        w->flush_need = w->drained_total + committed;
    }
}

/* Everything up to seq is settled when no frame in the window or the batch holds it. */
static int settled_through(const tt__worker *w, uint64_t seq)
{
    if (w->batch_n && w->batch_first_seq <= seq) {
        return 0;
    }
    for (const tt__frame_out *f = w->window.head; f; f = f->next) {
        if (f->n_events && !f->spool_foreign && f->first_seq <= seq) {
            return 0;
        }
    }
    /* Events of this process waiting in the spool are not settled either. */
    return !w->c->spool || tt__spool_events(w->c->spool) == 0;
}

static void flush_progress(tt__worker *w, uint64_t now)
{
    if (!w->flush_pending) {
        return;
    }
    if (w->flush_pending == 1 && w->drained_total >= w->flush_need) {
        /* First look since the request: everything emitted before it has been drained by the
         * drain_all that preceded this call; seal it now. */
        w->flush_seq = w->next_seq - 1;
        w->flush_pending = 2;
        seal(w, 0, now);
    }
    if (w->flush_pending == 2 && settled_through(w, w->flush_seq)) {
        tt_client *c = w->c;
        pthread_mutex_lock(&c->ctl_lock);
        c->flush_done = w->flush_ticket;
        pthread_cond_broadcast(&c->ctl_cond);
        pthread_mutex_unlock(&c->ctl_lock);
        w->flush_pending = 0;
    }
}

/* Events still in the rings at the end, which no batch can take any more. */
static uint64_t count_ring_leftovers(tt__worker *w)
{
    uint64_t left = 0;
    pthread_mutex_lock(&w->c->reg_lock);
    for (tt__ring *r = w->c->rings; r; r = r->next) {
        left += tt__ring_settle(r);
    }
    pthread_mutex_unlock(&w->c->reg_lock);
    return left;
}

/* At the deadline: what is unsent goes to the spool, or is counted. */
static int settle_at_close(tt__worker *w)
{
    tt_client *c = w->c;
    tt__wstats *ws = &c->ws;
    uint64_t left = count_ring_leftovers(w);
    ADD(ws->dropped[TT_DROP_SHUTDOWN], left);
    int all_acked = left == 0 && w->batch_n == 0;
    if (w->batch_n) {
        if (seal(w, 0, tt__mono_ns()) != 0) {
            ADD(ws->dropped[TT_DROP_SHUTDOWN], w->batch_n);
            batch_reset(w);
        }
    }
    tt__frame_out *f;
    while ((f = tt__fq_pop(&w->window))) {
        if (f->n_events == 0) {
            tt__frame_out_free(f);
            continue;
        }
        all_acked = 0;
        if (f->from_spool) {
            /* Still in the spool: the next process replays it (tt__spool_rewind below). */
        } else if (c->spool) {
            uint64_t before[TT_DROP__COUNT];
            for (int i = 0; i < TT_DROP__COUNT; i++) {
                before[i] = LD(ws->dropped[i]);
            }
            if (tt__spool_append(c->spool, f) != 0 && f->ever_sent) {
                /* The spool counted a drop, but these events may have been stored: they are
                 * possibly delivered, not dropped. */
                for (int i = 0; i < TT_DROP__COUNT; i++) {
                    ST(ws->dropped[i], before[i]);
                }
                ADD(ws->possibly_delivered, f->n_events);
            }
        } else if (f->ever_sent) {
            ADD(ws->possibly_delivered, f->n_events);
        } else {
            ADD(ws->dropped[TT_DROP_SHUTDOWN], f->n_events);
        }
        tt__frame_out_free(f);
    }
    w->send_next = NULL;
    window_changed(w);
    if (c->spool) {
        tt__spool_rewind(c->spool);
        /* Wait for the disk only with time to spare: the deadline is the promise. A process
         * crash after close loses nothing either way (the page cache survives it). */
        if (tt__mono_ns() + 100000000u < w->deadline_ns) {
            tt__spool_sync(c->spool);
        } else {
            tt__spool_writeback(c->spool);
        }
        if (tt__spool_events(c->spool)) {
            all_acked = 0;
        }
    }
    return all_acked ? 0 : TT_ETIMEDOUT;
}

/* During close: done when nothing is left to send, or when waiting cannot help. */
static int close_done(tt__worker *w, uint64_t now)
{
    if (now >= w->deadline_ns) {
        return 1;
    }
    if (w->batch_n == 0 && w->window.n_events == 0) {
        return 1;
    }
    /* With a spool, once the attempt made while closing has failed, the spool is where the
     * frames are going anyway. */
    return w->c->spool && (w->state == TT_CONN_IDLE || w->state == TT_CONN_RESOLVING) &&
           w->attempts > w->close_attempts;
}

/* --- the loop ------------------------------------------------------------------------------ */

static uint64_t sleep_ns(tt__worker *w, uint64_t now)
{
    uint64_t flush = w->c->cfg.flush_interval_ms * 1000000u;
    uint64_t t = flush;
    if (w->drained_last >= (32u << 10)) {
        t = 100000;
    } else if (w->drained_last > 0) {
        t = TT_MIN(flush, 1000000u);
    }
    /* A batch past its age that cannot be sealed (the window is full and there is no spool)
     * waits for an ack, which wakes the poll: counting its due time here would make the
     * timeout 0 and the worker spin until then. */
    if (w->batch_n && (window_has_room(w) || w->c->spool)) {
        uint64_t due = w->batch_open_ns + flush;
        t = TT_MIN(t, due > now ? due - now : 0);
    }
    int64_t ct = w->nats ? tt__nats_timeout_ns(w, now) : tt__conn_timeout_ns(w, now);
    if (ct >= 0) {
        t = TT_MIN(t, (uint64_t)ct);
    }
    if (w->closing) {
        t = TT_MIN(t, w->deadline_ns > now ? w->deadline_ns - now : 0);
        t = TT_MIN(t, 1000000u);
    }
    return t;
}

/* The worker's cycle as a sequence lock over its counters (tt__wstats.gen): odd from the end of
 * a wait to the start of the next. */
static void cycle_begin(tt__worker *w)
{
    tt__wstats *ws = &w->c->ws;
    ST(ws->gen, LD(ws->gen) + 1);
    atomic_thread_fence(memory_order_release);
}

static void cycle_end(tt__worker *w)
{
    tt__wstats *ws = &w->c->ws;
    atomic_store_explicit(&ws->gen, LD(ws->gen) + 1, memory_order_release);
}

static void wait_io(tt__worker *w, uint64_t ns)
{
    struct pollfd p[2] = {{w->c->wake_fd, POLLIN, 0}, {w->fd, tt__conn_events(w), 0}};
    nfds_t n = (w->fd >= 0 && p[1].events) ? 2 : 1;
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    cycle_end(w);
    int rc = ppoll(p, n, &ts, NULL);
    cycle_begin(w);
    uint64_t now = tt__mono_ns();
    if (rc > 0 && (p[0].revents & POLLIN)) {
        read_requests(w);
    }
    if (rc > 0 && n == 2 && p[1].revents) {
        if (p[1].revents & (POLLIN | POLLERR | POLLHUP)) {
            tt__conn_recv(w, now);
        }
        if (w->fd >= 0 && (p[1].revents & POLLOUT)) {
            w->send_blocked = 0;
            tt__conn_step(w, now);
            tt__conn_send(w, now);
        }
    }
}

static void housekeeping(tt__worker *w, uint64_t now)
{
    tt_client *c = w->c;
    tt__spool_tick(c->spool, now);
    if (now - w->last_cal_ns >= 1000000000u) {
        tt__clock_cal_update(&w->cal);
        w->last_cal_ns = now;
    }
    if (w->batch_n && now - w->batch_open_ns >= c->cfg.flush_interval_ms * 1000000u) {
        seal(w, 0, now);
    }
    /* A heartbeat carries the counters when nothing else did for a while. */
    if (w->state == TT_CONN_READY && w->batch_n == 0 && w->window.n_frames == 0 &&
        now - w->last_frame_ns >= c->cfg.stats_interval_ms * 1000000u) {
        seal(w, 1, now);
    }
}

/* The link to the collector: a native connection (conn.c) or NATS JetStream (nats.c). With
 * NATS there is no socket of the worker's own (w->fd stays -1): libnats's threads wake the
 * worker through its eventfd, and one step does what connect, send and receive do natively. */
static void link_step(tt__worker *w, uint64_t now)
{
    if (w->nats) {
        tt__nats_step(w, now);
    } else {
        tt__conn_step(w, now);
    }
}

static void link_send(tt__worker *w, uint64_t now)
{
    if (!w->nats) {
        tt__conn_send(w, now);
    }
}

static void link_end(tt__worker *w, uint64_t now)
{
    if (w->nats) {
        tt__nats_close(w);
    } else {
        tt__conn_drop(w, now);
    }
}

static void *worker_main(void *arg)
{
    tt__worker *w = arg;
    tt_client *c = w->c;
    uint64_t now = tt__mono_ns();
    w->last_cal_ns = w->last_frame_ns = w->replay_refill_ns = now;
    cycle_begin(w);
    read_requests(w);
    for (;;) {
        now = tt__mono_ns();
        w->drained_last = drain_all(w, now);
        w->prev_drain_ns = now;
        housekeeping(w, now);
        flush_progress(w, now);
        link_step(w, now);
        replay_spool(w, now);
        link_send(w, now);
        if (w->closing) {
            if (w->batch_n) {
                seal(w, 0, now);
            }
            if (close_done(w, now)) {
                break;
            }
        }
        wait_io(w, sleep_ns(w, now));
    }
    int result = settle_at_close(w);
    link_end(w, tt__mono_ns());
    cycle_end(w);
    pthread_mutex_lock(&c->ctl_lock);
    c->worker_exited = 1;
    c->close_result = result;
    c->flush_done = c->flush_req;
    pthread_cond_broadcast(&c->ctl_cond);
    pthread_mutex_unlock(&c->ctl_lock);
    return NULL;
}

static void worker_destroy(tt__worker *w)
{
    tt__nats_close(w); /* NULL when the worker ended, or never started */
    tt__frame_out *f;
    while ((f = tt__fq_pop(&w->window))) {
        tt__frame_out_free(f);
    }
    tt__tls_link_close(w->tls);
    tt__tls_creds_free(w->tls_creds);
    if (w->fd >= 0) {
        close(w->fd);
    }
    tt__resolve_release(w->resolve);
    ZSTD_freeCCtx(w->zc);
    free(w->zbuf);
    tt__buf_fini(&w->batch);
    tt__buf_fini(&w->rbuf);
    tt__buf_fini(&w->wbuf);
    tt__stepmap_free(w->steps);
    free(w);
}

/* Called with reg_lock held. */
int tt__worker_start(tt_client *c)
{
    if (c->worker_started) {
        return 0;
    }
    tt__worker *w = calloc(1, sizeof *w);
    if (!w) {
        return TT_ENOMEM;
    }
    w->c = c;
    w->fd = -1;
    w->next_seq = 1;
    w->steps = tt__stepmap_new(); /* NULL: step ends go without their begin's fields */
    tt__clock_cal_init(&w->cal);
    /* Room for a full batch, the largest event after it, and the counters. */
    tt__buf_init(&w->batch, c->cfg.batch_bytes + tt__encode_bound((uint32_t)c->max_record + 64) +
                                TT_BATCH_HDR_MAX + 4096);
    tt__buf_init(&w->rbuf, 1u << 20);
    tt__buf_init(&w->wbuf, 64u << 10);
    int rc = tt__buf_reserve(&w->batch, w->batch.max);
    if (rc == 0 && c->cfg.compression_level != 0) {
        w->zc = ZSTD_createCCtx();
        w->zcap = TT_FRAME_HDR_MAX + ZSTD_compressBound(w->batch.max);
        w->zbuf = malloc(w->zcap);
        rc = w->zc && w->zbuf ? 0 : TT_ENOMEM;
    }
    if (rc) {
        worker_destroy(w);
        return TT_ENOMEM;
    }
    batch_reset(w);
    w->batch_limit = c->cfg.batch_bytes;
    tt__conn_init(w);
    if (c->nats && tt__nats_init(w) != 0) {
        worker_destroy(w);
        return TT_ENOMEM;
    }
    if (c->spool) {
        tt__spool_bind(c->spool, &c->ws);
    }
    /* The worker takes no signal: block them all while it is created. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&c->worker, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        worker_destroy(w);
        return -rc;
    }
    pthread_setname_np(c->worker, "telltale");
    c->w = w;
    c->worker_started = 1;
    return 0;
}

void tt__worker_wake(tt_client *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->wake_fd, &one, sizeof one);
    (void)n;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FORK_UNSAFE_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FORK_UNSAFE_ALLOCATOR 1
#endif
#endif

int tt__fork_child_may_free(void)
{
#ifdef FORK_UNSAFE_ALLOCATOR
    return 0;
#else
    return 1;
#endif
}

void tt__worker_forget(tt_client *c)
{
    if (!c->w) {
        return;
    }
    tt__nats_forget(c->w); /* never a call into libnats in the child */
    if (tt__fork_child_may_free()) {
        worker_destroy(c->w);
    } else if (c->w->fd >= 0) {
        close(c->w->fd);
    }
    c->w = NULL;
}

/* After the worker has exited (tt_close). */
void tt__worker_free(tt_client *c)
{
    if (c->w) {
        worker_destroy(c->w);
        c->w = NULL;
    }
}

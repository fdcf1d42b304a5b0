/*
 * conn.c - the worker's connection to the collector: non-blocking connect over a Unix socket
 * or TCP, the hello exchange, writing frames with writev, and reading acknowledgements,
 * rejections and control orders. Reconnects back off exponentially with jitter on the
 * monotonic clock; a connection that stops acknowledging for ack_timeout_ms is dropped
 * (half-open detection at the application level, not TCP keepalive).
 *
 * A tls:// endpoint adds a TLS handshake (tls.c) between the connect and the hello, in the
 * same non-blocking steps; afterwards every read and write goes through the TLS link
 * (io_send, io_recv) instead of the socket. A refused handshake is counted
 * (tt_stats.tls_failures) and its reason kept for tt_connection_error.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/tls.h"
#include "client/worker.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define ADD(x, v) ST(x, LD(x) + (v))
#define MS 1000000u
#define IOV_BATCH 64
#define RESOLVE_POLL_NS (5 * MS)

static uint64_t rnd(tt__worker *w)
{
    /* xorshift64*: jitter only, no need for more. */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 0x2545F4914F6CDD1Dull;
}

void tt__conn_init(tt__worker *w)
{
    tt_client *c = w->c;
    w->state = TT_CONN_IDLE;
    w->fd = -1;
    w->next_attempt_ns = 0;
    w->backoff_ms = c->cfg.backoff_min_ms;
    memcpy(&w->rng, c->instance, sizeof w->rng);
    w->rng |= 1;
}

static void schedule_retry(tt__worker *w, uint64_t now)
{
    uint64_t b = w->backoff_ms;
    /* Jitter: somewhere in [b/2, b], so that many agents do not reconnect in step. */
    uint64_t delay = b / 2 + rnd(w) % (b / 2 + 1);
    w->next_attempt_ns = now + delay * MS;
    w->backoff_ms = TT_MIN(b * 2, w->c->cfg.backoff_max_ms);
}

/* The reason the latest attempt failed, for tt_connection_error. */
static void set_error(tt__worker *w, const char *why)
{
    tt_client *c = w->c;
    pthread_mutex_lock(&c->ctl_lock);
    snprintf(c->conn_error, sizeof c->conn_error, "%s", why);
    pthread_mutex_unlock(&c->ctl_lock);
}

static void tls_failed(tt__worker *w, const char *why, uint64_t now)
{
    ADD(w->c->ws.tls_failures, 1);
    set_error(w, why);
    /* A certificate refused now is refused at the next attempt too: retry at the slowest
     * pace, like a refused hello. */
    w->backoff_ms = w->c->cfg.backoff_max_ms;
    tt__conn_drop(w, now);
}

static ssize_t io_send(tt__worker *w, const void *p, size_t n)
{
    return w->tls ? tt__tls_link_send(w->tls, p, n) : send(w->fd, p, n, MSG_NOSIGNAL);
}

static ssize_t io_recv(tt__worker *w, void *p, size_t n)
{
    return w->tls ? tt__tls_link_recv(w->tls, p, n) : recv(w->fd, p, n, 0);
}

void tt__conn_drop(tt__worker *w, uint64_t now)
{
    tt__tls_link_close(w->tls);
    w->tls = NULL;
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    if (w->state == TT_CONN_READY) {
        ST(w->c->ws.connected, 0);
    }
    w->state = TT_CONN_IDLE;
    schedule_retry(w, now);
    /* Every unacked frame goes again, renumbered, on the next connection. */
    for (tt__frame_out *f = w->window.head; f; f = f->next) {
        f->frame_no = 0;
    }
    w->send_next = NULL;
    w->send_off = 0;
    w->send_blocked = 0;
    tt__buf_reset(&w->rbuf);
    tt__buf_reset(&w->wbuf);
    w->wbuf_off = 0;
}

int tt__conn_hello_frame(tt__worker *w, tt__buf *out)
{
    tt_client *c = w->c;
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memcpy(h.instance, c->instance, 16);
    snprintf(h.agent, sizeof h.agent, "%s", c->cfg.agent);
    snprintf(h.token, sizeof h.token, "%s", c->cfg.token);
    h.pid = (uint32_t)getpid();
    gethostname(h.host, sizeof h.host - 1);
    snprintf(h.library, sizeof h.library, "libtelltale/%s", TT_VERSION_STRING);
    h.start_unix_ns = c->start_unix_ns;
    h.now_unix_ns = tt__wall_ns(); /* the collector compares it with its own clock */
    tt__buf payload;
    tt__buf_init(&payload, 4096);
    int rc = tt__hello_encode(&h, &payload);
    if (rc == 0) {
        rc = tt__frame_append(out, TT_FT_HELLO, payload.data, payload.len);
    }
    tt__buf_fini(&payload);
    return rc;
}

static int make_hello(tt__worker *w)
{
    tt__buf_reset(&w->wbuf);
    int rc = tt__conn_hello_frame(w, &w->wbuf);
    w->wbuf_off = 0;
    return rc;
}

static void start_hello(tt__worker *w, uint64_t now)
{
    if (make_hello(w) != 0) {
        tt__conn_drop(w, now);
        return;
    }
    w->state = TT_CONN_HELLO;
    w->attempt_started_ns = now;
}

/* One step of the TLS handshake; the hello follows it. */
static void tls_step(tt__worker *w, uint64_t now)
{
    char why[256] = "";
    int rc = tt__tls_link_handshake(w->tls, why, sizeof why);
    if (rc > 0) {
        start_hello(w, now);
    } else if (rc < 0) {
        tls_failed(w, why, now);
    }
}

static void start_tls(tt__worker *w, uint64_t now)
{
    tt_client *c = w->c;
    char why[256] = "";
    if (!w->tls_creds && tt__tls_creds_open(&w->tls_creds, &c->cfg, why, sizeof why) != 0) {
        tls_failed(w, why, now);
        return;
    }
    const char *name = c->cfg.tls_server_name[0] ? c->cfg.tls_server_name : c->ep.host;
    if (tt__tls_link_open(&w->tls, w->tls_creds, name, w->fd, why, sizeof why) != 0) {
        tls_failed(w, why, now);
        return;
    }
    w->state = TT_CONN_TLS;
    tls_step(w, now);
}

static void on_connected(tt__worker *w, uint64_t now)
{
    if (!w->c->ep.is_unix) {
        int one = 1;
        setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (w->c->ep.is_tls) {
        start_tls(w, now);
    } else {
        start_hello(w, now);
    }
}

static int open_socket(tt__worker *w, struct sockaddr_storage *sa, socklen_t *salen)
{
    const tt__endpoint *ep = &w->c->ep;
    if (ep->is_unix) {
        struct sockaddr_un *un = (struct sockaddr_un *)sa;
        memset(un, 0, sizeof *un);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, ep->path, strlen(ep->path) + 1);
        *salen = (socklen_t)sizeof *un;
        return socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    memcpy(sa, &w->addr.sa, w->addr.len);
    *salen = w->addr.len;
    return socket(w->addr.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

/* Connect to w->addr (or the Unix path) without blocking. */
static void connect_to(tt__worker *w, uint64_t now)
{
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    w->fd = open_socket(w, &sa, &salen);
    if (w->fd < 0) {
        set_error(w, "cannot resolve the endpoint's host or open a socket");
        tt__conn_drop(w, now);
        return;
    }
    if (connect(w->fd, (struct sockaddr *)&sa, salen) == 0) {
        on_connected(w, now);
    } else if (errno == EINPROGRESS || errno == EAGAIN) {
        w->state = TT_CONN_CONNECTING;
    } else {
        set_error(w, strerror(errno));
        tt__conn_drop(w, now);
    }
}

/* A name being resolved: connect once it is, or give this attempt up at its timeout. The
 * request outlives a failed attempt, so a resolver that hangs holds one thread, not one per
 * attempt. */
static void resolve_step(tt__worker *w, uint64_t now)
{
    int err = 0;
    if (!tt__resolve_poll(w->resolve, &w->addr, &err)) {
        if (now - w->attempt_started_ns > w->c->cfg.ack_timeout_ms * MS) {
            tt__conn_drop(w, now);
        }
        return;
    }
    tt__resolve_release(w->resolve);
    w->resolve = NULL;
    if (err) {
        tt__conn_drop(w, now);
        return;
    }
    connect_to(w, now);
}

/* Numeric addresses need no lookup; a host name is resolved by a thread of its own (resolve.h),
 * never on an event call and never on the worker's loop. */
static void start_connect(tt__worker *w, uint64_t now)
{
    const tt__endpoint *ep = &w->c->ep;
    w->attempt_started_ns = now;
    w->attempts++;
    if (ep->is_unix || tt__resolve_numeric(ep->host, ep->port, &w->addr) == 0) {
        connect_to(w, now);
        return;
    }
    if (!w->resolve) {
        w->resolve = tt__resolve_start(ep->host, ep->port);
    }
    if (!w->resolve) {
        tt__conn_drop(w, now);
        return;
    }
    w->state = TT_CONN_RESOLVING;
    resolve_step(w, now);
}

static int connect_finished(tt__worker *w)
{
    struct pollfd p = {w->fd, POLLOUT, 0};
    if (poll(&p, 1, 0) <= 0) {
        return 0;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        return -1;
    }
    return 1;
}

void tt__conn_step(tt__worker *w, uint64_t now)
{
    uint64_t timeout = w->c->cfg.ack_timeout_ms * MS;
    switch (w->state) {
    case TT_CONN_IDLE:
        /* While closing with a spool, one attempt is made at once (a worker that never had
         * the time to connect, in a forked child say); after it fails, frames go to disk. */
        if (w->closing && w->c->spool) {
            if (w->attempts == w->close_attempts) {
                start_connect(w, now);
            }
        } else if (now >= w->next_attempt_ns) {
            start_connect(w, now);
        }
        break;
    case TT_CONN_CONNECTING: {
        int done = connect_finished(w);
        if (done > 0) {
            on_connected(w, now);
        } else if (done < 0 || now - w->attempt_started_ns > timeout) {
            set_error(w, done < 0 ? "connection refused or unreachable" : "connect timed out");
            tt__conn_drop(w, now);
        }
        break;
    }
    case TT_CONN_TLS:
        tls_step(w, now);
        if (w->state == TT_CONN_TLS && now - w->attempt_started_ns > timeout) {
            tls_failed(w, "tls: handshake timed out", now);
        }
        break;
    case TT_CONN_HELLO:
        if (now - w->attempt_started_ns > timeout) {
            tt__conn_drop(w, now);
        }
        break;
    case TT_CONN_RESOLVING:
        resolve_step(w, now);
        break;
    case TT_CONN_READY:
        /* Unacked frames and no progress for ack_timeout: the connection is half-open. */
        if (w->window.head && w->window.head->frame_no && now - w->last_progress_ns > timeout) {
            tt__conn_drop(w, now);
        }
        break;
    }
}

static void frame_written(tt__worker *w, tt__frame_out *f, uint64_t now)
{
    tt__wstats *ws = &w->c->ws;
    if (w->window.head == f || !w->window.head->frame_no) {
        w->last_progress_ns = now;
    }
    f->frame_no = w->next_frame_no++;
    if (!f->ever_sent) {
        f->ever_sent = 1;
        ADD(ws->sent, f->n_events);
    }
    ADD(ws->frames_sent, 1);
    ADD(ws->bytes_sent, f->len);
}

static int write_hello(tt__worker *w, uint64_t now)
{
    while (w->wbuf_off < w->wbuf.len) {
        ssize_t n = io_send(w, w->wbuf.data + w->wbuf_off, w->wbuf.len - w->wbuf_off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                tt__conn_drop(w, now);
            }
            return -1;
        }
        w->wbuf_off += (size_t)n;
    }
    return 0;
}

void tt__conn_send(tt__worker *w, uint64_t now)
{
    if (w->fd < 0 || w->state < TT_CONN_HELLO) {
        return;
    }
    if (write_hello(w, now) != 0 || w->state != TT_CONN_READY) {
        return;
    }
    /* A full socket stays full until poll says otherwise: trying again before that costs a
     * sendmsg (and the copy of its iovecs) per loop turn, which under backpressure was most
     * of the worker's time. */
    if (w->send_blocked) {
        return;
    }
    while (w->send_next) {
        struct iovec iov[IOV_BATCH];
        int n = 0;
        for (tt__frame_out *f = w->send_next; f && n < IOV_BATCH; f = f->next, n++) {
            size_t off = n == 0 ? w->send_off : 0;
            iov[n].iov_base = f->data + off;
            iov[n].iov_len = f->len - off;
        }
        ssize_t k;
        if (w->tls) {
            /* One record at a time (up to 16 KiB each): the frames' bytes, not their iovecs,
             * are what TLS encrypts. */
            k = tt__tls_link_send(w->tls, iov[0].iov_base, iov[0].iov_len);
        } else {
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
            k = sendmsg(w->fd, &msg, MSG_NOSIGNAL);
        }
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                tt__conn_drop(w, now);
            } else {
                w->send_blocked = 1;
            }
            return;
        }
        size_t left = (size_t)k;
        while (w->send_next && left >= w->send_next->len - w->send_off) {
            left -= w->send_next->len - w->send_off;
            frame_written(w, w->send_next, now);
            w->send_next = w->send_next->next;
            w->send_off = 0;
        }
        w->send_off += left;
    }
}

static void handle_ack(tt__worker *w, uint64_t frame_no, uint64_t now)
{
    tt__frame_out *f;
    int any = 0;
    while ((f = w->window.head) && f->frame_no && f->frame_no <= frame_no) {
        tt__fq_pop(&w->window);
        tt__worker_frame_acked(w, f);
        any = 1;
    }
    if (any) {
        w->last_progress_ns = now;
        ST(w->c->ws.in_window, w->window.n_events);
    }
}

static void handle_reject(tt__worker *w, const tt__reject *rj, uint64_t now)
{
    if (!rj->permanent) {
        /* The collector could not store it now (storage error, overload): try again later. */
        tt__conn_drop(w, now);
        return;
    }
    tt__frame_out *prev = NULL;
    for (tt__frame_out *f = w->window.head; f; prev = f, f = f->next) {
        if (f->frame_no != rj->frame_no) {
            continue;
        }
        if (prev) {
            prev->next = f->next;
        } else {
            w->window.head = f->next;
        }
        if (w->window.tail == f) {
            w->window.tail = prev;
        }
        w->window.n_frames--;
        w->window.n_events -= f->n_events;
        w->window.bytes -= f->len;
        tt__worker_frame_rejected(w, f);
        ST(w->c->ws.in_window, w->window.n_events);
        return;
    }
}

static void handle_reply(tt__worker *w, const uint8_t *p, size_t n, uint64_t now)
{
    tt__hello_reply r;
    memset(&r, 0, sizeof r);
    if (w->state != TT_CONN_HELLO || tt__hello_reply_decode(p, n, &r) != 0 || r.error[0]) {
        char why[300];
        snprintf(why, sizeof why, "hello refused: %s", r.error[0] ? r.error : "malformed reply");
        set_error(w, why);
        /* A refused hello (bad token, say) is retried at the slowest pace. */
        w->backoff_ms = w->c->cfg.backoff_max_ms;
        tt__conn_drop(w, now);
        return;
    }
    w->state = TT_CONN_READY;
    set_error(w, "");
    w->max_frame = r.max_frame_bytes;
    w->backoff_ms = w->c->cfg.backoff_min_ms;
    if (w->ever_connected) {
        ADD(w->c->ws.reconnects, 1);
    }
    w->ever_connected = 1;
    ST(w->c->ws.connected, 1);
    w->send_next = w->window.head;
    w->send_off = 0;
    w->send_blocked = 0;
    w->next_frame_no = 1;
    w->last_progress_ns = now;
}

/* Returns 0 to go on, -1 if the connection was dropped. */
static int handle_frame(tt__worker *w, const tt__frame *f, uint64_t now)
{
    uint64_t frame_no;
    tt__reject rj;
    if (f->flags & TT_FF_ZSTD) {
        tt__conn_drop(w, now);
        return -1;
    }
    switch (f->type) {
    case TT_FT_HELLO_REPLY:
        handle_reply(w, f->payload, f->payload_len, now);
        break;
    case TT_FT_ACK:
        if (tt__ack_decode(f->payload, f->payload_len, &frame_no) == 0) {
            handle_ack(w, frame_no, now);
        }
        break;
    case TT_FT_REJECT:
        if (tt__reject_decode(f->payload, f->payload_len, &rj) == 0) {
            handle_reject(w, &rj, now);
        }
        break;
    case TT_FT_CONTROL:
        tt__control_handle(w->c, f->payload, f->payload_len);
        break;
    default:
        tt__conn_drop(w, now);
        return -1;
    }
    return w->fd >= 0 ? 0 : -1;
}

static int parse_incoming(tt__worker *w, uint64_t now)
{
    size_t off = 0;
    while (off < w->rbuf.len) {
        tt__frame f;
        size_t need;
        int rc = tt__frame_parse(w->rbuf.data + off, w->rbuf.len - off, 1u << 20, &f, &need);
        if (rc == TT_FRAME_NEED_MORE) {
            break;
        }
        if (rc != TT_FRAME_OK) {
            /* The collector's replies are checked like any input: garbage ends the link. */
            tt__conn_drop(w, now);
            return -1;
        }
        if (handle_frame(w, &f, now) != 0) {
            return -1;
        }
        off += f.frame_len;
    }
    if (off) {
        memmove(w->rbuf.data, w->rbuf.data + off, w->rbuf.len - off);
        w->rbuf.len -= off;
    }
    return 0;
}

void tt__conn_recv(tt__worker *w, uint64_t now)
{
    if (w->fd < 0 || w->state == TT_CONN_CONNECTING) {
        return;
    }
    if (w->state == TT_CONN_TLS) {
        tls_step(w, now);
        return;
    }
    for (;;) {
        if (tt__buf_reserve(&w->rbuf, 16384) != 0) {
            tt__conn_drop(w, now);
            return;
        }
        ssize_t n = io_recv(w, w->rbuf.data + w->rbuf.len, w->rbuf.cap - w->rbuf.len);
        if (n == 0) {
            tt__conn_drop(w, now);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EPROTO && w->tls && tt__tls_link_error(w->tls)[0]) {
                tls_failed(w, tt__tls_link_error(w->tls), now);
            } else if (errno != EAGAIN) {
                tt__conn_drop(w, now);
            }
            return;
        }
        w->rbuf.len += (size_t)n;
        if (parse_incoming(w, now) != 0) {
            return;
        }
    }
}

short tt__conn_events(const tt__worker *w)
{
    switch (w->state) {
    case TT_CONN_CONNECTING:
        return POLLOUT;
    case TT_CONN_TLS:
        return tt__tls_link_wants_write(w->tls) ? POLLOUT : POLLIN;
    case TT_CONN_HELLO:
        return (short)(POLLIN | (w->wbuf_off < w->wbuf.len ? POLLOUT : 0));
    case TT_CONN_READY:
        return (short)(POLLIN | (w->send_next ? POLLOUT : 0));
    default:
        return 0;
    }
}

int64_t tt__conn_timeout_ns(const tt__worker *w, uint64_t now)
{
    uint64_t timeout = w->c->cfg.ack_timeout_ms * MS, due;
    switch (w->state) {
    case TT_CONN_IDLE:
        due = w->closing && w->c->spool ? now : w->next_attempt_ns;
        break;
    case TT_CONN_CONNECTING:
    case TT_CONN_TLS:
    case TT_CONN_HELLO:
        due = w->attempt_started_ns + timeout;
        break;
    case TT_CONN_RESOLVING:
        /* The resolving thread does not wake the worker: look again every few ms. */
        due = TT_MIN(w->attempt_started_ns + timeout, now + RESOLVE_POLL_NS);
        break;
    case TT_CONN_READY:
        if (!w->window.head || !w->window.head->frame_no) {
            return -1;
        }
        due = w->last_progress_ns + timeout;
        break;
    default:
        return -1;
    }
    return due > now ? (int64_t)(due - now) : 0;
}

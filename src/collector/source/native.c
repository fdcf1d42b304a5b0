/*
 * native.c - the collector's event loop: listeners and agent connections in one epoll set.
 *
 * A connection starts with the agent's hello, then carries batch frames. Each frame is checked
 * (length against the limit before any allocation, CRC, header, decompressed size and ratio,
 * then the protobuf payload), handed to the store, and acknowledged once the store has
 * committed it. Framing errors close the connection with a counted reason; a frame whose
 * framing is intact but whose payload is bad is rejected alone and the connection goes on.
 *
 * INVARIANTS
 * - Acks leave in frame order per connection, and only for frames the store returned as
 *   committed (or as duplicates of committed ones).
 * - When the store falls behind (queue_bytes), no connection is read until it catches up:
 *   memory stays bounded and agents see backpressure, never a silent drop.
 * - A connection's identity (agent, instance) is fixed by its hello. A batch naming another
 *   instance is one the agent's spool kept from an earlier process of the same agent: it is
 *   stored under its own instance (the store refuses it if that instance belongs to another
 *   agent), never under the connection's.
 */
#include "collector/source/native.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <pthread.h>
#include <unistd.h>
#include <zstd.h>

#include "collector/hub.h"
#include "collector/log.h"
#include "collector/store/store.h"
#include "common/clock.h"

#define MAX_EVENTS 256
#define WBUF_MAX (1u << 20)
#define TAG_LISTEN 1
#define TAG_CONN 2
#define TAG_STORE 3
#define TAG_SIGNAL 4
#define TAG_CONTROL 5

/* A control order from another thread (operator halt, guard policy), sent by the loop. */
struct ctl_wait {
    int done;      /* guarded by ctl_lock */
    int abandoned; /* the poster stopped waiting: whoever finishes frees it */
    int count;     /* connections the order was queued on, -1 if never sent */
};

struct ctl_msg {
    struct ctl_msg *next;
    struct ctl_wait *wait; /* NULL: nobody waits */
    char agent[256];       /* empty: every agent */
    size_t n;
    uint8_t payload[];
};

struct conn {
    int fd;
    uint64_t id;
    int ready;   /* hello accepted */
    int closing; /* write what is queued, then close */
    tt__buf rbuf;
    tt__buf wbuf;
    size_t woff;
    int want_out; /* EPOLLOUT registered */
    struct agent_ident ident;
    uint64_t frames_in;   /* batch frames received: the next frame_no */
    uint64_t ack_pending; /* highest committed frame_no not yet acked */
    uint64_t pending;     /* items at the store */
    uint64_t opened_ns;
    uint64_t last_rx_ns;
};

struct listener {
    int fd;
    tt__endpoint ep;
};

struct ingest {
    const struct collector_opts *o;
    struct store *store;
    struct hub *hub;
    struct ingest_hooks hooks;
    int ep;
    int sigfd;
    struct listener lis[COLLECTOR_MAX_LISTEN];
    int n_lis;
    struct conn **conns; /* by fd */
    size_t conns_cap;
    uint64_t next_id;
    int paused;         /* not reading: the store is behind */
    int draining;       /* SIGTERM received */
    uint64_t drop_acks; /* test hook: commits whose ack is replaced by a disconnect */
    ZSTD_DCtx *dctx;
    tt__buf scratch;
    pthread_mutex_t ctl_lock; /* guards ctl_head and the ctl_wait of posted orders */
    pthread_cond_t ctl_cond;  /* an order with a waiter was sent */
    struct ctl_msg *ctl_head;
    int ctl_fd;
};

struct collector_stats cstats;

const char *reject_name(int reason)
{
    static const char *const names[REJ__COUNT] = {
        "frame_too_large", "bad_crc",       "bad_header",   "decompressed_too_large",
        "bad_compression", "bad_payload",   "truncated",    "no_hello",
        "bad_hello",       "protocol",      "auth",         "too_many_connections",
        "seq_overlap",     "hello_timeout", "idle_timeout", "store_error"};
    return reason >= 0 && reason < REJ__COUNT ? names[reason] : "unknown";
}

/* --- listeners ----------------------------------------------------------------------------- */

static int listen_unix(struct listener *l, char *err, size_t errlen)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, l->ep.path, strlen(l->ep.path) + 1);
    struct stat st;
    if (lstat(l->ep.path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket", l->ep.path);
            return -1;
        }
        /* A socket file nobody answers on is left from a previous run: reuse its path. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int alive = probe >= 0 && connect(probe, (struct sockaddr *)&un, sizeof un) == 0;
        if (probe >= 0) {
            close(probe);
        }
        if (alive) {
            snprintf(err, errlen, "%s: another collector is listening there", l->ep.path);
            return -1;
        }
        unlink(l->ep.path);
    }
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(0117); /* the socket is rw for its owner and group only */
    int rc = l->fd < 0 ? -1 : bind(l->fd, (struct sockaddr *)&un, sizeof un);
    umask(old);
    if (rc != 0 || listen(l->fd, 1024) != 0) {
        snprintf(err, errlen, "listen on unix:%s: %s", l->ep.path, strerror(errno));
        return -1;
    }
    return 0;
}

static int listen_tcp(struct listener *l, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(l->ep.host, l->ep.port, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, errlen, "tcp://%s:%s: %s", l->ep.host, l->ep.port, gai_strerror(gai));
        return -1;
    }
    l->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, rc = -1;
    if (l->fd >= 0) {
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (res->ai_family == AF_INET6) {
            setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        }
        rc = bind(l->fd, res->ai_addr, res->ai_addrlen);
        rc = rc ? rc : listen(l->fd, 1024);
    }
    freeaddrinfo(res);
    if (rc != 0) {
        snprintf(err, errlen, "listen on tcp://%s:%s: %s", l->ep.host, l->ep.port, strerror(errno));
        return -1;
    }
    /* Port 0 asks for any free port: report the one we got. */
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0) {
        int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(l->ep.port, sizeof l->ep.port, "%d", port);
    }
    return 0;
}

/* --- connections --------------------------------------------------------------------------- */

static int ep_mod(struct ingest *g, struct conn *c)
{
    struct epoll_event ev = {0};
    ev.events = (g->paused || c->closing ? 0 : EPOLLIN) | (c->want_out ? EPOLLOUT : 0) | EPOLLRDHUP;
    ev.data.u64 = ((uint64_t)TAG_CONN << 32) | (uint32_t)c->fd;
    return epoll_ctl(g->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_free(struct ingest *g, struct conn *c)
{
    epoll_ctl(g->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    g->conns[c->fd] = NULL;
    tt__buf_fini(&c->rbuf);
    tt__buf_fini(&c->wbuf);
    free(c);
    atomic_fetch_sub(&cstats.conns_open, 1);
}

/* Close for a counted reason. */
static void conn_fail(struct ingest *g, struct conn *c, int reason)
{
    cstat_add(&cstats.rejected[reason], 1);
    log_debug("closing connection %llu (%s): %s", (unsigned long long)c->id,
              c->ready ? "agent" : "before hello", reject_name(reason));
    conn_free(g, c);
}

static void conn_flush(struct ingest *g, struct conn *c)
{
    while (c->woff < c->wbuf.len) {
        ssize_t n = send(c->fd, c->wbuf.data + c->woff, c->wbuf.len - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            conn_free(g, c);
            return;
        }
        c->woff += (size_t)n;
    }
    if (c->woff == c->wbuf.len) {
        c->woff = c->wbuf.len = 0;
        tt__buf_shrink(&c->wbuf, 65536);
        if (c->closing && c->pending == 0) {
            conn_free(g, c);
            return;
        }
    }
    int want = c->woff < c->wbuf.len;
    if (want != c->want_out) {
        c->want_out = want;
        ep_mod(g, c);
    }
}

static void conn_send(struct ingest *g, struct conn *c, uint8_t type, const tt__buf *payload)
{
    if (tt__frame_append(&c->wbuf, type, payload->data, payload->len) != 0) {
        /* The agent does not read what we send: it cannot be kept up to date. */
        conn_free(g, c);
        return;
    }
    conn_flush(g, c);
}

static void send_ack(struct ingest *g, struct conn *c)
{
    tt__buf p;
    tt__buf_init(&p, 64);
    if (tt__ack_encode(c->ack_pending, &p) == 0) {
        c->ack_pending = 0;
        conn_send(g, c, TT_FT_ACK, &p);
    }
    tt__buf_fini(&p);
}

static void send_reject(struct ingest *g, struct conn *c, uint64_t frame_no, int permanent,
                        const char *reason)
{
    tt__reject rj = {.frame_no = frame_no, .permanent = permanent};
    snprintf(rj.reason, sizeof rj.reason, "%s", reason);
    tt__buf p;
    tt__buf_init(&p, 512);
    if (tt__reject_encode(&rj, &p) == 0) {
        conn_send(g, c, TT_FT_REJECT, &p);
    }
    tt__buf_fini(&p);
}

static void accept_all(struct ingest *g, struct listener *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* EAGAIN, or EMFILE and friends: try again at the next wakeup */
        }
        if (atomic_load(&cstats.conns_open) >= g->o->max_conns || (size_t)fd >= g->conns_cap) {
            cstat_add(&cstats.rejected[REJ_TOO_MANY_CONNS], 1);
            close(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        if (!l->ep.is_unix) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c->fd = fd;
        c->id = ++g->next_id;
        c->opened_ns = c->last_rx_ns = tt__mono_ns();
        tt__buf_init(&c->rbuf, g->o->max_frame + TT_FRAME_PREFIX);
        tt__buf_init(&c->wbuf, WBUF_MAX);
        g->conns[fd] = c;
        struct epoll_event ev = {0};
        ev.events = (g->paused ? 0 : EPOLLIN) | EPOLLRDHUP;
        ev.data.u64 = ((uint64_t)TAG_CONN << 32) | (uint32_t)fd;
        epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev);
        cstat_add(&cstats.conns_open, 1);
        cstat_add(&cstats.conns_total, 1);
    }
}

/* --- frames -------------------------------------------------------------------------------- */

static int valid_agent_name(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return 0;
        }
    }
    return 1;
}

static int on_hello(struct ingest *g, struct conn *c, const tt__frame *f)
{
    tt__hello h;
    tt__hello_reply r;
    memset(&r, 0, sizeof r);
    r.protocol = TT_PROTOCOL_VERSION;
    r.max_frame_bytes = g->o->max_frame;
    r.sync_level = (uint32_t)g->o->sync_level;
    int reason = -1;
    if (c->ready || (f->flags & TT_FF_ZSTD) || tt__hello_decode(f->payload, f->payload_len, &h)) {
        reason = REJ_BAD_HELLO;
        snprintf(r.error, sizeof r.error, "malformed hello");
    } else if (h.protocol != TT_PROTOCOL_VERSION) {
        reason = REJ_PROTOCOL;
        snprintf(r.error, sizeof r.error, "protocol %u not supported (this collector speaks %d)",
                 h.protocol, TT_PROTOCOL_VERSION);
    } else if (!valid_agent_name(h.agent)) {
        reason = REJ_BAD_HELLO;
        snprintf(r.error, sizeof r.error, "agent name empty or with control characters");
    } else if (g->hooks.authorize &&
               g->hooks.authorize(g->hooks.ctx, &h, r.agent, r.error, sizeof r.error) != 0) {
        reason = REJ_AUTH;
    }
    if (reason < 0) {
        if (!r.agent[0]) {
            snprintf(r.agent, sizeof r.agent, "%s", h.agent);
        }
        snprintf(c->ident.agent, sizeof c->ident.agent, "%s", r.agent);
        memcpy(c->ident.instance, h.instance, 16);
        c->ident.pid = h.pid;
        snprintf(c->ident.host, sizeof c->ident.host, "%s", h.host);
        snprintf(c->ident.library, sizeof c->ident.library, "%s", h.library);
        c->ident.start_unix_ns = h.start_unix_ns;
        c->ready = 1;
    }
    tt__buf p;
    tt__buf_init(&p, 4096);
    int rc = tt__hello_reply_encode(&r, &p);
    if (rc == 0) {
        conn_send(g, c, TT_FT_HELLO_REPLY, &p);
    }
    tt__buf_fini(&p);
    if (g->conns[c->fd] != c) {
        return -1;
    }
    if (reason >= 0) {
        cstat_add(&cstats.rejected[reason], 1);
        c->closing = 1;
        conn_flush(g, c);
        return -1;
    }
    if (g->hooks.on_hello) {
        g->hooks.on_hello(g->hooks.ctx, c->id, &c->ident);
    }
    return 0;
}

/* Decompress (or copy) a batch payload into a new item. */
static struct store_item *item_new(struct ingest *g, struct conn *c, const tt__frame *f,
                                   int *reason)
{
    if (!tt__frame_raw_ok(f, g->o->max_raw)) {
        *reason = REJ_RAW_TOO_LARGE;
        return NULL;
    }
    struct store_item *it = calloc(1, sizeof *it);
    size_t raw_len = f->raw_len;
    it = it ? it : NULL;
    if (!it || !(it->raw = malloc(raw_len ? raw_len : 1))) {
        free(it);
        *reason = REJ_STORE_ERROR;
        return NULL;
    }
    it->raw_len = raw_len;
    if (f->flags & TT_FF_ZSTD) {
        size_t n = ZSTD_decompressDCtx(g->dctx, it->raw, raw_len, f->payload, f->payload_len);
        it->blob = malloc(f->payload_len ? f->payload_len : 1);
        if (ZSTD_isError(n) || n != raw_len || !it->blob) {
            store_item_free(it);
            *reason = REJ_BAD_COMPRESSION;
            return NULL;
        }
        memcpy(it->blob, f->payload, f->payload_len);
        it->blob_len = f->payload_len;
    } else {
        memcpy(it->raw, f->payload, raw_len);
    }
    it->conn_id = c->id;
    it->conn_fd = c->fd;
    it->ident = c->ident;
    it->received_ns = tt__wall_ns();
    return it;
}

/* Returns 0 to go on with this connection, -1 if it was closed. */
static int on_batch(struct ingest *g, struct conn *c, const tt__frame *f)
{
    if (!c->ready) {
        conn_fail(g, c, REJ_NO_HELLO);
        return -1;
    }
    uint64_t frame_no = ++c->frames_in;
    int reason = REJ_BAD_PAYLOAD;
    struct store_item *it = item_new(g, c, f, &reason);
    if (!it) {
        send_reject(g, c, frame_no, 1, reject_name(reason));
        if (g->conns[c->fd] == c) {
            conn_fail(g, c, reason);
        }
        return -1;
    }
    it->frame_no = frame_no;
    tt__batch_limits lim = {g->o->max_events, g->o->max_attrs};
    const char *why = NULL;
    if (tt__batch_parse(&it->batch, it->raw, it->raw_len, &lim, &why) != 0) {
        /* The framing is intact: refuse this batch alone and keep the connection. */
        cstat_add(&cstats.rejected[REJ_BAD_PAYLOAD], 1);
        send_reject(g, c, frame_no, 1, why ? why : "bad batch");
        store_item_free(it);
        return g->conns[c->fd] == c ? 0 : -1;
    }
    if (memcmp(it->batch.instance, c->ident.instance, 16) != 0) {
        /* Replayed from the spool of an earlier process of this agent. */
        memcpy(it->ident.instance, it->batch.instance, 16);
        it->ident.pid = 0;
        it->ident.start_unix_ns = 0;
        it->replayed = 1;
    }
    cstat_add(&cstats.frames, 1);
    c->pending++;
    store_submit(g->store, it);
    return 0;
}

static int frame_error_reason(int rc)
{
    switch (rc) {
    case TT_FRAME_ETOOBIG:
        return REJ_FRAME_TOO_LARGE;
    case TT_FRAME_ECRC:
        return REJ_BAD_CRC;
    default:
        return REJ_BAD_HEADER;
    }
}

static int handle_frame(struct ingest *g, struct conn *c, const tt__frame *f)
{
    switch (f->type) {
    case TT_FT_HELLO:
        return on_hello(g, c, f);
    case TT_FT_BATCH:
        return on_batch(g, c, f);
    default:
        conn_fail(g, c, c->ready ? REJ_BAD_HEADER : REJ_NO_HELLO);
        return -1;
    }
}

/* Parse every complete frame in the read buffer. Returns -1 if the connection was closed. */
static int parse_frames(struct ingest *g, struct conn *c)
{
    size_t off = 0;
    int rc = 0;
    while (off < c->rbuf.len && !c->closing) {
        tt__frame f;
        size_t need;
        int pr = tt__frame_parse(c->rbuf.data + off, c->rbuf.len - off, g->o->max_frame, &f, &need);
        if (pr == TT_FRAME_NEED_MORE) {
            if (need && tt__buf_reserve(&c->rbuf, need - (c->rbuf.len - off)) != 0) {
                conn_fail(g, c, REJ_FRAME_TOO_LARGE);
                return -1;
            }
            break;
        }
        if (pr != TT_FRAME_OK) {
            conn_fail(g, c, frame_error_reason(pr));
            return -1;
        }
        if (!c->ready && f.type != TT_FT_HELLO) {
            conn_fail(g, c, REJ_NO_HELLO);
            return -1;
        }
        rc = handle_frame(g, c, &f);
        if (rc != 0) {
            return -1;
        }
        off += f.frame_len;
    }
    if (off) {
        memmove(c->rbuf.data, c->rbuf.data + off, c->rbuf.len - off);
        c->rbuf.len -= off;
    }
    return 0;
}

static void conn_read(struct ingest *g, struct conn *c)
{
    for (int rounds = 0; rounds < 16 && !g->paused; rounds++) {
        if (tt__buf_reserve(&c->rbuf, 65536) != 0 && c->rbuf.len == c->rbuf.cap) {
            conn_fail(g, c, REJ_FRAME_TOO_LARGE);
            return;
        }
        ssize_t n = recv(c->fd, c->rbuf.data + c->rbuf.len, c->rbuf.cap - c->rbuf.len, 0);
        if (n == 0) {
            /* The agent closed. Bytes of a frame left unread mean it was cut short. */
            if (c->rbuf.len) {
                cstat_add(&cstats.rejected[REJ_TRUNCATED], 1);
            }
            c->closing = 1;
            if (c->pending == 0) {
                conn_free(g, c);
            } else {
                ep_mod(g, c);
            }
            return;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                conn_free(g, c);
            }
            return;
        }
        cstat_add(&cstats.bytes, (uint64_t)n);
        c->rbuf.len += (size_t)n;
        c->last_rx_ns = tt__mono_ns();
        if (parse_frames(g, c) != 0) {
            return;
        }
    }
}

/* --- backpressure and completions ---------------------------------------------------------- */

static void set_paused(struct ingest *g, int paused)
{
    if (g->paused == paused) {
        return;
    }
    g->paused = paused;
    for (size_t fd = 0; fd < g->conns_cap; fd++) {
        if (g->conns[fd]) {
            ep_mod(g, g->conns[fd]);
        }
    }
    log_debug("ingest %s", paused ? "paused: the store is behind" : "resumed");
}

static void check_backpressure(struct ingest *g)
{
    size_t pending = store_pending_bytes(g->store);
    if (!g->paused && pending > g->o->queue_bytes) {
        set_paused(g, 1);
    } else if (g->paused && pending < g->o->queue_bytes / 2) {
        set_paused(g, 0);
    }
}

/* The connection an item came from, if it is still open (fds are reused: check the id). */
static struct conn *item_conn(struct ingest *g, const struct store_item *it)
{
    struct conn *c = (size_t)it->conn_fd < g->conns_cap ? g->conns[it->conn_fd] : NULL;
    return c && c->id == it->conn_id ? c : NULL;
}

static void complete_one(struct ingest *g, struct conn *c, struct store_item *it)
{
    if (c) {
        c->pending--;
        if (it->result == STORE_OK || it->result == STORE_DUP) {
            c->ack_pending = it->frame_no;
        } else {
            /* A reject must not overtake the acks of the frames before it. */
            if (c->ack_pending) {
                send_ack(g, c);
            }
            c = item_conn(g, it);
            if (c) {
                send_reject(g, c, it->frame_no, it->result == STORE_REJECT,
                            it->reason ? it->reason : "refused");
            }
            cstat_add(
                &cstats.rejected[it->result == STORE_REJECT ? REJ_SEQ_OVERLAP : REJ_STORE_ERROR],
                1);
        }
    }
    if (it->result == STORE_OK) {
        hub_publish(g->hub, it);
        if (g->hooks.on_commit) {
            g->hooks.on_commit(g->hooks.ctx, it);
        }
    }
}

static void on_store_done(struct ingest *g)
{
    struct store_item *it = store_take_done(g->store), *next;
    struct conn *last = NULL;
    for (; it; it = next) {
        next = it->next;
        struct conn *c = item_conn(g, it);
        if (last && last != c && g->conns[last->fd] == last && last->ack_pending) {
            send_ack(g, last);
        }
        complete_one(g, c, it);
        if (c && g->drop_acks && it->result == STORE_OK && g->conns[c->fd] == c) {
            /* Test hook (TELLTALE_TEST_DROP_ACKS): committed, then the link breaks before the
             * ack leaves, so the agent cannot know; its resend must be stored only once. */
            g->drop_acks--;
            c->ack_pending = 0;
            conn_free(g, c);
            c = NULL;
        }
        last = c && g->conns[c->fd] == c ? c : NULL;
        store_item_free(it);
    }
    for (size_t fd = 0; fd < g->conns_cap; fd++) {
        struct conn *c = g->conns[fd];
        if (c && c->ack_pending) {
            send_ack(g, c);
        }
        c = g->conns[fd];
        if (c && c->closing && c->pending == 0 && c->woff == c->wbuf.len) {
            conn_free(g, c);
        }
    }
    check_backpressure(g);
}

/* Hello and idle timeouts, checked about once a second. */
static void check_timeouts(struct ingest *g, uint64_t now)
{
    for (size_t fd = 0; fd < g->conns_cap; fd++) {
        struct conn *c = g->conns[fd];
        if (!c || c->closing) {
            continue;
        }
        if (!c->ready && now - c->opened_ns > g->o->hello_timeout_ms * 1000000u) {
            conn_fail(g, c, REJ_HELLO_TIMEOUT);
        } else if (c->pending == 0 && now - c->last_rx_ns > g->o->idle_timeout_ms * 1000000u) {
            conn_fail(g, c, REJ_IDLE_TIMEOUT);
        }
    }
}

/* --- setup and the loop -------------------------------------------------------------------- */

static int add_fd(struct ingest *g, int fd, uint32_t tag, uint32_t idx)
{
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.u64 = ((uint64_t)tag << 32) | idx;
    return epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev);
}

int ingest_open(struct ingest **out, struct collector_opts *o, struct store *store, struct hub *hub,
                const struct ingest_hooks *hooks, char *err, size_t errlen)
{
    struct ingest *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = g;
    g->o = o;
    g->store = store;
    g->hub = hub;
    if (hooks) {
        g->hooks = *hooks;
    }
    /* For tests only (docs/operations.md): drop the connection instead of acking the first N
     * committed batches. */
    const char *da = getenv("TELLTALE_TEST_DROP_ACKS");
    g->drop_acks = da ? strtoull(da, NULL, 10) : 0;
    g->sigfd = -1;
    pthread_mutex_init(&g->ctl_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->ctl_cond, &ca);
    pthread_condattr_destroy(&ca);
    g->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g->conns_cap = o->max_conns + 64 + 1024;
    g->conns = calloc(g->conns_cap, sizeof *g->conns);
    g->dctx = ZSTD_createDCtx();
    g->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g->conns || !g->dctx || g->ep < 0 || g->ctl_fd < 0) {
        snprintf(err, errlen, "out of memory or file descriptors");
        return -1;
    }
    for (int i = 0; i < o->n_listen; i++) {
        struct listener *l = &g->lis[g->n_lis];
        l->ep = o->listen[i];
        l->fd = -1;
        int rc = l->ep.is_unix ? listen_unix(l, err, errlen) : listen_tcp(l, err, errlen);
        if (rc != 0) {
            return -1;
        }
        o->listen[i] = l->ep; /* with the port actually bound */
        add_fd(g, l->fd, TAG_LISTEN, (uint32_t)g->n_lis);
        g->n_lis++;
    }
    add_fd(g, store_done_fd(store), TAG_STORE, 0);
    add_fd(g, g->ctl_fd, TAG_CONTROL, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    g->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (g->sigfd < 0) {
        snprintf(err, errlen, "signalfd: %s", strerror(errno));
        return -1;
    }
    add_fd(g, g->sigfd, TAG_SIGNAL, 0);
    return 0;
}

/* SIGTERM: stop accepting, read what agents already sent, commit, ack, then leave. */
static void start_drain(struct ingest *g)
{
    g->draining = 1;
    for (int i = 0; i < g->n_lis; i++) {
        epoll_ctl(g->ep, EPOLL_CTL_DEL, g->lis[i].fd, NULL);
        close(g->lis[i].fd);
        if (g->lis[i].ep.is_unix) {
            unlink(g->lis[i].ep.path);
        }
        g->lis[i].fd = -1;
    }
    for (size_t fd = 0; fd < g->conns_cap; fd++) {
        struct conn *c = g->conns[fd];
        if (c && !c->closing) {
            conn_read(g, c);
        }
        c = g->conns[fd];
        if (c) {
            c->closing = 1;
            ep_mod(g, c);
        }
    }
}

static int drained(struct ingest *g)
{
    for (size_t fd = 0; fd < g->conns_cap; fd++) {
        struct conn *c = g->conns[fd];
        if (c && (c->pending || c->woff < c->wbuf.len)) {
            return 0;
        }
    }
    return 1;
}

/* Tell the poster of m (if it waits) how many connections got it. */
static void ctl_finish(struct ingest *g, struct ctl_msg *m, int count)
{
    if (!m->wait) {
        return;
    }
    pthread_mutex_lock(&g->ctl_lock);
    if (m->wait->abandoned) {
        free(m->wait);
    } else {
        m->wait->done = 1;
        m->wait->count = count;
        pthread_cond_broadcast(&g->ctl_cond);
    }
    pthread_mutex_unlock(&g->ctl_lock);
}

static void send_controls(struct ingest *g)
{
    uint64_t v;
    ssize_t r = read(g->ctl_fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&g->ctl_lock);
    struct ctl_msg *m = g->ctl_head;
    g->ctl_head = NULL;
    pthread_mutex_unlock(&g->ctl_lock);
    while (m) {
        struct ctl_msg *next = m->next;
        tt__buf p = {m->payload, m->n, m->n, m->n};
        int count = 0;
        for (size_t fd = 0; fd < g->conns_cap; fd++) {
            struct conn *c = g->conns[fd];
            if (c && c->ready && !c->closing &&
                (!m->agent[0] || !strcmp(c->ident.agent, m->agent))) {
                conn_send(g, c, TT_FT_CONTROL, &p);
                count++;
            }
        }
        ctl_finish(g, m, count);
        free(m);
        m = next;
    }
}

static void dispatch(struct ingest *g, const struct epoll_event *ev)
{
    uint32_t tag = (uint32_t)(ev->data.u64 >> 32), idx = (uint32_t)ev->data.u64;
    if (tag == TAG_LISTEN) {
        if (!g->draining) {
            accept_all(g, &g->lis[idx]);
        }
    } else if (tag == TAG_STORE) {
        on_store_done(g);
    } else if (tag == TAG_CONTROL) {
        send_controls(g);
    } else if (tag == TAG_SIGNAL) {
        struct signalfd_siginfo si;
        while (read(g->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (!g->draining) {
                log_info("signal %u: draining (stop accepting, commit, acknowledge)", si.ssi_signo);
                start_drain(g);
            }
        }
    } else if (tag == TAG_CONN) {
        struct conn *c = idx < g->conns_cap ? g->conns[idx] : NULL;
        if (c && (ev->events & EPOLLOUT)) {
            conn_flush(g, c);
            c = g->conns[idx];
        }
        if (c && !c->closing && (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
            conn_read(g, c);
        } else if (c && c->closing && (ev->events & (EPOLLHUP | EPOLLERR))) {
            conn_free(g, c);
        }
    }
}

int ingest_run(struct ingest *g)
{
    struct epoll_event evs[MAX_EVENTS];
    uint64_t last_tick = tt__mono_ns(), drain_deadline = 0;
    for (;;) {
        int n = epoll_wait(g->ep, evs, MAX_EVENTS, 200);
        for (int i = 0; i < n; i++) {
            dispatch(g, &evs[i]);
        }
        uint64_t now = tt__mono_ns();
        if (now - last_tick >= 1000000000u) {
            check_timeouts(g, now);
            last_tick = now;
        }
        if (g->draining) {
            if (!drain_deadline) {
                drain_deadline = now + g->o->grace_ms * 1000000u;
            }
            if (drained(g) || now >= drain_deadline) {
                break;
            }
        }
    }
    return 0;
}

void ingest_close(struct ingest *g)
{
    if (!g) {
        return;
    }
    for (size_t fd = 0; g->conns && fd < g->conns_cap; fd++) {
        if (g->conns[fd]) {
            conn_free(g, g->conns[fd]);
        }
    }
    for (int i = 0; i < g->n_lis; i++) {
        if (g->lis[i].fd >= 0) {
            close(g->lis[i].fd);
            if (g->lis[i].ep.is_unix) {
                unlink(g->lis[i].ep.path);
            }
        }
    }
    if (g->sigfd >= 0) {
        close(g->sigfd);
    }
    if (g->ctl_fd >= 0) {
        close(g->ctl_fd);
    }
    while (g->ctl_head) {
        struct ctl_msg *m = g->ctl_head;
        g->ctl_head = m->next;
        ctl_finish(g, m, -1);
        free(m);
    }
    pthread_mutex_destroy(&g->ctl_lock);
    pthread_cond_destroy(&g->ctl_cond);
    if (g->ep >= 0) {
        close(g->ep);
    }
    ZSTD_freeDCtx(g->dctx);
    tt__buf_fini(&g->scratch);
    free(g->conns);
    free(g);
}

static int post(struct ingest *g, const char *agent, const uint8_t *payload, size_t n,
                struct ctl_wait *wait)
{
    if (n > 65536) {
        return -EINVAL;
    }
    struct ctl_msg *m = malloc(sizeof *m + n);
    if (!m) {
        return -ENOMEM;
    }
    snprintf(m->agent, sizeof m->agent, "%s", agent ? agent : "");
    m->wait = wait;
    m->n = n;
    memcpy(m->payload, payload, n);
    pthread_mutex_lock(&g->ctl_lock);
    m->next = g->ctl_head;
    g->ctl_head = m;
    pthread_mutex_unlock(&g->ctl_lock);
    uint64_t one = 1;
    ssize_t w = write(g->ctl_fd, &one, sizeof one);
    (void)w;
    return 0;
}

int ingest_post_control(struct ingest *g, const char *agent, const uint8_t *payload, size_t n)
{
    return post(g, agent, payload, n, NULL);
}

int ingest_post_control_wait(struct ingest *g, const char *agent, const uint8_t *payload, size_t n,
                             unsigned timeout_ms)
{
    struct ctl_wait *w = calloc(1, sizeof *w);
    if (!w) {
        return -ENOMEM;
    }
    int rc = post(g, agent, payload, n, w);
    if (rc) {
        free(w);
        return rc;
    }
    struct timespec dl =
        tt__deadline_ms(CLOCK_MONOTONIC, timeout_ms > 0 ? (uint64_t)timeout_ms : 0);
    pthread_mutex_lock(&g->ctl_lock);
    while (!w->done) {
        if (pthread_cond_timedwait(&g->ctl_cond, &g->ctl_lock, &dl) == ETIMEDOUT) {
            break;
        }
    }
    if (w->done) {
        rc = w->count < 0 ? -ESHUTDOWN : w->count;
        free(w);
    } else {
        w->abandoned = 1; /* the loop frees it when it gets there */
        rc = -ETIMEDOUT;
    }
    pthread_mutex_unlock(&g->ctl_lock);
    return rc;
}

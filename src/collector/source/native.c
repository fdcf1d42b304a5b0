/*
 * native.c - the collector's event loop and the native source: listeners and agent
 * connections (native_conn.c) in one epoll set, with the pipeline's completions
 * (source/source.h), operator control orders and signals.
 *
 * THE LIFETIME RULE (libuv's uv_close, Redis ae.c, h2o's deferred disposal)
 * An object the loop serves is freed only by the loop, at a point where no caller holds it:
 *   1. Closing marks it dead (conn_kill): it is unlinked from epoll at once, so no further
 *      event names it, and put on the loop's dead list. Nothing else happens to it then.
 *   2. A function that sends may fail; it never frees its argument. conn_send returns -1 and
 *      leaves c dead but valid, and its callers test c->dead; every conn_* function accepts a
 *      dead connection and does nothing with it but count.
 *   3. At the end of each loop iteration (reap), after every callback has returned, the loop
 *      closes the dead connections' sockets and frees their buffers. The fd slot is cleared
 *      only then, so an fd number is never reused while a record still names it.
 *   4. Work handed to other threads refers to a connection by a counted reference: each batch
 *      at the store holds one (c->pending), and a dead record whose completions are still
 *      owed stays, without socket or buffers, until the last one is in; that completion puts
 *      it back on the dead list and the next reap frees it. A completion never finds a freed
 *      connection.
 * The same rule governs the loop's other objects: a live-stream subscriber (hub.c) is marked
 * dropped and woken, and freed (hub_unsubscribe) only by libmicrohttpd's free callback of the
 * response that reads it, never by the publisher that found it slow; an HTTP request's state
 * is freed in libmicrohttpd's completion callback, never by the handler that answers it.
 *
 * A tls:// listener's connections carry a TLS session (source/tls.c) whose handshake the
 * loop steps on the connection's own events; the rule above holds for them unchanged (the
 * session is freed with the socket, at the reap). Records TLS has already decrypted raise no
 * event: the loop reads them at the end of each iteration (read_tls_pending).
 *
 * INVARIANTS
 * - Memory is admitted before it is allocated (budget.h, native_conn.c): partial frames above a
 *   connection's base and batches from decoding to completion each have a pool of half the
 *   ingest budget (--queue-bytes); a connection whose admission waits reads nothing until
 *   conn_budget_wake, called at the end of an iteration, resumes it. docs/operations.md gives
 *   the resulting bound on the collector's RSS.
 * - When the pipeline falls behind (source_backlog above the budget), no connection is read
 *   until it is under half of it: memory stays bounded and agents see backpressure, never a
 *   silent drop.
 * - conns[fd] is the live or dead (not yet reaped) connection on fd; every record, reaped or
 *   not, is on the all list until freed.
 */
#include "collector/source/native.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zstd.h>

#include "collector/log.h"
#include "collector/source/native_conn.h"
#include "collector/source/tls.h"
#include "common/clock.h"

#define MAX_EVENTS 256
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

struct listener {
    int fd;
    tt__endpoint ep;
};

struct ingest {
    struct source src; /* first: the seam's view of this source */
    struct conn_owner ow;
    struct tls_server *tls; /* the credentials of tls:// listeners (NULL: none) */
    const struct collector_opts *o;
    struct pipeline *pl;
    int ep;
    int sigfd;
    struct listener lis[COLLECTOR_MAX_LISTEN];
    int n_lis;
    struct conn **conns; /* by fd: live and dead connections not yet reaped */
    size_t conns_cap;
    struct conn *all;  /* every record, dead ones included */
    struct conn *dead; /* to reap at the end of the iteration */
    uint64_t next_id;
    int draining;             /* SIGTERM received */
    pthread_mutex_t ctl_lock; /* guards ctl_head and the ctl_wait of posted orders */
    pthread_cond_t ctl_cond;  /* an order with a waiter was sent */
    struct ctl_msg *ctl_head;
    int ctl_fd;
};

#define OWNER_INGEST(ow) ((struct ingest *)((char *)(ow)-offsetof(struct ingest, ow)))

/* --- listeners ----------------------------------------------------------------------------- */

static int listen_unix(struct listener *l, int others, char *err, size_t errlen)
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
    /* The socket is rw for its owner and group only, unless other users may ingest
     * (--ingest-uids, --ingest-gids): then anyone may connect and the peer's credentials
     * decide at the hello (identity.c). */
    mode_t old = umask(others ? 0111 : 0117);
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

/* Half of --queue-bytes for partial frames, half for admitted batches; each at least one frame
 * of the largest kind, or no such frame could ever be admitted. */
static void admission_init(struct admission *adm, const struct collector_opts *o)
{
    size_t partial = (size_t)o->queue_bytes / 2, items = (size_t)o->queue_bytes / 2;
    size_t frame = (size_t)o->max_frame + TT_FRAME_PREFIX;
    size_t item = conn_item_cost((size_t)o->max_raw, (size_t)o->max_frame);
    if (partial < frame || items < item) {
        partial = partial < frame ? frame : partial;
        items = items < item ? item : items;
        log_info("ingest budget raised to %zu MiB to hold one frame of --max-frame",
                 (partial + items) >> 20);
    }
    budget_init(&adm->partial, partial);
    budget_init(&adm->items, items);
}

static void ep_watch(struct conn_owner *ow, struct conn *c)
{
    struct ingest *g = OWNER_INGEST(ow);
    if (c->dead) {
        return;
    }
    struct epoll_event ev = {0};
    /* A closing connection reads nothing more: the peer's half-close must not wake the loop
     * again and again (EPOLLRDHUP is level-triggered); EPOLLHUP still reports the end. */
    int quiet = c->closing || c->blocked; /* a blocked one is woken by the budget, not epoll */
    ev.events = (ow->paused || quiet ? 0 : EPOLLIN) | (c->want_out ? EPOLLOUT : 0) |
                (quiet ? 0 : EPOLLRDHUP);
    ev.data.u64 = ((uint64_t)TAG_CONN << 32) | (uint32_t)c->fd;
    epoll_ctl(g->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_submit(struct conn_owner *ow, struct conn *c, struct store_item *it)
{
    struct ingest *g = OWNER_INGEST(ow);
    source_submit(&g->src, it, c);
}

/* Rule step 1: unlink now, free at the end of the iteration. */
static void conn_died(struct conn_owner *ow, struct conn *c)
{
    struct ingest *g = OWNER_INGEST(ow);
    epoll_ctl(g->ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->next_dead = g->dead;
    g->dead = c;
}

static void all_unlink(struct ingest *g, struct conn *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        g->all = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
}

/* Rule step 3: the end of an iteration, where no callback holds a connection. */
static void reap(struct ingest *g)
{
    while (g->dead) {
        struct conn *c = g->dead;
        g->dead = c->next_dead;
        c->next_dead = NULL;
        if (!c->reaped) {
            g->conns[c->fd] = NULL;
            conn_reap(c);
            atomic_fetch_sub(&cstats.conns_open, 1);
        }
        if (c->pending == 0) {
            all_unlink(g, c);
            free(c);
        }
    }
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
        struct conn *c = conn_new(&g->ow, fd, ++g->next_id);
        if (c && l->ep.is_tls && conn_start_tls(c, g->tls) != 0) {
            conn_free(c);
            continue;
        }
        if (!c) {
            close(fd);
            continue;
        }
        if (!l->ep.is_unix) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        g->conns[fd] = c;
        c->next = g->all;
        if (g->all) {
            g->all->prev = c;
        }
        g->all = c;
        struct epoll_event ev = {0};
        ev.events = (g->ow.paused ? 0 : EPOLLIN) | EPOLLRDHUP;
        ev.data.u64 = ((uint64_t)TAG_CONN << 32) | (uint32_t)fd;
        epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev);
        cstat_add(&cstats.conns_open, 1);
        cstat_add(&cstats.conns_total, 1);
    }
}

/* --- backpressure and completions ---------------------------------------------------------- */

static void set_paused(struct ingest *g, int paused)
{
    if (g->ow.paused == paused) {
        return;
    }
    g->ow.paused = paused;
    for (struct conn *c = g->all; c; c = c->next) {
        ep_watch(&g->ow, c);
    }
    log_debug("ingest %s", paused ? "paused: the store is behind" : "resumed");
}

static void check_backpressure(struct ingest *g)
{
    size_t pending = source_backlog(&g->src), budget = source_budget(&g->src);
    if (!g->ow.paused && pending > budget) {
        set_paused(g, 1);
    } else if (g->ow.paused && pending < budget / 2) {
        set_paused(g, 0);
    }
}

/* The seam's completion: it->cookie is the connection, alive or dead (rule step 4). */
static void native_complete(struct source *src, struct store_item *it, enum source_result r,
                            const char *reason)
{
    struct ingest *g = (struct ingest *)src;
    struct conn *c = it->cookie;
    conn_item_done(&g->ow, it); /* freed by the pipeline right after */
    conn_complete(&g->ow, c, it->frame_no, r, reason);
    if (c->reaped && c->pending == 0) {
        c->next_dead = g->dead; /* the last owed completion: free it at the reap */
        g->dead = c;
    }
}

static void native_complete_end(struct source *src)
{
    struct ingest *g = (struct ingest *)src;
    for (struct conn *c = g->all; c; c = c->next) {
        conn_flush_acks(&g->ow, c);
    }
    check_backpressure(g);
}

static const struct source_ops native_ops = {"native", native_complete, native_complete_end};

/* --- setup and the loop -------------------------------------------------------------------- */

static void publish_budget(const struct admission *adm)
{
    const struct budget *p[2] = {&adm->partial, &adm->items};
    for (int i = 0; i < 2; i++) {
        atomic_store_explicit(&cstats.budget_limit[i], p[i]->limit, memory_order_relaxed);
        atomic_store_explicit(&cstats.budget_used[i], p[i]->used, memory_order_relaxed);
        atomic_store_explicit(&cstats.budget_peak[i], p[i]->peak, memory_order_relaxed);
    }
    atomic_store_explicit(&cstats.budget_waits, adm->partial.waits + adm->items.waits,
                          memory_order_relaxed);
}

static int add_fd(struct ingest *g, int fd, uint32_t tag, uint32_t idx)
{
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.u64 = ((uint64_t)tag << 32) | idx;
    return epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev);
}

static int open_listeners(struct ingest *g, struct collector_opts *o, char *err, size_t errlen)
{
    for (int i = 0; i < o->n_listen; i++) {
        if (o->listen[i].is_tls && !g->tls) {
            snprintf(err, errlen, "--listen tls://... needs --tls-cert and --tls-key");
            return -1;
        }
        struct listener *l = &g->lis[g->n_lis];
        l->ep = o->listen[i];
        l->fd = -1;
        int others = o->n_ingest_uids > 0 || o->n_ingest_gids > 0;
        int rc = l->ep.is_unix ? listen_unix(l, others, err, errlen) : listen_tcp(l, err, errlen);
        if (rc != 0) {
            return -1;
        }
        o->listen[i] = l->ep; /* with the port actually bound */
        add_fd(g, l->fd, TAG_LISTEN, (uint32_t)g->n_lis);
        g->n_lis++;
    }
    return 0;
}

int ingest_open(struct ingest **out, struct collector_opts *o, struct pipeline *pl,
                const struct ingest_hooks *hooks, struct tls_server *tls, char *err, size_t errlen)
{
    struct ingest *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = g;
    g->o = o;
    g->pl = pl;
    g->tls = tls;
    g->ow.o = o;
    g->ow.watch = ep_watch;
    g->ow.submit = conn_submit;
    g->ow.died = conn_died;
    if (hooks) {
        g->ow.hooks = *hooks;
    }
    /* For tests only (docs/operations.md): drop the connection instead of acking the first N
     * committed batches. */
    const char *da = getenv("TELLTALE_TEST_DROP_ACKS");
    g->ow.drop_acks = da ? strtoull(da, NULL, 10) : 0;
    admission_init(&g->ow.adm, o);
    /* Large buffers (frames, decompressed batches) are mapped and unmapped by malloc, so what
     * the budget gives back leaves the process instead of staying in the heap. */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    g->sigfd = -1;
    pthread_mutex_init(&g->ctl_lock, NULL);
    tt__cond_init_mono(&g->ctl_cond);
    g->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g->conns_cap = o->max_conns + 64 + 1024;
    g->conns = calloc(g->conns_cap, sizeof *g->conns);
    g->ow.dctx = ZSTD_createDCtx();
    g->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g->conns || !g->ow.dctx || g->ep < 0 || g->ctl_fd < 0 ||
        pipeline_attach(pl, &g->src, &native_ops) != 0) {
        snprintf(err, errlen, "out of memory or file descriptors");
        return -1;
    }
    if (open_listeners(g, o, err, errlen) != 0) {
        return -1;
    }
    add_fd(g, pipeline_fd(pl), TAG_STORE, 0);
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
    if (g->ow.hooks.on_drain) {
        g->ow.hooks.on_drain(g->ow.hooks.ctx);
    }
    for (int i = 0; i < g->n_lis; i++) {
        epoll_ctl(g->ep, EPOLL_CTL_DEL, g->lis[i].fd, NULL);
        close(g->lis[i].fd);
        if (g->lis[i].ep.is_unix) {
            unlink(g->lis[i].ep.path);
        }
        g->lis[i].fd = -1;
    }
    for (struct conn *c = g->all; c; c = c->next) {
        if (!c->dead && !c->closing) {
            conn_readable(&g->ow, c);
        }
        if (!c->dead) {
            c->closing = 1;
            ep_watch(&g->ow, c);
            conn_flush_acks(&g->ow, c); /* an idle connection closes now */
        }
    }
}

static int drained(struct ingest *g)
{
    if (g->ow.hooks.pending && g->ow.hooks.pending(g->ow.hooks.ctx)) {
        return 0;
    }
    for (struct conn *c = g->all; c; c = c->next) {
        if (!c->dead && (c->pending || c->woff < c->wbuf.len)) {
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
    struct ctl_msg *m = NULL, *rev = g->ctl_head;
    g->ctl_head = NULL;
    pthread_mutex_unlock(&g->ctl_lock);
    /* Posted newest first: turned round, so orders go out in the order they were posted (a halt
     * then a resume of the same session must not arrive the other way round). */
    while (rev) {
        struct ctl_msg *next = rev->next;
        rev->next = m;
        m = rev;
        rev = next;
    }
    while (m) {
        struct ctl_msg *next = m->next;
        int count = 0;
        for (struct conn *c = g->all; c; c = c->next) {
            if (!c->dead && c->ready && !c->closing &&
                (!m->agent[0] || !strcmp(c->ident.agent, m->agent))) {
                conn_send(&g->ow, c, TT_FT_CONTROL, m->payload, m->n);
                count++;
            }
        }
        ctl_finish(g, m, count);
        free(m);
        m = next;
    }
}

static void on_conn_event(struct ingest *g, uint32_t idx, uint32_t events)
{
    struct conn *c = idx < g->conns_cap ? g->conns[idx] : NULL;
    if (!c || c->dead) {
        return; /* closed earlier in this iteration: reaped at its end */
    }
    if (events & EPOLLOUT) {
        conn_writable(&g->ow, c);
    }
    if (!c->dead && !c->closing && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        conn_readable(&g->ow, c);
    } else if (!c->dead && (c->closing || c->blocked) && (events & (EPOLLHUP | EPOLLERR))) {
        conn_kill(&g->ow, c);
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
        pipeline_dispatch(g->pl);
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
        on_conn_event(g, idx, ev->events);
    }
}

/* Records a TLS session decrypted beyond what conn_readable took (its rounds are bounded, and
 * a pause stops it) wait inside the session, where epoll cannot see them: read them here.
 * Returns whether some are still waiting (then the loop must not sleep). */
static int read_tls_pending(struct ingest *g)
{
    int left = 0;
    if (!g->tls) {
        return 0;
    }
    for (struct conn *c = g->all; c; c = c->next) {
        if (conn_tls_pending(c) && !c->closing) {
            if (!g->ow.paused) {
                conn_readable(&g->ow, c);
            }
            left |= !g->ow.paused && conn_tls_pending(c) && !c->closing;
        }
    }
    return left;
}

int ingest_run(struct ingest *g)
{
    struct epoll_event evs[MAX_EVENTS];
    uint64_t last_tick = tt__mono_ns(), drain_deadline = 0;
    int busy = 0;
    for (;;) {
        int n = epoll_wait(g->ep, evs, MAX_EVENTS, busy ? 0 : 200);
        for (int i = 0; i < n; i++) {
            dispatch(g, &evs[i]);
        }
        busy = read_tls_pending(g);
        uint64_t now = tt__mono_ns();
        if (now - last_tick >= 1000000000u) {
            for (struct conn *c = g->all; c; c = c->next) {
                conn_check_timeouts(&g->ow, c, now);
            }
            last_tick = now;
        }
        reap(g);
        conn_budget_wake(&g->ow); /* what the completions and the reap gave back */
        publish_budget(&g->ow.adm);
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
    /* The store is closed: no completion is owed any more. */
    while (g->all) {
        struct conn *c = g->all;
        g->all = c->next;
        if (!c->reaped) {
            atomic_fetch_sub(&cstats.conns_open, 1);
        }
        conn_free(c);
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
    ZSTD_freeDCtx(g->ow.dctx);
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

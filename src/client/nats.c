/*
 * nats.c - the worker's NATS JetStream transport (nats.h): each frame of the window is
 * published as one message, the native HELLO frame followed by the BATCH frame, on
 * <nats_subject>.<fnv1a32(agent) % 64> with Nats-Msg-Id "<batch instance hex>:<first_seq>";
 * its PubAck (duplicate or not) is its acknowledgement. A PubAck error, a timeout
 * (ack_timeout_ms) or a lost connection leave it unacknowledged: it is published again later
 * with the same id, and the stream's duplicate window (then the collector's store) keeps one
 * copy. Control orders arrive on telltale.control.<fnv1a64(agent) hex> and go to the code
 * that handles a native CONTROL frame when their Tt-Agent header is this agent.
 *
 * Threads. libnats calls on_puback, on_control and the connection callbacks on threads of its
 * own. Those touch only the mailbox (struct mailbox): its lock guards every mutable field, and
 * each callback wakes the worker through a duplicate of the client's eventfd. The worker takes
 * what is there at its next step; nothing else of the client is ever reached from libnats.
 *
 * INVARIANTS
 * - A published message is in exactly one place until the worker has seen its fate: libnats's
 *   pending list, or the mailbox's results. js_PublishAsyncGetPendingList takes messages out of
 *   the pending list, so a message taken back that way never reaches on_puback.
 * - A frame has at most one message outstanding (f->nats_msg); the pointer identifies it while
 *   the message lives, and the worker destroys a message only after matching it.
 * - The mailbox lives while anyone may call into it: one reference for the worker, one for
 *   the connection (dropped by its closed callback, libnats's last), one for the control
 *   subscription (dropped by its completion callback), one per message outstanding. The last
 *   to let go frees it.
 */
#include "client/nats.h"

#include <errno.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/encode.h"
#include "client/spool.h"
#include "client/worker.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define ADD(x, v) ST(x, LD(x) + (v))
#define MS 1000000u

/* Messages outstanding at most (PubAcks awaited): the mailbox's result ring holds as many. */
#define PENDING_MAX 1024
/* Control messages waiting for the worker: at most this many, of at most this size each. */
#define CTL_QUEUE_MAX 256
#define CTL_MSG_MAX (1u << 20)
/* Order ids remembered, so that an order the collector resent is applied once; and their size. */
#define ORDERS_SEEN 64
#define ORDER_ID_MAX 48
/* Room kept for the message's headers below the server's max_payload. */
#define HEADER_ROOM 256
/* The server's max_payload until a connection says otherwise (nats-server's default). */
#define DEFAULT_MAX_PAYLOAD (1u << 20)
#define PARTITIONS 64

/* --- parsing the settings ----------------------------------------------------------------- */

int tt__nats_is_endpoint(const char *s)
{
    return s && strncmp(s, "nats://", 7) == 0;
}

static int fail(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return -EINVAL;
}

/* One HOST:PORT of n bytes at p. */
static int parse_server(const char *p, size_t n, char *out, char *err, size_t errlen)
{
    if (n >= 7 && strncmp(p, "nats://", 7) == 0) {
        p += 7;
        n -= 7;
    }
    if (memchr(p, '@', n)) {
        return fail(err, errlen,
                    "a user or password in a nats:// URL is refused (it would sit in "
                    "configuration and logs): put the token in a 0600 file and name it "
                    "with nats_token_file");
    }
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ':') {
            colon = p + i;
        }
    }
    if (!colon || colon == p) {
        return fail(err, errlen, "each nats:// server must be HOST:PORT");
    }
    size_t hostlen = (size_t)(colon - p), portlen = n - hostlen - 1;
    if (hostlen > 255 || portlen == 0 || portlen > 5) {
        return fail(err, errlen, "bad host or port in a nats:// server");
    }
    unsigned port = 0;
    for (size_t i = 0; i < portlen; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9') {
            return fail(err, errlen, "bad port in a nats:// server");
        }
        port = port * 10 + (unsigned)(colon[1 + i] - '0');
    }
    for (size_t i = 0; i < hostlen; i++) {
        if (p[i] == '/' || p[i] == ' ' || p[i] == ',' || (unsigned char)p[i] < 0x21) {
            return fail(err, errlen, "bad host in a nats:// server");
        }
    }
    if (port == 0 || port > 65535) {
        return fail(err, errlen, "bad port in a nats:// server");
    }
    if (out) {
        snprintf(out, TT_NATS_URL_MAX, "nats://%.*s:%u", (int)hostlen, p, port);
    }
    return 0;
}

int tt__nats_endpoint_parse(const char *s, char (*servers)[TT_NATS_URL_MAX], char *err,
                            size_t errlen)
{
    if (!tt__nats_is_endpoint(s)) {
        return fail(err, errlen, "not a nats:// endpoint");
    }
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (n == TT_NATS_SERVERS_MAX) {
            return fail(err, errlen, "more than 16 servers in a nats:// endpoint");
        }
        int rc = parse_server(p, len, servers ? servers[n] : NULL, err, errlen);
        if (rc) {
            return rc;
        }
        n++;
        if (!comma) {
            return n;
        }
        p = comma + 1;
    }
}

int tt__nats_subject_check(const char *s, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (n == 0 || n > TT_NATS_SUBJECT_MAX) {
        return fail(err, errlen, "nats_subject must have 1 to 200 bytes");
    }
    int token = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (!token) {
                return fail(err, errlen, "nats_subject has an empty token");
            }
            token = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || ch == '_' || ch == '-') {
            token = 1;
        } else {
            return fail(err, errlen,
                        "nats_subject: only letters, digits, '_', '-' and dots (no wildcard)");
        }
    }
    if (!token) {
        return fail(err, errlen, "nats_subject has an empty token");
    }
    return 0;
}

int tt__nats_token_load(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "nats_token_file: cannot open %.200s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "nats_token_file: %.200s is not a regular file", path);
        rc = -EINVAL;
    } else if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "nats_token_file: %.200s may be read by group or others (mode %04o): "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 07777));
        rc = -EACCES;
    } else if ((uint64_t)st.st_size >= cap) {
        snprintf(err, errlen, "nats_token_file: %.200s is longer than %zu bytes", path, cap - 1);
        rc = -E2BIG;
    }
    ssize_t k = 0;
    if (rc == 0) {
        k = read(fd, out, cap - 1);
        if (k < 0) {
            rc = -errno;
            snprintf(err, errlen, "nats_token_file: cannot read %.200s", path);
        }
    }
    close(fd);
    if (rc) {
        return rc;
    }
    size_t n = (size_t)k;
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r')) {
        n--;
    }
    out[n] = 0;
    if (n == 0 || memchr(out, '\n', n) || strlen(out) != n) {
        memset(out, 0, cap);
        snprintf(err, errlen, "nats_token_file: %.200s must hold one non-empty line", path);
        return -EINVAL;
    }
    return 0;
}

uint32_t tt__fnv1a32(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h;
}

uint64_t tt__fnv1a64(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* --- the mailbox shared with libnats's threads ---------------------------------------------- */

struct result {
    natsMsg *msg;
    int ok;
    natsStatus err;
    int code;
};

struct ctl_msg {
    struct ctl_msg *next;
    size_t n;
    uint8_t data[];
};

struct mailbox {
    pthread_mutex_t lock;
    int refs;                             /* lock */
    int worker_gone;                      /* lock: what arrives later is destroyed at once */
    struct result res[PENDING_MAX];       /* lock: PubAcks and errors, res_head first */
    uint32_t res_head, res_n;             /* lock */
    struct ctl_msg *ctl_head;             /* lock */
    struct ctl_msg *ctl_tail;             /* lock */
    uint32_t ctl_n;                       /* lock */
    uint64_t conn_gen;                    /* lock: bumped by each connection callback */
    uint64_t downs;                       /* lock: disconnections (and the close) seen */
    char seen[ORDERS_SEEN][ORDER_ID_MAX]; /* lock: the latest orders' ids (Tt-Order) */
    uint32_t seen_next;                   /* lock: the slot the next new id takes */
    int wake_fd;                          /* a duplicate of the client's eventfd; immutable */
    uint64_t backoff_min_ms;              /* immutable */
    uint64_t backoff_max_ms;              /* immutable */
    char agent[256];                      /* immutable */
};

static void mailbox_free(struct mailbox *mb)
{
    while (mb->ctl_head) {
        struct ctl_msg *m = mb->ctl_head;
        mb->ctl_head = m->next;
        free(m);
    }
    if (mb->wake_fd >= 0) {
        close(mb->wake_fd);
    }
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}

/* Drop n references; the caller holds the lock, which this releases. */
static void unref_unlock(struct mailbox *mb, int n)
{
    mb->refs -= n;
    int last = mb->refs == 0;
    pthread_mutex_unlock(&mb->lock);
    if (last) {
        mailbox_free(mb);
    }
}

static void wake(struct mailbox *mb)
{
    uint64_t one = 1;
    ssize_t k = write(mb->wake_fd, &one, sizeof one);
    (void)k;
}

/* libnats: the fate of a published message (pa: stored; pae: refused or timed out). */
static void on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct mailbox *mb = closure;
    pthread_mutex_lock(&mb->lock);
    if (mb->worker_gone || mb->res_n == PENDING_MAX) {
        /* The worker bounds what is outstanding to the ring's size: full cannot happen. */
        natsMsg_Destroy(msg);
        unref_unlock(mb, 1);
        return;
    }
    struct result *r = &mb->res[(mb->res_head + mb->res_n) % PENDING_MAX];
    r->msg = msg;
    r->ok = pa != NULL && pae == NULL;
    r->err = pae ? pae->Err : NATS_OK;
    r->code = pae ? (int)pae->ErrCode : 0;
    mb->res_n++;
    pthread_mutex_unlock(&mb->lock);
    wake(mb);
}

/* Under mb->lock: 1 when id was seen already, else 0 and id remembered. */
static int order_seen(struct mailbox *mb, const char *id)
{
    for (int i = 0; i < ORDERS_SEEN; i++) {
        if (strcmp(mb->seen[i], id) == 0) {
            return 1;
        }
    }
    snprintf(mb->seen[mb->seen_next], ORDER_ID_MAX, "%s", id);
    mb->seen_next = (mb->seen_next + 1) % ORDERS_SEEN;
    return 0;
}

/* libnats: a message on the agent's control subject. A collector resends an order (header
 * Tt-Order, with a reply subject) until it is confirmed: the confirmation is the id published
 * to the reply subject, sent on each copy once the order is queued (or was already). */
static void on_control(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    struct mailbox *mb = closure;
    const char *who = NULL, *oid = NULL;
    int len = natsMsg_GetDataLength(msg);
    if (natsMsgHeader_Get(msg, "Tt-Agent", &who) != NATS_OK || !who ||
        strcmp(who, mb->agent) != 0 || len < 0 || (unsigned)len > CTL_MSG_MAX) {
        natsMsg_Destroy(msg); /* another agent's order (a hash collision), or malformed */
        return;
    }
    char id[ORDER_ID_MAX] = "";
    if (natsMsgHeader_Get(msg, "Tt-Order", &oid) == NATS_OK && oid && *oid &&
        strlen(oid) < sizeof id) {
        snprintf(id, sizeof id, "%s", oid);
    }
    char reply[256] = "";
    const char *rs = natsMsg_GetReply(msg);
    if (rs && strlen(rs) < sizeof reply) {
        snprintf(reply, sizeof reply, "%s", rs);
    }
    struct ctl_msg *m = malloc(sizeof *m + (size_t)len + 1);
    if (m) {
        m->next = NULL;
        m->n = (size_t)len;
        memcpy(m->data, natsMsg_GetData(msg), (size_t)len);
    }
    natsMsg_Destroy(msg);
    if (!m) {
        return; /* not confirmed: the collector resends it */
    }
    pthread_mutex_lock(&mb->lock);
    if (mb->worker_gone || mb->ctl_n >= CTL_QUEUE_MAX) {
        pthread_mutex_unlock(&mb->lock);
        free(m);
        return;
    }
    if (id[0] && order_seen(mb, id)) {
        pthread_mutex_unlock(&mb->lock);
        free(m); /* a copy of an order queued before: confirmed again, not applied twice */
    } else {
        if (mb->ctl_tail) {
            mb->ctl_tail->next = m;
        } else {
            mb->ctl_head = m;
        }
        mb->ctl_tail = m;
        mb->ctl_n++;
        pthread_mutex_unlock(&mb->lock);
        wake(mb);
    }
    if (id[0] && reply[0]) {
        natsConnection_Publish(nc, reply, id, (int)strlen(id));
    }
}

static void on_conn_change(natsConnection *nc, void *closure)
{
    (void)nc;
    struct mailbox *mb = closure;
    pthread_mutex_lock(&mb->lock);
    mb->conn_gen++;
    pthread_mutex_unlock(&mb->lock);
    wake(mb);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct mailbox *mb = closure;
    pthread_mutex_lock(&mb->lock);
    mb->conn_gen++;
    mb->downs++;
    pthread_mutex_unlock(&mb->lock);
    wake(mb);
}

/* The connection's last callback: its reference goes. (The eventfd is the mailbox's own
 * duplicate, valid until the mailbox is freed, so waking after the worker is gone is
 * harmless.) */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    struct mailbox *mb = closure;
    pthread_mutex_lock(&mb->lock);
    mb->conn_gen++;
    mb->downs++;
    pthread_mutex_unlock(&mb->lock);
    wake(mb);
    pthread_mutex_lock(&mb->lock);
    unref_unlock(mb, 1);
}

static void on_sub_complete(void *closure)
{
    struct mailbox *mb = closure;
    pthread_mutex_lock(&mb->lock);
    unref_unlock(mb, 1);
}

/* libnats: the delay before the next round of reconnection attempts (backoff with jitter). */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    const struct mailbox *mb = closure;
    uint64_t d = mb->backoff_min_ms;
    for (int i = 1; i < attempts && d < mb->backoff_max_ms; i++) {
        d *= 2;
    }
    d = TT_MIN(d, mb->backoff_max_ms);
    /* Jitter from the clock's low bits: agents that lost one server do not return in step. */
    return (int64_t)(d / 2 + (tt__mono_ns() / 1000u) % (d / 2 + 1));
}

/* --- the worker's side -------------------------------------------------------------------- */

typedef struct tt__nats {
    struct mailbox *mb;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    char servers[TT_NATS_SERVERS_MAX][TT_NATS_URL_MAX];
    int n_servers;
    char subject[sizeof(((tt__cfg *)0)->nats_subject) + 8];
    char control[40];
    uint64_t seen_gen;
    uint64_t seen_downs;
    uint32_t outstanding; /* messages published whose fate the worker has not seen */
    uint64_t retry_ns;    /* when frames whose publish failed go again; 0: none waits */
    uint64_t retry_backoff_ms;
    uint64_t max_payload;
    size_t hello_max; /* an upper bound of the hello frame's size */
    int in_child;     /* a forked child's: libnats's threads are not here, never call it */
    tt__buf body;     /* hello + batch of the message being published */
    tt__buf hello;
} tt__nats;

static void set_error(tt__worker *w, const char *why)
{
    tt_client *c = w->c;
    pthread_mutex_lock(&c->ctl_lock);
    snprintf(c->conn_error, sizeof c->conn_error, "%s", why);
    pthread_mutex_unlock(&c->ctl_lock);
}

static void set_error_status(tt__worker *w, const char *what, natsStatus s)
{
    char why[300];
    snprintf(why, sizeof why, "nats: %s: %s", what, natsStatus_GetText(s));
    set_error(w, why);
}

/* The batch limit under which a sealed frame, after the hello and the headers, fits the
 * server's max_payload: a batch can pass it by one event, its counters and its header. */
static void fit_batch_limit(tt__worker *w)
{
    tt__nats *nx = w->nats;
    uint64_t over = nx->hello_max + HEADER_ROOM + TT_FRAME_HDR_MAX + TT_BATCH_HDR_MAX + 4096 +
                    tt__encode_bound((uint32_t)w->c->max_record + 64);
    uint64_t fit = nx->max_payload > over + 1024 ? nx->max_payload - over : 1024;
    w->batch_limit = TT_MIN(w->c->cfg.batch_bytes, fit);
}

int tt__nats_init(tt__worker *w)
{
    tt_client *c = w->c;
    tt__nats *nx = calloc(1, sizeof *nx);
    struct mailbox *mb = calloc(1, sizeof *mb);
    if (!nx || !mb) {
        free(nx);
        free(mb);
        return TT_ENOMEM;
    }
    pthread_mutex_init(&mb->lock, NULL);
    mb->refs = 1; /* the worker's */
    mb->wake_fd = fcntl(c->wake_fd, F_DUPFD_CLOEXEC, 0);
    mb->backoff_min_ms = TT_MAX(c->cfg.backoff_min_ms, 2);
    mb->backoff_max_ms = TT_MAX(c->cfg.backoff_max_ms, mb->backoff_min_ms);
    snprintf(mb->agent, sizeof mb->agent, "%s", c->cfg.agent);
    nx->mb = mb;
    char err[200];
    nx->n_servers = tt__nats_endpoint_parse(c->cfg.endpoint, nx->servers, err, sizeof err);
    snprintf(nx->subject, sizeof nx->subject, "%s.%u", c->cfg.nats_subject,
             (unsigned)(tt__fnv1a32(c->cfg.agent, strlen(c->cfg.agent)) % PARTITIONS));
    snprintf(nx->control, sizeof nx->control, "telltale.control.%016llx",
             (unsigned long long)tt__fnv1a64(c->cfg.agent, strlen(c->cfg.agent)));
    tt__buf_init(&nx->body, (64u << 20) + (1u << 20));
    tt__buf_init(&nx->hello, 64u << 10);
    /* agent, token and host of at most 255 bytes each, the library, pid, times: 1 KiB over */
    nx->hello_max = 3 * 256 + 64 + 256 + TT_FRAME_HDR_MAX;
    nx->max_payload = DEFAULT_MAX_PAYLOAD;
    nx->retry_backoff_ms = c->cfg.backoff_min_ms;
    nx->in_child = (int)getpid() != c->nats_pid;
    if (mb->wake_fd < 0 || nx->n_servers <= 0) {
        nx->mb = NULL;
        mailbox_free(mb);
        tt__buf_fini(&nx->body);
        tt__buf_fini(&nx->hello);
        free(nx);
        return TT_ENOMEM;
    }
    w->nats = nx;
    fit_batch_limit(w);
    return 0;
}

static int make_options(tt__worker *w)
{
    tt_client *c = w->c;
    tt__nats *nx = w->nats;
    const char *urls[TT_NATS_SERVERS_MAX];
    for (int i = 0; i < nx->n_servers; i++) {
        urls[i] = nx->servers[i];
    }
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) {
        s = natsOptions_SetServers(o, urls, nx->n_servers);
    }
    if (s == NATS_OK && c->nats_token[0]) {
        s = natsOptions_SetToken(o, c->nats_token);
    }
    int64_t timeout = (int64_t)TT_MIN(c->cfg.ack_timeout_ms, 2000u);
    if (s == NATS_OK) {
        s = natsOptions_SetTimeout(o, timeout);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetName(o, "libtelltale");
    }
    /* Nothing is meant to wait in libnats's reconnect buffer: a publish is acknowledged by
     * its PubAck only, and none is made while disconnected. The smallest buffer it takes. */
    if (s == NATS_OK) {
        s = natsOptions_SetReconnectBufSize(o, 1);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetMaxReconnect(o, -1);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetCustomReconnectDelay(o, reconnect_delay, nx->mb);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetPingInterval(o, (int64_t)TT_MAX(c->cfg.ack_timeout_ms, 100u));
    }
    if (s == NATS_OK) {
        s = natsOptions_SetMaxPingsOut(o, 2);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetRetryOnFailedConnect(o, true, on_conn_change, nx->mb);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, nx->mb);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetReconnectedCB(o, on_conn_change, nx->mb);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetClosedCB(o, on_closed, nx->mb);
    }
    if (s != NATS_OK) {
        natsOptions_Destroy(o);
        set_error_status(w, "options", s);
        return -1;
    }
    nx->opts = o;
    return 0;
}

/* Create the connection (libnats then keeps it up, reconnecting by itself), the JetStream
 * context and the control subscription. The first attempt blocks for at most 2 s per server
 * (min(ack_timeout_ms, 2000)); the next ones run in libnats's own thread. */
static void connect_start(tt__worker *w, uint64_t now)
{
    tt__nats *nx = w->nats;
    struct mailbox *mb = nx->mb;
    w->attempts++;
    w->attempt_started_ns = now;
    if (!nx->opts && make_options(w) != 0) {
        goto retry;
    }
    pthread_mutex_lock(&mb->lock);
    mb->refs++; /* the connection's, dropped by on_closed */
    pthread_mutex_unlock(&mb->lock);
    natsStatus s = natsConnection_Connect(&nx->nc, nx->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        nx->nc = NULL;
        pthread_mutex_lock(&mb->lock);
        mb->refs--;
        pthread_mutex_unlock(&mb->lock);
        set_error_status(w, "connect", s);
        goto retry;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = (int64_t)w->c->cfg.ack_timeout_ms;
    jo.PublishAsync.MaxPending = 2 * PENDING_MAX; /* never reached: no stall in a publish */
    jo.PublishAsync.AckHandler = on_puback;
    jo.PublishAsync.AckHandlerClosure = mb;
    s = natsConnection_JetStream(&nx->js, nx->nc, &jo);
    if (s == NATS_OK) {
        s = natsConnection_Subscribe(&nx->sub, nx->nc, nx->control, on_control, mb);
    }
    if (s == NATS_OK) {
        pthread_mutex_lock(&mb->lock);
        mb->refs++; /* the subscription's, dropped by on_sub_complete */
        pthread_mutex_unlock(&mb->lock);
        if (natsSubscription_SetOnCompleteCB(nx->sub, on_sub_complete, mb) != NATS_OK) {
            pthread_mutex_lock(&mb->lock);
            mb->refs--;
            pthread_mutex_unlock(&mb->lock);
            s = NATS_ERR;
        }
    }
    if (s == NATS_OK) {
        natsSubscription_SetPendingLimits(nx->sub, CTL_QUEUE_MAX, 8 << 20);
        nx->seen_gen = UINT64_MAX; /* look at the status at once */
        return;
    }
    set_error_status(w, "jetstream context or control subscription", s);
    /* Should the subscription exist without its completion callback, it may still deliver:
     * keep everything until the end (tt__nats_close), and try nothing more. */
    return;
retry:
    w->next_attempt_ns = now + w->backoff_ms * MS;
    w->backoff_ms = TT_MIN(w->backoff_ms * 2, w->c->cfg.backoff_max_ms);
}

/* Remove f from the window (it may sit anywhere in it). */
static void window_remove(tt__worker *w, tt__frame_out *f)
{
    tt__frame_out *prev = NULL;
    for (tt__frame_out *g = w->window.head; g && g != f; g = g->next) {
        prev = g;
    }
    if (prev) {
        prev->next = f->next;
    } else {
        w->window.head = f->next;
    }
    if (w->window.tail == f) {
        w->window.tail = prev;
    }
    if (w->send_next == f) {
        w->send_next = f->next;
    }
    w->window.n_frames--;
    w->window.n_events -= f->n_events;
    w->window.bytes -= f->len;
    f->next = NULL;
    ST(w->c->ws.in_window, w->window.n_events);
}

static tt__frame_out *frame_of(tt__worker *w, const natsMsg *m)
{
    for (tt__frame_out *f = w->window.head; f; f = f->next) {
        if (f->nats_msg == m) {
            return f;
        }
    }
    return NULL;
}

static void schedule_republish(tt__worker *w, uint64_t now)
{
    tt__nats *nx = w->nats;
    if (!nx->retry_ns) {
        nx->retry_ns = now + nx->retry_backoff_ms * MS;
        nx->retry_backoff_ms = TT_MIN(nx->retry_backoff_ms * 2, w->c->cfg.backoff_max_ms);
    }
}

static void handle_result(tt__worker *w, const struct result *r, uint64_t now)
{
    tt__frame_out *f = frame_of(w, r->msg);
    if (!f) {
        return; /* its frame was settled meanwhile (close) */
    }
    f->nats_msg = NULL;
    f->frame_no = 0;
    if (r->ok) {
        window_remove(w, f);
        tt__worker_frame_acked(w, f);
        w->nats->retry_backoff_ms = w->c->cfg.backoff_min_ms;
        return;
    }
    char what[64];
    snprintf(what, sizeof what, "publish not acknowledged (JetStream error %d)", r->code);
    set_error_status(w, what, r->err);
    schedule_republish(w, now);
}

/* Take the PubAcks and the control messages that arrived. */
static void take_mail(tt__worker *w, uint64_t now)
{
    tt__nats *nx = w->nats;
    struct mailbox *mb = nx->mb;
    struct result res[64];
    for (;;) {
        pthread_mutex_lock(&mb->lock);
        uint32_t n = TT_MIN(mb->res_n, (uint32_t)TT_ARRAY_LEN(res));
        for (uint32_t i = 0; i < n; i++) {
            res[i] = mb->res[(mb->res_head + i) % PENDING_MAX];
        }
        mb->res_head = (mb->res_head + n) % PENDING_MAX;
        mb->res_n -= n;
        struct ctl_msg *ctl = mb->ctl_head;
        mb->ctl_head = mb->ctl_tail = NULL;
        mb->ctl_n = 0;
        /* The references of the messages taken; the worker's own keeps the mailbox. */
        mb->refs -= (int)n;
        pthread_mutex_unlock(&mb->lock);
        for (uint32_t i = 0; i < n; i++) {
            handle_result(w, &res[i], now);
            natsMsg_Destroy(res[i].msg);
        }
        nx->outstanding -= n;
        while (ctl) {
            struct ctl_msg *next = ctl->next;
            tt__control_handle(w->c, ctl->data, ctl->n);
            free(ctl);
            ctl = next;
        }
        if (n < TT_ARRAY_LEN(res)) {
            return;
        }
    }
}

/* Messages libnats still waits a PubAck for: taken back (no callback will come for them);
 * their frames go again. */
static void take_back_pending(tt__worker *w)
{
    tt__nats *nx = w->nats;
    natsMsgList list = {0};
    /* libnats 3.4.1 crashes here before the context's first asynchronous publish. */
    if (!nx->js || nx->outstanding == 0 ||
        js_PublishAsyncGetPendingList(&list, nx->js) != NATS_OK) {
        return;
    }
    int n = list.Count; /* natsMsgList_Destroy zeroes it */
    for (int i = 0; i < n; i++) {
        tt__frame_out *f = list.Msgs[i] ? frame_of(w, list.Msgs[i]) : NULL;
        if (f) {
            f->nats_msg = NULL;
            f->frame_no = 0;
        }
    }
    natsMsgList_Destroy(&list);
    pthread_mutex_lock(&nx->mb->lock);
    nx->mb->refs -= n;
    pthread_mutex_unlock(&nx->mb->lock);
    nx->outstanding -= (uint32_t)n;
}

static void link_up(tt__worker *w, uint64_t now)
{
    tt__nats *nx = w->nats;
    w->state = TT_CONN_READY;
    set_error(w, "");
    if (w->ever_connected) {
        ADD(w->c->ws.reconnects, 1);
    }
    w->ever_connected = 1;
    ST(w->c->ws.connected, 1);
    w->backoff_ms = w->c->cfg.backoff_min_ms;
    int64_t mp = natsConnection_GetMaxPayload(nx->nc);
    nx->max_payload = mp > 0 ? (uint64_t)mp : DEFAULT_MAX_PAYLOAD;
    fit_batch_limit(w);
    /* What was in flight when the link went down goes again at once, with the same ids. */
    take_back_pending(w);
    w->send_next = w->window.head;
    nx->retry_ns = 0;
    w->last_progress_ns = now;
}

static void link_down(tt__worker *w)
{
    w->state = TT_CONN_IDLE;
    ST(w->c->ws.connected, 0);
    w->send_next = NULL;
    set_error(w, "nats: disconnected (libnats reconnects)");
}

static void watch_status(tt__worker *w, uint64_t now)
{
    tt__nats *nx = w->nats;
    pthread_mutex_lock(&nx->mb->lock);
    uint64_t gen = nx->mb->conn_gen, downs = nx->mb->downs;
    pthread_mutex_unlock(&nx->mb->lock);
    if (gen == nx->seen_gen) {
        return;
    }
    nx->seen_gen = gen;
    if (downs != nx->seen_downs && w->state == TT_CONN_READY) {
        link_down(w); /* down and up again between two looks: still a new link */
    }
    nx->seen_downs = downs;
    int up = natsConnection_Status(nx->nc) == NATS_CONN_STATUS_CONNECTED;
    if (up && w->state != TT_CONN_READY) {
        link_up(w, now);
    } else if (!up && w->state == TT_CONN_READY) {
        link_down(w);
    }
}

/* The frame's message: a fresh hello, then the frame as sealed. */
static int build_body(tt__worker *w, const tt__frame_out *f)
{
    tt__nats *nx = w->nats;
    tt__buf_reset(&nx->hello);
    int rc = tt__conn_hello_frame(w, &nx->hello);
    tt__buf_reset(&nx->body);
    if (rc == 0) {
        rc = tt__buf_append(&nx->body, nx->hello.data, nx->hello.len);
    }
    if (rc == 0) {
        rc = tt__buf_append(&nx->body, f->data, f->len);
    }
    return rc;
}

static void drop_too_large(tt__worker *w, tt__frame_out *f)
{
    char why[200];
    snprintf(why, sizeof why,
             "nats: a batch of %zu bytes does not fit the server's max_payload"
             " (%llu): dropped as too_large",
             f->len, (unsigned long long)w->nats->max_payload);
    set_error(w, why);
    window_remove(w, f);
    ADD(w->c->ws.dropped[TT_DROP_TOO_LARGE], f->n_events);
    if (f->from_spool && w->c->spool) {
        tt__spool_ack(w->c->spool, f->spool_id);
    }
    tt__frame_out_free(f);
}

/* Publish f: 0 when published, 1 when it was dropped (too large), -1 on failure (stop). */
static int publish(tt__worker *w, tt__frame_out *f)
{
    tt__nats *nx = w->nats;
    if (build_body(w, f) != 0) {
        return -1;
    }
    if (nx->body.len + HEADER_ROOM > nx->max_payload) {
        drop_too_large(w, f);
        return 1;
    }
    natsMsg *m = NULL;
    natsStatus s =
        natsMsg_Create(&m, nx->subject, NULL, (const char *)nx->body.data, (int)nx->body.len);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = (int64_t)w->c->cfg.ack_timeout_ms;
    char id[64];
    if (f->n_events) {
        /* A heartbeat (no events) goes without an id: each carries newer counters. */
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) {
            id[2 * i] = hex[f->instance[i] >> 4];
            id[2 * i + 1] = hex[f->instance[i] & 15];
        }
        snprintf(id + 32, sizeof id - 32, ":%llu", (unsigned long long)f->first_seq);
        po.MsgId = id;
    }
    pthread_mutex_lock(&nx->mb->lock);
    nx->mb->refs++;
    pthread_mutex_unlock(&nx->mb->lock);
    natsMsg *sent = m;
    if (s == NATS_OK) {
        s = js_PublishMsgAsync(nx->js, &m, &po);
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        pthread_mutex_lock(&nx->mb->lock);
        nx->mb->refs--;
        pthread_mutex_unlock(&nx->mb->lock);
        set_error_status(w, "publish", s);
        return -1;
    }
    nx->outstanding++;
    f->nats_msg = sent;
    f->frame_no = 1;
    if (!f->ever_sent) {
        f->ever_sent = 1;
        ADD(w->c->ws.sent, f->n_events);
    }
    ADD(w->c->ws.frames_sent, 1);
    ADD(w->c->ws.bytes_sent, nx->body.len);
    return 0;
}

static void publish_window(tt__worker *w, uint64_t now)
{
    tt__nats *nx = w->nats;
    if (nx->retry_ns && now >= nx->retry_ns) {
        nx->retry_ns = 0;
        w->send_next = w->window.head;
    }
    while (w->send_next && nx->outstanding < PENDING_MAX) {
        tt__frame_out *f = w->send_next;
        if (f->nats_msg) {
            w->send_next = f->next;
            continue;
        }
        tt__frame_out *next = f->next;
        int rc = publish(w, f);
        if (rc < 0) {
            w->send_next = NULL; /* all again at retry_ns */
            schedule_republish(w, now);
            return;
        }
        w->send_next = next;
    }
}

void tt__nats_step(tt__worker *w, uint64_t now)
{
    tt__nats *nx = w->nats;
    if (nx->in_child) {
        /* libnats is not fork-safe (its threads and locks stayed in the parent): frames wait,
         * then go to the spool or are counted at close. */
        if (w->attempts == 0) {
            set_error(w, "nats: not in a forked child (libnats is not fork-safe): open a new "
                         "client after exec");
        }
        w->attempts += w->closing && w->attempts == w->close_attempts;
        w->attempts += w->attempts == 0;
        return;
    }
    if (!nx->nc) {
        int due = w->closing && w->c->spool ? w->attempts == w->close_attempts
                                            : now >= w->next_attempt_ns;
        if (due) {
            connect_start(w, now);
        }
        if (!nx->nc) {
            return;
        }
    }
    watch_status(w, now);
    take_mail(w, now);
    if (w->state == TT_CONN_READY) {
        publish_window(w, now);
    } else if (w->closing && w->attempts == w->close_attempts) {
        /* Closing while the link is down: with a spool, the frames go to disk now. */
        w->attempts++;
    }
}

int64_t tt__nats_timeout_ns(const tt__worker *w, uint64_t now)
{
    const tt__nats *nx = w->nats;
    uint64_t due;
    if (nx->in_child) {
        return -1;
    }
    if (!nx->nc) {
        due = w->closing && w->c->spool ? now : w->next_attempt_ns;
    } else if (nx->retry_ns && w->state == TT_CONN_READY) {
        due = nx->retry_ns;
    } else {
        return -1;
    }
    return due > now ? (int64_t)(due - now) : 0;
}

void tt__nats_close(tt__worker *w)
{
    tt__nats *nx = w->nats;
    if (!nx) {
        return;
    }
    if (w->state == TT_CONN_READY) {
        ST(w->c->ws.connected, 0);
    }
    w->state = TT_CONN_IDLE;
    if (nx->nc) {
        natsConnection_Close(nx->nc);
    }
    take_back_pending(w);
    take_mail(w, tt__mono_ns());
    jsCtx_Destroy(nx->js);
    natsSubscription_Destroy(nx->sub);
    natsConnection_Destroy(nx->nc);
    natsOptions_Destroy(nx->opts);
    nx->js = NULL;
    nx->sub = NULL;
    nx->nc = NULL;
    nx->opts = NULL;
    struct mailbox *mb = nx->mb;
    pthread_mutex_lock(&mb->lock);
    mb->worker_gone = 1;
    /* Results that came after take_mail: their messages, and their references. */
    while (mb->res_n) {
        natsMsg_Destroy(mb->res[mb->res_head].msg);
        mb->res_head = (mb->res_head + 1) % PENDING_MAX;
        mb->res_n--;
        mb->refs--;
    }
    unref_unlock(mb, 1);
    nx->mb = NULL;
    explicit_bzero(w->c->nats_token, sizeof w->c->nats_token);
    tt__buf_fini(&nx->body);
    tt__buf_fini(&nx->hello);
    free(nx);
    w->nats = NULL;
}

void tt__nats_forget(tt__worker *w)
{
    tt__nats *nx = w->nats;
    if (!nx) {
        return;
    }
    /* In a forked child libnats's threads do not exist: its objects and the mailbox they may
     * name are left as they are (a leak in the child, never a call into a half library). */
    tt__buf_fini(&nx->body);
    tt__buf_fini(&nx->hello);
    free(nx);
    w->nats = NULL;
}

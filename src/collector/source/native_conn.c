/*
 * native_conn.c - one agent connection of the native source, as a state machine the loop
 * drives: bytes in, frames parsed, the hello checked, batches decoded and handed on, the
 * pipeline's answers turned into acks and rejects.
 *
 * Each frame is checked (length against the limit before any allocation, CRC, header,
 * decompressed size and ratio, then the protobuf payload), handed to the pipeline, and
 * acknowledged once the store has committed it. Framing errors close the connection with a
 * counted reason; a frame whose framing is intact but whose payload is bad is rejected alone
 * and the connection goes on.
 *
 * Admission (budget.h, docs/operations.md "Memory bound"): the read buffer grows past
 * CONN_RBUF_BASE only to hold the frame whose header it has read, and only once that growth is
 * admitted from the partial pool; a batch is admitted from the items pool by its declared
 * decompressed size before its item is allocated, and decompression writes into exactly that
 * many bytes, never more. What cannot be admitted waits: the connection stops reading (its
 * peer sees TCP backpressure) until conn_budget_wake resumes it; nothing read is dropped.
 *
 * INVARIANTS
 * - Acks leave in frame order per connection, and only for frames the pipeline returned as
 *   committed (or as duplicates of committed ones). A reject never overtakes the acks of the
 *   frames before it.
 * - A connection's identity (agent, instance) is fixed by its hello. A batch naming another
 *   instance is one the agent's spool kept from an earlier process of the same agent: it is
 *   stored under its own instance (the store refuses it if that instance belongs to another
 *   agent), never under the connection's.
 * - On a tls:// connection every byte goes through its TLS session (io_recv, io_send) and
 *   nothing is parsed before the handshake is done; after it, the frames and their checks
 *   are the ones of plain TCP. With mTLS the certificate's name is the agent's name.
 * - Nothing here frees a connection. Closing marks it dead and tells the owner (the lifetime
 *   rule of native.c); every function may be called on a dead connection and then does
 *   nothing but count what it must.
 */
#include "collector/source/native_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "collector/log.h"
#include "collector/source/tls.h"
#include "collector/store/store.h"
#include "common/clock.h"
#include "common/compat.h"

#define WBUF_MAX (1u << 20)

struct conn *conn_new(struct conn_owner *ow, int fd, uint64_t id)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->fd = fd;
    c->id = id;
    c->opened_ns = c->last_rx_ns = tt__mono_ns();
    tt__buf_init(&c->rbuf, CONN_HELLO_FRAME_MAX); /* rbuf_admit sets max as it goes */
    c->rbuf_pool = &ow->adm.partial;
    tt__buf_init(&c->wbuf, WBUF_MAX);
    peer_probe(fd, &c->peer);
    return c;
}

int conn_start_tls(struct conn *c, struct tls_server *s)
{
    c->tls = tls_conn_new(s, c->fd);
    c->handshaking = c->tls != NULL;
    return c->tls ? 0 : -1;
}

size_t conn_tls_pending(const struct conn *c)
{
    /* a blocked connection reads nothing: its decrypted bytes wait in the session (at most a
     * record) until conn_budget_wake resumes it, and then go into the admitted rbuf */
    return c->tls && !c->handshaking && !c->dead && !c->blocked ? tls_conn_pending(c->tls) : 0;
}

/* The connection's transport: the socket, or the TLS session on it. */
static ssize_t io_recv(struct conn *c, void *p, size_t n)
{
    return c->tls ? tls_conn_recv(c->tls, p, n) : recv(c->fd, p, n, 0);
}

static ssize_t io_send(struct conn *c, const void *p, size_t n)
{
    return c->tls ? tls_conn_send(c->tls, p, n) : send(c->fd, p, n, MSG_NOSIGNAL);
}

int conn_set_identity(struct conn *c, const char *kind, const char *value)
{
    if (c->ready || !kind || !*kind || !value || !*value) {
        return -1;
    }
    snprintf(c->ident.identity, sizeof c->ident.identity, "%s:%s", kind, value);
    return 0;
}

void conn_reap(struct conn *c)
{
    tls_conn_free(c->tls);
    c->tls = NULL;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    tt__buf_fini(&c->rbuf);
    tt__buf_fini(&c->wbuf);
    c->woff = 0;
    c->reaped = 1;
    budget_cancel(&c->bw);
    budget_give(c->rbuf_pool, c->rbuf_charge); /* its memory is gone only now */
    c->rbuf_charge = 0;
}

void conn_free(struct conn *c)
{
    if (c) {
        conn_reap(c);
        free(c);
    }
}

void conn_kill(struct conn_owner *ow, struct conn *c)
{
    if (c->dead) {
        return;
    }
    c->dead = 1;
    c->closing = 1;
    budget_cancel(&c->bw);
    ow->died(ow, c);
}

void conn_fail(struct conn_owner *ow, struct conn *c, int reason)
{
    if (c->dead) {
        return;
    }
    cstat_add(&cstats.rejected[reason], 1);
    log_debug("closing connection %llu (%s): %s", (unsigned long long)c->id,
              c->ready ? "agent" : "before hello", reject_name(reason));
    conn_kill(ow, c);
}

/* Send what is queued; close a closing connection once it has nothing more to say. */
static int conn_flush(struct conn_owner *ow, struct conn *c)
{
    while (!c->dead && c->woff < c->wbuf.len) {
        ssize_t n = io_send(c, c->wbuf.data + c->woff, c->wbuf.len - c->woff);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            conn_kill(ow, c);
            break;
        }
        c->woff += (size_t)n;
    }
    if (c->dead) {
        return -1;
    }
    if (c->woff == c->wbuf.len) {
        c->woff = c->wbuf.len = 0;
        tt__buf_shrink(&c->wbuf, 65536);
        if (c->closing && c->pending == 0) {
            conn_kill(ow, c);
            return -1;
        }
    }
    int want = c->woff < c->wbuf.len;
    if (want != c->want_out) {
        c->want_out = want;
        ow->watch(ow, c);
    }
    return 0;
}

static void handshake_step(struct conn_owner *ow, struct conn *c);

void conn_writable(struct conn_owner *ow, struct conn *c)
{
    if (c->handshaking) {
        handshake_step(ow, c);
        return;
    }
    conn_flush(ow, c);
}

int conn_send(struct conn_owner *ow, struct conn *c, uint8_t type, const uint8_t *payload, size_t n)
{
    if (c->dead) {
        return -1;
    }
    if (tt__frame_append(&c->wbuf, type, payload, n) != 0) {
        /* The agent does not read what we send: it cannot be kept up to date. */
        conn_kill(ow, c);
        return -1;
    }
    return conn_flush(ow, c);
}

static void send_ack(struct conn_owner *ow, struct conn *c)
{
    tt__buf p;
    tt__buf_init(&p, 64);
    if (tt__ack_encode(c->ack_pending, &p) == 0) {
        c->ack_pending = 0;
        conn_send(ow, c, TT_FT_ACK, p.data, p.len);
    }
    tt__buf_fini(&p);
}

static void send_reject(struct conn_owner *ow, struct conn *c, uint64_t frame_no, int permanent,
                        const char *reason)
{
    tt__reject rj = {.frame_no = frame_no, .permanent = permanent};
    snprintf(rj.reason, sizeof rj.reason, "%s", reason);
    tt__buf p;
    tt__buf_init(&p, 512);
    if (tt__reject_encode(&rj, &p) == 0) {
        conn_send(ow, c, TT_FT_REJECT, p.data, p.len);
    }
    tt__buf_fini(&p);
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

/* Who the peer is (identity.h): an identity set before the hello (TLS) stays; else a valid
 * ingest token's agent; else the peer's user. A counted reason to refuse, or -1. */
static int hello_identity(struct conn_owner *ow, const struct conn *c, int token_ok,
                          const char *agent, char *identity, size_t n, char *err, size_t errlen)
{
    if (c->peer.is_unix && peer_unix_allowed(ow->o, &c->peer, err, errlen) != 0) {
        return REJ_PEER;
    }
    if (c->ident.identity[0]) {
        snprintf(identity, n, "%s", c->ident.identity);
    } else if (token_ok) {
        snprintf(identity, n, "token:%s", agent);
    } else if (peer_identity(ow->o, c->fd, &c->peer, identity, n, err, errlen) != 0) {
        return REJ_PEER;
    }
    return -1;
}

/* mTLS: the certificate names the agent, whatever the hello says; an ingest token naming
 * another agent is refused. Runs before the owner check, so the name the owners table is asked
 * about is the certificate's, under the identity "cert:NAME". Returns -1 or a counted reason. */
static int tls_fix_agent(const struct conn *c, tt__hello_reply *r)
{
    const char *name = c->ident.identity + 5; /* after "cert:" */
    if (strncmp(c->ident.identity, "cert:", 5) != 0) {
        return -1;
    }
    if (r->agent[0] && strcmp(r->agent, name) != 0) {
        snprintf(r->error, sizeof r->error,
                 "the ingest token's agent is not the one of the client certificate");
        return REJ_AUTH;
    }
    snprintf(r->agent, sizeof r->agent, "%s", name);
    return -1;
}

/* Decide on a hello: the reply to send, and a counted reason to close (-1: accepted). */
static int check_hello(struct conn_owner *ow, const struct conn *c, const tt__frame *f,
                       tt__hello *h, tt__hello_reply *r, char *identity, size_t idlen)
{
    memset(r, 0, sizeof *r);
    r->protocol = TT_PROTOCOL_VERSION;
    r->max_frame_bytes = ow->o->max_frame;
    r->sync_level = (uint32_t)ow->o->sync_level;
    if (c->ready || (f->flags & TT_FF_ZSTD) || tt__hello_decode(f->payload, f->payload_len, h)) {
        snprintf(r->error, sizeof r->error, "malformed hello");
        return REJ_BAD_HELLO;
    }
    if (h->protocol != TT_PROTOCOL_VERSION) {
        snprintf(r->error, sizeof r->error, "protocol %u not supported (this collector speaks %d)",
                 h->protocol, TT_PROTOCOL_VERSION);
        return REJ_PROTOCOL;
    }
    if (!valid_agent_name(h->agent)) {
        snprintf(r->error, sizeof r->error, "agent name empty or with control characters");
        return REJ_BAD_HELLO;
    }
    int token_ok = 0;
    int cert = strncmp(c->ident.identity, "cert:", 5) == 0; /* mTLS: the certificate suffices */
    if (ow->hooks.authorize && !(cert && !h->token[0])) {
        token_ok = ow->hooks.authorize(ow->hooks.ctx, h, r->agent, r->error, sizeof r->error);
        if (token_ok < 0) {
            return REJ_AUTH;
        }
    }
    int reason = tls_fix_agent(c, r);
    if (reason >= 0) {
        return reason;
    }
    const char *agent = r->agent[0] ? r->agent : h->agent;
    reason = hello_identity(ow, c, token_ok > 0, agent, identity, idlen, r->error, sizeof r->error);
    if (reason < 0 && ow->hooks.owner_ok &&
        ow->hooks.owner_ok(ow->hooks.ctx, agent, identity, r->error, sizeof r->error) < 0) {
        return REJ_IDENTITY;
    }
    return reason;
}

int64_t hello_clock_skew_ms(const tt__hello *h)
{
    if (!h->now_unix_ns) {
        return 0; /* an agent of before the field */
    }
    int64_t ms = tt__sub_sat_i64(tt__dur_i64(h->now_unix_ns), (int64_t)tt__wall_ns()) / 1000000;
    return ms > -CLOCK_SKEW_FLAG_MS && ms < CLOCK_SKEW_FLAG_MS ? 0 : ms;
}

/* The agent's clock against ours at its hello (the hello leaves the agent right after its
 * connection is up, so the link's delay is far below the tolerance). Logged at most once a
 * minute, whatever the number of agents and reconnections. */
static int64_t clock_skew_ms(const tt__hello *h, const char *agent)
{
    int64_t ms = hello_clock_skew_ms(h);
    if (!ms) {
        return 0;
    }
    cstat_add(&cstats.skewed_hellos, 1);
    static _Atomic uint64_t last_log_ns;
    uint64_t now = tt__mono_ns(), last = atomic_load_explicit(&last_log_ns, memory_order_relaxed);
    if ((last == 0 || now - last > 60000000000ull) &&
        atomic_compare_exchange_strong_explicit(&last_log_ns, &last, now, memory_order_relaxed,
                                                memory_order_relaxed)) {
        log_warn("agent \"%s\": its clock is %.1f s %s of the collector's; its events are stored "
                 "with their own times and flagged clock_skew_ms (at most one such line a minute)",
                 agent, (double)(ms < 0 ? -ms : ms) / 1000, ms < 0 ? "behind" : "ahead");
    }
    return ms;
}

static int on_hello(struct conn_owner *ow, struct conn *c, const tt__frame *f)
{
    tt__hello h;
    tt__hello_reply r;
    char identity[IDENTITY_MAX];
    int reason = check_hello(ow, c, f, &h, &r, identity, sizeof identity);
    if (reason < 0) {
        snprintf(c->ident.identity, sizeof c->ident.identity, "%s", identity);
        if (!r.agent[0]) {
            snprintf(r.agent, sizeof r.agent, "%s", h.agent);
        }
        snprintf(c->ident.agent, sizeof c->ident.agent, "%s", r.agent);
        memcpy(c->ident.instance, h.instance, 16);
        c->ident.pid = h.pid;
        snprintf(c->ident.host, sizeof c->ident.host, "%s", h.host);
        snprintf(c->ident.library, sizeof c->ident.library, "%s", h.library);
        c->ident.start_unix_ns = h.start_unix_ns;
        c->ident.clock_skew_ms = clock_skew_ms(&h, c->ident.agent);
        c->ready = 1;
    } else {
        cstat_add(&cstats.rejected[reason], 1);
        if (reason == REJ_PEER || reason == REJ_AUTH) {
            log_debug("refused an agent connection: %s", r.error);
        }
        c->closing = 1; /* after the reply has left */
    }
    tt__buf p;
    tt__buf_init(&p, 4096);
    if (tt__hello_reply_encode(&r, &p) == 0) {
        conn_send(ow, c, TT_FT_HELLO_REPLY, p.data, p.len);
    }
    tt__buf_fini(&p);
    if (reason < 0 && !c->dead && ow->hooks.on_hello) {
        ow->hooks.on_hello(ow->hooks.ctx, c->id, &c->ident);
    }
    if (!c->dead && c->closing) {
        ow->watch(ow, c);
    }
    return c->dead || c->closing ? -1 : 0;
}

size_t conn_item_cost(size_t raw_len, size_t blob_len)
{
    /* malloc's own headers are in the per-block slack of docs/operations.md's formula */
    return sizeof(struct store_item) + raw_len + blob_len;
}

void conn_item_done(struct conn_owner *ow, const struct store_item *it)
{
    budget_give(&ow->adm.items, conn_item_cost(it->raw_len, it->blob_len));
}

/* Release an item that never reached the pipeline. */
static void item_drop(struct conn_owner *ow, struct store_item *it)
{
    conn_item_done(ow, it);
    store_item_free(it);
}

/* Decompress (or copy) an admitted batch payload into a new item. The output buffer is the
 * declared size: zstd stops (and fails) rather than write past it. */
static struct store_item *item_new(struct conn_owner *ow, struct conn *c, const tt__frame *f,
                                   int *reason)
{
    struct store_item *it = calloc(1, sizeof *it);
    size_t raw_len = f->raw_len;
    if (!it || !(it->raw = malloc(raw_len ? raw_len : 1))) {
        free(it);
        *reason = REJ_STORE_ERROR;
        return NULL;
    }
    it->raw_len = raw_len;
    if (f->flags & TT_FF_ZSTD) {
        size_t n = ZSTD_decompressDCtx(ow->dctx, it->raw, raw_len, f->payload, f->payload_len);
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
    it->ident = c->ident;
    it->received_ns = tt__wall_ns();
    return it;
}

/* Stop reading c until conn_budget_wake finds room for what it waits for. */
static void block(struct conn_owner *ow, struct conn *c)
{
    c->blocked = 1;
    ow->watch(ow, c);
}

/* Returns 0 to go on with this connection, -1 if it is closing or dead, 1 if the frame must
 * wait for budget (it stays unread in rbuf). */
static int on_batch(struct conn_owner *ow, struct conn *c, const tt__frame *f)
{
    if (!c->ready) {
        conn_fail(ow, c, REJ_NO_HELLO);
        return -1;
    }
    size_t cost = conn_item_cost(f->raw_len, (f->flags & TT_FF_ZSTD) ? (size_t)f->payload_len : 0);
    int reason = REJ_RAW_TOO_LARGE;
    if (tt__frame_raw_ok(f, ow->o->max_raw) && cost <= ow->adm.items.limit) {
        if (budget_take(&ow->adm.items, &c->bw, cost) != 0) {
            block(ow, c);
            return 1;
        }
        reason = REJ_BAD_PAYLOAD;
    }
    uint64_t frame_no = ++c->frames_in;
    struct store_item *it = reason == REJ_RAW_TOO_LARGE ? NULL : item_new(ow, c, f, &reason);
    if (!it) {
        if (reason != REJ_RAW_TOO_LARGE) {
            budget_give(&ow->adm.items, cost);
        }
        send_reject(ow, c, frame_no, 1, reject_name(reason));
        conn_fail(ow, c, reason);
        return -1;
    }
    it->frame_no = frame_no;
    tt__batch_limits lim = {ow->o->max_events, ow->o->max_attrs};
    const char *why = NULL;
    if (tt__batch_parse(&it->batch, it->raw, it->raw_len, &lim, &why) != 0) {
        /* The framing is intact: refuse this batch alone and keep the connection. */
        cstat_add(&cstats.rejected[REJ_BAD_PAYLOAD], 1);
        send_reject(ow, c, frame_no, 1, why ? why : "bad batch");
        item_drop(ow, it);
        return c->dead ? -1 : 0;
    }
    it->batch.clock_skew_ms = c->ident.clock_skew_ms;
    if (it->batch.clock_skew_ms) {
        cstat_add(&cstats.skewed_frames, 1);
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
    ow->submit(ow, c, it);
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

static int handle_frame(struct conn_owner *ow, struct conn *c, const tt__frame *f)
{
    if (!c->ready && f->type != TT_FT_HELLO) {
        conn_fail(ow, c, REJ_NO_HELLO);
        return -1;
    }
    switch (f->type) {
    case TT_FT_HELLO:
        return on_hello(ow, c, f);
    case TT_FT_BATCH:
        return on_batch(ow, c, f);
    default:
        conn_fail(ow, c, REJ_BAD_HEADER);
        return -1;
    }
}

/* Act on every complete frame in the read buffer. Returns -1 if the connection stopped
 * reading (closing or dead). */
static int parse_frames(struct conn_owner *ow, struct conn *c)
{
    size_t off = 0;
    int rc = 0;
    while (off < c->rbuf.len && rc == 0) {
        tt__frame f;
        size_t need;
        int pr =
            tt__frame_parse(c->rbuf.data + off, c->rbuf.len - off, ow->o->max_frame, &f, &need);
        if (pr == TT_FRAME_NEED_MORE) {
            break; /* rbuf_admit makes room for the rest */
        }
        if (pr != TT_FRAME_OK) {
            conn_fail(ow, c, frame_error_reason(pr));
            return -1;
        }
        rc = handle_frame(ow, c, &f);
        if (rc <= 0) {
            off += f.frame_len; /* 1: blocked, the frame stays for the resume */
        }
    }
    if (c->dead) {
        return -1;
    }
    if (off) {
        memmove(c->rbuf.data, c->rbuf.data + off, c->rbuf.len - off);
        c->rbuf.len -= off;
    }
    return rc;
}

/* The read buffer's size for what it holds: the base (the hello's limit before a hello), or
 * the whole frame whose header starts it. 0 when that frame may not be read at all. */
static size_t rbuf_target(const struct conn_owner *ow, const struct conn *c, int *reason)
{
    size_t base = c->ready ? CONN_RBUF_BASE : CONN_HELLO_FRAME_MAX;
    if (c->rbuf.len < TT_FRAME_PREFIX) {
        return base;
    }
    uint32_t body = tt__ld_le32(c->rbuf.data);
    size_t need = TT_FRAME_PREFIX + (size_t)body;
    if (body > ow->o->max_frame || need > (c->ready ? SIZE_MAX : base)) {
        *reason = c->ready ? REJ_FRAME_TOO_LARGE : REJ_BAD_HELLO;
        return 0;
    }
    return need > base ? need : base;
}

/* Bring rbuf's charge down to what its allocation still holds above the base. */
static void rbuf_settle(struct conn *c)
{
    size_t keep = c->rbuf.cap > CONN_RBUF_BASE ? c->rbuf.cap - CONN_RBUF_BASE : 0;
    if (keep < c->rbuf_charge) {
        budget_give(c->rbuf_pool, c->rbuf_charge - keep);
        c->rbuf_charge = keep;
    }
}

/* Size rbuf for what it holds (shrinking after a large frame), growth admitted first. 0 when
 * there is room to read, 1 when blocked for budget, -1 when closed. */
static int rbuf_admit(struct conn_owner *ow, struct conn *c)
{
    int reason = REJ_FRAME_TOO_LARGE;
    size_t target = rbuf_target(ow, c, &reason);
    if (!target) {
        conn_fail(ow, c, reason);
        return -1;
    }
    if (c->rbuf.cap > target && c->rbuf.len <= target) {
        tt__buf_shrink(&c->rbuf, target);
        rbuf_settle(c);
    }
    if (c->rbuf.cap >= target) {
        return c->rbuf.len < c->rbuf.cap ? 0 : -1; /* full of complete frames: cannot be */
    }
    size_t charge = target > CONN_RBUF_BASE ? target - CONN_RBUF_BASE : 0;
    if (charge > c->rbuf_charge) {
        if (budget_take(c->rbuf_pool, &c->bw, charge - c->rbuf_charge) != 0) {
            block(ow, c);
            return 1;
        }
        c->rbuf_charge = charge;
    }
    c->rbuf.max = target;
    if (tt__buf_reserve(&c->rbuf, target - c->rbuf.len) != 0) {
        rbuf_settle(c);
        conn_fail(ow, c, REJ_FRAME_TOO_LARGE); /* out of memory */
        return -1;
    }
    rbuf_settle(c);
    return 0;
}

/* The agent closed its side. Bytes of a frame left unread mean it was cut short. */
static void on_eof(struct conn_owner *ow, struct conn *c)
{
    if (c->rbuf.len) {
        cstat_add(&cstats.rejected[REJ_TRUNCATED], 1);
    }
    c->closing = 1;
    if (c->pending == 0 && c->woff == c->wbuf.len) {
        conn_kill(ow, c);
    } else {
        ow->watch(ow, c);
    }
}

void conn_readable(struct conn_owner *ow, struct conn *c)
{
    if (c->handshaking) {
        handshake_step(ow, c);
        return;
    }
    for (int rounds = 0; rounds < 16 && !ow->paused && !c->closing && !c->blocked; rounds++) {
        int a = rbuf_admit(ow, c);
        if (a < 0 && !c->dead) {
            conn_fail(ow, c, REJ_FRAME_TOO_LARGE);
        }
        if (a != 0) {
            return;
        }
        ssize_t n = io_recv(c, c->rbuf.data + c->rbuf.len, c->rbuf.cap - c->rbuf.len);
        if (n == 0) {
            on_eof(ow, c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                conn_kill(ow, c);
            }
            return;
        }
        cstat_add(&cstats.bytes, (uint64_t)n);
        c->rbuf.len += (size_t)n;
        c->last_rx_ns = tt__mono_ns();
        if (parse_frames(ow, c) != 0) {
            return;
        }
    }
}

void conn_budget_wake(struct conn_owner *ow)
{
    struct budget *pools[2] = {&ow->adm.items, &ow->adm.partial};
    for (int i = 0; i < 2; i++) {
        struct budget_waiter *w;
        while ((w = budget_ready(pools[i])) != NULL) {
            struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, bw));
            c->blocked = 0;
            c->last_rx_ns = tt__mono_ns();
            if (!c->dead) {
                ow->watch(ow, c);
                if (parse_frames(ow, c) == 0) {
                    conn_readable(ow, c);
                }
            }
            if (w->on == pools[i] && pools[i]->head == w && !c->blocked) {
                budget_cancel(w); /* it did not take what it waited for: never spin */
            }
            if (pools[i]->head == w) {
                break; /* it waits again for more than there is */
            }
        }
    }
}

/* --- TLS handshake ------------------------------------------------------------------------ */

static void handshake_step(struct conn_owner *ow, struct conn *c)
{
    char why[256] = "";
    int rc = tls_conn_handshake(c->tls, why, sizeof why);
    char name[256];
    if (rc > 0 && tls_conn_peer_name(c->tls, name, sizeof name) == 0 &&
        conn_set_identity(c, "cert", name) != 0) {
        snprintf(why, sizeof why, "the client certificate names no agent");
        rc = -1;
    }
    if (rc < 0) {
        log_debug("connection %llu: TLS handshake refused: %s", (unsigned long long)c->id, why);
        conn_fail(ow, c, REJ_TLS);
        return;
    }
    int want = rc == 0 && tls_conn_wants_write(c->tls);
    if (rc > 0) {
        c->handshaking = 0;
        if (c->ident.identity[0]) {
            log_debug("connection %llu: TLS client certificate %s", (unsigned long long)c->id,
                      c->ident.identity);
        }
        want = c->woff < c->wbuf.len;
    }
    if (want != c->want_out) {
        c->want_out = want;
        ow->watch(ow, c);
    }
    if (rc > 0) {
        conn_readable(ow, c); /* the hello may have come with the handshake's last flight */
    }
}

/* --- completions --------------------------------------------------------------------------- */

void conn_complete(struct conn_owner *ow, struct conn *c, uint64_t frame_no, enum source_result r,
                   const char *reason)
{
    if (r != SOURCE_COMMITTED && r != SOURCE_DUPLICATE) {
        int why = r != SOURCE_REFUSED                 ? REJ_STORE_ERROR
                  : store_reason_is_ownership(reason) ? REJ_IDENTITY
                                                      : REJ_SEQ_OVERLAP;
        cstat_add(&cstats.rejected[why], 1);
    }
    if (c->pending) {
        c->pending--;
    }
    if (c->dead) {
        return; /* nobody to answer: the agent resends what it did not see acknowledged */
    }
    if (r == SOURCE_COMMITTED || r == SOURCE_DUPLICATE) {
        c->ack_pending = frame_no;
        if (r == SOURCE_COMMITTED && ow->drop_acks) {
            /* Test hook (TELLTALE_TEST_DROP_ACKS): committed, then the link breaks before the
             * ack leaves, so the agent cannot know; its resend must be stored only once. */
            ow->drop_acks--;
            c->ack_pending = 0;
            conn_kill(ow, c);
        }
        return;
    }
    /* A reject must not overtake the acks of the frames before it. */
    if (c->ack_pending) {
        send_ack(ow, c);
    }
    send_reject(ow, c, frame_no, r == SOURCE_REFUSED, reason ? reason : "refused");
}

void conn_flush_acks(struct conn_owner *ow, struct conn *c)
{
    if (c->dead) {
        return;
    }
    if (c->ack_pending) {
        send_ack(ow, c);
    }
    if (!c->dead && c->closing && c->pending == 0 && c->woff == c->wbuf.len) {
        conn_kill(ow, c);
    }
}

void conn_check_timeouts(struct conn_owner *ow, struct conn *c, uint64_t now)
{
    if (c->dead || c->closing) {
        return;
    }
    if (c->blocked) {
        return; /* not reading is the loop's doing, not the peer's */
    }
    if (!c->ready && now - c->opened_ns > ow->o->hello_timeout_ms * 1000000u) {
        conn_fail(ow, c, REJ_HELLO_TIMEOUT);
    } else if (c->rbuf_charge && now - c->last_rx_ns > ow->o->hello_timeout_ms * 1000000u) {
        conn_fail(ow, c, REJ_SLOW_FRAME); /* a partial frame may not sit on the budget */
    } else if (c->pending == 0 && now - c->last_rx_ns > ow->o->idle_timeout_ms * 1000000u) {
        conn_fail(ow, c, REJ_IDLE_TIMEOUT);
    }
}

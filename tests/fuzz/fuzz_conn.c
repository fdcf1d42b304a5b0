/*
 * fuzz_conn.c - libFuzzer harness for the native source's connection state machine
 * (src/collector/source/native_conn.c), the code the collector runs for every agent
 * connection. The input is a program of operations on up to three connections, each on a real
 * socketpair: bytes and whole frames (hello, batches, raw, compressed) written by the peer,
 * the loop's readable and writable events, store completions in submission order with any
 * result (committed, duplicate, refused, retry, fatal), the end of a completion round, peer
 * half-closes and resets, backpressure, timeouts, and new connections on reused slots. The
 * ingest budget (budget.h) is small and its two pools' limits come from the input, so
 * admissions wait, connections block, and the budget's return wakes them (conn_budget_wake
 * after every operation, as the loop does at the end of an iteration); frames as large as the
 * limit, declared sizes that lie, and incomplete large frames are written too.
 *
 * The harness is the loop here: it follows native.c's lifetime rule (dead connections are
 * freed only at the end of an operation, records with owed completions wait for them) and
 * checks, after every operation, what the state machine promises: a dead connection is never
 * re-armed, the completions owed on each connection equal its pending count, and the acks and
 * rejects a peer receives name frames in increasing order (a reject never overtakes the acks
 * before it), the budget's used bytes equal the sum of what each connection and each owed
 * batch holds, and it is all given back at the end. ASan and UBSan do the rest.
 *
 * A connection opened by the program may also be a tls:// one (source/tls.c): the peer is then
 * a GnuTLS client session on its socketpair, whose handshake the program steps like any other
 * I/O, and every byte the peer writes afterwards goes as TLS records into the same frame
 * decoder. What this fuzzes is ours: the handshake steps in the loop's readable and writable
 * events, the records-to-recv mapping (partial records, EAGAIN, resets and half-closes in the
 * middle of a handshake or a record), and the lifetime rule with a TLS session attached; the
 * TLS parsing itself is GnuTLS's. The server's certificate is made in memory at the first run.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "collector/source/native_conn.h"
#include "collector/source/tls.h"
#include "collector/store/store.h"
#include "common/clock.h"
#include "common/pb.h"
#include "common/wire.h"

#define NCONN 3
#define MAX_QUEUE 256
#define BIG_MAX (128u << 10) /* write_big's largest payload: the items pool is sized on it */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct owed {
    struct store_item *it;
    struct conn *c;
};

struct slot {
    struct conn *c;    /* NULL once reaped (the record may live on for owed completions) */
    int peer;          /* the agent's end, -1 when closed */
    uint64_t last_ack; /* highest frame number acknowledged to the peer so far */
    uint64_t done_no[MAX_QUEUE]; /* completions given for this connection, not yet seen */
    uint8_t done_ok[MAX_QUEUE];  /* ... committed or duplicate */
    size_t n_done;
    uint8_t rx[1 << 16];
    size_t rx_len;
    gnutls_session_t tls; /* the peer's TLS client session (a tls:// connection), or NULL */
    int tls_done;         /* its handshake finished */
};

struct harness {
    struct conn_owner ow;
    struct collector_opts o;
    struct slot s[NCONN];
    struct conn *dead;
    struct conn *all[64]; /* every record not yet freed */
    int n_all;
    struct owed q[MAX_QUEUE];
    size_t q_head, q_len;
    uint64_t next_id;
    const uint8_t *p;
    size_t left;
};

static struct harness H;
static ZSTD_CCtx *cctx; /* one for every run: ZSTD_compress would make one per call */

static uint8_t next_byte(void)
{
    if (!H.left) {
        return 0;
    }
    H.left--;
    return *H.p++;
}

static void watch(struct conn_owner *ow, struct conn *c)
{
    (void)ow;
    if (c->dead) {
        abort(); /* the loop would re-arm a connection it already unlinked */
    }
}

static void submit(struct conn_owner *ow, struct conn *c, struct store_item *it)
{
    (void)ow;
    if (H.q_len == MAX_QUEUE) {
        abort(); /* the harness completes before this; never reached with NCONN slots */
    }
    H.q[(H.q_head + H.q_len++) % MAX_QUEUE] = (struct owed){it, c};
}

static void died(struct conn_owner *ow, struct conn *c)
{
    (void)ow;
    c->next_dead = H.dead;
    H.dead = c;
}

static void forget(struct conn *c)
{
    for (int i = 0; i < H.n_all; i++) {
        if (H.all[i] == c) {
            H.all[i] = H.all[--H.n_all];
            return;
        }
    }
    abort();
}

/* native.c's reap: the end of an operation, where nothing holds a connection. */
static void reap(void)
{
    while (H.dead) {
        struct conn *c = H.dead;
        H.dead = c->next_dead;
        c->next_dead = NULL;
        if (!c->reaped) {
            for (int i = 0; i < NCONN; i++) {
                if (H.s[i].c == c) {
                    H.s[i].c = NULL;
                }
            }
            conn_reap(c);
        }
        if (c->pending == 0) {
            forget(c);
            free(c);
        }
    }
}

/* A self-signed server certificate made in memory, written to private temporary files for
 * tls_server_open (which reads files, and checks the key's mode), then removed. */
static struct tls_server *fuzz_tls_server(void)
{
    static struct tls_server *srv;
    if (srv) {
        return srv;
    }
    gnutls_x509_privkey_t k;
    gnutls_x509_crt_t c;
    gnutls_datum_t kp, cp;
    time_t now = time(NULL);
    if (gnutls_x509_privkey_init(&k) || gnutls_x509_crt_init(&c) ||
        gnutls_x509_privkey_generate(k, GNUTLS_PK_ECDSA,
                                     GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) ||
        gnutls_x509_crt_set_version(c, 3) || gnutls_x509_crt_set_serial(c, "\x01", 1) ||
        gnutls_x509_crt_set_activation_time(c, now - 60) ||
        gnutls_x509_crt_set_expiration_time(c, now + 86400) ||
        gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, "fuzz", 4) ||
        gnutls_x509_crt_set_key(c, k) || gnutls_x509_crt_sign2(c, c, k, GNUTLS_DIG_SHA256, 0) ||
        gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_PEM, &cp) ||
        gnutls_x509_privkey_export2(k, GNUTLS_X509_FMT_PEM, &kp)) {
        abort();
    }
    char cf[] = "/tmp/fuzz-conn-cert-XXXXXX", kf[] = "/tmp/fuzz-conn-key-XXXXXX", err[256];
    int cfd = mkstemp(cf), kfd = mkstemp(kf);
    if (cfd < 0 || kfd < 0 || write(cfd, cp.data, cp.size) != (ssize_t)cp.size ||
        write(kfd, kp.data, kp.size) != (ssize_t)kp.size) {
        abort();
    }
    close(cfd);
    close(kfd);
    if (tls_server_open(&srv, cf, kf, NULL, err, sizeof err) != 0) {
        abort();
    }
    unlink(cf);
    unlink(kf);
    gnutls_free(cp.data);
    gnutls_free(kp.data);
    gnutls_x509_crt_deinit(c);
    gnutls_x509_privkey_deinit(k);
    return srv;
}

/* The peer's client session (it verifies nothing: the collector's side is under test). */
static gnutls_session_t peer_tls(int fd)
{
    static gnutls_certificate_credentials_t cred;
    gnutls_session_t t;
    if (!cred && gnutls_certificate_allocate_credentials(&cred) != 0) {
        abort();
    }
    if (gnutls_init(&t, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) != 0) {
        abort();
    }
    gnutls_set_default_priority(t);
    gnutls_credentials_set(t, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_transport_set_int(t, fd);
    return t;
}

static void peer_close(struct slot *s)
{
    if (s->tls) {
        gnutls_deinit(s->tls);
        s->tls = NULL;
    }
    if (s->peer >= 0) {
        close(s->peer); /* with unread data this is a reset for the collector */
        s->peer = -1;
    }
}

static void open_slot(int i, int tls)
{
    struct slot *s = &H.s[i];
    if (s->c || H.n_all == 64) {
        return;
    }
    peer_close(s);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        return;
    }
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    s->c = conn_new(&H.ow, sv[0], ++H.next_id);
    if (!s->c) {
        close(sv[0]);
        close(sv[1]);
        return;
    }
    H.all[H.n_all++] = s->c;
    s->peer = sv[1];
    s->tls_done = 0;
    if (tls && conn_start_tls(s->c, fuzz_tls_server()) == 0) {
        s->tls = peer_tls(sv[1]);
    }
    s->last_ack = 0;
    s->n_done = 0;
    s->rx_len = 0;
}

/* One step of the peer's TLS handshake; whether it is done. A failed one resets the peer. */
static int peer_handshake(struct slot *s)
{
    if (s->tls && !s->tls_done) {
        int rc = gnutls_handshake(s->tls);
        if (rc == 0) {
            s->tls_done = 1;
        } else if (gnutls_error_is_fatal(rc)) {
            peer_close(s);
        }
    }
    return s->tls && s->tls_done;
}

static void peer_write(struct slot *s, const void *p, size_t n)
{
    if (s->peer >= 0 && n && s->tls) {
        /* Before the handshake is done the bytes are lost, as on a slow network; a record
         * that meets a full socket is a reset (its bytes would otherwise have to be sent
         * again exactly). */
        if (peer_handshake(s) && gnutls_record_send(s->tls, p, n) < 0) {
            peer_close(s);
        }
    } else if (s->peer >= 0 && n) {
        ssize_t w = send(s->peer, p, n, MSG_NOSIGNAL);
        (void)w; /* a full socket drops the rest, as a slow network would delay it */
    }
}

/* Forget the completions the peer has now heard of: up to frame no. */
static void seen_up_to(struct slot *s, uint64_t no)
{
    size_t k = 0;
    while (k < s->n_done && s->done_no[k] <= no) {
        k++;
    }
    memmove(s->done_no, s->done_no + k, (s->n_done - k) * sizeof s->done_no[0]);
    memmove(s->done_ok, s->done_ok + k, s->n_done - k);
    s->n_done -= k;
}

/* One frame the collector sent: acks rise, and a refusal that makes the agent resend (not
 * permanent) never overtakes the ack of a committed frame before it. */
static void peer_frame(struct slot *s, const tt__frame *f)
{
    uint64_t no = 0;
    tt__reject rj;
    if (f->type == TT_FT_ACK && tt__ack_decode(f->payload, f->payload_len, &no) == 0) {
        if (no <= s->last_ack) {
            abort(); /* an ack out of order */
        }
        s->last_ack = no;
        seen_up_to(s, no);
    } else if (f->type == TT_FT_REJECT && tt__reject_decode(f->payload, f->payload_len, &rj) == 0) {
        for (size_t k = 0; !rj.permanent && k < s->n_done && s->done_no[k] < rj.frame_no; k++) {
            if (s->done_ok[k]) {
                abort(); /* the agent would resend a committed frame it never saw acked */
            }
        }
        if (!rj.permanent) {
            seen_up_to(s, rj.frame_no);
        }
    }
}

/* Read what the collector sent to this peer and check it. */
static void peer_drain(struct slot *s)
{
    if (s->tls && !peer_handshake(s)) {
        return;
    }
    while (s->peer >= 0) {
        ssize_t n = s->tls ? gnutls_record_recv(s->tls, s->rx + s->rx_len, sizeof s->rx - s->rx_len)
                           : read(s->peer, s->rx + s->rx_len, sizeof s->rx - s->rx_len);
        if (n <= 0) {
            break;
        }
        s->rx_len += (size_t)n;
        size_t off = 0;
        tt__frame f;
        size_t need;
        while (tt__frame_parse(s->rx + off, s->rx_len - off, sizeof s->rx, &f, &need) ==
               TT_FRAME_OK) {
            peer_frame(s, &f);
            off += f.frame_len;
        }
        memmove(s->rx, s->rx + off, s->rx_len - off);
        s->rx_len -= off;
        if (s->rx_len == sizeof s->rx) {
            s->rx_len = 0;
        }
    }
}

static void write_hello(struct slot *s)
{
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = next_byte() & 0x80 ? next_byte() : TT_PROTOCOL_VERSION;
    uint8_t n = next_byte() % 8;
    for (uint8_t i = 0; i < n; i++) {
        h.agent[i] = (char)next_byte();
    }
    h.instance[0] = next_byte();
    h.pid = next_byte();
    tt__buf p, f;
    tt__buf_init(&p, 1 << 12);
    tt__buf_init(&f, 1 << 12);
    if (tt__hello_encode(&h, &p) == 0 && tt__frame_append(&f, TT_FT_HELLO, p.data, p.len) == 0) {
        peer_write(s, f.data, f.len);
    }
    tt__buf_fini(&p);
    tt__buf_fini(&f);
}

/* A Batch of n one-log events from first_seq; instance byte 0 from the input. */
static void write_batch(struct slot *s, int compressed)
{
    uint8_t inst[16] = {0};
    inst[0] = next_byte();
    uint64_t first = next_byte();
    int n = next_byte() % 4;
    uint8_t log[16], ev[32], buf[256], *q;
    q = tt__pb_put_uint(log, 1, 9);
    q = tt__pb_put_bytes(q, 2, "x", 1);
    size_t ln = (size_t)(q - log);
    q = tt__pb_put_sint(ev, 1, 0);
    q = tt__pb_put_bytes(q, 3, log, ln);
    size_t en = (size_t)(q - ev);
    q = tt__pb_put_bytes(buf, 1, inst, 16);
    q = tt__pb_put_uint(q, 2, first);
    q = tt__pb_put_fixed64(q, 3, 1700000000000000000ull);
    for (int i = 0; i < n; i++) {
        q = tt__pb_put_bytes(q, 4, ev, en);
    }
    size_t len = (size_t)(q - buf);
    uint8_t frame[512];
    if (compressed) {
        size_t z = ZSTD_compressCCtx(cctx, frame + TT_FRAME_HDR_MAX,
                                     sizeof frame - TT_FRAME_HDR_MAX, buf, len, 1);
        if (!ZSTD_isError(z)) {
            size_t fl = tt__frame_finish(frame, TT_FT_BATCH, TT_FF_ZSTD, (uint32_t)len, z);
            peer_write(s, frame, fl);
        }
        return;
    }
    tt__buf f;
    tt__buf_init(&f, 1 << 12);
    if (tt__frame_append(&f, TT_FT_BATCH, buf, len) == 0) {
        peer_write(s, f.data, f.len);
    }
    tt__buf_fini(&f);
}

/* Any frame: type and payload from the input, a valid CRC. */
static void write_frame(struct slot *s)
{
    uint8_t type = next_byte() % 8;
    size_t n = next_byte();
    n = n < H.left ? n : H.left;
    tt__buf f;
    tt__buf_init(&f, 1 << 12);
    if (tt__frame_append(&f, type, H.p, n) == 0) {
        peer_write(s, f.data, f.len);
    }
    H.p += n;
    H.left -= n;
    tt__buf_fini(&f);
}

static void write_raw(struct slot *s)
{
    size_t n = next_byte();
    n = n < H.left ? n : H.left;
    peer_write(s, H.p, n);
    H.p += n;
    H.left -= n;
}

/* The pipeline's answer for the oldest batch, as native_complete gives it. */
static void complete_one(enum source_result r)
{
    if (!H.q_len) {
        return;
    }
    struct owed w = H.q[H.q_head];
    H.q_head = (H.q_head + 1) % MAX_QUEUE;
    H.q_len--;
    int ok = r == SOURCE_COMMITTED || r == SOURCE_DUPLICATE;
    for (int i = 0; i < NCONN; i++) {
        struct slot *s = &H.s[i];
        if (s->c == w.c && !w.c->dead && s->n_done < MAX_QUEUE) {
            s->done_no[s->n_done] = w.it->frame_no;
            s->done_ok[s->n_done++] = (uint8_t)ok;
        }
    }
    const char *reason = ok ? NULL : "store says no";
    conn_item_done(&H.ow, w.it);
    conn_complete(&H.ow, w.c, w.it->frame_no, r, reason);
    if (w.c->reaped && w.c->pending == 0) {
        w.c->next_dead = H.dead;
        H.dead = w.c;
    }
    store_item_free(w.it);
}

static void complete_end(void)
{
    for (int i = 0; i < H.n_all; i++) {
        conn_flush_acks(&H.ow, H.all[i]);
    }
}

static int authorize(void *ctx, const tt__hello *h, char *agent, char *err, size_t errlen)
{
    (void)ctx;
    if (h->agent[0] == 'x') {
        snprintf(err, errlen, "agent x refused");
        return -1;
    }
    if (h->agent[0] == 'r') {
        snprintf(agent, 256, "renamed");
    }
    return 0;
}

/* What the loop promises between operations. */
static void check(void)
{
    for (int i = 0; i < H.n_all; i++) {
        struct conn *c = H.all[i];
        uint64_t owed = 0;
        for (size_t k = 0; k < H.q_len; k++) {
            owed += H.q[(H.q_head + k) % MAX_QUEUE].c == c;
        }
        if (owed != c->pending || c->woff > c->wbuf.len) {
            abort();
        }
    }
    /* The pools hold exactly what connections and owed batches were admitted for. */
    size_t partial = 0, items = 0;
    for (int i = 0; i < H.n_all; i++) {
        struct conn *c = H.all[i];
        partial += c->rbuf_charge;
        if (c->rbuf.cap > CONN_RBUF_BASE + c->rbuf_charge) {
            abort(); /* a read buffer larger than admitted */
        }
        if (!c->ready && c->rbuf.cap > CONN_HELLO_FRAME_MAX) {
            abort();
        }
    }
    for (size_t k = 0; k < H.q_len; k++) {
        const struct store_item *it = H.q[(H.q_head + k) % MAX_QUEUE].it;
        items += conn_item_cost(it->raw_len, it->blob_len);
    }
    if (partial != H.ow.adm.partial.used || items != H.ow.adm.items.used ||
        H.ow.adm.partial.used > H.ow.adm.partial.limit ||
        H.ow.adm.items.used > H.ow.adm.items.limit) {
        abort();
    }
}

/* A batch frame of declared size up to 128 KiB raw: compressed zeros in an unknown field (legal,
 * cheap to send, costly to admit), its declared raw length true or off by the input. */
static void write_big(struct slot *s)
{
    static uint8_t raw[BIG_MAX + 64], z[4 << 10];
    size_t n = (((size_t)next_byte() << 9) + next_byte()) % BIG_MAX;
    int lie = next_byte() % 4;
    uint8_t inst[16] = {0}, *q = raw;
    q = tt__pb_put_bytes(q, 1, inst, 16);
    q = tt__pb_put_uint(q, 2, 1);
    q = tt__pb_put_fixed64(q, 3, 1700000000000000000ull);
    q = tt__pb_put_tag(q, 99, 2);
    q = tt__pb_put_varint(q, n);
    memset(q, 0, n);
    size_t len = (size_t)(q - raw) + n;
    size_t c =
        ZSTD_compressCCtx(cctx, z + TT_FRAME_HDR_MAX, sizeof z - TT_FRAME_HDR_MAX, raw, len, 1);
    if (ZSTD_isError(c)) {
        return;
    }
    uint32_t declared = (uint32_t)(lie == 1 ? len - 1 : lie == 2 ? len + 1 : len);
    size_t fl = tt__frame_finish(z, TT_FT_BATCH, TT_FF_ZSTD, declared, c);
    peer_write(s, z, fl);
}

/* The header of a frame up to max_frame long, then only part of its body. */
static void write_partial(struct slot *s)
{
    uint8_t hdr[TT_FRAME_HDR_MAX] = {0};
    uint32_t body = ((uint32_t)next_byte() << 8) | next_byte();
    hdr[0] = (uint8_t)body;
    hdr[1] = (uint8_t)(body >> 8);
    hdr[8] = TT_FT_BATCH;
    peer_write(s, hdr, sizeof hdr);
    write_raw(s);
}

static void step(uint8_t op)
{
    struct slot *s = &H.s[next_byte() % NCONN];
    switch (op % 17) {
    case 0:
        write_raw(s);
        break;
    case 1:
        write_frame(s);
        break;
    case 2:
        write_hello(s);
        break;
    case 3:
        write_batch(s, 0);
        break;
    case 4:
        write_batch(s, 1);
        break;
    case 5:
    case 6:
        if (s->c && !s->c->dead) {
            conn_readable(&H.ow, s->c);
        }
        /* What native.c's loop does at the end of an iteration: records TLS has decrypted
         * already raise no socket event. */
        for (int k = 0; k < 4 && s->c && !s->c->closing && !H.ow.paused && conn_tls_pending(s->c);
             k++) {
            conn_readable(&H.ow, s->c);
        }
        break;
    case 7:
        if (s->c && !s->c->dead) {
            conn_writable(&H.ow, s->c);
        }
        break;
    case 8:
    case 9:
        complete_one((enum source_result)(next_byte() % 5));
        break;
    case 10:
        complete_end();
        break;
    case 11:
        if (s->peer >= 0) {
            shutdown(s->peer, SHUT_WR);
        }
        break;
    case 12:
        peer_close(s);
        break;
    case 13:
        peer_drain(s);
        break;
    case 14:
        if (s->c) {
            conn_check_timeouts(&H.ow, s->c, tt__mono_ns() + next_byte() * 2000000000ull);
        }
        break;
    case 16:
        if (next_byte() & 1) {
            write_big(s);
        } else {
            write_partial(s);
        }
        break;
    default:
        if (next_byte() & 1) {
            H.ow.paused = !H.ow.paused;
        } else {
            open_slot((int)(s - H.s), next_byte() & 1);
        }
        break;
    }
    reap();
    conn_budget_wake(&H.ow);
    reap();
    check();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ZSTD_DCtx *dctx;
    if (!dctx) {
        dctx = ZSTD_createDCtx();
        cctx = ZSTD_createCCtx();
    }
    memset(&H, 0, sizeof H);
    H.o.max_frame = 1u << 16;
    H.o.max_raw = 1u << 20;
    H.o.max_events = 1024;
    H.o.max_attrs = 64;
    H.o.hello_timeout_ms = 10000;
    H.o.idle_timeout_ms = 300000;
    H.o.sync_level = SYNC_FULL;
    H.ow.o = &H.o;
    H.ow.dctx = dctx;
    H.ow.hooks.authorize = authorize;
    H.ow.watch = watch;
    H.ow.submit = submit;
    H.ow.died = died;
    /* Small pools (1 to 4 frames, half to 1.5 of the largest batch): admissions wait often. */
    size_t frame = H.o.max_frame + TT_FRAME_PREFIX, item = conn_item_cost(BIG_MAX, 0);
    budget_init(&H.ow.adm.partial, frame * (1 + (size > 1 ? data[size - 1] % 4 : 0)));
    budget_init(&H.ow.adm.items, item * (1 + (size > 2 ? data[size - 2] % 3 : 0)) / 2);
    H.ow.drop_acks = size > 2 && data[0] == 0xda ? data[1] % 4 : 0;
    for (int i = 0; i < NCONN; i++) {
        H.s[i].peer = -1;
    }
    open_slot(0, 0);
    H.p = data;
    H.left = size;
    while (H.left) {
        step(next_byte());
    }
    /* The end: every owed completion arrives, every connection closes, all is freed. */
    while (H.q_len) {
        complete_one(SOURCE_COMMITTED);
    }
    complete_end();
    for (int i = 0; i < H.n_all; i++) {
        conn_kill(&H.ow, H.all[i]);
    }
    reap();
    for (int i = 0; i < NCONN; i++) {
        peer_close(&H.s[i]);
    }
    if (H.n_all) {
        abort(); /* a record outlived its connection and its completions */
    }
    if (H.ow.adm.partial.used || H.ow.adm.items.used || H.ow.adm.partial.head ||
        H.ow.adm.items.head) {
        abort(); /* budget not given back, or a waiter left queued */
    }
    return 0;
}

/*
 * nats.c - the NATS JetStream source (nats.h; the contract: docs/wire-format.md, "NATS
 * JetStream").
 *
 * The consumer thread's loop: perform the acks the completions queued; while the pipeline is
 * under its byte budget and fewer than NATS_HELD_MAX messages wait for their completion, fetch
 * up to NATS_FETCH_BATCH messages (waiting NATS_FETCH_WAIT_MS at most, so queued acks never wait
 * longer); decode each (nats_msg.c), authenticate its hello by its ingest token, submit it.
 * A message is owned by a struct held from its fetch until its ack, nak or term: the pipeline's
 * cookie. The holds are listed so that nats_free can release those whose completion never came
 * (the store took them after the loop ended); their messages stay unacked and the server
 * redelivers them after AckWait, to this collector or another.
 */
#include "collector/source/nats.h"

#include <errno.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collector/api/auth.h"
#include "collector/log.h"
#include "collector/secure.h"
#include "collector/source/nats_msg.h"
#include "collector/source/nats_orders.h"
#include "collector/source/nats_stored.h"
#include "collector/source/native_conn.h"
#include "collector/source/source.h"
#include "common/clock.h"

#define NATS_FETCH_BATCH 64
#define NATS_FETCH_WAIT_MS 100
#define NATS_HELD_MAX 1024     /* messages between fetch and ack; also MaxAckPending */
#define NATS_NAK_DELAY_MS 1000 /* RETRY or FATAL: redelivered after this */
#define NATS_MAX_SERVERS 16
/* Each request of the stalled-durable check waits this long, and after a look whose request
 * got no answer, the next look waits up to NATS_STALL_ASK_SLOW_MS (libnats's own default for
 * JetStream requests): a node that answers slowly after a kill must not keep every look
 * from deciding. */
#define NATS_STALL_ASK_MS 1000
#define NATS_STALL_ASK_SLOW_MS 5000

enum { ACT_ACK, ACT_NAK, ACT_TERM };

/* One fetched message, from its fetch until the consumer thread answers it. */
struct hold {
    struct hold *prev, *next; /* x->holds (under x->mu) */
    struct hold *qnext;       /* x->done: answered by the pipeline, waiting for the thread */
    natsMsg *m;
    uint64_t swept; /* read from the stream by the sweep (its sequence), not fetched: 0 */
    int act;
};

struct nats_src {
    struct source src; /* first: the seam's part */
    const struct collector_opts *o;
    const struct auth *auth;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    struct nats_orders *orders; /* operator orders to agents (nats_orders.h) */
    ZSTD_DCtx *dctx;            /* the consumer thread's */
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hold *holds;            /* every hold not yet answered (under mu) */
    struct hold *done, *done_tail; /* answers to perform, in completion order (under mu) */
    int stop;                      /* the thread ends once the queued answers are out */
    _Atomic int draining;          /* SIGTERM: fetch no more */
    _Atomic uint64_t held;         /* fetched, not yet answered */
    unsigned ask_ms;               /* the check's requests wait this long (consumer thread) */
    char subject[160];             /* "<prefix>.>" */
};

/* Counters: /metrics and /api/v1/status. */
static struct {
    _Atomic int enabled;
    _Atomic uint64_t received, acked, duplicates, naked, paused, fetch_errors, looks, stepdowns,
        swept, look_failures, looks_put_off;
    _Atomic uint64_t terminated[NT__COUNT];
} nstats;

/* The stalled-durable check's last look, for /api/v1/status (what it saw and did). */
static struct {
    pthread_mutex_t mu;
    int64_t at_ns; /* Unix ns; 0: none yet */
    uint64_t first, delivered, ack_floor, pending, ack_pending;
    char leader[64];
    char outcome[160];
    int64_t fetch_error_ns; /* the last fetch that failed otherwise than by timing out */
    char fetch_error[96];
} nlast = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void last_look(uint64_t first, uint64_t delivered, uint64_t ack_floor, uint64_t pending,
                      uint64_t ack_pending, const char *leader, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void last_look(uint64_t first, uint64_t delivered, uint64_t ack_floor, uint64_t pending,
                      uint64_t ack_pending, const char *leader, const char *fmt, ...)
{
    pthread_mutex_lock(&nlast.mu);
    nlast.at_ns = (int64_t)tt__wall_ns();
    nlast.first = first;
    nlast.delivered = delivered;
    nlast.ack_floor = ack_floor;
    nlast.pending = pending;
    nlast.ack_pending = ack_pending;
    snprintf(nlast.leader, sizeof nlast.leader, "%s", leader);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nlast.outcome, sizeof nlast.outcome, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&nlast.mu);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* --- options --------------------------------------------------------------------------- */

/* Split "nats://H:P[,H:P...]" (each item with or without its own nats://) into urls. */
static int parse_urls(const char *list, char urls[][300], int cap, char *err, size_t errlen)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        char item[300];
        if (len == 0 || len >= sizeof item) {
            snprintf(err, errlen, "--nats: an empty or too long server in \"%s\"", list);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = 0;
        const char *hp = strncmp(item, "nats://", 7) == 0 ? item + 7 : item;
        if (strstr(item, "://") && hp == item) {
            snprintf(err, errlen, "--nats: \"%s\" is not nats://HOST:PORT", item);
            return -1;
        }
        if (strchr(hp, '@')) {
            snprintf(err, errlen,
                     "--nats: no user or password in the URL (it would show on the "
                     "command line); put a token in a 0600 file and give "
                     "--nats-token-file FILE");
            return -1;
        }
        const char *colon = strrchr(hp, ':');
        if (!colon || colon == hp || !colon[1] ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
            snprintf(err, errlen, "--nats: \"%s\" is not nats://HOST:PORT", item);
            return -1;
        }
        if (n == cap) {
            snprintf(err, errlen, "--nats: at most %d servers", cap);
            return -1;
        }
        size_t hl = strlen(hp);
        if (hl + 8 > 300) {
            snprintf(err, errlen, "--nats: a server name too long");
            return -1;
        }
        memcpy(urls[n], "nats://", 7);
        memcpy(urls[n++] + 7, hp, hl + 1);
        p += len;
        p += *p == ',';
    }
    if (n == 0) {
        snprintf(err, errlen, "--nats: no server");
        return -1;
    }
    return n;
}

/* The first line of the token file, which must be private. */
static int read_token(const char *path, char *tok, size_t n, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "--nats-token-file %s: %s", path, strerror(errno));
        return -1;
    }
    if (secure_private_fd(fd, path, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    ssize_t r = read(fd, tok, n - 1);
    close(fd);
    if (r < 0) {
        snprintf(err, errlen, "--nats-token-file %s: %s", path, strerror(errno));
        return -1;
    }
    tok[r] = 0;
    tok[strcspn(tok, "\r\n")] = 0;
    if (!tok[0]) {
        snprintf(err, errlen, "--nats-token-file %s: empty", path);
        return -1;
    }
    return 0;
}

int nats_check_opts(const struct collector_opts *o, char *err, size_t errlen)
{
    static char urls[NATS_MAX_SERVERS][300];
    if (parse_urls(o->nats, urls, NATS_MAX_SERVERS, err, errlen) < 0) {
        return -1;
    }
    if (o->nats_token_file[0]) {
        char tok[1024];
        int rc = read_token(o->nats_token_file, tok, sizeof tok, err, errlen);
        explicit_bzero(tok, sizeof tok);
        return rc;
    }
    return 0;
}

/* --- completions (loop thread) ---------------------------------------------------------- */

static void nats_complete(struct source *src, struct store_item *it, enum source_result r,
                          const char *reason)
{
    struct nats_src *x = (struct nats_src *)src;
    struct hold *h = it->cookie;
    switch (r) {
    case SOURCE_COMMITTED:
        h->act = ACT_ACK;
        cstat_add(&nstats.acked, 1);
        break;
    case SOURCE_DUPLICATE:
        h->act = ACT_ACK;
        cstat_add(&nstats.duplicates, 1);
        break;
    case SOURCE_REFUSED:
        h->act = ACT_TERM;
        cstat_add(&nstats.terminated[NT_REFUSED], 1);
        log_debug("nats: a batch of agent %s refused for good: %s", it->ident.agent,
                  reason ? reason : "refused");
        break;
    default:
        h->act = ACT_NAK;
        cstat_add(&nstats.naked, 1);
        break;
    }
    pthread_mutex_lock(&x->mu);
    h->qnext = NULL;
    if (x->done_tail) {
        x->done_tail->qnext = h;
    } else {
        x->done = h;
    }
    x->done_tail = h;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static const struct source_ops nats_ops = {"nats", nats_complete, NULL};

/* --- the consumer thread ------------------------------------------------------------------ */

/* Under x->mu. */
static void hold_unlink(struct nats_src *x, struct hold *h)
{
    if (h->prev) {
        h->prev->next = h->next;
    } else {
        x->holds = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
}

/* Delete message seq from the stream (it is stored, or can never be). */
static void stream_delete(struct nats_src *x, uint64_t seq)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = NATS_STALL_ASK_MS;
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteMsg(x->js, x->o->nats_stream, seq, &jo, &jerr);
    if (s != NATS_OK) {
        log_debug("nats: deleting swept message %llu: %s (error %d)", (unsigned long long)seq,
                  natsStatus_GetText(s), (int)jerr);
    }
}

/* Answer what the completions queued (consumer thread). */
static void answer_done(struct nats_src *x)
{
    pthread_mutex_lock(&x->mu);
    struct hold *q = x->done;
    x->done = x->done_tail = NULL;
    for (struct hold *h = q; h; h = h->qnext) {
        hold_unlink(x, h);
    }
    pthread_mutex_unlock(&x->mu);
    while (q) {
        struct hold *h = q;
        q = h->qnext;
        natsStatus s = NATS_OK;
        if (h->swept) {
            if (h->act != ACT_NAK) {
                stream_delete(x, h->swept); /* stored, or never storable */
            } /* else left in the stream: the next look sweeps it again */
        } else {
            s = h->act == ACT_ACK   ? natsMsg_Ack(h->m, NULL)
                : h->act == ACT_NAK ? natsMsg_NakWithDelay(h->m, NATS_NAK_DELAY_MS, NULL)
                                    : natsMsg_Term(h->m, NULL);
        }
        if (s != NATS_OK) {
            /* Not delivered to the server: it redelivers after AckWait. */
            log_debug("nats: answering a message: %s", natsStatus_GetText(s));
        }
        natsMsg_Destroy(h->m);
        free(h);
        atomic_fetch_sub(&x->held, 1);
    }
}

static void term(struct nats_src *x, natsMsg *m, uint64_t swept, int reason, const char *why)
{
    cstat_add(&nstats.terminated[reason], 1);
    log_debug("nats: message terminated (%s): %s", nats_term_name(reason), why);
    if (swept) {
        stream_delete(x, swept);
    } else {
        natsMsg_Term(m, NULL);
    }
    natsMsg_Destroy(m);
}

/* Put a message off: redelivered after NATS_NAK_DELAY_MS (a swept one: swept again). */
static void nak(natsMsg *m, uint64_t swept)
{
    cstat_add(&nstats.naked, 1);
    if (!swept) {
        natsMsg_NakWithDelay(m, NATS_NAK_DELAY_MS, NULL);
    }
    natsMsg_Destroy(m);
}

/* One fetched message (or one the sweep read from the stream: swept is its sequence):
 * decoded, authenticated, submitted, or answered here. */
static void take(struct nats_src *x, natsMsg *m, uint64_t swept)
{
    cstat_add(&nstats.received, 1);
    const char *mid = NULL;
    if (natsMsgHeader_Get(m, "Nats-Msg-Id", &mid) != NATS_OK) {
        mid = NULL;
    }
    int len = natsMsg_GetDataLength(m);
    const uint8_t *data = (const uint8_t *)natsMsg_GetData(m);
    if (len < 0 || (size_t)len > x->o->max_frame + CONN_HELLO_FRAME_MAX + 2 * TT_FRAME_PREFIX) {
        term(x, m, swept, NT_TOO_LARGE, "message above the largest hello and frame");
        return;
    }
    cstat_add(&cstats.bytes, (uint64_t)len);
    struct nats_msg_limits lim = {x->o->max_frame, x->o->max_raw, x->o->max_events,
                                  x->o->max_attrs};
    tt__hello h;
    struct store_item *it;
    const char *why = "";
    int rc = nats_msg_decode(&lim, x->dctx, data, (size_t)len, mid, &h, &it, &why);
    if (rc < 0) {
        nak(m, swept);
        return;
    }
    if (rc > 0) {
        term(x, m, swept, rc, why);
        return;
    }
    char agent[256] = "", err[256] = "";
    int ok = auth_authorize((void *)x->auth, &h, agent, err, sizeof err);
    explicit_bzero(h.token, sizeof h.token);
    if (ok <= 0) {
        store_item_free(it);
        term(x, m, swept, NT_AUTH,
             ok < 0 ? err : "no ingest token: NATS agents need one (--ingest-tokens)");
        return;
    }
    snprintf(it->ident.agent, sizeof it->ident.agent, "%s", agent);
    snprintf(it->ident.identity, sizeof it->ident.identity, "token:%s", agent);
    it->ident.clock_skew_ms = hello_clock_skew_ms(&h); /* when it published */
    it->batch.clock_skew_ms = it->ident.clock_skew_ms;
    it->received_ns = tt__wall_ns();
    struct hold *hd = calloc(1, sizeof *hd);
    if (!hd) {
        store_item_free(it);
        nak(m, swept);
        return;
    }
    hd->m = m;
    hd->swept = swept;
    pthread_mutex_lock(&x->mu);
    hd->next = x->holds;
    if (x->holds) {
        x->holds->prev = hd;
    }
    x->holds = hd;
    pthread_mutex_unlock(&x->mu);
    atomic_fetch_add(&x->held, 1);
    cstat_add(&cstats.frames, 1);
    source_submit(&x->src, it, hd);
}

/* Wait up to ms for an answer to perform or the stop. */
static void wait_a_little(struct nats_src *x, unsigned ms)
{
    struct timespec dl = tt__deadline_ms(CLOCK_MONOTONIC, ms);
    pthread_mutex_lock(&x->mu);
    if (!x->done && !x->stop) {
        pthread_cond_timedwait(&x->cv, &x->mu, &dl);
    }
    pthread_mutex_unlock(&x->mu);
}

/* How many messages one fetch asks for. libnats before 3.5.0 (Debian 12 ships 3.4.1) writes
 * past its own array in natsSubscription_Fetch when messages of an earlier fetch arrived late:
 * it takes those first (c of them), then cuts the request to batch - c inside a loop that
 * runs until it holds exactly that many, which it already passed, so it goes on storing past
 * the array of batch slots: a heap overflow and then a double free, seen here when a NATS node
 * dies or comes back (tests/integration/test_nats_faults.c). Fixed upstream in 3.5.0 (nats.c
 * #749). With a batch of 1 it cannot happen (one late message fills the call, which then sends
 * no request), so older versions fetch one message per request. */
static int fetch_batch(void)
{
    static _Atomic int batch;
    int b = atomic_load_explicit(&batch, memory_order_relaxed);
    if (!b) {
        b = nats_GetVersionNumber() >= 0x030500u ? NATS_FETCH_BATCH : 1;
        atomic_store_explicit(&batch, b, memory_order_relaxed);
    }
    return b;
}

/* --- the stalled-durable check (nats.h) ------------------------------------------------- */

void nats_stall_reset(struct nats_stall *st)
{
    st->first = 0;
    st->delivered = 0;
    st->suspect = NATS_STALL_NONE;
    st->wait_ms = NATS_STALL_IDLE_MS;
    st->orphan = 0;
    st->sweep_to = 0;
    st->more_from = 0;
}

void nats_stall_moved(struct nats_stall *st)
{
    uint64_t orphan = st->orphan, more_from = st->more_from;
    nats_stall_reset(st);
    st->orphan = orphan;
    st->more_from = more_from;
}

enum nats_stall_act nats_stall_look(struct nats_stall *st, uint64_t first, uint64_t delivered,
                                    uint64_t ack_floor, uint64_t pending, uint64_t ack_pending)
{
    if (first && (first <= ack_floor || (first <= delivered && ack_pending == 0))) {
        /* Delivered and acknowledged as far as the durable knows, or delivered with nothing
         * awaiting an ack (skipped, or given up on), and still in the work queue. */
        uint64_t to = ack_pending == 0 ? delivered : ack_floor;
        if (st->orphan == first || (st->more_from && first >= st->more_from)) {
            nats_stall_reset(st);
            st->sweep_to = to;
            return NATS_STALL_SWEEP;
        }
        unsigned keep = st->wait_ms;
        nats_stall_reset(st);
        st->wait_ms = keep;
        st->orphan = first;
        return NATS_STALL_NONE;
    }
    if (!first || pending || ack_pending) {
        nats_stall_reset(st);
        return NATS_STALL_NONE;
    }
    /* Past what the durable delivered, none pending, none awaiting an ack. */
    st->orphan = 0;
    st->more_from = 0;
    if (st->suspect == NATS_STALL_STEPDOWN && st->first == first && st->delivered == delivered) {
        st->suspect = NATS_STALL_NONE;
        st->wait_ms =
            st->wait_ms >= NATS_STALL_WAIT_MAX_MS / 2 ? NATS_STALL_WAIT_MAX_MS : st->wait_ms * 2;
        return NATS_STALL_STEPDOWN;
    }
    st->suspect = NATS_STALL_STEPDOWN;
    st->first = first;
    st->delivered = delivered;
    return NATS_STALL_NONE;
}

/* Ask the stream's leader for the first message on the durable's subjects at or after seq.
 * 0 with *sm filled (free with nats_stored_free), 1 when there is none, -1 when there is no
 * answer now, -2 when the answer cannot be decoded (a malformed or oversized message, whose
 * sequence, when the reply had one, is in sm->seq). */
static int stream_next(struct nats_src *x, uint64_t seq, struct nats_stored *sm)
{
    memset(sm, 0, sizeof *sm);
    char subj[300], req[300];
    snprintf(subj, sizeof subj, "$JS.API.STREAM.MSG.GET.%s", x->o->nats_stream);
    int n = snprintf(req, sizeof req, "{\"seq\":%llu,\"next_by_subj\":\"%s\"}",
                     (unsigned long long)seq, x->subject);
    natsMsg *reply = NULL;
    if (n <= 0 || (size_t)n >= sizeof req ||
        natsConnection_Request(&reply, x->nc, subj, req, n, (int64_t)x->ask_ms) != NATS_OK) {
        return -1;
    }
    const char *why = "";
    int rc =
        nats_stored_parse(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply),
                          x->o->max_frame + CONN_HELLO_FRAME_MAX + 2 * TT_FRAME_PREFIX, sm, &why);
    if (rc < 0) {
        log_debug("nats: a stored message from %llu: %s", (unsigned long long)seq, why);
    }
    natsMsg_Destroy(reply);
    return rc == 0 ? 0 : rc > 0 ? 1 : -2;
}

/* Sweep the messages on the durable's subjects from first up to last (what the durable
 * delivered, or its ack floor; at most NATS_SWEEP_MAX): each submitted like a fetched one and
 * deleted once stored. Returns the sequence to go on from when it stopped at NATS_SWEEP_MAX
 * below last, else 0. */
static uint64_t sweep(struct nats_src *x, uint64_t first, uint64_t last)
{
    int n = 0;
    uint64_t seq = first;
    for (; seq <= last && n < NATS_SWEEP_MAX; n++) {
        struct nats_stored sm;
        int rc = stream_next(x, seq, &sm);
        if (rc == -2 && sm.seq && sm.seq <= last) {
            /* Never readable by any collector (not JSON as JetStream writes it, or above the
             * largest message the collector takes): removed, and counted. */
            cstat_add(&nstats.swept, 1);
            cstat_add(&nstats.terminated[NT_MALFORMED], 1);
            stream_delete(x, sm.seq);
            seq = sm.seq + 1;
            continue;
        }
        if (rc != 0 || sm.seq > last) {
            nats_stored_free(&sm);
            break;
        }
        natsMsg *m = NULL;
        if (natsMsg_Create(&m, sm.subject, NULL, (const char *)sm.data, (int)sm.len) != NATS_OK ||
            (sm.has_msg_id && natsMsgHeader_Set(m, "Nats-Msg-Id", sm.msg_id) != NATS_OK)) {
            natsMsg_Destroy(m); /* out of memory: the next look tries again */
            nats_stored_free(&sm);
            break;
        }
        cstat_add(&nstats.swept, 1);
        take(x, m, sm.seq);
        seq = sm.seq + 1;
        nats_stored_free(&sm);
    }
    if (n == 0) {
        return 0; /* gone since the look (acknowledged after all) */
    }
    uint64_t more = n == NATS_SWEEP_MAX && seq <= last ? seq : 0;
    log_warn("NATS: %d message%s of stream %s left at or below what durable %s delivered and "
             "acknowledged (up to %llu), never to be redelivered: swept from sequence %llu%s",
             n, n == 1 ? "" : "s", x->o->nats_stream, x->o->nats_durable, (unsigned long long)last,
             (unsigned long long)first, more ? ", more to sweep" : "");
    return more;
}

/* Look at the durable and the stream; step the durable's leader down or sweep when the check
 * says so. Consumer thread, after NATS_STALL_IDLE_MS of empty fetches. */
static void stall_look(struct nats_src *x, struct nats_stall *st)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = (int64_t)x->ask_ms;
    natsStatus cs =
        js_GetConsumerInfo(&ci, x->js, x->o->nats_stream, x->o->nats_durable, &jo, &jerr);
    if (cs != NATS_OK) {
        /* No leader now, or no answer: look again later (waiting longer), the suspicion
         * kept. */
        x->ask_ms = NATS_STALL_ASK_SLOW_MS;
        cstat_add(&nstats.look_failures, 1);
        last_look(0, 0, 0, 0, 0, "?", "the durable's info: %s (JetStream error %d)",
                  natsStatus_GetText(cs), (int)jerr);
        return;
    }
    cstat_add(&nstats.looks, 1);
    uint64_t delivered = ci->Delivered.Stream, ack_floor = ci->AckFloor.Stream;
    uint64_t pending = ci->NumPending;
    uint64_t ack_pending = ci->NumAckPending > 0 ? (uint64_t)ci->NumAckPending : 0;
    char leader[64];
    snprintf(leader, sizeof leader, "%s",
             ci->Cluster && ci->Cluster->Leader ? ci->Cluster->Leader : "?");
    jsConsumerInfo_Destroy(ci);
    /* The first message on the durable's subjects, asked even while the durable delivers: one
     * at or below its ack floor is an orphan whatever else moves. */
    struct nats_stored sm;
    int rc = stream_next(x, 1, &sm);
    uint64_t first = rc == 0 || rc == -2 ? sm.seq : 0;
    nats_stored_free(&sm);
    if (rc == -1) {
        x->ask_ms = NATS_STALL_ASK_SLOW_MS;
        cstat_add(&nstats.look_failures, 1);
        last_look(0, delivered, ack_floor, pending, ack_pending, leader,
                  "the stream's first message: no answer");
        return; /* unknown: the suspicion kept */
    }
    x->ask_ms = NATS_STALL_ASK_MS; /* answered */
    enum nats_stall_act act =
        nats_stall_look(st, first, delivered, ack_floor, pending, ack_pending);
    last_look(first, delivered, ack_floor, pending, ack_pending, leader, "%s",
              act == NATS_STALL_SWEEP                        ? "sweep"
              : act == NATS_STALL_STEPDOWN                   ? "step down"
              : st->suspect != NATS_STALL_NONE || st->orphan ? "suspect: look again"
                                                             : "healthy");
    if (act == NATS_STALL_SWEEP) {
        st->more_from = sweep(x, first, st->sweep_to);
        return;
    }
    if (act != NATS_STALL_STEPDOWN) {
        return;
    }
    char subj[300];
    snprintf(subj, sizeof subj, "$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", x->o->nats_stream,
             x->o->nats_durable);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_Request(&reply, x->nc, subj, NULL, 0, (int64_t)x->ask_ms);
    int ok = s == NATS_OK && reply && natsMsg_GetDataLength(reply) > 0 &&
             memmem(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply),
                    "\"success\":true", 14) != NULL;
    natsMsg_Destroy(reply);
    cstat_add(&nstats.stepdowns, 1);
    last_look(first, delivered, ack_floor, pending, ack_pending, leader, "step down: %s",
              ok ? "done" : "no answer");
    log_warn("NATS: durable %s delivered up to stream sequence %llu, stream %s holds message %llu "
             "on its subjects and the durable's leader (%s) counts none pending: asked it to "
             "step down (%s); next look in %u ms",
             x->o->nats_durable, (unsigned long long)delivered, x->o->nats_stream,
             (unsigned long long)first, leader, ok ? "done" : "no answer", st->wait_ms);
}

static void *consumer(void *arg)
{
    struct nats_src *x = arg;
    struct nats_stall st;
    nats_stall_reset(&st);
    double busy = (double)tt__mono_ns() / 1e6; /* the last fetch that returned messages */
    double looked = busy;
    for (;;) {
        answer_done(x);
        pthread_mutex_lock(&x->mu);
        int stop = x->stop;
        pthread_mutex_unlock(&x->mu);
        if (stop) {
            answer_done(x);
            break;
        }
        uint64_t held = atomic_load(&x->held);
        if (atomic_load(&x->draining) || held >= NATS_HELD_MAX ||
            source_backlog(&x->src) > source_budget(&x->src)) {
            if (!atomic_load(&x->draining)) {
                cstat_add(&nstats.paused, 1);
            }
            wait_a_little(x, 50);
            busy = (double)tt__mono_ns() / 1e6; /* not fetching: not idle */
            continue;
        }
        int want = (int)(NATS_HELD_MAX - held);
        int batch = fetch_batch();
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = natsSubscription_Fetch(&list, x->sub, want < batch ? want : batch,
                                              NATS_FETCH_WAIT_MS, &jerr);
        double now = (double)tt__mono_ns() / 1e6;
        if (s == NATS_OK && list.Count > 0) {
            busy = now;
            nats_stall_moved(&st);
        } else if (now - looked >= (st.more_from                       ? NATS_SWEEP_AGAIN_MS
                                    : now - busy >= NATS_STALL_IDLE_MS ? st.wait_ms
                                                                       : NATS_STALL_BUSY_MS)) {
            /* Idle (a fetch that fails counts: a durable whose leader sits on a node that
             * cannot serve may answer so), or delivering but not for the last fetch and not
             * looked at for NATS_STALL_BUSY_MS, or a sweep to go on with (nats.h); and holding
             * no message: a look can wait out its requests' timeouts, no ack may wait behind
             * it, and a sweep goes on once the store has what it swept before. */
            uint64_t h = atomic_load(&x->held);
            if (h == 0) {
                looked = now;
                stall_look(x, &st);
            } else if (!st.more_from) {
                looked = now;
                cstat_add(&nstats.looks_put_off, 1);
                last_look(0, 0, 0, 0, 0, "?", "put off: %llu message%s awaiting the store",
                          (unsigned long long)h, h == 1 ? "" : "s");
            }
        }
        if (s == NATS_OK) {
            for (int i = 0; i < list.Count; i++) {
                natsMsg *m = list.Msgs[i];
                list.Msgs[i] = NULL;
                take(x, m, 0);
            }
        } else if (s != NATS_TIMEOUT) {
            cstat_add(&nstats.fetch_errors, 1);
            pthread_mutex_lock(&nlast.mu);
            nlast.fetch_error_ns = (int64_t)tt__wall_ns();
            snprintf(nlast.fetch_error, sizeof nlast.fetch_error, "%s (JetStream error %d)",
                     natsStatus_GetText(s), (int)jerr);
            pthread_mutex_unlock(&nlast.mu);
            wait_a_little(x, 200); /* disconnected, or the consumer's leader moves */
        }
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

/* --- start and stop -------------------------------------------------------------------- */

static int stream_ensure(struct nats_src *x, char *err, size_t errlen)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, x->js, x->o->nats_stream, NULL, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 0; /* there already: left as it is */
    }
    if (s != NATS_NOT_FOUND) {
        snprintf(err, errlen, "NATS: stream %s: %s", x->o->nats_stream, natsStatus_GetText(s));
        return -1;
    }
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {x->subject};
    sc.Name = x->o->nats_stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    /* A work queue: a message leaves the stream once a collector acknowledged it (after its
     * store commit), so the broker holds only what no collector has stored yet. */
    sc.Retention = js_WorkQueuePolicy;
    sc.Replicas = (int64_t)x->o->nats_replicas;
    s = js_AddStream(&si, x->js, &sc, NULL, &jerr);
    if (s != NATS_OK) {
        snprintf(err, errlen, "NATS: cannot create stream %s (%d replicas): %s (error %d)",
                 x->o->nats_stream, (int)x->o->nats_replicas, natsStatus_GetText(s), (int)jerr);
        return -1;
    }
    jsStreamInfo_Destroy(si);
    log_info("NATS: created stream %s (subjects %s, %d replicas, file storage, work queue)",
             x->o->nats_stream, x->subject, (int)x->o->nats_replicas);
    return 0;
}

static int connect_all(struct nats_src *x, char *err, size_t errlen)
{
    static char urls[NATS_MAX_SERVERS][300];
    const char *up[NATS_MAX_SERVERS];
    int n = parse_urls(x->o->nats, urls, NATS_MAX_SERVERS, err, errlen);
    if (n < 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        up[i] = urls[i];
    }
    natsStatus s = natsOptions_Create(&x->opts);
    s = s == NATS_OK ? natsOptions_SetServers(x->opts, up, n) : s;
    s = s == NATS_OK ? natsOptions_SetName(x->opts, "telltale-collector") : s;
    s = s == NATS_OK ? natsOptions_SetMaxReconnect(x->opts, -1) : s;
    s = s == NATS_OK ? natsOptions_SetReconnectWait(x->opts, 250) : s;
    s = s == NATS_OK ? natsOptions_SetTimeout(x->opts, 2000) : s;
    if (s == NATS_OK && x->o->nats_token_file[0]) {
        char tok[1024];
        if (read_token(x->o->nats_token_file, tok, sizeof tok, err, errlen) != 0) {
            return -1;
        }
        s = natsOptions_SetToken(x->opts, tok);
        explicit_bzero(tok, sizeof tok);
    }
    if (s != NATS_OK) {
        snprintf(err, errlen, "NATS: options: %s", natsStatus_GetText(s));
        return -1;
    }
    s = natsConnection_Connect(&x->nc, x->opts);
    if (s != NATS_OK) {
        snprintf(err, errlen, "NATS: cannot connect to %s: %s", x->o->nats, natsStatus_GetText(s));
        return -1;
    }
    s = natsConnection_JetStream(&x->js, x->nc, NULL);
    if (s != NATS_OK) {
        snprintf(err, errlen, "NATS: JetStream: %s", natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

static int subscribe(struct nats_src *x, char *err, size_t errlen)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = x->o->nats_stream;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = (int64_t)x->o->nats_ack_wait_ms * 1000000;
    so.Config.MaxAckPending = NATS_HELD_MAX;
    so.Config.MaxDeliver = -1;
    jsErrCode jerr = 0;
    natsStatus s =
        js_PullSubscribe(&x->sub, x->js, x->subject, x->o->nats_durable, NULL, &so, &jerr);
    if (s != NATS_OK) {
        snprintf(err, errlen, "NATS: durable consumer %s on %s: %s (error %d)", x->o->nats_durable,
                 x->o->nats_stream, natsStatus_GetText(s), (int)jerr);
        return -1;
    }
    return 0;
}

int nats_open(struct nats_src **out, const struct collector_opts *o, struct pipeline *pl,
              const struct auth *auth, char *err, size_t errlen)
{
    *out = NULL;
    struct nats_src *x = calloc(1, sizeof *x);
    if (!x) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    x->o = o;
    x->auth = auth;
    x->ask_ms = NATS_STALL_ASK_MS;
    pthread_mutex_init(&x->mu, NULL);
    tt__cond_init_mono(&x->cv);
    snprintf(x->subject, sizeof x->subject, "%s.>", o->nats_subject);
    *out = x; /* nats_shutdown and nats_free clean up whatever started */
    if (!(x->dctx = ZSTD_createDCtx())) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (connect_all(x, err, errlen) != 0 || stream_ensure(x, err, errlen) != 0 ||
        subscribe(x, err, errlen) != 0 || nats_orders_start(&x->orders, x->nc, err, errlen) != 0) {
        return -1;
    }
    if (pipeline_attach(pl, &x->src, &nats_ops) != 0) {
        snprintf(err, errlen, "NATS: too many sources");
        return -1;
    }
    if (pthread_create(&x->th, NULL, consumer, x) != 0) {
        snprintf(err, errlen, "NATS: cannot start the consumer thread");
        return -1;
    }
    x->started = 1;
    atomic_store(&nstats.enabled, 1);
    log_info("NATS: consuming %s of stream %s through durable %s (ack wait %llu ms)", x->subject,
             o->nats_stream, o->nats_durable, (unsigned long long)o->nats_ack_wait_ms);
    return 0;
}

void nats_drain(struct nats_src *x)
{
    if (x) {
        atomic_store(&x->draining, 1);
    }
}

uint64_t nats_pending(const struct nats_src *x)
{
    return x && x->started ? source_in_flight(&x->src) : 0;
}

void nats_shutdown(struct nats_src *x)
{
    if (!x) {
        return;
    }
    atomic_store(&x->draining, 1);
    nats_orders_stop(x->orders);
    if (x->started) {
        pthread_mutex_lock(&x->mu);
        x->stop = 1;
        pthread_cond_signal(&x->cv);
        pthread_mutex_unlock(&x->mu);
        pthread_join(x->th, NULL);
        x->started = 0;
    }
    if (x->nc) {
        natsConnection_FlushTimeout(x->nc, 1000); /* the last acks out */
        /* Closed before the subscription is destroyed: nothing is asked of the server, so the
         * durable consumer stays for the next start and the other collectors. */
        natsConnection_Close(x->nc);
    }
}

void nats_free(struct nats_src *x)
{
    if (!x) {
        return;
    }
    nats_shutdown(x);
    while (x->holds) {
        struct hold *h = x->holds;
        x->holds = h->next;
        natsMsg_Destroy(h->m); /* unacked: redelivered */
        free(h);
    }
    nats_orders_free(x->orders);
    natsSubscription_Destroy(x->sub);
    jsCtx_Destroy(x->js);
    natsConnection_Destroy(x->nc);
    natsOptions_Destroy(x->opts);
    ZSTD_freeDCtx(x->dctx);
    pthread_cond_destroy(&x->cv);
    pthread_mutex_destroy(&x->mu);
    free(x);
    nats_CloseAndWait(2000);
}

/* --- operator orders -------------------------------------------------------------------- */

int nats_publish_control(struct nats_src *x, const char *agent, const uint8_t *payload, size_t n,
                         int wait_ms)
{
    if (!x || !x->orders) {
        return 0;
    }
    char subj[64];
    if (nats_control_subject(agent, subj, sizeof subj) != 0) {
        return -EINVAL;
    }
    uint64_t id;
    int rc = nats_orders_post(x->orders, subj, agent, payload, n, &id);
    if (rc < 0) {
        log_warn("NATS: an order for agent %s not taken: %s", agent,
                 rc == -EBUSY ? "too many orders wait for their agents' confirmation"
                              : strerror(-rc));
        return rc;
    }
    int w = nats_orders_wait(x->orders, id, wait_ms);
    return w > 0 ? 2 : w == 0 ? 1 : -ETIMEDOUT;
}

/* --- counters --------------------------------------------------------------------------- */

static void one(tt__buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    tt__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
                   (unsigned long long)v);
}

void nats_metrics(tt__buf *b)
{
    one(b, "telltale_nats_enabled", "gauge", "1 when the collector consumes NATS JetStream.",
        (uint64_t)LD(nstats.enabled));
    one(b, "telltale_nats_messages_total", "counter", "NATS ingest messages fetched.",
        LD(nstats.received));
    tt__buf_printf(b, "# HELP telltale_nats_answered_total NATS messages answered, by result.\n"
                      "# TYPE telltale_nats_answered_total counter\n");
    tt__buf_printf(b, "telltale_nats_answered_total{result=\"ack_committed\"} %llu\n",
                   (unsigned long long)LD(nstats.acked));
    tt__buf_printf(b, "telltale_nats_answered_total{result=\"ack_duplicate\"} %llu\n",
                   (unsigned long long)LD(nstats.duplicates));
    tt__buf_printf(b, "telltale_nats_answered_total{result=\"nak\"} %llu\n",
                   (unsigned long long)LD(nstats.naked));
    tt__buf_printf(b, "# HELP telltale_nats_terminated_total NATS messages terminated (never "
                      "storable), by reason.\n# TYPE telltale_nats_terminated_total counter\n");
    for (int i = 1; i < NT__COUNT; i++) {
        tt__buf_printf(b, "telltale_nats_terminated_total{reason=\"%s\"} %llu\n", nats_term_name(i),
                       (unsigned long long)LD(nstats.terminated[i]));
    }
    one(b, "telltale_nats_fetch_pauses_total", "counter",
        "Fetches put off: the pipeline above its byte budget or too many messages held.",
        LD(nstats.paused));
    one(b, "telltale_nats_fetch_errors_total", "counter",
        "Fetches that failed (disconnected, no consumer leader).", LD(nstats.fetch_errors));
    one(b, "telltale_nats_consumer_checks_total", "counter",
        "Looks at the durable after fetches returned nothing for a while (the stalled-durable "
        "check).",
        LD(nstats.looks));
    one(b, "telltale_nats_swept_total", "counter",
        "Messages the stalled-durable check read from the stream because the durable would "
        "never deliver them again (stored, then deleted from the stream).",
        LD(nstats.swept));
    one(b, "telltale_nats_consumer_stepdowns_total", "counter",
        "Times the durable's leader was asked to step down: it counted nothing pending while the "
        "stream held a message past what it delivered.",
        LD(nstats.stepdowns));
    one(b, "telltale_nats_consumer_check_failures_total", "counter",
        "Looks of the stalled-durable check whose request had no answer (nothing decided).",
        LD(nstats.look_failures));
    one(b, "telltale_nats_consumer_checks_put_off_total", "counter",
        "Looks of the stalled-durable check put off while messages awaited the store.",
        LD(nstats.looks_put_off));
    struct nats_orders_stats os;
    nats_orders_stats_get(&os);
    one(b, "telltale_nats_control_published_total", "counter",
        "Operator orders taken to be published on agents' control subjects.", os.published);
    one(b, "telltale_nats_control_delivered_total", "counter",
        "Operator orders an agent confirmed.", os.delivered);
    one(b, "telltale_nats_control_resent_total", "counter",
        "Operator orders published again for want of a confirmation.", os.resent);
    one(b, "telltale_nats_control_expired_total", "counter",
        "Operator orders dropped unconfirmed after their time to live.", os.expired);
    one(b, "telltale_nats_control_failed_total", "counter",
        "Operator orders refused (too many unconfirmed, bad input, no memory).", os.failed);
}

void nats_status_json(tt__json *j)
{
    tt__json_key(j, "nats");
    tt__json_obj_begin(j);
    tt__json_kv_bool(j, "enabled", LD(nstats.enabled));
    tt__json_kv_u64(j, "messages", LD(nstats.received));
    tt__json_kv_u64(j, "acked", LD(nstats.acked));
    tt__json_kv_u64(j, "acked_duplicate", LD(nstats.duplicates));
    tt__json_kv_u64(j, "naked", LD(nstats.naked));
    tt__json_key(j, "terminated");
    tt__json_obj_begin(j);
    for (int i = 1; i < NT__COUNT; i++) {
        tt__json_kv_u64(j, nats_term_name(i), LD(nstats.terminated[i]));
    }
    tt__json_obj_end(j);
    tt__json_kv_u64(j, "fetch_pauses", LD(nstats.paused));
    tt__json_kv_u64(j, "fetch_errors", LD(nstats.fetch_errors));
    tt__json_kv_u64(j, "consumer_checks", LD(nstats.looks));
    tt__json_kv_u64(j, "consumer_stepdowns", LD(nstats.stepdowns));
    tt__json_kv_u64(j, "swept", LD(nstats.swept));
    tt__json_kv_u64(j, "consumer_check_failures", LD(nstats.look_failures));
    tt__json_kv_u64(j, "consumer_checks_put_off", LD(nstats.looks_put_off));
    pthread_mutex_lock(&nlast.mu);
    tt__json_key(j, "last_check");
    tt__json_obj_begin(j);
    tt__json_kv_i64(j, "time_unix_ns", nlast.at_ns);
    tt__json_kv_u64(j, "first", nlast.first);
    tt__json_kv_u64(j, "delivered", nlast.delivered);
    tt__json_kv_u64(j, "ack_floor", nlast.ack_floor);
    tt__json_kv_u64(j, "pending", nlast.pending);
    tt__json_kv_u64(j, "ack_pending", nlast.ack_pending);
    tt__json_kv_cstr(j, "leader", nlast.leader);
    tt__json_kv_cstr(j, "outcome", nlast.outcome);
    tt__json_obj_end(j);
    tt__json_kv_i64(j, "last_fetch_error_unix_ns", nlast.fetch_error_ns);
    tt__json_kv_cstr(j, "last_fetch_error", nlast.fetch_error);
    pthread_mutex_unlock(&nlast.mu);
    struct nats_orders_stats os;
    nats_orders_stats_get(&os);
    tt__json_kv_u64(j, "control_published", os.published);
    tt__json_kv_u64(j, "control_delivered", os.delivered);
    tt__json_kv_u64(j, "control_resent", os.resent);
    tt__json_kv_u64(j, "control_expired", os.expired);
    tt__json_kv_u64(j, "control_failed", os.failed);
    tt__json_obj_end(j);
}

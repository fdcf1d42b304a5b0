/*
 * nats_orders.c - operator orders to NATS agents, delivered until confirmed (nats_orders.h).
 *
 * The orders wait in one FIFO list under o->mu. The courier wakes every 100 ms (or at once on
 * a new order), publishes each due order that is the oldest unconfirmed one of its agent, drops
 * those past their time to live, and unlinks the settled ones nobody waits for. An order's id is
 * "<collector nonce hex>-<n>": unique across collectors and restarts, so an agent applies each
 * order once whichever collector sent it how many times.
 */
#include "collector/source/nats_orders.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "collector/log.h"
#include "common/clock.h"

#define MS 1000000ull
#define TICK_MS 100
#define ID_MAX 48
#define PAYLOAD_MAX 65536

enum { PENDING, DELIVERED, DROPPED };

struct order {
    struct order *next;
    uint64_t n;          /* the id's number */
    uint64_t key;        /* the agent's (FNV-1a of its name): orders of one agent in turn */
    uint64_t due_ns;     /* next publication */
    uint64_t expires_ns; /* dropped after */
    uint32_t sends;
    int state;
    int waiters;
    char id[ID_MAX];
    char agent[256];
    char subject[64];
    size_t len;
    uint8_t payload[];
};

struct nats_orders {
    natsConnection *nc;
    natsSubscription *inbox_sub;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the courier: a new order or the stop */
    pthread_cond_t settled; /* waiters: an order confirmed or dropped; the inbox's end */
    struct order *head, *tail;
    int count; /* orders in the list */
    int stop;
    int inbox_done; /* the subscription's completion callback ran */
    uint64_t next_n;
    char nonce[17];
    char inbox[128];
};

static struct {
    _Atomic uint64_t published, delivered, resent, expired, failed;
} ostats;

#define ADD(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)
#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void nats_orders_stats_get(struct nats_orders_stats *s)
{
    s->published = LD(ostats.published);
    s->delivered = LD(ostats.delivered);
    s->resent = LD(ostats.resent);
    s->expired = LD(ostats.expired);
    s->failed = LD(ostats.failed);
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

/* libnats: a confirmation on the inbox; its data is the order's id. */
static void on_confirm(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct nats_orders *o = closure;
    int len = natsMsg_GetDataLength(msg);
    char id[ID_MAX];
    if (len > 0 && len < ID_MAX) {
        memcpy(id, natsMsg_GetData(msg), (size_t)len);
        id[len] = 0;
        pthread_mutex_lock(&o->mu);
        for (struct order *r = o->head; r; r = r->next) {
            if (r->state == PENDING && strcmp(r->id, id) == 0) {
                r->state = DELIVERED;
                ADD(ostats.delivered);
                pthread_cond_broadcast(&o->settled);
                pthread_cond_signal(&o->cv); /* the agent's next order may go now */
                break;
            }
        }
        pthread_mutex_unlock(&o->mu);
    }
    natsMsg_Destroy(msg);
}

static void on_inbox_complete(void *closure)
{
    struct nats_orders *o = closure;
    pthread_mutex_lock(&o->mu);
    o->inbox_done = 1;
    pthread_cond_broadcast(&o->settled);
    pthread_mutex_unlock(&o->mu);
}

/* The oldest unconfirmed order of r's agent is r itself (the list is in posting order). */
static int first_of_agent(const struct nats_orders *o, const struct order *r)
{
    for (const struct order *p = o->head; p != r; p = p->next) {
        if (p->state == PENDING && p->key == r->key) {
            return 0;
        }
    }
    return 1;
}

static void publish(struct nats_orders *o, struct order *r)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, r->subject, o->inbox, (const char *)r->payload, (int)r->len);
    s = s == NATS_OK ? natsMsgHeader_Set(m, "Tt-Agent", r->agent) : s;
    s = s == NATS_OK ? natsMsgHeader_Set(m, "Tt-Order", r->id) : s;
    /* Disconnected, libnats keeps it in its reconnect buffer; any failure: the next resend. */
    s = s == NATS_OK ? natsConnection_PublishMsg(o->nc, m) : s;
    natsMsg_Destroy(m);
    if (r->sends++ > 0) {
        ADD(ostats.resent);
    }
    (void)s;
}

/* One pass under o->mu: publish what is due, drop what expired, unlink what is settled. */
static void pass(struct nats_orders *o, uint64_t now)
{
    struct order **pp = &o->head, *prev = NULL;
    while (*pp) {
        struct order *r = *pp;
        if (r->state == PENDING && now >= r->expires_ns) {
            r->state = DROPPED;
            ADD(ostats.expired);
            log_warn("NATS: an order for agent %s was not confirmed within %d s; dropped", r->agent,
                     NATS_ORDER_TTL_MS / 1000);
            pthread_cond_broadcast(&o->settled);
        }
        if (r->state == PENDING && now >= r->due_ns && first_of_agent(o, r)) {
            publish(o, r);
            r->due_ns = now + NATS_ORDER_RESEND_MS * MS;
        }
        if (r->state != PENDING && r->waiters == 0) {
            *pp = r->next;
            if (o->tail == r) {
                o->tail = prev;
            }
            o->count--;
            free(r);
            continue;
        }
        prev = r;
        pp = &r->next;
    }
}

static void *courier(void *arg)
{
    struct nats_orders *o = arg;
    pthread_mutex_lock(&o->mu);
    while (!o->stop) {
        pass(o, tt__mono_ns());
        struct timespec dl = tt__deadline_ms(CLOCK_MONOTONIC, TICK_MS);
        pthread_cond_timedwait(&o->cv, &o->mu, &dl);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

int nats_orders_start(struct nats_orders **out, natsConnection *nc, char *err, size_t errlen)
{
    *out = NULL;
    struct nats_orders *o = calloc(1, sizeof *o);
    uint8_t raw[8];
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        snprintf(err, errlen, "getrandom: %s", strerror(errno));
        free(o);
        return -1;
    }
    for (int i = 0; i < 8; i++) {
        snprintf(o->nonce + 2 * i, 3, "%02x", raw[i]);
    }
    o->nc = nc;
    pthread_mutex_init(&o->mu, NULL);
    tt__cond_init_mono(&o->cv);
    tt__cond_init_mono(&o->settled);
    o->inbox_done = 1; /* until the subscription exists */
    *out = o;
    natsInbox *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s == NATS_OK) {
        snprintf(o->inbox, sizeof o->inbox, "%s", (const char *)inbox);
        natsInbox_Destroy(inbox);
        s = natsConnection_Subscribe(&o->inbox_sub, nc, o->inbox, on_confirm, o);
    }
    if (s == NATS_OK) {
        o->inbox_done = 0;
        if (natsSubscription_SetOnCompleteCB(o->inbox_sub, on_inbox_complete, o) != NATS_OK) {
            /* Without the callback its end cannot be waited for: keep o to the process's end. */
            snprintf(err, errlen, "NATS: the order inbox's completion callback");
            *out = NULL;
            return -1;
        }
    }
    if (s != NATS_OK) {
        snprintf(err, errlen, "NATS: the order inbox: %s", natsStatus_GetText(s));
        return -1;
    }
    if (pthread_create(&o->th, NULL, courier, o) != 0) {
        snprintf(err, errlen, "NATS: cannot start the order courier");
        return -1;
    }
    o->started = 1;
    return 0;
}

int nats_orders_post(struct nats_orders *o, const char *subject, const char *agent,
                     const uint8_t *payload, size_t n, uint64_t *id)
{
    if (!o || n > PAYLOAD_MAX || strlen(agent) >= sizeof(((struct order *)0)->agent) ||
        strlen(subject) >= sizeof(((struct order *)0)->subject)) {
        ADD(ostats.failed);
        return -EINVAL;
    }
    struct order *r = calloc(1, sizeof *r + n);
    if (!r) {
        ADD(ostats.failed);
        return -ENOMEM;
    }
    memcpy(r->payload, payload, n);
    r->len = n;
    snprintf(r->agent, sizeof r->agent, "%s", agent);
    snprintf(r->subject, sizeof r->subject, "%s", subject);
    r->key = fnv1a64(agent);
    uint64_t now = tt__mono_ns();
    r->due_ns = now;
    r->expires_ns = now + NATS_ORDER_TTL_MS * MS;
    r->waiters = id != NULL;
    pthread_mutex_lock(&o->mu);
    if (o->count >= NATS_ORDERS_MAX || o->stop) {
        pthread_mutex_unlock(&o->mu);
        free(r);
        ADD(ostats.failed);
        return -EBUSY;
    }
    r->n = ++o->next_n;
    snprintf(r->id, sizeof r->id, "%s-%" PRIu64, o->nonce, r->n);
    if (o->tail) {
        o->tail->next = r;
    } else {
        o->head = r;
    }
    o->tail = r;
    o->count++;
    if (id) {
        *id = r->n;
    }
    ADD(ostats.published);
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    return 0;
}

int nats_orders_wait(struct nats_orders *o, uint64_t id, int wait_ms)
{
    pthread_mutex_lock(&o->mu);
    struct order *r = o->head;
    while (r && r->n != id) {
        r = r->next;
    }
    if (!r) { /* not a waited-for order: a caller's mistake */
        pthread_mutex_unlock(&o->mu);
        return -1;
    }
    struct timespec dl = tt__deadline_ms(CLOCK_MONOTONIC, wait_ms > 0 ? (uint64_t)wait_ms : 0);
    while (r->state == PENDING && !o->stop) {
        if (pthread_cond_timedwait(&o->settled, &o->mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    int rc = r->state == DELIVERED ? 1 : r->state == DROPPED ? -1 : 0;
    r->waiters--;
    pthread_cond_signal(&o->cv); /* unlinked by the courier's next pass */
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void nats_orders_stop(struct nats_orders *o)
{
    if (!o || !o->started) {
        return;
    }
    pthread_mutex_lock(&o->mu);
    o->stop = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_cond_broadcast(&o->settled);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->th, NULL);
    o->started = 0;
}

void nats_orders_free(struct nats_orders *o)
{
    if (!o) {
        return;
    }
    nats_orders_stop(o);
    if (o->inbox_sub) {
        natsSubscription_Unsubscribe(o->inbox_sub); /* fails once the connection closed */
    }
    pthread_mutex_lock(&o->mu);
    struct timespec dl = tt__deadline_ms(CLOCK_MONOTONIC, 5000);
    while (!o->inbox_done) {
        if (pthread_cond_timedwait(&o->settled, &o->mu, &dl) == ETIMEDOUT) {
            /* libnats never ended the subscription: o stays (a leak, not a use after free). */
            pthread_mutex_unlock(&o->mu);
            log_warn("NATS: the order inbox did not close; its memory is kept");
            return;
        }
    }
    pthread_mutex_unlock(&o->mu);
    while (o->head) {
        struct order *r = o->head;
        o->head = r->next;
        free(r);
    }
    natsSubscription_Destroy(o->inbox_sub);
    pthread_cond_destroy(&o->settled);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

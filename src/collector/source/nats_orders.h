/*
 * nats_orders.h - operator orders to NATS agents, delivered until the agent confirms
 * (nats_orders.c; the contract: docs/wire-format.md, "NATS JetStream").
 *
 * A core NATS message reaches only the subscribers connected at that instant: an agent whose
 * server just died and which is reconnecting to another node would miss a halt. So each order
 * gets an id (header Tt-Order) and a reply subject (this collector's inbox); the courier thread
 * publishes it again every NATS_ORDER_RESEND_MS until an agent answers with the id, or drops it
 * after NATS_ORDER_TTL_MS (counted, logged). The orders of one agent go out one after another:
 * the next one only once the one before was confirmed or dropped, so a halt and the resume that
 * follows it arrive in that order. The agent acknowledges an order each time it receives it and
 * applies it once (the library remembers the latest ids).
 *
 * Threads: any API thread posts and waits; one courier thread (re)publishes; libnats's thread
 * delivers the confirmations. Lifetime: start after the connection; stop (joins the courier)
 * before the connection closes; free after it closed (waits for the inbox subscription's last
 * callback).
 */
#ifndef TT_COLLECTOR_NATS_ORDERS_H
#define TT_COLLECTOR_NATS_ORDERS_H

#include <nats/nats.h>
#include <stddef.h>
#include <stdint.h>

#define NATS_ORDER_RESEND_MS 500
#define NATS_ORDER_TTL_MS 120000
#define NATS_ORDERS_MAX 256 /* orders not yet confirmed, at most (beyond: refused) */

struct nats_orders;

/* Counters (monotonic; read with relaxed loads). */
struct nats_orders_stats {
    uint64_t published; /* orders taken */
    uint64_t delivered; /* confirmed by an agent */
    uint64_t resent;    /* publications after the first */
    uint64_t expired;   /* dropped after NATS_ORDER_TTL_MS unconfirmed */
    uint64_t failed;    /* refused: too many unconfirmed, no memory, bad input */
};

/* Subscribe the confirmation inbox on nc (borrowed; it outlives the courier) and start the
 * courier thread. 0, or -1 with err. */
int nats_orders_start(struct nats_orders **out, natsConnection *nc, char *err, size_t errlen);

/* Take an order for agent: payload (at most 65536 bytes) on subject, with header Tt-Agent.
 * With id non-NULL the caller must then call nats_orders_wait(o, *id, ...) once. 0, or a
 * negative errno (-EBUSY: NATS_ORDERS_MAX unconfirmed; -EINVAL; -ENOMEM). Any thread. */
int nats_orders_post(struct nats_orders *o, const char *subject, const char *agent,
                     const uint8_t *payload, size_t n, uint64_t *id);

/* Wait up to wait_ms for order id's confirmation: 1 confirmed, 0 not yet (the courier goes on
 * trying), -1 dropped. Releases the waiter taken by nats_orders_post. */
int nats_orders_wait(struct nats_orders *o, uint64_t id, int wait_ms);

/* Stop the courier (before the connection closes). o may be NULL. */
void nats_orders_stop(struct nats_orders *o);

/* After the connection closed: wait for the inbox's last callback and free. o may be NULL. */
void nats_orders_free(struct nats_orders *o);

void nats_orders_stats_get(struct nats_orders_stats *s);

#endif

/*
 * alerts.h - where alerts go once a detector raises one: stored (store.h's alerts), streamed
 * to live subscribers as {"kind":"alert",...}, counted, and posted to webhooks. Raising never
 * waits: the alert goes onto a bounded queue that the alerts thread drains, and webhook
 * deliveries (with timeout, retry and backoff) run on a thread of their own.
 */
#ifndef TT_COLLECTOR_ALERTS_H
#define TT_COLLECTOR_ALERTS_H

#include <stdint.h>

#include "collector/alerting/monitor.h"
#include "common/json.h"

#define ALERTS_QUEUE_MAX 1024
#define WEBHOOK_QUEUE_MAX 1024

struct alerts;

struct alerts_counters {
    uint64_t raised, stored, dropped; /* dropped: queue full or store error */
    uint64_t webhook_sent, webhook_failed, webhook_retries, webhook_dropped;
};

/* Start the threads; alerts are kept in store (store_alert_add), which must stay open until
 * alerts_close returns. hub may be NULL. */
struct store;
int alerts_open(struct alerts **out, struct store *store, struct hub *hub,
                const struct webhook_cfg *hooks, int n_hooks, char *err, size_t errlen);
/* Store, stream and send what is queued (webhooks get up to their timeout once), then stop. */
void alerts_close(struct alerts *a);

/* Queue an alert (any thread; never blocks, counts a drop when the queue is full). */
void alerts_raise(struct alerts *a, const struct alert *al);

void alerts_counters(struct alerts *a, struct alerts_counters *out);

/* The JSON object of one alert, as stored, streamed and posted. acked_ns 0: open. */
void alert_json(tt__json *j, const struct alert *al, int64_t acked_ns);

#endif

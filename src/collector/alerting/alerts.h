/*
 * alerts.h - where incident events go once the monitor sends one: stored (store.h's alerts, one
 * row per incident), streamed to live subscribers as {"kind":"alert","event":...}, counted, and
 * posted to webhooks and Prometheus Alertmanagers. Raising never
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

/* Start the threads; incidents are kept in store (store_alert_put), which must stay open until
 * alerts_close returns. hub may be NULL. */
struct store;
int alerts_open(struct alerts **out, struct store *store, struct hub *hub,
                const struct webhook_cfg *hooks, int n_hooks, char *err, size_t errlen);
/* Store, stream and send what is queued (webhooks get up to their timeout once), then stop. */
void alerts_close(struct alerts *a);

/* Queue an alert (any thread; never blocks, counts a drop when the queue is full). */
void alerts_raise(struct alerts *a, const struct alert *al);

void alerts_counters(struct alerts *a, struct alerts_counters *out);

/* A fresh incident id (any thread): above every id stored when alerts_open ran. a may be NULL. */
int64_t alerts_next_id(struct alerts *a);

/* The JSON object of one incident, as stored, streamed and posted. acked_ns 0: open.
 * with_event: include "event" (firing, updated, resolved), as the stream and webhooks do. */
void alert_json(tt__json *j, const struct alert *al, int64_t acked_ns, int with_event);
/* A stored row as an incident (for alert_json); strings are copied. */
struct store_alert;
void alert_from_store(struct alert *out, const struct store_alert *row);
/* The same event as Alertmanager's POST /api/v2/alerts body (a one-alert array). */
void alert_alertmanager_json(tt__json *j, const struct alert *al, const char *generator_base);

#endif

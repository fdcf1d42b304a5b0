/*
 * hub.h - the live fan-out: committed events to server-sent-event subscribers, each with its
 * own filter and a bounded queue, filled by the hub's own thread. A subscriber that cannot keep
 * up is disconnected and counted; if the fan-out itself falls behind, batches are left out of
 * the live stream (counted) and subscribers get an "event: lag" message saying how many events
 * they missed. Neither ever slows ingest. Oversized fields are cut with a marker.
 */
#ifndef TT_COLLECTOR_HUB_H
#define TT_COLLECTOR_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "collector/collector.h"

struct hub;
struct hub_sub;

/* The kinds bit that selects the messages of hub_publish_json of type "alert" (event kinds
 * use 1 << TT_EV_*, all below it). */
#define HUB_KIND_ALERT (1u << 31)

struct hub_filter {
    char agent[256];       /* empty: every agent */
    char session[256];     /* empty: every session */
    uint32_t kinds;        /* bit mask of 1 << TT_EV_* and HUB_KIND_ALERT, 0: every kind */
    uint32_t min_severity; /* logs below it are left out; other kinds pass */
};

struct hub_counters {
    uint64_t subscribers;
    uint64_t subscribed_total;
    uint64_t disconnected_slow; /* disconnected while behind: queue full, or closed (HTTP idle
                                 * timeout, peer) with messages never taken */
    uint64_t lagging;           /* connected subscribers told of skipped events */
    uint64_t events_sent;       /* messages queued to subscribers */
    uint64_t events_skipped;    /* events left out of the live stream: the fan-out was behind */
    uint64_t fields_truncated;  /* strings cut in the live stream */
    uint64_t events_truncated;  /* events replaced by their envelope (too large even cut) */
    uint64_t backlog_bytes;     /* batches waiting for the fan-out thread */
};

struct hub *hub_new(size_t max_subs, size_t queue_bytes);
void hub_free(struct hub *h);

/* Publish a committed batch (the ingest thread, or the follower of a shared store: follow.h):
 * copies what it needs and returns at once. */
void hub_publish(struct hub *h, const struct store_item *it);

/* Publish one ready JSON object as an SSE event of the given type (alerts, ...). */
void hub_publish_json(struct hub *h, const char *type, const char *agent, const char *json,
                      size_t n);

/* NULL when the subscriber limit is reached or the hub is shut down. */
struct hub_sub *hub_subscribe(struct hub *h, const struct hub_filter *f);

/* Copy up to n bytes of queued stream text into buf, waiting up to timeout_ms for some.
 * Returns the bytes copied, 0 on timeout, -1 when the subscriber was dropped (too slow) or the
 * hub is shutting down. */
ssize_t hub_read(struct hub_sub *s, char *buf, size_t n, int timeout_ms);

void hub_unsubscribe(struct hub_sub *s);

/* Stop the fan-out thread and wake every subscriber: their reads return -1. */
void hub_shutdown(struct hub *h);

void hub_counters(struct hub *h, struct hub_counters *out);

#endif

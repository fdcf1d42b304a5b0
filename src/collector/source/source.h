/*
 * source.h - the source seam: how a way of receiving telemetry (the native framed protocol in
 * native.c; OTLP over HTTP in otlp.c; NATS JetStream in nats.c) hands batches to the pipeline
 * and learns what became of them. One implementation per .c file behind this header, as curl keeps its
 * TLS backends behind vtls.h.
 *
 * CONTRACT
 * - A source decodes what it receives into a struct store_item (collector.h): the batch and
 *   its identity (agent, instance, sequence range first_seq .. first_seq + n_events - 1) and
 *   its own cookie (what it needs to answer: a connection, a request, a message to ack). It
 *   calls source_submit; from then on the pipeline owns the item.
 * - The pipeline is the store followed by the live fan-out: the store deduplicates on
 *   (instance, seq) and commits at the configured sync level; a committed batch is then
 *   published to live subscribers and to the commit hook (detectors).
 * - For every item submitted, the source's complete callback is called exactly once with the
 *   result, in submission order per source:
 *     SOURCE_COMMITTED  durable at the sync level: acknowledge.
 *     SOURCE_DUPLICATE  every event was already committed earlier: acknowledge again.
 *     SOURCE_REFUSED    never storable as sent (the range overlaps stored events, the instance
 *                       belongs to another agent): refuse for good; reason says why.
 *     SOURCE_RETRY      transient (disk full, a failed commit, backpressure): refuse for now,
 *                       the sender keeps the batch and resends it later.
 *     SOURCE_FATAL      the store is unusable: refuse and acknowledge nothing more; senders
 *                       keep their data (window, spool) until an operator repairs the store.
 *   A source acknowledges only COMMITTED and DUPLICATE. The item is borrowed for the call and
 *   freed by the pipeline after it returns; the callback copies what it keeps.
 * - The cookie is the source's business. The pipeline never dereferences it, and it may
 *   outlive what it names: a source must be able to take a completion for a connection or
 *   request that has gone (native.c counts completions owed on each connection and keeps the
 *   connection's record until they are in).
 *
 * THREADS
 * - source_submit, source_backlog and source_in_flight may be called from any thread: the
 *   native source calls them on the loop thread, an OTLP source on libmicrohttpd's threads, a
 *   NATS source on its consumer threads.
 * - complete and complete_end run on the loop thread (the collector's main thread, which
 *   serves the pipeline's completion fd), never concurrently with each other. They must not
 *   block. A source whose answers belong to other threads marshals them itself: an OTLP
 *   request thread waits on its own condition variable that complete signals; a NATS source
 *   queues the acks for its consumer thread and wakes it (eventfd or condition variable).
 * - Backpressure: above the pipeline's byte budget (source_backlog() > budget) a source stops
 *   taking input (the native loop stops reading; OTLP answers 503 with Retry-After; NATS stops
 *   fetching) instead of queuing more.
 * - A source stays attached until source_in_flight() is 0 or the store has been closed.
 */
#ifndef TT_COLLECTOR_SOURCE_H
#define TT_COLLECTOR_SOURCE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"

struct store;
struct hub;
struct pipeline;
struct source;

enum source_result {
    SOURCE_COMMITTED,
    SOURCE_DUPLICATE,
    SOURCE_REFUSED,
    SOURCE_RETRY,
    SOURCE_FATAL,
};

const char *source_result_name(enum source_result r);

struct source_ops {
    const char *name; /* "native", "otlp", ... */
    /* One completion (loop thread). reason: static text for refusals, NULL otherwise. */
    void (*complete)(struct source *src, struct store_item *it, enum source_result r,
                     const char *reason);
    /* The end of a round of completions (loop thread; may be NULL): send what was coalesced,
     * such as one ack for several batches. */
    void (*complete_end)(struct source *src);
};

/* Embedded in each source's own struct; filled by pipeline_attach. */
struct source {
    const struct source_ops *ops;
    struct pipeline *pl;
    _Atomic uint64_t in_flight; /* submitted, completion not yet called */
    int in_round;               /* loop thread: completed in the current round */
};

/* The pipeline's hook, called on the loop thread for each committed batch (after the live
 * fan-out, before the source's completion). */
struct pipeline_hooks {
    void *ctx;
    void (*on_commit)(void *ctx, const struct store_item *it);
};

/* A pipeline over an opened store and hub (both borrowed; they outlive it). queue_bytes is
 * the byte budget of batches waiting for the store. */
int pipeline_new(struct pipeline **out, struct store *store, struct hub *hub,
                 const struct pipeline_hooks *hooks, size_t queue_bytes);
void pipeline_free(struct pipeline *pl);

/* Plug src in (before it submits anything). -1 when PIPELINE_MAX_SOURCES are attached. */
int pipeline_attach(struct pipeline *pl, struct source *src, const struct source_ops *ops);

/* Readable when completions are waiting: the loop watches it and then calls
 * pipeline_dispatch. */
int pipeline_fd(const struct pipeline *pl);

/* Take every completion the store has and call the sources back (loop thread). */
void pipeline_dispatch(struct pipeline *pl);

/* Hand it to the pipeline (any thread); it->source and it->cookie are set here. */
void source_submit(struct source *src, struct store_item *it, void *cookie);

/* Bytes waiting for the store, all sources together, and the budget they should stay in. */
size_t source_backlog(const struct source *src);
size_t source_budget(const struct source *src);

uint64_t source_in_flight(const struct source *src);

#endif

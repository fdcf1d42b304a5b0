/*
 * source.c - the pipeline behind source.h: batches from any source go to the store; what the
 * store hands back is published to the live fan-out and the commit hook when committed, then
 * returned to its source with the result, in submission order (the store's queues are FIFO).
 */
#include "collector/source/source.h"

#include <stdlib.h>

#include "collector/hub.h"
#include "collector/store/store.h"

#define PIPELINE_MAX_SOURCES 8

struct pipeline {
    struct store *store;
    struct hub *hub;
    struct pipeline_hooks hooks;
    size_t queue_bytes;
    struct source *srcs[PIPELINE_MAX_SOURCES]; /* attached, for the ends of rounds */
    int n_srcs;
};

const char *source_result_name(enum source_result r)
{
    static const char *const names[] = {"committed", "duplicate", "refused", "retry", "fatal"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "unknown";
}

int pipeline_new(struct pipeline **out, struct store *store, struct hub *hub,
                 const struct pipeline_hooks *hooks, size_t queue_bytes)
{
    struct pipeline *pl = calloc(1, sizeof *pl);
    *out = pl;
    if (!pl) {
        return -1;
    }
    pl->store = store;
    pl->hub = hub;
    if (hooks) {
        pl->hooks = *hooks;
    }
    pl->queue_bytes = queue_bytes;
    return 0;
}

void pipeline_free(struct pipeline *pl)
{
    free(pl);
}

int pipeline_attach(struct pipeline *pl, struct source *src, const struct source_ops *ops)
{
    if (pl->n_srcs == PIPELINE_MAX_SOURCES) {
        return -1;
    }
    pl->srcs[pl->n_srcs++] = src;
    src->ops = ops;
    src->pl = pl;
    atomic_init(&src->in_flight, 0);
    src->in_round = 0;
    return 0;
}

int pipeline_fd(const struct pipeline *pl)
{
    return store_done_fd(pl->store);
}

/* The store's verdict as the seam's result. A result the store adds later (a fatal class)
 * counts as fatal until it is mapped here: a source then acknowledges nothing. */
static enum source_result map_result(int store_result)
{
    switch (store_result) {
    case STORE_OK:
        return SOURCE_COMMITTED;
    case STORE_DUP:
        return SOURCE_DUPLICATE;
    case STORE_REJECT:
        return SOURCE_REFUSED;
    case STORE_RETRY:
        return SOURCE_RETRY;
    default:
        return SOURCE_FATAL;
    }
}

void pipeline_dispatch(struct pipeline *pl)
{
    struct store_item *it = store_take_done(pl->store), *next;
    for (; it; it = next) {
        next = it->next;
        enum source_result r = map_result(it->result);
        if (r == SOURCE_COMMITTED) {
            if (pl->hub) { /* NULL: the live stream follows the shared store instead */
                hub_publish(pl->hub, it);
            }
            if (pl->hooks.on_commit) {
                pl->hooks.on_commit(pl->hooks.ctx, it);
            }
        }
        struct source *src = it->source;
        /* relaxed: only this thread reads it to decide; submitters only add. */
        atomic_fetch_sub_explicit(&src->in_flight, 1, memory_order_relaxed);
        src->in_round = 1;
        const char *reason = NULL;
        if (r != SOURCE_COMMITTED && r != SOURCE_DUPLICATE) {
            reason = it->reason ? it->reason : "refused";
        }
        src->ops->complete(src, it, r, reason);
        store_item_free(it);
    }
    for (int i = 0; i < pl->n_srcs; i++) {
        struct source *src = pl->srcs[i];
        if (src->in_round) {
            src->in_round = 0;
            if (src->ops->complete_end) {
                src->ops->complete_end(src);
            }
        }
    }
}

void source_submit(struct source *src, struct store_item *it, void *cookie)
{
    it->source = src;
    it->cookie = cookie;
    atomic_fetch_add_explicit(&src->in_flight, 1, memory_order_relaxed);
    store_submit(src->pl->store, it);
}

size_t source_backlog(const struct source *src)
{
    return store_pending_bytes(src->pl->store);
}

size_t source_budget(const struct source *src)
{
    return src->pl->queue_bytes;
}

uint64_t source_in_flight(const struct source *src)
{
    return atomic_load_explicit(&src->in_flight, memory_order_relaxed);
}

/*
 * budget.h - the native source's ingest budget (budget.c): a byte count that memory must be
 * admitted against BEFORE it is allocated, with a FIFO of the connections waiting for bytes to
 * come back. Two pools make the collector's memory bound (docs/operations.md, "Memory bound"):
 * partial frames (read buffers above a connection's small base) and admitted batches (the
 * decompressed payload and the stored copy, from admission until the pipeline's completion).
 * Splitting them keeps a peer that holds incomplete frames from starving complete ones.
 *
 * INVARIANTS
 * - used never exceeds limit: budget_take fails (and queues the waiter) rather than overdraw.
 * - Waiters are served in arrival order: a take succeeds only for the head of the queue or when
 *   nobody waits, so a large request is not starved by a stream of small ones.
 * - A waiter is queued on at most one pool at a time (w->on).
 * Everything here belongs to the loop thread; nothing is allocated.
 */
#ifndef TT_COLLECTOR_BUDGET_H
#define TT_COLLECTOR_BUDGET_H

#include <stddef.h>
#include <stdint.h>

struct budget;

/* Embedded in whoever waits (a connection). */
struct budget_waiter {
    struct budget_waiter *prev, *next;
    struct budget *on; /* the pool it waits on, NULL when not waiting */
    size_t need;       /* what it asked for last */
};

struct budget {
    size_t limit;
    size_t used;
    size_t peak;    /* the highest used so far */
    uint64_t waits; /* requests that had to wait */
    struct budget_waiter *head, *tail;
};

/* The two pools of one loop. */
struct admission {
    struct budget partial; /* read-buffer bytes above each connection's base */
    struct budget items;   /* admitted batches until their completion */
};

void budget_init(struct budget *b, size_t limit);

/* Take n bytes for w: 0, or -1 when w must wait (it is then queued on b, or stays queued). */
int budget_take(struct budget *b, struct budget_waiter *w, size_t n);

/* Give n bytes back. Waiters are not called from here: the owner calls budget_ready at a point
 * where nothing holds a connection. */
void budget_give(struct budget *b, size_t n);

/* Leave the queue w waits on, if any. */
void budget_cancel(struct budget_waiter *w);

/* The head waiter of b if what it asked for fits now, else NULL. */
struct budget_waiter *budget_ready(const struct budget *b);

#endif

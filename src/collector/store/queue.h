/*
 * queue.h - the hand-over every store implementation makes between the source's thread and its
 * own writer thread (store.h, "Threads"): items submitted in order, handed back in order once
 * done, an eventfd that wakes the source's loop, and the bytes the store still holds for it.
 *
 * The lock guards the queue's fields and, by each implementation's choice, what it keeps beside
 * them for other threads (its failure text); the writer waits on cond for new items or stop, by
 * a rule of its own (store_queue_take_in takes what is there).
 */
#ifndef TT_COLLECTOR_STORE_QUEUE_H
#define TT_COLLECTOR_STORE_QUEUE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/store/store.h"

struct store_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* items submitted, or stop: for the writer */
    struct store_item *in_head, *in_tail;
    struct store_item *done_head, *done_tail;
    size_t pending_bytes; /* raw and blob bytes of every item submitted and not taken back */
    int stop;
    int done_fd; /* eventfd, readable when done items wait */
};

/* 0, or -errno when the eventfd cannot be made (the queue is still safe to fini). */
int store_queue_init(struct store_queue *q);
/* Frees the done items never taken back, closes the eventfd. After the writer stopped. */
void store_queue_fini(struct store_queue *q);

/* Source thread. */
void store_queue_submit(struct store_queue *q, struct store_item *it);
struct store_item *store_queue_take_done(struct store_queue *q);
size_t store_queue_pending_bytes(struct store_queue *q);

/* Writer thread. With q->lock held: the items submitted so far, in order (NULL if none). */
struct store_item *store_queue_take_in(struct store_queue *q);
/* The items of head, in order, are done: the source's loop gets them back. */
void store_queue_finish(struct store_queue *q, struct store_item *head);

/* Writer thread, the end of a group of items: a failed group's items come back STORE_RETRY;
 * the collector's counters take the stored and duplicate ones; then store_queue_finish. */
void store_queue_group_done(struct store_queue *q, struct store_item *head, int failed);
/* Writer thread, a group committed in dt_ns: the commit figures, and the end of a transient
 * episode (*refused groups refused in it: one log line, reset, `refusing` cleared under the
 * lock). */
void store_queue_committed(struct store_queue *q, uint64_t dt_ns, uint64_t *refused,
                           char *refusing);

/* Any thread: the writer is to stop once the items submitted so far are done. */
void store_queue_stop(struct store_queue *q);

#endif

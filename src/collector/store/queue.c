/*
 * queue.c - the source-to-writer hand-over of the store implementations (queue.h).
 */
#include "collector/store/queue.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "collector/collector.h"
#include "collector/log.h"

int store_queue_init(struct store_queue *q)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->in_head = q->in_tail = q->done_head = q->done_tail = NULL;
    q->pending_bytes = 0;
    q->stop = 0;
    q->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return q->done_fd < 0 ? -errno : 0;
}

void store_queue_fini(struct store_queue *q)
{
    struct store_item *it = q->done_head;
    while (it) {
        struct store_item *next = it->next;
        store_item_free(it);
        it = next;
    }
    q->done_head = q->done_tail = NULL;
    if (q->done_fd >= 0) {
        close(q->done_fd);
        q->done_fd = -1;
    }
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
}

void store_queue_submit(struct store_queue *q, struct store_item *it)
{
    it->next = NULL;
    it->result = STORE_PENDING;
    pthread_mutex_lock(&q->lock);
    if (q->in_tail) {
        q->in_tail->next = it;
    } else {
        q->in_head = it;
    }
    q->in_tail = it;
    q->pending_bytes += it->raw_len + it->blob_len;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

struct store_item *store_queue_take_done(struct store_queue *q)
{
    uint64_t v;
    ssize_t n = read(q->done_fd, &v, sizeof v);
    (void)n;
    pthread_mutex_lock(&q->lock);
    struct store_item *head = q->done_head;
    q->done_head = q->done_tail = NULL;
    for (struct store_item *it = head; it; it = it->next) {
        q->pending_bytes -= it->raw_len + it->blob_len;
    }
    pthread_mutex_unlock(&q->lock);
    return head;
}

size_t store_queue_pending_bytes(struct store_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->pending_bytes;
    pthread_mutex_unlock(&q->lock);
    return n;
}

struct store_item *store_queue_take_in(struct store_queue *q)
{
    struct store_item *head = q->in_head;
    q->in_head = q->in_tail = NULL;
    return head;
}

void store_queue_finish(struct store_queue *q, struct store_item *head)
{
    if (!head) {
        return;
    }
    pthread_mutex_lock(&q->lock);
    if (q->done_tail) {
        q->done_tail->next = head;
    } else {
        q->done_head = head;
    }
    while (head && head->next) {
        head = head->next;
    }
    q->done_tail = head;
    pthread_mutex_unlock(&q->lock);
    uint64_t one = 1;
    ssize_t n = write(q->done_fd, &one, sizeof one);
    (void)n;
}

void store_queue_stop(struct store_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->stop = 1;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

void store_queue_group_done(struct store_queue *q, struct store_item *head, int failed)
{
    for (struct store_item *it = head; it; it = it->next) {
        if (failed) {
            it->result = STORE_RETRY;
            it->reason = "storage error";
        }
        if (it->result == STORE_OK) {
            cstat_add(&cstats.events, it->batch.n_events);
        } else if (it->result == STORE_DUP) {
            cstat_add(&cstats.dedup_frames, 1);
            cstat_add(&cstats.dedup_events, it->batch.n_events);
        }
    }
    store_queue_finish(q, head);
}

void store_queue_committed(struct store_queue *q, uint64_t dt_ns, uint64_t *refused, char *refusing)
{
    if (*refused) {
        log_info("store: commits succeed again (%llu groups of batches were refused)",
                 (unsigned long long)*refused);
        *refused = 0;
        pthread_mutex_lock(&q->lock);
        refusing[0] = 0;
        pthread_mutex_unlock(&q->lock);
    }
    cstat_add(&cstats.commits, 1);
    cstat_add(&cstats.commit_ns_total, dt_ns);
    cstat_commit_observe(dt_ns);
    uint64_t mx = atomic_load_explicit(&cstats.commit_ns_max, memory_order_relaxed);
    if (dt_ns > mx) {
        atomic_store_explicit(&cstats.commit_ns_max, dt_ns, memory_order_relaxed);
    }
}

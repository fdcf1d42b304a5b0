/*
 * budget.c - byte budgets with a FIFO of waiters (budget.h): the admission control of the
 * native source, after the memory limiter of OpenTelemetry's collector and Kafka's
 * queued.max.request.bytes: memory is admitted by the size a frame declares, before it is
 * allocated, and a request that does not fit waits for bytes to come back.
 */
#include "collector/source/budget.h"

void budget_init(struct budget *b, size_t limit)
{
    b->limit = limit;
    b->used = b->peak = 0;
    b->waits = 0;
    b->head = b->tail = 0;
}

static void enqueue(struct budget *b, struct budget_waiter *w)
{
    w->on = b;
    w->next = 0;
    w->prev = b->tail;
    if (b->tail) {
        b->tail->next = w;
    } else {
        b->head = w;
    }
    b->tail = w;
    b->waits++;
}

void budget_cancel(struct budget_waiter *w)
{
    struct budget *b = w->on;
    if (!b) {
        return;
    }
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        b->head = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    } else {
        b->tail = w->prev;
    }
    w->prev = w->next = 0;
    w->on = 0;
}

int budget_take(struct budget *b, struct budget_waiter *w, size_t n)
{
    if (w->on && w->on != b) {
        budget_cancel(w); /* it now waits for something else */
    }
    w->need = n;
    int turn = w->on ? b->head == w : b->head == 0;
    if (!turn || n > b->limit - b->used) {
        if (!w->on) {
            enqueue(b, w);
        }
        return -1;
    }
    budget_cancel(w);
    b->used += n;
    if (b->used > b->peak) {
        b->peak = b->used;
    }
    return 0;
}

void budget_give(struct budget *b, size_t n)
{
    b->used = n > b->used ? 0 : b->used - n;
}

struct budget_waiter *budget_ready(const struct budget *b)
{
    struct budget_waiter *w = b->head;
    return w && w->need <= b->limit - b->used ? w : 0;
}

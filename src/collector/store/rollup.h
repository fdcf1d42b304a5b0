/*
 * rollup.h - what the stores' rollups share (store.h "rollups"; sqlite_rollup.c and
 * postgres_rollup.c keep only their SQL): the writer's accumulator of 1 s buckets, which
 * events of a stored item count into which series, and the readers' merge of one level's
 * stored rows into the buckets a query asks for. One implementation, so that both stores
 * answer the same series for the same stream.
 *
 * The accumulator calls back into its store for two things: the kind and name of a step (a
 * step's end is counted under its begin's kind and name, which are in the store's steps table)
 * and a flush when it holds ROLLUP_ACC_MAX entries (the store writes them inside the open
 * transaction and empties it with rollup_acc_discard). Their return codes, and the code for an
 * allocation failure (nomem), are the store's own: 0 is success, anything else an error that
 * rollup_acc_item hands back unchanged.
 *
 * INVARIANTS
 * - One thread uses an accumulator (the store's writer); a merger lives within one read.
 * - An entry's key is at most STORE_ROLLUP_KEY_MAX bytes and holds no NUL (cut there, as a
 *   text column would read it), and is NUL-terminated in key[].
 */
#ifndef TT_COLLECTOR_STORE_ROLLUP_H
#define TT_COLLECTOR_STORE_ROLLUP_H

#include <stddef.h>
#include <stdint.h>

#include "collector/store/store.h"

/* Entries accumulated before a flush inside the transaction (bounds memory, not a batch). */
#define ROLLUP_ACC_MAX 4096
#define ROLLUP_ACC_SLOTS (ROLLUP_ACC_MAX * 2) /* open addressing */
#define ROLLUP_HIST_ENC_MAX (STORE_HIST_BINS * 15)

extern const int rollup_levels[STORE_ROLLUP_N_LEVELS];
extern const int64_t rollup_keep[STORE_ROLLUP_N_LEVELS];

struct rollup_cell {
    int64_t agent_id, sec;
    int metric;
    char key[STORE_ROLLUP_KEY_MAX + 1];
    size_t keylen;
    uint64_t n, errors;
    double sum;
    struct store_hist *hist; /* owned; NULL for count-only metrics */
    int used;
};

struct rollup_acc {
    struct rollup_cell *tab; /* ROLLUP_ACC_SLOTS; a flush writes those with used set */
    size_t used;
    void *ctx; /* the store's, passed to the callbacks */
    int (*flush)(void *ctx);
    int (*step_of)(void *ctx, int64_t instance_id, uint64_t step_id, int *kind, char *name,
                   size_t *name_len); /* name: STORE_ROLLUP_KEY_MAX bytes; unknown: 0 and "" */
    int nomem;
};

/* 0, or -1 when out of memory. */
int rollup_acc_init(struct rollup_acc *a, void *ctx, int (*flush)(void *),
                    int (*step_of)(void *, int64_t, uint64_t, int *, char *, size_t *), int nomem);
void rollup_acc_discard(struct rollup_acc *a);
void rollup_acc_fini(struct rollup_acc *a);
/* Adds a stored item's events: 0 or the code of a callback (or nomem). */
int rollup_acc_item(struct rollup_acc *a, const struct store_item *it, int64_t agent_id,
                    int64_t instance_id);

int64_t rollup_floor_div(int64_t a, int64_t b);

/* Whether a query names a stored level and a bucket that is a multiple of it; the stored rows
 * it reads, in Unix seconds: [*lo, *hi). */
int rollup_query_ok(const struct store_rollup_query *q, int64_t *lo, int64_t *hi);

/* One stored row, as a reader hands it to the merge. */
struct rollup_row {
    int64_t bucket; /* Unix seconds */
    int metric;
    const char *key;
    size_t keylen;
    uint64_t n, errors;
    double sum;          /* NaN (a NULL) counts as 0 */
    const uint8_t *hist; /* encoded, or NULL */
    size_t hist_len;
};

struct rollup_merged;
struct rollup_merger {
    struct rollup_merged *m;
    size_t n, cap;
    int64_t cur; /* the bucket being merged */
    int rows;    /* rows answered so far */
};

/* Adds one row of an agent's rows (in bucket order) into q's buckets, answering the bucket
 * before it first when it begins another: 0, 1 when fn asked to stop, or -E2BIG (too many
 * keys in one bucket), -ENOMEM, -EIO (a malformed histogram). */
int rollup_merge_row(struct rollup_merger *g, const char *agent, const struct store_rollup_query *q,
                     const struct rollup_row *r, store_rollup_fn fn, void *ctx);
/* Answers an agent's last bucket: 0, or 1 when fn asked to stop. */
int rollup_merge_end(struct rollup_merger *g, const char *agent, store_rollup_fn fn, void *ctx);
void rollup_merger_free(struct rollup_merger *g);

#endif

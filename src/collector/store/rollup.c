/*
 * rollup.c - the rollups both stores share (rollup.h): the writer's accumulator and what each
 * event counts into, and the readers' merge of stored rows into asked buckets.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store/rollup.h"

const int rollup_levels[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_LEVELS;
const int64_t rollup_keep[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_KEEP;

int64_t rollup_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int rollup_acc_init(struct rollup_acc *a, void *ctx, int (*flush)(void *),
                    int (*step_of)(void *, int64_t, uint64_t, int *, char *, size_t *), int nomem)
{
    *a = (struct rollup_acc){.ctx = ctx, .flush = flush, .step_of = step_of, .nomem = nomem};
    a->tab = calloc(ROLLUP_ACC_SLOTS, sizeof *a->tab);
    return a->tab ? 0 : -1;
}

void rollup_acc_discard(struct rollup_acc *a)
{
    if (!a->tab) {
        return;
    }
    for (size_t i = 0; i < ROLLUP_ACC_SLOTS; i++) {
        free(a->tab[i].hist);
        a->tab[i].hist = NULL;
        a->tab[i].used = 0;
    }
    a->used = 0;
}

void rollup_acc_fini(struct rollup_acc *a)
{
    rollup_acc_discard(a);
    free(a->tab);
    a->tab = NULL;
}

static uint64_t hash_key(int64_t agent, int64_t sec, int metric, const char *key, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    h = (h ^ (uint64_t)agent) * 1099511628211ull;
    h = (h ^ (uint64_t)sec) * 1099511628211ull;
    h = (h ^ (uint64_t)metric) * 1099511628211ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)key[i]) * 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* The entry of (agent, sec, metric, key), made when missing (after a flush when full); NULL
 * with the code in *rc. */
static struct rollup_cell *slot(struct rollup_acc *a, int64_t agent, int64_t sec, int metric,
                                const char *key, size_t keylen, int *rc)
{
    keylen = strnlen(key, keylen > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : keylen);
    if (a->used >= ROLLUP_ACC_MAX && (*rc = a->flush(a->ctx)) != 0) {
        return NULL;
    }
    size_t mask = ROLLUP_ACC_SLOTS - 1, j = hash_key(agent, sec, metric, key, keylen) & mask;
    for (;; j = (j + 1) & mask) {
        struct rollup_cell *c = &a->tab[j];
        if (!c->used) {
            *c = (struct rollup_cell){
                .agent_id = agent, .sec = sec, .metric = metric, .keylen = keylen, .used = 1};
            memcpy(c->key, key, keylen);
            if (metric != STORE_ROLLUP_EVENTS && metric != STORE_ROLLUP_TOKENS) {
                c->hist = calloc(1, sizeof *c->hist);
                if (!c->hist) {
                    c->used = 0;
                    *rc = a->nomem;
                    return NULL;
                }
            }
            a->used++;
            return c;
        }
        if (c->agent_id == agent && c->sec == sec && c->metric == metric && c->keylen == keylen &&
            !memcmp(c->key, key, keylen)) {
            return c;
        }
    }
}

static int add(struct rollup_acc *a, int64_t agent, int64_t time_ns, int metric, const char *key,
               size_t keylen, uint64_t n, int error, double value)
{
    int rc = 0;
    struct rollup_cell *c =
        slot(a, agent, rollup_floor_div(time_ns, 1000000000), metric, key, keylen, &rc);
    if (!c) {
        return rc ? rc : a->nomem;
    }
    c->n += n;
    c->errors += error ? 1 : 0;
    if (c->hist && !isnan(value)) {
        c->sum += value;
        store_hist_add(c->hist, value, 1);
    }
    return 0;
}

static const char *kind_name(int kind)
{
    static const char *const names[] = {"unknown", "reasoning", "tool",      "api",
                                        "llm",     "agent",     "retrieval", "other"};
    return kind >= 0 && kind <= 7 ? names[kind] : "unknown";
}

/* Whether a step kind is an external call (its steps count per name as tools). */
static int external_kind(int kind)
{
    return kind == 2 || kind == 3 || kind == 6; /* tool, api, retrieval */
}

static int step_end(struct rollup_acc *a, const tt__event *ev, int64_t agent, int64_t inst)
{
    tt__ev_step_end se;
    if (tt__ev_step_end_decode(ev->body, &se) != 0) {
        return 0;
    }
    int kind = 0;
    char name[STORE_ROLLUP_KEY_MAX] = "";
    size_t name_len = 0;
    int rc = a->step_of(a->ctx, inst, se.step_id, &kind, name, &name_len);
    if (rc) {
        return rc;
    }
    int error = se.status == 1 || se.status == 2; /* error, timeout */
    double d = (double)se.duration_ns;
    const char *k = kind_name(kind);
    rc = add(a, agent, ev->time, STORE_ROLLUP_STEPS, k, strlen(k), 1, error, d);
    if (rc == 0 && external_kind(kind)) {
        rc = add(a, agent, ev->time, STORE_ROLLUP_TOOLS, name, name_len, 1, error, d);
    }
    return rc;
}

static int response_end(struct rollup_acc *a, const tt__event *ev, int64_t agent)
{
    tt__ev_response_end e;
    if (tt__ev_response_end_decode(ev->body, &e) != 0) {
        return 0;
    }
    double conf = isnan(e.mean_logprob) ? NAN : exp((double)e.mean_logprob);
    int rc = add(a, agent, ev->time, STORE_ROLLUP_RESPONSES, "", 0, 1, e.verdict != 0, conf);
    if (rc == 0 && e.tokens > 0) {
        rc = add(a, agent, ev->time, STORE_ROLLUP_TOKENS, "", 0, (uint64_t)e.tokens, 0, NAN);
    }
    return rc;
}

int rollup_acc_item(struct rollup_acc *a, const struct store_item *it, int64_t agent_id,
                    int64_t instance_id)
{
    tt__batch b = it->batch; /* a copy: iteration state is ours */
    uint32_t walk = (1u << TT_EV_STEP_END) | (1u << TT_EV_RESPONSE_END);
    if (b.n_events == 0) {
        return 0;
    }
    if (!(b.kinds & walk) &&
        rollup_floor_div(b.t_min, 1000000000) == rollup_floor_div(b.t_max, 1000000000)) {
        /* Every event in one second: counted without decoding them. */
        return add(a, agent_id, b.t_min, STORE_ROLLUP_EVENTS, "", 0, b.n_events, 0, NAN);
    }
    tt__event ev;
    int rc = 0;
    int64_t run_sec = INT64_MIN, run_n = 0;
    while (rc == 0 && tt__batch_next(&b, &ev)) {
        int64_t sec = rollup_floor_div(ev.time, 1000000000);
        if (sec != run_sec) {
            if (run_n) {
                rc = add(a, agent_id, run_sec * 1000000000, STORE_ROLLUP_EVENTS, "", 0,
                         (uint64_t)run_n, 0, NAN);
            }
            run_sec = sec;
            run_n = 0;
        }
        run_n++;
        if (rc == 0 && ev.kind == TT_EV_STEP_END) {
            rc = step_end(a, &ev, agent_id, instance_id);
        } else if (rc == 0 && ev.kind == TT_EV_RESPONSE_END) {
            rc = response_end(a, &ev, agent_id);
        }
    }
    if (rc == 0 && run_n) {
        rc = add(a, agent_id, run_sec * 1000000000, STORE_ROLLUP_EVENTS, "", 0, (uint64_t)run_n, 0,
                 NAN);
    }
    return rc;
}

/* --- reading ------------------------------------------------------------------------------- */

int rollup_query_ok(const struct store_rollup_query *q, int64_t *lo, int64_t *hi)
{
    int level_ok = 0;
    for (int l = 0; l < STORE_ROLLUP_N_LEVELS; l++) {
        level_ok |= q->step_s == rollup_levels[l];
    }
    if (!level_ok || q->bucket_s < q->step_s || q->bucket_s % q->step_s != 0) {
        return 0;
    }
    *lo = rollup_floor_div(q->since_ns, 1000000000);
    *hi = rollup_floor_div(q->until_ns, 1000000000) + (q->until_ns % 1000000000 != 0);
    return 1;
}

/* One (metric, key) of the bucket being merged. */
struct rollup_merged {
    int metric;
    char key[STORE_ROLLUP_KEY_MAX + 1];
    size_t keylen;
    uint64_t n, errors;
    double sum;
    struct store_hist *hist; /* kept across buckets, cleared when reused */
    int has_hist;
};

#define MERGE_MAX 4096 /* distinct (metric, key) in one answered bucket */

static struct rollup_merged *merged_slot(struct rollup_merger *g, int metric, const char *key,
                                         size_t keylen)
{
    /* as a text column reads it: up to a NUL byte, and at most STORE_ROLLUP_KEY_MAX */
    keylen = strnlen(key, keylen > STORE_ROLLUP_KEY_MAX ? STORE_ROLLUP_KEY_MAX : keylen);
    for (size_t i = 0; i < g->n; i++) {
        if (g->m[i].metric == metric && g->m[i].keylen == keylen &&
            !memcmp(g->m[i].key, key, keylen)) {
            return &g->m[i];
        }
    }
    if (g->n == g->cap) {
        if (g->cap >= MERGE_MAX) {
            return NULL;
        }
        size_t cap = g->cap ? g->cap * 2 : 16;
        struct rollup_merged *m = realloc(g->m, cap * sizeof *m);
        if (!m) {
            return NULL;
        }
        memset(m + g->cap, 0, (cap - g->cap) * sizeof *m);
        g->m = m;
        g->cap = cap;
    }
    struct rollup_merged *x = &g->m[g->n++];
    struct store_hist *h = x->hist;
    *x = (struct rollup_merged){.metric = metric, .keylen = keylen, .hist = h};
    memcpy(x->key, key, keylen);
    if (x->hist) {
        memset(x->hist, 0, sizeof *x->hist);
    }
    return x;
}

int rollup_merge_end(struct rollup_merger *g, const char *agent, store_rollup_fn fn, void *ctx)
{
    int stop = 0;
    g->rows += (int)g->n;
    for (size_t i = 0; i < g->n && !stop; i++) {
        const struct rollup_merged *x = &g->m[i];
        struct store_rollup row = {
            agent, g->cur * 1000000000, x->metric, x->key,
            x->n,  x->errors,           x->sum,    x->has_hist ? x->hist : NULL};
        stop = fn(ctx, &row);
    }
    g->n = 0;
    return stop ? 1 : 0;
}

int rollup_merge_row(struct rollup_merger *g, const char *agent, const struct store_rollup_query *q,
                     const struct rollup_row *r, store_rollup_fn fn, void *ctx)
{
    int64_t b = rollup_floor_div(r->bucket, q->bucket_s) * q->bucket_s;
    if (b != g->cur && g->n && rollup_merge_end(g, agent, fn, ctx)) {
        return 1;
    }
    g->cur = b;
    struct rollup_merged *x =
        merged_slot(g, r->metric, r->key ? r->key : "", r->key ? r->keylen : 0);
    if (!x) {
        return g->cap >= MERGE_MAX ? -E2BIG : -ENOMEM;
    }
    x->n += r->n;
    x->errors += r->errors;
    x->sum += isnan(r->sum) ? 0 : r->sum;
    if (r->hist) {
        if (!x->hist && !(x->hist = calloc(1, sizeof *x->hist))) {
            return -ENOMEM;
        }
        x->has_hist = 1;
        if (store_hist_merge_encoded(x->hist, r->hist, r->hist_len) != 0) {
            return -EIO;
        }
    }
    return 0;
}

void rollup_merger_free(struct rollup_merger *g)
{
    for (size_t i = 0; i < g->cap; i++) {
        free(g->m[i].hist);
    }
    free(g->m);
    g->m = NULL;
    g->n = g->cap = 0;
}

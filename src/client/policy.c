/*
 * policy.c - compliance in the agent (telltale.h, "Compliance"): the client's policy, the
 * decision before a step begins, the decision's log event, per-session call counters for limit
 * rules, and the masking of sensitive values before they are encoded. The checks themselves are
 * src/common/comply.c.
 *
 * The hot path pays one relaxed or acquire load per call while no policy is set (emit.c). A
 * policy is immutable once published. A step under a policy reads it inside a reader section
 * (two counters, by the parity of an epoch: count in, load the policy, use it, count out); a
 * replacement swaps the pointer, then flips the epoch twice, each time waiting for the
 * counter of the parity it left to reach zero, which no reader that loaded the old policy can
 * pass without leaving; then the old policy (about 270 KB) is freed. A reader that stays
 * inside longer than RETIRE_WAIT_MS (a thread stopped mid-call) leaves its policy retired
 * until tt_close instead. A text that holds a value to mask is
 * masked into a temporary heap copy (the one allocation of an event call, only then; if it
 * fails the event is dropped and counted as oom rather than sent unmasked).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/client.h"
#include "common/comply.h"

#define SESSION_SLOTS 4096 /* sessions whose limit counters are kept (direct-mapped) */

struct old_policy {
    struct old_policy *next;
    struct tt__comply_policy p;
};

struct session_count {
    uint64_t hash; /* 0: empty */
    uint64_t calls[TT_COMPLY_MAX_LIMITS];
};

struct tt__comply_client {
    struct old_policy *current;   /* under comply_lock */
    struct old_policy *retired;   /* under comply_lock: replaced ones a reader still held */
    struct session_count *counts; /* SESSION_SLOTS, allocated with the first limit rule */
    _Atomic uint64_t blocked, flagged, masked;
    pthread_mutex_t set_lock;    /* one replacement at a time (readers never take it) */
    _Atomic unsigned epoch;      /* its parity picks the readers' counter */
    _Atomic uint64_t readers[2]; /* steps inside a reader section, by parity */
};

#define RETIRE_WAIT_MS 200

/* Flip the epoch and wait for the readers counted under the parity it left. 0 when they all
 * left, -1 when one stayed RETIRE_WAIT_MS. */
static int flip_and_drain(struct tt__comply_client *cc)
{
    unsigned e = atomic_fetch_add_explicit(&cc->epoch, 1, memory_order_seq_cst) & 1;
    for (int waited_us = 0; atomic_load_explicit(&cc->readers[e], memory_order_seq_cst) != 0;
         waited_us += 50) {
        if (waited_us >= RETIRE_WAIT_MS * 1000) {
            return -1;
        }
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static uint64_t hash_session(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; s && *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h ? h : 1;
}

TT_API int tt_comply_policy_set(tt_client *c, const char *text, size_t len, char *err,
                                size_t errlen)
{
    if (err && errlen) {
        err[0] = 0;
    }
    if (!c || (!text && len)) {
        return TT_EINVAL;
    }
    struct old_policy *n = NULL;
    if (text) {
        n = calloc(1, sizeof *n);
        if (!n) {
            return TT_ENOMEM;
        }
        char e[256];
        int rc = tt__comply_parse(&n->p, text, len, e, sizeof e);
        if (rc) {
            if (err && errlen) {
                snprintf(err, errlen, "%s", e);
            }
            free(n);
            return rc == -E2BIG ? TT_E2BIG : TT_EINVAL;
        }
    }
    pthread_mutex_lock(&c->comply_lock);
    if (!c->comply) {
        c->comply = calloc(1, sizeof *c->comply);
        if (!c->comply) {
            pthread_mutex_unlock(&c->comply_lock);
            free(n);
            return TT_ENOMEM;
        }
        pthread_mutex_init(&c->comply->set_lock, NULL);
    }
    struct tt__comply_client *cc = c->comply;
    pthread_mutex_unlock(&c->comply_lock);

    pthread_mutex_lock(&cc->set_lock);
    pthread_mutex_lock(&c->comply_lock);
    if (n && n->p.n_limits && !cc->counts) {
        cc->counts = calloc(SESSION_SLOTS, sizeof *cc->counts);
        if (!cc->counts) {
            pthread_mutex_unlock(&c->comply_lock);
            pthread_mutex_unlock(&cc->set_lock);
            free(n);
            return TT_ENOMEM;
        }
    }
    if (cc->counts) {
        memset(cc->counts, 0, SESSION_SLOTS * sizeof *cc->counts); /* a new policy counts anew */
    }
    struct old_policy *old = cc->current;
    cc->current = n;
    atomic_store_explicit(&c->comply_redact, n ? n->p.redact_pii : 0, memory_order_relaxed);
    atomic_store_explicit(&c->comply_policy, n ? &n->p : NULL, memory_order_seq_cst);
    pthread_mutex_unlock(&c->comply_lock);
    /* Outside comply_lock: a reader may wait for it (its limit counters) inside its section. */
    if (old && (flip_and_drain(cc) != 0 || flip_and_drain(cc) != 0)) {
        pthread_mutex_lock(&c->comply_lock);
        old->next = cc->retired;
        cc->retired = old;
        pthread_mutex_unlock(&c->comply_lock);
        old = NULL;
    }
    pthread_mutex_unlock(&cc->set_lock);
    free(old);
    return 0;
}

int tt__comply_load_file(tt_client *c, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return TT_EINVAL;
    }
    if (st.st_size > TT_COMPLY_MAX_POLICY) {
        close(fd);
        return TT_E2BIG;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return TT_ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    int rc = tt_comply_policy_set(c, buf, got, NULL, 0);
    free(buf);
    return rc;
}

void tt__comply_fini(tt_client *c)
{
    struct tt__comply_client *cc = c->comply;
    if (!cc) {
        return;
    }
    free(cc->current);
    for (struct old_policy *p = cc->retired, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    pthread_mutex_destroy(&cc->set_lock);
    free(cc->counts);
    free(cc);
    c->comply = NULL;
}

void tt__comply_stats(tt_client *c, tt_stats *s)
{
    pthread_mutex_lock(&c->comply_lock);
    if (c->comply) {
        s->comply_blocked = atomic_load_explicit(&c->comply->blocked, memory_order_relaxed);
        s->comply_flagged = atomic_load_explicit(&c->comply->flagged, memory_order_relaxed);
        s->comply_masked = atomic_load_explicit(&c->comply->masked, memory_order_relaxed);
    }
    pthread_mutex_unlock(&c->comply_lock);
}

/* A masked copy of text (free it) when it holds a value of `kinds`; NULL with *copy NULL when
 * it holds none; NULL with *copy == text when the copy could not be allocated. */
static char *masked(tt_client *c, uint32_t kinds, const char *text, const char **copy)
{
    *copy = NULL;
    if (!text) {
        return NULL;
    }
    size_t n = strlen(text);
    struct tt__comply_find f;
    if (!tt__comply_pii_find(text, n, 0, kinds, &f)) {
        return NULL;
    }
    /* A value is at least 6 bytes and its mark at most 9: 1.5 n + 16 holds the first pass's
     * result; a later pass (values that masking exposed) is cut at cap, never overruns it. */
    size_t cap = n + n / 2 + 16;
    char *buf = malloc(cap + 1);
    if (!buf) {
        *copy = text;
        return NULL;
    }
    uint64_t count = 0;
    size_t len = tt__comply_redact(text, n, kinds, buf, cap, &count);
    buf[len] = 0;
    atomic_fetch_add_explicit(&c->comply->masked, count, memory_order_relaxed);
    *copy = buf;
    return buf;
}

static int dropped_oom(tt_client *c)
{
    atomic_fetch_add_explicit(&c->dropped_oom, 1, memory_order_relaxed);
    return TT_ENOMEM;
}

int tt__comply_log(tt_client *c, uint32_t kinds, const char *session, tt_severity severity,
                   const char *message, const tt_attr *attrs, size_t nattrs)
{
    enum { ATTRS = 64 };
    if (!c->comply || nattrs > ATTRS || (nattrs && !attrs)) {
        return tt__log_raw(c, session, severity, message, attrs, nattrs);
    }
    const char *m;
    char *free_m = masked(c, kinds, message, &m);
    if (m == message) {
        return dropped_oom(c);
    }
    tt_attr copy[ATTRS];
    char *free_a[ATTRS];
    size_t n_free = 0;
    int rc = 0;
    if (nattrs) {
        memcpy(copy, attrs, nattrs * sizeof *attrs);
    }
    for (size_t i = 0; i < nattrs && rc == 0; i++) {
        if (copy[i].type != TT_ATTR_STR || !copy[i].v.s) {
            continue;
        }
        const char *a;
        char *fa = masked(c, kinds, copy[i].v.s, &a);
        if (a == copy[i].v.s) {
            rc = dropped_oom(c);
        } else if (fa) {
            free_a[n_free++] = fa;
            copy[i].v.s = a;
        }
    }
    if (rc == 0) {
        rc = tt__log_raw(c, session, severity, m ? m : message, nattrs ? copy : attrs, nattrs);
    }
    for (size_t i = 0; i < n_free; i++) {
        free(free_a[i]);
    }
    free(free_m);
    return rc;
}

int tt__comply_step_end(tt_client *c, uint32_t kinds, const tt_step *step, tt_status status,
                        int64_t result_bytes, const char *error)
{
    if (!c->comply) {
        return tt__step_end_raw(c, step, status, result_bytes, error);
    }
    const char *e;
    char *fe = masked(c, kinds, error, &e);
    if (e == error) {
        return dropped_oom(c);
    }
    int rc = tt__step_end_raw(c, step, status, result_bytes, e ? e : error);
    free(fe);
    return rc;
}

static const char *const kind_names[] = {"",    "reasoning", "tool",      "api",
                                         "llm", "agent",     "retrieval", "other"};

/* The decision as a log event in the step's session. */
static void log_decision(tt_client *c, const struct tt__comply_policy *p,
                         const struct tt__comply_verdict *v, const tt_step *step, int kind,
                         const char *session, const char *name)
{
    const char *verdict = v->action == TT_COMPLY_BLOCK ? "block" : "flag";
    const char *rule = p->rules[v->rule].name;
    char msg[320], id[24];
    snprintf(msg, sizeof msg, "compliance: %s %s step %s (rule %s): %s",
             v->action == TT_COMPLY_BLOCK ? "blocked" : "flagged", kind_names[kind],
             name ? name : "", rule, v->why);
    snprintf(id, sizeof id, "%016llx", (unsigned long long)step->id);
    tt_attr a[6] = {
        {.key = "comply.rule", .type = TT_ATTR_STR, .v.s = rule},
        {.key = "comply.verdict", .type = TT_ATTR_STR, .v.s = verdict},
        {.key = "comply.why", .type = TT_ATTR_STR, .v.s = v->why},
        {.key = "step.id", .type = TT_ATTR_STR, .v.s = id},
        {.key = "step.kind", .type = TT_ATTR_STR, .v.s = kind_names[kind]},
        {.key = "step.name", .type = TT_ATTR_STR, .v.s = name ? name : ""},
    };
    tt__log_raw(c, session, v->action == TT_COMPLY_BLOCK ? TT_ERROR : TT_WARN, msg, a, 6);
}

static int step_under(tt_client *c, const struct tt__comply_policy *p, tt_step *step,
                      const tt_step *parent, tt_step_kind kind, const char *session,
                      const char *name, const char *query, const uint8_t *trace_ctx);

int tt__comply_step_begin(tt_client *c, tt_step *step, const tt_step *parent, tt_step_kind kind,
                          const char *session, const char *name, const char *query,
                          const uint8_t *trace_ctx)
{
    /* The caller saw a policy (acquire): c->comply is set and stays until tt_close. */
    struct tt__comply_client *cc = c->comply;
    unsigned e = atomic_load_explicit(&cc->epoch, memory_order_seq_cst) & 1;
    atomic_fetch_add_explicit(&cc->readers[e], 1, memory_order_seq_cst);
    const struct tt__comply_policy *p =
        atomic_load_explicit(&c->comply_policy, memory_order_seq_cst);
    int rc = p ? step_under(c, p, step, parent, kind, session, name, query, trace_ctx)
               : tt__step_begin_raw(c, step, parent, kind, session, name, query, trace_ctx);
    atomic_fetch_sub_explicit(&cc->readers[e], 1, memory_order_release);
    return rc;
}

static int step_under(tt_client *c, const struct tt__comply_policy *p, tt_step *step,
                      const tt_step *parent, tt_step_kind kind, const char *session,
                      const char *name, const char *query, const uint8_t *trace_ctx)
{
    struct tt__comply_client *cc = c->comply;
    uint64_t calls[TT_COMPLY_MAX_LIMITS] = {0};
    struct session_count *slot = NULL;
    uint64_t h = 0;
    if (p->n_limits) {
        h = hash_session(session);
        pthread_mutex_lock(&c->comply_lock);
        slot = &cc->counts[h % SESSION_SLOTS];
        if (slot->hash == h) {
            memcpy(calls, slot->calls, sizeof calls);
        }
        pthread_mutex_unlock(&c->comply_lock);
    }
    struct tt__comply_verdict v;
    int action = tt__comply_step(p, (int)kind, name, name ? strlen(name) : 0, query,
                                 query ? strlen(query) : 0, calls, &v);
    const char *q = NULL;
    char *free_q = p->redact_pii ? masked(c, p->redact_pii, query, &q) : NULL;
    if (q == query && query) {
        step->id = 0;
        return dropped_oom(c);
    }
    int rc = tt__step_begin_raw(c, step, parent, kind, session, name, q ? q : query, trace_ctx);
    free(free_q);
    if (action == TT_COMPLY_BLOCK) {
        atomic_fetch_add_explicit(&cc->blocked, 1, memory_order_relaxed);
        log_decision(c, p, &v, step, (int)kind, session, name);
        char err[256];
        snprintf(err, sizeof err, "blocked by rule %s: %s", p->rules[v.rule].name, v.why);
        tt__step_end_raw(c, step, TT_STATUS_CANCELLED, -1, err);
        step->id = 0;
        return TT_EBLOCKED;
    }
    if (slot) {
        /* The call runs: it counts against every limit rule that looks at its kind. */
        pthread_mutex_lock(&c->comply_lock);
        if (slot->hash != h) {
            memset(slot, 0, sizeof *slot);
            slot->hash = h;
        }
        for (uint32_t i = 0; i < p->n_rules; i++) {
            const struct tt__comply_rule *r = &p->rules[i];
            if (r->match == TT_COMPLY_LIMIT && tt__comply_sees_kind(r, (int)kind)) {
                slot->calls[r->slot]++;
            }
        }
        pthread_mutex_unlock(&c->comply_lock);
    }
    if (action == TT_COMPLY_FLAG) {
        atomic_fetch_add_explicit(&cc->flagged, 1, memory_order_relaxed);
        log_decision(c, p, &v, step, (int)kind, session, name);
    }
    return rc;
}

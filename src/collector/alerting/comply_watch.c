/*
 * comply_watch.c - the collector's compliance checks (comply_watch.h, docs/compliance.md).
 *
 * INVARIANTS
 * - w->lock guards the queue, the agents' decisions seen, the record streams and the counters;
 *   w->pol_lock guards the policies. Neither is held across I/O; the rules run under pol_lock
 *   only (a policy replaced by a POST is freed under it, so never while in use).
 * - Queue entries are FIFO by commit time; the thread judges an entry once it is
 *   WATCH_GRACE_MS old, so an agent decision for the same step committed by then is known.
 * - The records the watch submits are batches of its own instance per agent (random per
 *   collector run, sequence from 1), under the identity that owns the agent: the store's
 *   ownership and deduplication apply to them as to any batch. watch_on_commit ignores them.
 */
#include "collector/alerting/comply_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collector/log.h"
#include "collector/source/source.h"
#include "common/batch.h"
#include "common/clock.h"
#include "common/pb.h"

#define DECIDED_SLOTS 8192 /* agent decisions remembered (instance x step) */
#define STREAMS_MAX 4096   /* agents the collector has written records for */

enum { PEND_STEP = 1, PEND_LOG = 2 };

/* One event waiting for the rules (one allocation: the strings follow it). */
struct pending {
    struct pending *next;
    int64_t due_ns; /* monotonic: judge it then */
    size_t bytes;   /* what it counts against WATCH_QUEUE_BYTES */
    int type;
    int kind; /* step kind */
    uint64_t step_id;
    int64_t time_ns; /* the event's time */
    uint8_t instance[16];
    char agent[256];
    char identity[IDENTITY_MAX];
    char *session, *name, *text; /* NUL-terminated, after the struct */
    size_t text_len;
};

struct decided {
    uint64_t key; /* 0: empty */
};

struct stream {
    char agent[256];
    uint64_t seq; /* the last one used */
};

struct agent_policy {
    char agent[256];
    struct tt__comply_policy *p;
};

struct watch {
    struct source src; /* the records' source (pipeline_attach fills it) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    pthread_t thread;
    int started;
    struct pending *head, *tail;
    size_t queued_bytes;
    struct decided decided[DECIDED_SLOTS];
    struct stream *streams;
    size_t n_streams;
    uint8_t run_id[16];
    uint64_t checked, unchecked, deferred, records, record_failed;
    atomic_int any_policy;
    pthread_mutex_t pol_lock;
    struct tt__comply_policy *global;
    struct agent_policy agents[WATCH_AGENT_POLICIES];
    int n_agents;
    watch_sink_fn sink; /* detached: where records go instead of the pipeline */
    void *sink_ctx;
};

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t decided_key(const uint8_t instance[16], uint64_t step_id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 16; i++) {
        h = (h ^ instance[i]) * 0x100000001b3ull;
    }
    return (h ^ step_id) * 0x9e3779b97f4a7c15ull | 1;
}

/* --- the policy file ---------------------------------------------------------------------- */

int watch_policy_load(const char *path, struct tt__comply_policy **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen, "%s: group or others may write it (chmod go-w %s)", path, path);
        close(fd);
        return -1;
    }
    if (st.st_uid != getuid() && st.st_uid != 0) {
        snprintf(err, errlen, "%s: owned by uid %u, neither this user nor root", path,
                 (unsigned)st.st_uid);
        close(fd);
        return -1;
    }
    if (st.st_size > (off_t)WATCH_POLICY_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %u bytes", path, WATCH_POLICY_FILE_MAX);
        close(fd);
        return -1;
    }
    char *buf = malloc(WATCH_POLICY_FILE_MAX + 1);
    struct tt__comply_policy *p = malloc(sizeof *p);
    size_t got = 0;
    ssize_t r = 1;
    while (buf && p && got <= WATCH_POLICY_FILE_MAX && r > 0) {
        r = read(fd, buf + got, WATCH_POLICY_FILE_MAX + 1 - got);
        got += r > 0 ? (size_t)r : 0;
    }
    close(fd);
    if (!buf || !p || r < 0 || got > WATCH_POLICY_FILE_MAX) {
        snprintf(err, errlen, "%s: %s", path,
                 !buf || !p ? "out of memory"
                 : r < 0    ? "cannot read"
                            : "grew past the limit");
        free(buf);
        free(p);
        return -1;
    }
    char e[256] = "";
    int rc = tt__comply_parse(p, buf, got, e, sizeof e);
    free(buf);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, e);
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

/* --- records: the collector's decisions as events of the agent ---------------------------- */

static void record_complete(struct source *src, struct store_item *it, enum source_result r,
                            const char *reason)
{
    struct watch *w = (struct watch *)src;
    (void)it;
    if (r != SOURCE_COMMITTED && r != SOURCE_DUPLICATE) {
        pthread_mutex_lock(&w->lock);
        w->record_failed++;
        pthread_mutex_unlock(&w->lock);
        log_warn("compliance: a decision of the collector was not stored (%s)",
                 reason ? reason : source_result_name(r));
    }
}

static const struct source_ops record_ops = {"comply", record_complete, NULL};

static uint8_t *put_str(uint8_t *q, uint32_t field, const char *s)
{
    return tt__pb_put_bytes(q, field, s, strlen(s));
}

/* Attr { key = 1, s = 2 } */
static uint8_t *put_attr(uint8_t *q, const char *key, const char *val)
{
    size_t kn = strlen(key), vn = strlen(val);
    size_t inner = tt__pb_len_field_size(kn) + tt__pb_len_field_size(vn);
    q = tt__pb_put_tag(q, 3, 2);
    q = tt__pb_put_varint(q, inner);
    q = tt__pb_put_bytes(q, 1, key, kn);
    return tt__pb_put_bytes(q, 2, val, vn);
}

static const char *const kind_names[] = {"",    "reasoning", "tool",      "api",
                                         "llm", "agent",     "retrieval", "other"};

/* Next sequence number of the agent's record stream (under w->lock); 0 when the table is
 * full. */
static uint64_t next_seq(struct watch *w, const char *agent)
{
    for (size_t i = 0; i < w->n_streams; i++) {
        if (strcmp(w->streams[i].agent, agent) == 0) {
            return ++w->streams[i].seq;
        }
    }
    if (w->n_streams == STREAMS_MAX) {
        return 0;
    }
    if (!w->streams) {
        w->streams = calloc(STREAMS_MAX, sizeof *w->streams);
        if (!w->streams) {
            return 0;
        }
    }
    struct stream *s = &w->streams[w->n_streams++];
    snprintf(s->agent, sizeof s->agent, "%s", agent);
    s->seq = 1;
    return 1;
}

/* The collector's decision about e as one batch of one log event. */
static void record(struct watch *w, const struct pending *e, const char *rule, int action,
                   const char *why)
{
    const char *verdict = action == TT_COMPLY_BLOCK ? "block" : "flag";
    char msg[512], id[24];
    if (e->type == PEND_STEP) {
        snprintf(msg, sizeof msg,
                 "compliance (collector): %s step %.96s ran although rule %s would %s it: %s",
                 kind_names[e->kind > 0 && e->kind < 8 ? e->kind : 0], e->name, rule,
                 action == TT_COMPLY_BLOCK ? "block" : "flag", why);
        snprintf(id, sizeof id, "%016llx", (unsigned long long)e->step_id);
    } else {
        snprintf(msg, sizeof msg, "compliance (collector): a log breaks rule %s: %s", rule, why);
        id[0] = 0;
    }
    const char *keys[] = {"comply.rule", "comply.verdict", "comply.why", "comply.by",
                          "step.id",     "step.kind",      "step.name"};
    const char *vals[] = {
        rule,
        verdict,
        why,
        "collector",
        id,
        e->type == PEND_STEP ? kind_names[e->kind > 0 && e->kind < 8 ? e->kind : 0] : "",
        e->type == PEND_STEP ? e->name : ""};
    size_t n_attrs = e->type == PEND_STEP ? 7 : 4; /* a log's decision names no step */
    size_t cap = 1024 + strlen(e->session) + strlen(msg);
    for (size_t i = 0; i < n_attrs; i++) {
        cap += strlen(keys[i]) + strlen(vals[i]) + 16;
    }
    uint8_t *logb = malloc(cap), *evb = malloc(cap + 64), *raw = malloc(cap + 128);
    struct store_item *it = calloc(1, sizeof *it);
    if (!logb || !evb || !raw || !it) {
        free(logb);
        free(evb);
        free(raw);
        free(it);
        pthread_mutex_lock(&w->lock);
        w->record_failed++;
        pthread_mutex_unlock(&w->lock);
        return;
    }
    /* Log { severity = 1, message = 2, attrs = 3 } */
    uint8_t *q = tt__pb_put_uint(logb, 1, action == TT_COMPLY_BLOCK ? 17 : 13);
    q = put_str(q, 2, msg);
    for (size_t i = 0; i < n_attrs; i++) {
        q = put_attr(q, keys[i], vals[i]);
    }
    size_t log_len = (size_t)(q - logb);
    /* Event { time_delta_ns = 1, session = 2, log = 3 } */
    q = tt__pb_put_sint(evb, 1, 0);
    q = put_str(q, 2, e->session);
    q = tt__pb_put_bytes(q, 3, logb, log_len);
    size_t ev_len = (size_t)(q - evb);
    free(logb);
    pthread_mutex_lock(&w->lock);
    uint64_t seq = next_seq(w, e->agent);
    pthread_mutex_unlock(&w->lock);
    /* The agent's record stream: the run's id with the agent's hash in its first half. */
    uint8_t inst[16];
    memcpy(inst, w->run_id, 16);
    uint64_t h = decided_key(w->run_id, 0);
    for (const char *s = e->agent; *s; s++) {
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    }
    for (int i = 0; i < 8; i++) {
        inst[i] ^= (uint8_t)(h >> (8 * i));
    }
    /* Batch { instance = 1, first_seq = 2, base_time_unix_ns = 3, events = 4 } */
    q = tt__pb_put_bytes(raw, 1, inst, 16);
    q = tt__pb_put_uint(q, 2, seq);
    q = tt__pb_put_fixed64(q, 3, (uint64_t)e->time_ns);
    q = tt__pb_put_bytes(q, 4, evb, ev_len);
    free(evb);
    it->raw = raw;
    it->raw_len = (size_t)(q - raw);
    it->received_ns = (uint64_t)wall_ns();
    snprintf(it->ident.agent, sizeof it->ident.agent, "%s", e->agent);
    snprintf(it->ident.identity, sizeof it->ident.identity, "%s", e->identity);
    memcpy(it->ident.instance, inst, 16);
    it->ident.pid = (uint32_t)getpid();
    snprintf(it->ident.host, sizeof it->ident.host, "collector");
    snprintf(it->ident.library, sizeof it->ident.library, "telltale-collector");
    const char *bad = NULL;
    tt__batch_limits lim = {1, 16};
    if (seq == 0 || tt__batch_parse(&it->batch, it->raw, it->raw_len, &lim, &bad) != 0) {
        store_item_free(it);
        pthread_mutex_lock(&w->lock);
        w->record_failed++;
        pthread_mutex_unlock(&w->lock);
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->records++;
    pthread_mutex_unlock(&w->lock);
    if (w->sink) {
        w->sink(w->sink_ctx, it);
    } else {
        source_submit(&w->src, it, NULL);
    }
}

/* --- the rules ---------------------------------------------------------------------------- */

static const struct tt__comply_policy *policy_for(struct watch *w, const char *agent)
{
    for (int i = 0; i < w->n_agents; i++) {
        if (strcmp(w->agents[i].agent, agent) == 0) {
            return w->agents[i].p;
        }
    }
    return w->global;
}

static int agent_decided(struct watch *w, const struct pending *e)
{
    uint64_t k = decided_key(e->instance, e->step_id);
    pthread_mutex_lock(&w->lock);
    int found = w->decided[k % DECIDED_SLOTS].key == k;
    pthread_mutex_unlock(&w->lock);
    return found;
}

/* Judge one entry (under pol_lock). */
static void judge(struct watch *w, const struct tt__comply_policy *p, const struct pending *e)
{
    if (e->type == PEND_STEP) {
        struct tt__comply_verdict v;
        if (tt__comply_step(p, e->kind, e->name, strlen(e->name), e->text, e->text_len, NULL, &v) ==
            0) {
            return;
        }
        if (agent_decided(w, e)) {
            pthread_mutex_lock(&w->lock);
            w->deferred++;
            pthread_mutex_unlock(&w->lock);
            return;
        }
        record(w, e, p->rules[v.rule].name, v.action, v.why);
        return;
    }
    /* A log: every pii rule looks at its message and string attributes. */
    int best = -1;
    struct tt__comply_find best_f = {0};
    for (uint32_t i = 0; i < p->n_rules; i++) {
        const struct tt__comply_rule *r = &p->rules[i];
        struct tt__comply_find f;
        if (r->match != TT_COMPLY_PII ||
            !tt__comply_pii_find(e->text, e->text_len, 0, r->what, &f)) {
            continue;
        }
        if (best < 0 || r->action > p->rules[best].action) {
            best = (int)i;
            best_f = f;
        }
    }
    if (best >= 0) {
        char why[160];
        snprintf(why, sizeof why, "%s in a log", tt__comply_pii_name(best_f.kind));
        record(w, e, p->rules[best].name, p->rules[best].action, why);
    }
}

/* Judge the entries due by now (called and returning with w->lock held; released while the
 * rules run). */
static void judge_due(struct watch *w, int64_t now)
{
    if (!w->head || w->head->due_ns > now) {
        return;
    }
    struct pending *due = w->head, *last = NULL;
    for (struct pending *e = w->head; e && e->due_ns <= now; e = e->next) {
        last = e;
        w->queued_bytes -= e->bytes;
        w->checked++;
    }
    w->head = last->next;
    if (!w->head) {
        w->tail = NULL;
    }
    last->next = NULL;
    pthread_mutex_unlock(&w->lock);
    pthread_mutex_lock(&w->pol_lock);
    for (struct pending *e = due; e; e = e->next) {
        const struct tt__comply_policy *p = policy_for(w, e->agent);
        if (p) {
            judge(w, p, e);
        }
    }
    pthread_mutex_unlock(&w->pol_lock);
    for (struct pending *e = due, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    pthread_mutex_lock(&w->lock);
}

void watch_judge_all(struct watch *w)
{
    pthread_mutex_lock(&w->lock);
    judge_due(w, INT64_MAX);
    pthread_mutex_unlock(&w->lock);
}

static void *watch_main(void *arg)
{
    struct watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        int64_t now = mono_ns();
        if (!w->head || w->head->due_ns > now) {
            int64_t wait_ms = w->head ? (w->head->due_ns - now) / 1000000 + 1 : 1000;
            struct timespec until = tt__deadline_ms(CLOCK_MONOTONIC, (uint64_t)wait_ms);
            pthread_cond_timedwait(&w->cond, &w->lock, &until);
            continue;
        }
        judge_due(w, now);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* --- the commit hook (loop thread) -------------------------------------------------------- */

static char *put_text(char *s, tt__bstr t)
{
    if (t.n) {
        memcpy(s, t.p, t.n);
    }
    return s + t.n;
}

/* One entry: text is a step's query or a log's message; a log's string attributes (attr_bytes
 * of them, with a separator each) follow it, one per line, so that a log is judged once. */
static void enqueue(struct watch *w, const struct store_item *it, int type, const tt__event *ev,
                    int kind, uint64_t step_id, tt__bstr name, tt__bstr text, size_t attr_bytes)
{
    size_t bytes = sizeof(struct pending) + ev->session.n + name.n + text.n + attr_bytes + 4;
    if (w->queued_bytes + bytes > WATCH_QUEUE_BYTES) {
        w->unchecked++;
        return;
    }
    struct pending *e = malloc(bytes);
    if (!e) {
        w->unchecked++;
        return;
    }
    memset(e, 0, sizeof *e);
    e->due_ns = mono_ns() + (int64_t)WATCH_GRACE_MS * 1000000;
    e->bytes = bytes;
    e->type = type;
    e->kind = kind;
    e->step_id = step_id;
    e->time_ns = ev->time;
    memcpy(e->instance, it->batch.instance, 16);
    snprintf(e->agent, sizeof e->agent, "%s", it->ident.agent);
    snprintf(e->identity, sizeof e->identity, "%s", it->ident.identity);
    char *s = (char *)(e + 1);
    e->session = s;
    s = put_text(s, ev->session);
    *s++ = 0;
    e->name = s;
    s = put_text(s, name);
    *s++ = 0;
    e->text = s;
    s = put_text(s, text);
    if (attr_bytes) {
        tt__attr_iter ai;
        tt__attr_val v;
        tt__attr_iter_init(&ai, ev->body, 3);
        while (tt__attr_next(&ai, &v)) {
            if (v.type == 1 /* TT_ATTR_STR */ && v.s.n) {
                *s++ = '\n';
                s = put_text(s, v.s);
            }
        }
    }
    e->text_len = (size_t)(s - e->text);
    *s = 0;
    e->next = NULL;
    if (w->tail) {
        w->tail->next = e;
    } else {
        w->head = e;
    }
    w->tail = e;
    w->queued_bytes += bytes;
}

static int bstr_is(tt__bstr s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static uint64_t hex16(tt__bstr s)
{
    uint64_t id = 0;
    for (size_t i = 0; i < s.n; i++) {
        int c = s.p[i], d = c >= '0' && c <= '9'   ? c - '0'
                            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                   : -1;
        if (d < 0) {
            return 0;
        }
        id = id << 4 | (uint64_t)d;
    }
    return id;
}

/* A log: an agent's decision (remembered: its step is then the agent's call), or text for the
 * pii rules (the message and its string attributes, the first of them joined to it). */
static void on_log(struct watch *w, const struct store_item *it, const tt__event *ev)
{
    tt__ev_log lg;
    if (tt__ev_log_decode(ev->body, &lg) != 0) {
        return;
    }
    tt__attr_iter ai;
    tt__attr_val v;
    tt__attr_iter_init(&ai, ev->body, 3);
    int decision = 0;
    uint64_t step = 0;
    size_t attr_bytes = 0;
    while (tt__attr_next(&ai, &v)) {
        if (v.type != 1 /* TT_ATTR_STR */) {
            continue;
        }
        if (bstr_is(v.key, "comply.verdict")) {
            decision = 1;
        } else if (bstr_is(v.key, "step.id") && v.s.n == 16) {
            step = hex16(v.s);
        }
        attr_bytes += v.s.n ? v.s.n + 1 : 0;
    }
    if (decision) {
        if (step) {
            w->decided[decided_key(it->batch.instance, step) % DECIDED_SLOTS].key =
                decided_key(it->batch.instance, step);
        }
        return;
    }
    tt__bstr none = {NULL, 0};
    enqueue(w, it, PEND_LOG, ev, 0, 0, none, lg.message, attr_bytes);
}

void watch_on_commit(struct watch *w, const struct store_item *it)
{
    if (!w || it->source == &w->src ||
        !atomic_load_explicit(&w->any_policy, memory_order_relaxed)) {
        return;
    }
    if (!(it->batch.kinds & ((1u << TT_EV_STEP_BEGIN) | (1u << TT_EV_LOG)))) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    int was_empty = w->head == NULL;
    tt__batch b = it->batch;
    tt__event ev;
    while (tt__batch_next(&b, &ev)) {
        if (ev.kind == TT_EV_STEP_BEGIN) {
            tt__ev_step_begin sb;
            if (tt__ev_step_begin_decode(ev.body, &sb) == 0) {
                enqueue(w, it, PEND_STEP, &ev, (int)sb.kind, sb.step_id, sb.name, sb.query, 0);
            }
        } else if (ev.kind == TT_EV_LOG) {
            on_log(w, it, &ev);
        }
    }
    if (was_empty && w->head) {
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
}

/* --- life --------------------------------------------------------------------------------- */

static struct watch *watch_new(struct tt__comply_policy *global, char *err, size_t errlen)
{
    struct watch *w = calloc(1, sizeof *w);
    if (!w) {
        free(global);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->global = global;
    atomic_init(&w->any_policy, global != NULL);
    if (getrandom(w->run_id, sizeof w->run_id, 0) != (ssize_t)sizeof w->run_id) {
        snprintf(err, errlen, "getrandom: %s", strerror(errno));
        free(global);
        free(w);
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->pol_lock, NULL);
    tt__cond_init_mono(&w->cond);
    return w;
}

int watch_open_detached(struct watch **out, struct tt__comply_policy *global, watch_sink_fn sink,
                        void *ctx)
{
    char err[128];
    *out = watch_new(global, err, sizeof err);
    if (!*out) {
        return -1;
    }
    (*out)->sink = sink;
    (*out)->sink_ctx = ctx;
    return 0;
}

int watch_open(struct watch **out, struct pipeline *pl, struct tt__comply_policy *global, char *err,
               size_t errlen)
{
    *out = NULL;
    struct watch *w = watch_new(global, err, errlen);
    if (!w) {
        return -1;
    }
    if (pipeline_attach(pl, &w->src, &record_ops) != 0) {
        snprintf(err, errlen, "no room for the compliance source");
        watch_free(w);
        return -1;
    }
    w->started = pthread_create(&w->thread, NULL, watch_main, w) == 0;
    if (!w->started) {
        snprintf(err, errlen, "cannot start the compliance thread");
        watch_free(w);
        return -1;
    }
    *out = w;
    return 0;
}

void watch_stop(struct watch *w)
{
    if (!w || !w->started) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    w->started = 0;
}

void watch_free(struct watch *w)
{
    if (!w) {
        return;
    }
    watch_stop(w);
    for (struct pending *e = w->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    for (int i = 0; i < w->n_agents; i++) {
        free(w->agents[i].p);
    }
    free(w->global);
    free(w->streams);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->pol_lock);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int watch_set_agent_policy(struct watch *w, const char *agent, const char *text, size_t len)
{
    if (!w) {
        return 0;
    }
    struct tt__comply_policy *p = NULL;
    if (len) {
        p = malloc(sizeof *p);
        char e[256];
        if (!p) {
            return -ENOMEM;
        }
        if (tt__comply_parse(p, text, len, e, sizeof e) != 0) {
            free(p);
            return -EINVAL;
        }
    }
    pthread_mutex_lock(&w->pol_lock);
    int i = 0;
    while (i < w->n_agents && strcmp(w->agents[i].agent, agent) != 0) {
        i++;
    }
    if (i == w->n_agents && p && w->n_agents == WATCH_AGENT_POLICIES) {
        pthread_mutex_unlock(&w->pol_lock);
        free(p);
        return -ENOSPC;
    }
    if (i < w->n_agents) {
        free(w->agents[i].p);
        if (p) {
            w->agents[i].p = p;
        } else {
            w->agents[i] = w->agents[--w->n_agents];
        }
    } else if (p) {
        snprintf(w->agents[i].agent, sizeof w->agents[i].agent, "%s", agent);
        w->agents[i].p = p;
        w->n_agents++;
    }
    atomic_store_explicit(&w->any_policy, w->global || w->n_agents, memory_order_relaxed);
    pthread_mutex_unlock(&w->pol_lock);
    return 0;
}

void watch_metrics(struct watch *w, tt__buf *b)
{
    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    tt__buf_printf(b,
                   "# HELP telltale_comply_checked_total Events the collector's compliance rules "
                   "looked at.\n# TYPE telltale_comply_checked_total counter\n"
                   "telltale_comply_checked_total %llu\n"
                   "# HELP telltale_comply_unchecked_total Events left unchecked: the queue was "
                   "full.\n# TYPE telltale_comply_unchecked_total counter\n"
                   "telltale_comply_unchecked_total %llu\n"
                   "# HELP telltale_comply_deferred_total Collector verdicts dropped because the "
                   "agent decided about the step itself.\n"
                   "# TYPE telltale_comply_deferred_total counter\n"
                   "telltale_comply_deferred_total %llu\n"
                   "# HELP telltale_comply_decisions_total Decisions the collector recorded.\n"
                   "# TYPE telltale_comply_decisions_total counter\n"
                   "telltale_comply_decisions_total %llu\n"
                   "# HELP telltale_comply_decisions_failed_total Decisions the collector could "
                   "not store.\n# TYPE telltale_comply_decisions_failed_total counter\n"
                   "telltale_comply_decisions_failed_total %llu\n",
                   (unsigned long long)w->checked, (unsigned long long)w->unchecked,
                   (unsigned long long)w->deferred, (unsigned long long)w->records,
                   (unsigned long long)w->record_failed);
    pthread_mutex_unlock(&w->lock);
}

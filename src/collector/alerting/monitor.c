/*
 * monitor.c - per-agent live figures and the detector units that watch them (monitor.h).
 *
 * INVARIANTS
 * - monitor.lock guards the agent table and every agent's state and unit states. It is taken
 *   once per committed batch (ingest thread), once per tick (timer thread) and per view (HTTP
 *   threads); nothing does I/O under it: raising an alert only queues it (alerts_raise).
 * - An agent's unit states are zeroed when it first appears; that is a unit's fresh state.
 * - The table holds at most MON_AGENTS_MAX agents; batches of further agents are stored as
 *   usual but not watched (counted in untracked).
 * - Incidents: a condition (unit x agent x key) has at most one incident, held by its agent
 *   (at most MON_INCIDENTS per agent). A raise opens it (event firing) or repeats it (count,
 *   last value, last seen; an "updated" notice at most every cooldown); the tick resolves it
 *   once the condition has been clear for the unit's resolve time, and keeps the resolved
 *   incident for the flap time: a condition back within it reopens the same incident (firing,
 *   flaps + 1) instead of paging anew. Every event goes to alerts_raise (store, stream,
 *   webhooks, Alertmanager).
 */
#include "collector/alerting/monitor.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/alerting/alerts.h"
#include "collector/log.h"
#include "common/clock.h"

#define WINDOW_S 10
#define MAX_INSTANCES 8
#define OPEN_TOOLS 64
#define TABLE_SLOTS (MON_AGENTS_MAX * 2)

static const double conf_bounds[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1};
#define CONF_B (sizeof conf_bounds / sizeof conf_bounds[0])
static const double lat_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define LAT_B (sizeof lat_bounds / sizeof lat_bounds[0])

struct win_bucket {
    int64_t sec;
    uint32_t events, responses, tools;
    uint32_t conf_n;
    double conf_sum;
};

struct inst_state {
    uint8_t id[16];
    int used;
    uint64_t base; /* sequence numbers at or below it came before this collector saw the
                        * instance (lowered when older batches arrive, e.g. from a spool) */
    uint64_t max_seq;
    uint64_t received; /* events committed above base (batches never overlap: the store
                        * refuses an overlap) */
    uint64_t gaps;     /* max_seq - base - received: what this instance adds to loss_gaps */
    uint64_t reported; /* the library's drop total at its last report */
};

#define MON_INCIDENTS 16

/* One incident of an agent (heap, owned by its agent; freed by the tick after the flap time). */
struct incident {
    int unit;
    int resolved;
    int pending;         /* repeats not notified yet */
    int64_t notified_ns; /* the last notice (firing or updated) */
    struct alert al;     /* its current state */
};

struct mon_agent {
    char name[256];
    int64_t last_seen_ns;
    uint64_t events, responses, tool_calls, tool_errors, loss_gaps, loss_reported, alerts;
    uint64_t unchecked; /* signals not fed to the units: over the detectors' budget */
    double conf_last;
    struct inst_state inst[MAX_INSTANCES];
    unsigned inst_next;
    uint64_t open_tools[OPEN_TOOLS]; /* keys of tool steps begun and not ended */
    unsigned ot_next;
    struct win_bucket win[WINDOW_S];
    uint64_t conf_hist[CONF_B + 1], lat_hist[LAT_B + 1];
    double conf_sum, lat_sum;
    uint64_t alerts_by_unit[MON_UNITS_MAX];
    struct incident *inc[MON_INCIDENTS];
    max_align_t *ustate;
};

struct monitor {
    struct mon_config cfg;
    size_t ustate_size;
    struct alerts *alerts;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* stop */
    int stop;
    pthread_t timer;
    int timer_started;
    struct mon_agent *slots[TABLE_SLOTS];
    struct mon_agent *agents[MON_AGENTS_MAX];
    size_t n_agents;
    uint64_t untracked;
    uint64_t over_budget;     /* batches whose detectors ran out of their time budget */
    uint64_t unchecked;       /* signals those batches did not feed to the units */
    int64_t over_logged_ns;   /* monotonic time of the last log line about it */
    uint64_t unchecked_since; /* signals skipped since that line */
    uint64_t inc_events[3];   /* notices by enum incident_event */
    uint64_t inc_unplaced;    /* raises with no incident slot free */
    int following;            /* another collector leads: notices are held, not sent */
    uint64_t inc_held;        /* notices held while following */
    int watch_metrics;        /* some unit watches a metric or a score */
    int watch_decisions;      /* some unit watches compliance decisions (type comply) */
};

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    }
    return h;
}

static struct mon_agent *agent_find(struct monitor *m, const char *name, int create)
{
    size_t i = hash_name(name) % TABLE_SLOTS;
    for (; m->slots[i]; i = (i + 1) % TABLE_SLOTS) {
        if (strcmp(m->slots[i]->name, name) == 0) {
            return m->slots[i];
        }
    }
    if (!create || m->n_agents == MON_AGENTS_MAX) {
        m->untracked += create;
        return NULL;
    }
    struct mon_agent *a = calloc(1, sizeof *a);
    max_align_t *st = calloc(1, m->ustate_size ? m->ustate_size : 1);
    if (!a || !st) {
        free(a);
        free(st);
        return NULL;
    }
    snprintf(a->name, sizeof a->name, "%s", name);
    a->conf_last = NAN;
    a->ustate = st;
    m->slots[i] = a;
    m->agents[m->n_agents++] = a;
    return a;
}

static struct win_bucket *bucket(struct mon_agent *a, int64_t sec)
{
    struct win_bucket *b = &a->win[sec % WINDOW_S];
    if (b->sec != sec) {
        memset(b, 0, sizeof *b);
        b->sec = sec;
    }
    return b;
}

static void notify(struct monitor *m, struct incident *in, int event, int64_t now)
{
    in->al.event = event;
    if (event != INC_RESOLVED) {
        in->notified_ns = now;
        in->pending = 0;
    }
    if (m->following) {
        m->inc_held++; /* the leader, watching the same stream, sends it */
        return;
    }
    m->inc_events[event]++;
    alerts_raise(m->alerts, &in->al);
}

static struct incident *incident_find(struct mon_agent *a, int ui, const char *key)
{
    for (int i = 0; i < MON_INCIDENTS; i++) {
        if (a->inc[i] && a->inc[i]->unit == ui && strcmp(a->inc[i]->al.key, key) == 0) {
            return a->inc[i];
        }
    }
    return NULL;
}

/* A free slot, or the one of the oldest resolved incident; -1 when all are firing. */
static int incident_slot(struct mon_agent *a)
{
    int best = -1;
    for (int i = 0; i < MON_INCIDENTS; i++) {
        if (!a->inc[i]) {
            return i;
        }
        if (a->inc[i]->resolved &&
            (best < 0 || a->inc[i]->al.resolved_ns < a->inc[best]->al.resolved_ns)) {
            best = i;
        }
    }
    return best;
}

static void raise_alert(struct monitor *m, struct mon_agent *a, int ui, struct alert *al,
                        tt__bstr session)
{
    const struct unit *u = &m->cfg.units[ui];
    int64_t now = wall_ns();
    struct incident *in = incident_find(a, ui, al->key);
    if (!in) {
        int k = incident_slot(a);
        struct incident *fresh =
            k >= 0 ? (a->inc[k] && a->inc[k]->resolved ? a->inc[k] : calloc(1, sizeof *fresh))
                   : NULL;
        if (!fresh) {
            m->inc_unplaced++;
            return;
        }
        memset(fresh, 0, sizeof *fresh);
        a->inc[k] = fresh;
        in = fresh;
        in->unit = ui;
        in->al.id = alerts_next_id(m->alerts);
        in->al.time_ns = now;
        snprintf(in->al.agent, sizeof in->al.agent, "%s", a->name);
        snprintf(in->al.detector, sizeof in->al.detector, "%s", u->name);
        snprintf(in->al.type, sizeof in->al.type, "%s", u->ops->type);
        snprintf(in->al.severity, sizeof in->al.severity, "%s",
                 al->severity[0] ? al->severity : u->severity);
        snprintf(in->al.key, sizeof in->al.key, "%s", al->key);
        a->alerts++;
        a->alerts_by_unit[ui]++;
    }
    /* The latest repeat's content; the incident's identity and history stay. */
    in->al.count++;
    in->al.last_ns = now;
    in->al.value = al->value;
    in->al.threshold = al->threshold;
    in->al.example_id = al->example_id;
    in->al.example_is_response = al->example_is_response;
    snprintf(in->al.unit, sizeof in->al.unit, "%s", al->unit);
    snprintf(in->al.message, sizeof in->al.message, "agent %.255s: %.750s", a->name, al->message);
    size_t n = session.n < sizeof in->al.session - 1 ? session.n : sizeof in->al.session - 1;
    if (n) {
        memcpy(in->al.session, session.p, n);
        in->al.session[n] = 0;
    }
    if (in->al.count == 1) {
        notify(m, in, INC_FIRING, now);
    } else if (in->resolved) {
        in->resolved = 0; /* back within the flap time: the same incident fires again */
        in->al.resolved_ns = 0;
        in->al.flaps++;
        notify(m, in, INC_FIRING, now);
    } else if (now - in->notified_ns >= u->cooldown_ns) {
        notify(m, in, INC_UPDATED, now);
    } else {
        in->pending = 1;
    }
}

/* Resolve what has been clear long enough, send held-back updates, forget old incidents. */
static void incidents_tick(struct monitor *m, struct mon_agent *a, int64_t now)
{
    for (int i = 0; i < MON_INCIDENTS; i++) {
        struct incident *in = a->inc[i];
        if (!in) {
            continue;
        }
        const struct unit *u = &m->cfg.units[in->unit];
        if (in->resolved) {
            if (now - in->al.resolved_ns >= u->flap_ns) {
                free(in);
                a->inc[i] = NULL;
            }
            continue;
        }
        if (u->ops->active &&
            u->ops->active(u, (char *)a->ustate + u->state_off, a->last_seen_ns)) {
            in->al.last_ns = now;
        }
        if (now - in->al.last_ns >= u->resolve_ns) {
            in->resolved = 1;
            in->al.resolved_ns = now;
            notify(m, in, INC_RESOLVED, now);
        } else if (in->pending && now - in->notified_ns >= u->cooldown_ns) {
            notify(m, in, INC_UPDATED, now);
        }
    }
}

static void feed(struct monitor *m, struct mon_agent *a, const struct mon_signal *s)
{
    for (int i = 0; i < m->cfg.n_units; i++) {
        const struct unit *u = &m->cfg.units[i];
        struct alert al;
        memset(&al, 0, sizeof al);
        void *st = (char *)a->ustate + u->state_off;
        if (u->ops->feed(u, st, s, &al) == 1) {
            raise_alert(m, a, i, &al, s->session);
        }
    }
}

static void hist_add(uint64_t *hist, const double *bounds, size_t nb, double v)
{
    size_t i = 0;
    while (i < nb && v > bounds[i]) {
        i++;
    }
    hist[i]++;
}

static uint64_t tool_key(const uint8_t inst[16], uint64_t step_id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 16; i++) {
        h = (h ^ inst[i]) * 0x100000001b3ull;
    }
    return (h ^ step_id) * 0x9e3779b97f4a7c15ull | 1;
}

static void on_response_end(struct monitor *m, struct mon_agent *a, const tt__event *ev,
                            int64_t sec)
{
    tt__ev_response_end re;
    if (tt__ev_response_end_decode(ev->body, &re) != 0) {
        return;
    }
    a->responses++;
    struct win_bucket *b = bucket(a, sec);
    b->responses++;
    if (!isfinite(re.mean_logprob)) {
        return; /* no confidence known (an OTLP span's response): counted, not a sample */
    }
    double c = exp((double)re.mean_logprob);
    c = c > 1 ? 1 : c;
    a->conf_last = c;
    a->conf_sum += c;
    hist_add(a->conf_hist, conf_bounds, CONF_B, c);
    b->conf_n++;
    b->conf_sum += c;
    struct mon_signal s = {.type = SIG_CONFIDENCE,
                           .time_ns = ev->time,
                           .value = c,
                           .session = ev->session,
                           .id = re.response_id};
    feed(m, a, &s);
}

static void on_step_begin(struct monitor *m, struct mon_agent *a, const uint8_t inst[16],
                          const tt__event *ev, int64_t sec)
{
    tt__ev_step_begin sb;
    /* Every external-call kind counts ([calls] kinds: tool, api, retrieval by default). */
    if (tt__ev_step_begin_decode(ev->body, &sb) != 0 || sb.kind >= 32 ||
        !(m->cfg.call_kinds & (1u << sb.kind))) {
        return;
    }
    a->open_tools[a->ot_next++ % OPEN_TOOLS] = tool_key(inst, sb.step_id);
    a->tool_calls++;
    bucket(a, sec)->tools++;
    struct mon_signal s = {.type = SIG_TOOL_BEGIN,
                           .time_ns = ev->time,
                           .name = sb.name,
                           .query = sb.query,
                           .session = ev->session,
                           .id = sb.step_id};
    feed(m, a, &s);
}

static void on_step_end(struct monitor *m, struct mon_agent *a, const uint8_t inst[16],
                        const tt__event *ev)
{
    tt__ev_step_end se;
    if (tt__ev_step_end_decode(ev->body, &se) != 0) {
        return;
    }
    uint64_t k = tool_key(inst, se.step_id);
    int found = 0;
    for (int i = 0; i < OPEN_TOOLS && !found; i++) {
        if (a->open_tools[i] == k) {
            a->open_tools[i] = 0;
            found = 1;
        }
    }
    if (!found) {
        return; /* not a tool step (or begun long ago) */
    }
    double lat = (double)se.duration_ns / 1e9;
    a->tool_errors += se.status != 0;
    a->lat_sum += lat;
    hist_add(a->lat_hist, lat_bounds, LAT_B, lat);
    struct mon_signal s = {.type = SIG_TOOL_END,
                           .time_ns = ev->time,
                           .value = lat,
                           .error = se.status != 0,
                           .name = se.name, /* from clients since 0.2; empty before */
                           .session = ev->session,
                           .id = se.step_id};
    feed(m, a, &s);
}

/* 16 hex digits as a response id; 0 if they are not. */
static uint64_t hex_id(tt__bstr s)
{
    uint64_t id = 0;
    for (size_t i = 0; i < s.n; i++) {
        int c = s.p[i], d = c >= '0' && c <= '9'   ? c - '0'
                            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                   : -1;
        if (d < 0) {
            return 0;
        }
        id = id << 4 | (uint64_t)d;
    }
    return id;
}

/* A metric sample (SIG_METRIC), or a response's named score (metric kind 4, SIG_SCORE, with
 * the response in its response_id attribute). */
static void on_metric(struct monitor *m, struct mon_agent *a, const tt__event *ev)
{
    tt__ev_metric me;
    /* Non-finite samples go to the units too: the nonfinite unit reports them, the others
     * skip them. */
    if (tt__ev_metric_decode(ev->body, &me) != 0 || me.name.n == 0) {
        return;
    }
    struct mon_signal s = {.type = me.kind == MON_METRIC_SCORE ? SIG_SCORE : SIG_METRIC,
                           .time_ns = ev->time,
                           .value = me.value,
                           .name = me.name,
                           .query = me.unit,
                           .session = ev->session};
    if (s.type == SIG_SCORE) {
        tt__attr_iter it;
        tt__attr_val v;
        tt__attr_iter_init(&it, ev->body, 5);
        while (tt__attr_next(&it, &v)) {
            if (v.key.n == 11 && memcmp(v.key.p, "response_id", 11) == 0 &&
                v.type == 1 /* TT_ATTR_STR */ && v.s.n == 16) {
                s.id = hex_id(v.s);
            }
        }
    }
    feed(m, a, &s);
}

static int bstr_is(tt__bstr s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* A compliance decision: a log of severity warn or above carrying comply.verdict (the agent's,
 * policy.c, or the collector's, comply_watch.c, with comply.by = collector). */
static void on_log(struct monitor *m, struct mon_agent *a, const tt__event *ev)
{
    tt__ev_log lg;
    if (tt__ev_log_decode(ev->body, &lg) != 0 || lg.severity < 13) {
        return;
    }
    struct mon_signal s = {.type = SIG_DECISION, .time_ns = ev->time, .session = ev->session};
    tt__attr_iter it;
    tt__attr_val v;
    tt__attr_iter_init(&it, ev->body, 3);
    while (tt__attr_next(&it, &v)) {
        if (v.type != 1 /* TT_ATTR_STR */ || v.key.n < 7) {
            continue;
        }
        if (bstr_is(v.key, "comply.verdict")) {
            s.value = bstr_is(v.s, "block") ? 2 : bstr_is(v.s, "flag") ? 1 : 0;
        } else if (bstr_is(v.key, "comply.rule")) {
            s.name = v.s;
        } else if (bstr_is(v.key, "comply.why")) {
            s.query = v.s;
        } else if (bstr_is(v.key, "comply.by")) {
            s.error = bstr_is(v.s, "collector");
        } else if (bstr_is(v.key, "step.id") && v.s.n == 16) {
            s.id = hex_id(v.s);
        } else if (bstr_is(v.key, "step.name")) {
            s.step = v.s;
        }
    }
    if (s.value > 0 && s.name.n) {
        feed(m, a, &s);
    }
}

static struct inst_state *instance(struct mon_agent *a, const uint8_t id[16], int *fresh)
{
    for (int i = 0; i < MAX_INSTANCES; i++) {
        if (a->inst[i].used && memcmp(a->inst[i].id, id, 16) == 0) {
            *fresh = 0;
            return &a->inst[i];
        }
    }
    struct inst_state *s = &a->inst[a->inst_next++ % MAX_INSTANCES];
    memset(s, 0, sizeof *s);
    memcpy(s->id, id, 16);
    s->used = 1;
    *fresh = 1;
    return s;
}

static void track_stats(struct mon_agent *a, struct inst_state *in, const tt__batch *b);

/* Sequence numbers and the library's own drop counters. */
static void track_loss(struct monitor *m, struct mon_agent *a, const tt__batch *b)
{
    int fresh;
    struct inst_state *in = instance(a, b->instance, &fresh);
    /* An instance first seen here (a new agent, or a restarted collector) sets the baseline:
     * what came before it is not ours to judge. Gaps are the numbers between the baseline and
     * the highest committed that were never committed, so a late batch that fills a gap (a
     * spool replayed after live traffic) takes its events back out, and the live count agrees
     * with the store's proven loss for every instance seen from its start. */
    uint64_t last = b->first_seq + (b->n_events ? b->n_events - 1 : 0);
    uint64_t below = b->first_seq ? b->first_seq - 1 : 0;
    if (b->n_events == 0) {
        track_stats(a, in, b);
        return;
    }
    if (fresh) {
        in->base = below;
        in->max_seq = in->base;
    }
    if (b->first_seq > in->max_seq + 1) {
        uint64_t lost = b->first_seq - in->max_seq - 1;
        struct mon_signal s = {.type = SIG_GAP,
                               .time_ns = b->t_min,
                               .value = (double)lost,
                               .id = in->max_seq + 1,
                               .n = lost};
        feed(m, a, &s);
    }
    if (below < in->base) {
        in->base = below; /* older than anything seen: below the baseline */
    }
    in->max_seq = last > in->max_seq ? last : in->max_seq;
    in->received += b->n_events;
    uint64_t span = in->max_seq - in->base;
    uint64_t gaps = span > in->received ? span - in->received : 0;
    a->loss_gaps = a->loss_gaps + gaps - in->gaps;
    in->gaps = gaps;
    track_stats(a, in, b);
}

static void track_stats(struct mon_agent *a, struct inst_state *in, const tt__batch *b)
{
    if (b->has_stats) {
        uint64_t total = 0;
        for (uint32_t i = 0; i < b->stats.n_dropped && i < TT_DROP_SLOTS; i++) {
            total += b->stats.dropped[i];
        }
        if (total > in->reported) {
            a->loss_reported += total - in->reported;
            in->reported = total;
        }
    }
}

void monitor_on_commit(void *ctx, const struct store_item *it)
{
    struct monitor *m = ctx;
    int64_t sec = it->received_ns / 1000000000;
    pthread_mutex_lock(&m->lock);
    struct mon_agent *a = agent_find(m, it->ident.agent, 1);
    if (!a) {
        pthread_mutex_unlock(&m->lock);
        return;
    }
    /* A batch of only the library's statistics is a heartbeat, not an event: it does not end
     * a silence. */
    if (it->batch.n_events) {
        a->last_seen_ns = (int64_t)it->received_ns;
    }
    a->events += it->batch.n_events;
    bucket(a, sec)->events += it->batch.n_events;
    track_loss(m, a, &it->batch);
    uint32_t wanted = (1u << TT_EV_RESPONSE_END) | (1u << TT_EV_STEP_BEGIN) |
                      (1u << TT_EV_STEP_END) | (1u << TT_EV_METRIC) |
                      (m->watch_decisions ? 1u << TT_EV_LOG : 0);
    int64_t log_over = 0;
    if (it->batch.kinds & wanted) {
        /* The budget: batch_ms plus signal_us per event, checked every 16 signals. */
        int64_t t0 = (int64_t)tt__mono_ns();
        int64_t budget = (int64_t)m->cfg.budget_batch_ms * 1000000 +
                         (int64_t)m->cfg.budget_signal_us * 1000 * (int64_t)it->batch.n_events;
        uint64_t signals = 0, skipped = 0;
        tt__batch b = it->batch;
        tt__event ev;
        while (tt__batch_next(&b, &ev)) {
            if (!(wanted & (1u << ev.kind))) {
                continue;
            }
            if (skipped || (++signals % 16 == 0 && (int64_t)tt__mono_ns() - t0 > budget)) {
                skipped++;
                continue;
            }
            if (ev.kind == TT_EV_RESPONSE_END) {
                on_response_end(m, a, &ev, sec);
            } else if (ev.kind == TT_EV_STEP_BEGIN) {
                on_step_begin(m, a, it->batch.instance, &ev, sec);
            } else if (ev.kind == TT_EV_STEP_END) {
                on_step_end(m, a, it->batch.instance, &ev);
            } else if (ev.kind == TT_EV_METRIC && m->watch_metrics) {
                on_metric(m, a, &ev);
            } else if (ev.kind == TT_EV_LOG && m->watch_decisions) {
                on_log(m, a, &ev);
            }
        }
        if (skipped) {
            m->over_budget++;
            m->unchecked += skipped;
            m->unchecked_since += skipped;
            a->unchecked += skipped;
            int64_t now = (int64_t)tt__mono_ns();
            if (!m->over_logged_ns || now - m->over_logged_ns >= 60 * (int64_t)1000000000) {
                m->over_logged_ns = now;
                log_over = (int64_t)m->unchecked_since;
                m->unchecked_since = 0;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (log_over) {
        /* No agent name here: it is telemetry content (the API and /metrics say which). */
        log_warn(
            "detectors: over their time budget ([monitor] batch_budget_ms = %u, "
            "signal_budget_us = %u): %lld signals not checked since the last such line "
            "(telltale_detector_unchecked_total in /metrics, signals_unchecked in /api/v1/agents)",
            m->cfg.budget_batch_ms, m->cfg.budget_signal_us, (long long)log_over);
    }
}

static void tick(struct monitor *m)
{
    int64_t now = wall_ns();
    tt__bstr none = {NULL, 0};
    pthread_mutex_lock(&m->lock);
    for (size_t k = 0; k < m->n_agents; k++) {
        struct mon_agent *a = m->agents[k];
        for (int i = 0; i < m->cfg.n_units; i++) {
            const struct unit *u = &m->cfg.units[i];
            struct alert al;
            memset(&al, 0, sizeof al);
            if (u->ops->tick &&
                u->ops->tick(u, (char *)a->ustate + u->state_off, now, a->last_seen_ns, &al) == 1) {
                raise_alert(m, a, i, &al, none);
            }
        }
        incidents_tick(m, a, now);
    }
    pthread_mutex_unlock(&m->lock);
}

static void *timer_main(void *arg)
{
    struct monitor *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stop) {
        struct timespec until = tt__deadline_ms(CLOCK_MONOTONIC, MON_TICK_MS);
        while (!m->stop && pthread_cond_timedwait(&m->cond, &m->lock, &until) == 0) {
        }
        if (m->stop) {
            break;
        }
        pthread_mutex_unlock(&m->lock);
        tick(m);
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int monitor_open(struct monitor **out, const struct mon_config *cfg, struct alerts *alerts,
                 char *err, size_t errlen)
{
    *out = NULL;
    struct monitor *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->cfg = *cfg;
    m->alerts = alerts;
    int need_timer = 0;
    for (int i = 0; i < m->cfg.n_units; i++) {
        struct unit *u = &m->cfg.units[i];
        u->state_off = m->ustate_size;
        m->ustate_size +=
            (u->state_size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    }
    need_timer = m->cfg.n_units > 0; /* incidents resolve on the tick */
    for (int i = 0; i < m->cfg.n_units; i++) {
        const struct unit *u = &m->cfg.units[i];
        int sig = !strcmp(u->ops->type, "drift")       ? u->cfg.drift.signal
                  : !strcmp(u->ops->type, "threshold") ? u->cfg.threshold.signal
                  : !strcmp(u->ops->type, "spike")     ? u->cfg.spike.signal
                  : !strcmp(u->ops->type, "nonfinite") ? u->cfg.nonfinite.signal
                                                       : -1;
        m->watch_metrics |= sig == DRIFT_METRIC || sig == DRIFT_SCORE;
        m->watch_decisions |= !strcmp(u->ops->type, "comply");
    }
    pthread_mutex_init(&m->lock, NULL);
    tt__cond_init_mono(&m->cond);
    if (need_timer) {
        m->timer_started = pthread_create(&m->timer, NULL, timer_main, m) == 0;
        if (!m->timer_started) {
            snprintf(err, errlen, "cannot start the monitor's timer");
            monitor_close(m);
            return -1;
        }
    }
    *out = m;
    return 0;
}

void monitor_close(struct monitor *m)
{
    if (!m) {
        return;
    }
    pthread_mutex_lock(&m->lock);
    m->stop = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    if (m->timer_started) {
        pthread_join(m->timer, NULL);
    }
    for (size_t i = 0; i < m->n_agents; i++) {
        for (int k = 0; k < MON_INCIDENTS; k++) {
            free(m->agents[i]->inc[k]);
        }
        free(m->agents[i]->ustate);
        free(m->agents[i]);
    }
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* --- several collectors: following and leading --------------------------------------------- */

void monitor_follow(struct monitor *m)
{
    pthread_mutex_lock(&m->lock);
    m->following = 1;
    pthread_mutex_unlock(&m->lock);
}

int monitor_leading(struct monitor *m)
{
    pthread_mutex_lock(&m->lock);
    int leading = !m->following;
    pthread_mutex_unlock(&m->lock);
    return leading;
}

int monitor_incidents(struct monitor *m, struct mon_incident_ref **out)
{
    *out = NULL;
    pthread_mutex_lock(&m->lock);
    size_t n = 0;
    for (size_t i = 0; i < m->n_agents; i++) {
        for (int k = 0; k < MON_INCIDENTS; k++) {
            n += m->agents[i]->inc[k] != NULL;
        }
    }
    struct mon_incident_ref *r = n ? calloc(n, sizeof *r) : NULL;
    if (n && !r) {
        pthread_mutex_unlock(&m->lock);
        return -1;
    }
    size_t j = 0;
    for (size_t i = 0; i < m->n_agents; i++) {
        for (int k = 0; k < MON_INCIDENTS; k++) {
            const struct incident *in = m->agents[i]->inc[k];
            if (in) {
                snprintf(r[j].agent, sizeof r[j].agent, "%s", in->al.agent);
                snprintf(r[j].detector, sizeof r[j].detector, "%s", in->al.detector);
                snprintf(r[j].key, sizeof r[j].key, "%s", in->al.key);
                r[j].id = in->al.id;
                r[j].resolved = in->resolved;
                j++;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    *out = r;
    return (int)j;
}

static int ref_cmp(const void *a, const void *b)
{
    int64_t x = ((const struct mon_incident_ref *)a)->id;
    int64_t y = ((const struct mon_incident_ref *)b)->id;
    return (x > y) - (x < y);
}

void monitor_lead(struct monitor *m, struct mon_incident_ref *refs, int n)
{
    if (n > 0) {
        qsort(refs, (size_t)n, sizeof *refs, ref_cmp);
    }
    int64_t now = wall_ns();
    pthread_mutex_lock(&m->lock);
    m->following = 0;
    for (size_t i = 0; i < m->n_agents; i++) {
        for (int k = 0; k < MON_INCIDENTS; k++) {
            struct incident *in = m->agents[i]->inc[k];
            if (!in) {
                continue;
            }
            struct mon_incident_ref key = {.id = in->al.id};
            const struct mon_incident_ref *r =
                n > 0 ? bsearch(&key, refs, (size_t)n, sizeof *refs, ref_cmp) : NULL;
            int taken = r && r->taken;
            if (!in->resolved && !taken) {
                notify(m, in, INC_FIRING, now); /* the leader that saw it never stored it */
            } else if (in->resolved && taken) {
                notify(m, in, INC_RESOLVED, now); /* stored firing, clear here since */
            } else if (!in->resolved && in->pending) {
                notify(m, in, INC_UPDATED, now);
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
}

int monitor_agent(struct monitor *m, const char *agent, struct mon_agent_view *out)
{
    memset(out, 0, sizeof *out);
    if (!m) {
        return -1;
    }
    int64_t now_s = wall_ns() / 1000000000;
    pthread_mutex_lock(&m->lock);
    struct mon_agent *a = agent_find(m, agent, 0);
    if (!a) {
        pthread_mutex_unlock(&m->lock);
        return -1;
    }
    out->last_seen_ns = a->last_seen_ns;
    uint64_t ev = 0, resp = 0, tools = 0, cn = 0;
    double cs = 0;
    /* The last WINDOW_S complete seconds plus the current one, over WINDOW_S seconds. */
    for (int i = 0; i < WINDOW_S; i++) {
        const struct win_bucket *b = &a->win[i];
        if (b->sec > now_s - WINDOW_S && b->sec <= now_s) {
            ev += b->events;
            resp += b->responses;
            tools += b->tools;
            cn += b->conf_n;
            cs += b->conf_sum;
        }
    }
    out->events_per_s = (double)ev / WINDOW_S;
    out->responses_per_s = (double)resp / WINDOW_S;
    out->tool_calls_per_s = (double)tools / WINDOW_S;
    out->confidence = cn ? cs / (double)cn : NAN;
    out->confidence_last = a->conf_last;
    out->events = a->events;
    out->responses = a->responses;
    out->tool_calls = a->tool_calls;
    out->tool_errors = a->tool_errors;
    out->loss_gaps = a->loss_gaps;
    out->loss_reported = a->loss_reported;
    out->alerts = a->alerts;
    out->unchecked = a->unchecked;
    for (int k = 0; k < MON_INCIDENTS; k++) {
        out->n_incidents += a->inc[k] && !a->inc[k]->resolved;
    }
    for (int i = 0; i < m->cfg.n_units; i++) {
        const struct unit *u = &m->cfg.units[i];
        if (u->ops->read && u->ops->read(u, (const char *)a->ustate + u->state_off,
                                         &out->readings[out->n_readings].r) == 0) {
            out->readings[out->n_readings++].detector = u->name;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* A label value in the text format: backslash, quote and newline escaped. */
static void label(tt__buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            tt__buf_append(b, "\\", 1);
            tt__buf_append(b, s, 1);
        } else if (*s == '\n') {
            tt__buf_append(b, "\\n", 2);
        } else {
            tt__buf_append(b, s, 1);
        }
    }
}

static void series(tt__buf *b, const char *metric, const struct mon_agent *a, const char *extra,
                   const char *value)
{
    tt__buf_printf(b, "%s{agent=\"", metric);
    label(b, a->name);
    tt__buf_printf(b, "\"%s} %s\n", extra ? extra : "", value);
}

static void counter(tt__buf *b, struct monitor *m, const char *name, const char *help,
                    size_t field_off)
{
    tt__buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < m->n_agents; i++) {
        char v[32];
        snprintf(v, sizeof v, "%llu",
                 (unsigned long long)*(const uint64_t *)((const char *)m->agents[i] + field_off));
        series(b, name, m->agents[i], NULL, v);
    }
}

static void histogram(tt__buf *b, struct monitor *m, const char *name, const char *help, int conf)
{
    tt__buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    const double *bounds = conf ? conf_bounds : lat_bounds;
    size_t nb = conf ? CONF_B : LAT_B;
    char metric[128], extra[64], v[64];
    for (size_t i = 0; i < m->n_agents; i++) {
        const struct mon_agent *a = m->agents[i];
        const uint64_t *h = conf ? a->conf_hist : a->lat_hist;
        uint64_t cum = 0;
        snprintf(metric, sizeof metric, "%s_bucket", name);
        for (size_t k = 0; k <= nb; k++) {
            cum += h[k];
            if (k < nb) {
                snprintf(extra, sizeof extra, ",le=\"%g\"", bounds[k]);
            } else {
                snprintf(extra, sizeof extra, ",le=\"+Inf\"");
            }
            snprintf(v, sizeof v, "%llu", (unsigned long long)cum);
            series(b, metric, a, extra, v);
        }
        snprintf(metric, sizeof metric, "%s_sum", name);
        snprintf(v, sizeof v, "%.17g", conf ? a->conf_sum : a->lat_sum);
        series(b, metric, a, NULL, v);
        snprintf(metric, sizeof metric, "%s_count", name);
        snprintf(v, sizeof v, "%llu", (unsigned long long)cum);
        series(b, metric, a, NULL, v);
    }
}

void monitor_metrics(struct monitor *m, tt__buf *b)
{
    if (!m) {
        return;
    }
    pthread_mutex_lock(&m->lock);
    counter(b, m, "telltale_agent_events_total", "Events stored per agent since start.",
            offsetof(struct mon_agent, events));
    counter(b, m, "telltale_agent_responses_total", "Model responses ended per agent.",
            offsetof(struct mon_agent, responses));
    counter(b, m, "telltale_agent_tool_calls_total", "Tool calls begun per agent.",
            offsetof(struct mon_agent, tool_calls));
    counter(b, m, "telltale_agent_tool_errors_total", "Tool calls that ended in failure.",
            offsetof(struct mon_agent, tool_errors));
    tt__buf_printf(b,
                   "# HELP telltale_agent_loss_events_total Events lost per agent: sequence gaps "
                   "seen by the collector, drops reported by the library.\n"
                   "# TYPE telltale_agent_loss_events_total counter\n");
    for (size_t i = 0; i < m->n_agents; i++) {
        char v[32];
        snprintf(v, sizeof v, "%llu", (unsigned long long)m->agents[i]->loss_gaps);
        series(b, "telltale_agent_loss_events_total", m->agents[i], ",source=\"gap\"", v);
        snprintf(v, sizeof v, "%llu", (unsigned long long)m->agents[i]->loss_reported);
        series(b, "telltale_agent_loss_events_total", m->agents[i], ",source=\"reported\"", v);
    }
    tt__buf_printf(b,
                   "# HELP telltale_agent_last_seen_seconds Unix time of the agent's last batch.\n"
                   "# TYPE telltale_agent_last_seen_seconds gauge\n");
    for (size_t i = 0; i < m->n_agents; i++) {
        char v[32];
        snprintf(v, sizeof v, "%.3f", (double)m->agents[i]->last_seen_ns / 1e9);
        series(b, "telltale_agent_last_seen_seconds", m->agents[i], NULL, v);
    }
    histogram(b, m, "telltale_agent_confidence", "Response confidence, exp(mean log-prob).", 1);
    histogram(b, m, "telltale_agent_tool_latency_seconds", "Tool call latency.", 0);
    tt__buf_printf(b, "# HELP telltale_agent_alerts_total Incidents opened per agent and "
                      "detector.\n"
                      "# TYPE telltale_agent_alerts_total counter\n");
    for (size_t i = 0; i < m->n_agents; i++) {
        for (int u = 0; u < m->cfg.n_units; u++) {
            char extra[128], v[32];
            snprintf(extra, sizeof extra, ",detector=\"%s\"", m->cfg.units[u].name);
            snprintf(v, sizeof v, "%llu", (unsigned long long)m->agents[i]->alerts_by_unit[u]);
            series(b, "telltale_agent_alerts_total", m->agents[i], extra, v);
        }
    }
    tt__buf_printf(b, "# HELP telltale_incidents_firing Incidents firing now, per agent and "
                      "detector.\n# TYPE telltale_incidents_firing gauge\n");
    for (size_t i = 0; i < m->n_agents; i++) {
        for (int u = 0; u < m->cfg.n_units; u++) {
            int firing = 0;
            for (int k = 0; k < MON_INCIDENTS; k++) {
                const struct incident *in = m->agents[i]->inc[k];
                firing += in && in->unit == u && !in->resolved;
            }
            char extra[128], v[32];
            snprintf(extra, sizeof extra, ",detector=\"%s\"", m->cfg.units[u].name);
            snprintf(v, sizeof v, "%d", firing);
            series(b, "telltale_incidents_firing", m->agents[i], extra, v);
        }
    }
    tt__buf_printf(b,
                   "# HELP telltale_incident_events_total Incident notices sent: firing (opened or "
                   "reopened), updated, resolved.\n# TYPE telltale_incident_events_total counter\n"
                   "telltale_incident_events_total{event=\"firing\"} %llu\n"
                   "telltale_incident_events_total{event=\"updated\"} %llu\n"
                   "telltale_incident_events_total{event=\"resolved\"} %llu\n",
                   (unsigned long long)m->inc_events[INC_FIRING],
                   (unsigned long long)m->inc_events[INC_UPDATED],
                   (unsigned long long)m->inc_events[INC_RESOLVED]);
    tt__buf_printf(b,
                   "# HELP telltale_incident_events_held_total Incident notices not sent because "
                   "another collector sharing the store leads (it sends them).\n"
                   "# TYPE telltale_incident_events_held_total counter\n"
                   "telltale_incident_events_held_total %llu\n"
                   "# HELP telltale_incidents_leading 1 when this collector raises incidents, 0 "
                   "while another collector sharing the store does.\n"
                   "# TYPE telltale_incidents_leading gauge\ntelltale_incidents_leading %d\n",
                   (unsigned long long)m->inc_held, !m->following);
    tt__buf_printf(b,
                   "# HELP telltale_agents_untracked_total Agents beyond the monitor's table.\n"
                   "# TYPE telltale_agents_untracked_total counter\n"
                   "telltale_agents_untracked_total %llu\n",
                   (unsigned long long)m->untracked);
    tt__buf_printf(b,
                   "# HELP telltale_detector_over_budget_total Committed batches whose detectors "
                   "ran out of their time budget ([monitor] in the configuration).\n"
                   "# TYPE telltale_detector_over_budget_total counter\n"
                   "telltale_detector_over_budget_total %llu\n"
                   "# HELP telltale_detector_unchecked_total Signals (responses, steps, metrics, "
                   "decisions) those batches did not feed to the detectors.\n"
                   "# TYPE telltale_detector_unchecked_total counter\n"
                   "telltale_detector_unchecked_total %llu\n",
                   (unsigned long long)m->over_budget, (unsigned long long)m->unchecked);
    pthread_mutex_unlock(&m->lock);
}

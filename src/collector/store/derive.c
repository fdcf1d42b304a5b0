/*
 * derive.c - the derived tables, filled inside the store's transaction from each new batch:
 * sessions (per agent: first and last event, event count) and steps (the execution path: one
 * row per step, begun and ended), responses (begin and summary), their token chunks (the
 * Tokens message as sent, decoded when read) and guard decisions. Queries read these instead of
 * decoding raw frames. Response ids are the client's 64-bit ids stored as signed integers.
 */
#include <stdlib.h>
#include <string.h>

#include "collector/store/sqlite.h"
#include "common/compat.h"

const char derive_schema[] =
    "CREATE TABLE IF NOT EXISTS sessions(agent_id INTEGER NOT NULL, name TEXT NOT NULL,"
    " first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, events INTEGER NOT NULL,"
    " PRIMARY KEY(agent_id, name)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS steps(instance_id INTEGER NOT NULL, step_id INTEGER NOT NULL,"
    " agent_id INTEGER NOT NULL, parent_id INTEGER NOT NULL DEFAULT 0, session TEXT,"
    " kind INTEGER, name TEXT, query TEXT, start_ns INTEGER, duration_ns INTEGER,"
    " status INTEGER, result_bytes INTEGER, error TEXT,"
    " trace_id BLOB, span_id INTEGER, parent_span_id INTEGER,"
    " PRIMARY KEY(instance_id, step_id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS steps_session ON steps(agent_id, session);"
    "CREATE TABLE IF NOT EXISTS responses(instance_id INTEGER NOT NULL, response_id INTEGER NOT "
    "NULL,"
    " agent_id INTEGER NOT NULL, session TEXT, model TEXT, begin_ns INTEGER, begin_body BLOB,"
    " end_ns INTEGER, tokens INTEGER, mean_logprob REAL, min_logprob REAL, perplexity REAL,"
    " mean_entropy REAL, low_confidence_share REAL, min_window_confidence REAL, verdict INTEGER,"
    " reason TEXT, duration_ns INTEGER, estimated INTEGER,"
    " PRIMARY KEY(instance_id, response_id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS responses_id ON responses(response_id);"
    "CREATE INDEX IF NOT EXISTS responses_session ON responses(agent_id, session);"
    "CREATE TABLE IF NOT EXISTS response_tokens(instance_id INTEGER NOT NULL,"
    " response_id INTEGER NOT NULL, first_index INTEGER NOT NULL, n INTEGER NOT NULL,"
    " body BLOB NOT NULL, PRIMARY KEY(instance_id, response_id, first_index)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS guard_events(instance_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " response_id INTEGER NOT NULL, agent_id INTEGER NOT NULL, session TEXT, time_ns INTEGER,"
    " token_index INTEGER, verdict INTEGER, reason TEXT, value REAL, threshold REAL,"
    " PRIMARY KEY(instance_id, seq)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS guard_response ON guard_events(instance_id, response_id);";

/* Sessions accumulated before they are written (sess_flush); not a limit on a batch. */
#define MAX_SESSIONS_PER_BATCH 64

struct derive {
    sqlite3_stmt *session, *begin, *end;
    sqlite3_stmt *rbegin, *rend, *rtokens, *guard;
};

int derive_open(struct derive **out, sqlite3 *db)
{
    struct derive *d = calloc(1, sizeof *d);
    if (!d) {
        return -1;
    }
    int rc = sqlite3_prepare_v3(
        db,
        "INSERT INTO sessions(agent_id, name, first_seen, last_seen, events) VALUES(?1,?2,?3,?4,?5)"
        " ON CONFLICT(agent_id, name) DO UPDATE SET first_seen=min(first_seen, "
        "excluded.first_seen),"
        " last_seen=max(last_seen, excluded.last_seen), events=events+excluded.events",
        -1, SQLITE_PREPARE_PERSISTENT, &d->session, NULL);
    rc =
        rc ? rc
           : sqlite3_prepare_v3(
                 db,
                 "INSERT INTO steps(instance_id, step_id, agent_id, parent_id, session, kind, name,"
                 " query, start_ns, trace_id, span_id, parent_span_id)"
                 " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"
                 " ON CONFLICT(instance_id, step_id) DO UPDATE SET parent_id=excluded.parent_id,"
                 " session=excluded.session, kind=excluded.kind, name=excluded.name,"
                 " query=excluded.query, start_ns=excluded.start_ns,"
                 " trace_id=excluded.trace_id, span_id=excluded.span_id,"
                 " parent_span_id=excluded.parent_span_id",
                 -1, SQLITE_PREPARE_PERSISTENT, &d->begin, NULL);
    rc = rc ? rc
            : sqlite3_prepare_v3(
                  db,
                  "INSERT INTO steps(instance_id, step_id, agent_id, duration_ns, status,"
                  " result_bytes, error, start_ns, session, kind, name)"
                  " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
                  " ON CONFLICT(instance_id, step_id) DO UPDATE SET "
                  "duration_ns=excluded.duration_ns,"
                  " status=excluded.status, result_bytes=excluded.result_bytes, "
                  "error=excluded.error, session=coalesce(session, excluded.session),"
                  " kind=coalesce(kind, excluded.kind), name=coalesce(name, excluded.name)",
                  -1, SQLITE_PREPARE_PERSISTENT, &d->end, NULL);
    static const char *const sql[] = {
        /* A response opened in a step without a session of its own takes the step's. */
        "INSERT INTO responses(instance_id, response_id, agent_id, session, model, begin_ns,"
        " begin_body) VALUES(?1,?2,?3,coalesce(?4,(SELECT session FROM steps WHERE"
        " instance_id = ?1 AND step_id = ?8 AND ?8 != 0)),?5,?6,?7) ON CONFLICT(instance_id, "
        "response_id) DO UPDATE"
        " SET session=excluded.session, model=excluded.model, begin_ns=excluded.begin_ns,"
        " begin_body=excluded.begin_body",
        "INSERT INTO responses(instance_id, response_id, agent_id, session, end_ns, tokens,"
        " mean_logprob, min_logprob, perplexity, mean_entropy, low_confidence_share,"
        " min_window_confidence, verdict, reason, duration_ns, estimated)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
        " ON CONFLICT(instance_id, response_id) DO UPDATE SET end_ns=excluded.end_ns,"
        " tokens=excluded.tokens, mean_logprob=excluded.mean_logprob,"
        " min_logprob=excluded.min_logprob, perplexity=excluded.perplexity,"
        " mean_entropy=excluded.mean_entropy, low_confidence_share=excluded.low_confidence_share,"
        " min_window_confidence=excluded.min_window_confidence, verdict=excluded.verdict,"
        " reason=excluded.reason, duration_ns=excluded.duration_ns, estimated=excluded.estimated",
        "INSERT OR REPLACE INTO response_tokens(instance_id, response_id, first_index, n, body)"
        " VALUES(?1,?2,?3,?4,?5)",
        "INSERT OR IGNORE INTO guard_events(instance_id, seq, response_id, agent_id, session,"
        " time_ns, token_index, verdict, reason, value, threshold)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"};
    sqlite3_stmt **dst[] = {&d->rbegin, &d->rend, &d->rtokens, &d->guard};
    for (size_t i = 0; i < 4 && rc == SQLITE_OK; i++) {
        rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, dst[i], NULL);
    }
    if (rc != SQLITE_OK) {
        derive_close(d);
        return -1;
    }
    *out = d;
    return 0;
}

void derive_close(struct derive *d)
{
    if (!d) {
        return;
    }
    sqlite3_finalize(d->session);
    sqlite3_finalize(d->begin);
    sqlite3_finalize(d->end);
    sqlite3_finalize(d->rbegin);
    sqlite3_finalize(d->rend);
    sqlite3_finalize(d->rtokens);
    sqlite3_finalize(d->guard);
    free(d);
}

static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : rc;
}

static void bind_str(sqlite3_stmt *st, int i, tt__bstr s)
{
    if (s.n) {
        sqlite3_bind_text(st, i, (const char *)s.p, (int)s.n, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, i);
    }
}

struct sess_acc {
    tt__bstr name;
    int64_t first, last;
    int64_t events;
};

/* Write the accumulated sessions and empty the accumulator. The upsert adds counts and widens
 * the time range, so a batch with more sessions than the accumulator holds is written in several
 * chunks with the same result: every session of a batch is indexed, in bounded memory. */
static int sess_flush(struct derive *d, struct sess_acc *acc, int *n, int64_t agent_id)
{
    int rc = 0;
    for (int i = 0; i < *n && rc == 0; i++) {
        sqlite3_stmt *st = d->session;
        sqlite3_bind_int64(st, 1, agent_id);
        bind_str(st, 2, acc[i].name);
        sqlite3_bind_int64(st, 3, acc[i].first);
        sqlite3_bind_int64(st, 4, acc[i].last);
        sqlite3_bind_int64(st, 5, acc[i].events);
        rc = run(st);
    }
    *n = 0;
    return rc;
}

static int sess_add(struct derive *d, struct sess_acc *acc, int *n, const tt__event *ev,
                    int64_t agent_id)
{
    for (int i = 0; i < *n; i++) {
        if (acc[i].name.n == ev->session.n &&
            memcmp(acc[i].name.p, ev->session.p, ev->session.n) == 0) {
            acc[i].first = ev->time < acc[i].first ? ev->time : acc[i].first;
            acc[i].last = ev->time > acc[i].last ? ev->time : acc[i].last;
            acc[i].events++;
            return 0;
        }
    }
    int rc = *n < MAX_SESSIONS_PER_BATCH ? 0 : sess_flush(d, acc, n, agent_id);
    if (rc == 0) {
        acc[*n] = (struct sess_acc){ev->session, ev->time, ev->time, 1};
        (*n)++;
    }
    return rc;
}

static int step_begin(struct derive *d, const tt__event *ev, int64_t agent, int64_t inst)
{
    tt__ev_step_begin sb;
    if (tt__ev_step_begin_decode(ev->body, &sb) != 0) {
        return 0;
    }
    sqlite3_stmt *st = d->begin;
    sqlite3_bind_int64(st, 1, inst);
    sqlite3_bind_int64(st, 2, (int64_t)sb.step_id);
    sqlite3_bind_int64(st, 3, agent);
    sqlite3_bind_int64(st, 4, (int64_t)sb.parent_id);
    bind_str(st, 5, ev->session);
    sqlite3_bind_int(st, 6, (int)sb.kind);
    bind_str(st, 7, sb.name);
    bind_str(st, 8, sb.query);
    sqlite3_bind_int64(st, 9, ev->time);
    /* The trace context (since 0.5): NULL columns for a begin without one. */
    if (sb.has_trace) {
        sqlite3_bind_blob(st, 10, sb.trace_id, 16, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 11, (int64_t)sb.span_id);
        sqlite3_bind_int64(st, 12, (int64_t)sb.parent_span_id);
    } else {
        sqlite3_bind_null(st, 10);
        sqlite3_bind_null(st, 11);
        sqlite3_bind_null(st, 12);
    }
    return run(st);
}

static int step_end(struct derive *d, const tt__event *ev, int64_t agent, int64_t inst)
{
    tt__ev_step_end se;
    if (tt__ev_step_end_decode(ev->body, &se) != 0) {
        return 0;
    }
    sqlite3_stmt *st = d->end;
    sqlite3_bind_int64(st, 1, inst);
    sqlite3_bind_int64(st, 2, (int64_t)se.step_id);
    sqlite3_bind_int64(st, 3, agent);
    sqlite3_bind_int64(st, 4, (int64_t)se.duration_ns);
    sqlite3_bind_int(st, 5, (int)se.status);
    sqlite3_bind_int64(st, 6, se.result_bytes);
    bind_str(st, 7, se.error);
    /* Without its begin, the start is the end minus the duration. */
    sqlite3_bind_int64(st, 8, tt__sub_sat_i64(ev->time, tt__dur_i64(se.duration_ns)));
    /* Ends from clients since 0.2 carry the begin's session, kind and name: a step whose begin
     * was lost still has them. */
    bind_str(st, 9, ev->session);
    if (se.kind) {
        sqlite3_bind_int(st, 10, (int)se.kind);
    } else {
        sqlite3_bind_null(st, 10);
    }
    bind_str(st, 11, se.name);
    return run(st);
}

static int response_event(struct derive *d, const tt__event *ev, int64_t agent, int64_t inst)
{
    sqlite3_stmt *st;
    if (ev->kind == TT_EV_RESPONSE_BEGIN) {
        tt__ev_response_begin b;
        if (tt__ev_response_begin_decode(ev->body, &b) != 0) {
            return 0;
        }
        st = d->rbegin;
        sqlite3_bind_int64(st, 2, (int64_t)b.response_id);
        bind_str(st, 5, b.model);
        sqlite3_bind_int64(st, 6, ev->time);
        sqlite3_bind_blob(st, 7, ev->body.p, (int)ev->body.n, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, (int64_t)b.step_id);
    } else if (ev->kind == TT_EV_RESPONSE_END) {
        tt__ev_response_end e;
        if (tt__ev_response_end_decode(ev->body, &e) != 0) {
            return 0;
        }
        st = d->rend;
        sqlite3_bind_int64(st, 2, (int64_t)e.response_id);
        sqlite3_bind_int64(st, 5, ev->time);
        sqlite3_bind_int64(st, 6, e.tokens);
        double v[] = {e.mean_logprob, e.min_logprob,          e.perplexity,
                      e.mean_entropy, e.low_confidence_share, e.min_window_confidence};
        for (int i = 0; i < 6; i++) {
            sqlite3_bind_double(st, 7 + i, v[i]); /* NaN binds as NULL */
        }
        sqlite3_bind_int(st, 13, (int)e.verdict);
        bind_str(st, 14, e.reason);
        sqlite3_bind_int64(st, 15, (int64_t)e.duration_ns);
        sqlite3_bind_int(st, 16, (int)e.estimated);
    } else if (ev->kind == TT_EV_TOKENS) {
        tt__ev_tokens t;
        if (tt__ev_tokens_decode(ev->body, &t) != 0) {
            return 0;
        }
        st = d->rtokens;
        sqlite3_bind_int64(st, 1, inst);
        sqlite3_bind_int64(st, 2, (int64_t)t.response_id);
        sqlite3_bind_int64(st, 3, t.first_index);
        sqlite3_bind_int64(st, 4, (int64_t)(t.logprobs.n / 4));
        sqlite3_bind_blob(st, 5, ev->body.p, (int)ev->body.n, SQLITE_STATIC);
        return run(st);
    } else {
        tt__ev_guard g;
        if (tt__ev_guard_decode(ev->body, &g) != 0) {
            return 0;
        }
        st = d->guard;
        sqlite3_bind_int64(st, 1, inst);
        sqlite3_bind_int64(st, 2, (int64_t)ev->seq);
        sqlite3_bind_int64(st, 3, (int64_t)g.response_id);
        sqlite3_bind_int64(st, 4, agent);
        bind_str(st, 5, ev->session);
        sqlite3_bind_int64(st, 6, ev->time);
        sqlite3_bind_int64(st, 7, g.token_index);
        sqlite3_bind_int(st, 8, (int)g.verdict);
        bind_str(st, 9, g.reason);
        sqlite3_bind_double(st, 10, g.value);
        sqlite3_bind_double(st, 11, g.threshold);
        return run(st);
    }
    sqlite3_bind_int64(st, 1, inst);
    sqlite3_bind_int64(st, 3, agent);
    bind_str(st, 4, ev->session);
    return run(st);
}

int derive_item(struct derive *d, const struct store_item *it, int64_t agent_id,
                int64_t instance_id)
{
    tt__batch b = it->batch; /* a copy: iteration state is ours */
    uint32_t steps = (1u << TT_EV_STEP_BEGIN) | (1u << TT_EV_STEP_END);
    uint32_t responses = (1u << TT_EV_RESPONSE_BEGIN) | (1u << TT_EV_RESPONSE_END) |
                         (1u << TT_EV_TOKENS) | (1u << TT_EV_GUARD);
    if (!b.has_session && !(b.kinds & (steps | responses))) {
        return 0; /* nothing derived from this batch: skip decoding it */
    }
    struct sess_acc acc[MAX_SESSIONS_PER_BATCH];
    int nacc = 0, rc = 0;
    int walk = (b.kinds & (steps | responses)) || b.sessions_overflow;
    if (!walk) {
        /* Only sessions to count, and ingest's parse summarised them: no second decode of
         * every event (it was half the store thread's time in the 4-agent profile). */
        for (uint32_t i = 0; i < b.n_sessions; i++) {
            const tt__batch_session *ss = &b.sessions[i];
            if (nacc == MAX_SESSIONS_PER_BATCH) {
                rc = rc ? rc : sess_flush(d, acc, &nacc, agent_id);
            }
            acc[nacc++] = (struct sess_acc){ss->name, ss->t_min, ss->t_max, ss->events};
        }
    }
    tt__event ev;
    while (walk && rc == 0 && tt__batch_next(&b, &ev)) {
        if (ev.session.n) {
            rc = sess_add(d, acc, &nacc, &ev, agent_id);
        }
        if (ev.kind == TT_EV_STEP_BEGIN) {
            rc = step_begin(d, &ev, agent_id, instance_id);
        } else if (ev.kind == TT_EV_STEP_END) {
            rc = step_end(d, &ev, agent_id, instance_id);
        } else if ((1u << ev.kind) & responses) {
            rc = response_event(d, &ev, agent_id, instance_id);
        }
    }
    return rc ? rc : sess_flush(d, acc, &nacc, agent_id);
}

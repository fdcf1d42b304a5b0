/*
 * sqlite_read.c - the SQLite store's readers (store.h's store_read): each is a private
 * read-only connection, so a reader sees committed data only and never waits for the writer
 * (WAL). Each list function prepares its statement, hands rows to the caller's function as
 * plain structs pointing into SQLite's row, and finalizes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store/sqlite.h"

struct reader {
    struct store_read base; /* first: the seam's view */
    sqlite3 *db;
};

int sqlite_read_open(struct store *s, struct store_read **out)
{
    struct reader *r = calloc(1, sizeof *r);
    if (!r) {
        return -ENOMEM;
    }
    r->base.store = s;
    if (sqlite_reader_open(sqlite_store_path(s), &r->db) != 0) {
        free(r);
        return -EIO;
    }
    *out = &r->base;
    return 0;
}

void sqlite_read_close(struct store_read *base)
{
    struct reader *r = (struct reader *)base;
    sqlite3_close(r->db);
    free(r);
}

static sqlite3 *db_of(struct store_read *base)
{
    return ((struct reader *)base)->db;
}

sqlite3 *sqlite_read_db(struct store_read *base)
{
    return db_of(base);
}

static int prepare(struct store_read *r, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(db_of(r), sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(*st);
        *st = NULL;
        return sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    return 0;
}

/* Step st to its end; row(st, fn, ctx) hands each row on (nonzero stops). Finalizes st.
 * Returns the rows handed on, or a negative error. */
typedef void (*any_fn)(void); /* a row function of store.h, cast back by each row() */

static int walk(sqlite3_stmt *st, int (*row)(sqlite3_stmt *, any_fn, void *), any_fn fn, void *ctx)
{
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        if (row(st, fn, ctx) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        return sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    return n;
}

static void bind_opt_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s) {
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    }
}

static int64_t clamp_limit(uint64_t limit)
{
    return limit > INT64_MAX ? INT64_MAX : (int64_t)limit;
}

static struct store_str col_str(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        return (struct store_str){NULL, 0};
    }
    const char *p = (const char *)sqlite3_column_text(st, col);
    return (struct store_str){p ? p : "", (size_t)sqlite3_column_bytes(st, col)};
}

static struct store_i64 col_i64(sqlite3_stmt *st, int col)
{
    int set = sqlite3_column_type(st, col) != SQLITE_NULL;
    return (struct store_i64){set ? sqlite3_column_int64(st, col) : 0, set};
}

static struct store_f64 col_f64(sqlite3_stmt *st, int col)
{
    int set = sqlite3_column_type(st, col) != SQLITE_NULL;
    return (struct store_f64){set ? sqlite3_column_double(st, col) : 0, set};
}

/* --- agents -------------------------------------------------------------------------------- */

#define AGENT_COLUMNS                                                                              \
    "SELECT a.name, a.first_seen,"                                                                 \
    " (SELECT COALESCE(MAX(i.last_seen), a.last_seen) FROM instances i WHERE i.agent_id = a.id),"  \
    " (SELECT COUNT(*) FROM instances i WHERE i.agent_id = a.id),"                                 \
    " (SELECT COALESCE(SUM(i.stored), 0) FROM instances i WHERE i.agent_id = a.id)"                \
    " - (SELECT COALESCE(SUM(p.pruned_events), 0) FROM retain_instances p"                         \
    " JOIN instances i ON i.id = p.instance_id WHERE i.agent_id = a.id),"                          \
    " (SELECT COALESCE(SUM(i.max_seq - i.stored), 0) FROM instances i WHERE i.agent_id = a.id),"   \
    " (SELECT COALESCE(SUM(i.c_emitted), 0) FROM instances i WHERE i.agent_id = a.id),"            \
    " (SELECT COALESCE(SUM(i.c_dropped_total), 0) FROM instances i WHERE i.agent_id = a.id),"      \
    " (SELECT COALESCE(SUM(i.c_possibly), 0) FROM instances i WHERE i.agent_id = a.id),"           \
    " (SELECT COUNT(*) FROM sessions s WHERE s.agent_id = a.id),"                                  \
    " (SELECT COUNT(*) FROM alerts l WHERE l.agent = a.name AND l.acked_ns IS NULL)"               \
    " FROM agents a"

static int agent_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    struct store_agent a = {
        .name = (const char *)sqlite3_column_text(st, 0),
        .first_seen_ns = sqlite3_column_int64(st, 1),
        .last_seen_ns = sqlite3_column_int64(st, 2),
        .instances = sqlite3_column_int64(st, 3),
        .events_stored = sqlite3_column_int64(st, 4),
        .loss_gaps = sqlite3_column_int64(st, 5),
        .reported_emitted = sqlite3_column_int64(st, 6),
        .reported_dropped = sqlite3_column_int64(st, 7),
        .reported_possibly_delivered = sqlite3_column_int64(st, 8),
        .sessions = sqlite3_column_int64(st, 9),
        .open_alerts = sqlite3_column_int64(st, 10),
    };
    return ((store_agent_fn)fn)(ctx, &a);
}

int sqlite_agents(struct store_read *r, const char *name, store_agent_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(
        r, name ? AGENT_COLUMNS " WHERE a.name = ?1" : AGENT_COLUMNS " ORDER BY a.name", &st);
    if (rc) {
        return rc;
    }
    bind_opt_text(st, 1, name);
    return walk(st, agent_row, (any_fn)fn, ctx);
}

int sqlite_agent_owner(struct store_read *r, const char *agent, char *out, size_t n)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT o.identity FROM owners o JOIN agents a ON o.kind = 0 AND o.key = a.id"
                     " WHERE a.name = ?1",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const unsigned char *id = sqlite3_column_text(st, 0);
        snprintf(out, n, "%s", id ? (const char *)id : "");
    }
    sqlite3_finalize(st);
    if (step == SQLITE_ROW) {
        return 1;
    }
    return step == SQLITE_DONE ? 0 : (sqlite_errno(step) ? sqlite_errno(step) : -EIO);
}

/* --- sessions ------------------------------------------------------------------------------ */

static int session_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    struct store_session s = {
        .id = (const char *)sqlite3_column_text(st, 0),
        .agent = (const char *)sqlite3_column_text(st, 1),
        .agent_key = sqlite3_column_int64(st, 2),
        .first_seen_ns = sqlite3_column_int64(st, 3),
        .last_seen_ns = sqlite3_column_int64(st, 4),
        .events = sqlite3_column_int64(st, 5),
        .steps = sqlite3_column_int64(st, 6),
    };
    return ((store_session_fn)fn)(ctx, &s);
}

int sqlite_sessions(struct store_read *r, const char *agent, uint64_t limit, store_session_fn fn,
                    void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT s.name, a.name, s.agent_id, s.first_seen, s.last_seen, s.events,"
                     " (SELECT COUNT(*) FROM steps t WHERE t.agent_id = s.agent_id AND"
                     "  t.session = s.name)"
                     " FROM sessions s JOIN agents a ON a.id = s.agent_id"
                     " WHERE ?1 IS NULL OR a.name = ?1 ORDER BY s.last_seen DESC LIMIT ?2",
                     &st);
    if (rc) {
        return rc;
    }
    bind_opt_text(st, 1, agent);
    sqlite3_bind_int64(st, 2, clamp_limit(limit));
    return walk(st, session_row, (any_fn)fn, ctx);
}

int sqlite_session_find(struct store_read *r, const char *id, const char *agent, uint64_t limit,
                        store_session_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT s.name, a.name, s.agent_id, s.first_seen, s.last_seen, s.events, 0"
                     " FROM sessions s JOIN agents a ON a.id = s.agent_id"
                     " WHERE s.name = ?1 AND (?2 IS NULL OR a.name = ?2) LIMIT ?3",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    bind_opt_text(st, 2, agent);
    sqlite3_bind_int64(st, 3, clamp_limit(limit));
    return walk(st, session_row, (any_fn)fn, ctx);
}

static int name_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    return ((store_name_fn)fn)(ctx, (const char *)sqlite3_column_text(st, 0));
}

int sqlite_session_agents(struct store_read *r, const char *id, uint64_t limit, store_name_fn fn,
                          void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT DISTINCT a.name FROM sessions s JOIN agents a ON a.id ="
                     " s.agent_id WHERE s.name = ?1 ORDER BY a.name LIMIT ?2",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, clamp_limit(limit));
    return walk(st, name_row, (any_fn)fn, ctx);
}

static int step_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    struct store_step s = {
        .instance_key = sqlite3_column_int64(st, 0),
        .step_id = sqlite3_column_int64(st, 1),
        .parent_id = sqlite3_column_int64(st, 2),
        .kind = sqlite3_column_int(st, 3),
        .name = (const char *)sqlite3_column_text(st, 4),
        .query = (const char *)sqlite3_column_text(st, 5),
        .start_ns = sqlite3_column_int64(st, 6),
        .has_end = sqlite3_column_type(st, 7) != SQLITE_NULL,
        .duration_ns = sqlite3_column_int64(st, 7),
        .status = sqlite3_column_int(st, 8),
        .result_bytes = sqlite3_column_int64(st, 9),
        .error = (const char *)sqlite3_column_text(st, 10),
        .span_id = (uint64_t)sqlite3_column_int64(st, 12),
        .parent_span_id = (uint64_t)sqlite3_column_int64(st, 13),
    };
    if (sqlite3_column_bytes(st, 11) == 16) {
        s.trace_id = sqlite3_column_blob(st, 11);
    }
    return ((store_step_fn)fn)(ctx, &s);
}

int sqlite_session_steps(struct store_read *r, int64_t agent_key, const char *session,
                         store_step_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT instance_id, step_id, parent_id, kind, name, query, start_ns,"
                     " duration_ns, status, result_bytes, error, trace_id, span_id,"
                     " parent_span_id FROM steps"
                     " WHERE agent_id = ?1 AND session = ?2 ORDER BY start_ns, step_id",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, agent_key);
    sqlite3_bind_text(st, 2, session, -1, SQLITE_STATIC);
    return walk(st, step_row, (any_fn)fn, ctx);
}

static int id_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    return ((store_id_fn)fn)(ctx, (uint64_t)sqlite3_column_int64(st, 0));
}

int sqlite_session_responses(struct store_read *r, int64_t agent_key, const char *session,
                             uint64_t limit, store_id_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT response_id FROM responses WHERE agent_id = ?1 AND session = ?2"
                     " ORDER BY COALESCE(begin_ns, end_ns), response_id LIMIT ?3",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, agent_key);
    sqlite3_bind_text(st, 2, session, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, clamp_limit(limit));
    return walk(st, id_row, (any_fn)fn, ctx);
}

/* --- responses ----------------------------------------------------------------------------- */

#define RESPONSE_COLUMNS                                                                           \
    "SELECT r.response_id, a.name, i.uuid, r.session, r.model, r.begin_ns, r.end_ns, r.tokens,"    \
    " r.mean_logprob, r.min_logprob, r.perplexity, r.mean_entropy, r.low_confidence_share,"        \
    " r.min_window_confidence, r.verdict, r.reason, r.duration_ns, r.estimated, r.begin_body,"     \
    " r.instance_id"                                                                               \
    " FROM responses r JOIN agents a ON a.id = r.agent_id JOIN instances i ON i.id = "             \
    "r.instance_id"

static int response_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    struct store_response x = {
        .id = (uint64_t)sqlite3_column_int64(st, 0),
        .agent = (const char *)sqlite3_column_text(st, 1),
        .instance = sqlite3_column_blob(st, 2),
        .instance_len = (size_t)sqlite3_column_bytes(st, 2),
        .session = col_str(st, 3),
        .model = col_str(st, 4),
        .begin_ns = col_i64(st, 5),
        .end_ns = col_i64(st, 6),
        .tokens = col_i64(st, 7),
        .verdict = (uint32_t)sqlite3_column_int(st, 14),
        .reason = col_str(st, 15),
        .duration_ns = col_i64(st, 16),
        .estimated = sqlite3_column_int(st, 17) != 0,
        .instance_key = sqlite3_column_int64(st, 19),
    };
    for (int i = 0; i < 6; i++) {
        x.figures[i] = col_f64(st, 8 + i);
    }
    if (sqlite3_column_type(st, 18) == SQLITE_BLOB) {
        x.has_begin_body = 1;
        x.begin_body = sqlite3_column_blob(st, 18);
        x.begin_body_len = (size_t)sqlite3_column_bytes(st, 18);
    }
    return ((store_response_fn)fn)(ctx, &x);
}

int sqlite_responses(struct store_read *r, const struct store_response_filter *f,
                     store_response_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     f->by_id ? RESPONSE_COLUMNS " WHERE r.response_id = ?3"
                                                 " ORDER BY COALESCE(r.begin_ns, r.end_ns) DESC"
                                                 " LIMIT 1"
                              : RESPONSE_COLUMNS
                         " WHERE (?1 IS NULL OR r.session = ?1) AND (?2 IS NULL OR a.name = ?2)"
                         " ORDER BY COALESCE(r.begin_ns, r.end_ns) DESC LIMIT ?3",
                     &st);
    if (rc) {
        return rc;
    }
    if (f->by_id) {
        sqlite3_bind_int64(st, 3, (int64_t)f->id);
    } else {
        bind_opt_text(st, 1, f->session);
        bind_opt_text(st, 2, f->agent);
        sqlite3_bind_int64(st, 3, clamp_limit(f->limit));
    }
    return walk(st, response_row, (any_fn)fn, ctx);
}

static int blob_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    return ((store_blob_fn)fn)(ctx, sqlite3_column_blob(st, 0),
                               (size_t)sqlite3_column_bytes(st, 0));
}

int sqlite_response_tokens(struct store_read *r, int64_t instance_key, uint64_t id,
                           store_blob_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT body FROM response_tokens WHERE instance_id = ?1 AND"
                     " response_id = ?2 ORDER BY first_index",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, instance_key);
    sqlite3_bind_int64(st, 2, (int64_t)id);
    return walk(st, blob_row, (any_fn)fn, ctx);
}

static int guard_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    struct store_guard g = {
        .token_index = sqlite3_column_int64(st, 0),
        .verdict = (uint32_t)sqlite3_column_int(st, 1),
        .reason = col_str(st, 2),
        .value = col_f64(st, 3),
        .threshold = col_f64(st, 4),
        .time_ns = col_i64(st, 5),
    };
    return ((store_guard_fn)fn)(ctx, &g);
}

int sqlite_response_guard(struct store_read *r, int64_t instance_key, uint64_t id,
                          store_guard_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     "SELECT token_index, verdict, reason, value, threshold, time_ns FROM"
                     " guard_events WHERE instance_id = ?1 AND response_id = ?2 ORDER BY seq",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, instance_key);
    sqlite3_bind_int64(st, 2, (int64_t)id);
    return walk(st, guard_row, (any_fn)fn, ctx);
}

/* --- alerts -------------------------------------------------------------------------------- */

static int alert_row(sqlite3_stmt *st, any_fn fn, void *ctx)
{
    return sqlite_alert_row(st, (store_alert_fn)fn, ctx);
}

int sqlite_alerts(struct store_read *r, const struct store_alert_filter *f, store_alert_fn fn,
                  void *ctx)
{
    sqlite3_stmt *st;
    int rc = prepare(r,
                     SQLITE_ALERT_COLUMNS " WHERE id < ?1 AND (?2 IS NULL OR agent = ?2) AND"
                                          " (?3 = 0 OR (?3 = 1 AND acked_ns IS NULL) OR"
                                          " (?3 = 2 AND acked_ns IS NOT NULL)) AND"
                                          " (?5 = 0 OR (?5 = 1 AND status = 'firing') OR"
                                          " (?5 = 2 AND status = 'resolved')) AND"
                                          " (?6 = 0 OR id = ?6)"
                                          " ORDER BY id DESC LIMIT ?4",
                     &st);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, f->before);
    bind_opt_text(st, 2, f->agent);
    sqlite3_bind_int(st, 3, f->state);
    sqlite3_bind_int64(st, 4, clamp_limit(f->limit));
    sqlite3_bind_int(st, 5, f->status);
    sqlite3_bind_int64(st, 6, f->id);
    return walk(st, alert_row, (any_fn)fn, ctx);
}

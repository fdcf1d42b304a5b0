/*
 * postgres_read.c - the PostgreSQL store's readers (store.h's store_read) and events iterator:
 * each takes a connection of its own from the readers' pool (postgres.h; one thread at a time),
 * so it sees committed data only.
 * Each list function runs its statement with binary results and hands rows to the caller as
 * plain structs pointing into the result (libpq ends every value with a NUL byte).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "collector/store/postgres.h"
#include "common/wire.h"

struct reader {
    struct store_read base; /* first: the seam's view */
    PGconn *c;
};

int pg_read_open(struct store *s, struct store_read **out)
{
    struct reader *r = calloc(1, sizeof *r);
    if (!r) {
        return -ENOMEM;
    }
    r->base.store = s;
    char err[512];
    r->c = pg_conn_take(s, err, sizeof err);
    if (!r->c) {
        free(r);
        return -EAGAIN;
    }
    *out = &r->base;
    return 0;
}

void pg_read_close(struct store_read *base)
{
    struct reader *r = (struct reader *)base;
    pg_conn_give(r->base.store, r->c);
    free(r);
}

/* The reader's connection, reset first when it was lost (a reader may live long: the
 * collector keeps one for the hello's ownership check across server restarts). */
PGconn *pg_read_conn(struct store_read *base)
{
    struct reader *r = (struct reader *)base;
    if (PQstatus(r->c) != CONNECTION_OK) {
        PQreset(r->c);
    }
    return r->c;
}

static int64_t clamp_limit(uint64_t limit)
{
    return limit > INT64_MAX ? INT64_MAX : (int64_t)limit;
}

typedef int (*row_fn)(const PGresult *res, int row, void *fn, void *ctx);

/* Run sql and hand each row to row(); the rows handed on, or a negative error. */
static int walk(struct store_read *base, const char *sql, const struct pg_params *p, row_fn row,
                void *fn, void *ctx)
{
    PGconn *c = pg_read_conn(base);
    PGresult *res = pg_exec(c, NULL, sql, p);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = pg_errno(c, res);
        PQclear(res);
        return rc;
    }
    int n = 0, rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        n++;
        if (row(res, i, fn, ctx) != 0) {
            break;
        }
    }
    PQclear(res);
    return n;
}

static const char *text(const PGresult *res, int row, int col)
{
    size_t n;
    const char *p = pg_bytes(res, row, col, &n);
    return p ? p : "";
}

/* --- agents -------------------------------------------------------------------------------- */

#define AGENT_COLUMNS                                                                              \
    "SELECT a.name, a.first_seen,"                                                                 \
    " (SELECT COALESCE(MAX(i.last_seen), a.last_seen) FROM instances i WHERE i.agent_id = a.id),"  \
    " (SELECT COUNT(*) FROM instances i WHERE i.agent_id = a.id),"                                 \
    " (SELECT COALESCE(SUM(i.stored), 0)::bigint FROM instances i WHERE i.agent_id = a.id),"       \
    " (SELECT COALESCE(SUM(i.max_seq - i.stored), 0)::bigint FROM instances i"                     \
    "  WHERE i.agent_id = a.id),"                                                                  \
    " (SELECT COALESCE(SUM(i.c_emitted), 0)::bigint FROM instances i WHERE i.agent_id = a.id),"    \
    " (SELECT COALESCE(SUM(i.c_dropped_total), 0)::bigint FROM instances i"                        \
    "  WHERE i.agent_id = a.id),"                                                                  \
    " (SELECT COALESCE(SUM(i.c_possibly), 0)::bigint FROM instances i WHERE i.agent_id = a.id),"   \
    " (SELECT COUNT(*) FROM sessions s WHERE s.agent_id = a.id),"                                  \
    " (SELECT COUNT(*) FROM alerts l WHERE l.agent = a.name AND l.acked_ns IS NULL)"               \
    " FROM agents a"

static int agent_row(const PGresult *res, int i, void *fn, void *ctx)
{
    struct store_agent a = {
        .name = text(res, i, 0),
        .first_seen_ns = pg_i64(res, i, 1),
        .last_seen_ns = pg_i64(res, i, 2),
        .instances = pg_i64(res, i, 3),
        .events_stored = pg_i64(res, i, 4),
        .loss_gaps = pg_i64(res, i, 5),
        .reported_emitted = pg_i64(res, i, 6),
        .reported_dropped = pg_i64(res, i, 7),
        .reported_possibly_delivered = pg_i64(res, i, 8),
        .sessions = pg_i64(res, i, 9),
        .open_alerts = pg_i64(res, i, 10),
    };
    return ((store_agent_fn)fn)(ctx, &a);
}

int pg_agents(struct store_read *r, const char *name, store_agent_fn fn, void *ctx)
{
    struct pg_params p = {0};
    if (name) {
        pg_p_str(&p, name);
    }
    /* Names are bytea: ordered by their bytes, as SQLite orders its text. */
    return walk(r, name ? AGENT_COLUMNS " WHERE a.name = $1" : AGENT_COLUMNS " ORDER BY a.name", &p,
                agent_row, (void *)fn, ctx);
}

int pg_agent_owner(struct store_read *base, const char *agent, char *out, size_t n)
{
    PGconn *c = pg_read_conn(base);
    struct pg_params p = {0};
    pg_p_str(&p, agent);
    PGresult *res = pg_exec(c, NULL,
                            "SELECT o.identity FROM owners o JOIN agents a ON o.kind = 0 AND"
                            " o.key = a.id WHERE a.name = $1",
                            &p);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = pg_errno(c, res);
        PQclear(res);
        return rc;
    }
    int found = PQntuples(res) > 0;
    if (found) {
        snprintf(out, n, "%s", text(res, 0, 0));
    }
    PQclear(res);
    return found;
}

/* --- sessions ------------------------------------------------------------------------------ */

static int session_row(const PGresult *res, int i, void *fn, void *ctx)
{
    struct store_session s = {
        .id = text(res, i, 0),
        .agent = text(res, i, 1),
        .agent_key = pg_i64(res, i, 2),
        .first_seen_ns = pg_i64(res, i, 3),
        .last_seen_ns = pg_i64(res, i, 4),
        .events = pg_i64(res, i, 5),
        .steps = pg_i64(res, i, 6),
    };
    return ((store_session_fn)fn)(ctx, &s);
}

int pg_sessions(struct store_read *r, const char *agent, uint64_t limit, store_session_fn fn,
                void *ctx)
{
    struct pg_params p = {0};
    pg_p_str(&p, agent);
    pg_p_i64(&p, clamp_limit(limit));
    return walk(r,
                "SELECT s.name, a.name, s.agent_id, s.first_seen, s.last_seen, s.events,"
                " (SELECT COUNT(*) FROM steps t WHERE t.agent_id = s.agent_id AND"
                "  t.session = s.name)"
                " FROM sessions s JOIN agents a ON a.id = s.agent_id"
                " WHERE $1::bytea IS NULL OR a.name = $1 ORDER BY s.last_seen DESC LIMIT $2",
                &p, session_row, (void *)fn, ctx);
}

int pg_session_find(struct store_read *r, const char *id, const char *agent, uint64_t limit,
                    store_session_fn fn, void *ctx)
{
    struct pg_params p = {0};
    pg_p_str(&p, id);
    pg_p_str(&p, agent);
    pg_p_i64(&p, clamp_limit(limit));
    return walk(r,
                "SELECT s.name, a.name, s.agent_id, s.first_seen, s.last_seen, s.events, 0::bigint"
                " FROM sessions s JOIN agents a ON a.id = s.agent_id"
                " WHERE s.name = $1 AND ($2::bytea IS NULL OR a.name = $2) LIMIT $3",
                &p, session_row, (void *)fn, ctx);
}

static int name_row(const PGresult *res, int i, void *fn, void *ctx)
{
    return ((store_name_fn)fn)(ctx, text(res, i, 0));
}

int pg_session_agents(struct store_read *r, const char *id, uint64_t limit, store_name_fn fn,
                      void *ctx)
{
    struct pg_params p = {0};
    pg_p_str(&p, id);
    pg_p_i64(&p, clamp_limit(limit));
    return walk(r,
                "SELECT DISTINCT a.name FROM sessions s JOIN agents a ON a.id = s.agent_id"
                " WHERE s.name = $1 ORDER BY a.name LIMIT $2",
                &p, name_row, (void *)fn, ctx);
}

static int step_row(const PGresult *res, int i, void *fn, void *ctx)
{
    size_t n;
    struct store_step st = {
        .instance_key = pg_i64(res, i, 0),
        .step_id = pg_i64(res, i, 1),
        .parent_id = pg_i64(res, i, 2),
        .kind = (int)pg_i64(res, i, 3),
        .name = pg_bytes(res, i, 4, &n),
        .query = pg_bytes(res, i, 5, &n),
        .start_ns = pg_i64(res, i, 6),
        .has_end = !pg_null(res, i, 7),
        .duration_ns = pg_i64(res, i, 7),
        .status = (int)pg_i64(res, i, 8),
        .result_bytes = pg_i64(res, i, 9),
        .error = pg_bytes(res, i, 10, &n),
        .span_id = (uint64_t)pg_i64(res, i, 12),
        .parent_span_id = (uint64_t)pg_i64(res, i, 13),
    };
    const char *trace = pg_bytes(res, i, 11, &n);
    if (trace && n == 16) {
        st.trace_id = (const uint8_t *)trace;
    }
    return ((store_step_fn)fn)(ctx, &st);
}

int pg_session_steps(struct store_read *r, int64_t agent_key, const char *session, store_step_fn fn,
                     void *ctx)
{
    struct pg_params p = {0};
    pg_p_i64(&p, agent_key);
    pg_p_str(&p, session);
    return walk(r,
                "SELECT instance_id, step_id, parent_id, kind, name, query, start_ns,"
                " duration_ns, status, result_bytes, error, trace_id, span_id, parent_span_id"
                " FROM steps WHERE agent_id = $1 AND session = $2 ORDER BY start_ns, step_id",
                &p, step_row, (void *)fn, ctx);
}

static int id_row(const PGresult *res, int i, void *fn, void *ctx)
{
    return ((store_id_fn)fn)(ctx, (uint64_t)pg_i64(res, i, 0));
}

int pg_session_responses(struct store_read *r, int64_t agent_key, const char *session,
                         uint64_t limit, store_id_fn fn, void *ctx)
{
    struct pg_params p = {0};
    pg_p_i64(&p, agent_key);
    pg_p_str(&p, session);
    pg_p_i64(&p, clamp_limit(limit));
    return walk(r,
                "SELECT response_id FROM responses WHERE agent_id = $1 AND session = $2"
                " ORDER BY COALESCE(begin_ns, end_ns), response_id LIMIT $3",
                &p, id_row, (void *)fn, ctx);
}

/* --- responses ----------------------------------------------------------------------------- */

#define RESPONSE_COLUMNS                                                                           \
    "SELECT r.response_id, a.name, i.uuid, r.session, r.model, r.begin_ns, r.end_ns, r.tokens,"    \
    " r.mean_logprob, r.min_logprob, r.perplexity, r.mean_entropy, r.low_confidence_share,"        \
    " r.min_window_confidence, r.verdict, r.reason, r.duration_ns, r.estimated, r.begin_body,"     \
    " r.instance_id"                                                                               \
    " FROM responses r JOIN agents a ON a.id = r.agent_id JOIN instances i ON i.id = "             \
    "r.instance_id"

static struct store_str col_str(const PGresult *res, int i, int col)
{
    size_t n;
    const char *p = pg_bytes(res, i, col, &n);
    return (struct store_str){p, n};
}

static struct store_i64 col_i64(const PGresult *res, int i, int col)
{
    int set = !pg_null(res, i, col);
    return (struct store_i64){set ? pg_i64(res, i, col) : 0, set};
}

static struct store_f64 col_f64(const PGresult *res, int i, int col)
{
    int set = !pg_null(res, i, col);
    return (struct store_f64){set ? pg_f64(res, i, col) : 0, set};
}

static int response_row(const PGresult *res, int i, void *fn, void *ctx)
{
    size_t n, inst_len;
    const uint8_t *inst = (const uint8_t *)pg_bytes(res, i, 2, &inst_len);
    struct store_response x = {
        .id = (uint64_t)pg_i64(res, i, 0),
        .agent = text(res, i, 1),
        .instance = inst,
        .instance_len = inst_len,
        .session = col_str(res, i, 3),
        .model = col_str(res, i, 4),
        .begin_ns = col_i64(res, i, 5),
        .end_ns = col_i64(res, i, 6),
        .tokens = col_i64(res, i, 7),
        .verdict = (uint32_t)pg_i64(res, i, 14),
        .reason = col_str(res, i, 15),
        .duration_ns = col_i64(res, i, 16),
        .estimated = pg_i64(res, i, 17) != 0,
        .instance_key = pg_i64(res, i, 19),
    };
    for (int k = 0; k < 6; k++) {
        x.figures[k] = col_f64(res, i, 8 + k);
    }
    const char *body = pg_bytes(res, i, 18, &n);
    if (body) {
        x.has_begin_body = 1;
        x.begin_body = (const uint8_t *)body;
        x.begin_body_len = n;
    }
    return ((store_response_fn)fn)(ctx, &x);
}

int pg_responses(struct store_read *r, const struct store_response_filter *f, store_response_fn fn,
                 void *ctx)
{
    struct pg_params p = {0};
    if (f->by_id) {
        pg_p_i64(&p, (int64_t)f->id);
        return walk(r,
                    RESPONSE_COLUMNS " WHERE r.response_id = $1"
                                     " ORDER BY COALESCE(r.begin_ns, r.end_ns) DESC LIMIT 1",
                    &p, response_row, (void *)fn, ctx);
    }
    pg_p_str(&p, f->session);
    pg_p_str(&p, f->agent);
    pg_p_i64(&p, clamp_limit(f->limit));
    return walk(r,
                RESPONSE_COLUMNS " WHERE ($1::bytea IS NULL OR r.session = $1) AND"
                                 " ($2::bytea IS NULL OR a.name = $2)"
                                 " ORDER BY COALESCE(r.begin_ns, r.end_ns) DESC LIMIT $3",
                &p, response_row, (void *)fn, ctx);
}

static int blob_row(const PGresult *res, int i, void *fn, void *ctx)
{
    size_t n;
    const char *b = pg_bytes(res, i, 0, &n);
    return ((store_blob_fn)fn)(ctx, b ? b : "", n);
}

int pg_response_tokens(struct store_read *r, int64_t instance_key, uint64_t id, store_blob_fn fn,
                       void *ctx)
{
    struct pg_params p = {0};
    pg_p_i64(&p, instance_key);
    pg_p_i64(&p, (int64_t)id);
    return walk(r,
                "SELECT body FROM response_tokens WHERE instance_id = $1 AND response_id = $2"
                " ORDER BY first_index",
                &p, blob_row, (void *)fn, ctx);
}

static int guard_row(const PGresult *res, int i, void *fn, void *ctx)
{
    struct store_guard g = {
        .token_index = pg_i64(res, i, 0),
        .verdict = (uint32_t)pg_i64(res, i, 1),
        .reason = col_str(res, i, 2),
        .value = col_f64(res, i, 3),
        .threshold = col_f64(res, i, 4),
        .time_ns = col_i64(res, i, 5),
    };
    return ((store_guard_fn)fn)(ctx, &g);
}

int pg_response_guard(struct store_read *r, int64_t instance_key, uint64_t id, store_guard_fn fn,
                      void *ctx)
{
    struct pg_params p = {0};
    pg_p_i64(&p, instance_key);
    pg_p_i64(&p, (int64_t)id);
    return walk(r,
                "SELECT token_index, verdict, reason, value, threshold, time_ns FROM guard_events"
                " WHERE instance_id = $1 AND response_id = $2 ORDER BY seq",
                &p, guard_row, (void *)fn, ctx);
}

/* --- stored frames ------------------------------------------------------------------------ */

int pg_frame_payload(ZSTD_DCtx *dctx, int64_t codec, size_t raw_len, const char *data,
                     size_t data_len, uint8_t **buf, size_t *cap)
{
    if (raw_len > TT_FRAME_RAW_MAX || !data) {
        return -EINVAL;
    }
    if (raw_len > *cap || !*buf) {
        uint8_t *p = realloc(*buf, raw_len ? raw_len : 1);
        if (!p) {
            return -ENOMEM;
        }
        *buf = p;
        *cap = raw_len;
    }
    if (codec == 1) {
        size_t n = ZSTD_decompressDCtx(dctx, *buf, raw_len, data, data_len);
        return ZSTD_isError(n) || n != raw_len ? -EINVAL : 0;
    }
    if (data_len != raw_len) {
        return -EINVAL;
    }
    memcpy(*buf, data, raw_len);
    return 0;
}

/* --- events -------------------------------------------------------------------------------- */

#define PAGE 64

struct query {
    struct store_events base; /* first: the seam's view */
    struct store *store;
    PGconn *c;
    struct store_filter f;
    int64_t agent_id;   /* -1: any; -2: an unknown agent, which matches nothing */
    int64_t last_frame; /* id of the last frame fetched */
    PGresult *page;     /* the current page of frames */
    int page_rows, page_at;
    ZSTD_DCtx *dctx;
    /* the current frame */
    int in_frame;
    tt__batch b;
    uint8_t *raw;
    size_t raw_cap;
    char agent[256];
    uint8_t instance[16];
    int64_t frame_id;
    uint32_t index;    /* events of the current frame consumed */
    int64_t cur_frame; /* cursor: frame and index after the last event returned */
    uint32_t cur_index;
};

static int64_t lookup_agent(PGconn *c, const char *name)
{
    struct pg_params p = {0};
    pg_p_str(&p, name);
    PGresult *res = pg_exec(c, NULL, "SELECT id FROM agents WHERE name = $1", &p);
    int64_t id = -2; /* an agent that does not exist matches nothing */
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        id = pg_i64(res, 0, 0);
    } else if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        id = -3; /* an error */
    }
    PQclear(res);
    return id;
}

static void query_close(struct query *q)
{
    if (!q) {
        return;
    }
    PQclear(q->page);
    pg_conn_give(q->store, q->c);
    ZSTD_freeDCtx(q->dctx);
    free(q->raw);
    free(q);
}

int pg_events_open(struct store *s, const struct store_filter *f, struct store_events **out,
                   char *err, size_t errlen)
{
    *out = NULL;
    struct query *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    q->base.ops = s->ops;
    q->f = *f;
    q->agent_id = -1;
    q->last_frame = f->after_frame > 0 ? f->after_frame - 1 : 0;
    q->cur_frame = f->after_frame;
    q->cur_index = f->after_index;
    q->dctx = ZSTD_createDCtx();
    if (!q->dctx) {
        snprintf(err, errlen, "out of memory");
        query_close(q);
        return -ENOMEM;
    }
    q->store = s;
    q->c = pg_conn_take(s, err, errlen);
    if (!q->c) {
        query_close(q);
        return -EAGAIN;
    }
    if (f->agent[0]) {
        q->agent_id = lookup_agent(q->c, f->agent);
        if (q->agent_id == -3) {
            snprintf(err, errlen, "cannot read the store");
            query_close(q);
            return -EIO;
        }
    }
    *out = &q->base;
    return 0;
}

/* The next page of frames after last_frame: its row count, or -1 on error. */
static int fetch_page(struct query *q)
{
    PQclear(q->page);
    q->page = NULL;
    struct pg_params p = {0};
    pg_p_i64(&p, q->last_frame);
    pg_p_i64(&p, q->agent_id);
    pg_p_i64(&p, q->f.since);
    pg_p_i64(&p, q->f.until);
    pg_p_i64(&p, q->f.kinds);
    pg_p_bytes(&p, q->f.has_instance ? q->f.instance : NULL, 16);
    q->page = pg_exec(q->c, NULL,
                      "SELECT f.id, f.codec, f.raw_len, f.data, i.uuid, a.name, f.clock_skew_ms"
                      " FROM frames f JOIN instances i ON i.id = f.instance_id"
                      " JOIN agents a ON a.id = f.agent_id"
                      " WHERE f.id > $1 AND ($2::bigint = -1 OR f.agent_id = $2) AND f.t_max >= $3"
                      " AND f.t_min <= $4 AND ($5::bigint = 0 OR (f.kinds & $5) != 0)"
                      " AND ($6::bytea IS NULL OR i.uuid = $6) ORDER BY f.id LIMIT 64",
                      &p);
    if (!q->page || PQresultStatus(q->page) != PGRES_TUPLES_OK) {
        return -1;
    }
    q->page_rows = PQntuples(q->page);
    q->page_at = 0;
    return q->page_rows;
}

/* Load the next frame row into the current frame. 1, 0 at the end, -1 on error. */
static int next_frame(struct query *q)
{
    for (;;) {
        if (!q->page || q->page_at == q->page_rows) {
            if (q->page && q->page_rows < PAGE) {
                return 0;
            }
            int n = fetch_page(q);
            if (n <= 0) {
                return n;
            }
        }
        const PGresult *r = q->page;
        int i = q->page_at++;
        q->frame_id = pg_i64(r, i, 0);
        q->last_frame = q->frame_id;
        int64_t codec = pg_i64(r, i, 1);
        size_t raw_len = (size_t)pg_i64(r, i, 2);
        size_t data_len, uuid_len, name_len;
        const char *data = pg_bytes(r, i, 3, &data_len);
        const char *uuid = pg_bytes(r, i, 4, &uuid_len);
        const char *name = pg_bytes(r, i, 5, &name_len);
        if (!uuid || uuid_len != 16) {
            continue; /* not something ingest would have stored: skip it */
        }
        int rc = pg_frame_payload(q->dctx, codec, raw_len, data, data_len, &q->raw, &q->raw_cap);
        if (rc == -ENOMEM) {
            return -1;
        }
        if (rc != 0) {
            continue;
        }
        tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
        const char *why;
        if (tt__batch_parse(&q->b, q->raw, raw_len, &lim, &why) != 0) {
            continue;
        }
        q->b.clock_skew_ms = pg_i64(r, i, 6);
        memcpy(q->instance, uuid, 16);
        snprintf(q->agent, sizeof q->agent, "%.*s", (int)(name_len < 255 ? name_len : 255),
                 name ? name : "");
        q->index = 0;
        q->in_frame = 1;
        return 1;
    }
}

int pg_events_next(struct store_events *base, tt__event *ev, const char **agent,
                   const uint8_t **instance)
{
    struct query *q = (struct query *)base;
    for (;;) {
        if (!q->in_frame) {
            int rc = next_frame(q);
            if (rc <= 0) {
                return rc < 0 ? -EIO : 0;
            }
        }
        while (tt__batch_next(&q->b, ev)) {
            q->index++;
            if (q->frame_id == q->f.after_frame && q->index <= q->f.after_index) {
                continue; /* before the cursor */
            }
            if (ev->time >= q->f.since && ev->time <= q->f.until &&
                tt__event_matches(ev, q->f.session, q->f.kinds, q->f.min_severity)) {
                q->cur_frame = q->frame_id;
                q->cur_index = q->index;
                *agent = q->agent;
                *instance = q->instance;
                return 1;
            }
        }
        q->in_frame = 0;
        q->cur_frame = q->frame_id;
        q->cur_index = q->index;
    }
}

void pg_events_cursor(const struct store_events *base, char *out, size_t n)
{
    const struct query *q = (const struct query *)base;
    snprintf(out, n, "%" PRId64 ".%" PRIu32, q->cur_frame, q->cur_index);
}

void pg_events_close(struct store_events *base)
{
    query_close((struct query *)base);
}

int64_t pg_events_count(struct store *s, const struct store_filter *f, char *err, size_t errlen)
{
    if (!f->session[0] && !f->kinds && !f->min_severity && !f->has_instance &&
        f->since == INT64_MIN && f->until == INT64_MAX && f->after_frame == 0) {
        /* Without filters below frame level, the frames' event counts give the answer. */
        PGconn *c = pg_conn_take(s, err, errlen);
        if (!c) {
            return -EAGAIN;
        }
        int64_t agent = f->agent[0] ? lookup_agent(c, f->agent) : -1;
        struct pg_params p = {0};
        pg_p_i64(&p, agent);
        PGresult *res = agent == -3 ? NULL
                                    : pg_exec(c, NULL,
                                              "SELECT COALESCE(SUM(n), 0)::bigint FROM frames"
                                              " WHERE $1::bigint = -1 OR agent_id = $1",
                                              &p);
        int64_t n = -EIO;
        if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            n = pg_i64(res, 0, 0);
        } else {
            snprintf(err, errlen, "cannot read the store");
        }
        PQclear(res);
        pg_conn_give(s, c);
        return n;
    }
    struct store_events *q;
    int rc = pg_events_open(s, f, &q, err, errlen);
    if (rc != 0) {
        return rc;
    }
    tt__event ev;
    const char *agent;
    const uint8_t *inst;
    int64_t n = 0;
    while ((rc = pg_events_next(q, &ev, &agent, &inst)) == 1) {
        n++;
    }
    pg_events_close(q);
    if (rc < 0) {
        snprintf(err, errlen, "storage error while counting");
        return rc;
    }
    return n;
}

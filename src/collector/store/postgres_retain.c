/*
 * postgres_retain.c - retention for the PostgreSQL store (store.h's store_retention_run), with
 * the SQLite store's rules (sqlite_retain.c): batches removed by age and by size, whole, with
 * the derived rows that came from them; batches of flagged, halted or low-confidence responses
 * and of sessions with alerts kept longer; the per-instance high-water mark of what went
 * (retain_instances), which postgres.c's dedup reads so that a resend of a pruned range is
 * acknowledged and not stored again.
 *
 * How it runs. On the caller's thread (retain.c's), on a connection of its own, in steps: a
 * step is one transaction that first takes the writers' advisory lock (PG_WRITER_LOCK), so it
 * runs between two commits of the writers (of every collector on the database), removes at
 * most STEP_FRAMES batches or STEP_NS of work, and commits: a writer waits at most one step.
 * Unlike the SQLite store it does not need the writer thread: the lock orders it with every
 * writer, which a database shared by several collectors needs anyway.
 *
 * Phases, classes and the kept marks (retain_keep) are sqlite_retain.c's: AGE, AGE_KEEP, SIZE,
 * SIZE_KEEP.
 *
 * Size. PostgreSQL does not give deleted space back to the file system (only VACUUM FULL does,
 * under an exclusive lock): a plain VACUUM makes it reusable and the next inserts fill it. So
 * what --max-bytes limits is what telltale's tables hold live: the batches as stored
 * (pg_column_size of their payload plus FRAME_ROW_BYTES of row and index entries each, counted
 * incrementally by frame id, recounted in full every RECOUNT_NS) plus pg_total_relation_size of
 * the other tables; after a pass that removed enough, the tables are vacuumed so that their
 * files stay near that size. disk_bytes in the report is pg_total_relation_size of every table
 * of telltale's (with indexes and TOAST).
 *
 * INVARIANTS
 * - One run at a time (lock); the connection is used by the running thread only.
 * - A batch and everything removed with it go in one transaction under the writers' lock: a
 *   reader sees the batch and its derived rows, or neither, and no writer commits in between.
 * - pruned_max of an instance is at least the last sequence number of every batch of it that
 *   was removed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "collector/log.h"
#include "collector/store/postgres.h"
#include "common/clock.h"

#define STEP_FRAMES 32
#define STEP_NS (20u * 1000 * 1000)
#define CLS_FLAGGED 1
#define CLS_ALERTED 2
#define FRAME_ROW_BYTES 320                      /* a frames row and its index entries */
#define RECOUNT_NS (60ull * 1000 * 1000 * 1000) /* full count of the batches' bytes */
#define IDS_MAX 512                             /* ids or names per statement */

const char pg_retain_schema[] =
    "CREATE TABLE IF NOT EXISTS retain_keep(frame_id bigint PRIMARY KEY, cls bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS retain_instances(instance_id bigint PRIMARY KEY,"
    " pruned_max bigint NOT NULL, pruned_events bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS frames_age ON frames((LEAST(t_max, received)));";

/* The tables telltale keeps (disk_bytes), and those retention deletes from (vacuumed). */
static const char all_tables[] =
    "'{telltale_meta,agents,instances,frames,owners,sessions,steps,responses,response_tokens,"
    "guard_events,alerts,rollups,retain_keep,retain_instances}'";
static const char vacuum_sql[] = "VACUUM frames, retain_keep, retain_instances, sessions, steps,"
                                 " responses, response_tokens, guard_events, alerts";

enum phase { PH_AGE, PH_AGE_KEEP, PH_SIZE, PH_SIZE_KEEP, PH_DONE };

struct pg_retain {
    struct store *store;
    pthread_mutex_t lock; /* one run at a time */
    PGconn *c;
    int loaded;
    int64_t pruned_through; /* persisted in telltale_meta */
    ZSTD_DCtx *dctx;
    uint8_t *raw;
    size_t raw_cap;
    /* the batches' bytes (what --max-bytes limits, with the other tables) */
    int64_t frames_bytes, last_id;
    uint64_t counted_ns;
    int counted;
    uint64_t other_bytes;
    uint64_t removed_unvacuumed; /* bytes removed since the last VACUUM */
    uint64_t vacuum_ns;
    int vacuum_warned;
    char *txt; /* array literals */
    size_t txt_len, txt_cap;
};

struct pg_retain *pg_retain_new(struct store *s)
{
    struct pg_retain *r = calloc(1, sizeof *r);
    if (r) {
        r->store = s;
        pthread_mutex_init(&r->lock, NULL);
    }
    return r;
}

void pg_retain_free(struct pg_retain *r)
{
    if (!r) {
        return;
    }
    PQfinish(r->c);
    ZSTD_freeDCtx(r->dctx);
    free(r->raw);
    free(r->txt);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* --- small helpers ------------------------------------------------------------------------- */

static int q(struct pg_retain *r, const char *sql, const struct pg_params *p, PGresult **out)
{
    PGresult *res = pg_exec(r->c, NULL, sql, p);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_errno(r->c, res);
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        log_warn("store: retention: \"%.60s\" failed (SQLSTATE %s)", sql, state ? state : "none");
        PQclear(res);
        return rc;
    }
    if (out) {
        *out = res;
    } else {
        PQclear(res);
    }
    return 0;
}

/* The first column of the first row as int64 (def when none or NULL); negative rc on error. */
static int q_i64(struct pg_retain *r, const char *sql, const struct pg_params *p, int64_t def,
                 int64_t *v)
{
    PGresult *res;
    int rc = q(r, sql, p, &res);
    if (rc == 0) {
        *v = PQntuples(res) > 0 && !pg_null(res, 0, 0) ? pg_i64(res, 0, 0) : def;
        PQclear(res);
    }
    return rc;
}

/* Array literals in text form, as a parameter of their own ("{1,2}" or {"\\x6869"}). */
static int txt_put(struct pg_retain *r, const char *s, size_t n)
{
    if (r->txt_len + n + 1 > r->txt_cap) {
        size_t cap = (r->txt_len + n + 1) * 2;
        char *p = realloc(r->txt, cap);
        if (!p) {
            return -ENOMEM;
        }
        r->txt = p;
        r->txt_cap = cap;
    }
    memcpy(r->txt + r->txt_len, s, n);
    r->txt_len += n;
    r->txt[r->txt_len] = 0;
    return 0;
}

static int ids_text(struct pg_retain *r, const int64_t *ids, int n)
{
    r->txt_len = 0;
    int rc = txt_put(r, "{", 1);
    for (int i = 0; i < n && rc == 0; i++) {
        char one[32];
        int k = snprintf(one, sizeof one, "%s%" PRId64, i ? "," : "", ids[i]);
        rc = txt_put(r, one, (size_t)k);
    }
    return rc ? rc : txt_put(r, "}", 1);
}

static int names_text(struct pg_retain *r, const tt__bstr *names, int n)
{
    static const char hex[] = "0123456789abcdef";
    r->txt_len = 0;
    int rc = txt_put(r, "{", 1);
    for (int i = 0; i < n && rc == 0; i++) {
        rc = txt_put(r, i ? ",\"\\\\x" : "\"\\\\x", i ? 5 : 4);
        for (size_t k = 0; k < names[i].n && rc == 0; k++) {
            char two[2] = {hex[names[i].p[k] >> 4], hex[names[i].p[k] & 15]};
            rc = txt_put(r, two, 2);
        }
        rc = rc ? rc : txt_put(r, "\"", 1);
    }
    return rc ? rc : txt_put(r, "}", 1);
}

static void p_text(struct pg_params *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static int connect_once(struct pg_retain *r)
{
    if (r->c && PQstatus(r->c) == CONNECTION_OK && PQtransactionStatus(r->c) == PQTRANS_IDLE) {
        return 0;
    }
    PQfinish(r->c);
    char err[512];
    r->c = pg_connect(r->store, err, sizeof err);
    if (!r->c) {
        log_warn("store: retention: %s", err);
        return -EAGAIN;
    }
    r->counted = 0; /* another connection may have missed removals: count again */
    if (!r->loaded) {
        int64_t v = 0;
        int rc = q_i64(r,
                       "SELECT value::bigint FROM telltale_meta"
                       " WHERE key = 'retain_pruned_through'",
                       NULL, 0, &v);
        if (rc) {
            return rc;
        }
        r->pruned_through = v;
        r->loaded = 1;
    }
    if (!r->dctx && !(r->dctx = ZSTD_createDCtx())) {
        return -ENOMEM;
    }
    return 0;
}

/* --- size ---------------------------------------------------------------------------------- */

/* Bring the batches' bytes up to date (inside a step: the writers' lock is held, so no frame
 * below last_id can still commit) and measure the other tables. */
static int measure(struct pg_retain *r)
{
    uint64_t now = tt__mono_ns();
    int full = !r->counted || now - r->counted_ns >= RECOUNT_NS;
    struct pg_params p = {0};
    pg_p_i64(&p, full ? INT64_MIN : r->last_id);
    pg_p_i64(&p, FRAME_ROW_BYTES);
    PGresult *res;
    int rc = q(r,
               "SELECT COALESCE(sum(pg_column_size(data) + $2), 0)::bigint, max(id) FROM frames"
               " WHERE id > $1",
               &p, &res);
    if (rc) {
        return rc;
    }
    int64_t add = pg_i64(res, 0, 0);
    if (!pg_null(res, 0, 1)) {
        r->last_id = pg_i64(res, 0, 1);
    }
    PQclear(res);
    r->frames_bytes = full ? add : r->frames_bytes + add;
    if (full) {
        r->counted = 1;
        r->counted_ns = now;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT COALESCE(sum(pg_total_relation_size(to_regclass(t))), 0)::bigint"
             " FROM unnest(%s::text[]) t WHERE t <> 'frames'",
             all_tables);
    int64_t other = 0;
    rc = q_i64(r, sql, NULL, 0, &other);
    r->other_bytes = (uint64_t)other;
    return rc;
}

static uint64_t used_bytes(const struct pg_retain *r)
{
    return (uint64_t)(r->frames_bytes > 0 ? r->frames_bytes : 0) + r->other_bytes;
}

/* What pruning by size holds the live bytes under: max_bytes less a quarter of headroom for
 * what is removed but not vacuumed yet, what one interval adds, and the tables' free space. */
static uint64_t size_target(uint64_t max_bytes)
{
    return max_bytes - max_bytes / 4;
}

/* --- one batch ----------------------------------------------------------------------------- */

struct frame {
    int64_t id, agent_id, instance_id, t_max, stored_bytes;
    uint64_t first_seq, n;
    tt__batch b;
};

/* Columns of the candidate queries. */
#define FRAME_COLS                                                                                 \
    "f.id, f.agent_id, f.instance_id, f.first_seq, f.n, LEAST(f.t_max, f.received), f.codec,"      \
    " f.raw_len, f.data, pg_column_size(f.data)::bigint"

/* Row i of res into f, decoded: 1, 0 when it cannot be decoded (it goes without derived
 * rows). */
static int frame_load(struct pg_retain *r, const PGresult *res, int i, struct frame *f)
{
    f->id = pg_i64(res, i, 0);
    f->agent_id = pg_i64(res, i, 1);
    f->instance_id = pg_i64(res, i, 2);
    f->first_seq = (uint64_t)pg_i64(res, i, 3);
    f->n = (uint64_t)pg_i64(res, i, 4);
    f->t_max = pg_i64(res, i, 5);
    int64_t codec = pg_i64(res, i, 6);
    size_t raw_len = (size_t)pg_i64(res, i, 7);
    size_t data_len;
    const char *data = pg_bytes(res, i, 8, &data_len);
    f->stored_bytes = pg_i64(res, i, 9);
    int ok = raw_len <= TT_FRAME_RAW_MAX && data;
    if (ok && raw_len > r->raw_cap) {
        uint8_t *p = realloc(r->raw, raw_len ? raw_len : 1);
        ok = p != NULL;
        if (p) {
            r->raw = p;
            r->raw_cap = raw_len;
        }
    }
    if (ok && codec == 1) {
        size_t n = ZSTD_decompressDCtx(r->dctx, r->raw, raw_len, data, data_len);
        ok = !ZSTD_isError(n) && n == raw_len;
    } else if (ok) {
        ok = data_len == raw_len;
        if (ok && raw_len) {
            memcpy(r->raw, data, raw_len);
        }
    }
    tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
    const char *why;
    return ok && tt__batch_parse(&f->b, r->raw, raw_len, &lim, &why) == 0;
}

/* The response an event belongs to, if it is one of a response's events. */
static int response_of(const tt__event *ev, uint64_t *id, uint32_t *verdict)
{
    *verdict = 0;
    if (ev->kind == TT_EV_RESPONSE_BEGIN) {
        tt__ev_response_begin m;
        if (tt__ev_response_begin_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            return 1;
        }
    } else if (ev->kind == TT_EV_RESPONSE_END) {
        tt__ev_response_end m;
        if (tt__ev_response_end_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            *verdict = m.verdict;
            return 1;
        }
    } else if (ev->kind == TT_EV_TOKENS) {
        tt__ev_tokens m;
        if (tt__ev_tokens_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            return 1;
        }
    } else if (ev->kind == TT_EV_GUARD) {
        tt__ev_guard m;
        if (tt__ev_guard_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            *verdict = m.verdict;
            return 1;
        }
    }
    return 0;
}

/* What a batch refers to, gathered IDS_MAX at a time. */
struct refs {
    int64_t steps[IDS_MAX], resp[IDS_MAX];
    int n_steps, n_resp;
    tt__bstr sess[IDS_MAX];
    int64_t sess_events[IDS_MAX];
    int n_sess;
    int flagged; /* an event of the batch carries a verdict other than pass */
};

static void add_id(int64_t *ids, int *n, int64_t id)
{
    for (int i = *n - 1; i >= 0 && i >= *n - 8; i--) { /* neighbours repeat: a short look back */
        if (ids[i] == id) {
            return;
        }
    }
    ids[(*n)++] = id;
}

static void add_sess(struct refs *x, tt__bstr s)
{
    for (int i = 0; i < x->n_sess; i++) {
        if (x->sess[i].n == s.n && !memcmp(x->sess[i].p, s.p, s.n)) {
            x->sess_events[i]++;
            return;
        }
    }
    x->sess[x->n_sess] = s;
    x->sess_events[x->n_sess++] = 1;
}

/* Walk the batch from *b: fill x until one of its lists is full. 1 when more events are left. */
static int gather(tt__batch *b, struct refs *x)
{
    memset(x, 0, offsetof(struct refs, flagged));
    tt__event ev;
    while (x->n_steps < IDS_MAX && x->n_resp < IDS_MAX && x->n_sess < IDS_MAX) {
        if (!tt__batch_next(b, &ev)) {
            return 0;
        }
        if (ev.session.n) {
            add_sess(x, ev.session);
        }
        uint64_t id;
        uint32_t verdict;
        if (ev.kind == TT_EV_STEP_BEGIN) {
            tt__ev_step_begin m;
            if (tt__ev_step_begin_decode(ev.body, &m) == 0) {
                add_id(x->steps, &x->n_steps, (int64_t)m.step_id);
            }
        } else if (ev.kind == TT_EV_STEP_END) {
            tt__ev_step_end m;
            if (tt__ev_step_end_decode(ev.body, &m) == 0) {
                add_id(x->steps, &x->n_steps, (int64_t)m.step_id);
            }
        } else if (response_of(&ev, &id, &verdict)) {
            add_id(x->resp, &x->n_resp, (int64_t)id);
            x->flagged |= verdict != 0;
        }
    }
    return 1;
}

/* CLS_* bits of a decoded batch. */
static int classify(struct pg_retain *r, const struct frame *f, double below, int *cls)
{
    *cls = 0;
    tt__batch b = f->b;
    struct refs *x = malloc(sizeof *x);
    if (!x) {
        return -ENOMEM;
    }
    x->flagged = 0;
    int more = 1, rc = 0;
    while (more && rc == 0 && *cls != (CLS_FLAGGED | CLS_ALERTED)) {
        more = gather(&b, x);
        if (x->flagged) {
            *cls |= CLS_FLAGGED;
        }
        int64_t hit = 0;
        if (!(*cls & CLS_FLAGGED) && x->n_resp && (rc = ids_text(r, x->resp, x->n_resp)) == 0) {
            struct pg_params p = {0};
            pg_p_i64(&p, f->instance_id);
            p_text(&p, r->txt);
            pg_p_f64(&p, below);
            rc = q_i64(r,
                       "SELECT 1 FROM responses WHERE instance_id = $1 AND response_id ="
                       " ANY($2::int8[]) AND (verdict <> 0 OR min_window_confidence < $3) LIMIT 1",
                       &p, 0, &hit);
            *cls |= hit ? CLS_FLAGGED : 0;
        }
        hit = 0;
        if (rc == 0 && !(*cls & CLS_ALERTED) && x->n_sess &&
            (rc = names_text(r, x->sess, x->n_sess)) == 0) {
            struct pg_params p = {0};
            pg_p_i64(&p, f->agent_id);
            p_text(&p, r->txt);
            rc = q_i64(r,
                       "SELECT 1 FROM alerts WHERE agent = (SELECT name FROM agents WHERE id = $1)"
                       " AND session = ANY($2::bytea[]) LIMIT 1",
                       &p, 0, &hit);
            *cls |= hit ? CLS_ALERTED : 0;
        }
    }
    free(x);
    return rc;
}

static int64_t affected(PGresult *res)
{
    const char *t = PQcmdTuples(res);
    return t && *t ? strtoll(t, NULL, 10) : 0;
}

/* The derived rows of what x lists: steps, responses with their tokens and guard decisions,
 * the sessions' counts (a session goes at 0, with its settled alerts). */
static int derived_drop(struct pg_retain *r, const struct frame *f, const struct refs *x,
                        struct store_retention_report *rep)
{
    int rc = 0;
    if (x->n_steps && (rc = ids_text(r, x->steps, x->n_steps)) == 0) {
        struct pg_params p = {0};
        pg_p_i64(&p, f->instance_id);
        p_text(&p, r->txt);
        rc = q(r, "DELETE FROM steps WHERE instance_id = $1 AND step_id = ANY($2::int8[])", &p,
               NULL);
    }
    if (rc == 0 && x->n_resp && (rc = ids_text(r, x->resp, x->n_resp)) == 0) {
        struct pg_params p = {0};
        pg_p_i64(&p, f->instance_id);
        p_text(&p, r->txt);
        PGresult *res;
        rc = q(r, "DELETE FROM responses WHERE instance_id = $1 AND response_id = ANY($2::int8[])",
               &p, &res);
        if (rc == 0) {
            rep->responses += (uint64_t)affected(res);
            PQclear(res);
        }
        rc = rc ? rc
                : q(r,
                    "DELETE FROM response_tokens WHERE instance_id = $1"
                    " AND response_id = ANY($2::int8[])",
                    &p, NULL);
        rc = rc ? rc
                : q(r,
                    "DELETE FROM guard_events WHERE instance_id = $1"
                    " AND response_id = ANY($2::int8[])",
                    &p, NULL);
    }
    if (rc == 0 && x->n_sess && (rc = names_text(r, x->sess, x->n_sess)) == 0) {
        char *names = strdup(r->txt);
        if (!names || ids_text(r, x->sess_events, x->n_sess) != 0) {
            free(names);
            return -ENOMEM;
        }
        struct pg_params p = {0};
        pg_p_i64(&p, f->agent_id);
        p_text(&p, names);
        p_text(&p, r->txt);
        rc = q(r,
               "UPDATE sessions s SET events = s.events - v.n FROM unnest($2::bytea[], $3::int8[])"
               " v(name, n) WHERE s.agent_id = $1 AND s.name = v.name",
               &p, NULL);
        PGresult *res = NULL;
        struct pg_params d = {0};
        pg_p_i64(&d, f->agent_id);
        p_text(&d, names);
        rc = rc ? rc
                : q(r,
                    "WITH gone AS (DELETE FROM sessions WHERE agent_id = $1 AND name ="
                    " ANY($2::bytea[]) AND events <= 0 RETURNING name),"
                    " settled AS (DELETE FROM alerts WHERE agent = (SELECT name FROM agents"
                    " WHERE id = $1) AND session IN (SELECT name FROM gone)"
                    " AND (status <> 'firing' OR acked_ns > 0))"
                    " SELECT count(*)::bigint FROM gone",
                    &d, &res);
        if (rc == 0) {
            rep->sessions += (uint64_t)pg_i64(res, 0, 0);
            PQclear(res);
        }
        free(names);
    }
    return rc;
}

/* Remove batch f (decoded or not) and what came from it. */
static int frame_drop(struct pg_retain *r, struct frame *f, int decoded, int was_kept,
                      struct store_retention_report *rep)
{
    int rc = 0;
    if (decoded) {
        struct refs *x = malloc(sizeof *x);
        if (!x) {
            return -ENOMEM;
        }
        tt__batch b = f->b;
        for (int more = 1; more && rc == 0;) {
            more = gather(&b, x);
            rc = derived_drop(r, f, x, rep);
        }
        free(x);
    }
    struct pg_params p = {0};
    pg_p_i64(&p, f->id);
    rc = rc ? rc : q(r, "DELETE FROM frames WHERE id = $1", &p, NULL);
    rc = rc ? rc : q(r, "DELETE FROM retain_keep WHERE frame_id = $1", &p, NULL);
    /* The high-water mark of what went, compared unsigned (the sign bit flipped). */
    struct pg_params m = {0};
    pg_p_i64(&m, f->instance_id);
    pg_p_i64(&m, (int64_t)(f->first_seq + f->n - 1));
    pg_p_i64(&m, (int64_t)f->n);
    rc = rc ? rc
            : q(r,
                "INSERT INTO retain_instances(instance_id, pruned_max, pruned_events)"
                " VALUES($1, $2, $3) ON CONFLICT(instance_id) DO UPDATE SET pruned_max = CASE"
                " WHEN (excluded.pruned_max # (-9223372036854775807 - 1)) >"
                " (retain_instances.pruned_max # (-9223372036854775807 - 1))"
                " THEN excluded.pruned_max ELSE retain_instances.pruned_max END,"
                " pruned_events = retain_instances.pruned_events + excluded.pruned_events",
                &m, NULL);
    if (rc) {
        return rc;
    }
    rep->batches++;
    rep->events += f->n;
    rep->bytes += (uint64_t)f->stored_bytes;
    rep->kept_batches += was_kept != 0;
    r->frames_bytes -= f->stored_bytes + FRAME_ROW_BYTES;
    r->removed_unvacuumed += (uint64_t)f->stored_bytes + FRAME_ROW_BYTES;
    if (f->t_max > r->pruned_through) {
        r->pruned_through = f->t_max;
    }
    return 0;
}

/* --- a pass, in steps ---------------------------------------------------------------------- */

static int64_t horizon(int64_t now, int64_t age)
{
    return age > 0 ? now - age : INT64_MIN;
}

/* Candidate batches of the current phase, at most STEP_FRAMES, with their payloads. */
static int candidates(struct pg_retain *r, enum phase phase, const struct store_retention *p,
                      int64_t now, PGresult **res)
{
    int64_t keep_f = p->keep_flagged_ns ? p->keep_flagged_ns : p->max_age_ns;
    int64_t keep_a = p->keep_alerted_ns ? p->keep_alerted_ns : p->max_age_ns;
    struct pg_params a = {0};
    const char *sql;
    switch (phase) {
    case PH_AGE:
    case PH_SIZE:
        pg_p_i64(&a, phase == PH_AGE ? horizon(now, p->max_age_ns) : INT64_MAX);
        sql = "SELECT " FRAME_COLS " FROM frames f WHERE LEAST(f.t_max, f.received) < $1"
              " AND NOT EXISTS (SELECT 1 FROM retain_keep k WHERE k.frame_id = f.id)"
              " ORDER BY LEAST(f.t_max, f.received) LIMIT $2";
        break;
    case PH_AGE_KEEP:
        pg_p_i64(&a, p->max_age_ns ? horizon(now, keep_f) : INT64_MIN);
        pg_p_i64(&a, p->max_age_ns ? horizon(now, keep_a) : INT64_MIN);
        sql = "SELECT " FRAME_COLS " FROM retain_keep k JOIN frames f ON f.id = k.frame_id"
              " WHERE ((k.cls & 1) = 0 OR LEAST(f.t_max, f.received) < $1)"
              " AND ((k.cls & 2) = 0 OR LEAST(f.t_max, f.received) < $2)"
              " ORDER BY LEAST(f.t_max, f.received) LIMIT $3";
        break;
    case PH_SIZE_KEEP:
        sql = "SELECT " FRAME_COLS " FROM retain_keep k JOIN frames f ON f.id = k.frame_id"
              " ORDER BY LEAST(f.t_max, f.received) LIMIT $1";
        break;
    default:
        return 0;
    }
    pg_p_i64(&a, STEP_FRAMES);
    int rc = q(r, sql, &a, res);
    return rc ? rc : PQntuples(*res);
}

/* Whether a batch of class cls, newest event t_max, is still kept in this phase. */
static int kept(const struct store_retention *p, int64_t now, enum phase ph, int cls, int64_t t_max)
{
    if (ph == PH_SIZE_KEEP) {
        return 0;
    }
    if (ph == PH_SIZE || !p->max_age_ns) {
        return cls != 0; /* ordinary batches go first */
    }
    int64_t keep_f = p->keep_flagged_ns ? p->keep_flagged_ns : p->max_age_ns;
    int64_t keep_a = p->keep_alerted_ns ? p->keep_alerted_ns : p->max_age_ns;
    return ((cls & CLS_FLAGGED) && t_max >= horizon(now, keep_f)) ||
           ((cls & CLS_ALERTED) && t_max >= horizon(now, keep_a));
}

static int phase_active(struct pg_retain *r, const struct store_retention *p, enum phase ph,
                        int *active)
{
    *active = 0;
    if (ph == PH_AGE || ph == PH_AGE_KEEP) {
        *active = p->max_age_ns > 0;
    } else if ((ph == PH_SIZE || ph == PH_SIZE_KEEP) && p->max_bytes) {
        int rc = measure(r);
        if (rc) {
            return rc;
        }
        *active = used_bytes(r) > size_target(p->max_bytes);
    }
    return 0;
}

/* One step: a transaction under the writers' lock of at most STEP_FRAMES batches or STEP_NS.
 * 1 if the pass has more to do, 0 when it is done, negative on an error. */
static int step(struct pg_retain *r, enum phase *phase, const struct store_retention *p,
                int64_t now, struct store_retention_report *rep)
{
    uint64_t t0 = tt__mono_ns();
    int64_t through = r->pruned_through;
    int64_t frames_bytes = r->frames_bytes;
    char lock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%lld)", (long long)PG_WRITER_LOCK);
    struct store_retention_report part = {0};
    int rc = q(r, "BEGIN", NULL, NULL);
    rc = rc ? rc : q(r, lock, NULL, NULL);
    int done = 0;
    while (rc == 0 && tt__mono_ns() - t0 < STEP_NS) {
        int active = 0;
        while (rc == 0 && *phase != PH_DONE && (rc = phase_active(r, p, *phase, &active)) == 0 &&
               !active) {
            (*phase)++;
        }
        if (rc) {
            break;
        }
        if (*phase == PH_DONE) {
            done = 1;
            break;
        }
        PGresult *res = NULL;
        int n = candidates(r, *phase, p, now, &res);
        if (n <= 0) {
            rc = n;
            PQclear(res);
            (*phase)++;
            continue;
        }
        int by_size = *phase == PH_SIZE || *phase == PH_SIZE_KEEP;
        for (int i = 0; i < n && rc == 0; i++) {
            struct frame f;
            int dec = frame_load(r, res, i, &f);
            int cls = 0;
            rc = dec ? classify(r, &f, p->keep_below_confidence, &cls) : 0;
            if (rc) {
                break;
            }
            if (kept(p, now, *phase, cls, f.t_max)) {
                struct pg_params k = {0};
                pg_p_i64(&k, f.id);
                pg_p_i64(&k, cls);
                rc = q(r,
                       "INSERT INTO retain_keep(frame_id, cls) VALUES($1, $2)"
                       " ON CONFLICT(frame_id) DO UPDATE SET cls = excluded.cls",
                       &k, NULL);
            } else {
                rc = frame_drop(r, &f, dec, cls, &part);
            }
            /* By size, stop as soon as under the target (the removed bytes are counted). */
            if (by_size && used_bytes(r) <= size_target(p->max_bytes)) {
                break;
            }
            if (tt__mono_ns() - t0 >= STEP_NS) {
                break;
            }
        }
        PQclear(res);
    }
    if (rc == 0 && r->pruned_through != through) {
        struct pg_params m = {0};
        char v[32];
        snprintf(v, sizeof v, "%" PRId64, r->pruned_through);
        p_text(&m, v);
        rc = q(r,
               "INSERT INTO telltale_meta(key, value) VALUES('retain_pruned_through', $1)"
               " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               &m, NULL);
    }
    rc = rc ? rc : q(r, "COMMIT", NULL, NULL);
    if (rc) {
        if (PQstatus(r->c) == CONNECTION_OK) {
            PGresult *x = PQexec(r->c, "ROLLBACK");
            PQclear(x);
        }
        r->pruned_through = through;
        r->frames_bytes = frames_bytes;
        r->counted = 0;
        return rc;
    }
    rep->batches += part.batches;
    rep->events += part.events;
    rep->bytes += part.bytes;
    rep->kept_batches += part.kept_batches;
    rep->responses += part.responses;
    rep->sessions += part.sessions;
    return done ? 0 : 1;
}

/* After a pass that removed enough, make the space reusable (PostgreSQL's autovacuum would,
 * later): at most every 2 s, when an eighth of the target or 10 s worth went. */
static void vacuum(struct pg_retain *r, const struct store_retention *p)
{
    uint64_t now = tt__mono_ns();
    uint64_t enough = p->max_bytes ? size_target(p->max_bytes) / 8 : 1u << 20;
    if (!r->removed_unvacuumed || now - r->vacuum_ns < 2000000000ull ||
        (r->removed_unvacuumed < enough && now - r->vacuum_ns < 10000000000ull)) {
        return;
    }
    r->vacuum_ns = now;
    PGresult *res = PQexec(r->c, vacuum_sql);
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
        r->removed_unvacuumed = 0;
    } else if (!r->vacuum_warned++) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        log_warn("store: retention: VACUUM of telltale's tables failed (SQLSTATE %s): the space "
                 "of removed batches is reused once autovacuum gets to them",
                 state ? state : "none");
    }
    PQclear(res);
}

static void report_end(struct pg_retain *r, struct store_retention_report *rep)
{
    rep->pruned_through_ns = r->pruned_through;
    int64_t v = 0;
    if (q_i64(r, "SELECT min(LEAST(t_max, received)) FROM frames", NULL, 0, &v) == 0) {
        rep->oldest_kept_ns = v;
    }
    if (q_i64(r, "SELECT count(*)::bigint FROM retain_keep", NULL, 0, &v) == 0) {
        rep->kept_now = (uint64_t)v;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT COALESCE(sum(pg_total_relation_size(to_regclass(t))), 0)::bigint"
             " FROM unnest(%s::text[]) t",
             all_tables);
    if (q_i64(r, sql, NULL, 0, &v) == 0) {
        rep->disk_bytes = (uint64_t)v;
    }
    if (r->counted) {
        rep->used_bytes = used_bytes(r);
    }
}

int pg_retention_run(struct store *s, const struct store_retention *policy, int64_t now_ns,
                     struct store_retention_report *out)
{
    struct pg_retain *r = pg_store_retain(s);
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->lock);
    int rc = connect_once(r);
    enum phase ph = PH_AGE;
    while (rc == 0 && (rc = step(r, &ph, policy, now_ns, out)) == 1) {
        rc = 0;
    }
    if (rc == 0) {
        vacuum(r, policy);
        report_end(r, out);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

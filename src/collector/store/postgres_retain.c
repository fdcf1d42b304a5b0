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

#define STEP_FRAMES 64
#define STEP_NS (20u * 1000 * 1000)
#define STEP_URGENT_NS (100u * 1000 * 1000)
#define CLS_FLAGGED 1
#define CLS_ALERTED 2
#define FRAME_ROW_BYTES 320                     /* a frames row and its index entries */
#define RECOUNT_NS (60ull * 1000 * 1000 * 1000) /* full count of the batches' bytes */

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
    /* the batches' bytes (what --max-bytes limits, with the other tables) */
    int64_t frames_bytes, last_id;
    uint64_t counted_ns;
    int counted;
    uint64_t other_bytes;
    uint64_t removed_unvacuumed; /* bytes removed since the last VACUUM */
    uint64_t vacuum_ns;
    int vacuum_warned;
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

/* Array literals in text form, each a parameter of its own: "{1,2}" or {"\\x6869"}. */
struct txt {
    char *p;
    size_t len, cap;
};

static int txt_put(struct txt *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *p = realloc(t->p, cap);
        if (!p) {
            return -ENOMEM;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = 0;
    return 0;
}

static int txt_ids(struct txt *t, const int64_t *ids, size_t n, size_t stride)
{
    t->len = 0;
    int rc = txt_put(t, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char one[32];
        int k = snprintf(one, sizeof one, "%s%" PRId64, i ? "," : "", ids[i * stride]);
        rc = txt_put(t, one, (size_t)k);
    }
    return rc ? rc : txt_put(t, "}", 1);
}

static int txt_names(struct txt *t, const tt__bstr *names, size_t n, size_t stride)
{
    static const char hex[] = "0123456789abcdef";
    t->len = 0;
    int rc = txt_put(t, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const tt__bstr *b = (const tt__bstr *)((const char *)names + i * stride);
        rc = txt_put(t, i ? ",\"\\\\x" : "\"\\\\x", i ? 5 : 4);
        for (size_t k = 0; k < b->n && rc == 0; k++) {
            char two[2] = {hex[b->p[k] >> 4], hex[b->p[k] & 15]};
            rc = txt_put(t, two, 2);
        }
        rc = rc ? rc : txt_put(t, "\"", 1);
    }
    return rc ? rc : txt_put(t, "}", 1);
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
    int rc =
        q(r,
          "SELECT COALESCE(sum(pg_column_size(data) + $2::bigint), 0)::bigint, max(id) FROM frames"
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

/* --- the batches of one step ---------------------------------------------------------------- */

struct frame {
    int64_t id, agent_id, instance_id, t_max, stored_bytes;
    uint64_t first_seq, n;
    int decoded, cls, drop;
    uint8_t *raw; /* owned: the decoded payload the events point into */
    tt__batch b;
};

/* Columns of the candidate queries. */
#define FRAME_COLS                                                                                 \
    "f.id, f.agent_id, f.instance_id, f.first_seq, f.n, LEAST(f.t_max, f.received), f.codec,"      \
    " f.raw_len, f.data, pg_column_size(f.data)::bigint"

/* Row i of res into f, decoded when it can be (else it goes without derived rows). */
static int frame_load(struct pg_retain *r, const PGresult *res, int i, struct frame *f)
{
    memset(f, 0, sizeof *f);
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
    if (raw_len > TT_FRAME_RAW_MAX || !data) {
        return 0;
    }
    if (!(f->raw = malloc(raw_len ? raw_len : 1))) {
        return -ENOMEM;
    }
    int ok;
    if (codec == 1) {
        size_t n = ZSTD_decompressDCtx(r->dctx, f->raw, raw_len, data, data_len);
        ok = !ZSTD_isError(n) && n == raw_len;
    } else {
        ok = data_len == raw_len;
        if (ok && raw_len) {
            memcpy(f->raw, data, raw_len);
        }
    }
    tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
    const char *why;
    f->decoded = ok && tt__batch_parse(&f->b, f->raw, raw_len, &lim, &why) == 0;
    return 0;
}

/* What the step's batches refer to: (instance, id) of steps and responses, (agent, session,
 * events) of sessions, each with the batch it came from. */
struct ref {
    int64_t key, id; /* instance and step or response id; or agent and event count */
    tt__bstr name;   /* sessions */
    int frame;
};
struct refs {
    struct ref *v;
    size_t n, cap;
};

static int ref_add(struct refs *x, int64_t key, int64_t id, tt__bstr name, int frame)
{
    /* Neighbours repeat (a response's tokens, a session's events): a short look back. */
    for (size_t i = x->n; i > 0 && i + 8 > x->n; i--) {
        struct ref *o = &x->v[i - 1];
        if (o->frame == frame && o->key == key && o->name.n == name.n &&
            (name.n ? !memcmp(o->name.p, name.p, name.n) : o->id == id)) {
            o->id += name.n ? id : 0; /* sessions: count the events */
            return 0;
        }
    }
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        struct ref *v = realloc(x->v, cap * sizeof *v);
        if (!v) {
            return -ENOMEM;
        }
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n++] = (struct ref){key, id, name, frame};
    return 0;
}

/* txt_ids reads the int64 members of an array of them with a stride in int64s. */
_Static_assert(sizeof(struct ref) % sizeof(int64_t) == 0, "struct ref: a whole number of int64");

struct batch_refs {
    struct refs steps, resp, sess;
};

/* Walk batch f (index fi) into x; its CLS_FLAGGED bit when an event carries a verdict. */
static int gather(struct batch_refs *x, struct frame *f, int fi)
{
    tt__batch b = f->b; /* a copy: iteration state is ours */
    tt__event ev;
    static const tt__bstr none = {NULL, 0};
    int rc = 0;
    while (rc == 0 && tt__batch_next(&b, &ev)) {
        if (ev.session.n) {
            rc = ref_add(&x->sess, f->agent_id, 1, ev.session, fi);
        }
        uint64_t id;
        uint32_t verdict;
        if (rc == 0 && ev.kind == TT_EV_STEP_BEGIN) {
            tt__ev_step_begin m;
            if (tt__ev_step_begin_decode(ev.body, &m) == 0) {
                rc = ref_add(&x->steps, f->instance_id, (int64_t)m.step_id, none, fi);
            }
        } else if (rc == 0 && ev.kind == TT_EV_STEP_END) {
            tt__ev_step_end m;
            if (tt__ev_step_end_decode(ev.body, &m) == 0) {
                rc = ref_add(&x->steps, f->instance_id, (int64_t)m.step_id, none, fi);
            }
        } else if (rc == 0 && store_event_response(&ev, &id, &verdict)) {
            rc = ref_add(&x->resp, f->instance_id, (int64_t)id, none, fi);
            f->cls |= verdict != 0 ? CLS_FLAGGED : 0;
        }
    }
    return rc;
}

/* Two arrays of refs (their key and id) as parameters $n+1, $n+2. */
static int p_pairs(struct pg_params *p, struct txt *a, struct txt *b, const struct refs *x)
{
    int rc = txt_ids(a, &x->v[0].key, x->n, sizeof x->v[0] / sizeof(int64_t));
    rc = rc ? rc : txt_ids(b, &x->v[0].id, x->n, sizeof x->v[0] / sizeof(int64_t));
    if (rc == 0) {
        p_text(p, a->p);
        p_text(p, b->p);
    }
    return rc;
}

/* The classes of the step's batches: a response of theirs flagged, halted or below the
 * confidence (from the responses table), a session of theirs with an alert. */
static int classify(struct pg_retain *r, struct frame *fr, const struct batch_refs *x, double below,
                    struct txt t[3])
{
    int rc = 0;
    if (x->resp.n) {
        struct pg_params p = {0};
        PGresult *res = NULL;
        rc = p_pairs(&p, &t[0], &t[1], &x->resp);
        pg_p_f64(&p, below);
        rc = rc ? rc
                : q(r,
                    "SELECT DISTINCT r.instance_id, r.response_id FROM responses r JOIN"
                    " unnest($1::int8[], $2::int8[]) u(i, id) ON r.instance_id = u.i AND"
                    " r.response_id = u.id WHERE r.verdict <> 0 OR r.min_window_confidence < $3",
                    &p, &res);
        for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
            int64_t inst = pg_i64(res, i, 0), id = pg_i64(res, i, 1);
            for (size_t k = 0; k < x->resp.n; k++) {
                if (x->resp.v[k].key == inst && x->resp.v[k].id == id) {
                    fr[x->resp.v[k].frame].cls |= CLS_FLAGGED;
                }
            }
        }
        PQclear(res);
    }
    if (rc == 0 && x->sess.n) {
        struct pg_params p = {0};
        PGresult *res = NULL;
        rc = txt_ids(&t[0], &x->sess.v[0].key, x->sess.n, sizeof x->sess.v[0] / sizeof(int64_t));
        p_text(&p, t[0].p);
        rc = rc ? rc
                : q(r,
                    "SELECT DISTINCT a.id, al.session FROM alerts al JOIN agents a"
                    " ON a.name = al.agent WHERE al.session IS NOT NULL"
                    " AND a.id = ANY($1::int8[])",
                    &p, &res);
        for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
            int64_t agent = pg_i64(res, i, 0);
            size_t n;
            const char *sess = pg_bytes(res, i, 1, &n);
            for (size_t k = 0; k < x->sess.n; k++) {
                const struct ref *o = &x->sess.v[k];
                if (o->key == agent && o->name.n == n && !memcmp(o->name.p, sess, n)) {
                    fr[o->frame].cls |= CLS_ALERTED;
                }
            }
        }
        PQclear(res);
    }
    return rc;
}

static int64_t affected(PGresult *res)
{
    const char *s = PQcmdTuples(res);
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

/* Only the refs of batches that go. */
static void keep_dropped(struct refs *x, const struct frame *fr)
{
    size_t k = 0;
    for (size_t i = 0; i < x->n; i++) {
        if (fr[x->v[i].frame].drop) {
            x->v[k++] = x->v[i];
        }
    }
    x->n = k;
}

/* Remove the batches marked drop and what came from them: steps, responses with their tokens
 * and guard decisions, the sessions' counts (a session goes at 0, with its settled alerts),
 * the keep marks; the instances' high-water marks of what went move up. */
static int drop_batches(struct pg_retain *r, struct frame *fr, int n, struct batch_refs *x,
                        struct txt t[3], struct store_retention_report *rep)
{
    int rc = 0;
    keep_dropped(&x->steps, fr);
    keep_dropped(&x->resp, fr);
    keep_dropped(&x->sess, fr);
    if (x->steps.n) {
        struct pg_params p = {0};
        rc = p_pairs(&p, &t[0], &t[1], &x->steps);
        rc = rc ? rc
                : q(r,
                    "DELETE FROM steps s USING unnest($1::int8[], $2::int8[]) u(i, id)"
                    " WHERE s.instance_id = u.i AND s.step_id = u.id",
                    &p, NULL);
    }
    if (rc == 0 && x->resp.n) {
        struct pg_params p = {0};
        PGresult *res = NULL;
        rc = p_pairs(&p, &t[0], &t[1], &x->resp);
        rc = rc ? rc
                : q(r,
                    "DELETE FROM responses s USING (SELECT DISTINCT * FROM unnest($1::int8[],"
                    " $2::int8[])) u(i, id) WHERE s.instance_id = u.i AND s.response_id = u.id",
                    &p, &res);
        if (rc == 0) {
            rep->responses += (uint64_t)affected(res);
            PQclear(res);
        }
        rc = rc ? rc
                : q(r,
                    "DELETE FROM response_tokens s USING unnest($1::int8[], $2::int8[]) u(i, id)"
                    " WHERE s.instance_id = u.i AND s.response_id = u.id",
                    &p, NULL);
        rc = rc ? rc
                : q(r,
                    "DELETE FROM guard_events s USING unnest($1::int8[], $2::int8[]) u(i, id)"
                    " WHERE s.instance_id = u.i AND s.response_id = u.id",
                    &p, NULL);
    }
    if (rc == 0 && x->sess.n) {
        struct pg_params p = {0};
        PGresult *res = NULL;
        size_t stride = sizeof x->sess.v[0] / sizeof(int64_t);
        rc = txt_ids(&t[0], &x->sess.v[0].key, x->sess.n, stride);
        rc = rc ? rc : txt_names(&t[1], &x->sess.v[0].name, x->sess.n, sizeof x->sess.v[0]);
        rc = rc ? rc : txt_ids(&t[2], &x->sess.v[0].id, x->sess.n, stride);
        p_text(&p, t[0].p);
        p_text(&p, t[1].p);
        p_text(&p, t[2].p);
        rc = rc ? rc
                : q(r,
                    "WITH v AS (SELECT a, nm, sum(n) AS n FROM unnest($1::int8[], $2::bytea[],"
                    " $3::int8[]) u(a, nm, n) GROUP BY a, nm),"
                    " dec AS (UPDATE sessions s SET events = s.events - v.n FROM v"
                    " WHERE s.agent_id = v.a AND s.name = v.nm RETURNING s.agent_id, s.name,"
                    " s.events)"
                    " SELECT agent_id, name FROM dec WHERE events <= 0",
                    &p, &res);
        if (rc == 0 && PQntuples(res) > 0) {
            /* The sessions left without events go, with their settled alerts. */
            struct refs gone = {0};
            for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
                size_t nl;
                const char *nm = pg_bytes(res, i, 1, &nl);
                rc = ref_add(&gone, pg_i64(res, i, 0), 0, (tt__bstr){(const uint8_t *)nm, nl}, i);
            }
            struct pg_params d = {0};
            rc = rc ? rc : txt_ids(&t[0], &gone.v[0].key, gone.n, stride);
            rc = rc ? rc : txt_names(&t[1], &gone.v[0].name, gone.n, sizeof gone.v[0]);
            p_text(&d, t[0].p);
            p_text(&d, t[1].p);
            PGresult *g;
            rc =
                rc ? rc
                   : q(r,
                       "WITH gone AS (DELETE FROM sessions s USING unnest($1::int8[],"
                       " $2::bytea[]) u(a, nm) WHERE s.agent_id = u.a AND s.name = u.nm"
                       " AND s.events <= 0 RETURNING s.agent_id, s.name),"
                       " settled AS (DELETE FROM alerts al USING gone JOIN agents a"
                       " ON a.id = gone.agent_id WHERE al.agent = a.name"
                       " AND al.session = gone.name AND (al.status <> 'firing' OR al.acked_ns > 0))"
                       " SELECT count(*)::bigint FROM gone",
                       &d, &g);
            if (rc == 0) {
                rep->sessions += (uint64_t)pg_i64(g, 0, 0);
                PQclear(g);
            }
            free(gone.v);
        }
        PQclear(res);
    }
    /* The batches, their keep marks, the high-water marks (compared unsigned: sign flipped). */
    int64_t *ids = malloc((size_t)n * 3 * sizeof *ids);
    if (!ids) {
        return rc ? rc : -ENOMEM;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (fr[i].drop) {
            ids[k] = fr[i].id;
            ids[n + k] = fr[i].instance_id;
            ids[2 * n + k] = (int64_t)(fr[i].first_seq + fr[i].n - 1);
            k++;
        }
    }
    struct pg_params p = {0};
    rc = rc ? rc : txt_ids(&t[0], ids, (size_t)k, 1);
    p_text(&p, t[0].p);
    rc = rc ? rc : q(r, "DELETE FROM frames WHERE id = ANY($1::int8[])", &p, NULL);
    rc = rc ? rc : q(r, "DELETE FROM retain_keep WHERE frame_id = ANY($1::int8[])", &p, NULL);
    k = 0; /* the first n ids are the events of each now, beside its instance and last seq */
    for (int i = 0; i < n; i++) {
        if (fr[i].drop) {
            ids[k++] = (int64_t)fr[i].n;
        }
    }
    struct pg_params m = {0};
    rc = rc ? rc : txt_ids(&t[0], ids + n, (size_t)k, 1);
    rc = rc ? rc : txt_ids(&t[1], ids + 2 * n, (size_t)k, 1);
    rc = rc ? rc : txt_ids(&t[2], ids, (size_t)k, 1);
    p_text(&m, t[0].p);
    p_text(&m, t[1].p);
    p_text(&m, t[2].p);
    rc = rc ? rc
            : q(r,
                "INSERT INTO retain_instances(instance_id, pruned_max, pruned_events)"
                " SELECT i, max(l # (-9223372036854775807 - 1)) # (-9223372036854775807 - 1),"
                " sum(n)::bigint FROM unnest($1::int8[], $2::int8[], $3::int8[]) u(i, l, n)"
                " GROUP BY i ON CONFLICT(instance_id) DO UPDATE SET pruned_max = CASE"
                " WHEN (excluded.pruned_max # (-9223372036854775807 - 1)) >"
                " (retain_instances.pruned_max # (-9223372036854775807 - 1))"
                " THEN excluded.pruned_max ELSE retain_instances.pruned_max END,"
                " pruned_events = retain_instances.pruned_events + excluded.pruned_events",
                &m, NULL);
    free(ids);
    if (rc) {
        return rc;
    }
    for (int i = 0; i < n; i++) {
        if (fr[i].drop) {
            rep->batches++;
            rep->events += fr[i].n;
            rep->bytes += (uint64_t)fr[i].stored_bytes;
            rep->kept_batches += fr[i].cls != 0;
            r->frames_bytes -= fr[i].stored_bytes + FRAME_ROW_BYTES;
            r->removed_unvacuumed += (uint64_t)fr[i].stored_bytes + FRAME_ROW_BYTES;
            if (fr[i].t_max > r->pruned_through) {
                r->pruned_through = fr[i].t_max;
            }
        }
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

/* One round of a step: the candidate batches of the phase, classified, kept or removed
 * together. 0 when the phase has no more, 1 when it may, negative on an error. */
static int round_of(struct pg_retain *r, enum phase phase, const struct store_retention *p,
                    int64_t now, struct store_retention_report *rep, struct txt t[3])
{
    PGresult *res = NULL;
    int n = candidates(r, phase, p, now, &res);
    if (n <= 0) {
        PQclear(res);
        return n;
    }
    struct frame *fr = calloc((size_t)n, sizeof *fr);
    struct batch_refs x = {0};
    int rc = fr ? 0 : -ENOMEM;
    for (int i = 0; i < n && rc == 0; i++) {
        rc = frame_load(r, res, i, &fr[i]);
        rc = rc == 0 && fr[i].decoded ? gather(&x, &fr[i], i) : rc;
    }
    PQclear(res);
    rc = rc ? rc : classify(r, fr, &x, p->keep_below_confidence, t);
    int by_size = phase == PH_SIZE || phase == PH_SIZE_KEEP;
    uint64_t used = used_bytes(r), target = by_size ? size_target(p->max_bytes) : 0;
    int64_t *keep_ids = rc == 0 ? malloc((size_t)n * 2 * sizeof *keep_ids) : NULL;
    int kept_n = 0, drop_n = 0;
    rc = rc == 0 && !keep_ids ? -ENOMEM : rc;
    for (int i = 0; i < n && rc == 0; i++) {
        if (by_size && used <= target) {
            break; /* under the target: the rest stay */
        }
        if (kept(p, now, phase, fr[i].cls, fr[i].t_max)) {
            keep_ids[kept_n] = fr[i].id;
            keep_ids[n + kept_n++] = fr[i].cls;
        } else {
            fr[i].drop = 1;
            drop_n++;
            uint64_t b = (uint64_t)fr[i].stored_bytes + FRAME_ROW_BYTES;
            used = used > b ? used - b : 0;
        }
    }
    if (rc == 0 && kept_n) {
        struct pg_params k = {0};
        rc = txt_ids(&t[0], keep_ids, (size_t)kept_n, 1);
        rc = rc ? rc : txt_ids(&t[1], keep_ids + n, (size_t)kept_n, 1);
        p_text(&k, t[0].p);
        p_text(&k, t[1].p);
        rc = rc ? rc
                : q(r,
                    "INSERT INTO retain_keep(frame_id, cls) SELECT * FROM unnest($1::int8[],"
                    " $2::int8[]) ON CONFLICT(frame_id) DO UPDATE SET cls = excluded.cls",
                    &k, NULL);
    }
    rc = rc == 0 && drop_n ? drop_batches(r, fr, n, &x, t, rep) : rc;
    free(keep_ids);
    for (int i = 0; fr && i < n; i++) {
        free(fr[i].raw);
    }
    free(fr);
    free(x.steps.v);
    free(x.resp.v);
    free(x.sess.v);
    return rc ? rc : 1;
}

/* One step: a transaction under the writers' lock of rounds for at most STEP_NS (more when over
 * the size limit: what ingest adds must not outrun what goes). 1 if the pass has more to do, 0
 * when it is done, negative on an error. */
static int step(struct pg_retain *r, enum phase *phase, const struct store_retention *p,
                int64_t now, struct store_retention_report *rep)
{
    uint64_t t0 = tt__mono_ns();
    int64_t through = r->pruned_through;
    int64_t frames_bytes = r->frames_bytes;
    uint64_t unvacuumed = r->removed_unvacuumed;
    char lock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%lld)", (long long)PG_WRITER_LOCK);
    struct store_retention_report part = {0};
    struct txt t[3] = {{0}};
    int rc = q(r, "BEGIN", NULL, NULL);
    rc = rc ? rc : q(r, lock, NULL, NULL);
    int done = 0;
    uint64_t budget = STEP_NS;
    while (rc == 0 && tt__mono_ns() - t0 < budget) {
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
        if ((*phase == PH_SIZE || *phase == PH_SIZE_KEEP) && used_bytes(r) > p->max_bytes) {
            budget = STEP_URGENT_NS;
        }
        int more = round_of(r, *phase, p, now, &part, t);
        if (more < 0) {
            rc = more;
        } else if (more == 0) {
            (*phase)++;
        }
    }
    for (int i = 0; i < 3; i++) {
        free(t[i].p);
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
        r->removed_unvacuumed = unvacuumed;
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
 * later): at most once a second, when a sixteenth of the target (1 MiB without one) went, or
 * anything within 10 s. */
static void vacuum(struct pg_retain *r, const struct store_retention *p)
{
    uint64_t now = tt__mono_ns();
    uint64_t enough = p->max_bytes ? size_target(p->max_bytes) / 16 : 1u << 20;
    if (!r->removed_unvacuumed || now - r->vacuum_ns < 1000000000ull ||
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
        vacuum(r, policy); /* a long pass makes room as it goes, between two steps */
    }
    if (rc == 0) {
        vacuum(r, policy);
        report_end(r, out);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

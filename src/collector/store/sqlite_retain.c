/*
 * sqlite_retain.c - retention for the SQLite store (store.h's store_retention_run): batches
 * removed by age and by size on disk, whole, with the derived rows that came from them, some
 * kept longer on purpose; and the per-instance high-water mark of what was removed, which keeps
 * dedup exact after pruning (sqlite.c's dedup asks sqlite_retain_dedup).
 *
 * How it runs. A caller (any thread) queues a request and waits; the writer thread (sqlite.c's
 * writer_main) runs it in steps, one after each commit group, or back to back when no batch is
 * waiting. A step is one short transaction of its own on the writer's connection: at most
 * STEP_FRAMES batches or STEP_NS of work, so an acknowledgement waits at most one step for it.
 * Before the writer runs (unit tests), the caller runs the steps itself.
 *
 * A pass goes through phases: AGE (ordinary batches older than the age horizon), AGE_KEEP (kept
 * batches older than their class's horizon), SIZE (the oldest ordinary batches while the store
 * uses more than its target), SIZE_KEEP (then the oldest kept ones), DONE. A candidate batch is
 * decoded and classified: a batch holding an event of a flagged, halted or low-confidence
 * response is class FLAGGED, one holding an event of a session with an alert class ALERTED
 * (both bits may be set); a kept batch gets a row in retain_keep instead of going, and the
 * queries of the ordinary phases leave it out.
 *
 * Size. What the store uses is SQLite's pages in use (page_count - freelist_count) plus the
 * WAL file. Deleted pages go to the freelist and the next inserts reuse them, so the file
 * stops growing once pruning holds the pages in use under the target; the WAL is held small by
 * a checkpoint threshold and journal_size_limit derived from max_bytes. No auto_vacuum: it
 * would cost every insert a pointer-map update, and shrinking a file that is reused anyway buys
 * nothing (docs/design.md, "Stores").
 *
 * INVARIANTS
 * - Only the writer thread (or the caller before the writer starts) touches db and the
 *   statements; the request fields are under lock.
 * - A batch and everything removed with it go in one transaction: a reader sees the batch and
 *   its derived rows, or neither.
 * - pruned_max of an instance is at least the last sequence number of every batch of it that
 *   was removed, so a resend of a removed batch is never stored twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "collector/log.h"
#include "collector/store/sqlite.h"
#include "common/clock.h"

#define STEP_FRAMES 64
#define STEP_NS (4u * 1000 * 1000)
#define STEP_URGENT_NS (100u * 1000 * 1000)
#define CLS_FLAGGED 1
#define CLS_ALERTED 2

const char sqlite_retain_schema[] =
    "CREATE TABLE IF NOT EXISTS retain_keep(frame_id INTEGER PRIMARY KEY, cls INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS retain_instances(instance_id INTEGER PRIMARY KEY,"
    " pruned_max INTEGER NOT NULL, pruned_events INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS frames_age ON frames(min(t_max, received));";

enum phase { PH_AGE, PH_AGE_KEEP, PH_SIZE, PH_SIZE_KEEP, PH_DONE };

enum st_id {
    ST_PRUNED_GET,
    ST_PRUNED_PUT,
    ST_CAND_AGE,
    ST_CAND_KEEP_AGE,
    ST_CAND_KEEP_OLDEST,
    ST_FRAME,
    ST_FRAME_DEL,
    ST_KEEP_PUT,
    ST_KEEP_DEL,
    ST_RESP_GET,
    ST_ALERTED,
    ST_SESS_DEC,
    ST_SESS_DEL,
    ST_ALERT_DEL,
    ST_STEP_DEL,
    ST_RESP_DEL,
    ST_TOK_DEL,
    ST_GUARD_DEL,
    ST_META_PUT,
    ST_OLDEST,
    ST_KEPT_NOW,
    ST_PAGE_COUNT,
    ST_FREE_COUNT,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST__COUNT
};

static const char *const st_sql[ST__COUNT] = {
    [ST_PRUNED_GET] = "SELECT pruned_max FROM retain_instances WHERE instance_id=?1",
    [ST_PRUNED_PUT] = "INSERT INTO retain_instances(instance_id, pruned_max, pruned_events)"
                      " VALUES(?1,?2,?3) ON CONFLICT(instance_id) DO UPDATE SET"
                      " pruned_max=excluded.pruned_max,"
                      " pruned_events=pruned_events+excluded.pruned_events",
    [ST_CAND_AGE] = "SELECT f.id FROM frames f WHERE min(f.t_max, f.received) < ?1 AND NOT EXISTS"
                    " (SELECT 1 FROM retain_keep k WHERE k.frame_id=f.id)"
                    " ORDER BY min(f.t_max, f.received) LIMIT ?2",
    [ST_CAND_KEEP_AGE] = "SELECT f.id FROM retain_keep k JOIN frames f ON f.id=k.frame_id"
                         " WHERE ((k.cls&1)=0 OR min(f.t_max, f.received) < ?1)"
                         " AND ((k.cls&2)=0 OR min(f.t_max, f.received) < ?2)"
                         " ORDER BY min(f.t_max, f.received) LIMIT ?3",
    [ST_CAND_KEEP_OLDEST] = "SELECT f.id FROM retain_keep k JOIN frames f ON f.id=k.frame_id"
                            " ORDER BY min(f.t_max, f.received) LIMIT ?1",
    [ST_FRAME] = "SELECT agent_id, instance_id, first_seq, n, min(t_max, received), codec,"
                 " raw_len, data FROM frames WHERE id=?1",
    [ST_FRAME_DEL] = "DELETE FROM frames WHERE id=?1",
    [ST_KEEP_PUT] = "INSERT OR REPLACE INTO retain_keep(frame_id, cls) VALUES(?1,?2)",
    [ST_KEEP_DEL] = "DELETE FROM retain_keep WHERE frame_id=?1",
    [ST_RESP_GET] = "SELECT verdict, min_window_confidence FROM responses"
                    " WHERE instance_id=?1 AND response_id=?2",
    [ST_ALERTED] = "SELECT 1 FROM alerts WHERE agent=(SELECT name FROM agents WHERE id=?1)"
                   " AND session=?2 LIMIT 1",
    [ST_SESS_DEC] = "UPDATE sessions SET events=events-?3 WHERE agent_id=?1 AND name=?2",
    [ST_SESS_DEL] = "DELETE FROM sessions WHERE agent_id=?1 AND name=?2 AND events<=0",
    [ST_ALERT_DEL] = "DELETE FROM alerts WHERE agent=(SELECT name FROM agents WHERE id=?1)"
                     " AND session=?2 AND (status<>'firing' OR acked_ns>0)",
    [ST_STEP_DEL] = "DELETE FROM steps WHERE instance_id=?1 AND step_id=?2",
    [ST_RESP_DEL] = "DELETE FROM responses WHERE instance_id=?1 AND response_id=?2",
    [ST_TOK_DEL] = "DELETE FROM response_tokens WHERE instance_id=?1 AND response_id=?2",
    [ST_GUARD_DEL] = "DELETE FROM guard_events WHERE instance_id=?1 AND response_id=?2",
    [ST_META_PUT] = "INSERT OR REPLACE INTO meta(key, value) VALUES('retain_pruned_through', ?1)",
    [ST_OLDEST] = "SELECT min(t_max, received) FROM frames ORDER BY min(t_max, received) LIMIT 1",
    [ST_KEPT_NOW] = "SELECT count(*) FROM retain_keep",
    [ST_PAGE_COUNT] = "PRAGMA page_count",
    [ST_FREE_COUNT] = "PRAGMA freelist_count",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

struct sqlite_retain {
    sqlite3 *db; /* the writer's connection */
    char path[PATH_MAX];
    char wal[PATH_MAX + 8];
    sqlite3_stmt *st[ST__COUNT]; /* ST_PRUNED_GET at open, the others at the first step */
    int prepared;
    uint64_t page_size;
    uint64_t tuned_bytes; /* the max_bytes the WAL limits were set for */
    ZSTD_DCtx *dctx;
    uint8_t *raw;
    size_t raw_cap;
    int64_t pruned_through; /* persisted in meta */

    pthread_mutex_t lock; /* the request, down to result */
    pthread_cond_t cond;
    int pending; /* a request is queued or running */
    int finished;
    struct store_retention policy;
    int64_t now_ns;
    struct store_retention_report rep;
    int result;
    /* the running pass (writer only) */
    enum phase phase;
    /* By size, the writer also checks after each commit and prunes by itself when over the
     * target, so a burst between two requests cannot overshoot: the last size policy asked
     * for (under lock), the writer's own pass, and what it removed since the last report. */
    struct store_retention size_policy;
    enum phase bg_phase;
    int bg_running;
    struct store_retention_report bg_rep;
};

/* --- small helpers ------------------------------------------------------------------------- */

static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc;
}

static int64_t one_i64(sqlite3_stmt *st, int64_t def)
{
    int64_t v = def;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    return v;
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

int sqlite_retain_open(struct sqlite_retain **out, sqlite3 *db, const char *path)
{
    struct sqlite_retain *r = calloc(1, sizeof *r);
    if (!r) {
        return -ENOMEM;
    }
    r->db = db;
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->wal, sizeof r->wal, "%s-wal", path);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    *out = r;
    if (sqlite3_exec(db, sqlite_retain_schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(db, st_sql[ST_PRUNED_GET], -1, SQLITE_PREPARE_PERSISTENT,
                           &r->st[ST_PRUNED_GET], NULL) != SQLITE_OK) {
        return -EIO;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='retain_pruned_through'", -1, &st,
                           NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            r->pruned_through = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    return 0;
}

void sqlite_retain_close(struct sqlite_retain *r)
{
    if (!r) {
        return;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        sqlite3_finalize(r->st[i]);
    }
    ZSTD_freeDCtx(r->dctx);
    free(r->raw);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}

int sqlite_retain_dedup(struct sqlite_retain *r, int64_t instance_id, uint64_t first, uint64_t last)
{
    sqlite3_stmt *st = r->st[ST_PRUNED_GET];
    sqlite3_bind_int64(st, 1, instance_id);
    int found = sqlite3_step(st) == SQLITE_ROW;
    uint64_t pruned_max = found ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (!found || first > pruned_max) {
        return STORE_OK;
    }
    /* Below the mark: removed by retention (or a gap older than what is kept). */
    return last <= pruned_max ? STORE_DUP : STORE_REJECT;
}

static int prepare(struct sqlite_retain *r)
{
    for (int i = 0; i < ST__COUNT; i++) {
        if (!r->st[i] && sqlite3_prepare_v3(r->db, st_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                            &r->st[i], NULL) != SQLITE_OK) {
            log_warn("store: retention: preparing \"%.60s\": %s", st_sql[i], sqlite3_errmsg(r->db));
            return -EIO;
        }
    }
    r->dctx = ZSTD_createDCtx();
    if (!r->dctx) {
        return -ENOMEM;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->db, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK) {
        r->page_size = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        sqlite3_finalize(st);
    }
    if (!r->page_size) {
        r->page_size = 4096;
    }
    r->prepared = 1;
    return 0;
}

/* The WAL's share of max_bytes: a checkpoint every eighth of it, the file cut back to it. */
static uint64_t wal_allowance(uint64_t max_bytes)
{
    return max_bytes / 8;
}

static void tune_wal(struct sqlite_retain *r, uint64_t max_bytes)
{
    if (!max_bytes || r->tuned_bytes == max_bytes) {
        return;
    }
    uint64_t wal = wal_allowance(max_bytes);
    uint64_t pages = wal / 2 / r->page_size;
    char sql[160];
    snprintf(sql, sizeof sql,
             "PRAGMA wal_autocheckpoint=%" PRIu64 "; PRAGMA journal_size_limit=%" PRIu64,
             pages < 16     ? 16
             : pages > 4096 ? 4096
                            : pages,
             wal);
    sqlite3_exec(r->db, sql, NULL, NULL, NULL);
    r->tuned_bytes = max_bytes;
}

/* The database's pages in use: what pruning by size acts on (the WAL is held under its
 * allowance by the checkpoint settings, and deleting writes to it: counting it here would
 * prune on and on within one pass). */
static uint64_t pages_bytes(struct sqlite_retain *r)
{
    int64_t pages = one_i64(r->st[ST_PAGE_COUNT], 0);
    int64_t free_pages = one_i64(r->st[ST_FREE_COUNT], 0);
    return (uint64_t)(pages - free_pages) * r->page_size;
}

/* What the store uses on disk for the report: pages in use plus the WAL. */
static uint64_t used_bytes(struct sqlite_retain *r)
{
    return pages_bytes(r) + file_size(r->wal);
}

/* What pruning by size holds the pages in use under: max_bytes less the WAL's allowance and an
 * eighth of headroom for what one commit group adds before the writer prunes again. */
static uint64_t size_target(uint64_t max_bytes)
{
    return max_bytes - wal_allowance(max_bytes) - max_bytes / 8;
}

/* --- one batch ----------------------------------------------------------------------------- */

struct frame {
    int64_t id, agent_id, instance_id, t_max;
    uint64_t first_seq, n;
    size_t stored_bytes;
    tt__batch b;
};

/* Read and decode batch id into f. 1, 0 when it cannot be decoded (it goes without derived
 * rows), negative on a storage error. */
static int frame_load(struct sqlite_retain *r, int64_t id, struct frame *f)
{
    sqlite3_stmt *st = r->st[ST_FRAME];
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
    }
    f->id = id;
    f->agent_id = sqlite3_column_int64(st, 0);
    f->instance_id = sqlite3_column_int64(st, 1);
    f->first_seq = (uint64_t)sqlite3_column_int64(st, 2);
    f->n = (uint64_t)sqlite3_column_int64(st, 3);
    f->t_max = sqlite3_column_int64(st, 4);
    int codec = sqlite3_column_int(st, 5);
    size_t raw_len = (size_t)sqlite3_column_int64(st, 6);
    const void *data = sqlite3_column_blob(st, 7);
    size_t data_len = (size_t)sqlite3_column_bytes(st, 7);
    f->stored_bytes = data_len;
    int ok = raw_len <= TT_FRAME_RAW_MAX && data;
    if (ok && raw_len > r->raw_cap) {
        uint8_t *p = realloc(r->raw, raw_len);
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
        if (ok) {
            memcpy(r->raw, data, raw_len);
        }
    }
    sqlite3_reset(st);
    tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
    const char *why;
    return ok && tt__batch_parse(&f->b, r->raw, raw_len, &lim, &why) == 0;
}

/* CLS_* bits of a decoded batch. */
static int classify(struct sqlite_retain *r, const struct frame *f, double below)
{
    int cls = 0;
    tt__batch b = f->b;
    tt__event ev;
    uint64_t last_resp = 0;
    int have_resp = 0;
    tt__bstr last_sess = {NULL, 0};
    while (tt__batch_next(&b, &ev) && cls != (CLS_FLAGGED | CLS_ALERTED)) {
        uint64_t id;
        uint32_t verdict;
        if (!(cls & CLS_FLAGGED) && store_event_response(&ev, &id, &verdict)) {
            if (verdict != 0) {
                cls |= CLS_FLAGGED;
            } else if (!have_resp || id != last_resp) {
                have_resp = 1;
                last_resp = id;
                sqlite3_stmt *st = r->st[ST_RESP_GET];
                sqlite3_bind_int64(st, 1, f->instance_id);
                sqlite3_bind_int64(st, 2, (int64_t)id);
                if (sqlite3_step(st) == SQLITE_ROW) {
                    int64_t v = sqlite3_column_int64(st, 0);
                    int low = sqlite3_column_type(st, 1) != SQLITE_NULL &&
                              sqlite3_column_double(st, 1) < below;
                    if (v != 0 || low) {
                        cls |= CLS_FLAGGED;
                    }
                }
                sqlite3_reset(st);
            }
        }
        if (!(cls & CLS_ALERTED) && ev.session.n &&
            (ev.session.n != last_sess.n || memcmp(ev.session.p, last_sess.p, ev.session.n))) {
            last_sess = ev.session;
            sqlite3_stmt *st = r->st[ST_ALERTED];
            sqlite3_bind_int64(st, 1, f->agent_id);
            sqlite3_bind_text(st, 2, (const char *)ev.session.p, (int)ev.session.n, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                cls |= CLS_ALERTED;
            }
            sqlite3_reset(st);
        }
    }
    return cls;
}

static int bind2_run(sqlite3_stmt *st, int64_t a, int64_t b)
{
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    return run(st);
}

/* A session's share of the batch going: the count goes down, the row (and its settled alerts)
 * when nothing is left. */
static int session_drop(struct sqlite_retain *r, int64_t agent_id, tt__bstr name, int64_t events,
                        struct store_retention_report *rep)
{
    sqlite3_stmt *st = r->st[ST_SESS_DEC];
    sqlite3_bind_int64(st, 1, agent_id);
    sqlite3_bind_text(st, 2, (const char *)name.p, (int)name.n, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, events);
    int rc = run(st);
    if (rc) {
        return rc;
    }
    st = r->st[ST_SESS_DEL];
    sqlite3_bind_int64(st, 1, agent_id);
    sqlite3_bind_text(st, 2, (const char *)name.p, (int)name.n, SQLITE_STATIC);
    rc = run(st);
    if (rc || sqlite3_changes(r->db) == 0) {
        return rc;
    }
    rep->sessions++;
    st = r->st[ST_ALERT_DEL];
    sqlite3_bind_int64(st, 1, agent_id);
    sqlite3_bind_text(st, 2, (const char *)name.p, (int)name.n, SQLITE_STATIC);
    return run(st);
}

/* Remove the derived rows that came from the batch. */
static int derived_drop(struct sqlite_retain *r, const struct frame *f,
                        struct store_retention_report *rep)
{
    tt__batch b = f->b;
    tt__event ev;
    int rc = 0;
    uint64_t last_resp = 0;
    int have_resp = 0;
    tt__bstr sess = {NULL, 0};
    int64_t sess_events = 0;
    while (rc == 0 && tt__batch_next(&b, &ev)) {
        if (ev.session.n &&
            (ev.session.n != sess.n || memcmp(ev.session.p, sess.p, ev.session.n) != 0)) {
            rc = sess_events ? session_drop(r, f->agent_id, sess, sess_events, rep) : 0;
            sess = ev.session;
            sess_events = 0;
        }
        sess_events += ev.session.n != 0;
        uint64_t id;
        uint32_t verdict;
        if (rc) {
            break;
        }
        if (ev.kind == TT_EV_STEP_BEGIN) {
            tt__ev_step_begin m;
            if (tt__ev_step_begin_decode(ev.body, &m) == 0) {
                rc = bind2_run(r->st[ST_STEP_DEL], f->instance_id, (int64_t)m.step_id);
            }
        } else if (ev.kind == TT_EV_STEP_END) {
            tt__ev_step_end m;
            if (tt__ev_step_end_decode(ev.body, &m) == 0) {
                rc = bind2_run(r->st[ST_STEP_DEL], f->instance_id, (int64_t)m.step_id);
            }
        } else if (store_event_response(&ev, &id, &verdict) && (!have_resp || id != last_resp)) {
            have_resp = 1;
            last_resp = id;
            rc = bind2_run(r->st[ST_RESP_DEL], f->instance_id, (int64_t)id);
            rep->responses += rc == 0 ? (uint64_t)sqlite3_changes(r->db) : 0;
            rc = rc ? rc : bind2_run(r->st[ST_TOK_DEL], f->instance_id, (int64_t)id);
            rc = rc ? rc : bind2_run(r->st[ST_GUARD_DEL], f->instance_id, (int64_t)id);
        }
    }
    if (rc == 0 && sess_events) {
        rc = session_drop(r, f->agent_id, sess, sess_events, rep);
    }
    return rc;
}

/* Remove batch f (decoded or not) and what came from it. */
static int frame_drop(struct sqlite_retain *r, const struct frame *f, int decoded, int was_kept,
                      struct store_retention_report *rep)
{
    int rc = decoded ? derived_drop(r, f, rep) : 0;
    rc = rc ? rc : bind2_run(r->st[ST_FRAME_DEL], f->id, 0);
    rc = rc ? rc : bind2_run(r->st[ST_KEEP_DEL], f->id, 0);
    if (rc) {
        return rc;
    }
    /* The high-water mark of what went, compared unsigned. */
    uint64_t last = f->first_seq + f->n - 1;
    sqlite3_stmt *st = r->st[ST_PRUNED_GET];
    sqlite3_bind_int64(st, 1, f->instance_id);
    uint64_t mark = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    st = r->st[ST_PRUNED_PUT];
    sqlite3_bind_int64(st, 1, f->instance_id);
    sqlite3_bind_int64(st, 2, (int64_t)(last > mark ? last : mark));
    sqlite3_bind_int64(st, 3, (int64_t)f->n);
    rc = run(st);
    if (rc) {
        return rc;
    }
    rep->batches++;
    rep->events += f->n;
    rep->bytes += f->stored_bytes;
    rep->kept_batches += was_kept != 0;
    if (f->t_max > r->pruned_through) {
        r->pruned_through = f->t_max;
    }
    return 0;
}

/* --- a pass, in steps ---------------------------------------------------------------------- */

/* Batches whose newest event is below this are older than age (none when age is 0). */
static int64_t horizon(int64_t now, int64_t age)
{
    return age > 0 ? now - age : INT64_MIN;
}

/* Candidate batch ids of the current phase into ids (at most cap): how many. */
static int candidates(struct sqlite_retain *r, enum phase phase, const struct store_retention *p,
                      int64_t now, int64_t *ids, int cap)
{
    sqlite3_stmt *st;
    int64_t keep_f = p->keep_flagged_ns ? p->keep_flagged_ns : p->max_age_ns;
    int64_t keep_a = p->keep_alerted_ns ? p->keep_alerted_ns : p->max_age_ns;
    switch (phase) {
    case PH_AGE:
        st = r->st[ST_CAND_AGE];
        sqlite3_bind_int64(st, 1, horizon(now, p->max_age_ns));
        sqlite3_bind_int(st, 2, cap);
        break;
    case PH_AGE_KEEP:
        st = r->st[ST_CAND_KEEP_AGE];
        sqlite3_bind_int64(st, 1, p->max_age_ns ? horizon(now, keep_f) : INT64_MIN);
        sqlite3_bind_int64(st, 2, p->max_age_ns ? horizon(now, keep_a) : INT64_MIN);
        sqlite3_bind_int(st, 3, cap);
        break;
    case PH_SIZE:
        st = r->st[ST_CAND_AGE];
        sqlite3_bind_int64(st, 1, INT64_MAX);
        sqlite3_bind_int(st, 2, cap);
        break;
    case PH_SIZE_KEEP:
        st = r->st[ST_CAND_KEEP_OLDEST];
        sqlite3_bind_int(st, 1, cap);
        break;
    default:
        return 0;
    }
    int n = 0, rc;
    while (n < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        ids[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    return n;
}

/* Whether a batch of class cls, newest event t_max, is still kept in this phase. */
static int kept(const struct store_retention *p, int64_t now, enum phase ph, int cls, int64_t t_max)
{
    if (ph == PH_SIZE_KEEP) {
        return 0;
    }
    if (ph == PH_SIZE) {
        return cls != 0; /* ordinary batches go first */
    }
    if (!p->max_age_ns) {
        return cls != 0;
    }
    int64_t keep_f = p->keep_flagged_ns ? p->keep_flagged_ns : p->max_age_ns;
    int64_t keep_a = p->keep_alerted_ns ? p->keep_alerted_ns : p->max_age_ns;
    return ((cls & CLS_FLAGGED) && t_max >= horizon(now, keep_f)) ||
           ((cls & CLS_ALERTED) && t_max >= horizon(now, keep_a));
}

static int phase_active(const struct store_retention *p, enum phase ph, struct sqlite_retain *r)
{
    switch (ph) {
    case PH_AGE:
    case PH_AGE_KEEP:
        return p->max_age_ns > 0;
    case PH_SIZE:
    case PH_SIZE_KEEP:
        return p->max_bytes > 0 && pages_bytes(r) > size_target(p->max_bytes);
    default:
        return 0;
    }
}

/* One step: a transaction of at most STEP_FRAMES batches or STEP_NS. 1 if the pass has more to
 * do, 0 when it is done, negative on a storage error. */
static int step(struct sqlite_retain *r, enum phase *phase, const struct store_retention *p,
                int64_t now, struct store_retention_report *rep)
{
    if (!r->prepared) {
        int rc = prepare(r);
        if (rc) {
            return rc;
        }
    }
    tune_wal(r, p->max_bytes);
    uint64_t t0 = tt__mono_ns();
    int64_t through = r->pruned_through;
    /* Close to the limit, a step by size may take longer: what ingest adds must not outrun
     * what goes (the acks wait for it; docs/operations.md, "Retention"). */
    uint64_t budget = p->max_bytes && (*phase == PH_SIZE || *phase == PH_SIZE_KEEP) &&
                              pages_bytes(r) > p->max_bytes - 2 * wal_allowance(p->max_bytes)
                          ? STEP_URGENT_NS
                          : STEP_NS;
    int rc = run(r->st[ST_BEGIN]);
    int done = 0;
    while (rc == 0 && tt__mono_ns() - t0 < budget) {
        while (*phase != PH_DONE && !phase_active(p, *phase, r)) {
            (*phase)++;
        }
        if (*phase == PH_DONE) {
            done = 1;
            break;
        }
        int64_t ids[STEP_FRAMES];
        int n = candidates(r, *phase, p, now, ids, STEP_FRAMES);
        if (n == 0) {
            (*phase)++;
            continue;
        }
        int by_size = *phase == PH_SIZE || *phase == PH_SIZE_KEEP;
        for (int i = 0; i < n && rc == 0; i++) {
            struct frame f;
            int dec = frame_load(r, ids[i], &f);
            if (dec < 0) {
                rc = dec == -ENOENT ? 0 : SQLITE_IOERR;
                continue;
            }
            int cls = dec ? classify(r, &f, p->keep_below_confidence) : 0;
            if (kept(p, now, *phase, cls, f.t_max)) {
                sqlite3_stmt *st = r->st[ST_KEEP_PUT];
                sqlite3_bind_int64(st, 1, f.id);
                sqlite3_bind_int(st, 2, cls);
                rc = run(st);
            } else {
                rc = frame_drop(r, &f, dec, cls, rep);
            }
            /* By size, measure again after a few batches: stop as soon as under the target. */
            if (by_size && (i & 7) == 7 && pages_bytes(r) <= size_target(p->max_bytes)) {
                break;
            }
            if (tt__mono_ns() - t0 >= budget) {
                break;
            }
        }
    }
    if (rc == 0 && r->pruned_through != through) {
        sqlite3_bind_int64(r->st[ST_META_PUT], 1, r->pruned_through);
        rc = run(r->st[ST_META_PUT]);
    }
    rc = rc ? rc : run(r->st[ST_COMMIT]);
    if (rc) {
        log_warn("store: retention step failed: %s", sqlite3_errmsg(r->db));
        run(r->st[ST_ROLLBACK]);
        r->pruned_through = through;
        return sqlite_errno(rc) ? sqlite_errno(rc) : -EIO;
    }
    return done ? 0 : 1;
}

static void report_end(struct sqlite_retain *r, struct store_retention_report *rep)
{
    rep->pruned_through_ns = r->pruned_through;
    if (r->prepared) {
        rep->oldest_kept_ns = one_i64(r->st[ST_OLDEST], 0);
        rep->kept_now = (uint64_t)one_i64(r->st[ST_KEPT_NOW], 0);
        rep->used_bytes = used_bytes(r);
    }
    rep->disk_bytes = file_size(r->path) + file_size(r->wal);
}

/* --- the request --------------------------------------------------------------------------- */

int sqlite_retain_pending(struct sqlite_retain *r)
{
    pthread_mutex_lock(&r->lock);
    int p = r->pending && !r->finished;
    pthread_mutex_unlock(&r->lock);
    return p;
}

static void finish(struct sqlite_retain *r, int result)
{
    pthread_mutex_lock(&r->lock);
    r->result = result;
    r->finished = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* The writer's own pruning by size: when the pages in use pass the target after a commit, one
 * step of a size-only pass per call until under it. */
static void size_guard(struct sqlite_retain *r)
{
    pthread_mutex_lock(&r->lock);
    struct store_retention p = r->size_policy;
    pthread_mutex_unlock(&r->lock);
    if (!p.max_bytes || !r->prepared) {
        return;
    }
    if (!r->bg_running) {
        if (pages_bytes(r) <= size_target(p.max_bytes)) {
            return;
        }
        r->bg_running = 1;
        r->bg_phase = PH_SIZE;
    }
    p.max_age_ns = 0; /* by size only: age is the requests' business */
    struct store_retention_report rep = {0};
    int rc = step(r, &r->bg_phase, &p, 0, &rep);
    if (rc <= 0) {
        r->bg_running = 0;
    }
    pthread_mutex_lock(&r->lock);
    r->bg_rep.batches += rep.batches;
    r->bg_rep.events += rep.events;
    r->bg_rep.bytes += rep.bytes;
    r->bg_rep.kept_batches += rep.kept_batches;
    r->bg_rep.responses += rep.responses;
    r->bg_rep.sessions += rep.sessions;
    pthread_mutex_unlock(&r->lock);
}

void sqlite_retain_step(struct sqlite_retain *r)
{
    if (!sqlite_retain_pending(r)) {
        size_guard(r);
        return;
    }
    /* policy, now_ns and rep are the writer's while the request runs. */
    int rc = step(r, &r->phase, &r->policy, r->now_ns, &r->rep);
    if (rc <= 0) {
        if (rc == 0 || r->prepared) {
            report_end(r, &r->rep);
        }
        finish(r, rc);
    }
}

void sqlite_retain_abort(struct sqlite_retain *r)
{
    if (sqlite_retain_pending(r)) {
        finish(r, -ECANCELED);
    }
}

int sqlite_retention_run(struct store *s, const struct store_retention *policy, int64_t now_ns,
                         struct store_retention_report *out)
{
    struct sqlite_retain *r = sqlite_store_retain(s);
    pthread_mutex_lock(&r->lock);
    while (r->pending) { /* one request at a time */
        pthread_cond_wait(&r->cond, &r->lock);
    }
    r->pending = 1;
    r->finished = 0;
    r->policy = *policy;
    r->size_policy = *policy;
    r->now_ns = now_ns;
    r->phase = PH_AGE;
    memset(&r->rep, 0, sizeof r->rep);
    pthread_mutex_unlock(&r->lock);
    int wake = sqlite_store_wake(s);
    if (wake > 0) {
        /* No writer thread yet: this thread is the only user of the connection. */
        while (sqlite_retain_pending(r)) {
            sqlite_retain_step(r);
        }
    } else if (wake < 0) {
        finish(r, -ECANCELED); /* the writer is stopping */
    }
    pthread_mutex_lock(&r->lock);
    while (!r->finished) {
        pthread_cond_wait(&r->cond, &r->lock);
    }
    *out = r->rep;
    /* What the writer removed by itself since the last report counts here. */
    out->batches += r->bg_rep.batches;
    out->events += r->bg_rep.events;
    out->bytes += r->bg_rep.bytes;
    out->kept_batches += r->bg_rep.kept_batches;
    out->responses += r->bg_rep.responses;
    out->sessions += r->bg_rep.sessions;
    memset(&r->bg_rep, 0, sizeof r->bg_rep);
    int rc = r->result;
    r->pending = 0;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

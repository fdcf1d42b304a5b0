/*
 * sqlite_events.c - the SQLite store's events iterator (store.h's store_events_*). Frames are read in id order, in pages, on a
 * private read-only connection; each frame's payload is decompressed (its size was checked at
 * ingest and is checked again here) and its events are filtered one by one.
 */
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "collector/store/sqlite.h"
#include "common/wire.h"

#define PAGE 64

struct query {
    struct store_events base; /* first: the seam's view */
    sqlite3 *db;
    sqlite3_stmt *st;
    struct store_filter f;
    int64_t agent_id;   /* -1: any; -2: an unknown agent, which matches nothing */
    int64_t last_frame; /* id of the last frame fetched */
    int page_rows;      /* rows stepped in the current page */
    int stepping;       /* a page is bound and being stepped */
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

static int64_t lookup_agent(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st;
    int64_t id = -2; /* an agent that does not exist matches nothing */
    if (sqlite3_prepare_v2(db, "SELECT id FROM agents WHERE name=?1", -1, &st, NULL) != SQLITE_OK) {
        return -2;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return id;
}

static void query_close(struct query *q);

int sqlite_events_open(struct store *s, const struct store_filter *f, struct store_events **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    const char *db_path = sqlite_store_path(s);
    struct query *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    q->base.ops = s->ops;
    q->f = *f;
    q->agent_id = -1;
    q->last_frame = f->after_frame > 0 ? f->after_frame - 1 : 0;
    q->cur_frame = f->after_frame;
    q->cur_index = f->after_index;
    q->dctx = ZSTD_createDCtx();
    if (!q->dctx || sqlite_reader_open(db_path, &q->db) != 0) {
        snprintf(err, errlen, "cannot open the store at %s", db_path);
        query_close(q);
        return -1;
    }
    if (f->agent[0]) {
        q->agent_id = lookup_agent(q->db, f->agent);
    }
    const char *sql =
        "SELECT f.id, f.codec, f.raw_len, f.data, i.uuid, a.name, f.clock_skew_ms FROM frames f"
        " JOIN instances i ON i.id = f.instance_id JOIN agents a ON a.id = f.agent_id"
        " WHERE f.id > ?1 AND (?2 = -1 OR f.agent_id = ?2) AND f.t_max >= ?3 AND f.t_min <= ?4"
        " AND (?5 = 0 OR (f.kinds & ?5) != 0) AND (?6 IS NULL OR i.uuid = ?6)"
        " ORDER BY f.id LIMIT 64";
    if (sqlite3_prepare_v2(q->db, sql, -1, &q->st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "query: %s", sqlite3_errmsg(q->db));
        query_close(q);
        return -1;
    }
    *out = &q->base;
    return 0;
}

static void bind_page(struct query *q)
{
    sqlite3_reset(q->st);
    sqlite3_bind_int64(q->st, 1, q->last_frame);
    sqlite3_bind_int64(q->st, 2, q->agent_id);
    sqlite3_bind_int64(q->st, 3, q->f.since);
    sqlite3_bind_int64(q->st, 4, q->f.until);
    sqlite3_bind_int64(q->st, 5, q->f.kinds);
    if (q->f.has_instance) {
        sqlite3_bind_blob(q->st, 6, q->f.instance, 16, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(q->st, 6);
    }
    q->page_rows = 0;
}

/* Load the next frame row into the current frame. 1, 0 at the end, -1 on error. */
static int next_frame(struct query *q)
{
    for (;;) {
        if (!q->stepping) {
            bind_page(q);
            q->stepping = 1;
        }
        int rc = sqlite3_step(q->st);
        if (rc == SQLITE_DONE) {
            if (q->page_rows < PAGE) {
                return 0;
            }
            q->stepping = 0; /* a full page: there may be more after it */
            continue;
        }
        if (rc != SQLITE_ROW) {
            return -1;
        }
        q->page_rows++;
        q->frame_id = sqlite3_column_int64(q->st, 0);
        q->last_frame = q->frame_id;
        int codec = sqlite3_column_int(q->st, 1);
        size_t raw_len = (size_t)sqlite3_column_int64(q->st, 2);
        const void *data = sqlite3_column_blob(q->st, 3);
        size_t data_len = (size_t)sqlite3_column_bytes(q->st, 3);
        const void *uuid = sqlite3_column_blob(q->st, 4);
        const unsigned char *name = sqlite3_column_text(q->st, 5);
        if (raw_len > TT_FRAME_RAW_MAX || !uuid || sqlite3_column_bytes(q->st, 4) != 16) {
            continue; /* not something ingest would have stored: skip it */
        }
        if (raw_len > q->raw_cap) {
            uint8_t *p = realloc(q->raw, raw_len);
            if (!p) {
                return -1;
            }
            q->raw = p;
            q->raw_cap = raw_len;
        }
        if (codec == 1) {
            size_t n = ZSTD_decompressDCtx(q->dctx, q->raw, raw_len, data, data_len);
            if (ZSTD_isError(n) || n != raw_len) {
                continue;
            }
        } else if (data_len == raw_len) {
            memcpy(q->raw, data, raw_len);
        } else {
            continue;
        }
        tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
        const char *why;
        if (tt__batch_parse(&q->b, q->raw, raw_len, &lim, &why) != 0) {
            continue;
        }
        q->b.clock_skew_ms = sqlite3_column_int64(q->st, 6);
        memcpy(q->instance, uuid, 16);
        snprintf(q->agent, sizeof q->agent, "%s", name ? (const char *)name : "");
        q->index = 0;
        q->in_frame = 1;
        return 1;
    }
}

static int matches(const struct query *q, const tt__event *ev)
{
    const struct store_filter *f = &q->f;
    if (ev->time < f->since || ev->time > f->until) {
        return 0;
    }
    return tt__event_matches(ev, f->session, f->kinds, f->min_severity);
}

int sqlite_events_next(struct store_events *base, tt__event *ev, const char **agent,
                       const uint8_t **instance)
{
    struct query *q = (struct query *)base;
    for (;;) {
        if (!q->in_frame) {
            int rc = next_frame(q);
            if (rc <= 0) {
                return rc;
            }
        }
        while (tt__batch_next(&q->b, ev)) {
            q->index++;
            if (q->frame_id == q->f.after_frame && q->index <= q->f.after_index) {
                continue; /* before the cursor */
            }
            if (matches(q, ev)) {
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

void sqlite_events_cursor(const struct store_events *base, char *out, size_t n)
{
    const struct query *q = (const struct query *)base;
    snprintf(out, n, "%" PRId64 ".%" PRIu32, q->cur_frame, q->cur_index);
}

void sqlite_events_close(struct store_events *base)
{
    query_close((struct query *)base);
}

static void query_close(struct query *q)
{
    if (!q) {
        return;
    }
    sqlite3_finalize(q->st);
    if (q->db) {
        sqlite3_close(q->db);
    }
    ZSTD_freeDCtx(q->dctx);
    free(q->raw);
    free(q);
}

/* Without filters below frame level, the frames' event counts give the answer directly. */
static int64_t count_fast(const char *db_path, const struct store_filter *f)
{
    sqlite3 *db;
    if (sqlite_reader_open(db_path, &db) != 0) {
        return -1;
    }
    int64_t agent = f->agent[0] ? lookup_agent(db, f->agent) : -1;
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT COALESCE(SUM(n), 0) FROM frames WHERE ?1 = -1 OR agent_id = ?1",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, agent);
        if (sqlite3_step(st) == SQLITE_ROW) {
            n = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

int64_t sqlite_events_count(struct store *s, const struct store_filter *f, char *err, size_t errlen)
{
    const char *db_path = sqlite_store_path(s);
    if (!f->session[0] && !f->kinds && !f->min_severity && !f->has_instance &&
        f->since == INT64_MIN && f->until == INT64_MAX && f->after_frame == 0) {
        int64_t n = count_fast(db_path, f);
        if (n < 0) {
            snprintf(err, errlen, "cannot read the store");
        }
        return n;
    }
    struct store_events *q;
    if (sqlite_events_open(s, f, &q, err, errlen) != 0) {
        return -1;
    }
    tt__event ev;
    const char *agent;
    const uint8_t *inst;
    int64_t n = 0;
    int rc;
    while ((rc = sqlite_events_next(q, &ev, &agent, &inst)) == 1) {
        n++;
    }
    sqlite_events_close(q);
    if (rc < 0) {
        snprintf(err, errlen, "storage error while counting");
        return -1;
    }
    return n;
}

/*
 * postgres_follow.c - following every collector's commits (store.h's store_follow) and the
 * leader among the collectors sharing the database.
 *
 * - Order. Every writer transaction takes PG_WRITER_LOCK before it inserts frames, and a
 *   transaction is visible before its locks are released, so frame ids are handed out and
 *   become visible in commit order: reading `id > last` in id order misses nothing and never
 *   goes back. A frame pruned by retention before it was read is not seen (nothing to watch).
 * - Leader. The session advisory lock PG_LEADER_LOCK, taken without waiting on the follower's
 *   own connection: it is held while that connection lives and released by the server when
 *   the collector dies (its connection closes) or the connection is lost. The follower gives
 *   up leading the moment its connection fails, before it reconnects.
 * - Taking over an incident: the earlier leader's firing row is re-keyed to (this collector,
 *   its number), so the alerts thread's next store_alert_put updates the same row. What is
 *   firing and not taken over then has nobody to resolve it (no detector state holds it), so
 *   the new leader resolves it: this replaces the SQLite store's rule "a collector resolves at
 *   start what it left firing", which here would race with the leader taking it over.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/log.h"
#include "collector/store/postgres.h"
#include "common/wire.h"

struct pg_follow {
    struct store_follow base; /* first: the seam's view */
    struct store *store;
    PGconn *c;
    int64_t last; /* id of the last frame returned */
    int leading;
    ZSTD_DCtx *dctx;
    uint8_t *buf; /* decompression scratch */
    size_t cap;
};

/* Drop the connection (and with it the lead), saying why when it led. */
static void lose(struct pg_follow *f, const char *why)
{
    PQfinish(f->c);
    f->c = NULL;
    if (f->leading) {
        f->leading = 0;
        log_warn("incidents: %s; no longer leading", why);
    }
}

/* The connection, (re)opened: NULL when the server cannot be reached. A lost connection takes
 * the leader's lock with it. */
static PGconn *conn(struct pg_follow *f)
{
    if (f->c && PQstatus(f->c) == CONNECTION_OK) {
        return f->c;
    }
    if (f->c) {
        lose(f, "the connection to PostgreSQL was lost");
    }
    char err[512];
    f->c = pg_connect(f->store, err, sizeof err);
    return f->c;
}

int pg_follow_open(struct store *s, struct store_follow **out, char *err, size_t errlen)
{
    *out = NULL;
    struct pg_follow *f = calloc(1, sizeof *f);
    if (!f || !(f->dctx = ZSTD_createDCtx())) {
        free(f);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    f->base.ops = s->ops;
    f->store = s;
    f->c = pg_connect(s, err, errlen);
    PGresult *r =
        f->c ? pg_exec(f->c, NULL, "SELECT COALESCE(MAX(id), 0)::bigint FROM frames", NULL) : NULL;
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        if (f->c) {
            snprintf(err, errlen, "cannot read the frames: %s", PQerrorMessage(f->c));
        }
        PQclear(r);
        pg_follow_close(&f->base);
        return -EIO;
    }
    f->last = pg_i64(r, 0, 0);
    PQclear(r);
    *out = &f->base;
    return 0;
}

/* One frame row into it (raw in the follower's buffer): 0, -ENOMEM, or -EINVAL when it is not
 * what ingest stores (skipped). */
static int item_of(struct pg_follow *f, const PGresult *r, int i, struct store_item *it)
{
    size_t data_len, uuid_len, name_len;
    const char *data = pg_bytes(r, i, 1, &data_len);
    const char *uuid = pg_bytes(r, i, 3, &uuid_len);
    const char *name = pg_bytes(r, i, 4, &name_len);
    int64_t raw_len = pg_i64(r, i, 2);
    if (!uuid || uuid_len != 16 || !name || raw_len < 0) {
        return -EINVAL;
    }
    int rc = pg_frame_payload(f->dctx, pg_i64(r, i, 7), (size_t)raw_len, data, data_len, &f->buf,
                              &f->cap);
    if (rc != 0) {
        return rc;
    }
    memset(it, 0, sizeof *it);
    it->raw = f->buf;
    it->raw_len = (size_t)raw_len;
    tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
    const char *why;
    if (tt__batch_parse(&it->batch, it->raw, it->raw_len, &lim, &why) != 0) {
        return -EINVAL;
    }
    it->batch.clock_skew_ms = pg_i64(r, i, 5);
    it->received_ns = (uint64_t)pg_i64(r, i, 6);
    memcpy(it->ident.instance, uuid, 16);
    size_t n = name_len < sizeof it->ident.agent - 1 ? name_len : sizeof it->ident.agent - 1;
    memcpy(it->ident.agent, name, n);
    it->ident.agent[n] = 0;
    it->result = STORE_OK;
    return 0;
}

int pg_follow_next(struct store_follow *base, int max, store_follow_fn fn, void *ctx)
{
    struct pg_follow *f = (struct pg_follow *)base;
    PGconn *c = conn(f);
    if (!c) {
        return -EAGAIN;
    }
    /* At most PG_FOLLOW_ROWS rows a statement: the result holds their stored bytes. */
    struct pg_params p = {0};
    pg_p_i64(&p, f->last);
    pg_p_i64(&p, max < PG_FOLLOW_ROWS ? max : PG_FOLLOW_ROWS);
    PGresult *r = pg_exec(c, NULL,
                          "SELECT f.id, f.data, f.raw_len, i.uuid, a.name, f.clock_skew_ms,"
                          " f.received, f.codec FROM frames f"
                          " JOIN instances i ON i.id = f.instance_id"
                          " JOIN agents a ON a.id = f.agent_id"
                          " WHERE f.id > $1 ORDER BY f.id LIMIT $2",
                          &p);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = pg_errno(c, r);
        PQclear(r);
        lose(f, "reading PostgreSQL failed");
        return rc < 0 ? rc : -EIO;
    }
    int n = 0, rows = PQntuples(r);
    struct store_item it;
    for (int i = 0; i < rows; i++) {
        int rc = item_of(f, r, i, &it);
        if (rc == -ENOMEM) {
            PQclear(r);
            return n ? n : -ENOMEM; /* last stays: the rest comes at the next call */
        }
        f->last = pg_i64(r, i, 0);
        if (rc == 0) {
            fn(ctx, &it);
            n++;
        }
    }
    PQclear(r);
    return rows; /* rows read, skipped ones included: the caller reads on while it is max */
}

int pg_follow_lead(struct store_follow *base)
{
    struct pg_follow *f = (struct pg_follow *)base;
    if (f->leading) {
        return 1;
    }
    PGconn *c = conn(f);
    if (!c) {
        return -EAGAIN;
    }
    struct pg_params p = {0};
    pg_p_i64(&p, PG_LEADER_LOCK);
    PGresult *r = pg_exec(c, NULL, "SELECT pg_try_advisory_lock($1)::int", &p);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        lose(f, "reading PostgreSQL failed");
        return -EIO;
    }
    f->leading = pg_i64(r, 0, 0) == 1;
    PQclear(r);
    return f->leading;
}

int pg_follow_adopt(struct store_follow *base, const char *agent, const char *detector,
                    const char *key, int64_t local_id)
{
    struct pg_follow *f = (struct pg_follow *)base;
    PGconn *c = conn(f);
    if (!c) {
        return -EAGAIN;
    }
    struct pg_params p = {0};
    pg_p_str(&p, pg_store_collector(f->store));
    pg_p_i64(&p, local_id);
    pg_p_str(&p, agent);
    pg_p_str(&p, detector);
    pg_p_str(&p, key);
    PGresult *r = pg_exec(c, NULL,
                          "UPDATE alerts SET collector = $1::text, local_id = $2::bigint"
                          " WHERE id = (SELECT id FROM alerts WHERE agent = $3::bytea"
                          " AND detector = $4::bytea AND key = $5::bytea AND status = 'firing'"
                          " ORDER BY (collector = $1::text AND local_id = $2::bigint) DESC,"
                          " id DESC LIMIT 1) RETURNING id",
                          &p);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = pg_errno(c, r);
        log_warn("incidents: cannot take over an incident of agent %.200s: %s", agent,
                 PQerrorMessage(c));
        PQclear(r);
        return rc < 0 ? rc : -EIO;
    }
    int n = PQntuples(r);
    PQclear(r);
    return n == 1;
}

int pg_follow_settle(struct store_follow *base, const int64_t *keep, int n, int64_t now_ns)
{
    struct pg_follow *f = (struct pg_follow *)base;
    PGconn *c = conn(f);
    if (!c) {
        return -EAGAIN;
    }
    /* The numbers kept, as an array literal: 20 characters at most each. */
    size_t cap = 3 + (size_t)(n > 0 ? n : 0) * 21;
    char *list = malloc(cap);
    if (!list) {
        return -ENOMEM;
    }
    size_t at = 0;
    list[at++] = '{';
    for (int i = 0; i < n; i++) {
        at += (size_t)snprintf(list + at, cap - at, "%s%lld", i ? "," : "", (long long)keep[i]);
    }
    snprintf(list + at, cap - at, "}");
    struct pg_params p = {0};
    pg_p_i64(&p, now_ns);
    pg_p_str(&p, pg_store_collector(f->store));
    pg_p_str(&p, list);
    PGresult *r = pg_exec(c, NULL,
                          "UPDATE alerts SET status = 'resolved', resolved_ns = $1::bigint"
                          " WHERE status = 'firing' AND NOT (collector = $2::text"
                          " AND local_id = ANY($3::text::bigint[])) RETURNING id",
                          &p);
    free(list);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = pg_errno(c, r);
        log_warn("incidents: cannot resolve what earlier leaders left firing: %s",
                 PQerrorMessage(c));
        PQclear(r);
        return rc < 0 ? rc : -EIO;
    }
    int resolved = PQntuples(r);
    PQclear(r);
    return resolved;
}

void pg_follow_close(struct store_follow *base)
{
    struct pg_follow *f = (struct pg_follow *)base;
    if (!f) {
        return;
    }
    PQfinish(f->c); /* releases the leader's lock */
    ZSTD_freeDCtx(f->dctx);
    free(f->buf);
    free(f);
}

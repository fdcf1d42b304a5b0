/*
 * sqlite.c - the SQLite store (store.h's "sqlite"): opening, the ops table, and the writer:
 * one thread, one SQLite connection, group commit. Readers are in sqlite_read.c and
 * sqlite_events.c, operator writes (alerts) in sqlite_alerts.c.
 *
 * Raw frames are kept as their compressed payload with an index row (agent, instance, seq
 * range, time range, kinds), which is what lets the collector store a million events a second:
 * one row per batch, not per event. Derived tables (derive.c) hold what queries need at event
 * granularity (sessions, steps, later responses and alerts).
 *
 * INVARIANTS
 * - Only the writer thread touches db and the caches; ingest and the writer share only the
 *   two queues, under lock.
 * - An item comes back as STORE_OK or STORE_DUP only after the transaction holding it (or the
 *   earlier one that stored its events) committed at the configured sync level: acks are sent
 *   after commit, never before.
 * - (instance, first_seq) is unique in frames and a batch's seq range never overlaps another's
 *   for the same instance: a resend of a stored batch is a duplicate, a partial overlap is
 *   refused. Each (instance, seq) is therefore stored at most once, durably, for ever.
 * - When a commit fails, every item of the group comes back STORE_RETRY and the in-memory
 *   caches are dropped, so they never disagree with the database. A transient failure (disk
 *   full) is one episode, logged once, until a commit succeeds. A fatal failure (store.h's
 *   classes; the file deleted, replaced or damaged: sqlite_health.c) is logged once and kept
 *   in failure until the collector stops: from then on no group is committed, every item
 *   comes back STORE_RETRY.
 * - After each commit, sqlite_health_check runs before the group goes back: an item is never
 *   acknowledged after the path stopped naming the file it was committed to.
 */
#include "collector/store/queue.h"
#include "collector/store/sqlite.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collector/log.h"
#include "common/clock.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS agents(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS instances(id INTEGER PRIMARY KEY, uuid BLOB NOT NULL UNIQUE,"
    " agent_id INTEGER NOT NULL, pid INTEGER, host TEXT, library TEXT, start_ns INTEGER,"
    " first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
    " max_seq INTEGER NOT NULL DEFAULT 0, stored INTEGER NOT NULL DEFAULT 0,"
    " c_emitted INTEGER NOT NULL DEFAULT 0, c_acked INTEGER NOT NULL DEFAULT 0,"
    " c_possibly INTEGER NOT NULL DEFAULT 0, c_dropped_total INTEGER NOT NULL DEFAULT 0,"
    " c_dropped TEXT NOT NULL DEFAULT '[]', c_buffered INTEGER NOT NULL DEFAULT 0,"
    " c_spooled INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS instances_agent ON instances(agent_id);"
    "CREATE TABLE IF NOT EXISTS frames(id INTEGER PRIMARY KEY, agent_id INTEGER NOT NULL,"
    " instance_id INTEGER NOT NULL, first_seq INTEGER NOT NULL, n INTEGER NOT NULL,"
    " t_min INTEGER NOT NULL, t_max INTEGER NOT NULL, kinds INTEGER NOT NULL,"
    " received INTEGER NOT NULL, codec INTEGER NOT NULL, raw_len INTEGER NOT NULL,"
    " data BLOB NOT NULL, clock_skew_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX IF NOT EXISTS frames_seq ON frames(instance_id, first_seq);"
    "CREATE INDEX IF NOT EXISTS frames_agent ON frames(agent_id, id);"
    "CREATE INDEX IF NOT EXISTS frames_time ON frames(t_max);"
    /* Who owns an agent name (kind 0, key agents.id) or an instance (kind 1, instances.id): the
     * identity that stored under it first (docs/security.md). */
    "CREATE TABLE IF NOT EXISTS owners(kind INTEGER NOT NULL, key INTEGER NOT NULL,"
    " identity TEXT NOT NULL, PRIMARY KEY(kind, key)) WITHOUT ROWID;";

/* In-memory caches of the writer, so the common case costs no lookup. */
struct icache_entry {
    uint8_t uuid[16];
    int64_t id;
    int64_t agent_id;
    uint64_t max_seq;
    int used;
    char owner[IDENTITY_MAX]; /* "" until read from owners */
};

struct acache_entry {
    char name[256];
    int64_t id;
    int used;
    char owner[IDENTITY_MAX]; /* "" until read from owners */
};

struct sqlite_store {
    struct store base; /* first: the seam's view */
    sqlite3 *db;
    char path[PATH_MAX];
    int sync;
    struct derive *derive;
    struct rollup *rollup;        /* sqlite_rollup.c */
    struct sqlite_aux *aux;       /* operator writes */
    struct sqlite_retain *retain; /* retention (sqlite_retain.c) */
    pthread_t thread;
    int started;

    struct store_queue q; /* its lock also guards failure and refusing */
    char failure[512];    /* the fatal error, "" when healthy (kept until close) */
    char refusing[256];   /* the transient refusal under way, "" when none */

    /* writer thread only */
    struct sqlite_health health;
    int fatal;
    uint64_t refused; /* groups refused in the transient episode under way */
    struct icache_entry *ic;
    size_t ic_cap, ic_used;
    struct acache_entry *ac;
    size_t ac_cap, ac_used;
    sqlite3_stmt *st_dedup, *st_frame, *st_agent, *st_agent_id, *st_inst, *st_inst_get,
        *st_inst_upd, *st_owner_claim, *st_owner_get, *st_begin, *st_commit, *st_rollback;
};

static const char *sync_promise(int level)
{
    switch (level) {
    case SYNC_FULL:
        return "an acknowledged batch survives a crash of the collector and a power failure";
    case SYNC_NORMAL:
        return "an acknowledged batch survives a crash of the collector; a power failure may "
               "lose the last commits";
    default:
        return "an acknowledged batch survives a crash of the collector; a power failure may "
               "corrupt or lose the store";
    }
}

/* --- caches -------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

static void caches_clear(struct sqlite_store *s)
{
    free(s->ic);
    free(s->ac);
    s->ic = NULL;
    s->ac = NULL;
    s->ic_cap = s->ic_used = s->ac_cap = s->ac_used = 0;
}

static struct icache_entry *ic_slot(struct sqlite_store *s, const uint8_t uuid[16])
{
    if (s->ic_used * 2 >= s->ic_cap) {
        size_t cap = s->ic_cap ? s->ic_cap * 2 : 1024;
        struct icache_entry *n = calloc(cap, sizeof *n);
        if (!n) {
            return NULL;
        }
        for (size_t i = 0; i < s->ic_cap; i++) {
            if (s->ic[i].used) {
                size_t j = hash_bytes(s->ic[i].uuid, 16) & (cap - 1);
                while (n[j].used) {
                    j = (j + 1) & (cap - 1);
                }
                n[j] = s->ic[i];
            }
        }
        free(s->ic);
        s->ic = n;
        s->ic_cap = cap;
    }
    size_t j = hash_bytes(uuid, 16) & (s->ic_cap - 1);
    while (s->ic[j].used && memcmp(s->ic[j].uuid, uuid, 16) != 0) {
        j = (j + 1) & (s->ic_cap - 1);
    }
    return &s->ic[j];
}

static struct acache_entry *ac_slot(struct sqlite_store *s, const char *name)
{
    if (s->ac_used * 2 >= s->ac_cap) {
        size_t cap = s->ac_cap ? s->ac_cap * 2 : 256;
        struct acache_entry *n = calloc(cap, sizeof *n);
        if (!n) {
            return NULL;
        }
        for (size_t i = 0; i < s->ac_cap; i++) {
            if (s->ac[i].used) {
                size_t j = hash_bytes(s->ac[i].name, strlen(s->ac[i].name)) & (cap - 1);
                while (n[j].used) {
                    j = (j + 1) & (cap - 1);
                }
                n[j] = s->ac[i];
            }
        }
        free(s->ac);
        s->ac = n;
        s->ac_cap = cap;
    }
    size_t j = hash_bytes(name, strlen(name)) & (s->ac_cap - 1);
    while (s->ac[j].used && strcmp(s->ac[j].name, name) != 0) {
        j = (j + 1) & (s->ac_cap - 1);
    }
    return &s->ac[j];
}

/* --- opening ------------------------------------------------------------------------------- */

static int prep(struct sqlite_store *s, sqlite3_stmt **st, const char *sql)
{
    return sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
}

static int prepare_all(struct sqlite_store *s)
{
    int rc =
        prep(s, &s->st_dedup,
             "SELECT first_seq, n FROM frames WHERE instance_id=?1 AND first_seq BETWEEN ?2 AND ?3"
             " ORDER BY first_seq DESC LIMIT 1");
    rc = rc ? rc
            : prep(s, &s->st_frame,
                   "INSERT INTO frames(agent_id, instance_id, first_seq, n, t_min, t_max, kinds,"
                   " received, codec, raw_len, data, clock_skew_ms)"
                   " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)");
    rc = rc ? rc
            : prep(s, &s->st_agent,
                   "INSERT INTO agents(name, first_seen, last_seen) VALUES(?1, ?2, ?2) "
                   "ON CONFLICT(name) DO UPDATE SET last_seen=max(last_seen, excluded.last_seen)");
    rc = rc ? rc : prep(s, &s->st_agent_id, "SELECT id FROM agents WHERE name=?1");
    rc = rc ? rc
            : prep(s, &s->st_inst,
                   "INSERT OR IGNORE INTO instances(uuid, agent_id, pid, host, library, start_ns,"
                   " first_seen, last_seen) VALUES(?1,?2,?3,?4,?5,?6,?7,?7)");
    rc = rc ? rc
            : prep(s, &s->st_inst_get, "SELECT id, agent_id, max_seq FROM instances WHERE uuid=?1");
    rc = rc ? rc
            : prep(s, &s->st_inst_upd,
                   "UPDATE instances SET last_seen=max(last_seen, ?2), max_seq=?3,"
                   " stored=stored+?4,"
                   " c_emitted=CASE WHEN ?5 >= c_emitted THEN ?5 ELSE c_emitted END,"
                   " c_acked=CASE WHEN ?5 >= c_emitted THEN ?6 ELSE c_acked END,"
                   " c_possibly=CASE WHEN ?5 >= c_emitted THEN ?7 ELSE c_possibly END,"
                   " c_dropped_total=CASE WHEN ?5 >= c_emitted THEN ?8 ELSE c_dropped_total END,"
                   " c_dropped=CASE WHEN ?5 >= c_emitted THEN ?9 ELSE c_dropped END,"
                   " c_buffered=CASE WHEN ?5 >= c_emitted THEN ?10 ELSE c_buffered END,"
                   " c_spooled=CASE WHEN ?5 >= c_emitted THEN ?11 ELSE c_spooled END"
                   " WHERE id=?1");
    rc = rc ? rc
            : prep(s, &s->st_owner_claim,
                   "INSERT OR IGNORE INTO owners(kind, key, identity) VALUES(?1, ?2, ?3)");
    rc =
        rc ? rc : prep(s, &s->st_owner_get, "SELECT identity FROM owners WHERE kind=?1 AND key=?2");
    rc = rc ? rc : prep(s, &s->st_begin, "BEGIN IMMEDIATE");
    rc = rc ? rc : prep(s, &s->st_commit, "COMMIT");
    rc = rc ? rc : prep(s, &s->st_rollback, "ROLLBACK");
    return rc;
}

static int exec_fmt(sqlite3 *db, char *err, size_t errlen, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", msg ? msg : sqlite3_errstr(rc));
    }
    sqlite3_free(msg);
    return rc;
}

/* Columns added after a store's creation (schema 1 grows only by such additions, which older
 * binaries ignore: they name the columns they read). */
static int add_columns(struct sqlite_store *s, char *err, size_t errlen)
{
    static const char *const probe[] = {"SELECT clock_skew_ms FROM frames LIMIT 0",
                                        "SELECT trace_id FROM steps LIMIT 0"};
    static const char *const alter[] = {
        "ALTER TABLE frames ADD COLUMN clock_skew_ms INTEGER NOT NULL DEFAULT 0",
        /* the trace context of steps (since 0.5) */
        "BEGIN; ALTER TABLE steps ADD COLUMN trace_id BLOB;"
        " ALTER TABLE steps ADD COLUMN span_id INTEGER;"
        " ALTER TABLE steps ADD COLUMN parent_span_id INTEGER; COMMIT"};
    for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, probe[i], -1, &st, NULL) == SQLITE_OK) {
            sqlite3_finalize(st);
            continue;
        }
        int rc = exec_fmt(s->db, err, errlen, alter[i]);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    return SQLITE_OK;
}

static int check_schema_version(struct sqlite_store *s, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int version = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key='schema'", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            version = (int)strtol((const char *)sqlite3_column_text(st, 0), NULL, 10);
        }
        sqlite3_finalize(st);
    }
    if (version > SQLITE_SCHEMA_VERSION) {
        snprintf(err, errlen, "the store has schema version %d; this telltale knows up to %d",
                 version, SQLITE_SCHEMA_VERSION);
        return -1;
    }
    return exec_fmt(s->db, err, errlen,
                    "INSERT OR REPLACE INTO meta(key, value) VALUES('schema', '1')");
}

static int open_db(struct sqlite_store *s, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(
        s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", s->path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000);
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=OFF;"
             "PRAGMA wal_autocheckpoint=4096;",
             s->sync == SYNC_FULL     ? "FULL"
             : s->sync == SYNC_NORMAL ? "NORMAL"
                                      : "OFF");
    if (exec_fmt(s->db, err, errlen, pragmas) != SQLITE_OK ||
        exec_fmt(s->db, err, errlen, schema) != SQLITE_OK ||
        exec_fmt(s->db, err, errlen, derive_schema) != SQLITE_OK ||
        exec_fmt(s->db, err, errlen, sqlite_alerts_schema) != SQLITE_OK ||
        exec_fmt(s->db, err, errlen, rollup_schema) != SQLITE_OK ||
        add_columns(s, err, errlen) != SQLITE_OK || check_schema_version(s, err, errlen) != 0) {
        return -1;
    }
    if (prepare_all(s) != SQLITE_OK || derive_open(&s->derive, s->db) != 0 ||
        rollup_open(&s->rollup, s->db) != 0 ||
        sqlite_retain_open(&s->retain, s->db, s->path) != 0) {
        snprintf(err, errlen, "preparing statements: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    return 0;
}

static void sqlite_close(struct store *base);

static int sqlite_open(struct store **out, const struct store_config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    const char *dir = cfg->data_dir;
    if (cfg->url && *cfg->url && strcmp(cfg->url, "sqlite") != 0) {
        snprintf(err, errlen,
                 "store \"%.100s\": the SQLite store takes no location; it is %s "
                 "under the data directory (--data)",
                 cfg->url, SQLITE_DB_NAME);
        return -EINVAL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(e));
        return -e;
    }
    struct sqlite_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->base.ops = &store_sqlite_ops;
    s->sync = cfg->sync_level;
    if ((size_t)snprintf(s->path, sizeof s->path, "%s/%s", dir, SQLITE_DB_NAME) >= sizeof s->path) {
        snprintf(err, errlen, "data directory path too long");
        free(s);
        return -ENAMETOOLONG;
    }
    int qerr = store_queue_init(&s->q);
    s->base.queue = &s->q;
    sqlite_health_global_init();
    if (sqlite_restore_salvage(s->path) < 0) {
        snprintf(err, errlen, "cannot put back the salvaged copy of %s: %s", s->path,
                 strerror(errno));
        sqlite_close(&s->base);
        return -EIO;
    }
    if (qerr || sqlite_check_at_start(s->path, err, errlen) != 0 || open_db(s, err, errlen) != 0 ||
        sqlite_aux_open(&s->aux, s->path, err, errlen) != 0) {
        if (qerr) {
            snprintf(err, errlen, "eventfd: %s", strerror(-qerr));
        }
        sqlite_close(&s->base);
        return -EIO;
    }
    sqlite_health_init(&s->health, s->path);
    *out = &s->base;
    return 0;
}

static void sqlite_describe(const struct store *base, char *out, size_t n)
{
    const struct sqlite_store *s = (const struct sqlite_store *)base;
    snprintf(out, n, "store %s, sync=%s: %s", s->path, store_sync_name(s->sync),
             sync_promise(s->sync));
}

static int sqlite_failure(struct store *base, char *out, size_t n)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    pthread_mutex_lock(&s->q.lock);
    int state = s->failure[0] ? STORE_FAILED : s->refusing[0] ? STORE_REFUSING : STORE_HEALTHY;
    snprintf(out, n, "%s", s->failure[0] ? s->failure : s->refusing);
    pthread_mutex_unlock(&s->q.lock);
    return state;
}

const char *sqlite_store_path(const struct store *base)
{
    return ((const struct sqlite_store *)base)->path;
}

struct sqlite_aux *sqlite_store_aux(struct store *base)
{
    return ((struct sqlite_store *)base)->aux;
}

struct sqlite_retain *sqlite_store_retain(struct store *base)
{
    return ((struct sqlite_store *)base)->retain;
}

int sqlite_store_wake(struct store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    pthread_mutex_lock(&s->q.lock);
    int rc = !s->started ? 1 : s->q.stop ? -1 : 0;
    pthread_cond_signal(&s->q.cond);
    pthread_mutex_unlock(&s->q.lock);
    return rc;
}

int sqlite_reader_open(const char *path, sqlite3 **db)
{
    int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, 5000);
    return 0;
}

int sqlite_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_INTERRUPT:
    case SQLITE_PROTOCOL:
        return -EAGAIN;
    default:
        /* IOERR, CORRUPT, NOTADB, CANTOPEN, READONLY, and what the store cannot explain */
        return -EIO;
    }
}

/* --- the writer ---------------------------------------------------------------------------- */

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc;
}

/* The id of agent name, its row made (or its last_seen moved to now, when touch) first. */
static int64_t agent_id_at(struct sqlite_store *s, const char *name, int64_t now, int touch)
{
    struct acache_entry *e = ac_slot(s, name);
    if (!e) {
        return -1;
    }
    if (!touch && e->used) {
        return e->id;
    }
    if (touch) {
        sqlite3_bind_text(s->st_agent, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->st_agent, 2, now);
        if (step_done(s->st_agent) != 0) {
            return -1;
        }
    }
    if (e->used) {
        return e->id;
    }
    sqlite3_bind_text(s->st_agent_id, 1, name, -1, SQLITE_STATIC);
    int64_t id = -1;
    if (sqlite3_step(s->st_agent_id) == SQLITE_ROW) {
        id = sqlite3_column_int64(s->st_agent_id, 0);
    }
    sqlite3_reset(s->st_agent_id);
    if (id < 0 && !touch) {
        return agent_id_at(s, name, now, 1); /* a new agent: make its row */
    }
    if (id >= 0) {
        snprintf(e->name, sizeof e->name, "%s", name);
        e->id = id;
        e->used = 1;
        s->ac_used++;
    }
    return id;
}

static int64_t agent_id(struct sqlite_store *s, const char *name, int64_t now)
{
    return agent_id_at(s, name, now, 1);
}

static struct icache_entry *instance(struct sqlite_store *s, const struct store_item *it,
                                     int64_t now)
{
    struct icache_entry *e = ic_slot(s, it->ident.instance);
    if (!e || e->used) {
        return e;
    }
    int64_t aid = agent_id(s, it->ident.agent, now);
    if (aid < 0) {
        return NULL;
    }
    sqlite3_stmt *st = s->st_inst;
    sqlite3_bind_blob(st, 1, it->ident.instance, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, aid);
    sqlite3_bind_int64(st, 3, it->ident.pid);
    sqlite3_bind_text(st, 4, it->ident.host, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, it->ident.library, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (int64_t)it->ident.start_unix_ns);
    sqlite3_bind_int64(st, 7, now);
    if (step_done(st) != 0) {
        return NULL;
    }
    sqlite3_bind_blob(s->st_inst_get, 1, it->ident.instance, 16, SQLITE_STATIC);
    int found = sqlite3_step(s->st_inst_get) == SQLITE_ROW;
    if (found) {
        memcpy(e->uuid, it->ident.instance, 16);
        e->id = sqlite3_column_int64(s->st_inst_get, 0);
        e->agent_id = sqlite3_column_int64(s->st_inst_get, 1);
        e->max_seq = (uint64_t)sqlite3_column_int64(s->st_inst_get, 2);
        e->used = 1;
        s->ic_used++;
    }
    sqlite3_reset(s->st_inst_get);
    return found ? e : NULL;
}

/* The stored frame of instance e with the greatest first_seq in [lo, hi] (SQLite integers, signed
 * order): 1 with its range in *pf, *pn; 0 if none. */
static int frame_at_or_below(struct sqlite_store *s, const struct icache_entry *e, int64_t lo,
                             int64_t hi, uint64_t *pf, uint64_t *pn)
{
    sqlite3_bind_int64(s->st_dedup, 1, e->id);
    sqlite3_bind_int64(s->st_dedup, 2, lo);
    sqlite3_bind_int64(s->st_dedup, 3, hi);
    int found = sqlite3_step(s->st_dedup) == SQLITE_ROW;
    if (found) {
        *pf = (uint64_t)sqlite3_column_int64(s->st_dedup, 0);
        *pn = (uint64_t)sqlite3_column_int64(s->st_dedup, 1);
    }
    sqlite3_reset(s->st_dedup);
    return found;
}

/* STORE_OK (new range), STORE_DUP (this exact range is stored), STORE_REJECT (overlap).
 * Sequence numbers are unsigned 64-bit; SQLite stores them as the signed integer of the same
 * bits, so 2^63 and above read as negative. The frame just below `last` in unsigned order is
 * looked for among the stored values of its sign first, then (for a `last` at 2^63 or above)
 * among the non-negative ones, which are all below it. */
static int dedup(struct sqlite_store *s, const struct icache_entry *e, uint64_t first, uint64_t n)
{
    if (first > e->max_seq) {
        return STORE_OK;
    }
    uint64_t last = first + n - 1;
    uint64_t pf = 0, pn = 0;
    int found;
    if (last <= (uint64_t)INT64_MAX) {
        found = frame_at_or_below(s, e, 0, (int64_t)last, &pf, &pn);
    } else {
        found = frame_at_or_below(s, e, INT64_MIN, (int64_t)last, &pf, &pn) ||
                frame_at_or_below(s, e, 0, INT64_MAX, &pf, &pn);
    }
    if (found && pf == first && pn == n) {
        return STORE_DUP;
    }
    if (found && pf + pn - 1 >= first) {
        return STORE_REJECT;
    }
    return sqlite_retain_dedup(s->retain, e->id, first, last); /* a range retention removed */
}

static void dropped_json(const tt__client_stats *cs, char *out, size_t n)
{
    size_t off = (size_t)snprintf(out, n, "[");
    for (uint32_t i = 0; i < cs->n_dropped && off < n; i++) {
        off += (size_t)snprintf(out + off, n - off, "%s%llu", i ? "," : "",
                                (unsigned long long)cs->dropped[i]);
    }
    if (off < n) {
        snprintf(out + off, n - off, "]");
    }
}

static int update_instance(struct sqlite_store *s, struct icache_entry *e,
                           const struct store_item *it, uint64_t stored, int64_t now)
{
    const tt__batch *b = &it->batch;
    const tt__client_stats *cs = &b->stats;
    sqlite3_stmt *st = s->st_inst_upd;
    uint64_t last = b->n_events ? b->first_seq + b->n_events - 1 : 0;
    uint64_t total = 0;
    char dropped[512];
    for (uint32_t i = 0; i < cs->n_dropped; i++) {
        total += cs->dropped[i];
    }
    dropped_json(cs, dropped, sizeof dropped);
    sqlite3_bind_int64(st, 1, e->id);
    sqlite3_bind_int64(st, 2, now);
    /* The highest sequence number stored, compared unsigned here: SQLite's max() would order
     * 2^63 and above (stored negative) below every other. */
    uint64_t max_seq = stored && last > e->max_seq ? last : e->max_seq;
    sqlite3_bind_int64(st, 3, (int64_t)max_seq);
    sqlite3_bind_int64(st, 4, (int64_t)stored);
    sqlite3_bind_int64(st, 5, b->has_stats ? (int64_t)cs->emitted : -1);
    sqlite3_bind_int64(st, 6, (int64_t)cs->acked);
    sqlite3_bind_int64(st, 7, (int64_t)cs->possibly_delivered);
    sqlite3_bind_int64(st, 8, (int64_t)total);
    sqlite3_bind_text(st, 9, dropped, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 10, (int64_t)cs->buffered);
    sqlite3_bind_int64(st, 11, (int64_t)cs->spooled);
    int rc = step_done(st);
    if (rc == 0) {
        e->max_seq = max_seq;
    }
    return rc;
}

static int insert_frame(struct sqlite_store *s, const struct icache_entry *e,
                        const struct store_item *it)
{
    const tt__batch *b = &it->batch;
    sqlite3_stmt *st = s->st_frame;
    sqlite3_bind_int64(st, 1, e->agent_id);
    sqlite3_bind_int64(st, 2, e->id);
    sqlite3_bind_int64(st, 3, (int64_t)b->first_seq);
    sqlite3_bind_int64(st, 4, b->n_events);
    sqlite3_bind_int64(st, 5, b->t_min);
    sqlite3_bind_int64(st, 6, b->t_max);
    sqlite3_bind_int64(st, 7, b->kinds);
    sqlite3_bind_int64(st, 8, (int64_t)it->received_ns);
    sqlite3_bind_int(st, 9, it->blob ? 1 : 0);
    sqlite3_bind_int64(st, 10, (int64_t)it->raw_len);
    if (it->blob) {
        sqlite3_bind_blob(st, 11, it->blob, (int)it->blob_len, SQLITE_STATIC);
    } else {
        sqlite3_bind_blob(st, 11, it->raw, (int)it->raw_len, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 12, b->clock_skew_ms);
    return step_done(st);
}

enum { OWN_AGENT = 0, OWN_INSTANCE = 1 };

/* Whether identity owns (kind, key), claiming it if nobody does yet: 1 yes, 0 another identity
 * does, negative on a storage error. cache (IDENTITY_MAX bytes) keeps the owner once read. */
static int owned_by(struct sqlite_store *s, int kind, int64_t key, const char *identity,
                    char *cache)
{
    if (!cache[0]) {
        sqlite3_bind_int(s->st_owner_claim, 1, kind);
        sqlite3_bind_int64(s->st_owner_claim, 2, key);
        sqlite3_bind_text(s->st_owner_claim, 3, identity, -1, SQLITE_STATIC);
        if (step_done(s->st_owner_claim) != 0) {
            return -1;
        }
        sqlite3_bind_int(s->st_owner_get, 1, kind);
        sqlite3_bind_int64(s->st_owner_get, 2, key);
        int found = sqlite3_step(s->st_owner_get) == SQLITE_ROW;
        if (found) {
            const unsigned char *o = sqlite3_column_text(s->st_owner_get, 0);
            snprintf(cache, IDENTITY_MAX, "%s", o ? (const char *)o : "");
        }
        sqlite3_reset(s->st_owner_get);
        if (!found) {
            return -1;
        }
    }
    return strcmp(cache, identity) == 0;
}

/* The agent name of it, then its instance, must belong to the identity that sends it (the
 * first to store under them). 1 if so, 0 if not (it is refused), negative on an error. The
 * agent is checked before the instance row is made, so a refused batch leaves nothing. */
static int check_agent_owner(struct sqlite_store *s, const struct store_item *it, int64_t now)
{
    struct acache_entry *a = ac_slot(s, it->ident.agent);
    if (a && !a->used) {
        /* Not touched: a refused batch must not move another identity's agent's last_seen. */
        a = agent_id_at(s, it->ident.agent, now, 0) < 0 ? NULL : ac_slot(s, it->ident.agent);
    }
    if (!a || !a->used) {
        return -1;
    }
    return owned_by(s, OWN_AGENT, a->id, it->ident.identity, a->owner);
}

/* Store one item inside the open transaction. Returns 0, or an SQLite error that aborts the
 * whole group. */
static int store_one(struct sqlite_store *s, struct store_item *it, int64_t now)
{
    int own = check_agent_owner(s, it, now);
    struct icache_entry *e = own > 0 ? instance(s, it, now) : NULL;
    own = e ? owned_by(s, OWN_INSTANCE, e->id, it->ident.identity, e->owner) : own > 0 ? -1 : own;
    if (own < 0) {
        return SQLITE_ERROR;
    }
    if (own == 0) {
        it->result = STORE_REJECT;
        it->reason = store_reason_not_owner;
        return 0;
    }
    const tt__batch *b = &it->batch;
    if (it->replayed && e->agent_id != agent_id(s, it->ident.agent, now)) {
        /* A spool replay may only name instances of the agent that sends it. */
        it->result = STORE_REJECT;
        it->reason = "batch names an instance of another agent";
        return 0;
    }
    uint64_t stored = 0;
    if (b->n_events == 0) {
        it->result = STORE_OK; /* a heartbeat: counters only */
    } else {
        it->result = dedup(s, e, b->first_seq, b->n_events);
        if (it->result == STORE_REJECT) {
            it->reason = "sequence range overlaps stored events";
        } else if (it->result == STORE_OK) {
            int rc = insert_frame(s, e, it);
            rc = rc ? rc : derive_item(s->derive, it, e->agent_id, e->id);
            rc = rc ? rc : rollup_item(s->rollup, it, e->agent_id, e->id);
            if (rc) {
                return rc;
            }
            stored = b->n_events;
        }
    }
    return update_instance(s, e, it, stored, now);
}

/* The store can no longer be trusted: say so once, keep it until close. A file deleted or
 * replaced while open still holds every acknowledged batch: copy it out first, so that the
 * operator can put it back. */
static void fail_for_good(struct sqlite_store *s, int kind, const char *cause)
{
    if (s->fatal) {
        return;
    }
    s->fatal = 1;
    char saved[PATH_MAX + 64] = "";
    if (kind == SQLITE_HEALTH_MOVED) {
        char name[PATH_MAX + 32];
        if (sqlite_salvage(s->db, s->path, name, sizeof name) == 0) {
            snprintf(saved, sizeof saved, "; what it held is copied to %s", name);
        } else {
            snprintf(saved, sizeof saved, "; copying what it held failed");
        }
    }
    log_warn("store: %s: refusing every batch from now on, nothing more is acknowledged (agents "
             "keep theirs and resend)%s; stop telltale serve and repair "
             "(docs/operations.md, \"Store failures\")",
             cause, saved);
    pthread_mutex_lock(&s->q.lock);
    snprintf(s->failure, sizeof s->failure, "%s", cause);
    s->refusing[0] = 0;
    pthread_mutex_unlock(&s->q.lock);
}

/* A commit failed with rc (after rollback): fatal for good, or one transient episode. */
static void commit_failed(struct sqlite_store *s, int rc, int xcode)
{
    /* The connection's code says more than a step's (SQLITE_ERROR from a lookup). */
    int code = rc == SQLITE_ERROR ? xcode : rc;
    int err = sqlite_errno(code);
    char cause[384];
    if (store_error_class(err ? err : -EIO) == STORE_ERR_FATAL) {
        /* The extended code tells a failed write (778) from a failed sync (1034). */
        int damaged = (code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB;
        snprintf(cause, sizeof cause, "%.300s%s %s (SQLite code %d)", s->path,
                 damaged ? " is damaged:" : ":", sqlite3_errstr(code), xcode);
        fail_for_good(s, SQLITE_HEALTH_DAMAGED, cause);
        return;
    }
    if (s->refused++ == 0) {
        snprintf(cause, sizeof cause, "%.200s: %s", s->path,
                 err == -ENOSPC ? "the disk is full" : sqlite3_errstr(code));
        log_warn("store: %s: refusing batches for now (agents keep and resend them) until a "
                 "commit goes through",
                 cause);
        pthread_mutex_lock(&s->q.lock);
        snprintf(s->refusing, sizeof s->refusing, "%.255s", cause);
        pthread_mutex_unlock(&s->q.lock);
    }
}

static void commit_group(struct sqlite_store *s, struct store_item *head)
{
    uint64_t t0 = tt__mono_ns();
    int64_t now = (int64_t)tt__wall_ns();
    if (s->fatal) {
        store_queue_group_done(&s->q, head, 1);
        return;
    }
    int rc = step_done(s->st_begin);
    for (struct store_item *it = head; it && rc == 0; it = it->next) {
        rc = store_one(s, it, now);
    }
    rc = rc ? rc : rollup_flush(s->rollup);
    rc = rc ? rc : step_done(s->st_commit);
    char cause[384];
    int kind = sqlite_health_check(&s->health, cause, sizeof cause);
    if (rc) {
        int xcode = sqlite3_extended_errcode(s->db); /* before the rollback resets it */
        step_done(s->st_rollback);
        caches_clear(s);
        rollup_discard(s->rollup);
        cstat_add(&cstats.store_errors, 1);
        commit_failed(s, rc, xcode);
    }
    if (kind) {
        fail_for_good(s, kind, cause);
        rc = rc ? rc : SQLITE_IOERR;
    }
    if (rc == 0) {
        store_queue_committed(&s->q, tt__mono_ns() - t0, &s->refused, s->refusing);
    }
    store_queue_group_done(&s->q, head, rc != 0);
}

static void *writer_main(void *arg)
{
    struct sqlite_store *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->q.lock);
        while (!s->q.in_head && !s->q.stop && !sqlite_retain_pending(s->retain)) {
            /* Idle: look at the files once a second, so that /healthz tells even when no
             * batch arrives. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&s->q.cond, &s->q.lock, &ts) != 0) {
                break;
            }
        }
        struct store_item *head = store_queue_take_in(&s->q);
        int stop = s->q.stop;
        pthread_mutex_unlock(&s->q.lock);
        if (head) {
            commit_group(s, head);
        } else if (stop) {
            break;
        } else if (!s->fatal && tt__mono_ns() - s->health.last_ns >= 1000000000ull) {
            char cause[384];
            int kind = sqlite_health_check(&s->health, cause, sizeof cause);
            if (kind) {
                fail_for_good(s, kind, cause);
            }
        }
        sqlite_retain_step(s->retain); /* between commits, one bounded step */
    }
    sqlite_retain_abort(s->retain);
    return NULL;
}

static int sqlite_start(struct store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    int rc = pthread_create(&s->thread, NULL, writer_main, s);
    if (rc == 0) {
        pthread_setname_np(s->thread, "tt-store");
        s->started = 1;
    }
    return -rc;
}

static void sqlite_close(struct store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    if (!s) {
        return;
    }
    if (s->started) {
        store_queue_stop(&s->q);
        pthread_join(s->thread, NULL);
    }
    sqlite3_stmt *all[] = {s->st_dedup,  s->st_frame,    s->st_agent,       s->st_agent_id,
                           s->st_inst,   s->st_inst_get, s->st_inst_upd,    s->st_begin,
                           s->st_commit, s->st_rollback, s->st_owner_claim, s->st_owner_get};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sqlite3_finalize(all[i]);
    }
    derive_close(s->derive);
    rollup_close(s->rollup);
    sqlite_retain_close(s->retain);
    sqlite_aux_close(s->aux);
    if (s->db) {
        sqlite3_close(s->db);
    }
    caches_clear(s);
    store_queue_fini(&s->q);
    free(s);
}

/* Retention: sqlite_retain.c. Rollups: sqlite_rollup.c. */
const struct store_ops store_sqlite_ops = {
    .scheme = "sqlite",
    .open = sqlite_open,
    .start = sqlite_start,
    .close = sqlite_close,
    .describe = sqlite_describe,
    .failure = sqlite_failure,
    .events_open = sqlite_events_open,
    .events_next = sqlite_events_next,
    .events_cursor = sqlite_events_cursor,
    .events_close = sqlite_events_close,
    .events_count = sqlite_events_count,
    .read_open = sqlite_read_open,
    .read_close = sqlite_read_close,
    .agents = sqlite_agents,
    .agent_owner = sqlite_agent_owner,
    .sessions = sqlite_sessions,
    .session_find = sqlite_session_find,
    .session_agents = sqlite_session_agents,
    .session_steps = sqlite_session_steps,
    .session_responses = sqlite_session_responses,
    .responses = sqlite_responses,
    .response_tokens = sqlite_response_tokens,
    .response_guard = sqlite_response_guard,
    .alerts = sqlite_alerts,
    .alert_add = sqlite_alert_add,
    .alert_ack = sqlite_alert_ack,
    .alert_put = sqlite_alert_put,
    .alert_max_id = sqlite_alert_max_id,
    .retention_run = sqlite_retention_run,
    .rollups = sqlite_rollups,
};

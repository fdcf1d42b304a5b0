/*
 * postgres.c - the PostgreSQL store (store.h's "postgres", `--store postgres://...`): opening
 * (connect, create the schema if absent, check its version), the ops table, and the writer:
 * one thread, one connection, one transaction per group of submitted items. Readers are in
 * postgres_read.c, operator writes (alerts) in postgres_alerts.c. The tables mirror the SQLite store's (sqlite.c, derive.c): one frames row
 * per batch holding its payload as stored, agents, instances with their counters, owners,
 * sessions, steps, responses with their tokens and guard decisions.
 *
 * INVARIANTS
 * - Only the writer thread touches wconn; ingest and the writer share only the two queues,
 *   under lock.
 * - An item comes back STORE_OK or STORE_DUP only after the transaction holding it (or an
 *   earlier one that stored its events) committed: the server said COMMIT succeeded. When the
 *   connection drops during COMMIT the outcome is unknown: the group comes back STORE_RETRY,
 *   and the agents' resend is a STORE_DUP if the commit had gone through, so nothing is
 *   stored twice and nothing acknowledged is lost.
 * - Every writer transaction takes the advisory lock PG_WRITER_LOCK first: writers (of every
 *   collector on the database) commit one at a time, so frame ids grow in commit order and
 *   the dedup check sees every committed frame. (instance_id, first_seq) is unique besides.
 * - A group's statements go in libpq's pipeline mode: those whose rows the writer does not
 *   need (the frame's derived rows, counters) are sent without waiting for their answers,
 *   which are read with the next statement whose rows it needs and at COMMIT. The first error
 *   fails the group (the server skips the rest until the sync), so a group is still all or
 *   nothing, and it is acknowledged only after COMMIT's own answer was read.
 * - The writer keeps no cache of the database beyond a group: within one, under the lock,
 *   the agent and instance rows (ids, ownership, max_seq) its items name are looked up once
 *   (struct seen), so a batch in sequence order costs no read at all; a group ends, failed or
 *   committed, with its cache, and the next one sees every other collector's commits.
 * - A transient failure (connection lost, server down or shutting down, lock conflict, disk
 *   full) is one episode, logged once, until a commit succeeds; the writer reconnects at the
 *   next group. A fatal one (data corruption, I/O error, anything unknown) is logged once and
 *   kept until the collector stops: no group is committed any more.
 */
#include "collector/store/postgres.h"
#include "collector/store/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include "collector/log.h"
#include "common/clock.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS telltale_meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS agents(id bigserial PRIMARY KEY, name bytea NOT NULL UNIQUE,"
    " first_seen bigint NOT NULL, last_seen bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS instances(id bigserial PRIMARY KEY, uuid bytea NOT NULL UNIQUE,"
    " agent_id bigint NOT NULL, pid bigint, host bytea, library bytea, start_ns bigint,"
    " first_seen bigint NOT NULL, last_seen bigint NOT NULL,"
    " max_seq bigint NOT NULL DEFAULT 0, stored bigint NOT NULL DEFAULT 0,"
    " c_emitted bigint NOT NULL DEFAULT 0, c_acked bigint NOT NULL DEFAULT 0,"
    " c_possibly bigint NOT NULL DEFAULT 0, c_dropped_total bigint NOT NULL DEFAULT 0,"
    " c_dropped text NOT NULL DEFAULT '[]', c_buffered bigint NOT NULL DEFAULT 0,"
    " c_spooled bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS instances_agent ON instances(agent_id);"
    "CREATE TABLE IF NOT EXISTS frames(id bigserial PRIMARY KEY, agent_id bigint NOT NULL,"
    " instance_id bigint NOT NULL, first_seq bigint NOT NULL, n bigint NOT NULL,"
    " t_min bigint NOT NULL, t_max bigint NOT NULL, kinds bigint NOT NULL,"
    " received bigint NOT NULL, codec bigint NOT NULL, raw_len bigint NOT NULL,"
    " data bytea NOT NULL, clock_skew_ms bigint NOT NULL DEFAULT 0,"
    " UNIQUE(instance_id, first_seq));"
    "CREATE INDEX IF NOT EXISTS frames_agent ON frames(agent_id, id);"
    "CREATE INDEX IF NOT EXISTS frames_time ON frames(t_max);"
    "CREATE TABLE IF NOT EXISTS owners(kind bigint NOT NULL, key bigint NOT NULL,"
    " identity bytea NOT NULL, PRIMARY KEY(kind, key));"
    "CREATE TABLE IF NOT EXISTS sessions(agent_id bigint NOT NULL, name bytea NOT NULL,"
    " first_seen bigint NOT NULL, last_seen bigint NOT NULL, events bigint NOT NULL,"
    " PRIMARY KEY(agent_id, name));"
    "CREATE TABLE IF NOT EXISTS steps(instance_id bigint NOT NULL, step_id bigint NOT NULL,"
    " agent_id bigint NOT NULL, parent_id bigint NOT NULL DEFAULT 0, session bytea,"
    " kind bigint, name bytea, query bytea, start_ns bigint, duration_ns bigint,"
    " status bigint, result_bytes bigint, error bytea, trace_id bytea, span_id bigint,"
    " parent_span_id bigint, PRIMARY KEY(instance_id, step_id));"
    "CREATE INDEX IF NOT EXISTS steps_session ON steps(agent_id, session);"
    "CREATE TABLE IF NOT EXISTS responses(instance_id bigint NOT NULL,"
    " response_id bigint NOT NULL, agent_id bigint NOT NULL, session bytea, model bytea,"
    " begin_ns bigint, begin_body bytea, end_ns bigint, tokens bigint, mean_logprob float8,"
    " min_logprob float8, perplexity float8, mean_entropy float8, low_confidence_share float8,"
    " min_window_confidence float8, verdict bigint, reason bytea, duration_ns bigint,"
    " estimated bigint, PRIMARY KEY(instance_id, response_id));"
    "CREATE INDEX IF NOT EXISTS responses_id ON responses(response_id);"
    "CREATE INDEX IF NOT EXISTS responses_session ON responses(agent_id, session);"
    "CREATE TABLE IF NOT EXISTS response_tokens(instance_id bigint NOT NULL,"
    " response_id bigint NOT NULL, first_index bigint NOT NULL, n bigint NOT NULL,"
    " body bytea NOT NULL, PRIMARY KEY(instance_id, response_id, first_index));"
    "CREATE TABLE IF NOT EXISTS guard_events(instance_id bigint NOT NULL, seq bigint NOT NULL,"
    " response_id bigint NOT NULL, agent_id bigint NOT NULL, session bytea, time_ns bigint,"
    " token_index bigint, verdict bigint, reason bytea, value float8, threshold float8,"
    " PRIMARY KEY(instance_id, seq));"
    "CREATE INDEX IF NOT EXISTS guard_response ON guard_events(instance_id, response_id);";

struct pg_store {
    struct store base; /* first: the seam's view */
    char url[512];     /* as given: may hold a password, never shown */
    char shown[512];   /* user@host:port/db, for messages */
    char secret[128];  /* the URL's password ("" when none), to scrub from messages */
    char collector[PG_COLLECTOR_ID_MAX]; /* this collector's id (DATA/collector-id) */
    int sync;
    PGconn *wconn;     /* writer thread only (after start; the main thread before) */
    struct pg_aux aux; /* operator writes (postgres_alerts.c) */
    pthread_t thread;
    int started;

    struct store_queue q; /* its lock also guards failure and refusing */
    char failure[512];    /* the fatal error, "" when healthy (kept until close) */
    char refusing[512];   /* the transient refusal under way, "" when none */

    /* readers' connections (pg_conn_take) */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    PGconn *idle[PG_READERS_IDLE]; /* pool_mu */
    int n_idle, n_out;             /* pool_mu: idle ones, ones taken (or being opened) */

    struct pg_rollup *rollup; /* postgres_rollup.c: the writer's */
    struct pg_retain *retain; /* postgres_retain.c */

    /* writer thread only */
    int pipe;    /* wconn is in pipeline mode (a group under way) */
    int pending; /* statements sent in the pipeline whose results are not read yet */
    int fatal;
    uint64_t refused; /* groups refused in the transient episode under way */
};

/* --- parameters and results ---------------------------------------------------------------- */

static void put_be64(unsigned char *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)v;
        v >>= 8;
    }
}

void pg_p_i64(struct pg_params *p, int64_t v)
{
    put_be64(p->num[p->n], (uint64_t)v);
    p->v[p->n] = (const char *)p->num[p->n];
    p->len[p->n] = 8;
    p->fmt[p->n] = 1;
    p->n++;
}

void pg_p_f64(struct pg_params *p, double v)
{
    if (isnan(v)) {
        pg_p_null(p);
        return;
    }
    uint64_t u;
    memcpy(&u, &v, 8);
    put_be64(p->num[p->n], u);
    p->v[p->n] = (const char *)p->num[p->n];
    p->len[p->n] = 8;
    p->fmt[p->n] = 1;
    p->n++;
}

void pg_p_bytes(struct pg_params *p, const void *b, size_t n)
{
    if (!b) {
        pg_p_null(p);
        return;
    }
    p->v[p->n] = n ? (const char *)b : "";
    p->len[p->n] = (int)n;
    p->fmt[p->n] = 1;
    p->n++;
}

void pg_p_str(struct pg_params *p, const char *s)
{
    pg_p_bytes(p, s, s ? strlen(s) : 0);
}

void pg_p_null(struct pg_params *p)
{
    p->v[p->n] = NULL;
    p->len[p->n] = 0;
    p->fmt[p->n] = 1;
    p->n++;
}

PGresult *pg_exec(PGconn *c, const char *name, const char *sql, const struct pg_params *p)
{
    static const struct pg_params none = {0};
    if (!p) {
        p = &none;
    }
    if (name && !sql) {
        return PQexecPrepared(c, name, p->n, p->v, p->len, p->fmt, 1);
    }
    return PQexecParams(c, sql, p->n, NULL, p->v, p->len, p->fmt, 1);
}

int pg_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col);
}

int64_t pg_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) {
        return 0;
    }
    const unsigned char *b = (const unsigned char *)PQgetvalue(r, row, col);
    int n = PQgetlength(r, row, col);
    uint64_t v = 0;
    for (int i = 0; i < n && i < 8; i++) {
        v = v << 8 | b[i];
    }
    /* sign-extend int4 and int2 */
    if (n == 4) {
        return (int32_t)(uint32_t)v;
    }
    if (n == 2) {
        return (int16_t)(uint16_t)v;
    }
    return n == 8 ? (int64_t)v : 0;
}

double pg_f64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8) {
        return NAN;
    }
    const unsigned char *b = (const unsigned char *)PQgetvalue(r, row, col);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | b[i];
    }
    double d;
    memcpy(&d, &v, 8);
    return d;
}

const char *pg_bytes(const PGresult *r, int row, int col, size_t *n)
{
    if (PQgetisnull(r, row, col)) {
        *n = 0;
        return NULL;
    }
    *n = (size_t)PQgetlength(r, row, col);
    return PQgetvalue(r, row, col);
}

/* --- errors -------------------------------------------------------------------------------- */

int pg_errno(const PGconn *c, const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!st || strlen(st) != 5) {
        /* No answer from the server: the connection is gone (or never was). */
        return c && PQstatus(c) == CONNECTION_OK && res ? -EIO : -EAGAIN;
    }
    if (!strncmp(st, "08", 2) || !strcmp(st, "57P01") || !strcmp(st, "57P02") ||
        !strcmp(st, "57P03") || !strcmp(st, "53300") || !strcmp(st, "57014")) {
        return -EAGAIN; /* connection exception, shutdown, too many connections, cancelled */
    }
    if (!strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55P03") ||
        !strcmp(st, "23505")) {
        /* serialization failure, deadlock, lock not available; a unique key taken by another
         * writer's commit (the group is resent and then sees it) */
        return -EBUSY;
    }
    if (!strcmp(st, "53100")) {
        return -ENOSPC; /* disk full */
    }
    if (!strcmp(st, "53200")) {
        return -ENOMEM;
    }
    /* XX001 data corrupted, XX002 index corrupted, 58030 I/O error, and what we cannot
     * explain */
    return -EIO;
}

/* Copy msg into out with the password (if any) blotted out and line breaks flattened. */
static void scrub(const struct pg_store *s, const char *msg, char *out, size_t n)
{
    snprintf(out, n, "%s", msg ? msg : "");
    size_t sl = strlen(s->secret);
    char *p;
    while (sl && (p = strstr(out, s->secret)) != NULL) {
        memset(p, '*', sl);
    }
    for (p = out; *p; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t') {
            *p = ' ';
        }
    }
    size_t l = strlen(out);
    while (l && out[l - 1] == ' ') {
        out[--l] = 0;
    }
}

PGconn *pg_connect(const struct store *base, char *err, size_t errlen)
{
    const struct pg_store *s = (const struct pg_store *)base;
    /* The URL's own settings override these defaults (later keywords win, and dbname expands
     * to the URL). */
    const char *const keys[] = {"connect_timeout",
                                "application_name",
                                "keepalives",
                                "keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                "tcp_user_timeout",
                                "options",
                                "dbname",
                                NULL};
    const char *const vals[] = {PG_CONNECT_TIMEOUT_S,
                                "telltale",
                                "1",
                                PG_KEEPALIVES_IDLE_S,
                                PG_KEEPALIVES_INTERVAL_S,
                                PG_KEEPALIVES_COUNT,
                                PG_TCP_USER_TIMEOUT_MS,
                                "-c statement_timeout=" PG_STATEMENT_TIMEOUT_MS,
                                s->url,
                                NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[512];
        scrub(s, c ? PQerrorMessage(c) : "out of memory", msg, sizeof msg);
        snprintf(err, errlen, "PostgreSQL %s: %s", s->shown, msg);
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* --- readers' pool ------------------------------------------------------------------------- */

PGconn *pg_conn_take(struct store *base, char *err, size_t errlen)
{
    struct pg_store *s = (struct pg_store *)base;
    struct timespec until = tt__deadline_ms(CLOCK_MONOTONIC, PG_READERS_WAIT_MS);
    pthread_mutex_lock(&s->pool_mu);
    for (;;) {
        PGconn *c = NULL;
        if (s->n_idle > 0) {
            c = s->idle[--s->n_idle];
        } else if (s->n_idle + s->n_out >= PG_READERS_MAX) {
            if (pthread_cond_timedwait(&s->pool_cv, &s->pool_mu, &until) == ETIMEDOUT &&
                s->n_idle == 0 && s->n_out >= PG_READERS_MAX) {
                pthread_mutex_unlock(&s->pool_mu);
                snprintf(err, errlen,
                         "PostgreSQL %s: all %d reader connections of this collector are busy",
                         s->shown, PG_READERS_MAX);
                return NULL;
            }
            continue;
        }
        s->n_out++;
        pthread_mutex_unlock(&s->pool_mu);
        if (c) {
            /* An idle connection may have lost its server (a restart, a failover, an idle
             * timeout): one empty statement, a round trip (far cheaper than a new connection's
             * authentication), tells, and a new one is opened instead. */
            PGresult *res = PQexec(c, "");
            int alive = res && PQresultStatus(res) == PGRES_EMPTY_QUERY;
            PQclear(res);
            if (alive && PQstatus(c) == CONNECTION_OK) {
                return c;
            }
            PQfinish(c);
        }
        c = pg_connect(base, err, errlen);
        if (c) {
            return c;
        }
        pthread_mutex_lock(&s->pool_mu);
        s->n_out--;
        pthread_cond_signal(&s->pool_cv);
        pthread_mutex_unlock(&s->pool_mu);
        return NULL;
    }
}

void pg_conn_give(struct store *base, PGconn *c)
{
    struct pg_store *s = (struct pg_store *)base;
    if (!c) {
        return;
    }
    int keep = PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE;
    pthread_mutex_lock(&s->pool_mu);
    s->n_out--;
    if (keep && s->n_idle < PG_READERS_IDLE) {
        s->idle[s->n_idle++] = c;
        c = NULL;
    }
    pthread_cond_signal(&s->pool_cv);
    pthread_mutex_unlock(&s->pool_mu);
    PQfinish(c);
}

/* --- opening ------------------------------------------------------------------------------- */

static const char *sync_promise(int level)
{
    if (level == SYNC_FULL) {
        return "synchronous_commit=on: an acknowledged batch survives a crash of the collector "
               "and of the server (as far as the server's fsync settings hold)";
    }
    return "synchronous_commit=off: an acknowledged batch survives a crash of the collector; a "
           "crash of the server may lose the last commits";
}

/* What the URL says, without its password: user@host:port/db (from the URL, as libpq reads
 * it); the password into secret. */
static int parse_url(struct pg_store *s, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *o = PQconninfoParse(s->url, &perr);
    if (!o) {
        /* libpq's message names the fault, never the password */
        snprintf(err, errlen, "store URL: %s", perr ? perr : "cannot be parsed");
        PQfreemem(perr);
        for (char *p = err; *p; p++) {
            *p = *p == '\n' ? ' ' : *p;
        }
        return -1;
    }
    const char *user = "", *host = "", *port = "", *db = "";
    for (PQconninfoOption *i = o; i->keyword; i++) {
        const char *v = i->val ? i->val : "";
        if (!strcmp(i->keyword, "user")) {
            user = v;
        } else if (!strcmp(i->keyword, "host")) {
            host = v;
        } else if (!strcmp(i->keyword, "port")) {
            port = v;
        } else if (!strcmp(i->keyword, "dbname")) {
            db = v;
        } else if (!strcmp(i->keyword, "password")) {
            snprintf(s->secret, sizeof s->secret, "%s", v);
        }
    }
    snprintf(s->shown, sizeof s->shown, "postgres://%.100s%s%.200s%s%.10s/%.100s", user,
             *user ? "@" : "", *host ? host : "(default host)", *port ? ":" : "", port, db);
    PQconninfoFree(o);
    return 0;
}

static int exec_simple(struct pg_store *s, PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    int ok = r && (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    int rc = ok ? 0 : pg_errno(c, r);
    if (!ok) {
        char msg[384];
        scrub(s, r ? PQresultErrorMessage(r) : PQerrorMessage(c), msg, sizeof msg);
        snprintf(err, errlen, "PostgreSQL %s: %s", s->shown, msg);
    }
    PQclear(r);
    return rc;
}

/* Create the tables if absent and check the schema version, under the writers' lock (several
 * collectors may start at once). */
static int make_schema(struct pg_store *s, char *err, size_t errlen)
{
    char lock[160];
    snprintf(lock, sizeof lock, "BEGIN; SELECT pg_advisory_xact_lock(%lld)",
             (long long)PG_WRITER_LOCK);
    int rc = exec_simple(s, s->wconn, lock, err, errlen);
    rc = rc ? rc : exec_simple(s, s->wconn, schema, err, errlen);
    rc = rc ? rc : exec_simple(s, s->wconn, pg_alerts_schema, err, errlen);
    rc = rc ? rc : exec_simple(s, s->wconn, pg_rollup_schema, err, errlen);
    rc = rc ? rc : exec_simple(s, s->wconn, pg_retain_schema, err, errlen);
    if (rc == 0) {
        PGresult *r = PQexec(s->wconn, "SELECT value FROM telltale_meta WHERE key = 'schema'");
        int version = 0;
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            version = atoi(PQgetvalue(r, 0, 0));
        }
        PQclear(r);
        if (version > PG_SCHEMA_VERSION) {
            snprintf(err, errlen,
                     "PostgreSQL %s: the store has schema version %d; this telltale knows up to "
                     "%d",
                     s->shown, version, PG_SCHEMA_VERSION);
            rc = -EINVAL;
        }
    }
    rc = rc ? rc
            : exec_simple(s, s->wconn,
                          "INSERT INTO telltale_meta(key, value) VALUES('schema', '1')"
                          " ON CONFLICT(key) DO NOTHING; COMMIT",
                          err, errlen);
    if (rc) {
        PGresult *r = PQexec(s->wconn, "ROLLBACK");
        PQclear(r);
    }
    return rc;
}

static int set_sync(struct pg_store *s, PGconn *c, char *err, size_t errlen)
{
    return exec_simple(
        s, c, s->sync == SYNC_FULL ? "SET synchronous_commit = on" : "SET synchronous_commit = off",
        err, errlen);
}

static int collector_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= PG_COLLECTOR_ID_MAX) {
        return 0;
    }
    for (const char *p = id; *p; p++) {
        if (!(*p >= '0' && *p <= '9') && !(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
            *p != '-' && *p != '_' && *p != '.') {
            return 0;
        }
    }
    return 1;
}

/* Read DIR/collector-id into out, or make it (0600, O_EXCL) from getrandom when absent. The
 * data directory's lock (serve.c) keeps two collectors from racing here. */
static int collector_id(const char *dir, char *out, size_t n, char *err, size_t errlen)
{
    char path[4096];
    if (!dir ||
        snprintf(path, sizeof path, "%s/%s", dir, PG_COLLECTOR_ID_FILE) >= (int)sizeof path) {
        snprintf(err, errlen, "no data directory for %s", PG_COLLECTOR_ID_FILE);
        return -EINVAL;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        char buf[PG_COLLECTOR_ID_MAX + 2];
        ssize_t got = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[got > 0 ? got : 0] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        if (!collector_id_valid(buf)) {
            snprintf(err, errlen,
                     "%s: not a collector id (1 to %d letters, digits, '-', '_' or '.')", path,
                     PG_COLLECTOR_ID_MAX - 1);
            return -EINVAL;
        }
        snprintf(out, n, "%s", buf);
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -EIO;
    }
    unsigned char r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        snprintf(err, errlen, "getrandom: %s", strerror(errno));
        return -EIO;
    }
    char id[24];
    for (size_t i = 0; i < sizeof r; i++) {
        snprintf(id + 2 * i, 3, "%02x", r[i]);
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    size_t len = strlen(id);
    id[len] = '\n';
    int ok = fd >= 0 && write(fd, id, len + 1) == (ssize_t)(len + 1) && fsync(fd) == 0;
    int e = errno;
    if (fd >= 0) {
        close(fd);
    }
    if (!ok) {
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -EIO;
    }
    id[len] = 0;
    snprintf(out, n, "%s", id);
    return 0;
}

static void pg_close(struct store *base);

static int pg_open(struct store **out, const struct store_config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    struct pg_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->base.ops = &store_postgres_ops;
    s->sync = cfg->sync_level;
    int qerr = store_queue_init(&s->q);
    s->base.queue = &s->q;
    pthread_mutex_init(&s->aux.lock, NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    tt__cond_init_mono(&s->pool_cv);
    if (strlen(cfg->url) >= sizeof s->url) {
        snprintf(err, errlen, "store URL too long (at most %zu bytes)", sizeof s->url - 1);
        pg_close(&s->base);
        return -EINVAL;
    }
    snprintf(s->url, sizeof s->url, "%s", cfg->url);
    if (parse_url(s, err, errlen) != 0) {
        pg_close(&s->base);
        return -EINVAL;
    }
    if (s->secret[0]) {
        log_warn("store: the --store URL holds a password, which other users of this machine "
                 "can read in the process list: put it in a passfile (PGPASSFILE, ~/.pgpass) "
                 "instead (docs/operations.md, \"PostgreSQL store\")");
    }
    if (qerr) {
        snprintf(err, errlen, "eventfd: %s", strerror(-qerr));
        pg_close(&s->base);
        return -EIO;
    }
    if (collector_id(cfg->data_dir, s->collector, sizeof s->collector, err, errlen) != 0) {
        pg_close(&s->base);
        return -EIO;
    }
    s->rollup = pg_rollup_new();
    s->retain = pg_retain_new(&s->base);
    if (!s->rollup || !s->retain) {
        snprintf(err, errlen, "out of memory");
        pg_close(&s->base);
        return -ENOMEM;
    }
    s->wconn = pg_connect(&s->base, err, errlen);
    if (!s->wconn || make_schema(s, err, errlen) != 0 || set_sync(s, s->wconn, err, errlen) != 0 ||
        !(s->aux.c = pg_connect(&s->base, err, errlen))) {
        pg_close(&s->base);
        return -EIO;
    }
    log_info("store: collector id %s (%s/%s): incidents raised here carry it", s->collector,
             cfg->data_dir, PG_COLLECTOR_ID_FILE);
    *out = &s->base;
    return 0;
}

static void pg_describe(const struct store *base, char *out, size_t n)
{
    const struct pg_store *s = (const struct pg_store *)base;
    snprintf(out, n, "store %s (PostgreSQL), sync=%s: %s", s->shown, store_sync_name(s->sync),
             sync_promise(s->sync));
}

const char *pg_store_collector(const struct store *base)
{
    return ((const struct pg_store *)base)->collector;
}

struct pg_aux *pg_store_aux(struct store *base)
{
    return &((struct pg_store *)base)->aux;
}

struct pg_retain *pg_store_retain(struct store *base)
{
    return ((struct pg_store *)base)->retain;
}

static int pg_failure(struct store *base, char *out, size_t n)
{
    struct pg_store *s = (struct pg_store *)base;
    pthread_mutex_lock(&s->q.lock);
    int state = s->failure[0] ? STORE_FAILED : s->refusing[0] ? STORE_REFUSING : STORE_HEALTHY;
    snprintf(out, n, "%s", s->failure[0] ? s->failure : s->refusing);
    pthread_mutex_unlock(&s->q.lock);
    return state;
}

/* --- the writer ---------------------------------------------------------------------------- */

struct inst {
    int64_t id, agent_id;
    uint64_t max_seq;
};

/* What the group learnt of an instance its items name (owned by their identity): under
 * PG_WRITER_LOCK no other writer commits until this group's COMMIT, so it holds for the rest
 * of the group and is dropped with it. */
struct seen {
    const struct agent_ident *ident; /* of the item that looked it up (lives as long) */
    int64_t aid;
    struct inst e;
};
#define SEEN_MAX 32

/* A group under way: its first error (class and message), the instances it has seen. */
/* A stored item of the group whose rollups are counted once the pipeline is over: counting
 * reads the group's own step rows, which takes synchronous statements. */
struct roll {
    struct store_item *it;
    int64_t agent_id, instance_id;
};

struct wstate {
    int rc;
    char msg[384];
    int n_seen;
    struct seen seen[SEEN_MAX];
    struct roll *roll; /* malloc'd, n_roll of cap_roll used */
    size_t n_roll, cap_roll;
};

/* Remember it for the rollups (after the pipeline): 0 or -ENOMEM (transient: the group is
 * tried again). */
static int roll_later(struct wstate *w, struct store_item *it, int64_t agent_id,
                      int64_t instance_id)
{
    if (w->n_roll == w->cap_roll) {
        size_t cap = w->cap_roll ? w->cap_roll * 2 : 64;
        struct roll *v = realloc(w->roll, cap * sizeof *v);
        if (!v) {
            w->rc = -ENOMEM;
            snprintf(w->msg, sizeof w->msg, "out of memory");
            return w->rc;
        }
        w->roll = v;
        w->cap_roll = cap;
    }
    w->roll[w->n_roll++] = (struct roll){it, agent_id, instance_id};
    return 0;
}

/* Keep the first error of the group (its class and message); r may be NULL. */
static int failed(struct pg_store *s, struct wstate *w, const PGresult *r)
{
    if (w->rc == 0) {
        w->rc = pg_errno(s->wconn, r);
        scrub(s, r ? PQresultErrorMessage(r) : PQerrorMessage(s->wconn), w->msg, sizeof w->msg);
        w->rc = w->rc ? w->rc : -EIO;
    }
    return w->rc;
}

static int result_ok(const PGresult *r)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* The next result of the pipeline, and the NULL that ends it (each statement has one). */
static PGresult *pipe_next(struct pg_store *s)
{
    PGresult *r = PQgetResult(s->wconn);
    if (r && PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(PQgetResult(s->wconn));
    }
    s->pending--;
    return r;
}

/* In pipeline mode (a group under way) a statement whose rows are not needed is only sent:
 * the server runs it in order, and its result is read with the next statement whose rows are
 * (or at COMMIT, or every PIPE_MAX statements, so that neither side's buffers fill). The
 * first error of the group is kept: the server skips everything after it until the sync, and
 * the group fails as a whole, as without the pipeline. */
#define PIPE_MAX 256
static int run_pipe(struct pg_store *s, struct wstate *w, const char *sql,
                    const struct pg_params *p, PGresult **res)
{
    static const struct pg_params none = {0};
    p = p ? p : &none;
    if (w->rc) {
        return w->rc;
    }
    if (!PQsendQueryParams(s->wconn, sql, p->n, NULL, p->v, p->len, p->fmt, 1)) {
        return failed(s, w, NULL);
    }
    s->pending++;
    if (!res && s->pending < PIPE_MAX) {
        return 0;
    }
    if (PQsendFlushRequest(s->wconn) != 1 || PQflush(s->wconn) != 0) {
        return failed(s, w, NULL);
    }
    while (s->pending > (res ? 1 : 0)) {
        PGresult *r = pipe_next(s);
        if (!result_ok(r)) {
            failed(s, w, r);
        }
        PQclear(r);
    }
    if (res) {
        PGresult *r = pipe_next(s);
        if (!result_ok(r) || w->rc) {
            failed(s, w, r);
            PQclear(r);
            return w->rc;
        }
        *res = r;
    }
    return w->rc;
}

/* End the group's pipeline: sync, read every result left (COMMIT's among them) and leave
 * pipeline mode. rc: the group's outcome so far; the outcome with the pipeline's errors. */
static int pipe_end(struct pg_store *s, struct wstate *w, int rc)
{
    if (!s->pipe) {
        return rc;
    }
    s->pipe = 0;
    if (PQpipelineSync(s->wconn) != 1) {
        rc = failed(s, w, NULL);
    }
    s->pending++; /* the sync's own result */
    while (s->pending > 0) {
        PGresult *r = pipe_next(s);
        if (!r) {
            rc = failed(s, w, NULL); /* the connection is gone */
            break;
        }
        if (PQresultStatus(r) != PGRES_PIPELINE_SYNC && !result_ok(r)) {
            rc = failed(s, w, r);
        }
        PQclear(r);
    }
    s->pending = 0;
    if (PQexitPipelineMode(s->wconn) != 1) {
        /* Out of step with the server: start again on a new connection. */
        rc = failed(s, w, NULL);
        PQfinish(s->wconn);
        s->wconn = NULL;
    }
    return rc ? rc : w->rc;
}

/* Run a statement; rows in *res (caller clears) when res is non-NULL. 0, or the class of the
 * error with its message in w. */
static int run(struct pg_store *s, struct wstate *w, const char *sql, const struct pg_params *p,
               PGresult **res)
{
    if (s->pipe) {
        return run_pipe(s, w, sql, p, res);
    }
    PGresult *r = pg_exec(s->wconn, NULL, sql, p);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        w->rc = pg_errno(s->wconn, r);
        scrub(s, r ? PQresultErrorMessage(r) : PQerrorMessage(s->wconn), w->msg, sizeof w->msg);
        PQclear(r);
        return w->rc;
    }
    if (res) {
        *res = r;
    } else {
        PQclear(r);
    }
    return 0;
}

/* One int8 from the first row of sql's answer: 1 with *v, 0 without rows, negative on error. */
static int run_i64(struct pg_store *s, struct wstate *w, const char *sql, const struct pg_params *p,
                   int64_t *v)
{
    PGresult *r;
    if (run(s, w, sql, p, &r) != 0) {
        return w->rc;
    }
    int found = PQntuples(r) > 0;
    if (found) {
        *v = pg_i64(r, 0, 0);
    }
    PQclear(r);
    return found;
}

enum { OWN_AGENT = 0, OWN_INSTANCE = 1 };

/* Whether identity owns (kind, key), claiming it if nobody does yet: 1 yes, 0 no, negative on
 * an error. */
static int owned_by(struct pg_store *s, struct wstate *w, int kind, int64_t key,
                    const char *identity)
{
    struct pg_params p = {0};
    pg_p_i64(&p, kind);
    pg_p_i64(&p, key);
    pg_p_str(&p, identity);
    PGresult *r;
    /* The CTE's insert is not seen by the plain select of the same statement: one of the two
     * answers. */
    if (run(s, w,
            "WITH ins AS (INSERT INTO owners(kind, key, identity) VALUES($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING identity)"
            " SELECT identity FROM ins UNION ALL"
            " SELECT identity FROM owners WHERE kind = $1 AND key = $2",
            &p, &r) != 0) {
        return w->rc;
    }
    int own = 0;
    if (PQntuples(r) > 0) {
        size_t n;
        const char *o = pg_bytes(r, 0, 0, &n);
        own = o && n == strlen(identity) && memcmp(o, identity, n) == 0;
    }
    PQclear(r);
    return own;
}

/* The agent's id, its row made first when new (first_seen = last_seen = now). */
static int agent_id(struct pg_store *s, struct wstate *w, const char *name, int64_t now,
                    int64_t *id)
{
    struct pg_params p = {0};
    pg_p_str(&p, name);
    int rc = run_i64(s, w, "SELECT id FROM agents WHERE name = $1", &p, id);
    if (rc != 0) {
        return rc < 0 ? rc : 0;
    }
    pg_p_i64(&p, now);
    rc = run_i64(s, w,
                 "INSERT INTO agents(name, first_seen, last_seen) VALUES($1, $2, $2) RETURNING id",
                 &p, id);
    return rc < 0 ? rc : rc == 1 ? 0 : -EIO;
}

/* The instance row of it (made first when new, under agent aid, moving the agent's last_seen). */
static int instance(struct pg_store *s, struct wstate *w, const struct store_item *it, int64_t aid,
                    int64_t now, struct inst *e)
{
    struct pg_params p = {0};
    pg_p_bytes(&p, it->ident.instance, 16);
    PGresult *r;
    if (run(s, w, "SELECT id, agent_id, max_seq FROM instances WHERE uuid = $1", &p, &r) != 0) {
        return w->rc;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        pg_p_i64(&p, aid);
        pg_p_i64(&p, it->ident.pid);
        pg_p_str(&p, it->ident.host);
        pg_p_str(&p, it->ident.library);
        pg_p_i64(&p, (int64_t)it->ident.start_unix_ns);
        pg_p_i64(&p, now);
        if (run(s, w,
                "INSERT INTO instances(uuid, agent_id, pid, host, library, start_ns, first_seen,"
                " last_seen) VALUES($1, $2, $3, $4, $5, $6, $7, $7)"
                " RETURNING id, agent_id, max_seq",
                &p, &r) != 0) {
            return w->rc;
        }
        struct pg_params q = {0};
        pg_p_i64(&q, aid);
        pg_p_i64(&q, now);
        if (run(s, w, "UPDATE agents SET last_seen = GREATEST(last_seen, $2) WHERE id = $1", &q,
                NULL) != 0) {
            PQclear(r);
            return w->rc;
        }
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        w->rc = -EIO;
        snprintf(w->msg, sizeof w->msg, "instance row missing");
        return w->rc;
    }
    e->id = pg_i64(r, 0, 0);
    e->agent_id = pg_i64(r, 0, 1);
    e->max_seq = (uint64_t)pg_i64(r, 0, 2);
    PQclear(r);
    return 0;
}

/* The stored frame of e with the greatest first_seq in [lo, hi] (signed order): 1 with its
 * range, 0 if none, negative on an error. */
static int frame_at_or_below(struct pg_store *s, struct wstate *w, const struct inst *e, int64_t lo,
                             int64_t hi, uint64_t *pf, uint64_t *pn)
{
    struct pg_params p = {0};
    pg_p_i64(&p, e->id);
    pg_p_i64(&p, lo);
    pg_p_i64(&p, hi);
    PGresult *r;
    if (run(s, w,
            "SELECT first_seq, n FROM frames WHERE instance_id = $1 AND first_seq BETWEEN $2 AND"
            " $3 ORDER BY first_seq DESC LIMIT 1",
            &p, &r) != 0) {
        return w->rc;
    }
    int found = PQntuples(r) == 1;
    if (found) {
        *pf = (uint64_t)pg_i64(r, 0, 0);
        *pn = (uint64_t)pg_i64(r, 0, 1);
    }
    PQclear(r);
    return found;
}

/* STORE_OK, STORE_DUP, STORE_REJECT, or negative on an error. As sqlite.c's dedup: sequence
 * numbers of 2^63 and above are stored negative, so the frame just below `last` in unsigned
 * order is looked for among the values of its sign first, then among the non-negative ones. */
static int dedup(struct pg_store *s, struct wstate *w, const struct inst *e, uint64_t first,
                 uint64_t n)
{
    if (first > e->max_seq) {
        return STORE_OK;
    }
    uint64_t last = first + n - 1;
    uint64_t pf = 0, pn = 0;
    int found;
    if (last <= (uint64_t)INT64_MAX) {
        found = frame_at_or_below(s, w, e, 0, (int64_t)last, &pf, &pn);
    } else {
        found = frame_at_or_below(s, w, e, INT64_MIN, (int64_t)last, &pf, &pn);
        found = found ? found : frame_at_or_below(s, w, e, 0, INT64_MAX, &pf, &pn);
    }
    if (found < 0) {
        return found;
    }
    if (found && pf == first && pn == n) {
        return STORE_DUP;
    }
    if (found && pf + pn - 1 >= first) {
        return STORE_REJECT;
    }
    /* A range retention removed (postgres_retain.c): acknowledged, never stored again. */
    struct pg_params p = {0};
    pg_p_i64(&p, e->id);
    int64_t mark = 0;
    found =
        run_i64(s, w, "SELECT pruned_max FROM retain_instances WHERE instance_id = $1", &p, &mark);
    if (found <= 0 || first > (uint64_t)mark) {
        return found < 0 ? found : STORE_OK;
    }
    return last <= (uint64_t)mark ? STORE_DUP : STORE_REJECT;
}

/* Insert the frame of it (sent without waiting in the pipeline). (instance, first_seq) is
 * unique besides the dedup check: a conflict (a commit the check could not see, which
 * PG_WRITER_LOCK rules out) is SQLSTATE 23505, a transient refusal of the group, and the
 * agents' resend is then answered STORE_DUP by the check. */
static int insert_frame(struct pg_store *s, struct wstate *w, const struct inst *e,
                        const struct store_item *it)
{
    const tt__batch *b = &it->batch;
    struct pg_params p = {0};
    pg_p_i64(&p, e->agent_id);
    pg_p_i64(&p, e->id);
    pg_p_i64(&p, (int64_t)b->first_seq);
    pg_p_i64(&p, b->n_events);
    pg_p_i64(&p, b->t_min);
    pg_p_i64(&p, b->t_max);
    pg_p_i64(&p, b->kinds);
    pg_p_i64(&p, (int64_t)it->received_ns);
    pg_p_i64(&p, it->blob ? 1 : 0);
    pg_p_i64(&p, (int64_t)it->raw_len);
    if (it->blob) {
        pg_p_bytes(&p, it->blob, it->blob_len);
    } else {
        pg_p_bytes(&p, it->raw, it->raw_len);
    }
    pg_p_i64(&p, b->clock_skew_ms);
    return run(s, w,
               "INSERT INTO frames(agent_id, instance_id, first_seq, n, t_min, t_max, kinds,"
               " received, codec, raw_len, data, clock_skew_ms)"
               " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
               &p, NULL);
}

/* Sessions of a batch: the counts ingest's parse summarised, or a walk of its events when it
 * had more sessions than the summary holds. */
static int session_put(struct pg_store *s, struct wstate *w, int64_t aid, tt__bstr name,
                       int64_t first, int64_t last, int64_t events)
{
    struct pg_params p = {0};
    pg_p_i64(&p, aid);
    pg_p_bytes(&p, name.p, name.n);
    pg_p_i64(&p, first);
    pg_p_i64(&p, last);
    pg_p_i64(&p, events);
    return run(s, w,
               "INSERT INTO sessions(agent_id, name, first_seen, last_seen, events)"
               " VALUES($1, $2, $3, $4, $5) ON CONFLICT(agent_id, name) DO UPDATE SET"
               " first_seen = LEAST(sessions.first_seen, excluded.first_seen),"
               " last_seen = GREATEST(sessions.last_seen, excluded.last_seen),"
               " events = sessions.events + excluded.events",
               &p, NULL);
}

static void p_bstr(struct pg_params *p, tt__bstr b)
{
    pg_p_bytes(p, b.n ? b.p : NULL, b.n); /* empty: NULL, as derive.c */
}

static int step_begin(struct pg_store *s, struct wstate *w, const tt__event *ev, int64_t aid,
                      int64_t inst)
{
    tt__ev_step_begin sb;
    if (tt__ev_step_begin_decode(ev->body, &sb) != 0) {
        return 0;
    }
    struct pg_params p = {0};
    pg_p_i64(&p, inst);
    pg_p_i64(&p, (int64_t)sb.step_id);
    pg_p_i64(&p, aid);
    pg_p_i64(&p, (int64_t)sb.parent_id);
    p_bstr(&p, ev->session);
    pg_p_i64(&p, sb.kind);
    p_bstr(&p, sb.name);
    p_bstr(&p, sb.query);
    pg_p_i64(&p, ev->time);
    if (sb.has_trace) { /* the trace context (since 0.5): NULL columns without one */
        pg_p_bytes(&p, sb.trace_id, 16);
        pg_p_i64(&p, (int64_t)sb.span_id);
        pg_p_i64(&p, (int64_t)sb.parent_span_id);
    } else {
        pg_p_null(&p);
        pg_p_null(&p);
        pg_p_null(&p);
    }
    return run(s, w,
               "INSERT INTO steps(instance_id, step_id, agent_id, parent_id, session, kind, name,"
               " query, start_ns, trace_id, span_id, parent_span_id)"
               " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
               " ON CONFLICT(instance_id, step_id) DO UPDATE SET parent_id = excluded.parent_id,"
               " session = excluded.session, kind = excluded.kind, name = excluded.name,"
               " query = excluded.query, start_ns = excluded.start_ns,"
               " trace_id = excluded.trace_id, span_id = excluded.span_id,"
               " parent_span_id = excluded.parent_span_id",
               &p, NULL);
}

static int step_end(struct pg_store *s, struct wstate *w, const tt__event *ev, int64_t aid,
                    int64_t inst)
{
    tt__ev_step_end se;
    if (tt__ev_step_end_decode(ev->body, &se) != 0) {
        return 0;
    }
    struct pg_params p = {0};
    pg_p_i64(&p, inst);
    pg_p_i64(&p, (int64_t)se.step_id);
    pg_p_i64(&p, aid);
    pg_p_i64(&p, (int64_t)se.duration_ns);
    pg_p_i64(&p, se.status);
    pg_p_i64(&p, se.result_bytes);
    p_bstr(&p, se.error);
    /* without its begin: end - duration */
    pg_p_i64(&p, tt__sub_sat_i64(ev->time, tt__dur_i64(se.duration_ns)));
    p_bstr(&p, ev->session);
    if (se.kind) {
        pg_p_i64(&p, se.kind);
    } else {
        pg_p_null(&p);
    }
    p_bstr(&p, se.name);
    return run(s, w,
               "INSERT INTO steps(instance_id, step_id, agent_id, duration_ns, status,"
               " result_bytes, error, start_ns, session, kind, name)"
               " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
               " ON CONFLICT(instance_id, step_id) DO UPDATE SET"
               " duration_ns = excluded.duration_ns, status = excluded.status,"
               " result_bytes = excluded.result_bytes, error = excluded.error,"
               " session = COALESCE(steps.session, excluded.session),"
               " kind = COALESCE(steps.kind, excluded.kind),"
               " name = COALESCE(steps.name, excluded.name)",
               &p, NULL);
}

/* A response's begin, end, token chunk or guard decision, as derive.c's response_event. */
static int response_event(struct pg_store *s, struct wstate *w, const tt__event *ev, int64_t aid,
                          int64_t inst)
{
    struct pg_params p = {0};
    pg_p_i64(&p, inst);
    if (ev->kind == TT_EV_RESPONSE_BEGIN) {
        tt__ev_response_begin b;
        if (tt__ev_response_begin_decode(ev->body, &b) != 0) {
            return 0;
        }
        pg_p_i64(&p, (int64_t)b.response_id);
        pg_p_i64(&p, aid);
        p_bstr(&p, ev->session);
        p_bstr(&p, b.model);
        pg_p_i64(&p, ev->time);
        pg_p_bytes(&p, ev->body.p, ev->body.n);
        pg_p_i64(&p, (int64_t)b.step_id);
        /* A response opened in a step without a session of its own takes the step's. */
        return run(s, w,
                   "INSERT INTO responses(instance_id, response_id, agent_id, session, model,"
                   " begin_ns, begin_body) VALUES($1, $2, $3, COALESCE($4::bytea, (SELECT"
                   " session FROM steps WHERE instance_id = $1 AND step_id = $8::bigint AND"
                   " $8::bigint != 0)), $5, $6, $7) ON CONFLICT(instance_id, response_id) DO"
                   " UPDATE SET session = excluded.session, model = excluded.model,"
                   " begin_ns = excluded.begin_ns, begin_body = excluded.begin_body",
                   &p, NULL);
    }
    if (ev->kind == TT_EV_RESPONSE_END) {
        tt__ev_response_end e;
        if (tt__ev_response_end_decode(ev->body, &e) != 0) {
            return 0;
        }
        pg_p_i64(&p, (int64_t)e.response_id);
        pg_p_i64(&p, aid);
        p_bstr(&p, ev->session);
        pg_p_i64(&p, ev->time);
        pg_p_i64(&p, e.tokens);
        double v[] = {e.mean_logprob, e.min_logprob,          e.perplexity,
                      e.mean_entropy, e.low_confidence_share, e.min_window_confidence};
        for (int i = 0; i < 6; i++) {
            pg_p_f64(&p, v[i]); /* NaN goes as NULL */
        }
        pg_p_i64(&p, e.verdict);
        p_bstr(&p, e.reason);
        pg_p_i64(&p, (int64_t)e.duration_ns);
        pg_p_i64(&p, e.estimated);
        return run(s, w,
                   "INSERT INTO responses(instance_id, response_id, agent_id, session, end_ns,"
                   " tokens, mean_logprob, min_logprob, perplexity, mean_entropy,"
                   " low_confidence_share, min_window_confidence, verdict, reason, duration_ns,"
                   " estimated) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
                   " $14, $15, $16) ON CONFLICT(instance_id, response_id) DO UPDATE SET"
                   " end_ns = excluded.end_ns, tokens = excluded.tokens,"
                   " mean_logprob = excluded.mean_logprob, min_logprob = excluded.min_logprob,"
                   " perplexity = excluded.perplexity, mean_entropy = excluded.mean_entropy,"
                   " low_confidence_share = excluded.low_confidence_share,"
                   " min_window_confidence = excluded.min_window_confidence,"
                   " verdict = excluded.verdict, reason = excluded.reason,"
                   " duration_ns = excluded.duration_ns, estimated = excluded.estimated",
                   &p, NULL);
    }
    if (ev->kind == TT_EV_TOKENS) {
        tt__ev_tokens t;
        if (tt__ev_tokens_decode(ev->body, &t) != 0) {
            return 0;
        }
        pg_p_i64(&p, (int64_t)t.response_id);
        pg_p_i64(&p, t.first_index);
        pg_p_i64(&p, (int64_t)(t.logprobs.n / 4));
        pg_p_bytes(&p, ev->body.p, ev->body.n);
        return run(s, w,
                   "INSERT INTO response_tokens(instance_id, response_id, first_index, n, body)"
                   " VALUES($1, $2, $3, $4, $5) ON CONFLICT(instance_id, response_id,"
                   " first_index) DO UPDATE SET n = excluded.n, body = excluded.body",
                   &p, NULL);
    }
    tt__ev_guard g;
    if (tt__ev_guard_decode(ev->body, &g) != 0) {
        return 0;
    }
    pg_p_i64(&p, (int64_t)ev->seq);
    pg_p_i64(&p, (int64_t)g.response_id);
    pg_p_i64(&p, aid);
    p_bstr(&p, ev->session);
    pg_p_i64(&p, ev->time);
    pg_p_i64(&p, g.token_index);
    pg_p_i64(&p, g.verdict);
    p_bstr(&p, g.reason);
    pg_p_f64(&p, g.value);
    pg_p_f64(&p, g.threshold);
    return run(s, w,
               "INSERT INTO guard_events(instance_id, seq, response_id, agent_id, session,"
               " time_ns, token_index, verdict, reason, value, threshold)"
               " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
               &p, NULL);
}

/* The derived rows of a batch (derive.c's): sessions from the counts
 * ingest's parse summarised (or from the events when it had more than the summary holds), steps
 * from a walk of the events when the batch has any. */
static int derive_item(struct pg_store *s, struct wstate *w, const struct store_item *it,
                       int64_t aid, int64_t inst)
{
    tt__batch b = it->batch; /* a copy: iteration state is ours */
    uint32_t steps = (1u << TT_EV_STEP_BEGIN) | (1u << TT_EV_STEP_END);
    uint32_t responses = (1u << TT_EV_RESPONSE_BEGIN) | (1u << TT_EV_RESPONSE_END) |
                         (1u << TT_EV_TOKENS) | (1u << TT_EV_GUARD);
    int from_walk = b.has_session && b.sessions_overflow;
    if (b.has_session && !from_walk) {
        for (uint32_t i = 0; i < b.n_sessions; i++) {
            const tt__batch_session *ss = &b.sessions[i];
            if (session_put(s, w, aid, ss->name, ss->t_min, ss->t_max, ss->events) != 0) {
                return w->rc;
            }
        }
    }
    if (!from_walk && !(b.kinds & (steps | responses))) {
        return 0;
    }
    tt__event ev;
    int rc = 0;
    while (rc == 0 && tt__batch_next(&b, &ev)) {
        if (from_walk && ev.session.n) {
            rc = session_put(s, w, aid, ev.session, ev.time, ev.time, 1);
        }
        if (rc == 0 && ev.kind == TT_EV_STEP_BEGIN) {
            rc = step_begin(s, w, &ev, aid, inst);
        } else if (rc == 0 && ev.kind == TT_EV_STEP_END) {
            rc = step_end(s, w, &ev, aid, inst);
        } else if (rc == 0 && ((1u << ev.kind) & responses)) {
            rc = response_event(s, w, &ev, aid, inst);
        }
    }
    return rc;
}

static int update_instance(struct pg_store *s, struct wstate *w, struct inst *e,
                           const struct store_item *it, uint64_t stored, int64_t now)
{
    const tt__batch *b = &it->batch;
    const tt__client_stats *cs = &b->stats;
    uint64_t last = b->n_events ? b->first_seq + b->n_events - 1 : 0;
    uint64_t total = 0;
    char dropped[512];
    size_t off = (size_t)snprintf(dropped, sizeof dropped, "[");
    for (uint32_t i = 0; i < cs->n_dropped; i++) {
        total += cs->dropped[i];
        if (off < sizeof dropped) {
            off += (size_t)snprintf(dropped + off, sizeof dropped - off, "%s%llu", i ? "," : "",
                                    (unsigned long long)cs->dropped[i]);
        }
    }
    if (off < sizeof dropped) {
        snprintf(dropped + off, sizeof dropped - off, "]");
    }
    uint64_t max_seq = stored && last > e->max_seq ? last : e->max_seq;
    struct pg_params p = {0};
    pg_p_i64(&p, e->id);
    pg_p_i64(&p, now);
    pg_p_i64(&p, (int64_t)max_seq);
    pg_p_i64(&p, (int64_t)stored);
    pg_p_i64(&p, b->has_stats ? (int64_t)cs->emitted : -1);
    pg_p_i64(&p, (int64_t)cs->acked);
    pg_p_i64(&p, (int64_t)cs->possibly_delivered);
    pg_p_i64(&p, (int64_t)total);
    pg_p_bytes(&p, dropped, strlen(dropped)); /* text in binary form: its bytes */
    pg_p_i64(&p, (int64_t)cs->buffered);
    pg_p_i64(&p, (int64_t)cs->spooled);
    int rc = run(s, w,
                 "UPDATE instances SET last_seen = GREATEST(last_seen, $2), max_seq = $3,"
                 " stored = stored + $4,"
                 " c_acked = CASE WHEN $5 >= c_emitted THEN $6 ELSE c_acked END,"
                 " c_possibly = CASE WHEN $5 >= c_emitted THEN $7 ELSE c_possibly END,"
                 " c_dropped_total = CASE WHEN $5 >= c_emitted THEN $8 ELSE c_dropped_total END,"
                 " c_dropped = CASE WHEN $5 >= c_emitted THEN $9::text ELSE c_dropped END,"
                 " c_buffered = CASE WHEN $5 >= c_emitted THEN $10 ELSE c_buffered END,"
                 " c_spooled = CASE WHEN $5 >= c_emitted THEN $11 ELSE c_spooled END,"
                 " c_emitted = CASE WHEN $5 >= c_emitted THEN $5 ELSE c_emitted END"
                 " WHERE id = $1",
                 &p, NULL);
    if (rc == 0) {
        e->max_seq = max_seq;
    }
    return rc;
}

/* The error of a function of another file (rollups) into w: its class and the server's
 * message. */
static int ext_rc(struct pg_store *s, struct wstate *w, int rc)
{
    if (rc < 0) {
        w->rc = rc;
        scrub(s, PQerrorMessage(s->wconn), w->msg, sizeof w->msg);
    }
    return rc;
}

static struct seen *seen_find(struct wstate *w, const struct agent_ident *id)
{
    for (int i = 0; i < w->n_seen; i++) {
        const struct agent_ident *k = w->seen[i].ident;
        if (memcmp(k->instance, id->instance, 16) == 0 && strcmp(k->agent, id->agent) == 0 &&
            strcmp(k->identity, id->identity) == 0) {
            return &w->seen[i];
        }
    }
    return NULL;
}

/* The agent and instance rows of it, and whether its identity owns both: 1 (the rows in
 * *out, remembered for the group), 0 not owned, negative on an error. */
static int owned_instance(struct pg_store *s, struct wstate *w, const struct store_item *it,
                          int64_t now, struct seen **out)
{
    *out = seen_find(w, &it->ident);
    if (*out) {
        return 1;
    }
    struct seen k = {.ident = &it->ident};
    int rc = agent_id(s, w, it->ident.agent, now, &k.aid);
    if (rc) {
        return rc;
    }
    int own = owned_by(s, w, OWN_AGENT, k.aid, it->ident.identity);
    if (own > 0) {
        rc = instance(s, w, it, k.aid, now, &k.e);
        if (rc) {
            return rc;
        }
        own = owned_by(s, w, OWN_INSTANCE, k.e.id, it->ident.identity);
    }
    if (own > 0) {
        /* When full, the last entry is overwritten: a group naming many instances looks the
         * later ones up each time, as without the cache. */
        int i = w->n_seen < SEEN_MAX ? w->n_seen++ : SEEN_MAX - 1;
        w->seen[i] = k;
        *out = &w->seen[i];
    }
    return own;
}

/* Store one item inside the open transaction: 0, or an error that aborts the whole group. */
static int store_one(struct pg_store *s, struct wstate *w, struct store_item *it, int64_t now)
{
    struct seen *k;
    int own = owned_instance(s, w, it, now, &k);
    if (own < 0) {
        return own;
    }
    if (own == 0) {
        it->result = STORE_REJECT;
        it->reason = store_reason_not_owner;
        return 0;
    }
    int rc;
    int64_t aid = k->aid;
    struct inst *e = &k->e;
    const tt__batch *b = &it->batch;
    if (it->replayed && e->agent_id != aid) {
        it->result = STORE_REJECT;
        it->reason = "batch names an instance of another agent";
        return 0;
    }
    uint64_t stored = 0;
    if (b->n_events == 0) {
        it->result = STORE_OK; /* a heartbeat: counters only */
    } else {
        int d = dedup(s, w, e, b->first_seq, b->n_events);
        if (d < 0) {
            return d;
        }
        it->result = d;
        if (d == STORE_REJECT) {
            it->reason = "sequence range overlaps stored events";
        } else if (d == STORE_OK) {
            rc = insert_frame(s, w, e, it);
            rc = rc ? rc : derive_item(s, w, it, aid, e->id);
            rc = rc ? rc : roll_later(w, it, aid, e->id);
            if (rc) {
                return rc;
            }
            stored = b->n_events;
        }
    }
    return update_instance(s, w, e, it, stored, now);
}

static void group_failed(struct pg_store *s, const struct wstate *w)
{
    char cause[512];
    if (store_error_class(w->rc) == STORE_ERR_FATAL) {
        if (!s->fatal) {
            s->fatal = 1;
            snprintf(cause, sizeof cause, "PostgreSQL %.200s: %.290s", s->shown, w->msg);
            log_warn("store: %s: refusing every batch from now on, nothing more is acknowledged "
                     "(agents keep theirs and resend); stop telltale serve and repair "
                     "(docs/operations.md, \"PostgreSQL store\")",
                     cause);
            pthread_mutex_lock(&s->q.lock);
            snprintf(s->failure, sizeof s->failure, "%s", cause);
            s->refusing[0] = 0;
            pthread_mutex_unlock(&s->q.lock);
        }
        return;
    }
    if (s->refused++ == 0) {
        snprintf(cause, sizeof cause, "PostgreSQL %.200s: %.290s", s->shown,
                 w->rc == -ENOSPC ? "the server's disk is full" : w->msg);
        log_warn("store: %s: refusing batches for now (agents keep and resend them) until a "
                 "commit goes through",
                 cause);
        pthread_mutex_lock(&s->q.lock);
        snprintf(s->refusing, sizeof s->refusing, "%s", cause);
        pthread_mutex_unlock(&s->q.lock);
    }
}

/* A usable writer connection: reconnect after a loss. 0 or the error's class in w. */
static int writer_conn(struct pg_store *s, struct wstate *w)
{
    if (s->wconn && PQstatus(s->wconn) == CONNECTION_OK &&
        PQtransactionStatus(s->wconn) == PQTRANS_IDLE) {
        return 0;
    }
    PQfinish(s->wconn);
    char err[512];
    s->wconn = pg_connect(&s->base, err, sizeof err);
    if (!s->wconn || set_sync(s, s->wconn, err, sizeof err) != 0) {
        PQfinish(s->wconn);
        s->wconn = NULL;
        w->rc = -EAGAIN; /* the server is not there now: the agents resend */
        snprintf(w->msg, sizeof w->msg, "%.380s", err);
        return w->rc;
    }
    return 0;
}

static void commit_group(struct pg_store *s, struct store_item *head)
{
    uint64_t t0 = tt__mono_ns();
    int64_t now = (int64_t)tt__wall_ns();
    if (s->fatal) {
        store_queue_group_done(&s->q, head, 1);
        return;
    }
    struct wstate w = {0};
    char lock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%lld)", (long long)PG_WRITER_LOCK);
    int rc = writer_conn(s, &w);
    s->pipe = rc == 0 && PQenterPipelineMode(s->wconn) == 1;
    s->pending = 0;
    rc = rc ? rc : run(s, &w, "BEGIN", NULL, NULL);
    rc = rc ? rc : run(s, &w, lock, NULL, NULL);
    for (struct store_item *it = head; it && rc == 0; it = it->next) {
        rc = store_one(s, &w, it, now);
    }
    /* The pipeline ends here, inside the open transaction (a sync does not end a transaction
     * block); the rollups read the group's step rows and write theirs synchronously, then
     * COMMIT, so they commit with the events they count or not at all. */
    rc = pipe_end(s, &w, rc);
    for (size_t i = 0; i < w.n_roll && rc == 0; i++) {
        rc = ext_rc(s, &w,
                    pg_rollup_item(s->rollup, s->wconn, w.roll[i].it, w.roll[i].agent_id,
                                   w.roll[i].instance_id));
    }
    free(w.roll);
    rc = rc ? rc : ext_rc(s, &w, pg_rollup_flush(s->rollup, s->wconn));
    rc = rc ? rc : run(s, &w, "COMMIT", NULL, NULL);
    if (rc) {
        pg_rollup_discard(s->rollup);
        if (s->wconn && PQstatus(s->wconn) == CONNECTION_OK) {
            PGresult *r = PQexec(s->wconn, "ROLLBACK");
            PQclear(r);
        }
        cstat_add(&cstats.store_errors, 1);
        group_failed(s, &w);
    } else {
        store_queue_committed(&s->q, tt__mono_ns() - t0, &s->refused, s->refusing);
    }
    store_queue_group_done(&s->q, head, rc != 0);
}

static void *writer_main(void *arg)
{
    struct pg_store *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->q.lock);
        while (!s->q.in_head && !s->q.stop) {
            pthread_cond_wait(&s->q.cond, &s->q.lock);
        }
        struct store_item *head = store_queue_take_in(&s->q);
        int stop = s->q.stop;
        pthread_mutex_unlock(&s->q.lock);
        if (head) {
            commit_group(s, head);
        } else if (stop) {
            break;
        }
    }
    return NULL;
}

static int pg_start(struct store *base)
{
    struct pg_store *s = (struct pg_store *)base;
    int rc = pthread_create(&s->thread, NULL, writer_main, s);
    if (rc == 0) {
        pthread_setname_np(s->thread, "tt-store");
        s->started = 1;
    }
    return -rc;
}

static void pg_close(struct store *base)
{
    struct pg_store *s = (struct pg_store *)base;
    if (!s) {
        return;
    }
    if (s->started) {
        store_queue_stop(&s->q);
        pthread_join(s->thread, NULL);
    }
    PQfinish(s->wconn);
    PQfinish(s->aux.c);
    while (s->n_idle > 0) {
        PQfinish(s->idle[--s->n_idle]);
    }
    pthread_mutex_destroy(&s->pool_mu);
    pthread_cond_destroy(&s->pool_cv);
    pg_rollup_free(s->rollup);
    pg_retain_free(s->retain);
    pthread_mutex_destroy(&s->aux.lock);
    store_queue_fini(&s->q);
    explicit_bzero(s->url, sizeof s->url);
    explicit_bzero(s->secret, sizeof s->secret);
    free(s);
}

const struct store_ops store_postgres_ops = {
    .scheme = "postgres",
    .alias = "postgresql",
    .lacks = NULL,
    .open = pg_open,
    .start = pg_start,
    .close = pg_close,
    .describe = pg_describe,
    .failure = pg_failure,
    .events_open = pg_events_open,
    .events_next = pg_events_next,
    .events_cursor = pg_events_cursor,
    .events_close = pg_events_close,
    .events_count = pg_events_count,
    .read_open = pg_read_open,
    .read_close = pg_read_close,
    .agents = pg_agents,
    .agent_owner = pg_agent_owner,
    .sessions = pg_sessions,
    .session_find = pg_session_find,
    .session_agents = pg_session_agents,
    .session_steps = pg_session_steps,
    .session_responses = pg_session_responses,
    .responses = pg_responses,
    .response_tokens = pg_response_tokens,
    .response_guard = pg_response_guard,
    .alerts = pg_alerts,
    .alert_add = pg_alert_add,
    .alert_ack = pg_alert_ack,
    .alert_put = pg_alert_put,
    .alert_max_id = pg_alert_max_id,
    .follow_open = pg_follow_open,
    .follow_next = pg_follow_next,
    .follow_lead = pg_follow_lead,
    .follow_adopt = pg_follow_adopt,
    .follow_settle = pg_follow_settle,
    .follow_close = pg_follow_close,
    .retention_run = pg_retention_run,
    .rollups = pg_rollups,
};

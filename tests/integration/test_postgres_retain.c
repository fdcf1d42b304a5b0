/*
 * test_postgres_retain.c - rollups and retention of the PostgreSQL store (store/postgres_rollup.c,
 * store/postgres_retain.c) on a real private PostgreSQL server per test (tests/support/pgcluster.c):
 * GET /api/v1/series answers the same from a SQLite collector and a PostgreSQL collector fed the
 * same stream, at every level; by age, old batches go, what is kept on purpose (flagged and
 * low-confidence responses, a session with an alert) stays, a resend of a pruned range is
 * acknowledged and not stored again, and the stored rows agree afterwards; by size, the tables
 * stay near --max-bytes while a client streams. In both, a client streams all along and every
 * event it had acknowledged is either stored once or was pruned by rule (the oldest first), no
 * other is missing.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "batches.h"
#include "common/buf.h"
#include "common/wire.h"
#include "history.h"
#include "operator.h"
#include "pgcluster.h"
#include "serve.h"
#include "test.h"

/* With PostgreSQL, --max-bytes holds what the tables hold live; their files may pass it by this
 * share of it under heavy ingest (docs/operations.md, "Retention"). */
#define PG_SIZE_SLACK 1.0

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t pg_i64(const struct tt_pg *pg, const char *sql)
{
    char out[64];
    tt_pg_query(pg, sql, out, sizeof out);
    return *out ? strtoll(out, NULL, 10) : -1;
}

static int64_t events_count(const struct tt_test_serve *s, const char *query)
{
    return (int64_t)tt_test_events_count(s->http, query);
}

static int64_t session_events(const struct tt_test_serve *s, const char *agent, const char *session)
{
    char q[600];
    snprintf(q, sizeof q, "agent=%s&session=%s", agent, session);
    return events_count(s, q);
}

/* --- series: the same answers as SQLite ------------------------------------------------------ */

/* GET path's answer, without the field that names the moment of the answer. */
static json_t *series_of(const struct tt_test_serve *s, const char *path)
{
    char *body = NULL;
    long st = tt_test_http(s->http, "GET", path, NULL, &body);
    CHECK_MSG(st == 200, "GET %s: %ld %s", path, st, body ? body : "");
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    CHECK_MSG(j, "GET %s: not JSON: %s", path, e.text);
    free(body);
    json_object_del(j, "now");
    return j;
}

/* Whether two answers are the same: the same members, arrays and integers, and the same reals
 * but for the last bits (sums of doubles depend on how commits grouped the batches: the same
 * for two SQLite collectors). Where they differ into where (n bytes). */
static int same(json_t *a, json_t *b, char *where, size_t n)
{
    if (json_is_real(a) && json_is_real(b)) {
        double x = json_real_value(a), y = json_real_value(b);
        if (fabs(x - y) <= 1e-12 * fmax(fabs(x), fabs(y))) {
            return 1;
        }
        snprintf(where, n, "%.17g vs %.17g", x, y);
        return 0;
    }
    if (json_typeof(a) != json_typeof(b)) {
        snprintf(where, n, "types %d vs %d", json_typeof(a), json_typeof(b));
        return 0;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) {
            snprintf(where, n, "%zu vs %zu items", json_array_size(a), json_array_size(b));
            return 0;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!same(json_array_get(a, i), json_array_get(b, i), where, n)) {
                size_t l = strlen(where);
                snprintf(where + l, n - l, " at [%zu]", i);
                return 0;
            }
        }
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) {
            snprintf(where, n, "%zu vs %zu members", json_object_size(a), json_object_size(b));
            return 0;
        }
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v)
        {
            json_t *w = json_object_get(b, k);
            if (!w || !same(v, w, where, n)) {
                size_t l = w ? strlen(where) : 0;
                snprintf(where + l, n - l, "%s in \"%s\"", w ? "" : "missing", k);
                return 0;
            }
        }
        return 1;
    }
    if (!json_equal(a, b)) {
        char *x = json_dumps(a, JSON_ENCODE_ANY), *y = json_dumps(b, JSON_ENCODE_ANY);
        snprintf(where, n, "%.100s vs %.100s", x, y);
        free(x);
        free(y);
        return 0;
    }
    return 1;
}

static void check_same(const struct tt_test_serve *lite, const struct tt_test_serve *post,
                       const char *path)
{
    json_t *a = series_of(lite, path), *b = series_of(post, path);
    json_t *agents = json_object_get(a, "agents");
    CHECK_MSG(json_array_size(agents) > 0 &&
                  json_object_get(json_array_get(agents, 0), "totals") != NULL,
              "%s: no rows", path);
    char where[600] = "";
    CHECK_MSG(same(a, b, where, sizeof where), "%s: SQLite and PostgreSQL differ: %s", path, where);
    printf("    %s: the same (%zu agents)\n", path, json_array_size(agents));
    json_decref(a);
    json_decref(b);
}

TEST_T(postgres_series_answer_as_sqlite_for_the_same_stream, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve lite, post;
    tt_test_serve_start(&lite, "pgr_series_sqlite", NULL);
    tt_test_serve_start(&post, "pgr_series_pg", "--store", pg.url, NULL);
    /* 10^4 events over the 10 minutes that ended a minute ago, to both. */
    int64_t start = (wall_ns() / 1000000000 - 660) * 1000000000;
    struct tt_test_history h1, h2, h3, h4;
    tt_test_feed_history(lite.sock, "hist", 10000, start, 600 * 1000000000ll, 60000, &h1);
    tt_test_feed_history(post.sock, "hist", 10000, start, 600 * 1000000000ll, 60000, &h2);
    tt_test_feed_history(lite.sock, "other", 2000, start, 60 * 1000000000ll, 60000, &h3);
    tt_test_feed_history(post.sock, "other", 2000, start, 60 * 1000000000ll, 60000, &h4);
    /* Spans that pick every stored level: 1 s (in 2 s buckets), 10 s, 300 s, 3600 s. */
    static const struct {
        int64_t before_s, span_s;
        const char *agent;
    } q[] = {{0, 600, "agent=hist&"},     {0, 600, ""},
             {2400, 3600, "agent=hist&"}, {86400, 86400, "agent=hist&"},
             {6 * 86400, 7 * 86400, ""},  {0, 60, "agent=other&"}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        char path[300];
        int64_t from = start - q[i].before_s * 1000000000ll;
        snprintf(path, sizeof path, "/api/v1/series?%sfrom=%lld&to=%lld", q[i].agent,
                 (long long)from, (long long)(from + q[i].span_s * 1000000000ll));
        check_same(&lite, &post, path);
    }
    /* The totals are what was fed (the PostgreSQL rows hold each event once). */
    char path[300];
    snprintf(path, sizeof path, "/api/v1/series?agent=hist&from=%lld&to=%lld", (long long)start,
             (long long)(start + 600 * 1000000000ll));
    json_t *j = series_of(&post, path);
    json_t *tot = json_object_get(json_array_get(json_object_get(j, "agents"), 0), "totals");
    CHECK_EQ(json_integer_value(json_object_get(tot, "events")), 10000);
    json_decref(j);
    /* From the store after a restart, still the same. */
    tt_test_serve_stop(&post);
    tt_test_serve_restart(&post);
    check_same(&lite, &post, path);
    tt_test_history_free(&h1);
    tt_test_history_free(&h2);
    tt_test_history_free(&h3);
    tt_test_history_free(&h4);
    tt_test_serve_stop(&lite);
    tt_test_serve_stop(&post);
    tt_pg_stop(&pg, 1);
}

/* --- retention ------------------------------------------------------------------------------- */

/* A client streaming logs (session "run-N", 2000 events each) until stop; its stats at the end. */
struct streamer {
    const struct tt_test_serve *s;
    const char *agent;
    int per_tick; /* events every 5 ms */
    _Atomic int stop;
    uint64_t events;
    tt_stats st;
    uint8_t inst[16];
};

static void *stream_main(void *arg)
{
    struct streamer *w = arg;
    tt_client *c = tt_test_client(w->s->endpoint, w->agent, NULL);
    CHECK(c != NULL);
    tt_instance_id(c, w->inst);
    char text[200], session[32];
    uint64_t x = 88172645463325252ull;
    while (!atomic_load(&w->stop)) {
        for (int i = 0; i < w->per_tick; i++) {
            int n = 0; /* text that compresses only so far: a few random words */
            for (int k = 0; k < 6; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                n += snprintf(text + n, sizeof text - (size_t)n, "%08llx ",
                              (unsigned long long)(x & 0xffffffffu));
            }
            snprintf(session, sizeof session, "run-%llu", (unsigned long long)(w->events / 2000));
            if (tt_log(c, session, TT_INFO, text, NULL, 0) == 0) {
                w->events++;
            }
        }
        usleep(5000);
    }
    CHECK_OK(tt_flush(c, 30000 * tt_test_mult()));
    CHECK_OK(tt_stats_get(c, &w->st, sizeof w->st));
    tt_close(c, 10000);
    return NULL;
}

/* Every event the streamer had acknowledged is stored once or was pruned, and the pruned ones
 * are exactly the oldest: nothing else is missing. */
static void check_stored_or_pruned(const struct tt_pg *pg, const struct streamer *w)
{
    struct tt_store_check sc;
    tt_pg_check_store(pg, w->inst, &sc);
    char hex[33], sql[400];
    for (int i = 0; i < 16; i++) {
        snprintf(hex + 2 * i, 3, "%02x", w->inst[i]);
    }
    snprintf(sql, sizeof sql,
             "SELECT r.pruned_events FROM retain_instances r JOIN instances i"
             " ON i.id = r.instance_id WHERE i.uuid = '\\x%s'::bytea",
             hex);
    int64_t pruned = pg_i64(pg, sql);
    snprintf(sql, sizeof sql,
             "SELECT r.pruned_max FROM retain_instances r JOIN instances i"
             " ON i.id = r.instance_id WHERE i.uuid = '\\x%s'::bytea",
             hex);
    int64_t pruned_max = pg_i64(pg, sql);
    snprintf(sql, sizeof sql,
             "SELECT min(f.first_seq) FROM frames f JOIN instances i ON i.id = f.instance_id"
             " WHERE i.uuid = '\\x%s'::bytea",
             hex);
    int64_t first_stored = pg_i64(pg, sql);
    printf("    %s: acked %llu, stored %llu, pruned %lld (seq 1..%lld), first stored %lld\n",
           w->agent, (unsigned long long)w->st.acked, (unsigned long long)sc.events,
           (long long)pruned, (long long)pruned_max, (long long)first_stored);
    CHECK_MSG(pruned > 0, "nothing of %s was pruned: the test did not reach the limit", w->agent);
    CHECK_EQ_U64(sc.overlaps, 0);
    CHECK_EQ_U64(sc.decoded, sc.events);
    /* The pruned events are the gaps, all below what is stored. */
    CHECK_EQ_U64(sc.gaps, (uint64_t)pruned);
    CHECK_EQ(pruned_max, pruned);
    CHECK(first_stored == -1 || first_stored == pruned_max + 1);
    struct tt_store_check with_pruned = sc;
    with_pruned.events += (uint64_t)pruned;
    with_pruned.decoded += (uint64_t)pruned;
    tt_test_check_conservation(&w->st, &with_pruned);
    CHECK_EQ_U64(w->st.acked, sc.events + (uint64_t)pruned);
}

/*
 * The answers agree after pruning (on a collector without retention, so that nothing moves):
 * each session's stored count is what the events API counts for it; no token chunk, guard
 * decision, response or keep mark outlives what it belongs to; the instances' stored totals
 * less what went are the events in the batches.
 */
static void check_consistent(const struct tt_pg *pg, const struct tt_test_serve *s)
{
    char list[1 << 14];
    tt_pg_query(pg,
                "SELECT string_agg(convert_from(a.name, 'UTF8') || '|' ||"
                " convert_from(s.name, 'UTF8') || '|' || s.events, ';') FROM sessions s"
                " JOIN agents a ON a.id = s.agent_id",
                list, sizeof list);
    int sessions = 0;
    for (char *save = NULL, *row = strtok_r(list, ";", &save); row;
         row = strtok_r(NULL, ";", &save)) {
        char agent[256], session[256];
        long long stored;
        CHECK(sscanf(row, "%255[^|]|%255[^|]|%lld", agent, session, &stored) == 3);
        CHECK_MSG(stored > 0, "session %s/%s holds %lld events", agent, session, stored);
        int64_t counted = session_events(s, agent, session);
        CHECK_MSG(counted == stored, "session %s/%s: %lld in the sessions table, %lld events",
                  agent, session, stored, (long long)counted);
        sessions++;
    }
    CHECK(sessions > 0);
    CHECK_EQ(pg_i64(pg, "SELECT count(*) FROM response_tokens t WHERE NOT EXISTS (SELECT 1"
                        " FROM responses r WHERE r.instance_id = t.instance_id"
                        " AND r.response_id = t.response_id)"),
             0);
    CHECK_EQ(pg_i64(pg, "SELECT count(*) FROM guard_events g WHERE NOT EXISTS (SELECT 1"
                        " FROM responses r WHERE r.instance_id = g.instance_id"
                        " AND r.response_id = g.response_id)"),
             0);
    CHECK_EQ(pg_i64(pg, "SELECT count(*) FROM responses r WHERE r.session IS NOT NULL"
                        " AND NOT EXISTS (SELECT 1 FROM sessions s WHERE"
                        " s.agent_id = r.agent_id AND s.name = r.session)"),
             0);
    CHECK_EQ(pg_i64(pg, "SELECT count(*) FROM retain_keep k WHERE NOT EXISTS (SELECT 1"
                        " FROM frames f WHERE f.id = k.frame_id)"),
             0);
    int64_t in_frames = pg_i64(pg, "SELECT COALESCE(SUM(n), 0) FROM frames");
    CHECK_EQ(pg_i64(pg, "SELECT (SELECT COALESCE(SUM(stored), 0) FROM instances) -"
                        " (SELECT COALESCE(SUM(pruned_events), 0) FROM retain_instances)"),
             in_frames);
    CHECK_EQ(events_count(s, "since=0"), in_frames);
}

/* What is kept on purpose, each in batches of its own: a response the guard flagged, one that
 * passed with a low confidence, a session whose repeated tool calls raise an alert; and an
 * ordinary session and response beside them (as test_retention.c). */
static void emit_kept_and_ordinary(tt_client *c)
{
    CHECK_OK(tt_test_emit_response(c, "flagged", 0.01)); /* below token_min_prob: flagged */
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_test_emit_response(c, "lowconf", 0.2)); /* passes, below --retain-confidence */
    CHECK_OK(tt_flush(c, 10000));
    for (int i = 0; i < 10; i++) {
        CHECK_OK(tt_log(c, "alerted", TT_INFO, "before the loop", NULL, 0));
    }
    CHECK_OK(tt_flush(c, 10000));
    for (int i = 0; i < 8; i++) { /* the same call again and again: the loop detector */
        tt_step st;
        CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "alerted", "fetch", "q"));
        CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    }
    CHECK_OK(tt_flush(c, 10000));
    for (int i = 0; i < 20; i++) {
        CHECK_OK(tt_log(c, "ordinary", TT_INFO, "an ordinary line", NULL, 0));
    }
    CHECK_OK(tt_test_emit_response(c, "ordinary", 0.95));
    CHECK_OK(tt_flush(c, 10000));
}

static const char *alert_config(void)
{
    static char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/loop.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.looping]\ntype = loop\nrepeats = 5\n");
    return cfg;
}

static void wait_alert(const struct tt_test_serve *s)
{
    for (int i = 0; i < 200; i++) {
        char *body = NULL;
        CHECK_EQ(tt_test_http(s->http, "GET", "/api/v1/alerts?agent=keeper", NULL, &body), 200);
        int found = strstr(body, "\"session\":\"alerted\"") != NULL;
        free(body);
        if (found) {
            return;
        }
        usleep(50000);
    }
    CHECK_MSG(0, "no alert for the session \"alerted\"");
}

/* A hand-made agent on the Unix socket (hello for instance inst), then batches. */
static int raw_agent(const struct tt_test_serve *s, const uint8_t inst[16], const char *name)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    CHECK(strlen(s->sock) < sizeof un.sun_path);
    memcpy(un.sun_path, s->sock, strlen(s->sock) + 1);
    CHECK(connect(fd, (struct sockaddr *)&un, sizeof un) == 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memcpy(h.instance, inst, 16);
    snprintf(h.agent, sizeof h.agent, "%s", name);
    snprintf(h.library, sizeof h.library, "test");
    tt__buf payload, frame;
    tt__buf_init(&payload, 1 << 16);
    tt__buf_init(&frame, 1 << 16);
    CHECK_OK(tt__hello_encode(&h, &payload));
    CHECK_OK(tt__frame_append(&frame, TT_FT_HELLO, payload.data, payload.len));
    CHECK(write(fd, frame.data, frame.len) == (ssize_t)frame.len);
    tt__buf_fini(&payload);
    tt__buf_fini(&frame);
    return fd;
}

static int read_frame_type(int fd)
{
    uint8_t buf[4096];
    size_t n = 0;
    for (;;) {
        tt__frame f;
        size_t need;
        int rc = tt__frame_parse(buf, n, sizeof buf, &f, &need);
        if (rc == TT_FRAME_OK) {
            return f.type;
        }
        CHECK(rc == TT_FRAME_NEED_MORE);
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        CHECK_MSG(k > 0, "the collector closed the connection");
        n += (size_t)k;
    }
}

/* A batch of n events stamped in 2023; the frame type that answers it. */
static int send_old_batch(int fd, const uint8_t inst[16], uint64_t first_seq, int n)
{
    tt__buf payload, frame;
    tt__buf_init(&payload, 1 << 16);
    tt__buf_init(&frame, 1 << 16);
    tt_test_batch_payload_at(&payload, inst, first_seq, n, 1700000000000000000ull);
    CHECK_OK(tt__frame_append(&frame, TT_FT_BATCH, payload.data, payload.len));
    CHECK(write(fd, frame.data, frame.len) == (ssize_t)frame.len);
    tt__buf_fini(&payload);
    tt__buf_fini(&frame);
    return read_frame_type(fd);
}

TEST_T(postgres_retention_by_age_keeps_flagged_and_alerted_while_ingest_goes_on, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve s;
    /* Ordinary data lives 3 s; kept classes 100 times longer (the whole test). */
    tt_test_serve_start(&s, "pgr_age", "--store", pg.url, "--retain", "3s", "--retain-keep-factor",
                        "100", "--config", alert_config(), NULL);
    char *body = NULL;
    FILE *lf = fopen(s.log, "r");
    CHECK(lf != NULL);
    static char logtext[1 << 16];
    logtext[fread(logtext, 1, sizeof logtext - 1, lf)] = 0;
    fclose(lf);
    CHECK_MSG(strstr(logtext, "not available with this store") == NULL, "%s", s.log);
    static const uint8_t inst[16] = "old-instance-001";
    int fd = raw_agent(&s, inst, "old");
    CHECK_EQ(read_frame_type(fd), TT_FT_HELLO_REPLY);
    CHECK_EQ(send_old_batch(fd, inst, 1, 50), TT_FT_ACK);
    struct streamer w = {.s = &s, .agent = "live", .per_tick = 5};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, stream_main, &w) == 0);
    tt_client *c = tt_test_client(s.endpoint, "keeper", "guard.token_min_prob=0.05",
                                  "guard.action=flag", NULL);
    emit_kept_and_ordinary(c);
    wait_alert(&s);
    int64_t flagged = session_events(&s, "keeper", "flagged");
    int64_t lowconf = session_events(&s, "keeper", "lowconf");
    int64_t alerted = session_events(&s, "keeper", "alerted");
    CHECK(flagged > 0 && lowconf > 0 && alerted > 0);
    CHECK_EQ(session_events(&s, "keeper", "ordinary"), 23);

    double t0 = tt_test_now_ms();
    while (session_events(&s, "keeper", "ordinary") != 0) {
        /* Each pruning step waits for a commit group of the writer: on a loaded machine
         * (load average 10 on 2 cores seen) a pass may take tens of seconds. */
        if (tt_test_now_ms() - t0 >= 60000 * tt_test_mult()) {
            char act[4096];
            tt_pg_query(&pg,
                        "SELECT string_agg(state || ' ' || COALESCE(wait_event, '-') || ' '"
                        " || left(query, 60), E'\\n') FROM pg_stat_activity"
                        " WHERE datname IS NOT NULL",
                        act, sizeof act);
            char *st = NULL;
            tt_test_http(s.http, "GET", "/api/v1/status", NULL, &st);
            char *rt = st ? strstr(st, "\"retention\"") : NULL;
            if (rt && strlen(rt) > 700) {
                rt[700] = 0;
            }
            char fr[4096];
            tt_pg_query(&pg,
                        "SELECT string_agg(f.id || ':' || f.n || ':' || (LEAST(f.t_max, f.received)"
                        " / 1000000)::text || ':' || COALESCE(k.cls::text, '-'), ' ') FROM frames f"
                        " LEFT JOIN retain_keep k ON k.frame_id = f.id WHERE f.agent_id ="
                        " (SELECT id FROM agents WHERE name = 'keeper'::bytea)",
                        fr, sizeof fr);
            CHECK_MSG(0,
                      "the ordinary session is still there after 60 s; the server's\n%s\n%s\n"
                      "keeper's batches (id:n:ms:class) %s, now %lld ms",
                      act, rt ? rt : "", fr, (long long)(wall_ns() / 1000000));
        }
        usleep(100000);
    }
    CHECK_EQ(events_count(&s, "agent=old"), 0);
    CHECK_EQ(session_events(&s, "keeper", "flagged"), flagged);
    CHECK_EQ(session_events(&s, "keeper", "lowconf"), lowconf);
    CHECK_EQ(session_events(&s, "keeper", "alerted"), alerted);
    /* The pass that removed them reports when it ends (its steps commit one by one). */
    while (tt_test_retention_i64(s.http, "batches") < 2) {
        CHECK_MSG(tt_test_now_ms() - t0 < 30000 * tt_test_mult(), "no pass reported the removal");
        usleep(100000);
    }
    CHECK(tt_test_retention_i64(s.http, "pruned_through_ns") >= 1700000000000000000ll);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?agent=keeper", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"session\":\"flagged\"") && strstr(body, "\"session\":\"lowconf\"") &&
                  !strstr(body, "\"session\":\"ordinary\""),
              "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=old&since=0", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"count\":0") && strstr(body, "\"pruned\":true"), "%s", body);
    free(body);
    /* A resend of the pruned batch is acknowledged and not stored again; a batch overlapping
     * the pruned range is refused. */
    CHECK_EQ(send_old_batch(fd, inst, 1, 50), TT_FT_ACK);
    CHECK_EQ(send_old_batch(fd, inst, 40, 20), TT_FT_REJECT);
    close(fd);
    CHECK_EQ(pg_i64(&pg, "SELECT count(*) FROM frames f JOIN instances i ON i.id = f.instance_id"
                         " WHERE i.uuid = '\\x6f6c642d696e7374616e63652d303031'::bytea"),
             0);
    /* The history series still count what went (rollups outlive the batches). */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/series?agent=keeper&range=5m", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"responses\":3") || strstr(body, "\"n\":3"), "%.600s", body);
    free(body);
    usleep(1000000); /* the streamer's first batches age out too */
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    check_stored_or_pruned(&pg, &w);
    tt_test_serve_start(&s, "pgr_age", "--store", pg.url, NULL); /* no retention */
    check_consistent(&pg, &s);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count?since=0", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"pruned\":true") != NULL, "%s", body); /* remembered */
    free(body);
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

static const char disk_sql[] =
    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n"
    " ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'";

TEST_T(postgres_retention_max_bytes_holds_the_tables_near_the_limit_while_streaming, 120)
{
    const uint64_t max = 4u << 20;
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "pgr_size", "--store", pg.url, "--max-bytes", "4M", "--config",
                        alert_config(), NULL);
    tt_client *c = tt_test_client(s.endpoint, "keeper", "guard.token_min_prob=0.05",
                                  "guard.action=flag", NULL);
    emit_kept_and_ordinary(c);
    wait_alert(&s);
    int64_t flagged = session_events(&s, "keeper", "flagged");
    int64_t lowconf = session_events(&s, "keeper", "lowconf");
    int64_t alerted = session_events(&s, "keeper", "alerted");
    /* About 19,000 events a second (a quarter of it for as long under a sanitizer). */
    double mult = tt_test_mult();
    struct streamer w = {.s = &s, .agent = "streamer", .per_tick = (int)(100 / mult)};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, stream_main, &w) == 0);
    uint64_t peak = 0;
    double t0 = tt_test_now_ms();
    while (tt_test_now_ms() - t0 < 8000 * mult) {
        uint64_t d = (uint64_t)pg_i64(&pg, disk_sql);
        peak = d > peak ? d : peak;
        usleep(100000);
    }
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    for (int i = 0; i < 10; i++) {
        uint64_t d = (uint64_t)pg_i64(&pg, disk_sql);
        peak = d > peak ? d : peak;
        usleep(100000);
    }
    int64_t pruned_events = tt_test_retention_i64(s.http, "events");
    printf(
        "    streamed %llu events in %.0f s; pruned %lld; tables %.2f MiB at most (%.2f MiB live "
        "at the end) for --max-bytes %.2f MiB\n",
        (unsigned long long)w.events, 8 * mult, (long long)pruned_events, (double)peak / 1048576.0,
        (double)tt_test_retention_i64(s.http, "used_bytes") / 1048576.0, (double)max / 1048576.0);
    CHECK_MSG(pruned_events > 0 && (uint64_t)pruned_events < w.events,
              "pruned %lld of %llu events: the test did not fill the limit",
              (long long)pruned_events, (unsigned long long)w.events);
    CHECK_MSG((double)peak <= (double)max * (1 + PG_SIZE_SLACK),
              "peak %llu bytes in the tables for --max-bytes %llu", (unsigned long long)peak,
              (unsigned long long)max);
    CHECK_MSG((uint64_t)tt_test_retention_i64(s.http, "used_bytes") <= max,
              "%lld bytes live for %llu", (long long)tt_test_retention_i64(s.http, "used_bytes"),
              (unsigned long long)max);
    CHECK_EQ(session_events(&s, "keeper", "flagged"), flagged);
    CHECK_EQ(session_events(&s, "keeper", "lowconf"), lowconf);
    CHECK_EQ(session_events(&s, "keeper", "alerted"), alerted);
    CHECK_EQ(session_events(&s, "keeper", "ordinary"), 0);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?since=0&limit=1", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"pruned\":true") != NULL, "%s", body);
    free(body);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    check_stored_or_pruned(&pg, &w);
    tt_test_serve_start(&s, "pgr_size", "--store", pg.url, NULL);
    check_consistent(&pg, &s);
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

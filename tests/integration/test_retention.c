/*
 * test_retention.c - retention of a real `telltale serve` (--retain, --max-bytes): streaming
 * with a small size limit keeps the files (database + WAL) under it plus the documented slack
 * (docs/operations.md, "Retention"); by age, batches with old timestamps go and a resend of
 * them is acknowledged without being stored again; what is kept on purpose (flagged, halted and
 * low-confidence responses, sessions with alerts) outlives ordinary data; and after pruning the
 * answers agree: every session's count is the number of its stored events, no derived row is
 * left without its batch, and event queries reaching back before the horizon say "pruned".
 * TT_SOAK=1 (make soak) streams for 5 minutes instead of 40 s.
 */
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "batches.h"
#include "common/buf.h"
#include "common/wire.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

/* docs/operations.md: the files stay under --max-bytes plus this share of it. */
#define SIZE_SLACK 0.10

static uint64_t file_bytes(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* The database and its WAL, and (when wal_peak) the WAL's largest size seen. */
static uint64_t disk_bytes(const struct tt_test_serve *s, uint64_t *wal_peak)
{
    char wal[800];
    snprintf(wal, sizeof wal, "%s-wal", s->db);
    uint64_t w = file_bytes(wal);
    if (wal_peak && w > *wal_peak) {
        *wal_peak = w;
    }
    return file_bytes(s->db) + w;
}

static int64_t sql_i64(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    CHECK_MSG(sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
              sqlite3_errmsg(h));
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

static int64_t events_count(const struct tt_test_serve *s, const char *query)
{
    return (int64_t)tt_test_events_count(s->http, query);
}

/*
 * The answers agree after pruning (run on a collector that no longer prunes, so nothing moves
 * between the reads): every session's stored count is what the events API counts for it; no
 * token chunk, guard decision or response outlives what it belongs to; the agents' stored
 * totals are the events in the batches; no keep mark outlives its batch.
 */
static void check_consistent(const struct tt_test_serve *s)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open_v2(s->db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(h,
                             "SELECT a.name, s.name, s.events FROM sessions s"
                             " JOIN agents a ON a.id = s.agent_id",
                             -1, &st, NULL) == SQLITE_OK);
    int sessions = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char q[600];
        snprintf(q, sizeof q, "agent=%s&session=%s", sqlite3_column_text(st, 0),
                 sqlite3_column_text(st, 1));
        int64_t stored = sqlite3_column_int64(st, 2);
        CHECK_MSG(stored > 0, "session %s holds %lld events", q, (long long)stored);
        int64_t counted = events_count(s, q);
        CHECK_MSG(counted == stored, "session %s: %lld in the sessions table, %lld events", q,
                  (long long)stored, (long long)counted);
        sessions++;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    CHECK(sessions > 0);
    CHECK_EQ(sql_i64(s->db, "SELECT count(*) FROM response_tokens t WHERE NOT EXISTS (SELECT 1"
                            " FROM responses r WHERE r.instance_id = t.instance_id"
                            " AND r.response_id = t.response_id)"),
             0);
    CHECK_EQ(sql_i64(s->db, "SELECT count(*) FROM guard_events g WHERE NOT EXISTS (SELECT 1"
                            " FROM responses r WHERE r.instance_id = g.instance_id"
                            " AND r.response_id = g.response_id)"),
             0);
    CHECK_EQ(sql_i64(s->db, "SELECT count(*) FROM responses r WHERE r.session IS NOT NULL"
                            " AND NOT EXISTS (SELECT 1 FROM sessions s WHERE"
                            " s.agent_id = r.agent_id AND s.name = r.session)"),
             0);
    CHECK_EQ(sql_i64(s->db, "SELECT count(*) FROM retain_keep k WHERE NOT EXISTS (SELECT 1"
                            " FROM frames f WHERE f.id = k.frame_id)"),
             0);
    int64_t in_frames = sql_i64(s->db, "SELECT COALESCE(SUM(n), 0) FROM frames");
    CHECK_EQ(sql_i64(s->db, "SELECT (SELECT COALESCE(SUM(stored), 0) FROM instances) -"
                            " (SELECT COALESCE(SUM(pruned_events), 0) FROM retain_instances)"),
             in_frames);
    CHECK_EQ(events_count(s, "since=0"), in_frames);
}

static int64_t session_events(const struct tt_test_serve *s, const char *agent, const char *session)
{
    char q[300];
    snprintf(q, sizeof q, "agent=%s&session=%s", agent, session);
    return events_count(s, q);
}

/* What is kept on purpose, each in batches of its own (a flush after each): a response the
 * guard flagged, a response that passed with a low confidence, a session whose repeated tool
 * calls raise an alert (the loop detector); and an ordinary session and response beside them. */
static void emit_kept_and_ordinary(tt_client *c)
{
    CHECK_OK(tt_test_emit_response(c, "flagged", 0.01)); /* below token_min_prob: flagged */
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_test_emit_response(c, "lowconf", 0.2)); /* passes, below --retain-confidence */
    CHECK_OK(tt_flush(c, 10000));
    for (int i = 0; i < 10; i++) { /* a batch kept only for the session's alert, later */
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
        if (found || i == 199) {
            CHECK_MSG(found, "no alert for the session \"alerted\": %s", body);
            free(body);
            return;
        }
        free(body);
        usleep(50000);
    }
}

/* --- by size --------------------------------------------------------------------------------- */

struct streamer {
    const struct tt_test_serve *s;
    _Atomic int stop;
    uint64_t events;
};

static void *stream_main(void *arg)
{
    struct streamer *w = arg;
    tt_client *c = tt_test_client(w->s->endpoint, "streamer", NULL);
    char text[200], session[32];
    uint64_t x = 88172645463325252ull;
    while (!atomic_load(&w->stop)) {
        for (int i = 0; i < 100; i++) { /* about 20,000 events a second */
            /* Text that compresses only so far: a few random words per line. */
            int n = 0;
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
    CHECK_OK(tt_flush(c, 20000));
    tt_close(c, 10000);
    return NULL;
}

TEST_T(retention_max_bytes_holds_the_store_under_the_limit_while_streaming, 240)
{
    const char *soak = getenv("TT_SOAK");
    double seconds = soak && *soak == '1' ? 300 : 40;
    const uint64_t max = 6u << 20;
    struct tt_test_serve s;
    tt_test_serve_start(&s, "bysize", "--max-bytes", "6M", "--config", alert_config(), NULL);
    tt_client *c = tt_test_client(s.endpoint, "keeper", "guard.token_min_prob=0.05",
                                  "guard.action=flag", NULL);
    emit_kept_and_ordinary(c);
    wait_alert(&s);
    int64_t flagged = session_events(&s, "keeper", "flagged");
    int64_t lowconf = session_events(&s, "keeper", "lowconf");
    int64_t alerted = session_events(&s, "keeper", "alerted");
    CHECK(flagged > 0 && lowconf > 0 && alerted > 0);
    CHECK(session_events(&s, "keeper", "ordinary") == 23);

    struct streamer w = {.s = &s};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, stream_main, &w) == 0);
    uint64_t peak = 0, wal_peak = 0;
    double t0 = tt_test_now_ms();
    while (tt_test_now_ms() - t0 < seconds * 1000) {
        uint64_t d = disk_bytes(&s, &wal_peak);
        peak = d > peak ? d : peak;
        usleep(50000);
    }
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    for (int i = 0; i < 20; i++) {
        uint64_t d = disk_bytes(&s, &wal_peak);
        peak = d > peak ? d : peak;
        usleep(50000);
    }
    printf("    at the end: %lld pages, %lld free, %lld batches of %lld bytes, %lld bytes in use\n",
           (long long)sql_i64(s.db, "PRAGMA page_count"),
           (long long)sql_i64(s.db, "PRAGMA freelist_count"),
           (long long)sql_i64(s.db, "SELECT count(*) FROM frames"),
           (long long)sql_i64(s.db, "SELECT sum(length(data)) FROM frames"),
           (long long)tt_test_retention_i64(s.http, "used_bytes"));
    int64_t pruned = tt_test_retention_i64(s.http, "batches");
    int64_t pruned_events = tt_test_retention_i64(s.http, "events");
    printf("    streamed %llu events in %.0f s; pruned %lld batches (%lld events); "
           "peak on disk %.2f MiB (WAL peak %.2f MiB) for --max-bytes %.2f MiB\n",
           (unsigned long long)w.events, seconds, (long long)pruned, (long long)pruned_events,
           (double)peak / 1048576.0, (double)wal_peak / 1048576.0, (double)max / 1048576.0);
    CHECK_MSG(pruned_events > 0 && (uint64_t)pruned_events < w.events,
              "pruned %lld of %llu events: the test did not fill the limit",
              (long long)pruned_events, (unsigned long long)w.events);
    CHECK_MSG((double)peak <= (double)max * (1 + SIZE_SLACK),
              "peak %llu bytes on disk for --max-bytes %llu", (unsigned long long)peak,
              (unsigned long long)max);
    /* Kept on purpose: every event of them is still there; the ordinary session of the same
     * moment is gone. */
    CHECK_EQ(session_events(&s, "keeper", "flagged"), flagged);
    CHECK_EQ(session_events(&s, "keeper", "lowconf"), lowconf);
    CHECK_EQ(session_events(&s, "keeper", "alerted"), alerted);
    CHECK_EQ(session_events(&s, "keeper", "ordinary"), 0);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?agent=keeper", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"session\":\"flagged\"") && strstr(body, "\"session\":\"lowconf\"") &&
                  !strstr(body, "\"session\":\"ordinary\""),
              "%s", body);
    free(body);
    /* Queries reaching back before what went say so. */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?since=0&limit=1", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"pruned\":true") != NULL, "%s", body);
    free(body);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    /* The same directory without retention: nothing moves while the answers are compared. */
    tt_test_serve_start(&s, "bysize", NULL);
    check_consistent(&s);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count?since=0", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"pruned\":true") != NULL, "%s", body); /* remembered */
    free(body);
    tt_test_serve_stop(&s);
}

/* --- by age ---------------------------------------------------------------------------------- */

/* A hand-made agent on the Unix socket: hello for instance inst, saying its clock reads
 * now_ns (0: an agent that does not say), then batches. */
static int raw_agent_clock(const struct tt_test_serve *s, const uint8_t inst[16], const char *name,
                           uint64_t now_ns)
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
    h.now_unix_ns = now_ns;
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

static int raw_agent(const struct tt_test_serve *s, const uint8_t inst[16], const char *name)
{
    return raw_agent_clock(s, inst, name, 0);
}

/* Read frames until one arrives; its type. */
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

/* Send a batch of n events at the fixed 2023 timestamp of tt_test_batch_payload; the frame
 * type that answers it. */
static int send_batch_at(int fd, const uint8_t inst[16], uint64_t first_seq, int n, uint64_t t)
{
    tt__buf payload, frame;
    tt__buf_init(&payload, 1 << 16);
    tt__buf_init(&frame, 1 << 16);
    tt_test_batch_payload_at(&payload, inst, first_seq, n, t);
    CHECK_OK(tt__frame_append(&frame, TT_FT_BATCH, payload.data, payload.len));
    CHECK(write(fd, frame.data, frame.len) == (ssize_t)frame.len);
    tt__buf_fini(&payload);
    tt__buf_fini(&frame);
    return read_frame_type(fd);
}

static int send_old_batch(int fd, const uint8_t inst[16], uint64_t first_seq, int n)
{
    return send_batch_at(fd, inst, first_seq, n, 1700000000000000000ull);
}

static uint64_t wall_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

TEST_T(retention_by_age_prunes_old_batches_keeps_flagged_and_alerted_longer, 120)
{
    struct tt_test_serve s;
    /* Ordinary data lives 3 s; kept classes 100 times longer (5 minutes: the whole test). */
    tt_test_serve_start(&s, "byage", "--retain", "3s", "--retain-keep-factor", "100", "--config",
                        alert_config(), NULL);
    /* Injected old timestamps: a batch from 2023 is older than any horizon. */
    static const uint8_t inst[16] = "old-instance-001";
    int fd = raw_agent(&s, inst, "old");
    CHECK_EQ(read_frame_type(fd), TT_FT_HELLO_REPLY);
    CHECK_EQ(send_old_batch(fd, inst, 1, 50), TT_FT_ACK);
    /* S14, an agent whose clock jumped 10 years ahead: its batch is stored (skewed, not
     * refused), and its time counts as when it was received, so it ages like fresh data. */
    static const uint8_t ahead[16] = "ahead-instance-1";
    int fa = raw_agent(&s, ahead, "ahead");
    CHECK_EQ(read_frame_type(fa), TT_FT_HELLO_REPLY);
    uint64_t ten_years = 10ull * 365 * 86400 * 1000000000ull;
    CHECK_EQ(send_batch_at(fa, ahead, 1, 30, wall_now_ns() + ten_years), TT_FT_ACK);
    close(fa);
    CHECK_EQ(events_count(&s, "agent=ahead&until=9223372036854775807"), 30);
    tt_client *c = tt_test_client(s.endpoint, "keeper", "guard.token_min_prob=0.05",
                                  "guard.action=flag", NULL);
    emit_kept_and_ordinary(c);
    wait_alert(&s);
    int64_t flagged = session_events(&s, "keeper", "flagged");
    int64_t lowconf = session_events(&s, "keeper", "lowconf");
    int64_t alerted = session_events(&s, "keeper", "alerted");
    CHECK(flagged > 0 && lowconf > 0 && alerted > 0);

    /* The old batch goes at the next pass; the ordinary session after 3 s. */
    double t0 = tt_test_now_ms();
    while (session_events(&s, "keeper", "ordinary") != 0) {
        CHECK_MSG(tt_test_now_ms() - t0 < 20000 * tt_test_mult(),
                  "the ordinary session is still there after 20 s");
        CHECK_OK(tt_log(c, "live", TT_INFO, "still here", NULL, 0));
        usleep(100000);
    }
    CHECK_OK(tt_flush(c, 10000));
    CHECK_EQ(events_count(&s, "agent=old"), 0);
    /* The batch from 10 years ahead went with the fresh data of its moment, not for ever. */
    while (events_count(&s, "agent=ahead&until=9223372036854775807") != 0) {
        CHECK_MSG(tt_test_now_ms() - t0 < 25000 * tt_test_mult(),
                  "the batch stamped 10 years ahead never ages out");
        usleep(100000);
    }
    /* Kept on purpose: all there. Live data of the last 3 s: there. */
    CHECK_EQ(session_events(&s, "keeper", "flagged"), flagged);
    CHECK_EQ(session_events(&s, "keeper", "lowconf"), lowconf);
    CHECK_EQ(session_events(&s, "keeper", "alerted"), alerted);
    CHECK(session_events(&s, "keeper", "live") > 0);
    CHECK(tt_test_retention_i64(s.http, "batches") >= 2);
    CHECK(tt_test_retention_i64(s.http, "pruned_through_ns") >= 1700000000000000000ll);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/status", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"horizon_ns\":{\"ordinary\":") != NULL, "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=old&since=0", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"count\":0") && strstr(body, "\"pruned\":true"), "%s", body);
    free(body);

    /* A resend of the pruned batch is acknowledged and not stored again; a batch overlapping
     * the pruned range is refused; the next range is stored (and goes in turn). */
    CHECK_EQ(send_old_batch(fd, inst, 1, 50), TT_FT_ACK);
    CHECK_EQ(send_old_batch(fd, inst, 40, 20), TT_FT_REJECT);
    close(fd);
    usleep(300000);
    CHECK_EQ(events_count(&s, "agent=old"), 0);
    CHECK_EQ(sql_i64(s.db,
                     "SELECT count(*) FROM frames f JOIN instances i ON"
                     " i.id = f.instance_id WHERE i.uuid = X'6f6c642d696e7374616e63652d303031'"),
             0);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    tt_test_serve_start(&s, "byage", NULL); /* the same directory, no retention */
    check_consistent(&s);
    tt_test_serve_stop(&s);
}

/* --- S14: an agent whose clock is off ------------------------------------------------------ */

static int count_in(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) {
        n++;
    }
    return n;
}

/* The events of agent as the API answers them (the whole time axis). */
static char *agent_events(const struct tt_test_serve *s, const char *agent)
{
    char path[200];
    snprintf(path, sizeof path, "/api/v1/events?agent=%s&since=0&until=9223372036854775807", agent);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s->http, "GET", path, NULL, &body), 200);
    return body;
}

/* S14, the collector's side: an agent whose clock is an hour ahead (or two behind) of the
 * collector's, as its hello says, has its batches stored as sent, with their own times, and
 * every event flagged with the offset (events API, live stream, /metrics, one log line a
 * minute); an agent on time, a real client, and an agent that does not say are not flagged. */
TEST_T(retention_s14_events_of_an_agent_whose_clock_is_off_are_stored_flagged, 60)
{
    struct tt_test_serve s;
    char log[800];
    snprintf(log, sizeof log, "%s/serve-skew.log", tt_test_outdir());
    unlink(log); /* the test-out directory outlives runs: count this run's lines only */
    tt_test_serve_start(&s, "skew", NULL);
    CHECK_STR(s.log, log);
    struct tt_test_sse *live = tt_test_sse_open(s.http, "agent=behind", NULL);
    usleep(200000);
    const uint64_t hour = 3600ull * 1000000000ull;
    struct {
        const char *name;
        uint8_t inst[16];
        int64_t offset_ns; /* the agent's clock minus ours */
        int says;
    } agents[] = {{"ahead", "skew-ahead-00001", (int64_t)hour, 1},
                  {"behind", "skew-behind-0001", -2 * (int64_t)hour, 1},
                  {"ontime", "skew-ontime-0001", 0, 1},
                  {"legacy", "skew-legacy-0001", (int64_t)hour, 0}};
    for (int i = 0; i < 4; i++) {
        uint64_t agent_now = (uint64_t)((int64_t)wall_now_ns() + agents[i].offset_ns);
        int fd =
            raw_agent_clock(&s, agents[i].inst, agents[i].name, agents[i].says ? agent_now : 0);
        CHECK_EQ(read_frame_type(fd), TT_FT_HELLO_REPLY);
        CHECK_EQ(send_batch_at(fd, agents[i].inst, 1, 10, agent_now), TT_FT_ACK);
        close(fd);
    }
    tt_client *c = tt_test_client(s.endpoint, "client", NULL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "a real client's event", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    const struct {
        const char *agent;
        long expect_s; /* 0: no flag */
    } want[] = {{"ahead", 3600}, {"behind", -7200}, {"ontime", 0}, {"legacy", 0}, {"client", 0}};
    for (int i = 0; i < 5; i++) {
        char *body = agent_events(&s, want[i].agent);
        int events = count_in(body, "\"seq\":"), flagged = count_in(body, "\"clock_skew_ms\":");
        printf("%s: %d events, %d flagged\n", want[i].agent, events, flagged);
        CHECK(events > 0);
        if (!want[i].expect_s) {
            CHECK_EQ(flagged, 0);
        } else {
            CHECK_EQ(flagged, events);
            long ms = strtol(strstr(body, "\"clock_skew_ms\":") + 16, NULL, 10);
            CHECK_MSG(labs(ms - want[i].expect_s * 1000) < 5000, "%s: clock_skew_ms %ld",
                      want[i].agent, ms);
        }
        free(body);
    }
    int from = 0;
    char *line = tt_test_sse_wait(live, "\"clock_skew_ms\":-72", &from, 10000 * tt_test_mult());
    CHECK_MSG(line != NULL, "the live stream carries the flag");
    tt_test_sse_close(live);
    char *m = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &m), 200);
    CHECK_MSG(strstr(m, "\ntelltale_ingest_clock_skewed_hellos_total 2\n") &&
                  strstr(m, "\ntelltale_ingest_clock_skewed_frames_total 2\n"),
              "metrics");
    free(m);
    CHECK_OK(tt_close(c, 5000));
    tt_test_serve_stop(&s);
    /* One line for both agents (at most one a minute), naming the first. */
    FILE *f = fopen(s.log, "r");
    CHECK(f != NULL);
    char l[2048];
    int lines = 0;
    while (fgets(l, sizeof l, f)) {
        if (strstr(l, "its clock is")) {
            lines++;
            CHECK_MSG(strstr(l, "\"ahead\"") && strstr(l, "3600.0 s ahead"), "%s", l);
        }
    }
    fclose(f);
    CHECK_EQ(lines, 1);
}

/* A store made before the flag existed (its frames table without the column) is opened and
 * written as before; its old rows read as not flagged. */
TEST_T(retention_s14_store_from_before_the_skew_flag_opens_and_stores, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "preskew", NULL);
    tt_client *c = tt_test_client(s.endpoint, "before", NULL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "stored before the column", NULL, 0));
    CHECK_OK(tt_close(c, 5000));
    tt_test_serve_stop(&s);
    sqlite3 *db;
    CHECK(sqlite3_open(s.db, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "ALTER TABLE frames DROP COLUMN clock_skew_ms", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(db);
    CHECK(sql_i64(s.db, "SELECT count(*) FROM pragma_table_info('frames') WHERE name = "
                        "'clock_skew_ms'") == 0);
    tt_test_serve_start(&s, "preskew", NULL);
    static const uint8_t inst[16] = "preskew-ahead-01";
    uint64_t agent_now = wall_now_ns() + 3600ull * 1000000000ull;
    int fd = raw_agent_clock(&s, inst, "ahead", agent_now);
    CHECK_EQ(read_frame_type(fd), TT_FT_HELLO_REPLY);
    CHECK_EQ(send_batch_at(fd, inst, 1, 5, agent_now), TT_FT_ACK);
    close(fd);
    char *body = agent_events(&s, "before");
    CHECK(count_in(body, "\"seq\":") == 1 && count_in(body, "clock_skew_ms") == 0);
    free(body);
    body = agent_events(&s, "ahead");
    CHECK(count_in(body, "\"clock_skew_ms\":") == 5);
    free(body);
    tt_test_serve_stop(&s);
}

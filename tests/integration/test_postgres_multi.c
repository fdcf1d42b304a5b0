/*
 * test_postgres_multi.c - several collectors on one PostgreSQL database (issue 19, "many
 * collectors, one truth"; docs/operations.md, "Several collectors"), against a real private
 * server (tests/support/pgcluster.c) and real `telltale serve` processes, each with its own
 * data directory and ports: started at the same moment on an empty database (the schema made
 * once); agents on each, every event stored exactly once; one agent's batches resent to
 * another collector, and the same batches sent to two collectors at once (one stores them,
 * the other answers a duplicate: both acknowledge); incidents of streams sent to each
 * collector raised once, by the one collector that leads, and shown by the API of every
 * collector, whose live stream shows every collector's batches; the leader killed, another takes the lead and its incidents over (the same
 * rows), the dead one restarted follows and moves nothing.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "operator.h"
#include "pgcluster.h"
#include "serve.h"
#include "test.h"

enum { COLLECTORS = 3 };

static const char *wire_agent(void)
{
    static char path[600];
    const char *b = getenv("TT_BUILD");
    snprintf(path, sizeof path, "%s/tests/wire_agent", b ? b : "build");
    return path;
}

/* Start the hand-speaking agent (tests/drivers/wire_agent.c) without waiting for it. */
static FILE *wire_start(const char *endpoint, const char *agent, const char *inst,
                        unsigned long long seq, int batches, int events)
{
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' %s %llu %d %d 2>&1", wire_agent(), endpoint, agent,
             inst, seq, batches, events);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    return p;
}

static void wire_end(FILE *p, char *out, size_t cap)
{
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wire_agent: %s", out);
}

static void wire(const char *endpoint, const char *agent, const char *inst, unsigned long long seq,
                 int batches, int events, char *out, size_t cap)
{
    wire_end(wire_start(endpoint, agent, inst, seq, batches, events), out, cap);
}

static int count_of(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++) {
        n++;
    }
    return n;
}

static void hex_id(const char *hex, uint8_t id[16])
{
    for (int i = 0; i < 16; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        id[i] = (uint8_t)v;
    }
}

static int64_t pg_int(const struct tt_pg *pg, const char *sql)
{
    char out[64];
    tt_pg_query(pg, sql, out, sizeof out);
    return strtoll(out, NULL, 10);
}

/* COLLECTORS collectors started at the same moment on the empty database, each creating the
 * schema under the advisory lock: all reach ready, and stop cleanly. Their data directories
 * (with their collector ids) are the ones the test goes on with. */
static void start_at_once(const struct tt_pg *pg, char dirs[][600])
{
    const char *bin = getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale";
    pid_t pid[COLLECTORS];
    char ready[COLLECTORS][2048];
    for (int i = 0; i < COLLECTORS; i++) {
        mkdir(dirs[i], 0700);
        snprintf(ready[i], sizeof ready[i], "%s/ready.json", dirs[i]);
        char sock[2048], log[2048];
        snprintf(sock, sizeof sock, "unix:%s/first.sock", dirs[i]);
        snprintf(log, sizeof log, "%s/serve-first-%d.log", tt_test_outdir(), i);
        pid[i] = fork();
        CHECK(pid[i] >= 0);
        if (pid[i] == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execl(bin, bin, "serve", "--data", dirs[i], "--no-http", "--listen", sock,
                  "--ready-file", ready[i], "--store", pg->url, (char *)NULL);
            _exit(127);
        }
    }
    for (int i = 0; i < COLLECTORS; i++) {
        double t0 = tt_test_now_ms();
        while (access(ready[i], F_OK) != 0) {
            int st;
            CHECK_MSG(waitpid(pid[i], &st, WNOHANG) == 0,
                      "collector %d exited at a concurrent start (see serve-first-%d.log)", i, i);
            CHECK_MSG(tt_test_now_ms() - t0 < 20000, "collector %d not ready", i);
            usleep(10000);
        }
    }
    for (int i = 0; i < COLLECTORS; i++) {
        kill(pid[i], SIGTERM);
        int st;
        CHECK(waitpid(pid[i], &st, 0) == pid[i]);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "collector %d: status %d", i, st);
        unlink(ready[i]);
    }
}

/* The incidents of the looping agents (the other streams may raise others: gaps, ...). */
#define LOOPS " WHERE convert_from(agent, 'UTF8') LIKE 'loop-%'"

/* Wait until "SELECT (SELECT count(*) FROM alerts" cond answers 't'. */
static void wait_incidents(const struct tt_pg *pg, const char *cond)
{
    char sql[600], out[16];
    snprintf(sql, sizeof sql, "SELECT (SELECT count(*) FROM alerts%s", cond);
    double t0 = tt_test_now_ms();
    for (;;) {
        tt_pg_query(pg, sql, out, sizeof out);
        if (out[0] == 't') {
            return;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 15000, "not so: %s", sql);
        usleep(50000);
    }
}

/* The collector's /api/v1/status (a static buffer, valid until the next call). */
static const char *status_of(struct tt_test_serve *s)
{
    static char copy[1 << 16];
    char *body = NULL;
    CHECK_EQ(tt_test_http(s->http, "GET", "/api/v1/status", NULL, &body), 200);
    snprintf(copy, sizeof copy, "%s", body);
    free(body);
    return copy;
}

/* The one collector (other than not) that leads: waits up to 15 s for one, and checks that no
 * other says it leads. */
static int leader_of(struct tt_test_serve *s, int not )
{
    double t0 = tt_test_now_ms();
    for (;;) {
        int lead = -1, n = 0;
        for (int i = 0; i < COLLECTORS; i++) {
            if (i != not &&strstr(status_of(&s[i]), "\"leading\":true")) {
                lead = i;
                n++;
            }
        }
        CHECK_MSG(n <= 1, "%d collectors lead", n);
        if (n == 1) {
            return lead;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 15000, "no collector leads");
        usleep(50000);
    }
}

TEST_T(postgres_collectors_share_one_database_incidents_raised_once, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    static const char *const names[COLLECTORS] = {"multi_a", "multi_b", "multi_c"};
    char dirs[COLLECTORS][600];
    for (int i = 0; i < COLLECTORS; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/%s", tt_test_tmpdir(), names[i]);
    }
    start_at_once(&pg, dirs);
    CHECK_EQ(pg_int(&pg, "SELECT count(*) FROM telltale_meta WHERE key = 'schema'"), 1);

    struct tt_test_serve s[COLLECTORS];
    for (int i = 0; i < COLLECTORS; i++) {
        tt_test_serve_start(&s[i], names[i], "--store", pg.url, NULL);
    }
    /* Three collector ids, kept from the first start. */
    char ids[COLLECTORS][80];
    for (int i = 0; i < COLLECTORS; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/collector-id", dirs[i]);
        FILE *f = fopen(path, "r");
        CHECK_MSG(f != NULL, "no %s", path);
        CHECK(fgets(ids[i], sizeof ids[i], f) != NULL);
        fclose(f);
        ids[i][strcspn(ids[i], "\n")] = 0;
        struct stat sb;
        CHECK_OK(stat(path, &sb));
        CHECK_EQ(sb.st_mode & 0777, 0600);
        for (int k = 0; k < i; k++) {
            CHECK_MSG(strcmp(ids[i], ids[k]) != 0, "collectors %d and %d share id %s", k, i,
                      ids[i]);
        }
    }

    /* Agents of the client library on each collector: every event acknowledged, stored once. */
    enum { EVENTS = 1500 };
    tt_client *c[COLLECTORS];
    for (int i = 0; i < COLLECTORS; i++) {
        char agent[32];
        snprintf(agent, sizeof agent, "lib-%d", i);
        c[i] = tt_test_client(s[i].endpoint, agent, "window_bytes=65536", "batch_bytes=4096", NULL);
        CHECK(c[i] != NULL);
        char msg[96];
        for (int k = 0; k < EVENTS; k++) {
            snprintf(msg, sizeof msg, "event %d of collector %d, padded to sixty-four bytes", k, i);
            CHECK_OK(tt_log(c[i], "s-multi", TT_INFO, msg, NULL, 0));
        }
    }
    for (int i = 0; i < COLLECTORS; i++) {
        tt_stats st;
        double t0 = tt_test_now_ms();
        for (;;) {
            CHECK_OK(tt_stats_get(c[i], &st, sizeof st));
            if (st.buffered == 0) {
                break;
            }
            CHECK_MSG(tt_test_now_ms() - t0 < 30000, "agent %d not settled", i);
            usleep(10000);
        }
        uint8_t inst[16];
        tt_instance_id(c[i], inst);
        struct tt_store_check sc;
        tt_pg_check_store(&pg, inst, &sc);
        tt_test_check_conservation(&st, &sc);
        CHECK_EQ_U64(st.acked, (uint64_t)EVENTS);
        CHECK_EQ_U64(sc.events, (uint64_t)EVENTS);
        CHECK(sc.frames > 1);
    }

    /* One agent's batches resent to another collector: acknowledged there, stored once. */
    static char out[1 << 14], out2[1 << 14];
    const char *resent = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
    wire(s[0].endpoint, "resent", resent, 1, 4, 10, out, sizeof out);
    CHECK_MSG(count_of(out, "ack ") == 4, "%s", out);
    wire(s[1].endpoint, "resent", resent, 1, 4, 10, out, sizeof out);
    CHECK_MSG(count_of(out, "ack ") == 4 && count_of(out, "reject") == 0, "%s", out);
    /* An overlapping range is refused by a third collector, as by the first. */
    wire(s[2].endpoint, "resent", resent, 5, 1, 10, out, sizeof out);
    CHECK_MSG(count_of(out, "reject") == 1, "%s", out);
    uint8_t id[16];
    hex_id(resent, id);
    struct tt_store_check sc;
    tt_pg_check_store(&pg, id, &sc);
    CHECK_EQ_U64(sc.frames, 4);
    CHECK_EQ_U64(sc.events, 40);
    CHECK_EQ_U64(sc.overlaps, 0);

    /* The same batches to two collectors at once, several rounds: both acknowledge every
     * batch, each stored once. */
    for (int round = 0; round < 4; round++) {
        char inst[40];
        snprintf(inst, sizeof inst, "b0b1b2b3b4b5b6b7b8b9babbbcbdbe%02x", round);
        FILE *p0 = wire_start(s[0].endpoint, "twice", inst, 1, 20, 5);
        FILE *p2 = wire_start(s[2].endpoint, "twice", inst, 1, 20, 5);
        wire_end(p0, out, sizeof out);
        wire_end(p2, out2, sizeof out2);
        CHECK_MSG(count_of(out, "ack ") == 20, "%s", out);
        CHECK_MSG(count_of(out2, "ack ") == 20, "%s", out2);
        hex_id(inst, id);
        tt_pg_check_store(&pg, id, &sc);
        CHECK_EQ_U64(sc.frames, 20);
        CHECK_EQ_U64(sc.events, 100);
        CHECK_EQ_U64(sc.overlaps, 0);
    }

    /* Incidents: every collector's detectors follow every commit, one collector leads and
     * raises them (docs/design.md, "Several collectors"). A loop of tool calls sent to each
     * collector: three incidents, each raised once and by the leader, listed by every API. */
    int lead = leader_of(s, -1);
    /* The live stream of one collector shows what the others stored too. */
    struct tt_test_sse *live = tt_test_sse_open(s[1].http, NULL, NULL);
    setenv("TT_WIRE_STEPS", "1", 1);
    for (int i = 0; i < COLLECTORS; i++) {
        char agent[32], inst[40];
        snprintf(agent, sizeof agent, "loop-%d", i);
        snprintf(inst, sizeof inst, "c0c1c2c3c4c5c6c7c8c9cacbcccdce%02x", i);
        wire(s[i].endpoint, agent, inst, 1, 4, 25, out, sizeof out);
        CHECK_MSG(count_of(out, "ack ") == 4, "%s", out);
    }
    for (int i = 0; i < COLLECTORS; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"agent\":\"loop-%d\"", i);
        int from = 0;
        char *ev = tt_test_sse_wait(live, want, &from, 10000 * tt_test_mult());
        CHECK_MSG(ev != NULL, "collector 1's live stream lacks %s (sent to collector %d)", want, i);
        free(ev);
    }
    tt_test_sse_close(live);
    _Static_assert(COLLECTORS == 3, "the condition below counts 3");
    wait_incidents(&pg, LOOPS ") = 3");
    usleep(500000); /* the followers' detectors have seen the same by now: nothing more */
    CHECK_EQ(pg_int(&pg, "SELECT count(*) FROM alerts" LOOPS), COLLECTORS);
    CHECK_EQ(pg_int(&pg, "SELECT count(DISTINCT agent) FROM alerts" LOOPS), COLLECTORS);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM alerts WHERE convert_from(agent, 'UTF8') LIKE 'loop-%%'"
             " AND collector = '%s'",
             ids[lead]);
    CHECK_EQ(pg_int(&pg, sql), COLLECTORS);
    int64_t loop_id[COLLECTORS];
    for (int i = 0; i < COLLECTORS; i++) {
        snprintf(sql, sizeof sql, "SELECT id FROM alerts WHERE agent = 'loop-%d'::bytea", i);
        loop_id[i] = pg_int(&pg, sql);
        CHECK(loop_id[i] > 0);
    }
    for (int i = 0; i < COLLECTORS; i++) {
        char *body = NULL;
        CHECK_EQ(tt_test_http(s[i].http, "GET", "/api/v1/incidents?limit=1000", NULL, &body), 200);
        for (int k = 0; k < COLLECTORS; k++) {
            char want[64];
            snprintf(want, sizeof want, "\"id\":%lld,\"time_unix_ns\"", (long long)loop_id[k]);
            CHECK_MSG(count_of(body, want) == 1, "collector %d: incident %lld not once: %s", i,
                      (long long)loop_id[k], body);
            snprintf(want, sizeof want, "\"agent\":\"loop-%d\"", k);
            CHECK_MSG(strstr(body, want) != NULL, "collector %d does not show %s: %s", i, want,
                      body);
        }
        free(body);
    }
    /* Acknowledged through another collector than the one that raised it. */
    int other = (lead + 1) % COLLECTORS;
    int64_t first = loop_id[0];
    char path[64], *ack = NULL;
    snprintf(path, sizeof path, "/api/v1/alerts/%lld/ack", (long long)first);
    CHECK_EQ(tt_test_http(s[other].http, "POST", path, "{}", &ack), 200);
    free(ack);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM alerts WHERE acked_ns IS NOT NULL AND id = %lld",
             (long long)first);
    CHECK_EQ(pg_int(&pg, sql), 1);

    /* The leader dies: another collector leads and takes the incidents over (the same rows,
     * still firing, its own now); nothing is raised twice. */
    tt_test_serve_kill(&s[lead]);
    int next = leader_of(s, lead);
    snprintf(sql, sizeof sql,
             " WHERE convert_from(agent, 'UTF8') LIKE 'loop-%%' AND status = 'firing'"
             " AND collector = '%s') = 3",
             ids[next]);
    wait_incidents(&pg, sql);
    CHECK_EQ(pg_int(&pg, "SELECT count(*) FROM alerts" LOOPS), COLLECTORS);
    for (int i = 0; i < COLLECTORS; i++) {
        snprintf(sql, sizeof sql, "SELECT id FROM alerts WHERE agent = 'loop-%d'::bytea", i);
        CHECK_EQ(pg_int(&pg, sql), loop_id[i]);
    }
    CHECK(strstr(status_of(&s[next]), "\"taken_over\":3") != NULL);

    /* The dead one started again follows: it resolves nothing, raises nothing. */
    char before[512], after[512];
#define ROWS                                                                                       \
    "SELECT string_agg(id || ':' || status || ':' || collector || ':' || count, ',' ORDER BY id)"  \
    " FROM alerts"
    tt_pg_query(&pg, ROWS, before, sizeof before);
    tt_test_serve_restart(&s[lead]);
    usleep(1500000); /* more than a try to lead */
    CHECK(strstr(status_of(&s[lead]), "\"leading\":false") != NULL);
    tt_pg_query(&pg, ROWS, after, sizeof after);
    CHECK_MSG(strcmp(before, after) == 0, "the incidents moved: %s, then %s", before, after);

    /* A new incident, sent to the restarted collector: raised once, by the leader, with the
     * next shared id. */
    wire(s[lead].endpoint, "loop-again", "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf", 1, 4, 25, out,
         sizeof out);
    unsetenv("TT_WIRE_STEPS");
    wait_incidents(&pg, " WHERE agent = 'loop-again'::bytea) = 1");
    usleep(500000);
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM alerts WHERE agent = 'loop-again'::bytea) = 1"
             " AND (SELECT collector FROM alerts WHERE agent = 'loop-again'::bytea) = '%s'"
             " AND (SELECT id FROM alerts WHERE agent = 'loop-again'::bytea) ="
             " (SELECT max(id) FROM alerts)",
             ids[next]);
    tt_pg_query(&pg, sql, after, sizeof after);
    CHECK_MSG(after[0] == 't', "the new incident is not the leader's, once, with the next id");
    char *body = NULL;
    CHECK_EQ(tt_test_http(s[lead].http, "GET", "/api/v1/incidents", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"agent\":\"loop-again\"") != NULL, "%s", body);
    free(body);

    for (int i = 0; i < COLLECTORS; i++) {
        tt_close(c[i], 2000);
        tt_test_serve_stop(&s[i]);
    }
    tt_pg_stop(&pg, 1);
}

/* A database written before collector ids (ids from MAX(id) + 1, no collector column): the
 * sequence starts above its incidents, and they are resolved by the first collector that
 * starts. */
TEST_T(postgres_incident_ids_continue_above_an_older_database, 60)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    char out[64];
    tt_pg_query(&pg,
                "CREATE TABLE alerts(id bigint PRIMARY KEY, time_ns bigint NOT NULL,"
                " agent bytea NOT NULL, detector bytea NOT NULL, type bytea NOT NULL,"
                " severity bytea NOT NULL, session bytea, message bytea NOT NULL, value float8,"
                " threshold float8, acked_ns bigint, key bytea NOT NULL DEFAULT '',"
                " status text NOT NULL DEFAULT 'resolved', last_ns bigint, resolved_ns bigint,"
                " count bigint NOT NULL DEFAULT 1, flaps bigint NOT NULL DEFAULT 0,"
                " unit bytea NOT NULL DEFAULT '', example_id bigint, example_kind bigint)",
                out, sizeof out);
    tt_pg_query(&pg,
                "INSERT INTO alerts(id, time_ns, agent, detector, type, severity, message, status)"
                " VALUES(41, 1, 'old', 'd', 't', 'warning', 'm', 'firing')",
                out, sizeof out);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "multi_old", "--store", pg.url, NULL);
    wait_incidents(&pg, " WHERE id = 41 AND status = 'resolved') = 1"); /* by the leader */
    static char wout[1 << 14];
    setenv("TT_WIRE_STEPS", "1", 1);
    wire(s.endpoint, "loop-new", "e0e1e2e3e4e5e6e7e8e9eaebecedeeef", 1, 4, 25, wout, sizeof wout);
    unsetenv("TT_WIRE_STEPS");
    wait_incidents(&pg, " WHERE agent = 'loop-new'::bytea) = 1");
    CHECK_EQ(pg_int(&pg, "SELECT min(id) FROM alerts WHERE agent = 'loop-new'::bytea"), 42);
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

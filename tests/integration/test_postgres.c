/*
 * test_postgres.c - the PostgreSQL store (`telltale serve --store postgres://...`,
 * store/postgres*.c) against a real private PostgreSQL server started by each test
 * (tests/support/pgcluster.c: initdb in the test's temporary directory, a postmaster on
 * 127.0.0.1 on a free port): every acknowledged event stored exactly once (the conservation
 * check of tests/support/serve.c, read from PostgreSQL), dedup across a collector restart, an
 * overlapping range refused, the API's agents, sessions, events and incidents answering as
 * with SQLite for the same stream, and the server stopped mid-stream (no acknowledgement while it is
 * down, everything stored once after it returns), and the API's readers held to a bounded pool
 * of connections.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "collector/store/postgres.h"
#include "pgcluster.h"
#include "serve.h"
#include "test.h"

static const char *wire_agent(void)
{
    static char path[600];
    const char *b = getenv("TT_BUILD");
    snprintf(path, sizeof path, "%s/tests/wire_agent", b ? b : "build");
    return path;
}

/* Run the hand-speaking agent (tests/drivers/wire_agent.c); its output into out. */
static void wire(const char *endpoint, const char *agent, const char *inst, unsigned long long seq,
                 int batches, int events, char *out, size_t cap)
{
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' %s %llu %d %d 2>&1", wire_agent(), endpoint, agent,
             inst, seq, batches, events);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wire_agent: %s", out);
}

static int count_lines(const char *out, const char *prefix)
{
    int n = 0;
    for (const char *p = out; (p = strstr(p, prefix)); p++) {
        n++;
    }
    return n;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static uint64_t emit_logs(tt_client *c, int n, const char *session)
{
    uint64_t refused = 0;
    char msg[96];
    for (int i = 0; i < n; i++) {
        snprintf(msg, sizeof msg, "event %d, padded to about sixty-four bytes of message text", i);
        refused += tt_log(c, session, TT_INFO, msg, NULL, 0) != 0;
    }
    return refused;
}

static void wait_settled(tt_client *c, double ms, tt_stats *st)
{
    double t0 = tt_test_now_ms();
    for (;;) {
        CHECK_OK(tt_stats_get(c, st, sizeof *st));
        if (st->buffered == 0) {
            return;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < ms,
                  "not settled after %.0f ms: buffered %llu, acked %llu", ms,
                  (unsigned long long)st->buffered, (unsigned long long)st->acked);
        usleep(10000);
    }
}

TEST_T(postgres_store_keeps_every_acked_event_once_and_lacks_nothing, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "pg_conserve", "--store", pg.url, NULL);
    const char *log = read_file(s.log);
    CHECK_MSG(strstr(log, "(PostgreSQL), sync=full") != NULL, "no store line in %s", s.log);
    CHECK_MSG(strstr(log, "not available with this store") == NULL,
              "the collector says the store lacks something: %s", s.log);
    enum { AGENTS = 3, EVENTS = 3000 };
    tt_client *c[AGENTS];
    char name[AGENTS][32];
    for (int i = 0; i < AGENTS; i++) {
        snprintf(name[i], sizeof name[i], "pg-agent-%d", i);
        c[i] = tt_test_client(s.endpoint, name[i], "window_bytes=65536", "batch_bytes=8192", NULL);
        CHECK(c[i] != NULL);
    }
    for (int i = 0; i < AGENTS; i++) {
        CHECK_EQ(emit_logs(c[i], EVENTS - 2, "s-pg"), 0);
    }
    /* A step begun and ended (2 events): derived into its session with its end. */
    tt_step step;
    CHECK_OK(tt_step_begin(c[0], &step, NULL, TT_STEP_TOOL, "s-pg", "search", "q=1"));
    CHECK_OK(tt_step_end(c[0], &step, TT_STATUS_ERROR, 42, "timed out upstream"));
    for (int i = 1; i < AGENTS; i++) {
        CHECK_EQ(emit_logs(c[i], 2, "s-pg"), 0);
    }
    for (int i = 0; i < AGENTS; i++) {
        tt_stats st;
        wait_settled(c[i], 30000, &st);
        uint8_t inst[16];
        tt_instance_id(c[i], inst);
        struct tt_store_check sc;
        tt_pg_check_store(&pg, inst, &sc);
        tt_test_check_conservation(&st, &sc);
        CHECK_EQ_U64(st.acked, (uint64_t)EVENTS);
        CHECK_EQ_U64(sc.events, (uint64_t)EVENTS);
        CHECK_EQ_U64(sc.gaps, 0);
        CHECK(sc.frames > 1); /* several batches, so several commits */
        /* The API reads the same store. */
        char q[128];
        snprintf(q, sizeof q, "agent=%s", name[i]);
        CHECK_EQ_U64(tt_test_events_count(s.http, q), (uint64_t)EVENTS);
    }
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/sessions/s-pg?agent=pg-agent-0", NULL, &body),
             200);
    CHECK_MSG(strstr(body, "\"name\":\"search\"") && strstr(body, "\"status\":\"error\"") &&
                  strstr(body, "timed out upstream") && strstr(body, "\"events\":3000"),
              "the step or the session is not as sent: %s", body);
    free(body);
    body = NULL;
    /* History series from the rollups (test_postgres_retain.c compares them with SQLite's). */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/series?agent=pg-agent-0", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"agent\":\"pg-agent-0\"") != NULL, "%s", body);
    free(body);
    for (int i = 0; i < AGENTS; i++) {
        tt_close(c[i], 2000);
    }
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

TEST_T(postgres_store_dedups_across_a_restart_and_refuses_an_overlap, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "pg_dedup", "--store", pg.url, NULL);
    const char *inst = "00112233445566778899aabbccddeeff";
    static char out[1 << 14];
    wire(s.endpoint, "dedup", inst, 1, 3, 10, out, sizeof out);
    CHECK_MSG(count_lines(out, "ack ") == 3, "%s", out);
    tt_test_serve_stop(&s);
    tt_test_serve_restart(&s);
    /* The same three batches again after a restart: acknowledged, stored once. */
    wire(s.endpoint, "dedup", inst, 1, 3, 10, out, sizeof out);
    CHECK_MSG(count_lines(out, "ack ") == 3 && count_lines(out, "reject") == 0, "%s", out);
    /* A range across stored ones: refused for ever. */
    wire(s.endpoint, "dedup", inst, 5, 1, 10, out, sizeof out);
    CHECK_MSG(count_lines(out, "reject") == 1 && count_lines(out, "ack ") == 0, "%s", out);
    uint8_t id[16];
    for (int i = 0; i < 16; i++) {
        unsigned v;
        sscanf(inst + 2 * i, "%2x", &v);
        id[i] = (uint8_t)v;
    }
    struct tt_store_check sc;
    tt_pg_check_store(&pg, id, &sc);
    CHECK_EQ_U64(sc.frames, 3);
    CHECK_EQ_U64(sc.events, 30);
    CHECK_EQ_U64(sc.decoded, 30);
    CHECK_EQ_U64(sc.overlaps, 0);
    /* Another identity may not store under this agent name (uid:0 owns it). */
    char owner[64];
    tt_pg_query(&pg,
                "SELECT convert_from(o.identity, 'UTF8') FROM owners o JOIN agents a"
                " ON o.kind = 0 AND o.key = a.id WHERE a.name = 'dedup'::bytea",
                owner, sizeof owner);
    CHECK_MSG(strcmp(owner, "uid:0") == 0 || strncmp(owner, "uid:", 4) == 0, "owner %s", owner);
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

/* The body of GET path with the fields that name the moment of the answer removed. */
static char *get(const struct tt_test_serve *s, const char *path)
{
    char *body = NULL;
    long code = tt_test_http(s->http, "GET", path, NULL, &body);
    CHECK_MSG(code == 200, "%s answered %ld: %s", path, code, body ? body : "");
    return body;
}

/* Remove "key":VALUE (a number, or a flat array of them) from a JSON text, in place. */
static void drop_number(char *j, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *p;
    while ((p = strstr(j, pat)) != NULL) {
        char *e = p + strlen(pat);
        if (*e == '[') { /* a flat array of numbers */
            e = strchr(e, ']');
            CHECK(e != NULL);
            e++;
        }
        while (*e == '-' || (*e >= '0' && *e <= '9')) {
            e++;
        }
        if (*e == ',') {
            e++;
        } else if (p > j && p[-1] == ',') {
            p--;
        }
        memmove(p, e, strlen(e) + 1);
    }
}

TEST_T(postgres_store_answers_agents_sessions_events_alerts_as_sqlite, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve lite, pgs;
    tt_test_serve_start(&lite, "cmp_sqlite", NULL);
    tt_test_serve_start(&pgs, "cmp_pg", "--store", pg.url, NULL);
    /* The same stream into both: fixed times, sessions (TT_WIRE_STEPS: session "old-client"),
     * two agents, several batches each. */
    static char out[1 << 14];
    setenv("TT_WIRE_STEPS", "1", 1);
    const struct tt_test_serve *both[] = {&lite, &pgs};
    for (int i = 0; i < 2; i++) {
        wire(both[i]->endpoint, "cmp-a", "0102030405060708090a0b0c0d0e0f10", 1, 4, 25, out,
             sizeof out);
        CHECK_MSG(count_lines(out, "ack ") == 4, "%s", out);
    }
    unsetenv("TT_WIRE_STEPS");
    for (int i = 0; i < 2; i++) {
        wire(both[i]->endpoint, "cmp-b", "1112131415161718191a1b1c1d1e1f20", 1, 3, 7, out,
             sizeof out);
        CHECK_MSG(count_lines(out, "ack ") == 3, "%s", out);
    }
    static const char *const paths[] = {
        "/api/v1/sessions",
        "/api/v1/sessions?agent=cmp-a",
        "/api/v1/sessions/old-client",
        "/api/v1/sessions/old-client?agent=cmp-a",
        "/api/v1/events?limit=1000",
        "/api/v1/events?limit=30",
        "/api/v1/events?agent=cmp-b&limit=1000",
        "/api/v1/events?session=old-client&limit=10",
        "/api/v1/events?cursor=2.10&limit=1000",
        "/api/v1/events/count",
        "/api/v1/events/count?session=old-client",
        "/api/v1/events/count?agent=cmp-b",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char *a = get(&lite, paths[i]), *b = get(&pgs, paths[i]);
        drop_number(a, "now");
        drop_number(b, "now");
        CHECK_MSG(strcmp(a, b) == 0, "%s differs:\nsqlite:   %s\npostgres: %s", paths[i], a, b);
        CHECK_MSG(strstr(a, "\"cmp-") || (strstr(a, "\"count\":") && !strstr(a, "\"count\":0")),
                  "%s is empty: %s", paths[i], a);
        free(a);
        free(b);
    }
    /* Agents: names, events stored, instances, sessions, loss, the same. Their live figures
     * too, once the PostgreSQL collector's follower has read the last commits: with a shared
     * store the monitor is fed from the store's commit sequence, after the acknowledgement
     * (follow.c), where SQLite's is fed at the commit itself. */
    static const char *const times[] = {"first_seen_unix_ns", "last_seen_unix_ns",
                                        "last_batch_unix_ns"};
    char *a, *b;
    double t0 = tt_test_now_ms();
    for (;;) {
        a = get(&lite, "/api/v1/agents");
        b = get(&pgs, "/api/v1/agents");
        for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
            drop_number(a, times[i]);
            drop_number(b, times[i]);
        }
        if (strcmp(a, b) == 0) {
            break;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 5000,
                  "agents differ after 5 s:\nsqlite:   %s\npostgres: %s", a, b);
        free(a);
        free(b);
        usleep(100000);
    }
    CHECK_MSG(strstr(b, "\"open_alerts\":1") != NULL, "no open incident: %s", b);
    free(a);
    free(b);
    /* Incidents: the one the stream raised (a loop of tool calls), stored and listed the same,
     * then acknowledged the same. */
    char *ack = NULL;
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(tt_test_http(both[i]->http, "POST", "/api/v1/alerts/1/ack", "{}", &ack), 200);
        free(ack);
    }
    static const char *const alert_paths[] = {"/api/v1/alerts", "/api/v1/incidents",
                                              "/api/v1/incidents/1", "/api/v1/alerts?state=acked"};
    static const char *const alert_times[] = {"time_unix_ns", "last_unix_ns", "acked_unix_ns",
                                              "resolved_unix_ns"};
    for (size_t i = 0; i < sizeof alert_paths / sizeof alert_paths[0]; i++) {
        a = get(&lite, alert_paths[i]);
        b = get(&pgs, alert_paths[i]);
        for (size_t k = 0; k < sizeof alert_times / sizeof alert_times[0]; k++) {
            drop_number(a, alert_times[k]);
            drop_number(b, alert_times[k]);
        }
        CHECK_MSG(strstr(a, "\"looping\"") != NULL, "%s: %s", alert_paths[i], a);
        CHECK_MSG(strcmp(a, b) == 0, "%s differs:\nsqlite:   %s\npostgres: %s", alert_paths[i], a,
                  b);
        free(a);
        free(b);
    }
    tt_test_serve_stop(&lite);
    tt_test_serve_stop(&pgs);
    tt_pg_stop(&pg, 1);
}

TEST_T(postgres_store_server_down_no_ack_then_all_once, 150)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "pg_outage", "--store", pg.url, NULL);
    tt_client *c = tt_test_client(s.endpoint, "outage", "window_bytes=1048576", "batch_bytes=8192",
                                  "backoff_max_ms=200", NULL);
    CHECK(c != NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    tt_stats st;
    CHECK_EQ(emit_logs(c, 1000, NULL), 0);
    wait_settled(c, 30000, &st);
    CHECK_EQ_U64(st.acked, 1000);

    tt_pg_stop(&pg, 0); /* immediate: as a crash of the server */
    CHECK_EQ(emit_logs(c, 1500, NULL), 0);
    usleep(1500000);
    tt_stats down;
    CHECK_OK(tt_stats_get(c, &down, sizeof down));
    CHECK_MSG(down.acked == 1000, "acked %llu while the server was down",
              (unsigned long long)down.acked);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/healthz", NULL, &body), 503);
    CHECK_MSG(strstr(body, "\"refusing\"") != NULL, "%s", body); /* transient, not failed */
    free(body);
    usleep(500000);
    CHECK_OK(tt_stats_get(c, &down, sizeof down));
    CHECK_EQ_U64(down.acked, 1000);

    tt_pg_restart(&pg);
    wait_settled(c, 60000, &st);
    struct tt_store_check sc;
    tt_pg_check_store(&pg, inst, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(st.acked, 2500);
    CHECK_EQ_U64(sc.events, 2500);
    CHECK_EQ_U64(sc.gaps, 0);
    CHECK_EQ(tt_test_http(s.http, "GET", "/healthz", NULL, &body), 200);
    free(body);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

/* `telltale serve --store URL` run to its refusal: its output into out, its exit status back. */
static int serve_refused(const char *url, const char *extra, char *out, size_t cap)
{
    const char *bin = getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale";
    char cmd[1600];
    snprintf(
        cmd, sizeof cmd,
        "'%s' serve --data '%s/refused' --no-http --listen 'unix:%s/r.sock' --store '%s' %s 2>&1",
        bin, tt_test_tmpdir(), tt_test_tmpdir(), url, extra);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

TEST_T(postgres_store_never_shows_the_password_of_its_url, 60)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    static char out[1 << 14];
    char url[256];
    /* A wrong password in the URL: refused at start, the password in no message. */
    snprintf(url, sizeof url, "postgres://telltale:wrong-secret-9137@127.0.0.1:%d/postgres",
             pg.port);
    CHECK(serve_refused(url, "", out, sizeof out) != 0);
    CHECK_MSG(strstr(out, "wrong-secret-9137") == NULL, "the password shows: %s", out);
    CHECK_MSG(strstr(out, "password authentication failed") != NULL, "%s", out);
    CHECK_MSG(strstr(out, "process list") != NULL, "no warning about a password in the URL: %s",
              out);
    CHECK_MSG(strstr(out, "127.0.0.1") != NULL, "the message does not say where: %s", out);
    /* An unknown scheme is refused with the URL shown without its password. */
    CHECK(serve_refused("pgsql://telltale:wrong-secret-9137@127.0.0.1/x", "", out, sizeof out) !=
          0);
    CHECK_MSG(strstr(out, "wrong-secret-9137") == NULL, "the password shows: %s", out);
    CHECK_MSG(strstr(out, "pgsql://telltale:***@127.0.0.1/x") != NULL, "%s", out);
    /* No server there: refused at start, saying so. */
    snprintf(url, sizeof url, "postgresql://telltale@127.0.0.1:%d/postgres", tt_test_free_port());
    CHECK(serve_refused(url, "", out, sizeof out) != 0);
    CHECK_MSG(strstr(out, "PostgreSQL postgres://telltale@127.0.0.1:") != NULL, "%s", out);
    tt_pg_stop(&pg, 1);
}

/* The same responses (tokens with their texts, a guard decision) from one agent to a
 * collector: its client's instance into inst. */
static void emit_responses(const char *endpoint, uint8_t inst[16], uint64_t ids[3])
{
    tt_client *c = tt_test_client(endpoint, "resp-agent", NULL);
    CHECK(c != NULL);
    tt_instance_id(c, inst);
    /* Tokens below p = 0.8 are flagged: guard decisions stored with their responses. */
    tt_guard_policy gp = {.token_min_prob = 0.8f, .window = 16, .action = TT_FLAG};
    CHECK_OK(tt_guard_policy_set(c, &gp));
    tt_step step;
    CHECK_OK(tt_step_begin(c, &step, NULL, TT_STEP_LLM, "rs", "generate", NULL));
    for (int k = 0; k < 3; k++) {
        tt_response *r;
        if (k == 2) {
            CHECK_OK(tt_response_begin_in(c, &r, &step, NULL, "model-b", NULL, 0));
        } else {
            CHECK_OK(tt_response_begin(c, &r, "rs", "model-a", NULL, 0));
        }
        ids[k] = tt_response_id(r);
        static const char *const words[] = {"Hello", " world", ",", " again", "."};
        for (int t = 0; t < 5; t++) {
            float lp = -0.05f * (float)(t + 1) * (float)(k + 1);
            CHECK(tt_response_token_logprobs_text(r, 10 + t, words[t], lp, NULL, NULL, NULL, 0,
                                                  NULL, NULL) >= 0);
        }
        CHECK_OK(tt_response_end(r, NULL));
    }
    CHECK_OK(tt_step_end(c, &step, TT_STATUS_OK, 5, NULL));
    tt_stats st;
    wait_settled(c, 30000, &st);
    tt_close(c, 2000);
}

/* Remove "key":"VALUE" (a string without escapes) from a JSON text, in place. */
static void drop_string(char *j, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    char *p;
    while ((p = strstr(j, pat)) != NULL) {
        char *e = strchr(p + strlen(pat), '"');
        CHECK(e != NULL);
        e++;
        if (*e == ',') {
            e++;
        } else if (p > j && p[-1] == ',') {
            p--;
        }
        memmove(p, e, strlen(e) + 1);
    }
}

/* Replace every occurrence of response id `id` (16 hex digits) in j by "resp-N" (the same
 * length). */
static void name_id(char *j, uint64_t id, int n)
{
    char hex[17], label[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)id);
    snprintf(label, sizeof label, "resp-%011d", n);
    char *p;
    while ((p = strstr(j, hex)) != NULL) {
        memcpy(p, label, 16);
    }
}

TEST_T(postgres_store_answers_responses_as_sqlite, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve lite, pgs;
    tt_test_serve_start(&lite, "rsp_sqlite", NULL);
    tt_test_serve_start(&pgs, "rsp_pg", "--store", pg.url, NULL);
    uint8_t inst[2][16];
    uint64_t ids[2][3];
    emit_responses(lite.endpoint, inst[0], ids[0]);
    emit_responses(pgs.endpoint, inst[1], ids[1]);
    /* Two agents' runs: their times, instances and response ids differ, nothing else may. */
    static const char *const paths[] = {
        "/api/v1/responses?agent=resp-agent",
        "/api/v1/responses?session=rs&limit=2",
        NULL, /* /api/v1/responses/{the first response's id} */
        NULL, /* /api/v1/responses/{the third's} */
        "/api/v1/sessions/rs?agent=resp-agent",
    };
    static const char *const varying_numbers[] = {
        "begin_unix_ns", "end_unix_ns",        "start_unix_ns",     "time_unix_ns", "duration_ns",
        "latency_ns",    "first_seen_unix_ns", "last_seen_unix_ns", "now",          "latency_us"};
    static const char *const varying_strings[] = {"id",      "instance",       "trace_id",
                                                  "span_id", "parent_span_id", "response_id"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char pa[128], pb[128];
        if (paths[i]) {
            snprintf(pa, sizeof pa, "%s", paths[i]);
            snprintf(pb, sizeof pb, "%s", paths[i]);
        } else {
            snprintf(pa, sizeof pa, "/api/v1/responses/%016llx",
                     (unsigned long long)ids[0][i == 2 ? 0 : 2]);
            snprintf(pb, sizeof pb, "/api/v1/responses/%016llx",
                     (unsigned long long)ids[1][i == 2 ? 0 : 2]);
        }
        char *a = get(&lite, pa), *b = get(&pgs, pb);
        for (int k = 0; k < 3; k++) {
            name_id(a, ids[0][k], k);
            name_id(b, ids[1][k], k);
        }
        for (size_t k = 0; k < sizeof varying_numbers / sizeof varying_numbers[0]; k++) {
            drop_number(a, varying_numbers[k]);
            drop_number(b, varying_numbers[k]);
        }
        for (size_t k = 0; k < sizeof varying_strings / sizeof varying_strings[0]; k++) {
            drop_string(a, varying_strings[k]);
            drop_string(b, varying_strings[k]);
        }
        CHECK_MSG(strstr(a, "resp-agent") != NULL, "%s: %s", pa, a);
        CHECK_MSG(strcmp(a, b) == 0, "%s differs:\nsqlite:   %s\npostgres: %s", pb, a, b);
        free(a);
        free(b);
    }
    char path[64];
    snprintf(path, sizeof path, "/api/v1/responses/%016llx", (unsigned long long)ids[1][2]);
    char *b = get(&pgs, path);
    CHECK_MSG(strstr(b, "Hello world, again.") != NULL && strstr(b, "\"session\":\"rs\"") &&
                  strstr(b, "\"verdict\":\"flag\""),
              "the text, the step's session or the guard's decisions are missing: %s", b);
    free(b);
    tt_test_serve_stop(&lite);
    tt_test_serve_stop(&pgs);
    tt_pg_stop(&pg, 1);
}

/* Make every frame insert fail with SQLSTATE state ("" removes the fault). */
static void inject(const struct tt_pg *pg, const char *state)
{
    char sql[512], out[64];
    if (!*state) {
        tt_pg_query(pg, "DROP TRIGGER IF EXISTS tt_fault ON frames", out, sizeof out);
        return;
    }
    snprintf(sql, sizeof sql,
             "CREATE OR REPLACE FUNCTION tt_fault() RETURNS trigger AS $$ BEGIN"
             " RAISE EXCEPTION 'injected fault' USING ERRCODE = '%s'; END $$ LANGUAGE plpgsql",
             state);
    tt_pg_query(pg, sql, out, sizeof out);
    tt_pg_query(pg,
                "CREATE TRIGGER tt_fault BEFORE INSERT ON frames FOR EACH ROW EXECUTE FUNCTION"
                " tt_fault()",
                out, sizeof out);
}

/* /healthz until it names want ("refusing", "failed"); fails the test after 15 s. */
static void wait_health(const struct tt_test_serve *s, const char *want, const char *reason)
{
    double t0 = tt_test_now_ms();
    for (;;) {
        char *body = NULL;
        long code = tt_test_http(s->http, "GET", "/healthz", NULL, &body);
        int ok = code == 503 && body && strstr(body, want) && strstr(body, reason);
        CHECK_MSG(ok || tt_test_now_ms() - t0 < 15000, "/healthz: %ld %s", code, body ? body : "");
        free(body);
        if (ok) {
            return;
        }
        usleep(50000);
    }
}

TEST_T(postgres_store_sqlstate_disk_full_is_transient_corruption_fatal, 120)
{
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "pg_sqlstate", "--store", pg.url, NULL);
    tt_client *c = tt_test_client(s.endpoint, "faults", "window_bytes=1048576", "batch_bytes=8192",
                                  "backoff_max_ms=200", NULL);
    CHECK(c != NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    tt_stats st;
    CHECK_EQ(emit_logs(c, 200, NULL), 0);
    wait_settled(c, 30000, &st);

    /* 53100 disk full: refused for now, then everything once the fault goes. */
    inject(&pg, "53100");
    CHECK_EQ(emit_logs(c, 300, NULL), 0);
    wait_health(&s, "\"refusing\"", "disk is full");
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ_U64(st.acked, 200);
    inject(&pg, "");
    wait_settled(c, 30000, &st);
    CHECK_EQ_U64(st.acked, 500);
    struct tt_store_check sc;
    tt_pg_check_store(&pg, inst, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(sc.events, 500);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/healthz", NULL, &body), 200);
    free(body);

    /* XX001 data corrupted: failed until the collector stops, even after the fault goes. */
    inject(&pg, "XX001");
    CHECK_EQ(emit_logs(c, 100, NULL), 0);
    wait_health(&s, "\"failed\"", "injected fault");
    inject(&pg, "");
    usleep(1500000);
    wait_health(&s, "\"failed\"", "injected fault");
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ_U64(st.acked, 500);
    tt_pg_check_store(&pg, inst, &sc);
    CHECK_EQ_U64(sc.events, 500);
    tt_close(c, 500);
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

/* The collector's own connections to the server now (application_name "telltale"). */
static int telltale_conns(const struct tt_pg *pg)
{
    char n[32];
    tt_pg_query(pg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'telltale'", n,
                sizeof n);
    return atoi(n);
}

/* An export (format=ndjson, no limit) asked for on a socket that is then never read: the
 * collector's reader stays open while the stream waits for the client. */
static int stalled_export(const char *http)
{
    char host[320];
    snprintf(host, sizeof host, "%s", http);
    char *colon = strrchr(host, ':');
    CHECK(colon != NULL);
    *colon = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    CHECK(inet_pton(AF_INET, host, &a.sin_addr) == 1);
    CHECK_MSG(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect %s", http);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET /api/v1/events?format=ndjson&limit=0 HTTP/1.1\r\nHost: %s\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     http, tt_test_token(http));
    CHECK(write(fd, req, (size_t)n) == n);
    return fd;
}

/* Exports left unread by more clients than the readers' pool holds: the collector never holds
 * more than its pool (PG_READERS_MAX) and its few writers' connections, where one connection
 * per request would take the server's max_connections from every collector sharing it; an
 * agent connecting meanwhile is served at once; reads answer again once the exports end; idle
 * pooled connections lost with a server restart are replaced at the next read. */
TEST_T(postgres_store_api_readers_share_a_bounded_pool, 150)
{
    enum { EXPORTS = PG_READERS_MAX + 8, WRITERS = 4 /* writer, operator, alerts, retention */ };
    struct tt_pg pg;
    tt_pg_start(&pg);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "pg_pool", "--store", pg.url, NULL);
    tt_client *c = tt_test_client(s.endpoint, "pooled", NULL);
    CHECK(c != NULL);
    char msg[400];
    memset(msg, 'x', sizeof msg - 1);
    msg[sizeof msg - 1] = 0;
    for (int i = 0; i < 30000; i++) {
        CHECK_OK(tt_log(c, "s1", TT_INFO, msg, NULL, 0));
        if (i % 2000 == 1999) {
            usleep(20000); /* the ring drains */
        }
    }
    tt_stats st;
    wait_settled(c, 60000, &st);
    CHECK_EQ_U64(st.acked, 30000);

    tt_close(c, 2000);
    /* A collector started on that database: its readers are busy with stalled exports before
     * any agent says hello. */
    tt_test_serve_stop(&s);
    tt_test_serve_start(&s, "pg_pool2", "--store", pg.url, NULL);
    int fds[EXPORTS];
    for (int i = 0; i < EXPORTS; i++) {
        fds[i] = stalled_export(s.http);
    }
    int most = 0;
    for (int k = 0; k < 30; k++) {
        int n = telltale_conns(&pg);
        most = n > most ? n : most;
        usleep(100000);
    }
    fprintf(stderr, "collector's connections at most %d with %d exports stalled\n", most, EXPORTS);
    CHECK_MSG(most >= PG_READERS_MAX, "only %d connections: the exports did not stall", most);
    CHECK_MSG(most <= PG_READERS_MAX + WRITERS, "%d connections (pool %d)", most, PG_READERS_MAX);
    /* meanwhile an agent's hello and batches go through at once: the ingest loop never waits
     * for a reader connection (its own was opened at start) */
    c = tt_test_client(s.endpoint, "late", NULL);
    CHECK(c != NULL);
    CHECK_EQ(emit_logs(c, 10, "s2"), 0);
    wait_settled(c, 3000, &st);
    CHECK_EQ_U64(st.acked, 10);
    for (int i = 0; i < EXPORTS; i++) {
        close(fds[i]);
    }
    /* the exports end as their sockets fail; then reads have connections again */
    long code = 0;
    for (int k = 0; k < 100 && code != 200; k++) {
        char *body = NULL;
        code = tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body);
        free(body);
        if (code != 200) {
            usleep(200000);
        }
    }
    CHECK_EQ(code, 200);

    /* the server restarted: the idle pooled connections are dead, the next reads open new */
    tt_pg_stop(&pg, 0);
    tt_pg_restart(&pg);
    for (int i = 0; i < 2 * PG_READERS_IDLE; i++) {
        free(get(&s, "/api/v1/agents"));
    }
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
    tt_pg_stop(&pg, 1);
}

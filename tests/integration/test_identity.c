/*
 * test_identity.c - agent identity (docs/security.md), against a real `telltale serve` with
 * the hand-speaking agent tests/drivers/wire_agent.c run as another user (nobody:nogroup,
 * through setpriv): a Unix-socket peer of another uid is refused with its reason and counted;
 * TCP agents need a token unless --ingest-open, which only loopback listeners may have; and the
 * poisoning sequence (another identity says hello under the victim's agent name and instance
 * and sends the victim's next sequence numbers) is refused, counted, across a restart, while
 * the victim's stream is stored complete.
 */
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "operator.h"
#include "serve.h"

static const char *bin(void)
{
    const char *b = getenv("TT_BIN");
    return b ? b : "build/telltale";
}

static const char *wire_agent(void)
{
    static char path[600];
    const char *b = getenv("TT_BUILD");
    snprintf(path, sizeof path, "%s/tests/wire_agent", b ? b : "build");
    return path;
}

/* Run cmd with sh, its stdout and stderr into out (NUL-terminated); returns the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void need_root_and_setpriv(void)
{
    CHECK_MSG(geteuid() == 0, "switching to nobody with setpriv needs root (the test runs as root "
                              "in CI)");
    CHECK_MSG(access("/usr/bin/setpriv", X_OK) == 0, "setpriv (util-linux) is missing");
}

/* The wire agent as nobody:nogroup without supplementary groups: its output in out. */
static void wire_as_nobody(const char *endpoint, const char *agent, const char *inst,
                           unsigned long long first_seq, int batches, int events, char *out,
                           size_t cap)
{
    char cmd[2400];
    snprintf(cmd, sizeof cmd,
             "cd / && setpriv --reuid=nobody --regid=nogroup --clear-groups -- "
             "'%s' '%s' '%s' %s %llu %d %d 2>&1",
             wire_agent(), endpoint, agent, inst, first_seq, batches, events);
    CHECK_MSG(run(cmd, out, cap) == 0, "%s", out);
}

static int count_lines(const char *out, const char *prefix)
{
    int n = 0;
    for (const char *p = out; (p = strstr(p, prefix)); p++) {
        n++;
    }
    return n;
}

/* The counter telltale_rejected_total{reason=REASON} from /metrics. */
static unsigned long long rejected(const struct tt_test_serve *s, const char *reason)
{
    char *body = NULL, key[128];
    CHECK_EQ(tt_test_http(s->http, "GET", "/metrics", NULL, &body), 200);
    snprintf(key, sizeof key, "telltale_rejected_total{reason=\"%s\"} ", reason);
    const char *p = strstr(body, key);
    CHECK_MSG(p != NULL, "no %s in /metrics", key);
    unsigned long long v = strtoull(p + strlen(key), NULL, 10);
    free(body);
    return v;
}

/* A directory nobody can reach for the public socket: the test's temporary directory is made
 * traversable (not readable) and pub/ under it world-readable; the data directory stays 0700. */
static void public_socket(const char *name, char *endpoint, size_t n)
{
    char dir[600];
    CHECK_OK(chmod(tt_test_tmpdir(), 0711));
    snprintf(dir, sizeof dir, "%s/pub", tt_test_tmpdir());
    mkdir(dir, 0755);
    CHECK_OK(chmod(dir, 0755));
    snprintf(endpoint, n, "unix:%s/%s.sock", dir, name);
}

/* The victim's instance (32 hex digits) and the highest sequence number stored for it. */
static void victim_instance(const char *db, const uint8_t inst[16], char hex[33],
                            unsigned long long *max_seq)
{
    for (int i = 0; i < 16; i++) {
        snprintf(hex + 2 * i, 3, "%02x", inst[i]);
    }
    sqlite3 *h;
    CHECK_EQ(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    CHECK_EQ(sqlite3_prepare_v2(h, "SELECT max_seq FROM instances WHERE uuid=?1", -1, &st, NULL),
             SQLITE_OK);
    sqlite3_bind_blob(st, 1, inst, 16, SQLITE_STATIC);
    CHECK_EQ(sqlite3_step(st), SQLITE_ROW);
    *max_seq = (unsigned long long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
}

static void emit_and_settle(tt_client *c, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char msg[64];
        snprintf(msg, sizeof msg, "victim event %d", i);
        CHECK_OK(tt_log(c, "victim-session", TT_INFO, msg, NULL, 0));
    }
    CHECK_OK(tt_flush(c, 20000));
}

/* Every way nobody tries to write into the victim's stream, each refused: at the hello when it
 * names the victim's agent, batch by batch when only the instance is the victim's. */
static void attack(const struct tt_test_serve *s, const char *pub, const char *hex,
                   unsigned long long next, unsigned long long *refused)
{
    char out[8192];
    const char *eps[2] = {pub, s->tcp};
    for (int e = 0; e < 2; e++) {
        /* The poisoning sequence: the victim's name, instance and next sequence numbers. */
        wire_as_nobody(eps[e], "victim-agent", hex, next, 5, 20, out, sizeof out);
        CHECK_MSG(strstr(out, "hello refused: agent name victim-agent belongs to another "
                              "identity") != NULL,
                  "%s", out);
        CHECK_MSG(count_lines(out, "ack ") == 0, "%s", out);
        /* Its own agent name, the victim's instance and next sequence numbers. */
        wire_as_nobody(eps[e], "mallory", hex, next, 3, 20, out, sizeof out);
        CHECK_MSG(strstr(out, "hello ok mallory") != NULL, "%s", out);
        CHECK_MSG(count_lines(out, "reject ") == 3 && count_lines(out, "ack ") == 0, "%s", out);
        CHECK_MSG(strstr(out, "agent name or instance belongs to another identity") != NULL, "%s",
                  out);
        /* The victim's agent name, an instance of its own. */
        wire_as_nobody(eps[e], "victim-agent", "0123456789abcdef0123456789abcdef", 1, 2, 20, out,
                       sizeof out);
        CHECK_MSG(strstr(out, "hello refused") != NULL && count_lines(out, "ack ") == 0, "%s", out);
        *refused += 5;
    }
}

static void check_victim_whole(const struct tt_test_serve *s, tt_client *c, const uint8_t inst[16],
                               uint64_t emitted)
{
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    struct tt_store_check sc;
    tt_test_check_store(s->db, inst, &sc);
    CHECK_MSG(sc.events == emitted && sc.gaps == 0 && sc.overlaps == 0 && sc.decoded == emitted,
              "stored %llu of %llu (gaps %llu, overlaps %llu)", (unsigned long long)sc.events,
              (unsigned long long)emitted, (unsigned long long)sc.gaps,
              (unsigned long long)sc.overlaps);
    CHECK_EQ(st.acked, emitted);
    tt_test_check_conservation(&st, &sc);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s->http, "GET", "/api/v1/events?limit=1000", NULL, &body), 200);
    CHECK_MSG(strstr(body, "poison") == NULL, "the attacker's events were stored: %.300s", body);
    free(body);
}

TEST_T(identity_another_uid_cannot_poison_the_victims_instance_even_after_a_restart, 120)
{
    need_root_and_setpriv();
    char pub[700];
    public_socket("poison", pub, sizeof pub);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "poison", "--listen", pub, "--ingest-uids", "nobody", NULL);
    tt_client *c = tt_test_client(s.endpoint, "victim-agent", NULL);
    uint8_t inst[16];
    CHECK_OK(tt_instance_id(c, inst));
    emit_and_settle(c, 0, 100);
    char hex[33];
    unsigned long long max_seq;
    victim_instance(s.db, inst, hex, &max_seq);
    CHECK_EQ(max_seq, 100);
    unsigned long long refused = 0, before = rejected(&s, "identity");
    attack(&s, pub, hex, max_seq + 1, &refused);
    CHECK_EQ(rejected(&s, "identity") - before, refused);
    emit_and_settle(c, 100, 100); /* the victim goes on: its next numbers are still its own */
    check_victim_whole(&s, c, inst, 200);
    /* Ownership is in the store: a restarted collector still knows it. */
    tt_test_serve_stop(&s);
    tt_test_serve_restart(&s);
    refused = 0;
    attack(&s, pub, hex, 201, &refused);
    CHECK_EQ(rejected(&s, "identity"), refused);
    emit_and_settle(c, 200, 50);
    check_victim_whole(&s, c, inst, 250);
    tt_close(c, 10000);
    tt_test_serve_stop(&s);
}

TEST(identity_unix_peer_of_another_uid_is_refused_with_its_reason_and_counted)
{
    need_root_and_setpriv();
    char pub[700], out[8192];
    public_socket("peer", pub, sizeof pub);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "peer", "--listen", pub, NULL);
    /* The socket itself is closed to others (0660)... */
    struct stat st;
    CHECK_OK(stat(pub + 5, &st));
    CHECK_EQ(st.st_mode & 0777, 0660);
    wire_as_nobody(pub, "mallory", "0123456789abcdef0123456789abcdef", 1, 1, 1, out, sizeof out);
    CHECK_MSG(strstr(out, "connect failed: Permission denied") != NULL, "%s", out);
    /* ...and were it opened by mistake, the peer's uid is refused at the hello. */
    CHECK_OK(chmod(pub + 5, 0666));
    unsigned long long before = rejected(&s, "peer");
    wire_as_nobody(pub, "mallory", "0123456789abcdef0123456789abcdef", 1, 1, 1, out, sizeof out);
    CHECK_MSG(strstr(out, "hello refused: uid 65534") != NULL, "%s", out);
    CHECK_MSG(strstr(out, "may not ingest") != NULL, "%s", out);
    CHECK_EQ(rejected(&s, "peer"), before + 1);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    CHECK_MSG(strstr(body, "mallory") == NULL, "%s", body);
    free(body);
    /* The collector's own user is served on the same socket. */
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "'%s' '%s' owner %s 1 2 10 2>&1", wire_agent(), pub,
             "00112233445566778899aabbccddeeff");
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "hello ok owner") && count_lines(out, "ack ") == 2, "%s", out);
    tt_test_serve_stop(&s);
}

TEST(identity_ingest_gids_admits_members_of_a_listed_group_and_no_one_else)
{
    need_root_and_setpriv();
    char pub[700], out[8192], cmd[2400];
    public_socket("gids", pub, sizeof pub);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "gids", "--listen", pub, "--ingest-gids", "users", NULL);
    struct stat st;
    CHECK_OK(stat(pub + 5, &st));
    CHECK_EQ(st.st_mode & 0777, 0666); /* others may connect: the credentials decide */
    /* nobody in the supplementary group users (its primary group stays nogroup). */
    snprintf(cmd, sizeof cmd,
             "cd / && setpriv --reuid=nobody --regid=nogroup --groups=users -- "
             "'%s' '%s' member %s 1 1 10 2>&1",
             wire_agent(), pub, "00112233445566778899aabbccddeeff");
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "hello ok member") && count_lines(out, "ack ") == 1, "%s", out);
    /* nobody without it. */
    wire_as_nobody(pub, "outsider", "ffeeddccbbaa99887766554433221100", 1, 1, 10, out, sizeof out);
    CHECK_MSG(strstr(out, "hello refused: uid 65534") != NULL, "%s", out);
    tt_test_serve_stop(&s);
}

TEST(identity_tcp_needs_a_token_unless_ingest_open_which_is_loopback_only)
{
    char out[8192], cmd[2400];
    struct tt_test_serve s;
    tt_test_serve_start(&s, "tcp-closed", TT_TEST_NO_INGEST_OPEN, NULL);
    unsigned long long before = rejected(&s, "peer");
    snprintf(cmd, sizeof cmd, "'%s' '%s' someone %s 1 1 10 2>&1", wire_agent(), s.tcp,
             "00112233445566778899aabbccddeeff");
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "hello refused: this collector requires an ingest token on TCP"), "%s",
              out);
    CHECK_EQ(rejected(&s, "peer"), before + 1);
    tt_test_serve_stop(&s);
    char log[800];
    snprintf(log, sizeof log, "%s/serve-tcp-closed.log", tt_test_outdir());
    /* --ingest-open on a listener others can reach is refused at start. */
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s/open-wide' --listen tcp://0.0.0.0:0 --no-http --ingest-open "
             "2>&1",
             bin(), tt_test_tmpdir());
    CHECK_EQ(run(cmd, out, sizeof out), 2);
    CHECK_MSG(strstr(out, "--ingest-open is allowed only when every TCP listener is on a loopback"),
              "%s", out);
    /* On loopback it starts, and warns. */
    tt_test_serve_start(&s, "tcp-open", NULL);
    snprintf(cmd, sizeof cmd, "'%s' '%s' someone %s 1 1 10 2>&1", wire_agent(), s.tcp,
             "00112233445566778899aabbccddeeff");
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "hello ok someone") && count_lines(out, "ack ") == 1, "%s", out);
    /* Over loopback TCP the identity is the peer socket's user, the same as on the Unix socket:
     * the stream goes on there (an address-only identity would be refused). */
    snprintf(cmd, sizeof cmd, "'%s' '%s' someone %s 11 1 10 2>&1", wire_agent(), s.endpoint,
             "00112233445566778899aabbccddeeff");
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "hello ok someone") && count_lines(out, "ack ") == 1, "%s", out);
    tt_test_serve_stop(&s);
    FILE *f = fopen(s.log, "r");
    CHECK(f != NULL);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    CHECK_MSG(strstr(text, "--ingest-open: local processes ingest over TCP without a token"), "%s",
              text);
}

TEST(identity_a_token_holder_cannot_claim_another_agents_instance)
{
    char toks[600], out[8192], cmd[2400];
    snprintf(toks, sizeof toks, "%s/ingest.tokens", tt_test_tmpdir());
    tt_test_write_file(toks, "alice tok-alice-0123\nbob tok-bob-4567\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "tokens", "--ingest-tokens", toks, NULL);
    const char *inst = "a11ce000a11ce000a11ce000a11ce000";
    snprintf(cmd, sizeof cmd, "TT_WIRE_TOKEN=tok-alice-0123 '%s' '%s' alice %s 1 2 10 2>&1",
             wire_agent(), s.tcp, inst);
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "hello ok alice") && count_lines(out, "ack ") == 2, "%s", out);
    /* Bob's token names bob whatever the hello says; alice's instance is not bob's. */
    snprintf(cmd, sizeof cmd, "TT_WIRE_TOKEN=tok-bob-4567 '%s' '%s' alice %s 21 2 10 2>&1",
             wire_agent(), s.tcp, inst);
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "hello ok bob") && count_lines(out, "reject ") == 2, "%s", out);
    /* The same over the Unix socket, where the token also decides. */
    snprintf(cmd, sizeof cmd, "TT_WIRE_TOKEN=tok-bob-4567 '%s' '%s' alice %s 21 1 10 2>&1",
             wire_agent(), s.endpoint, inst);
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(count_lines(out, "reject ") == 1, "%s", out);
    /* Alice goes on where she was. */
    snprintf(cmd, sizeof cmd, "TT_WIRE_TOKEN=tok-alice-0123 '%s' '%s' alice %s 21 1 10 2>&1",
             wire_agent(), s.endpoint, inst);
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(count_lines(out, "ack ") == 1, "%s", out);
    uint8_t raw[16];
    for (int i = 0; i < 16; i++) {
        unsigned v;
        sscanf(inst + 2 * i, "%2x", &v);
        raw[i] = (uint8_t)v;
    }
    struct tt_store_check sc;
    tt_test_check_store(s.db, raw, &sc);
    CHECK_EQ(sc.events, 30);
    CHECK_EQ(sc.gaps, 0);
    tt_test_serve_stop(&s);
}

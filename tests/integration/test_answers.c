/*
 * test_answers.c - the collector answers what it holds, against a real `telltale serve`: an
 * unknown agent matches nothing (API and `telltale query`), every session of one batch is
 * indexed, and sequence numbers at 2^63 and above (up to 2^64-2) are stored and deduplicated
 * like any other, also after a restart.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/pb.h"
#include "common/wire.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

static int connect_tcp(const char *tcp)
{
    const char *colon = strrchr(tcp, ':');
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof a));
    struct timeval tv = {20 * (long)tt_test_mult(), 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Read one frame: its type, and for a Reject its reason into reason. */
static int read_reply(int fd, char *reason, size_t cap)
{
    uint8_t buf[8192];
    size_t n = 0;
    reason[0] = 0;
    for (;;) {
        tt__frame f;
        size_t need;
        int rc = tt__frame_parse(buf, n, sizeof buf, &f, &need);
        if (rc == TT_FRAME_OK) {
            if (f.type == TT_FT_REJECT) {
                tt__reject r;
                CHECK_OK(tt__reject_decode(f.payload, f.payload_len, &r));
                snprintf(reason, cap, "%s", r.reason);
            }
            return f.type;
        }
        CHECK_EQ(rc, TT_FRAME_NEED_MORE);
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        CHECK_MSG(k > 0, "no reply from the collector");
        n += (size_t)k;
    }
}

static void send_buf(int fd, const tt__buf *b)
{
    CHECK_EQ(write(fd, b->data, b->len), (ssize_t)b->len);
}

/* Connect as agent with instance inst and read the hello reply. */
static int hello(const struct tt_test_serve *s, const char *agent, const uint8_t inst[16])
{
    int fd = connect_tcp(s->tcp);
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memcpy(h.instance, inst, 16);
    snprintf(h.agent, sizeof h.agent, "%s", agent);
    snprintf(h.library, sizeof h.library, "test");
    h.pid = 1;
    tt__buf p, frame;
    tt__buf_init(&p, 1 << 16);
    tt__buf_init(&frame, 1 << 16);
    CHECK_OK(tt__hello_encode(&h, &p));
    CHECK_OK(tt__frame_append(&frame, TT_FT_HELLO, p.data, p.len));
    send_buf(fd, &frame);
    char reason[256];
    CHECK_EQ(read_reply(fd, reason, sizeof reason), TT_FT_HELLO_REPLY);
    tt__buf_fini(&p);
    tt__buf_fini(&frame);
    return fd;
}

/* Send one batch of n log events from first_seq, each in session "PREFIX-i" (no session if
 * prefix is NULL); returns the reply's frame type (reason filled for a Reject). */
static int batch(int fd, const uint8_t inst[16], uint64_t first_seq, int n, const char *prefix,
                 char *reason, size_t cap)
{
    size_t cap_buf = 64 + (size_t)n * 64;
    uint8_t *buf = malloc(cap_buf), *p;
    uint8_t log[16], ev[64];
    p = tt__pb_put_uint(log, 1, 9);
    p = tt__pb_put_bytes(p, 2, "x", 1);
    size_t ln = (size_t)(p - log);
    p = tt__pb_put_bytes(buf, 1, inst, 16);
    p = tt__pb_put_uint(p, 2, first_seq);
    p = tt__pb_put_fixed64(p, 3, 1700000000000000000ull);
    for (int i = 0; i < n; i++) {
        uint8_t *e = tt__pb_put_sint(ev, 1, i);
        if (prefix) {
            char name[32];
            int k = snprintf(name, sizeof name, "%s-%d", prefix, i);
            e = tt__pb_put_bytes(e, 2, name, (size_t)k);
        }
        e = tt__pb_put_bytes(e, 3, log, ln);
        p = tt__pb_put_bytes(p, 4, ev, (size_t)(e - ev));
    }
    tt__buf frame;
    tt__buf_init(&frame, 1 << 20);
    CHECK_OK(tt__frame_append(&frame, TT_FT_BATCH, buf, (size_t)(p - buf)));
    send_buf(fd, &frame);
    tt__buf_fini(&frame);
    free(buf);
    return read_reply(fd, reason, cap);
}

static const uint8_t inst_a[16] = {0xa1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t inst_b[16] = {0xb2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* Run a shell command; its stdout into out; returns the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(answers_unknown_agent_matches_no_event)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "unknown", NULL);
    char reason[256];
    int fa = hello(&s, "alpha", inst_a), fb = hello(&s, "beta", inst_b);
    CHECK_EQ(batch(fa, inst_a, 1, 3, NULL, reason, sizeof reason), TT_FT_ACK);
    CHECK_EQ(batch(fb, inst_b, 1, 4, NULL, reason, sizeof reason), TT_FT_ACK);
    close(fa);
    close(fb);
    char *body;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count?agent=alpha", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"count\":3") != NULL, "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"count\":7") != NULL, "%s", body);
    free(body);
    /* The fast count (agent only) and the filtered one (agent and kind) both say 0. */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count?agent=typo", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"count\":0") != NULL, "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count?agent=typo&kind=log", NULL, &body),
             200);
    CHECK_MSG(strstr(body, "\"count\":0") != NULL, "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=typo", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"agent\":\"alpha\"") == NULL &&
                  strstr(body, "\"agent\":\"beta\"") == NULL,
              "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=beta", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"agent\":\"beta\"") != NULL && !strstr(body, "\"agent\":\"alpha\""),
              "%s", body);
    free(body);
    /* Sessions and responses of an unknown agent: none either. */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/sessions?agent=typo", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"agent\":") == NULL, "%s", body);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?agent=typo", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"agent\":") == NULL, "%s", body);
    free(body);
    /* The CLI says so on stderr, prints nothing, exits 1; a known agent still prints. */
    const char *bin = getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale";
    char cmd[2048], out[1 << 16];
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --data '%s' --agent typo 2>&1 >/dev/null", bin,
             s.http, s.dir);
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "no agent named \"typo\"") != NULL, "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --data '%s' --agent typo --count 2>/dev/null",
             bin, s.http, s.dir);
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_STR(out, "");
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --data '%s' --agent alpha --count", bin, s.http,
             s.dir);
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_STR(out, "3\n");
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --data '%s' --agent beta", bin, s.http, s.dir);
    CHECK_EQ(run(cmd, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "\"agent\":\"beta\"") != NULL, "%s", out);
    tt_test_serve_stop(&s);
}

TEST(answers_every_session_of_one_batch_is_indexed)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "sessions", NULL);
    char reason[256];
    int fd = hello(&s, "many", inst_a);
    enum { SESSIONS = 300 };
    CHECK_EQ(batch(fd, inst_a, 1, SESSIONS, "sess", reason, sizeof reason), TT_FT_ACK);
    close(fd);
    int ids[] = {0, 63, 64, 65, 200, SESSIONS - 1};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char path[128], *body;
        snprintf(path, sizeof path, "/api/v1/sessions/sess-%d", ids[i]);
        long st = tt_test_http(s.http, "GET", path, NULL, &body);
        CHECK_MSG(st == 200, "%s: HTTP %ld %s", path, st, body ? body : "");
        CHECK_MSG(strstr(body, "\"events\":1") != NULL, "%s: %s", path, body);
        free(body);
    }
    char *body;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents/many", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"sessions\":300") != NULL, "%s", body);
    free(body);
    tt_test_serve_stop(&s);
}

/* Ranges around 2^63 and up to 2^64-2: stored, duplicates recognised, overlaps refused, a
 * lower range accepted, also after a restart (max_seq and the dedup lookup read back). */
TEST(answers_sequence_numbers_above_2_63_are_stored_and_deduplicated)
{
    const uint64_t h = 1ull << 63;
    struct tt_test_serve s;
    tt_test_serve_start(&s, "seq", NULL);
    char reason[256];
    int fd = hello(&s, "big", inst_a);
    CHECK_EQ(batch(fd, inst_a, h - 4, 2, NULL, reason, sizeof reason), TT_FT_ACK);
    CHECK_EQ(batch(fd, inst_a, h - 2, 4, NULL, reason, sizeof reason), TT_FT_ACK);
    CHECK_EQ(batch(fd, inst_a, UINT64_MAX - 2, 2, NULL, reason, sizeof reason), TT_FT_ACK);
    /* A lower range that overlaps nothing is stored. */
    int rc = batch(fd, inst_a, 5, 2, NULL, reason, sizeof reason);
    CHECK_MSG(rc == TT_FT_ACK, "reply %d: %s", rc, reason);
    /* The same ranges again: duplicates, acknowledged, not stored twice. */
    CHECK_EQ(batch(fd, inst_a, h - 2, 4, NULL, reason, sizeof reason), TT_FT_ACK);
    CHECK_EQ(batch(fd, inst_a, UINT64_MAX - 2, 2, NULL, reason, sizeof reason), TT_FT_ACK);
    /* Overlaps are refused, on both sides of 2^63. */
    rc = batch(fd, inst_a, h, 1, NULL, reason, sizeof reason);
    CHECK_MSG(rc == TT_FT_REJECT && strstr(reason, "overlap"), "reply %d: %s", rc, reason);
    rc = batch(fd, inst_a, UINT64_MAX - 3, 2, NULL, reason, sizeof reason);
    CHECK_MSG(rc == TT_FT_REJECT && strstr(reason, "overlap"), "reply %d: %s", rc, reason);
    close(fd);
    tt_test_serve_stop(&s);
    tt_test_serve_restart(&s);
    fd = hello(&s, "big", inst_a);
    rc = batch(fd, inst_a, h - 2, 4, NULL, reason, sizeof reason);
    CHECK_MSG(rc == TT_FT_ACK, "reply %d: %s", rc, reason);
    rc = batch(fd, inst_a, UINT64_MAX - 2, 2, NULL, reason, sizeof reason);
    CHECK_MSG(rc == TT_FT_ACK, "reply %d: %s", rc, reason);
    rc = batch(fd, inst_a, h + 1, 1, NULL, reason, sizeof reason);
    CHECK_MSG(rc == TT_FT_REJECT && strstr(reason, "overlap"), "reply %d: %s", rc, reason);
    rc = batch(fd, inst_a, h + 2, 3, NULL, reason, sizeof reason);
    CHECK_MSG(rc == TT_FT_ACK, "reply %d: %s", rc, reason);
    close(fd);
    char *body;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count?agent=big", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"count\":13") != NULL, "%s", body);
    free(body);
    tt_test_serve_stop(&s);
}

/*
 * test_lifetime.c - the ingest loop's lifetime rule against a real `telltale serve`: peers that
 * vanish while the loop still answers them (a reset right after the hello, a FIN right after
 * batches the store refuses) never crash the collector, and a legitimate agent keeps being
 * served. Before the rule, both crashed the collector (use-after-free under ASan).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/pb.h"
#include "batches.h"
#include "common/wire.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

#define THREADS 8

struct peer_run {
    const struct tt_test_serve *s;
    const char *token; /* NULL: none */
    int id;
    int rounds;
    _Atomic int *connected;
};

static int connect_tcp(const char *tcp)
{
    const char *colon = strrchr(tcp, ':');
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void hello_frame(tt__buf *frame, const char *agent, const char *token, uint32_t n)
{
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    for (int i = 0; i < 16; i++) {
        h.instance[i] = (uint8_t)(n >> (8 * (i % 4))) ^ (uint8_t)(0x5a + i);
    }
    snprintf(h.agent, sizeof h.agent, "%s", agent);
    if (token) {
        snprintf(h.token, sizeof h.token, "%s", token);
    }
    snprintf(h.library, sizeof h.library, "test");
    h.pid = n;
    tt__buf p;
    tt__buf_init(&p, 1 << 16);
    CHECK_OK(tt__hello_encode(&h, &p));
    tt__buf_reset(frame);
    CHECK_OK(tt__frame_append(frame, TT_FT_HELLO, p.data, p.len));
    tt__buf_fini(&p);
}

/* A Batch frame for instance with events first_seq .. first_seq + n - 1, appended to frame. */
static void batch_frame(tt__buf *frame, const uint8_t inst[16], uint64_t first_seq, int n)
{
    tt__buf payload;
    tt__buf_init(&payload, 1 << 20);
    tt_test_batch_payload(&payload, inst, first_seq, n);
    CHECK_OK(tt__frame_append(frame, TT_FT_BATCH, payload.data, payload.len));
    tt__buf_fini(&payload);
}

static void reset_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Connect, send a valid hello, reset at once; again and again. */
static void *hello_then_reset(void *arg)
{
    struct peer_run *r = arg;
    tt__buf frame;
    tt__buf_init(&frame, 1 << 16);
    for (int i = 0; i < r->rounds; i++) {
        int fd = connect_tcp(r->s->tcp);
        if (fd < 0) {
            continue; /* the backlog is full for a moment: try again */
        }
        atomic_fetch_add(r->connected, 1);
        hello_frame(&frame, "resetter", r->token, (uint32_t)(r->id * 100000 + i));
        ssize_t w = write(fd, frame.data, frame.len);
        (void)w;
        reset_close(fd);
    }
    tt__buf_fini(&frame);
    return NULL;
}

/* Read one frame (or until the collector closes, or 10 s). */
static void read_frame(int fd)
{
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t buf[4096];
    size_t n = 0;
    for (;;) {
        tt__frame f;
        size_t need;
        if (tt__frame_parse(buf, n, sizeof buf, &f, &need) != TT_FRAME_NEED_MORE) {
            return;
        }
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        if (k <= 0) {
            return;
        }
        n += (size_t)k;
    }
}

/* Hello, two batches whose sequence ranges overlap (the second is refused by the store), then a
 * FIN at once, so the refusal and the acks meet a closed peer. */
static void *overlap_then_fin(void *arg)
{
    struct peer_run *r = arg;
    tt__buf frame;
    tt__buf_init(&frame, 1 << 16);
    for (int i = 0; i < r->rounds; i++) {
        int fd = connect_tcp(r->s->tcp);
        if (fd < 0) {
            continue;
        }
        atomic_fetch_add(r->connected, 1);
        uint32_t n = (uint32_t)(r->id * 100000 + i);
        hello_frame(&frame, "overlapper", r->token, n);
        tt__hello h;
        CHECK_OK(tt__hello_decode(frame.data + TT_FRAME_PREFIX + TT_FRAME_BODY_HDR,
                                  frame.len - TT_FRAME_PREFIX - TT_FRAME_BODY_HDR, &h));
        /* Read the hello reply first, so the close below is a FIN and not a reset for
         * unread data. */
        ssize_t w = write(fd, frame.data, frame.len);
        read_frame(fd);
        tt__buf_reset(&frame);
        batch_frame(&frame, h.instance, 1, 2);
        batch_frame(&frame, h.instance, 2, 2);
        w = write(fd, frame.data, frame.len);
        (void)w;
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    tt__buf_fini(&frame);
    return NULL;
}

static int collector_alive(const struct tt_test_serve *s)
{
    int st;
    return waitpid(s->pid, &st, WNOHANG) == 0;
}

/* A legitimate agent is served: its events are acknowledged. */
static void check_served(const struct tt_test_serve *s, const char *agent, const char *token)
{
    char tok[300];
    snprintf(tok, sizeof tok, "token=%s", token ? token : "");
    tt_client *c = tt_test_client(s->endpoint, agent, token ? tok : NULL, NULL);
    for (int i = 0; i < 100; i++) {
        CHECK_OK(tt_log(c, "s", TT_INFO, "legitimate", NULL, 0));
    }
    CHECK_OK(tt_flush(c, (int)(10000 * tt_test_mult())));
    tt_stats st;
    tt_stats_get(c, &st, sizeof st);
    CHECK_EQ(st.acked, 100);
    tt_close(c, 1000);
}

static void run_peers(const struct tt_test_serve *s, void *(*fn)(void *), const char *peer_token,
                      int rounds, const char *agent, const char *token)
{
    pthread_t th[THREADS];
    struct peer_run runs[THREADS];
    _Atomic int connected = 0;
    /* The legitimate agent streams before, during and after the attack. */
    check_served(s, agent, token);
    for (int i = 0; i < THREADS; i++) {
        runs[i] = (struct peer_run){s, peer_token, i, rounds, &connected};
        CHECK_OK(pthread_create(&th[i], NULL, fn, &runs[i]));
    }
    check_served(s, agent, token);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    CHECK_MSG(collector_alive(s), "the collector died (see %s)", s->log);
    CHECK_MSG(atomic_load(&connected) >= THREADS * rounds / 2, "only %d of %d connections",
              atomic_load(&connected), THREADS * rounds);
    check_served(s, agent, token);
    CHECK_MSG(collector_alive(s), "the collector died (see %s)", s->log);
}

TEST_T(lifetime_hello_then_reset_from_8_threads_never_crashes_the_collector, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "reset", NULL);
    run_peers(&s, hello_then_reset, NULL, 100, "legit", NULL);
    tt_test_serve_stop(&s);
}

TEST_T(lifetime_hello_then_reset_with_tokens_never_crashes_the_collector, 120)
{
    char toks[512], op[512];
    snprintf(toks, sizeof toks, "%s/ingest.tokens", tt_test_tmpdir());
    snprintf(op, sizeof op, "%s/operator.token", tt_test_tmpdir());
    tt_test_write_file(toks, "legit tok-legit-1\nresetter tok-reset-2\n");
    tt_test_write_file(op, "op-token-0123456789abcdef\n");
    chmod(op, 0600);
    chmod(toks, 0600);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "reset-tok", "--ingest-tokens", toks, "--operator-token-file", op,
                        NULL);
    run_peers(&s, hello_then_reset, "tok-reset-2", 100, "legit", "tok-legit-1");
    tt_test_serve_stop(&s);
    /* Wrong tokens are refused, and that refusal meets a reset peer too. */
    tt_test_serve_restart(&s);
    run_peers(&s, hello_then_reset, "tok-wrong", 60, "legit", "tok-legit-1");
    tt_test_serve_stop(&s);
}

TEST_T(lifetime_overlapping_batches_then_fin_never_crash_the_collector, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "overlap", NULL);
    run_peers(&s, overlap_then_fin, NULL, 40, "legit", NULL);
    tt_test_serve_stop(&s);
}

/*
 * test_memory.c - the collector's memory bound (issue 13 point 2, reliability scenarios S23
 * and S24) against a real `telltale serve`: decompression bombs that are legal frames,
 * connections that hold incomplete 16 MiB frames (after a hello and before one), and 5 x the
 * ingest the store sustains. Through each, the collector's peak RSS (VmHWM) stays within the
 * bound of docs/operations.md ("Memory bound") computed from its options, its admission pools
 * never exceed their limits (/metrics), and a legitimate agent keeps being served: every event
 * it emitted is stored exactly once (the shared conservation check).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include "batches.h"
#include "common/pb.h"
#include "common/wire.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

/* docs/operations.md, "Memory bound": fixed part, and per connection the read buffer's base,
 * the write buffer's limit and the record. */
#define FIXED_BYTES (64ull << 20)
#define PER_CONN_BYTES ((64ull << 10) + (1ull << 20) + (4ull << 10))

static uint64_t bound_bytes(uint64_t queue_bytes, uint64_t max_conns)
{
    return FIXED_BYTES + queue_bytes + max_conns * PER_CONN_BYTES;
}

/* The collector's peak resident set (VmHWM), in bytes. */
static uint64_t peak_rss(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "no %s", path);
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmHWM: %llu kB", (unsigned long long *)&kb) == 1) {
            break;
        }
    }
    fclose(f);
    CHECK(kb > 0);
    return kb << 10;
}

/* Under a sanitizer the RSS holds shadow memory and quarantine: the figure is not the
 * collector's own, so only the admission pools are checked there. */
static int rss_meaningful(void)
{
    const char *san = getenv("TT_SANITIZE");
    return !san || !*san;
}

static void check_bound(const struct tt_test_serve *s, uint64_t queue_bytes, uint64_t max_conns)
{
    uint64_t hwm = peak_rss(s->pid), bound = bound_bytes(queue_bytes, max_conns);
    uint64_t pp =
        tt_test_metric(s->http, "telltale_ingest_budget_peak_bytes{pool=\"partial_frames\"}");
    uint64_t pl = tt_test_metric(s->http, "telltale_ingest_budget_bytes{pool=\"partial_frames\"}");
    uint64_t bp = tt_test_metric(s->http, "telltale_ingest_budget_peak_bytes{pool=\"batches\"}");
    uint64_t bl = tt_test_metric(s->http, "telltale_ingest_budget_bytes{pool=\"batches\"}");
    printf("peak RSS %.1f MiB, bound %.1f MiB; admitted at most %.1f of %.1f MiB (partial "
           "frames), %.1f of %.1f MiB (batches); %llu waits\n",
           hwm / 1048576.0, bound / 1048576.0, pp / 1048576.0, pl / 1048576.0, bp / 1048576.0,
           bl / 1048576.0,
           (unsigned long long)tt_test_metric(s->http, "telltale_ingest_budget_waits_total"));
    CHECK(pl + bl <= queue_bytes);
    CHECK(pp <= pl);
    CHECK(bp <= bl);
    if (rss_meaningful()) {
        CHECK_MSG(hwm <= bound, "peak RSS %llu > bound %llu", (unsigned long long)hwm,
                  (unsigned long long)bound);
    }
}

static int connect_tcp(const char *tcp)
{
    const char *colon = strrchr(tcp, ':');
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK_MSG(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s", strerror(errno));
    return fd;
}

static void write_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n) {
        ssize_t w = write(fd, q, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        CHECK_MSG(w > 0, "write: %s", strerror(errno));
        q += w;
        n -= (size_t)w;
    }
}

/* Read one frame from fd within wait_ms (x the multiplier); its type, or 0 if the collector
 * closed the connection first. */
static int read_frame(int fd, tt__reject *rj, double wait_ms)
{
    uint8_t buf[8192];
    size_t n = 0;
    double t0 = tt_test_now_ms();
    for (;;) {
        tt__frame f;
        size_t need;
        if (tt__frame_parse(buf, n, sizeof buf, &f, &need) == TT_FRAME_OK) {
            if (f.type == TT_FT_REJECT && rj) {
                CHECK_OK(tt__reject_decode(f.payload, f.payload_len, rj));
            }
            return f.type;
        }
        struct pollfd pf = {fd, POLLIN, 0};
        CHECK_MSG(tt_test_now_ms() - t0 < wait_ms * tt_test_mult(), "no answer from the collector");
        if (poll(&pf, 1, 100) <= 0) {
            continue;
        }
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        if (k <= 0) {
            return 0;
        }
        n += (size_t)k;
    }
}

/* Connect and say hello as agent (instance from n); the hello reply is read. */
static int hello(const struct tt_test_serve *s, const char *agent, uint32_t n, uint8_t inst[16])
{
    int fd = connect_tcp(s->tcp);
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    for (int i = 0; i < 16; i++) {
        h.instance[i] = (uint8_t)(n >> (8 * (i % 4))) ^ (uint8_t)(0xa5 + i);
    }
    memcpy(inst, h.instance, 16);
    snprintf(h.agent, sizeof h.agent, "%s", agent);
    snprintf(h.library, sizeof h.library, "test");
    tt__buf p, f;
    tt__buf_init(&p, 1 << 16);
    tt__buf_init(&f, 1 << 16);
    CHECK_OK(tt__hello_encode(&h, &p));
    CHECK_OK(tt__frame_append(&f, TT_FT_HELLO, p.data, p.len));
    write_all(fd, f.data, f.len);
    CHECK_EQ(read_frame(fd, NULL, 60000), TT_FT_HELLO_REPLY);
    tt__buf_fini(&p);
    tt__buf_fini(&f);
    return fd;
}

/* --- the legitimate agent ----------------------------------------------------------------- */

struct legit {
    tt_client *c;
    uint8_t inst[16];
    _Atomic int stop;
    uint64_t emitted;
    pthread_t th;
};

static void *legit_run(void *arg)
{
    struct legit *l = arg;
    char msg[96];
    while (!atomic_load(&l->stop)) {
        for (int i = 0; i < 50; i++) {
            snprintf(msg, sizeof msg, "legitimate event %llu while the collector is attacked",
                     (unsigned long long)l->emitted++);
            CHECK_OK(tt_log(l->c, NULL, TT_INFO, msg, NULL, 0));
        }
        usleep(20000);
    }
    return NULL;
}

static void legit_start(struct legit *l, const struct tt_test_serve *s, const char *spool_dir)
{
    memset(l, 0, sizeof *l);
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s", spool_dir);
    l->c = tt_test_client(s->endpoint, "legit", spool, "backoff_min_ms=20", "backoff_max_ms=500",
                          NULL);
    tt_instance_id(l->c, l->inst);
    CHECK_OK(pthread_create(&l->th, NULL, legit_run, l));
}

/* Stop emitting; every event must reach the store within 60 s, acked, exactly once. */
static void legit_finish(struct legit *l, const struct tt_test_serve *s)
{
    atomic_store(&l->stop, 1);
    pthread_join(l->th, NULL);
    tt_stats st;
    double t0 = tt_test_now_ms();
    do {
        tt_flush(l->c, 1000);
        CHECK_OK(tt_stats_get(l->c, &st, sizeof st));
    } while (st.buffered && tt_test_now_ms() - t0 < 60000 * tt_test_mult());
    printf("legitimate agent: emitted %llu, acked %llu, reconnects %llu\n",
           (unsigned long long)st.emitted, (unsigned long long)st.acked,
           (unsigned long long)st.reconnects);
    CHECK_EQ_U64(st.emitted, l->emitted);
    CHECK_EQ_U64(st.buffered, 0);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.acked, l->emitted);
    struct tt_store_check sc;
    tt_test_check_store(s->db, l->inst, &sc);
    tt_test_check_conservation(&st, &sc);
    CHECK_EQ_U64(sc.events, l->emitted);
    CHECK_EQ_U64(sc.overlaps, 0);
    CHECK_OK(tt_close(l->c, 5000));
}

/* --- decompression bombs ------------------------------------------------------------------ */

#define BOMBS 48
#define BOMB_RAW (64u << 20)
#define BOMB_NOISE (700u << 10)

struct bomb {
    const struct tt_test_serve *s;
    const uint8_t *frame; /* the body follows a hello: its instance is patched per connection */
    size_t len;
    int answer; /* TT_FT_ACK, TT_FT_REJECT or 0 */
    int id;
};

/* A legal Batch of exactly 64 MiB: an instance, no events, and an unknown field of 700 KiB of
 * noise then zeros, so it compresses to about 700 KiB (ratio under the 100:1 cap). */
static uint8_t *bomb_frame(size_t *len)
{
    uint8_t *raw = calloc(1, BOMB_RAW), *q = raw;
    CHECK(raw != NULL);
    uint8_t inst[16] = {0};
    q = tt__pb_put_bytes(q, 1, inst, 16);
    q = tt__pb_put_uint(q, 2, 1);
    q = tt__pb_put_fixed64(q, 3, 1700000000000000000ull);
    q = tt__pb_put_tag(q, 99, 2);
    size_t used = (size_t)(q - raw) + 4; /* a varint below 2^28 */
    q = tt__pb_put_varint(q, BOMB_RAW - used);
    CHECK_EQ((size_t)(q - raw), used);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < BOMB_NOISE; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        q[i] = (uint8_t)x;
    }
    size_t cap = ZSTD_compressBound(BOMB_RAW) + TT_FRAME_HDR_MAX;
    uint8_t *frame = malloc(cap);
    CHECK(frame != NULL);
    size_t z = ZSTD_compress(frame + TT_FRAME_HDR_MAX, cap - TT_FRAME_HDR_MAX, raw, BOMB_RAW, 3);
    CHECK(!ZSTD_isError(z));
    CHECK_MSG(BOMB_RAW / (z + 1) <= TT_FRAME_RATIO_MAX, "ratio %zu", BOMB_RAW / (z + 1));
    *len = tt__frame_finish(frame, TT_FT_BATCH, TT_FF_ZSTD, BOMB_RAW, z);
    free(raw);
    return frame;
}

static void *bomb_run(void *arg)
{
    struct bomb *b = arg;
    uint8_t inst[16];
    int fd = hello(b->s, "bomber", (uint32_t)(1000 + b->id), inst);
    write_all(fd, b->frame, b->len);
    tt__reject rj;
    /* The bombs are decoded one or two at a time: the last waits for all the others. */
    b->answer = read_frame(fd, &rj, 600000);
    close(fd);
    return NULL;
}

TEST_T(memory_48_legal_decompression_bombs, 900)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "bombs", "--max-connections", "64", NULL);
    size_t len;
    uint8_t *frame = bomb_frame(&len);
    printf("bomb: %zu bytes on the wire, %u MiB declared and decompressed\n", len, BOMB_RAW >> 20);
    char spool[600];
    snprintf(spool, sizeof spool, "%s/spool", tt_test_tmpdir());
    struct legit l;
    legit_start(&l, &s, spool);
    struct bomb b[BOMBS];
    pthread_t th[BOMBS];
    for (int i = 0; i < BOMBS; i++) {
        b[i] = (struct bomb){&s, frame, len, -1, i};
        CHECK_OK(pthread_create(&th[i], NULL, bomb_run, &b[i]));
    }
    int acked = 0, refused = 0;
    for (int i = 0; i < BOMBS; i++) {
        pthread_join(th[i], NULL);
        acked += b[i].answer == TT_FT_ACK;
        refused += b[i].answer == TT_FT_REJECT;
    }
    printf("%d of %d bombs acknowledged, %d refused\n", acked, BOMBS, refused);
    /* Each is decoded, a few at a time, and answered: none is left waiting or cut off. */
    CHECK_EQ(acked + refused, BOMBS);
    legit_finish(&l, &s);
    check_bound(&s, 256u << 20, 64);
    free(frame);
    tt_test_serve_stop(&s);
}

/* --- incomplete large frames -------------------------------------------------------------- */

#define HOLDERS 100

/* HOLDERS connections each send the header of a 16 MiB batch frame and as much of its body as
 * the collector takes in 5 s, all but its last byte, then wait. */
static void hold_partial_frames(const struct tt_test_serve *s, int with_hello, int *fds)
{
    size_t body = 16u << 20;
    uint8_t *frame = tt_test_blank_batch_frame(body);
    size_t sent[HOLDERS] = {0}, total = TT_FRAME_PREFIX + body - 1;
    for (int i = 0; i < HOLDERS; i++) {
        uint8_t inst[16];
        fds[i] = with_hello ? hello(s, "holder", (uint32_t)(5000 + i), inst) : connect_tcp(s->tcp);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    }
    double t0 = tt_test_now_ms();
    while (tt_test_now_ms() - t0 < 5000) {
        int progress = 0;
        for (int i = 0; i < HOLDERS; i++) {
            if (fds[i] < 0 || sent[i] == total) {
                continue;
            }
            ssize_t w = send(fds[i], frame + sent[i], total - sent[i], MSG_NOSIGNAL);
            if (w > 0) {
                sent[i] += (size_t)w;
                progress = 1;
            } else if (w < 0 && errno != EAGAIN) {
                close(fds[i]); /* the collector refused it */
                fds[i] = -1;
            }
        }
        if (!progress) {
            usleep(20000);
        }
    }
    int open = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < HOLDERS; i++) {
        open += fds[i] >= 0;
        bytes += sent[i];
    }
    printf("%d connections hold incomplete frames (%s hello), %.0f MiB sent to the collector\n",
           open, with_hello ? "after a" : "without", bytes / 1048576.0);
    free(frame);
}

static void partial_frames(int with_hello)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, with_hello ? "holders" : "holders-nohello", "--max-connections", "128",
                        NULL);
    char spool[600];
    snprintf(spool, sizeof spool, "%s/spool", tt_test_tmpdir());
    struct legit l;
    legit_start(&l, &s, spool);
    int fds[HOLDERS];
    hold_partial_frames(&s, with_hello, fds);
    /* The agent is served while the incomplete frames are held. */
    usleep(1000000);
    legit_finish(&l, &s);
    check_bound(&s, 256u << 20, 128);
    if (!with_hello) {
        /* A frame before a hello is a hello: 16 MiB is refused at its header. */
        CHECK_EQ_U64(tt_test_metric(s.http, "telltale_rejected_total{reason=\"bad_hello\"}"),
                     HOLDERS);
    }
    for (int i = 0; i < HOLDERS; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    tt_test_serve_stop(&s);
}

TEST_T(memory_100_partial_16_mib_frames_after_hello, 300)
{
    partial_frames(1);
}

TEST_T(memory_100_partial_16_mib_frames_before_hello, 300)
{
    partial_frames(0);
}

/* A partial frame may sit on the budget only while its bytes keep coming (docs/operations.md,
 * "Memory bound"; docs/wire-format.md, limits): one that receives nothing for 10 s is closed as
 * slow_frame and its budget returns; one that trickles a byte every 2 s is a slow but live peer
 * and keeps its place. */
TEST_T(memory_a_partial_frame_that_stops_arriving_is_closed_a_trickling_one_is_not, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "slowframe", NULL);
    const char *used = "telltale_ingest_budget_used_bytes{pool=\"partial_frames\"}";
    const char *slow = "telltale_rejected_total{reason=\"slow_frame\"}";
    size_t body = 1u << 20;
    uint8_t *frame = tt_test_blank_batch_frame(body);
    uint8_t inst[16];
    int silent = hello(&s, "silent", 1, inst), trickle = hello(&s, "trickle", 2, inst);
    /* A frame is charged for what it needs beyond the 64 KiB every connection reads into
     * without admission (CONN_RBUF_BASE). */
    uint64_t per = TT_FRAME_PREFIX + body - (64u << 10);
    size_t start = TT_FRAME_PREFIX + (64u << 10) + 100;
    write_all(silent, frame, start);
    write_all(trickle, frame, start);
    double t_last = tt_test_now_ms();
    while (tt_test_metric(s.http, used) < 2 * per) {
        CHECK_MSG(tt_test_now_ms() - t_last < 10000 * tt_test_mult(),
                  "the two partial frames were not admitted (%llu bytes charged)",
                  (unsigned long long)tt_test_metric(s.http, used));
        usleep(20000);
    }

    /* The silent one is closed after its 10 s, not before; the trickling one stays. */
    size_t off = start;
    double t_byte = tt_test_now_ms();
    while (tt_test_metric(s.http, slow) == 0) {
        CHECK_MSG(tt_test_now_ms() - t_last < 30000 * tt_test_mult(),
                  "a partial frame silent for %.0f ms is still open", tt_test_now_ms() - t_last);
        if (tt_test_now_ms() - t_byte >= 2000) {
            write_all(trickle, frame + off++, 1);
            t_byte = tt_test_now_ms();
        }
        usleep(20000);
    }
    double silent_ms = tt_test_now_ms() - t_last;
    CHECK_MSG(silent_ms >= 9500, "closed as slow after %.0f ms of silence (the rule says 10 s)",
              silent_ms);
    CHECK_EQ(read_frame(silent, NULL, 10000), 0); /* closed without a word */
    /* The trickling one has been open as long and keeps going for 4 s more. */
    double t_more = tt_test_now_ms();
    while (tt_test_now_ms() - t_more < 4000) {
        if (tt_test_now_ms() - t_byte >= 2000) {
            write_all(trickle, frame + off++, 1);
            t_byte = tt_test_now_ms();
        }
        usleep(20000);
    }
    CHECK_EQ_U64(tt_test_metric(s.http, slow), 1);
    CHECK_EQ_U64(tt_test_metric(s.http, used), per); /* the trickling frame's alone */

    /* Its last bytes: the frame is complete (zeros are no batch: refused), the budget returns. */
    write_all(trickle, frame + off, TT_FRAME_PREFIX + body - off);
    double t0 = tt_test_now_ms();
    while (tt_test_metric(s.http, used) != 0) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * tt_test_mult(), "budget not given back");
        usleep(20000);
    }
    CHECK_EQ_U64(tt_test_metric(s.http, slow), 1);
    close(silent);
    close(trickle);
    free(frame);
    tt_test_serve_stop(&s);
}

/*
 * test_stream.c - the first end-to-end stream, against a real `telltale serve` on loopback:
 * a million events from four threads stored exactly once, never blocking on a stopped
 * collector, the wire format readable by stock protoc, hostile input refused with a counted
 * reason, and `telltale emit` / `query` / `tail` from the command line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include "common/wire.h"
#include "serve.h"
#include "test.h"

#define THREADS 4
#define PER_THREAD 250000

struct producer {
    tt_client *c;
    int id;
    int failures;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        tt_attr a[] = {TT_INT("thread", p->id), TT_INT("i", i), TT_DOUBLE("x", i * 0.5)};
        if (tt_log(p->c, NULL, TT_INFO, "event", a, 3) != 0) {
            p->failures++;
        }
    }
    return NULL;
}

TEST_T(stream_four_threads_store_a_million_events_exactly_once, 300)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "million", NULL);
    /* Rings large enough that no event is dropped however slow this machine is: the point
     * here is what is stored, not the drop path. */
    tt_client *c = tt_test_client(s.endpoint, "million", "ring_bytes=64M", NULL);
    pthread_t th[THREADS];
    struct producer p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct producer){c, i, 0};
        CHECK_OK(pthread_create(&th[i], NULL, produce, &p[i]));
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(p[i].failures, 0);
    }
    CHECK_OK(tt_flush(c, 120000));
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    uint8_t inst[16];
    CHECK_OK(tt_instance_id(c, inst));
    CHECK_EQ(tt_close(c, 10000), 0);
    CHECK_EQ_U64(st.emitted, (uint64_t)THREADS * PER_THREAD);
    CHECK_EQ_U64(st.acked, st.emitted);
    CHECK_EQ_U64(st.dropped_total, 0);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_EQ_U64(sc.events, (uint64_t)THREADS * PER_THREAD);
    CHECK_EQ_U64(sc.decoded, (uint64_t)THREADS * PER_THREAD);
    CHECK_EQ_U64(sc.overlaps, 0);
    CHECK_EQ_U64(sc.gaps, 0);
    CHECK_EQ_U64(sc.max_seq, (uint64_t)THREADS * PER_THREAD);
    tt_test_check_conservation(&st, &sc);
    char *body;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events/count", NULL, &body), 200);
    CHECK_STR(body, "{\"count\":1000000}");
    free(body);
    tt_test_serve_stop(&s);
}

struct watched {
    tt_client *c;
    _Atomic long done;
    _Atomic int finished;
    double worst_ms;
    long voluntary_switches; /* of the emitting thread during its loop */
};

/* The time scale of the run (make test sets it higher under sanitizers). */
static double time_mult(void)
{
    const char *m = getenv("TT_TEST_TIMEOUT_MULT");
    double v = m ? strtod(m, NULL) : 1.0;
    return v > 0 ? v : 1.0;
}

static void *emit_watched(void *arg)
{
    struct watched *w = arg;
    struct rusage r0, r1;
    getrusage(RUSAGE_THREAD, &r0);
    for (long i = 0; i < 2000000; i++) {
        double t0 = tt_test_now_ms();
        tt_metric(w->c, "s", TT_GAUGE, "load", (double)i, "1", NULL, 0);
        double dt = tt_test_now_ms() - t0;
        if (dt > w->worst_ms) {
            w->worst_ms = dt;
        }
        atomic_store(&w->done, i + 1);
    }
    getrusage(RUSAGE_THREAD, &r1);
    w->voluntary_switches = r1.ru_nvcsw - r0.ru_nvcsw;
    atomic_store(&w->finished, 1);
    return NULL;
}

TEST_T(stream_emit_never_blocks_when_the_collector_is_stopped, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "stopped", NULL);
    tt_client *c = tt_test_client(s.endpoint, "stopped", "window_bytes=1M", NULL);
    /* Connected first, then the collector freezes: the worst case for a blocking client. */
    CHECK_OK(tt_log(c, NULL, TT_INFO, "hello", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    kill(s.pid, SIGSTOP);
    tt_stats before;
    tt_stats_get(c, &before, sizeof before);
    struct watched w = {.c = c};
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, emit_watched, &w));
    /* The watchdog: the emitting thread must keep making progress. */
    long last = -1;
    while (!atomic_load(&w.finished)) {
        usleep((useconds_t)(200000 * time_mult()));
        long now = atomic_load(&w.done);
        CHECK_MSG(now != last || atomic_load(&w.finished), "emit stalled at %ld", now);
        last = now;
    }
    pthread_join(th, NULL);
    /* Blocking (a lock wait, a sleep, a blocking write) is a voluntary context switch of the
     * emitting thread; being preempted on a busy machine is not. The thread must make none
     * (ThreadSanitizer's runtime has locks of its own, so there the count is only reported). */
    const char *san = getenv("TT_SANITIZE");
    printf("emitting thread: %ld voluntary context switches, worst call %.3f ms\n",
           w.voluntary_switches, w.worst_ms);
    if (!san || !strstr(san, "thread")) {
        CHECK_EQ(w.voluntary_switches, 0);
    }
    CHECK_MSG(w.worst_ms < 100 * time_mult(), "one emit call took %.1f ms", w.worst_ms);
    usleep(100000); /* let the worker settle what it can */
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    uint64_t emitted = st.emitted - before.emitted;
    CHECK_EQ_U64(emitted, 2000000);
    CHECK_EQ_U64(st.acked, before.acked);
    CHECK(st.dropped[TT_DROP_BUFFER_FULL] > 0);
    /* Everything emitted while frozen is either held or dropped because the ring was full. */
    CHECK_EQ_U64(emitted, (st.buffered - before.buffered) + st.dropped[TT_DROP_BUFFER_FULL]);
    CHECK_EQ_U64(st.dropped_total, st.dropped[TT_DROP_BUFFER_FULL]);
    kill(s.pid, SIGCONT);
    CHECK_OK(tt_flush(c, 30000));
    tt_stats_get(c, &st, sizeof st);
    CHECK_EQ_U64(st.acked + st.dropped_total, st.emitted);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

/* Each stored batch, decompressed, in the order stored, written to DIR/batch-N.bin; returns how
 * many. The client may send a few events in more than one batch (a slow build does). */
static int write_payloads(const char *db, const char *dir)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(h, "SELECT codec, raw_len, data FROM frames ORDER BY id", -1, &st,
                             NULL) == SQLITE_OK);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t raw_len = (size_t)sqlite3_column_int64(st, 1);
        CHECK(raw_len > 0 && raw_len < (64u << 20));
        uint8_t *raw = malloc(raw_len);
        CHECK(raw);
        if (sqlite3_column_int(st, 0) == 1) {
            CHECK_EQ(ZSTD_decompress(raw, raw_len, sqlite3_column_blob(st, 2),
                                     (size_t)sqlite3_column_bytes(st, 2)),
                     raw_len);
        } else {
            memcpy(raw, sqlite3_column_blob(st, 2), raw_len);
        }
        char path[700];
        snprintf(path, sizeof path, "%s/batch-%d.bin", dir, n++);
        FILE *f = fopen(path, "wb");
        CHECK(f && fwrite(raw, 1, raw_len, f) == raw_len);
        fclose(f);
        free(raw);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

TEST_T(stream_batches_decode_with_stock_protoc, 60)
{
    CHECK_MSG(system("protoc --version > /dev/null 2>&1") == 0, "protoc is missing");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "protoc", NULL);
    tt_client *c = tt_test_client(s.endpoint, "protoc-agent", NULL);
    tt_attr a[] = {TT_STR("tool", "sql"), TT_INT("rows", 12), TT_DOUBLE("ratio", 0.25),
                   TT_BOOL("cached", 1)};
    CHECK_OK(tt_log(c, "conv-1", TT_WARN, "careful <now>", a, 4));
    CHECK_OK(tt_metric(c, "conv-1", TT_HISTOGRAM, "latency", 12.5, "ms", NULL, 0));
    tt_step step;
    CHECK_OK(tt_step_begin(c, &step, NULL, TT_STEP_TOOL, "conv-1", "search", "SELECT 1"));
    CHECK_OK(tt_step_end(c, &step, TT_STATUS_ERROR, 77, "boom"));
    CHECK_OK(tt_flush(c, 10000));
    tt_close(c, 1000);
    /* Every batch decoded by protoc, one after the other, into one text. */
    int batches = write_payloads(s.db, tt_test_tmpdir());
    CHECK(batches >= 1 && batches <= 4);
    char out[600], cmd[2000];
    snprintf(out, sizeof out, "%s/batches.txt", tt_test_outdir());
    for (int b = 0; b < batches; b++) {
        snprintf(cmd, sizeof cmd,
                 "protoc --proto_path=%s/proto --decode=telltale.v1.Batch telltale.proto "
                 "< %s/batch-%d.bin >> %s 2>&1",
                 getenv("TT_SRCDIR") ? getenv("TT_SRCDIR") : ".", tt_test_tmpdir(), b, out);
        CHECK_MSG(system(cmd) == 0, "protoc failed on batch %d, see %s", b, out);
    }
    FILE *f = fopen(out, "r");
    CHECK(f);
    static char text[32768];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    const char *want[] = {"first_seq: 1",      "session: \"conv-1\"",
                          "severity: 13",      "message: \"careful <now>\"",
                          "key: \"rows\"",     "i: 12",
                          "d: 0.25",           "b: true",
                          "name: \"latency\"", "value: 12.5",
                          "unit: \"ms\"",      "step_begin {",
                          "kind: 2",           "query: \"SELECT 1\"",
                          "step_end {",        "status: 1",
                          "result_bytes: 77",  "error: \"boom\"",
                          "emitted: 4"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_MSG(strstr(text, want[i]) != NULL, "protoc output lacks \"%s\":\n%s", want[i], text);
    }
    tt_test_serve_stop(&s);
}

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
    CHECK(connect(fd, (struct sockaddr *)&un, sizeof un) == 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Send bytes, then expect the collector to close (read returns 0 or a reset). */
static void expect_closed(const char *sock, const void *p, size_t n, int half_close)
{
    int fd = connect_unix(sock);
    CHECK(write(fd, p, n) == (ssize_t)n);
    if (half_close) {
        shutdown(fd, SHUT_WR);
    }
    char buf[256];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
    }
    CHECK_MSG(r == 0 || errno == ECONNRESET, "connection not closed (errno %d)", errno);
    close(fd);
}

static long status_counter(const char *http, const char *name)
{
    char *body;
    CHECK_EQ(tt_test_http(http, "GET", "/api/v1/status", NULL, &body), 200);
    char key[100];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(body, key);
    CHECK_MSG(p, "no %s in %s", name, body);
    long v = strtol(p + strlen(key), NULL, 10);
    free(body);
    return v;
}

TEST_T(stream_collector_refuses_hostile_frames_and_keeps_serving, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "hostile", NULL);
    /* A well-behaved agent streams throughout. */
    tt_client *good = tt_test_client(s.endpoint, "good", NULL);
    CHECK_OK(tt_log(good, NULL, TT_INFO, "before", NULL, 0));
    CHECK_OK(tt_flush(good, 10000));
    uint8_t huge[12] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 1, 0, 0, 0};
    expect_closed(s.sock, huge, sizeof huge, 0);
    CHECK_EQ(status_counter(s.http, "frame_too_large"), 1);
    tt__buf b;
    tt__buf_init(&b, 1 << 16);
    tt__frame_append(&b, TT_FT_HELLO, "\x08\x01", 2);
    b.data[b.len - 1] ^= 0x40;
    expect_closed(s.sock, b.data, b.len, 0);
    CHECK_EQ(status_counter(s.http, "bad_crc"), 1);
    tt__buf_reset(&b);
    tt__frame_append(&b, TT_FT_HELLO,
                     "\x08\x01\x12\x10"
                     "0123456789abcdef",
                     20);
    expect_closed(s.sock, b.data, b.len - 5, 1);
    CHECK_EQ(status_counter(s.http, "truncated"), 1);
    uint8_t junk[4096];
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < sizeof junk; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        junk[i] = (uint8_t)x;
    }
    expect_closed(s.sock, junk, sizeof junk, 0);
    long refused = 0;
    const char *reasons[] = {"frame_too_large", "bad_crc", "bad_header", "no_hello", "truncated"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        refused += status_counter(s.http, reasons[i]);
    }
    CHECK_EQ(refused, 4);
    tt__buf_fini(&b);
    /* The good agent never noticed. */
    CHECK_OK(tt_log(good, NULL, TT_INFO, "after", NULL, 0));
    CHECK_OK(tt_flush(good, 10000));
    tt_stats st;
    tt_stats_get(good, &st, sizeof st);
    CHECK_EQ(st.acked, 2);
    CHECK_EQ(st.reconnects, 0);
    tt_close(good, 1000);
    tt_test_serve_stop(&s);
}

/* Run a shell command, capturing stdout and stderr into files of the test's output dir. */
static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f, "cannot read %s", path);
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

TEST_T(cli_emit_reports_bad_lines_and_delivers_good_ones, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "emit", NULL);
    const char *tmp = tt_test_tmpdir(), *out = tt_test_outdir(), *bin = getenv("TT_BIN");
    char cmd[4096], in[600], err[600], q[600];
    snprintf(in, sizeof in, "%s/in.jsonl", tmp);
    snprintf(err, sizeof err, "%s/emit.err", out);
    snprintf(q, sizeof q, "%s/query.out", out);
    FILE *f = fopen(in, "w");
    fprintf(f,
            "{\"kind\":\"log\",\"severity\":\"info\",\"message\":\"first\",\"session\":\"x\"}\n");
    fprintf(f, "{\"kind\":\"log\",\"message\":\"broken\"\n");
    fprintf(f, "{\"kind\":\"metric\",\"name\":\"lat\",\"value\":1.5,\"attrs\":{\"k\":\"v\"}}\n");
    fprintf(f, "{\"kind\":\"log\",\"message\":\"");
    for (int i = 0; i < 70000; i++) {
        fputc('y', f);
    }
    fprintf(f, "\"}\n");
    fprintf(f, "{\"kind\":\"teleport\",\"message\":\"x\"}\n");
    fprintf(f, "{\"kind\":\"log\",\"message\":\"last\"}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s emit --endpoint %s --agent cli < %s 2> %s", bin, s.endpoint, in,
             err);
    CHECK_EQ(sh(cmd), 1);
    char *e = slurp(err);
    CHECK_MSG(strstr(e, "line 2:") && strstr(e, "line 4:") && strstr(e, "line 5:"), "%s", e);
    CHECK_MSG(strstr(e, "max_event_bytes") && strstr(e, "teleport"), "%s", e);
    CHECK(!strstr(e, "line 1:") && !strstr(e, "line 3:") && !strstr(e, "line 6:"));
    free(e);
    snprintf(cmd, sizeof cmd, "%s query --http %s --data %s --agent cli > %s", bin, s.http, s.dir,
             q);
    CHECK_EQ(sh(cmd), 0);
    char *text = slurp(q);
    CHECK(strstr(text, "\"message\":\"first\"") && strstr(text, "\"session\":\"x\""));
    CHECK(strstr(text, "\"name\":\"lat\"") && strstr(text, "\"attrs\":{\"k\":\"v\"}"));
    CHECK(strstr(text, "\"message\":\"last\""));
    int lines = 0;
    for (char *p = text; *p; p++) {
        lines += *p == '\n';
    }
    CHECK_EQ(lines, 3);
    free(text);
    snprintf(cmd, sizeof cmd, "%s query --http %s --data %s --count --kind log > %s", bin, s.http,
             s.dir, q);
    CHECK_EQ(sh(cmd), 0);
    text = slurp(q);
    CHECK_STR(text, "2\n");
    free(text);
    /* Usage errors and an unreachable collector have their own exit statuses. */
    snprintf(cmd, sizeof cmd, "%s query --bogus 2>/dev/null", bin);
    CHECK_EQ(sh(cmd), 2);
    snprintf(cmd, sizeof cmd, "%s query --http 127.0.0.1:1 --count 2>/dev/null", bin);
    CHECK_EQ(sh(cmd), 3);
    snprintf(cmd, sizeof cmd, "%s query --http %s --data %s --kind nonsense 2>/dev/null", bin,
             s.http, s.dir);
    CHECK_EQ(sh(cmd), 1);
    tt_test_serve_stop(&s);
}

TEST_T(cli_tail_follows_new_events_with_filters, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "tail", NULL);
    char cmd[2048], out[600];
    snprintf(out, sizeof out, "%s/tail.out", tt_test_outdir());
    snprintf(cmd, sizeof cmd,
             "%s tail --http %s --data %s --agent watched --kind log --count 2 > %s",
             getenv("TT_BIN"), s.http, s.dir, out);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* Let tail subscribe (it has to start, find the token and connect: slow under a sanitizer
     * on a loaded machine), as the collector counts it. */
    int subscribed = 0;
    for (double t = tt_test_now_ms(); !subscribed && tt_test_now_ms() - t < 20000;) {
        char *m = NULL;
        CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &m), 200);
        subscribed = strstr(m, "\ntelltale_stream_subscribers 1\n") != NULL;
        free(m);
        usleep(subscribed ? 0 : 20000);
    }
    CHECK_MSG(subscribed, "tail did not subscribe within 20 s");
    tt_client *other = tt_test_client(s.endpoint, "other", NULL);
    tt_client *c = tt_test_client(s.endpoint, "watched", NULL);
    CHECK_OK(tt_log(other, NULL, TT_INFO, "not this one", NULL, 0));
    CHECK_OK(tt_metric(c, NULL, TT_GAUGE, "not a log", 1, NULL, NULL, 0));
    CHECK_OK(tt_log(c, "s9", TT_ERROR, "first \x1b[31mred\x1b[0m", NULL, 0));
    CHECK_OK(tt_log(c, "s9", TT_INFO, "second", NULL, 0));
    tt_flush(c, 5000);
    tt_flush(other, 5000);
    int st;
    double t0 = tt_test_now_ms();
    while (waitpid(pid, &st, WNOHANG) != pid) {
        CHECK_MSG(tt_test_now_ms() - t0 < 20000, "tail did not end after two events");
        usleep(20000);
    }
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *text = slurp(out);
    CHECK_MSG(strstr(text, "watched log s9 error first ?[31mred?[0m"), "%s", text);
    CHECK(strstr(text, "second") && !strstr(text, "not this one") && !strstr(text, "not a log"));
    CHECK(strchr(text, '\x1b') == NULL);
    free(text);
    tt_close(c, 1000);
    tt_close(other, 1000);
    tt_test_serve_stop(&s);
}

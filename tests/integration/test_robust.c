/*
 * test_robust.c - the collector under attack and fault (issue 13), against a real
 * `telltale serve` on loopback: one collector per data directory, HTTP that keeps answering
 * under thousands of connections and half-sent requests, a live stream whose slow or absent
 * readers never slow ingest and whose oversized fields are truncated, not fatal.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/wire.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

static const char *bin(void)
{
    const char *b = getenv("TT_BIN");
    return b ? b : "build/telltale";
}

/* Run `telltale serve` with argv (NULL-terminated after "serve") to its exit, stderr into
 * err; returns the exit status, or -1 if it was still running after timeout_ms (then killed). */
static int run_serve(char *err, size_t errlen, double timeout_ms, const char *const *args)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 2);
        dup2(p[1], 1);
        close(p[0]);
        const char *argv[32];
        int n = 0;
        argv[n++] = bin();
        argv[n++] = "serve";
        for (; *args && n < 31; args++) {
            argv[n++] = *args;
        }
        argv[n] = NULL;
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    double t0 = tt_test_now_ms();
    int st = 0, done = 0;
    while (!done) {
        struct pollfd pf = {p[0], POLLIN, 0};
        if (poll(&pf, 1, 50) > 0) {
            ssize_t k = read(p[0], err + len, errlen - 1 - len);
            len += k > 0 ? (size_t)k : 0;
        }
        if (waitpid(pid, &st, WNOHANG) == pid) {
            done = 1;
        } else if (tt_test_now_ms() - t0 > timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            close(p[0]);
            err[len] = 0;
            return -1;
        }
    }
    ssize_t k;
    while (len < errlen - 1 && (k = read(p[0], err + len, errlen - 1 - len)) > 0) {
        len += (size_t)k;
    }
    close(p[0]);
    err[len] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* --- one collector per data directory ------------------------------------------------------ */

TEST_T(robust_second_collector_on_a_data_directory_refuses_naming_the_holder, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "locked", NULL);
    char sock[700], err[4096], pid[32];
    snprintf(sock, sizeof sock, "unix:%s/second.sock", s.dir);
    snprintf(pid, sizeof pid, "pid %d", (int)s.pid);
    const char *args[] = {"--data", s.dir, "--listen", sock, "--no-http", NULL};
    int rc = run_serve(err, sizeof err, 10000 * tt_test_mult(), args);
    CHECK_MSG(rc == 1, "second serve: status %d, said: %s", rc, err);
    CHECK_MSG(strstr(err, "in use by another collector") && strstr(err, pid),
              "the refusal names the holder (%s): %s", pid, err);
    /* The first one is untouched: still answering, its socket still there. */
    CHECK_EQ(tt_test_http(s.http, "GET", "/healthz", NULL, NULL), 200);
    struct stat sb;
    CHECK(stat(s.sock, &sb) == 0);
    /* Once it stops (or dies), the directory is free again: the lock is not a stale file. */
    tt_test_serve_kill(&s);
    tt_test_serve_restart(&s);
    CHECK_EQ(tt_test_http(s.http, "GET", "/healthz", NULL, NULL), 200);
    tt_test_serve_stop(&s);
}

/* --- HTTP under connection load ------------------------------------------------------------- */

static int tcp_connect(const char *hostport, int nonblock)
{
    const char *colon = strrchr(hostport, ':');
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static int count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    int n = 0;
    DIR *d = opendir(path);
    if (!d) {
        return -1;
    }
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n - 2;
}

/* GET path within limit_ms (the status), -1 if no answer in time. */
static long timed_get(const char *http, const char *path, double limit_ms, double *took)
{
    double t0 = tt_test_now_ms();
    long st = tt_test_http(http, "GET", path, NULL, NULL);
    *took = tt_test_now_ms() - t0;
    return *took <= limit_ms ? st : -1;
}

static void raise_own_fd_limit(int want)
{
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    if (rl.rlim_cur < (rlim_t)want) {
        SKIP("the descriptor hard limit (%llu) is below %d", (unsigned long long)rl.rlim_cur, want);
    }
}

#define AGENT_CONNS 5000

TEST_T(robust_http_answers_within_a_second_with_5000_agent_connections_open, 120)
{
    raise_own_fd_limit(AGENT_CONNS + 512);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "conns", "--max-connections", "6000", NULL);
    const char *port = strrchr(s.tcp, ':') + 1;
    char hp[64];
    snprintf(hp, sizeof hp, "127.0.0.1:%s", port);
    /* Each connection says hello, as a real agent does, so it stays open (no hello timeout). */
    tt__buf hello;
    tt__buf_init(&hello, 1 << 16);
    static int fds[AGENT_CONNS];
    for (int i = 0; i < AGENT_CONNS; i++) {
        tt__hello h;
        memset(&h, 0, sizeof h);
        h.protocol = 1;
        snprintf(h.agent, sizeof h.agent, "idle-%d", i);
        memcpy(h.instance, &i, sizeof i);
        h.instance[15] = 0x5a;
        tt__buf body;
        tt__buf_init(&body, 4096);
        CHECK_OK(tt__hello_encode(&h, &body));
        tt__buf_reset(&hello);
        CHECK_OK(tt__frame_append(&hello, TT_FT_HELLO, body.data, body.len));
        tt__buf_fini(&body);
        fds[i] = tcp_connect(hp, 0);
        CHECK_MSG(fds[i] >= 0, "connection %d: %s", i, strerror(errno));
        CHECK(write(fds[i], hello.data, hello.len) == (ssize_t)hello.len);
    }
    tt__buf_fini(&hello);
    /* Wait until the collector holds them all: then its HTTP descriptors are far above 1024. */
    double t0 = tt_test_now_ms();
    while (count_fds(s.pid) < AGENT_CONNS && tt_test_now_ms() - t0 < 20000 * tt_test_mult()) {
        usleep(20000);
    }
    CHECK_MSG(count_fds(s.pid) >= AGENT_CONNS, "the collector holds %d descriptors",
              count_fds(s.pid));
    double limit = 1000 * tt_test_mult(), took;
    const char *paths[] = {"/healthz", "/api/v1/status", "/api/v1/agents", "/metrics"};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
            long st = timed_get(s.http, paths[i], limit, &took);
            CHECK_MSG(st == 200, "%s: status %ld after %.0f ms", paths[i], st, took);
        }
    }
    /* The agents are still connected: nothing was shed to make room. */
    CHECK(count_fds(s.pid) >= AGENT_CONNS);
    /* The collector said at start which descriptor limit it runs with. */
    FILE *lf = fopen(s.log, "r");
    CHECK(lf);
    char line[512];
    int said = 0;
    while (fgets(line, sizeof line, lf)) {
        said |= strstr(line, "descriptor limit") != NULL;
    }
    fclose(lf);
    CHECK_MSG(said, "no \"descriptor limit\" line in %s", s.log);
    for (int i = 0; i < AGENT_CONNS; i++) {
        close(fds[i]);
    }
    tt_test_serve_stop(&s);
}

#define HALF_SENT 300

TEST_T(robust_http_answers_within_a_second_with_300_half_sent_requests, 120)
{
    raise_own_fd_limit(2048);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "halfsent", NULL);
    int fds[HALF_SENT];
    static const char part[] = "GET /api/v1/events?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow";
    for (int i = 0; i < HALF_SENT; i++) {
        fds[i] = tcp_connect(s.http, 0);
        CHECK_MSG(fds[i] >= 0, "connection %d: %s", i, strerror(errno));
        CHECK(write(fds[i], part, sizeof part - 1) == (ssize_t)(sizeof part - 1));
    }
    double t0 = tt_test_now_ms();
    while (count_fds(s.pid) < HALF_SENT && tt_test_now_ms() - t0 < 20000 * tt_test_mult()) {
        usleep(20000);
    }
    CHECK(count_fds(s.pid) >= HALF_SENT);
    double limit = 1000 * tt_test_mult(), took;
    const char *paths[] = {"/healthz", "/api/v1/status", "/api/v1/events?limit=5"};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
            long st = timed_get(s.http, paths[i], limit, &took);
            CHECK_MSG(st == 200, "%s: status %ld after %.0f ms", paths[i], st, took);
        }
    }
    /* The half-sent requests are still waiting (not answered, not reset): a slow peer is not
     * punished for being slow until the idle timeout. */
    int open_ = 0;
    for (int i = 0; i < HALF_SENT; i++) {
        char c;
        ssize_t k = recv(fds[i], &c, 1, MSG_DONTWAIT);
        open_ += k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        close(fds[i]);
    }
    CHECK_EQ(open_, HALF_SENT);
    tt_test_serve_stop(&s);
}

/* --- the live stream: slow readers and large events ----------------------------------------- */

/* A number from GET /api/v1/status ("key":N). */
static long long status_u64(const char *http, const char *key)
{
    char *body = NULL;
    CHECK_EQ(tt_test_http(http, "GET", "/api/v1/status", NULL, &body), 200);
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = body ? strstr(body, pat) : NULL;
    CHECK_MSG(p, "no %s in /api/v1/status: %s", key, body ? body : "");
    long long v = strtoll(p + strlen(pat), NULL, 10);
    free(body);
    return v;
}

/* A number from GET /metrics (a line "name V"). */
static long long metric(const char *http, const char *name)
{
    char *body = NULL;
    CHECK_EQ(tt_test_http(http, "GET", "/metrics", NULL, &body), 200);
    char pat[160];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = body ? strstr(body, pat) : NULL;
    CHECK_MSG(p, "no %s in /metrics", name);
    long long v = strtoll(p + strlen(pat), NULL, 10);
    free(body);
    return v;
}

#define NON_READERS 64
#define LIVE_EVENTS 400000
#define LIVE_RATE 200000 /* events per second */

TEST_T(robust_64_live_subscribers_that_never_read_do_not_slow_an_agent, 300)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "nonreaders", NULL);
    /* 64 subscribers (the hub's limit) that send their request and never read a byte. */
    int fds[NON_READERS];
    /* With the Host the collector listens on and the operator token, as a browser would. */
    char req[512];
    const char *tok = tt_test_token(s.http);
    int reqlen =
        snprintf(req, sizeof req, "GET /api/v1/stream HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n", s.http,
                 tok ? "Authorization: Bearer " : "", tok ? tok : "", tok ? "\r\n" : "");
    for (int i = 0; i < NON_READERS; i++) {
        fds[i] = tcp_connect(s.http, 0);
        CHECK(fds[i] >= 0);
        int small = 4096;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        CHECK(write(fds[i], req, (size_t)reqlen) == (ssize_t)reqlen);
    }
    double t0 = tt_test_now_ms();
    while (status_u64(s.http, "subscribers") < NON_READERS &&
           tt_test_now_ms() - t0 < 10000 * tt_test_mult()) {
        usleep(20000);
    }
    CHECK_EQ(status_u64(s.http, "subscribers"), NON_READERS);
    /* With TT_SOAK the agent's ring is the default one, as in the measurement; in
     * `make test` it is larger, because on a loaded shared machine scheduling alone makes a
     * default ring overflow at this rate with no subscriber at all (seen: 4,596 drops). */
    const char *soak = getenv("TT_SOAK");
    tt_client *c =
        tt_test_client(s.endpoint, "busy", soak && *soak == '1' ? NULL : "ring_bytes=64M", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    char msg[96];
    double start = tt_test_now_ms();
    for (int i = 0; i < LIVE_EVENTS; i++) {
        if (i % 1000 == 0) {
            /* Pace to LIVE_RATE: never ahead of the schedule. */
            double due = start + (double)i * 1000.0 / LIVE_RATE;
            while (tt_test_now_ms() < due) {
                usleep(200);
            }
        }
        snprintf(msg, sizeof msg, "event %d, a line of an agent's log of ordinary length", i);
        tt_attr a[] = {TT_INT("i", i)};
        tt_log(c, NULL, TT_INFO, msg, a, 1);
    }
    double took = tt_test_now_ms() - start;
    CHECK_OK(tt_flush(c, (uint32_t)(60000 * tt_test_mult())));
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    printf("%d events in %.0f ms: acked %llu, dropped %llu (buffer_full %llu)\n", LIVE_EVENTS, took,
           (unsigned long long)st.acked, (unsigned long long)st.dropped_total,
           (unsigned long long)st.dropped[TT_DROP_BUFFER_FULL]);
    CHECK_EQ_U64(st.emitted, LIVE_EVENTS);
    CHECK_EQ_U64(st.dropped_total, 0);
    CHECK_EQ_U64(st.acked, LIVE_EVENTS);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    tt_test_check_conservation(&st, &sc);
    /* Each subscriber was disconnected once its queue filled, or told what it missed; both
     * counted where an operator looks. The fan-out thread may still be catching up (on a
     * loaded machine, by tens of seconds): it is allowed to be late, ingest is not. */
    t0 = tt_test_now_ms();
    long long dropped = 0, lagging = 0;
    while (tt_test_now_ms() - t0 < 150000 * tt_test_mult()) {
        dropped = status_u64(s.http, "subscribers_dropped_slow");
        lagging = status_u64(s.http, "subscribers_lagging");
        if (dropped + lagging >= NON_READERS) {
            break;
        }
        usleep(50000);
    }
    printf("subscribers dropped %lld, lagging %lld; events skipped by the fan-out %lld\n", dropped,
           lagging, status_u64(s.http, "stream_events_skipped"));
    CHECK_EQ(dropped + lagging, NON_READERS);
    CHECK_EQ(metric(s.http, "telltale_stream_subscribers_dropped_total"), dropped);
    for (int i = 0; i < NON_READERS; i++) {
        close(fds[i]);
    }
    CHECK_OK(tt_close(c, 10000));
    tt_test_serve_stop(&s);
}

TEST_T(robust_an_oversized_field_is_truncated_in_the_live_stream_not_fatal, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "bigfield", NULL);
    struct tt_test_sse *live[3];
    for (int i = 0; i < 3; i++) {
        live[i] = tt_test_sse_open(s.http, "", NULL);
        CHECK(live[i]);
    }
    double t0 = tt_test_now_ms();
    while (status_u64(s.http, "subscribers") < 3 &&
           tt_test_now_ms() - t0 < 10000 * tt_test_mult()) {
        usleep(20000);
    }
    tt_client *c =
        tt_test_client(s.endpoint, "big", "max_event_bytes=1048576", "ring_bytes=16M", NULL);
    /* About 1 MiB of text that escapes to six times its size in JSON ('<' is \u003c). */
    size_t n = 600000, m = 400000;
    char *text = malloc(n + 1), *attr = malloc(m + 1);
    memset(text, '<', n);
    text[n] = 0;
    memset(attr, 'x', m);
    attr[m] = 0;
    tt_attr a[] = {TT_STR("blob", attr)};
    CHECK_OK(tt_log(c, NULL, TT_INFO, text, a, 1));
    CHECK_OK(tt_log(c, NULL, TT_INFO, "after the big one", NULL, 0));
    CHECK_OK(tt_flush(c, 30000));
    for (int i = 0; i < 3; i++) {
        int from = 0;
        char *big =
            tt_test_sse_wait(live[i], "[truncated: 600000 bytes]", &from, 20000 * tt_test_mult());
        CHECK_MSG(big, "subscriber %d: no truncated event", i);
        CHECK(strstr(big, "[truncated: 400000 bytes]"));
        CHECK(strstr(big, "\"truncated_fields\":2"));
        CHECK(strlen(big) < 2 * 6 * 65536 + 4096);
        free(big);
        char *after = tt_test_sse_wait(live[i], "after the big one", &from, 20000 * tt_test_mult());
        CHECK_MSG(after, "subscriber %d was dropped by one large event", i);
        free(after);
    }
    CHECK_EQ(status_u64(s.http, "subscribers"), 3);
    CHECK_EQ(status_u64(s.http, "subscribers_dropped_slow"), 0);
    /* Rendered once for all three subscribers: two fields cut. */
    CHECK_EQ(status_u64(s.http, "stream_fields_truncated"), 2);
    /* The store keeps the event whole. */
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=big&limit=1", NULL, &body), 200);
    CHECK(body && !strstr(body, "truncated") && strlen(body) > 6 * n);
    free(body);
    for (int i = 0; i < 3; i++) {
        tt_test_sse_close(live[i]);
    }
    free(text);
    free(attr);
    CHECK_OK(tt_close(c, 10000));
    tt_test_serve_stop(&s);
}

/* --- exact loss across a damaged spool ------------------------------------------------------- */

struct rec {
    uint64_t off;
    uint32_t len, n;
};

/* The records of a spool segment (offset, frame length, events), from their headers. */
static int read_records(const char *path, struct rec *out, int max)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    struct stat sb;
    CHECK(fstat(fd, &sb) == 0);
    int k = 0;
    uint64_t off = 32;
    while (k < max && off + 32 <= (uint64_t)sb.st_size) {
        uint8_t h[32];
        CHECK(pread(fd, h, 32, (off_t)off) == 32);
        out[k].off = off;
        memcpy(&out[k].len, h + 4, 4);
        memcpy(&out[k].n, h + 8, 4);
        off += 32 + out[k].len;
        k++;
    }
    close(fd);
    return k;
}

static long long json_num(const char *json, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    CHECK_MSG(p, "no %s in %s", key, json);
    return strtoll(p + strlen(pat), NULL, 10);
}

TEST_T(robust_damaged_spool_records_are_counted_exactly_and_live_gaps_agree, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "spooldamage", NULL);
    tt_test_serve_stop(&s);
    char spool[700], dir[800];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/spool/damaged", tt_test_tmpdir());
    tt_client *a = tt_test_client(s.endpoint, "damaged", spool, "window_bytes=65536",
                                  "compression_level=0", "batch_bytes=4096", NULL);
    uint8_t inst[16];
    tt_instance_id(a, inst);
    char msg[96];
    for (int i = 0; i < 10000; i++) {
        snprintf(msg, sizeof msg, "event %d, padded to about sixty-four bytes of text", i);
        tt_log(a, NULL, TT_INFO, msg, NULL, 0);
        if (i % 500 == 499) {
            usleep(2000);
        }
    }
    tt_stats sa;
    CHECK(tt_close_stats(a, 200, &sa, sizeof sa) == TT_ETIMEDOUT);
    CHECK(sa.spooled > 0);
    DIR *d = opendir(dir);
    CHECK(d);
    char first[256] = "", last[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (!first[0] || strcmp(e->d_name, first) < 0) {
            snprintf(first, sizeof first, "%s", e->d_name);
        }
        if (!last[0] || strcmp(e->d_name, last) > 0) {
            snprintf(last, sizeof last, "%s", e->d_name);
        }
    }
    closedir(d);
    char path[1100], lpath[1100];
    snprintf(path, sizeof path, "%s/%s", dir, first);
    snprintf(lpath, sizeof lpath, "%s/%s", dir, last);
    struct rec r[4096], lr[4096];
    int nr = read_records(path, r, 4096);
    CHECK_MSG(nr >= 8, "only %d records in the first segment", nr);
    /* A flipped byte in record 1's frame, a wrecked header for records 3 and 4 (two in a row),
     * and the last record of the last segment cut in the middle of its frame. */
    uint64_t lost = r[1].n + r[3].n + r[4].n;
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t b;
    CHECK(pread(fd, &b, 1, (off_t)(r[1].off + 32 + r[1].len / 2)) == 1);
    b ^= 0x5a;
    CHECK(pwrite(fd, &b, 1, (off_t)(r[1].off + 32 + r[1].len / 2)) == 1);
    uint32_t junk = 0xdeadbeef;
    CHECK(pwrite(fd, &junk, 4, (off_t)r[3].off + 8) == 4);
    CHECK(pwrite(fd, &junk, 4, (off_t)r[4].off + 12) == 4);
    close(fd);
    int nl = read_records(lpath, lr, 4096);
    CHECK(nl >= 1);
    if (strcmp(first, last) != 0 || nl - 1 > 4) {
        lost += lr[nl - 1].n;
        CHECK(truncate(lpath, (off_t)(lr[nl - 1].off + 32 + lr[nl - 1].len / 2)) == 0);
    }
    printf("%d records in the first segment, %d in the last; %llu events damaged of %llu "
           "spooled\n",
           nr, nl, (unsigned long long)lost, (unsigned long long)sa.spooled);
    tt_test_serve_restart(&s);
    tt_client *c = tt_test_client(s.endpoint, "damaged", spool, NULL);
    double t0 = tt_test_now_ms();
    tt_stats sb;
    for (;;) {
        CHECK_OK(tt_stats_get(c, &sb, sizeof sb));
        if (sb.inherited > 0 && sb.buffered == 0) {
            break;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 30000 * tt_test_mult(), "spool not replayed");
        usleep(20000);
    }
    CHECK(tt_close_stats(c, 5000, &sb, sizeof sb) == 0);
    /* Every event of a damaged record is counted, no more and no fewer. */
    CHECK_EQ_U64(sb.dropped[TT_DROP_SPOOL_CORRUPT], lost);
    CHECK_EQ_U64(sb.inherited, sa.spooled);
    CHECK_EQ_U64(sb.acked + sb.dropped[TT_DROP_SPOOL_CORRUPT], sb.inherited);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_EQ_U64(sc.overlaps, 0);
    /* The store proves as much missing as was damaged (the last record lost may be the highest
     * sequence numbers, which no gap can show). */
    CHECK_EQ_U64(sa.acked + sb.acked, sc.events);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents/damaged", NULL, &body), 200);
    const char *live = strstr(body, "\"live\":");
    CHECK(live);
    long long proven = json_num(body, "proven"), live_gaps = json_num(live, "loss_gaps");
    printf("store gaps %llu, proven %lld, live gaps %lld\n", (unsigned long long)sc.gaps, proven,
           live_gaps);
    CHECK_EQ(proven, (long long)sc.gaps);
    CHECK_EQ(live_gaps, proven);
    CHECK(sc.gaps >= r[1].n + r[3].n + r[4].n);
    free(body);
    tt_test_serve_stop(&s);
}

/* --- strict query parameters (found by tests/fuzz/fuzz_params.c) ------------------------------ */

TEST(robust_query_parameters_take_digits_and_hex_digits_only)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "params", NULL);
    const char *bad[] = {
        "/api/v1/events?format=ndjson&limit=-1",
        "/api/v1/events?limit=%2B5",
        "/api/v1/events?limit=%205",
        "/api/v1/events?instance=%2Bf23456789abcdef0123456789abcdef",
        "/api/v1/events?instance=%20f23456789abcdef0123456789abcdef",
        "/api/v1/events?since=%2B1",
        "/api/v1/events?since=99999-01-01T00:00:00Z",
        "/api/v1/events?min_severity=%2B9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long st = tt_test_http(s.http, "GET", bad[i], NULL, NULL);
        CHECK_MSG(st == 400, "%s: status %ld", bad[i], st);
    }
    const char *good[] = {
        "/api/v1/events?format=ndjson&limit=0",
        "/api/v1/events?limit=5",
        "/api/v1/events?instance=0123456789abcdefABCDEF0123456789",
        "/api/v1/events?since=-5&until=2026-11-24T10:00:00.5Z",
        "/api/v1/events?min_severity=9",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        long st = tt_test_http(s.http, "GET", good[i], NULL, NULL);
        CHECK_MSG(st == 200, "%s: status %ld", good[i], st);
    }
    tt_test_serve_stop(&s);
}

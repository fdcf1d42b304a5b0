/*
 * test_delivery.c - reliable delivery against a real `telltale serve`: the scenarios of
 * ../shared/research/reliability-anchors.md (S1, S2, S3, S4, S8, S9, S12, S15, S18) and the
 * collector's SIGTERM drain, each checked with the shared store and conservation checker
 * (tests/support/serve.c).
 *
 * Sizes are for CI; TT_SOAK=1 (make soak) runs the long versions.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

static int soak(void)
{
    const char *s = getenv("TT_SOAK");
    return s && *s && *s != '0';
}

/* Slack for timing bounds: only sanitizer builds get more (make soak raises the runner's
 * timeouts with TT_TEST_TIMEOUT_MULT, not the bounds checked here). */
static double mult(void)
{
    const char *m = getenv("TT_SANITIZE") ? getenv("TT_TEST_TIMEOUT_MULT") : NULL;
    double v = m ? strtod(m, NULL) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* Emit n log events with ~64 bytes of message; returns how many calls were refused. */
static uint64_t emit_n(tt_client *c, uint64_t n, uint64_t tag)
{
    uint64_t refused = 0;
    char msg[80];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(msg, sizeof msg, "event %llu of run %llu, padded to about sixty-four bytes",
                 (unsigned long long)i, (unsigned long long)tag);
        if (tt_log(c, NULL, TT_INFO, msg, NULL, 0) != 0) {
            refused++;
        }
    }
    return refused;
}

/* Wait until the client holds nothing (buffered == 0); fails the test after ms. */
static void wait_settled(tt_client *c, double ms, tt_stats *st)
{
    double t0 = tt_test_now_ms();
    for (;;) {
        CHECK_OK(tt_stats_get(c, st, sizeof *st));
        if (st->buffered == 0) {
            return;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < ms * mult(),
                  "not settled after %.0f ms: buffered %llu (spooled %llu), acked %llu", ms,
                  (unsigned long long)st->buffered, (unsigned long long)st->spooled,
                  (unsigned long long)st->acked);
        usleep(10000);
    }
}

static void check_client(const struct tt_test_serve *s, const uint8_t inst[16], const tt_stats *st,
                         struct tt_store_check *sc)
{
    tt_test_check_store(s->db, inst, sc);
    tt_test_check_conservation(st, sc);
}

/* Bytes in the regular files of a directory tree one level deep (the spool of one agent). */
static uint64_t dir_bytes(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        return 0;
    }
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[1200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            n += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return n;
}

static int dir_files(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        return 0;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2) {
            res = 0;
        }
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static int count_fds(void)
{
    return dir_files("/proc/self/fd");
}

/* --- the spool ----------------------------------------------------------------------------- */

TEST_T(delivery_spool_holds_an_outage_and_replays_everything_once, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "spool_basic", NULL);
    tt_test_serve_stop(&s);
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    tt_client *c = tt_test_client(s.endpoint, "spooler", spool, "window_bytes=65536",
                                  "compression_level=0", "backoff_max_ms=200", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    uint64_t n = soak() ? 400000 : 40000, refused = 0;
    for (uint64_t i = 0; i < n; i += 1000) {
        refused += emit_n(c, 1000, i);
        usleep(2000);
    }
    tt_stats st;
    usleep(300000);
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_MSG(st.spooled > 0, "nothing spooled during the outage");
    tt_test_serve_restart(&s);
    wait_settled(c, 30000, &st);
    CHECK_EQ_U64(st.dropped_total, refused);
    CHECK_EQ_U64(st.acked, n - refused);
    struct tt_store_check sc;
    check_client(&s, inst, &st, &sc);
    CHECK_EQ_U64(sc.events, st.acked);
    CHECK_EQ_U64(sc.gaps, 0);
    CHECK_OK(tt_close(c, 2000));
    /* Every segment was acknowledged and removed. */
    char dir[800];
    snprintf(dir, sizeof dir, "%s/spool/spooler", tt_test_tmpdir());
    CHECK_EQ(dir_files(dir), 0);
    tt_test_serve_stop(&s);
}

TEST(delivery_spool_refuses_a_symlink_or_a_shared_directory)
{
    char real[700], link[700];
    snprintf(real, sizeof real, "%s/real", tt_test_tmpdir());
    snprintf(link, sizeof link, "%s/link", tt_test_tmpdir());
    CHECK(mkdir(real, 0700) == 0);
    CHECK(symlink(real, link) == 0);
    tt_config *cfg;
    tt_client *c = NULL;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", "tcp://127.0.0.1:1"));
    CHECK_OK(tt_config_set(cfg, "spool_dir", link));
    CHECK_EQ(tt_open(&c, cfg), TT_EPERM);
    CHECK(c == NULL);
    char shared[700];
    snprintf(shared, sizeof shared, "%s/shared", tt_test_tmpdir());
    CHECK(mkdir(shared, 0700) == 0);
    CHECK(chmod(shared, 0777) == 0);
    CHECK_OK(tt_config_set(cfg, "spool_dir", shared));
    CHECK_EQ(tt_open(&c, cfg), TT_EPERM);
    /* A private directory works, and its agent directory is created 0700. */
    CHECK_OK(tt_config_set(cfg, "spool.dir", real)); /* the dotted alias of spool_dir */
    CHECK_STR(tt_config_get(cfg, "spool_dir"), real);
    CHECK_OK(tt_config_set(cfg, "agent", "a/../b"));
    CHECK_OK(tt_open(&c, cfg));
    char agent_dir[800];
    snprintf(agent_dir, sizeof agent_dir, "%s/a_.._b", real);
    struct stat st;
    CHECK(stat(agent_dir, &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0700);
    tt_close(c, 0);
    tt_config_free(cfg);
}

/* S7: a spool directory that cannot be one fails tt_open with an error that says so (no client
 * that runs without the spool it was asked for). */
TEST(delivery_spool_dir_that_is_a_file_or_under_one_fails_open)
{
    char file[700], under[800];
    snprintf(file, sizeof file, "%s/plain-file", tt_test_tmpdir());
    tt_test_write_file(file, "not a directory\n");
    snprintf(under, sizeof under, "%s/spool", file);
    const char *bad[] = {file, under};
    for (int i = 0; i < 2; i++) {
        tt_config *cfg;
        tt_client *c = NULL;
        CHECK_OK(tt_config_new(&cfg));
        CHECK_OK(tt_config_set(cfg, "endpoint", "tcp://127.0.0.1:1"));
        CHECK_OK(tt_config_set(cfg, "spool_dir", bad[i]));
        int rc = tt_open(&c, cfg);
        printf("spool_dir %s: %d (%s)\n", bad[i], rc, tt_strerror(rc));
        CHECK(rc < 0);
        CHECK(c == NULL);
        tt_config_free(cfg);
    }
}

/* S3: the cap holds at every sample, and what is missing is exactly what was counted. */
static void spool_cap(const char *policy)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, policy, NULL);
    tt_test_serve_stop(&s);
    char spool[700], pol[64], dir[800];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    snprintf(pol, sizeof pol, "spool_policy=%s", policy);
    snprintf(dir, sizeof dir, "%s/spool/capped", tt_test_tmpdir());
    uint64_t cap = soak() ? (8u << 20) : (256u << 10);
    char capkv[64];
    snprintf(capkv, sizeof capkv, "spool_max_bytes=%llu", (unsigned long long)cap);
    tt_client *c =
        tt_test_client(s.endpoint, "capped", spool, capkv, pol, "window_bytes=65536",
                       "batch_bytes=16384", "compression_level=0", "backoff_max_ms=200", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    uint64_t n = soak() ? 600000 : 30000, refused = 0, peak = 0;
    for (uint64_t i = 0; i < n; i += 500) {
        refused += emit_n(c, 500, i);
        usleep(1000);
        uint64_t b = dir_bytes(dir);
        peak = b > peak ? b : peak;
        CHECK_MSG(b <= cap, "spool holds %llu bytes, cap %llu", (unsigned long long)b,
                  (unsigned long long)cap);
    }
    usleep(200000);
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_MSG(st.dropped[TT_DROP_SPOOL_FULL] > 0, "the spool never filled (peak %llu)",
              (unsigned long long)peak);
    CHECK(peak > cap / 2);
    tt_test_serve_restart(&s);
    wait_settled(c, 30000, &st);
    struct tt_store_check sc;
    check_client(&s, inst, &st, &sc);
    CHECK_EQ_U64(st.dropped[TT_DROP_BUFFER_FULL], refused);
    /* Sequence numbers are given before the spool: its drops are exactly the store's gaps. */
    CHECK_EQ_U64(sc.events + st.dropped[TT_DROP_SPOOL_FULL], n - refused);
    CHECK_EQ_U64(sc.events, st.acked);
    CHECK_EQ_U64(st.acked + st.dropped_total, n);
    fprintf(stderr,
            "S3 %s: %llu events, %llu stored, spool_full %llu, buffer_full %llu, peak "
            "%llu of %llu bytes\n",
            policy, (unsigned long long)n, (unsigned long long)sc.events,
            (unsigned long long)st.dropped[TT_DROP_SPOOL_FULL], (unsigned long long)refused,
            (unsigned long long)peak, (unsigned long long)cap);
    if (!strcmp(policy, "drop_oldest")) {
        /* The newest events survive: the last sequence number is stored. */
        CHECK_EQ_U64(sc.max_seq, n - refused);
    } else {
        /* The oldest survive: 1 is stored. */
        CHECK(sc.events > 0 && sc.gaps < sc.max_seq);
    }
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

TEST_T(delivery_s3_spool_cap_drop_newest_counts_exactly_the_missing_events, 180)
{
    spool_cap("drop_newest");
}

TEST_T(delivery_s3_spool_cap_drop_oldest_counts_exactly_the_missing_events, 180)
{
    spool_cap("drop_oldest");
}

/* S4: failing writes and fsyncs are counted, never fatal, and the spool resumes by itself. */
TEST_T(delivery_s4_spool_write_and_fsync_failures_are_counted_and_recovered, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s4", NULL);
    tt_test_serve_stop(&s);
    setenv("TT_SPOOL_FAULT", "write:5:1,fsync:1:1", 1);
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    tt_client *c = tt_test_client(s.endpoint, "faulty", spool, "window_bytes=65536",
                                  "compression_level=0", "backoff_max_ms=200", NULL);
    unsetenv("TT_SPOOL_FAULT");
    uint8_t inst[16];
    tt_instance_id(c, inst);
    uint64_t refused = 0, n = 0;
    for (int i = 0; i < 20; i++) {
        refused += emit_n(c, 1000, n);
        n += 1000;
        usleep(2000);
    }
    usleep(200000);
    tt_stats mid;
    CHECK_OK(tt_stats_get(c, &mid, sizeof mid));
    CHECK_MSG(mid.dropped[TT_DROP_SPOOL_ERROR] > 0, "no write failure was counted");
    /* After the retry interval (1 s after the last failure: a write, or the failing sync of the
     * once-a-second tick) the spool takes frames again, without a restart. */
    usleep(2500000);
    for (int i = 0; i < 20; i++) {
        refused += emit_n(c, 1000, n);
        n += 1000;
        usleep(2000);
    }
    usleep(300000);
    tt_stats late;
    CHECK_OK(tt_stats_get(c, &late, sizeof late));
    CHECK_MSG(late.spooled > mid.spooled, "the spool did not resume: %llu then %llu",
              (unsigned long long)mid.spooled, (unsigned long long)late.spooled);
    tt_test_serve_restart(&s);
    tt_stats st;
    wait_settled(c, 30000, &st);
    struct tt_store_check sc;
    check_client(&s, inst, &st, &sc);
    CHECK_EQ_U64(sc.events + st.dropped[TT_DROP_SPOOL_ERROR] + st.dropped[TT_DROP_SPOOL_FULL],
                 n - refused);
    CHECK_EQ_U64(sc.events, st.acked);
    CHECK_EQ_U64(st.dropped[TT_DROP_BUFFER_FULL], refused);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

/* A damaged record in the middle of a segment is skipped and counted; the records after it
 * are delivered by the next process. */
TEST_T(delivery_spool_corrupt_record_is_skipped_and_later_records_survive, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "corrupt", NULL);
    tt_test_serve_stop(&s);
    char spool[700], dir[800];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/spool/damaged", tt_test_tmpdir());
    tt_client *a = tt_test_client(s.endpoint, "damaged", spool, "window_bytes=65536",
                                  "compression_level=0", "batch_bytes=4096", NULL);
    uint8_t inst[16];
    tt_instance_id(a, inst);
    for (int i = 0; i < 20; i++) {
        emit_n(a, 500, (uint64_t)i);
        usleep(2000);
    }
    tt_stats sa;
    CHECK(tt_close_stats(a, 200, &sa, sizeof sa) == TT_ETIMEDOUT);
    CHECK(sa.spooled > 0);
    /* Flip a byte in the frame of the second record of the first segment, and wreck the
     * header of the fourth record. */
    DIR *d = opendir(dir);
    CHECK(d);
    char first[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.' && (!first[0] || strcmp(e->d_name, first) < 0)) {
            snprintf(first, sizeof first, "%s", e->d_name);
        }
    }
    closedir(d);
    CHECK(first[0]);
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, first);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint64_t off = 32;
    uint32_t len;
    for (int rec = 0; rec < 4; rec++) {
        CHECK(pread(fd, &len, 4, (off_t)off + 4) == 4);
        if (rec == 1) {
            uint8_t b;
            CHECK(pread(fd, &b, 1, (off_t)(off + 32 + len / 2)) == 1);
            b ^= 0x5a;
            CHECK(pwrite(fd, &b, 1, (off_t)(off + 32 + len / 2)) == 1);
        }
        if (rec == 3) {
            uint32_t junk = 0xdeadbeef;
            CHECK(pwrite(fd, &junk, 4, (off_t)off + 8) == 4);
        }
        off += 32 + len;
    }
    close(fd);
    tt_test_serve_restart(&s);
    tt_client *b = tt_test_client(s.endpoint, "damaged", spool, NULL);
    double t0 = tt_test_now_ms();
    while (dir_files(dir) > 0 && tt_test_now_ms() - t0 < 20000 * mult()) {
        usleep(20000);
    }
    CHECK_EQ(dir_files(dir), 0);
    tt_stats sb;
    wait_settled(b, 10000, &sb);
    CHECK(tt_close_stats(b, 2000, &sb, sizeof sb) == 0);
    CHECK_MSG(sb.dropped[TT_DROP_SPOOL_CORRUPT] >= 2, "corrupt counted %llu",
              (unsigned long long)sb.dropped[TT_DROP_SPOOL_CORRUPT]);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_EQ_U64(sb.acked, sc.events);
    CHECK_EQ_U64(sb.acked + sb.dropped[TT_DROP_SPOOL_CORRUPT], sb.inherited);
    /* Records after the damage arrived: the highest spooled sequence number is stored. */
    CHECK_EQ_U64(sc.max_seq,
                 sa.emitted - sa.dropped[TT_DROP_BUFFER_FULL] - sa.dropped[TT_DROP_SHUTDOWN]);
    CHECK_EQ_U64(sc.overlaps, 0);
    tt_test_serve_stop(&s);
}

/* --- S1: a stalled collector ---------------------------------------------------------------- */

struct s1_thread {
    tt_client *c;
    double seconds;
    uint64_t calls, refused;
    uint64_t lat[64]; /* histogram: bucket i counts calls under 2^i ns */
    uint64_t max_ns;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *s1_emit(void *arg)
{
    struct s1_thread *t = arg;
    uint64_t end = mono_ns() + (uint64_t)(t->seconds * 1e9);
    char msg[64];
    memset(msg, 'x', sizeof msg - 1);
    msg[sizeof msg - 1] = 0;
    while (mono_ns() < end) {
        for (int i = 0; i < 256; i++) {
            uint64_t a = mono_ns();
            int rc = tt_log(t->c, NULL, TT_INFO, msg, NULL, 0);
            uint64_t d = mono_ns() - a;
            t->calls++;
            t->refused += rc != 0;
            int b = 0;
            while (b < 63 && (1ull << b) <= d) {
                b++;
            }
            t->lat[b]++;
            t->max_ns = d > t->max_ns ? d : t->max_ns;
        }
        usleep(50); /* a paced producer: the drops come from the stall, not the pace */
    }
    return NULL;
}

TEST_T(delivery_s1_stalled_collector_keeps_emit_fast_and_counts_drops_exactly, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s1", NULL);
    tt_client *c = tt_test_client(s.tcp, "stalled", "ring_bytes=262144", "max_event_bytes=4096",
                                  "window_bytes=65536", "ack_timeout_ms=60000", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    emit_n(c, 100, 0);
    CHECK_OK(tt_flush(c, 5000));
    CHECK(kill(s.pid, SIGSTOP) == 0);
    enum { N = 4 };
    struct s1_thread t[N];
    pthread_t th[N];
    memset(t, 0, sizeof t);
    for (int i = 0; i < N; i++) {
        t[i].c = c;
        t[i].seconds = soak() ? 60.0 : 1.5;
        CHECK_OK(pthread_create(&th[i], NULL, s1_emit, &t[i]));
    }
    uint64_t calls = 0, refused = 0, hist[64] = {0};
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        calls += t[i].calls;
        refused += t[i].refused;
        for (int b = 0; b < 64; b++) {
            hist[b] += t[i].lat[b];
        }
    }
    CHECK(kill(s.pid, SIGCONT) == 0);
    /* p99 from the histogram (upper bucket bound). */
    uint64_t acc = 0, p99 = 0;
    for (int b = 0; b < 64; b++) {
        acc += hist[b];
        if (acc >= calls - calls / 100) {
            p99 = 1ull << b;
            break;
        }
    }
    fprintf(stderr, "S1: %llu calls, %llu refused, p99 <= %llu ns\n", (unsigned long long)calls,
            (unsigned long long)refused, (unsigned long long)p99);
    CHECK_MSG(refused > 0, "the stall never filled the ring");
    /* The bound is loose for a shared, loaded CI machine (and sanitizers); the 10 ns hot path
     * has its own benchmark. What matters here: no call waits for the collector. */
    CHECK_MSG((double)p99 <= 16384.0 * mult(), "emit p99 %llu ns while stalled",
              (unsigned long long)p99);
    tt_stats st;
    wait_settled(c, 30000, &st);
    CHECK_EQ_U64(st.dropped[TT_DROP_BUFFER_FULL], refused);
    CHECK_EQ_U64(st.emitted, calls + 100);
    struct tt_store_check sc;
    check_client(&s, inst, &st, &sc);
    CHECK_EQ_U64(sc.events, st.acked);
    CHECK_EQ_U64(sc.gaps, 0);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

/* --- S2: a long outage without a spool ------------------------------------------------------ */

TEST_T(delivery_s2_long_outage_keeps_memory_and_fds_flat, 180)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s2", NULL);
    tt_test_serve_stop(&s);
    uint64_t ring = 4u << 20, window = 1u << 20;
    uint64_t base = rss_bytes();
    tt_client *c = tt_test_client(s.endpoint, "outage", "ring_bytes=4M", "window_bytes=1M",
                                  "backoff_min_ms=10", "backoff_max_ms=100", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    double seconds = soak() ? 600.0 : 3.0;
    double t0 = tt_test_now_ms();
    uint64_t peak = 0, n = 0, refused = 0, late_min = UINT64_MAX, late_max = 0;
    int fds_mid = -1, fds_end = -1;
    while (tt_test_now_ms() - t0 < seconds * 1000) {
        refused += emit_n(c, 2000, n);
        n += 2000;
        usleep(10000);
        uint64_t r = rss_bytes();
        peak = r > peak ? r : peak;
        if (tt_test_now_ms() - t0 > seconds * 500) {
            late_min = r < late_min ? r : late_min;
            late_max = r > late_max ? r : late_max;
            if (fds_mid < 0) {
                fds_mid = count_fds();
            }
        }
    }
    fds_end = count_fds();
    fprintf(stderr, "S2: %llu events, base %llu KiB, peak %llu KiB, late range %llu KiB\n",
            (unsigned long long)n, (unsigned long long)(base >> 10),
            (unsigned long long)(peak >> 10), (unsigned long long)((late_max - late_min) >> 10));
    CHECK_MSG(getenv("TT_SANITIZE") || peak <= base + ring + window + (8u << 20),
              "RSS %llu over the budget", (unsigned long long)peak);
    CHECK_MSG(getenv("TT_SANITIZE") || late_max - late_min <= (1u << 20),
              "RSS still growing in the second half: %llu bytes",
              (unsigned long long)(late_max - late_min));
    /* A socket may be open or not at either moment: at most one apart. */
    CHECK(fds_end <= fds_mid + 1 && fds_mid <= fds_end + 1);
    CHECK(refused > 0);
    tt_test_serve_restart(&s);
    tt_stats st;
    wait_settled(c, 30000, &st);
    struct tt_store_check sc;
    check_client(&s, inst, &st, &sc);
    CHECK_EQ_U64(sc.events, st.acked);
    CHECK_EQ_U64(st.acked + st.dropped[TT_DROP_BUFFER_FULL], n);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

/* --- S8: forks under load ------------------------------------------------------------------- */

struct loader {
    tt_client *c;
    atomic_int stop;
};

static void *load(void *arg)
{
    struct loader *l = arg;
    uint64_t i = 0;
    while (!atomic_load(&l->stop)) {
        emit_n(l->c, 100, i++);
        usleep(500);
    }
    return NULL;
}

TEST_T(delivery_s8_forks_under_load_get_fresh_instances_and_no_parent_events, 300)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s8", NULL);
    int fds_before[1024] = {0};
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (fd >= 0 && fd < 1024) {
            fds_before[fd] = 1;
        }
    }
    closedir(d);
    char spool[700], dir[800];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/spool/forker", tt_test_tmpdir());
    tt_client *c = tt_test_client(s.endpoint, "forker", spool, NULL);
    uint8_t pinst[16];
    tt_instance_id(c, pinst);
    struct loader l = {c, 0};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        CHECK_OK(pthread_create(&th[i], NULL, load, &l));
    }
    usleep(50000);
    /* Every descriptor the library opened is close-on-exec. */
    d = opendir("/proc/self/fd");
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd >= 0 && fd < 1024 && !fds_before[fd] && fd != dirfd(d)) {
            int fl = fcntl(fd, F_GETFD);
            CHECK_MSG(fl < 0 || (fl & FD_CLOEXEC), "fd %d is not close-on-exec", fd);
        }
    }
    closedir(d);
    int forks = soak() ? 1000 : 200;
    enum { PER_CHILD_FULL = 20 };
    /* Under the sanitizers the children only check their fresh instance and empty counters,
     * and emit nothing (the normal build runs the full scenario): ThreadSanitizer cannot follow
     * a thread started after a multi-threaded fork, and GCC 12's AddressSanitizer runtime does
     * not take its allocator lock around fork(), so a child's worker can wait forever in malloc
     * for a lock that a parent thread held at the fork (seen with gdb: the child's worker in
     * SizeClassAllocator64::GetFromAllocator, its main thread in tt_close joining it). */
    const char *san = getenv("TT_SANITIZE");
    const uint64_t PER_CHILD = san && *san ? 0 : PER_CHILD_FULL;
    uint8_t(*kids)[16] = calloc((size_t)forks, 16);
    for (int k = 0; k < forks; k++) {
        int p[2];
        CHECK(pipe(p) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            uint8_t inst[16];
            tt_instance_id(c, inst);
            int bad = memcmp(inst, pinst, 16) == 0;
            tt_stats st;
            int rc = 0;
            if (PER_CHILD == 0) {
                CHECK_OK(tt_stats_get(c, &st, sizeof st));
                bad |= st.emitted != 0 || st.buffered != 0;
                st.emitted = st.acked = 0;
            } else {
                emit_n(c, PER_CHILD, (uint64_t)k);
                rc = tt_close_stats(c, 5000, &st, sizeof st);
            }
            bad |= rc != 0 || st.emitted != PER_CHILD || st.acked != PER_CHILD;
            if (bad) {
                fprintf(stderr, "child %d: rc %d emitted %llu acked %llu buffered %llu\n", k, rc,
                        (unsigned long long)st.emitted, (unsigned long long)st.acked,
                        (unsigned long long)st.buffered);
            }
            uint8_t msg[17];
            memcpy(msg, inst, 16);
            msg[16] = (uint8_t)bad;
            ssize_t w = write(p[1], msg, sizeof msg);
            _exit(w == (ssize_t)sizeof msg ? 0 : 3);
        }
        close(p[1]);
        uint8_t msg[17];
        ssize_t r = read(p[0], msg, sizeof msg);
        close(p[0]);
        int status = 0;
        double t0 = tt_test_now_ms();
        while (waitpid(pid, &status, WNOHANG) != pid) {
            if (tt_test_now_ms() - t0 > 20000 * mult()) {
                kill(pid, SIGKILL);
                tt_test_fail(__FILE__, __LINE__, "child %d deadlocked", k);
            }
            usleep(1000);
        }
        CHECK_MSG(r == 17 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && msg[16] == 0,
                  "child %d: read %zd, status %d, bad %d", k, r, status, r == 17 ? msg[16] : -1);
        memcpy(kids[k], msg, 16);
    }
    atomic_store(&l.stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    tt_stats st;
    CHECK_OK(tt_flush(c, 20000));
    wait_settled(c, 20000, &st);
    struct tt_store_check sc;
    check_client(&s, pinst, &st, &sc);
    CHECK_EQ_U64(sc.events, st.acked);
    for (int k = 0; k < forks; k++) {
        CHECK(memcmp(kids[k], pinst, 16) != 0);
        struct tt_store_check kc;
        tt_test_check_store(s.db, kids[k], &kc);
        /* Exactly the child's own events: none of the parent's ring came along. */
        CHECK_EQ_U64(kc.events, PER_CHILD);
        CHECK_EQ_U64(kc.overlaps, 0);
        CHECK_EQ_U64(kc.max_seq, PER_CHILD);
    }
    /* The children wrote no segment of the parent's: every segment is named after the parent's
     * instance or a child's. */
    char phex[33];
    for (int i = 0; i < 16; i++) {
        snprintf(phex + 2 * i, 3, "%02x", pinst[i]);
    }
    d = opendir(dir);
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        CHECK_MSG(strlen(e->d_name) == 53, "unexpected file %s in the spool", e->d_name);
        int known = !strncmp(e->d_name + 17, phex, 32);
        for (int k = 0; !known && k < forks; k++) {
            char khex[33];
            for (int i = 0; i < 16; i++) {
                snprintf(khex + 2 * i, 3, "%02x", kids[k][i]);
            }
            known = !strncmp(e->d_name + 17, khex, 32);
        }
        CHECK_MSG(known, "segment %s of an unknown instance", e->d_name);
    }
    if (d) {
        closedir(d);
    }
    free(kids);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

/* --- S9: the close deadline ----------------------------------------------------------------- */

struct hole {
    int lfd;
    int port;
    int mode; /* 0 black hole (never accepted), 1 accepted and never read, 2 SYN dropped */
    int held[64];
    int n_held;
    atomic_int stop;
    pthread_t th;
};

static void *hole_accept(void *arg)
{
    struct hole *h = arg;
    while (!atomic_load(&h->stop)) {
        int fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0 && h->n_held < 64) {
            int small = 4096;
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
            h->held[h->n_held++] = fd;
        } else if (fd >= 0) {
            close(fd);
        }
        usleep(1000);
    }
    return NULL;
}

static void hole_open(struct hole *h, int mode)
{
    memset(h, 0, sizeof *h);
    h->mode = mode;
    h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(h->lfd >= 0);
    int small = 4096;
    setsockopt(h->lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(h->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(getsockname(h->lfd, (struct sockaddr *)&a, &len) == 0);
    h->port = ntohs(a.sin_port);
    CHECK(listen(h->lfd, mode == 2 ? 0 : 16) == 0);
    if (mode == 1) {
        CHECK_OK(pthread_create(&h->th, NULL, hole_accept, h));
    }
    if (mode == 2) {
        /* Fill the accept queue: the kernel then drops further SYNs. */
        for (int i = 0; i < 4 && h->n_held < 64; i++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            connect(fd, (struct sockaddr *)&a, sizeof a);
            h->held[h->n_held++] = fd;
        }
        usleep(20000);
    }
}

static void hole_close(struct hole *h)
{
    atomic_store(&h->stop, 1);
    if (h->mode == 1) {
        pthread_join(h->th, NULL);
    }
    for (int i = 0; i < h->n_held; i++) {
        close(h->held[i]);
    }
    close(h->lfd);
}

TEST_T(delivery_s9_close_returns_within_its_deadline_whatever_the_collector_does, 300)
{
    int runs = soak() ? 100 : 21;
    const uint32_t deadline_ms = 200;
    double worst = 0;
    for (int r = 0; r < runs; r++) {
        struct hole h;
        hole_open(&h, r % 3);
        char ep[64], spool[700];
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", h.port);
        snprintf(spool, sizeof spool, "spool_dir=%s/spool%d", tt_test_tmpdir(), r);
        int with_spool = (r / 3) % 2;
        tt_client *c = with_spool ? tt_test_client(ep, "holed", spool, "window_bytes=65536",
                                                   "compression_level=0", NULL)
                                  : tt_test_client(ep, "holed", "window_bytes=65536",
                                                   "compression_level=0", NULL);
        emit_n(c, 5000, (uint64_t)r);
        usleep(100000);
        emit_n(c, 5000, (uint64_t)r + 1000);
        tt_stats st;
        double t0 = tt_test_now_ms();
        int rc = tt_close_stats(c, deadline_ms, &st, sizeof st);
        double took = tt_test_now_ms() - t0;
        worst = took > worst ? took : worst;
        CHECK_MSG(took <= deadline_ms + 100 * mult(),
                  "run %d (mode %d, spool %d): close took "
                  "%.1f ms",
                  r, h.mode, with_spool, took);
        CHECK_EQ(rc, TT_ETIMEDOUT);
        struct tt_store_check none;
        memset(&none, 0, sizeof none);
        tt_test_check_conservation(&st, &none);
        CHECK_EQ_U64(st.acked, 0);
        /* Unsent events are spooled or dropped[shutdown]; sent ones possibly delivered. */
        CHECK_EQ_U64(st.buffered, st.spooled);
        if (!with_spool) {
            CHECK_EQ_U64(st.spooled, 0);
            CHECK(st.dropped[TT_DROP_SHUTDOWN] + st.possibly_delivered > 0);
        } else {
            CHECK(st.spooled > 0);
            CHECK_EQ_U64(st.dropped[TT_DROP_SHUTDOWN], 0);
        }
        hole_close(&h);
    }
    fprintf(stderr, "S9: %d runs, worst close %.1f ms for a %u ms deadline\n", runs, worst,
            deadline_ms);
}

/* --- S12: kill -9 of the agent -------------------------------------------------------------- */

TEST_T(delivery_s12_killed_agents_leave_a_spool_that_always_opens_and_replays_once, 300)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s12", NULL);
    tt_test_serve_stop(&s);
    char spool[700], dir[800];
    snprintf(spool, sizeof spool, "%s/spool", tt_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/spool/killed", tt_test_tmpdir());
    int runs = soak() ? 60 : 8;
    uint8_t(*inst)[16] = calloc((size_t)runs, 16);
    unsigned seed = (unsigned)getpid();
    int torn_runs = 0;
    for (int r = 0; r < runs; r++) {
        int p[2];
        CHECK(pipe(p) == 0);
        int torn = r % 3 == 2;
        torn_runs += torn;
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            if (torn) {
                char f[32];
                snprintf(f, sizeof f, "torn:%d", 3 + r);
                setenv("TT_SPOOL_FAULT", f, 1);
            }
            tt_config *cfg;
            tt_client *c;
            if (tt_config_new(&cfg) || tt_config_set(cfg, "endpoint", s.endpoint) ||
                tt_config_set(cfg, "agent", "killed") || tt_config_set(cfg, "spool_dir", spool) ||
                tt_config_set(cfg, "window_bytes", "65536") ||
                tt_config_set(cfg, "compression_level", "0") ||
                tt_config_set(cfg, "batch_bytes", "8192") || tt_open(&c, cfg)) {
                _exit(2);
            }
            uint8_t id[16];
            tt_instance_id(c, id);
            if (write(p[1], id, 16) != 16) {
                _exit(3);
            }
            for (uint64_t i = 0;; i++) {
                emit_n(c, 200, i);
                usleep(1000);
            }
        }
        close(p[1]);
        CHECK(read(p[0], inst[r], 16) == 16);
        close(p[0]);
        usleep(50000 + (useconds_t)(rand_r(&seed) % 250000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status));
    }
    CHECK(dir_files(dir) > 0);
    tt_test_serve_restart(&s);
    char kv[800];
    snprintf(kv, sizeof kv, "spool_dir=%s", spool);
    tt_client *c = tt_test_client(s.endpoint, "killed", kv, NULL);
    double t0 = tt_test_now_ms();
    while (dir_files(dir) > 0 && tt_test_now_ms() - t0 < 30000 * mult()) {
        usleep(20000);
    }
    CHECK_EQ(dir_files(dir), 0);
    tt_stats st;
    wait_settled(c, 10000, &st);
    CHECK_OK(tt_close_stats(c, 2000, &st, sizeof st));
    struct tt_store_check all;
    memset(&all, 0, sizeof all);
    for (int r = 0; r < runs; r++) {
        struct tt_store_check sc;
        tt_test_check_store(s.db, inst[r], &sc);
        CHECK_EQ_U64(sc.overlaps, 0);
        all.events += sc.events;
        all.decoded += sc.decoded;
    }
    fprintf(stderr, "S12: %d kills (%d torn), inherited %llu, stored %llu, corrupt %llu\n", runs,
            torn_runs, (unsigned long long)st.inherited, (unsigned long long)all.events,
            (unsigned long long)st.dropped[TT_DROP_SPOOL_CORRUPT]);
    tt_test_check_conservation(&st, &all);
    CHECK_EQ_U64(st.emitted, 0);
    CHECK_EQ_U64(st.acked, all.events);
    CHECK(st.inherited > 0);
    CHECK_MSG(st.dropped[TT_DROP_SPOOL_CORRUPT] >= (uint64_t)torn_runs,
              "%d torn writes, %llu counted", torn_runs,
              (unsigned long long)st.dropped[TT_DROP_SPOOL_CORRUPT]);
    /* Nothing is replayed a second time. */
    tt_client *again = tt_test_client(s.endpoint, "killed", kv, NULL);
    usleep(300000);
    CHECK_OK(tt_close_stats(again, 1000, &st, sizeof st));
    CHECK_EQ_U64(st.inherited, 0);
    free(inst);
    tt_test_serve_stop(&s);
}

/* --- S15: kill -9 of the collector while agents emit with the spool on ----------------------- */

struct s15_agent {
    tt_client *c;
    uint8_t inst[16];
    atomic_int stop;
    pthread_t th;
};

static void *s15_emit(void *arg)
{
    struct s15_agent *a = arg;
    uint64_t i = 0;
    while (!atomic_load(&a->stop)) {
        emit_n(a->c, 200, i++);
        usleep(2000);
    }
    return NULL;
}

TEST_T(delivery_s15_collector_killed_repeatedly_stores_every_event_once, 300)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s15", NULL);
    enum { AGENTS = 4 };
    struct s15_agent a[AGENTS];
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    for (int i = 0; i < AGENTS; i++) {
        char name[32];
        snprintf(name, sizeof name, "agent%d", i);
        a[i].c = tt_test_client(s.endpoint, name, spool, "window_bytes=65536", "backoff_min_ms=10",
                                "backoff_max_ms=100", "ack_timeout_ms=1000", NULL);
        tt_instance_id(a[i].c, a[i].inst);
        atomic_store(&a[i].stop, 0);
        CHECK_OK(pthread_create(&a[i].th, NULL, s15_emit, &a[i]));
    }
    int kills = soak() ? 150 : 6;
    double period_ms = soak() ? 2000 : 500;
    for (int k = 0; k < kills; k++) {
        usleep((useconds_t)(period_ms * 1000));
        tt_test_serve_kill(&s);
        usleep(100000);
        tt_test_serve_restart(&s);
    }
    for (int i = 0; i < AGENTS; i++) {
        atomic_store(&a[i].stop, 1);
        pthread_join(a[i].th, NULL);
    }
    for (int i = 0; i < AGENTS; i++) {
        tt_stats st;
        wait_settled(a[i].c, 60000, &st);
        struct tt_store_check sc;
        check_client(&s, a[i].inst, &st, &sc);
        CHECK_EQ_U64(sc.events, st.acked);
        CHECK_EQ_U64(sc.events + st.dropped[TT_DROP_SPOOL_FULL] + st.dropped[TT_DROP_SPOOL_ERROR] +
                         st.dropped[TT_DROP_OOM],
                     st.emitted - st.dropped[TT_DROP_BUFFER_FULL]);
        CHECK_EQ_U64(st.possibly_delivered, 0);
        tt_close(a[i].c, 2000);
    }
    tt_test_serve_stop(&s);
}

/* --- S18: committed, then the connection drops before the ack ------------------------------- */

TEST_T(delivery_s18_lost_ack_is_resent_and_stored_once, 120)
{
    struct tt_test_serve s;
    setenv("TELLTALE_TEST_DROP_ACKS", "3", 1);
    tt_test_serve_start(&s, "s18", NULL);
    unsetenv("TELLTALE_TEST_DROP_ACKS");
    tt_client *c =
        tt_test_client(s.endpoint, "lostack", "backoff_min_ms=10", "backoff_max_ms=50", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    uint64_t n = 0;
    for (int i = 0; i < 5; i++) {
        emit_n(c, 100, (uint64_t)i);
        n += 100;
        CHECK_OK(tt_flush(c, 10000));
    }
    tt_stats st;
    wait_settled(c, 10000, &st);
    CHECK_EQ_U64(st.acked, n);
    CHECK_MSG(st.reconnects >= 3, "reconnects %llu", (unsigned long long)st.reconnects);
    struct tt_store_check sc;
    check_client(&s, inst, &st, &sc);
    CHECK_EQ_U64(sc.events, n);
    CHECK_EQ_U64(sc.gaps, 0);
    /* The agents view: no proven and no reported loss. */
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    CHECK_MSG(strstr(body, "\"loss_gaps\":0") && strstr(body, "\"loss_reported\":0"), "%s", body);
    free(body);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

/* The agents view shows proven loss (gaps) apart from the loss the client reported. */
TEST_T(delivery_agents_api_shows_proven_and_reported_loss, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "lossview", NULL);
    tt_test_serve_stop(&s);
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    tt_client *c = tt_test_client(s.endpoint, "lossy", spool, "spool_max_bytes=65536",
                                  "spool_policy=drop_newest", "window_bytes=65536",
                                  "compression_level=0", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    for (int i = 0; i < 30; i++) {
        emit_n(c, 500, (uint64_t)i);
        usleep(2000);
    }
    usleep(200000);
    tt_test_serve_restart(&s);
    tt_stats st;
    wait_settled(c, 30000, &st);
    /* Events after the reconnection make the dropped ones gaps below the highest stored. */
    emit_n(c, 10, 99);
    wait_settled(c, 30000, &st);
    /* A heartbeat carries the final counters. */
    usleep(1500000);
    CHECK(st.dropped[TT_DROP_SPOOL_FULL] > 0);
    struct tt_store_check sc;
    check_client(&s, inst, &st, &sc);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    char want_gaps[64], want_rep[64];
    snprintf(want_gaps, sizeof want_gaps, "\"loss_gaps\":%llu", (unsigned long long)sc.gaps);
    snprintf(want_rep, sizeof want_rep, "\"loss_reported\":%llu",
             (unsigned long long)st.dropped_total);
    CHECK_MSG(sc.gaps > 0 && strstr(body, want_gaps), "want %s in %s", want_gaps, body);
    CHECK_MSG(strstr(body, want_rep), "want %s in %s", want_rep, body);
    free(body);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

/* The collector states its sync level at startup; on SIGTERM it drains, commits, acks and exits
 * 0 within 10 s while an agent streams, and nothing it acknowledged is missing afterwards. */
TEST_T(delivery_collector_states_sync_level_and_drains_on_sigterm, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "sigterm", NULL);
    FILE *f = fopen(s.log, "r");
    CHECK(f);
    char line[1024];
    int stated = 0;
    while (fgets(line, sizeof line, f)) {
        stated |= strstr(line, "sync=full") && strstr(line, "power failure");
    }
    fclose(f);
    CHECK_MSG(stated, "no sync level in %s", s.log);
    tt_client *c = tt_test_client(s.endpoint, "drained", "backoff_max_ms=100", NULL);
    uint8_t inst[16];
    tt_instance_id(c, inst);
    struct loader l = {c, 0};
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, load, &l));
    usleep(300000);
    double t0 = tt_test_now_ms();
    tt_test_serve_stop(&s); /* fails unless exit status 0 */
    double took = tt_test_now_ms() - t0;
    CHECK_MSG(took < 10000, "SIGTERM drain took %.0f ms", took);
    atomic_store(&l.stop, 1);
    pthread_join(th, NULL);
    tt_stats before;
    CHECK_OK(tt_stats_get(c, &before, sizeof before));
    CHECK(before.acked > 0);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_MSG(sc.events >= before.acked, "acked %llu, stored %llu",
              (unsigned long long)before.acked, (unsigned long long)sc.events);
    tt_test_serve_restart(&s);
    tt_stats st;
    wait_settled(c, 30000, &st);
    check_client(&s, inst, &st, &sc);
    CHECK_EQ_U64(sc.events, st.acked);
    tt_close(c, 2000);
    tt_test_serve_stop(&s);
}

/* --- one thread, two clients ------------------------------------------------------------------ */

/* The count of the collector's events for one agent, session and kind. */
static uint64_t stored_count(const struct tt_test_serve *s, const char *agent, const char *session,
                             const char *kind)
{
    char q[256];
    snprintf(q, sizeof q, "agent=%s&session=%s&kind=%s", agent, session, kind);
    return tt_test_events_count(s->http, q);
}

/* The one-pass writer keeps a thread-local view of the ring it writes (docs/design.md). One
 * thread switching between two clients on every few calls, with one-pass events (short logs
 * and metrics), exact-path ones (strings longer than the one-pass bound) and steps, small rings
 * that wrap often: each client's events reach its own stream, all of them, once. */
TEST_T(delivery_one_thread_two_clients_keep_their_own_streams, 180)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "twocli", NULL);
    static const char *const agent[2] = {"pair-a", "pair-b"}, *const sess[2] = {"sess-a", "sess-b"};
    tt_client *c[2];
    uint8_t inst[2][16];
    for (int i = 0; i < 2; i++) {
        c[i] = tt_test_client(s.endpoint, agent[i], "ring_bytes=524288", NULL);
        tt_instance_id(c[i], inst[i]);
    }
    static char big[3001];
    memset(big, 'y', sizeof big - 1);
    uint64_t events[2] = {0, 0}, logs[2] = {0, 0}, metrics[2] = {0, 0}, steps[2] = {0, 0};
    enum { N = 20000, FLUSH_EVERY = 64 }; /* 64 events of at most ~3 KB fit a 512 KiB ring */
    for (int k = 0; k < N; k++) {
        int i = (k * 7 / 3) & 1; /* runs of one, two and three calls on a client */
        tt_attr a[2] = {TT_INT("k", k), TT_STR("s", k % 5 ? "short" : big)};
        switch (k % 4) {
        case 0:
            CHECK_OK(tt_log(c[i], sess[i], TT_INFO, "hello", a, 2));
            logs[i]++;
            break;
        case 1:
            CHECK_OK(tt_metric(c[i], sess[i], TT_GAUGE, "m", k, "ms", a, 1));
            metrics[i]++;
            break;
        case 2: {
            tt_step st;
            CHECK_OK(tt_step_begin(c[i], &st, NULL, TT_STEP_TOOL, sess[i], "tool", "q"));
            CHECK_OK(tt_step_end(c[i], &st, TT_STATUS_OK, 1, NULL));
            steps[i] += 2;
            events[i]++; /* the begin; the end is counted below */
            break;
        }
        default:
            CHECK_OK(tt_log(c[i], sess[i], TT_WARN, k % 3 ? "x" : big, NULL, 0));
            logs[i]++;
            break;
        }
        events[i]++;
        if (k % FLUSH_EVERY == FLUSH_EVERY - 1) {
            CHECK_OK(tt_flush(c[0], 10000));
            CHECK_OK(tt_flush(c[1], 10000));
        }
    }
    for (int i = 0; i < 2; i++) {
        CHECK_OK(tt_flush(c[i], 20000));
        tt_stats st;
        wait_settled(c[i], 20000, &st);
        CHECK_EQ_U64(st.emitted, events[i]);
        CHECK_EQ_U64(st.acked, events[i]);
        CHECK_EQ_U64(st.dropped_total, 0);
        struct tt_store_check sc;
        check_client(&s, inst[i], &st, &sc);
        CHECK_EQ_U64(sc.events, events[i]);
        CHECK_EQ_U64(sc.decoded, events[i]);
        /* each event in its own client's session, none in the other's */
        CHECK_EQ_U64(stored_count(&s, agent[i], sess[i], "log"), logs[i]);
        CHECK_EQ_U64(stored_count(&s, agent[i], sess[i], "metric"), metrics[i]);
        CHECK_EQ_U64(stored_count(&s, agent[i], sess[i], "step"), steps[i]);
        CHECK_EQ_U64(stored_count(&s, agent[i], sess[1 - i], "log"), 0);
        CHECK_EQ_U64(stored_count(&s, agent[i], sess[1 - i], "metric"), 0);
        tt_close(c[i], 5000);
    }
    tt_test_serve_stop(&s);
}

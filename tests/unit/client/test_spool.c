/*
 * test_spool.c - the disk spool on its own (src/client/spool.c): records written by a process
 * that dies come back to the next one in order, exactly once unless acknowledged; damaged
 * files (random byte flips, truncation) never crash the reader, every record it returns is
 * intact, and what it skips is counted.
 */
#include <fcntl.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/client.h"
#include "client/spool.h"
#include "common/buf.h"
#include "common/wire.h"
#include "test.h"

#define LDS(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* A frame whose payload names its first_seq and n, so a returned frame can be checked. */
static tt__frame_out *frame(uint64_t first, uint32_t n)
{
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof payload; i++) {
        payload[i] = (uint8_t)(first * 31 + i);
    }
    memcpy(payload, &first, 8);
    memcpy(payload + 8, &n, 4);
    tt__buf b;
    tt__buf_init(&b, 4096);
    CHECK_OK(tt__frame_append(&b, TT_FT_BATCH, payload, 100 + (first % 200)));
    tt__frame_out *f = calloc(1, sizeof *f);
    f->data = b.data; /* owned by f now */
    f->len = b.len;
    f->first_seq = first;
    f->n_events = n;
    return f;
}

static void check_payload(const tt__frame_out *f)
{
    uint64_t first;
    uint32_t n;
    tt__frame fr;
    size_t need;
    CHECK_EQ(tt__frame_parse(f->data, f->len, 1u << 20, &fr, &need), TT_FRAME_OK);
    memcpy(&first, fr.payload, 8);
    memcpy(&n, fr.payload + 8, 4);
    CHECK_EQ_U64(first, f->first_seq);
    CHECK_EQ_U64(n, f->n_events);
}

/* In a child: append frames 1..m (n = i % 7 + 1 events each), hand out and ack the first k,
 * then die without closing. */
static void writer(const char *dir, int m, int k, uint64_t cap)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        uint8_t inst[16] = {0xaa, 1};
        struct tt_spool *s;
        tt__wstats ws;
        memset(&ws, 0, sizeof ws);
        if (tt__spool_open(&s, dir, cap, TT_SPOOL_DROP_NEWEST, "unit", inst) != 0) {
            _exit(2);
        }
        tt__spool_bind(s, &ws);
        uint64_t seq = 1;
        for (int i = 0; i < m; i++) {
            tt__frame_out *f = frame(seq, (uint32_t)(i % 7 + 1));
            if (tt__spool_append(s, f) != 0) {
                _exit(3);
            }
            seq += f->n_events;
            tt__frame_out_free(f);
        }
        for (int i = 0; i < k; i++) {
            tt__frame_out *f = tt__spool_next(s);
            if (!f) {
                _exit(4);
            }
            tt__spool_ack(s, f->spool_id);
            tt__frame_out_free(f);
        }
        _exit(0); /* no close: as if killed */
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer status %d", st);
}

struct drained {
    uint64_t frames, events, corrupt, inherited;
};

static struct drained drain(const char *dir, int check_order)
{
    uint8_t inst[16] = {0xbb, 2};
    struct tt_spool *s;
    tt__wstats ws;
    memset(&ws, 0, sizeof ws);
    CHECK_OK(tt__spool_open(&s, dir, 1u << 30, TT_SPOOL_DROP_NEWEST, "unit", inst));
    tt__spool_bind(s, &ws);
    struct drained d = {0, 0, 0, 0};
    uint64_t last = 0;
    tt__frame_out *f;
    while ((f = tt__spool_next(s))) {
        CHECK(f->from_spool && f->spool_foreign);
        check_payload(f);
        if (check_order) {
            CHECK(f->first_seq > last);
        }
        last = f->first_seq;
        d.frames++;
        d.events += f->n_events;
        tt__spool_ack(s, f->spool_id);
        tt__frame_out_free(f);
    }
    d.corrupt = LDS(ws.dropped[TT_DROP_SPOOL_CORRUPT]);
    d.inherited = LDS(ws.inherited);
    CHECK_EQ_U64(LDS(ws.in_spool), 0);
    tt__spool_close(s);
    return d;
}

static uint64_t events_of(int from, int to)
{
    uint64_t n = 0;
    for (int i = from; i < to; i++) {
        n += (uint64_t)(i % 7 + 1);
    }
    return n;
}

TEST(spool_leftovers_come_back_in_order_once_and_acked_records_never)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sp", tt_test_tmpdir());
    /* A small cap makes many segments. */
    writer(dir, 400, 150, 256u << 10);
    struct drained d = drain(dir, 1);
    CHECK_EQ_U64(d.frames, 250);
    CHECK_EQ_U64(d.events, events_of(150, 400));
    CHECK_EQ_U64(d.inherited, d.events);
    CHECK_EQ_U64(d.corrupt, 0);
    /* Everything was acknowledged: nothing is left, nothing comes back. */
    d = drain(dir, 1);
    CHECK_EQ_U64(d.frames, 0);
    CHECK_EQ_U64(d.inherited, 0);
}

static void damage(const char *dir, unsigned *seed)
{
    DIR *dd = opendir(dir);
    CHECK(dd);
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        int fd = open(p, O_RDWR);
        CHECK(fd >= 0);
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        int what = rand_r(seed) % 4;
        if (what == 0 && st.st_size > 1) {
            CHECK(ftruncate(fd, rand_r(seed) % st.st_size) == 0);
        } else {
            for (int i = 0; i < 1 + rand_r(seed) % 8 && st.st_size > 0; i++) {
                uint8_t b = (uint8_t)rand_r(seed);
                off_t off = rand_r(seed) % st.st_size;
                CHECK(pwrite(fd, &b, 1, off) == 1);
            }
        }
        close(fd);
    }
    closedir(dd);
}

TEST_T(spool_random_damage_never_crashes_and_every_returned_record_is_intact, 120)
{
    unsigned seed = 12345;
    int rounds = getenv("TT_SOAK") ? 2000 : 150;
    uint64_t total_corrupt = 0;
    for (int r = 0; r < rounds; r++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/r%d", tt_test_tmpdir(), r);
        writer(dir, 60, 0, 64u << 10);
        char agent[700];
        snprintf(agent, sizeof agent, "%s/unit", dir);
        damage(agent, &seed);
        struct drained d = drain(agent[0] ? dir : dir, 0);
        /* Every event is returned intact or counted (a damaged header counts as one). */
        CHECK_EQ_U64(d.inherited, d.events + d.corrupt);
        CHECK(d.events <= events_of(0, 60));
        total_corrupt += d.corrupt;
        /* The spool opens again afterwards, empty. */
        d = drain(dir, 0);
        CHECK_EQ_U64(d.frames, 0);
    }
    CHECK(total_corrupt > 0);
}

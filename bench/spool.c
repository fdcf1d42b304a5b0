/*
 * spool.c - the disk spool's write and replay throughput against a raw sequential write and read
 * of the same bytes, in the same directory (same filesystem), in the same run.
 *
 * Write: TOTAL bytes of 64 KiB frames appended with tt__spool_append, then tt__spool_sync;
 * baseline: the same bytes written with write(2) to one file, then one fdatasync. The spool's
 * extra work is its record headers, two CRC-32C passes, segment rotation and its per-segment
 * fdatasync.
 * Replay: every record read back, checked and acknowledged (tt__spool_next + tt__spool_ack);
 * baseline: the raw file read back with read(2). Both from the page cache.
 *
 * Medians of RUNS runs. Usage: spool [DIR] (default: build/bench-tmp, or $TT_BENCH_DIR).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"
#include "client/spool.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/wire.h"

#define FRAME (64u << 10)
#define TOTAL (128ull << 20)
#define RUNS 5

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

static void emit(const char *metric, double value, const char *baseline, double base,
                 const char *note)
{
    printf("{\"bench\":\"spool\",\"metric\":\"%s\",\"value\":%.1f,\"unit\":\"MB/s\","
           "\"baseline\":\"%s\",\"baseline_value\":%.1f,\"ratio\":%.3f,"
           "\"note\":\"%s %.1f MB/s; %s\"}\n",
           metric, value, baseline, base, value / base, baseline, base, note);
    fflush(stdout);
}

static double mbps(uint64_t bytes, uint64_t ns)
{
    return (double)bytes / 1e6 / ((double)ns / 1e9);
}

static void rm_tree(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", dir);
    }
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 ? argv[1] : getenv("TT_BENCH_DIR");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/spool-bench-%d", root ? root : "build/bench-tmp", (int)getpid());
    if (!root) {
        mkdir("build/bench-tmp", 0700);
    }
    if (mkdir(dir, 0700) != 0) {
        fprintf(stderr, "spool: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    tt__clock_init();
    uint8_t *payload = malloc(FRAME);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < FRAME; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        payload[i] = (uint8_t)x;
    }
    /* A real frame (prefix with length and CRC-32C, body header, payload) of FRAME bytes. */
    tt__buf fb;
    tt__buf_init(&fb, 2 * FRAME);
    if (tt__frame_append(&fb, TT_FT_BATCH, payload, FRAME - 64) != 0) {
        fprintf(stderr, "spool: cannot build a frame\n");
        return 1;
    }
    tt__frame_out f;
    memset(&f, 0, sizeof f);
    f.data = fb.data;
    f.len = fb.len;
    f.n_events = 512;
    double w_spool[RUNS], w_raw[RUNS], r_spool[RUNS], r_raw[RUNS];
    for (int run = 0; run < RUNS; run++) {
        /* raw write */
        char raw[1100];
        snprintf(raw, sizeof raw, "%s/raw", dir);
        int fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        uint64_t t0 = tt__mono_ns();
        for (uint64_t done = 0; done < TOTAL; done += FRAME) {
            if (write(fd, payload, FRAME) != (ssize_t)FRAME) {
                fprintf(stderr, "spool: raw write failed\n");
                return 1;
            }
        }
        fdatasync(fd);
        w_raw[run] = mbps(TOTAL, tt__mono_ns() - t0);
        close(fd);
        /* raw read */
        fd = open(raw, O_RDONLY | O_CLOEXEC);
        uint8_t *buf = malloc(FRAME);
        t0 = tt__mono_ns();
        while (read(fd, buf, FRAME) > 0) {
        }
        r_raw[run] = mbps(TOTAL, tt__mono_ns() - t0);
        close(fd);
        free(buf);
        unlink(raw);
        /* spool write */
        struct tt_spool *s;
        uint8_t inst[16] = {1, 2, 3};
        inst[15] = (uint8_t)run;
        tt__wstats ws;
        memset(&ws, 0, sizeof ws);
        int rc = tt__spool_open(&s, dir, 4ull << 30, TT_SPOOL_DROP_NEWEST, "bench", inst);
        if (rc != 0) {
            fprintf(stderr, "spool: open failed: %d\n", rc);
            return 1;
        }
        tt__spool_bind(s, &ws);
        t0 = tt__mono_ns();
        for (uint64_t done = 0; done < TOTAL; done += f.len) {
            if (tt__spool_append(s, &f) != 0) {
                fprintf(stderr, "spool: append failed\n");
                return 1;
            }
        }
        tt__spool_sync(s);
        uint64_t written = (TOTAL + f.len - 1) / f.len * f.len;
        w_spool[run] = mbps(written, tt__mono_ns() - t0);
        /* spool replay */
        uint64_t bytes = 0;
        t0 = tt__mono_ns();
        tt__frame_out *g;
        while ((g = tt__spool_next(s))) {
            bytes += g->len;
            tt__spool_ack(s, g->spool_id);
            tt__frame_out_free(g);
        }
        r_spool[run] = mbps(bytes, tt__mono_ns() - t0);
        if (bytes != written) {
            fprintf(stderr, "spool: replayed %llu of %llu bytes\n", (unsigned long long)bytes,
                    (unsigned long long)written);
            return 1;
        }
        tt__spool_close(s);
    }
    char note_w[256], note_r[256];
    snprintf(note_w, sizeof note_w,
             "appends + fdatasync vs write(2) + fdatasync of the same "
             "bytes, same directory; median of %d runs, %llu MiB in 64 KiB frames (goal >= 0.8)",
             RUNS, (unsigned long long)(TOTAL >> 20));
    snprintf(note_r, sizeof note_r,
             "read, check and ack every record vs read(2), page cache; "
             "median of %d runs (the worker replays at most 32 MiB/s)",
             RUNS);
    emit("write_throughput", median(w_spool, RUNS), "raw_write", median(w_raw, RUNS), note_w);
    emit("replay_throughput", median(r_spool, RUNS), "raw_read", median(r_raw, RUNS), note_r);
    free(payload);
    tt__buf_fini(&fb);
    rm_tree(dir);
    return 0;
}

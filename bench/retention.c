/*
 * retention.c - ingest latency of a real `telltale serve` with retention at work, against the
 * same collector without retention, in the same run (issue 13: "ingest p99 within 2x of no
 * retention").
 *
 *   retention [--smoke] [--runs N] [--seconds S] [--rate BATCHES_PER_S] [--events N]
 *
 * Each run starts two collectors in turn (the order alternates between runs), sync=full:
 *   without   no retention options;
 *   with      --retain 1h --max-bytes 4M.
 * Both get the same prefill: 3 MiB of batches whose events reach the age limit one after the
 * other during the measurement (stamped from 1 h ago to 1 h ago plus the measurement's length),
 * and the measured batches fill the rest of the size limit within a second or two, so that
 * with retention the collector prunes by age and by size during the whole measurement. Then one agent (a hand-made connection on the
 * Unix socket) sends batches of N log events stamped now at a paced rate and waits for each
 * acknowledgement: the latency of a batch is from its write to its ack, what an agent's window
 * sees. Per run: p50 and p99; the figures are the medians over the runs, and the ratio
 * with / without. The note says how many batches retention removed during the measurement.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include "common/buf.h"
#include "common/pb.h"
#include "common/wire.h"
#include "pipeline_util.h"

#define MAX_RUNS 15

struct opts {
    int runs;
    double seconds;
    double rate;
    int events;
    int smoke;
};

struct agent {
    int fd;
    uint8_t inst[16];
    uint64_t seq;
    uint64_t rng;
    uint8_t rbuf[1 << 16];
    size_t rn;
};

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The next frame's type (blocking), or -1 when the collector closed. */
static int read_frame(struct agent *a)
{
    for (;;) {
        tt__frame f;
        size_t need;
        int rc = tt__frame_parse(a->rbuf, a->rn, sizeof a->rbuf, &f, &need);
        if (rc == TT_FRAME_OK) {
            size_t used = f.frame_len;
            int type = f.type;
            memmove(a->rbuf, a->rbuf + used, a->rn - used);
            a->rn -= used;
            return type;
        }
        if (rc != TT_FRAME_NEED_MORE) {
            return -1;
        }
        ssize_t k = read(a->fd, a->rbuf + a->rn, sizeof a->rbuf - a->rn);
        if (k <= 0) {
            return -1;
        }
        a->rn += (size_t)k;
    }
}

static int agent_open(struct agent *a, const struct bu_collector *c, const char *name, int k)
{
    memset(a, 0, sizeof *a);
    a->seq = 1;
    a->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)k;
    for (int i = 0; i < 16; i++) {
        a->inst[i] = (uint8_t)(0x40 + i + 16 * k);
    }
    a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s", c->unix_ep + 5);
    if (a->fd < 0 || connect(a->fd, (struct sockaddr *)&un, sizeof un) != 0) {
        return -1;
    }
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memcpy(h.instance, a->inst, 16);
    snprintf(h.agent, sizeof h.agent, "%s", name);
    snprintf(h.library, sizeof h.library, "bench");
    tt__buf p, f;
    tt__buf_init(&p, 1 << 16);
    tt__buf_init(&f, 1 << 16);
    int ok = tt__hello_encode(&h, &p) == 0 &&
             tt__frame_append(&f, TT_FT_HELLO, p.data, p.len) == 0 &&
             write(a->fd, f.data, f.len) == (ssize_t)f.len && read_frame(a) == TT_FT_HELLO_REPLY;
    tt__buf_fini(&p);
    tt__buf_fini(&f);
    return ok ? 0 : -1;
}

/* A Batch frame of n log events at time t (Unix ns), session "s-<seq/10000>", lines of random
 * words (they compress about as real logs do). */
static void batch_frame(struct agent *a, tt__buf *frame, int n, uint64_t t)
{
    tt__buf payload;
    tt__buf_init(&payload, 1u << 22);
    uint8_t head[64], *p;
    p = tt__pb_put_bytes(head, 1, a->inst, 16);
    p = tt__pb_put_uint(p, 2, a->seq);
    p = tt__pb_put_fixed64(p, 3, t);
    tt__buf_append(&payload, head, (size_t)(p - head));
    char session[32];
    int sn = snprintf(session, sizeof session, "s-%llu", (unsigned long long)(a->seq / 10000));
    for (int i = 0; i < n; i++) {
        char text[96];
        int tn = 0;
        for (int w = 0; w < 5; w++) {
            a->rng ^= a->rng << 13;
            a->rng ^= a->rng >> 7;
            a->rng ^= a->rng << 17;
            tn += snprintf(text + tn, sizeof text - (size_t)tn, "w%04x ",
                           (unsigned)(a->rng & 0xffff));
        }
        uint8_t log[128], ev[192], one[200];
        p = tt__pb_put_uint(log, 1, 9);
        p = tt__pb_put_bytes(p, 2, text, (size_t)tn);
        size_t ln = (size_t)(p - log);
        p = tt__pb_put_sint(ev, 1, i);
        p = tt__pb_put_bytes(p, 2, session, (size_t)sn);
        p = tt__pb_put_bytes(p, 3, log, ln);
        size_t en = (size_t)(p - ev);
        p = tt__pb_put_bytes(one, 4, ev, en);
        tt__buf_append(&payload, one, (size_t)(p - one));
    }
    a->seq += (uint64_t)n;
    tt__buf_reset(frame);
    tt__frame_append(frame, TT_FT_BATCH, payload.data, payload.len);
    tt__buf_fini(&payload);
}

/* Send a batch and wait for its ack; the latency in ms, or -1. */
static double send_one(struct agent *a, tt__buf *frame, int n, uint64_t t)
{
    batch_frame(a, frame, n, t);
    uint64_t t0 = bu_now_ns();
    if (write(a->fd, frame->data, frame->len) != (ssize_t)frame->len) {
        return -1;
    }
    int type = read_frame(a);
    return type == TT_FT_ACK ? (double)(bu_now_ns() - t0) / 1e6 : -1;
}

static int64_t status_pruned(const struct bu_collector *c)
{
    char body[1 << 16];
    if (bu_http_get(c, "/api/v1/status", body, sizeof body) < 0) {
        return -1;
    }
    const char *r = strstr(body, "\"retention\"");
    const char *b = r ? strstr(r, "\"batches\":") : NULL;
    return b ? strtoll(b + 10, NULL, 10) : -1;
}

/* One collector: prefill, then the paced measurement. p50/p99 in ms into out[0..1]; the
 * batches retention removed during the measurement into *pruned. 0 or -1. */
static int one_run(const struct opts *o, int with, double out[2], int64_t *pruned)
{
    char dir[300];
    if (bu_tmpdir(dir, sizeof dir, with ? "retain-on" : "retain-off") != 0) {
        return -1;
    }
    static const char *const on[] = {"--retain", "1h", "--max-bytes", "4M", NULL};
    struct bu_collector c;
    if (bu_collector_start(&c, dir, "full", 1, with ? on : NULL) != 0) {
        bu_rmtree(dir);
        return -1;
    }
    struct agent fill, a;
    tt__buf frame;
    tt__buf_init(&frame, 1u << 22);
    int rc =
        agent_open(&fill, &c, "bench-fill", 0) == 0 && agent_open(&a, &c, "bench-ingest", 1) == 0
            ? 0
            : -1;
    /* Prefill: 60 batches stamped so that they pass the 1 h horizon one by one while the
     * measurement runs (a few seconds for the prefill itself are added). */
    uint64_t hour = 3600ull * 1000000000ull, t_fill = wall_ns();
    uint64_t span = (uint64_t)((o->seconds + 4) * 1e9);
    for (int i = 0; rc == 0 && i < 60; i++) {
        uint64_t t = t_fill - hour + 2000000000ull + span * (uint64_t)i / 60;
        rc = send_one(&fill, &frame, 1000, t) < 0 ? -1 : 0;
    }
    int64_t before = status_pruned(&c);
    size_t cap = (size_t)(o->seconds * o->rate) + 16, n = 0;
    double *lat = calloc(cap, sizeof *lat);
    uint64_t period = (uint64_t)(1e9 / o->rate);
    uint64_t start = bu_now_ns(), next = start;
    while (rc == 0 && lat && n < cap && bu_now_ns() - start < (uint64_t)(o->seconds * 1e9)) {
        uint64_t now = bu_now_ns();
        if (now < next) {
            bu_sleep_ns(next - now);
        }
        next += period;
        double ms = send_one(&a, &frame, o->events, wall_ns());
        if (ms < 0) {
            rc = -1;
            break;
        }
        lat[n++] = ms;
    }
    *pruned = status_pruned(&c) - before;
    if (rc == 0 && n > 10) {
        qsort(lat, n, sizeof *lat, bu_cmp_double);
        out[0] = bu_quantile_sorted(lat, n, 0.50);
        out[1] = bu_quantile_sorted(lat, n, 0.99);
    } else {
        rc = -1;
    }
    free(lat);
    tt__buf_fini(&frame);
    close(fill.fd);
    close(a.fd);
    bu_collector_stop(&c, 0);
    bu_rmtree(dir);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o = {.runs = 5, .seconds = 10, .rate = 100, .events = 200};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke")) {
            o.smoke = 1;
            o.runs = 1;
            o.seconds = 2;
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
            o.runs = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            o.seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--rate") && i + 1 < argc) {
            o.rate = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--events") && i + 1 < argc) {
            o.events = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: retention [--smoke] [--runs N] [--seconds S] [--rate R] "
                            "[--events N]\n");
            return 2;
        }
    }
    if (o.runs < 1 || o.runs > MAX_RUNS || !(o.seconds > 0) || !(o.rate > 0) || o.events < 1) {
        fprintf(stderr, "retention: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bu_mark_start();
    double p50[2][MAX_RUNS], p99[2][MAX_RUNS];
    int64_t pruned_total = 0;
    for (int r = 0; r < o.runs; r++) {
        for (int k = 0; k < 2; k++) {
            int with = (r + k) % 2; /* alternate which goes first */
            double q[2];
            int64_t pruned = 0;
            if (one_run(&o, with, q, &pruned) != 0) {
                fprintf(stderr, "retention: run %d (%s retention) failed\n", r,
                        with ? "with" : "without");
                return 1;
            }
            p50[with][r] = q[0];
            p99[with][r] = q[1];
            if (with) {
                pruned_total += pruned;
            }
            fprintf(stderr, "run %d %s: p50 %.3f ms, p99 %.3f ms, pruned %lld batches\n", r,
                    with ? "with" : "without", q[0], q[1], (long long)pruned);
        }
    }
    double on50 = bu_median(p50[1], (size_t)o.runs), off50 = bu_median(p50[0], (size_t)o.runs);
    double on99 = bu_median(p99[1], (size_t)o.runs), off99 = bu_median(p99[0], (size_t)o.runs);
    char note[300];
    snprintf(note, sizeof note,
             "%d runs x %.0f s, %.0f batches/s of %d events, sync=full; with: --retain 1h "
             "--max-bytes 4M, a prefill aging out while measured, %lld batches removed "
             "while measured",
             o.runs, o.seconds, o.rate, o.events, (long long)pruned_total);
    bu_result("retention", "ingest_ack_p99_with_retention", on99, "ms", "without retention",
              off99 > 0 ? on99 / off99 : 0, note);
    bu_result("retention", "ingest_ack_p50_with_retention", on50, "ms", "without retention",
              off50 > 0 ? on50 / off50 : 0, NULL);
    bu_result("retention", "ingest_ack_p99_without_retention", off99, "ms", NULL, 0, NULL);
    return pruned_total > 0 ? 0 : 1;
}

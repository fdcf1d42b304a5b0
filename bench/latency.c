/*
 * latency.c - time from the emit call to the event's arrival at a live-stream subscriber
 * (GET /api/v1/stream, server-sent events) of a real `telltale serve`, at paced rates.
 *
 *   latency [--smoke] [--runs N] [--seconds S] [--rates 10000,100000] [--sync LEVEL]
 *           [--flush-ms MS] [--transport unix|tcp]
 *
 * One emitter thread calls tt_log at the given rate (paced against CLOCK_MONOTONIC in ticks of
 * about 50 us), putting the CLOCK_MONOTONIC nanoseconds of the call into the attribute "t0". A
 * subscriber thread in the same process reads the stream over a plain HTTP/1.0 socket and, for
 * every data line, subtracts its "t0" from the same clock read when the bytes arrived. The
 * first 10% of each run is warm-up and not counted. Per rate: p50, p99, p99.9 and the maximum,
 * medians over the runs; events that never arrived are reported as lost. The baseline is the
 * client's flush interval (the age at which a batch is sent): no event can be seen earlier on
 * average than about half of it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "pipeline_util.h"

#define MAX_RUNS 15

struct opts {
    int runs;
    double seconds;
    long rates[4];
    int n_rates;
    const char *sync;
    const char *flush_ms;
    const char *transport;
    int smoke;
};

struct sub {
    pthread_t th;
    int fd;
    atomic_int stop;
    uint64_t t_warm; /* emit times before this are warm-up */
    double *lat;     /* microseconds */
    size_t n, cap;
    uint64_t seen; /* every event that arrived */
    atomic_uint_least64_t seen_pub;
};

static int sub_connect(const struct bu_collector *col)
{
    int fd = bu_tcp_connect(col->http);
    if (fd < 0) {
        return -1;
    }
    char req[512];
    int len = snprintf(req, sizeof req,
                       "GET /api/v1/stream?agent=bench-latency HTTP/1.0\r\n"
                       "Host: %s\r\nAuthorization: Bearer %s\r\n"
                       "Accept: text/event-stream\r\n\r\n",
                       col->http, col->token);
    if (write(fd, req, (size_t)len) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* One complete line of the stream. */
static void sub_line(struct sub *s, const char *line, size_t n, uint64_t now)
{
    static const char key[] = "\"t0\":";
    if (n < 6 || memcmp(line, "data:", 5) != 0) {
        return;
    }
    const char *p = memmem(line, n, key, sizeof key - 1);
    if (!p) {
        return;
    }
    uint64_t t0 = strtoull(p + sizeof key - 1, NULL, 10);
    s->seen++;
    if (t0 < s->t_warm || t0 > now) {
        return;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        double *nl = realloc(s->lat, cap * sizeof *nl);
        if (!nl) {
            return;
        }
        s->lat = nl;
        s->cap = cap;
    }
    s->lat[s->n++] = (double)(now - t0) / 1e3;
}

static void *sub_main(void *arg)
{
    struct sub *s = arg;
    size_t cap = 1u << 20, len = 0;
    char *buf = malloc(cap);
    while (buf && !atomic_load(&s->stop)) {
        ssize_t k = read(s->fd, buf + len, cap - len - 1);
        if (k == 0) {
            break;
        }
        if (k < 0) {
            continue; /* the receive timeout: look at stop again */
        }
        uint64_t now = bu_now_ns();
        len += (size_t)k;
        size_t off = 0;
        for (;;) {
            char *nl = memchr(buf + off, '\n', len - off);
            if (!nl) {
                break;
            }
            sub_line(s, buf + off, (size_t)(nl - (buf + off)), now);
            off = (size_t)(nl - buf) + 1;
        }
        memmove(buf, buf + off, len - off);
        len -= off;
        if (len >= cap - 1) {
            len = 0; /* a line longer than 1 MiB is nothing of ours */
        }
        atomic_store(&s->seen_pub, s->seen);
    }
    free(buf);
    return NULL;
}

/* Emit at rate for seconds; returns the number emitted (accepted). */
static uint64_t emit_paced(tt_client *c, long rate, double seconds)
{
    uint64_t start = bu_now_ns(), dur = (uint64_t)(seconds * 1e9), done = 0;
    for (;;) {
        uint64_t now = bu_now_ns();
        if (now - start >= dur) {
            break;
        }
        uint64_t due = (uint64_t)((double)(now - start) * (double)rate / 1e9);
        while (done < due) {
            tt_attr a[2] = {TT_INT("t0", (int64_t)bu_now_ns()), TT_INT("i", (int64_t)done)};
            if (tt_log(c, "lat", TT_INFO, "paced event", a, 2) == 0) {
                done++;
            } else {
                done++; /* a drop counts as emitted; the subscriber reports it as lost */
            }
        }
        bu_sleep_ns(50000);
    }
    return done;
}

struct run_result {
    double p50, p99, p999, max;
    double lost;
};

static int one_run(const struct opts *o, const struct bu_collector *col, long rate,
                   struct run_result *rr)
{
    struct sub s;
    memset(&s, 0, sizeof s);
    s.fd = sub_connect(col);
    if (s.fd < 0) {
        fprintf(stderr, "latency: cannot connect to the stream at %s\n", col->http);
        return -1;
    }
    tt_client *c = NULL;
    const char *extra[] = {"flush_interval_ms", o->flush_ms, NULL};
    const char *ep = strcmp(o->transport, "tcp") == 0 ? col->tcp_ep : col->unix_ep;
    int rc = bu_client_open(&c, ep, "bench-latency", extra);
    if (rc != 0 || bu_wait_connected(&c, 1, 20000) != 0) {
        fprintf(stderr, "latency: client: %s\n", tt_strerror(rc));
        tt_close(c, 1000);
        close(s.fd);
        return -1;
    }
    s.t_warm = UINT64_MAX;
    pthread_create(&s.th, NULL, sub_main, &s);
    bu_sleep_ns(100000000); /* let the subscription settle */
    uint64_t t = bu_now_ns();
    s.t_warm = t + (uint64_t)(o->seconds * 0.1e9);
    uint64_t seen0 = atomic_load(&s.seen_pub);
    uint64_t emitted = emit_paced(c, rate, o->seconds);
    tt_flush(c, 10000);
    /* Wait for the stream to catch up (at most 3 s). */
    for (int i = 0; i < 300 && atomic_load(&s.seen_pub) - seen0 < emitted; i++) {
        bu_sleep_ns(10000000);
    }
    atomic_store(&s.stop, 1);
    pthread_join(s.th, NULL);
    close(s.fd);
    tt_close(c, 5000);
    qsort(s.lat, s.n, sizeof *s.lat, bu_cmp_double);
    rr->p50 = bu_quantile_sorted(s.lat, s.n, 0.50);
    rr->p99 = bu_quantile_sorted(s.lat, s.n, 0.99);
    rr->p999 = bu_quantile_sorted(s.lat, s.n, 0.999);
    rr->max = s.n ? s.lat[s.n - 1] : 0;
    rr->lost = emitted > s.seen - seen0 ? (double)(emitted - (s.seen - seen0)) : 0;
    free(s.lat);
    return s.n ? 0 : -1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.runs = 3,
                       .seconds = 1.5,
                       .rates = {10000, 100000},
                       .n_rates = 2,
                       .sync = "full",
                       .flush_ms = "5",
                       .transport = "unix"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--smoke") == 0) {
            o->smoke = 1;
            o->runs = 1;
            o->seconds = 0.3;
            o->rates[0] = 2000;
            o->n_rates = 1;
            continue;
        }
        if (!v) {
            return -1;
        }
        i++;
        if (strcmp(a, "--runs") == 0) {
            o->runs = (int)strtol(v, NULL, 10);
        } else if (strcmp(a, "--seconds") == 0) {
            o->seconds = strtod(v, NULL);
        } else if (strcmp(a, "--sync") == 0) {
            o->sync = v;
        } else if (strcmp(a, "--flush-ms") == 0) {
            o->flush_ms = v;
        } else if (strcmp(a, "--transport") == 0) {
            o->transport = v;
        } else if (strcmp(a, "--rates") == 0) {
            o->n_rates = 0;
            for (char *p = (char *)v; *p && o->n_rates < 4;) {
                char *end;
                long r = strtol(p, &end, 10);
                if (end == p || r < 1 || r > 10000000) {
                    return -1;
                }
                o->rates[o->n_rates++] = r;
                p = *end == ',' ? end + 1 : end;
            }
        } else {
            return -1;
        }
    }
    return o->runs >= 1 && o->runs <= MAX_RUNS && o->seconds > 0 && o->seconds <= 600 &&
                   o->n_rates > 0
               ? 0
               : -1;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: latency [--smoke] [--runs N] [--seconds S] [--rates R,R] "
                        "[--sync LEVEL] [--flush-ms MS] [--transport unix|tcp]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bu_mark_start();
    char dir[256];
    struct bu_collector col;
    if (bu_tmpdir(dir, sizeof dir, "latency") != 0 ||
        bu_collector_start(&col, dir, o.sync, 1, NULL) != 0) {
        return 1;
    }
    int status = 0;
    double flush = strtod(o.flush_ms, NULL) * 1e3;
    for (int k = 0; k < o.n_rates; k++) {
        double p50[MAX_RUNS], p99[MAX_RUNS], p999[MAX_RUNS], mx[MAX_RUNS], lost[MAX_RUNS];
        int n = 0;
        for (int r = 0; r < o.runs; r++) {
            struct run_result rr;
            if (one_run(&o, &col, o.rates[k], &rr) == 0) {
                p50[n] = rr.p50;
                p99[n] = rr.p99;
                p999[n] = rr.p999;
                mx[n] = rr.max;
                lost[n++] = rr.lost;
            }
        }
        if (n == 0) {
            fprintf(stderr, "latency: no run at %ld events/s succeeded\n", o.rates[k]);
            status = 1;
            continue;
        }
        char m[96], note[256];
        snprintf(note, sizeof note,
                 "emit -> SSE subscriber, %ld ev/s paced, %s, sync=%s, flush_interval_ms=%s, "
                 "median of %d x %.1f s; lost %.0f",
                 o.rates[k], o.transport, o.sync, o.flush_ms, n, o.seconds,
                 bu_median(lost, (size_t)n));
        const char *names[4] = {"p50", "p99", "p99_9", "max"};
        double *vals[4] = {p50, p99, p999, mx};
        for (int q = 0; q < 4; q++) {
            double v = bu_median(vals[q], (size_t)n);
            snprintf(m, sizeof m, "%ldk_%s", o.rates[k] / 1000, names[q]);
            bu_result("latency", m, v, "us", "flush_interval", flush > 0 ? v / flush : 0,
                      q == 1 ? note : NULL);
        }
    }
    bu_collector_stop(&col, 0);
    bu_rmtree(dir);
    return status;
}

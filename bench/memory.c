/*
 * memory.c - memory of both ends under stress, against a real `telltale serve`.
 *
 *   memory [--smoke] [--runs N] [--outage-s S] [--agents N] [--rate EV_PER_S]
 *
 * Client during a long collector outage: a child process opens one client (ring_bytes 1 MiB,
 * window_bytes 4 MiB, batch_bytes 256 KiB), connects, emits at a steady paced rate, and the
 * collector is killed (SIGKILL, not restarted) a quarter of the way in; the child samples its
 * own VmRSS every 50 ms. Reported: the growth of RSS from just before the outage to its peak,
 * against the configured budget (ring + window + two batches + spool write buffer), and the
 * drift over the second half of the outage (flat means it stopped growing). Once without a
 * spool and once with spool_dir and spool_max_bytes 64 MiB (when the build's spool opens).
 *
 * Collector with many agents: N clients (default 1,000) in this process, each its own worker
 * and connection, each sending a few events and flushing; the collector's VmRSS and VmHWM
 * then, against its RSS with no agent (the baseline) and the 256 MiB goal. RLIMIT_NOFILE is
 * raised within the hard limit first (the collector inherits it).
 *
 * TT_BENCH_DEBUG=1 makes the outage child print its client's counters to stderr.
 */
#include <pthread.h>
#include <sys/resource.h>

#include "pipeline_util.h"

#define MAX_RUNS 15
#define RING_BYTES (1u << 20)
#define WINDOW_BYTES (4u << 20)
#define BATCH_BYTES (256u << 10)
#define SPOOL_MAX "67108864"

struct opts {
    int runs;
    double outage_s;
    int agents;
    long rate;
    int smoke;
};

struct outage_result {
    double growth_kib; /* peak RSS during the outage - RSS just before it */
    double drift_kib;  /* RSS at the end - RSS at the middle of the outage */
    double peak_kib;
    double spooled; /* events in the spool at the end of the outage */
    double dropped; /* events dropped by then */
    int spool_ok;
};

/* The child: emit paced for total seconds; the parent kills the collector at total/4. Writes
 * "before peak mid end spool_ok" to fd. */
static int outage_child(const char *endpoint, const char *spool_dir, long rate, double total,
                        int fd)
{
    char ring[32], window[32], batch[32];
    snprintf(ring, sizeof ring, "%u", RING_BYTES);
    snprintf(window, sizeof window, "%u", WINDOW_BYTES);
    snprintf(batch, sizeof batch, "%u", BATCH_BYTES);
    const char *extra[] = {"ring_bytes",
                           ring,
                           "window_bytes",
                           window,
                           "batch_bytes",
                           batch,
                           "backoff_max_ms",
                           "200",
                           spool_dir ? "spool_dir" : NULL,
                           spool_dir,
                           "spool_max_bytes",
                           SPOOL_MAX,
                           NULL};
    tt_client *c = NULL;
    int spool_ok = 1;
    if (bu_client_open(&c, endpoint, "bench-memory", extra) != 0) {
        if (!spool_dir) {
            return 1;
        }
        spool_ok = 0;
        extra[8] = NULL;
        if (bu_client_open(&c, endpoint, "bench-memory", extra) != 0) {
            return 1;
        }
    }
    bu_wait_connected(&c, 1, 10000);
    uint64_t start = bu_now_ns(), dur = (uint64_t)(total * 1e9), done = 0, next_sample = 0;
    uint64_t t_out = start + dur / 4, t_mid = t_out + (dur - dur / 4) / 2;
    uint64_t before = 0, peak = 0, mid = 0, end = 0, x = 42;
    char pad[96];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = 0;
    for (;;) {
        uint64_t now = bu_now_ns();
        if (now - start >= dur) {
            break;
        }
        uint64_t due = (uint64_t)((double)(now - start) * (double)rate / 1e9);
        for (; done < due; done++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            tt_attr a[3] = {TT_INT("i", (int64_t)done), TT_STR("pad", pad + (x >> 60)),
                            TT_DOUBLE("v", (double)(x >> 11) * 0x1p-53)};
            tt_log(c, "outage", TT_INFO, "an event during the outage", a, 3);
        }
        if (now >= next_sample) {
            uint64_t rss = bu_proc_status_kib(0, "VmRSS");
            if (now < t_out) {
                before = rss;
            } else {
                peak = rss > peak ? rss : peak;
                if (now >= t_mid && !mid) {
                    mid = rss;
                }
                end = rss;
            }
            next_sample = now + 50000000;
        }
        bu_sleep_ns(200000);
    }
    if (getenv("TT_BENCH_DEBUG")) {
        tt_stats st;
        tt_stats_get(c, &st, sizeof st);
        fprintf(stderr, "memory: emitted %llu buffered %llu dropped %llu sent %llu frames %llu\n",
                (unsigned long long)st.emitted, (unsigned long long)st.buffered,
                (unsigned long long)st.dropped_total, (unsigned long long)st.sent,
                (unsigned long long)st.frames_sent);
    }
    tt_stats fin;
    tt_stats_get(c, &fin, sizeof fin);
    char line[200];
    int n = snprintf(line, sizeof line, "%llu %llu %llu %llu %d %llu %llu\n",
                     (unsigned long long)before, (unsigned long long)peak, (unsigned long long)mid,
                     (unsigned long long)end, spool_ok, (unsigned long long)fin.spooled,
                     (unsigned long long)fin.dropped_total);
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    _exit(0); /* the collector is gone: no close deadline to wait out */
}

static int outage_run(const struct opts *o, int with_spool, struct outage_result *res)
{
    char dir[256], data[300], spool[300];
    if (bu_tmpdir(dir, sizeof dir, "memory") != 0) {
        return -1;
    }
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(spool, sizeof spool, "%s/spool", dir);
    mkdir(data, 0700);
    struct bu_collector col;
    int p[2] = {-1, -1}, rc = -1;
    if (bu_collector_start(&col, data, "normal", 0, NULL) != 0 || pipe(p) != 0) {
        goto out;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        outage_child(col.unix_ep, with_spool ? spool : NULL, o->rate, o->outage_s / 0.75, p[1]);
        _exit(1);
    }
    close(p[1]);
    p[1] = -1;
    bu_sleep_ns((uint64_t)(o->outage_s / 0.75 / 4 * 1e9));
    bu_collector_stop(&col, 1);
    char line[200] = "";
    ssize_t n = read(p[0], line, sizeof line - 1);
    int st = 0;
    waitpid(child, &st, 0);
    unsigned long long before, peak, mid, end, spooled, dropped;
    if (n > 0) {
        line[n] = 0;
        if (sscanf(line, "%llu %llu %llu %llu %d %llu %llu", &before, &peak, &mid, &end,
                   &res->spool_ok, &spooled, &dropped) == 7) {
            res->spooled = (double)spooled;
            res->dropped = (double)dropped;
            res->growth_kib = (double)peak - (double)before;
            res->drift_kib = (double)end - (double)mid;
            res->peak_kib = (double)peak;
            rc = 0;
        }
    }
out:
    if (p[0] >= 0) {
        close(p[0]);
    }
    bu_collector_stop(&col, 1);
    bu_rmtree(dir);
    return rc;
}

static int report_outage(const struct opts *o, int with_spool)
{
    double g[MAX_RUNS], d[MAX_RUNS], pk[MAX_RUNS], sp[MAX_RUNS], dr[MAX_RUNS];
    int n = 0, spool_ok = 1;
    for (int r = 0; r < o->runs; r++) {
        struct outage_result res;
        if (outage_run(o, with_spool, &res) == 0) {
            g[n] = res.growth_kib;
            d[n] = res.drift_kib;
            sp[n] = res.spooled;
            dr[n] = res.dropped;
            pk[n++] = res.peak_kib;
            spool_ok = res.spool_ok;
        }
    }
    if (n == 0) {
        fprintf(stderr, "memory: every outage run failed\n");
        return -1;
    }
    const char *tag = with_spool ? "spool" : "nospool";
    double budget_kib = (RING_BYTES + WINDOW_BYTES + 2.0 * BATCH_BYTES) / 1024.0;
    char m[96], note[256];
    snprintf(note, sizeof note,
             "%.1f s outage at %ld ev/s, ring 1 MiB + window 4 MiB + 2 batches of 256 KiB = "
             "budget; spool %s; median of %d",
             o->outage_s, o->rate,
             !with_spool ? "off"
             : spool_ok  ? "on (64 MiB cap)"
                         : "requested but unavailable",
             n);
    snprintf(m, sizeof m, "client_outage_%s_rss_growth", tag);
    bu_result("memory", m, bu_median(g, (size_t)n), "KiB", "configured_budget",
              bu_median(g, (size_t)n) / budget_kib, note);
    snprintf(m, sizeof m, "client_outage_%s_rss_drift_2nd_half", tag);
    bu_result("memory", m, bu_median(d, (size_t)n), "KiB", NULL, 0,
              "RSS at the end of the outage minus RSS at its middle (0 = flat)");
    snprintf(m, sizeof m, "client_outage_%s_rss_peak", tag);
    bu_result("memory", m, bu_median(pk, (size_t)n), "KiB", NULL, 0, "the whole bench process");
    snprintf(m, sizeof m, "client_outage_%s_events_spooled", tag);
    bu_result("memory", m, bu_median(sp, (size_t)n), "events", NULL, 0,
              "held in the spool at the end of the outage");
    snprintf(m, sizeof m, "client_outage_%s_events_dropped", tag);
    bu_result("memory", m, bu_median(dr, (size_t)n), "events", NULL, 0,
              "dropped by the end of the outage (ring full without a spool, or spool cap)");
    return 0;
}

/* --- the collector with many agents --------------------------------------------------------- */

static int many_agents_run(const struct opts *o, double *idle, double *rss, double *hwm)
{
    char dir[256];
    struct bu_collector col;
    if (bu_tmpdir(dir, sizeof dir, "memory-many") != 0 ||
        bu_collector_start(&col, dir, "normal", 0, NULL) != 0) {
        return -1;
    }
    bu_sleep_ns(200000000);
    *idle = (double)bu_proc_status_kib(col.pid, "VmRSS");
    tt_client **c = calloc((size_t)o->agents, sizeof *c);
    int opened = 0, rc = c ? 0 : -1;
    const char *extra[] = {"ring_bytes", "16384", "max_event_bytes", "1024", "window_bytes",
                           "65536",      NULL};
    for (int i = 0; rc == 0 && i < o->agents; i++) {
        char agent[64];
        snprintf(agent, sizeof agent, "bench-many-%04d", i);
        rc = bu_client_open(&c[i], col.unix_ep, agent, extra);
        opened += rc == 0;
    }
    rc = rc ? rc : bu_wait_connected(c, (size_t)opened, 60000);
    for (int i = 0; rc == 0 && i < opened; i++) {
        for (int k = 0; k < 20; k++) {
            tt_attr a[1] = {TT_INT("k", k)};
            tt_log(c[i], "many", TT_INFO, "hello from one of many agents", a, 1);
        }
    }
    for (int i = 0; rc == 0 && i < opened; i++) {
        rc = tt_flush(c[i], 30000) == 0 ? 0 : -1;
    }
    if (rc == 0) {
        bu_sleep_ns(200000000);
        *rss = (double)bu_proc_status_kib(col.pid, "VmRSS");
        *hwm = (double)bu_proc_status_kib(col.pid, "VmHWM");
    } else {
        fprintf(stderr, "memory: %d agents: opened %d, not all connected or flushed\n", o->agents,
                opened);
    }
    for (int i = 0; i < opened; i++) {
        tt_close(c[i], 5000);
    }
    free(c);
    bu_collector_stop(&col, 0);
    bu_rmtree(dir);
    return rc;
}

static int report_many(const struct opts *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t)o->agents * 2 + 256;
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    double idle[MAX_RUNS], rss[MAX_RUNS], hwm[MAX_RUNS];
    int n = 0;
    for (int r = 0; r < o->runs; r++) {
        if (many_agents_run(o, &idle[n], &rss[n], &hwm[n]) == 0) {
            n++;
        }
    }
    if (n == 0) {
        return -1;
    }
    double i0 = bu_median(idle, (size_t)n), r1 = bu_median(rss, (size_t)n);
    double h1 = bu_median(hwm, (size_t)n);
    char m[96], note[200];
    snprintf(note, sizeof note, "%d agents connected, 20 events each, flushed; median of %d",
             o->agents, n);
    bu_result("memory", "collector_idle_rss", i0, "KiB", NULL, 0, "no agent connected");
    snprintf(m, sizeof m, "collector_%d_agents_rss", o->agents);
    bu_result("memory", m, r1, "KiB", "collector_idle_rss", i0 > 0 ? r1 / i0 : 0, note);
    snprintf(m, sizeof m, "collector_%d_agents_hwm_vs_goal", o->agents);
    bu_result("memory", m, h1, "KiB", "goal_256MiB", h1 / (256.0 * 1024), "peak RSS (VmHWM)");
    snprintf(m, sizeof m, "collector_per_agent");
    bu_result("memory", m, (r1 - i0) / o->agents, "KiB", NULL, 0, "(RSS - idle RSS) / agents");
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.runs = 3, .outage_s = 4.0, .agents = 1000, .rate = 100000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--smoke") == 0) {
            o->smoke = 1;
            o->runs = 1;
            o->outage_s = 0.4;
            o->agents = 20;
            o->rate = 5000;
            continue;
        }
        if (!v) {
            return -1;
        }
        i++;
        if (strcmp(a, "--runs") == 0) {
            o->runs = (int)strtol(v, NULL, 10);
        } else if (strcmp(a, "--outage-s") == 0) {
            o->outage_s = strtod(v, NULL);
        } else if (strcmp(a, "--agents") == 0) {
            o->agents = (int)strtol(v, NULL, 10);
        } else if (strcmp(a, "--rate") == 0) {
            o->rate = strtol(v, NULL, 10);
        } else {
            return -1;
        }
    }
    return o->runs >= 1 && o->runs <= MAX_RUNS && o->outage_s > 0 && o->outage_s <= 600 &&
                   o->agents >= 1 && o->agents <= 10000 && o->rate >= 1 && o->rate <= 10000000
               ? 0
               : -1;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: memory [--smoke] [--runs N] [--outage-s S] [--agents N] "
                        "[--rate EV_PER_S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bu_mark_start();
    /* The outage runs fork: they come first, while this process has no thread. */
    int rc = report_outage(&o, 0);
    rc |= report_outage(&o, 1);
    rc |= report_many(&o);
    return rc ? 1 : 0;
}

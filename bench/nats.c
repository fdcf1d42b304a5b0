/*
 * nats.c - the broker path against the direct path, in the same run (issue 19): one agent of
 * the client library logs N events (a) straight to a collector on its Unix endpoint and (b) to
 * a private nats-server with JetStream (endpoint nats://..., token file), from which a
 * collector started with `--nats` consumes them; both collectors store in SQLite.
 *
 *   nats [--smoke] [--runs N] [--events N]
 *
 * The rate is N over the time from the first event to the moment the SQLite file holds all N
 * (SUM(n) over frames, polled every 20 ms through a read-only connection, the same for both
 * paths: on the broker path an acknowledgement only means the broker has the batch). CPU per
 * event is the user+system time (/proc/PID/stat) over that interval of the collector, plus the
 * nats-server's on the broker path, divided by N. The agent presents an ingest token on both
 * paths (a NATS agent must; N defaults to 1,000,000). Each run starts a fresh collector (and a
 * fresh nats-server, a configuration file holding a random token, 0600, its JetStream store in
 * a temporary directory, 127.0.0.1 on free ports); the order of the two paths alternates. The
 * figures are medians over the runs; the ratios NATS / direct are each run's pair, median too.
 */
#include <sqlite3.h>
#include <sys/prctl.h>

#include "pipeline_util.h"

#define MAX_RUNS 15

struct natsd {
    pid_t pid;
    int port, http_port;
    char dir[320];
    char token_file[400];
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &n) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static const char *natsd_path(void)
{
    static const char *const where[] = {"/usr/sbin/nats-server", "/usr/bin/nats-server",
                                        "/usr/local/bin/nats-server"};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        if (access(where[i], X_OK) == 0) {
            return where[i];
        }
    }
    return NULL;
}

/* 1 when the monitoring port answers /healthz with 200 (JetStream included). */
static int natsd_healthy(const struct natsd *ns)
{
    char hp[64], buf[512];
    snprintf(hp, sizeof hp, "127.0.0.1:%d", ns->http_port);
    int fd = bu_tcp_connect(hp);
    if (fd < 0) {
        return 0;
    }
    const char req[] = "GET /healthz HTTP/1.0\r\n\r\n";
    ssize_t k = 0;
    size_t len = 0;
    if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
        while (len < sizeof buf - 1 && (k = read(fd, buf + len, sizeof buf - 1 - len)) > 0) {
            len += (size_t)k;
        }
    }
    close(fd);
    buf[len] = 0;
    return strncmp(buf, "HTTP/1.0 200", 12) == 0 || strncmp(buf, "HTTP/1.1 200", 12) == 0;
}

static int write_private(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    size_t n = strlen(text);
    int ok = fd >= 0 && write(fd, text, n) == (ssize_t)n;
    if (fd >= 0) {
        ok = close(fd) == 0 && ok;
    }
    return ok ? 0 : -1;
}

/* A single nats-server with JetStream and a random token; 0 once healthy. */
static int natsd_start(struct natsd *ns)
{
    memset(ns, 0, sizeof *ns);
    const char *exe = natsd_path();
    if (!exe) {
        fprintf(stderr, "nats: no nats-server (scripts/install-deps test installs it)\n");
        return -1;
    }
    if (bu_tmpdir(ns->dir, sizeof ns->dir, "natsd") != 0) {
        return -1;
    }
    unsigned char rnd[16];
    char token[40];
    FILE *u = fopen("/dev/urandom", "rb");
    if (!u || fread(rnd, 1, sizeof rnd, u) != sizeof rnd) {
        if (u) {
            fclose(u);
        }
        return -1;
    }
    fclose(u);
    for (int i = 0; i < 16; i++) {
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
    }
    snprintf(ns->token_file, sizeof ns->token_file, "%s/nats.token", ns->dir);
    char conf[400], store[400], logf[400], text[1400];
    snprintf(conf, sizeof conf, "%s/nats.conf", ns->dir);
    snprintf(store, sizeof store, "%s/js", ns->dir);
    snprintf(logf, sizeof logf, "%s/nats.log", ns->dir);
    if (mkdir(store, 0700) != 0) {
        return -1;
    }
    ns->port = free_port();
    ns->http_port = free_port();
    snprintf(text, sizeof text,
             "listen: 127.0.0.1:%d\n"
             "http: 127.0.0.1:%d\n"
             "authorization { token: \"%s\" }\n"
             "jetstream { store_dir: \"%s\", max_memory_store: 64MB, max_file_store: 4GB }\n",
             ns->port, ns->http_port, token, store);
    if (write_private(ns->token_file, token) != 0 || write_private(conf, text) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(exe, exe, "-c", conf, (char *)NULL);
        _exit(127);
    }
    ns->pid = pid;
    for (int i = 0; i < 600; i++) {
        if (natsd_healthy(ns)) {
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            ns->pid = 0;
            fprintf(stderr, "nats: nats-server exited at start (see %s)\n", logf);
            return -1;
        }
        bu_sleep_ns(50000000);
    }
    fprintf(stderr, "nats: nats-server not healthy after 30 s (see %s)\n", logf);
    return -1;
}

static void natsd_stop(struct natsd *ns)
{
    if (ns->pid > 0) {
        kill(ns->pid, SIGTERM);
        waitpid(ns->pid, NULL, 0);
        ns->pid = 0;
    }
    if (ns->dir[0]) {
        bu_rmtree(ns->dir);
    }
}

/* Events the SQLite file holds (SUM(n) over frames), or -1 while it cannot be read. */
static int64_t stored_events(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, "SELECT COALESCE(SUM(n), 0) FROM frames", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return n;
}

struct result {
    double rate;        /* stored events per second */
    double cpu_ns;      /* CPU per event: collector (+ nats-server) */
    double cpu_nats_ns; /* the nats-server's part */
};

/* A failed run's log to stderr (the directory is removed after). */
static void dump_log(const char *dir, const char *name)
{
    char path[400], line[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        fputs(line, stderr);
    }
    if (f) {
        fclose(f);
    }
}

/* Seconds a run may take before it counts as failed. */
static int limit_s = 300;

/* One path: via_nats 0 (the collector's Unix endpoint) or 1 (nats-server + --nats). */
static int measure(int via_nats, int events, const char *agent, struct result *r)
{
    char dir[320];
    struct natsd ns = {0};
    struct bu_collector c = {0};
    tt_client *cl = NULL;
    sqlite3 *db = NULL;
    int rc = -1;
    if (bu_tmpdir(dir, sizeof dir, "nats-serve") != 0) {
        return -1;
    }
    /* A NATS agent must present an ingest token: both paths get the same one. */
    char url[64] = "", ep[440], toks[400], line[128], token[48];
    snprintf(token, sizeof token, "bench-token-%08x", (unsigned)bu_now_ns());
    snprintf(toks, sizeof toks, "%s/ingest.tokens", dir);
    snprintf(line, sizeof line, "%s %s\n", agent, token);
    if (write_private(toks, line) != 0) {
        goto out;
    }
    const char *extra_native[] = {"--ingest-tokens", toks, NULL};
    const char *extra[] = {"--ingest-tokens",   toks,          "--nats", url,
                           "--nats-token-file", ns.token_file, NULL};
    if (via_nats) {
        if (natsd_start(&ns) != 0) {
            goto out;
        }
        snprintf(url, sizeof url, "nats://127.0.0.1:%d", ns.port);
    }
    if (bu_collector_start(&c, dir, "full", 0, via_nats ? extra : extra_native) != 0) {
        goto out;
    }
    snprintf(ep, sizeof ep, "%s", via_nats ? url : c.unix_ep);
    const char *cfg_native[] = {"window_bytes", "4194304", "batch_bytes", "16384",
                                "token",        token,     NULL};
    const char *cfg_nats[] = {"window_bytes", "4194304",         "batch_bytes", "16384", "token",
                              token,          "nats_token_file", ns.token_file, NULL};
    if (bu_client_open(&cl, ep, agent, via_nats ? cfg_nats : cfg_native) != 0 ||
        bu_wait_connected(&cl, 1, 10000) != 0) {
        fprintf(stderr, "nats: the agent did not connect to %s\n", ep);
        goto out;
    }
    if (sqlite3_open_v2(c.db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "nats: cannot open %s\n", c.db);
        goto out;
    }
    sqlite3_busy_timeout(db, 1000);
    char msg[96];
    uint64_t cc0 = bu_proc_cpu_ns(c.pid), cn0 = via_nats ? bu_proc_cpu_ns(ns.pid) : 0;
    uint64_t t0 = bu_now_ns();
    for (int i = 0; i < events; i++) {
        snprintf(msg, sizeof msg, "event %d, padded to about sixty-four bytes of message text", i);
        while (tt_log(cl, "bench", TT_INFO, msg, NULL, 0) != 0) {
            bu_sleep_ns(100000);
        }
    }
    int64_t have = 0;
    for (;;) {
        have = stored_events(db);
        if (have >= events) {
            break;
        }
        if (bu_now_ns() - t0 > (uint64_t)limit_s * 1000000000ull) {
            fprintf(stderr, "nats: %lld of %d stored after %d s (%s); the collector said:\n",
                    (long long)have, events, limit_s, via_nats ? "via NATS" : "direct");
            dump_log(c.dir, "serve.log");
            if (via_nats) {
                dump_log(ns.dir, "nats.log");
            }
            goto out;
        }
        bu_sleep_ns(20000000);
    }
    uint64_t t1 = bu_now_ns();
    uint64_t cc = bu_proc_cpu_ns(c.pid) - cc0, cn = via_nats ? bu_proc_cpu_ns(ns.pid) - cn0 : 0;
    r->rate = events / ((double)(t1 - t0) / 1e9);
    r->cpu_ns = (double)(cc + cn) / events;
    r->cpu_nats_ns = (double)cn / events;
    rc = 0;
out:
    if (db) {
        sqlite3_close(db);
    }
    if (cl) {
        tt_close(cl, 2000);
    }
    bu_collector_stop(&c, 0);
    natsd_stop(&ns);
    bu_rmtree(dir);
    return rc;
}

int main(int argc, char **argv)
{
    int runs = 5, events = 1000000, smoke = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke")) {
            smoke = 1;
            runs = 1;
            events = 20000;
            limit_s = 60;
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
            runs = (int)strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--events") && i + 1 < argc) {
            events = (int)strtol(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: nats [--smoke] [--runs N] [--events N]\n");
            return 2;
        }
    }
    runs = runs < 1 ? 1 : runs > MAX_RUNS ? MAX_RUNS : runs;
    events = events < 100 ? 100 : events;
    bu_mark_start();
    double nr[MAX_RUNS], dr[MAX_RUNS], nc[MAX_RUNS], dc[MAX_RUNS], nsc[MAX_RUNS];
    double rr[MAX_RUNS], rc_[MAX_RUNS];
    for (int i = 0; i < runs; i++) {
        char agent[32];
        snprintf(agent, sizeof agent, "bench-%d", i);
        struct result n = {0}, d = {0};
        int ok;
        if (i % 2 == 0) {
            ok = measure(1, events, agent, &n) == 0 && measure(0, events, agent, &d) == 0;
        } else {
            ok = measure(0, events, agent, &d) == 0 && measure(1, events, agent, &n) == 0;
        }
        if (!ok || n.rate <= 0 || d.rate <= 0) {
            fprintf(stderr, "nats: run %d failed\n", i + 1);
            return 1;
        }
        nr[i] = n.rate;
        dr[i] = d.rate;
        nc[i] = n.cpu_ns;
        dc[i] = d.cpu_ns;
        nsc[i] = n.cpu_nats_ns;
        rr[i] = n.rate / d.rate;
        /* CPU is read in clock ticks (10 ms): a run too short for one tick has no ratio (0). */
        rc_[i] = d.cpu_ns > 0 ? n.cpu_ns / d.cpu_ns : 0;
        fprintf(stderr,
                "nats: run %d: via NATS %.0f events/s, %.0f ns CPU/event (nats-server %.0f); "
                "direct %.0f events/s, %.0f ns CPU/event\n",
                i + 1, n.rate, n.cpu_ns, n.cpu_nats_ns, d.rate, d.cpu_ns);
    }
    char note[256];
    snprintf(note, sizeof note,
             "%d runs x %d log events of ~64 B, one agent, window 4 MiB, batch 16 KiB, "
             "sync=full, SQLite; direct = Unix endpoint; one nats-server 127.0.0.1%s",
             runs, events, smoke ? " (smoke)" : "");
    size_t n = (size_t)runs;
    bu_result("nats", "nats_stored_events_per_s", bu_median(nr, n), "events/s", "direct",
              bu_median(rr, n), note);
    bu_result("nats", "nats_cpu_per_event", bu_median(nc, n), "ns", "direct", bu_median(rc_, n),
              "collector + nats-server user+sys CPU over the run / events");
    bu_result("nats", "nats_server_cpu_per_event", bu_median(nsc, n), "ns", NULL, 0,
              "the nats-server's part of nats_cpu_per_event");
    bu_result("nats", "direct_stored_events_per_s", bu_median(dr, n), "events/s", NULL, 0, NULL);
    bu_result("nats", "direct_cpu_per_event", bu_median(dc, n), "ns", NULL, 0,
              "collector user+sys CPU over the run / events");
    return 0;
}

/*
 * pipeline.c - the whole stream end to end: N simulated agents, each a thread with its own
 * tt_client (its own worker and connection), emitting as fast as the pipeline takes, into a
 * real `telltale serve` child that stores in SQLite and acknowledges after commit.
 *
 *   pipeline [--smoke] [--runs N] [--seconds S] [--agents 1,4,16,256] [--sync full|normal|off]
 *            [--transports unix,tcp] [--no-spool]
 *
 * Per transport and agent count, each run emits for S seconds, then flushes every client (wait
 * for every ack); the rate is the events acknowledged divided by the time from the first emit
 * to the last ack. An emitter whose ring is full (TT_ENOBUFS) sleeps 200 us and goes on, so
 * the rate is what the pipeline sustains, not what the rings absorb. Also per configuration:
 * bytes per event on the wire (tt_stats bytes_sent / acked), at rest (store file size / events
 * stored, after the collector's orderly stop), and the collector's CPU time per event (from
 * /proc/PID/stat of the serve child). Medians of the runs.
 *
 * Baselines in the same run, from the frame sizes measured above: the same bytes in frames of
 * the same size through a socketpair and through loopback TCP (one writer, one reader), and a
 * raw batched SQLite insert of equivalent rows (the collector's frames table and indexes, WAL,
 * same sync level, one transaction per group of rows).
 *
 * Every client has a disk spool (spool_dir in the run's directory) unless --no-spool; each
 * result line notes whether a spool was in use (a build without one measures without).
 */
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "pipeline_util.h"

#define MAX_AGENTS 1024
#define MAX_RUNS 15

struct opts {
    int smoke;
    int runs;
    double seconds;
    int agents[8];
    int n_agents;
    const char *sync;
    int unix_on, tcp_on;
    int spool;
};

struct emitter {
    pthread_t th;
    tt_client *c;
    atomic_int *stop;
    uint64_t full; /* TT_ENOBUFS seen */
};

/* One configuration's figures, per run. */
struct cfg_result {
    double rate[MAX_RUNS];
    double wire[MAX_RUNS];
    double cpu[MAX_RUNS];
    double ccpu[MAX_RUNS]; /* this process: emitters and workers */
    double drops[MAX_RUNS];
    double frame_bytes[MAX_RUNS];
    double ev_per_frame[MAX_RUNS];
    int runs;
    uint64_t stored;
    double at_rest;
    double frames_per_commit; /* the collector's group commits (GET /api/v1/status) */
    double commit_us;         /* mean commit time */
    int spool_used;
};

/* Agent-like events with some variety (fixed seed): one of 8 tools and messages, a step
 * counter and a measured latency, so the compressor sees neither noise nor one repeated line. */
static const char *const tools[8] = {"web_search", "read_file", "write_file", "run_tests",
                                     "grep",       "http_get",  "sql_query",  "summarize"};
static const char *const messages[8] = {"tool call finished",        "tool call started",
                                        "retrying after rate limit", "cache miss",
                                        "parsed 3 results",          "plan updated: 2 steps left",
                                        "model call finished",       "validation passed"};

static void *emit_main(void *arg)
{
    struct emitter *e = arg;
    uint64_t i = 0, x = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)e;
    while (!atomic_load_explicit(e->stop, memory_order_relaxed)) {
        for (int k = 0; k < 64; k++, i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t r = (uint32_t)(x >> 33);
            tt_attr attrs[3] = {TT_STR("tool", tools[r & 7]), TT_INT("step", (int64_t)i),
                                TT_DOUBLE("latency_ms", (double)(r >> 8 & 0xffff) / 64.0)};
            int rc = tt_log(e->c, "session-0001", TT_INFO, messages[r >> 3 & 7], attrs, 3);
            if (rc == TT_ENOBUFS) {
                e->full++;
                bu_sleep_ns(200000);
                break;
            }
        }
    }
    return NULL;
}

static void stats_sum(tt_client **c, int n, tt_stats *sum)
{
    memset(sum, 0, sizeof *sum);
    for (int i = 0; i < n; i++) {
        tt_stats s;
        tt_stats_get(c[i], &s, sizeof s);
        sum->emitted += s.emitted;
        sum->acked += s.acked;
        sum->sent += s.sent;
        sum->dropped_total += s.dropped_total;
        sum->frames_sent += s.frames_sent;
        sum->bytes_sent += s.bytes_sent;
    }
}

static const char *ring_for(int n)
{
    /* Keep the rings of many agents within reason: the emitters only need a few batches. */
    return n >= 64 ? "262144" : "1048576";
}

/* One run: n agents on endpoint for o->seconds. Returns 0 and fills run index r of res. */
static int one_run(const struct opts *o, const struct bu_collector *col, const char *endpoint,
                   int n, struct cfg_result *res, const char *spool_dir)
{
    tt_client *c[MAX_AGENTS];
    struct emitter em[MAX_AGENTS];
    atomic_int stop = 0;
    int rc = 0, opened = 0;
    for (int i = 0; i < n; i++) {
        char agent[64];
        snprintf(agent, sizeof agent, "bench-agent-%03d", i);
        const char *extra[] = {
            "ring_bytes", ring_for(n), "max_event_bytes", "8192", spool_dir ? "spool_dir" : NULL,
            spool_dir,    NULL};
        rc = bu_client_open(&c[i], endpoint, agent, extra);
        if (rc != 0) {
            fprintf(stderr, "pipeline: tt_open: %s\n", tt_strerror(rc));
            goto close;
        }
        opened++;
    }
    if (bu_wait_connected(c, (size_t)n, 20000) != 0) {
        fprintf(stderr, "pipeline: agents not connected after 20 s\n");
        rc = -1;
        goto close;
    }
    tt_stats s0, s1;
    stats_sum(c, n, &s0);
    uint64_t cpu0 = bu_proc_cpu_ns(col->pid), ccpu0 = bu_proc_cpu_ns(getpid());
    uint64_t t0 = bu_now_ns();
    for (int i = 0; i < n; i++) {
        em[i] = (struct emitter){.c = c[i], .stop = &stop};
        pthread_create(&em[i].th, NULL, emit_main, &em[i]);
    }
    bu_sleep_ns((uint64_t)(o->seconds * 1e9));
    atomic_store(&stop, 1);
    uint64_t full = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(em[i].th, NULL);
        full += em[i].full;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (tt_flush(c[i], 60000) != 0) {
            fprintf(stderr, "pipeline: flush timed out\n");
            rc = -1;
        }
    }
    uint64_t t1 = bu_now_ns();
    uint64_t cpu1 = bu_proc_cpu_ns(col->pid), ccpu1 = bu_proc_cpu_ns(getpid());
    stats_sum(c, n, &s1);
    uint64_t acked = s1.acked - s0.acked;
    int r = res->runs;
    if (rc == 0 && acked > 0 && r < MAX_RUNS) {
        res->rate[r] = (double)acked / ((double)(t1 - t0) / 1e9);
        res->wire[r] = (double)(s1.bytes_sent - s0.bytes_sent) / (double)acked;
        res->cpu[r] = (double)(cpu1 - cpu0) / (double)acked;
        res->ccpu[r] = (double)(ccpu1 - ccpu0) / (double)acked;
        res->drops[r] = (double)(s1.dropped_total - s0.dropped_total);
        uint64_t frames = s1.frames_sent - s0.frames_sent;
        res->frame_bytes[r] = frames ? (double)(s1.bytes_sent - s0.bytes_sent) / (double)frames : 0;
        res->ev_per_frame[r] = frames ? (double)acked / (double)frames : 0;
        res->stored += acked;
        res->runs++;
    }
    (void)full;
close:
    for (int i = 0; i < opened; i++) {
        tt_close(c[i], 10000);
    }
    return rc;
}

/* All runs of one configuration on a fresh collector and store. */
static int run_config(const struct opts *o, const char *transport, int n, struct cfg_result *res)
{
    char dir[256], data[300], spool[300];
    memset(res, 0, sizeof *res);
    if (bu_tmpdir(dir, sizeof dir, "pipeline") != 0) {
        return -1;
    }
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(spool, sizeof spool, "%s/spool", dir);
    mkdir(data, 0700);
    struct bu_collector col;
    int rc = bu_collector_start(&col, data, o->sync, 1, NULL);
    const char *ep = strcmp(transport, "unix") == 0 ? col.unix_ep : col.tcp_ep;
    const char *spool_dir = o->spool ? spool : NULL;
    for (int r = 0; rc == 0 && r < o->runs; r++) {
        rc = one_run(o, &col, ep, n, res, spool_dir);
        if (rc != 0 && spool_dir && r == 0) {
            /* The spool may not be available in this build: measure without it, and say so. */
            fprintf(stderr, "pipeline: clients with a spool failed; measuring without\n");
            spool_dir = NULL;
            rc = one_run(o, &col, ep, n, res, NULL);
        }
    }
    res->spool_used = spool_dir != NULL;
    char st[8192];
    if (col.pid > 0 && bu_http_get(&col, "/api/v1/status", st, sizeof st) > 0) {
        json_t *j = json_loads(st, 0, NULL);
        json_t *src = json_object_get(j, "counters") ? json_object_get(j, "counters") : j;
        double frames = (double)json_integer_value(json_object_get(src, "frames"));
        double commits = (double)json_integer_value(json_object_get(src, "commits"));
        double cns = (double)json_integer_value(json_object_get(src, "commit_ns_total"));
        res->frames_per_commit = commits > 0 ? frames / commits : 0;
        res->commit_us = commits > 0 ? cns / commits / 1e3 : 0;
        json_decref(j);
    }
    if (col.pid > 0) {
        bu_collector_stop(&col, 0);
    }
    res->at_rest = res->stored ? (double)bu_store_bytes(&col) / (double)res->stored : 0;
    bu_rmtree(dir);
    return rc;
}

/* --- baselines ----------------------------------------------------------------------------- */

struct copier {
    int fd;
    size_t total;
    size_t chunk;
};

static void *reader_main(void *arg)
{
    struct copier *cp = arg;
    char *buf = malloc(1u << 18);
    size_t got = 0;
    while (buf && got < cp->total) {
        ssize_t k = read(cp->fd, buf, 1u << 18);
        if (k <= 0) {
            break;
        }
        got += (size_t)k;
    }
    free(buf);
    return NULL;
}

/* Writes total bytes in chunks of chunk through the pair (w -> r); returns bytes/s. */
static double copy_rate(int w, int r, size_t total, size_t chunk)
{
    struct copier cp = {r, total, chunk};
    pthread_t th;
    char *buf = calloc(1, chunk);
    if (!buf) {
        return 0;
    }
    for (size_t i = 0; i < chunk; i++) {
        buf[i] = (char)(i * 131u + (i >> 7)); /* incompressible enough; nobody compresses here */
    }
    pthread_create(&th, NULL, reader_main, &cp);
    uint64_t t0 = bu_now_ns();
    size_t sent = 0;
    while (sent < total) {
        size_t want = total - sent < chunk ? total - sent : chunk;
        ssize_t k = write(w, buf, want);
        if (k <= 0) {
            break;
        }
        sent += (size_t)k;
    }
    pthread_join(th, NULL);
    uint64_t t1 = bu_now_ns();
    free(buf);
    return (double)total / ((double)(t1 - t0) / 1e9);
}

static int tcp_pair(int sv[2])
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0) {
        if (l >= 0) {
            close(l);
        }
        return -1;
    }
    sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ok = sv[0] >= 0 && connect(sv[0], (struct sockaddr *)&a, sizeof a) == 0;
    sv[1] = ok ? accept(l, NULL, NULL) : -1;
    close(l);
    if (sv[1] < 0) {
        if (sv[0] >= 0) {
            close(sv[0]);
        }
        return -1;
    }
    int one = 1;
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

/* bytes/s through a socketpair (tcp = 0) or loopback TCP (tcp = 1). */
static double raw_socket_rate(int tcp, size_t total, size_t chunk)
{
    int sv[2];
    if (tcp ? tcp_pair(sv) != 0 : socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return 0;
    }
    double r = copy_rate(sv[0], sv[1], total, chunk);
    close(sv[0]);
    close(sv[1]);
    return r;
}

static const char frames_schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE frames(id INTEGER PRIMARY KEY, agent_id INTEGER NOT NULL,"
    " instance_id INTEGER NOT NULL, first_seq INTEGER NOT NULL, n INTEGER NOT NULL,"
    " t_min INTEGER NOT NULL, t_max INTEGER NOT NULL, kinds INTEGER NOT NULL,"
    " received INTEGER NOT NULL, codec INTEGER NOT NULL, raw_len INTEGER NOT NULL,"
    " data BLOB NOT NULL);"
    "CREATE UNIQUE INDEX frames_seq ON frames(instance_id, first_seq);"
    "CREATE INDEX frames_agent ON frames(agent_id, id);"
    "CREATE INDEX frames_time ON frames(t_max);";

/* Rows (frames) per second of a raw batched insert: rows of blob_len bytes, group rows per
 * transaction, for about seconds. */
static double raw_sqlite_rate(const char *sync, size_t blob_len, int group, double seconds)
{
    char dir[256], path[300], pragma[64];
    if (bu_tmpdir(dir, sizeof dir, "sqlite") != 0) {
        return 0;
    }
    snprintf(path, sizeof path, "%s/raw.db", dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    double rate = 0;
    uint8_t *blob = calloc(1, blob_len ? blob_len : 1);
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s;",
             strcmp(sync, "full") == 0     ? "FULL"
             : strcmp(sync, "normal") == 0 ? "NORMAL"
                                           : "OFF");
    if (!blob || sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, frames_schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, pragma, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO frames(agent_id, instance_id, first_seq, n, t_min, t_max,"
                           " kinds, received, codec, raw_len, data)"
                           " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                           -1, &st, NULL) != SQLITE_OK) {
        goto out;
    }
    for (size_t i = 0; i < blob_len; i++) {
        blob[i] = (uint8_t)(i * 2654435761u >> 13);
    }
    uint64_t t0 = bu_now_ns(), end = t0 + (uint64_t)(seconds * 1e9), rows = 0, t1 = t0;
    while (t1 < end) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (int k = 0; k < group; k++, rows++) {
            sqlite3_bind_int64(st, 1, 1);
            sqlite3_bind_int64(st, 2, (int64_t)(rows % 4) + 1);
            sqlite3_bind_int64(st, 3, (int64_t)rows * 1000 + 1);
            sqlite3_bind_int64(st, 4, 1000);
            sqlite3_bind_int64(st, 5, (int64_t)t1);
            sqlite3_bind_int64(st, 6, (int64_t)t1 + 1000);
            sqlite3_bind_int64(st, 7, 1);
            sqlite3_bind_int64(st, 8, (int64_t)t1);
            sqlite3_bind_int(st, 9, 1);
            sqlite3_bind_int64(st, 10, (int64_t)blob_len * 8);
            sqlite3_bind_blob(st, 11, blob, (int)blob_len, SQLITE_STATIC);
            sqlite3_step(st);
            sqlite3_reset(st);
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        t1 = bu_now_ns();
    }
    rate = (double)rows / ((double)(t1 - t0) / 1e9);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(blob);
    bu_rmtree(dir);
    return rate;
}

/* --- main ---------------------------------------------------------------------------------- */

static int parse_agents(struct opts *o, const char *s)
{
    o->n_agents = 0;
    while (*s && o->n_agents < 8) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > MAX_AGENTS) {
            return -1;
        }
        o->agents[o->n_agents++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            return -1;
        }
    }
    return o->n_agents ? 0 : -1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){
        .runs = 3, .seconds = 1.0, .sync = "full", .unix_on = 1, .tcp_on = 1, .spool = 1};
    parse_agents(o, "1,4,16,256");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--smoke") == 0) {
            o->smoke = 1;
            o->runs = 1;
            o->seconds = 0.1;
            parse_agents(o, "1,2");
        } else if (strcmp(a, "--spool") == 0) {
            o->spool = 1;
        } else if (strcmp(a, "--no-spool") == 0) {
            o->spool = 0;
        } else if (v && strcmp(a, "--runs") == 0) {
            o->runs = (int)strtol(v, NULL, 10);
            i++;
        } else if (v && strcmp(a, "--seconds") == 0) {
            o->seconds = strtod(v, NULL);
            i++;
        } else if (v && strcmp(a, "--agents") == 0) {
            if (parse_agents(o, v) != 0) {
                return -1;
            }
            i++;
        } else if (v && strcmp(a, "--sync") == 0) {
            o->sync = v;
            i++;
        } else if (v && strcmp(a, "--transports") == 0) {
            o->unix_on = strstr(v, "unix") != NULL;
            o->tcp_on = strstr(v, "tcp") != NULL;
            i++;
        } else {
            return -1;
        }
    }
    if (o->runs < 1 || o->runs > MAX_RUNS || o->seconds <= 0 || o->seconds > 600 ||
        (strcmp(o->sync, "full") && strcmp(o->sync, "normal") && strcmp(o->sync, "off"))) {
        return -1;
    }
    return 0;
}

static void report_config(const struct opts *o, const char *tr, int n, struct cfg_result *res,
                          double sock_rate, double sql_rows, const char *base_sock)
{
    char m[128], note[256];
    double rate = bu_median(res->rate, (size_t)res->runs);
    double wire = bu_median(res->wire, (size_t)res->runs);
    double cpu = bu_median(res->cpu, (size_t)res->runs);
    double drops = bu_median(res->drops, (size_t)res->runs);
    double epf = bu_median(res->ev_per_frame, (size_t)res->runs);
    snprintf(note, sizeof note,
             "%d agents over %s, sync=%s, spool %s, median of %d x %.1f s; %.0f events/frame, "
             "%.1f frames/commit, %.0f us/commit, %.0f ring-full drops",
             n, tr, o->sync, res->spool_used ? "on" : "off", res->runs, o->seconds, epf,
             res->frames_per_commit, res->commit_us, drops);
    double sock_ev = wire > 0 ? sock_rate / wire : 0;
    snprintf(m, sizeof m, "%s_%d_events_per_s", tr, n);
    bu_result("pipeline", m, rate, "events/s", base_sock, sock_ev > 0 ? rate / sock_ev : 0, note);
    snprintf(m, sizeof m, "%s_%d_vs_sqlite_raw", tr, n);
    double sql_ev = sql_rows * epf;
    bu_result("pipeline", m, rate, "events/s", "sqlite_raw_insert", sql_ev > 0 ? rate / sql_ev : 0,
              "the same rate against a raw batched insert of "
              "equivalent rows at the same events per row");
    snprintf(m, sizeof m, "%s_%d_wire_bytes_per_event", tr, n);
    bu_result("pipeline", m, wire, "B", NULL, 0, "framed, compressed (tt_stats bytes_sent/acked)");
    snprintf(m, sizeof m, "%s_%d_rest_bytes_per_event", tr, n);
    bu_result("pipeline", m, res->at_rest, "B", NULL, 0, "SQLite file (+WAL) / events stored");
    snprintf(m, sizeof m, "%s_%d_collector_cpu_per_event", tr, n);
    bu_result("pipeline", m, cpu, "ns", NULL, 0, "user+system of telltale serve / events acked");
    snprintf(m, sizeof m, "%s_%d_client_cpu_per_event", tr, n);
    bu_result("pipeline", m, bu_median(res->ccpu, (size_t)res->runs), "ns", NULL, 0,
              "user+system of the agents' process (emitting threads and workers) / events acked");
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: pipeline [--smoke] [--runs N] [--seconds S] [--agents 1,4,..] "
                        "[--sync full|normal|off] [--transports unix,tcp] [--no-spool]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bu_mark_start();
    /* 256 agents need 256 sockets and the collector's; raise the soft limit within the hard. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    const char *trs[2] = {"unix", "tcp"};
    int on[2] = {o.unix_on, o.tcp_on};
    static struct cfg_result res[2][8];
    int status = 0;
    for (int t = 0; t < 2; t++) {
        for (int k = 0; on[t] && k < o.n_agents; k++) {
            if (run_config(&o, trs[t], o.agents[k], &res[t][k]) != 0 || res[t][k].runs == 0) {
                fprintf(stderr, "pipeline: %s with %d agents failed\n", trs[t], o.agents[k]);
                status = 1;
            }
        }
    }
    /* Baselines: the same bytes in frames of the measured mean size. */
    for (int t = 0; t < 2; t++) {
        if (!on[t]) {
            continue;
        }
        double fb[MAX_RUNS * 8], epf[MAX_RUNS * 8], fpc[8];
        size_t nf = 0, nc = 0;
        for (int k = 0; k < o.n_agents; k++) {
            if (res[t][k].frames_per_commit > 0) {
                fpc[nc++] = res[t][k].frames_per_commit;
            }
            for (int r = 0; r < res[t][k].runs; r++) {
                fb[nf] = res[t][k].frame_bytes[r];
                epf[nf++] = res[t][k].ev_per_frame[r];
            }
        }
        size_t chunk = (size_t)bu_median(fb, nf);
        double ev_per_frame = bu_median(epf, nf);
        chunk = chunk < 64 ? 64 : chunk;
        /* Rows per transaction as the collector's group commits had them in this run. */
        int group = (int)(bu_median(fpc, nc) + 0.5);
        group = group < 1 ? 1 : group;
        size_t total = o.smoke ? (4u << 20) : (256u << 20);
        double sock[MAX_RUNS], rows[MAX_RUNS];
        for (int r = 0; r < o.runs; r++) {
            sock[r] = raw_socket_rate(t == 1, total, chunk);
            rows[r] = raw_sqlite_rate(o.sync, chunk, group, o.smoke ? 0.1 : 0.5);
        }
        double sock_rate = bu_median(sock, (size_t)o.runs);
        double row_rate = bu_median(rows, (size_t)o.runs);
        char m[128], note[200];
        snprintf(note, sizeof note, "one writer, one reader, %zu-byte writes (the mean frame)",
                 chunk);
        snprintf(m, sizeof m, "%s_raw_socket_bytes_per_s", trs[t]);
        bu_result("pipeline", m, sock_rate, "B/s", NULL, 0, note);
        snprintf(m, sizeof m, "%s_sqlite_raw_insert_rows_per_s", trs[t]);
        snprintf(note, sizeof note,
                 "frames table + indexes, WAL, sync=%s, %d rows of %zu B per transaction "
                 "(the collector's median group), %.0f events/row",
                 o.sync, group, chunk, ev_per_frame);
        bu_result("pipeline", m, row_rate, "rows/s", NULL, 0, note);
        for (int k = 0; k < o.n_agents; k++) {
            if (res[t][k].runs) {
                report_config(&o, trs[t], o.agents[k], &res[t][k], sock_rate, row_rate,
                              t ? "loopback_tcp_same_bytes" : "socketpair_same_bytes");
            }
        }
    }
    return status;
}

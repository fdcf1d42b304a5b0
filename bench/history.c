/*
 * history.c - the console's history query: a 24 h chart from a store that holds 10^8 events.
 *
 * The store is filled with the rollup rows that 10^8 events over 7 days from 20 agents leave
 * (8.27 events/s per agent, each second one response, an llm and a tool step, a retrieval every
 * 2 s, a reasoning step every 3 s; 1 s rows for the last 6 h and 10 s rows for the last 2 days
 * as the store keeps them, 60 s, 300 s and 1 h rows for the 7 days), written with the store's own schema and histogram
 * encoding (store_open, store_hist_encode) but straight into the rollups table: the query
 * reads only rollups, whose number grows with agents x series x buckets and not with events,
 * so the raw frames (hundreds of GB) are not written. Then a real `telltale serve` (TT_BIN) on
 * that store answers GET /api/v1/series: one agent over 24 h (the agent view's charts), every
 * agent over 24 h (the overview), one agent over 7 d and over 1 h; p50 and p95 of REPS
 * requests, median of RUNS runs. Baseline, same run: GET /healthz, the HTTP round trip alone.
 *
 *   history [--smoke]     (--smoke: 2 agents, 1 day, few requests)
 */
#include <curl/curl.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "collector/store/store.h"

static int smoke;
static int agents = 20, days = 7, reps = 40, runs = 3;

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* --- filling ------------------------------------------------------------------------------- */

#define SERIES 11
struct acc {
    int metric;
    const char *key;
    uint64_t n, errors;
    double sum;
    struct store_hist h;
    int has_hist;
};

static const struct {
    int metric;
    const char *key;
    int hist;
} series[SERIES] = {
    {STORE_ROLLUP_EVENTS, "", 0},         {STORE_ROLLUP_RESPONSES, "", 1},
    {STORE_ROLLUP_TOKENS, "", 0},         {STORE_ROLLUP_STEPS, "llm", 1},
    {STORE_ROLLUP_STEPS, "tool", 1},      {STORE_ROLLUP_STEPS, "retrieval", 1},
    {STORE_ROLLUP_STEPS, "reasoning", 1}, {STORE_ROLLUP_TOOLS, "search", 1},
    {STORE_ROLLUP_TOOLS, "fetch", 1},     {STORE_ROLLUP_TOOLS, "calc", 1},
    {STORE_ROLLUP_TOOLS, "sql", 1},
};

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double unif(uint64_t *s)
{
    return (double)(rng(s) >> 11) / 9007199254740992.0;
}

static void add(struct acc *a, uint64_t n, int err, double v)
{
    a->n += n;
    a->errors += (uint64_t)err;
    if (!isnan(v)) {
        a->sum += v;
        store_hist_add(&a->h, v, 1);
    }
}

/* One agent's second: into acc[SERIES]. Events: 8 or 9 (the total comes to 10^8 over 7 d and
 * 20 agents). */
static uint64_t one_second(struct acc *acc, int agent, int64_t sec)
{
    uint64_t s = (uint64_t)sec * 2654435761u ^ (uint64_t)(agent + 1) * 0x9e3779b97f4a7c15ull;
    s = s ? s : 1;
    rng(&s);
    uint64_t ev = 8 + (uint64_t)(sec % 100 < 27);
    add(&acc[0], ev, 0, NAN);
    double conf = exp(-0.05 - 3 * unif(&s) * unif(&s));
    add(&acc[1], 1, unif(&s) < 0.02, conf);
    add(&acc[2], 40, 0, NAN);
    add(&acc[3], 1, 0, 2e8 + 1.5e9 * unif(&s));
    double tool_ms = 5 + 300 * unif(&s) * unif(&s);
    int tool_err = unif(&s) < 0.03;
    add(&acc[4], 1, tool_err, tool_ms * 1e6);
    add(&acc[7 + sec % 3], 1, tool_err, tool_ms * 1e6);
    if (sec % 2 == 0) {
        double d = 2e6 + 5e7 * unif(&s);
        add(&acc[5], 1, 0, d);
        add(&acc[10], 1, 0, d);
    }
    if (sec % 3 == 0) {
        add(&acc[6], 1, 0, 1e7 + 1e8 * unif(&s));
    }
    return ev;
}

static const int64_t keep[STORE_ROLLUP_N_LEVELS] = STORE_ROLLUP_KEEP;
static sqlite3_stmt *ins;
static uint64_t rows_written;
static uint8_t enc[STORE_HIST_BINS * 15];

static int write_acc(int level, int agent_id, int64_t bucket, struct acc *acc)
{
    for (int i = 0; i < SERIES; i++) {
        struct acc *a = &acc[i];
        if (a->n == 0) {
            continue;
        }
        sqlite3_bind_int(ins, 1, level);
        sqlite3_bind_int(ins, 2, agent_id);
        sqlite3_bind_int64(ins, 3, bucket);
        sqlite3_bind_int(ins, 4, series[i].metric);
        sqlite3_bind_text(ins, 5, series[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 6, (int64_t)a->n);
        sqlite3_bind_int64(ins, 7, (int64_t)a->errors);
        sqlite3_bind_double(ins, 8, a->sum);
        if (series[i].hist) {
            size_t n = store_hist_encode(&a->h, enc, sizeof enc);
            sqlite3_bind_blob(ins, 9, enc, (int)n, SQLITE_STATIC);
        } else {
            sqlite3_bind_null(ins, 9);
        }
        if (sqlite3_step(ins) != SQLITE_DONE) {
            return -1;
        }
        sqlite3_reset(ins);
        rows_written++;
    }
    return 0;
}

static void acc_clear(struct acc *acc)
{
    for (int i = 0; i < SERIES; i++) {
        acc[i].n = acc[i].errors = 0;
        acc[i].sum = 0;
        memset(&acc[i].h, 0, sizeof acc[i].h);
    }
}

static void acc_merge(struct acc *dst, const struct acc *src)
{
    for (int i = 0; i < SERIES; i++) {
        dst[i].n += src[i].n;
        dst[i].errors += src[i].errors;
        dst[i].sum += src[i].sum;
        if (src[i].h.total) {
            for (int b = 0; b < STORE_HIST_BINS; b++) {
                dst[i].h.count[b] += src[i].h.count[b];
            }
            dst[i].h.total += src[i].h.total;
        }
    }
}

static int fill(const char *data, int64_t end_s, uint64_t *events)
{
    struct store_config cfg = {NULL, data, SYNC_OFF};
    struct store *st;
    char err[512];
    if (store_open(&st, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "history: %s\n", err);
        return -1;
    }
    store_close(st); /* the schema is made */
    char path[600];
    snprintf(path, sizeof path, "%s/telltale.db", data);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA synchronous=OFF; BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO rollups(step_s, agent_id, bucket, metric, key, n, errors,"
                           " sum, hist) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                           -1, &ins, NULL) != SQLITE_OK) {
        fprintf(stderr, "history: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    int64_t start_s = end_s - (int64_t)days * 86400;
    start_s -= start_s % 3600;
    static struct acc sec[SERIES], ten[SERIES], min[SERIES], five[SERIES], hour[SERIES];
    for (int a = 0; a < agents; a++) {
        char sql[200];
        snprintf(sql, sizeof sql,
                 "INSERT INTO agents(id, name, first_seen, last_seen) VALUES(%d, 'agent-%02d',"
                 " %lld, %lld)",
                 a + 1, a, (long long)start_s * 1000000000, (long long)end_s * 1000000000);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
            return -1;
        }
        acc_clear(ten);
        acc_clear(min);
        acc_clear(five);
        acc_clear(hour);
        for (int64_t t = start_s; t < end_s; t++) {
            acc_clear(sec);
            *events += one_second(sec, a, t);
            if (t >= end_s - keep[0] && write_acc(1, a + 1, t, sec) != 0) {
                return -1;
            }
            acc_merge(ten, sec);
            if ((t + 1) % 10 == 0) {
                if (t + 1 - 10 >= end_s - keep[1]) {
                    write_acc(10, a + 1, t + 1 - 10, ten);
                }
                acc_merge(min, ten);
                acc_clear(ten);
            }
            if ((t + 1) % 60 == 0) {
                write_acc(60, a + 1, t + 1 - 60, min);
                acc_merge(five, min);
                acc_clear(min);
            }
            if ((t + 1) % 300 == 0) {
                write_acc(300, a + 1, t + 1 - 300, five);
                acc_merge(hour, five);
                acc_clear(five);
            }
            if ((t + 1) % 3600 == 0) {
                write_acc(3600, a + 1, t + 1 - 3600, hour);
                acc_clear(hour);
            }
        }
    }
    sqlite3_finalize(ins);
    int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

/* --- the collector and the queries -------------------------------------------------------- */

static char dir[256], http[300], auth[200];
static pid_t serve_pid;

static int start_serve(const char *data)
{
    const char *bin = getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale";
    char ready[400], listen[400], log[400];
    snprintf(ready, sizeof ready, "%s/ready.json", dir);
    snprintf(listen, sizeof listen, "unix:%s/s.sock", dir);
    snprintf(log, sizeof log, "%s/serve.log", dir);
    serve_pid = fork();
    if (serve_pid == 0) {
        if (!freopen(log, "w", stderr)) {
            _exit(127);
        }
        execl(bin, bin, "serve", "--data", data, "--listen", listen, "--http", "127.0.0.1:0",
              "--ready-file", ready, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 3000; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            char buf[2048] = "";
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
            char *h = strstr(buf, "\"http\":\"");
            char *e = h ? strchr(h + 8, '"') : NULL;
            if (e) {
                snprintf(http, sizeof http, "%.*s", (int)(e - h - 8), h + 8);
                char tp[450], tok[128] = "";
                snprintf(tp, sizeof tp, "%s/operator.token", data);
                FILE *t = fopen(tp, "r");
                if (t && fgets(tok, sizeof tok, t)) {
                    tok[strcspn(tok, "\r\n")] = 0;
                }
                if (t) {
                    fclose(t);
                }
                snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
                return 0;
            }
        }
        usleep(10000);
    }
    return -1;
}

static size_t sink(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    *(size_t *)ud += size * n;
    return size * n;
}

/* The collector's CPU time so far (user + system), ms. */
static double serve_cpu_ms(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)serve_pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime */
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        return 0;
    }
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* p50 and p95 of reps GETs of path (ms), the collector's CPU per request into *cpu; the
 * answer's size into *bytes. */
static int measure(CURL *h, const char *path, double *p50, double *p95, double *cpu, size_t *bytes)
{
    double c0 = serve_cpu_ms();
    static double t[1000];
    char url[600];
    snprintf(url, sizeof url, "http://%s%s", http, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    for (int i = 0; i < reps; i++) {
        size_t got = 0;
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
        double t0 = now_ms();
        long code = 0;
        if (curl_easy_perform(h) != CURLE_OK ||
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code != 200) {
            fprintf(stderr, "history: GET %s: %ld\n", path, code);
            return -1;
        }
        t[i] = now_ms() - t0;
        *bytes = got;
    }
    *cpu = (serve_cpu_ms() - c0) / reps;
    for (int i = 1; i < reps; i++) { /* insertion sort: reps is small */
        double v = t[i];
        int j = i - 1;
        while (j >= 0 && t[j] > v) {
            t[j + 1] = t[j];
            j--;
        }
        t[j + 1] = v;
    }
    *p50 = t[(reps - 1) / 2];
    *p95 = t[(int)ceil(0.95 * reps) - 1];
    return 0;
}

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

int main(int argc, char **argv)
{
    smoke = argc > 1 && !strcmp(argv[1], "--smoke");
    if (smoke) {
        agents = 2;
        days = 1;
        reps = 5;
        runs = 1;
    }
    snprintf(dir, sizeof dir, "/tmp/tt-bench-history-XXXXXX");
    if (!mkdtemp(dir)) {
        return 1;
    }
    char data[400];
    snprintf(data, sizeof data, "%s/data", dir);
    int64_t end_s = (int64_t)time(NULL);
    uint64_t events = 0;
    double t0 = now_ms();
    if (fill(data, end_s, &events) != 0) {
        return 1;
    }
    double fill_s = (now_ms() - t0) / 1e3;
    if (start_serve(data) != 0) {
        fprintf(stderr, "history: the collector did not start (%s/serve.log)\n", dir);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, auth);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    static const struct {
        const char *metric, *path;
    } q[] = {
        {"series_24h_one_agent", "/api/v1/series?agent=agent-01&range=24h"},
        {"series_24h_all_agents", "/api/v1/series?range=24h"},
        {"series_7d_one_agent", "/api/v1/series?agent=agent-01&range=7d"},
        {"series_1h_one_agent", "/api/v1/series?agent=agent-01&range=1h"},
        {"healthz", "/healthz"},
    };
    enum { NQ = sizeof q / sizeof q[0] };
    double p50[NQ][5], p95[NQ][5], cpu[NQ][5];
    size_t bytes[NQ] = {0};
    int status = 0;
    /* Warm up: the collector's start-up work and the first reads of the file are not the
     * query's. */
    usleep(500000);
    for (int i = 0; i < NQ && !status; i++) {
        double a, b, c;
        int saved = reps;
        reps = 2;
        status = measure(h, q[i].path, &a, &b, &c, &bytes[i]);
        reps = saved;
    }
    for (int r = 0; r < runs && !status; r++) {
        for (int i = 0; i < NQ && !status; i++) {
            status = measure(h, q[i].path, &p50[i][r], &p95[i][r], &cpu[i][r], &bytes[i]);
        }
    }
    if (!status) {
        double base50 = median(p50[NQ - 1], runs), base95 = median(p95[NQ - 1], runs);
        char note[300];
        snprintf(note, sizeof note,
                 "%d agents, %d d, %.3g events in rollups (%llu rows, filled in %.1f s), %d "
                 "requests x %d runs",
                 agents, days, (double)events, (unsigned long long)rows_written, fill_s, reps,
                 runs);
        for (int i = 0; i < NQ - 1; i++) {
            double m50 = median(p50[i], runs), m95 = median(p95[i], runs);
            double mc = median(cpu[i], runs), bc = median(cpu[NQ - 1], runs);
            printf("{\"bench\":\"history\",\"metric\":\"%s_cpu\",\"value\":%.3f,"
                   "\"unit\":\"ms/request\",\"baseline\":\"GET /healthz %.3f ms\","
                   "\"note\":\"the collector's CPU time (user+system) per request\"}\n",
                   q[i].metric, mc, bc);
            printf("{\"bench\":\"history\",\"metric\":\"%s_p95\",\"value\":%.3f,\"unit\":\"ms\","
                   "\"baseline\":\"GET /healthz p95 %.3f ms\",\"ratio\":%.3f,"
                   "\"note\":\"%s; p50 %.3f ms; %zu bytes\"}\n",
                   q[i].metric, m95, base95, m95 / base95, note, m50, bytes[i]);
        }
        (void)base50;
        printf("{\"bench\":\"history\",\"metric\":\"events_represented\",\"value\":%llu,"
               "\"unit\":\"events\",\"note\":\"the rollups of this many events (goal 1e8)\"}\n",
               (unsigned long long)events);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    kill(serve_pid, SIGTERM);
    waitpid(serve_pid, NULL, 0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "history: could not remove %s\n", dir);
    }
    return status ? 1 : 0;
}

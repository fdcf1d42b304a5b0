/*
 * pipeline_util.h - helpers shared by the end-to-end benchmarks (bench/pipeline.c,
 * bench/latency.c, bench/memory.c): a real `telltale serve` started in a temporary directory
 * and stopped by its pid, /proc readings (CPU time, RSS, load), medians, and the JSON result
 * line {"bench","metric","value","unit","baseline","ratio","note","load1"}.
 *
 * Header-only (every function static) so that each benchmark stays one program.
 */
#ifndef TT_BENCH_PIPELINE_UTIL_H
#define TT_BENCH_PIPELINE_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "telltale.h"

static inline uint64_t bu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void bu_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The 1-minute load average, recorded with every figure: the machine is shared. */
static inline double bu_load1(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) {
            l = -1;
        }
        fclose(f);
    }
    return l;
}

/* The load before the benchmark began (bu_mark_start), beside the one when a line is printed:
 * the second includes the benchmark's own threads. */
static double bu_start_load = -1;

static inline void bu_mark_start(void)
{
    bu_start_load = bu_load1();
}

/* User + system CPU time of a process in nanoseconds (from /proc/PID/stat), or 0. */
static inline uint64_t bu_proc_cpu_ns(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = 0;
    /* The command name may hold spaces: fields are counted after its closing parenthesis. */
    char *p = strrchr(buf, ')');
    if (!p) {
        return 0;
    }
    unsigned long long ut = 0, st = 0;
    /* After ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15). */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        return 0;
    }
    long hz = sysconf(_SC_CLK_TCK);
    return (ut + st) * (1000000000ull / (unsigned long long)(hz > 0 ? hz : 100));
}

/* A "Vm...:" field of /proc/PID/status in KiB (pid 0: this process), or 0. */
static inline uint64_t bu_proc_status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    if (pid) {
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    } else {
        snprintf(path, sizeof path, "/proc/self/status");
    }
    FILE *f = fopen(path, "r");
    uint64_t v = 0;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtoull(line + fl + 1, NULL, 10);
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return v;
}

static inline int bu_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n) (sorts v). */
static inline double bu_median(double *v, size_t n)
{
    if (n == 0) {
        return 0;
    }
    qsort(v, n, sizeof *v, bu_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The q-quantile (0..1) of sorted v[0..n), nearest rank. */
static inline double bu_quantile_sorted(const double *v, size_t n, double q)
{
    if (n == 0) {
        return 0;
    }
    size_t i = (size_t)(q * (double)n);
    return v[i < n ? i : n - 1];
}

/* One result line. baseline may be NULL (no ratio then); note may be NULL. */
static inline void bu_result(const char *bench, const char *metric, double value, const char *unit,
                             const char *baseline, double ratio, const char *note)
{
    json_t *o = json_object();
    json_object_set_new(o, "bench", json_string(bench));
    json_object_set_new(o, "metric", json_string(metric));
    json_object_set_new(o, "value", json_real(value));
    json_object_set_new(o, "unit", json_string(unit));
    json_object_set_new(o, "baseline", baseline ? json_string(baseline) : json_null());
    json_object_set_new(o, "ratio", baseline ? json_real(ratio) : json_null());
    char nb[512];
    snprintf(nb, sizeof nb, "%s%sload %.2f before, %.2f after", note ? note : "", note ? "; " : "",
             bu_start_load, bu_load1());
    json_object_set_new(o, "note", json_string(nb));
    json_object_set_new(o, "load1_before", json_real(bu_start_load));
    json_object_set_new(o, "load1", json_real(bu_load1()));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    if (s) {
        printf("%s\n", s);
        fflush(stdout);
        free(s);
    }
    json_decref(o);
}

/* --- temporary directories ----------------------------------------------------------------- */

static inline int bu_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static inline void bu_rmtree(const char *dir)
{
    nftw(dir, bu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A new private directory "<TMPDIR>/tt-bench-<name>-XXXXXX" in out; 0 or -1. */
static inline int bu_tmpdir(char *out, size_t n, const char *name)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, n, "%s/tt-bench-%s-XXXXXX", t && *t ? t : "/tmp", name);
    return mkdtemp(out) ? 0 : -1;
}

/* --- a real collector ---------------------------------------------------------------------- */

struct bu_collector {
    pid_t pid;
    char dir[320];     /* its data directory */
    char unix_ep[400]; /* "unix:DIR/s.sock" */
    char tcp_ep[128];  /* "tcp://127.0.0.1:PORT" (bound port) */
    char http[128];    /* "127.0.0.1:PORT" or "" */
    char db[400];      /* the SQLite file */
    char token[128];   /* the operator token it generated in DIR/operator.token */
};

/* $TT_BIN, else the telltale binary of the same build ($BUILD/bench/x -> $BUILD/telltale). */
static inline const char *bu_tt_bin(void)
{
    static char path[4096];
    const char *b = getenv("TT_BIN");
    if (b && *b) {
        return b;
    }
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    char *slash = n > 0 ? (path[n] = 0, strrchr(path, '/')) : NULL;
    if (slash) {
        snprintf(slash, (size_t)(path + sizeof path - slash), "/../telltale");
        return path;
    }
    return "build/telltale";
}

/* Reads the ready file once it parses; 1 when it did. */
static inline int bu_read_ready(struct bu_collector *c, const char *ready)
{
    json_t *r = json_load_file(ready, 0, NULL);
    if (!r) {
        return 0;
    }
    json_t *l = json_object_get(r, "listen");
    size_t i;
    json_t *v;
    json_array_foreach(l, i, v)
    {
        const char *s = json_string_value(v);
        if (s && strncmp(s, "tcp://", 6) == 0) {
            snprintf(c->tcp_ep, sizeof c->tcp_ep, "%s", s);
        }
    }
    const char *h = json_string_value(json_object_get(r, "http"));
    snprintf(c->http, sizeof c->http, "%s", h ? h : "");
    json_decref(r);
    char tok[400];
    snprintf(tok, sizeof tok, "%s/operator.token", c->dir);
    FILE *f = fopen(tok, "r");
    if (f) {
        if (fgets(c->token, sizeof c->token, f)) {
            c->token[strcspn(c->token, "\r\n")] = 0;
        }
        fclose(f);
    }
    return 1;
}

/* Start `$TT_BIN serve` in dir with a Unix and a TCP listener (and HTTP on a free port when
 * http), sync level sync. extra: more arguments or NULL. Returns 0 once it is accepting. */
static inline int bu_collector_start(struct bu_collector *c, const char *dir, const char *sync,
                                     int http, const char *const *extra)
{
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    snprintf(c->unix_ep, sizeof c->unix_ep, "unix:%s/s.sock", dir);
    snprintf(c->db, sizeof c->db, "%s/telltale.db", dir);
    char ready[400], logf[400];
    snprintf(ready, sizeof ready, "%s/ready.json", dir);
    snprintf(logf, sizeof logf, "%s/serve.log", dir);
    const char *argv[32];
    int n = 0;
    argv[n++] = bu_tt_bin();
    argv[n++] = "serve";
    argv[n++] = "--data";
    argv[n++] = dir;
    argv[n++] = "--listen";
    argv[n++] = c->unix_ep;
    argv[n++] = "--listen";
    argv[n++] = "tcp://127.0.0.1:0";
    argv[n++] = "--ingest-open"; /* the bench's agents connect over loopback TCP untokened */
    argv[n++] = "--sync";
    argv[n++] = sync;
    argv[n++] = "--ready-file";
    argv[n++] = ready;
    if (http) {
        argv[n++] = "--http";
        argv[n++] = "127.0.0.1:0";
    } else {
        argv[n++] = "--no-http";
    }
    for (int i = 0; extra && extra[i] && n < 31; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    c->pid = pid;
    for (int i = 0; i < 1500; i++) {
        if (access(ready, F_OK) == 0 && bu_read_ready(c, ready)) {
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "bench: telltale serve exited at startup (see %s)\n", logf);
            c->pid = 0;
            return -1;
        }
        bu_sleep_ns(10000000);
    }
    fprintf(stderr, "bench: telltale serve not ready after 15 s (see %s)\n", logf);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    c->pid = 0;
    return -1;
}

/* SIGTERM (SIGKILL with hard), then reap. Returns the exit status or -1. */
static inline int bu_collector_stop(struct bu_collector *c, int hard)
{
    if (c->pid <= 0) {
        return -1;
    }
    kill(c->pid, hard ? SIGKILL : SIGTERM);
    int st = 0;
    for (int i = 0; i < 3000; i++) {
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid) {
            break;
        }
        if (i == 2999) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
        }
        bu_sleep_ns(5000000);
    }
    c->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Bytes of the store (the database and its WAL, if any). */
static inline uint64_t bu_store_bytes(const struct bu_collector *c)
{
    char wal[420];
    struct stat st;
    uint64_t n = 0;
    if (stat(c->db, &st) == 0) {
        n += (uint64_t)st.st_size;
    }
    snprintf(wal, sizeof wal, "%s-wal", c->db);
    if (stat(wal, &st) == 0) {
        n += (uint64_t)st.st_size;
    }
    return n;
}

/* A TCP connection to "HOST:PORT" (IPv4 literal); the fd or -1. */
static inline int bu_tcp_connect(const char *hostport)
{
    char host[128];
    snprintf(host, sizeof host, "%s", hostport);
    char *colon = strrchr(host, ':');
    if (!colon) {
        return -1;
    }
    *colon = 0;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_port = htons((uint16_t)strtoul(colon + 1, NULL, 10));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* GET path from c's HTTP API (IPv4) with HTTP/1.0 and its operator token; the body into
 * out, NUL-terminated. Returns the body length or -1. */
static inline int bu_http_get(const struct bu_collector *c, const char *path, char *out, size_t n)
{
    int fd = n >= 2 ? bu_tcp_connect(c->http) : -1;
    if (fd < 0) {
        return -1;
    }
    char req[768];
    int rl =
        snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n",
                 path, c->http, c->token);
    size_t len = 0;
    if (write(fd, req, (size_t)rl) == rl) {
        ssize_t k;
        while (len < n - 1 && (k = read(fd, out + len, n - 1 - len)) > 0) {
            len += (size_t)k;
        }
    }
    close(fd);
    out[len] = 0;
    char *body = strstr(out, "\r\n\r\n");
    if (!body) {
        return -1;
    }
    size_t bl = len - (size_t)(body + 4 - out);
    memmove(out, body + 4, bl + 1);
    return (int)bl;
}

/* --- clients ------------------------------------------------------------------------------- */

/* Open a client on endpoint named agent; extra is a NULL-terminated list of key, value. */
static inline int bu_client_open(tt_client **out, const char *endpoint, const char *agent,
                                 const char *const *extra)
{
    tt_config *cfg = NULL;
    *out = NULL;
    int rc = tt_config_new(&cfg);
    rc = rc ? rc : tt_config_set(cfg, "endpoint", endpoint);
    rc = rc ? rc : tt_config_set(cfg, "agent", agent);
    for (int i = 0; rc == 0 && extra && extra[i] && extra[i + 1]; i += 2) {
        rc = tt_config_set(cfg, extra[i], extra[i + 1]);
        if (rc) {
            fprintf(stderr, "bench: %s=%s: %s\n", extra[i], extra[i + 1], tt_config_error(cfg));
        }
    }
    if (rc == 0 && (rc = tt_open(out, cfg)) != 0) {
        fprintf(stderr, "bench: tt_open: %s\n", tt_strerror(rc));
    }
    tt_config_free(cfg);
    return rc;
}

/* Wait until every client is connected; 0, or -1 after timeout_ms. */
static inline int bu_wait_connected(tt_client **c, size_t n, uint32_t timeout_ms)
{
    uint64_t end = bu_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        size_t up = 0;
        for (size_t i = 0; i < n; i++) {
            tt_stats s;
            tt_stats_get(c[i], &s, sizeof s);
            up += s.connected != 0;
        }
        if (up == n) {
            return 0;
        }
        if (bu_now_ns() > end) {
            return -1;
        }
        bu_sleep_ns(2000000);
    }
}

#endif

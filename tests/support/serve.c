/*
 * serve.c - the test helpers of serve.h.
 */
#include "serve.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "common/batch.h"
#include "operator.h"
#include "test.h"

double tt_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *bin(void)
{
    const char *b = getenv("TT_BIN");
    return b ? b : "build/telltale";
}

/* Whether port is free on 127.0.0.1 now (bound and released). */
static int port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* A free TCP port on 127.0.0.1 for a server a test starts, which binds it a moment later. It is
 * taken below the kernel's ephemeral range (ip_local_port_range), at random: a port the kernel
 * hands out (bind to 0) can be given to any outgoing connection in between, an agent's or
 * another server's, and the server would then fail with "address already in use". */
int tt_test_free_port(void)
{
    int low = 32768, high = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &low, &high) != 2) {
            low = 32768;
        }
        fclose(f);
    }
    if (low > 11024) {
        for (int tries = 0; tries < 200; tries++) {
            uint32_t r;
            CHECK(getrandom(&r, sizeof r, 0) == (ssize_t)sizeof r);
            int port = 10000 + (int)(r % (uint32_t)(low - 10000));
            if (port_free(port)) {
                return port;
            }
        }
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static char *extra_args[32];
static int n_extra;
static int no_ingest_open; /* TT_TEST_NO_INGEST_OPEN was among the extra arguments */

/* The generated operator tokens of the collectors this test started, by HTTP address. */
static struct {
    char http[300];
    char token[300];
} tokens[16];
static int n_tokens;

const char *tt_test_token(const char *http)
{
    for (int i = 0; i < n_tokens; i++) {
        if (strcmp(tokens[i].http, http) == 0) {
            return tokens[i].token[0] ? tokens[i].token : NULL;
        }
    }
    return NULL;
}

/* Read DIR/operator.token (made by the collector at its first start) into s->token. */
static void read_token(struct tt_test_serve *s)
{
    char path[800];
    snprintf(path, sizeof path, "%s/operator.token", s->dir);
    s->token[0] = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(s->token, sizeof s->token, f)) {
            s->token[strcspn(s->token, "\r\n")] = 0;
        }
        fclose(f);
    }
    int i = 0;
    while (i < n_tokens && strcmp(tokens[i].http, s->http) != 0) {
        i++;
    }
    if (i == n_tokens && n_tokens < 16) {
        n_tokens++;
    }
    if (i < 16) {
        snprintf(tokens[i].http, sizeof tokens[i].http, "%s", s->http);
        snprintf(tokens[i].token, sizeof tokens[i].token, "%s", s->token);
    }
}

/* Fork and exec the collector with its log as stdout and stderr. */
static pid_t fork_serve(const struct tt_test_serve *s, const char *ready)
{
    const char *argv[64];
    int n = 0;
    char listen_tcp[320];
    snprintf(listen_tcp, sizeof listen_tcp, "%s", s->tcp);
    argv[n++] = bin();
    argv[n++] = "serve";
    argv[n++] = "--data";
    argv[n++] = s->dir;
    argv[n++] = "--listen";
    argv[n++] = s->endpoint;
    argv[n++] = "--listen";
    argv[n++] = listen_tcp;
    argv[n++] = "--http";
    argv[n++] = s->http;
    argv[n++] = "--ready-file";
    argv[n++] = ready;
    if (!no_ingest_open) {
        argv[n++] = "--ingest-open"; /* tests connect over loopback TCP without tokens */
    }
    for (int i = 0; i < n_extra; i++) {
        argv[n++] = extra_args[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    return pid;
}

/* Whether the collector's log at path, from offset on, says that address addr ("H:P") was
 * taken when it tried to listen on it. */
static int log_says_taken(const char *path, long offset, const char *addr)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    int taken = 0;
    char line[1024];
    if (fseek(f, offset, SEEK_SET) == 0) {
        while (fgets(line, sizeof line, f)) {
            const char *at = strstr(line, addr);
            size_t n = strlen(addr);
            taken |= strstr(line, "Address already in use") && at && !isdigit((unsigned char)at[n]);
        }
    }
    fclose(f);
    return taken;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Start it and wait for its ready file. When repick, a port the harness picked that another
 * process took meanwhile is picked again (a restart keeps its endpoints). */
static void spawn(struct tt_test_serve *s, int repick)
{
    char ready[800];
    snprintf(ready, sizeof ready, "%s/ready.json", s->dir);
    for (int attempt = 0;; attempt++) {
        unlink(ready);
        long offset = file_size(s->log);
        pid_t pid = fork_serve(s, ready);
        s->pid = pid;
        for (int i = 0; i < 1000; i++) {
            if (access(ready, F_OK) == 0) {
                read_token(s);
                return;
            }
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                s->pid = 0;
                /* A port the harness picked, taken by another process between its pick and
                 * the collector's bind (a port the test gave is the test's to pick again). */
                int tcp = log_says_taken(s->log, offset, s->tcp + strlen("tcp://"));
                int http = !tcp && log_says_taken(s->log, offset, s->http);
                if ((tcp || http) && repick && attempt < 5) {
                    if (tcp) {
                        snprintf(s->tcp, sizeof s->tcp, "tcp://127.0.0.1:%d", tt_test_free_port());
                    } else {
                        snprintf(s->http, sizeof s->http, "127.0.0.1:%d", tt_test_free_port());
                    }
                    break;
                }
                tt_test_fail(__FILE__, __LINE__, "telltale serve exited at startup (see %s)",
                             s->log);
            }
            usleep(10000);
        }
        if (s->pid) {
            tt_test_fail(__FILE__, __LINE__, "telltale serve not ready after 10 s (see %s)",
                         s->log);
        }
    }
}

void tt_test_serve_start(struct tt_test_serve *s, const char *name, ...)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/%s", tt_test_tmpdir(), name);
    mkdir(s->dir, 0700);
    snprintf(s->sock, sizeof s->sock, "%s/s.sock", s->dir);
    snprintf(s->endpoint, sizeof s->endpoint, "unix:%s", s->sock);
    snprintf(s->tcp, sizeof s->tcp, "tcp://127.0.0.1:%d", tt_test_free_port());
    snprintf(s->http, sizeof s->http, "127.0.0.1:%d", tt_test_free_port());
    snprintf(s->db, sizeof s->db, "%s/telltale.db", s->dir);
    snprintf(s->log, sizeof s->log, "%s/serve-%s.log", tt_test_outdir(), name);
    va_list ap;
    va_start(ap, name);
    n_extra = 0;
    no_ingest_open = 0;
    const char *a;
    while ((a = va_arg(ap, const char *)) && n_extra < 31) {
        if (strcmp(a, TT_TEST_NO_INGEST_OPEN) == 0) {
            no_ingest_open = 1;
        } else {
            extra_args[n_extra++] = strdup(a);
        }
    }
    va_end(ap);
    spawn(s, 1);
}

void tt_test_serve_restart(struct tt_test_serve *s)
{
    spawn(s, 0);
}

int tt_test_serve_restart_refused(struct tt_test_serve *s)
{
    char ready[800];
    snprintf(ready, sizeof ready, "%s/ready.json", s->dir);
    unlink(ready);
    pid_t pid = fork_serve(s, ready);
    int st = 0;
    double t0 = tt_test_now_ms();
    while (waitpid(pid, &st, WNOHANG) != pid) {
        if (access(ready, F_OK) == 0 || tt_test_now_ms() - t0 > 15000 * tt_test_mult()) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            tt_test_fail(__FILE__, __LINE__, "telltale serve did not refuse to start (see %s)",
                         s->log);
        }
        usleep(10000);
    }
    s->pid = 0;
    CHECK_MSG(WIFEXITED(st), "telltale serve died at startup: status %d (see %s)", st, s->log);
    return WEXITSTATUS(st);
}

void tt_test_serve_stop(struct tt_test_serve *s)
{
    if (!s->pid) {
        return;
    }
    kill(s->pid, SIGCONT);
    CHECK(kill(s->pid, SIGTERM) == 0);
    int st = 0;
    double t0 = tt_test_now_ms();
    while (waitpid(s->pid, &st, WNOHANG) != s->pid) {
        if (tt_test_now_ms() - t0 > 15000) {
            kill(s->pid, SIGKILL);
            tt_test_fail(__FILE__, __LINE__, "telltale serve did not stop within 15 s");
        }
        usleep(5000);
    }
    s->pid = 0;
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "telltale serve exit status %d", st);
}

void tt_test_serve_kill(struct tt_test_serve *s)
{
    if (s->pid) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

size_t tt_test_curl_body(char *p, size_t size, size_t nmemb, void *cls)
{
    struct tt_test_body *b = cls;
    size_t n = size * nmemb;
    char *q = realloc(b->p, b->n + n + 1);
    if (!q) {
        return 0;
    }
    memcpy(q + b->n, p, n);
    b->p = q;
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

long tt_test_http(const char *http, const char *method, const char *path, const char *req_body,
                  char **out)
{
    CURL *h = curl_easy_init();
    char url[4096];
    snprintf(url, sizeof url, "http://%s%s", http, path);
    struct tt_test_body b = {NULL, 0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (req_body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req_body);
    }
    const char *tok = getenv("TT_TEST_TOKEN");
    tok = tok ? tok : tt_test_token(http);
    struct curl_slist *hdrs = NULL;
    char auth[600];
    if (tok) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (req_body || (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tt_test_curl_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    long status = -1;
    if (curl_easy_perform(h) == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (out) {
        *out = b.p ? b.p : strdup("");
    } else {
        free(b.p);
    }
    return status;
}

uint64_t tt_test_metric(const char *http, const char *sample)
{
    char *body = NULL;
    CHECK_EQ(tt_test_http(http, "GET", "/metrics", NULL, &body), 200);
    char line[256];
    snprintf(line, sizeof line, "\n%s ", sample); /* the sample, not its # HELP line */
    const char *p = body ? strstr(body, line) : NULL;
    CHECK_MSG(p != NULL, "no %s in /metrics", sample);
    uint64_t v = strtoull(p + strlen(line), NULL, 10);
    free(body);
    return v;
}

uint64_t tt_test_events_count(const char *http, const char *query)
{
    char path[1024], *body = NULL;
    CHECK(snprintf(path, sizeof path, "/api/v1/events/count?%s", query) < (int)sizeof path);
    long st = tt_test_http(http, "GET", path, NULL, &body);
    CHECK_MSG(st == 200, "GET %s: %ld %s", path, st, body ? body : "");
    const char *p = body ? strstr(body, "\"count\":") : NULL;
    CHECK_MSG(p != NULL, "GET %s: no count in %s", path, body ? body : "(no body)");
    uint64_t n = strtoull(p + 8, NULL, 10);
    free(body);
    return n;
}

int64_t tt_test_json_i64(const char *body, const char *after, const char *key)
{
    const char *p = body && after ? strstr(body, after) : body;
    char k[128];
    CHECK(snprintf(k, sizeof k, "\"%s\":", key) < (int)sizeof k);
    p = p ? strstr(p, k) : NULL;
    return p ? strtoll(p + strlen(k), NULL, 10) : -1;
}

int64_t tt_test_retention_i64(const char *http, const char *key)
{
    char *body = NULL;
    long st = tt_test_http(http, "GET", "/api/v1/status", NULL, &body);
    CHECK_MSG(st == 200, "GET /api/v1/status: %ld %s", st, body ? body : "");
    int64_t v = tt_test_json_i64(body, "\"retention\"", key);
    free(body);
    return v;
}

tt_client *tt_test_client(const char *endpoint, const char *agent, ...)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", endpoint));
    CHECK_OK(tt_config_set(cfg, "agent", agent));
    va_list ap;
    va_start(ap, agent);
    const char *kv;
    while ((kv = va_arg(ap, const char *))) {
        char key[128];
        const char *eq = strchr(kv, '=');
        CHECK(eq && (size_t)(eq - kv) < sizeof key);
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = 0;
        CHECK_MSG(tt_config_set(cfg, key, eq + 1) == 0, "config %s: %s", kv, tt_config_error(cfg));
    }
    va_end(ap);
    tt_client *c;
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    return c;
}

tt_client *tt_test_ring_client(const char *ring_bytes, const char *max_event_bytes)
{
    tt_config *cfg = NULL;
    CHECK_OK(tt_config_new(&cfg));
    char ep[4200];
    snprintf(ep, sizeof ep, "unix:%s/nobody-listens.sock", tt_test_tmpdir());
    CHECK_OK(tt_config_set(cfg, "endpoint", ep));
    if (ring_bytes) {
        CHECK_OK(tt_config_set(cfg, "ring_bytes", ring_bytes));
    }
    if (max_event_bytes) {
        CHECK_OK(tt_config_set(cfg, "max_event_bytes", max_event_bytes));
    }
    tt_client *c = NULL;
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "first", NULL, 0));
    return c;
}

const uint8_t *tt_test_ring_str(const uint8_t *p, const char *want)
{
    uint32_t n;
    memcpy(&n, p, 4);
    size_t wl = want ? strlen(want) : 0;
    CHECK_EQ(n, wl);
    CHECK(n == 0 || memcmp(p + 4, want, n) == 0);
    return p + 4 + n;
}

struct range {
    uint64_t first, n;
};

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

static uint64_t decode_frame(sqlite3_stmt *st)
{
    int codec = sqlite3_column_int(st, 2);
    size_t raw_len = (size_t)sqlite3_column_int64(st, 3);
    const void *data = sqlite3_column_blob(st, 4);
    size_t len = (size_t)sqlite3_column_bytes(st, 4);
    uint8_t *raw = malloc(raw_len + 1);
    CHECK(raw);
    if (codec == 1) {
        CHECK(ZSTD_decompress(raw, raw_len, data, len) == raw_len);
    } else {
        CHECK(len == raw_len);
        memcpy(raw, data, len);
    }
    tt__batch b;
    tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
    const char *why;
    CHECK_MSG(tt__batch_parse(&b, raw, raw_len, &lim, &why) == 0, "stored batch: %s", why);
    CHECK_EQ_U64(b.first_seq, (uint64_t)sqlite3_column_int64(st, 0));
    tt__event ev;
    uint64_t n = 0;
    while (tt__batch_next(&b, &ev)) {
        n++;
    }
    free(raw);
    return n;
}

void tt_test_check_store(const char *db, const uint8_t instance[16], struct tt_store_check *out)
{
    memset(out, 0, sizeof *out);
    sqlite3 *h;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(h, 10000);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(h,
                             "SELECT f.first_seq, f.n, f.codec, f.raw_len, f.data FROM frames f "
                             "JOIN instances i ON i.id = f.instance_id WHERE i.uuid = ?1",
                             -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_blob(st, 1, instance, 16, SQLITE_STATIC);
    size_t cap = 1024, n = 0;
    struct range *r = malloc(cap * sizeof *r);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap *= 2;
            r = realloc(r, cap * sizeof *r);
        }
        r[n].first = (uint64_t)sqlite3_column_int64(st, 0);
        r[n].n = (uint64_t)sqlite3_column_int64(st, 1);
        out->decoded += decode_frame(st);
        out->events += r[n].n;
        n++;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    out->frames = n;
    qsort(r, n, sizeof *r, cmp_range);
    uint64_t next = 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t last = r[i].first + r[i].n - 1;
        if (r[i].first < next) {
            uint64_t dup_end = last < next - 1 ? last : next - 1;
            out->overlaps += dup_end - r[i].first + 1;
        } else {
            out->gaps += r[i].first - next;
        }
        if (last + 1 > next) {
            next = last + 1;
        }
    }
    out->max_seq = next - 1;
    free(r);
}

void tt_test_check_conservation(const tt_stats *st, const struct tt_store_check *sc)
{
    uint64_t rhs = st->acked + st->possibly_delivered + st->buffered + st->dropped_total;
    CHECK_MSG(st->emitted + st->inherited == rhs,
              "conservation: emitted %llu + inherited %llu != acked %llu + possibly %llu + "
              "buffered %llu + dropped %llu",
              (unsigned long long)st->emitted, (unsigned long long)st->inherited,
              (unsigned long long)st->acked, (unsigned long long)st->possibly_delivered,
              (unsigned long long)st->buffered, (unsigned long long)st->dropped_total);
    CHECK_MSG(sc->overlaps == 0, "%llu events stored twice", (unsigned long long)sc->overlaps);
    CHECK_EQ_U64(sc->decoded, sc->events);
    CHECK_MSG(st->acked <= sc->events, "acked %llu but only %llu stored",
              (unsigned long long)st->acked, (unsigned long long)sc->events);
    CHECK_MSG(sc->events <= st->acked + st->possibly_delivered + st->buffered,
              "stored %llu more than acked+possibly+buffered", (unsigned long long)sc->events);
}

uint64_t tt_test_count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot read %s", path);
    char line[4096];
    uint64_t n = 0;
    while (fgets(line, sizeof line, f)) {
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

void tt_test_agent_name(const char *prefix, int i, char *out, size_t n)
{
    snprintf(out, n, "%s-%d", prefix, i);
}

void tt_test_agent_token(const char *prefix, int i, char *out, size_t n)
{
    snprintf(out, n, "tok-%s-%d-0123456789abcdef", prefix, i);
}

const char *tt_test_tokens_file(const char *prefix, int n)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/ingest.tokens", tt_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    for (int i = 0; i < n; i++) {
        char a[128], t[160];
        tt_test_agent_name(prefix, i, a, sizeof a);
        tt_test_agent_token(prefix, i, t, sizeof t);
        fprintf(f, "%s %s\n", a, t);
    }
    CHECK(fclose(f) == 0);
    CHECK(chmod(path, 0600) == 0);
    return path;
}

const char *tt_test_make_str(char *buf, int n, char base)
{
    if (n < 0) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        buf[i] = (char)(base + (char)(i % 23));
    }
    buf[n] = 0;
    return buf;
}

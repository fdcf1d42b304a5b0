/*
 * export.c - the OTLP/HTTP exporter (export.h): its configuration from --otlp-export and the
 * OTEL_EXPORTER_OTLP_* variables, the queue the loop thread fills with committed batches, and
 * the thread that maps them (export_encode.c) and posts them with libcurl.
 *
 * Answers (the OTLP/HTTP specification, "Failures" and "Retryable response codes"): 2xx is
 * success (a partial success body is not read: the receiver has taken the request); 429, 502,
 * 503 and 504 and connection errors are retried with exponential backoff and jitter (half to
 * all of 500 ms, doubling to 30 s), or after the answer's Retry-After when it gives one, for at
 * most --otlp-export-retry; any other status drops the request. Each dropped span, log
 * record and point is counted by reason. At a stop, what is queued gets one attempt per request
 * within the grace, and what is left is dropped (counted).
 */
#include "collector/export.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "collector/log.h"
#include "common/clock.h"

#define BATCH_TAKE_BYTES (1u << 20) /* raw batches mapped into one round of requests */
#define REQUEST_MAX_BYTES (64u << 20)
#define OPEN_MAX_ENTRIES 65536
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 30000

struct qitem {
    struct qitem *next;
    struct agent_ident id;
    size_t len;
    uint8_t raw[];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the queue gained an item, or stop */
    pthread_t thread;
    int running;
    struct export_config c;
    struct qitem *head, *tail;
    uint64_t queued_bytes; /* waiting and being posted */
    uint64_t queued_batches;
    int stop;
    uint64_t stop_deadline_ns; /* monotonic */
    _Atomic uint64_t exported[EXP__SIGNALS];
    _Atomic uint64_t dropped[EXP__SIGNALS][EXPD__COUNT];
    _Atomic uint64_t requests_ok, requests_failed, retries;
    _Atomic uint64_t queue_peak;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

const char *export_drop_name(int reason)
{
    static const char *const names[] = {"queue_full", "rejected", "retries_exhausted",
                                        "unmatched",  "shutdown", "encode"};
    return (unsigned)reason < EXPD__COUNT ? names[reason] : "unknown";
}

const char *export_signal_name(int signal)
{
    static const char *const names[] = {"spans", "logs", "points"};
    return (unsigned)signal < EXP__SIGNALS ? names[signal] : "unknown";
}

/* --- configuration --- */

static const char *const sig_env[EXP__SIGNALS] = {"TRACES", "LOGS", "METRICS"};
static const char *const sig_path[EXP__SIGNALS] = {"/v1/traces", "/v1/logs", "/v1/metrics"};

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static const char *env_signal(int s, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "OTEL_EXPORTER_OTLP_%s_%s", sig_env[s], what);
    const char *v = env(name);
    if (!v) {
        snprintf(name, sizeof name, "OTEL_EXPORTER_OTLP_%s", what);
        v = env(name);
    }
    return v;
}

static int check_url(const char *u, const char *from, char *err, size_t errlen)
{
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
        snprintf(err, errlen, "%s: an OTLP/HTTP endpoint is an http:// or https:// URL", from);
        return -1;
    }
    for (const char *p = u; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            snprintf(err, errlen, "%s: the URL has a space or control character", from);
            return -1;
        }
    }
    return 0;
}

/* A base URL (OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-export) with the signal's path appended. */
static int base_url(char *out, size_t n, const char *base, int s)
{
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') {
        bl--;
    }
    return (size_t)snprintf(out, n, "%.*s%s", (int)bl, base, sig_path[s]) < n ? 0 : -1;
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* OTEL_EXPORTER_OTLP_HEADERS: "key=value,key=value", values percent-decoded (the W3C baggage
 * format), as "key: value\n" lines. The values are never echoed in an error. */
static int parse_headers(const char *v, char *out, size_t n, char *err, size_t errlen)
{
    size_t k = strlen(out);
    while (*v) {
        const char *end = strchr(v, ',');
        size_t len = end ? (size_t)(end - v) : strlen(v);
        const char *eq = memchr(v, '=', len);
        if (!eq) {
            snprintf(err, errlen, "OTEL_EXPORTER_OTLP_HEADERS: an entry without '='");
            return -1;
        }
        const char *ks = v, *ke = eq;
        while (ks < ke && isspace((unsigned char)*ks)) {
            ks++;
        }
        while (ke > ks && isspace((unsigned char)ke[-1])) {
            ke--;
        }
        if (ks == ke) {
            snprintf(err, errlen, "OTEL_EXPORTER_OTLP_HEADERS: an empty header name");
            return -1;
        }
        for (const char *p = ks; p < ke; p++) {
            if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p)) {
                snprintf(err, errlen,
                         "OTEL_EXPORTER_OTLP_HEADERS: a header name with a character "
                         "HTTP does not allow");
                return -1;
            }
        }
        if (k + (size_t)(ke - ks) + 3 >= n) {
            goto too_long;
        }
        memcpy(out + k, ks, (size_t)(ke - ks));
        k += (size_t)(ke - ks);
        out[k++] = ':';
        out[k++] = ' ';
        const char *vs = eq + 1, *ve = v + len;
        while (vs < ve && isspace((unsigned char)*vs)) {
            vs++;
        }
        while (ve > vs && isspace((unsigned char)ve[-1])) {
            ve--;
        }
        for (const char *p = vs; p < ve; p++) {
            int c = (unsigned char)*p;
            int h1 = ve - p >= 3 ? hexval((unsigned char)p[1]) : -1;
            int h2 = ve - p >= 3 ? hexval((unsigned char)p[2]) : -1;
            if (c == '%' && h1 >= 0 && h2 >= 0) {
                c = h1 * 16 + h2;
                p += 2;
            }
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                snprintf(err, errlen,
                         "OTEL_EXPORTER_OTLP_HEADERS: a value with a control "
                         "character");
                return -1;
            }
            if (k + 2 >= n) {
                goto too_long;
            }
            out[k++] = (char)c;
        }
        out[k++] = '\n';
        out[k] = 0;
        v += len + (end ? 1 : 0);
    }
    return 0;
too_long:
    snprintf(err, errlen, "OTEL_EXPORTER_OTLP_HEADERS: longer than %zu bytes", n - 1);
    return -1;
}

int export_configure(struct export_config *c, const char *option_url, uint64_t queue_bytes,
                     uint64_t retry_for_ms, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->queue_bytes = queue_bytes;
    c->retry_for_ms = retry_for_ms;
    c->timeout_ms = 10000;
    int any = 0;
    for (int s = 0; s < EXP__SIGNALS; s++) {
        char name[64];
        snprintf(name, sizeof name, "OTEL_EXPORTER_OTLP_%s_ENDPOINT", sig_env[s]);
        const char *own = env(name), *base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
        int rc = 0;
        if (option_url) {
            rc = check_url(option_url, "--otlp-export", err, errlen) ||
                 base_url(c->url[s], sizeof c->url[s], option_url, s);
        } else if (own) {
            rc = check_url(own, name, err, errlen) ||
                 (size_t)snprintf(c->url[s], sizeof c->url[s], "%s", own) >= sizeof c->url[s];
        } else if (base) {
            rc = check_url(base, "OTEL_EXPORTER_OTLP_ENDPOINT", err, errlen) ||
                 base_url(c->url[s], sizeof c->url[s], base, s);
        }
        if (rc) {
            if (!err[0]) {
                snprintf(err, errlen, "the OTLP endpoint URL is too long");
            }
            return -1;
        }
        any |= c->url[s][0] != 0;
    }
    if (!any) {
        return 0;
    }
    for (int s = 0; s < EXP__SIGNALS; s++) {
        const char *proto = env_signal(s, "PROTOCOL");
        if (proto && strcmp(proto, "http/protobuf") != 0) {
            snprintf(
                err, errlen,
                "OTEL_EXPORTER_OTLP_PROTOCOL (or OTEL_EXPORTER_OTLP_%s_PROTOCOL) is \"%.40s\": "
                "telltale exports OTLP over HTTP with protobuf bodies only; unset it or "
                "set http/protobuf",
                sig_env[s], proto);
            return -1;
        }
    }
    const char *t = env("OTEL_EXPORTER_OTLP_TIMEOUT");
    if (t) {
        char *end;
        errno = 0;
        unsigned long long ms = strtoull(t, &end, 10);
        if (errno || end == t || *end || ms == 0 || ms > 600000) {
            snprintf(err, errlen,
                     "OTEL_EXPORTER_OTLP_TIMEOUT=%.40s: milliseconds, from 1 to 600000", t);
            return -1;
        }
        c->timeout_ms = ms;
    }
    const char *z = env("OTEL_EXPORTER_OTLP_COMPRESSION");
    if (z && strcmp(z, "gzip") != 0 && strcmp(z, "none") != 0) {
        snprintf(err, errlen, "OTEL_EXPORTER_OTLP_COMPRESSION=%.40s: gzip or none", z);
        return -1;
    }
    c->gzip = z && !strcmp(z, "gzip");
    for (int s = 0; s < EXP__SIGNALS; s++) {
        const char *h = env("OTEL_EXPORTER_OTLP_HEADERS");
        char name[64];
        snprintf(name, sizeof name, "OTEL_EXPORTER_OTLP_%s_HEADERS", sig_env[s]);
        const char *hs = env(name);
        if ((h && parse_headers(h, c->headers[s], sizeof c->headers[s], err, errlen) != 0) ||
            (hs && parse_headers(hs, c->headers[s], sizeof c->headers[s], err, errlen) != 0)) {
            return -1;
        }
    }
    return 1;
}

/* --- the queue (loop thread in, export thread out) --- */

static void drop_batch(const uint8_t *raw, size_t len, int reason)
{
    uint64_t n[EXP__SIGNALS];
    export_batch_count(raw, len, n);
    for (int s = 0; s < EXP__SIGNALS; s++) {
        add(&g.dropped[s][reason], n[s]);
    }
}

void export_on_commit(const struct store_item *it)
{
    if (!g.running) {
        return;
    }
    /* Only batches with something to export are queued. */
    uint32_t kinds = it->batch.kinds;
    if (!(kinds &
          (1u << TT_EV_STEP_BEGIN | 1u << TT_EV_STEP_END | 1u << TT_EV_RESPONSE_BEGIN |
           1u << TT_EV_RESPONSE_END | 1u << TT_EV_GUARD | 1u << TT_EV_LOG | 1u << TT_EV_METRIC))) {
        return;
    }
    size_t need = sizeof(struct qitem) + it->raw_len;
    pthread_mutex_lock(&g.lock);
    int full = g.stop || g.queued_bytes + need > g.c.queue_bytes;
    pthread_mutex_unlock(&g.lock);
    struct qitem *q = full ? NULL : malloc(need);
    if (!q) {
        drop_batch(it->raw, it->raw_len, EXPD_QUEUE_FULL);
        return;
    }
    q->next = NULL;
    q->id = it->ident;
    q->len = it->raw_len;
    memcpy(q->raw, it->raw, it->raw_len);
    pthread_mutex_lock(&g.lock);
    /* Only this thread adds: the room seen above is still there. */
    g.queued_bytes += need;
    g.queued_batches++;
    if (g.queued_bytes > LD(g.queue_peak)) {
        atomic_store_explicit(&g.queue_peak, g.queued_bytes, memory_order_relaxed);
    }
    if (g.tail) {
        g.tail->next = q;
    } else {
        g.head = q;
    }
    g.tail = q;
    pthread_cond_signal(&g.cond);
    pthread_mutex_unlock(&g.lock);
}

/* --- posting --- */

static size_t discard(char *p, size_t size, size_t nmemb, void *cls)
{
    (void)p;
    (void)cls;
    return size * nmemb;
}

static int gzip_body(const tt__buf *in, tt__buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        return -1;
    }
    tt__buf_reset(out);
    size_t bound = deflateBound(&z, in->len);
    if (tt__buf_reserve(out, bound) != 0) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = in->data;
    z.avail_in = (uInt)in->len;
    z.next_out = out->data;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    out->len = bound - z.avail_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -1;
}

/* libcurl's progress callback: a request under way is cut when the stop's grace is over. */
static int progress(void *cls, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
    (void)cls, (void)dlt, (void)dln, (void)ult, (void)uln;
    pthread_mutex_lock(&g.lock);
    int over = g.stop && tt__mono_ns() >= g.stop_deadline_ns;
    pthread_mutex_unlock(&g.lock);
    return over;
}

enum post_result { POST_OK, POST_RETRY, POST_FAIL };

/* One attempt. *retry_after_ms: the answer's Retry-After (0 if none). */
static enum post_result post_once(CURL *h, int s, const tt__buf *body, uint64_t timeout_ms,
                                  uint64_t *retry_after_ms, long *status_out)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/x-protobuf");
    if (g.c.gzip) {
        hdrs = curl_slist_append(hdrs, "Content-Encoding: gzip");
    }
    char line[4096];
    for (const char *p = g.c.headers[s]; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(line, sizeof line, "%.*s", (int)n, p);
        hdrs = curl_slist_append(hdrs, line);
        p += n + (e ? 1 : 0);
    }
    explicit_bzero(line, sizeof line);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, g.c.url[s]);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data ? (const char *)body->data : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_off_t ra = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra);
    curl_slist_free_all(hdrs);
    *status_out = status;
    *retry_after_ms = ra > 0 ? (uint64_t)ra * 1000 : 0;
    if (rc != CURLE_OK) {
        return POST_RETRY; /* no answer: a connection error or a timeout */
    }
    if (status >= 200 && status < 300) {
        return POST_OK;
    }
    if (status == 429 || status == 502 || status == 503 || status == 504) {
        return POST_RETRY;
    }
    return POST_FAIL;
}

/* Wait ms or until stopping past the deadline. Returns 1 when the wait ended by the deadline. */
static int pause_ms(uint64_t ms)
{
    struct timespec until = tt__deadline_ms(CLOCK_REALTIME, ms);
    pthread_mutex_lock(&g.lock);
    while (!g.stop) {
        if (pthread_cond_timedwait(&g.cond, &g.lock, &until) != 0) {
            break;
        }
    }
    int stop = g.stop;
    pthread_mutex_unlock(&g.lock);
    return stop;
}

/* Remaining grace when stopping (ms, at least 1 while any is left), or UINT64_MAX. */
static uint64_t grace_left(void)
{
    pthread_mutex_lock(&g.lock);
    int stop = g.stop;
    uint64_t dl = g.stop_deadline_ns;
    pthread_mutex_unlock(&g.lock);
    if (!stop) {
        return UINT64_MAX;
    }
    uint64_t now = tt__mono_ns();
    return now >= dl ? 0 : (dl - now) / 1000000 + 1;
}

static void post(CURL *h, int s, const tt__buf *body, uint64_t items, tt__buf *zbuf)
{
    const tt__buf *send = body;
    if (g.c.gzip) {
        if (gzip_body(body, zbuf) != 0) {
            add(&g.dropped[s][EXPD_ENCODE], items);
            return;
        }
        send = zbuf;
    }
    uint64_t t0 = tt__mono_ns(), wait = BACKOFF_FIRST_MS;
    static uint64_t warned_ns;
    for (;;) {
        uint64_t left = grace_left();
        if (left == 0) {
            add(&g.dropped[s][EXPD_SHUTDOWN], items);
            return;
        }
        uint64_t ra = 0;
        long status = 0;
        enum post_result r =
            post_once(h, s, send, left < g.c.timeout_ms ? left : g.c.timeout_ms, &ra, &status);
        if (r == POST_OK) {
            add(&g.requests_ok, 1);
            add(&g.exported[s], items);
            return;
        }
        if (r == POST_FAIL) {
            add(&g.requests_failed, 1);
            add(&g.dropped[s][EXPD_REJECTED], items);
            uint64_t now = tt__mono_ns();
            if (now - warned_ns > 10000000000ull || !warned_ns) {
                warned_ns = now;
                log_warn("otlp export: the receiver answered %ld to %s: %llu dropped (not "
                         "retryable)",
                         status, export_signal_name(s), (unsigned long long)items);
            }
            return;
        }
        if (grace_left() != UINT64_MAX) {
            /* stopping: one attempt per request, no retries */
            add(&g.requests_failed, 1);
            add(&g.dropped[s][EXPD_SHUTDOWN], items);
            return;
        }
        uint64_t delay = ra ? ra : wait / 2 + (uint64_t)(random() % (long)(wait / 2 + 1));
        wait = wait * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : wait * 2;
        uint64_t elapsed_ms = (tt__mono_ns() - t0) / 1000000;
        if (elapsed_ms + delay > g.c.retry_for_ms) {
            add(&g.requests_failed, 1);
            add(&g.dropped[s][EXPD_RETRIES], items);
            uint64_t now = tt__mono_ns();
            if (now - warned_ns > 10000000000ull || !warned_ns) {
                warned_ns = now;
                log_warn("otlp export: %s not taken after %llu ms of retries (last answer %ld): "
                         "%llu dropped",
                         export_signal_name(s), (unsigned long long)elapsed_ms, status,
                         (unsigned long long)items);
            }
            return;
        }
        add(&g.retries, 1);
        pause_ms(delay); /* cut short by a stop: the next attempt is then the last */
    }
}

static void *export_main(void *arg)
{
    (void)arg;
    CURL *h = curl_easy_init();
    struct export_open *open = export_open_new(OPEN_MAX_ENTRIES);
    struct export_req req;
    export_req_init(&req, REQUEST_MAX_BYTES);
    tt__buf zbuf;
    tt__buf_init(&zbuf, REQUEST_MAX_BYTES + (1u << 20));
    for (;;) {
        pthread_mutex_lock(&g.lock);
        while (!g.stop && !g.head) {
            pthread_cond_wait(&g.cond, &g.lock);
        }
        struct qitem *taken = g.head, *last = NULL;
        size_t bytes = 0, n = 0;
        for (struct qitem *q = g.head; q && (bytes < BATCH_TAKE_BYTES || !n); q = q->next) {
            bytes += sizeof *q + q->len;
            n++;
            last = q;
        }
        if (last) {
            g.head = last->next;
            if (!g.head) {
                g.tail = NULL;
            }
            last->next = NULL;
        }
        pthread_mutex_unlock(&g.lock);
        if (!taken) {
            break; /* stopping, and nothing is left */
        }
        export_req_reset(&req);
        int late = grace_left() == 0;
        for (struct qitem *q = taken; q; q = q->next) {
            if (late) {
                drop_batch(q->raw, q->len, EXPD_SHUTDOWN);
            } else if (!h || !open || export_req_add(&req, open, &q->id, q->raw, q->len) != 0) {
                drop_batch(q->raw, q->len, EXPD_ENCODE);
            }
        }
        for (int s = 0; s < EXP__SIGNALS; s++) {
            add(&g.dropped[s][EXPD_UNMATCHED], req.unmatched[s]);
            if (!req.items[s]) {
                continue;
            }
            if (!g.c.url[s][0]) {
                continue; /* this signal is not exported: its items are not counted */
            }
            post(h, s, &req.body[s], req.items[s], &zbuf);
        }
        for (struct qitem *q = taken, *nx; q; q = nx) {
            nx = q->next;
            free(q);
        }
        pthread_mutex_lock(&g.lock);
        g.queued_bytes -= bytes;
        g.queued_batches -= n;
        pthread_mutex_unlock(&g.lock);
    }
    export_req_fini(&req);
    tt__buf_fini(&zbuf);
    export_open_free(open);
    if (h) {
        curl_easy_cleanup(h);
    }
    return NULL;
}

/* The endpoint as it may be logged: scheme, host and port (no user, password or query). */
static void url_for_log(const char *url, char *out, size_t n)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
        curl_url_get(u, CURLUPART_HOST, &host, 0);
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
        curl_url_get(u, CURLUPART_PATH, &path, 0);
    }
    snprintf(out, n, "%s://%s:%s%s", scheme ? scheme : "?", host ? host : "?", port ? port : "?",
             path ? path : "");
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
}

int export_start(const struct export_config *c)
{
    g.c = *c;
    g.stop = 0;
    if (pthread_create(&g.thread, NULL, export_main, NULL) != 0) {
        return -1;
    }
    g.running = 1;
    for (int s = 0; s < EXP__SIGNALS; s++) {
        if (c->url[s][0]) {
            char u[1100];
            url_for_log(c->url[s], u, sizeof u);
            log_info("otlp export: %s to %s%s", export_signal_name(s), u,
                     c->headers[s][0] ? " (with headers)" : "");
        }
    }
    return 0;
}

void export_stop(uint64_t grace_ms)
{
    if (!g.running) {
        return;
    }
    pthread_mutex_lock(&g.lock);
    g.stop = 1;
    g.stop_deadline_ns = tt__mono_ns() + grace_ms * 1000000;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
    pthread_join(g.thread, NULL);
    g.running = 0;
    explicit_bzero(g.c.headers, sizeof g.c.headers);
}

/* --- figures --- */

void export_status_json(tt__json *j)
{
    pthread_mutex_lock(&g.lock);
    uint64_t qb = g.queued_bytes, qn = g.queued_batches;
    pthread_mutex_unlock(&g.lock);
    tt__json_key(j, "otlp_export");
    tt__json_obj_begin(j);
    tt__json_kv_bool(j, "enabled", g.running);
    tt__json_key(j, "signals");
    tt__json_arr_begin(j);
    for (int s = 0; s < EXP__SIGNALS; s++) {
        if (g.c.url[s][0]) {
            tt__json_cstr(j, export_signal_name(s));
        }
    }
    tt__json_arr_end(j);
    tt__json_kv_u64(j, "queue_bytes", qb);
    tt__json_kv_u64(j, "queue_batches", qn);
    tt__json_kv_u64(j, "queue_limit_bytes", g.c.queue_bytes);
    tt__json_kv_u64(j, "queue_peak_bytes", LD(g.queue_peak));
    tt__json_kv_u64(j, "requests_ok", LD(g.requests_ok));
    tt__json_kv_u64(j, "requests_failed", LD(g.requests_failed));
    tt__json_kv_u64(j, "retries", LD(g.retries));
    tt__json_key(j, "exported");
    tt__json_obj_begin(j);
    for (int s = 0; s < EXP__SIGNALS; s++) {
        tt__json_kv_u64(j, export_signal_name(s), LD(g.exported[s]));
    }
    tt__json_obj_end(j);
    tt__json_key(j, "dropped");
    tt__json_obj_begin(j);
    for (int s = 0; s < EXP__SIGNALS; s++) {
        tt__json_key(j, export_signal_name(s));
        tt__json_obj_begin(j);
        for (int r = 0; r < EXPD__COUNT; r++) {
            tt__json_kv_u64(j, export_drop_name(r), LD(g.dropped[s][r]));
        }
        tt__json_obj_end(j);
    }
    tt__json_obj_end(j);
    tt__json_obj_end(j);
}

void export_metrics_text(tt__buf *b)
{
    const char *n = "telltale_otlp_export_items_total";
    tt__buf_printf(b,
                   "# HELP %s Spans, log records and metric points the OTLP receiver took.\n"
                   "# TYPE %s counter\n",
                   n, n);
    for (int s = 0; s < EXP__SIGNALS; s++) {
        tt__buf_printf(b, "%s{signal=\"%s\"} %llu\n", n, export_signal_name(s),
                       (unsigned long long)LD(g.exported[s]));
    }
    n = "telltale_otlp_export_dropped_total";
    tt__buf_printf(b,
                   "# HELP %s Spans, log records and metric points not exported, by reason.\n"
                   "# TYPE %s counter\n",
                   n, n);
    for (int s = 0; s < EXP__SIGNALS; s++) {
        for (int r = 0; r < EXPD__COUNT; r++) {
            tt__buf_printf(b, "%s{signal=\"%s\",reason=\"%s\"} %llu\n", n, export_signal_name(s),
                           export_drop_name(r), (unsigned long long)LD(g.dropped[s][r]));
        }
    }
    n = "telltale_otlp_export_retries_total";
    tt__buf_printf(b,
                   "# HELP %s OTLP requests sent again after a retryable failure.\n"
                   "# TYPE %s counter\n%s %llu\n",
                   n, n, n, (unsigned long long)LD(g.retries));
    pthread_mutex_lock(&g.lock);
    uint64_t qb = g.queued_bytes;
    pthread_mutex_unlock(&g.lock);
    n = "telltale_otlp_export_queue_bytes";
    tt__buf_printf(b,
                   "# HELP %s Committed batches waiting for export or being posted.\n"
                   "# TYPE %s gauge\n%s %llu\n",
                   n, n, n, (unsigned long long)qb);
}

/*
 * operator.c - the helpers of operator.h.
 */
#include "operator.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "serve.h"
#include "test.h"

double tt_test_mult(void)
{
    const char *m = getenv("TT_TEST_TIMEOUT_MULT");
    double v = m ? strtod(m, NULL) : 1;
    return v >= 1 ? v : 1;
}

void tt_test_write_file(const char *path, const char *text)
{
    /* 0600: the collector refuses secret files that others may read. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK_MSG(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

char *tt_test_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot read %s", path);
    static const size_t max = 16u << 20;
    char *s = malloc(max + 1);
    CHECK(s != NULL);
    size_t n = fread(s, 1, max, f);
    CHECK_MSG(!ferror(f) && feof(f), "%s: unreadable or over 16 MiB", path);
    fclose(f);
    s[n] = 0;
    return s;
}

long tt_test_http_auth(const char *http, const char *method, const char *path, const char *token,
                       char **body)
{
    static __thread char url[500000];
    snprintf(url, sizeof url, "http://%s%s", http, path);
    CURL *h = curl_easy_init();
    struct tt_test_body b = {calloc(1, 1), 0};
    struct curl_slist *hdrs = NULL;
    char auth[600];
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tt_test_curl_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    long status = -1;
    if (curl_easy_perform(h) == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (body) {
        *body = b.p;
    } else {
        free(b.p);
    }
    return status;
}

int tt_test_emit_response(tt_client *c, const char *session, double confidence)
{
    /* One token whose log-prob is log(confidence): the summary's mean log-prob is exactly
     * that, so the response's confidence exp(mean) is `confidence`. */
    tt_response *r;
    int rc = tt_response_begin(c, &r, session, "sim-model", NULL, 0);
    if (rc != 0) {
        return rc;
    }
    rc = tt_response_token_logprobs(r, 1, (float)log(confidence), NULL, NULL, 0, NULL, NULL);
    int rc2 = tt_response_end(r, NULL);
    return rc ? rc : rc2;
}

/* --- live stream reader --------------------------------------------------------------- */

#define SSE_LINES_MAX 100000

struct tt_test_sse {
    char url[600];
    char auth[600];
    pthread_t th;
    pthread_mutex_t lock;
    char *lines[SSE_LINES_MAX];
    int n;
    char partial[1u << 20]; /* a line longer than this keeps its start */
    size_t pn;
    _Atomic int stop;
    _Atomic int connected;
};

static size_t sse_data(char *p, size_t size, size_t nmemb, void *cls)
{
    struct tt_test_sse *s = cls;
    size_t n = size * nmemb;
    atomic_store(&s->connected, 1);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            s->partial[s->pn] = 0;
            if (!strncmp(s->partial, "data: ", 6) && s->n < SSE_LINES_MAX) {
                s->lines[s->n++] = strdup(s->partial + 6);
            }
            s->pn = 0;
        } else if (s->pn < sizeof s->partial - 1) {
            s->partial[s->pn++] = p[i];
        }
    }
    pthread_mutex_unlock(&s->lock);
    return atomic_load(&s->stop) ? 0 : n;
}

static int sse_progress(void *cls, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    struct tt_test_sse *s = cls;
    return atomic_load(&s->stop);
}

static void *sse_main(void *arg)
{
    struct tt_test_sse *s = arg;
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = s->auth[0] ? curl_slist_append(NULL, s->auth) : NULL;
    curl_easy_setopt(h, CURLOPT_URL, s->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sse_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, sse_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return NULL;
}

struct tt_test_sse *tt_test_sse_open(const char *http, const char *query, const char *token)
{
    struct tt_test_sse *s = calloc(1, sizeof *s);
    CHECK(s != NULL);
    snprintf(s->url, sizeof s->url, "http://%s/api/v1/stream%s%s", http, query ? "?" : "",
             query ? query : "");
    token = token ? token : tt_test_token(http); /* NULL: the collector's own token */
    if (token) {
        snprintf(s->auth, sizeof s->auth, "Authorization: Bearer %s", token);
    }
    pthread_mutex_init(&s->lock, NULL);
    CHECK(pthread_create(&s->th, NULL, sse_main, s) == 0);
    /* The stream sends a comment line first; wait for it so nothing published after this
     * returns is missed. */
    for (int i = 0; i < 1000 && !atomic_load(&s->connected); i++) {
        usleep(10000);
    }
    CHECK_MSG(atomic_load(&s->connected), "the live stream did not answer");
    return s;
}

char *tt_test_sse_wait(struct tt_test_sse *s, const char *needle, int *from, double timeout_ms)
{
    double until = tt_test_now_ms() + timeout_ms;
    do {
        pthread_mutex_lock(&s->lock);
        for (; *from < s->n; (*from)++) {
            if (strstr(s->lines[*from], needle)) {
                char *r = strdup(s->lines[*from]);
                (*from)++;
                pthread_mutex_unlock(&s->lock);
                return r;
            }
        }
        pthread_mutex_unlock(&s->lock);
        usleep(2000);
    } while (tt_test_now_ms() < until);
    return NULL;
}

int tt_test_sse_count(struct tt_test_sse *s, const char *needle)
{
    int k = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n; i++) {
        k += strstr(s->lines[i], needle) != NULL;
    }
    pthread_mutex_unlock(&s->lock);
    return k;
}

void tt_test_sse_close(struct tt_test_sse *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    for (int i = 0; i < s->n; i++) {
        free(s->lines[i]);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* --- webhook receiver ----------------------------------------------------------------- */

#define HOOK_MAX 256

struct tt_test_hook {
    int fd, port, fail_first;
    char secret[256]; /* non-empty: check each request's signature, 401 when wrong */
    int valid, invalid;
    pthread_t th;
    pthread_mutex_t lock;
    char *bodies[HOOK_MAX];
    int n, requests;
    _Atomic int stop;
};

/* Read one request; returns its body (malloc'd) or NULL; its header block into head. */
static char *read_request(int c, char *head, size_t headcap)
{
    char buf[65536];
    size_t n = 0;
    char *end = NULL;
    while (n < sizeof buf - 1 && !end) {
        ssize_t k = read(c, buf + n, sizeof buf - 1 - n);
        if (k <= 0) {
            return NULL;
        }
        n += (size_t)k;
        buf[n] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end) {
        return NULL;
    }
    const char *cl = strcasestr(buf, "Content-Length:");
    size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
    size_t have = n - (size_t)(end + 4 - buf);
    while (have < want && n < sizeof buf - 1) {
        ssize_t k = read(c, buf + n, sizeof buf - 1 - n);
        if (k <= 0) {
            break;
        }
        n += (size_t)k;
        have += (size_t)k;
    }
    buf[n] = 0;
    end = strstr(buf, "\r\n\r\n");
    snprintf(head, headcap, "%.*s\r\n", (int)(end - buf), buf);
    return strdup(end + 4);
}

/* The value of header name in a header block, into out ("" when absent). */
static void header_value(const char *head, const char *name, char *out, size_t cap)
{
    char key[80];
    snprintf(key, sizeof key, "\r\n%s:", name);
    const char *p = strcasestr(head, key);
    out[0] = 0;
    if (p) {
        p += strlen(key);
        p += strspn(p, " ");
        snprintf(out, cap, "%.*s", (int)strcspn(p, "\r\n"), p);
    }
}

int tt_test_hook_verify(const char *secret, const char *timestamp, const char *signature,
                        const char *body, size_t len)
{
    char *end;
    long long ts = strtoll(timestamp, &end, 10);
    long long now = (long long)time(NULL);
    if (!*timestamp || *end || ts < now - 300 || ts > now + 300 ||
        strncmp(signature, "v1=", 3) != 0 || strlen(signature) != 3 + 64) {
        return 0;
    }
    size_t tl = strlen(timestamp);
    char *msg = malloc(tl + 1 + len);
    CHECK(msg != NULL);
    memcpy(msg, timestamp, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    unsigned char mac[32];
    int rc = gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, strlen(secret), msg, tl + 1 + len, mac);
    free(msg);
    CHECK(rc == 0);
    char hex[65];
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    }
    unsigned diff = 0;
    for (int i = 0; i < 64; i++) {
        diff |= (unsigned char)(hex[i] ^ signature[3 + i]);
    }
    return diff == 0;
}

static void *hook_main(void *arg)
{
    struct tt_test_hook *h = arg;
    while (!atomic_load(&h->stop)) {
        int c = accept(h->fd, NULL, NULL);
        if (c < 0) {
            continue;
        }
        struct timeval tv = {5, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        static __thread char head[65536];
        char *body = read_request(c, head, sizeof head);
        int bad = 0;
        if (body && h->secret[0]) {
            char ts[64], sig[160];
            header_value(head, "X-Telltale-Timestamp", ts, sizeof ts);
            header_value(head, "X-Telltale-Signature", sig, sizeof sig);
            bad = !tt_test_hook_verify(h->secret, ts, sig, body, strlen(body));
        }
        pthread_mutex_lock(&h->lock);
        int fail = h->requests < h->fail_first || bad;
        h->requests++;
        h->valid += body && h->secret[0] && !bad;
        h->invalid += bad;
        if (body && !fail && h->n < HOOK_MAX) {
            h->bodies[h->n++] = body;
            body = NULL;
        }
        pthread_mutex_unlock(&h->lock);
        free(body);
        const char *resp =
            bad    ? "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            : fail ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n"
                   : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        if (write(c, resp, strlen(resp)) < 0) {
            /* the collector gave up: it counts that itself */
        }
        close(c);
    }
    return NULL;
}

struct tt_test_hook *tt_test_hook_start(int fail_first)
{
    return tt_test_hook_start_signed(fail_first, NULL);
}

void tt_test_hook_signatures(struct tt_test_hook *h, int *valid, int *invalid)
{
    pthread_mutex_lock(&h->lock);
    *valid = h->valid;
    *invalid = h->invalid;
    pthread_mutex_unlock(&h->lock);
}

struct tt_test_hook *tt_test_hook_start_signed(int fail_first, const char *secret)
{
    struct tt_test_hook *h = calloc(1, sizeof *h);
    CHECK(h != NULL);
    h->fail_first = fail_first;
    snprintf(h->secret, sizeof h->secret, "%s", secret ? secret : "");
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(h->fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(h->fd, 16) == 0);
    CHECK(getsockname(h->fd, (struct sockaddr *)&a, &len) == 0);
    h->port = ntohs(a.sin_port);
    struct timeval tv = {0, 100000};
    setsockopt(h->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_mutex_init(&h->lock, NULL);
    CHECK(pthread_create(&h->th, NULL, hook_main, h) == 0);
    return h;
}

int tt_test_hook_port(const struct tt_test_hook *h)
{
    return h->port;
}

char *tt_test_hook_wait(struct tt_test_hook *h, const char *needle, double timeout_ms)
{
    double until = tt_test_now_ms() + timeout_ms;
    do {
        pthread_mutex_lock(&h->lock);
        for (int i = 0; i < h->n; i++) {
            if (strstr(h->bodies[i], needle)) {
                char *r = strdup(h->bodies[i]);
                pthread_mutex_unlock(&h->lock);
                return r;
            }
        }
        pthread_mutex_unlock(&h->lock);
        usleep(5000);
    } while (tt_test_now_ms() < until);
    return NULL;
}

int tt_test_hook_requests(struct tt_test_hook *h)
{
    pthread_mutex_lock(&h->lock);
    int n = h->requests;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void tt_test_hook_stop(struct tt_test_hook *h)
{
    atomic_store(&h->stop, 1);
    pthread_join(h->th, NULL);
    close(h->fd);
    for (int i = 0; i < h->n; i++) {
        free(h->bodies[i]);
    }
    pthread_mutex_destroy(&h->lock);
    free(h);
}

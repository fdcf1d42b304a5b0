/*
 * http.c - the HTTP server: routing, request bodies, parameters and JSON responses. CORS is off
 * (no Access-Control headers are ever sent), every response is no-store and nosniff, and an
 * unknown route or method gets a JSON error with the right status. Every request passes the
 * browser checks of api/browser.c (Host, Origin, JSON bodies) and, on /api/ and /metrics, the
 * operator token.
 */
#include "collector/api/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collector/api/auth.h"
#include "collector/source/otlp.h"
#include "collector/source/otlp_decode.h"
#include "collector/store/store.h"
#include "common/json.h"

struct http {
    struct MHD_Daemon *d;
    struct http_ctx ctx;
    _Atomic int otlp_open; /* OTLP requests begun and not yet completed (sent or dropped) */
};

struct route {
    const char *method;
    const char *path;
    http_route_fn fn;
};

static const struct route routes[] = {
    {"GET", "/healthz", api_health},
    {"GET", "/api/v1/events", api_events},
    {"GET", "/api/v1/events/count", api_events_count},
    {"GET", "/api/v1/stream", api_stream},
    {"GET", "/api/v1/agents", api_agents},
    {"GET", "/api/v1/status", api_status},
    {"GET", "/api/v1/series", api_series},
    {"GET", "/api/v1/agents/{agent}", api_agent},
    {"GET", "/api/v1/sessions", api_sessions},
    {"GET", "/api/v1/sessions/{id}", api_session},
    {"GET", "/api/v1/alerts", api_alerts},
    {"POST", "/api/v1/alerts/{id}/ack", api_alert_ack},
    {"GET", "/api/v1/incidents", api_incidents},
    {"GET", "/api/v1/incidents/{id}", api_incident_get},
    {"POST", "/api/v1/incidents/{id}/ack", api_alert_ack},
    {"GET", "/metrics", api_metrics},
    {"GET", "/api/v1/responses", api_responses},
    {"GET", "/api/v1/responses/{id}", api_response_get},
    {"POST", "/api/v1/sessions/{id}/halt", api_session_halt},
    {"POST", "/api/v1/sessions/{id}/resume", api_session_resume},
    {"POST", "/api/v1/agents/{agent}/halt", api_agent_halt},
    {"POST", "/api/v1/agents/{agent}/resume", api_agent_resume},
    {"POST", "/api/v1/agents/{agent}/guard-policy", api_agent_guard_policy},
    {"POST", "/api/v1/agents/{agent}/comply-policy", api_agent_comply_policy},
    {"POST", "/v1/traces", api_otlp_traces},
    {"POST", "/v1/logs", api_otlp_logs},
    {"POST", "/v1/metrics", api_otlp_metrics},
    {"GET", "/", api_index},
    {"GET", "/assets/{name}", api_asset},
};

/* Per-request state while a body arrives. */
struct req_state {
    tt__buf body;
    int too_big;
    struct http *h;             /* set for an OTLP request (counted in h->otlp_open) */
    int refused;                /* an OTLP request refused on its headers: the body is dropped */
    struct otlp_http_out early; /* its answer */
};

static void add_common_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
}

enum MHD_Result http_stream(const struct http_req *r, const char *ctype, size_t block,
                            MHD_ContentReaderCallback rd, void *cls,
                            MHD_ContentReaderFreeCallback fr)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, rd, cls, fr);
    if (!resp) {
        fr(cls);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    add_common_headers(resp);
    enum MHD_Result rc = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* A JSON body with the common headers and, for a 401, the challenge (NULL: none). */
static enum MHD_Result send_json(const struct http_req *r, unsigned status, const tt__buf *body,
                                 const char *challenge)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(body->len, body->data, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (challenge) {
        MHD_add_response_header(resp, "WWW-Authenticate", challenge);
    }
    add_common_headers(resp);
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result http_json(const struct http_req *r, unsigned status, const tt__buf *body)
{
    return send_json(r, status, body, NULL);
}

/* The error body every route answers with: {"error":msg,"status":status}. */
static void error_body(tt__buf *b, unsigned status, const char *msg)
{
    tt__buf_init(b, 4096);
    tt__json j;
    tt__json_init(&j, b);
    tt__json_obj_begin(&j);
    tt__json_kv_cstr(&j, "error", msg);
    tt__json_kv_u64(&j, "status", status);
    tt__json_obj_end(&j);
}

enum MHD_Result http_error(const struct http_req *r, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tt__buf b;
    error_body(&b, status, msg);
    enum MHD_Result rc = http_json(r, status, &b);
    tt__buf_fini(&b);
    return rc;
}

int http_list_open(const struct http_req *r, struct http_list *l, const char *name)
{
    if (store_read_open(r->ctx->store, &l->rd) != 0) {
        return -1;
    }
    tt__buf_init(&l->b, 64u << 20);
    tt__json_init(&l->j, &l->b);
    tt__json_obj_begin(&l->j);
    tt__json_key(&l->j, name);
    tt__json_arr_begin(&l->j);
    return 0;
}

void http_list_end_array(struct http_list *l)
{
    tt__json_arr_end(&l->j);
}

enum MHD_Result http_list_reply(const struct http_req *r, struct http_list *l, int n,
                                const char *what)
{
    tt__json_obj_end(&l->j);
    store_read_close(l->rd);
    enum MHD_Result rc =
        n == -ENOTSUP
            ? http_error(r, MHD_HTTP_NOT_IMPLEMENTED, "this store does not provide %s yet", what)
        : n < 0    ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query %s", what)
        : l->j.err ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "answer too large")
                   : http_json(r, MHD_HTTP_OK, &l->b);
    tt__buf_fini(&l->b);
    return rc;
}

const char *http_param(const struct http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct check_ctx {
    const char *const *allowed;
    char msg[300];
};

static enum MHD_Result check_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    struct check_ctx *cc = cls;
    int known = 0;
    for (const char *const *a = cc->allowed; *a; a++) {
        known |= strcmp(*a, key) == 0;
    }
    if (!known) {
        snprintf(cc->msg, sizeof cc->msg, "unknown parameter \"%.200s\"", key);
        return MHD_NO;
    }
    if (value && strlen(value) > HTTP_PARAM_MAX) {
        snprintf(cc->msg, sizeof cc->msg, "parameter \"%.200s\" longer than %d bytes", key,
                 HTTP_PARAM_MAX);
        return MHD_NO;
    }
    return MHD_YES;
}

const char *http_params_check(const struct http_req *r, const char *const *allowed)
{
    static __thread struct check_ctx cc;
    cc.allowed = allowed;
    cc.msg[0] = 0;
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, check_one, &cc);
    return cc.msg[0] ? cc.msg : NULL;
}

const char *http_path_param(const struct http_req *r, const char *name)
{
    for (int i = 0; i < r->n_path; i++) {
        if (strcmp(r->path_names[i], name) == 0) {
            return r->path_values[i];
        }
    }
    return NULL;
}

/* Copy one path segment (libmicrohttpd has already percent-decoded the path); -1 if too long
 * or holding control characters. */
static int segment_copy(const char *s, size_t n, char *out, size_t cap)
{
    if (n >= cap) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            return -1;
        }
    }
    memcpy(out, s, n);
    out[n] = 0;
    return 0;
}

/* Match url against a route path with {name} segments; fills r's path parameters.
 * Returns 1 on a match, 0 if not, -1 if it matched but a segment was malformed. */
static int route_match(const char *pattern, const char *url, struct http_req *r)
{
    r->n_path = 0;
    while (*pattern && *url) {
        if (*pattern != '/' || *url != '/') {
            return 0;
        }
        pattern++;
        url++;
        const char *pe = strchr(pattern, '/'), *ue = strchr(url, '/');
        size_t pn = pe ? (size_t)(pe - pattern) : strlen(pattern);
        size_t un = ue ? (size_t)(ue - url) : strlen(url);
        if (pn > 2 && pattern[0] == '{' && pattern[pn - 1] == '}') {
            if (un == 0 || r->n_path == 4) {
                return 0;
            }
            static __thread char names[4][64];
            snprintf(names[r->n_path], sizeof names[0], "%.*s", (int)(pn - 2), pattern + 1);
            r->path_names[r->n_path] = names[r->n_path];
            if (segment_copy(url, un, r->path_values[r->n_path], sizeof r->path_values[0])) {
                return -1;
            }
            r->n_path++;
        } else if (pn != un || memcmp(pattern, url, pn) != 0) {
            return 0;
        }
        pattern += pn;
        url += un;
    }
    return *pattern == 0 && *url == 0;
}

/* The API and the metrics need the operator token when one is configured; /healthz and the
 * dashboard's static files do not (they hold no telemetry). Checked before routing, so an
 * unauthenticated peer learns nothing about which routes exist. */
static int needs_token(const char *url)
{
    return strncmp(url, "/api/", 5) == 0 || strcmp(url, "/metrics") == 0 ||
           strncmp(url, "/metrics/", 9) == 0;
}

int http_is_otlp(const char *url)
{
    return strncmp(url, "/v1/", 4) == 0;
}

static enum MHD_Result refuse(struct http_req *r)
{
    const char *msg = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization")
                          ? "wrong operator token"
                          : "this collector requires an operator token (Authorization: Bearer)";
    tt__buf b;
    error_body(&b, MHD_HTTP_UNAUTHORIZED, msg);
    enum MHD_Result rc = send_json(r, MHD_HTTP_UNAUTHORIZED, &b, "Bearer realm=\"telltale\"");
    tt__buf_fini(&b);
    return rc;
}

int http_param_u64(const struct http_req *r, const char *name, uint64_t lo, uint64_t hi,
                   uint64_t def, uint64_t *out)
{
    const char *v = http_param(r, name);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    if (*v < '0' || *v > '9') {
        return -1;
    }
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x < lo || x > hi) {
        return -1;
    }
    *out = x;
    return 0;
}

static enum MHD_Result dispatch(struct http_req *r)
{
    char why[300];
    unsigned refused = browser_check_request(r, why, sizeof why);
    if (refused) {
        return http_error(r, refused, "%s", why);
    }
    if (r->ctx->otlp_only && !http_is_otlp(r->url)) {
        return http_error(r, MHD_HTTP_NOT_FOUND,
                          "this listener takes OTLP/HTTP only (POST /v1/traces, /v1/logs, "
                          "/v1/metrics); the API is on the --http port");
    }
    if (needs_token(r->url) &&
        !auth_operator_ok(r->ctx->auth,
                          MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization"))) {
        return refuse(r);
    }
    int path_known = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int m = route_match(routes[i].path, r->url, r);
        if (m < 0) {
            return http_error(r, MHD_HTTP_BAD_REQUEST, "malformed path segment in %s", r->url);
        }
        if (m == 0) {
            continue;
        }
        path_known = 1;
        if (strcmp(routes[i].method, r->method) == 0) {
            /* OTLP takes protobuf too and answers 415 itself; the Origin check above holds. */
            refused = http_is_otlp(r->url) ? 0 : browser_check_body(r, why, sizeof why);
            return refused ? http_error(r, refused, "%s", why) : routes[i].fn(r);
        }
    }
    if (path_known) {
        return http_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method %s not allowed on %s", r->method,
                          r->url);
    }
    return http_error(r, MHD_HTTP_NOT_FOUND, "no such route: %s", r->url);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http *h = cls;
    struct req_state *st = *con_cls;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st) {
            return MHD_NO;
        }
        tt__buf_init(&st->body, http_is_otlp(url) ? OTLP_BODY_MAX : HTTP_BODY_MAX);
        if (http_is_otlp(url)) {
            st->h = h;
            atomic_fetch_add(&h->otlp_open, 1);
        }
        st->refused = api_otlp_early(conn, &h->ctx, method, url, &st->early);
        *con_cls = st;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!st->refused && tt__buf_append(&st->body, upload, *upload_size) != 0) {
            st->too_big = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (st->refused) {
        return api_otlp_send(conn, &st->early);
    }
    struct http_req r;
    memset(&r, 0, sizeof r);
    r.conn = conn;
    r.method = method;
    r.url = url;
    r.ctx = &h->ctx;
    r.body = &st->body;
    if (st->too_big) {
        return http_error(&r, MHD_HTTP_CONTENT_TOO_LARGE, "request body above %u bytes",
                          http_is_otlp(url) ? OTLP_BODY_MAX : HTTP_BODY_MAX);
    }
    return dispatch(&r);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)conn;
    (void)code;
    struct req_state *st = *con_cls;
    if (st) {
        if (st->h) {
            atomic_fetch_sub(&st->h->otlp_open, 1);
        }
        tt__buf_fini(&st->body);
        tt__buf_fini(&st->early.body); /* when it was never sent */
        free(st);
        *con_cls = NULL;
    }
}

static int parse_hostport(const char *hp, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon;
    memset(ss, 0, sizeof *ss);
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (!close || close[1] != ':' || (size_t)(close - hp - 1) >= sizeof host) {
            return -1;
        }
        memcpy(host, hp + 1, (size_t)(close - hp - 1));
        host[close - hp - 1] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon || (size_t)(colon - hp) >= sizeof host) {
            return -1;
        }
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535) {
        return -1;
    }
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (strcmp(host, "localhost") == 0) {
        snprintf(host, sizeof host, "127.0.0.1");
    }
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    return -1;
}

/* A listening socket on ss; ss receives the bound address (its port when it was 0). */
static int bind_listener(struct sockaddr_storage *ss, socklen_t slen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    socklen_t len = slen;
    if (bind(fd, (struct sockaddr *)ss, slen) != 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)ss, &len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int http_start(struct http **out, const char *hostport, const struct http_ctx *ctx, char *bound,
               size_t boundlen, char *err, size_t errlen)
{
    *out = NULL;
    struct sockaddr_storage ss;
    socklen_t slen;
    if (parse_hostport(hostport, &ss, &slen) != 0) {
        snprintf(err, errlen, "%s %s: expected HOST:PORT with a numeric host",
                 ctx->otlp_only ? "--otlp-http" : "--http", hostport);
        return -1;
    }
    struct http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->ctx = *ctx;
    h->ctx.tls_cert_pem = h->ctx.tls_key_pem = NULL; /* borrowed for this call only */
    /* Bound here, before the daemon's threads start, so the address the Host check compares
     * with (api/browser.c) is known to every request, the first one included. */
    int fd = bind_listener(&ss, slen);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen for %s on %s: %s",
                 ctx->otlp_only ? "OTLP/HTTP" : "HTTP", hostport, strerror(errno));
        free(h);
        return -1;
    }
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(bound, boundlen, "[%s]:%u", host, port);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(bound, boundlen, "%s:%u", host, port);
    }
    snprintf(h->ctx.self_host, sizeof h->ctx.self_host, "%s", host);
    h->ctx.self_port = port;
    /* Poll, not select (MHD_USE_AUTO picks poll with a thread per connection): select() cannot
     * watch a descriptor above FD_SETSIZE (1024), so with a thousand agent connections open every
     * HTTP connection was reset. A thread per connection because a live-stream reader waits for
     * events inside its content callback. The limits keep one peer from taking every slot; the
     * timeout frees a connection that stops sending (a half-sent request) or stops reading. */
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_THREAD_PER_CONNECTION | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    /* --https: libmicrohttpd's TLS is GnuTLS, the library of the tls:// listeners. */
    struct MHD_OptionItem tls_opts[] = {{MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)ctx->tls_cert_pem},
                                        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)ctx->tls_key_pem},
                                        {MHD_OPTION_END, 0, NULL}};
    int tls = ctx->tls_cert_pem && ctx->tls_key_pem;
    flags |= tls ? MHD_USE_TLS : 0;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, h, MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONN_MAX,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_CONN_PER_IP_MAX,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256u << 10),
                            MHD_OPTION_ARRAY, tls ? tls_opts : &tls_opts[2], MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "cannot listen for %s on %s: %s",
                 ctx->otlp_only ? "OTLP/HTTP" : "HTTP", hostport, strerror(errno));
        close(fd);
        free(h);
        return -1;
    }
    *out = h;
    return 0;
}

void http_drain_otlp(struct http *h, unsigned ms)
{
    if (!h) {
        return;
    }
    struct timespec t0, now, nap = {0, 5000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t spent = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (atomic_load(&h->otlp_open) == 0 || spent >= (int64_t)ms) {
            return;
        }
        nanosleep(&nap, NULL);
    }
}

void http_stop(struct http *h)
{
    if (h) {
        MHD_stop_daemon(h->d);
        free(h);
    }
}

/*
 * otlp.c - the OTLP source (otlp.h): ingest tokens, the mapping of otlp_decode.c, submission
 * through the source seam, and the OTLP/HTTP answers (docs/otel.md).
 *
 * Who may export (secure by default):
 * - with --ingest-tokens, every request needs "Authorization: Bearer TOKEN" (401 without one,
 *   403 with an unknown one); the token's agent is the agent, its identity "token:AGENT"; a
 *   resource whose service.name names another agent is refused (partial success);
 * - without --ingest-tokens, only with --ingest-open and from a loopback peer whose owner the
 *   kernel tells (identity "uid:N", as a native agent on loopback TCP): the agent is the
 *   resource's service.name; otherwise 401.
 *
 * Retried exports: each stored batch's instance id is a hash of the agent and of the trace and
 * span ids of its spans, its sequence numbers 1..n, so a resent export is the same (instance,
 * seq) range and the store answers duplicate (acknowledged again, stored once).
 */
#include "collector/source/otlp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "collector/api/auth.h"
#include "collector/source/identity.h"
#include "collector/source/otlp_decode.h"
#include "collector/source/source.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/pb.h"

#define OTLP_WAIT_S 30 /* longest wait for the store before answering 503 */

/* What a request waits for: shared by its thread and its items' completions (refs), and on
 * the source's list of waits until the last reference goes. */
struct otlp_wait {
    struct otlp_wait *prev, *next; /* x->waits, under x->mu */
    int refs;
    int pending;
    uint64_t rejected; /* spans of refused batches */
    const char *reason;
    int retry; /* a batch was refused for now (or the store is unusable) */
};

struct otlp {
    struct source src; /* first: the seam's part */
    const struct collector_opts *o;
    const struct auth *auth;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int closing;
    struct otlp_wait *waits; /* every wait with a reference left (under mu) */
};

/* Under x->mu. */
static void wait_link(struct otlp *x, struct otlp_wait *w)
{
    w->prev = NULL;
    w->next = x->waits;
    if (x->waits) {
        x->waits->prev = w;
    }
    x->waits = w;
}

/* Under x->mu: drop one reference; the last one unlinks and frees. */
static void wait_unref(struct otlp *x, struct otlp_wait *w)
{
    if (--w->refs == 0) {
        if (w->prev) {
            w->prev->next = w->next;
        } else {
            x->waits = w->next;
        }
        if (w->next) {
            w->next->prev = w->prev;
        }
        free(w);
    }
}

/* Loop thread: record, wake the request. frame_no holds the item's span count. */
static void otlp_complete(struct source *src, struct store_item *it, enum source_result r,
                          const char *reason)
{
    struct otlp *x = (struct otlp *)src;
    struct otlp_wait *w = it->cookie;
    pthread_mutex_lock(&x->mu);
    if (r == SOURCE_REFUSED) {
        w->rejected += it->frame_no;
        w->reason = w->reason ? w->reason : reason;
    } else if (r == SOURCE_RETRY || r == SOURCE_FATAL) {
        w->retry = 1;
    }
    if (--w->pending == 0) {
        pthread_cond_broadcast(&x->cv);
    }
    wait_unref(x, w);
    pthread_mutex_unlock(&x->mu);
}

static const struct source_ops otlp_ops = {"otlp", otlp_complete, NULL};

int otlp_open(struct otlp **out, const struct collector_opts *o, struct pipeline *pl,
              const struct auth *auth)
{
    struct otlp *x = calloc(1, sizeof *x);
    *out = NULL;
    if (!x) {
        return -1;
    }
    x->o = o;
    x->auth = auth;
    pthread_mutex_init(&x->mu, NULL);
    tt__cond_init_mono(&x->cv);
    if (pipeline_attach(pl, &x->src, &otlp_ops) != 0) {
        otlp_free(x);
        return -1;
    }
    *out = x;
    return 0;
}

void otlp_shutdown(struct otlp *x)
{
    if (x) {
        pthread_mutex_lock(&x->mu);
        x->closing = 1;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
    }
}

void otlp_free(struct otlp *x)
{
    if (x) {
        /* The store is closed and the HTTP threads have ended: no completion is owed any more,
         * and no request holds a wait. The waits of items the store took but whose completions
         * the loop never dispatched (it ended first) are freed here, as ingest_close frees the
         * connections that still owed completions (docs/design.md, the lifetime rule). */
        while (x->waits) {
            struct otlp_wait *w = x->waits;
            x->waits = w->next;
            free(w);
        }
        pthread_cond_destroy(&x->cv);
        pthread_mutex_destroy(&x->mu);
        free(x);
    }
}

/* --- answers -------------------------------------------------------------------------------- */

enum { ENC_PB, ENC_JSON };

/* gRPC codes of the google.rpc.Status an OTLP/HTTP error carries. */
enum {
    RPC_INVALID_ARGUMENT = 3,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_UNAVAILABLE = 14,
    RPC_UNAUTHENTICATED = 16
};

static void answer_init(struct otlp_http_out *out, unsigned status, int enc)
{
    out->status = status;
    out->content_type = enc == ENC_PB ? "application/x-protobuf" : "application/json";
    tt__buf_init(&out->body, 8192);
}

/* An error: Status { code = 1, message = 2 } in the request's encoding. */
static void answer_error(struct otlp_http_out *out, unsigned status, int enc, int code,
                         const char *msg)
{
    answer_init(out, status, enc);
    if (enc == ENC_PB) {
        size_t mn = strlen(msg);
        if (tt__buf_reserve(&out->body, 2 * TT_PB_VARINT_MAX + mn) == 0) {
            uint8_t *q = out->body.data + out->body.len;
            q = tt__pb_put_uint(q, 1, (uint64_t)code);
            q = tt__pb_put_bytes(q, 2, msg, mn);
            out->body.len = (size_t)(q - out->body.data);
        }
    } else {
        tt__json j;
        tt__json_init(&j, &out->body);
        tt__json_obj_begin(&j);
        tt__json_kv_u64(&j, "code", (uint64_t)code);
        tt__json_kv_cstr(&j, "message", msg);
        tt__json_obj_end(&j);
    }
    out->retry_after_s = status == 503 ? 1 : 0;
    out->challenge = status == 401;
}

/* 200: ExportTraceServiceResponse { partial_success = 1 { rejected_spans = 1,
 * error_message = 2 } } (the logs' answer has the same numbers), empty when nothing was
 * rejected; json_name is the rejected count's name in JSON. */
static void answer_ok(struct otlp_http_out *out, int enc, const char *json_name, uint64_t rejected,
                      const char *msg)
{
    answer_init(out, 200, enc);
    if (enc == ENC_PB) {
        if (!rejected) {
            return;
        }
        size_t mn = strlen(msg);
        size_t inner = 1 + tt__pb_varint_size(rejected) + tt__pb_len_field_size(mn) + 4;
        if (tt__buf_reserve(&out->body, inner + 2 * TT_PB_VARINT_MAX) == 0) {
            uint8_t *q = out->body.data;
            size_t in2 = 1 + tt__pb_varint_size(rejected) + 1 + tt__pb_varint_size(mn) + mn;
            q = tt__pb_put_tag(q, 1, TT_PB_LEN);
            q = tt__pb_put_varint(q, in2);
            q = tt__pb_put_uint(q, 1, rejected);
            q = tt__pb_put_bytes(q, 2, msg, mn);
            out->body.len = (size_t)(q - out->body.data);
        }
        return;
    }
    tt__json j;
    tt__json_init(&j, &out->body);
    tt__json_obj_begin(&j);
    if (rejected) {
        char n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)rejected);
        tt__json_key(&j, "partialSuccess");
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, json_name, n); /* int64: a decimal string in OTLP/JSON */
        tt__json_kv_cstr(&j, "errorMessage", msg);
        tt__json_obj_end(&j);
    }
    tt__json_obj_end(&j);
}

/* --- who ------------------------------------------------------------------------------------ */

/* 0 with *token set (NULL when there is none), or the status to refuse with. */
static unsigned bearer(const char *h, char *token, size_t n)
{
    token[0] = 0;
    if (!h) {
        return 0;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        return 401;
    }
    h += 7;
    while (*h == ' ') {
        h++;
    }
    size_t len = strlen(h);
    while (len && h[len - 1] == ' ') {
        len--;
    }
    if (len == 0 || len >= n) {
        return 403;
    }
    memcpy(token, h, len);
    token[len] = 0;
    return 0;
}

/* The request's identity and, with a token, its agent. 0, or an HTTP status with msg. */
static unsigned authenticate(const struct otlp *x, const struct otlp_http_in *in, char *agent,
                             char *identity, const char **msg)
{
    tt__hello h;                /* only its token is read */
    char token[sizeof h.token]; /* AUTH_TOKEN_MAX bytes and the NUL */
    agent[0] = 0;
    unsigned st = bearer(in->authorization, token, sizeof token);
    if (st) {
        *msg = st == 401 ? "Authorization must be \"Bearer TOKEN\"" : "unknown ingest token";
        return st;
    }
    char err[256] = "";
    memset(&h, 0, sizeof h);
    memcpy(h.token, token, sizeof h.token);
    int a = auth_authorize((void *)x->auth, &h, agent, err, sizeof err);
    memset(&h, 0, sizeof h);
    memset(token, 0, sizeof token);
    if (a == 1) {
        snprintf(identity, IDENTITY_MAX, "token:%s", agent);
        return 0;
    }
    if (a < 0) {
        *msg = in->authorization ? "unknown ingest token"
                                 : "this collector requires an ingest token "
                                   "(Authorization: Bearer)";
        return in->authorization ? 403 : 401;
    }
    /* No ingest tokens configured. */
    if (in->authorization) {
        *msg = "this collector has no ingest tokens (--ingest-tokens)";
        return 403;
    }
    if (!x->o->ingest_open) {
        *msg = "this collector requires an ingest token (--ingest-tokens; --ingest-open allows "
               "loopback exporters without one)";
        return 401;
    }
    struct sockaddr_storage ps;
    socklen_t pl = sizeof ps;
    struct peer p;
    memset(&p, 0, sizeof p);
    int loop = 0;
    if (getpeername(in->peer_fd, (struct sockaddr *)&ps, &pl) == 0) {
        if (ps.ss_family == AF_INET) {
            loop = (ntohl(((struct sockaddr_in *)&ps)->sin_addr.s_addr) >> 24) == 127;
        } else if (ps.ss_family == AF_INET6) {
            loop = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ps)->sin6_addr);
        }
    }
    if (!loop ||
        peer_identity(x->o, in->peer_fd, &p, identity, IDENTITY_MAX, err, sizeof err) != 0 ||
        strncmp(identity, "uid:", 4) != 0) {
        *msg = "--ingest-open admits loopback exporters whose user is known; others need an "
               "ingest token";
        return 401;
    }
    return 0;
}

static int agent_name_ok(tt__bstr s)
{
    if (s.n == 0 || s.n > 255) {
        return 0;
    }
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < 0x20 || s.p[i] == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* The agent of a resource, or NULL with the reason. */
static const char *resource_agent(const struct otlp_resource *r, const char *token_agent, char *buf,
                                  size_t n, const char **why)
{
    tt__bstr sn = r->service_name;
    int unset = sn.n == 0 || (sn.n >= 15 && memcmp(sn.p, "unknown_service", 15) == 0);
    if (token_agent[0]) {
        if (!unset && (sn.n != strlen(token_agent) || memcmp(sn.p, token_agent, sn.n) != 0)) {
            *why = "the resource's service.name is not the agent of the ingest token";
            return NULL;
        }
        return token_agent;
    }
    if (unset || !agent_name_ok(sn)) {
        *why = "a resource without a usable service.name";
        return NULL;
    }
    snprintf(buf, n, "%.*s", (int)sn.n, (const char *)sn.p);
    return buf;
}

static uint64_t now_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- the request ---------------------------------------------------------------------------- */

static int media_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

/* What a decoded request of either signal offers to submission. */
struct signal_view {
    const struct otlp_resource *res;
    uint32_t n_res;
    const void *req;
    const char *(*refused)(const void *req, uint32_t i);
    int (*encode)(const void *req, uint32_t first, uint32_t n, const char *agent,
                  struct otlp_batch *out);
};

static const char *span_refused(const void *req, uint32_t i)
{
    return ((const struct otlp_request *)req)->spans[i].refused;
}

static int span_encode(const void *req, uint32_t first, uint32_t n, const char *agent,
                       struct otlp_batch *out)
{
    return otlp_batch_encode(req, first, n, agent, out);
}

static const char *log_refused(const void *req, uint32_t i)
{
    return ((const struct otlp_logs *)req)->logs[i].refused;
}

static int log_encode(const void *req, uint32_t first, uint32_t n, const char *agent,
                      struct otlp_batch *out)
{
    return otlp_logs_encode(req, first, n, agent, out);
}

static const char *point_refused(const void *req, uint32_t i)
{
    return ((const struct otlp_metrics *)req)->points[i].refused;
}

static int point_encode(const void *req, uint32_t first, uint32_t n, const char *agent,
                        struct otlp_batch *out)
{
    return otlp_metrics_encode(req, first, n, agent, out);
}

/* Submit the items of v; the wait w gets a reference per item. Returns the items (spans, log
 * records) refused before submission (their reason in *why). */
static uint64_t submit_all(struct otlp *x, const struct signal_view *v, const char *token_agent,
                           const char *identity, struct otlp_wait *w, const char **why, int *oom)
{
    uint64_t rejected = 0;
    char name[256];
    tt__batch_limits lim = {x->o->max_events, x->o->max_attrs};
    for (uint32_t ri = 0; ri < v->n_res; ri++) {
        const struct otlp_resource *r = &v->res[ri];
        const char *rwhy = NULL;
        const char *agent = resource_agent(r, token_agent, name, sizeof name, &rwhy);
        for (uint32_t i = 0; i < r->n; i++) {
            const char *refused = v->refused(v->req, r->first + i);
            if (!agent || refused) {
                rejected++;
                *why = *why ? *why : agent ? refused : rwhy;
            }
        }
        if (!agent) {
            continue;
        }
        for (uint32_t off = 0; off < r->n; off += OTLP_SPANS_PER_BATCH) {
            uint32_t n = r->n - off < OTLP_SPANS_PER_BATCH ? r->n - off : OTLP_SPANS_PER_BATCH;
            struct otlp_batch b;
            struct store_item *it = NULL;
            if (v->encode(v->req, r->first + off, n, agent, &b) != 0 ||
                (b.n_spans && !(it = calloc(1, sizeof *it)))) {
                free(b.raw);
                *oom = 1;
                return rejected;
            }
            if (!b.n_spans) {
                continue;
            }
            it->raw = b.raw;
            it->raw_len = b.raw_len;
            it->frame_no = b.n_spans;
            it->received_ns = now_unix_ns();
            snprintf(it->ident.agent, sizeof it->ident.agent, "%s", agent);
            snprintf(it->ident.identity, sizeof it->ident.identity, "%s", identity);
            memcpy(it->ident.instance, b.instance, 16);
            snprintf(it->ident.library, sizeof it->ident.library, "otlp");
            const char *bad = NULL;
            if (tt__batch_parse(&it->batch, it->raw, it->raw_len, &lim, &bad) != 0) {
                rejected += b.n_spans;
                *why = *why ? *why : "items over the collector's batch limits (--max-events)";
                store_item_free(it);
                continue;
            }
            pthread_mutex_lock(&x->mu);
            w->refs++;
            w->pending++;
            pthread_mutex_unlock(&x->mu);
            source_submit(&x->src, it, w);
        }
    }
    return rejected;
}

/* Wait for w's completions (or shutdown, or OTLP_WAIT_S); 1 when all came. Drops the
 * request's reference. */
static int wait_done(struct otlp *x, struct otlp_wait *w, struct otlp_wait *copy)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += OTLP_WAIT_S;
    pthread_mutex_lock(&x->mu);
    int rc = 0;
    while (w->pending > 0 && !x->closing && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&x->cv, &x->mu, &dl);
    }
    int done = w->pending == 0;
    *copy = *w;
    wait_unref(x, w);
    pthread_mutex_unlock(&x->mu);
    return done;
}

/* The checks on the headers alone: content type, encoding, token. 0 to go on (with *enc,
 * *gz, agent and identity set), or 1 with the answer in out. */
static int check_headers(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out,
                         int *enc_out, int *gz_out, char *agent, char *identity)
{
    memset(out, 0, sizeof *out);
    int enc = media_is(in->content_type, "application/x-protobuf") ? ENC_PB
              : media_is(in->content_type, "application/json")     ? ENC_JSON
                                                                   : -1;
    if (enc < 0) {
        answer_error(out, 415, ENC_JSON, RPC_INVALID_ARGUMENT,
                     "OTLP/HTTP takes application/x-protobuf or application/json");
        return 1;
    }
    int gz = 0;
    if (in->content_encoding && strcasecmp(in->content_encoding, "identity") != 0) {
        if (strcasecmp(in->content_encoding, "gzip") != 0) {
            answer_error(out, 415, enc, RPC_INVALID_ARGUMENT,
                         "Content-Encoding must be gzip or identity");
            return 1;
        }
        gz = 1;
    }
    int closing = 1;
    if (x) {
        pthread_mutex_lock(&x->mu);
        closing = x->closing;
        pthread_mutex_unlock(&x->mu);
    }
    if (closing) {
        answer_error(out, 503, enc, RPC_UNAVAILABLE, "OTLP ingest is not running");
        return 1;
    }
    const char *msg = NULL;
    unsigned st = authenticate(x, in, agent, identity, &msg);
    if (st) {
        answer_error(out, st, enc, st == 401 ? RPC_UNAUTHENTICATED : RPC_PERMISSION_DENIED, msg);
        return 1;
    }
    *enc_out = enc;
    *gz_out = gz;
    return 0;
}

int otlp_check_headers(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out)
{
    char agent[256], identity[IDENTITY_MAX];
    int enc, gz;
    return check_headers(x, in, out, &enc, &gz, agent, identity);
}

enum { SIG_TRACES, SIG_LOGS, SIG_METRICS };

static void free_request(int sig, struct otlp_request *spans, struct otlp_logs *logs,
                         struct otlp_metrics *metrics)
{
    if (sig == SIG_TRACES) {
        otlp_request_free(spans);
    } else if (sig == SIG_LOGS) {
        otlp_logs_free(logs);
    } else {
        otlp_metrics_free(metrics);
    }
}

static void handle(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out,
                   int sig)
{
    char agent[256], identity[IDENTITY_MAX];
    int enc, gz;
    if (check_headers(x, in, out, &enc, &gz, agent, identity)) {
        return;
    }
    const uint8_t *body = in->body;
    size_t len = in->body_len;
    uint8_t *plain = NULL;
    if (gz) {
        int g = otlp_gunzip(in->body, in->body_len, OTLP_BODY_MAX, &plain, &len);
        if (g != 0) {
            answer_error(out, g == -2 ? 413 : 400, enc, RPC_INVALID_ARGUMENT,
                         g == -2 ? "the decompressed body is above 4 MiB"
                                 : "the body is not valid gzip");
            return;
        }
        body = plain;
    }
    if (source_backlog(&x->src) > source_budget(&x->src)) {
        free(plain);
        answer_error(out, 503, enc, RPC_UNAVAILABLE, "the collector is behind; retry later");
        return;
    }
    struct otlp_request spans;
    struct otlp_logs logs;
    struct otlp_metrics metrics;
    struct signal_view v;
    const char *why = NULL;
    int rc;
    if (sig == SIG_TRACES) {
        rc = enc == ENC_PB ? otlp_traces_decode_pb(&spans, body, len, &why)
                           : otlp_traces_decode_json(&spans, body, len, &why);
        v = (struct signal_view){spans.res, spans.n_res, &spans, span_refused, span_encode};
    } else if (sig == SIG_LOGS) {
        rc = enc == ENC_PB ? otlp_logs_decode_pb(&logs, body, len, &why)
                           : otlp_logs_decode_json(&logs, body, len, &why);
        v = (struct signal_view){logs.res, logs.n_res, &logs, log_refused, log_encode};
    } else {
        rc = enc == ENC_PB ? otlp_metrics_decode_pb(&metrics, body, len, &why)
                           : otlp_metrics_decode_json(&metrics, body, len, &why);
        v = (struct signal_view){metrics.res, metrics.n_res, &metrics, point_refused, point_encode};
    }
    struct otlp_wait *w = rc == 0 ? calloc(1, sizeof *w) : NULL, res;
    if (!w) {
        if (rc == 0) {
            free_request(sig, &spans, &logs, &metrics);
        }
        free(plain);
        answer_error(out,
                     rc == -2 ? 413
                     : rc     ? 400
                              : 503,
                     enc, rc ? RPC_INVALID_ARGUMENT : RPC_UNAVAILABLE,
                     rc ? (why ? why : "malformed request") : "out of memory");
        return;
    }
    w->refs = 1;
    pthread_mutex_lock(&x->mu);
    wait_link(x, w);
    pthread_mutex_unlock(&x->mu);
    int oom = 0;
    const char *rwhy = NULL;
    uint64_t rejected = submit_all(x, &v, agent, identity, w, &rwhy, &oom);
    free_request(sig, &spans, &logs, &metrics);
    free(plain);
    int done = wait_done(x, w, &res);
    if (!done || res.retry || oom) {
        answer_error(out, 503, enc, RPC_UNAVAILABLE,
                     !done ? "the store did not answer in time; retry"
                           : "the store could not take the request now; retry");
        return;
    }
    rejected += res.rejected;
    answer_ok(out, enc,
              sig == SIG_TRACES ? "rejectedSpans"
              : sig == SIG_LOGS ? "rejectedLogRecords"
                                : "rejectedDataPoints",
              rejected,
              rwhy         ? rwhy
              : res.reason ? res.reason
                           : "");
}

void otlp_handle_traces(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out)
{
    handle(x, in, out, SIG_TRACES);
}

void otlp_handle_logs(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out)
{
    handle(x, in, out, SIG_LOGS);
}

void otlp_handle_metrics(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out)
{
    handle(x, in, out, SIG_METRICS);
}

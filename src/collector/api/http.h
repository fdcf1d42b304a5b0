/*
 * http.h - the collector's HTTP API on --http (libmicrohttpd, one thread per connection so a
 * live-stream subscriber can wait without holding anyone up). Routes live in the files of api/
 * and are listed in http.c; docs/http-api.md documents them.
 */
#ifndef TT_COLLECTOR_HTTP_H
#define TT_COLLECTOR_HTTP_H

#include <limits.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json.h"

struct hub;
struct ingest;
struct nats_src;
struct auth;
struct monitor;
struct alerts;

struct store;
struct store_read;

struct http_ctx {
    struct store *store; /* stored data (store.h): readers per request */
    struct hub *hub;
    struct ingest *ingest;
    const struct auth *auth;  /* operator token for /api/ and /metrics (NULL: none) */
    struct monitor *monitor;  /* live per-agent figures (NULL: none) */
    struct follow *follow;    /* the monitor follows a shared store (NULL: its own commits) */
    struct alerts *alerts;    /* alert counters (NULL: none) */
    struct watch *watch;      /* the collector's compliance checks (NULL: none) */
    struct otlp *otlp;        /* OTLP ingest on /v1/ (source/otlp.h; NULL: none) */
    struct nats_src *nats;    /* --nats: operator orders also on control subjects (NULL: none) */
    int otlp_only;            /* --otlp-http's listener: /v1/ alone, no API or dashboard */
    void *app;                /* the rest of the collector, for routes that need it */
    char allowed_hosts[1024]; /* --allowed-hosts: extra Host names, comma-separated */
    /* Set by http_start once bound: the address the Host header must name (api/browser.c). */
    char self_host[64];
    unsigned self_port;
    char scheme[8]; /* "http" or "https" (empty means http) */
    /* --https: the PEM certificate chain and key (borrowed for the call of http_start), or
     * NULL for plain HTTP */
    const char *tls_cert_pem;
    const char *tls_key_pem;
};

struct http;

/* Listen on HOST:PORT (port 0 picks one); bound receives "HOST:PORT" as bound. */
int http_start(struct http **out, const char *hostport, const struct http_ctx *ctx, char *bound,
               size_t boundlen, char *err, size_t errlen);
void http_stop(struct http *h);
/* Wait up to ms for the OTLP requests under way to be answered (after otlp_shutdown woke
 * them): http_stop shuts every connection's socket at once, and a 503 still being written
 * would reach the exporter as a reset. */
void http_drain_otlp(struct http *h, unsigned ms);

/* What a route gets. */
struct http_req {
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    const struct http_ctx *ctx;
    const tt__buf *body; /* POST body, at most HTTP_BODY_MAX bytes */
    /* Path parameters: a route "/api/v1/sessions/{id}" matched "/api/v1/sessions/abc". */
    int n_path;
    const char *path_names[4];
    char path_values[4][256];
};

/* The value of a {name} segment of the route's path, URL-decoded, or NULL. */
const char *http_path_param(const struct http_req *r, const char *name);

#define HTTP_BODY_MAX (64u << 10)
#define HTTP_PARAM_MAX 1024
/* HTTP connections at most (each has a thread), from one peer address at most, and the idle
 * time after which a connection that neither sends nor reads is closed (above the live
 * stream's 15 s keepalive). docs/operations.md states them. */
#define HTTP_CONN_MAX 1024
#define HTTP_CONN_PER_IP_MAX 512
#define HTTP_IDLE_TIMEOUT_S 30

typedef enum MHD_Result (*http_route_fn)(const struct http_req *r);

/* Responses. Every body is JSON (or a stream) with nosniff and no-store. */
enum MHD_Result http_json(const struct http_req *r, unsigned status, const tt__buf *body);
/* A 200 response of unknown length produced by rd (blocks of block bytes) of type ctype, not
 * cached; fr(cls) runs when it ends, also when it cannot be queued. */
enum MHD_Result http_stream(const struct http_req *r, const char *ctype, size_t block,
                            MHD_ContentReaderCallback rd, void *cls,
                            MHD_ContentReaderFreeCallback fr);
enum MHD_Result http_error(const struct http_req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A JSON answer {"NAME": [rows...], ...} over a store reader, the shape of the list routes.
 * http_list_open opens the reader and writes up to the array's '[' (-1: the store cannot be
 * read; the route answers 503); the route writes its rows into l->j; http_list_end_array closes
 * the array, after which more keys may follow; http_list_reply closes the object and the reader
 * and answers: 500 "cannot query WHAT" when n < 0, 500 "answer too large" when the answer
 * outgrew its buffer, else 200. */
struct http_list {
    struct store_read *rd;
    tt__buf b;
    tt__json j;
};
int http_list_open(const struct http_req *r, struct http_list *l, const char *name);
void http_list_end_array(struct http_list *l);
enum MHD_Result http_list_reply(const struct http_req *r, struct http_list *l, int n,
                                const char *what);

/* Query parameters: NULL if absent. http_params_check refuses a request with a parameter not
 * in allowed (NULL-terminated) or longer than HTTP_PARAM_MAX; returns 0 or an error message. */
const char *http_param(const struct http_req *r, const char *name);
const char *http_params_check(const struct http_req *r, const char *const *allowed);

/* A time parameter: Unix ns as an integer, or RFC 3339 ("2026-11-24T10:00:00.5Z"). */
int http_parse_time(const char *s, int64_t *out); /* defined in params.c */

/* The checks against web pages in a browser (api/browser.c): 0 to go on, or the HTTP status
 * to refuse with, msg saying why. browser_check_request (before the token) checks the Host
 * header and a state-changing request's Origin; browser_check_body (once a route matched) that
 * a state-changing request declares a JSON body. */
unsigned browser_check_request(const struct http_req *r, char *msg, size_t msglen);
unsigned browser_check_body(const struct http_req *r, char *msg, size_t msglen);
/* Whether a Host header value (NULL: absent) names this collector (c's self_host, self_port and
 * allowed_hosts). */
int browser_host_ok(const struct http_ctx *c, const char *value);

/* Routes (api/events.c, api/agents.c, ...). */
enum MHD_Result api_events(const struct http_req *r);
enum MHD_Result api_events_count(const struct http_req *r);
enum MHD_Result api_stream(const struct http_req *r);
enum MHD_Result api_agents(const struct http_req *r);
enum MHD_Result api_health(const struct http_req *r);
enum MHD_Result api_status(const struct http_req *r);
enum MHD_Result api_agent(const struct http_req *r);
enum MHD_Result api_sessions(const struct http_req *r);
enum MHD_Result api_session(const struct http_req *r);
enum MHD_Result api_alerts(const struct http_req *r);
enum MHD_Result api_alert_ack(const struct http_req *r);
enum MHD_Result api_incidents(const struct http_req *r);
enum MHD_Result api_incident_get(const struct http_req *r);
enum MHD_Result api_metrics(const struct http_req *r);
/* GET /api/v1/series (api/series.c): per-agent series of a range from the rollups. */
enum MHD_Result api_series(const struct http_req *r);
/* The answered bucket width for a range (api/series.c): 0, or -1 when too long. */
int series_pick_step(int64_t from_s, int64_t span_s, int64_t now_s, int *step_s, int *level_s);

/* A positive integer parameter in [lo, hi], or def when absent: 0, or -1 if malformed. */
int http_param_u64(const struct http_req *r, const char *name, uint64_t lo, uint64_t hi,
                   uint64_t def, uint64_t *out);
enum MHD_Result api_responses(const struct http_req *r);
enum MHD_Result api_response_get(const struct http_req *r);
/* Halt and resume (api/halt.c): of a session's agents, or of one agent's every session. */
enum MHD_Result api_session_halt(const struct http_req *r);
enum MHD_Result api_session_resume(const struct http_req *r);
enum MHD_Result api_agent_halt(const struct http_req *r);
enum MHD_Result api_agent_resume(const struct http_req *r);
enum MHD_Result api_agent_guard_policy(const struct http_req *r);
enum MHD_Result api_agent_comply_policy(const struct http_req *r);
/* The start of an order to an agent (POST /api/v1/agents/{agent}/...): no query parameters,
 * an agent name of 1 to 255 bytes. Returns the name and *body (the JSON body parsed, NULL if
 * none or invalid; the caller frees it), or NULL with the error answer queued in *refused. */
struct json_t;
const char *api_agent_order(const struct http_req *r, struct json_t **body,
                            enum MHD_Result *refused);
/* OTLP/HTTP ingest (api/otlp.c): POST /v1/traces, /v1/logs and /v1/metrics, their own content types and ingest tokens
 * (docs/otel.md); bodies up to OTLP_BODY_MAX. */
enum MHD_Result api_otlp_traces(const struct http_req *r);
enum MHD_Result api_otlp_logs(const struct http_req *r);
enum MHD_Result api_otlp_metrics(const struct http_req *r);
/* Called with the headers of every request, before its body: 1 when an OTLP request is refused
 * on its headers alone (the answer in *out, sent with api_otlp_send once the body has been read
 * and dropped), 0 to go on. */
struct otlp_http_out;
int api_otlp_early(struct MHD_Connection *c, const struct http_ctx *ctx, const char *method,
                   const char *url, struct otlp_http_out *out);
/* Send out and release its body. */
enum MHD_Result api_otlp_send(struct MHD_Connection *c, struct otlp_http_out *out);
/* Whether url is an OTLP route (its body limit, content types and tokens are its own). */
int http_is_otlp(const char *url);
/* The dashboard (api/assets.c): GET / and GET /assets/{name}. */
enum MHD_Result api_index(const struct http_req *r);
enum MHD_Result api_asset(const struct http_req *r);

#endif

/*
 * otlp.h - the OTLP source (OTLP/HTTP ingest, docs/otel.md): an export request that the HTTP
 * API received on POST /v1/traces, /v1/logs or /v1/metrics is authenticated by its ingest token, decoded
 * (otlp_decode.h), mapped to Batch payloads, submitted through the source seam (source.h) and
 * answered once the store has decided, as the OTLP/HTTP specification says.
 *
 * Threads: otlp_handle runs on a libmicrohttpd request thread and waits on the source's
 * condition variable for the completions of what it submitted; the completions run on the loop
 * thread (source.h) and only record and signal. A wait belongs to both sides (a count of
 * references), so a request that gave up waiting (shutdown, timeout) leaves its completions
 * somewhere to land; the source lists the waits, and otlp_free frees those whose completions
 * never came.
 */
#ifndef TT_COLLECTOR_OTLP_H
#define TT_COLLECTOR_OTLP_H

#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"
#include "common/buf.h"

struct otlp;
struct pipeline;
struct auth;

/* Attach a new OTLP source to pl; o and auth are borrowed and outlive it. */
int otlp_open(struct otlp **out, const struct collector_opts *o, struct pipeline *pl,
              const struct auth *auth);
/* Wake every waiting request (it answers 503) and refuse new ones: before the HTTP server
 * stops, so that its threads can end. */
void otlp_shutdown(struct otlp *x);
/* After the HTTP server stopped and the store closed (no completion comes any more): frees the
 * waits whose completions never came (items the store took after the loop ended). */
void otlp_free(struct otlp *x);

/* One request as the HTTP layer saw it. */
struct otlp_http_in {
    const char *content_type;     /* NULL: absent */
    const char *content_encoding; /* NULL: absent */
    const char *authorization;    /* NULL: absent */
    int peer_fd;                  /* the client's socket (the identity of --ingest-open) */
    const uint8_t *body;
    size_t body_len;
};

/* The answer: status, its content type and body (the caller frees body with tt__buf_fini),
 * and the headers to add when not 0. */
struct otlp_http_out {
    unsigned status;
    const char *content_type;
    tt__buf body;
    unsigned retry_after_s; /* 503: Retry-After */
    int challenge;          /* 401: WWW-Authenticate: Bearer */
};

/* The checks that need the headers only (content type and encoding, the ingest token), made
 * before the body is read so that an exporter without a valid token cannot make the collector
 * buffer a body: 1 with the refusal in out, 0 to read the body (out then holds nothing). */
int otlp_check_headers(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out);

/* POST /v1/traces, /v1/logs and /v1/metrics. x may be NULL (no source: 503). */
void otlp_handle_traces(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out);
void otlp_handle_logs(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out);
void otlp_handle_metrics(struct otlp *x, const struct otlp_http_in *in, struct otlp_http_out *out);

#endif

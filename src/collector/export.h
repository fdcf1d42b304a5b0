/*
 * export.h - OTLP/HTTP export of what the store committed (docs/otel.md, "Export"): steps and
 * responses as GenAI spans, logs as log records, metrics as gauges, posted to an OTLP/HTTP
 * endpoint (`--otlp-export URL`, the OTEL_EXPORTER_OTLP_* variables) by a thread of its own.
 *
 * Threads: export_on_commit runs on the loop thread (the pipeline's commit hook) and only copies
 * the batch into a queue bounded in bytes (a full queue drops the batch, counted); the export
 * thread decodes, maps, encodes (export_encode.c) and posts with libcurl, retrying retryable
 * answers with backoff and Retry-After. The counters are atomics read by /metrics and
 * /api/v1/status. One exporter per process (a module singleton, like retain.c).
 */
#ifndef TT_COLLECTOR_EXPORT_H
#define TT_COLLECTOR_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"
#include "common/buf.h"
#include "common/json.h"

enum export_signal { EXP_SPANS, EXP_LOGS, EXP_POINTS, EXP__SIGNALS };

/* Why an exported item was dropped; each has a counter per signal. */
enum export_drop {
    EXPD_QUEUE_FULL, /* the queue (--otlp-export-queue) was full when its batch committed */
    EXPD_REJECTED,   /* the receiver answered with a status that is not retryable */
    EXPD_RETRIES,    /* retryable failures for longer than --otlp-export-retry */
    EXPD_UNMATCHED,  /* a step or response end whose begin the exporter never saw */
    EXPD_SHUTDOWN,   /* still queued when the collector stopped */
    EXPD_ENCODE,     /* a request larger than the exporter's limit, or out of memory */
    EXPD__COUNT
};

struct export_config {
    /* The endpoints, complete URLs (empty: that signal is not exported). */
    char url[EXP__SIGNALS][1024];
    uint64_t queue_bytes;  /* the queue's bound: batches waiting or being posted */
    uint64_t timeout_ms;   /* per request (OTEL_EXPORTER_OTLP_TIMEOUT, default 10000) */
    uint64_t retry_for_ms; /* give up a request after retrying this long */
    int gzip;              /* OTEL_EXPORTER_OTLP_COMPRESSION=gzip */
    /* "Name: value\n" lines from OTEL_EXPORTER_OTLP_HEADERS (secrets: never logged). */
    char headers[EXP__SIGNALS][4096];
};

/* The configuration from --otlp-export (option_url, NULL if not given, wins over the variables)
 * and the environment. Returns 1 when something is to be exported, 0 when nothing is, -1 with
 * err set for a bad value (an unsupported protocol, a URL that is not http(s), bad headers). */
int export_configure(struct export_config *c, const char *option_url, uint64_t queue_bytes,
                     uint64_t retry_for_ms, char *err, size_t errlen);

/* Start the thread. 0 or -1. */
int export_start(const struct export_config *c);
/* Loop thread: queue a committed batch for export (nothing when no exporter runs). */
void export_on_commit(const struct store_item *it);
/* Post what is queued for up to grace_ms more, drop (and count) the rest, end the thread. */
void export_stop(uint64_t grace_ms);

/* The figures, for /api/v1/status ("otlp_export") and /metrics. */
void export_status_json(tt__json *j);
void export_metrics_text(tt__buf *b);

const char *export_drop_name(int reason);
const char *export_signal_name(int signal);

/* --- export_encode.c: the mapping (docs/otel.md, "Export"), used by the export thread --- */

/* Open steps and responses, by agent instance and id: what a begin said, until its end. */
struct export_open;
struct export_open *export_open_new(size_t max_entries);
void export_open_free(struct export_open *o);

/* One request per signal, built from batches; the counts of items in each. */
struct export_req {
    tt__buf body[EXP__SIGNALS];
    uint64_t items[EXP__SIGNALS];
    uint64_t unmatched[EXP__SIGNALS]; /* ends without their begin (dropped, EXPD_UNMATCHED) */
};

void export_req_init(struct export_req *r, size_t max_bytes);
void export_req_reset(struct export_req *r);
void export_req_fini(struct export_req *r);
/* Add one committed batch (its agent identity and its raw Batch payload) to the requests: its
 * spans, log records and points are appended (the caller posts a request once it is large).
 * Returns 0, or -1 when a body would exceed its limit or memory ran out (the bodies are back
 * as they were; the batch's items are lost, the caller counts them). */
int export_req_add(struct export_req *r, struct export_open *open, const struct agent_ident *id,
                   const uint8_t *raw, size_t len);
/* The items of a batch by signal, as export_req_add would count them (for drops). */
void export_batch_count(const uint8_t *raw, size_t len, uint64_t counts[EXP__SIGNALS]);

#endif

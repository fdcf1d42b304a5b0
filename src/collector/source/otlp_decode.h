/*
 * otlp_decode.h - OTLP trace export requests (opentelemetry-proto, collector/trace/v1) decoded
 * from their protobuf or JSON encodings into flat spans, and turned into telltale Batch payloads
 * (proto/telltale.proto) by the GenAI mapping of docs/otel.md. No I/O and no collector state:
 * the OTLP source (otlp.c) and the fuzzer (tests/fuzz/fuzz_otlp.c) call it.
 *
 * Every count and length is checked against struct otlp_limits before anything is allocated.
 * The strings of a decoded request point into the protobuf body, or into the JSON tree, which
 * must outlive the request (otlp_request_free releases both what it allocated and the tree).
 */
#ifndef TT_COLLECTOR_OTLP_DECODE_H
#define TT_COLLECTOR_OTLP_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "common/batch.h"

#define OTLP_BODY_MAX (4u << 20)        /* bytes of a request body, after gzip */
#define OTLP_SPANS_MAX 65536            /* spans in a request */
#define OTLP_RESOURCES_MAX 1024         /* resources in a request */
#define OTLP_STR_MAX 4096               /* bytes of a name, an id, a model, a session, an error */
#define OTLP_ATTRS_MAX 256              /* attributes of a span or a resource */
#define OTLP_SPANS_PER_BATCH 4096       /* spans of one resource in one stored batch */
#define OTLP_JSON_ALLOC_MAX (64u << 20) /* bytes jansson may allocate to parse one body */

/* Once, before any thread uses jansson (the collector's start, a fuzzer's initialisation):
 * jansson allocates through a function that the JSON decoders below cap per request. Without
 * it the decoders work, uncapped. */
void otlp_decode_init(void);

/* The GenAI attributes a span may carry, already picked out (empty when absent). */
struct otlp_span {
    uint8_t trace_id[16];
    uint64_t span_id;   /* the 8 bytes, big-endian: its 16 hex digits read the same */
    uint64_t parent_id; /* 0 for a root span */
    tt__bstr name;
    uint64_t start_ns, end_ns;
    uint32_t status_code; /* 0 unset, 1 ok, 2 error */
    tt__bstr status_message;
    tt__bstr operation;                  /* gen_ai.operation.name */
    tt__bstr tool_name;                  /* gen_ai.tool.name */
    tt__bstr model;                      /* gen_ai.request.model */
    tt__bstr provider;                   /* gen_ai.provider.name (gen_ai.system before 1.37) */
    tt__bstr conversation;               /* gen_ai.conversation.id */
    tt__bstr error_type;                 /* error.type */
    int64_t input_tokens, output_tokens; /* gen_ai.usage.*, -1 when absent */
    const char *refused;                 /* static: why this span cannot be stored (NULL: it can) */
};

struct otlp_resource {
    tt__bstr service_name; /* service.name, empty when absent */
    uint32_t first, n;     /* its spans in otlp_request.spans */
};

struct otlp_request {
    struct otlp_resource *res;
    uint32_t n_res;
    struct otlp_span *spans;
    uint32_t n_spans;
    void *json; /* the JSON tree the strings point into (json_t), or NULL */
};

/* 0, or -1 with a static reason in *why (the body is malformed or over a limit: 400); the JSON
 * decoders return -2 when the body needs more than OTLP_JSON_ALLOC_MAX to parse (413). */
int otlp_traces_decode_pb(struct otlp_request *req, const uint8_t *body, size_t n,
                          const char **why);
int otlp_traces_decode_json(struct otlp_request *req, const uint8_t *body, size_t n,
                            const char **why);
void otlp_request_free(struct otlp_request *req);

/* One stored batch: the storable spans among [first, first + n) of a resource. */
struct otlp_batch {
    uint8_t instance[16]; /* derived from the agent and the spans' ids (docs/otel.md) */
    uint8_t *raw;         /* the Batch payload (malloc'd), first_seq 1 */
    size_t raw_len;
    uint32_t n_events;
    uint32_t n_spans;
};

/* Encode the spans of [first, first + n) of req that are not refused, for agent, as a Batch
 * (n_spans 0 and raw NULL when none is storable). 0, or -1 when out of memory. */
int otlp_batch_encode(const struct otlp_request *req, uint32_t first, uint32_t n, const char *agent,
                      struct otlp_batch *out);

/* The telltale step kind of a span (TT_STEP_* of telltale.h) and whether it is a model call
 * (a response is recorded). */
uint32_t otlp_step_kind(const struct otlp_span *s, int *is_llm);

/* --- logs (POST /v1/logs) --- */

#define OTLP_LOG_BODY_MAX 65536 /* bytes of a log record's body */
#define OTLP_KVS_MAX 65536      /* attributes kept in a request, all records together */

/* One attribute kept: its value by type (TT_ATTR_* of telltale.h). */
struct otlp_kv {
    tt__bstr key;
    int type;
    tt__bstr s;
    int64_t i;
    double d;
    int b;
};

struct otlp_log {
    uint64_t time_ns;  /* time_unix_nano, else observed_time_unix_nano */
    uint32_t severity; /* severity_number (1 trace ... 24 fatal4); 9 (info) when unset */
    tt__bstr body;     /* a string body; empty for another type */
    tt__bstr session;  /* gen_ai.conversation.id */
    uint8_t trace_id[16];
    uint32_t first_kv, n_kv; /* its attributes in otlp_logs.kvs */
    const char *refused;
};

/* res[i].first and .n index logs. */
struct otlp_logs {
    struct otlp_resource *res;
    uint32_t n_res;
    struct otlp_log *logs;
    uint32_t n_logs;
    struct otlp_kv *kvs;
    uint32_t n_kvs;
    void *json;
};

int otlp_logs_decode_pb(struct otlp_logs *req, const uint8_t *body, size_t n, const char **why);
int otlp_logs_decode_json(struct otlp_logs *req, const uint8_t *body, size_t n, const char **why);
void otlp_logs_free(struct otlp_logs *req);
/* The records of [first, first + n) that are not refused, as a Batch of log events (n_spans
 * counts the records); the instance is a hash of the agent and of the batch's events. */
int otlp_logs_encode(const struct otlp_logs *req, uint32_t first, uint32_t n, const char *agent,
                     struct otlp_batch *out);

/* --- metrics (POST /v1/metrics) --- */

#define OTLP_METRIC_NAME_MAX 255 /* bytes of a metric's name */
#define OTLP_METRIC_UNIT_MAX 63  /* bytes of its unit */

enum { OTLP_PT_NUMBER, OTLP_PT_HIST };

/* One data point of a gauge, a sum, a histogram, an exponential histogram or a summary. */
struct otlp_point {
    tt__bstr name, unit; /* the metric's */
    uint8_t shape;       /* OTLP_PT_NUMBER (value) or OTLP_PT_HIST (count, sum, min, max) */
    uint8_t kind; /* a number's telltale kind: TT_COUNTER (a delta monotonic sum) or TT_GAUGE;
                          * for a histogram the kind of its count and sum (TT_COUNTER when delta) */
    uint8_t has_sum, has_min, has_max;
    uint8_t skip; /* flagged "no recorded value": neither stored nor refused */
    double value, sum, min, max;
    uint64_t count;
    uint64_t time_ns;
    tt__bstr session; /* the attribute gen_ai.conversation.id */
    uint32_t first_kv, n_kv;
    const char *refused;
};

/* res[i].first and .n index points. */
struct otlp_metrics {
    struct otlp_resource *res;
    uint32_t n_res;
    struct otlp_point *points;
    uint32_t n_points;
    struct otlp_kv *kvs;
    uint32_t n_kvs;
    void *json;
};

int otlp_metrics_decode_pb(struct otlp_metrics *req, const uint8_t *body, size_t n,
                           const char **why);
int otlp_metrics_decode_json(struct otlp_metrics *req, const uint8_t *body, size_t n,
                             const char **why);
void otlp_metrics_free(struct otlp_metrics *req);
/* The events a point makes: 1 for a number, 1 to 4 for a histogram (count, sum, min, max). */
uint32_t otlp_point_events(const struct otlp_point *p);
/* The points of [first, first + n) that are not refused, as a Batch of metric events (n_spans
 * counts the points); the instance is a hash of the agent and of the batch's events. */
int otlp_metrics_encode(const struct otlp_metrics *req, uint32_t first, uint32_t n,
                        const char *agent, struct otlp_batch *out);

/* Gzip-compressed data into at most max bytes (malloc'd *out). 0, -1 malformed, -2 too large. */
int otlp_gunzip(const uint8_t *in, size_t n, size_t max, uint8_t **out, size_t *out_len);

#endif

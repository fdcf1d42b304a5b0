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

#define OTLP_BODY_MAX (4u << 20)  /* bytes of a request body, after gzip */
#define OTLP_SPANS_MAX 65536      /* spans in a request */
#define OTLP_RESOURCES_MAX 1024   /* resources in a request */
#define OTLP_STR_MAX 4096         /* bytes of a name, an id, a model, a session, an error */
#define OTLP_ATTRS_MAX 256        /* attributes of a span or a resource */
#define OTLP_SPANS_PER_BATCH 4096 /* spans of one resource in one stored batch */

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

/* 0, or -1 with a static reason in *why (the body is malformed or over a limit: 400). */
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

/* Gzip-compressed data into at most max bytes (malloc'd *out). 0, -1 malformed, -2 too large. */
int otlp_gunzip(const uint8_t *in, size_t n, size_t max, uint8_t **out, size_t *out_len);

#endif

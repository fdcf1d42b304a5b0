/*
 * batch.h - decoding a Batch payload (proto/telltale.proto) without allocating: a validating
 * pass that checks every event and summarises the batch, then an iterator over the events and
 * per-kind decoders. All strings point into the payload and are not NUL-terminated.
 */
#ifndef TT_COMMON_BATCH_H
#define TT_COMMON_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "common/pb.h"

/* Event kinds are the field numbers of Event.body. */
enum tt__ev_kind {
    TT_EV_LOG = 3,
    TT_EV_METRIC = 4,
    TT_EV_STEP_BEGIN = 5,
    TT_EV_STEP_END = 6,
    TT_EV_TOKENS = 7,
    TT_EV_RESPONSE_BEGIN = 8,
    TT_EV_RESPONSE_END = 9,
    TT_EV_TENSOR = 10,
    TT_EV_GUARD = 11,
    TT_EV__MAX = 11
};

/* "log", "metric", "step_begin", ...; NULL for an unknown kind. */
const char *tt__ev_kind_name(int kind);
/* A filter name to a bit mask of kinds (1 << kind): a kind's name, or "step" for both step
 * kinds, "response" for both response kinds. 0 if unknown. */
uint32_t tt__ev_kind_mask(const char *name);

typedef struct tt__bstr {
    const uint8_t *p;
    size_t n;
} tt__bstr;

#define TT_DROP_SLOTS 16

typedef struct tt__client_stats {
    uint64_t emitted;
    uint64_t acked;
    uint64_t possibly_delivered;
    uint64_t dropped[TT_DROP_SLOTS];
    uint32_t n_dropped;
    uint64_t buffered;
    uint64_t spooled;
} tt__client_stats;

/* Distinct sessions summarised per batch by tt__batch_parse; a batch with more sets
 * sessions_overflow and its readers walk the events instead. */
#define TT_BATCH_SESSIONS 8

typedef struct tt__batch_session {
    tt__bstr name;        /* points into the payload */
    int64_t t_min, t_max; /* event times, Unix ns */
    uint32_t events;
} tt__batch_session;

typedef struct tt__batch {
    uint8_t instance[16];
    uint64_t first_seq;
    uint64_t base_time;
    uint32_t n_events;
    uint32_t kinds; /* bit mask of the kinds present */
    int64_t t_min;  /* event times, Unix ns (0 if no events) */
    int64_t t_max;
    int has_stats;
    int has_session; /* some event names a session */
    /* The sessions named and their events, so that the store need not decode the events
     * again for them (unless sessions_overflow). */
    tt__batch_session sessions[TT_BATCH_SESSIONS];
    uint32_t n_sessions;
    int sessions_overflow;
    tt__client_stats stats;
    /* Not from the wire: the collector's finding that the agent's clock was off by this much
     * when it sent the batch (docs/wire-format.md, "Clock skew"); 0 when within tolerance or
     * unknown. Zeroed by tt__batch_parse; every event of the batch carries it. */
    int64_t clock_skew_ms;
    /* iteration */
    const uint8_t *data;
    size_t len;
    tt__pb_reader it;
    uint64_t next_seq;
} tt__batch;

typedef struct tt__batch_limits {
    uint32_t max_events; /* events per batch */
    uint32_t max_attrs;  /* attributes per event */
} tt__batch_limits;

/* Validate payload as a Batch and summarise it. Returns 0, or -1 with a static reason in *why.
 * After success every event decodes without error. */
int tt__batch_parse(tt__batch *b, const uint8_t *payload, size_t n, const tt__batch_limits *lim,
                    const char **why);

typedef struct tt__event {
    uint64_t seq;
    int64_t time; /* Unix ns */
    tt__bstr session;
    int kind;
    tt__bstr body;         /* the kind's message */
    int64_t clock_skew_ms; /* its batch's clock_skew_ms */
} tt__event;

/* The next event: 1, or 0 at the end. Only after tt__batch_parse succeeded. */
int tt__batch_next(tt__batch *b, tt__event *ev);

typedef struct tt__attr_val {
    tt__bstr key;
    int type; /* TT_ATTR_STR, _INT, _DOUBLE, _BOOL (telltale.h), 0 if none */
    tt__bstr s;
    int64_t i;
    double d;
    int b;
} tt__attr_val;

typedef struct tt__attr_iter {
    tt__pb_reader r;
    uint32_t field;
} tt__attr_iter;

/* Iterate the attributes stored under field in a message body. */
void tt__attr_iter_init(tt__attr_iter *it, tt__bstr body, uint32_t field);
int tt__attr_next(tt__attr_iter *it, tt__attr_val *a);

typedef struct tt__ev_log {
    uint32_t severity;
    tt__bstr message;
} tt__ev_log;

typedef struct tt__ev_metric {
    uint32_t kind;
    tt__bstr name;
    double value;
    tt__bstr unit;
} tt__ev_metric;

typedef struct tt__ev_step_begin {
    uint64_t step_id;
    uint64_t parent_id;
    uint32_t kind;
    tt__bstr name;
    tt__bstr query;
    /* W3C trace context (since 0.5; all zero when not sent): trace id (16 bytes, has_trace),
     * span id, parent span id (0: root span). */
    uint8_t trace_id[16];
    int has_trace;
    uint64_t span_id, parent_span_id;
} tt__ev_step_begin;

typedef struct tt__ev_step_end {
    uint64_t step_id;
    uint32_t status;
    uint64_t duration_ns;
    int64_t result_bytes;
    tt__bstr error;
    tt__bstr name; /* the begin's name and kind (0: not sent), from clients since 0.2 */
    uint32_t kind;
} tt__ev_step_end;

typedef struct tt__ev_response_begin {
    uint64_t response_id;
    tt__bstr model;
    uint64_t step_id;     /* the step it was opened in, 0 if none (since 0.2) */
    uint8_t trace_id[16]; /* W3C trace context as in tt__ev_step_begin (since 0.5) */
    int has_trace;
    uint64_t span_id, parent_span_id;
} tt__ev_response_begin; /* params: tt__attr_iter on field 3 */

typedef struct tt__ev_response_end {
    uint64_t response_id;
    uint32_t tokens;
    float mean_logprob;
    float min_logprob;
    float perplexity;
    float mean_entropy;
    float low_confidence_share;
    float min_window_confidence;
    uint32_t verdict; /* 0 pass, 1 flag, 2 halt */
    tt__bstr reason;
    uint64_t duration_ns;
    uint32_t estimated;
} tt__ev_response_end;

typedef struct tt__ev_guard {
    uint64_t response_id;
    uint32_t token_index;
    uint32_t verdict;
    tt__bstr reason;
    float value;
    float threshold;
} tt__ev_guard;

/* Tokens: the packed arrays stay encoded (bstr over their bytes); read them with the packed
 * iterators below. Values in topk_values are per topk_encoding (docs/wire-format.md). */
typedef struct tt__ev_tokens {
    uint64_t response_id;
    uint32_t first_index;
    tt__bstr token_ids, logprobs, entropies, margins, ranks, latency_us, flags;
    uint32_t topk;
    tt__bstr topk_ids, topk_values;
    uint32_t topk_encoding;
    /* Token text (since 0.2): n_texts texts added to the response's table from index text_base
     * (read them with tt__ev_tokens_text_next), per token the table index of its text, per
     * alternative the index of its text (packed sint32, -1 none; empty when absent). */
    uint32_t n_texts, text_base;
    tt__bstr text_refs, topk_text_refs;
    tt__bstr body;
} tt__ev_tokens;

/* The texts a Tokens message adds, in order: start with *it zeroed; 1 and the next in *s, or 0. */
typedef struct tt__tokens_text_iter {
    tt__pb_reader r;
    int started;
} tt__tokens_text_iter;
int tt__ev_tokens_text_next(const tt__ev_tokens *t, tt__tokens_text_iter *it, tt__bstr *s);

typedef struct tt__ev_tensor {
    uint64_t response_id;
    uint32_t token_index;
    uint32_t encoding;
    uint32_t length; /* entries in the whole row */
    uint32_t first;  /* index in the row of values[0] */
    tt__bstr values;
    float scale;
    float offset;
} tt__ev_tensor;

int tt__ev_tokens_decode(tt__bstr body, tt__ev_tokens *out);
int tt__ev_tensor_decode(tt__bstr body, tt__ev_tensor *out);

/* Packed repeated fields: the number of varints (or -1 if malformed), and the i-th float. */
long tt__packed_varint_count(tt__bstr b);
static inline float tt__packed_float(tt__bstr b, size_t i)
{
    uint32_t u = (uint32_t)b.p[4 * i] | (uint32_t)b.p[4 * i + 1] << 8 |
                 (uint32_t)b.p[4 * i + 2] << 16 | (uint32_t)b.p[4 * i + 3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int tt__ev_response_begin_decode(tt__bstr body, tt__ev_response_begin *out);
int tt__ev_response_end_decode(tt__bstr body, tt__ev_response_end *out);
int tt__ev_guard_decode(tt__bstr body, tt__ev_guard *out);

int tt__ev_log_decode(tt__bstr body, tt__ev_log *out);

/* Whether ev passes the content filters shared by the stored-event queries and the live stream:
 * session (empty: any), kinds (a mask of 1 << TT_EV_*, 0: any) and min_severity (logs below it
 * fail, a log that does not decode fails, other kinds pass). */
int tt__event_matches(const tt__event *ev, const char *session, uint32_t kinds,
                      uint32_t min_severity);
int tt__ev_metric_decode(tt__bstr body, tt__ev_metric *out);
int tt__ev_step_begin_decode(tt__bstr body, tt__ev_step_begin *out);
int tt__ev_step_end_decode(tt__bstr body, tt__ev_step_end *out);

#endif

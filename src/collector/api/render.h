/*
 * render.h - events as JSON objects, the one shape used by the HTTP API, the live stream and
 * `telltale query` (docs/http-api.md describes the fields).
 */
#ifndef TT_COLLECTOR_RENDER_H
#define TT_COLLECTOR_RENDER_H

#include "common/batch.h"
#include "common/json.h"

/* Write one event as a JSON object. */
int render_event(tt__json *j, const char *agent, const uint8_t instance[16], const tt__event *ev);

/* Names for enums shown in JSON. */
const char *render_severity(uint32_t severity);
uint32_t render_severity_parse(const char *name); /* 0 if unknown */
const char *render_step_kind(uint32_t kind);
const char *render_status(uint32_t status);
const char *render_metric_kind(uint32_t kind);

/* Unix ns as RFC 3339 with nanoseconds, UTC ("2026-11-24T10:00:00.123456789Z"). */
void render_time(int64_t unix_ns, char *out, size_t n);

/* Attributes stored under field of body as a JSON object under key (nothing if none). */
void render_attrs(tt__json *j, tt__bstr body, uint32_t field, const char *key);

/* Response kinds (render_response.c), also used by the responses API. */
const char *render_verdict(uint32_t v);
void render_response_id(tt__json *j, const char *key, uint64_t id);
/* A step's or response's W3C trace context: "trace_id" (32 lowercase hex digits), "span_id"
 * and, unless a root span, "parent_span_id" (16 each). */
void render_trace(tt__json *j, const uint8_t trace_id[16], uint64_t span_id,
                  uint64_t parent_span_id);
void render_tokens_fields(tt__json *j, const tt__ev_tokens *t);
void render_response_end_fields(tt__json *j, const tt__ev_response_end *e);
void render_guard_fields(tt__json *j, const tt__ev_guard *g);
void render_tokens_merged(tt__json *j, const tt__ev_tokens *chunks, size_t n);
/* "text": the response's whole text, its tokens' texts in order (null when none was sent). */
void render_response_text(tt__json *j, const tt__ev_tokens *chunks, size_t n);

/* Kinds other modules render (tokens, responses, guard, tensor); returns 0 if handled. */
int render_event_extra(tt__json *j, const tt__event *ev);

#endif

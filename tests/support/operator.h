/*
 * operator.h - test helpers for the operator's view: HTTP with a token, a live-stream reader
 * on its own thread, a local webhook receiver, and a model response with a chosen
 * confidence.
 */
#ifndef TT_TEST_OPERATOR_H
#define TT_TEST_OPERATOR_H

#include <stdint.h>

#include "telltale.h"

/* Like tt_test_http, with "Authorization: Bearer token" when token is not NULL and none
 * otherwise; a POST declares a JSON body. */
long tt_test_http_auth(const char *http, const char *method, const char *path, const char *token,
                       char **body);

/* A model response through the public API (begin, one token, end) whose confidence,
 * exp(mean log-prob), is `confidence`. 0 or TT_E*. */
int tt_test_emit_response(tt_client *c, const char *session, double confidence);

/* A reader of GET /api/v1/stream (with path's query) collecting every "data:" line; token NULL
 * means the collector's generated one (tt_test_token). */
struct tt_test_sse;
struct tt_test_sse *tt_test_sse_open(const char *http, const char *query, const char *token);
/* Wait for a data line containing needle, from line index *from on; returns a malloc'd copy
 * (and *from past it) or NULL on timeout. */
char *tt_test_sse_wait(struct tt_test_sse *s, const char *needle, int *from, double timeout_ms);
/* Lines received so far that contain needle. */
int tt_test_sse_count(struct tt_test_sse *s, const char *needle);
void tt_test_sse_close(struct tt_test_sse *s);

/* A webhook receiver on 127.0.0.1: answers 500 to the first fail_first requests, 200 after. */
struct tt_test_hook;
struct tt_test_hook *tt_test_hook_start(int fail_first);
int tt_test_hook_port(const struct tt_test_hook *h);
/* Wait for a request whose body contains needle; returns a malloc'd body or NULL. */
char *tt_test_hook_wait(struct tt_test_hook *h, const char *needle, double timeout_ms);
int tt_test_hook_requests(struct tt_test_hook *h);
/* A receiver that checks each request as docs/detectors.md tells receivers to (signature over
 * TIMESTAMP "." BODY with secret, timestamp within 300 s) and answers 401 when it fails; how
 * many passed and failed. */
struct tt_test_hook *tt_test_hook_start_signed(int fail_first, const char *secret);
void tt_test_hook_signatures(struct tt_test_hook *h, int *valid, int *invalid);
/* That check: 1 when signature ("v1=HEX") is HMAC-SHA256(secret, timestamp "." body) and the
 * timestamp is within 300 s of now. */
int tt_test_hook_verify(const char *secret, const char *timestamp, const char *signature,
                        const char *body, size_t len);
void tt_test_hook_stop(struct tt_test_hook *h);

/* Write text to path (fails the test if it cannot). */
void tt_test_write_file(const char *path, const char *text);

/* The whole of a file, NUL-terminated (malloc'd; at most 16 MiB); fails the test if it cannot
 * be read. */
char *tt_test_read_file(const char *path);

/* The timeout multiplier for slow (sanitizer) builds, >= 1. */
double tt_test_mult(void);

#endif

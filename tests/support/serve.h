/*
 * serve.h - test helpers around a real `telltale serve`: start one on private endpoints in the
 * test's temporary directory, talk to its HTTP API, read its store, stop it.
 */
#ifndef TT_TEST_SERVE_H
#define TT_TEST_SERVE_H

#include <stdint.h>
#include <sys/types.h>

#include "telltale.h"

struct tt_test_serve {
    pid_t pid;
    char dir[512];      /* data directory */
    char sock[600];     /* unix socket path */
    char endpoint[700]; /* "unix:..." */
    char tcp[300];      /* "tcp://127.0.0.1:PORT" when started with tcp */
    char http[300];     /* "127.0.0.1:PORT" */
    char db[700];       /* the SQLite file */
    char log[700];      /* its stderr */
    char token[300];    /* the operator token it generated in DIR/operator.token ("" if none) */
};

/* Start a collector in TT_TEST_TMP/NAME with unix + tcp listeners on free ports and HTTP on a
 * free port, with --ingest-open (agents on loopback TCP need no ingest token) unless
 * TT_TEST_NO_INGEST_OPEN is among the extra arguments that may follow (NULL-terminated). Fails
 * the test if it cannot. */
#define TT_TEST_NO_INGEST_OPEN "tt-test-no-ingest-open"
void tt_test_serve_start(struct tt_test_serve *s, const char *name, ...);

/* SIGTERM and wait for the exit status (fails the test if not 0 within 15 s). */
void tt_test_serve_stop(struct tt_test_serve *s);

/* SIGKILL and reap. */
void tt_test_serve_kill(struct tt_test_serve *s);

/* Restart a stopped or killed collector on the same directory and endpoints. */
void tt_test_serve_restart(struct tt_test_serve *s);

/* Restart it when it must refuse to start: fails the test if it becomes ready (or runs for
 * 15 s); returns its exit status. */
int tt_test_serve_restart_refused(struct tt_test_serve *s);

/* The operator token of the collector whose HTTP API is http, as tt_test_serve_start read it
 * from its data directory (NULL when it has none: --no-auth, or a token the test gave). */
const char *tt_test_token(const char *http);

/* METHOD http://HTTP/PATH as the operator: with $TT_TEST_TOKEN, else the collector's generated
 * token (tt_test_token), as "Authorization: Bearer", and a request body as JSON. Returns the
 * status and a malloc'd body in *body (may be NULL). */
long tt_test_http(const char *http, const char *method, const char *path, const char *req_body,
                  char **body);

/* The value of one /metrics sample (its name with its labels) of the collector at HTTP; fails
 * the test when /metrics does not answer or lacks it. */
uint64_t tt_test_metric(const char *http, const char *sample);

/* What GET /api/v1/events/count?QUERY of the collector at HTTP answers: the count of the stored
 * events the query selects; fails the test unless it answers 200 with a count. */
uint64_t tt_test_events_count(const char *http, const char *query);

/* The integer after "key": in a JSON body, after the first `after` in it when not NULL;
 * -1 when absent (or body is NULL). */
int64_t tt_test_json_i64(const char *body, const char *after, const char *key);

/* A number of the "retention" object in GET /api/v1/status of the collector at HTTP; -1 when
 * absent. Fails the test unless the status answers 200. */
int64_t tt_test_retention_i64(const char *http, const char *key);

/* A client on endpoint with agent name and extra key=value settings (NULL-terminated). */
tt_client *tt_test_client(const char *endpoint, const char *agent, ...);

/* A client whose endpoint nobody listens on, so that what the calling thread emits stays in its
 * ring for the test to read back (tt__tls.r): ring_bytes and max_event_bytes as settings (NULL:
 * the defaults). The thread's ring is made by one event, a log "first". */
tt_client *tt_test_ring_client(const char *ring_bytes, const char *max_event_bytes);

/* Checks that a ring record's string at p (a 4-byte length, then the bytes) is want (NULL: the
 * empty string); returns the byte after it. */
const uint8_t *tt_test_ring_str(const uint8_t *p, const char *want);
/* Fills buf with a string of n bytes, each different from its neighbours, from base on; NULL
 * when n < 0 (buf holds n + 1 bytes). */
const char *tt_test_make_str(char *buf, int n, char base);

/* What the store holds for one instance, checked frame by frame. */
struct tt_store_check {
    uint64_t frames;
    uint64_t events; /* events stored for the instance */
    uint64_t max_seq;
    uint64_t overlaps; /* seq numbers stored more than once (must be 0) */
    uint64_t gaps;     /* seq numbers in [1, max_seq] never stored */
    uint64_t decoded;  /* events actually decoded from the frames */
};

/* Read db (a SQLite file) and check instance's frames: ranges, overlaps, decodability. */
void tt_test_check_store(const char *db, const uint8_t instance[16], struct tt_store_check *out);

/* The conservation law of docs/design.md at quiescence, with the store's view: fails the test
 * unless emitted + inherited = acked + possibly_delivered + buffered + dropped, acked <= stored,
 * and no (instance, seq) is stored twice. With events inherited from an earlier process's
 * spool, sc must cover those instances too (or pass the sum of their checks). */
void tt_test_check_conservation(const tt_stats *st, const struct tt_store_check *sc);

/* A free TCP port on 127.0.0.1 (bound and released). */
int tt_test_free_port(void);

/* Lines of the file at path that contain needle (the collector's log: s.log). */
uint64_t tt_test_count_lines(const char *path, const char *needle);

/* Monotonic milliseconds. */
double tt_test_now_ms(void);

/* A libcurl write callback that gathers a response body, NUL-terminated, into a
 * struct tt_test_body (p from malloc, freed by the caller). */
struct tt_test_body {
    char *p;
    size_t n;
};
size_t tt_test_curl_body(char *p, size_t size, size_t nmemb, void *cls);

/* Agents of a test: agent i of prefix is "<prefix>-<i>" with the token
 * "tok-<prefix>-<i>-0123456789abcdef"; tt_test_tokens_file writes the ingest token file
 * (0600) of agents 0..n-1 in the test's temporary directory and returns its path. */
void tt_test_agent_name(const char *prefix, int i, char *out, size_t n);
void tt_test_agent_token(const char *prefix, int i, char *out, size_t n);
const char *tt_test_tokens_file(const char *prefix, int n);

#endif

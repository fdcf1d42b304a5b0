/*
 * cmd_emit.c - `telltale emit`: events as JSON lines on stdin, sent through libtelltale, so
 * shell scripts and programs in any language can use the stream: logs, metrics, response
 * scores and steps (a step_begin line and its step_end line, the library measuring the latency
 * between them, or one step line that gives its latency: tt_step_record). A
 * bad line is reported with its number and skipped; every good line is still delivered.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "telltale.h"

#define LINE_MAX_BYTES (1u << 20)
#define MAX_ATTRS 64
#define MAX_OPEN_STEPS 4096
#define STEP_ID_MAX 64

static const char usage[] =
    "usage: telltale emit --endpoint ENDPOINT --agent NAME [options] < events.jsonl\n"
    "\n"
    "Read one event per line as JSON and stream it to a collector:\n"
    "  {\"kind\":\"log\",\"severity\":\"info\",\"message\":\"...\"}\n"
    "  "
    "{\"kind\":\"metric\",\"name\":\"latency\",\"value\":1.5,\"unit\":\"ms\",\"metric_kind\":"
    "\"gauge\"}\n"
    "  {\"kind\":\"score\",\"name\":\"judge\",\"value\":4,\"response\":\"0123456789abcdef\"}\n"
    "All three take optional \"session\":\"...\" and \"attrs\":{\"key\":value,...} (string, "
    "integer,\n"
    "number or boolean values). severity: trace, debug, info (default), warn, error, fatal.\n"
    "metric_kind: counter, gauge (default) or histogram. A score is one response's named score\n"
    "(a judge's, an evaluator's, a reward); response: its id as /api/v1/responses shows it\n"
    "(16 hex digits), optional.\n"
    "\n"
    "A step (a tool call, an API call, ...) is two lines; its latency is the time between\n"
    "emit reading the one and the other (keep emit running while the step runs):\n"
    "  {\"kind\":\"step_begin\",\"id\":\"s1\",\"name\":\"search\",\"step_kind\":\"tool\",\n"
    "   \"query\":\"weather in Lyon\",\"session\":\"...\",\"parent\":\"s0\"}\n"
    "  "
    "{\"kind\":\"step_end\",\"id\":\"s1\",\"status\":\"ok\",\"result_bytes\":512,\"error\":\"...\"}"
    "\n"
    "id: yours, 1-64 bytes, unique among open steps (4096 at most); parent: an open step's id.\n"
    "step_kind: reasoning, tool (default), api, llm, agent, retrieval, other. status: ok, error,\n"
    "timeout, cancelled (default ok, or error when \"error\" is given). A step still open at\n"
    "the end of the input is ended as cancelled and reported.\n"
    "A step that already ran is one line with its latency in milliseconds (0 to 7 days):\n"
    "  {\"kind\":\"step\",\"name\":\"grep\",\"step_kind\":\"tool\",\"query\":\"-r TODO "
    "src\",\n"
    "   \"status\":\"ok\",\"latency_ms\":12.5,\"result_bytes\":2048,\"session\":\"...\"}\n"
    "It takes the fields of step_begin and step_end but \"id\" (parent: an open step's id);\n"
    "it is stored as a step that began latency_ms before emit read the line.\n"
    "\n"
    "  --endpoint ENDPOINT  unix:PATH or tcp://HOST:PORT (default $TELLTALE_ENDPOINT or\n"
    "                       tcp://127.0.0.1:7370)\n"
    "  --agent NAME         the agent name (default $TELLTALE_AGENT or \"emit\")\n"
    "  --token-file FILE    the ingest token, first line of FILE (mode 0600; default\n"
    "                       $TELLTALE_TOKEN_FILE, else $TELLTALE_TOKEN)\n"
    "  --timeout-ms MS      wait this long at the end for acknowledgements (default 10000)\n"
    "  --help               this text\n"
    "\n"
    "Exit status: 0 every line was stored; 1 some lines were bad (each named on stderr,\n"
    "the good ones were still sent); 2 usage error; 3 not everything was acknowledged\n"
    "before the timeout (the collector is unreachable or slow).\n";

struct emit_opts {
    const char *endpoint;
    const char *agent;
    const char *token;
    char token_buf[300];
    long timeout_ms;
};

static int severity_of(const char *s)
{
    static const struct {
        const char *n;
        int v;
    } t[] = {{"trace", TT_TRACE},  {"debug", TT_DEBUG}, {"info", TT_INFO},  {"warn", TT_WARN},
             {"warning", TT_WARN}, {"error", TT_ERROR}, {"fatal", TT_FATAL}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!strcmp(s, t[i].n)) {
            return t[i].v;
        }
    }
    return 0;
}

/* Converts "attrs" into tt_attr entries pointing into the JSON object. */
static const char *get_attrs(json_t *obj, tt_attr *out, size_t *n)
{
    *n = 0;
    json_t *a = json_object_get(obj, "attrs");
    if (!a) {
        return NULL;
    }
    if (!json_is_object(a)) {
        return "\"attrs\" must be an object";
    }
    if (json_object_size(a) > MAX_ATTRS) {
        return "more than 64 attributes";
    }
    const char *key;
    json_t *v;
    json_object_foreach(a, key, v)
    {
        tt_attr *t = &out[(*n)++];
        t->key = key;
        if (json_is_string(v)) {
            t->type = TT_ATTR_STR;
            t->v.s = json_string_value(v);
        } else if (json_is_integer(v)) {
            t->type = TT_ATTR_INT;
            t->v.i = json_integer_value(v);
        } else if (json_is_real(v)) {
            t->type = TT_ATTR_DOUBLE;
            t->v.d = json_real_value(v);
        } else if (json_is_boolean(v)) {
            t->type = TT_ATTR_BOOL;
            t->v.b = json_is_true(v);
        } else {
            return "attribute values must be strings, numbers or booleans";
        }
    }
    return NULL;
}

static const char *opt_string(json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        return NULL;
    }
    if (!json_is_string(v)) {
        static __thread char msg[96];
        snprintf(msg, sizeof msg, "\"%s\" must be a string", key);
        return msg;
    }
    *out = json_string_value(v);
    return NULL;
}

/* Retry a full ring: emit may wait, an agent's hot path never does. */
#define RETRY_FULL(call)                                                                           \
    ({                                                                                             \
        int rc_;                                                                                   \
        int tries_ = 0;                                                                            \
        while ((rc_ = (call)) == TT_ENOBUFS && tries_++ < 5000) {                                  \
            struct timespec ts_ = {0, 1000000};                                                    \
            nanosleep(&ts_, NULL);                                                                 \
        }                                                                                          \
        rc_;                                                                                       \
    })

static const char *emit_log(tt_client *c, json_t *o, const char *session, tt_attr *attrs, size_t na)
{
    const char *msg, *sev, *err;
    if ((err = opt_string(o, "message", &msg)) || (err = opt_string(o, "severity", &sev))) {
        return err;
    }
    if (!msg) {
        return "a log needs \"message\"";
    }
    int severity = sev ? severity_of(sev) : TT_INFO;
    if (!severity) {
        return "\"severity\" must be trace, debug, info, warn, error or fatal";
    }
    int rc = RETRY_FULL(tt_log(c, session, (tt_severity)severity, msg, attrs, na));
    return rc ? tt_strerror(rc) : NULL;
}

static const char *emit_metric(tt_client *c, json_t *o, const char *session, tt_attr *attrs,
                               size_t na)
{
    const char *name, *unit, *mk, *err;
    if ((err = opt_string(o, "name", &name)) || (err = opt_string(o, "unit", &unit)) ||
        (err = opt_string(o, "metric_kind", &mk))) {
        return err;
    }
    json_t *v = json_object_get(o, "value");
    if (!name || !v || !json_is_number(v)) {
        return "a metric needs \"name\" and a numeric \"value\"";
    }
    tt_metric_kind kind = TT_GAUGE;
    if (mk) {
        kind = !strcmp(mk, "counter")     ? TT_COUNTER
               : !strcmp(mk, "gauge")     ? TT_GAUGE
               : !strcmp(mk, "histogram") ? TT_HISTOGRAM
                                          : 0;
        if (!kind) {
            return "\"metric_kind\" must be counter, gauge or histogram";
        }
    }
    int rc = RETRY_FULL(tt_metric(c, session, kind, name, json_number_value(v), unit, attrs, na));
    return rc ? tt_strerror(rc) : NULL;
}

/* The steps begun and not yet ended, by the caller's id. */
struct open_step {
    char id[STEP_ID_MAX + 1];
    long line; /* of its step_begin */
    tt_step step;
};

struct steps {
    struct open_step *v; /* MAX_OPEN_STEPS entries, the first n in use */
    size_t n;
};

static struct open_step *step_find(struct steps *st, const char *id)
{
    for (size_t i = 0; i < st->n; i++) {
        if (!strcmp(st->v[i].id, id)) {
            return &st->v[i];
        }
    }
    return NULL;
}

static int named(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++) {
        if (!strcmp(s, names[i])) {
            return i;
        }
    }
    return -1;
}

static const char *step_id(json_t *o, const char *key, const char **id)
{
    const char *err = opt_string(o, key, id);
    if (err) {
        return err;
    }
    if (*id && (!**id || strlen(*id) > STEP_ID_MAX)) {
        static __thread char msg[96];
        snprintf(msg, sizeof msg, "\"%s\" must be 1 to %d bytes", key, STEP_ID_MAX);
        return msg;
    }
    return NULL;
}

/* "step_kind" (NULL: tool) as a tt_step_kind; NULL, or the error's text. */
static const char *step_kind_of(const char *sk, tt_step_kind *out)
{
    static const char *const kinds[] = {"reasoning", "tool",      "api",  "llm",
                                        "agent",     "retrieval", "other"};
    static const tt_step_kind kind_of[] = {TT_STEP_REASONING, TT_STEP_TOOL,  TT_STEP_API,
                                           TT_STEP_LLM,       TT_STEP_AGENT, TT_STEP_RETRIEVAL,
                                           TT_STEP_OTHER};
    int k = sk ? named(sk, kinds, 7) : 1;
    if (k < 0) {
        return "\"step_kind\" must be reasoning, tool, api, llm, agent, retrieval or other";
    }
    *out = kind_of[k];
    return NULL;
}

/* "status" (NULL: error when an error is given, else ok) as a tt_status; NULL, or the error's
 * text. */
static const char *step_status_of(const char *status, const char *error, tt_status *out)
{
    static const char *const statuses[] = {"ok", "error", "timeout", "cancelled"};
    static const tt_status status_of[] = {TT_STATUS_OK, TT_STATUS_ERROR, TT_STATUS_TIMEOUT,
                                          TT_STATUS_CANCELLED};
    int k = status ? named(status, statuses, 4) : error ? 1 : 0;
    if (k < 0) {
        return "\"status\" must be ok, error, timeout or cancelled";
    }
    *out = status_of[k];
    return NULL;
}

/* "result_bytes" (absent or null: -1, unknown); NULL, or the error's text. */
static const char *opt_result_bytes(json_t *o, int64_t *out)
{
    json_t *rb = json_object_get(o, "result_bytes");
    *out = -1;
    if (rb && !json_is_null(rb)) {
        if (!json_is_integer(rb) || json_integer_value(rb) < -1) {
            return "\"result_bytes\" must be an integer, -1 (unknown) or more";
        }
        *out = json_integer_value(rb);
    }
    return NULL;
}

static const char *emit_step_begin(tt_client *c, struct steps *st, json_t *o, const char *session,
                                   long lineno)
{
    const char *id, *parent, *name, *query, *sk, *err;
    if ((err = step_id(o, "id", &id)) || (err = step_id(o, "parent", &parent)) ||
        (err = opt_string(o, "name", &name)) || (err = opt_string(o, "query", &query)) ||
        (err = opt_string(o, "step_kind", &sk))) {
        return err;
    }
    if (!id || !name) {
        return "a step_begin needs \"id\" and \"name\"";
    }
    tt_step_kind kind;
    if ((err = step_kind_of(sk, &kind))) {
        return err;
    }
    if (step_find(st, id)) {
        return "a step with this \"id\" is already open";
    }
    struct open_step *p = NULL;
    if (parent && !(p = step_find(st, parent))) {
        return "\"parent\" is not an open step";
    }
    if (st->n == MAX_OPEN_STEPS) {
        return "more than 4096 open steps";
    }
    struct open_step *s = &st->v[st->n];
    int rc =
        RETRY_FULL(tt_step_begin(c, &s->step, p ? &p->step : NULL, kind, session, name, query));
    if (rc) {
        return tt_strerror(rc);
    }
    snprintf(s->id, sizeof s->id, "%s", id);
    s->line = lineno;
    st->n++;
    return NULL;
}

static const char *emit_step_end(tt_client *c, struct steps *st, json_t *o)
{
    const char *id, *status, *error, *err;
    if ((err = step_id(o, "id", &id)) || (err = opt_string(o, "status", &status)) ||
        (err = opt_string(o, "error", &error))) {
        return err;
    }
    if (!id) {
        return "a step_end needs \"id\"";
    }
    tt_status stat;
    if ((err = step_status_of(status, error, &stat))) {
        return err;
    }
    int64_t result_bytes;
    if ((err = opt_result_bytes(o, &result_bytes))) {
        return err;
    }
    struct open_step *s = step_find(st, id);
    if (!s) {
        return "no open step has this \"id\"";
    }
    int rc = RETRY_FULL(tt_step_end(c, &s->step, stat, result_bytes, error));
    *s = st->v[--st->n]; /* ended (or dropped): no longer open either way */
    return rc ? tt_strerror(rc) : NULL;
}

/* A step that already ran, in one line: its latency is given ("latency_ms"). */
static const char *emit_step(tt_client *c, struct steps *st, json_t *o, const char *session)
{
    const char *parent, *name, *query, *sk, *status, *error, *err;
    if ((err = step_id(o, "parent", &parent)) || (err = opt_string(o, "name", &name)) ||
        (err = opt_string(o, "query", &query)) || (err = opt_string(o, "step_kind", &sk)) ||
        (err = opt_string(o, "status", &status)) || (err = opt_string(o, "error", &error))) {
        return err;
    }
    json_t *lat = json_object_get(o, "latency_ms");
    if (!name || !lat) {
        return "a step needs \"name\" and \"latency_ms\"";
    }
    /* 0 to 7 days, in milliseconds (fractions allowed). */
    double ms = json_is_number(lat) ? json_number_value(lat) : -1;
    if (!(ms >= 0 && ms <= (double)TT_STEP_RECORD_MAX_NS / 1e6)) {
        return "\"latency_ms\" must be a number of milliseconds, 0 to 604800000 (7 days)";
    }
    tt_step_kind kind;
    if ((err = step_kind_of(sk, &kind))) {
        return err;
    }
    tt_status stat;
    if ((err = step_status_of(status, error, &stat))) {
        return err;
    }
    int64_t result_bytes;
    if ((err = opt_result_bytes(o, &result_bytes))) {
        return err;
    }
    struct open_step *p = NULL;
    if (parent && !(p = step_find(st, parent))) {
        return "\"parent\" is not an open step";
    }
    int rc = RETRY_FULL(tt_step_record(c, p ? &p->step : NULL, kind, session, name, query, stat,
                                       (int64_t)(ms * 1e6), result_bytes, error));
    return rc ? tt_strerror(rc) : NULL;
}

static const char *emit_score(tt_client *c, json_t *o, const char *session, tt_attr *attrs,
                              size_t na)
{
    const char *name, *resp, *err;
    if ((err = opt_string(o, "name", &name)) || (err = opt_string(o, "response", &resp))) {
        return err;
    }
    json_t *v = json_object_get(o, "value");
    if (!name || !v || !json_is_number(v)) {
        return "a score needs \"name\" and a numeric \"value\"";
    }
    uint64_t id = 0;
    if (resp) {
        char *end;
        errno = 0;
        id = strtoull(resp, &end, 16);
        if (!*resp || *end || errno || strlen(resp) > 16) {
            return "\"response\" must be a response id of up to 16 hex digits";
        }
    }
    if (na >= MAX_ATTRS) {
        return "a score takes at most 63 attrs";
    }
    int rc = RETRY_FULL(tt_score(c, session, id, name, json_number_value(v), attrs, na));
    return rc ? tt_strerror(rc) : NULL;
}

static const char *emit_line(tt_client *c, struct steps *st, const char *line, size_t len,
                             long lineno)
{
    static __thread char msg[300];
    json_error_t jerr;
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        snprintf(msg, sizeof msg, "not JSON: %s (column %d)", jerr.text, jerr.column);
        return msg;
    }
    const char *kind, *session, *err = NULL;
    tt_attr attrs[MAX_ATTRS];
    size_t na = 0;
    if (!json_is_object(o)) {
        err = "each line must be a JSON object";
    } else if (!(err = opt_string(o, "kind", &kind)) &&
               !(err = opt_string(o, "session", &session)) && !(err = get_attrs(o, attrs, &na))) {
        int is_step = kind && (!strcmp(kind, "step_begin") || !strcmp(kind, "step_end") ||
                               !strcmp(kind, "step"));
        if (!kind) {
            err = "missing \"kind\" (log, metric, score, step, step_begin or step_end)";
        } else if (is_step && na) {
            err = "steps take no \"attrs\"";
        } else if (!strcmp(kind, "log")) {
            err = emit_log(c, o, session, attrs, na);
        } else if (!strcmp(kind, "metric")) {
            err = emit_metric(c, o, session, attrs, na);
        } else if (!strcmp(kind, "score")) {
            err = emit_score(c, o, session, attrs, na);
        } else if (!strcmp(kind, "step_begin")) {
            err = emit_step_begin(c, st, o, session, lineno);
        } else if (!strcmp(kind, "step_end")) {
            err = emit_step_end(c, st, o);
        } else if (!strcmp(kind, "step")) {
            err = emit_step(c, st, o, session);
        } else {
            snprintf(msg, sizeof msg,
                     "unknown kind \"%.60s\" (expected log, metric, score, step, step_begin or "
                     "step_end)",
                     kind);
            err = msg;
        }
    }
    if (err && err != msg) {
        snprintf(msg, sizeof msg, "%s", err);
        err = msg;
    }
    json_decref(o);
    return err;
}

static int parse_opts(int argc, char **argv, struct emit_opts *o)
{
    static const struct option longopts[] = {{"endpoint", required_argument, NULL, 'e'},
                                             {"agent", required_argument, NULL, 'a'},
                                             {"token", required_argument, NULL, 't'},
                                             {"timeout-ms", required_argument, NULL, 'T'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"token-file", required_argument, NULL, 'F'},
                                             {NULL, 0, NULL, 0}};
    const char *token_file = getenv("TELLTALE_TOKEN_FILE");
    o->endpoint = getenv("TELLTALE_ENDPOINT");
    o->agent = getenv("TELLTALE_AGENT");
    o->token = getenv("TELLTALE_TOKEN");
    o->timeout_ms = 10000;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'e':
            o->endpoint = optarg;
            break;
        case 'a':
            o->agent = optarg;
            break;
        case 't':
            fprintf(stderr, "telltale emit: warning: --token is deprecated: every local user "
                            "sees a command line; use --token-file or TELLTALE_TOKEN_FILE\n");
            o->token = optarg;
            token_file = NULL;
            break;
        case 'F':
            token_file = optarg;
            break;
        case 'T':
            o->timeout_ms = strtol(optarg, &end, 10);
            if (*end || o->timeout_ms < 0 || o->timeout_ms > 3600000) {
                fprintf(stderr, "telltale emit: --timeout-ms: not a duration: %s\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        default:
            fprintf(stderr, "telltale emit: unknown option or missing value: %s\n%s",
                    argv[optind - 1], usage);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "telltale emit: unexpected argument: %s\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (token_file && *token_file) {
        if (cli_read_token_file(token_file, o->token_buf, sizeof o->token_buf, 0,
                                "telltale emit") != 0) {
            return EXIT_USAGE;
        }
        o->token = o->token_buf;
    }
    return 0;
}

static int open_client(const struct emit_opts *o, tt_client **c)
{
    tt_config *cfg;
    if (tt_config_new(&cfg) != 0) {
        return EXIT_FAIL;
    }
    const char *keys[] = {"endpoint", "agent", "token"};
    const char *vals[] = {o->endpoint, o->agent ? o->agent : "emit", o->token};
    for (int i = 0; i < 3; i++) {
        if (vals[i] && tt_config_set(cfg, keys[i], vals[i]) != 0) {
            fprintf(stderr, "telltale emit: %s\n", tt_config_error(cfg));
            tt_config_free(cfg);
            return EXIT_USAGE;
        }
    }
    int rc = tt_open(c, cfg);
    tt_config_free(cfg);
    if (rc) {
        fprintf(stderr, "telltale emit: %s\n", tt_strerror(rc));
        return EXIT_FAIL;
    }
    return 0;
}

/* Read one line of at most LINE_MAX_BYTES; longer lines are consumed and reported. Returns
 * the length, -1 at end of input, -2 for a line that was too long. */
static long read_line(FILE *in, char *buf)
{
    size_t n = 0;
    int c, too_long = 0;
    while ((c = getc(in)) != EOF && c != '\n') {
        if (n < LINE_MAX_BYTES) {
            buf[n++] = (char)c;
        } else {
            too_long = 1;
        }
    }
    if (c == EOF && n == 0 && !too_long) {
        return -1;
    }
    return too_long ? -2 : (long)n;
}

int cmd_emit(int argc, char **argv)
{
    struct emit_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) {
        return rc < 0 ? EXIT_OK : rc;
    }
    tt_client *c;
    if ((rc = open_client(&o, &c)) != 0) {
        return rc;
    }
    char *buf = malloc(LINE_MAX_BYTES + 1);
    struct steps st = {calloc(MAX_OPEN_STEPS, sizeof *st.v), 0};
    if (!buf || !st.v) {
        free(buf);
        free(st.v);
        tt_close(c, 0);
        return EXIT_FAIL;
    }
    long lineno = 0, bad = 0, sent = 0, n;
    while ((n = read_line(stdin, buf)) != -1) {
        lineno++;
        if (n == -2) {
            fprintf(stderr, "telltale emit: line %ld: longer than %u bytes, skipped\n", lineno,
                    LINE_MAX_BYTES);
            bad++;
            continue;
        }
        if (n == 0) {
            continue;
        }
        const char *err = emit_line(c, &st, buf, (size_t)n, lineno);
        if (err) {
            fprintf(stderr, "telltale emit: line %ld: %s\n", lineno, err);
            bad++;
        } else {
            sent++;
        }
    }
    free(buf);
    /* Steps the input never ended: ended as cancelled, so the store has no step left open. */
    for (size_t i = 0; i < st.n; i++) {
        fprintf(stderr, "telltale emit: line %ld: step \"%s\" never ended; ended as cancelled\n",
                st.v[i].line, st.v[i].id);
        if (RETRY_FULL(tt_step_end(c, &st.v[i].step, TT_STATUS_CANCELLED, -1,
                                   "the input ended before its step_end")) == 0) {
            sent++;
        }
        bad++;
    }
    free(st.v);
    int flushed = tt_flush(c, (uint32_t)o.timeout_ms);
    tt_stats s;
    tt_stats_get(c, &s, sizeof s);
    int unacked = flushed != 0 || s.acked < (uint64_t)sent;
    char why[600] = "";
    if (unacked) {
        cli_connection_watch("telltale emit", c, why, sizeof why); /* c is gone after close */
    }
    tt_close(c, 1000);
    if (unacked) {
        fprintf(stderr, "telltale emit: %llu of %ld events acknowledged before the timeout\n",
                (unsigned long long)s.acked, sent);
        return EXIT_UNREACHABLE;
    }
    if (bad) {
        fprintf(stderr, "telltale emit: %ld bad lines skipped, %ld events stored\n", bad, sent);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

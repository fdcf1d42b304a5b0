/*
 * test_trace.c - W3C trace context (issue 17, point 3): the trace id, span id and parent span id
 * that a step or response was given are those a real `telltale serve` returns from its API;
 * steps begun without a traceparent inherit their parent step's trace; roots without one get a
 * trace of their own (per root step) or their session's default; invalid traceparents are
 * refused before anything is emitted.
 */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve.h"
#include "telltale.h"
#include "test.h"

/* The value of key inside the object of the step (or response) whose id field idkey is id:
 * searched from the id to the object's "children" (or its end), so nested steps do not mix. */
static int field_of(const char *json, const char *idkey, uint64_t id, const char *key, char *out,
                    size_t cap)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":\"%016" PRIx64 "\"", idkey, id);
    const char *p = strstr(json, pat);
    if (!p) {
        return -1;
    }
    const char *stop = strstr(p, "\"children\"");
    const char *next = strstr(p + 1, "\"id\":\"");
    if (!stop || (next && next < stop)) {
        stop = next;
    }
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *k = strstr(p, pat);
    if (!k || (stop && k > stop)) {
        out[0] = 0;
        return -1;
    }
    k += strlen(pat);
    size_t n = 0;
    while (*k && *k != '"' && n + 1 < cap) {
        out[n++] = *k++;
    }
    out[n] = 0;
    return 0;
}

static void hex16(uint64_t v, char out[17])
{
    snprintf(out, 17, "%016" PRIx64, v);
}

#define TP_TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define TP_PARENT "00f067aa0ba902b7"
#define TP "00-" TP_TRACE "-" TP_PARENT "-01"

TEST_T(trace_ids_given_to_steps_and_responses_are_the_ids_the_api_returns, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "trace", NULL);
    tt_client *c = tt_test_client(s.endpoint, "trace-agent", NULL);

    /* A turn joined to the application's trace: root with a traceparent, a child and a
     * grandchild without, and a response in the child. */
    tt_step root, child, grand;
    CHECK_OK(tt_step_begin_ctx(c, &root, NULL, TP, TT_STEP_AGENT, "t-1", "turn", NULL));
    CHECK_OK(tt_step_begin(c, &child, &root, TT_STEP_LLM, "t-1", "plan", NULL));
    CHECK_OK(tt_step_begin(c, &grand, &child, TT_STEP_TOOL, "t-1", "search", "q"));
    tt_response *r = NULL;
    CHECK_OK(tt_response_begin_in(c, &r, &child, "t-1", "m", NULL, 0));
    uint64_t rid = tt_response_id(r);
    CHECK_OK(tt_response_end(r, NULL));
    CHECK_OK(tt_step_end(c, &grand, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_step_end(c, &child, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_step_end(c, &root, TT_STATUS_OK, 1, NULL));

    /* Two roots without any context: a trace each. */
    tt_step a, b;
    CHECK_OK(tt_step_begin(c, &a, NULL, TT_STEP_TOOL, "t-2", "a", NULL));
    CHECK_OK(tt_step_end(c, &a, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_step_begin(c, &b, NULL, TT_STEP_TOOL, "t-2", "b", NULL));
    CHECK_OK(tt_step_end(c, &b, TT_STATUS_OK, 1, NULL));

    /* A session default, and a response with its own traceparent outside any step. */
    const char *tp3 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    CHECK_OK(tt_session_traceparent(c, "t-3", tp3));
    tt_step d;
    CHECK_OK(tt_step_begin(c, &d, NULL, TT_STEP_TOOL, "t-3", "d", NULL));
    CHECK_OK(tt_step_end(c, &d, TT_STATUS_OK, 1, NULL));
    /* The client-wide default: for sessions without their own (t-3 keeps its own). */
    const char *tp5 = "00-11111111111111111111111111111111-2222222222222222-01";
    CHECK_OK(tt_flush(c, 10000)); /* the roots above are sent before the default changes */
    CHECK_OK(tt_session_traceparent(c, NULL, tp5));
    tt_step e, d2;
    CHECK_OK(tt_step_begin(c, &e, NULL, TT_STEP_TOOL, "t-5", "e", NULL));
    CHECK_OK(tt_step_end(c, &e, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_step_begin(c, &d2, NULL, TT_STEP_TOOL, "t-3", "d2", NULL));
    CHECK_OK(tt_step_end(c, &d2, TT_STATUS_OK, 1, NULL));
    /* Defaults are looked up when the worker encodes a root step: flushed before the clear. */
    CHECK_OK(tt_flush(c, 10000));
    CHECK_OK(tt_session_traceparent(c, NULL, NULL));
    tt_response *r2 = NULL;
    CHECK_OK(tt_response_begin_ctx(c, &r2, NULL, TP, "t-4", "m", NULL, 0));
    uint64_t rid2 = tt_response_id(r2);
    CHECK_OK(tt_response_end(r2, NULL));
    CHECK_OK(tt_flush(c, 10000));

    char *body = NULL, v[64], w[64], hx[17];
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/sessions/t-1?agent=trace-agent", NULL, &body),
             200);
    /* root: the given trace, the given parent span, its own span id */
    CHECK_OK(field_of(body, "step_id", root.id, "trace_id", v, sizeof v));
    CHECK_STR(v, TP_TRACE);
    CHECK_OK(field_of(body, "step_id", root.id, "parent_span_id", v, sizeof v));
    CHECK_STR(v, TP_PARENT);
    uint64_t sroot = tt_step_span_id(c, &root), schild = tt_step_span_id(c, &child);
    CHECK(sroot != 0 && schild != 0 && sroot != schild);
    hex16(sroot, hx);
    CHECK_OK(field_of(body, "step_id", root.id, "span_id", v, sizeof v));
    CHECK_STR(v, hx);
    /* child and grandchild: the same trace, each the child span of its parent */
    CHECK_OK(field_of(body, "step_id", child.id, "trace_id", v, sizeof v));
    CHECK_STR(v, TP_TRACE);
    CHECK_OK(field_of(body, "step_id", child.id, "parent_span_id", v, sizeof v));
    CHECK_STR(v, hx);
    hex16(schild, hx);
    CHECK_OK(field_of(body, "step_id", child.id, "span_id", v, sizeof v));
    CHECK_STR(v, hx);
    CHECK_OK(field_of(body, "step_id", grand.id, "trace_id", v, sizeof v));
    CHECK_STR(v, TP_TRACE);
    CHECK_OK(field_of(body, "step_id", grand.id, "parent_span_id", v, sizeof v));
    CHECK_STR(v, hx);
    hex16(tt_step_span_id(c, &grand), hx);
    CHECK_OK(field_of(body, "step_id", grand.id, "span_id", v, sizeof v));
    CHECK_STR(v, hx);
    free(body);

    /* the response in the child: same trace, parent span the child's, span id its id */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?session=t-1", NULL, &body), 200);
    CHECK_OK(field_of(body, "id", rid, "trace_id", v, sizeof v));
    CHECK_STR(v, TP_TRACE);
    hex16(schild, hx);
    CHECK_OK(field_of(body, "id", rid, "parent_span_id", v, sizeof v));
    CHECK_STR(v, hx);
    hex16(rid, hx);
    CHECK_OK(field_of(body, "id", rid, "span_id", v, sizeof v));
    CHECK_STR(v, hx);
    free(body);

    /* roots without context: a trace each, 32 lowercase hex digits, no parent span */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/sessions/t-2?agent=trace-agent", NULL, &body),
             200);
    CHECK_OK(field_of(body, "step_id", a.id, "trace_id", v, sizeof v));
    CHECK_OK(field_of(body, "step_id", b.id, "trace_id", w, sizeof w));
    CHECK_EQ(strlen(v), 32);
    CHECK_EQ(strspn(v, "0123456789abcdef"), 32);
    CHECK(strcmp(v, w) != 0 && strcmp(v, "00000000000000000000000000000000") != 0);
    CHECK(field_of(body, "step_id", a.id, "parent_span_id", v, sizeof v) != 0);
    free(body);

    /* the session default */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/sessions/t-3?agent=trace-agent", NULL, &body),
             200);
    CHECK_OK(field_of(body, "step_id", d.id, "trace_id", v, sizeof v));
    CHECK_STR(v, "0af7651916cd43dd8448eb211c80319c");
    CHECK_OK(field_of(body, "step_id", d.id, "parent_span_id", v, sizeof v));
    CHECK_STR(v, "b7ad6b7169203331");
    CHECK_OK(field_of(body, "step_id", d2.id, "trace_id", v, sizeof v));
    CHECK_STR(v, "0af7651916cd43dd8448eb211c80319c");
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/sessions/t-5?agent=trace-agent", NULL, &body),
             200);
    CHECK_OK(field_of(body, "step_id", e.id, "trace_id", v, sizeof v));
    CHECK_STR(v, "11111111111111111111111111111111");
    CHECK_OK(field_of(body, "step_id", e.id, "parent_span_id", v, sizeof v));
    CHECK_STR(v, "2222222222222222");
    free(body);

    /* the events API shows the begin's context too */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?session=t-1&kind=step_begin", NULL, &body),
             200);
    hex16(root.id, hx);
    char pat[64];
    snprintf(pat, sizeof pat, "\"step_id\":\"%s\"", hx);
    const char *ev = strstr(body, pat);
    CHECK_MSG(ev && strstr(ev, "\"trace_id\":\"" TP_TRACE "\"") &&
                  strstr(ev, "\"parent_span_id\":\"" TP_PARENT "\""),
              "step_begin event without its trace context: %s", body);
    free(body);

    /* a response's own traceparent */
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/responses?session=t-4", NULL, &body), 200);
    CHECK_OK(field_of(body, "id", rid2, "trace_id", v, sizeof v));
    CHECK_STR(v, TP_TRACE);
    CHECK_OK(field_of(body, "id", rid2, "parent_span_id", v, sizeof v));
    CHECK_STR(v, TP_PARENT);
    free(body);

    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

TEST(trace_traceparent_is_validated_strictly)
{
    static const char *const bad[] = {
        "",
        "00-" TP_TRACE "-" TP_PARENT,                           /* no flags */
        "00-" TP_TRACE "-" TP_PARENT "-01-",                    /* 00 has 55 chars */
        "00-00000000000000000000000000000000-" TP_PARENT "-01", /* zero trace id */
        "00-" TP_TRACE "-0000000000000000-01",                  /* zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" TP_PARENT "-01", /* uppercase */
        "00-" TP_TRACE "-00F067AA0BA902B7-01",                  /* uppercase */
        "ff-" TP_TRACE "-" TP_PARENT "-01",                     /* version ff */
        "00-" TP_TRACE "0-" TP_PARENT "-01",                    /* trace id 33 digits */
        "00-4bf92f3577b34da6a3ce929d0e0e473-" TP_PARENT "-01",  /* 31 digits */
        "00-" TP_TRACE "-" TP_PARENT "f-01",                    /* span 17 digits */
        "00_" TP_TRACE "-" TP_PARENT "-01",                     /* separator */
        "00-" TP_TRACE "-" TP_PARENT "-0g",                     /* flags not hex */
        "0-" TP_TRACE "-" TP_PARENT "-01",                      /* version 1 digit */
        "01-" TP_TRACE "-" TP_PARENT "-01x",                    /* later version, no '-' */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_MSG(tt_traceparent_check(bad[i]) == TT_EINVAL, "accepted: %s", bad[i]);
    }
    CHECK_EQ(tt_traceparent_check(NULL), TT_EINVAL);
    CHECK_OK(tt_traceparent_check(TP));
    CHECK_OK(tt_traceparent_check("01-" TP_TRACE "-" TP_PARENT "-01-future"));

    tt_config *cfg = NULL;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", "tcp://127.0.0.1:1"));
    tt_client *c = NULL;
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tt_step st = {.id = 7};
        CHECK_EQ(tt_step_begin_ctx(c, &st, NULL, bad[i], TT_STEP_TOOL, "s", "n", NULL), TT_EINVAL);
        CHECK_EQ(st.id, 0);
        tt_response *r = (tt_response *)1;
        CHECK_EQ(tt_response_begin_ctx(c, &r, NULL, bad[i], "s", "m", NULL, 0), TT_EINVAL);
        CHECK(r == NULL);
        CHECK_EQ(tt_session_traceparent(c, "s", bad[i]), TT_EINVAL);
    }
    /* Nothing was emitted by the refused calls. */
    tt_stats stats;
    CHECK_OK(tt_stats_get(c, &stats, sizeof stats));
    CHECK_EQ(stats.emitted, 0);
    /* Defaults: set and cleared; at most 64 sessions, replacing one is always possible. */
    CHECK_OK(tt_session_traceparent(c, NULL, TP));
    CHECK_OK(tt_session_traceparent(c, NULL, NULL));
    CHECK_OK(tt_session_traceparent(c, "never-set", NULL));
    char name[32];
    for (int i = 0; i < 64; i++) {
        snprintf(name, sizeof name, "s-%d", i);
        CHECK_OK(tt_session_traceparent(c, name, TP));
    }
    CHECK_EQ(tt_session_traceparent(c, "s-64", TP), TT_ENOSPC);
    CHECK_OK(tt_session_traceparent(c, "s-7", "00-" TP_TRACE "-" TP_PARENT "-00"));
    CHECK_OK(tt_session_traceparent(c, "s-7", NULL));
    CHECK_OK(tt_session_traceparent(c, "s-64", TP));
    char longname[300];
    memset(longname, 'x', 256);
    longname[256] = 0;
    CHECK_EQ(tt_session_traceparent(c, longname, TP), TT_EINVAL);
    tt_close(c, 100);
}

/* Both directions of compatibility (as S27 for the hello): an older collector reads a new
 * client's events, the new fields skipped as unknown; a new collector reads an older client's
 * events, which have no trace context. */

/* Every stored frame's payload (stored raw: compression_level 0 below) into dir/frame-N.bin;
 * returns how many. */
static int write_frames(const char *db, const char *dir)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(h, "SELECT codec, raw_len, data FROM frames ORDER BY id", -1, &st,
                             NULL) == SQLITE_OK);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        CHECK_EQ(sqlite3_column_int(st, 0), 0);
        CHECK_EQ(sqlite3_column_int64(st, 1), sqlite3_column_bytes(st, 2));
        char path[800];
        snprintf(path, sizeof path, "%s/frame-%d.bin", dir, n++);
        FILE *f = fopen(path, "wb");
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        CHECK(f && fwrite(sqlite3_column_blob(st, 2), 1, len, f) == len);
        fclose(f);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

TEST_T(trace_older_reader_skips_the_new_fields, 60)
{
    CHECK_MSG(system("protoc --version > /dev/null 2>&1") == 0, "protoc is missing");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "oldr", NULL);
    tt_client *c = tt_test_client(s.endpoint, "new-agent", "compression_level=0", NULL);
    tt_step st;
    CHECK_OK(tt_step_begin_ctx(c, &st, NULL, TP, TT_STEP_TOOL, "conv-9", "search", "q"));
    tt_response *r = NULL;
    CHECK_OK(tt_response_begin_in(c, &r, &st, "conv-9", "model-x", NULL, 0));
    CHECK_OK(tt_response_end(r, NULL));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 5, NULL));
    CHECK_OK(tt_flush(c, 10000));
    tt_close(c, 1000);
    tt_test_serve_stop(&s);
    /* The schema as it was before 0.5: proto/telltale.proto without the trace fields. */
    char dir[600], cmd[3000], out[700];
    snprintf(dir, sizeof dir, "%s/old", tt_test_tmpdir());
    snprintf(out, sizeof out, "%s/decoded.txt", tt_test_outdir());
    const char *src = getenv("TT_SRCDIR") ? getenv("TT_SRCDIR") : ".";
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && grep -v -E '(trace_id|span_id|parent_span_id) = ' "
             "'%s/proto/telltale.proto' > '%s/telltale.proto'",
             dir, src, dir);
    CHECK_OK(system(cmd));
    snprintf(cmd, sizeof cmd, "grep -E 'span_id = [0-9]' '%s/telltale.proto' > /dev/null", dir);
    CHECK_MSG(system(cmd) != 0, "the old schema still names span ids");
    int frames = write_frames(s.db, dir);
    CHECK(frames >= 1);
    unlink(out);
    for (int i = 0; i < frames; i++) {
        snprintf(cmd, sizeof cmd,
                 "protoc --proto_path='%s' --decode=telltale.v1.Batch telltale.proto "
                 "< '%s/frame-%d.bin' >> '%s' 2>&1",
                 dir, dir, i, out);
        CHECK_MSG(system(cmd) == 0, "protoc with the old schema failed, see %s", out);
    }
    FILE *f;
    f = fopen(out, "r");
    char text[16384];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    /* Every field the old reader knows is intact; the new ones are unknown numbered fields. */
    const char *want[] = {"step_begin {",
                          "kind: 2",
                          "name: \"search\"",
                          "query: \"q\"",
                          "session: \"conv-9\"",
                          "response_begin {",
                          "model: \"model-x\"",
                          "step_end {",
                          "result_bytes: 5",
                          "6: \"K",
                          "7: 0x",
                          "8: 0x",
                          "5: \"K"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_MSG(strstr(text, want[i]) != NULL, "old reader output lacks \"%s\":\n%s", want[i],
                  text);
    }
}

TEST_T(trace_new_collector_reads_older_client_steps, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "oldc", NULL);
    char cmd[1200], out[4096] = {0};
    const char *b = getenv("TT_BUILD");
    snprintf(cmd, sizeof cmd,
             "TT_WIRE_STEPS=1 '%s/tests/wire_agent' '%s' old-agent "
             "0123456789abcdef0123456789abcdef 1 1 3 2>&1",
             b ? b : "build", s.endpoint);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    CHECK_MSG(pclose(p) == 0 && strstr(out, "ack 1"), "wire agent: %s", out);
    char *body = NULL;
    CHECK_EQ(
        tt_test_http(s.http, "GET", "/api/v1/sessions/old-client?agent=old-agent", NULL, &body),
        200);
    char v[64];
    for (uint64_t id = 1; id <= 3; id++) {
        CHECK_OK(field_of(body, "step_id", id, "name", v, sizeof v));
        CHECK_STR(v, "old");
        CHECK_MSG(field_of(body, "step_id", id, "trace_id", v, sizeof v) != 0,
                  "an older client's step has a trace id: %s", body);
        CHECK(field_of(body, "step_id", id, "span_id", v, sizeof v) != 0);
    }
    free(body);
    tt_test_serve_stop(&s);
}

/* A store made before the trace columns existed (steps without them, as 0.4 created it) is
 * opened, given the columns, and stores and returns trace contexts; its old steps have none. */
TEST_T(trace_store_from_before_the_columns_opens_and_stores, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "pretr", NULL);
    tt_client *c = tt_test_client(s.endpoint, "pre", NULL);
    tt_step old;
    CHECK_OK(tt_step_begin(c, &old, NULL, TT_STEP_TOOL, "m-1", "old", NULL));
    CHECK_OK(tt_step_end(c, &old, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_close(c, 5000));
    tt_test_serve_stop(&s);
    sqlite3 *db;
    CHECK(sqlite3_open(s.db, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "ALTER TABLE steps DROP COLUMN trace_id; ALTER TABLE steps DROP COLUMN "
                       "span_id; ALTER TABLE steps DROP COLUMN parent_span_id",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(db, "SELECT trace_id FROM steps LIMIT 0", -1, &st, NULL) != SQLITE_OK);
    sqlite3_close(db);
    tt_test_serve_start(&s, "pretr", NULL);
    c = tt_test_client(s.endpoint, "pre", NULL);
    /* Step ids are unique per instance only: a first step elsewhere, so that the one looked up
     * below does not share the old instance's step's id. */
    tt_step first, now;
    CHECK_OK(tt_step_begin(c, &first, NULL, TT_STEP_TOOL, "m-2", "first", NULL));
    CHECK_OK(tt_step_end(c, &first, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_step_begin_ctx(c, &now, NULL, TP, TT_STEP_TOOL, "m-1", "new", NULL));
    CHECK(now.id != old.id);
    CHECK_OK(tt_step_end(c, &now, TT_STATUS_OK, 1, NULL));
    CHECK_OK(tt_flush(c, 10000));
    char *body = NULL, v[64];
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/sessions/m-1?agent=pre", NULL, &body), 200);
    CHECK_OK(field_of(body, "step_id", now.id, "trace_id", v, sizeof v));
    CHECK_STR(v, TP_TRACE);
    CHECK_OK(field_of(body, "step_id", old.id, "name", v, sizeof v));
    CHECK_STR(v, "old");
    CHECK(field_of(body, "step_id", old.id, "trace_id", v, sizeof v) != 0);
    free(body);
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
}

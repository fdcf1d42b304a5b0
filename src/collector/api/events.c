/*
 * api/events.c - stored events (a page of JSON, or all of them as streamed JSON lines), their
 * count, and the live stream (server-sent events). Filters are the same for all three.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/api/params.h"
#include "collector/hub.h"
#include "collector/retain.h"
#include "collector/store/store.h"
#include "collector/api/render.h"
#include "common/json.h"

#define PAGE_DEFAULT 1000
#define PAGE_MAX 100000
#define SSE_KEEPALIVE_MS 15000

static const char *const event_params[] = {"agent",  "session",  "kind",  "min_severity",
                                           "since",  "until",    "limit", "cursor",
                                           "format", "instance", NULL};

/* Fill f from the request; on a bad parameter, returns the message. */
static const char *parse_filter(const struct http_req *r, struct store_filter *f)
{
    static __thread char msg[300];
    const char *bad = http_params_check(r, event_params);
    if (bad) {
        return bad;
    }
    store_filter_init(f);
    const char *v;
    if ((v = http_param(r, "agent"))) {
        if (strlen(v) >= sizeof f->agent) {
            return "agent: longer than 255 bytes";
        }
        snprintf(f->agent, sizeof f->agent, "%s", v);
    }
    if ((v = http_param(r, "session"))) {
        if (strlen(v) >= sizeof f->session) {
            return "session: longer than 255 bytes";
        }
        snprintf(f->session, sizeof f->session, "%s", v);
    }
    if ((v = http_param(r, "kind")) && params_kinds(v, &f->kinds) != 0) {
        snprintf(msg, sizeof msg, "kind: \"%.100s\" is not a list of event kinds", v);
        return msg;
    }
    if ((f->kinds & HUB_KIND_ALERT) && strcmp(r->url, "/api/v1/stream") != 0) {
        return "kind: alert is a live-stream kind; stored alerts are at /api/v1/alerts";
    }
    if ((v = http_param(r, "min_severity")) && params_severity(v, &f->min_severity) != 0) {
        return "min_severity: expected trace, debug, info, warn, error, fatal or 1-24";
    }
    if ((v = http_param(r, "since")) && http_parse_time(v, &f->since) != 0) {
        return "since: expected Unix nanoseconds or RFC 3339 UTC (2026-11-24T10:00:00Z)";
    }
    if ((v = http_param(r, "until")) && http_parse_time(v, &f->until) != 0) {
        return "until: expected Unix nanoseconds or RFC 3339 UTC (2026-11-24T10:00:00Z)";
    }
    if ((v = http_param(r, "cursor")) && store_cursor_parse(f, v) != 0) {
        return "cursor: expected the \"next\" value of a previous page";
    }
    if ((v = http_param(r, "instance"))) {
        if (params_hex16(v, f->instance) != 0) {
            return "instance: expected 32 hex digits";
        }
        f->has_instance = 1;
    }
    return NULL;
}

/* When the time range reaches back before what retention removed, the answer says so: events
 * at or before pruned_through_ns may be gone (retain.h), so an empty or short answer there is
 * not "nothing happened". */
static void pruned_kv(tt__json *j, const struct store_filter *f)
{
    int64_t through = retain_pruned_through();
    if (through > 0 && f->since <= through) {
        tt__json_kv_bool(j, "pruned", 1);
        tt__json_kv_i64(j, "pruned_through_ns", through);
    }
}

static enum MHD_Result events_page(const struct http_req *r, const struct store_filter *f,
                                   uint64_t limit)
{
    char err[256];
    struct store_events *q;
    if (store_events_open(r->ctx->store, f, &q, err, sizeof err) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err);
    }
    tt__buf b;
    tt__buf_init(&b, 256u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_key(&j, "events");
    tt__json_arr_begin(&j);
    tt__event ev;
    const char *agent;
    const uint8_t *inst;
    uint64_t n = 0;
    int rc = 0;
    while (n < limit && (rc = store_events_next(q, &ev, &agent, &inst)) == 1) {
        render_event(&j, agent, inst, &ev);
        n++;
    }
    tt__json_arr_end(&j);
    tt__json_kv_u64(&j, "count", n);
    char cursor[64];
    store_events_cursor(q, cursor, sizeof cursor);
    /* A full page may have more after it; a short one ended the data. */
    if (n == limit && n > 0) {
        tt__json_kv_cstr(&j, "next", cursor);
    } else {
        tt__json_key(&j, "next");
        tt__json_null(&j);
    }
    pruned_kv(&j, f);
    tt__json_obj_end(&j);
    store_events_close(q);
    enum MHD_Result res;
    if (rc < 0) {
        res = http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "storage error while reading events");
    } else if (j.err) {
        res = http_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "page too large: ask for a smaller limit");
    } else {
        res = http_json(r, MHD_HTTP_OK, &b);
    }
    tt__buf_fini(&b);
    return res;
}

/* Streaming JSON lines: the query runs as libmicrohttpd asks for more. */
struct ndjson {
    struct store_events *q;
    uint64_t left; /* 0: no limit */
    int unlimited;
    tt__buf pending; /* rendered, not yet handed out */
    size_t off;
    int done;
};

static ssize_t ndjson_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct ndjson *s = cls;
    while (s->pending.len - s->off < max && !s->done) {
        tt__event ev;
        const char *agent;
        const uint8_t *inst;
        if ((!s->unlimited && s->left == 0) || store_events_next(s->q, &ev, &agent, &inst) != 1) {
            s->done = 1;
            break;
        }
        if (s->off > 0 && s->off == s->pending.len) {
            s->pending.len = s->off = 0;
        }
        tt__json j;
        tt__json_init(&j, &s->pending);
        render_event(&j, agent, inst, &ev);
        tt__json_raw(&j, "\n", 1);
        s->left--;
    }
    size_t k = s->pending.len - s->off;
    if (k == 0) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    k = k < max ? k : max;
    memcpy(buf, s->pending.data + s->off, k);
    s->off += k;
    if (s->off == s->pending.len) {
        s->pending.len = s->off = 0;
    }
    return (ssize_t)k;
}

static void ndjson_free(void *cls)
{
    struct ndjson *s = cls;
    store_events_close(s->q);
    tt__buf_fini(&s->pending);
    free(s);
}

static enum MHD_Result events_ndjson(const struct http_req *r, const struct store_filter *f,
                                     uint64_t limit)
{
    char err[256];
    struct ndjson *s = calloc(1, sizeof *s);
    if (!s) {
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    if (store_events_open(r->ctx->store, f, &s->q, err, sizeof err) != 0) {
        free(s);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err);
    }
    s->left = limit;
    s->unlimited = limit == 0;
    tt__buf_init(&s->pending, 32u << 20);
    return http_stream(r, "application/x-ndjson", 65536, ndjson_read, s, ndjson_free);
}

enum MHD_Result api_events(const struct http_req *r)
{
    struct store_filter f;
    const char *bad = parse_filter(r, &f);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *format = http_param(r, "format");
    int nd = format && strcmp(format, "ndjson") == 0;
    if (format && !nd && strcmp(format, "json") != 0) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "format: expected json or ndjson");
    }
    uint64_t limit;
    if (params_limit(http_param(r, "limit"), nd ? 0 : PAGE_DEFAULT, nd ? UINT64_MAX : PAGE_MAX,
                     &limit) != 0 ||
        (!nd && limit == 0)) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "limit: expected an integer in [1, %d]%s",
                          PAGE_MAX, nd ? "" : " (0 means no limit with format=ndjson)");
    }
    return nd ? events_ndjson(r, &f, limit) : events_page(r, &f, limit);
}

enum MHD_Result api_events_count(const struct http_req *r)
{
    struct store_filter f;
    const char *bad = parse_filter(r, &f);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    if (http_param(r, "limit") || http_param(r, "format")) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "count takes neither limit nor format");
    }
    char err[256];
    int64_t n = store_events_count(r->ctx->store, &f, err, sizeof err);
    if (n < 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err);
    }
    tt__buf b;
    tt__buf_init(&b, 256);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_i64(&j, "count", n);
    pruned_kv(&j, &f);
    tt__json_obj_end(&j);
    enum MHD_Result rc = http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

/* --- live stream --------------------------------------------------------------------------- */

struct sse {
    struct hub_sub *sub;
    int greeted;
};

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct sse *s = cls;
    static const char hello[] = "retry: 2000\n: connected\n\n";
    if (!s->greeted) {
        s->greeted = 1;
        size_t n = sizeof hello - 1 < max ? sizeof hello - 1 : max;
        memcpy(buf, hello, n);
        return (ssize_t)n;
    }
    ssize_t n = hub_read(s->sub, buf, max, SSE_KEEPALIVE_MS);
    if (n < 0) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (n == 0) {
        static const char ka[] = ": keepalive\n\n";
        n = (ssize_t)(sizeof ka - 1 < max ? sizeof ka - 1 : max);
        memcpy(buf, ka, (size_t)n);
    }
    return n;
}

static void sse_free(void *cls)
{
    struct sse *s = cls;
    hub_unsubscribe(s->sub);
    free(s);
}

enum MHD_Result api_stream(const struct http_req *r)
{
    static const char *const allowed[] = {"agent", "session", "kind", "min_severity", NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    struct store_filter qf;
    bad = parse_filter(r, &qf);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    struct hub_filter f;
    memset(&f, 0, sizeof f);
    memcpy(f.agent, qf.agent, sizeof f.agent);
    memcpy(f.session, qf.session, sizeof f.session);
    f.kinds = qf.kinds;
    f.min_severity = qf.min_severity;
    struct sse *s = calloc(1, sizeof *s);
    if (!s || !(s->sub = hub_subscribe(r->ctx->hub, &f))) {
        free(s);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "too many live-stream subscribers");
    }
    return http_stream(r, "text/event-stream", 16384, sse_read, s, sse_free);
}

/* 200 {"ok":true} while the store takes batches; 503 with the store's state and the reason
 * while it refuses them (disk full) or after it failed (I/O error, damage, the file gone). */
enum MHD_Result api_health(const struct http_req *r)
{
    char why[512];
    int state = store_failure(r->ctx->store, why, sizeof why);
    if (state == STORE_HEALTHY) {
        tt__buf b = {(uint8_t *)"{\"ok\":true}", 11, 11, 11};
        return http_json(r, MHD_HTTP_OK, &b);
    }
    tt__buf b;
    tt__buf_init(&b, 4096);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_bool(&j, "ok", 0);
    tt__json_kv_cstr(&j, "store", state == STORE_FAILED ? "failed" : "refusing");
    tt__json_kv_cstr(&j, "reason", why);
    tt__json_obj_end(&j);
    enum MHD_Result rc = http_json(r, MHD_HTTP_SERVICE_UNAVAILABLE, &b);
    tt__buf_fini(&b);
    return rc;
}

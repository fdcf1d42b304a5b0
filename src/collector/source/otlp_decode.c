/*
 * otlp_decode.c - OTLP trace requests (protobuf and JSON) into flat spans, spans into telltale
 * Batch payloads (otlp_decode.h; the mapping is docs/otel.md's table).
 *
 * Field numbers are those of opentelemetry-proto: ExportTraceServiceRequest.resource_spans 1;
 * ResourceSpans.resource 1, .scope_spans 2; Resource.attributes 1; ScopeSpans.spans 2;
 * Span.trace_id 1, .span_id 2, .parent_span_id 4, .name 5, .start_time_unix_nano 7 (fixed64),
 * .end_time_unix_nano 8 (fixed64), .attributes 9, .status 15; Status.message 2, .code 3;
 * KeyValue.key 1, .value 2; AnyValue.string_value 1, .bool_value 2, .int_value 3,
 * .double_value 4. The protobuf is read twice: a first pass counts (and checks every limit),
 * then the arrays are allocated and a second pass fills them.
 */
#include "collector/source/otlp_decode.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "telltale.h"

/* --- attributes ----------------------------------------------------------------------------- */

enum { AV_NONE, AV_STR, AV_INT, AV_DOUBLE, AV_BOOL };

struct any {
    int type;
    tt__bstr s;
    int64_t i;
    double d;
    int b;
};

static int bstr_is(tt__bstr b, const char *s)
{
    size_t n = strlen(s);
    return b.n == n && memcmp(b.p, s, n) == 0;
}

/* Keep one attribute of a span (the keys of docs/otel.md); others are ignored. */
static void span_attr(struct otlp_span *s, tt__bstr key, const struct any *v)
{
    if (v->type == AV_STR) {
        tt__bstr *dst = bstr_is(key, "gen_ai.operation.name")  ? &s->operation
                        : bstr_is(key, "gen_ai.tool.name")     ? &s->tool_name
                        : bstr_is(key, "gen_ai.request.model") ? &s->model
                        : bstr_is(key, "gen_ai.provider.name") ? &s->provider
                        : bstr_is(key, "gen_ai.system") ? (s->provider.n ? NULL : &s->provider)
                        : bstr_is(key, "gen_ai.conversation.id") ? &s->conversation
                        : bstr_is(key, "error.type")             ? &s->error_type
                                                                 : NULL;
        if (dst) {
            if (v->s.n > OTLP_STR_MAX) {
                s->refused = "an attribute value longer than 4096 bytes";
            } else {
                *dst = v->s;
            }
        }
    } else if (v->type == AV_INT) {
        if (bstr_is(key, "gen_ai.usage.input_tokens")) {
            s->input_tokens = v->i < 0 ? -1 : v->i;
        } else if (bstr_is(key, "gen_ai.usage.output_tokens")) {
            s->output_tokens = v->i < 0 ? -1 : v->i;
        }
    }
}

/* --- protobuf ------------------------------------------------------------------------------- */

struct pb_ctx {
    struct otlp_request *req; /* NULL arrays in the counting pass */
    int fill;
    uint32_t n_res, n_spans;
    const char *why;
};

static int pb_any(tt__bstr b, struct any *v)
{
    tt__pb_reader r;
    uint32_t f, wt;
    tt__pb_reader_init(&r, b.p, b.n);
    v->type = AV_NONE;
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (f == 1 && wt == TT_PB_LEN) {
            v->s.p = tt__pb_bytes(&r, &v->s.n);
            v->type = AV_STR;
        } else if (f == 3 && wt == TT_PB_VARINT) {
            v->i = (int64_t)tt__pb_varint(&r);
            v->type = AV_INT;
        } else if (f == 2 && wt == TT_PB_VARINT) {
            v->b = tt__pb_varint(&r) != 0;
            v->type = AV_BOOL;
        } else if (f == 4 && wt == TT_PB_I64) {
            v->d = tt__pb_double(&r);
            v->type = AV_DOUBLE;
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return rc < 0 || r.err ? -1 : 0;
}

/* A KeyValue: its key and value. */
static int pb_kv(tt__bstr b, tt__bstr *key, struct any *v)
{
    tt__pb_reader r;
    uint32_t f, wt;
    tt__pb_reader_init(&r, b.p, b.n);
    key->p = NULL;
    key->n = 0;
    v->type = AV_NONE;
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (f == 1 && wt == TT_PB_LEN) {
            key->p = tt__pb_bytes(&r, &key->n);
        } else if (f == 2 && wt == TT_PB_LEN) {
            tt__bstr vb;
            vb.p = tt__pb_bytes(&r, &vb.n);
            if (!r.err && pb_any(vb, v) != 0) {
                return -1;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return rc < 0 || r.err ? -1 : 0;
}

static int pb_id(tt__bstr b, uint8_t *out, size_t n, const char **why)
{
    if (b.n == 0) {
        memset(out, 0, n);
        return 0;
    }
    if (b.n != n) {
        *why = n == 16 ? "a trace id that is not 16 bytes" : "a span id that is not 8 bytes";
        return -1;
    }
    memcpy(out, b.p, n);
    return 0;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static int pb_status(tt__bstr b, struct otlp_span *s)
{
    tt__pb_reader r;
    uint32_t f, wt;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (f == 2 && wt == TT_PB_LEN) {
            s->status_message.p = tt__pb_bytes(&r, &s->status_message.n);
        } else if (f == 3 && wt == TT_PB_VARINT) {
            s->status_code = (uint32_t)tt__pb_varint(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return rc < 0 || r.err ? -1 : 0;
}

static void span_init(struct otlp_span *s)
{
    memset(s, 0, sizeof *s);
    s->input_tokens = s->output_tokens = -1;
}

/* The checks every span passes whichever encoding it came in. */
static void span_check(struct otlp_span *s)
{
    if (s->refused) {
        return;
    }
    if (s->span_id == 0) {
        s->refused = "a span without a span id";
    } else if (s->name.n > OTLP_STR_MAX || s->status_message.n > OTLP_STR_MAX) {
        s->refused = "a span name or status message longer than 4096 bytes";
    } else if (s->end_ns < s->start_ns || s->start_ns == 0 || s->end_ns > INT64_MAX) {
        s->refused = "a span whose times are missing or end before they start";
    }
}

static int pb_span(struct pb_ctx *c, tt__bstr b)
{
    if (c->n_spans == OTLP_SPANS_MAX) {
        c->why = "more than 65536 spans in the request";
        return -1;
    }
    struct otlp_span tmp, *s = c->fill ? &c->req->spans[c->n_spans] : &tmp;
    c->n_spans++;
    span_init(s);
    tt__pb_reader r;
    uint32_t f, wt, n_attrs = 0;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        tt__bstr v = {NULL, 0};
        if (wt == TT_PB_LEN && (f == 1 || f == 2 || f == 4 || f == 5 || f == 9 || f == 15)) {
            v.p = tt__pb_bytes(&r, &v.n);
            if (r.err) {
                break;
            }
        }
        uint8_t id[8];
        if (f == 1 && wt == TT_PB_LEN) {
            if (pb_id(v, s->trace_id, 16, &c->why) != 0) {
                return -1;
            }
        } else if ((f == 2 || f == 4) && wt == TT_PB_LEN) {
            if (pb_id(v, id, 8, &c->why) != 0) {
                return -1;
            }
            *(f == 2 ? &s->span_id : &s->parent_id) = be64(id);
        } else if (f == 5 && wt == TT_PB_LEN) {
            s->name = v;
        } else if ((f == 7 || f == 8) && wt == TT_PB_I64) {
            *(f == 7 ? &s->start_ns : &s->end_ns) = tt__pb_fixed64(&r);
        } else if (f == 9 && wt == TT_PB_LEN) {
            if (++n_attrs > OTLP_ATTRS_MAX) {
                s->refused = "more than 256 attributes on a span";
                continue;
            }
            tt__bstr key;
            struct any av;
            if (pb_kv(v, &key, &av) != 0) {
                c->why = "a malformed span attribute";
                return -1;
            }
            span_attr(s, key, &av);
        } else if (f == 15 && wt == TT_PB_LEN) {
            if (pb_status(v, s) != 0) {
                c->why = "a malformed span status";
                return -1;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (rc < 0 || r.err) {
        c->why = "a malformed span";
        return -1;
    }
    span_check(s);
    return 0;
}

/* Call fn on each length-delimited `field` of message b (other fields skipped). 0, or -1 with
 * *why set (fn's reason, else bad). */
static int pb_repeated(tt__bstr b, uint32_t field, int (*fn)(void *, tt__bstr), void *ctx,
                       const char **why, const char *bad)
{
    tt__pb_reader r;
    uint32_t f, wt;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (f == field && wt == TT_PB_LEN) {
            tt__bstr v;
            v.p = tt__pb_bytes(&r, &v.n);
            if (r.err || fn(ctx, v) != 0) {
                break;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (*why) {
        return -1;
    }
    if (rc < 0 || r.err) {
        *why = bad;
        return -1;
    }
    return 0;
}

static int span_item(void *c, tt__bstr b)
{
    return pb_span(c, b);
}

static int pb_scope_spans(struct pb_ctx *c, tt__bstr b)
{
    return pb_repeated(b, 2, span_item, c, &c->why, "malformed scope spans");
}

static int pb_resource(struct pb_ctx *c, tt__bstr b, tt__bstr *service)
{
    tt__pb_reader r;
    uint32_t f, wt, n_attrs = 0;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (f == 1 && wt == TT_PB_LEN) {
            tt__bstr v, key;
            struct any av;
            v.p = tt__pb_bytes(&r, &v.n);
            if (r.err || ++n_attrs > OTLP_ATTRS_MAX || pb_kv(v, &key, &av) != 0) {
                c->why = r.err                      ? NULL
                         : n_attrs > OTLP_ATTRS_MAX ? "more than 256 attributes on a resource"
                                                    : "a malformed resource attribute";
                break;
            }
            if (bstr_is(key, "service.name") && av.type == AV_STR) {
                *service = av.s;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (c->why || rc < 0 || r.err) {
        c->why = c->why ? c->why : "a malformed resource";
        return -1;
    }
    return 0;
}

/* A ResourceSpans or ResourceLogs: its resource's service.name into *service (field 1), and
 * scope_fn on each of its scope messages (field 2). 0, or -1 with *why set. */
static int pb_resource_level(tt__bstr b, int (*scope_fn)(void *, tt__bstr), void *ctx,
                             const char **why, tt__bstr *service, const char *bad)
{
    tt__pb_reader r;
    uint32_t f, wt;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (wt == TT_PB_LEN && (f == 1 || f == 2)) {
            tt__bstr v;
            v.p = tt__pb_bytes(&r, &v.n);
            if (r.err) {
                break;
            }
            struct pb_ctx pc = {NULL, 0, 0, 0, NULL};
            if (f == 1 && pb_resource(&pc, v, service) != 0) {
                *why = pc.why;
                return -1;
            }
            if (f == 2 && scope_fn(ctx, v) != 0) {
                return -1;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (rc < 0 || r.err) {
        *why = bad;
        return -1;
    }
    if (service->n > OTLP_STR_MAX) {
        *why = "a service.name longer than 4096 bytes";
        return -1;
    }
    return 0;
}

static int scope_spans_item(void *c, tt__bstr b)
{
    return pb_scope_spans(c, b);
}

static int pb_resource_spans(struct pb_ctx *c, tt__bstr b)
{
    if (c->n_res == OTLP_RESOURCES_MAX) {
        c->why = "more than 1024 resources in the request";
        return -1;
    }
    uint32_t ri = c->n_res++;
    tt__bstr service = {NULL, 0};
    uint32_t first = c->n_spans;
    if (pb_resource_level(b, scope_spans_item, c, &c->why, &service, "malformed resource spans") !=
        0) {
        return -1;
    }
    if (c->fill) {
        struct otlp_resource *res = &c->req->res[ri];
        res->service_name = service;
        res->first = first;
        res->n = c->n_spans - first;
    }
    return 0;
}

static int resource_spans_item(void *c, tt__bstr b)
{
    return pb_resource_spans(c, b);
}

static int pb_request(struct pb_ctx *c, const uint8_t *body, size_t n)
{
    tt__bstr all = {body, n};
    return pb_repeated(all, 1, resource_spans_item, c, &c->why,
                       "a malformed ExportTraceServiceRequest");
}

int otlp_traces_decode_pb(struct otlp_request *req, const uint8_t *body, size_t n, const char **why)
{
    memset(req, 0, sizeof *req);
    if (n > OTLP_BODY_MAX) {
        *why = "a body above 4 MiB";
        return -1;
    }
    struct pb_ctx c = {req, 0, 0, 0, NULL};
    if (pb_request(&c, body, n) != 0) {
        *why = c.why;
        return -1;
    }
    req->res = calloc(c.n_res ? c.n_res : 1, sizeof *req->res);
    req->spans = calloc(c.n_spans ? c.n_spans : 1, sizeof *req->spans);
    if (!req->res || !req->spans) {
        otlp_request_free(req);
        *why = "out of memory";
        return -1;
    }
    req->n_res = c.n_res;
    req->n_spans = c.n_spans;
    struct pb_ctx f = {req, 1, 0, 0, NULL};
    if (pb_request(&f, body, n) != 0) { /* cannot differ from the first pass */
        otlp_request_free(req);
        *why = f.why;
        return -1;
    }
    return 0;
}

/* --- JSON ----------------------------------------------------------------------------------- */

/* jansson builds a tree whose size is not the body's: 4 MiB of "[{},{},...]" is 1.4 million
 * objects, 300 MB of allocations. While an OTLP body is parsed, the thread's allocations through
 * jansson are capped at OTLP_JSON_ALLOC_MAX (counted as made, frees not credited, so the cap
 * also bounds the parse's time); above it the parse fails and the request is refused (413). The
 * cap is per thread, so other users of jansson are left alone. Depth: jansson refuses nesting
 * deeper than 2048 (JSON_PARSER_MAX_DEPTH), and nothing here recurses over the tree. */
static _Thread_local int json_capped, json_over;
static _Thread_local size_t json_left;

static void *json_capped_malloc(size_t n)
{
    if (json_capped) {
        if (n > json_left) {
            json_over = 1;
            return NULL;
        }
        json_left -= n;
    }
    return malloc(n);
}

void otlp_decode_init(void)
{
    json_set_alloc_funcs(json_capped_malloc, free);
}

/* Parse body under the cap; NULL with *why when it is not JSON or is over the cap (*over). */
static json_t *json_load_capped(const uint8_t *body, size_t n, int *over, const char **why)
{
    json_capped = 1;
    json_over = 0;
    json_left = OTLP_JSON_ALLOC_MAX;
    json_t *root = json_loadb((const char *)body, n, JSON_REJECT_DUPLICATES, NULL);
    json_capped = 0;
    *over = json_over;
    if (json_over) {
        json_decref(root);
        *why = "the JSON body needs more than 64 MiB to decode; send fewer items per request";
        return NULL;
    }
    if (!root || !json_is_object(root)) {
        json_decref(root);
        *why = "a body that is not a JSON object";
        return NULL;
    }
    return root;
}

static tt__bstr jstr(json_t *v)
{
    tt__bstr b = {NULL, 0};
    if (json_is_string(v)) {
        b.p = (const uint8_t *)json_string_value(v);
        b.n = json_string_length(v);
    }
    return b;
}

static int hexval(int ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* A hex id of n bytes (absent or "": all zero). */
static int json_id(json_t *v, uint8_t *out, size_t n, const char **why)
{
    memset(out, 0, n);
    if (!v || (json_is_string(v) && json_string_length(v) == 0)) {
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s || json_string_length(v) != 2 * n) {
        *why =
            n == 16 ? "a traceId that is not 32 hex digits" : "a spanId that is not 16 hex digits";
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            *why = "an id with a character that is not a hex digit";
            return -1;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* A 64-bit integer as OTLP/JSON writes it: a decimal string or a number. */
static int json_u64(json_t *v, uint64_t *out)
{
    if (!v) {
        *out = 0;
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        *out = (uint64_t)x;
        return x < 0 ? -1 : 0;
    }
    const char *s = json_string_value(v);
    if (!s || !*s || json_string_length(v) > 20) {
        return -1;
    }
    uint64_t x = 0;
    for (; *s; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (*s < '0' || *s > '9' || x > (UINT64_MAX - d) / 10) {
            return -1;
        }
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

static int json_any(json_t *v, struct any *out)
{
    out->type = AV_NONE;
    if (!v) {
        return 0;
    }
    if (!json_is_object(v)) {
        return -1;
    }
    json_t *x;
    if ((x = json_object_get(v, "stringValue"))) {
        if (!json_is_string(x)) {
            return -1;
        }
        out->s = jstr(x);
        out->type = AV_STR;
    } else if ((x = json_object_get(v, "intValue"))) {
        uint64_t u;
        if (json_is_integer(x)) {
            out->i = (int64_t)json_integer_value(x);
        } else if (json_is_string(x) && json_string_value(x)[0] == '-') {
            json_t *pos = json_string(json_string_value(x) + 1);
            int bad = !pos || json_u64(pos, &u) != 0 || u > INT64_MAX;
            json_decref(pos);
            if (bad) {
                return -1;
            }
            out->i = -(int64_t)u;
        } else if (json_u64(x, &u) != 0 || u > INT64_MAX) {
            return -1;
        } else {
            out->i = (int64_t)u;
        }
        out->type = AV_INT;
    } else if ((x = json_object_get(v, "boolValue"))) {
        if (!json_is_boolean(x)) {
            return -1;
        }
        out->b = json_is_true(x);
        out->type = AV_BOOL;
    } else if ((x = json_object_get(v, "doubleValue"))) {
        if (json_is_number(x)) {
            out->d = json_number_value(x);
            out->type = AV_DOUBLE;
        }
    }
    return 0;
}

/* An attribute list: calls back for each (key, value); -1 when malformed. */
static int json_attrs(json_t *arr, struct otlp_span *s, tt__bstr *service, const char **why)
{
    if (!arr) {
        return 0;
    }
    if (!json_is_array(arr)) {
        *why = "attributes that are not an array";
        return -1;
    }
    if (json_array_size(arr) > OTLP_ATTRS_MAX) {
        if (s) {
            s->refused = "more than 256 attributes on a span";
            return 0;
        }
        *why = "more than 256 attributes on a resource";
        return -1;
    }
    size_t i;
    json_t *kv;
    json_array_foreach(arr, i, kv)
    {
        struct any av;
        tt__bstr key = jstr(json_object_get(kv, "key"));
        if (!json_is_object(kv) || !key.p || json_any(json_object_get(kv, "value"), &av) != 0) {
            *why = "a malformed attribute";
            return -1;
        }
        if (s) {
            span_attr(s, key, &av);
        } else if (bstr_is(key, "service.name") && av.type == AV_STR) {
            *service = av.s;
        }
    }
    return 0;
}

static int json_span(json_t *js, struct otlp_span *s, const char **why)
{
    span_init(s);
    uint8_t id[8];
    uint64_t code = 0;
    if (!json_is_object(js)) {
        *why = "a span that is not an object";
        return -1;
    }
    if (json_id(json_object_get(js, "traceId"), s->trace_id, 16, why) != 0 ||
        json_id(json_object_get(js, "spanId"), id, 8, why) != 0) {
        return -1;
    }
    s->span_id = be64(id);
    if (json_id(json_object_get(js, "parentSpanId"), id, 8, why) != 0) {
        return -1;
    }
    s->parent_id = be64(id);
    json_t *name = json_object_get(js, "name");
    if (name && !json_is_string(name)) {
        *why = "a span name that is not a string";
        return -1;
    }
    s->name = jstr(name);
    if (json_u64(json_object_get(js, "startTimeUnixNano"), &s->start_ns) != 0 ||
        json_u64(json_object_get(js, "endTimeUnixNano"), &s->end_ns) != 0) {
        *why = "a span time that is not a 64-bit integer";
        return -1;
    }
    json_t *st = json_object_get(js, "status");
    if (st) {
        json_t *msg = json_object_get(st, "message");
        if (!json_is_object(st) || json_u64(json_object_get(st, "code"), &code) != 0 || code > 2 ||
            (msg && !json_is_string(msg))) {
            *why = "a malformed span status";
            return -1;
        }
        s->status_code = (uint32_t)code;
        s->status_message = jstr(msg);
    }
    if (json_attrs(json_object_get(js, "attributes"), s, NULL, why) != 0) {
        return -1;
    }
    span_check(s);
    return 0;
}

/*
 * The resource and scope levels of an OTLP/JSON request, which traces, logs and metrics share:
 * arr holds the resource entries (resourceSpans, resourceLogs or resourceMetrics); each one's
 * service.name is read, and each of its scopes' item arrays (spans, logRecords, metrics) goes to
 * items(). count() says how many records the signal holds so far, so that res[] (NULL when
 * counting) gets each resource's first record and their number. *n_res counts the resources.
 */
struct json_levels {
    const char *not_object; /* a resource entry that is not an object */
    const char *scope_key;  /* "scopeSpans" */
    const char *not_array;  /* the scopes are not an array */
    const char *malformed;  /* a scope that is not an object, or whose items are not an array */
    const char *item_key;   /* "spans" */
    int (*items)(void *ctx, json_t *items, const char **why);
    uint32_t (*count)(const void *ctx);
};

static int json_levels_walk(json_t *arr, const struct json_levels *lv, void *ctx,
                            struct otlp_resource *res, uint32_t *n_res, const char **why)
{
    size_t i, j;
    json_t *r, *sc;
    *n_res = 0;
    json_array_foreach(arr, i, r)
    {
        if (!json_is_object(r)) {
            *why = lv->not_object;
            return -1;
        }
        if (*n_res == OTLP_RESOURCES_MAX) {
            *why = "more than 1024 resources in the request";
            return -1;
        }
        tt__bstr service = {NULL, 0};
        json_t *jres = json_object_get(r, "resource");
        if (jres && (!json_is_object(jres) ||
                     json_attrs(json_object_get(jres, "attributes"), NULL, &service, why) != 0)) {
            *why = *why ? *why : "a resource that is not an object";
            return -1;
        }
        if (service.n > OTLP_STR_MAX) {
            *why = "a service.name longer than 4096 bytes";
            return -1;
        }
        uint32_t first = lv->count(ctx);
        json_t *sc_arr = json_object_get(r, lv->scope_key);
        if (sc_arr && !json_is_array(sc_arr)) {
            *why = lv->not_array;
            return -1;
        }
        json_array_foreach(sc_arr, j, sc)
        {
            json_t *items = json_object_get(sc, lv->item_key);
            if (!json_is_object(sc) || (items && !json_is_array(items))) {
                *why = lv->malformed;
                return -1;
            }
            if (lv->items(ctx, items, why) != 0) {
                return -1;
            }
        }
        if (res) {
            res[*n_res].service_name = service;
            res[*n_res].first = first;
            res[*n_res].n = lv->count(ctx) - first;
        }
        (*n_res)++;
    }
    return 0;
}

/* The spans walk's state: spans NULL while counting. */
struct sp_walk {
    struct otlp_span *spans;
    uint32_t n;
};

static int json_spans_items(void *ctx, json_t *arr, const char **why)
{
    struct sp_walk *w = ctx;
    size_t k;
    json_t *sp;
    if (json_array_size(arr) > OTLP_SPANS_MAX - w->n) {
        *why = "more than 65536 spans in the request";
        return -1;
    }
    json_array_foreach(arr, k, sp)
    {
        if (w->spans && json_span(sp, &w->spans[w->n], why) != 0) {
            return -1;
        }
        w->n++;
    }
    return 0;
}

static uint32_t json_spans_count(const void *ctx)
{
    return ((const struct sp_walk *)ctx)->n;
}

static const struct json_levels spans_levels = {"a resourceSpans entry that is not an object",
                                                "scopeSpans",
                                                "scopeSpans that are not an array",
                                                "a malformed scopeSpans entry",
                                                "spans",
                                                json_spans_items,
                                                json_spans_count};

/* Count (spans NULL) or fill the spans of the request. */
static int json_walk(json_t *rs_arr, struct otlp_request *req, uint32_t *n_res, uint32_t *n_spans,
                     const char **why)
{
    struct sp_walk w = {req->spans, 0};
    int rc = json_levels_walk(rs_arr, &spans_levels, &w, req->res, n_res, why);
    *n_spans = w.n;
    return rc;
}

int otlp_traces_decode_json(struct otlp_request *req, const uint8_t *body, size_t n,
                            const char **why)
{
    memset(req, 0, sizeof *req);
    *why = NULL;
    if (n > OTLP_BODY_MAX) {
        *why = "a body above 4 MiB";
        return -1;
    }
    int over;
    json_t *root = json_load_capped(body, n, &over, why);
    if (!root) {
        return over ? -2 : -1;
    }
    req->json = root;
    json_t *rs_arr = json_object_get(root, "resourceSpans");
    if (rs_arr && !json_is_array(rs_arr)) {
        *why = "resourceSpans that is not an array";
        otlp_request_free(req);
        return -1;
    }
    uint32_t n_res, n_spans;
    if (json_walk(rs_arr, req, &n_res, &n_spans, why) != 0) {
        otlp_request_free(req);
        return -1;
    }
    req->res = calloc(n_res ? n_res : 1, sizeof *req->res);
    req->spans = calloc(n_spans ? n_spans : 1, sizeof *req->spans);
    if (!req->res || !req->spans) {
        otlp_request_free(req);
        *why = "out of memory";
        return -1;
    }
    if (json_walk(rs_arr, req, &req->n_res, &req->n_spans, why) != 0) {
        otlp_request_free(req);
        return -1;
    }
    return 0;
}

void otlp_request_free(struct otlp_request *req)
{
    free(req->res);
    free(req->spans);
    json_decref(req->json);
    memset(req, 0, sizeof *req);
}

/* --- the mapping ---------------------------------------------------------------------------- */

uint32_t otlp_step_kind(const struct otlp_span *s, int *is_llm)
{
    *is_llm = 0;
    if (bstr_is(s->operation, "execute_tool")) {
        return TT_STEP_TOOL;
    }
    if (bstr_is(s->operation, "chat") || bstr_is(s->operation, "text_completion") ||
        bstr_is(s->operation, "generate_content") || bstr_is(s->operation, "embeddings")) {
        *is_llm = 1;
        return TT_STEP_LLM;
    }
    if (bstr_is(s->operation, "invoke_agent") || bstr_is(s->operation, "create_agent")) {
        return TT_STEP_AGENT;
    }
    return TT_STEP_OTHER;
}

/* FNV-1a over bytes, continued from h. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static const char hexd[] = "0123456789abcdef";

static uint8_t *put_str(uint8_t *q, uint32_t field, tt__bstr s)
{
    return tt__pb_put_bytes(q, field, s.p, s.n);
}

/* Attr { key = 1, s = 2 | i = 3 } as field 3 of a message. */
static uint8_t *put_attr_s(uint8_t *q, uint32_t field, const char *key, tt__bstr v)
{
    size_t kn = strlen(key);
    size_t inner = tt__pb_len_field_size(kn) + 1 + tt__pb_varint_size(v.n) + v.n;
    q = tt__pb_put_tag(q, field, TT_PB_LEN);
    q = tt__pb_put_varint(q, inner);
    q = tt__pb_put_bytes(q, 1, key, kn);
    return tt__pb_put_bytes(q, 2, v.p, v.n);
}

static uint8_t *put_attr_i(uint8_t *q, uint32_t field, const char *key, int64_t v)
{
    size_t kn = strlen(key);
    size_t inner = tt__pb_len_field_size(kn) + 1 + tt__pb_varint_size(tt__pb_zigzag(v));
    q = tt__pb_put_tag(q, field, TT_PB_LEN);
    q = tt__pb_put_varint(q, inner);
    q = tt__pb_put_bytes(q, 1, key, kn);
    return tt__pb_put_sint(q, 3, v);
}

/* Event { time_delta_ns = 1, session = 2, <kind> = body } from a body encoded in tmp. */
static uint8_t *put_event(uint8_t *q, int64_t delta, tt__bstr session, uint32_t kind,
                          const uint8_t *body, size_t body_len)
{
    size_t inner = 1 + tt__pb_varint_size(tt__pb_zigzag(delta)) +
                   (session.n ? tt__pb_len_field_size(session.n) : 0) +
                   tt__pb_len_field_size(body_len);
    q = tt__pb_put_tag(q, 4, TT_PB_LEN);
    q = tt__pb_put_varint(q, inner);
    q = tt__pb_put_sint(q, 1, delta);
    if (session.n) {
        q = put_str(q, 2, session);
    }
    return tt__pb_put_bytes(q, kind, body, body_len);
}

/* Bytes one span needs at most in a Batch: its strings plus a fixed allowance per event. */
static size_t span_cost(const struct otlp_span *s)
{
    size_t sess = s->conversation.n ? s->conversation.n : 32;
    return 4 * (64 + sess) + 2 * s->name.n + 2 * s->tool_name.n + s->model.n + s->provider.n +
           s->status_message.n + s->error_type.n + 512 + 2 * 36 /* trace context, twice */;
}

int otlp_batch_encode(const struct otlp_request *req, uint32_t first, uint32_t n, const char *agent,
                      struct otlp_batch *out)
{
    memset(out, 0, sizeof *out);
    const struct otlp_span *sp = &req->spans[first];
    uint64_t base = UINT64_MAX, h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
    size_t cap = 128, tmp_cap = 0;
    h1 = fnv(h1, agent, strlen(agent) + 1);
    h2 = fnv(h2, agent, strlen(agent) + 1);
    uint32_t n_spans = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (sp[i].refused) {
            continue;
        }
        n_spans++;
        base = sp[i].start_ns < base ? sp[i].start_ns : base;
        size_t c = span_cost(&sp[i]);
        cap += c;
        tmp_cap = c > tmp_cap ? c : tmp_cap;
        uint8_t ids[24];
        memcpy(ids, sp[i].trace_id, 16);
        for (int b = 0; b < 8; b++) {
            ids[16 + b] = (uint8_t)(sp[i].span_id >> (56 - 8 * b));
        }
        h1 = fnv(h1, ids, sizeof ids);
        h2 = fnv(h2, ids, sizeof ids);
    }
    if (n_spans == 0) {
        return 0;
    }
    h1 = mix(h1);
    h2 = mix(h2 ^ h1);
    for (int b = 0; b < 8; b++) {
        out->instance[b] = (uint8_t)(h1 >> (8 * b));
        out->instance[8 + b] = (uint8_t)(h2 >> (8 * b));
    }
    uint8_t *raw = malloc(cap), *tmp = malloc(tmp_cap);
    if (!raw || !tmp) {
        free(raw);
        free(tmp);
        return -1;
    }
    uint8_t *q = raw;
    q = tt__pb_put_bytes(q, 1, out->instance, 16);
    q = tt__pb_put_uint(q, 2, 1);
    q = tt__pb_put_fixed64(q, 3, base);
    uint32_t n_events = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct otlp_span *s = &sp[i];
        if (s->refused) {
            continue;
        }
        int llm;
        uint32_t kind = otlp_step_kind(s, &llm);
        char trace_hex[32];
        for (int b = 0; b < 16; b++) {
            trace_hex[2 * b] = hexd[s->trace_id[b] >> 4];
            trace_hex[2 * b + 1] = hexd[s->trace_id[b] & 15];
        }
        tt__bstr trace = {(const uint8_t *)trace_hex, 32};
        tt__bstr session = s->conversation.n ? s->conversation : trace;
        tt__bstr name = kind == TT_STEP_TOOL && s->tool_name.n ? s->tool_name : s->name;
        int64_t d0 = (int64_t)(s->start_ns - base), d1 = (int64_t)(s->end_ns - base);
        /* StepBegin { step_id 1, parent_id 2, kind 3, name 4, trace_id 6, span_id 7,
         * parent_span_id 8 }: the span's own W3C ids (the step id is the span id) */
        uint8_t *t = tmp;
        t = tt__pb_put_fixed64(t, 1, s->span_id);
        t = tt__pb_put_fixed64(t, 2, s->parent_id);
        t = tt__pb_put_uint(t, 3, kind);
        t = put_str(t, 4, name);
        t = tt__pb_put_bytes(t, 6, s->trace_id, 16);
        t = tt__pb_put_fixed64(t, 7, s->span_id);
        if (s->parent_id) {
            t = tt__pb_put_fixed64(t, 8, s->parent_id);
        }
        q = put_event(q, d0, session, TT_EV_STEP_BEGIN, tmp, (size_t)(t - tmp));
        n_events++;
        if (llm) {
            /* ResponseBegin { response_id 1, model 2, params 3, step_id 4 } */
            t = tmp;
            t = tt__pb_put_fixed64(t, 1, s->span_id);
            t = put_str(t, 2, s->model);
            t = put_attr_s(t, 3, "gen_ai.operation.name", s->operation);
            if (s->provider.n) {
                t = put_attr_s(t, 3, "gen_ai.provider.name", s->provider);
            }
            if (s->input_tokens >= 0) {
                t = put_attr_i(t, 3, "gen_ai.usage.input_tokens", s->input_tokens);
            }
            if (s->output_tokens >= 0) {
                t = put_attr_i(t, 3, "gen_ai.usage.output_tokens", s->output_tokens);
            }
            t = put_attr_s(t, 3, "trace_id", trace);
            t = tt__pb_put_fixed64(t, 4, s->span_id);
            /* trace_id 5, span_id 6, parent_span_id 7: the response is the model call's span */
            t = tt__pb_put_bytes(t, 5, s->trace_id, 16);
            t = tt__pb_put_fixed64(t, 6, s->span_id);
            if (s->parent_id) {
                t = tt__pb_put_fixed64(t, 7, s->parent_id);
            }
            q = put_event(q, d0, session, TT_EV_RESPONSE_BEGIN, tmp, (size_t)(t - tmp));
            /* ResponseEnd { response_id 1, tokens 2, mean_logprob 3 .. min_window_confidence
             * 8, duration_ns 11 }: a span has no per-token statistics, so 3 .. 8 are NaN, "no
             * confidence known" (stored NULL, left out by the detectors, the rollups and the
             * retention's low-confidence class), never a made-up 0 (or exp(0) = 1). */
            t = tmp;
            t = tt__pb_put_fixed64(t, 1, s->span_id);
            uint64_t toks = s->output_tokens >= 0 ? (uint64_t)s->output_tokens : 0;
            t = tt__pb_put_uint(t, 2, toks > UINT32_MAX ? UINT32_MAX : toks);
            for (uint32_t f = 3; f <= 8; f++) {
                t = tt__pb_put_float(t, f, NAN);
            }
            t = tt__pb_put_uint(t, 11, s->end_ns - s->start_ns);
            q = put_event(q, d1, session, TT_EV_RESPONSE_END, tmp, (size_t)(t - tmp));
            n_events += 2;
        }
        /* StepEnd { step_id 1, status 2, duration_ns 3, result_bytes 4, error 5, name 6,
         * kind 7 } */
        t = tmp;
        t = tt__pb_put_fixed64(t, 1, s->span_id);
        t = tt__pb_put_uint(t, 2, s->status_code == 2 ? TT_STATUS_ERROR : TT_STATUS_OK);
        t = tt__pb_put_uint(t, 3, s->end_ns - s->start_ns);
        t = tt__pb_put_sint(t, 4, -1);
        if (s->status_code == 2) {
            t = put_str(t, 5, s->status_message.n ? s->status_message : s->error_type);
        }
        t = put_str(t, 6, name);
        t = tt__pb_put_uint(t, 7, kind);
        q = put_event(q, d1, session, TT_EV_STEP_END, tmp, (size_t)(t - tmp));
        n_events++;
    }
    free(tmp);
    out->raw = raw;
    out->raw_len = (size_t)(q - raw);
    out->n_events = n_events;
    out->n_spans = n_spans;
    return 0;
}

/* --- logs ----------------------------------------------------------------------------------- */

/* Field numbers: ExportLogsServiceRequest.resource_logs 1; ResourceLogs.resource 1,
 * .scope_logs 2; ScopeLogs.log_records 2; LogRecord.time_unix_nano 1 (fixed64),
 * .severity_number 2, .body 5 (AnyValue), .attributes 6, .trace_id 9,
 * .observed_time_unix_nano 11 (fixed64). */

struct lg_ctx {
    struct otlp_logs *req;
    int fill;
    uint32_t n_res, n_logs, n_kvs;
    const char *why;
};

/* Keep one attribute of a record (fill pass: into kvs). */
static void log_attr(struct lg_ctx *c, struct otlp_log *l, tt__bstr key, const struct any *v)
{
    if (bstr_is(key, "gen_ai.conversation.id") && v->type == AV_STR) {
        l->session = v->s;
    }
    if (v->type == AV_NONE) {
        return; /* arrays, maps and bytes are not kept */
    }
    if (key.n > OTLP_STR_MAX || (v->type == AV_STR && v->s.n > OTLP_STR_MAX)) {
        l->refused = "a log attribute longer than 4096 bytes";
        return;
    }
    if (l->n_kv == OTLP_ATTRS_MAX) {
        l->refused = "more than 256 attributes on a log record";
        return;
    }
    if (c->n_kvs == OTLP_KVS_MAX) {
        c->why = "more than 65536 log attributes in the request";
        return;
    }
    if (c->fill) {
        struct otlp_kv *kv = &c->req->kvs[c->n_kvs];
        kv->key = key;
        kv->type = v->type == AV_STR    ? TT_ATTR_STR
                   : v->type == AV_INT  ? TT_ATTR_INT
                   : v->type == AV_BOOL ? TT_ATTR_BOOL
                                        : TT_ATTR_DOUBLE;
        kv->s = v->s;
        kv->i = v->i;
        kv->d = v->d;
        kv->b = v->b;
    }
    c->n_kvs++;
    l->n_kv++;
}

static void log_check(struct otlp_log *l)
{
    if (l->refused) {
        return;
    }
    if (l->time_ns == 0 || l->time_ns > INT64_MAX) {
        l->refused = "a log record without a time";
    } else if (l->severity > 24) {
        l->refused = "a severity number above 24";
    } else if (l->body.n > OTLP_LOG_BODY_MAX) {
        l->refused = "a log body longer than 65536 bytes";
    } else if (l->session.n > OTLP_STR_MAX) {
        l->refused = "a gen_ai.conversation.id longer than 4096 bytes";
    }
    if (l->severity == 0) {
        l->severity = 9;
    }
}

static struct otlp_log *log_next(struct lg_ctx *c, struct otlp_log *tmp)
{
    if (c->n_logs == OTLP_SPANS_MAX) {
        c->why = "more than 65536 log records in the request";
        return NULL;
    }
    struct otlp_log *l = c->fill ? &c->req->logs[c->n_logs] : tmp;
    c->n_logs++;
    memset(l, 0, sizeof *l);
    l->first_kv = c->n_kvs;
    return l;
}

static int pb_log(struct lg_ctx *c, tt__bstr b)
{
    struct otlp_log tmp, *l = log_next(c, &tmp);
    if (!l) {
        return -1;
    }
    uint64_t observed = 0;
    tt__pb_reader r;
    uint32_t f, wt;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if ((f == 1 || f == 11) && wt == TT_PB_I64) {
            *(f == 1 ? &l->time_ns : &observed) = tt__pb_fixed64(&r);
        } else if (f == 2 && wt == TT_PB_VARINT) {
            uint64_t sev = tt__pb_varint(&r);
            l->severity = sev > 255 ? 255 : (uint32_t)sev;
        } else if ((f == 5 || f == 6 || f == 9) && wt == TT_PB_LEN) {
            tt__bstr v;
            v.p = tt__pb_bytes(&r, &v.n);
            if (r.err) {
                break;
            }
            struct any av;
            tt__bstr key;
            if (f == 5) {
                if (pb_any(v, &av) != 0) {
                    c->why = "a malformed log body";
                    return -1;
                }
                if (av.type == AV_STR) {
                    l->body = av.s;
                }
            } else if (f == 6) {
                if (pb_kv(v, &key, &av) != 0) {
                    c->why = "a malformed log attribute";
                    return -1;
                }
                log_attr(c, l, key, &av);
                if (c->why) {
                    return -1;
                }
            } else if (pb_id(v, l->trace_id, 16, &c->why) != 0) {
                return -1;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (rc < 0 || r.err) {
        c->why = "a malformed log record";
        return -1;
    }
    l->time_ns = l->time_ns ? l->time_ns : observed;
    log_check(l);
    return 0;
}

static int log_item(void *c, tt__bstr b)
{
    return pb_log(c, b);
}

static int resource_logs_item(void *c, tt__bstr b);

static int pb_scope_logs(struct lg_ctx *c, tt__bstr b)
{
    return pb_repeated(b, 2, log_item, c, &c->why, "malformed scope logs");
}

static int scope_logs_item(void *c, tt__bstr b)
{
    return pb_scope_logs(c, b);
}

static int pb_resource_logs(struct lg_ctx *c, tt__bstr b)
{
    if (c->n_res == OTLP_RESOURCES_MAX) {
        c->why = "more than 1024 resources in the request";
        return -1;
    }
    uint32_t ri = c->n_res++, first = c->n_logs;
    tt__bstr service = {NULL, 0};
    if (pb_resource_level(b, scope_logs_item, c, &c->why, &service, "malformed resource logs") !=
        0) {
        return -1;
    }
    if (c->fill) {
        c->req->res[ri].service_name = service;
        c->req->res[ri].first = first;
        c->req->res[ri].n = c->n_logs - first;
    }
    return 0;
}

static int resource_logs_item(void *c, tt__bstr b)
{
    return pb_resource_logs(c, b);
}

static int logs_alloc(struct otlp_logs *req, uint32_t n_res, uint32_t n_logs, uint32_t n_kvs)
{
    req->res = calloc(n_res ? n_res : 1, sizeof *req->res);
    req->logs = calloc(n_logs ? n_logs : 1, sizeof *req->logs);
    req->kvs = calloc(n_kvs ? n_kvs : 1, sizeof *req->kvs);
    return req->res && req->logs && req->kvs ? 0 : -1;
}

int otlp_logs_decode_pb(struct otlp_logs *req, const uint8_t *body, size_t n, const char **why)
{
    memset(req, 0, sizeof *req);
    tt__bstr all = {body, n};
    struct lg_ctx c = {req, 0, 0, 0, 0, NULL};
    if (n > OTLP_BODY_MAX) {
        *why = "a body above 4 MiB";
        return -1;
    }
    if (pb_repeated(all, 1, resource_logs_item, &c, &c.why,
                    "a malformed ExportLogsServiceRequest") != 0) {
        *why = c.why;
        return -1;
    }
    if (logs_alloc(req, c.n_res, c.n_logs, c.n_kvs) != 0) {
        otlp_logs_free(req);
        *why = "out of memory";
        return -1;
    }
    struct lg_ctx f = {req, 1, 0, 0, 0, NULL};
    if (pb_repeated(all, 1, resource_logs_item, &f, &f.why,
                    "a malformed ExportLogsServiceRequest") != 0) {
        otlp_logs_free(req);
        *why = f.why;
        return -1;
    }
    req->n_res = f.n_res;
    req->n_logs = f.n_logs;
    req->n_kvs = f.n_kvs;
    return 0;
}

static int json_log(struct lg_ctx *c, json_t *jl)
{
    struct otlp_log tmp, *l = log_next(c, &tmp);
    uint64_t observed = 0, sev = 0;
    if (!l) {
        return -1;
    }
    if (!json_is_object(jl)) {
        c->why = "a log record that is not an object";
        return -1;
    }
    if (json_u64(json_object_get(jl, "timeUnixNano"), &l->time_ns) != 0 ||
        json_u64(json_object_get(jl, "observedTimeUnixNano"), &observed) != 0 ||
        json_u64(json_object_get(jl, "severityNumber"), &sev) != 0) {
        c->why = "a log time or severity that is not an integer";
        return -1;
    }
    l->severity = sev > 255 ? 255 : (uint32_t)sev;
    if (json_id(json_object_get(jl, "traceId"), l->trace_id, 16, &c->why) != 0) {
        return -1;
    }
    struct any av;
    if (json_any(json_object_get(jl, "body"), &av) != 0) {
        c->why = "a malformed log body";
        return -1;
    }
    if (av.type == AV_STR) {
        l->body = av.s;
    }
    json_t *attrs = json_object_get(jl, "attributes");
    if (attrs && !json_is_array(attrs)) {
        c->why = "attributes that are not an array";
        return -1;
    }
    size_t i;
    json_t *kv;
    json_array_foreach(attrs, i, kv)
    {
        tt__bstr key = jstr(json_object_get(kv, "key"));
        if (!json_is_object(kv) || !key.p || json_any(json_object_get(kv, "value"), &av) != 0) {
            c->why = "a malformed attribute";
            return -1;
        }
        log_attr(c, l, key, &av);
        if (c->why) {
            return -1;
        }
    }
    l->time_ns = l->time_ns ? l->time_ns : observed;
    log_check(l);
    return 0;
}

static int json_logs_items(void *ctx, json_t *arr, const char **why)
{
    struct lg_ctx *c = ctx;
    size_t k;
    json_t *lr;
    json_array_foreach(arr, k, lr)
    {
        if (json_log(c, lr) != 0) {
            *why = c->why;
            return -1;
        }
    }
    return 0;
}

static uint32_t json_logs_count(const void *ctx)
{
    return ((const struct lg_ctx *)ctx)->n_logs;
}

static const struct json_levels logs_levels = {"a resourceLogs entry that is not an object",
                                               "scopeLogs",
                                               "scopeLogs that are not an array",
                                               "a malformed scopeLogs entry",
                                               "logRecords",
                                               json_logs_items,
                                               json_logs_count};

static int json_logs_walk(struct lg_ctx *c, json_t *rl_arr)
{
    return json_levels_walk(rl_arr, &logs_levels, c, c->fill ? c->req->res : NULL, &c->n_res,
                            &c->why);
}

int otlp_logs_decode_json(struct otlp_logs *req, const uint8_t *body, size_t n, const char **why)
{
    memset(req, 0, sizeof *req);
    *why = NULL;
    if (n > OTLP_BODY_MAX) {
        *why = "a body above 4 MiB";
        return -1;
    }
    int over;
    json_t *root = json_load_capped(body, n, &over, why);
    if (!root) {
        return over ? -2 : -1;
    }
    req->json = root;
    json_t *arr = json_object_get(root, "resourceLogs");
    struct lg_ctx c = {req, 0, 0, 0, 0, NULL};
    if ((arr && !json_is_array(arr)) || json_logs_walk(&c, arr) != 0) {
        *why = c.why ? c.why : "resourceLogs that is not an array";
        otlp_logs_free(req);
        return -1;
    }
    if (logs_alloc(req, c.n_res, c.n_logs, c.n_kvs) != 0) {
        otlp_logs_free(req);
        *why = "out of memory";
        return -1;
    }
    struct lg_ctx f = {req, 1, 0, 0, 0, NULL};
    if (json_logs_walk(&f, arr) != 0) {
        *why = f.why;
        otlp_logs_free(req);
        return -1;
    }
    req->n_res = f.n_res;
    req->n_logs = f.n_logs;
    req->n_kvs = f.n_kvs;
    return 0;
}

void otlp_logs_free(struct otlp_logs *req)
{
    free(req->res);
    free(req->logs);
    free(req->kvs);
    json_decref(req->json);
    memset(req, 0, sizeof *req);
}

/* Attr { key = 1, s = 2 | i = 3 | d = 4 | b = 5 } as field `field` (3 of a Log, 5 of a
 * Metric). */
static uint8_t *put_kv(uint8_t *q, uint32_t field, const struct otlp_kv *kv)
{
    size_t val = kv->type == TT_ATTR_STR      ? tt__pb_len_field_size(kv->s.n)
                 : kv->type == TT_ATTR_INT    ? 1 + tt__pb_varint_size(tt__pb_zigzag(kv->i))
                 : kv->type == TT_ATTR_DOUBLE ? 9
                                              : 2;
    q = tt__pb_put_tag(q, field, TT_PB_LEN);
    q = tt__pb_put_varint(q, 1 + tt__pb_varint_size(kv->key.n) + kv->key.n + val);
    q = put_str(q, 1, kv->key);
    switch (kv->type) {
    case TT_ATTR_STR:
        return put_str(q, 2, kv->s);
    case TT_ATTR_INT:
        return tt__pb_put_sint(q, 3, kv->i);
    case TT_ATTR_DOUBLE:
        return tt__pb_put_double(q, 4, kv->d);
    default:
        return tt__pb_put_uint(q, 5, kv->b ? 1 : 0);
    }
}

int otlp_logs_encode(const struct otlp_logs *req, uint32_t first, uint32_t n, const char *agent,
                     struct otlp_batch *out)
{
    memset(out, 0, sizeof *out);
    const struct otlp_log *lg = &req->logs[first];
    uint64_t base = UINT64_MAX;
    size_t cap = 128, tmp_cap = 0;
    uint32_t n_logs = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (lg[i].refused) {
            continue;
        }
        n_logs++;
        base = lg[i].time_ns < base ? lg[i].time_ns : base;
        size_t c =
            64 + 2 * TT_PB_VARINT_MAX + lg[i].body.n + (lg[i].session.n ? lg[i].session.n : 32);
        for (uint32_t k = 0; k < lg[i].n_kv; k++) {
            const struct otlp_kv *kv = &req->kvs[lg[i].first_kv + k];
            c += 2 * TT_PB_VARINT_MAX + 16 + kv->key.n + (kv->type == TT_ATTR_STR ? kv->s.n : 0);
        }
        cap += c + 2 * TT_PB_VARINT_MAX + 16;
        tmp_cap = c > tmp_cap ? c : tmp_cap;
    }
    if (n_logs == 0) {
        return 0;
    }
    uint8_t *raw = malloc(cap), *tmp = malloc(tmp_cap);
    if (!raw || !tmp) {
        free(raw);
        free(tmp);
        return -1;
    }
    uint8_t *q = raw;
    q = tt__pb_put_bytes(q, 1, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16); /* set below */
    uint8_t *inst = q - 16;
    q = tt__pb_put_uint(q, 2, 1);
    q = tt__pb_put_fixed64(q, 3, base);
    uint8_t *events = q;
    for (uint32_t i = 0; i < n; i++) {
        const struct otlp_log *l = &lg[i];
        if (l->refused) {
            continue;
        }
        char trace_hex[32];
        int has_trace = 0;
        for (int b = 0; b < 16; b++) {
            has_trace |= l->trace_id[b];
            trace_hex[2 * b] = hexd[l->trace_id[b] >> 4];
            trace_hex[2 * b + 1] = hexd[l->trace_id[b] & 15];
        }
        tt__bstr trace = {(const uint8_t *)trace_hex, has_trace ? 32 : 0};
        /* Log { severity 1, message 2, attrs 3 } */
        uint8_t *t = tmp;
        t = tt__pb_put_uint(t, 1, l->severity);
        t = put_str(t, 2, l->body);
        for (uint32_t k = 0; k < l->n_kv; k++) {
            t = put_kv(t, 3, &req->kvs[l->first_kv + k]);
        }
        q = put_event(q, (int64_t)(l->time_ns - base), l->session.n ? l->session : trace, TT_EV_LOG,
                      tmp, (size_t)(t - tmp));
    }
    free(tmp);
    /* The instance: a hash of the agent and of the events (a resend encodes the same). */
    uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
    h1 = fnv(h1, agent, strlen(agent) + 1);
    h2 = fnv(h2, agent, strlen(agent) + 1);
    h1 = fnv(h1, events, (size_t)(q - events));
    h2 = fnv(h2 ^ 0x5bd1e995u, events, (size_t)(q - events));
    h1 = mix(h1 ^ base);
    h2 = mix(h2 ^ h1);
    for (int b = 0; b < 8; b++) {
        out->instance[b] = (uint8_t)(h1 >> (8 * b));
        out->instance[8 + b] = (uint8_t)(h2 >> (8 * b));
    }
    memcpy(inst, out->instance, 16);
    out->raw = raw;
    out->raw_len = (size_t)(q - raw);
    out->n_events = n_logs;
    out->n_spans = n_logs;
    return 0;
}

/* --- metrics -------------------------------------------------------------------------------- */

/*
 * ExportMetricsServiceRequest.resource_metrics 1; ResourceMetrics.resource 1, .scope_metrics 2;
 * ScopeMetrics.metrics 2; Metric.name 1, .unit 3, .gauge 5, .sum 7, .histogram 9,
 * .exponential_histogram 10, .summary 11; their .data_points 1; Sum, Histogram and
 * ExponentialHistogram .aggregation_temporality 2 (1 delta, 2 cumulative); Sum.is_monotonic 3.
 * NumberDataPoint: time_unix_nano 3, as_double 4, as_int 6 (sfixed64), attributes 7, flags 8.
 * HistogramDataPoint: time 3, count 4, sum 5, attributes 9, flags 10, min 11, max 12.
 * ExponentialHistogramDataPoint: attributes 1, time 3, count 4, sum 5, flags 10, min 12, max 13.
 * SummaryDataPoint: time 3, count 4, sum 5, attributes 7, flags 8.
 * Flag 1 (no recorded value): the point is skipped.
 */

enum { MT_GAUGE = 5, MT_SUM = 7, MT_HIST = 9, MT_EXP = 10, MT_SUMMARY = 11 };

struct mt_ctx {
    struct otlp_metrics *req;
    int fill;
    uint32_t n_res, n_points, n_kvs;
    const char *why;
    /* the metric being read */
    tt__bstr name, unit;
    int type; /* MT_* */
    uint8_t kind_number, kind_hist;
};

/* Keep one attribute of a data point (fill pass: into kvs). */
static void mt_attr(struct mt_ctx *c, struct otlp_point *p, tt__bstr key, const struct any *v)
{
    if (bstr_is(key, "gen_ai.conversation.id") && v->type == AV_STR) {
        p->session = v->s;
    }
    if (v->type == AV_NONE) {
        return; /* arrays, maps and bytes are not kept */
    }
    if (key.n > OTLP_STR_MAX || (v->type == AV_STR && v->s.n > OTLP_STR_MAX)) {
        p->refused = "a data point attribute longer than 4096 bytes";
        return;
    }
    if (p->n_kv == OTLP_ATTRS_MAX) {
        p->refused = "more than 256 attributes on a data point";
        return;
    }
    if (c->n_kvs == OTLP_KVS_MAX) {
        c->why = "more than 65536 data point attributes in the request";
        return;
    }
    if (c->fill) {
        struct otlp_kv *kv = &c->req->kvs[c->n_kvs];
        kv->key = key;
        kv->type = v->type == AV_STR    ? TT_ATTR_STR
                   : v->type == AV_INT  ? TT_ATTR_INT
                   : v->type == AV_BOOL ? TT_ATTR_BOOL
                                        : TT_ATTR_DOUBLE;
        kv->s = v->s;
        kv->i = v->i;
        kv->d = v->d;
        kv->b = v->b;
    }
    c->n_kvs++;
    p->n_kv++;
}

static struct otlp_point *mt_next(struct mt_ctx *c, struct otlp_point *tmp)
{
    if (c->n_points == OTLP_SPANS_MAX) {
        c->why = "more than 65536 data points in the request";
        return NULL;
    }
    struct otlp_point *p = c->fill ? &c->req->points[c->n_points] : tmp;
    c->n_points++;
    memset(p, 0, sizeof *p);
    p->name = c->name;
    p->unit = c->unit;
    p->shape = c->type == MT_GAUGE || c->type == MT_SUM ? OTLP_PT_NUMBER : OTLP_PT_HIST;
    p->kind = p->shape == OTLP_PT_NUMBER ? c->kind_number : c->kind_hist;
    p->first_kv = c->n_kvs;
    return p;
}

static void mt_check(struct otlp_point *p, int has_value)
{
    if (p->refused || p->skip) {
        return;
    }
    if (p->name.n == 0 || p->name.n > OTLP_METRIC_NAME_MAX) {
        p->refused = "a metric name empty or longer than 255 bytes";
    } else if (p->unit.n > OTLP_METRIC_UNIT_MAX) {
        p->refused = "a metric unit longer than 63 bytes";
    } else if (p->time_ns == 0 || p->time_ns > INT64_MAX) {
        p->refused = "a data point without a time";
    } else if (p->session.n > OTLP_STR_MAX) {
        p->refused = "a gen_ai.conversation.id longer than 4096 bytes";
    } else if (p->shape == OTLP_PT_NUMBER && (!has_value || !isfinite(p->value))) {
        p->refused = "a number data point without a finite value";
    } else if (p->shape == OTLP_PT_HIST &&
               ((p->has_sum && !isfinite(p->sum)) || (p->has_min && !isfinite(p->min)) ||
                (p->has_max && !isfinite(p->max)))) {
        p->refused = "a histogram sum, min or max that is not finite";
    }
}

static int pb_point(struct mt_ctx *c, tt__bstr b)
{
    struct otlp_point tmp, *p = mt_next(c, &tmp);
    if (!p) {
        return -1;
    }
    int number = p->shape == OTLP_PT_NUMBER, has_value = 0;
    uint32_t f_attr = c->type == MT_HIST ? 9 : c->type == MT_EXP ? 1 : 7;
    uint32_t f_flags = c->type == MT_HIST || c->type == MT_EXP ? 10 : 8;
    uint32_t f_min = c->type == MT_HIST ? 11 : c->type == MT_EXP ? 12 : 0;
    tt__pb_reader r;
    uint32_t f, wt;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (f == f_attr && wt == TT_PB_LEN) {
            tt__bstr v, key;
            struct any av;
            v.p = tt__pb_bytes(&r, &v.n);
            if (r.err) {
                break;
            }
            if (pb_kv(v, &key, &av) != 0) {
                c->why = "a malformed data point attribute";
                return -1;
            }
            mt_attr(c, p, key, &av);
            if (c->why) {
                return -1;
            }
        } else if (f == f_flags && wt == TT_PB_VARINT) {
            p->skip = (tt__pb_varint(&r) & 1) != 0;
        } else if (wt != TT_PB_I64) {
            tt__pb_skip(&r, wt);
        } else if (f == 3) {
            p->time_ns = tt__pb_fixed64(&r);
        } else if (number && f == 4) {
            p->value = tt__pb_double(&r);
            has_value = 1;
        } else if (number && f == 6) {
            p->value = (double)(int64_t)tt__pb_fixed64(&r);
            has_value = 1;
        } else if (!number && f == 4) {
            p->count = tt__pb_fixed64(&r);
        } else if (!number && f == 5) {
            p->sum = tt__pb_double(&r);
            p->has_sum = 1;
        } else if (f_min && (f == f_min || f == f_min + 1)) {
            double v = tt__pb_double(&r);
            *(f == f_min ? &p->min : &p->max) = v;
            *(f == f_min ? &p->has_min : &p->has_max) = 1;
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (rc < 0 || r.err) {
        c->why = "a malformed data point";
        return -1;
    }
    mt_check(p, has_value);
    return 0;
}

static int point_item(void *c, tt__bstr b)
{
    return pb_point(c, b);
}

/* The kinds of a metric's points from its temporality (1 delta) and monotonicity. */
static void mt_kinds(struct mt_ctx *c, uint64_t temporality, int monotonic)
{
    c->kind_number = c->type == MT_SUM && monotonic && temporality == 1 ? TT_COUNTER : TT_GAUGE;
    c->kind_hist = c->type != MT_SUMMARY && temporality == 1 ? TT_COUNTER : TT_GAUGE;
}

static int pb_metric(struct mt_ctx *c, tt__bstr b)
{
    tt__pb_reader r;
    uint32_t f, wt;
    tt__bstr data = {NULL, 0};
    c->name = c->unit = data;
    c->type = 0;
    tt__pb_reader_init(&r, b.p, b.n);
    int rc;
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if (wt == TT_PB_LEN && (f == 1 || f == 3 || f == MT_GAUGE || f == MT_SUM || f == MT_HIST ||
                                f == MT_EXP || f == MT_SUMMARY)) {
            tt__bstr v;
            v.p = tt__pb_bytes(&r, &v.n);
            if (f == 1 || f == 3) {
                *(f == 1 ? &c->name : &c->unit) = v;
            } else {
                data = v;
                c->type = (int)f;
            }
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (rc < 0 || r.err) {
        c->why = "a malformed metric";
        return -1;
    }
    if (!c->type) {
        return 0; /* no data */
    }
    uint64_t temporality = 0, monotonic = 0;
    tt__pb_reader_init(&r, data.p, data.n);
    while ((rc = tt__pb_next(&r, &f, &wt)) == 1) {
        if ((f == 2 || f == 3) && wt == TT_PB_VARINT) {
            *(f == 2 ? &temporality : &monotonic) = tt__pb_varint(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (rc < 0 || r.err) {
        c->why = "a malformed metric";
        return -1;
    }
    mt_kinds(c, temporality, monotonic != 0);
    return pb_repeated(data, 1, point_item, c, &c->why, "a malformed metric");
}

static int metric_item(void *c, tt__bstr b)
{
    return pb_metric(c, b);
}

static int scope_metrics_item(void *c, tt__bstr b)
{
    return pb_repeated(b, 2, metric_item, c, &((struct mt_ctx *)c)->why, "malformed scope metrics");
}

static int resource_metrics_item(void *cv, tt__bstr b)
{
    struct mt_ctx *c = cv;
    if (c->n_res == OTLP_RESOURCES_MAX) {
        c->why = "more than 1024 resources in the request";
        return -1;
    }
    uint32_t ri = c->n_res++, first = c->n_points;
    tt__bstr service = {NULL, 0};
    if (pb_resource_level(b, scope_metrics_item, c, &c->why, &service,
                          "malformed resource metrics") != 0) {
        return -1;
    }
    if (c->fill) {
        c->req->res[ri].service_name = service;
        c->req->res[ri].first = first;
        c->req->res[ri].n = c->n_points - first;
    }
    return 0;
}

static int metrics_alloc(struct otlp_metrics *req, const struct mt_ctx *c)
{
    req->res = calloc(c->n_res ? c->n_res : 1, sizeof *req->res);
    req->points = calloc(c->n_points ? c->n_points : 1, sizeof *req->points);
    req->kvs = calloc(c->n_kvs ? c->n_kvs : 1, sizeof *req->kvs);
    return req->res && req->points && req->kvs ? 0 : -1;
}

int otlp_metrics_decode_pb(struct otlp_metrics *req, const uint8_t *body, size_t n,
                           const char **why)
{
    memset(req, 0, sizeof *req);
    tt__bstr all = {body, n};
    struct mt_ctx c;
    memset(&c, 0, sizeof c);
    c.req = req;
    if (n > OTLP_BODY_MAX) {
        *why = "a body above 4 MiB";
        return -1;
    }
    if (pb_repeated(all, 1, resource_metrics_item, &c, &c.why,
                    "a malformed ExportMetricsServiceRequest") != 0) {
        *why = c.why;
        return -1;
    }
    if (metrics_alloc(req, &c) != 0) {
        otlp_metrics_free(req);
        *why = "out of memory";
        return -1;
    }
    struct mt_ctx f;
    memset(&f, 0, sizeof f);
    f.req = req;
    f.fill = 1;
    if (pb_repeated(all, 1, resource_metrics_item, &f, &f.why,
                    "a malformed ExportMetricsServiceRequest") != 0) {
        otlp_metrics_free(req);
        *why = f.why;
        return -1;
    }
    req->n_res = f.n_res;
    req->n_points = f.n_points;
    req->n_kvs = f.n_kvs;
    return 0;
}

/* A double of OTLP/JSON: a number, or "NaN", "Infinity", "-Infinity". -1 otherwise; *has 0
 * when absent. */
static int json_f64(json_t *v, double *out, uint8_t *has)
{
    *has = 0;
    if (!v) {
        return 0;
    }
    if (json_is_number(v)) {
        *out = json_number_value(v);
    } else if (json_is_string(v) && strcmp(json_string_value(v), "NaN") == 0) {
        *out = NAN;
    } else if (json_is_string(v) && strcmp(json_string_value(v), "Infinity") == 0) {
        *out = INFINITY;
    } else if (json_is_string(v) && strcmp(json_string_value(v), "-Infinity") == 0) {
        *out = -INFINITY;
    } else {
        return -1;
    }
    *has = 1;
    return 0;
}

/* A signed 64-bit integer of OTLP/JSON (a number or a decimal string); -1 otherwise. */
static int json_i64(json_t *v, double *out, uint8_t *has)
{
    *has = 0;
    if (!v) {
        return 0;
    }
    if (json_is_integer(v)) {
        *out = (double)json_integer_value(v);
        *has = 1;
        return 0;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!s) {
        return -1;
    }
    int neg = s[0] == '-';
    uint64_t u = 0;
    size_t n = strlen(s + neg);
    if (n == 0 || n > 19) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = s[neg + i];
        if (ch < '0' || ch > '9') {
            return -1;
        }
        u = u * 10 + (uint64_t)(ch - '0');
    }
    if (u > (uint64_t)INT64_MAX + (uint64_t)neg) {
        return -1;
    }
    *out = neg ? -(double)u : (double)u;
    *has = 1;
    return 0;
}

static int json_point(struct mt_ctx *c, json_t *jp)
{
    struct otlp_point tmp, *p = mt_next(c, &tmp);
    if (!p) {
        return -1;
    }
    if (!json_is_object(jp)) {
        c->why = "a data point that is not an object";
        return -1;
    }
    uint64_t flags = 0;
    uint8_t has_value = 0, has_int = 0;
    double iv = 0;
    if (json_u64(json_object_get(jp, "timeUnixNano"), &p->time_ns) != 0 ||
        json_u64(json_object_get(jp, "flags"), &flags) != 0 ||
        json_u64(json_object_get(jp, "count"), &p->count) != 0) {
        c->why = "a data point time, count or flags that is not an integer";
        return -1;
    }
    p->skip = (flags & 1) != 0;
    if (json_f64(json_object_get(jp, "asDouble"), &p->value, &has_value) != 0 ||
        json_i64(json_object_get(jp, "asInt"), &iv, &has_int) != 0 ||
        json_f64(json_object_get(jp, "sum"), &p->sum, &p->has_sum) != 0 ||
        json_f64(json_object_get(jp, "min"), &p->min, &p->has_min) != 0 ||
        json_f64(json_object_get(jp, "max"), &p->max, &p->has_max) != 0) {
        c->why = "a data point value that is not a number";
        return -1;
    }
    if (has_int) {
        p->value = iv;
    }
    if (p->shape == OTLP_PT_NUMBER) {
        p->has_sum = p->has_min = p->has_max = 0;
    } else if (c->type == MT_SUMMARY) {
        p->has_min = p->has_max = 0;
    }
    json_t *attrs = json_object_get(jp, "attributes");
    if (attrs && !json_is_array(attrs)) {
        c->why = "attributes that are not an array";
        return -1;
    }
    size_t i;
    json_t *kv;
    json_array_foreach(attrs, i, kv)
    {
        struct any av;
        tt__bstr key = jstr(json_object_get(kv, "key"));
        if (!json_is_object(kv) || !key.p || json_any(json_object_get(kv, "value"), &av) != 0) {
            c->why = "a malformed attribute";
            return -1;
        }
        mt_attr(c, p, key, &av);
        if (c->why) {
            return -1;
        }
    }
    mt_check(p, has_value || has_int);
    return 0;
}

static int json_metric(struct mt_ctx *c, json_t *jm)
{
    static const struct {
        const char *key;
        int type;
    } kinds[] = {{"gauge", MT_GAUGE},
                 {"sum", MT_SUM},
                 {"histogram", MT_HIST},
                 {"exponentialHistogram", MT_EXP},
                 {"summary", MT_SUMMARY}};
    json_t *name = json_is_object(jm) ? json_object_get(jm, "name") : NULL;
    json_t *unit = json_is_object(jm) ? json_object_get(jm, "unit") : NULL;
    if (!json_is_object(jm) || (name && !json_is_string(name)) || (unit && !json_is_string(unit))) {
        c->why = "a malformed metric";
        return -1;
    }
    c->name = jstr(name);
    c->unit = jstr(unit);
    json_t *data = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds && !data; i++) {
        data = json_object_get(jm, kinds[i].key);
        c->type = kinds[i].type;
    }
    if (!data) {
        return 0; /* no data */
    }
    uint64_t temporality = 0;
    json_t *mono = json_object_get(data, "isMonotonic");
    json_t *dps = json_object_get(data, "dataPoints");
    if (!json_is_object(data) ||
        json_u64(json_object_get(data, "aggregationTemporality"), &temporality) != 0 ||
        (mono && !json_is_boolean(mono)) || (dps && !json_is_array(dps))) {
        c->why = "a malformed metric";
        return -1;
    }
    mt_kinds(c, temporality, json_is_true(mono));
    size_t i;
    json_t *jp;
    json_array_foreach(dps, i, jp)
    {
        if (json_point(c, jp) != 0) {
            return -1;
        }
    }
    return 0;
}

static int json_metrics_items(void *ctx, json_t *arr, const char **why)
{
    struct mt_ctx *c = ctx;
    size_t k;
    json_t *m;
    json_array_foreach(arr, k, m)
    {
        if (json_metric(c, m) != 0) {
            *why = c->why;
            return -1;
        }
    }
    return 0;
}

static uint32_t json_metrics_count(const void *ctx)
{
    return ((const struct mt_ctx *)ctx)->n_points;
}

static const struct json_levels metrics_levels = {"a resourceMetrics entry that is not an object",
                                                  "scopeMetrics",
                                                  "scopeMetrics that are not an array",
                                                  "a malformed scopeMetrics entry",
                                                  "metrics",
                                                  json_metrics_items,
                                                  json_metrics_count};

static int json_metrics_walk(struct mt_ctx *c, json_t *rm_arr)
{
    return json_levels_walk(rm_arr, &metrics_levels, c, c->fill ? c->req->res : NULL, &c->n_res,
                            &c->why);
}

int otlp_metrics_decode_json(struct otlp_metrics *req, const uint8_t *body, size_t n,
                             const char **why)
{
    memset(req, 0, sizeof *req);
    *why = NULL;
    if (n > OTLP_BODY_MAX) {
        *why = "a body above 4 MiB";
        return -1;
    }
    int over;
    json_t *root = json_load_capped(body, n, &over, why);
    if (!root) {
        return over ? -2 : -1;
    }
    req->json = root;
    json_t *arr = json_object_get(root, "resourceMetrics");
    struct mt_ctx c;
    memset(&c, 0, sizeof c);
    c.req = req;
    if ((arr && !json_is_array(arr)) || json_metrics_walk(&c, arr) != 0) {
        *why = c.why ? c.why : "resourceMetrics that is not an array";
        otlp_metrics_free(req);
        return -1;
    }
    if (metrics_alloc(req, &c) != 0) {
        otlp_metrics_free(req);
        *why = "out of memory";
        return -1;
    }
    struct mt_ctx f;
    memset(&f, 0, sizeof f);
    f.req = req;
    f.fill = 1;
    if (json_metrics_walk(&f, arr) != 0) {
        *why = f.why;
        otlp_metrics_free(req);
        return -1;
    }
    req->n_res = f.n_res;
    req->n_points = f.n_points;
    req->n_kvs = f.n_kvs;
    return 0;
}

void otlp_metrics_free(struct otlp_metrics *req)
{
    free(req->res);
    free(req->points);
    free(req->kvs);
    json_decref(req->json);
    memset(req, 0, sizeof *req);
}

uint32_t otlp_point_events(const struct otlp_point *p)
{
    return p->shape == OTLP_PT_NUMBER ? 1 : 1u + p->has_sum + p->has_min + p->has_max;
}

/* One Metric event { kind 1, name 2 (the metric's name and suffix), value 3, unit 4, attrs 5 }. */
static uint8_t *put_metric(uint8_t *q, uint8_t *tmp, const struct otlp_metrics *req,
                           const struct otlp_point *p, uint64_t base, uint32_t kind,
                           const char *suffix, tt__bstr unit, double v)
{
    size_t sl = strlen(suffix);
    uint8_t *t = tmp;
    t = tt__pb_put_uint(t, 1, kind);
    t = tt__pb_put_tag(t, 2, TT_PB_LEN);
    t = tt__pb_put_varint(t, p->name.n + sl);
    memcpy(t, p->name.p, p->name.n);
    memcpy(t + p->name.n, suffix, sl);
    t += p->name.n + sl;
    t = tt__pb_put_double(t, 3, v);
    if (unit.n) {
        t = put_str(t, 4, unit);
    }
    for (uint32_t k = 0; k < p->n_kv; k++) {
        t = put_kv(t, 5, &req->kvs[p->first_kv + k]);
    }
    return put_event(q, (int64_t)(p->time_ns - base), p->session, TT_EV_METRIC, tmp,
                     (size_t)(t - tmp));
}

int otlp_metrics_encode(const struct otlp_metrics *req, uint32_t first, uint32_t n,
                        const char *agent, struct otlp_batch *out)
{
    memset(out, 0, sizeof *out);
    const struct otlp_point *pt = &req->points[first];
    uint64_t base = UINT64_MAX;
    size_t cap = 128, tmp_cap = 0;
    uint32_t n_points = 0, n_events = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (pt[i].refused || pt[i].skip) {
            continue;
        }
        n_points++;
        n_events += otlp_point_events(&pt[i]);
        base = pt[i].time_ns < base ? pt[i].time_ns : base;
        size_t c = 64 + 2 * TT_PB_VARINT_MAX + pt[i].name.n + pt[i].unit.n;
        for (uint32_t k = 0; k < pt[i].n_kv; k++) {
            const struct otlp_kv *kv = &req->kvs[pt[i].first_kv + k];
            c += 2 * TT_PB_VARINT_MAX + 16 + kv->key.n + (kv->type == TT_ATTR_STR ? kv->s.n : 0);
        }
        cap += otlp_point_events(&pt[i]) * (c + 2 * TT_PB_VARINT_MAX + 16 + pt[i].session.n);
        tmp_cap = c > tmp_cap ? c : tmp_cap;
    }
    if (n_points == 0) {
        return 0;
    }
    uint8_t *raw = malloc(cap), *tmp = malloc(tmp_cap);
    if (!raw || !tmp) {
        free(raw);
        free(tmp);
        return -1;
    }
    uint8_t *q = raw;
    q = tt__pb_put_bytes(q, 1, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16); /* set below */
    uint8_t *inst = q - 16;
    q = tt__pb_put_uint(q, 2, 1);
    q = tt__pb_put_fixed64(q, 3, base);
    uint8_t *events = q;
    tt__bstr none = {NULL, 0};
    for (uint32_t i = 0; i < n; i++) {
        const struct otlp_point *p = &pt[i];
        if (p->refused || p->skip) {
            continue;
        }
        if (p->shape == OTLP_PT_NUMBER) {
            q = put_metric(q, tmp, req, p, base, p->kind, "", p->unit, p->value);
            continue;
        }
        q = put_metric(q, tmp, req, p, base, p->kind, ".count", none, (double)p->count);
        if (p->has_sum) {
            q = put_metric(q, tmp, req, p, base, p->kind, ".sum", p->unit, p->sum);
        }
        if (p->has_min) {
            q = put_metric(q, tmp, req, p, base, TT_GAUGE, ".min", p->unit, p->min);
        }
        if (p->has_max) {
            q = put_metric(q, tmp, req, p, base, TT_GAUGE, ".max", p->unit, p->max);
        }
    }
    free(tmp);
    /* The instance: a hash of the agent and of the events (a resend encodes the same). */
    uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
    h1 = fnv(h1, agent, strlen(agent) + 1);
    h2 = fnv(h2, agent, strlen(agent) + 1);
    h1 = fnv(h1, events, (size_t)(q - events));
    h2 = fnv(h2 ^ 0x5bd1e995u, events, (size_t)(q - events));
    h1 = mix(h1 ^ base);
    h2 = mix(h2 ^ h1);
    for (int b = 0; b < 8; b++) {
        out->instance[b] = (uint8_t)(h1 >> (8 * b));
        out->instance[8 + b] = (uint8_t)(h2 >> (8 * b));
    }
    memcpy(inst, out->instance, 16);
    out->raw = raw;
    out->raw_len = (size_t)(q - raw);
    out->n_events = n_events;
    out->n_spans = n_points;
    return 0;
}

/* --- gzip ----------------------------------------------------------------------------------- */

int otlp_gunzip(const uint8_t *in, size_t n, size_t max, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        return -1;
    }
    size_t cap = n * 4 < max ? (n * 4 > 4096 ? n * 4 : 4096) : max;
    uint8_t *buf = malloc(cap + 1);
    int rc = buf ? Z_OK : Z_MEM_ERROR;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    size_t len = 0;
    while (rc == Z_OK) {
        if (len == cap) {
            if (cap == max) {
                rc = Z_BUF_ERROR; /* more than max */
                break;
            }
            size_t ncap = cap * 2 < max ? cap * 2 : max;
            uint8_t *nb = realloc(buf, ncap + 1);
            if (!nb) {
                rc = Z_MEM_ERROR;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        z.next_out = buf + len;
        z.avail_out = (uInt)(cap - len);
        rc = inflate(&z, Z_NO_FLUSH);
        len = cap - z.avail_out;
        if (rc == Z_BUF_ERROR && z.avail_in == 0) {
            rc = Z_DATA_ERROR; /* truncated */
        } else if (rc == Z_BUF_ERROR) {
            rc = Z_OK;
        }
    }
    int trailing = z.avail_in != 0;
    inflateEnd(&z);
    if (rc != Z_STREAM_END || trailing) {
        free(buf);
        return rc == Z_BUF_ERROR && len == max ? -2 : -1;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

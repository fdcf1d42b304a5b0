/*
 * render.c - the field writers every JSON shape shares: enum names, times, attributes, ids.
 * render_event.c and render_response.c build on these; nothing here calls back into them.
 */
#include "collector/api/render.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "telltale.h"

const char *render_severity(uint32_t s)
{
    if (s == 0) {
        return "unspecified";
    }
    if (s <= 4) {
        return "trace";
    }
    if (s <= 8) {
        return "debug";
    }
    if (s <= 12) {
        return "info";
    }
    if (s <= 16) {
        return "warn";
    }
    if (s <= 20) {
        return "error";
    }
    return "fatal";
}

uint32_t render_severity_parse(const char *name)
{
    static const struct {
        const char *name;
        uint32_t v;
    } t[] = {{"trace", TT_TRACE},  {"debug", TT_DEBUG}, {"info", TT_INFO},  {"warn", TT_WARN},
             {"warning", TT_WARN}, {"error", TT_ERROR}, {"fatal", TT_FATAL}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(name, t[i].name) == 0) {
            return t[i].v;
        }
    }
    return 0;
}

const char *render_step_kind(uint32_t kind)
{
    static const char *const names[] = {"unknown", "reasoning", "tool",      "api",
                                        "llm",     "agent",     "retrieval", "other"};
    return kind < sizeof names / sizeof names[0] ? names[kind] : "unknown";
}

const char *render_status(uint32_t status)
{
    static const char *const names[] = {"ok", "error", "timeout", "cancelled"};
    return status < 4 ? names[status] : "unknown";
}

const char *render_metric_kind(uint32_t kind)
{
    static const char *const names[] = {"unknown", "counter", "gauge", "histogram", "score"};
    return kind < 5 ? names[kind] : "unknown";
}

void render_time(int64_t unix_ns, char *out, size_t n)
{
    time_t secs = (time_t)(unix_ns / 1000000000);
    long frac = (long)(unix_ns % 1000000000);
    if (frac < 0) {
        frac += 1000000000;
        secs--;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%09ldZ", base, frac);
}

void render_attrs(tt__json *j, tt__bstr body, uint32_t field, const char *key)
{
    tt__attr_iter it;
    tt__attr_val a;
    tt__attr_iter_init(&it, body, field);
    int any = 0;
    while (tt__attr_next(&it, &a)) {
        if (!any) {
            tt__json_key(j, key);
            tt__json_obj_begin(j);
            any = 1;
        }
        tt__json_str(j, a.key.p, a.key.n);
        tt__json_raw(j, ":", 1);
        j->need_comma = 0;
        switch (a.type) {
        case TT_ATTR_STR:
            tt__json_str(j, a.s.p, a.s.n);
            break;
        case TT_ATTR_INT:
            tt__json_i64(j, a.i);
            break;
        case TT_ATTR_DOUBLE:
            tt__json_f64(j, a.d);
            break;
        case TT_ATTR_BOOL:
            tt__json_bool(j, a.b);
            break;
        default:
            tt__json_null(j);
            break;
        }
    }
    if (any) {
        tt__json_obj_end(j);
    }
}

const char *render_verdict(uint32_t v)
{
    static const char *const names[] = {"pass", "flag", "halt"};
    return v < 3 ? names[v] : "unknown";
}

void render_trace(tt__json *j, const uint8_t trace_id[16], uint64_t span_id,
                  uint64_t parent_span_id)
{
    tt__json_key(j, "trace_id");
    tt__json_hex(j, trace_id, 16);
    render_response_id(j, "span_id", span_id);
    if (parent_span_id) {
        render_response_id(j, "parent_span_id", parent_span_id);
    }
}

void render_response_id(tt__json *j, const char *key, uint64_t id)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++) {
        be[i] = (uint8_t)(id >> (56 - 8 * i));
    }
    tt__json_key(j, key);
    tt__json_hex(j, be, 8);
}

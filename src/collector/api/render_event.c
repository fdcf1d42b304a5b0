/*
 * render_event.c - one event as a JSON object: the envelope, then the body of each kind (logs,
 * metrics, steps here; the confidence kinds through render_response.c). Every string from an
 * agent goes through the escaping writer.
 */
#include "collector/api/render.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "telltale.h"

static void render_log(tt__json *j, const tt__event *ev)
{
    tt__ev_log l;
    if (tt__ev_log_decode(ev->body, &l) != 0) {
        return;
    }
    tt__json_kv_cstr(j, "severity", render_severity(l.severity));
    tt__json_kv_u64(j, "severity_number", l.severity);
    tt__json_kv_str(j, "message", l.message.p, l.message.n);
    render_attrs(j, ev->body, 3, "attrs");
}

static void render_metric(tt__json *j, const tt__event *ev)
{
    tt__ev_metric m;
    if (tt__ev_metric_decode(ev->body, &m) != 0) {
        return;
    }
    tt__json_kv_cstr(j, "metric_kind", render_metric_kind(m.kind));
    tt__json_kv_str(j, "name", m.name.p, m.name.n);
    tt__json_kv_f64(j, "value", m.value);
    tt__json_kv_str(j, "unit", m.unit.p, m.unit.n);
    render_attrs(j, ev->body, 5, "attrs");
}

static void kv_id(tt__json *j, const char *key, uint64_t id)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++) {
        be[i] = (uint8_t)(id >> (56 - 8 * i));
    }
    tt__json_key(j, key);
    tt__json_hex(j, be, 8);
}

static void render_step_begin(tt__json *j, const tt__event *ev)
{
    tt__ev_step_begin s;
    if (tt__ev_step_begin_decode(ev->body, &s) != 0) {
        return;
    }
    kv_id(j, "step_id", s.step_id);
    if (s.parent_id) {
        kv_id(j, "parent_id", s.parent_id);
    }
    tt__json_kv_cstr(j, "step_kind", render_step_kind(s.kind));
    tt__json_kv_str(j, "name", s.name.p, s.name.n);
    tt__json_kv_str(j, "query", s.query.p, s.query.n);
    if (s.has_trace) {
        render_trace(j, s.trace_id, s.span_id, s.parent_span_id);
    }
}

static void render_step_end(tt__json *j, const tt__event *ev)
{
    tt__ev_step_end s;
    if (tt__ev_step_end_decode(ev->body, &s) != 0) {
        return;
    }
    kv_id(j, "step_id", s.step_id);
    if (s.kind) {
        tt__json_kv_cstr(j, "step_kind", render_step_kind(s.kind));
    }
    if (s.name.n) {
        tt__json_kv_str(j, "name", s.name.p, s.name.n);
    }
    tt__json_kv_cstr(j, "status", render_status(s.status));
    tt__json_kv_u64(j, "duration_ns", s.duration_ns);
    tt__json_kv_i64(j, "result_bytes", s.result_bytes);
    if (s.error.n) {
        tt__json_kv_str(j, "error", s.error.p, s.error.n);
    }
}

int render_event(tt__json *j, const char *agent, const uint8_t instance[16], const tt__event *ev)
{
    char t[48];
    render_time(ev->time, t, sizeof t);
    tt__json_obj_begin(j);
    tt__json_kv_cstr(j, "agent", agent);
    tt__json_key(j, "instance");
    tt__json_hex(j, instance, 16);
    tt__json_kv_u64(j, "seq", ev->seq);
    tt__json_kv_cstr(j, "time", t);
    tt__json_kv_i64(j, "time_unix_ns", ev->time);
    if (ev->clock_skew_ms) {
        /* The agent's clock was this far off the collector's when it sent the event: its
         * time is the agent's, as sent (docs/wire-format.md, "Clock skew"). */
        tt__json_kv_i64(j, "clock_skew_ms", ev->clock_skew_ms);
    }
    const char *kind = tt__ev_kind_name(ev->kind);
    tt__json_kv_cstr(j, "kind", kind ? kind : "unknown");
    if (ev->session.n) {
        tt__json_kv_str(j, "session", ev->session.p, ev->session.n);
    }
    switch (ev->kind) {
    case TT_EV_LOG:
        render_log(j, ev);
        break;
    case TT_EV_METRIC:
        render_metric(j, ev);
        break;
    case TT_EV_STEP_BEGIN:
        render_step_begin(j, ev);
        break;
    case TT_EV_STEP_END:
        render_step_end(j, ev);
        break;
    default:
        render_event_extra(j, ev);
        break;
    }
    return tt__json_obj_end(j);
}

/*
 * api/status.c - GET /api/v1/status: the collector's own counters as JSON (ingest, dedup,
 * commits, refused input by reason, live-stream subscribers, retention: horizons, what was
 * pruned, bytes on disk). /metrics carries the same figures for Prometheus.
 */
#include "collector/alerting/follow.h"
#include "collector/alerting/monitor.h"
#include "collector/collector.h"
#include "collector/api/http.h"
#include "collector/hub.h"
#include "collector/export.h"
#include "collector/retain.h"
#include "collector/source/nats.h"
#include "collector/store/store.h"
#include "common/json.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

enum MHD_Result api_status(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    struct hub_counters hc;
    hub_counters(r->ctx->hub, &hc);
    tt__buf b;
    tt__buf_init(&b, 1u << 16);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_u64(&j, "frames", LD(cstats.frames));
    tt__json_kv_u64(&j, "events_stored", LD(cstats.events));
    tt__json_kv_u64(&j, "bytes_received", LD(cstats.bytes));
    tt__json_kv_u64(&j, "dedup_frames", LD(cstats.dedup_frames));
    tt__json_kv_u64(&j, "dedup_events", LD(cstats.dedup_events));
    tt__json_kv_u64(&j, "connections_open", LD(cstats.conns_open));
    tt__json_kv_u64(&j, "connections_total", LD(cstats.conns_total));
    tt__json_kv_u64(&j, "commits", LD(cstats.commits));
    tt__json_kv_u64(&j, "commit_ns_total", LD(cstats.commit_ns_total));
    tt__json_kv_u64(&j, "commit_ns_max", LD(cstats.commit_ns_max));
    tt__json_kv_u64(&j, "store_errors", LD(cstats.store_errors));
    char why[512];
    int state = store_failure(r->ctx->store, why, sizeof why);
    tt__json_kv_cstr(&j, "store_state",
                     state == STORE_FAILED     ? "failed"
                     : state == STORE_REFUSING ? "refusing"
                                               : "ok");
    tt__json_kv_cstr(&j, "store_reason", why);
    tt__json_key(&j, "rejected");
    tt__json_obj_begin(&j);
    for (int i = 0; i < REJ__COUNT; i++) {
        tt__json_kv_u64(&j, reject_name(i), LD(cstats.rejected[i]));
    }
    tt__json_obj_end(&j);
    tt__json_kv_u64(&j, "subscribers", hc.subscribers);
    tt__json_kv_u64(&j, "subscribers_dropped_slow", hc.disconnected_slow);
    tt__json_kv_u64(&j, "subscribers_lagging", hc.lagging);
    tt__json_kv_u64(&j, "stream_events_skipped", hc.events_skipped);
    tt__json_kv_u64(&j, "stream_fields_truncated", hc.fields_truncated);
    tt__json_kv_u64(&j, "stream_events_truncated", hc.events_truncated);
    /* Several collectors on one store: who raises incidents (docs/operations.md). */
    struct follow_status fs;
    follow_status(r->ctx->follow, &fs);
    tt__json_key(&j, "incidents");
    tt__json_obj_begin(&j);
    tt__json_kv_bool(&j, "shared_store", r->ctx->follow != NULL);
    tt__json_kv_bool(&j, "leading", !r->ctx->monitor || monitor_leading(r->ctx->monitor));
    tt__json_kv_u64(&j, "followed_batches", fs.batches);
    tt__json_kv_u64(&j, "follow_errors", fs.errors);
    tt__json_kv_u64(&j, "leads", fs.leads);
    tt__json_kv_u64(&j, "taken_over", fs.taken);
    tt__json_obj_end(&j);
    retain_status_json(&j);
    export_status_json(&j);
    nats_status_json(&j);
    tt__json_obj_end(&j);
    enum MHD_Result rc = http_json(r, MHD_HTTP_OK, &b);
    tt__buf_fini(&b);
    return rc;
}

/*
 * api/metrics.c - GET /metrics in the Prometheus text format (version 0.0.4): the collector's
 * health (ingest, dedup, store commits, refused input by reason, live-stream subscribers,
 * alerts, webhooks) and the monitor's per-agent series. `promtool check metrics` passes on it
 * (tests/integration/test_operator.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "collector/alerting/alerts.h"
#include "collector/collector.h"
#include "collector/api/http.h"
#include "collector/export.h"
#include "collector/hub.h"
#include "collector/source/nats.h"
#include "collector/store/store.h"
#include "collector/alerting/monitor.h"
#include "collector/alerting/comply_watch.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void one(tt__buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    tt__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
                   (unsigned long long)v);
}

static void commit_histogram(tt__buf *b)
{
    static const uint64_t bounds[COMMIT_HIST_BUCKETS] = COMMIT_HIST_BOUNDS_US;
    const char *n = "telltale_store_commit_seconds";
    tt__buf_printf(b, "# HELP %s Store commit latency (one group commit).\n# TYPE %s histogram\n",
                   n, n);
    uint64_t cum = 0;
    for (int i = 0; i <= COMMIT_HIST_BUCKETS; i++) {
        cum += LD(cstats.commit_hist[i]);
        if (i < COMMIT_HIST_BUCKETS) {
            tt__buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", n, (double)bounds[i] / 1e6,
                           (unsigned long long)cum);
        } else {
            tt__buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", n, (unsigned long long)cum);
        }
    }
    tt__buf_printf(b, "%s_sum %.9f\n%s_count %llu\n", n, (double)LD(cstats.commit_ns_total) / 1e9,
                   n, (unsigned long long)cum);
}

static void health(tt__buf *b, const struct http_req *r)
{
    one(b, "telltale_ingest_events_total", "counter", "Events stored (after dedup).",
        LD(cstats.events));
    one(b, "telltale_ingest_bytes_total", "counter", "Bytes read from agents.", LD(cstats.bytes));
    one(b, "telltale_ingest_frames_total", "counter", "Valid batch frames received.",
        LD(cstats.frames));
    one(b, "telltale_dedup_frames_total", "counter", "Frames already stored, acked again.",
        LD(cstats.dedup_frames));
    one(b, "telltale_ingest_clock_skewed_hellos_total", "counter",
        "Agent connections whose clock was 2 s or more off the collector's.",
        LD(cstats.skewed_hellos));
    one(b, "telltale_ingest_clock_skewed_frames_total", "counter",
        "Batches stored with the clock_skew_ms flag.", LD(cstats.skewed_frames));
    one(b, "telltale_dedup_events_total", "counter", "Events already stored, not stored again.",
        LD(cstats.dedup_events));
    one(b, "telltale_connections_open", "gauge", "Agent connections open.", LD(cstats.conns_open));
    one(b, "telltale_connections_total", "counter", "Agent connections accepted.",
        LD(cstats.conns_total));
    one(b, "telltale_store_errors_total", "counter", "Store commits that failed.",
        LD(cstats.store_errors));
    char why[512];
    int state = store_failure(r->ctx->store, why, sizeof why);
    one(b, "telltale_store_healthy", "gauge",
        "1 while the store commits batches; 0 while it refuses them (see /healthz).",
        state == STORE_HEALTHY);
    one(b, "telltale_store_failed", "gauge",
        "1 after a fatal store error (I/O error, damage, file deleted or replaced) until restart.",
        state == STORE_FAILED);
    commit_histogram(b);
    tt__buf_printf(b, "# HELP telltale_rejected_total Input refused, by reason.\n"
                      "# TYPE telltale_rejected_total counter\n");
    for (int i = 0; i < REJ__COUNT; i++) {
        tt__buf_printf(b, "telltale_rejected_total{reason=\"%s\"} %llu\n", reject_name(i),
                       (unsigned long long)LD(cstats.rejected[i]));
    }
    static const char *const pools[2] = {"partial_frames", "batches"};
    static const char *const budget[3][2] = {
        {"telltale_ingest_budget_bytes",
         "Ingest budget of each pool (admission before allocation)."},
        {"telltale_ingest_budget_used_bytes", "Bytes admitted now."},
        {"telltale_ingest_budget_peak_bytes", "The most bytes ever admitted at once."}};
    for (int k = 0; k < 3; k++) {
        tt__buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", budget[k][0], budget[k][1],
                       budget[k][0]);
        for (int i = 0; i < 2; i++) {
            _Atomic uint64_t *v = k == 0   ? cstats.budget_limit
                                  : k == 1 ? cstats.budget_used
                                           : cstats.budget_peak;
            tt__buf_printf(b, "%s{pool=\"%s\"} %llu\n", budget[k][0], pools[i],
                           (unsigned long long)LD(v[i]));
        }
    }
    nats_metrics(b);
    one(b, "telltale_ingest_budget_waits_total", "counter",
        "Admissions that waited for budget (the socket was left unread meanwhile).",
        LD(cstats.budget_waits));
    struct hub_counters hc;
    hub_counters(r->ctx->hub, &hc);
    one(b, "telltale_stream_subscribers", "gauge", "Live-stream subscribers connected.",
        hc.subscribers);
    one(b, "telltale_stream_subscribers_dropped_total", "counter",
        "Subscribers disconnected for not keeping up.", hc.disconnected_slow);
    one(b, "telltale_stream_messages_total", "counter", "Messages queued to subscribers.",
        hc.events_sent);
    one(b, "telltale_stream_subscribers_lagging", "gauge",
        "Connected subscribers told of events skipped while the fan-out was behind.", hc.lagging);
    one(b, "telltale_stream_events_skipped_total", "counter",
        "Events left out of the live stream because the fan-out was behind.", hc.events_skipped);
    one(b, "telltale_stream_fields_truncated_total", "counter",
        "Event fields cut in the live stream (above 64 KiB).", hc.fields_truncated);
    one(b, "telltale_stream_events_truncated_total", "counter",
        "Events replaced by their envelope in the live stream (too large).", hc.events_truncated);
    one(b, "telltale_stream_backlog_bytes", "gauge",
        "Committed batches waiting for the live fan-out.", hc.backlog_bytes);
    export_metrics_text(b);
    struct alerts_counters ac;
    alerts_counters(r->ctx->alerts, &ac);
    one(b, "telltale_alerts_raised_total", "counter",
        "Incident events (firing, updated, resolved) queued for storage.", ac.raised);
    one(b, "telltale_alerts_dropped_total", "counter",
        "Incident events lost (queue full, store error).", ac.dropped);
    tt__buf_printf(b,
                   "# HELP telltale_webhook_deliveries_total Webhook deliveries by result.\n"
                   "# TYPE telltale_webhook_deliveries_total counter\n"
                   "telltale_webhook_deliveries_total{result=\"sent\"} %llu\n"
                   "telltale_webhook_deliveries_total{result=\"failed\"} %llu\n"
                   "telltale_webhook_deliveries_total{result=\"dropped\"} %llu\n",
                   (unsigned long long)ac.webhook_sent, (unsigned long long)ac.webhook_failed,
                   (unsigned long long)ac.webhook_dropped);
    one(b, "telltale_webhook_retries_total", "counter", "Webhook attempts after a failure.",
        ac.webhook_retries);
}

enum MHD_Result api_metrics(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    tt__buf b;
    tt__buf_init(&b, 256u << 20);
    health(&b, r);
    monitor_metrics(r->ctx->monitor, &b);
    watch_metrics(r->ctx->watch, &b);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    tt__buf_fini(&b);
    if (!resp) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

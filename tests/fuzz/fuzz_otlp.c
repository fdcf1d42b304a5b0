/*
 * fuzz_otlp.c - libFuzzer harness for the OTLP trace, log and metric decoders
 * (source/otlp_decode.c): the first byte picks protobuf or JSON (bit 0), gzip around it or not
 * (bit 1), traces or logs (bit 2), metrics (bit 3, over bit 2); the rest is the request body.
 * Checked besides "no crash": a decoded request's resources cover its spans (records, points)
 * exactly, and every batch the mapping encodes from it parses as a valid Batch
 * (common/batch.c) with the events they make (2 per span, 4 per model call, 1 per log record,
 * 1 to 4 metrics per data point).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/source/otlp_decode.h"
#include "telltale.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* jansson's allocations capped per body, as in the collector. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    otlp_decode_init();
    return 0;
}

static void check_request(const struct otlp_request *req)
{
    uint32_t covered = 0;
    for (uint32_t r = 0; r < req->n_res; r++) {
        if (req->res[r].first != covered || req->res[r].n > req->n_spans - covered) {
            abort();
        }
        covered += req->res[r].n;
        for (uint32_t off = 0; off < req->res[r].n; off += OTLP_SPANS_PER_BATCH) {
            uint32_t n = req->res[r].n - off;
            n = n < OTLP_SPANS_PER_BATCH ? n : OTLP_SPANS_PER_BATCH;
            struct otlp_batch b;
            if (otlp_batch_encode(req, req->res[r].first + off, n, "fuzz-agent", &b) != 0) {
                continue; /* out of memory */
            }
            uint32_t want = 0, storable = 0;
            for (uint32_t i = 0; i < n; i++) {
                const struct otlp_span *s = &req->spans[req->res[r].first + off + i];
                int llm;
                otlp_step_kind(s, &llm);
                if (!s->refused) {
                    storable++;
                    want += llm ? 4 : 2;
                }
            }
            if (b.n_spans != storable || (storable && b.n_events != want)) {
                abort();
            }
            if (b.n_spans) {
                tt__batch_limits lim = {1u << 20, 256};
                tt__batch bt;
                const char *why = NULL;
                if (tt__batch_parse(&bt, b.raw, b.raw_len, &lim, &why) != 0 ||
                    bt.n_events != want || bt.first_seq != 1 ||
                    memcmp(bt.instance, b.instance, 16) != 0) {
                    abort();
                }
            }
            free(b.raw);
        }
    }
    if (covered != req->n_spans) {
        abort();
    }
}

static void check_logs(const struct otlp_logs *req)
{
    uint32_t covered = 0;
    for (uint32_t r = 0; r < req->n_res; r++) {
        if (req->res[r].first != covered || req->res[r].n > req->n_logs - covered) {
            abort();
        }
        covered += req->res[r].n;
        uint32_t n = req->res[r].n < OTLP_SPANS_PER_BATCH ? req->res[r].n : OTLP_SPANS_PER_BATCH;
        struct otlp_batch b;
        if (otlp_logs_encode(req, req->res[r].first, n, "fuzz-agent", &b) != 0) {
            continue;
        }
        uint32_t want = 0;
        for (uint32_t i = 0; i < n; i++) {
            const struct otlp_log *l = &req->logs[req->res[r].first + i];
            want += !l->refused;
            if (l->first_kv + l->n_kv > req->n_kvs || l->n_kv > OTLP_ATTRS_MAX) {
                abort();
            }
        }
        if (b.n_spans != want) {
            abort();
        }
        if (want) {
            tt__batch_limits lim = {1u << 20, 256};
            tt__batch bt;
            const char *why = NULL;
            if (tt__batch_parse(&bt, b.raw, b.raw_len, &lim, &why) != 0 || bt.n_events != want) {
                abort();
            }
        }
        free(b.raw);
    }
    if (covered != req->n_logs) {
        abort();
    }
}

static void check_metrics(const struct otlp_metrics *req)
{
    uint32_t covered = 0;
    for (uint32_t r = 0; r < req->n_res; r++) {
        if (req->res[r].first != covered || req->res[r].n > req->n_points - covered) {
            abort();
        }
        covered += req->res[r].n;
        uint32_t n = req->res[r].n < OTLP_SPANS_PER_BATCH ? req->res[r].n : OTLP_SPANS_PER_BATCH;
        struct otlp_batch b;
        if (otlp_metrics_encode(req, req->res[r].first, n, "fuzz-agent", &b) != 0) {
            continue;
        }
        uint32_t points = 0, events = 0;
        for (uint32_t i = 0; i < n; i++) {
            const struct otlp_point *p = &req->points[req->res[r].first + i];
            if (p->first_kv + p->n_kv > req->n_kvs || p->n_kv > OTLP_ATTRS_MAX) {
                abort();
            }
            if (!p->refused && !p->skip) {
                points++;
                events += otlp_point_events(p);
            }
        }
        if (b.n_spans != points || b.n_events != events) {
            abort();
        }
        if (points) {
            tt__batch_limits lim = {1u << 20, 256};
            tt__batch bt;
            tt__event ev;
            const char *why = NULL;
            if (tt__batch_parse(&bt, b.raw, b.raw_len, &lim, &why) != 0 || bt.n_events != events) {
                abort();
            }
            while (tt__batch_next(&bt, &ev)) {
                tt__ev_metric m;
                if (ev.kind != TT_EV_METRIC || tt__ev_metric_decode(ev.body, &m) != 0 ||
                    m.name.n == 0 || (m.kind != TT_COUNTER && m.kind != TT_GAUGE)) {
                    abort();
                }
            }
        }
        free(b.raw);
    }
    if (covered != req->n_points) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int mode = data[0] & 3, logs = data[0] & 4, metrics = data[0] & 8;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    uint8_t *plain = NULL;
    if (mode >= 2) {
        /* a small limit, so that the limit's edge is reached */
        int g = otlp_gunzip(body, len, 1u << 16, &plain, &len);
        if (g != 0) {
            if (plain || len) {
                abort();
            }
            return 0;
        }
        if (len > (1u << 16)) {
            abort();
        }
        body = plain;
    }
    if (metrics) {
        struct otlp_metrics mr;
        const char *why = NULL;
        int rc = mode & 1 ? otlp_metrics_decode_json(&mr, body, len, &why)
                          : otlp_metrics_decode_pb(&mr, body, len, &why);
        if (rc != 0) {
            if (!why || mr.points || mr.res || mr.kvs || mr.json) {
                abort();
            }
        } else {
            check_metrics(&mr);
            otlp_metrics_free(&mr);
        }
        free(plain);
        return 0;
    }
    if (logs) {
        struct otlp_logs lr;
        const char *why = NULL;
        int rc = mode & 1 ? otlp_logs_decode_json(&lr, body, len, &why)
                          : otlp_logs_decode_pb(&lr, body, len, &why);
        if (rc != 0) {
            if (!why || lr.logs || lr.res || lr.kvs || lr.json) {
                abort();
            }
        } else {
            check_logs(&lr);
            otlp_logs_free(&lr);
        }
        free(plain);
        return 0;
    }
    struct otlp_request req;
    const char *why = NULL;
    int rc = mode & 1 ? otlp_traces_decode_json(&req, body, len, &why)
                      : otlp_traces_decode_pb(&req, body, len, &why);
    if (rc != 0) {
        if (!why || req.spans || req.res || req.json) {
            abort(); /* a refusal has a reason and keeps nothing */
        }
    } else {
        check_request(&req);
        otlp_request_free(&req);
    }
    free(plain);
    return 0;
}

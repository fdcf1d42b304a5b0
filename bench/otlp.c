/*
 * otlp.c - OTLP ingest against the native path (issue 17 point 5): spans stored per second when
 * exporters post OTLP/HTTP protobuf requests to a real `telltale serve`, against the same
 * collector's native protocol carrying the same work (one tool step, a begin and an end event,
 * per span), same run.
 *
 *   otlp [--smoke] [--runs N] [--seconds S] [--senders K] [--spans B]
 *
 * OTLP: K threads, each with one keep-alive HTTP connection (libcurl), post
 * ExportTraceServiceRequests of B `execute_tool` spans (512 is the JS SDK's batch size) with
 * unique ids, each answered only once the store committed it; the rate is the spans answered
 * 200 without rejection, divided by the time from the first post to the last answer.
 * Native: K agents (tt_client over loopback TCP, like the exporters) each emit tt_step_begin and
 * tt_step_end pairs as fast as the pipeline takes (a full ring, or 64k events not yet
 * acknowledged, sleeps 200 us), then flush; the rate is the pairs acknowledged over the time
 * from the first emit to the last ack. A fresh
 * collector (sync full, the default) per run and path; medians of the runs.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/pb.h"
#include "pipeline_util.h"

#define MAX_RUNS 15
#define MAX_SENDERS 64

struct opts {
    int smoke, runs, senders, spans;
    double seconds;
};

struct sender {
    pthread_t th;
    const char *http;
    int index;
    int spans;
    atomic_int *stop;
    uint64_t stored, refused;
    uint64_t last_ns;
    int failed;
};

static size_t sink(char *p, size_t size, size_t n, void *cls)
{
    (void)p;
    (void)cls;
    return size * n;
}

/* A request of n spans named by (sender, seq): ids unique across the run. */
static size_t encode_request(uint8_t *out, int sender, uint64_t seq, int n, uint64_t t0)
{
    static const char op[] = "execute_tool", tool[] = "get_weather", svc[] = "bench-otlp";
    uint8_t spans[256 * 1024], *q = spans;
    for (int i = 0; i < n; i++) {
        uint8_t span[256], kv[96], any[48], *s = span, *k, *a;
        uint8_t trace[16] = {0}, id[8];
        uint64_t sid = ((uint64_t)sender << 48) | (seq << 16) | (uint64_t)(i + 1);
        memcpy(trace, &seq, 8);
        trace[8] = (uint8_t)sender;
        trace[15] = 1;
        for (int b = 0; b < 8; b++) {
            id[b] = (uint8_t)(sid >> (56 - 8 * b));
        }
        s = tt__pb_put_bytes(s, 1, trace, 16);
        s = tt__pb_put_bytes(s, 2, id, 8);
        s = tt__pb_put_bytes(s, 5, "execute_tool get_weather", 24);
        s = tt__pb_put_fixed64(s, 7, t0 + (uint64_t)i * 1000);
        s = tt__pb_put_fixed64(s, 8, t0 + (uint64_t)i * 1000 + 250000);
        /* attributes 9: gen_ai.operation.name, gen_ai.tool.name */
        const char *keys[2] = {"gen_ai.operation.name", "gen_ai.tool.name"};
        const char *vals[2] = {op, tool};
        for (int j = 0; j < 2; j++) {
            a = tt__pb_put_bytes(any, 1, vals[j], strlen(vals[j]));
            k = tt__pb_put_bytes(kv, 1, keys[j], strlen(keys[j]));
            k = tt__pb_put_bytes(k, 2, any, (size_t)(a - any));
            s = tt__pb_put_bytes(s, 9, kv, (size_t)(k - kv));
        }
        q = tt__pb_put_bytes(q, 2, span, (size_t)(s - span)); /* ScopeSpans.spans */
    }
    uint8_t any[32], kv[64], res[96], *a, *k, *r;
    a = tt__pb_put_bytes(any, 1, svc, strlen(svc));
    k = tt__pb_put_bytes(kv, 1, "service.name", 12);
    k = tt__pb_put_bytes(k, 2, any, (size_t)(a - any));
    r = tt__pb_put_bytes(res, 1, kv, (size_t)(k - kv)); /* Resource.attributes */
    /* ResourceSpans { resource 1, scope_spans 2 } in the request's resource_spans 1 */
    size_t ss = (size_t)(q - spans);
    size_t rs = tt__pb_len_field_size((size_t)(r - res)) + tt__pb_len_field_size(ss);
    uint8_t *o = out;
    o = tt__pb_put_tag(o, 1, TT_PB_LEN);
    o = tt__pb_put_varint(o, rs);
    o = tt__pb_put_bytes(o, 1, res, (size_t)(r - res));
    o = tt__pb_put_bytes(o, 2, spans, ss);
    return (size_t)(o - out);
}

static void *send_main(void *arg)
{
    struct sender *s = arg;
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://%s/v1/traces", s->http);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/x-protobuf");
    hdrs = curl_slist_append(hdrs, "Expect:");
    uint8_t *body = malloc(512 * 1024);
    if (!h || !body) {
        s->failed = 1;
        free(body);
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    uint64_t t0 = (uint64_t)time(NULL) * 1000000000ull;
    for (uint64_t seq = 1; !atomic_load(s->stop); seq++) {
        size_t n = encode_request(body, s->index, seq, s->spans, t0 + seq * 1000000000ull);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        long code = 0;
        if (curl_easy_perform(h) != CURLE_OK ||
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK) {
            s->failed = 1;
            break;
        }
        curl_off_t len = 0;
        curl_easy_getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, &len);
        if (code == 200 && len == 0) { /* an empty answer: nothing rejected */
            s->stored += (uint64_t)s->spans;
        } else {
            s->refused += (uint64_t)s->spans;
            if (code != 503) {
                s->failed = 1;
                break;
            }
        }
        s->last_ns = bu_now_ns();
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(body);
    return NULL;
}

/* One OTLP run: spans/s stored, or -1. */
static double run_otlp(const struct opts *o, const char *dir, uint64_t *refused)
{
    struct bu_collector c;
    if (bu_collector_start(&c, dir, "full", 1, NULL) != 0) {
        return -1;
    }
    struct sender s[MAX_SENDERS];
    atomic_int stop = 0;
    uint64_t start = bu_now_ns();
    for (int i = 0; i < o->senders; i++) {
        s[i] = (struct sender){.http = c.http, .index = i, .spans = o->spans, .stop = &stop};
        pthread_create(&s[i].th, NULL, send_main, &s[i]);
    }
    bu_sleep_ns((uint64_t)(o->seconds * 1e9));
    atomic_store(&stop, 1);
    uint64_t stored = 0, last = start;
    int failed = 0;
    for (int i = 0; i < o->senders; i++) {
        pthread_join(s[i].th, NULL);
        stored += s[i].stored;
        *refused += s[i].refused;
        last = s[i].last_ns > last ? s[i].last_ns : last;
        failed |= s[i].failed;
    }
    bu_collector_stop(&c, 0);
    if (failed) {
        fprintf(stderr, "bench otlp: a request failed (see %s/serve.log)\n", dir);
        return -1;
    }
    return (double)stored / ((double)(last - start) / 1e9);
}

struct agent {
    pthread_t th;
    tt_client *c;
    atomic_int *stop;
};

static void *agent_main(void *arg)
{
    struct agent *a = arg;
    while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
        /* Closed loop, as an exporter waiting for its answer: at most 64k events unacked
         * (otherwise the rings absorb seconds of emits and the flush measures the drain). */
        tt_stats ts;
        tt_stats_get(a->c, &ts, sizeof ts);
        if (ts.emitted - ts.acked > 65536) {
            bu_sleep_ns(200000);
            continue;
        }
        for (int k = 0; k < 64; k++) {
            tt_step st;
            if (tt_step_begin(a->c, &st, NULL, TT_STEP_TOOL, "session-0001", "get_weather", NULL) ==
                TT_ENOBUFS) {
                bu_sleep_ns(200000);
                break;
            }
            tt_step_end(a->c, &st, TT_STATUS_OK, -1, NULL);
        }
    }
    return NULL;
}

/* One native run: step pairs/s acknowledged, or -1. */
static double run_native(const struct opts *o, const char *dir)
{
    struct bu_collector c;
    if (bu_collector_start(&c, dir, "full", 0, NULL) != 0) {
        return -1;
    }
    struct agent a[MAX_SENDERS];
    tt_client *cl[MAX_SENDERS];
    atomic_int stop = 0;
    int rc = 0;
    for (int i = 0; i < o->senders && rc == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench-native-%d", i);
        rc = bu_client_open(&cl[i], c.tcp_ep, name, NULL);
    }
    if (rc != 0 || bu_wait_connected(cl, (size_t)o->senders, 10000) != 0) {
        bu_collector_stop(&c, 1);
        return -1;
    }
    uint64_t start = bu_now_ns();
    for (int i = 0; i < o->senders; i++) {
        a[i] = (struct agent){.c = cl[i], .stop = &stop};
        pthread_create(&a[i].th, NULL, agent_main, &a[i]);
    }
    bu_sleep_ns((uint64_t)(o->seconds * 1e9));
    atomic_store(&stop, 1);
    uint64_t acked = 0;
    for (int i = 0; i < o->senders; i++) {
        pthread_join(a[i].th, NULL);
    }
    for (int i = 0; i < o->senders; i++) {
        rc |= tt_flush(cl[i], 60000);
    }
    uint64_t end = bu_now_ns();
    for (int i = 0; i < o->senders; i++) {
        tt_stats st;
        tt_stats_get(cl[i], &st, sizeof st);
        acked += st.acked;
        tt_close(cl[i], 5000);
    }
    bu_collector_stop(&c, 0);
    if (rc != 0) {
        fprintf(stderr, "bench otlp: a native flush timed out\n");
        return -1;
    }
    return (double)acked / 2 / ((double)(end - start) / 1e9);
}

int main(int argc, char **argv)
{
    struct opts o = {0, 5, 4, 512, 3.0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smoke") == 0) {
            o.smoke = 1;
            o.runs = 1;
            o.seconds = 0.5;
            o.senders = 2;
            o.spans = 64;
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            o.runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            o.seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--senders") == 0 && i + 1 < argc) {
            o.senders = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--spans") == 0 && i + 1 < argc) {
            o.spans = atoi(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: otlp [--smoke] [--runs N] [--seconds S] [--senders K] [--spans B]\n");
            return 2;
        }
    }
    if (o.runs < 1 || o.runs > MAX_RUNS || o.senders < 1 || o.senders > MAX_SENDERS ||
        o.spans < 1 || o.spans > 1024 || o.seconds <= 0) {
        fprintf(stderr, "bench otlp: runs 1..15, senders 1..64, spans 1..1024, seconds > 0\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bu_mark_start();
    double ot[MAX_RUNS], nat[MAX_RUNS];
    uint64_t refused = 0;
    for (int r = 0; r < o.runs; r++) {
        char d1[256], d2[256];
        if (bu_tmpdir(d1, sizeof d1, "otlp") != 0 || bu_tmpdir(d2, sizeof d2, "native") != 0) {
            return 1;
        }
        /* Alternate the order, so that neither path always runs on a warmer machine. */
        if (r % 2 == 0) {
            ot[r] = run_otlp(&o, d1, &refused);
            nat[r] = run_native(&o, d2);
        } else {
            nat[r] = run_native(&o, d2);
            ot[r] = run_otlp(&o, d1, &refused);
        }
        if (ot[r] < 0 || nat[r] < 0) {
            return 1;
        }
        bu_rmtree(d1);
        bu_rmtree(d2);
    }
    double mo = bu_median(ot, (size_t)o.runs), mn = bu_median(nat, (size_t)o.runs);
    char note[256];
    snprintf(note, sizeof note,
             "%d senders, %d spans per request, %.1f s, median of %d runs, sync full; %llu spans "
             "answered 503 (retryable)%s",
             o.senders, o.spans, o.seconds, o.runs, (unsigned long long)refused,
             o.smoke ? "; smoke" : "");
    bu_result("otlp", "native_steps_per_s", mn, "steps/s", NULL, 0, note);
    bu_result("otlp", "otlp_spans_per_s", mo, "spans/s",
              "native tt_step_begin/end pairs, same collector build, loopback TCP", mo / mn, note);
    curl_global_cleanup();
    return 0;
}

/*
 * emit.c - per-call latency of telltale's event calls, one contender of the emit benchmark
 * (scripts/bench-emit runs it beside spdlog and LTTng-UST and prints the ratios).
 *
 *   emit --mode log|log_site|log_genai|metric|token|token_text|empty|rdtsc [--endpoint E] [--ring-bytes N] [--max-event-bytes N]
 *        [--wait-connect MS] [harness options]
 *
 * log     tt_log(c, NULL, TT_INFO, "example", {TT_INT a, TT_INT b, TT_DOUBLE x}, 3)
 * log_site  the same event by TT_LOG(c, NULL, TT_INFO, "example", TT_LOG_INT a, TT_LOG_INT b,
 *         TT_LOG_DOUBLE x): the call site's message and keys registered once, values only
 *         written per call
 * log_genai  the same call with the GenAI conventions' keys, 20-26 bytes long
 *         ({TT_STR gen_ai.request.model "llama-3-8b", TT_INT gen_ai.usage.input_tokens a,
 *         TT_INT gen_ai.usage.output_tokens b}): the attributes agents send
 * metric  tt_metric(c, NULL, TT_GAUGE, "example", x, NULL, {TT_INT a, TT_INT b}, 2)
 * token   tt_response_token_logprobs(r, id, lp, 5 top ids and log-probs): the token path by id
 * token_text  the same with each token's text and its alternatives' (tt_response_token_logprobs_
 *         text), texts drawn from 512 distinct words: the token path with text
 *         (one response per thread, open for the whole run: chunks of 64 tokens go to the ring)
 * empty   nothing between the timing brackets: the cost of the measurement itself
 * rdtsc   one bare rdtsc between the brackets: the cost of the hot path's timestamp
 *
 * Built twice: $(BENCH_DIR)/emit, and $(BENCH_DIR)/emit_nots, whose library objects stamp
 * events with a constant instead of reading the TSC (bench/emit_nots.h), so that the emit cost
 * without its timestamp is measured rather than estimated. The harness options and the method
 * are in bench/emit_harness.h; the output is one JSON line with the client's counters added.
 * Before measuring, the program waits up to --wait-connect ms (default 5000) for the worker's
 * connection to the collector; after, it flushes (when connected) before reading the counters.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telltale.h"

#include "emit_harness.h"

#ifdef EMIT_NOTS
/* Read by the no-timestamp build of src/client/emit.c instead of the TSC. */
uint64_t tt__bench_fixed_ticks;
#define SUFFIX "_nots"
#else
#define SUFFIX ""
#endif

static inline int call_log(void *ctx, int64_t a, int64_t b, double x)
{
    tt_attr attrs[3] = {TT_INT("a", a), TT_INT("b", b), TT_DOUBLE("x", x)};
    return tt_log((tt_client *)ctx, NULL, TT_INFO, "example", attrs, 3);
}

static inline int call_log_site(void *ctx, int64_t a, int64_t b, double x)
{
    return TT_LOG((tt_client *)ctx, NULL, TT_INFO, "example", TT_LOG_INT("a", a),
                  TT_LOG_INT("b", b), TT_LOG_DOUBLE("x", x));
}

static inline int call_log_genai(void *ctx, int64_t a, int64_t b, double x)
{
    (void)x;
    tt_attr attrs[3] = {TT_STR("gen_ai.request.model", "llama-3-8b"),
                        TT_INT("gen_ai.usage.input_tokens", a),
                        TT_INT("gen_ai.usage.output_tokens", b)};
    return tt_log((tt_client *)ctx, NULL, TT_INFO, "chat completed", attrs, 3);
}

static inline int call_metric(void *ctx, int64_t a, int64_t b, double x)
{
    tt_attr attrs[2] = {TT_INT("a", a), TT_INT("b", b)};
    return tt_metric((tt_client *)ctx, NULL, TT_GAUGE, "example", x, NULL, attrs, 2);
}

/* One response per measuring thread, begun at its first token. */
static __thread tt_response *thread_response;

static tt_response *response_of(void *ctx)
{
    if (!thread_response) {
        tt_response_begin((tt_client *)ctx, &thread_response, NULL, "bench", NULL, 0);
    }
    return thread_response;
}

static const float top_lp[5] = {-0.1f, -2.6f, -3.2f, -4.0f, -5.1f};

static inline int call_token(void *ctx, int64_t a, int64_t b, double x)
{
    (void)x;
    int32_t id = (int32_t)(a & 32767), ids[5] = {id, id + 1, id + 2, id + 3, id + 4};
    (void)b;
    tt_verdict v;
    return tt_response_token_logprobs(response_of(ctx), id, -0.1f, ids, top_lp, 5, &v, NULL);
}

#ifndef EMIT_NO_TEXT
/* 512 distinct words of 2-9 letters, made once. */
static char words[512][12];
static const char *word_ptr[512];

static void words_init(void)
{
    uint64_t s = 42;
    for (int i = 0; i < 512; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int n = 2 + (int)(s >> 60) % 8;
        words[i][0] = ' ';
        for (int k = 1; k <= n; k++) {
            words[i][k] = (char)('a' + (int)((s >> (4 * k)) % 26));
        }
        words[i][n + 1] = 0;
        word_ptr[i] = words[i];
    }
}

static inline int call_token_text(void *ctx, int64_t a, int64_t b, double x)
{
    (void)x;
    (void)b;
    int32_t id = (int32_t)(a & 32767), ids[5] = {id, id + 1, id + 2, id + 3, id + 4};
    const char *tops[5] = {word_ptr[a & 511], word_ptr[(a + 1) & 511], word_ptr[(a + 2) & 511],
                           word_ptr[(a + 3) & 511], word_ptr[(a + 4) & 511]};
    tt_verdict v;
    return tt_response_token_logprobs_text(response_of(ctx), id, word_ptr[a & 511], -0.1f, ids,
                                           tops, top_lp, 5, &v, NULL);
}
#endif

static inline void call_empty(void *ctx, int64_t a, int64_t b, double x)
{
    (void)ctx;
    (void)a;
    (void)b;
    (void)x;
    __asm__ __volatile__("" ::: "memory");
}

static inline void call_rdtsc(void *ctx, int64_t a, int64_t b, double x)
{
    (void)ctx;
    (void)a;
    (void)b;
    (void)x;
    uint64_t t = __rdtsc();
    __asm__ __volatile__("" ::"r"(t) : "memory");
}

EH_DEFINE_LOOP(loop_log, call_log)
EH_DEFINE_LOOP(loop_log_site, call_log_site)
EH_DEFINE_LOOP(loop_log_genai, call_log_genai)
EH_DEFINE_LOOP(loop_metric, call_metric)
EH_DEFINE_LOOP(loop_token, call_token)
#ifndef EMIT_NO_TEXT
EH_DEFINE_LOOP(loop_token_text, call_token_text)
#endif
EH_DEFINE_LOOP(loop_empty, call_empty)
EH_DEFINE_LOOP(loop_rdtsc, call_rdtsc)

static int set(tt_config *cfg, const char *k, const char *v)
{
    int rc = tt_config_set(cfg, k, v);
    if (rc != 0) {
        fprintf(stderr, "emit: %s=%s: %s\n", k, v, tt_config_error(cfg));
    }
    return rc;
}

/* The client's counters once everything is acknowledged (with a collector), as JSON fields
 * appended to the result line. */
static void client_extra(void *ctx, char *out, size_t n)
{
    tt_client *c = (tt_client *)ctx;
    tt_stats s;
    tt_stats_get(c, &s, sizeof s);
    int frc = s.connected ? tt_flush(c, 10000) : TT_ECONNREFUSED;
    tt_stats_get(c, &s, sizeof s);
    snprintf(out, n,
             ",\"flush\":\"%s\",\"emitted\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"dropped\":%" PRIu64
             ",\"dropped_buffer_full\":%" PRIu64 ",\"frames_sent\":%" PRIu64
             ",\"connected\":%" PRIu64,
             frc == 0 ? "ok" : tt_strerror(frc), s.emitted, s.acked, s.dropped_total,
             s.dropped[TT_DROP_BUFFER_FULL], s.frames_sent, s.connected);
}

/* Waits up to timeout_ms for the worker's connection, so that the measurement does not start
 * while it is being made. Returns 1 when connected. */
static int wait_connected(tt_client *c, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        tt_stats s;
        tt_stats_get(c, &s, sizeof s);
        if (s.connected) {
            return 1;
        }
        eh_sleep_us(10000);
    }
    return 0;
}

int main(int argc, char **argv)
{
    eh_opts o;
    eh_defaults(&o);
    const char *mode = "log", *endpoint = NULL, *ring = NULL, *max_event = NULL;
    int wait_ms = 5000;
    for (int i = 1; i < argc; i += 2) {
        int r = i + 1 < argc ? eh_option(&o, argv[i], argv[i + 1]) : 0;
        if (r < 0) {
            return 2;
        } else if (r > 0) {
            continue;
        } else if (i + 1 < argc && strcmp(argv[i], "--mode") == 0) {
            mode = argv[i + 1];
        } else if (i + 1 < argc && strcmp(argv[i], "--endpoint") == 0) {
            endpoint = argv[i + 1];
        } else if (i + 1 < argc && strcmp(argv[i], "--ring-bytes") == 0) {
            ring = argv[i + 1];
        } else if (i + 1 < argc && strcmp(argv[i], "--max-event-bytes") == 0) {
            max_event = argv[i + 1];
        } else if (i + 1 < argc && strcmp(argv[i], "--wait-connect") == 0 &&
                   eh_parse_int(argv[i + 1], 0, 600000, &wait_ms) == 0) {
            continue;
        } else {
            fprintf(stderr,
                    "usage: emit --mode log|log_site|log_genai|metric|token|token_text|empty|rdtsc "
                    "[--endpoint E] "
                    "[--ring-bytes N] [--max-event-bytes N] [--wait-connect MS] " EH_USAGE "\n");
            return 2;
        }
    }
#ifdef EMIT_NOTS
    tt__bench_fixed_ticks = __rdtsc();
#endif
    void *(*body)(void *);
    static char name[64];
    snprintf(name, sizeof name, "tt_%s%s", mode, SUFFIX);
    o.contender = name;
    if (strcmp(mode, "empty") == 0 || strcmp(mode, "rdtsc") == 0) {
        o.contender = mode;
        return eh_run(&o, strcmp(mode, "empty") == 0 ? loop_empty : loop_rdtsc, NULL, NULL) ? 1 : 0;
    } else if (strcmp(mode, "log") == 0) {
        body = loop_log;
    } else if (strcmp(mode, "log_site") == 0) {
        body = loop_log_site;
    } else if (strcmp(mode, "log_genai") == 0) {
        body = loop_log_genai;
    } else if (strcmp(mode, "metric") == 0) {
        body = loop_metric;
    } else if (strcmp(mode, "token") == 0) {
        body = loop_token;
#ifndef EMIT_NO_TEXT
    } else if (strcmp(mode, "token_text") == 0) {
        words_init();
        body = loop_token_text;
#endif
    } else {
        fprintf(stderr, "emit: unknown mode %s\n", mode);
        return 2;
    }
    tt_config *cfg = NULL;
    tt_client *c = NULL;
    if (tt_config_new(&cfg) != 0 || set(cfg, "agent", "bench-emit") != 0 ||
        (endpoint && set(cfg, "endpoint", endpoint) != 0) ||
        (max_event && set(cfg, "max_event_bytes", max_event) != 0) ||
        (ring && set(cfg, "ring_bytes", ring) != 0)) {
        return 1;
    }
    int rc = tt_open(&c, cfg);
    tt_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "emit: tt_open: %s\n", tt_strerror(rc));
        return 1;
    }
    if (wait_ms > 0 && !wait_connected(c, wait_ms)) {
        fprintf(stderr, "emit: not connected after %d ms; measuring anyway\n", wait_ms);
    }
    rc = eh_run(&o, body, c, client_extra);
    tt_close(c, 5000);
    return rc ? 1 : 0;
}

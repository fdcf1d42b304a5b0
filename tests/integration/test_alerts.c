/*
 * test_alerts.c - the detectors against a real `telltale serve`: a 1-sigma fall of an agent's
 * response confidence raises a drift alert on the live stream and at a webhook (which fails
 * once first, so the retry is exercised); a silent agent, a looping agent and failing tool
 * calls raise theirs, so does a hole in the sequence numbers; a steady agent raises none; a hanging webhook delays nothing; and ingest
 * tokens decide an agent's identity.
 */
#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "batches.h"
#include "common/pb.h"
#include "common/wire.h"
#include "operator.h"
#include "serve.h"
#include "test.h"

/* A Gaussian sample from a fixed-seed generator (Box-Muller). */
static double gauss(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((double)(*state >> 11) + 0.5) / 9007199254740992.0;
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = ((double)(*state >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

TEST_T(alerts_confidence_shift_raises_drift_alert_on_stream_and_webhook, 120)
{
    struct tt_test_hook *hook = tt_test_hook_start(1);
    char cfg[512], text[2048];
    snprintf(cfg, sizeof cfg, "%s/drift.conf", tt_test_tmpdir());
    snprintf(text, sizeof text,
             "# confidence drift, CUSUM after a 200-response baseline\n"
             "[detector.conf_drift]\ntype = drift\nsignal = confidence\nalgorithm = cusum\n"
             "warmup = 200\nseverity = critical\n\n"
             "[webhook.test]\nurl = http://127.0.0.1:%d/hook\ntimeout_ms = 2000\nretries = 3\n"
             "backoff_ms = 50\n",
             tt_test_hook_port(hook));
    tt_test_write_file(cfg, text);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "drift", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, NULL, NULL);
    tt_client *c = tt_test_client(s.endpoint, "drifty", "flush_interval_ms=5", NULL);
    uint64_t rng = 12345;
    const double mean = 0.8, sigma = 0.04;
    /* The baseline and a steady stretch: no alarm. */
    for (int i = 0; i < 600; i++) {
        CHECK_OK(tt_test_emit_response(c, "s1", mean + sigma * gauss(&rng)));
    }
    CHECK_OK(tt_flush(c, 10000));
    int from = 0;
    char *early = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 300);
    CHECK_MSG(early == NULL, "alert before the shift: %s", early ? early : "");
    /* The shift: one sigma down, at 100 responses a second, until the stream shows the alert. */
    double t_shift = tt_test_now_ms();
    char *alert = NULL;
    int sent = 0;
    for (; sent < 500 && !alert; sent++) {
        CHECK_OK(tt_test_emit_response(c, "s1", mean - sigma + sigma * gauss(&rng)));
        alert = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 10);
    }
    for (int k = 0; k < 100 && !alert; k++) {
        alert = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 50);
    }
    double dt = tt_test_now_ms() - t_shift;
    CHECK_MSG(alert != NULL, "no drift alert after %d shifted responses", sent);
    CHECK(strstr(alert, "\"type\":\"drift\"") != NULL);
    CHECK(strstr(alert, "\"detector\":\"conf_drift\"") != NULL);
    CHECK(strstr(alert, "\"agent\":\"drifty\"") != NULL);
    CHECK(strstr(alert, "\"severity\":\"critical\"") != NULL);
    CHECK(strstr(alert, "\"session\":\"s1\"") != NULL);
    /* CUSUM with h = 12 detects a 1-sigma shift in about 24 samples: well under 200. */
    CHECK_MSG(sent < 200, "detected only after %d shifted responses", sent);
    printf("drift alert %.0f ms after the shift, %d shifted responses\n", dt, sent);
    /* The webhook got the same alert, after one failed attempt. */
    char *id = strstr(alert, "\"id\":");
    CHECK(id != NULL);
    char needle[64];
    snprintf(needle, sizeof needle, "\"id\":%lld,", strtoll(id + 5, NULL, 10));
    char *posted = tt_test_hook_wait(hook, needle, 10000 * tt_test_mult());
    CHECK_MSG(posted != NULL, "the webhook did not receive %s", needle);
    CHECK(strstr(posted, "\"type\":\"drift\"") != NULL);
    CHECK(tt_test_hook_requests(hook) >= 2);
    /* Listed, acknowledged, counted. */
    char *body, path[128];
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/alerts?state=open", NULL, &body), 200);
    CHECK(strstr(body, needle) != NULL);
    free(body);
    snprintf(path, sizeof path, "/api/v1/alerts/%lld/ack", strtoll(id + 5, NULL, 10));
    CHECK_EQ(tt_test_http_auth(s.http, "POST", path, s.token, &body), 200);
    CHECK(strstr(body, "\"state\":\"acked\"") != NULL);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/alerts?state=open", NULL, &body), 200);
    CHECK(strstr(body, needle) == NULL);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &body), 200);
    CHECK(strstr(body, "telltale_agent_alerts_total{agent=\"drifty\",detector=\"conf_drift\"} 1") !=
          NULL);
    CHECK(strstr(body, "telltale_webhook_deliveries_total{result=\"sent\"} 1") != NULL);
    CHECK(strstr(body, "telltale_webhook_retries_total 1") != NULL);
    free(body);
    free(posted);
    free(alert);
    tt_close(c, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
    tt_test_hook_stop(hook);
}

TEST_T(alerts_silent_agent_raises_one_silence_alert, 60)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/silence.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.quiet]\ntype = silence\nseconds = 1\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "silence", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "agent=quiet-one", NULL);
    tt_client *c = tt_test_client(s.endpoint, "quiet-one", NULL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "one event, then nothing", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    double t0 = tt_test_now_ms();
    int from = 0;
    char *alert = tt_test_sse_wait(sse, "\"type\":\"silence\"", &from, 10000 * tt_test_mult());
    double dt = tt_test_now_ms() - t0;
    CHECK_MSG(alert != NULL, "no silence alert");
    CHECK(strstr(alert, "\"agent\":\"quiet-one\"") != NULL);
    CHECK_MSG(dt >= 900, "silence alert after %.0f ms, before the 1 s limit", dt);
    /* One alert per silence, not one per tick. */
    usleep(1000000);
    CHECK_EQ(tt_test_sse_count(sse, "\"type\":\"silence\""), 1);
    free(alert);
    tt_close(c, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

static void call_tool(tt_client *c, const char *name, const char *query)
{
    tt_step st;
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "loop-session", name, query));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 10, NULL));
}

TEST_T(alerts_looping_agent_raises_loop_alert_and_varied_agent_none, 60)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/loop.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.looping]\ntype = loop\nrepeats = 5\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "loop", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, NULL, NULL);
    struct tt_test_sse *only = tt_test_sse_open(s.http, "kind=alert", NULL);
    tt_client *varied = tt_test_client(s.endpoint, "varied", NULL);
    tt_client *looper = tt_test_client(s.endpoint, "looper", NULL);
    for (int i = 0; i < 20; i++) {
        call_tool(varied, "search", i % 2 ? "weather paris" : "weather rome");
    }
    for (int i = 0; i < 4; i++) {
        call_tool(looper, "search", "weather paris");
    }
    CHECK_OK(tt_flush(varied, 10000));
    CHECK_OK(tt_flush(looper, 10000));
    int from = 0;
    char *none = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 300);
    CHECK_MSG(none == NULL, "alert before the fifth identical call: %s", none ? none : "");
    call_tool(looper, "search", "weather paris");
    CHECK_OK(tt_flush(looper, 10000));
    char *alert = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(alert != NULL, "no loop alert");
    CHECK(strstr(alert, "\"type\":\"loop\"") != NULL);
    CHECK(strstr(alert, "\"agent\":\"looper\"") != NULL);
    CHECK(strstr(alert, "weather paris") != NULL);
    CHECK_EQ(tt_test_sse_count(sse, "\"kind\":\"alert\""), 1);
    /* kind=alert: the alert and nothing else. */
    int from2 = 0;
    char *again = tt_test_sse_wait(only, "\"type\":\"loop\"", &from2, 5000 * tt_test_mult());
    CHECK(again != NULL);
    free(again);
    CHECK_EQ(tt_test_sse_count(only, "\"kind\""), 1);
    tt_test_sse_close(only);
    free(alert);
    tt_close(varied, 5000);
    tt_close(looper, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

TEST_T(alerts_ingest_token_decides_identity_and_refuses_unknown_tokens, 60)
{
    char toks[512];
    snprintf(toks, sizeof toks, "%s/ingest.tokens", tt_test_tmpdir());
    tt_test_write_file(toks, "# agent token\nalice tok-alice-1\nbob tok-bob-2\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "ingesttok", "--ingest-tokens", toks, NULL);
    /* The hello says "mallory"; the token says alice: alice it is. */
    tt_client *c = tt_test_client(s.endpoint, "mallory", "token=tok-alice-1", NULL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "from alice's token", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    tt_client *bad = tt_test_client(s.endpoint, "eve", "token=tok-alice-2", NULL);
    CHECK_OK(tt_log(bad, NULL, TT_INFO, "never stored", NULL, 0));
    CHECK(tt_flush(bad, 1500) != 0);
    tt_client *none = tt_test_client(s.endpoint, "nobody", NULL);
    CHECK_OK(tt_log(none, NULL, TT_INFO, "never stored", NULL, 0));
    CHECK(tt_flush(none, 1500) != 0);
    char *body;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    CHECK(strstr(body, "\"name\":\"alice\"") != NULL);
    CHECK(strstr(body, "\"name\":\"mallory\"") == NULL);
    CHECK(strstr(body, "\"name\":\"eve\"") == NULL);
    CHECK(strstr(body, "\"name\":\"nobody\"") == NULL);
    free(body);
    CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &body), 200);
    CHECK(strstr(body, "telltale_rejected_total{reason=\"auth\"} 0") == NULL);
    free(body);
    tt_close(c, 5000);
    tt_close(bad, 100);
    tt_close(none, 100);
    tt_test_serve_stop(&s);
}

TEST_T(alerts_hanging_webhook_never_delays_the_stream_and_is_counted_failed, 60)
{
    /* A listener that never accepts: connections complete in the kernel, requests are never
     * answered, so every attempt runs into its timeout. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(fd, 64) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    char cfg[512], text[1024];
    snprintf(cfg, sizeof cfg, "%s/hang.conf", tt_test_tmpdir());
    snprintf(text, sizeof text,
             "[detector.looping]\ntype = loop\nrepeats = 3\n"
             "[webhook.slow]\nurl = http://127.0.0.1:%d/hook\ntimeout_ms = 300\nretries = 1\n"
             "backoff_ms = 50\n",
             ntohs(a.sin_port));
    tt_test_write_file(cfg, text);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "hang", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "kind=alert", NULL);
    tt_client *c[3];
    double t0 = tt_test_now_ms();
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "looper-%d", k);
        c[k] = tt_test_client(s.endpoint, name, NULL);
        for (int i = 0; i < 3; i++) {
            call_tool(c[k], "search", "same");
        }
        CHECK_OK(tt_flush(c[k], 10000));
    }
    /* All three alerts stream at once, though each webhook delivery takes 650 ms to fail. */
    int from = 0;
    for (int k = 0; k < 3; k++) {
        char *al = tt_test_sse_wait(sse, "\"type\":\"loop\"", &from, 5000 * tt_test_mult());
        CHECK_MSG(al != NULL, "alert %d missing", k);
        free(al);
    }
    double dt = tt_test_now_ms() - t0;
    CHECK_MSG(dt < 1500 * tt_test_mult(), "three alerts took %.0f ms to stream", dt);
    /* Ingest goes on meanwhile. */
    CHECK_OK(tt_log(c[0], NULL, TT_INFO, "still stored", NULL, 0));
    CHECK_OK(tt_flush(c[0], 2000));
    char *body = NULL;
    int failed = 0;
    for (int i = 0; i < 200 && !failed; i++) {
        free(body);
        CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &body), 200);
        failed = strstr(body, "telltale_webhook_deliveries_total{result=\"failed\"} 3") != NULL;
        usleep(50000);
    }
    CHECK_MSG(failed, "webhook failures not counted: %s", body);
    CHECK(strstr(body, "telltale_webhook_retries_total 3") != NULL);
    free(body);
    for (int k = 0; k < 3; k++) {
        tt_close(c[k], 5000);
    }
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
    close(fd);
}

TEST_T(alerts_failing_tool_calls_raise_error_rate_alert, 60)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/errors.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.tool_errors]\ntype = error_rate\nwindow = 10\n"
                            "min_calls = 5\nmax_rate = 0.5\nseverity = critical\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "errors", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "kind=alert", NULL);
    tt_client *c = tt_test_client(s.endpoint, "flaky", NULL);
    /* Half failing: at the rate, not above it. */
    for (int i = 0; i < 10; i++) {
        tt_step st;
        CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "e", "fetch", i % 2 ? "a" : "b"));
        CHECK_OK(tt_step_end(c, &st, i % 2 ? TT_STATUS_ERROR : TT_STATUS_OK, 0, NULL));
    }
    CHECK_OK(tt_flush(c, 10000));
    int from = 0;
    char *none = tt_test_sse_wait(sse, "\"kind\":\"alert\"", &from, 300);
    CHECK_MSG(none == NULL, "alert at a 50 %% failure rate: %s", none ? none : "");
    /* Three failures more: the window's 10 calls now hold 6 or 7 failures, above half. */
    for (int i = 0; i < 3; i++) {
        tt_step st;
        CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "e", "fetch", "c"));
        CHECK_OK(tt_step_end(c, &st, TT_STATUS_TIMEOUT, 0, "timed out"));
    }
    CHECK_OK(tt_flush(c, 10000));
    char *alert = tt_test_sse_wait(sse, "\"type\":\"error_rate\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(alert != NULL, "no error-rate alert");
    CHECK(strstr(alert, "\"agent\":\"flaky\"") != NULL);
    CHECK(strstr(alert, "\"severity\":\"critical\"") != NULL);
    CHECK(strstr(alert, "of the last 10 tool calls failed") != NULL);
    free(alert);
    tt_close(c, 5000);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

/* One Batch payload: instance, first_seq, one log event. */
static void batch_payload(tt__buf *out, const uint8_t inst[16], uint64_t first_seq)
{
    tt_test_batch_payload(out, inst, first_seq, 1);
}

/* Read frames until one of type want arrives (fails the test on close or timeout). */
static void read_frame(int fd, uint8_t want)
{
    uint8_t buf[4096];
    size_t n = 0;
    for (;;) {
        tt__frame f;
        size_t need;
        int rc = tt__frame_parse(buf, n, sizeof buf, &f, &need);
        if (rc == TT_FRAME_OK) {
            CHECK_MSG(f.type == want, "frame type %u, expected %u", f.type, want);
            return;
        }
        CHECK(rc == TT_FRAME_NEED_MORE);
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        CHECK_MSG(k > 0, "the collector closed the connection");
        n += (size_t)k;
    }
}

TEST_T(alerts_sequence_gap_raises_loss_alert, 60)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/gap.conf", tt_test_tmpdir());
    tt_test_write_file(cfg, "[detector.loss]\ntype = gap\nmin_events = 5\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "gap", "--config", cfg, NULL);
    struct tt_test_sse *sse = tt_test_sse_open(s.http, "kind=alert", NULL);
    /* A hand-made agent: hello, then batches with seq 1, 2, then 4 (a gap of 1, below the
     * limit), then 12 (a gap of 7). */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    CHECK(strlen(s.sock) < sizeof un.sun_path);
    memcpy(un.sun_path, s.sock, strlen(s.sock) + 1);
    CHECK(connect(fd, (struct sockaddr *)&un, sizeof un) == 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memcpy(h.instance, "gap-instance-123", 16);
    snprintf(h.agent, sizeof h.agent, "gappy");
    snprintf(h.library, sizeof h.library, "test");
    tt__buf payload, frame;
    tt__buf_init(&payload, 1 << 16);
    tt__buf_init(&frame, 1 << 16);
    CHECK_OK(tt__hello_encode(&h, &payload));
    CHECK_OK(tt__frame_append(&frame, TT_FT_HELLO, payload.data, payload.len));
    CHECK(write(fd, frame.data, frame.len) == (ssize_t)frame.len);
    read_frame(fd, TT_FT_HELLO_REPLY);
    static const uint64_t seqs[] = {1, 2, 4, 12};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        batch_payload(&payload, h.instance, seqs[i]);
        tt__buf_reset(&frame);
        CHECK_OK(tt__frame_append(&frame, TT_FT_BATCH, payload.data, payload.len));
        CHECK(write(fd, frame.data, frame.len) == (ssize_t)frame.len);
        read_frame(fd, TT_FT_ACK);
    }
    int from = 0;
    char *alert = tt_test_sse_wait(sse, "\"type\":\"gap\"", &from, 10000 * tt_test_mult());
    CHECK_MSG(alert != NULL, "no loss alert");
    CHECK(strstr(alert, "\"agent\":\"gappy\"") != NULL);
    CHECK_MSG(strstr(alert, "7 events never received (seq 5..11)") != NULL, "%s", alert);
    usleep(200000);
    CHECK_EQ(tt_test_sse_count(sse, "\"type\":\"gap\""), 1); /* the gap of 1 stayed quiet */
    char *body;
    CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &body), 200);
    CHECK(strstr(body, "telltale_agent_loss_events_total{agent=\"gappy\",source=\"gap\"} 8") !=
          NULL);
    free(body);
    free(alert);
    close(fd);
    tt__buf_fini(&payload);
    tt__buf_fini(&frame);
    tt_test_sse_close(sse);
    tt_test_serve_stop(&s);
}

/* Signed webhooks (docs/detectors.md, "Webhook signatures"): a receiver holding the secret
 * accepts the post; one holding another secret refuses it (401, counted failed); a changed body
 * or an old timestamp does not verify; and a plain http:// URL off this machine is refused at
 * startup. */
TEST_T(alerts_webhook_is_signed_and_a_real_receiver_checks_the_signature, 60)
{
    const char *secret = "webhook-secret-5d1f0c";
    struct tt_test_hook *good = tt_test_hook_start_signed(0, secret);
    struct tt_test_hook *other = tt_test_hook_start_signed(0, "another-secret");
    char cfg[512], key[512], text[2048];
    snprintf(key, sizeof key, "%s/hook.secret", tt_test_tmpdir());
    char line[300];
    snprintf(line, sizeof line, "%s\n", secret);
    tt_test_write_file(key, line);
    snprintf(cfg, sizeof cfg, "%s/signed.conf", tt_test_tmpdir());
    snprintf(text, sizeof text,
             "[detector.looping]\ntype = loop\nrepeats = 3\n"
             "[webhook.good]\nurl = http://127.0.0.1:%d/hook\nsecret_file = %s\nretries = 0\n"
             "[webhook.other]\nurl = http://127.0.0.1:%d/hook\nsecret_file = %s\nretries = 0\n",
             tt_test_hook_port(good), key, tt_test_hook_port(other), key);
    tt_test_write_file(cfg, text);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "signed", "--config", cfg, NULL);
    tt_client *c = tt_test_client(s.endpoint, "signed-looper", NULL);
    for (int i = 0; i < 3; i++) {
        call_tool(c, "search", "same");
    }
    CHECK_OK(tt_flush(c, 10000));
    char *posted = tt_test_hook_wait(good, "signed-looper", 10000 * tt_test_mult());
    CHECK_MSG(posted != NULL, "the signed webhook did not arrive");
    int valid = 0, invalid = 0;
    tt_test_hook_signatures(good, &valid, &invalid);
    CHECK_EQ(valid, 1);
    CHECK_EQ(invalid, 0);
    for (int i = 0; i < 500 && tt_test_hook_requests(other) == 0; i++) {
        usleep(10000);
    }
    tt_test_hook_signatures(other, &valid, &invalid);
    CHECK_EQ(valid, 0);
    CHECK_EQ(invalid, 1);
    /* The check itself: the body and the timestamp are both covered. */
    char ts[32], sig[80] = "v1=";
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    size_t tl = strlen(ts), bl = strlen(posted);
    char *msg = malloc(tl + 1 + bl);
    CHECK(msg != NULL);
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, posted, bl);
    unsigned char mac[32];
    CHECK_OK(gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, strlen(secret), msg, tl + 1 + bl, mac));
    free(msg);
    for (int i = 0; i < 32; i++) {
        snprintf(sig + 3 + 2 * i, 3, "%02x", mac[i]);
    }
    CHECK(tt_test_hook_verify(secret, ts, sig, posted, bl));
    posted[0] = '[';
    CHECK(!tt_test_hook_verify(secret, ts, sig, posted, bl));
    posted[0] = '{';
    char old[32];
    snprintf(old, sizeof old, "%lld", (long long)time(NULL) - 3600);
    CHECK(!tt_test_hook_verify(secret, old, sig, posted, bl));
    free(posted);
    char *body = NULL;
    for (int i = 0; i < 200; i++) {
        free(body);
        CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &body), 200);
        if (strstr(body, "telltale_webhook_deliveries_total{result=\"failed\"} 1")) {
            break;
        }
        usleep(20000);
    }
    CHECK_MSG(strstr(body, "telltale_webhook_deliveries_total{result=\"sent\"} 1") != NULL &&
                  strstr(body, "telltale_webhook_deliveries_total{result=\"failed\"} 1") != NULL,
              "%s", body);
    free(body);
    tt_close(c, 10000);
    tt_test_serve_stop(&s);
    tt_test_hook_stop(good);
    tt_test_hook_stop(other);

    /* Plain http:// to another machine, or a secret file others may read: refused at start. */
    char out[4096], cmd[2048];
    const char *bad[] = {"[webhook.far]\nurl = http://example.com/hook\n", NULL};
    tt_test_write_file(cfg, bad[0]);
    snprintf(cmd, sizeof cmd, "'%s' serve --data '%s/bad' --no-http --config '%s' 2>&1",
             getenv("TT_BIN") ? getenv("TT_BIN") : "build/telltale", tt_test_tmpdir(), cfg);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    CHECK_EQ(WEXITSTATUS(pclose(p)), 1);
    CHECK_MSG(strstr(out, "https://") != NULL, "%s", out);
    snprintf(text, sizeof text,
             "[webhook.loose]\nurl = https://example.com/hook\nsecret_file = %s\n", key);
    tt_test_write_file(cfg, text);
    CHECK_OK(chmod(key, 0644));
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    CHECK_EQ(WEXITSTATUS(pclose(p)), 1);
    CHECK_MSG(strstr(out, "chmod 600") != NULL, "%s", out);
}

/* S26, detector isolation: units that cost far more than their budget (16 `spike` units with a
 * window of 1024 each, against a budget of 1 ms per batch plus 1 us per event) never hold
 * ingest: every event is acknowledged and stored once, the signals the units could not look at
 * are counted in /metrics and for the agent in the agents API (the same figure), and the units
 * did look at the first signals of each batch. */
TEST_T(alerts_detectors_over_their_budget_skip_signals_counted_and_ingest_goes_on, 120)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/budget.conf", tt_test_tmpdir());
    tt__buf text;
    tt__buf_init(&text, 1u << 20);
    tt__buf_printf(&text, "[monitor]\nbatch_budget_ms = 1\nsignal_budget_us = 1\n");
    for (int i = 0; i < 16; i++) {
        tt__buf_printf(&text,
                       "[detector.wide%d]\ntype = spike\nsignal = metric:lat\nwindow = 1024\n"
                       "min_samples = 3\ndirection = both\nsigmas = 1000000\n",
                       i);
    }
    CHECK_OK(tt__buf_append(&text, "", 1));
    tt_test_write_file(cfg, (const char *)text.data);
    tt__buf_fini(&text);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "budget", "--config", cfg, NULL);
    /* The log outlives runs of the test: count what this run adds. */
    const char *line = "detectors: over their time budget";
    uint64_t lines_before = tt_test_count_lines(s.log, line);
    tt_client *c = tt_test_client(s.endpoint, "costly", NULL);
    uint64_t state = 7;
    const int n = 40000;
    for (int i = 0; i < n; i++) {
        CHECK_OK(tt_metric(c, NULL, TT_GAUGE, "lat", 100 + 10 * gauss(&state), "ms", NULL, 0));
        if (i % 2000 == 1999) { /* within the ring, however slowly the collector goes */
            CHECK_OK(tt_flush(c, (uint32_t)(30000 * tt_test_mult())));
        }
    }
    CHECK_OK(tt_flush(c, (uint32_t)(30000 * tt_test_mult())));
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    uint8_t inst[16];
    tt_instance_id(c, inst);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_EQ_U64(sc.events, (uint64_t)n);
    CHECK_EQ_U64(sc.overlaps, 0);
    tt_test_check_conservation(&st, &sc);
    /* The figures: /metrics and the agent's view agree; some signals were checked. */
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &body), 200);
    const char *p = strstr(body, "\ntelltale_detector_unchecked_total ");
    const char *q = strstr(body, "\ntelltale_detector_over_budget_total ");
    CHECK_MSG(p && q, "no budget figures in /metrics");
    unsigned long long unchecked =
        strtoull(p + strlen("\ntelltale_detector_unchecked_total "), NULL, 10);
    unsigned long long over =
        strtoull(q + strlen("\ntelltale_detector_over_budget_total "), NULL, 10);
    free(body);
    printf("%llu batches over budget, %llu of %d signals not checked\n", over, unchecked, n);
    CHECK_MSG(over >= 1 && unchecked > 0, "over %llu unchecked %llu", over, unchecked);
    CHECK_MSG(unchecked < (unsigned long long)n, "no signal was checked (%llu)", unchecked);
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    p = strstr(body, "\"signals_unchecked\":");
    CHECK_MSG(p != NULL, "%s", body);
    CHECK_EQ_U64(strtoull(p + strlen("\"signals_unchecked\":"), NULL, 10), unchecked);
    free(body);
    /* One log line for the episode, not one per batch. */
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    CHECK_EQ_U64(tt_test_count_lines(s.log, line) - lines_before, 1);
}

/*
 * dashboard_feeder.c - the agent of the dashboard's browser test (tests/browser): a small
 * agent on the public API that streams, in sessions "feed-1".."feed-3", a reasoning step with a
 * tool call under it (with its query), logs and a latency metric, plus hostile strings: a log
 * whose message is <script>alert(1)</script> and a tool query with HTML and ANSI codes, in
 * session "feed-hostile", with a response of uniform rows (confidence 1/64) there that the
 * collector's low_confidence detector turns into an alert. Each turn also streams a response of 24 tokens from logits rows
 * (some tokens unsure, so that the shading varies), with a guard that flags a token whose
 * p(chosen) is below 0.2.
 *
 *   dashboard_feeder ENDPOINT AGENT SECONDS [stay]
 *
 * Prints "halted SESSION" and exits 0 when the collector halts one of its sessions (the
 * agent stops: nothing more is sent), or exits 0 after SECONDS. With "stay" it keeps running
 * instead, as an agent waiting for the operator: a halted session's turns are skipped (no step,
 * no log) except for a one-token probe response, until a probe passes: then it prints "resumed
 * SESSION" and that session's turns go on. Exit status 1: it could not connect.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "telltale.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#define VOCAB 64
#define TOKENS 24

/* A response (flat: every row uniform, p = 1/VOCAB, which the collector's low_confidence
 * detector reports as an alert): returns 1 if the collector halted the session (TT_HALT). */
static int respond(tt_client *c, const char *session, long n, int flat, int tokens)
{
    tt_response *r;
    tt_attr params[] = {TT_DOUBLE("temperature", 0.7)};
    if (tt_response_begin(c, &r, session, "feeder-model", params, 1) != 0) {
        return 0;
    }
    float row[VOCAB];
    int halted = 0;
    for (int t = 0; t < tokens && !halted; t++) {
        /* A peaked row most of the time, a flat one every seventh token. */
        int32_t chosen = (int32_t)((n * 7 + t * 13) % VOCAB);
        float peak = (t + n) % 7 == 0 ? 0.3f : 2.0f + (float)((t * 5 + n) % 6);
        for (int v = 0; v < VOCAB; v++) {
            row[v] = (float)((v * 31 + t) % 11) * 0.05f;
        }
        row[chosen] += peak;
        if (flat) {
            for (int v = 0; v < VOCAB; v++) {
                row[v] = 0;
            }
        }
        tt_verdict verdict = TT_PASS;
        /* Each token's text beside its id: a word per id (the console shows the words). */
        char word[16];
        snprintf(word, sizeof word, "%sw%d", t ? " " : "", (int)chosen);
        tt_response_token_text(r, row, VOCAB, 1, TT_DTYPE_F32, chosen, word, &verdict, NULL);
        halted = verdict == TT_HALT;
    }
    tt_response_summary sum;
    tt_response_end(r, &sum);
    return halted || sum.verdict == TT_HALT;
}

static void hostile(tt_client *c)
{
    const char *s = "feed-hostile";
    tt_log(c, s, TT_WARN, "<script>alert(1)</script>", NULL, 0);
    tt_step plan, tool;
    tt_step_begin(c, &plan, NULL, TT_STEP_REASONING, s, "plan", "pick a tool");
    tt_step_begin(c, &tool, &plan, TT_STEP_TOOL, s, "<b>html_tool</b>",
                  "<img src=x onerror=alert(2)>\x1b[31mRED\x1b[0m SELECT 1");
    sleep_ms(2);
    tt_step_end(c, &tool, TT_STATUS_OK, 12, NULL);
    tt_step_end(c, &plan, TT_STATUS_OK, 0, NULL);
    respond(c, s, 0, 1, TOKENS);
}

static void turn(tt_client *c, const char *session, long n)
{
    static const char *const tools[] = {"sql", "search", "calculator"};
    static const char *const queries[] = {"SELECT name FROM products WHERE stock > 0 LIMIT 5",
                                          "weather in Lyon tomorrow", "17 * 23 + 4"};
    int k = (int)(n % 3);
    tt_step plan, tool;
    tt_step_begin(c, &plan, NULL, TT_STEP_REASONING, session, "plan", "decide which tool to use");
    tt_step_begin(c, &tool, &plan, TT_STEP_TOOL, session, tools[k], queries[k]);
    sleep_ms(1 + n % 5);
    int failed = n % 17 == 0;
    tt_step_end(c, &tool, failed ? TT_STATUS_ERROR : TT_STATUS_OK, failed ? -1 : 100,
                failed ? "tool timed out" : NULL);
    tt_step_end(c, &plan, TT_STATUS_OK, 0, NULL);
    tt_attr a[] = {TT_STR("tool", tools[k]), TT_INT("turn", n)};
    tt_log(c, session, TT_INFO, "tool call done", a, 2);
    tt_metric(c, session, TT_HISTOGRAM, "tool.latency", 1.0 + (double)(n % 5), "ms", a, 1);
}

int main(int argc, char **argv)
{
    int stay = argc == 5 && strcmp(argv[4], "stay") == 0;
    if (argc != 4 && !stay) {
        fprintf(stderr, "usage: dashboard_feeder ENDPOINT AGENT SECONDS [stay]\n");
        return 2;
    }
    tt_config *cfg;
    tt_client *c;
    if (tt_config_new(&cfg) || tt_config_set(cfg, "endpoint", argv[1]) ||
        tt_config_set(cfg, "agent", argv[2]) || tt_config_set(cfg, "guard.token_min_prob", "0.2") ||
        tt_config_set(cfg, "guard.action", "flag") || tt_open(&c, cfg)) {
        fprintf(stderr, "dashboard_feeder: cannot open a client on %s\n", argv[1]);
        return 1;
    }
    tt_config_free(cfg);
    double end = now_s() + strtod(argv[3], NULL);
    hostile(c);
    char held[32] = ""; /* stay: the halted session, waiting for a resume */
    for (long n = 1; now_s() < end; n++) {
        char session[32];
        snprintf(session, sizeof session, "feed-%ld", 1 + n % 3);
        if (held[0] && strcmp(session, held) == 0) {
            if (!respond(c, session, n, 0, 1)) { /* the probe passed: resumed */
                printf("resumed %s\n", session);
                fflush(stdout);
                held[0] = 0;
            }
            sleep_ms(20);
            continue;
        }
        turn(c, session, n);
        if (respond(c, session, n, 0, TOKENS)) {
            tt_log(c, session, TT_WARN, "halted by the operator: stopping", NULL, 0);
            printf("halted %s\n", session);
            fflush(stdout);
            if (!stay) {
                break;
            }
            snprintf(held, sizeof held, "%s", session);
        }
        if (n % 10 == 0) {
            hostile(c);
        }
        sleep_ms(20);
    }
    tt_close(c, 5000);
    return 0;
}

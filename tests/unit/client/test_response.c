/*
 * test_response.c - responses and the guard without a collector: every summary statistic and
 * guard rule against a double-precision reference, the policy from config keys and at run
 * time, control orders (halt of a session, of every session, a pushed policy) as the worker
 * would hand them over, and the quantized encodings of the wire.
 */
#include <math.h>

#include "client/client.h"
#include "common/half.h"
#include "common/pb.h"
#include "common/rng.h"
#include "test.h"

/* A client whose collector never answers: responses and the guard are local. */
static tt_client *local_client(const char *const *kv)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", "tcp://127.0.0.1:1"));
    CHECK_OK(tt_config_set(cfg, "agent", "unit"));
    for (; kv && kv[0]; kv += 2) {
        CHECK_MSG(tt_config_set(cfg, kv[0], kv[1]) == 0, "%s=%s: %s", kv[0], kv[1],
                  tt_config_error(cfg));
    }
    tt_client *c;
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    return c;
}

static int close_rel(double got, double want, double rel)
{
    if (isinf(want)) {
        return got == want;
    }
    return fabs(got - want) <= rel * fabs(want) + 1e-12;
}

struct ref {
    uint32_t n;
    double sum_lp, min_lp, sum_ent, min_win;
    uint32_t low;
    int have_win;
    double win[4096];
};

#define V 257

TEST(response_summary_matches_double_reference)
{
    static const char *const kv[] = {"guard.window", "8", "response.low_confidence_prob", "0.2",
                                     NULL};
    tt_client *c = local_client(kv);
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "s1", "m", NULL, 0));
    tt__rng rng;
    tt__rng_seed(&rng, 42);
    static struct ref ref;
    memset(&ref, 0, sizeof ref);
    ref.min_lp = INFINITY;
    float row[V];
    const uint32_t W = 8, N = 300;
    for (uint32_t t = 0; t < N; t++) {
        double scale = 0.5 + 6.0 * (double)(t % 37) / 37.0;
        for (int i = 0; i < V; i++) {
            row[i] = (float)(scale * (tt__rng_uniform(&rng) * 2.0 - 1.0));
        }
        int32_t chosen = (int32_t)(tt__rng_next(&rng) % V);
        if (t % 5 == 0) {
            row[chosen] += 5.0f; /* a confident token now and then */
        }
        /* the reference, in double */
        double mx = -INFINITY, z = 0.0, h = 0.0;
        for (int i = 0; i < V; i++) {
            mx = row[i] > mx ? row[i] : mx;
        }
        for (int i = 0; i < V; i++) {
            z += exp((double)row[i] - mx);
        }
        for (int i = 0; i < V; i++) {
            double p = exp((double)row[i] - mx) / z;
            h -= p > 0 ? p * log(p) : 0.0;
        }
        double lp = (double)row[chosen] - mx - log(z), p = exp(lp);
        ref.sum_lp += lp;
        ref.min_lp = lp < ref.min_lp ? lp : ref.min_lp;
        ref.sum_ent += h;
        ref.low += p < 0.2;
        ref.win[t] = p;
        ref.n++;
        if (ref.n >= W) {
            double s = 0;
            for (uint32_t k = ref.n - W; k < ref.n; k++) {
                s += ref.win[k];
            }
            s /= W;
            if (!ref.have_win || s < ref.min_win) {
                ref.min_win = s;
            }
            ref.have_win = 1;
        }
        tt_verdict v;
        tt_token_stats st;
        CHECK_OK(tt_response_token(r, row, V, 1, TT_DTYPE_F32, chosen, &v, &st));
        CHECK_EQ(v, TT_PASS); /* the guard is off by default */
        CHECK(close_rel(st.logprob, lp, 1e-5));
    }
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    CHECK_EQ(s.tokens, N);
    double mean = ref.sum_lp / N;
    CHECK_MSG(close_rel(s.mean_logprob, mean, 1e-5), "mean %g vs %g", s.mean_logprob, mean);
    CHECK_MSG(close_rel(s.min_logprob, ref.min_lp, 1e-5), "min %g vs %g", s.min_logprob,
              ref.min_lp);
    CHECK_MSG(close_rel(s.perplexity, exp(-mean), 1e-5), "ppl %g vs %g", s.perplexity, exp(-mean));
    CHECK_MSG(close_rel(s.mean_entropy, ref.sum_ent / N, 1e-5), "H %g vs %g", s.mean_entropy,
              ref.sum_ent / N);
    CHECK_MSG(close_rel(s.low_confidence_share, (double)ref.low / N, 1e-6), "low %g vs %g",
              s.low_confidence_share, (double)ref.low / N);
    CHECK_MSG(close_rel(s.min_window_confidence, ref.min_win, 1e-5), "win %g vs %g",
              s.min_window_confidence, ref.min_win);
    CHECK_EQ(s.verdict, TT_PASS);
    CHECK_EQ(s.estimated, 0);
    CHECK_STR(s.reason, "");
    tt_close(c, 100);
}

TEST(response_short_and_empty_responses_have_defined_summaries)
{
    tt_client *c = local_client(NULL); /* window 16 by default */
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, NULL, NULL, NULL, 0));
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    CHECK_EQ(s.tokens, 0);
    CHECK(s.mean_logprob == 0.0f && s.perplexity == 0.0f && s.min_window_confidence == 0.0f);
    CHECK_OK(tt_response_begin(c, &r, NULL, NULL, NULL, 0));
    float lps[3] = {logf(0.9f), logf(0.5f), logf(0.1f)};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(tt_response_token_logprobs(r, i, lps[i], NULL, NULL, 0, NULL, NULL));
    }
    CHECK_OK(tt_response_end(r, &s));
    CHECK_EQ(s.tokens, 3);
    /* fewer tokens than the window: the window is the whole response */
    CHECK(close_rel(s.min_window_confidence, (0.9 + 0.5 + 0.1) / 3.0, 1e-6));
    CHECK_EQ(s.estimated, 1);
    CHECK(close_rel(s.low_confidence_share, 0.0, 1e-9) || s.low_confidence_share > 0.3f);
    tt_close(c, 100);
}

/* Feed probabilities through the provider path; verdicts per token into out. */
static void feed(tt_response *r, const double *p, int n, tt_verdict *out)
{
    for (int i = 0; i < n; i++) {
        CHECK_OK(tt_response_token_logprobs(r, i, (float)log(p[i]), NULL, NULL, 0, &out[i], NULL));
    }
}

TEST(guard_token_rule_flags_exactly_the_tokens_below_threshold)
{
    static const char *const kv[] = {"guard.token_min_prob", "0.3", "guard.action", "flag", NULL};
    tt_client *c = local_client(kv);
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "s", "m", NULL, 0));
    double p[200];
    tt_verdict v[200];
    tt__rng rng;
    tt__rng_seed(&rng, 7);
    for (int i = 0; i < 200; i++) {
        p[i] = 0.01 + 0.98 * tt__rng_uniform(&rng);
    }
    p[10] = 0.2999;
    p[11] = 0.3001;
    feed(r, p, 200, v);
    int flagged = 0;
    for (int i = 0; i < 200; i++) {
        tt_verdict want = (float)p[i] < 0.3f ? TT_FLAG : TT_PASS;
        CHECK_MSG(v[i] == want, "token %d p=%g: verdict %d, want %d", i, p[i], v[i], want);
        flagged += want == TT_FLAG;
    }
    CHECK(flagged > 20);
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    CHECK_EQ(s.verdict, TT_FLAG);
    CHECK_MSG(strncmp(s.reason, "token p=", 8) == 0, "reason %s", s.reason);
    tt_close(c, 100);
}

TEST(guard_window_rule_halts_at_the_first_window_below_threshold)
{
    static const char *const kv[] = {"guard.window_min_confidence", "0.5", "guard.window", "4",
                                     NULL};
    tt_client *c = local_client(kv);
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "s", "m", NULL, 0));
    double p[40];
    for (int i = 0; i < 40; i++) {
        p[i] = i < 20 ? 0.9 : 0.05;
    }
    /* reference: the first index whose 4-token window mean is below 0.5 */
    int want = -1;
    for (int i = 3; i < 40 && want < 0; i++) {
        double m = (p[i] + p[i - 1] + p[i - 2] + p[i - 3]) / 4;
        if (m < 0.5) {
            want = i;
        }
    }
    tt_verdict v[40];
    feed(r, p, 40, v);
    for (int i = 0; i < 40; i++) {
        CHECK_MSG(v[i] == (i < want ? TT_PASS : TT_HALT), "token %d verdict %d (halt at %d)", i,
                  v[i], want);
    }
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    CHECK_EQ(s.verdict, TT_HALT);
    CHECK_MSG(strstr(s.reason, "window mean p=") != NULL, "reason %s", s.reason);
    CHECK(close_rel(s.min_window_confidence, 0.05, 1e-6));
    tt_close(c, 100);
}

TEST(guard_response_rule_decides_at_the_end)
{
    static const char *const kv[] = {"guard.response_min_confidence", "0.4", NULL};
    tt_client *c = local_client(kv);
    double p[10] = {0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1};
    tt_verdict v[10];
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "s", "m", NULL, 0));
    feed(r, p, 10, v);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(v[i], TT_PASS);
    }
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    /* exp(mean log p) = sqrt(0.9 * 0.1) = 0.3 < 0.4 */
    CHECK_EQ(s.verdict, TT_HALT);
    CHECK_MSG(strstr(s.reason, "response confidence 0.3") != NULL, "reason %s", s.reason);
    tt_guard_policy pol = {.window = 16, .response_min_confidence = 0.25f, .action = TT_FLAG};
    CHECK_OK(tt_guard_policy_set(c, &pol));
    CHECK_OK(tt_response_begin(c, &r, "s", "m", NULL, 0));
    feed(r, p, 10, v);
    CHECK_OK(tt_response_end(r, &s));
    CHECK_EQ(s.verdict, TT_PASS);
    tt_close(c, 100);
}

TEST(guard_policy_from_config_and_at_run_time_with_validation)
{
    static const char *const kv[] = {"guard.token_min_prob",
                                     "0.05",
                                     "guard.window",
                                     "32",
                                     "guard.window_min_confidence",
                                     "0.25",
                                     "guard.response_min_confidence",
                                     "0.5",
                                     "guard.action",
                                     "flag",
                                     NULL};
    tt_client *c = local_client(kv);
    tt_guard_policy p;
    CHECK_OK(tt_guard_policy_get(c, &p));
    CHECK(p.token_min_prob == 0.05f && p.window == 32 && p.window_min_confidence == 0.25f &&
          p.response_min_confidence == 0.5f && p.action == TT_FLAG);
    tt_guard_policy bad[] = {{.token_min_prob = 1.5f, .window = 4, .action = TT_HALT},
                             {.token_min_prob = NAN, .window = 4, .action = TT_HALT},
                             {.window = 0, .action = TT_HALT},
                             {.window = 5000, .action = TT_HALT},
                             {.window = 4, .action = TT_PASS}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(tt_guard_policy_set(c, &bad[i]), TT_EINVAL);
    }
    CHECK_OK(tt_guard_policy_get(c, &p));
    CHECK(p.window == 32); /* unchanged */
    CHECK_EQ(tt_guard_policy_set(NULL, &p), TT_EINVAL);
    CHECK_EQ(tt_guard_policy_get(c, NULL), TT_EINVAL);
    tt_close(c, 100);

    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_EQ(tt_config_set(cfg, "guard.token_min_prob", "2"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "guard.action", "stop"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "guard.window", "0"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "response.topk", "33"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "response.topk_encoding", "fp8"), TT_EINVAL);
    CHECK_OK(tt_config_set(cfg, "response.topk_encoding", "uint8"));
    CHECK_STR(tt_config_get(cfg, "response.topk_encoding"), "uint8");
    CHECK_STR(tt_config_get(cfg, "guard.action"), "halt");
    CHECK_OK(tt_config_set(cfg, "guard.window_min_confidence", "0.125"));
    CHECK_STR(tt_config_get(cfg, "guard.window_min_confidence"), "0.125");
    setenv("TELLTALE_GUARD_WINDOW", "7", 1);
    CHECK_OK(tt_config_from_env(cfg));
    unsetenv("TELLTALE_GUARD_WINDOW");
    CHECK_STR(tt_config_get(cfg, "guard.window"), "7");
    tt_config_free(cfg);
}

/* Control{halt (field 1) or resume (field 4): {session, reason}} as the collector sends it. */
static size_t order_of(uint8_t *buf, uint32_t field, const char *session, const char *reason)
{
    size_t sl = strlen(session), rl = strlen(reason);
    size_t inner = (sl ? tt__pb_len_field_size(sl) : 0) + tt__pb_len_field_size(rl);
    uint8_t *p = tt__pb_put_tag(buf, field, TT_PB_LEN);
    p = tt__pb_put_varint(p, inner);
    if (sl) {
        p = tt__pb_put_bytes(p, 1, session, sl);
    }
    p = tt__pb_put_bytes(p, 2, reason, rl);
    return (size_t)(p - buf);
}

static size_t halt_order(uint8_t *buf, const char *session, const char *reason)
{
    return order_of(buf, 1, session, reason);
}

static void order(tt_client *c, uint32_t field, const char *session, const char *reason)
{
    uint8_t buf[512];
    tt__control_handle(c, buf, order_of(buf, field, session, reason));
}

/* The verdict of the first token of a new response in session (ended at once). */
static tt_verdict first_token(tt_client *c, const char *session)
{
    tt_response *r;
    tt_verdict v;
    CHECK_OK(tt_response_begin(c, &r, session, "m", NULL, 0));
    CHECK_OK(tt_response_token_logprobs(r, 1, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_OK(tt_response_end(r, NULL));
    return v;
}

TEST(control_resume_lifts_a_session_halt_for_responses_begun_after_it)
{
    tt_client *c = local_client(NULL);
    tt_response *open, *waiting;
    tt_verdict v;
    order(c, 4, "alpha", "nothing to lift"); /* a resume before any halt changes nothing */
    CHECK_EQ(first_token(c, "alpha"), TT_PASS);
    CHECK_OK(tt_response_begin(c, &open, "alpha", "m", NULL, 0));
    CHECK_OK(tt_response_token_logprobs(open, 1, -0.1f, NULL, NULL, 0, &v, NULL));
    order(c, 1, "alpha", "stop");
    order(c, 1, "beta", "stop too");
    CHECK_OK(tt_response_token_logprobs(open, 2, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_HALT);
    /* Begun while halted, no token yet: halted at its first token unless a resume comes first. */
    CHECK_OK(tt_response_begin(c, &waiting, "alpha", "m", NULL, 0));
    order(c, 4, "alpha", "go on");
    CHECK_OK(tt_response_token_logprobs(waiting, 1, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_PASS);
    CHECK_OK(tt_response_end(waiting, NULL));
    /* The response already halted stays halted; new ones pass; beta's halt holds. */
    CHECK_OK(tt_response_token_logprobs(open, 3, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_HALT);
    tt_response_summary s;
    CHECK_OK(tt_response_end(open, &s));
    CHECK_STR(s.reason, "operator halt: stop");
    CHECK_EQ(first_token(c, "alpha"), TT_PASS);
    CHECK_EQ(first_token(c, "beta"), TT_HALT);
    /* Halted again after the resume: sticky again. */
    order(c, 1, "alpha", "again");
    CHECK_EQ(first_token(c, "alpha"), TT_HALT);
    /* An agent halt reaches the open response of gamma; a resume of the agent before it has
     * had a token since spares it, and lifts alpha's and beta's halts. */
    CHECK_OK(tt_response_begin(c, &open, "gamma", "m", NULL, 0));
    order(c, 1, "", "all");
    order(c, 4, "", "");
    CHECK_OK(tt_response_token_logprobs(open, 1, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_PASS);
    CHECK_OK(tt_response_end(open, NULL));
    CHECK_EQ(first_token(c, "alpha"), TT_PASS);
    CHECK_EQ(first_token(c, "beta"), TT_PASS);
    /* Steps are never refused by a halt. */
    order(c, 1, "alpha", "steps?");
    tt_step st;
    CHECK_OK(tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "alpha", "t", NULL));
    CHECK_OK(tt_step_end(c, &st, TT_STATUS_OK, 1, NULL));
    tt_close(c, 100);
}

TEST(control_halt_table_keeps_the_64_latest_sessions_and_a_resume_frees_a_slot)
{
    tt_client *c = local_client(NULL);
    char name[32];
    for (int i = 0; i < 70; i++) {
        snprintf(name, sizeof name, "s%d", i);
        order(c, 1, name, "many");
    }
    /* The 6 oldest were pushed out; the 64 latest are halted. */
    for (int i = 0; i < 70; i++) {
        snprintf(name, sizeof name, "s%d", i);
        CHECK_MSG(first_token(c, name) == (i < 6 ? TT_PASS : TT_HALT), "session %s", name);
    }
    /* Halting s6 again makes it the newest; resuming s10 frees a slot, so the next halt pushes
     * nobody out; one more then pushes out the oldest, s7. */
    order(c, 1, "s6", "renewed");
    order(c, 4, "s10", "");
    order(c, 1, "n1", "new");
    CHECK_EQ(first_token(c, "s7"), TT_HALT);
    CHECK_EQ(first_token(c, "s10"), TT_PASS);
    order(c, 1, "n2", "new");
    CHECK_EQ(first_token(c, "s7"), TT_PASS);
    CHECK_EQ(first_token(c, "s6"), TT_HALT);
    CHECK_EQ(first_token(c, "s8"), TT_HALT);
    CHECK_EQ(first_token(c, "n1"), TT_HALT);
    CHECK_EQ(first_token(c, "n2"), TT_HALT);
    tt_close(c, 100);
}

TEST(control_halt_of_a_session_shows_at_its_next_token_only)
{
    tt_client *c = local_client(NULL);
    tt_response *a, *b;
    tt_verdict v;
    tt_token_stats st;
    CHECK_OK(tt_response_begin(c, &a, "alpha", "m", NULL, 0));
    CHECK_OK(tt_response_begin(c, &b, "beta", "m", NULL, 0));
    CHECK_OK(tt_response_token_logprobs(a, 1, -0.1f, NULL, NULL, 0, &v, &st));
    CHECK_EQ(v, TT_PASS);
    uint8_t buf[512];
    size_t n = halt_order(buf, "alpha", "runaway cost");
    tt__control_handle(c, buf, n);
    CHECK_OK(tt_response_token_logprobs(a, 2, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_HALT);
    CHECK_OK(tt_response_token_logprobs(a, 3, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_HALT); /* stays halted */
    CHECK_OK(tt_response_token_logprobs(b, 1, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_PASS);
    tt_response_summary s;
    CHECK_OK(tt_response_end(a, &s));
    CHECK_EQ(s.verdict, TT_HALT);
    CHECK_STR(s.reason, "operator halt: runaway cost");
    /* sticky: a new response in the halted session is halted at its first token */
    CHECK_OK(tt_response_begin(c, &a, "alpha", "m", NULL, 0));
    CHECK_OK(tt_response_token_logprobs(a, 1, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_HALT);
    CHECK_OK(tt_response_end(a, NULL));
    /* a halt of every session halts what is open, not what begins later */
    n = halt_order(buf, "", "maintenance");
    tt__control_handle(c, buf, n);
    CHECK_OK(tt_response_begin(c, &a, "gamma", "m", NULL, 0));
    CHECK_OK(tt_response_token_logprobs(b, 2, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_HALT);
    CHECK_OK(tt_response_token_logprobs(a, 1, -0.1f, NULL, NULL, 0, &v, NULL));
    CHECK_EQ(v, TT_PASS);
    CHECK_OK(tt_response_end(b, &s));
    CHECK_STR(s.reason, "operator halt: maintenance");
    CHECK_OK(tt_response_end(a, NULL));
    /* garbage is ignored */
    uint8_t junk[] = {0x0a, 0x7f, 0x01};
    tt__control_handle(c, junk, sizeof junk);
    tt_close(c, 100);
}

TEST(control_policy_order_replaces_the_policy_and_bad_ones_are_ignored)
{
    tt_client *c = local_client(NULL);
    uint8_t buf[64], inner[32];
    uint8_t *q = tt__pb_put_float(inner, 1, 0.2f);
    q = tt__pb_put_float(q, 2, 0.4f);
    q = tt__pb_put_uint(q, 3, 12);
    q = tt__pb_put_float(q, 4, 0.3f);
    q = tt__pb_put_uint(q, 5, TT_FLAG);
    uint8_t *p = tt__pb_put_bytes(buf, 2, inner, (size_t)(q - inner));
    tt__control_handle(c, buf, (size_t)(p - buf));
    tt_guard_policy pol;
    CHECK_OK(tt_guard_policy_get(c, &pol));
    CHECK(pol.token_min_prob == 0.2f && pol.window_min_confidence == 0.4f && pol.window == 12 &&
          pol.response_min_confidence == 0.3f && pol.action == TT_FLAG);
    q = tt__pb_put_float(inner, 1, 7.0f); /* out of range: refused */
    p = tt__pb_put_bytes(buf, 2, inner, (size_t)(q - inner));
    tt__control_handle(c, buf, (size_t)(p - buf));
    CHECK_OK(tt_guard_policy_get(c, &pol));
    CHECK(pol.token_min_prob == 0.2f);
    tt_close(c, 100);
}

TEST(response_api_rejects_bad_arguments)
{
    tt_client *c = local_client(NULL);
    tt_response *r = (tt_response *)(uintptr_t)1;
    char longs[300];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    CHECK_EQ(tt_response_begin(NULL, &r, "s", "m", NULL, 0), TT_EINVAL);
    CHECK(r == NULL);
    CHECK_EQ(tt_response_begin(c, NULL, "s", "m", NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_response_begin(c, &r, longs, "m", NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_response_begin(c, &r, "s", "m", NULL, 2), TT_EINVAL);
    CHECK_EQ(tt_response_token(NULL, NULL, 0, 1, TT_DTYPE_F32, 0, NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_response_end(NULL, NULL), TT_EINVAL);
    tt_attr params[] = {TT_DOUBLE("temperature", 0.7), TT_INT("max_tokens", 512),
                        TT_STR("stop", "\n"), TT_BOOL("stream", 1)};
    CHECK_OK(tt_response_begin(c, &r, "s", "m", params, 4));
    float row[4] = {1, 2, 3, 4};
    CHECK_EQ(tt_response_token(r, row, 0, 1, TT_DTYPE_F32, 0, NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_response_token(r, row, 4, 1, (tt_dtype)9, 0, NULL, NULL), TT_EINVAL);
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    CHECK_EQ(s.tokens, 0); /* refused rows are not counted */
    tt_close(c, 100);
}

TEST(quantized_values_round_trip_within_their_step)
{
    tt__rng rng;
    tt__rng_seed(&rng, 3);
    for (int i = 0; i < 100000; i++) {
        float p = (float)tt__rng_uniform(&rng);
        float back = tt__f16_to_f32(tt__f32_to_f16(p));
        CHECK_MSG(fabsf(back - p) <= p * 0x1p-11f + 0x1p-25f, "fp16 %g -> %g", p, back);
        float lp = -16.5f * (float)tt__rng_uniform(&rng);
        uint8_t code = tt__u8log_encode(lp);
        float d = tt__u8log_decode(code);
        if (lp > -254.5f * TT_U8LOG_STEP) {
            CHECK_MSG(fabsf(d - lp) <= TT_U8LOG_STEP / 2 + 1e-6f, "u8 %g -> %u -> %g", lp, code, d);
        } else {
            CHECK(code >= 254);
        }
    }
    CHECK_EQ(tt__f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ(tt__f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ(tt__f32_to_f16(1e6f), 0x7c00);
    CHECK_EQ(tt__f32_to_f16(-INFINITY), 0xfc00);
    CHECK(tt__f16_to_f32(tt__f32_to_f16(NAN)) != tt__f16_to_f32(tt__f32_to_f16(NAN)));
    CHECK_EQ(tt__u8log_encode(-INFINITY), 255);
    CHECK_EQ(tt__u8log_encode(NAN), 255);
    CHECK_EQ(tt__u8log_encode(0.0f), 0);
    CHECK(isinf(tt__u8log_decode(255)));
}

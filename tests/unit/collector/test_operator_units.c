/*
 * test_operator_units.c - the alerting configuration parser (bounds, errors with file:line),
 * the detector units fed signals directly, and the token checks.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "collector/api/auth.h"
#include "collector/alerting/monitor.h"
#include "telltale.h"
#include "test.h"

static int parse(struct mon_config *c, const char *text, char *err, size_t n)
{
    return mon_config_parse(c, text, strlen(text), "t.conf", err, n);
}

TEST(config_calls_kinds_default_to_external_calls_and_can_be_set)
{
    static struct mon_config c;
    char err[300] = "";
    CHECK_OK(parse(&c, "[detector.e]\ntype = error_rate\n", err, sizeof err));
    CHECK_EQ(c.call_kinds, (1u << TT_STEP_TOOL) | (1u << TT_STEP_API) | (1u << TT_STEP_RETRIEVAL));
    CHECK_OK(parse(&c, "[calls]\nkinds = tool , llm,agent\n", err, sizeof err));
    CHECK_EQ(c.call_kinds, (1u << TT_STEP_TOOL) | (1u << TT_STEP_LLM) | (1u << TT_STEP_AGENT));
    CHECK_EQ(parse(&c, "[calls]\nkinds = tool, sql\n", err, sizeof err), -1);
    CHECK_MSG(strstr(err, "t.conf:2") && strstr(err, "\"sql\" is not a step kind"), "%s", err);
    CHECK_EQ(parse(&c, "[calls]\nkinds = ,\n", err, sizeof err), -1);
    CHECK_EQ(parse(&c, "[calls]\nwhat = tool\n", err, sizeof err), -1);
}

TEST(config_parses_detectors_and_webhooks_with_defaults)
{
    static struct mon_config c;
    char err[300] = "";
    int rc = parse(&c,
                   "# comment\n; another\n\n[detector.conf]\ntype = drift\nsignal = confidence\n"
                   "algorithm = ph\nparams = threshold=2 delta=0.001\nwarmup = 50\n"
                   "severity = critical\ncooldown_ms = 1000\n"
                   "[detector.loop]\ntype=loop\n"
                   "[ webhook.ops ]\nurl = https://example.invalid/hook\nretries = 5\n",
                   err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    CHECK_EQ(c.n_units, 2);
    CHECK_STR(c.units[0].name, "conf");
    CHECK_STR(c.units[0].severity, "critical");
    CHECK(c.units[0].cfg.drift.algo == &detect_ph);
    CHECK_NEAR(c.units[0].cfg.drift.p.ph.threshold, 2, 0);
    CHECK_EQ(c.units[0].cfg.drift.p.ph.mode, DETECT_DOWN);
    CHECK_EQ(c.units[0].cooldown_ns, 1000000000);
    CHECK_EQ(c.units[1].cfg.loop.repeats, 5);
    CHECK_EQ(c.n_hooks, 1);
    CHECK_EQ(c.hooks[0].retries, 5);
    CHECK_EQ(c.hooks[0].timeout_ms, 2000);
    CHECK_OK(mon_config_defaults(&c));
    CHECK(c.n_units >= 5);
}

TEST(config_refuses_bad_input_naming_file_and_line)
{
    static struct mon_config c;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"type = loop\n", "t.conf:1: a key outside"},
        {"[detector.a]\nrepeats = 3\n", "t.conf:2: the first key of a detector must be type"},
        {"[detector.a]\ntype = psychic\n", "t.conf:2: unknown detector type"},
        {"[detector.a]\ntype = loop\nrepeats = 1\n", "t.conf:3: bad value for repeats"},
        {"[detector.a]\ntype = loop\nrepeats = 3x\n", "t.conf:3: bad value"},
        {"[detector.a]\ntype = loop\ncolour = red\n", "t.conf:3: unknown key"},
        {"[detector.a b]\n", "t.conf:1: expected [detector.NAME]"},
        {"[detector.a]\ntype = loop\n[detector.a]\ntype = gap\n",
         "t.conf:3: detector \"a\" defined twice"},
        {"[webhook.w]\nurl = ftp://x\n", "t.conf:2: bad value for url"},
        {"[webhook.w]\ntimeout_ms = 5\n", "t.conf: webhook w: no url"},
        {"[detector.d]\ntype = drift\nparams = k=-1\n", "t.conf: detector d: params"},
        {"[detector.d]\ntype = drift\nalgorithm = magic\n", "t.conf:3: bad value"},
        {"[detector.x]\ntype = threshold\nmin = 1.5\n", "t.conf:3: bad value"},
        {"[detector.x]\ntype = silence\nseconds = nan\n", "t.conf:3: bad value"},
        {"[detector.x]\ntype = gap\nseverity = loud\n", "t.conf:3: bad value"},
        {"[detector.x]\n", "t.conf: detector x: no type"},
        {"garbage\n", "t.conf:1: expected \"key = value\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[300] = "";
        CHECK_MSG(parse(&c, bad[i].text, err, sizeof err) == -1, "accepted: %s", bad[i].text);
        CHECK_MSG(strstr(err, bad[i].want) != NULL, "%s: got \"%s\"", bad[i].text, err);
    }
    /* A line beyond the bound, a NUL, too many detectors, a file beyond the bound. */
    char *big = malloc(MON_CONFIG_MAX + 2);
    memset(big, '#', MON_LINE_MAX + 1);
    big[MON_LINE_MAX + 1] = 0;
    char err[300];
    CHECK_EQ(parse(&c, big, err, sizeof err), -1);
    CHECK(strstr(err, "t.conf:1: line longer") != NULL);
    CHECK_EQ(mon_config_parse(&c, "[detector.a]\0", 13, "t.conf", err, sizeof err), -1);
    size_t off = 0;
    for (int i = 0; i <= MON_UNITS_MAX; i++) {
        off += (size_t)snprintf(big + off, 100, "[detector.d%d]\ntype = gap\n", i);
    }
    CHECK_EQ(parse(&c, big, err, sizeof err), -1);
    CHECK(strstr(err, "more than 32 detectors") != NULL);
    memset(big, '\n', MON_CONFIG_MAX + 1);
    CHECK_EQ(mon_config_parse(&c, big, MON_CONFIG_MAX + 1, "t.conf", err, sizeof err), -1);
    free(big);
}

/* Feed one unit of a parsed configuration. */
struct unit_rig {
    struct mon_config c;
    max_align_t state[4096];
};

static void rig(struct unit_rig *r, const char *text)
{
    char err[300];
    CHECK_MSG(parse(&r->c, text, err, sizeof err) == 0, "%s", err);
    CHECK(r->c.units[0].state_size <= sizeof r->state);
    memset(r->state, 0, sizeof r->state);
}

static int feed(struct unit_rig *r, int type, double v, int error, const char *name,
                const char *query, struct alert *a)
{
    struct mon_signal s = {.type = type, .value = v, .error = error};
    if (type == SIG_GAP) {
        s.id = 1;
        s.n = (uint64_t)v; /* as monitor.c gives them: the count, exactly */
    }
    s.name = (tt__bstr){(const uint8_t *)name, name ? strlen(name) : 0};
    s.query = (tt__bstr){(const uint8_t *)query, query ? strlen(query) : 0};
    const struct unit *u = &r->c.units[0];
    return u->ops->feed(u, r->state, &s, a);
}

TEST(units_loop_error_rate_threshold_gap_and_silence_fire_when_they_should)
{
    static struct unit_rig r;
    struct alert a;
    rig(&r, "[detector.l]\ntype = loop\nrepeats = 3\n");
    CHECK_EQ(feed(&r, SIG_TOOL_BEGIN, 0, 0, "ab", "c", &a), 0);
    CHECK_EQ(feed(&r, SIG_TOOL_BEGIN, 0, 0, "a", "bc", &a), 0); /* not the same call */
    CHECK_EQ(feed(&r, SIG_TOOL_BEGIN, 0, 0, "a", "bc", &a), 0);
    CHECK_EQ(feed(&r, SIG_TOOL_BEGIN, 0, 0, "a", "bc", &a), 1);
    CHECK_EQ(feed(&r, SIG_TOOL_BEGIN, 0, 0, "a", "bc", &a), 0); /* once per run */
    rig(&r, "[detector.e]\ntype = error_rate\nwindow = 10\nmin_calls = 4\nmax_rate = 0.5\n");
    CHECK_EQ(feed(&r, SIG_TOOL_END, 0.1, 1, NULL, NULL, &a), 0);
    CHECK_EQ(feed(&r, SIG_TOOL_END, 0.1, 1, NULL, NULL, &a), 0);
    CHECK_EQ(feed(&r, SIG_TOOL_END, 0.1, 0, NULL, NULL, &a), 0);
    CHECK_EQ(feed(&r, SIG_TOOL_END, 0.1, 1, NULL, NULL, &a), 1); /* 3 of 4 > 50 % */
    CHECK_NEAR(a.value, 0.75, 1e-12);
    for (int i = 0; i < 30; i++) { /* failures spread out stay below the rate */
        CHECK_EQ(feed(&r, SIG_TOOL_END, 0.1, i % 3 == 0, NULL, NULL, &a), 0);
    }
    rig(&r, "[detector.t]\ntype = threshold\nmin = 0.4\n");
    CHECK_EQ(feed(&r, SIG_CONFIDENCE, 0.5, 0, NULL, NULL, &a), 0);
    CHECK_EQ(feed(&r, SIG_CONFIDENCE, 0.3, 0, NULL, NULL, &a), 1);
    CHECK_EQ(feed(&r, SIG_CONFIDENCE, NAN, 0, NULL, NULL, &a), 0);
    rig(&r, "[detector.g]\ntype = gap\nmin_events = 10\n");
    CHECK_EQ(feed(&r, SIG_GAP, 9, 0, NULL, NULL, &a), 0);
    CHECK_EQ(feed(&r, SIG_GAP, 10, 0, NULL, NULL, &a), 1);
    CHECK_MSG(strstr(a.message, "loss: 10 events never received (seq 1..10)"), "%s", a.message);
    /* A hole of 2^64 - 3 events (seq 2 .. 2^64 - 2, an agent that jumped to the top): no double
     * holds that count exactly, and converting one back was undefined (found by fuzz_monitor). */
    struct mon_signal huge = {
        .type = SIG_GAP, .value = (double)(UINT64_MAX - 2), .id = 2, .n = UINT64_MAX - 2};
    CHECK_EQ(r.c.units[0].ops->feed(&r.c.units[0], r.state, &huge, &a), 1);
    CHECK_MSG(strstr(a.message, "loss: 18446744073709551613 events never received "
                                "(seq 2..18446744073709551614)"),
              "%s", a.message);
    rig(&r, "[detector.s]\ntype = silence\nseconds = 2\n");
    const struct unit *u = &r.c.units[0];
    int64_t seen = 1000000000000;
    CHECK_EQ(u->ops->tick(u, r.state, seen + 1999000000, seen, &a), 0);
    CHECK_EQ(u->ops->tick(u, r.state, seen + 2000000000, seen, &a), 1);
    CHECK_EQ(u->ops->tick(u, r.state, seen + 9000000000, seen, &a), 0); /* once per silence */
    CHECK_EQ(u->ops->tick(u, r.state, seen + 9000000000, seen + 1, &a), 1);
    CHECK_EQ(u->ops->tick(u, r.state, seen, 0, &a), 0); /* never seen: not silent */
}

TEST(units_comply_raises_blocks_critical_flags_by_severity_keyed_by_rule)
{
    static struct unit_rig r;
    struct alert a;
    char err[300];
    rig(&r, "[detector.c]\ntype = comply\nseverity = info\n");
    memset(&a, 0, sizeof a);
    CHECK_EQ(feed(&r, SIG_DECISION, 2, 0, "destructive_sql", "DROP TABLE", &a), 1);
    CHECK_STR(a.key, "destructive_sql");
    CHECK_STR(a.severity, "critical"); /* a block, whatever the unit's severity */
    CHECK(strstr(a.message, "blocked") && strstr(a.message, "DROP TABLE"));
    memset(&a, 0, sizeof a);
    CHECK_EQ(feed(&r, SIG_DECISION, 1, 1, "apis", "host evil.example", &a), 1);
    CHECK_STR(a.key, "apis");
    CHECK_STR(a.severity, "info");
    CHECK(strstr(a.message, "flagged by the collector") != NULL);
    /* Other signals are not decisions. */
    CHECK_EQ(feed(&r, SIG_TOOL_BEGIN, 2, 0, "x", "y", &a), 0);
    CHECK_EQ(feed(&r, SIG_GAP, 2, 0, NULL, NULL, &a), 0);
    /* flags = off: blocks only. */
    rig(&r, "[detector.c]\ntype = comply\nflags = off\n");
    CHECK_EQ(feed(&r, SIG_DECISION, 1, 0, "apis", "x", &a), 0);
    CHECK_EQ(feed(&r, SIG_DECISION, 2, 0, "sql", "x", &a), 1);
    static struct mon_config c;
    CHECK_EQ(parse(&c, "[detector.c]\ntype = comply\nflags = maybe\n", err, sizeof err), -1);
    CHECK_MSG(strstr(err, "t.conf:3") != NULL, "%s", err);
    /* Among the built-in detectors. */
    CHECK_OK(mon_config_defaults(&c));
    int found = 0;
    for (int i = 0; i < c.n_units; i++) {
        found += strcmp(c.units[i].ops->type, "comply") == 0;
    }
    CHECK_EQ(found, 1);
}

TEST(units_drift_stays_quiet_in_control_and_fires_on_a_one_sigma_fall)
{
    static struct unit_rig r;
    struct alert a;
    rig(&r, "[detector.d]\ntype = drift\nsignal = confidence\nwarmup = 500\n");
    uint64_t st = 42;
    int fired = 0;
    for (int i = 0; i < 20000; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = ((double)(st >> 11) + 0.5) / 9007199254740992.0;
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = ((double)(st >> 11) + 0.5) / 9007199254740992.0;
        double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        int shifted = i >= 10000;
        int rc = feed(&r, SIG_CONFIDENCE, 0.8 + 0.05 * (z - shifted), 0, NULL, NULL, &a);
        CHECK_MSG(!(rc && !shifted), "false alarm at %d: %s", i, a.message);
        if (rc) {
            CHECK_MSG(i - 10000 < 200, "detected %d samples after the shift", i - 10000);
            fired = 1;
            break;
        }
        /* Tool latency is not this unit's signal. */
        CHECK_EQ(feed(&r, SIG_TOOL_END, 100, 0, NULL, NULL, &a), 0);
    }
    CHECK(fired);
    CHECK(strstr(a.message, "confidence drift (cusum)") != NULL);
}

static int feed_metric(struct unit_rig *r, const char *name, double v, const char *unit,
                       struct alert *a)
{
    memset(a, 0, sizeof *a);
    return feed(r, SIG_METRIC, v, 0, name, unit, a);
}

TEST(units_nonfinite_raises_on_nan_and_inf_of_its_metrics_only)
{
    static struct unit_rig r;
    struct alert a;
    rig(&r, "[detector.n]\ntype = nonfinite\nsignal = metric:loss\n");
    CHECK_EQ(feed_metric(&r, "loss", 2.5, "nats", &a), 0);
    CHECK_EQ(feed_metric(&r, "grad_norm", NAN, NULL, &a), 0);   /* not its metric */
    CHECK_EQ(feed(&r, SIG_SCORE, NAN, 0, "loss", NULL, &a), 0); /* a score, not a metric */
    CHECK_EQ(feed_metric(&r, "loss", NAN, "nats", &a), 1);
    CHECK_STR(a.key, "metric:loss");
    CHECK_MSG(strstr(a.message, "metric loss is NaN") != NULL, "%s", a.message);
    CHECK(isfinite(a.value) && a.value == 1); /* the count: a NaN has no JSON form */
    CHECK_EQ(feed_metric(&r, "loss", -INFINITY, "nats", &a), 1);
    CHECK(strstr(a.message, "is -inf") != NULL && a.value == 2);
    rig(&r, "[detector.n]\ntype = nonfinite\nsignal = metric:*\n");
    CHECK_EQ(feed_metric(&r, "grad_norm", INFINITY, NULL, &a), 1);
    CHECK_STR(a.key, "metric:grad_norm"); /* one incident per metric */
    CHECK(strstr(a.message, "is +inf") != NULL);
    CHECK_EQ(feed_metric(&r, "lr", 0.001, NULL, &a), 0);
    CHECK_EQ(feed(&r, SIG_SCORE, NAN, 0, "judge", NULL, &a), 0);
    rig(&r, "[detector.n]\ntype = nonfinite\nsignal = score:*\n");
    CHECK_EQ(feed(&r, SIG_SCORE, NAN, 0, "judge", NULL, &a), 1);
    CHECK_STR(a.key, "score:judge");
    CHECK_EQ(feed_metric(&r, "loss", NAN, NULL, &a), 0);
    /* The other units skip what is not a number. */
    rig(&r, "[detector.t]\ntype = threshold\nsignal = metric:loss\nmax = 10\n");
    CHECK_EQ(feed_metric(&r, "loss", NAN, NULL, &a), 0);
    CHECK_EQ(feed_metric(&r, "loss", INFINITY, NULL, &a), 0);
    CHECK_EQ(feed_metric(&r, "loss", 11, NULL, &a), 1);
    static struct mon_config c;
    char err[300];
    CHECK_EQ(parse(&c, "[detector.n]\ntype = nonfinite\nsignal = confidence\n", err, sizeof err),
             -1);
    CHECK_MSG(strstr(err, "metric:NAME or score:NAME") != NULL, "%s", err);
    CHECK_EQ(parse(&c, "[detector.n]\ntype = nonfinite\n", err, sizeof err), -1);
}

TEST(units_spike_fires_on_a_loss_spike_and_a_lasting_throughput_drop)
{
    static struct unit_rig r;
    struct alert a;
    rig(&r, "[detector.s]\ntype = spike\nsignal = metric:loss\nwindow = 50\n"
            "min_samples = 20\nsigmas = 6\nmin_change = 0.5\n");
    /* A falling, noisy loss never spikes; noise is +-0.1 around a decay from 4 to 2. */
    uint64_t st = 7;
    double loss = 0;
    for (int i = 0; i < 2000; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        double noise = ((double)(st >> 11) / 9007199254740992.0 - 0.5) * 0.2;
        loss = 2 + 2 * exp(-i / 300.0) + noise;
        CHECK_MSG(feed_metric(&r, "loss", loss, "nats", &a) == 0, "false alarm at %d: %s", i,
                  a.message);
        if (i == 1000) { /* a dip is not a spike (direction up is the default) */
            CHECK_EQ(feed_metric(&r, "loss", 0.1, "nats", &a), 0);
        }
    }
    CHECK_EQ(feed_metric(&r, "loss", NAN, "nats", &a), 0); /* nonfinite's business */
    CHECK_EQ(feed_metric(&r, "loss", 6.0, "nats", &a), 1);
    CHECK_STR(a.key, "metric:loss");
    CHECK_NEAR(a.value, 6.0, 0);
    CHECK(a.threshold > loss && a.threshold < 6.0);
    CHECK_STR(a.unit, "nats");
    CHECK_MSG(strstr(a.message, "metric loss spiked: 6 nats") &&
                  strstr(a.message, "above the median"),
              "%s", a.message);
    CHECK_EQ(feed_metric(&r, "loss", loss, "nats", &a), 0); /* back to normal */
    /* A spike stays out of the window: the next one is measured against the same level. */
    CHECK_EQ(feed_metric(&r, "loss", 6.0, "nats", &a), 1);
    CHECK_EQ(feed_metric(&r, "grad_norm", 60.0, NULL, &a), 0); /* not its signal */

    /* Throughput: down, three in a row, and still firing while the drop lasts. */
    rig(&r, "[detector.d]\ntype = spike\nsignal = metric:throughput\ndirection = down\n"
            "window = 30\nmin_samples = 10\nsigmas = 3\nmin_change = 0.5\nconsecutive = 3\n");
    for (int i = 0; i < 40; i++) {
        CHECK_EQ(feed_metric(&r, "throughput", 1000 + (i % 7) * 20, "tokens/s", &a), 0);
    }
    CHECK_EQ(feed_metric(&r, "throughput", 2000, "tokens/s", &a), 0); /* a rise: not watched */
    CHECK_EQ(feed_metric(&r, "throughput", 300, "tokens/s", &a), 0);
    CHECK_EQ(feed_metric(&r, "throughput", 1050, "tokens/s", &a), 0); /* the run is broken */
    CHECK_EQ(feed_metric(&r, "throughput", 300, "tokens/s", &a), 0);
    CHECK_EQ(feed_metric(&r, "throughput", 300, "tokens/s", &a), 0);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(feed_metric(&r, "throughput", 300, "tokens/s", &a), 1);
    }
    CHECK_MSG(strstr(a.message, "metric throughput dropped: 300 tokens/s") &&
                  strstr(a.message, "samples in a row"),
              "%s", a.message);
    CHECK(a.threshold < 1060 * 0.5 + 1);
    CHECK_EQ(feed_metric(&r, "throughput", 1040, "tokens/s", &a), 0); /* recovered */
    CHECK_EQ(feed_metric(&r, "throughput", 450, "tokens/s", &a), 0);  /* -55 %, once */

    /* relearn: a level that lasts becomes the new normal. */
    rig(&r, "[detector.d]\ntype = spike\nsignal = metric:tp\ndirection = both\n"
            "window = 20\nmin_samples = 10\nmin_change = 0.5\nconsecutive = 2\n"
            "relearn = 5\n");
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(feed_metric(&r, "tp", 100 + i % 3, NULL, &a), 0);
    }
    CHECK_EQ(feed_metric(&r, "tp", 10, NULL, &a), 0);
    CHECK_EQ(feed_metric(&r, "tp", 10, NULL, &a), 1);
    CHECK_EQ(feed_metric(&r, "tp", 10, NULL, &a), 1);
    CHECK_EQ(feed_metric(&r, "tp", 10, NULL, &a), 1);
    CHECK_EQ(feed_metric(&r, "tp", 10, NULL, &a), 0); /* the 5th: learnt */
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(feed_metric(&r, "tp", 10 + i % 2, NULL, &a), 0);
    }
    CHECK_EQ(feed_metric(&r, "tp", 100, NULL, &a), 0); /* both ways now: a rise */
    CHECK_EQ(feed_metric(&r, "tp", 100, NULL, &a), 1);
    CHECK(strstr(a.message, "spiked") != NULL);

    /* Tool latency: seconds on the signal, milliseconds in the incident. */
    rig(&r, "[detector.l]\ntype = spike\nsignal = tool_latency\nmin_change = 1\n");
    for (int i = 0; i < 30; i++) {
        CHECK_EQ(feed(&r, SIG_TOOL_END, 0.1 + 0.001 * (i % 5), 0, "search", NULL, &a), 0);
    }
    CHECK_EQ(feed(&r, SIG_TOOL_END, 0.5, 0, "search", NULL, &a), 1);
    CHECK_NEAR(a.value, 500, 1e-9);
    CHECK_STR(a.unit, "ms");
    CHECK_STR(a.key, "tool_latency");
    CHECK_MSG(strstr(a.message, "tool latency spiked: 500 ms") != NULL, "%s", a.message);

    static struct mon_config c;
    char err[300];
    CHECK_EQ(parse(&c,
                   "[detector.s]\ntype = spike\nsignal = metric:x\nwindow = 10\n"
                   "min_samples = 20\n",
                   err, sizeof err),
             -1);
    CHECK_MSG(strstr(err, "min_samples above window") != NULL, "%s", err);
    CHECK_EQ(parse(&c, "[detector.s]\ntype = spike\nwindow = 2000\n", err, sizeof err), -1);
    CHECK_EQ(parse(&c, "[detector.s]\ntype = spike\ndirection = sideways\n", err, sizeof err), -1);
    CHECK_EQ(
        parse(&c, "[detector.s]\ntype = spike\nconsecutive = 3\nrelearn = 2\n", err, sizeof err),
        -1);
    CHECK_OK(parse(&c, "[detector.s]\ntype = spike\nsignal = metric:x\n", err, sizeof err));
    CHECK_EQ(c.units[0].cfg.spike.window, 50);
    CHECK_EQ(c.units[0].cfg.spike.min_samples, 20);
    CHECK_EQ(c.units[0].cfg.spike.direction, DETECT_UP);
    CHECK_NEAR(c.units[0].cfg.spike.sigmas, 6, 0);
}

TEST(auth_tokens_compare_exactly_and_ingest_tokens_set_identity)
{
    struct auth *a = auth_new();
    char err[300];
    CHECK(auth_operator_ok(a, NULL)); /* none configured */
    CHECK_OK(auth_set_operator(a, "  s3cret \n", 0, err, sizeof err));
    CHECK(auth_operator_required(a));
    CHECK(auth_operator_ok(a, "Bearer s3cret"));
    CHECK(auth_operator_ok(a, "bearer s3cret"));
    CHECK(!auth_operator_ok(a, "Bearer s3cre"));
    CHECK(!auth_operator_ok(a, "Bearer s3cret2"));
    CHECK(!auth_operator_ok(a, "Basic s3cret"));
    CHECK(!auth_operator_ok(a, NULL));
    CHECK(!auth_operator_ok(a, "Bearer "));
    CHECK_EQ(auth_set_operator(a, "two words", 0, err, sizeof err), -1);
    CHECK_EQ(auth_set_operator(a, "", 0, err, sizeof err), -1);
    CHECK(auth_operator_ok(a, "Bearer s3cret")); /* a refused value leaves the old one */
    char path[600];
    snprintf(path, sizeof path, "%s/tokens", tt_test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("# agents\nalice  tok-a\n\nbob\ttok-b\n", f);
    fclose(f);
    /* A token file that others may read is refused; private, it loads. */
    CHECK_OK(chmod(path, 0644));
    CHECK_EQ(auth_load_ingest(a, path, err, sizeof err), -1);
    CHECK_MSG(strstr(err, "chmod 600") != NULL, "%s", err);
    CHECK_OK(chmod(path, 0600));
    CHECK_OK(auth_load_ingest(a, path, err, sizeof err));
    tt__hello h;
    memset(&h, 0, sizeof h);
    snprintf(h.agent, sizeof h.agent, "mallory");
    snprintf(h.token, sizeof h.token, "tok-b");
    char agent[256] = "";
    CHECK_EQ(auth_authorize(a, &h, agent, err, sizeof err), 1); /* 1: a token decided */
    CHECK_STR(agent, "bob");
    snprintf(h.token, sizeof h.token, "tok-");
    CHECK_EQ(auth_authorize(a, &h, agent, err, sizeof err), -1);
    h.token[0] = 0;
    CHECK_EQ(auth_authorize(a, &h, agent, err, sizeof err), -1);
    f = fopen(path, "w");
    fputs("alice\n", f);
    fclose(f);
    CHECK_EQ(auth_load_ingest(a, path, err, sizeof err), -1);
    CHECK(strstr(err, ":1: expected") != NULL);
    CHECK(auth_equal("abc", 3, "abc", 3));
    CHECK(!auth_equal("abc", 3, "abd", 3));
    CHECK(!auth_equal("abc", 3, "ab", 2));
    auth_free(a);
}

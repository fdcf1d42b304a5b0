/*
 * test_bench_smoke.c - the end-to-end benchmarks (bench/pipeline.c, latency.c, memory.c, tls.c,
 * pgstore.c, nats.c) run with --smoke (tiny sizes, a real collector each) and must exit 0 printing
 * only valid result lines, so that they cannot rot between `make bench` runs. Nothing here is
 * timed.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test.h"

/* Runs $TT_BUILD/bench/NAME --smoke and checks every line; returns the number of lines. */
static int run_smoke(const char *name, const char *metric_prefix_expected)
{
    const char *build = getenv("TT_BUILD");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/bench/%s --smoke 2>>%s/bench-%s.stderr", build ? build : "build",
             name, tt_test_outdir(), name);
    FILE *p = popen(cmd, "r");
    CHECK_MSG(p != NULL, "cannot run %s", cmd);
    char line[4096];
    int n = 0, expected_seen = 0;
    while (fgets(line, sizeof line, p)) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        CHECK_MSG(o && json_is_object(o), "%s printed a line that is not a JSON object: %s", name,
                  line);
        CHECK_STR(json_string_value(json_object_get(o, "bench")), name);
        const char *metric = json_string_value(json_object_get(o, "metric"));
        CHECK_MSG(metric && *metric, "%s: a line without a metric: %s", name, line);
        CHECK_MSG(json_is_number(json_object_get(o, "value")), "%s: value is not a number: %s",
                  name, line);
        CHECK_MSG(json_is_string(json_object_get(o, "unit")), "%s: no unit: %s", name, line);
        json_t *base = json_object_get(o, "baseline"), *ratio = json_object_get(o, "ratio");
        CHECK_MSG(base && ratio, "%s: baseline and ratio must be present: %s", name, line);
        CHECK_MSG(json_is_null(base) == json_is_null(ratio), "%s: a ratio goes with a baseline: %s",
                  name, line);
        if (strncmp(metric, metric_prefix_expected, strlen(metric_prefix_expected)) == 0) {
            expected_seen++;
        }
        json_decref(o);
        n++;
    }
    int st = pclose(p);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s --smoke exited with status %d", name,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    CHECK_MSG(expected_seen > 0, "%s printed no %s... line", name, metric_prefix_expected);
    return n;
}

TEST_T(bench_pipeline_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("pipeline", "unix_1_events_per_s") >= 10);
}

TEST_T(bench_latency_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("latency", "2k_p99") >= 4);
}

TEST_T(bench_memory_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("memory", "collector_20_agents_rss") >= 6);
}

TEST_T(bench_comply_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("comply", "decision_overhead_ns") >= 3);
}

TEST_T(bench_token_batch_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("token_batch", "batch_64x") == 2);
}

TEST_T(bench_tls_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("tls", "tls_stored_events_per_s") == 2);
}

TEST_T(bench_pgstore_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("pgstore", "postgres_stored_events_per_s") == 2);
}

/* nats.c starts its own nats-server; without one it fails, as the NATS tests need it too. */
TEST_T(bench_nats_smoke_prints_valid_result_lines, 120)
{
    CHECK(run_smoke("nats", "nats_stored_events_per_s") == 5);
}

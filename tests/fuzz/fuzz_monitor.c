/*
 * fuzz_monitor.c - libFuzzer harness for the collector's detectors (src/collector/alerting:
 * monitor.c and every unit of units.c, with CUSUM, Page-Hinkley and ADWIN). An input is a
 * sequence of chunks, each one byte choosing one of four agents, two bytes of length
 * (little-endian) and that many bytes as a Batch payload; those that pass the ingest decoder
 * (tt__batch_parse, as native_conn.c calls it) are committed to one monitor that lives for
 * the whole run, as a collector's does, so per-agent state builds up across inputs. Every
 * unit type runs with a warm-up as short as the configuration allows, so the drift detectors
 * judge from the first samples; the monitor's timer thread ticks (silence, resolution) while
 * the fuzzer feeds it. After each chunk the agent's view is read and checked, and now and then
 * the Prometheus series are rendered. A crash, a sanitizer report or an input slower than
 * libFuzzer's -timeout is a failure: the detectors' cost per event must not depend on what an
 * agent sends (docs/reliability.md, S26).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/alerting/monitor.h"
#include "collector/store/store.h"
#include "common/batch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config_text[] =
    "[calls]\nkinds = tool, api, retrieval, llm, agent\n"
    "[detector.low]\ntype = threshold\nmin = 0.5\n"
    "[detector.high]\ntype = threshold\nsignal = metric:latency\nmax = 10\n"
    "[detector.score_low]\ntype = threshold\nsignal = score:faithfulness\nmin = 0.5\n"
    "[detector.cusum]\ntype = drift\nsignal = confidence\nalgorithm = cusum\nwarmup = 5\n"
    "[detector.ph]\ntype = drift\nsignal = tool_latency\nalgorithm = ph\nwarmup = 2\n"
    "[detector.adwin]\ntype = drift\nsignal = metric:latency\nalgorithm = adwin\nwarmup = 2\n"
    "[detector.score_drift]\ntype = drift\nsignal = score:faithfulness\nwarmup = 5\n"
    "[detector.errors]\ntype = error_rate\nwindow = 4\nmin_calls = 2\nmax_rate = 0.1\n"
    "[detector.loop]\ntype = loop\nrepeats = 2\n"
    "[detector.silence]\ntype = silence\nseconds = 1\n"
    "[detector.gap]\ntype = gap\nmin_events = 1\n"
    "[detector.comply]\ntype = comply\n";

static struct monitor *open_monitor(void)
{
    static struct mon_config cfg;
    char err[256];
    struct monitor *m = NULL;
    if (mon_config_parse(&cfg, config_text, sizeof config_text - 1, "fuzz", err, sizeof err) != 0 ||
        monitor_open(&m, &cfg, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_monitor: %s\n", err);
        abort();
    }
    return m;
}

static void check_view(struct monitor *m, const char *agent)
{
    struct mon_agent_view v;
    if (monitor_agent(m, agent, &v) != 0) {
        abort(); /* committed a moment ago: the monitor must know the agent */
    }
    if (!(isnan(v.confidence) || (v.confidence >= 0 && v.confidence <= 1)) ||
        !(v.events_per_s >= 0) || v.n_readings < 0 || v.n_readings > MON_UNITS_MAX ||
        v.n_incidents < 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct monitor *m;
    static unsigned calls;
    static const char *const agents[4] = {"agent-a", "agent-b", "agent-c", "agent-d"};
    if (!m) {
        m = open_monitor();
    }
    while (size >= 3) {
        const char *agent = agents[data[0] & 3];
        size_t len = (size_t)data[1] | (size_t)data[2] << 8;
        data += 3;
        size -= 3;
        len = len < size ? len : size;
        static struct store_item it;
        memset(&it, 0, sizeof it);
        tt__batch_limits lim = {4096, 64};
        const char *why = NULL;
        if (tt__batch_parse(&it.batch, data, len, &lim, &why) == 0) {
            snprintf(it.ident.agent, sizeof it.ident.agent, "%s", agent);
            it.received_ns = it.batch.t_max > 0 ? (uint64_t)it.batch.t_max : 1;
            monitor_on_commit(m, &it);
            check_view(m, agent);
        }
        data += len;
        size -= len;
    }
    if (++calls % 256 == 0) {
        tt__buf out;
        tt__buf_init(&out, 64u << 20);
        monitor_metrics(m, &out);
        tt__buf_fini(&out);
    }
    return 0;
}

/*
 * cmd_demo.c - `telltale demo`: a synthetic agent built on the public API only, so that
 * `make run` shows a live stream before a real agent is attached. Each turn of a session plans
 * (a reasoning step), calls tools (steps with their queries, some failing), logs, and records
 * latency metrics.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "telltale.h"

static const char usage[] =
    "usage: telltale demo [options]\n"
    "\n"
    "Run a synthetic agent that streams logs, steps (tool calls with their queries) and\n"
    "metrics into a collector until interrupted.\n"
    "\n"
    "  --endpoint ENDPOINT  unix:PATH or tcp://HOST:PORT (default tcp://127.0.0.1:7370; a\n"
    "                       collector takes TCP agents with an ingest token or --ingest-open,\n"
    "                       and its own user's on its Unix socket, DATA/telltale.sock)\n"
    "  --agent NAME         agent name (default demo-agent)\n"
    "  --rate N             turns per second (default 20)\n"
    "  --duration S         stop after S seconds (default: run until interrupted)\n"
    "  --spool-dir DIR      spool unacknowledged events there while the collector is away\n"
    "  --token-file FILE    the ingest token, first line of FILE (mode 0600)\n"
    "  --help               this text\n"
    "\n"
    "While the collector refuses or cannot be reached, the demo says why on stderr.\n"
    "Exit status: 0 after the duration or an interrupt; 2 usage error; 1 other errors.\n";

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

static const char *const tools[] = {"sql", "search", "read_file", "calculator"};
static const char *const queries[] = {
    "SELECT name, price FROM products WHERE stock > 0 ORDER BY price LIMIT 5",
    "weather in Lyon tomorrow", "/etc/os-release", "17 * 23 + 4"};

static void turn(tt_client *c, const char *session, long n)
{
    tt_step plan, tool;
    tt_step_begin(c, &plan, NULL, TT_STEP_REASONING, session, "plan", "decide which tool to use");
    sleep_ns(200000 + rnd() % 800000);
    tt_step_end(c, &plan, TT_STATUS_OK, 0, NULL);
    int k = (int)(rnd() % 4);
    tt_step_begin(c, &tool, NULL, TT_STEP_TOOL, session, tools[k], queries[k]);
    uint64_t lat = 1000000 + rnd() % 9000000;
    sleep_ns(lat / 4);
    int failed = rnd() % 20 == 0;
    tt_step_end(c, &tool, failed ? TT_STATUS_ERROR : TT_STATUS_OK,
                failed ? -1 : 64 + (int64_t)(rnd() % 4096), failed ? "tool timed out" : NULL);
    tt_attr attrs[] = {TT_STR("tool", tools[k]), TT_INT("turn", n)};
    tt_log(c, session, failed ? TT_WARN : TT_INFO, failed ? "tool call failed" : "tool call done",
           attrs, 2);
    tt_metric(c, session, TT_HISTOGRAM, "tool.latency", (double)lat / 1e6, "ms", attrs, 1);
    tt_metric(c, session, TT_COUNTER, "turns", 1, NULL, NULL, 0);
}

int cmd_demo(int argc, char **argv)
{
    static const struct option longopts[] = {{"endpoint", required_argument, NULL, 'e'},
                                             {"agent", required_argument, NULL, 'a'},
                                             {"rate", required_argument, NULL, 'r'},
                                             {"duration", required_argument, NULL, 'd'},
                                             {"spool-dir", required_argument, NULL, 's'},
                                             {"token-file", required_argument, NULL, 'F'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    tt_config *cfg;
    if (tt_config_new(&cfg) != 0) {
        return EXIT_FAIL;
    }
    tt_config_set(cfg, "agent", "demo-agent");
    double rate = 20, duration = 0;
    int opt, rc = 0;
    opterr = 0;
    while (rc == 0 && (opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end = NULL;
        switch (opt) {
        case 'e':
            rc = tt_config_set(cfg, "endpoint", optarg);
            break;
        case 'a':
            rc = tt_config_set(cfg, "agent", optarg);
            break;
        case 's':
            rc = tt_config_set(cfg, "spool_dir", optarg);
            break;
        case 'F': {
            char token[300];
            if (cli_read_token_file(optarg, token, sizeof token, 0, "telltale demo") != 0) {
                tt_config_free(cfg);
                return EXIT_FAIL;
            }
            rc = tt_config_set(cfg, "token", token);
            explicit_bzero(token, sizeof token); /* a dead store memset may be elided */
            break;
        }
        case 'r':
            rate = strtod(optarg, &end);
            rc = (*end || rate <= 0 || rate > 100000) ? -1 : 0;
            break;
        case 'd':
            duration = strtod(optarg, &end);
            rc = (*end || duration < 0) ? -1 : 0;
            break;
        case 'h':
            fputs(usage, stdout);
            tt_config_free(cfg);
            return EXIT_OK;
        default:
            rc = -1;
        }
    }
    if (rc || optind < argc) {
        fprintf(stderr, "telltale demo: bad option %s %s\n%s", argv[optind - 1],
                tt_config_error(cfg), usage);
        tt_config_free(cfg);
        return EXIT_USAGE;
    }
    tt_client *c;
    rc = tt_open(&c, cfg);
    tt_config_free(cfg);
    if (rc) {
        fprintf(stderr, "telltale demo: %s\n", tt_strerror(rc));
        return EXIT_FAIL;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char why[600] = "";
    long watched = 0; /* seconds since t0 at the last look at the connection */
    for (long n = 1; !stop; n++) {
        char session[32];
        snprintf(session, sizeof session, "session-%ld", 1 + (n / 50) % 5);
        turn(c, session, n);
        sleep_ns((uint64_t)(1e9 / rate));
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > watched) {
            /* Once a second: an agent the collector refuses says so while it runs. */
            watched = now.tv_sec - t0.tv_sec;
            cli_connection_watch("telltale demo", c, why, sizeof why);
        }
        if (duration > 0 &&
            (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >= duration) {
            break;
        }
    }
    tt_stats s;
    tt_stats_get(c, &s, sizeof s);
    cli_connection_watch("telltale demo", c, why, sizeof why);
    rc = tt_close(c, 2000);
    fprintf(stderr, "telltale demo: %llu events emitted, %llu acknowledged, %llu dropped\n",
            (unsigned long long)s.emitted, (unsigned long long)s.acked,
            (unsigned long long)s.dropped_total);
    return EXIT_OK;
}

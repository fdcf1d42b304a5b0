/*
 * cmd_tail.c - `telltale tail`: follow new events live through the collector's server-sent
 * events stream, reconnecting when the collector restarts. Telemetry text is stripped of
 * control characters before it reaches the terminal.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage[] =
    "usage: telltale tail [options]\n"
    "\n"
    "Follow new events as they are stored, one line each (or JSON with --json).\n"
    "\n"
    "  --http HOST:PORT     the collector's HTTP API (default $TELLTALE_HTTP or "
    "127.0.0.1:7371)\n" CLI_AUTH_HELP "  --agent NAME         only this agent\n"
    "  --session ID         only this session\n"
    "  --kind K[,K...]      only these kinds (log, metric, step, tokens, response, ...)\n"
    "  --min-severity S     logs at or above S\n"
    "  --json               print each event as a JSON line\n"
    "  --count N            exit after N events\n"
    "  --help               this text\n"
    "\n"
    "Exit status: 0 after --count events or when interrupted; 1 the collector refused the\n"
    "request (printed); 2 usage error. An unreachable collector is retried every 2 s.\n";

struct tail_state {
    int json;
    long remaining; /* -1: unlimited */
    char line[1u << 20];
    size_t len;
    int overflow;
};

static void print_human(struct tail_state *t, const char *data)
{
    json_error_t jerr;
    json_t *o = json_loads(data, 0, &jerr);
    if (!o) {
        return;
    }
    const char *fields[] = {"time", "agent",   "kind",  "session", "severity",
                            "name", "message", "query", "status"};
    char out[4096] = "";
    size_t off = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0] && off < sizeof out; i++) {
        json_t *v = json_object_get(o, fields[i]);
        if (json_is_string(v)) {
            off += (size_t)snprintf(out + off, sizeof out - off, "%s%s", off ? " " : "",
                                    json_string_value(v));
        }
    }
    json_t *v = json_object_get(o, "value");
    if (json_is_number(v) && off < sizeof out) {
        off += (size_t)snprintf(out + off, sizeof out - off, " %g", json_number_value(v));
    }
    json_t *d = json_object_get(o, "duration_ns");
    if (json_is_integer(d) && off < sizeof out) {
        off += (size_t)snprintf(out + off, sizeof out - off, " %.3fms",
                                (double)json_integer_value(d) / 1e6);
    }
    json_t *e = json_object_get(o, "error");
    if (json_is_string(e) && off < sizeof out) {
        snprintf(out + off, sizeof out - off, " error: %s", json_string_value(e));
    }
    json_decref(o);
    cli_sanitize(out);
    (void)t;
    puts(out);
}

/* One SSE line. Returns nonzero to stop. */
static int on_line(struct tail_state *t, char *line)
{
    if (strncmp(line, "data: ", 6) != 0) {
        return 0;
    }
    if (t->json) {
        cli_sanitize(line + 6);
        puts(line + 6);
    } else {
        print_human(t, line + 6);
    }
    fflush(stdout);
    if (t->remaining > 0 && --t->remaining == 0) {
        return 1;
    }
    return 0;
}

static int tail_sink(void *ctx, const char *data, size_t n)
{
    struct tail_state *t = ctx;
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n') {
            t->line[t->len] = 0;
            int stop = t->overflow ? 0 : on_line(t, t->line);
            t->len = 0;
            t->overflow = 0;
            if (stop) {
                return 1;
            }
        } else if (t->len < sizeof t->line - 1) {
            t->line[t->len++] = data[i];
        } else {
            t->overflow = 1;
        }
    }
    return 0;
}

int cmd_tail(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"http", required_argument, NULL, 'H'},  CLI_AUTH_LONGOPTS,
        {"agent", required_argument, NULL, 'a'}, {"session", required_argument, NULL, 's'},
        {"kind", required_argument, NULL, 'k'},  {"min-severity", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    static const char *const params[] = {"",      "",        "",     "",
                                         "agent", "session", "kind", "min_severity"};
    const char *http = cli_http_default();
    struct cli_auth auth = {0};
    char qs[8192] = "";
    struct tail_state *t = calloc(1, sizeof *t);
    if (!t) {
        return EXIT_FAIL;
    }
    t->remaining = -1;
    int opt, idx = 0, rc = EXIT_OK;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        char *end;
        if (opt == 'H') {
            http = optarg;
        } else if (cli_auth_option(&auth, opt, optarg)) {
            continue;
        } else if (opt == 'j') {
            t->json = 1;
        } else if (opt == 'n') {
            t->remaining = strtol(optarg, &end, 10);
            if (*end || t->remaining <= 0) {
                fprintf(stderr, "telltale tail: --count: expected a positive integer\n");
                free(t);
                return EXIT_USAGE;
            }
        } else if (opt == 'h') {
            fputs(usage, stdout);
            free(t);
            return EXIT_OK;
        } else if (opt == '?' || opt == ':' || cli_qs_add(qs, sizeof qs, params[idx], optarg)) {
            fprintf(stderr, "telltale tail: unknown option or missing value: %s\n%s",
                    argv[optind - 1], usage);
            free(t);
            return EXIT_USAGE;
        }
    }
    int failed;
    const char *token = cli_auth_token(&auth, "telltale tail", &failed);
    if (failed) {
        free(t);
        return EXIT_FAIL;
    }
    for (;;) {
        char err[512];
        t->len = 0;
        long status =
            cli_http_get(http, "/api/v1/stream", qs, token, 0, tail_sink, t, err, sizeof err);
        if (t->remaining == 0) {
            break;
        }
        if (status >= 300) {
            cli_http_failed("telltale tail", status, err, &auth);
            rc = EXIT_FAIL;
            break;
        }
        if (status < 0) {
            fprintf(stderr, "telltale tail: %s; retrying\n", err);
        }
        sleep(2);
    }
    free(t);
    return rc;
}

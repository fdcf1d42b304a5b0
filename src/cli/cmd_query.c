/*
 * cmd_query.c - `telltale query`: stored events as JSON lines, or their count, through the
 * collector's HTTP API.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char usage[] =
    "usage: telltale query [options]\n"
    "\n"
    "Print stored events as JSON lines (one object per event, docs/http-api.md), oldest\n"
    "first, or just their number with --count.\n"
    "\n"
    "  --http HOST:PORT     the collector's HTTP API (default $TELLTALE_HTTP or "
    "127.0.0.1:7371)\n" CLI_AUTH_HELP "  --agent NAME         only this agent\n"
    "  --session ID         only this session\n"
    "  --kind K[,K...]      log, metric, step, step_begin, step_end, tokens, response, ...\n"
    "  --min-severity S     logs at or above S (trace, debug, info, warn, error, fatal)\n"
    "  --since T --until T  time range: Unix ns or RFC 3339 UTC (2026-11-24T10:00:00Z)\n"
    "  --limit N            at most N events (default: all)\n"
    "  --count              print the number of matching events only\n"
    "  --responses          print stored responses (summary, verdict) instead of events, as one\n"
    "                       JSON object; --agent, --session and --limit filter them\n"
    "  --response ID        print one response: summary, per-token arrays, top-k, guard\n"
    "                       decisions (ID: 16 hex digits, as in the \"response_id\" of events)\n"
    "  --help               this text\n"
    "\n"
    "Exit status: 0 success; 1 the collector answered with an error (printed), or --agent\n"
    "names no agent the collector knows (said on stderr, nothing on stdout); 2 usage error;\n"
    "3 the collector could not be reached.\n";

static int print_sink(void *ctx, const char *data, size_t n)
{
    (void)ctx;
    return fwrite(data, 1, n, stdout) == n ? 0 : -1;
}

int cmd_query(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"http", required_argument, NULL, 'H'},     CLI_AUTH_LONGOPTS,
        {"agent", required_argument, NULL, 'a'},    {"session", required_argument, NULL, 's'},
        {"kind", required_argument, NULL, 'k'},     {"min-severity", required_argument, NULL, 'm'},
        {"since", required_argument, NULL, 'S'},    {"until", required_argument, NULL, 'U'},
        {"limit", required_argument, NULL, 'l'},    {"count", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},           {"responses", no_argument, NULL, 'L'},
        {"response", required_argument, NULL, 'R'}, {NULL, 0, NULL, 0}};
    static const char *const params[] = {
        "", "", "", "", "agent", "session", "kind", "min_severity", "since", "until", "limit"};
    const char *http = cli_http_default();
    struct cli_auth auth = {0};
    char qs[8192] = "";
    int count = 0, responses = 0, opt, idx = 0;
    const char *response = NULL, *agent = NULL;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        if (opt == 'H') {
            http = optarg;
        } else if (cli_auth_option(&auth, opt, optarg)) {
            continue;
        } else if (opt == 'c') {
            count = 1;
        } else if (opt == 'L') {
            responses = 1;
        } else if (opt == 'R') {
            response = optarg;
        } else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (opt == '?' || opt == ':') {
            fprintf(stderr, "telltale query: unknown option or missing value: %s\n%s",
                    argv[optind - 1], usage);
            return EXIT_USAGE;
        } else {
            agent = opt == 'a' ? optarg : agent;
            if (cli_qs_add(qs, sizeof qs, params[idx], optarg) != 0) {
                fprintf(stderr, "telltale query: options too long\n");
                return EXIT_USAGE;
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "telltale query: unexpected argument: %s\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (count && strstr(qs, "limit=")) {
        fprintf(stderr, "telltale query: --count and --limit do not go together\n");
        return EXIT_USAGE;
    }
    int failed;
    const char *token = cli_auth_token(&auth, "telltale query", &failed);
    if (failed) {
        return EXIT_FAIL;
    }
    char err[512];
    struct cli_collect body = {.len = 0};
    long status;
    if (agent && !response) {
        /* An unknown agent matches nothing; say so rather than print an empty answer that
         * looks like "no events yet" (a typo in --agent). */
        char path[1024] = "/api/v1/agents/";
        if (cli_path_add(path, sizeof path, agent) != 0) {
            fprintf(stderr, "telltale query: --agent too long\n");
            return EXIT_USAGE;
        }
        status = cli_http_get(http, path, "", token, 600, cli_collect_sink, &body, err, sizeof err);
        if (status < 0) {
            fprintf(stderr, "telltale query: %s\n", err);
            return EXIT_UNREACHABLE;
        }
        if (status != 200 && status != 404) {
            cli_http_failed("telltale query", status, err, &auth);
            return EXIT_FAIL;
        }
        if (status == 404) {
            char shown[300];
            snprintf(shown, sizeof shown, "%s", agent);
            cli_sanitize(shown);
            fprintf(stderr, "telltale query: no agent named \"%s\" is known to the collector\n",
                    shown);
            return EXIT_FAIL;
        }
        body.len = 0;
        body.buf[0] = '\0';
    }
    if (response || responses) {
        if (count || (response && (responses || qs[0]))) {
            fprintf(stderr, "telltale query: --response takes no filter; --responses no --count\n");
            return EXIT_USAGE;
        }
        char path[300];
        if (response &&
            (strlen(response) != 16 || strspn(response, "0123456789abcdefABCDEF") != 16)) {
            fprintf(stderr, "telltale query: a response ID is 16 hexadecimal digits\n");
            return EXIT_USAGE;
        }
        snprintf(path, sizeof path, "/api/v1/responses%s%s", response ? "/" : "",
                 response ? response : "");
        status = cli_http_get(http, path, qs, token, 600, print_sink, NULL, err, sizeof err);
        if (status < 0) {
            fprintf(stderr, "telltale query: %s\n", err);
            return EXIT_UNREACHABLE;
        }
        if (status != 200) {
            cli_http_failed("telltale query", status, err, &auth);
            return EXIT_FAIL;
        }
        putchar('\n');
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
    }
    if (count) {
        status = cli_http_get(http, "/api/v1/events/count", qs, token, 600, cli_collect_sink, &body,
                              err, sizeof err);
    } else {
        cli_qs_add(qs, sizeof qs, "format", "ndjson");
        /* Errors come back as one JSON object; events stream straight to stdout. */
        status =
            cli_http_get(http, "/api/v1/events", qs, token, 0, print_sink, NULL, err, sizeof err);
    }
    if (status < 0) {
        fprintf(stderr, "telltale query: %s\n", err);
        return EXIT_UNREACHABLE;
    }
    if (status != 200) {
        cli_http_failed("telltale query", status, err, &auth);
        return EXIT_FAIL;
    }
    if (count) {
        const char *p = strstr(body.buf, "\"count\":");
        if (!p) {
            fprintf(stderr, "telltale query: unexpected answer\n");
            return EXIT_FAIL;
        }
        printf("%lld\n", strtoll(p + 8, NULL, 10));
    }
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
}

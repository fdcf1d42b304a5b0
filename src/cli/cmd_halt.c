/*
 * cmd_halt.c - `telltale halt (--session ID | --agent NAME) [--reason R]`: ask the collector to
 * halt a session (POST /api/v1/sessions/{id}/halt) or every response an agent has open (POST
 * /api/v1/agents/{agent}/halt). The collector sends the order to the connected agents; each sees
 * TT_HALT at its next token. cli_order is also `telltale resume` (cmd_resume.c).
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/json.h"

static const char usage[] =
    "usage: telltale halt (--session ID | --agent NAME) [options]\n"
    "\n"
    "Halt a session: the collector sends the order to the connected agents that own it, and\n"
    "each sees TT_HALT (reason \"operator halt: R\") at its next token of a response in that\n"
    "session, and at the first token of the session's later responses, until `telltale resume`.\n"
    "With --agent, every response the agent has open now is halted (its later ones are not).\n"
    "Prints the collector's answer (agents and connections reached) as JSON.\n"
    "\n"
    "  --session ID         the session to halt\n"
    "  --agent NAME         halt every response this agent has open instead\n"
    "  --reason R           why (at most 100 bytes; default \"no reason given\")\n"
    "  --http HOST:PORT     the collector's HTTP API (default $TELLTALE_HTTP or "
    "127.0.0.1:7371)\n" CLI_AUTH_HELP "  --help               this text\n"
    "\n" CLI_ORDER_EXIT_HELP;

/* The value after the last "key": in a JSON answer, or NULL. */
static const char *last_value(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *v = NULL;
    for (const char *q = json; (q = strstr(q, pat)) != NULL; q++) {
        v = q + strlen(pat);
    }
    return v;
}

int cli_order(int argc, char **argv, const char *verb, const char *help)
{
    static const struct option longopts[] = {{"session", required_argument, NULL, 's'},
                                             {"agent", required_argument, NULL, 'a'},
                                             {"reason", required_argument, NULL, 'r'},
                                             {"http", required_argument, NULL, 'H'},
                                             CLI_AUTH_LONGOPTS,
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *http = cli_http_default();
    struct cli_auth auth = {0};
    const char *session = NULL, *agent = NULL, *reason = NULL;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (opt == 's') {
            session = optarg;
        } else if (opt == 'a') {
            agent = optarg;
        } else if (opt == 'r') {
            reason = optarg;
        } else if (opt == 'H') {
            http = optarg;
        } else if (cli_auth_option(&auth, opt, optarg)) {
            continue;
        } else if (opt == 'h') {
            fputs(help, stdout);
            return EXIT_OK;
        } else {
            fprintf(stderr, "telltale %s: unknown option or missing value: %s\n%s", verb,
                    argv[optind - 1], help);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "telltale %s: unexpected argument: %s\n", verb, argv[optind]);
        return EXIT_USAGE;
    }
    const char *name = session ? session : agent;
    if ((session && agent) || !name || !*name || strlen(name) > 255) {
        fprintf(stderr, "telltale %s: --session ID or --agent NAME (1 to 255 bytes) is required\n",
                verb);
        return EXIT_USAGE;
    }
    if (reason && strlen(reason) > 100) {
        fprintf(stderr, "telltale %s: --reason is longer than 100 bytes\n", verb);
        return EXIT_USAGE;
    }
    int failed;
    char who[32];
    snprintf(who, sizeof who, "telltale %s", verb);
    const char *token = cli_auth_token(&auth, who, &failed);
    if (failed) {
        return EXIT_FAIL;
    }
    char *enc = curl_easy_escape(NULL, name, 0);
    if (!enc) {
        fprintf(stderr, "telltale %s: out of memory\n", verb);
        return EXIT_FAIL;
    }
    char path[1024];
    snprintf(path, sizeof path, "/api/v1/%s/%s/%s", session ? "sessions" : "agents", enc, verb);
    curl_free(enc);
    tt__buf b;
    tt__buf_init(&b, 4096);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    if (reason) {
        tt__json_kv_cstr(&j, "reason", reason);
    }
    tt__json_obj_end(&j);
    tt__buf_append(&b, "", 1);
    char err[512];
    struct cli_collect out = {.len = 0};
    long status = cli_http_post(http, path, token, (const char *)b.data, 30, cli_collect_sink, &out,
                                err, sizeof err);
    tt__buf_fini(&b);
    if (status < 0) {
        fprintf(stderr, "telltale %s: %s\n", verb, err);
        return EXIT_UNREACHABLE;
    }
    cli_sanitize(out.buf);
    if (status != 202) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "telltale %s", verb);
        if (status >= 200 && status <= 299) {
            snprintf(err, sizeof err, "HTTP %ld: %.400s", status, out.buf);
        }
        cli_http_failed(cmd, status, err, &auth);
        return EXIT_FAIL;
    }
    printf("%s\n", out.buf);
    /* The totals are the last "connections", "nats_published" and "nats_delivered" of the
     * answer (true, or a session's count). */
    const char *p = last_value(out.buf, "connections");
    const char *np = last_value(out.buf, "nats_published");
    const char *nd = last_value(out.buf, "nats_delivered");
    int nats = np && (strncmp(np, "true", 4) == 0 || strtol(np, NULL, 10) > 0);
    int confirmed = nd && (strncmp(nd, "true", 4) == 0 || strtol(nd, NULL, 10) > 0);
    if ((!p || strtol(p, NULL, 10) <= 0) && nats) {
        fprintf(stderr,
                confirmed ? "telltale %s: delivered over NATS (the agent confirmed it)\n"
                          : "telltale %s: published on NATS; no agent confirmed it yet (the "
                            "collector resends it for up to 2 minutes)\n",
                verb);
        return EXIT_OK;
    }
    if (!p || strtol(p, NULL, 10) <= 0) {
        fprintf(stderr,
                session ? "telltale %s: no agent of session %s is connected\n"
                        : "telltale %s: agent %s is not connected\n",
                verb, name);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

int cmd_halt(int argc, char **argv)
{
    return cli_order(argc, argv, "halt", usage);
}

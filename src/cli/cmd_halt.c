/*
 * cmd_halt.c - `telltale halt --session ID [--reason R]`: ask the collector to halt a session
 * (POST /api/v1/sessions/{id}/halt). The collector sends the order to every connected agent
 * that owns the session; each sees TT_HALT at its next token.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/json.h"

static const char usage[] =
    "usage: telltale halt --session ID [options]\n"
    "\n"
    "Halt a session: the collector sends the order to the connected agents that own it, and\n"
    "each sees TT_HALT (reason \"operator halt: R\") at its next token. Prints the collector's\n"
    "answer (agents and connections reached) as JSON.\n"
    "\n"
    "  --session ID         the session to halt (required)\n"
    "  --reason R           why (at most 100 bytes; default \"no reason given\")\n"
    "  --http HOST:PORT     the collector's HTTP API (default $TELLTALE_HTTP or "
    "127.0.0.1:7371)\n" CLI_AUTH_HELP "  --help               this text\n"
    "\n"
    "Exit status: 0 the order reached at least one connection; 1 the collector answered with an\n"
    "error (unknown session, bad reason) or no agent of the session is connected; 2 usage\n"
    "error; 3 the collector could not be reached.\n";

int cmd_halt(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"session", required_argument, NULL, 's'}, {"reason", required_argument, NULL, 'r'},
        {"http", required_argument, NULL, 'H'},    CLI_AUTH_LONGOPTS,
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    const char *http = cli_http_default();
    struct cli_auth auth = {0};
    const char *session = NULL, *reason = NULL;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (opt == 's') {
            session = optarg;
        } else if (opt == 'r') {
            reason = optarg;
        } else if (opt == 'H') {
            http = optarg;
        } else if (cli_auth_option(&auth, opt, optarg)) {
            continue;
        } else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else {
            fprintf(stderr, "telltale halt: unknown option or missing value: %s\n%s",
                    argv[optind - 1], usage);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "telltale halt: unexpected argument: %s\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!session || !*session || strlen(session) > 255) {
        fprintf(stderr, "telltale halt: --session ID (1 to 255 bytes) is required\n");
        return EXIT_USAGE;
    }
    if (reason && strlen(reason) > 100) {
        fprintf(stderr, "telltale halt: --reason is longer than 100 bytes\n");
        return EXIT_USAGE;
    }
    int failed;
    const char *token = cli_auth_token(&auth, "telltale halt", &failed);
    if (failed) {
        return EXIT_FAIL;
    }
    char *enc = curl_easy_escape(NULL, session, 0);
    if (!enc) {
        fprintf(stderr, "telltale halt: out of memory\n");
        return EXIT_FAIL;
    }
    char path[1024];
    snprintf(path, sizeof path, "/api/v1/sessions/%s/halt", enc);
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
        fprintf(stderr, "telltale halt: %s\n", err);
        return EXIT_UNREACHABLE;
    }
    cli_sanitize(out.buf);
    if (status != 202) {
        fprintf(stderr, "telltale halt: HTTP %ld %s\n", status, out.buf);
        return EXIT_FAIL;
    }
    printf("%s\n", out.buf);
    /* The total is the last "connections" of the answer. */
    const char *p = NULL, *q = out.buf;
    while ((q = strstr(q, "\"connections\":")) != NULL) {
        p = q;
        q++;
    }
    if (!p || strtol(p + 14, NULL, 10) <= 0) {
        fprintf(stderr, "telltale halt: no agent of session %s is connected\n", session);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

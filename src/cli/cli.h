/*
 * cli.h - what the subcommands of the telltale binary share: their entry points and a small
 * HTTP client (libcurl) for talking to the collector's API.
 */
#ifndef TT_CLI_CLI_H
#define TT_CLI_CLI_H

#include <stddef.h>

/* Exit statuses shared by every subcommand (each documents its own meanings in --help). */
enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,       /* the command ran and something failed (bad input line, HTTP error) */
    EXIT_USAGE = 2,      /* bad options */
    EXIT_UNREACHABLE = 3 /* the collector could not be reached or did not acknowledge in time */
};

int cmd_serve(int argc, char **argv);
int cmd_emit(int argc, char **argv);
int cmd_tail(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_halt(int argc, char **argv);

/* The collector's HTTP address: --http, else $TELLTALE_HTTP, else 127.0.0.1:7371. */
const char *cli_http_default(void);

/* The operator token: --token, else $TELLTALE_TOKEN, else NULL. */
const char *cli_token_default(void);

/* Append "&name=value" (URL-encoded) to a query string under construction. */
int cli_qs_add(char *qs, size_t cap, const char *name, const char *value);

/* GET http://HOST:PORT/PATH?QS, handing the body to sink as it arrives (return nonzero from
 * sink to stop). Returns the HTTP status, or -1 with err set when the collector was not
 * reached. timeout_s 0 means none (streams). */
typedef int (*cli_sink)(void *ctx, const char *data, size_t n);
long cli_http_get(const char *hostport, const char *path, const char *qs, const char *token,
                  long timeout_s, cli_sink sink, void *ctx, char *err, size_t errlen);

/* POST body (JSON) to http://HOST:PORT/PATH; as cli_http_get otherwise. */
long cli_http_post(const char *hostport, const char *path, const char *token, const char *body,
                   long timeout_s, cli_sink sink, void *ctx, char *err, size_t errlen);

/* Replace control characters (ANSI escapes included) before text reaches a terminal. */
void cli_sanitize(char *s);

/* A sink for the http helpers that keeps the first bytes of a response (an error's JSON body),
 * NUL-terminated, and drops the rest. */
struct cli_collect {
    char buf[8192];
    size_t len;
};
int cli_collect_sink(void *ctx, const char *data, size_t n);

#endif

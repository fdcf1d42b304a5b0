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
int cmd_resume(int argc, char **argv);
/* halt and resume (cmd_halt.c): verb is "halt" or "resume", help its usage text. */
int cli_order(int argc, char **argv, const char *verb, const char *help);

/* The collector's HTTP address: --http, else $TELLTALE_HTTP, else 127.0.0.1:7371. */
const char *cli_http_default(void);

/* Where a subcommand finds the operator token (docs/security.md): --token-file FILE, else
 * --data DIR (DIR/operator.token), else $TELLTALE_TOKEN, else $TELLTALE_TOKEN_FILE, else
 * operator.token in the default data directory ($TELLTALE_DATA or ./telltale-data) when it is
 * there. --token TOKEN still works but warns: a command line is visible to every local user. */
struct cli_auth {
    const char *token_opt;  /* --token (deprecated) */
    const char *token_file; /* --token-file */
    const char *data_dir;   /* --data */
    char token[300];
    /* Set by cli_auth_token: where the token came from ("" when none was found), and the file
     * looked for when none was (for cli_http_failed's advice on a 401). */
    char from[4300];
    char looked[4300];
};

/* The long options of struct cli_auth, for a subcommand's option table. */
#define CLI_AUTH_LONGOPTS                                                                          \
    {"token", required_argument, NULL, 't'}, {"token-file", required_argument, NULL, 'F'},         \
    {                                                                                              \
        "data", required_argument, NULL, 'D'                                                       \
    }

/* The help lines of those options. */
/* The exit statuses of `telltale halt` and `telltale resume` (cli_order). */
#define CLI_ORDER_EXIT_HELP                                                                        \
    "Exit status: 0 the order reached at least one connection, or a collector on NATS took it\n"   \
    "for the agent's control subject (a note says whether the agent confirmed it); 1 the\n"        \
    "collector answered with an error (unknown session, bad reason) or no agent of the session\n"  \
    "is connected; 2 usage error; 3 the collector could not be reached.\n"

#define CLI_AUTH_HELP                                                                              \
    "  --token-file FILE    the operator token, first line of FILE (mode 0600; default\n"          \
    "                       $TELLTALE_TOKEN, $TELLTALE_TOKEN_FILE, or the collector's\n"           \
    "                       DIR/operator.token)\n"                                                 \
    "  --data DIR           the collector's data directory, to read DIR/operator.token\n"          \
    "                       (default $TELLTALE_DATA or ./telltale-data)\n"

/* The first line of the token file path into out: 0; 1 when it does not exist and
 * may_be_missing; -1 with the reason printed (prefixed with cmd) when it cannot be read, is
 * empty, or group or others may access it. */
int cli_read_token_file(const char *path, char *out, size_t cap, int may_be_missing,
                        const char *cmd);

/* Take option opt (with optarg) if it is one of CLI_AUTH_LONGOPTS; 1 if taken, 0 if not. */
int cli_auth_option(struct cli_auth *a, int opt, const char *arg);

/* Find the token; returns it (NULL when there is none to send), or sets *failed and prints
 * why (prefixed with cmd) when a file that should hold it cannot be read or is readable by
 * others. */
const char *cli_auth_token(struct cli_auth *a, const char *cmd, int *failed);

/* Append one URL-encoded path segment to a path under construction (0, or -1 if too long). */
int cli_path_add(char *path, size_t cap, const char *segment);
/* Append "&name=value" (URL-encoded) to a query string under construction. */
int cli_qs_add(char *qs, size_t cap, const char *name, const char *value);

/* GET http://HOST:PORT/PATH?QS, handing the body of a 2xx answer to sink as it arrives (return
 * nonzero from sink to stop). Returns the HTTP status, or -1 with err set when the collector was
 * not reached. Any other answer's body never reaches sink: err receives "HTTP N: " and its
 * "error" text (or the start of the body), without control characters. timeout_s 0 means none
 * (streams). */
typedef int (*cli_sink)(void *ctx, const char *data, size_t n);
long cli_http_get(const char *hostport, const char *path, const char *qs, const char *token,
                  long timeout_s, cli_sink sink, void *ctx, char *err, size_t errlen);

/* POST body (JSON) to http://HOST:PORT/PATH; as cli_http_get otherwise. */
long cli_http_post(const char *hostport, const char *path, const char *token, const char *body,
                   long timeout_s, cli_sink sink, void *ctx, char *err, size_t errlen);

/* Print, prefixed with cmd, why a request failed: err as the http helpers set it for status,
 * and for a 401 what to do about the operator token (where a (may be NULL) found it, or where
 * it looked). */
void cli_http_failed(const char *cmd, long status, const char *err, const struct cli_auth *a);

/* Print, prefixed with cmd, why client c is not connected (tt_connection_error) when that
 * differs from what the previous call printed (last, cap bytes, "" at first), and that it is
 * connected again after an error was printed. */
struct tt_client;
void cli_connection_watch(const char *cmd, struct tt_client *c, char *last, size_t cap);

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

/*
 * httpc.c - the CLI's HTTP client, on libcurl, plus helpers every subcommand uses.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "telltale.h"

const char *cli_http_default(void)
{
    const char *e = getenv("TELLTALE_HTTP");
    return e && *e ? e : "127.0.0.1:7371";
}

int cli_auth_option(struct cli_auth *a, int opt, const char *arg)
{
    if (opt == 't') {
        a->token_opt = arg;
    } else if (opt == 'F') {
        a->token_file = arg;
    } else if (opt == 'D') {
        a->data_dir = arg;
    } else {
        return 0;
    }
    return 1;
}

int cli_read_token_file(const char *path, char *out, size_t cap, int may_be_missing,
                        const char *cmd)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && may_be_missing) {
            return 1;
        }
        fprintf(stderr, "%s: cannot read the operator token %s: %s\n", cmd, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO))) {
        fprintf(stderr,
                "%s: %s is not a private regular file (others may read the token); run: "
                "chmod 600 '%s'\n",
                cmd, path, path);
        close(fd);
        return -1;
    }
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n <= 0) {
        fprintf(stderr, "%s: %s holds no token\n", cmd, path);
        return -1;
    }
    out[n] = 0;
    out[strcspn(out, "\r\n")] = 0;
    if (!out[0]) {
        fprintf(stderr, "%s: %s holds no token\n", cmd, path);
        return -1;
    }
    return 0;
}

/* The token of file (may_be_missing: 1 when it does not exist, then a->looked names it). */
static const char *from_file(struct cli_auth *a, const char *file, int may_be_missing,
                             const char *cmd, int *failed)
{
    int rc = cli_read_token_file(file, a->token, sizeof a->token, may_be_missing, cmd);
    *failed = rc < 0;
    snprintf(rc == 0 ? a->from : a->looked, sizeof a->from, "%s", file);
    return rc == 0 ? a->token : NULL;
}

static const char *from_dir(struct cli_auth *a, const char *dir, int may_be_missing,
                            const char *cmd, int *failed)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/operator.token", dir);
    return from_file(a, path, may_be_missing, cmd, failed);
}

const char *cli_auth_token(struct cli_auth *a, const char *cmd, int *failed)
{
    *failed = 0;
    a->from[0] = a->looked[0] = 0;
    if (a->token_opt) {
        fprintf(stderr,
                "%s: warning: --token is deprecated: every local user sees a command "
                "line; use --token-file, --data or TELLTALE_TOKEN_FILE\n",
                cmd);
        snprintf(a->from, sizeof a->from, "--token");
        return a->token_opt;
    }
    const char *file = a->token_file ? a->token_file : NULL;
    if (!file && a->data_dir) {
        return from_dir(a, a->data_dir, 0, cmd, failed);
    }
    const char *env = getenv("TELLTALE_TOKEN");
    if (!file && env && *env) {
        snprintf(a->from, sizeof a->from, "$TELLTALE_TOKEN");
        return env;
    }
    env = getenv("TELLTALE_TOKEN_FILE");
    file = file ? file : env && *env ? env : NULL;
    if (file) {
        return from_file(a, file, 0, cmd, failed);
    }
    env = getenv("TELLTALE_DATA");
    return from_dir(a, env && *env ? env : "telltale-data", 1, cmd, failed);
}

int cli_path_add(char *path, size_t cap, const char *segment)
{
    char *enc = curl_easy_escape(NULL, segment, 0);
    if (!enc) {
        return -1;
    }
    size_t len = strlen(path);
    int n = snprintf(path + len, cap - len, "%s", enc);
    curl_free(enc);
    return n < 0 || (size_t)n >= cap - len ? -1 : 0;
}

int cli_qs_add(char *qs, size_t cap, const char *name, const char *value)
{
    if (!value) {
        return 0;
    }
    char *enc = curl_easy_escape(NULL, value, 0);
    if (!enc) {
        return -1;
    }
    size_t len = strlen(qs);
    int n = snprintf(qs + len, cap - len, "%s%s=%s", len ? "&" : "", name, enc);
    curl_free(enc);
    return n < 0 || (size_t)n >= cap - len ? -1 : 0;
}

struct sink_ctx {
    cli_sink sink;
    void *ctx;
    CURL *h;
    long status;              /* the answer's, read at its first byte */
    struct cli_collect error; /* the body of an answer other than 2xx */
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *cls)
{
    struct sink_ctx *s = cls;
    size_t n = size * nmemb;
    if (!s->status) {
        curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->status);
    }
    if (s->status < 200 || s->status > 299) {
        cli_collect_sink(&s->error, p, n);
        return n;
    }
    return s->sink(s->ctx, p, n) == 0 ? n : 0;
}

/* err = "HTTP status: " and the "error" text of the JSON body, else the body's start. */
static void refusal(char *err, size_t errlen, long status, const char *body)
{
    json_error_t jerr;
    json_t *o = json_loads(body, 0, &jerr);
    const char *e = json_string_value(json_object_get(o, "error"));
    snprintf(err, errlen, "HTTP %ld: %s", status, e ? e : *body ? body : "(no body)");
    json_decref(o);
    char *nl = strchr(err, '\n');
    if (nl && !nl[strspn(nl, "\r\n")]) {
        *nl = 0; /* a trailing line break */
    }
    cli_sanitize(err);
}

void cli_http_failed(const char *cmd, long status, const char *err, const struct cli_auth *a)
{
    fprintf(stderr, "%s: %s\n", cmd, err);
    if (status != 401 || !a) {
        return;
    }
    if (a->from[0]) {
        fprintf(stderr,
                "%s: the collector refused the operator token from %s: a collector generates "
                "its own at first start, DIR/operator.token in its data directory (--data DIR)\n",
                cmd, a->from);
    } else {
        fprintf(stderr,
                "%s: no operator token was found (no %s): give the collector's data directory "
                "with --data DIR (it holds operator.token), or --token-file FILE\n",
                cmd, a->looked[0] ? a->looked : "token file");
    }
}

static long request(const char *hostport, const char *path, const char *qs, const char *token,
                    const char *post_body, long timeout_s, cli_sink sink, void *ctx, char *err,
                    size_t errlen)
{
    static int inited;
    if (!inited) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        inited = 1;
    }
    char url[4096];
    if ((size_t)snprintf(url, sizeof url, "http://%s%s%s%s", hostport, path, qs && *qs ? "?" : "",
                         qs ? qs : "") >= sizeof url) {
        snprintf(err, errlen, "request too long");
        return -1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errlen, "cannot start libcurl");
        return -1;
    }
    struct sink_ctx s = {.sink = sink, .ctx = ctx, .h = h};
    struct curl_slist *hdrs = NULL;
    char auth[600];
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    if (post_body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post_body);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = -1;
    if (rc == CURLE_OK || rc == CURLE_WRITE_ERROR) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (status < 200 || status > 299) {
            refusal(err, errlen, status, s.error.buf);
        }
    } else {
        snprintf(err, errlen, "http://%s: %s", hostport, ebuf[0] ? ebuf : curl_easy_strerror(rc));
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return status;
}

long cli_http_get(const char *hostport, const char *path, const char *qs, const char *token,
                  long timeout_s, cli_sink sink, void *ctx, char *err, size_t errlen)
{
    return request(hostport, path, qs, token, NULL, timeout_s, sink, ctx, err, errlen);
}

long cli_http_post(const char *hostport, const char *path, const char *token, const char *body,
                   long timeout_s, cli_sink sink, void *ctx, char *err, size_t errlen)
{
    return request(hostport, path, NULL, token, body ? body : "", timeout_s, sink, ctx, err,
                   errlen);
}

void cli_connection_watch(const char *cmd, struct tt_client *c, char *last, size_t cap)
{
    char why[600];
    if (cap == 0 || tt_connection_error(c, why, sizeof why) < 0) {
        return;
    }
    /* Compared as it is kept: sanitized and cut to cap, or a reason with a control character
     * or a long one would be printed again on every call. */
    cli_sanitize(why);
    if (strlen(why) >= cap) {
        why[cap - 1] = 0;
    }
    if (strcmp(why, last) == 0) {
        return;
    }
    if (why[0]) {
        fprintf(stderr, "%s: not connected: %s\n", cmd, why);
    } else {
        fprintf(stderr, "%s: connected\n", cmd);
    }
    snprintf(last, cap, "%s", why);
}

void cli_sanitize(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            *p = '?';
        } else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            /* C1 controls in UTF-8 (U+0080..U+009F): U+009B is a CSI on some terminals. */
            p[0] = p[1] = '?';
        }
    }
}

int cli_collect_sink(void *ctx, const char *data, size_t n)
{
    struct cli_collect *c = ctx;
    if (c->len + n >= sizeof c->buf) {
        n = sizeof c->buf - 1 - c->len;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
    c->buf[c->len] = 0;
    return 0;
}

/*
 * auth.c - operator and ingest tokens (auth.h). Tokens are compared without early exit so a
 * network peer cannot learn a prefix from response times; every ingest entry is compared
 * whatever matched before, for the same reason.
 */
#include "collector/api/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collector/secure.h"

struct ingest_entry {
    char agent[256];
    char token[AUTH_TOKEN_MAX + 1];
    size_t token_len;
};

struct auth {
    char operator_token[AUTH_TOKEN_MAX + 1];
    size_t operator_len;
    struct ingest_entry *ingest;
    size_t n_ingest;
};

struct auth *auth_new(void)
{
    return calloc(1, sizeof(struct auth));
}

void auth_free(struct auth *a)
{
    if (a) {
        free(a->ingest);
        free(a);
    }
}

int auth_equal(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned diff = an != bn;
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++) {
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
    }
    return diff == 0;
}

/* Printable token characters only: no spaces, no controls. */
static int token_valid(const char *s, size_t n)
{
    if (n == 0 || n > AUTH_TOKEN_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* Read a whole small secret file into a NUL-terminated heap buffer; a file that group or
 * others may access is refused (its secret may already be known). */
static char *read_small(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    int private = secure_private_fd(fd, path, err, errlen) == 0;
    FILE *f = private ? fdopen(fd, "r") : NULL;
    if (!f) {
        if (private) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        }
        close(fd);
        return NULL;
    }
    char *buf = malloc(AUTH_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, AUTH_FILE_MAX + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad || n > AUTH_FILE_MAX) {
        snprintf(err, errlen, "%s: %s", path,
                 !buf  ? "out of memory"
                 : bad ? "read error"
                       : "larger than 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t' || **s == '\r' || **s == '\n')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r' ||
                  (*s)[*n - 1] == '\n')) {
        (*n)--;
    }
}

int auth_set_operator(struct auth *a, const char *value, int from_file, char *err, size_t errlen)
{
    char *buf = NULL;
    const char *s = value;
    size_t n = strlen(value);
    if (from_file) {
        buf = read_small(value, &n, err, errlen);
        if (!buf) {
            return -1;
        }
        s = buf;
        trim(&s, &n);
        const char *nl = memchr(s, '\n', n);
        n = nl ? (size_t)(nl - s) : n;
    }
    trim(&s, &n);
    int ok = token_valid(s, n);
    if (ok) {
        memcpy(a->operator_token, s, n);
        a->operator_token[n] = 0;
        a->operator_len = n;
    } else {
        snprintf(err, errlen,
                 "operator token %s: empty, longer than %d bytes, or holding spaces "
                 "or control characters",
                 from_file ? value : "(environment)", AUTH_TOKEN_MAX);
    }
    free(buf);
    return ok ? 0 : -1;
}

/* One "AGENT TOKEN" line into e; -1 if malformed. */
static int parse_ingest_line(const char *s, size_t n, struct ingest_entry *e)
{
    size_t i = 0;
    while (i < n && s[i] != ' ' && s[i] != '\t') {
        i++;
    }
    const char *tok = s + i;
    size_t tn = n - i;
    trim(&tok, &tn);
    if (i == 0 || i >= sizeof e->agent || !token_valid(tok, tn)) {
        return -1;
    }
    for (size_t k = 0; k < i; k++) {
        if ((unsigned char)s[k] < 0x20 || s[k] == 0x7f) {
            return -1;
        }
    }
    memcpy(e->agent, s, i);
    e->agent[i] = 0;
    memcpy(e->token, tok, tn);
    e->token[tn] = 0;
    e->token_len = tn;
    return 0;
}

int auth_load_ingest(struct auth *a, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *buf = read_small(path, &len, err, errlen);
    if (!buf) {
        return -1;
    }
    struct ingest_entry *list = calloc(AUTH_INGEST_MAX, sizeof *list);
    size_t count = 0;
    int rc = list ? 0 : -1;
    if (!list) {
        snprintf(err, errlen, "out of memory");
    }
    const char *p = buf, *end = buf + len;
    for (int line = 1; rc == 0 && p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *s = p;
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        p = nl ? nl + 1 : end;
        trim(&s, &n);
        if (n == 0 || s[0] == '#') {
            continue;
        }
        if (count == AUTH_INGEST_MAX) {
            snprintf(err, errlen, "%s: more than %d tokens", path, AUTH_INGEST_MAX);
            rc = -1;
        } else if (parse_ingest_line(s, n, &list[count]) != 0) {
            snprintf(err, errlen, "%s:%d: expected \"AGENT TOKEN\" (token 1-%d printable bytes)",
                     path, line, AUTH_TOKEN_MAX);
            rc = -1;
        } else {
            count++;
        }
    }
    if (rc == 0 && count == 0) {
        snprintf(err, errlen, "%s: no tokens", path);
        rc = -1;
    }
    free(buf);
    if (rc != 0) {
        free(list);
        return -1;
    }
    free(a->ingest);
    a->ingest = list;
    a->n_ingest = count;
    return 0;
}

int auth_operator_required(const struct auth *a)
{
    return a && a->operator_len > 0;
}

const char *auth_operator_token(const struct auth *a)
{
    return auth_operator_required(a) ? a->operator_token : NULL;
}

int auth_operator_ok(const struct auth *a, const char *authorization)
{
    if (!auth_operator_required(a)) {
        return 1;
    }
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) {
        return 0;
    }
    const char *t = authorization + 7;
    while (*t == ' ') {
        t++;
    }
    size_t n = strnlen(t, AUTH_TOKEN_MAX + 1);
    return auth_equal(t, n, a->operator_token, a->operator_len);
}

int auth_authorize(void *ctx, const tt__hello *h, char *agent, char *err, size_t errlen)
{
    const struct auth *a = ctx;
    if (!a || a->n_ingest == 0) {
        return 0;
    }
    size_t n = strnlen(h->token, sizeof h->token);
    const struct ingest_entry *found = NULL;
    for (size_t i = 0; i < a->n_ingest; i++) {
        int eq = auth_equal(h->token, n, a->ingest[i].token, a->ingest[i].token_len);
        if (eq && !found) {
            found = &a->ingest[i];
        }
    }
    if (!found) {
        snprintf(err, errlen, "%s",
                 n ? "unknown ingest token" : "this collector requires an ingest token");
        return -1;
    }
    snprintf(agent, 256, "%s", found->agent);
    return 1;
}

/*
 * browser.c - the HTTP API's defences against web pages open in a browser on the machine
 * (docs/security.md, "Browsers on the machine"):
 *
 * - DNS rebinding: a page of evil.example whose name is made to resolve to 127.0.0.1 talks to
 *   the collector as "same origin"; its requests carry Host: evil.example. So the Host header
 *   must name the listening address (or localhost when it is loopback, or any IP literal when it
 *   is a wildcard) with its port, or be one of --allowed-hosts.
 * - Cross-site requests: a state-changing request (any method but GET and HEAD) with an Origin
 *   other than the collector's own is refused, and its body must be declared JSON, which no
 *   form or "simple" cross-origin request can send without a CORS preflight that the collector
 *   never approves (no Access-Control-* header is ever sent). Credentials come only from the
 *   Authorization header, never from cookies, so a browser never attaches them by itself.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "collector/api/http.h"

/* Split "host[:port]" or "[v6][:port]" into host (no brackets) and port (0 when absent). */
static int split_host(const char *s, char *host, size_t cap, unsigned *port)
{
    const char *end, *p;
    if (s[0] == '[') {
        end = strchr(s, ']');
        if (!end) {
            return -1;
        }
        s++;
        p = end + 1;
    } else {
        end = strchr(s, ':');
        end = end ? end : s + strlen(s);
        p = end;
    }
    if ((size_t)(end - s) >= cap || end == s) {
        return -1;
    }
    memcpy(host, s, (size_t)(end - s));
    host[end - s] = 0;
    *port = 0;
    if (*p == 0) {
        return 0;
    }
    if (*p != ':' || p[1] == 0 || strlen(p + 1) > 5) {
        return -1;
    }
    unsigned v = 0;
    for (p++; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v == 0 || v > 65535) {
        return -1;
    }
    *port = v;
    return 0;
}

static int is_ip_literal(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

static int is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

static int is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* Whether host:port (port 0: none given) is one of the comma-separated entries of list. An
 * entry "name" matches any port; "name:port" that port only. */
static int in_list(const char *list, const char *host, unsigned port)
{
    while (list && *list) {
        list += strspn(list, " ");
        const char *comma = strchr(list, ',');
        size_t n = comma ? (size_t)(comma - list) : strlen(list);
        char entry[300], eh[256];
        unsigned ep;
        while (n && list[n - 1] == ' ') {
            n--;
        }
        if (n < sizeof entry) {
            memcpy(entry, list, n);
            entry[n] = 0;
            if (split_host(entry, eh, sizeof eh, &ep) == 0 && strcasecmp(eh, host) == 0 &&
                (ep == 0 || ep == port)) {
                return 1;
            }
        }
        list = comma ? comma + 1 : NULL;
    }
    return 0;
}

int browser_host_ok(const struct http_ctx *c, const char *value)
{
    char host[256];
    unsigned port;
    if (!value || split_host(value, host, sizeof host, &port) != 0) {
        return 0;
    }
    if (in_list(c->allowed_hosts, host, port)) {
        return 1;
    }
    if ((port ? port : 80) != c->self_port) {
        return 0;
    }
    if (strcasecmp(host, c->self_host) == 0) {
        return 1;
    }
    if (is_loopback(c->self_host)) {
        return strcasecmp(host, "localhost") == 0 || is_loopback(host);
    }
    return is_wildcard(c->self_host) && (strcasecmp(host, "localhost") == 0 || is_ip_literal(host));
}

static const char *header(const struct http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

unsigned browser_check_request(const struct http_req *r, char *msg, size_t msglen)
{
    const char *host = header(r, "Host");
    if (!browser_host_ok(r->ctx, host)) {
        snprintf(msg, msglen,
                 "Host \"%.100s\" is not this collector's address (DNS rebinding?); a proxy or a "
                 "name in front of it needs --allowed-hosts",
                 host ? host : "");
        return MHD_HTTP_MISDIRECTED_REQUEST;
    }
    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0) {
        return 0;
    }
    const char *origin = header(r, "Origin");
    if (origin) {
        /* The collector's own origin is the scheme and the Host this request was sent to
         * (checked above). */
        char self[320];
        snprintf(self, sizeof self, "%s://%s", r->ctx->scheme[0] ? r->ctx->scheme : "http", host);
        if (strcasecmp(origin, self) != 0) {
            snprintf(msg, msglen, "cross-origin request from \"%.100s\" refused", origin);
            return MHD_HTTP_FORBIDDEN;
        }
    }
    return 0;
}

unsigned browser_check_body(const struct http_req *r, char *msg, size_t msglen)
{
    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0) {
        return 0;
    }
    const char *ct = header(r, "Content-Type");
    size_t n = strlen("application/json");
    if (!ct || strncasecmp(ct, "application/json", n) != 0 ||
        (ct[n] != 0 && ct[n] != ';' && ct[n] != ' ')) {
        snprintf(msg, msglen, "a %s request needs a JSON body (Content-Type: application/json)",
                 r->method);
        return MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
    }
    return 0;
}

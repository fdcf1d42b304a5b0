/*
 * config.c - the alerting configuration file of `telltale serve --config FILE`: INI-like
 * sections [detector.NAME] and [webhook.NAME] of "key = value" lines (docs/detectors.md).
 * Every line, name and value is checked against a fixed bound before it is copied; an error
 * names the file and line, and the collector refuses to start with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collector/alerting/monitor.h"
#include "collector/secure.h"

static int name_valid(const char *s, size_t n)
{
    if (n == 0 || n >= MON_NAME_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

static void trim(char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r')) {
        (*n)--;
    }
}

enum section { SEC_NONE, SEC_DETECTOR, SEC_WEBHOOK, SEC_CALLS, SEC_MONITOR };

struct parser {
    struct mon_config *c;
    enum section sec;
    char type_pending[32]; /* a detector's type must come first: its keys depend on it */
    char err[300];
};

static int unit_begin(struct parser *p, const char *name, size_t n)
{
    if (p->c->n_units == MON_UNITS_MAX) {
        snprintf(p->err, sizeof p->err, "more than %d detectors", MON_UNITS_MAX);
        return -1;
    }
    for (int i = 0; i < p->c->n_units; i++) {
        if (strlen(p->c->units[i].name) == n && memcmp(p->c->units[i].name, name, n) == 0) {
            snprintf(p->err, sizeof p->err, "detector \"%.*s\" defined twice", (int)n, name);
            return -1;
        }
    }
    struct unit *u = &p->c->units[p->c->n_units++];
    memset(u, 0, sizeof *u);
    memcpy(u->name, name, n);
    snprintf(u->severity, sizeof u->severity, "warning");
    p->sec = SEC_DETECTOR;
    return 0;
}

static int hook_begin(struct parser *p, const char *name, size_t n, int alertmanager)
{
    if (p->c->n_hooks == MON_HOOKS_MAX) {
        snprintf(p->err, sizeof p->err, "more than %d webhooks", MON_HOOKS_MAX);
        return -1;
    }
    struct webhook_cfg *h = &p->c->hooks[p->c->n_hooks++];
    memset(h, 0, sizeof *h);
    memcpy(h->name, name, n);
    h->timeout_ms = 2000;
    h->retries = 3;
    h->backoff_ms = 200;
    h->alertmanager = alertmanager;
    p->sec = SEC_WEBHOOK;
    return 0;
}

static int section(struct parser *p, char *s, size_t n)
{
    if (n < 2 || s[n - 1] != ']') {
        snprintf(
            p->err, sizeof p->err,
            "expected [detector.NAME], [webhook.NAME], [alertmanager.NAME], [calls] or [monitor]");
        return -1;
    }
    s++;
    n -= 2;
    trim(&s, &n);
    if (n == 5 && memcmp(s, "calls", 5) == 0) {
        p->sec = SEC_CALLS;
        return 0;
    }
    if (n == 7 && memcmp(s, "monitor", 7) == 0) {
        p->sec = SEC_MONITOR;
        return 0;
    }
    const char *name;
    size_t nn;
    int det = n > 9 && memcmp(s, "detector.", 9) == 0;
    int hook = n > 8 && memcmp(s, "webhook.", 8) == 0;
    int am = n > 13 && memcmp(s, "alertmanager.", 13) == 0;
    size_t skip = det ? 9 : hook ? 8 : 13;
    name = s + skip;
    nn = n - skip;
    if ((!det && !hook && !am) || !name_valid(name, nn)) {
        snprintf(p->err, sizeof p->err,
                 "expected [detector.NAME], [webhook.NAME] or [alertmanager.NAME], NAME of 1-%d "
                 "letters, digits, _ or -",
                 MON_NAME_MAX - 1);
        return -1;
    }
    return det ? unit_begin(p, name, nn) : hook_begin(p, name, nn, am);
}

static int severity_valid(const char *v)
{
    return !strcmp(v, "info") || !strcmp(v, "warning") || !strcmp(v, "critical");
}

static int unit_key(struct parser *p, const char *key, const char *value)
{
    struct unit *u = &p->c->units[p->c->n_units - 1];
    if (strcmp(key, "type") == 0) {
        if (u->ops) {
            snprintf(p->err, sizeof p->err, "type given twice");
            return -1;
        }
        u->ops = unit_find(value);
        if (!u->ops) {
            snprintf(p->err, sizeof p->err,
                     "unknown detector type \"%.40s\" (threshold, drift, error_rate, loop, "
                     "silence, gap)",
                     value);
            return -1;
        }
        return 0;
    }
    if (!u->ops) {
        snprintf(p->err, sizeof p->err, "the first key of a detector must be type");
        return -1;
    }
    int rc;
    if (strcmp(key, "severity") == 0) {
        rc = severity_valid(value) ? 0 : -EINVAL;
        if (rc == 0) {
            snprintf(u->severity, sizeof u->severity, "%.15s", value);
        }
    } else if (strcmp(key, "cooldown_ms") == 0 || strcmp(key, "resolve_ms") == 0 ||
               strcmp(key, "flap_ms") == 0) {
        uint64_t ms;
        rc = detect_parse_u64(value, &ms) == 0 && ms <= 86400000ull * 365 ? 0 : -EINVAL;
        if (rc == 0 && key[0] == 'c') {
            u->cooldown_ns = (int64_t)ms * 1000000;
            u->cooldown_set = 1;
        } else if (rc == 0 && key[0] == 'r') {
            rc = ms >= MON_TICK_MS ? 0 : -EINVAL;
            u->resolve_ns = (int64_t)ms * 1000000;
        } else if (rc == 0) {
            u->flap_ns = (int64_t)ms * 1000000;
            u->flap_ns = u->flap_ns ? u->flap_ns : 1; /* 0: forget at once, never reopen */
        }
    } else {
        rc = u->ops->set(u, key, value);
    }
    if (rc == -ENOENT) {
        snprintf(p->err, sizeof p->err, "unknown key \"%.40s\" for a %s detector", key,
                 u->ops->type);
    } else if (rc) {
        snprintf(p->err, sizeof p->err, "bad value for %.40s: \"%.80s\"", key, value);
    }
    return rc ? -1 : 0;
}

/* Plain http:// only to this machine: alerts name agents and sessions, and an https://
 * receiver is verified against the system's CAs (or ca_file); no option turns that off. */
static int url_ok(const char *v)
{
    static const char *const local[] = {"http://127.",   "http://localhost:", "http://localhost/",
                                        "http://[::1]:", "http://[::1]/",     NULL};
    if (!strncmp(v, "https://", 8)) {
        return 1;
    }
    for (const char *const *l = local; *l; l++) {
        if (!strncmp(v, *l, strlen(*l))) {
            return 1;
        }
    }
    return 0;
}

static int hook_key(struct parser *p, const char *key, const char *value)
{
    struct webhook_cfg *h = &p->c->hooks[p->c->n_hooks - 1];
    int rc = 0;
    if (strcmp(key, "url") == 0) {
        rc = strlen(value) < sizeof h->url && url_ok(value) ? 0 : -EINVAL;
        if (rc == 0) {
            snprintf(h->url, sizeof h->url, "%s", value);
        }
    } else if (strcmp(key, "secret_file") == 0 || strcmp(key, "ca_file") == 0) {
        char *dst = key[0] == 's' ? h->secret_file : h->ca_file;
        rc = strlen(value) < sizeof h->secret_file && value[0] ? 0 : -EINVAL;
        if (rc == 0) {
            snprintf(dst, sizeof h->secret_file, "%s", value);
        }
    } else if (strcmp(key, "timeout_ms") == 0) {
        rc = detect_parse_u32(value, &h->timeout_ms) == 0 && h->timeout_ms >= 1 &&
                     h->timeout_ms <= 600000
                 ? 0
                 : -EINVAL;
    } else if (strcmp(key, "retries") == 0) {
        rc = detect_parse_u32(value, &h->retries) == 0 && h->retries <= 20 ? 0 : -EINVAL;
    } else if (strcmp(key, "generator_url") == 0 && h->alertmanager) {
        rc = strlen(value) < sizeof h->generator_url &&
                     (!strncmp(value, "http://", 7) || !strncmp(value, "https://", 8))
                 ? 0
                 : -EINVAL;
        if (rc == 0) {
            memcpy(h->generator_url, value, strlen(value) + 1); /* length checked above */
        }
    } else if (strcmp(key, "backoff_ms") == 0) {
        rc = detect_parse_u32(value, &h->backoff_ms) == 0 && h->backoff_ms <= 600000 ? 0 : -EINVAL;
    } else {
        snprintf(p->err, sizeof p->err, "unknown key \"%.40s\" for a %s", key,
                 h->alertmanager ? "alertmanager" : "webhook");
        return -1;
    }
    if (rc) {
        snprintf(p->err, sizeof p->err,
                 "bad value for %.40s (url: https://, or http:// to 127.0.0.1, [::1] or "
                 "localhost; below 1024 bytes)",
                 key);
    }
    return rc ? -1 : 0;
}

/* [calls] kinds = tool, api, retrieval: the step kinds that are external calls. */
/* [monitor] batch_budget_ms, signal_budget_us: 1 to MON_BUDGET_MAX each. */
static int monitor_key(struct parser *p, const char *key, const char *value)
{
    uint32_t *dst = strcmp(key, "batch_budget_ms") == 0    ? &p->c->budget_batch_ms
                    : strcmp(key, "signal_budget_us") == 0 ? &p->c->budget_signal_us
                                                           : NULL;
    if (!dst) {
        snprintf(p->err, sizeof p->err,
                 "unknown key %.40s in [monitor] (batch_budget_ms, signal_budget_us)", key);
        return -1;
    }
    uint32_t v;
    if (detect_parse_u32(value, &v) != 0 || v < 1 || v > MON_BUDGET_MAX) {
        snprintf(p->err, sizeof p->err, "%s: \"%.40s\" is not a whole number from 1 to %u", key,
                 value, MON_BUDGET_MAX);
        return -1;
    }
    *dst = v;
    return 0;
}

static int calls_key(struct parser *p, const char *key, char *value)
{
    static const char *const names[] = {"",    "reasoning", "tool",      "api",
                                        "llm", "agent",     "retrieval", "other"};
    if (strcmp(key, "kinds") != 0) {
        snprintf(p->err, sizeof p->err, "unknown key %.40s in [calls] (kinds)", key);
        return -1;
    }
    uint32_t mask = 0;
    for (char *t = value, *next; t; t = next) {
        char *comma = strchr(t, ',');
        next = comma ? comma + 1 : NULL;
        size_t n = comma ? (size_t)(comma - t) : strlen(t);
        trim(&t, &n);
        t[n] = 0;
        int found = 0;
        for (uint32_t k = 1; k < 8 && !found; k++) {
            if (strcmp(t, names[k]) == 0) {
                mask |= 1u << k;
                found = 1;
            }
        }
        if (!found) {
            snprintf(p->err, sizeof p->err,
                     "kinds: \"%.40s\" is not a step kind (reasoning, tool, api, llm, agent, "
                     "retrieval, other)",
                     t);
            return -1;
        }
    }
    if (!mask) {
        snprintf(p->err, sizeof p->err, "kinds: at least one step kind");
        return -1;
    }
    p->c->call_kinds = mask;
    return 0;
}

static int line(struct parser *p, char *s, size_t n)
{
    trim(&s, &n);
    if (n == 0 || s[0] == '#' || s[0] == ';') {
        return 0;
    }
    if (s[0] == '[') {
        return section(p, s, n);
    }
    char *eq = memchr(s, '=', n);
    if (!eq || p->sec == SEC_NONE) {
        snprintf(p->err, sizeof p->err,
                 eq ? "a key outside any section" : "expected \"key = value\"");
        return -1;
    }
    char *k = s, *v = eq + 1;
    size_t kn = (size_t)(eq - s), vn = n - kn - 1;
    trim(&k, &kn);
    trim(&v, &vn);
    char key[64], value[MON_LINE_MAX];
    if (kn == 0 || kn >= sizeof key) {
        snprintf(p->err, sizeof p->err, "missing or overlong key");
        return -1;
    }
    memcpy(key, k, kn);
    key[kn] = 0;
    memcpy(value, v, vn);
    value[vn] = 0;
    if (p->sec == SEC_CALLS) {
        return calls_key(p, key, value);
    }
    if (p->sec == SEC_MONITOR) {
        return monitor_key(p, key, value);
    }
    return p->sec == SEC_DETECTOR ? unit_key(p, key, value) : hook_key(p, key, value);
}

static int finish(struct mon_config *c, char *err, size_t errlen)
{
    if (!c->call_kinds) {
        c->call_kinds = MON_CALL_KINDS_DEFAULT;
    }
    if (!c->budget_batch_ms) {
        c->budget_batch_ms = MON_BUDGET_BATCH_MS_DEFAULT;
    }
    if (!c->budget_signal_us) {
        c->budget_signal_us = MON_BUDGET_SIGNAL_US_DEFAULT;
    }
    for (int i = 0; i < c->n_units; i++) {
        struct unit *u = &c->units[i];
        char why[200] = "";
        if (!u->ops) {
            snprintf(err, errlen, "detector %s: no type", u->name);
            return -1;
        }
        if (u->ops->ready(u, why, sizeof why) != 0) {
            snprintf(err, errlen, "detector %s: %s", u->name, why);
            return -1;
        }
        if (!u->cooldown_set) {
            u->cooldown_ns = (u->ops->default_cooldown_ms ? u->ops->default_cooldown_ms
                                                          : MON_UPDATE_MS_DEFAULT) *
                             1000000;
        }
        if (!u->resolve_ns) {
            u->resolve_ns = (int64_t)MON_RESOLVE_MS_DEFAULT * 1000000;
        }
        if (!u->flap_ns) {
            u->flap_ns = (int64_t)MON_FLAP_MS_DEFAULT * 1000000;
        }
    }
    for (int i = 0; i < c->n_hooks; i++) {
        struct webhook_cfg *h = &c->hooks[i];
        if (!h->url[0]) {
            snprintf(err, errlen, "%s %s: no url", h->alertmanager ? "alertmanager" : "webhook",
                     h->name);
            return -1;
        }
        /* An Alertmanager is named by its base URL; alerts go to its API v2. */
        size_t n = strlen(h->url);
        while (h->alertmanager && n && h->url[n - 1] == '/') {
            h->url[--n] = 0;
        }
        if (h->alertmanager && n + sizeof "/api/v2/alerts" > sizeof h->url) {
            snprintf(err, errlen, "alertmanager %s: url too long", h->name);
            return -1;
        }
        if (h->alertmanager) {
            memcpy(h->url + n, "/api/v2/alerts", sizeof "/api/v2/alerts");
        }
    }
    return 0;
}

int mon_config_parse(struct mon_config *c, const char *text, size_t n, const char *name, char *err,
                     size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (n > MON_CONFIG_MAX) {
        snprintf(err, errlen, "%s: larger than %u bytes", name, MON_CONFIG_MAX);
        return -1;
    }
    struct parser p = {.c = c};
    char buf[MON_LINE_MAX + 1];
    const char *s = text, *end = text + n;
    for (int ln = 1; s < end; ln++) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t len = nl ? (size_t)(nl - s) : (size_t)(end - s);
        if (len > MON_LINE_MAX || memchr(s, 0, len)) {
            snprintf(err, errlen, "%s:%d: line longer than %d bytes or holding a NUL", name, ln,
                     MON_LINE_MAX);
            return -1;
        }
        memcpy(buf, s, len);
        buf[len] = 0;
        s = nl ? nl + 1 : end;
        if (line(&p, buf, len) != 0) {
            snprintf(err, errlen, "%s:%d: %s", name, ln, p.err);
            return -1;
        }
    }
    if (finish(c, p.err, sizeof p.err) != 0) {
        snprintf(err, errlen, "%s: %s", name, p.err);
        return -1;
    }
    return 0;
}

/* The webhook's HMAC key: the first line of its secret_file, which must be private. */
static int load_secret(struct webhook_cfg *h, char *err, size_t errlen)
{
    if (!h->secret_file[0]) {
        return 0;
    }
    int fd = open(h->secret_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "webhook %s: secret_file %s: %s", h->name, h->secret_file,
                 strerror(errno));
        return -1;
    }
    char buf[WEBHOOK_SECRET_MAX + 2];
    ssize_t n = secure_private_fd(fd, h->secret_file, err, errlen) == 0
                    ? read(fd, buf, sizeof buf - 1)
                    : -2;
    close(fd);
    if (n == -2) {
        return -1;
    }
    buf[n > 0 ? n : 0] = 0;
    size_t len = strcspn(buf, "\r\n");
    if (n < 0 || len == 0 || len > WEBHOOK_SECRET_MAX) {
        snprintf(err, errlen, "webhook %s: secret_file %s: expected a secret of 1-%d bytes",
                 h->name, h->secret_file, WEBHOOK_SECRET_MAX);
        return -1;
    }
    memcpy(h->secret, buf, len);
    h->secret[len] = 0;
    h->secret_len = len;
    memset(buf, 0, sizeof buf);
    return 0;
}

int mon_config_load(struct mon_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(MON_CONFIG_MAX + 1);
    size_t n = buf ? fread(buf, 1, MON_CONFIG_MAX + 1, f) : 0;
    int bad = !buf || ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: cannot read", path);
        free(buf);
        return -1;
    }
    int rc = mon_config_parse(c, buf, n, path, err, errlen);
    free(buf);
    for (int i = 0; rc == 0 && i < c->n_hooks; i++) {
        rc = load_secret(&c->hooks[i], err, errlen);
    }
    return rc;
}

static const char default_config[] =
    "[detector.confidence_drift]\n"
    "type = drift\nsignal = confidence\nalgorithm = cusum\nwarmup = 200\n"
    "[detector.latency_drift]\n"
    "type = drift\nsignal = tool_latency\nalgorithm = cusum\nwarmup = 100\n"
    "[detector.low_confidence]\n"
    "type = threshold\nmin = 0.1\n"
    "[detector.tool_errors]\n"
    "type = error_rate\nwindow = 20\nmin_calls = 10\nmax_rate = 0.5\n"
    "[detector.looping]\n"
    "type = loop\nrepeats = 5\n"
    "[detector.loss]\n"
    "type = gap\nmin_events = 1\n"
    "[detector.compliance]\n"
    "type = comply\n";

int mon_config_defaults(struct mon_config *c)
{
    char err[300];
    return mon_config_parse(c, default_config, sizeof default_config - 1, "(defaults)", err,
                            sizeof err);
}

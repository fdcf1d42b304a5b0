/*
 * api/params.c - the parsers of query parameter values shared by the routes (kinds, severity,
 * instance ids, limits, times). Pure functions over a NUL-terminated string: no request, no
 * allocation, so tests/fuzz/fuzz_params.c drives them directly.
 */
#include "collector/api/params.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/api/http.h"
#include "collector/api/render.h"
#include "collector/hub.h"

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static int all_digits(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
    }
    return 1;
}

/* A comma-separated list of kind names into a bit mask. */
int params_kinds(const char *s, uint32_t *mask)
{
    *mask = 0;
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        char tok[32];
        if (n == 0 || n >= sizeof tok) {
            return -1;
        }
        memcpy(tok, s, n);
        tok[n] = 0;
        /* "alert" selects the detectors' alerts; only the live stream carries them. */
        uint32_t m = strcmp(tok, "alert") == 0 ? HUB_KIND_ALERT : tt__ev_kind_mask(tok);
        if (!m) {
            return -1;
        }
        *mask |= m;
        s += n + (comma ? 1 : 0);
    }
    return *mask ? 0 : -1;
}

int params_severity(const char *s, uint32_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (all_digits(s) && !*end && v >= 1 && v <= 24) {
        *out = (uint32_t)v;
        return 0;
    }
    *out = render_severity_parse(s);
    return *out ? 0 : -1;
}

/* Digits only: sscanf's %2x also took " f", "+f" and "-f" (found by fuzz_params). */
int params_hex16(const char *s, uint8_t out[16])
{
    if (strlen(s) != 32) {
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int params_limit(const char *v, uint64_t dflt, uint64_t max, uint64_t *out)
{
    if (!v) {
        *out = dflt;
        return 0;
    }
    /* Digits only: strtoull takes a sign and spaces, and "-1" wraps to 2^64-1. */
    if (!all_digits(v)) {
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || n > max) {
        return -1;
    }
    *out = n;
    return 0;
}

int http_parse_time(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!errno && end != s && *end == 0 && all_digits(s + (*s == '-'))) {
        *out = v;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) {
        return -1;
    }
    int64_t frac = 0, scale = 100000000;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (strcmp(p, "Z") != 0) {
        return -1;
    }
    time_t t = timegm(&tm);
    if (t < -9223372035 || t > 9223372035) {
        return -1; /* not representable in Unix nanoseconds */
    }
    *out = (int64_t)t * 1000000000 + frac;
    return 0;
}

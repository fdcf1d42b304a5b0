/*
 * json.c - the JSON writer. Hand-written rather than a library because it sits on the
 * collector's read path for every event it serves (queries of millions of events, the live
 * stream), where building a DOM per event (jansson) costs several times more; parsing JSON
 * input is left to jansson.
 */
#include "common/json.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void tt__json_init(tt__json *j, tt__buf *b)
{
    j->b = b;
    j->err = 0;
    j->need_comma = 0;
    j->str_max = 0;
    j->truncated = 0;
}

int tt__json_raw(tt__json *j, const char *s, size_t n)
{
    if (!j->err) {
        j->err = tt__buf_append(j->b, s, n);
    }
    return j->err;
}

static int comma(tt__json *j)
{
    if (j->need_comma) {
        tt__json_raw(j, ",", 1);
    }
    j->need_comma = 1;
    return j->err;
}

/* Length of a valid UTF-8 sequence at p (at most n bytes), or 0 if invalid. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* Overlong forms, surrogates and values above U+10FFFF are invalid. */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
        return 0;
    }
    return len;
}

int tt__json_escape(tt__buf *out, const void *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = s;
    size_t i = 0;
    int rc = 0;
    while (i < n && rc == 0) {
        size_t run = i;
        /* Copy plain printable ASCII in runs. */
        while (run < n && p[run] >= 0x20 && p[run] < 0x7f && p[run] != '"' && p[run] != '\\' &&
               p[run] != '<' && p[run] != '>' && p[run] != '&') {
            run++;
        }
        if (run > i) {
            rc = tt__buf_append(out, p + i, run - i);
            i = run;
            continue;
        }
        uint8_t c = p[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            rc = tt__buf_append(out, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&') {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            rc = tt__buf_append(out, esc, 6);
            i++;
        } else {
            size_t len = utf8_len(p + i, n - i);
            if (len == 0) {
                rc = tt__buf_append(out, "\\ufffd", 6);
                i++;
            } else {
                rc = tt__buf_append(out, p + i, len);
                i += len;
            }
        }
    }
    return rc;
}

int tt__json_str(tt__json *j, const void *s, size_t n)
{
    if (comma(j)) {
        return j->err;
    }
    tt__json_raw(j, "\"", 1);
    size_t keep = n;
    if (j->str_max && n > j->str_max) {
        /* Cut at a character boundary: back off over UTF-8 continuation bytes. */
        const uint8_t *p = s;
        keep = j->str_max;
        for (int i = 0; i < 3 && keep > 0 && (p[keep] & 0xc0) == 0x80; i++) {
            keep--;
        }
        j->truncated++;
    }
    if (!j->err) {
        j->err = tt__json_escape(j->b, s, keep);
    }
    if (keep < n) {
        char mark[64];
        int m = snprintf(mark, sizeof mark, "...[truncated: %zu bytes]", n);
        tt__json_raw(j, mark, (size_t)m);
    }
    return tt__json_raw(j, "\"", 1);
}

int tt__json_cstr(tt__json *j, const char *s)
{
    if (!s) {
        return tt__json_null(j);
    }
    return tt__json_str(j, s, strlen(s));
}

int tt__json_key(tt__json *j, const char *key)
{
    tt__json_str(j, key, strlen(key));
    tt__json_raw(j, ":", 1);
    j->need_comma = 0;
    return j->err;
}

int tt__json_obj_begin(tt__json *j)
{
    comma(j);
    tt__json_raw(j, "{", 1);
    j->need_comma = 0;
    return j->err;
}

int tt__json_obj_end(tt__json *j)
{
    tt__json_raw(j, "}", 1);
    j->need_comma = 1;
    return j->err;
}

int tt__json_arr_begin(tt__json *j)
{
    comma(j);
    tt__json_raw(j, "[", 1);
    j->need_comma = 0;
    return j->err;
}

int tt__json_arr_end(tt__json *j)
{
    tt__json_raw(j, "]", 1);
    j->need_comma = 1;
    return j->err;
}

int tt__json_i64(tt__json *j, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    comma(j);
    return tt__json_raw(j, tmp, (size_t)n);
}

int tt__json_u64(tt__json *j, uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    comma(j);
    return tt__json_raw(j, tmp, (size_t)n);
}

int tt__json_f64(tt__json *j, double v)
{
    if (!isfinite(v)) {
        return tt__json_null(j);
    }
    char tmp[40];
    int n = snprintf(tmp, sizeof tmp, "%.17g", v);
    /* Shortest form that reads back the same double. */
    for (int prec = 6; prec < 17; prec++) {
        char t2[40];
        int m = snprintf(t2, sizeof t2, "%.*g", prec, v);
        if (strtod(t2, NULL) == v) {
            memcpy(tmp, t2, (size_t)m + 1);
            n = m;
            break;
        }
    }
    comma(j);
    return tt__json_raw(j, tmp, (size_t)n);
}

int tt__json_bool(tt__json *j, int v)
{
    comma(j);
    return v ? tt__json_raw(j, "true", 4) : tt__json_raw(j, "false", 5);
}

int tt__json_null(tt__json *j)
{
    comma(j);
    return tt__json_raw(j, "null", 4);
}

int tt__json_hex(tt__json *j, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[2 * 64 + 2];
    if (n > 64) {
        n = 64;
    }
    tmp[0] = '"';
    for (size_t i = 0; i < n; i++) {
        tmp[1 + 2 * i] = hex[p[i] >> 4];
        tmp[2 + 2 * i] = hex[p[i] & 15];
    }
    tmp[1 + 2 * n] = '"';
    comma(j);
    return tt__json_raw(j, tmp, 2 * n + 2);
}

int tt__json_kv_str(tt__json *j, const char *key, const void *s, size_t n)
{
    tt__json_key(j, key);
    return tt__json_str(j, s, n);
}

int tt__json_kv_cstr(tt__json *j, const char *key, const char *s)
{
    tt__json_key(j, key);
    return tt__json_cstr(j, s);
}

int tt__json_kv_i64(tt__json *j, const char *key, int64_t v)
{
    tt__json_key(j, key);
    return tt__json_i64(j, v);
}

int tt__json_kv_u64(tt__json *j, const char *key, uint64_t v)
{
    tt__json_key(j, key);
    return tt__json_u64(j, v);
}

int tt__json_kv_f64(tt__json *j, const char *key, double v)
{
    tt__json_key(j, key);
    return tt__json_f64(j, v);
}

int tt__json_kv_bool(tt__json *j, const char *key, int v)
{
    tt__json_key(j, key);
    return tt__json_bool(j, v);
}

/*
 * json.h - a small JSON writer onto a bounded buffer. Strings are escaped for any context:
 * control characters, quotes and backslashes as usual, '<', '>' and '&' as \u escapes (so a
 * value can never close a <script> element), and invalid UTF-8 replaced by U+FFFD. Non-finite
 * numbers are written as null. Telemetry content is attacker-controlled; everything that
 * leaves the collector as JSON goes through here.
 */
#ifndef TT_COMMON_JSON_H
#define TT_COMMON_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Every function returns 0 or the buffer's error (-E2BIG, -ENOMEM). Errors stick: after one,
 * the following calls do nothing and return it, so a caller may check once at the end. */
typedef struct tt__json {
    tt__buf *b;
    int err;
    int need_comma;     /* a value was written at the current nesting level */
    size_t str_max;     /* 0: strings in full; else longer strings are cut to about this many bytes
                     * and end with a "...[truncated: N bytes]" marker (the live stream) */
    uint32_t truncated; /* strings cut so far */
} tt__json;

void tt__json_init(tt__json *j, tt__buf *b);
int tt__json_raw(tt__json *j, const char *s, size_t n);
int tt__json_str(tt__json *j, const void *s, size_t n); /* a quoted, escaped string */
int tt__json_cstr(tt__json *j, const char *s);
int tt__json_key(tt__json *j, const char *key); /* ,"key": */
int tt__json_obj_begin(tt__json *j);
int tt__json_obj_end(tt__json *j);
int tt__json_arr_begin(tt__json *j);
int tt__json_arr_end(tt__json *j);
int tt__json_i64(tt__json *j, int64_t v);
int tt__json_u64(tt__json *j, uint64_t v);
int tt__json_f64(tt__json *j, double v);
int tt__json_bool(tt__json *j, int v);
int tt__json_null(tt__json *j);
int tt__json_hex(tt__json *j, const uint8_t *p, size_t n); /* a quoted lowercase hex string */

/* Convenience: "key": value pairs. */
int tt__json_kv_str(tt__json *j, const char *key, const void *s, size_t n);
int tt__json_kv_cstr(tt__json *j, const char *key, const char *s);
int tt__json_kv_i64(tt__json *j, const char *key, int64_t v);
int tt__json_kv_u64(tt__json *j, const char *key, uint64_t v);
int tt__json_kv_f64(tt__json *j, const char *key, double v);
int tt__json_kv_bool(tt__json *j, const char *key, int v);

/* Escape s into out as JSON string content (no quotes); returns 0 or an error. */
int tt__json_escape(tt__buf *out, const void *s, size_t n);

#endif

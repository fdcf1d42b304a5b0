/*
 * buf.c - bounded growable buffers. Growth doubles the capacity, capped at the maximum.
 */
#include <stdarg.h>
#include <stdio.h>
#include "common/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void tt__buf_init(tt__buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

int tt__buf_reserve(tt__buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra) {
        return -E2BIG;
    }
    size_t need = b->len + extra;
    if (need <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    if (cap > b->max) {
        cap = b->max;
    }
    while (cap < need) {
        cap = cap > b->max / 2 ? b->max : cap * 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int tt__buf_append(tt__buf *b, const void *p, size_t n)
{
    int rc = tt__buf_reserve(b, n);
    if (rc) {
        return rc;
    }
    if (n) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    return 0;
}

void tt__buf_shrink(tt__buf *b, size_t keep)
{
    if (b->cap <= keep || b->len > keep) {
        return;
    }
    if (keep == 0) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
        return;
    }
    uint8_t *p = realloc(b->data, keep);
    if (p) {
        b->data = p;
        b->cap = keep;
    }
}

void tt__buf_fini(tt__buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int tt__buf_printf(tt__buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n <= 0) {
        return 0;
    }
    return tt__buf_append(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

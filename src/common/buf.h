/*
 * buf.h - a growable byte buffer with a hard maximum (after curl's dynbuf): every buffer that
 * grows says how far, so no input can make it grow without bound.
 */
#ifndef TT_COMMON_BUF_H
#define TT_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct tt__buf {
    uint8_t *data;
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
    size_t max; /* cap never exceeds this */
} tt__buf;

void tt__buf_init(tt__buf *b, size_t max);

/* Make room for extra more bytes. Returns 0, -E2BIG if len + extra would exceed max, or
 * -ENOMEM; the buffer is unchanged on failure. */
int tt__buf_reserve(tt__buf *b, size_t extra);

int tt__buf_append(tt__buf *b, const void *p, size_t n);

/* Forget the contents; keep the allocation. */
static inline void tt__buf_reset(tt__buf *b)
{
    b->len = 0;
}

/* Give back memory above keep bytes (after a burst). */
void tt__buf_shrink(tt__buf *b, size_t keep);

/* Append printf-style text of at most 1023 bytes (longer output is cut there). Returns 0, or -1
 * when the buffer is at its limit. */
int tt__buf_printf(tt__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void tt__buf_fini(tt__buf *b);

#endif

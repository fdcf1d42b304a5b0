/*
 * pb.h - the protobuf wire format, by hand: varints, tags, fixed and length-delimited fields.
 * The writer works on raw pointers (the caller reserves the space, sized with the _size
 * helpers); the reader checks every length against the end of its input and never allocates.
 * proto/telltale.proto is the schema these primitives write and read.
 */
#ifndef TT_COMMON_PB_H
#define TT_COMMON_PB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { TT_PB_VARINT = 0, TT_PB_I64 = 1, TT_PB_LEN = 2, TT_PB_I32 = 5 };

/* The largest encoding of a varint, a tag and a length prefix. */
#define TT_PB_VARINT_MAX 10

static inline size_t tt__pb_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *tt__pb_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint64_t tt__pb_zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t tt__pb_unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static inline uint8_t *tt__pb_put_tag(uint8_t *p, uint32_t field, uint32_t wiretype)
{
    return tt__pb_put_varint(p, ((uint64_t)field << 3) | wiretype);
}

static inline uint8_t *tt__pb_put_uint(uint8_t *p, uint32_t field, uint64_t v)
{
    p = tt__pb_put_tag(p, field, TT_PB_VARINT);
    return tt__pb_put_varint(p, v);
}

static inline uint8_t *tt__pb_put_sint(uint8_t *p, uint32_t field, int64_t v)
{
    p = tt__pb_put_tag(p, field, TT_PB_VARINT);
    return tt__pb_put_varint(p, tt__pb_zigzag(v));
}

static inline uint8_t *tt__pb_put_fixed64(uint8_t *p, uint32_t field, uint64_t v)
{
    p = tt__pb_put_tag(p, field, TT_PB_I64);
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return p + 8;
}

static inline uint8_t *tt__pb_put_double(uint8_t *p, uint32_t field, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    return tt__pb_put_fixed64(p, field, v);
}

static inline uint8_t *tt__pb_put_float(uint8_t *p, uint32_t field, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    p = tt__pb_put_tag(p, field, TT_PB_I32);
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return p + 4;
}

static inline uint8_t *tt__pb_put_bytes(uint8_t *p, uint32_t field, const void *data, size_t n)
{
    p = tt__pb_put_tag(p, field, TT_PB_LEN);
    p = tt__pb_put_varint(p, n);
    if (n) {
        memcpy(p, data, n);
    }
    return p + n;
}

/* Bytes needed for a length-delimited field of n payload bytes (tag below 16). */
static inline size_t tt__pb_len_field_size(size_t n)
{
    return 1 + tt__pb_varint_size(n) + n;
}

/* A reader over [p, end). Any malformed input sets err and makes every later call fail. */
typedef struct tt__pb_reader {
    const uint8_t *p;
    const uint8_t *end;
    int err;
} tt__pb_reader;

static inline void tt__pb_reader_init(tt__pb_reader *r, const void *data, size_t n)
{
    static const uint8_t empty[1];
    r->p = data ? (const uint8_t *)data : empty; /* NULL + 0 is undefined; an empty input is not */
    r->end = r->p + (data ? n : 0);
    r->err = 0;
}

/* Read the next tag: returns 1 with *field and *wiretype set, 0 at the end, -1 on error. */
int tt__pb_next(tt__pb_reader *r, uint32_t *field, uint32_t *wiretype);
uint64_t tt__pb_varint(tt__pb_reader *r);
uint64_t tt__pb_fixed64(tt__pb_reader *r);
uint32_t tt__pb_fixed32(tt__pb_reader *r);
double tt__pb_double(tt__pb_reader *r);
float tt__pb_float(tt__pb_reader *r);
/* A length-delimited payload, borrowed from the input; *n is checked against the input end. */
const uint8_t *tt__pb_bytes(tt__pb_reader *r, size_t *n);
/* Skip a field of the given wire type. */
void tt__pb_skip(tt__pb_reader *r, uint32_t wiretype);

#endif

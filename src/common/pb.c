/*
 * pb.c - the bounds-checked protobuf reader. Every function checks the remaining input
 * before it reads; a malformed input sets r->err, and from then on every call returns 0.
 */
#include "common/pb.h"

static void fail(tt__pb_reader *r)
{
    r->err = 1;
    r->p = r->end;
}

uint64_t tt__pb_varint(tt__pb_reader *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) {
            fail(r);
            return 0;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            return v;
        }
    }
    fail(r);
    return 0;
}

int tt__pb_next(tt__pb_reader *r, uint32_t *field, uint32_t *wiretype)
{
    if (r->err) {
        return -1;
    }
    if (r->p == r->end) {
        return 0;
    }
    uint64_t tag = tt__pb_varint(r);
    if (r->err || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) {
        fail(r);
        return -1;
    }
    *field = (uint32_t)(tag >> 3);
    *wiretype = (uint32_t)(tag & 7);
    return 1;
}

uint64_t tt__pb_fixed64(tt__pb_reader *r)
{
    if (r->end - r->p < 8) {
        fail(r);
        return 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | r->p[i];
    }
    r->p += 8;
    return v;
}

uint32_t tt__pb_fixed32(tt__pb_reader *r)
{
    if (r->end - r->p < 4) {
        fail(r);
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | ((uint32_t)r->p[1] << 8) | ((uint32_t)r->p[2] << 16) |
                 ((uint32_t)r->p[3] << 24);
    r->p += 4;
    return v;
}

double tt__pb_double(tt__pb_reader *r)
{
    uint64_t v = tt__pb_fixed64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

float tt__pb_float(tt__pb_reader *r)
{
    uint32_t v = tt__pb_fixed32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

const uint8_t *tt__pb_bytes(tt__pb_reader *r, size_t *n)
{
    uint64_t len = tt__pb_varint(r);
    if (r->err || len > (uint64_t)(r->end - r->p)) {
        fail(r);
        *n = 0;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += len;
    *n = (size_t)len;
    return p;
}

void tt__pb_skip(tt__pb_reader *r, uint32_t wiretype)
{
    size_t n;
    switch (wiretype) {
    case TT_PB_VARINT:
        tt__pb_varint(r);
        break;
    case TT_PB_I64:
        tt__pb_fixed64(r);
        break;
    case TT_PB_LEN:
        tt__pb_bytes(r, &n);
        break;
    case TT_PB_I32:
        tt__pb_fixed32(r);
        break;
    default:
        fail(r);
        break;
    }
}

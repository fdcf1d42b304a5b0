/*
 * half.h - IEEE binary16 conversions and the 8-bit log-space code used to quantize
 * probabilities and log-probabilities on the wire (docs/wire-format.md, "Quantized values").
 */
#ifndef TT_COMMON_HALF_H
#define TT_COMMON_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* float to binary16, rounding to nearest even; overflow gives infinity, NaN stays NaN. */
static inline uint16_t tt__f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    }
    if (ax >= 0x477ff000u) { /* rounds to 65520 or more: infinity */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (ax < 0x38800000u) { /* below 2^-14: subnormal or zero */
        float a;
        memcpy(&a, &ax, sizeof a);
        /* a * 2^24 is the subnormal's integer mantissa; nearbyint rounds to even. */
        return (uint16_t)(sign | (uint16_t)nearbyintf(a * 0x1p24f));
    }
    uint32_t exp = (ax >> 23) - 112u;
    uint32_t man = ax & 0x7fffffu;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) {
        h++; /* may carry into the exponent, which is right */
    }
    return (uint16_t)(sign | h);
}

static inline float tt__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else {
        f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The 8-bit log-space code: a log-probability lp <= 0 as round(-lp / TT_U8LOG_STEP), at most
 * 254; 255 for anything at or below -255 * step (-inf and NaN included), decoded as -inf.
 * Codes 0..254 decode as -code * step. */
#define TT_U8LOG_STEP 0.0625f

static inline uint8_t tt__u8log_encode(float lp)
{
    if (!(lp > -255.0f * TT_U8LOG_STEP)) {
        return 255;
    }
    if (lp >= 0.0f) {
        return 0;
    }
    long code = lrintf(-lp / TT_U8LOG_STEP);
    return (uint8_t)(code > 254 ? 254 : code);
}

static inline float tt__u8log_decode(uint8_t code)
{
    return code == 255 ? -INFINITY : -(float)code * TT_U8LOG_STEP;
}

#endif

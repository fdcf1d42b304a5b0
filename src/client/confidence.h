/*
 * confidence.h - the inside of the token-statistics kernel: the table of per-ISA kernels that
 * confidence.c drives (portable C, AVX2, AVX-512), the constants of the vectorised exp that
 * every path shares, and the hooks that let the tests and the benchmark run a chosen path.
 *
 * The driver (confidence.c) cuts a row into blocks of TT__CONF_BLOCK entries (8 KiB of fp32,
 * which stays in L1). The fast sums kernel reads a block once, relative to the running maximum
 * of the blocks before it, and reports the block's own maximum as well; the rare block that
 * reaches the running maximum is summed again from L1 by the careful kernel. Kernels only ever
 * see contiguous fp32 blocks whose length is a multiple of TT__CONF_PAD: the driver widens
 * bf16/fp16, gathers strided rows and pads the last block with -inf, which every kernel ignores
 * by construction.
 */
#ifndef TT_CLIENT_CONFIDENCE_H
#define TT_CLIENT_CONFIDENCE_H

#include "common/half.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "telltale.h"

enum tt__conf_path {
    TT__CONF_PORTABLE = 0,
    TT__CONF_AVX2 = 1,
    TT__CONF_AVX512 = 2,
    TT__CONF_NPATHS = 3
};

/* A block is 8 KiB of fp32: it stays in L1 between the two passes. */
#define TT__CONF_BLOCK 2048
/* Kernels get lengths that are multiples of this (the widest unrolled loop). */
#define TT__CONF_PAD 64
/* The most partial maxima a max kernel reports (4 accumulators of 16 lanes). */
#define TT__CONF_LANES_MAX 64
/* next_hit reports hits at this granularity. */
#define TT__CONF_CHUNK 16
/* Every sums kernel moves its float partial sums into doubles often enough that no float
 * accumulator lane adds more than 32 terms (relative error below 32 ulp); each kernel file sets
 * its own interval from its lane count. */

/*
 * The exp used by every path, for d = x - max in [TT__EXP_FLOOR, 0]:
 *   n = round(d * log2(e)) through the magic-number addition t = d * log2(e) + 1.5 * 2^23 + 127,
 *   r = d - n * ln 2 (|r| <= ln2/2), e^r by a degree-5 polynomial with c0 = 1 (coefficients
 *   fitted for relative error on [-ln2/2, ln2/2], max 9.2e-8), and 2^n built by shifting the
 *   low bits of t, which hold n + 127, into the exponent field.
 * Clamping d at -88 makes n >= -127; n = -127 builds the bit pattern of +0.0, so every entry
 * more than about 87.7 below the max contributes exactly 0, and -inf entries give e = 0 with a
 * finite d (no 0 * inf). NaN propagates, which is how the fast kernels report NaN entries.
 */
#define TT__EXP_FLOOR (-88.0f)
#define TT__EXP_LOG2E 1.44269504088896341f
#define TT__EXP_MAGIC 12583039.0f /* 1.5 * 2^23 + 127 */
#define TT__EXP_LN2 0.693147180559945309f
#define TT__EXP_LN2_HI 0.693145751953125f /* 15 significant bits: n * LN2_HI is exact */
#define TT__EXP_LN2_LO 1.42860682030941723212e-6f
#define TT__EXP_C1 0.9999997019767761f
#define TT__EXP_C2 0.4999914765357971f
#define TT__EXP_C3 0.16667640209197998f
#define TT__EXP_C4 0.041898373514413834f
#define TT__EXP_C5 0.008290211670100689f

/* What a sums kernel reports for one block, relative to the reference m it was given. */
typedef struct tt__conf_sums {
    double sum;      /* fast: sum of e^(x-m) over all entries; careful: over entries below m */
    double dot;      /* sum of e^(x-m) * (x-m) (entries equal to m add 0) */
    float max;       /* fast: the block's largest non-NaN entry (-inf if none) */
    uint32_t nlanes; /* fast: how many partial maxima lanes[] holds (0 for careful) */
    float lanes[TT__CONF_LANES_MAX]; /* maxima of disjoint subsets, as from the max kernel */
    uint32_t ties;                   /* careful only: entries equal to m */
    uint32_t above;                  /* entries with x > the chosen logit */
    uint32_t nans;                   /* careful only: NaN entries (treated as -inf) */
} tt__conf_sums;

/*
 * One path's kernels. x is a contiguous fp32 block, n a multiple of TT__CONF_PAD.
 * max:          the largest non-NaN entry (-inf if none); lanes[0..*nlanes) receive the maxima
 *               of disjoint subsets of the block (for the top-k lower bound).
 * widen:        bf16 or fp16 to fp32, any n, src possibly unaligned for 2-byte loads.
 * sums:         fast, relative to m >= every entry that matters (the running maximum); also
 *               finds the block maximum and partial maxima like the max kernel. Assumes no NaN: a NaN shows as a NaN sum or dot. Its
 *               figures are meaningless when the block maximum exceeds m (the driver redoes it).
 * sums_careful: relative to the block maximum m, counting NaN entries as -inf and ties with m
 *               apart from the sum, so the small terms keep their relative precision.
 * count_nan:    NaN entries of a block that holds no finite entry.
 * next_hit:     the first index i >= pos, a multiple of TT__CONF_CHUNK, such that one of
 *               x[i..i+CHUNK) is > t (strict) or >= t (not strict), with *hits the bit mask of
 *               those entries; n if none. pos is a multiple of TT__CONF_CHUNK.
 * pf/pf_len:    bytes of a block further on, prefetched while this one is computed (pf may be
 *               NULL).
 */
typedef struct tt__conf_kernels {
    const char *name;
    float (*max)(const float *x, size_t n, float *lanes, size_t *nlanes);
    void (*widen)(const void *src, size_t n, tt_dtype dtype, float *dst);
    void (*sums)(const float *x, size_t n, float m, float xc, const char *pf, size_t pf_len,
                 tt__conf_sums *out);
    void (*sums_careful)(const float *x, size_t n, float m, float xc, tt__conf_sums *out);
    size_t (*count_nan)(const float *x, size_t n);
    size_t (*next_hit)(const float *x, size_t pos, size_t n, float t, int strict, uint32_t *hits);
} tt__conf_kernels;

/* confidence_portable.c: any CPU. */
extern const tt__conf_kernels tt__conf_portable;

#if defined(__x86_64__) || defined(__i386__)
#define TT__CONF_X86 1
extern const tt__conf_kernels tt__conf_avx2;
extern const tt__conf_kernels tt__conf_avx512;
#endif

/* IEEE binary16 to float, exactly (subnormals, infinities and NaN included): common/half.h. */
#define tt__conf_f16_to_f32 tt__f16_to_f32

/* bfloat16 to float: the upper half of a float32. */
static inline float tt__conf_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;

    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Whether this CPU (and OS) can run a path. */
int tt__conf_path_supported(int path);

/* The path tt_token_stats_compute uses: the best the CPU supports, lowered by TELLTALE_SIMD
 * (portable, avx2 or avx512), which is read once per process. */
int tt__conf_path_active(void);

/* "portable", "avx2", "avx512", or "?" for anything else. */
const char *tt__conf_path_name(int path);

/* tt_token_stats_compute on a given path; TT_EINVAL if the CPU cannot run it. Thread-safe. */
int tt__token_stats_compute_path(int path, const void *logits, size_t n, size_t stride,
                                 tt_dtype dtype, int32_t chosen, uint32_t k, tt_token_stats *out);

#endif

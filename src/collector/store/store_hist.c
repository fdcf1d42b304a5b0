/*
 * store_hist.c - the log-scale histogram of the rollups (store.h): STORE_HIST_SUB bins per
 * octave from 2^-40 to 2^48, so durations in ns and confidences in 0..1 share one scale. Its
 * encoded form is sparse (varint bin, varint count pairs) because a bucket's values fill few
 * bins. Implementation-agnostic: any store keeps rollups in this form, the API reads it.
 */
#include <math.h>
#include <string.h>

#include "collector/store/store.h"

int store_hist_bin(double v)
{
    if (!(v > 0)) {
        return 0;
    }
    double b = floor(log2(v) * STORE_HIST_SUB) + STORE_HIST_OFFSET;
    if (b < 1) {
        return b < 0 ? 0 : 1;
    }
    return b >= STORE_HIST_BINS ? STORE_HIST_BINS - 1 : (int)b;
}

void store_hist_add(struct store_hist *h, double v, uint64_t n)
{
    if (isnan(v)) {
        return;
    }
    h->count[store_hist_bin(v)] += (uint32_t)n;
    h->total += n;
}

double store_hist_quantile(const struct store_hist *h, double q)
{
    if (!h || h->total == 0) {
        return NAN;
    }
    /* The smallest bin whose cumulative count reaches ceil(q * total) (at least 1). */
    double want = ceil(q * (double)h->total);
    uint64_t rank = want < 1 ? 1 : (uint64_t)want;
    uint64_t seen = 0;
    for (int i = 0; i < STORE_HIST_BINS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            return i == 0 ? 0 : exp2(((double)(i - STORE_HIST_OFFSET) + 0.5) / STORE_HIST_SUB);
        }
    }
    return NAN;
}

void store_hist_quantiles(const struct store_hist *h, const double *q, int n, double *out)
{
    /* One pass for ascending q, against ranks computed once. */
    uint64_t rank[16];
    int k = 0, m = n < 16 ? n : 16;
    for (int i = 0; i < m && h && h->total; i++) {
        double want = ceil(q[i] * (double)h->total);
        rank[i] = want < 1 ? 1 : (uint64_t)want;
    }
    uint64_t seen = 0;
    for (int i = 0; i < STORE_HIST_BINS && h && h->total && k < m; i++) {
        seen += h->count[i];
        while (k < m && seen >= rank[k]) {
            out[k++] = i == 0 ? 0 : exp2(((double)(i - STORE_HIST_OFFSET) + 0.5) / STORE_HIST_SUB);
        }
    }
    while (k < n) {
        out[k++] = NAN;
    }
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

size_t store_hist_encode(const struct store_hist *h, uint8_t *out, size_t cap)
{
    size_t off = 0;
    for (int i = 0; i < STORE_HIST_BINS; i++) {
        if (h->count[i] == 0) {
            continue;
        }
        if (off + 20 > cap) {
            break; /* cannot happen with cap >= STORE_HIST_BINS * 15 */
        }
        off += put_varint(out + off, (uint64_t)i);
        off += put_varint(out + off, h->count[i]);
    }
    return off;
}

static int get_varint(const uint8_t *p, size_t n, size_t *off, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64 && *off < n; shift += 7) {
        uint8_t c = p[(*off)++];
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

int store_hist_merge_encoded(struct store_hist *h, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        uint64_t bin, count;
        if (get_varint(p, n, &off, &bin) != 0 || get_varint(p, n, &off, &count) != 0 ||
            bin >= STORE_HIST_BINS || count > UINT32_MAX) {
            return -1;
        }
        h->count[bin] += (uint32_t)count;
        h->total += count;
    }
    return 0;
}

/*
 * fuzz_hist.c - libFuzzer harness for the rollups' histogram (store/store_hist.c): the encoded
 * form read back from a store file. Any bytes either merge or are refused (-1) without reading
 * past them; an accepted histogram re-encodes to bytes that decode to the same counts, and its
 * quantiles are ordered and inside the histogram's range.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct store_hist h, back;
    static uint8_t enc[STORE_HIST_BINS * 15];
    memset(&h, 0, sizeof h);
    memset(&back, 0, sizeof back);
    uint8_t *copy = malloc(size ? size : 1); /* exactly size bytes: ASan sees an over-read */
    if (!copy) {
        return 0;
    }
    memcpy(copy, data, size);
    int rc = store_hist_merge_encoded(&h, copy, size);
    free(copy);
    if (rc != 0) {
        return 0;
    }
    uint64_t sum = 0;
    for (int i = 0; i < STORE_HIST_BINS; i++) {
        sum += h.count[i];
    }
    if (sum != h.total && h.total < UINT32_MAX) {
        /* counts wrap at 2^32 per bin; below that the total is their sum */
        abort();
    }
    size_t n = store_hist_encode(&h, enc, sizeof enc);
    if (store_hist_merge_encoded(&back, enc, n) != 0 ||
        memcmp(back.count, h.count, sizeof h.count)) {
        abort();
    }
    static const double qs[] = {0.05, 0.5, 0.95};
    double out[3];
    store_hist_quantiles(&h, qs, 3, out);
    if (h.total && sum == h.total) {
        if (!(out[0] <= out[1] && out[1] <= out[2]) || out[2] > exp2(48.5) || out[0] < 0) {
            abort();
        }
    }
    return 0;
}

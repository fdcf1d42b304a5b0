/*
 * token_batch.c - one decode step over a batch (docs/python.md "PyTorch", docs/api.md): a
 * [64, 128k] fp32 logits matrix added to 64 responses by one tt_response_token_batch call,
 * against 64 tt_response_token calls on the same rows, in the same run; per row. Seven
 * alternating runs of several steps each, medians. The rows differ per response and per step
 * (generated once, outside the timing), so the caches hold none of them between calls: the
 * matrix is 32 MiB. The client's rings are large and the collector absent: what is timed is
 * the call. The accelerator path (statistics computed by torch on the device) is not measured
 * here: this program runs on the CPU only.
 *
 *   token_batch [--smoke]     JSON lines on stdout
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "telltale.h"

#define RUNS 7
#define B 64

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static tt_client *open_client(void)
{
    tt_config *cfg;
    tt_client *c;
    if (tt_config_new(&cfg) || tt_config_set(cfg, "endpoint", "unix:/nonexistent/telltale.sock") ||
        tt_config_set(cfg, "agent", "bench-token-batch") ||
        tt_config_set(cfg, "ring_bytes", "134217728") || tt_open(&c, cfg)) {
        fprintf(stderr, "token_batch: cannot open a client\n");
        exit(1);
    }
    tt_config_free(cfg);
    return c;
}

/* Logits with a realistic spread: a smooth random field plus a few peaks. */
static void fill(float *m, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        m[i] = (float)((double)(s >> 40) / (double)(1 << 24) * 8.0 - 4.0);
        if ((s >> 20 & 1023) == 0) {
            m[i] += 10.0f;
        }
    }
}

/* ns per row: steps decode steps of B rows, one tt_response_token_batch call each */
static double time_batched(tt_response **rs, float **m, size_t v, int steps, const int32_t *chosen)
{
    tt_verdict verdicts[B];
    double t0 = now_ns();
    for (int s = 0; s < steps; s++) {
        if (tt_response_token_batch(rs, B, m[s & 1], v, 1, v, TT_DTYPE_F32, chosen, verdicts,
                                    NULL)) {
            fprintf(stderr, "token_batch: batch refused\n");
            exit(1);
        }
    }
    return (now_ns() - t0) / ((double)steps * B);
}

/* ns per row: the same steps as B tt_response_token calls each */
static double time_single(tt_response **rs, float **m, size_t v, int steps, const int32_t *chosen)
{
    tt_verdict verdict;
    double t0 = now_ns();
    for (int s = 0; s < steps; s++) {
        for (int b = 0; b < B; b++) {
            if (tt_response_token(rs[b], m[s & 1] + (size_t)b * v, v, 1, TT_DTYPE_F32, chosen[b],
                                  &verdict, NULL)) {
                fprintf(stderr, "token_batch: row refused\n");
                exit(1);
            }
        }
    }
    return (now_ns() - t0) / ((double)steps * B);
}

int main(int argc, char **argv)
{
    int smoke = argc > 1 && strcmp(argv[1], "--smoke") == 0;
    size_t v = smoke ? 4096 : 131072;
    int steps = smoke ? 2 : 16, runs = smoke ? 3 : RUNS;
    /* Two matrices alternate, so that a step never finds the previous step's rows in cache. */
    size_t elems = (size_t)B * v;
    float *m[2] = {malloc(elems * sizeof(float)), malloc(elems * sizeof(float))};
    if (!m[0] || !m[1]) {
        fprintf(stderr, "token_batch: out of memory\n");
        return 1;
    }
    fill(m[0], elems, 1);
    fill(m[1], elems, 2);
    int32_t chosen[B];
    for (int b = 0; b < B; b++) {
        chosen[b] = (int32_t)((size_t)b * 2654435761u % v);
    }
    tt_client *c = open_client();
    tt_response *rs[B];
    for (int b = 0; b < B; b++) {
        if (tt_response_begin(c, &rs[b], "bench", "m", NULL, 0)) {
            fprintf(stderr, "token_batch: cannot begin a response\n");
            return 1;
        }
    }
    double batched[RUNS], single[RUNS];
    uint64_t sink = 0;
    sink += time_batched(rs, m, v, 1, chosen) > 0; /* warm up: pages, rings, the CPU path */
    sink += time_single(rs, m, v, 1, chosen) > 0;
    for (int r = 0; r < runs; r++) {
        if (r & 1) { /* alternate which goes first */
            batched[r] = time_batched(rs, m, v, steps, chosen);
            single[r] = time_single(rs, m, v, steps, chosen);
        } else {
            single[r] = time_single(rs, m, v, steps, chosen);
            batched[r] = time_batched(rs, m, v, steps, chosen);
        }
    }
    qsort(batched, (size_t)runs, sizeof *batched, cmp);
    qsort(single, (size_t)runs, sizeof *single, cmp);
    double bt = batched[runs / 2], st = single[runs / 2];
    printf("{\"bench\":\"token_batch\",\"metric\":\"batch_64x%zu_f32_per_row_ns\",\"value\":%.1f,"
           "\"unit\":\"ns\",\"baseline\":\"64 tt_response_token calls on the same rows: %.1f ns "
           "per row\",\"ratio\":%.3f,\"note\":\"CPU, one tt_response_token_batch call per step; "
           "median of %d runs of %d steps; the accelerator path is not measured (no GPU)\"}\n",
           v, bt, st, bt / st, runs, steps);
    printf("{\"bench\":\"token_batch\",\"metric\":\"batch_64x%zu_f32_gb_per_s\",\"value\":%.2f,"
           "\"unit\":\"GB/s\",\"baseline\":null,\"ratio\":null,\"note\":\"logits read per "
           "second by the batched call (%zu bytes per row)\"}\n",
           v, (double)v * sizeof(float) / bt, v * sizeof(float));
    for (int b = 0; b < B; b++) {
        tt_response_end(rs[b], NULL);
    }
    tt_close(c, 0);
    free(m[0]);
    free(m[1]);
    return sink == UINT64_MAX;
}

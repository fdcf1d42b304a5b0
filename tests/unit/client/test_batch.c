/*
 * test_batch.c - one decode step over a batch (tt_response_token_batch) and tokens from
 * statistics computed elsewhere (tt_response_token_stats), without a collector: each must give
 * every response exactly what the single-row call tt_response_token gives it (statistics,
 * verdicts, summaries), skip finished sequences, and refuse what it cannot read without
 * counting any token.
 */
#include <math.h>

#include "common/half.h"
#include "telltale.h"
#include "common/rng.h"
#include "test.h"

#define B 5
#define V 1000
#define PAD 24 /* the matrix's rows are V + PAD elements apart, as a slice of a wider buffer */

static tt_client *local_client(void)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", "tcp://127.0.0.1:1"));
    CHECK_OK(tt_config_set(cfg, "agent", "unit"));
    CHECK_OK(tt_config_set(cfg, "response.topk", "8"));
    /* a guard that trips now and then, so that verdicts differ between rows */
    CHECK_OK(tt_config_set(cfg, "guard.token_min_prob", "0.01"));
    CHECK_OK(tt_config_set(cfg, "guard.action", "flag"));
    tt_client *c;
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    return c;
}

static void fill(tt__rng *rng, float *m, int32_t *chosen, int step)
{
    for (int b = 0; b < B; b++) {
        float *row = m + (size_t)b * (V + PAD);
        double scale = 1.0 + (double)((b + step) % 7);
        for (int i = 0; i < V + PAD; i++) {
            row[i] = (float)(scale * (tt__rng_uniform(rng) * 2.0 - 1.0));
        }
        chosen[b] = (int32_t)(tt__rng_next(rng) % V);
        if ((b + step) % 3 == 0) {
            row[chosen[b]] += 8.0f; /* a confident token */
        }
    }
}

static void check_same_stats(const tt_token_stats *a, const tt_token_stats *b)
{
    CHECK_EQ(a->chosen, b->chosen);
    CHECK_EQ(a->rank, b->rank);
    CHECK(a->logprob == b->logprob);
    CHECK(a->prob == b->prob);
    CHECK(a->entropy == b->entropy);
    CHECK(a->margin == b->margin);
    CHECK_EQ(a->flags, b->flags);
    CHECK_EQ(a->k, b->k);
    for (uint32_t j = 0; j < a->k; j++) {
        CHECK_EQ(a->topk_ids[j], b->topk_ids[j]);
        CHECK(a->topk_probs[j] == b->topk_probs[j]);
    }
}

static void check_same_summary(const tt_response_summary *a, const tt_response_summary *b)
{
    CHECK_EQ(a->tokens, b->tokens);
    CHECK(a->mean_logprob == b->mean_logprob);
    CHECK(a->min_logprob == b->min_logprob);
    CHECK(a->mean_entropy == b->mean_entropy);
    CHECK(a->low_confidence_share == b->low_confidence_share);
    CHECK_EQ(a->verdict, b->verdict);
    CHECK_STR(a->reason, b->reason);
}

TEST(batch_gives_each_response_what_single_row_calls_give_it)
{
    tt_client *c = local_client();
    tt_response *batched[B], *single[B];
    for (int b = 0; b < B; b++) {
        CHECK_OK(tt_response_begin(c, &batched[b], "s", "m", NULL, 0));
        CHECK_OK(tt_response_begin(c, &single[b], "s", "m", NULL, 0));
    }
    static float m[B * (V + PAD)];
    int32_t chosen[B];
    tt__rng rng;
    tt__rng_seed(&rng, 7);
    int flagged = 0;
    const int steps = 40;
    for (int step = 0; step < steps; step++) {
        fill(&rng, m, chosen, step);
        tt_verdict vb[B], vs;
        tt_token_stats sb[B], ss;
        CHECK_OK(
            tt_response_token_batch(batched, B, m, V, 1, V + PAD, TT_DTYPE_F32, chosen, vb, sb));
        for (int b = 0; b < B; b++) {
            CHECK_OK(tt_response_token(single[b], m + (size_t)b * (V + PAD), V, 1, TT_DTYPE_F32,
                                       chosen[b], &vs, &ss));
            CHECK_EQ(vb[b], vs);
            check_same_stats(&sb[b], &ss);
            CHECK_EQ(sb[b].k, 8u);
            flagged += vs == TT_FLAG;
        }
    }
    CHECK_MSG(flagged > 0 && flagged < steps * B, "flagged %d of %d", flagged, steps * B);
    for (int b = 0; b < B; b++) {
        tt_response_summary x, y;
        CHECK_OK(tt_response_end(batched[b], &x));
        CHECK_OK(tt_response_end(single[b], &y));
        CHECK_EQ(x.tokens, (uint32_t)steps);
        check_same_summary(&x, &y);
    }
    tt_close(c, 100);
}

TEST(batch_reads_half_precision_columns_and_skips_finished_sequences)
{
    /* A [V, B] bf16 matrix read column by column (row_stride 1, stride B) and a [B, V] f16 one,
     * with sequence 2 finished (NULL): it gets no token and a PASS. */
    tt_client *c = local_client();
    tt_response *batched[B], *single[B];
    for (int b = 0; b < B; b++) {
        CHECK_OK(tt_response_begin(c, &batched[b], "s", "m", NULL, 0));
        CHECK_OK(tt_response_begin(c, &single[b], "s", "m", NULL, 0));
    }
    tt_response *live[B];
    memcpy(live, batched, sizeof live);
    live[2] = NULL;
    static uint16_t bf[V * B], h[B * V];
    int32_t chosen[B];
    tt__rng rng;
    tt__rng_seed(&rng, 11);
    for (int step = 0; step < 6; step++) {
        for (int i = 0; i < V * B; i++) {
            float x = (float)(4.0 * tt__rng_uniform(&rng) - 2.0);
            uint32_t bits;
            memcpy(&bits, &x, 4);
            bf[i] = (uint16_t)(bits >> 16);
            h[i] = tt__f32_to_f16(x);
        }
        for (int b = 0; b < B; b++) {
            chosen[b] = (int32_t)(tt__rng_next(&rng) % V);
        }
        const int f16 = step % 2;
        tt_verdict vb[B];
        tt_token_stats sb[B];
        vb[2] = TT_HALT; /* must be overwritten with PASS */
        if (f16) {
            CHECK_OK(tt_response_token_batch(live, B, h, V, 1, V, TT_DTYPE_F16, chosen, vb, sb));
        } else {
            CHECK_OK(tt_response_token_batch(live, B, bf, V, B, 1, TT_DTYPE_BF16, chosen, vb, sb));
        }
        CHECK_EQ(vb[2], TT_PASS);
        for (int b = 0; b < B; b++) {
            if (b == 2) {
                continue;
            }
            tt_verdict vs;
            tt_token_stats ss;
            if (f16) {
                CHECK_OK(tt_response_token(single[b], h + (size_t)b * V, V, 1, TT_DTYPE_F16,
                                           chosen[b], &vs, &ss));
            } else {
                CHECK_OK(
                    tt_response_token(single[b], bf + b, V, B, TT_DTYPE_BF16, chosen[b], &vs, &ss));
            }
            CHECK_EQ(vb[b], vs);
            check_same_stats(&sb[b], &ss);
        }
    }
    for (int b = 0; b < B; b++) {
        tt_response_summary x, y;
        CHECK_OK(tt_response_end(batched[b], &x));
        CHECK_OK(tt_response_end(single[b], &y));
        CHECK_EQ(x.tokens, b == 2 ? 0u : 6u);
        if (b != 2) {
            check_same_summary(&x, &y);
        }
    }
    tt_close(c, 100);
}

TEST(batch_refuses_what_it_cannot_read_and_counts_no_token)
{
    tt_client *c = local_client();
    tt_response *rs[2];
    CHECK_OK(tt_response_begin(c, &rs[0], "s", "m", NULL, 0));
    CHECK_OK(tt_response_begin(c, &rs[1], "s", "m", NULL, 0));
    float m[2 * 4] = {1, 2, 3, 4, 4, 3, 2, 1};
    int32_t chosen[2] = {3, 0};
    CHECK_OK(tt_response_token_batch(NULL, 0, NULL, 0, 0, 0, TT_DTYPE_F32, NULL, NULL, NULL));
    CHECK_EQ(tt_response_token_batch(NULL, 2, m, 4, 1, 4, TT_DTYPE_F32, chosen, NULL, NULL),
             TT_EINVAL);
    CHECK_EQ(tt_response_token_batch(rs, 2, m, 4, 1, 4, TT_DTYPE_F32, NULL, NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_response_token_batch(rs, 2, NULL, 4, 1, 4, TT_DTYPE_F32, chosen, NULL, NULL),
             TT_EINVAL);
    CHECK_EQ(tt_response_token_batch(rs, 2, m, 0, 1, 4, TT_DTYPE_F32, chosen, NULL, NULL),
             TT_EINVAL);
    CHECK_EQ(tt_response_token_batch(rs, 2, m, 4, 1, 4, (tt_dtype)9, chosen, NULL, NULL),
             TT_EINVAL);
    CHECK_EQ(
        tt_response_token_batch(rs, 2, m, 4, 1, SIZE_MAX / 2, TT_DTYPE_F32, chosen, NULL, NULL),
        TT_EINVAL); /* the second row lies past the address space */
    tt_token_stats st[2];
    CHECK_OK(tt_response_token_batch(rs, 2, m, 4, 1, 4, TT_DTYPE_F32, chosen, NULL, st));
    CHECK_EQ(st[0].rank, 0);
    CHECK_EQ(st[1].rank, 0);
    CHECK_EQ(st[0].topk_ids[0], 3);
    CHECK_EQ(st[1].topk_ids[0], 0);
    for (int b = 0; b < 2; b++) {
        tt_response_summary s;
        CHECK_OK(tt_response_end(rs[b], &s));
        CHECK_EQ(s.tokens, 1u); /* only the accepted batch counted */
    }
    tt_close(c, 100);
}

TEST(token_stats_computed_elsewhere_count_as_the_row_would)
{
    tt_client *c = local_client();
    tt_response *from_row, *from_stats;
    CHECK_OK(tt_response_begin(c, &from_row, "s", "m", NULL, 0));
    CHECK_OK(tt_response_begin(c, &from_stats, "s", "m", NULL, 0));
    tt__rng rng;
    tt__rng_seed(&rng, 3);
    static float row[V];
    for (int step = 0; step < 30; step++) {
        for (int i = 0; i < V; i++) {
            row[i] = (float)((1 + step % 5) * (tt__rng_uniform(&rng) * 2.0 - 1.0));
        }
        int32_t chosen = (int32_t)(tt__rng_next(&rng) % V);
        tt_token_stats computed, a, b;
        tt_verdict va, vb;
        /* computed with the full top-k, as an accelerator would send it */
        CHECK_OK(tt_token_stats_compute(row, V, 1, TT_DTYPE_F32, chosen, TT_TOPK_MAX, &computed));
        CHECK_OK(tt_response_token(from_row, row, V, 1, TT_DTYPE_F32, chosen, &va, &a));
        CHECK_OK(tt_response_token_stats(from_stats, &computed, NULL, &vb, &b));
        CHECK_EQ(va, vb);
        check_same_stats(&a, &b); /* k cut to the response's 8 */
    }
    tt_response_summary x, y;
    CHECK_OK(tt_response_end(from_row, &x));

    tt_token_stats bad;
    CHECK_OK(tt_token_stats_compute(row, V, 1, TT_DTYPE_F32, 0, 4, &bad));
    tt_token_stats s = bad;
    s.prob = 1.5f;
    CHECK_EQ(tt_response_token_stats(from_stats, &s, NULL, NULL, NULL), TT_EINVAL);
    s = bad;
    s.logprob = 0.5f;
    CHECK_EQ(tt_response_token_stats(from_stats, &s, NULL, NULL, NULL), TT_EINVAL);
    s = bad;
    s.entropy = NAN;
    CHECK_EQ(tt_response_token_stats(from_stats, &s, NULL, NULL, NULL), TT_EINVAL);
    s = bad;
    s.k = TT_TOPK_MAX + 1;
    CHECK_EQ(tt_response_token_stats(from_stats, &s, NULL, NULL, NULL), TT_EINVAL);
    s = bad;
    s.flags = 0x100;
    CHECK_EQ(tt_response_token_stats(from_stats, &s, NULL, NULL, NULL), TT_EINVAL);
    s = bad;
    s.topk_probs[1] = -0.1f;
    CHECK_EQ(tt_response_token_stats(from_stats, &s, NULL, NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_response_token_stats(from_stats, NULL, NULL, NULL, NULL), TT_EINVAL);
    CHECK_EQ(tt_response_token_stats(NULL, &bad, NULL, NULL, NULL), TT_EINVAL);
    CHECK_OK(tt_response_end(from_stats, &y));
    check_same_summary(&x, &y); /* the refused ones were not counted */
    tt_close(c, 100);
}

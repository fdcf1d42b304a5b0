/*
 * test_emit_site.c - TT_LOG (include/telltale.h): a call site's events, encoded by the worker's
 * encoder, are byte for byte the events tt_log makes of the same message, keys and values,
 * whatever the values (strings short, long, empty or NULL; every type; a session or none),
 * for sites of 0 to 8 attributes, long messages and long keys; the registered site writes only
 * its values in the ring (TT_REC_LOG_SITE), and an event over max_event_bytes is refused and
 * counted as tt_log refuses it, the message and the keys counted in its size.
 */
#include "test.h"

#include "client/client.h"
#include "client/encode.h"
#include "common/rng.h"
#include "serve.h"

static int pick_len(tt__rng *s)
{
    uint64_t x = tt__rng_next(s) % 12;
    return x == 0 ? -1 : x < 8 ? (int)(tt__rng_next(s) % 20) : (int)(tt__rng_next(s) % 300);
}

/* The record the last event call wrote at h0, encoded as the worker encodes it. */
static size_t encode_at(tt__ring *r, uint64_t h0, uint8_t *out, size_t cap, uint16_t *kind)
{
    const tt__rec_hdr *h = (const void *)(r->data + (h0 & r->mask));
    if (h->kind == TT_REC_PAD) {
        h = (const void *)r->data;
    }
    *kind = h->kind;
    tt__buf b;
    tt__buf_init(&b, 1 << 22);
    CHECK_OK(tt__buf_reserve(&b, 1 << 21));
    tt__encode_record(&b, h, 1000, 1000, NULL, NULL, NULL);
    CHECK(b.len <= cap);
    memcpy(out, b.data, b.len);
    size_t n = b.len;
    tt__buf_fini(&b);
    return n;
}

struct vals {
    const char *s[4];
    int64_t i[2];
    double d;
    int b;
};

/* Site k with the values v, by TT_LOG; the same event by tt_log. */
static int by_site(tt_client *c, int k, const char *sess, const struct vals *v)
{
    switch (k) {
    case 0:
        return TT_LOG(c, sess, TT_WARN, "no attributes");
    case 1:
        return TT_LOG(c, sess, TT_INFO, "one string", TT_LOG_STR("model", v->s[0]));
    case 2:
        return TT_LOG(c, sess, TT_INFO, "example", TT_LOG_INT("a", v->i[0]),
                      TT_LOG_INT("b", v->i[1]), TT_LOG_DOUBLE("x", v->d));
    case 3:
        return TT_LOG(c, sess, TT_ERROR,
                      "a message longer than the one-pass writer's sixteen and thirty-two bytes",
                      TT_LOG_STR("gen_ai.request.model", v->s[0]),
                      TT_LOG_INT("gen_ai.usage.input_tokens", v->i[0]),
                      TT_LOG_INT("gen_ai.usage.output_tokens", v->i[1]),
                      TT_LOG_BOOL("cached", v->b), TT_LOG_STR("", v->s[1]),
                      TT_LOG_DOUBLE("a key of more than thirty-two bytes, with spaces", v->d),
                      TT_LOG_STR("k7", v->s[2]), TT_LOG_STR("k8", v->s[3]));
    default:
        return TT_LOG(c, sess, TT_DEBUG, "", TT_LOG_BOOL("b", v->b), TT_LOG_STR("s", v->s[1]));
    }
}

static int by_log(tt_client *c, int k, const char *sess, const struct vals *v)
{
    switch (k) {
    case 0:
        return tt_log(c, sess, TT_WARN, "no attributes", NULL, 0);
    case 1: {
        tt_attr a[] = {TT_STR("model", v->s[0])};
        return tt_log(c, sess, TT_INFO, "one string", a, 1);
    }
    case 2: {
        tt_attr a[] = {TT_INT("a", v->i[0]), TT_INT("b", v->i[1]), TT_DOUBLE("x", v->d)};
        return tt_log(c, sess, TT_INFO, "example", a, 3);
    }
    case 3: {
        tt_attr a[] = {TT_STR("gen_ai.request.model", v->s[0]),
                       TT_INT("gen_ai.usage.input_tokens", v->i[0]),
                       TT_INT("gen_ai.usage.output_tokens", v->i[1]),
                       TT_BOOL("cached", v->b),
                       TT_STR("", v->s[1]),
                       TT_DOUBLE("a key of more than thirty-two bytes, with spaces", v->d),
                       TT_STR("k7", v->s[2]),
                       TT_STR("k8", v->s[3])};
        return tt_log(c, sess, TT_ERROR,
                      "a message longer than the one-pass writer's sixteen and thirty-two bytes", a,
                      8);
    }
    default: {
        tt_attr a[] = {TT_BOOL("b", v->b), TT_STR("s", v->s[1])};
        return tt_log(c, sess, TT_DEBUG, "", a, 2);
    }
    }
}

static void run(const char *max_event_bytes, uint64_t seed)
{
    tt_client *c = tt_test_ring_client("4194304", max_event_bytes);
    tt__ring *r = tt__tls.r;
    CHECK(r && tt__tls.c == c);
    static uint8_t want[1 << 21], got[1 << 21];
    char sbuf[4][400], sess[400];
    tt__rng s;
    tt__rng_seed(&s, seed);
    unsigned site_records = 0, too_large = 0;
    for (int iter = 0; iter < 4000; iter++) {
        struct vals v;
        for (int i = 0; i < 4; i++) {
            v.s[i] = tt_test_make_str(sbuf[i], pick_len(&s), (char)('a' + i));
        }
        v.i[0] = (int64_t)tt__rng_next(&s);
        v.i[1] = -(int64_t)(tt__rng_next(&s) % 1000);
        v.d = (double)(int64_t)tt__rng_next(&s) / 3.0;
        v.b = (int)(tt__rng_next(&s) % 3); /* 2: true as well */
        const char *se = tt_test_make_str(sess, pick_len(&s), 'S');
        int k = (int)(tt__rng_next(&s) % 5);
        uint64_t large0 = atomic_load(&r->dropped_large);
        uint64_t h0 = atomic_load(&r->head);
        int rc_log = by_log(c, k, se, &v);
        uint64_t h1 = atomic_load(&r->head);
        int rc_site = by_site(c, k, se, &v);
        CHECK_EQ(rc_site, rc_log);
        if (rc_log == TT_E2BIG) {
            CHECK_EQ_U64(atomic_load(&r->head), h0); /* neither wrote anything */
            CHECK_EQ_U64(atomic_load(&r->dropped_large), large0 + 2);
            too_large++;
            continue;
        }
        CHECK_OK(rc_log);
        uint16_t kw, kg;
        size_t nw = encode_at(r, h0, want, sizeof want, &kw);
        size_t ng = encode_at(r, h1, got, sizeof got, &kg);
        CHECK_EQ(kw, TT_REC_LOG);
        CHECK(kg == TT_REC_LOG_SITE || kg == TT_REC_LOG);
        site_records += kg == TT_REC_LOG_SITE;
        CHECK_MSG(nw == ng && memcmp(want, got, nw) == 0,
                  "site %d, iteration %d: the event differs from tt_log's (%zu and %zu bytes)", k,
                  iter, nw, ng);
    }
    /* The registered sites wrote their values only (a site's first call, and calls where the
     * one-pass writer lacks room, go through tt_log whole). */
    CHECK_MSG(site_records > (4000 - too_large) * 9 / 10, "%u of %u", site_records,
              4000 - too_large);
    if (strcmp(max_event_bytes, "256") == 0) {
        CHECK(too_large > 100);
    }
    tt_close(c, 100);
}

TEST(emit_site_events_encode_as_tt_log_events)
{
    run("65536", 11);
}

TEST(emit_site_events_over_the_limit_are_refused_as_tt_log_refuses_them)
{
    run("256", 12);
}

TEST(emit_site_that_is_not_one_is_refused)
{
    tt_client *c = tt_test_ring_client(NULL, NULL);
    const tt_attr_value v[1] = {{.i = 1}};
    static const char *const keys[] = {"k"};
    static const unsigned char bad_type[] = {9}, int_type[] = {TT_ATTR_INT};
    tt_log_site abi = {2, 1, "m", keys, int_type, 0, 0, 0};
    tt_log_site type = {TT_LOG_SITE_ABI, 1, "m", keys, bad_type, 0, 0, 0};
    tt_log_site many = {TT_LOG_SITE_ABI, TT_LOG_MAX_ATTRS + 1, "m", keys, int_type, 0, 0, 0};
    tt_log_site nomsg = {TT_LOG_SITE_ABI, 0, NULL, NULL, NULL, 0, 0, 0};
    tt_log_site nokeys = {TT_LOG_SITE_ABI, 1, "m", NULL, int_type, 0, 0, 0};
    tt_log_site *bad[] = {&abi, &type, &many, &nomsg, &nokeys};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ(tt_log_at(c, bad[i], NULL, TT_INFO, v), TT_EINVAL);
        CHECK_EQ(tt_log_at(c, bad[i], NULL, TT_INFO, v), TT_EINVAL); /* and stays refused */
    }
    tt_log_site good = {TT_LOG_SITE_ABI, 1, "m", keys, int_type, 0, 0, 0};
    CHECK_EQ(tt_log_at(NULL, &good, NULL, TT_INFO, v), TT_EINVAL);
    CHECK_EQ(tt_log_at(c, NULL, NULL, TT_INFO, v), TT_EINVAL);
    CHECK_EQ(tt_log_at(c, &good, NULL, TT_INFO, NULL), TT_EINVAL);
    CHECK_OK(tt_log_at(c, &good, NULL, TT_INFO, v));
    CHECK(good.id >= 1 && good.id <= TT__SITES_MAX);
    CHECK_EQ(good.fixed, 4 + 1 + 4 + 4 + 1 + 1 + 8); /* message, count, key, type, value */
    CHECK_EQ(good.strs, 0);
    CHECK_OK(tt_log_at(c, &good, NULL, TT_INFO, v));
    tt_close(c, 100);
}

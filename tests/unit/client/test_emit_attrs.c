/*
 * test_emit_attrs.c - attribute lists of every shape are copied into the ring exactly: keys and
 * string values short (one or two 16-byte copies, no room check per field) and long (the checked
 * copy) mixed in any order, lengths on both sides of 16 and of 32, NULL keys and values (written
 * as empty strings), all four types, lists of 0 to 12, with the largest event large enough that
 * the unchecked writer is taken and small enough that it is not (max_event_bytes 256: a list of
 * 4 short attributes already does not fit its bound). Every event is read back from the ring
 * right after its call.
 */
#include "test.h"

#include "client/client.h"
#include "common/rng.h"
#include "serve.h"

/* A length for a key or a string value: mostly under 16, some 14-17 and 29-34 (the edges of the
 * one- and two-copy cases), some longer, some NULL. */
static int pick_len(tt__rng *s)
{
    uint64_t x = tt__rng_next(s) % 16;
    if (x == 0) {
        return -1;
    }
    if (x < 9) {
        return (int)(tt__rng_next(s) % 16);
    }
    if (x < 11) {
        return 14 + (int)(tt__rng_next(s) % 4);
    }
    if (x < 13) {
        return 29 + (int)(tt__rng_next(s) % 6);
    }
    return 18 + (int)(tt__rng_next(s) % 40);
}

static void run(const char *max_event_bytes, uint64_t seed)
{
    tt_client *c = tt_test_ring_client("4194304", max_event_bytes);
    tt__ring *r = tt__tls.r;
    CHECK(r && tt__tls.c == c);

    enum { MAXN = 12 };
    char keys[MAXN][64], vals[MAXN][64];
    tt__rng s;
    tt__rng_seed(&s, seed);
    unsigned written = 0, too_large = 0;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = (size_t)(tt__rng_next(&s) % (MAXN + 1));
        tt_attr a[MAXN];
        for (size_t i = 0; i < n; i++) {
            const char *k = tt_test_make_str(keys[i], pick_len(&s), (char)('A' + i));
            switch (tt__rng_next(&s) % 4) {
            case 0:
                a[i] = (tt_attr)TT_STR(k, tt_test_make_str(vals[i], pick_len(&s), (char)('a' + i)));
                break;
            case 1:
                a[i] = (tt_attr)TT_INT(k, (int64_t)tt__rng_next(&s));
                break;
            case 2:
                a[i] = (tt_attr)TT_DOUBLE(k, (double)(int64_t)tt__rng_next(&s) / 7.0);
                break;
            default:
                a[i] = (tt_attr)TT_BOOL(k, (int)(tt__rng_next(&s) & 1));
                break;
            }
        }
        int is_metric = iter % 3 == 2;
        uint64_t h0 = atomic_load(&r->head);
        int rc = is_metric ? tt_metric(c, "sess", TT_GAUGE, "m", 1.5, NULL, a, n)
                           : tt_log(c, NULL, TT_INFO, "a message", a, n);
        if (rc == TT_E2BIG) {
            CHECK_EQ_U64(atomic_load(&r->head), h0);
            too_large++;
            continue;
        }
        CHECK_OK(rc);
        written++;
        const tt__rec_hdr *h = (const void *)(r->data + (h0 & r->mask));
        if (h->kind == TT_REC_PAD) {
            h = (const void *)r->data;
        }
        const uint8_t *p = (const uint8_t *)h + TT_REC_HDR;
        if (is_metric) {
            CHECK_EQ(h->kind, TT_REC_METRIC);
            p = tt_test_ring_str(tt_test_ring_str(tt_test_ring_str(p + 8, "sess"), "m"), NULL);
        } else {
            CHECK_EQ(h->kind, TT_REC_LOG);
            p = tt_test_ring_str(tt_test_ring_str(p, NULL), "a message");
        }
        uint32_t na;
        memcpy(&na, p, 4);
        CHECK_EQ(na, n);
        p += 4;
        for (size_t i = 0; i < n; i++) {
            p = tt_test_ring_str(p, a[i].key);
            CHECK_EQ(*p, a[i].type);
            p++;
            switch (a[i].type) {
            case TT_ATTR_STR:
                p = tt_test_ring_str(p, a[i].v.s);
                break;
            case TT_ATTR_INT:
            case TT_ATTR_DOUBLE:
                CHECK(memcmp(p, &a[i].v, 8) == 0);
                p += 8;
                break;
            default:
                CHECK_EQ(*p, a[i].v.b ? 1 : 0);
                p++;
                break;
            }
        }
        CHECK((size_t)(p - (const uint8_t *)h) <= h->len);
        CHECK((size_t)(p - (const uint8_t *)h) + 8 > h->len); /* len is the record, rounded */
    }
    CHECK(written > 1000);
    if (strcmp(max_event_bytes, "256") == 0) {
        CHECK(too_large > 0); /* the limit was reached, and refused exactly */
    }
    tt_close(c, 100);
}

TEST(emit_copies_attribute_lists_of_every_shape)
{
    run("65536", 0x9e3779b97f4a7c15u);
}

TEST(emit_copies_attribute_lists_of_every_shape_near_the_event_limit)
{
    run("256", 0xd1b54a32d192ed03u);
}

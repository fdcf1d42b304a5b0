/*
 * test_emit_strings.c - the hot path copies every string into the ring exactly: lengths 0 to
 * 40 (inline copies below 17 bytes, memcpy above), as message, attribute key and attribute
 * value, read back from the calling thread's ring.
 *
 * The records stay in the ring's memory after the worker has drained them (it only moves the
 * tail), so the test reads them back from where the head was before it emitted.
 */
#include "test.h"

#include "client/client.h"
#include "serve.h"

/* A NUL-terminated string of n bytes, each different from its neighbours. */
static void fill(char *s, uint32_t n, char base)
{
    for (uint32_t i = 0; i < n; i++) {
        s[i] = (char)(base + (char)(i % 23));
    }
    s[n] = 0;
}

TEST(emit_copies_strings_of_every_length)
{
    tt_client *c = tt_test_ring_client(NULL, NULL);
    tt__ring *r = tt__tls.r;
    CHECK(r && tt__tls.c == c);
    uint64_t start = atomic_load(&r->head);
    char msg[64], key[64], val[64];
    for (uint32_t n = 0; n <= 40; n++) {
        fill(msg, n, 'a');
        fill(key, n, 'A');
        fill(val, n, '0');
        tt_attr a[2] = {TT_STR(key, val), TT_INT("i", (int64_t)n)};
        CHECK_OK(tt_log(c, n % 2 ? "s" : NULL, TT_INFO, msg, a, 2));
    }
    uint64_t pos = start;
    for (uint32_t n = 0; n <= 40; n++) {
        const tt__rec_hdr *h = (const void *)(r->data + (pos & r->mask));
        CHECK_EQ(h->kind, TT_REC_LOG);
        fill(msg, n, 'a');
        fill(key, n, 'A');
        fill(val, n, '0');
        const uint8_t *p = (const uint8_t *)h + TT_REC_HDR;
        p = tt_test_ring_str(p, n % 2 ? "s" : "");
        p = tt_test_ring_str(p, msg);
        uint32_t na;
        memcpy(&na, p, 4);
        CHECK_EQ(na, 2);
        p = tt_test_ring_str(p + 4, key);
        CHECK_EQ(*p, TT_ATTR_STR);
        p = tt_test_ring_str(p + 1, val);
        p = tt_test_ring_str(p, "i");
        CHECK_EQ(*p, TT_ATTR_INT);
        int64_t iv;
        memcpy(&iv, p + 1, 8);
        CHECK_EQ(iv, n);
        CHECK((size_t)(p + 9 - (const uint8_t *)h) <= h->len);
        pos += h->len;
    }
    CHECK_EQ_U64(pos, atomic_load(&r->head));
    tt_close(c, 100);
}

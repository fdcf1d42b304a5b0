/*
 * test_emit_pages.c - the one-pass writer of tt_log and tt_metric reads strings 16 bytes at a
 * time, but never across a page boundary: strings that end on the last byte of a page followed
 * by an unreadable page (any length, as session, message, metric name and unit, attribute key
 * and value) are copied exactly and nothing faults. Long strings (several 16-byte chunks, up to
 * the event limit) are copied exactly too, and an event just over the limit is dropped and
 * counted as too_large, never written.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "test.h"

#include "client/client.h"
#include "serve.h"

/* A string of n bytes whose terminator is the last readable byte before a PROT_NONE page. */
static char *at_page_end(uint8_t *page, size_t ps, uint32_t n, char base)
{
    char *s = (char *)page + ps - n - 1;
    for (uint32_t i = 0; i < n; i++) {
        s[i] = (char)(base + (char)(i % 23));
    }
    s[n] = 0;
    return s;
}

TEST(emit_reads_no_byte_past_a_page_that_ends_a_string)
{
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    /* Five readable pages, each followed by a guard page: one per string of an event. */
    uint8_t *m = mmap(NULL, 10 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(mprotect(m + (2 * i + 1) * ps, ps, PROT_NONE));
    }
    tt_client *c = tt_test_ring_client("4194304", NULL);
    tt__ring *r = tt__tls.r;
    uint64_t start = atomic_load(&r->head);
    for (uint32_t n = 0; n <= 40; n++) {
        char *ses = at_page_end(m, ps, n, 's');
        char *msg = at_page_end(m + 2 * ps, ps, n, 'a');
        char *key = at_page_end(m + 4 * ps, ps, n, 'A');
        char *val = at_page_end(m + 6 * ps, ps, n, '0');
        char *unit = at_page_end(m + 8 * ps, ps, n, 'u');
        tt_attr a[2] = {TT_STR(key, val), TT_INT(key, (int64_t)n)};
        CHECK_OK(tt_log(c, ses, TT_INFO, msg, a, 2));
        CHECK_OK(tt_metric(c, ses, TT_GAUGE, msg, (double)n, unit, a, 1));
    }
    uint64_t pos = start;
    for (uint32_t n = 0; n <= 40; n++) {
        char *ses = at_page_end(m, ps, n, 's');
        char *msg = at_page_end(m + 2 * ps, ps, n, 'a');
        char *key = at_page_end(m + 4 * ps, ps, n, 'A');
        char *val = at_page_end(m + 6 * ps, ps, n, '0');
        char *unit = at_page_end(m + 8 * ps, ps, n, 'u');
        const tt__rec_hdr *h = (const void *)(r->data + (pos & r->mask));
        CHECK_EQ(h->kind, TT_REC_LOG);
        const uint8_t *p = tt_test_ring_str((const uint8_t *)h + TT_REC_HDR, ses);
        p = tt_test_ring_str(p, msg);
        uint32_t na;
        memcpy(&na, p, 4);
        CHECK_EQ(na, 2);
        p = tt_test_ring_str(p + 4, key);
        CHECK_EQ(*p, TT_ATTR_STR);
        p = tt_test_ring_str(p + 1, val);
        p = tt_test_ring_str(p, key);
        CHECK_EQ(*p, TT_ATTR_INT);
        CHECK((size_t)(p + 9 - (const uint8_t *)h) <= h->len);
        pos += h->len;

        h = (const void *)(r->data + (pos & r->mask));
        CHECK_EQ(h->kind, TT_REC_METRIC);
        double v;
        memcpy(&v, (const uint8_t *)h + TT_REC_HDR, 8);
        CHECK(v == (double)n);
        p = tt_test_ring_str((const uint8_t *)h + TT_REC_HDR + 8, ses);
        p = tt_test_ring_str(p, msg);
        p = tt_test_ring_str(p, unit);
        memcpy(&na, p, 4);
        CHECK_EQ(na, 1);
        p = tt_test_ring_str(p + 4, key);
        CHECK_EQ(*p, TT_ATTR_STR);
        p = tt_test_ring_str(p + 1, val);
        CHECK((size_t)(p - (const uint8_t *)h) <= h->len);
        pos += h->len;
    }
    CHECK_EQ_U64(pos, atomic_load(&r->head));
    tt_close(c, 100);
    munmap(m, 10 * ps);
}

TEST(emit_copies_long_strings_up_to_the_event_limit_and_drops_beyond)
{
    tt_client *c = tt_test_ring_client("4194304", NULL);
    tt__ring *r = tt__tls.r;
    uint64_t max = r->max_record;
    char *big = malloc(max + 64);
    CHECK(big != NULL);
    /* Payload of a log without attributes: 4 + 0 (session) + 4 + n (message) + 4. */
    size_t lens[] = {17, 31, 32, 33, 100, 1000, 4095, 4096, 4097, max - 12, max - 11};
    for (size_t k = 0; k < TT_ARRAY_LEN(lens); k++) {
        size_t n = lens[k];
        for (size_t i = 0; i < n; i++) {
            big[i] = (char)('a' + (char)((i * 7 + k) % 26));
        }
        big[n] = 0;
        tt_stats s0, s1;
        tt_stats_get(c, &s0, sizeof s0);
        uint64_t h0 = atomic_load(&r->head);
        int rc = tt_log(c, NULL, TT_INFO, big, NULL, 0);
        tt_stats_get(c, &s1, sizeof s1);
        if (n + 12 <= max) {
            CHECK_OK(rc);
            const tt__rec_hdr *h = (const void *)(r->data + (h0 & r->mask));
            if (h->kind == TT_REC_PAD) {
                h = (const void *)(r->data);
            }
            CHECK_EQ(h->kind, TT_REC_LOG);
            const uint8_t *p = tt_test_ring_str((const uint8_t *)h + TT_REC_HDR, "");
            p = tt_test_ring_str(p, big);
            CHECK_EQ_U64(s1.dropped[TT_DROP_TOO_LARGE], s0.dropped[TT_DROP_TOO_LARGE]);
        } else {
            CHECK_EQ(rc, TT_E2BIG);
            CHECK_EQ_U64(atomic_load(&r->head), h0);
            CHECK_EQ_U64(s1.dropped[TT_DROP_TOO_LARGE], s0.dropped[TT_DROP_TOO_LARGE] + 1);
        }
        CHECK_EQ_U64(s1.emitted, s0.emitted + 1);
    }
    free(big);
    tt_close(c, 100);
}

TEST(emit_refuses_an_attribute_of_unknown_type_without_writing)
{
    tt_client *c = tt_test_ring_client("4194304", NULL);
    tt__ring *r = tt__tls.r;
    uint64_t h0 = atomic_load(&r->head);
    tt_attr a[2] = {TT_INT("a", 1), TT_INT("b", 2)};
    a[1].type = (tt_attr_type)9;
    tt_stats s0, s1;
    tt_stats_get(c, &s0, sizeof s0);
    CHECK_EQ(tt_log(c, NULL, TT_INFO, "m", a, 2), TT_EINVAL);
    CHECK_EQ(tt_metric(c, NULL, TT_GAUGE, "m", 1.0, NULL, a, 2), TT_EINVAL);
    tt_stats_get(c, &s1, sizeof s1);
    CHECK_EQ_U64(atomic_load(&r->head), h0);
    CHECK_EQ_U64(s1.emitted, s0.emitted);
    tt_close(c, 100);
}

/*
 * test_client.c - the client's configuration, rings and encoder, without a collector.
 */
#include <pthread.h>

#include "client/client.h"
#include "client/encode.h"
#include "common/batch.h"
#include "test.h"

TEST(config_rejects_unknown_keys_and_bad_values_and_keeps_old_value)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_STR(tt_config_get(cfg, "ring_bytes"), "1048576");
    CHECK_OK(tt_config_set(cfg, "ring_bytes", "2M"));
    CHECK_STR(tt_config_get(cfg, "ring_bytes"), "2097152");
    CHECK_EQ(tt_config_set(cfg, "ring_bytes", "abc"), TT_EINVAL);
    CHECK(strstr(tt_config_error(cfg), "ring_bytes") != NULL);
    CHECK_STR(tt_config_get(cfg, "ring_bytes"), "2097152");
    CHECK_EQ(tt_config_set(cfg, "no_such_key", "1"), TT_EINVAL);
    CHECK(strstr(tt_config_error(cfg), "no_such_key") != NULL);
    CHECK_EQ(tt_config_set(cfg, "endpoint", "http://x"), TT_EINVAL);
    CHECK_EQ(tt_config_set(cfg, "spool_policy", "sometimes"), TT_EINVAL);
    CHECK_OK(tt_config_set(cfg, "spool_policy", "drop_newest"));
    CHECK_STR(tt_config_get(cfg, "spool_policy"), "drop_newest");
    CHECK(tt_config_get(cfg, "nope") == NULL);
    /* A ring that is not a power of two is refused at open. */
    CHECK_OK(tt_config_set(cfg, "ring_bytes", "100000"));
    tt_client *c = (tt_client *)1;
    CHECK_EQ(tt_open(&c, cfg), TT_EINVAL);
    CHECK(c == NULL);
    tt_config_free(cfg);
}

TEST(config_tls_keys_read_from_env_and_a_cert_without_key_is_refused_at_open)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", "tls://collector.example:7443"));
    setenv("TELLTALE_TLS_CA", "/etc/telltale/ca.pem", 1);
    CHECK_OK(tt_config_from_env(cfg));
    unsetenv("TELLTALE_TLS_CA");
    CHECK_STR(tt_config_get(cfg, "tls.ca"), "/etc/telltale/ca.pem");
    CHECK_OK(tt_config_set(cfg, "tls.server_name", "collector.example"));
    CHECK_OK(tt_config_set(cfg, "tls.cert", "/etc/telltale/agent.pem"));
    tt_client *c = (tt_client *)1;
    CHECK_EQ(tt_open(&c, cfg), TT_EINVAL); /* a certificate without its key */
    CHECK(c == NULL);
    tt_config_free(cfg);
}

TEST(config_from_env_reads_telltale_variables)
{
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    setenv("TELLTALE_AGENT", "env-agent", 1);
    setenv("TELLTALE_FLUSH_INTERVAL_MS", "7", 1);
    CHECK_OK(tt_config_from_env(cfg));
    CHECK_STR(tt_config_get(cfg, "agent"), "env-agent");
    CHECK_STR(tt_config_get(cfg, "flush_interval_ms"), "7");
    setenv("TELLTALE_BATCH_BYTES", "-1", 1);
    CHECK_EQ(tt_config_from_env(cfg), TT_EINVAL);
    tt_config_free(cfg);
}

static tt__ring *ring_make(uint64_t size)
{
    tt__ring *r = aligned_alloc(64, sizeof *r);
    memset(r, 0, sizeof *r);
    r->data = aligned_alloc(64, size);
    r->size = size;
    r->mask = size - 1;
    r->max_record = size / 4;
    return r;
}

TEST(ring_wraps_with_padding_and_refuses_when_full)
{
    tt__ring *r = ring_make(4096);
    uint64_t nh;
    int written = 0;
    /* 100-byte payloads: 120-byte records do not divide 4096, so the ring must pad. */
    for (;;) {
        uint8_t *p = tt__ring_reserve(r, 100, &nh);
        if (!p) {
            break;
        }
        memset(p + TT_REC_HDR, written & 0xff, 100);
        ((tt__rec_hdr *)(void *)p)->kind = TT_REC_LOG;
        tt__ring_commit(r, nh);
        written++;
    }
    CHECK_EQ(written, 4096 / 120);
    /* Consume half, as the worker would, and write more: these wrap around. */
    uint64_t tail = 0;
    for (int i = 0; i < written / 2; i++) {
        tt__rec_hdr *h = (tt__rec_hdr *)(void *)(r->data + (tail & r->mask));
        CHECK_EQ(h->kind, TT_REC_LOG);
        tail += h->len;
    }
    atomic_store(&r->tail, tail);
    int more = 0;
    while (tt__ring_reserve(r, 100, &nh)) {
        uint8_t *p = r->data + ((nh - 120) & r->mask);
        ((tt__rec_hdr *)(void *)p)->kind = TT_REC_LOG;
        tt__ring_commit(r, nh);
        more++;
    }
    CHECK(more >= written / 2 - 1);
    /* Walking from tail to head meets only whole records and pads. */
    uint64_t head = atomic_load(&r->head), pos = tail, recs = 0, pads = 0;
    while (pos < head) {
        tt__rec_hdr *h = (tt__rec_hdr *)(void *)(r->data + (pos & r->mask));
        CHECK(h->len >= 8 && h->len % 8 == 0);
        CHECK((pos & r->mask) + h->len <= r->size);
        if (h->kind == TT_REC_PAD) {
            pads++;
        } else {
            recs++;
        }
        pos += h->len;
    }
    CHECK_EQ(pos, head);
    CHECK_EQ(recs, (uint64_t)(written - written / 2 + more));
    CHECK(pads >= 1);
    free(r->data);
    free(r);
}

/* Encode records the way the worker does and decode them with the collector's decoder. */
TEST(encoder_output_decodes_back_to_the_same_fields)
{
    tt__clock_cal cal;
    tt__clock_cal_init(&cal);
    uint8_t rec[512] __attribute__((aligned(8)));
    memset(rec, 0, sizeof rec);
    tt__rec_hdr *h = (tt__rec_hdr *)(void *)rec;
    h->kind = TT_REC_LOG;
    h->aux = TT_ERROR;
    uint8_t *p = rec + TT_REC_HDR;
    uint32_t n;
    n = 2;
    memcpy(p, &n, 4);
    memcpy(p + 4, "s1", 2);
    p += 6;
    n = 5;
    memcpy(p, &n, 4);
    memcpy(p + 4, "hello", 5);
    p += 9;
    n = 2;
    memcpy(p, &n, 4);
    p += 4;
    n = 1;
    memcpy(p, &n, 4);
    memcpy(p + 4, "a", 1);
    p += 5;
    *p++ = TT_ATTR_INT;
    int64_t iv = -42;
    memcpy(p, &iv, 8);
    p += 8;
    n = 1;
    memcpy(p, &n, 4);
    memcpy(p + 4, "b", 1);
    p += 5;
    *p++ = TT_ATTR_STR;
    n = 0;
    memcpy(p, &n, 4);
    p += 4;
    h->len = (uint32_t)(((p - rec) + 7) & ~7);
    tt__buf b;
    tt__buf_init(&b, 1 << 16);
    CHECK_OK(tt__buf_reserve(&b, 4096));
    b.len = TT_BATCH_HDR_MAX;
    tt__encode_record(&b, h, 1000, 990, &cal, NULL, NULL);
    uint8_t inst[16] = {1, 2, 3};
    size_t start = tt__encode_batch_header(b.data, TT_BATCH_HDR_MAX, inst, 7, 990);
    tt__batch bt;
    tt__batch_limits lim = {100, 100};
    const char *why;
    CHECK_MSG(tt__batch_parse(&bt, b.data + start, b.len - start, &lim, &why) == 0, "%s", why);
    CHECK_EQ(bt.n_events, 1);
    CHECK_EQ(bt.first_seq, 7);
    CHECK(memcmp(bt.instance, inst, 16) == 0);
    tt__event ev;
    CHECK(tt__batch_next(&bt, &ev));
    CHECK_EQ(ev.seq, 7);
    CHECK_EQ(ev.time, 1000);
    CHECK_EQ(ev.kind, TT_EV_LOG);
    CHECK(ev.session.n == 2 && memcmp(ev.session.p, "s1", 2) == 0);
    tt__ev_log l;
    CHECK_OK(tt__ev_log_decode(ev.body, &l));
    CHECK_EQ(l.severity, TT_ERROR);
    CHECK(l.message.n == 5 && memcmp(l.message.p, "hello", 5) == 0);
    tt__attr_iter it;
    tt__attr_val a;
    tt__attr_iter_init(&it, ev.body, 3);
    CHECK(tt__attr_next(&it, &a));
    CHECK(a.type == TT_ATTR_INT && a.i == -42);
    CHECK(tt__attr_next(&it, &a));
    CHECK(a.type == TT_ATTR_STR && a.s.n == 0); /* an empty string is still a string */
    CHECK(!tt__attr_next(&it, &a));
    CHECK(!tt__batch_next(&bt, &ev));
    tt__buf_fini(&b);
}

TEST(event_calls_refuse_bad_arguments_without_counting_them)
{
    tt_client *c;
    tt_config *cfg;
    CHECK_OK(tt_config_new(&cfg));
    CHECK_OK(tt_config_set(cfg, "endpoint", "unix:/nonexistent/telltale.sock"));
    CHECK_OK(tt_open(&c, cfg));
    tt_config_free(cfg);
    CHECK_EQ(tt_log(NULL, NULL, TT_INFO, "x", NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_metric(c, NULL, 99, "x", 1, NULL, NULL, 0), TT_EINVAL);
    CHECK_EQ(tt_metric(c, NULL, TT_GAUGE, NULL, 1, NULL, NULL, 0), TT_EINVAL);
    tt_attr bad = {.key = "k", .type = 42};
    CHECK_EQ(tt_log(c, NULL, TT_INFO, "x", &bad, 1), TT_EINVAL);
    tt_step s = {0};
    CHECK_EQ(tt_step_end(c, &s, TT_STATUS_OK, 0, NULL), TT_EINVAL);
    /* An event too large for max_event_bytes is dropped and counted as too_large. */
    char *big = malloc(70000);
    memset(big, 'x', 69999);
    big[69999] = 0;
    CHECK_EQ(tt_log(c, NULL, TT_INFO, big, NULL, 0), TT_E2BIG);
    free(big);
    CHECK_OK(tt_log(c, "s", TT_INFO, "fine", NULL, 0));
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ(st.emitted, 2);
    CHECK_EQ(st.dropped[TT_DROP_TOO_LARGE], 1);
    CHECK_EQ(tt_close(c, 50), TT_ETIMEDOUT);
}

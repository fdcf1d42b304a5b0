/*
 * test_wire.c - CRC-32C, protobuf primitives, frames, endpoints and the JSON writer.
 */
#include <errno.h>

#include "common/compat.h"
#include "common/crc32c.h"
#include "common/json.h"
#include "common/pb.h"
#include "common/wire.h"
#include "test.h"

TEST(crc32c_matches_the_standard_check_value_on_both_paths)
{
    CHECK_EQ(tt__crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ(tt__crc32c_sw(0, "123456789", 9), 0xE3069283u);
    uint8_t buf[1000];
    for (int i = 0; i < 1000; i++) {
        buf[i] = (uint8_t)(i * 7 + 3);
    }
    for (size_t n = 0; n < sizeof buf; n += 37) {
        CHECK_EQ(tt__crc32c(0, buf, n), tt__crc32c_sw(0, buf, n));
    }
    /* Incremental equals one shot. */
    CHECK_EQ(tt__crc32c(tt__crc32c(0, buf, 100), buf + 100, 900), tt__crc32c(0, buf, 1000));
}

TEST(pb_varints_round_trip_and_bad_input_is_refused)
{
    uint64_t vals[] = {0, 1, 127, 128, 300, 16383, 16384, (1ull << 35) + 5, UINT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t buf[16];
        uint8_t *e = tt__pb_put_varint(buf, vals[i]);
        CHECK_EQ((size_t)(e - buf), tt__pb_varint_size(vals[i]));
        tt__pb_reader r;
        tt__pb_reader_init(&r, buf, (size_t)(e - buf));
        CHECK_EQ_U64(tt__pb_varint(&r), vals[i]);
        CHECK(!r.err && r.p == r.end);
    }
    for (int64_t v = -5; v <= 5; v++) {
        CHECK_EQ(tt__pb_unzigzag(tt__pb_zigzag(v)), v);
    }
    CHECK_EQ_U64(tt__pb_zigzag(-1), 1);
    uint8_t unterminated[3] = {0x80, 0x80, 0x80};
    tt__pb_reader r;
    tt__pb_reader_init(&r, unterminated, 3);
    tt__pb_varint(&r);
    CHECK(r.err);
    uint8_t too_long_len[] = {0x0a, 0x05, 'a', 'b'}; /* field 1, length 5, only 2 bytes */
    tt__pb_reader_init(&r, too_long_len, sizeof too_long_len);
    uint32_t f, wt;
    CHECK_EQ(tt__pb_next(&r, &f, &wt), 1);
    size_t n;
    CHECK(tt__pb_bytes(&r, &n) == NULL);
    CHECK(r.err);
}

TEST(frame_parse_accepts_a_good_frame_and_names_each_defect)
{
    tt__buf b;
    tt__buf_init(&b, 1 << 20);
    CHECK_OK(tt__frame_append(&b, TT_FT_ACK, "\x08\x07", 2));
    tt__frame f;
    size_t need;
    CHECK_EQ(tt__frame_parse(b.data, b.len, 1024, &f, &need), TT_FRAME_OK);
    CHECK_EQ(f.type, TT_FT_ACK);
    CHECK_EQ(f.payload_len, 2);
    CHECK_EQ(f.frame_len, b.len);
    /* Every prefix is incomplete, never an error. */
    for (size_t k = 0; k < b.len; k++) {
        CHECK_EQ(tt__frame_parse(b.data, k, 1024, &f, &need), TT_FRAME_NEED_MORE);
    }
    /* A 4 GiB length is refused from the prefix alone. */
    uint8_t huge[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    CHECK_EQ(tt__frame_parse(huge, sizeof huge, 16u << 20, &f, &need), TT_FRAME_ETOOBIG);
    uint8_t copy[64];
    memcpy(copy, b.data, b.len);
    copy[b.len - 1] ^= 1;
    CHECK_EQ(tt__frame_parse(copy, b.len, 1024, &f, &need), TT_FRAME_ECRC);
    tt__buf_reset(&b);
    CHECK_OK(tt__frame_append(&b, 9, "", 0)); /* unknown type, valid CRC */
    CHECK_EQ(tt__frame_parse(b.data, b.len, 1024, &f, &need), TT_FRAME_EHEADER);
    tt__buf_fini(&b);
}

TEST(frame_raw_length_caps_size_and_ratio)
{
    tt__frame f = {.flags = TT_FF_ZSTD, .raw_len = 2u << 20, .payload_len = 1000};
    CHECK(!tt__frame_raw_ok(&f, 64u << 20)); /* 2 MiB from 1000 bytes: ratio above 100 */
    f.payload_len = 100000;
    CHECK(tt__frame_raw_ok(&f, 64u << 20));
    f.raw_len = 65u << 20;
    f.payload_len = 60u << 20;
    CHECK(!tt__frame_raw_ok(&f, 64u << 20));
}

TEST(endpoint_parse_accepts_unix_tcp_and_v6_and_explains_errors)
{
    tt__endpoint ep;
    char err[256];
    CHECK_OK(tt__endpoint_parse("unix:/tmp/x.sock", &ep, err, sizeof err));
    CHECK(ep.is_unix);
    CHECK_STR(ep.path, "/tmp/x.sock");
    CHECK_OK(tt__endpoint_parse("tcp://127.0.0.1:7370", &ep, err, sizeof err));
    CHECK_STR(ep.host, "127.0.0.1");
    CHECK_STR(ep.port, "7370");
    CHECK_OK(tt__endpoint_parse("tcp://[::1]:80", &ep, err, sizeof err));
    CHECK_STR(ep.host, "::1");
    char out[300];
    tt__endpoint_format(&ep, out, sizeof out);
    CHECK_STR(out, "tcp://[::1]:80");
    const char *bad[] = {"http://x:1", "tcp://host",  "tcp://:80",    "tcp://h:99999",
                         "unix:",      "tcp://h:80x", "tcp://[::1]80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK_EQ(tt__endpoint_parse(bad[i], &ep, err, sizeof err), -EINVAL);
        CHECK(strstr(err, bad[i]) != NULL);
    }
}

TEST(endpoint_parse_reads_tls_as_tcp_with_tls_and_formats_it_back)
{
    tt__endpoint ep;
    char err[256], out[300];
    CHECK_OK(tt__endpoint_parse("tls://collector.example:7443", &ep, err, sizeof err));
    CHECK(ep.is_tls);
    CHECK(!ep.is_unix);
    CHECK_STR(ep.host, "collector.example");
    CHECK_STR(ep.port, "7443");
    tt__endpoint_format(&ep, out, sizeof out);
    CHECK_STR(out, "tls://collector.example:7443");
    CHECK_OK(tt__endpoint_parse("tls://[::1]:7443", &ep, err, sizeof err));
    tt__endpoint_format(&ep, out, sizeof out);
    CHECK_STR(out, "tls://[::1]:7443");
    CHECK_OK(tt__endpoint_parse("tcp://h:1", &ep, err, sizeof err));
    CHECK(!ep.is_tls);
    CHECK_EQ(tt__endpoint_parse("tls://h", &ep, err, sizeof err), -EINVAL);
    CHECK_EQ(tt__endpoint_parse("tls:/h:1", &ep, err, sizeof err), -EINVAL);
}

TEST(json_escapes_markup_controls_and_invalid_utf8)
{
    tt__buf b;
    tt__buf_init(&b, 4096);
    tt__json j;
    tt__json_init(&j, &b);
    const char in[] = "<script>alert(1)</script> \"q\" \\ \x1b[31m \xff é";
    tt__json_str(&j, in, sizeof in - 1);
    CHECK_OK(tt__buf_append(&b, "", 1));
    const char *out = (const char *)b.data;
    CHECK(strchr(out, '<') == NULL && strchr(out, '>') == NULL);
    CHECK(strstr(out, "\\u003cscript\\u003e") != NULL);
    CHECK(strstr(out, "\\\"q\\\"") != NULL);
    CHECK(strstr(out, "\\u001b[31m") != NULL);
    CHECK(strstr(out, "\\ufffd") != NULL);
    CHECK(strstr(out, "é") != NULL);
    tt__buf_reset(&b);
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_f64(&j, "a", 0.1);
    tt__json_kv_f64(&j, "nan", 0.0 / 0.0);
    tt__json_kv_i64(&j, "n", -5);
    tt__json_obj_end(&j);
    tt__buf_append(&b, "", 1);
    CHECK_STR((const char *)b.data, "{\"a\":0.1,\"nan\":null,\"n\":-5}");
    tt__buf_fini(&b);
}

TEST(buf_never_grows_past_its_maximum)
{
    tt__buf b;
    tt__buf_init(&b, 100);
    CHECK_OK(tt__buf_append(&b, "0123456789", 10));
    CHECK_EQ(tt__buf_reserve(&b, 91), -E2BIG);
    CHECK_EQ(b.len, 10);
    CHECK_OK(tt__buf_reserve(&b, 90));
    CHECK(b.cap <= 100);
    CHECK_EQ(tt__buf_reserve(&b, SIZE_MAX), -E2BIG);
    tt__buf_fini(&b);
}

TEST(time_arithmetic_on_agent_values_saturates_instead_of_overflowing)
{
    /* A duration above INT64_MAX (a uint64 field on the wire) counts as INT64_MAX. */
    CHECK_EQ(tt__dur_i64(5), 5);
    CHECK_EQ(tt__dur_i64((uint64_t)INT64_MAX), INT64_MAX);
    CHECK_EQ(tt__dur_i64((uint64_t)INT64_MAX + 1), INT64_MAX);
    CHECK_EQ(tt__dur_i64(UINT64_MAX), INT64_MAX);
    /* The sum fuzz_export found: a step's begin plus its duration, past INT64_MAX. */
    CHECK_EQ(tt__add_sat_i64(1796000000000000045LL, 7868985847297520639LL), INT64_MAX);
    CHECK_EQ(tt__add_sat_i64(INT64_MIN, -1), INT64_MIN);
    CHECK_EQ(tt__add_sat_i64(-5, 3), -2);
    CHECK_EQ(tt__sub_sat_i64(INT64_MIN + 10, INT64_MAX), INT64_MIN);
    CHECK_EQ(tt__sub_sat_i64(INT64_MAX, -1), INT64_MAX);
    CHECK_EQ(tt__sub_sat_i64(1700000000000000000LL, 1000), 1699999999999999000LL);
}

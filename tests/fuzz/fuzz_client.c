/*
 * fuzz_client.c - libFuzzer harness for what an agent does with bytes from the collector: the
 * frame reader walking a receive buffer as the worker's parse_incoming does (1 MiB body limit),
 * the hello reply, ack and reject decoders, and the orders of a Control frame (halt, resume,
 * guard policy, compliance policy) applied to a real client. Whatever the bytes, the decoders
 * stay within their input and fill bounded, terminated texts, and the client's guard policy
 * stays one that tt_guard_policy_set accepts.
 *
 * The client is opened once, on a Unix endpoint where nothing listens: its worker retries in
 * the background and never receives, so only this harness feeds the decoders.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "common/wire.h"
#include "telltale.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tt_client *client(void)
{
    static tt_client *c;
    if (!c) {
        tt_config *cfg;
        if (tt_config_new(&cfg) != 0 ||
            tt_config_set(cfg, "endpoint", "unix:/nonexistent/telltale-fuzz.sock") != 0 ||
            tt_config_set(cfg, "agent", "fuzz") != 0 || tt_open(&c, cfg) != 0) {
            abort();
        }
        tt_config_free(cfg);
    }
    return c;
}

static void check_text(const char *s, size_t cap)
{
    if (!memchr(s, 0, cap)) {
        abort();
    }
}

static void check_policy(tt_client *c)
{
    tt_guard_policy p;
    if (tt_guard_policy_get(c, &p) != 0) {
        abort();
    }
    float v[3] = {p.token_min_prob, p.window_min_confidence, p.response_min_confidence};
    for (int i = 0; i < 3; i++) {
        if (isnan(v[i]) || v[i] < 0.0f || v[i] > 1.0f) {
            abort();
        }
    }
    if (p.window < 1 || p.window > 4096 || (p.action != TT_FLAG && p.action != TT_HALT)) {
        abort();
    }
    /* Back to a known state, so that inputs do not depend on the ones before. */
    tt_guard_policy reset = {.window = 16, .action = TT_FLAG};
    if (tt_guard_policy_set(c, &reset) != 0) {
        abort();
    }
}

static void payload(tt_client *c, uint8_t type, const uint8_t *p, size_t n)
{
    switch (type % 4) {
    case 0: {
        tt__hello_reply r;
        memset(&r, 0, sizeof r);
        if (tt__hello_reply_decode(p, n, &r) == 0) {
            check_text(r.agent, sizeof r.agent);
            check_text(r.error, sizeof r.error);
        }
        break;
    }
    case 1: {
        uint64_t frame_no;
        (void)tt__ack_decode(p, n, &frame_no);
        break;
    }
    case 2: {
        tt__reject rj;
        memset(&rj, 0, sizeof rj);
        if (tt__reject_decode(p, n, &rj) == 0) {
            check_text(rj.reason, sizeof rj.reason);
        }
        break;
    }
    default:
        tt__control_handle(c, p, n);
        check_policy(c);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tt_client *c = client();
    if (size < 1) {
        return 0;
    }
    /* First byte odd: the rest is a receive buffer of frames. Even: one payload of the decoder
     * the byte picks, so the payloads' decoders are reached without a valid frame around them. */
    if (!(data[0] & 1)) {
        payload(c, (uint8_t)(data[0] >> 1), data + 1, size - 1);
        tt__guard_resume(c, NULL, 0);
        tt_comply_policy_set(c, NULL, 0, NULL, 0);
        return 0;
    }
    size_t off = 1;
    while (off < size) {
        tt__frame f;
        size_t need = 0;
        int rc = tt__frame_parse(data + off, size - off, 1u << 20, &f, &need);
        if (rc != TT_FRAME_OK) {
            break;
        }
        if (f.frame_len == 0 || f.frame_len > size - off || f.payload_len > f.frame_len) {
            abort();
        }
        uint8_t type = f.type == TT_FT_HELLO_REPLY ? 0
                       : f.type == TT_FT_ACK       ? 1
                       : f.type == TT_FT_REJECT    ? 2
                       : f.type == TT_FT_CONTROL   ? 3
                                                   : 4;
        if (type < 4) {
            payload(c, type, f.payload, f.payload_len);
        }
        off += f.frame_len;
    }
    tt__guard_resume(c, NULL, 0);
    tt_comply_policy_set(c, NULL, 0, NULL, 0);
    return 0;
}

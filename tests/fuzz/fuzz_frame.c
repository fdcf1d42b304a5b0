/*
 * fuzz_frame.c - libFuzzer harness for everything the collector does with bytes from an agent
 * before they reach the store: frame parsing (length limit, CRC, header), hello decoding, the
 * decompressed-size and ratio caps, zstd decompression, Batch validation, every event decoder,
 * and rendering to JSON. The input is a byte stream as a connection would deliver it. The CRC
 * check would reject almost every mutation, so the harness fixes up CRCs of well-sized frames
 * when the first input byte is odd: both the checksum path and what lies behind it get fuzzed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "collector/api/render.h"
#include "common/batch.h"
#include "common/compat.h"
#include "common/crc32c.h"
#include "common/json.h"
#include "common/wire.h"

#define MAX_BODY (1u << 20)
#define MAX_RAW (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_events(tt__batch *b)
{
    tt__buf out;
    tt__buf_init(&out, 1u << 22);
    tt__event ev;
    while (tt__batch_next(b, &ev)) {
        tt__json j;
        tt__json_init(&j, &out);
        render_event(&j, "fuzz", b->instance, &ev);
        tt__ev_response_end re;
        tt__ev_guard g;
        tt__ev_response_begin rb;
        tt__ev_response_end_decode(ev.body, &re);
        tt__ev_guard_decode(ev.body, &g);
        tt__ev_response_begin_decode(ev.body, &rb);
        tt__buf_reset(&out);
    }
    tt__buf_fini(&out);
}

static void on_batch(const tt__frame *f, ZSTD_DCtx *dctx)
{
    if (!tt__frame_raw_ok(f, MAX_RAW)) {
        return;
    }
    uint8_t *raw = malloc(f->raw_len ? f->raw_len : 1);
    if (!raw) {
        return;
    }
    size_t n = f->payload_len;
    if (f->flags & TT_FF_ZSTD) {
        n = ZSTD_decompressDCtx(dctx, raw, f->raw_len, f->payload, f->payload_len);
        if (ZSTD_isError(n) || n != f->raw_len) {
            free(raw);
            return;
        }
    } else {
        memcpy(raw, f->payload, n);
    }
    tt__batch b;
    tt__batch_limits lim = {1u << 16, 256};
    const char *why;
    if (tt__batch_parse(&b, raw, n, &lim, &why) == 0) {
        decode_events(&b);
    }
    free(raw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int fix_crc = data[0] & 1;
    uint8_t *buf = malloc(size);
    if (!buf) {
        return 0;
    }
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1, off = 0;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    while (off < len) {
        if (fix_crc && len - off >= TT_FRAME_PREFIX) {
            uint32_t body = tt__ld_le32(buf + off);
            if (body <= len - off - TT_FRAME_PREFIX) {
                tt__st_le32(buf + off + 4, tt__crc32c(0, buf + off + TT_FRAME_PREFIX, body));
            }
        }
        tt__frame f;
        size_t need;
        if (tt__frame_parse(buf + off, len - off, MAX_BODY, &f, &need) != TT_FRAME_OK) {
            break;
        }
        if (f.type == TT_FT_HELLO) {
            tt__hello h;
            tt__hello_decode(f.payload, f.payload_len, &h);
        } else if (f.type == TT_FT_BATCH) {
            on_batch(&f, dctx);
        } else {
            uint64_t no;
            tt__reject rj;
            tt__hello_reply hr;
            tt__ack_decode(f.payload, f.payload_len, &no);
            tt__reject_decode(f.payload, f.payload_len, &rj);
            tt__hello_reply_decode(f.payload, f.payload_len, &hr);
        }
        off += f.frame_len;
    }
    ZSTD_freeDCtx(dctx);
    free(buf);
    return 0;
}

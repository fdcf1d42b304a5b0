/*
 * fuzz_nats_msg.c - libFuzzer harness for the NATS source's message decoder
 * (src/collector/source/nats_msg.c): the body of an ingest message (one hello frame then one
 * batch frame, docs/wire-format.md, "NATS JetStream") and its Nats-Msg-Id header, with the
 * native source's limits. The first input byte chooses: bit 0 fixes the CRCs of well-sized
 * frames (else almost every mutation stops at the checksum), bit 1 sends no Nats-Msg-Id, bit 2
 * sends the id the batch really has (so that decoding goes past the id check), else the id is
 * the next input byte's count of bytes. Every item decoded is walked event by event and freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "collector/source/nats_msg.h"
#include "common/batch.h"
#include "common/compat.h"
#include "common/crc32c.h"
#include "common/wire.h"

#define MAX_BODY (1u << 20)
#define MAX_RAW (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fix_crcs(uint8_t *buf, size_t len)
{
    size_t off = 0;
    for (int i = 0; i < 2 && len - off >= TT_FRAME_PREFIX; i++) {
        uint32_t body = tt__ld_le32(buf + off);
        if (body > len - off - TT_FRAME_PREFIX) {
            return;
        }
        tt__st_le32(buf + off + 4, tt__crc32c(0, buf + off + TT_FRAME_PREFIX, body));
        off += TT_FRAME_PREFIX + body;
    }
}

/* The id the batch frame after the hello really has, when it decodes; else "". */
static void real_id(ZSTD_DCtx *dctx, const uint8_t *buf, size_t len, char *id, size_t n)
{
    tt__frame hf, bf;
    size_t need;
    id[0] = 0;
    if (tt__frame_parse(buf, len, MAX_BODY, &hf, &need) != TT_FRAME_OK ||
        tt__frame_parse(buf + hf.frame_len, len - hf.frame_len, MAX_BODY, &bf, &need) !=
            TT_FRAME_OK ||
        !tt__frame_raw_ok(&bf, MAX_RAW)) {
        return;
    }
    uint8_t *raw = malloc(bf.raw_len ? bf.raw_len : 1);
    if (!raw) {
        return;
    }
    size_t rn = bf.raw_len;
    if (bf.flags & TT_FF_ZSTD) {
        rn = ZSTD_decompressDCtx(dctx, raw, bf.raw_len, bf.payload, bf.payload_len);
    } else {
        memcpy(raw, bf.payload, bf.payload_len);
    }
    tt__batch b;
    tt__batch_limits lim = {1u << 20, 256};
    const char *why;
    if (!ZSTD_isError(rn) && tt__batch_parse(&b, raw, rn, &lim, &why) == 0) {
        nats_msg_id(b.instance, b.first_seq, id, n);
    }
    free(raw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    int flags = data[0];
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    char id[256];
    if (!(flags & 6)) {
        size_t idn = p[0] < left - 1 ? p[0] : left - 1;
        memcpy(id, p + 1, idn);
        id[idn] = 0;
        p += 1 + idn;
        left -= 1 + idn;
    }
    uint8_t *buf = malloc(left ? left : 1);
    if (!buf) {
        return 0;
    }
    memcpy(buf, p, left);
    if (flags & 1) {
        fix_crcs(buf, left);
    }
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (flags & 4) {
        real_id(dctx, buf, left, id, sizeof id);
    }
    struct nats_msg_limits lim = {MAX_BODY, MAX_RAW, 1u << 20, 256};
    tt__hello h;
    struct store_item *it = NULL;
    const char *why = NULL;
    int rc = nats_msg_decode(&lim, dctx, buf, left, (flags & 2) ? NULL : id, &h, &it, &why);
    if (rc == 0) {
        tt__event ev;
        while (tt__batch_next(&it->batch, &ev)) {
        }
        store_item_free(it);
    } else if (!why || !*nats_term_name(rc > 0 ? rc : NT_BAD_PAYLOAD)) {
        abort(); /* every refusal names its reason */
    }
    ZSTD_freeDCtx(dctx);
    free(buf);
    return 0;
}

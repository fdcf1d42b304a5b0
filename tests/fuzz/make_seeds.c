/*
 * make_seeds.c - writes the seed corpora of fuzz_frame (real frames made by the library's own
 * encoders: a hello, batches of every event kind the client writes, compressed and not, an ack,
 * a reject), fuzz_batch, and fuzz_client (what a collector sends an agent: a hello reply, acks,
 * a reject, and Control orders: halt, resume, guard policy, compliance policy), each prefixed by
 * the harness's mode byte.
 */
#include <stdio.h>
#include <string.h>
#include <zstd.h>

#include "client/client.h"
#include "client/encode.h"
#include "common/pb.h"
#include "common/wire.h"

static void put(const char *dir, const char *name, int mode, const tt__buf *b)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return;
    }
    fputc(mode, f);
    fwrite(b->data, 1, b->len, f);
    fclose(f);
}

static size_t rec_str(uint8_t *p, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    memcpy(p, &n, 4);
    memcpy(p + 4, s, n);
    return 4 + n;
}

/* One record of each kind the hot path writes, as emit.c lays them out. */
static void batch_payload(tt__buf *out)
{
    tt__clock_cal cal;
    tt__clock_cal_init(&cal);
    tt__buf_init(out, 1 << 20);
    tt__buf_reserve(out, 1 << 16);
    out->len = TT_BATCH_HDR_MAX;
    uint8_t rec[1024] __attribute__((aligned(8)));
    for (int kind = TT_REC_LOG; kind <= TT_REC_STEP_END; kind++) {
        memset(rec, 0, sizeof rec);
        tt__rec_hdr *h = (tt__rec_hdr *)(void *)rec;
        h->kind = (uint16_t)kind;
        h->aux = kind == TT_REC_METRIC       ? TT_GAUGE
                 : kind == TT_REC_STEP_BEGIN ? TT_STEP_TOOL
                                             : TT_INFO;
        uint8_t *p = rec + TT_REC_HDR;
        uint64_t u = 0x0000010000000001ull;
        double d = 2.5;
        uint32_t one = 1;
        switch (kind) {
        case TT_REC_LOG:
            p += rec_str(p, "session-1");
            p += rec_str(p, "hello <b>");
            memcpy(p, &one, 4), p += 4;
            p += rec_str(p, "k");
            *p++ = TT_ATTR_DOUBLE;
            memcpy(p, &d, 8), p += 8;
            break;
        case TT_REC_METRIC:
            memcpy(p, &d, 8), p += 8;
            p += rec_str(p, "");
            p += rec_str(p, "latency");
            p += rec_str(p, "ms");
            memset(p, 0, 4), p += 4;
            break;
        case TT_REC_STEP_BEGIN:
            memcpy(p, &u, 8), p += 8;
            memset(p, 0, 8), p += 8;
            p += rec_str(p, "s");
            p += rec_str(p, "search");
            p += rec_str(p, "SELECT 1");
            break;
        default:
            memcpy(p, &u, 8), p += 8;
            memset(p, 0, 8), p += 8;
            memset(p, 0, 8), p += 8;
            p += rec_str(p, "boom");
            break;
        }
        h->len = (uint32_t)(((p - rec) + 7) & ~7);
        tt__encode_record(out, h, 1000 + (uint64_t)kind, 1000, &cal, NULL, NULL);
    }
    uint8_t inst[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    tt_stats st = {.emitted = 4, .acked = 0};
    tt__encode_stats(out, &st);
    size_t start = tt__encode_batch_header(out->data, TT_BATCH_HDR_MAX, inst, 1, 1000);
    memmove(out->data, out->data + start, out->len - start);
    out->len -= start;
}

/* Control{field: Halt/Resume{session, reason}} (fields of proto/telltale.proto). */
static size_t control_halt(uint8_t *out, uint32_t field, const char *session, const char *reason)
{
    uint8_t inner[512], *q = inner;
    q = tt__pb_put_bytes(q, 1, session, strlen(session));
    q = tt__pb_put_bytes(q, 2, reason, strlen(reason));
    return (size_t)(tt__pb_put_bytes(out, field, inner, (size_t)(q - inner)) - out);
}

/* What a collector sends an agent, as frames (fuzz_client's mode byte 1). */
static void client_seeds(const char *dir)
{
    tt__buf b, tmp;
    tt__buf_init(&b, 1 << 20);
    tt__buf_init(&tmp, 1 << 16);
    tt__hello_reply r = {.protocol = 1, .max_frame_bytes = 16u << 20, .sync_level = 2};
    strcpy(r.agent, "agent");
    tt__hello_reply_encode(&r, &tmp);
    tt__frame_append(&b, TT_FT_HELLO_REPLY, tmp.data, tmp.len);
    tt__buf_reset(&tmp);
    tt__ack_encode(1, &tmp);
    tt__frame_append(&b, TT_FT_ACK, tmp.data, tmp.len);
    tt__reject rj = {.frame_no = 2, .permanent = 0};
    strcpy(rj.reason, "store busy");
    tt__buf_reset(&tmp);
    tt__reject_encode(&rj, &tmp);
    tt__frame_append(&b, TT_FT_REJECT, tmp.data, tmp.len);
    put(dir, "reply_ack_reject", 1, &b);
    uint8_t c[1024];
    size_t n = control_halt(c, 1, "s1", "operator halt");
    n += control_halt(c + n, 4, "s1", "operator resume");
    n += control_halt(c + n, 1, "", "halt every session");
    tt__buf_reset(&b);
    tt__frame_append(&b, TT_FT_CONTROL, c, n);
    put(dir, "control_halt_resume", 1, &b);
    uint8_t pol[64], *q = pol;
    q = tt__pb_put_float(q, 1, 0.05f);
    q = tt__pb_put_float(q, 2, 0.2f);
    q = tt__pb_put_uint(q, 3, 16);
    q = tt__pb_put_float(q, 4, 0.1f);
    q = tt__pb_put_uint(q, 5, 2);
    n = (size_t)(tt__pb_put_bytes(c, 2, pol, (size_t)(q - pol)) - c);
    static const char comply[] = "[rule.destructive_sql]\nmatch = sql\naction = block\n"
                                 "[rule.pii]\nmatch = pii\nredact = on\n";
    n = (size_t)(tt__pb_put_bytes(c + n, 3, comply, sizeof comply - 1) - c);
    tt__buf_reset(&b);
    tt__frame_append(&b, TT_FT_CONTROL, c, n);
    put(dir, "control_policies", 1, &b);
    put(dir, "control_policies_payload", 2 * 3, &(tt__buf){.data = c, .len = n});
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/fuzz/corpus/frame";
    const char *bdir = argc > 2 ? argv[2] : "tests/fuzz/corpus/batch";
    if (argc > 3) {
        client_seeds(argv[3]);
    }
    tt__buf b, payload, tmp;
    tt__buf_init(&b, 1 << 22);
    tt__buf_init(&tmp, 1 << 20);
    tt__hello h = {.protocol = 1, .pid = 42};
    strcpy(h.agent, "agent");
    tt__hello_encode(&h, &tmp);
    tt__frame_append(&b, TT_FT_HELLO, tmp.data, tmp.len);
    put(dir, "hello", 1, &b);
    batch_payload(&payload);
    put(bdir, "batch_every_kind", 0xff, &payload); /* fuzz_batch: the limits byte, then a Batch */
    tt__frame_append(&b, TT_FT_BATCH, payload.data, payload.len);
    put(dir, "hello_batch_plain", 1, &b);
    /* The same batch compressed, as the worker sends it. */
    uint8_t frame[1 << 16];
    size_t n = ZSTD_compress(frame + TT_FRAME_HDR_MAX, sizeof frame - TT_FRAME_HDR_MAX,
                             payload.data, payload.len, 1);
    size_t flen = tt__frame_finish(frame, TT_FT_BATCH, TT_FF_ZSTD, (uint32_t)payload.len, n);
    tt__buf_reset(&b);
    tt__buf_append(&b, frame, flen);
    put(dir, "batch_zstd", 1, &b);
    tt__buf_reset(&b);
    tt__buf_reset(&tmp);
    tt__ack_encode(7, &tmp);
    tt__frame_append(&b, TT_FT_ACK, tmp.data, tmp.len);
    tt__reject rj = {.frame_no = 3, .permanent = 1};
    strcpy(rj.reason, "bad");
    tt__buf_reset(&tmp);
    tt__reject_encode(&rj, &tmp);
    tt__frame_append(&b, TT_FT_REJECT, tmp.data, tmp.len);
    put(dir, "ack_reject", 1, &b);
    put(dir, "ack_reject_crc_checked", 0, &b);
    if (argc > 4) {
        /* fuzz_nats_msg: a NATS ingest message body (hello + batch), with the batch's own
         * Nats-Msg-Id (mode 5: CRCs fixed, the real id), plain and compressed. */
        tt__buf_reset(&b);
        tt__buf_reset(&tmp);
        strcpy(h.token, "tok-agent");
        tt__hello_encode(&h, &tmp);
        tt__frame_append(&b, TT_FT_HELLO, tmp.data, tmp.len);
        size_t hlen = b.len;
        tt__frame_append(&b, TT_FT_BATCH, payload.data, payload.len);
        put(argv[4], "hello_batch_plain", 5, &b);
        b.len = hlen;
        tt__buf_append(&b, frame, flen);
        put(argv[4], "hello_batch_zstd", 5, &b);
    }
    return 0;
}

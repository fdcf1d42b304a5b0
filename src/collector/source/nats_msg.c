/*
 * nats_msg.c - the decoder of NATS ingest messages and the subject names (nats_msg.h).
 *
 * Bounds, in order: the hello frame at most CONN_HELLO_FRAME_MAX as before a native hello, the
 * batch frame at most --max-frame, its decompressed length under the raw cap and ratio
 * (tt__frame_raw_ok) before anything is allocated; nothing may follow the batch frame.
 */
#include "collector/source/nats_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/source/native_conn.h"
#include "common/batch.h"

const char *nats_term_name(int reason)
{
    static const char *const names[NT__COUNT] = {"",          "malformed", "too_large",
                                                 "bad_hello", "protocol",  "bad_payload",
                                                 "msg_id",    "auth",      "refused"};
    return reason > 0 && reason < NT__COUNT ? names[reason] : "unknown";
}

static int valid_agent_name(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return 0;
        }
    }
    return 1;
}

void nats_msg_id(const uint8_t instance[16], uint64_t first_seq, char *out, size_t n)
{
    char hex[33];
    for (int i = 0; i < 16; i++) {
        snprintf(hex + 2 * i, 3, "%02x", instance[i]);
    }
    snprintf(out, n, "%s:%llu", hex, (unsigned long long)first_seq);
}

static int frame_reason(int rc)
{
    return rc == TT_FRAME_ETOOBIG ? NT_TOO_LARGE : NT_MALFORMED;
}

/* The batch frame's payload into a new item: decompressed (or copied) into a buffer of the
 * declared size, the compressed bytes kept as the stored copy. */
static struct store_item *item_from(ZSTD_DCtx *dctx, const tt__frame *f, int *reason)
{
    struct store_item *it = calloc(1, sizeof *it);
    size_t raw_len = f->raw_len;
    if (!it || !(it->raw = malloc(raw_len ? raw_len : 1))) {
        free(it);
        *reason = -1;
        return NULL;
    }
    it->raw_len = raw_len;
    if (f->flags & TT_FF_ZSTD) {
        size_t n = ZSTD_decompressDCtx(dctx, it->raw, raw_len, f->payload, f->payload_len);
        it->blob = malloc(f->payload_len ? f->payload_len : 1);
        if (ZSTD_isError(n) || n != raw_len || !it->blob) {
            *reason = it->blob ? NT_BAD_PAYLOAD : -1;
            store_item_free(it);
            return NULL;
        }
        memcpy(it->blob, f->payload, f->payload_len);
        it->blob_len = f->payload_len;
    } else {
        memcpy(it->raw, f->payload, raw_len);
    }
    return it;
}

int nats_msg_decode(const struct nats_msg_limits *lim, ZSTD_DCtx *dctx, const uint8_t *body,
                    size_t n, const char *msg_id, tt__hello *h, struct store_item **out,
                    const char **why)
{
    *out = NULL;
    tt__frame hf, bf;
    size_t need;
    int rc = tt__frame_parse(body, n, CONN_HELLO_FRAME_MAX, &hf, &need);
    if (rc != TT_FRAME_OK || hf.type != TT_FT_HELLO || (hf.flags & TT_FF_ZSTD)) {
        *why = rc == TT_FRAME_OK ? "the first frame is not a hello" : tt__frame_err_name(rc);
        return rc == TT_FRAME_OK || rc == TT_FRAME_NEED_MORE ? NT_MALFORMED : frame_reason(rc);
    }
    if (tt__hello_decode(hf.payload, hf.payload_len, h) != 0) {
        *why = "malformed hello";
        return NT_BAD_HELLO;
    }
    if (h->protocol != TT_PROTOCOL_VERSION) {
        *why = "protocol not supported";
        return NT_PROTOCOL;
    }
    if (!valid_agent_name(h->agent)) {
        *why = "agent name empty or with control characters";
        return NT_BAD_HELLO;
    }
    const uint8_t *rest = body + hf.frame_len;
    size_t rn = n - hf.frame_len;
    rc = tt__frame_parse(rest, rn, lim->max_frame, &bf, &need);
    if (rc != TT_FRAME_OK || bf.type != TT_FT_BATCH || bf.frame_len != rn) {
        *why = rc != TT_FRAME_OK        ? tt__frame_err_name(rc)
               : bf.type != TT_FT_BATCH ? "the second frame is not a batch"
                                        : "bytes after the batch frame";
        return rc == TT_FRAME_OK || rc == TT_FRAME_NEED_MORE ? NT_MALFORMED : frame_reason(rc);
    }
    if (!tt__frame_raw_ok(&bf, lim->max_raw)) {
        *why = "decompressed payload above the limit";
        return NT_TOO_LARGE;
    }
    int reason = NT_BAD_PAYLOAD;
    struct store_item *it = item_from(dctx, &bf, &reason);
    if (!it) {
        *why = reason < 0 ? "out of memory" : "bad compression";
        return reason;
    }
    tt__batch_limits bl = {lim->max_events, lim->max_attrs};
    const char *bwhy = NULL;
    if (tt__batch_parse(&it->batch, it->raw, it->raw_len, &bl, &bwhy) != 0) {
        store_item_free(it);
        *why = bwhy ? bwhy : "bad batch";
        return NT_BAD_PAYLOAD;
    }
    char id[NATS_MSG_ID_MAX];
    nats_msg_id(it->batch.instance, it->batch.first_seq, id, sizeof id);
    /* A heartbeat (no events) repeats its first seq, so the client sends it without an id
     * (JetStream's dedup would swallow its newer counters); with one, it must match. */
    int heartbeat_without_id = !msg_id && it->batch.n_events == 0;
    if (!heartbeat_without_id && (!msg_id || strcmp(msg_id, id) != 0)) {
        store_item_free(it);
        *why = msg_id ? "Nats-Msg-Id is not the batch's <instance>:<first_seq>"
                      : "no Nats-Msg-Id header";
        return NT_MSG_ID;
    }
    struct agent_ident *id_ = &it->ident;
    snprintf(id_->agent, sizeof id_->agent, "%s", h->agent);
    memcpy(id_->instance, h->instance, 16);
    id_->pid = h->pid;
    snprintf(id_->host, sizeof id_->host, "%s", h->host);
    snprintf(id_->library, sizeof id_->library, "%s", h->library);
    id_->start_unix_ns = h->start_unix_ns;
    if (memcmp(it->batch.instance, h->instance, 16) != 0) {
        /* Replayed from the spool of an earlier process of this agent. */
        memcpy(id_->instance, it->batch.instance, 16);
        id_->pid = 0;
        id_->start_unix_ns = 0;
        it->replayed = 1;
    }
    *out = it;
    return 0;
}

unsigned nats_partition(const char *agent)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)agent; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h % NATS_PARTITIONS;
}

int nats_control_subject(const char *agent, char *out, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)agent; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    int w = snprintf(out, n, "telltale.control.%016llx", (unsigned long long)h);
    return w > 0 && (size_t)w < n ? 0 : -1;
}

/*
 * wire.c - frame parsing and building, the small control messages, and endpoint strings.
 * Everything here treats its input as hostile: lengths are checked before use, strings are
 * bounded by their destination, and unknown protobuf fields are skipped.
 */
#include "common/wire.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/compat.h"
#include "common/crc32c.h"
#include "common/pb.h"

const char *tt__frame_err_name(int err)
{
    switch (err) {
    case TT_FRAME_OK:
        return "ok";
    case TT_FRAME_NEED_MORE:
        return "incomplete";
    case TT_FRAME_ETOOBIG:
        return "frame_too_large";
    case TT_FRAME_ECRC:
        return "bad_crc";
    case TT_FRAME_EHEADER:
        return "bad_header";
    case TT_FRAME_ERAW:
        return "decompressed_too_large";
    case TT_FRAME_EDECOMP:
        return "bad_compression";
    case TT_FRAME_EPAYLOAD:
        return "bad_payload";
    default:
        return "unknown";
    }
}

int tt__frame_parse(const uint8_t *buf, size_t n, size_t max_body, tt__frame *f, size_t *need)
{
    *need = 0;
    if (n < TT_FRAME_PREFIX) {
        return TT_FRAME_NEED_MORE;
    }
    uint32_t body_len = tt__ld_le32(buf);
    if (body_len > max_body) {
        return TT_FRAME_ETOOBIG;
    }
    if (body_len < TT_FRAME_BODY_HDR) {
        return TT_FRAME_EHEADER;
    }
    *need = TT_FRAME_PREFIX + (size_t)body_len;
    if (n < *need) {
        return TT_FRAME_NEED_MORE;
    }
    const uint8_t *body = buf + TT_FRAME_PREFIX;
    if (tt__crc32c(0, body, body_len) != tt__ld_le32(buf + 4)) {
        return TT_FRAME_ECRC;
    }
    uint8_t type = body[0], flags = body[1];
    if (type == 0 || type > TT_FT__MAX || (flags & ~TT_FF_ZSTD) || body[2] || body[3]) {
        return TT_FRAME_EHEADER;
    }
    f->type = type;
    f->flags = flags;
    f->frame_len = *need;
    if (flags & TT_FF_ZSTD) {
        if (body_len < TT_FRAME_BODY_HDR + 4) {
            return TT_FRAME_EHEADER;
        }
        f->raw_len = tt__ld_le32(body + 4);
        f->payload = body + 8;
        f->payload_len = body_len - 8;
    } else {
        f->payload = body + 4;
        f->payload_len = body_len - 4;
        f->raw_len = (uint32_t)f->payload_len;
    }
    return TT_FRAME_OK;
}

int tt__frame_raw_ok(const tt__frame *f, size_t raw_max)
{
    if (!(f->flags & TT_FF_ZSTD)) {
        return 1;
    }
    if (f->raw_len > raw_max) {
        return 0;
    }
    /* A ratio cap stops a small frame from claiming a huge output; small outputs are cheap
     * whatever their ratio, so the cap applies above 1 MiB. */
    if (f->raw_len > (1u << 20) && f->raw_len / (f->payload_len + 1) > TT_FRAME_RATIO_MAX) {
        return 0;
    }
    return 1;
}

/* The payload sits at frame + 12, or at frame + 16 after the raw length when compressed. */
size_t tt__frame_finish(uint8_t *frame, uint8_t type, uint8_t flags, uint32_t raw_len,
                        size_t payload_len)
{
    size_t hdr = TT_FRAME_BODY_HDR + ((flags & TT_FF_ZSTD) ? 4 : 0);
    size_t body_len = hdr + payload_len;
    uint8_t *body = frame + TT_FRAME_PREFIX;
    body[0] = type;
    body[1] = flags;
    body[2] = 0;
    body[3] = 0;
    if (flags & TT_FF_ZSTD) {
        tt__st_le32(body + 4, raw_len);
    }
    tt__st_le32(frame, (uint32_t)body_len);
    tt__st_le32(frame + 4, tt__crc32c(0, body, body_len));
    return TT_FRAME_PREFIX + body_len;
}

int tt__frame_append(tt__buf *out, uint8_t type, const void *payload, size_t n)
{
    size_t start = out->len;
    int rc = tt__buf_reserve(out, TT_FRAME_PREFIX + TT_FRAME_BODY_HDR + n);
    if (rc) {
        return rc;
    }
    uint8_t *frame = out->data + start;
    if (n) {
        memcpy(frame + TT_FRAME_PREFIX + TT_FRAME_BODY_HDR, payload, n);
    }
    out->len += tt__frame_finish(frame, type, 0, (uint32_t)n, n);
    return 0;
}

/* --- small messages ------------------------------------------------------------------------ */

static void copy_str(char *dst, size_t cap, const uint8_t *p, size_t n)
{
    if (n >= cap) {
        n = cap - 1;
    }
    if (n) {
        memcpy(dst, p, n);
    }
    dst[n] = 0;
}

static int put_str_field(tt__buf *out, uint32_t field, const char *s)
{
    size_t n = strlen(s);
    if (n == 0) {
        return 0;
    }
    int rc = tt__buf_reserve(out, TT_PB_VARINT_MAX * 2 + n);
    if (rc) {
        return rc;
    }
    uint8_t *p = tt__pb_put_bytes(out->data + out->len, field, s, n);
    out->len = (size_t)(p - out->data);
    return 0;
}

static int put_uint_field(tt__buf *out, uint32_t field, uint64_t v)
{
    int rc = tt__buf_reserve(out, TT_PB_VARINT_MAX * 2);
    if (rc) {
        return rc;
    }
    uint8_t *p = tt__pb_put_uint(out->data + out->len, field, v);
    out->len = (size_t)(p - out->data);
    return 0;
}

int tt__hello_encode(const tt__hello *h, tt__buf *out)
{
    int rc = put_uint_field(out, 1, h->protocol);
    rc = rc ? rc : tt__buf_reserve(out, 20);
    if (rc) {
        return rc;
    }
    out->len = (size_t)(tt__pb_put_bytes(out->data + out->len, 2, h->instance, 16) - out->data);
    rc = put_str_field(out, 3, h->agent);
    rc = rc ? rc : put_str_field(out, 4, h->token);
    rc = rc ? rc : put_uint_field(out, 5, h->pid);
    rc = rc ? rc : put_str_field(out, 6, h->host);
    rc = rc ? rc : put_str_field(out, 7, h->library);
    rc = rc ? rc : tt__buf_reserve(out, 12);
    if (rc) {
        return rc;
    }
    out->len = (size_t)(tt__pb_put_fixed64(out->data + out->len, 8, h->start_unix_ns) - out->data);
    if (h->now_unix_ns) {
        rc = tt__buf_reserve(out, 12);
        if (rc) {
            return rc;
        }
        out->len =
            (size_t)(tt__pb_put_fixed64(out->data + out->len, 9, h->now_unix_ns) - out->data);
    }
    return 0;
}

int tt__hello_decode(const uint8_t *p, size_t n, tt__hello *h)
{
    memset(h, 0, sizeof *h);
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    int have_instance = 0;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        const uint8_t *s;
        size_t len;
        if (field == 1 && wt == TT_PB_VARINT) {
            h->protocol = (uint32_t)tt__pb_varint(&r);
        } else if (field == 2 && wt == TT_PB_LEN) {
            s = tt__pb_bytes(&r, &len);
            if (len != 16) {
                return -EPROTO;
            }
            memcpy(h->instance, s, 16);
            have_instance = 1;
        } else if ((field == 3 || field == 4 || field == 6 || field == 7) && wt == TT_PB_LEN) {
            s = tt__pb_bytes(&r, &len);
            if (len > 255) {
                return -EPROTO;
            }
            char *dst = field == 3   ? h->agent
                        : field == 4 ? h->token
                        : field == 6 ? h->host
                                     : h->library;
            copy_str(dst, field == 7 ? sizeof h->library : 256, s, len);
        } else if (field == 5 && wt == TT_PB_VARINT) {
            h->pid = (uint32_t)tt__pb_varint(&r);
        } else if (field == 8 && wt == TT_PB_I64) {
            h->start_unix_ns = tt__pb_fixed64(&r);
        } else if (field == 9 && wt == TT_PB_I64) {
            h->now_unix_ns = tt__pb_fixed64(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    if (r.err || !have_instance) {
        return -EPROTO;
    }
    return 0;
}

int tt__hello_reply_encode(const tt__hello_reply *h, tt__buf *out)
{
    int rc = put_uint_field(out, 1, h->protocol);
    rc = rc ? rc : put_str_field(out, 2, h->agent);
    rc = rc ? rc : put_uint_field(out, 3, h->max_frame_bytes);
    rc = rc ? rc : put_str_field(out, 4, h->error);
    rc = rc ? rc : put_uint_field(out, 5, h->sync_level);
    return rc;
}

int tt__hello_reply_decode(const uint8_t *p, size_t n, tt__hello_reply *h)
{
    memset(h, 0, sizeof *h);
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        const uint8_t *s;
        size_t len;
        if (field == 1 && wt == TT_PB_VARINT) {
            h->protocol = (uint32_t)tt__pb_varint(&r);
        } else if ((field == 2 || field == 4) && wt == TT_PB_LEN) {
            s = tt__pb_bytes(&r, &len);
            copy_str(field == 2 ? h->agent : h->error, 256, s, len);
        } else if (field == 3 && wt == TT_PB_VARINT) {
            h->max_frame_bytes = tt__pb_varint(&r);
        } else if (field == 5 && wt == TT_PB_VARINT) {
            h->sync_level = (uint32_t)tt__pb_varint(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -EPROTO : 0;
}

int tt__ack_encode(uint64_t frame_no, tt__buf *out)
{
    return put_uint_field(out, 1, frame_no);
}

int tt__ack_decode(const uint8_t *p, size_t n, uint64_t *frame_no)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    *frame_no = 0;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == 1 && wt == TT_PB_VARINT) {
            *frame_no = tt__pb_varint(&r);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -EPROTO : 0;
}

int tt__reject_encode(const tt__reject *rj, tt__buf *out)
{
    int rc = put_uint_field(out, 1, rj->frame_no);
    rc = rc ? rc : put_uint_field(out, 2, rj->permanent ? 1 : 0);
    rc = rc ? rc : put_str_field(out, 3, rj->reason);
    return rc;
}

int tt__reject_decode(const uint8_t *p, size_t n, tt__reject *rj)
{
    memset(rj, 0, sizeof *rj);
    tt__pb_reader r;
    tt__pb_reader_init(&r, p, n);
    uint32_t field, wt;
    while (tt__pb_next(&r, &field, &wt) == 1) {
        if (field == 1 && wt == TT_PB_VARINT) {
            rj->frame_no = tt__pb_varint(&r);
        } else if (field == 2 && wt == TT_PB_VARINT) {
            rj->permanent = tt__pb_varint(&r) != 0;
        } else if (field == 3 && wt == TT_PB_LEN) {
            size_t len;
            const uint8_t *s = tt__pb_bytes(&r, &len);
            copy_str(rj->reason, sizeof rj->reason, s, len);
        } else {
            tt__pb_skip(&r, wt);
        }
    }
    return r.err ? -EPROTO : 0;
}

/* --- endpoints ----------------------------------------------------------------------------- */

static int ep_fail(char *err, size_t errlen, const char *msg, const char *s)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s: \"%s\" (expected unix:PATH, tcp://HOST:PORT or tls://HOST:PORT)",
                 msg, s);
    }
    return -EINVAL;
}

static int parse_port(const char *p, char *out)
{
    size_t n = strlen(p);
    if (n == 0 || n > 5) {
        return -1;
    }
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > 65535) {
        return -1;
    }
    memcpy(out, p, n + 1);
    return 0;
}

int tt__endpoint_parse(const char *s, tt__endpoint *ep, char *err, size_t errlen)
{
    memset(ep, 0, sizeof *ep);
    if (!s) {
        return ep_fail(err, errlen, "no endpoint", "");
    }
    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        size_t n = strlen(path);
        if (n == 0) {
            return ep_fail(err, errlen, "empty socket path", s);
        }
        if (n >= sizeof ep->path) {
            return ep_fail(err, errlen, "socket path longer than 107 bytes", s);
        }
        ep->is_unix = 1;
        memcpy(ep->path, path, n + 1);
        return 0;
    }
    /* tls:// is TCP with TLS on top (docs/security.md); host and port read the same. */
    if (strncmp(s, "tls://", 6) == 0) {
        ep->is_tls = 1;
    } else if (strncmp(s, "tcp://", 6) != 0) {
        return ep_fail(err, errlen, "unknown endpoint scheme", s);
    }
    const char *hp = s + 6, *colon;
    size_t hostlen;
    if (*hp == '[') {
        const char *close = strchr(hp, ']');
        if (!close || close[1] != ':') {
            return ep_fail(err, errlen, "bad IPv6 address, write tcp://[ADDR]:PORT", s);
        }
        hostlen = (size_t)(close - hp - 1);
        if (hostlen == 0 || hostlen >= sizeof ep->host) {
            return ep_fail(err, errlen, "bad host", s);
        }
        memcpy(ep->host, hp + 1, hostlen);
        colon = close + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon) {
            return ep_fail(err, errlen, "missing port", s);
        }
        hostlen = (size_t)(colon - hp);
        if (hostlen == 0 || hostlen >= sizeof ep->host || memchr(hp, '/', hostlen)) {
            return ep_fail(err, errlen, "bad host", s);
        }
        memcpy(ep->host, hp, hostlen);
    }
    ep->host[hostlen] = 0;
    if (parse_port(colon + 1, ep->port) != 0) {
        return ep_fail(err, errlen, "bad port", s);
    }
    return 0;
}

void tt__endpoint_format(const tt__endpoint *ep, char *out, size_t n)
{
    const char *scheme = ep->is_tls ? "tls" : "tcp";
    if (ep->is_unix) {
        snprintf(out, n, "unix:%s", ep->path);
    } else if (strchr(ep->host, ':')) {
        snprintf(out, n, "%s://[%s]:%s", scheme, ep->host, ep->port);
    } else {
        snprintf(out, n, "%s://%s:%s", scheme, ep->host, ep->port);
    }
}

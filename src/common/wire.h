/*
 * wire.h - frames and the small control messages of the telltale protocol
 * (proto/telltale.proto, docs/wire-format.md), shared by the client and the collector.
 *
 * A frame is an 8-byte prefix (u32 le body length, u32 le CRC-32C of the body) followed by the
 * body: u8 type, u8 flags, u16 reserved, then for a compressed payload a u32 le raw length,
 * then the payload. Readers check the length against their limit before allocating anything.
 */
#ifndef TT_COMMON_WIRE_H
#define TT_COMMON_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define TT_PROTOCOL_VERSION 1
#define TT_FRAME_PREFIX 8                                          /* length + crc */
#define TT_FRAME_BODY_HDR 4                                        /* type, flags, reserved */
#define TT_FRAME_HDR_MAX (TT_FRAME_PREFIX + TT_FRAME_BODY_HDR + 4) /* + raw_length */
#define TT_FRAME_DEFAULT_MAX (16u << 20) /* default largest body the collector accepts */
#define TT_FRAME_RAW_MAX (64u << 20)     /* largest decompressed payload */
#define TT_FRAME_RATIO_MAX 100           /* decompressed/compressed cap above 1 MiB raw */

enum tt__frame_type {
    TT_FT_HELLO = 1,
    TT_FT_HELLO_REPLY = 2,
    TT_FT_BATCH = 3,
    TT_FT_ACK = 4,
    TT_FT_REJECT = 5,
    TT_FT_CONTROL = 6,
    TT_FT__MAX = 6
};

#define TT_FF_ZSTD 0x01u

/* Why a frame was refused; the collector counts each. */
enum tt__frame_err {
    TT_FRAME_OK = 0,
    TT_FRAME_NEED_MORE = 1,
    TT_FRAME_ETOOBIG = -1, /* length prefix above the limit */
    TT_FRAME_ECRC = -2,    /* checksum mismatch */
    TT_FRAME_EHEADER = -3, /* bad type, flags or reserved bits, or body too short */
    TT_FRAME_ERAW = -4,    /* raw length above the limit or ratio cap */
    TT_FRAME_EDECOMP = -5, /* zstd failed or produced another length */
    TT_FRAME_EPAYLOAD = -6 /* the protobuf payload is malformed */
};

const char *tt__frame_err_name(int err);

/* A validated frame; payload points into the caller's buffer (or the decompression buffer). */
typedef struct tt__frame {
    uint8_t type;
    uint8_t flags;
    uint32_t raw_len;       /* decompressed length, or payload_len if not compressed */
    const uint8_t *payload; /* compressed bytes if flags & TT_FF_ZSTD */
    size_t payload_len;
    size_t frame_len; /* prefix + body: how far to advance the input */
} tt__frame;

/* Look at the start of buf: TT_FRAME_NEED_MORE if incomplete (*need says how many bytes the
 * whole frame takes once the prefix is known, else 0), TT_FRAME_OK with *f filled, or a
 * negative tt__frame_err. max_body is checked before the caller allocates for the body. */
int tt__frame_parse(const uint8_t *buf, size_t n, size_t max_body, tt__frame *f, size_t *need);

/* Check the raw length of a compressed frame against the caps. */
int tt__frame_raw_ok(const tt__frame *f, size_t raw_max);

/* Append a whole frame with an uncompressed payload to out. */
int tt__frame_append(tt__buf *out, uint8_t type, const void *payload, size_t n);

/* Fill in the prefix and body header of a frame whose payload was written at
 * buf + TT_FRAME_HDR_MAX - (compressed ? 0 : 4): see tt__frame_finish's comment in wire.c. */
size_t tt__frame_finish(uint8_t *frame, uint8_t type, uint8_t flags, uint32_t raw_len,
                        size_t payload_len);

/* --- small messages ------------------------------------------------------------------------ */

typedef struct tt__hello {
    uint32_t protocol;
    uint8_t instance[16];
    char agent[256];
    char token[256];
    uint32_t pid;
    char host[256];
    char library[64];
    uint64_t start_unix_ns;
    uint64_t now_unix_ns; /* the agent's wall clock when it sent the hello; 0: not sent */
} tt__hello;

typedef struct tt__hello_reply {
    uint32_t protocol;
    char agent[256];
    uint64_t max_frame_bytes;
    char error[256];
    uint32_t sync_level;
} tt__hello_reply;

typedef struct tt__reject {
    uint64_t frame_no;
    int permanent;
    char reason[256];
} tt__reject;

int tt__hello_encode(const tt__hello *h, tt__buf *out);
int tt__hello_decode(const uint8_t *p, size_t n, tt__hello *h);
int tt__hello_reply_encode(const tt__hello_reply *h, tt__buf *out);
int tt__hello_reply_decode(const uint8_t *p, size_t n, tt__hello_reply *h);
int tt__ack_encode(uint64_t frame_no, tt__buf *out);
int tt__ack_decode(const uint8_t *p, size_t n, uint64_t *frame_no);
int tt__reject_encode(const tt__reject *r, tt__buf *out);
int tt__reject_decode(const uint8_t *p, size_t n, tt__reject *r);

/* Parsing endpoints "unix:PATH", "tcp://HOST:PORT" and "tls://HOST:PORT" (HOST may be [v6]). */
typedef struct tt__endpoint {
    int is_unix;
    int is_tls;     /* tls://: TCP with TLS (GnuTLS) on top */
    char path[108]; /* unix */
    char host[256]; /* tcp */
    char port[8];
} tt__endpoint;

/* Returns 0 or -EINVAL with a reason in err (errlen bytes). */
int tt__endpoint_parse(const char *s, tt__endpoint *ep, char *err, size_t errlen);

/* Format an endpoint back into its string form. */
void tt__endpoint_format(const tt__endpoint *ep, char *out, size_t n);

#endif

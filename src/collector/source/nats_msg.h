/*
 * nats_msg.h - one NATS JetStream ingest message as the NATS source receives it
 * (docs/wire-format.md, "NATS JetStream"): its body (one HELLO frame then one BATCH frame, each
 * with its 8-byte prefix, exactly as on a native connection) and its Nats-Msg-Id header, decoded
 * with the native source's limits, everything bounded before it is allocated; and the subject
 * names both ends derive from an agent's name. No libnats here: tests/fuzz/fuzz_nats_msg.c
 * drives the decoder alone.
 */
#ifndef TT_COLLECTOR_NATS_MSG_H
#define TT_COLLECTOR_NATS_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

#include "collector/collector.h"
#include "common/wire.h"

#define NATS_PARTITIONS 64
#define NATS_MSG_ID_MAX 64 /* 32 hex digits, ':', a u64 in decimal */

/* Why a message was terminated (never storable as sent); each has a counter. */
enum nats_term {
    NT_MALFORMED = 1, /* not one HELLO frame then one BATCH frame (framing, CRC, header) */
    NT_TOO_LARGE,     /* a frame or its decompressed payload above the limits */
    NT_BAD_HELLO,     /* the hello does not decode, or names no valid agent */
    NT_PROTOCOL,      /* a protocol version this collector does not speak */
    NT_BAD_PAYLOAD,   /* the batch does not decompress or decode */
    NT_MSG_ID,        /* Nats-Msg-Id missing or not the batch's <instance>:<first_seq> */
    NT_AUTH,          /* no valid ingest token */
    NT_REFUSED,       /* the store refused it for good (overlap, another identity's name) */
    NT__COUNT
};

/* Its name (1 .. NT__COUNT - 1). */
const char *nats_term_name(int reason);

struct nats_msg_limits {
    size_t max_frame;    /* --max-frame: the largest frame body */
    size_t max_raw;      /* the largest decompressed payload */
    uint32_t max_events; /* events per batch */
    uint32_t max_attrs;  /* attributes per event */
};

/* Decode one message. On success 0: *out is a new item (the batch parsed, its raw payload and,
 * when compressed, the stored copy; ident from the hello with an empty identity, the batch's
 * instance when it names another: replayed) and h holds the hello. Otherwise an enum nats_term
 * (never storable as sent) or -1 (out of memory: try again later), and a static text in *why. msg_id is the Nats-Msg-Id header (NULL: absent). dctx may be
 * reused between calls. */
int nats_msg_decode(const struct nats_msg_limits *lim, ZSTD_DCtx *dctx, const uint8_t *body,
                    size_t n, const char *msg_id, tt__hello *h, struct store_item **out,
                    const char **why);

/* The ingest subject's partition of an agent: FNV-1a 32-bit of its name mod 64. */
unsigned nats_partition(const char *agent);

/* "PREFIX.<16 hex digits of FNV-1a 64-bit of the agent's name>" into out (n bytes); the prefix
 * is "telltale.control". Returns 0, or -1 when it does not fit. */
int nats_control_subject(const char *agent, char *out, size_t n);

/* "<32 hex digits of instance>:<first_seq>" (NATS_MSG_ID_MAX bytes at least). */
void nats_msg_id(const uint8_t instance[16], uint64_t first_seq, char *out, size_t n);

#endif

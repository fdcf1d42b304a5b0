/*
 * encode.h - turning ring records into protobuf Event messages inside a Batch (worker side).
 */
#ifndef TT_CLIENT_ENCODE_H
#define TT_CLIENT_ENCODE_H

#include "client/client.h"
#include "client/stepmap.h"

/* The most bytes tt__encode_record can append for a record of rec_len bytes. */
static inline size_t tt__encode_bound(uint32_t rec_len)
{
    /* + a step end's session and name, from its begin (stepmap.h) */
    return (size_t)rec_len * 2 + 256 + 2 * (TT_STEPMAP_STR + 3);
}

/* Append record h as one Batch.events entry to b, which has tt__encode_bound(h->len) bytes of
 * room. time is the event's Unix time in ns and base the batch's base time. steps (may be NULL)
 * is the worker's table of open steps: a step's begin is remembered there, and its end carries
 * the begin's session, name and kind. c (may be NULL) gives the trace context's keys and
 * session defaults (trace.h). */
void tt__encode_record(tt__buf *b, const tt__rec_hdr *h, uint64_t time, uint64_t base,
                       const tt__clock_cal *cal, tt__stepmap *steps, tt_client *c);

/* Batch header fields (instance, first_seq, base time) written so they end exactly at
 * b->data + end; returns where they start. end must leave TT_BATCH_HDR_MAX bytes before it. */
#define TT_BATCH_HDR_MAX 48
size_t tt__encode_batch_header(uint8_t *buf, size_t end, const uint8_t instance[16],
                               uint64_t first_seq, uint64_t base_unix_ns);

/* Append the ClientStats field (Batch field 5). */
int tt__encode_stats(tt__buf *b, const tt_stats *s);

#endif

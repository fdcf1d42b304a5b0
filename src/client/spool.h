/*
 * spool.h - the bounded on-disk spool of frames the collector has not acknowledged
 * (docs/design.md, "The spool"). Owned by the worker thread; opened by tt_open.
 */
#ifndef TT_CLIENT_SPOOL_H
#define TT_CLIENT_SPOOL_H

#include <stdint.h>

#include "client/client.h"

struct tt_spool;

/* Open (creating, 0700, O_NOFOLLOW) the spool under dir/<agent>/, counting into ws. Leftover
 * segments of earlier processes of the same agent are found and queued for replay. */
int tt__spool_open(struct tt_spool **out, const char *dir, uint64_t max_bytes, int policy,
                   const char *agent, const uint8_t instance[16]);
void tt__spool_close(struct tt_spool *s);

/* Where the spool counts its drops and its content. */
void tt__spool_bind(struct tt_spool *s, tt__wstats *ws);

/* In a forked child: forget the parent's segments, write under the new instance. */
void tt__spool_after_fork(struct tt_spool *s, const uint8_t instance[16]);

/* Append a frame of n_events events. Returns 0 when stored; otherwise the events were
 * dropped and counted (spool_full or spool_error) and a negative errno is returned. */
int tt__spool_append(struct tt_spool *s, const tt__frame_out *f);

/* Make sure appended frames are on disk (fdatasync). */
int tt__spool_sync(struct tt_spool *s);

/* Start writing appended frames to disk without waiting (for close, which has a deadline). */
void tt__spool_writeback(struct tt_spool *s);

/* The next frame to replay, or NULL. The frame is owned by the caller, with from_spool and
 * spool_id set; the spool remembers it as in flight until acked or rewound. */
tt__frame_out *tt__spool_next(struct tt_spool *s);

/* A replayed frame was acknowledged: its record will never be replayed again. */
void tt__spool_ack(struct tt_spool *s, uint64_t spool_id);

/* The connection dropped: frames in flight will be offered again by tt__spool_next. */
void tt__spool_rewind(struct tt_spool *s);

/* Events and bytes stored and not yet acknowledged. */
uint64_t tt__spool_events(const struct tt_spool *s);
uint64_t tt__spool_bytes(const struct tt_spool *s);

/* Housekeeping from the worker loop: sync written segments at least once a second. */
void tt__spool_tick(struct tt_spool *s, uint64_t now);

#endif

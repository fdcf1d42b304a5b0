/*
 * worker.h - the private state of a client's worker thread (worker.c, conn.c). Everything
 * here is owned by the worker thread alone; other threads see it only through the atomic
 * counters of tt__wstats.
 */
#ifndef TT_CLIENT_WORKER_H
#define TT_CLIENT_WORKER_H

#include <zstd.h>

#include "client/client.h"
#include "client/resolve.h"
#include "client/stepmap.h"
#include "client/tls.h"

typedef struct tt__worker {
    tt_client *c;
    tt__clock_cal cal;
    uint64_t next_seq; /* the next sequence number to give an event; from 1 */

    /* the batch being built: TT_BATCH_HDR_MAX bytes of headroom, then Batch.events entries */
    tt__buf batch;
    uint32_t batch_n;
    uint64_t batch_first_seq;
    uint64_t batch_base;    /* Unix ns of the batch's first event */
    uint64_t batch_open_ns; /* monotonic ns when the first event went in, or earlier: the
                                * previous drain pass, after which that event was emitted */
    uint64_t prev_drain_ns; /* monotonic ns of the previous drain pass */
    ZSTD_CCtx *zc;
    uint8_t *zbuf; /* a frame is compressed here, then copied into a buffer of its size */
    size_t zcap;
    tt__ring *resume;   /* ring to drain first next time, for fairness */
    tt__stepmap *steps; /* open steps' session, name and kind (stepmap.h), or NULL */

    /* frames not yet acknowledged, oldest first; send_next is the first not yet written on
     * the current connection (NULL if all are) */
    tt__fq window;
    tt__frame_out *send_next;
    size_t send_off;
    int send_blocked; /* the last write met a full socket: wait for POLLOUT */
    uint64_t next_frame_no;
    uint64_t last_progress_ns; /* last ack, or when the oldest unacked frame was sent */

    /* connection */
    int fd;
    tt__tls_creds *tls_creds; /* loaded at the first tls:// attempt, kept until the end */
    tt__tls_link *tls;        /* the TLS session on fd (tls:// endpoints), or NULL */
    int state;                /* enum tt__conn_state */
    uint64_t next_attempt_ns;
    uint64_t backoff_ms;
    uint64_t attempt_started_ns;
    int ever_connected;
    uint64_t attempts;       /* connection attempts started */
    uint64_t close_attempts; /* attempts when close began: one more is made while closing */
    tt__buf rbuf;            /* bytes read, not yet parsed */
    tt__buf wbuf;            /* the hello frame, until written */
    size_t wbuf_off;
    uint64_t max_frame;    /* from the hello reply */
    uint64_t batch_limit;  /* seal a batch at this raw size: batch_bytes, or less over NATS */
    struct tt__nats *nats; /* the NATS transport (nats.h), NULL for a native endpoint */
    tt__resolve *resolve;  /* a name resolution still running, kept across attempts */
    tt__addr addr;         /* the address of the current attempt */
    uint64_t rng;

    /* timing */
    uint64_t last_frame_ns; /* last batch sealed (for heartbeats) */
    uint64_t last_cal_ns;
    uint64_t drained_last; /* bytes drained in the last cycle: sets the next sleep */
    int64_t replay_tokens; /* spool replay budget (bytes), refilled over time; below 0 after a
                            * frame larger than what was left: the debt is paid first */
    uint64_t replay_refill_ns;

    /* requests from other threads, copied under ctl_lock */
    uint64_t flush_ticket;  /* highest flush request seen */
    uint64_t flush_seq;     /* flush done when every event up to this seq is settled */
    uint64_t flush_need;    /* events the rings must have yielded before the target is set */
    uint64_t drained_total; /* events taken from rings since the worker started */
    int flush_pending;      /* 0 none, 1 requested, 2 target set */
    int closing;
    uint64_t deadline_ns;
} tt__worker;

/* conn.c */
void tt__conn_init(tt__worker *w);
/* Advance the connection: start a connect when due, finish one in progress. */
void tt__conn_step(tt__worker *w, uint64_t now);
/* Write what is pending (hello, then frames) without blocking. */
void tt__conn_send(tt__worker *w, uint64_t now);
/* Read and handle what the collector sent (replies, acks, rejects, control). */
void tt__conn_recv(tt__worker *w, uint64_t now);
/* Drop the connection; unacked frames will be written again on the next one. */
void tt__conn_drop(tt__worker *w, uint64_t now);
/* poll() events wanted on w->fd, 0 if none. */
short tt__conn_events(const tt__worker *w);
/* Milliseconds until the connection needs attention without any I/O, or -1. */
int64_t tt__conn_timeout_ns(const tt__worker *w, uint64_t now);
/* Append the hello frame (prefix and all) this client sends at connect to out. */
int tt__conn_hello_frame(tt__worker *w, tt__buf *out);

/* worker.c: frames settled by an ack, a reject or shutdown */
void tt__worker_frame_acked(tt__worker *w, tt__frame_out *f);
void tt__worker_frame_rejected(tt__worker *w, tt__frame_out *f);

#endif

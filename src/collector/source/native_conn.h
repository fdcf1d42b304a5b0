/*
 * native_conn.h - one agent connection of the native source: the state machine from bytes to
 * frames, hello, batches handed on, and acks or rejects back (native_conn.c). The loop that
 * owns the connections (native.c, or the fuzzer tests/fuzz/fuzz_conn.c) drives it through the
 * functions below and is told, through struct conn_owner, when to re-arm a connection, where
 * batches go and when a connection died. Lifetime: see the rule at the top of native.c.
 *
 * Memory (admission, budget.h): a connection reads into a buffer of CONN_RBUF_BASE bytes (at
 * most CONN_HELLO_FRAME_MAX before its hello), grown to hold one frame only once its header
 * has been read and the growth admitted against the owner's partial-frame pool; a batch is
 * admitted against the items pool by its declared decompressed size before anything is
 * allocated for it. A connection whose admission has to wait is blocked: it reads nothing
 * until conn_budget_wake resumes it (backpressure on that socket alone).
 */
#ifndef TT_COLLECTOR_NATIVE_CONN_H
#define TT_COLLECTOR_NATIVE_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

#include "collector/collector.h"
#include "collector/source/budget.h"
#include "collector/source/identity.h"
#include "collector/source/native.h"
#include "collector/source/source.h"
#include "common/buf.h"

#define CONN_RBUF_BASE (64u << 10)       /* read buffer a connection holds without admission */
#define CONN_HELLO_FRAME_MAX (16u << 10) /* the largest frame before a hello: the hello itself */
struct tls_conn;
struct tls_server;

/* All fields belong to the loop thread. */
struct conn {
    int fd;
    uint64_t id;
    struct tls_conn *tls; /* tls:// listener: the session every byte goes through (tls.h) */
    int handshaking;      /* the TLS handshake is not done: no frame is read yet */
    int ready;            /* hello accepted */
    int closing;          /* write what is queued and what completions bring, then close */
    int dead;             /* closed: unlinked from the loop, waiting to be freed by it */
    int reaped;           /* dead and its socket closed; the record waits for owed completions */
    tt__buf rbuf;
    tt__buf wbuf;
    size_t woff;
    int want_out;             /* EPOLLOUT wanted */
    struct peer peer;         /* the transport's view of the peer, from accept */
    struct agent_ident ident; /* fixed by the hello; ident.identity may be set before it */
    uint64_t frames_in;       /* batch frames received: the next frame_no */
    uint64_t ack_pending;     /* highest committed frame_no not yet acked */
    uint64_t pending;         /* completions owed by the pipeline */
    uint64_t opened_ns;
    uint64_t last_rx_ns;
    int blocked;              /* waits for budget (bw): reads nothing until resumed */
    struct budget_waiter bw;  /* its place in a pool's queue */
    size_t rbuf_charge;       /* bytes of rbuf admitted from the partial pool (cap - base) */
    struct budget *rbuf_pool; /* that pool (the owner's adm.partial) */
    struct conn *prev, *next; /* every connection record of the owner, dead ones included */
    struct conn *next_dead;   /* the owner's deferred-free list */
};

/* What a connection needs from the loop that owns it. */
struct conn_owner {
    const struct collector_opts *o;
    ZSTD_DCtx *dctx;
    struct ingest_hooks hooks;
    int paused;           /* the pipeline is over budget: read nothing */
    struct admission adm; /* the ingest budget (budget_init both pools before conn_new) */
    uint64_t drop_acks;   /* test hook: commits whose ack is replaced by a disconnect */
    /* The connection's wishes changed (c->want_out, c->closing, paused): re-arm it. */
    void (*watch)(struct conn_owner *ow, struct conn *c);
    /* A decoded batch: hand it on (source_submit); the pipeline owns it from here. */
    void (*submit)(struct conn_owner *ow, struct conn *c, struct store_item *it);
    /* c was just marked dead: unlink it from the loop now and free it later. */
    void (*died)(struct conn_owner *ow, struct conn *c);
};

/* A connection on fd (nonblocking, connected), not yet watched. NULL when out of memory. */
struct conn *conn_new(struct conn_owner *ow, int fd, uint64_t id);

/* Fix the connection's identity before its hello (a transport that authenticates the peer,
 * such as TLS with a verified client certificate: kind "cert", value its subject). The hello
 * keeps it instead of deriving one from a token or the peer's uid (identity.h). Returns 0, or
 * -1 once the hello was accepted (an identity is set once) or for an empty kind or value. */
int conn_set_identity(struct conn *c, const char *kind, const char *value);

/* Put c behind TLS (a tls:// listener) before it is watched: the handshake comes first, stepped
 * by conn_readable and conn_writable. 0, or -1 when out of memory (c untouched). */
int conn_start_tls(struct conn *c, struct tls_server *s);

/* Bytes TLS already decrypted for c that no socket event will announce: the owner calls
 * conn_readable for them (0 for a plain connection). */
size_t conn_tls_pending(const struct conn *c);

/* Free the record (the owner only, at the end of an iteration, when !c->pending). Closes the
 * socket if it is still open. */
void conn_free(struct conn *c);

/* Close the socket and free the buffers of a dead connection (the owner's reap); the record
 * itself may have to wait for owed completions. */
void conn_reap(struct conn *c);

/* Mark c dead (idempotent). Never frees. */
void conn_kill(struct conn_owner *ow, struct conn *c);

/* Close for a counted reason. */
void conn_fail(struct conn_owner *ow, struct conn *c, int reason);

/* The socket is readable (or hung up): read and act on the frames it holds. */
void conn_readable(struct conn_owner *ow, struct conn *c);

/* The socket is writable: send what is queued. */
void conn_writable(struct conn_owner *ow, struct conn *c);

/* Queue a frame and try to send it. 0, or -1 if the connection is (now) dead; c stays valid
 * until the owner frees it at the end of the iteration. */
int conn_send(struct conn_owner *ow, struct conn *c, uint8_t type, const uint8_t *payload,
              size_t n);

/* The pipeline's answer for one of c's frames; acks are coalesced until conn_flush_acks. */
void conn_complete(struct conn_owner *ow, struct conn *c, uint64_t frame_no, enum source_result r,
                   const char *reason);

/* Send the coalesced ack, and close a closing connection that has nothing more to send. */
void conn_flush_acks(struct conn_owner *ow, struct conn *c);

/* What an admitted batch costs the items pool: its decompressed payload, the stored copy of a
 * compressed one and the item record. */
size_t conn_item_cost(size_t raw_len, size_t blob_len);

/* The pipeline is done with it (before store_item_free): its bytes go back to the items pool. */
void conn_item_done(struct conn_owner *ow, const struct store_item *it);

/* Resume the blocked connections whose admission fits now, oldest first. The owner calls it
 * where no callback holds a connection (the end of a loop iteration); resumed connections may
 * die and are then reaped as usual. */
void conn_budget_wake(struct conn_owner *ow);

/* Hello and idle timeouts at monotonic time now; a connection holding an admitted partial frame
 * that receives nothing for hello_timeout_ms is closed (slow_frame). */
/* The agent's clock against ours when it sent hello h, in ms: 0 within CLOCK_SKEW_FLAG_MS or
 * when the agent did not say (any source's hello; computed without overflow whatever it says). */
int64_t hello_clock_skew_ms(const tt__hello *h);

void conn_check_timeouts(struct conn_owner *ow, struct conn *c, uint64_t now);

#endif

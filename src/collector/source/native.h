/*
 * native.h - the native source: framed batches over TCP and Unix sockets, in the collector's
 * epoll loop (native.c), one state machine per connection (native_conn.c). It hands batches
 * to the pipeline through the source seam (source.h).
 */
#ifndef TT_COLLECTOR_NATIVE_H
#define TT_COLLECTOR_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"

#include "common/wire.h"

struct ingest;
struct pipeline;
struct tls_server;

/* Points where other parts of the collector plug in; all run on the loop thread. */
struct ingest_hooks {
    void *ctx;
    /* Decide whether a hello may connect and under which agent name (written to agent, 256
     * bytes; empty keeps the hello's). Negative refuses, with err sent back to the agent; 1
     * accepts on a valid ingest token (the identity becomes "token:AGENT"), 0 accepts without
     * one (the identity is the peer's, identity.h). */
    int (*authorize)(void *ctx, const tt__hello *h, char *agent, char *err, size_t errlen);
    /* Whether identity may use agent (the store's owner of the name, if any, is identity).
     * Negative refuses at the hello, with err sent back; the store checks again at commit. */
    int (*owner_ok)(void *ctx, const char *agent, const char *identity, char *err, size_t errlen);
    void (*on_hello)(void *ctx, uint64_t conn_id, const struct agent_ident *id);
    /* SIGTERM: the drain begins (other sources stop taking input). May be NULL. */
    void (*on_drain)(void *ctx);
    /* Completions other sources still wait for: the drain goes on while not 0. May be NULL. */
    uint64_t (*pending)(void *ctx);
};

/* Bind every listener of o (updating o->listen with the ports actually bound), attach to pl as
 * a source and set up the loop, which also serves pl's completions. tls (borrowed, outliving
 * the ingest) serves the tls:// listeners; NULL refuses them. SIGTERM and SIGINT must already
 * be blocked in every thread. */
int ingest_open(struct ingest **out, struct collector_opts *o, struct pipeline *pl,
                const struct ingest_hooks *hooks, struct tls_server *tls, char *err, size_t errlen);

/* Run until SIGTERM or SIGINT, then drain within o->grace_ms. */
int ingest_run(struct ingest *g);

void ingest_close(struct ingest *g);

/* Queue a Control frame payload for the connections of agent (NULL: all). Thread-safe. */
int ingest_post_control(struct ingest *g, const char *agent, const uint8_t *payload, size_t n);

/* The same, then wait up to timeout_ms until the loop has queued it: returns how many
 * connections it was queued on, -ETIMEDOUT, -ESHUTDOWN (the loop closed first) or another
 * negative errno. Thread-safe; not on the ingest thread (it would wait for itself). */
int ingest_post_control_wait(struct ingest *g, const char *agent, const uint8_t *payload, size_t n,
                             unsigned timeout_ms);

#endif

/*
 * nats.h - the NATS JetStream source (nats.c; docs/wire-format.md, "NATS JetStream"): with
 * --nats the collector consumes ingest messages (one hello + one batch each) from a stream it
 * creates at start if missing, through a durable pull consumer shared by every collector that
 * names the same durable, and submits them through the source seam (source.h). A message is
 * acknowledged only after its completion: COMMITTED or DUPLICATE ack, RETRY or FATAL nak with a
 * delay (redelivered), REFUSED, malformed or unauthenticated term (counted by reason).
 *
 * Threads: one consumer thread fetches, decodes, authenticates and submits, and performs the
 * acks; the completions (loop thread) only queue them for it and wake it. The API threads
 * send operator orders to an agent's control subject (nats_publish_control), which a courier
 * thread resends until the agent confirms (nats_orders.h).
 *
 * Identity: a NATS agent has no peer the collector can see, so its hello must carry a valid
 * ingest token (--ingest-tokens); its identity is then "token:AGENT" as on TCP. Without a token
 * the message is terminated (reason auth).
 */
#ifndef TT_COLLECTOR_NATS_H
#define TT_COLLECTOR_NATS_H

#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"
#include "common/buf.h"
#include "common/json.h"

struct nats_src;
struct pipeline;
struct auth;

/* Check the --nats options (URLs, token file) before anything starts: 0, or -1 with err. */
int nats_check_opts(const struct collector_opts *o, char *err, size_t errlen);

/* Connect, create the stream if missing, bind the durable pull consumer, attach to pl and start
 * the consumer thread. o and auth are borrowed and outlive it. 0, or -1 with err. */
int nats_open(struct nats_src **out, const struct collector_opts *o, struct pipeline *pl,
              const struct auth *auth, char *err, size_t errlen);

/* Stop fetching (SIGTERM: the drain). Loop thread; x may be NULL. */
void nats_drain(struct nats_src *x);

/* Messages submitted whose completion has not come yet (0 for NULL). */
uint64_t nats_pending(const struct nats_src *x);

/* After the loop ended: the consumer thread performs the acks queued, ends, and the connection
 * closes (what was never completed stays unacked and is redelivered). x may be NULL. */
void nats_shutdown(struct nats_src *x);

/* After the store closed: frees what completions never came for. x may be NULL. */
void nats_free(struct nats_src *x);

/* Send a CONTROL payload to agent on its control subject (headers Tt-Agent, Tt-Order; resent
 * until the agent confirms: nats_orders.h) and wait up to wait_ms for the confirmation (any
 * thread). 2 confirmed, 1 published and not yet confirmed (resent for up to
 * NATS_ORDER_TTL_MS), 0 without --nats, negative on an error (not sent). */
int nats_publish_control(struct nats_src *x, const char *agent, const uint8_t *payload, size_t n,
                         int wait_ms);
/* How long the API waits for a NATS agent's confirmation of an order (then it answers). */
#define NATS_CONFIRM_WAIT_MS 1000

/* The stalled-durable check. nats-server 2.9 (Debian 12's) has two ways to leave stored-to-be
 * messages in the stream for ever after a node dies, both seen in
 * tests/integration/test_nats_faults.c (S20):
 * - the durable's leader sits on a replica whose copy of the stream stopped catching up: the
 *   stream's leader holds messages past what the durable delivered, the durable counts none
 *   pending, fetches return nothing (nats-server issue #3299 asks the server to step such a
 *   leader down itself);
 * - a message delivered without the replicas agreeing is skipped by the next leader: it stays
 *   in the work queue below what the durable delivered, neither pending nor awaiting an ack,
 *   never redelivered (fixed in nats-server 2.10.26 and 2.11: #6469, #6566).
 * When fetches have returned nothing for NATS_STALL_IDLE_MS and no message awaits its answer
 * (so that no ack waits behind a look), the consumer thread looks: the durable's info (from its
 * leader), then the first message on the durable's subjects (from the stream's leader). Two
 * looks in a row that see the same first message while the durable counts nothing pending and
 * nothing awaiting an ack, with no delivery between them, act: a message past what the durable
 * delivered makes it ask the durable's leader to step down, so another replica leads it;
 * messages at or below it are swept: read from the stream by sequence (at most NATS_SWEEP_MAX a
 * look), submitted like fetched ones, and deleted from the stream once the store has them (the
 * store's dedup makes a stale copy harmless). A look that sees neither, or a message fetched,
 * resets the check; each step-down doubles the wait before the next look, up to
 * NATS_STALL_WAIT_MAX_MS.
 *
 * A durable that keeps delivering is looked at too, every NATS_STALL_BUSY_MS (after a fetch
 * that returned nothing, no message awaiting its answer): agents connected but quiet send a
 * heartbeat a second, so a durable with agents is seldom idle for NATS_STALL_IDLE_MS, and a
 * skipped message would otherwise stay in the stream as long as any agent is connected. A
 * first message that the durable acknowledged (at or below its ack floor), or delivered while
 * nothing awaits an ack, is an orphan whatever else moves: two looks in a row that see the
 * same orphan sweep from it up to what was delivered (nothing awaiting an ack) or the ack floor
 * (what is above it may be on its way to a collector). Deliveries between the looks do not
 * start that check over.
 *
 * A sweep that stopped at NATS_SWEEP_MAX has more to do: the next look comes as soon as the
 * store has what it swept (NATS_SWEEP_AGAIN_MS after it, at the earliest), and sweeps on at
 * once from a first message past what it took, without a second look. Hundreds of orphans
 * (one node death left 725 in a CI run) are so swept in seconds, not at two looks a
 * NATS_SWEEP_MAX. */
#define NATS_STALL_IDLE_MS 3000
#define NATS_STALL_BUSY_MS 10000
#define NATS_STALL_WAIT_MAX_MS 60000
#define NATS_SWEEP_MAX 64
#define NATS_SWEEP_AGAIN_MS 200
enum nats_stall_act { NATS_STALL_NONE, NATS_STALL_STEPDOWN, NATS_STALL_SWEEP };
struct nats_stall {
    uint64_t first;     /* the first message on the durable's subjects at the previous look */
    uint64_t delivered; /* the durable's last delivered stream sequence then */
    int suspect;        /* what the previous look saw (enum nats_stall_act) */
    unsigned wait_ms;   /* between looks */
    uint64_t orphan;    /* the first message at or below the ack floor at the previous look, 0 */
    uint64_t sweep_to;  /* after NATS_STALL_SWEEP: the last sequence to sweep */
    uint64_t more_from; /* after a sweep that stopped at NATS_SWEEP_MAX: where it stopped (the
                         * next look sweeps an orphan from there on at once); 0 otherwise */
};
/* Start the check over (the orphan suspicion included). */
void nats_stall_reset(struct nats_stall *st);
/* A message was fetched: the idle durable's check starts over; an orphan stays suspect
 * (deliveries above it do not move it), and so does an unfinished sweep. */
void nats_stall_moved(struct nats_stall *st);

/* One look: the stream sequence of the first message on the durable's subjects (0: none), the
 * durable's last delivered stream sequence, its ack floor (the stream sequence up to which
 * everything is acknowledged), its pending count and its count of messages delivered and not
 * yet acknowledged. What to do now; after NATS_STALL_SWEEP, sweep from first to st->sweep_to. */
enum nats_stall_act nats_stall_look(struct nats_stall *st, uint64_t first, uint64_t delivered,
                                    uint64_t ack_floor, uint64_t pending, uint64_t ack_pending);

/* The source's counters for /metrics and /api/v1/status (zeros without --nats). */
void nats_metrics(tt__buf *b);
void nats_status_json(tt__json *j);

#endif

/*
 * comply_watch.h - compliance applied by the collector (docs/compliance.md, "The collector's
 * checks"): the rules of a policy (serve --comply-policy FILE, or the one the operator posted
 * for an agent) evaluated on the step_begin and log events of agents that did not decide
 * themselves (older clients, agents without a policy, OTLP-fed ones). The collector cannot stop
 * a step that already ran: it records its own decision in the agent's stream (a log event with
 * the agent's attribute names plus comply.by = collector, from an instance of its own) and the
 * monitor's comply unit raises the incident from it, as from an agent's decision.
 *
 * Telling an enforcing agent apart: a step the agent decided about carries the agent's decision
 * (a log with comply.verdict and step.id, in the same batch or one soon after). The watch waits
 * WATCH_GRACE_MS after a step_begin is committed before judging it, and drops its verdict when
 * the agent's decision for the same instance and step arrived meanwhile: one decision and one
 * incident per step, the agent's.
 *
 * Threads: watch_on_commit runs on the loop thread (the pipeline's commit hook) and only copies
 * what it needs into a bounded queue (WATCH_QUEUE_BYTES; beyond it events go unchecked and are
 * counted); the rules run on the watch's own thread; watch_set_agent_policy runs on HTTP
 * threads. The records it submits complete on the loop thread.
 */
#ifndef TT_COLLECTOR_COMPLY_WATCH_H
#define TT_COLLECTOR_COMPLY_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"
#include "common/buf.h"
#include "common/comply.h"

#define WATCH_GRACE_MS 2000               /* an agent's own decision may arrive this late */
#define WATCH_QUEUE_BYTES (16u << 20)     /* events copied and waiting for the rules */
#define WATCH_AGENT_POLICIES 64           /* agents with a policy of their own (POST) */
#define WATCH_POLICY_FILE_MAX (64u << 10) /* = TT_COMPLY_MAX_POLICY */

struct watch;
struct pipeline;

/* Read a policy file for --comply-policy: a regular file of at most WATCH_POLICY_FILE_MAX
 * bytes that neither group nor others may write, owned by this user or root; parsed with the
 * agents' parser. *out (free it) on success; -1 with err naming the file and the line. */
int watch_policy_load(const char *path, struct tt__comply_policy **out, char *err, size_t errlen);

/* Start the watch as a source of pl (for its records) and its thread. global (owned by the
 * watch from now on) applies to every agent without one of its own; NULL: none. */
int watch_open(struct watch **out, struct pipeline *pl, struct tt__comply_policy *global, char *err,
               size_t errlen);

/* Stop the thread (events still waiting go unchecked) before the loop stops; then free. */
void watch_stop(struct watch *w);
void watch_free(struct watch *w);

/* The commit hook (loop thread). */
void watch_on_commit(struct watch *w, const struct store_item *it);

/* The policy the collector applies to one agent from now on (text as posted; len 0 clears it,
 * and the global one applies again). 0, -ENOSPC when WATCH_AGENT_POLICIES agents have one,
 * -ENOMEM, -EINVAL for a text the parser refuses. */
int watch_set_agent_policy(struct watch *w, const char *agent, const char *text, size_t len);

/* For the fuzzer and tests: a watch with no pipeline and no thread; its records go to sink
 * (which owns the item: store_item_free it), and watch_judge_all judges every queued entry
 * now, whatever its grace. */
typedef void (*watch_sink_fn)(void *ctx, struct store_item *it);
int watch_open_detached(struct watch **out, struct tt__comply_policy *global, watch_sink_fn sink,
                        void *ctx);
void watch_judge_all(struct watch *w);

/* Counters, for /metrics (Prometheus text). */
void watch_metrics(struct watch *w, tt__buf *out);

#endif

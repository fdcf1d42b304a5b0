/*
 * follow.h - the monitor and the live stream fed from the store's commit sequence, when
 * several collectors share the store (PostgreSQL; store.h's store_follow): a thread of its own
 * reads every batch any collector committed, in commit order, and hands it to the monitor and
 * the hub, so every collector's detectors and live stream see each agent's whole stream. One collector leads and raises incidents; the others
 * hold theirs. When the leader dies, another takes the lead within FOLLOW_LEAD_MS, takes over
 * the incidents it had stored and raises only what the store lacks (docs/design.md, "Several
 * collectors").
 */
#ifndef TT_COLLECTOR_FOLLOW_H
#define TT_COLLECTOR_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

#define FOLLOW_BATCHES 64    /* batches read per statement (at most) */
#define FOLLOW_POLL_MS 50    /* between reads when the last found everything read */
#define FOLLOW_LEAD_MS 1000  /* between two tries to lead */
#define FOLLOW_RETRY_MS 1000 /* after a failed read */

struct follow;
struct store;
struct monitor;

/* Follow the store's commits when it can be followed: 0 and *out (the monitor now follows:
 * it raises only while this collector leads; hub, when not NULL, is fed here and not by the
 * pipeline); -ENOTSUP when the store is this collector's own (*out NULL: the monitor and hub
 * take this collector's commits); another negative with err. */
struct hub;
int follow_start(struct follow **out, struct store *s, struct monitor *m, struct hub *hub,
                 char *err, size_t errlen);
/* Stop the thread (NULL is ignored): the monitor is fed no more; the lead is kept until
 * follow_free, so that a stopping leader's last notices are stored before another takes over. */
void follow_stop(struct follow *f);
void follow_free(struct follow *f);

/* Whether this collector leads is the monitor's to say (monitor_leading). */
struct follow_status {
    uint64_t batches; /* batches read from the store (and handed to the monitor) */
    uint64_t errors;  /* failed reads */
    uint64_t leads;   /* times this collector took the lead */
    uint64_t taken;   /* incidents taken over from an earlier leader */
};
void follow_status(struct follow *f, struct follow_status *out);

#endif

/*
 * natsd.h - private nats-server processes for tests: one server or a cluster of up to
 * TT_NATS_MAX nodes, each with JetStream (file storage in the test's temporary directory),
 * listening on 127.0.0.1 on free ports only, run as children of the test (they die with it:
 * PR_SET_PDEATHSIG) so that a test can kill -9 a node and start it again mid-stream.
 *
 * Every server requires a token (random, written 0600 to TOKEN_FILE); the token never appears
 * on a command line: it sits in each server's configuration file (0600), and clients read it
 * from the token file. Cluster routes are not authenticated beyond loopback (test only).
 */
#ifndef TT_TEST_NATSD_H
#define TT_TEST_NATSD_H

#include <sys/types.h>

#include <nats/nats.h>

#define TT_NATS_MAX 5

struct tt_nats_node {
    pid_t pid;        /* 0 when stopped */
    int port;         /* client port, 127.0.0.1 */
    int cluster_port; /* route port (cluster only) */
    int http_port;    /* monitoring port: /healthz */
    char conf[700];   /* its configuration file */
    char log[700];    /* its log, in the test's artifacts */
};

struct tt_nats {
    int n; /* nodes */
    struct tt_nats_node node[TT_NATS_MAX];
    char token_file[700]; /* the token, 0600, for clients (--nats-token-file) */
    char token[80];
    char urls[TT_NATS_MAX * 40]; /* "nats://127.0.0.1:P1,nats://127.0.0.1:P2,..." */
};

/* Start n nodes (1: a single server; 2..TT_NATS_MAX: a cluster named "tt" whose nodes route
 * to each other) with JetStream, and wait until each answers /healthz (JetStream included).
 * SKIPs the test (with the reason) only when nats-server is missing
 * (scripts/install-deps test installs it). */
void tt_nats_start(struct tt_nats *ns, int n);

/* Kill node i: SIGKILL when hard (a crash), else SIGTERM; reaps it. */
void tt_nats_kill(struct tt_nats *ns, int i, int hard);

/* Start node i again with the same configuration and store; waits for /healthz. */
void tt_nats_restart(struct tt_nats *ns, int i);

/* Start node i again and wait up to wait_ms for /healthz: 1 healthy, 0 not yet (it runs on:
 * nats-server 2.9 can take long to bring a replica current after a kill -9). */
int tt_nats_restart_wait(struct tt_nats *ns, int i, int wait_ms);

/* 1 when node i answers /healthz with JetStream ready. */
int tt_nats_healthy(const struct tt_nats *ns, int i);

/* Print, for a failing test, what each node's JetStream says of the streams and consumers
 * (its /jsz) and the last warnings and errors of its log. */
void tt_nats_explain(const struct tt_nats *ns);

/* A libnats connection of the test's own to every node of ns, with its token, reconnecting
 * for ever every 100 ms, and its JetStream context, whose calls wait js_wait_ms (0: libnats's
 * default). */
struct tt_nats_conn {
    natsConnection *nc;
    jsCtx *js;
};
void tt_nats_connect(struct tt_nats_conn *t, const struct tt_nats *ns, int64_t js_wait_ms);
void tt_nats_disconnect(struct tt_nats_conn *t);

#endif

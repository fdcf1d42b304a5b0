/*
 * pgcluster.h - a private PostgreSQL server for tests: a cluster made by initdb in the test's
 * temporary directory, its postmaster run as a child of the test (so that the test knows its
 * pid, can stop and restart it mid-stream, and it dies with the test: PR_SET_PDEATHSIG),
 * listening on 127.0.0.1 on a free port only (no Unix socket: the test's temporary paths can
 * be longer than a socket path may be).
 *
 * PostgreSQL refuses to run as root: when the test runs as root (CI on a fresh Debian 12, this
 * machine), initdb and the postmaster run as the `postgres` system user of Debian's
 * postgresql-common (else `nobody`), set with setgid/setuid in the child, and the test's
 * temporary directory is made traversable (0711) so that that user reaches its cluster. As any
 * other user, they run as that user. The superuser "telltale" has a random password
 * (scram-sha-256); the test process gets it through PGPASSFILE (0600), never in a URL.
 */
#ifndef TT_TEST_PGCLUSTER_H
#define TT_TEST_PGCLUSTER_H

#include <stdint.h>
#include <sys/types.h>

#include "serve.h"

struct tt_pg {
    pid_t pid;     /* the postmaster, 0 when stopped */
    int port;      /* 127.0.0.1:port */
    char dir[600]; /* the cluster's data directory */
    char url[200]; /* postgres://telltale@127.0.0.1:PORT/postgres (no password) */
    char log[700]; /* the server's log, in the test's artifacts */
    uid_t uid;     /* who runs it */
    gid_t gid;
};

/* initdb a cluster in TT_TEST_TMP/pg, start it, wait until it accepts connections, set
 * PGPASSFILE for this process and its children. SKIPs the test (with the reason) only when the
 * PostgreSQL server binaries are missing (scripts/install-deps test installs them). */
void tt_pg_start(struct tt_pg *pg);

/* Start the postmaster again on the same cluster and port; waits until it accepts. */
void tt_pg_restart(struct tt_pg *pg);

/* Stop it: fast shutdown (SIGINT) when fast, else immediate (SIGQUIT, as a crash), then reap. */
void tt_pg_stop(struct tt_pg *pg, int fast);

/* Run sql (one statement) on the cluster; the first column of the first row into out (n
 * bytes, "" when none). Fails the test on an error. */
void tt_pg_query(const struct tt_pg *pg, const char *sql, char *out, size_t n);

/* What the PostgreSQL store holds for one instance (tt_test_check_store's checks). */
void tt_pg_check_store(const struct tt_pg *pg, const uint8_t instance[16],
                       struct tt_store_check *out);

#endif

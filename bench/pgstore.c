/*
 * pgstore.c - stored events per second of a real `telltale serve --store postgres://...`
 * against the same collector on SQLite, in the same run (issue 19: the PostgreSQL writer's
 * speed, a ratio to SQLite).
 *
 *   pgstore [--smoke] [--runs N] [--events N]
 *
 * A private PostgreSQL cluster of the newest /usr/lib/postgresql/VERSION/bin: initdb (trust
 * authentication, on 127.0.0.1 only, in a temporary directory; as the `postgres` system user
 * when run as root, since the server refuses root) and its postmaster on a free port. Each run
 * starts both collectors (sync=full; the order alternates between runs) and one agent of the
 * client library per collector, which logs N events of about 64 bytes as fast as its window
 * takes them; the rate is N over the time from the first event to the last acknowledgement
 * (an acknowledgement follows the commit). The figures are the medians over the runs, and
 * the ratio PostgreSQL / SQLite of each run's pair, median too.
 */
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <sys/prctl.h>

#include "pipeline_util.h"

#define MAX_RUNS 15

struct pg {
    pid_t pid;
    int port;
    char dir[320];
    char bindir[256];
    uid_t uid;
    gid_t gid;
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &n) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static int find_bindir(struct pg *pg)
{
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0) {
        return -1;
    }
    int best = -1, best_v = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int v = (int)strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
        if (v > best_v) {
            best_v = v;
            best = (int)i;
        }
    }
    if (best >= 0) {
        snprintf(pg->bindir, sizeof pg->bindir, "%.*s",
                 (int)(strlen(g.gl_pathv[best]) - strlen("/initdb")), g.gl_pathv[best]);
    }
    globfree(&g);
    return best >= 0 ? 0 : -1;
}

/* Run argv as the cluster's user, its output into DIR/pg.log. */
static pid_t spawn_as(const struct pg *pg, const char *const *argv)
{
    char log[400];
    snprintf(log, sizeof log, "%s/pg.log", pg->dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (geteuid() == 0 &&
            (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0)) {
            _exit(126);
        }
        prctl(PR_SET_PDEATHSIG, SIGQUIT); /* after setuid, which clears it */
        if (chdir(pg->dir) != 0) {
            _exit(126);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int pg_start(struct pg *pg)
{
    if (find_bindir(pg) != 0) {
        fprintf(stderr, "pgstore: no PostgreSQL server (scripts/install-deps test)\n");
        return -1;
    }
    if (bu_tmpdir(pg->dir, sizeof pg->dir, "pgstore") != 0) {
        return -1;
    }
    pg->uid = geteuid();
    pg->gid = getegid();
    if (pg->uid == 0) {
        struct passwd *pw = getpwnam("postgres");
        pw = pw ? pw : getpwnam("nobody");
        if (!pw) {
            return -1;
        }
        pg->uid = pw->pw_uid;
        pg->gid = pw->pw_gid;
        if (chown(pg->dir, pg->uid, pg->gid) != 0) {
            return -1;
        }
    }
    char exe[400], data[400];
    snprintf(exe, sizeof exe, "%s/initdb", pg->bindir);
    snprintf(data, sizeof data, "%s/data", pg->dir);
    const char *init[] = {exe, "-D", data, "-U", "telltale", "-A", "trust", "--no-sync", NULL};
    pid_t pid = spawn_as(pg, init);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "pgstore: initdb failed (see %s/pg.log)\n", pg->dir);
        return -1;
    }
    pg->port = free_port();
    char port[32];
    snprintf(port, sizeof port, "port=%d", pg->port);
    snprintf(exe, sizeof exe, "%s/postgres", pg->bindir);
    const char *run[] = {exe,
                         "-D",
                         data,
                         "-c",
                         "listen_addresses=127.0.0.1",
                         "-c",
                         port,
                         "-c",
                         "unix_socket_directories=",
                         NULL};
    pg->pid = spawn_as(pg, run);
    char info[128];
    snprintf(info, sizeof info, "host=127.0.0.1 port=%d dbname=postgres user=telltale", pg->port);
    for (int i = 0; i < 1500; i++) {
        if (PQping(info) == PQPING_OK) {
            return 0;
        }
        bu_sleep_ns(20000000);
    }
    fprintf(stderr, "pgstore: postgres not ready (see %s/pg.log)\n", pg->dir);
    return -1;
}

static void pg_stop(struct pg *pg)
{
    if (pg->pid > 0) {
        kill(pg->pid, SIGINT);
        waitpid(pg->pid, NULL, 0);
        pg->pid = 0;
    }
    bu_rmtree(pg->dir);
}

/* One collector (store NULL: SQLite) and one agent: events stored per second, or -1. */
static double measure(const char *store, int events, const char *agent)
{
    char dir[320];
    if (bu_tmpdir(dir, sizeof dir, "pgstore-serve") != 0) {
        return -1;
    }
    const char *extra[] = {"--store", store, NULL};
    struct bu_collector c;
    double rate = -1;
    if (bu_collector_start(&c, dir, "full", 0, store ? extra : NULL) != 0) {
        bu_rmtree(dir);
        return -1;
    }
    const char *cfg[] = {"window_bytes", "4194304", "batch_bytes", "16384", NULL};
    tt_client *cl = NULL;
    if (bu_client_open(&cl, c.unix_ep, agent, cfg) != 0 || bu_wait_connected(&cl, 1, 5000) != 0) {
        goto out;
    }
    char msg[96];
    uint64_t t0 = bu_now_ns();
    for (int i = 0; i < events; i++) {
        snprintf(msg, sizeof msg, "event %d, padded to about sixty-four bytes of message text", i);
        while (tt_log(cl, "bench", TT_INFO, msg, NULL, 0) != 0) {
            bu_sleep_ns(100000);
        }
    }
    tt_stats st;
    for (;;) {
        tt_stats_get(cl, &st, sizeof st);
        if (st.acked >= (uint64_t)events) {
            break;
        }
        if (bu_now_ns() - t0 > 300000000000ull) {
            fprintf(stderr, "pgstore: %llu of %d acknowledged after 300 s\n",
                    (unsigned long long)st.acked, events);
            goto out;
        }
        bu_sleep_ns(1000000);
    }
    rate = events / ((double)(bu_now_ns() - t0) / 1e9);
out:
    if (cl) {
        tt_close(cl, 2000);
    }
    bu_collector_stop(&c, 0);
    bu_rmtree(dir);
    return rate;
}

int main(int argc, char **argv)
{
    int runs = 5, events = 200000, smoke = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke")) {
            smoke = 1;
            runs = 1;
            events = 5000;
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
            runs = (int)strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--events") && i + 1 < argc) {
            events = (int)strtol(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: pgstore [--smoke] [--runs N] [--events N]\n");
            return 2;
        }
    }
    runs = runs < 1 ? 1 : runs > MAX_RUNS ? MAX_RUNS : runs;
    events = events < 100 ? 100 : events;
    bu_mark_start();
    struct pg pg = {0};
    if (pg_start(&pg) != 0) {
        pg_stop(&pg);
        return 1;
    }
    char url[128];
    snprintf(url, sizeof url, "postgres://telltale@127.0.0.1:%d/postgres", pg.port);
    double p[MAX_RUNS], l[MAX_RUNS], r[MAX_RUNS];
    int rc = 0;
    for (int i = 0; i < runs && rc == 0; i++) {
        char agent[32];
        snprintf(agent, sizeof agent, "bench-%d", i);
        if (i % 2 == 0) {
            p[i] = measure(url, events, agent);
            l[i] = measure(NULL, events, agent);
        } else {
            l[i] = measure(NULL, events, agent);
            p[i] = measure(url, events, agent);
        }
        if (p[i] <= 0 || l[i] <= 0) {
            rc = 1;
            break;
        }
        r[i] = p[i] / l[i];
    }
    pg_stop(&pg);
    if (rc) {
        fprintf(stderr, "pgstore: a run failed\n");
        return 1;
    }
    char note[256];
    snprintf(note, sizeof note,
             "%d runs x %d log events of ~64 B, one agent, window 4 MiB, batch 16 KiB, "
             "sync=full, PostgreSQL on 127.0.0.1%s",
             runs, events, smoke ? " (smoke)" : "");
    double pm = bu_median(p, (size_t)runs), lm = bu_median(l, (size_t)runs);
    bu_result("pgstore", "postgres_stored_events_per_s", pm, "events/s", "sqlite",
              bu_median(r, (size_t)runs), note);
    bu_result("pgstore", "sqlite_stored_events_per_s", lm, "events/s", NULL, 0, NULL);
    return 0;
}

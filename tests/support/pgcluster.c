/*
 * pgcluster.c - a private PostgreSQL server for tests (pgcluster.h).
 */
#include "pgcluster.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include "common/batch.h"
#include "test.h"

static char bindir[512];

/* The newest /usr/lib/postgresql/N/bin holding initdb and postgres: 0, or -1. */
static int find_bindir(void)
{
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0) {
        return -1;
    }
    int best = -1, best_v = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int v = atoi(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"));
        if (v > best_v) {
            best_v = v;
            best = (int)i;
        }
    }
    if (best >= 0) {
        snprintf(bindir, sizeof bindir, "%.*s", (int)(strlen(g.gl_pathv[best]) - strlen("/initdb")),
                 g.gl_pathv[best]);
    }
    globfree(&g);
    return best >= 0 ? 0 : -1;
}

/* Fork and exec argv as pg's user, output appended to pg->log; pdeath: the child gets SIGQUIT
 * when the test's process ends. */
static pid_t spawn_as(const struct tt_pg *pg, const char *const *argv, int pdeath)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(pg->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (geteuid() == 0 &&
            (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0)) {
            _exit(126);
        }
        if (pdeath) {
            prctl(PR_SET_PDEATHSIG, SIGQUIT); /* after setuid, which clears it */
        }
        if (chdir(pg->dir) != 0 && chdir("/") != 0) {
            _exit(126);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int ping(const struct tt_pg *pg)
{
    char info[256];
    snprintf(info, sizeof info,
             "host=127.0.0.1 port=%d dbname=postgres user=telltale connect_timeout=2", pg->port);
    return PQping(info) == PQPING_OK;
}

static void postmaster(struct tt_pg *pg)
{
    char data[700], port[32];
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(port, sizeof port, "port=%d", pg->port);
    char exe[600];
    snprintf(exe, sizeof exe, "%s/postgres", bindir);
    const char *argv[] = {exe,
                          "-D",
                          data,
                          "-c",
                          "listen_addresses=127.0.0.1",
                          "-c",
                          port,
                          "-c",
                          "unix_socket_directories=",
                          "-c",
                          "max_connections=60",
                          "-c",
                          "shared_buffers=16MB",
                          NULL};
    pg->pid = spawn_as(pg, argv, 1);
    double t0 = tt_test_now_ms();
    while (!ping(pg)) {
        int st;
        CHECK_MSG(waitpid(pg->pid, &st, WNOHANG) == 0, "postgres exited at start (see %s)",
                  pg->log);
        CHECK_MSG(tt_test_now_ms() - t0 < 30000, "postgres not ready after 30 s (see %s)", pg->log);
        usleep(20000);
    }
}

void tt_pg_start(struct tt_pg *pg)
{
    memset(pg, 0, sizeof *pg);
    if (find_bindir() != 0) {
        SKIP("no PostgreSQL server in /usr/lib/postgresql/*/bin (scripts/install-deps test)");
    }
    pg->uid = geteuid();
    pg->gid = getegid();
    if (pg->uid == 0) {
        struct passwd *pw = getpwnam("postgres");
        pw = pw ? pw : getpwnam("nobody");
        CHECK_MSG(pw != NULL, "running as root and neither postgres nor nobody exists");
        pg->uid = pw->pw_uid;
        pg->gid = pw->pw_gid;
        CHECK(chmod(tt_test_tmpdir(), 0711) == 0); /* its user must reach its cluster */
    }
    snprintf(pg->dir, sizeof pg->dir, "%s/pg", tt_test_tmpdir());
    snprintf(pg->log, sizeof pg->log, "%s/postgres.log", tt_test_outdir());
    CHECK(mkdir(pg->dir, 0700) == 0);
    CHECK(chown(pg->dir, pg->uid, pg->gid) == 0);
    pg->port = tt_test_free_port();
    snprintf(pg->url, sizeof pg->url, "postgres://telltale@127.0.0.1:%d/postgres", pg->port);

    /* A random password, in the server's pwfile and in this process's passfile. */
    unsigned char rnd[16];
    FILE *u = fopen("/dev/urandom", "rb");
    CHECK(u && fread(rnd, 1, sizeof rnd, u) == sizeof rnd);
    fclose(u);
    char pw[40];
    for (int i = 0; i < 16; i++) {
        snprintf(pw + 2 * i, 3, "%02x", rnd[i]);
    }
    char pwfile[700], passfile[700];
    snprintf(pwfile, sizeof pwfile, "%s/pwfile", pg->dir);
    snprintf(passfile, sizeof passfile, "%s/pgpass", tt_test_tmpdir());
    int fd = open(pwfile, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && write(fd, pw, strlen(pw)) == (ssize_t)strlen(pw) &&
          fchown(fd, pg->uid, pg->gid) == 0);
    close(fd);
    FILE *pf = fopen(passfile, "w");
    CHECK(pf != NULL);
    CHECK(chmod(passfile, 0600) == 0);
    fprintf(pf, "127.0.0.1:%d:*:telltale:%s\n", pg->port, pw);
    fclose(pf);
    setenv("PGPASSFILE", passfile, 1);

    char exe[600], data[700], pwarg[800];
    snprintf(exe, sizeof exe, "%s/initdb", bindir);
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(pwarg, sizeof pwarg, "--pwfile=%s", pwfile);
    const char *argv[] = {
        exe,         "-D", data,   "-U",         "telltale", pwarg, "-A", "scram-sha-256",
        "--no-sync", "-E", "UTF8", "--locale=C", NULL};
    pid_t pid = spawn_as(pg, argv, 0);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "initdb failed (see %s)", pg->log);
    unlink(pwfile);
    postmaster(pg);
}

void tt_pg_restart(struct tt_pg *pg)
{
    CHECK(pg->pid == 0);
    postmaster(pg);
}

void tt_pg_stop(struct tt_pg *pg, int fast)
{
    if (!pg->pid) {
        return;
    }
    CHECK(kill(pg->pid, fast ? SIGINT : SIGQUIT) == 0);
    int st;
    CHECK(waitpid(pg->pid, &st, 0) == pg->pid);
    pg->pid = 0;
}

static PGconn *conn(const struct tt_pg *pg)
{
    char info[300];
    snprintf(info, sizeof info, "%s?connect_timeout=5", pg->url);
    PGconn *c = PQconnectdb(info);
    CHECK_MSG(c && PQstatus(c) == CONNECTION_OK, "connecting to the test server: %s",
              c ? PQerrorMessage(c) : "out of memory");
    return c;
}

void tt_pg_query(const struct tt_pg *pg, const char *sql, char *out, size_t n)
{
    PGconn *c = conn(pg);
    PGresult *r = PQexec(c, sql);
    CHECK_MSG(r && (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK),
              "%s: %s", sql, PQerrorMessage(c));
    snprintf(out, n, "%s", PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(c);
}

struct range {
    uint64_t first, n;
};

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | (unsigned char)p[i];
    }
    return v;
}

void tt_pg_check_store(const struct tt_pg *pg, const uint8_t instance[16],
                       struct tt_store_check *out)
{
    memset(out, 0, sizeof *out);
    PGconn *c = conn(pg);
    const char *vals[1] = {(const char *)instance};
    int lens[1] = {16}, fmts[1] = {1};
    PGresult *r = PQexecParams(c,
                               "SELECT f.first_seq, f.n, f.codec, f.raw_len, f.data FROM frames f"
                               " JOIN instances i ON i.id = f.instance_id WHERE i.uuid = $1::bytea",
                               1, NULL, vals, lens, fmts, 1);
    CHECK_MSG(r && PQresultStatus(r) == PGRES_TUPLES_OK, "reading frames: %s", PQerrorMessage(c));
    int rows = PQntuples(r);
    struct range *rg = calloc((size_t)rows + 1, sizeof *rg);
    CHECK(rg);
    for (int i = 0; i < rows; i++) {
        rg[i].first = be64(PQgetvalue(r, i, 0));
        rg[i].n = be64(PQgetvalue(r, i, 1));
        uint64_t codec = be64(PQgetvalue(r, i, 2));
        size_t raw_len = (size_t)be64(PQgetvalue(r, i, 3));
        const char *data = PQgetvalue(r, i, 4);
        size_t len = (size_t)PQgetlength(r, i, 4);
        uint8_t *raw = malloc(raw_len + 1);
        CHECK(raw);
        if (codec == 1) {
            CHECK(ZSTD_decompress(raw, raw_len, data, len) == raw_len);
        } else {
            CHECK(len == raw_len);
            memcpy(raw, data, len);
        }
        tt__batch b;
        tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
        const char *why;
        CHECK_MSG(tt__batch_parse(&b, raw, raw_len, &lim, &why) == 0, "stored batch: %s", why);
        CHECK_EQ_U64(b.first_seq, rg[i].first);
        tt__event ev;
        while (tt__batch_next(&b, &ev)) {
            out->decoded++;
        }
        free(raw);
        out->events += rg[i].n;
    }
    PQclear(r);
    PQfinish(c);
    out->frames = (uint64_t)rows;
    qsort(rg, (size_t)rows, sizeof *rg, cmp_range);
    uint64_t next = 1;
    for (int i = 0; i < rows; i++) {
        uint64_t last = rg[i].first + rg[i].n - 1;
        if (rg[i].first < next) {
            uint64_t dup_end = last < next - 1 ? last : next - 1;
            out->overlaps += dup_end - rg[i].first + 1;
        } else {
            out->gaps += rg[i].first - next;
        }
        if (last + 1 > next) {
            next = last + 1;
        }
    }
    out->max_seq = next - 1;
    free(rg);
}

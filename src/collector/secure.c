/*
 * secure.c - the data directory's and the secrets' permissions, and the generated operator
 * token (secure.h). The collector runs with umask 077 (serve.c), so whatever SQLite or the
 * collector creates later is private too; this file deals with what already exists.
 */
#include "collector/secure.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "collector/log.h"

/* The store's files in the data directory, set to 0600 if an older version left them open (the
 * token is not among them: one that others may have read is refused, not silently kept). */
static const char *const private_files[] = {"telltale.db", "telltale.db-wal", "telltale.db-shm",
                                            "telltale.db-journal", NULL};

static int check_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "data directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "data directory %s is not a directory", dir);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen,
                 "data directory %s belongs to uid %u, not to this user (uid %u): run the "
                 "collector as its owner, or give it a directory of its own",
                 dir, (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "data directory %s is open to group or others (mode %03o): it holds prompts "
                 "and the operator token; run: chmod 700 '%s'",
                 dir, (unsigned)(st.st_mode & 0777), dir);
        return -1;
    }
    return 0;
}

/* Set one existing file of the data directory to 0600 (never following a symbolic link). */
static int tighten(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s is not a regular file owned by this user", path);
        rc = -1;
    } else if ((st.st_mode & 0777) != 0600) {
        rc = fchmod(fd, 0600);
        if (rc != 0) {
            snprintf(err, errlen, "cannot chmod 600 %s: %s", path, strerror(errno));
        } else {
            log_warn("%s was mode %03o; now 0600", path, (unsigned)(st.st_mode & 0777));
        }
    }
    close(fd);
    return rc;
}

int secure_data_dir(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (check_dir(dir, err, errlen) != 0) {
        return -1;
    }
    for (const char *const *f = private_files; *f; f++) {
        if (tighten(dir, *f, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

int secure_private_fd(int fd, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        return -1;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "%s holds a secret but group or others may access it (mode %03o); run: "
                 "chmod 600 '%s'",
                 path, (unsigned)(st.st_mode & 0777), path);
        return -1;
    }
    return 0;
}

static int generate(const char *path, char *err, size_t errlen)
{
    unsigned char raw[SECURE_TOKEN_BYTES];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "getrandom: %s", strerror(errno));
            return -1;
        }
        got += n > 0 ? (size_t)n : 0;
    }
    char hex[2 * SECURE_TOKEN_BYTES + 2];
    for (size_t i = 0; i < sizeof raw; i++) {
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    }
    hex[2 * SECURE_TOKEN_BYTES] = '\n';
    hex[2 * SECURE_TOKEN_BYTES + 1] = 0;
    memset(raw, 0, sizeof raw);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) {
            return 1; /* another collector made it first: read that one */
        }
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(hex);
    int ok = write(fd, hex, len) == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    memset(hex, 0, sizeof hex);
    if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

int secure_operator_token(const char *dir, char *path, size_t pathlen, int *created, char *err,
                          size_t errlen)
{
    *created = 0;
    if ((size_t)snprintf(path, pathlen, "%s/%s", dir, SECURE_TOKEN_FILE) >= pathlen) {
        snprintf(err, errlen, "data directory path too long");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        int rc = generate(path, err, errlen);
        if (rc < 0) {
            return -1;
        }
        *created = rc == 0;
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
                 errno == ELOOP ? " (a symbolic link: refused)" : "");
        return -1;
    }
    int rc = secure_private_fd(fd, path, err, errlen);
    close(fd);
    return rc;
}

void secure_announce(const char *scheme, const char *http_bound, const char *token,
                     const char *token_path)
{
    if (!token) {
        log_warn("dashboard: %s://%s/ (no operator token: --no-auth)", scheme, http_bound);
        return;
    }
    log_info("dashboard: %s://%s/ (operator token in %s)", scheme, http_bound, token_path);
    if (isatty(STDERR_FILENO)) {
        /* A terminal is the user who started the collector; a log file may be read by others,
         * so the token never goes there. */
        fprintf(stderr,
                "\n  Open the dashboard (this URL holds the operator token; keep it to "
                "yourself):\n    %s://%s/#token=%s\n\n",
                scheme, http_bound, token);
    }
}

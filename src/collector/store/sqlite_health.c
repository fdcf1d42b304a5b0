/*
 * sqlite_health.c - whether the SQLite store still holds what it acknowledges (sqlite.h's
 * health calls): the check at start (the header, then PRAGMA quick_check within a time
 * budget), the identity of the open files (a deleted or replaced telltale.db or WAL is noticed
 * at the next commit group and within a second when idle), corruption that any connection of
 * the process meets (SQLite's error log), and the salvage of what an open but deleted file
 * still holds.
 *
 * INVARIANTS
 * - sqlite_health_check is called by the writer after every commit and before the group's
 *   items go back, so an item is never acknowledged once the path no longer names the file
 *   it was committed to.
 * - The error-log hook only counts (one atomic add and a copy under a lock): it runs on any
 *   thread, inside SQLite. SQLite's log is the process's, not a connection's: a corruption
 *   report fails every store open in the process (a collector has one; tests may have more).
 */
#include "collector/store/sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "collector/log.h"
#include "common/clock.h"

/* Salvaged copies are named PATH.salvaged-1 .. -SALVAGE_MAX. */
#define SALVAGE_MAX 99

/* The start-up check stops after this long and says so (the rest is checked as it is read). */
#define CHECK_BUDGET_NS (10ull * 1000000000ull)

/* --- corruption reported by any connection ------------------------------------------------ */

static _Atomic uint64_t corruption_reports;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static char report_text[160]; /* the latest, under report_lock */

static void error_log(void *ctx, int code, const char *msg)
{
    (void)ctx;
    int primary = code & 0xff;
    if (primary != SQLITE_CORRUPT && primary != SQLITE_NOTADB) {
        return;
    }
    pthread_mutex_lock(&report_lock);
    snprintf(report_text, sizeof report_text, "%s (%s)", sqlite3_errstr(code), msg ? msg : "");
    pthread_mutex_unlock(&report_lock);
    atomic_fetch_add_explicit(&corruption_reports, 1, memory_order_release);
}

static void install_log(void)
{
    /* Only possible before SQLite initialises; when it already has (a test program that
     * opened a database first), corruption is still found by the writer's own statements. */
    sqlite3_config(SQLITE_CONFIG_LOG, error_log, NULL);
}

void sqlite_health_global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_log);
}

/* --- the check at start -------------------------------------------------------------------- */

static int progress(void *arg)
{
    return tt__mono_ns() > *(const uint64_t *)arg;
}

static void damaged(const char *path, const char *why, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "%s is damaged (%s); telltale serve does not write to a damaged store. Keep it "
             "aside: move %s and its -wal and -shm files to another name, then start again "
             "(an empty store; agents resend what was never acknowledged), after salvaging "
             "what is readable into %s with sqlite3's .dump if you want it "
             "(docs/operations.md, \"Store failures\", has the command)",
             path, why, path, path);
}

static int check_header(const char *path, off_t size, char *err, size_t errlen)
{
    static const char magic[16] = "SQLite format 3";
    char head[100];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = size >= (off_t)sizeof head ? pread(fd, head, sizeof head, 0) : 0;
    close(fd);
    if (n != (ssize_t)sizeof head || memcmp(head, magic, sizeof magic) != 0) {
        damaged(path, "no SQLite header", err, errlen);
        return -1;
    }
    return 0;
}

int sqlite_check_at_start(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    }
    if (st.st_size == 0) {
        return 0; /* SQLite makes an empty file a new database */
    }
    if (check_header(path, st.st_size, err, errlen) != 0) {
        return -1;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    uint64_t t0 = tt__mono_ns(), deadline = t0 + CHECK_BUDGET_NS;
    char result[200] = "";
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        /* Closing this connection must not checkpoint: the check only reads. */
        sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
        sqlite3_progress_handler(db, 10000, progress, &deadline);
        sqlite3_stmt *q = NULL;
        rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &q, NULL);
        /* The first rows say enough ("ok", or the first problems found), on one line. */
        size_t off = 0;
        for (int i = 0; rc == SQLITE_OK && i < 4 && (rc = sqlite3_step(q)) == SQLITE_ROW; i++) {
            const char *row = (const char *)sqlite3_column_text(q, 0);
            if (off < sizeof result && strncmp(row ? row : "", "***", 3) != 0) {
                off += (size_t)snprintf(result + off, sizeof result - off, "%s%s", off ? "; " : "",
                                        row ? row : "");
            }
            rc = SQLITE_OK;
        }
        rc = rc == SQLITE_OK || rc == SQLITE_DONE ? SQLITE_ROW : rc;
        sqlite3_finalize(q);
    }
    int ret = 0;
    if (rc == SQLITE_INTERRUPT) {
        log_warn("store: the start-up check of %s stopped after %llu s (%lld MiB): the rest is "
                 "checked as it is read",
                 path, CHECK_BUDGET_NS / 1000000000ull, (long long)(st.st_size >> 20));
    } else if (rc != SQLITE_ROW) {
        damaged(path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), err, errlen);
        ret = -1;
    } else if (strcmp(result, "ok") != 0) {
        damaged(path, result, err, errlen);
        ret = -1;
    } else {
        log_info("store: start-up check of %s: ok (%lld KiB in %.1f ms)", path,
                 (long long)(st.st_size >> 10), (double)(tt__mono_ns() - t0) / 1e6);
    }
    sqlite3_close(db);
    return ret;
}

/* --- the open files ------------------------------------------------------------------------ */

void sqlite_health_init(struct sqlite_health *h, const char *path)
{
    memset(h, 0, sizeof *h);
    h->path = path;
    struct stat st;
    if (stat(path, &st) == 0) {
        h->dev = st.st_dev;
        h->ino = st.st_ino;
        h->known = 1;
    }
    char wal[PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", path);
    if (stat(wal, &st) == 0) {
        h->wal_dev = st.st_dev;
        h->wal_ino = st.st_ino;
        h->wal_known = 1;
    }
    h->reports = atomic_load_explicit(&corruption_reports, memory_order_acquire);
}

/* 0 while name is the file (dev, ino); else a reason into out. */
static int moved(const char *name, const char *shown, dev_t dev, ino_t ino, char *out, size_t n)
{
    struct stat st;
    if (stat(name, &st) != 0) {
        snprintf(out, n, "%s was %s while open", shown,
                 errno == ENOENT ? "deleted" : "made unreachable");
        return 1;
    }
    if (st.st_dev != dev || st.st_ino != ino) {
        snprintf(out, n, "%s was replaced by another file while open", shown);
        return 1;
    }
    return 0;
}

int sqlite_health_check(struct sqlite_health *h, char *out, size_t n)
{
    h->last_ns = tt__mono_ns();
    if (h->known && moved(h->path, h->path, h->dev, h->ino, out, n)) {
        return SQLITE_HEALTH_MOVED;
    }
    char wal[PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", h->path);
    if (h->wal_known && moved(wal, wal, h->wal_dev, h->wal_ino, out, n)) {
        return SQLITE_HEALTH_MOVED;
    }
    uint64_t seen = atomic_load_explicit(&corruption_reports, memory_order_acquire);
    if (seen != h->reports) {
        pthread_mutex_lock(&report_lock);
        snprintf(out, n, "%s is damaged: %s", h->path, report_text);
        pthread_mutex_unlock(&report_lock);
        return SQLITE_HEALTH_DAMAGED;
    }
    return 0;
}

/* --- salvage ------------------------------------------------------------------------------- */

int sqlite_salvage(sqlite3 *db, const char *path, char *saved, size_t n)
{
    int fd = -1;
    for (int i = 1; i <= SALVAGE_MAX && fd < 0; i++) {
        snprintf(saved, n, "%s.salvaged-%d", path, i);
        fd = open(saved, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 && errno != EEXIST) {
            break;
        }
    }
    if (fd < 0) {
        return -1;
    }
    close(fd);
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(saved, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", db, "main");
        rc = b ? sqlite3_backup_step(b, -1) : sqlite3_errcode(dst);
        int fin = sqlite3_backup_finish(b);
        rc = rc == SQLITE_DONE ? fin : rc;
    }
    sqlite3_close(dst);
    if (rc != SQLITE_OK) {
        unlink(saved);
        return -1;
    }
    return 0;
}

/* --- putting a salvage back ---------------------------------------------------------------- */

int sqlite_restore_salvage(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0 || errno != ENOENT) {
        return 0; /* a file is there: the operator decides what to do with a salvage */
    }
    char saved[PATH_MAX + 32], wal[PATH_MAX + 8], aside[PATH_MAX + 48];
    for (int i = SALVAGE_MAX; i >= 1; i--) {
        snprintf(saved, sizeof saved, "%s.salvaged-%d", path, i);
        if (lstat(saved, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        /* A WAL left without its database belongs to the file that went: keep it aside, so
         * that SQLite does not replay it onto the copy. */
        snprintf(wal, sizeof wal, "%s-wal", path);
        snprintf(aside, sizeof aside, "%s.orphaned-wal-%d", path, i);
        if (lstat(wal, &st) == 0 && rename(wal, aside) != 0) {
            return -1;
        }
        snprintf(wal, sizeof wal, "%s-shm", path);
        unlink(wal);
        if (rename(saved, path) != 0) {
            return -1;
        }
        log_warn("store: %s was missing: put back %s, the copy made when it was deleted while "
                 "the collector ran (to start on an empty store instead, remove the .salvaged "
                 "files first)",
                 path, saved);
        return 1;
    }
    return 0;
}

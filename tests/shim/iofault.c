/*
 * iofault.c - a test-only LD_PRELOAD shim that makes the disk under a real `telltale serve`
 * misbehave (tests/integration/test_dbfault.c; reliability scenarios S16 and S25). It is built
 * by the test makefile (mk/iofault.mk) into build/tests/libiofault.so and never linked into
 * telltale: a production collector has no fault hook at all.
 *
 * It watches the files whose path ends in TT_IOFAULT_FILE (default "telltale.db") or in that
 * name followed by "-wal" (the WAL), and, once armed (when the file TT_IOFAULT_ARM_FILE
 * exists, or TT_IOFAULT_ARM_MS after the process started, so that start-up is left alone),
 * does one of:
 *   TT_IOFAULT_FAIL_WRITE=N   the Nth write to them fails with EIO (once);
 *   TT_IOFAULT_FAIL_SYNC=N    the Nth fdatasync/fsync of them fails with EIO (once);
 *   TT_IOFAULT_KILL_DB_WRITE=N  SIGKILL at the Nth write to the database file itself, which
 *                             in WAL mode only a checkpoint writes: death during a checkpoint;
 *   TT_IOFAULT_POWER_LOSS=N   at the Nth write or sync, a power loss: every write not yet made
 *                             durable by a sync is undone (the old bytes put back, the file cut
 *                             back to its synced size), then SIGKILL;
 *   TT_IOFAULT_SLOW_SYNC_MS=N every fdatasync/fsync of them takes N ms more (a slow disk: a
 *                             commit stays in flight, test_otlp.c's shutdown under a request).
 * For the power loss it keeps, per file (device and inode, whatever the descriptor), an undo
 * log of the writes since the last sync of that file. What it does not model: directory
 * entries (a file created and not yet synced in its directory stays), and torn sectors.
 * Each event is told on stderr ("iofault: ...") so that the test log shows where it struck.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 4096
#define MAX_FILES 8

struct undo {
    off_t off;
    size_t len;
    unsigned char *old; /* len bytes, or fewer when the write extended the file */
    size_t old_len;
};

struct file {
    dev_t dev;
    ino_t ino;
    int is_db; /* the database file itself (not the WAL) */
    off_t synced_size;
    struct undo *log;
    size_t n, cap;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct file files[MAX_FILES];
static int n_files;
static signed char fd_file[MAX_FD]; /* index into files + 1; 0: not watched */

static int (*real_open64)(const char *, int, ...);
static int (*real_open)(const char *, int, ...);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);
static int (*real_close)(int);

static char name[256] = "telltale.db";
static long fail_write, fail_sync, kill_db_write, power_loss, slow_sync_ms;
static long writes, syncs, db_writes, ops;
static struct timespec armed_at;
static char arm_file[512];
static int arm_seen;

static void say(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) {
        ssize_t w = real_write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
    }
}

static long env_long(const char *k)
{
    const char *v = getenv(k);
    return v ? strtol(v, NULL, 10) : 0;
}

__attribute__((constructor)) static void init(void)
{
    real_open64 = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open64");
    real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    real_pwrite64 = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
    const char *f = getenv("TT_IOFAULT_FILE");
    if (f && strlen(f) < sizeof name) {
        snprintf(name, sizeof name, "%s", f);
    }
    fail_write = env_long("TT_IOFAULT_FAIL_WRITE");
    fail_sync = env_long("TT_IOFAULT_FAIL_SYNC");
    kill_db_write = env_long("TT_IOFAULT_KILL_DB_WRITE");
    power_loss = env_long("TT_IOFAULT_POWER_LOSS");
    slow_sync_ms = env_long("TT_IOFAULT_SLOW_SYNC_MS");
    const char *af = getenv("TT_IOFAULT_ARM_FILE");
    if (af && strlen(af) < sizeof arm_file) {
        snprintf(arm_file, sizeof arm_file, "%s", af);
    }
    long ms = env_long("TT_IOFAULT_ARM_MS");
    clock_gettime(CLOCK_MONOTONIC, &armed_at);
    armed_at.tv_sec += ms / 1000;
    armed_at.tv_nsec += (ms % 1000) * 1000000;
    if (armed_at.tv_nsec >= 1000000000) {
        armed_at.tv_sec++;
        armed_at.tv_nsec -= 1000000000;
    }
}

static int armed(void)
{
    if (arm_file[0]) {
        /* Armed once the file exists (the collector's ready file: start-up is over). */
        if (!arm_seen && access(arm_file, F_OK) == 0) {
            arm_seen = 1;
            say("iofault: armed\n");
        }
        return arm_seen;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > armed_at.tv_sec ||
           (now.tv_sec == armed_at.tv_sec && now.tv_nsec >= armed_at.tv_nsec);
}

/* 1 for the database file, 2 for its WAL, 0 for anything else. */
static int kind_of(const char *path)
{
    size_t pl = strlen(path), nl = strlen(name);
    if (pl >= nl && strcmp(path + pl - nl, name) == 0) {
        return 1;
    }
    if (pl >= nl + 4 && strncmp(path + pl - nl - 4, name, nl) == 0 &&
        strcmp(path + pl - 4, "-wal") == 0) {
        return 2;
    }
    return 0;
}

static void watch(int fd, const char *path)
{
    int kind = path ? kind_of(path) : 0;
    struct stat st;
    if (fd < 0 || fd >= MAX_FD || !kind || fstat(fd, &st) != 0) {
        return;
    }
    pthread_mutex_lock(&lock);
    int i = 0;
    while (i < n_files && (files[i].dev != st.st_dev || files[i].ino != st.st_ino)) {
        i++;
    }
    if (i == n_files && n_files < MAX_FILES) {
        files[i].dev = st.st_dev;
        files[i].ino = st.st_ino;
        files[i].is_db = kind == 1;
        files[i].synced_size = st.st_size; /* what exists when first seen counts as durable */
        n_files++;
    }
    if (i < MAX_FILES) {
        fd_file[fd] = (signed char)(i + 1);
    }
    pthread_mutex_unlock(&lock);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_open64(path, flags, mode);
    watch(fd, path);
    return fd;
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_open(path, flags, mode);
    watch(fd, path);
    return fd;
}

int close(int fd)
{
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&lock);
        fd_file[fd] = 0;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

/* The power goes: undo what was not synced, newest first, then die. Called under lock. */
static void lose_power(int fd_hint)
{
    (void)fd_hint;
    for (int i = 0; i < n_files; i++) {
        struct file *f = &files[i];
        int fd = -1;
        for (int d = 0; d < MAX_FD && fd < 0; d++) {
            if (fd_file[d] == i + 1) {
                fd = d;
            }
        }
        if (fd < 0) {
            continue;
        }
        for (size_t k = f->n; k-- > 0;) {
            struct undo *u = &f->log[k];
            if (u->old_len) {
                ssize_t w = real_pwrite64(fd, u->old, u->old_len, u->off);
                (void)w;
            }
        }
        if (ftruncate(fd, f->synced_size) != 0) {
            say("iofault: ftruncate: %s\n", strerror(errno));
        }
        say("iofault: power loss: %zu unsynced writes undone in file %d (%s)\n", f->n, i,
            f->is_db ? "database" : "WAL");
    }
    kill(getpid(), SIGKILL);
}

static void remember(struct file *f, int fd, size_t len, off_t off)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return;
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 256;
        struct undo *n = realloc(f->log, cap * sizeof *n);
        if (!n) {
            return;
        }
        f->log = n;
        f->cap = cap;
    }
    struct undo *u = &f->log[f->n++];
    u->off = off;
    u->len = len;
    u->old_len = off < st.st_size ? (size_t)(st.st_size - off) : 0;
    if (u->old_len > len) {
        u->old_len = len;
    }
    u->old = u->old_len ? malloc(u->old_len) : NULL;
    if (u->old_len && (!u->old || pread(fd, u->old, u->old_len, off) != (ssize_t)u->old_len)) {
        u->old_len = 0;
    }
}

static void forget(struct file *f, int fd)
{
    struct stat st;
    for (size_t k = 0; k < f->n; k++) {
        free(f->log[k].old);
    }
    f->n = 0;
    if (fstat(fd, &st) == 0) {
        f->synced_size = st.st_size;
    }
}

/* Before a write of len bytes at off to fd: 0 to go on, -1 to fail it with EIO. */
static int before_write(int fd, size_t len, off_t off)
{
    if (fd < 0 || fd >= MAX_FD || !fd_file[fd]) {
        return 0;
    }
    pthread_mutex_lock(&lock);
    int idx = fd_file[fd] - 1;
    struct file *f = idx >= 0 ? &files[idx] : NULL;
    int ret = 0;
    if (f && armed()) {
        writes++;
        ops++;
        if (f->is_db) {
            db_writes++;
        }
        if (fail_write && writes == fail_write) {
            say("iofault: write %ld (%s) fails with EIO\n", writes, f->is_db ? "database" : "WAL");
            ret = -1;
        } else if (kill_db_write && f->is_db && db_writes == kill_db_write) {
            say("iofault: killed at database write %ld (a checkpoint)\n", db_writes);
            kill(getpid(), SIGKILL);
        } else if (power_loss && ops == power_loss) {
            say("iofault: power loss before write %ld\n", writes);
            lose_power(fd);
        }
    }
    if (f && ret == 0 && power_loss) {
        remember(f, fd, len, off);
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    if (before_write(fd, len, off) != 0) {
        errno = EIO;
        return -1;
    }
    return real_pwrite64(fd, buf, len, off);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    if (fd >= 0 && fd < MAX_FD && fd_file[fd]) {
        off_t off = lseek(fd, 0, SEEK_CUR);
        if (before_write(fd, len, off) != 0) {
            errno = EIO;
            return -1;
        }
    }
    return real_write(fd, buf, len);
}

static int sync_common(int fd, int (*real)(int))
{
    if (fd < 0 || fd >= MAX_FD || !fd_file[fd]) {
        return real(fd);
    }
    if (slow_sync_ms > 0) {
        pthread_mutex_lock(&lock);
        int slow = armed();
        pthread_mutex_unlock(&lock);
        if (slow) {
            struct timespec d = {slow_sync_ms / 1000, (slow_sync_ms % 1000) * 1000000};
            while (nanosleep(&d, &d) != 0 && errno == EINTR) {
            }
        }
    }
    pthread_mutex_lock(&lock);
    int idx = fd_file[fd] - 1;
    struct file *f = idx >= 0 ? &files[idx] : NULL;
    if (f && armed()) {
        syncs++;
        ops++;
        if (fail_sync && syncs == fail_sync) {
            say("iofault: sync %ld (%s) fails with EIO\n", syncs, f->is_db ? "database" : "WAL");
            pthread_mutex_unlock(&lock);
            errno = EIO;
            return -1;
        }
        if (power_loss && ops == power_loss) {
            say("iofault: power loss before sync %ld\n", syncs);
            lose_power(fd);
        }
    }
    int rc = real(fd);
    if (f && rc == 0) {
        forget(f, fd);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

int fdatasync(int fd)
{
    return sync_common(fd, real_fdatasync);
}

int fsync(int fd)
{
    return sync_common(fd, real_fsync);
}

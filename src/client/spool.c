/*
 * spool.c - the bounded on-disk spool of frames the collector has not acknowledged
 * (docs/design.md, "The spool"). Owned by the worker thread.
 *
 * Layout: <spool_dir>/<agent>/ (0700, opened with O_NOFOLLOW, refused if another user owns it
 * or if group/other may enter it) holds segment files named "<no:16 hex>-<instance:32 hex>.seg".
 * A segment is a 32-byte header (magic "TTSPOOL1", version, instance) and records:
 *
 *   u32 magic     TTR1 (live) or TTA1 (acknowledged: never replayed again)
 *   u32 len       frame bytes that follow the record header
 *   u32 n_events
 *   u32 dcrc      CRC-32C of the frame's body: the frame's own checksum (its prefix bytes 4..7),
 *                 copied, not computed again; checked on read with the frame's length
 *   u64 first_seq
 *   u32 before    events in the records written to this segment before this one (0 in
 *                 segments of versions before 0.2): a damaged stretch between two good records
 *                 held exactly next.before - (prev.before + prev.n_events) events, whatever
 *                 their sequence numbers (records are not in sequence order: the window is
 *                 spooled at close after newer frames)
 *   u32 hcrc      CRC-32C of bytes 4..28 of the record header
 *
 * The magic is outside both checksums: acknowledging a record overwrites it in place (one
 * 4-byte pwrite), so a record acknowledged before a crash is not sent again by the next process.
 *
 * INVARIANTS
 * - Every segment this process holds is flock()ed by it: two live processes of the same agent
 *   never replay the same leftover segment; a segment nobody holds is a leftover.
 * - bytes (the sum of segment sizes) never exceeds max_bytes after an append returns.
 * - An own event is counted once: in ws.in_spool while on disk and not in flight, then acked
 *   (by the worker), or dropped[spool_full | spool_corrupt]. Events of earlier processes are
 *   counted as ws.inherited when first read, then settle the same way.
 * - Records are handed out in segment order, then file order; acks come back in that order
 *   (the window is acknowledged cumulatively), so in-flight records form a FIFO.
 * - A forked child forgets every segment of the parent (closing its copies of the fds) and
 *   writes only segments named after its own instance.
 */
#include "client/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/crc32c.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define ADD(x, v) ST(x, LD(x) + (v))

#define SEG_HDR 32u
#define REC_HDR 32u
#define REC_LIVE 0x31525454u   /* "TTR1" little-endian */
#define REC_ACKED 0x31415454u  /* "TTA1" */
#define REC_MAX (64u << 20)    /* larger than any frame the worker makes */
#define RETRY_NS 1000000000ull /* after a write error, try the disk again after this */
#define SYNC_NS 1000000000ull  /* dirty segments are synced at least this often */
static const char seg_magic[8] = {'T', 'T', 'S', 'P', 'O', 'O', 'L', '1'};

struct seg {
    uint64_t no;
    uint8_t inst[16];
    int own; /* written by this process */
    int fd;
    uint64_t size;        /* bytes in the file (own: the logical end) */
    uint64_t read_off;    /* next record to hand out */
    uint64_t counted_off; /* leftovers: records before this were counted as inherited */
    uint64_t events;      /* own: events appended */
    uint64_t settled;     /* own: events handed out or counted lost */
    uint64_t next_before; /* leftovers: the "before" the next record should carry */
    int damaged;          /* leftovers: a damaged stretch since the last good header, uncounted */
    uint32_t inflight;
    int dirty; /* written since its last fdatasync */
    struct seg *next;
};

struct inflight {
    struct seg *seg;
    uint64_t off;
    uint64_t id;
    uint32_t n;
    struct inflight *next;
};

struct fault {
    int op; /* 0 none, 1 write fails, 2 fsync fails, 3 short write */
    uint64_t first, count, calls;
};

struct tt_spool {
    int dfd;
    uint64_t max_bytes, seg_max, bytes, next_no, next_id;
    int policy;
    uint8_t instance[16];
    struct seg *segs, *active;
    struct inflight *if_head, *if_tail;
    tt__wstats *ws;
    tt__wstats dummy;
    uint64_t retry_at; /* monotonic ns: appends refused until then after an error */
    int dirty;
    uint64_t synced_ns;
    struct fault fw, ff;
};

/* --- test-only fault injection --------------------------------------------------------------
 * TT_SPOOL_FAULT (read at open; for tests only, documented in docs/operations.md):
 *   write:N[:K]   the Nth..(N+K-1)th segment writes fail with ENOSPC (K defaults to 1)
 *   torn:N        the Nth write is torn: half the record lands, then the process is killed
 *                 (SIGKILL), as a crash in the middle of a write would leave it
 *   fsync:N[:K]   the Nth..(N+K-1)th fdatasync calls fail with EIO
 * Several may be given, separated by commas. */
static void parse_fault(struct tt_spool *s)
{
    const char *e = getenv("TT_SPOOL_FAULT");
    while (e && *e) {
        int op = !strncmp(e, "write:", 6)   ? 1
                 : !strncmp(e, "fsync:", 6) ? 2
                 : !strncmp(e, "torn:", 5)  ? 3
                                            : 0;
        if (!op) {
            return;
        }
        char *end;
        uint64_t n = strtoull(e + (op == 3 ? 5 : 6), &end, 10), k = 1;
        if (*end == ':') {
            k = strtoull(end + 1, &end, 10);
        }
        struct fault *f = op == 2 ? &s->ff : &s->fw;
        f->op = op;
        f->first = n;
        f->count = k;
        e = *end == ',' ? end + 1 : NULL;
    }
}

static int fault_hit(struct fault *f)
{
    f->calls++;
    return f->op && f->calls >= f->first && f->calls < f->first + f->count;
}

/* --- helpers ------------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}
static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void hex(char *out, const uint8_t *p, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++) {
        char ch = s[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0) {
            return -1;
        }
        if (i % 2 == 0) {
            out[i / 2] = (uint8_t)(v << 4);
        } else {
            out[i / 2] |= (uint8_t)v;
        }
    }
    return 0;
}

static void seg_name(char *out, size_t n, uint64_t no, const uint8_t inst[16])
{
    char h[33];
    hex(h, inst, 16);
    snprintf(out, n, "%016llx-%s.seg", (unsigned long long)no, h);
}

static int parse_name(const char *name, uint64_t *no, uint8_t inst[16])
{
    if (strlen(name) != 16 + 1 + 32 + 4 || name[16] != '-' || strcmp(name + 49, ".seg") != 0) {
        return -1;
    }
    uint8_t b[8];
    if (unhex(name, b, 8) != 0 || unhex(name + 17, inst, 16) != 0) {
        return -1;
    }
    *no = 0;
    for (int i = 0; i < 8; i++) {
        *no = (*no << 8) | b[i];
    }
    return 0;
}

/* The checksum a frame carries for its body (wire.h: u32 length, u32 CRC-32C, body). */
static uint32_t frame_crc(const uint8_t *frame, size_t len)
{
    return len >= 8 ? get32(frame + 4) : 0;
}

/* A frame read back is intact if its length field and its body's checksum agree with the
 * record header. */
static int frame_ok(const uint8_t *frame, size_t len, uint32_t dcrc)
{
    return len >= 8 && get32(frame) == len - 8 && get32(frame + 4) == dcrc &&
           tt__crc32c(0, frame + 8, len - 8) == dcrc;
}

static uint32_t hdr_crc(const uint8_t *h)
{
    return tt__crc32c(0, h + 4, 24);
}

static void seg_unlink(struct tt_spool *s, struct seg *g)
{
    char name[64];
    seg_name(name, sizeof name, g->no, g->inst);
    unlinkat(s->dfd, name, 0);
}

static void seg_free(struct tt_spool *s, struct seg *g, int unlink_it)
{
    for (struct seg **pp = &s->segs; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    if (s->active == g) {
        s->active = NULL;
    }
    if (unlink_it) {
        seg_unlink(s, g);
    }
    if (g->fd >= 0) {
        close(g->fd); /* also releases the flock */
    }
    s->bytes -= g->size;
    free(g);
}

/* Open a directory under dfd (AT_FDCWD for an absolute or relative path), creating it 0700;
 * refuses a symlink, another owner, or access for group or other. */
static int open_private_dir(int at, const char *path, int *out)
{
    if (mkdirat(at, path, 0700) != 0 && errno != EEXIST) {
        return -errno;
    }
    int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        struct stat ls;
        if (e == ELOOP ||
            (fstatat(at, path, &ls, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ls.st_mode))) {
            return TT_EPERM; /* a symlink: refused, never followed */
        }
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
        close(fd);
        return TT_EPERM;
    }
    *out = fd;
    return 0;
}

static void insert_sorted(struct tt_spool *s, struct seg *g)
{
    struct seg **pp = &s->segs;
    while (*pp && (*pp)->no <= g->no) {
        pp = &(*pp)->next;
    }
    g->next = *pp;
    *pp = g;
}

/* Leftover segments of earlier processes of the agent: claimed (flock) and queued. */
static void scan_leftovers(struct tt_spool *s)
{
    int fd = openat(s->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t no;
        uint8_t inst[16];
        if (parse_name(e->d_name, &no, inst) != 0) {
            continue;
        }
        if (no >= s->next_no) {
            s->next_no = no + 1;
        }
        int sfd = openat(s->dfd, e->d_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0) {
            continue;
        }
        struct stat st;
        if (flock(sfd, LOCK_EX | LOCK_NB) != 0 || fstat(sfd, &st) != 0 || !S_ISREG(st.st_mode)) {
            close(sfd); /* held by a live process of the same agent, or not a file */
            continue;
        }
        if ((uint64_t)st.st_size <= SEG_HDR) {
            unlinkat(s->dfd, e->d_name, 0); /* torn at creation, or empty */
            close(sfd);
            continue;
        }
        struct seg *g = calloc(1, sizeof *g);
        if (!g) {
            close(sfd);
            continue;
        }
        g->no = no;
        memcpy(g->inst, inst, 16);
        g->fd = sfd;
        g->size = (uint64_t)st.st_size;
        g->read_off = g->counted_off = SEG_HDR;
        s->bytes += g->size;
        insert_sorted(s, g);
    }
    closedir(d);
}

static void agent_dirname(char *out, size_t n, const char *agent)
{
    size_t i = 0;
    for (; agent[i] && i + 1 < n; i++) {
        char ch = agent[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '-' || ch == '_' || ch == '.';
        out[i] = ok ? ch : '_';
    }
    out[i] = 0;
    if (i == 0 || !strcmp(out, ".") || !strcmp(out, "..")) {
        snprintf(out, n, "_agent");
    }
}

int tt__spool_open(struct tt_spool **out, const char *dir, uint64_t max_bytes, int policy,
                   const char *agent, const uint8_t instance[16])
{
    *out = NULL;
    struct tt_spool *s = calloc(1, sizeof *s);
    if (!s) {
        return TT_ENOMEM;
    }
    s->ws = &s->dummy;
    s->max_bytes = max_bytes;
    s->policy = policy;
    /* Eviction and rotation work on segments: 16 of them make up the cap. */
    s->seg_max = TT_MIN(TT_MAX(max_bytes / 16, (uint64_t)16384), (uint64_t)64 << 20);
    memcpy(s->instance, instance, 16);
    s->next_no = 1;
    s->dfd = -1;
    parse_fault(s);
    int top = -1;
    int rc = open_private_dir(AT_FDCWD, dir, &top);
    if (rc == 0) {
        char name[256];
        agent_dirname(name, sizeof name, agent);
        rc = open_private_dir(top, name, &s->dfd);
        close(top);
    }
    if (rc != 0) {
        free(s);
        return rc;
    }
    scan_leftovers(s);
    s->synced_ns = tt__mono_ns();
    *out = s;
    return 0;
}

void tt__spool_close(struct tt_spool *s)
{
    if (!s) {
        return;
    }
    tt__spool_rewind(s);
    tt__spool_writeback(s);
    while (s->segs) {
        struct seg *g = s->segs;
        /* An own segment with nothing left to replay goes; the rest waits for the next run. */
        int empty = g->own && g->read_off >= g->size && g->inflight == 0;
        seg_free(s, g, empty || g->size <= SEG_HDR);
    }
    if (s->dfd >= 0) {
        close(s->dfd);
    }
    free(s);
}

void tt__spool_bind(struct tt_spool *s, tt__wstats *ws)
{
    if (s) {
        s->ws = ws;
    }
}

void tt__spool_after_fork(struct tt_spool *s, const uint8_t instance[16])
{
    /* The parent's segments, claims and in-flight records are the parent's: close our copies
     * of their fds (the parent keeps its locks) and start over under the new instance. */
    int may_free = tt__fork_child_may_free(); /* see client.h */
    while (s->if_head) {
        struct inflight *i = s->if_head;
        s->if_head = i->next;
        if (may_free) {
            free(i);
        }
    }
    s->if_tail = NULL;
    while (s->segs) {
        struct seg *g = s->segs;
        if (may_free) {
            seg_free(s, g, 0);
        } else {
            s->segs = g->next;
            if (g->fd >= 0) {
                close(g->fd);
            }
        }
    }
    s->bytes = 0;
    s->active = NULL;
    s->dirty = 0;
    s->retry_at = 0;
    s->ws = &s->dummy;
    memcpy(s->instance, instance, 16);
}

/* --- writing ------------------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    return tt__mono_ns();
}

static int new_segment(struct tt_spool *s)
{
    struct seg *g = calloc(1, sizeof *g);
    if (!g) {
        return TT_ENOMEM;
    }
    g->no = s->next_no++;
    memcpy(g->inst, s->instance, 16);
    g->own = 1;
    char name[64];
    seg_name(name, sizeof name, g->no, g->inst);
    g->fd = openat(s->dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (g->fd < 0) {
        int e = -errno;
        free(g);
        return e;
    }
    flock(g->fd, LOCK_EX | LOCK_NB);
    uint8_t h[SEG_HDR] = {0};
    memcpy(h, seg_magic, 8);
    put32(h + 8, 1);
    memcpy(h + 16, s->instance, 16);
    if (pwrite(g->fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        int e = errno ? -errno : TT_EIO;
        close(g->fd);
        unlinkat(s->dfd, name, 0);
        free(g);
        return e;
    }
    g->size = g->read_off = g->counted_off = SEG_HDR;
    s->bytes += SEG_HDR;
    insert_sorted(s, g);
    s->active = g;
    return 0;
}

/* Events left unread in a segment (leftovers: read from the record headers). */
static uint64_t seg_unread_events(const struct seg *g, uint64_t *unknown)
{
    if (g->own) {
        return g->events - g->settled;
    }
    uint64_t n = 0, off = g->read_off;
    uint8_t h[REC_HDR];
    while (off + REC_HDR <= g->size) {
        if (pread(g->fd, h, REC_HDR, (off_t)off) != (ssize_t)REC_HDR ||
            hdr_crc(h) != get32(h + 28)) {
            (*unknown)++;
            break;
        }
        if (get32(h) == REC_LIVE && off >= g->counted_off) {
            n += get32(h + 8);
        }
        off += REC_HDR + get32(h + 4);
    }
    return n;
}

/* drop_oldest: give up the oldest segment that nothing is reading from. */
static int evict_one(struct tt_spool *s)
{
    for (struct seg *g = s->segs; g; g = g->next) {
        if (g == s->active || g->inflight) {
            continue;
        }
        uint64_t unknown = 0, n = seg_unread_events(g, &unknown);
        if (g->own) {
            ST(s->ws->in_spool, LD(s->ws->in_spool) - n);
        } else {
            ADD(s->ws->inherited, n + unknown);
        }
        ADD(s->ws->dropped[TT_DROP_SPOOL_FULL], n + unknown);
        seg_free(s, g, 1);
        return 0;
    }
    return -1;
}

int tt__spool_append(struct tt_spool *s, const tt__frame_out *f)
{
    uint64_t now = now_ns();
    uint64_t rec = REC_HDR + f->len;
    if (s->retry_at && now < s->retry_at) {
        ADD(s->ws->dropped[TT_DROP_SPOOL_ERROR], f->n_events);
        return TT_EIO;
    }
    s->retry_at = 0;
    if (rec + SEG_HDR > s->max_bytes || f->len > REC_MAX) {
        ADD(s->ws->dropped[TT_DROP_SPOOL_FULL], f->n_events);
        return TT_ENOSPC;
    }
    int need_new = !s->active || (s->active->size + rec > s->seg_max && s->active->size > SEG_HDR);
    uint64_t extra = rec + (need_new ? SEG_HDR : 0);
    while (s->bytes + extra > s->max_bytes) {
        if (s->policy != TT_SPOOL_DROP_OLDEST || evict_one(s) != 0) {
            ADD(s->ws->dropped[TT_DROP_SPOOL_FULL], f->n_events);
            return TT_ENOSPC;
        }
    }
    if (need_new) {
        if (s->active && s->active->dirty) {
            /* Start the cut segment's writeback now; the next sync (within a second, or at
             * close) waits for it. */
            sync_file_range(s->active->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        }
        int rc = new_segment(s);
        if (rc != 0) {
            ADD(s->ws->dropped[TT_DROP_SPOOL_ERROR], f->n_events);
            s->retry_at = now + RETRY_NS;
            return rc;
        }
    }
    struct seg *g = s->active;
    uint8_t h[REC_HDR] = {0};
    put32(h, REC_LIVE);
    put32(h + 4, (uint32_t)f->len);
    put32(h + 8, f->n_events);
    put32(h + 12, frame_crc(f->data, f->len));
    put64(h + 16, f->first_seq);
    put32(h + 24, (uint32_t)g->events);
    put32(h + 28, hdr_crc(h));
    struct iovec iov[2] = {{h, REC_HDR}, {f->data, f->len}};
    ssize_t want = (ssize_t)rec, k;
    if (fault_hit(&s->fw)) {
        if (s->fw.op == 3) {
            /* a torn write: the first half lands, then the process dies */
            iov[1].iov_len = f->len / 2;
            k = pwritev(g->fd, iov, 2, (off_t)g->size);
            raise(SIGKILL);
        }
        k = -1;
        errno = ENOSPC;
    } else {
        k = pwritev(g->fd, iov, 2, (off_t)g->size);
    }
    if (k != want) {
        int e = k < 0 ? errno : ENOSPC;
        /* Cut a partial record off so that the next one starts at a clean offset. */
        if (k != 0 && ftruncate(g->fd, (off_t)g->size) != 0) {
            /* The torn tail stays; a reader skips it by its checksums. */
        }
        ADD(s->ws->dropped[TT_DROP_SPOOL_ERROR], f->n_events);
        s->retry_at = now + RETRY_NS;
        return -e;
    }
    g->size += rec;
    g->events += f->n_events;
    s->bytes += rec;
    ADD(s->ws->in_spool, f->n_events);
    s->dirty = 1;
    g->dirty = 1;
    if (now - s->synced_ns >= SYNC_NS) {
        tt__spool_sync(s);
    }
    return 0;
}

int tt__spool_sync(struct tt_spool *s)
{
    if (!s || !s->dirty) {
        return 0;
    }
    s->synced_ns = now_ns();
    s->dirty = 0;
    int result = 0;
    for (struct seg *g = s->segs; g; g = g->next) {
        if (!g->dirty) {
            continue;
        }
        g->dirty = 0;
        int rc = fault_hit(&s->ff) ? (errno = EIO, -1) : fdatasync(g->fd);
        if (rc != 0) {
            /* What was written may not be on disk: start a new segment after a pause, and let
             * appends in the meantime be counted as spool_error. The records written are
             * still readable by this process. */
            result = -errno;
            s->retry_at = s->synced_ns + RETRY_NS;
            if (g == s->active) {
                s->active = NULL;
            }
        }
    }
    return result;
}

void tt__spool_writeback(struct tt_spool *s)
{
    for (struct seg *g = s ? s->segs : NULL; g; g = g->next) {
        if (g->dirty) {
            sync_file_range(g->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        }
    }
}

/* --- reading ------------------------------------------------------------------------------- */

static void count_corrupt(struct tt_spool *s, struct seg *g, uint64_t n)
{
    if (g->own) {
        ST(s->ws->in_spool, LD(s->ws->in_spool) - n);
        g->settled += n;
    } else {
        ADD(s->ws->inherited, n);
    }
    ADD(s->ws->dropped[TT_DROP_SPOOL_CORRUPT], n);
}

/* After a header that fails its check: the next offset where a valid record header starts,
 * or the end of the segment. */
static uint64_t resync(struct seg *g, uint64_t off)
{
    uint8_t buf[65536];
    uint64_t pos = off + 1;
    while (pos + REC_HDR <= g->size) {
        ssize_t k = pread(g->fd, buf, sizeof buf, (off_t)pos);
        if (k < (ssize_t)REC_HDR) {
            break;
        }
        for (ssize_t i = 0; i + (ssize_t)REC_HDR <= k; i++) {
            uint32_t m = get32(buf + i);
            if ((m == REC_LIVE || m == REC_ACKED) && hdr_crc(buf + i) == get32(buf + i + 28) &&
                get32(buf + i + 4) <= REC_MAX) {
                return pos + (uint64_t)i;
            }
        }
        pos += (uint64_t)k - REC_HDR + 1;
    }
    return g->size;
}

/* A good record header of a leftover after a damaged stretch: count the events the stretch
 * held, from the records' "before" fields; 1 when they cannot tell (an older segment). */
static void count_damaged(struct tt_spool *s, struct seg *g, uint32_t before)
{
    if (!g->damaged) {
        return;
    }
    uint64_t lost = 1; /* unknown: counts not written (older segments) or inconsistent */
    if (before > g->next_before) {
        lost = before - g->next_before;
    } else if (before == g->next_before && before > 0) {
        lost = 0; /* junk without events (a failed write, counted then as spool_error) */
    }
    if (lost) {
        count_corrupt(s, g, lost);
    }
    g->damaged = 0;
}

/* The segment has been read to its end: own events never read are lost; a leftover's damaged
 * tail held an unknown number (counted as one). */
static void seg_read_done(struct tt_spool *s, struct seg *g)
{
    if (g->own && g != s->active && g->settled < g->events) {
        count_corrupt(s, g, g->events - g->settled);
    }
    if (!g->own && g->damaged) {
        count_corrupt(s, g, 1);
        g->damaged = 0;
    }
}

static void gc_segments(struct tt_spool *s)
{
    for (struct seg *g = s->segs, *next; g; g = next) {
        next = g->next;
        if (g != s->active && g->read_off >= g->size && g->inflight == 0) {
            seg_read_done(s, g);
            seg_free(s, g, 1);
        }
    }
}

tt__frame_out *tt__spool_next(struct tt_spool *s)
{
    if (!s) {
        return NULL;
    }
    for (struct seg *g = s->segs; g; g = g->next) {
        while (g->read_off + REC_HDR <= g->size) {
            uint64_t off = g->read_off;
            uint8_t h[REC_HDR];
            if (pread(g->fd, h, REC_HDR, (off_t)off) != (ssize_t)REC_HDR) {
                g->read_off = g->size;
                break;
            }
            uint32_t magic = get32(h), len = get32(h + 4), n = get32(h + 8);
            if ((magic != REC_LIVE && magic != REC_ACKED) || hdr_crc(h) != get32(h + 28) ||
                len > REC_MAX) {
                /* A damaged header: how many events it held is unknown here (own segments
                 * learn it at their end); a leftover learns it from the next good header. */
                if (!g->own && off >= g->counted_off) {
                    g->damaged = 1;
                }
                g->read_off = resync(g, off);
                if (g->read_off > g->counted_off) {
                    g->counted_off = g->read_off;
                }
                continue;
            }
            uint64_t end = off + REC_HDR + len;
            int fresh = off >= g->counted_off;
            if (!g->own) {
                count_damaged(s, g, get32(h + 24));
                g->next_before = (uint64_t)get32(h + 24) + n;
            }
            if (fresh && !g->own) {
                g->counted_off = end;
            }
            if (magic == REC_ACKED) {
                g->read_off = end;
                continue;
            }
            if (end > g->size) {
                /* A torn tail: the header made it, the frame did not. */
                if (fresh || g->own) {
                    count_corrupt(s, g, n);
                }
                g->read_off = g->size;
                break;
            }
            tt__frame_out *f = calloc(1, sizeof *f);
            struct inflight *i = calloc(1, sizeof *i);
            uint8_t *data = malloc(len ? len : 1);
            if (!f || !i || !data) {
                free(f);
                free(i);
                free(data);
                return NULL; /* try again later */
            }
            if (pread(g->fd, data, len, (off_t)(off + REC_HDR)) != (ssize_t)len ||
                !frame_ok(data, len, get32(h + 12))) {
                free(f);
                free(i);
                free(data);
                if (fresh || g->own) {
                    count_corrupt(s, g, n);
                }
                g->read_off = end;
                continue;
            }
            g->read_off = end;
            if (g->own) {
                ST(s->ws->in_spool, LD(s->ws->in_spool) - n);
                g->settled += n;
            } else if (fresh) {
                ADD(s->ws->inherited, n);
            } else {
                ST(s->ws->in_spool, LD(s->ws->in_spool) - n); /* read again after a rewind */
            }
            f->data = data;
            f->len = len;
            f->n_events = n;
            f->first_seq = get64(h + 16);
            memcpy(f->instance, g->inst, 16);
            f->from_spool = 1;
            f->spool_foreign = !g->own;
            f->spool_id = ++s->next_id;
            i->seg = g;
            i->off = off;
            i->id = f->spool_id;
            i->n = n;
            g->inflight++;
            if (s->if_tail) {
                s->if_tail->next = i;
            } else {
                s->if_head = i;
            }
            s->if_tail = i;
            return f;
        }
        if (!g->own && g->read_off < g->size && g->read_off + REC_HDR > g->size) {
            /* A header torn by a crash: fewer bytes than a header at the end. */
            if (g->read_off >= g->counted_off) {
                g->damaged = 1;
                g->counted_off = g->size;
            }
            g->read_off = g->size;
        }
    }
    gc_segments(s);
    return NULL;
}

void tt__spool_ack(struct tt_spool *s, uint64_t spool_id)
{
    if (!s) {
        return;
    }
    int freed = 0;
    while (s->if_head && s->if_head->id <= spool_id) {
        struct inflight *i = s->if_head;
        s->if_head = i->next;
        if (!s->if_head) {
            s->if_tail = NULL;
        }
        uint8_t m[4];
        put32(m, REC_ACKED);
        if (pwrite(i->seg->fd, m, 4, (off_t)i->off) != 4) {
            /* Not marked: a later process may send it again; the collector's dedup holds. */
        }
        if (--i->seg->inflight == 0) {
            freed = 1;
        }
        free(i);
    }
    if (freed) {
        gc_segments(s);
    }
}

void tt__spool_rewind(struct tt_spool *s)
{
    if (!s) {
        return;
    }
    while (s->if_head) {
        struct inflight *i = s->if_head;
        s->if_head = i->next;
        struct seg *g = i->seg;
        if (i->off < g->read_off) {
            g->read_off = i->off;
        }
        if (g->own) {
            g->settled -= i->n;
        }
        ADD(s->ws->in_spool, i->n);
        g->inflight--;
        free(i);
    }
    s->if_tail = NULL;
}

uint64_t tt__spool_events(const struct tt_spool *s)
{
    return s ? LD(s->ws->in_spool) : 0;
}

uint64_t tt__spool_bytes(const struct tt_spool *s)
{
    return s ? s->bytes : 0;
}

void tt__spool_tick(struct tt_spool *s, uint64_t now)
{
    if (s && s->dirty && now - s->synced_ns >= SYNC_NS) {
        tt__spool_sync(s);
    }
}

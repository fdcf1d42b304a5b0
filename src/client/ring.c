/*
 * ring.c - making, resetting and freeing the per-thread rings, and reading their counters. The
 * ring's protocol (reserve, commit, read, release and their memory orders) is inline in
 * ring.h, with its INVARIANTS.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "client/ring.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/*
 * A ring's bytes are mapped on their own and populated at once (MAP_POPULATE), never left to be
 * faulted in by the event calls. A page fault on an anonymous page takes the process's mmap
 * lock when the page's mapping is being changed or is new, and any thread that maps, unmaps
 * or remaps memory (the worker's allocator, the application's) holds that lock for writing:
 * the producer then sleeps in the fault until it is released. With malloc'd rings that was
 * seen as 1-3 voluntary context switches per 2M events (test_stream.c's stopped-collector
 * test): glibc put the worker's 260 KiB frame buffers in mappings right beside the ring, so
 * every mmap and mremap of a frame touched the ring's mapping while its first lap faulted.
 */
#if defined(__SANITIZE_ADDRESS__)
#define RING_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RING_ASAN 1
#endif
#endif

static uint8_t *data_map(uint64_t size)
{
    void *p =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
#ifdef RING_ASAN
    /* Under AddressSanitizer every access also reads the shadow bytes of its address, and the
     * runtime hands a new mapping's shadow back to the kernel: the event calls' first lap would
     * fault the shadow pages in, under the same mmap lock. One instrumented read per shadow page
     * (a shadow byte covers 8 bytes) maps them now. */
    volatile const uint8_t *b = p;
    for (uint64_t off = 0; off < size; off += 8 * 4096) {
        (void)b[off];
    }
#endif
    return p;
}

tt__ring *tt__ring_new(uint64_t size, uint64_t max_record, uint32_t id)
{
    tt__ring *r = aligned_alloc(TT_CACHELINE, sizeof *r);
    if (!r) {
        return NULL;
    }
    memset(r, 0, sizeof *r);
    r->size = size;
    r->data = data_map(size);
    if (!r->data) {
        free(r);
        return NULL;
    }
    r->mask = size - 1;
    r->max_record = max_record;
    r->id = id;
    return r;
}

void tt__ring_free(tt__ring *r)
{
    if (r) {
        if (r->data) {
            munmap(r->data, r->size);
        }
        free(r);
    }
}

void tt__ring_orphan(tt__ring *r)
{
    /* Pairs with the worker's acquire load of orphaned in tt__ring_reapable. */
    atomic_store_explicit(&r->orphaned, 1, memory_order_release);
}

int tt__ring_reapable(tt__ring *r)
{
    /* Pairs with the release store in tt__ring_orphan: after it, head is final. */
    if (!atomic_load_explicit(&r->orphaned, memory_order_acquire)) {
        return 0;
    }
    return atomic_load_explicit(&r->head, memory_order_acquire) == LD(r->tail);
}

__thread tt__ring_view tt__view __attribute__((tls_model("initial-exec")));

void tt__ring_view_set(tt__ring *r)
{
    tt__view.r = r;
    tt__view.data = r->data;
    tt__view.size = r->size;
    tt__view.mask = r->mask;
    tt__view.max_record = r->max_record;
    tt__view.head = atomic_load_explicit(&r->head, memory_order_relaxed);
    tt__view.limit = r->cached_tail + r->size;
    tt__view.committed = atomic_load_explicit(&r->committed, memory_order_relaxed);
}

void tt__ring_reset(tt__ring *r)
{
    if (tt__view.r == r) {
        tt__view.r = NULL; /* its head and counters change here */
    }
#ifdef MADV_POPULATE_WRITE
    /* After fork the ring's pages are shared with the parent until written: copy them now
     * rather than in the child's next event calls (see data_map). */
    madvise(r->data, r->size, MADV_POPULATE_WRITE);
#endif
    atomic_store(&r->tail, atomic_load(&r->head));
    r->cached_tail = atomic_load(&r->head);
    atomic_store(&r->committed, 0);
    atomic_store(&r->drained, 0);
    atomic_store(&r->dropped_full, 0);
    atomic_store(&r->dropped_large, 0);
}

void tt__ring_counts_get(tt__ring *r, tt__ring_counts *out)
{
    out->committed = LD(r->committed);
    out->drained = LD(r->drained);
    out->dropped_full = LD(r->dropped_full);
    out->dropped_large = LD(r->dropped_large);
}

uint64_t tt__ring_settle(tt__ring *r)
{
    uint64_t committed = LD(r->committed), drained = LD(r->drained);
    if (committed <= drained) {
        return 0;
    }
    atomic_store_explicit(&r->drained, committed, memory_order_relaxed);
    return committed - drained;
}

/*
 * site.c - the registry of TT_LOG's call sites (include/telltale.h, tt_log_at).
 *
 * A site's message, keys and types are copied here at its first call, into an entry that is
 * never freed nor changed, and the site receives the entry's number. Its events then carry the
 * number in place of those strings, and the worker's encoder (encode.c) reads them back from
 * the entry. The registry is process-wide (a site may serve several clients) and lock-free: a
 * slot is claimed with one atomic add and published with a release store; two threads that
 * register one site at once each fill a slot, and the site keeps the first number set (the
 * other slot stays unused). At most TT__SITES_MAX sites: past that, a site's events go through
 * tt_log whole.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

static _Atomic(tt__site_entry *) sites[TT__SITES_MAX];
static _Atomic uint32_t nsites;

/* The longest message or key a site takes (longer: its events go through tt_log, which
 * counts them as too large when they are). */
#define SITE_STR_MAX (1u << 20)

static int site_valid(const tt_log_site *site)
{
    if (site->abi != TT_LOG_SITE_ABI || site->nattrs > TT_LOG_MAX_ATTRS || !site->message ||
        (site->nattrs && (!site->keys || !site->types))) {
        return 0;
    }
    for (uint32_t i = 0; i < site->nattrs; i++) {
        if (!site->keys[i] || site->types[i] < TT_ATTR_STR || site->types[i] > TT_ATTR_BOOL) {
            return 0;
        }
    }
    return 1;
}

uint32_t tt__site_register(tt_log_site *site)
{
    if (!site_valid(site)) {
        return TT__SITE_INVALID;
    }
    /* fixed: the bytes of the event as tt_log writes it (emit.c) but the session's and the
     * string values' 4-byte lengths and bytes: the message, the attribute count, each key and
     * type, each other value (8 bytes, a bool 1). */
    size_t ml = strnlen(site->message, SITE_STR_MAX + 1), kl[TT_LOG_MAX_ATTRS];
    size_t total = ml + 1, fixed = 4 + ml + 4;
    uint32_t strs = 0;
    int too_long = ml > SITE_STR_MAX;
    for (uint32_t i = 0; i < site->nattrs; i++) {
        kl[i] = strnlen(site->keys[i], SITE_STR_MAX + 1);
        too_long |= kl[i] > SITE_STR_MAX;
        total += kl[i] + 1;
        fixed += 4 + kl[i] + 1;
        if (site->types[i] == TT_ATTR_STR) {
            strs++;
        } else {
            fixed += site->types[i] == TT_ATTR_BOOL ? 1 : 8;
        }
    }
    if (too_long) {
        __atomic_store_n(&site->id, TT__SITE_WHOLE, __ATOMIC_RELEASE);
        return TT__SITE_WHOLE;
    }
    tt__site_entry *e = malloc(sizeof *e + total);
    if (!e) {
        return 0; /* tried again at the next call */
    }
    e->nattrs = site->nattrs;
    char *d = e->data;
    e->message = d;
    e->message_len = (uint32_t)ml;
    memcpy(d, site->message, ml + 1);
    d += ml + 1;
    for (uint32_t i = 0; i < site->nattrs; i++) {
        e->keys[i] = d;
        e->key_len[i] = (uint32_t)kl[i];
        e->types[i] = site->types[i];
        memcpy(d, site->keys[i], kl[i] + 1);
        d += kl[i] + 1;
    }
    uint32_t slot = atomic_fetch_add_explicit(&nsites, 1, memory_order_relaxed);
    if (slot >= TT__SITES_MAX) {
        free(e);
        __atomic_store_n(&site->id, TT__SITE_WHOLE, __ATOMIC_RELEASE);
        return TT__SITE_WHOLE;
    }
    atomic_store_explicit(&sites[slot], e, memory_order_release);
    __atomic_store_n(&site->fixed, (uint32_t)fixed, __ATOMIC_RELAXED);
    __atomic_store_n(&site->strs, strs, __ATOMIC_RELAXED);
    uint32_t expected = 0;
    __atomic_compare_exchange_n(&site->id, &expected, slot + 1, 0, __ATOMIC_RELEASE,
                                __ATOMIC_ACQUIRE);
    return expected ? expected : slot + 1;
}

const tt__site_entry *tt__site_get(uint32_t id)
{
    if (id == 0 || id > TT__SITES_MAX) {
        return NULL;
    }
    return atomic_load_explicit(&sites[id - 1], memory_order_acquire);
}

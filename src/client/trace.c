/*
 * trace.c - W3C trace context (trace.h): the traceparent parser, the per-session defaults and
 * the calls of telltale.h's "Trace context" section that are not event calls.
 */
#include "client/trace.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

#define TRACE_SESSIONS 64u

struct tt__trace_sessions {
    uint32_t n;
    struct {
        uint32_t len;
        char session[256];
        uint8_t ctx[TT_TRACE_CTX_BYTES];
    } e[TRACE_SESSIONS];
};

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    return -1; /* uppercase is refused, as the specification says */
}

static int hex_bytes(const char *s, uint8_t *out, size_t n)
{
    uint8_t any = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hi < 0 ? -1 : hexval(s[2 * i + 1]);
        if (lo < 0) {
            return -1;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
        any |= out[i];
    }
    return any ? 0 : -1; /* all zero is invalid */
}

int tt__traceparent_parse(const char *s, uint8_t ctx[TT_TRACE_CTX_BYTES])
{
    if (!s) {
        return TT_EINVAL;
    }
    size_t n = strnlen(s, 57);
    uint8_t ver, span[8], flags;
    if (n < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || hexval(s[0]) < 0 ||
        hexval(s[1]) < 0 || hexval(s[53]) < 0 || hexval(s[54]) < 0) {
        return TT_EINVAL;
    }
    ver = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
    flags = (uint8_t)(hexval(s[53]) << 4 | hexval(s[54]));
    (void)flags;
    /* Version 00 is exactly 55 characters; a later version may add fields after a '-'. */
    if (ver == 0xff || (ver == 0 && n != 55) || (ver != 0 && n > 55 && s[55] != '-')) {
        return TT_EINVAL;
    }
    if (hex_bytes(s + 3, ctx, 16) != 0 || hex_bytes(s + 36, span, 8) != 0) {
        return TT_EINVAL;
    }
    uint64_t p = 0;
    for (int i = 0; i < 8; i++) {
        p = p << 8 | span[i];
    }
    memcpy(ctx + 16, &p, 8);
    return 0;
}

TT_API int tt_traceparent_check(const char *traceparent)
{
    uint8_t ctx[TT_TRACE_CTX_BYTES];
    return tt__traceparent_parse(traceparent, ctx);
}

TT_API int tt_session_traceparent(tt_client *c, const char *session, const char *traceparent)
{
    size_t len = session ? strlen(session) : 0;
    uint8_t ctx[TT_TRACE_CTX_BYTES];
    if (!c || len > 255 || (traceparent && tt__traceparent_parse(traceparent, ctx) != 0)) {
        return TT_EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&c->trace_lock);
    struct tt__trace_sessions *t = c->trace_sessions;
    if (!t && traceparent) {
        t = c->trace_sessions = calloc(1, sizeof *t);
    }
    if (!t) {
        rc = traceparent ? TT_ENOMEM : 0;
        goto out;
    }
    uint32_t i = 0;
    while (i < t->n &&
           !(t->e[i].len == len && (len == 0 || memcmp(t->e[i].session, session, len) == 0))) {
        i++;
    }
    if (!traceparent) {
        if (i < t->n) {
            t->e[i] = t->e[--t->n];
        }
    } else if (i == t->n && t->n == TRACE_SESSIONS) {
        rc = TT_ENOSPC;
    } else {
        t->e[i].len = (uint32_t)len;
        if (len) {
            memcpy(t->e[i].session, session, len);
        }
        memcpy(t->e[i].ctx, ctx, sizeof ctx);
        t->n += i == t->n;
    }
out:
    atomic_store_explicit(&c->trace_defaults, t ? t->n : 0, memory_order_release);
    pthread_mutex_unlock(&c->trace_lock);
    return rc;
}

int tt__trace_session_ctx(tt_client *c, const uint8_t *session, uint32_t len,
                          uint8_t ctx[TT_TRACE_CTX_BYTES])
{
    int found = 0;
    if (atomic_load_explicit(&c->trace_defaults, memory_order_acquire) == 0) {
        return 0; /* the common case: no default, no lock */
    }
    pthread_mutex_lock(&c->trace_lock);
    struct tt__trace_sessions *t = c->trace_sessions;
    /* The session's own default first, then the client-wide one (session ""). */
    for (int pass = 0; t && pass < 2 && !found; pass++) {
        uint32_t want = pass ? 0 : len;
        if (pass && len == 0) {
            break;
        }
        for (uint32_t i = 0; i < t->n; i++) {
            if (t->e[i].len == want && (want == 0 || memcmp(t->e[i].session, session, want) == 0)) {
                memcpy(ctx, t->e[i].ctx, TT_TRACE_CTX_BYTES);
                found = 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->trace_lock);
    return found;
}

void tt__trace_fini(tt_client *c)
{
    free(c->trace_sessions);
    c->trace_sessions = NULL;
}

TT_API uint64_t tt_step_span_id(const tt_client *c, const tt_step *step)
{
    return c && step && step->id ? tt__step_span(c->instance, step->id) : 0;
}

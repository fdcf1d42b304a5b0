/*
 * store.c - the store seam's dispatch (store.h): the table of implementations, the choice by
 * URL scheme, and the calls that go through each store's ops table. What is the same for
 * every implementation (filters, cursors, sync level names, error classes) lives here too.
 */
#include "collector/store/store.h"

#include "collector/store/queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One row per implementation; the first is the default. */
static const struct store_ops *const impls[] = {&store_sqlite_ops, &store_postgres_ops};

#define N_IMPLS (sizeof impls / sizeof impls[0])

/* Whether url names scheme: "scheme" alone, or "scheme:..." (which covers "scheme://..."). */
static int scheme_matches(const char *url, const char *scheme)
{
    size_t n = strlen(scheme);
    return strncmp(url, scheme, n) == 0 && (url[n] == 0 || url[n] == ':');
}

void store_url_redact(const char *url, char *out, size_t n)
{
    const char *auth = strstr(url, "://");
    const char *at = NULL, *colon = NULL;
    if (auth) {
        auth += 3;
        size_t span = strcspn(auth, "/?#");
        for (const char *p = auth; p < auth + span; p++) {
            at = *p == '@' ? p : at; /* the last '@' before the path ends the user information */
        }
        colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    }
    if (!colon) {
        snprintf(out, n, "%s", url);
        return;
    }
    size_t keep = (size_t)(colon - url);
    snprintf(out, n, "%.*s:***%s", keep > 4096 ? 4096 : (int)keep, url, at);
}

const char *store_lacks(const struct store *s)
{
    return s->ops->lacks ? s->ops->lacks : "";
}

int store_open(struct store **out, const struct store_config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    const char *url = cfg->url && *cfg->url ? cfg->url : STORE_DEFAULT_URL;
    for (size_t i = 0; i < N_IMPLS; i++) {
        if (scheme_matches(url, impls[i]->scheme) ||
            (impls[i]->alias && scheme_matches(url, impls[i]->alias))) {
            return impls[i]->open(out, cfg, err, errlen);
        }
    }
    char shown[128];
    store_url_redact(url, shown, sizeof shown);
    size_t off =
        (size_t)snprintf(err, errlen, "unknown store \"%.100s\": this telltale knows", shown);
    for (size_t i = 0; i < N_IMPLS && off < errlen; i++) {
        off += (size_t)snprintf(err + off, errlen - off, "%s %s", i ? "," : "", impls[i]->scheme);
    }
    return -EINVAL;
}

int store_start(struct store *s)
{
    return s->ops->start(s);
}

void store_close(struct store *s)
{
    if (s) {
        s->ops->close(s);
    }
}

void store_describe(const struct store *s, char *out, size_t n)
{
    s->ops->describe(s, out, n);
}

int store_failure(struct store *s, char *out, size_t n)
{
    return s->ops->failure(s, out, n);
}

const char *store_sync_name(int level)
{
    return level == SYNC_FULL ? "full" : level == SYNC_NORMAL ? "normal" : "off";
}

int store_error_class(int rc)
{
    switch (rc) {
    case 0:
        return STORE_ERR_NONE;
    case -EAGAIN:
    case -EBUSY:
    case -ENOSPC:
    case -ENOMEM:
        return STORE_ERR_TRANSIENT;
    default:
        return rc > 0 ? STORE_ERR_NONE : STORE_ERR_FATAL;
    }
}

const char store_reason_not_owner[] =
    "agent name or instance belongs to another identity (docs/security.md)";

int store_reason_is_ownership(const char *reason)
{
    return reason == store_reason_not_owner;
}

void store_item_free(struct store_item *it)
{
    if (it) {
        free(it->raw);
        free(it->blob);
        free(it);
    }
}

/* --- the write path ------------------------------------------------------------------------ */

void store_submit(struct store *s, struct store_item *it)
{
    store_queue_submit(s->queue, it);
}

struct store_item *store_take_done(struct store *s)
{
    return store_queue_take_done(s->queue);
}

int store_done_fd(const struct store *s)
{
    return s->queue->done_fd;
}

size_t store_pending_bytes(struct store *s)
{
    return store_queue_pending_bytes(s->queue);
}

/* --- events -------------------------------------------------------------------------------- */

void store_filter_init(struct store_filter *f)
{
    memset(f, 0, sizeof *f);
    f->since = INT64_MIN;
    f->until = INT64_MAX;
}

int store_cursor_parse(struct store_filter *f, const char *s)
{
    char *end;
    errno = 0;
    long long frame = strtoll(s, &end, 10);
    if (errno || end == s || *end != '.' || frame < 0) {
        return -1;
    }
    const char *p = end + 1;
    unsigned long idx = strtoul(p, &end, 10);
    if (errno || end == p || *end || idx > UINT32_MAX) {
        return -1;
    }
    f->after_frame = frame;
    f->after_index = (uint32_t)idx;
    return 0;
}

int store_events_open(struct store *s, const struct store_filter *f, struct store_events **out,
                      char *err, size_t errlen)
{
    return s->ops->events_open(s, f, out, err, errlen);
}

int store_events_next(struct store_events *q, tt__event *ev, const char **agent,
                      const uint8_t **instance)
{
    return q->ops->events_next(q, ev, agent, instance);
}

void store_events_cursor(const struct store_events *q, char *out, size_t n)
{
    q->ops->events_cursor(q, out, n);
}

void store_events_close(struct store_events *q)
{
    if (q) {
        q->ops->events_close(q);
    }
}

int64_t store_events_count(struct store *s, const struct store_filter *f, char *err, size_t errlen)
{
    return s->ops->events_count(s, f, err, errlen);
}

/* --- readers ------------------------------------------------------------------------------- */

int store_read_open(struct store *s, struct store_read **out)
{
    *out = NULL;
    return s->ops->read_open(s, out);
}

void store_read_close(struct store_read *r)
{
    if (r) {
        r->store->ops->read_close(r);
    }
}

int store_agents(struct store_read *r, const char *name, store_agent_fn fn, void *ctx)
{
    return r->store->ops->agents(r, name, fn, ctx);
}

int store_agent_owner(struct store_read *r, const char *agent, char *out, size_t n)
{
    return r->store->ops->agent_owner(r, agent, out, n);
}

int store_sessions(struct store_read *r, const char *agent, uint64_t limit, store_session_fn fn,
                   void *ctx)
{
    return r->store->ops->sessions(r, agent, limit, fn, ctx);
}

int store_session_find(struct store_read *r, const char *id, const char *agent, uint64_t limit,
                       store_session_fn fn, void *ctx)
{
    return r->store->ops->session_find(r, id, agent, limit, fn, ctx);
}

int store_session_agents(struct store_read *r, const char *id, uint64_t limit, store_name_fn fn,
                         void *ctx)
{
    return r->store->ops->session_agents(r, id, limit, fn, ctx);
}

int store_session_steps(struct store_read *r, int64_t agent_key, const char *session,
                        store_step_fn fn, void *ctx)
{
    return r->store->ops->session_steps(r, agent_key, session, fn, ctx);
}

int store_session_responses(struct store_read *r, int64_t agent_key, const char *session,
                            uint64_t limit, store_id_fn fn, void *ctx)
{
    return r->store->ops->session_responses(r, agent_key, session, limit, fn, ctx);
}

int store_responses(struct store_read *r, const struct store_response_filter *f,
                    store_response_fn fn, void *ctx)
{
    return r->store->ops->responses(r, f, fn, ctx);
}

int store_response_tokens(struct store_read *r, int64_t instance_key, uint64_t id, store_blob_fn fn,
                          void *ctx)
{
    return r->store->ops->response_tokens(r, instance_key, id, fn, ctx);
}

int store_response_guard(struct store_read *r, int64_t instance_key, uint64_t id, store_guard_fn fn,
                         void *ctx)
{
    return r->store->ops->response_guard(r, instance_key, id, fn, ctx);
}

/* --- alerts -------------------------------------------------------------------------------- */

int store_alerts(struct store_read *r, const struct store_alert_filter *f, store_alert_fn fn,
                 void *ctx)
{
    return r->store->ops->alerts(r, f, fn, ctx);
}

int store_alert_add(struct store *s, const struct store_alert *al, int64_t *id)
{
    return s->ops->alert_add(s, al, id);
}

int store_alert_ack(struct store *s, int64_t id, int64_t now_ns, store_alert_fn fn, void *ctx)
{
    return s->ops->alert_ack(s, id, now_ns, fn, ctx);
}

int store_alert_put(struct store *s, const struct store_alert *al, int64_t *id)
{
    int64_t ignored;
    return s->ops->alert_put(s, al, id ? id : &ignored);
}

int64_t store_alert_max_id(struct store *s)
{
    return s->ops->alert_max_id(s);
}

/* --- following ---------------------------------------------------------------------------- */

int store_follow_open(struct store *s, struct store_follow **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!s->ops->follow_open) {
        snprintf(err, errlen, "the %s store is one collector's own: nothing to follow",
                 s->ops->scheme);
        return -ENOTSUP;
    }
    return s->ops->follow_open(s, out, err, errlen);
}

int store_follow_next(struct store_follow *f, int max, store_follow_fn fn, void *ctx)
{
    return f->ops->follow_next(f, max, fn, ctx);
}

int store_follow_lead(struct store_follow *f)
{
    return f->ops->follow_lead(f);
}

int store_follow_adopt(struct store_follow *f, const char *agent, const char *detector,
                       const char *key, int64_t local_id)
{
    return f->ops->follow_adopt(f, agent, detector, key, local_id);
}

int store_follow_settle(struct store_follow *f, const int64_t *keep, int n, int64_t now_ns)
{
    return f->ops->follow_settle(f, keep, n, now_ns);
}

void store_follow_close(struct store_follow *f)
{
    if (f) {
        f->ops->follow_close(f);
    }
}

/* --- hooks --------------------------------------------------------------------------------- */

int store_retention_run(struct store *s, const struct store_retention *policy, int64_t now_ns,
                        struct store_retention_report *out)
{
    memset(out, 0, sizeof *out);
    if (!s->ops->retention_run) {
        return -ENOTSUP;
    }
    return s->ops->retention_run(s, policy, now_ns, out);
}

int store_rollups(struct store_read *r, const struct store_rollup_query *q, store_rollup_fn fn,
                  void *ctx)
{
    if (!r->store->ops->rollups) {
        return -ENOTSUP;
    }
    return r->store->ops->rollups(r, q, fn, ctx);
}

int store_event_response(const tt__event *ev, uint64_t *id, uint32_t *verdict)
{
    *verdict = 0;
    if (ev->kind == TT_EV_RESPONSE_BEGIN) {
        tt__ev_response_begin m;
        if (tt__ev_response_begin_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            return 1;
        }
    } else if (ev->kind == TT_EV_RESPONSE_END) {
        tt__ev_response_end m;
        if (tt__ev_response_end_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            *verdict = m.verdict;
            return 1;
        }
    } else if (ev->kind == TT_EV_TOKENS) {
        tt__ev_tokens m;
        if (tt__ev_tokens_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            return 1;
        }
    } else if (ev->kind == TT_EV_GUARD) {
        tt__ev_guard m;
        if (tt__ev_guard_decode(ev->body, &m) == 0) {
            *id = m.response_id;
            *verdict = m.verdict;
            return 1;
        }
    }
    return 0;
}

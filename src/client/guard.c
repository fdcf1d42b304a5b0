/*
 * guard.c - the guard's shared state: the client's policy (config keys guard.*, changed at run
 * time with tt_guard_policy_set or by the collector) and the operator's halt orders.
 *
 * Producers never take the lock per token: a halt order bumps gen with a release store after
 * updating the tables under the lock, and a response compares gen with the value it saw last
 * (one acquire load); only when it changed does it take the lock to look its session up
 * (tt__guard_check in response.c). A session halt is sticky for this client (later responses in
 * the session are halted at their first token); a halt of every session halts the responses
 * begun before it, so the agent can carry on with new work afterwards.
 *
 * A resume order lifts a session's halt (or, for every session, all of them and an agent-wide
 * halt that has not reached a response yet): responses begun afterwards pass, and a response
 * that began while halted but has had no token yet looks again at its first one. A response
 * already halted stays halted (it is over). Orders apply in the order they arrive; a resume of a
 * session that is not halted changes nothing, so a resume overtaken by its halt leaves it halted.
 */
#include <string.h>

#include "client/client.h"

static int policy_valid(const tt_guard_policy *p)
{
    float v[3] = {p->token_min_prob, p->window_min_confidence, p->response_min_confidence};
    for (int i = 0; i < 3; i++) {
        if (!(v[i] >= 0.0f && v[i] <= 1.0f)) {
            return 0;
        }
    }
    return p->window >= 1 && p->window <= 4096 && (p->action == TT_FLAG || p->action == TT_HALT);
}

void tt__guard_init(tt_client *c)
{
    tt__guard *g = &c->guard;
    pthread_mutex_init(&g->lock, NULL);
    g->policy = (tt_guard_policy){
        .token_min_prob = c->cfg.guard_token_min_prob,
        .window_min_confidence = c->cfg.guard_window_min_confidence,
        .window = (uint32_t)c->cfg.guard_window,
        .response_min_confidence = c->cfg.guard_response_min_confidence,
        .action = (uint32_t)c->cfg.guard_action,
    };
    atomic_init(&g->gen, 1);
}

void tt__guard_fini(tt_client *c)
{
    pthread_mutex_destroy(&c->guard.lock);
}

TT_API int tt_guard_policy_set(tt_client *c, const tt_guard_policy *p)
{
    if (!c || !p || !policy_valid(p)) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->guard.lock);
    c->guard.policy = *p;
    pthread_mutex_unlock(&c->guard.lock);
    return 0;
}

TT_API int tt_guard_policy_get(tt_client *c, tt_guard_policy *out)
{
    if (!c || !out) {
        return TT_EINVAL;
    }
    pthread_mutex_lock(&c->guard.lock);
    *out = c->guard.policy;
    pthread_mutex_unlock(&c->guard.lock);
    return 0;
}

static void copy_text(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        n = cap - 1;
    }
    if (n) {
        memcpy(dst, s, n);
    }
    dst[n] = 0;
}

/* The slot of session in the halted table, or -1. g->lock held. */
static int halted_find(const tt__guard *g, const char *session, size_t session_len)
{
    for (uint32_t i = 0; i < g->n_halted; i++) {
        if (strlen(g->halted[i].session) == session_len &&
            memcmp(g->halted[i].session, session, session_len) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Drop the slot i of the halted table, keeping the others oldest first. g->lock held. */
static void halted_drop(tt__guard *g, uint32_t i)
{
    memmove(&g->halted[i], &g->halted[i + 1], (g->n_halted - i - 1) * sizeof g->halted[0]);
    g->n_halted--;
}

void tt__guard_halt(tt_client *c, const char *session, size_t session_len, const char *reason,
                    size_t reason_len)
{
    tt__guard *g = &c->guard;
    pthread_mutex_lock(&g->lock);
    uint64_t next = atomic_load_explicit(&g->gen, memory_order_relaxed) + 1;
    if (!session || session_len == 0) {
        g->halt_all_gen = next;
        copy_text(g->halt_all_reason, sizeof g->halt_all_reason, reason, reason_len);
    } else if (session_len < sizeof g->halted[0].session) {
        int found = halted_find(g, session, session_len);
        if (found >= 0) {
            halted_drop(g, (uint32_t)found); /* halted again: a new reason, now the newest */
        } else if (g->n_halted == TT_HALT_SESSIONS) {
            halted_drop(g, 0); /* the oldest halt makes room */
        }
        uint32_t slot = g->n_halted++;
        copy_text(g->halted[slot].session, sizeof g->halted[slot].session, session, session_len);
        copy_text(g->halted[slot].reason, sizeof g->halted[slot].reason, reason, reason_len);
    }
    /* Pairs with the acquire load in a response's next token. */
    atomic_store_explicit(&g->gen, next, memory_order_release);
    pthread_mutex_unlock(&g->lock);
}

void tt__guard_resume(tt_client *c, const char *session, size_t session_len)
{
    tt__guard *g = &c->guard;
    pthread_mutex_lock(&g->lock);
    uint64_t next = atomic_load_explicit(&g->gen, memory_order_relaxed) + 1;
    if (!session || session_len == 0) {
        g->n_halted = 0;
        g->halt_all_gen = 0; /* responses it has not reached yet are spared */
    } else {
        int found = halted_find(g, session, session_len);
        if (found >= 0) {
            halted_drop(g, (uint32_t)found);
        }
    }
    /* A response that began while its session was halted looks again at its first token. */
    atomic_store_explicit(&g->gen, next, memory_order_release);
    pthread_mutex_unlock(&g->lock);
}

/*
 * alerts.c - the alerts thread (store, then stream) and the webhook thread (alerts.h).
 *
 * INVARIANTS
 * - alerts_raise only appends to a bounded queue under alerts.lock and signals: it never does
 *   I/O, so the ingest thread and the monitor's timer never wait for SQLite or the network.
 * - An incident event is streamed only after it is stored, so the id a subscriber sees can be
 *   acked. Every event of an incident (firing, updated, resolved) is one queued struct alert;
 *   the row is inserted by the first and updated by the others (store_alert_put).
 * - The webhook queue is bounded too; a delivery that fails after its retries is counted and
 *   dropped. Shutdown ends retries early but still tries each queued delivery once.
 */
#include "collector/alerting/alerts.h"

#include <curl/curl.h>
#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/hub.h"
#include "collector/log.h"
#include "collector/store/store.h"
#include "common/clock.h"

struct hook_job {
    int hook;
    char *body;
    size_t len;
};

struct alerts {
    struct store *store;     /* where incidents are kept (not owned) */
    _Atomic int64_t next_id; /* the last incident number handed out (store_alert_put's al->id) */
    struct hub *hub;
    struct webhook_cfg hooks[MON_HOOKS_MAX];
    int n_hooks;
    char generator_url[512];  /* this collector's base URL for Alertmanager's generatorURL */
    pthread_mutex_t lock;     /* guards everything below */
    pthread_cond_t cond;      /* alerts queued, or stopping */
    pthread_cond_t hook_cond; /* webhook jobs queued, or stopping */
    struct alert *q;          /* ring of ALERTS_QUEUE_MAX */
    size_t q_head, q_len;
    struct hook_job hq[WEBHOOK_QUEUE_MAX];
    size_t hq_head, hq_len;
    int stop;
    pthread_t thread, hook_thread;
    int started, hook_started;
    _Atomic uint64_t raised, stored, dropped;
    _Atomic uint64_t wh_sent, wh_failed, wh_retries, wh_dropped;
};

/* One path segment, percent-encoded but for unreserved characters. */
static void path_segment(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s && n + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = 0;
}

static const char *const event_names[] = {"firing", "updated", "resolved"};

/* Links to the incident, the agent, the session and an example response (API paths). */
static void links_json(tt__json *j, const struct alert *al)
{
    char seg[800], path[900];
    tt__json_key(j, "links");
    tt__json_obj_begin(j);
    snprintf(path, sizeof path, "/api/v1/incidents/%lld", (long long)al->id);
    tt__json_kv_cstr(j, "incident", path);
    path_segment(seg, sizeof seg, al->agent);
    snprintf(path, sizeof path, "/api/v1/agents/%s", seg);
    tt__json_kv_cstr(j, "agent", path);
    if (al->session[0]) {
        path_segment(seg, sizeof seg, al->session);
        snprintf(path, sizeof path, "/api/v1/sessions/%s", seg);
        tt__json_kv_cstr(j, "session", path);
    }
    if (al->example_id && al->example_is_response) {
        snprintf(path, sizeof path, "/api/v1/responses/%016llx",
                 (unsigned long long)al->example_id);
        tt__json_kv_cstr(j, "response", path);
    } else if (al->example_id && al->session[0]) {
        /* A step is shown in its session's execution path. */
        path_segment(seg, sizeof seg, al->session);
        snprintf(path, sizeof path, "/api/v1/sessions/%s#step-%016llx", seg,
                 (unsigned long long)al->example_id);
        tt__json_kv_cstr(j, "step", path);
    }
    tt__json_obj_end(j);
}

void alert_json(tt__json *j, const struct alert *al, int64_t acked_ns, int with_event)
{
    int resolved = al->event == INC_RESOLVED || al->resolved_ns;
    tt__json_obj_begin(j);
    tt__json_kv_cstr(j, "kind", "alert");
    if (with_event) {
        tt__json_kv_cstr(j, "event", event_names[al->event]);
    }
    tt__json_kv_i64(j, "id", al->id);
    tt__json_kv_i64(j, "time_unix_ns", al->time_ns);
    tt__json_kv_cstr(j, "agent", al->agent);
    tt__json_kv_cstr(j, "detector", al->detector);
    tt__json_kv_cstr(j, "type", al->type);
    tt__json_kv_cstr(j, "severity", al->severity);
    if (al->session[0]) {
        tt__json_kv_cstr(j, "session", al->session);
    }
    tt__json_kv_cstr(j, "message", al->message);
    tt__json_kv_f64(j, "value", al->value);
    tt__json_kv_f64(j, "threshold", al->threshold);
    tt__json_kv_cstr(j, "unit", al->unit);
    tt__json_kv_cstr(j, "state", acked_ns ? "acked" : "open");
    if (acked_ns) {
        tt__json_kv_i64(j, "acked_unix_ns", acked_ns);
    }
    tt__json_kv_cstr(j, "status", resolved ? "resolved" : "firing");
    tt__json_kv_cstr(j, "key", al->key);
    tt__json_kv_u64(j, "count", al->count);
    tt__json_kv_i64(j, "last_unix_ns", al->last_ns);
    if (al->resolved_ns) {
        tt__json_kv_i64(j, "resolved_unix_ns", al->resolved_ns);
    }
    tt__json_kv_u64(j, "flaps", al->flaps);
    /* What the alert is about, in the ids' one format (16 hex digits, as in events and the
     * API): a response, or a step (a call that failed, a looping call). */
    if (al->example_id) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)al->example_id);
        tt__json_kv_cstr(j, al->example_is_response ? "response_id" : "step_id", hex);
    }
    links_json(j, al);
    tt__json_obj_end(j);
}

static void rfc3339(char *out, size_t cap, int64_t ns)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", base, (int)(ns % 1000000000 / 1000000));
}

/* One incident event in Alertmanager's API v2 format: a one-alert array for /api/v2/alerts. */
void alert_alertmanager_json(tt__json *j, const struct alert *al, const char *generator_base)
{
    char t[48], path[64];
    tt__json_arr_begin(j);
    tt__json_obj_begin(j);
    tt__json_key(j, "labels");
    tt__json_obj_begin(j);
    tt__json_kv_cstr(j, "alertname", al->detector);
    tt__json_kv_cstr(j, "agent", al->agent);
    tt__json_kv_cstr(j, "type", al->type);
    tt__json_kv_cstr(j, "severity", al->severity);
    if (al->key[0]) {
        tt__json_kv_cstr(j, "key", al->key);
    }
    tt__json_obj_end(j);
    tt__json_key(j, "annotations");
    tt__json_obj_begin(j);
    char summary[400];
    snprintf(summary, sizeof summary, "%s (%s) on agent %s", al->detector, al->type, al->agent);
    tt__json_kv_cstr(j, "summary", summary);
    tt__json_kv_cstr(j, "description", al->message);
    snprintf(path, sizeof path, "/api/v1/incidents/%lld", (long long)al->id);
    tt__json_kv_cstr(j, "incident", path);
    tt__json_obj_end(j);
    rfc3339(t, sizeof t, al->time_ns);
    tt__json_kv_cstr(j, "startsAt", t);
    if (al->event == INC_RESOLVED) {
        rfc3339(t, sizeof t, al->resolved_ns);
        tt__json_kv_cstr(j, "endsAt", t);
    }
    if (generator_base && generator_base[0]) {
        char url[1200];
        snprintf(url, sizeof url, "%s%s", generator_base, path);
        tt__json_kv_cstr(j, "generatorURL", url);
    }
    tt__json_obj_end(j);
    tt__json_arr_end(j);
}

int64_t alerts_next_id(struct alerts *a)
{
    static _Atomic int64_t orphan; /* ids for a monitor without alerts (tests) */
    return a ? atomic_fetch_add(&a->next_id, 1) + 1 : atomic_fetch_add(&orphan, 1) + 1;
}

void alerts_raise(struct alerts *a, const struct alert *al)
{
    if (!a) {
        return;
    }
    atomic_fetch_add_explicit(&a->raised, 1, memory_order_relaxed);
    pthread_mutex_lock(&a->lock);
    if (a->q_len == ALERTS_QUEUE_MAX || a->stop) {
        atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
    } else {
        a->q[(a->q_head + a->q_len) % ALERTS_QUEUE_MAX] = *al;
        a->q_len++;
        pthread_cond_signal(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
}

void alert_from_store(struct alert *out, const struct store_alert *r)
{
    memset(out, 0, sizeof *out);
    out->id = r->id;
    out->time_ns = r->time_ns;
    snprintf(out->agent, sizeof out->agent, "%s", r->agent ? r->agent : "");
    snprintf(out->detector, sizeof out->detector, "%s", r->detector ? r->detector : "");
    snprintf(out->type, sizeof out->type, "%s", r->type ? r->type : "");
    snprintf(out->severity, sizeof out->severity, "%s", r->severity ? r->severity : "");
    snprintf(out->session, sizeof out->session, "%s", r->session ? r->session : "");
    snprintf(out->message, sizeof out->message, "%s", r->message ? r->message : "");
    snprintf(out->key, sizeof out->key, "%s", r->key ? r->key : "");
    snprintf(out->unit, sizeof out->unit, "%s", r->unit ? r->unit : "");
    out->value = r->value;
    out->threshold = r->threshold;
    out->event = r->resolved ? INC_RESOLVED : INC_FIRING;
    out->last_ns = r->last_ns;
    out->resolved_ns = r->resolved_ns;
    out->count = r->count;
    out->flaps = r->flaps;
    out->example_id = r->example_id;
    out->example_is_response = r->example_is_response;
}

/* One incident event as the store's row; al->id becomes the id the store keeps it under (a
 * shared store numbers the incidents of every collector in one sequence). */
static int store_event(struct alerts *a, struct alert *al)
{
    struct store_alert row = {
        .id = al->id,
        .time_ns = al->time_ns,
        .agent = al->agent,
        .detector = al->detector,
        .type = al->type,
        .severity = al->severity,
        .message = al->message,
        .session = al->session,
        .value = al->value,
        .threshold = al->threshold,
        .key = al->key,
        .unit = al->unit,
        .resolved = al->event == INC_RESOLVED,
        .last_ns = al->last_ns,
        .resolved_ns = al->resolved_ns,
        .count = al->count,
        .flaps = al->flaps,
        .example_id = al->example_id,
        .example_is_response = al->example_is_response,
    };
    int64_t id;
    if (store_alert_put(a->store, &row, &id) != 0) {
        return -1;
    }
    al->id = id;
    return 0;
}

/* Queue one delivery per hook: the incident's JSON to webhooks, its Alertmanager form to
 * Alertmanagers (alerts thread; lock not held). */
static void queue_hooks(struct alerts *a, const tt__buf *hook_body, const tt__buf *am_body)
{
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < a->n_hooks; i++) {
        const tt__buf *body = a->hooks[i].alertmanager ? am_body : hook_body;
        char *copy = a->hq_len < WEBHOOK_QUEUE_MAX ? malloc(body->len + 1) : NULL;
        if (!copy) {
            atomic_fetch_add_explicit(&a->wh_dropped, 1, memory_order_relaxed);
            continue;
        }
        memcpy(copy, body->data, body->len);
        copy[body->len] = 0;
        a->hq[(a->hq_head + a->hq_len) % WEBHOOK_QUEUE_MAX] = (struct hook_job){i, copy, body->len};
        a->hq_len++;
    }
    pthread_cond_signal(&a->hook_cond);
    pthread_mutex_unlock(&a->lock);
}

static void handle(struct alerts *a, struct alert *al)
{
    if (store_event(a, al) != 0) {
        atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&a->stored, 1, memory_order_relaxed);
    tt__buf b, am;
    tt__buf_init(&b, 16384);
    tt__buf_init(&am, 16384);
    tt__json j, k;
    tt__json_init(&j, &b);
    tt__json_init(&k, &am);
    alert_json(&j, al, 0, 1);
    if (!j.err) {
        if (a->hub) {
            hub_publish_json(a->hub, "alert", al->agent, (const char *)b.data, b.len);
        }
        alert_alertmanager_json(&k, al, a->generator_url);
        if (a->n_hooks && !k.err) {
            queue_hooks(a, &b, &am);
        }
    }
    tt__buf_fini(&b);
    tt__buf_fini(&am);
}

static void *alerts_main(void *arg)
{
    struct alerts *a = arg;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->stop && a->q_len == 0) {
            pthread_cond_wait(&a->cond, &a->lock);
        }
        if (a->q_len == 0) {
            break; /* stopping and drained */
        }
        struct alert al = a->q[a->q_head];
        a->q_head = (a->q_head + 1) % ALERTS_QUEUE_MAX;
        a->q_len--;
        pthread_mutex_unlock(&a->lock);
        handle(a, &al);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

static size_t discard(char *p, size_t size, size_t nmemb, void *cls)
{
    (void)p;
    (void)cls;
    return size * nmemb;
}

/* The signature headers of docs/detectors.md, "Webhook signatures": X-Telltale-Timestamp (Unix
 * seconds) and X-Telltale-Signature "v1=" HMAC-SHA256(secret, TIMESTAMP "." BODY) in hex. The
 * timestamp is signed so a receiver can refuse an old request replayed. */
static struct curl_slist *sign(struct curl_slist *hdrs, const struct webhook_cfg *w,
                               const struct hook_job *job)
{
    char ts[32], line[160];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    unsigned char mac[32];
    gnutls_hmac_hd_t m;
    if (gnutls_hmac_init(&m, GNUTLS_MAC_SHA256, w->secret, w->secret_len) != 0) {
        return hdrs;
    }
    gnutls_hmac(m, ts, strlen(ts));
    gnutls_hmac(m, ".", 1);
    gnutls_hmac(m, job->body, job->len);
    gnutls_hmac_deinit(m, mac);
    snprintf(line, sizeof line, "X-Telltale-Timestamp: %s", ts);
    hdrs = curl_slist_append(hdrs, line);
    int k = snprintf(line, sizeof line, "X-Telltale-Signature: v1=");
    for (size_t i = 0; i < sizeof mac; i++) {
        k += snprintf(line + k, sizeof line - (size_t)k, "%02x", mac[i]);
    }
    return curl_slist_append(hdrs, line);
}

static int post_once(CURL *h, const struct webhook_cfg *w, const struct hook_job *job)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (w->secret_len) {
        hdrs = sign(hdrs, w, job);
    }
    curl_easy_reset(h);
    if (w->ca_file[0]) {
        curl_easy_setopt(h, CURLOPT_CAINFO, w->ca_file);
    }
    /* libcurl verifies the peer and its host name by default; nothing here turns that off. */
    curl_easy_setopt(h, CURLOPT_URL, w->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, job->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)job->len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)w->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)w->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    return rc == CURLE_OK && status >= 200 && status < 300 ? 0 : -1;
}

/* Sleep up to ms, returning early (1) when stopping. Lock held on entry and exit. */
static int backoff_wait(struct alerts *a, uint64_t ms)
{
    struct timespec until = tt__deadline_ms(CLOCK_REALTIME, ms);
    while (!a->stop) {
        if (pthread_cond_timedwait(&a->hook_cond, &a->lock, &until) != 0) {
            break;
        }
    }
    return a->stop;
}

static void deliver(struct alerts *a, CURL *h, struct hook_job *job)
{
    const struct webhook_cfg *w = &a->hooks[job->hook];
    uint64_t wait_ms = w->backoff_ms;
    for (uint32_t attempt = 0;; attempt++) {
        if (post_once(h, w, job) == 0) {
            atomic_fetch_add_explicit(&a->wh_sent, 1, memory_order_relaxed);
            return;
        }
        pthread_mutex_lock(&a->lock);
        int stopping = attempt >= w->retries || backoff_wait(a, wait_ms);
        pthread_mutex_unlock(&a->lock);
        if (stopping) {
            break;
        }
        atomic_fetch_add_explicit(&a->wh_retries, 1, memory_order_relaxed);
        wait_ms = wait_ms * 2 > 60000 ? 60000 : wait_ms * 2;
    }
    atomic_fetch_add_explicit(&a->wh_failed, 1, memory_order_relaxed);
    log_warn("alerts: webhook %s failed after %u attempts", w->name, w->retries + 1);
}

static void *hooks_main(void *arg)
{
    struct alerts *a = arg;
    CURL *h = curl_easy_init();
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->stop && a->hq_len == 0) {
            pthread_cond_wait(&a->hook_cond, &a->lock);
        }
        if (a->hq_len == 0) {
            break;
        }
        struct hook_job job = a->hq[a->hq_head];
        a->hq_head = (a->hq_head + 1) % WEBHOOK_QUEUE_MAX;
        a->hq_len--;
        pthread_mutex_unlock(&a->lock);
        if (h) {
            deliver(a, h, &job);
        } else {
            atomic_fetch_add_explicit(&a->wh_failed, 1, memory_order_relaxed);
        }
        free(job.body);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    curl_easy_cleanup(h);
    return NULL;
}

int alerts_open(struct alerts **out, struct store *store, struct hub *hub,
                const struct webhook_cfg *hooks, int n_hooks, char *err, size_t errlen)
{
    *out = NULL;
    struct alerts *a = calloc(1, sizeof *a);
    struct alert *q = calloc(ALERTS_QUEUE_MAX, sizeof *q);
    if (!a || !q) {
        free(a);
        free(q);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->q = q;
    a->store = store;
    atomic_store(&a->next_id, store_alert_max_id(store));
    a->hub = hub;
    a->n_hooks = n_hooks < MON_HOOKS_MAX ? n_hooks : MON_HOOKS_MAX;
    if (a->n_hooks > 0) { /* hooks may be NULL when there are none */
        memcpy(a->hooks, hooks, (size_t)a->n_hooks * sizeof *hooks);
    }
    for (int i = 0; i < a->n_hooks; i++) {
        if (hooks[i].alertmanager && hooks[i].generator_url[0]) {
            snprintf(a->generator_url, sizeof a->generator_url, "%s", hooks[i].generator_url);
        }
    }
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    pthread_cond_init(&a->hook_cond, NULL);
    a->started = pthread_create(&a->thread, NULL, alerts_main, a) == 0;
    a->hook_started = pthread_create(&a->hook_thread, NULL, hooks_main, a) == 0;
    if (!a->started || !a->hook_started) {
        snprintf(err, errlen, "alerts: cannot start threads");
        alerts_close(a);
        return -1;
    }
    *out = a;
    return 0;
}

void alerts_close(struct alerts *a)
{
    if (!a) {
        return;
    }
    pthread_mutex_lock(&a->lock);
    a->stop = 1;
    pthread_cond_broadcast(&a->cond);
    pthread_cond_broadcast(&a->hook_cond);
    pthread_mutex_unlock(&a->lock);
    if (a->started) {
        pthread_join(a->thread, NULL);
    }
    if (a->hook_started) {
        pthread_join(a->hook_thread, NULL);
    }
    for (size_t i = 0; i < a->hq_len; i++) {
        free(a->hq[(a->hq_head + i) % WEBHOOK_QUEUE_MAX].body);
    }
    pthread_cond_destroy(&a->cond);
    pthread_cond_destroy(&a->hook_cond);
    pthread_mutex_destroy(&a->lock);
    free(a->q);
    free(a);
}

void alerts_counters(struct alerts *a, struct alerts_counters *out)
{
    memset(out, 0, sizeof *out);
    if (!a) {
        return;
    }
    out->raised = atomic_load(&a->raised);
    out->stored = atomic_load(&a->stored);
    out->dropped = atomic_load(&a->dropped);
    out->webhook_sent = atomic_load(&a->wh_sent);
    out->webhook_failed = atomic_load(&a->wh_failed);
    out->webhook_retries = atomic_load(&a->wh_retries);
    out->webhook_dropped = atomic_load(&a->wh_dropped);
}

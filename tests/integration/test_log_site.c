/*
 * test_log_site.c - TT_LOG against a real `telltale serve`: from several threads at once, each
 * call site's events are stored as tt_log's events of the same message, keys and values (the
 * API returns the same JSON but for the session), every event acknowledged, none dropped; under
 * a compliance policy that redacts, a site's secrets are masked as tt_log's are.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

#define PAIRS 1500
#define THREADS 3

struct emitter {
    tt_client *c;
    int t;
};

static const char *const models[] = {"llama-3-8b",
                                     "",
                                     NULL,
                                     "mistral-7b-instruct-v0.3 (q4)",
                                     "caf\xc3\xa9 \xe2\x98\x95",
                                     "a model name longer than "
                                     "thirty-two bytes, to be copied "
                                     "by the checked path"};

static void *emit_pairs(void *arg)
{
    struct emitter *e = arg;
    char site[32], log[32];
    snprintf(site, sizeof site, "site-%d", e->t);
    snprintf(log, sizeof log, "log-%d", e->t);
    for (int i = 0; i < PAIRS; i++) {
        const char *model = models[i % 6];
        int64_t tokens = (int64_t)i * 7919 - 5000;
        double ms = i / 3.0;
        int cached = i % 3 == 0;
        if (i % 5 == 4) {
            CHECK_OK(TT_LOG(e->c, site, TT_WARN, "no attributes"));
            CHECK_OK(tt_log(e->c, log, TT_WARN, "no attributes", NULL, 0));
            continue;
        }
        CHECK_OK(TT_LOG(e->c, site, TT_INFO, "request done",
                        TT_LOG_STR("gen_ai.request.model", model),
                        TT_LOG_INT("gen_ai.usage.output_tokens", tokens),
                        TT_LOG_DOUBLE("latency_ms", ms), TT_LOG_BOOL("cached", cached)));
        tt_attr a[] = {TT_STR("gen_ai.request.model", model),
                       TT_INT("gen_ai.usage.output_tokens", tokens), TT_DOUBLE("latency_ms", ms),
                       TT_BOOL("cached", cached)};
        CHECK_OK(tt_log(e->c, log, TT_INFO, "request done", a, 4));
    }
    return NULL;
}

/* The stored events of a session, oldest first (a JSON array, owned by the caller). */
static json_t *session_events(const char *http, const char *session)
{
    char path[200], *body = NULL;
    snprintf(path, sizeof path, "/api/v1/events?session=%s&limit=10000", session);
    long st = tt_test_http(http, "GET", path, NULL, &body);
    CHECK_MSG(st == 200, "GET %s: %ld %s", path, st, body ? body : "");
    json_error_t err;
    json_t *o = json_loads(body, 0, &err);
    CHECK_MSG(o, "not JSON: %s", body);
    free(body);
    json_t *evs = json_incref(json_object_get(o, "events"));
    json_decref(o);
    CHECK(json_is_array(evs));
    return evs;
}

/* e without what differs by construction between the two calls of a pair. */
static json_t *comparable(json_t *e)
{
    json_t *c = json_deep_copy(e);
    const char *drop[] = {"session", "seq", "time", "time_unix_ns", "id", "received", "ts"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++) {
        json_object_del(c, drop[i]);
    }
    return c;
}

TEST_T(log_site_events_are_stored_as_tt_log_stores_them, 120)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "site", NULL);
    tt_client *c = tt_test_client(s.endpoint, "sites", NULL);
    struct emitter e[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        e[t] = (struct emitter){c, t};
        CHECK_OK(pthread_create(&th[t], NULL, emit_pairs, &e[t]));
    }
    for (int t = 0; t < THREADS; t++) {
        CHECK_OK(pthread_join(th[t], NULL));
    }
    CHECK_OK(tt_flush(c, (uint32_t)(20000 * tt_test_mult())));
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ_U64(st.emitted, 2u * PAIRS * THREADS);
    CHECK_EQ_U64(st.acked, st.emitted);
    CHECK_EQ_U64(st.dropped_total, 0);
    for (int t = 0; t < THREADS; t++) {
        char site[32], log[32];
        snprintf(site, sizeof site, "site-%d", t);
        snprintf(log, sizeof log, "log-%d", t);
        json_t *a = session_events(s.http, site), *b = session_events(s.http, log);
        CHECK_EQ(json_array_size(a), PAIRS);
        CHECK_EQ(json_array_size(b), PAIRS);
        for (size_t i = 0; i < PAIRS; i++) {
            json_t *x = comparable(json_array_get(a, i)), *y = comparable(json_array_get(b, i));
            if (!json_equal(x, y)) {
                char *sx = json_dumps(x, JSON_SORT_KEYS), *sy = json_dumps(y, JSON_SORT_KEYS);
                CHECK_MSG(0, "thread %d, event %zu: TT_LOG stored %s, tt_log %s", t, i, sx, sy);
            }
            json_decref(x);
            json_decref(y);
        }
        /* And they say what was emitted: the message and each attribute of one of them. */
        json_t *ev = json_array_get(a, 3), *attrs = json_object_get(ev, "attrs");
        CHECK_STR(json_string_value(json_object_get(ev, "message")), "request done");
        CHECK_STR(json_string_value(json_object_get(attrs, "gen_ai.request.model")),
                  "mistral-7b-instruct-v0.3 (q4)");
        CHECK_EQ(json_integer_value(json_object_get(attrs, "gen_ai.usage.output_tokens")),
                 3 * 7919 - 5000);
        CHECK(json_object_get(attrs, "cached") == json_true());
        json_decref(a);
        json_decref(b);
    }
    CHECK_OK(tt_close(c, 2000));
    tt_test_serve_stop(&s);
}

TEST_T(log_site_secrets_are_masked_when_the_policy_redacts, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "site-redact", NULL);
    tt_client *c = tt_test_client(s.endpoint, "sites-redact", NULL);
    const char *policy = "[rule.secrets]\nmatch = pii\nredact = on\n";
    CHECK_OK(tt_comply_policy_set(c, policy, strlen(policy), NULL, 0));
    for (int i = 0; i < 3; i++) { /* the site's first call, and registered ones */
        CHECK_OK(TT_LOG(c, "redact", TT_INFO, "paid", TT_LOG_STR("card", "4111 1111 1111 1111"),
                        TT_LOG_INT("n", i)));
    }
    CHECK_OK(tt_flush(c, 10000));
    tt_stats st;
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ_U64(st.comply_masked, 3);
    json_t *a = session_events(s.http, "redact");
    CHECK_EQ(json_array_size(a), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *attrs = json_object_get(json_array_get(a, i), "attrs");
        const char *card = json_string_value(json_object_get(attrs, "card"));
        CHECK_MSG(card && !strstr(card, "4111"), "stored %s", card ? card : "(none)");
        CHECK_EQ(json_integer_value(json_object_get(attrs, "n")), (long long)i);
    }
    json_decref(a);
    /* Without the policy, the site writes its values only again, and they are stored. */
    CHECK_OK(tt_comply_policy_set(c, NULL, 0, NULL, 0));
    CHECK_OK(TT_LOG(c, "plain", TT_INFO, "paid", TT_LOG_STR("card", "none"), TT_LOG_INT("n", 9)));
    CHECK_OK(tt_flush(c, 10000));
    a = session_events(s.http, "plain");
    CHECK_EQ(json_array_size(a), 1);
    CHECK_STR(
        json_string_value(json_object_get(json_object_get(json_array_get(a, 0), "attrs"), "card")),
        "none");
    json_decref(a);
    CHECK_OK(tt_close(c, 2000));
    tt_test_serve_stop(&s);
}

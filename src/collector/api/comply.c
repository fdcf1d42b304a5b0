/*
 * comply.c - the operator sets an agent's compliance policy (docs/compliance.md):
 *
 *   POST /api/v1/agents/{agent}/comply-policy   {"policy": "TEXT"}   ("" clears it)
 *
 * The text is checked here with the agents' own parser (src/common/comply.c), so a bad policy
 * is refused with its line before any agent sees it; a good one goes to every live connection
 * of the agent as Control{comply_policy = 3} and the answer says how many took it. The same
 * text becomes the collector's policy for that agent (comply_watch.h): what an agent that
 * cannot enforce it (an older client) does is judged by the collector instead.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/alerting/comply_watch.h"
#include "collector/source/nats.h"
#include "collector/api/http.h"
#include "collector/source/native.h"
#include "common/comply.h"
#include "common/json.h"
#include "common/pb.h"

#define ORDER_WAIT_MS 2000

enum MHD_Result api_agent_comply_policy(const struct http_req *r)
{
    json_t *o;
    enum MHD_Result refused;
    const char *agent = api_agent_order(r, &o, &refused);
    if (!agent) {
        return refused;
    }
    json_t *text = json_is_object(o) ? json_object_get(o, "policy") : NULL;
    if (!json_is_string(text) || json_object_size(o) != 1) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST,
                          "the body must be {\"policy\": \"the policy's text\"} (\"\" clears it)");
    }
    size_t len = json_string_length(text);
    struct tt__comply_policy *p = malloc(sizeof *p);
    char err[256] = "";
    int rc = p ? tt__comply_parse(p, json_string_value(text), len, err, sizeof err) : -1;
    uint32_t rules = rc == 0 ? p->n_rules : 0;
    free(p);
    if (rc != 0) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST, "policy: %s", p ? err : "out of memory");
    }
    if (!r->ctx->ingest) {
        json_decref(o);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "no ingest loop to send the order");
    }
    int watched = watch_set_agent_policy(r->ctx->watch, agent, json_string_value(text), len);
    /* Control { comply_policy = 3: the text } */
    size_t cap = len + 16;
    uint8_t *payload = malloc(cap);
    if (!payload) {
        json_decref(o);
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
    }
    uint8_t *q = tt__pb_put_bytes(payload, 3, (const uint8_t *)json_string_value(text), len);
    json_decref(o);
    int n = ingest_post_control_wait(r->ctx->ingest, agent, payload, (size_t)(q - payload),
                                     ORDER_WAIT_MS);
    int nb = nats_publish_control(r->ctx->nats, agent, payload, (size_t)(q - payload),
                                  NATS_CONFIRM_WAIT_MS);
    free(payload);
    tt__buf b;
    tt__buf_init(&b, 4096);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_cstr(&j, "agent", agent);
    tt__json_kv_u64(&j, "rules", rules);
    tt__json_kv_i64(&j, "connections", n < 0 ? 0 : n);
    if (r->ctx->nats) {
        tt__json_kv_bool(&j, "nats_published", nb > 0);
        tt__json_kv_bool(&j, "nats_delivered", nb > 1);
    }
    tt__json_kv_bool(&j, "collector", r->ctx->watch && watched == 0);
    tt__json_obj_end(&j);
    enum MHD_Result res = j.err ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "answer too large")
                                : http_json(r, MHD_HTTP_ACCEPTED, &b);
    tt__buf_fini(&b);
    return res;
}

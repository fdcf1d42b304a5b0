/*
 * api/halt.c - the operator's halt and resume (docs/http-api.md, "Halt and resume"):
 *   POST /api/v1/sessions/{id}/halt       Control{Halt{session}} to the agents of the session
 *   POST /api/v1/sessions/{id}/resume     Control{Resume{session}} to them
 *   POST /api/v1/agents/{agent}/halt      Control{Halt{""}}: every response the agent has open
 *   POST /api/v1/agents/{agent}/resume    Control{Resume{""}}: every session halt of the agent
 * The body is optional, {"reason": "..."} (at most 100 bytes). Each order is sent to the live
 * connections of the agents (the loop sends orders in the order they were posted) and written
 * to the collector's log, escaped, with how many connections it reached. Orders are not kept
 * for agents that connect later: a halt lives in the agent's process (client/guard.c) and so
 * does its lifting; an agent that restarts starts unhalted.
 */
#include <stdio.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/log.h"
#include "collector/source/nats.h"
#include "collector/source/native.h"
#include "collector/store/store.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/pb.h"

#define REASON_MAX 100
#define ORDER_WAIT_MS 2000
#define ORDER_AGENTS_MAX 64

/* Control's fields for the two orders. */
enum { ORDER_HALT = 1, ORDER_RESUME = 4 };

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A JSON string at p (after its opening quote) into out (UTF-8, NUL-terminated); returns the
 * position after the closing quote or NULL. Rejects what is longer than cap - 1 bytes. */
static const char *parse_string(const char *p, const char *end, char *out, size_t cap, size_t *len)
{
    size_t n = 0;
    while (p < end && *p != '"') {
        unsigned cp;
        if ((unsigned char)*p < 0x20) {
            return NULL;
        }
        if (*p != '\\') {
            cp = (unsigned char)*p++;
            if (n + 1 >= cap) {
                return NULL;
            }
            out[n++] = (char)cp;
            continue;
        }
        if (++p >= end) {
            return NULL;
        }
        char e = *p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            cp = (unsigned char)map[simple - "\"\\/bfnrt"];
        } else if (e == 'u' && end - p >= 4) {
            cp = 0;
            for (int i = 0; i < 4; i++) {
                int h = hexval(p[i]);
                if (h < 0) {
                    return NULL;
                }
                cp = cp << 4 | (unsigned)h;
            }
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdfff) {
                cp = 0xfffd; /* surrogates: not worth pairing in a reason */
            }
        } else {
            return NULL;
        }
        char u[4];
        size_t k = 0;
        if (cp < 0x80) {
            u[k++] = (char)cp;
        } else if (cp < 0x800) {
            u[k++] = (char)(0xc0 | cp >> 6);
            u[k++] = (char)(0x80 | (cp & 0x3f));
        } else {
            u[k++] = (char)(0xe0 | cp >> 12);
            u[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            u[k++] = (char)(0x80 | (cp & 0x3f));
        }
        if (n + k >= cap) {
            return NULL;
        }
        memcpy(out + n, u, k);
        n += k;
    }
    if (p >= end) {
        return NULL;
    }
    out[n] = 0;
    *len = n;
    return p + 1;
}

/* The optional body {"reason": "..."}: 0, or -1 with why set. */
static int parse_reason_body(const tt__buf *body, char *reason, size_t cap, const char **why)
{
    const char *p = body ? (const char *)body->data : NULL;
    const char *end = p ? p + body->len : NULL;
    if (!p || skip_ws(p, end) == end) {
        return 0;
    }
    *why = "the body must be a JSON object {\"reason\": \"...\"}";
    p = skip_ws(p, end);
    if (*p++ != '{') {
        return -1;
    }
    p = skip_ws(p, end);
    if (p < end && *p == '}') {
        return skip_ws(p + 1, end) == end ? 0 : -1;
    }
    char key[16];
    size_t kl, rl;
    if (p >= end || *p++ != '"' || !(p = parse_string(p, end, key, sizeof key, &kl)) ||
        strcmp(key, "reason") != 0) {
        *why = "the body may only hold \"reason\"";
        return -1;
    }
    p = skip_ws(p, end);
    if (p >= end || *p++ != ':') {
        return -1;
    }
    p = skip_ws(p, end);
    if (p >= end || *p++ != '"') {
        *why = "reason must be a string";
        return -1;
    }
    if (!(p = parse_string(p, end, reason, cap, &rl))) {
        *why = "reason must be a valid JSON string of at most 100 bytes";
        return -1;
    }
    p = skip_ws(p, end);
    if (p >= end || *p++ != '}' || skip_ws(p, end) != end) {
        return -1;
    }
    return 0;
}

struct order_agents {
    int n;
    char name[ORDER_AGENTS_MAX][256];
};

static int order_agent_add(void *ctx, const char *name)
{
    struct order_agents *h = ctx;
    if (h->n < ORDER_AGENTS_MAX) {
        snprintf(h->name[h->n++], sizeof h->name[0], "%s", name ? name : "");
    }
    return h->n == ORDER_AGENTS_MAX;
}

/* text, JSON-escaped and cut to fit out (the log never gets telemetry or operator text raw). */
static const char *escaped(char *out, size_t cap, const char *text)
{
    tt__buf b;
    tt__buf_init(&b, 4096);
    size_t n = tt__json_escape(&b, text, strlen(text)) == 0 ? b.len : 0;
    n = n < cap ? n : cap - 1;
    if (n) {
        memcpy(out, b.data, n);
    }
    out[n] = 0;
    tt__buf_fini(&b);
    return out;
}

/* The audit line of one order. */
static void audit(int field, const char *what, const char *name, const char *reason, int agents,
                  int conns)
{
    char n[600], why[400];
    log_info("operator %s of %s \"%s\" (reason \"%s\"): sent to %d agent(s), %d connection(s)",
             field == ORDER_HALT ? "halt" : "resume", what, escaped(n, sizeof n, name),
             escaped(why, sizeof why, reason), agents, conns);
}

/* Control { field: Halt/Resume { session = 1, reason = 2 } } into payload; its length. */
static size_t order_payload(uint8_t *payload, int field, const char *session, const char *reason)
{
    size_t sl = strlen(session), rl = strlen(reason);
    size_t inner = (sl ? tt__pb_len_field_size(sl) : 0) + tt__pb_len_field_size(rl);
    uint8_t *p = tt__pb_put_tag(payload, (uint32_t)field, TT_PB_LEN);
    p = tt__pb_put_varint(p, inner);
    if (sl) {
        p = tt__pb_put_bytes(p, 1, session, sl);
    }
    p = tt__pb_put_bytes(p, 2, reason, rl);
    return (size_t)(p - payload);
}

/* The checks every order shares: no query parameters, the path's name (1 to 255 bytes) and the
 * optional reason. The name, or NULL with the error answer queued in *refused. */
static const char *order_start(const struct http_req *r, const char *param, char *reason,
                               enum MHD_Result *refused)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        *refused = http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
        return NULL;
    }
    const char *name = http_path_param(r, param);
    if (!name || !*name || strlen(name) > 255) {
        *refused = http_error(r, MHD_HTTP_BAD_REQUEST, "%s is 1 to 255 bytes",
                              param[0] == 'i' ? "a session id" : "an agent name");
        return NULL;
    }
    const char *why = NULL;
    if (parse_reason_body(r->body, reason, REASON_MAX + 1, &why) != 0) {
        *refused = http_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
        return NULL;
    }
    if (!reason[0]) {
        snprintf(reason, REASON_MAX + 1, "no reason given");
    }
    if (!r->ctx->ingest) {
        *refused = http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "no ingest loop to send the order");
        return NULL;
    }
    return name;
}

static enum MHD_Result session_order(const struct http_req *r, int field)
{
    char reason[REASON_MAX + 1] = "";
    enum MHD_Result refused;
    const char *session = order_start(r, "id", reason, &refused);
    if (!session) {
        return refused;
    }
    /* The agents first, then the orders: no read is held open while the loop is waited for. */
    struct store_read *rd;
    if (store_read_open(r->ctx->store, &rd) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    struct order_agents names = {.n = 0};
    int found = store_session_agents(rd, session, ORDER_AGENTS_MAX, order_agent_add, &names);
    store_read_close(rd);
    if (found < 0) {
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query sessions");
    }
    if (names.n == 0) {
        return http_error(r, MHD_HTTP_NOT_FOUND, "no session %s", session);
    }
    uint8_t payload[600];
    size_t plen = order_payload(payload, field, session, reason);
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_cstr(&j, "session", session);
    tt__json_kv_cstr(&j, "order", field == ORDER_HALT ? "halt" : "resume");
    tt__json_kv_cstr(&j, "reason", reason);
    tt__json_key(&j, "agents");
    tt__json_arr_begin(&j);
    int conns = 0, published = 0, delivered = 0;
    uint64_t nats_until =
        tt__mono_ns() + NATS_CONFIRM_WAIT_MS * 1000000ull; /* one wait for all the agents */
    for (int i = 0; i < names.n; i++) {
        const char *agent = names.name[i];
        int n = ingest_post_control_wait(r->ctx->ingest, agent, payload, plen, ORDER_WAIT_MS);
        uint64_t now = tt__mono_ns();
        int left = now < nats_until ? (int)((nats_until - now) / 1000000) : 0;
        int nb = nats_publish_control(r->ctx->nats, agent, payload, plen, left);
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, "agent", agent);
        tt__json_kv_i64(&j, "connections", n < 0 ? 0 : n);
        if (r->ctx->nats) {
            tt__json_kv_bool(&j, "nats_published", nb > 0);
            tt__json_kv_bool(&j, "nats_delivered", nb > 1);
        }
        tt__json_obj_end(&j);
        conns += n > 0 ? n : 0;
        published += nb > 0;
        delivered += nb > 1;
    }
    tt__json_arr_end(&j);
    tt__json_kv_i64(&j, "connections", conns);
    if (r->ctx->nats) {
        tt__json_kv_i64(&j, "nats_published", published);
        tt__json_kv_i64(&j, "nats_delivered", delivered);
    }
    tt__json_obj_end(&j);
    audit(field, "session", session, reason, names.n, conns);
    enum MHD_Result rc = j.err ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "answer too large")
                               : http_json(r, MHD_HTTP_ACCEPTED, &b);
    tt__buf_fini(&b);
    return rc;
}

static enum MHD_Result agent_order(const struct http_req *r, int field)
{
    char reason[REASON_MAX + 1] = "";
    enum MHD_Result refused;
    const char *agent = order_start(r, "agent", reason, &refused);
    if (!agent) {
        return refused;
    }
    uint8_t payload[300];
    size_t plen = order_payload(payload, field, "", reason);
    int n = ingest_post_control_wait(r->ctx->ingest, agent, payload, plen, ORDER_WAIT_MS);
    int nb = nats_publish_control(r->ctx->nats, agent, payload, plen, NATS_CONFIRM_WAIT_MS);
    audit(field, "agent", agent, reason, 1, n < 0 ? 0 : n);
    tt__buf b;
    tt__buf_init(&b, 4096);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_cstr(&j, "agent", agent);
    tt__json_kv_cstr(&j, "order", field == ORDER_HALT ? "halt" : "resume");
    tt__json_kv_cstr(&j, "reason", reason);
    tt__json_kv_i64(&j, "connections", n < 0 ? 0 : n);
    if (r->ctx->nats) {
        tt__json_kv_bool(&j, "nats_published", nb > 0);
        tt__json_kv_bool(&j, "nats_delivered", nb > 1);
    }
    tt__json_obj_end(&j);
    enum MHD_Result rc = j.err ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "answer too large")
                               : http_json(r, MHD_HTTP_ACCEPTED, &b);
    tt__buf_fini(&b);
    return rc;
}

enum MHD_Result api_session_halt(const struct http_req *r)
{
    return session_order(r, ORDER_HALT);
}

enum MHD_Result api_session_resume(const struct http_req *r)
{
    return session_order(r, ORDER_RESUME);
}

enum MHD_Result api_agent_halt(const struct http_req *r)
{
    return agent_order(r, ORDER_HALT);
}

enum MHD_Result api_agent_resume(const struct http_req *r)
{
    return agent_order(r, ORDER_RESUME);
}

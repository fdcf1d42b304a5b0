/*
 * otlp.c - POST /v1/traces, /v1/logs and /v1/metrics: the HTTP side of the OTLP source (source/otlp.h does the rest).
 * The answer's content type follows the request's (OTLP/HTTP), with the common headers. The
 * headers are checked as soon as they arrive (api_otlp_early): a request refused on them has
 * its body read and dropped, never buffered, and the refusal answered once it is in (answering
 * before would make the kernel reset the connection over the unread body, and the exporter
 * would see a network error instead of the answer).
 */
#include <stdlib.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/source/otlp.h"
#include "collector/source/otlp_decode.h"

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static void request_in(struct MHD_Connection *c, struct otlp_http_in *in)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    memset(in, 0, sizeof *in);
    in->content_type = header(c, "Content-Type");
    in->content_encoding = header(c, "Content-Encoding");
    in->authorization = header(c, "Authorization");
    in->peer_fd = ci ? ci->connect_fd : -1;
}

static enum MHD_Result send_answer(struct MHD_Connection *c, struct otlp_http_out *out)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        out->body.len, out->body.len ? out->body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
    tt__buf_fini(&out->body);
    if (!resp) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", out->content_type);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (out->retry_after_s) {
        MHD_add_response_header(resp, "Retry-After", "1");
    }
    if (out->challenge) {
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"telltale\"");
    }
    enum MHD_Result rc = MHD_queue_response(c, out->status, resp);
    MHD_destroy_response(resp);
    return rc;
}

int api_otlp_early(struct MHD_Connection *c, const struct http_ctx *ctx, const char *method,
                   const char *url, struct otlp_http_out *out)
{
    if ((strcmp(url, "/v1/traces") != 0 && strcmp(url, "/v1/logs") != 0 &&
         strcmp(url, "/v1/metrics") != 0) ||
        strcmp(method, "POST") != 0) {
        return 0;
    }
    const char *cl = header(c, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > OTLP_BODY_MAX) {
        memset(out, 0, sizeof *out);
        out->status = MHD_HTTP_CONTENT_TOO_LARGE;
        out->content_type = "application/json";
        tt__buf_init(&out->body, 256);
        tt__buf_printf(&out->body, "{\"error\":\"request body above %u bytes\",\"status\":413}",
                       OTLP_BODY_MAX);
        return 1;
    }
    struct otlp_http_in in;
    request_in(c, &in);
    return otlp_check_headers(ctx->otlp, &in, out);
}

enum MHD_Result api_otlp_send(struct MHD_Connection *c, struct otlp_http_out *out)
{
    return send_answer(c, out);
}

static enum MHD_Result serve(const struct http_req *r,
                             void (*handle)(struct otlp *, const struct otlp_http_in *,
                                            struct otlp_http_out *))
{
    struct otlp_http_in in;
    request_in(r->conn, &in);
    in.body = r->body->data;
    in.body_len = r->body->len;
    struct otlp_http_out out;
    handle(r->ctx->otlp, &in, &out);
    return send_answer(r->conn, &out);
}

enum MHD_Result api_otlp_traces(const struct http_req *r)
{
    return serve(r, otlp_handle_traces);
}

enum MHD_Result api_otlp_logs(const struct http_req *r)
{
    return serve(r, otlp_handle_logs);
}

enum MHD_Result api_otlp_metrics(const struct http_req *r)
{
    return serve(r, otlp_handle_metrics);
}

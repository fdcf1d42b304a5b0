/*
 * otlp.c - POST /v1/traces: the HTTP side of the OTLP source (source/otlp.h does the rest).
 * The answer's content type follows the request's (OTLP/HTTP), with the common headers.
 */
#include <string.h>

#include "collector/api/http.h"
#include "collector/source/otlp.h"

static const char *header(const struct http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

enum MHD_Result api_otlp_traces(const struct http_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct otlp_http_in in = {header(r, "Content-Type"),
                              header(r, "Content-Encoding"),
                              header(r, "Authorization"),
                              ci ? ci->connect_fd : -1,
                              r->body->data,
                              r->body->len};
    struct otlp_http_out out;
    otlp_handle_traces(r->ctx->otlp, &in, &out);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        out.body.len, out.body.len ? out.body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
    tt__buf_fini(&out.body);
    if (!resp) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", out.content_type);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (out.retry_after_s) {
        MHD_add_response_header(resp, "Retry-After", "1");
    }
    if (out.challenge) {
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"telltale\"");
    }
    enum MHD_Result rc = MHD_queue_response(r->conn, out.status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/*
 * api/assets.c - the dashboard: GET / serves index.html, GET /assets/{name} the rest, from the
 * files embedded in the binary (web/assets_gen.c). Every answer carries a strict
 * Content-Security-Policy (scripts and styles from this origin only, no inline script, no
 * eval, connections to this origin only, no framing), nosniff and no-referrer. Caching: the
 * browser may keep a copy but must revalidate it (no-cache) against the ETag, which is a hash
 * of the bytes, so a new build is picked up at once and an unchanged file costs a 304.
 */
#include <string.h>

#include "collector/api/assets.h"
#include "collector/api/http.h"

static const char csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

const struct asset *asset_find(const char *name)
{
    for (size_t i = 0; i < assets_count; i++) {
        if (strcmp(assets[i].name, name) == 0) {
            return &assets[i];
        }
    }
    return NULL;
}

static void security_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Security-Policy", csp);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
}

static enum MHD_Result serve_asset(const struct http_req *r, const struct asset *a)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *inm =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    int fresh = inm && strcmp(inm, a->etag) == 0;
    struct MHD_Response *resp =
        fresh ? MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT)
              : MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        return MHD_NO;
    }
    if (!fresh) {
        MHD_add_response_header(resp, "Content-Type", a->content_type);
    }
    MHD_add_response_header(resp, "ETag", a->etag);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    security_headers(resp);
    enum MHD_Result rc =
        MHD_queue_response(r->conn, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result api_index(const struct http_req *r)
{
    const struct asset *a = asset_find("index.html");
    if (!a) {
        return http_error(r, MHD_HTTP_NOT_FOUND, "this build has no dashboard");
    }
    return serve_asset(r, a);
}

enum MHD_Result api_asset(const struct http_req *r)
{
    const char *name = http_path_param(r, "name");
    const struct asset *a = name ? asset_find(name) : NULL;
    if (!a) {
        return http_error(r, MHD_HTTP_NOT_FOUND, "no such asset: %.200s", name ? name : "");
    }
    return serve_asset(r, a);
}

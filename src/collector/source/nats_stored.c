/*
 * nats_stored.c - decoding a STREAM.MSG.GET reply (nats_stored.h): jansson for the JSON,
 * GnuTLS's base64 decoder for the headers and the body, each length checked first.
 */
#include "collector/source/nats_stored.h"

#include <gnutls/gnutls.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STORED_HDRS_MAX 4096 /* the headers the source reads: one Nats-Msg-Id */

/* Decode base64 text s (len bytes) into a new buffer of at most max bytes. 0, or -1. */
static int b64(const char *s, size_t len, size_t max, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (len == 0) {
        return 0;
    }
    if (len / 4 * 3 > max + 2 || len > (size_t)UINT32_MAX) {
        return -1; /* the decoded length is at least len / 4 * 3 - 2 */
    }
    gnutls_datum_t in = {(unsigned char *)(uintptr_t)s, (unsigned)len}, res = {NULL, 0};
    if (gnutls_base64_decode2(&in, &res) != 0) {
        return -1;
    }
    if (res.size > max) {
        gnutls_free(res.data);
        return -1;
    }
    uint8_t *copy = malloc(res.size ? res.size : 1);
    if (!copy) {
        gnutls_free(res.data);
        return -1;
    }
    memcpy(copy, res.data, res.size);
    gnutls_free(res.data);
    *out = copy;
    *outlen = res.size;
    return 0;
}

/* The Nats-Msg-Id value in a header block ("NATS/1.0\r\nName: value\r\n...\r\n\r\n"). 1 found
 * (into id), 0 absent, -1 malformed or too long. */
static int header_msg_id(const uint8_t *h, size_t n, char *id, size_t idn)
{
    static const char name[] = "Nats-Msg-Id";
    size_t i = 0;
    while (i < n && h[i] != '\n') {
        i++; /* the status line */
    }
    while (++i < n) {
        size_t end = i;
        while (end < n && h[end] != '\n') {
            end++;
        }
        size_t line = end - i;
        if (line > 0 && h[i + line - 1] == '\r') {
            line--;
        }
        const char *l = (const char *)h + i;
        if (line > sizeof name && l[sizeof name - 1] == ':' &&
            strncasecmp(l, name, sizeof name - 1) == 0) {
            size_t v = sizeof name;
            while (v < line && (l[v] == ' ' || l[v] == '\t')) {
                v++;
            }
            if (line - v >= idn) {
                return -1;
            }
            memcpy(id, l + v, line - v);
            id[line - v] = 0;
            return 1;
        }
        i = end;
    }
    return 0;
}

int nats_stored_parse(const char *json, size_t n, size_t max_data, struct nats_stored *out,
                      const char **why)
{
    memset(out, 0, sizeof *out);
    *why = "";
    json_t *root = json_loadb(json, n, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        *why = "not a JSON object";
        return -1;
    }
    int rc = -1;
    json_t *msg = json_object_get(root, "message");
    json_t *seq = json_object_get(msg, "seq");
    json_t *subj = json_object_get(msg, "subject");
    json_t *hdrs = json_object_get(msg, "hdrs");
    json_t *data = json_object_get(msg, "data");
    uint8_t *hb = NULL;
    size_t hn = 0;
    if (!msg) {
        rc = json_object_get(root, "error") ? 1 : -1;
        *why = rc > 0 ? "no such message" : "neither a message nor an error";
        goto out;
    }
    if (!json_is_integer(seq) || json_integer_value(seq) <= 0 || !json_is_string(subj) ||
        (hdrs && !json_is_string(hdrs)) || (data && !json_is_string(data))) {
        *why = "a field missing or of the wrong type";
        goto out;
    }
    out->seq = (uint64_t)json_integer_value(seq);
    if (json_string_length(subj) == 0 || json_string_length(subj) >= sizeof out->subject) {
        *why = "subject empty or too long";
        goto out;
    }
    memcpy(out->subject, json_string_value(subj), json_string_length(subj) + 1);
    if (hdrs) {
        if (b64(json_string_value(hdrs), json_string_length(hdrs), STORED_HDRS_MAX, &hb, &hn) !=
            0) {
            *why = "headers not base64 or too long";
            goto out;
        }
        int got = header_msg_id(hb, hn, out->msg_id, sizeof out->msg_id);
        if (got < 0) {
            *why = "Nats-Msg-Id too long";
            goto out;
        }
        out->has_msg_id = got;
    }
    if (data && b64(json_string_value(data), json_string_length(data), max_data, &out->data,
                    &out->len) != 0) {
        *why = "body not base64 or too large";
        goto out;
    }
    rc = 0;
out:
    free(hb);
    json_decref(root);
    if (rc != 0) {
        nats_stored_free(out);
    }
    return rc;
}

void nats_stored_free(struct nats_stored *m)
{
    free(m->data);
    m->data = NULL;
    m->len = 0;
}

/*
 * assets.h - the dashboard's files, embedded at build time: web/assets_gen.c (generated,
 * committed outside src/) is written by tools/embed_assets.c from web/assets.txt
 * (`make assets`), and api/assets.c serves them at GET / and GET /assets/{name}.
 */
#ifndef TT_COLLECTOR_ASSETS_H
#define TT_COLLECTOR_ASSETS_H

#include <stddef.h>

struct asset {
    const char *name;         /* "app.js" */
    const char *content_type; /* "text/javascript; charset=utf-8" */
    const char *etag;         /* "\"0123456789abcdef\"": FNV-1a 64 of the bytes */
    const unsigned char *data;
    size_t len;
};

extern const struct asset assets[];
extern const size_t assets_count;

/* The asset called name, or NULL. */
const struct asset *asset_find(const char *name);

#endif

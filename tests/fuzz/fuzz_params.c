/*
 * fuzz_params.c - libFuzzer harness for the HTTP API's query parameter parsers (api/params.c):
 * event kinds, severities, instance ids, limits and times, with the value as a peer sends it.
 * Besides "no crash, no undefined behaviour", each accepted value is checked against what the
 * parser promises (digits only, a non-empty mask, a round trip of the hex id).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/api/params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int digits(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) {
        return 0;
    }
    char *s = malloc(size + 1);
    if (!s) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = 0; /* an embedded NUL ends the value, as libmicrohttpd hands it over */
    uint32_t mask = 0;
    if (params_kinds(s, &mask) == 0 && mask == 0) {
        abort();
    }
    uint32_t sev = 0;
    if (params_severity(s, &sev) == 0 && (sev < 1 || sev > 24)) {
        abort();
    }
    uint8_t id[16];
    if (params_hex16(s, id) == 0) {
        char back[33];
        for (int i = 0; i < 16; i++) {
            snprintf(back + 2 * i, 3, "%02x", id[i]);
        }
        if (strlen(s) != 32 || strncasecmp(back, s, 32) != 0) {
            abort();
        }
    }
    uint64_t lim = 0;
    if (params_limit(s, 7, 100000, &lim) == 0 && (!digits(s) || lim > 100000)) {
        abort();
    }
    int64_t t;
    if (http_parse_time(s, &t) == 0 && !(digits(s + (s[0] == '-')) || strchr(s, 'Z'))) {
        abort();
    }
    free(s);
    return 0;
}

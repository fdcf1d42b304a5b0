/*
 * fuzz_host.c - libFuzzer harness for the Host header check (api/browser.c), which parses a
 * header every peer controls: the input is split at its first NUL into the --allowed-hosts list
 * and the Host value; the first byte picks the listening address (loopback, wildcard, other).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const selves[] = {"127.0.0.1", "0.0.0.0", "::", "10.1.2.3", "::1"};
    if (size < 1 || size > 8192) {
        return 0;
    }
    struct http_ctx c;
    memset(&c, 0, sizeof c);
    snprintf(c.self_host, sizeof c.self_host, "%s", selves[data[0] % 5]);
    c.self_port = 7371;
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    const uint8_t *nul = memchr(rest, 0, n);
    size_t list_len = nul ? (size_t)(nul - rest) : 0;
    if (list_len < sizeof c.allowed_hosts) {
        memcpy(c.allowed_hosts, rest, list_len);
        c.allowed_hosts[list_len] = 0;
    }
    size_t off = nul ? list_len + 1 : 0;
    char *host = malloc(n - off + 1); /* exactly sized: ASan sees any overread */
    if (!host) {
        return 0;
    }
    memcpy(host, rest + off, n - off);
    host[n - off] = 0;
    (void)browser_host_ok(&c, host);
    free(host);
    return 0;
}

/*
 * fuzz_comply.c - libFuzzer harness for the compliance checks (src/common/comply.c): any bytes
 * as a policy file, and as a step's query and a log's text run through the SQL classifier,
 * the host check, the PII recognisers and redaction. Redaction must stay within its output,
 * count what it masks and leave no value of the kinds it masked in its output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/comply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tt__comply_policy p;
    const char *s = (const char *)data;
    char err[256];
    if (tt__comply_parse(&p, s, size, err, sizeof err) != 0) {
        if (!err[0] || !memchr(err, 0, sizeof err)) {
            abort();
        }
    } else if (p.n_rules > TT_COMPLY_MAX_RULES) {
        abort();
    }
    char why[96];
    uint32_t sql = tt__comply_sql(s, size, why, sizeof why);
    if (sql && !why[0]) {
        abort();
    }
    const char allow[2][128] = {"api.example.com", "*.example.org"};
    char host[128];
    (void)tt__comply_host_allowed(s, size, allow, 2, host, sizeof host);
    if (!memchr(host, 0, sizeof host)) {
        abort();
    }
    static char out[2 * 65536 + 64];
    uint64_t masked = 0;
    size_t n = tt__comply_redact(s, size, TT_PII_ALL, out, sizeof out, &masked);
    if (n > sizeof out) {
        abort();
    }
    struct tt__comply_find f;
    if (n < sizeof out && tt__comply_pii_find(out, n, 0, TT_PII_CARD | TT_PII_JWT, &f)) {
        abort(); /* a card or token survived redaction */
    }
    struct tt__comply_verdict v;
    uint64_t calls[TT_COMPLY_MAX_LIMITS] = {size, 0, 1, 2, 3, 4, 5, 6};
    (void)tt__comply_step(&p, size ? data[0] % 9 : 2, s, size, s, size, calls, &v);
    return 0;
}

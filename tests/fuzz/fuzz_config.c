/*
 * fuzz_config.c - libFuzzer harness for the alerting configuration file (`telltale serve
 * --config`, alerting/config.c): any bytes as the file's text. An accepted configuration must
 * hold within its bounds: at most MON_UNITS_MAX detectors and MON_HOOKS_MAX webhooks, each
 * named, each webhook with a URL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/alerting/monitor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mon_config cfg; /* large */
    char err[512];
    if (mon_config_parse(&cfg, (const char *)data, size, "fuzz.conf", err, sizeof err) != 0) {
        if (!err[0] || !memchr(err, 0, sizeof err)) {
            abort(); /* a refusal always says why */
        }
        return 0;
    }
    if (cfg.n_units < 0 || cfg.n_units > MON_UNITS_MAX || cfg.n_hooks < 0 ||
        cfg.n_hooks > MON_HOOKS_MAX) {
        abort();
    }
    for (int i = 0; i < cfg.n_units; i++) {
        if (!cfg.units[i].name[0]) {
            abort();
        }
    }
    for (int i = 0; i < cfg.n_hooks; i++) {
        if (!cfg.hooks[i].name[0] || !cfg.hooks[i].url[0]) {
            abort();
        }
    }
    return 0;
}

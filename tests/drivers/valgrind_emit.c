/*
 * valgrind_emit.c - the driver of tests/integration/test_valgrind.c: emits events whose strings
 * are heap blocks of exactly their length (0 to 40 bytes, as message, attribute key and value,
 * metric name and unit, step name and query), so that Valgrind's memcheck sees any byte the
 * library reads past a string. The events go to an endpoint where nothing listens (the worker
 * retries in the background); the client closes with a short deadline.
 *
 *   valgrind --error-exitcode=9 valgrind_emit ENDPOINT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <telltale.h>

/* A heap string of n bytes plus its terminator, nothing more. */
static char *heap_str(size_t n, char base)
{
    char *s = malloc(n + 1);
    if (!s) {
        exit(3);
    }
    for (size_t i = 0; i < n; i++) {
        s[i] = (char)(base + (char)(i % 23));
    }
    s[n] = 0;
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: valgrind_emit ENDPOINT\n");
        return 2;
    }
    tt_config *cfg = NULL;
    tt_client *c = NULL;
    if (tt_config_new(&cfg) != 0 || tt_config_set(cfg, "endpoint", argv[1]) != 0 ||
        tt_config_set(cfg, "agent", "valgrind") != 0 || tt_open(&c, cfg) != 0) {
        fprintf(stderr, "valgrind_emit: cannot open a client\n");
        return 1;
    }
    tt_config_free(cfg);
    int refused = 0;
    for (size_t n = 0; n <= 40; n++) {
        char *msg = heap_str(n, 'a'), *key = heap_str(n, 'A'), *val = heap_str(n, '0');
        tt_attr attrs[2] = {TT_STR(key, val), TT_INT("i", (int64_t)n)};
        refused += tt_log(c, msg, TT_INFO, msg, attrs, 2) != 0;
        refused += tt_metric(c, NULL, TT_GAUGE, msg, (double)n, val, attrs, 1) != 0;
        tt_step st;
        if (tt_step_begin(c, &st, NULL, TT_STEP_TOOL, NULL, key, val) == 0) {
            refused += tt_step_end(c, &st, TT_STATUS_OK, (int64_t)n, NULL) != 0;
        } else {
            refused++;
        }
        free(msg);
        free(key);
        free(val);
    }
    tt_stats s;
    tt_stats_get(c, &s, sizeof s);
    printf("{\"emitted\":%llu,\"refused\":%d}\n", (unsigned long long)s.emitted, refused);
    tt_close(c, 200);
    return refused ? 1 : 0;
}

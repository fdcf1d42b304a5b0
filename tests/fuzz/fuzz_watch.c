/*
 * fuzz_watch.c - libFuzzer harness for the collector's compliance checks
 * (src/collector/alerting/comply_watch.c): any bytes as a Batch payload from an agent; those
 * that pass the ingest decoder (tt__batch_parse, as native_conn.c calls it) go through the
 * watch's commit hook (the copies made on the loop thread: step begins, logs and their string
 * attributes, agents' decisions) and are judged at once under a policy with a rule of every
 * kind. Every record the collector makes must decode as a Batch of one log event carrying the
 * decision's attributes, with comply.by = collector and the name of one of the policy's rules.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/alerting/comply_watch.h"
#include "collector/store/store.h"
#include "common/batch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char policy_text[] =
    "[rule.sql]\nmatch = sql\naction = block\n"
    "[rule.shell]\nmatch = tool\nnames = shell, exec\naction = block\n"
    "[rule.agents]\nmatch = kind\nkinds = agent\n"
    "[rule.apis]\nmatch = host\nkinds = api\nallow = api.example.com\n"
    "[rule.pii]\nmatch = pii\naction = block\n"
    "[rule.budget]\nmatch = limit\ncalls = 1\naction = block\n";

static int bstr_is(tt__bstr s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static void sink(void *ctx, struct store_item *it)
{
    (void)ctx;
    tt__batch b;
    tt__batch_limits lim = {1, 16};
    const char *why = NULL;
    if (tt__batch_parse(&b, it->raw, it->raw_len, &lim, &why) != 0 || b.n_events != 1 ||
        b.kinds != 1u << TT_EV_LOG || strcmp(it->ident.agent, "fuzz-agent") != 0) {
        abort();
    }
    tt__event ev;
    tt__ev_log lg;
    if (!tt__batch_next(&b, &ev) || tt__ev_log_decode(ev.body, &lg) != 0 ||
        (lg.severity != 13 && lg.severity != 17)) {
        abort();
    }
    tt__attr_iter ai;
    tt__attr_val v;
    tt__attr_iter_init(&ai, ev.body, 3);
    int by = 0, rule = 0;
    while (tt__attr_next(&ai, &v)) {
        by += bstr_is(v.key, "comply.by") && bstr_is(v.s, "collector");
        rule += bstr_is(v.key, "comply.rule") &&
                (bstr_is(v.s, "sql") || bstr_is(v.s, "shell") || bstr_is(v.s, "agents") ||
                 bstr_is(v.s, "apis") || bstr_is(v.s, "pii"));
    }
    if (by != 1 || rule != 1) {
        abort();
    }
    store_item_free(it);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct watch *w;
    if (!w) {
        struct tt__comply_policy *p = malloc(sizeof *p);
        char err[256];
        if (!p || tt__comply_parse(p, policy_text, sizeof policy_text - 1, err, sizeof err) != 0 ||
            watch_open_detached(&w, p, sink, NULL) != 0) {
            abort();
        }
    }
    static struct store_item it;
    memset(&it, 0, sizeof it);
    tt__batch_limits lim = {4096, 64};
    const char *why = NULL;
    if (tt__batch_parse(&it.batch, data, size, &lim, &why) != 0) {
        return 0;
    }
    strcpy(it.ident.agent, "fuzz-agent");
    strcpy(it.ident.identity, "uid:1000");
    watch_on_commit(w, &it);
    watch_judge_all(w);
    return 0;
}

/*
 * fuzz_export.c - libFuzzer harness for the OTLP export mapping (src/collector/export_encode.c):
 * any batch that parses is mapped into trace, log and metric requests, with one table of open
 * steps and responses kept across inputs (small, so that its eviction runs) the way the export
 * thread keeps it across batches. Checked besides "no crash": each request body is a sequence
 * of well-formed length-delimited resource messages (field 1) whose own fields are well formed;
 * every log and metric event is either mapped or counted unmatched, as export_batch_count
 * counts them for drops. Inputs are the fuzz_batch corpus's (first byte: ignored here).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/export.h"
#include "common/batch.h"
#include "common/pb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct export_open *open_table;

/* body: repeated field 1 (a ResourceX), each a message of fields 1 (Resource) and 2 (ScopeX). */
static void check_body(const tt__buf *b)
{
    tt__pb_reader r;
    tt__pb_reader_init(&r, b->data, b->len);
    uint32_t field, wt;
    int rc;
    while ((rc = tt__pb_next(&r, &field, &wt)) == 1) {
        size_t n;
        const uint8_t *p = tt__pb_bytes(&r, &n);
        if (field != 1 || wt != TT_PB_LEN || !p) {
            abort();
        }
        tt__pb_reader in;
        tt__pb_reader_init(&in, p, n);
        int rc2;
        while ((rc2 = tt__pb_next(&in, &field, &wt)) == 1) {
            if ((field != 1 && field != 2) || wt != TT_PB_LEN) {
                abort();
            }
            tt__pb_skip(&in, wt);
        }
        if (rc2 != 0 || in.err) {
            abort();
        }
    }
    if (rc != 0 || r.err) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20)) {
        return 0;
    }
    if (!open_table) {
        open_table = export_open_new(8);
    }
    struct agent_ident id;
    memset(&id, 0, sizeof id);
    strcpy(id.agent, "fuzz-agent");
    strcpy(id.host, "h");
    strcpy(id.library, "libtelltale/0");
    id.pid = 7;
    struct export_req req;
    export_req_init(&req, 64u << 20);
    uint64_t counts[EXP__SIGNALS];
    export_batch_count(data + 1, size - 1, counts);
    if (export_req_add(&req, open_table, &id, data + 1, size - 1) == 0) {
        for (int s = 0; s < EXP__SIGNALS; s++) {
            check_body(&req.body[s]);
            if (!req.items[s] != !req.body[s].len) {
                abort(); /* items, and only items, make a body */
            }
        }
        if (req.items[EXP_LOGS] + req.unmatched[EXP_LOGS] != counts[EXP_LOGS] ||
            req.items[EXP_POINTS] + req.unmatched[EXP_POINTS] != counts[EXP_POINTS]) {
            abort();
        }
    }
    export_req_fini(&req);
    return 0;
}

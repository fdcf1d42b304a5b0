/*
 * fuzz_batch.c - libFuzzer harness for the Batch and event decoders (common/batch.c) fed
 * directly, without a frame around them (fuzz_frame.c reaches them through framing, CRCs and
 * decompression; here every mutation lands in the decoders), and for the live stream's rendering
 * with fields cut at a small bound (token texts included). Checked besides "no crash": a batch
 * that parses yields exactly n_events events with consecutive sequence numbers, and a cut
 * rendering stays within its bound.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/render.h"
#include "common/batch.h"
#include "common/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIELD_MAX 64u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20)) {
        return 0;
    }
    /* The first byte picks the limits, so the caps' edges get explored too. */
    tt__batch_limits lim = {1u + (data[0] & 0x0f) * 64u, 1u + (data[0] >> 4) * 16u};
    tt__batch b;
    const char *why = NULL;
    if (tt__batch_parse(&b, data + 1, size - 1, &lim, &why) != 0) {
        if (!why) {
            abort(); /* a refusal always has a reason */
        }
        return 0;
    }
    if (b.n_events > lim.max_events) {
        abort();
    }
    tt__buf out;
    tt__buf_init(&out, 1u << 22);
    tt__event ev;
    uint32_t n = 0;
    while (tt__batch_next(&b, &ev)) {
        if (ev.seq != b.first_seq + n) {
            abort();
        }
        n++;
        tt__buf_reset(&out);
        tt__json j;
        tt__json_init(&j, &out);
        j.str_max = FIELD_MAX;
        render_event(&j, "fuzz", b.instance, &ev);
        /* Each string is at most FIELD_MAX bytes escaped six-fold plus its marker; an event
         * has a bounded number of strings (attributes are capped by lim.max_attrs). */
        size_t bound = (size_t)(lim.max_attrs * 2 + 64) * (FIELD_MAX * 6 + 64) + 4096;
        /* Packed numbers and a tokens chunk's texts render in proportion to the body: at most
         * 8 bytes out per byte in (an empty text is 2 bytes in, 3 out; a float 4 in, < 26 out). */
        bound += 8 * ev.body.n;
        if (!j.err && out.len > bound) {
            abort();
        }
        (void)tt__event_matches(&ev, "s", 1u << (ev.kind & 15), 9);
    }
    if (n != b.n_events) {
        abort(); /* the parse promised every event decodes */
    }
    tt__buf_fini(&out);
    return 0;
}

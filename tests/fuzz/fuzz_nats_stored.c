/*
 * fuzz_nats_stored.c - libFuzzer harness for the decoder of JetStream's STREAM.MSG.GET replies
 * (src/collector/source/nats_stored.c), which the NATS source's sweep reads from the broker:
 * arbitrary bytes as the reply, with a body limit chosen by the input's length so that the
 * limit is met on both sides. A decoded message is read through and freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/source/nats_stored.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nats_stored m;
    const char *why = NULL;
    size_t max = size & 1 ? 64 : 1u << 20;
    int rc = nats_stored_parse((const char *)data, size, max, &m, &why);
    if (!why) {
        abort(); /* always set */
    }
    if (rc == 0) {
        if (m.len > max || (m.len && !m.data) || !m.seq || !m.subject[0] ||
            strlen(m.subject) >= sizeof m.subject || strlen(m.msg_id) >= sizeof m.msg_id ||
            (!m.has_msg_id && m.msg_id[0])) {
            abort();
        }
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < m.len; i++) {
            sum ^= m.data[i];
        }
        (void)sum;
        nats_stored_free(&m);
    } else if (m.data || m.len) {
        abort(); /* nothing left to free after a failure */
    }
    return 0;
}

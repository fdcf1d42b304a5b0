/*
 * stats.c - the collector's counters (collector.h) and the names of refusal reasons, shared by
 * every source and read by /metrics and /api/v1/status.
 */
#include "collector/collector.h"

struct collector_stats cstats;

const char *reject_name(int reason)
{
    static const char *const names[REJ__COUNT] = {"frame_too_large",
                                                  "bad_crc",
                                                  "bad_header",
                                                  "decompressed_too_large",
                                                  "bad_compression",
                                                  "bad_payload",
                                                  "truncated",
                                                  "no_hello",
                                                  "bad_hello",
                                                  "protocol",
                                                  "auth",
                                                  "too_many_connections",
                                                  "seq_overlap",
                                                  "hello_timeout",
                                                  "idle_timeout",
                                                  "store_error",
                                                  "peer",
                                                  "identity",
                                                  "slow_frame",
                                                  "tls_handshake"};
    return reason >= 0 && reason < REJ__COUNT ? names[reason] : "unknown";
}

/*
 * emit_lttng_tp.h - the LTTng-UST tracepoint provider of the emit benchmark: one event,
 * telltale_bench:example, with the payload of the other contenders (two 64-bit integers and a
 * double). The message "example" is the event's name, as a static format string would be.
 */
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER telltale_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "./emit_lttng_tp.h"

#if !defined(TT_BENCH_EMIT_LTTNG_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define TT_BENCH_EMIT_LTTNG_TP_H

#include <lttng/tracepoint.h>
#include <stdint.h>

LTTNG_UST_TRACEPOINT_EVENT(telltale_bench, example,
                           LTTNG_UST_TP_ARGS(int64_t, a, int64_t, b, double, x),
                           LTTNG_UST_TP_FIELDS(lttng_ust_field_integer(int64_t, a, a)
                                                   lttng_ust_field_integer(int64_t, b, b)
                                                       lttng_ust_field_float(double, x, x)))

#endif

#include <lttng/tracepoint-event.h>

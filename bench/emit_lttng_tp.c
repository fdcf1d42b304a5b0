/*
 * emit_lttng_tp.c - instantiates the probes of bench/emit_lttng_tp.h (once per program).
 */
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "emit_lttng_tp.h"

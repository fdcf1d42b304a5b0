/*
 * emit_nots.h - forced into a benchmark-only build of src/client/emit.c (gcc -include) to take
 * the timestamp out of the hot path: every event is stamped with one constant, read from
 * memory, instead of the TSC. Nothing else changes, so the difference between $(BENCH_DIR)/emit
 * and $(BENCH_DIR)/emit_nots is what the timestamp costs inside an emit. Never in the library.
 */
#ifndef TT_BENCH_EMIT_NOTS_H
#define TT_BENCH_EMIT_NOTS_H

#include "common/clock.h"

/* Set once by the benchmark before the client opens (bench/emit.c, EMIT_NOTS). */
extern uint64_t tt__bench_fixed_ticks;

#define tt__ticks() (tt__bench_fixed_ticks)

#endif

/*
 * clock.h - the cheap clock of the hot path and its conversion to wall time off the hot path.
 *
 * Producers stamp events with tt__ticks(): the TSC when the CPU says it is invariant (about
 * 10 ns here), otherwise CLOCK_MONOTONIC in nanoseconds. The worker converts ticks to Unix
 * nanoseconds with a calibration it refines over time: wall time is derived from the monotonic
 * clock plus the offset measured at calibration, so a wall-clock step during a run does not
 * reorder events.
 */
#ifndef TT_COMMON_CLOCK_H
#define TT_COMMON_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "common/compat.h"

/* 1 when ticks are TSC cycles, 0 when they are monotonic nanoseconds. Set by
 * tt__clock_init(); read-only afterwards. */
extern int tt__clock_tsc;

void tt__clock_init(void);

/* The ticks of the instant ns nanoseconds ago (0 if before the clock's origin), for an event
 * that happened before it is recorded. The TSC's rate is measured against the monotonic clock
 * since tt__clock_init; within 10 ms of it, this waits for the rest of the 10 ms. Not for the
 * hot path (a few clock reads). */
uint64_t tt__ticks_ago(uint64_t ns);

static inline uint64_t tt__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Initialize cv to wait on CLOCK_MONOTONIC (deadlines from tt__deadline_ms(CLOCK_MONOTONIC,
 * ...)), so that a wall-clock step neither shortens nor stretches a wait. */
void tt__cond_init_mono(pthread_cond_t *cv);

/* The time ms milliseconds from now on clock clk (the clock of the condition variable it is
 * for), as pthread_cond_timedwait wants it. */
static inline struct timespec tt__deadline_ms(clockid_t clk, uint64_t ms)
{
    struct timespec t;
    clock_gettime(clk, &t);
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static inline uint64_t tt__wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t tt__ticks(void)
{
    if (TT_LIKELY(tt__clock_tsc)) {
        return __builtin_ia32_rdtsc();
    }
    return tt__mono_ns();
}

/* A conversion from ticks to nanoseconds. Owned by one thread (the worker). */
typedef struct tt__clock_cal {
    uint64_t tick0;      /* ticks at the first calibration */
    uint64_t mono0;      /* monotonic ns at the first calibration */
    uint64_t tick_ref;   /* ticks at the latest calibration */
    uint64_t mono_ref;   /* monotonic ns at the latest calibration */
    double ns_per_tick;  /* refined at each calibration */
    int64_t wall_offset; /* realtime - monotonic, ns, measured once */
} tt__clock_cal;

void tt__clock_cal_init(tt__clock_cal *cal);

/* Refine the rate over the whole time since init; cheap, call about once a second. */
void tt__clock_cal_update(tt__clock_cal *cal);

/* Ticks to monotonic ns, and to Unix ns. */
static inline uint64_t tt__clock_mono(const tt__clock_cal *cal, uint64_t ticks)
{
    int64_t d = (int64_t)(ticks - cal->tick_ref);
    return cal->mono_ref + (uint64_t)(int64_t)((double)d * cal->ns_per_tick);
}

static inline uint64_t tt__clock_unix(const tt__clock_cal *cal, uint64_t ticks)
{
    return tt__clock_mono(cal, ticks) + (uint64_t)cal->wall_offset;
}

/* A duration in ticks as nanoseconds. */
static inline uint64_t tt__clock_dur(const tt__clock_cal *cal, uint64_t ticks)
{
    return (uint64_t)((double)ticks * cal->ns_per_tick);
}

#endif

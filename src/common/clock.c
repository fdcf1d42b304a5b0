/*
 * clock.c - choosing the tick source and calibrating ticks against CLOCK_MONOTONIC.
 *
 * The TSC is used only when CPUID reports an invariant TSC (constant rate in every P- and
 * C-state, synchronised across cores); TELLTALE_CLOCK=monotonic forces the portable source.
 * The first calibration spins for about 2 ms; later ones measure the rate over the whole run,
 * so the error shrinks as the run gets longer.
 */
#include "common/clock.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

int tt__clock_tsc;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;
/* Ticks and monotonic ns when the clock was decided: tt__ticks_ago's rate. Read-only after. */
static uint64_t clock_tick0, clock_mono0;

static void sample(uint64_t *ticks, uint64_t *mono);

static int tsc_invariant(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u) {
        return 0;
    }
    __get_cpuid(0x80000007u, &a, &b, &c, &d);
    return (d >> 8) & 1;
}

static void clock_decide(void)
{
    const char *force = getenv("TELLTALE_CLOCK");
    if (force && strcmp(force, "monotonic") == 0) {
        tt__clock_tsc = 0;
        return;
    }
    tt__clock_tsc = tsc_invariant();
    sample(&clock_tick0, &clock_mono0);
}

void tt__clock_init(void)
{
    pthread_once(&clock_once, clock_decide);
}

/* Read ticks and monotonic ns as close together as possible: keep the tightest of a few. */
static void sample(uint64_t *ticks, uint64_t *mono)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = tt__ticks();
        uint64_t m = tt__mono_ns();
        uint64_t t1 = tt__ticks();
        if (t1 - t0 < best) {
            best = t1 - t0;
            *ticks = t0 + (t1 - t0) / 2;
            *mono = m;
        }
    }
}

void tt__clock_cal_init(tt__clock_cal *cal)
{
    tt__clock_init();
    memset(cal, 0, sizeof *cal);
    cal->wall_offset = (int64_t)(tt__wall_ns() - tt__mono_ns());
    sample(&cal->tick0, &cal->mono0);
    cal->tick_ref = cal->tick0;
    cal->mono_ref = cal->mono0;
    if (!tt__clock_tsc) {
        cal->ns_per_tick = 1.0;
        return;
    }
    uint64_t t1, m1;
    do {
        sample(&t1, &m1);
    } while (m1 - cal->mono0 < 2000000);
    cal->ns_per_tick = (double)(m1 - cal->mono0) / (double)(t1 - cal->tick0);
    cal->tick_ref = t1;
    cal->mono_ref = m1;
}

void tt__clock_cal_update(tt__clock_cal *cal)
{
    if (!tt__clock_tsc) {
        return;
    }
    uint64_t t, m;
    sample(&t, &m);
    if (t <= cal->tick0 || m <= cal->mono0) {
        return;
    }
    cal->ns_per_tick = (double)(m - cal->mono0) / (double)(t - cal->tick0);
    cal->tick_ref = t;
    cal->mono_ref = m;
}

uint64_t tt__ticks_ago(uint64_t ns)
{
    tt__clock_init();
    if (!tt__clock_tsc) {
        uint64_t now = tt__mono_ns();
        return ns < now ? now - ns : 0;
    }
    uint64_t t, m;
    sample(&t, &m);
    if (m - clock_mono0 < 10000000u) { /* too short a base for the rate: wait for 10 ms */
        struct timespec d = {0, (long)(10000000u - (m - clock_mono0))};
        nanosleep(&d, NULL);
        sample(&t, &m);
    }
    double ns_per_tick = (double)(m - clock_mono0) / (double)(t - clock_tick0);
    double back = (double)ns / ns_per_tick;
    return back < (double)t ? t - (uint64_t)back : 0;
}

void tt__cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

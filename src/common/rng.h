/*
 * rng.h - a small seeded pseudo-random generator for tests, benchmarks and synthetic streams:
 * xoshiro256** (Blackman and Vigna) seeded through splitmix64, uniform doubles in (0, 1] and
 * standard normal deviates by the Box-Muller transform.
 *
 * It exists so that every statistical test and benchmark of the project is reproducible from a
 * seed on any libc (rand() and random() differ between systems). It is not for secrets: instance
 * ids and tokens come from getrandom().
 *
 * The state is plain caller storage with no locking: one generator per thread.
 */
#ifndef TT_COMMON_RNG_H
#define TT_COMMON_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct tt__rng {
    uint64_t s[4];  /* xoshiro256** state; never all zero once seeded */
    double spare;   /* the second deviate of the last Box-Muller pair */
    int have_spare; /* 1 when spare has not been handed out yet */
} tt__rng;

static inline uint64_t tt__rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* splitmix64 spreads a small seed over the whole state, so that seeds 1, 2, 3... give
 * unrelated streams and the all-zero state cannot occur. */
static inline uint64_t tt__rng_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static inline void tt__rng_seed(tt__rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        r->s[i] = tt__rng_splitmix(&seed);
    }
    r->spare = 0.0;
    r->have_spare = 0;
}

static inline uint64_t tt__rng_next(tt__rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = tt__rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = tt__rng_rotl(s[3], 45);
    return result;
}

/* Uniform in (0, 1], with 53 random bits. Zero is excluded so that log() is always finite. */
static inline double tt__rng_uniform(tt__rng *r)
{
    return (double)((tt__rng_next(r) >> 11) + 1) * 0x1.0p-53;
}

/* A standard normal deviate. Box-Muller makes two per pair of uniforms; the second is kept for
 * the next call, which halves the cost of the logarithm, square root and sine. */
static inline double tt__rng_gauss(tt__rng *r)
{
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    double u1 = tt__rng_uniform(r);
    double u2 = tt__rng_uniform(r);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586476925 * u2;
    r->spare = radius * sin(angle);
    r->have_spare = 1;
    return radius * cos(angle);
}

#endif

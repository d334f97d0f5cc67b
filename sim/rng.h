/*  rng.h: the simulator's seeded pseudo-random numbers.
 *
 *  xoshiro256** (Blackman and Vigna), its state filled from the seed by
 *  splitmix64: the same seed gives the same sequence on every machine and
 *  build, which is what makes a scenario replayable (docs/SIMULATION.md).
 *  Not for cryptography. A sim_rng_t belongs to one thread; the planner is
 *  its only user. Header-only: every function is static inline, none fails.
 */
#ifndef CW_SIM_RNG_H
#define CW_SIM_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];  /* xoshiro256** state, never all zero */
} sim_rng_t;

static inline uint64_t sim_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void sim_rng_seed(sim_rng_t *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = sim_splitmix64(&x);
}

static inline uint64_t sim_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t sim_rng_next(sim_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = sim_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = sim_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n), n > 0, without modulo bias (rejection). */
static inline uint64_t sim_rng_below(sim_rng_t *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do
        v = sim_rng_next(r);
    while (v >= limit);
    return v % n;
}

/* Uniform in [lo, hi] (inclusive), lo <= hi. */
static inline int64_t sim_rng_range(sim_rng_t *r, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t) sim_rng_below(r, (uint64_t) (hi - lo) + 1);
}

#endif

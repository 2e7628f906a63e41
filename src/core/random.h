/* A small seeded generator (splitmix64) whose streams are the same on
 * every machine, for everything the library draws at random. */
#ifndef TSR_CORE_RANDOM_H
#define TSR_CORE_RANDOM_H

#include <stdint.h>

typedef struct tsr_random {
    uint64_t state;
} tsr_random;

void tsr_random_seed(tsr_random *r, uint64_t seed);
uint64_t tsr_random_next(tsr_random *r);
/* The value tsr_random_next draws from state z: a stateless mix of z, for
 * streams keyed by a counter. */
uint64_t tsr_random_hash(uint64_t z);
/* Uniform in [0, 1), 53 random bits. */
double tsr_random_uniform(tsr_random *r);
/* Standard normal (Box-Muller, one value per two draws). */
double tsr_random_normal(tsr_random *r);

#endif

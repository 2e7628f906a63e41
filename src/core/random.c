#include "core/random.h"

#include <math.h>

void tsr_random_seed(tsr_random *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t tsr_random_hash(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t tsr_random_next(tsr_random *r)
{
    uint64_t z = tsr_random_hash(r->state);
    r->state += 0x9e3779b97f4a7c15ULL;
    return z;
}

double tsr_random_uniform(tsr_random *r)
{
    return (double)(tsr_random_next(r) >> 11) * 0x1.0p-53;
}

double tsr_random_normal(tsr_random *r)
{
    double u1 = 1.0 - tsr_random_uniform(r); /* (0, 1]: the log is finite */
    double u2 = tsr_random_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

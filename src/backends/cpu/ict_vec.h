/* Vectors of channels for the ICTP kernels (kernels_ict.c, kernels_ict_edge.c):
 * 64 bytes (16 float32 or 8 float64 lanes, one AVX-512 register, two AVX2
 * ones) as GCC/Clang vector types, loaded and stored with memcpy so that any
 * alignment works; a tail of n < lanes values leaves the other lanes zero. */
#ifndef TSR_CPU_ICT_VEC_H
#define TSR_CPU_ICT_VEC_H

#include "backends/cpu/kernels_internal.h"

#include <stdint.h>
#include <string.h>

#define ICT_VEC_BYTES 64

/* Threads for an ICTP kernel of `work` multiply-adds. A model evaluation
 * runs hundreds of these nodes, most of them tens of microseconds at a
 * molecule's size, where waking the second thread (and on a busy machine
 * waiting for its core) costs more than the half it takes; so a team
 * starts only at ICT_THREAD_SCALE times the work tsr_cpu_threads_for asks
 * of the other kernels. */
#define ICT_THREAD_SCALE 16

static inline int ict_threads_for(int threads, int64_t work)
{
    return tsr_cpu_threads_for(threads, work / ICT_THREAD_SCALE);
}

/* v = n values from p (n at most a vector's lanes), the lanes from n on zero:
 * a whole vector loads in one move (a memcpy of constant size), a tail lane
 * by lane, so that v never needs an address and stays in a register. */
#define ICT_VEC_LOAD(v, p, n)                                                                      \
    do {                                                                                           \
        if ((size_t)(n) * sizeof((v)[0]) == sizeof(v)) {                                           \
            memcpy(&(v), (p), sizeof(v));                                                          \
        } else {                                                                                   \
            __typeof__(v) t_ = {0};                                                                \
            for (size_t i_ = 0; i_ < (size_t)(n); i_++)                                            \
                t_[i_] = (p)[i_];                                                                  \
            (v) = t_;                                                                              \
        }                                                                                          \
    } while (0)

/* The first n lanes of v to p. */
#define ICT_VEC_STORE(p, v, n)                                                                     \
    do {                                                                                           \
        if ((size_t)(n) * sizeof((v)[0]) == sizeof(v)) {                                           \
            memcpy((p), &(v), sizeof(v));                                                          \
        } else {                                                                                   \
            for (size_t i_ = 0; i_ < (size_t)(n); i_++)                                            \
                (p)[i_] = (v)[i_];                                                                 \
        }                                                                                          \
    } while (0)

/* out = the sum of v's lanes, as a tree: the halves of v added as vectors
 * (32 then 16 bytes), then the last 16 bytes' lanes. */
#define ICT_VEC_HSUM(T, v, out)                                                                    \
    do {                                                                                           \
        typedef T ict_h32_ __attribute__((vector_size(32)));                                       \
        typedef T ict_h16_ __attribute__((vector_size(16)));                                       \
        ict_h32_ lo_, hi_;                                                                         \
        ict_h16_ a_, b_;                                                                           \
        memcpy(&lo_, &(v), sizeof lo_);                                                            \
        memcpy(&hi_, (const char *)&(v) + sizeof lo_, sizeof hi_);                                 \
        lo_ += hi_;                                                                                \
        memcpy(&a_, &lo_, sizeof a_);                                                              \
        memcpy(&b_, (const char *)&lo_ + sizeof a_, sizeof b_);                                    \
        a_ += b_;                                                                                  \
        T s_ = 0;                                                                                  \
        for (size_t i_ = 0; i_ < sizeof a_ / sizeof(T); i_++)                                      \
            s_ += a_[i_];                                                                          \
        (out) = s_;                                                                                \
    } while (0)

#endif

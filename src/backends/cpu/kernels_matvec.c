/* The matrix-vector product of matvec.h: each thread takes a contiguous
 * slice of the output columns, which is a contiguous slice of B's rows
 * when B is [n, k] and a contiguous piece of every B row when it is
 * [k, n], computes the raw products with the ISA's tile, then applies
 * alpha, beta and C to its slice. */
#include "backends/cpu/matvec.h"
#include "backends/cpu/kernels_internal.h"

#include <omp.h>

#define TSR_SIMD_LEVEL 0
#include "backends/cpu/tiles_matvec.h"
#undef TSR_SIMD_LEVEL
#if TSR_CPU_X86
#define TSR_SIMD_LEVEL 1
#include "backends/cpu/tiles_matvec.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 2
#include "backends/cpu/tiles_matvec.h"
#undef TSR_SIMD_LEVEL
#elif TSR_CPU_ARM64
#define TSR_SIMD_LEVEL 3
#include "backends/cpu/tiles_matvec.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 4
#include "backends/cpu/tiles_matvec.h"
#undef TSR_SIMD_LEVEL
#endif

bool tsr_cpu_matvec_fits(int64_t m, int64_t k, int64_t n)
{
    /* 1 MiB of float32 weights: past a Zen 3 core's L2. One row of A stays
     * with oneDNN: on the 2-core Zen 3 its gemv streamed vgg16's
     * 25088x4096 classifier in 20-25 ms on one thread against this path's
     * 23-29 ms, while from two rows on this path took half oneDNN's time. */
    const int64_t min_weights = TSR_MATVEC_CACHED_FLOATS;
    /* Within the caches any row count up to the limit: a recurrent step's
     * [1, H] x [H, 4H] took oneDNN's gemm about 40 us at H = 128 (LSTM). */
    if (m >= 1 && m <= TSR_MATVEC_MAX_M && k >= 1 && n >= 1 && k * n < min_weights)
        return true;
    return m >= 2 && m <= TSR_MATVEC_MAX_M && k >= 1 && n >= 1 && k * n >= min_weights;
}

static void epilogue(const tsr_cpu_matvec *p, const float *c, float *y, int64_t j0, int64_t j1)
{
    if (p->alpha == 1.0f && !p->has_c)
        return;
    for (int64_t i = 0; i < p->m; i++)
        for (int64_t j = j0; j < j1; j++) {
            float v = p->alpha * y[i * p->n + j];
            if (p->has_c)
                v += p->beta * c[i * p->c_rs + j * p->c_cs];
            y[i * p->n + j] = v;
        }
}

void tsr_cpu_matvec_run(const tsr_cpu_matvec *p, const float *a, const float *b, const float *c,
                        float *y, int threads)
{
    int nt = tsr_cpu_threads_for(threads, p->k * p->n);
    /* Columns split in whole cache lines (of y's rows when n fills lines). */
    const int64_t align = 16;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), team = omp_get_num_threads();
        int64_t lines = (p->n + align - 1) / align;
        int64_t j0 = lines * t / team * align, j1 = lines * (t + 1) / team * align;
        j1 = j1 < p->n ? j1 : p->n;
        if (j0 < j1) {
#if TSR_CPU_X86
            if (p->isa == TSR_ISA_AVX512)
                matvec_slice_avx512(p, a, b, y, j0, j1);
            else if (p->isa == TSR_ISA_AVX2)
                matvec_slice_avx2(p, a, b, y, j0, j1);
            else
#elif TSR_CPU_ARM64
            if (p->isa == TSR_ISA_SVE)
                matvec_slice_sve(p, a, b, y, j0, j1);
            else if (p->isa == TSR_ISA_NEON)
                matvec_slice_neon(p, a, b, y, j0, j1);
            else
#endif
                matvec_slice_portable(p, a, b, y, j0, j1);
            epilogue(p, c, y, j0, j1);
        }
    }
}

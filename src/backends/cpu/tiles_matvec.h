/* Matrix-vector tiles, written once in the vector layer of simd.h and
 * included by kernels_matvec.c once per ISA level. A is [m, k] with m at
 * most TSR_MATVEC_MAX_M (a batch of a few vectors); the weight B streams
 * through once in the order it is stored, and each tile computes the raw
 * products y[i, j] = sum_k A[i, k] B(k, j) for the output columns
 * [j0, j1) of one thread. m is a compile-time constant in each instance,
 * so the accumulators stay in registers.
 * No include guard: included once per level. */
#include "backends/cpu/simd.h"

/* Floats per step along a B row: one 64-byte cache line. */
#define MV_LINE 16
#define MV_NV (MV_LINE / SIMD_W)

/* B is [n, k] (Gemm with transB = 1, a classifier's weights): output j is
 * the dot of B's row j with each row of A. `rows` B rows at a time (4 for
 * one or two rows of A, 2 beyond, so that the m x rows accumulators stay
 * in registers), each a stream of its own, all m rows of A against them. */
#define MV_MAX_ROWS 4
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_rows_block)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y,
                         int64_t j, const int rows, const int m)
{
    const int64_t k = p->k, kl = k / MV_LINE * MV_LINE;
    const float *br[MV_MAX_ROWS];
    vf acc[TSR_MATVEC_MAX_M][MV_MAX_ROWS];
    for (int r = 0; r < rows; r++)
        br[r] = b + (j + r) * k;
    for (int i = 0; i < m; i++)
        for (int r = 0; r < rows; r++)
            acc[i][r] = vf_zero();
    for (int64_t x = 0; x < kl; x += MV_LINE) {
        for (int r = 0; r < rows; r++)
            __builtin_prefetch(br[r] + x + TSR_MATVEC_PREFETCH);
        for (int v = 0; v < MV_NV; v++) {
            vf w[MV_MAX_ROWS];
            for (int r = 0; r < rows; r++)
                w[r] = vf_load(br[r] + x + v * SIMD_W);
            for (int i = 0; i < m; i++) {
                vf av = vf_load(a + i * p->lda + x + v * SIMD_W);
                for (int r = 0; r < rows; r++)
                    acc[i][r] = vf_fmadd(av, w[r], acc[i][r]);
            }
        }
    }
    for (int i = 0; i < m; i++) {
        const float *ai = a + i * p->lda;
        for (int r = 0; r < rows; r++) {
            float lanes[SIMD_W];
            vf_store(lanes, acc[i][r]);
            float t = 0.0f;
            for (int l = 0; l < SIMD_W; l++)
                t += lanes[l];
            for (int64_t x = kl; x < k; x++)
                t += ai[x] * br[r][x];
            y[i * p->n + j + r] = t;
        }
    }
}

SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_rows_m)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y, int64_t j0,
                     int64_t j1, const int m)
{
    const int block = m <= 2 ? 4 : 2;
    int64_t j = j0;
    for (; j + block <= j1; j += block)
        SIMD_NAME(mv_rows_block)(p, a, b, y, j, block, m);
    for (; j < j1; j++)
        SIMD_NAME(mv_rows_block)(p, a, b, y, j, 1, m);
}
#undef MV_MAX_ROWS

/* y[i, j0..j1) += A[i, r] B[r, j0..j1) for rows r in [r0, r0 + rows) of B,
 * rows being 1 to 4. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_cols_step)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y,
                        int64_t j0, int64_t j1, int64_t r0, const int rows, const int m)
{
    const int64_t n = p->n;
    const float *br = b + r0 * n;
    vf ak[TSR_MATVEC_MAX_M][4];
    for (int i = 0; i < m; i++)
        for (int r = 0; r < rows; r++)
            ak[i][r] = vf_set1(a[i * p->lda + r0 + r]);
    int64_t j = j0;
    for (; j + SIMD_W <= j1; j += SIMD_W) {
        /* The same columns of the next pass's rows. */
        for (int r = 0; r < rows; r++)
            __builtin_prefetch(br + (rows + r) * n + j);
        vf w[4];
        for (int r = 0; r < rows; r++)
            w[r] = vf_load(br + r * n + j);
        for (int i = 0; i < m; i++) {
            vf acc = vf_load(y + i * n + j);
            for (int r = 0; r < rows; r++)
                acc = vf_fmadd(ak[i][r], w[r], acc);
            vf_store(y + i * n + j, acc);
        }
    }
    if (j < j1) {
        const int tail = (int)(j1 - j);
        vf w[4];
        for (int r = 0; r < rows; r++)
            w[r] = vf_load_n(br + r * n + j, tail);
        for (int i = 0; i < m; i++) {
            vf acc = vf_load_n(y + i * n + j, tail);
            for (int r = 0; r < rows; r++)
                acc = vf_fmadd(ak[i][r], w[r], acc);
            vf_store_n(y + i * n + j, acc, tail);
        }
    }
}

/* B is [k, n] (MatMul, Gemm with transB = 0): the thread's columns of
 * each B row in turn, four rows per pass over its slice of y. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_cols_m)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y, int64_t j0,
                     int64_t j1, const int m)
{
    for (int i = 0; i < m; i++)
        for (int64_t j = j0; j < j1; j++)
            y[i * p->n + j] = 0.0f;
    int64_t r = 0;
    for (; r + 4 <= p->k; r += 4)
        SIMD_NAME(mv_cols_step)(p, a, b, y, j0, j1, r, 4, m);
    for (; r < p->k; r++)
        SIMD_NAME(mv_cols_step)(p, a, b, y, j0, j1, r, 1, m);
}

SIMD_TARGET static void SIMD_NAME(matvec_slice)(const tsr_cpu_matvec *p, const float *a,
                                                const float *b, float *y, int64_t j0, int64_t j1)
{
#define MV_CASE(M)                                                                                 \
    case M:                                                                                        \
        if (p->trans_b)                                                                            \
            SIMD_NAME(mv_rows_m)(p, a, b, y, j0, j1, M);                                           \
        else                                                                                       \
            SIMD_NAME(mv_cols_m)(p, a, b, y, j0, j1, M);                                           \
        break;
    switch (p->m) {
        MV_CASE(1)
        MV_CASE(2)
        MV_CASE(3)
        MV_CASE(4)
    default: break;
    }
#undef MV_CASE
}

#undef MV_LINE
#undef MV_NV

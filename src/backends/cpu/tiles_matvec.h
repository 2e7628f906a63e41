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
#if TSR_SIMD_LEVEL == 4
/* SVE: the m x rows accumulators are named vectors (sizeless vectors make
 * no arrays), acc<i><r> for row i of A and B row j + r; k is walked with
 * svwhilelt, so its tail needs no scalar loop. */
#define MV_ACC_ROW(i)                                                                              \
    vf acc##i##0 = vf_zero(), acc##i##1 = vf_zero(), acc##i##2 = vf_zero(), acc##i##3 = vf_zero()
#define MV_FMA_ROW(i)                                                                              \
    if (m > i) {                                                                                   \
        vf av = svld1_f32(pg, a + i * p->lda + x);                                                 \
        acc##i##0 = svmla_f32_m(pg, acc##i##0, av, w0);                                            \
        if (rows > 1) {                                                                            \
            acc##i##1 = svmla_f32_m(pg, acc##i##1, av, w1);                                        \
            acc##i##2 = svmla_f32_m(pg, acc##i##2, av, w2);                                        \
            acc##i##3 = svmla_f32_m(pg, acc##i##3, av, w3);                                        \
        }                                                                                          \
    }
#define MV_SUM_ROW(i)                                                                              \
    if (m > i) {                                                                                   \
        float *yi = y + i * p->n + j;                                                              \
        yi[0] += svaddv_f32(SVE_ALL, acc##i##0);                                                   \
        if (rows > 1) {                                                                            \
            yi[1] += svaddv_f32(SVE_ALL, acc##i##1);                                               \
            yi[2] += svaddv_f32(SVE_ALL, acc##i##2);                                               \
            yi[3] += svaddv_f32(SVE_ALL, acc##i##3);                                               \
        }                                                                                          \
    }
/* rows is 1 or 4: mv_rows_m takes B rows 4 at a time at every m here. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_rows_block)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y,
                         int64_t j, const int rows, const int m)
{
    const int64_t k = p->k;
    const float *b0 = b + j * k, *b1 = rows > 1 ? b0 + k : b0;
    const float *b2 = rows > 1 ? b1 + k : b0, *b3 = rows > 1 ? b2 + k : b0;
    MV_ACC_ROW(0);
    MV_ACC_ROW(1);
    MV_ACC_ROW(2);
    MV_ACC_ROW(3);
    for (int64_t x = 0; x < k; x += SIMD_W) {
        svbool_t pg = svwhilelt_b32(x, k);
        __builtin_prefetch(b0 + x + TSR_MATVEC_PREFETCH);
        vf w0 = svld1_f32(pg, b0 + x), w1 = w0, w2 = w0, w3 = w0;
        if (rows > 1) {
            __builtin_prefetch(b1 + x + TSR_MATVEC_PREFETCH);
            __builtin_prefetch(b2 + x + TSR_MATVEC_PREFETCH);
            __builtin_prefetch(b3 + x + TSR_MATVEC_PREFETCH);
            w1 = svld1_f32(pg, b1 + x);
            w2 = svld1_f32(pg, b2 + x);
            w3 = svld1_f32(pg, b3 + x);
        }
        MV_FMA_ROW(0)
        MV_FMA_ROW(1)
        MV_FMA_ROW(2)
        MV_FMA_ROW(3)
    }
    MV_SUM_ROW(0)
    MV_SUM_ROW(1)
    MV_SUM_ROW(2)
    MV_SUM_ROW(3)
}
#undef MV_ACC_ROW
#undef MV_FMA_ROW
#undef MV_SUM_ROW
#else
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
            y[i * p->n + j + r] += t;
        }
    }
}

#endif

SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_rows_m)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y, int64_t j0,
                     int64_t j1, const int m)
{
    /* SVE's accumulators for 2 rows would be those for 4: it takes 4. */
    const int block = m <= 2 || TSR_SIMD_LEVEL == 4 ? 4 : 2;
    for (int i = 0; i < m && !p->accumulate; i++)
        for (int64_t j = j0; j < j1; j++)
            y[i * p->n + j] = 0.0f;
    int64_t j = j0;
    for (; j + block <= j1; j += block)
        SIMD_NAME(mv_rows_block)(p, a, b, y, j, block, m);
    for (; j < j1; j++)
        SIMD_NAME(mv_rows_block)(p, a, b, y, j, 1, m);
}
#undef MV_MAX_ROWS

#if TSR_SIMD_LEVEL == 4
/* y[i, j0..j1) += A[i, r] B[r, j0..j1) for rows r in [r0, r0 + rows) of B,
 * rows being 1 or 4: SVE's B rows in named vectors, A's values as scalar
 * operands of FMLA, the columns walked with svwhilelt. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_cols_step)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y,
                        int64_t j0, int64_t j1, int64_t r0, const int rows, const int m)
{
    const int64_t n = p->n;
    const float *br = b + r0 * n;
    float ak[TSR_MATVEC_MAX_M][4];
    for (int i = 0; i < m; i++)
        for (int r = 0; r < rows; r++)
            ak[i][r] = a[i * p->lda + r0 + r];
    for (int64_t j = j0; j < j1; j += SIMD_W) {
        svbool_t pg = svwhilelt_b32(j, j1);
        for (int r = 0; r < rows; r++)
            __builtin_prefetch(br + (rows + r) * n + j);
        vf w0 = svld1_f32(pg, br + j), w1 = w0, w2 = w0, w3 = w0;
        if (rows > 1) {
            w1 = svld1_f32(pg, br + n + j);
            w2 = svld1_f32(pg, br + 2 * n + j);
            w3 = svld1_f32(pg, br + 3 * n + j);
        }
        for (int i = 0; i < m; i++) {
            vf acc = svld1_f32(pg, y + i * n + j);
            acc = svmla_n_f32_x(pg, acc, w0, ak[i][0]);
            if (rows > 1) {
                acc = svmla_n_f32_x(pg, acc, w1, ak[i][1]);
                acc = svmla_n_f32_x(pg, acc, w2, ak[i][2]);
                acc = svmla_n_f32_x(pg, acc, w3, ak[i][3]);
            }
            svst1_f32(pg, y + i * n + j, acc);
        }
    }
}
#else
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

#endif

#if TSR_SIMD_LEVEL != 4
/* A B that the caches hold (an LSTM's recurrent weights): the m x nb
 * vectors of y at columns [j, j + nb vectors) stay in registers along all
 * of k, each B row's piece loaded once for the m rows, and y is written
 * once; the pass form below writes y back after every four B rows, which
 * bound a [4, 128] x [128, 512] product by its stores on Zen 4. nb is 1 or
 * MV_NB (MV_NB x m accumulators within AVX2's 16 registers); tail < SIMD_W
 * lanes: one partial vector. */
#define MV_NB (TSR_SIMD_LEVEL == 1 ? 2 : 4)
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_cols_block)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y,
                         int64_t j, const int nb, const int tail, const int m)
{
    const int64_t n = p->n;
    vf acc[TSR_MATVEC_MAX_M][4];
    for (int i = 0; i < m; i++)
        for (int v = 0; v < nb; v++)
            acc[i][v] = vf_zero();
    for (int64_t r = 0; r < p->k; r++) {
        vf w[4];
        for (int v = 0; v < nb; v++)
            w[v] = tail ? vf_load_n(b + r * n + j, tail) : vf_load(b + r * n + j + v * SIMD_W);
        for (int i = 0; i < m; i++) {
            vf ai = vf_set1(a[i * p->lda + r]);
            for (int v = 0; v < nb; v++)
                acc[i][v] = vf_fmadd(ai, w[v], acc[i][v]);
        }
    }
    for (int i = 0; i < m; i++)
        for (int v = 0; v < nb; v++) {
            float *yp = y + i * n + j + v * SIMD_W;
            if (tail)
                vf_store_n(yp, p->accumulate ? vf_add(vf_load_n(yp, tail), acc[i][v]) : acc[i][v],
                           tail);
            else
                vf_store(yp, p->accumulate ? vf_add(vf_load(yp), acc[i][v]) : acc[i][v]);
        }
}

SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_cols_blocked_m)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y,
                             int64_t j0, int64_t j1, const int m)
{
    int64_t j = j0;
    for (; j + MV_NB * SIMD_W <= j1; j += MV_NB * SIMD_W)
        SIMD_NAME(mv_cols_block)(p, a, b, y, j, MV_NB, 0, m);
    for (; j + SIMD_W <= j1; j += SIMD_W)
        SIMD_NAME(mv_cols_block)(p, a, b, y, j, 1, 0, m);
    if (j < j1)
        SIMD_NAME(mv_cols_block)(p, a, b, y, j, 1, (int)(j1 - j), m);
}
#undef MV_NB
#endif

/* B is [k, n] (MatMul, Gemm with transB = 0): the thread's columns of
 * each B row in turn, four rows per pass over its slice of y. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(mv_cols_m)(const tsr_cpu_matvec *p, const float *a, const float *b, float *y, int64_t j0,
                     int64_t j1, const int m)
{
    for (int i = 0; i < m && !p->accumulate; i++)
        for (int64_t j = j0; j < j1; j++)
            y[i * p->n + j] = 0.0f;
    int64_t r = 0;
    for (; r + 4 <= p->k; r += 4)
        SIMD_NAME(mv_cols_step)(p, a, b, y, j0, j1, r, 4, m);
    for (; r < p->k; r++)
        SIMD_NAME(mv_cols_step)(p, a, b, y, j0, j1, r, 1, m);
}

/* B [k, n]: the register-blocked form for a B within the caches, the pass
 * form otherwise and on SVE (whose sizeless vectors make no arrays). */
#if TSR_SIMD_LEVEL == 4
#define MV_COLS(p, a, b, y, j0, j1, M) SIMD_NAME(mv_cols_m)(p, a, b, y, j0, j1, M)
#else
#define MV_COLS(p, a, b, y, j0, j1, M)                                                             \
    ((p)->k * (p)->n < TSR_MATVEC_CACHED_FLOATS                                                    \
         ? SIMD_NAME(mv_cols_blocked_m)(p, a, b, y, j0, j1, M)                                     \
         : SIMD_NAME(mv_cols_m)(p, a, b, y, j0, j1, M))
#endif
SIMD_TARGET static void SIMD_NAME(matvec_slice)(const tsr_cpu_matvec *p, const float *a,
                                                const float *b, float *y, int64_t j0, int64_t j1)
{
#define MV_CASE(M)                                                                                 \
    case M:                                                                                        \
        if (p->trans_b)                                                                            \
            SIMD_NAME(mv_rows_m)(p, a, b, y, j0, j1, M);                                           \
        else                                                                                       \
            MV_COLS(p, a, b, y, j0, j1, M);                                                        \
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
#undef MV_COLS

#undef MV_LINE
#undef MV_NV

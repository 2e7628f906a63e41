/* The cpu backend's matrix-vector product: Gemm and MatMul with a few rows
 * of A against a large B (a classifier at batches 2 to 4), which is
 * memory-bound, and each step of a small-batch LSTM (dnnl_rnn.c). oneDNN's
 * matmul runs it from a prepacked copy of B; this streams B once, in the
 * order it is stored, split between the threads by output columns.
 * The oneDNN backend takes it at plan time for the shapes it fits
 * (tsr_cpu_matvec_fits). */
#ifndef TSR_BACKENDS_CPU_MATVEC_H
#define TSR_BACKENDS_CPU_MATVEC_H

#include "backends/cpu/cpu.h"

#define TSR_MATVEC_MAX_M 4
/* Floats of a B that the caches hold: 1 MiB (twice a Zen 3 core's L2, a
 * Zen 4 core's). */
#define TSR_MATVEC_CACHED_FLOATS (1 << 18)
/* How far ahead along a B row the tiles prefetch, in floats. */
#define TSR_MATVEC_PREFETCH 512

/* y = alpha * A B + beta * C, A [m, k] with rows lda apart (unit stride
 * along k), B [k, n] or, with trans_b, [n, k] (both dense), y [m, n]
 * dense; C, when has_c, at c[i * c_rs + j * c_cs] (0 strides broadcast).
 * With accumulate, y += A B instead (alpha 1, no C): y holds what is added
 * to on entry. */
typedef struct tsr_cpu_matvec {
    int64_t m, k, n, lda;
    bool trans_b, has_c, accumulate;
    float alpha, beta;
    int64_t c_rs, c_cs;
    tsr_isa isa;
} tsr_cpu_matvec;

/* Whether the shape is one this path runs faster than oneDNN: 2 to
 * TSR_MATVEC_MAX_M rows and a B too large for the caches to hold. */
bool tsr_cpu_matvec_fits(int64_t m, int64_t k, int64_t n);
void tsr_cpu_matvec_run(const tsr_cpu_matvec *p, const float *a, const float *b, const float *c,
                        float *y, int threads);

/* One LSTM step of `rows` sequences after the gate products: gates
 * [rows, 4H] (ONNX's order i, o, f, c), c [rows, H] updated in place,
 * h [rows, H] written; the cpu backend's LSTMCell tile at `isa`
 * (kernels_eltwise.c), for the oneDNN backend's step-by-step LSTM. */
void tsr_cpu_lstm_cell_rows(tsr_isa isa, const float *gates, float *c, float *h, int64_t rows,
                            int64_t hidden);

#endif

/* The launchers of the backend's own kernels (kernels.cu). Plain C with no
 * Tessera or CUDA headers, so that both the host C code and nvcc read it.
 * Each enqueues its kernel on `stream` (a cudaStream_t) and returns the
 * launch's cudaError_t as an int; context.c turns it into a tsr_status. */
#ifndef TSR_BACKENDS_CUDA_KERNELS_H
#define TSR_BACKENDS_CUDA_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TSR_CUDA_MAX_RANK 8 /* TSR_MAX_RANK; backend.c asserts they agree */

enum { TSR_CUDA_RELU, TSR_CUDA_SIGMOID };
enum { TSR_CUDA_COPY, TSR_CUDA_ADD, TSR_CUDA_MUL };

/* An output's dims and, per operand, the stride of each output axis in
 * its elements (0 where the operand is broadcast along it). */
typedef struct tsr_cuda_broadcast {
    int rank;
    int64_t dims[TSR_CUDA_MAX_RANK];
    int64_t a_strides[TSR_CUDA_MAX_RANK];
    int64_t b_strides[TSR_CUDA_MAX_RANK];
} tsr_cuda_broadcast;

int tsr_cuda_unary(void *stream, int op, const float *x, float *y, int64_t n);
/* y = a op b over the broadcast shape; TSR_CUDA_COPY reads a only. */
int tsr_cuda_binary(void *stream, int op, const tsr_cuda_broadcast *shape, const float *a,
                    const float *b, float *y);
/* Softmax over each contiguous row of `cols` values. */
int tsr_cuda_softmax_rows(void *stream, const float *x, float *y, int64_t rows, int64_t cols);
/* y[r] = mean of row r's `cols` contiguous values. */
int tsr_cuda_mean_rows(void *stream, const float *x, float *y, int64_t rows, int64_t cols);

#ifdef __cplusplus
}
#endif

#endif

/* What backend.c needs of context.c: the memory space, the device
 * context's stream, CUDA errors as tsr_status and the cuBLAS product. This
 * header includes no CUDA header: the device context is opaque here. */
#ifndef TSR_BACKENDS_CUDA_INTERNAL_H
#define TSR_BACKENDS_CUDA_INTERNAL_H

#include "backends/backend.h"

extern const tsr_memory_space tsr_cuda_memory;

/* The context's stream, as a cudaStream_t for kernels.h's launchers. */
void *tsr_cuda_stream(void *ctx);
/* TSR_OK for cudaSuccess, else the error recorded with `what` and CUDA's
 * name for it. */
tsr_status tsr_cuda_status(int cuda_error, const char *what);

/* Row-major y[i] = alpha op(a[i]) op(b[i]) + beta y[i] for `batch`
 * products [m, k] x [k, n], consecutive ones `stride_*` floats apart; op
 * transposes where trans_* is set (a stored [k, m], b stored [n, k]).
 * cuBLAS on the context's stream, in TF32 where the context enables it. */
tsr_status tsr_cuda_gemm(void *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const float *a, int64_t stride_a, const float *b,
                         int64_t stride_b, float beta, float *y, int64_t stride_y, int64_t batch);

#endif

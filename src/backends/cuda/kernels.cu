/* The cuda backend's own kernels: element-wise ops, broadcasting binary
 * ops, row softmax and row means. Grid-stride loops, so any element count
 * runs with a bounded grid; 64-bit indices throughout. */
#include "backends/cuda/kernels.h"

#include <cuda_runtime.h>

#define THREADS 256
#define MAX_BLOCKS 65535

static unsigned blocks_for(int64_t n)
{
    int64_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 1 ? 1 : b > MAX_BLOCKS ? MAX_BLOCKS : b);
}

__global__ void unary_kernel(int op, const float *x, float *y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = op == TSR_CUDA_RELU ? (v > 0.0f ? v : 0.0f) : 1.0f / (1.0f + expf(-v));
    }
}

extern "C" int tsr_cuda_unary(void *stream, int op, const float *x, float *y, int64_t n)
{
    if (n > 0)
        unary_kernel<<<blocks_for(n), THREADS, 0, (cudaStream_t)stream>>>(op, x, y, n);
    return (int)cudaGetLastError();
}

__global__ void binary_kernel(int op, tsr_cuda_broadcast s, int64_t n, const float *a,
                              const float *b, float *y)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t rest = i, ia = 0, ib = 0;
        for (int d = s.rank - 1; d >= 0; d--) {
            int64_t c = rest % s.dims[d];
            rest /= s.dims[d];
            ia += c * s.a_strides[d];
            ib += c * s.b_strides[d];
        }
        float va = a[ia];
        y[i] = op == TSR_CUDA_COPY ? va : op == TSR_CUDA_ADD ? va + b[ib] : va * b[ib];
    }
}

extern "C" int tsr_cuda_binary(void *stream, int op, const tsr_cuda_broadcast *shape,
                               const float *a, const float *b, float *y)
{
    int64_t n = 1;
    for (int d = 0; d < shape->rank; d++)
        n *= shape->dims[d];
    if (n > 0)
        binary_kernel<<<blocks_for(n), THREADS, 0, (cudaStream_t)stream>>>(op, *shape, n, a, b, y);
    return (int)cudaGetLastError();
}

/* The block's threads combine `v` (sum or max); every thread gets the result. */
__device__ float block_combine(float v, bool is_max)
{
    __shared__ float partial[THREADS];
    partial[threadIdx.x] = v;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            float o = partial[threadIdx.x + half];
            partial[threadIdx.x] =
                is_max ? fmaxf(partial[threadIdx.x], o) : partial[threadIdx.x] + o;
        }
        __syncthreads();
    }
    float out = partial[0];
    __syncthreads(); /* partial is reused by the next call */
    return out;
}

__global__ void softmax_kernel(const float *x, float *y, int64_t rows, int64_t cols)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        for (int64_t c = threadIdx.x; c < cols; c += THREADS)
            m = fmaxf(m, xr[c]);
        m = block_combine(m, true);
        float sum = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += THREADS) {
            float e = expf(xr[c] - m);
            yr[c] = e;
            sum += e;
        }
        float inv = 1.0f / block_combine(sum, false);
        for (int64_t c = threadIdx.x; c < cols; c += THREADS)
            yr[c] *= inv;
    }
}

extern "C" int tsr_cuda_softmax_rows(void *stream, const float *x, float *y, int64_t rows,
                                     int64_t cols)
{
    if (rows > 0 && cols > 0)
        softmax_kernel<<<(unsigned)(rows < MAX_BLOCKS ? rows : MAX_BLOCKS), THREADS, 0,
                         (cudaStream_t)stream>>>(x, y, rows, cols);
    return (int)cudaGetLastError();
}

__global__ void mean_kernel(const float *x, float *y, int64_t rows, int64_t cols)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float sum = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += THREADS)
            sum += x[r * cols + c];
        sum = block_combine(sum, false);
        if (threadIdx.x == 0)
            y[r] = sum / (float)cols;
    }
}

extern "C" int tsr_cuda_mean_rows(void *stream, const float *x, float *y, int64_t rows,
                                  int64_t cols)
{
    if (rows > 0 && cols > 0)
        mean_kernel<<<(unsigned)(rows < MAX_BLOCKS ? rows : MAX_BLOCKS), THREADS, 0,
                      (cudaStream_t)stream>>>(x, y, rows, cols);
    return (int)cudaGetLastError();
}

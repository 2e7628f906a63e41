/* The cuda device's context and memory: one GPU (device 0), one
 * non-blocking stream every copy and kernel of the plan is issued on, and
 * a cuBLAS handle bound to it. Allocations are stream-ordered
 * (cudaMallocAsync), copies within the device and to it are asynchronous
 * (a pageable host source may be reused as soon as the call returns);
 * copies to the host wait for the stream, since host kernels read their
 * result next. TF32 for matrix products is an option: TSR_CUDA_TF32=1. */
#include "backends/cuda/internal.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
} cuda_ctx;

tsr_status tsr_cuda_status(int cuda_error, const char *what)
{
    if (cuda_error == cudaSuccess)
        return TSR_OK;
    return tsr_error(TSR_ERR_INTERNAL, "cuda: %s: %s", what,
                     cudaGetErrorString((cudaError_t)cuda_error));
}

static tsr_status blas_status(cublasStatus_t st, const char *what)
{
    if (st == CUBLAS_STATUS_SUCCESS)
        return TSR_OK;
    return tsr_error(TSR_ERR_INTERNAL, "cuda: %s: %s", what, cublasGetStatusString(st));
}

static bool tf32_enabled(void)
{
    const char *env = getenv("TSR_CUDA_TF32");
    return env && *env && strcmp(env, "0") != 0;
}

static void cuda_context_destroy(void *ctx)
{
    cuda_ctx *c = ctx;
    if (!c)
        return;
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream) {
        cudaStreamSynchronize(c->stream);
        cudaStreamDestroy(c->stream);
    }
    free(c);
}

static tsr_status cuda_context_create(void **ctx_out)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "the cuda device needs an NVIDIA GPU and driver: cudaGetDeviceCount: %s",
                         cudaGetErrorString(err));
    if (count == 0)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "the cuda device needs an NVIDIA GPU and driver: cudaGetDeviceCount "
                         "found no GPU");
    cuda_ctx *c = tsr_malloc(sizeof *c);
    if (!c)
        return TSR_ERR_OUT_OF_MEMORY;
    memset(c, 0, sizeof *c);
    tsr_status st = tsr_cuda_status(cudaSetDevice(c->device), "cudaSetDevice");
    if (st == TSR_OK)
        st = tsr_cuda_status(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
                             "cudaStreamCreateWithFlags");
    if (st == TSR_OK)
        st = blas_status(cublasCreate(&c->blas), "cublasCreate");
    if (st == TSR_OK)
        st = blas_status(cublasSetStream(c->blas, c->stream), "cublasSetStream");
    if (st == TSR_OK)
        st = blas_status(cublasSetMathMode(c->blas, tf32_enabled() ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                   : CUBLAS_DEFAULT_MATH),
                         "cublasSetMathMode");
    if (st != TSR_OK) {
        cuda_context_destroy(c);
        return st;
    }
    *ctx_out = c;
    return TSR_OK;
}

void *tsr_cuda_stream(void *ctx)
{
    return ((cuda_ctx *)ctx)->stream;
}

static void *cuda_alloc(void *ctx, size_t bytes)
{
    void *p = NULL;
    cudaError_t err = cudaMallocAsync(&p, bytes ? bytes : 1, ((cuda_ctx *)ctx)->stream);
    if (err != cudaSuccess) {
        tsr_error(TSR_ERR_OUT_OF_MEMORY, "cuda: cudaMallocAsync of %zu bytes: %s", bytes,
                  cudaGetErrorString(err));
        return NULL;
    }
    return p;
}

static void cuda_free(void *ctx, void *ptr)
{
    if (ptr)
        cudaFreeAsync(ptr, ((cuda_ctx *)ctx)->stream);
}

static tsr_status cuda_copy_kind(void *ctx, void *dst, const void *src, size_t bytes,
                                 enum cudaMemcpyKind kind, const char *what)
{
    if (!bytes || dst == src)
        return TSR_OK;
    return tsr_cuda_status(cudaMemcpyAsync(dst, src, bytes, kind, ((cuda_ctx *)ctx)->stream), what);
}

static tsr_status cuda_synchronize(void *ctx)
{
    return tsr_cuda_status(cudaStreamSynchronize(((cuda_ctx *)ctx)->stream),
                           "cudaStreamSynchronize");
}

static tsr_status cuda_copy_to_host(void *ctx, void *host_dst, const void *src, size_t bytes)
{
    TSR_CHECK(cuda_copy_kind(ctx, host_dst, src, bytes, cudaMemcpyDeviceToHost,
                             "cudaMemcpyAsync to the host"));
    return cuda_synchronize(ctx);
}

static tsr_status cuda_copy_from_host(void *ctx, void *dst, const void *host_src, size_t bytes)
{
    return cuda_copy_kind(ctx, dst, host_src, bytes, cudaMemcpyHostToDevice,
                          "cudaMemcpyAsync from the host");
}

static tsr_status cuda_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    return cuda_copy_kind(ctx, dst, src, bytes, cudaMemcpyDeviceToDevice,
                          "cudaMemcpyAsync within the device");
}

/* The runtime tells device memory from host memory but not an
 * allocation's extent, so only the first byte is checked. */
static bool cuda_holds(void *ctx, const void *ptr, size_t bytes)
{
    (void)ctx;
    (void)bytes;
    struct cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
        cudaGetLastError(); /* not a CUDA error the next call should see */
        return false;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

const tsr_memory_space tsr_cuda_memory = {
    .name = "cuda",
    .context_create = cuda_context_create,
    .context_destroy = cuda_context_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy_to_host = cuda_copy_to_host,
    .copy_from_host = cuda_copy_from_host,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
    .holds = cuda_holds,
};

/* cuBLAS is column-major: row-major y = op(a) op(b) is column-major
 * y^T = op(b)^T op(a)^T, and a row-major matrix read column-major is its
 * transpose, so b goes first and each keeps its own transposition. */
tsr_status tsr_cuda_gemm(void *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const float *a, int64_t stride_a, const float *b,
                         int64_t stride_b, float beta, float *y, int64_t stride_y, int64_t batch)
{
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || batch > INT32_MAX)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "cuda: a matrix product of [%lld, %lld] x [%lld, %lld] (batch %lld) "
                         "exceeds cuBLAS's 32-bit sizes",
                         (long long)m, (long long)k, (long long)k, (long long)n, (long long)batch);
    if (!m || !n || !batch)
        return TSR_OK;
    /* Leading dimensions of at least 1, which cuBLAS asks for even at k = 0. */
    int lda = (int)(trans_a ? m : k > 1 ? k : 1), ldb = (int)(trans_b ? (k > 1 ? k : 1) : n);
    return blas_status(cublasSgemmStridedBatched(
                           ((cuda_ctx *)ctx)->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, b,
                           ldb, stride_b, a, lda, stride_a, &beta, y, (int)n, stride_y, (int)batch),
                       "cublasSgemmStridedBatched");
}

/* The cuda device (docs/hal.md, "CUDA"): NVIDIA GPUs through the CUDA
 * runtime, cuBLAS and kernels of our own, then the reference backend on
 * the host for every op the GPU backend refuses. Built only where CMake
 * finds the CUDA toolkit (TSR_HAVE_CUDA). */
#ifndef TSR_BACKENDS_CUDA_CUDA_H
#define TSR_BACKENDS_CUDA_CUDA_H

#include "backends/backend.h"

const tsr_backend *const *tsr_cuda_backends(void);

#endif

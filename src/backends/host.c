/* Host memory: the space of the ref, cpu and dnnl backends and of the
 * caller's tensors. It needs no device context, and copies complete when
 * the hook returns. */
#include "backends/backend.h"

#include <string.h>

static void *host_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    return tsr_aligned_alloc(bytes);
}

static void host_free(void *ctx, void *ptr)
{
    (void)ctx;
    tsr_aligned_free(ptr);
}

static tsr_status host_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    if (bytes && dst != src)
        memcpy(dst, src, bytes);
    return TSR_OK;
}

static tsr_status host_synchronize(void *ctx)
{
    (void)ctx;
    return TSR_OK;
}

const tsr_memory_space tsr_host_memory = {
    .name = "host",
    .alloc = host_alloc,
    .free = host_free,
    .copy_to_host = host_copy,
    .copy_from_host = host_copy,
    .copy = host_copy,
    .synchronize = host_synchronize,
};

/* The hardware abstraction layer: a backend is this table and nothing
 * else. A device is an ordered list of backends tried per node, ending in
 * the reference backend. */
#ifndef TSR_BACKENDS_BACKEND_H
#define TSR_BACKENDS_BACKEND_H

#include "ops/op.h"

typedef struct tsr_backend {
    const char *name;
    /* Whether this backend runs `node` at its concrete shapes; if not,
     * writes the reason into `why`. */
    bool (*supports)(const tsr_graph *g, const tsr_node *node, char *why, size_t why_size);
    /* Per-node state built once at plan time (NULL if none is needed). */
    tsr_status (*prepare)(const tsr_graph *g, const tsr_node *node, void **state_out);
    void (*release)(void *state);
    tsr_status (*run)(void *state, const tsr_kernel_ctx *ctx);
    /* Memory the plan's arena lives in. */
    void *(*alloc)(size_t bytes);
    void (*free)(void *ptr);
} tsr_backend;

extern const tsr_backend tsr_backend_ref;

/* The backends of `device`, best first, NULL-terminated; NULL if unknown. */
const tsr_backend *const *tsr_device_backends(const char *device);

#endif

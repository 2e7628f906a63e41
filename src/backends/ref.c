/* The reference backend: each op's portable reference kernel. It is the
 * oracle other backends are tested against and the fallback for any node
 * they refuse. */
#include "backends/backend.h"

#include <stdio.h>
#include <string.h>

static bool ref_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t why_size)
{
    (void)g;
    if (node->op->ref)
        return true;
    snprintf(why, why_size, "%s has no reference kernel", node->op->name);
    return false;
}

static tsr_status ref_run(void *state, const tsr_kernel_ctx *ctx)
{
    (void)state;
    return ctx->node->op->ref(ctx);
}

/* Ops whose output is input 0's bytes under another shape: the output
 * takes over the input's buffer where the node is its last reader, and
 * their kernel (shape.c's copy_ref) then has nothing to copy. */
static int ref_inplace_input(const tsr_graph *g, const tsr_node *node)
{
    (void)g;
    const tsr_op_def *op = node->op;
    return op == &tsr_op_Reshape || op == &tsr_op_Flatten || op == &tsr_op_Squeeze ||
                   op == &tsr_op_Unsqueeze || op == &tsr_op_Identity
               ? 0
               : -1;
}

const tsr_backend tsr_backend_ref = {
    .name = "ref",
    .supports = ref_supports,
    .inplace_input = ref_inplace_input,
    .run = ref_run,
    .memory = &tsr_host_memory,
};


/* The cuda backend's table: which nodes it takes and how each runs. It
 * includes no CUDA header (the context is opaque, kernels go through
 * kernels.h's launchers), so it compiles on machines without the toolkit.
 * Every kernel reads and writes plain float32 tensors in device memory;
 * anything else (other dtypes, ops, shapes below) is refused and runs on
 * the reference backend on the host, through the plan's transfers. */
#include "backends/cuda/cuda.h"

#include "backends/cuda/internal.h"
#include "backends/cuda/kernels.h"
#include "ops/movement.h"
#include "ops/reduce.h"

#include <stdio.h>

_Static_assert(TSR_CUDA_MAX_RANK == TSR_MAX_RANK, "kernels.h's rank bound is TSR_MAX_RANK");

static const tsr_value *value_of(const tsr_graph *g, int id)
{
    return id >= 0 ? &g->values[id] : NULL;
}

static bool refuse(char *why, size_t why_size, const char *fmt, const char *what)
{
    snprintf(why, why_size, fmt, what);
    return false;
}

static bool matmul_supports(const tsr_value *a, const tsr_value *b, char *why, size_t why_size)
{
    if (a->rank < 2 || b->rank < 2)
        return refuse(why, why_size, "%s: a 1-D operand runs on the host", "MatMul");
    if (b->rank == 2)
        return true;
    bool same = a->rank == b->rank;
    for (int d = 0; same && d < a->rank - 2; d++)
        same = a->dims[d] == b->dims[d];
    return same || refuse(why, why_size, "%s: broadcast batch dims run on the host", "MatMul");
}

static bool cuda_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t why_size)
{
    const tsr_op_def *op = node->op;
    if (op != &tsr_op_Relu && op != &tsr_op_Sigmoid && op != &tsr_op_Add && op != &tsr_op_Mul &&
        op != &tsr_op_Softmax && op != &tsr_op_GlobalAveragePool && op != &tsr_op_MatMul &&
        op != &tsr_op_Gemm)
        return refuse(why, why_size, "%s has no kernel in the cuda backend", op->name);
    for (int i = 0; i < node->n_inputs + node->n_outputs; i++) {
        const tsr_value *v =
            value_of(g, i < node->n_inputs ? node->inputs[i] : node->outputs[i - node->n_inputs]);
        if (v && v->dtype != TSR_FLOAT32)
            return refuse(why, why_size, "%s: the cuda backend runs float32 only",
                          tsr_dtype_name(v->dtype));
    }
    const tsr_value *x = value_of(g, node->inputs[0]);
    if (op == &tsr_op_Softmax) {
        int64_t outer, n, inner;
        if (tsr_softmax_geometry(node, x->rank, x->dims, &outer, &n, &inner) != TSR_OK ||
            inner != 1)
            return refuse(why, why_size, "%s over an axis other than the last runs on the host",
                          op->name);
    }
    if (op == &tsr_op_GlobalAveragePool && x->rank < 3)
        return refuse(why, why_size, "%s needs [N, C, spatial...]", op->name);
    if (op == &tsr_op_MatMul)
        return matmul_supports(x, value_of(g, node->inputs[1]), why, why_size);
    return true;
}

/* Strides of t's elements along each of the `rank` output axes (numpy
 * broadcasting: t's dims align to the right, size-1 dims repeat). */
static void broadcast_strides(const tsr_tensor *t, int rank, int64_t *strides)
{
    int64_t own[TSR_MAX_RANK];
    tsr_contiguous_strides(t->rank, t->dims, own);
    for (int d = 0; d < rank; d++) {
        int td = d - (rank - t->rank);
        strides[d] = td < 0 || t->dims[td] == 1 ? 0 : own[td];
    }
}

static tsr_status run_binary(void *stream, int op, const tsr_tensor *a, const tsr_tensor *b,
                             tsr_tensor *y)
{
    tsr_cuda_broadcast s = {.rank = y->rank};
    for (int d = 0; d < y->rank; d++)
        s.dims[d] = y->dims[d];
    broadcast_strides(a, y->rank, s.a_strides);
    if (b)
        broadcast_strides(b, y->rank, s.b_strides);
    return tsr_cuda_status(tsr_cuda_binary(stream, op, &s, a->data, b ? b->data : NULL, y->data),
                           op == TSR_CUDA_COPY ? "Gemm's C" : "Add/Mul");
}

static tsr_status run_matmul(void *ctx, const tsr_tensor *a, const tsr_tensor *b, tsr_tensor *y)
{
    int64_t m = a->dims[a->rank - 2], k = a->dims[a->rank - 1], n = b->dims[b->rank - 1];
    int64_t batch = 1;
    for (int d = 0; d < a->rank - 2; d++)
        batch *= a->dims[d];
    if (b->rank == 2) /* a's batch folds into its rows */
        return tsr_cuda_gemm(ctx, false, false, m * batch, n, k, 1.0f, a->data, 0, b->data, 0, 0.0f,
                             y->data, 0, 1);
    return tsr_cuda_gemm(ctx, false, false, m, n, k, 1.0f, a->data, m * k, b->data, k * n, 0.0f,
                         y->data, m * n, batch);
}

static tsr_status run_gemm(void *ctx, const tsr_node *node, const tsr_tensor *a,
                           const tsr_tensor *b, const tsr_tensor *c, tsr_tensor *y)
{
    bool ta = tsr_attr_int(node, "transA") != 0, tb = tsr_attr_int(node, "transB") != 0;
    float alpha = (float)tsr_attr_float(node, "alpha");
    float beta = c ? (float)tsr_attr_float(node, "beta") : 0.0f;
    if (beta != 0.0f)
        TSR_CHECK(run_binary(tsr_cuda_stream(ctx), TSR_CUDA_COPY, c, NULL, y));
    int64_t k = a->dims[ta ? 0 : 1];
    return tsr_cuda_gemm(ctx, ta, tb, y->dims[0], y->dims[1], k, alpha, a->data, 0, b->data, 0,
                         beta, y->data, 0, 1);
}

static tsr_status cuda_run(void *state, const tsr_kernel_ctx *k)
{
    const tsr_op_def *op = k->node->op;
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    void *stream = tsr_cuda_stream(k->device);
    if (op == &tsr_op_Relu || op == &tsr_op_Sigmoid)
        return tsr_cuda_status(tsr_cuda_unary(stream,
                                              op == &tsr_op_Relu ? TSR_CUDA_RELU : TSR_CUDA_SIGMOID,
                                              x->data, y->data, tsr_tensor_numel(y)),
                               op->name);
    if (op == &tsr_op_Add || op == &tsr_op_Mul)
        return run_binary(stream, op == &tsr_op_Add ? TSR_CUDA_ADD : TSR_CUDA_MUL, x, k->inputs[1],
                          y);
    if (op == &tsr_op_Softmax) {
        int64_t outer, n, inner;
        TSR_CHECK(tsr_softmax_geometry(k->node, x->rank, x->dims, &outer, &n, &inner));
        return tsr_cuda_status(tsr_cuda_softmax_rows(stream, x->data, y->data, outer, n), op->name);
    }
    if (op == &tsr_op_GlobalAveragePool) {
        int64_t rows = x->dims[0] * x->dims[1];
        return tsr_cuda_status(tsr_cuda_mean_rows(stream, x->data, y->data, rows,
                                                  rows ? tsr_tensor_numel(x) / rows : 0),
                               op->name);
    }
    if (op == &tsr_op_MatMul)
        return run_matmul(k->device, x, k->inputs[1], y);
    return run_gemm(k->device, k->node, x, k->inputs[1], k->n_inputs > 2 ? k->inputs[2] : NULL, y);
}

static const tsr_backend tsr_backend_cuda = {
    .name = "cuda",
    .supports = cuda_supports,
    .run = cuda_run,
    .memory = &tsr_cuda_memory,
};

const tsr_backend *const *tsr_cuda_backends(void)
{
    static const tsr_backend *const list[] = {&tsr_backend_cuda, &tsr_backend_ref, NULL};
    return list;
}

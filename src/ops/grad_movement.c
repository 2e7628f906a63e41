/* Backward ops of the data-movement family (domain ai.tessera):
 *   GatherGrad(dY, indices, x_shape) -> dX   (attribute axis)
 * the adjoint of Gather: zeros of X's shape with each dY slice added at
 * the position its index gathered from (repeated indices add up). Its own
 * gradient is Gather.
 *   SumTo(X, shape) -> Y
 * X summed over the axes along which a tensor of `shape` broadcasts to X:
 * the adjoint of broadcasting, for when which axes those are is only known
 * at run time (symbolic or unknown dims). Its gradient is Expand. */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <string.h>

static const tsr_attr_def gather_grad_attrs[] = {{"axis", TSR_ATTR_INT, .i = 0}, {NULL}};

static tsr_status gather_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64) | TSR_DTYPE_BIT(TSR_INT32)));
    const tsr_value *dy = c->inputs[0], *ind = c->inputs[1];
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 2, "x_shape", shape, TSR_MAX_RANK, &n, &known));
    if (n < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "the rank of x_shape is not known");
    if (dy->rank >= 0 && ind->rank >= 0 && dy->rank != n - 1 + ind->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "dY has rank %d, but X of rank %d gathered by indices of rank %d "
                               "gives rank %d",
                               dy->rank, n, ind->rank, n - 1 + ind->rank);
    for (int d = 0; d < n; d++)
        dims[d] = known ? shape[d] : TSR_DIM_UNKNOWN;
    tsr_infer_set(c, 0, dy->dtype, n, dims);
    return TSR_OK;
}

/* clang-format off */
#define GATHER_GRAD_DEFINE(T)                                                                      \
    static tsr_status gather_grad_##T(const T *dy, const tsr_tensor *ind, T *dx, int64_t outer,    \
                                      int64_t dim, int64_t inner)                                  \
    {                                                                                              \
        int64_t n = tsr_tensor_numel(ind);                                                         \
        memset(dx, 0, (size_t)(outer * dim * inner) * sizeof(T));                                  \
        for (int64_t o = 0; o < outer; o++)                                                        \
            for (int64_t i = 0; i < n; i++) {                                                      \
                int64_t v = ind->dtype == TSR_INT64 ? ((const int64_t *)ind->data)[i]              \
                                                    : ((const int32_t *)ind->data)[i];             \
                if (v < -dim || v >= dim)                                                          \
                    return tsr_error(TSR_ERR_INVALID_ARGUMENT,                                     \
                                     "index %lld is out of range for an axis of size %lld",        \
                                     (long long)v, (long long)dim);                                \
                v += v < 0 ? dim : 0;                                                              \
                T *dst = dx + (o * dim + v) * inner;                                               \
                const T *src = dy + (o * n + i) * inner;                                           \
                for (int64_t j = 0; j < inner; j++)                                                \
                    dst[j] += src[j];                                                              \
            }                                                                                      \
        return TSR_OK;                                                                             \
    }
/* clang-format on */

GATHER_GRAD_DEFINE(float)
GATHER_GRAD_DEFINE(double)

static tsr_status gather_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *dy = k->inputs[0], *ind = k->inputs[1];
    tsr_tensor *dx = k->outputs[0];
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(k->node, "axis"), dx->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", dx->rank);
    int64_t outer = tsr_shape_numel(axis, dx->dims);
    int64_t inner = tsr_shape_numel(dx->rank - axis - 1, dx->dims + axis + 1);
    if (tsr_tensor_numel(dy) != outer * tsr_tensor_numel(ind) * inner)
        return tsr_error(TSR_ERR_SHAPE, "dY holds %lld elements, %lld expected",
                         (long long)tsr_tensor_numel(dy),
                         (long long)(outer * tsr_tensor_numel(ind) * inner));
    if (dx->dtype == TSR_FLOAT64)
        return gather_grad_double(dy->data, ind, dx->data, outer, dx->dims[axis], inner);
    return gather_grad_float(dy->data, ind, dx->data, outer, dx->dims[axis], inner);
}

static double gather_grad_flops(const tsr_infer_ctx *c)
{
    int64_t n = tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
    return n < 0 ? 0.0 : (double)n;
}

static tsr_status gather_grad_grad(tsr_grad_ctx *c)
{
    tsr_attr attr = TSR_ATTR_I("axis", tsr_attr_int(tsr_grad_node(c), "axis"));
    const char *ins[2] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 1)}, *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Gather, 2, ins, 1, &attr, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_GatherGrad = {
    .name = "GatherGrad",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = gather_grad_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = gather_grad_infer,
    .ref = gather_grad_ref,
    .flops = gather_grad_flops,
    .grad = gather_grad_grad,
};

/* ---------------------------------------------------------------- SumTo */

static tsr_status sum_to_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[0];
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 1, "shape", shape, TSR_MAX_RANK, &n, &known));
    if (n < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "the length of shape is not known");
    if (x->rank >= 0 && n > x->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "shape has %d entries, X only rank %d", n,
                               x->rank);
    for (int d = 0; d < n; d++) {
        int64_t xd = x->rank >= 0 ? x->dims[x->rank - n + d] : TSR_DIM_UNKNOWN;
        dims[d] = known ? shape[d] : TSR_DIM_UNKNOWN;
        if (known && tsr_dim_known(xd) && shape[d] != 1 && shape[d] != xd)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "size %lld does not broadcast to X's %lld (axis %d)",
                                   (long long)shape[d], (long long)xd, d);
    }
    tsr_infer_set(c, 0, x->dtype, n, dims);
    return TSR_OK;
}

/* clang-format off */
#define SUM_TO_DEFINE(T)                                                                           \
    static void sum_to_##T(const tsr_tensor *x, tsr_tensor *y)                                     \
    {                                                                                              \
        int64_t strides[TSR_MAX_RANK] = {0}, ystr[TSR_MAX_RANK], idx[TSR_MAX_RANK] = {0};          \
        int lead = x->rank - y->rank;                                                              \
        tsr_contiguous_strides(y->rank, y->dims, ystr);                                            \
        for (int d = 0; d < y->rank; d++)                                                          \
            strides[lead + d] = y->dims[d] == 1 ? 0 : ystr[d];                                     \
        const T *xs = x->data;                                                                     \
        T *ys = y->data;                                                                           \
        memset(ys, 0, (size_t)tsr_tensor_numel(y) * sizeof(T));                                    \
        int64_t n = tsr_tensor_numel(x), off = 0;                                                  \
        for (int64_t i = 0; i < n; i++) {                                                          \
            ys[off] += xs[i];                                                                      \
            for (int d = x->rank - 1; d >= 0; d--) {                                               \
                off += strides[d];                                                                 \
                if (++idx[d] < x->dims[d])                                                         \
                    break;                                                                         \
                off -= strides[d] * x->dims[d];                                                    \
                idx[d] = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

SUM_TO_DEFINE(float)
SUM_TO_DEFINE(double)

static tsr_status sum_to_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    for (int d = 0; d < y->rank; d++) {
        int64_t xd = x->dims[x->rank - y->rank + d];
        if (y->dims[d] != 1 && y->dims[d] != xd)
            return tsr_error(TSR_ERR_SHAPE, "size %lld does not broadcast to X's %lld (axis %d)",
                             (long long)y->dims[d], (long long)xd, d);
    }
    if (x->dtype == TSR_FLOAT64)
        sum_to_double(x, y);
    else
        sum_to_float(x, y);
    return TSR_OK;
}

static double sum_to_flops(const tsr_infer_ctx *c)
{
    int64_t n = tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
    return n < 0 ? 0.0 : (double)n;
}

static tsr_status sum_to_grad(tsr_grad_ctx *c)
{
    const char *shape, *g;
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &shape));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Expand, tsr_grad_dy(c, 0), shape, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_SumTo = {
    .name = "SumTo",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = sum_to_infer,
    .ref = sum_to_ref,
    .flops = sum_to_flops,
    .grad = sum_to_grad,
};

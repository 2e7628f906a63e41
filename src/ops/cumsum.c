/* CumSum (opsets 11 and 14): running sums along one axis, given as a
 * scalar input, inclusive or exclusive, forward or reversed. Float sums
 * accumulate in double; integer ones in 64 bits, wrapping through unsigned
 * arithmetic like Add. The adjoint of a running sum is the running sum
 * the other way round, so the gradient is CumSum with reverse flipped. */
#include "autodiff/autodiff.h"
#include "ops/op.h"

#define CUMSUM_DTYPES (TSR_FLOAT_TYPES | TSR_DTYPE_BIT(TSR_INT32) | TSR_DTYPE_BIT(TSR_INT64))

static tsr_status cumsum_flags(const tsr_node *n, bool *exclusive, bool *reverse)
{
    int64_t e = tsr_attr_int(n, "exclusive"), r = tsr_attr_int(n, "reverse");
    if (e != 0 && e != 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "exclusive is %lld, must be 0 or 1",
                         (long long)e);
    if (r != 0 && r != 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "reverse is %lld, must be 0 or 1", (long long)r);
    *exclusive = e != 0;
    *reverse = r != 0;
    return TSR_OK;
}

/* The axis from its (scalar or one-element) tensor, normalized for rank. */
static tsr_status cumsum_axis(const tsr_tensor *t, int rank, int *axis)
{
    int64_t vals[1];
    int count;
    if (tsr_tensor_numel(t) != 1 || t->rank > 1)
        return tsr_error(TSR_ERR_SHAPE, "axis must be a scalar, got %lld values in rank %d",
                         (long long)tsr_tensor_numel(t), t->rank);
    TSR_CHECK(tsr_kernel_ints(t, vals, 1, &count));
    if (!tsr_axis_normalize(vals[0], rank, axis))
        return tsr_error(TSR_ERR_SHAPE, "axis %lld is out of range for rank %d", (long long)vals[0],
                         rank);
    return TSR_OK;
}

static tsr_status cumsum_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, CUMSUM_DTYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT32) | TSR_DTYPE_BIT(TSR_INT64)));
    const tsr_value *x = c->inputs[0], *axis = c->inputs[1];
    bool exclusive = false, reverse = false;
    TSR_CHECK(cumsum_flags(c->node, &exclusive, &reverse));
    if (x->rank == 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "CumSum needs an input of rank 1 or more");
    if (axis->rank > 1 || (axis->rank == 1 && tsr_dim_known(axis->dims[0]) && axis->dims[0] != 1))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "axis must be a scalar, got shape of rank %d",
                               axis->rank);
    if (axis->data && x->rank > 0) {
        tsr_tensor t = tsr_value_tensor(axis);
        int a;
        TSR_CHECK(cumsum_axis(&t, x->rank, &a));
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

/* The kernel below is instantiated once per element type. */
/* clang-format off */
#define CUMSUM_DEFINE(NAME, T, ACC, ADD)                                                           \
    static void cumsum_run_##NAME(const tsr_kernel_ctx *k, int64_t outer, int64_t n,               \
                                  int64_t inner, bool exclusive, bool reverse)                     \
    {                                                                                              \
        const T *x = k->inputs[0]->data;                                                           \
        T *y = k->outputs[0]->data;                                                                \
        int64_t lines = outer * inner;                                                             \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && lines > 1)")       \
        for (int64_t line = 0; line < lines; line++) {                                             \
            int64_t start = (line / inner) * n * inner + line % inner;                             \
            ACC acc = 0;                                                                           \
            for (int64_t s = 0; s < n; s++) {                                                      \
                int64_t j = start + (reverse ? n - 1 - s : s) * inner;                             \
                ACC v = x[j];                                                                      \
                if (exclusive) {                                                                   \
                    y[j] = (T)acc;                                                                 \
                    acc = ADD(acc, v);                                                             \
                } else {                                                                           \
                    acc = ADD(acc, v);                                                             \
                    y[j] = (T)acc;                                                                 \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

#define FLOAT_ADD(a, v) ((a) + (v))
#define INT_ADD(a, v) ((int64_t)((uint64_t)(a) + (uint64_t)(v)))

CUMSUM_DEFINE(f32, float, double, FLOAT_ADD)
CUMSUM_DEFINE(f64, double, double, FLOAT_ADD)
CUMSUM_DEFINE(i32, int32_t, int64_t, INT_ADD)
CUMSUM_DEFINE(i64, int64_t, int64_t, INT_ADD)

static tsr_status cumsum_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int axis;
    bool exclusive = false, reverse = false;
    TSR_CHECK(cumsum_flags(k->node, &exclusive, &reverse));
    TSR_CHECK(cumsum_axis(k->inputs[1], x->rank, &axis));
    int64_t outer = tsr_shape_numel(axis, x->dims), n = x->dims[axis];
    int64_t inner = tsr_shape_numel(x->rank - axis - 1, x->dims + axis + 1);
    if (outer == 0 || n == 0 || inner == 0)
        return TSR_OK;
    switch (x->dtype) {
    case TSR_FLOAT32: cumsum_run_f32(k, outer, n, inner, exclusive, reverse); break;
    case TSR_FLOAT64: cumsum_run_f64(k, outer, n, inner, exclusive, reverse); break;
    case TSR_INT32: cumsum_run_i32(k, outer, n, inner, exclusive, reverse); break;
    case TSR_INT64: cumsum_run_i64(k, outer, n, inner, exclusive, reverse); break;
    default:
        return tsr_error(TSR_ERR_DTYPE, "CumSum has no kernel for %s", tsr_dtype_name(x->dtype));
    }
    return TSR_OK;
}

static double cumsum_flops(const tsr_infer_ctx *c)
{
    return (double)tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
}

static tsr_status cumsum_grad(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    bool exclusive = false, reverse = false;
    TSR_CHECK(cumsum_flags(n, &exclusive, &reverse));
    const char *ins[2] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 1)}, *dx;
    tsr_attr attrs[2] = {TSR_ATTR_I("exclusive", exclusive), TSR_ATTR_I("reverse", !reverse)};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_CumSum, 2, ins, 2, attrs, 1, &dx));
    return tsr_grad_contribute(c, 0, dx);
}

static const tsr_attr_def cumsum_attrs[] = {
    {"exclusive", TSR_ATTR_INT, .i = 0}, {"reverse", TSR_ATTR_INT, .i = 0}, {NULL}};

const tsr_op_def tsr_op_CumSum = {
    .name = "CumSum",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = cumsum_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = cumsum_infer,
    .ref = cumsum_ref,
    .flops = cumsum_flops,
    .grad = cumsum_grad,
};

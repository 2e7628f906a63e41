/* NonZero (opsets 9 and 13): the indices of the nonzero elements of X, as
 * an int64 [rank(X), count] in row-major order of X (numpy.nonzero
 * stacked). The count depends on X's values, so unless X is a constant
 * (then the graph folds it) the output's second dim is known only once
 * the node has run: plans give the kernel an output as large as X could
 * need ([rank, numel], op.h's `bound`) and the kernel writes the count it
 * found into its output's dims (runtime/plan.c sizes the rest of the graph
 * from it). A scalar X gives [0, 1] or [0, 0]. NaN is nonzero, -0.0 is
 * zero, as in C. No gradient: the output is a set of indices. */
#include "ops/op.h"

#define NONZERO_TYPES                                                                              \
    (TSR_FLOAT_TYPES | TSR_DTYPE_BIT(TSR_INT64) | TSR_DTYPE_BIT(TSR_INT32) |                       \
     TSR_DTYPE_BIT(TSR_INT8) | TSR_DTYPE_BIT(TSR_UINT8) | TSR_DTYPE_BIT(TSR_BOOL))

static bool element_nonzero(const tsr_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case TSR_FLOAT32: return ((const float *)t->data)[i] != 0.0f;
    case TSR_FLOAT64: return ((const double *)t->data)[i] != 0.0;
    case TSR_INT64: return ((const int64_t *)t->data)[i] != 0;
    case TSR_INT32: return ((const int32_t *)t->data)[i] != 0;
    default: return ((const uint8_t *)t->data)[i] != 0; /* int8, uint8, bool */
    }
}

static int64_t count_nonzero(const tsr_tensor *t)
{
    int64_t n = tsr_tensor_numel(t), count = 0;
    for (int64_t i = 0; i < n; i++)
        count += element_nonzero(t, i);
    return count;
}

static tsr_status nonzero_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, NONZERO_TYPES));
    const tsr_value *x = c->inputs[0];
    if (x->rank < 0) {
        int64_t dims[2] = {TSR_DIM_UNKNOWN, TSR_DIM_UNKNOWN};
        tsr_infer_set(c, 0, TSR_INT64, 2, dims);
        return TSR_OK;
    }
    int64_t dims[2] = {x->rank, TSR_DIM_UNKNOWN};
    if (x->data) {
        tsr_tensor t = tsr_value_tensor(x);
        dims[1] = count_nonzero(&t);
    }
    tsr_infer_set(c, 0, TSR_INT64, 2, dims);
    return TSR_OK;
}

/* Every element of X nonzero: [rank, numel]. */
static tsr_status nonzero_bound(tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0];
    int64_t numel = tsr_shape_numel(x->rank, x->dims);
    if (numel < 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "the input's shape is not known");
    int64_t dims[2] = {x->rank, numel};
    tsr_infer_set(c, 0, TSR_INT64, 2, dims);
    return TSR_OK;
}

static tsr_status nonzero_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int64_t numel = tsr_tensor_numel(x), count = count_nonzero(x);
    if (y->rank != 2 || y->dims[0] != x->rank || y->dims[1] < count)
        return tsr_error(TSR_ERR_SHAPE,
                         "output of rank %d, dims[0] %lld cannot hold the indices of %lld nonzero "
                         "elements of a rank-%d input",
                         y->rank, (long long)(y->rank > 0 ? y->dims[0] : -1), (long long)count,
                         x->rank);
    int64_t *out = y->data, found = 0;
    for (int64_t i = 0; i < numel; i++) {
        if (!element_nonzero(x, i))
            continue;
        int64_t rest = i;
        for (int d = x->rank - 1; d >= 0; d--) {
            out[d * count + found] = rest % x->dims[d];
            rest /= x->dims[d];
        }
        found++;
    }
    y->dims[1] = count;
    return TSR_OK;
}

const tsr_op_def tsr_op_NonZero = {
    .name = "NonZero",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = nonzero_infer,
    .ref = nonzero_ref,
    .bound = nonzero_bound,
};

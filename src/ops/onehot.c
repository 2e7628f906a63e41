/* OneHot (opset 11): a new axis of `depth` classes holding values[1] where
 * the class is the index and values[0] elsewhere. Indices and depth take
 * any numeric dtype (floats are truncated, as ONNX casts them to int64);
 * an index in [-depth, -1] counts from the end, any other out of range
 * index gives a line of values[0]. The values take any dtype: the kernel
 * copies elements by size. The output is a selection by integer indices,
 * so no gradient reaches the indices or depth; one reaching values (the
 * on and off values are almost always constants) is not implemented. */
#include "ops/op.h"

#include <string.h>

#define NUMERIC_TYPES                                                                              \
    (TSR_FLOAT_TYPES | TSR_DTYPE_BIT(TSR_INT64) | TSR_DTYPE_BIT(TSR_INT32) |                       \
     TSR_DTYPE_BIT(TSR_INT8) | TSR_DTYPE_BIT(TSR_UINT8))

/* Element i of a numeric tensor as an integer; false for a NaN or a float
 * outside int64's range. */
static bool element_int(const tsr_tensor *t, int64_t i, int64_t *out)
{
    double f;
    switch (t->dtype) {
    case TSR_INT64: *out = ((const int64_t *)t->data)[i]; return true;
    case TSR_INT32: *out = ((const int32_t *)t->data)[i]; return true;
    case TSR_INT8: *out = ((const int8_t *)t->data)[i]; return true;
    case TSR_UINT8: *out = ((const uint8_t *)t->data)[i]; return true;
    case TSR_FLOAT32: f = ((const float *)t->data)[i]; break;
    case TSR_FLOAT64: f = ((const double *)t->data)[i]; break;
    default: return false;
    }
    if (!(f > -9.2e18 && f < 9.2e18))
        return false;
    *out = (int64_t)f;
    return true;
}

static tsr_status onehot_depth(const tsr_tensor *t, int64_t *depth)
{
    if (tsr_tensor_numel(t) != 1 || t->rank > 1)
        return tsr_error(TSR_ERR_SHAPE, "depth must hold one value, got %lld in rank %d",
                         (long long)tsr_tensor_numel(t), t->rank);
    if (!element_int(t, 0, depth) || *depth < 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "depth must be a positive integer");
    return TSR_OK;
}

static tsr_status onehot_axis(const tsr_node *n, int indices_rank, int *axis)
{
    int64_t a = tsr_attr_int(n, "axis");
    if (!tsr_axis_normalize(a, indices_rank + 1, axis))
        return tsr_error(TSR_ERR_SHAPE, "axis %lld is out of range for an output of rank %d",
                         (long long)a, indices_rank + 1);
    return TSR_OK;
}

static tsr_status onehot_infer(tsr_infer_ctx *c)
{
    for (int i = 0; i < 3; i++)
        if (!c->inputs[i])
            return tsr_infer_error(c, TSR_ERR_PARSE, "input %d is missing", i);
    TSR_CHECK(tsr_infer_require_dtype(c, 0, NUMERIC_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, NUMERIC_TYPES));
    const tsr_value *indices = c->inputs[0], *depth = c->inputs[1], *values = c->inputs[2];
    if (depth->rank > 1 ||
        (depth->rank == 1 && tsr_dim_known(depth->dims[0]) && depth->dims[0] != 1))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "depth must hold one value (rank %d given)",
                               depth->rank);
    if (values->rank >= 0 &&
        (values->rank != 1 || (tsr_dim_known(values->dims[0]) && values->dims[0] != 2)))
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "values must be a 1-D tensor of two elements [off, on]");
    if (indices->rank < 0) {
        tsr_infer_set(c, 0, values->dtype, -1, NULL);
        return TSR_OK;
    }
    if (indices->rank + 1 > TSR_MAX_RANK)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "indices of rank %d give an output past rank %d",
                               indices->rank, TSR_MAX_RANK);
    int axis;
    TSR_CHECK(onehot_axis(c->node, indices->rank, &axis));
    int64_t d = TSR_DIM_UNKNOWN;
    if (depth->data) {
        tsr_tensor t = tsr_value_tensor(depth);
        TSR_CHECK(onehot_depth(&t, &d));
    }
    int64_t dims[TSR_MAX_RANK];
    for (int i = 0, j = 0; i <= indices->rank; i++)
        dims[i] = i == axis ? d : indices->dims[j++];
    tsr_infer_set(c, 0, values->dtype, indices->rank + 1, dims);
    return TSR_OK;
}

static tsr_status onehot_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *indices = k->inputs[0], *values = k->inputs[2];
    tsr_tensor *y = k->outputs[0];
    int64_t depth;
    int axis;
    TSR_CHECK(onehot_depth(k->inputs[1], &depth));
    TSR_CHECK(onehot_axis(k->node, indices->rank, &axis));
    if (tsr_tensor_numel(values) != 2)
        return tsr_error(TSR_ERR_SHAPE, "values holds %lld elements, not two [off, on]",
                         (long long)tsr_tensor_numel(values));
    int64_t outer = tsr_shape_numel(axis, indices->dims);
    int64_t inner = tsr_shape_numel(indices->rank - axis, indices->dims + axis);
    if (tsr_tensor_numel(y) != outer * depth * inner)
        return tsr_error(TSR_ERR_SHAPE, "output has %lld elements, depth %lld gives %lld",
                         (long long)tsr_tensor_numel(y), (long long)depth,
                         (long long)(outer * depth * inner));
    size_t es = tsr_dtype_size(values->dtype);
    const char *off = values->data, *on = off + es;
    char *dst = y->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < depth; c++)
            for (int64_t i = 0; i < inner; i++, dst += es) {
                int64_t idx;
                bool valid =
                    element_int(indices, o * inner + i, &idx) && idx >= -depth && idx < depth;
                bool hit = valid && (idx < 0 ? idx + depth : idx) == c;
                memcpy(dst, hit ? on : off, es);
            }
    return TSR_OK;
}

static const tsr_attr_def onehot_attrs[] = {{"axis", TSR_ATTR_INT, .i = -1}, {NULL}};

const tsr_op_def tsr_op_OneHot = {
    .name = "OneHot",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = onehot_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = onehot_infer,
    .ref = onehot_ref,
};

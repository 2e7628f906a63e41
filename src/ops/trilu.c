/* Trilu (opset 14): the upper or lower triangle of the last two axes,
 * from the k-th diagonal, of every matrix of a batch; the other elements
 * become zero. A linear mask, so its gradient is the same Trilu of the
 * incoming gradient. Any dtype: the kernel copies elements by size. */
#include "autodiff/autodiff.h"
#include "ops/op.h"

#include <string.h>

static tsr_status trilu_infer(tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0];
    if (x->rank < 2)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "the input has rank %d; Trilu needs rank 2 or more", x->rank);
    const tsr_value *k = c->n_inputs > 1 ? c->inputs[1] : NULL;
    if (k) {
        TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64)));
        if (tsr_shape_numel(k->rank, k->dims) > 1 || k->rank > 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "k must be a scalar (rank %d given)", k->rank);
    }
    int64_t upper = tsr_attr_int(c->node, "upper");
    if (upper != 0 && upper != 1)
        return tsr_infer_error(c, TSR_ERR_PARSE, "upper is %lld; it is 0 or 1", (long long)upper);
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

static tsr_status trilu_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int64_t diag = 0;
    if (k->n_inputs > 1 && k->inputs[1]) {
        if (tsr_tensor_numel(k->inputs[1]) != 1)
            return tsr_error(TSR_ERR_SHAPE, "Trilu: k holds %lld values; it must be a scalar",
                             (long long)tsr_tensor_numel(k->inputs[1]));
        diag = ((const int64_t *)k->inputs[1]->data)[0];
    }
    bool upper = tsr_attr_int(k->node, "upper") != 0;
    int64_t rows = x->dims[x->rank - 2], cols = x->dims[x->rank - 1];
    int64_t mats = rows > 0 && cols > 0 ? tsr_tensor_numel(x) / (rows * cols) : 0;
    size_t es = tsr_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = y->data;
    for (int64_t m = 0; m < mats; m++)
        for (int64_t i = 0; i < rows; i++) {
            size_t row = (size_t)((m * rows + i) * cols) * es;
            /* Kept columns: j >= i + k (upper) or j <= i + k (lower). */
            int64_t lo = upper ? i + diag : 0, hi = upper ? cols : i + diag + 1;
            lo = lo < 0 ? 0 : lo > cols ? cols : lo;
            hi = hi < lo ? lo : hi > cols ? cols : hi;
            memset(dst + row, 0, (size_t)cols * es);
            if (hi > lo)
                memcpy(dst + row + (size_t)lo * es, src + row + (size_t)lo * es,
                       (size_t)(hi - lo) * es);
        }
    return TSR_OK;
}

static tsr_status trilu_grad(tsr_grad_ctx *c)
{
    const char *dy = tsr_grad_dy(c, 0), *k = tsr_grad_input(c, 1);
    tsr_attr attrs[1];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 1);
    const char *ins[2] = {dy, k}, *dx;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Trilu, k ? 2 : 1, ins, n_attrs, attrs, 1, &dx));
    return tsr_grad_contribute(c, 0, dx);
}

static const tsr_attr_def trilu_attrs[] = {{"upper", TSR_ATTR_INT, .i = 1}, {NULL}};

const tsr_op_def tsr_op_Trilu = {
    .name = "Trilu",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = trilu_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = trilu_infer,
    .ref = trilu_ref,
    .grad = trilu_grad,
};

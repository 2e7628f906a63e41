/* Ops that change how a tensor's elements are viewed but not their order
 * (Shape, Reshape, Flatten, Squeeze, Unsqueeze), Expand, and the plain
 * copies Identity and inference-mode Dropout. Shape inference here carries
 * symbolic dims (the batch) through wherever an output dim provably equals
 * an input dim, since PyTorch's exports route every view through them. */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <stdio.h>
#include <string.h>

/* Output 0 gets input 0's bytes: the element order is unchanged. */
static tsr_status copy_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    size_t bytes = tsr_tensor_bytes(y);
    if (tsr_tensor_bytes(x) != bytes)
        return tsr_error(TSR_ERR_SHAPE, "the input holds %zu bytes but the output %zu",
                         tsr_tensor_bytes(x), bytes);
    if (bytes && y->data != x->data)
        memcpy(y->data, x->data, bytes);
    return TSR_OK;
}

/* ---------------------------------------------------------------- Shape */

static const tsr_attr_def shape_attrs[] = {
    {"start", TSR_ATTR_INT, .i = 0}, {"end", TSR_ATTR_INT, .i = INT64_MAX}, {NULL}};

/* The dims [*from, *to) that opset 15's start and end select. */
static void shape_range(const tsr_node *n, int rank, int *from, int *to)
{
    int64_t bounds[2] = {tsr_attr_int(n, "start"), tsr_attr_int(n, "end")};
    for (int i = 0; i < 2; i++) {
        if (bounds[i] < 0)
            bounds[i] += rank;
        bounds[i] = bounds[i] < 0 ? 0 : bounds[i] > rank ? rank : bounds[i];
    }
    *from = (int)bounds[0];
    *to = bounds[1] > bounds[0] ? (int)bounds[1] : (int)bounds[0];
}

static tsr_status shape_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    int from, to;
    shape_range(c->node, c->inputs[0]->rank, &from, &to);
    int64_t len = to - from;
    tsr_infer_set(c, 0, TSR_INT64, 1, &len);
    return TSR_OK;
}

static tsr_status shape_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int from, to;
    shape_range(k->node, x->rank, &from, &to);
    int64_t *y = k->outputs[0]->data;
    for (int d = from; d < to; d++)
        y[d - from] = x->dims[d];
    return TSR_OK;
}

const tsr_op_def tsr_op_Shape = {
    .name = "Shape",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = shape_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .flags = TSR_OP_SHAPE_ONLY,
    .infer = shape_infer,
    .ref = shape_ref,
};

/* ------------------------------------------------------- gradient rules */

/* The gradient of a view is the incoming gradient viewed back as the
 * input's shape. */
static tsr_status view_grad(tsr_grad_ctx *c)
{
    const char *shape, *g;
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &shape));
    const char *ins[2] = {tsr_grad_dy(c, 0), shape};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Reshape, 2, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status pass_grad(tsr_grad_ctx *c)
{
    return tsr_grad_contribute(c, 0, tsr_grad_dy(c, 0));
}

static tsr_status expand_grad(tsr_grad_ctx *c)
{
    return tsr_grad_contribute_sum(c, 0, tsr_grad_dy(c, 0));
}

/* -------------------------------------------------------------- Reshape */

/* Compares the element counts of two shapes that may hold symbols: known
 * sizes are multiplied, a symbol on one side cancels the same symbol on
 * the other, and what cannot be cancelled is counted as open. */
typedef struct count_balance {
    int64_t known_a, known_b;
    int open_a, open_b;
    int64_t last_open_a; /* the open dim of a, when there is one */
    bool too_big;        /* a known product passes TSR_MAX_TENSOR_BYTES */
} count_balance;

static count_balance balance(int rank_a, const int64_t *a, int rank_b, const int64_t *b)
{
    count_balance r = {1, 1, 0, 0, TSR_DIM_UNKNOWN, false};
    bool used[TSR_MAX_RANK] = {false};
    for (int i = 0; i < rank_a; i++) {
        if (tsr_dim_known(a[i])) {
            r.too_big |= !tsr_size_mul(r.known_a, a[i], &r.known_a);
            continue;
        }
        int match = -1;
        for (int j = 0; j < rank_b && match < 0 && tsr_dim_is_sym(a[i]); j++)
            if (!used[j] && b[j] == a[i])
                match = j;
        if (match >= 0) {
            used[match] = true;
        } else {
            r.open_a++;
            r.last_open_a = a[i];
        }
    }
    for (int j = 0; j < rank_b; j++) {
        if (tsr_dim_known(b[j]))
            r.too_big |= !tsr_size_mul(r.known_b, b[j], &r.known_b);
        else if (!used[j])
            r.open_b++;
    }
    return r;
}

static const tsr_attr_def reshape_attrs[] = {{"allowzero", TSR_ATTR_INT, .i = 0}, {NULL}};

static tsr_status reshape_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 1, "shape", shape, TSR_MAX_RANK, &n, &known));
    if (n < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "the length of the shape input is not known, so neither is the "
                               "output's rank");
    if (!known) {
        for (int i = 0; i < n; i++)
            dims[i] = TSR_DIM_UNKNOWN;
        tsr_infer_set(c, 0, x->dtype, n, dims);
        return TSR_OK;
    }
    bool allowzero = tsr_attr_int(c->node, "allowzero") != 0, has_zero = false;
    int infer_at = -1;
    char want[256], have[160];
    tsr_format_ints(want, sizeof want, shape, n);
    tsr_shape_format(have, sizeof have, x->rank, x->dims);
    for (int i = 0; i < n; i++) {
        if (shape[i] == -1) {
            if (infer_at >= 0)
                return tsr_infer_error(c, TSR_ERR_SHAPE, "shape %s has more than one -1", want);
            infer_at = i;
            dims[i] = TSR_DIM_UNKNOWN;
        } else if (shape[i] < -1) {
            return tsr_infer_error(c, TSR_ERR_SHAPE, "shape %s holds the invalid size %lld", want,
                                   (long long)shape[i]);
        } else if (shape[i] == 0 && !allowzero) {
            if (i >= x->rank)
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "shape %s copies dim %d (a 0) of the input %s, which has "
                                       "no such dim",
                                       want, i, have);
            dims[i] = x->dims[i];
        } else {
            dims[i] = shape[i];
            has_zero |= shape[i] == 0;
        }
    }
    if (allowzero && has_zero && infer_at >= 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "shape %s has both a 0 and a -1 with allowzero=1",
                               want);
    int64_t others[TSR_MAX_RANK];
    int n_others = 0;
    for (int i = 0; i < n; i++)
        if (i != infer_at)
            others[n_others++] = dims[i];
    count_balance b = balance(x->rank, x->dims, n_others, others);
    if (b.too_big)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "shape %s holds more than 2^62 elements, past what memory can hold "
                               "(input %s)",
                               want, have);
    if (infer_at >= 0) {
        if (b.open_a == 0 && b.open_b == 0) {
            if (b.known_b == 0)
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "the -1 in %s is ambiguous: the other dims hold no "
                                       "elements (input %s)",
                                       want, have);
            if (b.known_a % b.known_b != 0)
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "cannot reshape the input %s (%lld elements) to %s", have,
                                       (long long)b.known_a, want);
            dims[infer_at] = b.known_a / b.known_b;
        } else if (b.open_a == 1 && b.open_b == 0 && b.known_a == b.known_b) {
            dims[infer_at] = b.last_open_a;
        }
    } else if (b.open_a == 0 && b.open_b == 0 && b.known_a != b.known_b) {
        char resolved[160];
        tsr_shape_format(resolved, sizeof resolved, n, dims);
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "cannot reshape the input %s (%lld elements) to %s, which resolves "
                               "to %s (%lld elements)",
                               have, (long long)b.known_a, want, resolved, (long long)b.known_b);
    }
    tsr_infer_set(c, 0, x->dtype, n, dims);
    return TSR_OK;
}

const tsr_op_def tsr_op_Reshape = {
    .name = "Reshape",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = reshape_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = reshape_infer,
    .ref = copy_ref,
    .grad = view_grad,
};

/* -------------------------------------------------------------- Flatten */

/* The product of dims[from, to): known when all are, one symbol times
 * ones is that symbol, anything else is unknown. */
static int64_t dims_product(const int64_t *dims, int from, int to)
{
    int64_t known = 1, open = 1;
    int n_open = 0;
    for (int d = from; d < to; d++) {
        if (dims[d] == 0)
            return 0;
        if (tsr_dim_known(dims[d])) {
            known *= dims[d];
        } else {
            n_open++;
            open = dims[d];
        }
    }
    if (n_open == 0)
        return known;
    return n_open == 1 && known == 1 ? open : TSR_DIM_UNKNOWN;
}

static const tsr_attr_def flatten_attrs[] = {{"axis", TSR_ATTR_INT, .i = 1}, {NULL}};

static tsr_status flatten_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    int64_t axis = tsr_attr_int(c->node, "axis");
    if (axis < -x->rank || axis > x->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                               (long long)axis, x->rank);
    int a = (int)(axis < 0 ? axis + x->rank : axis);
    int64_t dims[2] = {dims_product(x->dims, 0, a), dims_product(x->dims, a, x->rank)};
    tsr_infer_set(c, 0, x->dtype, 2, dims);
    return TSR_OK;
}

const tsr_op_def tsr_op_Flatten = {
    .name = "Flatten",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = flatten_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = flatten_infer,
    .ref = copy_ref,
    .grad = view_grad,
};

/* ---------------------------------------------------- Squeeze, Unsqueeze */

/* `axes` is an attribute before opset 13 and an input from 13 on. */
static const tsr_attr_def axes_attrs[] = {{"axes", TSR_ATTR_INTS}, {NULL}};

/* *given: axes were passed; *known: their values are (not a non-constant
 * input); *count: how many, -1 if not known either. */
static tsr_status axes_of(const tsr_infer_ctx *c, int64_t *axes, int *count, bool *given,
                          bool *known)
{
    bool has_input = c->n_inputs > 1 && c->inputs[1];
    *given = *known = false;
    *count = -1;
    if (c->node->opset >= 13) {
        if (tsr_attr_has(c->node, "axes"))
            return tsr_infer_error(c, TSR_ERR_PARSE,
                                   "from opset 13 on, axes is an input, not an attribute");
        *given = has_input;
        return tsr_infer_int_input(c, 1, "axes", axes, TSR_MAX_RANK, count, known);
    }
    if (has_input)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "before opset 13, axes is an attribute, not an input");
    size_t n;
    const int64_t *a = tsr_attr_ints(c->node, "axes", &n);
    *given = a != NULL;
    *known = true;
    *count = (int)n;
    if (n > TSR_MAX_RANK)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "%zu axes, at most %d are supported", n,
                               TSR_MAX_RANK);
    if (n)
        memcpy(axes, a, n * sizeof *a);
    return TSR_OK;
}

/* Normalizes axes against `rank` and marks them in `marked`. */
static tsr_status mark_axes(const tsr_infer_ctx *c, const int64_t *axes, int count, int rank,
                            bool *marked)
{
    for (int d = 0; d < rank; d++)
        marked[d] = false;
    for (int i = 0; i < count; i++) {
        int a;
        if (!tsr_axis_normalize(axes[i], rank, &a))
            return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                                   (long long)axes[i], rank);
        if (marked[a])
            return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is given twice",
                                   (long long)axes[i]);
        marked[a] = true;
    }
    return TSR_OK;
}

static tsr_status squeeze_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    int64_t axes[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int count, rank = 0;
    bool given, known, marked[TSR_MAX_RANK];
    TSR_CHECK(axes_of(c, axes, &count, &given, &known));
    if (given && !known) {
        if (count < 0 || count > x->rank)
            return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                                   "the number of axes to squeeze is not known");
        for (int d = 0; d < x->rank - count; d++)
            dims[d] = TSR_DIM_UNKNOWN;
        tsr_infer_set(c, 0, x->dtype, x->rank - count, dims);
        return TSR_OK;
    }
    if (given) {
        TSR_CHECK(mark_axes(c, axes, count, x->rank, marked));
        for (int d = 0; d < x->rank; d++)
            if (marked[d] && tsr_dim_known(x->dims[d]) && x->dims[d] != 1)
                return tsr_infer_error(c, TSR_ERR_SHAPE, "cannot squeeze axis %d of size %lld", d,
                                       (long long)x->dims[d]);
    } else {
        /* Without axes every size-1 dim goes; a symbolic or unknown dim is
         * taken to be other than 1, and a plan whose concrete size is 1
         * re-infers to the squeezed shape. */
        for (int d = 0; d < x->rank; d++)
            marked[d] = x->dims[d] == 1;
    }
    for (int d = 0; d < x->rank; d++)
        if (!marked[d])
            dims[rank++] = x->dims[d];
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    return TSR_OK;
}

const tsr_op_def tsr_op_Squeeze = {
    .name = "Squeeze",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = axes_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = squeeze_infer,
    .ref = copy_ref,
    .grad = view_grad,
};

static tsr_status unsqueeze_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    int64_t axes[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int count;
    bool given, known, marked[TSR_MAX_RANK];
    TSR_CHECK(axes_of(c, axes, &count, &given, &known));
    if (!given)
        return tsr_infer_error(c, TSR_ERR_PARSE, "Unsqueeze needs axes");
    if (count < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "the number of axes to insert is not known");
    int rank = x->rank + count;
    if (rank > TSR_MAX_RANK)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "the output would have rank %d (max %d)",
                               rank, TSR_MAX_RANK);
    if (!known) {
        for (int d = 0; d < rank; d++)
            dims[d] = TSR_DIM_UNKNOWN;
    } else {
        TSR_CHECK(mark_axes(c, axes, count, rank, marked));
        for (int d = 0, from = 0; d < rank; d++)
            dims[d] = marked[d] ? 1 : x->dims[from++];
    }
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    return TSR_OK;
}

const tsr_op_def tsr_op_Unsqueeze = {
    .name = "Unsqueeze",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = axes_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = unsqueeze_infer,
    .ref = copy_ref,
    .grad = view_grad,
};

/* --------------------------------------------------------------- Expand */

static tsr_status expand_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n, rank;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 1, "shape", shape, TSR_MAX_RANK, &n, &known));
    if (n < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "the length of the shape input is not known, so neither is the "
                               "output's rank");
    if (known) {
        for (int i = 0; i < n; i++)
            if (shape[i] < 0) {
                char buf[256];
                tsr_format_ints(buf, sizeof buf, shape, n);
                return tsr_infer_error(c, TSR_ERR_SHAPE, "shape %s holds a negative size", buf);
            }
        TSR_CHECK(tsr_shape_broadcast(x->rank, x->dims, n, shape, &rank, dims));
    } else {
        /* Broadcasting keeps an input dim other than 1 whatever the shape
         * says there (or fails at run time). */
        rank = x->rank > n ? x->rank : n;
        for (int d = 0; d < rank; d++) {
            int xd = d - (rank - x->rank);
            int64_t v = xd >= 0 ? x->dims[xd] : TSR_DIM_UNKNOWN;
            dims[d] = tsr_dim_known(v) && v != 1 ? v : TSR_DIM_UNKNOWN;
        }
    }
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    return TSR_OK;
}

static tsr_status expand_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int64_t in_strides[TSR_MAX_RANK], strides[TSR_MAX_RANK];
    tsr_contiguous_strides(x->rank, x->dims, in_strides);
    if (y->rank < x->rank)
        return tsr_error(TSR_ERR_SHAPE, "output rank %d is below the input's %d", y->rank, x->rank);
    for (int d = 0; d < y->rank; d++) {
        int xd = d - (y->rank - x->rank);
        int64_t v = xd >= 0 ? x->dims[xd] : 1;
        if (v != 1 && v != y->dims[d])
            return tsr_error(TSR_ERR_SHAPE, "input axis %d of size %lld does not expand to %lld",
                             xd, (long long)v, (long long)y->dims[d]);
        strides[d] = v == 1 ? 0 : in_strides[xd];
    }
    tsr_copy_strided(y->data, x->data, tsr_dtype_size(x->dtype), y->rank, y->dims, strides, 0,
                     k->threads);
    return TSR_OK;
}

const tsr_op_def tsr_op_Expand = {
    .name = "Expand",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = expand_infer,
    .ref = expand_ref,
    .grad = expand_grad,
};

/* ------------------------------------------------------------- Identity */

static tsr_status identity_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

const tsr_op_def tsr_op_Identity = {
    .name = "Identity",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = identity_infer,
    .ref = copy_ref,
    .grad = pass_grad,
};

/* -------------------------------------------------------------- Dropout */

/* `ratio` is an attribute before opset 12 and an input from 12 on, where
 * `seed` and the training_mode input appear. Only inference is supported:
 * training mode with a non-zero ratio is refused, not silently ignored. */
static const tsr_attr_def dropout_attrs[] = {
    {"ratio", TSR_ATTR_FLOAT, .f = 0.5}, {"seed", TSR_ATTR_INT, .i = 0}, {NULL}};

static tsr_status dropout_training_error(double ratio)
{
    return tsr_error(TSR_ERR_UNSUPPORTED,
                     "Dropout in training mode (ratio %g) is not supported yet; only inference is",
                     ratio);
}

static tsr_status dropout_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *ratio = c->n_inputs > 1 ? c->inputs[1] : NULL;
    const tsr_value *training = c->n_inputs > 2 ? c->inputs[2] : NULL;
    if (c->node->opset < 12 && (ratio || training))
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "before opset 12, Dropout takes ratio as an attribute, not inputs");
    if (c->node->opset >= 12 && tsr_attr_has(c->node, "ratio"))
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "from opset 12 on, ratio is an input, not an attribute");
    if (ratio &&
        (!tsr_dtype_is_float(ratio->dtype) || tsr_shape_numel(ratio->rank, ratio->dims) > 1))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "ratio must be a float scalar");
    if (training &&
        (training->dtype != TSR_BOOL || tsr_shape_numel(training->rank, training->dims) > 1))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "training_mode must be a bool scalar");
    if (training && training->data && tsr_shape_numel(training->rank, training->dims) == 1 &&
        *(const uint8_t *)training->data) {
        double r = 0.5;
        if (ratio && ratio->data && tsr_shape_numel(ratio->rank, ratio->dims) == 1) {
            tsr_tensor t = tsr_value_tensor(ratio);
            r = tsr_get_f(&t, 0);
        }
        if (r != 0 && (!ratio || ratio->data))
            return dropout_training_error(r);
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    if (c->n_outputs > 1)
        tsr_infer_set(c, 1, TSR_BOOL, x->rank, x->dims);
    return TSR_OK;
}

static tsr_status dropout_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *ratio = k->n_inputs > 1 ? k->inputs[1] : NULL;
    const tsr_tensor *training = k->n_inputs > 2 ? k->inputs[2] : NULL;
    if (training && tsr_tensor_numel(training) == 1 && *(const uint8_t *)training->data) {
        double r = ratio && tsr_tensor_numel(ratio) == 1 ? tsr_get_f(ratio, 0) : 0.5;
        if (r != 0)
            return dropout_training_error(r);
    }
    TSR_CHECK(copy_ref(k));
    if (k->n_outputs > 1 && k->outputs[1])
        memset(k->outputs[1]->data, 1, (size_t)tsr_tensor_numel(k->outputs[1]));
    return TSR_OK;
}

const tsr_op_def tsr_op_Dropout = {
    .name = "Dropout",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 2,
    .attrs = dropout_attrs,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = dropout_infer,
    .ref = dropout_ref,
    .grad = pass_grad,
};

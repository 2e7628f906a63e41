/* Reductions over axes (ReduceMean, ReduceSum, ReduceMax, ReduceMin,
 * ReduceProd, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp,
 * ReduceSumSquare) and Softmax / LogSoftmax. Float sums and products
 * accumulate in double; integer ones in 64 bits, wrapping like the integer
 * arithmetic of binary.c, so int32 results match numpy's int32 reduce. */
#include "ops/reduce.h"
#include "autodiff/autodiff.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>

typedef enum reduce_mode {
    REDUCE_SUM,
    REDUCE_MEAN,
    REDUCE_MAX,
    REDUCE_MIN,
    REDUCE_PROD,
    /* from here on, sums of a function of x (then its square root or log),
     * whose gradients are pointwise (reduce_pointwise_grad) */
    REDUCE_L1,
    REDUCE_L2,
    REDUCE_LOG_SUM,
    REDUCE_LOG_SUM_EXP,
    REDUCE_SUM_SQUARE
} reduce_mode;

static reduce_mode reduce_mode_of(const tsr_op_def *op)
{
    static const struct {
        const tsr_op_def *op;
        reduce_mode mode;
    } modes[] = {{&tsr_op_ReduceSum, REDUCE_SUM},
                 {&tsr_op_ReduceMax, REDUCE_MAX},
                 {&tsr_op_ReduceMin, REDUCE_MIN},
                 {&tsr_op_ReduceProd, REDUCE_PROD},
                 {&tsr_op_ReduceL1, REDUCE_L1},
                 {&tsr_op_ReduceL2, REDUCE_L2},
                 {&tsr_op_ReduceLogSum, REDUCE_LOG_SUM},
                 {&tsr_op_ReduceLogSumExp, REDUCE_LOG_SUM_EXP},
                 {&tsr_op_ReduceSumSquare, REDUCE_SUM_SQUARE}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (modes[i].op == op)
            return modes[i].mode;
    return REDUCE_MEAN;
}

/* The dtypes ONNX gives each reduction that Tessera has at the node's
 * opset; ReduceMax and ReduceMin take bool from opset 20 on, run as uint8
 * (max is any, min is all). ONNX also lists integers for ReduceL2,
 * ReduceLogSum and ReduceLogSumExp, whose results are not integers: those
 * are floats only here. */
static unsigned reduce_dtypes(const tsr_node *n)
{
    unsigned ints = TSR_DTYPE_BIT(TSR_INT32) | TSR_DTYPE_BIT(TSR_INT64);
    switch (reduce_mode_of(n->op)) {
    case REDUCE_MEAN:
    case REDUCE_L2:
    case REDUCE_LOG_SUM:
    case REDUCE_LOG_SUM_EXP: return TSR_FLOAT_TYPES;
    case REDUCE_SUM:
    case REDUCE_PROD:
    case REDUCE_L1:
    case REDUCE_SUM_SQUARE: return TSR_FLOAT_TYPES | ints;
    case REDUCE_MAX:
    case REDUCE_MIN: break;
    }
    return TSR_FLOAT_TYPES | ints | TSR_DTYPE_BIT(TSR_INT8) | TSR_DTYPE_BIT(TSR_UINT8) |
           (n->opset >= 20 ? TSR_DTYPE_BIT(TSR_BOOL) : 0);
}

/* ReduceSum takes its axes as an optional input, and
 * noop_with_empty_axes, from opset 13 on; the others from opset 18 on. */
static int axes_input_opset(const tsr_op_def *op)
{
    return op == &tsr_op_ReduceSum ? 13 : 18;
}

static bool axes_from_input(const tsr_node *n)
{
    return n->opset >= axes_input_opset(n->op);
}

/* Which axes are reduced. `axes_input` is the axes input when the node has
 * one and its contents are known, NULL otherwise; *known is false when the
 * node has an axes input whose contents are not known yet. */
static tsr_status reduce_mask(const tsr_node *n, bool has_axes_input, const tsr_tensor *axes_input,
                              int rank, bool mask[TSR_MAX_RANK], bool *known)
{
    int64_t axes[TSR_MAX_RANK];
    int count = 0;
    *known = true;
    if (axes_from_input(n)) {
        if (tsr_attr_has(n, "axes"))
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "from opset %d on, %s takes axes as its second input, not as an "
                             "attribute",
                             axes_input_opset(n->op), n->op->name);
        if (has_axes_input && !axes_input) {
            *known = false;
            return TSR_OK;
        }
        if (has_axes_input) {
            if (axes_input->dtype != TSR_INT64)
                return tsr_error(TSR_ERR_DTYPE, "axes must be int64, got %s",
                                 tsr_dtype_name(axes_input->dtype));
            if (tsr_tensor_numel(axes_input) > rank)
                return tsr_error(TSR_ERR_SHAPE, "%lld axes given for an input of rank %d",
                                 (long long)tsr_tensor_numel(axes_input), rank);
            TSR_CHECK(tsr_kernel_ints(axes_input, axes, TSR_MAX_RANK, &count));
        }
    } else {
        if (has_axes_input)
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "%s at opset %d takes axes as an attribute, not as an input",
                             n->op->name, n->opset);
        size_t n_attr;
        const int64_t *attr = tsr_attr_ints(n, "axes", &n_attr);
        if (n_attr > (size_t)rank)
            return tsr_error(TSR_ERR_SHAPE, "%zu axes given for an input of rank %d", n_attr, rank);
        for (size_t i = 0; i < n_attr; i++)
            axes[count++] = attr[i];
    }
    int64_t keepdims = tsr_attr_int(n, "keepdims");
    int64_t noop = tsr_attr_int(n, "noop_with_empty_axes");
    if (noop && !axes_from_input(n))
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s at opset %d has no attribute 'noop_with_empty_axes' (it comes "
                         "with the axes input, from opset %d on)",
                         n->op->name, n->opset, axes_input_opset(n->op));
    if (keepdims != 0 && keepdims != 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "keepdims is %lld, must be 0 or 1",
                         (long long)keepdims);
    if (noop != 0 && noop != 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "noop_with_empty_axes is %lld, must be 0 or 1",
                         (long long)noop);
    for (int d = 0; d < rank; d++)
        mask[d] = count == 0 && !noop;
    for (int i = 0; i < count; i++) {
        int axis;
        if (!tsr_axis_normalize(axes[i], rank, &axis))
            return tsr_error(TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                             (long long)axes[i], rank);
        if (mask[axis])
            return tsr_error(TSR_ERR_SHAPE, "axis %lld is given twice", (long long)axes[i]);
        mask[axis] = true;
    }
    return TSR_OK;
}

bool tsr_reduce_graph_mask(const tsr_graph *g, const tsr_node *n, bool mask[TSR_MAX_RANK])
{
    const tsr_value *x = &g->values[n->inputs[0]];
    bool has_axes = n->n_inputs > 1 && n->inputs[1] >= 0, known;
    tsr_tensor axes;
    if (has_axes) {
        if (!g->values[n->inputs[1]].data)
            return false;
        axes = tsr_value_tensor(&g->values[n->inputs[1]]);
    }
    return x->rank >= 0 &&
           reduce_mask(n, has_axes, has_axes ? &axes : NULL, x->rank, mask, &known) == TSR_OK &&
           known;
}

static const tsr_attr_def reduce_attrs[] = {{"axes", TSR_ATTR_INTS},
                                            {"keepdims", TSR_ATTR_INT, .i = 1},
                                            {"noop_with_empty_axes", TSR_ATTR_INT, .i = 0},
                                            {NULL}};

static tsr_status reduce_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, reduce_dtypes(c->node)));
    const tsr_value *x = c->inputs[0];
    const tsr_value *axes_value = c->n_inputs > 1 ? c->inputs[1] : NULL;
    bool keepdims = tsr_attr_int(c->node, "keepdims") != 0;
    if (x->rank < 0) {
        tsr_infer_set(c, 0, x->dtype, -1, NULL);
        return TSR_OK;
    }
    tsr_tensor axes_view;
    const tsr_tensor *axes_known = NULL;
    if (axes_value) {
        axes_view = tsr_value_tensor(axes_value);
        if (axes_value->dtype != TSR_INT64)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "axes must be int64, got %s",
                                   tsr_dtype_name(axes_value->dtype));
        if (axes_value->rank >= 0 && axes_value->rank != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "axes must be 1-D, got rank %d",
                                   axes_value->rank);
        if (axes_value->data || tsr_shape_numel(axes_value->rank, axes_value->dims) == 0)
            axes_known = &axes_view;
    }
    bool mask[TSR_MAX_RANK], known;
    TSR_CHECK(reduce_mask(c->node, axes_value != NULL, axes_known, x->rank, mask, &known));
    int64_t dims[TSR_MAX_RANK];
    int rank = 0;
    if (!known) {
        /* Which axes go is decided at run time: with keepdims the rank stays. */
        int64_t n_axes = axes_value->rank == 1 ? axes_value->dims[0] : TSR_DIM_UNKNOWN;
        if (tsr_dim_known(n_axes) && n_axes > x->rank)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%lld axes given for an input of rank %d",
                                   (long long)n_axes, x->rank);
        if (keepdims) {
            for (int d = 0; d < x->rank; d++)
                dims[d] = TSR_DIM_UNKNOWN;
            rank = x->rank;
        } else if (tsr_dim_known(n_axes) && n_axes > 0) {
            for (int d = 0; d < x->rank - n_axes; d++)
                dims[d] = TSR_DIM_UNKNOWN;
            rank = x->rank - (int)n_axes;
        } else {
            rank = -1;
        }
        tsr_infer_set(c, 0, x->dtype, rank, dims);
        return TSR_OK;
    }
    for (int d = 0; d < x->rank; d++) {
        if (!mask[d])
            dims[rank++] = x->dims[d];
        else if (keepdims)
            dims[rank++] = 1;
    }
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    return TSR_OK;
}

void tsr_reduce_runs_of(int rank, const int64_t *dims, const bool *mask, tsr_reduce_runs *r)
{
    r->n_kept = r->n_red = 0;
    r->out_count = r->red_count = 1;
    int64_t stride = 1;
    int last = -1; /* kind of the run just added, walking from the innermost axis */
    for (int d = rank - 1; d >= 0; d--) {
        int64_t size = dims[d];
        int kind = mask[d] ? 1 : 0;
        if (size != 1) {
            int64_t *sizes = kind ? r->red_size : r->kept_size;
            int64_t *strides = kind ? r->red_stride : r->kept_stride;
            int *n = kind ? &r->n_red : &r->n_kept;
            if (last == kind) {
                sizes[*n - 1] *= size;
            } else {
                sizes[*n] = size;
                strides[*n] = stride;
                (*n)++;
            }
            last = kind;
            *(kind ? &r->red_count : &r->out_count) *= size;
        }
        stride *= size;
    }
}

/* The kernel below is instantiated once per element type, with the
 * accumulator type ACC and the steps that fold one value v into acc.
 * ReduceLogSumExp takes two passes over each group: the first finds the
 * max, which the second subtracts before exp (an infinite or NaN max is
 * not subtracted: the sum is then inf, 0 or NaN as it should be). The
 * logs and square root are float-only (reduce_dtypes). */
/* clang-format off */
#define REDUCE_DEFINE(NAME, T, ACC, LOWEST, HIGHEST, ADD, MUL, MAX_STEP, MIN_STEP)                \
    static void reduce_run_##NAME(const tsr_kernel_ctx *k, const tsr_reduce_runs *r,               \
                                  reduce_mode mode)                                                \
    {                                                                                              \
        const T *x = k->inputs[0]->data;                                                           \
        T *y = k->outputs[0]->data;                                                                \
        /* runs are stored innermost first; the innermost reduced run is the inner loop */         \
        int64_t inner = r->n_red ? r->red_size[0] : 1;                                             \
        int64_t inner_stride = r->n_red ? r->red_stride[0] : 0;                                    \
        int64_t outer = inner ? r->red_count / inner : 0;                                          \
        int64_t outs = r->out_count;                                                               \
        int passes = mode == REDUCE_LOG_SUM_EXP ? 2 : 1;                                           \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && outs > 1)")        \
        for (int64_t o = 0; o < outs; o++) {                                                       \
            int64_t base = 0, rest = o;                                                            \
            for (int g = 0; g < r->n_kept; g++) {                                                  \
                base += (rest % r->kept_size[g]) * r->kept_stride[g];                              \
                rest /= r->kept_size[g];                                                           \
            }                                                                                      \
            double shift = 0.0;                                                                    \
            ACC acc = 0;                                                                           \
            for (int pass = 0; pass < passes; pass++) {                                            \
                reduce_mode step = pass + 1 < passes ? REDUCE_MAX : mode;                          \
                acc = step == REDUCE_MAX ? (LOWEST) : step == REDUCE_MIN ? (HIGHEST)               \
                    : step == REDUCE_PROD ? (ACC)1 : (ACC)0;                                       \
                for (int64_t q = 0; q < outer; q++) {                                              \
                    int64_t offset = base, qr = q;                                                 \
                    for (int g = 1; g < r->n_red; g++) {                                           \
                        offset += (qr % r->red_size[g]) * r->red_stride[g];                        \
                        qr /= r->red_size[g];                                                      \
                    }                                                                              \
                    const T *xs = x + offset;                                                      \
                    if (step == REDUCE_SUM || step == REDUCE_MEAN || step == REDUCE_LOG_SUM) {     \
                        for (int64_t i = 0; i < inner; i++) {                                      \
                            ACC v = xs[i * inner_stride];                                          \
                            acc = ADD(acc, v);                                                     \
                        }                                                                          \
                    } else if (step == REDUCE_L1) {                                                \
                        for (int64_t i = 0; i < inner; i++) {                                      \
                            ACC v = xs[i * inner_stride];                                          \
                            acc = ADD(acc, v < 0 ? MUL(v, (ACC)-1) : v);                           \
                        }                                                                          \
                    } else if (step == REDUCE_L2 || step == REDUCE_SUM_SQUARE) {                   \
                        for (int64_t i = 0; i < inner; i++) {                                      \
                            ACC v = xs[i * inner_stride];                                          \
                            acc = ADD(acc, MUL(v, v));                                             \
                        }                                                                          \
                    } else if (step == REDUCE_LOG_SUM_EXP) {                                       \
                        for (int64_t i = 0; i < inner; i++)                                        \
                            acc = (ACC)(acc + exp((double)xs[i * inner_stride] - shift));          \
                    } else if (step == REDUCE_PROD) {                                              \
                        for (int64_t i = 0; i < inner; i++) {                                      \
                            ACC v = xs[i * inner_stride];                                          \
                            acc = MUL(acc, v);                                                     \
                        }                                                                          \
                    } else if (step == REDUCE_MAX) {                                               \
                        for (int64_t i = 0; i < inner; i++) {                                      \
                            ACC v = xs[i * inner_stride];                                          \
                            MAX_STEP;                                                              \
                        }                                                                          \
                    } else {                                                                       \
                        for (int64_t i = 0; i < inner; i++) {                                      \
                            ACC v = xs[i * inner_stride];                                          \
                            MIN_STEP;                                                              \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
                if (pass + 1 < passes)                                                             \
                    shift = isfinite((double)acc) ? (double)acc : 0.0;                             \
            }                                                                                      \
            if (mode == REDUCE_MEAN)                                                               \
                acc /= (ACC)r->red_count;                                                          \
            else if (mode == REDUCE_L2)                                                            \
                acc = (ACC)sqrt((double)acc);                                                      \
            else if (mode == REDUCE_LOG_SUM)                                                       \
                acc = (ACC)log((double)acc);                                                       \
            else if (mode == REDUCE_LOG_SUM_EXP)                                                   \
                acc = (ACC)(shift + log((double)acc));                                             \
            y[o] = (T)acc;                                                                         \
        }                                                                                          \
    }
/* clang-format on */

/* Floats: NaN wins Max and Min, as in numpy and PyTorch. */
#define FLOAT_ADD(a, v) ((a) + (v))
#define FLOAT_MUL(a, v) ((a) * (v))
#define FLOAT_MAX_STEP                                                                             \
    if (!isnan(acc) && (v > acc || isnan(v)))                                                      \
    acc = v
#define FLOAT_MIN_STEP                                                                             \
    if (!isnan(acc) && (v < acc || isnan(v)))                                                      \
    acc = v
/* Integers: sums and products wrap (through unsigned arithmetic). */
#define INT_ADD(a, v) ((int64_t)((uint64_t)(a) + (uint64_t)(v)))
#define INT_MUL(a, v) ((int64_t)((uint64_t)(a) * (uint64_t)(v)))
#define INT_MAX_STEP                                                                               \
    if (v > acc)                                                                                   \
    acc = v
#define INT_MIN_STEP                                                                               \
    if (v < acc)                                                                                   \
    acc = v

#define REDUCE_DEFINE_FLOAT(NAME, T)                                                               \
    REDUCE_DEFINE(NAME, T, double, -INFINITY, INFINITY, FLOAT_ADD, FLOAT_MUL, FLOAT_MAX_STEP,      \
                  FLOAT_MIN_STEP)
#define REDUCE_DEFINE_INT(NAME, T, LOWEST, HIGHEST)                                                \
    REDUCE_DEFINE(NAME, T, int64_t, LOWEST, HIGHEST, INT_ADD, INT_MUL, INT_MAX_STEP, INT_MIN_STEP)

REDUCE_DEFINE_FLOAT(f32, float)
REDUCE_DEFINE_FLOAT(f64, double)
REDUCE_DEFINE_INT(i64, int64_t, INT64_MIN, INT64_MAX)
REDUCE_DEFINE_INT(i32, int32_t, INT32_MIN, INT32_MAX)
REDUCE_DEFINE_INT(i8, int8_t, INT8_MIN, INT8_MAX)
REDUCE_DEFINE_INT(u8, uint8_t, 0, UINT8_MAX)

static tsr_status reduce_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    const tsr_tensor *axes = k->n_inputs > 1 ? k->inputs[1] : NULL;
    bool mask[TSR_MAX_RANK], known;
    TSR_CHECK(reduce_mask(k->node, axes != NULL, axes, x->rank, mask, &known));
    tsr_reduce_runs r;
    tsr_reduce_runs_of(x->rank, x->dims, mask, &r);
    if (tsr_tensor_numel(k->outputs[0]) != r.out_count)
        return tsr_error(TSR_ERR_SHAPE, "output has %lld elements, the reduction gives %lld",
                         (long long)tsr_tensor_numel(k->outputs[0]), (long long)r.out_count);
    reduce_mode mode = reduce_mode_of(k->node->op);
    if (x->dtype >= 32 || !(reduce_dtypes(k->node) & TSR_DTYPE_BIT(x->dtype)))
        return tsr_error(TSR_ERR_DTYPE, "%s has no kernel for %s", k->node->op->name,
                         tsr_dtype_name(x->dtype));
    switch (x->dtype) {
    case TSR_FLOAT32: reduce_run_f32(k, &r, mode); break;
    case TSR_FLOAT64: reduce_run_f64(k, &r, mode); break;
    case TSR_INT64: reduce_run_i64(k, &r, mode); break;
    case TSR_INT32: reduce_run_i32(k, &r, mode); break;
    case TSR_INT8: reduce_run_i8(k, &r, mode); break;
    default: reduce_run_u8(k, &r, mode); break;
    }
    return TSR_OK;
}

static double per_input_element(const tsr_infer_ctx *c)
{
    return (double)tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
}

/* ------------------------------------------------------- gradient rules */

/* The reduced axes of a Reduce node, from its attribute or constant input;
 * unsupported when they are only known at run time. */
static tsr_status reduce_grad_axes(tsr_grad_ctx *c, int rank, bool mask[TSR_MAX_RANK])
{
    const tsr_node *n = tsr_grad_node(c);
    const tsr_value *axes = tsr_grad_value(c, tsr_grad_input(c, 1));
    tsr_tensor view;
    const tsr_tensor *known = NULL;
    if (axes) {
        view = tsr_value_tensor(axes);
        if (!axes->data && tsr_shape_numel(axes->rank, axes->dims) != 0)
            return tsr_grad_unsupported(c, "the axes are computed at run time");
        known = &view;
    }
    bool ok;
    return reduce_mask(n, axes != NULL, known, rank, mask, &ok);
}

/* dy with the reduced axes put back (size 1), ready to broadcast to X. */
static tsr_status reduce_grad_keep(tsr_grad_ctx *c, const char *dy, const bool *mask, int rank,
                                   const char **out)
{
    if (tsr_attr_int(tsr_grad_node(c), "keepdims") != 0) {
        *out = dy;
        return TSR_OK;
    }
    int64_t axes[TSR_MAX_RANK];
    int n = 0;
    for (int d = 0; d < rank; d++)
        if (mask[d])
            axes[n++] = d;
    if (n == 0) {
        *out = dy;
        return TSR_OK;
    }
    const char *axes_name;
    TSR_CHECK(tsr_grad_ints(c, n, axes, &axes_name));
    const char *ins[2] = {dy, axes_name};
    return tsr_grad_emit(c, &tsr_op_Unsqueeze, 2, ins, 0, NULL, 1, out);
}

static tsr_status expand_to(tsr_grad_ctx *c, const char *g, const char *like, const char **out)
{
    const char *shape;
    TSR_CHECK(tsr_grad_shape(c, like, &shape));
    const char *ins[2] = {g, shape};
    return tsr_grad_emit(c, &tsr_op_Expand, 2, ins, 0, NULL, 1, out);
}

/* ReduceProd: dx_i = dy * (product of the other elements of its group),
 * which is y / x_i only where x has no zeros. With zeros replaced by ones
 * (x1) and p the product of x1 over the group, the product of the others
 * is p / x1_i where no other element of the group is zero, else 0: one
 * zero in the group sends p to that element alone, two or more send
 * nothing. Written with graph ops, so that it differentiates again. */
static tsr_status reduce_prod_grad(tsr_grad_ctx *c, const char *dy_keep, int n, const int64_t *axes)
{
    const char *x = tsr_grad_input(c, 0);
    tsr_dtype dt = tsr_grad_value(c, x)->dtype;
    const char *zero, *one, *is_zero, *z, *x1, *p, *zeros, *others_zero, *none_other, *share,
        *masked, *g;
    TSR_CHECK(tsr_grad_scalar(c, 0.0, dt, &zero));
    TSR_CHECK(tsr_grad_scalar(c, 1.0, dt, &one));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Equal, x, zero, &is_zero));
    tsr_attr to = TSR_ATTR_I("to", dt);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &is_zero, 1, &to, 1, &z));
    const char *pick[3] = {is_zero, one, x};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Where, 3, pick, 0, NULL, 1, &x1));
    /* Emitted at TSR_GRAD_OPSET, where ReduceProd takes axes as an attribute. */
    tsr_attr prod_attrs[2] = {
        TSR_ATTR_I("keepdims", 1),
        {.name = "axes", .type = TSR_ATTR_INTS, .count = (size_t)n, .ints = axes}};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceProd, 1, &x1, 2, prod_attrs, 1, &p));
    const char *axes_name;
    TSR_CHECK(tsr_grad_ints(c, n, axes, &axes_name));
    const char *sum_in[2] = {z, axes_name};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, sum_in, 1, prod_attrs, 1, &zeros));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, zeros, z, &others_zero));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Equal, others_zero, zero, &none_other));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, p, x1, &share));
    const char *keep_share[3] = {none_other, share, zero};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Where, 3, keep_share, 0, NULL, 1, &masked));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy_keep, masked, &g));
    return tsr_grad_contribute(c, 0, g);
}

/* The reductions of a function of x: dx = dy * f'(x, y), where dy and y
 * come with the reduced axes put back and broadcast over the group. Every
 * rule holds for groups of one element too (noop_with_empty_axes, a
 * scalar). L1: sign(x), 0 at 0. L2: x / y, with y = 0 replaced by 1: y is
 * 0 only where the whole group is 0, so the gradient there is 0 (the
 * subgradient nearest the origin) and never NaN. LogSum: 1 / exp(y), the
 * group's sum. LogSumExp: exp(x - y), the softmax, finite since y >= x.
 * SumSquare: 2 x. */
static tsr_status reduce_pointwise_grad(tsr_grad_ctx *c, reduce_mode mode, const bool *mask,
                                        int rank, const char *dy_keep)
{
    const char *x = tsr_grad_input(c, 0), *y_keep, *d, *g;
    tsr_dtype dt = tsr_grad_value(c, x)->dtype;
    TSR_CHECK(reduce_grad_keep(c, tsr_grad_output(c, 0), mask, rank, &y_keep));
    if (mode == REDUCE_L1) {
        const char *zero, *pos, *neg, *pos_f, *neg_f;
        tsr_attr to = TSR_ATTR_I("to", dt);
        TSR_CHECK(tsr_grad_scalar(c, 0.0, dt, &zero));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Greater, x, zero, &pos));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Less, x, zero, &neg));
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &pos, 1, &to, 1, &pos_f));
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &neg, 1, &to, 1, &neg_f));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, pos_f, neg_f, &d));
    } else if (mode == REDUCE_L2) {
        const char *zero, *one, *is_zero, *norm;
        TSR_CHECK(tsr_grad_scalar(c, 0.0, dt, &zero));
        TSR_CHECK(tsr_grad_scalar(c, 1.0, dt, &one));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Equal, y_keep, zero, &is_zero));
        const char *pick[3] = {is_zero, one, y_keep};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Where, 3, pick, 0, NULL, 1, &norm));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, x, norm, &d));
    } else if (mode == REDUCE_LOG_SUM) {
        const char *sum, *share;
        TSR_CHECK(tsr_grad_unary(c, &tsr_op_Exp, y_keep, &sum));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, dy_keep, sum, &share));
        TSR_CHECK(expand_to(c, share, x, &g));
        return tsr_grad_contribute(c, 0, g);
    } else if (mode == REDUCE_LOG_SUM_EXP) {
        const char *diff;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, x, y_keep, &diff));
        TSR_CHECK(tsr_grad_unary(c, &tsr_op_Exp, diff, &d));
    } else {
        const char *two;
        TSR_CHECK(tsr_grad_scalar(c, 2.0, dt, &two));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, x, two, &d));
    }
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, d, dy_keep, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status reduce_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *dy = tsr_grad_dy(c, 0);
    const tsr_value xv_copy = *tsr_grad_value(c, x), *xv = &xv_copy;
    tsr_dtype dt = xv->dtype;
    bool mask[TSR_MAX_RANK];
    TSR_CHECK(reduce_grad_axes(c, xv->rank, mask));
    const char *keep, *g;
    TSR_CHECK(reduce_grad_keep(c, dy, mask, xv->rank, &keep));
    reduce_mode mode = reduce_mode_of(tsr_grad_node(c)->op);
    if (mode >= REDUCE_L1)
        return reduce_pointwise_grad(c, mode, mask, xv->rank, keep);
    int64_t axes[TSR_MAX_RANK];
    int n = 0;
    for (int d = 0; d < xv->rank; d++)
        if (mask[d])
            axes[n++] = d;
    if (n == 0) /* nothing reduced (noop_with_empty_axes, or a scalar): Y is X */
        return tsr_grad_contribute(c, 0, dy);
    if (mode == REDUCE_PROD)
        return reduce_prod_grad(c, keep, n, axes);
    if (mode == REDUCE_SUM || mode == REDUCE_MEAN) {
        TSR_CHECK(expand_to(c, keep, x, &g));
        if (mode == REDUCE_MEAN) {
            int int_axes[TSR_MAX_RANK];
            for (int i = 0; i < n; i++)
                int_axes[i] = (int)axes[i];
            const char *inv;
            TSR_CHECK(tsr_grad_inverse_count(c, x, n, int_axes, dt, &inv));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, g, inv, &g));
        }
        return tsr_grad_contribute(c, 0, g);
    }
    /* Max and Min: split between the elements equal to the result. */
    const char *y_keep, *eq, *m, *count, *share, *axes_name;
    TSR_CHECK(reduce_grad_keep(c, tsr_grad_output(c, 0), mask, xv->rank, &y_keep));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Equal, x, y_keep, &eq));
    tsr_attr to = TSR_ATTR_I("to", dt);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &eq, 1, &to, 1, &m));
    TSR_CHECK(tsr_grad_ints(c, n, axes, &axes_name));
    tsr_attr kd = TSR_ATTR_I("keepdims", 1);
    const char *sum_in[2] = {m, axes_name};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, sum_in, 1, &kd, 1, &count));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, keep, count, &share));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, m, share, &g));
    return tsr_grad_contribute(c, 0, g);
}

#define REDUCE_OP(NAME)                                                                            \
    const tsr_op_def tsr_op_##NAME = {                                                             \
        .name = #NAME,                                                                             \
        .domain = "",                                                                              \
        .min_inputs = 1,                                                                           \
        .max_inputs = 2,                                                                           \
        .min_outputs = 1,                                                                          \
        .max_outputs = 1,                                                                          \
        .attrs = reduce_attrs,                                                                     \
        .locality = TSR_LOCALITY_REDUCTION,                                                        \
        .infer = reduce_infer,                                                                     \
        .ref = reduce_ref,                                                                         \
        .flops = per_input_element,                                                                \
        .grad = reduce_grad,                                                                       \
    };

REDUCE_OP(ReduceMean)
REDUCE_OP(ReduceSum)
REDUCE_OP(ReduceMax)
REDUCE_OP(ReduceMin)
REDUCE_OP(ReduceProd)
REDUCE_OP(ReduceL1)
REDUCE_OP(ReduceL2)
REDUCE_OP(ReduceLogSum)
REDUCE_OP(ReduceLogSumExp)
REDUCE_OP(ReduceSumSquare)

/* ------------------------------------------------------ Softmax, LogSoftmax */

/* ONNX's default axis is 1 before opset 13 and -1 from 13 on; the schema
 * holds the newer one and softmax_axis applies the older. */
static const tsr_attr_def softmax_attrs[] = {{"axis", TSR_ATTR_INT, .i = -1}, {NULL}};

static tsr_status softmax_axis(const tsr_node *n, int rank, int *axis)
{
    int64_t a = n->opset < 13 && !tsr_attr_has(n, "axis") ? 1 : tsr_attr_int(n, "axis");
    if (rank < 1)
        return tsr_error(TSR_ERR_SHAPE, "%s needs an input of rank >= 1", n->op->name);
    if (!tsr_axis_normalize(a, rank, axis))
        return tsr_error(TSR_ERR_SHAPE, "axis %lld is out of range for rank %d", (long long)a,
                         rank);
    return TSR_OK;
}

static tsr_status softmax_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[0];
    if (x->rank >= 0) {
        int axis;
        TSR_CHECK(softmax_axis(c->node, x->rank, &axis));
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

/* The kernel below is instantiated once per element type. */
/* clang-format off */
/* Normalizes `n` values spaced `stride` apart, for each of outer x inner
 * starting points. Before opset 13 the input is seen as 2-D at the axis,
 * so the whole trailing block is one contiguous row (inner = 1). */
#define SOFTMAX_DEFINE(T)                                                                          \
    static void softmax_run_##T(const tsr_kernel_ctx *k, int64_t outer, int64_t n, int64_t inner,  \
                                bool log_out)                                                      \
    {                                                                                              \
        const T *x = k->inputs[0]->data;                                                           \
        T *y = k->outputs[0]->data;                                                                \
        int64_t rows = outer * inner;                                                              \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && rows > 1)")        \
        for (int64_t row = 0; row < rows; row++) {                                                 \
            int64_t start = (row / inner) * n * inner + row % inner;                               \
            const T *xs = x + start;                                                               \
            T *ys = y + start;                                                                     \
            double max = -INFINITY, sum = 0.0;                                                     \
            for (int64_t j = 0; j < n; j++)                                                        \
                max = xs[j * inner] > max ? xs[j * inner] : max;                                   \
            for (int64_t j = 0; j < n; j++)                                                        \
                sum += exp(xs[j * inner] - max);                                                   \
            if (log_out) {                                                                         \
                double shift = max + log(sum);                                                     \
                for (int64_t j = 0; j < n; j++)                                                    \
                    ys[j * inner] = (T)(xs[j * inner] - shift);                                    \
            } else {                                                                               \
                for (int64_t j = 0; j < n; j++)                                                    \
                    ys[j * inner] = (T)(exp(xs[j * inner] - max) / sum);                           \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

SOFTMAX_DEFINE(float)
SOFTMAX_DEFINE(double)

tsr_status tsr_softmax_geometry(const tsr_node *node, int rank, const int64_t *dims, int64_t *outer,
                                int64_t *n, int64_t *inner)
{
    int axis;
    TSR_CHECK(softmax_axis(node, rank, &axis));
    *outer = tsr_shape_numel(axis, dims);
    if (node->opset < 13) {
        *n = tsr_shape_numel(rank - axis, dims + axis);
        *inner = 1;
    } else {
        *n = dims[axis];
        *inner = tsr_shape_numel(rank - axis - 1, dims + axis + 1);
    }
    return TSR_OK;
}

static tsr_status softmax_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int64_t outer, n, inner;
    TSR_CHECK(tsr_softmax_geometry(k->node, x->rank, x->dims, &outer, &n, &inner));
    bool log_out = k->node->op == &tsr_op_LogSoftmax;
    if (n == 0 || inner == 0)
        return TSR_OK;
    if (x->dtype == TSR_FLOAT32)
        softmax_run_float(k, outer, n, inner, log_out);
    else
        softmax_run_double(k, outer, n, inner, log_out);
    return TSR_OK;
}

static double softmax_flops(const tsr_infer_ctx *c)
{
    /* max, exp and sum, normalize */
    return 4.0 * (double)tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
}

/* Softmax: dx = y * (dy - sum(dy * y)); LogSoftmax: dx = dy - e^y sum(dy),
 * sums over the softmax axis (every axis from it on before opset 13). */
static tsr_status softmax_grad(tsr_grad_ctx *c)
{
    const tsr_node *node = tsr_grad_node(c);
    const char *y = tsr_grad_output(c, 0), *dy = tsr_grad_dy(c, 0);
    int rank = tsr_grad_value(c, y)->rank, axis;
    TSR_CHECK(softmax_axis(node, rank, &axis));
    bool log_out = node->op == &tsr_op_LogSoftmax;
    int64_t axes[TSR_MAX_RANK];
    int n = 0;
    for (int d = axis; d < (node->opset < 13 ? rank : axis + 1); d++)
        axes[n++] = d;
    const char *axes_name, *prod, *sum, *g;
    TSR_CHECK(tsr_grad_ints(c, n, axes, &axes_name));
    tsr_attr kd = TSR_ATTR_I("keepdims", 1);
    if (log_out) {
        const char *ins[2] = {dy, axes_name}, *e, *t;
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &kd, 1, &sum));
        TSR_CHECK(tsr_grad_unary(c, &tsr_op_Exp, y, &e));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, e, sum, &t));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, dy, t, &g));
    } else {
        const char *diff;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, y, &prod));
        const char *ins[2] = {prod, axes_name};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &kd, 1, &sum));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, dy, sum, &diff));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, y, diff, &g));
    }
    return tsr_grad_contribute(c, 0, g);
}

#define SOFTMAX_OP(NAME)                                                                           \
    const tsr_op_def tsr_op_##NAME = {                                                             \
        .name = #NAME,                                                                             \
        .domain = "",                                                                              \
        .min_inputs = 1,                                                                           \
        .max_inputs = 1,                                                                           \
        .min_outputs = 1,                                                                          \
        .max_outputs = 1,                                                                          \
        .attrs = softmax_attrs,                                                                    \
        .locality = TSR_LOCALITY_REDUCTION,                                                        \
        .infer = softmax_infer,                                                                    \
        .ref = softmax_ref,                                                                        \
        .flops = softmax_flops,                                                                    \
        .grad = softmax_grad,                                                                      \
    };

SOFTMAX_OP(Softmax)
SOFTMAX_OP(LogSoftmax)

/* TopK (opsets 11 on: K as an input; axis, largest, sorted) and its
 * backward op ai.tessera.TopKGrad; ArgMax and ArgMin (axis, keepdims,
 * select_last_index), which pick by the same kind of total order.
 *
 * ArgMax/ArgMin: the index along `axis` of the largest (smallest) element;
 * of equal ones the first, or the last with select_last_index = 1. A NaN
 * is picked before any number by both, as PyTorch's and NumPy's argmax and
 * argmin do. The output is int64 and has no gradient.
 *
 * Elements are ranked by a total order, so the result never depends on
 * the kernel's visiting order: equal values rank by the lower index first
 * (ONNX's tie rule, as ONNX Runtime does), and NaN ranks above every
 * number, as in PyTorch and NumPy's sort: largest=1 returns NaNs first,
 * largest=0 returns them only when K reaches past the numbers, last. The
 * output is always sorted (sorted=0 leaves the order to the
 * implementation). K must be a constant, or a value that the plan's replay
 * at concrete input shapes folds to one (K computed from shapes); a K read
 * from data makes the output size known only at run time, which the plan
 * refuses with a message naming the node.
 *
 *   TopKGrad(dValues, Indices, x_shape) -> dX: dValues scattered into
 *   zeros of X's shape at Indices along `axis` (the indices along an axis
 *   are distinct, so scattering is the adjoint of TopK's gather). */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOPK_NO_NAN(v) ((void)(v), false)
/* The dtypes TopK, ArgMax and ArgMin take: X(dtype, C type, suffix, NaN test). */
#define TOPK_DTYPES(X)                                                                             \
    X(TSR_FLOAT32, float, f32, isnan)                                                              \
    X(TSR_FLOAT64, double, f64, isnan)                                                             \
    X(TSR_UINT8, uint8_t, u8, TOPK_NO_NAN)                                                         \
    X(TSR_INT8, int8_t, i8, TOPK_NO_NAN)                                                           \
    X(TSR_INT32, int32_t, i32, TOPK_NO_NAN)                                                        \
    X(TSR_INT64, int64_t, i64, TOPK_NO_NAN)

#define TOPK_DTYPE_BIT(DT, T, SUF, ISNAN) | TSR_DTYPE_BIT(DT)
#define TOPK_DTYPE_MASK (0u TOPK_DTYPES(TOPK_DTYPE_BIT))

static const tsr_attr_def topk_attrs[] = {{"axis", TSR_ATTR_INT, .i = -1},
                                          {"largest", TSR_ATTR_INT, .i = 1},
                                          {"sorted", TSR_ATTR_INT, .i = 1},
                                          {NULL}};

static tsr_status normalize_axis(int64_t axis, int rank, int *out)
{
    if (axis < -rank || axis >= rank)
        return tsr_error(TSR_ERR_SHAPE, "axis %lld is out of range for rank %d", (long long)axis,
                         rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return TSR_OK;
}

static tsr_status topk_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0], *k = c->inputs[1];
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TOPK_DTYPE_MASK));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64)));
    if (k->rank > 1 || (k->rank >= 0 && tsr_dim_known(tsr_shape_numel(k->rank, k->dims)) &&
                        tsr_shape_numel(k->rank, k->dims) != 1))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "K must hold one value (a 1-D tensor of size 1)");
    for (int o = 1; o < c->n_outputs; o++)
        if (!c->outputs[o])
            return tsr_infer_error(c, TSR_ERR_SHAPE, "TopK needs both outputs named");
    int64_t largest = tsr_attr_int(c->node, "largest"), sorted = tsr_attr_int(c->node, "sorted");
    if ((largest != 0 && largest != 1) || (sorted != 0 && sorted != 1))
        return tsr_infer_error(c, TSR_ERR_PARSE, "largest and sorted are 0 or 1 (%lld, %lld given)",
                               (long long)largest, (long long)sorted);
    if (x->rank < 0) {
        tsr_infer_set(c, 0, x->dtype, -1, NULL);
        tsr_infer_set(c, 1, TSR_INT64, -1, NULL);
        return TSR_OK;
    }
    if (x->rank == 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X is a scalar; TopK needs rank 1 or more");
    int64_t axis_attr = tsr_attr_int(c->node, "axis");
    if (axis_attr < -x->rank || axis_attr >= x->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for X of rank %d",
                               (long long)axis_attr, x->rank);
    int axis = (int)(axis_attr < 0 ? axis_attr + x->rank : axis_attr);
    int64_t kv = TSR_DIM_UNKNOWN, dims[TSR_MAX_RANK];
    int count;
    if (tsr_infer_const_ints(c, 1, &kv, 1, &count)) {
        if (kv < 0)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "K is %lld; it must be >= 0", (long long)kv);
        if (tsr_dim_known(x->dims[axis]) && kv > x->dims[axis])
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "K is %lld but axis %d of X has only %lld elements",
                                   (long long)kv, axis, (long long)x->dims[axis]);
    }
    memcpy(dims, x->dims, sizeof(int64_t) * (size_t)x->rank);
    dims[axis] = kv;
    tsr_infer_set(c, 0, x->dtype, x->rank, dims);
    tsr_infer_set(c, 1, TSR_INT64, x->rank, dims);
    return TSR_OK;
}

/* Whether element a of a strided row ranks before element b. */
typedef bool (*topk_rank_fn)(const void *row, int64_t stride, int64_t a, int64_t b, bool largest);

#define TOPK_RANK(DT, T, SUF, ISNAN)                                                               \
    static bool rank_##SUF(const void *row, int64_t stride, int64_t a, int64_t b, bool largest)    \
    {                                                                                              \
        T va = ((const T *)row)[a * stride], vb = ((const T *)row)[b * stride];                    \
        bool na = ISNAN(va), nb = ISNAN(vb);                                                       \
        if (na || nb)                                                                              \
            return na && nb ? a < b : largest == na;                                               \
        if (va != vb)                                                                              \
            return largest ? va > vb : va < vb;                                                    \
        return a < b;                                                                              \
    }

TOPK_DTYPES(TOPK_RANK)

/* Inference admits only TOPK_DTYPE_MASK. */
static topk_rank_fn rank_fn(tsr_dtype dt)
{
#define RANK_CASE(DT, T, SUF, ISNAN)                                                               \
    case DT: return rank_##SUF;
    switch (dt) {
        TOPK_DTYPES(RANK_CASE)
    default: return rank_i64;
    }
#undef RANK_CASE
}

/* A heap of the k best indices seen so far, the lowest ranked at the root,
 * so that each further element costs O(log k). */
typedef struct topk_heap {
    int64_t *at;
    int64_t size;
    const void *row;
    int64_t stride;
    bool largest;
    topk_rank_fn before;
} topk_heap;

static void heap_sift_down(topk_heap *h, int64_t p)
{
    for (;;) {
        int64_t worst = p, l = 2 * p + 1, r = l + 1;
        if (l < h->size && h->before(h->row, h->stride, h->at[worst], h->at[l], h->largest))
            worst = l;
        if (r < h->size && h->before(h->row, h->stride, h->at[worst], h->at[r], h->largest))
            worst = r;
        if (worst == p)
            return;
        int64_t t = h->at[p];
        h->at[p] = h->at[worst];
        h->at[worst] = t;
        p = worst;
    }
}

static void heap_sift_up(topk_heap *h, int64_t c)
{
    while (c > 0) {
        int64_t p = (c - 1) / 2;
        if (!h->before(h->row, h->stride, h->at[p], h->at[c], h->largest))
            return;
        int64_t t = h->at[p];
        h->at[p] = h->at[c];
        h->at[c] = t;
        c = p;
    }
}

/* The k best of the n elements of a row, best first, into best[0, k). */
static void topk_row(topk_heap *h, int64_t n, int64_t k, int64_t *best)
{
    h->size = 0;
    for (int64_t i = 0; i < n; i++) {
        if (h->size < k) {
            h->at[h->size++] = i;
            heap_sift_up(h, h->size - 1);
        } else if (k > 0 && h->before(h->row, h->stride, i, h->at[0], h->largest)) {
            h->at[0] = i;
            heap_sift_down(h, 0);
        }
    }
    for (int64_t j = k - 1; j >= 0; j--) {
        best[j] = h->at[0];
        h->at[0] = h->at[--h->size];
        heap_sift_down(h, 0);
    }
}

/* X viewed as (outer, n, inner) around the axis. */
static void axis_view(const tsr_tensor *t, int axis, int64_t *outer, int64_t *inner)
{
    *outer = tsr_shape_numel(axis, t->dims);
    *inner = tsr_shape_numel(t->rank - axis - 1, t->dims + axis + 1);
}

static tsr_status topk_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *kt = k->inputs[1];
    tsr_tensor *vals = k->outputs[0], *idx = k->outputs[1];
    int axis = 0;
    TSR_CHECK(normalize_axis(tsr_attr_int(k->node, "axis"), x->rank, &axis));
    if (tsr_tensor_numel(kt) != 1)
        return tsr_error(TSR_ERR_SHAPE, "TopK: K holds %lld values; it must hold one",
                         (long long)tsr_tensor_numel(kt));
    int64_t kv = ((const int64_t *)kt->data)[0], n = x->dims[axis];
    if (kv < 0 || kv > n)
        return tsr_error(TSR_ERR_SHAPE, "TopK: K is %lld but axis %d of X has %lld elements",
                         (long long)kv, axis, (long long)n);
    if (vals->dims[axis] != kv || idx->dims[axis] != kv)
        return tsr_error(TSR_ERR_SHAPE, "TopK: the outputs have %lld along axis %d, K is %lld",
                         (long long)vals->dims[axis], axis, (long long)kv);
    int64_t outer, inner;
    axis_view(x, axis, &outer, &inner);
    if (outer == 0 || inner == 0 || kv == 0)
        return TSR_OK;
    size_t es = tsr_dtype_size(x->dtype);
    int64_t *scratch = tsr_malloc(2 * (size_t)kv * sizeof(int64_t));
    if (!scratch)
        return TSR_ERR_OUT_OF_MEMORY;
    topk_heap h = {.at = scratch,
                   .stride = inner,
                   .largest = tsr_attr_int(k->node, "largest") != 0,
                   .before = rank_fn(x->dtype)};
    int64_t *best = scratch + kv;
    const char *src = x->data;
    char *dst = vals->data;
    int64_t *ind = idx->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            h.row = src + (size_t)(o * n * inner + i) * es;
            topk_row(&h, n, kv, best);
            for (int64_t j = 0; j < kv; j++) {
                int64_t at = (o * kv + j) * inner + i;
                ind[at] = best[j];
                memcpy(dst + (size_t)at * es, (const char *)h.row + (size_t)(best[j] * inner) * es,
                       es);
            }
        }
    free(scratch);
    return TSR_OK;
}

static tsr_status topk_grad(tsr_grad_ctx *c)
{
    const char *dv = tsr_grad_dy(c, 0);
    if (!dv || !tsr_grad_wants(c, 0))
        return TSR_OK;
    const char *ins[3] = {dv, tsr_grad_output(c, 1), NULL};
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &ins[2]));
    tsr_attr axis = TSR_ATTR_I("axis", tsr_attr_int(tsr_grad_node(c), "axis"));
    const char *dx;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_TopKGrad, 3, ins, 1, &axis, 1, &dx));
    return tsr_grad_contribute(c, 0, dx);
}

const tsr_op_def tsr_op_TopK = {
    .name = "TopK",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 2,
    .max_outputs = 2,
    .attrs = topk_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = topk_infer,
    .ref = topk_ref,
    .grad = topk_grad,
};

/* ------------------------------------------------------------- TopKGrad */

static const tsr_attr_def topk_grad_attrs[] = {{"axis", TSR_ATTR_INT, .i = -1}, {NULL}};

static tsr_status topk_grad_infer(tsr_infer_ctx *c)
{
    const tsr_value *dv = c->inputs[0], *ind = c->inputs[1];
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64)));
    if (dv->rank >= 0 && ind->rank >= 0 && dv->rank != ind->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "dValues has rank %d but Indices rank %d",
                               dv->rank, ind->rank);
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 2, "x_shape", shape, TSR_MAX_RANK, &n, &known));
    int rank = n >= 0 ? n : dv->rank;
    if (dv->rank >= 0 && rank != dv->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "x_shape has %d entries for dValues of rank %d",
                               rank, dv->rank);
    for (int d = 0; d < rank; d++)
        dims[d] = known ? shape[d] : TSR_DIM_UNKNOWN;
    tsr_infer_set(c, 0, dv->dtype, rank, dims);
    return TSR_OK;
}

static tsr_status topk_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *dv = k->inputs[0], *ind = k->inputs[1];
    tsr_tensor *dx = k->outputs[0];
    int axis = 0;
    TSR_CHECK(normalize_axis(tsr_attr_int(k->node, "axis"), dx->rank, &axis));
    for (int d = 0; d < dx->rank; d++)
        if (dv->dims[d] != ind->dims[d] || (d != axis && dv->dims[d] != dx->dims[d]))
            return tsr_error(TSR_ERR_SHAPE,
                             "TopKGrad: dValues, Indices and X differ along dim %d (%lld, %lld, "
                             "%lld)",
                             d, (long long)dv->dims[d], (long long)ind->dims[d],
                             (long long)dx->dims[d]);
    int64_t outer, inner, n = dx->dims[axis], kv = dv->dims[axis];
    axis_view(dx, axis, &outer, &inner);
    memset(dx->data, 0, tsr_tensor_numel(dx) * tsr_dtype_size(dx->dtype));
    const int64_t *at = ind->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < kv; j++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t from = (o * kv + j) * inner + i, to = at[from];
                if (to < 0 || to >= n)
                    return tsr_error(TSR_ERR_SHAPE, "TopKGrad: index %lld is outside [0, %lld)",
                                     (long long)to, (long long)n);
                int64_t where = (o * n + to) * inner + i;
                tsr_set_f(dx, where, tsr_get_f(dx, where) + tsr_get_f(dv, from));
            }
    return TSR_OK;
}

/* TopKGrad is linear in dValues: its gradient picks ddX at the indices. */
static tsr_status topk_grad_grad(tsr_grad_ctx *c)
{
    const char *ddx = tsr_grad_dy(c, 0);
    if (!ddx || !tsr_grad_wants(c, 0))
        return TSR_OK;
    const char *ins[2] = {ddx, tsr_grad_input(c, 1)};
    tsr_attr axis = TSR_ATTR_I("axis", tsr_attr_int(tsr_grad_node(c), "axis"));
    const char *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_GatherElements, 2, ins, 1, &axis, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_TopKGrad = {
    .name = "TopKGrad",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = topk_grad_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = topk_grad_infer,
    .ref = topk_grad_ref,
    .grad = topk_grad_grad,
};

/* ------------------------------------------------------- ArgMax, ArgMin */

static const tsr_attr_def arg_attrs[] = {{"axis", TSR_ATTR_INT, .i = 0},
                                         {"keepdims", TSR_ATTR_INT, .i = 1},
                                         {"select_last_index", TSR_ATTR_INT, .i = 0},
                                         {NULL}};

static tsr_status arg_infer(tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0];
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TOPK_DTYPE_MASK));
    int64_t keep = tsr_attr_int(c->node, "keepdims");
    int64_t last = tsr_attr_int(c->node, "select_last_index");
    if ((keep != 0 && keep != 1) || (last != 0 && last != 1))
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "keepdims and select_last_index are 0 or 1 (%lld, %lld given)",
                               (long long)keep, (long long)last);
    if (x->rank < 0) {
        tsr_infer_set(c, 0, TSR_INT64, -1, NULL);
        return TSR_OK;
    }
    int64_t axis_attr = tsr_attr_int(c->node, "axis");
    int axis;
    if (x->rank == 0 || axis_attr < -x->rank || axis_attr >= x->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for X of rank %d",
                               (long long)axis_attr, x->rank);
    TSR_CHECK(normalize_axis(axis_attr, x->rank, &axis));
    if (x->dims[axis] == 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "axis %d of X is empty: there is no element to pick", axis);
    int64_t dims[TSR_MAX_RANK];
    int rank = 0;
    for (int d = 0; d < x->rank; d++)
        if (d != axis)
            dims[rank++] = x->dims[d];
        else if (keep)
            dims[rank++] = 1;
    tsr_infer_set(c, 0, TSR_INT64, rank, dims);
    return TSR_OK;
}

/* Whether element b of a strided row is picked over a, the best so far
 * (b comes after a): a NaN over any number, then the larger (ArgMax) or
 * smaller value, then among equals the later one only for `last`. */
typedef void (*arg_row_fn)(const void *row, int64_t n, int64_t stride, bool max, bool last,
                           int64_t *out);

#define ARG_PICK(DT, T, SUF, ISNAN)                                                                \
    static void arg_row_##SUF(const void *row, int64_t n, int64_t stride, bool max, bool last,     \
                              int64_t *out)                                                        \
    {                                                                                              \
        const T *x = row;                                                                          \
        int64_t best = 0;                                                                          \
        for (int64_t j = 1; j < n; j++) {                                                          \
            T a = x[best * stride], b = x[j * stride];                                             \
            bool na = ISNAN(a), nb = ISNAN(b);                                                     \
            bool take = na || nb ? nb && (!na || last)                                             \
                                 : (max ? b > a : b < a) || (last && b == a);                      \
            if (take)                                                                              \
                best = j;                                                                          \
        }                                                                                          \
        *out = best;                                                                               \
    }

TOPK_DTYPES(ARG_PICK)

/* Inference admits only TOPK_DTYPE_MASK. */
static arg_row_fn arg_row_of(tsr_dtype dt)
{
#define ARG_CASE(DT, T, SUF, ISNAN)                                                                \
    case DT: return arg_row_##SUF;
    switch (dt) {
        TOPK_DTYPES(ARG_CASE)
    default: return arg_row_i64;
    }
#undef ARG_CASE
}

static tsr_status arg_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int axis = 0;
    TSR_CHECK(normalize_axis(tsr_attr_int(k->node, "axis"), x->rank, &axis));
    int64_t outer, inner, n = x->dims[axis];
    axis_view(x, axis, &outer, &inner);
    if (outer == 0 || inner == 0)
        return TSR_OK;
    bool max = k->node->op == &tsr_op_ArgMax, last = tsr_attr_int(k->node, "select_last_index");
    arg_row_fn row_fn = arg_row_of(x->dtype);
    size_t es = tsr_dtype_size(x->dtype);
    const char *src = x->data;
    int64_t *y = k->outputs[0]->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            row_fn(src + (size_t)(o * n * inner + i) * es, n, inner, max, last, &y[o * inner + i]);
    return TSR_OK;
}

#define ARG_OP(NAME)                                                                               \
    const tsr_op_def tsr_op_##NAME = {                                                             \
        .name = #NAME,                                                                             \
        .domain = "",                                                                              \
        .min_inputs = 1,                                                                           \
        .max_inputs = 1,                                                                           \
        .min_outputs = 1,                                                                          \
        .max_outputs = 1,                                                                          \
        .attrs = arg_attrs,                                                                        \
        .locality = TSR_LOCALITY_REDUCTION,                                                        \
        .infer = arg_infer,                                                                        \
        .ref = arg_ref,                                                                            \
    };

ARG_OP(ArgMax)
ARG_OP(ArgMin)

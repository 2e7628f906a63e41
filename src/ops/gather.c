/* Gathers and scatters by index tensors: GatherElements and ScatterElements
 * (one index per element, along an axis), GatherND (index tuples, with
 * batch_dims) and ScatterND, the scatters with each ONNX reduction (none,
 * add, mul, max, min), and GatherNDGrad (domain ai.tessera), GatherND's
 * adjoint.
 *
 * Every kernel first turns the indices into element offsets, checking each
 * index against its bound, so no element is read or written out of range
 * and the error names the index, where it sits and the size it passed.
 * Copies move bytes of the dtype's size; reductions are typed, with
 * integers wrapping (no signed overflow) and bool adding as "or" and
 * multiplying as "and", as numpy does for ONNX's reference. */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_TYPES (TSR_DTYPE_BIT(TSR_INT64) | TSR_DTYPE_BIT(TSR_INT32))

static int64_t index_at(const tsr_tensor *t, int64_t i)
{
    return t->dtype == TSR_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
}

static int64_t product(const int64_t *dims, int from, int to)
{
    int64_t p = 1;
    for (int d = from; d < to; d++)
        p *= dims[d];
    return p;
}

/* Two sizes that must agree; unknown or symbolic sizes agree with all. */
static bool dims_agree(int64_t a, int64_t b)
{
    return !tsr_dim_known(a) || !tsr_dim_known(b) || a == b;
}

/* Element `flat` of the indices, named by its position in them. */
static tsr_status index_error(const tsr_tensor *ind, int64_t flat, int64_t v, int axis,
                              int64_t bound)
{
    int64_t pos[TSR_MAX_RANK];
    for (int d = ind->rank - 1; d >= 0; d--) {
        pos[d] = ind->dims[d] ? flat % ind->dims[d] : 0;
        flat = ind->dims[d] ? flat / ind->dims[d] : 0;
    }
    char where[160];
    tsr_format_ints(where, sizeof where, pos, ind->rank);
    return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                     "index %lld at %s of the indices is out of range for axis %d of size %lld "
                     "(valid: %lld to %lld)",
                     (long long)v, where, axis, (long long)bound, (long long)-bound,
                     (long long)(bound - 1));
}

/* ------------------------------------------------------------ reductions */

typedef enum scatter_reduction { RED_NONE, RED_ADD, RED_MUL, RED_MAX, RED_MIN } scatter_reduction;

static const char *const reduction_names[] = {"none", "add", "mul", "max", "min"};

static tsr_status reduction_of(const tsr_node *n, scatter_reduction *out)
{
    const char *r = tsr_attr_string(n, "reduction");
    for (int i = 0; i < 5; i++)
        if (strcmp(r, reduction_names[i]) == 0) {
            *out = (scatter_reduction)i;
            return TSR_OK;
        }
    return tsr_error(TSR_ERR_UNSUPPORTED,
                     "reduction '%s' is not one of 'none', 'add', 'mul', 'max' and 'min'", r);
}

/* max and min keep NaN, as numpy's maximum and minimum do. */
#define PLAIN_ADD(T, a, b) ((a) + (b))
#define PLAIN_MUL(T, a, b) ((a) * (b))
#define WRAP_ADD(T, a, b) ((T)((u##T)(a) + (u##T)(b)))
#define WRAP_MUL(T, a, b) ((T)((u##T)(a) * (u##T)(b)))
#define OR_ADD(T, a, b) ((T)((a) | (b)))
#define AND_MUL(T, a, b) ((T)((a) & (b)))

/* clang-format off */
#define COMBINE_DEFINE(NAME, T, ADD, MUL)                                                          \
    static void combine_##NAME(T *dst, const T *src, int64_t n, scatter_reduction r)               \
    {                                                                                              \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T a = dst[i], b = src[i];                                                              \
            switch (r) {                                                                           \
            case RED_NONE: dst[i] = b; break;                                                      \
            case RED_ADD: dst[i] = ADD(T, a, b); break;                                            \
            case RED_MUL: dst[i] = MUL(T, a, b); break;                                            \
            case RED_MAX: dst[i] = (b > a || b != b) ? b : a; break;                               \
            case RED_MIN: dst[i] = (b < a || b != b) ? b : a; break;                               \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

COMBINE_DEFINE(f32, float, PLAIN_ADD, PLAIN_MUL)
COMBINE_DEFINE(f64, double, PLAIN_ADD, PLAIN_MUL)
COMBINE_DEFINE(i8, int8_t, WRAP_ADD, WRAP_MUL)
COMBINE_DEFINE(u8, uint8_t, PLAIN_ADD, PLAIN_MUL)
COMBINE_DEFINE(i32, int32_t, WRAP_ADD, WRAP_MUL)
COMBINE_DEFINE(i64, int64_t, WRAP_ADD, WRAP_MUL)
COMBINE_DEFINE(bool, uint8_t, OR_ADD, AND_MUL)

/* dst[i] = dst[i] (reduction) src[i] for n elements of `dtype`. */
static void combine(void *dst, const void *src, int64_t n, tsr_dtype dtype, scatter_reduction r)
{
    switch (dtype) {
    case TSR_FLOAT32: combine_f32(dst, src, n, r); break;
    case TSR_FLOAT64: combine_f64(dst, src, n, r); break;
    case TSR_INT8: combine_i8(dst, src, n, r); break;
    case TSR_UINT8: combine_u8(dst, src, n, r); break;
    case TSR_INT32: combine_i32(dst, src, n, r); break;
    case TSR_INT64: combine_i64(dst, src, n, r); break;
    case TSR_BOOL: combine_bool(dst, src, n, r); break;
    default: break; /* inference admits only the dtypes above */
    }
}

/* --------------------------------------------------------------- offsets */

/* The offset into data (contiguous, dims[rank]) of each element of the
 * indices: the element at position p of the indices names data's element
 * at p with p[axis] replaced by its value. The indices may be shorter
 * than data along the other axes, never longer. */
static tsr_status element_offsets(int rank, const int64_t *dims, const tsr_tensor *ind, int axis,
                                  int64_t *off)
{
    if (ind->rank != rank)
        return tsr_error(TSR_ERR_SHAPE, "indices have rank %d, data rank %d; they must match",
                         ind->rank, rank);
    for (int d = 0; d < rank; d++)
        if (d != axis && ind->dims[d] > dims[d])
            return tsr_error(TSR_ERR_SHAPE,
                             "indices have size %lld along axis %d, past data's %lld",
                             (long long)ind->dims[d], d, (long long)dims[d]);
    int64_t strides[TSR_MAX_RANK], pos[TSR_MAX_RANK] = {0};
    tsr_contiguous_strides(rank, dims, strides);
    int64_t n = tsr_tensor_numel(ind), base = 0, bound = dims[axis];
    for (int64_t i = 0; i < n; i++) {
        int64_t v = index_at(ind, i);
        if (v < -bound || v >= bound)
            return index_error(ind, i, v, axis, bound);
        off[i] = base + (v < 0 ? v + bound : v) * strides[axis];
        for (int d = rank - 1; d >= 0; d--) {
            int64_t step = d == axis ? 0 : strides[d];
            base += step;
            if (++pos[d] < ind->dims[d])
                break;
            base -= step * ind->dims[d];
            pos[d] = 0;
        }
    }
    return TSR_OK;
}

/* Checks indices [..., k] against data for GatherND-style addressing: the
 * first batch_dims axes of both agree and 1 <= k <= rank - batch_dims. */
static tsr_status nd_check(int rank, const int64_t *dims, const tsr_tensor *ind, int batch_dims)
{
    if (ind->rank < 1 || ind->rank <= batch_dims || rank <= batch_dims)
        return tsr_error(TSR_ERR_SHAPE,
                         "batch_dims %d needs data and indices of larger rank (got %d and %d)",
                         batch_dims, rank, ind->rank);
    int64_t k = ind->dims[ind->rank - 1];
    if (k < 1 || k > rank - batch_dims)
        return tsr_error(TSR_ERR_SHAPE,
                         "index tuples of length %lld for data of rank %d with batch_dims %d "
                         "(1 to %d allowed)",
                         (long long)k, rank, batch_dims, rank - batch_dims);
    for (int d = 0; d < batch_dims; d++)
        if (ind->dims[d] != dims[d])
            return tsr_error(TSR_ERR_SHAPE,
                             "batch axis %d has size %lld in the indices but %lld in data", d,
                             (long long)ind->dims[d], (long long)dims[d]);
    return TSR_OK;
}

/* The offset into data of the slice that each index tuple names; tuples
 * of batch b (the first batch_dims axes, flattened) index data's batch b. */
static tsr_status nd_offsets(int rank, const int64_t *dims, const tsr_tensor *ind, int batch_dims,
                             int64_t *off)
{
    int k = (int)ind->dims[ind->rank - 1];
    int64_t strides[TSR_MAX_RANK];
    tsr_contiguous_strides(rank, dims, strides);
    int64_t per_batch = product(ind->dims, batch_dims, ind->rank - 1);
    int64_t batch_stride = product(dims, batch_dims, rank);
    int64_t n = product(ind->dims, 0, ind->rank - 1);
    for (int64_t t = 0; t < n; t++) {
        int64_t o = (t / per_batch) * batch_stride;
        for (int j = 0; j < k; j++) {
            int axis = batch_dims + j;
            int64_t v = index_at(ind, t * k + j), bound = dims[axis];
            if (v < -bound || v >= bound)
                return index_error(ind, t * k + j, v, axis, bound);
            o += (v < 0 ? v + bound : v) * strides[axis];
        }
        off[t] = o;
    }
    return TSR_OK;
}

static int64_t *offsets_alloc(int64_t n)
{
    return tsr_malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
}

/* y[off[t] + j] (reduction)= upd[t * slice + j]: slice t of the updates
 * combined into y at offset off[t], in order. */
static void scatter_slices(tsr_tensor *y, const tsr_tensor *upd, const int64_t *off, int64_t n,
                           int64_t slice, scatter_reduction r)
{
    size_t es = tsr_dtype_size(y->dtype);
    for (int64_t t = 0; t < n; t++)
        combine((char *)y->data + (size_t)off[t] * es,
                (const char *)upd->data + (size_t)(t * slice) * es, slice, y->dtype, r);
}

static void copy_input(tsr_tensor *y, const tsr_tensor *x)
{
    size_t bytes = tsr_tensor_bytes(x);
    if (bytes) /* empty tensors may have no buffer */
        memcpy(y->data, x->data, bytes);
}

/* ----------------------------------------------------- shape inference */

static tsr_status infer_axis(const tsr_infer_ctx *c, int rank, int *axis)
{
    int64_t a = tsr_attr_int(c->node, "axis");
    if (!tsr_axis_normalize(a, rank, axis))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                               (long long)a, rank);
    return TSR_OK;
}

static tsr_status infer_reduction(const tsr_infer_ctx *c)
{
    scatter_reduction r = RED_NONE;
    return reduction_of(c->node, &r);
}

/* GatherElements and ScatterElements: indices of data's rank, no longer
 * than data along any axis but `axis`; constant indices are checked now. */
static tsr_status infer_elements(tsr_infer_ctx *c, int *axis)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, INDEX_TYPES));
    const tsr_value *x = c->inputs[0], *ind = c->inputs[1];
    if (x->rank < 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "data must have rank >= 1, got %d", x->rank);
    TSR_CHECK(infer_axis(c, x->rank, axis));
    if (ind->rank != x->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "indices have rank %d, data rank %d; they must "
                               "match", ind->rank, x->rank);
    for (int d = 0; d < x->rank; d++)
        if (d != *axis && tsr_dim_known(ind->dims[d]) && tsr_dim_known(x->dims[d]) &&
            ind->dims[d] > x->dims[d])
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "indices have size %lld along axis %d, past data's %lld",
                                   (long long)ind->dims[d], d, (long long)x->dims[d]);
    if (ind->data && tsr_dim_known(x->dims[*axis])) {
        tsr_tensor t = tsr_value_tensor(ind);
        int64_t n = tsr_tensor_numel(&t), bound = x->dims[*axis];
        for (int64_t i = 0; i < n; i++) {
            int64_t v = index_at(&t, i);
            if (v < -bound || v >= bound)
                return index_error(&t, i, v, *axis, bound);
        }
    }
    return TSR_OK;
}

/* GatherND and ScatterND: the length k of the index tuples (-1 unknown). */
static tsr_status infer_nd(tsr_infer_ctx *c, int batch_dims, int *k)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64)));
    const tsr_value *x = c->inputs[0], *ind = c->inputs[1];
    if (batch_dims < 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "batch_dims is %d, must be >= 0", batch_dims);
    if (ind->rank < 1 || x->rank < 1 || ind->rank <= batch_dims || x->rank <= batch_dims)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "data of rank %d and indices of rank %d with batch_dims %d: both "
                               "need rank >= 1 and > batch_dims",
                               x->rank, ind->rank, batch_dims);
    for (int d = 0; d < batch_dims; d++)
        if (!dims_agree(ind->dims[d], x->dims[d]))
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "batch axis %d has size %lld in the indices but %lld in data",
                                   d, (long long)ind->dims[d], (long long)x->dims[d]);
    int64_t kdim = ind->dims[ind->rank - 1];
    *k = -1;
    if (!tsr_dim_known(kdim))
        return TSR_OK;
    if (kdim < 1 || kdim > x->rank - batch_dims)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "index tuples of length %lld for data of rank %d with batch_dims "
                               "%d (1 to %d allowed)",
                               (long long)kdim, x->rank, batch_dims, x->rank - batch_dims);
    *k = (int)kdim;
    if (ind->data) {
        tsr_tensor t = tsr_value_tensor(ind);
        bool known = true;
        for (int d = 0; d < x->rank; d++)
            known &= tsr_dim_known(x->dims[d]);
        int64_t n = tsr_tensor_numel(&t) / kdim;
        int64_t *off = known ? offsets_alloc(n) : NULL;
        if (known && !off)
            return TSR_ERR_OUT_OF_MEMORY;
        if (known) {
            tsr_status st = nd_check(x->rank, x->dims, &t, batch_dims);
            if (st == TSR_OK)
                st = nd_offsets(x->rank, x->dims, &t, batch_dims, off);
            free(off);
            TSR_CHECK(st);
        }
    }
    return TSR_OK;
}

/* ------------------------------------------------------- GatherElements */

static const tsr_attr_def gather_elements_attrs[] = {{"axis", TSR_ATTR_INT, .i = 0}, {NULL}};

static tsr_status gather_elements_infer(tsr_infer_ctx *c)
{
    int axis;
    TSR_CHECK(infer_elements(c, &axis));
    const tsr_value *ind = c->inputs[1];
    tsr_infer_set(c, 0, c->inputs[0]->dtype, ind->rank, ind->dims);
    return TSR_OK;
}

static tsr_status gather_elements_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *ind = k->inputs[1];
    tsr_tensor *y = k->outputs[0];
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(k->node, "axis"), x->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", x->rank);
    int64_t n = tsr_tensor_numel(ind);
    int64_t *off = offsets_alloc(n);
    if (!off)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = element_offsets(x->rank, x->dims, ind, axis, off);
    size_t es = tsr_dtype_size(x->dtype);
    for (int64_t i = 0; st == TSR_OK && i < n; i++)
        memcpy((char *)y->data + (size_t)i * es, (const char *)x->data + (size_t)off[i] * es, es);
    free(off);
    return st;
}

/* dData: dY added at the positions read (repeats add up). */
static tsr_status gather_elements_grad(tsr_grad_ctx *c)
{
    tsr_attr attrs[2] = {TSR_ATTR_I("axis", tsr_attr_int(tsr_grad_node(c), "axis")),
                         TSR_ATTR_S("reduction", "add")};
    const char *zeros, *g;
    TSR_CHECK(tsr_grad_zeros_like(c, tsr_grad_input(c, 0), &zeros));
    const char *ins[3] = {zeros, tsr_grad_input(c, 1), tsr_grad_dy(c, 0)};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ScatterElements, 3, ins, 2, attrs, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_GatherElements = {
    .name = "GatherElements",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = gather_elements_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = gather_elements_infer,
    .ref = gather_elements_ref,
    .grad = gather_elements_grad,
};

/* ------------------------------------------------------------- GatherND */

static const tsr_attr_def gathernd_attrs[] = {{"batch_dims", TSR_ATTR_INT, .i = 0}, {NULL}};

static tsr_status batch_dims_of(const tsr_node *n, int *out)
{
    int64_t b = tsr_attr_int(n, "batch_dims");
    if (b < 0 || b >= TSR_MAX_RANK)
        return tsr_error(TSR_ERR_SHAPE, "batch_dims is %lld, must be in [0, %d)", (long long)b,
                         TSR_MAX_RANK);
    *out = (int)b;
    return TSR_OK;
}

static tsr_status gathernd_infer(tsr_infer_ctx *c)
{
    int b = 0, k = -1;
    TSR_CHECK(batch_dims_of(c->node, &b));
    TSR_CHECK(infer_nd(c, b, &k));
    const tsr_value *x = c->inputs[0], *ind = c->inputs[1];
    if (k < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "the length of the index tuples (the last axis of the indices) "
                               "must be known before run time");
    int64_t dims[TSR_MAX_RANK];
    int r = 0;
    for (int d = 0; d < ind->rank - 1; d++)
        dims[r++] = d < b && tsr_dim_known(x->dims[d]) ? x->dims[d] : ind->dims[d];
    if (r + x->rank - b - k > TSR_MAX_RANK)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "the output would have rank %d (max %d)",
                               r + x->rank - b - k, TSR_MAX_RANK);
    for (int d = b + k; d < x->rank; d++)
        dims[r++] = x->dims[d];
    tsr_infer_set(c, 0, x->dtype, r, dims);
    return TSR_OK;
}

static tsr_status gathernd_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *ind = k->inputs[1];
    tsr_tensor *y = k->outputs[0];
    int b = 0;
    TSR_CHECK(batch_dims_of(k->node, &b));
    TSR_CHECK(nd_check(x->rank, x->dims, ind, b));
    int64_t n = product(ind->dims, 0, ind->rank - 1);
    int64_t slice = product(x->dims, b + (int)ind->dims[ind->rank - 1], x->rank);
    int64_t *off = offsets_alloc(n);
    if (!off)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = nd_offsets(x->rank, x->dims, ind, b, off);
    size_t es = tsr_dtype_size(x->dtype);
    for (int64_t t = 0; st == TSR_OK && t < n && slice > 0; t++)
        memcpy((char *)y->data + (size_t)(t * slice) * es,
               (const char *)x->data + (size_t)off[t] * es, (size_t)slice * es);
    free(off);
    return st;
}

static tsr_status gathernd_grad(tsr_grad_ctx *c)
{
    tsr_attr attr = TSR_ATTR_I("batch_dims", tsr_attr_int(tsr_grad_node(c), "batch_dims"));
    const char *shape, *g;
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &shape));
    const char *ins[3] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 1), shape};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_GatherNDGrad, 3, ins, 1, &attr, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_GatherND = {
    .name = "GatherND",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = gathernd_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = gathernd_infer,
    .ref = gathernd_ref,
    .grad = gathernd_grad,
};

/* --------------------------------------------------------- GatherNDGrad */

/* GatherNDGrad(dY, indices, x_shape) -> dX (attribute batch_dims): zeros
 * of X's shape with each slice of dY added where GatherND read it. */
static tsr_status gathernd_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64)));
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 2, "x_shape", shape, TSR_MAX_RANK, &n, &known));
    if (n < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "the rank of x_shape is not known");
    for (int d = 0; d < n; d++)
        dims[d] = known ? shape[d] : TSR_DIM_UNKNOWN;
    tsr_infer_set(c, 0, c->inputs[0]->dtype, n, dims);
    return TSR_OK;
}

static tsr_status gathernd_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *dy = k->inputs[0], *ind = k->inputs[1];
    tsr_tensor *dx = k->outputs[0];
    int b = 0;
    TSR_CHECK(batch_dims_of(k->node, &b));
    TSR_CHECK(nd_check(dx->rank, dx->dims, ind, b));
    int64_t n = product(ind->dims, 0, ind->rank - 1);
    int64_t slice = product(dx->dims, b + (int)ind->dims[ind->rank - 1], dx->rank);
    if (tsr_tensor_numel(dy) != n * slice)
        return tsr_error(TSR_ERR_SHAPE, "dY holds %lld elements, %lld expected",
                         (long long)tsr_tensor_numel(dy), (long long)(n * slice));
    int64_t *off = offsets_alloc(n);
    if (!off)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = nd_offsets(dx->rank, dx->dims, ind, b, off);
    if (st == TSR_OK) {
        size_t bytes = tsr_tensor_bytes(dx);
        if (bytes)
            memset(dx->data, 0, bytes);
        scatter_slices(dx, dy, off, n, slice, RED_ADD);
    }
    free(off);
    return st;
}

static tsr_status gathernd_grad_grad(tsr_grad_ctx *c)
{
    tsr_attr attr = TSR_ATTR_I("batch_dims", tsr_attr_int(tsr_grad_node(c), "batch_dims"));
    const char *ins[2] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 1)}, *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_GatherND, 2, ins, 1, &attr, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_GatherNDGrad = {
    .name = "GatherNDGrad",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = gathernd_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = gathernd_grad_infer,
    .ref = gathernd_grad_ref,
    .grad = gathernd_grad_grad,
};

/* ------------------------------------------------- scatter gradient rules */

/* The gather that reads what ScatterElements or ScatterND (the node being
 * differentiated) wrote: GatherElements or GatherND of `src`. */
static tsr_status emit_gather(tsr_grad_ctx *c, const char *src, const char **out)
{
    const tsr_node *n = tsr_grad_node(c);
    const char *ins[2] = {src, tsr_grad_input(c, 1)};
    if (n->op == &tsr_op_ScatterND)
        return tsr_grad_emit(c, &tsr_op_GatherND, 2, ins, 0, NULL, 1, out);
    tsr_attr axis = TSR_ATTR_I("axis", tsr_attr_int(n, "axis"));
    return tsr_grad_emit(c, &tsr_op_GatherElements, 2, ins, 1, &axis, 1, out);
}

/* The node's own op at the same indices, on other data and updates. */
static tsr_status emit_scatter(tsr_grad_ctx *c, const char *data, const char *upd,
                               const char *reduction, const char **out)
{
    const tsr_node *n = tsr_grad_node(c);
    const tsr_op_def *op = n->op;
    tsr_attr attrs[2] = {TSR_ATTR_S("reduction", reduction), {0}};
    int n_attrs = 1;
    if (op == &tsr_op_ScatterElements)
        attrs[n_attrs++] = TSR_ATTR_I("axis", tsr_attr_int(n, "axis"));
    const char *ins[3] = {data, tsr_grad_input(c, 1), upd};
    return tsr_grad_emit(c, op, 3, ins, n_attrs, attrs, 1, out);
}

static tsr_status ones_like(tsr_grad_ctx *c, const char *like, const char **out)
{
    tsr_dtype dt = tsr_grad_value(c, like)->dtype;
    double one = 1.0;
    float one_f = 1.0f;
    tsr_tensor t = {.dtype = dt, .rank = 1, .dims = {1}};
    t.data = dt == TSR_FLOAT32 ? (void *)&one_f : &one;
    tsr_attr attr = TSR_ATTR_T("value", &t);
    const char *shape;
    TSR_CHECK(tsr_grad_shape(c, like, &shape));
    return tsr_grad_emit(c, &tsr_op_ConstantOfShape, 1, &shape, 1, &attr, 1, out);
}

static tsr_status mask_of(tsr_grad_ctx *c, const char *a, const char *b, tsr_dtype dt,
                          const char **out)
{
    const char *eq;
    tsr_attr to = TSR_ATTR_I("to", dt);
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Equal, a, b, &eq));
    return tsr_grad_emit(c, &tsr_op_Cast, 1, &eq, 1, &to, 1, out);
}

/* ScatterElements and ScatterND. none: written positions of data get no
 * gradient, each update the gradient where it was written (duplicates
 * all get it, as in PyTorch's scatter). add: data gets dY, updates dY
 * where they went. mul: data gets dY times the product scattered there.
 * max and min: the gradient goes to the values equal to the result, split
 * evenly between ties (PyTorch's scatter_reduce amax/amin). */
static tsr_status scatter_grad(tsr_grad_ctx *c)
{
    scatter_reduction r = RED_NONE;
    TSR_CHECK(reduction_of(tsr_grad_node(c), &r));
    const char *data = tsr_grad_input(c, 0), *upd = tsr_grad_input(c, 2);
    const char *dy = tsr_grad_dy(c, 0), *y = tsr_grad_output(c, 0), *g;
    bool want_data = tsr_grad_wants(c, 0), want_upd = tsr_grad_wants(c, 2);
    switch (r) {
    case RED_NONE:
        if (want_data) {
            const char *zeros;
            TSR_CHECK(tsr_grad_zeros_like(c, upd, &zeros));
            TSR_CHECK(emit_scatter(c, dy, zeros, "none", &g));
            TSR_CHECK(tsr_grad_contribute(c, 0, g));
        }
        break;
    case RED_ADD:
        TSR_CHECK(tsr_grad_contribute(c, 0, dy));
        break;
    case RED_MUL: {
        if (want_upd)
            return tsr_grad_unsupported(c, "the gradient of the updates of a scatter with "
                                           "reduction 'mul' has no rule yet");
        const char *ones, *p;
        TSR_CHECK(ones_like(c, data, &ones));
        TSR_CHECK(emit_scatter(c, ones, upd, "mul", &p));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, p, &g));
        return tsr_grad_contribute(c, 0, g);
    }
    case RED_MAX:
    case RED_MIN: {
        tsr_dtype dt = tsr_grad_value(c, dy)->dtype;
        const char *hit_data, *at, *hit_upd, *count, *share;
        TSR_CHECK(mask_of(c, data, y, dt, &hit_data));
        TSR_CHECK(emit_gather(c, y, &at));
        TSR_CHECK(mask_of(c, upd, at, dt, &hit_upd));
        TSR_CHECK(emit_scatter(c, hit_data, hit_upd, "add", &count));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, dy, count, &share));
        if (want_data) {
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, share, hit_data, &g));
            TSR_CHECK(tsr_grad_contribute(c, 0, g));
        }
        if (want_upd) {
            const char *s;
            TSR_CHECK(emit_gather(c, share, &s));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, s, hit_upd, &g));
            TSR_CHECK(tsr_grad_contribute(c, 2, g));
        }
        return TSR_OK;
    }
    }
    if (want_upd) {
        TSR_CHECK(emit_gather(c, dy, &g));
        TSR_CHECK(tsr_grad_contribute(c, 2, g));
    }
    return TSR_OK;
}

/* ----------------------------------------------------- ScatterElements */

/* reduction is 'none' before opset 16, 'max' and 'min' from 18 on. */
static const tsr_attr_def scatter_elements_attrs[] = {
    {"axis", TSR_ATTR_INT, .i = 0}, {"reduction", TSR_ATTR_STRING, .s = "none"}, {NULL}};

static tsr_status check_updates(const tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0], *upd = c->inputs[2];
    if (upd->dtype != x->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "updates are %s but data is %s",
                               tsr_dtype_name(upd->dtype), tsr_dtype_name(x->dtype));
    return TSR_OK;
}

static tsr_status scatter_elements_infer(tsr_infer_ctx *c)
{
    int axis;
    TSR_CHECK(infer_reduction(c));
    TSR_CHECK(infer_elements(c, &axis));
    TSR_CHECK(check_updates(c));
    const tsr_value *x = c->inputs[0], *ind = c->inputs[1], *upd = c->inputs[2];
    bool same = upd->rank == ind->rank;
    for (int d = 0; same && d < ind->rank; d++)
        same = dims_agree(upd->dims[d], ind->dims[d]);
    if (!same) {
        char su[160], si[160];
        tsr_shape_format(su, sizeof su, upd->rank, upd->dims);
        tsr_shape_format(si, sizeof si, ind->rank, ind->dims);
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "updates of shape %s, indices of shape %s: they must match", su,
                               si);
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

static tsr_status scatter_elements_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *ind = k->inputs[1], *upd = k->inputs[2];
    tsr_tensor *y = k->outputs[0];
    scatter_reduction r = RED_NONE;
    TSR_CHECK(reduction_of(k->node, &r));
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(k->node, "axis"), x->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", x->rank);
    int64_t n = tsr_tensor_numel(ind);
    if (tsr_tensor_numel(upd) != n)
        return tsr_error(TSR_ERR_SHAPE, "updates hold %lld elements, the indices %lld",
                         (long long)tsr_tensor_numel(upd), (long long)n);
    int64_t *off = offsets_alloc(n);
    if (!off)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = element_offsets(x->rank, x->dims, ind, axis, off);
    if (st == TSR_OK) {
        copy_input(y, x);
        scatter_slices(y, upd, off, n, 1, r);
    }
    free(off);
    return st;
}

const tsr_op_def tsr_op_ScatterElements = {
    .name = "ScatterElements",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = scatter_elements_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = scatter_elements_infer,
    .ref = scatter_elements_ref,
    .grad = scatter_grad,
};

/* ----------------------------------------------------------- ScatterND */

/* reduction is 'none' before opset 16, 'max' and 'min' from 18 on. */
static const tsr_attr_def scatternd_attrs[] = {{"reduction", TSR_ATTR_STRING, .s = "none"}, {NULL}};

static tsr_status scatternd_infer(tsr_infer_ctx *c)
{
    int k = -1;
    TSR_CHECK(infer_reduction(c));
    TSR_CHECK(infer_nd(c, 0, &k));
    TSR_CHECK(check_updates(c));
    const tsr_value *x = c->inputs[0], *ind = c->inputs[1], *upd = c->inputs[2];
    if (k >= 0) {
        int want = ind->rank - 1 + x->rank - k;
        bool ok = upd->rank == want;
        for (int d = 0; ok && d < want; d++)
            ok = dims_agree(d < ind->rank - 1 ? ind->dims[d] : x->dims[k + d - (ind->rank - 1)],
                            upd->dims[d]);
        if (!ok) {
            char su[160], si[160], sx[160];
            tsr_shape_format(su, sizeof su, upd->rank, upd->dims);
            tsr_shape_format(si, sizeof si, ind->rank, ind->dims);
            tsr_shape_format(sx, sizeof sx, x->rank, x->dims);
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "updates of shape %s do not fit indices %s into data %s", su,
                                   si, sx);
        }
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

static tsr_status scatternd_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *ind = k->inputs[1], *upd = k->inputs[2];
    tsr_tensor *y = k->outputs[0];
    scatter_reduction r = RED_NONE;
    TSR_CHECK(reduction_of(k->node, &r));
    TSR_CHECK(nd_check(x->rank, x->dims, ind, 0));
    int64_t n = product(ind->dims, 0, ind->rank - 1);
    int64_t slice = product(x->dims, (int)ind->dims[ind->rank - 1], x->rank);
    if (n * slice != tsr_tensor_numel(upd))
        return tsr_error(TSR_ERR_SHAPE, "updates hold %lld elements, %lld expected",
                         (long long)tsr_tensor_numel(upd), (long long)(n * slice));
    int64_t *off = offsets_alloc(n);
    if (!off)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = nd_offsets(x->rank, x->dims, ind, 0, off);
    if (st == TSR_OK) {
        copy_input(y, x);
        scatter_slices(y, upd, off, n, slice, r);
    }
    free(off);
    return st;
}

const tsr_op_def tsr_op_ScatterND = {
    .name = "ScatterND",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = scatternd_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = scatternd_infer,
    .ref = scatternd_ref,
    .grad = scatter_grad,
};

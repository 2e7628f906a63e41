/* Ops that move data around: transposes, concatenation and splitting,
 * slices, Gather, padding, tiling (the other gathers and the scatters are
 * in gather.c). Kernels copy elements as bytes of the dtype's size, so
 * every dtype shares one code path, and the output shapes they fill are
 * the ones inference computed. */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

void tsr_contiguous_strides(int rank, const int64_t *dims, int64_t *strides)
{
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        strides[d] = s;
        s *= dims[d];
    }
}

/* memcpy with a constant size compiles to one move and, unlike a cast to
 * an integer type, does not break strict aliasing. */
#define COPY_ELEMENTS(ES)                                                                          \
    for (int64_t i = 0; i < n; i++)                                                                \
        memcpy(dst + i * (ES), src + i * stride * (ES), (ES));

static void copy_row(char *dst, const char *src, int64_t n, int64_t stride, size_t es)
{
    if (stride == 1) {
        memcpy(dst, src, (size_t)n * es);
        return;
    }
    switch (es) {
    case 1: COPY_ELEMENTS(1) break;
    case 2: COPY_ELEMENTS(2) break;
    case 4: COPY_ELEMENTS(4) break;
    case 8: COPY_ELEMENTS(8) break;
    default:
        for (int64_t i = 0; i < n; i++)
            memcpy(dst + (size_t)i * es, src + (int64_t)es * i * stride, es);
    }
}

void tsr_copy_strided(void *dst, const void *src, size_t es, int rank, const int64_t *dims_in,
                      const int64_t *strides_in, int64_t offset, int threads)
{
    /* Dims of size 1 are dropped and neighbours that step through memory
     * as one are merged, so the inner loop runs as long as possible. */
    int64_t dims[TSR_MAX_RANK + 1], strides[TSR_MAX_RANK + 1];
    int r = 0;
    int64_t total = 1;
    for (int d = 0; d < rank; d++) {
        total *= dims_in[d];
        if (dims_in[d] == 1)
            continue;
        if (r > 0 && strides[r - 1] == strides_in[d] * dims_in[d]) {
            dims[r - 1] *= dims_in[d];
            strides[r - 1] = strides_in[d];
        } else {
            dims[r] = dims_in[d];
            strides[r] = strides_in[d];
            r++;
        }
    }
    if (total == 0)
        return;
    if (r == 0) {
        dims[0] = 1;
        strides[0] = 1;
        r = 1;
    }
    int64_t inner = dims[r - 1], inner_stride = strides[r - 1];
    int64_t rows = total / inner;
    int nt = threads > 1 && (size_t)total * es >= ((size_t)1 << 18) ? threads : 1;
    if (nt > rows)
        nt = (int)rows;
    const char *s = src;
    char *o = dst;
#pragma omp parallel for num_threads(nt) if (nt > 1)
    for (int t = 0; t < nt; t++) {
        int64_t first = rows * t / nt, last = rows * (t + 1) / nt;
        int64_t idx[TSR_MAX_RANK + 1], off = offset, rest = first;
        for (int d = r - 2; d >= 0; d--) {
            idx[d] = rest % dims[d];
            rest /= dims[d];
            off += idx[d] * strides[d];
        }
        for (int64_t row = first; row < last; row++) {
            copy_row(o + (size_t)(row * inner) * es, s + off * (int64_t)es, inner, inner_stride,
                     es);
            for (int d = r - 2; d >= 0; d--) {
                off += strides[d];
                if (++idx[d] < dims[d])
                    break;
                off -= strides[d] * dims[d];
                idx[d] = 0;
            }
        }
    }
}

tsr_status tsr_infer_int_input(const tsr_infer_ctx *c, int input, const char *what, int64_t *vals,
                               int max, int *count, bool *known)
{
    *known = false;
    *count = -1;
    const tsr_value *v = input < c->n_inputs ? c->inputs[input] : NULL;
    if (!v)
        return TSR_OK;
    if (v->dtype != TSR_INT64 && v->dtype != TSR_INT32)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "%s must be an int64 tensor, got %s", what,
                               tsr_dtype_name(v->dtype));
    if (v->rank > 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "%s must be a 1-D tensor, got rank %d", what,
                               v->rank);
    int64_t n = v->rank == 0 ? 1 : v->dims[0];
    if (tsr_dim_known(n)) {
        if (n > max)
            return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                                   "%s has %lld elements, at most %d are supported", what,
                                   (long long)n, max);
        *count = (int)n;
    }
    if (v->data) {
        tsr_tensor t = tsr_value_tensor(v);
        TSR_CHECK(tsr_kernel_ints(&t, vals, max, count));
        *known = true;
    }
    return TSR_OK;
}

tsr_status tsr_infer_require_inputs(const tsr_infer_ctx *c)
{
    for (int i = 0; i < c->node->op->min_inputs && i < c->n_inputs; i++)
        if (!c->inputs[i])
            return tsr_infer_error(c, TSR_ERR_PARSE, "required input %d of %s is missing", i,
                                   c->node->op->name);
    return TSR_OK;
}

void tsr_format_ints(char *buf, size_t size, const int64_t *vals, int n)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < n && used < size; i++)
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)vals[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static int64_t product(const int64_t *dims, int from, int to)
{
    int64_t p = 1;
    for (int d = from; d < to; d++)
        p *= dims[d];
    return p;
}

/* Two sizes of one axis that must agree: keeps a known size over a symbol
 * and a symbol over an unknown; false when both are known and differ. */
static bool dim_unify(int64_t a, int64_t b, int64_t *out)
{
    if (tsr_dim_known(a) && tsr_dim_known(b)) {
        *out = a;
        return a == b;
    }
    if (tsr_dim_known(a) || tsr_dim_known(b))
        *out = tsr_dim_known(a) ? a : b;
    else
        *out = tsr_dim_is_sym(a) ? a : b;
    return true;
}

static tsr_status require_rank(const tsr_infer_ctx *c, int min_rank)
{
    const tsr_value *x = c->inputs[0];
    if (x->rank < min_rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "%s needs an input of rank >= %d, got rank %d",
                               c->node->op->name, min_rank, x->rank);
    return TSR_OK;
}

static tsr_status infer_axis(const tsr_infer_ctx *c, int rank, int *axis)
{
    int64_t a = tsr_attr_int(c->node, "axis");
    if (!tsr_axis_normalize(a, rank, axis))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                               (long long)a, rank);
    return TSR_OK;
}

/* ----------------------------------------------------------- Transpose */

static const tsr_attr_def transpose_attrs[] = {{"perm", TSR_ATTR_INTS}, {NULL}};

static tsr_status transpose_perm(const tsr_node *n, int rank, int *perm)
{
    size_t count;
    const int64_t *p = tsr_attr_ints(n, "perm", &count);
    if (!p) {
        for (int d = 0; d < rank; d++)
            perm[d] = rank - 1 - d;
        return TSR_OK;
    }
    char buf[256];
    tsr_format_ints(buf, sizeof buf, p, (int)count);
    if ((int64_t)count != rank)
        return tsr_error(TSR_ERR_SHAPE, "perm %s has %zu entries for an input of rank %d", buf,
                         count, rank);
    bool seen[TSR_MAX_RANK] = {false};
    for (int d = 0; d < rank; d++) {
        if (p[d] < 0 || p[d] >= rank || seen[p[d]])
            return tsr_error(TSR_ERR_SHAPE, "perm %s is not a permutation of 0..%d", buf, rank - 1);
        seen[p[d]] = true;
        perm[d] = (int)p[d];
    }
    return TSR_OK;
}

static tsr_status transpose_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    int perm[TSR_MAX_RANK];
    TSR_CHECK(transpose_perm(c->node, x->rank, perm));
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < x->rank; d++)
        dims[d] = x->dims[perm[d]];
    tsr_infer_set(c, 0, x->dtype, x->rank, dims);
    return TSR_OK;
}

static tsr_status transpose_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int perm[TSR_MAX_RANK];
    TSR_CHECK(transpose_perm(k->node, x->rank, perm));
    int64_t in_strides[TSR_MAX_RANK], strides[TSR_MAX_RANK];
    tsr_contiguous_strides(x->rank, x->dims, in_strides);
    for (int d = 0; d < x->rank; d++)
        strides[d] = in_strides[perm[d]];
    tsr_copy_strided(y->data, x->data, tsr_dtype_size(x->dtype), y->rank, y->dims, strides, 0,
                     k->threads);
    return TSR_OK;
}

static tsr_status transpose_grad(tsr_grad_ctx *c)
{
    int rank = tsr_grad_value(c, tsr_grad_input(c, 0))->rank, perm[TSR_MAX_RANK];
    TSR_CHECK(transpose_perm(tsr_grad_node(c), rank, perm));
    int64_t inverse[TSR_MAX_RANK];
    for (int d = 0; d < rank; d++)
        inverse[perm[d]] = d;
    tsr_attr attr = TSR_ATTR_INTS("perm", inverse, (size_t)rank);
    const char *dy = tsr_grad_dy(c, 0), *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Transpose, 1, &dy, 1, &attr, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Transpose = {
    .name = "Transpose",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = transpose_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = transpose_infer,
    .ref = transpose_ref,
    .grad = transpose_grad,
};

/* -------------------------------------------------------------- Concat */

static const tsr_attr_def concat_attrs[] = {{"axis", TSR_ATTR_INT, .required = true}, {NULL}};

static tsr_status concat_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    for (int i = 0; i < c->n_inputs; i++)
        if (!c->inputs[i])
            return tsr_infer_error(c, TSR_ERR_PARSE, "input %d is missing", i);
    const tsr_value *x0 = c->inputs[0];
    TSR_CHECK(require_rank(c, 1));
    int axis;
    TSR_CHECK(infer_axis(c, x0->rank, &axis));
    int64_t dims[TSR_MAX_RANK];
    memcpy(dims, x0->dims, sizeof dims);
    int64_t known_sum = 0, open_dim = TSR_DIM_UNKNOWN;
    int n_open = 0;
    for (int i = 0; i < c->n_inputs; i++) {
        const tsr_value *x = c->inputs[i];
        if (x->dtype != x0->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "input %d is %s but input 0 is %s", i,
                                   tsr_dtype_name(x->dtype), tsr_dtype_name(x0->dtype));
        char s0[160], si[160];
        tsr_shape_format(s0, sizeof s0, x0->rank, x0->dims);
        tsr_shape_format(si, sizeof si, x->rank, x->dims);
        if (x->rank != x0->rank)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "input %d has rank %d (shape %s) but input 0 has rank %d (%s)",
                                   i, x->rank, si, x0->rank, s0);
        for (int d = 0; d < x->rank; d++)
            if (d != axis && !dim_unify(dims[d], x->dims[d], &dims[d]))
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "input %d has shape %s, which differs from input 0's %s "
                                       "on axis %d (concatenating along axis %d)",
                                       i, si, s0, d, axis);
        if (tsr_dim_known(x->dims[axis])) {
            if (!tsr_size_add(known_sum, x->dims[axis], &known_sum))
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "the sizes of axis %d add up to more than 2^62 (input %d "
                                       "has shape %s)",
                                       axis, i, si);
        } else {
            n_open++;
            open_dim = x->dims[axis];
        }
    }
    if (n_open == 0)
        dims[axis] = known_sum;
    else
        dims[axis] = n_open == 1 && known_sum == 0 ? open_dim : TSR_DIM_UNKNOWN;
    tsr_infer_set(c, 0, x0->dtype, x0->rank, dims);
    return TSR_OK;
}

static tsr_status concat_ref(const tsr_kernel_ctx *k)
{
    tsr_tensor *y = k->outputs[0];
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(k->node, "axis"), y->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", y->rank);
    size_t es = tsr_dtype_size(y->dtype);
    int64_t outer = product(y->dims, 0, axis);
    size_t inner_bytes = (size_t)product(y->dims, axis + 1, y->rank) * es;
    size_t out_row = (size_t)y->dims[axis] * inner_bytes, at = 0;
    for (int i = 0; i < k->n_inputs; i++) {
        const tsr_tensor *x = k->inputs[i];
        size_t chunk = (size_t)x->dims[axis] * inner_bytes;
        if (at + chunk > out_row)
            return tsr_error(TSR_ERR_INTERNAL, "Concat inputs exceed the output along axis %d",
                             axis);
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)y->data + (size_t)o * out_row + at,
                   (const char *)x->data + (size_t)o * chunk, chunk);
        at += chunk;
    }
    return TSR_OK;
}

/* Split dY back into the pieces, whose sizes along the axis must be known. */
static tsr_status concat_grad(tsr_grad_ctx *c)
{
    int n = tsr_grad_node(c)->n_inputs, rank = tsr_grad_value(c, tsr_grad_dy(c, 0))->rank, axis;
    if (!tsr_axis_normalize(tsr_attr_int(tsr_grad_node(c), "axis"), rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", rank);
    if (n == 1)
        return tsr_grad_contribute(c, 0, tsr_grad_dy(c, 0));
    int64_t sizes[TSR_MAX_NODE_IO];
    bool known = true;
    for (int i = 0; i < n; i++) {
        sizes[i] = tsr_grad_value(c, tsr_grad_input(c, i))->dims[axis];
        known &= tsr_dim_known(sizes[i]);
    }
    const char *split, *outs[TSR_MAX_NODE_IO];
    tsr_attr attr = TSR_ATTR_I("axis", axis);
    if (known) {
        TSR_CHECK(tsr_grad_ints(c, n, sizes, &split));
    } else {
        /* Sizes known only at run time: the split is the inputs' Shape
         * along the axis, concatenated. */
        const char *dims[TSR_MAX_NODE_IO];
        tsr_attr range[2] = {TSR_ATTR_I("start", axis), TSR_ATTR_I("end", axis + 1)};
        for (int i = 0; i < n; i++) {
            const char *x = tsr_grad_input(c, i);
            TSR_CHECK(tsr_grad_emit(c, &tsr_op_Shape, 1, &x, 2, range, 1, &dims[i]));
        }
        tsr_attr axis0 = TSR_ATTR_I("axis", 0);
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Concat, n, dims, 1, &axis0, 1, &split));
    }
    const char *ins[2] = {tsr_grad_dy(c, 0), split};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Split, 2, ins, 1, &attr, n, outs));
    for (int i = 0; i < n; i++)
        TSR_CHECK(tsr_grad_contribute(c, i, outs[i]));
    return TSR_OK;
}

const tsr_op_def tsr_op_Concat = {
    .name = "Concat",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = TSR_MAX_NODE_IO,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = concat_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = concat_infer,
    .ref = concat_ref,
    .grad = concat_grad,
};

/* --------------------------------------------------------------- Split */

/* `split` is an attribute before opset 13 and an input from 13 on; from 18
 * on num_outputs may stand in for it, with every piece ceil(dim / n) long
 * but the last, which holds the rest. */
static const tsr_attr_def split_attrs[] = {{"axis", TSR_ATTR_INT, .i = 0},
                                           {"num_outputs", TSR_ATTR_INT},
                                           {"split", TSR_ATTR_INTS},
                                           {NULL}};

/* The pieces num_outputs gives an axis of known size `dim`. */
static tsr_status split_even_sizes(const tsr_infer_ctx *c, int axis, int64_t dim, int n,
                                   int64_t *sizes)
{
    int64_t piece = (dim + n - 1) / n, last = dim - piece * (n - 1);
    if (last < 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "axis %d of size %lld does not split into %d pieces of %lld and a "
                               "last one holding the rest (num_outputs %d)",
                               axis, (long long)dim, n, (long long)piece, n);
    for (int j = 0; j < n; j++)
        sizes[j] = j < n - 1 ? piece : last;
    return TSR_OK;
}

static tsr_status split_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    TSR_CHECK(require_rank(c, 1));
    int axis;
    TSR_CHECK(infer_axis(c, x->rank, &axis));
    int n = c->n_outputs;
    int64_t sizes[TSR_MAX_NODE_IO];
    int count = -1;
    bool known = false, given = false;
    bool has_input = c->n_inputs > 1 && c->inputs[1];
    bool by_count = tsr_attr_has(c->node, "num_outputs");
    if (by_count) {
        int64_t num = tsr_attr_int(c->node, "num_outputs");
        if (c->node->opset < 18)
            return tsr_infer_error(c, TSR_ERR_PARSE,
                                   "num_outputs is an attribute of Split from opset 18 on, not %d",
                                   c->node->opset);
        if (has_input)
            return tsr_infer_error(c, TSR_ERR_PARSE,
                                   "split and num_outputs are both given; give one of them");
        if (num != n)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "num_outputs is %lld but the node has %d outputs",
                                   (long long)num, n);
    } else if (c->node->opset >= 13) {
        if (tsr_attr_has(c->node, "split"))
            return tsr_infer_error(c, TSR_ERR_PARSE,
                                   "from opset 13 on, split is an input, not an attribute");
        given = has_input;
        TSR_CHECK(tsr_infer_int_input(c, 1, "split", sizes, TSR_MAX_NODE_IO, &count, &known));
    } else {
        if (has_input)
            return tsr_infer_error(c, TSR_ERR_PARSE,
                                   "before opset 13, split is an attribute, not an input");
        size_t na;
        const int64_t *s = tsr_attr_ints(c->node, "split", &na);
        given = s != NULL;
        if (given) {
            if (na > TSR_MAX_NODE_IO)
                return tsr_infer_error(c, TSR_ERR_SHAPE, "split has %zu entries for %d outputs", na,
                                       n);
            memcpy(sizes, s, na * sizeof *s);
            count = (int)na;
            known = true;
        }
    }
    int64_t dim = x->dims[axis];
    if (by_count && tsr_dim_known(dim)) {
        TSR_CHECK(split_even_sizes(c, axis, dim, n, sizes));
        given = known = true;
        count = n;
    }
    if (given && count >= 0 && count != n)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "split has %d entries for %d outputs", count, n);
    if (given && known) {
        int64_t sum = 0;
        for (int j = 0; j < n; j++) {
            if (sizes[j] < 0)
                return tsr_infer_error(c, TSR_ERR_SHAPE, "split size %lld is negative",
                                       (long long)sizes[j]);
            if (!tsr_size_add(sum, sizes[j], &sum))
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "split sizes add up to more than 2^62 (axis %d)", axis);
        }
        if (tsr_dim_known(dim) && sum != dim)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "split sizes add up to %lld but axis %d has size %lld",
                                   (long long)sum, axis, (long long)dim);
    } else if (!given && tsr_dim_known(dim) && dim % n != 0) {
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "axis %d of size %lld does not split into %d equal parts", axis,
                               (long long)dim, n);
    }
    int64_t dims[TSR_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims);
    for (int j = 0; j < n; j++) {
        if (given)
            dims[axis] = known ? sizes[j] : TSR_DIM_UNKNOWN;
        else if (tsr_dim_known(dim))
            dims[axis] = dim / n;
        else
            dims[axis] = n == 1 ? dim : TSR_DIM_UNKNOWN;
        tsr_infer_set(c, j, x->dtype, x->rank, dims);
    }
    return TSR_OK;
}

static tsr_status split_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(k->node, "axis"), x->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", x->rank);
    size_t es = tsr_dtype_size(x->dtype);
    int64_t outer = product(x->dims, 0, axis);
    size_t inner_bytes = (size_t)product(x->dims, axis + 1, x->rank) * es;
    size_t in_row = (size_t)x->dims[axis] * inner_bytes, at = 0;
    for (int j = 0; j < k->n_outputs; j++) {
        tsr_tensor *y = k->outputs[j];
        size_t chunk = (size_t)y->dims[axis] * inner_bytes;
        if (at + chunk > in_row)
            return tsr_error(TSR_ERR_INTERNAL, "Split outputs exceed the input along axis %d",
                             axis);
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)y->data + (size_t)o * chunk,
                   (const char *)x->data + (size_t)o * in_row + at, chunk);
        at += chunk;
    }
    return TSR_OK;
}

/* Concatenate the pieces' gradients, with zeros for pieces that got none. */
static tsr_status split_grad(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    int n_out = n->n_outputs;
    int rank = tsr_grad_value(c, tsr_grad_input(c, 0))->rank, axis;
    if (!tsr_axis_normalize(tsr_attr_int(n, "axis"), rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", rank);
    const char *pieces[TSR_MAX_NODE_IO], *g;
    for (int o = 0; o < n_out; o++) {
        pieces[o] = tsr_grad_dy(c, o);
        if (!pieces[o])
            TSR_CHECK(tsr_grad_zeros_like(c, tsr_grad_output(c, o), &pieces[o]));
    }
    tsr_attr attr = TSR_ATTR_I("axis", axis);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Concat, n_out, pieces, 1, &attr, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Split = {
    .name = "Split",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = TSR_MAX_NODE_IO,
    .attrs = split_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = split_infer,
    .ref = split_ref,
    .grad = split_grad,
};

/* --------------------------------------------------------------- Slice */

/* Sentinels such as INT64_MAX mean "to the end"; anything this large is
 * past the end of every real axis. */
#define SLICE_HUGE ((int64_t)1 << 62)

typedef struct slice_spec {
    int n;
    int64_t starts[TSR_MAX_RANK], ends[TSR_MAX_RANK], axes[TSR_MAX_RANK], steps[TSR_MAX_RANK];
} slice_spec;

/* Checks axes and steps and fills, per axis of `dims`, the first index,
 * the step and the length of the slice. Axes whose size is not known get
 * a length only where the slice provably keeps the whole axis. */
static tsr_status slice_resolve(const slice_spec *s, int rank, const int64_t *dims, int64_t *start,
                                int64_t *step, int64_t *len)
{
    bool seen[TSR_MAX_RANK] = {false};
    for (int d = 0; d < rank; d++) {
        start[d] = 0;
        step[d] = 1;
        len[d] = dims[d];
    }
    for (int i = 0; i < s->n; i++) {
        int axis;
        if (!tsr_axis_normalize(s->axes[i], rank, &axis))
            return tsr_error(TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                             (long long)s->axes[i], rank);
        if (seen[axis])
            return tsr_error(TSR_ERR_SHAPE, "axis %d is sliced twice", axis);
        seen[axis] = true;
        int64_t b = s->starts[i], e = s->ends[i], st = s->steps[i], d = dims[axis];
        if (st == 0)
            return tsr_error(TSR_ERR_SHAPE, "step of axis %d is 0", axis);
        step[axis] = st;
        if (!tsr_dim_known(d)) {
            bool forward_whole = st == 1 && (b == 0 || b <= -SLICE_HUGE) && e >= SLICE_HUGE;
            bool backward_whole = st == -1 && (b == -1 || b >= SLICE_HUGE) && e <= -SLICE_HUGE;
            len[axis] = forward_whole || backward_whole ? d : TSR_DIM_UNKNOWN;
            continue;
        }
        if (b < 0)
            b += d;
        if (e < 0)
            e += d;
        if (st > 0) {
            b = b < 0 ? 0 : b > d ? d : b;
            e = e < 0 ? 0 : e > d ? d : e;
            len[axis] = e > b ? (e - b - 1) / st + 1 : 0;
        } else {
            int64_t mag = st == INT64_MIN ? INT64_MAX : -st;
            b = b < 0 ? 0 : b;
            b = b > d - 1 ? d - 1 : b;
            e = e < -1 ? -1 : e;
            e = e > d - 1 ? d - 1 : e;
            len[axis] = b > e ? (b - e - 1) / mag + 1 : 0;
        }
        start[axis] = b;
    }
    return TSR_OK;
}

/* Gives omitted axes (0, 1, ...) and steps (1) their ONNX defaults. */
static void slice_defaults(slice_spec *s, bool has_axes, bool has_steps)
{
    for (int i = 0; i < s->n; i++) {
        if (!has_axes)
            s->axes[i] = i;
        if (!has_steps)
            s->steps[i] = 1;
    }
}

static tsr_status slice_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    slice_spec s;
    static const char *const names[4] = {"starts", "ends", "axes", "steps"};
    int64_t *arrays[4] = {s.starts, s.ends, s.axes, s.steps};
    int counts[4];
    bool known[4], present[4];
    for (int i = 0; i < 4; i++) {
        present[i] = i + 1 < c->n_inputs && c->inputs[i + 1];
        if (i < 2 && !present[i])
            return tsr_infer_error(c, TSR_ERR_PARSE, "input '%s' is missing", names[i]);
        TSR_CHECK(tsr_infer_int_input(c, i + 1, names[i], arrays[i], TSR_MAX_RANK, &counts[i],
                                      &known[i]));
    }
    s.n = counts[0];
    for (int i = 1; i < 4; i++)
        if (present[i] && counts[i] >= 0 && s.n >= 0 && counts[i] != s.n)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "starts has %d entries but %s has %d", s.n,
                                   names[i], counts[i]);
    int64_t dims[TSR_MAX_RANK], start[TSR_MAX_RANK], step[TSR_MAX_RANK];
    bool all_known = known[0] && known[1] && (!present[2] || known[2]) && (!present[3] || known[3]);
    if (all_known) {
        slice_defaults(&s, present[2], present[3]);
        TSR_CHECK(slice_resolve(&s, x->rank, x->dims, start, step, dims));
    } else {
        memcpy(dims, x->dims, sizeof dims);
        bool axes_known = present[2] ? known[2] : s.n >= 0;
        for (int d = 0; d < x->rank; d++)
            if (!axes_known)
                dims[d] = TSR_DIM_UNKNOWN;
        for (int i = 0; axes_known && i < s.n; i++) {
            int axis;
            int64_t a = present[2] ? s.axes[i] : i;
            if (!tsr_axis_normalize(a, x->rank, &axis))
                return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                                       (long long)a, x->rank);
            dims[axis] = TSR_DIM_UNKNOWN;
        }
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, dims);
    return TSR_OK;
}

static tsr_status slice_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    slice_spec s;
    int counts[4] = {0, 0, 0, 0};
    int64_t *arrays[4] = {s.starts, s.ends, s.axes, s.steps};
    for (int i = 0; i < 4; i++)
        if (i + 1 < k->n_inputs && k->inputs[i + 1])
            TSR_CHECK(tsr_kernel_ints(k->inputs[i + 1], arrays[i], TSR_MAX_RANK, &counts[i]));
    bool has_axes = k->n_inputs > 3 && k->inputs[3], has_steps = k->n_inputs > 4 && k->inputs[4];
    s.n = counts[0];
    if (counts[1] != s.n || (has_axes && counts[2] != s.n) || (has_steps && counts[3] != s.n))
        return tsr_error(TSR_ERR_SHAPE, "starts, ends, axes and steps differ in length");
    slice_defaults(&s, has_axes, has_steps);
    int64_t start[TSR_MAX_RANK], step[TSR_MAX_RANK], len[TSR_MAX_RANK];
    TSR_CHECK(slice_resolve(&s, x->rank, x->dims, start, step, len));
    int64_t in_strides[TSR_MAX_RANK], strides[TSR_MAX_RANK], offset = 0;
    tsr_contiguous_strides(x->rank, x->dims, in_strides);
    for (int d = 0; d < x->rank; d++) {
        if (len[d] != y->dims[d])
            return tsr_error(TSR_ERR_SHAPE,
                             "slice of axis %d has %lld elements, the output expects %lld", d,
                             (long long)len[d], (long long)y->dims[d]);
        if (len[d] > 0)
            offset += start[d] * in_strides[d];
        /* A step only matters when it is taken; huge steps (INT64_MIN)
         * then yield one element and must not be multiplied. */
        strides[d] = len[d] > 1 ? in_strides[d] * step[d] : 0;
    }
    tsr_copy_strided(y->data, x->data, tsr_dtype_size(x->dtype), y->rank, y->dims, strides, offset,
                     k->threads);
    return TSR_OK;
}

/* dX of a Slice is dY scattered into zeros of X's shape (SliceGrad), with
 * the Slice's own bounds, so bounds and sizes may be known only at run time. */
static tsr_status slice_grad(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    const char *ins[6] = {tsr_grad_dy(c, 0)}, *g;
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &ins[1]));
    for (int i = 1; i < n->n_inputs; i++)
        ins[i + 1] = tsr_grad_input(c, i);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_SliceGrad, n->n_inputs + 1, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Slice = {
    .name = "Slice",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = slice_infer,
    .ref = slice_ref,
    .grad = slice_grad,
};

/* ----------------------------------------------------------- SliceGrad */

/* SliceGrad(dY, x_shape, starts, ends[, axes, steps]) (domain ai.tessera):
 * zeros of shape x_shape with dY where Slice(X, starts, ends, axes, steps)
 * took its elements from. */
static tsr_status slice_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *dy = c->inputs[0];
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK], axes[TSR_MAX_RANK];
    int n, n_axes = -1;
    bool known, axes_known = false;
    TSR_CHECK(tsr_infer_int_input(c, 1, "x_shape", shape, TSR_MAX_RANK, &n, &known));
    if (n >= 0 && n != dy->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "x_shape has %d entries for dY of rank %d", n,
                               dy->rank);
    if (c->n_inputs > 4 && c->inputs[4])
        TSR_CHECK(tsr_infer_int_input(c, 4, "axes", axes, TSR_MAX_RANK, &n_axes, &axes_known));
    else
        TSR_CHECK(tsr_infer_int_input(c, 2, "starts", axes, TSR_MAX_RANK, &n_axes, &axes_known));
    bool sliced[TSR_MAX_RANK] = {false};
    for (int i = 0; i < n_axes; i++) {
        int axis;
        bool given = c->n_inputs > 4 && c->inputs[4];
        if (!axes_known && given)
            break;
        if (tsr_axis_normalize(given ? axes[i] : i, dy->rank, &axis))
            sliced[axis] = true;
    }
    /* Axes that are not sliced keep dY's size. */
    bool which_known = n_axes >= 0 && (axes_known || !(c->n_inputs > 4 && c->inputs[4]));
    for (int d = 0; d < dy->rank; d++)
        dims[d] = known ? shape[d] : which_known && !sliced[d] ? dy->dims[d] : TSR_DIM_UNKNOWN;
    tsr_infer_set(c, 0, dy->dtype, dy->rank, dims);
    return TSR_OK;
}

static tsr_status slice_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *dy = k->inputs[0];
    tsr_tensor *dx = k->outputs[0];
    slice_spec s;
    int counts[4] = {0, 0, 0, 0};
    int64_t *arrays[4] = {s.starts, s.ends, s.axes, s.steps};
    for (int i = 0; i < 4; i++)
        if (i + 2 < k->n_inputs && k->inputs[i + 2])
            TSR_CHECK(tsr_kernel_ints(k->inputs[i + 2], arrays[i], TSR_MAX_RANK, &counts[i]));
    bool has_axes = k->n_inputs > 4 && k->inputs[4], has_steps = k->n_inputs > 5 && k->inputs[5];
    s.n = counts[0];
    if (counts[1] != s.n || (has_axes && counts[2] != s.n) || (has_steps && counts[3] != s.n))
        return tsr_error(TSR_ERR_SHAPE, "starts, ends, axes and steps differ in length");
    slice_defaults(&s, has_axes, has_steps);
    int64_t start[TSR_MAX_RANK], step[TSR_MAX_RANK], len[TSR_MAX_RANK];
    TSR_CHECK(slice_resolve(&s, dx->rank, dx->dims, start, step, len));
    int64_t strides[TSR_MAX_RANK], offset = 0;
    tsr_contiguous_strides(dx->rank, dx->dims, strides);
    for (int d = 0; d < dx->rank; d++) {
        if (len[d] != dy->dims[d])
            return tsr_error(TSR_ERR_SHAPE,
                             "slice of axis %d has %lld elements, but dY has %lld there", d,
                             (long long)len[d], (long long)dy->dims[d]);
        if (len[d] > 0)
            offset += start[d] * strides[d];
        strides[d] = len[d] > 1 ? strides[d] * step[d] : 0;
    }
    size_t es = tsr_dtype_size(dx->dtype);
    memset(dx->data, 0, tsr_tensor_bytes(dx));
    int64_t total = tsr_tensor_numel(dy), idx[TSR_MAX_RANK] = {0}, off = offset;
    const char *src = dy->data;
    char *dst = dx->data;
    for (int64_t i = 0; i < total; i++) {
        memcpy(dst + (size_t)off * es, src + (size_t)i * es, es);
        for (int d = dy->rank - 1; d >= 0; d--) {
            off += strides[d];
            if (++idx[d] < dy->dims[d])
                break;
            off -= strides[d] * dy->dims[d];
            idx[d] = 0;
        }
    }
    return TSR_OK;
}

/* SliceGrad is linear in dY: its adjoint is the Slice itself. */
static tsr_status slice_grad_grad(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    const char *ins[5] = {tsr_grad_dy(c, 0)}, *g;
    for (int i = 2; i < n->n_inputs; i++)
        ins[i - 1] = tsr_grad_input(c, i);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Slice, n->n_inputs - 1, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_SliceGrad = {
    .name = "SliceGrad",
    .domain = "ai.tessera",
    .min_inputs = 4,
    .max_inputs = 6,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = slice_grad_infer,
    .ref = slice_grad_ref,
    .grad = slice_grad_grad,
};

/* -------------------------------------------------------------- Gather */

static const tsr_attr_def gather_attrs[] = {{"axis", TSR_ATTR_INT, .i = 0}, {NULL}};

static int64_t index_at(const tsr_tensor *t, int64_t i)
{
    return t->dtype == TSR_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
}

tsr_status tsr_gather_check_indices(const tsr_tensor *indices, int axis, int64_t dim)
{
    int64_t n = tsr_tensor_numel(indices);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = index_at(indices, i);
        if (v < -dim || v >= dim)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "index %lld (element %lld of the indices) is out of range for axis "
                             "%d of size %lld",
                             (long long)v, (long long)i, axis, (long long)dim);
    }
    return TSR_OK;
}

static tsr_status gather_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0], *ind = c->inputs[1];
    TSR_CHECK(require_rank(c, 1));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64) | TSR_DTYPE_BIT(TSR_INT32)));
    int axis;
    TSR_CHECK(infer_axis(c, x->rank, &axis));
    int rank = x->rank - 1 + ind->rank;
    if (rank > TSR_MAX_RANK)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "the output would have rank %d (max %d)",
                               rank, TSR_MAX_RANK);
    if (ind->data && tsr_dim_known(x->dims[axis])) {
        tsr_tensor t = tsr_value_tensor(ind);
        TSR_CHECK(tsr_gather_check_indices(&t, axis, x->dims[axis]));
    }
    int64_t dims[TSR_MAX_RANK];
    int r = 0;
    for (int d = 0; d < axis; d++)
        dims[r++] = x->dims[d];
    for (int d = 0; d < ind->rank; d++)
        dims[r++] = ind->dims[d];
    for (int d = axis + 1; d < x->rank; d++)
        dims[r++] = x->dims[d];
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    return TSR_OK;
}

static tsr_status gather_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *ind = k->inputs[1];
    tsr_tensor *y = k->outputs[0];
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(k->node, "axis"), x->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", x->rank);
    int64_t dim = x->dims[axis];
    TSR_CHECK(tsr_gather_check_indices(ind, axis, dim));
    size_t es = tsr_dtype_size(x->dtype);
    int64_t outer = product(x->dims, 0, axis), n = tsr_tensor_numel(ind);
    size_t inner_bytes = (size_t)product(x->dims, axis + 1, x->rank) * es;
    const char *src = x->data;
    char *dst = y->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < n; i++) {
            int64_t v = index_at(ind, i);
            v += v < 0 ? dim : 0;
            memcpy(dst + (size_t)(o * n + i) * inner_bytes,
                   src + (size_t)(o * dim + v) * inner_bytes, inner_bytes);
        }
    return TSR_OK;
}

static tsr_status gather_grad(tsr_grad_ctx *c)
{
    const char *shape, *g;
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &shape));
    tsr_attr attr = TSR_ATTR_I("axis", tsr_attr_int(tsr_grad_node(c), "axis"));
    const char *ins[3] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 1), shape};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_GatherGrad, 3, ins, 1, &attr, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Gather = {
    .name = "Gather",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = gather_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = gather_infer,
    .ref = gather_ref,
    .grad = gather_grad,
};

/* ----------------------------------------------------------------- Pad */

static const tsr_attr_def pad_attrs[] = {{"mode", TSR_ATTR_STRING, .s = "constant"}, {NULL}};

typedef enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE, PAD_WRAP } pad_mode;

static tsr_status pad_mode_of(const tsr_node *n, pad_mode *mode)
{
    const char *m = tsr_attr_string(n, "mode");
    if (strcmp(m, "constant") == 0)
        *mode = PAD_CONSTANT;
    else if (strcmp(m, "reflect") == 0)
        *mode = PAD_REFLECT;
    else if (strcmp(m, "edge") == 0)
        *mode = PAD_EDGE;
    else if (strcmp(m, "wrap") == 0 && n->opset >= 19)
        *mode = PAD_WRAP;
    else
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "Pad mode '%s' is not supported at opset %d (constant, reflect, edge "
                         "are, and wrap from opset 19 on)",
                         m, n->opset);
    return TSR_OK;
}

/* From opset 18 on, the optional fourth input names the axes that `pads`
 * (2 x len(axes) values, begins then ends) applies to; the others get no
 * padding. Spreads `given` (count values) into full pads of 2 x rank. */
static tsr_status pad_spread(const tsr_node *n, int rank, const int64_t *given, int count,
                             const int64_t *axes, int n_axes, int64_t *pads)
{
    if (!axes) {
        if (count != 2 * rank)
            return tsr_error(TSR_ERR_SHAPE, "pads has %d entries for an input of rank %d", count,
                             rank);
        memcpy(pads, given, (size_t)count * sizeof *pads);
        return TSR_OK;
    }
    if (n->opset < 18)
        return tsr_error(TSR_ERR_PARSE, "Pad takes an axes input from opset 18 on, not at %d",
                         n->opset);
    if (count != 2 * n_axes)
        return tsr_error(TSR_ERR_SHAPE, "pads has %d entries for %d axes (expected two per axis)",
                         count, n_axes);
    bool seen[TSR_MAX_RANK] = {false};
    for (int d = 0; d < 2 * rank; d++)
        pads[d] = 0;
    for (int i = 0; i < n_axes; i++) {
        int axis;
        if (!tsr_axis_normalize(axes[i], rank, &axis))
            return tsr_error(TSR_ERR_SHAPE, "axes[%d] is %lld, out of range for rank %d", i,
                             (long long)axes[i], rank);
        if (seen[axis])
            return tsr_error(TSR_ERR_SHAPE, "axis %d is given twice in axes", axis);
        seen[axis] = true;
        pads[axis] = given[i];
        pads[rank + axis] = given[n_axes + i];
    }
    return TSR_OK;
}

/* n + b + e, false when it leaves int64 or passes TSR_MAX_TENSOR_BYTES. */
static bool pad_size(int64_t n, int64_t b, int64_t e, int64_t *out)
{
    int64_t sum;
    if (__builtin_add_overflow(n, b, &sum) || __builtin_add_overflow(sum, e, &sum) ||
        sum > TSR_MAX_TENSOR_BYTES)
        return false;
    *out = sum;
    return true;
}

/* Checks that pads leave a non-negative size that fits and that reflect
 * and edge have something to copy from; unknown dims are skipped. */
static tsr_status pad_check(pad_mode mode, int rank, const int64_t *dims, const int64_t *pads)
{
    for (int d = 0; d < rank; d++) {
        int64_t n = dims[d], b = pads[d], e = pads[rank + d], size;
        if (!tsr_dim_known(n))
            continue;
        if (!pad_size(n, b, e, &size))
            return tsr_error(TSR_ERR_SHAPE,
                             "pads %lld and %lld make axis %d of size %lld larger than 2^62",
                             (long long)b, (long long)e, d, (long long)n);
        if (size < 0)
            return tsr_error(TSR_ERR_SHAPE,
                             "pads %lld and %lld leave axis %d of size %lld negative", (long long)b,
                             (long long)e, d, (long long)n);
        if (mode == PAD_REFLECT && (b > 0 || e > 0) && (b > n - 1 || e > n - 1))
            return tsr_error(TSR_ERR_SHAPE,
                             "reflect pads %lld and %lld must be smaller than axis %d of size %lld",
                             (long long)b, (long long)e, d, (long long)n);
        if ((mode == PAD_EDGE || mode == PAD_WRAP) && (b > 0 || e > 0) && n == 0)
            return tsr_error(TSR_ERR_SHAPE, "%s padding of the empty axis %d",
                             mode == PAD_EDGE ? "edge" : "wrap", d);
    }
    return TSR_OK;
}

static tsr_status pad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    pad_mode mode = PAD_CONSTANT;
    TSR_CHECK(pad_mode_of(c->node, &mode));
    int64_t given[2 * TSR_MAX_RANK], axes[TSR_MAX_RANK], pads[2 * TSR_MAX_RANK];
    int count, n_axes = 0;
    bool known, axes_known = true, has_axes = c->n_inputs > 3 && c->inputs[3];
    TSR_CHECK(tsr_infer_int_input(c, 1, "pads", given, 2 * TSR_MAX_RANK, &count, &known));
    if (has_axes)
        TSR_CHECK(tsr_infer_int_input(c, 3, "axes", axes, TSR_MAX_RANK, &n_axes, &axes_known));
    known &= axes_known;
    if (known)
        TSR_CHECK(pad_spread(c->node, x->rank, given, count, has_axes ? axes : NULL, n_axes, pads));
    else if (!has_axes && count >= 0 && count != 2 * x->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "pads has %d entries for an input of rank %d",
                               count, x->rank);
    const tsr_value *cv = c->n_inputs > 2 ? c->inputs[2] : NULL;
    if (cv && cv->dtype != x->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "constant_value is %s but the input is %s",
                               tsr_dtype_name(cv->dtype), tsr_dtype_name(x->dtype));
    if (cv && tsr_shape_numel(cv->rank, cv->dims) != 1 && tsr_shape_numel(cv->rank, cv->dims) >= 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "constant_value must hold one element");
    if (known)
        TSR_CHECK(pad_check(mode, x->rank, x->dims, pads));
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < x->rank; d++) {
        dims[d] = TSR_DIM_UNKNOWN;
        if (!known)
            continue;
        int64_t n = x->dims[d];
        if (tsr_dim_known(n))
            pad_size(n, pads[d], pads[x->rank + d], &dims[d]);
        else if (pads[d] == 0 && pads[x->rank + d] == 0)
            dims[d] = n;
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, dims);
    return TSR_OK;
}

/* The input index an output position maps to along one axis, or -1 where
 * constant mode fills. */
static int64_t pad_source(int64_t i, int64_t n, pad_mode mode)
{
    if (i >= 0 && i < n)
        return i;
    switch (mode) {
    case PAD_EDGE: return i < 0 ? 0 : n - 1;
    case PAD_REFLECT: return i < 0 ? -i : 2 * (n - 1) - i;
    case PAD_WRAP: return (i % n + n) % n;
    default: return -1;
    }
}

/* Output columns [from, to) of one row, each mapped on its own. */
static void pad_columns(char *dst, const char *src, const unsigned char *fill, int64_t from,
                        int64_t to, int64_t pb, int64_t n, pad_mode mode, size_t es)
{
    for (int64_t o = from; o < to; o++) {
        int64_t i = pad_source(o - pb, n, mode);
        memcpy(dst + (size_t)o * es, i >= 0 ? src + (size_t)i * es : (const char *)fill, es);
    }
}

static tsr_status pad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    pad_mode mode = PAD_CONSTANT;
    TSR_CHECK(pad_mode_of(k->node, &mode));
    int64_t given[2 * TSR_MAX_RANK], axes[TSR_MAX_RANK], pads[2 * TSR_MAX_RANK];
    int count, n_axes = 0;
    const tsr_tensor *axes_t = k->n_inputs > 3 ? k->inputs[3] : NULL;
    TSR_CHECK(tsr_kernel_ints(k->inputs[1], given, 2 * TSR_MAX_RANK, &count));
    if (axes_t)
        TSR_CHECK(tsr_kernel_ints(axes_t, axes, TSR_MAX_RANK, &n_axes));
    int r = x->rank;
    TSR_CHECK(pad_spread(k->node, r, given, count, axes_t ? axes : NULL, n_axes, pads));
    TSR_CHECK(pad_check(mode, r, x->dims, pads));
    size_t es = tsr_dtype_size(x->dtype);
    unsigned char fill[16] = {0};
    const tsr_tensor *cv = k->n_inputs > 2 ? k->inputs[2] : NULL;
    if (cv && tsr_tensor_numel(cv) == 1)
        memcpy(fill, cv->data, es);
    int64_t total = tsr_tensor_numel(y);
    if (total == 0)
        return TSR_OK;
    if (r == 0) {
        memcpy(y->data, x->data, es);
        return TSR_OK;
    }
    int64_t in_strides[TSR_MAX_RANK];
    tsr_contiguous_strides(r, x->dims, in_strides);
    int64_t width = y->dims[r - 1], n_last = x->dims[r - 1], pb = pads[r - 1];
    int64_t rows = total / width;
    /* The columns that copy straight from the input row. */
    int64_t lo = pb > 0 ? pb : 0, hi = pb + n_last < width ? pb + n_last : width;
    int nt = k->threads > 1 && total * (int64_t)es >= (1 << 18) ? k->threads : 1;
#pragma omp parallel for num_threads(nt) if (nt > 1)
    for (int64_t row = 0; row < rows; row++) {
        char *dst = (char *)y->data + (size_t)(row * width) * es;
        const char *src = x->data;
        int64_t rest = row, off = 0;
        bool inside = true;
        for (int d = r - 2; d >= 0; d--) {
            int64_t i = pad_source(rest % y->dims[d] - pads[d], x->dims[d], mode);
            rest /= y->dims[d];
            inside &= i >= 0;
            off += i * in_strides[d];
        }
        if (!inside) {
            for (int64_t o = 0; o < width; o++)
                memcpy(dst + (size_t)o * es, fill, es);
            continue;
        }
        src += (size_t)off * es;
        if (hi > lo)
            memcpy(dst + (size_t)lo * es, src + (size_t)(lo - pb) * es, (size_t)(hi - lo) * es);
        pad_columns(dst, src, fill, 0, hi > lo ? lo : width, pb, n_last, mode, es);
        pad_columns(dst, src, fill, hi > lo ? hi : width, width, pb, n_last, mode, es);
    }
    return TSR_OK;
}

/* Constant padding is undone by the opposite (cropping) pads. */
static tsr_status pad_grad(tsr_grad_ctx *c)
{
    pad_mode mode = PAD_CONSTANT;
    TSR_CHECK(pad_mode_of(tsr_grad_node(c), &mode));
    if (mode != PAD_CONSTANT)
        return tsr_grad_unsupported(c, "Pad mode '%s' has no gradient rule yet",
                                    tsr_attr_string(tsr_grad_node(c), "mode"));
    if (tsr_grad_wants(c, 2))
        return tsr_grad_unsupported(c, "the gradient of constant_value has no rule yet");
    const char *neg, *g;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, tsr_grad_input(c, 1), &neg));
    const char *axes_name = tsr_grad_input(c, 3);
    if (axes_name) {
        /* The gradient is emitted at an opset without Pad's axes input:
         * the cropping pads are scattered into a full-rank list. */
        const tsr_value *axes = tsr_grad_value(c, axes_name);
        if (!axes->data)
            return tsr_grad_unsupported(c, "the padded axes are computed at run time");
        int rank = tsr_grad_value(c, tsr_grad_input(c, 0))->rank, n_axes;
        int64_t given[TSR_MAX_RANK], at[2 * TSR_MAX_RANK], zeros[2 * TSR_MAX_RANK] = {0};
        tsr_tensor view = tsr_value_tensor(axes);
        TSR_CHECK(tsr_kernel_ints(&view, given, TSR_MAX_RANK, &n_axes));
        for (int i = 0; i < n_axes; i++) {
            int axis;
            if (!tsr_axis_normalize(given[i], rank, &axis))
                return tsr_error(TSR_ERR_SHAPE, "axes[%d] is %lld, out of range for rank %d", i,
                                 (long long)given[i], rank);
            at[i] = axis;
            at[n_axes + i] = rank + axis;
        }
        const char *base, *where, *full;
        TSR_CHECK(tsr_grad_ints(c, 2 * rank, zeros, &base));
        TSR_CHECK(tsr_grad_ints(c, 2 * n_axes, at, &where));
        const char *scatter[3] = {base, where, neg};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_ScatterElements, 3, scatter, 0, NULL, 1, &full));
        neg = full;
    }
    const char *ins[2] = {tsr_grad_dy(c, 0), neg};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Pad, 2, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Pad = {
    .name = "Pad",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = pad_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = pad_infer,
    .ref = pad_ref,
    .grad = pad_grad,
};

/* ---------------------------------------------------------------- Tile */

static tsr_status tile_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    int64_t reps[TSR_MAX_RANK];
    int count;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 1, "repeats", reps, TSR_MAX_RANK, &count, &known));
    if (count >= 0 && count != x->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "repeats has %d entries for an input of rank %d",
                               count, x->rank);
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < x->rank; d++) {
        dims[d] = TSR_DIM_UNKNOWN;
        if (!known)
            continue;
        if (reps[d] < 0)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "repeats[%d] = %lld is negative", d,
                                   (long long)reps[d]);
        if (tsr_dim_known(x->dims[d])) {
            if (!tsr_size_mul(x->dims[d], reps[d], &dims[d]))
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "repeats[%d] = %lld makes axis %d of size %lld larger "
                                       "than 2^62",
                                       d, (long long)reps[d], d, (long long)x->dims[d]);
        } else if (reps[d] <= 1)
            dims[d] = reps[d] == 0 ? 0 : x->dims[d];
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, dims);
    return TSR_OK;
}

static tsr_status tile_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    size_t es = tsr_dtype_size(x->dtype);
    int64_t total = tsr_tensor_numel(y);
    int r = x->rank;
    if (total == 0)
        return TSR_OK;
    if (r == 0) {
        memcpy(y->data, x->data, es);
        return TSR_OK;
    }
    for (int d = 0; d < r; d++)
        if (x->dims[d] == 0 || y->dims[d] % x->dims[d] != 0)
            return tsr_error(TSR_ERR_SHAPE, "output axis %d of size %lld is no multiple of %lld", d,
                             (long long)y->dims[d], (long long)x->dims[d]);
    int64_t in_strides[TSR_MAX_RANK];
    tsr_contiguous_strides(r, x->dims, in_strides);
    int64_t width = y->dims[r - 1], n_last = x->dims[r - 1], rows = total / width;
    size_t row_bytes = (size_t)n_last * es;
    int nt = k->threads > 1 && total * (int64_t)es >= (1 << 18) ? k->threads : 1;
#pragma omp parallel for num_threads(nt) if (nt > 1)
    for (int64_t row = 0; row < rows; row++) {
        int64_t rest = row, off = 0;
        for (int d = r - 2; d >= 0; d--) {
            off += (rest % y->dims[d]) % x->dims[d] * in_strides[d];
            rest /= y->dims[d];
        }
        char *dst = (char *)y->data + (size_t)(row * width) * es;
        const char *src = (const char *)x->data + (size_t)off * es;
        for (int64_t rep = 0; rep < width / n_last; rep++)
            memcpy(dst + (size_t)rep * row_bytes, src, row_bytes);
    }
    return TSR_OK;
}

/* dY viewed as (repeat, size) pairs per axis, summed over the repeats. */
static tsr_status tile_grad(tsr_grad_ctx *c)
{
    const tsr_value x_copy = *tsr_grad_value(c, tsr_grad_input(c, 0)), *x = &x_copy;
    const tsr_value dy_copy = *tsr_grad_value(c, tsr_grad_dy(c, 0)), *dy = &dy_copy;
    if (2 * x->rank > TSR_MAX_RANK)
        return tsr_grad_unsupported(c, "Tile of rank %d has no gradient rule (at most %d)",
                                    x->rank, TSR_MAX_RANK / 2);
    int64_t shape[TSR_MAX_RANK], axes[TSR_MAX_RANK];
    for (int d = 0; d < x->rank; d++) {
        if (!tsr_dim_known(x->dims[d]) || !tsr_dim_known(dy->dims[d]) || x->dims[d] == 0)
            return tsr_grad_unsupported(c, "axis %d's size is not known before run time", d);
        shape[2 * d] = dy->dims[d] / x->dims[d];
        shape[2 * d + 1] = x->dims[d];
        axes[d] = 2 * d;
    }
    const char *shape_name, *axes_name, *r, *g;
    TSR_CHECK(tsr_grad_ints(c, 2 * x->rank, shape, &shape_name));
    const char *rs[2] = {dy->name, shape_name};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Reshape, 2, rs, 0, NULL, 1, &r));
    TSR_CHECK(tsr_grad_ints(c, x->rank, axes, &axes_name));
    tsr_attr kd = TSR_ATTR_I("keepdims", 0);
    const char *ins[2] = {r, axes_name};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &kd, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Tile = {
    .name = "Tile",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = tile_infer,
    .ref = tile_ref,
    .grad = tile_grad,
};

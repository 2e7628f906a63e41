/* Pooling: MaxPool and AveragePool over 1 to 3 spatial dims, and the
 * global pools over all spatial dims. Every spatial case runs as a 3-D loop
 * nest (leading dims of size 1); each window is clipped to the input
 * before it is read, so padded positions never take part in a max and only
 * count for an average when count_include_pad says so. */
#include "autodiff/autodiff.h"
#include "ops/op.h"
#include "ops/window.h"

#include <math.h>
#include <string.h>

const tsr_attr_def tsr_maxpool_attrs[] = {{"auto_pad", TSR_ATTR_STRING, .s = "NOTSET"},
                                          {"ceil_mode", TSR_ATTR_INT, .i = 0},
                                          {"dilations", TSR_ATTR_INTS},
                                          {"kernel_shape", TSR_ATTR_INTS, .required = true},
                                          {"pads", TSR_ATTR_INTS},
                                          {"storage_order", TSR_ATTR_INT, .i = 0},
                                          {"strides", TSR_ATTR_INTS},
                                          {NULL}};

const tsr_attr_def tsr_avgpool_attrs[] = {{"auto_pad", TSR_ATTR_STRING, .s = "NOTSET"},
                                          {"ceil_mode", TSR_ATTR_INT, .i = 0},
                                          {"count_include_pad", TSR_ATTR_INT, .i = 0},
                                          {"dilations", TSR_ATTR_INTS},
                                          {"kernel_shape", TSR_ATTR_INTS, .required = true},
                                          {"pads", TSR_ATTR_INTS},
                                          {"strides", TSR_ATTR_INTS},
                                          {NULL}};

static tsr_status bool_attr(const tsr_node *node, const char *name, bool *out)
{
    int64_t v = tsr_attr_int(node, name);
    if (v != 0 && v != 1)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s is %lld, must be 0 or 1", name, (long long)v);
    *out = v == 1;
    return TSR_OK;
}

/* The window of a MaxPool or AveragePool node over input dims `in` (rank
 * n + 2), checking the attributes. */
static tsr_status pool_window(const tsr_node *node, int rank, const int64_t *in, tsr_window *w)
{
    size_t n;
    const int64_t *kernel = tsr_attr_ints(node, "kernel_shape", &n);
    if (rank != (int)n + 2)
        return tsr_error(TSR_ERR_SHAPE,
                         "X has rank %d but kernel_shape has %zu values (expected rank - 2)", rank,
                         n);
    if (n < 1 || n > TSR_WINDOW_MAX_DIMS)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%zu spatial dims; 1 to %d are supported", n,
                         TSR_WINDOW_MAX_DIMS);
    for (size_t i = 0; i < n; i++)
        if (kernel[i] < 1)
            return tsr_error(TSR_ERR_SHAPE, "kernel_shape[%zu] is %lld, must be >= 1", i,
                             (long long)kernel[i]);
    bool ceil_mode = false;
    TSR_CHECK(bool_attr(node, "ceil_mode", &ceil_mode));
    TSR_CHECK(tsr_window_init(node, (int)n, in, kernel, ceil_mode, w));
    for (int i = 0; i < w->n; i++) {
        int64_t span = (w->kernel[i] - 1) * w->dilation[i] + 1;
        if (w->pad_begin[i] >= span || w->pad_end[i] >= span)
            return tsr_error(TSR_ERR_SHAPE,
                             "pads %lld and %lld along spatial dim %d must be smaller than the "
                             "window %lld, or some windows would hold only padding",
                             (long long)w->pad_begin[i], (long long)w->pad_end[i], i,
                             (long long)span);
    }
    return TSR_OK;
}

static tsr_status pool_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_node *node = c->node;
    const tsr_value *x = c->inputs[0];
    bool is_max = node->op == &tsr_op_MaxPool;
    if (is_max) {
        int64_t order = tsr_attr_int(node, "storage_order");
        if (order != 0 && order != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "storage_order is %lld, must be 0 or 1",
                                   (long long)order);
        if (order == 1 && c->n_outputs > 1)
            return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                                   "storage_order 1 (column-major Indices) is not supported");
    } else {
        bool include_pad = false;
        TSR_CHECK(bool_attr(node, "count_include_pad", &include_pad));
    }
    size_t n;
    tsr_attr_ints(node, "kernel_shape", &n);
    int rank = x->rank >= 0 ? x->rank : (int)n + 2;
    int64_t in[TSR_MAX_RANK];
    for (int i = 0; i < rank; i++)
        in[i] = x->rank >= 0 ? x->dims[i] : TSR_DIM_UNKNOWN;
    if (rank < 3)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "X has rank %d; %s needs (N, C, spatial...) of rank 3 to 5", rank,
                               node->op->name);
    tsr_window w;
    TSR_CHECK(pool_window(node, rank, in + 2, &w));
    int64_t dims[TSR_MAX_RANK] = {in[0], in[1]};
    for (int i = 0; i < w.n; i++)
        dims[2 + i] = w.out[i];
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    if (c->n_outputs > 1)
        tsr_infer_set(c, 1, TSR_INT64, rank, dims);
    return TSR_OK;
}

static double pool_flops(const tsr_infer_ctx *c)
{
    const tsr_value *y = c->outputs[0];
    size_t n;
    const int64_t *kernel = tsr_attr_ints(c->node, "kernel_shape", &n);
    int64_t per_output = tsr_shape_numel((int)n, kernel);
    int64_t outputs = tsr_shape_numel(y->rank, y->dims);
    return outputs < 0 || per_output < 0 ? 0.0 : (double)outputs * (double)per_output;
}

/* Geometry of one pooling run: the window in 3-D and the plane sizes. */
typedef struct pool_geom {
    tsr_window w;
    int64_t planes, in_plane, out_plane;
    bool include_pad;
} pool_geom;

static tsr_status pool_geom_init(const tsr_kernel_ctx *k, pool_geom *g)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_window w;
    TSR_CHECK(pool_window(k->node, x->rank, x->dims + 2, &w));
    tsr_window_to_3d(&w, &g->w);
    g->planes = x->dims[0] * x->dims[1];
    g->in_plane = g->w.in[0] * g->w.in[1] * g->w.in[2];
    g->out_plane = g->w.out[0] * g->w.out[1] * g->w.out[2];
    g->include_pad =
        k->node->op == &tsr_op_AveragePool && tsr_attr_int(k->node, "count_include_pad") == 1;
    return TSR_OK;
}

static tsr_status maxpool_ref(const tsr_kernel_ctx *k)
{
    pool_geom g;
    TSR_CHECK(pool_geom_init(k, &g));
    const tsr_window *w = &g.w;
    bool f64 = k->inputs[0]->dtype == TSR_FLOAT64;
    const char *x = k->inputs[0]->data;
    char *y = k->outputs[0]->data;
    int64_t *indices = k->n_outputs > 1 ? k->outputs[1]->data : NULL;
    size_t sz = f64 ? sizeof(double) : sizeof(float);
#pragma omp parallel for schedule(static) num_threads(k->threads)
    for (int64_t p = 0; p < g.planes; p++) {
        const char *xp = x + (size_t)(p * g.in_plane) * sz;
        int64_t o = p * g.out_plane;
        for (int64_t od = 0; od < w->out[0]; od++)
            for (int64_t oh = 0; oh < w->out[1]; oh++)
                for (int64_t ow = 0; ow < w->out[2]; ow++, o++) {
                    int64_t at;
                    if (f64)
                        ((double *)y)[o] =
                            tsr_window_max_f64(w, (const double *)xp, od, oh, ow, &at);
                    else
                        ((float *)y)[o] = tsr_window_max_f32(w, (const float *)xp, od, oh, ow, &at);
                    if (indices)
                        indices[o] = at < 0 ? -1 : p * g.in_plane + at;
                }
    }
    return TSR_OK;
}

/* Mean over the window of output (od, oh, ow) of one plane, over the
 * taps tsr_window_avg_taps gives (dilated from opset 19 on). */
#define AVG_WINDOW(T, SUF)                                                                         \
    static T avg_window_##SUF(const pool_geom *g, const T *x, int64_t od, int64_t oh, int64_t ow)  \
    {                                                                                              \
        const tsr_window *w = &g->w;                                                               \
        int64_t o[3] = {od, oh, ow}, start[3], lo[3], hi[3];                                       \
        int64_t div = tsr_window_avg_taps(w, o, g->include_pad, start, lo, hi);                    \
        double sum = 0.0;                                                                          \
        for (int64_t kd = lo[0]; kd < hi[0]; kd++) {                                               \
            int64_t id = start[0] + kd * w->dilation[0];                                           \
            for (int64_t kh = lo[1]; kh < hi[1]; kh++) {                                           \
                int64_t ih = start[1] + kh * w->dilation[1];                                       \
                const T *row = x + (id * w->in[1] + ih) * w->in[2] + start[2];                     \
                for (int64_t kw = lo[2]; kw < hi[2]; kw++)                                         \
                    sum += row[kw * w->dilation[2]];                                               \
            }                                                                                      \
        }                                                                                          \
        return (T)(sum / (double)div);                                                             \
    }

AVG_WINDOW(float, f32)
AVG_WINDOW(double, f64)

static tsr_status avgpool_ref(const tsr_kernel_ctx *k)
{
    pool_geom g;
    TSR_CHECK(pool_geom_init(k, &g));
    const tsr_window *w = &g.w;
    bool f64 = k->inputs[0]->dtype == TSR_FLOAT64;
    const char *x = k->inputs[0]->data;
    char *y = k->outputs[0]->data;
    size_t sz = f64 ? sizeof(double) : sizeof(float);
#pragma omp parallel for schedule(static) num_threads(k->threads)
    for (int64_t p = 0; p < g.planes; p++) {
        const char *xp = x + (size_t)(p * g.in_plane) * sz;
        int64_t o = p * g.out_plane;
        for (int64_t od = 0; od < w->out[0]; od++)
            for (int64_t oh = 0; oh < w->out[1]; oh++)
                for (int64_t ow = 0; ow < w->out[2]; ow++, o++) {
                    if (f64)
                        ((double *)y)[o] = avg_window_f64(&g, (const double *)xp, od, oh, ow);
                    else
                        ((float *)y)[o] = avg_window_f32(&g, (const float *)xp, od, oh, ow);
                }
    }
    return TSR_OK;
}

/* ------------------------------------------------------- gradient rules */

static tsr_status emit_pool_grad(tsr_grad_ctx *c, const tsr_op_def *op, const char *a,
                                 const char *b, const char **out)
{
    tsr_attr attrs[16];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 16);
    const char *ins[2] = {a, b};
    return tsr_grad_emit(c, op, 2, ins, n_attrs, attrs, 1, out);
}

/* The maximum's position carries the gradient; Indices get none. */
static tsr_status maxpool_grad(tsr_grad_ctx *c)
{
    const char *dy = tsr_grad_dy(c, 0), *g;
    if (!dy)
        return TSR_OK;
    TSR_CHECK(emit_pool_grad(c, &tsr_op_MaxPoolGrad, tsr_grad_input(c, 0), dy, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status avgpool_grad(tsr_grad_ctx *c)
{
    const char *shape, *g;
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &shape));
    TSR_CHECK(emit_pool_grad(c, &tsr_op_AveragePoolGrad, tsr_grad_dy(c, 0), shape, &g));
    return tsr_grad_contribute(c, 0, g);
}

/* GlobalAveragePool: dY / (spatial size) broadcast over the plane;
 * GlobalMaxPool: dY split between the elements equal to the maximum. */
static tsr_status global_pool_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *dy = tsr_grad_dy(c, 0), *shape, *g;
    const tsr_value xv_copy = *tsr_grad_value(c, x), *xv = &xv_copy;
    TSR_CHECK(tsr_grad_shape(c, x, &shape));
    if (tsr_grad_node(c)->op == &tsr_op_GlobalAveragePool) {
        int spatial[TSR_MAX_RANK];
        for (int d = 2; d < xv->rank; d++)
            spatial[d - 2] = d;
        const char *inv, *scaled;
        TSR_CHECK(tsr_grad_inverse_count(c, x, xv->rank - 2, spatial, xv->dtype, &inv));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, inv, &scaled));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Expand, scaled, shape, &g));
        return tsr_grad_contribute(c, 0, g);
    }
    const char *eq, *m, *axes, *count, *share;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Equal, x, tsr_grad_output(c, 0), &eq));
    tsr_attr to = TSR_ATTR_I("to", xv->dtype);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &eq, 1, &to, 1, &m));
    int64_t spatial[TSR_MAX_RANK];
    for (int d = 2; d < xv->rank; d++)
        spatial[d - 2] = d;
    TSR_CHECK(tsr_grad_ints(c, xv->rank - 2, spatial, &axes));
    tsr_attr kd = TSR_ATTR_I("keepdims", 1);
    const char *ins[2] = {m, axes};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &kd, 1, &count));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, dy, count, &share));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, m, share, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_MaxPool = {
    .name = "MaxPool",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 2,
    .attrs = tsr_maxpool_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = pool_infer,
    .ref = maxpool_ref,
    .flops = pool_flops,
    .grad = maxpool_grad,
};

const tsr_op_def tsr_op_AveragePool = {
    .name = "AveragePool",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = tsr_avgpool_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = pool_infer,
    .ref = avgpool_ref,
    .flops = pool_flops,
    .grad = avgpool_grad,
};

/* ------------------------------------------------------------ global pools */

static tsr_status global_pool_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[0];
    if (x->rank < 0) {
        tsr_infer_set(c, 0, x->dtype, -1, NULL);
        return TSR_OK;
    }
    if (x->rank < 3)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "X has rank %d; %s needs (N, C, spatial...) of rank 3 or more",
                               x->rank, c->node->op->name);
    int64_t dims[TSR_MAX_RANK];
    for (int i = 0; i < x->rank; i++)
        dims[i] = i < 2 ? x->dims[i] : 1;
    tsr_infer_set(c, 0, x->dtype, x->rank, dims);
    return TSR_OK;
}

static double global_pool_flops(const tsr_infer_ctx *c)
{
    int64_t count = tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
    return count < 0 ? 0.0 : (double)count;
}

#define GLOBAL_POOL(T, SUF)                                                                        \
    static void global_pool_##SUF(const T *x, T *y, int64_t planes, int64_t size, bool is_max,     \
                                  int threads)                                                     \
    {                                                                                              \
        _Pragma("omp parallel for schedule(static) num_threads(threads)") for (int64_t p = 0;      \
                                                                               p < planes; p++)    \
        {                                                                                          \
            const T *xp = x + p * size;                                                            \
            if (is_max) {                                                                          \
                T best = (T)-INFINITY;                                                             \
                for (int64_t i = 0; i < size; i++)                                                 \
                    best = xp[i] > best || xp[i] != xp[i] ? xp[i] : best;                          \
                y[p] = best;                                                                       \
            } else {                                                                               \
                double sum = 0.0;                                                                  \
                for (int64_t i = 0; i < size; i++)                                                 \
                    sum += xp[i];                                                                  \
                y[p] = (T)(sum / (double)size);                                                    \
            }                                                                                      \
        }                                                                                          \
    }

GLOBAL_POOL(float, f32)
GLOBAL_POOL(double, f64)

static tsr_status global_pool_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int64_t planes = x->dims[0] * x->dims[1];
    int64_t size = tsr_shape_numel(x->rank - 2, x->dims + 2);
    bool is_max = k->node->op == &tsr_op_GlobalMaxPool;
    if (x->dtype == TSR_FLOAT64)
        global_pool_f64(x->data, k->outputs[0]->data, planes, size, is_max, k->threads);
    else
        global_pool_f32(x->data, k->outputs[0]->data, planes, size, is_max, k->threads);
    return TSR_OK;
}

const tsr_op_def tsr_op_GlobalAveragePool = {
    .name = "GlobalAveragePool",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = global_pool_infer,
    .ref = global_pool_ref,
    .flops = global_pool_flops,
    .grad = global_pool_grad,
};

const tsr_op_def tsr_op_GlobalMaxPool = {
    .name = "GlobalMaxPool",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = global_pool_infer,
    .ref = global_pool_ref,
    .flops = global_pool_flops,
    .grad = global_pool_grad,
};

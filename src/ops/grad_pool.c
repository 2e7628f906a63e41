/* Backward ops of the windowed pools (domain ai.tessera), with the
 * attributes of the pool they belong to:
 *   MaxPoolGrad(X, dY) -> dX        dY routed to each window's maximum
 *   MaxPoolGather(X, Z) -> Y        Z read at each window's maximum of X
 *   AveragePoolGrad(dY, x_shape) -> dX   dY spread evenly over each window
 * MaxPoolGrad and MaxPoolGather are each other's adjoint in their second
 * input (the position of a maximum is piecewise constant in X, so X gets
 * no gradient); AveragePoolGrad's adjoint is AveragePool. The maximum is
 * found exactly as MaxPool's kernel finds it (first one on ties). */
#include "autodiff/autodiff.h"
#include "ops/movement.h"
#include "ops/window.h"

#include <math.h>
#include <string.h>

/* The pool's window over an input of dims `in` (rank n + 2). */
static tsr_status grad_pool_window(const tsr_node *node, int rank, const int64_t *in, tsr_window *w)
{
    size_t n;
    const int64_t *kernel = tsr_attr_ints(node, "kernel_shape", &n);
    if (rank != (int)n + 2)
        return tsr_error(TSR_ERR_SHAPE, "input of rank %d for a kernel_shape of %zu values", rank,
                         n);
    return tsr_window_init(node, (int)n, in + 2, kernel, tsr_attr_int(node, "ceil_mode") == 1, w);
}

static tsr_status same_dtype(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    if (c->inputs[1]->dtype != c->inputs[0]->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "input 1 is %s but input 0 is %s",
                               tsr_dtype_name(c->inputs[1]->dtype),
                               tsr_dtype_name(c->inputs[0]->dtype));
    return TSR_OK;
}

static tsr_status maxpool_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(same_dtype(c));
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

static tsr_status maxpool_gather_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(same_dtype(c));
    const tsr_value *x = c->inputs[0];
    tsr_window w;
    TSR_CHECK(grad_pool_window(c->node, x->rank, x->dims, &w));
    int64_t dims[TSR_MAX_RANK] = {x->dims[0], x->dims[1]};
    for (int i = 0; i < w.n; i++)
        dims[2 + i] = w.out[i];
    tsr_infer_set(c, 0, x->dtype, x->rank, dims);
    return TSR_OK;
}

static tsr_status avgpool_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *dy = c->inputs[0];
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 1, "x_shape", shape, TSR_MAX_RANK, &n, &known));
    if (n >= 0 && n != dy->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "x_shape has %d entries for dY of rank %d", n,
                               dy->rank);
    for (int d = 0; d < dy->rank; d++)
        dims[d] = known ? shape[d] : d < 2 ? dy->dims[d] : TSR_DIM_UNKNOWN;
    tsr_infer_set(c, 0, dy->dtype, dy->rank, dims);
    return TSR_OK;
}

/* Concrete geometry of one run over X of dims x_dims. */
typedef struct grad_pool_geom {
    tsr_window w; /* padded to 3 spatial dims */
    int64_t planes, in_plane, out_plane;
} grad_pool_geom;

static tsr_status grad_pool_geom_init(const tsr_node *node, int rank, const int64_t *x_dims,
                                      const int64_t *y_dims, grad_pool_geom *g)
{
    tsr_window w;
    TSR_CHECK(grad_pool_window(node, rank, x_dims, &w));
    for (int i = 0; i < w.n; i++)
        if (y_dims && w.out[i] != y_dims[2 + i])
            return tsr_error(TSR_ERR_SHAPE,
                             "the pooled tensor has %lld positions along spatial dim %d, the "
                             "window gives %lld",
                             (long long)y_dims[2 + i], i, (long long)w.out[i]);
    tsr_window_to_3d(&w, &g->w);
    g->planes = x_dims[0] * x_dims[1];
    g->in_plane = g->w.in[0] * g->w.in[1] * g->w.in[2];
    g->out_plane = g->w.out[0] * g->w.out[1] * g->w.out[2];
    return TSR_OK;
}

/* clang-format off */
#define MAXPOOL_ROUTE_DEFINE(T, SUF)                                                                      \
    /* scatter: dx[argmax] += dy (dx zeroed first); else y = z[argmax]. */                         \
    static void maxpool_route_##T(const grad_pool_geom *g, const T *x, const T *src, T *dst,       \
                                  bool scatter, int threads)                                       \
    {                                                                                              \
        const tsr_window *w = &g->w;                                                               \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")                          \
        for (int64_t p = 0; p < g->planes; p++) {                                                  \
            const T *xp = x + p * g->in_plane;                                                     \
            if (scatter)                                                                           \
                for (int64_t i = 0; i < g->in_plane; i++)                                          \
                    dst[p * g->in_plane + i] = 0;                                                  \
            int64_t o = p * g->out_plane;                                                          \
            for (int64_t od = 0; od < w->out[0]; od++)                                             \
                for (int64_t oh = 0; oh < w->out[1]; oh++)                                         \
                    for (int64_t ow = 0; ow < w->out[2]; ow++, o++) {                              \
                        int64_t at;                                                                \
                        tsr_window_max_##SUF(w, xp, od, oh, ow, &at);                              \
                        if (scatter && at >= 0)                                                    \
                            dst[p * g->in_plane + at] += src[o];                                   \
                        else if (!scatter)                                                         \
                            dst[o] = at >= 0 ? src[p * g->in_plane + at] : 0;                      \
                    }                                                                              \
        }                                                                                          \
    }
/* clang-format on */

MAXPOOL_ROUTE_DEFINE(float, f32)
MAXPOOL_ROUTE_DEFINE(double, f64)

static tsr_status maxpool_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *dy = k->inputs[1];
    grad_pool_geom g;
    TSR_CHECK(grad_pool_geom_init(k->node, x->rank, x->dims, dy->dims, &g));
    if (x->dtype == TSR_FLOAT64)
        maxpool_route_double(&g, x->data, dy->data, k->outputs[0]->data, true, k->threads);
    else
        maxpool_route_float(&g, x->data, dy->data, k->outputs[0]->data, true, k->threads);
    return TSR_OK;
}

static tsr_status maxpool_gather_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *z = k->inputs[1];
    if (tsr_tensor_numel(z) != tsr_tensor_numel(x))
        return tsr_error(TSR_ERR_SHAPE, "Z must have X's shape");
    grad_pool_geom g;
    TSR_CHECK(grad_pool_geom_init(k->node, x->rank, x->dims, k->outputs[0]->dims, &g));
    if (x->dtype == TSR_FLOAT64)
        maxpool_route_double(&g, x->data, z->data, k->outputs[0]->data, false, k->threads);
    else
        maxpool_route_float(&g, x->data, z->data, k->outputs[0]->data, false, k->threads);
    return TSR_OK;
}

/* clang-format off */
/* Same window clipping and divisor as AveragePool's kernel. */
#define AVG_GRAD_DEFINE(T)                                                                         \
    static void avgpool_grad_##T(const grad_pool_geom *g, bool include_pad, const T *dy, T *dx,    \
                                 int threads)                                                      \
    {                                                                                              \
        const tsr_window *w = &g->w;                                                               \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")                          \
        for (int64_t p = 0; p < g->planes; p++) {                                                  \
            T *dxp = dx + p * g->in_plane;                                                         \
            for (int64_t i = 0; i < g->in_plane; i++)                                              \
                dxp[i] = 0;                                                                        \
            int64_t o = p * g->out_plane;                                                          \
            for (int64_t od = 0; od < w->out[0]; od++)                                             \
                for (int64_t oh = 0; oh < w->out[1]; oh++)                                         \
                    for (int64_t ow = 0; ow < w->out[2]; ow++, o++) {                              \
                        int64_t at[3] = {od, oh, ow}, start[3], lo[3], hi[3];                      \
                        int64_t div = tsr_window_avg_taps(w, at, include_pad, start, lo, hi);      \
                        if (div <= 0)                                                              \
                            continue;                                                              \
                        T share = (T)((double)dy[o] / (double)div);                                \
                        for (int64_t kd = lo[0]; kd < hi[0]; kd++) {                               \
                            int64_t id = start[0] + kd * w->dilation[0];                           \
                            for (int64_t kh = lo[1]; kh < hi[1]; kh++) {                           \
                                int64_t ih = start[1] + kh * w->dilation[1];                       \
                                T *row = dxp + (id * w->in[1] + ih) * w->in[2] + start[2];         \
                                for (int64_t kw = lo[2]; kw < hi[2]; kw++)                         \
                                    row[kw * w->dilation[2]] += share;                             \
                            }                                                                      \
                        }                                                                          \
                    }                                                                              \
        }                                                                                          \
    }
/* clang-format on */

AVG_GRAD_DEFINE(float)
AVG_GRAD_DEFINE(double)

static tsr_status avgpool_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *dy = k->inputs[0];
    tsr_tensor *dx = k->outputs[0];
    grad_pool_geom g;
    TSR_CHECK(grad_pool_geom_init(k->node, dx->rank, dx->dims, dy->dims, &g));
    bool include_pad = tsr_attr_int(k->node, "count_include_pad") == 1;
    if (dx->dtype == TSR_FLOAT64)
        avgpool_grad_double(&g, include_pad, dy->data, dx->data, k->threads);
    else
        avgpool_grad_float(&g, include_pad, dy->data, dx->data, k->threads);
    return TSR_OK;
}

/* Every window element is visited once per output element. */
static double grad_pool_flops(const tsr_infer_ctx *c, const tsr_value *pooled)
{
    size_t n;
    const int64_t *kernel = tsr_attr_ints(c->node, "kernel_shape", &n);
    int64_t per = tsr_shape_numel((int)n, kernel),
            outputs = tsr_shape_numel(pooled->rank, pooled->dims);
    return per < 0 || outputs < 0 ? 0.0 : (double)per * (double)outputs;
}

static double maxpool_grad_flops(const tsr_infer_ctx *c)
{
    return grad_pool_flops(c, c->inputs[1]);
}

static double maxpool_gather_flops(const tsr_infer_ctx *c)
{
    return grad_pool_flops(c, c->outputs[0]);
}

static double avgpool_grad_flops(const tsr_infer_ctx *c)
{
    return grad_pool_flops(c, c->inputs[0]);
}

/* ------------------------------------------------------- gradient rules */

static tsr_status emit_with_attrs(tsr_grad_ctx *c, const tsr_op_def *op, int n_in,
                                  const char *const *ins, const char **out)
{
    tsr_attr attrs[16];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 16);
    return tsr_grad_emit(c, op, n_in, ins, n_attrs, attrs, 1, out);
}

static tsr_status maxpool_grad_grad(tsr_grad_ctx *c)
{
    const char *ins[2] = {tsr_grad_input(c, 0), tsr_grad_dy(c, 0)}, *g;
    if (!tsr_grad_wants(c, 1))
        return TSR_OK;
    TSR_CHECK(emit_with_attrs(c, &tsr_op_MaxPoolGather, 2, ins, &g));
    return tsr_grad_contribute(c, 1, g);
}

static tsr_status maxpool_gather_grad(tsr_grad_ctx *c)
{
    const char *ins[2] = {tsr_grad_input(c, 0), tsr_grad_dy(c, 0)}, *g;
    if (!tsr_grad_wants(c, 1))
        return TSR_OK;
    TSR_CHECK(emit_with_attrs(c, &tsr_op_MaxPoolGrad, 2, ins, &g));
    return tsr_grad_contribute(c, 1, g);
}

static tsr_status avgpool_grad_grad(tsr_grad_ctx *c)
{
    const char *ins[1] = {tsr_grad_dy(c, 0)}, *g;
    TSR_CHECK(emit_with_attrs(c, &tsr_op_AveragePool, 1, ins, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_MaxPoolGrad = {
    .name = "MaxPoolGrad",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = tsr_maxpool_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = maxpool_grad_infer,
    .ref = maxpool_grad_ref,
    .flops = maxpool_grad_flops,
    .grad = maxpool_grad_grad,
};

const tsr_op_def tsr_op_MaxPoolGather = {
    .name = "MaxPoolGather",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = tsr_maxpool_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = maxpool_gather_infer,
    .ref = maxpool_gather_ref,
    .flops = maxpool_gather_flops,
    .grad = maxpool_gather_grad,
};

const tsr_op_def tsr_op_AveragePoolGrad = {
    .name = "AveragePoolGrad",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = tsr_avgpool_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = avgpool_grad_infer,
    .ref = avgpool_grad_ref,
    .flops = avgpool_grad_flops,
    .grad = avgpool_grad_grad,
};

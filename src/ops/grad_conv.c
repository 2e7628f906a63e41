/* Backward ops of Conv (domain ai.tessera), with Conv's attributes:
 *   ConvGradInput(dY, W, x_shape) -> dX   the adjoint of Conv in X
 *   ConvGradFilter(X, dY, w_shape) -> dW  the adjoint of Conv in W
 * Both are linear in each input, so their own gradients are Conv and each
 * other, and gradients of gradients work. The kernels are direct loops:
 * ConvGradInput runs one task per input plane (scattering every output
 * row it feeds), ConvGradFilter one per output channel (a dot product per
 * kernel tap), so no two threads write the same element. */
#include "autodiff/autodiff.h"
#include "ops/conv.h"
#include "ops/movement.h"
#include "ops/window.h"

#include <string.h>

static const tsr_attr_def conv_grad_attrs[] = {{"auto_pad", TSR_ATTR_STRING, .s = "NOTSET"},
                                               {"dilations", TSR_ATTR_INTS},
                                               {"group", TSR_ATTR_INT, .i = 1},
                                               {"kernel_shape", TSR_ATTR_INTS},
                                               {"pads", TSR_ATTR_INTS},
                                               {"strides", TSR_ATTR_INTS},
                                               {NULL}};

/* Shape inference for both ops: the output takes the shape input's value
 * where it is known, else the dims the other inputs tell. */
static tsr_status conv_grad_infer(tsr_infer_ctx *c, bool filter)
{
    const tsr_value *a = c->inputs[0], *b = c->inputs[1];
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    if (b->dtype != a->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "input 1 is %s but input 0 is %s",
                               tsr_dtype_name(b->dtype), tsr_dtype_name(a->dtype));
    int rank = a->rank >= 0 ? a->rank : b->rank;
    if (rank < 3 || rank > 2 + TSR_WINDOW_MAX_DIMS)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "inputs of rank %d; 3 to 5 are supported", rank);
    int64_t group = tsr_attr_int(c->node, "group");
    if (group < 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "group is %lld, must be >= 1", (long long)group);
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(
        tsr_infer_int_input(c, 2, filter ? "w_shape" : "x_shape", shape, TSR_MAX_RANK, &n, &known));
    if (n >= 0 && n != rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "the shape input has %d entries for rank %d", n,
                               rank);
    for (int d = 0; d < rank; d++) {
        if (known && shape[d] < 0)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "the shape input holds the negative size %lld",
                                   (long long)shape[d]);
        dims[d] = known ? shape[d] : TSR_DIM_UNKNOWN;
    }
    if (!known && !filter) {
        /* dX: batch of dY, channels of W times group. */
        dims[0] = a->dims[0];
        if (tsr_dim_known(b->dims[1]) && !tsr_size_mul(b->dims[1], group, &dims[1]))
            return tsr_infer_error(c, TSR_ERR_SHAPE, "group %lld times %lld channels passes 2^62",
                                   (long long)group, (long long)b->dims[1]);
    }
    tsr_infer_set(c, 0, a->dtype, rank, dims);
    return TSR_OK;
}

static tsr_status conv_grad_input_infer(tsr_infer_ctx *c)
{
    return conv_grad_infer(c, false);
}
static tsr_status conv_grad_filter_infer(tsr_infer_ctx *c)
{
    return conv_grad_infer(c, true);
}

/* Concrete geometry: X's and W's dims and the window between them. */
typedef struct conv_grad_geom {
    tsr_window w; /* padded to 3 spatial dims */
    int64_t batch, channels, out_channels, group, cg, mg;
    int64_t in_plane, out_plane, taps;
} conv_grad_geom;

/* The geometry of a window already computed (win.in and win.out X's and
 * dY's spatial dims). */
static tsr_status conv_grad_geom_fill(const tsr_window *win, int64_t group, const int64_t *x_dims,
                                      const int64_t *w_dims, const int64_t *y_dims,
                                      conv_grad_geom *g)
{
    memset(g, 0, sizeof *g);
    tsr_window_to_3d(win, &g->w);
    g->batch = x_dims[0];
    g->channels = x_dims[1];
    g->out_channels = w_dims[0];
    g->group = group;
    g->cg = w_dims[1];
    g->mg = g->out_channels / g->group;
    if (g->cg * g->group != g->channels || g->mg * g->group != g->out_channels ||
        y_dims[1] != g->out_channels || y_dims[0] != g->batch)
        return tsr_error(TSR_ERR_SHAPE, "X, W and dY do not fit one convolution of group %lld",
                         (long long)g->group);
    g->in_plane = g->w.in[0] * g->w.in[1] * g->w.in[2];
    g->out_plane = g->w.out[0] * g->w.out[1] * g->w.out[2];
    g->taps = g->w.kernel[0] * g->w.kernel[1] * g->w.kernel[2];
    return TSR_OK;
}

static tsr_status conv_grad_geom_init(const tsr_node *node, const int64_t *x_dims,
                                      const int64_t *w_dims, int rank, const int64_t *y_dims,
                                      conv_grad_geom *g)
{
    int n = rank - 2;
    tsr_window win;
    TSR_CHECK(tsr_window_init(node, n, x_dims + 2, w_dims + 2, false, &win));
    for (int i = 0; i < n; i++)
        if (win.out[i] != y_dims[2 + i])
            return tsr_error(TSR_ERR_SHAPE,
                             "dY has %lld positions along spatial dim %d but the convolution "
                             "gives %lld",
                             (long long)y_dims[2 + i], i, (long long)win.out[i]);
    return conv_grad_geom_fill(&win, tsr_attr_int(node, "group"), x_dims, w_dims, y_dims, g);
}

/* clang-format off */
#define CONV_GRAD_DEFINE(T)                                                                        \
    /* dX plane (b, c) += sum over its group's output channels and taps. */                        \
    static void grad_input_##T(const conv_grad_geom *g, const T *dy, const T *wt, T *dx,           \
                               int threads)                                                        \
    {                                                                                              \
        const tsr_window *w = &g->w;                                                               \
        int64_t planes = g->batch * g->channels;                                                   \
        _Pragma("omp parallel for schedule(dynamic, 1) num_threads(threads)")                     \
        for (int64_t p = 0; p < planes; p++) {                                                     \
            int64_t b = p / g->channels, ch = p % g->channels;                                     \
            int64_t grp = ch / g->cg, ci = ch % g->cg;                                             \
            T *dxp = dx + p * g->in_plane;                                                         \
            for (int64_t i = 0; i < g->in_plane; i++)                                              \
                dxp[i] = 0;                                                                        \
            for (int64_t m = grp * g->mg; m < (grp + 1) * g->mg; m++) {                            \
                const T *dyp = dy + (b * g->out_channels + m) * g->out_plane;                      \
                const T *wk = wt + (m * g->cg + ci) * g->taps;                                     \
                for (int64_t kd = 0; kd < w->kernel[0]; kd++)                                      \
                    for (int64_t kh = 0; kh < w->kernel[1]; kh++)                                  \
                        for (int64_t kw = 0; kw < w->kernel[2]; kw++) {                            \
                            T wv = wk[(kd * w->kernel[1] + kh) * w->kernel[2] + kw];               \
                            int64_t lo, hi;                                                        \
                            tsr_window_valid_range(w, 2, kw, &lo, &hi);                            \
                            if (lo >= hi)                                                          \
                                continue;                                                          \
                            int64_t off = kw * w->dilation[2] - w->pad_begin[2];                   \
                            for (int64_t od = 0; od < w->out[0]; od++) {                           \
                                int64_t id = od * w->stride[0] + kd * w->dilation[0] -             \
                                             w->pad_begin[0];                                      \
                                if (id < 0 || id >= w->in[0])                                      \
                                    continue;                                                      \
                                for (int64_t oh = 0; oh < w->out[1]; oh++) {                       \
                                    int64_t ih = oh * w->stride[1] + kh * w->dilation[1] -         \
                                                 w->pad_begin[1];                                  \
                                    if (ih < 0 || ih >= w->in[1])                                  \
                                        continue;                                                  \
                                    const T *dyr = dyp + (od * w->out[1] + oh) * w->out[2];        \
                                    T *dxr = dxp + (id * w->in[1] + ih) * w->in[2] + off;          \
                                    int64_t s = w->stride[2];                                      \
                                    for (int64_t ow = lo; ow < hi; ow++)                           \
                                        dxr[ow * s] += wv * dyr[ow];                               \
                                }                                                                  \
                            }                                                                      \
                        }                                                                          \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* dW[m, ci, taps] = sum over images and output positions. */                                  \
    static void grad_filter_##T(const conv_grad_geom *g, const T *x, const T *dy, T *dw,           \
                                int threads)                                                       \
    {                                                                                              \
        const tsr_window *w = &g->w;                                                               \
        _Pragma("omp parallel for schedule(dynamic, 1) num_threads(threads)")                     \
        for (int64_t m = 0; m < g->out_channels; m++) {                                            \
            int64_t grp = m / g->mg;                                                               \
            for (int64_t ci = 0; ci < g->cg; ci++)                                                 \
                for (int64_t kd = 0; kd < w->kernel[0]; kd++)                                      \
                    for (int64_t kh = 0; kh < w->kernel[1]; kh++)                                  \
                        for (int64_t kw = 0; kw < w->kernel[2]; kw++) {                            \
                            int64_t lo, hi;                                                        \
                            tsr_window_valid_range(w, 2, kw, &lo, &hi);                            \
                            int64_t off = kw * w->dilation[2] - w->pad_begin[2];                   \
                            double acc = 0.0;                                                      \
                            for (int64_t b = 0; b < g->batch && lo < hi; b++) {                    \
                                const T *xp = x + (b * g->channels + grp * g->cg + ci) *           \
                                                      g->in_plane;                                 \
                                const T *dyp = dy + (b * g->out_channels + m) * g->out_plane;      \
                                for (int64_t od = 0; od < w->out[0]; od++) {                       \
                                    int64_t id = od * w->stride[0] + kd * w->dilation[0] -         \
                                                 w->pad_begin[0];                                  \
                                    if (id < 0 || id >= w->in[0])                                  \
                                        continue;                                                  \
                                    for (int64_t oh = 0; oh < w->out[1]; oh++) {                   \
                                        int64_t ih = oh * w->stride[1] + kh * w->dilation[1] -     \
                                                     w->pad_begin[1];                              \
                                        if (ih < 0 || ih >= w->in[1])                              \
                                            continue;                                              \
                                        const T *dyr = dyp + (od * w->out[1] + oh) * w->out[2];    \
                                        const T *xr = xp + (id * w->in[1] + ih) * w->in[2] + off;  \
                                        int64_t s = w->stride[2];                                  \
                                        T row = 0;                                                 \
                                        for (int64_t ow = lo; ow < hi; ow++)                       \
                                            row += xr[ow * s] * dyr[ow];                           \
                                        acc += row;                                                \
                                    }                                                              \
                                }                                                                  \
                            }                                                                      \
                            int64_t at = ((m * g->cg + ci) * w->kernel[0] + kd) * w->kernel[1];    \
                            dw[(at + kh) * w->kernel[2] + kw] = (T)acc;                            \
                        }                                                                          \
        }                                                                                          \
    }
/* clang-format on */

CONV_GRAD_DEFINE(float)
CONV_GRAD_DEFINE(double)

static tsr_status conv_grad_input_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *dy = k->inputs[0], *wt = k->inputs[1];
    tsr_tensor *dx = k->outputs[0];
    conv_grad_geom g;
    TSR_CHECK(conv_grad_geom_init(k->node, dx->dims, wt->dims, dx->rank, dy->dims, &g));
    if (dx->dtype == TSR_FLOAT64)
        grad_input_double(&g, dy->data, wt->data, dx->data, k->threads);
    else
        grad_input_float(&g, dy->data, wt->data, dx->data, k->threads);
    return TSR_OK;
}

tsr_status tsr_conv_grad_input_window(const tsr_window *win, int64_t group, const tsr_tensor *dy,
                                      const tsr_tensor *wt, tsr_tensor *dx, int threads)
{
    conv_grad_geom g;
    TSR_CHECK(conv_grad_geom_fill(win, group, dx->dims, wt->dims, dy->dims, &g));
    if (dx->dtype == TSR_FLOAT64)
        grad_input_double(&g, dy->data, wt->data, dx->data, threads);
    else
        grad_input_float(&g, dy->data, wt->data, dx->data, threads);
    return TSR_OK;
}

static tsr_status conv_grad_filter_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *dy = k->inputs[1];
    tsr_tensor *dw = k->outputs[0];
    conv_grad_geom g;
    TSR_CHECK(conv_grad_geom_init(k->node, x->dims, dw->dims, x->rank, dy->dims, &g));
    if (dw->dtype == TSR_FLOAT64)
        grad_filter_double(&g, x->data, dy->data, dw->data, k->threads);
    else
        grad_filter_float(&g, x->data, dy->data, dw->data, k->threads);
    return TSR_OK;
}

/* As many multiply-adds as the forward convolution: dY's elements times
 * the taps each one meets (input channels per group x kernel). */
static double conv_grad_flops(const tsr_infer_ctx *c, const tsr_value *dy, const tsr_value *w)
{
    int64_t outputs = tsr_shape_numel(dy->rank, dy->dims);
    int64_t per_output = w->rank > 1 ? tsr_shape_numel(w->rank - 1, w->dims + 1) : -1;
    if (outputs < 0 || per_output < 0)
        return 0.0;
    return 2.0 * (double)outputs * (double)per_output;
}

static double conv_grad_input_flops(const tsr_infer_ctx *c)
{
    return conv_grad_flops(c, c->inputs[0], c->inputs[1]);
}

static double conv_grad_filter_flops(const tsr_infer_ctx *c)
{
    return conv_grad_flops(c, c->inputs[1], c->outputs[0]);
}

/* ------------------------------------------------------- gradient rules */

static tsr_status emit_conv_like(tsr_grad_ctx *c, const tsr_op_def *op, const char *a,
                                 const char *b, const char *shape_of, const char **out)
{
    tsr_attr attrs[16];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 16);
    const char *ins[3] = {a, b, NULL};
    int n_in = 2;
    if (shape_of) {
        TSR_CHECK(tsr_grad_shape(c, shape_of, &ins[2]));
        n_in = 3;
    }
    return tsr_grad_emit(c, op, n_in, ins, n_attrs, attrs, 1, out);
}

/* dX = ConvGradInput(dY, W): d(dY) = Conv(ddX, W), dW = ConvGradFilter(ddX, dY). */
static tsr_status conv_grad_input_grad(tsr_grad_ctx *c)
{
    const char *dy = tsr_grad_input(c, 0), *w = tsr_grad_input(c, 1), *ddx = tsr_grad_dy(c, 0);
    const char *g;
    if (tsr_grad_wants(c, 0)) {
        TSR_CHECK(emit_conv_like(c, &tsr_op_Conv, ddx, w, NULL, &g));
        TSR_CHECK(tsr_grad_contribute(c, 0, g));
    }
    if (tsr_grad_wants(c, 1)) {
        TSR_CHECK(emit_conv_like(c, &tsr_op_ConvGradFilter, ddx, dy, w, &g));
        TSR_CHECK(tsr_grad_contribute(c, 1, g));
    }
    return TSR_OK;
}

/* dW = ConvGradFilter(X, dY): dX = ConvGradInput(dY, ddW), d(dY) = Conv(X, ddW). */
static tsr_status conv_grad_filter_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *dy = tsr_grad_input(c, 1), *ddw = tsr_grad_dy(c, 0);
    const char *g;
    if (tsr_grad_wants(c, 0)) {
        TSR_CHECK(emit_conv_like(c, &tsr_op_ConvGradInput, dy, ddw, x, &g));
        TSR_CHECK(tsr_grad_contribute(c, 0, g));
    }
    if (tsr_grad_wants(c, 1)) {
        TSR_CHECK(emit_conv_like(c, &tsr_op_Conv, x, ddw, NULL, &g));
        TSR_CHECK(tsr_grad_contribute(c, 1, g));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_ConvGradInput = {
    .name = "ConvGradInput",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = conv_grad_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = conv_grad_input_infer,
    .ref = conv_grad_input_ref,
    .flops = conv_grad_input_flops,
    .grad = conv_grad_input_grad,
};

const tsr_op_def tsr_op_ConvGradFilter = {
    .name = "ConvGradFilter",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = conv_grad_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = conv_grad_filter_infer,
    .ref = conv_grad_filter_ref,
    .flops = conv_grad_filter_flops,
    .grad = conv_grad_filter_grad,
};

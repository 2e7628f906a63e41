/* Detail-Preserving Pooling (Saeedan et al., CVPR 2018), domain ai.tessera,
 * and its backward op. For one channel and output position p with window
 * Ω_p (its part inside the input):
 *
 *     O[p] = Σ_q w_q I[q] / Σ_q w_q,    w_q = α + ρ(I[q] − Ĩ[p])
 *     ρ(d) = (d² + ε²)^(λ/2)  (asymmetric: d clamped at 0 from below)
 *
 * with α = exp(alpha[c]), λ = exp(lambda[c]) and Ĩ the window's mean
 * (lite) or a depthwise pre-filter of X at the pooling stride (full). The
 * "ratio" normalization divides each y = d² + ε² by its window sum before
 * the power, as the authors' CUDA code does. The backward op returns dX
 * and the gradients of the raw alpha, lambda (through exp) and filter.
 * docs/dpp.md has the gradients and the numerical limits. */
#include "autodiff/autodiff.h"
#include "ops/op.h"
#include "ops/window.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define DPP_DEFAULT_EPSILON 0.031622776601683794 /* sqrt(1e-3) */

static const tsr_attr_def dpp_attrs[] = {{"auto_pad", TSR_ATTR_STRING, .s = "NOTSET"},
                                         {"ceil_mode", TSR_ATTR_INT, .i = 0},
                                         {"epsilon", TSR_ATTR_FLOAT, .f = DPP_DEFAULT_EPSILON},
                                         {"kernel_shape", TSR_ATTR_INTS},
                                         {"normalization", TSR_ATTR_STRING, .s = "paper"},
                                         {"pads", TSR_ATTR_INTS},
                                         {"strides", TSR_ATTR_INTS},
                                         {"symmetric", TSR_ATTR_INT, .i = 1},
                                         {NULL}};

/* Sizes of one run. The f_* fields describe the full variant's pre-filter
 * (zero for lite). In inference, sizes may be unknown (negative). */
typedef struct dpp_geom {
    int64_t batch, channels, in_h, in_w, out_h, out_w;
    int64_t k_h, k_w, s_h, s_w, pad_t, pad_l;
    int64_t f_h, f_w, fpad_h, fpad_w;
    bool full, symmetric, ratio;
    double eps2;
} dpp_geom;

/* The rows [h0, h1) and columns [w0, w1) of a window inside the input. */
typedef struct dpp_span {
    int64_t h0, h1, w0, w1;
} dpp_span;

static inline dpp_span dpp_window_span(const dpp_geom *g, int64_t oh, int64_t ow)
{
    int64_t h = oh * g->s_h - g->pad_t, w = ow * g->s_w - g->pad_l;
    dpp_span s = {h, h + g->k_h, w, w + g->k_w};
    s.h0 = s.h0 > 0 ? s.h0 : 0;
    s.w0 = s.w0 > 0 ? s.w0 : 0;
    s.h1 = s.h1 < g->in_h ? s.h1 : g->in_h;
    s.w1 = s.w1 < g->in_w ? s.w1 : g->in_w;
    return s;
}

/* Elements of per-thread scratch (see dpp_kernels.h). */
static size_t dpp_scratch_per_thread(const dpp_geom *g)
{
    return (size_t)(5 * g->k_h * g->k_w + 2 * g->out_h * g->out_w);
}

#define DPP_T float
#define DPP_SUF f32
#define DPP_LOG logf
#define DPP_EXP expf
#include "ops/dpp_kernels.h"
#undef DPP_T
#undef DPP_SUF
#undef DPP_LOG
#undef DPP_EXP

#define DPP_T double
#define DPP_SUF f64
#define DPP_LOG log
#define DPP_EXP exp
#include "ops/dpp_kernels.h"
#undef DPP_T
#undef DPP_SUF
#undef DPP_LOG
#undef DPP_EXP

static tsr_status bool_attr(const tsr_node *node, const char *name, bool *out)
{
    int64_t v = tsr_attr_int(node, name);
    if (v != 0 && v != 1)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s is %lld, must be 0 or 1", name, (long long)v);
    *out = v == 1;
    return TSR_OK;
}

/* The pooling window over spatial sizes in[2]. window.c reads strides from
 * the node and defaults them to 1; DPP's default is the kernel, so without
 * a strides attribute it reads a view of the node that has one. */
static tsr_status dpp_window(const tsr_node *node, const int64_t *in, const int64_t *kernel,
                             bool ceil_mode, tsr_window *w)
{
    if (tsr_attr_has(node, "strides"))
        return tsr_window_init(node, 2, in, kernel, ceil_mode, w);
    enum { MAX_ATTRS = 16 };
    tsr_node_attr attrs[MAX_ATTRS + 1];
    if (node->n_attrs > MAX_ATTRS)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%d attributes, at most %d expected", node->n_attrs,
                         MAX_ATTRS);
    memcpy(attrs, node->attrs, (size_t)node->n_attrs * sizeof *attrs);
    char name[] = "strides";
    int64_t strides[2] = {kernel[0], kernel[1]};
    attrs[node->n_attrs] =
        (tsr_node_attr){.name = name, .type = TSR_ATTR_INTS, .count = 2, .ints = strides};
    tsr_node view = *node;
    view.attrs = attrs;
    view.n_attrs = node->n_attrs + 1;
    return tsr_window_init(&view, 2, in, kernel, ceil_mode, w);
}

/* Reads and checks the attributes and sizes: x_dims [N, C, H, W] and, for
 * the full variant, f_dims [C, 1, fh, fw] (NULL for lite), of the given
 * dtype. Unknown sizes give unknown output sizes and skip the checks that
 * need them. */
static tsr_status dpp_geometry(const tsr_node *node, tsr_dtype dtype, const int64_t *x_dims,
                               const int64_t *f_dims, dpp_geom *g)
{
    memset(g, 0, sizeof *g);
    int64_t kernel[2] = {2, 2};
    size_t nk;
    const int64_t *ks = tsr_attr_ints(node, "kernel_shape", &nk);
    if (ks) {
        if (nk != 2)
            return tsr_error(TSR_ERR_SHAPE, "kernel_shape has %zu values, expected 2 (kh, kw)", nk);
        for (int i = 0; i < 2; i++) {
            if (ks[i] < 1)
                return tsr_error(TSR_ERR_SHAPE, "kernel_shape[%d] is %lld, must be >= 1", i,
                                 (long long)ks[i]);
            kernel[i] = ks[i];
        }
    }
    bool ceil_mode = false;
    TSR_CHECK(bool_attr(node, "ceil_mode", &ceil_mode));
    TSR_CHECK(bool_attr(node, "symmetric", &g->symmetric));
    double eps = tsr_attr_float(node, "epsilon");
    if (!(eps > 0.0) || !isfinite(eps))
        return tsr_error(TSR_ERR_UNSUPPORTED, "epsilon is %g, must be positive and finite", eps);
    /* y = d^2 + eps^2 must stay a normal number: a window of equal taps
     * (or, asymmetric, of taps at most their mean) has d = 0 everywhere. */
    double least = dtype == TSR_FLOAT64 ? DBL_MIN : FLT_MIN;
    if (!(eps * eps >= least))
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "epsilon is %g: its square is below the smallest normal %s number "
                         "(%g), which the weights need; epsilon must be at least %g",
                         eps, tsr_dtype_name(dtype), least, sqrt(least));
    g->eps2 = eps * eps;
    const char *norm = tsr_attr_string(node, "normalization");
    if (strcmp(norm, "ratio") != 0 && strcmp(norm, "paper") != 0)
        return tsr_error(TSR_ERR_UNSUPPORTED, "normalization '%s' is not 'paper' or 'ratio'", norm);
    g->ratio = strcmp(norm, "ratio") == 0;

    tsr_window w;
    TSR_CHECK(dpp_window(node, x_dims + 2, kernel, ceil_mode, &w));
    for (int i = 0; i < 2; i++)
        if (w.pad_begin[i] >= kernel[i] || w.pad_end[i] >= kernel[i])
            return tsr_error(TSR_ERR_SHAPE,
                             "pads %lld and %lld along spatial dim %d must be smaller than the "
                             "kernel %lld, or some windows would hold only padding",
                             (long long)w.pad_begin[i], (long long)w.pad_end[i], i,
                             (long long)kernel[i]);
    g->batch = x_dims[0];
    g->channels = x_dims[1];
    g->in_h = x_dims[2];
    g->in_w = x_dims[3];
    g->out_h = w.out[0];
    g->out_w = w.out[1];
    g->k_h = kernel[0];
    g->k_w = kernel[1];
    g->s_h = w.stride[0];
    g->s_w = w.stride[1];
    g->pad_t = w.pad_begin[0];
    g->pad_l = w.pad_begin[1];
    if (!f_dims)
        return TSR_OK;

    g->full = true;
    g->f_h = f_dims[2];
    g->f_w = f_dims[3];
    if (!tsr_dim_known(g->f_h) || !tsr_dim_known(g->f_w))
        return TSR_OK;
    if (g->f_h < 1 || g->f_w < 1)
        return tsr_error(TSR_ERR_SHAPE, "filter is %lldx%lld, must be at least 1x1",
                         (long long)g->f_h, (long long)g->f_w);
    g->fpad_h = (g->f_h - 1) / 2;
    g->fpad_w = (g->f_w - 1) / 2;
    const int64_t f_size[2] = {g->f_h, g->f_w}, f_pad[2] = {g->fpad_h, g->fpad_w};
    for (int i = 0; i < 2; i++) {
        int64_t in = x_dims[2 + i], out = w.out[i];
        if (!tsr_dim_known(in) || !tsr_dim_known(out))
            continue;
        int64_t room = in + 2 * f_pad[i] - f_size[i];
        int64_t f_out = room < 0 ? 0 : room / w.stride[i] + 1;
        if (f_out != out)
            return tsr_error(TSR_ERR_SHAPE,
                             "the %lldx%lld filter (stride %lld, zero padding %lld) gives %lld "
                             "positions along spatial dim %d of size %lld, but the pooling output "
                             "has %lld; the full variant needs both to match",
                             (long long)g->f_h, (long long)g->f_w, (long long)w.stride[i],
                             (long long)f_pad[i], (long long)f_out, i, (long long)in,
                             (long long)out);
    }
    return TSR_OK;
}

/* Checks X (input xi), alpha, lambda and the optional filter after it and
 * fills *g; x_dims gets X's dims (unknown where X's rank is). */
static tsr_status dpp_infer_inputs(tsr_infer_ctx *c, int xi, dpp_geom *g, int64_t *x_dims)
{
    TSR_CHECK(tsr_infer_require_dtype(c, xi, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[xi];
    for (int i = 0; i < c->n_inputs; i++)
        if (c->inputs[i] && c->inputs[i]->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE,
                                   "input %d ('%s') has dtype %s but X has %s; all inputs must "
                                   "share one dtype",
                                   i, c->inputs[i]->name, tsr_dtype_name(c->inputs[i]->dtype),
                                   tsr_dtype_name(x->dtype));
    if (x->rank >= 0 && x->rank != 4)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X has rank %d; DPP needs [N, C, H, W]", x->rank);
    for (int i = 0; i < 4; i++)
        x_dims[i] = x->rank == 4 ? x->dims[i] : TSR_DIM_UNKNOWN;
    static const char *const param_names[2] = {"alpha", "lambda"};
    for (int i = 0; i < 2; i++) {
        const tsr_value *p = c->inputs[xi + 1 + i];
        if (p->rank < 0)
            continue;
        if (p->rank != 1 || tsr_dims_differ(p->dims[0], x_dims[1]))
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "%s must have shape [C] = [%lld] (one per channel), got rank "
                                   "%d with %lld values",
                                   param_names[i], (long long)x_dims[1], p->rank,
                                   (long long)tsr_shape_numel(p->rank, p->dims));
    }
    const tsr_value *f = c->n_inputs > xi + 3 ? c->inputs[xi + 3] : NULL;
    int64_t f_dims[4] = {TSR_DIM_UNKNOWN, 1, TSR_DIM_UNKNOWN, TSR_DIM_UNKNOWN};
    if (f && f->rank >= 0) {
        if (f->rank != 4 || tsr_dims_differ(f->dims[0], x_dims[1]) || tsr_dims_differ(f->dims[1], 1))
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "filter must have shape [C, 1, kh, kw] with C = %lld, got rank "
                                   "%d, first dims %lld, %lld",
                                   (long long)x_dims[1], f->rank, (long long)f->dims[0],
                                   (long long)(f->rank > 1 ? f->dims[1] : -1));
        memcpy(f_dims, f->dims, sizeof f_dims);
    }
    return dpp_geometry(c->node, x->dtype, x_dims, f ? f_dims : NULL, g);
}

static tsr_status dpp_infer(tsr_infer_ctx *c)
{
    dpp_geom g;
    int64_t x_dims[4];
    TSR_CHECK(dpp_infer_inputs(c, 0, &g, x_dims));
    int64_t out[4] = {x_dims[0], x_dims[1], g.out_h, g.out_w};
    tsr_infer_set(c, 0, c->inputs[0]->dtype, 4, out);
    return TSR_OK;
}

static tsr_status dpp_grad_infer(tsr_infer_ctx *c)
{
    dpp_geom g;
    int64_t x_dims[4];
    TSR_CHECK(dpp_infer_inputs(c, 1, &g, x_dims));
    const tsr_value *dy = c->inputs[0], *x = c->inputs[1];
    int64_t out[4] = {x_dims[0], x_dims[1], g.out_h, g.out_w};
    if (dy->rank >= 0) {
        bool bad = dy->rank != 4;
        for (int i = 0; i < 4 && !bad; i++)
            bad = tsr_dims_differ(dy->dims[i], out[i]);
        if (bad) {
            char got[128], want[128];
            tsr_shape_format(got, sizeof got, dy->rank, dy->dims);
            tsr_shape_format(want, sizeof want, 4, out);
            return tsr_infer_error(c, TSR_ERR_SHAPE, "dY has shape %s; the forward output is %s",
                                   got, want);
        }
    }
    const tsr_value *f = c->n_inputs > 4 ? c->inputs[4] : NULL;
    if (c->n_outputs > 3 && !f)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "dfilter (output 3) asked for, but there is no filter input");
    int64_t per_channel[1] = {x_dims[1]};
    tsr_infer_set(c, 0, x->dtype, 4, x_dims);
    tsr_infer_set(c, 1, x->dtype, 1, per_channel);
    tsr_infer_set(c, 2, x->dtype, 1, per_channel);
    if (c->n_outputs > 3) {
        int64_t f_dims[4] = {x_dims[1], 1, g.f_h, g.f_w};
        tsr_infer_set(c, 3, x->dtype, 4, f_dims);
    }
    return TSR_OK;
}

/* Per output: a log and an exp per tap plus about ten arithmetic operations,
 * and the pre-filter's multiply-adds. */
static double dpp_flops_of(const tsr_infer_ctx *c, int xi, double factor)
{
    const tsr_value *x = c->inputs[xi];
    const tsr_value *f = c->n_inputs > xi + 3 ? c->inputs[xi + 3] : NULL;
    size_t nk;
    const int64_t *ks = tsr_attr_ints(c->node, "kernel_shape", &nk);
    double taps = ks && nk == 2 ? (double)(ks[0] * ks[1]) : 4.0;
    double f_taps = f && f->rank == 4 ? (double)(f->dims[2] * f->dims[3]) : 0.0;
    int64_t outputs = xi == 0 ? tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims)
                              : tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
    if (outputs < 0 || x->rank != 4)
        return 0.0;
    return factor * (double)outputs * (12.0 * taps + 2.0 * f_taps);
}

static double dpp_flops(const tsr_infer_ctx *c)
{
    return dpp_flops_of(c, 0, 1.0);
}
static double dpp_grad_flops(const tsr_infer_ctx *c)
{
    return dpp_flops_of(c, 1, 2.5);
}

/* Geometry and per-thread scratch of a kernel call with X at input xi. */
static tsr_status dpp_kernel_setup(const tsr_kernel_ctx *k, int xi, dpp_geom *g, void **scratch)
{
    const tsr_tensor *x = k->inputs[xi];
    const tsr_tensor *f = k->n_inputs > xi + 3 ? k->inputs[xi + 3] : NULL;
    TSR_CHECK(dpp_geometry(k->node, x->dtype, x->dims, f ? f->dims : NULL, g));
    size_t bytes = (size_t)k->threads * dpp_scratch_per_thread(g) * tsr_dtype_size(x->dtype);
    *scratch = tsr_malloc(bytes ? bytes : 1);
    return *scratch ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
}

static tsr_status dpp_ref(const tsr_kernel_ctx *k)
{
    dpp_geom g;
    void *scratch;
    TSR_CHECK(dpp_kernel_setup(k, 0, &g, &scratch));
    const tsr_tensor *x = k->inputs[0], *alpha = k->inputs[1], *lambda = k->inputs[2];
    const void *filter = g.full ? k->inputs[3]->data : NULL;
    if (x->dtype == TSR_FLOAT64)
        dpp_forward_f64(&g, x->data, alpha->data, lambda->data, filter, k->outputs[0]->data,
                        scratch, k->threads);
    else
        dpp_forward_f32(&g, x->data, alpha->data, lambda->data, filter, k->outputs[0]->data,
                        scratch, k->threads);
    free(scratch);
    return TSR_OK;
}

static tsr_status dpp_grad_ref(const tsr_kernel_ctx *k)
{
    dpp_geom g;
    void *scratch;
    TSR_CHECK(dpp_kernel_setup(k, 1, &g, &scratch));
    const tsr_tensor *dy = k->inputs[0], *x = k->inputs[1];
    const tsr_tensor *alpha = k->inputs[2], *lambda = k->inputs[3];
    const void *filter = g.full ? k->inputs[4]->data : NULL;
    int64_t planes = g.batch * g.channels, f_taps = g.f_h * g.f_w;
    /* Per-plane sums, added up over the batch afterwards in a fixed order,
     * so that results do not depend on the thread count. */
    size_t sums = (size_t)(planes * (2 + f_taps));
    double *part = tsr_malloc((sums ? sums : 1) * sizeof *part);
    if (!part) {
        free(scratch);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    double *da = part, *dl = part + planes, *df = part + 2 * planes;
    bool f64 = x->dtype == TSR_FLOAT64;
    if (f64)
        dpp_backward_f64(&g, dy->data, x->data, alpha->data, lambda->data, filter,
                         k->outputs[0]->data, da, dl, df, scratch, k->threads);
    else
        dpp_backward_f32(&g, dy->data, x->data, alpha->data, lambda->data, filter,
                         k->outputs[0]->data, da, dl, df, scratch, k->threads);
    tsr_tensor *dfilter = k->n_outputs > 3 ? k->outputs[3] : NULL;
    for (int64_t c = 0; c < g.channels; c++) {
        double sa = 0.0, sl = 0.0;
        for (int64_t n = 0; n < g.batch; n++) {
            sa += da[n * g.channels + c];
            sl += dl[n * g.channels + c];
        }
        tsr_set_f(k->outputs[1], c, sa);
        tsr_set_f(k->outputs[2], c, sl);
        for (int64_t t = 0; dfilter && t < f_taps; t++) {
            double s = 0.0;
            for (int64_t n = 0; n < g.batch; n++)
                s += df[(n * g.channels + c) * f_taps + t];
            tsr_set_f(dfilter, c * f_taps + t, s);
        }
    }
    free(part);
    free(scratch);
    return TSR_OK;
}

/* The gradient rule emits the backward op, which computes every input's
 * gradient at once; the parameters' gradients are already summed. */
static tsr_status dpp_grad_rule(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    int n_in = n->n_inputs;
    const char *ins[5] = {tsr_grad_dy(c, 0)}, *outs[4];
    for (int i = 0; i < n_in; i++)
        ins[1 + i] = tsr_grad_input(c, i);
    tsr_attr attrs[16];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 16);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_DetailPreservingPoolGrad, 1 + n_in, ins, n_attrs, attrs,
                            n_in, outs));
    for (int i = 0; i < n_in; i++)
        TSR_CHECK(tsr_grad_contribute(c, i, outs[i]));
    return TSR_OK;
}

/* Second derivatives of DPP would need the backward op's own adjoint,
 * which is not written yet. */
static tsr_status dpp_grad_grad_rule(tsr_grad_ctx *c)
{
    return tsr_grad_unsupported(c, "DetailPreservingPoolGrad has no gradient rule yet: second "
                                   "derivatives through Detail-Preserving Pooling are not "
                                   "supported");
}

const tsr_op_def tsr_op_DetailPreservingPool = {
    .name = "DetailPreservingPool",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = dpp_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = dpp_infer,
    .ref = dpp_ref,
    .flops = dpp_flops,
    .grad = dpp_grad_rule,
};

/* Inputs dY, X, alpha, lambda, [filter]; outputs dX, dalpha, dlambda,
 * [dfilter], the parameter gradients taken with respect to the raw alpha
 * and lambda and summed over the batch and positions. */
const tsr_op_def tsr_op_DetailPreservingPoolGrad = {
    .name = "DetailPreservingPoolGrad",
    .domain = "ai.tessera",
    .min_inputs = 4,
    .max_inputs = 5,
    .min_outputs = 3,
    .max_outputs = 4,
    .attrs = dpp_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = dpp_grad_infer,
    .ref = dpp_grad_ref,
    .flops = dpp_grad_flops,
    .grad = dpp_grad_grad_rule,
};

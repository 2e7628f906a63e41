/* ConvTranspose: the adjoint of Conv in its input, 1-D to 3-D, with groups,
 * dilations, strides, pads or auto_pad, output_padding and output_shape.
 * Every attribute is turned into the window of the Conv it transposes (Y
 * the Conv's input, X its output), so the reference kernel is
 * ConvGradInput's and the gradient rule is made of Conv ops: dX is a Conv
 * of dY with W, dW a ConvGradFilter (a correlation of dY with X), dB a sum
 * (dY first sliced where output_padding or output_shape add positions a
 * stride or more past the kernel's reach, which no X position feeds).
 *
 * Where ONNX leaves the split of an odd total padding to auto_pad, the
 * spec's rule is followed (SAME_UPPER puts the extra one at the end);
 * ONNX Runtime does the reverse. A total padding below zero (output_shape
 * or SAME asking for more positions than the kernel reaches) is clamped to
 * zero, as ONNX Runtime does: the extra positions get the bias only. */
#include "autodiff/autodiff.h"
#include "ops/conv.h"

#include <string.h>

static const tsr_attr_def conv_transpose_attrs[] = {{"auto_pad", TSR_ATTR_STRING, .s = "NOTSET"},
                                                    {"dilations", TSR_ATTR_INTS},
                                                    {"group", TSR_ATTR_INT, .i = 1},
                                                    {"kernel_shape", TSR_ATTR_INTS},
                                                    {"output_padding", TSR_ATTR_INTS},
                                                    {"output_shape", TSR_ATTR_INTS},
                                                    {"pads", TSR_ATTR_INTS},
                                                    {"strides", TSR_ATTR_INTS},
                                                    {NULL}};

/* The spatial sizes output_shape asks for: n values, or n + 2 with the
 * batch and channels first (ONNX Runtime reads both). NULL when absent. */
static tsr_status read_output_shape(const tsr_node *node, int n, const int64_t **out)
{
    size_t count;
    const int64_t *vals = tsr_attr_ints(node, "output_shape", &count);
    *out = NULL;
    if (!vals)
        return TSR_OK;
    if (count != (size_t)n && count != (size_t)n + 2)
        return tsr_error(TSR_ERR_SHAPE,
                         "output_shape has %zu values; expected %d (the spatial sizes) or %d",
                         count, n, n + 2);
    vals += count - (size_t)n;
    for (int i = 0; i < n; i++)
        if (vals[i] < 1 || vals[i] > TSR_MAX_TENSOR_BYTES)
            return tsr_error(TSR_ERR_SHAPE, "output_shape asks for %lld along spatial dim %d",
                             (long long)vals[i], i);
    *out = vals;
    return TSR_OK;
}

tsr_status tsr_conv_transpose_window(const tsr_node *node, int n, const int64_t *x,
                                     const int64_t *kernel, tsr_window *w, bool *pads_known)
{
    memset(w, 0, sizeof *w);
    *pads_known = true;
    if (n < 1 || n > TSR_WINDOW_MAX_DIMS)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%d spatial dims; 1 to %d are supported", n,
                         TSR_WINDOW_MAX_DIMS);
    w->n = n;
    int64_t pads[2 * TSR_WINDOW_MAX_DIMS] = {0}, adjust[TSR_WINDOW_MAX_DIMS] = {0};
    for (int i = 0; i < n; i++)
        w->stride[i] = w->dilation[i] = 1;
    TSR_CHECK(tsr_window_read_list(node, "strides", n, 1, w->stride));
    TSR_CHECK(tsr_window_read_list(node, "dilations", n, 1, w->dilation));
    TSR_CHECK(tsr_window_read_list(node, "pads", 2 * n, 0, pads));
    TSR_CHECK(tsr_window_read_list(node, "output_padding", n, 0, adjust));
    const int64_t *out_shape;
    TSR_CHECK(read_output_shape(node, n, &out_shape));

    const char *auto_pad = tsr_attr_string(node, "auto_pad");
    bool same_upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    bool same_lower = strcmp(auto_pad, "SAME_LOWER") == 0;
    bool notset = strcmp(auto_pad, "NOTSET") == 0;
    if (!same_upper && !same_lower && !notset && strcmp(auto_pad, "VALID") != 0)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID",
                         auto_pad);
    for (int i = 0; i < 2 * n; i++)
        if (pads[i] != 0 && !notset)
            return tsr_error(TSR_ERR_SHAPE, "explicit pads cannot be combined with auto_pad '%s'",
                             auto_pad);

    for (int i = 0; i < n; i++) {
        int64_t s = w->stride[i], op = adjust[i];
        if (op >= s && op >= w->dilation[i])
            return tsr_error(TSR_ERR_SHAPE,
                             "output_padding[%d] is %lld; it must be less than the stride %lld "
                             "or the dilation %lld",
                             i, (long long)op, (long long)s, (long long)w->dilation[i]);
        w->kernel[i] = kernel[i];
        w->out[i] = x[i];
        w->in[i] = TSR_DIM_UNKNOWN;
        if (tsr_dim_known(kernel[i]) && kernel[i] < 1)
            return tsr_error(TSR_ERR_SHAPE, "kernel size %lld along spatial dim %d must be >= 1",
                             (long long)kernel[i], i);
        /* reach: how far the last tap of the last input position lands,
         * s * (x - 1) + span, the output size before pads. */
        int64_t span = TSR_DIM_UNKNOWN, reach = TSR_DIM_UNKNOWN;
        if (tsr_dim_known(kernel[i]) &&
            (!tsr_size_mul(kernel[i] - 1, w->dilation[i], &span) || !tsr_size_add(span, 1, &span)))
            return tsr_error(TSR_ERR_SHAPE, "kernel %lld with dilation %lld passes 2^62",
                             (long long)kernel[i], (long long)w->dilation[i]);
        if (tsr_dim_known(span) && tsr_dim_known(x[i])) {
            if (x[i] < 1)
                return tsr_error(TSR_ERR_SHAPE, "X has %lld positions along spatial dim %d",
                                 (long long)x[i], i);
            if (!tsr_size_mul(s, x[i] - 1, &reach) || !tsr_size_add(reach, span, &reach) ||
                !tsr_size_add(reach, op, &reach))
                return tsr_error(TSR_ERR_SHAPE, "the output along spatial dim %d passes 2^62", i);
            reach -= op;
        }
        int64_t begin, end; /* ONNX's pads of the output */
        if (out_shape) {
            w->in[i] = out_shape[i];
            if (!tsr_dim_known(reach)) {
                *pads_known = false;
                continue;
            }
            int64_t total = reach + op - out_shape[i];
            total = total < 0 ? 0 : total;
            begin = same_upper ? total / 2 : total - total / 2;
            w->pad_begin[i] = begin;
            w->pad_end[i] = reach - out_shape[i] - begin;
            continue;
        }
        if (!tsr_dim_known(span)) {
            *pads_known = false;
            continue;
        }
        if (same_upper || same_lower) {
            /* out = x * s; the total padding does not depend on x. */
            int64_t total = op + span - s;
            int64_t clamped = total < 0 ? 0 : total;
            begin = same_upper ? clamped / 2 : clamped - clamped / 2;
            end = total - begin;
            if (tsr_dim_known(x[i]) && !tsr_size_mul(x[i], s, &w->in[i]))
                return tsr_error(TSR_ERR_SHAPE, "the output along spatial dim %d passes 2^62", i);
        } else {
            begin = pads[i];
            end = pads[n + i];
            if (tsr_dim_known(reach)) {
                w->in[i] = reach + op - begin - end;
                if (w->in[i] < 1)
                    return tsr_error(TSR_ERR_SHAPE,
                                     "output size %lld along spatial dim %d (input %lld, pads "
                                     "%lld and %lld)",
                                     (long long)w->in[i], i, (long long)x[i], (long long)begin,
                                     (long long)end);
            }
        }
        w->pad_begin[i] = begin;
        w->pad_end[i] = end - op;
    }
    return TSR_OK;
}

bool tsr_conv_transpose_conv_pads(const tsr_window *w, int64_t *pads)
{
    for (int i = 0; i < w->n; i++) {
        int64_t end = w->pad_end[i];
        if (end < 0 && -end >= w->stride[i])
            return false;
        pads[i] = w->pad_begin[i];
        pads[w->n + i] = end < 0 ? 0 : end;
    }
    return true;
}

/* The kernel's spatial size from W's dims and kernel_shape, which must
 * agree where both are known. */
static tsr_status kernel_shape(const tsr_node *node, const tsr_value *w, int n, int64_t *kernel)
{
    for (int i = 0; i < n; i++)
        kernel[i] = w->rank == n + 2 ? w->dims[2 + i] : TSR_DIM_UNKNOWN;
    int64_t given[TSR_WINDOW_MAX_DIMS] = {0};
    TSR_CHECK(tsr_window_read_list(node, "kernel_shape", n, 1, given));
    if (!tsr_attr_has(node, "kernel_shape"))
        return TSR_OK;
    for (int i = 0; i < n; i++) {
        if (tsr_dim_known(kernel[i]) && kernel[i] != given[i])
            return tsr_error(TSR_ERR_SHAPE, "kernel_shape[%d] is %lld but W has %lld there", i,
                             (long long)given[i], (long long)kernel[i]);
        kernel[i] = given[i];
    }
    return TSR_OK;
}

static tsr_status conv_transpose_infer(tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0], *w = c->inputs[1];
    const tsr_value *b = c->n_inputs > 2 ? c->inputs[2] : NULL;
    int64_t group;
    int rank;
    TSR_CHECK(tsr_conv_infer_inputs(c, &group, &rank));
    if (rank < 0) {
        tsr_infer_set(c, 0, x->dtype, -1, NULL);
        return TSR_OK;
    }
    int n = rank - 2;
    int64_t in_channels = w->rank >= 0 ? w->dims[0] : TSR_DIM_UNKNOWN;
    int64_t mg = w->rank >= 0 ? w->dims[1] : TSR_DIM_UNKNOWN;
    int64_t channels = x->rank >= 0 ? x->dims[1] : TSR_DIM_UNKNOWN;
    if (tsr_dim_known(in_channels) && in_channels % group != 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "W has %lld input channels, not divisible by group %lld",
                               (long long)in_channels, (long long)group);
    if (tsr_dim_known(channels) && tsr_dim_known(in_channels) && channels != in_channels)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "X has %lld channels but W (C, M/group, kernel...) has %lld",
                               (long long)channels, (long long)in_channels);
    int64_t m = TSR_DIM_UNKNOWN;
    if (tsr_dim_known(mg) && !tsr_size_mul(mg, group, &m))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "group %lld times %lld channels passes 2^62",
                               (long long)group, (long long)mg);
    if (b && b->rank >= 0) {
        if (b->rank != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "B has rank %d, expected 1", b->rank);
        if (tsr_dim_known(m) && tsr_dim_known(b->dims[0]) && b->dims[0] != m)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "B has %lld values but the output has %lld channels",
                                   (long long)b->dims[0], (long long)m);
    }
    int64_t kernel[TSR_WINDOW_MAX_DIMS], in[TSR_WINDOW_MAX_DIMS];
    TSR_CHECK(kernel_shape(c->node, w, n, kernel));
    for (int i = 0; i < n; i++)
        in[i] = x->rank >= 0 ? x->dims[2 + i] : TSR_DIM_UNKNOWN;
    tsr_window win;
    bool pads_known;
    TSR_CHECK(tsr_conv_transpose_window(c->node, n, in, kernel, &win, &pads_known));
    int64_t dims[TSR_MAX_RANK];
    dims[0] = x->rank >= 0 ? x->dims[0] : TSR_DIM_UNKNOWN;
    dims[1] = m;
    for (int i = 0; i < n; i++)
        dims[2 + i] = win.in[i];
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    return TSR_OK;
}

/* One multiply-add per element of X and tap it feeds: X's elements times
 * M/group times the kernel. */
static double conv_transpose_flops(const tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0], *w = c->inputs[1];
    int64_t inputs = tsr_shape_numel(x->rank, x->dims);
    int64_t per_input = w->rank > 1 ? tsr_shape_numel(w->rank - 1, w->dims + 1) : -1;
    if (inputs < 0 || per_input < 0)
        return 0.0;
    return 2.0 * (double)inputs * (double)per_input;
}

static tsr_status conv_transpose_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *wt = k->inputs[1];
    const tsr_tensor *bias = k->n_inputs > 2 ? k->inputs[2] : NULL;
    tsr_tensor *y = k->outputs[0];
    int n = x->rank - 2;
    tsr_window win;
    bool pads_known;
    TSR_CHECK(tsr_conv_transpose_window(k->node, n, x->dims + 2, wt->dims + 2, &win, &pads_known));
    for (int i = 0; i < n; i++)
        if (win.in[i] != y->dims[2 + i])
            return tsr_error(TSR_ERR_SHAPE, "Y has %lld positions along spatial dim %d, not %lld",
                             (long long)y->dims[2 + i], i, (long long)win.in[i]);
    TSR_CHECK(tsr_conv_grad_input_window(&win, tsr_attr_int(k->node, "group"), x, wt, y,
                                         k->threads));
    if (!bias)
        return TSR_OK;
    int64_t channels = y->dims[1], plane = tsr_shape_numel(n, y->dims + 2);
    int64_t planes = y->dims[0] * channels;
    for (int64_t p = 0; p < planes; p++) {
        double b = tsr_get_f(bias, p % channels);
        for (int64_t i = p * plane; i < (p + 1) * plane; i++)
            tsr_set_f(y, i, tsr_get_f(y, i) + b);
    }
    return TSR_OK;
}

/* What the gradient's Conv ops need: strides, dilations, group and the
 * pads of a Conv over dY whose output has X's size. Where Y reaches a
 * stride or more past the kernel's last tap (no pads >= 0 give X's size),
 * those trailing positions of dY, which only the bias reached, are sliced
 * off first: ends[] (negative, from the end) along axes[], n_sliced of them. */
typedef struct conv_transpose_grad_geom {
    int64_t strides[TSR_WINDOW_MAX_DIMS], dilations[TSR_WINDOW_MAX_DIMS];
    int64_t pads[2 * TSR_WINDOW_MAX_DIMS];
    int64_t starts[TSR_WINDOW_MAX_DIMS], ends[TSR_WINDOW_MAX_DIMS], axes[TSR_WINDOW_MAX_DIMS];
    int n_sliced;
    tsr_attr attrs[4];
} conv_transpose_grad_geom;

static tsr_status conv_transpose_grad_geom_init(tsr_grad_ctx *c, conv_transpose_grad_geom *g)
{
    const tsr_node *node = tsr_grad_node(c);
    const tsr_value *x = tsr_grad_value(c, tsr_grad_input(c, 0));
    const tsr_value *w = tsr_grad_value(c, tsr_grad_input(c, 1));
    if (x->rank < 3 || x->rank > 2 + TSR_WINDOW_MAX_DIMS)
        return tsr_grad_unsupported(c, "X's rank is not known before run time");
    int n = x->rank - 2;
    int64_t kernel[TSR_WINDOW_MAX_DIMS];
    TSR_CHECK(kernel_shape(node, w, n, kernel));
    tsr_window win;
    bool pads_known;
    TSR_CHECK(tsr_conv_transpose_window(node, n, x->dims + 2, kernel, &win, &pads_known));
    if (!pads_known)
        return tsr_grad_unsupported(c, "the pads depend on spatial sizes not known before run "
                                       "time (output_shape with unknown X or kernel sizes)");
    memset(g, 0, sizeof *g);
    for (int i = 0; i < n; i++) {
        g->strides[i] = win.stride[i];
        g->dilations[i] = win.dilation[i];
        g->pads[i] = win.pad_begin[i];
        int64_t end = win.pad_end[i];
        g->pads[n + i] = end < 0 ? 0 : end;
        if (end < 0 && -end >= win.stride[i]) {
            g->axes[g->n_sliced] = 2 + i;
            g->ends[g->n_sliced++] = end;
        }
    }
    g->attrs[0] = TSR_ATTR_INTS("strides", g->strides, (size_t)n);
    g->attrs[1] = TSR_ATTR_INTS("dilations", g->dilations, (size_t)n);
    g->attrs[2] = TSR_ATTR_INTS("pads", g->pads, (size_t)(2 * n));
    g->attrs[3] = TSR_ATTR_I("group", tsr_attr_int(node, "group"));
    return TSR_OK;
}

/* dX = Conv(dY, W), dW = ConvGradFilter(dY, X, shape(W)), dB = dY summed
 * over all axes but the channels. */
static tsr_status conv_transpose_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *w = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    const char *g;
    if (tsr_grad_wants(c, 2)) {
        int rank = tsr_grad_value(c, dy)->rank;
        int64_t axes[TSR_MAX_RANK] = {0};
        for (int d = 2; d < rank; d++)
            axes[d - 1] = d;
        const char *axes_name;
        TSR_CHECK(tsr_grad_ints(c, rank - 1, axes, &axes_name));
        tsr_attr kd = TSR_ATTR_I("keepdims", 0);
        const char *ins[2] = {dy, axes_name};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &kd, 1, &g));
        TSR_CHECK(tsr_grad_contribute(c, 2, g));
    }
    if (!tsr_grad_wants(c, 0) && !tsr_grad_wants(c, 1))
        return TSR_OK;
    conv_transpose_grad_geom geom;
    TSR_CHECK(conv_transpose_grad_geom_init(c, &geom));
    const char *reached = dy;
    if (geom.n_sliced > 0) {
        const char *ins[4] = {dy};
        TSR_CHECK(tsr_grad_ints(c, geom.n_sliced, geom.starts, &ins[1]));
        TSR_CHECK(tsr_grad_ints(c, geom.n_sliced, geom.ends, &ins[2]));
        TSR_CHECK(tsr_grad_ints(c, geom.n_sliced, geom.axes, &ins[3]));
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Slice, 4, ins, 0, NULL, 1, &reached));
    }
    if (tsr_grad_wants(c, 0)) {
        const char *ins[2] = {reached, w};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Conv, 2, ins, 4, geom.attrs, 1, &g));
        TSR_CHECK(tsr_grad_contribute(c, 0, g));
    }
    if (tsr_grad_wants(c, 1)) {
        const char *ins[3] = {reached, x, NULL};
        TSR_CHECK(tsr_grad_shape(c, w, &ins[2]));
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_ConvGradFilter, 3, ins, 4, geom.attrs, 1, &g));
        TSR_CHECK(tsr_grad_contribute(c, 1, g));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_ConvTranspose = {
    .name = "ConvTranspose",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = conv_transpose_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = conv_transpose_infer,
    .ref = conv_transpose_ref,
    .flops = conv_transpose_flops,
    .grad = conv_transpose_grad,
};

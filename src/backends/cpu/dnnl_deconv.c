/* ConvTranspose through oneDNN's deconvolution, 2-D float32, activations
 * in the backend's blocked layout (plain where oneDNN has a fast kernel
 * only for plain ones). W is in ONNX's (C, M/group, kH, kW) order, which oneDNN
 * reads as IOHW (GIOHW for groups) over the same bytes; a constant W is
 * reordered once into the format the primitive chose, a fed one (training)
 * at each run. The pads are those of the Conv the node
 * transposes (tsr_conv_transpose_window), so output_padding and
 * output_shape need no case of their own; geometries that would need a
 * negative pad stay on ref. */
#include "backends/cpu/dnnl_internal.h"

#include "ops/conv.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    tsr_dnnl_kind kind;        /* first, see dnnl_release */
    tsr_dnnl_convert wconvert; /* W into the primitive's format */
    tsr_dnnl_exec exec;
} deconv_state;

/* The Conv pads of the node's window, false where ref must run it. */
static bool deconv_window(const tsr_graph *g, const tsr_node *node, int64_t *pads)
{
    const tsr_value *x = &g->values[node->inputs[0]], *w = &g->values[node->inputs[1]];
    const tsr_value *y = &g->values[node->outputs[0]];
    tsr_window win;
    bool pads_known;
    if (tsr_conv_transpose_window(node, 2, x->dims + 2, w->dims + 2, &win, &pads_known) != TSR_OK ||
        !pads_known || win.in[0] != y->dims[2] || win.in[1] != y->dims[3])
        return false;
    return tsr_conv_transpose_conv_pads(&win, pads);
}

bool tsr_dnnl_deconv_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *x = &g->values[node->inputs[0]], *w = &g->values[node->inputs[1]];
    const tsr_value *y = &g->values[node->outputs[0]];
    if (x->dtype != TSR_FLOAT32) {
        snprintf(why, size, "X is %s; oneDNN deconvolutions run float32 (float64 runs on ref)",
                 tsr_dtype_name(x->dtype));
        return false;
    }
    if (x->rank != 4 || w->rank != 4) {
        snprintf(why, size, "rank %d; oneDNN takes 2-D transposed convolutions (rank 4) here",
                 x->rank);
        return false;
    }
    int64_t nx = tsr_shape_numel(4, x->dims), nw = tsr_shape_numel(4, w->dims),
            ny = tsr_shape_numel(4, y->dims);
    if (nx <= 0 || nw <= 0 || ny <= 0) {
        snprintf(why, size, "X, W or Y is empty or has dims unknown at plan time");
        return false;
    }
    int64_t group = tsr_attr_int(node, "group");
    int64_t pads[4];
    if (group < 1 || w->dims[0] % group != 0 || x->dims[1] != w->dims[0] ||
        y->dims[1] != w->dims[1] * group || !deconv_window(g, node, pads)) {
        snprintf(why, size,
                 "the geometry needs a negative pad (output_padding or output_shape past the "
                 "kernel) or is invalid; ref runs or reports it");
        return false;
    }
    return true;
}

/* W as oneDNN's deconvolution weights, (O, I, kH, kW) or (G, O/G, I/G,
 * kH, kW), over ONNX's (I, O/G, kH, kW) bytes. */
static tsr_status deconv_weights_md(dnnl_memory_desc_t *md, const int64_t *dims, int64_t group)
{
    int64_t ig = dims[0] / group, og = dims[1], taps = dims[2] * dims[3];
    dnnl_dims_t d, strides;
    int r = 0;
    if (group > 1) {
        d[r] = group;
        strides[r++] = ig * og * taps;
    }
    d[r] = og;
    strides[r++] = taps;
    d[r] = ig;
    strides[r++] = og * taps;
    d[r] = dims[2];
    strides[r++] = dims[3];
    d[r] = dims[3];
    strides[r++] = 1;
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_strides(md, r, d, dnnl_f32, strides),
                   "deconvolution weights descriptor");
    return TSR_OK;
}

/* The descriptors of a deconvolution: X and Y in the given layouts, W
 * plain and as the primitive may choose it, the bias plain. */
typedef struct {
    dnnl_memory_desc_t x, y, w_plain, w_any, b;
} deconv_mds;

static tsr_status deconv_primitive_desc(const tsr_graph *g, const tsr_node *node,
                                        tsr_layout x_layout, tsr_layout y_layout, deconv_mds *m,
                                        dnnl_primitive_desc_t *pd_out)
{
    const tsr_value *x = &g->values[node->inputs[0]], *w = &g->values[node->inputs[1]];
    const tsr_value *y = &g->values[node->outputs[0]];
    bool has_bias = node->n_inputs > 2 && node->inputs[2] >= 0;
    int64_t pads[4];
    if (!deconv_window(g, node, pads))
        return tsr_error(TSR_ERR_INTERNAL, "ConvTranspose: no oneDNN geometry");
    tsr_window win;
    bool pads_known;
    TSR_CHECK(tsr_conv_transpose_window(node, 2, x->dims + 2, w->dims + 2, &win, &pads_known));
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    for (int d = 0; d < 2; d++) {
        strides[d] = win.stride[d];
        dilates[d] = win.dilation[d] - 1;
        pad_l[d] = pads[d];
        pad_r[d] = pads[2 + d];
    }
    TSR_CHECK(tsr_dnnl_layout_md(&m->x, x->dims, x_layout, dnnl_f32));
    TSR_CHECK(tsr_dnnl_layout_md(&m->y, y->dims, y_layout, dnnl_f32));
    TSR_CHECK(deconv_weights_md(&m->w_plain, w->dims, tsr_attr_int(node, "group")));
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&m->w_any, m->w_plain.ndims, m->w_plain.dims,
                                                dnnl_f32, dnnl_format_tag_any),
                   "weights descriptor");
    TSR_CHECK(tsr_dnnl_plain_md(&m->b, 1, &y->dims[1], dnnl_f32));

    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    dnnl_deconvolution_desc_t desc;
    TSR_DNNL_CHECK(dnnl_dilated_deconvolution_forward_desc_init(
                       &desc, dnnl_forward_inference, dnnl_deconvolution_direct, &m->x, &m->w_any,
                       has_bias ? &m->b : NULL, &m->y, strides, dilates, pad_l, pad_r),
                   "deconvolution descriptor");
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(pd_out, &desc, attr, engine, NULL);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return tsr_dnnl_check(s, "deconvolution");
}

/* Whether oneDNN has a real (jit or gemm) kernel for these layouts, not
 * only its reference loops. */
static bool has_fast_kernel(const tsr_graph *g, const tsr_node *node, tsr_layout x_layout,
                            tsr_layout y_layout)
{
    deconv_mds m;
    dnnl_primitive_desc_t pd = NULL;
    if (deconv_primitive_desc(g, node, x_layout, y_layout, &m, &pd) != TSR_OK)
        return false;
    bool fast = tsr_dnnl_impl_is_fast(pd);
    dnnl_primitive_desc_destroy(pd);
    return fast;
}

/* X and Y in the backend's blocked layout, as the convolutions around a
 * decoder's ConvTranspose keep them (X plain when it has fewer channels
 * than a block); both plain where only the plain ones have a fast kernel. */
void tsr_dnnl_deconv_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                             uint8_t *wanted, uint8_t *produced)
{
    (void)available;
    tsr_layout blocked = tsr_cpu_layout();
    const tsr_value *x = &g->values[node->inputs[0]];
    tsr_layout x_layout = x->dims[1] < tsr_layout_block(blocked) ? TSR_LAYOUT_PLAIN : blocked;
    tsr_layout y_layout = blocked;
    if (!has_fast_kernel(g, node, x_layout, y_layout) &&
        has_fast_kernel(g, node, TSR_LAYOUT_PLAIN, TSR_LAYOUT_PLAIN)) {
        x_layout = TSR_LAYOUT_PLAIN;
        y_layout = TSR_LAYOUT_PLAIN;
    }
    wanted[0] = (uint8_t)x_layout;
    produced[0] = (uint8_t)y_layout;
}

static tsr_status deconv_build(const tsr_prepare_ctx *ctx, deconv_state *st)
{
    const tsr_node *node = ctx->node;
    bool has_bias = node->n_inputs > 2 && node->inputs[2] >= 0;
    deconv_mds m;
    dnnl_primitive_desc_t pd = NULL;
    TSR_CHECK(deconv_primitive_desc(ctx->graph, node, (tsr_layout)ctx->input_layouts[0],
                                    (tsr_layout)ctx->output_layouts[0], &m, &pd));
    st->exec.thread_scratchpad = true;
    const dnnl_memory_desc_t *w_chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    tsr_dnnl_exec *e = &st->exec;
    const tsr_value *w = &ctx->graph->values[node->inputs[1]];
    tsr_status status = tsr_dnnl_exec_arg(e, DNNL_ARG_SRC, &m.x, TSR_DNNL_FROM_INPUT, 0, NULL);
    if (status == TSR_OK && w->data) {
        status = tsr_dnnl_pack(e, DNNL_ARG_WEIGHTS, &m.w_plain, w->data, w_chosen, 1.0f);
    } else if (status == TSR_OK && dnnl_memory_desc_equal(&m.w_plain, w_chosen)) {
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS, w_chosen, TSR_DNNL_FROM_INPUT, 1, NULL);
    } else if (status == TSR_OK) {
        void *w_data = NULL;
        status = tsr_dnnl_convert_init(&st->wconvert, &m.w_plain, w_chosen, 1, &w_data);
        if (status == TSR_OK)
            status = tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS, w_chosen, TSR_DNNL_FIXED, 0, &w_data);
    }
    if (status == TSR_OK && has_bias)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_BIAS, &m.b, TSR_DNNL_FROM_INPUT, 2, NULL);
    if (status == TSR_OK)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_DST, &m.y, TSR_DNNL_FROM_OUTPUT, 0, NULL);
    if (status != TSR_OK) {
        dnnl_primitive_desc_destroy(pd);
        return status;
    }
    return tsr_dnnl_exec_finish(e, pd, "deconvolution");
}

tsr_status tsr_dnnl_deconv_prepare(const tsr_prepare_ctx *ctx, void **state_out)
{
    deconv_state *st = tsr_calloc(1, sizeof *st);
    if (!st)
        return TSR_ERR_OUT_OF_MEMORY;
    st->kind = TSR_DNNL_KIND_DECONV;
    tsr_status status = deconv_build(ctx, st);
    if (status != TSR_OK) {
        tsr_dnnl_deconv_release(st);
        return status;
    }
    *state_out = st;
    return TSR_OK;
}

tsr_status tsr_dnnl_deconv_run(void *state, const tsr_kernel_ctx *k)
{
    deconv_state *st = state;
    if (st->wconvert.active)
        TSR_CHECK(tsr_dnnl_exec_run(&st->wconvert.exec, k));
    return tsr_dnnl_exec_run(&st->exec, k);
}

const char *tsr_dnnl_deconv_kernel_name(const void *state)
{
    return ((const deconv_state *)state)->exec.impl;
}

void tsr_dnnl_deconv_release(void *state)
{
    deconv_state *st = state;
    tsr_dnnl_exec_release(&st->wconvert.exec);
    tsr_dnnl_exec_release(&st->exec);
    free(st);
}

/* Conv's backward ops through oneDNN: ai.tessera.ConvGradInput as a
 * backward-data convolution and ai.tessera.ConvGradFilter as a
 * backward-weights one, 2-D float32. The activations (X, dY, dX) are in
 * the backend's blocked layout, as the forward convolution's are: on plain
 * ones oneDNN has only its gemm kernels, whose im2col buffers make a
 * resnet18 backward several times slower than its direct blocked ones.
 * The weights stay plain (OIHW, grouped ones seen as GOIHW over the same
 * memory) in the plan and are reordered at each run into and out of the
 * format the primitive chose: in training W changes per step, so there is
 * nothing to prepack. oneDNN 2.6 builds backward primitives from a forward
 * one of the same shapes, made here only as that hint. */
#include "backends/cpu/autotune.h"
#include "backends/cpu/dnnl_internal.h"

#include "ops/window.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    tsr_dnnl_kind kind;        /* first, see dnnl_release */
    tsr_dnnl_convert wconvert; /* ConvGradInput's W into the primitive's format */
    tsr_dnnl_exec exec;
    tsr_dnnl_exec wreorder; /* ConvGradFilter's dW out of the primitive's format */
    bool wreorder_active;
    /* The kernel's name: oneDNN's implementation, with the accuracy
     * guard's error when autotuning took another than the default. */
    char name[64];
} conv_bwd_state;

static bool is_grad_input(const tsr_node *node)
{
    return node->op == &tsr_op_ConvGradInput;
}

/* The node's X, W and dY dims, whichever of them are inputs or output. */
static void conv_bwd_dims(const tsr_graph *g, const tsr_node *node, const tsr_value **x,
                          const tsr_value **w, const tsr_value **dy)
{
    const tsr_value *in0 = &g->values[node->inputs[0]], *in1 = &g->values[node->inputs[1]];
    const tsr_value *out = &g->values[node->outputs[0]];
    if (is_grad_input(node)) {
        *dy = in0;
        *w = in1;
        *x = out;
    } else {
        *x = in0;
        *dy = in1;
        *w = out;
    }
}

bool tsr_dnnl_conv_bwd_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *x, *w, *dy;
    conv_bwd_dims(g, node, &x, &w, &dy);
    if (dy->dtype != TSR_FLOAT32) {
        snprintf(why, size, "dY is %s; oneDNN convolutions run float32 (float64 runs on ref)",
                 tsr_dtype_name(dy->dtype));
        return false;
    }
    if (x->rank != 4 || w->rank != 4 || dy->rank != 4) {
        snprintf(why, size, "rank %d; oneDNN takes 2-D convolutions (rank 4) here", dy->rank);
        return false;
    }
    int64_t nx = tsr_shape_numel(4, x->dims), nw = tsr_shape_numel(4, w->dims),
            ny = tsr_shape_numel(4, dy->dims);
    if (nx < 0 || nw < 0 || ny < 0) {
        snprintf(why, size, "X, W or dY has dims unknown at plan time");
        return false;
    }
    if (nx == 0 || nw == 0 || ny == 0) {
        snprintf(why, size, "empty tensors are left to ref");
        return false;
    }
    /* Shapes that do not make one convolution are ref's to reject, with
     * its message. */
    int64_t group = tsr_attr_int(node, "group");
    tsr_window win;
    if (group < 1 || tsr_window_init(node, 2, x->dims + 2, w->dims + 2, false, &win) != TSR_OK) {
        snprintf(why, size, "the attributes do not give a valid window; ref reports it");
        return false;
    }
    if (win.out[0] != dy->dims[2] || win.out[1] != dy->dims[3] || dy->dims[0] != x->dims[0] ||
        dy->dims[1] != w->dims[0] || w->dims[0] % group != 0 || w->dims[1] * group != x->dims[1]) {
        snprintf(why, size, "X, W and dY do not fit one convolution of group %lld; ref reports it",
                 (long long)group);
        return false;
    }
    return true;
}

/* W's descriptor: OIHW, or GOIHW for groups (the same bytes). */
static tsr_status conv_bwd_weights_md(dnnl_memory_desc_t *md, const int64_t *dims, int64_t group)
{
    if (group == 1)
        return tsr_dnnl_plain_md(md, 4, dims, dnnl_f32);
    int64_t g_dims[5] = {group, dims[0] / group, dims[1], dims[2], dims[3]};
    return tsr_dnnl_plain_md(md, 5, g_dims, dnnl_f32);
}

/* The memory descriptors of a backward convolution: X and dY in the given
 * layouts, W plain and as the primitive may choose it. */
typedef struct {
    dnnl_memory_desc_t x, dy, w_plain, w_any;
} conv_bwd_mds;

/* The backward primitive descriptor of algorithm `alg` for activations in
 * these layouts (X, then dY). */
static tsr_status conv_bwd_primitive_desc(const tsr_graph *g, const tsr_node *node,
                                          tsr_layout x_layout, tsr_layout dy_layout,
                                          dnnl_alg_kind_t alg, conv_bwd_mds *m,
                                          dnnl_primitive_desc_t *pd_out)
{
    bool grad_input = is_grad_input(node);
    const tsr_value *x, *w, *dy;
    conv_bwd_dims(g, node, &x, &w, &dy);

    tsr_window win;
    TSR_CHECK(tsr_window_init(node, 2, x->dims + 2, w->dims + 2, false, &win));
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    for (int d = 0; d < 2; d++) {
        strides[d] = win.stride[d];
        dilates[d] = win.dilation[d] - 1;
        pad_l[d] = win.pad_begin[d];
        pad_r[d] = win.pad_end[d];
    }
    TSR_CHECK(tsr_dnnl_layout_md(&m->x, x->dims, x_layout, dnnl_f32));
    TSR_CHECK(tsr_dnnl_layout_md(&m->dy, dy->dims, dy_layout, dnnl_f32));
    TSR_CHECK(conv_bwd_weights_md(&m->w_plain, w->dims, tsr_attr_int(node, "group")));
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&m->w_any, m->w_plain.ndims, m->w_plain.dims,
                                                dnnl_f32, dnnl_format_tag_any),
                   "weights descriptor");
    dnnl_memory_desc_t *x_md = &m->x, *dy_md = &m->dy, *w_md = &m->w_any;

    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    dnnl_convolution_desc_t fwd_d, bwd_d;
    TSR_DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(
                       &fwd_d, dnnl_forward_training, alg, x_md, w_md, NULL,
                       dy_md, strides, dilates, pad_l, pad_r),
                   "convolution descriptor");
    if (grad_input)
        TSR_DNNL_CHECK(
            dnnl_dilated_convolution_backward_data_desc_init(
                &bwd_d, alg, x_md, w_md, dy_md, strides, dilates, pad_l, pad_r),
            "backward-data convolution descriptor");
    else
        TSR_DNNL_CHECK(dnnl_dilated_convolution_backward_weights_desc_init(
                           &bwd_d, alg, x_md, w_md, NULL, dy_md, strides,
                           dilates, pad_l, pad_r),
                       "backward-weights convolution descriptor");
    dnnl_primitive_desc_t hint;
    TSR_DNNL_CHECK(dnnl_primitive_desc_create(&hint, &fwd_d, NULL, engine, NULL),
                   "forward convolution (the backward hint)");
    /* The running thread's scratchpad, not one owned per node: the
     * gemm-based backward kernels need im2col buffers of a layer's size,
     * and one per thread is shared by every primitive (with one per node, a
     * resnet18 training step's peak memory doubled). Not oneDNN's own
     * (library) scratchpad either: that one belongs to the thread that
     * created the primitive, and plans may run on other threads. */
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &bwd_d, attr, engine, hint);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(hint);
    if (s == dnnl_success)
        *pd_out = pd;
    return tsr_dnnl_check(s, grad_input ? "backward-data convolution"
                                        : "backward-weights convolution");
}

/* Whether oneDNN has a real (jit or gemm) kernel for the node with its
 * activations in these layouts, not only its reference loops. */
static bool has_fast_kernel(const tsr_graph *g, const tsr_node *node, tsr_layout x_layout,
                            tsr_layout dy_layout)
{
    conv_bwd_mds m;
    dnnl_primitive_desc_t pd = NULL;
    if (conv_bwd_primitive_desc(g, node, x_layout, dy_layout, dnnl_convolution_direct, &m, &pd) !=
        TSR_OK)
        return false;
    bool fast = tsr_dnnl_impl_is_fast(pd);
    dnnl_primitive_desc_destroy(pd);
    return fast;
}

/* X blocked unless it has fewer channels than a block (the stem's RGB,
 * which the forward convolution also reads plain); everything plain where
 * oneDNN has no blocked kernel for the window but a gemm one. */
void tsr_dnnl_conv_bwd_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                               uint8_t *wanted, uint8_t *produced)
{
    (void)available;
    const tsr_value *x, *w, *dy;
    conv_bwd_dims(g, node, &x, &w, &dy);
    tsr_layout blocked = tsr_cpu_layout();
    tsr_layout x_layout = x->dims[1] < tsr_layout_block(blocked) ? TSR_LAYOUT_PLAIN : blocked;
    tsr_layout dy_layout = blocked;
    if (!has_fast_kernel(g, node, x_layout, dy_layout) &&
        has_fast_kernel(g, node, TSR_LAYOUT_PLAIN, TSR_LAYOUT_PLAIN)) {
        x_layout = TSR_LAYOUT_PLAIN;
        dy_layout = TSR_LAYOUT_PLAIN;
    }
    if (is_grad_input(node)) {
        wanted[0] = (uint8_t)dy_layout;
        produced[0] = (uint8_t)x_layout;
    } else {
        wanted[0] = (uint8_t)x_layout;
        wanted[1] = (uint8_t)dy_layout;
    }
}

/* A per-run reorder of dW from the primitive's buffer into output 0. */
static tsr_status conv_bwd_wreorder_init(conv_bwd_state *st, const dnnl_memory_desc_t *chosen,
                                         const dnnl_memory_desc_t *plain, void *data)
{
    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    st->wreorder_active = true;
    TSR_CHECK(tsr_dnnl_exec_arg(&st->wreorder, DNNL_ARG_FROM, chosen, TSR_DNNL_FIXED, 0, &data));
    TSR_CHECK(tsr_dnnl_exec_arg(&st->wreorder, DNNL_ARG_TO, plain, TSR_DNNL_FROM_OUTPUT, 0, NULL));
    dnnl_primitive_desc_t pd;
    TSR_DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, chosen, engine, plain, engine, NULL),
                   "weight gradient reorder");
    return tsr_dnnl_exec_finish(&st->wreorder, pd, "weight gradient reorder");
}

/* Builds the primitive of algorithm `alg`, oneDNN's first choice of its
 * implementations. */
static tsr_status conv_bwd_build(const tsr_prepare_ctx *ctx, conv_bwd_state *st,
                                 dnnl_alg_kind_t alg)
{
    const tsr_node *node = ctx->node;
    bool grad_input = is_grad_input(node);
    tsr_layout x_layout, dy_layout;
    if (grad_input) {
        dy_layout = (tsr_layout)ctx->input_layouts[0];
        x_layout = (tsr_layout)ctx->output_layouts[0];
    } else {
        x_layout = (tsr_layout)ctx->input_layouts[0];
        dy_layout = (tsr_layout)ctx->input_layouts[1];
    }
    conv_bwd_mds m;
    dnnl_primitive_desc_t pd = NULL;
    TSR_CHECK(conv_bwd_primitive_desc(ctx->graph, node, x_layout, dy_layout, alg, &m, &pd));
    st->exec.thread_scratchpad = true;
    const char *what = grad_input ? "backward-data convolution" : "backward-weights convolution";
    const dnnl_memory_desc_t *w_chosen = dnnl_primitive_desc_query_md(
        pd, grad_input ? dnnl_query_weights_md : dnnl_query_diff_weights_md, 0);
    bool w_plain = dnnl_memory_desc_equal(&m.w_plain, w_chosen);

    tsr_dnnl_exec *e = &st->exec;
    tsr_status status;
    if (grad_input) {
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_DIFF_DST, &m.dy, TSR_DNNL_FROM_INPUT, 0, NULL);
        if (status == TSR_OK && w_plain) {
            status = tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS, w_chosen, TSR_DNNL_FROM_INPUT, 1, NULL);
        } else if (status == TSR_OK) {
            void *w_data = NULL;
            status = tsr_dnnl_convert_init(&st->wconvert, &m.w_plain, w_chosen, 1, &w_data);
            if (status == TSR_OK)
                status =
                    tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS, w_chosen, TSR_DNNL_FIXED, 0, &w_data);
        }
        if (status == TSR_OK)
            status = tsr_dnnl_exec_arg(e, DNNL_ARG_DIFF_SRC, &m.x, TSR_DNNL_FROM_OUTPUT, 0, NULL);
    } else {
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_SRC, &m.x, TSR_DNNL_FROM_INPUT, 0, NULL);
        if (status == TSR_OK)
            status = tsr_dnnl_exec_arg(e, DNNL_ARG_DIFF_DST, &m.dy, TSR_DNNL_FROM_INPUT, 1, NULL);
        if (status == TSR_OK && w_plain) {
            status = tsr_dnnl_exec_arg(e, DNNL_ARG_DIFF_WEIGHTS, w_chosen, TSR_DNNL_FROM_OUTPUT, 0,
                                       NULL);
        } else if (status == TSR_OK) {
            void *w_data = NULL;
            status =
                tsr_dnnl_exec_arg(e, DNNL_ARG_DIFF_WEIGHTS, w_chosen, TSR_DNNL_OWNED, 0, &w_data);
            if (status == TSR_OK)
                status = conv_bwd_wreorder_init(st, w_chosen, &m.w_plain, w_data);
        }
    }
    if (status != TSR_OK) {
        dnnl_primitive_desc_destroy(pd);
        return status;
    }
    TSR_CHECK(tsr_dnnl_exec_finish(e, pd, what));
    snprintf(st->name, sizeof st->name, "%s", e->impl);
    return TSR_OK;
}

static conv_bwd_state *conv_bwd_new(void)
{
    conv_bwd_state *st = tsr_calloc(1, sizeof *st);
    if (st)
        st->kind = TSR_DNNL_KIND_CONV_BWD;
    return st;
}

/* The cache key: everything the timing depends on. */
static void conv_bwd_key(const tsr_prepare_ctx *ctx, char *key, size_t size)
{
    const tsr_node *node = ctx->node;
    const tsr_value *x, *w, *dy;
    conv_bwd_dims(ctx->graph, node, &x, &w, &dy);
    tsr_window win;
    if (tsr_window_init(node, 2, x->dims + 2, w->dims + 2, false, &win) != TSR_OK)
        memset(&win, 0, sizeof win);
    bool grad_input = is_grad_input(node);
    const dnnl_version_t *v = dnnl_version();
    snprintf(key, size,
             "%s onednn=%d.%d.%d isa=%d/0x%x threads=%d x=%lldx%lldx%lldx%lld "
             "w=%lldx%lldx%lldx%lld group=%lld stride=%lldx%lld dilation=%lldx%lld "
             "pad=%lld,%lld,%lld,%lld x_layout=%s dy_layout=%s",
             grad_input ? "conv-bwd-data" : "conv-bwd-weights", v->major, v->minor, v->patch,
             (int)tsr_cpu_isa(), (int)dnnl_get_effective_cpu_isa(), omp_get_max_threads(),
             (long long)x->dims[0], (long long)x->dims[1], (long long)x->dims[2],
             (long long)x->dims[3], (long long)w->dims[0], (long long)w->dims[1],
             (long long)w->dims[2], (long long)w->dims[3], (long long)tsr_attr_int(node, "group"),
             (long long)win.stride[0], (long long)win.stride[1], (long long)win.dilation[0],
             (long long)win.dilation[1], (long long)win.pad_begin[0], (long long)win.pad_begin[1],
             (long long)win.pad_end[0], (long long)win.pad_end[1],
             tsr_layout_name((tsr_layout)(grad_input ? ctx->output_layouts[0]
                                                     : ctx->input_layouts[0])),
             tsr_layout_name((tsr_layout)ctx->input_layouts[grad_input ? 0 : 1]));
}

/* Autotuning between the direct algorithm (the default, in *st) and
 * Winograd, where oneDNN has a fast Winograd kernel for the node: its
 * backward 4x3 kernels do about half the direct ones' work on 3x3
 * stride-1 convolutions (a resnet18 training step on Zen 4: the backward
 * convolutions 265 -> 164 ms). Winograd's error is checked by the
 * accuracy guard on a trial, as for the forward convolution. Leaves the
 * one chosen in *st. */
static tsr_status conv_bwd_autotune(const tsr_prepare_ctx *ctx, conv_bwd_state *st)
{
    conv_bwd_state *wino = conv_bwd_new();
    if (!wino)
        return TSR_ERR_OUT_OF_MEMORY;
    if (conv_bwd_build(ctx, wino, dnnl_convolution_winograd) != TSR_OK ||
        !strstr(wino->exec.impl, "wino")) {
        tsr_dnnl_conv_bwd_release(wino);
        return TSR_OK;
    }
    const char *names[2] = {st->exec.impl, wino->exec.impl};
    char key[512];
    conv_bwd_key(ctx, key, sizeof key);
    tsr_autotune_choice c;
    bool cached = tsr_autotune_cache_get(key, &c);
    int taken = 0;
    double seconds[2], errors[2];
    if (cached) {
        /* A name this oneDNN no longer offers keeps the default. */
        taken = strcmp(c.algorithm, names[1]) == 0;
    } else {
        tsr_autotune_trial t;
        void *states[2] = {st, wino};
        tsr_status status = tsr_autotune_trial_init(ctx, &t);
        if (status == TSR_OK)
            status = tsr_autotune_measure(2, states, tsr_dnnl_conv_bwd_run, &t, seconds, errors,
                                          &taken);
        tsr_autotune_trial_release(&t);
        if (status != TSR_OK) {
            /* Undecided: a failing run fails again when the plan runs. */
            tsr_dnnl_conv_bwd_release(wino);
            return TSR_OK;
        }
        c = tsr_autotune_record(2, names, seconds, errors, taken);
        tsr_autotune_cache_put(key, &c);
    }
    if (ctx->verbose)
        tsr_autotune_report(ctx->node->name, 2, names, seconds, &c, cached, taken);
    if (taken) {
        snprintf(wino->name, sizeof wino->name, "%s err %.1e", wino->exec.impl,
                 c.alternative_error);
        conv_bwd_state old = *st;
        *st = *wino;
        *wino = old;
    }
    tsr_dnnl_conv_bwd_release(wino);
    return TSR_OK;
}

tsr_status tsr_dnnl_conv_bwd_prepare(const tsr_prepare_ctx *ctx, void **state_out)
{
    conv_bwd_state *st = conv_bwd_new();
    if (!st)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status status = conv_bwd_build(ctx, st, dnnl_convolution_direct);
    if (status == TSR_OK && ctx->autotune)
        status = conv_bwd_autotune(ctx, st);
    if (status != TSR_OK) {
        tsr_dnnl_conv_bwd_release(st);
        return status;
    }
    *state_out = st;
    return TSR_OK;
}

tsr_status tsr_dnnl_conv_bwd_run(void *state, const tsr_kernel_ctx *k)
{
    conv_bwd_state *st = state;
    if (st->wconvert.active)
        TSR_CHECK(tsr_dnnl_exec_run(&st->wconvert.exec, k));
    TSR_CHECK(tsr_dnnl_exec_run(&st->exec, k));
    if (st->wreorder_active)
        TSR_CHECK(tsr_dnnl_exec_run(&st->wreorder, k));
    return TSR_OK;
}

const char *tsr_dnnl_conv_bwd_kernel_name(const void *state)
{
    return ((const conv_bwd_state *)state)->name;
}

void tsr_dnnl_conv_bwd_release(void *state)
{
    conv_bwd_state *st = state;
    tsr_dnnl_exec_release(&st->wconvert.exec);
    tsr_dnnl_exec_release(&st->exec);
    tsr_dnnl_exec_release(&st->wreorder);
    free(st);
}

/* 2-D convolutions through oneDNN: Conv, and ai.tessera.FusedConv whose
 * residual input Z becomes a binary-add post-op and whose activation
 * becomes eltwise post-ops. (Binary add reads Z in place; oneDNN's
 * Winograd kernels take only a sum post-op, which adds what Y holds, so
 * for them Z is copied into Y first: a candidate of autotuning.) Activations arrive and leave in the device's blocked layout,
 * or plain where oneDNN has no blocked kernel but its reference loops for
 * the shape (wide padding, as dilated convolutions have); constant weights are reordered once into
 * the format oneDNN picked, weights fed at run time (training plans' parameters) at every run. */
#include "backends/cpu/autotune.h"
#include "backends/cpu/dnnl_internal.h"

#include "ops/window.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inputs with at most this many channels stay plain: oneDNN has direct
 * kernels for an RGB image in nchw, and blocking 3 channels to 16 would
 * multiply the input's size. */
#define DNNL_PLAIN_SRC_CHANNELS 4

typedef struct conv_band conv_band;

typedef struct {
    tsr_dnnl_kind kind;  /* first, see dnnl_release */
    dnnl_alg_kind_t alg; /* the algorithm built */
    conv_band *band;     /* rows by bands in depth-first stacks; NULL: the node cannot */
    tsr_dnnl_convert convert;
    tsr_dnnl_convert wconvert; /* W fed at run time into the primitive's format */
    tsr_dnnl_exec exec;
    /* The kernel's name: oneDNN's implementation, with the accuracy
     * guard's error when autotuning took another than the default. */
    char name[64];
    /* > 1: a primitive for one image, run on each of this many in turn
     * (one_image_applies), the activations that many bytes apart. */
    int64_t images;
    bool flushes_nan;      /* the activation's post-op (conv_act_flushes_nan) */
    size_t image_bytes[4]; /* of X, -, -, Z (by input) */
    size_t y_image_bytes;
    bool z_sum; /* Z is added by a sum post-op: copied into Y before the primitive runs */
} conv_state;

/* The algorithms whose implementations autotuning chooses from.
 * (dnnl_convolution_auto is no candidate of its own: oneDNN resolves it
 * to one of these by a fixed heuristic.) */
static const dnnl_alg_kind_t conv_algs[] = {dnnl_convolution_direct, dnnl_convolution_winograd};

/* Appended to the name of an implementation that adds Z by a sum
 * post-op, in kernel names and the autotuning cache. */
#define SUM_SUFFIX "+sum"

/* FusedConv's activations as oneDNN eltwise post-ops, with the ONNX
 * defaults of their parameters. HardSigmoid has no oneDNN 2.6 eltwise:
 * it becomes linear(alpha, beta) then clip(0, 1). */
static const struct {
    const char *name;
    dnnl_alg_kind_t alg;
    double alpha, beta;
} conv_acts[] = {{"Relu", dnnl_eltwise_relu, 0.0, 0.0},
                 {"LeakyRelu", dnnl_eltwise_relu, 0.01, 0.0},
                 {"Clip", dnnl_eltwise_clip, -INFINITY, INFINITY},
                 {"Sigmoid", dnnl_eltwise_logistic, 0.0, 0.0},
                 {"HardSigmoid", dnnl_eltwise_linear, 0.2, 0.5},
                 {"HardSwish", dnnl_eltwise_hardswish, 0.0, 0.0},
                 {"Tanh", dnnl_eltwise_tanh, 0.0, 0.0},
                 {"Silu", dnnl_eltwise_swish, 1.0, 0.0}};

static bool is_fused(const tsr_node *node)
{
    return node->op == &tsr_op_FusedConv;
}

/* -1 for no activation, -2 for one oneDNN does not have. */
static int conv_act_index(const tsr_node *node)
{
    if (!is_fused(node))
        return -1;
    const char *name = tsr_attr_string(node, "activation");
    if (!name[0])
        return -1;
    for (int i = 0; i < (int)(sizeof conv_acts / sizeof conv_acts[0]); i++)
        if (strcmp(conv_acts[i].name, name) == 0)
            return i;
    return -2;
}

/* Whether the activation's post-op can give a finite value for NaN: oneDNN
 * 2.6 computes ReLU with alpha 0 as max(x, 0) and clip (HardSigmoid's
 * too) as max and min, which return the bound when x is NaN; its other
 * eltwise kernels keep NaN. */
static bool conv_act_flushes_nan(const tsr_node *node)
{
    int act = conv_act_index(node);
    if (act < 0)
        return false;
    dnnl_alg_kind_t alg = conv_acts[act].alg;
    if (alg == dnnl_eltwise_clip || alg == dnnl_eltwise_linear)
        return true;
    double alpha = tsr_attr_has(node, "activation_alpha") ? tsr_attr_float(node, "activation_alpha")
                                                          : conv_acts[act].alpha;
    return alg == dnnl_eltwise_relu && alpha == 0.0;
}

bool tsr_dnnl_conv_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    const tsr_value *x = &g->values[node->inputs[0]];
    if (x->dtype != TSR_FLOAT32) {
        snprintf(why, size, "X is %s; oneDNN convolutions run float32 (float64 runs on ref)",
                 tsr_dtype_name(x->dtype));
        return false;
    }
    if (x->rank != 4) {
        snprintf(why, size, "X has rank %d; oneDNN takes 2-D convolutions (rank 4) here", x->rank);
        return false;
    }
    const tsr_value *y = &g->values[node->outputs[0]];
    if (tsr_shape_numel(y->rank, y->dims) == 0 || tsr_shape_numel(x->rank, x->dims) == 0) {
        snprintf(why, size, "empty tensors are left to ref");
        return false;
    }
    if (conv_act_index(node) == -2) {
        snprintf(why, size, "activation '%s' has no oneDNN post-op",
                 tsr_attr_string(node, "activation"));
        return false;
    }
    /* Constant operands holding NaN (the plan checks only its inputs). */
    const bool flushes = conv_act_flushes_nan(node);
    for (int i = 1; flushes && i < node->n_inputs; i++) {
        const tsr_value *v = node->inputs[i] >= 0 ? &g->values[node->inputs[i]] : NULL;
        if (!v || !v->data || v->dtype != TSR_FLOAT32)
            continue;
        const float *d = v->data;
        int64_t n = tsr_shape_numel(v->rank, v->dims);
        int nan = 0;
#pragma omp simd reduction(| : nan)
        for (int64_t j = 0; j < n; j++)
            nan |= d[j] != d[j];
        if (nan) {
            snprintf(why, size,
                     "constant input %d ('%s') holds NaN, which oneDNN's fused %s would turn "
                     "into numbers",
                     i, v->name, tsr_attr_string(node, "activation"));
            return false;
        }
    }
    return true;
}

/* Z, when z_md is given, is added by a binary post-op reading it, or by
 * a sum post-op (z_sum) adding what the destination holds. */
static tsr_status conv_post_ops(const tsr_node *node, const dnnl_memory_desc_t *z_md, bool z_sum,
                                dnnl_primitive_attr_t attr)
{
    int act = conv_act_index(node);
    if (!z_md && act < 0)
        return TSR_OK;
    dnnl_post_ops_t ops;
    TSR_DNNL_CHECK(dnnl_post_ops_create(&ops), "post-ops creation");
    dnnl_status_t s = dnnl_success;
    if (z_md)
        s = z_sum ? dnnl_post_ops_append_sum(ops, 1.0f)
                  : dnnl_post_ops_append_binary(ops, dnnl_binary_add, z_md);
    if (s == dnnl_success && act >= 0) {
        double alpha = tsr_attr_has(node, "activation_alpha")
                           ? tsr_attr_float(node, "activation_alpha")
                           : conv_acts[act].alpha;
        double beta = tsr_attr_has(node, "activation_beta")
                          ? tsr_attr_float(node, "activation_beta")
                          : conv_acts[act].beta;
        s = dnnl_post_ops_append_eltwise(ops, 1.0f, conv_acts[act].alg, (float)alpha, (float)beta);
        if (s == dnnl_success && conv_acts[act].alg == dnnl_eltwise_linear)
            s = dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_clip, 0.0f, 1.0f);
    }
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_post_ops(attr, ops);
    dnnl_post_ops_destroy(ops);
    return tsr_dnnl_check(s, "convolution post-ops");
}

/* The memory descriptors of a convolution, and its oneDNN operation
 * descriptor and attributes (post-ops; the caller destroys them) for
 * activations in the given layouts (input 0, output 0, input 3 for Z),
 * src and weights in f32 or bf16, Z added by a sum post-op (z_sum) or a
 * binary one. */
typedef struct {
    dnnl_memory_desc_t src, user_src, wei, wei_plain, bias, dst, z;
    bool has_b, has_z;
} conv_mds;

static tsr_status conv_op_desc(const tsr_graph *g, const tsr_node *node, tsr_layout src_layout,
                               tsr_layout dst_layout, tsr_layout z_layout, bool bf16,
                               bool one_image, dnnl_alg_kind_t alg, bool z_sum, conv_mds *m,
                               dnnl_convolution_desc_t *cd, dnnl_primitive_attr_t *attr_out)
{
    const tsr_value *w = &g->values[node->inputs[1]];
    int64_t x_dims[4], y_dims[4];
    memcpy(x_dims, g->values[node->inputs[0]].dims, sizeof x_dims);
    memcpy(y_dims, g->values[node->outputs[0]].dims, sizeof y_dims);
    if (one_image)
        x_dims[0] = y_dims[0] = 1;
    m->has_b = node->n_inputs > 2 && node->inputs[2] >= 0;
    m->has_z = node->n_inputs > 3 && node->inputs[3] >= 0;

    tsr_window win;
    TSR_CHECK(tsr_window_init(node, 2, x_dims + 2, w->dims + 2, false, &win));
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    for (int d = 0; d < 2; d++) {
        strides[d] = win.stride[d];
        dilates[d] = win.dilation[d] - 1;
        pad_l[d] = win.pad_begin[d];
        pad_r[d] = win.pad_end[d];
    }
    int64_t group = tsr_attr_int(node, "group");
    dnnl_data_type_t in_type = bf16 ? dnnl_bf16 : dnnl_f32;

    TSR_CHECK(tsr_dnnl_layout_md(&m->user_src, x_dims, src_layout, dnnl_f32));
    TSR_CHECK(tsr_dnnl_layout_md(&m->src, x_dims, src_layout, in_type));
    TSR_CHECK(tsr_dnnl_layout_md(&m->dst, y_dims, dst_layout, dnnl_f32));
    if (m->has_z)
        TSR_CHECK(tsr_dnnl_layout_md(&m->z, y_dims, z_layout, dnnl_f32));
    int wei_rank = group > 1 ? 5 : 4;
    int64_t wei_dims[5];
    if (group > 1) {
        wei_dims[0] = group;
        wei_dims[1] = w->dims[0] / group;
        memcpy(wei_dims + 2, w->dims + 1, 3 * sizeof(int64_t));
    } else {
        memcpy(wei_dims, w->dims, 4 * sizeof(int64_t));
    }
    TSR_CHECK(tsr_dnnl_plain_md(&m->wei_plain, wei_rank, wei_dims, dnnl_f32));
    dnnl_dims_t wd;
    memcpy(wd, wei_dims, sizeof(int64_t) * (size_t)wei_rank);
    TSR_DNNL_CHECK(
        dnnl_memory_desc_init_by_tag(&m->wei, wei_rank, wd, in_type, dnnl_format_tag_any),
        "weights descriptor");
    if (m->has_b)
        TSR_CHECK(tsr_dnnl_plain_md(&m->bias, 1, w->dims, dnnl_f32));

    TSR_DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(
                       cd, dnnl_forward_inference, alg, &m->src, &m->wei,
                       m->has_b ? &m->bias : NULL, &m->dst, strides, dilates, pad_l, pad_r),
                   "convolution descriptor");
    dnnl_primitive_attr_t attr;
    TSR_DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attribute creation");
    tsr_status status =
        tsr_dnnl_check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
                       "scratchpad mode");
    if (status == TSR_OK)
        status = conv_post_ops(node, m->has_z ? &m->z : NULL, z_sum, attr);
    if (status != TSR_OK) {
        dnnl_primitive_attr_destroy(attr);
        return status;
    }
    *attr_out = attr;
    return TSR_OK;
}

/* Calls visit(pd, arg) on each implementation oneDNN has for cd, in its
 * order of preference, until visit returns true: that one is kept in
 * *pd_out, NULL when none was. */
static void conv_each_impl(const dnnl_convolution_desc_t *cd, const_dnnl_primitive_attr_t attr,
                           dnnl_engine_t engine, bool (*visit)(const_dnnl_primitive_desc_t, void *),
                           void *arg, dnnl_primitive_desc_t *pd_out)
{
    *pd_out = NULL;
    dnnl_primitive_desc_iterator_t it;
    if (dnnl_primitive_desc_iterator_create(&it, cd, attr, engine, NULL) != dnnl_success)
        return;
    do {
        dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it);
        if (pd && visit(pd, arg))
            *pd_out = pd;
        else
            dnnl_primitive_desc_destroy(pd);
    } while (!*pd_out && dnnl_primitive_desc_iterator_next(it) == dnnl_success);
    dnnl_primitive_desc_iterator_destroy(it);
}

static bool impl_is_named(const_dnnl_primitive_desc_t pd, void *name)
{
    return strcmp(tsr_dnnl_impl_name(pd), name) == 0;
}

/* The oneDNN primitive descriptor of the convolution: of the
 * implementation named `impl`, or of oneDNN's first choice for NULL. */
static tsr_status conv_primitive_desc(const tsr_graph *g, const tsr_node *node,
                                      tsr_layout src_layout, tsr_layout dst_layout,
                                      tsr_layout z_layout, bool bf16, bool one_image,
                                      dnnl_alg_kind_t alg, bool z_sum, const char *impl,
                                      conv_mds *m, dnnl_primitive_desc_t *pd_out)
{
    dnnl_convolution_desc_t cd;
    dnnl_primitive_attr_t attr;
    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    TSR_CHECK(conv_op_desc(g, node, src_layout, dst_layout, z_layout, bf16, one_image, alg, z_sum,
                           m, &cd, &attr));
    tsr_status status = TSR_OK;
    if (!impl) {
        status = tsr_dnnl_check(dnnl_primitive_desc_create(pd_out, &cd, attr, engine, NULL),
                                bf16 ? "bf16 convolution" : "convolution");
    } else {
        conv_each_impl(&cd, attr, engine, impl_is_named, (void *)impl, pd_out);
        if (!*pd_out)
            status = tsr_error(TSR_ERR_UNSUPPORTED,
                               "oneDNN has no convolution implementation '%s' for this node", impl);
    }
    dnnl_primitive_attr_destroy(attr);
    return status;
}

/* Whether oneDNN has a real (jit or gemm) f32 kernel for the node with
 * its activations in these layouts (for one of its images), not only its
 * reference loops. */
static bool has_fast_kernel(const tsr_graph *g, const tsr_node *node, tsr_layout src_layout,
                            tsr_layout dst_layout, bool one_image)
{
    conv_mds m;
    dnnl_primitive_desc_t pd = NULL;
    if (conv_primitive_desc(g, node, src_layout, dst_layout, dst_layout, false, one_image,
                            dnnl_convolution_direct, false, NULL, &m, &pd) != TSR_OK)
        return false;
    bool fast = tsr_dnnl_impl_is_fast(pd);
    dnnl_primitive_desc_destroy(pd);
    return fast;
}

void tsr_dnnl_conv_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced)
{
    (void)available;
    tsr_layout blocked = tsr_cpu_layout();
    const tsr_value *x = &g->values[node->inputs[0]];
    tsr_layout src = x->dims[1] <= DNNL_PLAIN_SRC_CHANNELS ? TSR_LAYOUT_PLAIN : blocked;
    tsr_layout dst = blocked;
    /* oneDNN's blocked direct kernels take no padding wider than a few
     * columns (a dilated 3x3 with pads 12 on AVX2) and fall back to its
     * reference loops, orders of magnitude slower; its gemm convolution
     * takes any padding and dilation, on plain activations. Where the
     * blocked kernel takes one image but not the batch, the node runs
     * image by image instead (one_image_applies). */
    if (!has_fast_kernel(g, node, src, dst, false) &&
        !(x->dims[0] > 1 && has_fast_kernel(g, node, src, dst, true)) &&
        has_fast_kernel(g, node, TSR_LAYOUT_PLAIN, TSR_LAYOUT_PLAIN, false)) {
        src = TSR_LAYOUT_PLAIN;
        dst = TSR_LAYOUT_PLAIN;
    }
    wanted[0] = (uint8_t)src;
    produced[0] = (uint8_t)dst;
    if (node->n_inputs > 3)
        wanted[3] = (uint8_t)dst;
}

/* Builds the primitive with src and weights in f32 or bf16, of oneDNN's
 * implementation `impl` of the algorithm (NULL: its first choice), Z
 * added by a sum post-op (z_sum: for the whole batch at once, Z in Y's
 * layout) or a binary one. */
static tsr_status conv_build(const tsr_prepare_ctx *ctx, conv_state *st, bool bf16,
                             bool one_image, dnnl_alg_kind_t alg, bool z_sum, const char *impl)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    const tsr_value *w = &g->values[node->inputs[1]];
    bool has_z = node->n_inputs > 3 && node->inputs[3] >= 0;
    conv_mds m;
    dnnl_primitive_desc_t pd = NULL;
    TSR_CHECK(conv_primitive_desc(
        g, node, (tsr_layout)ctx->input_layouts[0], (tsr_layout)ctx->output_layouts[0],
        has_z ? (tsr_layout)ctx->input_layouts[3] : TSR_LAYOUT_PLAIN, bf16, one_image, alg,
        z_sum, impl, &m, &pd));
    st->images = one_image ? g->values[node->inputs[0]].dims[0] : 1;
    st->image_bytes[0] = dnnl_memory_desc_get_size(&m.user_src);
    st->image_bytes[3] = m.has_z ? dnnl_memory_desc_get_size(&m.z) : 0;
    st->y_image_bytes = dnnl_memory_desc_get_size(&m.dst);
    tsr_status status = TSR_OK;
    tsr_dnnl_exec *e = &st->exec;
    void *src_data = NULL;
    if (bf16)
        status = tsr_dnnl_convert_init(&st->convert, &m.user_src, &m.src, 0, &src_data);
    if (status == TSR_OK)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_SRC, &m.src,
                                   bf16 ? TSR_DNNL_FIXED : TSR_DNNL_FROM_INPUT, 0, &src_data);
    const dnnl_memory_desc_t *wei_chosen =
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (status == TSR_OK && w->data) {
        status = tsr_dnnl_pack(e, DNNL_ARG_WEIGHTS, &m.wei_plain, w->data, wei_chosen, 1.0f);
    } else if (status == TSR_OK && dnnl_memory_desc_equal(&m.wei_plain, wei_chosen)) {
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS, wei_chosen, TSR_DNNL_FROM_INPUT, 1, NULL);
    } else if (status == TSR_OK) {
        void *wei_data = NULL;
        status = tsr_dnnl_convert_init(&st->wconvert, &m.wei_plain, wei_chosen, 1, &wei_data);
        if (status == TSR_OK)
            status =
                tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS, wei_chosen, TSR_DNNL_FIXED, 0, &wei_data);
    }
    if (status == TSR_OK && m.has_b)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_BIAS, &m.bias, TSR_DNNL_FROM_INPUT, 2, NULL);
    if (status == TSR_OK)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_DST, &m.dst, TSR_DNNL_FROM_OUTPUT, 0, NULL);
    if (status == TSR_OK && has_z && !z_sum)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, &m.z,
                                   TSR_DNNL_FROM_INPUT, 3, NULL);
    if (status != TSR_OK) {
        dnnl_primitive_desc_destroy(pd);
        return status;
    }
    /* Winograd's scratchpad at batch 8 on a 224x224 plane is over 100 MB:
     * one per thread, shared by the plan's convolutions, not one each. */
    e->thread_scratchpad = true;
    TSR_CHECK(tsr_dnnl_exec_finish(e, pd, "convolution"));
    st->z_sum = has_z && z_sum;
    snprintf(st->name, sizeof st->name, "%s%s%s", e->impl, st->z_sum ? SUM_SUFFIX : "",
             st->images > 1 ? "/image" : "");
    st->alg = alg;
    return TSR_OK;
}

static void conv_clear(conv_state *st)
{
    tsr_dnnl_exec_release(&st->convert.exec);
    tsr_dnnl_exec_release(&st->wconvert.exec);
    tsr_dnnl_exec_release(&st->exec);
    st->convert.active = false;
    st->wconvert.active = false;
}

/* One candidate of autotuning: an algorithm, oneDNN's name of one of
 * its implementations for the node, and how it adds Z; its label (the
 * name, SUM_SUFFIX after it for a sum post-op) names it in the cache. */
typedef struct {
    dnnl_alg_kind_t alg;
    bool z_sum;
    char impl[32];
    char label[40];
} conv_candidate;

typedef struct {
    dnnl_alg_kind_t alg;
    bool z_sum;
    const char *isa; /* the default's ISA suffix (":avx512_core"), or NULL */
    conv_candidate *list;
    int n;
} candidate_list;

static bool same_suffix(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

/* Adds each fast implementation for the default's ISA not listed yet
 * (with either post-op for Z), up to the most the timing takes; never
 * keeps pd. (Kernels for a narrower ISA than oneDNN's first choice, its
 * sse41 ones where it took avx2, do not win: timing them would only
 * lengthen the plan.) */
static bool add_candidate(const_dnnl_primitive_desc_t pd, void *arg)
{
    candidate_list *l = arg;
    const char *name = tsr_dnnl_impl_name(pd);
    if (!tsr_dnnl_impl_is_fast(pd) || l->n == TSR_AUTOTUNE_MAX_CANDIDATES ||
        !same_suffix(strrchr(name, ':'), l->isa))
        return false;
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->list[i].impl, name) == 0)
            return false;
    conv_candidate *c = &l->list[l->n++];
    c->alg = l->alg;
    c->z_sum = l->z_sum;
    snprintf(c->impl, sizeof c->impl, "%s", name);
    snprintf(c->label, sizeof c->label, "%s%s", name, l->z_sum ? SUM_SUFFIX : "");
    return false;
}

/* The candidates for the node in the layouts it was given: first the
 * default (`default_impl`, oneDNN's first choice of the direct
 * algorithm, what the node runs without autotuning), then the other
 * implementations but the reference loops of each algorithm in oneDNN's
 * order: at batch 1 the direct algorithm's general jit kernel can beat
 * its 1x1 kernel, and Winograd's 4x3 tiles its 2x3 ones (fewer
 * multiplications on 7x7 and 14x14 planes). With a residual Z in Y's
 * layout, the implementations that take no binary post-op follow with Z
 * added by a sum post-op: oneDNN's Winograd kernels (ResNet's second
 * convolution of each block). Returns how many. */
static int conv_candidates(const tsr_prepare_ctx *ctx, const char *default_impl,
                           conv_candidate *list)
{
    const tsr_node *node = ctx->node;
    bool has_z = node->n_inputs > 3 && node->inputs[3] >= 0;
    tsr_layout z_layout = has_z ? (tsr_layout)ctx->input_layouts[3] : TSR_LAYOUT_PLAIN;
    candidate_list l = {.isa = strrchr(default_impl, ':'), .list = list, .n = 1};
    list[0] = (conv_candidate){.alg = dnnl_convolution_direct};
    snprintf(list[0].impl, sizeof list[0].impl, "%s", default_impl);
    snprintf(list[0].label, sizeof list[0].label, "%s", default_impl);
    dnnl_engine_t engine = NULL;
    if (tsr_dnnl_engine(&engine, NULL) != TSR_OK)
        return l.n;
    int forms = has_z && z_layout == (tsr_layout)ctx->output_layouts[0] ? 2 : 1;
    for (int form = 0; form < forms; form++)
        for (size_t a = 0; a < sizeof conv_algs / sizeof conv_algs[0]; a++) {
            conv_mds m;
            dnnl_convolution_desc_t cd;
            dnnl_primitive_attr_t attr;
            if (conv_op_desc(ctx->graph, node, (tsr_layout)ctx->input_layouts[0],
                             (tsr_layout)ctx->output_layouts[0], z_layout, false, false,
                             conv_algs[a], form == 1, &m, &cd, &attr) != TSR_OK)
                continue;
            dnnl_primitive_desc_t none;
            l.alg = conv_algs[a];
            l.z_sum = form == 1;
            conv_each_impl(&cd, attr, engine, add_candidate, &l, &none);
            dnnl_primitive_attr_destroy(attr);
        }
    return l.n;
}

/* The cache key: everything the timing depends on, the candidates'
 * names last (a decision among fewer candidates than this Tessera
 * offers is measured again). */
static void conv_key(const tsr_prepare_ctx *ctx, int n, const char *const *names, char *key,
                     size_t size)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    const int64_t *x = g->values[node->inputs[0]].dims, *w = g->values[node->inputs[1]].dims;
    tsr_window win;
    if (tsr_window_init(node, 2, x + 2, w + 2, false, &win) != TSR_OK)
        memset(&win, 0, sizeof win);
    bool has_b = node->n_inputs > 2 && node->inputs[2] >= 0;
    bool has_z = node->n_inputs > 3 && node->inputs[3] >= 0;
    int act = conv_act_index(node);
    const dnnl_version_t *v = dnnl_version();
    snprintf(key, size,
             "conv-impl onednn=%d.%d.%d isa=%d/0x%x threads=%d x=%lldx%lldx%lldx%lld "
             "w=%lldx%lldx%lldx%lld group=%lld stride=%lldx%lld dilation=%lldx%lld "
             "pad=%lld,%lld,%lld,%lld bias=%d z=%s act=%s weights=%s in=%s out=%s",
             v->major, v->minor, v->patch, (int)tsr_cpu_isa(), (int)dnnl_get_effective_cpu_isa(),
             omp_get_max_threads(), (long long)x[0], (long long)x[1], (long long)x[2],
             (long long)x[3], (long long)w[0], (long long)w[1], (long long)w[2], (long long)w[3],
             (long long)tsr_attr_int(node, "group"), (long long)win.stride[0],
             (long long)win.stride[1], (long long)win.dilation[0], (long long)win.dilation[1],
             (long long)win.pad_begin[0], (long long)win.pad_begin[1], (long long)win.pad_end[0],
             (long long)win.pad_end[1], has_b,
             has_z ? tsr_layout_name((tsr_layout)ctx->input_layouts[3]) : "none",
             act >= 0 ? conv_acts[act].name : "none",
             g->values[node->inputs[1]].data ? "constant" : "fed",
             tsr_layout_name((tsr_layout)ctx->input_layouts[0]),
             tsr_layout_name((tsr_layout)ctx->output_layouts[0]));
    for (int i = 0; i < n; i++) {
        size_t used = strlen(key);
        snprintf(key + used, size - used, "%s%s", i ? "," : " candidates=", names[i]);
    }
}

/* Builds the alternatives (candidate 0, the default, is in *st), checks
 * each one's output against the default's on the trial operands, times
 * them all, and leaves the one taken in *st, its index in *taken.
 * seconds[i] and errors[i] are INFINITY for a candidate that could not be
 * built. *taken is -1 when the trial could not run: the default stays,
 * undecided (a failing run fails again when the plan runs). */
static tsr_status conv_measure(const tsr_prepare_ctx *ctx, conv_state *st,
                               const conv_candidate *cands, int n, double *seconds, double *errors,
                               int *taken)
{
    *taken = -1;
    conv_state *states[TSR_AUTOTUNE_MAX_CANDIDATES] = {st};
    tsr_status status = TSR_OK;
    for (int i = 1; i < n && status == TSR_OK; i++) {
        if (!(states[i] = tsr_calloc(1, sizeof *states[i]))) {
            status = TSR_ERR_OUT_OF_MEMORY;
            break;
        }
        states[i]->kind = TSR_DNNL_KIND_CONV;
        if (conv_build(ctx, states[i], false, false, cands[i].alg, cands[i].z_sum,
                       cands[i].impl) != TSR_OK) {
            tsr_dnnl_conv_release(states[i]);
            states[i] = NULL;
        }
    }
    tsr_autotune_trial t = {.y_bytes = 0};
    int best = 0;
    if (status == TSR_OK)
        status = tsr_autotune_trial_init(ctx, &t);
    if (status == TSR_OK)
        status = tsr_autotune_measure(n, (void *const *)states, tsr_dnnl_conv_run, &t, seconds,
                                      errors, &best);
    tsr_autotune_trial_release(&t);
    if (status == TSR_OK && best > 0) {
        conv_clear(st);
        *st = *states[best];
        free(states[best]);
        states[best] = NULL;
    }
    for (int i = 1; i < n; i++)
        if (states[i])
            tsr_dnnl_conv_release(states[i]);
    if (status == TSR_OK)
        *taken = best;
    return TSR_OK;
}

/* Leaves in *st the candidate the cache or a measurement chose, or the
 * default where there is nothing to choose from. */
static tsr_status conv_autotune(const tsr_prepare_ctx *ctx, conv_state *st)
{
    TSR_CHECK(conv_build(ctx, st, false, false, dnnl_convolution_direct, false, NULL));
    conv_candidate cands[TSR_AUTOTUNE_MAX_CANDIDATES];
    int n = conv_candidates(ctx, st->exec.impl, cands);
    if (n < 2)
        return TSR_OK;
    const char *names[TSR_AUTOTUNE_MAX_CANDIDATES];
    for (int i = 0; i < n; i++)
        names[i] = cands[i].label;
    char key[512];
    conv_key(ctx, n, names, key, sizeof key);
    tsr_autotune_choice c;
    bool cached = tsr_autotune_cache_get(key, &c);
    int taken = -1;
    double seconds[TSR_AUTOTUNE_MAX_CANDIDATES], errors[TSR_AUTOTUNE_MAX_CANDIDATES];
    if (cached) {
        /* A name this oneDNN no longer offers keeps the default. */
        for (int i = 0; i < n && taken < 0; i++)
            if (strcmp(c.algorithm, cands[i].label) == 0)
                taken = i;
        if (taken > 0) {
            conv_clear(st);
            if (conv_build(ctx, st, false, false, cands[taken].alg, cands[taken].z_sum,
                           cands[taken].impl) != TSR_OK) {
                conv_clear(st);
                taken = 0;
                TSR_CHECK(conv_build(ctx, st, false, false, dnnl_convolution_direct, false, NULL));
            }
        }
    } else {
        TSR_CHECK(conv_measure(ctx, st, cands, n, seconds, errors, &taken));
        if (taken < 0)
            return TSR_OK;
        c = tsr_autotune_record(n, names, seconds, errors, taken);
        tsr_autotune_cache_put(key, &c);
    }
    if (taken > 0)
        snprintf(st->name, sizeof st->name, "%s err %.1e", cands[taken].label, c.alternative_error);
    if (!ctx->verbose || taken < 0)
        return TSR_OK;
    tsr_autotune_report(ctx->node->name, n, names, seconds, &c, cached, taken);
    return TSR_OK;
}

/* ------------------------------------------------ depth-first bands */

/* A convolution in a depth-first stack computes output rows [r0, r1)
 * of every output channel block of one image at a time, from the rows
 * they need of every input block (of one group, it mixes channels;
 * depthwise, one group per channel, block cb of the output reads block cb
 * of the input only, but one call for all blocks costs less than one per
 * block). oneDNN primitives have fixed shapes, so there is one per band
 * shape (output rows and the padding rows above and below the input rows
 * read: the first and last bands differ from the middle ones), built the
 * first time a band of that shape runs and kept; the weights are packed
 * then too, once (a convolution that joins no stack keeps one copy), in
 * the format oneDNN chose for a band of the whole image. Bands run on the
 * stack's threads at the same time, so each run gets its own memories
 * and uses its thread's scratchpad. Input
 * rows of several blocks that are not one dense tensor (rows of a whole
 * image's planes, or fewer rows than the stack holds) are copied there
 * first, and an output that is not one is computed there and copied out.
 * Taken for f32 direct convolutions with constant weights, no residual
 * input and blocked output of whole blocks, on input in the output's
 * layout (streamed: the stack's bands) or plain (read whole: the stem's
 * RGB image). */
#define BAND_SHAPES 16

typedef struct {
    int64_t rows, pad_top, pad_bottom;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t src, dst, scratch;
    size_t scratch_bytes;
} band_shape;

struct conv_band {
    const tsr_node *node;
    tsr_layout src_layout, dst_layout;
    int64_t ic, ih, iw, ow, block, src_block;
    int64_t stride, pad, extent; /* along rows: stride, top padding, dilated kernel height */
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    dnnl_memory_desc_t wei, bias, wei_plain;
    const void *weights; /* the node's, plain */
    bool has_b;
    bool depthwise;
    int64_t oc, cbs;
    tsr_dnnl_exec pack; /* the weights packed as wei (owned[0]) once a band has run */
    pthread_mutex_t lock;
    int n_shapes;
    band_shape shapes[BAND_SHAPES];
};

/* The primitive descriptor of a band of `rows` output rows reading the
 * input rows between `top` and `bottom` padding rows, weights as `wei`. */
static tsr_status band_pd(const conv_band *b, band_shape *sh, const dnnl_memory_desc_t *wei,
                          dnnl_primitive_desc_t *pd_out)
{
    int64_t in_rows = (sh->rows - 1) * b->stride + b->extent - sh->pad_top - sh->pad_bottom;
    if (in_rows <= 0)
        return tsr_error(TSR_ERR_UNSUPPORTED, "a band of %lld output rows reads no input row",
                         (long long)sh->rows);
    const int64_t src_dims[4] = {1, b->ic, in_rows, b->iw};
    const int64_t dst_dims[4] = {1, b->oc, sh->rows, b->ow};
    TSR_CHECK(tsr_dnnl_layout_md(&sh->src, src_dims, b->src_layout, dnnl_f32));
    TSR_CHECK(tsr_dnnl_layout_md(&sh->dst, dst_dims, b->dst_layout, dnnl_f32));
    dnnl_dims_t pad_l = {sh->pad_top, b->pad_l[1]}, pad_r = {sh->pad_bottom, b->pad_r[1]};
    dnnl_convolution_desc_t cd;
    TSR_DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(
                       &cd, dnnl_forward_inference, dnnl_convolution_direct, &sh->src, wei,
                       b->has_b ? &b->bias : NULL, &sh->dst, b->strides, b->dilates, pad_l, pad_r),
                   "band convolution descriptor");
    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    dnnl_primitive_attr_t attr;
    TSR_DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attribute creation");
    tsr_status status =
        tsr_dnnl_check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
                       "scratchpad mode");
    if (status == TSR_OK)
        status = conv_post_ops(b->node, NULL, false, attr);
    if (status == TSR_OK)
        status = tsr_dnnl_check(dnnl_primitive_desc_create(pd_out, &cd, attr, engine, NULL),
                                "band convolution");
    dnnl_primitive_attr_destroy(attr);
    return status;
}

/* Builds shape sh's primitive, for one thread: it runs inside the stack's
 * parallel region, one band per thread. */
static tsr_status band_build(const conv_band *b, band_shape *sh)
{
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    dnnl_primitive_desc_t pd = NULL;
    tsr_status status = band_pd(b, sh, &b->wei, &pd);
    if (status == TSR_OK) {
        const dnnl_memory_desc_t *scratch =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        sh->scratch_bytes = scratch ? dnnl_memory_desc_get_size(scratch) : 0;
        if (scratch)
            sh->scratch = *scratch;
        status = tsr_dnnl_check(dnnl_primitive_create(&sh->primitive, pd), "band convolution");
    }
    dnnl_primitive_desc_destroy(pd);
    omp_set_num_threads(saved_threads);
    return status;
}

/* The shape of a band, built the first time it is asked for (the
 * weights packed the first time any is). */
static tsr_status band_shape_of(conv_band *b, int64_t rows, int64_t top, int64_t bottom,
                                const band_shape **out)
{
    pthread_mutex_lock(&b->lock);
    tsr_status status = TSR_OK;
    if (!b->pack.n_args)
        status =
            tsr_dnnl_pack(&b->pack, DNNL_ARG_WEIGHTS, &b->wei_plain, b->weights, &b->wei, 1.0f);
    if (status != TSR_OK) {
        tsr_dnnl_exec_release(&b->pack);
        pthread_mutex_unlock(&b->lock);
        return status;
    }
    int i = 0;
    while (i < b->n_shapes && !(b->shapes[i].rows == rows && b->shapes[i].pad_top == top &&
                                b->shapes[i].pad_bottom == bottom))
        i++;
    if (i == BAND_SHAPES) {
        status =
            tsr_error(TSR_ERR_INTERNAL, "more than %d band shapes of one convolution", BAND_SHAPES);
    } else if (i == b->n_shapes) {
        b->shapes[i] = (band_shape){.rows = rows, .pad_top = top, .pad_bottom = bottom};
        status = band_build(b, &b->shapes[i]);
        if (status == TSR_OK)
            b->n_shapes++;
        else if (b->shapes[i].primitive)
            dnnl_primitive_destroy(b->shapes[i].primitive);
    }
    *out = &b->shapes[i];
    pthread_mutex_unlock(&b->lock);
    return status;
}

static void band_release(conv_band *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->n_shapes; i++)
        dnnl_primitive_destroy(b->shapes[i].primitive);
    tsr_dnnl_exec_release(&b->pack);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* Whether the prepared node can compute by bands (see above). */
static bool band_applies(const tsr_prepare_ctx *ctx, const conv_state *st)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    const tsr_value *x = &g->values[node->inputs[0]], *w = &g->values[node->inputs[1]];
    tsr_layout src = (tsr_layout)ctx->input_layouts[0], dst = (tsr_layout)ctx->output_layouts[0];
    int block = tsr_layout_block(dst), src_block = tsr_layout_block(src);
    bool has_z = node->n_inputs > 3 && node->inputs[3] >= 0;
    int64_t group = tsr_attr_int(node, "group");
    bool depthwise = group > 1 && group == x->dims[1] && group == w->dims[0] && src == dst;
    return !st->convert.active && st->alg == dnnl_convolution_direct && !has_z && w->data &&
           (group == 1 || depthwise) && block > 1 && w->dims[0] % block == 0 &&
           (src_block == 1 || src_block == block) && x->dims[1] % src_block == 0;
}

static tsr_status band_init(const tsr_prepare_ctx *ctx, conv_state *st)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    const tsr_value *x = &g->values[node->inputs[0]], *w = &g->values[node->inputs[1]];
    const tsr_value *y = &g->values[node->outputs[0]];
    tsr_window win;
    TSR_CHECK(tsr_window_init(node, 2, x->dims + 2, w->dims + 2, false, &win));
    conv_band *b = tsr_calloc(1, sizeof *b);
    if (!b)
        return TSR_ERR_OUT_OF_MEMORY;
    *b = (conv_band){.node = node,
                     .src_layout = (tsr_layout)ctx->input_layouts[0],
                     .dst_layout = (tsr_layout)ctx->output_layouts[0],
                     .ic = x->dims[1],
                     .ih = x->dims[2],
                     .iw = x->dims[3],
                     .ow = y->dims[3],
                     .block = tsr_layout_block((tsr_layout)ctx->output_layouts[0]),
                     .src_block = tsr_layout_block((tsr_layout)ctx->input_layouts[0]),
                     .stride = win.stride[0],
                     .pad = win.pad_begin[0],
                     .extent = (win.kernel[0] - 1) * win.dilation[0] + 1,
                     .has_b = node->n_inputs > 2 && node->inputs[2] >= 0,
                     .depthwise = tsr_attr_int(node, "group") > 1,
                     .oc = w->dims[0]};
    for (int d = 0; d < 2; d++) {
        b->strides[d] = win.stride[d];
        b->dilates[d] = win.dilation[d] - 1;
        b->pad_l[d] = win.pad_begin[d];
        b->pad_r[d] = win.pad_end[d];
    }
    b->cbs = w->dims[0] / b->block;
    pthread_mutex_init(&b->lock, NULL);
    /* Depthwise: [groups, 1, 1, kh, kw]. */
    dnnl_dims_t wei_dims = {w->dims[0], w->dims[1], w->dims[2], w->dims[3]};
    int wei_rank = 4;
    if (b->depthwise) {
        wei_rank = 5;
        memcpy(wei_dims, (int64_t[5]){b->oc, 1, 1, w->dims[2], w->dims[3]}, 5 * sizeof(int64_t));
    }
    dnnl_memory_desc_t wei_any;
    b->weights = w->data;
    tsr_status status = tsr_dnnl_plain_md(&b->wei_plain, wei_rank, wei_dims, dnnl_f32);
    if (status == TSR_OK)
        status = tsr_dnnl_check(dnnl_memory_desc_init_by_tag(&wei_any, wei_rank, wei_dims, dnnl_f32,
                                                             dnnl_format_tag_any),
                                "weights descriptor");
    if (status == TSR_OK && b->has_b)
        status = tsr_dnnl_plain_md(&b->bias, 1, &b->oc, dnnl_f32);
    /* The weights format: the one oneDNN picks for a band of the whole image. */
    band_shape whole = {.rows = y->dims[2], .pad_top = win.pad_begin[0]};
    whole.pad_bottom = (whole.rows - 1) * b->stride + b->extent - b->pad - b->ih;
    if (whole.pad_bottom < 0)
        whole.pad_bottom = 0;
    dnnl_primitive_desc_t pd = NULL;
    if (status == TSR_OK)
        status = band_pd(b, &whole, &wei_any, &pd);
    if (status == TSR_OK)
        b->wei = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    if (status != TSR_OK) {
        band_release(b);
        return status;
    }
    st->band = b;
    return TSR_OK;
}

bool tsr_dnnl_conv_band_info(const void *state, tsr_band_info *info_out)
{
    const conv_band *b = ((const conv_state *)state)->band;
    if (!b)
        return false;
    /* Input in the output's layout comes from the stack band by band;
     * plain input is read whole. */
    *info_out = (tsr_band_info){.stride = b->stride,
                                .pad = b->pad,
                                .extent = b->extent,
                                .streamed = b->src_block == b->block ? 1u : 0u,
                                .all_blocks = true,
                                .mixes_channels = !b->depthwise};
    return true;
}

tsr_status tsr_dnnl_conv_run_band(const void *state, const tsr_band_call *c)
{
    conv_band *b = ((const conv_state *)state)->band;
    int64_t lo = c->r0 * b->stride - b->pad, hi = (c->r1 - 1) * b->stride - b->pad + b->extent;
    int64_t in_lo = lo > 0 ? lo : 0, in_hi = hi < b->ih ? hi : b->ih;
    const band_shape *sh = NULL;
    TSR_CHECK(band_shape_of(b, c->r1 - c->r0, in_lo - lo, hi - in_hi, &sh));
    dnnl_engine_t engine = NULL;
    dnnl_stream_t stream = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, &stream));
    /* Blocks of the input, rows of each `plane` floats apart; x: row
     * in_lo of the first. */
    int64_t pitch = b->iw * b->src_block, rows = in_hi - in_lo;
    int64_t sbs = (b->ic + b->src_block - 1) / b->src_block;
    const float *x;
    int64_t plane;
    if (b->src_block == b->block) {
        x = c->in[0].data + (in_lo - c->in[0].row0) * pitch;
        plane = c->in[0].plane;
    } else {
        x = (const float *)c->in[0].data + (c->n * sbs * b->ih + in_lo) * pitch;
        plane = b->ih * pitch;
    }
    int64_t ocbs = b->cbs, opitch = b->ow * b->block;
    int64_t out_rows = c->r1 - c->r0;
    float *y = c->out.data + (c->r0 - c->out.row0) * opitch;
    bool dense_in = sbs == 1 || plane == rows * pitch;
    bool dense_out = ocbs == 1 || c->out.plane == out_rows * opitch;
    size_t scratch = (sh->scratch_bytes + 63) / 64 * 64;
    size_t in_bytes = dense_in ? 0 : (size_t)(sbs * rows * pitch) * sizeof(float);
    size_t out_bytes = dense_out ? 0 : (size_t)(ocbs * out_rows * opitch) * sizeof(float);
    char *buf = NULL;
    if (scratch + in_bytes + out_bytes > 0 &&
        !(buf = tsr_dnnl_thread_scratchpad(scratch + in_bytes + out_bytes)))
        return tsr_error(TSR_ERR_OUT_OF_MEMORY, "no %zu-byte band scratchpad for this thread",
                         scratch + in_bytes + out_bytes);
    if (!dense_in) {
        float *copy = (float *)(buf + scratch);
        size_t n = (size_t)(rows * pitch);
        for (int64_t s = 0; s < sbs; s++)
            memcpy(copy + (size_t)s * n, x + s * plane, n * sizeof(float));
        x = copy;
    }
    float *dst = dense_out ? y : (float *)(buf + scratch + in_bytes);
    void *data[5] = {(void *)x, b->pack.owned[0], b->has_b ? c->in[2].data : NULL, dst, buf};
    const dnnl_memory_desc_t *mds[5] = {&sh->src, &b->wei, &b->bias, &sh->dst, &sh->scratch};
    const int args[5] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST,
                         DNNL_ARG_SCRATCHPAD};
    dnnl_exec_arg_t exec[5];
    int n = 0;
    dnnl_status_t s = dnnl_success;
    for (int a = 0; a < 5 && s == dnnl_success; a++) {
        if ((a == 2 && !b->has_b) || (a == 4 && !sh->scratch_bytes))
            continue;
        exec[n].arg = args[a];
        s = dnnl_memory_create(&exec[n].memory, mds[a], engine, data[a]);
        n += s == dnnl_success;
    }
    if (s == dnnl_success)
        s = dnnl_primitive_execute(sh->primitive, stream, n, exec);
    if (s == dnnl_success)
        s = dnnl_stream_wait(stream);
    for (int a = 0; a < n; a++)
        dnnl_memory_destroy(exec[a].memory);
    size_t n_out = (size_t)(out_rows * opitch);
    for (int64_t o = 0; s == dnnl_success && !dense_out && o < ocbs; o++)
        memcpy(y + o * c->out.plane, dst + (size_t)o * n_out, n_out * sizeof(float));
    return tsr_dnnl_check(s, "band convolution");
}

/* Whether the node runs image by image: f32 on blocked activations,
 * where oneDNN's blocked kernels take one image but offer only their
 * reference loops for the batch. oneDNN 2.6.3's jit kernel refuses
 * deeplabv3's ASPP convolutions (dilations 12 and 24 on a 28x28 map) from
 * batch 2 on, and the gemm convolution on plain activations, which im2cols
 * every tap with the padding, took 3.4x as long per image. */
static bool one_image_applies(const tsr_prepare_ctx *ctx, bool bf16)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    tsr_layout src = (tsr_layout)ctx->input_layouts[0], dst = (tsr_layout)ctx->output_layouts[0];
    return !bf16 && g->values[node->inputs[0]].dims[0] > 1 && dst != TSR_LAYOUT_PLAIN &&
           !has_fast_kernel(g, node, src, dst, false) && has_fast_kernel(g, node, src, dst, true);
}

tsr_status tsr_dnnl_conv_prepare(const tsr_prepare_ctx *ctx, void **state_out)
{
    conv_state *st = tsr_calloc(1, sizeof *st);
    if (!st)
        return TSR_ERR_OUT_OF_MEMORY;
    st->kind = TSR_DNNL_KIND_CONV;
    bool bf16 = tsr_dnnl_use_bf16(ctx);
    bool one_image = one_image_applies(ctx, bf16);
    /* Autotuning chooses among f32 algorithms for the whole batch; bf16
     * and image-by-image nodes keep the direct one. */
    tsr_status status = bf16 || one_image || !ctx->autotune
                            ? conv_build(ctx, st, bf16, one_image, dnnl_convolution_direct, false,
                                         NULL)
                            : conv_autotune(ctx, st);
    if (status == TSR_ERR_UNSUPPORTED && bf16) {
        /* No bf16 kernel for this shape: the node computes in f32. */
        conv_clear(st);
        status = conv_build(ctx, st, false, false, dnnl_convolution_direct, false, NULL);
    }
    if (status == TSR_OK && !one_image && band_applies(ctx, st))
        status = band_init(ctx, st);
    /* After autotuning, which may take another candidate's state. */
    st->flushes_nan = conv_act_flushes_nan(ctx->node);
    if (status != TSR_OK) {
        tsr_dnnl_conv_release(st);
        return status;
    }
    *state_out = st;
    return TSR_OK;
}

/* Z into Y, for a sum post-op to add: split across the threads above a
 * few hundred KiB (a ResNet block's residual at batch 8 is 6 MB). */
static void copy_z(const tsr_kernel_ctx *k, size_t bytes)
{
    const char *z = k->inputs[3]->data;
    char *y = k->outputs[0]->data;
    if (z == y)
        return;
    const size_t chunk = 64 << 10;
    int64_t n = (int64_t)((bytes + chunk - 1) / chunk);
    int nt = bytes >= (256 << 10) ? k->threads : 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        size_t at = (size_t)i * chunk;
        memcpy(y + at, z + at, bytes - at < chunk ? bytes - at : chunk);
    }
}

tsr_status tsr_dnnl_conv_run(void *state, const tsr_kernel_ctx *k)
{
    conv_state *st = state;
    if (st->z_sum)
        copy_z(k, st->y_image_bytes);
    if (st->convert.active)
        TSR_CHECK(tsr_dnnl_exec_run(&st->convert.exec, k));
    if (st->wconvert.active)
        TSR_CHECK(tsr_dnnl_exec_run(&st->wconvert.exec, k));
    if (st->images <= 1)
        return tsr_dnnl_exec_run(&st->exec, k);
    /* Image by image: the same primitive on X, Z and Y moved on by one
     * image each time (W and B stay). */
    tsr_kernel_ctx one = *k;
    tsr_tensor in[TSR_MAX_NODE_IO], out = *k->outputs[0];
    for (int i = 0; i < k->n_inputs; i++)
        if (k->inputs[i]) {
            in[i] = *k->inputs[i];
            one.inputs[i] = &in[i];
        }
    one.outputs[0] = &out;
    for (int64_t n = 0; n < st->images; n++) {
        for (int i = 0; i < k->n_inputs && i < 4; i++)
            if (k->inputs[i] && st->image_bytes[i])
                in[i].data = (char *)k->inputs[i]->data + (size_t)n * st->image_bytes[i];
        out.data = (char *)k->outputs[0]->data + (size_t)n * st->y_image_bytes;
        TSR_CHECK(tsr_dnnl_exec_run(&st->exec, &one));
    }
    return TSR_OK;
}

const char *tsr_dnnl_conv_kernel_name(const void *state)
{
    return ((const conv_state *)state)->name;
}

bool tsr_dnnl_conv_flushes_nan(const void *state)
{
    return ((const conv_state *)state)->flushes_nan;
}

void tsr_dnnl_conv_release(void *state)
{
    conv_state *st = state;
    conv_clear(st);
    band_release(st->band);
    free(st);
}

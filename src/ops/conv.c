/* Conv: 1-D, 2-D and 3-D convolution with groups, dilation, strides and
 * padding. The reference kernel is direct: every spatial case runs as a 3-D
 * loop nest whose innermost loop walks a row of the output (contiguous in
 * the common stride-1 case, so the compiler vectorizes it) and updates a
 * block of output channels that share each input load. Padding becomes a
 * range of valid output positions per kernel tap instead of a branch per
 * element. */
#include "ops/conv.h"

#include "autodiff/autodiff.h"
#include "ops/window.h"

#include <stdlib.h>
#include <string.h>

static const tsr_attr_def conv_attrs[] = {{"auto_pad", TSR_ATTR_STRING, .s = "NOTSET"},
                                          {"dilations", TSR_ATTR_INTS},
                                          {"group", TSR_ATTR_INT, .i = 1},
                                          {"kernel_shape", TSR_ATTR_INTS},
                                          {"pads", TSR_ATTR_INTS},
                                          {"strides", TSR_ATTR_INTS},
                                          {NULL}};

/* Spatial kernel size from W's dims and the kernel_shape attribute, which
 * must agree where both are known. */
static tsr_status conv_kernel_shape(const tsr_node *node, const tsr_value *w, int n,
                                    int64_t *kernel)
{
    for (int i = 0; i < n; i++)
        kernel[i] = w->rank == n + 2 ? w->dims[2 + i] : TSR_DIM_UNKNOWN;
    size_t count;
    const int64_t *ks = tsr_attr_ints(node, "kernel_shape", &count);
    if (!ks)
        return TSR_OK;
    if (count != (size_t)n)
        return tsr_error(TSR_ERR_SHAPE,
                         "kernel_shape has %zu values but the input has %d spatial dims", count, n);
    for (int i = 0; i < n; i++) {
        if (ks[i] < 1)
            return tsr_error(TSR_ERR_SHAPE, "kernel_shape[%d] is %lld, must be >= 1", i,
                             (long long)ks[i]);
        if (tsr_dim_known(kernel[i]) && kernel[i] != ks[i])
            return tsr_error(TSR_ERR_SHAPE, "kernel_shape[%d] is %lld but W has %lld there", i,
                             (long long)ks[i], (long long)kernel[i]);
        kernel[i] = ks[i];
    }
    return TSR_OK;
}

tsr_status tsr_conv_infer_inputs(tsr_infer_ctx *c, int64_t *group, int *rank)
{
    const char *op = c->node->op->name;
    const tsr_value *x = c->inputs[0], *w = c->inputs[1];
    const tsr_value *b = c->n_inputs > 2 ? c->inputs[2] : NULL;
    if (!w)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "%s needs the weight input W", op);
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    for (int i = 1; i < 3; i++) {
        const tsr_value *v = i == 1 ? w : b;
        if (v && v->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "input %d ('%s') is %s but X is %s", i,
                                   v->name, tsr_dtype_name(v->dtype), tsr_dtype_name(x->dtype));
    }
    *group = tsr_attr_int(c->node, "group");
    if (*group < 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "group is %lld, must be >= 1", (long long)*group);
    *rank = x->rank >= 0 ? x->rank : w->rank;
    if (*rank < 0)
        return TSR_OK;
    if (*rank < 3)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "X has rank %d; %s needs (N, C, spatial...) of rank 3 to 5", *rank,
                               op);
    if (*rank > 2 + TSR_WINDOW_MAX_DIMS)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "X has rank %d; %s supports 1 to 3 spatial dims (rank 3 to 5)",
                               *rank, op);
    if (w->rank >= 0 && w->rank != *rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "W has rank %d but X has rank %d", w->rank,
                               *rank);
    return TSR_OK;
}

tsr_status tsr_conv_infer(tsr_infer_ctx *c)
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
    int64_t m = w->rank >= 0 ? w->dims[0] : TSR_DIM_UNKNOWN;
    int64_t cg = w->rank >= 0 ? w->dims[1] : TSR_DIM_UNKNOWN;
    int64_t channels = x->rank >= 0 ? x->dims[1] : TSR_DIM_UNKNOWN;
    if (tsr_dim_known(m) && m % group != 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "W has %lld output channels, not divisible by group %lld",
                               (long long)m, (long long)group);
    int64_t expected;
    if (tsr_dim_known(channels) && tsr_dim_known(cg) &&
        (!tsr_size_mul(cg, group, &expected) || channels != expected))
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "X has %lld channels but W expects %lld per group x group %lld",
                               (long long)channels, (long long)cg, (long long)group);
    if (b && b->rank >= 0) {
        if (b->rank != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "B has rank %d, expected 1", b->rank);
        if (tsr_dim_known(m) && tsr_dim_known(b->dims[0]) && b->dims[0] != m)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "B has %lld values but W has %lld output channels",
                                   (long long)b->dims[0], (long long)m);
    }

    int64_t kernel[TSR_WINDOW_MAX_DIMS], in[TSR_WINDOW_MAX_DIMS];
    TSR_CHECK(conv_kernel_shape(c->node, w, n, kernel));
    for (int i = 0; i < n; i++)
        in[i] = x->rank >= 0 ? x->dims[2 + i] : TSR_DIM_UNKNOWN;
    tsr_window win;
    TSR_CHECK(tsr_window_init(c->node, n, in, kernel, false, &win));

    int64_t dims[TSR_MAX_RANK];
    dims[0] = x->rank >= 0 ? x->dims[0] : TSR_DIM_UNKNOWN;
    dims[1] = m;
    for (int i = 0; i < n; i++)
        dims[2 + i] = win.out[i];
    tsr_infer_set(c, 0, x->dtype, rank, dims);
    return TSR_OK;
}

double tsr_conv_flops(const tsr_infer_ctx *c)
{
    const tsr_value *y = c->outputs[0], *w = c->inputs[1];
    int64_t outputs = tsr_shape_numel(y->rank, y->dims);
    int64_t per_output = tsr_shape_numel(w->rank - 1, w->dims + 1); /* C/group x kernel */
    if (outputs < 0 || per_output < 0)
        return 0.0;
    return 2.0 * (double)outputs * (double)per_output;
}

/* Output channels updated together: each input row loaded once feeds this
 * many accumulating output rows. */
#define CONV_BLOCK 4
/* Output positions per row chunk: keeps CONV_BLOCK output rows in L1. */
#define CONV_CHUNK 1024

/* The dtype-specific inner loops. out points at CONV_BLOCK (or 1) output
 * rows out_step elements apart; x at the first input element a tap reads,
 * x_step apart along the row; w at the first weight, w_step apart across
 * output channels. */
typedef struct conv_loops {
    size_t size;
    void (*fill)(void *out, int64_t count, const void *bias, int64_t channel);
    void (*taps_block)(void *out, int64_t out_step, const void *x, int64_t x_step, int64_t count,
                       const void *w, int64_t w_step);
    void (*taps_one)(void *out, const void *x, int64_t x_step, int64_t count, const void *w);
    void (*gather)(void *out, const void *x, int64_t x_step, int64_t count);
} conv_loops;

#define CONV_LOOPS(T, SUF)                                                                         \
    static void fill_##SUF(void *out, int64_t count, const void *bias, int64_t channel)            \
    {                                                                                              \
        T v = bias ? ((const T *)bias)[channel] : (T)0;                                            \
        T *o = out;                                                                                \
        for (int64_t i = 0; i < count; i++)                                                        \
            o[i] = v;                                                                              \
    }                                                                                              \
    static inline void block_##SUF(T *restrict o0, T *restrict o1, T *restrict o2, T *restrict o3, \
                                   const T *restrict x, int64_t x_step, int64_t count, T w0, T w1, \
                                   T w2, T w3)                                                     \
    {                                                                                              \
        for (int64_t i = 0; i < count; i++) {                                                      \
            T v = x[i * x_step];                                                                   \
            o0[i] += w0 * v;                                                                       \
            o1[i] += w1 * v;                                                                       \
            o2[i] += w2 * v;                                                                       \
            o3[i] += w3 * v;                                                                       \
        }                                                                                          \
    }                                                                                              \
    static void taps_block_##SUF(void *out, int64_t out_step, const void *x, int64_t x_step,       \
                                 int64_t count, const void *w, int64_t w_step)                     \
    {                                                                                              \
        T *o = out;                                                                                \
        const T *ws = w;                                                                           \
        T w0 = ws[0], w1 = ws[w_step], w2 = ws[2 * w_step], w3 = ws[3 * w_step];                   \
        /* A literal step of 1 lets the compiler vectorize the common case. */                     \
        if (x_step == 1)                                                                           \
            block_##SUF(o, o + out_step, o + 2 * out_step, o + 3 * out_step, x, 1, count, w0, w1,  \
                        w2, w3);                                                                   \
        else                                                                                       \
            block_##SUF(o, o + out_step, o + 2 * out_step, o + 3 * out_step, x, x_step, count, w0, \
                        w1, w2, w3);                                                               \
    }                                                                                              \
    static inline void one_##SUF(T *restrict o, const T *restrict x, int64_t x_step,               \
                                 int64_t count, T w0)                                              \
    {                                                                                              \
        for (int64_t i = 0; i < count; i++)                                                        \
            o[i] += w0 * x[i * x_step];                                                            \
    }                                                                                              \
    static void taps_one_##SUF(void *out, const void *x, int64_t x_step, int64_t count,            \
                               const void *w)                                                      \
    {                                                                                              \
        T w0 = *(const T *)w;                                                                      \
        if (x_step == 1)                                                                           \
            one_##SUF(out, x, 1, count, w0);                                                       \
        else                                                                                       \
            one_##SUF(out, x, x_step, count, w0);                                                  \
    }                                                                                              \
    static void gather_##SUF(void *out, const void *x, int64_t x_step, int64_t count)              \
    {                                                                                              \
        T *o = out;                                                                                \
        const T *xs = x;                                                                           \
        for (int64_t i = 0; i < count; i++)                                                        \
            o[i] = xs[i * x_step];                                                                 \
    }                                                                                              \
    static const conv_loops loops_##SUF = {sizeof(T), fill_##SUF, taps_block_##SUF,                \
                                           taps_one_##SUF, gather_##SUF};

CONV_LOOPS(float, f32)
CONV_LOOPS(double, f64)

/* Concrete geometry of one Conv run, spatial dims padded to 3. */
typedef struct conv_geom {
    tsr_window w;
    int64_t batch, channels, out_channels, group, cg, mg;
    int64_t in_plane, out_plane, kernel_elems;
    int64_t *row_lo, *row_hi; /* valid output range along the row, per kernel column */
    bool flat;                /* a 1x1 window run as one row per plane */
} conv_geom;

static tsr_status conv_geom_init(const tsr_kernel_ctx *k, conv_geom *g)
{
    const tsr_tensor *x = k->inputs[0], *wt = k->inputs[1];
    memset(g, 0, sizeof *g);
    int n = x->rank - 2;
    int64_t kernel[TSR_WINDOW_MAX_DIMS];
    tsr_window win;
    for (int i = 0; i < n; i++)
        kernel[i] = wt->dims[2 + i];
    TSR_CHECK(tsr_window_init(k->node, n, x->dims + 2, kernel, false, &win));
    tsr_window_to_3d(&win, &g->w);
    g->batch = x->dims[0];
    g->channels = x->dims[1];
    g->out_channels = wt->dims[0];
    g->group = tsr_attr_int(k->node, "group");
    g->cg = wt->dims[1];
    g->mg = g->out_channels / g->group;
    g->in_plane = g->w.in[0] * g->w.in[1] * g->w.in[2];
    g->out_plane = g->w.out[0] * g->w.out[1] * g->w.out[2];
    g->kernel_elems = g->w.kernel[0] * g->w.kernel[1] * g->w.kernel[2];

    /* A 1x1 window with stride 1 and no padding maps every position to
     * itself: treat the whole plane as one long row. */
    bool pointwise = g->kernel_elems == 1;
    for (int i = 0; i < 3; i++)
        pointwise =
            pointwise && g->w.stride[i] == 1 && g->w.pad_begin[i] == 0 && g->w.pad_end[i] == 0;
    if (pointwise) {
        tsr_window flat = {.n = 1,
                           .in = {g->in_plane},
                           .kernel = {1},
                           .stride = {1},
                           .dilation = {1},
                           .out = {g->out_plane}};
        tsr_window_to_3d(&flat, &g->w);
        g->flat = true;
    }

    int64_t kw = g->w.kernel[2];
    g->row_lo = tsr_malloc(2 * (size_t)kw * sizeof(int64_t));
    if (!g->row_lo)
        return TSR_ERR_OUT_OF_MEMORY;
    g->row_hi = g->row_lo + kw;
    for (int64_t t = 0; t < kw; t++)
        tsr_window_valid_range(&g->w, 2, t, &g->row_lo[t], &g->row_hi[t]);
    return TSR_OK;
}

/* Computes output channels [m0, m0 + nb) of image `b`, all in one group. */
static void conv_task(const conv_geom *g, const conv_loops *L, const char *x, const char *wt,
                      const void *bias, char *y, int64_t b, int64_t m0, int64_t nb)
{
    const tsr_window *w = &g->w;
    size_t sz = L->size;
    int64_t grp = m0 / g->mg;
    int64_t kh_kw = w->kernel[1] * w->kernel[2];
    int64_t w_step = g->cg * g->kernel_elems;
    const char *x_img = x + (size_t)((b * g->channels + grp * g->cg) * g->in_plane) * sz;
    char *y_blk = y + (size_t)((b * g->out_channels + m0) * g->out_plane) * sz;
    for (int64_t od = 0; od < w->out[0]; od++) {
        for (int64_t oh = 0; oh < w->out[1]; oh++) {
            int64_t orow = (od * w->out[1] + oh) * w->out[2];
            for (int64_t c0 = 0; c0 < w->out[2]; c0 += CONV_CHUNK) {
                int64_t c1 = c0 + CONV_CHUNK < w->out[2] ? c0 + CONV_CHUNK : w->out[2];
                for (int64_t j = 0; j < nb; j++)
                    L->fill(y_blk + (size_t)(j * g->out_plane + orow + c0) * sz, c1 - c0, bias,
                            m0 + j);
                for (int64_t c = 0; c < g->cg; c++) {
                    const char *x_ch = x_img + (size_t)(c * g->in_plane) * sz;
                    for (int64_t kd = 0; kd < w->kernel[0]; kd++) {
                        int64_t id = od * w->stride[0] + kd * w->dilation[0] - w->pad_begin[0];
                        if (id < 0 || id >= w->in[0])
                            continue;
                        for (int64_t kh = 0; kh < w->kernel[1]; kh++) {
                            int64_t ih = oh * w->stride[1] + kh * w->dilation[1] - w->pad_begin[1];
                            if (ih < 0 || ih >= w->in[1])
                                continue;
                            const char *x_row =
                                x_ch + (size_t)((id * w->in[1] + ih) * w->in[2]) * sz;
                            int64_t widx =
                                (m0 * g->cg + c) * g->kernel_elems + kd * kh_kw + kh * w->kernel[2];
                            for (int64_t kw = 0; kw < w->kernel[2]; kw++) {
                                int64_t lo = g->row_lo[kw] > c0 ? g->row_lo[kw] : c0;
                                int64_t hi = g->row_hi[kw] < c1 ? g->row_hi[kw] : c1;
                                if (lo >= hi)
                                    continue;
                                int64_t ix =
                                    lo * w->stride[2] + kw * w->dilation[2] - w->pad_begin[2];
                                const char *xs = x_row + (size_t)ix * sz;
                                const char *ws = wt + (size_t)(widx + kw) * sz;
                                char *ys = y_blk + (size_t)(orow + lo) * sz;
                                if (nb == CONV_BLOCK) {
                                    L->taps_block(ys, g->out_plane, xs, w->stride[2], hi - lo, ws,
                                                  w_step);
                                    continue;
                                }
                                for (int64_t j = 0; j < nb; j++)
                                    L->taps_one(ys + (size_t)(j * g->out_plane) * sz, xs,
                                                w->stride[2], hi - lo,
                                                ws + (size_t)(j * w_step) * sz);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Runs conv_task over images [0, batch) of x and y in parallel. */
static void conv_run(const conv_geom *g, const conv_loops *L, const char *x, const char *wt,
                     const void *bias, char *y, int64_t batch, int threads)
{
    int64_t blocks = (g->mg + CONV_BLOCK - 1) / CONV_BLOCK;
    int64_t tasks = batch * g->group * blocks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t b = t / (g->group * blocks), rest = t % (g->group * blocks);
        int64_t grp = rest / blocks, blk = rest % blocks;
        int64_t m0 = grp * g->mg + blk * CONV_BLOCK;
        int64_t nb = g->mg - blk * CONV_BLOCK < CONV_BLOCK ? g->mg - blk * CONV_BLOCK : CONV_BLOCK;
        conv_task(g, L, x, wt, bias, y, b, m0, nb);
    }
}

/* Short output rows (small, deep feature maps) and strided windows leave
 * the row loop little to vectorize. Copying each tap's input positions of
 * one image into a column buffer turns the conv into a 1x1 conv over flat
 * planes, the fastest case, for the cost of one pass over the buffer. */
#define CONV_PACK_ROW_MAX 64
#define CONV_PACK_MAX_ELEMS ((int64_t)1 << 24)

static bool conv_should_pack(const conv_geom *g)
{
    /* Depthwise-like groups would copy each input for too few outputs. */
    return !g->flat && g->mg >= CONV_BLOCK &&
           (g->w.out[2] < CONV_PACK_ROW_MAX || g->w.stride[2] > 1) &&
           g->channels * g->kernel_elems * g->out_plane <= CONV_PACK_MAX_ELEMS;
}

/* Column buffer of one image: for channel c and tap t, the input value
 * each output position reads (0 in the padding), at (c * taps + t) *
 * out_plane. */
static void conv_pack(const conv_geom *g, const conv_loops *L, const char *x_img, char *col,
                      int threads)
{
    const tsr_window *w = &g->w;
    size_t sz = L->size;
    int64_t out_w = w->out[2];
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < g->channels; c++) {
        const char *x_ch = x_img + (size_t)(c * g->in_plane) * sz;
        char *dst = col + (size_t)(c * g->kernel_elems * g->out_plane) * sz;
        for (int64_t kd = 0; kd < w->kernel[0]; kd++)
            for (int64_t kh = 0; kh < w->kernel[1]; kh++)
                for (int64_t kw = 0; kw < w->kernel[2]; kw++) {
                    int64_t lo = g->row_lo[kw], hi = g->row_hi[kw];
                    for (int64_t od = 0; od < w->out[0]; od++)
                        for (int64_t oh = 0; oh < w->out[1]; oh++, dst += (size_t)out_w * sz) {
                            int64_t id = od * w->stride[0] + kd * w->dilation[0] - w->pad_begin[0];
                            int64_t ih = oh * w->stride[1] + kh * w->dilation[1] - w->pad_begin[1];
                            if (id < 0 || id >= w->in[0] || ih < 0 || ih >= w->in[1] || lo >= hi) {
                                memset(dst, 0, (size_t)out_w * sz);
                                continue;
                            }
                            int64_t ix = lo * w->stride[2] + kw * w->dilation[2] - w->pad_begin[2];
                            const char *x_row =
                                x_ch + (size_t)((id * w->in[1] + ih) * w->in[2]) * sz;
                            memset(dst, 0, (size_t)lo * sz);
                            L->gather(dst + (size_t)lo * sz, x_row + (size_t)ix * sz, w->stride[2],
                                      hi - lo);
                            memset(dst + (size_t)hi * sz, 0, (size_t)(out_w - hi) * sz);
                        }
                }
    }
}

tsr_status tsr_conv_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *wt = k->inputs[1];
    const tsr_tensor *bias = k->n_inputs > 2 ? k->inputs[2] : NULL;
    tsr_tensor *y = k->outputs[0];
    conv_geom g;
    tsr_status st = conv_geom_init(k, &g);
    if (st != TSR_OK) {
        free(g.row_lo);
        return st;
    }
    const conv_loops *L = x->dtype == TSR_FLOAT64 ? &loops_f64 : &loops_f32;
    const void *bias_data = bias ? bias->data : NULL;
    char *col = NULL;
    if (conv_should_pack(&g))
        col = tsr_aligned_alloc((size_t)(g.channels * g.kernel_elems * g.out_plane) * L->size);
    if (!col) {
        conv_run(&g, L, x->data, wt->data, bias_data, y->data, g.batch, k->threads);
        free(g.row_lo);
        return TSR_OK;
    }
    /* The packed image is a 1x1 conv with channels x taps input channels. */
    int64_t flat_lo = 0, flat_hi = g.out_plane;
    conv_geom flat = g;
    tsr_window plane = {.n = 1,
                        .in = {g.out_plane},
                        .kernel = {1},
                        .stride = {1},
                        .dilation = {1},
                        .out = {g.out_plane}};
    tsr_window_to_3d(&plane, &flat.w);
    flat.channels = g.channels * g.kernel_elems;
    flat.cg = g.cg * g.kernel_elems;
    flat.in_plane = g.out_plane;
    flat.kernel_elems = 1;
    flat.row_lo = &flat_lo;
    flat.row_hi = &flat_hi;
    flat.flat = true;
    size_t in_image = (size_t)(g.channels * g.in_plane) * L->size;
    size_t out_image = (size_t)(g.out_channels * g.out_plane) * L->size;
    for (int64_t b = 0; b < g.batch; b++) {
        conv_pack(&g, L, (const char *)x->data + b * in_image, col, k->threads);
        conv_run(&flat, L, col, wt->data, bias_data, (char *)y->data + b * out_image, 1,
                 k->threads);
    }
    tsr_aligned_free(col);
    free(g.row_lo);
    return TSR_OK;
}

static tsr_status emit_conv_grad(tsr_grad_ctx *c, const tsr_op_def *op, const char *a,
                                 const char *b, const char *shape_of, const char **out)
{
    tsr_attr attrs[16];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 16);
    const char *ins[3] = {a, b, NULL};
    TSR_CHECK(tsr_grad_shape(c, shape_of, &ins[2]));
    return tsr_grad_emit(c, op, 3, ins, n_attrs, attrs, 1, out);
}

/* dX and dW are the backward ops of grad_conv.c (sharing Conv's
 * attributes), dB sums dY over every axis but the channels. */
static tsr_status conv_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *w = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    const char *g;
    if (tsr_grad_wants(c, 0)) {
        TSR_CHECK(emit_conv_grad(c, &tsr_op_ConvGradInput, dy, w, x, &g));
        TSR_CHECK(tsr_grad_contribute(c, 0, g));
    }
    if (tsr_grad_wants(c, 1)) {
        TSR_CHECK(emit_conv_grad(c, &tsr_op_ConvGradFilter, x, dy, w, &g));
        TSR_CHECK(tsr_grad_contribute(c, 1, g));
    }
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
    return TSR_OK;
}

const tsr_op_def tsr_op_Conv = {
    .name = "Conv",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = conv_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = tsr_conv_infer,
    .ref = tsr_conv_ref,
    .flops = tsr_conv_flops,
    .grad = conv_grad,
};

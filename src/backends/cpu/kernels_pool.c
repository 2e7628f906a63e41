/* Pooling kernels of the cpu backend: MaxPool and AveragePool over two
 * spatial dims, their backward (MaxPoolGrad, AveragePoolGrad), and the
 * global pools,
 * on blocked layouts (vectors across a channel block's lanes) and plain
 * (vectors along W). Window geometry is worked out once at plan time: for
 * each output row and column, the range of taps that land inside the
 * input, so the inner loops never test bounds, and for the windowed pools
 * (separable, through a row buffer: tiles_pool.h) how many outputs and
 * taps along W the buffer holds at a time. */
#include "backends/cpu/kernels_internal.h"
#include "ops/window.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t ih, iw, oh, ow;
    int64_t sh, sw, dh, dw, ph, pw, kw;
    const int64_t *hlo, *hhi, *wlo, *whi; /* valid taps [lo, hi) per output row / column */
    const float *hinv, *winv;             /* 1 / the average's divisor, per row and column */
    int64_t chunk, seg; /* outputs and taps along W per pass through the row buffer */
} tsr_cpu_pool_geom;

/* The windowed pools' row buffer, on the stack of the thread running a
 * row: 16 KiB, from L1 with the input rows it reduces. */
#define POOL_ROW_FLOATS 4096

typedef void (*pool_row_tile)(const tsr_cpu_pool_geom *g, const float *x, int64_t x_row0, float *y,
                              int64_t oh);
typedef void (*reduce_tile)(const float *x, int64_t pixels, float *out);
typedef float (*reduce_plain_tile)(const float *x, int64_t n, bool is_max);
typedef void (*max_grad_tile)(const tsr_cpu_pool_geom *g, const float *x, const float *dy,
                              float *dx);

/* Indexed [is_max][0: plain, 1: 8 lanes, 2: 16 lanes]; NULL where the
 * block is narrower than the ISA's vectors. */
typedef struct {
    pool_row_tile row[2][3];
    reduce_tile global[2][3];
    reduce_plain_tile plain;
    max_grad_tile max_grad[3];
} tsr_cpu_pool_tiles;

#define TSR_SIMD_LEVEL 0
#include "backends/cpu/tiles_pool.h"
#undef TSR_SIMD_LEVEL
#if TSR_CPU_X86
#define TSR_SIMD_LEVEL 1
#include "backends/cpu/tiles_pool.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 2
#include "backends/cpu/tiles_pool.h"
#undef TSR_SIMD_LEVEL
#elif TSR_CPU_ARM64
#define TSR_SIMD_LEVEL 3
#include "backends/cpu/tiles_pool.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 4
#include "backends/cpu/tiles_pool.h"
#undef TSR_SIMD_LEVEL
#endif

static const tsr_cpu_pool_tiles *const tiles[] = {
    [TSR_ISA_PORTABLE] = &pool_tiles_portable,
#if TSR_CPU_X86
    [TSR_ISA_AVX2] = &pool_tiles_avx2,
    [TSR_ISA_AVX512] = &pool_tiles_avx512,
#elif TSR_CPU_ARM64
    [TSR_ISA_NEON] = &pool_tiles_neon,
    [TSR_ISA_SVE] = &pool_tiles_sve,
#endif
};

static int block_index(int block)
{
    return block == 16 ? 2 : block == 8 ? 1 : 0;
}

/* ------------------------------------------------------ windowed pools */

static bool pool_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!tsr_cpu_require_f32(g, node, 0, why, size))
        return false;
    if (node->n_outputs > 1) {
        snprintf(why, size, "MaxPool with an Indices output: the ref backend runs it");
        return false;
    }
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    if (x->rank != 4) {
        snprintf(why, size, "%s over %d spatial dims: the ref backend runs it (2 only here)",
                 node->op->name, x->rank - 2);
        return false;
    }
    return true;
}

typedef struct {
    tsr_cpu_pool_geom g;
    pool_row_tile row;
    max_grad_tile grad; /* MaxPoolGrad */
    int block;
} pool_data;

/* The window's input: X, or for AveragePoolGrad (dY, shape of X) dX. */
static const tsr_value *window_input(const tsr_graph *g, const tsr_node *node)
{
    return node->op == &tsr_op_AveragePoolGrad ? tsr_cpu_output(g, node, 0)
                                               : tsr_cpu_input(g, node, 0);
}

/* Taps k in [0, taps) with 0 <= start + k * step < size, as [*lo, *hi). */
static void taps_inside(int64_t start, int64_t step, int64_t taps, int64_t size, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = start >= 0 ? 0 : (-start + step - 1) / step;
    int64_t b = start > size - 1 ? 0 : (size - 1 - start) / step + 1;
    if (b > taps)
        b = taps;
    *lo = a;
    *hi = b > a ? b : a;
}

/* Valid taps and the reciprocal of the average's divisor along one
 * spatial dim: with count_include_pad the divisor counts the taps on
 * padding too, but not past the end padding (ceil_mode windows), as in
 * PyTorch. */
static void dim_ranges(const tsr_window *w, int d, bool include_pad, int64_t *lo, int64_t *hi,
                       float *inv)
{
    for (int64_t o = 0; o < w->out[d]; o++) {
        int64_t start = o * w->stride[d] - w->pad_begin[d], plo, phi;
        taps_inside(start, w->dilation[d], w->kernel[d], w->in[d], &lo[o], &hi[o]);
        taps_inside(start + w->pad_begin[d], w->dilation[d], w->kernel[d],
                    w->pad_begin[d] + w->in[d] + w->pad_end[d], &plo, &phi);
        inv[o] = 1.0f / (float)(include_pad ? phi - plo : hi[o] - lo[o]);
    }
}

static tsr_status pool_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const pool_data *d = s->data;
    const tsr_cpu_pool_geom *g = &d->g;
    const tsr_tensor *x = k->inputs[0];
    int b = d->block;
    int64_t planes = x->dims[0] * ((x->dims[1] + b - 1) / b);
    int64_t rows = planes * g->oh;
    int64_t in_plane = g->ih * g->iw * b, out_row = g->ow * b;
    const float *xs = x->data;
    float *ys = k->outputs[0]->data;
    int nt = tsr_cpu_threads_for(k->threads, planes * in_plane);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++)
        d->row(g, xs + (r / g->oh) * in_plane, 0, ys + r * out_row, r % g->oh);
    return TSR_OK;
}

static void pool_band(const tsr_cpu_state *s, const tsr_band_call *c)
{
    const pool_data *d = s->data;
    const tsr_cpu_pool_geom *g = &d->g;
    int64_t out_row = g->ow * d->block;
    float *y = c->out.data + (c->r0 - c->out.row0) * out_row;
    for (int64_t r = c->r0; r < c->r1; r++, y += out_row)
        d->row(g, c->in[0].data, c->in[0].row0, y, r);
}

/* MaxPoolGrad(X, dY): each plane of dX is written by one thread, which
 * routes that plane's dY to its maxima. */
static tsr_status max_grad_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const pool_data *d = s->data;
    const tsr_cpu_pool_geom *g = &d->g;
    const tsr_tensor *x = k->inputs[0];
    int b = d->block;
    int64_t planes = x->dims[0] * ((x->dims[1] + b - 1) / b);
    int64_t in_plane = g->ih * g->iw * b, out_plane = g->oh * g->ow * b;
    const float *xs = x->data, *dys = k->inputs[1]->data;
    float *dxs = k->outputs[0]->data;
    int nt = tsr_cpu_threads_for(k->threads, planes * in_plane);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t p = 0; p < planes; p++)
        d->grad(g, xs + p * in_plane, dys + p * out_plane, dxs + p * in_plane);
    return TSR_OK;
}

static bool max_grad_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!pool_supports(g, node, why, size) || !tsr_cpu_require_f32(g, node, 1, why, size))
        return false;
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    if (x->dims[2] * x->dims[3] >= (int64_t)1 << 24) {
        snprintf(why, size, "MaxPoolGrad over %lld pixels per plane: the ref backend runs it",
                 (long long)(x->dims[2] * x->dims[3]));
        return false;
    }
    return true;
}

/* X, dY and dX blocked when dY arrives blocked, X reordered into blocks
 * if it comes plain (a value saved across tsr_graph_split: the plain
 * kernel compares one pixel at a time, and took 26 ms of a resnet18
 * backward half at batch 8 against 4 blocked); else plain: a plain dY is
 * never reordered into blocks (it may be a Reshape's output sharing a
 * buffer of another shape, which the plan would reorder by the buffer's
 * shape). */
static void max_grad_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                             uint8_t *wanted, uint8_t *produced)
{
    tsr_layout l = tsr_cpu_keep_layout(tsr_cpu_input(g, node, 1), available[1]);
    wanted[0] = wanted[1] = produced[0] = (uint8_t)l;
}

/* AveragePoolGrad(dY, shape): each output's gradient, times its window's
 * 1 / divisor (the forward's, count_include_pad included), added to every
 * tap of its window inside the input; a plane of dX per thread. The lanes
 * of a block are one short loop of constant length, which the compiler
 * vectorizes. */
static inline __attribute__((always_inline)) void avg_grad_plane(const tsr_cpu_pool_geom *g,
                                                                 const float *dy, float *dx,
                                                                 const int b)
{
    memset(dx, 0, (size_t)(g->ih * g->iw * b) * sizeof(float));
    for (int64_t oh = 0; oh < g->oh; oh++) {
        int64_t h0 = oh * g->sh - g->ph;
        for (int64_t ow = 0; ow < g->ow; ow++) {
            int64_t w0 = ow * g->sw - g->pw;
            const float *gy = dy + (oh * g->ow + ow) * b;
            float scale = g->hinv[oh] * g->winv[ow], v[16];
            for (int l = 0; l < b; l++)
                v[l] = gy[l] * scale;
            for (int64_t kh = g->hlo[oh]; kh < g->hhi[oh]; kh++) {
                float *row = dx + (h0 + kh * g->dh) * g->iw * b;
                for (int64_t kw = g->wlo[ow]; kw < g->whi[ow]; kw++) {
                    float *px = row + (w0 + kw * g->dw) * b;
                    for (int l = 0; l < b; l++)
                        px[l] += v[l];
                }
            }
        }
    }
}

static tsr_status avg_grad_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const pool_data *d = s->data;
    const tsr_cpu_pool_geom *g = &d->g;
    const tsr_tensor *dx = k->outputs[0];
    int b = d->block;
    int64_t planes = dx->dims[0] * ((dx->dims[1] + b - 1) / b);
    int64_t in_plane = g->ih * g->iw * b, out_plane = g->oh * g->ow * b;
    const float *dys = k->inputs[0]->data;
    float *dxs = dx->data;
    int nt = tsr_cpu_threads_for(k->threads, planes * in_plane);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t p = 0; p < planes; p++) {
        if (b == 16)
            avg_grad_plane(g, dys + p * out_plane, dxs + p * in_plane, 16);
        else if (b == 8)
            avg_grad_plane(g, dys + p * out_plane, dxs + p * in_plane, 8);
        else
            avg_grad_plane(g, dys + p * out_plane, dxs + p * in_plane, 1);
    }
    return TSR_OK;
}

static bool avg_grad_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!tsr_cpu_require_f32(g, node, 0, why, size))
        return false;
    if (tsr_cpu_input(g, node, 0)->rank != 4) {
        snprintf(why, size, "AveragePoolGrad over %d spatial dims: the ref backend runs it",
                 tsr_cpu_input(g, node, 0)->rank - 2);
        return false;
    }
    return true;
}

/* dX in dY's layout (the shape input is plain). */
static void avg_grad_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                             uint8_t *wanted, uint8_t *produced)
{
    tsr_layout l = tsr_cpu_keep_layout(tsr_cpu_input(g, node, 0), available[0]);
    wanted[0] = produced[0] = (uint8_t)l;
    wanted[1] = TSR_LAYOUT_PLAIN;
}

/* How much of a row one pass through the row buffer covers: `seg` taps
 * along W (all of them unless the window spans more than half the
 * buffer) for `chunk` outputs. A plain row's buffer keeps 2 vectors'
 * floats (at least 2 x 16) for the vector loads past its last tap. */
static void row_buffer_passes(tsr_cpu_pool_geom *g, int block, int lanes)
{
    int64_t pad = 2 * (lanes > 16 ? lanes : 16);
    int64_t pixels = POOL_ROW_FLOATS / block - (block == 1 ? pad : 0);
    int64_t seg = g->kw;
    if ((seg - 1) * g->dw + 1 > pixels / 2)
        seg = (pixels / 2 - 1) / g->dw + 1;
    int64_t chunk = (pixels - (seg - 1) * g->dw - 1) / g->sw + 1;
    g->seg = seg;
    g->chunk = chunk < g->ow ? chunk : g->ow;
}

static tsr_status pool_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    const tsr_node *node = ctx->node;
    const tsr_value *x = window_input(ctx->graph, node);
    bool is_grad = node->op == &tsr_op_MaxPoolGrad;
    bool is_max = node->op == &tsr_op_MaxPool || is_grad;
    size_t n_kernel;
    const int64_t *kernel = tsr_attr_ints(node, "kernel_shape", &n_kernel);
    if (n_kernel != 2)
        return tsr_error(TSR_ERR_INTERNAL, "cpu backend: kernel_shape has %zu values", n_kernel);
    tsr_window w;
    TSR_CHECK(
        tsr_window_init(node, 2, x->dims + 2, kernel, tsr_attr_int(node, "ceil_mode") == 1, &w));
    bool include_pad = !is_max && tsr_attr_int(node, "count_include_pad") == 1;
    size_t n = (size_t)(w.out[0] + w.out[1]);
    size_t n_ranges = 2 * n;
    pool_data *d = tsr_calloc(1, sizeof *d + n_ranges * sizeof(int64_t) + n * sizeof(float));
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    s->run = pool_run;
    int64_t *ranges = (int64_t *)(d + 1);
    float *counts = (float *)(ranges + n_ranges);
    tsr_cpu_pool_geom *g = &d->g;
    *g = (tsr_cpu_pool_geom){.ih = w.in[0],
                             .iw = w.in[1],
                             .oh = w.out[0],
                             .ow = w.out[1],
                             .sh = w.stride[0],
                             .sw = w.stride[1],
                             .dh = w.dilation[0],
                             .dw = w.dilation[1],
                             .ph = w.pad_begin[0],
                             .pw = w.pad_begin[1],
                             .kw = kernel[1]};
    int64_t *hlo = ranges, *hhi = hlo + w.out[0], *wlo = hhi + w.out[0], *whi = wlo + w.out[1];
    float *hinv = counts, *winv = counts + w.out[0];
    dim_ranges(&w, 0, include_pad, hlo, hhi, hinv);
    dim_ranges(&w, 1, include_pad, wlo, whi, winv);
    g->hlo = hlo;
    g->hhi = hhi;
    g->wlo = wlo;
    g->whi = whi;
    g->hinv = hinv;
    g->winv = winv;
    d->block = tsr_layout_block((tsr_layout)ctx->input_layouts[0]);
    row_buffer_passes(g, d->block, tsr_cpu_isa_lanes(s->isa));
    if (d->block > 1)
        s->isa = tsr_cpu_isa_for_block(s->isa, d->block);
    if (is_grad) {
        d->grad = tiles[s->isa]->max_grad[block_index(d->block)];
        s->run = max_grad_run;
        return TSR_OK;
    }
    if (node->op == &tsr_op_AveragePoolGrad) {
        s->run = avg_grad_run;
        return TSR_OK;
    }
    d->row = tiles[s->isa]->row[is_max][block_index(d->block)];
    s->band = pool_band;
    s->band_info = (tsr_band_info){
        .stride = g->sh, .pad = g->ph, .extent = (kernel[0] - 1) * g->dh + 1, .streamed = 1u};
    return TSR_OK;
}

/* --------------------------------------------------------- global pools */

static bool global_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    return tsr_cpu_require_f32(g, node, 0, why, size);
}

/* Blocked input, plain [N, C, 1, 1] output: the next op (Flatten, Gemm)
 * wants plain anyway, and the output is tiny. */
static void global_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced)
{
    wanted[0] = (uint8_t)tsr_cpu_keep_layout(tsr_cpu_input(g, node, 0), available[0]);
    produced[0] = TSR_LAYOUT_PLAIN;
}

typedef struct {
    bool is_max;
} global_data;

static tsr_status global_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const global_data *d = s->data;
    const tsr_tensor *x = k->inputs[0];
    int b = tsr_layout_block((tsr_layout)k->input_layouts[0]);
    int64_t n = x->dims[0], c = x->dims[1];
    int64_t pixels = tsr_shape_numel(x->rank - 2, x->dims + 2);
    const float *xs = x->data;
    float *ys = k->outputs[0]->data;
    bool is_max = d->is_max;
    if (b == 1) {
        reduce_plain_tile tile = tiles[s->isa]->plain;
        int nt = tsr_cpu_threads_for(k->threads, n * c * pixels);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t p = 0; p < n * c; p++) {
            float r = tile(xs + p * pixels, pixels, is_max);
            ys[p] = is_max ? r : r / (float)pixels;
        }
        return TSR_OK;
    }
    reduce_tile tile = tiles[s->isa]->global[is_max][block_index(b)];
    int64_t cbs = (c + b - 1) / b;
    int nt = tsr_cpu_threads_for(k->threads, n * cbs * pixels * b);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t u = 0; u < n * cbs; u++) {
        float lanes[16];
        tile(xs + u * pixels * b, pixels, lanes);
        int64_t c0 = (u % cbs) * b, batch = u / cbs;
        for (int l = 0; l < b && c0 + l < c; l++)
            ys[batch * c + c0 + l] = is_max ? lanes[l] : lanes[l] / (float)pixels;
    }
    return TSR_OK;
}

static tsr_status global_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    global_data *d = tsr_calloc(1, sizeof *d);
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    s->run = global_run;
    d->is_max = ctx->node->op == &tsr_op_GlobalMaxPool;
    int block = tsr_layout_block((tsr_layout)ctx->input_layouts[0]);
    if (block > 1)
        s->isa = tsr_cpu_isa_for_block(s->isa, block);
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_pool_ops[] = {
    {&tsr_op_MaxPool, pool_supports, NULL, pool_prepare, true},
    {&tsr_op_AveragePool, pool_supports, NULL, pool_prepare, true},
    {&tsr_op_MaxPoolGrad, max_grad_supports, max_grad_layouts, pool_prepare, true},
    {&tsr_op_AveragePoolGrad, avg_grad_supports, avg_grad_layouts, pool_prepare, true},
    {&tsr_op_GlobalAveragePool, global_supports, global_layouts, global_prepare, true},
    {&tsr_op_GlobalMaxPool, global_supports, global_layouts, global_prepare, true},
    {NULL},
};

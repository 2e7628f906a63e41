/* Training kernels of the cpu backend: BatchNormTrain, BatchNormTrainGrad,
 * ReluGrad and ClipGrad, on the blocked layouts the convolutions around them
 * produce and consume (so no reorder sits between them) and on plain.
 * The statistics are reduced per (image, channel block) in parallel, then
 * across images in a fixed order, so results do not depend on the thread
 * count. The forward pass takes the moments shifted by one sample of each
 * channel, so one read of X gives mean and variance without the
 * cancellation of sum(x^2) - sum(x)^2 / n. */
#include "backends/cpu/kernels_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRAIN_CHUNK 64

typedef void (*sums_tile)(const float *x, const float *g, int64_t pixels, const float *center,
                          double *s1, double *s2);
typedef void (*affine_tile)(const float *x, int64_t pixels, const float *s, const float *t,
                            float *y);
typedef void (*apply_tile)(const float *dy, const float *x, int64_t pixels, const float *const c[4],
                           float *dx);
typedef void (*relu_grad_tile)(const float *dy, const float *y, float *dx, int64_t n);
typedef void (*clip_grad_tile)(const float *dy, const float *x, float lo, float hi, float *dx,
                               int64_t n);

/* Indexed [0: plain, 1: 8 lanes, 2: 16 lanes]; sums[0] are BatchNormTrain's
 * moments, sums[1] BatchNormTrainGrad's. NULL where the block is narrower
 * than the ISA's vectors. */
typedef struct {
    sums_tile sums[2][3];
    affine_tile affine[3];
    apply_tile apply[3];
    relu_grad_tile relu_grad;
    clip_grad_tile clip_grad;
} tsr_cpu_train_tiles;

#define TSR_SIMD_LEVEL 0
#include "backends/cpu/tiles_train.h"
#undef TSR_SIMD_LEVEL
#if TSR_CPU_X86
#define TSR_SIMD_LEVEL 1
#include "backends/cpu/tiles_train.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 2
#include "backends/cpu/tiles_train.h"
#undef TSR_SIMD_LEVEL
#elif TSR_CPU_ARM64
#define TSR_SIMD_LEVEL 3
#include "backends/cpu/tiles_train.h"
#undef TSR_SIMD_LEVEL
#endif

static const tsr_cpu_train_tiles *const tiles[] = {
    [TSR_ISA_PORTABLE] = &train_tiles_portable,
#if TSR_CPU_X86
    [TSR_ISA_AVX2] = &train_tiles_avx2,
    [TSR_ISA_AVX512] = &train_tiles_avx512,
#elif TSR_CPU_ARM64
    [TSR_ISA_NEON] = &train_tiles_neon,
#endif
};

static int block_index(int block)
{
    return block == 16 ? 2 : block == 8 ? 1 : 0;
}

/* A rank >= 2 tensor as planes: (image, channel block) of `pixels` pixels
 * of `block` lanes; plain tensors have one channel per plane. */
typedef struct {
    int64_t n, c, pixels, cbs;
    int block;
} plane_geom;

static plane_geom geom_of(const tsr_tensor *x, uint8_t layout)
{
    plane_geom g = {.n = x->dims[0], .c = x->dims[1], .pixels = 1, .block = 1};
    for (int d = 2; d < x->rank; d++)
        g.pixels *= x->dims[d];
    if (layout != TSR_LAYOUT_PLAIN)
        g.block = tsr_layout_block((tsr_layout)layout);
    g.cbs = (g.c + g.block - 1) / g.block;
    return g;
}

static bool train_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    for (int i = 0; i < node->n_inputs; i++)
        if (!tsr_cpu_require_f32(g, node, i, why, size))
            return false;
    return true;
}

/* The op's activation inputs keep the blocked layout they arrive in when
 * they all arrive in it, else all go plain: a plain input is never
 * reordered into blocks (it may be a Reshape's output sharing a buffer of
 * another shape, whose reorder the plan would do on the buffer's shape).
 * The per-channel inputs and outputs are plain. */
static void train_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                          uint8_t *wanted, uint8_t *produced)
{
    int n_act = node->op == &tsr_op_BatchNormTrain ? 1 : 2;
    tsr_layout l = tsr_cpu_keep_layout(tsr_cpu_input(g, node, 0), available[0]);
    for (int i = 1; i < n_act; i++)
        if (tsr_cpu_keep_layout(tsr_cpu_input(g, node, i), available[i]) != l)
            l = TSR_LAYOUT_PLAIN;
    for (int i = 0; i < node->n_inputs; i++)
        wanted[i] = i < n_act ? (uint8_t)l : TSR_LAYOUT_PLAIN;
    for (int i = 0; i < node->n_outputs; i++)
        produced[i] = i == 0 ? (uint8_t)l : TSR_LAYOUT_PLAIN;
}

/* Blocks narrower than the ISA's vectors take the ISA that matches them. */
static void pick_isa(tsr_cpu_state *s, uint8_t layout)
{
    if (layout != TSR_LAYOUT_PLAIN)
        s->isa = tsr_cpu_isa_for_block(s->isa, tsr_layout_block((tsr_layout)layout));
}

/* s1, s2 (doubles per plane lane) of every plane, in parallel. */
static void plane_sums(sums_tile tile, const plane_geom *g, const float *x, const float *dy,
                       const float *center, double *s1, double *s2, int nt)
{
    int64_t planes = g->n * g->cbs, plane = g->pixels * g->block;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t p = 0; p < planes; p++) {
        double *a = s1 + p * g->block, *b = s2 + p * g->block;
        for (int l = 0; l < g->block; l++)
            a[l] = b[l] = 0.0;
        tile(x + p * plane, dy ? dy + p * plane : NULL, g->pixels, center + (p % g->cbs) * g->block,
             a, b);
    }
}

/* Channel c's sums over all images, in image order. */
static void channel_total(const plane_geom *g, const double *s, int64_t c, double *out)
{
    int64_t cb = c / g->block, l = c % g->block;
    double t = 0.0;
    for (int64_t i = 0; i < g->n; i++)
        t += s[(i * g->cbs + cb) * g->block + l];
    *out = t;
}

/* ------------------------------------------------------- BatchNormTrain */

static tsr_status bn_train_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    plane_geom g = geom_of(x, k->input_layouts[0]);
    if (g.n * g.pixels < 2)
        return tsr_error(TSR_ERR_SHAPE,
                         "training-mode BatchNorm needs more than one value per channel, got "
                         "%lld (batch %lld)",
                         (long long)(g.n * g.pixels), (long long)g.n);
    const float *xs = x->data, *scale = k->inputs[1]->data, *bias = k->inputs[2]->data;
    const float *rm = k->inputs[3]->data, *rv = k->inputs[4]->data;
    float *out[5] = {NULL};
    for (int o = 0; o < k->n_outputs && o < 5; o++)
        out[o] = k->outputs[o] ? k->outputs[o]->data : NULL;
    int64_t lanes = g.cbs * g.block, planes = g.n * g.cbs;
    double *sums = tsr_malloc(2 * (size_t)(planes * g.block) * sizeof(double) +
                              3 * (size_t)lanes * sizeof(float));
    if (!sums)
        return TSR_ERR_OUT_OF_MEMORY;
    double *s1 = sums, *s2 = s1 + planes * g.block;
    float *center = (float *)(s2 + planes * g.block), *mul = center + lanes, *add = mul + lanes;
    /* The shift: each channel's first value (padded lanes hold 0). */
    for (int64_t c = 0; c < lanes; c++)
        center[c] = xs[(c / g.block) * g.pixels * g.block + c % g.block];
    const tsr_cpu_train_tiles *t = tiles[s->isa];
    int bi = block_index(g.block);
    int nt = tsr_cpu_threads_for(k->threads, planes * g.pixels * g.block);
    plane_sums(t->sums[0][bi], &g, xs, NULL, center, s1, s2, nt);
    double eps = tsr_attr_float(k->node, "epsilon"), momentum = tsr_attr_float(k->node, "momentum");
    double count = (double)(g.n * g.pixels);
    memset(mul, 0, 2 * (size_t)lanes * sizeof(float));
    for (int64_t c = 0; c < g.c; c++) {
        double a, b;
        channel_total(&g, s1, c, &a);
        channel_total(&g, s2, c, &b);
        double shift = a / count, mean = center[c] + shift;
        double var = b / count - shift * shift;
        if (var < 0.0)
            var = 0.0;
        double inv = 1.0 / sqrt(var + eps);
        mul[c] = (float)(scale[c] * inv);
        add[c] = (float)(bias[c] - mean * scale[c] * inv);
        if (out[1])
            out[1][c] = (float)(momentum * rm[c] + (1.0 - momentum) * mean);
        if (out[2])
            out[2][c] = (float)(momentum * rv[c] + (1.0 - momentum) * var * count / (count - 1));
        if (out[3])
            out[3][c] = (float)mean;
        if (out[4])
            out[4][c] = (float)inv;
    }
    affine_tile affine = t->affine[bi];
    int64_t plane = g.pixels * g.block;
    float *y = out[0];
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t p = 0; p < planes; p++) {
        int64_t c0 = (p % g.cbs) * g.block;
        affine(xs + p * plane, g.pixels, mul + c0, add + c0, y + p * plane);
    }
    free(sums);
    return TSR_OK;
}

static tsr_status bn_train_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    s->run = bn_train_run;
    pick_isa(s, ctx->input_layouts[0]);
    return TSR_OK;
}

/* --------------------------------------------------- BatchNormTrainGrad */

/* dX = scale inv (dY - mean(dY) - (x - mean) inv mean(dY xhat)): per
 * channel, p = scale inv, q = -p inv^2 sum(dY (x - mean)) / M and
 * r = -p mean(dY), as dX = p dY + q (x - mean) + r. */
static tsr_status bn_grad_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[1];
    plane_geom g = geom_of(x, k->input_layouts[1]);
    const float *dys = k->inputs[0]->data, *xs = x->data, *scale = k->inputs[2]->data;
    const float *mean = k->inputs[3]->data, *inv = k->inputs[4]->data;
    float *dscale = k->outputs[1] ? k->outputs[1]->data : NULL;
    float *db = k->outputs[2] ? k->outputs[2]->data : NULL;
    int64_t lanes = g.cbs * g.block, planes = g.n * g.cbs;
    double *sums = tsr_malloc(2 * (size_t)(planes * g.block) * sizeof(double) +
                              4 * (size_t)lanes * sizeof(float));
    if (!sums)
        return TSR_ERR_OUT_OF_MEMORY;
    double *s1 = sums, *s2 = s1 + planes * g.block;
    float *m = (float *)(s2 + planes * g.block), *p = m + lanes, *q = p + lanes, *r = q + lanes;
    memset(m, 0, 4 * (size_t)lanes * sizeof(float));
    memcpy(m, mean, (size_t)g.c * sizeof(float));
    const tsr_cpu_train_tiles *t = tiles[s->isa];
    int bi = block_index(g.block);
    int nt = tsr_cpu_threads_for(k->threads, 2 * planes * g.pixels * g.block);
    plane_sums(t->sums[1][bi], &g, xs, dys, m, s1, s2, nt);
    double count = (double)(g.n * g.pixels);
    for (int64_t c = 0; c < g.c; c++) {
        double sum_dy, sum_dy_xc;
        channel_total(&g, s1, c, &sum_dy);
        channel_total(&g, s2, c, &sum_dy_xc);
        double iv = inv[c], sum_dy_xhat = sum_dy_xc * iv, a = scale[c] * iv;
        if (dscale)
            dscale[c] = (float)sum_dy_xhat;
        if (db)
            db[c] = (float)sum_dy;
        p[c] = (float)a;
        q[c] = (float)(-a * sum_dy_xhat / count * iv);
        r[c] = (float)(-a * sum_dy / count);
    }
    apply_tile apply = t->apply[bi];
    int64_t plane = g.pixels * g.block;
    float *dx = k->outputs[0]->data;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < planes; i++) {
        int64_t c0 = (i % g.cbs) * g.block;
        const float *const coef[4] = {m + c0, p + c0, q + c0, r + c0};
        apply(dys + i * plane, xs + i * plane, g.pixels, coef, dx + i * plane);
    }
    free(sums);
    return TSR_OK;
}

static tsr_status bn_grad_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    s->run = bn_grad_run;
    pick_isa(s, ctx->input_layouts[1]);
    return TSR_OK;
}

/* ---------------------------------------------------- ReluGrad, ClipGrad */

/* Floats per parallel piece. */
#define PIECE 16384

/* dX from dY and the forward tensor (Relu's output, Clip's input), in one
 * layout: the same span of floats, padded lanes included (zero in, zero out). */
static tsr_status mask_grad_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const tsr_tensor *dy = k->inputs[0];
    int64_t n = tsr_tensor_numel(dy);
    if (k->input_layouts[0] != TSR_LAYOUT_PLAIN) {
        plane_geom g = geom_of(dy, k->input_layouts[0]);
        n = g.n * g.cbs * g.block * g.pixels;
    }
    bool clip = k->node->op == &tsr_op_ClipGrad;
    float lo = -INFINITY, hi = INFINITY;
    if (k->n_inputs > 2 && k->inputs[2])
        lo = *(const float *)k->inputs[2]->data;
    if (k->n_inputs > 3 && k->inputs[3])
        hi = *(const float *)k->inputs[3]->data;
    const tsr_cpu_train_tiles *t = tiles[s->isa];
    const float *dys = dy->data, *fwd = k->inputs[1]->data;
    float *dx = k->outputs[0]->data;
    int64_t pieces = (n + PIECE - 1) / PIECE;
    int nt = tsr_cpu_threads_for(k->threads, n);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < pieces; i++) {
        int64_t at = i * PIECE, len = n - at < PIECE ? n - at : PIECE;
        if (clip)
            t->clip_grad(dys + at, fwd + at, lo, hi, dx + at, len);
        else
            t->relu_grad(dys + at, fwd + at, dx + at, len);
    }
    return TSR_OK;
}

static tsr_status mask_grad_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    (void)ctx;
    s->run = mask_grad_run;
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_train_ops[] = {
    {&tsr_op_BatchNormTrain, train_supports, train_layouts, bn_train_prepare},
    {&tsr_op_BatchNormTrainGrad, train_supports, train_layouts, bn_grad_prepare},
    {&tsr_op_ReluGrad, train_supports, train_layouts, mask_grad_prepare},
    {&tsr_op_ClipGrad, train_supports, train_layouts, mask_grad_prepare},
    {NULL},
};

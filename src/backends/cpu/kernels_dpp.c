/* Detail-Preserving Pooling in the cpu backend: DetailPreservingPool and
 * DetailPreservingPoolGrad (domain ai.tessera) in float32, on blocked
 * layouts (vectors across a channel block's lanes, one channel and its own
 * alpha and lambda per lane) and plain (one lane). Each window is read
 * from L1 once per pass, with its logs and exps vectorized (simd_math.h);
 * the math and the numerics are the reference kernels' (src/ops/dpp.c,
 * dpp_kernels.h, docs/dpp.md), with the logs in base 2. float64 is left
 * to ref. */
#include "backends/cpu/kernels_internal.h"
#include "ops/window.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t ih, iw, oh, ow;
    int64_t kh, kw, sh, sw, ph, pw; /* pooling window, stride and leading pads */
    int64_t fh, fw, fph, fpw;       /* full: the pre-filter's size and zero padding; 0 for lite */
    const int64_t *hlo, *hhi, *wlo, *whi; /* window taps inside the input per output row / col */
    const int64_t *fhlo, *fhhi, *fwlo, *fwhi; /* the same for the pre-filter (full) */
    float eps2;
    bool full, symmetric, ratio;
} tsr_cpu_dpp_geom;

/* One channel block's parameters, b lanes each: raw alpha / ln 2 (the
 * tiles work in base-2 logs), lambda / 2 (lambda = exp(raw)) and the
 * pre-filter's taps, tap-major. */
typedef struct {
    const float *a, *hl, *f;
} tsr_cpu_dpp_params;

typedef void (*dpp_row_tile)(const tsr_cpu_dpp_geom *g, const float *x, int64_t x_row0,
                             const tsr_cpu_dpp_params *p, float *y, int64_t oh, float *scratch,
                             bool ahead);
typedef void (*dpp_back_tile)(const tsr_cpu_dpp_geom *g, const float *x, const float *dy,
                              const tsr_cpu_dpp_params *p, float *dx, double *sums, float *scratch);

/* Indexed [0: plain, 1: 8 lanes, 2: 16 lanes]; NULL where the block is
 * narrower than the ISA's vectors. */
typedef struct {
    dpp_row_tile row[3];
    dpp_back_tile back[3];
} tsr_cpu_dpp_tiles;

/* Windows the forward evaluates side by side: each window's evaluation is
 * one long dependency chain (the mean, the logs, their max, the exps, a
 * division), so neighbouring windows go interleaved. */
#define DPP_NW 4

#define TSR_SIMD_LEVEL 0
#include "backends/cpu/tiles_dpp.h"
#undef TSR_SIMD_LEVEL
#if TSR_CPU_X86
#define TSR_SIMD_LEVEL 1
#include "backends/cpu/tiles_dpp.h"
#undef TSR_SIMD_LEVEL
#define TSR_SIMD_LEVEL 2
#include "backends/cpu/tiles_dpp.h"
#undef TSR_SIMD_LEVEL
#elif TSR_CPU_ARM64
#define TSR_SIMD_LEVEL 3
#include "backends/cpu/tiles_dpp.h"
#undef TSR_SIMD_LEVEL
#endif

static const tsr_cpu_dpp_tiles *const tiles[] = {
    [TSR_ISA_PORTABLE] = &dpp_tiles_portable,
#if TSR_CPU_X86
    [TSR_ISA_AVX2] = &dpp_tiles_avx2,
    [TSR_ISA_AVX512] = &dpp_tiles_avx512,
#elif TSR_CPU_ARM64
    [TSR_ISA_NEON] = &dpp_tiles_neon,
#endif
};

/* Window taps held in a band call's stack buffer; larger windows run only
 * whole (run() allocates their scratch). */
enum { DPP_BAND_MAX_TAPS = 64 };

typedef struct {
    tsr_cpu_dpp_geom g;
    int block;
    int64_t channels;
    dpp_row_tile row;
    dpp_back_tile back;
} dpp_data;

/* ------------------------------------------------------------ geometry */

/* Taps k in [0, taps) with 0 <= start + k < size, as [*lo, *hi). */
static void taps_inside(int64_t start, int64_t taps, int64_t size, int64_t *lo, int64_t *hi)
{
    int64_t a = start >= 0 ? 0 : -start;
    int64_t b = size - start < taps ? size - start : taps;
    *lo = a;
    *hi = b > a ? b : a;
}

static void dim_ranges(int64_t out, int64_t stride, int64_t pad, int64_t taps, int64_t size,
                       int64_t *lo, int64_t *hi)
{
    for (int64_t o = 0; o < out; o++)
        taps_inside(o * stride - pad, taps, size, &lo[o], &hi[o]);
}

/* The pooling window: DPP's strides default to the kernel, window.c's to
 * 1, so without a strides attribute it reads a view of the node that has
 * one (as dpp.c does). */
static tsr_status dpp_window(const tsr_node *node, const int64_t *in, const int64_t *kernel,
                             tsr_window *w)
{
    bool ceil_mode = tsr_attr_int(node, "ceil_mode") == 1;
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

/* The geometry of a node at its concrete shapes (the op's inference has
 * validated them), with the tap ranges after the data block. */
static tsr_status dpp_prepare_common(const tsr_prepare_ctx *ctx, int xi, tsr_cpu_state *s)
{
    const tsr_node *node = ctx->node;
    const tsr_value *x = tsr_cpu_input(ctx->graph, node, xi);
    const tsr_value *f = tsr_cpu_input(ctx->graph, node, xi + 3);
    int64_t kernel[2] = {2, 2};
    size_t nk;
    const int64_t *ks = tsr_attr_ints(node, "kernel_shape", &nk);
    if (ks && nk == 2)
        memcpy(kernel, ks, sizeof kernel);
    tsr_window w;
    TSR_CHECK(dpp_window(node, x->dims + 2, kernel, &w));
    int64_t oh = w.out[0], ow = w.out[1];
    size_t n_ranges = (size_t)(2 * (oh + ow)) * (f ? 2 : 1);
    dpp_data *d = tsr_calloc(1, sizeof *d + n_ranges * sizeof(int64_t));
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    double eps = tsr_attr_float(node, "epsilon");
    tsr_cpu_dpp_geom *g = &d->g;
    *g = (tsr_cpu_dpp_geom){.ih = x->dims[2],
                            .iw = x->dims[3],
                            .oh = oh,
                            .ow = ow,
                            .kh = kernel[0],
                            .kw = kernel[1],
                            .sh = w.stride[0],
                            .sw = w.stride[1],
                            .ph = w.pad_begin[0],
                            .pw = w.pad_begin[1],
                            .eps2 = (float)(eps * eps),
                            .full = f != NULL,
                            .symmetric = tsr_attr_int(node, "symmetric") == 1,
                            .ratio = strcmp(tsr_attr_string(node, "normalization"), "ratio") == 0};
    int64_t *r = (int64_t *)(d + 1);
    g->hlo = r;
    g->hhi = r + oh;
    g->wlo = r + 2 * oh;
    g->whi = r + 2 * oh + ow;
    dim_ranges(oh, g->sh, g->ph, g->kh, g->ih, r, r + oh);
    dim_ranges(ow, g->sw, g->pw, g->kw, g->iw, r + 2 * oh, r + 2 * oh + ow);
    if (f) {
        g->fh = f->dims[2];
        g->fw = f->dims[3];
        g->fph = (g->fh - 1) / 2;
        g->fpw = (g->fw - 1) / 2;
        r += 2 * (oh + ow);
        g->fhlo = r;
        g->fhhi = r + oh;
        g->fwlo = r + 2 * oh;
        g->fwhi = r + 2 * oh + ow;
        dim_ranges(oh, g->sh, g->fph, g->fh, g->ih, r, r + oh);
        dim_ranges(ow, g->sw, g->fpw, g->fw, g->iw, r + 2 * oh, r + 2 * oh + ow);
    }
    d->channels = x->dims[1];
    d->block = tsr_layout_block((tsr_layout)ctx->input_layouts[xi]);
    s->isa = tsr_cpu_isa_for_block(s->isa, d->block);
    int bi = d->block == 16 ? 2 : d->block == 8 ? 1 : 0;
    d->row = tiles[s->isa]->row[bi];
    d->back = tiles[s->isa]->back[bi];
    return TSR_OK;
}

/* Packs channel block cb's parameters (b lanes; lanes past C get alpha 0,
 * lambda 0 and a zero filter, which keep their zero lanes finite) into
 * `out`, params_floats() of them. */
static void pack_params(const dpp_data *d, const float *alpha, const float *lambda,
                        const float *filter, int64_t cb, float *out, tsr_cpu_dpp_params *p)
{
    int b = d->block;
    int64_t f_taps = d->g.fh * d->g.fw;
    float *a = out, *hl = out + b, *f = out + 2 * b;
    for (int l = 0; l < b; l++) {
        int64_t c = cb * b + l;
        bool real = c < d->channels;
        a[l] = real ? alpha[c] * 1.44269504088896341f : 0.0f;
        hl[l] = real ? 0.5f * expf(lambda[c]) : 0.0f;
        for (int64_t t = 0; t < f_taps; t++)
            f[t * b + l] = real ? filter[c * f_taps + t] : 0.0f;
    }
    *p = (tsr_cpu_dpp_params){a, hl, f};
}

static int64_t params_floats(const dpp_data *d)
{
    return (2 + d->g.fh * d->g.fw) * d->block;
}

/* Floats from one thread's scratch to the next's: whole cache lines and
 * one more, so that no two threads write the same line or the two lines
 * of one adjacent-line prefetch pair: the tiles rewrite their scratch on
 * every window, so a line shared at a boundary would cross between the
 * cores once per window. */
static int64_t thread_stride(int64_t floats)
{
    const int64_t line = TSR_ALIGNMENT / sizeof(float);
    return (floats + line - 1) / line * line + line;
}

static bool dpp_supports_at(const tsr_graph *g, const tsr_node *node, int xi, char *why,
                            size_t size)
{
    for (int i = 0; i <= xi; i++)
        if (!tsr_cpu_require_f32(g, node, i, why, size))
            return false;
    const tsr_value *x = tsr_cpu_input(g, node, xi);
    if (x->rank != 4) {
        snprintf(why, size, "X of rank %d: the ref backend reports it", x->rank);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------- forward */

static bool dpp_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    return dpp_supports_at(g, node, 0, why, size);
}

static tsr_status dpp_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const dpp_data *d = s->data;
    const tsr_cpu_dpp_geom *g = &d->g;
    const tsr_tensor *x = k->inputs[0];
    int b = d->block;
    int64_t cbs = (x->dims[1] + b - 1) / b, planes = x->dims[0] * cbs, rows = planes * g->oh;
    int64_t in_plane = g->ih * g->iw * b, out_row = g->ow * b, pf = params_floats(d);
    int64_t scratch_per = thread_stride(g->kh * g->kw * DPP_NW * 16);
    int nt = tsr_cpu_threads_for(k->threads, rows * out_row * g->kh * g->kw * 16);
    float *buf = malloc(sizeof(float) * (size_t)(cbs * pf));
    float *scratch = tsr_aligned_alloc(sizeof(float) * (size_t)(nt * scratch_per));
    tsr_cpu_dpp_params *prm = malloc(sizeof *prm * (size_t)cbs);
    if (!buf || !scratch || !prm) {
        free(buf);
        tsr_aligned_free(scratch);
        free(prm);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    const float *filter = g->full ? k->inputs[3]->data : NULL;
    for (int64_t cb = 0; cb < cbs; cb++)
        pack_params(d, k->inputs[1]->data, k->inputs[2]->data, filter, cb, buf + cb * pf, &prm[cb]);
    const float *xs = x->data;
    float *ys = k->outputs[0]->data;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *mine = scratch + omp_get_thread_num() * scratch_per;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            int64_t p = r / g->oh;
            d->row(g, xs + p * in_plane, 0, &prm[p % cbs], ys + r * out_row, r % g->oh, mine, true);
        }
    }
    free(prm);
    tsr_aligned_free(scratch);
    free(buf);
    return TSR_OK;
}

/* Rows [r0, r1) of one image's channel block; the parameters come whole. */
static void dpp_band(const tsr_cpu_state *s, const tsr_band_call *c)
{
    const dpp_data *d = s->data;
    const tsr_cpu_dpp_geom *g = &d->g;
    float pbuf[(2 + DPP_BAND_MAX_TAPS) * 16], scratch[DPP_BAND_MAX_TAPS * DPP_NW * 16];
    tsr_cpu_dpp_params prm;
    pack_params(d, c->in[1].data, c->in[2].data, g->full ? c->in[3].data : NULL, c->cb, pbuf, &prm);
    int64_t out_row = g->ow * d->block;
    float *y = c->out.data + (c->r0 - c->out.row0) * out_row;
    for (int64_t r = c->r0; r < c->r1; r++, y += out_row)
        d->row(g, c->in[0].data, c->in[0].row0, &prm, y, r, scratch, false);
}

/* X blocked even where it arrives plain, with two channels or more: the
 * forward is compute-bound (a log2 and an exp2 per tap), and across a
 * block's lanes each vector evaluates SIMD_W channels where plain data
 * evaluates one, which pays for the reorders in and out many times over. */
static void dpp_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                        uint8_t *wanted, uint8_t *produced)
{
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    tsr_layout main = tsr_cpu_keep_layout(x, available[0]);
    if (main == TSR_LAYOUT_PLAIN && x->rank == 4 && x->dims[1] > 1)
        main = tsr_cpu_layout();
    for (int i = 0; i < node->n_inputs; i++)
        wanted[i] = i == 0 ? (uint8_t)main : TSR_LAYOUT_PLAIN;
    produced[0] = (uint8_t)main;
}

static tsr_status dpp_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    TSR_CHECK(dpp_prepare_common(ctx, 0, s));
    s->run = dpp_run;
    const dpp_data *d = s->data;
    const tsr_cpu_dpp_geom *g = &d->g;
    if (g->kh * g->kw > DPP_BAND_MAX_TAPS || g->fh * g->fw > DPP_BAND_MAX_TAPS)
        return TSR_OK;
    /* Output row r reads the rows of its window and of its pre-filter
     * window: from r * stride - pad on, pad the larger leading padding. */
    int64_t pad = g->ph > g->fph ? g->ph : g->fph;
    int64_t end = g->kh - g->ph > g->fh - g->fph ? g->kh - g->ph : g->fh - g->fph;
    s->band = dpp_band;
    s->band_info =
        (tsr_band_info){.stride = g->sh, .pad = pad, .extent = pad + end, .streamed = 1u};
    return TSR_OK;
}

/* ------------------------------------------------------------ backward */

static bool dpp_grad_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    return dpp_supports_at(g, node, 1, why, size);
}

/* dY and X in X's blocked layout (when it arrives blocked), dX in it too;
 * the parameters and their gradients plain. */
static void dpp_grad_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                             uint8_t *wanted, uint8_t *produced)
{
    tsr_layout main = tsr_cpu_keep_layout(tsr_cpu_input(g, node, 1), available[1]);
    for (int i = 0; i < node->n_inputs; i++)
        wanted[i] = i <= 1 ? (uint8_t)main : TSR_LAYOUT_PLAIN;
    for (int i = 0; i < node->n_outputs; i++)
        produced[i] = i == 0 ? (uint8_t)main : TSR_LAYOUT_PLAIN;
}

static tsr_status dpp_grad_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const dpp_data *d = s->data;
    const tsr_cpu_dpp_geom *g = &d->g;
    const tsr_tensor *x = k->inputs[1];
    int b = d->block;
    int64_t batch = x->dims[0], cbs = (d->channels + b - 1) / b, planes = batch * cbs;
    int64_t in_plane = g->ih * g->iw * b, out_plane = g->oh * g->ow * b, pf = params_floats(d);
    int64_t f_taps = g->fh * g->fw, n_sums = (2 + f_taps) * b;
    int64_t scratch_per = thread_stride(2 * g->kh * g->kw * 16 + n_sums);
    int nt = tsr_cpu_threads_for(k->threads, planes * in_plane * 16);
    if (nt > planes)
        nt = (int)planes;
    float *buf = malloc(sizeof(float) * (size_t)(cbs * pf));
    float *scratch = tsr_aligned_alloc(sizeof(float) * (size_t)(nt * scratch_per));
    tsr_cpu_dpp_params *prm = malloc(sizeof *prm * (size_t)cbs);
    /* Per-plane sums, added up over the batch afterwards in a fixed order,
     * so that results do not depend on the thread count. */
    double *sums = calloc((size_t)(planes * n_sums), sizeof *sums);
    if (!buf || !scratch || !prm || !sums) {
        free(buf);
        tsr_aligned_free(scratch);
        free(prm);
        free(sums);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    const float *filter = g->full ? k->inputs[4]->data : NULL;
    for (int64_t cb = 0; cb < cbs; cb++)
        pack_params(d, k->inputs[2]->data, k->inputs[3]->data, filter, cb, buf + cb * pf, &prm[cb]);
    const float *xs = x->data, *dys = k->inputs[0]->data;
    float *dxs = k->outputs[0]->data;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *mine = scratch + omp_get_thread_num() * scratch_per;
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < planes; p++)
            d->back(g, xs + p * in_plane, dys + p * out_plane, &prm[p % cbs], dxs + p * in_plane,
                    sums + p * n_sums, mine);
    }
    float *dalpha = k->outputs[1]->data, *dlambda = k->outputs[2]->data;
    float *dfilter = k->n_outputs > 3 ? k->outputs[3]->data : NULL;
    for (int64_t c = 0; c < d->channels; c++) {
        int64_t cb = c / b, l = c % b;
        for (int64_t i = 0; i < 2 + (dfilter ? f_taps : 0); i++) {
            double sum = 0.0;
            for (int64_t n = 0; n < batch; n++)
                sum += sums[(n * cbs + cb) * n_sums + i * b + l];
            float *out = i == 0 ? &dalpha[c] : i == 1 ? &dlambda[c] : &dfilter[c * f_taps + i - 2];
            *out = (float)(i == 1 ? sum * 0.69314718055994531 : sum);
        }
    }
    free(sums);
    free(prm);
    tsr_aligned_free(scratch);
    free(buf);
    return TSR_OK;
}

static tsr_status dpp_grad_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    TSR_CHECK(dpp_prepare_common(ctx, 1, s));
    s->run = dpp_grad_run;
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_dpp_ops[] = {
    {&tsr_op_DetailPreservingPool, dpp_supports, dpp_layouts, dpp_prepare},
    {&tsr_op_DetailPreservingPoolGrad, dpp_grad_supports, dpp_grad_layouts, dpp_grad_prepare},
    {NULL},
};

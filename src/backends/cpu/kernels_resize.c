/* Resize and Upsample in the cpu backend: the forms segmentation models
 * upsample with (nearest and bilinear over H and W of a rank-4 float32
 * tensor, any coordinate transform but tf_crop_and_resize, no
 * antialiasing), plain or in the blocked layouts oneDNN's convolutions
 * leave, so the logits need no reorder. The taps come from the op's own
 * tables (ops/resize.h), so this kernel reads exactly what ref reads; with
 * at most two taps per axis an output pixel mixes four input pixels, all
 * of a channel block's lanes at once. */
#include "backends/cpu/kernels_internal.h"
#include "ops/resize.h"

#include <stdlib.h>
#include <string.h>

/* Up to two taps of one output row or column. */
typedef struct {
    int64_t i0, i1;
    float w0, w1;
} two_taps;

typedef struct {
    int64_t ih, iw, oh, ow;
    bool nearest;
    two_taps *rows, *cols;
} resize_data;

static tsr_status node_params(const tsr_graph *g, const tsr_node *node, tsr_resize_params *p)
{
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    tsr_tensor t[3];
    const tsr_tensor *in[3] = {NULL, NULL, NULL};
    bool upsample = node->op == &tsr_op_Upsample;
    for (int i = 0; i < 3; i++) {
        /* Resize: roi, scales, sizes at 1 to 3; Upsample: scales at 1. */
        int slot = upsample ? (i == 1 ? 1 : -1) : i + 1;
        const tsr_value *v = slot >= 0 ? tsr_cpu_input(g, node, slot) : NULL;
        if (v && !v->data)
            return tsr_error(TSR_ERR_UNSUPPORTED, "roi, scales or sizes is computed at run time");
        if (v) {
            t[i] = tsr_value_tensor(v);
            in[i] = &t[i];
        }
    }
    return tsr_resize_params_init(node, x->rank, x->dims, in[0], in[1], in[2], p);
}

/* The taps of axis d as two_taps; false when some output index reads
 * more than two inputs, or none. */
static bool axis_two_taps(const tsr_resize_params *p, int d, two_taps *out, bool *ok)
{
    tsr_resize_axis a;
    if (tsr_resize_axis_init(p, d, &a) != TSR_OK)
        return false;
    *ok = a.max_taps <= 2;
    for (int64_t o = 0; o < p->out[d] && *ok; o++) {
        int64_t t0 = a.start[o], n = a.start[o + 1] - t0;
        *ok = n >= 1;
        if (!*ok || !out)
            continue;
        out[o] = (two_taps){.i0 = a.index[t0],
                            .i1 = a.index[t0 + n - 1],
                            .w0 = (float)a.weight[t0],
                            .w1 = n > 1 ? (float)a.weight[t0 + 1] : 0.0f};
    }
    tsr_resize_axis_free(&a);
    return true;
}

/* Whether N and C pass through: one tap of weight 1 at the same index. */
static bool axis_is_identity(const tsr_resize_params *p, int d)
{
    if (p->in[d] != p->out[d])
        return false;
    tsr_resize_axis a;
    if (tsr_resize_axis_init(p, d, &a) != TSR_OK)
        return false;
    bool same = a.max_taps == 1;
    for (int64_t o = 0; o < p->out[d] && same; o++)
        same = a.start[o + 1] - a.start[o] == 1 && a.index[a.start[o]] == o &&
               a.weight[a.start[o]] == 1.0;
    tsr_resize_axis_free(&a);
    return same;
}

static bool resize_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    if (!tsr_cpu_require_f32(g, node, 0, why, size))
        return false;
    const tsr_value *x = tsr_cpu_input(g, node, 0);
    tsr_resize_params p;
    if (x->rank != 4) {
        snprintf(why, size, "%s of rank %d: the ref backend runs it (rank 4 here)",
                 node->op->name, x->rank);
        return false;
    }
    if (node_params(g, node, &p) != TSR_OK) {
        snprintf(why, size, "%s: %s; the ref backend runs it", node->op->name, tsr_last_error());
        return false;
    }
    if (p.mode == TSR_RESIZE_CUBIC || strcmp(p.transform, "tf_crop_and_resize") == 0) {
        snprintf(why, size, "%s: cubic and tf_crop_and_resize run on the ref backend",
                 node->op->name);
        return false;
    }
    bool two_h = false, two_w = false;
    if (!axis_is_identity(&p, 0) || !axis_is_identity(&p, 1) ||
        !axis_two_taps(&p, 2, NULL, &two_h) || !axis_two_taps(&p, 3, NULL, &two_w) || !two_h ||
        !two_w) {
        snprintf(why, size,
                 "%s: resizes N or C, or reads more than two taps per axis (antialias); the ref "
                 "backend runs it",
                 node->op->name);
        return false;
    }
    return true;
}

/* Output rows [r0, r1) of every (image, channel block) plane. */
static void resize_rows(const resize_data *d, const float *x, float *y, int block, int64_t planes,
                        int threads)
{
    int64_t rows = planes * d->oh, in_pitch = d->iw * block, out_pitch = d->ow * block;
    int nt = tsr_cpu_threads_for(threads, rows * out_pitch);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) {
        int64_t plane = r / d->oh;
        const two_taps *h = &d->rows[r % d->oh];
        const float *x0 = x + (plane * d->ih + h->i0) * in_pitch;
        const float *x1 = x + (plane * d->ih + h->i1) * in_pitch;
        float *yr = y + r * out_pitch;
        if (d->nearest) {
            for (int64_t o = 0; o < d->ow; o++)
                memcpy(yr + o * block, x0 + d->cols[o].i0 * block, (size_t)block * sizeof(float));
            continue;
        }
        for (int64_t o = 0; o < d->ow; o++) {
            const two_taps *w = &d->cols[o];
            const float *a0 = x0 + w->i0 * block, *a1 = x0 + w->i1 * block;
            const float *b0 = x1 + w->i0 * block, *b1 = x1 + w->i1 * block;
            float *out = yr + o * block;
            for (int l = 0; l < block; l++)
                out[l] = h->w0 * (w->w0 * a0[l] + w->w1 * a1[l]) +
                         h->w1 * (w->w0 * b0[l] + w->w1 * b1[l]);
        }
    }
}

static tsr_status resize_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const resize_data *d = s->data;
    const tsr_tensor *x = k->inputs[0];
    int block = tsr_layout_block((tsr_layout)k->input_layouts[0]);
    int64_t planes = x->dims[0] * ((x->dims[1] + block - 1) / block);
    resize_rows(d, x->data, k->outputs[0]->data, block, planes, k->threads);
    return TSR_OK;
}

static tsr_status resize_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    tsr_resize_params p;
    TSR_CHECK(node_params(ctx->graph, ctx->node, &p));
    resize_data *d = tsr_calloc(1, sizeof *d + (size_t)(p.out[2] + p.out[3]) * sizeof(two_taps));
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    s->run = resize_run;
    *d = (resize_data){.ih = p.in[2],
                       .iw = p.in[3],
                       .oh = p.out[2],
                       .ow = p.out[3],
                       .nearest = p.mode == TSR_RESIZE_NEAREST,
                       .rows = (two_taps *)(d + 1)};
    d->cols = d->rows + p.out[2];
    bool ok_h = false, ok_w = false;
    if (!axis_two_taps(&p, 2, d->rows, &ok_h) || !axis_two_taps(&p, 3, d->cols, &ok_w) || !ok_h ||
        !ok_w)
        return tsr_error(TSR_ERR_INTERNAL, "cpu backend: %s reads more than two taps per axis",
                         ctx->node->op->name);
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_resize_ops[] = {
    {&tsr_op_Resize, resize_supports, NULL, resize_prepare},
    {&tsr_op_Upsample, resize_supports, NULL, resize_prepare},
    {NULL},
};

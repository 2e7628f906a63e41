/* RoiAlign (opsets 10 and 16) and its backward op ai.tessera.RoiAlignGrad.
 *
 * Y[r, c] pools the region rois[r] = (x1, y1, x2, y2) of image
 * batch_indices[r] of X [N, C, H, W] into output_height x output_width
 * bins, each the average (or the max) of a grid of bilinear samples:
 * sampling_ratio per side, or ceil(extent / bins) of them when it is 0.
 * Samples follow ONNX's reference (ORT's kernel, itself Caffe2's): a
 * sample more than one pixel outside the map counts as zero, one inside
 * that margin is clamped to the border. "max" takes the largest of the
 * four weighted taps of every sample, not the max of the interpolated
 * values, as ONNX Runtime does. half_pixel (opset 16's default, the
 * exporter's aligned=True) shifts the region by half a pixel;
 * output_half_pixel (opset 10's only behaviour) does not and stretches
 * regions smaller than a pixel to one.
 *
 *   RoiAlignGrad(dY, rois, batch_indices, X) -> dX: each bin's gradient
 *   spread back over the taps of its samples with their weights (avg), or
 *   onto the one weighted tap that won the max (X decides which). rois and
 *   batch_indices get no gradient: the batch indices are integers and the
 *   exporters' rois come from non-differentiated proposals. */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const tsr_attr_def roialign_attrs[] = {
    {"coordinate_transformation_mode", TSR_ATTR_STRING, .s = NULL},
    {"mode", TSR_ATTR_STRING, .s = "avg"},
    {"output_height", TSR_ATTR_INT, .i = 1},
    {"output_width", TSR_ATTR_INT, .i = 1},
    {"sampling_ratio", TSR_ATTR_INT, .i = 0},
    {"spatial_scale", TSR_ATTR_FLOAT, .f = 1.0},
    {NULL}};

typedef struct roi_params {
    bool max_mode, half_pixel;
    int64_t out_h, out_w, sampling_ratio;
    double spatial_scale;
} roi_params;

static tsr_status read_params(const tsr_node *n, roi_params *p)
{
    const char *mode = tsr_attr_string(n, "mode");
    if (strcmp(mode, "avg") != 0 && strcmp(mode, "max") != 0)
        return tsr_error(TSR_ERR_PARSE, "mode is 'avg' or 'max', not '%s'", mode);
    p->max_mode = mode[0] == 'm';
    bool opset10 = n->op == &tsr_op_RoiAlign && n->opset < 16;
    bool has_ctm = tsr_attr_has(n, "coordinate_transformation_mode");
    if (has_ctm && opset10)
        return tsr_error(
            TSR_ERR_PARSE,
            "RoiAlign takes coordinate_transformation_mode from opset 16 on, not at %d", n->opset);
    const char *ctm = has_ctm   ? tsr_attr_string(n, "coordinate_transformation_mode")
                      : opset10 ? "output_half_pixel"
                                : "half_pixel";
    if (strcmp(ctm, "half_pixel") != 0 && strcmp(ctm, "output_half_pixel") != 0)
        return tsr_error(TSR_ERR_PARSE,
                         "coordinate_transformation_mode is 'half_pixel' or 'output_half_pixel', "
                         "not '%s'",
                         ctm);
    p->half_pixel = ctm[0] == 'h';
    p->out_h = tsr_attr_int(n, "output_height");
    p->out_w = tsr_attr_int(n, "output_width");
    p->sampling_ratio = tsr_attr_int(n, "sampling_ratio");
    p->spatial_scale = tsr_attr_float(n, "spatial_scale");
    if (p->out_h < 1 || p->out_w < 1)
        return tsr_error(TSR_ERR_PARSE, "output_height and output_width must be >= 1 (%lld, %lld)",
                         (long long)p->out_h, (long long)p->out_w);
    if (p->sampling_ratio < 0)
        return tsr_error(TSR_ERR_PARSE, "sampling_ratio must be >= 0 (0: adaptive), not %lld",
                         (long long)p->sampling_ratio);
    if (!isfinite(p->spatial_scale))
        return tsr_error(TSR_ERR_PARSE, "spatial_scale must be finite, not %g", p->spatial_scale);
    return TSR_OK;
}

/* Checks X, rois and batch_indices (inputs 0-2, or the same three of
 * RoiAlignGrad at x_input, 1, 2) and sets *n_rois from whichever knows it. */
static tsr_status infer_regions(tsr_infer_ctx *c, int x_input, int64_t *n_rois)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(tsr_infer_require_dtype(c, x_input, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 2, TSR_DTYPE_BIT(TSR_INT64)));
    const tsr_value *x = c->inputs[x_input], *rois = c->inputs[1], *bi = c->inputs[2];
    if (rois->dtype != x->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "rois are %s but X is %s",
                               tsr_dtype_name(rois->dtype), tsr_dtype_name(x->dtype));
    if (x->rank >= 0 && x->rank != 4)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X must be [N, C, H, W], not of rank %d", x->rank);
    if (rois->rank >= 0 && (rois->rank != 2 || tsr_dims_differ(rois->dims[1], 4)))
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "rois must be [num_rois, 4] (x1, y1, x2, y2), not of rank %d%s",
                               rois->rank, rois->rank == 2 ? " with 4 columns" : "");
    if (bi->rank >= 0 && bi->rank != 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "batch_indices must be [num_rois], not of rank %d",
                               bi->rank);
    int64_t from_rois = rois->rank == 2 ? rois->dims[0] : TSR_DIM_UNKNOWN;
    int64_t from_bi = bi->rank == 1 ? bi->dims[0] : TSR_DIM_UNKNOWN;
    if (tsr_dims_differ(from_rois, from_bi))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "rois hold %lld boxes but batch_indices %lld",
                               (long long)from_rois, (long long)from_bi);
    *n_rois = tsr_dim_known(from_rois) || tsr_dim_is_sym(from_rois) ? from_rois : from_bi;
    if (bi->data && x->rank == 4) {
        tsr_tensor t = tsr_value_tensor(bi);
        const int64_t n = tsr_tensor_numel(&t);
        for (int64_t r = 0; r < n; r++) {
            int64_t b = ((const int64_t *)t.data)[r];
            if (b < 0 || (tsr_dim_known(x->dims[0]) && b >= x->dims[0]))
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "batch_indices[%lld] is %lld, outside X's batch of %lld",
                                       (long long)r, (long long)b, (long long)x->dims[0]);
        }
    }
    return TSR_OK;
}

static tsr_status roialign_infer(tsr_infer_ctx *c)
{
    roi_params p;
    TSR_CHECK(read_params(c->node, &p));
    int64_t n_rois = TSR_DIM_UNKNOWN;
    TSR_CHECK(infer_regions(c, 0, &n_rois));
    const tsr_value *x = c->inputs[0];
    int64_t dims[4] = {n_rois, x->rank == 4 ? x->dims[1] : TSR_DIM_UNKNOWN, p.out_h, p.out_w};
    tsr_infer_set(c, 0, x->dtype, 4, dims);
    return TSR_OK;
}

/* Where one region's samples lie, in X's pixel coordinates. */
typedef struct roi_frame {
    double start_h, start_w, bin_h, bin_w;
    int64_t grid_h, grid_w;
    double count; /* samples averaged per bin (at least 1) */
} roi_frame;

/* Adaptive grids beyond this many samples per side come from regions no
 * image has (or from huge coordinates): refused rather than looped over. */
#define ROI_MAX_GRID ((int64_t)1 << 16)

static tsr_status frame_of(const char *op, const roi_params *p, const tsr_tensor *rois, int64_t r,
                           roi_frame *f)
{
    double offset = p->half_pixel ? 0.5 : 0.0, s = p->spatial_scale, v[4];
    for (int k = 0; k < 4; k++) {
        v[k] = tsr_get_f(rois, 4 * r + k) * s - offset;
        if (!isfinite(v[k]))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "%s: rois[%lld] holds %g, not a finite "
                             "coordinate",
                             op, (long long)r, tsr_get_f(rois, 4 * r + k));
    }
    double width = v[2] - v[0], height = v[3] - v[1];
    if (!p->half_pixel) {
        width = fmax(width, 1.0);
        height = fmax(height, 1.0);
    }
    *f = (roi_frame){.start_h = v[1],
                     .start_w = v[0],
                     .bin_h = height / (double)p->out_h,
                     .bin_w = width / (double)p->out_w};
    if (p->sampling_ratio == 0 && fmax(f->bin_h, f->bin_w) > (double)ROI_MAX_GRID)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s: region %lld has bins of %g x %g pixels; adaptive sampling takes at "
                         "most %lld samples per side",
                         op, (long long)r, f->bin_h, f->bin_w, (long long)ROI_MAX_GRID);
    f->grid_h = p->sampling_ratio > 0 ? p->sampling_ratio : (int64_t)ceil(f->bin_h);
    f->grid_w = p->sampling_ratio > 0 ? p->sampling_ratio : (int64_t)ceil(f->bin_w);
    f->count = f->grid_h > 0 && f->grid_w > 0 ? (double)(f->grid_h * f->grid_w) : 1.0;
    return TSR_OK;
}

/* The four taps of one bilinear sample of an H x W plane; all weights are
 * zero for a sample outside the map's one-pixel margin. */
typedef struct roi_taps {
    int64_t at[4];
    double w[4];
} roi_taps;

static roi_taps taps_at(double y, double x, int64_t height, int64_t width)
{
    roi_taps t = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    if (y < -1.0 || y > (double)height || x < -1.0 || x > (double)width)
        return t;
    y = fmax(y, 0.0);
    x = fmax(x, 0.0);
    int64_t y_lo = (int64_t)y, x_lo = (int64_t)x, y_hi = y_lo + 1, x_hi = x_lo + 1;
    if (y_lo >= height - 1) {
        y_lo = y_hi = height - 1;
        y = (double)y_lo;
    }
    if (x_lo >= width - 1) {
        x_lo = x_hi = width - 1;
        x = (double)x_lo;
    }
    double ly = y - (double)y_lo, lx = x - (double)x_lo, hy = 1.0 - ly, hx = 1.0 - lx;
    t.at[0] = y_lo * width + x_lo;
    t.at[1] = y_lo * width + x_hi;
    t.at[2] = y_hi * width + x_lo;
    t.at[3] = y_hi * width + x_hi;
    t.w[0] = hy * hx;
    t.w[1] = hy * lx;
    t.w[2] = ly * hx;
    t.w[3] = ly * lx;
    return t;
}

static roi_taps sample_taps(const roi_frame *f, int64_t ph, int64_t pw, int64_t iy, int64_t ix,
                            int64_t height, int64_t width)
{
    double y =
        f->start_h + (double)ph * f->bin_h + ((double)iy + 0.5) * f->bin_h / (double)f->grid_h;
    double x =
        f->start_w + (double)pw * f->bin_w + ((double)ix + 0.5) * f->bin_w / (double)f->grid_w;
    return taps_at(y, x, height, width);
}

/* Checks the kernel's X, rois, batch_indices against each other and the
 * pooled tensor (Y, or dY) of [R, C, out_h, out_w]. */
static tsr_status check_regions(const char *op, const roi_params *p, const tsr_tensor *x,
                                const tsr_tensor *rois, const tsr_tensor *bi,
                                const tsr_tensor *pooled)
{
    if (x->rank != 4 || rois->rank != 2 || rois->dims[1] != 4 || bi->rank != 1)
        return tsr_error(TSR_ERR_SHAPE,
                         "%s: X must be [N, C, H, W], rois [R, 4] and batch_indices [R] (ranks %d, "
                         "%d, %d)",
                         op, x->rank, rois->rank, bi->rank);
    int64_t n_rois = rois->dims[0];
    if (bi->dims[0] != n_rois)
        return tsr_error(TSR_ERR_SHAPE, "%s: rois hold %lld boxes but batch_indices %lld", op,
                         (long long)n_rois, (long long)bi->dims[0]);
    if (pooled->rank != 4 || pooled->dims[0] != n_rois || pooled->dims[1] != x->dims[1] ||
        pooled->dims[2] != p->out_h || pooled->dims[3] != p->out_w)
        return tsr_error(TSR_ERR_SHAPE,
                         "%s: the pooled tensor must be [%lld, %lld, %lld, %lld] for %lld regions",
                         op, (long long)n_rois, (long long)x->dims[1], (long long)p->out_h,
                         (long long)p->out_w, (long long)n_rois);
    const int64_t *b = bi->data;
    for (int64_t r = 0; r < n_rois; r++)
        if (b[r] < 0 || b[r] >= x->dims[0])
            return tsr_error(TSR_ERR_SHAPE,
                             "%s: batch_indices[%lld] is %lld, outside X's batch of %lld", op,
                             (long long)r, (long long)b[r], (long long)x->dims[0]);
    return TSR_OK;
}

static tsr_status roialign_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0], *rois = k->inputs[1], *bi = k->inputs[2];
    tsr_tensor *y = k->outputs[0];
    roi_params p;
    TSR_CHECK(read_params(k->node, &p));
    TSR_CHECK(check_regions("RoiAlign", &p, x, rois, bi, y));
    int64_t channels = x->dims[1], height = x->dims[2], width = x->dims[3];
    int64_t plane = height * width, bins = p.out_h * p.out_w;
    memset(y->data, 0, (size_t)tsr_tensor_numel(y) * tsr_dtype_size(y->dtype));
    if (plane == 0 || channels == 0)
        return TSR_OK;
    /* A row of samples' taps, computed once for every channel, and each
     * channel's sum (or max) over the bin. */
    double *acc = tsr_malloc((size_t)channels * sizeof(*acc));
    roi_taps *row = NULL;
    int64_t row_cap = 0;
    tsr_status st = acc ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    for (int64_t r = 0; st == TSR_OK && r < rois->dims[0]; r++) {
        roi_frame f;
        if ((st = frame_of("RoiAlign", &p, rois, r, &f)) != TSR_OK)
            break;
        if (f.grid_w > row_cap) {
            free(row);
            row_cap = f.grid_w;
            if (!(row = tsr_malloc((size_t)row_cap * sizeof(*row)))) {
                st = TSR_ERR_OUT_OF_MEMORY;
                break;
            }
        }
        int64_t image = ((const int64_t *)bi->data)[r] * channels * plane;
        for (int64_t ph = 0; ph < p.out_h; ph++)
            for (int64_t pw = 0; pw < p.out_w; pw++) {
                for (int64_t c = 0; c < channels; c++)
                    acc[c] = p.max_mode ? -INFINITY : 0.0;
                for (int64_t iy = 0; iy < f.grid_h; iy++) {
                    for (int64_t ix = 0; ix < f.grid_w; ix++)
                        row[ix] = sample_taps(&f, ph, pw, iy, ix, height, width);
                    for (int64_t c = 0; c < channels; c++) {
                        int64_t src = image + c * plane;
                        double a = acc[c];
                        for (int64_t ix = 0; ix < f.grid_w; ix++)
                            for (int q = 0; q < 4; q++) {
                                double v = row[ix].w[q] * tsr_get_f(x, src + row[ix].at[q]);
                                a = p.max_mode ? fmax(a, v) : a + v;
                            }
                        acc[c] = a;
                    }
                }
                for (int64_t c = 0; c < channels; c++) {
                    bool empty = f.grid_h <= 0 || f.grid_w <= 0;
                    double v = !p.max_mode ? acc[c] / f.count : empty ? 0.0 : acc[c];
                    tsr_set_f(y, (r * channels + c) * bins + ph * p.out_w + pw, v);
                }
            }
    }
    free(acc);
    free(row);
    return st;
}

static void emit_attrs(const roi_params *p, tsr_attr attrs[6])
{
    attrs[0] = TSR_ATTR_S("coordinate_transformation_mode",
                          p->half_pixel ? "half_pixel" : "output_half_pixel");
    attrs[1] = TSR_ATTR_S("mode", p->max_mode ? "max" : "avg");
    attrs[2] = TSR_ATTR_I("output_height", p->out_h);
    attrs[3] = TSR_ATTR_I("output_width", p->out_w);
    attrs[4] = TSR_ATTR_I("sampling_ratio", p->sampling_ratio);
    attrs[5] = TSR_ATTR_F("spatial_scale", p->spatial_scale);
}

/* dX = RoiAlignGrad(dY, rois, batch_indices, X), the attributes resolved
 * (an opset-10 node's output_half_pixel named), so that the backward op
 * needs no opset. */
static tsr_status roialign_grad(tsr_grad_ctx *c)
{
    const char *dy = tsr_grad_dy(c, 0);
    if (!dy || !tsr_grad_wants(c, 0))
        return TSR_OK;
    roi_params p;
    TSR_CHECK(read_params(tsr_grad_node(c), &p));
    tsr_attr attrs[6];
    emit_attrs(&p, attrs);
    const char *ins[4] = {dy, tsr_grad_input(c, 1), tsr_grad_input(c, 2), tsr_grad_input(c, 0)};
    const char *dx;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_RoiAlignGrad, 4, ins, 6, attrs, 1, &dx));
    return tsr_grad_contribute(c, 0, dx);
}

const tsr_op_def tsr_op_RoiAlign = {
    .name = "RoiAlign",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = roialign_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = roialign_infer,
    .ref = roialign_ref,
    .grad = roialign_grad,
};

/* --------------------------------------------------------- RoiAlignGrad */

static tsr_status roialign_grad_infer(tsr_infer_ctx *c)
{
    roi_params p;
    TSR_CHECK(read_params(c->node, &p));
    int64_t n_rois = TSR_DIM_UNKNOWN;
    TSR_CHECK(infer_regions(c, 3, &n_rois));
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *dy = c->inputs[0], *x = c->inputs[3];
    if (dy->dtype != x->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "dY is %s but X is %s", tsr_dtype_name(dy->dtype),
                               tsr_dtype_name(x->dtype));
    if (dy->rank >= 0 && (dy->rank != 4 || tsr_dims_differ(dy->dims[0], n_rois) ||
                          (x->rank == 4 && tsr_dims_differ(dy->dims[1], x->dims[1])) ||
                          tsr_dims_differ(dy->dims[2], p.out_h) || tsr_dims_differ(dy->dims[3], p.out_w)))
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "dY must be [num_rois, C, %lld, %lld] like RoiAlign's output",
                               (long long)p.out_h, (long long)p.out_w);
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

/* The weighted tap that won one bin's max, per channel. */
typedef struct roi_winner {
    double value, weight;
    int64_t at;
} roi_winner;

static tsr_status roialign_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *dy = k->inputs[0], *rois = k->inputs[1], *bi = k->inputs[2];
    const tsr_tensor *x = k->inputs[3];
    tsr_tensor *dx = k->outputs[0];
    roi_params p;
    TSR_CHECK(read_params(k->node, &p));
    TSR_CHECK(check_regions("RoiAlignGrad", &p, x, rois, bi, dy));
    int64_t channels = x->dims[1], height = x->dims[2], width = x->dims[3];
    int64_t plane = height * width, bins = p.out_h * p.out_w;
    memset(dx->data, 0, (size_t)tsr_tensor_numel(dx) * tsr_dtype_size(dx->dtype));
    if (plane == 0 || channels == 0)
        return TSR_OK;
    roi_winner *win = NULL;
    if (p.max_mode && !(win = tsr_malloc((size_t)channels * sizeof(*win))))
        return TSR_ERR_OUT_OF_MEMORY;
    for (int64_t r = 0; r < rois->dims[0]; r++) {
        roi_frame f;
        tsr_status st = frame_of("RoiAlignGrad", &p, rois, r, &f);
        if (st != TSR_OK) {
            free(win);
            return st;
        }
        int64_t image = ((const int64_t *)bi->data)[r] * channels * plane;
        for (int64_t ph = 0; ph < p.out_h; ph++)
            for (int64_t pw = 0; pw < p.out_w; pw++) {
                int64_t bin = ph * p.out_w + pw;
                for (int64_t iy = 0; iy < f.grid_h; iy++)
                    for (int64_t ix = 0; ix < f.grid_w; ix++) {
                        roi_taps t = sample_taps(&f, ph, pw, iy, ix, height, width);
                        for (int64_t c = 0; c < channels; c++) {
                            int64_t base = image + c * plane;
                            if (!p.max_mode) {
                                double g = tsr_get_f(dy, (r * channels + c) * bins + bin) / f.count;
                                for (int q = 0; q < 4; q++)
                                    tsr_set_f(dx, base + t.at[q],
                                              tsr_get_f(dx, base + t.at[q]) + t.w[q] * g);
                                continue;
                            }
                            for (int q = 0; q < 4; q++) {
                                double v = t.w[q] * tsr_get_f(x, base + t.at[q]);
                                if ((iy == 0 && ix == 0 && q == 0) || v > win[c].value)
                                    win[c] = (roi_winner){v, t.w[q], base + t.at[q]};
                            }
                        }
                    }
                if (!p.max_mode || f.grid_h <= 0 || f.grid_w <= 0)
                    continue;
                for (int64_t c = 0; c < channels; c++) {
                    double g = tsr_get_f(dy, (r * channels + c) * bins + bin);
                    tsr_set_f(dx, win[c].at, tsr_get_f(dx, win[c].at) + win[c].weight * g);
                }
            }
    }
    free(win);
    return TSR_OK;
}

/* RoiAlignGrad is linear in dY; in avg mode its adjoint is RoiAlign
 * itself. X only gives the shape (avg) or picks the taps (max, piecewise
 * constant): no gradient. */
static tsr_status roialign_grad_grad(tsr_grad_ctx *c)
{
    const char *ddx = tsr_grad_dy(c, 0);
    if (!ddx || !tsr_grad_wants(c, 0))
        return TSR_OK;
    roi_params p;
    TSR_CHECK(read_params(tsr_grad_node(c), &p));
    if (p.max_mode)
        return tsr_grad_unsupported(c, "the second derivative of RoiAlign in max mode");
    tsr_attr attrs[6];
    emit_attrs(&p, attrs);
    const char *ins[3] = {ddx, tsr_grad_input(c, 1), tsr_grad_input(c, 2)};
    const char *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_RoiAlign, 3, ins, 6, attrs, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_RoiAlignGrad = {
    .name = "RoiAlignGrad",
    .domain = "ai.tessera",
    .min_inputs = 4,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = roialign_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = roialign_grad_infer,
    .ref = roialign_grad_ref,
    .grad = roialign_grad_grad,
};

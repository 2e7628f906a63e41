/* Resize (opsets 11 to 19: nearest with each rounding, n-linear and cubic
 * interpolation, every coordinate transformation, scales or sizes, axes,
 * keep_aspect_ratio_policy and antialias), Upsample (the older form: the
 * asymmetric transform with floor rounding) and ResizeGrad, the adjoint
 * that Resize's gradient rule builds (domain ai.tessera):
 *   ResizeGrad(dY, x_shape, roi, scales, sizes) -> dX
 * with Resize's attributes and its roi, scales and sizes, so that the
 * taps it spreads dY back over are the ones the forward read.
 *
 * Every mode is linear in X, so one tap table per axis (resize.h) serves
 * the forward kernel, its adjoint and the cpu backend. Output sizes come
 * from scales or sizes, which exports hold as constants; when they are
 * computed at run time the output's dims stay unknown and planning says
 * so. */
#include "ops/resize.h"

#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const tsr_attr_def resize_attrs[] = {
    {"antialias", TSR_ATTR_INT, .i = 0},
    {"axes", TSR_ATTR_INTS},
    {"coordinate_transformation_mode", TSR_ATTR_STRING, .s = "half_pixel"},
    {"cubic_coeff_a", TSR_ATTR_FLOAT, .f = -0.75},
    {"exclude_outside", TSR_ATTR_INT, .i = 0},
    {"extrapolation_value", TSR_ATTR_FLOAT, .f = 0.0},
    {"keep_aspect_ratio_policy", TSR_ATTR_STRING, .s = "stretch"},
    {"mode", TSR_ATTR_STRING, .s = "nearest"},
    {"nearest_mode", TSR_ATTR_STRING, .s = "round_prefer_floor"},
    {NULL}};

static const tsr_attr_def upsample_attrs[] = {
    {"mode", TSR_ATTR_STRING, .s = "nearest"}, {"scales", TSR_ATTR_FLOATS}, {NULL}};

/* Input positions of roi, scales and sizes for each op; -1: it has none. */
typedef struct {
    int roi, scales, sizes;
} resize_slots;

static resize_slots slots_of(const tsr_node *node)
{
    if (node->op == &tsr_op_Upsample)
        return (resize_slots){-1, 1, -1};
    if (node->op == &tsr_op_ResizeGrad)
        return (resize_slots){2, 3, 4};
    return (resize_slots){1, 2, 3};
}

static bool is_one_of(const char *s, const char *const *names)
{
    for (; *names; names++)
        if (strcmp(s, *names) == 0)
            return true;
    return false;
}

static tsr_status read_mode(const tsr_node *node, tsr_resize_params *p)
{
    const char *mode = tsr_attr_string(node, "mode");
    bool upsample = node->op == &tsr_op_Upsample;
    if (strcmp(mode, "nearest") == 0)
        p->mode = TSR_RESIZE_NEAREST;
    else if (strcmp(mode, "linear") == 0 || (upsample && strcmp(mode, "bilinear") == 0))
        p->mode = TSR_RESIZE_LINEAR;
    else if (!upsample && strcmp(mode, "cubic") == 0)
        p->mode = TSR_RESIZE_CUBIC;
    else
        return tsr_error(TSR_ERR_UNSUPPORTED, "mode '%s' is not one of %s", mode,
                         upsample ? "nearest, linear, bilinear" : "nearest, linear, cubic");
    if (upsample) {
        p->transform = "asymmetric";
        p->nearest = "floor";
        p->cubic_a = -0.75;
        return TSR_OK;
    }
    static const char *const transforms[] = {
        "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
        "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize", NULL};
    static const char *const nearests[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                           "ceil", NULL};
    p->transform = tsr_attr_string(node, "coordinate_transformation_mode");
    p->nearest = tsr_attr_string(node, "nearest_mode");
    if (!is_one_of(p->transform, transforms))
        return tsr_error(TSR_ERR_UNSUPPORTED, "coordinate_transformation_mode '%s' is unknown",
                         p->transform);
    if (!is_one_of(p->nearest, nearests))
        return tsr_error(TSR_ERR_UNSUPPORTED, "nearest_mode '%s' is unknown", p->nearest);
    int64_t exclude = tsr_attr_int(node, "exclude_outside"),
            antialias = tsr_attr_int(node, "antialias");
    if ((exclude != 0 && exclude != 1) || (antialias != 0 && antialias != 1))
        return tsr_error(TSR_ERR_SHAPE, "exclude_outside and antialias must be 0 or 1");
    p->exclude_outside = exclude == 1;
    p->antialias = antialias == 1;
    p->cubic_a = tsr_attr_float(node, "cubic_coeff_a");
    p->extrapolation = tsr_attr_float(node, "extrapolation_value");
    return TSR_OK;
}

/* The axes that scales, sizes and roi list (all of them unless `axes`). */
static tsr_status read_axes(const tsr_node *node, int rank, int *axes, int *n_axes)
{
    size_t n = 0;
    const int64_t *given = node->op == &tsr_op_Upsample ? NULL : tsr_attr_ints(node, "axes", &n);
    if (!given) {
        for (int d = 0; d < rank; d++)
            axes[d] = d;
        *n_axes = rank;
        return TSR_OK;
    }
    if ((int)n > rank)
        return tsr_error(TSR_ERR_SHAPE, "axes lists %zu axes for an input of rank %d", n, rank);
    bool seen[TSR_MAX_RANK] = {false};
    for (size_t i = 0; i < n; i++) {
        int a;
        if (!tsr_axis_normalize(given[i], rank, &a) || seen[a])
            return tsr_error(TSR_ERR_SHAPE, "axes[%zu] = %lld is out of range or repeated", i,
                             (long long)given[i]);
        seen[a] = true;
        axes[i] = a;
    }
    *n_axes = (int)n;
    return TSR_OK;
}

static bool absent(const tsr_tensor *t) { return !t || tsr_tensor_numel(t) == 0; }

static tsr_status read_floats(const tsr_tensor *t, const char *what, int n, double *out)
{
    if (t->dtype != TSR_FLOAT32 && t->dtype != TSR_FLOAT64)
        return tsr_error(TSR_ERR_DTYPE, "%s must be float, got %s", what, tsr_dtype_name(t->dtype));
    if (t->rank != 1 || t->dims[0] != n)
        return tsr_error(TSR_ERR_SHAPE, "%s must be 1-D with %d values", what, n);
    for (int i = 0; i < n; i++)
        out[i] = tsr_get_f(t, i);
    return TSR_OK;
}

/* Upsample before opset 9 holds its scales in an attribute. */
static tsr_status upsample_attr_scales(const tsr_node *node, int rank, double *scales, bool *found)
{
    size_t n;
    const double *s = tsr_attr_floats(node, "scales", &n);
    *found = s != NULL;
    if (!s)
        return TSR_OK;
    if ((int)n != rank)
        return tsr_error(TSR_ERR_SHAPE, "scales has %zu values for an input of rank %d", n, rank);
    memcpy(scales, s, n * sizeof *s);
    return TSR_OK;
}

tsr_status tsr_resize_params_init(const tsr_node *node, int rank, const int64_t *in,
                                  const tsr_tensor *roi, const tsr_tensor *scales,
                                  const tsr_tensor *sizes, tsr_resize_params *p)
{
    memset(p, 0, sizeof *p);
    if (rank < 1)
        return tsr_error(TSR_ERR_SHAPE, "X has rank %d; %s needs rank 1 or more", rank,
                         node->op->name);
    TSR_CHECK(read_mode(node, p));
    p->rank = rank;
    int axes[TSR_MAX_RANK], n_axes = 0;
    TSR_CHECK(read_axes(node, rank, axes, &n_axes));
    for (int d = 0; d < rank; d++) {
        p->in[d] = in[d];
        p->out[d] = in[d];
        p->scale[d] = 1.0;
        p->roi_start[d] = 0.0;
        p->roi_end[d] = 1.0;
    }
    bool crop = strcmp(p->transform, "tf_crop_and_resize") == 0;
    if (crop) {
        double r[2 * TSR_MAX_RANK];
        if (absent(roi))
            return tsr_error(TSR_ERR_SHAPE, "tf_crop_and_resize needs a roi");
        TSR_CHECK(read_floats(roi, "roi", 2 * n_axes, r));
        for (int i = 0; i < n_axes; i++) {
            p->roi_start[axes[i]] = r[i];
            p->roi_end[axes[i]] = r[n_axes + i];
        }
    }
    double v[TSR_MAX_RANK];
    bool attr_scales = false;
    if (node->op == &tsr_op_Upsample)
        TSR_CHECK(upsample_attr_scales(node, rank, v, &attr_scales));
    if (!absent(scales) && !absent(sizes))
        return tsr_error(TSR_ERR_SHAPE, "scales and sizes are both given; exactly one must be");
    if (!attr_scales && !absent(scales))
        TSR_CHECK(read_floats(scales, "scales", n_axes, v));
    if (attr_scales || !absent(scales)) {
        for (int i = 0; i < n_axes; i++) {
            int d = axes[i];
            if (!(v[i] > 0.0) || !isfinite(v[i]))
                return tsr_error(TSR_ERR_SHAPE, "scales[%d] is %g, must be positive", i, v[i]);
            p->scale[d] = v[i];
            double span = crop ? p->roi_end[d] - p->roi_start[d] : 1.0;
            p->out[d] = (int64_t)floor((double)in[d] * span * v[i]);
        }
        return TSR_OK;
    }
    if (absent(sizes))
        return tsr_error(TSR_ERR_SHAPE, "%s needs scales or sizes", node->op->name);
    int64_t s[TSR_MAX_RANK];
    int count;
    TSR_CHECK(tsr_kernel_ints(sizes, s, TSR_MAX_RANK, &count));
    if (count != n_axes)
        return tsr_error(TSR_ERR_SHAPE, "sizes has %d values, %d expected", count, n_axes);
    const char *policy = tsr_attr_string(node, "keep_aspect_ratio_policy");
    bool not_larger = strcmp(policy, "not_larger") == 0,
         not_smaller = strcmp(policy, "not_smaller") == 0;
    if (!not_larger && !not_smaller && strcmp(policy, "stretch") != 0)
        return tsr_error(TSR_ERR_UNSUPPORTED, "keep_aspect_ratio_policy '%s' is unknown", policy);
    double common = not_larger ? INFINITY : 0.0;
    for (int i = 0; i < n_axes; i++) {
        int d = axes[i];
        if (s[i] < 0 || in[d] <= 0)
            return tsr_error(TSR_ERR_SHAPE, "sizes[%d] is %lld for an axis of size %lld", i,
                             (long long)s[i], (long long)in[d]);
        p->out[d] = s[i];
        p->scale[d] = (double)s[i] / (double)in[d];
        common = not_larger ? fmin(common, p->scale[d]) : fmax(common, p->scale[d]);
    }
    if (not_larger || not_smaller)
        for (int i = 0; i < n_axes; i++) {
            int d = axes[i];
            p->scale[d] = common;
            p->out[d] = (int64_t)round(common * (double)in[d]);
        }
    return TSR_OK;
}

/* ------------------------------------------------------------------ taps */

/* Where output index o of an axis lies in the input's coordinates. */
static double source_coordinate(const tsr_resize_params *p, int d, int64_t o)
{
    const char *t = p->transform;
    double in = (double)p->in[d], out = (double)p->out[d], s = p->scale[d], x = (double)o;
    if (strcmp(t, "half_pixel") == 0)
        return (x + 0.5) / s - 0.5;
    if (strcmp(t, "half_pixel_symmetric") == 0) {
        double adjustment = out / (s * in), center = in / 2.0;
        return center * (1.0 - adjustment) + (x + 0.5) / s - 0.5;
    }
    if (strcmp(t, "pytorch_half_pixel") == 0)
        return out > 1 ? (x + 0.5) / s - 0.5 : 0.0;
    if (strcmp(t, "align_corners") == 0)
        return out == 1 ? 0.0 : x * (in - 1.0) / (out - 1.0);
    if (strcmp(t, "tf_half_pixel_for_nn") == 0)
        return (x + 0.5) / s;
    if (strcmp(t, "tf_crop_and_resize") == 0) {
        double a = p->roi_start[d], b = p->roi_end[d];
        return out > 1 ? a * (in - 1.0) + x * (b - a) * (in - 1.0) / (out - 1.0)
                       : 0.5 * (a + b) * (in - 1.0);
    }
    return x / s; /* asymmetric */
}

static int64_t nearest_index(const char *mode, double x)
{
    double f = floor(x);
    bool half = x - f == 0.5;
    if (strcmp(mode, "floor") == 0)
        return (int64_t)f;
    if (strcmp(mode, "ceil") == 0)
        return (int64_t)ceil(x);
    if (half)
        return (int64_t)(strcmp(mode, "round_prefer_ceil") == 0 ? f + 1.0 : f);
    return (int64_t)round(x);
}

/* The interpolation kernel at distance t (in input pixels, scaled). */
static double kernel_at(const tsr_resize_params *p, double t)
{
    t = fabs(t);
    if (p->mode == TSR_RESIZE_LINEAR)
        return t < 1.0 ? 1.0 - t : 0.0;
    double a = p->cubic_a;
    if (t <= 1.0)
        return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
    if (t < 2.0)
        return ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a;
    return 0.0;
}

static int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

/* Adds the taps of coordinate x to the end of a; returns their count. */
static int64_t add_taps(const tsr_resize_params *p, int d, double x, tsr_resize_axis *a,
                        int64_t at)
{
    int64_t n = p->in[d];
    if (p->mode == TSR_RESIZE_NEAREST) {
        a->index[at] = clamp_index(nearest_index(p->nearest, x), n);
        a->weight[at] = 1.0;
        return 1;
    }
    /* Antialias widens the kernel by 1/scale when shrinking. */
    double s = p->antialias && p->scale[d] < 1.0 ? p->scale[d] : 1.0;
    double radius = (p->mode == TSR_RESIZE_LINEAR ? 1.0 : 2.0) / s, sum = 0.0;
    int64_t count = 0;
    for (int64_t i = (int64_t)floor(x - radius); i <= (int64_t)ceil(x + radius); i++) {
        double w = kernel_at(p, ((double)i - x) * s);
        bool inside = i >= 0 && i < n;
        if (w == 0.0 || (!inside && p->exclude_outside))
            continue;
        int64_t idx = clamp_index(i, n);
        sum += w;
        if (count > 0 && a->index[at + count - 1] == idx) {
            a->weight[at + count - 1] += w;
            continue;
        }
        a->index[at + count] = idx;
        a->weight[at + count] = w;
        count++;
    }
    for (int64_t k = 0; k < count && sum != 0.0; k++)
        a->weight[at + k] /= sum;
    return count;
}

tsr_status tsr_resize_axis_init(const tsr_resize_params *p, int d, tsr_resize_axis *a)
{
    memset(a, 0, sizeof *a);
    int64_t out = p->out[d], per = 1;
    if (p->mode != TSR_RESIZE_NEAREST) {
        double s = p->antialias && p->scale[d] < 1.0 ? p->scale[d] : 1.0;
        per = 2 * (int64_t)ceil((p->mode == TSR_RESIZE_LINEAR ? 1.0 : 2.0) / s) + 3;
    }
    a->start = tsr_calloc((size_t)out + 1, sizeof *a->start);
    a->index = tsr_calloc((size_t)(out * per) + 1, sizeof *a->index);
    a->weight = tsr_calloc((size_t)(out * per) + 1, sizeof *a->weight);
    a->outside = tsr_calloc((size_t)out + 1, sizeof *a->outside);
    if (!a->start || !a->index || !a->weight || !a->outside) {
        tsr_resize_axis_free(a);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    bool crop = strcmp(p->transform, "tf_crop_and_resize") == 0;
    int64_t at = 0;
    for (int64_t o = 0; o < out; o++) {
        a->start[o] = at;
        double x = source_coordinate(p, d, o);
        a->outside[o] = crop && (x < 0.0 || x > (double)(p->in[d] - 1));
        int64_t n = a->outside[o] ? 0 : add_taps(p, d, x, a, at);
        at += n;
        if (n > a->max_taps)
            a->max_taps = n;
    }
    a->start[out] = at;
    return TSR_OK;
}

void tsr_resize_axis_free(tsr_resize_axis *a)
{
    free(a->start);
    free(a->index);
    free(a->weight);
    free(a->outside);
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------ inference */

static const tsr_value *slot_value(const tsr_infer_ctx *c, int slot)
{
    return slot >= 0 && slot < c->n_inputs ? c->inputs[slot] : NULL;
}

/* Inference's view of a roi, scales or sizes input: *t set when it is a
 * constant, *known false when it is computed at run time. */
static void slot_tensor(const tsr_infer_ctx *c, int slot, tsr_tensor *t, const tsr_tensor **out,
                        bool *known)
{
    const tsr_value *v = slot_value(c, slot);
    *out = NULL;
    if (!v)
        return;
    if (!v->data) {
        *known = false;
        return;
    }
    *t = tsr_value_tensor(v);
    *out = t;
}

static tsr_status resize_infer_dims(tsr_infer_ctx *c, int rank, const int64_t *in)
{
    resize_slots s = slots_of(c->node);
    tsr_tensor roi_t, scales_t, sizes_t;
    const tsr_tensor *roi, *scales, *sizes;
    bool known = true;
    slot_tensor(c, s.roi, &roi_t, &roi, &known);
    slot_tensor(c, s.scales, &scales_t, &scales, &known);
    slot_tensor(c, s.sizes, &sizes_t, &sizes, &known);
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < rank; d++)
        known = known && tsr_dim_known(in[d]);
    if (known) {
        tsr_resize_params p;
        tsr_status st = tsr_resize_params_init(c->node, rank, in, roi, scales, sizes, &p);
        if (st != TSR_OK)
            return tsr_infer_error(c, st, "%s", tsr_last_error());
        memcpy(dims, p.out, sizeof(int64_t) * (size_t)rank);
    } else {
        /* Sizes known only at run time: an axis that the constant scales
         * leave alone keeps its (maybe symbolic) size. */
        double v[TSR_MAX_RANK];
        bool scales_known = scales && !absent(scales) && scales->rank == 1 &&
                            scales->dims[0] == rank && !tsr_attr_has(c->node, "axes") &&
                            read_floats(scales, "scales", rank, v) == TSR_OK;
        for (int d = 0; d < rank; d++)
            dims[d] = scales_known && v[d] == 1.0 ? in[d] : TSR_DIM_UNKNOWN;
    }
    tsr_infer_set(c, 0, c->inputs[0]->dtype, rank, dims);
    return TSR_OK;
}

static tsr_status require_mode_dtype(tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0];
    tsr_resize_params p;
    tsr_status st = read_mode(c->node, &p);
    if (st != TSR_OK)
        return tsr_infer_error(c, st, "%s", tsr_last_error());
    if (p.mode == TSR_RESIZE_NEAREST) {
        if (!tsr_dtype_size(x->dtype))
            return tsr_infer_error(c, TSR_ERR_DTYPE, "X has no dtype");
        return TSR_OK;
    }
    if (!tsr_dtype_is_float(x->dtype))
        return tsr_infer_error(c, TSR_ERR_DTYPE,
                               "%s interpolation of %s is not supported (nearest is, on every "
                               "dtype; linear and cubic on float32 and float64)",
                               tsr_attr_string(c->node, "mode"), tsr_dtype_name(x->dtype));
    return TSR_OK;
}

static tsr_status resize_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(require_mode_dtype(c));
    const tsr_value *x = c->inputs[0];
    if (x->rank < 0) {
        tsr_infer_set(c, 0, x->dtype, -1, NULL);
        return TSR_OK;
    }
    return resize_infer_dims(c, x->rank, x->dims);
}

static tsr_status resize_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *dy = c->inputs[0];
    int64_t shape[TSR_MAX_RANK], dims[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 1, "x_shape", shape, TSR_MAX_RANK, &n, &known));
    if (n >= 0 && dy->rank >= 0 && n != dy->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "x_shape has %d entries for dY of rank %d", n,
                               dy->rank);
    for (int d = 0; d < dy->rank; d++)
        dims[d] = known ? shape[d] : TSR_DIM_UNKNOWN;
    tsr_infer_set(c, 0, dy->dtype, dy->rank, dims);
    return TSR_OK;
}

static double resize_flops(const tsr_infer_ctx *c)
{
    const tsr_value *y = c->outputs[0];
    int64_t n = tsr_shape_numel(y->rank, y->dims);
    return n < 0 ? 0.0 : 2.0 * (double)n * (double)(1 << (y->rank < 3 ? y->rank : 2));
}

/* -------------------------------------------------------------- kernels */

static const tsr_tensor *slot_input(const tsr_kernel_ctx *k, int slot)
{
    return slot >= 0 && slot < k->n_inputs ? k->inputs[slot] : NULL;
}

tsr_status tsr_resize_kernel_params(const tsr_kernel_ctx *k, tsr_resize_params *p)
{
    resize_slots s = slots_of(k->node);
    const tsr_tensor *x = k->inputs[0];
    const tsr_tensor *roi = slot_input(k, s.roi), *scales = slot_input(k, s.scales),
                     *sizes = slot_input(k, s.sizes);
    if (k->node->op != &tsr_op_ResizeGrad)
        return tsr_resize_params_init(k->node, x->rank, x->dims, roi, scales, sizes, p);
    int64_t in[TSR_MAX_RANK];
    int n;
    TSR_CHECK(tsr_kernel_ints(k->inputs[1], in, TSR_MAX_RANK, &n));
    if (n != x->rank)
        return tsr_error(TSR_ERR_SHAPE, "x_shape has %d entries for dY of rank %d", n, x->rank);
    TSR_CHECK(tsr_resize_params_init(k->node, n, in, roi, scales, sizes, p));
    for (int d = 0; d < n; d++)
        if (p->out[d] != x->dims[d])
            return tsr_error(TSR_ERR_SHAPE, "dY has %lld positions along axis %d, Resize gives %lld",
                             (long long)x->dims[d], d, (long long)p->out[d]);
    return TSR_OK;
}

/* The taps of every axis, and the product of all but the last axis's
 * taps for one output row (offsets into X and their weights). */
typedef struct {
    tsr_resize_params p;
    tsr_resize_axis axis[TSR_MAX_RANK];
    int64_t in_stride[TSR_MAX_RANK];
    int64_t rows, cols, max_combos;
} resize_run;

static void resize_run_free(resize_run *r)
{
    for (int d = 0; d < r->p.rank; d++)
        tsr_resize_axis_free(&r->axis[d]);
}

static tsr_status resize_run_init(const tsr_kernel_ctx *k, resize_run *r)
{
    memset(r, 0, sizeof *r);
    TSR_CHECK(tsr_resize_kernel_params(k, &r->p));
    int rank = r->p.rank;
    tsr_contiguous_strides(rank, r->p.in, r->in_stride);
    r->rows = 1;
    r->max_combos = 1;
    for (int d = 0; d < rank; d++) {
        tsr_status st = tsr_resize_axis_init(&r->p, d, &r->axis[d]);
        if (st != TSR_OK) {
            resize_run_free(r);
            return st;
        }
        if (d < rank - 1) {
            r->rows *= r->p.out[d];
            r->max_combos *= r->axis[d].max_taps > 0 ? r->axis[d].max_taps : 1;
        }
    }
    r->cols = r->p.out[rank - 1];
    return TSR_OK;
}

/* The X offsets and weights that output row `row` combines; returns
 * their count, 0 when the row lies outside (tf_crop_and_resize). */
static int64_t row_combos(const resize_run *r, int64_t row, int64_t *off, double *w,
                          int64_t *off2, double *w2)
{
    int64_t n = 1, o[TSR_MAX_RANK];
    for (int d = r->p.rank - 2; d >= 0; d--) {
        o[d] = row % r->p.out[d];
        row /= r->p.out[d];
    }
    off[0] = 0;
    w[0] = 1.0;
    for (int d = 0; d < r->p.rank - 1; d++) {
        const tsr_resize_axis *a = &r->axis[d];
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t t = a->start[o[d]]; t < a->start[o[d] + 1]; t++) {
                off2[m] = off[i] + a->index[t] * r->in_stride[d];
                w2[m++] = w[i] * a->weight[t];
            }
        memcpy(off, off2, (size_t)m * sizeof *off);
        memcpy(w, w2, (size_t)m * sizeof *w);
        n = m;
    }
    return n;
}

static void set_extrapolated(tsr_tensor *y, int64_t i, double v)
{
    switch (y->dtype) {
    case TSR_FLOAT32:
    case TSR_FLOAT64: tsr_set_f(y, i, v); break;
    case TSR_UINT8: ((uint8_t *)y->data)[i] = (uint8_t)v; break;
    case TSR_INT8: ((int8_t *)y->data)[i] = (int8_t)v; break;
    case TSR_INT32: ((int32_t *)y->data)[i] = (int32_t)v; break;
    case TSR_INT64: ((int64_t *)y->data)[i] = (int64_t)v; break;
    case TSR_BOOL: ((bool *)y->data)[i] = v != 0.0; break;
    default: break;
    }
}

static void resize_row(const resize_run *r, const tsr_tensor *x, tsr_tensor *y, int64_t row,
                       int64_t *off, double *w, int64_t *off2, double *w2)
{
    const tsr_resize_axis *last = &r->axis[r->p.rank - 1];
    int64_t n = row_combos(r, row, off, w, off2, w2);
    size_t es = tsr_dtype_size(x->dtype);
    for (int64_t c = 0; c < r->cols; c++) {
        int64_t o = row * r->cols + c, t0 = last->start[c], t1 = last->start[c + 1];
        if (n == 0 || t0 == t1) {
            set_extrapolated(y, o, r->p.extrapolation);
        } else if (r->p.mode == TSR_RESIZE_NEAREST) {
            memcpy((char *)y->data + (size_t)o * es,
                   (const char *)x->data + (size_t)(off[0] + last->index[t0]) * es, es);
        } else {
            double sum = 0.0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t t = t0; t < t1; t++)
                    sum += w[i] * last->weight[t] * tsr_get_f(x, off[i] + last->index[t]);
            tsr_set_f(y, o, sum);
        }
    }
}

static tsr_status resize_ref(const tsr_kernel_ctx *k)
{
    resize_run r;
    TSR_CHECK(resize_run_init(k, &r));
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    bool failed = false;
#pragma omp parallel num_threads(k->threads)
    {
        size_t m = (size_t)r.max_combos;
        int64_t *off = malloc(2 * m * sizeof *off);
        double *w = malloc(2 * m * sizeof *w);
        if (!off || !w) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for schedule(static)
        for (int64_t row = 0; row < r.rows; row++)
            if (off && w)
                resize_row(&r, x, y, row, off, w, off + m, w + m);
        free(off);
        free(w);
    }
    resize_run_free(&r);
    return failed ? TSR_ERR_OUT_OF_MEMORY : TSR_OK;
}

/* The adjoint: each dY element spread back over the X elements it read.
 * Rows of dY share X elements, so this runs on one thread. */
static tsr_status resize_grad_ref(const tsr_kernel_ctx *k)
{
    resize_run r;
    TSR_CHECK(resize_run_init(k, &r));
    const tsr_tensor *dy = k->inputs[0];
    tsr_tensor *dx = k->outputs[0];
    size_t m = (size_t)r.max_combos;
    int64_t *off = malloc(2 * m * sizeof *off);
    double *w = malloc(2 * m * sizeof *w);
    double *acc = tsr_calloc((size_t)tsr_tensor_numel(dx) + 1, sizeof *acc);
    tsr_status st = off && w && acc ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    const tsr_resize_axis *last = &r.axis[r.p.rank - 1];
    for (int64_t row = 0; row < r.rows && st == TSR_OK; row++) {
        int64_t n = row_combos(&r, row, off, w, off + m, w + m);
        for (int64_t c = 0; c < r.cols; c++) {
            double g = tsr_get_f(dy, row * r.cols + c);
            for (int64_t i = 0; i < n; i++)
                for (int64_t t = last->start[c]; t < last->start[c + 1]; t++)
                    acc[off[i] + last->index[t]] += g * w[i] * last->weight[t];
        }
    }
    const int64_t n_dx = tsr_tensor_numel(dx);
    for (int64_t i = 0; st == TSR_OK && i < n_dx; i++)
        tsr_set_f(dx, i, acc[i]);
    free(off);
    free(w);
    free(acc);
    resize_run_free(&r);
    return st;
}

/* ------------------------------------------------------- gradient rules */

/* dX = ResizeGrad(dY, Shape(X), roi, scales, sizes); roi, scales and
 * sizes get no gradient (the output is piecewise constant in them, or
 * they are integers). */
static tsr_status resize_grad(tsr_grad_ctx *c)
{
    const char *dy = tsr_grad_dy(c, 0), *shape, *g;
    if (!dy)
        return TSR_OK;
    const tsr_node *node = tsr_grad_node(c);
    bool upsample = node->op == &tsr_op_Upsample;
    if (upsample && tsr_attr_has(node, "scales"))
        return tsr_grad_unsupported(c, "Upsample with a scales attribute (opset 7 and 8): "
                                       "re-export at opset 11 or later, where Resize has a "
                                       "gradient");
    TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, 0), &shape));
    node = tsr_grad_node(c);
    resize_slots s = slots_of(node);
    const char *ins[5] = {dy, shape, "", "", ""};
    int slot[3] = {s.roi, s.scales, s.sizes};
    for (int i = 0; i < 3; i++) {
        const char *name = slot[i] >= 0 ? tsr_grad_input(c, slot[i]) : NULL;
        ins[2 + i] = name ? name : "";
    }
    tsr_attr attrs[16];
    int n_attrs;
    if (upsample) {
        const char *mode = strcmp(tsr_attr_string(node, "mode"), "nearest") == 0 ? "nearest"
                                                                                : "linear";
        attrs[0] = TSR_ATTR_S("mode", mode);
        attrs[1] = TSR_ATTR_S("coordinate_transformation_mode", "asymmetric");
        attrs[2] = TSR_ATTR_S("nearest_mode", "floor");
        n_attrs = 3;
    } else {
        n_attrs = tsr_grad_node_attrs(c, attrs, 16);
    }
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ResizeGrad, 5, ins, n_attrs, attrs, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Resize = {
    .name = "Resize",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = resize_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = resize_infer,
    .ref = resize_ref,
    .flops = resize_flops,
    .grad = resize_grad,
};

const tsr_op_def tsr_op_Upsample = {
    .name = "Upsample",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = upsample_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = resize_infer,
    .ref = resize_ref,
    .flops = resize_flops,
    .grad = resize_grad,
};

const tsr_op_def tsr_op_ResizeGrad = {
    .name = "ResizeGrad",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = resize_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = resize_grad_infer,
    .ref = resize_grad_ref,
    .flops = resize_flops,
};

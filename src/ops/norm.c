/* Normalization: BatchNormalization (inference form), LayerNormalization,
 * InstanceNormalization and GroupNormalization. Statistics are computed in
 * double precision for both float types. */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <math.h>
#include <stdlib.h>

/* ---------------------------------------------------- BatchNormalization */

static const tsr_attr_def batchnorm_attrs[] = {{"epsilon", TSR_ATTR_FLOAT, .f = 1e-5},
                                               {"momentum", TSR_ATTR_FLOAT, .f = 0.9},
                                               {"training_mode", TSR_ATTR_INT, .i = 0},
                                               {NULL}};

static const char *const batchnorm_inputs[] = {"X", "scale", "B", "input_mean", "input_var"};

static tsr_status batchnorm_infer(tsr_infer_ctx *c)
{
    if (tsr_attr_int(c->node, "training_mode") != 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "training_mode=1 is not supported: training-mode BatchNorm comes "
                               "with training support");
    if (c->n_outputs > 1)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "%d outputs: outputs beyond Y (running or saved statistics) exist "
                               "only in training mode, which is not supported yet",
                               c->n_outputs);
    const tsr_value *x = c->inputs[0];
    for (int i = 0; i < 5; i++) {
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
        if (!c->inputs[i])
            return tsr_infer_error(c, TSR_ERR_SHAPE, "input %d (%s) is required", i,
                                   batchnorm_inputs[i]);
        if (c->inputs[i]->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "%s is %s but X is %s", batchnorm_inputs[i],
                                   tsr_dtype_name(c->inputs[i]->dtype), tsr_dtype_name(x->dtype));
    }
    if (x->rank >= 0 && x->rank < 2)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X must have rank >= 2 (N, C, ...), got %d",
                               x->rank);
    int64_t channels = x->rank >= 2 ? x->dims[1] : TSR_DIM_UNKNOWN;
    for (int i = 1; i < 5; i++) {
        const tsr_value *p = c->inputs[i];
        if (p->rank < 0)
            continue;
        if (p->rank != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s must be 1-D, got rank %d",
                                   batchnorm_inputs[i], p->rank);
        if (tsr_dim_known(p->dims[0]) && tsr_dim_known(channels) && p->dims[0] != channels)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s has %lld elements but X has %lld channels",
                                   batchnorm_inputs[i], (long long)p->dims[0], (long long)channels);
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

/* The kernel below is instantiated once per element type. */
/* clang-format off */
#define BATCHNORM_DEFINE(T)                                                                        \
    static void batchnorm_run_##T(const tsr_kernel_ctx *k, const double *mul, const double *add,   \
                                  int64_t planes, int64_t channels, int64_t spatial)               \
    {                                                                                              \
        const T *x = k->inputs[0]->data;                                                           \
        T *y = k->outputs[0]->data;                                                                \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && planes > 1)")      \
        for (int64_t p = 0; p < planes; p++) {                                                     \
            T m = (T)mul[p % channels], a = (T)add[p % channels];                                  \
            const T *xp = x + p * spatial;                                                         \
            T *yp = y + p * spatial;                                                               \
            for (int64_t i = 0; i < spatial; i++)                                                  \
                yp[i] = xp[i] * m + a;                                                             \
        }                                                                                          \
    }
/* clang-format on */

BATCHNORM_DEFINE(float)
BATCHNORM_DEFINE(double)

static tsr_status batchnorm_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int64_t channels = x->dims[1], spatial = 1;
    for (int d = 2; d < x->rank; d++)
        spatial *= x->dims[d];
    double eps = tsr_attr_float(k->node, "epsilon");
    double *mul = tsr_malloc(2 * (size_t)(channels > 0 ? channels : 1) * sizeof(double));
    if (!mul)
        return TSR_ERR_OUT_OF_MEMORY;
    double *add = mul + channels;
    /* y = (x - mean) / sqrt(var + eps) * scale + B, folded into one multiply-add */
    for (int64_t ch = 0; ch < channels; ch++) {
        mul[ch] = tsr_get_f(k->inputs[1], ch) / sqrt(tsr_get_f(k->inputs[4], ch) + eps);
        add[ch] = tsr_get_f(k->inputs[2], ch) - tsr_get_f(k->inputs[3], ch) * mul[ch];
    }
    int64_t planes = x->dims[0] * channels;
    if (x->dtype == TSR_FLOAT32)
        batchnorm_run_float(k, mul, add, planes, channels, spatial);
    else
        batchnorm_run_double(k, mul, add, planes, channels, spatial);
    free(mul);
    return TSR_OK;
}

static double two_per_element(const tsr_infer_ctx *c)
{
    return 2.0 * (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

/* Inference-form BatchNorm is affine per channel: with a = scale / sqrt(var
 * + eps), y = (x - mean) a + B. Statistics get gradients too, since they
 * are ordinary inputs here. */
static tsr_status per_channel(tsr_grad_ctx *c, const char *v, int rank, const char **out)
{
    if (rank <= 2) {
        *out = v;
        return TSR_OK;
    }
    int64_t axes[TSR_MAX_RANK];
    for (int d = 1; d < rank - 1; d++)
        axes[d - 1] = d;
    const char *axes_name;
    TSR_CHECK(tsr_grad_ints(c, rank - 2, axes, &axes_name));
    const char *ins[2] = {v, axes_name};
    return tsr_grad_emit(c, &tsr_op_Unsqueeze, 2, ins, 0, NULL, 1, out);
}

static tsr_status sum_but_channels(tsr_grad_ctx *c, const char *v, int rank, const char **out)
{
    int64_t axes[TSR_MAX_RANK] = {0};
    for (int d = 2; d < rank; d++)
        axes[d - 1] = d;
    const char *axes_name;
    TSR_CHECK(tsr_grad_ints(c, rank - 1, axes, &axes_name));
    tsr_attr kd = TSR_ATTR_I("keepdims", 0);
    const char *ins[2] = {v, axes_name};
    return tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &kd, 1, out);
}

static tsr_status batchnorm_grad(tsr_grad_ctx *c)
{
    for (int o = 1; o < tsr_grad_node(c)->n_outputs; o++)
        if (tsr_grad_dy(c, o))
            return tsr_grad_unsupported(c, "output %d of BatchNormalization has no gradient", o);
    const char *x = tsr_grad_input(c, 0), *scale = tsr_grad_input(c, 1);
    const char *mean = tsr_grad_input(c, 3), *var = tsr_grad_input(c, 4), *dy = tsr_grad_dy(c, 0);
    const tsr_value xv_copy = *tsr_grad_value(c, x), *xv = &xv_copy;
    int rank = xv->rank;
    const char *eps, *ve, *sd, *inv, *a, *a_b, *g, *dbias = NULL;
    TSR_CHECK(tsr_grad_scalar(c, tsr_attr_float(tsr_grad_node(c), "epsilon"), xv->dtype, &eps));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, var, eps, &ve));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sqrt, ve, &sd));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Reciprocal, sd, &inv));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, scale, inv, &a));
    if (tsr_grad_wants(c, 0)) {
        TSR_CHECK(per_channel(c, a, rank, &a_b));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, a_b, &g));
        TSR_CHECK(tsr_grad_contribute(c, 0, g));
    }
    if (tsr_grad_wants(c, 2) || tsr_grad_wants(c, 3)) {
        TSR_CHECK(sum_but_channels(c, dy, rank, &dbias));
        TSR_CHECK(tsr_grad_contribute(c, 2, dbias));
    }
    if (tsr_grad_wants(c, 3)) {
        const char *t, *neg;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dbias, a, &t));
        TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, t, &neg));
        TSR_CHECK(tsr_grad_contribute(c, 3, neg));
    }
    if (tsr_grad_wants(c, 1) || tsr_grad_wants(c, 4)) {
        /* s = sum(dy (x - mean)) per channel */
        const char *mean_b, *xc, *p, *s;
        TSR_CHECK(per_channel(c, mean, rank, &mean_b));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, x, mean_b, &xc));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, xc, &p));
        TSR_CHECK(sum_but_channels(c, p, rank, &s));
        if (tsr_grad_wants(c, 1)) {
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, s, inv, &g));
            TSR_CHECK(tsr_grad_contribute(c, 1, g));
        }
        if (tsr_grad_wants(c, 4)) {
            /* d/dvar of a = -a / (2 (var + eps)) */
            const char *half, *t, *u, *w;
            TSR_CHECK(tsr_grad_scalar(c, -0.5, xv->dtype, &half));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, s, a, &t));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, t, ve, &u));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, u, half, &w));
            TSR_CHECK(tsr_grad_contribute(c, 4, w));
        }
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_BatchNormalization = {
    .name = "BatchNormalization",
    .domain = "",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 5,
    .attrs = batchnorm_attrs,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = batchnorm_infer,
    .ref = batchnorm_ref,
    .flops = two_per_element,
    .grad = batchnorm_grad,
};

/* ---------------------------------------------------- LayerNormalization */

static const tsr_attr_def layernorm_attrs[] = {{"axis", TSR_ATTR_INT, .i = -1},
                                               {"epsilon", TSR_ATTR_FLOAT, .f = 1e-5},
                                               {"stash_type", TSR_ATTR_INT, .i = 1},
                                               {NULL}};

/* Scale and B broadcast unidirectionally to the normalized shape
 * X.shape[axis:], aligned on the right. */
static tsr_status layernorm_check_param(tsr_infer_ctx *c, int input, const char *what, int axis)
{
    const tsr_value *x = c->inputs[0], *p = c->inputs[input];
    if (!p || p->rank < 0)
        return TSR_OK;
    TSR_CHECK(tsr_infer_require_dtype(c, input, TSR_FLOAT_TYPES));
    if (p->dtype != x->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "%s is %s but X is %s", what,
                               tsr_dtype_name(p->dtype), tsr_dtype_name(x->dtype));
    int norm_rank = x->rank - axis;
    bool fits = p->rank <= norm_rank;
    for (int i = 0; fits && i < p->rank; i++) {
        int64_t pd = p->dims[p->rank - 1 - i], xd = x->dims[x->rank - 1 - i];
        fits = pd == 1 || pd == xd || !tsr_dim_known(pd) || !tsr_dim_known(xd);
    }
    if (!fits) {
        char sp[160], sn[160];
        tsr_shape_format(sp, sizeof sp, p->rank, p->dims);
        tsr_shape_format(sn, sizeof sn, norm_rank, x->dims + axis);
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "%s %s does not broadcast to the normalized shape %s (axis %d)",
                               what, sp, sn, axis);
    }
    return TSR_OK;
}

static tsr_status layernorm_stash_dtype(const tsr_node *n, tsr_dtype *out)
{
    int64_t stash = tsr_attr_int(n, "stash_type");
    if (stash != TSR_FLOAT32 && stash != TSR_FLOAT64)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "stash_type %lld is not supported (1 = float32 and 11 = float64 are)",
                         (long long)stash);
    *out = (tsr_dtype)stash;
    return TSR_OK;
}

static tsr_status layernorm_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[0];
    if (!c->inputs[1])
        return tsr_infer_error(c, TSR_ERR_SHAPE, "Scale is required");
    tsr_dtype stash = TSR_FLOAT32;
    TSR_CHECK(layernorm_stash_dtype(c->node, &stash));
    if (x->rank < 0) {
        for (int o = 0; o < c->n_outputs; o++)
            tsr_infer_set(c, o, o ? stash : x->dtype, -1, NULL);
        return TSR_OK;
    }
    int64_t axis_attr = tsr_attr_int(c->node, "axis");
    int axis;
    if (!tsr_axis_normalize(axis_attr, x->rank, &axis))
        return tsr_infer_error(c, TSR_ERR_SHAPE, "axis %lld is out of range for rank %d",
                               (long long)axis_attr, x->rank);
    TSR_CHECK(layernorm_check_param(c, 1, "Scale", axis));
    if (c->n_inputs > 2)
        TSR_CHECK(layernorm_check_param(c, 2, "B", axis));
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    int64_t stat_dims[TSR_MAX_RANK];
    for (int d = 0; d < x->rank; d++)
        stat_dims[d] = d < axis ? x->dims[d] : 1;
    for (int o = 1; o < c->n_outputs; o++)
        tsr_infer_set(c, o, stash, x->rank, stat_dims);
    return TSR_OK;
}

/* Expands a Scale or B tensor to `norm` values over the normalized shape. */
static void layernorm_expand(const tsr_tensor *p, const int64_t *norm_dims, int norm_rank,
                             int64_t norm, double fill, double *out)
{
    for (int64_t i = 0; i < norm; i++) {
        if (!p) {
            out[i] = fill;
            continue;
        }
        int64_t rest = i, offset = 0, stride = 1;
        for (int d = 0; d < norm_rank; d++) {
            int64_t size = norm_dims[norm_rank - 1 - d], idx = rest % size;
            rest /= size;
            if (d < p->rank) {
                int64_t pd = p->dims[p->rank - 1 - d];
                offset += (pd == 1 ? 0 : idx) * stride;
                stride *= pd;
            }
        }
        out[i] = tsr_get_f(p, offset);
    }
}

/* The kernel below is instantiated once per element type. */
/* clang-format off */
#define LAYERNORM_DEFINE(T)                                                                        \
    static void layernorm_run_##T(const tsr_kernel_ctx *k, const double *scale,                    \
                                  const double *bias, int64_t rows, int64_t norm, double eps)      \
    {                                                                                              \
        const T *x = k->inputs[0]->data;                                                           \
        T *y = k->outputs[0]->data;                                                                \
        tsr_tensor *mean_out = k->n_outputs > 1 ? k->outputs[1] : NULL;                            \
        tsr_tensor *inv_out = k->n_outputs > 2 ? k->outputs[2] : NULL;                             \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && rows > 1)")        \
        for (int64_t r = 0; r < rows; r++) {                                                       \
            /* rows of no elements have no buffer to offset */                                     \
            const T *xr = norm ? x + r * norm : x;                                                 \
            T *yr = norm ? y + r * norm : y;                                                       \
            double sum = 0.0, sq = 0.0;                                                            \
            for (int64_t i = 0; i < norm; i++)                                                     \
                sum += xr[i];                                                                      \
            double mean = sum / (double)norm;                                                      \
            for (int64_t i = 0; i < norm; i++)                                                     \
                sq += (xr[i] - mean) * (xr[i] - mean);                                             \
            double inv = 1.0 / sqrt(sq / (double)norm + eps);                                      \
            for (int64_t i = 0; i < norm; i++)                                                     \
                yr[i] = (T)((xr[i] - mean) * inv * scale[i] + bias[i]);                            \
            if (mean_out)                                                                          \
                tsr_set_f(mean_out, r, mean);                                                      \
            if (inv_out)                                                                           \
                tsr_set_f(inv_out, r, inv);                                                        \
        }                                                                                          \
    }
/* clang-format on */

LAYERNORM_DEFINE(float)
LAYERNORM_DEFINE(double)

static tsr_status layernorm_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(k->node, "axis"), x->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", x->rank);
    int64_t rows = tsr_shape_numel(axis, x->dims);
    int64_t norm = tsr_shape_numel(x->rank - axis, x->dims + axis);
    double *params = tsr_malloc(2 * (size_t)(norm > 0 ? norm : 1) * sizeof(double));
    if (!params)
        return TSR_ERR_OUT_OF_MEMORY;
    const tsr_tensor *bias = k->n_inputs > 2 ? k->inputs[2] : NULL;
    layernorm_expand(k->inputs[1], x->dims + axis, x->rank - axis, norm, 1.0, params);
    layernorm_expand(bias, x->dims + axis, x->rank - axis, norm, 0.0, params + norm);
    double eps = tsr_attr_float(k->node, "epsilon");
    if (x->dtype == TSR_FLOAT32)
        layernorm_run_float(k, params, params + norm, rows, norm, eps);
    else
        layernorm_run_double(k, params, params + norm, rows, norm, eps);
    free(params);
    return TSR_OK;
}

static double layernorm_flops(const tsr_infer_ctx *c)
{
    /* sum, squared deviation, then normalize, scale and shift */
    return 8.0 * (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

/* With xhat = (x - mean) inv over the normalized axes and g = dy scale:
 * dx = inv (g - mean(g) - xhat mean(g xhat)); dScale and dB sum dy xhat
 * and dy over what they were broadcast along. Recomputed from x with
 * graph nodes, so the rule is differentiable again. */
static tsr_status layernorm_grad(tsr_grad_ctx *c)
{
    for (int o = 1; o < tsr_grad_node(c)->n_outputs; o++)
        if (tsr_grad_dy(c, o))
            return tsr_grad_unsupported(c, "the Mean and InvStdDev outputs have no gradient rule");
    const char *x = tsr_grad_input(c, 0), *scale = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    const tsr_value xv_copy = *tsr_grad_value(c, x), *xv = &xv_copy;
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(tsr_grad_node(c), "axis"), xv->rank, &axis))
        return tsr_error(TSR_ERR_SHAPE, "axis is out of range for rank %d", xv->rank);
    int64_t axes[TSR_MAX_RANK];
    for (int d = axis; d < xv->rank; d++)
        axes[d - axis] = d;
    const char *mu, *xc, *sq, *var, *eps, *ve, *sd, *inv, *xhat, *g;
    tsr_attr mean_attrs[1] = {TSR_ATTR_INTS("axes", axes, (size_t)(xv->rank - axis))};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &x, 1, mean_attrs, 1, &mu));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, x, mu, &xc));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, xc, xc, &sq));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &sq, 1, mean_attrs, 1, &var));
    TSR_CHECK(tsr_grad_scalar(c, tsr_attr_float(tsr_grad_node(c), "epsilon"), xv->dtype, &eps));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, var, eps, &ve));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sqrt, ve, &sd));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Reciprocal, sd, &inv));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, xc, inv, &xhat));
    if (tsr_grad_wants(c, 2))
        TSR_CHECK(tsr_grad_contribute_sum(c, 2, dy));
    if (tsr_grad_wants(c, 1)) {
        const char *p;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, xhat, &p));
        TSR_CHECK(tsr_grad_contribute_sum(c, 1, p));
    }
    if (!tsr_grad_wants(c, 0))
        return TSR_OK;
    const char *gs, *m1, *gx, *m2, *t, *d1, *d2;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, scale, &gs));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &gs, 1, mean_attrs, 1, &m1));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, gs, xhat, &gx));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &gx, 1, mean_attrs, 1, &m2));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, xhat, m2, &t));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, gs, m1, &d1));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, d1, t, &d2));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, d2, inv, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_LayerNormalization = {
    .name = "LayerNormalization",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 3,
    .attrs = layernorm_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = layernorm_infer,
    .ref = layernorm_ref,
    .flops = layernorm_flops,
    .grad = layernorm_grad,
};

/* ------------------------------ InstanceNormalization, GroupNormalization */

/* Both normalize X [N, C, ...] over groups of channels with their spatial
 * extent (one channel per group for InstanceNormalization), then scale and
 * shift each channel. One kernel and one gradient rule serve both. */

static const tsr_attr_def instancenorm_attrs[] = {{"epsilon", TSR_ATTR_FLOAT, .f = 1e-5},
                                                  {NULL}};

static const tsr_attr_def groupnorm_attrs[] = {{"epsilon", TSR_ATTR_FLOAT, .f = 1e-5},
                                               {"num_groups", TSR_ATTR_INT, .required = true},
                                               {"stash_type", TSR_ATTR_INT, .i = 1},
                                               {NULL}};

static bool is_groupnorm(const tsr_node *n) { return n->op == &tsr_op_GroupNormalization; }

/* GroupNormalization's scale and bias hold one value per group in opset
 * 18 to 20 and one per channel from 21 on (18's form could not scale
 * channels apart, so 21 changed it); a node of an older opset (built
 * directly, since the importer stops at 17) is read by its length. */
static tsr_status groupnorm_per_channel(const tsr_node *n, const char *what, int64_t len,
                                        int64_t channels, int64_t groups, bool *per_channel)
{
    bool by_channel = len == channels, by_group = len == groups;
    if (n->opset >= 21)
        by_group = false;
    else if (n->opset >= 18)
        by_channel = false;
    *per_channel = by_channel;
    if (by_channel || by_group)
        return TSR_OK;
    if (n->opset >= 21)
        return tsr_error(TSR_ERR_SHAPE, "%s has %lld values, opset 21 takes one per channel (%lld)",
                         what, (long long)len, (long long)channels);
    if (n->opset >= 18)
        return tsr_error(TSR_ERR_SHAPE,
                         "%s has %lld values, opset %d takes one per group (num_groups %lld)",
                         what, (long long)len, n->opset, (long long)groups);
    return tsr_error(TSR_ERR_SHAPE,
                     "%s has %lld values, expected one per channel (%lld, as from opset 21) or "
                     "one per group (%lld, as in opset 18)",
                     what, (long long)len, (long long)channels, (long long)groups);
}

static const char *const groupwise_inputs[] = {"X", "scale", "B"};

/* Channels per group; fails unless num_groups >= 1 divides the channels. */
static tsr_status groupwise_groups(const tsr_node *n, int64_t channels, int64_t *groups)
{
    if (!is_groupnorm(n)) {
        *groups = channels;
        return TSR_OK;
    }
    int64_t g = tsr_attr_int(n, "num_groups");
    if (g < 1)
        return tsr_error(TSR_ERR_SHAPE, "num_groups is %lld, must be >= 1", (long long)g);
    if (tsr_dim_known(channels) && channels % g != 0)
        return tsr_error(TSR_ERR_SHAPE, "num_groups %lld does not divide the %lld channels",
                         (long long)g, (long long)channels);
    *groups = g;
    return TSR_OK;
}

static tsr_status groupwise_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_value *x = c->inputs[0];
    for (int i = 0; i < 3; i++) {
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
        if (c->inputs[i]->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "%s is %s but X is %s", groupwise_inputs[i],
                                   tsr_dtype_name(c->inputs[i]->dtype), tsr_dtype_name(x->dtype));
    }
    bool group = is_groupnorm(c->node);
    if (group) {
        tsr_dtype stash;
        TSR_CHECK(layernorm_stash_dtype(c->node, &stash));
    }
    int min_rank = group ? 2 : 3;
    if (x->rank < min_rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X must have rank >= %d (N, C, ...), got %d",
                               min_rank, x->rank);
    int64_t channels = x->dims[1], groups = 1;
    TSR_CHECK(groupwise_groups(c->node, channels, &groups));
    for (int i = 1; i < 3; i++) {
        const tsr_value *p = c->inputs[i];
        if (p->rank != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s must be 1-D, got rank %d",
                                   groupwise_inputs[i], p->rank);
        int64_t len = p->dims[0];
        if (!tsr_dim_known(len) || !tsr_dim_known(channels))
            continue;
        bool per_channel;
        if (group)
            TSR_CHECK(groupnorm_per_channel(c->node, groupwise_inputs[i], len, channels, groups,
                                            &per_channel));
        else if (len != channels)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s has %lld values but X has %lld channels",
                                   groupwise_inputs[i], (long long)len, (long long)channels);
    }
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

/* The kernel below is instantiated once per element type. */
/* clang-format off */
#define GROUPWISE_DEFINE(T)                                                                        \
    static void groupwise_run_##T(const tsr_kernel_ctx *k, const double *scale,                    \
                                  const double *bias, int64_t rows, int64_t groups, int64_t per,   \
                                  int64_t spatial, double eps)                                     \
    {                                                                                              \
        const T *x = k->inputs[0]->data;                                                           \
        T *y = k->outputs[0]->data;                                                                \
        int64_t m = per * spatial;                                                                 \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && rows > 1)")        \
        for (int64_t r = 0; r < rows; r++) {                                                       \
            /* groups of no elements have no buffer to offset */                                   \
            const T *xr = m ? x + r * m : x;                                                       \
            T *yr = m ? y + r * m : y;                                                             \
            double sum = 0.0, sq = 0.0;                                                            \
            for (int64_t i = 0; i < m; i++)                                                        \
                sum += xr[i];                                                                      \
            double mean = sum / (double)m;                                                         \
            for (int64_t i = 0; i < m; i++)                                                        \
                sq += (xr[i] - mean) * (xr[i] - mean);                                             \
            double inv = 1.0 / sqrt(sq / (double)m + eps);                                         \
            int64_t c0 = (r % groups) * per;                                                       \
            for (int64_t ch = 0; ch < per; ch++) {                                                 \
                double s = inv * scale[c0 + ch], b = bias[c0 + ch];                                \
                for (int64_t i = 0; i < spatial; i++)                                              \
                    yr[ch * spatial + i] = (T)((xr[ch * spatial + i] - mean) * s + b);             \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

GROUPWISE_DEFINE(float)
GROUPWISE_DEFINE(double)

static tsr_status groupwise_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int64_t batch = x->dims[0], channels = x->dims[1], groups = 1;
    TSR_CHECK(groupwise_groups(k->node, channels, &groups));
    int64_t spatial = tsr_shape_numel(x->rank - 2, x->dims + 2);
    double *params = tsr_malloc(2 * (size_t)(channels > 0 ? channels : 1) * sizeof(double));
    if (!params)
        return TSR_ERR_OUT_OF_MEMORY;
    int64_t per = groups ? channels / groups : 0;
    for (int i = 1; i < 3; i++) {
        const tsr_tensor *p = k->inputs[i];
        int64_t len = tsr_tensor_numel(p);
        bool per_channel = true;
        tsr_status st = is_groupnorm(k->node) ? groupnorm_per_channel(k->node, groupwise_inputs[i],
                                                                      len, channels, groups,
                                                                      &per_channel)
                        : len == channels
                            ? TSR_OK
                            : tsr_error(TSR_ERR_SHAPE, "%s has %lld values but X has %lld channels",
                                        groupwise_inputs[i], (long long)len, (long long)channels);
        if (st != TSR_OK) {
            free(params);
            return st;
        }
        for (int64_t ch = 0; ch < channels; ch++)
            params[(i - 1) * channels + ch] = tsr_get_f(p, per_channel ? ch : ch / per);
    }
    double eps = tsr_attr_float(k->node, "epsilon");
    if (x->dtype == TSR_FLOAT32)
        groupwise_run_float(k, params, params + channels, batch * groups, groups, per, spatial,
                            eps);
    else
        groupwise_run_double(k, params, params + channels, batch * groups, groups, per, spatial,
                             eps);
    free(params);
    return TSR_OK;
}

/* As LayerNormalization's rule, over X viewed as [N, groups, rest]: with
 * xhat the normalized X and g = dy scale (per channel),
 * dx = inv (g - mean(g) - xhat mean(g xhat)) per group; dScale and dB sum
 * dy xhat and dy per channel, then per group where scale holds one value
 * per group (the adjoint of the Gather that spreads it over channels). */
static tsr_status groupwise_grad(tsr_grad_ctx *c)
{
    const tsr_node *n = tsr_grad_node(c);
    bool group = is_groupnorm(n);
    int64_t groups = group ? tsr_attr_int(n, "num_groups") : 0; /* 0: Reshape keeps C */
    double eps_value = tsr_attr_float(n, "epsilon");
    const char *x = tsr_grad_input(c, 0), *scale = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    const tsr_value xv_copy = *tsr_grad_value(c, x), *xv = &xv_copy;
    int rank = xv->rank;
    const char *scale_c = scale, *spread = NULL, *scale_shape = NULL;
    if (group) {
        int64_t channels = xv->dims[1], len = tsr_grad_value(c, scale)->dims[0];
        bool per_channel;
        if (!tsr_dim_known(channels) || !tsr_dim_known(len))
            return tsr_grad_unsupported(c, "the channels and the length of scale must be known");
        TSR_CHECK(groupnorm_per_channel(tsr_grad_node(c), "scale", len, channels, groups,
                                        &per_channel));
        if (!per_channel) {
            int64_t *idx = tsr_malloc((size_t)(channels > 0 ? channels : 1) * sizeof *idx);
            if (!idx)
                return TSR_ERR_OUT_OF_MEMORY;
            for (int64_t ch = 0; ch < channels; ch++)
                idx[ch] = ch / (channels / groups);
            tsr_status st = tsr_grad_ints(c, (int)channels, idx, &spread);
            free(idx);
            TSR_CHECK(st);
            tsr_attr axis0 = TSR_ATTR_I("axis", 0);
            const char *ins[2] = {scale, spread};
            TSR_CHECK(tsr_grad_emit(c, &tsr_op_Gather, 2, ins, 1, &axis0, 1, &scale_c));
            TSR_CHECK(tsr_grad_shape(c, scale, &scale_shape));
        }
    }
    int64_t view[3] = {0, groups, -1}, axis2 = 2;
    const char *view_name, *x_shape, *xg, *mu, *xc, *sq, *var, *eps, *ve, *sd, *inv, *xhat_g,
        *xhat, *g;
    tsr_attr mean_attrs[1] = {TSR_ATTR_INTS("axes", &axis2, 1)};
    TSR_CHECK(tsr_grad_ints(c, 3, view, &view_name));
    TSR_CHECK(tsr_grad_shape(c, x, &x_shape));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Reshape, x, view_name, &xg));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &xg, 1, mean_attrs, 1, &mu));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, xg, mu, &xc));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, xc, xc, &sq));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &sq, 1, mean_attrs, 1, &var));
    TSR_CHECK(tsr_grad_scalar(c, eps_value, xv->dtype, &eps));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, var, eps, &ve));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sqrt, ve, &sd));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Reciprocal, sd, &inv));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, xc, inv, &xhat_g));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Reshape, xhat_g, x_shape, &xhat));
    for (int i = 2; i >= 1; i--) {
        if (!tsr_grad_wants(c, i))
            continue;
        const char *p = dy;
        if (i == 1)
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, xhat, &p));
        TSR_CHECK(sum_but_channels(c, p, rank, &g));
        if (spread) {
            tsr_attr axis0 = TSR_ATTR_I("axis", 0);
            const char *ins[3] = {g, spread, scale_shape};
            TSR_CHECK(tsr_grad_emit(c, &tsr_op_GatherGrad, 3, ins, 1, &axis0, 1, &g));
        }
        TSR_CHECK(tsr_grad_contribute(c, i, g));
    }
    if (!tsr_grad_wants(c, 0))
        return TSR_OK;
    const char *sb, *gs, *gg, *m1, *gx, *m2, *t, *d1, *d2, *dxg;
    TSR_CHECK(per_channel(c, scale_c, rank, &sb));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, sb, &gs));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Reshape, gs, view_name, &gg));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &gg, 1, mean_attrs, 1, &m1));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, gg, xhat_g, &gx));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceMean, 1, &gx, 1, mean_attrs, 1, &m2));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, xhat_g, m2, &t));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, gg, m1, &d1));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, d1, t, &d2));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, d2, inv, &dxg));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Reshape, dxg, x_shape, &g));
    return tsr_grad_contribute(c, 0, g);
}

static double groupwise_flops(const tsr_infer_ctx *c)
{
    /* sum, squared deviation, then normalize, scale and shift */
    return 7.0 * (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

const tsr_op_def tsr_op_InstanceNormalization = {
    .name = "InstanceNormalization",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = instancenorm_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = groupwise_infer,
    .ref = groupwise_ref,
    .flops = groupwise_flops,
    .grad = groupwise_grad,
};

const tsr_op_def tsr_op_GroupNormalization = {
    .name = "GroupNormalization",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = groupnorm_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = groupwise_infer,
    .ref = groupwise_ref,
    .flops = groupwise_flops,
    .grad = groupwise_grad,
};

/* Training-mode ops (domain ai.tessera), which the trainer puts in place of
 * their inference forms:
 *   BatchNormTrain(X, scale, B, running_mean, running_var)
 *       -> Y, running_mean_out, running_var_out, saved_mean, saved_inv_std
 * normalizes with the batch's statistics (biased variance) and produces the
 * running-average update as ONNX and PyTorch define it:
 * running = momentum * running + (1 - momentum) * batch, with the unbiased
 * variance for running_var (ONNX's momentum m is PyTorch's 1 - m).
 *   BatchNormTrainGrad(dY, X, scale, saved_mean, saved_inv_std) -> dX, dscale, dB
 * its backward through the batch statistics.
 *   DropoutTrain(X, seed) -> Y, mask
 * zeroes each element with probability `ratio` and scales the rest by
 * 1 / (1 - ratio); mask holds that factor per element, so dX = dY * mask.
 * The draws hash (seed, node name, element index): the same seed gives the
 * same mask whatever the thread count, and nodes draw independently. */
#include "autodiff/autodiff.h"
#include "core/random.h"
#include "ops/op.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- BatchNormTrain */

static const tsr_attr_def bn_train_attrs[] = {
    {"epsilon", TSR_ATTR_FLOAT, .f = 1e-5}, {"momentum", TSR_ATTR_FLOAT, .f = 0.9}, {NULL}};

static const char *const bn_inputs[] = {"X", "scale", "B", "running_mean", "running_var"};

static tsr_status bn_check_channels(tsr_infer_ctx *c, int first, int last, const char *const *names)
{
    const tsr_value *x = c->inputs[0];
    int64_t channels = x->rank >= 2 ? x->dims[1] : TSR_DIM_UNKNOWN;
    for (int i = first; i <= last; i++) {
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
        const tsr_value *p = c->inputs[i];
        if (p->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "%s is %s but X is %s", names[i],
                                   tsr_dtype_name(p->dtype), tsr_dtype_name(x->dtype));
        if (p->rank < 0)
            continue;
        if (p->rank != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s must be 1-D, got rank %d", names[i],
                                   p->rank);
        if (tsr_dim_known(p->dims[0]) && tsr_dim_known(channels) && p->dims[0] != channels)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s has %lld elements but X has %lld channels",
                                   names[i], (long long)p->dims[0], (long long)channels);
    }
    return TSR_OK;
}

static tsr_status bn_check_x(tsr_infer_ctx *c, int xi)
{
    for (int i = 0; i < c->n_inputs; i++)
        if (!c->inputs[i])
            return tsr_infer_error(c, TSR_ERR_SHAPE, "input %d is required", i);
    TSR_CHECK(tsr_infer_require_dtype(c, xi, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[xi];
    if (x->rank >= 0 && x->rank < 2)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X must have rank >= 2 (N, C, ...), got %d",
                               x->rank);
    if (x->rank < 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X must have a known rank");
    return TSR_OK;
}

static tsr_status bn_train_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(bn_check_x(c, 0));
    TSR_CHECK(bn_check_channels(c, 1, 4, bn_inputs));
    double momentum = tsr_attr_float(c->node, "momentum");
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return tsr_infer_error(c, TSR_ERR_INVALID_ARGUMENT, "momentum must be in [0, 1], got %g",
                               momentum);
    if (!(tsr_attr_float(c->node, "epsilon") >= 0.0))
        return tsr_infer_error(c, TSR_ERR_INVALID_ARGUMENT, "epsilon must be >= 0, got %g",
                               tsr_attr_float(c->node, "epsilon"));
    const tsr_value *x = c->inputs[0];
    int64_t ch = x->dims[1];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    for (int o = 1; o < c->n_outputs; o++)
        tsr_infer_set(c, o, x->dtype, 1, &ch);
    return TSR_OK;
}

static void bn_geometry(const tsr_tensor *x, int64_t *n, int64_t *ch, int64_t *spatial)
{
    *n = x->dims[0];
    *ch = x->dims[1];
    *spatial = 1;
    for (int d = 2; d < x->rank; d++)
        *spatial *= x->dims[d];
}

/* clang-format off */
#define BN_TRAIN_DEFINE(T)                                                                         \
    static void bn_train_##T(const tsr_kernel_ctx *k, int64_t n, int64_t chs, int64_t sp,          \
                             double eps, double momentum)                                          \
    {                                                                                              \
        const T *x = k->inputs[0]->data, *scale = k->inputs[1]->data, *bias = k->inputs[2]->data;  \
        const T *rm = k->inputs[3]->data, *rv = k->inputs[4]->data;                                \
        T *y = k->outputs[0]->data;                                                                \
        T *rm_out = k->n_outputs > 1 && k->outputs[1] ? k->outputs[1]->data : NULL;                \
        T *rv_out = k->n_outputs > 2 && k->outputs[2] ? k->outputs[2]->data : NULL;                \
        T *saved_mean = k->n_outputs > 3 && k->outputs[3] ? k->outputs[3]->data : NULL;            \
        T *saved_inv = k->n_outputs > 4 && k->outputs[4] ? k->outputs[4]->data : NULL;             \
        double count = (double)(n * sp);                                                           \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && chs > 1)")         \
        for (int64_t c = 0; c < chs; c++) {                                                        \
            double sum = 0.0, sq = 0.0;                                                            \
            for (int64_t b = 0; b < n; b++) {                                                      \
                const T *xp = x + (b * chs + c) * sp;                                              \
                for (int64_t i = 0; i < sp; i++)                                                   \
                    sum += xp[i];                                                                  \
            }                                                                                      \
            double mean = sum / count;                                                             \
            for (int64_t b = 0; b < n; b++) {                                                      \
                const T *xp = x + (b * chs + c) * sp;                                              \
                for (int64_t i = 0; i < sp; i++) {                                                 \
                    double d = xp[i] - mean;                                                       \
                    sq += d * d;                                                                   \
                }                                                                                  \
            }                                                                                      \
            double var = sq / count, inv = 1.0 / sqrt(var + eps);                                  \
            T mul = (T)(scale[c] * inv), add = (T)(bias[c] - mean * scale[c] * inv);               \
            for (int64_t b = 0; b < n; b++) {                                                      \
                const T *xp = x + (b * chs + c) * sp;                                              \
                T *yp = y + (b * chs + c) * sp;                                                    \
                for (int64_t i = 0; i < sp; i++)                                                   \
                    yp[i] = xp[i] * mul + add;                                                     \
            }                                                                                      \
            if (rm_out)                                                                            \
                rm_out[c] = (T)(momentum * rm[c] + (1.0 - momentum) * mean);                       \
            if (rv_out)                                                                            \
                rv_out[c] = (T)(momentum * rv[c] + (1.0 - momentum) * var * count / (count - 1));  \
            if (saved_mean)                                                                        \
                saved_mean[c] = (T)mean;                                                           \
            if (saved_inv)                                                                         \
                saved_inv[c] = (T)inv;                                                             \
        }                                                                                          \
    }
/* clang-format on */

BN_TRAIN_DEFINE(float)
BN_TRAIN_DEFINE(double)

static tsr_status bn_train_ref(const tsr_kernel_ctx *k)
{
    int64_t n, ch, sp;
    bn_geometry(k->inputs[0], &n, &ch, &sp);
    if (n * sp < 2)
        return tsr_error(TSR_ERR_SHAPE,
                         "training-mode BatchNorm needs more than one value per channel, got "
                         "%lld (batch %lld)",
                         (long long)(n * sp), (long long)n);
    double eps = tsr_attr_float(k->node, "epsilon"), momentum = tsr_attr_float(k->node, "momentum");
    if (k->inputs[0]->dtype == TSR_FLOAT32)
        bn_train_float(k, n, ch, sp, eps, momentum);
    else
        bn_train_double(k, n, ch, sp, eps, momentum);
    return TSR_OK;
}

static double bn_train_flops(const tsr_infer_ctx *c)
{
    return 5.0 * (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

static tsr_status bn_train_grad(tsr_grad_ctx *c)
{
    for (int o = 1; o < tsr_grad_node(c)->n_outputs; o++)
        if (tsr_grad_dy(c, o))
            return tsr_grad_unsupported(
                c, "output %d of BatchNormTrain (running or saved statistics) has no gradient", o);
    if (tsr_grad_wants(c, 3) || tsr_grad_wants(c, 4))
        return tsr_grad_unsupported(c, "the running statistics of training-mode BatchNorm have "
                                       "no gradient (they do not affect Y)");
    if (tsr_grad_node(c)->n_outputs < 5)
        return tsr_grad_unsupported(c, "BatchNormTrain needs its saved_mean and saved_inv_std "
                                       "outputs for its gradient");
    const char *ins[5] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 0), tsr_grad_input(c, 1),
                          tsr_grad_output(c, 3), tsr_grad_output(c, 4)};
    const char *outs[3];
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_BatchNormTrainGrad, 5, ins, 0, NULL, 3, outs));
    const char *dx = outs[0], *dscale = outs[1], *db = outs[2];
    TSR_CHECK(tsr_grad_contribute(c, 0, dx));
    TSR_CHECK(tsr_grad_contribute(c, 1, dscale));
    return tsr_grad_contribute(c, 2, db);
}

const tsr_op_def tsr_op_BatchNormTrain = {
    .name = "BatchNormTrain",
    .domain = "ai.tessera",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 5,
    .attrs = bn_train_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .flags = TSR_OP_NO_FOLD,
    .infer = bn_train_infer,
    .ref = bn_train_ref,
    .flops = bn_train_flops,
    .grad = bn_train_grad,
};

/* --------------------------------------------------- BatchNormTrainGrad */

static const char *const bn_grad_inputs[] = {"dY", "X", "scale", "saved_mean", "saved_inv_std"};

static tsr_status bn_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(bn_check_x(c, 1));
    TSR_CHECK(bn_check_channels(c, 2, 4, bn_grad_inputs));
    const tsr_value *dy = c->inputs[0], *x = c->inputs[1];
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    bool same = dy->dtype == x->dtype && dy->rank == x->rank;
    for (int d = 0; same && d < x->rank; d++)
        same =
            dy->dims[d] == x->dims[d] || !tsr_dim_known(dy->dims[d]) || !tsr_dim_known(x->dims[d]);
    if (!same)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "dY must have X's dtype and shape");
    int64_t ch = x->dims[1];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    tsr_infer_set(c, 1, x->dtype, 1, &ch);
    tsr_infer_set(c, 2, x->dtype, 1, &ch);
    return TSR_OK;
}

/* dX = scale inv / M (M dY - sum dY - xhat sum(dY xhat)), xhat = (x - mean) inv */
/* clang-format off */
#define BN_GRAD_DEFINE(T)                                                                          \
    static void bn_grad_##T(const tsr_kernel_ctx *k, int64_t n, int64_t chs, int64_t sp)           \
    {                                                                                              \
        const T *dy = k->inputs[0]->data, *x = k->inputs[1]->data, *scale = k->inputs[2]->data;    \
        const T *mean = k->inputs[3]->data, *inv = k->inputs[4]->data;                             \
        T *dx = k->outputs[0]->data;                                                               \
        T *dscale = k->outputs[1] ? k->outputs[1]->data : NULL;                                    \
        T *db = k->outputs[2] ? k->outputs[2]->data : NULL;                                        \
        double count = (double)(n * sp);                                                           \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && chs > 1)")         \
        for (int64_t c = 0; c < chs; c++) {                                                        \
            double sum_dy = 0.0, sum_dy_xc = 0.0, m = mean[c];                                     \
            for (int64_t b = 0; b < n; b++) {                                                      \
                const T *xp = x + (b * chs + c) * sp, *gp = dy + (b * chs + c) * sp;               \
                for (int64_t i = 0; i < sp; i++) {                                                 \
                    sum_dy += gp[i];                                                               \
                    sum_dy_xc += gp[i] * (xp[i] - m);                                              \
                }                                                                                  \
            }                                                                                      \
            double iv = inv[c], sum_dy_xhat = sum_dy_xc * iv;                                      \
            if (dscale)                                                                            \
                dscale[c] = (T)sum_dy_xhat;                                                        \
            if (db)                                                                                \
                db[c] = (T)sum_dy;                                                                 \
            double a = scale[c] * iv, mean_dy = sum_dy / count;                                    \
            double b2 = sum_dy_xhat / count * iv;                                                  \
            for (int64_t b = 0; b < n; b++) {                                                      \
                const T *xp = x + (b * chs + c) * sp, *gp = dy + (b * chs + c) * sp;               \
                T *op = dx + (b * chs + c) * sp;                                                   \
                for (int64_t i = 0; i < sp; i++)                                                   \
                    op[i] = (T)(a * (gp[i] - mean_dy - (xp[i] - m) * b2));                         \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

BN_GRAD_DEFINE(float)
BN_GRAD_DEFINE(double)

static tsr_status bn_grad_ref(const tsr_kernel_ctx *k)
{
    int64_t n, ch, sp;
    bn_geometry(k->inputs[1], &n, &ch, &sp);
    if (k->inputs[1]->dtype == TSR_FLOAT32)
        bn_grad_float(k, n, ch, sp);
    else
        bn_grad_double(k, n, ch, sp);
    return TSR_OK;
}

static double bn_grad_flops(const tsr_infer_ctx *c)
{
    return 8.0 * (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

const tsr_op_def tsr_op_BatchNormTrainGrad = {
    .name = "BatchNormTrainGrad",
    .domain = "ai.tessera",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 3,
    .max_outputs = 3,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = bn_grad_infer,
    .ref = bn_grad_ref,
    .flops = bn_grad_flops,
};

/* --------------------------------------------------------- DropoutTrain */

static const tsr_attr_def dropout_train_attrs[] = {{"ratio", TSR_ATTR_FLOAT, .f = 0.5}, {NULL}};

static tsr_status dropout_train_infer(tsr_infer_ctx *c)
{
    if (!c->inputs[0] || c->n_inputs < 2 || !c->inputs[1])
        return tsr_infer_error(c, TSR_ERR_SHAPE, "X and seed are required");
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_INT64)));
    const tsr_value *seed = c->inputs[1];
    int64_t numel = tsr_shape_numel(seed->rank, seed->dims);
    if (numel >= 0 && numel != 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "seed must hold one int64, got %lld elements",
                               (long long)numel);
    double ratio = tsr_attr_float(c->node, "ratio");
    if (!(ratio >= 0.0 && ratio < 1.0))
        return tsr_infer_error(c, TSR_ERR_INVALID_ARGUMENT, "ratio must be in [0, 1), got %g",
                               ratio);
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    if (c->n_outputs > 1)
        tsr_infer_set(c, 1, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; s && *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static tsr_status dropout_train_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    uint64_t key =
        tsr_random_hash((uint64_t) * (const int64_t *)k->inputs[1]->data ^ name_hash(k->node->name));
    double ratio = tsr_attr_float(k->node, "ratio"), keep_scale = 1.0 / (1.0 - ratio);
    /* keep when the top 53 bits, as a fraction of 2^53, reach the ratio */
    uint64_t threshold = (uint64_t)(ratio * 9007199254740992.0);
    int64_t numel = tsr_tensor_numel(x);
    tsr_tensor *y = k->outputs[0], *mask = k->n_outputs > 1 ? k->outputs[1] : NULL;
    bool f32 = x->dtype == TSR_FLOAT32;
#pragma omp parallel for num_threads(k->threads) if (k->threads > 1 && numel > 65536)
    for (int64_t i = 0; i < numel; i++) {
        double m = (tsr_random_hash(key + (uint64_t)i) >> 11) >= threshold ? keep_scale : 0.0;
        if (f32) {
            ((float *)y->data)[i] = ((const float *)x->data)[i] * (float)m;
            if (mask)
                ((float *)mask->data)[i] = (float)m;
        } else {
            ((double *)y->data)[i] = ((const double *)x->data)[i] * m;
            if (mask)
                ((double *)mask->data)[i] = m;
        }
    }
    return TSR_OK;
}

static tsr_status dropout_train_grad(tsr_grad_ctx *c)
{
    if (tsr_grad_dy(c, 1))
        return tsr_grad_unsupported(c, "the mask of DropoutTrain has no gradient");
    if (tsr_grad_node(c)->n_outputs < 2)
        return tsr_grad_unsupported(c, "DropoutTrain needs its mask output for its gradient");
    const char *g;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, tsr_grad_dy(c, 0), tsr_grad_output(c, 1), &g));
    return tsr_grad_contribute(c, 0, g);
}

static double one_per_element(const tsr_infer_ctx *c)
{
    return (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

const tsr_op_def tsr_op_DropoutTrain = {
    .name = "DropoutTrain",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 2,
    .attrs = dropout_train_attrs,
    .locality = TSR_LOCALITY_MOVEMENT, /* a tile would draw the wrong elements' numbers */
    .flags = TSR_OP_NO_FOLD,
    .infer = dropout_train_infer,
    .ref = dropout_train_ref,
    .flops = one_per_element,
    .grad = dropout_train_grad,
};

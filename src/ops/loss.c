/* Losses (domain ai.tessera), reduced to a scalar by `reduction` ("mean" or
 * "sum"), each with a backward op that its gradient rule emits:
 *   SoftmaxCrossEntropy(logits [N, C, d...], labels int64 [N, d...]) -> loss
 * softmax over axis 1 and the negative log-likelihood of the labels, with
 * label smoothing e: the target distribution is (1 - e) one-hot + e / C.
 * "mean" divides by the number of labelled positions (N d...).
 *   SoftmaxCrossEntropyGrad(dloss, logits, labels) -> dlogits
 *   RegressionLoss(y, target) -> loss          kind "mse", "l1" or "huber"
 * over every element of y, whose shape the target has; "mean" divides by
 * their count. Huber: 0.5 d^2 where |d| < delta, else delta (|d| - delta/2).
 *   RegressionLossGrad(dloss, y, target) -> dy
 * Both follow PyTorch's CrossEntropyLoss, MSELoss, L1Loss and HuberLoss. */
#include "autodiff/autodiff.h"
#include "ops/op.h"

#include <math.h>
#include <string.h>

static tsr_status reduction_mean(const tsr_node *n, bool *mean_out)
{
    const char *r = tsr_attr_string(n, "reduction");
    if (strcmp(r, "mean") != 0 && strcmp(r, "sum") != 0)
        return tsr_error(TSR_ERR_UNSUPPORTED, "reduction '%s' is not supported (mean or sum)", r);
    *mean_out = strcmp(r, "mean") == 0;
    return TSR_OK;
}

static tsr_status same_shape(tsr_infer_ctx *c, int a, int b, const char *what)
{
    const tsr_value *x = c->inputs[a], *y = c->inputs[b];
    bool same = x->rank == y->rank;
    for (int d = 0; same && d < x->rank; d++)
        same = x->dims[d] == y->dims[d] || !tsr_dim_known(x->dims[d]) || !tsr_dim_known(y->dims[d]);
    if (!same) {
        char sx[160], sy[160];
        tsr_shape_format(sx, sizeof sx, x->rank, x->dims);
        tsr_shape_format(sy, sizeof sy, y->rank, y->dims);
        return tsr_infer_error(c, TSR_ERR_SHAPE, "%s: shapes %s and %s differ", what, sx, sy);
    }
    return TSR_OK;
}

static tsr_status require_all(tsr_infer_ctx *c)
{
    for (int i = 0; i < c->n_inputs; i++)
        if (!c->inputs[i])
            return tsr_infer_error(c, TSR_ERR_SHAPE, "input %d is required", i);
    return TSR_OK;
}

/* ------------------------------------------------------ cross-entropy */

static const tsr_attr_def ce_attrs[] = {{"reduction", TSR_ATTR_STRING, .s = "mean"},
                                        {"label_smoothing", TSR_ATTR_FLOAT, .f = 0.0},
                                        {NULL}};

/* logits at input li, labels at li + 1 */
static tsr_status ce_check(tsr_infer_ctx *c, int li)
{
    TSR_CHECK(require_all(c));
    bool mean = true;
    tsr_status st = reduction_mean(c->node, &mean);
    if (st != TSR_OK)
        return tsr_infer_error(c, st, "%s", tsr_last_error());
    double e = tsr_attr_float(c->node, "label_smoothing");
    if (!(e >= 0.0 && e < 1.0))
        return tsr_infer_error(c, TSR_ERR_INVALID_ARGUMENT,
                               "label_smoothing must be in [0, 1), got %g", e);
    TSR_CHECK(tsr_infer_require_dtype(c, li, TSR_FLOAT_TYPES));
    TSR_CHECK(tsr_infer_require_dtype(c, li + 1, TSR_DTYPE_BIT(TSR_INT64)));
    const tsr_value *x = c->inputs[li], *lab = c->inputs[li + 1];
    if (x->rank < 2)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "logits must have rank >= 2 (N, C, ...), got %d",
                               x->rank);
    if (lab->rank != x->rank - 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "labels must have rank %d (the logits' shape without the class "
                               "axis 1), got %d",
                               x->rank - 1, lab->rank);
    for (int d = 0; d < lab->rank; d++) {
        int64_t want = x->dims[d == 0 ? 0 : d + 1];
        if (tsr_dim_known(want) && tsr_dim_known(lab->dims[d]) && want != lab->dims[d])
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "labels dim %d is %lld but the logits have %lld there", d,
                                   (long long)lab->dims[d], (long long)want);
    }
    return TSR_OK;
}

static tsr_status ce_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(ce_check(c, 0));
    tsr_infer_set(c, 0, c->inputs[0]->dtype, 0, NULL);
    return TSR_OK;
}

static void ce_geometry(const tsr_tensor *x, int64_t *n, int64_t *classes, int64_t *sp)
{
    *n = x->dims[0];
    *classes = x->dims[1];
    *sp = 1;
    for (int d = 2; d < x->rank; d++)
        *sp *= x->dims[d];
}

static tsr_status ce_labels_valid(const tsr_tensor *lab, int64_t classes)
{
    const int64_t *l = lab->data, n = tsr_tensor_numel(lab);
    for (int64_t i = 0; i < n; i++)
        if (l[i] < 0 || l[i] >= classes)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "label %lld at position %lld is out of range for %lld classes",
                             (long long)l[i], (long long)i, (long long)classes);
    return TSR_OK;
}

/* Per position: logsumexp and, into dx when given, the gradient of that
 * position's loss times `scale`. Returns the summed loss. */
static double ce_core(const tsr_tensor *x, const tsr_tensor *lab, double e, tsr_tensor *dx,
                      double scale, int threads)
{
    int64_t n, classes, sp;
    ce_geometry(x, &n, &classes, &sp);
    const int64_t *l = lab->data;
    double total = 0.0, smooth = e / (double)classes;
#pragma omp parallel for num_threads(threads) reduction(+ : total) if (threads > 1 && n > 1)
    for (int64_t b = 0; b < n; b++)
        for (int64_t s = 0; s < sp; s++) {
            int64_t base = b * classes * sp + s;
            double mx = -INFINITY, sum = 0.0, sum_x = 0.0;
            for (int64_t k = 0; k < classes; k++)
                mx = fmax(mx, tsr_get_f(x, base + k * sp));
            for (int64_t k = 0; k < classes; k++) {
                double v = tsr_get_f(x, base + k * sp);
                sum += exp(v - mx);
                sum_x += v;
            }
            double lse = mx + log(sum);
            int64_t label = l[b * sp + s];
            double xl = tsr_get_f(x, base + label * sp);
            total += lse - (1.0 - e) * xl - smooth * sum_x;
            if (!dx)
                continue;
            for (int64_t k = 0; k < classes; k++) {
                double p = exp(tsr_get_f(x, base + k * sp) - lse);
                double t = smooth + (k == label ? 1.0 - e : 0.0);
                tsr_set_f(dx, base + k * sp, scale * (p - t));
            }
        }
    return total;
}

static tsr_status ce_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    int64_t n, classes, sp;
    ce_geometry(x, &n, &classes, &sp);
    TSR_CHECK(ce_labels_valid(k->inputs[1], classes));
    bool mean = true;
    TSR_CHECK(reduction_mean(k->node, &mean));
    double total =
        ce_core(x, k->inputs[1], tsr_attr_float(k->node, "label_smoothing"), NULL, 0, k->threads);
    tsr_set_f(k->outputs[0], 0, mean && n * sp > 0 ? total / (double)(n * sp) : total);
    return TSR_OK;
}

static double ce_flops(const tsr_infer_ctx *c)
{
    return 4.0 * (double)tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
}

static tsr_status ce_grad(tsr_grad_ctx *c)
{
    if (!tsr_grad_wants(c, 0))
        return TSR_OK;
    const char *ins[3] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 0), tsr_grad_input(c, 1)};
    tsr_attr attrs[4];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 4);
    const char *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_SoftmaxCrossEntropyGrad, 3, ins, n_attrs, attrs, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_SoftmaxCrossEntropy = {
    .name = "SoftmaxCrossEntropy",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = ce_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = ce_infer,
    .ref = ce_ref,
    .flops = ce_flops,
    .grad = ce_grad,
};

static tsr_status scalar_dloss(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *d = c->inputs[0];
    if (d->rank != 0)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "dloss must be a scalar, got rank %d", d->rank);
    if (d->dtype != c->inputs[1]->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "dloss is %s but the prediction is %s",
                               tsr_dtype_name(d->dtype), tsr_dtype_name(c->inputs[1]->dtype));
    return TSR_OK;
}

static tsr_status ce_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(ce_check(c, 1));
    TSR_CHECK(scalar_dloss(c));
    tsr_infer_set(c, 0, c->inputs[1]->dtype, c->inputs[1]->rank, c->inputs[1]->dims);
    return TSR_OK;
}

static tsr_status ce_grad_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[1];
    int64_t n, classes, sp;
    ce_geometry(x, &n, &classes, &sp);
    TSR_CHECK(ce_labels_valid(k->inputs[2], classes));
    bool mean = true;
    TSR_CHECK(reduction_mean(k->node, &mean));
    double scale = tsr_get_f(k->inputs[0], 0);
    if (mean && n * sp > 0)
        scale /= (double)(n * sp);
    ce_core(x, k->inputs[2], tsr_attr_float(k->node, "label_smoothing"), k->outputs[0], scale,
            k->threads);
    return TSR_OK;
}

static double ce_grad_flops(const tsr_infer_ctx *c)
{
    return 6.0 * (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

const tsr_op_def tsr_op_SoftmaxCrossEntropyGrad = {
    .name = "SoftmaxCrossEntropyGrad",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = ce_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = ce_grad_infer,
    .ref = ce_grad_ref,
    .flops = ce_grad_flops,
};

/* ------------------------------------------------------ regression */

static const tsr_attr_def reg_attrs[] = {{"kind", TSR_ATTR_STRING, .s = "mse"},
                                         {"delta", TSR_ATTR_FLOAT, .f = 1.0},
                                         {"reduction", TSR_ATTR_STRING, .s = "mean"},
                                         {NULL}};

typedef enum { REG_MSE, REG_L1, REG_HUBER } reg_kind;

static tsr_status reg_kind_of(const tsr_node *n, reg_kind *kind)
{
    const char *s = tsr_attr_string(n, "kind");
    if (strcmp(s, "mse") == 0)
        *kind = REG_MSE;
    else if (strcmp(s, "l1") == 0)
        *kind = REG_L1;
    else if (strcmp(s, "huber") == 0)
        *kind = REG_HUBER;
    else
        return tsr_error(TSR_ERR_UNSUPPORTED, "loss kind '%s' is not supported (mse, l1, huber)",
                         s);
    if (*kind == REG_HUBER && !(tsr_attr_float(n, "delta") > 0.0))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "huber delta must be > 0, got %g",
                         tsr_attr_float(n, "delta"));
    return TSR_OK;
}

static tsr_status reg_check(tsr_infer_ctx *c, int yi)
{
    TSR_CHECK(require_all(c));
    reg_kind kind;
    bool mean = true;
    tsr_status st = reg_kind_of(c->node, &kind);
    if (st == TSR_OK)
        st = reduction_mean(c->node, &mean);
    if (st != TSR_OK)
        return tsr_infer_error(c, st, "%s", tsr_last_error());
    TSR_CHECK(tsr_infer_require_dtype(c, yi, TSR_FLOAT_TYPES));
    if (c->inputs[yi + 1]->dtype != c->inputs[yi]->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "the target is %s but the prediction is %s",
                               tsr_dtype_name(c->inputs[yi + 1]->dtype),
                               tsr_dtype_name(c->inputs[yi]->dtype));
    return same_shape(c, yi, yi + 1, "prediction and target");
}

static tsr_status reg_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(reg_check(c, 0));
    tsr_infer_set(c, 0, c->inputs[0]->dtype, 0, NULL);
    return TSR_OK;
}

static double reg_value(reg_kind kind, double d, double delta)
{
    double a = fabs(d);
    switch (kind) {
    case REG_MSE: return d * d;
    case REG_L1: return a;
    case REG_HUBER: return a < delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
    }
    return 0.0;
}

static double reg_slope(reg_kind kind, double d, double delta)
{
    double sign = d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0;
    switch (kind) {
    case REG_MSE: return 2.0 * d;
    case REG_L1: return sign;
    case REG_HUBER: return fabs(d) < delta ? d : delta * sign;
    }
    return 0.0;
}

static tsr_status reg_ref(const tsr_kernel_ctx *k)
{
    reg_kind kind;
    bool mean = true;
    TSR_CHECK(reg_kind_of(k->node, &kind));
    TSR_CHECK(reduction_mean(k->node, &mean));
    const tsr_tensor *y = k->inputs[0], *t = k->inputs[1];
    double delta = tsr_attr_float(k->node, "delta"), total = 0.0;
    int64_t numel = tsr_tensor_numel(y);
#pragma omp parallel for num_threads(k->threads) reduction(+ : total) if (k->threads > 1 && numel > 65536)
    for (int64_t i = 0; i < numel; i++)
        total += reg_value(kind, tsr_get_f(y, i) - tsr_get_f(t, i), delta);
    tsr_set_f(k->outputs[0], 0, mean && numel > 0 ? total / (double)numel : total);
    return TSR_OK;
}

static double reg_flops(const tsr_infer_ctx *c)
{
    return 3.0 * (double)tsr_shape_numel(c->inputs[0]->rank, c->inputs[0]->dims);
}

static tsr_status reg_grad(tsr_grad_ctx *c)
{
    if (!tsr_grad_wants(c, 0) && !tsr_grad_wants(c, 1))
        return TSR_OK;
    const char *ins[3] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 0), tsr_grad_input(c, 1)};
    tsr_attr attrs[4];
    int n_attrs = tsr_grad_node_attrs(c, attrs, 4);
    const char *g, *neg;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_RegressionLossGrad, 3, ins, n_attrs, attrs, 1, &g));
    TSR_CHECK(tsr_grad_contribute(c, 0, g));
    if (!tsr_grad_wants(c, 1))
        return TSR_OK;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, g, &neg));
    return tsr_grad_contribute(c, 1, neg);
}

const tsr_op_def tsr_op_RegressionLoss = {
    .name = "RegressionLoss",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = reg_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = reg_infer,
    .ref = reg_ref,
    .flops = reg_flops,
    .grad = reg_grad,
};

static tsr_status reg_grad_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(reg_check(c, 1));
    TSR_CHECK(scalar_dloss(c));
    tsr_infer_set(c, 0, c->inputs[1]->dtype, c->inputs[1]->rank, c->inputs[1]->dims);
    return TSR_OK;
}

static tsr_status reg_grad_ref(const tsr_kernel_ctx *k)
{
    reg_kind kind;
    bool mean = true;
    TSR_CHECK(reg_kind_of(k->node, &kind));
    TSR_CHECK(reduction_mean(k->node, &mean));
    const tsr_tensor *y = k->inputs[1], *t = k->inputs[2];
    tsr_tensor *dy = k->outputs[0];
    int64_t numel = tsr_tensor_numel(y);
    double delta = tsr_attr_float(k->node, "delta"), scale = tsr_get_f(k->inputs[0], 0);
    if (mean && numel > 0)
        scale /= (double)numel;
#pragma omp parallel for num_threads(k->threads) if (k->threads > 1 && numel > 65536)
    for (int64_t i = 0; i < numel; i++)
        tsr_set_f(dy, i, scale * reg_slope(kind, tsr_get_f(y, i) - tsr_get_f(t, i), delta));
    return TSR_OK;
}

const tsr_op_def tsr_op_RegressionLossGrad = {
    .name = "RegressionLossGrad",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = reg_attrs,
    .locality = TSR_LOCALITY_REDUCTION,
    .infer = reg_grad_infer,
    .ref = reg_grad_ref,
    .flops = reg_flops,
};

/* Element-wise unary math and activations. Each op is a scalar expression
 * evaluated in double precision, so float32 and float64 share one definition. */
#include "autodiff/autodiff.h"
#include "ops/op.h"

#include <math.h>

static tsr_status infer_same_float(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

static double flops_per_element(const tsr_infer_ctx *c)
{
    return (double)tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
}

/* The op's float attributes in schema order. */
static void read_params(const tsr_node *node, double p[4])
{
    int np = 0;
    for (const tsr_attr_def *d = node->op->attrs; d && d->name && np < 4; d++)
        if (d->type == TSR_ATTR_FLOAT)
            p[np++] = tsr_attr_float(node, d->name);
}

#define PARALLEL_MIN_ELEMENTS 32768

/* Each op's scalar function is static inline, so the compiler inlines it
 * into both typed loops (an indirect call per element would not vectorize).
 * clang-format is off here because it mangles _Pragma inside macros. */
// clang-format off
#define UNARY_OP_IN(NAME, DOMAIN, ATTRS, EXPR)                                                   \
    static tsr_status NAME##_grad(tsr_grad_ctx *c);                                              \
    static inline double NAME##_fn(double x, const double *p)                                    \
    {                                                                                            \
        (void)p;                                                                                 \
        return (EXPR);                                                                           \
    }                                                                                            \
    static tsr_status NAME##_ref(const tsr_kernel_ctx *k)                                        \
    {                                                                                            \
        double p[4] = {0};                                                                       \
        read_params(k->node, p);                                                                 \
        int64_t count = tsr_tensor_numel(k->inputs[0]);                                          \
        int nt = count >= PARALLEL_MIN_ELEMENTS && k->threads > 1 ? k->threads : 1;              \
        if (k->inputs[0]->dtype == TSR_FLOAT32) {                                                \
            const float *xs = k->inputs[0]->data;                                                \
            float *ys = k->outputs[0]->data;                                                     \
            _Pragma("omp parallel for num_threads(nt) if (nt > 1)")                              \
            for (int64_t i = 0; i < count; i++)                                                  \
                ys[i] = (float)NAME##_fn(xs[i], p);                                              \
        } else {                                                                                 \
            const double *xs = k->inputs[0]->data;                                               \
            double *ys = k->outputs[0]->data;                                                    \
            _Pragma("omp parallel for num_threads(nt) if (nt > 1)")                              \
            for (int64_t i = 0; i < count; i++)                                                  \
                ys[i] = NAME##_fn(xs[i], p);                                                     \
        }                                                                                        \
        return TSR_OK;                                                                           \
    }                                                                                            \
    const tsr_op_def tsr_op_##NAME = {                                                           \
        .name = #NAME,                                                                           \
        .domain = DOMAIN,                                                                        \
        .min_inputs = 1,                                                                         \
        .max_inputs = 1,                                                                         \
        .min_outputs = 1,                                                                        \
        .max_outputs = 1,                                                                        \
        .attrs = ATTRS,                                                                          \
        .locality = TSR_LOCALITY_ELEMENTWISE,                                                    \
        .infer = infer_same_float,                                                               \
        .ref = NAME##_ref,                                                                       \
        .flops = flops_per_element,                                                              \
        .grad = NAME##_grad,                                                                     \
    };
#define UNARY_OP(NAME, ATTRS, EXPR) UNARY_OP_IN(NAME, "", ATTRS, EXPR)
// clang-format on

static const tsr_attr_def leaky_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 0.01}, {NULL}};
static const tsr_attr_def elu_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 1.0}, {NULL}};
static const tsr_attr_def selu_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 1.67326319217681884765625},
                                          {"gamma", TSR_ATTR_FLOAT, .f = 1.05070102214813232421875},
                                          {NULL}};
static const tsr_attr_def hardsigmoid_attrs[] = {
    {"alpha", TSR_ATTR_FLOAT, .f = 0.2}, {"beta", TSR_ATTR_FLOAT, .f = 0.5}, {NULL}};

/* Comparisons rather than fmin/fmax, so that NaN propagates like PyTorch. */
static inline double hard_sigmoid(double x, double alpha, double beta)
{
    double v = alpha * x + beta;
    return v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
}

UNARY_OP(Relu, NULL, x < 0 ? 0.0 : x)
UNARY_OP(LeakyRelu, leaky_attrs, x >= 0 ? x : p[0] * x)
UNARY_OP(Elu, elu_attrs, x >= 0 ? x : p[0] * expm1(x))
UNARY_OP(Selu, selu_attrs, p[1] * (x > 0 ? x : p[0] * expm1(x)))
UNARY_OP(Sigmoid, NULL, 1.0 / (1.0 + exp(-x)))
UNARY_OP(HardSigmoid, hardsigmoid_attrs, hard_sigmoid(x, p[0], p[1]))
UNARY_OP(HardSwish, NULL, x *hard_sigmoid(x, 1.0 / 6.0, 0.5))
UNARY_OP(Tanh, NULL, tanh(x))
UNARY_OP(Erf, NULL, erf(x))
UNARY_OP(Exp, NULL, exp(x))
UNARY_OP(Log, NULL, log(x))
UNARY_OP(Sqrt, NULL, sqrt(x))
UNARY_OP(Reciprocal, NULL, 1.0 / x)
UNARY_OP(Floor, NULL, floor(x))
UNARY_OP(Ceil, NULL, ceil(x))
/* Silu (domain ai.tessera; ONNX has none, PyTorch's SiLU exports as
 * Mul(x, Sigmoid(x))): x sigmoid(x) in one pass. */
UNARY_OP_IN(Silu, "ai.tessera", NULL, x / (1.0 + exp(-x)))
/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, no cancellation. */
UNARY_OP(Softplus, NULL, (x > 0 ? x : 0.0) + log1p(exp(-fabs(x))))

/* ------------------------------------------------------- gradient rules */

/* Each rule builds dX = dY * f'(x) from graph nodes; derivatives at kinks
 * follow PyTorch (Relu'(0) = 0, Abs'(0) = 0, Clip passes its bounds). */

static tsr_dtype dy_dtype(const tsr_grad_ctx *c)
{
    return tsr_grad_value(c, tsr_grad_dy(c, 0))->dtype;
}

static tsr_status scalar(tsr_grad_ctx *c, double v, const char **out)
{
    return tsr_grad_scalar(c, v, dy_dtype(c), out);
}

/* a OP scalar v */
static tsr_status with_scalar(tsr_grad_ctx *c, const tsr_op_def *op, const char *a, double v,
                              const char **out)
{
    const char *k;
    TSR_CHECK(scalar(c, v, &k));
    return tsr_grad_binary(c, op, a, k, out);
}

/* Where(x OP threshold, then, otherwise), else_name may be NULL for 0. */
static tsr_status select_cmp(tsr_grad_ctx *c, const tsr_op_def *cmp, const char *x,
                             double threshold, const char *then, const char *otherwise,
                             const char **out)
{
    const char *cond, *zero;
    TSR_CHECK(with_scalar(c, cmp, x, threshold, &cond));
    if (!otherwise) {
        TSR_CHECK(scalar(c, 0.0, &zero));
        otherwise = zero;
    }
    if (!then) {
        TSR_CHECK(scalar(c, 0.0, &zero));
        then = zero;
    }
    const char *ins[3] = {cond, then, otherwise};
    return tsr_grad_emit(c, &tsr_op_Where, 3, ins, 0, NULL, 1, out);
}

/* Contributes dY * d to the input. */
static tsr_status times_dy(tsr_grad_ctx *c, const char *d)
{
    const char *g;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, tsr_grad_dy(c, 0), d, &g));
    return tsr_grad_contribute(c, 0, g);
}

static double attr_f(const tsr_grad_ctx *c, const char *name)
{
    return tsr_attr_float(tsr_grad_node(c), name);
}

/* One ReluGrad pass instead of Greater + Where; it reads Relu's output
 * (y > 0 exactly where x > 0), which the next layer keeps anyway, so the
 * input of Relu need not live until the backward pass. */
static tsr_status Relu_grad(tsr_grad_ctx *c)
{
    const char *ins[2] = {tsr_grad_dy(c, 0), tsr_grad_output(c, 0)}, *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReluGrad, 2, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status LeakyRelu_grad(tsr_grad_ctx *c)
{
    const char *neg, *g;
    TSR_CHECK(with_scalar(c, &tsr_op_Mul, tsr_grad_dy(c, 0), attr_f(c, "alpha"), &neg));
    const char *x = tsr_grad_input(c, 0);
    TSR_CHECK(select_cmp(c, &tsr_op_Greater, x, 0.0, tsr_grad_dy(c, 0), neg, &g));
    return tsr_grad_contribute(c, 0, g);
}

/* Elu and Selu: scale * (x > 0 ? 1 : alpha * e^x). */
static tsr_status elu_like(tsr_grad_ctx *c, double alpha, double scale)
{
    const char *x = tsr_grad_input(c, 0), *e, *neg, *d, *g;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Exp, x, &e));
    TSR_CHECK(with_scalar(c, &tsr_op_Mul, e, alpha * scale, &neg));
    const char *pos;
    TSR_CHECK(scalar(c, scale, &pos));
    TSR_CHECK(select_cmp(c, &tsr_op_Greater, x, 0.0, pos, neg, &d));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, tsr_grad_dy(c, 0), d, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status Elu_grad(tsr_grad_ctx *c) { return elu_like(c, attr_f(c, "alpha"), 1.0); }

static tsr_status Selu_grad(tsr_grad_ctx *c)
{
    return elu_like(c, attr_f(c, "alpha"), attr_f(c, "gamma"));
}

static tsr_status Sigmoid_grad(tsr_grad_ctx *c)
{
    const char *y = tsr_grad_output(c, 0), *one_minus, *d, *one;
    TSR_CHECK(scalar(c, 1.0, &one));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, one, y, &one_minus));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, y, one_minus, &d));
    return times_dy(c, d);
}

/* alpha inside the open interval where 0 < alpha x + beta < 1, else 0. */
static tsr_status HardSigmoid_grad(tsr_grad_ctx *c)
{
    const char *ax, *v, *inner, *g, *scaled;
    TSR_CHECK(with_scalar(c, &tsr_op_Mul, tsr_grad_input(c, 0), attr_f(c, "alpha"), &ax));
    TSR_CHECK(with_scalar(c, &tsr_op_Add, ax, attr_f(c, "beta"), &v));
    TSR_CHECK(with_scalar(c, &tsr_op_Mul, tsr_grad_dy(c, 0), attr_f(c, "alpha"), &scaled));
    TSR_CHECK(select_cmp(c, &tsr_op_Less, v, 1.0, scaled, NULL, &inner));
    TSR_CHECK(select_cmp(c, &tsr_op_Greater, v, 0.0, inner, NULL, &g));
    return tsr_grad_contribute(c, 0, g);
}

/* x < -3: 0, x > 3: 1, else x / 3 + 1/2 (PyTorch's convention at +-3). */
static tsr_status HardSwish_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *third, *mid, *d, *outer, *one;
    TSR_CHECK(with_scalar(c, &tsr_op_Mul, x, 1.0 / 3.0, &third));
    TSR_CHECK(with_scalar(c, &tsr_op_Add, third, 0.5, &mid));
    TSR_CHECK(scalar(c, 1.0, &one));
    TSR_CHECK(select_cmp(c, &tsr_op_Greater, x, 3.0, one, mid, &outer));
    TSR_CHECK(select_cmp(c, &tsr_op_Less, x, -3.0, NULL, outer, &d));
    return times_dy(c, d);
}

static tsr_status Tanh_grad(tsr_grad_ctx *c)
{
    const char *y = tsr_grad_output(c, 0), *sq, *d, *one;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, y, y, &sq));
    TSR_CHECK(scalar(c, 1.0, &one));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, one, sq, &d));
    return times_dy(c, d);
}

static tsr_status Erf_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *sq, *neg, *e, *d;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, x, x, &sq));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, sq, &neg));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Exp, neg, &e));
    TSR_CHECK(with_scalar(c, &tsr_op_Mul, e, 1.12837916709551257390, &d)); /* 2 / sqrt(pi) */
    return times_dy(c, d);
}

static tsr_status Exp_grad(tsr_grad_ctx *c) { return times_dy(c, tsr_grad_output(c, 0)); }

static tsr_status Log_grad(tsr_grad_ctx *c)
{
    const char *g;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, tsr_grad_dy(c, 0), tsr_grad_input(c, 0), &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status Sqrt_grad(tsr_grad_ctx *c)
{
    const char *twice, *g;
    TSR_CHECK(with_scalar(c, &tsr_op_Mul, tsr_grad_output(c, 0), 2.0, &twice));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, tsr_grad_dy(c, 0), twice, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status Reciprocal_grad(tsr_grad_ctx *c)
{
    const char *y = tsr_grad_output(c, 0), *sq, *neg;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, y, y, &sq));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, sq, &neg));
    return times_dy(c, neg);
}

/* Piecewise constant: the gradient is zero, so nothing flows back. */
static tsr_status Floor_grad(tsr_grad_ctx *c) { return TSR_OK; }
static tsr_status Ceil_grad(tsr_grad_ctx *c) { return TSR_OK; }

/* One SiluGrad pass: dY s (1 + x (1 - s)), s = sigmoid(x). */
static tsr_status Silu_grad(tsr_grad_ctx *c)
{
    const char *ins[2] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 0)}, *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_SiluGrad, 2, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status Softplus_grad(tsr_grad_ctx *c)
{
    const char *s;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sigmoid, tsr_grad_input(c, 0), &s));
    return times_dy(c, s);
}

static tsr_status Abs_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *dy = tsr_grad_dy(c, 0), *neg, *inner, *g;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, dy, &neg));
    TSR_CHECK(select_cmp(c, &tsr_op_Less, x, 0.0, neg, NULL, &inner));
    TSR_CHECK(select_cmp(c, &tsr_op_Greater, x, 0.0, dy, inner, &g));
    return tsr_grad_contribute(c, 0, g);
}

static tsr_status Neg_grad(tsr_grad_ctx *c)
{
    const char *g;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, tsr_grad_dy(c, 0), &g));
    return tsr_grad_contribute(c, 0, g);
}

/* dX flows where min <= x <= max (as in PyTorch), in one ClipGrad pass; a
 * bound that is an input gets the gradient of the elements clipped to it
 * (max: of those that min left, so that min > max stays consistent). */
static tsr_status Clip_grad(tsr_grad_ctx *c)
{
    const char *x = tsr_grad_input(c, 0), *dy = tsr_grad_dy(c, 0);
    const char *lo = tsr_grad_input(c, 1), *hi = tsr_grad_input(c, 2);
    const char *ins[4] = {dy, x, lo ? lo : "", hi ? hi : ""}, *g, *zero = NULL;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ClipGrad, hi ? 4 : lo ? 3 : 2, ins, 0, NULL, 1, &g));
    const char *bounds[2] = {lo, hi};
    const tsr_op_def *outside[2] = {&tsr_op_Less, &tsr_op_Greater};
    for (int b = 0; b < 2; b++) {
        if (!bounds[b] || !tsr_grad_wants(c, 1 + b))
            continue;
        const char *cond, *to_bound, *left = dy;
        if (!zero)
            TSR_CHECK(scalar(c, 0.0, &zero));
        if (b == 1 && lo)
            TSR_CHECK(tsr_grad_emit(c, &tsr_op_ClipGrad, 3, ins, 0, NULL, 1, &left));
        TSR_CHECK(tsr_grad_binary(c, outside[b], x, bounds[b], &cond));
        const char *take[3] = {cond, left, zero};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Where, 3, take, 0, NULL, 1, &to_bound));
        TSR_CHECK(tsr_grad_contribute_sum(c, 1 + b, to_bound));
    }
    return tsr_grad_contribute(c, 0, g);
}

/* Abs and Neg also take integers: shape arithmetic exported from PyTorch
 * uses them. Negation goes through unsigned so that INT_MIN wraps. */
static tsr_status infer_same_signed(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(
        c, 0, TSR_FLOAT_TYPES | TSR_DTYPE_BIT(TSR_INT64) | TSR_DTYPE_BIT(TSR_INT32)));
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

#define INT_LOOP(T, UT, NEGATE_IF)                                                                 \
    do {                                                                                           \
        const T *xs = k->inputs[0]->data;                                                          \
        T *ys = k->outputs[0]->data;                                                               \
        for (int64_t i = 0; i < count; i++)                                                        \
            ys[i] = (NEGATE_IF) ? (T)((UT)0 - (UT)xs[i]) : xs[i];                                  \
    } while (0)

#define SIGNED_OP(NAME, EXPR, NEGATE_IF)                                                           \
    static tsr_status NAME##_grad(tsr_grad_ctx *c);                                                \
    static inline double NAME##_fn(double x)                                                       \
    {                                                                                              \
        return (EXPR);                                                                             \
    }                                                                                              \
    static tsr_status NAME##_ref(const tsr_kernel_ctx *k)                                          \
    {                                                                                              \
        int64_t count = tsr_tensor_numel(k->inputs[0]);                                            \
        switch (k->inputs[0]->dtype) {                                                             \
        case TSR_FLOAT32: {                                                                        \
            const float *xs = k->inputs[0]->data;                                                  \
            float *ys = k->outputs[0]->data;                                                       \
            for (int64_t i = 0; i < count; i++)                                                    \
                ys[i] = (float)NAME##_fn(xs[i]);                                                   \
            break;                                                                                 \
        }                                                                                          \
        case TSR_FLOAT64: {                                                                        \
            const double *xs = k->inputs[0]->data;                                                 \
            double *ys = k->outputs[0]->data;                                                      \
            for (int64_t i = 0; i < count; i++)                                                    \
                ys[i] = NAME##_fn(xs[i]);                                                          \
            break;                                                                                 \
        }                                                                                          \
        case TSR_INT64: INT_LOOP(int64_t, uint64_t, NEGATE_IF); break;                             \
        case TSR_INT32: INT_LOOP(int32_t, uint32_t, NEGATE_IF); break;                             \
        default:                                                                                   \
            return tsr_error(TSR_ERR_DTYPE, #NAME " has no kernel for %s",                         \
                             tsr_dtype_name(k->inputs[0]->dtype));                                 \
        }                                                                                          \
        return TSR_OK;                                                                             \
    }                                                                                              \
    const tsr_op_def tsr_op_##NAME = {                                                             \
        .name = #NAME,                                                                             \
        .domain = "",                                                                              \
        .min_inputs = 1,                                                                           \
        .max_inputs = 1,                                                                           \
        .min_outputs = 1,                                                                          \
        .max_outputs = 1,                                                                          \
        .locality = TSR_LOCALITY_ELEMENTWISE,                                                      \
        .infer = infer_same_signed,                                                                \
        .ref = NAME##_ref,                                                                         \
        .flops = flops_per_element,                                                                \
        .grad = NAME##_grad,                                                                       \
    };

SIGNED_OP(Abs, fabs(x), xs[i] < 0)
SIGNED_OP(Neg, -x, 1)

/* Clip's bounds are optional scalar inputs (opset 11 on; the attribute
 * form of older opsets is not imported). */
static tsr_status clip_bounds_infer(tsr_infer_ctx *c, int first)
{
    for (int i = first; i < c->n_inputs; i++) {
        const tsr_value *b = c->inputs[i];
        if (!b)
            continue;
        if (b->dtype != c->inputs[0]->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "Clip bound %d is %s but the input is %s",
                                   i - first + 1, tsr_dtype_name(b->dtype),
                                   tsr_dtype_name(c->inputs[0]->dtype));
        int64_t n = tsr_shape_numel(b->rank, b->dims);
        if (n > 1 || n == 0)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "Clip bound %d must be a scalar, got %lld elements",
                                   i - first + 1, (long long)n);
    }
    return infer_same_float(c);
}

static tsr_status clip_infer(tsr_infer_ctx *c)
{
    return clip_bounds_infer(c, 1);
}

/* clang-format mangles _Pragma inside macros. */
// clang-format off
#define CLIP_LOOP(T)                                                                             \
    do {                                                                                         \
        const T *xs = k->inputs[0]->data;                                                        \
        T *ys = k->outputs[0]->data;                                                             \
        T l = (T)lo, h = (T)hi;                                                                  \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1)")                                  \
        for (int64_t i = 0; i < count; i++) {                                                    \
            T v = xs[i] < l ? l : xs[i];                                                         \
            ys[i] = v > h ? h : v;                                                               \
        }                                                                                        \
    } while (0)
// clang-format on

static tsr_status clip_ref(const tsr_kernel_ctx *k)
{
    double lo = -INFINITY, hi = INFINITY;
    if (k->n_inputs > 1 && k->inputs[1])
        lo = tsr_get_f(k->inputs[1], 0);
    if (k->n_inputs > 2 && k->inputs[2])
        hi = tsr_get_f(k->inputs[2], 0);
    int64_t count = tsr_tensor_numel(k->inputs[0]);
    int nt = count >= PARALLEL_MIN_ELEMENTS && k->threads > 1 ? k->threads : 1;
    /* Comparisons keep NaN inputs NaN; min > max gives max everywhere, as in ONNX. */
    if (k->inputs[0]->dtype == TSR_FLOAT32)
        CLIP_LOOP(float);
    else
        CLIP_LOOP(double);
    return TSR_OK;
}

const tsr_op_def tsr_op_Clip = {
    .name = "Clip",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = clip_infer,
    .ref = clip_ref,
    .flops = flops_per_element,
    .grad = Clip_grad,
};

/* ReluGrad(dY, Y) -> dX (domain ai.tessera): dY where Relu's output Y is
 * positive, else 0 (Relu'(0) = 0, and NaN passes nothing). Linear in dY
 * with a mask that is piecewise constant in Y, so its gradient is itself
 * along dY and none along Y. */
/* dX of a backward op (dY, F): dY's dtype and shape, which the forward
 * tensor F (named `f`) must share. */
static tsr_status pair_grad_infer(tsr_infer_ctx *c, const char *f)
{
    if (!c->inputs[0] || c->n_inputs < 2 || !c->inputs[1])
        return tsr_infer_error(c, TSR_ERR_SHAPE, "dY and %s are required", f);
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *dy = c->inputs[0], *y = c->inputs[1];
    bool same = dy->dtype == y->dtype && dy->rank == y->rank;
    for (int d = 0; same && d < y->rank; d++)
        same =
            dy->dims[d] == y->dims[d] || !tsr_dim_known(dy->dims[d]) || !tsr_dim_known(y->dims[d]);
    if (!same)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "dY must have %s's dtype and shape", f);
    tsr_infer_set(c, 0, dy->dtype, dy->rank, dy->dims);
    return TSR_OK;
}

static tsr_status relu_grad_infer(tsr_infer_ctx *c) { return pair_grad_infer(c, "Y"); }

/* The ref kernel NAME of a backward op (dY, F) -> dX, element by element:
 * dX = EXPR of dy and f, in double. */
// clang-format off
#define PAIR_GRAD_LOOP(T, EXPR)                                                                  \
    do {                                                                                         \
        const T *dys = k->inputs[0]->data, *fs = k->inputs[1]->data;                             \
        T *dxs = k->outputs[0]->data;                                                            \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1)")                                  \
        for (int64_t i = 0; i < count; i++) {                                                    \
            double dy = dys[i], f = fs[i];                                                       \
            dxs[i] = (T)(EXPR);                                                                  \
        }                                                                                        \
    } while (0)
#define PAIR_GRAD_REF(NAME, EXPR)                                                                \
    static tsr_status NAME(const tsr_kernel_ctx *k)                                              \
    {                                                                                            \
        int64_t count = tsr_tensor_numel(k->inputs[0]);                                          \
        int nt = count >= PARALLEL_MIN_ELEMENTS && k->threads > 1 ? k->threads : 1;              \
        if (k->inputs[0]->dtype == TSR_FLOAT32)                                                  \
            PAIR_GRAD_LOOP(float, EXPR);                                                         \
        else                                                                                     \
            PAIR_GRAD_LOOP(double, EXPR);                                                        \
        return TSR_OK;                                                                           \
    }
// clang-format on

PAIR_GRAD_REF(relu_grad_ref, f > 0 ? dy : 0.0)

static tsr_status relu_grad_grad(tsr_grad_ctx *c)
{
    const char *ins[2] = {tsr_grad_dy(c, 0), tsr_grad_input(c, 1)}, *g;
    if (!tsr_grad_wants(c, 0))
        return TSR_OK;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReluGrad, 2, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_ReluGrad = {
    .name = "ReluGrad",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = relu_grad_infer,
    .ref = relu_grad_ref,
    .flops = flops_per_element,
    .grad = relu_grad_grad,
};

/* SiluGrad(dY, X) -> dX (domain ai.tessera): dY s (1 + x (1 - s)) with
 * s = sigmoid(x), Silu's derivative. Linear in dY; along X its derivative
 * is dY Silu''(x) = dY s (1 - s) (2 + x (1 - 2s)), written with graph ops
 * so that it differentiates again. */
static tsr_status silu_grad_infer(tsr_infer_ctx *c) { return pair_grad_infer(c, "X"); }

static inline double silu_grad_fn(double dy, double x)
{
    double s = 1.0 / (1.0 + exp(-x));
    return dy * s * (1.0 + x * (1.0 - s));
}

PAIR_GRAD_REF(silu_grad_ref, silu_grad_fn(dy, f))

static tsr_status silu_grad_grad(tsr_grad_ctx *c)
{
    const char *g = tsr_grad_dy(c, 0), *dy = tsr_grad_input(c, 0), *x = tsr_grad_input(c, 1);
    if (tsr_grad_wants(c, 0)) {
        const char *ins[2] = {g, x}, *gdy;
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_SiluGrad, 2, ins, 0, NULL, 1, &gdy));
        TSR_CHECK(tsr_grad_contribute(c, 0, gdy));
    }
    if (!tsr_grad_wants(c, 1))
        return TSR_OK;
    const char *s, *one, *two, *one_minus, *ds, *twice, *one_minus2, *xt, *inner, *d2, *gd, *gx;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sigmoid, x, &s));
    TSR_CHECK(scalar(c, 1.0, &one));
    TSR_CHECK(scalar(c, 2.0, &two));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, one, s, &one_minus));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, s, one_minus, &ds));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, two, s, &twice));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, one, twice, &one_minus2));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, x, one_minus2, &xt));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, two, xt, &inner));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, ds, inner, &d2));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, g, dy, &gd));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, gd, d2, &gx));
    return tsr_grad_contribute(c, 1, gx);
}

const tsr_op_def tsr_op_SiluGrad = {
    .name = "SiluGrad",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = silu_grad_infer,
    .ref = silu_grad_ref,
    .flops = flops_per_element,
    .grad = silu_grad_grad,
};

/* ClipGrad(dY, X, min, max) -> dX (domain ai.tessera): dY where
 * min <= X <= max (a NaN X passes it, an omitted bound clips nothing),
 * else 0. Linear in dY with a mask piecewise constant in X and the
 * bounds, so its gradient is along dY only. */
static tsr_status clip_grad_infer(tsr_infer_ctx *c)
{
    if (!c->inputs[0] || c->n_inputs < 2 || !c->inputs[1])
        return tsr_infer_error(c, TSR_ERR_SHAPE, "dY and X are required");
    const tsr_value *dy = c->inputs[0], *x = c->inputs[1];
    bool same = dy->dtype == x->dtype && dy->rank == x->rank;
    for (int d = 0; same && d < x->rank; d++)
        same =
            dy->dims[d] == x->dims[d] || !tsr_dim_known(dy->dims[d]) || !tsr_dim_known(x->dims[d]);
    if (!same)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "dY must have X's dtype and shape");
    return clip_bounds_infer(c, 2);
}

// clang-format off
#define CLIP_GRAD_LOOP(T)                                                                        \
    do {                                                                                         \
        const T *dys = k->inputs[0]->data, *xs = k->inputs[1]->data;                             \
        T *dxs = k->outputs[0]->data;                                                            \
        T l = (T)lo, h = (T)hi;                                                                  \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1)")                                  \
        for (int64_t i = 0; i < count; i++)                                                      \
            dxs[i] = xs[i] < l || xs[i] > h ? 0 : dys[i];                                        \
    } while (0)
// clang-format on

static tsr_status clip_grad_ref(const tsr_kernel_ctx *k)
{
    double lo = -INFINITY, hi = INFINITY;
    if (k->n_inputs > 2 && k->inputs[2])
        lo = tsr_get_f(k->inputs[2], 0);
    if (k->n_inputs > 3 && k->inputs[3])
        hi = tsr_get_f(k->inputs[3], 0);
    int64_t count = tsr_tensor_numel(k->inputs[0]);
    int nt = count >= PARALLEL_MIN_ELEMENTS && k->threads > 1 ? k->threads : 1;
    if (k->inputs[0]->dtype == TSR_FLOAT32)
        CLIP_GRAD_LOOP(float);
    else
        CLIP_GRAD_LOOP(double);
    return TSR_OK;
}

static tsr_status clip_grad_grad(tsr_grad_ctx *c)
{
    if (!tsr_grad_wants(c, 0))
        return TSR_OK;
    const tsr_node *n = tsr_grad_node(c);
    const char *ins[4] = {tsr_grad_dy(c, 0), ""};
    for (int i = 1; i < n->n_inputs; i++)
        ins[i] = tsr_grad_input(c, i) ? tsr_grad_input(c, i) : "";
    const char *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ClipGrad, n->n_inputs, ins, 0, NULL, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_ClipGrad = {
    .name = "ClipGrad",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = clip_grad_infer,
    .ref = clip_grad_ref,
    .flops = flops_per_element,
    .grad = clip_grad_grad,
};

static tsr_status not_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_DTYPE_BIT(TSR_BOOL)));
    tsr_infer_set(c, 0, TSR_BOOL, c->inputs[0]->rank, c->inputs[0]->dims);
    return TSR_OK;
}

static tsr_status not_ref(const tsr_kernel_ctx *k)
{
    const uint8_t *x = k->inputs[0]->data;
    uint8_t *y = k->outputs[0]->data;
    int64_t count = tsr_tensor_numel(k->inputs[0]);
    for (int64_t i = 0; i < count; i++)
        y[i] = !x[i];
    return TSR_OK;
}

const tsr_op_def tsr_op_Not = {
    .name = "Not",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = not_infer,
    .ref = not_ref,
};

/* BitwiseNot (opset 18) on every integer dtype Tessera has. */
#define BITWISE_NOT_TYPES                                                                          \
    (TSR_DTYPE_BIT(TSR_INT64) | TSR_DTYPE_BIT(TSR_INT32) | TSR_DTYPE_BIT(TSR_INT8) |               \
     TSR_DTYPE_BIT(TSR_UINT8))

static tsr_status bitwise_not_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, BITWISE_NOT_TYPES));
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, x->dtype, x->rank, x->dims);
    return TSR_OK;
}

#define BITWISE_NOT_LOOP(T)                                                                        \
    for (int64_t i = 0; i < count; i++)                                                            \
        ((T *)y->data)[i] = (T) ~((const T *)x->data)[i];

static tsr_status bitwise_not_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int64_t count = tsr_tensor_numel(x);
    switch (x->dtype) {
    case TSR_INT64: BITWISE_NOT_LOOP(int64_t) break;
    case TSR_INT32: BITWISE_NOT_LOOP(int32_t) break;
    case TSR_INT8: BITWISE_NOT_LOOP(int8_t) break;
    case TSR_UINT8: BITWISE_NOT_LOOP(uint8_t) break;
    default:
        return tsr_error(TSR_ERR_DTYPE, "BitwiseNot has no kernel for %s",
                         tsr_dtype_name(x->dtype));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_BitwiseNot = {
    .name = "BitwiseNot",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = bitwise_not_infer,
    .ref = bitwise_not_ref,
};

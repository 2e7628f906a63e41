/* Element-wise unary math and activations. Each op is a scalar expression
 * evaluated in double precision, so float32 and float64 share one definition. */
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
#define UNARY_OP(NAME, ATTRS, EXPR)                                                              \
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
        .domain = "",                                                                            \
        .min_inputs = 1,                                                                         \
        .max_inputs = 1,                                                                         \
        .min_outputs = 1,                                                                        \
        .max_outputs = 1,                                                                        \
        .attrs = ATTRS,                                                                          \
        .locality = TSR_LOCALITY_ELEMENTWISE,                                                    \
        .infer = infer_same_float,                                                               \
        .ref = NAME##_ref,                                                                       \
        .flops = flops_per_element,                                                              \
    };
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
/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, no cancellation. */
UNARY_OP(Softplus, NULL, (x > 0 ? x : 0.0) + log1p(exp(-fabs(x))))

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
    };

SIGNED_OP(Abs, fabs(x), xs[i] < 0)
SIGNED_OP(Neg, -x, 1)

/* Clip's bounds are optional scalar inputs (opset 11 on; the attribute
 * form of older opsets is not imported). */
static tsr_status clip_infer(tsr_infer_ctx *c)
{
    for (int i = 1; i < c->n_inputs; i++) {
        const tsr_value *b = c->inputs[i];
        if (!b)
            continue;
        if (b->dtype != c->inputs[0]->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "Clip bound %d is %s but the input is %s", i,
                                   tsr_dtype_name(b->dtype), tsr_dtype_name(c->inputs[0]->dtype));
        int64_t n = tsr_shape_numel(b->rank, b->dims);
        if (n > 1 || n == 0)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "Clip bound %d must be a scalar, got %lld elements", i,
                                   (long long)n);
    }
    return infer_same_float(c);
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

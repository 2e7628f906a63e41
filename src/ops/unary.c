/* Element-wise unary math and activations. Each op is a scalar function
 * applied in double precision, so float32 and float64 share one loop. */
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

/* p holds the op's float attributes in schema order. */
typedef double (*scalar_fn)(double x, const double *p);

static tsr_status apply(const tsr_kernel_ctx *k, scalar_fn fn)
{
    double p[4] = {0};
    int np = 0;
    for (const tsr_attr_def *d = k->node->op->attrs; d && d->name && np < 4; d++)
        if (d->type == TSR_ATTR_FLOAT)
            p[np++] = tsr_attr_float(k->node, d->name);
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int64_t count = tsr_tensor_numel(x);
    if (x->dtype == TSR_FLOAT32) {
        const float *xs = x->data;
        float *ys = y->data;
        for (int64_t i = 0; i < count; i++)
            ys[i] = (float)fn(xs[i], p);
    } else {
        const double *xs = x->data;
        double *ys = y->data;
        for (int64_t i = 0; i < count; i++)
            ys[i] = fn(xs[i], p);
    }
    return TSR_OK;
}

#define UNARY_OP(NAME, ATTRS, EXPR)                                                              \
    static double NAME##_fn(double x, const double *p)                                           \
    {                                                                                            \
        (void)p;                                                                                 \
        return (EXPR);                                                                           \
    }                                                                                            \
    static tsr_status NAME##_ref(const tsr_kernel_ctx *k) { return apply(k, NAME##_fn); }      \
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

static const tsr_attr_def leaky_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 0.01}, {NULL}};
static const tsr_attr_def elu_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 1.0}, {NULL}};
static const tsr_attr_def selu_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 1.67326319217681884765625},
                                          {"gamma", TSR_ATTR_FLOAT, .f = 1.05070102214813232421875},
                                          {NULL}};
static const tsr_attr_def hardsigmoid_attrs[] = {{"alpha", TSR_ATTR_FLOAT, .f = 0.2},
                                                 {"beta", TSR_ATTR_FLOAT, .f = 0.5},
                                                 {NULL}};

static double hard_sigmoid(double x, double alpha, double beta)
{
    return fmax(0.0, fmin(1.0, alpha * x + beta));
}

UNARY_OP(Abs, NULL, fabs(x))
UNARY_OP(Neg, NULL, -x)
UNARY_OP(Relu, NULL, x > 0 ? x : 0.0)
UNARY_OP(LeakyRelu, leaky_attrs, x >= 0 ? x : p[0] * x)
UNARY_OP(Elu, elu_attrs, x >= 0 ? x : p[0] * expm1(x))
UNARY_OP(Selu, selu_attrs,
         p[1] * (x > 0 ? x : p[0] * expm1(x)))
UNARY_OP(Sigmoid, NULL, 1.0 / (1.0 + exp(-x)))
UNARY_OP(HardSigmoid, hardsigmoid_attrs,
         hard_sigmoid(x, p[0], p[1]))
UNARY_OP(HardSwish, NULL, x *hard_sigmoid(x, 1.0 / 6.0, 0.5))
UNARY_OP(Tanh, NULL, tanh(x))
UNARY_OP(Erf, NULL, erf(x))
UNARY_OP(Exp, NULL, exp(x))
UNARY_OP(Log, NULL, log(x))
UNARY_OP(Sqrt, NULL, sqrt(x))
UNARY_OP(Reciprocal, NULL, 1.0 / x)
UNARY_OP(Floor, NULL, floor(x))
UNARY_OP(Ceil, NULL, ceil(x))
UNARY_OP(Softplus, NULL, x > 30 ? x : log1p(exp(x)))

/* Clip takes its bounds as optional inputs from opset 11 on, as
 * attributes before. */
static const tsr_attr_def clip_attrs[] = {{"min", TSR_ATTR_FLOAT, .f = -INFINITY},
                                          {"max", TSR_ATTR_FLOAT, .f = INFINITY},
                                          {NULL}};

static tsr_status clip_infer(tsr_infer_ctx *c)
{
    for (int i = 1; i < c->n_inputs; i++) {
        const tsr_value *b = c->inputs[i];
        if (b && (b->dtype != c->inputs[0]->dtype || tsr_shape_numel(b->rank, b->dims) > 1))
            return tsr_infer_error(c, TSR_ERR_SHAPE, "Clip bound %d must be a scalar of the input's dtype", i);
    }
    return infer_same_float(c);
}

static tsr_status clip_ref(const tsr_kernel_ctx *k)
{
    double lo = tsr_attr_float(k->node, "min"), hi = tsr_attr_float(k->node, "max");
    if (k->n_inputs > 1 && k->inputs[1] && tsr_tensor_numel(k->inputs[1]) == 1)
        lo = tsr_get_f(k->inputs[1], 0);
    if (k->n_inputs > 2 && k->inputs[2] && tsr_tensor_numel(k->inputs[2]) == 1)
        hi = tsr_get_f(k->inputs[2], 0);
    const tsr_tensor *x = k->inputs[0];
    int64_t count = tsr_tensor_numel(x);
    for (int64_t i = 0; i < count; i++)
        tsr_set_f(k->outputs[0], i, fmin(fmax(tsr_get_f(x, i), lo), hi));
    return TSR_OK;
}

const tsr_op_def tsr_op_Clip = {
    .name = "Clip",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = clip_attrs,
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

/* Ops the optimization passes produce (domain ai.tessera). They exist so
 * that a backend can run a chain of ops as one kernel call; their
 * reference kernels compose the reference kernels of the ops they replace,
 * so the ref backend runs optimized graphs and stays their oracle.
 *
 * FusedConv: Y = act(Conv(X, W, B) + Z), with Z an optional tensor of Y's
 * shape (a residual connection, oneDNN's "sum" post-op) and act one of the
 * activations below, "" for none. */
#include "ops/conv.h"

#include <math.h>
#include <string.h>

static const tsr_attr_def fused_conv_attrs[] = {{"auto_pad", TSR_ATTR_STRING, .s = "NOTSET"},
                                                {"dilations", TSR_ATTR_INTS},
                                                {"group", TSR_ATTR_INT, .i = 1},
                                                {"kernel_shape", TSR_ATTR_INTS},
                                                {"pads", TSR_ATTR_INTS},
                                                {"strides", TSR_ATTR_INTS},
                                                {"activation", TSR_ATTR_STRING, .s = ""},
                                                {"activation_alpha", TSR_ATTR_FLOAT},
                                                {"activation_beta", TSR_ATTR_FLOAT},
                                                {NULL}};

typedef enum {
    ACT_NONE,
    ACT_RELU,
    ACT_LEAKY_RELU,
    ACT_CLIP,
    ACT_SIGMOID,
    ACT_HARD_SIGMOID,
    ACT_HARD_SWISH,
    ACT_TANH,
    ACT_SILU
} fused_act;

/* Each activation's name and the ONNX defaults of its parameters, used
 * when activation_alpha or activation_beta is absent. */
static const struct {
    const char *name;
    fused_act act;
    double alpha, beta;
} fused_acts[] = {{"", ACT_NONE, 0.0, 0.0},
                  {"Relu", ACT_RELU, 0.0, 0.0},
                  {"LeakyRelu", ACT_LEAKY_RELU, 0.01, 0.0},
                  {"Clip", ACT_CLIP, -INFINITY, INFINITY},
                  {"Sigmoid", ACT_SIGMOID, 0.0, 0.0},
                  {"HardSigmoid", ACT_HARD_SIGMOID, 0.2, 0.5},
                  {"HardSwish", ACT_HARD_SWISH, 0.0, 0.0},
                  {"Tanh", ACT_TANH, 0.0, 0.0},
                  {"Silu", ACT_SILU, 0.0, 0.0}};

typedef struct {
    fused_act act;
    double alpha, beta;
} fused_act_params;

static tsr_status fused_act_read(const tsr_node *node, fused_act_params *p)
{
    const char *name = tsr_attr_string(node, "activation");
    for (size_t i = 0; i < sizeof fused_acts / sizeof fused_acts[0]; i++) {
        if (strcmp(fused_acts[i].name, name) != 0)
            continue;
        p->act = fused_acts[i].act;
        p->alpha = tsr_attr_has(node, "activation_alpha") ? tsr_attr_float(node, "activation_alpha")
                                                          : fused_acts[i].alpha;
        p->beta = tsr_attr_has(node, "activation_beta") ? tsr_attr_float(node, "activation_beta")
                                                        : fused_acts[i].beta;
        return TSR_OK;
    }
    return tsr_error(TSR_ERR_UNSUPPORTED,
                     "activation '%s' is not supported (\"\", Relu, LeakyRelu, Clip, Sigmoid, "
                     "HardSigmoid, HardSwish, Tanh and Silu are)",
                     name);
}

static tsr_status fused_conv_infer(tsr_infer_ctx *c)
{
    fused_act_params act;
    TSR_CHECK(fused_act_read(c->node, &act));
    TSR_CHECK(tsr_conv_infer(c));
    const tsr_value *z = c->n_inputs > 3 ? c->inputs[3] : NULL;
    tsr_value *y = c->outputs[0];
    if (!z)
        return TSR_OK;
    if (z->dtype != y->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "Z is %s but the convolution's output is %s",
                               tsr_dtype_name(z->dtype), tsr_dtype_name(y->dtype));
    if (z->rank < 0 || y->rank < 0)
        return TSR_OK;
    char zs[256], ys[256];
    tsr_shape_format(zs, sizeof zs, z->rank, z->dims);
    tsr_shape_format(ys, sizeof ys, y->rank, y->dims);
    if (z->rank != y->rank)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "Z has shape %s but the convolution's output has shape %s "
                               "(Z does not broadcast)",
                               zs, ys);
    for (int d = 0; d < y->rank; d++) {
        if (tsr_dim_known(z->dims[d]) && tsr_dim_known(y->dims[d]) && z->dims[d] != y->dims[d])
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "Z has shape %s but the convolution's output has shape %s", zs,
                                   ys);
        /* Both must be equal at run time, so Z can tell what Y leaves open. */
        if (y->dims[d] == TSR_DIM_UNKNOWN)
            y->dims[d] = z->dims[d];
    }
    return TSR_OK;
}

static double fused_conv_flops(const tsr_infer_ctx *c)
{
    const tsr_value *y = c->outputs[0];
    int64_t elements = tsr_shape_numel(y->rank, y->dims);
    fused_act_params act;
    if (elements < 0 || fused_act_read(c->node, &act) != TSR_OK)
        return tsr_conv_flops(c);
    int per_element = (c->n_inputs > 3 && c->inputs[3]) + (act.act != ACT_NONE);
    return tsr_conv_flops(c) + (double)per_element * (double)elements;
}

/* Comparisons rather than fmin/fmax, so that NaN propagates as in the
 * unfused activations (unary.c). */
static inline double hard_sigmoid(double x, double alpha, double beta)
{
    double v = alpha * x + beta;
    return v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
}

/* Applies the activation to y in place, in double as unary.c does, so a
 * fused float32 result rounds exactly like the unfused chain. */
// clang-format off
#define ACT_LOOP(T, EXPR)                                                                        \
    do {                                                                                         \
        _Pragma("omp parallel for num_threads(k->threads) if (k->threads > 1 && count > 32768)") \
        for (int64_t i = 0; i < count; i++) {                                                    \
            double x = (double)y[i];                                                             \
            y[i] = (T)(EXPR);                                                                    \
        }                                                                                        \
    } while (0)

#define FUSED_EPILOGUE(T)                                                                          \
    static void fused_epilogue_##T(const tsr_kernel_ctx *k, const fused_act_params *p, T *y,       \
                                   const T *z, int64_t count)                                      \
    {                                                                                              \
        double a = p->alpha, b = p->beta;                                                          \
        if (z)                                                                                     \
            for (int64_t i = 0; i < count; i++)                                                    \
                y[i] += z[i];                                                                      \
        switch (p->act) {                                                                          \
        case ACT_NONE: break;                                                                      \
        case ACT_RELU: ACT_LOOP(T, x < 0 ? 0.0 : x); break;                                        \
        case ACT_LEAKY_RELU: ACT_LOOP(T, x >= 0 ? x : a * x); break;                               \
        case ACT_CLIP: ACT_LOOP(T, x < a ? a : (x > b ? b : x)); break;                            \
        case ACT_SIGMOID: ACT_LOOP(T, 1.0 / (1.0 + exp(-x))); break;                               \
        case ACT_HARD_SIGMOID: ACT_LOOP(T, hard_sigmoid(x, a, b)); break;                          \
        case ACT_HARD_SWISH: ACT_LOOP(T, x * hard_sigmoid(x, 1.0 / 6.0, 0.5)); break;              \
        case ACT_TANH: ACT_LOOP(T, tanh(x)); break;                                                \
        case ACT_SILU: ACT_LOOP(T, x / (1.0 + exp(-x))); break;                                    \
        }                                                                                          \
    }

// clang-format on

FUSED_EPILOGUE(float)
FUSED_EPILOGUE(double)

static tsr_status fused_conv_ref(const tsr_kernel_ctx *k)
{
    fused_act_params act;
    TSR_CHECK(fused_act_read(k->node, &act));
    TSR_CHECK(tsr_conv_ref(k));
    tsr_tensor *y = k->outputs[0];
    const tsr_tensor *z = k->n_inputs > 3 ? k->inputs[3] : NULL;
    int64_t count = tsr_tensor_numel(y);
    if (y->dtype == TSR_FLOAT64)
        fused_epilogue_double(k, &act, y->data, z ? z->data : NULL, count);
    else
        fused_epilogue_float(k, &act, y->data, z ? z->data : NULL, count);
    return TSR_OK;
}

const tsr_op_def tsr_op_FusedConv = {
    .name = "FusedConv",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = fused_conv_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = fused_conv_infer,
    .ref = fused_conv_ref,
    .flops = fused_conv_flops,
};

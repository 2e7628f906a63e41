/* Constants (Constant, ConstantOfShape), element type conversion (Cast, CastLike)
 * and the index generator Range. All of them work on every dtype Tessera
 * has; the ONNX types it lacks (float16, strings, ...) are refused by name. */
#include "autodiff/autodiff.h"
#include "ops/movement.h"

#include <math.h>
#include <string.h>

static const char *onnx_type_name(int64_t code)
{
    static const char *const names[] = {
        "undefined",      "float32",    "uint8",          "int8",       "uint16",   "int16",
        "int32",          "int64",      "string",         "bool",       "float16",  "float64",
        "uint32",         "uint64",     "complex64",      "complex128", "bfloat16", "float8e4m3fn",
        "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "uint4",      "int4",     "float4e2m1"};
    return code >= 0 && code < (int64_t)(sizeof names / sizeof names[0]) ? names[code]
                                                                         : "an unknown type";
}

static bool is_tessera_dtype(int64_t code)
{
    return code > 0 && code < 32 && tsr_dtype_size((tsr_dtype)code) != 0;
}

/* ------------------------------------------------------------- Constant */

/* sparse_value and value_strings have no attribute type here, so the
 * builder refuses them as unknown attributes; value_string is declared so
 * that it gets a message of its own. */
static const tsr_attr_def constant_attrs[] = {{"value", TSR_ATTR_TENSOR},
                                              {"value_float", TSR_ATTR_FLOAT},
                                              {"value_floats", TSR_ATTR_FLOATS},
                                              {"value_int", TSR_ATTR_INT},
                                              {"value_ints", TSR_ATTR_INTS},
                                              {"value_string", TSR_ATTR_STRING},
                                              {NULL}};

static tsr_status constant_infer(tsr_infer_ctx *c)
{
    const tsr_node *n = c->node;
    int given = 0;
    for (const tsr_attr_def *d = constant_attrs; d->name; d++)
        given += tsr_attr_has(n, d->name);
    if (given != 1)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "Constant needs exactly one of value, value_float, value_floats, "
                               "value_int, value_ints; it has %d",
                               given);
    if (tsr_attr_has(n, "value_string"))
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "string constants are not supported");
    size_t count;
    int64_t len;
    if (tsr_attr_has(n, "value")) {
        const tsr_tensor *t = tsr_attr_tensor(n, "value");
        tsr_infer_set(c, 0, t->dtype, t->rank, t->dims);
    } else if (tsr_attr_has(n, "value_float")) {
        tsr_infer_set(c, 0, TSR_FLOAT32, 0, NULL);
    } else if (tsr_attr_has(n, "value_int")) {
        tsr_infer_set(c, 0, TSR_INT64, 0, NULL);
    } else if (tsr_attr_floats(n, "value_floats", &count)) {
        len = (int64_t)count;
        tsr_infer_set(c, 0, TSR_FLOAT32, 1, &len);
    } else {
        tsr_attr_ints(n, "value_ints", &count);
        len = (int64_t)count;
        tsr_infer_set(c, 0, TSR_INT64, 1, &len);
    }
    return TSR_OK;
}

static tsr_status constant_ref(const tsr_kernel_ctx *k)
{
    const tsr_node *n = k->node;
    tsr_tensor *y = k->outputs[0];
    size_t count;
    if (tsr_attr_has(n, "value")) {
        const tsr_tensor *t = tsr_attr_tensor(n, "value");
        if (tsr_tensor_bytes(t))
            memcpy(y->data, t->data, tsr_tensor_bytes(t));
    } else if (tsr_attr_has(n, "value_float")) {
        *(float *)y->data = (float)tsr_attr_float(n, "value_float");
    } else if (tsr_attr_has(n, "value_int")) {
        *(int64_t *)y->data = tsr_attr_int(n, "value_int");
    } else if (tsr_attr_has(n, "value_floats")) {
        const double *f = tsr_attr_floats(n, "value_floats", &count);
        for (size_t i = 0; i < count; i++)
            ((float *)y->data)[i] = (float)f[i];
    } else {
        const int64_t *v = tsr_attr_ints(n, "value_ints", &count);
        if (count)
            memcpy(y->data, v, count * sizeof *v);
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_Constant = {
    .name = "Constant",
    .domain = "",
    .min_inputs = 0,
    .max_inputs = 0,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = constant_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = constant_infer,
    .ref = constant_ref,
};

/* ------------------------------------------------------ ConstantOfShape */

/* Without `value` the output is float32 zeros. */
static const tsr_attr_def constant_of_shape_attrs[] = {{"value", TSR_ATTR_TENSOR}, {NULL}};

static tsr_status constant_of_shape_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    const tsr_tensor *value = tsr_attr_tensor(c->node, "value");
    if (value && tsr_tensor_numel(value) != 1)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "value must hold one element, it holds %lld",
                               (long long)tsr_tensor_numel(value));
    int64_t shape[TSR_MAX_RANK];
    int n;
    bool known;
    TSR_CHECK(tsr_infer_int_input(c, 0, "shape", shape, TSR_MAX_RANK, &n, &known));
    if (n < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "the length of the shape input is not known, so neither is the "
                               "output's rank");
    for (int i = 0; i < n; i++) {
        if (known && shape[i] < 0) {
            char buf[256];
            tsr_format_ints(buf, sizeof buf, shape, n);
            return tsr_infer_error(c, TSR_ERR_SHAPE, "shape %s holds a negative size", buf);
        }
        if (!known)
            shape[i] = TSR_DIM_UNKNOWN;
    }
    tsr_infer_set(c, 0, value ? value->dtype : TSR_FLOAT32, n, shape);
    return TSR_OK;
}

static tsr_status constant_of_shape_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *value = tsr_attr_tensor(k->node, "value");
    tsr_tensor *y = k->outputs[0];
    size_t es = tsr_dtype_size(y->dtype);
    int64_t count = tsr_tensor_numel(y);
    if (!value) {
        memset(y->data, 0, (size_t)count * es);
        return TSR_OK;
    }
    for (int64_t i = 0; i < count; i++)
        memcpy((char *)y->data + (size_t)i * es, value->data, es);
    return TSR_OK;
}

const tsr_op_def tsr_op_ConstantOfShape = {
    .name = "ConstantOfShape",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = constant_of_shape_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = constant_of_shape_infer,
    .ref = constant_of_shape_ref,
};

/* ----------------------------------------------------------------- Cast */

/* saturate (opset 19 on) only concerns casts to float8 types, which
 * Tessera does not have: for every other target it changes nothing. */
static const tsr_attr_def cast_attrs[] = {
    {"saturate", TSR_ATTR_INT, .i = 1}, {"to", TSR_ATTR_INT, .required = true}, {NULL}};

static tsr_status check_saturate(const tsr_infer_ctx *c)
{
    if (tsr_attr_has(c->node, "saturate") && c->node->opset < 19)
        return tsr_infer_error(c, TSR_ERR_PARSE, "%s takes saturate from opset 19 on, not at %d",
                               c->node->op->name, c->node->opset);
    int64_t saturate = tsr_attr_int(c->node, "saturate");
    if (saturate != 0 && saturate != 1)
        return tsr_infer_error(c, TSR_ERR_INVALID_ARGUMENT, "saturate is %lld, must be 0 or 1",
                               (long long)saturate);
    return TSR_OK;
}

static tsr_status cast_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(check_saturate(c));
    int64_t to = tsr_attr_int(c->node, "to");
    if (!is_tessera_dtype(to))
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "Cast to %s (ONNX type %lld) is not supported; Tessera has float32, "
                               "float64, int64, int32, uint8, int8 and bool",
                               onnx_type_name(to), (long long)to);
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, (tsr_dtype)to, x->rank, x->dims);
    return TSR_OK;
}

/* Conversion runs in blocks through a double (from floats) or int64 (from
 * integers and bool) buffer, so each side needs one loop per dtype. */
#define CAST_BLOCK 1024

static void load_doubles(const tsr_tensor *x, int64_t at, int n, double *buf)
{
    if (x->dtype == TSR_FLOAT32)
        for (int i = 0; i < n; i++)
            buf[i] = ((const float *)x->data)[at + i];
    else
        memcpy(buf, (const double *)x->data + at, (size_t)n * sizeof *buf);
}

static void load_ints(const tsr_tensor *x, int64_t at, int n, int64_t *buf)
{
    for (int i = 0; i < n; i++) {
        int64_t j = at + i;
        switch (x->dtype) {
        case TSR_INT64: buf[i] = ((const int64_t *)x->data)[j]; break;
        case TSR_INT32: buf[i] = ((const int32_t *)x->data)[j]; break;
        case TSR_INT8: buf[i] = ((const int8_t *)x->data)[j]; break;
        case TSR_UINT8: buf[i] = ((const uint8_t *)x->data)[j]; break;
        default: buf[i] = ((const uint8_t *)x->data)[j] != 0; break; /* bool */
        }
    }
}

/* Integers of a narrower type keep their low bits, as numpy and PyTorch
 * do; the unsigned step keeps the conversion defined. */
static void store_ints(tsr_tensor *y, int64_t at, int n, const int64_t *buf)
{
    for (int i = 0; i < n; i++) {
        int64_t j = at + i, v = buf[i];
        switch (y->dtype) {
        case TSR_FLOAT32: ((float *)y->data)[j] = (float)v; break;
        case TSR_FLOAT64: ((double *)y->data)[j] = (double)v; break;
        case TSR_INT64: ((int64_t *)y->data)[j] = v; break;
        case TSR_INT32: ((int32_t *)y->data)[j] = (int32_t)(uint32_t)(uint64_t)v; break;
        case TSR_INT8: ((int8_t *)y->data)[j] = (int8_t)(uint8_t)(uint64_t)v; break;
        case TSR_UINT8: ((uint8_t *)y->data)[j] = (uint8_t)(uint64_t)v; break;
        default: ((uint8_t *)y->data)[j] = v != 0; break; /* bool */
        }
    }
}

/* Floats become integers by truncation toward zero, as ONNX specifies.
 * Values outside int64 saturate and NaN becomes 0, where C would leave the
 * result undefined. */
static int64_t truncate_to_int(double v)
{
    if (isnan(v))
        return 0;
    if (v >= 9223372036854775807.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}

static void store_doubles(tsr_tensor *y, int64_t at, int n, const double *buf)
{
    if (y->dtype == TSR_FLOAT32) {
        for (int i = 0; i < n; i++)
            ((float *)y->data)[at + i] = (float)buf[i];
    } else if (y->dtype == TSR_FLOAT64) {
        memcpy((double *)y->data + at, buf, (size_t)n * sizeof *buf);
    } else if (y->dtype == TSR_BOOL) {
        for (int i = 0; i < n; i++)
            ((uint8_t *)y->data)[at + i] = buf[i] != 0;
    } else {
        int64_t ints[CAST_BLOCK];
        for (int i = 0; i < n; i++)
            ints[i] = truncate_to_int(buf[i]);
        store_ints(y, at, n, ints);
    }
}

static tsr_status cast_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int64_t count = tsr_tensor_numel(x);
    if (x->dtype == y->dtype) {
        if (count)
            memcpy(y->data, x->data, tsr_tensor_bytes(x));
        return TSR_OK;
    }
    int64_t blocks = (count + CAST_BLOCK - 1) / CAST_BLOCK;
    int nt = k->threads > 1 && count >= (1 << 16) ? k->threads : 1;
#pragma omp parallel for num_threads(nt) if (nt > 1)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t at = b * CAST_BLOCK;
        int n = (int)(count - at < CAST_BLOCK ? count - at : CAST_BLOCK);
        if (tsr_dtype_is_float(x->dtype)) {
            double buf[CAST_BLOCK];
            load_doubles(x, at, n, buf);
            store_doubles(y, at, n, buf);
        } else {
            int64_t buf[CAST_BLOCK];
            load_ints(x, at, n, buf);
            store_ints(y, at, n, buf);
        }
    }
    return TSR_OK;
}

/* Between float types the gradient is cast back; other casts carry none. */
static tsr_status cast_grad(tsr_grad_ctx *c)
{
    const tsr_value x_copy = *tsr_grad_value(c, tsr_grad_input(c, 0)), *x = &x_copy;
    if (!tsr_dtype_is_float(tsr_grad_value(c, tsr_grad_output(c, 0))->dtype))
        return TSR_OK;
    const char *dy = tsr_grad_dy(c, 0), *g;
    tsr_attr to = TSR_ATTR_I("to", x->dtype);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &dy, 1, &to, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_Cast = {
    .name = "Cast",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = cast_attrs,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = cast_infer,
    .ref = cast_ref,
    .grad = cast_grad,
};

/* CastLike (opset 15, saturate from 19): Cast to the dtype of its second
 * input, whose values are not read. */
static const tsr_attr_def castlike_attrs[] = {{"saturate", TSR_ATTR_INT, .i = 1}, {NULL}};

static tsr_status castlike_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(check_saturate(c));
    const tsr_value *x = c->inputs[0];
    tsr_infer_set(c, 0, c->inputs[1]->dtype, x->rank, x->dims);
    return TSR_OK;
}

const tsr_op_def tsr_op_CastLike = {
    .name = "CastLike",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = castlike_attrs,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = castlike_infer,
    .ref = cast_ref,
    .grad = cast_grad,
};

/* ---------------------------------------------------------------- Range */

#define RANGE_TYPES (TSR_FLOAT_TYPES | TSR_DTYPE_BIT(TSR_INT32) | TSR_DTYPE_BIT(TSR_INT64))

static double scalar_f(const tsr_tensor *t)
{
    switch (t->dtype) {
    case TSR_INT64: return (double)*(const int64_t *)t->data;
    case TSR_INT32: return *(const int32_t *)t->data;
    default: return tsr_get_f(t, 0);
    }
}

static int64_t scalar_i(const tsr_tensor *t)
{
    return t->dtype == TSR_INT64 ? *(const int64_t *)t->data : *(const int32_t *)t->data;
}

/* ceil((limit - start) / delta), at least 0, without overflow for
 * integers. */
static tsr_status range_count(const tsr_tensor *start, const tsr_tensor *limit,
                              const tsr_tensor *delta, int64_t *n)
{
    if (tsr_dtype_is_float(start->dtype)) {
        double s = scalar_f(start), l = scalar_f(limit), d = scalar_f(delta);
        if (d == 0 || !isfinite(s) || !isfinite(l) || !isfinite(d))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "Range(%g, %g, %g) needs finite bounds and a non-zero delta", s, l, d);
        double c = ceil((l - s) / d);
        if (c > 9.0e18)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "Range(%g, %g, %g) is too long", s, l, d);
        *n = c > 0 ? (int64_t)c : 0;
        return TSR_OK;
    }
    int64_t s = scalar_i(start), l = scalar_i(limit), d = scalar_i(delta);
    if (d == 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "Range(%lld, %lld, 0) has a zero delta",
                         (long long)s, (long long)l);
    uint64_t span, step;
    if (d > 0 && l > s) {
        span = (uint64_t)l - (uint64_t)s;
        step = (uint64_t)d;
    } else if (d < 0 && l < s) {
        span = (uint64_t)s - (uint64_t)l;
        step = (uint64_t)0 - (uint64_t)d;
    } else {
        *n = 0;
        return TSR_OK;
    }
    uint64_t count = (span - 1) / step + 1;
    if (count > (uint64_t)INT64_MAX)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "Range(%lld, %lld, %lld) is too long",
                         (long long)s, (long long)l, (long long)d);
    *n = (int64_t)count;
    return TSR_OK;
}

static tsr_status range_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    static const char *const names[3] = {"start", "limit", "delta"};
    const tsr_value *s = c->inputs[0];
    bool all_known = true;
    for (int i = 0; i < 3; i++) {
        const tsr_value *v = c->inputs[i];
        TSR_CHECK(tsr_infer_require_dtype(c, i, RANGE_TYPES));
        if (v->dtype != s->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "%s is %s but start is %s", names[i],
                                   tsr_dtype_name(v->dtype), tsr_dtype_name(s->dtype));
        int64_t numel = tsr_shape_numel(v->rank, v->dims);
        if (v->rank > 1 || (numel >= 0 && numel != 1))
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s must be a scalar", names[i]);
        all_known &= v->data != NULL;
    }
    int64_t n = TSR_DIM_UNKNOWN;
    if (all_known) {
        tsr_tensor t[3];
        for (int i = 0; i < 3; i++)
            t[i] = tsr_value_tensor(c->inputs[i]);
        TSR_CHECK(range_count(&t[0], &t[1], &t[2], &n));
    }
    tsr_infer_set(c, 0, s->dtype, 1, &n);
    return TSR_OK;
}

static tsr_status range_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *start = k->inputs[0], *delta = k->inputs[2];
    tsr_tensor *y = k->outputs[0];
    int64_t n = 0;
    TSR_CHECK(range_count(start, k->inputs[1], delta, &n));
    if (n != y->dims[0])
        return tsr_error(TSR_ERR_SHAPE, "Range yields %lld elements, the output holds %lld",
                         (long long)n, (long long)y->dims[0]);
    if (tsr_dtype_is_float(y->dtype)) {
        double s = scalar_f(start), d = scalar_f(delta);
        for (int64_t i = 0; i < n; i++)
            tsr_set_f(y, i, s + (double)i * d);
    } else {
        /* Unsigned arithmetic: every element lies between start and limit,
         * but intermediate products may not fit a signed type. */
        uint64_t s = (uint64_t)scalar_i(start), d = (uint64_t)scalar_i(delta);
        for (int64_t i = 0; i < n; i++) {
            uint64_t v = s + (uint64_t)i * d;
            if (y->dtype == TSR_INT64)
                ((int64_t *)y->data)[i] = (int64_t)v;
            else
                ((int32_t *)y->data)[i] = (int32_t)(uint32_t)v;
        }
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_Range = {
    .name = "Range",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = range_infer,
    .ref = range_ref,
};

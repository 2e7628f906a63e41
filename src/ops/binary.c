/* Broadcasting element-wise ops with two or more inputs: arithmetic,
 * comparisons, the logical And/Or/Xor, the bitwise BitwiseAnd/Or/Xor,
 * Where, Mod, Pow and the variadic Max/Min/Sum.
 *
 * Every kernel goes through one broadcast iterator: operand strides are
 * zero along broadcast dims, dims of size 1 are dropped and neighbouring
 * dims that every operand walks contiguously (or all skip) are merged, so
 * that same-shape, scalar and per-channel cases end up as a long innermost
 * loop whose input strides are 0 or 1. The outer dims advance with an
 * odometer; no per-element index arithmetic. */
#include "autodiff/autodiff.h"
#include "ops/op.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define MAX_OPERANDS 4 /* Where: output, cond, X, Y */
#define DTYPE_SLOTS 16 /* loop tables are indexed by dtype code */
/* Innermost rows are cut into blocks of this many elements so that a few
 * long rows still spread over threads. */
#define BLOCK_ELEMENTS 8192
#define PARALLEL_MIN_ELEMENTS 32768

/* One innermost row: p[0] is the output (stride 1), p[1..] the inputs,
 * whose element strides s[1..] are each 0 or 1. */
typedef void (*loop_fn)(int64_t n, char *const *p, const int64_t *s);

typedef struct {
    int n_ops; /* output first, then the inputs */
    int rank;  /* outer dims, fastest first */
    int64_t dims[TSR_MAX_RANK];
    int64_t byte_strides[MAX_OPERANDS][TSR_MAX_RANK];
    int64_t inner;
    int64_t inner_strides[MAX_OPERANDS]; /* elements: 0 or 1 */
    size_t elem_size[MAX_OPERANDS];
    char *base[MAX_OPERANDS];
} bcast_iter;

static tsr_status iter_init(bcast_iter *it, tsr_tensor *out, int n_in, const tsr_tensor *const *in)
{
    const tsr_tensor *ops[MAX_OPERANDS] = {out};
    int r = out->rank;
    int64_t strides[MAX_OPERANDS][TSR_MAX_RANK];
    it->n_ops = n_in + 1;
    for (int k = 0; k < n_in; k++)
        ops[k + 1] = in[k];
    for (int k = 0; k < it->n_ops; k++) {
        const tsr_tensor *t = ops[k];
        if (t->rank > r)
            return tsr_error(TSR_ERR_SHAPE, "input of rank %d does not broadcast to rank %d",
                             t->rank, r);
        int64_t acc = 1;
        for (int i = r - 1; i >= 0; i--) {
            int ti = i - (r - t->rank);
            int64_t d = ti >= 0 ? t->dims[ti] : 1;
            if (d != out->dims[i] && d != 1)
                return tsr_error(TSR_ERR_SHAPE, "input dim %d (%lld) does not broadcast to %lld",
                                 ti, (long long)d, (long long)out->dims[i]);
            strides[k][i] = d == 1 ? 0 : acc;
            acc *= d;
        }
        it->elem_size[k] = tsr_dtype_size(t->dtype);
        it->base[k] = t->data;
    }
    /* Collapse, innermost first: m dims in cd/cs. */
    int m = 0;
    int64_t cd[TSR_MAX_RANK], cs[MAX_OPERANDS][TSR_MAX_RANK];
    for (int i = r - 1; i >= 0; i--) {
        int64_t d = out->dims[i];
        if (d == 1)
            continue;
        bool merge = m > 0;
        for (int k = 0; k < it->n_ops && merge; k++)
            merge = strides[k][i] == cs[k][m - 1] * cd[m - 1];
        if (merge) {
            cd[m - 1] *= d;
            continue;
        }
        cd[m] = d;
        for (int k = 0; k < it->n_ops; k++)
            cs[k][m] = strides[k][i];
        m++;
    }
    if (m == 0) {
        cd[0] = 1;
        for (int k = 0; k < it->n_ops; k++)
            cs[k][0] = 0;
        m = 1;
    }
    it->inner = cd[0];
    for (int k = 0; k < it->n_ops; k++)
        it->inner_strides[k] = cs[k][0];
    it->inner_strides[0] = 1;
    it->rank = m - 1;
    for (int j = 0; j < it->rank; j++) {
        it->dims[j] = cd[j + 1];
        for (int k = 0; k < it->n_ops; k++)
            it->byte_strides[k][j] = cs[k][j + 1] * (int64_t)it->elem_size[k];
    }
    return TSR_OK;
}

/* Runs work items [w0, w1), item w being block w % n_blocks of row w / n_blocks. */
static void iter_range(const bcast_iter *it, loop_fn fn, int64_t w0, int64_t w1, int64_t n_blocks)
{
    int64_t idx[TSR_MAX_RANK];
    char *p[MAX_OPERANDS], *q[MAX_OPERANDS];
    int64_t row = w0 / n_blocks, blk = w0 % n_blocks;
    for (int k = 0; k < it->n_ops; k++)
        p[k] = it->base[k];
    for (int j = 0; j < it->rank; j++) {
        idx[j] = row % it->dims[j];
        row /= it->dims[j];
        for (int k = 0; k < it->n_ops; k++)
            p[k] += idx[j] * it->byte_strides[k][j];
    }
    for (int64_t w = w0; w < w1; w++) {
        int64_t start = blk * BLOCK_ELEMENTS;
        int64_t len = it->inner - start < BLOCK_ELEMENTS ? it->inner - start : BLOCK_ELEMENTS;
        for (int k = 0; k < it->n_ops; k++)
            q[k] = p[k] + start * it->inner_strides[k] * (int64_t)it->elem_size[k];
        fn(len, q, it->inner_strides);
        if (++blk < n_blocks)
            continue;
        blk = 0;
        for (int j = 0; j < it->rank; j++) {
            for (int k = 0; k < it->n_ops; k++)
                p[k] += it->byte_strides[k][j];
            if (++idx[j] < it->dims[j])
                break;
            for (int k = 0; k < it->n_ops; k++)
                p[k] -= it->byte_strides[k][j] * it->dims[j];
            idx[j] = 0;
        }
    }
}

/* out[...] = fn(in[0][...], ...) with broadcasting; out has the full shape. */
static tsr_status broadcast_run(tsr_tensor *out, int n_in, const tsr_tensor *const *in, loop_fn fn,
                                int threads)
{
    int64_t numel = tsr_tensor_numel(out);
    if (numel <= 0)
        return TSR_OK;
    bcast_iter it;
    TSR_CHECK(iter_init(&it, out, n_in, in));
    int64_t rows = numel / it.inner;
    int64_t n_blocks = (it.inner + BLOCK_ELEMENTS - 1) / BLOCK_ELEMENTS;
    int64_t items = rows * n_blocks;
    int nt = numel >= PARALLEL_MIN_ELEMENTS && threads > 1 ? threads : 1;
    if (nt > items)
        nt = (int)items;
    if (nt <= 1) {
        iter_range(&it, fn, 0, items, n_blocks);
        return TSR_OK;
    }
#pragma omp parallel num_threads(nt)
    {
        int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        iter_range(&it, fn, items * t / n, items * (t + 1) / n, n_blocks);
    }
    return TSR_OK;
}

/* ------------------------------------------------------------ inner loops */

/* y = EXPR(a, b) over a row, one branch per stride pattern so that each
 * loop body is simple enough to vectorize. */
#define LOOP2(NAME, TY, TX, EXPR)                                                                  \
    static void NAME(int64_t n, char *const *p, const int64_t *s)                                  \
    {                                                                                              \
        TY *y = (TY *)p[0];                                                                        \
        const TX *pa = (const TX *)p[1], *pb = (const TX *)p[2];                                   \
        if (s[1] && s[2]) {                                                                        \
            for (int64_t i = 0; i < n; i++) {                                                      \
                TX a = pa[i], b = pb[i];                                                           \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (s[2]) {                                                                         \
            TX a = pa[0];                                                                          \
            for (int64_t i = 0; i < n; i++) {                                                      \
                TX b = pb[i];                                                                      \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (s[1]) {                                                                         \
            TX b = pb[0];                                                                          \
            for (int64_t i = 0; i < n; i++) {                                                      \
                TX a = pa[i];                                                                      \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else {                                                                                   \
            TX a = pa[0], b = pb[0];                                                               \
            TY v = (EXPR);                                                                         \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = v;                                                                          \
        }                                                                                          \
    }

/* Signed overflow wraps (through unsigned arithmetic) instead of being
 * undefined. Integer division by zero never reaches these: the kernels
 * refuse such divisors first (check_divisor). */
#define INT_HELPERS(P, T, UT)                                                                      \
    static inline T P##_add(T a, T b)                                                              \
    {                                                                                              \
        return (T)((UT)a + (UT)b);                                                                 \
    }                                                                                              \
    static inline T P##_sub(T a, T b)                                                              \
    {                                                                                              \
        return (T)((UT)a - (UT)b);                                                                 \
    }                                                                                              \
    static inline T P##_mul(T a, T b)                                                              \
    {                                                                                              \
        return (T)((UT)a * (UT)b);                                                                 \
    }                                                                                              \
    static inline T P##_div(T a, T b)                                                              \
    {                                                                                              \
        return b == 0 ? 0 : (b == -1 ? (T)((UT)0 - (UT)a) : a / b);                                \
    }                                                                                              \
    static inline T P##_fmod(T a, T b)                                                             \
    {                                                                                              \
        return b == 0 || b == -1 ? 0 : a % b;                                                      \
    }                                                                                              \
    static inline T P##_mod(T a, T b)                                                              \
    {                                                                                              \
        T r = P##_fmod(a, b);                                                                      \
        return r != 0 && ((r < 0) != (b < 0)) ? (T)(r + b) : r;                                    \
    }

INT_HELPERS(i64, int64_t, uint64_t)
INT_HELPERS(i32, int32_t, uint32_t)

/* Max/Min propagate NaN like PyTorch and numpy. */
#define MAX_EXPR ((a != a || a > b) ? a : b)
#define MIN_EXPR ((a != a || a < b) ? a : b)

#define LOOPS_ALL_NUMERIC(OP, FEXPR, I64EXPR, I32EXPR)                                             \
    LOOP2(OP##_f32, float, float, FEXPR)                                                           \
    LOOP2(OP##_f64, double, double, FEXPR)                                                         \
    LOOP2(OP##_i64, int64_t, int64_t, I64EXPR)                                                     \
    LOOP2(OP##_i32, int32_t, int32_t, I32EXPR)

LOOPS_ALL_NUMERIC(add, a + b, i64_add(a, b), i32_add(a, b))
LOOPS_ALL_NUMERIC(sub, a - b, i64_sub(a, b), i32_sub(a, b))
LOOPS_ALL_NUMERIC(mul, a *b, i64_mul(a, b), i32_mul(a, b))
LOOPS_ALL_NUMERIC(div, a / b, i64_div(a, b), i32_div(a, b))
LOOPS_ALL_NUMERIC(max, MAX_EXPR, MAX_EXPR, MAX_EXPR)
LOOPS_ALL_NUMERIC(min, MIN_EXPR, MIN_EXPR, MIN_EXPR)
LOOP2(pymod_i64, int64_t, int64_t, i64_mod(a, b))
LOOP2(pymod_i32, int32_t, int32_t, i32_mod(a, b))
LOOP2(fmod_f32, float, float, fmodf(a, b))
LOOP2(fmod_f64, double, double, fmod(a, b))
LOOP2(fmod_i64, int64_t, int64_t, i64_fmod(a, b))
LOOP2(fmod_i32, int32_t, int32_t, i32_fmod(a, b))

#define LOOPS_COMPARE(OP, EXPR)                                                                    \
    LOOP2(OP##_f32, uint8_t, float, EXPR)                                                          \
    LOOP2(OP##_f64, uint8_t, double, EXPR)                                                         \
    LOOP2(OP##_i64, uint8_t, int64_t, EXPR)                                                        \
    LOOP2(OP##_i32, uint8_t, int32_t, EXPR)                                                        \
    LOOP2(OP##_i8, uint8_t, int8_t, EXPR)                                                          \
    LOOP2(OP##_u8, uint8_t, uint8_t, EXPR)

LOOPS_COMPARE(equal, a == b)
LOOPS_COMPARE(less, a < b)
LOOPS_COMPARE(greater, a > b)
LOOPS_COMPARE(less_equal, a <= b)
LOOPS_COMPARE(greater_equal, a >= b)
/* Bools are stored as one byte, 0 or 1; any nonzero byte reads as true. */
LOOP2(equal_bool, uint8_t, uint8_t, !a == !b)
LOOP2(and_bool, uint8_t, uint8_t, a && b)
LOOP2(or_bool, uint8_t, uint8_t, a || b)
LOOP2(xor_bool, uint8_t, uint8_t, !a != !b)

/* Bitwise ops (opset 18) on every integer dtype Tessera has. */
#define LOOPS_BITWISE(OP, EXPR)                                                                    \
    LOOP2(OP##_i64, int64_t, int64_t, EXPR)                                                        \
    LOOP2(OP##_i32, int32_t, int32_t, EXPR)                                                        \
    LOOP2(OP##_i8, int8_t, int8_t, EXPR)                                                           \
    LOOP2(OP##_u8, uint8_t, uint8_t, EXPR)
#define BITWISE_TABLE(OP)                                                                          \
    {                                                                                              \
        [TSR_INT64] = OP##_i64, [TSR_INT32] = OP##_i32, [TSR_INT8] = OP##_i8,                      \
        [TSR_UINT8] = OP##_u8                                                                      \
    }

LOOPS_BITWISE(bit_and, a &b)
LOOPS_BITWISE(bit_or, a | b)
LOOPS_BITWISE(bit_xor, a ^ b)

#define NUMERIC_TABLE(OP)                                                                          \
    {                                                                                              \
        [TSR_FLOAT32] = OP##_f32, [TSR_FLOAT64] = OP##_f64, [TSR_INT64] = OP##_i64,                \
        [TSR_INT32] = OP##_i32                                                                     \
    }

/* Comparisons take every numeric dtype (Equal bool too) and give bool. */
#define COMPARE_TABLE(OP)                                                                          \
    {                                                                                              \
        [TSR_FLOAT32] = OP##_f32, [TSR_FLOAT64] = OP##_f64, [TSR_INT64] = OP##_i64,                \
        [TSR_INT32] = OP##_i32, [TSR_INT8] = OP##_i8, [TSR_UINT8] = OP##_u8                        \
    }

/* ------------------------------------------------- shared inference */

static tsr_status require_present(const tsr_infer_ctx *c, int first, int count)
{
    for (int i = first; i < first + count; i++)
        if (!c->inputs[i])
            return tsr_infer_error(c, TSR_ERR_PARSE, "input %d is missing", i);
    return TSR_OK;
}

/* Inputs first..first+count-1 must share one dtype. */
static tsr_status require_same_dtype(const tsr_infer_ctx *c, int first, int count)
{
    const tsr_value *a = c->inputs[first];
    for (int i = first + 1; i < first + count; i++)
        if (c->inputs[i]->dtype != a->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE,
                                   "input %d ('%s') is %s but input %d ('%s') is %s; %s needs "
                                   "one dtype",
                                   i, c->inputs[i]->name, tsr_dtype_name(c->inputs[i]->dtype),
                                   first, a->name, tsr_dtype_name(a->dtype), c->node->op->name);
    return TSR_OK;
}

static tsr_status require_table_dtype(const tsr_infer_ctx *c, int input, const loop_fn *table)
{
    tsr_dtype t = c->inputs[input]->dtype;
    if ((unsigned)t < DTYPE_SLOTS && table[t])
        return TSR_OK;
    return tsr_infer_error(c, TSR_ERR_DTYPE, "input %d ('%s') has dtype %s, which %s does not take",
                           input, c->inputs[input]->name, tsr_dtype_name(t), c->node->op->name);
}

/* The broadcast shape of all inputs; rank -1 if any rank is unknown. */
static tsr_status broadcast_inputs(const tsr_infer_ctx *c, int *rank, int64_t *dims)
{
    *rank = 0;
    for (int i = 0; i < c->n_inputs; i++) {
        const tsr_value *v = c->inputs[i];
        if (v->rank < 0) {
            *rank = -1;
            return TSR_OK;
        }
        int64_t prev[TSR_MAX_RANK];
        int prev_rank = *rank;
        memcpy(prev, dims, sizeof prev);
        if (tsr_shape_broadcast(prev_rank, prev, v->rank, v->dims, rank, dims) != TSR_OK) {
            char sa[160], sb[160];
            tsr_shape_format(sa, sizeof sa, prev_rank, prev);
            tsr_shape_format(sb, sizeof sb, v->rank, v->dims);
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "input %d ('%s') of shape %s does not broadcast with %s%s", i,
                                   v->name, sb, i == 1 ? "input 0 of shape " : "the shape ", sa);
        }
    }
    return TSR_OK;
}

static double flops_elementwise(const tsr_infer_ctx *c)
{
    int64_t n = tsr_shape_numel(c->outputs[0]->rank, c->outputs[0]->dims);
    return n > 0 ? (double)n : 0.0;
}

static double flops_variadic(const tsr_infer_ctx *c)
{
    return flops_elementwise(c) * (c->n_inputs - 1);
}

static loop_fn table_loop(const loop_fn *table, tsr_dtype t)
{
    return (unsigned)t < DTYPE_SLOTS ? table[t] : NULL;
}

static tsr_status kernel_dtype_error(const tsr_kernel_ctx *k, tsr_dtype t)
{
    return tsr_error(TSR_ERR_DTYPE, "%s has no kernel for %s", k->node->op->name,
                     tsr_dtype_name(t));
}

/* ------------------------------------- arithmetic, comparisons, variadic */

typedef struct {
    loop_fn loops[DTYPE_SLOTS];
    bool bool_out;
    bool divides; /* integer zeros in input 1 are an error */
} ew_desc;

/* ONNX leaves integer division by zero undefined; an error says more than
 * any number we could make up. */
static tsr_status check_divisor(const tsr_tensor *b)
{
    int64_t n = tsr_tensor_numel(b);
    for (int64_t i = 0; i < n; i++) {
        bool zero = b->dtype == TSR_INT64 ? ((const int64_t *)b->data)[i] == 0
                  : b->dtype == TSR_INT32 ? ((const int32_t *)b->data)[i] == 0
                                          : false;
        if (zero)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "integer division by zero (element %lld of the divisor)", (long long)i);
    }
    return TSR_OK;
}

static tsr_status ew_infer(tsr_infer_ctx *c, const ew_desc *d)
{
    TSR_CHECK(require_present(c, 0, c->n_inputs));
    TSR_CHECK(require_same_dtype(c, 0, c->n_inputs));
    TSR_CHECK(require_table_dtype(c, 0, d->loops));
    int rank;
    int64_t dims[TSR_MAX_RANK];
    TSR_CHECK(broadcast_inputs(c, &rank, dims));
    tsr_infer_set(c, 0, d->bool_out ? TSR_BOOL : c->inputs[0]->dtype, rank, dims);
    return TSR_OK;
}

/* Variadic ops fold the inputs in one at a time into the output. */
static tsr_status ew_ref(const tsr_kernel_ctx *k, const ew_desc *d)
{
    tsr_dtype t = k->inputs[0]->dtype;
    loop_fn fn = table_loop(d->loops, t);
    if (!fn)
        return kernel_dtype_error(k, t);
    tsr_tensor *out = k->outputs[0];
    if (d->divides)
        TSR_CHECK(check_divisor(k->inputs[1]));
    if (k->n_inputs == 1) {
        size_t bytes = tsr_tensor_bytes(out);
        if (bytes) /* empty tensors may have no buffer */
            memcpy(out->data, k->inputs[0]->data, bytes);
        return TSR_OK;
    }
    const tsr_tensor *first[2] = {k->inputs[0], k->inputs[1]};
    TSR_CHECK(broadcast_run(out, 2, first, fn, k->threads));
    for (int i = 2; i < k->n_inputs; i++) {
        const tsr_tensor *pair[2] = {out, k->inputs[i]};
        TSR_CHECK(broadcast_run(out, 2, pair, fn, k->threads));
    }
    return TSR_OK;
}

#define EW_OP(NAME, MAX_IN, FLOPS, BOOL_OUT, DIVIDES, TABLE, GRAD)                                 \
    static const ew_desc NAME##_desc = {.loops = TABLE, .bool_out = BOOL_OUT, .divides = DIVIDES}; \
    static tsr_status NAME##_infer(tsr_infer_ctx *c)                                               \
    {                                                                                              \
        return ew_infer(c, &NAME##_desc);                                                          \
    }                                                                                              \
    static tsr_status NAME##_ref(const tsr_kernel_ctx *k)                                          \
    {                                                                                              \
        return ew_ref(k, &NAME##_desc);                                                            \
    }                                                                                              \
    const tsr_op_def tsr_op_##NAME = {                                                             \
        .name = #NAME,                                                                             \
        .domain = "",                                                                              \
        .min_inputs = (MAX_IN) > 2 ? 1 : 2,                                                        \
        .max_inputs = MAX_IN,                                                                      \
        .min_outputs = 1,                                                                          \
        .max_outputs = 1,                                                                          \
        .locality = TSR_LOCALITY_ELEMENTWISE,                                                      \
        .infer = NAME##_infer,                                                                     \
        .ref = NAME##_ref,                                                                         \
        .flops = FLOPS,                                                                            \
        .grad = GRAD,                                                                              \
    };

#define EQUAL_TABLE                                                                                \
    {                                                                                              \
        [TSR_FLOAT32] = equal_f32, [TSR_FLOAT64] = equal_f64, [TSR_INT64] = equal_i64,             \
        [TSR_INT32] = equal_i32, [TSR_INT8] = equal_i8, [TSR_UINT8] = equal_u8,                    \
        [TSR_BOOL] = equal_bool                                                                    \
    }

/* Gradient rules of the element-wise ops; each input's share is summed
 * back over the axes it was broadcast along. */

static tsr_status add_grad(tsr_grad_ctx *c)
{
    for (int i = 0; i < tsr_grad_node(c)->n_inputs; i++)
        TSR_CHECK(tsr_grad_contribute_sum(c, i, tsr_grad_dy(c, 0)));
    return TSR_OK;
}

static tsr_status sub_grad(tsr_grad_ctx *c)
{
    const char *neg;
    TSR_CHECK(tsr_grad_contribute_sum(c, 0, tsr_grad_dy(c, 0)));
    if (!tsr_grad_wants(c, 1))
        return TSR_OK;
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, tsr_grad_dy(c, 0), &neg));
    return tsr_grad_contribute_sum(c, 1, neg);
}

static tsr_status mul_grad(tsr_grad_ctx *c)
{
    for (int i = 0; i < 2; i++) {
        if (!tsr_grad_wants(c, i))
            continue;
        const char *g;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, tsr_grad_dy(c, 0), tsr_grad_input(c, 1 - i), &g));
        TSR_CHECK(tsr_grad_contribute_sum(c, i, g));
    }
    return TSR_OK;
}

/* d(a/b)/db = -(a/b)/b */
static tsr_status div_grad(tsr_grad_ctx *c)
{
    const char *a_grad, *dy = tsr_grad_dy(c, 0), *b = tsr_grad_input(c, 1);
    if (tsr_grad_wants(c, 0)) {
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, dy, b, &a_grad));
        TSR_CHECK(tsr_grad_contribute_sum(c, 0, a_grad));
    }
    if (tsr_grad_wants(c, 1)) {
        const char *t, *q, *neg;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, tsr_grad_output(c, 0), &t));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, t, b, &q));
        TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, q, &neg));
        TSR_CHECK(tsr_grad_contribute_sum(c, 1, neg));
    }
    return TSR_OK;
}

/* Max and Min: the gradient goes to the inputs equal to the result, split
 * evenly between ties (as PyTorch's maximum and minimum do). */
static tsr_status extremum_grad(tsr_grad_ctx *c)
{
    int n = tsr_grad_node(c)->n_inputs;
    const char *y = tsr_grad_output(c, 0), *dy = tsr_grad_dy(c, 0);
    tsr_dtype dt = tsr_grad_value(c, dy)->dtype;
    const char *masks[TSR_MAX_NODE_IO], *count = NULL, *share;
    tsr_attr to = TSR_ATTR_I("to", dt);
    for (int i = 0; i < n; i++) {
        const char *eq;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Equal, tsr_grad_input(c, i), y, &eq));
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &eq, 1, &to, 1, &masks[i]));
        if (!count)
            count = masks[i];
        else
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, count, masks[i], &count));
    }
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, dy, count, &share));
    for (int i = 0; i < n; i++) {
        if (!tsr_grad_wants(c, i))
            continue;
        const char *g;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, share, masks[i], &g));
        TSR_CHECK(tsr_grad_contribute_sum(c, i, g));
    }
    return TSR_OK;
}

EW_OP(Add, 2, flops_elementwise, false, false, NUMERIC_TABLE(add), add_grad)
EW_OP(Sub, 2, flops_elementwise, false, false, NUMERIC_TABLE(sub), sub_grad)
EW_OP(Mul, 2, flops_elementwise, false, false, NUMERIC_TABLE(mul), mul_grad)
EW_OP(Div, 2, flops_elementwise, false, true, NUMERIC_TABLE(div), div_grad)
EW_OP(Max, TSR_MAX_NODE_IO, flops_variadic, false, false, NUMERIC_TABLE(max), extremum_grad)
EW_OP(Min, TSR_MAX_NODE_IO, flops_variadic, false, false, NUMERIC_TABLE(min), extremum_grad)
EW_OP(Sum, TSR_MAX_NODE_IO, flops_variadic, false, false, NUMERIC_TABLE(add), add_grad)
/* Comparisons have bool outputs, which carry no gradient. */
EW_OP(Equal, 2, flops_elementwise, true, false, EQUAL_TABLE, NULL)
EW_OP(Less, 2, flops_elementwise, true, false, COMPARE_TABLE(less), NULL)
EW_OP(Greater, 2, flops_elementwise, true, false, COMPARE_TABLE(greater), NULL)
EW_OP(LessOrEqual, 2, flops_elementwise, true, false, COMPARE_TABLE(less_equal), NULL)
EW_OP(GreaterOrEqual, 2, flops_elementwise, true, false, COMPARE_TABLE(greater_equal), NULL)
/* Logical ops take and give bool only, and carry no gradient either. */
EW_OP(And, 2, flops_elementwise, true, false, {[TSR_BOOL] = and_bool}, NULL)
EW_OP(Or, 2, flops_elementwise, true, false, {[TSR_BOOL] = or_bool}, NULL)
EW_OP(Xor, 2, flops_elementwise, true, false, {[TSR_BOOL] = xor_bool}, NULL)
EW_OP(BitwiseAnd, 2, flops_elementwise, false, false, BITWISE_TABLE(bit_and), NULL)
EW_OP(BitwiseOr, 2, flops_elementwise, false, false, BITWISE_TABLE(bit_or), NULL)
EW_OP(BitwiseXor, 2, flops_elementwise, false, false, BITWISE_TABLE(bit_xor), NULL)

/* ------------------------------------------------------------------ Mod */

static const tsr_attr_def mod_attrs[] = {{"fmod", TSR_ATTR_INT, .i = 0}, {NULL}};
static const loop_fn pymod_loops[DTYPE_SLOTS] = {[TSR_INT64] = pymod_i64, [TSR_INT32] = pymod_i32};
static const loop_fn fmod_loops[DTYPE_SLOTS] = NUMERIC_TABLE(fmod);

static tsr_status mod_infer(tsr_infer_ctx *c)
{
    int64_t fmod_attr = tsr_attr_int(c->node, "fmod");
    if (fmod_attr != 0 && fmod_attr != 1)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED, "Mod attribute fmod=%lld (must be 0 or 1)",
                               (long long)fmod_attr);
    TSR_CHECK(require_present(c, 0, 2));
    TSR_CHECK(require_same_dtype(c, 0, 2));
    tsr_dtype t = c->inputs[0]->dtype;
    if (fmod_attr == 0 && tsr_dtype_is_float(t))
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "Mod with fmod=0 takes integers only, got %s (ONNX requires fmod=1 "
                               "for floating-point inputs)",
                               tsr_dtype_name(t));
    TSR_CHECK(require_table_dtype(c, 0, fmod_attr ? fmod_loops : pymod_loops));
    int rank;
    int64_t dims[TSR_MAX_RANK];
    TSR_CHECK(broadcast_inputs(c, &rank, dims));
    tsr_infer_set(c, 0, t, rank, dims);
    return TSR_OK;
}

static tsr_status mod_ref(const tsr_kernel_ctx *k)
{
    tsr_dtype t = k->inputs[0]->dtype;
    loop_fn fn = table_loop(tsr_attr_int(k->node, "fmod") ? fmod_loops : pymod_loops, t);
    if (!fn)
        return kernel_dtype_error(k, t);
    TSR_CHECK(check_divisor(k->inputs[1]));
    const tsr_tensor *in[2] = {k->inputs[0], k->inputs[1]};
    return broadcast_run(k->outputs[0], 2, in, fn, k->threads);
}

/* fmod(a, b) = a - trunc(a / b) * b: da = dy, db = -dy * trunc(a / b).
 * Python's modulo is integer-only here, so it has no gradient. */
static tsr_status mod_grad(tsr_grad_ctx *c)
{
    TSR_CHECK(tsr_grad_contribute_sum(c, 0, tsr_grad_dy(c, 0)));
    if (!tsr_grad_wants(c, 1))
        return TSR_OK;
    const char *a = tsr_grad_input(c, 0), *b = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    const char *q, *fl, *ce, *neg_q, *zero, *trunc, *t, *g;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Div, a, b, &q));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Floor, q, &fl));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Ceil, q, &ce));
    TSR_CHECK(tsr_grad_scalar(c, 0.0, tsr_grad_value(c, dy)->dtype, &zero));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Less, q, zero, &neg_q));
    const char *pick[3] = {neg_q, ce, fl};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Where, 3, pick, 0, NULL, 1, &trunc));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, trunc, &t));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Neg, t, &g));
    return tsr_grad_contribute_sum(c, 1, g);
}

const tsr_op_def tsr_op_Mod = {
    .name = "Mod",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = mod_attrs,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = mod_infer,
    .ref = mod_ref,
    .flops = flops_elementwise,
    .grad = mod_grad,
};

/* ------------------------------------------------------------------ Pow */

/* Squares are common (variance in decomposed normalizations) and x * x is
 * exact where pow() is slow. */
#define POW_LOOP(NAME, TA, TB)                                                                     \
    static void NAME(int64_t n, char *const *p, const int64_t *s)                                  \
    {                                                                                              \
        TA *y = (TA *)p[0];                                                                        \
        const TA *pa = (const TA *)p[1];                                                           \
        const TB *pb = (const TB *)p[2];                                                           \
        int64_t sa = s[1], sb = s[2];                                                              \
        if (sb == 0 && (double)pb[0] == 2.0) {                                                     \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = pa[i * sa] * pa[i * sa];                                                    \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = (TA)pow((double)pa[i * sa], (double)pb[i * sb]);                            \
        }                                                                                          \
    }

#define POW_LOOPS(P, TA)                                                                           \
    POW_LOOP(pow_##P##_f32, TA, float)                                                             \
    POW_LOOP(pow_##P##_f64, TA, double)                                                            \
    POW_LOOP(pow_##P##_i64, TA, int64_t)                                                           \
    POW_LOOP(pow_##P##_i32, TA, int32_t)

POW_LOOPS(f32, float)
POW_LOOPS(f64, double)

/* Indexed [base is float64][exponent dtype]. */
static const loop_fn pow_loops[2][DTYPE_SLOTS] = {NUMERIC_TABLE(pow_f32), NUMERIC_TABLE(pow_f64)};

static tsr_status pow_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(require_present(c, 0, 2));
    if (!tsr_dtype_is_float(c->inputs[0]->dtype))
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "Pow with a %s base is not supported (float32 and float64 are)",
                               tsr_dtype_name(c->inputs[0]->dtype));
    TSR_CHECK(require_table_dtype(c, 1, pow_loops[0]));
    int rank;
    int64_t dims[TSR_MAX_RANK];
    TSR_CHECK(broadcast_inputs(c, &rank, dims));
    tsr_infer_set(c, 0, c->inputs[0]->dtype, rank, dims);
    return TSR_OK;
}

static tsr_status pow_ref(const tsr_kernel_ctx *k)
{
    tsr_dtype base = k->inputs[0]->dtype, expo = k->inputs[1]->dtype;
    if (!tsr_dtype_is_float(base))
        return kernel_dtype_error(k, base);
    loop_fn fn = table_loop(pow_loops[base == TSR_FLOAT64], expo);
    if (!fn)
        return kernel_dtype_error(k, expo);
    const tsr_tensor *in[2] = {k->inputs[0], k->inputs[1]};
    return broadcast_run(k->outputs[0], 2, in, fn, k->threads);
}

/* d(a^b)/da = b a^(b-1) (an integer exponent is cast to a's dtype);
 * d(a^b)/db = a^b log(a). */
static tsr_status pow_grad(tsr_grad_ctx *c)
{
    const char *a = tsr_grad_input(c, 0), *b = tsr_grad_input(c, 1), *dy = tsr_grad_dy(c, 0);
    tsr_dtype dt = tsr_grad_value(c, a)->dtype;
    if (tsr_grad_wants(c, 0)) {
        const char *bf = b, *one, *bm1, *p, *t, *g;
        if (tsr_grad_value(c, b)->dtype != dt) {
            tsr_attr to = TSR_ATTR_I("to", dt);
            TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &b, 1, &to, 1, &bf));
        }
        TSR_CHECK(tsr_grad_scalar(c, 1.0, dt, &one));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, bf, one, &bm1));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Pow, a, bm1, &p));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, p, bf, &t));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, t, &g));
        TSR_CHECK(tsr_grad_contribute_sum(c, 0, g));
    }
    if (tsr_grad_wants(c, 1)) {
        const char *lg, *t, *g;
        TSR_CHECK(tsr_grad_unary(c, &tsr_op_Log, a, &lg));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, tsr_grad_output(c, 0), lg, &t));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dy, t, &g));
        TSR_CHECK(tsr_grad_contribute_sum(c, 1, g));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_Pow = {
    .name = "Pow",
    .domain = "",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = pow_infer,
    .ref = pow_ref,
    .flops = flops_elementwise,
    .grad = pow_grad,
};

/* ---------------------------------------------------------------- Where */

/* Selection only moves bits, so one loop per element size serves every
 * dtype. A scalar (per row) condition is a copy; a scalar X or Y (masks
 * filled with a constant) gets its own loop. */
#define WHERE_LOOP(NAME, T)                                                                        \
    static void NAME(int64_t n, char *const *p, const int64_t *s)                                  \
    {                                                                                              \
        T *y = (T *)p[0];                                                                          \
        const uint8_t *cond = (const uint8_t *)p[1];                                               \
        const T *x = (const T *)p[2], *z = (const T *)p[3];                                        \
        if (!s[1]) {                                                                               \
            const T *src = cond[0] ? x : z;                                                        \
            if (cond[0] ? s[2] : s[3])                                                             \
                memcpy(y, src, (size_t)n * sizeof(T));                                             \
            else                                                                                   \
                for (int64_t i = 0; i < n; i++)                                                    \
                    y[i] = src[0];                                                                 \
        } else if (s[2] && s[3]) {                                                                 \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T xv = x[i], zv = z[i]; /* both loaded: a select, not a branch */                  \
                y[i] = cond[i] ? xv : zv;                                                          \
            }                                                                                      \
        } else if (s[2]) {                                                                         \
            T zv = z[0];                                                                           \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T xv = x[i];                                                                       \
                y[i] = cond[i] ? xv : zv;                                                          \
            }                                                                                      \
        } else if (s[3]) {                                                                         \
            T xv = x[0];                                                                           \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T zv = z[i];                                                                       \
                y[i] = cond[i] ? xv : zv;                                                          \
            }                                                                                      \
        } else {                                                                                   \
            T xv = x[0], zv = z[0];                                                                \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = cond[i] ? xv : zv;                                                          \
        }                                                                                          \
    }

WHERE_LOOP(where_8, uint8_t)
WHERE_LOOP(where_32, uint32_t)
WHERE_LOOP(where_64, uint64_t)

static loop_fn where_loop(tsr_dtype t)
{
    switch (tsr_dtype_size(t)) {
    case 1: return where_8;
    case 4: return where_32;
    case 8: return where_64;
    default: return NULL;
    }
}

static tsr_status where_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(require_present(c, 0, 3));
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_DTYPE_BIT(TSR_BOOL)));
    TSR_CHECK(require_same_dtype(c, 1, 2));
    if (!where_loop(c->inputs[1]->dtype))
        return tsr_infer_error(c, TSR_ERR_DTYPE, "Where does not take %s values",
                               tsr_dtype_name(c->inputs[1]->dtype));
    int rank;
    int64_t dims[TSR_MAX_RANK];
    TSR_CHECK(broadcast_inputs(c, &rank, dims));
    tsr_infer_set(c, 0, c->inputs[1]->dtype, rank, dims);
    return TSR_OK;
}

static tsr_status where_ref(const tsr_kernel_ctx *k)
{
    loop_fn fn = where_loop(k->inputs[1]->dtype);
    if (!fn)
        return kernel_dtype_error(k, k->inputs[1]->dtype);
    const tsr_tensor *in[3] = {k->inputs[0], k->inputs[1], k->inputs[2]};
    return broadcast_run(k->outputs[0], 3, in, fn, k->threads);
}

/* The condition is bool and gets nothing; X and Y get dy where they
 * were selected. */
static tsr_status where_grad(tsr_grad_ctx *c)
{
    const char *cond = tsr_grad_input(c, 0), *dy = tsr_grad_dy(c, 0), *zero;
    TSR_CHECK(tsr_grad_scalar(c, 0.0, tsr_grad_value(c, dy)->dtype, &zero));
    for (int i = 1; i < 3; i++) {
        if (!tsr_grad_wants(c, i))
            continue;
        const char *g, *ins[3] = {cond, i == 1 ? dy : zero, i == 1 ? zero : dy};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Where, 3, ins, 0, NULL, 1, &g));
        TSR_CHECK(tsr_grad_contribute_sum(c, i, g));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_Where = {
    .name = "Where",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = where_infer,
    .ref = where_ref,
    .flops = flops_elementwise,
    .grad = where_grad,
};

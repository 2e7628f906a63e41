/* Element-wise tiles over contiguous spans of float32, written once in the
 * vector layer of simd.h and included by kernels_eltwise.c once per ISA
 * level, and the float64 ones as loops the compiler vectorizes for it. A
 * span is a plain tensor's elements or a blocked tensor's (padded lanes
 * included); per-channel operands come as a pattern that repeats every
 * `period` floats (a block's lanes, or one splat vector). No include
 * guard: included once per level. */
#include "backends/cpu/simd.h"
#include "backends/cpu/simd_math.h"

/* 1 / (1 + e^-x). Above x = 86, e^-x is below 2^-124 and 1 + e^-x is 1,
 * so -x is clamped at -86 and the exp takes the exponent-field scaling;
 * vectors with some x below -86 (where e^-x may overflow) take the exact
 * exp. */
SIMD_TARGET static inline vf SIMD_NAME(v_sigmoid)(vf x)
{
    vf one = vf_set1(1.0f), nx = vf_sub(vf_zero(), x);
    vf e = vm_any(vm_lt(vf_set1(86.0f), nx)) ? SIMD_NAME(v_exp)(nx)
                                             : SIMD_NAME(v_exp_normal)(vf_max(vf_set1(-86.0f), nx));
    return vf_div(one, vf_add(one, e));
}

/* tanh: below |x| = 0.5 its odd Taylor series to x^15 (relative error
 * under 1e-8 there, where 1 - 2/(e^2x + 1) would cancel); above it that
 * form, whose absolute error of a few ulp of 1 is small relative to
 * tanh(0.5) = 0.46. */
SIMD_TARGET static inline vf SIMD_NAME(v_tanh)(vf x)
{
    vf ax = vf_abs(x);
    vf x2 = vf_mul(x, x);
    vf p = vf_set1(-929569.0f / 638512875.0f);
    p = vf_fmadd(p, x2, vf_set1(21844.0f / 6081075.0f));
    p = vf_fmadd(p, x2, vf_set1(-1382.0f / 155925.0f));
    p = vf_fmadd(p, x2, vf_set1(62.0f / 2835.0f));
    p = vf_fmadd(p, x2, vf_set1(-17.0f / 315.0f));
    p = vf_fmadd(p, x2, vf_set1(2.0f / 15.0f));
    p = vf_fmadd(p, x2, vf_set1(-1.0f / 3.0f));
    vf small = vf_fmadd(vf_mul(p, x2), x, x);
    vf e = SIMD_NAME(v_exp)(vf_add(ax, ax));
    vf big = vf_sub(vf_set1(1.0f), vf_div(vf_set1(2.0f), vf_add(e, vf_set1(1.0f))));
    return vf_select(vm_lt(ax, vf_set1(0.5f)), small, vf_copysign(big, x));
}

/* erf: below |x| = 1 its Maclaurin series to x^21 (relative error under
 * 2e-8 there, so small arguments keep their precision); above it
 * Abramowitz and Stegun's 7.1.26, 1 - t P(t) e^(-x^2) with t = 1/(1 + p|x|),
 * within 1.5e-7 of erf. Checked against libm on 10^5 points of [-6, 6]:
 * 1.8e-7 absolute and relative at most, float32 rounding included. */
SIMD_TARGET static inline vf SIMD_NAME(v_erf)(vf x)
{
    vf ax = vf_abs(x);
    vf x2 = vf_mul(x, x);
    vf s = vf_set1(1.48071928e-8f);
    s = vf_fmadd(s, x2, vf_set1(-1.63658447e-7f));
    s = vf_fmadd(s, x2, vf_set1(1.64621144e-6f));
    s = vf_fmadd(s, x2, vf_set1(-1.49256504e-5f));
    s = vf_fmadd(s, x2, vf_set1(1.20553330e-4f));
    s = vf_fmadd(s, x2, vf_set1(-8.54832702e-4f));
    s = vf_fmadd(s, x2, vf_set1(5.22397763e-3f));
    s = vf_fmadd(s, x2, vf_set1(-2.68661706e-2f));
    s = vf_fmadd(s, x2, vf_set1(1.12837917e-1f));
    s = vf_fmadd(s, x2, vf_set1(-3.76126389e-1f));
    s = vf_fmadd(s, x2, vf_set1(1.12837917f));
    vf small = vf_mul(x, s);
    vf t = vf_div(vf_set1(1.0f), vf_fmadd(vf_set1(0.3275911f), ax, vf_set1(1.0f)));
    vf q = vf_set1(1.061405429f);
    q = vf_fmadd(q, t, vf_set1(-1.453152027f));
    q = vf_fmadd(q, t, vf_set1(1.421413741f));
    q = vf_fmadd(q, t, vf_set1(-0.284496736f));
    q = vf_fmadd(q, t, vf_set1(0.254829592f));
    q = vf_mul(q, t);
    vf big = vf_sub(vf_set1(1.0f), vf_mul(q, SIMD_NAME(v_exp)(vf_sub(vf_zero(), x2))));
    return vf_select(vm_lt(ax, vf_set1(1.0f)), small, vf_copysign(big, x));
}

/* The unary ops; a and b are the op's two float parameters (alpha/beta,
 * or Clip's bounds). */
#define UNARY_RELU(x) vf_max(vf_zero(), x)
#define UNARY_LEAKY(x) vf_fmadd(a, vf_min(vf_zero(), x), vf_max(vf_zero(), x))
#define UNARY_CLIP(x) vf_min(b, vf_max(a, x))
#define UNARY_HARDSIGMOID(x) vf_min(vf_set1(1.0f), vf_max(vf_zero(), vf_fmadd(a, x, b)))
#define UNARY_HARDSWISH(x)                                                                         \
    vf_mul(x, vf_min(vf_set1(1.0f),                                                                \
                     vf_max(vf_zero(), vf_fmadd(vf_set1(1.0f / 6.0f), x, vf_set1(0.5f)))))
#define UNARY_SIGMOID(x) SIMD_NAME(v_sigmoid)(x)
#define UNARY_TANH(x) SIMD_NAME(v_tanh)(x)
#define UNARY_ERF(x) SIMD_NAME(v_erf)(x)
#define UNARY_EXP(x) SIMD_NAME(v_exp)(x)
#define UNARY_ABS(x) vf_abs(x)
#define UNARY_NEG(x) vf_sub(vf_zero(), x)
#define UNARY_SILU(x) vf_mul(x, SIMD_NAME(v_sigmoid)(x))

#define UNARY_TILE(name, EXPR)                                                                     \
    SIMD_TARGET static void SIMD_NAME(unary_##name)(const float *xs, float *ys, int64_t n,         \
                                                    const tsr_cpu_ew_params *prm)                  \
    {                                                                                              \
        vf a = vf_set1(prm->a), b = vf_set1(prm->b);                                               \
        (void)a;                                                                                   \
        (void)b;                                                                                   \
        int64_t i = 0;                                                                             \
        for (; i + SIMD_W <= n; i += SIMD_W) {                                                     \
            vf x = vf_load(xs + i);                                                                \
            vf_store(ys + i, EXPR(x));                                                             \
        }                                                                                          \
        if (i < n) {                                                                               \
            vf x = vf_load_n(xs + i, (int)(n - i));                                                \
            vf_store_n(ys + i, EXPR(x), (int)(n - i));                                             \
        }                                                                                          \
    }

UNARY_TILE(relu, UNARY_RELU)
UNARY_TILE(leaky, UNARY_LEAKY)
UNARY_TILE(clip, UNARY_CLIP)
UNARY_TILE(hardsigmoid, UNARY_HARDSIGMOID)
UNARY_TILE(hardswish, UNARY_HARDSWISH)
UNARY_TILE(sigmoid, UNARY_SIGMOID)
UNARY_TILE(tanh, UNARY_TANH)
UNARY_TILE(erf, UNARY_ERF)
UNARY_TILE(exp, UNARY_EXP)
UNARY_TILE(abs, UNARY_ABS)
UNARY_TILE(neg, UNARY_NEG)
UNARY_TILE(silu, UNARY_SILU)

#define BINARY_ADD(a, b) vf_add(a, b)
#define BINARY_SUB(a, b) vf_sub(a, b)
#define BINARY_MUL(a, b) vf_mul(a, b)
#define BINARY_DIV(a, b) vf_div(a, b)
#define BINARY_RSUB(a, b) vf_sub(b, a)
#define BINARY_RDIV(a, b) vf_div(b, a)

/* dY Silu'(x) = dY (s + x s (1 - s)), s = sigmoid(x). */
SIMD_TARGET static inline vf SIMD_NAME(v_silu_grad)(vf dy, vf x)
{
    vf s = SIMD_NAME(v_sigmoid)(x);
    return vf_mul(dy, vf_fmadd(vf_mul(x, s), vf_sub(vf_set1(1.0f), s), s));
}
#define BINARY_SILU_GRAD(a, b) SIMD_NAME(v_silu_grad)(a, b)

/* y = a OP b over n elements (vv), and y = a OP pattern, the pattern of
 * `period` floats repeating along the span (vp). period is SIMD_W (one
 * splat vector: n may end in a partial vector) or a block's lanes, which
 * divide n (and SIMD_W divides them, except on SVE, whose vectors cover
 * a block's lanes under a predicate). */
#define BINARY_VV_TILE(name, OP)                                                                   \
    SIMD_TARGET static void SIMD_NAME(binary_vv_##name)(const float *as, const float *bs,          \
                                                        float *ys, int64_t n)                      \
    {                                                                                              \
        int64_t i = 0;                                                                             \
        for (; i + SIMD_W <= n; i += SIMD_W)                                                       \
            vf_store(ys + i, OP(vf_load(as + i), vf_load(bs + i)));                                \
        if (i < n) {                                                                               \
            int r = (int)(n - i);                                                                  \
            vf_store_n(ys + i, OP(vf_load_n(as + i, r), vf_load_n(bs + i, r)), r);                 \
        }                                                                                          \
    }

#define BINARY_VP_TILE(name, OP)                                                                   \
    SIMD_TARGET static void SIMD_NAME(binary_vp_##name)(const float *as, const float *pat,         \
                                                        int period, float *ys, int64_t n)          \
    {                                                                                              \
        int64_t i = 0;                                                                             \
        if (period == SIMD_W) {                                                                    \
            vf p = vf_load(pat);                                                                   \
            for (; i + SIMD_W <= n; i += SIMD_W)                                                   \
                vf_store(ys + i, OP(vf_load(as + i), p));                                          \
            if (i < n) {                                                                           \
                int r = (int)(n - i);                                                              \
                vf_store_n(ys + i, OP(vf_load_n(as + i, r), p), r);                                \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        for (; i < n; i += period)                                                                 \
            for (int j = 0; j < period; j += SIMD_W)                                               \
                vf_store_lanes(                                                                    \
                    ys + i + j,                                                                    \
                    OP(vf_load_lanes(as + i + j, j, period), vf_load_lanes(pat + j, j, period)),   \
                    j, period);                                                                    \
    }

#define BINARY_TILES(name, OP)                                                                     \
    BINARY_VV_TILE(name, OP)                                                                       \
    BINARY_VP_TILE(name, OP)

BINARY_TILES(add, BINARY_ADD)
BINARY_TILES(sub, BINARY_SUB)
BINARY_TILES(mul, BINARY_MUL)
BINARY_TILES(div, BINARY_DIV)
BINARY_TILES(rsub, BINARY_RSUB)
BINARY_TILES(rdiv, BINARY_RDIV)
BINARY_VV_TILE(silu_grad, BINARY_SILU_GRAD)

/* float64 (plain layouts, so no padded lanes): y = a OP b (vv) and
 * y = a OP b for one value b (vs: a scalar operand, or one channel's value
 * along that channel's row). The same double arithmetic as the ref
 * kernels, so the results are theirs. */
#define BINARY64_TILES(name, EXPR)                                                                 \
    SIMD_TARGET static void SIMD_NAME(binary64_vv_##name)(const double *as, const double *bs,      \
                                                          double *ys, int64_t n)                   \
    {                                                                                              \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                        \
        {                                                                                          \
            double a = as[i], b = bs[i];                                                           \
            ys[i] = EXPR;                                                                          \
        }                                                                                          \
    }                                                                                              \
    SIMD_TARGET static void SIMD_NAME(binary64_vs_##name)(const double *as, double b, double *ys,  \
                                                          int64_t n)                               \
    {                                                                                              \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                        \
        {                                                                                          \
            double a = as[i];                                                                      \
            ys[i] = EXPR;                                                                          \
        }                                                                                          \
    }

BINARY64_TILES(add, a + b)
BINARY64_TILES(sub, a - b)
BINARY64_TILES(mul, a *b)
BINARY64_TILES(div, a / b)
BINARY64_TILES(rsub, b - a)
BINARY64_TILES(rdiv, b / a)

/* e^x in double where the result is normal (|x| <= 708; the tiles redo
 * other x with libm): x = n ln2 + r, |r| <= ln2/2, with n rounded by adding
 * 1.5 * 2^52 and ln2 in two parts (n ln2_hi exact), e^r by its Taylor
 * series to r^13 (truncated below 3e-18 relative) in fused multiply-adds
 * where the level has them, 2^n from the exponent bits of that rounding's
 * result. Within a few ulp of libm's exp. */
#define EXP64_RANGE 708.0
SIMD_TARGET static inline double SIMD_NAME(exp64)(double x)
{
    const double shifter = 0x1.8p52;
    x = x > EXP64_RANGE ? EXP64_RANGE : x < -EXP64_RANGE ? -EXP64_RANGE : x;
    double t = sd_fma(x, 1.44269504088896338700e+00, shifter), n = t - shifter;
    double r = sd_fma(-n, 1.90821492927058770002e-10, sd_fma(-n, 6.93147180369123816490e-01, x));
    /* Horner from 1/13!: p = p r + 1/k! for k = 12 down to 0. */
    double p = 1.0 / 6227020800.0, fact = 6227020800.0;
    for (int k = 13; k > 0; k--) {
        fact /= k;
        p = sd_fma(p, r, 1.0 / fact);
    }
    uint64_t bits; /* unsigned: a NaN x (redone by the tiles) gives any bits, no UB */
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4338000000000000u + 1023u) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* A float64 op of e = e^(ARG): exp64 on every element, then libm's exp for
 * the few beyond its range (overflow, subnormal results, inf, NaN), found
 * in a second pass only when the first saw one. */
#define UNARY64_EXP_TILE(name, ARG, EXPR)                                                          \
    SIMD_TARGET static void SIMD_NAME(unary64_##name)(const double *xs, double *ys, int64_t n)     \
    {                                                                                              \
        int outside = 0;                                                                           \
        _Pragma("omp simd reduction(| : outside)") for (int64_t i = 0; i < n; i++)                 \
        {                                                                                          \
            double x = xs[i], e = SIMD_NAME(exp64)(ARG);                                           \
            ys[i] = EXPR;                                                                          \
            outside |= !(fabs(x) <= EXP64_RANGE);                                                  \
        }                                                                                          \
        for (int64_t i = 0; outside && i < n; i++) {                                               \
            double x = xs[i];                                                                      \
            if (!(fabs(x) <= EXP64_RANGE)) {                                                       \
                double e = exp(ARG);                                                               \
                ys[i] = EXPR;                                                                      \
            }                                                                                      \
        }                                                                                          \
    }

UNARY64_EXP_TILE(sigmoid, -x, 1.0 / (1.0 + e))
UNARY64_EXP_TILE(silu, -x, x / (1.0 + e))

/* dY Silu'(x) in float64, the ref kernel's formula; libm's exp where exp64
 * does not reach. */
SIMD_TARGET static void SIMD_NAME(binary64_vv_silu_grad)(const double *dys, const double *xs,
                                                        double *ys, int64_t n)
{
    int outside = 0;
    _Pragma("omp simd reduction(| : outside)") for (int64_t i = 0; i < n; i++)
    {
        double x = xs[i], s = 1.0 / (1.0 + SIMD_NAME(exp64)(-x));
        ys[i] = dys[i] * s * (1.0 + x * (1.0 - s));
        outside |= !(fabs(x) <= EXP64_RANGE);
    }
    for (int64_t i = 0; outside && i < n; i++) {
        double x = xs[i];
        if (!(fabs(x) <= EXP64_RANGE)) {
            double s = 1.0 / (1.0 + exp(-x));
            ys[i] = dys[i] * s * (1.0 + x * (1.0 - s));
        }
    }
}
UNARY64_EXP_TILE(exp, x, e)

/* The other float64 unary ops without parameters, by the ref kernels'
 * formulas. */
#define UNARY64_TILE(name, EXPR)                                                                   \
    SIMD_TARGET static void SIMD_NAME(unary64_##name)(const double *xs, double *ys, int64_t n)     \
    {                                                                                              \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                        \
        {                                                                                          \
            double x = xs[i];                                                                      \
            ys[i] = EXPR;                                                                          \
        }                                                                                          \
    }

UNARY64_TILE(relu, x < 0 ? 0.0 : x)
UNARY64_TILE(tanh, tanh(x))
UNARY64_TILE(erf, erf(x))
UNARY64_TILE(abs, fabs(x))
UNARY64_TILE(neg, -x)

/* y = x * s + t with s and t patterns as in binary_vp (BatchNormalization). */
SIMD_TARGET static void SIMD_NAME(affine_vp)(const float *xs, const float *s, const float *t,
                                             int period, float *ys, int64_t n)
{
    int64_t i = 0;
    if (period == SIMD_W) {
        vf vs = vf_load(s), vt = vf_load(t);
        for (; i + SIMD_W <= n; i += SIMD_W)
            vf_store(ys + i, vf_fmadd(vf_load(xs + i), vs, vt));
        if (i < n) {
            int r = (int)(n - i);
            vf_store_n(ys + i, vf_fmadd(vf_load_n(xs + i, r), vs, vt), r);
        }
        return;
    }
    for (; i < n; i += period)
        for (int j = 0; j < period; j += SIMD_W)
            vf_store_lanes(ys + i + j,
                           vf_fmadd(vf_load_lanes(xs + i + j, j, period),
                                    vf_load_lanes(s + j, j, period),
                                    vf_load_lanes(t + j, j, period)),
                           j, period);
}

/* One row of LSTMCell: gates [4H] (i, o, f, g pre-activations), c_prev
 * [H] or NULL (zero) -> h [H], c [H], the gates read once. */
#define LSTM_CELL_LANES(j, LOAD, STORE)                                                            \
    do {                                                                                           \
        vf i_ = SIMD_NAME(v_sigmoid)(LOAD(g + (j)));                                               \
        vf o_ = SIMD_NAME(v_sigmoid)(LOAD(g + H + (j)));                                           \
        vf c_ = vf_mul(i_, SIMD_NAME(v_tanh)(LOAD(g + 3 * H + (j))));                              \
        if (cp)                                                                                    \
            c_ = vf_add(vf_mul(SIMD_NAME(v_sigmoid)(LOAD(g + 2 * H + (j))), LOAD(cp + (j))), c_);  \
        STORE(c + (j), c_);                                                                        \
        STORE(h + (j), vf_mul(o_, SIMD_NAME(v_tanh)(c_)));                                         \
    } while (0)
SIMD_TARGET static void SIMD_NAME(lstm_cell)(const float *g, const float *cp, float *h, float *c,
                                             int64_t H)
{
    int64_t j = 0;
#define LOAD_FULL(p) vf_load(p)
#define STORE_FULL(p, v) vf_store(p, v)
    for (; j + SIMD_W <= H; j += SIMD_W)
        LSTM_CELL_LANES(j, LOAD_FULL, STORE_FULL);
    if (j < H) {
        int r = (int)(H - j);
#define LOAD_TAIL(p) vf_load_n(p, r)
#define STORE_TAIL(p, v) vf_store_n(p, v, r)
        LSTM_CELL_LANES(j, LOAD_TAIL, STORE_TAIL);
    }
#undef LOAD_FULL
#undef STORE_FULL
#undef LOAD_TAIL
#undef STORE_TAIL
}
#undef LSTM_CELL_LANES

/* Softmax (log_out: LogSoftmax) of one contiguous row of n floats: the
 * max, the exponentials' sum (kept in y on the way for Softmax), then the
 * scaling. A partial last vector runs on libm. */
SIMD_TARGET static void SIMD_NAME(softmax_row)(const float *x, float *y, int64_t n, bool log_out)
{
    int64_t nv = n / SIMD_W * SIMD_W;
    float max = -INFINITY;
    if (nv) {
        vf m = vf_load(x);
        for (int64_t j = SIMD_W; j < nv; j += SIMD_W)
            m = vf_max(vf_load(x + j), m);
        float lanes[SIMD_W];
        vf_store(lanes, m);
        for (int l = 0; l < SIMD_W; l++)
            max = lanes[l] > max ? lanes[l] : max;
    }
    for (int64_t j = nv; j < n; j++)
        max = x[j] > max ? x[j] : max;
    vf vmax = vf_set1(max), acc = vf_zero();
    for (int64_t j = 0; j < nv; j += SIMD_W) {
        vf e = SIMD_NAME(v_exp)(vf_sub(vf_load(x + j), vmax));
        if (!log_out)
            vf_store(y + j, e);
        acc = vf_add(acc, e);
    }
    float lanes[SIMD_W];
    vf_store(lanes, acc);
    float sum = 0.0f;
    for (int l = 0; l < SIMD_W; l++)
        sum += lanes[l];
    for (int64_t j = nv; j < n; j++) {
        float e = expf(x[j] - max);
        if (!log_out)
            y[j] = e;
        sum += e;
    }
    if (log_out) {
        vf shift = vf_set1(max + logf(sum));
        for (int64_t j = 0; j < nv; j += SIMD_W)
            vf_store(y + j, vf_sub(vf_load(x + j), shift));
        for (int64_t j = nv; j < n; j++)
            y[j] = x[j] - (max + logf(sum));
        return;
    }
    vf inv = vf_set1(1.0f / sum);
    for (int64_t j = 0; j < nv; j += SIMD_W)
        vf_store(y + j, vf_mul(vf_load(y + j), inv));
    for (int64_t j = nv; j < n; j++)
        y[j] *= 1.0f / sum;
}

SIMD_TARGET static inline float SIMD_NAME(hsum)(vf v)
{
    float lanes[SIMD_W], t = 0.0f;
    vf_store(lanes, v);
    for (int l = 0; l < SIMD_W; l++)
        t += lanes[l];
    return t;
}

/* LayerNormalization of one contiguous row of n floats: the mean, then the
 * mean of the squared deviations (a second pass, as the ref kernel takes,
 * so nothing cancels), then (x - mean) inv scale + bias, scale and bias
 * rows of n. */
SIMD_TARGET static void SIMD_NAME(layernorm_row)(const float *x, const float *scale,
                                                 const float *bias, float *y, int64_t n, float eps)
{
    int64_t nv = n / SIMD_W * SIMD_W;
    vf acc = vf_zero();
    for (int64_t j = 0; j < nv; j += SIMD_W)
        acc = vf_add(vf_load(x + j), acc);
    float sum = SIMD_NAME(hsum)(acc);
    for (int64_t j = nv; j < n; j++)
        sum += x[j];
    float mean = sum / (float)n;
    vf vmean = vf_set1(mean);
    acc = vf_zero();
    for (int64_t j = 0; j < nv; j += SIMD_W) {
        vf d = vf_sub(vf_load(x + j), vmean);
        acc = vf_fmadd(d, d, acc);
    }
    float sq = SIMD_NAME(hsum)(acc);
    for (int64_t j = nv; j < n; j++)
        sq += (x[j] - mean) * (x[j] - mean);
    float inv = 1.0f / sqrtf(sq / (float)n + eps);
    vf vinv = vf_set1(inv);
    for (int64_t j = 0; j < nv; j += SIMD_W) {
        vf xhat = vf_mul(vf_sub(vf_load(x + j), vmean), vinv);
        vf_store(y + j, vf_fmadd(xhat, vf_load(scale + j), vf_load(bias + j)));
    }
    for (int64_t j = nv; j < n; j++)
        y[j] = (x[j] - mean) * inv * scale[j] + bias[j];
}

static const tsr_cpu_eltwise_tiles SIMD_NAME(eltwise_tiles) = {
    .unary = {[TSR_CPU_RELU] = SIMD_NAME(unary_relu),
              [TSR_CPU_LEAKY_RELU] = SIMD_NAME(unary_leaky),
              [TSR_CPU_CLIP] = SIMD_NAME(unary_clip),
              [TSR_CPU_HARD_SIGMOID] = SIMD_NAME(unary_hardsigmoid),
              [TSR_CPU_HARD_SWISH] = SIMD_NAME(unary_hardswish),
              [TSR_CPU_SIGMOID] = SIMD_NAME(unary_sigmoid),
              [TSR_CPU_TANH] = SIMD_NAME(unary_tanh),
              [TSR_CPU_ERF] = SIMD_NAME(unary_erf),
              [TSR_CPU_EXP] = SIMD_NAME(unary_exp),
              [TSR_CPU_ABS] = SIMD_NAME(unary_abs),
              [TSR_CPU_NEG] = SIMD_NAME(unary_neg),
              [TSR_CPU_SILU] = SIMD_NAME(unary_silu)},
    .vv = {[TSR_CPU_ADD] = SIMD_NAME(binary_vv_add),
           [TSR_CPU_SUB] = SIMD_NAME(binary_vv_sub),
           [TSR_CPU_MUL] = SIMD_NAME(binary_vv_mul),
           [TSR_CPU_DIV] = SIMD_NAME(binary_vv_div),
           [TSR_CPU_RSUB] = SIMD_NAME(binary_vv_rsub),
           [TSR_CPU_RDIV] = SIMD_NAME(binary_vv_rdiv),
           [TSR_CPU_SILU_GRAD] = SIMD_NAME(binary_vv_silu_grad)},
    .vp = {[TSR_CPU_ADD] = SIMD_NAME(binary_vp_add),
           [TSR_CPU_SUB] = SIMD_NAME(binary_vp_sub),
           [TSR_CPU_MUL] = SIMD_NAME(binary_vp_mul),
           [TSR_CPU_DIV] = SIMD_NAME(binary_vp_div),
           [TSR_CPU_RSUB] = SIMD_NAME(binary_vp_rsub),
           [TSR_CPU_RDIV] = SIMD_NAME(binary_vp_rdiv)},
    .unary64 = {[TSR_CPU_RELU] = SIMD_NAME(unary64_relu),
                [TSR_CPU_SIGMOID] = SIMD_NAME(unary64_sigmoid),
                [TSR_CPU_TANH] = SIMD_NAME(unary64_tanh),
                [TSR_CPU_ERF] = SIMD_NAME(unary64_erf),
                [TSR_CPU_EXP] = SIMD_NAME(unary64_exp),
                [TSR_CPU_ABS] = SIMD_NAME(unary64_abs),
                [TSR_CPU_NEG] = SIMD_NAME(unary64_neg),
                [TSR_CPU_SILU] = SIMD_NAME(unary64_silu)},
    .vv64 = {[TSR_CPU_ADD] = SIMD_NAME(binary64_vv_add),
             [TSR_CPU_SUB] = SIMD_NAME(binary64_vv_sub),
             [TSR_CPU_MUL] = SIMD_NAME(binary64_vv_mul),
             [TSR_CPU_DIV] = SIMD_NAME(binary64_vv_div),
             [TSR_CPU_RSUB] = SIMD_NAME(binary64_vv_rsub),
             [TSR_CPU_RDIV] = SIMD_NAME(binary64_vv_rdiv),
             [TSR_CPU_SILU_GRAD] = SIMD_NAME(binary64_vv_silu_grad)},
    .vs64 = {[TSR_CPU_ADD] = SIMD_NAME(binary64_vs_add),
             [TSR_CPU_SUB] = SIMD_NAME(binary64_vs_sub),
             [TSR_CPU_MUL] = SIMD_NAME(binary64_vs_mul),
             [TSR_CPU_DIV] = SIMD_NAME(binary64_vs_div),
             [TSR_CPU_RSUB] = SIMD_NAME(binary64_vs_rsub),
             [TSR_CPU_RDIV] = SIMD_NAME(binary64_vs_rdiv)},
    .affine = SIMD_NAME(affine_vp),
    .lstm_cell = SIMD_NAME(lstm_cell),
    .softmax_row = SIMD_NAME(softmax_row),
    .layernorm_row = SIMD_NAME(layernorm_row),
};

#undef UNARY_TILE
#undef BINARY_TILES
#undef UNARY64_TILE
#undef UNARY64_EXP_TILE
#undef EXP64_RANGE
#undef BINARY64_TILES

/* Pooling tiles, written once in the vector layer of simd.h and included
 * by kernels_pool.c once per ISA level. Data is a plane of pixels of `b`
 * lanes (a channel block of nChw8c/nChw16c), and the vectors run across
 * the lanes, so every window tap is one vector load per SIMD_W lanes; a
 * plain plane (b = 1) has its vectors along W instead. b is a
 * compile-time constant in each instance, so the lane loops unroll and the
 * accumulators stay in registers.
 * No include guard: included once per level. */
#include "backends/cpu/simd.h"

#define POOL_MAXV (16 / SIMD_W)

/* The windowed pools are separable: a window's max or sum is that over
 * its columns of the max or sum over its rows. One output row is worked
 * out in two passes through a row buffer t on the stack: t gets, column by
 * column, the max or sum over the window's rows (contiguous, b floats per
 * column, vectors along the row whatever the layout), with the padding
 * columns set to the neutral value (-inf or 0); then each output takes the
 * max or sum of its window's columns of t, whose padding needs no tests.
 * A window of kh x kw taps costs kh + kw vector operations instead of
 * kh x kw. t holds the columns of `chunk` outputs and `seg` taps along W
 * at a time (prepare sizes both to POOL_ROW_FLOATS); wider windows add
 * their segments into y, which keeps the sums unscaled until the last.
 * Max ignores nothing: a NaN anywhere in the window makes the output NaN
 * (vf_max_nan). Sums run in a different order from the reference's, so
 * averages agree to rounding; maxima agree exactly. */

/* t[0, len) pixels (b floats each) of padded columns from input column
 * col0 on: the max or sum over nrows rows (row_step floats apart, from
 * rows) where the column lies inside the input, the neutral value
 * elsewhere. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(pool_fill)(float *t, const float *rows, int64_t row_step, int64_t nrows, int64_t col0,
                     int64_t len, int64_t iw, const bool is_max, const int b)
{
    const float neutral = is_max ? -INFINITY : 0.0f;
    int64_t a = col0 < 0 ? -col0 : 0, e = iw - col0;
    a = a < len ? a : len;
    e = e < a ? a : e > len ? len : e;
    for (int64_t i = 0; i < a * b; i++)
        t[i] = neutral;
    for (int64_t i = e * b; i < len * b; i++)
        t[i] = neutral;
    const float *src = rows + (col0 + a) * b;
    float *dst = t + a * b;
    const int64_t n = (e - a) * b;
    int64_t i = 0;
    if (nrows == 0) {
        for (; i < n; i++)
            dst[i] = neutral;
        return;
    }
    for (; i + SIMD_W <= n; i += SIMD_W) {
        vf acc = vf_load(src + i);
        for (int64_t r = 1; r < nrows; r++) {
            vf v = vf_load(src + r * row_step + i);
            acc = is_max ? vf_max_nan(v, acc) : vf_add(acc, v);
        }
        vf_store(dst + i, acc);
    }
    if (i < n) {
        const int rest = (int)(n - i);
        vf acc = vf_load_n(src + i, rest);
        for (int64_t r = 1; r < nrows; r++) {
            vf v = vf_load_n(src + r * row_step + i, rest);
            acc = is_max ? vf_max_nan(v, acc) : vf_add(acc, v);
        }
        vf_store_n(dst + i, acc, rest);
    }
}

/* Outputs [o0, o0 + n) of a plain row at stride 1 or 2 (`s`, a constant)
 * from t, taps [0, taps) of the segment, SIMD_W outputs per vector: tap k
 * of output o is t[(o - o0) * s + k * dw], so every tap is one vector load
 * (of SIMD_W neighbours, or of the even ones of 2 SIMD_W). t extends
 * 2 SIMD_W past the last tap, so loads never leave it; the stores of the
 * last vector are masked. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(pool_cols_plain)(const tsr_cpu_pool_geom *g, const float *t, float *y, int64_t o0,
                           int64_t n, int64_t taps, bool first, bool last, float hinv,
                           const bool is_max, const int s)
{
    const int64_t dw = g->dw;
    for (int64_t i = 0; i < n; i += SIMD_W) {
        const float *p = t + i * s;
        const int rest = n - i < SIMD_W ? (int)(n - i) : SIMD_W;
        vf acc = first ? (s == 1 ? vf_load(p) : vf_load_even(p)) : vf_load_n(y + i, rest);
        for (int64_t k = first ? 1 : 0; k < taps; k++) {
            vf v = s == 1 ? vf_load(p + k * dw) : vf_load_even(p + k * dw);
            acc = is_max ? vf_max_nan(v, acc) : vf_add(acc, v);
        }
        if (last && !is_max)
            acc = vf_mul(acc, vf_mul(vf_set1(hinv), vf_load_n(g->winv + o0 + i, rest)));
        if (rest == SIMD_W)
            vf_store(y + i, acc);
        else
            vf_store_n(y + i, acc, rest);
    }
}

/* The same for b lanes per column (one vector per SIMD_W lanes; on SVE
 * the last one predicated to the block), or one float per column where a
 * plain row has a stride of 3 or more. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(pool_cols_lanes)(const tsr_cpu_pool_geom *g, const float *t, float *y, int64_t o0,
                           int64_t n, int64_t taps, bool first, bool last, float hinv,
                           const bool is_max, const int b)
{
    const int64_t step = g->sw * b, tap = g->dw * b;
    for (int64_t i = 0; i < n; i++) {
        const float *p = t + i * step;
        float *o = y + i * b;
        const float scale = hinv * g->winv[o0 + i];
        if (b == 1 && SIMD_W > 1) {
            float acc = first ? p[0] : o[0];
            for (int64_t k = first ? 1 : 0; k < taps; k++) {
                float v = p[k * tap];
                acc = is_max ? (acc != acc || acc > v ? acc : v) : acc + v;
            }
            o[0] = last && !is_max ? acc * scale : acc;
            continue;
        }
        for (int j = 0; j < b; j += SIMD_W) {
            vf acc = first ? vf_load_lanes(p + j, j, b) : vf_load_lanes(o + j, j, b);
            for (int64_t k = first ? 1 : 0; k < taps; k++) {
                vf v = vf_load_lanes(p + k * tap + j, j, b);
                acc = is_max ? vf_max_nan(v, acc) : vf_add(acc, v);
            }
            vf_store_lanes(o + j, last && !is_max ? vf_mul(acc, vf_set1(scale)) : acc, j, b);
        }
    }
}

/* One output row `oh` of a max or average pool; x holds the plane from
 * row x_row0 on (a band of it in a depth-first stack). */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(pool_row)(const tsr_cpu_pool_geom *g, const float *x, int64_t x_row0, float *y,
                    int64_t oh, const bool is_max, const int b)
{
    float t[POOL_ROW_FLOATS] __attribute__((aligned(64)));
    const int64_t pitch = g->iw * b, nrows = g->hhi[oh] - g->hlo[oh];
    const float *rows = x + (oh * g->sh - g->ph + g->hlo[oh] * g->dh - x_row0) * pitch;
    const float hinv = g->hinv[oh];
    for (int64_t o0 = 0; o0 < g->ow; o0 += g->chunk) {
        const int64_t n = g->ow - o0 < g->chunk ? g->ow - o0 : g->chunk;
        for (int64_t k0 = 0; k0 < g->kw; k0 += g->seg) {
            const int64_t taps = g->kw - k0 < g->seg ? g->kw - k0 : g->seg;
            const bool first = k0 == 0, last = k0 + taps == g->kw;
            const int64_t col0 = o0 * g->sw + k0 * g->dw - g->pw;
            const int64_t len =
                (n - 1) * g->sw + (taps - 1) * g->dw + 1 + (b == 1 ? 2 * SIMD_W : 0);
            /* Three rows and three taps (3x3 windows inside the input)
             * with the counts constant, so that their loops unroll. */
            if (nrows == 3)
                SIMD_NAME(pool_fill)(t, rows, g->dh * pitch, 3, col0, len, g->iw, is_max, b);
            else
                SIMD_NAME(pool_fill)(t, rows, g->dh * pitch, nrows, col0, len, g->iw, is_max, b);
            float *yo = y + o0 * b;
            if (b > 1 || g->sw > 2)
                SIMD_NAME(pool_cols_lanes)(g, t, yo, o0, n, taps, first, last, hinv, is_max, b);
            else if (g->sw == 1 && taps == 3)
                SIMD_NAME(pool_cols_plain)(g, t, yo, o0, n, 3, first, last, hinv, is_max, 1);
            else if (g->sw == 1)
                SIMD_NAME(pool_cols_plain)(g, t, yo, o0, n, taps, first, last, hinv, is_max, 1);
            else
                SIMD_NAME(pool_cols_plain)(g, t, yo, o0, n, taps, first, last, hinv, is_max, 2);
        }
    }
}

#if TSR_SIMD_LEVEL == 4
/* One step of an SVE block walk: accumulator `acc` of the block's lanes
 * under `pg` (SVE vectors are sizeless, so a block's up to 4 vectors are
 * named rather than an array). Max propagates NaN (FMAX). */
#define POOL_SVE_ACC(acc, pg, src)                                                                 \
    do {                                                                                           \
        vf v_ = svld1_f32(pg, src);                                                                \
        acc = is_max ? svmax_f32_m(pg, acc, v_) : svadd_f32_m(pg, acc, v_);                        \
    } while (0)
/* Sum or max of `pixels` pixels of b lanes each into out[0..b): the b
 * lanes in at most 4 vectors (16 lanes over SVE's 4-lane minimum), each
 * under its svwhilelt predicate. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(reduce_pixels)(const float *x, int64_t pixels, float *out, const bool is_max, const int b)
{
    const int w = SIMD_W;
    const svbool_t p0 = svwhilelt_b32(0, b), p1 = svwhilelt_b32(w, b);
    const svbool_t p2 = svwhilelt_b32(2 * w, b), p3 = svwhilelt_b32(3 * w, b);
    const vf init = vf_set1(is_max ? -INFINITY : 0.0f);
    vf a0 = init, a1 = init, a2 = init, a3 = init;
    for (int64_t p = 0; p < pixels; p++) {
        const float *px = x + p * b;
        POOL_SVE_ACC(a0, p0, px);
        if (b > w)
            POOL_SVE_ACC(a1, p1, px + w);
        if (b > 2 * w) {
            POOL_SVE_ACC(a2, p2, px + 2 * w);
            POOL_SVE_ACC(a3, p3, px + 3 * w);
        }
    }
    svst1_f32(p0, out, a0);
    svst1_f32(p1, out + w, a1);
    svst1_f32(p2, out + 2 * w, a2);
    svst1_f32(p3, out + 3 * w, a3);
}
#undef POOL_SVE_ACC
#else
/* Sum or max of `pixels` pixels of b lanes each into out[0..b), with four
 * accumulators per lane vector to hide the add latency. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(reduce_pixels)(const float *x, int64_t pixels, float *out, const bool is_max, const int b)
{
    const int nv = b / SIMD_W;
    vf acc[4][POOL_MAXV];
    vm nan[POOL_MAXV];
    for (int j = 0; j < nv; j++) {
        for (int u = 0; u < 4; u++)
            acc[u][j] = is_max ? vf_set1(-INFINITY) : vf_zero();
        nan[j] = vm_none();
    }
    int64_t p = 0;
    for (; p + 4 <= pixels; p += 4)
        for (int u = 0; u < 4; u++)
            for (int j = 0; j < nv; j++) {
                vf v = vf_load(x + (p + u) * b + j * SIMD_W);
                if (is_max) {
                    acc[u][j] = vf_max(acc[u][j], v);
                    nan[j] = vm_or(nan[j], vm_nan(v));
                } else {
                    acc[u][j] = vf_add(acc[u][j], v);
                }
            }
    for (; p < pixels; p++)
        for (int j = 0; j < nv; j++) {
            vf v = vf_load(x + p * b + j * SIMD_W);
            if (is_max) {
                acc[0][j] = vf_max(acc[0][j], v);
                nan[j] = vm_or(nan[j], vm_nan(v));
            } else {
                acc[0][j] = vf_add(acc[0][j], v);
            }
        }
    for (int j = 0; j < nv; j++) {
        vf r;
        if (is_max) {
            r = vf_max(vf_max(acc[0][j], acc[1][j]), vf_max(acc[2][j], acc[3][j]));
            r = vf_select(nan[j], vf_set1(NAN), r);
        } else {
            r = vf_add(vf_add(acc[0][j], acc[1][j]), vf_add(acc[2][j], acc[3][j]));
        }
        vf_store(out + j * SIMD_W, r);
    }
}

#endif

/* Sum or max of n contiguous floats (a plain plane): pixels of SIMD_W
 * lanes, then across the lanes and the tail in scalar code. */
SIMD_TARGET static float SIMD_NAME(reduce_plain)(const float *x, int64_t n, bool is_max)
{
    float lanes[SIMD_W];
    int64_t body = n / SIMD_W;
    if (is_max)
        SIMD_NAME(reduce_pixels)(x, body, lanes, true, SIMD_W);
    else
        SIMD_NAME(reduce_pixels)(x, body, lanes, false, SIMD_W);
    float r = is_max ? -INFINITY : 0.0f;
    for (int64_t i = 0; i < SIMD_W + n - body * SIMD_W; i++) {
        float v = i < SIMD_W ? lanes[i] : x[body * SIMD_W + i - SIMD_W];
        if (!is_max)
            r += v;
        else if (v > r || v != v || r != r)
            r = r != r ? r : v;
    }
    return r;
}

/* MaxPoolGrad on one plane (dx zeroed here): each output's dy goes to its
 * window's maximum as tsr_window_max picks it, the first on ties and the
 * first NaN, so results match the reference exactly. Per lane, the
 * position of the best tap so far is kept as a float (exact below 2^24
 * pixels, which supports checks), then the b adds scatter. */
#if TSR_SIMD_LEVEL == 4
/* The best tap so far and its position for the block's lanes under pg:
 * v > best, or v the first NaN (best not NaN yet). */
#define GRAD_SVE_STEP(best, at, pg, src)                                                           \
    do {                                                                                           \
        vf v_ = svld1_f32(pg, src);                                                                \
        vf ok_ = vf_select(vm_nan(best), vf_zero(), vf_set1(1.0f));                                \
        vf nan_new_ = vf_select(vm_nan(v_), ok_, vf_zero());                                       \
        vm take_ = vm_or(vm_lt(best, v_), vm_lt(vf_zero(), nan_new_));                             \
        best = vf_select(take_, v_, best);                                                         \
        at = vf_select(take_, vpos, at);                                                           \
    } while (0)
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(max_grad_plane)(const tsr_cpu_pool_geom *g, const float *x, const float *dy, float *dx,
                          const int b)
{
    const int w = SIMD_W;
    const svbool_t p0 = svwhilelt_b32(0, b), p1 = svwhilelt_b32(w, b);
    const svbool_t p2 = svwhilelt_b32(2 * w, b), p3 = svwhilelt_b32(3 * w, b);
    memset(dx, 0, (size_t)(g->ih * g->iw * b) * sizeof(float));
    for (int64_t oh = 0; oh < g->oh; oh++) {
        int64_t h0 = oh * g->sh - g->ph, hlo = g->hlo[oh], hhi = g->hhi[oh];
        for (int64_t ow = 0; ow < g->ow; ow++) {
            int64_t w0 = ow * g->sw - g->pw, wlo = g->wlo[ow], whi = g->whi[ow];
            if (hlo >= hhi || wlo >= whi)
                continue;
            vf first = vf_set1((float)((h0 + hlo * g->dh) * g->iw + w0 + wlo * g->dw));
            vf b0 = vf_set1(-INFINITY), b1 = b0, b2 = b0, b3 = b0;
            vf at0 = first, at1 = first, at2 = first, at3 = first;
            for (int64_t kh = hlo; kh < hhi; kh++) {
                int64_t row = (h0 + kh * g->dh) * g->iw;
                for (int64_t kw = wlo; kw < whi; kw++) {
                    int64_t pos = row + w0 + kw * g->dw;
                    vf vpos = vf_set1((float)pos);
                    const float *px = x + pos * b;
                    GRAD_SVE_STEP(b0, at0, p0, px);
                    if (b > w)
                        GRAD_SVE_STEP(b1, at1, p1, px + w);
                    if (b > 2 * w) {
                        GRAD_SVE_STEP(b2, at2, p2, px + 2 * w);
                        GRAD_SVE_STEP(b3, at3, p3, px + 3 * w);
                    }
                }
            }
            float where[16];
            svst1_f32(p0, where, at0);
            svst1_f32(p1, where + w, at1);
            svst1_f32(p2, where + 2 * w, at2);
            svst1_f32(p3, where + 3 * w, at3);
            const float *gy = dy + (oh * g->ow + ow) * b;
            for (int l = 0; l < b; l++)
                dx[(int64_t)where[l] * b + l] += gy[l];
        }
    }
}
#undef GRAD_SVE_STEP
#else
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(max_grad_plane)(const tsr_cpu_pool_geom *g, const float *x, const float *dy, float *dx,
                          const int b)
{
    const int nv = b / SIMD_W;
    memset(dx, 0, (size_t)(g->ih * g->iw * b) * sizeof(float));
    for (int64_t oh = 0; oh < g->oh; oh++) {
        int64_t h0 = oh * g->sh - g->ph, hlo = g->hlo[oh], hhi = g->hhi[oh];
        for (int64_t ow = 0; ow < g->ow; ow++) {
            int64_t w0 = ow * g->sw - g->pw, wlo = g->wlo[ow], whi = g->whi[ow];
            if (hlo >= hhi || wlo >= whi)
                continue;
            vf best[POOL_MAXV], at[POOL_MAXV];
            vf first = vf_set1((float)((h0 + hlo * g->dh) * g->iw + w0 + wlo * g->dw));
            for (int j = 0; j < nv; j++) {
                best[j] = vf_set1(-INFINITY);
                at[j] = first;
            }
            for (int64_t kh = hlo; kh < hhi; kh++) {
                int64_t row = (h0 + kh * g->dh) * g->iw;
                for (int64_t kw = wlo; kw < whi; kw++) {
                    int64_t pos = row + w0 + kw * g->dw;
                    vf vpos = vf_set1((float)pos);
                    for (int j = 0; j < nv; j++) {
                        vf v = vf_load(x + pos * b + j * SIMD_W);
                        /* v > best, or v the first NaN (best not NaN yet) */
                        vf best_ok = vf_select(vm_nan(best[j]), vf_zero(), vf_set1(1.0f));
                        vf nan_new = vf_select(vm_nan(v), best_ok, vf_zero());
                        vm take = vm_or(vm_lt(best[j], v), vm_lt(vf_zero(), nan_new));
                        best[j] = vf_select(take, v, best[j]);
                        at[j] = vf_select(take, vpos, at[j]);
                    }
                }
            }
            float where[16];
            for (int j = 0; j < nv; j++)
                vf_store(where + j * SIMD_W, at[j]);
            const float *gy = dy + (oh * g->ow + ow) * b;
            for (int l = 0; l < b; l++)
                dx[(int64_t)where[l] * b + l] += gy[l];
        }
    }
}

#endif

/* The same on a plain plane, one pixel at a time. */
static void SIMD_NAME(max_grad_plain)(const tsr_cpu_pool_geom *g, const float *x, const float *dy,
                                      float *dx)
{
    memset(dx, 0, (size_t)(g->ih * g->iw) * sizeof(float));
    for (int64_t oh = 0; oh < g->oh; oh++) {
        int64_t h0 = oh * g->sh - g->ph;
        for (int64_t ow = 0; ow < g->ow; ow++) {
            int64_t w0 = ow * g->sw - g->pw, at = -1;
            float best = -INFINITY;
            for (int64_t kh = g->hlo[oh]; kh < g->hhi[oh]; kh++)
                for (int64_t kw = g->wlo[ow]; kw < g->whi[ow]; kw++) {
                    int64_t pos = (h0 + kh * g->dh) * g->iw + w0 + kw * g->dw;
                    float v = x[pos];
                    if (v > best || (v != v && best == best) || at < 0) {
                        best = v;
                        at = pos;
                    }
                }
            if (at >= 0)
                dx[at] += dy[oh * g->ow + ow];
        }
    }
}

/* The instances: every (op, block) whose block is a multiple of SIMD_W,
 * or, on SVE, every one. */
#define POOL_INSTANCE(op, is_max, b)                                                               \
    SIMD_TARGET static void SIMD_NAME(op##_b##b)(const tsr_cpu_pool_geom *g, const float *x,       \
                                                 int64_t x_row0, float *y, int64_t oh)             \
    {                                                                                              \
        SIMD_NAME(pool_row)(g, x, x_row0, y, oh, is_max, b);                                       \
    }
#define GLOBAL_INSTANCE(op, is_max, b)                                                             \
    SIMD_TARGET static void SIMD_NAME(op##_b##b)(const float *x, int64_t pixels, float *out)       \
    {                                                                                              \
        SIMD_NAME(reduce_pixels)(x, pixels, out, is_max, b);                                       \
    }

#define GRAD_INSTANCE(b)                                                                           \
    SIMD_TARGET static void SIMD_NAME(max_grad_b##b)(const tsr_cpu_pool_geom *g, const float *x,   \
                                                     const float *dy, float *dx)                   \
    {                                                                                              \
        SIMD_NAME(max_grad_plane)(g, x, dy, dx, b);                                                \
    }

/* SVE covers any block under predicates: all instances. */
#if TSR_SIMD_LEVEL == 4
#define POOL_BLOCK8 1
#elif SIMD_W <= 8
#define POOL_BLOCK8 1
#else
#define POOL_BLOCK8 0
#endif

POOL_INSTANCE(maxpool, true, 16)
POOL_INSTANCE(avgpool, false, 16)
GLOBAL_INSTANCE(gmax, true, 16)
GLOBAL_INSTANCE(gsum, false, 16)
GRAD_INSTANCE(16)
#if POOL_BLOCK8
POOL_INSTANCE(maxpool, true, 8)
POOL_INSTANCE(avgpool, false, 8)
GLOBAL_INSTANCE(gmax, true, 8)
GLOBAL_INSTANCE(gsum, false, 8)
GRAD_INSTANCE(8)
#endif
POOL_INSTANCE(maxpool, true, 1)
POOL_INSTANCE(avgpool, false, 1)

static const tsr_cpu_pool_tiles SIMD_NAME(pool_tiles) = {
    .row = {{
                [2] = SIMD_NAME(avgpool_b16),
#if POOL_BLOCK8
                [1] = SIMD_NAME(avgpool_b8),
#endif
                [0] = SIMD_NAME(avgpool_b1),
            },
            {
                [2] = SIMD_NAME(maxpool_b16),
#if POOL_BLOCK8
                [1] = SIMD_NAME(maxpool_b8),
#endif
                [0] = SIMD_NAME(maxpool_b1),
            }},
    .global = {{
                   [2] = SIMD_NAME(gsum_b16),
#if POOL_BLOCK8
                   [1] = SIMD_NAME(gsum_b8),
#endif
               },
               {
                   [2] = SIMD_NAME(gmax_b16),
#if POOL_BLOCK8
                   [1] = SIMD_NAME(gmax_b8),
#endif
               }},
    .plain = SIMD_NAME(reduce_plain),
    .max_grad =
        {
            [2] = SIMD_NAME(max_grad_b16),
#if POOL_BLOCK8
            [1] = SIMD_NAME(max_grad_b8),
#endif
            [0] = SIMD_NAME(max_grad_plain),
        },
};

#undef GRAD_INSTANCE
#undef POOL_INSTANCE
#undef GLOBAL_INSTANCE
#undef POOL_MAXV
#undef POOL_BLOCK8

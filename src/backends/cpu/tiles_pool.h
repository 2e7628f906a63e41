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

/* One output row `oh` of a max or average pool; x holds the plane from
 * row x_row0 on (a band of it in a depth-first stack). Max ignores nothing:
 * a NaN anywhere in the window makes the output NaN (tracked in a mask,
 * since vf_max drops NaN held in its first operand). */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(pool_row)(const tsr_cpu_pool_geom *g, const float *x, int64_t x_row0, float *y,
                    int64_t oh, const bool is_max, const int b)
{
    const int nv = b / SIMD_W;
    int64_t h0 = oh * g->sh - g->ph;
    int64_t hlo = g->hlo[oh], hhi = g->hhi[oh];
    for (int64_t ow = 0; ow < g->ow; ow++) {
        int64_t w0 = ow * g->sw - g->pw;
        int64_t wlo = g->wlo[ow], whi = g->whi[ow];
        vf acc[POOL_MAXV];
        vm nan[POOL_MAXV];
        for (int j = 0; j < nv; j++) {
            acc[j] = is_max ? vf_set1(-INFINITY) : vf_zero();
            nan[j] = vm_none();
        }
        for (int64_t kh = hlo; kh < hhi; kh++) {
            const float *row = x + (h0 + kh * g->dh - x_row0) * g->iw * b;
            for (int64_t kw = wlo; kw < whi; kw++) {
                const float *p = row + (w0 + kw * g->dw) * b;
                for (int j = 0; j < nv; j++) {
                    vf v = vf_load(p + j * SIMD_W);
                    if (is_max) {
                        acc[j] = vf_max(acc[j], v);
                        nan[j] = vm_or(nan[j], vm_nan(v));
                    } else {
                        acc[j] = vf_add(acc[j], v);
                    }
                }
            }
        }
        float *o = y + ow * b;
        if (is_max) {
            for (int j = 0; j < nv; j++)
                vf_store(o + j * SIMD_W, vf_select(nan[j], vf_set1(NAN), acc[j]));
        } else {
            vf count = vf_set1(g->hcount[oh] * g->wcount[ow]);
            for (int j = 0; j < nv; j++)
                vf_store(o + j * SIMD_W, vf_div(acc[j], count));
        }
    }
}

/* SIMD_W output columns from ow on of a plain row (stride 1), whose valid
 * taps are alike, as one vector per tap: SIMD_W neighbouring inputs. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(pool_cols_plain)(const tsr_cpu_pool_geom *g, const float *x, float *y, int64_t oh,
                           int64_t h0, int64_t ow, const bool is_max)
{
    int64_t w0 = ow - g->pw, wlo = g->wlo[ow], whi = g->whi[ow];
    vf acc = is_max ? vf_set1(-INFINITY) : vf_zero();
    vm nan = vm_none();
    for (int64_t kh = g->hlo[oh]; kh < g->hhi[oh]; kh++) {
        const float *row = x + (h0 + kh * g->dh) * g->iw + w0;
        for (int64_t kw = wlo; kw < whi; kw++) {
            vf v = vf_load(row + kw * g->dw);
            if (is_max) {
                acc = vf_max(acc, v);
                nan = vm_or(nan, vm_nan(v));
            } else {
                acc = vf_add(acc, v);
            }
        }
    }
    if (is_max)
        vf_store(y + ow, vf_select(nan, vf_set1(NAN), acc));
    else
        vf_store(y + ow, vf_div(acc, vf_mul(vf_set1(g->hcount[oh]), vf_load(g->wcount + ow))));
}

/* One output row `oh` of a max or average pool on a plain plane, the
 * vectors along W: at stride 1, a run of columns with alike taps (wrun)
 * at least SIMD_W long goes SIMD_W columns at a time, its last vector
 * overlapping the one before where the run is not a multiple of SIMD_W;
 * the other columns (short runs at the borders, larger strides) go one by
 * one. The same sums and maxima in the same order as pool_row with one
 * lane, so the results agree bit for bit. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(pool_row_plain)(const tsr_cpu_pool_geom *g, const float *x, int64_t x_row0, float *y,
                          int64_t oh, const bool is_max)
{
    int64_t h0 = oh * g->sh - g->ph - x_row0;
    int64_t hlo = g->hlo[oh], hhi = g->hhi[oh];
    for (int64_t ow = 0; ow < g->ow;) {
        int64_t end = g->wrun[ow];
        if (g->sw == 1 && end - ow >= SIMD_W) {
            for (; ow + SIMD_W <= end; ow += SIMD_W)
                SIMD_NAME(pool_cols_plain)(g, x, y, oh, h0, ow, is_max);
            if (ow < end)
                SIMD_NAME(pool_cols_plain)(g, x, y, oh, h0, end - SIMD_W, is_max);
            ow = end;
            continue;
        }
        for (; ow < end; ow++) {
            int64_t w0 = ow * g->sw - g->pw;
            float acc = is_max ? -INFINITY : 0.0f;
            bool nan = false;
            for (int64_t kh = hlo; kh < hhi; kh++) {
                const float *row = x + (h0 + kh * g->dh) * g->iw + w0;
                for (int64_t kw = g->wlo[ow]; kw < g->whi[ow]; kw++) {
                    float v = row[kw * g->dw];
                    if (is_max) {
                        acc = acc > v ? acc : v;
                        nan = nan || v != v;
                    } else {
                        acc += v;
                    }
                }
            }
            y[ow] = is_max ? (nan ? NAN : acc) : acc / (g->hcount[oh] * g->wcount[ow]);
        }
    }
}

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

/* The instances: every (op, block) whose block is a multiple of SIMD_W. */
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

POOL_INSTANCE(maxpool, true, 16)
POOL_INSTANCE(avgpool, false, 16)
GLOBAL_INSTANCE(gmax, true, 16)
GLOBAL_INSTANCE(gsum, false, 16)
GRAD_INSTANCE(16)
#if SIMD_W <= 8
POOL_INSTANCE(maxpool, true, 8)
POOL_INSTANCE(avgpool, false, 8)
GLOBAL_INSTANCE(gmax, true, 8)
GLOBAL_INSTANCE(gsum, false, 8)
GRAD_INSTANCE(8)
#endif
SIMD_TARGET static void SIMD_NAME(maxpool_plain)(const tsr_cpu_pool_geom *g, const float *x,
                                                 int64_t x_row0, float *y, int64_t oh)
{
    SIMD_NAME(pool_row_plain)(g, x, x_row0, y, oh, true);
}
SIMD_TARGET static void SIMD_NAME(avgpool_plain)(const tsr_cpu_pool_geom *g, const float *x,
                                                 int64_t x_row0, float *y, int64_t oh)
{
    SIMD_NAME(pool_row_plain)(g, x, x_row0, y, oh, false);
}

static const tsr_cpu_pool_tiles SIMD_NAME(pool_tiles) = {
    .row = {{
                [2] = SIMD_NAME(avgpool_b16),
#if SIMD_W <= 8
                [1] = SIMD_NAME(avgpool_b8),
#endif
                [0] = SIMD_NAME(avgpool_plain),
            },
            {
                [2] = SIMD_NAME(maxpool_b16),
#if SIMD_W <= 8
                [1] = SIMD_NAME(maxpool_b8),
#endif
                [0] = SIMD_NAME(maxpool_plain),
            }},
    .global = {{
                   [2] = SIMD_NAME(gsum_b16),
#if SIMD_W <= 8
                   [1] = SIMD_NAME(gsum_b8),
#endif
               },
               {
                   [2] = SIMD_NAME(gmax_b16),
#if SIMD_W <= 8
                   [1] = SIMD_NAME(gmax_b8),
#endif
               }},
    .plain = SIMD_NAME(reduce_plain),
    .max_grad =
        {
            [2] = SIMD_NAME(max_grad_b16),
#if SIMD_W <= 8
            [1] = SIMD_NAME(max_grad_b8),
#endif
            [0] = SIMD_NAME(max_grad_plain),
        },
};

#undef GRAD_INSTANCE
#undef POOL_INSTANCE
#undef GLOBAL_INSTANCE
#undef POOL_MAXV

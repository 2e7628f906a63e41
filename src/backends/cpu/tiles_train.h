/* Training tiles (BatchNormTrain, BatchNormTrainGrad, ReluGrad, ClipGrad), written
 * once in the vector layer of simd.h and included by kernels_train.c once
 * per ISA level. A plane is one image's channel block of `pixels` pixels
 * of b lanes (nChw8c/nChw16c; vectors across the lanes, b a compile-time
 * constant in each instance) or, plain, one channel's pixels (vectors
 * along them). Sums run in float over TRAIN_CHUNK vectors and are then
 * added into double, so a plane of 10^5 pixels keeps float32's precision.
 * No include guard: included once per level. */
#include "backends/cpu/simd.h"

#define TRAIN_MAXV (16 / SIMD_W)

/* Per lane l: s1[l] += sum of u, s2[l] += sum of u * d over the plane,
 * with d = x - center[l] and u = g (grad) or d: the shifted moments of x,
 * or BatchNormTrainGrad's sums of dY and dY (x - mean). */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(sums_block)(const float *x, const float *g, int64_t pixels, const float *center,
                      double *s1, double *s2, const bool grad, const int b)
{
    const int nv = b / SIMD_W;
    vf k[TRAIN_MAXV];
    for (int j = 0; j < nv; j++)
        k[j] = vf_load(center + j * SIMD_W);
    for (int64_t p0 = 0; p0 < pixels; p0 += TRAIN_CHUNK) {
        int64_t p1 = p0 + TRAIN_CHUNK < pixels ? p0 + TRAIN_CHUNK : pixels;
        vf a1[TRAIN_MAXV], a2[TRAIN_MAXV];
        for (int j = 0; j < nv; j++)
            a1[j] = a2[j] = vf_zero();
        for (int64_t p = p0; p < p1; p++)
            for (int j = 0; j < nv; j++) {
                int64_t at = p * b + j * SIMD_W;
                vf d = vf_sub(vf_load(x + at), k[j]);
                vf u = grad ? vf_load(g + at) : d;
                a1[j] = vf_add(a1[j], u);
                a2[j] = vf_fmadd(u, d, a2[j]);
            }
        float t1[16], t2[16];
        for (int j = 0; j < nv; j++) {
            vf_store(t1 + j * SIMD_W, a1[j]);
            vf_store(t2 + j * SIMD_W, a2[j]);
        }
        for (int l = 0; l < b; l++) {
            s1[l] += t1[l];
            s2[l] += t2[l];
        }
    }
}

/* The same over one plain channel's n values (s1, s2 and center: one each). */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(sums_plain)(const float *x, const float *g, int64_t n, const float *center, double *s1,
                      double *s2, const bool grad)
{
    vf k = vf_set1(*center);
    int64_t i = 0;
    for (; i + SIMD_W <= n;) {
        int64_t end = i + TRAIN_CHUNK * SIMD_W < n ? i + TRAIN_CHUNK * SIMD_W : n;
        vf a1 = vf_zero(), a2 = vf_zero();
        for (; i + SIMD_W <= end; i += SIMD_W) {
            vf d = vf_sub(vf_load(x + i), k);
            vf u = grad ? vf_load(g + i) : d;
            a1 = vf_add(a1, u);
            a2 = vf_fmadd(u, d, a2);
        }
        float t1[SIMD_W], t2[SIMD_W];
        vf_store(t1, a1);
        vf_store(t2, a2);
        for (int l = 0; l < SIMD_W; l++) {
            *s1 += t1[l];
            *s2 += t2[l];
        }
    }
    for (; i < n; i++) {
        double d = (double)x[i] - *center, u = grad ? (double)g[i] : d;
        *s1 += u;
        *s2 += u * d;
    }
}

/* y = x * s + t per lane (BatchNormTrain's normalization). */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(affine_block)(const float *x, int64_t pixels, const float *s, const float *t, float *y,
                        const int b)
{
    const int nv = b / SIMD_W;
    vf vs[TRAIN_MAXV], vt[TRAIN_MAXV];
    for (int j = 0; j < nv; j++) {
        vs[j] = vf_load(s + j * SIMD_W);
        vt[j] = vf_load(t + j * SIMD_W);
    }
    for (int64_t p = 0; p < pixels; p++)
        for (int j = 0; j < nv; j++) {
            int64_t at = p * b + j * SIMD_W;
            vf_store(y + at, vf_fmadd(vf_load(x + at), vs[j], vt[j]));
        }
}

SIMD_TARGET static void SIMD_NAME(affine_plain)(const float *x, int64_t n, const float *s,
                                                const float *t, float *y)
{
    vf vs = vf_set1(*s), vt = vf_set1(*t);
    int64_t i = 0;
    for (; i + SIMD_W <= n; i += SIMD_W)
        vf_store(y + i, vf_fmadd(vf_load(x + i), vs, vt));
    if (i < n) {
        int r = (int)(n - i);
        vf_store_n(y + i, vf_fmadd(vf_load_n(x + i, r), vs, vt), r);
    }
}

/* dx = p dy + q (x - m) + r per lane (BatchNormTrainGrad's dX). */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(apply_block)(const float *dy, const float *x, int64_t pixels, const float *const c[4],
                       float *dx, const int b)
{
    const int nv = b / SIMD_W;
    vf m[TRAIN_MAXV], p[TRAIN_MAXV], q[TRAIN_MAXV], r[TRAIN_MAXV];
    for (int j = 0; j < nv; j++) {
        m[j] = vf_load(c[0] + j * SIMD_W);
        p[j] = vf_load(c[1] + j * SIMD_W);
        q[j] = vf_load(c[2] + j * SIMD_W);
        r[j] = vf_load(c[3] + j * SIMD_W);
    }
    for (int64_t px = 0; px < pixels; px++)
        for (int j = 0; j < nv; j++) {
            int64_t at = px * b + j * SIMD_W;
            vf d = vf_sub(vf_load(x + at), m[j]);
            vf_store(dx + at, vf_fmadd(p[j], vf_load(dy + at), vf_fmadd(q[j], d, r[j])));
        }
}

SIMD_TARGET static void SIMD_NAME(apply_plain)(const float *dy, const float *x, int64_t n,
                                               const float *const c[4], float *dx)
{
    vf m = vf_set1(*c[0]), p = vf_set1(*c[1]), q = vf_set1(*c[2]), r = vf_set1(*c[3]);
    int64_t i = 0;
    for (; i + SIMD_W <= n; i += SIMD_W) {
        vf d = vf_sub(vf_load(x + i), m);
        vf_store(dx + i, vf_fmadd(p, vf_load(dy + i), vf_fmadd(q, d, r)));
    }
    if (i < n) {
        int k = (int)(n - i);
        vf d = vf_sub(vf_load_n(x + i, k), m);
        vf_store_n(dx + i, vf_fmadd(p, vf_load_n(dy + i, k), vf_fmadd(q, d, r)), k);
    }
}

/* dx = y > 0 ? dy : 0 over n floats (zero padded lanes stay zero). */
SIMD_TARGET static void SIMD_NAME(relu_grad)(const float *dy, const float *y, float *dx, int64_t n)
{
    int64_t i = 0;
    for (; i + SIMD_W <= n; i += SIMD_W)
        vf_store(dx + i, vf_select(vm_lt(vf_zero(), vf_load(y + i)), vf_load(dy + i), vf_zero()));
    if (i < n) {
        int r = (int)(n - i);
        vf v = vf_select(vm_lt(vf_zero(), vf_load_n(y + i, r)), vf_load_n(dy + i, r), vf_zero());
        vf_store_n(dx + i, v, r);
    }
}

/* dx = x < lo || x > hi ? 0 : dy over n floats. */
SIMD_TARGET static void SIMD_NAME(clip_grad)(const float *dy, const float *x, float lo, float hi,
                                             float *dx, int64_t n)
{
    vf vlo = vf_set1(lo), vhi = vf_set1(hi);
    int64_t i = 0;
    for (; i + SIMD_W <= n; i += SIMD_W) {
        vf v = vf_load(x + i);
        vf_store(dx + i,
                 vf_select(vm_or(vm_lt(v, vlo), vm_lt(vhi, v)), vf_zero(), vf_load(dy + i)));
    }
    if (i < n) {
        int r = (int)(n - i);
        vf v = vf_load_n(x + i, r);
        vf_store_n(dx + i,
                   vf_select(vm_or(vm_lt(v, vlo), vm_lt(vhi, v)), vf_zero(), vf_load_n(dy + i, r)),
                   r);
    }
}

/* The instances: [0] plain, [1] 8 lanes, [2] 16 lanes, where the ISA's
 * vectors fit the block. */
SIMD_TARGET static void SIMD_NAME(moments_plain)(const float *x, const float *g, int64_t n,
                                                 const float *k, double *s1, double *s2)
{
    SIMD_NAME(sums_plain)(x, g, n, k, s1, s2, false);
}
SIMD_TARGET static void SIMD_NAME(grad_sums_plain)(const float *x, const float *g, int64_t n,
                                                   const float *k, double *s1, double *s2)
{
    SIMD_NAME(sums_plain)(x, g, n, k, s1, s2, true);
}

#define TRAIN_BLOCK_TILES(B)                                                                       \
    SIMD_TARGET static void SIMD_NAME(moments_b##B)(const float *x, const float *g, int64_t n,     \
                                                    const float *k, double *s1, double *s2)        \
    {                                                                                              \
        SIMD_NAME(sums_block)(x, g, n, k, s1, s2, false, B);                                       \
    }                                                                                              \
    SIMD_TARGET static void SIMD_NAME(grad_sums_b##B)(const float *x, const float *g, int64_t n,   \
                                                      const float *k, double *s1, double *s2)      \
    {                                                                                              \
        SIMD_NAME(sums_block)(x, g, n, k, s1, s2, true, B);                                        \
    }                                                                                              \
    SIMD_TARGET static void SIMD_NAME(affine_b##B)(const float *x, int64_t n, const float *s,      \
                                                   const float *t, float *y)                       \
    {                                                                                              \
        SIMD_NAME(affine_block)(x, n, s, t, y, B);                                                 \
    }                                                                                              \
    SIMD_TARGET static void SIMD_NAME(apply_b##B)(const float *dy, const float *x, int64_t n,      \
                                                  const float *const c[4], float *dx)              \
    {                                                                                              \
        SIMD_NAME(apply_block)(dy, x, n, c, dx, B);                                                \
    }

#if SIMD_W <= 8
TRAIN_BLOCK_TILES(8)
#endif
TRAIN_BLOCK_TILES(16)

static const tsr_cpu_train_tiles SIMD_NAME(train_tiles) = {
#if SIMD_W <= 8
    .sums = {{SIMD_NAME(moments_plain), SIMD_NAME(moments_b8), SIMD_NAME(moments_b16)},
             {SIMD_NAME(grad_sums_plain), SIMD_NAME(grad_sums_b8), SIMD_NAME(grad_sums_b16)}},
    .affine = {SIMD_NAME(affine_plain), SIMD_NAME(affine_b8), SIMD_NAME(affine_b16)},
    .apply = {SIMD_NAME(apply_plain), SIMD_NAME(apply_b8), SIMD_NAME(apply_b16)},
#else
    .sums = {{SIMD_NAME(moments_plain), NULL, SIMD_NAME(moments_b16)},
             {SIMD_NAME(grad_sums_plain), NULL, SIMD_NAME(grad_sums_b16)}},
    .affine = {SIMD_NAME(affine_plain), NULL, SIMD_NAME(affine_b16)},
    .apply = {SIMD_NAME(apply_plain), NULL, SIMD_NAME(apply_b16)},
#endif
    .relu_grad = SIMD_NAME(relu_grad),
    .clip_grad = SIMD_NAME(clip_grad),
};

#undef TRAIN_BLOCK_TILES
#undef TRAIN_MAXV

/* Detail-Preserving Pooling tiles, written once in the vector layer of
 * simd.h and included by kernels_dpp.c once per ISA level. Data is a plane
 * of pixels of `b` lanes (a channel block of nChw8c/nChw16c, or b = 1 for
 * plain) and the vectors run across the lanes: each lane is its own
 * channel with its own alpha and lambda, and every window tap is one
 * vector load, log and exp per SIMD_W lanes. The math follows the reference
 * kernels (src/ops/dpp_kernels.h): weights kept in log space and scaled by
 * their largest term, so nothing overflows; here the logs are base 2
 * (log2 and exp2 are cheaper than ln and exp), so t, top and the raw
 * alpha (p->a holds alpha / ln 2) are the reference's divided by ln 2.
 * No include guard: included once per level. */
#include "backends/cpu/simd_math.h"

/* What one window's evaluation leaves for the backward pass. */
typedef struct {
    vf out, wsum, alpha_hat, ysum, top, tilde, count;
} SIMD_NAME(dpp_win);

/* The log2 of each tap's y = d^2 + eps^2 (d = x less tilde, or its
 * positive part) for windows k < nw whose taps start at base and go as
 * dpp_eval's, into ts (SIMD_W floats per tap, in window order), with each
 * window's sum of y and largest log; `checked` takes special values
 * through the log's own test. hl >= 0, so the largest t is hl times the
 * largest log: the taps keep their logs, and t - top is one multiply-add
 * of each. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(dpp_logs)(const tsr_cpu_dpp_geom *g, const float *base, int64_t hlo, int64_t hhi,
                    int64_t wlo, int64_t whi, const vf *tilde, float *ts, vf *ysum, vf *lmax,
                    bool checked, const int nw, const int b)
{
    const int64_t pitch = g->iw * b, next = g->sw * b;
    const vf eps2 = vf_set1(g->eps2);
    for (int k = 0; k < nw; k++) {
        ysum[k] = vf_zero();
        lmax[k] = vf_set1(-INFINITY);
    }
    float *lq = ts;
    for (int64_t kh = hlo; kh < hhi; kh++)
        for (int64_t kw = wlo; kw < whi; kw++)
            for (int k = 0; k < nw; k++, lq += SIMD_W) {
                vf d = vf_sub(vf_load(base + k * next + kh * pitch + kw * b), tilde[k]);
                if (!g->symmetric)
                    d = vf_max(vf_zero(), d);
                vf y = vf_fmadd(d, d, eps2);
                vf l = checked ? SIMD_NAME(v_log2_fast)(y) : SIMD_NAME(v_log2_fast_normal)(y);
                vf_store(lq, l);
                ysum[k] = vf_add(ysum[k], y);
                lmax[k] = vf_max(l, lmax[k]);
            }
}

/* Windows (oh, ow + k * 1), k < nw, of lanes [lane0, lane0 + SIMD_W),
 * whose taps inside the input are alike (true inside the input, where the
 * forward uses nw > 1): x holds the plane from row x_row0 on. ts gets
 * SIMD_W floats per tap in window order; when rhos is not NULL (nw = 1
 * only, for the backward) they end up as each tap's log reward t (shifted
 * by the ratio form's window term) less top, and rhos gets the scaled
 * rewards alike. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(dpp_eval)(const tsr_cpu_dpp_geom *g, const float *x, int64_t x_row0,
                    const tsr_cpu_dpp_params *p, int64_t oh, int64_t ow, int lane0, float *ts,
                    float *rhos, SIMD_NAME(dpp_win) * w, const int nw, const int b)
{
    const int64_t hlo = g->hlo[oh], hhi = g->hhi[oh], wlo = g->wlo[ow], whi = g->whi[ow];
    const int64_t pitch = g->iw * b, next = g->sw * b;
    const float *base =
        x + (oh * g->sh - g->ph - x_row0) * pitch + (ow * g->sw - g->pw) * b + lane0;
    const float count = (float)((hhi - hlo) * (whi - wlo));
    vf tilde[DPP_NW], plain[DPP_NW], ysum[DPP_NW], shift[DPP_NW];
    for (int k = 0; k < nw; k++)
        tilde[k] = plain[k] = shift[k] = vf_zero();
    if (g->full) {
        const float *fb =
            x + (oh * g->sh - g->fph - x_row0) * pitch + (ow * g->sw - g->fpw) * b + lane0;
        for (int64_t i = g->fhlo[oh]; i < g->fhhi[oh]; i++)
            for (int64_t j = g->fwlo[ow]; j < g->fwhi[ow]; j++) {
                vf f = vf_load(p->f + (i * g->fw + j) * b + lane0);
                for (int k = 0; k < nw; k++)
                    tilde[k] = vf_fmadd(f, vf_load(fb + k * next + i * pitch + j * b), tilde[k]);
            }
    } else {
        for (int64_t kh = hlo; kh < hhi; kh++)
            for (int64_t kw = wlo; kw < whi; kw++)
                for (int k = 0; k < nw; k++)
                    plain[k] = vf_add(plain[k], vf_load(base + k * next + kh * pitch + kw * b));
        for (int k = 0; k < nw; k++)
            tilde[k] = vf_mul(plain[k], vf_set1(1.0f / count));
    }
    /* y >= eps^2, a normal number, so only infinite or NaN taps need the
     * special-value path of the log, and they make their window's sum of y
     * infinite or NaN: the taps take the log without the test, and windows
     * whose sums are special take them again with it. */
    const vf hl = vf_load(p->hl + lane0), a = vf_load(p->a + lane0);
    vf lmax[DPP_NW];
    SIMD_NAME(dpp_logs)(g, base, hlo, hhi, wlo, whi, tilde, ts, ysum, lmax, false, nw, b);
#if !VMATH_SPLIT_EXACT
    bool special = false;
    for (int k = 0; k < nw; k++)
        special |= vmath_special(ysum[k]);
    if (special)
        SIMD_NAME(dpp_logs)(g, base, hlo, hhi, wlo, whi, tilde, ts, ysum, lmax, true, nw, b);
#endif
    vf top[DPP_NW], alpha_hat[DPP_NW], rho_sum[DPP_NW], weighted[DPP_NW], minus_off[DPP_NW];
    for (int k = 0; k < nw; k++) {
        if (g->ratio)
            shift[k] = vf_mul(hl, SIMD_NAME(v_log2)(ysum[k]));
        top[k] = vf_max(a, vf_sub(vf_mul(hl, lmax[k]), shift[k]));
        alpha_hat[k] = SIMD_NAME(v_exp2_nonpos)(vf_sub(a, top[k]));
        minus_off[k] = vf_sub(vf_zero(), vf_add(top[k], shift[k]));
        rho_sum[k] = weighted[k] = vf_zero();
    }
    float *lq = ts, *rq = rhos;
    for (int64_t kh = hlo; kh < hhi; kh++)
        for (int64_t kw = wlo; kw < whi; kw++)
            for (int k = 0; k < nw; k++, lq += SIMD_W) {
                vf v = vf_load(base + k * next + kh * pitch + kw * b);
                vf t = vf_fmadd(hl, vf_load(lq), minus_off[k]);
                vf rho = SIMD_NAME(v_exp2_nonpos_fast)(t);
                if (rq) {
                    vf_store(lq, t);
                    vf_store(rq, rho);
                    rq += SIMD_W;
                }
                rho_sum[k] = vf_add(rho_sum[k], rho);
                weighted[k] = vf_fmadd(rho, v, weighted[k]);
                if (g->full)
                    plain[k] = vf_add(plain[k], v);
            }
    for (int k = 0; k < nw; k++) {
        w[k].count = vf_set1(count);
        w[k].wsum = vf_fmadd(alpha_hat[k], w[k].count, rho_sum[k]);
        w[k].out = vf_div(vf_fmadd(alpha_hat[k], plain[k], weighted[k]), w[k].wsum);
        w[k].alpha_hat = alpha_hat[k];
        w[k].ysum = ysum[k];
        w[k].top = top[k];
        w[k].tilde = tilde[k];
    }
}

/* One output row `oh` of the forward; y is that row. Runs of DPP_NW
 * windows with alike taps go interleaved. With `ahead`, each run first
 * prefetches the input rows that the next output row adds at its columns
 * (its window's rows below this one's), so that a plane streamed from
 * memory arrives while this row computes instead of stalling its first
 * loads. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(dpp_row)(const tsr_cpu_dpp_geom *g, const float *x, int64_t x_row0,
                   const tsr_cpu_dpp_params *p, float *y, int64_t oh, float *scratch, bool ahead,
                   const int b)
{
    SIMD_NAME(dpp_win) w[DPP_NW];
    const int64_t pitch = g->iw * b;
    int64_t next_lo = (oh + 1) * g->sh - g->ph + (g->kh > g->sh ? g->kh - g->sh : 0);
    int64_t next_hi = (oh + 1) * g->sh - g->ph + g->kh;
    if (!ahead || oh + 1 >= g->oh)
        next_hi = next_lo;
    next_lo = next_lo < 0 ? 0 : next_lo;
    next_hi = next_hi > g->ih ? g->ih : next_hi;
    for (int64_t ow = 0; ow < g->ow;) {
        int64_t last = ow + DPP_NW - 1;
        int64_t c0 = ow * g->sw - g->pw, c1 = c0 + DPP_NW * g->sw;
        c0 = c0 < 0 ? 0 : c0;
        c1 = c1 > g->iw ? g->iw : c1;
        for (int64_t r = next_lo; r < next_hi; r++)
            for (int64_t i = c0 * b; i < c1 * b; i += 64 / sizeof(float))
                __builtin_prefetch(x + (r - x_row0) * pitch + i);
        bool alike = last < g->ow && g->wlo[ow] == g->wlo[last] && g->whi[ow] == g->whi[last];
        if (alike && g->full)
            alike = g->fwlo[ow] == g->fwlo[last] && g->fwhi[ow] == g->fwhi[last];
        if (alike) {
            for (int l = 0; l < b; l += SIMD_W) {
                SIMD_NAME(dpp_eval)(g, x, x_row0, p, oh, ow, l, scratch, NULL, w, DPP_NW, b);
                for (int k = 0; k < DPP_NW; k++)
                    vf_store(y + (ow + k) * b + l, w[k].out);
            }
            ow += DPP_NW;
            continue;
        }
        for (int l = 0; l < b; l += SIMD_W) {
            SIMD_NAME(dpp_eval)(g, x, x_row0, p, oh, ow, l, scratch, NULL, w, 1, b);
            vf_store(y + ow * b + l, w[0].out);
        }
        ow++;
    }
}

/* The backward of one plane: dx (the plane, overwritten) and the plane's
 * parameter gradients added to sums, b lanes each: d alpha, d lambda / ln 2
 * (its terms are in the base-2 units of t), then d filter tap by tap (raw
 * parameters, as the reference). Row sums are kept in float vectors in acc
 * and added to the double sums per row. */
SIMD_TARGET static inline __attribute__((always_inline)) void
SIMD_NAME(dpp_back_plane)(const tsr_cpu_dpp_geom *g, const float *x, const float *dy,
                          const tsr_cpu_dpp_params *p, float *dx, double *sums, float *scratch,
                          const int b)
{
    const int64_t pitch = g->iw * b, taps = g->kh * g->kw, f_taps = g->fh * g->fw;
    const int64_t n_sums = (2 + f_taps) * b;
    float *ts = scratch, *rhos = ts + taps * SIMD_W, *acc = rhos + taps * SIMD_W;
    for (int64_t i = 0; i < g->ih * pitch; i++)
        dx[i] = 0.0f;
    const vf eps2 = vf_set1(g->eps2);
    for (int64_t oh = 0; oh < g->oh; oh++) {
        for (int64_t i = 0; i < n_sums; i++)
            acc[i] = 0.0f;
        const int64_t hlo = g->hlo[oh], hhi = g->hhi[oh];
        for (int64_t ow = 0; ow < g->ow; ow++) {
            const int64_t wlo = g->wlo[ow], whi = g->whi[ow];
            const int64_t start = (oh * g->sh - g->ph) * pitch + (ow * g->sw - g->pw) * b;
            for (int l = 0; l < b; l += SIMD_W) {
                SIMD_NAME(dpp_win) w;
                SIMD_NAME(dpp_eval)(g, x, 0, p, oh, ow, l, ts, rhos, &w, 1, b);
                const float *xb = x + start + l;
                float *dxb = dx + start + l;
                vf gy = vf_load(dy + (oh * g->ow + ow) * b + l);
                vf inv_w = vf_div(vf_set1(1.0f), w.wsum);
                vf e_sum = vf_zero(), e_rho_t = vf_zero();
                const float *tq = ts, *rq = rhos;
                for (int64_t kh = hlo; kh < hhi; kh++)
                    for (int64_t kw = wlo; kw < whi; kw++, tq += SIMD_W, rq += SIMD_W) {
                        vf e = vf_mul(vf_sub(vf_load(xb + kh * pitch + kw * b), w.out), inv_w);
                        e_sum = vf_add(e_sum, e);
                        e_rho_t = vf_fmadd(vf_mul(e, vf_load(rq)), vf_load(tq), e_rho_t);
                    }
                /* Σ e (alpha_hat + rho) = 0 gives Σ e rho = -alpha_hat Σ e;
                 * with t - top it avoids the reference's noted cancellation. */
                vf e_rho = vf_sub(vf_zero(), vf_mul(w.alpha_hat, e_sum));
                vf da = vf_load(acc + l), dl = vf_load(acc + b + l);
                vf_store(acc + l, vf_fmadd(vf_mul(gy, w.alpha_hat), e_sum, da));
                vf_store(acc + b + l, vf_fmadd(gy, vf_fmadd(w.top, e_rho, e_rho_t), dl));
                vf shared = g->ratio ? vf_div(e_rho, w.ysum) : vf_zero();
                vf hl = vf_load(p->hl + l);
                vf lambda = vf_add(hl, hl), h_sum = vf_zero();
                float *dq = ts;
                rq = rhos;
                for (int64_t kh = hlo; kh < hhi; kh++)
                    for (int64_t kw = wlo; kw < whi; kw++, dq += SIMD_W, rq += SIMD_W) {
                        vf v = vf_load(xb + kh * pitch + kw * b);
                        vf e = vf_mul(vf_sub(v, w.out), inv_w);
                        vf d = vf_sub(v, w.tilde);
                        if (!g->symmetric)
                            d = vf_max(vf_zero(), d);
                        vf y = vf_fmadd(d, d, eps2);
                        vf rho = vf_load(rq);
                        vf h = vf_mul(vf_mul(lambda, d), vf_sub(vf_div(vf_mul(e, rho), y), shared));
                        h_sum = vf_add(h_sum, h);
                        vf_store(dq, vf_mul(gy, vf_fmadd(vf_add(w.alpha_hat, rho), inv_w, h)));
                    }
                vf dt = vf_sub(vf_zero(), vf_mul(gy, h_sum));
                vf share = g->full ? vf_zero() : vf_div(dt, w.count);
                dq = ts;
                for (int64_t kh = hlo; kh < hhi; kh++)
                    for (int64_t kw = wlo; kw < whi; kw++, dq += SIMD_W) {
                        float *o = dxb + kh * pitch + kw * b;
                        vf_store(o, vf_add(vf_load(o), vf_add(vf_load(dq), share)));
                    }
                if (!g->full)
                    continue;
                /* The pre-filter's backward: dĨ into dx and dfilter. */
                const int64_t fstart = (oh * g->sh - g->fph) * pitch + (ow * g->sw - g->fpw) * b;
                for (int64_t i = g->fhlo[oh]; i < g->fhhi[oh]; i++)
                    for (int64_t j = g->fwlo[ow]; j < g->fwhi[ow]; j++) {
                        int64_t at = fstart + i * pitch + j * b + l, tap = i * g->fw + j;
                        float *df = acc + (2 + tap) * b + l;
                        vf_store(dx + at,
                                 vf_fmadd(dt, vf_load(p->f + tap * b + l), vf_load(dx + at)));
                        vf_store(df, vf_fmadd(dt, vf_load(x + at), vf_load(df)));
                    }
            }
        }
        for (int64_t i = 0; i < n_sums; i++)
            sums[i] += (double)acc[i];
    }
}

#define DPP_INSTANCE(b)                                                                            \
    SIMD_TARGET static void SIMD_NAME(dpp_row_b##b)(                                               \
        const tsr_cpu_dpp_geom *g, const float *x, int64_t x_row0, const tsr_cpu_dpp_params *p,    \
        float *y, int64_t oh, float *scratch, bool ahead)                                          \
    {                                                                                              \
        SIMD_NAME(dpp_row)(g, x, x_row0, p, y, oh, scratch, ahead, b);                             \
    }                                                                                              \
    SIMD_TARGET static void SIMD_NAME(dpp_back_b##b)(const tsr_cpu_dpp_geom *g, const float *x,    \
                                                     const float *dy, const tsr_cpu_dpp_params *p, \
                                                     float *dx, double *sums, float *scratch)      \
    {                                                                                              \
        SIMD_NAME(dpp_back_plane)(g, x, dy, p, dx, sums, scratch, b);                              \
    }

DPP_INSTANCE(16)
#if SIMD_W <= 8
DPP_INSTANCE(8)
#endif
#if SIMD_W == 1
DPP_INSTANCE(1)
#endif

static const tsr_cpu_dpp_tiles SIMD_NAME(dpp_tiles) = {
    .row =
        {
            [2] = SIMD_NAME(dpp_row_b16),
#if SIMD_W <= 8
            [1] = SIMD_NAME(dpp_row_b8),
#endif
#if SIMD_W == 1
            [0] = SIMD_NAME(dpp_row_b1),
#endif
        },
    .back =
        {
            [2] = SIMD_NAME(dpp_back_b16),
#if SIMD_W <= 8
            [1] = SIMD_NAME(dpp_back_b8),
#endif
#if SIMD_W == 1
            [0] = SIMD_NAME(dpp_back_b1),
#endif
        },
};

#undef DPP_INSTANCE

/* Typed reference kernels of Detail-Preserving Pooling, included by dpp.c
 * once per float type with DPP_T (the type), DPP_SUF (name suffix) and
 * DPP_LOG / DPP_EXP (its log and exp) defined. The math is in dpp.c's
 * header comment and docs/dpp.md.
 *
 * Weights are kept in log space and scaled by their largest term:
 * w_q = alpha + rho_q is evaluated as exp(a - L) + exp(t_q - L) with
 * a = ln alpha (the raw parameter), t_q = (lambda/2) ln r_q and
 * L = max(a, t_q). O is a ratio of sums of weights, and the gradients with
 * respect to the raw parameters are too, so the scale exp(L) cancels and
 * neither form can overflow, whatever the input's magnitude or lambda. */

#define DPP_CAT2(a, b) a##b
#define DPP_CAT(a, b) DPP_CAT2(a, b)
#define DPP_FN(name) DPP_CAT(name, DPP_SUF)

/* Per-thread scratch: one array of window taps each for the values, their
 * (clamped) differences d, y = d^2 + eps^2, log rewards t and scaled
 * rewards rho; then Ĩ and its gradient for one plane. */
typedef struct DPP_FN(dpp_scratch_) {
    DPP_T *v, *d, *y, *t, *rho, *tilde, *dtilde;
} DPP_FN(dpp_scratch_);

/* What one window's evaluation leaves for the backward pass. */
typedef struct DPP_FN(dpp_eval_) {
    DPP_T out, wsum, alpha_hat, ysum;
    DPP_T log_scale; /* L: the weights above are divided by exp(L) */
} DPP_FN(dpp_eval_);

static DPP_FN(dpp_scratch_) DPP_FN(dpp_scratch_at_)(const dpp_geom *g, DPP_T *base, int thread)
{
    DPP_T *s = base + (size_t)thread * dpp_scratch_per_thread(g);
    int64_t taps = g->k_h * g->k_w, plane = g->out_h * g->out_w;
    return (DPP_FN(dpp_scratch_)){
        s, s + taps, s + 2 * taps, s + 3 * taps, s + 4 * taps, s + 5 * taps, s + 5 * taps + plane};
}

/* The depthwise pre-filter of the full variant over one plane: Ĩ at every
 * output position. */
static void DPP_FN(dpp_prefilter_)(const dpp_geom *g, const DPP_T *x, const DPP_T *f, DPP_T *tilde)
{
    for (int64_t oh = 0; oh < g->out_h; oh++)
        for (int64_t ow = 0; ow < g->out_w; ow++) {
            int64_t h0 = oh * g->s_h - g->fpad_h, w0 = ow * g->s_w - g->fpad_w;
            DPP_T sum = 0;
            for (int64_t i = 0; i < g->f_h; i++) {
                int64_t ih = h0 + i;
                if (ih < 0 || ih >= g->in_h)
                    continue;
                for (int64_t j = 0; j < g->f_w; j++) {
                    int64_t iw = w0 + j;
                    if (iw >= 0 && iw < g->in_w)
                        sum += f[i * g->f_w + j] * x[ih * g->in_w + iw];
                }
            }
            tilde[oh * g->out_w + ow] = sum;
        }
}

/* Gradient of the pre-filter: dĨ of one plane into dX and into the
 * plane's share of dfilter (accumulated in double). */
static void DPP_FN(dpp_prefilter_back_)(const dpp_geom *g, const DPP_T *x, const DPP_T *f,
                                        const DPP_T *dtilde, DPP_T *dx, double *df)
{
    for (int64_t oh = 0; oh < g->out_h; oh++)
        for (int64_t ow = 0; ow < g->out_w; ow++) {
            int64_t h0 = oh * g->s_h - g->fpad_h, w0 = ow * g->s_w - g->fpad_w;
            DPP_T dt = dtilde[oh * g->out_w + ow];
            for (int64_t i = 0; i < g->f_h; i++) {
                int64_t ih = h0 + i;
                if (ih < 0 || ih >= g->in_h)
                    continue;
                for (int64_t j = 0; j < g->f_w; j++) {
                    int64_t iw = w0 + j;
                    if (iw < 0 || iw >= g->in_w)
                        continue;
                    dx[ih * g->in_w + iw] += dt * f[i * g->f_w + j];
                    df[i * g->f_w + j] += (double)dt * (double)x[ih * g->in_w + iw];
                }
            }
        }
}

/* Copies the part of window (oh, ow) inside the input into v, row by row;
 * returns how many values that is (at least one: pads < kernel). */
static int64_t DPP_FN(dpp_gather_)(const dpp_geom *g, const DPP_T *x, int64_t oh, int64_t ow,
                                   DPP_T *v)
{
    dpp_span s = dpp_window_span(g, oh, ow);
    int64_t n = 0;
    for (int64_t ih = s.h0; ih < s.h1; ih++)
        for (int64_t iw = s.w0; iw < s.w1; iw++)
            v[n++] = x[ih * g->in_w + iw];
    return n;
}

/* Adds dv to window (oh, ow) of dx, in dpp_gather_'s order. */
static void DPP_FN(dpp_scatter_)(const dpp_geom *g, DPP_T *dx, int64_t oh, int64_t ow,
                                 const DPP_T *dv)
{
    dpp_span s = dpp_window_span(g, oh, ow);
    int64_t n = 0;
    for (int64_t ih = s.h0; ih < s.h1; ih++)
        for (int64_t iw = s.w0; iw < s.w1; iw++)
            dx[ih * g->in_w + iw] += dv[n++];
}

static DPP_T DPP_FN(dpp_mean_)(const DPP_T *v, int64_t n)
{
    DPP_T sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += v[i];
    return sum / (DPP_T)n;
}

/* One window: n values s->v around the downscaled value `tilde`, with the
 * channel's raw a = ln alpha and half_lambda = lambda / 2. Fills s->d, y, t
 * and rho for the backward pass. */
static DPP_FN(dpp_eval_) DPP_FN(dpp_window_)(const dpp_geom *g, const DPP_FN(dpp_scratch_) * s,
                                             int64_t n, DPP_T tilde, DPP_T a, DPP_T half_lambda)
{
    const DPP_T eps2 = (DPP_T)g->eps2;
    DPP_T tmax = (DPP_T)-INFINITY, ysum = 0;
    for (int64_t i = 0; i < n; i++) {
        DPP_T d = s->v[i] - tilde;
        if (!g->symmetric && d < 0)
            d = 0;
        DPP_T y = d * d + eps2;
        DPP_T t = half_lambda * DPP_LOG(y);
        s->d[i] = d;
        s->y[i] = y;
        s->t[i] = t;
        ysum += y;
        tmax = t > tmax ? t : tmax;
    }
    if (g->ratio) {
        DPP_T shift = half_lambda * DPP_LOG(ysum);
        for (int64_t i = 0; i < n; i++)
            s->t[i] -= shift;
        tmax -= shift;
    }
    DPP_T top = a > tmax ? a : tmax;
    DPP_T alpha_hat = DPP_EXP(a - top);
    DPP_T rho_sum = 0, weighted = 0, plain = 0;
    for (int64_t i = 0; i < n; i++) {
        DPP_T rho = DPP_EXP(s->t[i] - top);
        s->rho[i] = rho;
        rho_sum += rho;
        weighted += rho * s->v[i];
        plain += s->v[i];
    }
    DPP_T wsum = alpha_hat * (DPP_T)n + rho_sum;
    return (DPP_FN(dpp_eval_)){(alpha_hat * plain + weighted) / wsum, wsum, alpha_hat, ysum, top};
}

static void DPP_FN(dpp_forward_)(const dpp_geom *g, const DPP_T *x, const DPP_T *alpha,
                                 const DPP_T *lambda, const DPP_T *filter, DPP_T *out,
                                 DPP_T *scratch, int threads)
{
    int64_t planes = g->batch * g->channels, in_plane = g->in_h * g->in_w;
    int64_t out_plane = g->out_h * g->out_w;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < planes; p++) {
        DPP_FN(dpp_scratch_) s = DPP_FN(dpp_scratch_at_)(g, scratch, omp_get_thread_num());
        int64_t c = p % g->channels;
        const DPP_T *xp = x + p * in_plane;
        DPP_T *op = out + p * out_plane;
        if (g->full)
            DPP_FN(dpp_prefilter_)(g, xp, filter + c * g->f_h * g->f_w, s.tilde);
        DPP_T a = alpha[c], half_lambda = (DPP_T)0.5 * DPP_EXP(lambda[c]);
        for (int64_t oh = 0; oh < g->out_h; oh++)
            for (int64_t ow = 0; ow < g->out_w; ow++) {
                int64_t o = oh * g->out_w + ow;
                int64_t n = DPP_FN(dpp_gather_)(g, xp, oh, ow, s.v);
                DPP_T tilde = g->full ? s.tilde[o] : DPP_FN(dpp_mean_)(s.v, n);
                op[o] = DPP_FN(dpp_window_)(g, &s, n, tilde, a, half_lambda).out;
            }
    }
}

/* Backward of one window with output gradient gy: its input gradients into
 * s->d (dpp_gather_'s order), dĨ as the return value; adds to the plane's
 * sums of dO/d(ln alpha) and dO/d(ln lambda). */
static DPP_T DPP_FN(dpp_window_back_)(const dpp_geom *g, const DPP_FN(dpp_scratch_) * s, int64_t n,
                                      DPP_FN(dpp_eval_) ev, DPP_T half_lambda, DPP_T gy,
                                      double *dalpha, double *dlambda)
{
    DPP_T inv_w = 1 / ev.wsum, top = ev.log_scale;
    DPP_T e_sum = 0, e_rho_t = 0;
    for (int64_t i = 0; i < n; i++) {
        DPP_T e = (s->v[i] - ev.out) * inv_w;
        e_sum += e;
        e_rho_t += e * s->rho[i] * (s->t[i] - top);
    }
    /* Σ e (alpha_hat + rho) = 0, so Σ e rho = -alpha_hat Σ e; using that
     * and t - top (not t) avoids a cancellation that costs float32 three
     * digits of dlambda when lambda ln y is large. */
    DPP_T e_rho = -ev.alpha_hat * e_sum;
    *dalpha += (double)(gy * ev.alpha_hat * e_sum);
    *dlambda += (double)(gy * (e_rho_t + top * e_rho));
    /* The ratio form's rewards share the window sum of y, which adds a
     * common term to every d/dy. */
    DPP_T shared = g->ratio ? e_rho / ev.ysum : 0;
    DPP_T lambda = 2 * half_lambda, h_sum = 0;
    for (int64_t i = 0; i < n; i++) {
        DPP_T e = (s->v[i] - ev.out) * inv_w;
        DPP_T h = lambda * s->d[i] * (e * s->rho[i] / s->y[i] - shared);
        h_sum += h;
        s->d[i] = gy * ((ev.alpha_hat + s->rho[i]) * inv_w + h);
    }
    return -gy * h_sum;
}

static void DPP_FN(dpp_backward_)(const dpp_geom *g, const DPP_T *dy, const DPP_T *x,
                                  const DPP_T *alpha, const DPP_T *lambda, const DPP_T *filter,
                                  DPP_T *dx, double *dalpha, double *dlambda, double *dfilter,
                                  DPP_T *scratch, int threads)
{
    int64_t planes = g->batch * g->channels, in_plane = g->in_h * g->in_w;
    int64_t out_plane = g->out_h * g->out_w, f_taps = g->f_h * g->f_w;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < planes; p++) {
        DPP_FN(dpp_scratch_) s = DPP_FN(dpp_scratch_at_)(g, scratch, omp_get_thread_num());
        int64_t c = p % g->channels;
        const DPP_T *xp = x + p * in_plane, *dyp = dy + p * out_plane;
        const DPP_T *fp = g->full ? filter + c * f_taps : NULL;
        DPP_T *dxp = dx + p * in_plane;
        for (int64_t i = 0; i < in_plane; i++)
            dxp[i] = 0;
        if (g->full)
            DPP_FN(dpp_prefilter_)(g, xp, fp, s.tilde);
        DPP_T a = alpha[c], half_lambda = (DPP_T)0.5 * DPP_EXP(lambda[c]);
        double da = 0, dl = 0;
        for (int64_t oh = 0; oh < g->out_h; oh++)
            for (int64_t ow = 0; ow < g->out_w; ow++) {
                int64_t o = oh * g->out_w + ow;
                int64_t n = DPP_FN(dpp_gather_)(g, xp, oh, ow, s.v);
                DPP_T tilde = g->full ? s.tilde[o] : DPP_FN(dpp_mean_)(s.v, n);
                DPP_FN(dpp_eval_) ev = DPP_FN(dpp_window_)(g, &s, n, tilde, a, half_lambda);
                DPP_T dt = DPP_FN(dpp_window_back_)(g, &s, n, ev, half_lambda, dyp[o], &da, &dl);
                if (g->full) {
                    s.dtilde[o] = dt;
                } else {
                    DPP_T share = dt / (DPP_T)n;
                    for (int64_t i = 0; i < n; i++)
                        s.d[i] += share;
                }
                DPP_FN(dpp_scatter_)(g, dxp, oh, ow, s.d);
            }
        if (g->full) {
            double *dfp = dfilter + p * f_taps;
            for (int64_t i = 0; i < f_taps; i++)
                dfp[i] = 0;
            DPP_FN(dpp_prefilter_back_)(g, xp, fp, s.dtilde, dxp, dfp);
        }
        dalpha[p] = da;
        dlambda[p] = dl;
    }
}

#undef DPP_FN
#undef DPP_CAT
#undef DPP_CAT2

/* Radial basis of ICTP potentials, domain ai.tessera (docs/ictp.md):
 *
 *   BesselBasis(r [...]) -> B [..., n_basis]
 *       attributes r_cutoff (required), n_basis = 8, p = 5, derivative = 0
 *
 *     ρ_n(r) = sqrt(2/r_c) sin(w_n r)/r · f(r/r_c),  w_n = nπ/r_c, n = 1..n_basis
 *     f(x) = 1 − (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) − p(p+1)/2 x^(p+2)  for x < 1,
 *     f = 0 from x = 1 on (ictp-checkpoint.md §4),
 *
 * or its derivative of order `derivative` in r (Leibniz's rule over the
 * derivatives of sin(w r)/r and of the polynomial). The gradient of order
 * k is Σ_n dB_n · (order k + 1), so derivatives of any order exist as
 * graph nodes. f and its first two derivatives vanish at r_c; the third
 * jumps there. Distances must be positive.
 *
 *   RadialSpline(r [...], table [n, 4, K]) -> f_1 .. f_m [..., K/m]
 *   RadialSplineDot(r [...], table [n, 4, K], dy_1 .. dy_m [..., K/m]) -> [...]
 *       attributes r_max (required), derivative = 0
 *
 * K functions of r tabulated as cubic splines on n equal intervals of
 * [0, r_max): interval i holds the coefficients of f_k = Σ_j c_ijk t^j, t =
 * r/h - i, h = r_max/n (a radial MLP of ICTP, fitted once, docs/ictp.md):
 * the derivatives add the coefficients up without the cancellation that
 * differences of values would suffer in float32. The K columns come out as
 * m equal blocks, one output each (ICTP's convolution paths: one table
 * read per distance for all of them, no Split after it). From r_max
 * on every function is 0 (a cutoff). RadialSpline gives the functions or
 * their derivative of order `derivative`, RadialSplineDot the derivative's
 * contraction Σ_q Σ_k dy_q,k f_q,k^(d)(r) over all blocks, which is
 * RadialSpline's gradient at the next order without a tensor of
 * derivatives per edge; its own gradient is
 * RadialSpline and RadialSplineDot again, so derivatives of any order
 * exist (the pieces are cubic: from the fourth on they are 0). The table
 * has no gradient: it is a constant of the evaluation (training
 * differentiates the MLP itself). Distances must not be negative. */
#include "autodiff/autodiff.h"
#include "ops/op.h"
#include "ops/radial.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define BESSEL_MAX_DERIVATIVE 16

static const tsr_attr_def bessel_attrs[] = {{"r_cutoff", TSR_ATTR_FLOAT, true},
                                            {"n_basis", TSR_ATTR_INT, .i = 8},
                                            {"p", TSR_ATTR_INT, .i = 5},
                                            {"derivative", TSR_ATTR_INT, .i = 0},
                                            {NULL}};

tsr_status tsr_bessel_read(const tsr_node *node, tsr_bessel_params *b)
{
    b->rc = tsr_attr_float(node, "r_cutoff");
    b->n_basis = tsr_attr_int(node, "n_basis");
    int64_t p = tsr_attr_int(node, "p"), order = tsr_attr_int(node, "derivative");
    if (!(b->rc > 0.0) || !isfinite(b->rc))
        return tsr_error(TSR_ERR_UNSUPPORTED, "r_cutoff is %g, must be positive and finite", b->rc);
    if (b->n_basis < 1 || b->n_basis > 1024)
        return tsr_error(TSR_ERR_UNSUPPORTED, "n_basis is %lld, must be in 1..1024",
                         (long long)b->n_basis);
    if (p < 1 || p > 64)
        return tsr_error(TSR_ERR_UNSUPPORTED, "p is %lld, must be in 1..64", (long long)p);
    if (order < 0 || order > BESSEL_MAX_DERIVATIVE)
        return tsr_error(TSR_ERR_UNSUPPORTED, "derivative is %lld, must be in 0..%d",
                         (long long)order, BESSEL_MAX_DERIVATIVE);
    b->p = (int)p;
    b->order = (int)order;
    return TSR_OK;
}

static double binom(int n, int k)
{
    double v = 1.0;
    for (int i = 1; i <= k; i++)
        v = v * (n - k + i) / i;
    return v;
}

/* d^m/dx^m of f at x. */
static double cutoff_derivative(int p, int m, double x)
{
    const double coef[4] = {1.0, -(p + 1.0) * (p + 2.0) / 2.0, p * (p + 2.0), -p * (p + 1.0) / 2.0};
    const int pw[4] = {0, p, p + 1, p + 2};
    double s = 0.0;
    for (int t = 0; t < 4; t++) {
        if (m > pw[t])
            continue;
        double falling = 1.0;
        for (int i = 0; i < m; i++)
            falling *= pw[t] - i;
        s += coef[t] * falling * pow(x, pw[t] - m);
    }
    return s;
}

/* The basis (or its derivative) at one distance r < r_c into out. */
static void bessel_eval(const tsr_bessel_params *b, double r, double *out)
{
    int k = b->order;
    double fd[BESSEL_MAX_DERIVATIVE + 1], inv_pow[BESSEL_MAX_DERIVATIVE + 2];
    double x = r / b->rc, pre = sqrt(2.0 / b->rc);
    for (int m = 0; m <= k; m++)
        fd[m] = cutoff_derivative(b->p, m, x) / pow(b->rc, m);
    /* d^i/dr^i of 1/r = (-1)^i i! / r^(i+1) */
    inv_pow[0] = 1.0 / r;
    for (int i = 1; i <= k; i++)
        inv_pow[i] = -inv_pow[i - 1] * i / r;
    for (int64_t n = 0; n < b->n_basis; n++) {
        double w = (double)(n + 1) * 3.14159265358979323846 / b->rc, s = sin(w * r), c = cos(w * r);
        const double cyc[4] = {s, c, -s, -c}; /* d^i/dr^i sin(w r) / w^i */
        double total = 0.0;
        for (int j = 0; j <= k; j++) {
            double g = 0.0, wi = 1.0; /* d^j/dr^j of sin(w r)/r */
            for (int i = 0; i <= j; i++, wi *= w)
                g += binom(j, i) * wi * cyc[i % 4] * inv_pow[j - i];
            total += binom(k, j) * g * fd[k - j];
        }
        out[n] = pre * total;
    }
}

static tsr_status bessel_infer(tsr_infer_ctx *c)
{
    tsr_bessel_params b;
    TSR_CHECK(tsr_bessel_read(c->node, &b));
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *r = c->inputs[0];
    if (r->rank < 0)
        return TSR_OK;
    if (r->rank >= TSR_MAX_RANK)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "r has rank %d; at most %d is supported", r->rank,
                               TSR_MAX_RANK - 1);
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < r->rank; d++)
        dims[d] = r->dims[d];
    dims[r->rank] = b.n_basis;
    tsr_infer_set(c, 0, r->dtype, r->rank + 1, dims);
    return TSR_OK;
}

static tsr_status bessel_ref(const tsr_kernel_ctx *k)
{
    tsr_bessel_params b;
    TSR_CHECK(tsr_bessel_read(k->node, &b));
    const tsr_tensor *r = k->inputs[0];
    tsr_tensor *out = k->outputs[0];
    int64_t n = tsr_tensor_numel(r), bad = n;
    double *scratch = tsr_malloc((size_t)k->threads * (size_t)b.n_basis * sizeof *scratch);
    if (!scratch)
        return TSR_ERR_OUT_OF_MEMORY;
    /* A team costs more than a few thousand distances take. */
#pragma omp parallel for num_threads(k->threads) reduction(min : bad) if (n > 4096)
    for (int64_t i = 0; i < n; i++) {
        double *row = scratch + (size_t)omp_get_thread_num() * (size_t)b.n_basis;
        double ri = tsr_get_f(r, i);
        if (!(ri > 0.0) || isnan(ri)) {
            bad = i < bad ? i : bad;
            continue;
        }
        for (int64_t j = 0; j < b.n_basis; j++)
            row[j] = 0.0;
        if (ri < b.rc)
            bessel_eval(&b, ri, row);
        for (int64_t j = 0; j < b.n_basis; j++)
            tsr_set_f(out, i * b.n_basis + j, row[j]);
    }
    free(scratch);
    return bad < n ? tsr_bessel_bad_distance(bad, tsr_get_f(r, bad)) : TSR_OK;
}

tsr_status tsr_bessel_bad_distance(int64_t i, double r)
{
    return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                     "r[%lld] is %g; the Bessel basis needs positive distances", (long long)i, r);
}

/* A sine, a cosine and (k+1)(k+2)/2 terms of a few operations per value. */
static double bessel_flops(const tsr_infer_ctx *c)
{
    const tsr_value *o = c->outputs[0];
    int64_t n = tsr_shape_numel(o->rank, o->dims), k = tsr_attr_int(c->node, "derivative");
    return n < 0 ? 0.0 : (double)n * (30.0 + 4.0 * (double)((k + 1) * (k + 2) / 2));
}

/* dr = Σ_n dB_n · ∂B_n/∂r, the latter the next derivative. */
static tsr_status bessel_grad(tsr_grad_ctx *c)
{
    const tsr_node *node = tsr_grad_node(c);
    tsr_bessel_params b;
    TSR_CHECK(tsr_bessel_read(node, &b));
    if (b.order == BESSEL_MAX_DERIVATIVE)
        return tsr_grad_unsupported(c, "BesselBasis has derivatives up to order %d",
                                    BESSEL_MAX_DERIVATIVE);
    tsr_attr attrs[4] = {TSR_ATTR_F("r_cutoff", b.rc), TSR_ATTR_I("n_basis", b.n_basis),
                         TSR_ATTR_I("p", b.p), TSR_ATTR_I("derivative", b.order + 1)};
    const char *r = tsr_grad_input(c, 0), *d, *prod, *axes, *g;
    const int64_t last = -1;
    tsr_attr keep = TSR_ATTR_I("keepdims", 0);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_BesselBasis, 1, &r, 4, attrs, 1, &d));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, tsr_grad_dy(c, 0), d, &prod));
    TSR_CHECK(tsr_grad_ints(c, 1, &last, &axes));
    const char *ins[2] = {prod, axes};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &keep, 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

const tsr_op_def tsr_op_BesselBasis = {
    .name = "BesselBasis",
    .domain = "ai.tessera",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = bessel_attrs,
    .locality = TSR_LOCALITY_ELEMENTWISE,
    .infer = bessel_infer,
    .ref = bessel_ref,
    .flops = bessel_flops,
    .grad = bessel_grad,
};

/* --------------------------------------------------------- RadialSpline */

#define SPLINE_MAX_DERIVATIVE 16

static const tsr_attr_def spline_attrs[] = {
    {"r_max", TSR_ATTR_FLOAT, true}, {"derivative", TSR_ATTR_INT, .i = 0}, {NULL}};

tsr_status tsr_spline_read(const tsr_node *node, tsr_spline_params *p)
{
    p->r_max = tsr_attr_float(node, "r_max");
    int64_t order = tsr_attr_int(node, "derivative");
    if (!(p->r_max > 0.0) || !isfinite(p->r_max))
        return tsr_error(TSR_ERR_UNSUPPORTED, "r_max is %g, must be positive and finite", p->r_max);
    if (order < 0 || order > SPLINE_MAX_DERIVATIVE)
        return tsr_error(TSR_ERR_UNSUPPORTED, "derivative is %lld, must be in 0..%d",
                         (long long)order, SPLINE_MAX_DERIVATIVE);
    p->order = (int)order;
    return TSR_OK;
}

tsr_status tsr_spline_bad_distance(int64_t i, double r)
{
    return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                     "r[%lld] is %g; the radial spline needs distances of at least 0", (long long)i,
                     r);
}

/* The blocks: RadialSpline's outputs, RadialSplineDot's inputs after the
 * table. */
static int spline_blocks(const tsr_node *node, int n_inputs, int n_outputs)
{
    return node->op == &tsr_op_RadialSplineDot ? n_inputs - 2 : n_outputs;
}

/* Checks the table [n, 4, K] (n >= 1, K a multiple of the m blocks)
 * against r's dtype and, for the Dot, each dy against r's shape with K/m
 * appended; *kb_out gets K/m. */
static tsr_status spline_infer_common(tsr_infer_ctx *c, int64_t *kb_out)
{
    tsr_spline_params p = {0};
    TSR_CHECK(tsr_spline_read(c->node, &p));
    for (int i = 0; i < c->n_inputs; i++)
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
    const tsr_value *r = c->inputs[0], *t = c->inputs[1];
    for (int i = 1; i < c->n_inputs; i++)
        if (c->inputs[i]->dtype != r->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "r is %s but %s is %s; all must share one",
                                   tsr_dtype_name(r->dtype), i == 1 ? "table" : "dy",
                                   tsr_dtype_name(c->inputs[i]->dtype));
    int m = spline_blocks(c->node, c->n_inputs, c->n_outputs);
    *kb_out = TSR_DIM_UNKNOWN;
    if (t->rank >= 0) {
        if (t->rank != 3 || (tsr_dim_known(t->dims[0]) && t->dims[0] < 1) ||
            (tsr_dim_known(t->dims[1]) && t->dims[1] != 4)) {
            char got[128];
            tsr_shape_format(got, sizeof got, t->rank, t->dims);
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "table ('%s') has shape %s; it must be [n, 4, K] with n >= 1",
                                   t->name, got);
        }
        if (tsr_dim_known(t->dims[2])) {
            if (t->dims[2] % m)
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "the table's %lld functions do not split into %d equal "
                                       "blocks",
                                       (long long)t->dims[2], m);
            *kb_out = t->dims[2] / m;
        }
    }
    if (r->rank >= TSR_MAX_RANK)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "r has rank %d; at most %d is supported", r->rank,
                               TSR_MAX_RANK - 1);
    for (int q = 2; q < c->n_inputs && r->rank >= 0; q++) {
        const tsr_value *dy = c->inputs[q];
        if (dy->rank < 0)
            continue;
        bool ok = dy->rank == r->rank + 1;
        for (int d = 0; ok && d <= r->rank; d++) {
            int64_t want = d < r->rank ? r->dims[d] : *kb_out;
            ok = !tsr_dim_known(want) || !tsr_dim_known(dy->dims[d]) || want == dy->dims[d];
        }
        if (!ok) {
            char got[128], rs[128];
            tsr_shape_format(got, sizeof got, dy->rank, dy->dims);
            tsr_shape_format(rs, sizeof rs, r->rank, r->dims);
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "dy %d ('%s') has shape %s; it must be r's %s with the "
                                   "block's K/%d functions appended",
                                   q - 2, dy->name, got, rs, m);
        }
    }
    return TSR_OK;
}

static tsr_status spline_infer(tsr_infer_ctx *c)
{
    int64_t kb;
    TSR_CHECK(spline_infer_common(c, &kb));
    const tsr_value *r = c->inputs[0];
    if (r->rank < 0)
        return TSR_OK;
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < r->rank; d++)
        dims[d] = r->dims[d];
    dims[r->rank] = kb;
    for (int q = 0; q < c->n_outputs; q++)
        tsr_infer_set(c, q, r->dtype, r->rank + 1, dims);
    return TSR_OK;
}

static tsr_status spline_dot_infer(tsr_infer_ctx *c)
{
    int64_t kb;
    TSR_CHECK(spline_infer_common(c, &kb));
    const tsr_value *r = c->inputs[0];
    if (r->rank >= 0)
        tsr_infer_set(c, 0, r->dtype, r->rank, r->dims);
    return TSR_OK;
}

/* The shapes as the kernels need them: n intervals, m blocks of kb
 * functions, every block (output or dy) of r's size times kb. */
tsr_status tsr_spline_shapes(const tsr_kernel_ctx *k, int64_t *n, int *m, int64_t *kb)
{
    const tsr_tensor *r = k->inputs[0], *t = k->inputs[1];
    bool dot = k->node->op == &tsr_op_RadialSplineDot;
    *m = spline_blocks(k->node, k->n_inputs, k->n_outputs);
    if (t->rank != 3 || t->dims[0] < 1 || t->dims[1] != 4 || t->dims[2] % *m)
        return tsr_error(TSR_ERR_SHAPE, "%s: the table is not [n, 4, K] with %d blocks of K",
                         k->node->op->name, *m);
    *n = t->dims[0];
    *kb = t->dims[2] / *m;
    for (int q = 0; q < *m; q++) {
        const tsr_tensor *b = dot ? k->inputs[2 + q] : k->outputs[q];
        if (tsr_tensor_numel(b) != tsr_tensor_numel(r) * *kb)
            return tsr_error(TSR_ERR_SHAPE, "%s: block %d does not hold K/%d values per distance",
                             k->node->op->name, q, *m);
    }
    return TSR_OK;
}

/* f^(d)(r) of every function, or its contraction with the dy blocks
 * (dot), for each distance in turn, in double. */
static tsr_status spline_ref_run(const tsr_kernel_ctx *k, bool dot)
{
    tsr_spline_params p = {0};
    TSR_CHECK(tsr_spline_read(k->node, &p));
    int64_t n, kb;
    int m;
    TSR_CHECK(tsr_spline_shapes(k, &n, &m, &kb));
    const tsr_tensor *r = k->inputs[0], *t = k->inputs[1];
    int64_t len = tsr_tensor_numel(r), kk = kb * m;
    for (int64_t e = 0; e < len; e++) {
        double re = tsr_get_f(r, e), w[4];
        if (!(re >= 0.0))
            return tsr_spline_bad_distance(e, re);
        int64_t i = 0;
        bool in = tsr_spline_weights(re, p.r_max, n, p.order, &i, w);
        double acc = 0.0;
        for (int q = 0; q < m; q++)
            for (int64_t j = 0; j < kb; j++) {
                double v = 0.0;
                for (int c = 0; in && c < 4; c++)
                    v += w[c] * tsr_get_f(t, (4 * i + c) * kk + q * kb + j);
                if (dot)
                    acc += v * tsr_get_f(k->inputs[2 + q], e * kb + j);
                else
                    tsr_set_f(k->outputs[q], e * kb + j, v);
            }
        if (dot)
            tsr_set_f(k->outputs[0], e, acc);
    }
    return TSR_OK;
}

static tsr_status spline_ref(const tsr_kernel_ctx *k)
{
    return spline_ref_run(k, false);
}

static tsr_status spline_dot_ref(const tsr_kernel_ctx *k)
{
    return spline_ref_run(k, true);
}

/* Four multiply-adds per value (and one more for the contraction). */
static double spline_flops(const tsr_infer_ctx *c)
{
    const tsr_value *t = c->inputs[1], *r = c->inputs[0];
    int64_t len = tsr_shape_numel(r->rank, r->dims);
    if (len < 0 || t->rank != 3 || !tsr_dim_known(t->dims[2]))
        return 0.0;
    bool dot = c->node->op == &tsr_op_RadialSplineDot;
    return (double)len * (double)t->dims[2] * (dot ? 10.0 : 8.0);
}

/* A spline op of the node's table and r at derivative `order`: the Dot of
 * the m blocks dys, or (dys NULL) RadialSpline's m blocks into outs. */
static tsr_status spline_emit(tsr_grad_ctx *c, int m, const char *const *dys, int order,
                              const char **outs)
{
    tsr_spline_params p = {0};
    TSR_CHECK(tsr_spline_read(tsr_grad_node(c), &p));
    if (order > SPLINE_MAX_DERIVATIVE)
        return tsr_grad_unsupported(c, "%s has derivatives up to order %d",
                                    tsr_grad_node(c)->op->name, SPLINE_MAX_DERIVATIVE);
    const char *ins[TSR_MAX_NODE_IO] = {tsr_grad_input(c, 0), tsr_grad_input(c, 1)};
    for (int q = 0; dys && q < m; q++)
        ins[2 + q] = dys[q];
    tsr_attr a[2] = {TSR_ATTR_F("r_max", p.r_max), TSR_ATTR_I("derivative", order)};
    if (dys)
        return tsr_grad_emit(c, &tsr_op_RadialSplineDot, 2 + m, ins, 2, a, 1, outs);
    return tsr_grad_emit(c, &tsr_op_RadialSpline, 2, ins, 2, a, m, outs);
}

static tsr_status spline_table_grad(tsr_grad_ctx *c)
{
    if (tsr_grad_wants(c, 1))
        return tsr_grad_unsupported(c,
                                    "%s: the table has no gradient (it is a constant of the "
                                    "evaluation; training differentiates the radial MLP)",
                                    tsr_grad_node(c)->op->name);
    return TSR_OK;
}

/* dr = Σ_q Σ_k dy_q,k f_q,k^(d+1)(r); a block without a gradient counts as
 * zeros. */
static tsr_status spline_grad(tsr_grad_ctx *c)
{
    TSR_CHECK(spline_table_grad(c));
    if (!tsr_grad_wants(c, 0))
        return TSR_OK;
    const tsr_node *node = tsr_grad_node(c);
    int m = node->n_outputs;
    const char *dys[TSR_MAX_NODE_IO], *g;
    for (int q = 0; q < m; q++) {
        dys[q] = tsr_grad_dy(c, q);
        if (!dys[q])
            TSR_CHECK(tsr_grad_zeros_like(c, tsr_grad_output(c, q), &dys[q]));
    }
    TSR_CHECK(spline_emit(c, m, dys, (int)tsr_attr_int(node, "derivative") + 1, &g));
    return tsr_grad_contribute(c, 0, g);
}

/* With z = Σ_q Σ_k dy_q,k f_q,k^(d)(r) and its gradient g: dr = g · (the
 * same at d+1), ddy_q = g ⊗ f_q^(d)(r). */
static tsr_status spline_dot_grad(tsr_grad_ctx *c)
{
    TSR_CHECK(spline_table_grad(c));
    const tsr_node *node = tsr_grad_node(c);
    int d = (int)tsr_attr_int(node, "derivative"), m = node->n_inputs - 2;
    const char *gz = tsr_grad_dy(c, 0), *g;
    if (tsr_grad_wants(c, 0)) {
        const char *dys[TSR_MAX_NODE_IO];
        for (int q = 0; q < m; q++)
            dys[q] = tsr_grad_input(c, 2 + q);
        TSR_CHECK(spline_emit(c, m, dys, d + 1, &g));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, g, gz, &g));
        TSR_CHECK(tsr_grad_contribute(c, 0, g));
    }
    bool any = false;
    for (int q = 0; q < m; q++)
        any = any || tsr_grad_wants(c, 2 + q);
    if (!any)
        return TSR_OK;
    const char *f[TSR_MAX_NODE_IO], *axes, *gu;
    const int64_t last = -1;
    TSR_CHECK(spline_emit(c, m, NULL, d, f));
    TSR_CHECK(tsr_grad_ints(c, 1, &last, &axes));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Unsqueeze, gz, axes, &gu));
    for (int q = 0; q < m; q++) {
        if (!tsr_grad_wants(c, 2 + q))
            continue;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, f[q], gu, &g));
        TSR_CHECK(tsr_grad_contribute(c, 2 + q, g));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_RadialSpline = {
    .name = "RadialSpline",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    /* Its gradient, the Dot, takes r, the table and one dy per block. */
    .max_outputs = TSR_MAX_NODE_IO - 2,
    .attrs = spline_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = spline_infer,
    .ref = spline_ref,
    .flops = spline_flops,
    .grad = spline_grad,
};

const tsr_op_def tsr_op_RadialSplineDot = {
    .name = "RadialSplineDot",
    .domain = "ai.tessera",
    .min_inputs = 3,
    .max_inputs = TSR_MAX_NODE_IO,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = spline_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = spline_dot_infer,
    .ref = spline_dot_ref,
    .flops = spline_flops,
    .grad = spline_dot_grad,
};

/* Irreducible Cartesian tensors (ICTs) and their products, domain
 * ai.tessera: the tensor algebra of ICTP potentials (docs/ictp.md).
 *
 *   ICT(v [E, 3]) -> T [E, 3^l]                attributes l, normalize, coordinates
 *   ICTProduct(x [N, 3^l1(, C)], y [N, 3^l2(, C)]) -> z [N, 3^l3(, C)]
 *                             attributes l1, l2, l3, alpha, sum_channels, coordinates
 *
 * Rank-l tensors store all 3^l components, row-major (index i*9 + j*3 + k
 * for rank 3), with channels fastest when there is a channel axis. With
 * coordinates = 1 they store instead the 2l+1 coordinates of the tensor
 * in the orthonormal basis Q below (T = Q t, t = Qᵀ T): every input and
 * the output of the node, [N, 2l+1(, C)]. A model made of these products
 * and of maps that act on each component alike (linear maps over
 * channels, sums, per-channel weights) gives the same results in either
 * storage, since Q is an isometry of the symmetric traceless tensors;
 * coordinates take 2l+1 values where components take 3^l (7 instead of 27
 * at rank 3) and products in them skip the projections. Q is fixed: the
 * standard basis at rank 1, so rank-1 coordinates are the vector's
 * components, and 1 at rank 0.
 *
 * ICT: with Π the orthogonal projection onto symmetric traceless tensors
 * and C_l = (2l-1)!!/l!, T^l(n) = C_l Π(n^⊗l), evaluated by the detracer
 *     Π(n^⊗l) = Σ_m (-1)^m (2l-2m-1)!!/(2l-1)!! |n|^2m {n^⊗(l-2m) ⊗ δ^⊗m}
 * ({} sums over the distinct placements of the indices). With normalize = 1
 * n = v/|v|, the ICT of ictp.md; with normalize = 0 n = v (a homogeneous
 * polynomial of degree l, the same tensor on unit vectors).
 *
 * ICTProduct couples ranks l1 and l2 to l3 (|l1-l2| <= l3 <= l1+l2, l1+l2-l3
 * even) with k = (l1+l2-l3)/2:
 *     z = alpha K Π(contract_k(Πx, Πy)),  K = c(l1,l2,l3) binom(l3, l1-k)
 * contracting the last k indices of x with the first k of y, c of
 * ictp-checkpoint.md §3. On symmetric traceless inputs (every feature of
 * the model) the input projections do nothing and this is the product of
 * ictp-checkpoint.md §3, which gives T^l1(n) ⊗ T^l2(n) = T^l3(n); on other
 * inputs it is still one well-defined bilinear map, so gradients are exact
 * everywhere. Channels multiply one to one; a channel axis of size 1, or
 * none, broadcasts. With sum_channels = 1, z = Σ_c z_c [N, 3^l3]: the
 * adjoint of a product with a channel-less input (an edge ICT), without
 * the per-channel tensor.
 *
 * Gradients: Π is self-adjoint, so the adjoints of a product are products
 * again, dx = ICTProduct(dz, y; l3, l2 -> l1) and dy = ICTProduct(x, dz;
 * l1, l3 -> l2), with alpha carrying the ratio of the constants; the ICT's
 * gradient is, with T^l = C_l Π(n^⊗l),
 *     dn = l C_l Π(dT) · n^⊗(l-1) = (2l-1)/K(l,l-1,1) ICTProduct(dT, T^(l-1)(n); l, l-1 -> 1)
 * then through n = v/|v| with ordinary ops. All of it differentiates again.
 *
 * The kernels work in the 2l+1 coordinates of an orthonormal basis Q of
 * the symmetric traceless tensors of each rank (columns: the parts of T^l
 * that vary as cos(mφ) and sin(mφ) about the z axis, see ict_basis_build):
 * Π = Q Qᵀ, and the product is a (2l3+1) x (2l1+1) x (2l2+1) coupling of
 * coordinates, mostly zeros in this basis. Q does not change any result:
 * Π is unique. */
#include "autodiff/autodiff.h"
#include "ops/ict_plan.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static const tsr_attr_def ict_attrs[] = {{"l", TSR_ATTR_INT, true},
                                         {"normalize", TSR_ATTR_INT, .i = 1},
                                         {"coordinates", TSR_ATTR_INT, .i = 0},
                                         {NULL}};

static const tsr_attr_def ict_product_attrs[] = {{"l1", TSR_ATTR_INT, true},
                                                 {"l2", TSR_ATTR_INT, true},
                                                 {"l3", TSR_ATTR_INT, true},
                                                 {"alpha", TSR_ATTR_FLOAT, .f = 1.0},
                                                 {"sum_channels", TSR_ATTR_INT, .i = 0},
                                                 {"coordinates", TSR_ATTR_INT, .i = 0},
                                                 {NULL}};

static int64_t pow3(int l)
{
    int64_t p = 1;
    for (int i = 0; i < l; i++)
        p *= 3;
    return p;
}

/* Values a rank-l tensor stores: 3^l components or 2l+1 coordinates. */
static int64_t ict_width(int l, bool coords)
{
    return coords ? 2 * l + 1 : pow3(l);
}

/* A 0/1 attribute, checked. */
static tsr_status flag_attr(const tsr_node *node, const char *name, bool *out)
{
    int64_t v = tsr_attr_int(node, name);
    if (v != 0 && v != 1)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s is %lld, must be 0 or 1", name, (long long)v);
    *out = v == 1;
    return TSR_OK;
}

static double factorial(int n)
{
    double f = 1.0;
    for (int i = 2; i <= n; i++)
        f *= i;
    return f;
}

/* n!! for odd n, (-1)!! = 1. */
static double double_factorial(int n)
{
    double f = 1.0;
    for (int i = n; i > 1; i -= 2)
        f *= i;
    return f;
}

static double binomial(int n, int k)
{
    return factorial(n) / (factorial(k) * factorial(n - k));
}

static bool ict_path_valid(int l1, int l2, int l3)
{
    return l3 >= abs(l1 - l2) && l3 <= l1 + l2 && (l1 + l2 - l3) % 2 == 0;
}

/* K(l1, l2, l3) = c(l1, l2, l3) binom(l3, l1 - k), ictp-checkpoint.md §3. */
static double ict_path_constant(int l1, int l2, int l3)
{
    int k = (l1 + l2 - l3) / 2, a = l2 - k, b = l1 - k;
    double c = factorial(l1) * factorial(l2) * double_factorial(2 * l3 - 1) * factorial(a) *
               factorial(b) /
               (factorial(l3) * double_factorial(2 * a - 1) * double_factorial(2 * b - 1) *
                double_factorial(2 * k - 1) * factorial(a + b + k));
    return c * binomial(l3, b);
}

static tsr_status rank_attr(const tsr_node *node, const char *name, int *out)
{
    int64_t v = tsr_attr_int(node, name);
    if (v < 0 || v > TSR_ICT_MAX_L)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s is %lld; ranks 0..%d are supported", name,
                         (long long)v, TSR_ICT_MAX_L);
    *out = (int)v;
    return TSR_OK;
}

/* ------------------------------------------------------------ evaluation */

void tsr_ict_classes(int l, int *cls)
{
    int64_t size = pow3(l);
    for (int64_t idx = 0; idx < size; idx++) {
        int counts[3] = {0, 0, 0};
        for (int64_t r = idx, d = 0; d < l; d++, r /= 3)
            counts[r % 3]++;
        cls[idx] = counts[0] * (l + 1) + counts[1];
    }
}

/* T^l(n) = C_l Π(n^⊗l) of one vector n (any length) into out[3^l], one
 * value per class (the detracer summed over how many δ pairs fall on
 * each axis), then spread by cls. val holds (l + 1)^2 doubles. */
static void ict_eval(int l, const double n[3], const int *cls, double *val, double *out)
{
    double pw[3][TSR_ICT_MAX_L + 1], nn = n[0] * n[0] + n[1] * n[1] + n[2] * n[2];
    for (int d = 0; d < 3; d++) {
        pw[d][0] = 1.0;
        for (int e = 1; e <= l; e++)
            pw[d][e] = pw[d][e - 1] * n[d];
    }
    double inv_lf = 1.0 / factorial(l);
    for (int a = 0; a <= l; a++)
        for (int b = 0; a + b <= l; b++) {
            int cnt[3] = {a, b, l - a - b};
            double sum = 0.0;
            for (int mx = 0; 2 * mx <= cnt[0]; mx++)
                for (int my = 0; 2 * my <= cnt[1]; my++)
                    for (int mz = 0; 2 * mz <= cnt[2]; mz++) {
                        int ms[3] = {mx, my, mz}, m = mx + my + mz;
                        double t = double_factorial(2 * l - 2 * m - 1) * pow(nn, m);
                        for (int d = 0; d < 3; d++)
                            t *= factorial(cnt[d]) /
                                 (factorial(ms[d]) * ldexp(1.0, ms[d]) *
                                  factorial(cnt[d] - 2 * ms[d])) *
                                 pw[d][cnt[d] - 2 * ms[d]];
                        sum += m % 2 ? -t : t;
                    }
            val[a * (l + 1) + b] = sum * inv_lf;
        }
    for (int64_t idx = 0; idx < pow3(l); idx++)
        out[idx] = val[cls[idx]];
}

/* The basis of rank l: columns in the order m = 0, then cos and sin of
 * m = 1..l, column (m, cos) the part of T^l(n) that varies as cos(mφ) under
 * rotations about z (sin likewise), found as Σ_j cos(mφ_j) T^l(n(θ, φ_j))
 * over 2l + 2 equally spaced φ_j, which is exact: T^l(n(θ, φ)) has
 * Fourier degree l in φ. Each such part spans one dimension of the rank-l
 * tensors, the parts are orthogonal, and the couplings between them vanish
 * unless m3 = m1 + m2 or |m1 - m2| (the real Clebsch-Gordan rule), so most
 * of a product's coupling is zero: 41 of 245 values on the path
 * (3, 2 -> 3) instead of all. Rank 1 is the standard basis, so rank-1
 * coordinates are the vector's components (x, y, z: cos, sin of m = 1 and
 * m = 0). */
static tsr_status ict_basis_build(int l, tsr_ict_basis *b)
{
    b->l = l;
    b->dim = 2 * l + 1;
    b->size = pow3(l);
    b->q = tsr_calloc((size_t)(b->dim * b->size), sizeof *b->q);
    int *cls = tsr_malloc((size_t)b->size * sizeof *cls);
    double *val = tsr_malloc((size_t)((l + 1) * (l + 1)) * sizeof *val);
    double *t = tsr_malloc((size_t)b->size * sizeof *t);
    tsr_status st = TSR_OK;
    if (!b->q || !cls || !val || !t) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    tsr_ict_classes(l, cls);
    if (l == 1) {
        for (int i = 0; i < 3; i++)
            b->q[4 * i] = 1.0;
        goto cleanup;
    }
    /* Polar angles to try: a part vanishes where its associated Legendre
     * function does, never at all of these. */
    static const double thetas[] = {1.1, 0.7, 1.9, 0.4, 1.4, 2.6};
    int nphi = 2 * l + 2;
    for (int col = 0; col < b->dim && st == TSR_OK; col++) {
        int m = (col + 1) / 2;
        bool sine = col > 0 && col % 2 == 0;
        double *q = b->q + col * b->size, norm = 0.0;
        for (size_t a = 0; a < sizeof thetas / sizeof *thetas && !(norm > 1e-6); a++) {
            memset(q, 0, (size_t)b->size * sizeof *q);
            for (int j = 0; j < nphi; j++) {
                double phi = 2.0 * 3.14159265358979323846 * j / nphi, f = sine ? sin(m * phi) : cos(m * phi);
                double n[3] = {sin(thetas[a]) * cos(phi), sin(thetas[a]) * sin(phi), cos(thetas[a])};
                ict_eval(l, n, cls, val, t);
                for (int64_t i = 0; i < b->size; i++)
                    q[i] += f * t[i];
            }
            norm = 0.0;
            for (int64_t i = 0; i < b->size; i++)
                norm += q[i] * q[i];
        }
        if (!(norm > 1e-6)) {
            st = tsr_error(TSR_ERR_INTERNAL, "no rank-%d ICT basis column for m = %d", l, m);
            break;
        }
        for (int64_t i = 0; i < b->size; i++)
            q[i] /= sqrt(norm);
    }
cleanup:
    free(cls);
    free(val);
    free(t);
    if (st != TSR_OK) {
        free(b->q);
        b->q = NULL;
    }
    return st;
}

void tsr_ict_plan_free(tsr_ict_plan *p)
{
    for (int i = 0; i < 3; i++)
        free(p->b[i].q);
    free(p->w);
}

tsr_status tsr_ict_plan_build(int l1, int l2, int l3, double alpha, tsr_ict_plan *p)
{
    memset(p, 0, sizeof *p);
    const int ls[3] = {l1, l2, l3};
    double *m = NULL;
    tsr_status st = TSR_OK;
    for (int i = 0; i < 3 && st == TSR_OK; i++)
        st = ict_basis_build(ls[i], &p->b[i]);
    if (st != TSR_OK)
        goto cleanup;
    int k = (l1 + l2 - l3) / 2, d1 = p->b[0].dim, d2 = p->b[1].dim, d3 = p->b[2].dim;
    int64_t fx = pow3(l1 - k), fy = pow3(l2 - k), nk = pow3(k);
    double scale = alpha * ict_path_constant(l1, l2, l3);
    m = tsr_malloc((size_t)(fx * fy) * sizeof *m);
    p->w = tsr_malloc((size_t)(d1 * d2 * d3) * sizeof *p->w);
    if (!m || !p->w) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    for (int a = 0; a < d1; a++)
        for (int c = 0; c < d2; c++) {
            const double *x = p->b[0].q + a * p->b[0].size, *y = p->b[1].q + c * p->b[1].size;
            for (int64_t i = 0; i < fx; i++)
                for (int64_t j = 0; j < fy; j++) {
                    double s = 0.0;
                    for (int64_t t = 0; t < nk; t++)
                        s += x[i * nk + t] * y[t * fy + j];
                    m[i * fy + j] = s;
                }
            for (int r = 0; r < d3; r++) {
                const double *z = p->b[2].q + r * p->b[2].size;
                double s = 0.0;
                for (int64_t i = 0; i < fx * fy; i++)
                    s += z[i] * m[i];
                p->w[((int64_t)r * d1 + a) * d2 + c] = scale * s;
            }
        }
    /* The couplings the basis makes zero by symmetry come out as rounding
     * errors; they are set to zero exactly, so the kernels skip them. */
    double most = 0.0;
    for (int64_t i = 0; i < (int64_t)d1 * d2 * d3; i++)
        most = fabs(p->w[i]) > most ? fabs(p->w[i]) : most;
    for (int64_t i = 0; i < (int64_t)d1 * d2 * d3; i++)
        if (fabs(p->w[i]) < 1e-12 * most)
            p->w[i] = 0.0;
cleanup:
    free(m);
    if (st != TSR_OK)
        tsr_ict_plan_free(p);
    return st;
}

/* ------------------------------------------------------------------- ICT */

static tsr_status ict_attrs_read(const tsr_node *node, int *l, bool *normalize, bool *coords)
{
    TSR_CHECK(rank_attr(node, "l", l));
    TSR_CHECK(flag_attr(node, "normalize", normalize));
    return flag_attr(node, "coordinates", coords);
}

static tsr_status ict_infer(tsr_infer_ctx *c)
{
    int l = 0;
    bool normalize = false, coords = false;
    TSR_CHECK(ict_attrs_read(c->node, &l, &normalize, &coords));
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *v = c->inputs[0];
    if (v->rank >= 0 && (v->rank != 2 || (tsr_dim_known(v->dims[1]) && v->dims[1] != 3))) {
        char got[128];
        tsr_shape_format(got, sizeof got, v->rank, v->dims);
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "input '%s' has shape %s; ICT takes vectors [E, 3]", v->name, got);
    }
    int64_t out[2] = {v->rank == 2 ? v->dims[0] : TSR_DIM_UNKNOWN, ict_width(l, coords)};
    tsr_infer_set(c, 0, v->dtype, 2, out);
    return TSR_OK;
}

/* clang-format off */
#define ICT_DEFINE(T)                                                                              \
    static int64_t ict_run_##T(const T *v, T *out, int64_t e, int l, bool normalize,               \
                               const int *cls, const tsr_ict_basis *q, double *scratch,            \
                               int threads)                                                        \
    {                                                                                              \
        int64_t size = pow3(l), bad = e, width = q ? q->dim : size;                                \
        _Pragma("omp parallel for num_threads(threads) reduction(min : bad) if (e * size > 65536)")\
        for (int64_t i = 0; i < e; i++) {                                                          \
            size_t per = (size_t)(size + (l + 1) * (l + 1));                                       \
            double *row = scratch + (size_t)omp_get_thread_num() * per;                            \
            double n[3] = {v[3 * i], v[3 * i + 1], v[3 * i + 2]};                                  \
            double len = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);                            \
            if (normalize && !(len > 0.0 && isfinite(len))) {                                      \
                bad = i < bad ? i : bad;                                                           \
                continue;                                                                          \
            }                                                                                      \
            for (int d = 0; normalize && d < 3; d++)                                               \
                n[d] /= len;                                                                       \
            ict_eval(l, n, cls, row + size, row);                                                  \
            for (int64_t j = 0; j < width; j++) {                                                  \
                double t = row[j];                                                                 \
                if (q) {                                                                           \
                    t = 0.0;                                                                       \
                    for (int64_t m = 0; m < size; m++)                                             \
                        t += q->q[j * size + m] * row[m];                                          \
                }                                                                                  \
                out[i * width + j] = (T)t;                                                         \
            }                                                                                      \
        }                                                                                          \
        return bad < e ? bad : -1;                                                                 \
    }
/* clang-format on */

ICT_DEFINE(float)
ICT_DEFINE(double)

static tsr_status ict_ref(const tsr_kernel_ctx *k)
{
    int l = 0;
    bool normalize = false, coords = false;
    TSR_CHECK(ict_attrs_read(k->node, &l, &normalize, &coords));
    const tsr_tensor *v = k->inputs[0];
    if (v->rank != 2 || v->dims[1] != 3)
        return tsr_error(TSR_ERR_SHAPE, "ICT takes vectors [E, 3], got rank %d", v->rank);
    tsr_ict_basis basis = {0};
    if (coords)
        TSR_CHECK(ict_basis_build(l, &basis));
    int64_t size = pow3(l);
    int *cls = tsr_malloc((size_t)size * sizeof *cls);
    double *scratch =
        tsr_malloc((size_t)k->threads * (size_t)(size + (l + 1) * (l + 1)) * sizeof *scratch);
    if (!cls || !scratch) {
        free(cls);
        free(scratch);
        free(basis.q);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    tsr_ict_classes(l, cls);
    const tsr_ict_basis *q = coords ? &basis : NULL;
    int64_t bad = v->dtype == TSR_FLOAT64
                      ? ict_run_double(v->data, k->outputs[0]->data, v->dims[0], l, normalize, cls,
                                       q, scratch, k->threads)
                      : ict_run_float(v->data, k->outputs[0]->data, v->dims[0], l, normalize, cls,
                                      q, scratch, k->threads);
    free(cls);
    free(scratch);
    free(basis.q);
    if (bad >= 0) {
        double n[3] = {tsr_get_f(v, 3 * bad), tsr_get_f(v, 3 * bad + 1), tsr_get_f(v, 3 * bad + 2)};
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "vector %lld is (%g, %g, %g); ICT with normalize = 1 needs vectors of "
                         "positive finite length",
                         (long long)bad, n[0], n[1], n[2]);
    }
    return TSR_OK;
}

/* Per class value about (l/2 + 1)^3 terms of a dozen operations, plus the
 * normalization. */
static double ict_flops(const tsr_infer_ctx *c)
{
    const tsr_value *v = c->inputs[0];
    int64_t l = tsr_attr_int(c->node, "l");
    if (v->rank != 2 || !tsr_dim_known(v->dims[0]) || l < 0 || l > TSR_ICT_MAX_L)
        return 0.0;
    double half = (double)(l / 2 + 1);
    return (double)v->dims[0] *
           (10.0 + (double)((l + 1) * (l + 2) / 2) * 12.0 * half * half * half);
}

/* dv from dn through n = v/|v|: (dn - n (n . dn)) / |v|. */
static tsr_status ict_normalize_grad(tsr_grad_ctx *c, const char *v, const char *dn,
                                     const char **out)
{
    tsr_attr attrs[2] = {TSR_ATTR_I("l", 1), TSR_ATTR_I("normalize", 1)};
    tsr_attr keep = TSR_ATTR_I("keepdims", 1);
    const int64_t axis = 1;
    const char *n, *axes, *nd, *s, *ns, *tangent, *vv, *sq, *len;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ICT, 1, &v, 2, attrs, 1, &n));
    TSR_CHECK(tsr_grad_ints(c, 1, &axis, &axes));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, n, dn, &nd));
    const char *ins[2] = {nd, axes};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &keep, 1, &s));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, n, s, &ns));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Sub, dn, ns, &tangent));
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, v, v, &vv));
    ins[0] = vv;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &keep, 1, &sq));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sqrt, sq, &len));
    return tsr_grad_binary(c, &tsr_op_Div, tangent, len, out);
}

static tsr_status ict_grad(tsr_grad_ctx *c)
{
    int l = 0;
    bool normalize = false, coords = false;
    TSR_CHECK(ict_attrs_read(tsr_grad_node(c), &l, &normalize, &coords));
    if (l == 0)
        return TSR_OK; /* T^0 = 1 */
    const char *v = tsr_grad_input(c, 0), *dn = tsr_grad_dy(c, 0);
    /* In coordinates the product's rank-1 result is dn itself (Q = I at
     * rank 1); at l = 1 the coordinates are the components. */
    if (l > 1) {
        tsr_attr lower[3] = {TSR_ATTR_I("l", l - 1), TSR_ATTR_I("normalize", normalize),
                             TSR_ATTR_I("coordinates", coords)};
        tsr_attr path[5] = {TSR_ATTR_I("l1", l), TSR_ATTR_I("l2", l - 1), TSR_ATTR_I("l3", 1),
                            TSR_ATTR_F("alpha", (2.0 * l - 1.0) / ict_path_constant(l, l - 1, 1)),
                            TSR_ATTR_I("coordinates", coords)};
        const char *t, *ins[2];
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_ICT, 1, &v, 3, lower, 1, &t));
        ins[0] = dn;
        ins[1] = t;
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_ICTProduct, 2, ins, 5, path, 1, &dn));
    }
    if (normalize)
        TSR_CHECK(ict_normalize_grad(c, v, dn, &dn));
    return tsr_grad_contribute(c, 0, dn);
}

const tsr_op_def tsr_op_ICT = {
    .name = "ICT",
    .domain = "ai.tessera",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = ict_attrs,
    .locality = TSR_LOCALITY_WINDOW,
    .infer = ict_infer,
    .ref = ict_ref,
    .flops = ict_flops,
    .grad = ict_grad,
};

/* ----------------------------------------------------------- ICTProduct */

tsr_status tsr_ict_product_attrs_read(const tsr_node *node, int ls[3], double *alpha, bool *sum,
                                      bool *coords)
{
    static const char *const names[3] = {"l1", "l2", "l3"};
    for (int i = 0; i < 3; i++)
        TSR_CHECK(rank_attr(node, names[i], &ls[i]));
    if (!ict_path_valid(ls[0], ls[1], ls[2]))
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "ranks %d x %d -> %d are not a product path: it needs |l1 - l2| <= l3 <= "
                         "l1 + l2 and l1 + l2 - l3 even",
                         ls[0], ls[1], ls[2]);
    *alpha = tsr_attr_float(node, "alpha");
    if (!isfinite(*alpha))
        return tsr_error(TSR_ERR_UNSUPPORTED, "alpha is %g, must be finite", *alpha);
    TSR_CHECK(flag_attr(node, "sum_channels", sum));
    return flag_attr(node, "coordinates", coords);
}

static tsr_status ict_product_infer(tsr_infer_ctx *c)
{
    int ls[3];
    double alpha;
    bool sum, coords;
    TSR_CHECK(tsr_ict_product_attrs_read(c->node, ls, &alpha, &sum, &coords));
    for (int i = 0; i < 2; i++)
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[0], *y = c->inputs[1];
    if (x->dtype != y->dtype)
        return tsr_infer_error(c, TSR_ERR_DTYPE, "x is %s but y is %s; both must share one dtype",
                               tsr_dtype_name(x->dtype), tsr_dtype_name(y->dtype));
    int64_t n = TSR_DIM_UNKNOWN, ch = 1;
    int rank = 2;
    bool ch_known = true;
    for (int i = 0; i < 2; i++) {
        const tsr_value *t = c->inputs[i];
        if (t->rank < 0) {
            rank = -1;
            continue;
        }
        int64_t want = ict_width(ls[i], coords);
        if ((t->rank != 2 && t->rank != 3) || (tsr_dim_known(t->dims[1]) && t->dims[1] != want)) {
            char got[128];
            tsr_shape_format(got, sizeof got, t->rank, t->dims);
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "%s ('%s') has shape %s; a rank-%d input is [N, %lld] or [N, "
                                   "%lld, C]%s",
                                   i ? "y" : "x", t->name, got, ls[i], (long long)want,
                                   (long long)want, coords ? " in coordinates" : "");
        }
        if (tsr_dim_known(t->dims[0])) {
            if (tsr_dim_known(n) && n != t->dims[0])
                return tsr_infer_error(c, TSR_ERR_SHAPE, "x has %lld rows but y has %lld",
                                       (long long)n, (long long)t->dims[0]);
            n = t->dims[0];
        }
        if (t->rank == 3) {
            rank = rank < 0 ? -1 : 3;
            int64_t tc = t->dims[2];
            if (!tsr_dim_known(tc))
                ch_known = false;
            else if (tc != 1 && ch != 1 && tc != ch)
                return tsr_infer_error(c, TSR_ERR_SHAPE,
                                       "x and y have %lld and %lld channels; they must be equal or "
                                       "one of them 1",
                                       (long long)ch, (long long)tc);
            else if (tc != 1)
                ch = tc;
        }
    }
    if (rank < 0)
        return TSR_OK; /* output left of unknown rank */
    int64_t out[3] = {n, ict_width(ls[2], coords), ch_known ? ch : TSR_DIM_UNKNOWN};
    tsr_infer_set(c, 0, x->dtype, sum ? 2 : rank, out);
    return TSR_OK;
}

static int64_t channels_of(const tsr_tensor *t)
{
    return t->rank == 3 ? t->dims[2] : 1;
}

/* zt[r][c] = Σ_s,t w[r][s][t] xt[s][c] yt[t][c], an input of one channel
 * broadcast: it is folded into the coupling first, so the per-channel work
 * is d3 x d1 (or d3 x d2) multiply-adds. */
static void ict_couple(const tsr_ict_plan *p, const double *xt, const double *yt, double *zt,
                       int64_t cx, int64_t cy, int64_t ch)
{
    int d1 = p->b[0].dim, d2 = p->b[1].dim, d3 = p->b[2].dim;
    for (int r = 0; r < d3; r++) {
        double *zr = zt + r * ch;
        const double *wr = p->w + (int64_t)r * d1 * d2;
        if (cy == 1) {
            for (int s = 0; s < d1; s++) {
                double a = 0.0;
                for (int t = 0; t < d2; t++)
                    a += wr[s * d2 + t] * yt[t];
                const double *xs = xt + s * cx;
                for (int64_t c = 0; c < ch; c++)
                    zr[c] += a * xs[cx == 1 ? 0 : c];
            }
        } else if (cx == 1) {
            for (int t = 0; t < d2; t++) {
                double a = 0.0;
                for (int s = 0; s < d1; s++)
                    a += wr[s * d2 + t] * xt[s];
                const double *ys = yt + t * cy;
                for (int64_t c = 0; c < ch; c++)
                    zr[c] += a * ys[c];
            }
        } else {
            for (int s = 0; s < d1; s++)
                for (int t = 0; t < d2; t++) {
                    double w = wr[s * d2 + t];
                    const double *xs = xt + s * cx, *ys = yt + t * cy;
                    for (int64_t c = 0; c < ch; c++)
                        zr[c] += w * xs[c] * ys[c];
                }
        }
    }
}

/* Per row: coordinates of x and y (channels as given), their coupling to
 * the output's coordinates (broadcast channels), and back to components.
 * With sum, the output's coordinates are summed over the channels first
 * (z has cho = 1 channel). With coords, inputs and output are coordinates
 * already. scratch holds d1 cx + d2 cy + (d3 + 1) ch doubles per thread. */
/* clang-format off */
#define ICT_PRODUCT_DEFINE(T)                                                                      \
    static void ict_product_run_##T(const tsr_ict_plan *p, const T *x, const T *y, T *z,           \
                                    int64_t n, int64_t cx, int64_t cy, int64_t ch, bool sum,       \
                                    bool coords, double *scratch, int threads)                     \
    {                                                                                              \
        const tsr_ict_basis *b1 = &p->b[0], *b2 = &p->b[1], *b3 = &p->b[2];                        \
        int d1 = b1->dim, d2 = b2->dim, d3 = b3->dim;                                              \
        int64_t w1 = coords ? d1 : b1->size, w2 = coords ? d2 : b2->size;                          \
        int64_t w3 = coords ? d3 : b3->size;                                                       \
        size_t per = (size_t)(d1 * cx + d2 * cy + (d3 + 1) * ch);                                  \
        _Pragma("omp parallel for num_threads(threads) if (n * (int64_t)per > 65536)")             \
        for (int64_t a = 0; a < n; a++) {                                                          \
            double *xt = scratch + (size_t)omp_get_thread_num() * per;                             \
            double *yt = xt + d1 * cx, *zt = yt + d2 * cy, *acc = zt + d3 * ch;                    \
            const T *xa = x + a * w1 * cx, *ya = y + a * w2 * cy;                                  \
            int64_t cho = sum ? 1 : ch;                                                            \
            T *za = z + a * w3 * cho;                                                              \
            memset(xt, 0, (per - (size_t)ch) * sizeof *xt);                                        \
            for (int64_t i = 0; coords && i < d1 * cx; i++)                                        \
                xt[i] = xa[i];                                                                     \
            for (int64_t i = 0; coords && i < d2 * cy; i++)                                        \
                yt[i] = ya[i];                                                                     \
            for (int m = 0; !coords && m < d1; m++)                                                \
                for (int64_t i = 0; i < b1->size; i++) {                                           \
                    double q = b1->q[m * b1->size + i];                                            \
                    for (int64_t c = 0; c < cx; c++)                                               \
                        xt[m * cx + c] += q * xa[i * cx + c];                                      \
                }                                                                                  \
            for (int m = 0; !coords && m < d2; m++)                                                \
                for (int64_t i = 0; i < b2->size; i++) {                                           \
                    double q = b2->q[m * b2->size + i];                                            \
                    for (int64_t c = 0; c < cy; c++)                                               \
                        yt[m * cy + c] += q * ya[i * cy + c];                                      \
                }                                                                                  \
            ict_couple(p, xt, yt, zt, cx, cy, ch);                                                 \
            for (int r = 0; sum && r < d3; r++)                                                    \
                for (int64_t c = 1; c < ch; c++)                                                   \
                    zt[r * ch] += zt[r * ch + c];                                                  \
            for (int r = 0; coords && r < d3; r++)                                                 \
                for (int64_t c = 0; c < cho; c++)                                                  \
                    za[r * cho + c] = (T)zt[r * ch + c];                                           \
            for (int64_t i = 0; !coords && i < b3->size; i++) {                                    \
                memset(acc, 0, (size_t)cho * sizeof *acc);                                         \
                for (int r = 0; r < d3; r++) {                                                     \
                    double q = b3->q[r * b3->size + i];                                            \
                    for (int64_t c = 0; c < cho; c++)                                              \
                        acc[c] += q * zt[r * ch + c];                                              \
                }                                                                                  \
                for (int64_t c = 0; c < cho; c++)                                                  \
                    za[i * cho + c] = (T)acc[c];                                                   \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

ICT_PRODUCT_DEFINE(float)
ICT_PRODUCT_DEFINE(double)

static tsr_status ict_product_ref(const tsr_kernel_ctx *k)
{
    int ls[3];
    double alpha;
    bool sum, coords;
    TSR_CHECK(tsr_ict_product_attrs_read(k->node, ls, &alpha, &sum, &coords));
    const tsr_tensor *x = k->inputs[0], *y = k->inputs[1];
    tsr_tensor *z = k->outputs[0];
    int64_t cx = channels_of(x), cy = channels_of(y), ch = cx > cy ? cx : cy;
    if (x->dims[0] != y->dims[0] || x->dims[1] != ict_width(ls[0], coords) ||
        y->dims[1] != ict_width(ls[1], coords) || z->dims[1] != ict_width(ls[2], coords) ||
        (cx != 1 && cx != ch) || (cy != 1 && cy != ch) || channels_of(z) != (sum ? 1 : ch))
        return tsr_error(TSR_ERR_SHAPE,
                         "x, y and z have inconsistent shapes for path %d x %d -> %d", ls[0], ls[1],
                         ls[2]);
    tsr_ict_plan plan;
    TSR_CHECK(tsr_ict_plan_build(ls[0], ls[1], ls[2], alpha, &plan));
    size_t per = (size_t)(plan.b[0].dim * cx + plan.b[1].dim * cy + (plan.b[2].dim + 1) * ch);
    double *scratch = tsr_malloc((size_t)k->threads * per * sizeof *scratch + 1);
    if (!scratch) {
        tsr_ict_plan_free(&plan);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    if (z->dtype == TSR_FLOAT64)
        ict_product_run_double(&plan, x->data, y->data, z->data, x->dims[0], cx, cy, ch, sum,
                               coords, scratch, k->threads);
    else
        ict_product_run_float(&plan, x->data, y->data, z->data, x->dims[0], cx, cy, ch, sum,
                              coords, scratch, k->threads);
    free(scratch);
    tsr_ict_plan_free(&plan);
    return TSR_OK;
}

/* Projections into coordinates, the coupling, and back, per row. */
static double ict_product_flops(const tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[0], *y = c->inputs[1], *z = c->outputs[0];
    if (z->rank < 2 || !tsr_dim_known(z->dims[0]) || (z->rank == 3 && !tsr_dim_known(z->dims[2])))
        return 0.0;
    int64_t ls[3] = {tsr_attr_int(c->node, "l1"), tsr_attr_int(c->node, "l2"),
                     tsr_attr_int(c->node, "l3")};
    double cx = x->rank == 3 ? (double)x->dims[2] : 1.0,
           cy = y->rank == 3 ? (double)y->dims[2] : 1.0;
    double ch = z->rank == 3 ? (double)z->dims[2] : 1.0;
    double d1 = 2.0 * ls[0] + 1, d2 = 2.0 * ls[1] + 1, d3 = 2.0 * ls[2] + 1;
    double projections = d1 * (double)pow3((int)ls[0]) * cx + d2 * (double)pow3((int)ls[1]) * cy +
                         d3 * (double)pow3((int)ls[2]) * ch;
    return 2.0 * (double)z->dims[0] *
           (1.5 * d1 * d2 * d3 * ch + (tsr_attr_int(c->node, "coordinates") ? 0.0 : projections));
}

/* The adjoint product ins[0] x ins[1] on `path` for input i, brought to
 * input i's shape: summed over the channels inside the product when input
 * i has no channel axis (sum_channels), by SumTo when it has one of size
 * 1 (none when its channels are the product's), and broadcast over input
 * i's channels when neither operand has any (the gradient of a
 * sum_channels node with one channel-less input). */
static tsr_status ict_product_adjoint(tsr_grad_ctx *c, int i, const char *const ins[2],
                                      const int path[3], double alpha, bool coords)
{
    int in_rank = tsr_grad_value(c, tsr_grad_input(c, i))->rank;
    bool wide = tsr_grad_value(c, ins[0])->rank == 3 || tsr_grad_value(c, ins[1])->rank == 3;
    tsr_attr a[6] = {TSR_ATTR_I("l1", path[0]),
                     TSR_ATTR_I("l2", path[1]),
                     TSR_ATTR_I("l3", path[2]),
                     TSR_ATTR_F("alpha", alpha),
                     TSR_ATTR_I("sum_channels", in_rank == 2 && wide),
                     TSR_ATTR_I("coordinates", coords)};
    const char *g;
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ICTProduct, 2, ins, 6, a, 1, &g));
    if (in_rank == 3 && !wide) {
        const int64_t axis = 2;
        const char *axes, *shape;
        TSR_CHECK(tsr_grad_ints(c, 1, &axis, &axes));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Unsqueeze, g, axes, &g));
        TSR_CHECK(tsr_grad_shape(c, tsr_grad_input(c, i), &shape));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Expand, g, shape, &g));
        return tsr_grad_contribute(c, i, g);
    }
    /* The product's rows are input i's (the op requires it), so only a
     * channel axis of 1 can need a sum; SumTo would otherwise copy, since
     * a symbolic atom count cannot be proved equal. */
    const tsr_value *gv = tsr_grad_value(c, g), *iv = tsr_grad_value(c, tsr_grad_input(c, i));
    bool same =
        in_rank == 3 && gv->rank == 3 && tsr_dim_known(iv->dims[2]) && iv->dims[2] == gv->dims[2];
    return in_rank == 3 && !same ? tsr_grad_contribute_sum(c, i, g) : tsr_grad_contribute(c, i, g);
}

/* dx = ICTProduct(dz, y; l3, l2 -> l1), dy = ICTProduct(x, dz; l1, l3 -> l2). */
static tsr_status ict_product_grad(tsr_grad_ctx *c)
{
    int ls[3];
    double alpha;
    bool sum, coords;
    TSR_CHECK(tsr_ict_product_attrs_read(tsr_grad_node(c), ls, &alpha, &sum, &coords));
    double k = alpha * ict_path_constant(ls[0], ls[1], ls[2]);
    const char *x = tsr_grad_input(c, 0), *y = tsr_grad_input(c, 1), *dz = tsr_grad_dy(c, 0);
    if (tsr_grad_wants(c, 0)) {
        const char *ins[2] = {dz, y};
        const int path[3] = {ls[2], ls[1], ls[0]};
        TSR_CHECK(ict_product_adjoint(c, 0, ins, path, k / ict_path_constant(ls[2], ls[1], ls[0]),
                                      coords));
    }
    if (tsr_grad_wants(c, 1)) {
        const char *ins[2] = {x, dz};
        const int path[3] = {ls[0], ls[2], ls[1]};
        TSR_CHECK(ict_product_adjoint(c, 1, ins, path, k / ict_path_constant(ls[0], ls[2], ls[1]),
                                      coords));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_ICTProduct = {
    .name = "ICTProduct",
    .domain = "ai.tessera",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = ict_product_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = ict_product_infer,
    .ref = ict_product_ref,
    .flops = ict_product_flops,
    .grad = ict_product_grad,
};

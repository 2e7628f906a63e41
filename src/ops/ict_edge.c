/* The edge convolution of ICTP potentials as fused ops, domain ai.tessera
 * (docs/ictp.md): one ICT product per edge, weighted per channel and
 * summed into the receiving node, without a per-edge tensor.
 *
 *   ICTEdgeMessage(x [N, d_in, C], y [E, d2], w [W, C], src [E], dst [E], rows [E]?)
 *       -> z [N, d_out, C]
 *   ICTEdgeMessageGrad(a [N, d1, C], y [E, d2], w [W, C], b [N, d3, C], ia [E], ib [E],
 *       rows [E]?) -> dw [W, C], dy [E, d2]
 *   attributes l1, l2, l3 (a product path), alpha, and for the first transpose
 *
 * Edge e takes its weights from row rows[e] of w (int64; without rows, W =
 * E and row e): edges whose weights are equal share a row (an edge and its
 * reverse, whose radial weights are one function of one distance), and
 * dw[u] sums the derivatives of the edges on row u (none: zero).
 *
 * Every tensor holds the 2l+1 coordinates of ICTProduct's coordinates = 1
 * (d_l = 2l+1), channels fastest; src, dst, ia, ib are int64 rows of the
 * node tensors. With W[r][s][t] = alpha K <Q3_r, contract_k(Q1_s, Q2_t)>,
 * the coupling of ICTProduct on the path (l1, l2 -> l3), both ops are
 * derivatives of one form, linear in each of its four arguments:
 *
 *     T(a, y, w, b) = Σ_e Σ_rstc W[r][s][t] a[ia_e, s, c] y[e, t] w[rows_e, c] b[ib_e, r, c]
 *
 * transpose = 0: z = ∂T/∂b with a = x, ia = src, ib = dst, i.e.
 *     z[dst_e, r, c] += w[rows_e, c] Σ_st W[r][s][t] x[src_e, s, c] y[e, t]
 * which is Σ_{e→i} w_e ⊙ ICTProduct(x[src_e], y_e) (d_in = d1, d_out = d3);
 * transpose = 1: z = ∂T/∂a with b = x, ib = src, ia = dst (d_in = d3,
 * d_out = d1). ICTEdgeMessageGrad gives dw = ∂T/∂w and dy = ∂T/∂y.
 * So every gradient is one of these ops again: the gradient of a message
 * with respect to x is the transposed message of dz from dst back to src,
 * and with respect to w and y it is ICTEdgeMessageGrad; the gradient of
 * ICTEdgeMessageGrad is messages and ICTEdgeMessageGrad with the incoming
 * gradients in place of w or y. Derivatives of any order exist, and none
 * of them keeps a tensor per edge and channel.
 *
 * The output of a message has x's rows: src and dst index one set of
 * nodes (the atoms), as do ia and ib; rows index w's. An index out of
 * range is an error that names it. */
#include "ops/ict_edge.h"
#include "autodiff/autodiff.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tsr_attr_def edge_message_attrs[] = {
    {"l1", TSR_ATTR_INT, true},          {"l2", TSR_ATTR_INT, true},
    {"l3", TSR_ATTR_INT, true},          {"alpha", TSR_ATTR_FLOAT, .f = 1.0},
    {"transpose", TSR_ATTR_INT, .i = 0}, {NULL}};

static const tsr_attr_def edge_grad_attrs[] = {{"l1", TSR_ATTR_INT, true},
                                               {"l2", TSR_ATTR_INT, true},
                                               {"l3", TSR_ATTR_INT, true},
                                               {"alpha", TSR_ATTR_FLOAT, .f = 1.0},
                                               {NULL}};

tsr_status tsr_ict_edge_attrs_read(const tsr_node *node, int ls[3], double *alpha, bool *transpose)
{
    static const char *const names[3] = {"l1", "l2", "l3"};
    for (int i = 0; i < 3; i++) {
        int64_t v = tsr_attr_int(node, names[i]);
        if (v < 0 || v > TSR_ICT_MAX_L)
            return tsr_error(TSR_ERR_UNSUPPORTED, "%s is %lld; ranks 0..%d are supported", names[i],
                             (long long)v, TSR_ICT_MAX_L);
        ls[i] = (int)v;
    }
    if (ls[2] < abs(ls[0] - ls[1]) || ls[2] > ls[0] + ls[1] || (ls[0] + ls[1] - ls[2]) % 2)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "ranks %d x %d -> %d are not a product path: it needs |l1 - l2| <= l3 <= "
                         "l1 + l2 and l1 + l2 - l3 even",
                         ls[0], ls[1], ls[2]);
    *alpha = tsr_attr_float(node, "alpha");
    if (!isfinite(*alpha))
        return tsr_error(TSR_ERR_UNSUPPORTED, "alpha is %g, must be finite", *alpha);
    *transpose = false;
    if (node->op == &tsr_op_ICTEdgeMessage) {
        int64_t t = tsr_attr_int(node, "transpose");
        if (t != 0 && t != 1)
            return tsr_error(TSR_ERR_UNSUPPORTED, "transpose is %lld, must be 0 or 1",
                             (long long)t);
        *transpose = t == 1;
    }
    return TSR_OK;
}

/* Checks one input's rank and known sizes against `want` (TSR_DIM_UNKNOWN:
 * any), and unifies the sizes named by `bind` (-1: none) across inputs. */
static tsr_status require_shape(tsr_infer_ctx *c, int i, const char *what, int rank,
                                const int64_t *want, int64_t *const *bind)
{
    const tsr_value *v = c->inputs[i];
    bool ok = v->rank == rank;
    for (int d = 0; ok && d < rank; d++) {
        if (!tsr_dim_known(v->dims[d]))
            continue;
        if (tsr_dim_known(want[d]) && v->dims[d] != want[d])
            ok = false;
        else if (bind[d] && tsr_dim_known(*bind[d]) && *bind[d] != v->dims[d])
            ok = false;
        else if (bind[d])
            *bind[d] = v->dims[d];
    }
    if (ok)
        return TSR_OK;
    char got[128], exp[128];
    tsr_shape_format(got, sizeof got, v->rank, v->dims);
    int64_t shown[TSR_MAX_RANK];
    for (int d = 0; d < rank; d++)
        shown[d] = tsr_dim_known(want[d]) ? want[d] : bind[d] ? *bind[d] : TSR_DIM_UNKNOWN;
    tsr_shape_format(exp, sizeof exp, rank, shown);
    return tsr_infer_error(c, TSR_ERR_SHAPE, "%s ('%s') has shape %s, expected %s", what, v->name,
                           got, exp);
}

/* The shared part of both inferences: nodes x (input 0) of width d_x and
 * maybe b (input 3) of width d_b, y, w, and the index inputs. */
static tsr_status infer_common(tsr_infer_ctx *c, const int ls[3], int d_x, int d_b,
                               const int *index_inputs, int64_t *n, int64_t *e, int64_t *ch)
{
    /* rows follow the two node indices. */
    bool rows = c->n_inputs > index_inputs[1] + 1 && c->inputs[index_inputs[1] + 1];
    int64_t w_rows = TSR_DIM_UNKNOWN;
    int n_float = d_b ? 4 : 3;
    for (int i = 0; i < n_float; i++)
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
    for (int i = 0; i < n_float; i++)
        if (c->inputs[i]->dtype != c->inputs[0]->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "input %d is %s but x is %s; all share one", i,
                                   tsr_dtype_name(c->inputs[i]->dtype),
                                   tsr_dtype_name(c->inputs[0]->dtype));
    for (int k = 0; k < 2 + rows; k++)
        TSR_CHECK(tsr_infer_require_dtype(c, index_inputs[0] + k, TSR_DTYPE_BIT(TSR_INT64)));
    const int64_t U = TSR_DIM_UNKNOWN;
    int64_t wx[3] = {U, d_x, U}, wy[2] = {U, 2 * ls[1] + 1}, ww[2] = {U, U}, wi[1] = {U};
    int64_t *bx[3] = {n, NULL, ch}, *by[2] = {e, NULL}, *bw[2] = {rows ? &w_rows : e, ch};
    int64_t *bi[1] = {e};
    TSR_CHECK(require_shape(c, 0, "x", 3, wx, bx));
    TSR_CHECK(require_shape(c, 1, "y", 2, wy, by));
    TSR_CHECK(require_shape(c, 2, "w", 2, ww, bw));
    if (d_b) {
        int64_t wb[3] = {U, d_b, U};
        TSR_CHECK(require_shape(c, 3, "b", 3, wb, bx));
    }
    for (int k = 0; k < 2; k++)
        TSR_CHECK(require_shape(c, index_inputs[k],
                                k ? "the destination indices" : "the source indices", 1, wi, bi));
    if (rows)
        TSR_CHECK(require_shape(c, index_inputs[1] + 1, "the weight rows", 1, wi, bi));
    return TSR_OK;
}

static tsr_status edge_message_infer(tsr_infer_ctx *c)
{
    int ls[3];
    double alpha;
    bool tr;
    TSR_CHECK(tsr_ict_edge_attrs_read(c->node, ls, &alpha, &tr));
    int d1 = 2 * ls[0] + 1, d3 = 2 * ls[2] + 1;
    int64_t n = TSR_DIM_UNKNOWN, e = TSR_DIM_UNKNOWN, ch = TSR_DIM_UNKNOWN;
    const int idx[2] = {3, 4};
    TSR_CHECK(infer_common(c, ls, tr ? d3 : d1, 0, idx, &n, &e, &ch));
    /* The node count may be symbolic: take x's dim as it is. */
    int64_t out[3] = {c->inputs[0]->dims[0], tr ? d1 : d3, ch};
    tsr_infer_set(c, 0, c->inputs[0]->dtype, 3, out);
    return TSR_OK;
}

static tsr_status edge_grad_infer(tsr_infer_ctx *c)
{
    int ls[3];
    double alpha;
    bool tr;
    TSR_CHECK(tsr_ict_edge_attrs_read(c->node, ls, &alpha, &tr));
    int64_t n = TSR_DIM_UNKNOWN, e = TSR_DIM_UNKNOWN, ch = TSR_DIM_UNKNOWN;
    const int idx[2] = {4, 5};
    TSR_CHECK(infer_common(c, ls, 2 * ls[0] + 1, 2 * ls[2] + 1, idx, &n, &e, &ch));
    int64_t dw[2] = {c->inputs[2]->dims[0], c->inputs[2]->dims[1]};
    int64_t dy[2] = {c->inputs[1]->dims[0], 2 * ls[1] + 1};
    tsr_infer_set(c, 0, c->inputs[0]->dtype, 2, dw);
    tsr_infer_set(c, 1, c->inputs[0]->dtype, 2, dy);
    return TSR_OK;
}

static tsr_status check_indices(const tsr_tensor *idx, int64_t rows, const char *what,
                                const char *of)
{
    const int64_t *v = idx->data, n = tsr_tensor_numel(idx);
    for (int64_t e = 0; e < n; e++)
        if (v[e] < 0 || v[e] >= rows)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "%s index %lld of edge %lld is out of range for %lld %s", what,
                             (long long)v[e], (long long)e, (long long)rows, of);
    return TSR_OK;
}

const int64_t *tsr_ict_edge_rows(const tsr_kernel_ctx *k, bool grad)
{
    int i = grad ? 6 : 5;
    return k->n_inputs > i && k->inputs[i] ? k->inputs[i]->data : NULL;
}

/* Shapes as the kernels need them (inference checked them, but a kernel
 * may see other sizes at run time). */
tsr_status tsr_ict_edge_check_run(const tsr_kernel_ctx *k, const int ls[3], bool transpose,
                                  bool grad)
{
    const tsr_tensor *x = k->inputs[0], *y = k->inputs[1], *w = k->inputs[2];
    const tsr_tensor *b = grad ? k->inputs[3] : k->outputs[0];
    int64_t d1 = 2 * ls[0] + 1, d2 = 2 * ls[1] + 1, d3 = 2 * ls[2] + 1;
    int64_t dx = transpose ? d3 : d1, db = transpose ? d1 : d3, e = y->dims[0], ch = w->dims[1];
    const tsr_tensor *ia = k->inputs[grad ? 4 : 3], *ib = k->inputs[grad ? 5 : 4];
    const tsr_tensor *rows = tsr_ict_edge_rows(k, grad) ? k->inputs[grad ? 6 : 5] : NULL;
    if (x->rank != 3 || b->rank != 3 || y->rank != 2 || w->rank != 2 || x->dims[1] != dx ||
        b->dims[1] != db || y->dims[1] != d2 || (!rows && w->dims[0] != e) ||
        (rows && tsr_tensor_numel(rows) != e) || x->dims[2] != ch || b->dims[2] != ch ||
        b->dims[0] != x->dims[0] || tsr_tensor_numel(ia) != e || tsr_tensor_numel(ib) != e)
        return tsr_error(TSR_ERR_SHAPE, "inconsistent shapes for path %d x %d -> %d", ls[0], ls[1],
                         ls[2]);
    TSR_CHECK(check_indices(ia, x->dims[0], "source", "nodes"));
    TSR_CHECK(check_indices(ib, x->dims[0], "destination", "nodes"));
    return rows ? check_indices(rows, w->dims[0], "weight row", "rows of w") : TSR_OK;
}

/* The reference kernels, in double, one edge after another. */
static double at(const tsr_tensor *t, int64_t i)
{
    return t->dtype == TSR_FLOAT64 ? ((const double *)t->data)[i] : ((const float *)t->data)[i];
}

static void put(tsr_tensor *t, int64_t i, double v)
{
    if (t->dtype == TSR_FLOAT64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

static tsr_status edge_message_ref(const tsr_kernel_ctx *k)
{
    int ls[3];
    double alpha;
    bool tr;
    TSR_CHECK(tsr_ict_edge_attrs_read(k->node, ls, &alpha, &tr));
    TSR_CHECK(tsr_ict_edge_check_run(k, ls, tr, false));
    const tsr_tensor *x = k->inputs[0], *y = k->inputs[1], *w = k->inputs[2];
    const int64_t *src = k->inputs[3]->data, *dst = k->inputs[4]->data;
    const int64_t *rows = tsr_ict_edge_rows(k, false);
    tsr_tensor *z = k->outputs[0];
    tsr_ict_plan p;
    TSR_CHECK(tsr_ict_plan_build(ls[0], ls[1], ls[2], alpha, &p));
    int64_t d1 = p.b[0].dim, d2 = p.b[1].dim, d3 = p.b[2].dim, ch = w->dims[1];
    int64_t dx = tr ? d3 : d1, dz = tr ? d1 : d3, n_out = tsr_tensor_numel(z);
    double *acc = tsr_calloc((size_t)(n_out ? n_out : 1), sizeof *acc);
    if (!acc) {
        tsr_ict_plan_free(&p);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    for (int64_t e = 0; e < y->dims[0]; e++) {
        int64_t u = rows ? rows[e] : e;
        for (int64_t r = 0; r < d3; r++)
            for (int64_t s = 0; s < d1; s++)
                for (int64_t t = 0; t < d2; t++) {
                    double c3 = p.w[(r * d1 + s) * d2 + t] * at(y, e * d2 + t);
                    if (c3 == 0.0)
                        continue;
                    int64_t from = tr ? r : s, to = tr ? s : r;
                    for (int64_t c = 0; c < ch; c++)
                        acc[(dst[e] * dz + to) * ch + c] +=
                            c3 * at(w, u * ch + c) * at(x, (src[e] * dx + from) * ch + c);
                }
    }
    for (int64_t i = 0; i < n_out; i++)
        put(z, i, acc[i]);
    free(acc);
    tsr_ict_plan_free(&p);
    return TSR_OK;
}

static tsr_status edge_grad_ref(const tsr_kernel_ctx *k)
{
    int ls[3];
    double alpha;
    bool tr;
    TSR_CHECK(tsr_ict_edge_attrs_read(k->node, ls, &alpha, &tr));
    TSR_CHECK(tsr_ict_edge_check_run(k, ls, false, true));
    const tsr_tensor *a = k->inputs[0], *y = k->inputs[1], *w = k->inputs[2], *b = k->inputs[3];
    const int64_t *ia = k->inputs[4]->data, *ib = k->inputs[5]->data;
    const int64_t *rows = tsr_ict_edge_rows(k, true);
    tsr_tensor *dw = k->outputs[0], *dy = k->outputs[1];
    tsr_ict_plan p;
    TSR_CHECK(tsr_ict_plan_build(ls[0], ls[1], ls[2], alpha, &p));
    int64_t d1 = p.b[0].dim, d2 = p.b[1].dim, d3 = p.b[2].dim, ch = w->dims[1];
    int64_t n_dw = tsr_tensor_numel(dw);
    double *acc = tsr_calloc((size_t)(n_dw ? n_dw : 1), sizeof *acc);
    if (!acc) {
        tsr_ict_plan_free(&p);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    for (int64_t e = 0; e < y->dims[0]; e++) {
        int64_t u = rows ? rows[e] : e;
        for (int64_t c = 0; c < ch; c++) {
            double sw = 0.0;
            for (int64_t r = 0; r < d3; r++)
                for (int64_t s = 0; s < d1; s++)
                    for (int64_t t = 0; t < d2; t++)
                        sw += p.w[(r * d1 + s) * d2 + t] * at(a, (ia[e] * d1 + s) * ch + c) *
                              at(b, (ib[e] * d3 + r) * ch + c) * at(y, e * d2 + t);
            acc[u * ch + c] += sw;
        }
        for (int64_t t = 0; t < d2; t++) {
            double sy = 0.0;
            for (int64_t r = 0; r < d3; r++)
                for (int64_t s = 0; s < d1; s++) {
                    double wt = p.w[(r * d1 + s) * d2 + t];
                    for (int64_t c = 0; wt != 0.0 && c < ch; c++)
                        sy += wt * at(a, (ia[e] * d1 + s) * ch + c) *
                              at(b, (ib[e] * d3 + r) * ch + c) * at(w, u * ch + c);
                }
            put(dy, e * d2 + t, sy);
        }
    }
    for (int64_t i = 0; i < n_dw; i++)
        put(dw, i, acc[i]);
    free(acc);
    tsr_ict_plan_free(&p);
    return TSR_OK;
}

/* Emits a message of x over (src -> dst) weighted by w (its rows, or
 * NULL) on the node's path. */
static tsr_status emit_message(tsr_grad_ctx *c, const char *x, const char *y, const char *w,
                               const char *src, const char *dst, const char *rows, const int ls[3],
                               double alpha, bool transpose, const char **out)
{
    const char *ins[6] = {x, y, w, src, dst, rows};
    tsr_attr a[5] = {TSR_ATTR_I("l1", ls[0]), TSR_ATTR_I("l2", ls[1]), TSR_ATTR_I("l3", ls[2]),
                     TSR_ATTR_F("alpha", alpha), TSR_ATTR_I("transpose", transpose)};
    return tsr_grad_emit(c, &tsr_op_ICTEdgeMessage, rows ? 6 : 5, ins, 5, a, 1, out);
}

/* dw and dy of T(a, y, w, b). */
static tsr_status emit_grad(tsr_grad_ctx *c, const char *a, const char *y, const char *w,
                            const char *b, const char *ia, const char *ib, const char *rows,
                            const int ls[3], double alpha, const char **outs)
{
    const char *ins[7] = {a, y, w, b, ia, ib, rows};
    tsr_attr at[4] = {TSR_ATTR_I("l1", ls[0]), TSR_ATTR_I("l2", ls[1]), TSR_ATTR_I("l3", ls[2]),
                      TSR_ATTR_F("alpha", alpha)};
    return tsr_grad_emit(c, &tsr_op_ICTEdgeMessageGrad, rows ? 7 : 6, ins, 4, at, 2, outs);
}

/* The weight rows of the node being differentiated (input i), or NULL. */
static const char *grad_rows(tsr_grad_ctx *c, int i)
{
    const char *rows = tsr_grad_node(c)->n_inputs > i ? tsr_grad_input(c, i) : NULL;
    return rows && *rows ? rows : NULL;
}

static tsr_status edge_message_grad(tsr_grad_ctx *c)
{
    int ls[3];
    double alpha;
    bool tr;
    TSR_CHECK(tsr_ict_edge_attrs_read(tsr_grad_node(c), ls, &alpha, &tr));
    const char *x = tsr_grad_input(c, 0), *y = tsr_grad_input(c, 1), *w = tsr_grad_input(c, 2);
    const char *src = tsr_grad_input(c, 3), *dst = tsr_grad_input(c, 4), *dz = tsr_grad_dy(c, 0);
    const char *rows = grad_rows(c, 5);
    if (tsr_grad_wants(c, 0)) {
        const char *dx;
        TSR_CHECK(emit_message(c, dz, y, w, dst, src, rows, ls, alpha, !tr, &dx));
        TSR_CHECK(tsr_grad_contribute(c, 0, dx));
    }
    if (tsr_grad_wants(c, 1) || tsr_grad_wants(c, 2)) {
        const char *g[2];
        if (tr)
            TSR_CHECK(emit_grad(c, dz, y, w, x, dst, src, rows, ls, alpha, g));
        else
            TSR_CHECK(emit_grad(c, x, y, w, dz, src, dst, rows, ls, alpha, g));
        TSR_CHECK(tsr_grad_contribute(c, 2, g[0]));
        TSR_CHECK(tsr_grad_contribute(c, 1, g[1]));
    }
    return TSR_OK;
}

/* L = <gw, ∂T/∂w> + <gy, ∂T/∂y> = T(a, y, gw, b) + T(a, gy, w, b). */
static tsr_status edge_grad_grad(tsr_grad_ctx *c)
{
    int ls[3];
    double alpha;
    bool tr;
    TSR_CHECK(tsr_ict_edge_attrs_read(tsr_grad_node(c), ls, &alpha, &tr));
    const char *a = tsr_grad_input(c, 0), *y = tsr_grad_input(c, 1), *w = tsr_grad_input(c, 2);
    const char *b = tsr_grad_input(c, 3), *ia = tsr_grad_input(c, 4), *ib = tsr_grad_input(c, 5);
    const char *gw = tsr_grad_dy(c, 0), *gy = tsr_grad_dy(c, 1), *rows = grad_rows(c, 6);
    /* The two forms: (y, w) replaced by (y, gw) and by (gy, w). */
    const char *ys[2] = {y, gy}, *ws[2] = {gw, w};
    for (int f = 0; f < 2; f++) {
        if (!ws[f] || !ys[f])
            continue;
        const char *g;
        if (tsr_grad_wants(c, 0)) {
            TSR_CHECK(emit_message(c, b, ys[f], ws[f], ib, ia, rows, ls, alpha, true, &g));
            TSR_CHECK(tsr_grad_contribute(c, 0, g));
        }
        if (tsr_grad_wants(c, 3)) {
            TSR_CHECK(emit_message(c, a, ys[f], ws[f], ia, ib, rows, ls, alpha, false, &g));
            TSR_CHECK(tsr_grad_contribute(c, 3, g));
        }
        /* T(a, y, gw, b) is linear in y, T(a, gy, w, b) in w. */
        int other = f == 0 ? 1 : 2;
        if (tsr_grad_wants(c, other)) {
            const char *gg[2];
            TSR_CHECK(emit_grad(c, a, ys[f], ws[f], b, ia, ib, rows, ls, alpha, gg));
            TSR_CHECK(tsr_grad_contribute(c, other, gg[f == 0 ? 1 : 0]));
        }
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_ICTEdgeMessage = {
    .name = "ICTEdgeMessage",
    .domain = "ai.tessera",
    .min_inputs = 5,
    .max_inputs = 6,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = edge_message_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = edge_message_infer,
    .ref = edge_message_ref,
    .grad = edge_message_grad,
};

const tsr_op_def tsr_op_ICTEdgeMessageGrad = {
    .name = "ICTEdgeMessageGrad",
    .domain = "ai.tessera",
    .min_inputs = 6,
    .max_inputs = 7,
    .min_outputs = 2,
    .max_outputs = 2,
    .attrs = edge_grad_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = edge_grad_infer,
    .ref = edge_grad_ref,
    .grad = edge_grad_grad,
};

/* The ICTP energy graph, built from a loaded model on Tessera's IR with the
 * ordinary builder API (docs/ictp-checkpoint.md §4 is the specification).
 *
 * Layouts: a rank-l feature block is [atoms, 2l+1, C], channel fastest: the
 * 2l+1 coordinates of each symmetric traceless tensor in the fixed
 * orthonormal basis of src/ops/ict.c (ICT and ICTProduct with coordinates
 * = 1) instead of its 3^l components. Every map of the model acts on the
 * components alike or is an ICT product, and the basis is an isometry, so
 * the results do not change; the per-edge tensors shrink (7 values instead
 * of 27 at rank 3) and the products skip their projections. Rank 0 is the
 * same in both. The product-basis features X carry paths as
 * [atoms, 2l+1, P·G] with the path major (index p·G + c), so that an
 * ICTProduct multiplies them channel by
 * channel; the per-species weights are permuted into that order once here
 * (the authors' order is path fastest). Every weight enters the graph as
 * the authors' tensor, followed by the transpose and the 1/√in (and
 * 1/avg_n_neighbors) factor it needs: for inference the weights are
 * constants and these fold into one constant at build time; for training
 * they are parameters named by their keys, so the optimizer sees the
 * authors' parameterization (scales in the forward pass). */
#include "models/ictp/ictp_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ICTP_DOMAIN "ai.tessera"
#define SILU_SCALE 1.6765324703310907
/* Convolution paths of one layer: at most 7 pairs per output rank. */
#define ICTP_MAX_PATHS (7 * (ICTP_MAX_L + 1))

/* A builder with a sticky status: after the first failure every call
 * returns "" and does nothing, so that the model code reads as the math. */
typedef struct gb {
    tsr_graph *g;
    const tsr_ictp_model *m;
    tsr_dtype dt;
    tsr_status st;
    bool trainable; /* weights as parameters (training) or constants */
    /* Radial weights tabulated per interaction (ictp_radial_tables), or
     * NULL: the radial MLPs run in the graph. */
    const double *const *tables;
    int64_t table_n; /* the tables' intervals */
    int counter;
    int n_names, cap_names;
    char **names;
} gb;

static const char *fresh(gb *b, const char *hint)
{
    if (b->st != TSR_OK)
        return "";
    char buf[64];
    snprintf(buf, sizeof buf, "%s_%d", hint, b->counter++);
    if ((b->st = tsr_grow((void **)&b->names, &b->cap_names, b->n_names + 1, sizeof *b->names)) !=
        TSR_OK)
        return "";
    char *s = tsr_strdup(buf);
    if (!s) {
        b->st = TSR_ERR_OUT_OF_MEMORY;
        return "";
    }
    b->names[b->n_names++] = s;
    return s;
}

static const char *node_as(gb *b, const char *out, const char *op, const char *domain, int n_in,
                           const char *const *in, int n_attrs, const tsr_attr *attrs)
{
    if (b->st != TSR_OK)
        return "";
    const char *o = out ? out : fresh(b, op);
    if (b->st != TSR_OK)
        return "";
    b->st = tsr_graph_add_node(b->g, op, domain, NULL, n_in, in, 1, &o, n_attrs, attrs);
    return b->st == TSR_OK ? o : "";
}

static const char *node(gb *b, const char *op, int n_in, const char *const *in, int n_attrs,
                        const tsr_attr *attrs)
{
    return node_as(b, NULL, op, "", n_in, in, n_attrs, attrs);
}

/* A constant (or a parameter) named `name` in the graph's dtype from
 * double data; "" once the builder has failed. */
static const char *add_tensor(gb *b, const char *name, int rank, const int64_t *dims,
                              const double *data, bool parameter)
{
    if (b->st != TSR_OK)
        return "";
    tsr_tensor t = {.dtype = b->dt, .rank = rank};
    memcpy(t.dims, dims, (size_t)rank * sizeof *dims);
    int64_t n = tsr_tensor_numel(&t);
    t.data = tsr_malloc((size_t)(n ? n : 1) * tsr_dtype_size(b->dt));
    if (!t.data) {
        b->st = TSR_ERR_OUT_OF_MEMORY;
        return "";
    }
    for (int64_t i = 0; i < n; i++) {
        if (b->dt == TSR_FLOAT32)
            ((float *)t.data)[i] = (float)data[i];
        else
            ((double *)t.data)[i] = data[i];
    }
    b->st = parameter ? tsr_graph_add_parameter(b->g, name, &t)
                      : tsr_graph_add_constant(b->g, name, &t);
    free(t.data);
    return b->st == TSR_OK ? name : "";
}

/* A constant in the graph's dtype from double data. */
static const char *cst(gb *b, int rank, const int64_t *dims, const double *data)
{
    return add_tensor(b, fresh(b, "w"), rank, dims, data, false);
}

static const char *cst_scalar(gb *b, double v)
{
    const int64_t one = 1;
    return cst(b, 1, &one, &v);
}

static const char *cst_i64(gb *b, int n, const int64_t *vals)
{
    const char *name = fresh(b, "i");
    if (b->st != TSR_OK)
        return "";
    tsr_tensor t = {.dtype = TSR_INT64, .rank = 1, .dims = {n}, .data = (void *)vals};
    b->st = tsr_graph_add_constant(b->g, name, &t);
    return b->st == TSR_OK ? name : "";
}

static const char *binary(gb *b, const char *op, const char *x, const char *y)
{
    const char *in[2] = {x, y};
    return node(b, op, 2, in, 0, NULL);
}

static const char *gather(gb *b, const char *x, const char *idx)
{
    const char *in[2] = {x, idx};
    tsr_attr a = TSR_ATTR_I("axis", 0);
    return node(b, "Gather", 2, in, 1, &a);
}

static const char *reshape(gb *b, const char *x, int n, const int64_t *dims)
{
    const char *in[2] = {x, cst_i64(b, n, dims)};
    return node(b, "Reshape", 2, in, 0, NULL);
}

/* The weight w in the graph's dtype (a parameter named by its key when
 * training, else a constant), reshaped to `dims` (n_dims > 0), permuted by
 * `perm` (NULL: as it is) and multiplied by `scale`. */
static const char *weight_value(gb *b, const ictp_weight *w, int n_dims, const int64_t *dims,
                                const int64_t *perm, double scale)
{
    if (!w || b->st != TSR_OK)
        return "";
    const char *x = add_tensor(b, b->trainable ? w->key : fresh(b, "w"), w->rank, w->dims, w->data,
                               b->trainable);
    int rank = w->rank;
    if (n_dims > 0) {
        x = reshape(b, x, n_dims, dims);
        rank = n_dims;
    }
    if (perm) {
        tsr_attr a = TSR_ATTR_INTS("perm", perm, (size_t)rank);
        x = node(b, "Transpose", 1, &x, 1, &a);
    }
    return scale == 1.0 ? x : binary(b, "Mul", x, cst_scalar(b, scale));
}

static const char *concat(gb *b, int n, const char *const *xs, int axis)
{
    if (n == 1)
        return xs[0];
    tsr_attr a = TSR_ATTR_I("axis", axis);
    return node(b, "Concat", n, xs, 1, &a);
}

/* Columns [start, start + width) of the weight x [rows, cols] by a Gather
 * (folded away when x is a constant): its gradient is a scatter whose size
 * comes at run time, so the forces' graph can be differentiated again (a
 * Split's gradient, a Concat, needs static sizes there). */
static const char *columns(gb *b, const char *x, int64_t start, int64_t width)
{
    if (b->st != TSR_OK)
        return "";
    int64_t *idx = tsr_malloc((size_t)width * sizeof *idx);
    if (!idx) {
        b->st = TSR_ERR_OUT_OF_MEMORY;
        return "";
    }
    for (int64_t c = 0; c < width; c++)
        idx[c] = start + c;
    const char *in[2] = {x, cst_i64(b, (int)width, idx)};
    free(idx);
    tsr_attr a = TSR_ATTR_I("axis", 1);
    return node(b, "Gather", 2, in, 1, &a);
}

/* Cuts the weight x [rows, Σ widths] into n consecutive column blocks. */
static void split_columns(gb *b, const char *x, int n, const int64_t *widths, const char **parts)
{
    for (int k = 0, start = 0; k < n; start += (int)widths[k++])
        parts[k] = columns(b, x, start, widths[k]);
}

static const char *reduce_sum(gb *b, const char *x, int64_t axis, int keepdims)
{
    const char *in[2] = {x, cst_i64(b, 1, &axis)};
    tsr_attr a = TSR_ATTR_I("keepdims", keepdims);
    return node(b, "ReduceSum", 2, in, 1, &a);
}

/* x · sigmoid(x) as one Silu node (one pass forward, one SiluGrad pass
 * backward, where Sigmoid and Mul took two and six): the scaled SiLU
 * without its scale SILU_SCALE, which every caller folds into the weights
 * of the linear layer that follows (a constant in inference). */
static const char *silu(gb *b, const char *x)
{
    return node_as(b, NULL, "Silu", ICTP_DOMAIN, 1, &x, 0, NULL);
}

static const char *ict_product(gb *b, const char *x, const char *y, int l1, int l2, int l3)
{
    const char *in[2] = {x, y};
    tsr_attr a[4] = {TSR_ATTR_I("l1", l1), TSR_ATTR_I("l2", l2), TSR_ATTR_I("l3", l3),
                     TSR_ATTR_I("coordinates", 1)};
    return node_as(b, NULL, "ICTProduct", ICTP_DOMAIN, 2, in, 4, a);
}

static const ictp_weight *weight(gb *b, const char *fmt, ...) TSR_PRINTF(2, 3);

static const ictp_weight *weight(gb *b, const char *fmt, ...)
{
    char key[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    const ictp_weight *w = ictp_weight_get(b->m, key);
    if (!w && b->st == TSR_OK)
        b->st = tsr_error(TSR_ERR_INTERNAL, "ICTP model: weight '%s' was not loaded", key);
    return w;
}

/* Lin(x; W) with W (out, in): MatMul by W^T · scale / √in. */
static const char *lin(gb *b, const char *x, const ictp_weight *w, double scale)
{
    if (!w)
        return "";
    const int64_t perm[2] = {1, 0};
    return binary(b, "MatMul", x,
                  weight_value(b, w, 0, NULL, perm, scale / sqrt((double)w->dims[1])));
}

/* The MLP `<prefix>.{0,2,...}.weight`: Lin, σ, ..., Lin. */
static const char *mlp(gb *b, const char *x, const char *prefix, int n_layers)
{
    for (int i = 0; i < n_layers; i++) {
        x = lin(b, x, weight(b, "%s.%d.weight", prefix, 2 * i), i > 0 ? SILU_SCALE : 1.0);
        if (i + 1 < n_layers)
            x = silu(b, x);
    }
    return x;
}

/* The radial weights of an interaction (its weights under `prefix`): the
 * MLP of the basis rho, then its last layer, whole ([edges, paths·F] into
 * radial[0], n_paths = 0) or one MatMul per path's column block of F
 * ([edges, F] each into radial[q]): no Split of one product for all paths,
 * which copied every edge's weights (and in the forces' gradient a Concat
 * of them). The gradient sums the paths' products, MatMul then Add each,
 * which fuse_gemm makes one matmul accumulating in place. */
static void radial_mlp(gb *b, const char *rho, const char *prefix, int n_paths, const char **radial)
{
    const ictp_config *c = &b->m->cfg;
    const char *hidden = mlp(b, rho, prefix, c->n_radial);
    if (c->n_radial > 0)
        hidden = silu(b, hidden);
    const ictp_weight *wr = weight(b, "%s.%d.weight", prefix, 2 * c->n_radial);
    for (int q = 0; q < (n_paths ? n_paths : 1); q++)
        radial[q] = "";
    if (!wr)
        return;
    const int64_t perm2[2] = {1, 0};
    const double wr_scale = (c->n_radial > 0 ? SILU_SCALE : 1.0) / sqrt((double)wr->dims[1]);
    const char *wr_t = weight_value(b, wr, 0, NULL, perm2, wr_scale);
    if (n_paths == 0) {
        radial[0] = binary(b, "MatMul", hidden, wr_t);
        return;
    }
    int64_t widths[ICTP_MAX_PATHS];
    for (int q = 0; q < n_paths; q++)
        widths[q] = c->F;
    split_columns(b, wr_t, n_paths, widths, radial);
    for (int q = 0; q < n_paths; q++)
        radial[q] = binary(b, "MatMul", hidden, radial[q]);
}

/* Interaction t's radial weights from its table ([n][4][paths·F]): one
 * RadialSpline of r with an output [edges, F] per path into radial. */
static void radial_spline(gb *b, const char *r, int t, int n_paths, const char **radial)
{
    for (int q = 0; q < n_paths; q++)
        radial[q] = "";
    if (b->st != TSR_OK)
        return;
    const int64_t dims[3] = {b->table_n, 4, (int64_t)n_paths * b->m->cfg.F};
    const char *in[2] = {r, cst(b, 3, dims, b->tables[t])};
    for (int q = 0; q < n_paths && b->st == TSR_OK; q++)
        radial[q] = fresh(b, "radial");
    if (b->st != TSR_OK)
        return;
    tsr_attr a = TSR_ATTR_F("r_max", b->m->cfg.r_cutoff);
    b->st =
        tsr_graph_add_node(b->g, "RadialSpline", ICTP_DOMAIN, NULL, 2, in, n_paths, radial, 1, &a);
}

/* A per-species table (S, rows, cols) of weight values, gathered by species:
 * [atoms, rows, cols]. */
static const char *species_table(gb *b, const char *table, int64_t rows, int64_t cols,
                                 const char *species)
{
    const int64_t dims[3] = {b->m->cfg.n_species, rows, cols};
    return gather(b, reshape(b, table, 3, dims), species);
}

/* The values of a rank-l feature: its coordinates. */
static int64_t width(int l)
{
    return 2 * l + 1;
}

/* Uncoupled product weights [s][c][p] (the authors' order) as [S, P, G]. */
static const char *path_weights(gb *b, const ictp_weight *w)
{
    const int64_t perm[3] = {0, 2, 1};
    return weight_value(b, w, 0, NULL, perm, 1.0);
}

/* Σ_p W[s, c, p] X[k, c, p] over the paths [first, first + P) of the
 * uncoupled weights t [S, P_all, G] (path_weights), X's P. The weights per
 * channel are a rank-0 feature: the product (l, 0 -> l) is x ⊙ w, run by
 * the ICT kernels where a Mul broadcasting over the coordinates would fall
 * to ref. */
static const char *weigh_paths(gb *b, const char *x, int l, const char *t, int64_t P_all,
                               int64_t first, int64_t P, const char *species)
{
    const ictp_config *c = &b->m->cfg;
    int64_t S = c->n_species, G = c->G;
    const int64_t flat[2] = {S, P_all * G};
    if (P < P_all)
        t = columns(b, reshape(b, t, 2, flat), first * G, P * G);
    const char *out = ict_product(b, x, species_table(b, t, 1, P * G, species), l, 0, l);
    if (P > 1) {
        const int64_t dims[4] = {-1, width(l), P, G};
        out = reduce_sum(b, reshape(b, out, 4, dims), 2, 0);
    }
    return out;
}

/* B += Σ_p W[s, c, p] X[k, c, p] (or the coupled form) for one rank. */
static const char *weigh(gb *b, const char *x, int l, int64_t P, const ictp_weight *w,
                         const char *species)
{
    if (!w)
        return "";
    const ictp_config *c = &b->m->cfg;
    int64_t S = c->n_species, G = c->G;
    /* Authors: [s][c][p] (uncoupled) or [s][c·P + p][u]; here path major. */
    if (c->coupled) {
        const int64_t dims[4] = {S, G, P, G}, perm[4] = {0, 2, 1, 3};
        const char *t = weight_value(b, w, 4, dims, perm, 1.0);
        return binary(b, "MatMul", x, species_table(b, t, P * G, G, species));
    }
    return weigh_paths(b, x, l, path_weights(b, w), P, 0, P, species);
}

static const char *bessel_basis(gb *b, const char *r)
{
    const ictp_config *c = &b->m->cfg;
    tsr_attr bessel[3] = {TSR_ATTR_F("r_cutoff", c->r_cutoff), TSR_ATTR_I("n_basis", c->n_basis),
                          TSR_ATTR_I("p", c->p_cutoff)};
    return node_as(b, NULL, "BesselBasis", ICTP_DOMAIN, 1, &r, 3, bessel);
}

static void build(gb *b)
{
    const ictp_config *c = &b->m->cfg;
    const char *R = "representation.";
    int64_t S = c->n_species, F = c->F, G = c->G;
    const char *dim_n[2] = {"atoms", NULL}, *dim_e[2] = {"edges", NULL};
    const char *dim_r[2] = {"radial_rows", NULL};
    const char *dim_b[3] = {"structures", NULL, NULL};
    const int64_t d3[2] = {0, 3}, d133[3] = {0, 3, 3}, d1[1] = {0};
    if (b->st == TSR_OK &&
        ((b->st = tsr_graph_add_input(b->g, "positions", b->dt, 2, d3, dim_n)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "species", TSR_INT64, 1, d1, dim_n)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "batch", TSR_INT64, 1, d1, dim_n)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "receivers", TSR_INT64, 1, d1, dim_e)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "senders", TSR_INT64, 1, d1, dim_e)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "shift_vectors", b->dt, 2, d3, dim_e)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "strain", b->dt, 3, d133, dim_b)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "radial_edges", TSR_INT64, 1, d1, dim_r)) != TSR_OK ||
         (b->st = tsr_graph_add_input(b->g, "radial_rows", TSR_INT64, 1, d1, dim_e)) != TSR_OK))
        return;
    const char *pos = "positions", *species = "species", *strain = "strain";
    tsr_attr shape_attrs[2] = {TSR_ATTR_I("start", 0), TSR_ATTR_I("end", 1)};
    const char *n_structures = node(b, "Shape", 1, &strain, 2, shape_attrs);

    /* Edge vectors v = (r_i - r_j - S·cell)(I + ε_b), b the edge's structure. */
    const char *v = binary(b, "Sub", gather(b, pos, "receivers"), gather(b, pos, "senders"));
    v = binary(b, "Sub", v, "shift_vectors");
    const char *eps = gather(b, strain, gather(b, "batch", "receivers"));
    const int64_t de13[3] = {-1, 1, 3}, de3[2] = {-1, 3};
    const char *dv = binary(b, "MatMul", reshape(b, v, 3, de13), eps);
    v = binary(b, "Add", v, reshape(b, dv, 2, de3));
    /* The distances of the radial rows (an edge and its reverse share one):
     * the radial weights run on half the edges. */
    const char *vr = gather(b, v, "radial_edges");
    const char *r = reduce_sum(b, binary(b, "Mul", vr, vr), 1, 0);
    r = node(b, "Sqrt", 1, &r, 0, NULL);
    const char *rho = b->tables ? "" : bessel_basis(b, r);
    const char *Y[ICTP_MAX_L + 1];
    for (int l = 0; l <= c->Le; l++) {
        tsr_attr a[2] = {TSR_ATTR_I("l", l), TSR_ATTR_I("coordinates", 1)};
        Y[l] = node_as(b, NULL, "ICT", ICTP_DOMAIN, 1, &v, 2, a);
    }

    /* Embedding: h_0 = W[:, s] / √S as [atoms, 1, F]. */
    const ictp_weight *we = weight(b, "%snode_embedding.weight.0", R);
    const char *h[ICTP_MAX_L + 1] = {0};
    if (!we)
        return;
    const int64_t perm2[2] = {1, 0}, perm3[3] = {1, 0, 2};
    h[0] =
        species_table(b, weight_value(b, we, 0, NULL, perm2, 1.0 / sqrt((double)S)), 1, F, species);

    const char *energy = NULL;
    for (int t = 0; t < c->T; t++) {
        int l_in = t == 0 ? 0 : c->Lh, l_out = t == c->T - 1 ? 0 : c->Lh;
        char I[96];
        snprintf(I, sizeof I, "%sinteractions.%d.", R, t);

        /* Skip: sc_l[k, d] = Σ_c W[c, s, d] h_l[k, c] / √(F·S). */
        const char *sc[ICTP_MAX_L + 1] = {0};
        for (int l = 0; l <= l_out && l <= l_in; l++) {
            const ictp_weight *w = weight(b, "%sskip_tp.weight.%d", I, l);
            const char *tab = weight_value(b, w, 0, NULL, perm3, 1.0 / sqrt((double)(F * S)));
            sc[l] = binary(b, "MatMul", h[l], species_table(b, tab, F, F, species));
        }

        /* Mixing, then the message per rank from every path (l1, l2 -> l3). */
        const char *g[ICTP_MAX_L + 1];
        for (int l = 0; l <= l_in; l++)
            g[l] = lin(b, h[l], weight(b, "%slinear_first.weight.%d", I, l), 1.0);
        int pairs[ICTP_MAX_L + 1][7][2], n_pairs[ICTP_MAX_L + 1], n_paths = 0;
        for (int l3 = 0; l3 <= c->Le; l3++) {
            n_pairs[l3] = ictp_pairs(l3, l_in, c->Le, true, pairs[l3]);
            n_paths += n_pairs[l3];
            if (n_pairs[l3] == 0) {
                b->st =
                    tsr_error(TSR_ERR_INTERNAL, "ICTP: no convolution path reaches rank %d", l3);
                return;
            }
        }
        /* The radial weights of each path [edges, F]. */
        char prefix[112];
        snprintf(prefix, sizeof prefix, "%sconv_tp_weights", I);
        const char *radial[ICTP_MAX_PATHS];
        if (b->tables) {
            radial_spline(b, r, t, n_paths, radial);
        } else {
            radial_mlp(b, rho, prefix, n_paths, radial);
        }
        /* Each path's message: the fused gather, product with the edge
         * ICT, radial weights and sum over each atom's edges. */
        const char *A[ICTP_MAX_L + 1];
        for (int l3 = 0, q = 0; l3 <= c->Le; l3++) {
            int P = n_pairs[l3];
            const char *msgs[7];
            for (int k = 0; k < P; k++, q++) {
                int l1 = pairs[l3][k][0], l2 = pairs[l3][k][1];
                const char *in[6] = {g[l1],     Y[l2],       radial[q],
                                     "senders", "receivers", "radial_rows"};
                tsr_attr a[3] = {TSR_ATTR_I("l1", l1), TSR_ATTR_I("l2", l2), TSR_ATTR_I("l3", l3)};
                msgs[k] = node_as(b, NULL, "ICTEdgeMessage", ICTP_DOMAIN, 6, in, 3, a);
            }
            A[l3] = lin(b, concat(b, P, msgs, 2), weight(b, "%slinear_second.weight.%d", I, l3),
                        1.0 / (sqrt((double)P) * c->avg_n_neighbors));
        }

        /* Product basis. */
        char Q[112];
        snprintf(Q, sizeof Q, "%sproducts.%d.product_basis.", R, t);
        const char *B[ICTP_MAX_L + 1];
        for (int l = 0; l <= l_out; l++)
            B[l] = weigh(b, A[l], l, 1, weight(b, "%sweighted_sum.weight.%d", Q, l), species);
        const char *X[ICTP_MAX_L + 1];
        int P_cur[ICTP_MAX_L + 1], top = c->Le;
        for (int l = 0; l <= c->Le; l++) {
            X[l] = A[l];
            P_cur[l] = 1;
        }
        for (int i = 0; i < c->nu - 1; i++) {
            bool last = i == c->nu - 2;
            int target = last ? l_out : c->Le;
            bool full = !(c->symmetric && i == 0);
            if (last && !c->coupled) {
                /* The last features are only weighed per channel and summed
                 * over paths, which commutes with the channel-wise
                 * product: Σ_p w_p ⊙ (X_p ⊗ A) = (Σ_p w_p ⊙ X_p) ⊗ A per
                 * pair (l1, l2), so each pair's X is weighed first and
                 * its product runs on G channels instead of P·G, with no
                 * Expand of A and no Concat of the paths. */
                for (int l3 = 0; l3 <= target; l3++) {
                    int pp[7][2], n = ictp_pairs(l3, top, c->Le, full, pp);
                    if (n == 0) {
                        b->st = tsr_error(TSR_ERR_INTERNAL, "ICTP: no product path reaches rank %d",
                                          l3);
                        return;
                    }
                    const ictp_weight *w =
                        weight(b, "%sblocks.%d.weighted_sum.weight.%d", Q, i, l3);
                    if (!w)
                        return;
                    const char *t = path_weights(b, w);
                    int64_t P_all = 0;
                    for (int k = 0; k < n; k++)
                        P_all += P_cur[pp[k][0]];
                    for (int k = 0, first = 0; k < n; first += P_cur[pp[k++][0]]) {
                        int l1 = pp[k][0], l2 = pp[k][1];
                        const char *xw =
                            weigh_paths(b, X[l1], l1, t, P_all, first, P_cur[l1], species);
                        B[l3] = binary(b, "Add", B[l3], ict_product(b, xw, A[l2], l1, l2, l3));
                    }
                }
                break;
            }
            const char *Xn[ICTP_MAX_L + 1];
            int P_new[ICTP_MAX_L + 1];
            for (int l3 = 0; l3 <= target; l3++) {
                int pp[7][2], n = ictp_pairs(l3, top, c->Le, full, pp);
                const char *parts[7];
                P_new[l3] = 0;
                for (int k = 0; k < n; k++) {
                    int l1 = pp[k][0], l2 = pp[k][1], P1 = P_cur[l1];
                    const char *y = A[l2];
                    if (P1 > 1) {
                        const int64_t d4[4] = {-1, width(l2), 1, G}, e4[4] = {1, 1, P1, G},
                                      d3b[3] = {-1, width(l2), P1 * G};
                        const char *ex[2] = {reshape(b, y, 4, d4), cst_i64(b, 4, e4)};
                        y = reshape(b, node(b, "Expand", 2, ex, 0, NULL), 3, d3b);
                    }
                    parts[k] = ict_product(b, X[l1], y, l1, l2, l3);
                    P_new[l3] += P1;
                }
                if (n == 0) {
                    b->st =
                        tsr_error(TSR_ERR_INTERNAL, "ICTP: no product path reaches rank %d", l3);
                    return;
                }
                Xn[l3] = concat(b, n, parts, 2);
            }
            for (int l = 0; l <= target; l++) {
                X[l] = Xn[l];
                P_cur[l] = P_new[l];
            }
            top = target;
            for (int l = 0; l <= l_out; l++)
                B[l] = binary(b, "Add", B[l],
                              weigh(b, X[l], l, P_cur[l],
                                    weight(b, "%sblocks.%d.weighted_sum.weight.%d", Q, i, l),
                                    species));
        }
        for (int l = 0; l <= l_out; l++) {
            h[l] = lin(b, B[l], weight(b, "%sproducts.%d.linear.weight.%d", R, t, l), 1.0);
            if (sc[l])
                h[l] = binary(b, "Add", h[l], sc[l]);
        }

        /* Readout of the scalars. */
        const int64_t dnf[2] = {-1, F};
        const char *h0 = reshape(b, h[0], 2, dnf);
        const char *e;
        if (t < c->T - 1) {
            e = lin(b, h0, weight(b, "readouts.%d.weight", t), 1.0);
        } else {
            snprintf(prefix, sizeof prefix, "readouts.%d", t);
            e = mlp(b, h0, prefix, c->n_readout + 1);
        }
        energy = energy ? binary(b, "Add", energy, e) : e;
    }

    /* E = Σ_a scale[s] · Σ_t e_t + shift[s]. */
    const ictp_weight *scale = weight(b, "scale_shift.scale_params");
    const ictp_weight *shift = weight(b, "scale_shift.shift_params");
    if (!scale || !shift)
        return;
    const int64_t dn[1] = {-1}, ds[1] = {S};
    const char *e = reshape(b, energy, 1, dn);
    e = binary(b, "Mul", e, gather(b, cst(b, 1, ds, scale->data), species));
    const char *add_in[2] = {e, gather(b, cst(b, 1, ds, shift->data), species)};
    node_as(b, "energies", "Add", "", 2, add_in, 0, NULL);
    const char *sum_in[3] = {"energies", "batch", n_structures};
    tsr_attr ax = TSR_ATTR_I("axis", 0);
    node_as(b, "energy", "GatherGrad", ICTP_DOMAIN, 3, sum_in, 1, &ax);
    if (b->st == TSR_OK && (b->st = tsr_graph_add_output(b->g, "energy")) == TSR_OK)
        b->st = tsr_graph_add_output(b->g, "energies");
}

/* Builds the graph `fill` describes into *graph_out. */
static tsr_status build_with(gb *b, void (*fill)(gb *), tsr_graph **graph_out)
{
    *graph_out = NULL;
    TSR_CHECK(tsr_graph_create(&b->g));
    fill(b);
    for (int i = 0; i < b->n_names; i++)
        free(b->names[i]);
    free(b->names);
    if (b->st != TSR_OK) {
        tsr_error_prefix("building the ICTP graph: ");
        tsr_graph_destroy(b->g);
        return b->st;
    }
    *graph_out = b->g;
    return TSR_OK;
}

static tsr_status build_graph(const tsr_ictp_model *model, tsr_dtype dtype, bool trainable,
                              tsr_graph **graph_out)
{
    gb b = {.m = model, .dt = dtype, .trainable = trainable};
    return build_with(&b, build, graph_out);
}

/* The slot of edge (i, j, S) in a table of 2^bits edge indices (-1: free)
 * of `edges`, found by linear probing: its index, or a free slot. */
static int64_t edge_slot(const tsr_edges *edges, const int64_t *table, int bits, int64_t i,
                         int64_t j, const int32_t *S)
{
    uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15u ^ (uint64_t)j * 0xC2B2AE3D27D4EB4Fu;
    for (int k = 0; k < 3; k++)
        h = (h ^ (uint64_t)(uint32_t)S[k]) * 0x100000001B3u;
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    for (uint64_t slot = (h ^ (h >> 29)) & mask;; slot = (slot + 1) & mask) {
        int64_t e = table[slot];
        if (e < 0 || (edges->receivers[e] == i && edges->senders[e] == j &&
                      !memcmp(edges->shifts + 3 * e, S, 3 * sizeof *S)))
            return (int64_t)slot;
    }
}

tsr_status ictp_radial_rows(const tsr_edges *edges, int64_t edge_offset, int64_t row_offset,
                            int64_t *rows_out, int64_t *reps_out, int64_t *n_rows_out)
{
    int64_t n = edges->count, n_rows = 0;
    int bits = 4;
    while (((int64_t)1 << bits) < 2 * n)
        bits++;
    int64_t *table = tsr_malloc(((size_t)1 << bits) * sizeof *table);
    if (!table)
        return TSR_ERR_OUT_OF_MEMORY;
    memset(table, 0xff, ((size_t)1 << bits) * sizeof *table);
    for (int64_t e = 0; e < n; e++)
        table[edge_slot(edges, table, bits, edges->receivers[e], edges->senders[e],
                        edges->shifts + 3 * e)] = e;
    for (int64_t e = 0; e < n; e++)
        rows_out[e] = -1;
    for (int64_t e = 0; e < n; e++) {
        if (rows_out[e] >= 0)
            continue;
        const int32_t *S = edges->shifts + 3 * e;
        const int32_t back[3] = {-S[0], -S[1], -S[2]};
        int64_t r =
            table[edge_slot(edges, table, bits, edges->senders[e], edges->receivers[e], back)];
        rows_out[e] = row_offset + n_rows;
        if (r >= 0 && rows_out[r] < 0)
            rows_out[r] = row_offset + n_rows;
        reps_out[n_rows++] = edge_offset + e;
    }
    free(table);
    *n_rows_out = n_rows;
    return TSR_OK;
}

tsr_status ictp_build_graph(const tsr_ictp_model *model, tsr_dtype dtype,
                            const double *const *tables, int64_t n, tsr_graph **graph_out)
{
    gb b = {.m = model, .dt = dtype, .tables = tables, .table_n = n};
    return build_with(&b, build, graph_out);
}

/* r [n+1] -> one output per interaction, its radial weights [n+1, paths·F]. */
static void build_radial(gb *b)
{
    const ictp_config *c = &b->m->cfg;
    const int64_t dims[1] = {b->table_n + 1};
    if (b->st == TSR_OK && (b->st = tsr_graph_add_input(b->g, "r", b->dt, 1, dims, NULL)) != TSR_OK)
        return;
    const char *rho = bessel_basis(b, "r");
    for (int t = 0; t < c->T; t++) {
        char prefix[112];
        snprintf(prefix, sizeof prefix, "representation.interactions.%d.conv_tp_weights", t);
        const char *w;
        radial_mlp(b, rho, prefix, 0, &w);
        if (b->st == TSR_OK)
            b->st = tsr_graph_add_output(b->g, w);
    }
}

/* Cubic spline through f_i = f[i·K + j], i = 0..n (spacing h), into
 * table [n][4][K] as the coefficients of each interval in t in [0, 1): C2,
 * its derivatives m_i solving m_{i-1} + 4 m_i + m_{i+1} = 3 (f_{i+1} -
 * f_{i-1}) / h (Thomas's algorithm, along the K columns at once), with
 * m_0 from one-sided differences of fourth order and m_n = 0 (the
 * cutoff's: the basis and its derivative vanish at r_c). */
static tsr_status spline_fit(const double *f, int64_t n, int64_t K, double h, double *table)
{
    double *cp = tsr_malloc((size_t)n * sizeof *cp),
           *m = tsr_malloc((size_t)((n + 1) * K) * sizeof *m);
    if (!cp || !m) {
        free(cp);
        free(m);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    double *m0 = m, *mn = m + n * K;
    for (int64_t j = 0; j < K; j++) {
        m0[j] = (-25.0 * f[j] + 48.0 * f[K + j] - 36.0 * f[2 * K + j] + 16.0 * f[3 * K + j] -
                 3.0 * f[4 * K + j]) /
                (12.0 * h);
        mn[j] = 0.0;
    }
    /* Forward sweep (m_i holds d'_i), then back substitution. */
    for (int64_t i = 1; i < n; i++) {
        double denom = 4.0 - (i > 1 ? cp[i - 1] : 0.0);
        cp[i] = 1.0 / denom;
        const double *fp = f + (i + 1) * K, *fm = f + (i - 1) * K, *prev = m + (i - 1) * K;
        for (int64_t j = 0; j < K; j++)
            m[i * K + j] = (3.0 * (fp[j] - fm[j]) / h - prev[j]) / denom;
    }
    for (int64_t i = n - 2; i >= 1; i--)
        for (int64_t j = 0; j < K; j++)
            m[i * K + j] -= cp[i] * m[(i + 1) * K + j];
    /* Hermite data to coefficients: c0 = f_i, c1 = h m_i,
     * c2 = 3 (f_{i+1} - f_i) - h (2 m_i + m_{i+1}), c3 = 2 (f_i - f_{i+1}) + h (m_i + m_{i+1}). */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < K; j++) {
            double f0 = f[i * K + j], f1 = f[(i + 1) * K + j];
            double d0 = h * m[i * K + j], d1 = h * m[(i + 1) * K + j];
            double *c = table + 4 * i * K + j;
            c[0] = f0;
            c[K] = d0;
            c[2 * K] = 3.0 * (f1 - f0) - 2.0 * d0 - d1;
            c[3 * K] = 2.0 * (f0 - f1) + d0 + d1;
        }
    free(cp);
    free(m);
    return TSR_OK;
}

void ictp_radial_tables_free(int n_tables, double **tables)
{
    for (int t = 0; tables && t < n_tables; t++)
        free(tables[t]);
    free(tables);
}

tsr_status ictp_radial_tables(const tsr_ictp_model *model, int64_t n, const char *device,
                              int threads, double ***tables_out)
{
    *tables_out = NULL;
    const ictp_config *c = &model->cfg;
    gb b = {.m = model, .dt = TSR_FLOAT64, .table_n = n};
    tsr_graph *g = NULL;
    TSR_CHECK(build_with(&b, build_radial, &g));
    tsr_compile_options co;
    tsr_compile_options_init(&co);
    co.device = device;
    co.threads = threads;
    tsr_plan *plan = NULL;
    tsr_status st = tsr_plan_create(g, &co, &plan);
    tsr_graph_destroy(g);
    if (st != TSR_OK)
        return st;
    const double h = c->r_cutoff / (double)n;
    double *r = tsr_malloc((size_t)(n + 1) * sizeof *r);
    double **tables = tsr_calloc((size_t)c->T, sizeof *tables);
    tsr_tensor *out = tsr_calloc((size_t)c->T, sizeof *out);
    if (!r || !tables || !out) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    /* The basis is defined for r > 0: the first knot sits a millionth of
     * an interval out (the radial functions are even in r there, so this
     * moves them by O(10^-12) of an interval squared). */
    for (int64_t i = 0; i <= n; i++)
        r[i] = (double)i * h;
    r[0] = 1e-6 * h;
    for (int t = 0; t < c->T; t++) {
        char key[112];
        snprintf(key, sizeof key, "representation.interactions.%d.conv_tp_weights.%d.weight", t,
                 2 * c->n_radial);
        const ictp_weight *w = ictp_weight_get(model, key);
        if (!w) {
            st = tsr_error(TSR_ERR_INTERNAL, "ICTP model: weight '%s' was not loaded", key);
            goto cleanup;
        }
        out[t] = (tsr_tensor){TSR_FLOAT64, 2, {n + 1, w->dims[0]}, NULL};
        out[t].data = tsr_malloc((size_t)((n + 1) * w->dims[0]) * sizeof(double));
        tables[t] = tsr_malloc((size_t)(4 * n * w->dims[0]) * sizeof(double));
        if (!out[t].data || !tables[t]) {
            st = TSR_ERR_OUT_OF_MEMORY;
            goto cleanup;
        }
    }
    tsr_tensor in = {TSR_FLOAT64, 1, {n + 1}, r};
    if ((st = tsr_plan_run(plan, 1, &in, c->T, out)) != TSR_OK) {
        tsr_error_prefix("tabulating the ICTP radial weights: ");
        goto cleanup;
    }
    for (int t = 0; t < c->T && st == TSR_OK; t++)
        st = spline_fit(out[t].data, n, out[t].dims[1], h, tables[t]);
cleanup:
    for (int t = 0; out && t < c->T; t++)
        free(out[t].data);
    free(out);
    free(r);
    tsr_plan_destroy(plan);
    if (st != TSR_OK) {
        ictp_radial_tables_free(c->T, tables);
        return st;
    }
    *tables_out = tables;
    return TSR_OK;
}

static tsr_status model_graph(const tsr_ictp_model *model, tsr_dtype dtype, bool trainable,
                              tsr_graph **graph_out)
{
    if (!model || !graph_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_model_graph: NULL argument");
    if (dtype != TSR_FLOAT32 && dtype != TSR_FLOAT64)
        return tsr_error(TSR_ERR_DTYPE, "ICTP models run in float32 or float64, not %s",
                         tsr_dtype_name(dtype));
    return build_graph(model, dtype, trainable, graph_out);
}

tsr_status tsr_ictp_model_graph(const tsr_ictp_model *model, tsr_dtype dtype, tsr_graph **graph_out)
{
    return model_graph(model, dtype, false, graph_out);
}

tsr_status tsr_ictp_model_training_graph(const tsr_ictp_model *model, tsr_dtype dtype,
                                         tsr_graph **graph_out)
{
    return model_graph(model, dtype, true, graph_out);
}

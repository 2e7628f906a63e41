/* Training ICTP models with the published recipe (docs/ictp.md "Training").
 *
 * The model is tsr_ictp_model_training_graph (every weight a parameter),
 * its forces come from tsr_graph_gradient with respect to the positions,
 * and Tessera's trainer differentiates the loss through both (second
 * order). The loss w_E Σ_b (ΔE_b / N_b)^2 + w_F Σ_a |ΔF_a|^2 is the
 * trainer's sum of squared differences of one output [atoms, 4] and its
 * target: columns 0-2 √w_F · F, column 3 √w_E · E_b / N_b^1.5 (the N_b
 * atoms of structure b together give w_E (ΔE_b / N_b)^2). With a stress
 * term, w_S Σ_b |Δσ_b|^2 with σ_b = sym(∂E/∂ε_b) / V_b, the output is
 * flat: those atoms·4 values, then √w_S · σ_b (9 per structure; 0 and a
 * zero weight for structures without a stress).
 *
 * Statistics (ictp-checkpoint.md §6): avg_n_neighbors over the training
 * atoms with at least one neighbour, scale = RMS of the training force
 * components (1 if 0), shift = ridge fit (λ = 1) of E - N·mean on the
 * species counts plus the mean energy per atom. Weights start N(0, 1); the
 * product-basis weights are divided by their path count once. */
#include "models/ictp/ictp_internal.h"
#include "core/npz.h"
#include "core/random.h"
#include "tessera/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tsr_ictp_train_options_init(tsr_ictp_train_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->dtype = TSR_FLOAT64;
    o->batch_size = 5;
    o->lr = 0.01;
    o->w_energy = 1.0;
    o->w_forces = 10.0;
    o->w_stress = 1.0;
    o->weight_decay = 5e-7;
    o->ema_decay = 0.99;
    o->lr_patience = 50;
    o->lr_factor = 0.8;
}

/* ------------------------------------------------------------- data */

typedef struct frame_data {
    int64_t n;
    double energy;
    const double *forces;
    bool has_stress; /* a stress (or virial) and a cell */
    double stress[9], volume;
} frame_data;

static double det3(const double *m)
{
    return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
           m[2] * (m[3] * m[7] - m[4] * m[6]);
}

/* The stress of a frame: its "stress" info, else −virial / V. */
static void frame_stress(const tsr_atoms *at, frame_data *f)
{
    double cell[9] = {0}, virial[9];
    tsr_atoms_cell(at, cell, NULL);
    f->volume = fabs(det3(cell));
    tsr_atoms_value v;
    f->has_stress = false;
    if (!(f->volume > 0))
        return;
    if (tsr_atoms_get_info(at, "stress", &v) == TSR_OK) {
        f->has_stress = tsr_atoms_stress(at, f->stress) == TSR_OK;
    } else if (tsr_atoms_get_info(at, "virial", &v) == TSR_OK &&
               tsr_atoms_virial(at, virial) == TSR_OK) {
        for (int k = 0; k < 9; k++)
            f->stress[k] = -virial[k] / f->volume;
        f->has_stress = true;
    }
}

static tsr_status check_frames(const char *what, int64_t n, tsr_atoms *const *frames,
                               const ictp_config *c, frame_data *out)
{
    if (n < 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "ICTP training: the %s set is empty", what);
    for (int64_t b = 0; b < n; b++) {
        out[b].n = tsr_atoms_count(frames[b]);
        if (tsr_atoms_energy(frames[b], &out[b].energy) != TSR_OK ||
            tsr_atoms_forces(frames[b], &out[b].forces) != TSR_OK)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "ICTP training: %s frame %lld has no energy or no forces (extxyz: "
                             "energy=... in the comment line, a forces:R:3 column)",
                             what, (long long)b);
        frame_stress(frames[b], &out[b]);
        const int32_t *z = tsr_atoms_numbers(frames[b]);
        for (int64_t a = 0; a < out[b].n; a++) {
            int s = 0;
            while (s < c->n_species && c->types[s] != z[a])
                s++;
            if (s == c->n_species)
                return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                 "ICTP training: atom %lld of %s frame %lld is Z = %d, which is "
                                 "not in the configuration's atomic_types",
                                 (long long)a, what, (long long)b, z[a]);
        }
    }
    return TSR_OK;
}

static int species_index(const ictp_config *c, int32_t z)
{
    for (int s = 0; s < c->n_species; s++)
        if (c->types[s] == z)
            return s;
    return -1;
}

/* avg_n_neighbors, scale and shift from the training set. */
static tsr_status statistics(ictp_config *c, int64_t n, tsr_atoms *const *frames,
                             const frame_data *fd, double *scale, double *shift)
{
    tsr_edges edges;
    tsr_edges_init(&edges);
    int64_t with_neighbours = 0, total_edges = 0, n_atoms = 0;
    double f2 = 0, e_sum = 0;
    int S = c->n_species;
    double *ata = tsr_calloc((size_t)(S * S), sizeof *ata), *aty = tsr_calloc((size_t)S, 8);
    double *counts = tsr_calloc((size_t)S, sizeof *counts);
    tsr_status st = ata && aty && counts ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    for (int64_t b = 0; b < n && st == TSR_OK; b++) {
        if ((st = tsr_atoms_edges(frames[b], c->r_cutoff, &edges)) != TSR_OK)
            break;
        for (int64_t a = 0; a < fd[b].n; a++)
            with_neighbours += edges.offsets[a + 1] > edges.offsets[a];
        total_edges += edges.count;
        n_atoms += fd[b].n;
        e_sum += fd[b].energy;
        for (int64_t k = 0; k < 3 * fd[b].n; k++)
            f2 += fd[b].forces[k] * fd[b].forces[k];
    }
    if (st == TSR_OK) {
        double mean = n_atoms ? e_sum / (double)n_atoms : 0.0;
        for (int64_t b = 0; b < n; b++) {
            memset(counts, 0, (size_t)S * sizeof *counts);
            const int32_t *z = tsr_atoms_numbers(frames[b]);
            for (int64_t a = 0; a < fd[b].n; a++)
                counts[species_index(c, z[a])] += 1;
            double y = fd[b].energy - (double)fd[b].n * mean;
            for (int i = 0; i < S; i++) {
                aty[i] += counts[i] * y;
                for (int j = 0; j < S; j++)
                    ata[i * S + j] += counts[i] * counts[j];
            }
        }
        for (int i = 0; i < S; i++)
            ata[i * S + i] += 1.0; /* ridge, λ = 1 */
        /* Gaussian elimination; A^T A + I is symmetric positive definite. */
        for (int k = 0; k < S; k++)
            for (int i = k + 1; i < S; i++) {
                double f = ata[i * S + k] / ata[k * S + k];
                for (int j = k; j < S; j++)
                    ata[i * S + j] -= f * ata[k * S + j];
                aty[i] -= f * aty[k];
            }
        for (int i = S - 1; i >= 0; i--) {
            double v = aty[i];
            for (int j = i + 1; j < S; j++)
                v -= ata[i * S + j] * shift[j];
            shift[i] = v / ata[i * S + i];
        }
        double rms = n_atoms ? sqrt(f2 / (3.0 * (double)n_atoms)) : 0.0;
        for (int i = 0; i < S; i++) {
            shift[i] += mean;
            scale[i] = rms > 0 ? rms : 1.0;
        }
        c->avg_n_neighbors = with_neighbours ? (double)total_edges / (double)with_neighbours : 1.0;
    }
    tsr_edges_free(&edges);
    free(ata);
    free(aty);
    free(counts);
    return st;
}

/* ---------------------------------------------------------- the model */

/* A model of configuration c with N(0, 1) weights (product-basis weights
 * divided by their path count) and the given scale and shift. */
static tsr_status init_model(const ictp_config *c, uint64_t seed, const double *scale,
                             const double *shift, tsr_ictp_model **out)
{
    tsr_ictp_model *m = tsr_calloc(1, sizeof *m);
    if (!m)
        return TSR_ERR_OUT_OF_MEMORY;
    m->cfg = *c;
    tsr_status st = ictp_expected_weights(c, &m->n_weights, &m->weights);
    tsr_random rng;
    tsr_random_seed(&rng, seed);
    for (int i = 0; i < m->n_weights && st == TSR_OK; i++) {
        ictp_weight *w = &m->weights[i];
        int64_t numel = 1;
        for (int d = 0; d < w->rank; d++)
            numel *= w->dims[d];
        if (!(w->data = tsr_malloc((size_t)(numel ? numel : 1) * sizeof *w->data))) {
            st = TSR_ERR_OUT_OF_MEMORY;
            break;
        }
        bool is_scale = strcmp(w->key, "scale_shift.scale_params") == 0;
        bool is_shift = strcmp(w->key, "scale_shift.shift_params") == 0;
        double factor = 1.0;
        if (strstr(w->key, "product_basis.")) /* (S, G, P) or (S, G·P, G) */
            factor = 1.0 / (double)(c->coupled ? w->dims[1] / c->G : w->dims[2]);
        for (int64_t k = 0; k < numel; k++)
            w->data[k] = is_scale ? scale[k] : is_shift ? shift[k] : factor * tsr_random_normal(&rng);
    }
    if (st != TSR_OK) {
        tsr_ictp_model_destroy(m);
        return st;
    }
    *out = m;
    return TSR_OK;
}

static tsr_status add_const(tsr_graph *g, const char *name, tsr_dtype dt, double v)
{
    float f = (float)v;
    tsr_tensor t = {
        .dtype = dt, .rank = 1, .dims = {1}, .data = dt == TSR_FLOAT32 ? (void *)&f : (void *)&v};
    return tsr_graph_add_constant(g, name, &t);
}

static tsr_status add_dims(tsr_graph *g, const char *name, int64_t a, int64_t b)
{
    int64_t d[2] = {a, b};
    tsr_tensor t = {.dtype = TSR_INT64, .rank = 1, .dims = {2}, .data = d};
    return tsr_graph_add_constant(g, name, &t);
}

static tsr_status add_node(tsr_graph *g, const char *op, int n_in, const char *const *in,
                           const char *out, int n_attrs, const tsr_attr *attrs)
{
    return tsr_graph_add_node(g, op, "", NULL, n_in, in, 1, &out, n_attrs, attrs);
}

/* pred = [flat t_fe, flat (G + Gᵀ) · stress_weight] for G = ∂E/∂ε. */
static tsr_status stress_output(tsr_graph *g, tsr_dtype dt)
{
    const char *dim_b[1] = {"structures"};
    int64_t d0 = 0, flat = -1, b11[3] = {-1, 1, 1};
    tsr_tensor t_flat = {.dtype = TSR_INT64, .rank = 1, .dims = {1}, .data = &flat};
    tsr_tensor t_b11 = {.dtype = TSR_INT64, .rank = 1, .dims = {3}, .data = b11};
    int64_t perm[3] = {0, 2, 1};
    tsr_attr tr = TSR_ATTR_INTS("perm", perm, 3), ax0 = TSR_ATTR_I("axis", 0);
    const char *in_t[1] = {"strain__grad"}, *in_sym[2] = {"strain__grad", "t_gt"};
    const char *in_sw[2] = {"stress_weight", "t_b11"}, *in_s[2] = {"t_sym", "t_sw"};
    const char *in_sf[2] = {"t_s", "t_flat"}, *in_fe[2] = {"t_fe", "t_flat"};
    const char *in_cat[2] = {"t_fe_flat", "t_s_flat"};
    TSR_CHECK(tsr_graph_add_input(g, "stress_weight", dt, 1, &d0, dim_b));
    TSR_CHECK(tsr_graph_add_constant(g, "t_flat", &t_flat));
    TSR_CHECK(tsr_graph_add_constant(g, "t_b11", &t_b11));
    TSR_CHECK(add_node(g, "Transpose", 1, in_t, "t_gt", 1, &tr));
    TSR_CHECK(add_node(g, "Add", 2, in_sym, "t_sym", 0, NULL));
    TSR_CHECK(add_node(g, "Reshape", 2, in_sw, "t_sw", 0, NULL));
    TSR_CHECK(add_node(g, "Mul", 2, in_s, "t_s", 0, NULL));
    TSR_CHECK(add_node(g, "Reshape", 2, in_sf, "t_s_flat", 0, NULL));
    TSR_CHECK(add_node(g, "Reshape", 2, in_fe, "t_fe_flat", 0, NULL));
    return add_node(g, "Concat", 2, in_cat, "pred", 1, &ax0);
}

/* The training model: forces (and the strain derivative) by
 * differentiation, then the output "pred" of the file comment; one more
 * input, energy_weight [atoms], and with the stress term stress_weight
 * [structures] (√w_S / (2 V_b), 0 without a stress). */
static tsr_status loss_model(const tsr_ictp_model *m, tsr_dtype dt, double w_f, bool stress,
                             tsr_graph **out)
{
    tsr_graph *g = NULL, *fg = NULL;
    TSR_CHECK(tsr_ictp_model_training_graph(m, dt, &g));
    const char *energy = "energy", *wrt[2] = {"positions", "strain"};
    tsr_status st = tsr_graph_gradient(g, 1, &energy, stress ? 2 : 1, wrt, &fg);
    tsr_graph_destroy(g);
    if (st != TSR_OK)
        return st;
    const char *dim_n[1] = {"atoms"};
    int64_t d0 = 0;
    tsr_attr ax0 = TSR_ATTR_I("axis", 0), ax1 = TSR_ATTR_I("axis", 1);
    const char *in_gather[2] = {"energy", "batch"}, *in_w[2] = {"t_e_atoms", "energy_weight"};
    const char *in_col[2] = {"t_e_w", "t_col"}, *in_f[2] = {"positions__grad", "t_fscale"};
    const char *in_rows[2] = {"t_f_any", "t_rows3"}, *in_cat[2] = {"t_f", "t_e_col"};
    if ((st = tsr_graph_add_input(fg, "energy_weight", dt, 1, &d0, dim_n)) != TSR_OK ||
        (st = add_const(fg, "t_fscale", dt, -sqrt(w_f))) != TSR_OK ||
        (st = add_dims(fg, "t_col", -1, 1)) != TSR_OK ||
        (st = add_dims(fg, "t_rows3", -1, 3)) != TSR_OK ||
        (st = add_node(fg, "Gather", 2, in_gather, "t_e_atoms", 1, &ax0)) != TSR_OK ||
        (st = add_node(fg, "Mul", 2, in_w, "t_e_w", 0, NULL)) != TSR_OK ||
        (st = add_node(fg, "Reshape", 2, in_col, "t_e_col", 0, NULL)) != TSR_OK ||
        (st = add_node(fg, "Mul", 2, in_f, "t_f_any", 0, NULL)) != TSR_OK ||
        (st = add_node(fg, "Reshape", 2, in_rows, "t_f", 0, NULL)) != TSR_OK ||
        (st = add_node(fg, "Concat", 2, in_cat, stress ? "t_fe" : "pred", 1, &ax1)) != TSR_OK ||
        (stress && (st = stress_output(fg, dt)) != TSR_OK) ||
        (st = tsr_graph_add_output(fg, "pred")) != TSR_OK) {
        tsr_graph_destroy(fg);
        return st;
    }
    *out = fg;
    return TSR_OK;
}

/* ------------------------------------------------------------ batches */

/* The inputs; B_SW only in models with the stress term. */
enum {
    B_POS,
    B_SPECIES,
    B_BATCH,
    B_RECV,
    B_SEND,
    B_SHIFTS,
    B_STRAIN,
    B_RADIAL_EDGES,
    B_RADIAL_ROWS,
    B_SEED,
    B_EW,
    B_SW,
    B_N
};

typedef struct batch {
    int64_t n_atoms, n_edges, n_structures;
    int n_inputs;
    void *buf[B_N];
    void *target;
    tsr_tensor in[B_N], tgt;
} batch;

static void batch_free(batch *b)
{
    for (int k = 0; k < B_N; k++)
        free(b->buf[k]);
    free(b->target);
    memset(b, 0, sizeof *b);
}

static void put(tsr_dtype dt, void *p, int64_t i, double v)
{
    if (dt == TSR_FLOAT32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

static double get(tsr_dtype dt, const void *p, int64_t i)
{
    return dt == TSR_FLOAT32 ? ((const float *)p)[i] : ((const double *)p)[i];
}

/* The loss weights, and whether the model has the stress term. */
typedef struct weights {
    double e, f, s;
    bool stress;
} weights;

/* The inputs and target of structures idx[0..count). */
static tsr_status make_batch(const ictp_config *c, tsr_dtype dt, const weights *w,
                             tsr_atoms *const *frames, const frame_data *fd, const int64_t *idx,
                             int64_t count, tsr_edges *edges, batch *bt)
{
    double w_e = w->e, w_f = w->f;
    memset(bt, 0, sizeof *bt);
    size_t fs = tsr_dtype_size(dt);
    int64_t na = 0, ne = 0;
    for (int64_t k = 0; k < count; k++) {
        TSR_CHECK(tsr_atoms_edges(frames[idx[k]], c->r_cutoff, edges));
        na += fd[idx[k]].n;
        ne += edges->count;
    }
    size_t sizes[B_N] = {3 * fs, 8, 8, 8, 8, 3 * fs, 9 * fs, 8, 8, fs, fs, fs};
    int64_t rows[B_N] = {na, na, na, ne, ne, ne, count, ne, ne, count, na, count};
    for (int k = 0; k < B_N; k++)
        if (!(bt->buf[k] = tsr_calloc(rows[k] ? (size_t)rows[k] : 1, sizes[k])))
            return TSR_ERR_OUT_OF_MEMORY;
    int64_t n_target = 4 * na + (w->stress ? 9 * count : 0);
    if (!(bt->target = tsr_calloc((size_t)(n_target ? n_target : 1), fs)))
        return TSR_ERR_OUT_OF_MEMORY;
    int64_t a0 = 0, e0 = 0, n_radial = 0;
    for (int64_t k = 0; k < count; k++) {
        const tsr_atoms *at = frames[idx[k]];
        const frame_data *f = &fd[idx[k]];
        TSR_CHECK(tsr_atoms_edges(at, c->r_cutoff, edges));
        double cell[9] = {0};
        tsr_atoms_cell(at, cell, NULL);
        const int32_t *z = tsr_atoms_numbers(at);
        const double *pos = tsr_atoms_positions(at);
        double ew = sqrt(w_e) / pow((double)f->n, 1.5);
        put(dt, bt->buf[B_SEED], k, 1.0);
        if (w->stress && f->has_stress) {
            put(dt, bt->buf[B_SW], k, sqrt(w->s) / (2.0 * f->volume));
            for (int q = 0; q < 9; q++)
                put(dt, bt->target, 4 * na + 9 * k + q, sqrt(w->s) * f->stress[q]);
        }
        for (int64_t a = 0; a < f->n; a++) {
            int64_t i = a0 + a;
            ((int64_t *)bt->buf[B_SPECIES])[i] = species_index(c, z[a]);
            ((int64_t *)bt->buf[B_BATCH])[i] = k;
            put(dt, bt->buf[B_EW], i, ew);
            for (int d = 0; d < 3; d++) {
                put(dt, bt->buf[B_POS], 3 * i + d, pos[3 * a + d]);
                put(dt, bt->target, 4 * i + d, sqrt(w_f) * f->forces[3 * a + d]);
            }
            put(dt, bt->target, 4 * i + 3, ew * f->energy);
        }
        for (int64_t e = 0; e < edges->count; e++) {
            ((int64_t *)bt->buf[B_RECV])[e0 + e] = a0 + edges->receivers[e];
            ((int64_t *)bt->buf[B_SEND])[e0 + e] = a0 + edges->senders[e];
            const int32_t *s = edges->shifts + 3 * e;
            for (int d = 0; d < 3; d++)
                put(dt, bt->buf[B_SHIFTS], 3 * (e0 + e) + d,
                    s[0] * cell[d] + s[1] * cell[3 + d] + s[2] * cell[6 + d]);
        }
        int64_t n_rows;
        TSR_CHECK(ictp_radial_rows(edges, e0, n_radial, (int64_t *)bt->buf[B_RADIAL_ROWS] + e0,
                                   (int64_t *)bt->buf[B_RADIAL_EDGES] + n_radial, &n_rows));
        n_radial += n_rows;
        a0 += f->n;
        e0 += edges->count;
    }
    bt->n_atoms = na;
    bt->n_edges = ne;
    bt->n_structures = count;
    int64_t dims[B_N][3] = {{na, 3},       {na},       {na}, {ne},    {ne}, {ne, 3},
                            {count, 3, 3}, {n_radial}, {ne}, {count}, {na}, {count}};
    int ranks[B_N] = {2, 1, 1, 1, 1, 2, 3, 1, 1, 1, 1, 1};
    bt->n_inputs = w->stress ? B_N : B_SW;
    for (int k = 0; k < B_N; k++) {
        bool ints = k == B_SPECIES || k == B_BATCH || k == B_RECV || k == B_SEND ||
                    k == B_RADIAL_EDGES || k == B_RADIAL_ROWS;
        bt->in[k] =
            (tsr_tensor){.dtype = ints ? TSR_INT64 : dt, .rank = ranks[k], .data = bt->buf[k]};
        memcpy(bt->in[k].dims, dims[k], sizeof dims[k]);
    }
    bt->tgt = w->stress ? (tsr_tensor){.dtype = dt, .rank = 1, .dims = {n_target}}
                        : (tsr_tensor){.dtype = dt, .rank = 2, .dims = {na, 4}};
    bt->tgt.data = bt->target;
    return TSR_OK;
}

/* ------------------------------------------------------------ metrics */

typedef struct sums {
    double e_abs, e_sq, f_abs, f_sq, s_abs, s_sq;
    int64_t n_e, n_f, n_s;
} sums;

static void sums_metrics(const sums *s, tsr_ictp_metrics *m)
{
    m->energy_mae = s->n_e ? s->e_abs / (double)s->n_e : 0.0;
    m->energy_rmse = s->n_e ? sqrt(s->e_sq / (double)s->n_e) : 0.0;
    m->forces_mae = s->n_f ? s->f_abs / (double)s->n_f : 0.0;
    m->forces_rmse = s->n_f ? sqrt(s->f_sq / (double)s->n_f) : 0.0;
    m->stress_mae = s->n_s ? s->s_abs / (double)(9 * s->n_s) : 0.0;
    m->stress_rmse = s->n_s ? sqrt(s->s_sq / (double)(9 * s->n_s)) : 0.0;
    m->n_stress = s->n_s;
}

static void sums_add_stress(sums *s, const double *pred, const double *ref)
{
    for (int k = 0; k < 9; k++) {
        double d = pred[k] - ref[k];
        s->s_abs += fabs(d);
        s->s_sq += d * d;
    }
    s->n_s++;
}

static void sums_add(sums *s, int64_t n, double e_pred, double e_ref, const double *f_pred,
                     const double *f_ref)
{
    double de = (e_pred - e_ref) / (double)n;
    s->e_abs += fabs(de);
    s->e_sq += de * de;
    s->n_e++;
    for (int64_t k = 0; k < 3 * n; k++) {
        double df = f_pred[k] - f_ref[k];
        s->f_abs += fabs(df);
        s->f_sq += df * df;
    }
    s->n_f += 3 * n;
}

tsr_status tsr_ictp_metrics_compute(tsr_ictp_evaluator *ev, int64_t n_frames,
                                    tsr_atoms *const *frames, tsr_ictp_metrics *out)
{
    if (!ev || !out || n_frames < 1 || !frames)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_ictp_metrics_compute: an evaluator, frames and out are required");
    sums s = {0};
    double *forces = NULL;
    int64_t cap = 0;
    tsr_status st = TSR_OK;
    for (int64_t b = 0; b < n_frames && st == TSR_OK; b++) {
        double e_ref, e;
        const double *f_ref;
        int64_t n = tsr_atoms_count(frames[b]);
        if (tsr_atoms_energy(frames[b], &e_ref) != TSR_OK ||
            tsr_atoms_forces(frames[b], &f_ref) != TSR_OK) {
            st = tsr_error(TSR_ERR_INVALID_ARGUMENT, "frame %lld has no energy or no forces",
                           (long long)b);
            break;
        }
        if (3 * n > cap) {
            double *p = tsr_realloc(forces, (size_t)(3 * n) * sizeof *p);
            if (!p) {
                st = TSR_ERR_OUT_OF_MEMORY;
                break;
            }
            forces = p;
            cap = 3 * n;
        }
        frame_data fd = {0};
        double stress[9];
        frame_stress(frames[b], &fd);
        if ((st = tsr_ictp_evaluate(ev, frames[b], &e, forces, fd.has_stress ? stress : NULL,
                                    NULL)) == TSR_OK) {
            sums_add(&s, n, e, e_ref, forces, f_ref);
            if (fd.has_stress)
                sums_add_stress(&s, stress, fd.stress);
        }
    }
    free(forces);
    if (st == TSR_OK)
        sums_metrics(&s, out);
    return st;
}

/* Validation metrics from the trainer's output (the EMA weights when kept). */
static tsr_status validate(tsr_trainer *tr, const ictp_config *c, tsr_dtype dt, const weights *w,
                           int64_t n, tsr_atoms *const *frames, const frame_data *fd,
                           int batch_size, tsr_edges *edges, tsr_ictp_metrics *out)
{
    double w_e = w->e, w_f = w->f;
    sums s = {0};
    tsr_status st = TSR_OK;
    int64_t *idx = tsr_malloc((size_t)batch_size * sizeof *idx);
    double *fp = NULL;
    if (!idx)
        return TSR_ERR_OUT_OF_MEMORY;
    for (int64_t first = 0; first < n && st == TSR_OK; first += batch_size) {
        int64_t count = n - first < batch_size ? n - first : batch_size;
        for (int64_t k = 0; k < count; k++)
            idx[k] = first + k;
        batch bt;
        void *pred = NULL;
        if ((st = make_batch(c, dt, w, frames, fd, idx, count, edges, &bt)) == TSR_OK &&
            !(pred = tsr_malloc(tsr_tensor_bytes(&bt.tgt) + 1)))
            st = TSR_ERR_OUT_OF_MEMORY;
        if (st == TSR_OK) {
            tsr_tensor out_t = bt.tgt;
            out_t.data = pred;
            st = tsr_trainer_evaluate(tr, bt.n_inputs, bt.in, NULL, NULL, &out_t);
        }
        int64_t a0 = 0;
        for (int64_t k = 0; k < count && st == TSR_OK; k++) {
            const frame_data *f = &fd[idx[k]];
            double *p = tsr_realloc(fp, (size_t)(3 * f->n + 1) * sizeof *p);
            if (!p) {
                st = TSR_ERR_OUT_OF_MEMORY;
                break;
            }
            fp = p;
            double ew = sqrt(w_e) / pow((double)f->n, 1.5);
            for (int64_t a = 0; a < f->n; a++)
                for (int d = 0; d < 3; d++)
                    fp[3 * a + d] = get(dt, pred, 4 * (a0 + a) + d) / sqrt(w_f);
            double e = f->n ? get(dt, pred, 4 * a0 + 3) / ew : 0.0;
            sums_add(&s, f->n, e, f->energy, fp, f->forces);
            if (w->stress && f->has_stress) {
                double sp[9];
                for (int q = 0; q < 9; q++)
                    sp[q] = get(dt, pred, 4 * bt.n_atoms + 9 * k + q) / sqrt(w->s);
                sums_add_stress(&s, sp, f->stress);
            }
            a0 += f->n;
        }
        free(pred);
        batch_free(&bt);
    }
    free(idx);
    free(fp);
    if (st == TSR_OK)
        sums_metrics(&s, out);
    return st;
}

/* ------------------------------------------------------------- saving */

static void json_ints(FILE *f, const char *key, int n, const int *v)
{
    fprintf(f, "  \"%s\": [", key);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? ", " : "", v[i]);
    fprintf(f, "],\n");
}

static tsr_status write_config(const char *path, const ictp_config *c, tsr_dtype dt)
{
    size_t len = strlen(path);
    char *tmp = tsr_malloc(len + 5);
    if (!tmp)
        return TSR_ERR_OUT_OF_MEMORY;
    snprintf(tmp, len + 5, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        free(tmp);
        return tsr_error(TSR_ERR_IO, "cannot write %s", path);
    }
    fprintf(f, "{\"config\": {\n");
    json_ints(f, "atomic_types", c->n_species, c->types);
    fprintf(f,
            "  \"n_species\": %d,\n  \"r_cutoff\": %.17g,\n  \"n_basis\": %d,\n"
            "  \"n_polynomial_cutoff\": %d,\n",
            c->n_species, c->r_cutoff, c->n_basis, c->p_cutoff);
    json_ints(f, "radial_MLP", c->n_radial, c->radial);
    json_ints(f, "readout_MLP", c->n_readout, c->readout);
    fprintf(f,
            "  \"n_hidden_feats\": %d,\n  \"n_product_feats\": %d,\n  \"n_interactions\": %d,\n"
            "  \"l_max_hidden_feats\": %d,\n  \"l_max_edge_attrs\": %d,\n  \"correlation\": %d,\n"
            "  \"symmetric_product\": %s,\n  \"coupled_product_feats\": %s,\n"
            "  \"avg_n_neighbors\": %.17g,\n  \"default_dtype\": \"%s\"\n}}\n",
            c->F, c->G, c->T, c->Lh, c->Le, c->nu, c->symmetric ? "true" : "false",
            c->coupled ? "true" : "false", c->avg_n_neighbors, tsr_dtype_name(dt));
    bool ok = !ferror(f);
    ok &= fclose(f) == 0;
    tsr_status st = TSR_OK;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        st = tsr_error(TSR_ERR_IO, "cannot write %s", path);
    }
    free(tmp);
    return st;
}

/* MODEL.npz (the trainer's weights, its moving averages when kept) and
 * MODEL.json. */
static tsr_status save_model(tsr_trainer *tr, tsr_ictp_model *m, tsr_dtype dt, const char *out_path)
{
    size_t len = strlen(out_path);
    size_t stem = len >= 4 && strcmp(out_path + len - 4, ".npz") == 0 ? len - 4 : len;
    char *npz = tsr_malloc(stem + 6), *json = tsr_malloc(stem + 6);
    const char **names = tsr_calloc((size_t)m->n_weights, sizeof *names);
    tsr_tensor *ts = tsr_calloc((size_t)m->n_weights, sizeof *ts);
    void *buf = NULL;
    tsr_status st = npz && json && names && ts ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < m->n_weights && st == TSR_OK; i++) {
        ictp_weight *w = &m->weights[i];
        tsr_tensor t = {.dtype = dt, .rank = w->rank};
        memcpy(t.dims, w->dims, (size_t)w->rank * sizeof *w->dims);
        int64_t numel = tsr_tensor_numel(&t);
        if (strncmp(w->key, "scale_shift.", 12) != 0) {
            void *p = tsr_realloc(buf, tsr_tensor_bytes(&t) + 1);
            if (!p) {
                st = TSR_ERR_OUT_OF_MEMORY;
                break;
            }
            buf = p;
            t.data = buf;
            if ((st = tsr_trainer_get_param(tr, w->key, &t)) != TSR_OK)
                break;
            for (int64_t k = 0; k < numel; k++)
                w->data[k] = get(dt, buf, k);
        }
        names[i] = w->key;
        ts[i] = (tsr_tensor){.dtype = TSR_FLOAT64, .rank = w->rank, .data = w->data};
        memcpy(ts[i].dims, w->dims, (size_t)w->rank * sizeof *w->dims);
    }
    if (st == TSR_OK) {
        snprintf(npz, stem + 6, "%.*s.npz", (int)stem, out_path);
        snprintf(json, stem + 6, "%.*s.json", (int)stem, out_path);
        if ((st = tsr_npz_write(npz, m->n_weights, names, ts)) == TSR_OK)
            st = write_config(json, &m->cfg, dt);
    }
    free(buf);
    free(names);
    free(ts);
    free(npz);
    free(json);
    return st;
}

/* The loop's own state beside the trainer's checkpoint: epoch, best
 * validation metric, epochs without improvement. */
static tsr_status write_state(const char *path, int64_t epoch, double best, int bad)
{
    char tmp[4096], final[4096];
    snprintf(final, sizeof final, "%s.loop", path);
    snprintf(tmp, sizeof tmp, "%s.loop.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return tsr_error(TSR_ERR_IO, "cannot write %s", final);
    fprintf(f, "tessera-ictp-train 1 %lld %a %d\n", (long long)epoch, best, bad);
    bool ok = !ferror(f);
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, final) != 0) {
        remove(tmp);
        return tsr_error(TSR_ERR_IO, "cannot write %s", final);
    }
    return TSR_OK;
}

static tsr_status read_state(const char *path, int64_t *epoch, double *best, int *bad)
{
    char name[4096];
    snprintf(name, sizeof name, "%s.loop", path);
    FILE *f = fopen(name, "r");
    if (!f)
        return tsr_error(TSR_ERR_IO, "%s: missing (it is written beside the checkpoint)", name);
    long long e;
    int version, n = fscanf(f, "tessera-ictp-train %d %lld %la %d", &version, &e, best, bad);
    fclose(f);
    if (n != 4 || version != 1 || e < 0)
        return tsr_error(TSR_ERR_PARSE, "%s: not a training loop state (corrupt?)", name);
    *epoch = e;
    return TSR_OK;
}

/* ------------------------------------------------------------ trainer */

struct tsr_ictp_trainer {
    tsr_ictp_train_options opt;
    weights w;
    tsr_ictp_model *model;
    tsr_trainer *trainer;
    int64_t n_train;
    tsr_atoms *const *train;
    frame_data *fd;
    int64_t *order;
    tsr_edges edges;
};

void tsr_ictp_trainer_destroy(tsr_ictp_trainer *t)
{
    if (!t)
        return;
    tsr_trainer_destroy(t->trainer);
    tsr_ictp_model_destroy(t->model);
    free(t->fd);
    free(t->order);
    tsr_edges_free(&t->edges);
    free(t);
}

static tsr_status check_options(const tsr_ictp_train_options *o)
{
    if (o->dtype != TSR_FLOAT32 && o->dtype != TSR_FLOAT64)
        return tsr_error(TSR_ERR_DTYPE, "ICTP training: dtype must be float32 or float64, not %s",
                         tsr_dtype_name(o->dtype));
    if (o->batch_size < 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "ICTP training: batch_size is %d (>= 1)",
                         o->batch_size);
    if (!(o->w_energy >= 0) || !(o->w_forces >= 0) || !(o->w_stress >= 0) ||
        o->w_energy + o->w_forces <= 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "ICTP training: the loss weights must be >= 0 and w_energy, w_forces not "
                         "both 0 (w_energy %g, w_forces %g, w_stress %g)",
                         o->w_energy, o->w_forces, o->w_stress);
    if (!(o->lr > 0) || !(o->lr_factor > 0 && o->lr_factor < 1) || o->lr_patience < 0 ||
        !(o->weight_decay >= 0) || !(o->ema_decay >= 0 && o->ema_decay < 1))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "ICTP training: lr %g must be > 0, lr_factor %g in (0, 1), lr_patience "
                         "%d >= 0, weight_decay %g >= 0, ema_decay %g in [0, 1)",
                         o->lr, o->lr_factor, o->lr_patience, o->weight_decay, o->ema_decay);
    return TSR_OK;
}

tsr_status tsr_ictp_trainer_create(const char *config_path, int64_t n_train,
                                   tsr_atoms *const *train, const tsr_ictp_train_options *options,
                                   tsr_ictp_trainer **out)
{
    if (!config_path || !out || (n_train && !train))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_trainer_create: NULL argument");
    *out = NULL;
    tsr_ictp_trainer *t = tsr_calloc(1, sizeof *t);
    if (!t)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_edges_init(&t->edges);
    tsr_ictp_train_options_init(&t->opt);
    if (options)
        t->opt = *options;
    tsr_status st = check_options(&t->opt);
    ictp_config cfg;
    double scale[ICTP_MAX_SPECIES], shift[ICTP_MAX_SPECIES] = {0};
    tsr_graph *g = NULL;
    if (st == TSR_OK)
        st = ictp_read_config(config_path, &cfg);
    t->n_train = n_train;
    t->train = train;
    if (st == TSR_OK && (!(t->fd = tsr_calloc((size_t)(n_train ? n_train : 1), sizeof *t->fd)) ||
                         !(t->order = tsr_malloc((size_t)(n_train ? n_train : 1) * 8))))
        st = TSR_ERR_OUT_OF_MEMORY;
    if (st == TSR_OK)
        st = check_frames("training", n_train, train, &cfg, t->fd);
    if (st == TSR_OK)
        st = statistics(&cfg, n_train, train, t->fd, scale, shift);
    if (st == TSR_OK)
        st = init_model(&cfg, t->opt.seed, scale, shift, &t->model);
    t->w = (weights){t->opt.w_energy, t->opt.w_forces, t->opt.w_stress, false};
    for (int64_t b = 0; st == TSR_OK && b < n_train && t->opt.w_stress > 0; b++)
        t->w.stress |= t->fd[b].has_stress;
    if (st == TSR_OK)
        st = loss_model(t->model, t->opt.dtype, t->opt.w_forces, t->w.stress, &g);
    if (st == TSR_OK) {
        tsr_loss_options lo;
        tsr_loss_options_init(&lo);
        lo.kind = TSR_LOSS_MSE;
        lo.reduction = TSR_REDUCTION_SUM;
        lo.output = "pred";
        tsr_optimizer_options oo;
        tsr_optimizer_options_init(&oo);
        oo.kind = TSR_OPTIMIZER_ADAM;
        oo.amsgrad = 1;
        oo.lr = t->opt.lr;
        oo.schedule = TSR_SCHEDULE_PLATEAU;
        oo.patience = t->opt.lr_patience;
        oo.factor = t->opt.lr_factor;
        oo.ema_decay = t->opt.ema_decay;
        /* Weight decay on the product weights and the mixing after the products. */
        oo.n_groups = 2;
        oo.groups[0] = (tsr_param_group){"*.product_basis.*", 0, t->opt.weight_decay, 1.0};
        oo.groups[1] = (tsr_param_group){"*.products.*.linear.*", 0, t->opt.weight_decay, 1.0};
        tsr_compile_options co;
        tsr_compile_options_init(&co);
        co.device = t->opt.device;
        co.threads = t->opt.threads;
        st = tsr_trainer_create(g, &lo, &oo, &co, t->opt.seed, &t->trainer);
    }
    tsr_graph_destroy(g);
    if (st != TSR_OK) {
        tsr_error_prefix("ICTP training: ");
        tsr_ictp_trainer_destroy(t);
        return st;
    }
    *out = t;
    return TSR_OK;
}

double tsr_ictp_trainer_lr(const tsr_ictp_trainer *t)
{
    return t ? tsr_trainer_lr(t->trainer) : 0.0;
}

int64_t tsr_ictp_trainer_epochs(const tsr_ictp_trainer *t)
{
    return t ? tsr_trainer_epoch_count(t->trainer) : 0;
}

tsr_status tsr_ictp_trainer_epoch(tsr_ictp_trainer *t, tsr_ictp_progress_fn progress, void *ctx,
                                  double *loss_out)
{
    if (!t)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_trainer_epoch: NULL trainer");
    /* The order depends only on the seed and the epoch, so a resumed run
     * shuffles as the uninterrupted one did. */
    tsr_random rng;
    tsr_random_seed(&rng, t->opt.seed ^ (0xa0761d6478bd642full *
                                         (uint64_t)(tsr_ictp_trainer_epochs(t) + 1)));
    for (int64_t i = 0; i < t->n_train; i++)
        t->order[i] = i;
    for (int64_t i = t->n_train - 1; i > 0; i--) {
        int64_t j = (int64_t)(tsr_random_next(&rng) % (uint64_t)(i + 1));
        int64_t tmp = t->order[i];
        t->order[i] = t->order[j];
        t->order[j] = tmp;
    }
    double total = 0;
    const ictp_config *c = &t->model->cfg;
    for (int64_t first = 0; first < t->n_train; first += t->opt.batch_size) {
        int64_t count =
            t->n_train - first < t->opt.batch_size ? t->n_train - first : t->opt.batch_size;
        batch bt;
        double loss = 0;
        tsr_status st = make_batch(c, t->opt.dtype, &t->w, t->train, t->fd, t->order + first,
                                   count, &t->edges, &bt);
        if (st == TSR_OK)
            st = tsr_trainer_step(t->trainer, bt.n_inputs, bt.in, &bt.tgt, &loss);
        batch_free(&bt);
        if (st != TSR_OK)
            return st;
        total += loss;
        if (progress)
            progress(ctx, first + count, t->n_train, total / (double)(first + count));
    }
    if (loss_out)
        *loss_out = total / (double)t->n_train;
    return TSR_OK;
}

tsr_status tsr_ictp_trainer_validate(tsr_ictp_trainer *t, int64_t n, tsr_atoms *const *frames,
                                     tsr_ictp_metrics *out)
{
    if (!t || !out || (n && !frames))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_trainer_validate: NULL argument");
    frame_data *fd = tsr_calloc((size_t)(n ? n : 1), sizeof *fd);
    if (!fd)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = check_frames("validation", n, frames, &t->model->cfg, fd);
    bool ema = t->opt.ema_decay > 0;
    if (st == TSR_OK && ema)
        st = tsr_trainer_use_ema(t->trainer, 1);
    if (st == TSR_OK)
        st = validate(t->trainer, &t->model->cfg, t->opt.dtype, &t->w, n, frames, fd,
                      t->opt.batch_size, &t->edges, out);
    if (ema)
        tsr_trainer_use_ema(t->trainer, 0);
    free(fd);
    return st;
}

tsr_status tsr_ictp_trainer_epoch_end(tsr_ictp_trainer *t, double metric)
{
    if (!t)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_trainer_epoch_end: NULL trainer");
    return tsr_trainer_epoch_end(t->trainer, metric);
}

tsr_status tsr_ictp_trainer_save_model(tsr_ictp_trainer *t, const char *path)
{
    if (!t || !path)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_trainer_save_model: NULL argument");
    bool ema = t->opt.ema_decay > 0;
    if (ema)
        TSR_CHECK(tsr_trainer_use_ema(t->trainer, 1));
    tsr_status st = save_model(t->trainer, t->model, t->opt.dtype, path);
    if (ema)
        tsr_trainer_use_ema(t->trainer, 0);
    return st;
}

tsr_status tsr_ictp_trainer_save_checkpoint(const tsr_ictp_trainer *t, const char *path,
                                            double best_metric, int epochs_without_improvement)
{
    if (!t || !path)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_ictp_trainer_save_checkpoint: NULL argument");
    TSR_CHECK(tsr_trainer_save_checkpoint(t->trainer, path));
    return write_state(path, tsr_ictp_trainer_epochs(t), best_metric, epochs_without_improvement);
}

tsr_status tsr_ictp_trainer_load_checkpoint(tsr_ictp_trainer *t, const char *path,
                                            double *best_metric, int *epochs_without_improvement)
{
    if (!t || !path || !best_metric || !epochs_without_improvement)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_ictp_trainer_load_checkpoint: NULL argument");
    int64_t epoch;
    double best;
    int bad;
    TSR_CHECK(read_state(path, &epoch, &best, &bad));
    TSR_CHECK(tsr_trainer_load_checkpoint(t->trainer, path));
    if (tsr_ictp_trainer_epochs(t) != epoch)
        return tsr_error(TSR_ERR_PARSE,
                         "%s: the checkpoint is at epoch %lld, its loop state at %lld (one of "
                         "them is from another run)",
                         path, (long long)tsr_ictp_trainer_epochs(t), (long long)epoch);
    *best_metric = best;
    *epochs_without_improvement = bad;
    return TSR_OK;
}

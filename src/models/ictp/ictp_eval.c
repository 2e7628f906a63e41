/* Evaluating an ICTP model: neighbour list, the energy graph's gradient
 * (tsr_graph_gradient with respect to positions and strain) compiled into
 * one plan, and the results into the caller's buffers. Per-atom virials
 * need the gradient with respect to the edge vectors too (through the
 * shift vectors, v = r_i - r_j - shift): a second plan, built from the kept
 * energy graph on the first request, so that evaluations without them pay
 * nothing. */
#include "models/ictp/ictp_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    IN_POS,
    IN_SPECIES,
    IN_BATCH,
    IN_RECV,
    IN_SEND,
    IN_SHIFTS,
    IN_STRAIN,
    IN_RADIAL_EDGES,
    IN_RADIAL_ROWS,
    IN_SEED,
    N_IN
};
enum { OUT_ENERGY, OUT_ENERGIES, OUT_POS_GRAD, OUT_STRAIN_GRAD, OUT_SHIFT_GRAD, N_OUT_VIRIAL };
enum { N_OUT = OUT_SHIFT_GRAD };

struct tsr_ictp_evaluator {
    tsr_plan *plan;
    tsr_plan *virial_plan; /* NULL until per-atom virials are first asked for */
    tsr_graph *graph;      /* the energy graph, which virial_plan differentiates */
    char *device;          /* the options' device, kept for virial_plan */
    int threads;
    tsr_dtype dtype;
    double cutoff;
    int n_interactions;
    int n_species;
    int32_t types[ICTP_MAX_SPECIES];
    bool exact_sizes;
    tsr_edges edges;
};

void tsr_ictp_options_init(tsr_ictp_options *options)
{
    if (!options)
        return;
    memset(options, 0, sizeof *options);
    options->dtype = TSR_FLOAT64;
}

void tsr_ictp_evaluator_destroy(tsr_ictp_evaluator *ev)
{
    if (!ev)
        return;
    tsr_plan_destroy(ev->plan);
    tsr_plan_destroy(ev->virial_plan);
    tsr_graph_destroy(ev->graph);
    free(ev->device);
    tsr_edges_free(&ev->edges);
    free(ev);
}

tsr_status tsr_ictp_evaluator_stats(const tsr_ictp_evaluator *ev, tsr_plan_stats *stats_out)
{
    if (!ev || !stats_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_evaluator_stats: NULL argument");
    return tsr_plan_get_stats(ev->plan, stats_out);
}

tsr_plan *tsr_ictp_evaluator_plan(tsr_ictp_evaluator *ev)
{
    return ev ? ev->plan : NULL;
}

/* The plan of the energy graph's gradient with respect to the first n_wrt
 * of positions, strain and shift vectors (outputs: energy, energies, then the
 * gradients in that order). */
static tsr_status gradient_plan(const tsr_ictp_evaluator *ev, int n_wrt, tsr_plan **plan_out)
{
    const char *outputs[1] = {"energy"}, *wrt[3] = {"positions", "strain", "shift_vectors"};
    tsr_graph *grad = NULL;
    tsr_status st = tsr_graph_gradient(ev->graph, 1, outputs, n_wrt, wrt, &grad);
    if (st != TSR_OK)
        return st;
    if (tsr_graph_num_inputs(grad) != N_IN || tsr_graph_num_outputs(grad) != 2 + n_wrt) {
        st = tsr_error(TSR_ERR_INTERNAL, "ICTP: the gradient graph has %d inputs and %d outputs",
                       tsr_graph_num_inputs(grad), tsr_graph_num_outputs(grad));
    } else {
        tsr_compile_options co;
        tsr_compile_options_init(&co);
        co.device = ev->device;
        co.threads = ev->threads;
        st = tsr_plan_create(grad, &co, plan_out);
    }
    tsr_graph_destroy(grad);
    return st;
}

tsr_status tsr_ictp_evaluator_create(const tsr_ictp_model *model, const tsr_ictp_options *options,
                                     tsr_ictp_evaluator **evaluator_out)
{
    if (!model || !evaluator_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_evaluator_create: NULL argument");
    *evaluator_out = NULL;
    tsr_ictp_options opt;
    tsr_ictp_options_init(&opt);
    if (options)
        opt = *options;
    if (opt.dtype != TSR_FLOAT32 && opt.dtype != TSR_FLOAT64)
        return tsr_error(TSR_ERR_DTYPE, "ICTP evaluator: dtype must be float32 or float64, not %s",
                         tsr_dtype_name(opt.dtype));
    if (opt.threads < 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "ICTP evaluator: threads is %d (0: all cores)",
                         opt.threads);
    tsr_ictp_evaluator *ev = tsr_calloc(1, sizeof *ev);
    if (!ev)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_edges_init(&ev->edges);
    ev->threads = opt.threads;
    tsr_status st = TSR_OK;
    double **tables = NULL;
    if (opt.device && !(ev->device = tsr_strdup(opt.device))) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    if (opt.radial_table != 0 && (opt.radial_table < 16 || opt.radial_table > 65536)) {
        st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                       "ICTP evaluator: radial_table is %d; it must be 0 (the MLPs) or 16 to "
                       "65536 intervals",
                       opt.radial_table);
        goto cleanup;
    }
    if (opt.radial_table > 0 && (st = ictp_radial_tables(model, opt.radial_table, opt.device,
                                                         opt.threads, &tables)) != TSR_OK)
        goto cleanup;
    st = ictp_build_graph(model, opt.dtype, (const double *const *)tables, opt.radial_table,
                          &ev->graph);
    /* The graph holds the tables now, in its dtype. */
    ictp_radial_tables_free(model->cfg.T, tables);
    tables = NULL;
    if (st != TSR_OK || (st = gradient_plan(ev, 2, &ev->plan)) != TSR_OK)
        goto cleanup;
    ev->dtype = opt.dtype;
    ev->cutoff = model->cfg.r_cutoff;
    ev->n_interactions = model->cfg.T;
    ev->n_species = model->cfg.n_species;
    ev->exact_sizes = opt.exact_sizes != 0;
    memcpy(ev->types, model->cfg.types, sizeof ev->types);
    *evaluator_out = ev;
    ev = NULL;
cleanup:
    ictp_radial_tables_free(model->cfg.T, tables);
    tsr_ictp_evaluator_destroy(ev);
    return st;
}

static void put(tsr_dtype dt, void *dst, int64_t i, double v)
{
    if (dt == TSR_FLOAT32)
        ((float *)dst)[i] = (float)v;
    else
        ((double *)dst)[i] = v;
}

static double get(tsr_dtype dt, const void *src, int64_t i)
{
    return dt == TSR_FLOAT32 ? ((const float *)src)[i] : ((const double *)src)[i];
}

static double det3(const double *m)
{
    return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
           m[2] * (m[3] * m[7] - m[4] * m[6]);
}

/* The graph's inputs for a batch, in the evaluator's dtype: n_atoms,
 * n_edges and n_radial (radial rows, ictp_radial_rows) real ones, padded
 * to rows_atoms, rows_edges and rows_radial (and one padding structure,
 * rows_structures) unless the evaluator runs exact sizes. */
typedef struct batch_inputs {
    int64_t n_atoms, n_edges, n_radial;
    int64_t rows_atoms, rows_edges, rows_radial, rows_structures;
    int64_t *species, *batch, *receivers, *senders, *radial_rows, *radial_edges;
    void *pos, *shift_vectors, *strain, *seed;
    double *volumes;
} batch_inputs;

static void batch_free(batch_inputs *in)
{
    free(in->species);
    free(in->batch);
    free(in->receivers);
    free(in->senders);
    free(in->radial_rows);
    free(in->radial_edges);
    free(in->pos);
    free(in->shift_vectors);
    free(in->strain);
    free(in->seed);
    free(in->volumes);
}

static int species_of(const tsr_ictp_evaluator *ev, int32_t z)
{
    for (int s = 0; s < ev->n_species; s++)
        if (ev->types[s] == z)
            return s;
    return -1;
}

/* The capacity class of a count: 16, then steps of 1.25x, so that MD,
 * whose edge count changes at almost every step, moves between a few
 * classes (a plan specialization each) instead of one per count. */
static int64_t size_class(int64_t count)
{
    int64_t c = 16;
    while (c < count)
        c += c / 4;
    return c;
}

/* Pads a gathered batch to its size classes. The padding atoms form one
 * extra structure (seed 0, zero strain) and the padding edges join the
 * first padding atom to itself across a shift of twice the cutoff, where
 * the radial basis is exactly zero: nothing reaches a real atom, whose
 * energies, forces and stress are those of the unpadded batch. The
 * padding edges share one radial row; the padding rows, which no edge
 * reads, take the last edge's distance. */
static tsr_status pad_inputs(const tsr_ictp_evaluator *ev, int64_t n_structures, batch_inputs *in)
{
    tsr_dtype dt = ev->dtype;
    size_t fs = tsr_dtype_size(dt);
    int64_t na = size_class(in->n_atoms + 1), ne = size_class(in->n_edges);
    int64_t nr = size_class(in->n_radial + (ne > in->n_edges));
    int64_t *species = tsr_realloc(in->species, (size_t)na * sizeof *species);
    if (species)
        in->species = species;
    int64_t *batch = species ? tsr_realloc(in->batch, (size_t)na * sizeof *batch) : NULL;
    if (batch)
        in->batch = batch;
    void *pos = batch ? tsr_realloc(in->pos, 3 * (size_t)na * fs) : NULL;
    if (pos)
        in->pos = pos;
    int64_t *recv = pos ? tsr_realloc(in->receivers, (size_t)ne * sizeof *recv) : NULL;
    if (recv)
        in->receivers = recv;
    int64_t *send = recv ? tsr_realloc(in->senders, (size_t)ne * sizeof *send) : NULL;
    if (send)
        in->senders = send;
    int64_t *rows = send ? tsr_realloc(in->radial_rows, (size_t)ne * sizeof *rows) : NULL;
    if (rows)
        in->radial_rows = rows;
    int64_t *reps = rows ? tsr_realloc(in->radial_edges, (size_t)nr * sizeof *reps) : NULL;
    if (reps)
        in->radial_edges = reps;
    void *shifts = reps ? tsr_realloc(in->shift_vectors, 3 * (size_t)ne * fs) : NULL;
    if (!shifts)
        return TSR_ERR_OUT_OF_MEMORY;
    in->shift_vectors = shifts;
    for (int64_t a = in->n_atoms; a < na; a++) {
        in->species[a] = 0;
        in->batch[a] = n_structures;
        for (int k = 0; k < 3; k++)
            put(dt, in->pos, 3 * a + k, 0.0);
    }
    for (int64_t e = in->n_edges; e < ne; e++) {
        in->receivers[e] = in->senders[e] = in->n_atoms;
        in->radial_rows[e] = in->n_radial;
        for (int k = 0; k < 3; k++)
            put(dt, in->shift_vectors, 3 * e + k, k == 0 ? 2.0 * ev->cutoff : 0.0);
    }
    for (int64_t u = in->n_radial; u < nr; u++)
        in->radial_edges[u] = u == in->n_radial && ne > in->n_edges ? in->n_edges : ne - 1;
    put(dt, in->seed, n_structures, 0.0);
    in->rows_atoms = na;
    in->rows_edges = ne;
    in->rows_radial = nr;
    in->rows_structures = n_structures + 1;
    return TSR_OK;
}

/* given_edges: the structures' edges as tsr_atoms_edges would build them,
 * or NULL to build them here. */
static tsr_status gather_inputs(tsr_ictp_evaluator *ev, int64_t n_structures,
                                const tsr_atoms *const *structures,
                                const tsr_edges *const *given_edges, bool stress, batch_inputs *in)
{
    tsr_dtype dt = ev->dtype;
    size_t fs = tsr_dtype_size(dt);
    int64_t cap_edges = 0;
    for (int64_t b = 0; b < n_structures; b++) {
        if (!structures[b])
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "ICTP: structure %lld is NULL",
                             (long long)b);
        in->n_atoms += tsr_atoms_count(structures[b]);
    }
    size_t na = (size_t)in->n_atoms + 1, nb = (size_t)n_structures + 1;
    in->species = tsr_malloc(na * sizeof *in->species);
    in->batch = tsr_malloc(na * sizeof *in->batch);
    in->pos = tsr_malloc(3 * na * fs);
    in->strain = tsr_calloc(9 * nb, fs);
    in->seed = tsr_malloc(nb * fs);
    in->volumes = tsr_malloc(nb * sizeof *in->volumes);
    if (!in->species || !in->batch || !in->pos || !in->strain || !in->seed || !in->volumes)
        return TSR_ERR_OUT_OF_MEMORY;
    int64_t first = 0;
    for (int64_t b = 0; b < n_structures; b++) {
        const tsr_atoms *atoms = structures[b];
        int64_t n = tsr_atoms_count(atoms);
        const int32_t *numbers = tsr_atoms_numbers(atoms);
        const double *positions = tsr_atoms_positions(atoms);
        double cell[9] = {0};
        tsr_atoms_cell(atoms, cell, NULL);
        in->volumes[b] = fabs(det3(cell));
        if (stress && !(in->volumes[b] > 0)) {
            char which[48] = "this structure";
            if (n_structures > 1)
                snprintf(which, sizeof which, "structure %lld", (long long)b);
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "ICTP: the stress needs a cell of non-zero volume; %s has %s", which,
                             in->volumes[b] == 0 ? "none" : "a degenerate one");
        }
        put(dt, in->seed, b, 1.0);
        for (int64_t a = 0; a < n; a++) {
            int s = species_of(ev, numbers[a]);
            if (s < 0) {
                const char *sym = tsr_atoms_symbol(numbers[a]);
                char where[48] = "";
                if (n_structures > 1)
                    snprintf(where, sizeof where, " of structure %lld", (long long)b);
                return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                 "ICTP: atom %lld%s is %s (Z = %d), which the model does not know",
                                 (long long)a, where, sym ? sym : "?", numbers[a]);
            }
            in->species[first + a] = s;
            in->batch[first + a] = b;
            for (int k = 0; k < 3; k++)
                put(dt, in->pos, 3 * (first + a) + k, positions[3 * a + k]);
        }
        const tsr_edges *edges = given_edges ? given_edges[b] : &ev->edges;
        if (!given_edges)
            TSR_CHECK(tsr_atoms_edges(atoms, ev->cutoff, &ev->edges));
        int64_t ne = edges->count, at = in->n_edges;
        if (at + ne > cap_edges) {
            int64_t cap = (at + ne) + (at + ne) / 4 + 16;
            int64_t *r = tsr_realloc(in->receivers, (size_t)cap * sizeof *r);
            if (r)
                in->receivers = r;
            int64_t *sd = r ? tsr_realloc(in->senders, (size_t)cap * sizeof *sd) : NULL;
            if (sd)
                in->senders = sd;
            int64_t *rr = sd ? tsr_realloc(in->radial_rows, (size_t)cap * sizeof *rr) : NULL;
            if (rr)
                in->radial_rows = rr;
            int64_t *re = rr ? tsr_realloc(in->radial_edges, (size_t)cap * sizeof *re) : NULL;
            if (re)
                in->radial_edges = re;
            void *sv = re ? tsr_realloc(in->shift_vectors, (size_t)cap * 3 * fs) : NULL;
            if (!sv)
                return TSR_ERR_OUT_OF_MEMORY;
            in->shift_vectors = sv;
            cap_edges = cap;
        }
        int64_t n_rows;
        TSR_CHECK(ictp_radial_rows(edges, at, in->n_radial, in->radial_rows + at,
                                   in->radial_edges + in->n_radial, &n_rows));
        in->n_radial += n_rows;
        for (int64_t e = 0; e < ne; e++) {
            in->receivers[at + e] = first + edges->receivers[e];
            in->senders[at + e] = first + edges->senders[e];
            const int32_t *S = edges->shifts + 3 * e;
            for (int c = 0; c < 3; c++)
                put(dt, in->shift_vectors, 3 * (at + e) + c,
                    S[0] * cell[c] + S[1] * cell[3 + c] + S[2] * cell[6 + c]);
        }
        in->n_edges += ne;
        first += n;
    }
    if (!in->receivers) {
        in->receivers = tsr_malloc(sizeof *in->receivers);
        in->senders = tsr_malloc(sizeof *in->senders);
        in->radial_rows = tsr_malloc(sizeof *in->radial_rows);
        in->radial_edges = tsr_malloc(sizeof *in->radial_edges);
        in->shift_vectors = tsr_malloc(3 * fs);
        if (!in->receivers || !in->senders || !in->radial_rows || !in->radial_edges ||
            !in->shift_vectors)
            return TSR_ERR_OUT_OF_MEMORY;
    }
    if (!ev->exact_sizes)
        return pad_inputs(ev, n_structures, in);
    in->rows_atoms = in->n_atoms;
    in->rows_edges = in->n_edges;
    in->rows_radial = in->n_radial;
    in->rows_structures = n_structures;
    return TSR_OK;
}

/* Each atom's share of the virial W = -sum_e v_e (x) dE/dv_e (energy
 * units, -V stress in total): half of each edge's term to either end,
 * symmetrized, as LAMMPS's vatom (xx yy zz xy xz yz). dE/dv_e is minus the
 * gradient with respect to the edge's shift vector (v = r_i - r_j - shift,
 * the strain being zero). */
static void atom_virials(const tsr_ictp_evaluator *ev, const batch_inputs *in,
                         const void *shift_grad, double *virials_out)
{
    tsr_dtype dt = ev->dtype;
    memset(virials_out, 0, 6 * (size_t)in->n_atoms * sizeof *virials_out);
    for (int64_t e = 0; e < in->n_edges; e++) {
        int64_t i = in->receivers[e], j = in->senders[e];
        double v[3], g[3];
        for (int k = 0; k < 3; k++) {
            v[k] = get(dt, in->pos, 3 * i + k) - get(dt, in->pos, 3 * j + k) -
                   get(dt, in->shift_vectors, 3 * e + k);
            g[k] = get(dt, shift_grad, 3 * e + k);
        }
        const double half[6] = {0.5 * v[0] * g[0],
                                0.5 * v[1] * g[1],
                                0.5 * v[2] * g[2],
                                0.25 * (v[0] * g[1] + v[1] * g[0]),
                                0.25 * (v[0] * g[2] + v[2] * g[0]),
                                0.25 * (v[1] * g[2] + v[2] * g[1])};
        for (int c = 0; c < 6; c++) {
            virials_out[6 * i + c] += half[c];
            virials_out[6 * j + c] += half[c];
        }
    }
}

/* n_counted: the number of atoms whose energies count, the first ones of
 * a single structure (tsr_ictp_evaluate_local), or -1 for all.
 * virials_out [atoms][6], or NULL: per-atom virials (atom_virials), which
 * run the virial plan instead of the plain one. */
static tsr_status evaluate_structures(tsr_ictp_evaluator *ev, int64_t n_structures,
                                      const tsr_atoms *const *structures,
                                      const tsr_edges *const *given_edges, int64_t n_counted,
                                      double *energies_out, double *forces_out, double *stress_out,
                                      double *atom_energies_out, double *virials_out)
{
    batch_inputs in = {0};
    tsr_dtype dt = ev->dtype;
    size_t fs = tsr_dtype_size(dt);
    void *energy = NULL, *energies = NULL, *pos_grad = NULL, *strain_grad = NULL;
    void *shift_grad = NULL;
    tsr_status st =
        gather_inputs(ev, n_structures, structures, given_edges, stress_out != NULL, &in);
    if (st != TSR_OK)
        goto cleanup;
    if (virials_out && !ev->virial_plan &&
        (st = gradient_plan(ev, 3, &ev->virial_plan)) != TSR_OK) {
        tsr_error_prefix("ICTP per-atom virials: ");
        goto cleanup;
    }
    if (n_counted >= 0 && n_counted < in.n_atoms) {
        /* The uncounted atoms join the padding structure, whose seed is 0:
         * the counted ones see them, their own energies add nothing. */
        for (int64_t a = n_counted; a < in.n_atoms; a++)
            in.batch[a] = n_structures;
        put(dt, in.seed, n_structures, 0.0);
        in.rows_structures = n_structures + 1;
    }
    int64_t n = in.n_atoms, nb = n_structures;
    int64_t rn = in.rows_atoms, re = in.rows_edges, ru = in.rows_radial, rb = in.rows_structures;
    if (n == 0) {
        for (int64_t b = 0; b < nb; b++)
            energies_out[b] = 0;
        if (stress_out)
            memset(stress_out, 0, 9 * (size_t)nb * sizeof *stress_out);
        goto cleanup;
    }
    energy = tsr_malloc((size_t)rb * fs);
    energies = tsr_malloc((size_t)rn * fs);
    pos_grad = tsr_malloc(3 * (size_t)rn * fs);
    strain_grad = tsr_malloc(9 * (size_t)rb * fs);
    shift_grad = virials_out ? tsr_malloc(3 * (size_t)re * fs) : NULL;
    if (!energy || !energies || !pos_grad || !strain_grad || (virials_out && !shift_grad)) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    tsr_tensor inputs[N_IN] = {
        [IN_POS] = {dt, 2, {rn, 3}, in.pos},
        [IN_SPECIES] = {TSR_INT64, 1, {rn}, in.species},
        [IN_BATCH] = {TSR_INT64, 1, {rn}, in.batch},
        [IN_RECV] = {TSR_INT64, 1, {re}, in.receivers},
        [IN_SEND] = {TSR_INT64, 1, {re}, in.senders},
        [IN_SHIFTS] = {dt, 2, {re, 3}, in.shift_vectors},
        [IN_STRAIN] = {dt, 3, {rb, 3, 3}, in.strain},
        [IN_RADIAL_EDGES] = {TSR_INT64, 1, {ru}, in.radial_edges},
        [IN_RADIAL_ROWS] = {TSR_INT64, 1, {re}, in.radial_rows},
        [IN_SEED] = {dt, 1, {rb}, in.seed},
    };
    tsr_tensor outputs[N_OUT_VIRIAL] = {
        [OUT_ENERGY] = {dt, 1, {rb}, energy},
        [OUT_ENERGIES] = {dt, 1, {rn}, energies},
        [OUT_POS_GRAD] = {dt, 2, {rn, 3}, pos_grad},
        [OUT_STRAIN_GRAD] = {dt, 3, {rb, 3, 3}, strain_grad},
        [OUT_SHIFT_GRAD] = {dt, 2, {re, 3}, shift_grad},
    };
    if ((st = virials_out ? tsr_plan_run(ev->virial_plan, N_IN, inputs, N_OUT_VIRIAL, outputs)
                          : tsr_plan_run(ev->plan, N_IN, inputs, N_OUT, outputs)) != TSR_OK) {
        tsr_error_prefix("ICTP evaluation: ");
        goto cleanup;
    }
    for (int64_t b = 0; b < nb; b++)
        energies_out[b] = get(dt, energy, b);
    for (int64_t i = 0; forces_out && i < 3 * n; i++)
        forces_out[i] = -get(dt, pos_grad, i);
    for (int64_t a = 0; atom_energies_out && a < (n_counted >= 0 ? n_counted : n); a++)
        atom_energies_out[a] = get(dt, energies, a);
    for (int64_t b = 0; stress_out && b < nb; b++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                stress_out[9 * b + 3 * i + j] = 0.5 *
                                                (get(dt, strain_grad, 9 * b + 3 * i + j) +
                                                 get(dt, strain_grad, 9 * b + 3 * j + i)) /
                                                in.volumes[b];
    if (virials_out)
        atom_virials(ev, &in, shift_grad, virials_out);
cleanup:
    batch_free(&in);
    free(shift_grad);
    free(energy);
    free(energies);
    free(pos_grad);
    free(strain_grad);
    return st;
}

tsr_status tsr_ictp_evaluate_batch(tsr_ictp_evaluator *ev, int64_t n_structures,
                                   const tsr_atoms *const *structures, double *energies_out,
                                   double *forces_out, double *stress_out,
                                   double *atom_energies_out)
{
    if (!ev || n_structures < 0 || (n_structures && (!structures || !energies_out)))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_evaluate_batch: NULL argument");
    if (n_structures == 0)
        return TSR_OK;
    return evaluate_structures(ev, n_structures, structures, NULL, -1, energies_out, forces_out,
                               stress_out, atom_energies_out, NULL);
}

tsr_status tsr_ictp_evaluate(tsr_ictp_evaluator *ev, const tsr_atoms *atoms, double *energy_out,
                             double *forces_out, double *stress_out, double *energies_out)
{
    if (!ev || !atoms || !energy_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_evaluate: NULL argument");
    return tsr_ictp_evaluate_batch(ev, 1, &atoms, energy_out, forces_out, stress_out, energies_out);
}

double tsr_ictp_evaluator_cutoff(const tsr_ictp_evaluator *ev)
{
    return ev ? ev->cutoff : 0.0;
}

tsr_status tsr_ictp_evaluate_edges(tsr_ictp_evaluator *ev, const tsr_atoms *atoms,
                                   const tsr_edges *edges, double *energy_out, double *forces_out,
                                   double *stress_out, double *energies_out)
{
    if (!ev || !atoms || !edges || !energy_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_evaluate_edges: NULL argument");
    int64_t n = tsr_atoms_count(atoms);
    if (edges->n_atoms != n || edges->count < 0 || (edges->count > 0 && !edges->receivers))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_ictp_evaluate_edges: the edges are of %lld atoms, the structure "
                         "has %lld",
                         (long long)edges->n_atoms, (long long)n);
    for (int64_t e = 0; e < edges->count; e++)
        if (edges->receivers[e] < 0 || edges->receivers[e] >= n || edges->senders[e] < 0 ||
            edges->senders[e] >= n)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "tsr_ictp_evaluate_edges: edge %lld joins atoms %lld and %lld of "
                             "a structure of %lld",
                             (long long)e, (long long)edges->receivers[e],
                             (long long)edges->senders[e], (long long)n);
    return evaluate_structures(ev, 1, &atoms, &edges, -1, energy_out, forces_out, stress_out,
                               energies_out, NULL);
}

tsr_status tsr_ictp_evaluate_local(tsr_ictp_evaluator *ev, const tsr_atoms *atoms, int64_t n_local,
                                   double *energy_out, double *forces_out, double *energies_out)
{
    return tsr_ictp_evaluate_local_virial(ev, atoms, n_local, energy_out, forces_out, energies_out,
                                          NULL);
}

tsr_status tsr_ictp_evaluate_local_virial(tsr_ictp_evaluator *ev, const tsr_atoms *atoms,
                                          int64_t n_local, double *energy_out, double *forces_out,
                                          double *energies_out, double *virials_out)
{
    if (!ev || !atoms || !energy_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_evaluate_local: NULL argument");
    int64_t n = tsr_atoms_count(atoms);
    if (n_local < 0 || n_local > n)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_ictp_evaluate_local: n_local is %lld, the structure has %lld atoms",
                         (long long)n_local, (long long)n);
    /* A domain's ghosts reach a receptive field past its own atoms (and a
     * skin beyond), but a local energy only needs the messages into atoms
     * fewer than T edges away: the hop count from the local atoms (along
     * edges, receiver to sender) picks the atoms within T hops and the
     * edges into atoms within T - 1. The rest of the cluster is dropped
     * before the graph runs; its atoms get zero forces. */
    tsr_edges all, kept;
    tsr_edges_init(&all);
    tsr_edges_init(&kept);
    int64_t *hop = NULL, *index = NULL;
    int32_t *numbers = NULL;
    double *positions = NULL, *forces = NULL, *virials = NULL;
    tsr_atoms *cluster = NULL;
    double cell[9];
    int pbc[3];
    int has_cell = tsr_atoms_cell(atoms, cell, pbc);
    tsr_status st = tsr_atoms_edges(atoms, ev->cutoff, &all);
    if (st != TSR_OK)
        goto cleanup;
    hop = tsr_malloc(((size_t)n + 1) * sizeof *hop);
    index = tsr_malloc(((size_t)n + 1) * sizeof *index);
    if (!hop || !index) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    for (int64_t a = 0; a < n; a++)
        hop[a] = a < n_local ? 0 : INT64_MAX;
    for (int t = 1; t <= ev->n_interactions; t++)
        for (int64_t e = 0; e < all.count; e++)
            if (hop[all.receivers[e]] == t - 1 && hop[all.senders[e]] > t)
                hop[all.senders[e]] = t;
    int64_t n_kept = 0, n_edges = 0;
    for (int64_t a = 0; a < n; a++)
        index[a] = hop[a] <= ev->n_interactions ? n_kept++ : -1;
    for (int64_t e = 0; e < all.count; e++)
        n_edges += hop[all.receivers[e]] < ev->n_interactions;
    numbers = tsr_malloc(((size_t)n_kept + 1) * sizeof *numbers);
    positions = tsr_malloc(3 * ((size_t)n_kept + 1) * sizeof *positions);
    forces = tsr_malloc(3 * ((size_t)n_kept + 1) * sizeof *forces);
    virials = virials_out ? tsr_malloc(6 * ((size_t)n_kept + 1) * sizeof *virials) : NULL;
    if (!numbers || !positions || !forces || (virials_out && !virials)) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    const int32_t *all_numbers = tsr_atoms_numbers(atoms);
    const double *all_positions = tsr_atoms_positions(atoms);
    for (int64_t a = 0; a < n; a++)
        if (index[a] >= 0) {
            numbers[index[a]] = all_numbers[a];
            memcpy(positions + 3 * index[a], all_positions + 3 * a, 3 * sizeof *positions);
        }
    if ((st = tsr_atoms_create(n_kept, numbers, positions, has_cell ? cell : NULL,
                               has_cell ? pbc : NULL, &cluster)) != TSR_OK ||
        (st = tsr_edges_reserve(&kept, n_edges, n_kept)) != TSR_OK)
        goto cleanup;
    /* What gather_inputs reads of the edges: their atoms and shifts. */
    for (int64_t e = 0; e < all.count; e++)
        if (hop[all.receivers[e]] < ev->n_interactions) {
            kept.receivers[kept.count] = index[all.receivers[e]];
            kept.senders[kept.count] = index[all.senders[e]];
            memcpy(kept.shifts + 3 * kept.count, all.shifts + 3 * e, 3 * sizeof *kept.shifts);
            kept.count++;
        }
    kept.n_atoms = n_kept;
    const tsr_edges *kept_edges = &kept;
    const tsr_atoms *kept_atoms = cluster;
    if ((st = evaluate_structures(ev, 1, &kept_atoms, &kept_edges, n_local, energy_out,
                                  forces_out ? forces : NULL, NULL, energies_out, virials)) !=
        TSR_OK)
        goto cleanup;
    for (int64_t a = 0; forces_out && a < n; a++)
        for (int k = 0; k < 3; k++)
            forces_out[3 * a + k] = index[a] >= 0 ? forces[3 * index[a] + k] : 0.0;
    for (int64_t a = 0; virials_out && a < n; a++)
        for (int c = 0; c < 6; c++)
            virials_out[6 * a + c] = index[a] >= 0 ? virials[6 * index[a] + c] : 0.0;
cleanup:
    tsr_edges_free(&all);
    tsr_edges_free(&kept);
    tsr_atoms_destroy(cluster);
    free(hop);
    free(index);
    free(numbers);
    free(positions);
    free(forces);
    free(virials);
    return st;
}

/* Evaluating an ICTP model: neighbour list, the energy graph's gradient
 * (tsr_graph_gradient with respect to positions and strain) compiled into
 * one plan, and the results into the caller's buffers. */
#include "models/ictp/ictp_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { IN_POS, IN_SPECIES, IN_RECV, IN_SEND, IN_SHIFTS, IN_CELL, IN_STRAIN, IN_SEED, N_IN };
enum { OUT_ENERGY, OUT_ENERGIES, OUT_POS_GRAD, OUT_STRAIN_GRAD, N_OUT };

struct tsr_ictp_evaluator {
    tsr_plan *plan;
    tsr_dtype dtype;
    double cutoff;
    int n_species;
    int32_t types[ICTP_MAX_SPECIES];
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
    tsr_edges_free(&ev->edges);
    free(ev);
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
    tsr_graph *graph = NULL, *grad = NULL;
    tsr_ictp_evaluator *ev = tsr_calloc(1, sizeof *ev);
    if (!ev)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = ictp_build_graph(model, opt.dtype, &graph);
    if (st != TSR_OK)
        goto cleanup;
    const char *outputs[1] = {"energy"}, *wrt[2] = {"positions", "strain"};
    if ((st = tsr_graph_gradient(graph, 1, outputs, 2, wrt, &grad)) != TSR_OK)
        goto cleanup;
    if (tsr_graph_num_inputs(grad) != N_IN || tsr_graph_num_outputs(grad) != N_OUT) {
        st = tsr_error(TSR_ERR_INTERNAL, "ICTP: the gradient graph has %d inputs and %d outputs",
                       tsr_graph_num_inputs(grad), tsr_graph_num_outputs(grad));
        goto cleanup;
    }
    tsr_compile_options co;
    tsr_compile_options_init(&co);
    co.device = opt.device;
    co.threads = opt.threads;
    if ((st = tsr_plan_create(grad, &co, &ev->plan)) != TSR_OK)
        goto cleanup;
    ev->dtype = opt.dtype;
    ev->cutoff = model->cfg.r_cutoff;
    ev->n_species = model->cfg.n_species;
    memcpy(ev->types, model->cfg.types, sizeof ev->types);
    tsr_edges_init(&ev->edges);
    *evaluator_out = ev;
    ev = NULL;
cleanup:
    tsr_graph_destroy(graph);
    tsr_graph_destroy(grad);
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

tsr_status tsr_ictp_evaluate(tsr_ictp_evaluator *ev, const tsr_atoms *atoms, double *energy_out,
                             double *forces_out, double *stress_out, double *energies_out)
{
    if (!ev || !atoms || !energy_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_evaluate: NULL argument");
    int64_t n = tsr_atoms_count(atoms);
    const int32_t *numbers = tsr_atoms_numbers(atoms);
    const double *positions = tsr_atoms_positions(atoms);
    double cell[9] = {0};
    tsr_atoms_cell(atoms, cell, NULL);
    double volume = fabs(det3(cell));
    if (stress_out && !(volume > 0))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "ICTP: the stress needs a cell of non-zero volume; this structure has "
                         "%s",
                         volume == 0 ? "none" : "a degenerate one");
    if (n == 0) {
        *energy_out = 0;
        if (stress_out)
            memset(stress_out, 0, 9 * sizeof *stress_out);
        return TSR_OK;
    }
    size_t fs = tsr_dtype_size(ev->dtype);
    int64_t *species = tsr_malloc((size_t)n * sizeof *species);
    void *pos = tsr_malloc((size_t)n * 3 * fs), *pos_grad = tsr_malloc((size_t)n * 3 * fs);
    void *energies = tsr_malloc((size_t)n * fs), *shifts = NULL;
    unsigned char small[4][9 * sizeof(double)] = {{0}};
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!species || !pos || !pos_grad || !energies)
        goto cleanup;
    for (int64_t a = 0; a < n; a++) {
        int s = 0;
        while (s < ev->n_species && ev->types[s] != numbers[a])
            s++;
        if (s == ev->n_species) {
            const char *sym = tsr_atoms_symbol(numbers[a]);
            st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                           "ICTP: atom %lld is %s (Z = %d), which the model does not know",
                           (long long)a, sym ? sym : "?", numbers[a]);
            goto cleanup;
        }
        species[a] = s;
        for (int k = 0; k < 3; k++)
            put(ev->dtype, pos, 3 * a + k, positions[3 * a + k]);
    }
    if ((st = tsr_atoms_edges(atoms, ev->cutoff, &ev->edges)) != TSR_OK)
        goto cleanup;
    int64_t ne = ev->edges.count;
    shifts = tsr_malloc((size_t)(ne ? ne : 1) * 3 * fs);
    if (!shifts) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto cleanup;
    }
    for (int64_t e = 0; e < 3 * ne; e++)
        put(ev->dtype, shifts, e, ev->edges.shifts[e]);
    void *cell_t = small[0], *strain = small[1], *seed = small[2], *strain_grad = small[3];
    double energy_value[1];
    for (int k = 0; k < 9; k++) {
        put(ev->dtype, cell_t, k, cell[k]);
        put(ev->dtype, strain, k, 0.0);
    }
    put(ev->dtype, seed, 0, 1.0);
    tsr_dtype dt = ev->dtype;
    tsr_tensor in[N_IN] = {
        [IN_POS] = {dt, 2, {n, 3}, pos},
        [IN_SPECIES] = {TSR_INT64, 1, {n}, species},
        [IN_RECV] = {TSR_INT64, 1, {ne}, ev->edges.receivers},
        [IN_SEND] = {TSR_INT64, 1, {ne}, ev->edges.senders},
        [IN_SHIFTS] = {dt, 2, {ne, 3}, shifts},
        [IN_CELL] = {dt, 2, {3, 3}, cell_t},
        [IN_STRAIN] = {dt, 2, {3, 3}, strain},
        [IN_SEED] = {dt, 1, {1}, seed},
    };
    tsr_tensor out[N_OUT] = {
        [OUT_ENERGY] = {dt, 1, {1}, energy_value},
        [OUT_ENERGIES] = {dt, 1, {n}, energies},
        [OUT_POS_GRAD] = {dt, 2, {n, 3}, pos_grad},
        [OUT_STRAIN_GRAD] = {dt, 2, {3, 3}, strain_grad},
    };
    if ((st = tsr_plan_run(ev->plan, N_IN, in, N_OUT, out)) != TSR_OK) {
        tsr_error_prefix("ICTP evaluation: ");
        goto cleanup;
    }
    *energy_out = get(dt, energy_value, 0);
    for (int64_t i = 0; forces_out && i < 3 * n; i++)
        forces_out[i] = -get(dt, pos_grad, i);
    for (int64_t a = 0; energies_out && a < n; a++)
        energies_out[a] = get(dt, energies, a);
    for (int i = 0; stress_out && i < 3; i++)
        for (int j = 0; j < 3; j++)
            stress_out[3 * i + j] =
                0.5 * (get(dt, strain_grad, 3 * i + j) + get(dt, strain_grad, 3 * j + i)) / volume;
cleanup:
    free(species);
    free(pos);
    free(pos_grad);
    free(energies);
    free(shifts);
    return st;
}

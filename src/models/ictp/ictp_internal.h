/* ICTP models: the configuration, the weights by the authors' key names,
 * and the graph built from them (docs/ictp-checkpoint.md §1-4). */
#ifndef TSR_ICTP_INTERNAL_H
#define TSR_ICTP_INTERNAL_H

#include "core/core.h"
#include "tessera/ictp.h"

#define ICTP_MAX_L 3
#define ICTP_MAX_MLP 16
#define ICTP_MAX_SPECIES 119

typedef struct ictp_config {
    int n_species;                   /* S */
    int32_t types[ICTP_MAX_SPECIES]; /* atomic number of each species */
    double r_cutoff;
    int n_basis, p_cutoff;
    int n_radial, radial[ICTP_MAX_MLP];   /* hidden widths of the radial MLP */
    int n_readout, readout[ICTP_MAX_MLP]; /* hidden widths of the last readout */
    int F, G, T, Lh, Le, nu;
    bool symmetric, coupled;
    double avg_n_neighbors;
} ictp_config;

/* One weight, in double whatever the file held. */
typedef struct ictp_weight {
    char *key;
    int rank;
    int64_t dims[4];
    double *data;
} ictp_weight;

struct tsr_ictp_model {
    ictp_config cfg;
    int n_weights;
    ictp_weight *weights;
};

/* The (l1, l2) pairs that reach rank l3 in the table order of
 * ictp-checkpoint.md §3, those with l1 <= l1max and l2 <= l2max; `full`
 * adds the mirrored orders. Returns the count (at most 7). */
int ictp_pairs(int l3, int l1max, int l2max, bool full, int pairs_out[][2]);
/* Paths per rank after product step `step` (0-based), ranks 0..*top_out. */
void ictp_product_paths(const ictp_config *cfg, int layer, int step, int paths_out[4],
                        int *top_out);
const ictp_weight *ictp_weight_get(const tsr_ictp_model *model, const char *key);

/* The "config" member of a model's .json (errors name the file, line and key). */
tsr_status ictp_read_config(const char *path, ictp_config *cfg);
/* Every key the forward pass reads, with its shape (data NULL), in a new
 * array that ictp_weights_free releases. */
tsr_status ictp_expected_weights(const ictp_config *cfg, int *n_out, ictp_weight **weights_out);
void ictp_weights_free(int n, ictp_weight *weights);

/* The energy graph of tsr_ictp_model_graph; with tables (n intervals, from
 * ictp_radial_tables) the radial weights are RadialSpline nodes of them
 * instead of the MLPs. */
tsr_status ictp_build_graph(const tsr_ictp_model *model, tsr_dtype dtype,
                            const double *const *tables, int64_t n, tsr_graph **graph_out);
/* The graph's radial_rows and radial_edges of a structure's edges: an edge
 * (i, j, S) and its reverse (j, i, -S) have one distance, so they share a
 * row of radial weights. rows_out[e] = row_offset + the row of edge e,
 * reps_out[u] = edge_offset + the first edge of row u (rows numbered in
 * the order of their first edges); *n_rows_out the row count (at most
 * edges->count). */
tsr_status ictp_radial_rows(const tsr_edges *edges, int64_t edge_offset, int64_t row_offset,
                            int64_t *rows_out, int64_t *reps_out, int64_t *n_rows_out);
/* Every interaction's radial weights (the MLP of the Bessel basis and its
 * last layer, all paths) tabulated for RadialSpline on n intervals of
 * [0, r_c): tables_out[t] [n][4][paths·F] (RadialSpline's coefficients),
 * run on `device` in float64. */
tsr_status ictp_radial_tables(const tsr_ictp_model *model, int64_t n, const char *device,
                              int threads, double ***tables_out);
void ictp_radial_tables_free(int n_tables, double **tables);

#endif

/* ICTP interatomic potentials (Zaverkin et al., NeurIPS 2024) on Tessera.
 *
 * A model is the authors' state_dict saved as MODEL.npz (their key names;
 * the `.blocks.<l>.weight` aliases are accepted) with MODEL.json beside it,
 * whose "config" member holds the run configuration (the keys of
 * docs/ictp-checkpoint.md §1; other members and keys are ignored). Loading
 * checks every key and shape against the configuration and names the key
 * that is missing, mis-shaped or unknown.
 *
 * The model becomes an ordinary Tessera graph: energies from positions
 * through the edge vectors v = r_i − r_j − S·cell, and forces and stress
 * from tsr_graph_gradient of that graph, the same autodiff as everything
 * else (see docs/ictp.md).
 *
 * Units are those of the training data (Å and eV in practice). Stress is
 * (1/V) ∂E/∂ε for a symmetric strain ε applied to cell and positions
 * (ASE's sign: positive under tension); virial = −V · stress. */
#ifndef TESSERA_ICTP_H
#define TESSERA_ICTP_H

#include "tessera/atoms.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_ictp_model tsr_ictp_model;

/* Loads MODEL.npz and the .json of the same stem (`path` may name either
 * file, or the stem). */
TSR_API tsr_status tsr_ictp_model_load(const char *path, tsr_ictp_model **model_out);
TSR_API void tsr_ictp_model_destroy(tsr_ictp_model *model); /* NULL is fine */
/* The cutoff radius r_c of the model's neighbour lists. */
TSR_API double tsr_ictp_model_cutoff(const tsr_ictp_model *model);
/* The atomic numbers the model knows, in species order (count returned;
 * numbers_out, when not NULL, receives up to `capacity` of them). */
TSR_API int tsr_ictp_model_species(const tsr_ictp_model *model, int32_t *numbers_out, int capacity);

typedef struct tsr_ictp_options {
    const char *device; /* NULL: the default device */
    tsr_dtype dtype;    /* TSR_FLOAT32 or TSR_FLOAT64 (default) */
    int threads;        /* 0: all cores */
} tsr_ictp_options;

TSR_API void tsr_ictp_options_init(tsr_ictp_options *options);

/* An evaluator holds the compiled graph for one device, dtype and thread
 * count. It does not refer to the model afterwards (the model may be
 * destroyed). One evaluator is not for several threads at once. */
typedef struct tsr_ictp_evaluator tsr_ictp_evaluator;

TSR_API tsr_status tsr_ictp_evaluator_create(const tsr_ictp_model *model,
                                             const tsr_ictp_options *options,
                                             tsr_ictp_evaluator **evaluator_out);
TSR_API void tsr_ictp_evaluator_destroy(tsr_ictp_evaluator *evaluator);

/* Evaluates one structure. energy_out gets the total energy; forces_out
 * [n][3], stress_out [9] (row-major 3x3) and energies_out [n] (per-atom
 * energies, which add up to the total) may each be NULL. Stress needs a
 * cell of non-zero volume. Every atomic number must be one of the
 * model's species. On failure nothing is written. */
TSR_API tsr_status tsr_ictp_evaluate(tsr_ictp_evaluator *evaluator, const tsr_atoms *atoms,
                                     double *energy_out, double *forces_out, double *stress_out,
                                     double *energies_out);
/* Evaluates several structures (of any sizes) in one run of the graph.
 * energies_out [n_structures]; forces_out [N][3] and atom_energies_out
 * [N], N the sum of the atom counts, structure after structure;
 * stress_out [n_structures][9]. The last three may be NULL. Each result
 * equals what tsr_ictp_evaluate gives for that structure alone (up to
 * rounding). On failure nothing is written. */
TSR_API tsr_status tsr_ictp_evaluate_batch(tsr_ictp_evaluator *evaluator, int64_t n_structures,
                                           const tsr_atoms *const *structures, double *energies_out,
                                           double *forces_out, double *stress_out,
                                           double *atom_energies_out);

/* The energy graph the evaluator differentiates, for tools and tests: a
 * new graph (the caller destroys it) in `dtype`, with inputs
 *   positions [atoms, 3], species int64 [atoms] (0-based species index),
 *   batch int64 [atoms] (each atom's structure, 0-based),
 *   receivers int64 [edges], senders int64 [edges] (atom indices),
 *   shift_vectors [edges, 3] (S·cell), strain [structures, 3, 3],
 * and outputs energy [structures] and energies [atoms]. The edge vectors
 * are (r_i - r_j - S·cell)(I + strain of the edge's structure). */
TSR_API tsr_status tsr_ictp_model_graph(const tsr_ictp_model *model, tsr_dtype dtype,
                                        tsr_graph **graph_out);
/* The same graph with every weight of the state_dict a parameter
 * (tsr_graph_add_parameter) named by its key, the scale and shift
 * constants: the graph that training differentiates (forces through
 * tsr_graph_gradient with respect to positions, then the loss's gradient
 * with respect to the parameters). */
TSR_API tsr_status tsr_ictp_model_training_graph(const tsr_ictp_model *model, tsr_dtype dtype,
                                                 tsr_graph **graph_out);

#ifdef __cplusplus
}
#endif

#endif

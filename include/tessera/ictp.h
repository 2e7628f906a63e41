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
/* How far an atom's energy sees: interactions x cutoff. An atom's energy
 * depends on the positions and species of the atoms within this distance
 * and on no others (each interaction passes messages one cutoff further). */
TSR_API double tsr_ictp_model_receptive_field(const tsr_ictp_model *model);
/* The atomic numbers the model knows, in species order (count returned;
 * numbers_out, when not NULL, receives up to `capacity` of them). */
TSR_API int tsr_ictp_model_species(const tsr_ictp_model *model, int32_t *numbers_out, int capacity);

typedef struct tsr_ictp_options {
    const char *device; /* NULL: the default device */
    tsr_dtype dtype;    /* TSR_FLOAT32 or TSR_FLOAT64 (default) */
    int threads;        /* 0: all cores */
    /* 0 (default): atom and edge counts are padded to capacity classes 16,
     * then steps of 1.25x (padding that no real atom sees), so that runs
     * whose counts change at every call, such as MD, reuse a few plan
     * specializations instead of building one per count; 1: plan at the
     * exact counts. Results are the same either way. */
    int exact_sizes;
    /* 0 (default): the radial MLPs run at every evaluation, as the model
     * defines them; n > 0 (16 to 65536): each interaction's radial
     * weights, functions of the distance alone, are tabulated when the
     * evaluator is created as cubic splines (C2) on n equal intervals of
     * [0, r_c) and looked up per edge (RadialSpline), which skips the MLPs'
     * matrix products forward and in the forces. The results then differ
     * from the model's by the spline's error, which falls as n^-4
     * (docs/ictp.md gives it for the published model; 2048 intervals keep
     * forces within about 1e-7 relative). */
    int radial_table;
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
/* The statistics of the evaluator's plan at its last evaluation (arena,
 * steps, and n_cached_specs: how many specializations the size classes
 * have needed so far, up to the cache's limit). */
TSR_API tsr_status tsr_ictp_evaluator_stats(const tsr_ictp_evaluator *evaluator,
                                            tsr_plan_stats *stats_out);
/* The evaluator's plan, for profiling (tsr_plan_set_profiling,
 * tsr_plan_print_profile); it stays the evaluator's. */
TSR_API tsr_plan *tsr_ictp_evaluator_plan(tsr_ictp_evaluator *evaluator);

/* Evaluates one structure. energy_out gets the total energy; forces_out
 * [n][3], stress_out [9] (row-major 3x3) and energies_out [n] (per-atom
 * energies, which add up to the total) may each be NULL. Stress needs a
 * cell of non-zero volume. Every atomic number must be one of the
 * model's species. On failure nothing is written. */
TSR_API tsr_status tsr_ictp_evaluate(tsr_ictp_evaluator *evaluator, const tsr_atoms *atoms,
                                     double *energy_out, double *forces_out, double *stress_out,
                                     double *energies_out);
/* The same with the structure's edges given: exactly those of
 * tsr_atoms_edges(atoms, tsr_ictp_evaluator_cutoff(evaluator), ...), as a
 * tsr_neighbor_list with a skin keeps them during MD without a cell-list
 * build at every step. Edges of another atom count or out-of-range atoms
 * are an error; edges beyond the cutoff add nothing, missing ones are the
 * caller's mistake. */
TSR_API tsr_status tsr_ictp_evaluate_edges(tsr_ictp_evaluator *evaluator, const tsr_atoms *atoms,
                                           const tsr_edges *edges, double *energy_out,
                                           double *forces_out, double *stress_out,
                                           double *energies_out);
/* The energy of the first n_local atoms of `atoms` in the field of all of
 * them, for domain decomposition (LAMMPS): the other atoms (ghosts: images
 * and neighbours owned elsewhere) are seen by the local ones, but their own
 * energies do not count. energy_out gets the sum of the local atoms'
 * energies, forces_out [n][3] minus its gradient for every atom, ghosts
 * included (their owners add them up), energies_out [n_local] the local
 * per-atom energies. The local energies are those of the whole system when
 * the ghosts hold every atom within tsr_ictp_model_receptive_field of a
 * local atom. On failure nothing is written. */
TSR_API tsr_status tsr_ictp_evaluate_local(tsr_ictp_evaluator *evaluator, const tsr_atoms *atoms,
                                           int64_t n_local, double *energy_out,
                                           double *forces_out, double *energies_out);
/* The same with each atom's share of the virial, virials_out [n][6] (may
 * be NULL: then it is tsr_ictp_evaluate_local): with v_e the edge vectors
 * and E the local energy, each edge's term -v_e (x) dE/dv_e, symmetrized,
 * half to either of its atoms, as xx yy zz xy xz yz in energy units
 * (LAMMPS's vatom; compute stress/atom). Ghosts get shares too, for their
 * owners to add up, and atoms out of reach zeros. They add up to the
 * virial -V·stress: of the whole system over all domains, and for a
 * periodic structure with n_local = n its own. The first call that asks
 * for them builds a second plan (the gradient with respect to the edge
 * vectors as well); calls without them never run it. */
TSR_API tsr_status tsr_ictp_evaluate_local_virial(tsr_ictp_evaluator *evaluator,
                                                  const tsr_atoms *atoms, int64_t n_local,
                                                  double *energy_out, double *forces_out,
                                                  double *energies_out, double *virials_out);
/* The model's cutoff, as tsr_ictp_model_cutoff (0 for NULL). */
TSR_API double tsr_ictp_evaluator_cutoff(const tsr_ictp_evaluator *evaluator);
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
 *   radial_edges int64 [rows] (an edge per row of radial weights),
 *   radial_rows int64 [edges] (each edge's row: an edge and its reverse
 *   may share one, as their distances are equal; 0..edges-1 for both
 *   gives each edge its own),
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

/* ------------------------------------------------------------ training */

/* Errors of a model on labelled structures (info "energy", array "forces"):
 * energy per atom (|ΔE| / N, one value per structure) and force components,
 * in the data's units (eV/atom and eV/Å in practice). */
typedef struct tsr_ictp_metrics {
    double energy_mae, energy_rmse;
    double forces_mae, forces_rmse;
    /* Over the 9 stress components of the structures that have a stress
     * (or a virial) and a cell, eV/Å³ in practice; 0 with n_stress 0. */
    double stress_mae, stress_rmse;
    int64_t n_stress;
} tsr_ictp_metrics;

/* The metrics of an evaluator's model on `frames` (each evaluated alone). */
TSR_API tsr_status tsr_ictp_metrics_compute(tsr_ictp_evaluator *evaluator, int64_t n_frames,
                                            tsr_atoms *const *frames, tsr_ictp_metrics *out);

/* The published recipe (docs/ictp.md "Training"): loss
 * w_E Σ_b (ΔE_b / N_b)^2 + w_F Σ_a |ΔF_a|^2 (+ w_S Σ_b |Δσ_b|^2 over the
 * structures with a stress, or a virial, and a cell) over a batch, the
 * force and stress terms through second derivatives; Adam with AMSGrad,
 * a plateau schedule, L2 weight decay on the product-basis weights and the
 * linear maps after the products, an exponential moving average of the
 * weights (used for validation and saving). */
typedef struct tsr_ictp_train_options {
    const char *device;        /* NULL: the default device */
    tsr_dtype dtype;           /* TSR_FLOAT32 or TSR_FLOAT64 (default) */
    int threads;               /* 0: all cores */
    uint64_t seed;             /* initial weights and the order of the structures */
    int batch_size;            /* structures per step, default 5 */
    double lr;                 /* default 0.01 */
    double w_energy, w_forces; /* default 1 and 10 */
    double w_stress;           /* default 1; no term when no training frame has a stress */
    double weight_decay;       /* default 5e-7 */
    double ema_decay;          /* default 0.99; 0: none */
    int lr_patience;           /* epochs without improvement before lr *= lr_factor; 50 */
    double lr_factor;          /* default 0.8 */
} tsr_ictp_train_options;

TSR_API void tsr_ictp_train_options_init(tsr_ictp_train_options *options);

typedef struct tsr_ictp_trainer tsr_ictp_trainer;

/* A new model of the configuration in config_path (a .json whose "config"
 * member has the keys of a model's .json; avg_n_neighbors is replaced by
 * the training set's) with N(0, 1) weights from the seed, the scale and
 * shift of ictp-checkpoint.md §6 from `train`, and its trainer. `train`
 * must outlive the trainer. Errors name the frame without energy or
 * forces, or the atom of a species the configuration lacks. */
TSR_API tsr_status tsr_ictp_trainer_create(const char *config_path, int64_t n_train,
                                           tsr_atoms *const *train,
                                           const tsr_ictp_train_options *options,
                                           tsr_ictp_trainer **trainer_out);
TSR_API void tsr_ictp_trainer_destroy(tsr_ictp_trainer *trainer);

/* Called after every batch with the structures done, their count and the
 * mean loss per structure so far. */
typedef void (*tsr_ictp_progress_fn)(void *ctx, int64_t done, int64_t total, double loss);

/* One pass over the training set in batches, in an order fixed by the seed
 * and the epoch number; loss_out (may be NULL) gets the mean loss per
 * structure. */
TSR_API tsr_status tsr_ictp_trainer_epoch(tsr_ictp_trainer *trainer, tsr_ictp_progress_fn progress,
                                          void *ctx, double *loss_out);
/* Metrics of the moving-average weights on labelled structures. */
TSR_API tsr_status tsr_ictp_trainer_validate(tsr_ictp_trainer *trainer, int64_t n_frames,
                                             tsr_atoms *const *frames, tsr_ictp_metrics *out);
/* Ends an epoch: `metric` (lower is better) drives the plateau schedule. */
TSR_API tsr_status tsr_ictp_trainer_epoch_end(tsr_ictp_trainer *trainer, double metric);
TSR_API double tsr_ictp_trainer_lr(const tsr_ictp_trainer *trainer);
TSR_API int64_t tsr_ictp_trainer_epochs(const tsr_ictp_trainer *trainer);
/* MODEL.npz and MODEL.json (what tsr_ictp_model_load reads), from the
 * moving-average weights, each written atomically. */
TSR_API tsr_status tsr_ictp_trainer_save_model(tsr_ictp_trainer *trainer, const char *path);
/* Everything a resumed run needs (tsr_trainer_save_checkpoint's file at
 * `path`, and PATH.loop with the epoch, the best metric and the epochs
 * without improvement), each written atomically. Loading into a trainer
 * created with the same configuration, data and options continues
 * bit-identically; a corrupt or mismatched checkpoint is a clear error. */
TSR_API tsr_status tsr_ictp_trainer_save_checkpoint(const tsr_ictp_trainer *trainer,
                                                    const char *path, double best_metric,
                                                    int epochs_without_improvement);
TSR_API tsr_status tsr_ictp_trainer_load_checkpoint(tsr_ictp_trainer *trainer, const char *path,
                                                    double *best_metric,
                                                    int *epochs_without_improvement);

#ifdef __cplusplus
}
#endif

#endif

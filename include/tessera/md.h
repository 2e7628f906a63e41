/* Molecular dynamics on an ICTP potential (include/tessera/ictp.h).
 *
 * Units: Å, fs, eV, amu and K; velocities in Å/fs. Masses are the
 * structure's per-atom array "masses" when it has one, else the standard
 * atomic weights (IUPAC 2016, ASE's defaults).
 *
 * Ensembles, each one force evaluation per step:
 *   NVE          velocity Verlet;
 *   Langevin     BAOAB (Leimkuhler and Matthews): half kick, half drift,
 *                the exact Ornstein-Uhlenbeck update of the velocities,
 *                half drift, half kick;
 *   Nosé-Hoover  a chain (Martyna, Klein and Tuckerman) around velocity
 *                Verlet, its thermostat half-steps split by the
 *                third-order Suzuki-Yoshida weights.
 *
 * The temperature is 2 Ekin / (N_f k_B) with N_f = 3N - 3 where the total
 * momentum is conserved (NVE, Nosé-Hoover) and 3N under Langevin.
 *
 * Edges come from a tsr_neighbor_list with a skin: the cell-list build
 * runs only when an atom moved more than skin / 2 since the last one, and
 * atoms are wrapped into the cell (periodic axes) right before such a
 * build, so between builds they may stand up to skin / 2 outside it. */
#ifndef TESSERA_MD_H
#define TESSERA_MD_H

#include "tessera/ictp.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tsr_md_ensemble {
    TSR_MD_NVE = 0,
    TSR_MD_LANGEVIN,
    TSR_MD_NOSE_HOOVER
} tsr_md_ensemble;

typedef struct tsr_md_options {
    tsr_md_ensemble ensemble; /* default TSR_MD_NVE */
    double timestep;          /* fs; default 0.5 */
    /* K: the thermostat's target, and the temperature of the Maxwell-
     * Boltzmann start velocities when the structure brings none; default 0
     * (atoms at rest). Langevin and Nosé-Hoover need it > 0. */
    double temperature;
    double friction; /* Langevin, 1/ps; default 10 */
    double nh_tau;   /* Nosé-Hoover relaxation time, fs; default 50 */
    int nh_chain;    /* Nosé-Hoover chain length; default 3 */
    double skin;     /* neighbour list skin, Å; default 1 */
    uint64_t seed;   /* start velocities and Langevin noise */
} tsr_md_options;

TSR_API void tsr_md_options_init(tsr_md_options *options);

typedef struct tsr_md tsr_md;

/* A run from `start` (copied). Velocities are start's per-atom array
 * "velocities" (n x 3, Å/fs) when it has one; otherwise Maxwell-Boltzmann
 * at options->temperature from the seed, with zero total momentum, scaled
 * so that the temperature is exactly the target. The first forces are
 * computed here, so errors of the structure (a species the model lacks, a
 * cell too thin) show at once. The evaluator is borrowed and must outlive
 * the run. */
TSR_API tsr_status tsr_md_create(tsr_ictp_evaluator *evaluator, const tsr_atoms *start,
                                 const tsr_md_options *options, tsr_md **md_out);
TSR_API void tsr_md_destroy(tsr_md *md); /* NULL is fine */

/* Advances n_steps (>= 0) steps. A step that fails (an evaluation error,
 * energies or forces that became non-finite) is an error naming the step,
 * and the run cannot go on: later calls fail too. */
TSR_API tsr_status tsr_md_run(tsr_md *md, int64_t n_steps);

typedef struct tsr_md_state {
    int64_t step;
    double time;             /* fs */
    double potential_energy; /* eV */
    double kinetic_energy;   /* eV */
    double total_energy;     /* eV, potential + kinetic */
    double temperature;      /* K */
    /* eV: what the dynamics conserves: the total energy (NVE); plus the
     * chain's energy (Nosé-Hoover); minus the heat the thermostat put in
     * so far (Langevin, BAOAB's effective energy) */
    double conserved;
    int64_t degrees_of_freedom;
    int64_t neighbor_builds; /* cell-list builds so far */
} tsr_md_state;

TSR_API tsr_status tsr_md_get_state(const tsr_md *md, tsr_md_state *state_out);

/* The current structure: positions, cell, per-atom arrays "velocities"
 * (Å/fs), "forces" (eV/Å) and, when given, "masses"; info "energy"
 * (potential, eV), "kinetic_energy", "temperature", "time" (fs) and
 * "step". What tsr_extxyz_append writes as a trajectory frame. Valid until
 * the next tsr_md_run or tsr_md_destroy. */
TSR_API const tsr_atoms *tsr_md_atoms(const tsr_md *md);

#ifdef __cplusplus
}
#endif

#endif

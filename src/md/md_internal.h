/* The MD engine behind include/tessera/md.h, over any potential: the
 * public API binds it to an ICTP evaluator, the C tests to cheap analytic
 * potentials that long thermostat runs can afford. */
#ifndef TSR_MD_INTERNAL_H
#define TSR_MD_INTERNAL_H

#include "core/core.h"
#include "tessera/md.h"

/* A potential: energy (eV) and forces [n][3] (eV/Å) of `atoms` from its
 * edges within `cutoff`. */
typedef struct md_potential {
    double cutoff;
    tsr_status (*compute)(void *ctx, const tsr_atoms *atoms, const tsr_edges *edges,
                          double *energy_out, double *forces_out);
    void *ctx;
} md_potential;

tsr_status md_create(const md_potential *potential, const tsr_atoms *start,
                     const tsr_md_options *options, tsr_md **md_out);

/* The standard atomic weight of Z in amu (0 outside 0..TSR_ATOMS_MAX_Z). */
double md_standard_mass(int z);

/* eV/Å/amu in Å/fs^2 (CODATA 2018: e / amu x 1e-10), and Boltzmann's
 * constant in eV/K. */
#define MD_ACCEL (1.602176634e-19 / 1.66053906660e-27 * 1e-10)
#define MD_KB 8.617333262e-5

#endif

/* tessera-lammps: Debian's LAMMPS with pair_style tessera/ictp.
 *
 *   mpirun -np N tessera-lammps -in in.script [any lmp option]
 *
 * Why a program and not a plugin: Debian 12's LAMMPS (29 Sep 2021) is built
 * without the PLUGIN package, so `plugin load` does not exist, and its
 * style table is compiled in. But the table is a std::map the LAMMPS
 * object exposes (force->pair_map), so a program linked against
 * liblammps.so can create the LAMMPS instance, add the style to the map,
 * and then read the input script exactly as `lmp` does. Everything else is
 * Debian's LAMMPS unchanged: every other style, every command-line option,
 * MPI domain decomposition. */
#include "force.h"
#include "input.h"
#include "lammps.h"

#include "pair_tessera_ictp.h"

#include <mpi.h>

#include <cstdio>
#include <exception>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int n_ranks = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &n_ranks);
    try {
        LAMMPS_NS::LAMMPS *lmp = new LAMMPS_NS::LAMMPS(argc, argv, MPI_COMM_WORLD);
        (*lmp->force->pair_map)["tessera/ictp"] = tessera_lammps::PairTesseraIctp::create;
        lmp->input->file();
        delete lmp;
    } catch (const std::exception &e) {
        /* LAMMPS has printed the error already. An error on one rank only
         * leaves the others waiting in a collective call; the installed
         * headers do not tell that case from an error on every rank, so
         * several ranks abort them all. */
        std::fflush(stdout);
        if (n_ranks > 1)
            MPI_Abort(MPI_COMM_WORLD, 1);
        MPI_Finalize();
        return 1;
    }
    MPI_Finalize();
    return 0;
}

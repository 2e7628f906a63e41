/* pair_style tessera/ictp: ICTP potentials in LAMMPS, a thin adapter over
 * Tessera's C API (include/tessera/ictp.h); every computation is the C
 * library's. See docs/lammps.md.
 *
 *   pair_style tessera/ictp [dtype float64|float32] [threads N] [device NAME]
 *   pair_coeff * * MODEL.npz ELEMENT_OF_TYPE_1 ELEMENT_OF_TYPE_2 ...
 *
 * LAMMPS decomposes the domain; each rank evaluates its own atoms and the
 * ghost atoms around them as one non-periodic cluster in which only the
 * own atoms' energies count (tsr_ictp_evaluate_local). init_one returns the
 * model's receptive field (interactions x cutoff) as the pair cutoff, so
 * LAMMPS's communication cutoff (pair cutoff + skin) brings every atom an
 * owned atom's energy depends on in as a ghost; the style requests no
 * LAMMPS neighbour list, the C library builds its own. Forces on ghosts go
 * back to their owners through LAMMPS's reverse communication, hence
 * `newton on`; the virial is LAMMPS's sum of r . f over owned and ghost
 * atoms (virial_fdotr_compute), exact for a cluster like this one, and the
 * per-atom virials (compute stress/atom) the C library's split of it
 * between the atoms, ghosts' shares going to their owners the same way. */
#ifndef TESSERA_PAIR_TESSERA_ICTP_H
#define TESSERA_PAIR_TESSERA_ICTP_H

#include "pair.h"

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/ictp.h"

namespace tessera_lammps
{

class PairTesseraIctp : public LAMMPS_NS::Pair
{
  public:
    explicit PairTesseraIctp(LAMMPS_NS::LAMMPS *lmp);
    ~PairTesseraIctp() override;

    void compute(int eflag, int vflag) override;
    void settings(int narg, char **arg) override;
    void coeff(int narg, char **arg) override;
    void init_style() override;
    double init_one(int i, int j) override;

    static LAMMPS_NS::Pair *create(LAMMPS_NS::LAMMPS *lmp);

  private:
    void allocate();
    [[noreturn]] void fail_all(const std::string &message);
    [[noreturn]] void fail_one(const std::string &message);

    tsr_ictp_options options_;
    std::string device_;
    tsr_ictp_evaluator *evaluator_ = nullptr;
    double receptive_field_ = 0.0;
    std::vector<int32_t> type_number_; /* atomic number of each atom type (1-based) */
    std::vector<int32_t> numbers_;     /* of the owned and ghost atoms */
    std::vector<double> forces_, energies_, virials_;
};

} // namespace tessera_lammps

#endif

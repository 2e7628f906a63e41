/* pair_style tessera/ictp (see pair_tessera_ictp.h for the physics of the
 * decomposition). Errors that every rank meets alike (the input script's
 * commands) go through error->all; those of one rank's evaluation through
 * error->one, each with Tessera's message. */
#include "pair_tessera_ictp.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "update.h"

#include <cstdlib>
#include <cstring>

using namespace LAMMPS_NS;

namespace tessera_lammps
{

PairTesseraIctp::PairTesseraIctp(LAMMPS *lmp) : Pair(lmp)
{
    single_enable = 0;
    restartinfo = 0;
    one_coeff = 1;
    manybody_flag = 1;
    /* The per-atom virial splits each edge's term between its two atoms,
     * which is not the centroid form of a many-body term. */
    centroidstressflag = CENTROID_NOTAVAIL;
    tsr_ictp_options_init(&options_);
    options_.threads = 1;
}

PairTesseraIctp::~PairTesseraIctp()
{
    tsr_ictp_evaluator_destroy(evaluator_);
    if (allocated) {
        memory->destroy(setflag);
        memory->destroy(cutsq);
    }
}

Pair *PairTesseraIctp::create(LAMMPS *lmp)
{
    return new PairTesseraIctp(lmp);
}

void PairTesseraIctp::fail_all(const std::string &message)
{
    error->all(FLERR, message);
}

void PairTesseraIctp::fail_one(const std::string &message)
{
    error->one(FLERR, message);
}

void PairTesseraIctp::allocate()
{
    int n = atom->ntypes;
    memory->create(setflag, n + 1, n + 1, "pair:setflag");
    memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
    for (int i = 0; i <= n; i++)
        for (int j = 0; j <= n; j++)
            setflag[i][j] = 0;
    allocated = 1;
}

// A whole decimal number in [lo, hi] into *out.
static bool parse_count(const std::string &value, long lo, long hi, int *out)
{
    char *end = nullptr;
    long n = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || n < lo || n > hi)
        return false;
    *out = static_cast<int>(n);
    return true;
}

void PairTesseraIctp::settings(int narg, char **arg)
{
    const std::string usage =
        "pair_style tessera/ictp [dtype float64|float32] [threads N] [device NAME] "
        "[radial_table N]";
    for (int i = 0; i < narg; i += 2) {
        std::string key = arg[i];
        if (i + 1 >= narg)
            fail_all("pair_style tessera/ictp: " + key + " needs a value; usage: " + usage);
        std::string value = arg[i + 1];
        if (key == "dtype") {
            if (value == "float64")
                options_.dtype = TSR_FLOAT64;
            else if (value == "float32")
                options_.dtype = TSR_FLOAT32;
            else
                fail_all("pair_style tessera/ictp: dtype is '" + value +
                         "', not float64 or float32");
        } else if (key == "threads") {
            if (!parse_count(value, 0, 4096, &options_.threads))
                fail_all("pair_style tessera/ictp: threads is '" + value +
                         "', not a count (0: all cores)");
        } else if (key == "radial_table") {
            if (!parse_count(value, 16, 65536, &options_.radial_table))
                fail_all("pair_style tessera/ictp: radial_table is '" + value +
                         "', not a count of intervals from 16 to 65536");
        } else if (key == "device") {
            device_ = value;
        } else {
            fail_all("pair_style tessera/ictp: unknown keyword '" + key + "'; usage: " + usage);
        }
    }
    options_.device = device_.empty() ? nullptr : device_.c_str();
}

void PairTesseraIctp::coeff(int narg, char **arg)
{
    const std::string usage = "pair_coeff * * MODEL.npz ELEMENT... (one element per atom type)";
    int ntypes = atom->ntypes;
    if (narg < 3 || std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0)
        fail_all("pair_coeff for tessera/ictp: usage: " + usage);
    if (narg != 3 + ntypes)
        fail_all("pair_coeff for tessera/ictp: " + std::to_string(narg - 3) +
                 " element names for " + std::to_string(ntypes) + " atom types; usage: " + usage);
    if (!allocated)
        allocate();

    tsr_ictp_model *model = nullptr;
    if (tsr_ictp_model_load(arg[2], &model) != TSR_OK)
        fail_all(std::string("pair_coeff for tessera/ictp: ") + tsr_last_error());
    int n_species = tsr_ictp_model_species(model, nullptr, 0);
    std::vector<int32_t> species(n_species);
    tsr_ictp_model_species(model, species.data(), n_species);
    std::string known;
    for (int32_t z : species)
        known += std::string(known.empty() ? "" : " ") + tsr_atoms_symbol(z);

    std::vector<int32_t> type_number(ntypes + 1, 0);
    for (int t = 1; t <= ntypes; t++) {
        const char *symbol = arg[2 + t];
        int z = tsr_atoms_number_of(symbol);
        bool in_model = false;
        for (int32_t s : species)
            in_model = in_model || s == z;
        if (!in_model) {
            tsr_ictp_model_destroy(model);
            fail_all(std::string("pair_coeff for tessera/ictp: atom type ") + std::to_string(t) +
                     " is '" + symbol + "', " +
                     (z < 0 ? "not a chemical element" : "which the model does not know") +
                     "; the model's species are " + known);
        }
        type_number[t] = z;
    }

    tsr_ictp_evaluator *evaluator = nullptr;
    tsr_status st = tsr_ictp_evaluator_create(model, &options_, &evaluator);
    receptive_field_ = tsr_ictp_model_receptive_field(model);
    tsr_ictp_model_destroy(model);
    if (st != TSR_OK)
        fail_all(std::string("pair_coeff for tessera/ictp: ") + tsr_last_error());
    tsr_ictp_evaluator_destroy(evaluator_);
    evaluator_ = evaluator;
    type_number_ = type_number;
    for (int i = 1; i <= ntypes; i++)
        for (int j = i; j <= ntypes; j++)
            setflag[i][j] = 1;
}

void PairTesseraIctp::init_style()
{
    if (force->newton_pair == 0)
        fail_all("pair_style tessera/ictp requires newton pair on: the forces on ghost atoms "
                 "must go back to their owners");
    if (std::strcmp(update->unit_style, "metal") != 0)
        fail_all(std::string("pair_style tessera/ictp requires units metal (Angstrom, eV), "
                             "not units ") +
                 update->unit_style);
    if (!evaluator_)
        fail_all("pair_style tessera/ictp: no pair_coeff * * MODEL.npz ... yet");
}

double PairTesseraIctp::init_one(int, int)
{
    return receptive_field_;
}

void PairTesseraIctp::compute(int eflag, int vflag)
{
    ev_init(eflag, vflag);

    int nlocal = atom->nlocal, nall = atom->nlocal + atom->nghost;
    const int *type = atom->type;
    numbers_.resize(nall);
    for (int i = 0; i < nall; i++)
        numbers_[i] = type_number_[type[i]];
    forces_.resize(3 * static_cast<size_t>(nall));
    energies_.resize(nlocal);
    if (vflag_atom)
        virials_.resize(6 * static_cast<size_t>(nall));

    /* atom->x is one contiguous block of [nmax][3] doubles. */
    const double *positions = nall ? &atom->x[0][0] : nullptr;
    tsr_atoms *cluster = nullptr;
    double energy = 0.0;
    tsr_status st = tsr_atoms_create(nall, numbers_.data(), positions, nullptr, nullptr, &cluster);
    if (st == TSR_OK)
        st = tsr_ictp_evaluate_local_virial(evaluator_, cluster, nlocal, &energy, forces_.data(),
                                            eflag_atom ? energies_.data() : nullptr,
                                            vflag_atom ? virials_.data() : nullptr);
    tsr_atoms_destroy(cluster);
    if (st != TSR_OK)
        fail_one(std::string("pair_style tessera/ictp: ") + tsr_last_error());

    double **f = atom->f;
    for (int i = 0; i < nall; i++)
        for (int k = 0; k < 3; k++)
            f[i][k] += forces_[3 * static_cast<size_t>(i) + k];
    if (eflag_global)
        eng_vdwl += energy;
    if (eflag_atom)
        for (int i = 0; i < nlocal; i++)
            eatom[i] += energies_[i];
    /* Ghosts' shares too: compute stress/atom sends them to their owners. */
    if (vflag_atom)
        for (int i = 0; i < nall; i++)
            for (int k = 0; k < 6; k++)
                vatom[i][k] += virials_[6 * static_cast<size_t>(i) + k];
    if (vflag_fdotr)
        virial_fdotr_compute();
}

} // namespace tessera_lammps

/* Molecular dynamics: velocity Verlet, Langevin BAOAB and a Nosé-Hoover
 * chain over a potential that sees the edges of a skin neighbour list
 * (include/tessera/md.h says what each ensemble does and in what units).
 * Everything is integrated in double whatever the potential's dtype. */
#include "core/random.h"
#include "md/md_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NH_MAX_CHAIN 16

struct tsr_md {
    md_potential pot;
    tsr_md_options opt;
    tsr_atoms *atoms; /* the current structure, kept as the next frame */
    int64_t n;
    double *masses; /* [n] amu */
    double *vel;    /* [n][3] Å/fs */
    double *forces; /* [n][3] eV/Å */
    tsr_neighbor_list *list;
    tsr_edges edges;
    tsr_random rng;
    int64_t step, dof;
    double epot;
    double heat; /* Langevin: kinetic energy the thermostat has added */
    /* Nosé-Hoover chain: positions, velocities (1/fs), masses (eV fs^2) */
    double eta[NH_MAX_CHAIN], v_eta[NH_MAX_CHAIN], q[NH_MAX_CHAIN];
    bool failed;
};

void tsr_md_options_init(tsr_md_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->ensemble = TSR_MD_NVE;
    o->timestep = 0.5;
    o->friction = 10.0;
    o->nh_tau = 50.0;
    o->nh_chain = 3;
    o->skin = 1.0;
}

void tsr_md_destroy(tsr_md *md)
{
    if (!md)
        return;
    tsr_atoms_destroy(md->atoms);
    free(md->masses);
    free(md->vel);
    free(md->forces);
    tsr_neighbor_list_destroy(md->list);
    tsr_edges_free(&md->edges);
    free(md);
}

static double kinetic_energy(const tsr_md *md)
{
    double sum = 0;
    for (int64_t i = 0; i < md->n; i++) {
        const double *v = md->vel + 3 * i;
        sum += md->masses[i] * (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    }
    return 0.5 * sum / MD_ACCEL;
}

static double temperature_of(const tsr_md *md, double ekin)
{
    return md->dof > 0 ? 2.0 * ekin / ((double)md->dof * MD_KB) : 0.0;
}

static tsr_status check_options(const tsr_md_options *o)
{
    if (o->ensemble != TSR_MD_NVE && o->ensemble != TSR_MD_LANGEVIN &&
        o->ensemble != TSR_MD_NOSE_HOOVER)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "MD: unknown ensemble %d", (int)o->ensemble);
    if (!(o->timestep > 0) || !isfinite(o->timestep))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "MD: the timestep must be positive and finite (got %g fs)", o->timestep);
    if (!(o->temperature >= 0) || !isfinite(o->temperature))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "MD: the temperature must be >= 0 and finite (got %g K)", o->temperature);
    if (!(o->skin >= 0) || !isfinite(o->skin))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "MD: the skin must be >= 0 and finite (got %g A)", o->skin);
    if (o->ensemble == TSR_MD_NVE)
        return TSR_OK;
    const char *name = o->ensemble == TSR_MD_LANGEVIN ? "Langevin" : "Nose-Hoover";
    if (!(o->temperature > 0))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "MD: %s needs a target temperature > 0 K", name);
    if (o->ensemble == TSR_MD_LANGEVIN && (!(o->friction > 0) || !isfinite(o->friction)))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "MD: the Langevin friction must be positive and finite (got %g 1/ps)",
                         o->friction);
    if (o->ensemble == TSR_MD_NOSE_HOOVER) {
        if (!(o->nh_tau > 0) || !isfinite(o->nh_tau))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "MD: the Nose-Hoover time constant must be positive and finite "
                             "(got %g fs)",
                             o->nh_tau);
        if (o->nh_chain < 1 || o->nh_chain > NH_MAX_CHAIN)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "MD: the Nose-Hoover chain length must be 1 to %d (got %d)",
                             NH_MAX_CHAIN, o->nh_chain);
    }
    return TSR_OK;
}

/* Masses from the array "masses" or the standard weights. */
static tsr_status set_masses(tsr_md *md, const tsr_atoms *start)
{
    tsr_atoms_value v;
    if (tsr_atoms_get_array(start, "masses", &v) == TSR_OK) {
        if (v.type != TSR_ATOMS_REAL || v.cols != 1)
            return tsr_error(TSR_ERR_SHAPE,
                             "MD: the array \"masses\" must hold one real number per atom");
        for (int64_t i = 0; i < md->n; i++) {
            if (!(v.reals[i] > 0) || !isfinite(v.reals[i]))
                return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                 "MD: the mass of atom %lld is %g; masses must be positive",
                                 (long long)i, v.reals[i]);
            md->masses[i] = v.reals[i];
        }
        return tsr_atoms_set_array(md->atoms, &v);
    }
    const int32_t *z = tsr_atoms_numbers(start);
    for (int64_t i = 0; i < md->n; i++)
        md->masses[i] = md_standard_mass(z[i]);
    return TSR_OK;
}

/* Velocities from the array "velocities", else Maxwell-Boltzmann with
 * zero total momentum at exactly the target temperature. */
static tsr_status set_velocities(tsr_md *md, const tsr_atoms *start)
{
    tsr_atoms_value v;
    if (tsr_atoms_get_array(start, "velocities", &v) == TSR_OK) {
        if (v.type != TSR_ATOMS_REAL || v.cols != 3)
            return tsr_error(TSR_ERR_SHAPE,
                             "MD: the array \"velocities\" must hold three real numbers per atom");
        for (int64_t k = 0; k < 3 * md->n; k++)
            if (!isfinite(v.reals[k]))
                return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                 "MD: the velocity of atom %lld is not finite", (long long)(k / 3));
        memcpy(md->vel, v.reals, 3 * (size_t)md->n * sizeof *md->vel);
        return TSR_OK;
    }
    double kt = MD_KB * md->opt.temperature;
    if (kt == 0)
        return TSR_OK; /* calloc'ed: at rest */
    double momentum[3] = {0, 0, 0}, total_mass = 0;
    for (int64_t i = 0; i < md->n; i++) {
        double sigma = sqrt(kt * MD_ACCEL / md->masses[i]);
        for (int c = 0; c < 3; c++) {
            md->vel[3 * i + c] = sigma * tsr_random_normal(&md->rng);
            momentum[c] += md->masses[i] * md->vel[3 * i + c];
        }
        total_mass += md->masses[i];
    }
    for (int64_t i = 0; i < md->n; i++)
        for (int c = 0; c < 3; c++)
            md->vel[3 * i + c] -= momentum[c] / total_mass;
    double t = temperature_of(md, kinetic_energy(md));
    double scale = t > 0 ? sqrt(md->opt.temperature / t) : 0.0;
    for (int64_t k = 0; k < 3 * md->n; k++)
        md->vel[k] *= scale;
    return TSR_OK;
}

/* Forces at the current positions, wrapping the atoms first when the
 * neighbour list is about to be rebuilt anyway. */
static tsr_status compute_forces(tsr_md *md)
{
    if (tsr_neighbor_list_stale(md->list, md->atoms))
        TSR_CHECK(tsr_atoms_wrap(md->atoms));
    TSR_CHECK(tsr_neighbor_list_update(md->list, md->atoms, &md->edges, NULL));
    TSR_CHECK(md->pot.compute(md->pot.ctx, md->atoms, &md->edges, &md->epot, md->forces));
    if (!isfinite(md->epot))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "the potential energy is %g (the timestep may be too large)", md->epot);
    for (int64_t k = 0; k < 3 * md->n; k++)
        if (!isfinite(md->forces[k]))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "the force on atom %lld is not finite (the timestep may be too large)",
                             (long long)(k / 3));
    return TSR_OK;
}

static void kick(tsr_md *md, double dt)
{
    for (int64_t i = 0; i < md->n; i++) {
        double a = dt * MD_ACCEL / md->masses[i];
        for (int c = 0; c < 3; c++)
            md->vel[3 * i + c] += a * md->forces[3 * i + c];
    }
}

static void drift(tsr_md *md, double dt)
{
    double *x = tsr_atoms_positions_mutable(md->atoms);
    for (int64_t k = 0; k < 3 * md->n; k++)
        x[k] += dt * md->vel[k];
}

/* BAOAB's O: the exact Ornstein-Uhlenbeck update over dt. */
static void langevin_noise(tsr_md *md, double dt)
{
    double c1 = exp(-1e-3 * md->opt.friction * dt), c2 = sqrt(1.0 - c1 * c1);
    double kt = MD_KB * md->opt.temperature, before = kinetic_energy(md);
    for (int64_t i = 0; i < md->n; i++) {
        double sigma = sqrt(kt * MD_ACCEL / md->masses[i]);
        for (int c = 0; c < 3; c++)
            md->vel[3 * i + c] = c1 * md->vel[3 * i + c] + c2 * sigma * tsr_random_normal(&md->rng);
    }
    md->heat += kinetic_energy(md) - before;
}

/* The force on chain element k (1/fs^2), given twice the kinetic energy. */
static double chain_force(const tsr_md *md, int k, double two_ekin, double kt)
{
    if (k == 0)
        return (two_ekin - (double)md->dof * kt) / md->q[0];
    return (md->q[k - 1] * md->v_eta[k - 1] * md->v_eta[k - 1] - kt) / md->q[k];
}

/* exp(i L_NHC dt/2) (Martyna, Tuckerman, Tobias and Klein 1996): the
 * chain from its top down, the particle velocities scaled, the chain back
 * up; three Suzuki-Yoshida substeps. */
static void chain_half_step(tsr_md *md)
{
    const double w1 = 1.0 / (2.0 - cbrt(2.0));
    const double weights[3] = {w1, 1.0 - 2.0 * w1, w1};
    int m = md->opt.nh_chain;
    double kt = MD_KB * md->opt.temperature, two_ekin = 2.0 * kinetic_energy(md), scale = 1.0;
    for (int j = 0; j < 3; j++) {
        double d = 0.5 * md->opt.timestep * weights[j];
        for (int k = m - 1; k >= 0; k--) {
            double s = k < m - 1 ? exp(-0.25 * d * md->v_eta[k + 1]) : 1.0;
            md->v_eta[k] = (md->v_eta[k] * s + 0.5 * d * chain_force(md, k, two_ekin, kt)) * s;
        }
        double f = exp(-d * md->v_eta[0]);
        scale *= f;
        two_ekin *= f * f;
        for (int k = 0; k < m; k++)
            md->eta[k] += d * md->v_eta[k];
        for (int k = 0; k < m; k++) {
            double s = k < m - 1 ? exp(-0.25 * d * md->v_eta[k + 1]) : 1.0;
            md->v_eta[k] = (md->v_eta[k] * s + 0.5 * d * chain_force(md, k, two_ekin, kt)) * s;
        }
    }
    for (int64_t k = 0; k < 3 * md->n; k++)
        md->vel[k] *= scale;
}

static tsr_status one_step(tsr_md *md)
{
    double dt = md->opt.timestep;
    switch (md->opt.ensemble) {
    case TSR_MD_LANGEVIN:
        kick(md, 0.5 * dt);
        drift(md, 0.5 * dt);
        langevin_noise(md, dt);
        drift(md, 0.5 * dt);
        TSR_CHECK(compute_forces(md));
        kick(md, 0.5 * dt);
        break;
    case TSR_MD_NOSE_HOOVER:
        chain_half_step(md);
        kick(md, 0.5 * dt);
        drift(md, dt);
        TSR_CHECK(compute_forces(md));
        kick(md, 0.5 * dt);
        chain_half_step(md);
        break;
    default:
        kick(md, 0.5 * dt);
        drift(md, dt);
        TSR_CHECK(compute_forces(md));
        kick(md, 0.5 * dt);
        break;
    }
    return TSR_OK;
}

static tsr_status set_real(tsr_atoms *atoms, const char *name, double value)
{
    tsr_atoms_value v = {
        .name = name, .type = TSR_ATOMS_REAL, .rows = 1, .cols = 1, .reals = &value};
    return tsr_atoms_set_info(atoms, &v);
}

/* The results of the current step into the structure the frame shows. */
static tsr_status sync_frame(tsr_md *md)
{
    tsr_atoms_value v = {.type = TSR_ATOMS_REAL, .rows = md->n, .cols = 3};
    v.name = "velocities";
    v.reals = md->vel;
    TSR_CHECK(tsr_atoms_set_array(md->atoms, &v));
    v.name = "forces";
    v.reals = md->forces;
    TSR_CHECK(tsr_atoms_set_array(md->atoms, &v));
    double ekin = kinetic_energy(md);
    TSR_CHECK(tsr_atoms_set_energy(md->atoms, md->epot));
    TSR_CHECK(set_real(md->atoms, "kinetic_energy", ekin));
    TSR_CHECK(set_real(md->atoms, "temperature", temperature_of(md, ekin)));
    TSR_CHECK(set_real(md->atoms, "time", (double)md->step * md->opt.timestep));
    int64_t step = md->step;
    tsr_atoms_value s = {
        .name = "step", .type = TSR_ATOMS_INT, .rows = 1, .cols = 1, .ints = &step};
    return tsr_atoms_set_info(md->atoms, &s);
}

tsr_status md_create(const md_potential *pot, const tsr_atoms *start, const tsr_md_options *options,
                     tsr_md **md_out)
{
    if (!pot || !pot->compute || !start || !md_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_md_create: NULL argument");
    *md_out = NULL;
    tsr_md_options opt;
    tsr_md_options_init(&opt);
    if (options)
        opt = *options;
    TSR_CHECK(check_options(&opt));
    int64_t n = tsr_atoms_count(start);
    if (n == 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "MD: the structure has no atoms");
    bool momentum_conserved = opt.ensemble != TSR_MD_LANGEVIN;
    int64_t dof = momentum_conserved ? 3 * n - 3 : 3 * n;
    if (opt.ensemble == TSR_MD_NOSE_HOOVER && dof == 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "MD: Nose-Hoover needs at least two atoms (one atom at zero momentum "
                         "has no degrees of freedom)");
    tsr_md *md = tsr_calloc(1, sizeof *md);
    if (!md)
        return TSR_ERR_OUT_OF_MEMORY;
    md->pot = *pot;
    md->opt = opt;
    md->n = n;
    md->dof = dof;
    tsr_random_seed(&md->rng, opt.seed);
    tsr_edges_init(&md->edges);
    double cell[9];
    int pbc[3];
    int has_cell = tsr_atoms_cell(start, cell, pbc);
    md->masses = tsr_malloc((size_t)n * sizeof *md->masses);
    md->vel = tsr_calloc(3 * (size_t)n, sizeof *md->vel);
    md->forces = tsr_calloc(3 * (size_t)n, sizeof *md->forces);
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!md->masses || !md->vel || !md->forces)
        goto fail;
    if ((st = tsr_atoms_create(n, tsr_atoms_numbers(start), tsr_atoms_positions(start),
                               has_cell ? cell : NULL, has_cell ? pbc : NULL, &md->atoms)) !=
            TSR_OK ||
        (st = set_masses(md, start)) != TSR_OK || (st = set_velocities(md, start)) != TSR_OK ||
        (st = tsr_neighbor_list_create(pot->cutoff, opt.skin, &md->list)) != TSR_OK)
        goto fail;
    double kt = MD_KB * opt.temperature, tau2 = opt.nh_tau * opt.nh_tau;
    for (int k = 0; opt.ensemble == TSR_MD_NOSE_HOOVER && k < opt.nh_chain; k++)
        md->q[k] = (k == 0 ? (double)dof : 1.0) * kt * tau2;
    if ((st = compute_forces(md)) != TSR_OK) {
        tsr_error_prefix("MD, the start structure: ");
        goto fail;
    }
    if ((st = sync_frame(md)) != TSR_OK)
        goto fail;
    *md_out = md;
    return TSR_OK;
fail:
    tsr_md_destroy(md);
    return st;
}

static tsr_status ictp_compute(void *ctx, const tsr_atoms *atoms, const tsr_edges *edges,
                               double *energy_out, double *forces_out)
{
    return tsr_ictp_evaluate_edges(ctx, atoms, edges, energy_out, forces_out, NULL, NULL);
}

tsr_status tsr_md_create(tsr_ictp_evaluator *evaluator, const tsr_atoms *start,
                         const tsr_md_options *options, tsr_md **md_out)
{
    if (!evaluator)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_md_create: NULL argument");
    md_potential pot = {tsr_ictp_evaluator_cutoff(evaluator), ictp_compute, evaluator};
    return md_create(&pot, start, options, md_out);
}

tsr_status tsr_md_run(tsr_md *md, int64_t n_steps)
{
    if (!md || n_steps < 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_md_run: %s",
                         md ? "the step count is negative" : "md is NULL");
    if (md->failed)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_md_run: the run failed at step %lld and cannot go on",
                         (long long)md->step + 1);
    for (int64_t s = 0; s < n_steps; s++) {
        tsr_status st = one_step(md);
        if (st != TSR_OK) {
            md->failed = true;
            tsr_error_prefix("MD step %lld: ", (long long)md->step + 1);
            return st;
        }
        md->step++;
    }
    return sync_frame(md);
}

tsr_status tsr_md_get_state(const tsr_md *md, tsr_md_state *out)
{
    if (!md || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_md_get_state: NULL argument");
    memset(out, 0, sizeof *out);
    double ekin = kinetic_energy(md);
    out->step = md->step;
    out->time = (double)md->step * md->opt.timestep;
    out->potential_energy = md->epot;
    out->kinetic_energy = ekin;
    out->total_energy = md->epot + ekin;
    out->temperature = temperature_of(md, ekin);
    out->conserved = out->total_energy;
    if (md->opt.ensemble == TSR_MD_LANGEVIN)
        out->conserved -= md->heat;
    if (md->opt.ensemble == TSR_MD_NOSE_HOOVER) {
        double kt = MD_KB * md->opt.temperature;
        for (int k = 0; k < md->opt.nh_chain; k++)
            out->conserved += 0.5 * md->q[k] * md->v_eta[k] * md->v_eta[k] +
                              (k == 0 ? (double)md->dof : 1.0) * kt * md->eta[k];
    }
    out->degrees_of_freedom = md->dof;
    out->neighbor_builds = tsr_neighbor_list_builds(md->list);
    return TSR_OK;
}

const tsr_atoms *tsr_md_atoms(const tsr_md *md)
{
    return md ? md->atoms : NULL;
}

/* The MD engine (src/md) on a Lennard-Jones solid, cheap enough for the
 * long runs thermostats need: velocity Verlet conserves energy and runs
 * back to its start when the velocities are reversed; Maxwell-Boltzmann
 * starts have zero momentum and exactly the target temperature; Langevin
 * and the Nosé-Hoover chain hold their target on average and the chain
 * conserves its extended energy; a skin list gives the run of a list
 * rebuilt at every step; failures and bad arguments give clear errors.
 * tests/python/test_md.py runs the ICTP potential against ASE. */
#include "harness.h"
#include "md/md_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Argon: Lennard-Jones, force-shifted so that energy and force go to zero
 * at the cutoff. */
#define EPS 0.0104
#define SIGMA 3.4
#define RC 5.5

static double lj(double r, double *dphi)
{
    double s2 = SIGMA * SIGMA / (r * r), s6 = s2 * s2 * s2;
    *dphi = 4 * EPS * (-12 * s6 * s6 + 6 * s6) / r;
    return 4 * EPS * (s6 * s6 - s6);
}

typedef struct {
    int64_t calls, fail_at;
} lj_ctx;

/* Every pair appears twice in the edges (i, j) and (j, i). */
static tsr_status lj_compute(void *ctx, const tsr_atoms *atoms, const tsr_edges *edges,
                             double *energy_out, double *forces_out)
{
    lj_ctx *c = ctx;
    if (c && ++c->calls == c->fail_at)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "test potential: failing as asked");
    int64_t n = tsr_atoms_count(atoms);
    double drc, phi_rc = lj(RC, &drc), energy = 0;
    memset(forces_out, 0, 3 * (size_t)n * sizeof *forces_out);
    for (int64_t e = 0; e < edges->count; e++) {
        const double *v = edges->vectors + 3 * e;
        double r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), d;
        double phi = lj(r, &d) - phi_rc - (r - RC) * drc;
        d -= drc;
        energy += 0.5 * phi;
        int64_t i = edges->receivers[e], j = edges->senders[e];
        for (int k = 0; k < 3; k++) {
            double f = 0.5 * d * v[k] / r;
            forces_out[3 * i + k] -= f;
            forces_out[3 * j + k] += f;
        }
    }
    *energy_out = energy;
    return TSR_OK;
}

/* An fcc argon cell of 4 m^3 atoms, its lattice rattled. */
static tsr_atoms *argon(int m, double rattle, uint64_t seed)
{
    const double a = 5.26, basis[4][3] = {{0, 0, 0}, {0.5, 0.5, 0}, {0.5, 0, 0.5}, {0, 0.5, 0.5}};
    int64_t n = 4 * (int64_t)m * m * m, k = 0;
    double *pos = malloc(3 * (size_t)n * sizeof *pos), cell[9] = {0};
    int32_t *z = malloc((size_t)n * sizeof *z);
    uint64_t state = seed;
    for (int x = 0; x < m; x++)
        for (int y = 0; y < m; y++)
            for (int w = 0; w < m; w++)
                for (int b = 0; b < 4; b++, k++) {
                    int cell_index[3] = {x, y, w};
                    z[k] = 18;
                    for (int c = 0; c < 3; c++) {
                        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
                        double u = (double)(state >> 11) * 0x1.0p-53 - 0.5;
                        pos[3 * k + c] = a * (cell_index[c] + basis[b][c]) + rattle * u;
                    }
                }
    for (int c = 0; c < 3; c++)
        cell[4 * c] = a * m;
    tsr_atoms *atoms = NULL;
    CHECK_OK(tsr_atoms_create(n, z, pos, cell, NULL, &atoms));
    free(pos);
    free(z);
    return atoms;
}

static const md_potential LJ = {RC, lj_compute, NULL};

static tsr_md *start(const tsr_atoms *atoms, const tsr_md_options *o)
{
    tsr_md *md = NULL;
    CHECK_OK(md_create(&LJ, atoms, o, &md));
    return md;
}

static const double *array(const tsr_md *md, const char *name)
{
    tsr_atoms_value v;
    CHECK_OK(tsr_atoms_get_array(tsr_md_atoms(md), name, &v));
    return v.reals;
}

static void test_maxwell_boltzmann(void)
{
    tsr_atoms *atoms = argon(2, 0.1, 1);
    tsr_md_options o;
    tsr_md_options_init(&o);
    o.temperature = 123.0;
    o.seed = 7;
    tsr_md *a = start(atoms, &o), *b = start(atoms, &o);
    o.seed = 8;
    tsr_md *c = start(atoms, &o);
    tsr_md_state s;
    CHECK_OK(tsr_md_get_state(a, &s));
    CHECK(fabs(s.temperature - 123.0) < 1e-10);
    CHECK(s.degrees_of_freedom == 3 * 32 - 3);
    CHECK(s.step == 0 && s.time == 0 && s.neighbor_builds == 1);
    const double *v = array(a, "velocities");
    double p[3] = {0, 0, 0};
    for (int i = 0; i < 32; i++)
        for (int k = 0; k < 3; k++)
            p[k] += 39.948 * v[3 * i + k];
    CHECK(fabs(p[0]) < 1e-12 && fabs(p[1]) < 1e-12 && fabs(p[2]) < 1e-12);
    CHECK(memcmp(v, array(b, "velocities"), 96 * sizeof *v) == 0);
    CHECK(memcmp(v, array(c, "velocities"), 96 * sizeof *v) != 0);
    /* the frame carries the kinetic energy 1/2 m v^2 in eV */
    tsr_atoms_value ke;
    CHECK_OK(tsr_atoms_get_info(tsr_md_atoms(a), "kinetic_energy", &ke));
    double sum = 0;
    for (int k = 0; k < 96; k++)
        sum += 0.5 * 39.948 * v[k] * v[k] / MD_ACCEL;
    CHECK(fabs(ke.reals[0] - sum) < 1e-12 * sum);
    CHECK(fabs(sum - 0.5 * 93 * MD_KB * 123.0) < 1e-12 * sum);
    tsr_md_destroy(a);
    tsr_md_destroy(b);
    tsr_md_destroy(c);
    tsr_atoms_destroy(atoms);
}

/* Velocity Verlet: energy conserved to O(dt^2), and time-reversible. */
static void test_velocity_verlet(void)
{
    tsr_atoms *atoms = argon(2, 0.2, 2);
    tsr_md_options o;
    tsr_md_options_init(&o);
    o.temperature = 60.0;
    o.timestep = 4.0;
    tsr_md *md = start(atoms, &o);
    tsr_md_state s0, s;
    CHECK_OK(tsr_md_get_state(md, &s0));
    double worst = 0;
    for (int k = 0; k < 500; k++) {
        CHECK_OK(tsr_md_run(md, 2));
        CHECK_OK(tsr_md_get_state(md, &s));
        worst = fmax(worst, fabs(s.total_energy - s0.total_energy));
    }
    CHECK(s.step == 1000 && fabs(s.time - 4000.0) < 1e-9);
    /* Measured: 1.5e-4 eV over 4 ps with dt = 4 fs, 32 atoms. */
    CHECK(worst < 5e-4);
    CHECK(fabs(s.kinetic_energy - s0.kinetic_energy) > 1e-3);
    CHECK(s.neighbor_builds > 1 && s.neighbor_builds < 200);
    tsr_md_destroy(md);

    /* Forward 300 steps, reverse the velocities, 300 more: back at the start. */
    o.timestep = 2.0;
    md = start(atoms, &o);
    double x0[96], v0[96];
    memcpy(x0, tsr_atoms_positions(tsr_md_atoms(md)), sizeof x0);
    memcpy(v0, array(md, "velocities"), sizeof v0);
    CHECK_OK(tsr_md_run(md, 300));
    tsr_atoms *back = NULL;
    CHECK_OK(tsr_atoms_clone(tsr_md_atoms(md), &back));
    double reversed[96];
    const double *v = array(md, "velocities");
    for (int k = 0; k < 96; k++)
        reversed[k] = -v[k];
    tsr_atoms_value rv = {
        .name = "velocities", .type = TSR_ATOMS_REAL, .rows = 32, .cols = 3, .reals = reversed};
    CHECK_OK(tsr_atoms_set_array(back, &rv));
    tsr_md *rev = start(back, &o);
    CHECK_OK(tsr_md_run(rev, 300));
    const double *x = tsr_atoms_positions(tsr_md_atoms(rev)), *vb = array(rev, "velocities");
    double dx = 0, dv = 0, L = 2 * 5.26;
    for (int k = 0; k < 96; k++) {
        double d = x[k] - x0[k];
        d -= L * round(d / L); /* wrapped in between */
        dx = fmax(dx, fabs(d));
        dv = fmax(dv, fabs(vb[k] + v0[k]));
    }
    CHECK(dx < 1e-9 && dv < 1e-11);
    tsr_md_destroy(md);
    tsr_md_destroy(rev);
    tsr_atoms_destroy(back);
    tsr_atoms_destroy(atoms);
}

/* A skin list rebuilt only now and then gives the run of a list rebuilt
 * at every step (skin 0), up to the rounding of wrapping at other times. */
static void test_skin_list(void)
{
    tsr_atoms *atoms = argon(2, 0.2, 3);
    tsr_md_options o;
    tsr_md_options_init(&o);
    o.temperature = 80.0;
    o.timestep = 4.0;
    o.skin = 0.6;
    tsr_md *lazy = start(atoms, &o);
    o.skin = 0.0;
    tsr_md *eager = start(atoms, &o);
    CHECK_OK(tsr_md_run(lazy, 400));
    CHECK_OK(tsr_md_run(eager, 400));
    tsr_md_state sl, se;
    CHECK_OK(tsr_md_get_state(lazy, &sl));
    CHECK_OK(tsr_md_get_state(eager, &se));
    CHECK(se.neighbor_builds == 401);
    CHECK(sl.neighbor_builds > 2 && sl.neighbor_builds < 100);
    const double *fl = array(lazy, "forces"), *fe = array(eager, "forces");
    const double *xl = tsr_atoms_positions(tsr_md_atoms(lazy));
    const double *xe = tsr_atoms_positions(tsr_md_atoms(eager));
    double df = 0, dx = 0, L = 2 * 5.26;
    for (int k = 0; k < 96; k++) {
        double d = xl[k] - xe[k];
        dx = fmax(dx, fabs(d - L * round(d / L)));
        df = fmax(df, fabs(fl[k] - fe[k]));
    }
    CHECK(dx < 1e-9 && df < 1e-9);
    CHECK(fabs(sl.potential_energy - se.potential_energy) < 1e-9);
    tsr_md_destroy(lazy);
    tsr_md_destroy(eager);
    tsr_atoms_destroy(atoms);
}

/* Mean temperature over the second half of a run, and the conserved
 * quantity's largest excursion. */
static void thermostat_run(tsr_md *md, int64_t steps, double *mean_t, double *excursion)
{
    tsr_md_state s;
    CHECK_OK(tsr_md_get_state(md, &s));
    double h0 = s.conserved, sum = 0, worst = 0;
    for (int64_t k = 0; k < steps; k++) {
        CHECK_OK(tsr_md_run(md, 1));
        CHECK_OK(tsr_md_get_state(md, &s));
        if (k >= steps / 2)
            sum += s.temperature;
        worst = fmax(worst, fabs(s.conserved - h0));
    }
    *mean_t = sum / (double)(steps - steps / 2);
    *excursion = worst;
}

static void test_langevin(void)
{
    tsr_atoms *atoms = argon(3, 0.1, 4);
    tsr_md_options o;
    tsr_md_options_init(&o);
    o.ensemble = TSR_MD_LANGEVIN;
    o.temperature = 40.0; /* a solid: its start at 0 K heats up to the target */
    o.friction = 5.0;
    o.timestep = 5.0;
    o.seed = 3;
    tsr_atoms *cold = NULL;
    CHECK_OK(tsr_atoms_clone(atoms, &cold));
    double zero[3 * 108] = {0};
    tsr_atoms_value v = {
        .name = "velocities", .type = TSR_ATOMS_REAL, .rows = 108, .cols = 3, .reals = zero};
    CHECK_OK(tsr_atoms_set_array(cold, &v));
    tsr_md *md = start(cold, &o);
    tsr_md_state s;
    CHECK_OK(tsr_md_get_state(md, &s));
    CHECK(s.temperature == 0 && s.degrees_of_freedom == 3 * 108);
    double mean_t, excursion;
    thermostat_run(md, 6000, &mean_t, &excursion);
    printf("Langevin: mean T over the second half %.2f K (target 40); effective energy moved "
           "%.2g eV\n",
           mean_t, excursion);
    CHECK(fabs(mean_t - 40.0) < 0.03 * 40.0);
    /* BAOAB's effective energy (Etot minus the heat put in) stays put. */
    CHECK(excursion < 0.01);
    tsr_md_destroy(md);
    tsr_atoms_destroy(cold);
    tsr_atoms_destroy(atoms);
}

static void test_nose_hoover(void)
{
    tsr_atoms *atoms = argon(3, 0.1, 5);
    tsr_md_options o;
    tsr_md_options_init(&o);
    o.ensemble = TSR_MD_NOSE_HOOVER;
    o.temperature = 40.0;
    o.timestep = 5.0;
    o.nh_tau = 200.0;
    o.seed = 4;
    tsr_md *md = start(atoms, &o);
    double mean_t, excursion;
    thermostat_run(md, 6000, &mean_t, &excursion);
    tsr_md_state s;
    CHECK_OK(tsr_md_get_state(md, &s));
    printf("Nose-Hoover: mean T over the second half %.2f K (target 40); conserved energy "
           "moved %.2g eV, total energy %.2g eV\n",
           mean_t, excursion, s.total_energy);
    CHECK(fabs(mean_t - 40.0) < 0.05 * 40.0);
    CHECK(excursion < 2e-3);
    tsr_md_destroy(md);
    /* A chain of one is plain Nosé-Hoover, conserving its energy too. */
    o.nh_chain = 1;
    md = start(atoms, &o);
    thermostat_run(md, 2000, &mean_t, &excursion);
    CHECK(excursion < 2e-3);
    tsr_md_destroy(md);
    tsr_atoms_destroy(atoms);
}

static void test_masses_and_errors(void)
{
    CHECK(md_standard_mass(1) == 1.008 && md_standard_mass(29) == 63.546 &&
          md_standard_mass(18) == 39.948 && md_standard_mass(119) == 0);
    tsr_atoms *atoms = argon(1, 0.1, 6);
    tsr_md_options o;
    tsr_md *md = NULL;
    tsr_md_options_init(&o);
    o.timestep = 0;
    CHECK_FAILS(md_create(&LJ, atoms, &o, &md), TSR_ERR_INVALID_ARGUMENT, "timestep");
    tsr_md_options_init(&o);
    o.ensemble = TSR_MD_LANGEVIN;
    CHECK_FAILS(md_create(&LJ, atoms, &o, &md), TSR_ERR_INVALID_ARGUMENT,
                "Langevin needs a target temperature");
    o.temperature = 10;
    o.friction = -1;
    CHECK_FAILS(md_create(&LJ, atoms, &o, &md), TSR_ERR_INVALID_ARGUMENT, "friction");
    tsr_md_options_init(&o);
    o.ensemble = TSR_MD_NOSE_HOOVER;
    o.temperature = 10;
    o.nh_chain = 0;
    CHECK_FAILS(md_create(&LJ, atoms, &o, &md), TSR_ERR_INVALID_ARGUMENT, "chain length");
    o.nh_chain = 3;
    tsr_atoms *one = NULL;
    const double p[3] = {0, 0, 0};
    const int32_t z = 18;
    CHECK_OK(tsr_atoms_create(1, &z, p, NULL, NULL, &one));
    CHECK_FAILS(md_create(&LJ, one, &o, &md), TSR_ERR_INVALID_ARGUMENT, "at least two atoms");
    tsr_atoms_destroy(one);
    tsr_md_options_init(&o);
    o.skin = -1;
    CHECK_FAILS(md_create(&LJ, atoms, &o, &md), TSR_ERR_INVALID_ARGUMENT, "skin");
    CHECK(md == NULL);

    /* masses from the structure, and bad ones */
    tsr_md_options_init(&o);
    double masses[4] = {1, 2, 3, 0};
    tsr_atoms_value mv = {
        .name = "masses", .type = TSR_ATOMS_REAL, .rows = 4, .cols = 1, .reals = masses};
    tsr_atoms *heavy = NULL;
    CHECK_OK(tsr_atoms_clone(atoms, &heavy));
    CHECK_OK(tsr_atoms_set_array(heavy, &mv));
    CHECK_FAILS(md_create(&LJ, heavy, &o, &md), TSR_ERR_INVALID_ARGUMENT, "mass of atom 3");
    masses[3] = 4;
    CHECK_OK(tsr_atoms_set_array(heavy, &mv));
    o.temperature = 50;
    CHECK_OK(md_create(&LJ, heavy, &o, &md));
    const double *v = array(md, "velocities");
    double px = 0;
    for (int i = 0; i < 4; i++)
        px += masses[i] * v[3 * i];
    CHECK(fabs(px) < 1e-12 && array(md, "masses")[3] == 4);
    tsr_md_destroy(md);
    double bad_v[4] = {0, 0, 0, 0};
    tsr_atoms_value vv = {
        .name = "velocities", .type = TSR_ATOMS_REAL, .rows = 4, .cols = 1, .reals = bad_v};
    CHECK_OK(tsr_atoms_set_array(heavy, &vv));
    md = NULL;
    CHECK_FAILS(md_create(&LJ, heavy, &o, &md), TSR_ERR_SHAPE, "velocities");
    tsr_atoms_destroy(heavy);

    /* a potential that fails at its third call: step 2, and no going on */
    lj_ctx ctx = {0, 3};
    md_potential failing = {RC, lj_compute, &ctx};
    CHECK_OK(md_create(&failing, atoms, &o, &md));
    CHECK_FAILS(tsr_md_run(md, 5), TSR_ERR_INVALID_ARGUMENT, "MD step 2: test potential");
    CHECK_FAILS(tsr_md_run(md, 1), TSR_ERR_INVALID_ARGUMENT, "cannot go on");
    tsr_md_destroy(md);
    tsr_atoms *empty = NULL;
    CHECK_OK(tsr_atoms_create(0, NULL, NULL, NULL, NULL, &empty));
    CHECK_FAILS(md_create(&LJ, empty, &o, &md), TSR_ERR_INVALID_ARGUMENT, "no atoms");
    tsr_atoms_destroy(empty);
    CHECK_FAILS(tsr_md_create(NULL, atoms, &o, &md), TSR_ERR_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(tsr_md_run(NULL, 1), TSR_ERR_INVALID_ARGUMENT, "NULL");
    tsr_atoms_destroy(atoms);
}

int main(void)
{
    test_maxwell_boltzmann();
    test_velocity_verlet();
    test_skin_list();
    test_langevin();
    test_nose_hoover();
    test_masses_and_errors();
    return tsr_test_summary("test_md");
}

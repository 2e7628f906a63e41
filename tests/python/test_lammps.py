"""pair_style tessera/ictp in Debian's LAMMPS (tessera-lammps, lammps/): the same structures
give the same energy, forces and pressure through LAMMPS on 1 and 2 MPI ranks as
`tessera ictp eval`, to 1e-8 in float64 (a periodic cell, and a molecule in a non-periodic
box), and the same per-atom virials (compute stress/atom) as the C API, adding up to the
pressure tensor; an NVE run conserves energy; a bad pair_coeff or pair_style gets a clear
error."""

import ctypes as C
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import ictp_reference as ref
import tsr
from test_ictp_model import tessera_bin

# LAMMPS's conversion of eV/A^3 to bar in `units metal` (force->nktv2p).
NKTV2P_METAL = 1.6021765e6
MASSES = {1: 1.008, 6: 12.011, 8: 15.999}
ELEMENTS = ["H", "C", "O"]


def lammps_bin():
    build = os.environ.get("TESSERA_BUILD_DIR", os.path.join(tsr.ROOT, "build"))
    return os.path.join(build, "bin", "tessera-lammps")


if not os.path.exists(lammps_bin()):
    pytest.skip("tessera-lammps was not built: Debian's LAMMPS is not installed "
                "(scripts/install-deps.sh lammps, then rebuild)", allow_module_level=True)
if shutil.which("mpirun") is None:
    pytest.skip("mpirun not found (mpi-default-bin)", allow_module_level=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # Two interactions: the receptive field (6.4 A) is twice the cutoff, so ghost atoms
    # must reach past the first shell for the energies to be right.
    cfg = ref.default_config(n_hidden_feats=6, n_product_feats=5, radial_MLP=[12, 10],
                             readout_MLP=[7], r_cutoff=3.2, n_interactions=2, correlation=2,
                             l_max_hidden_feats=1, l_max_edge_attrs=2)
    return ref.random_model(str(tmp_path_factory.mktemp("lammps") / "m"), cfg, seed=3)


def spread_atoms(rng, n, lengths, min_distance, periodic):
    """n random positions in an orthogonal box, no two closer than min_distance (across
    the periodic faces too when periodic)."""
    pos = []
    while len(pos) < n:
        p = rng.random(3) * lengths
        ok = True
        for q in pos:
            d = p - q
            if periodic:
                d -= lengths * np.round(d / lengths)
            ok = ok and np.linalg.norm(d) >= min_distance
        if ok:
            pos.append(p)
    return np.array(pos)


def periodic_cell(seed=0, n=40, lengths=(9.0, 7.5, 7.0)):
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths)
    return rng.choice([1, 6, 8], n), spread_atoms(rng, n, lengths, 1.0, True), lengths


def molecule(seed=1, n=14):
    rng = np.random.default_rng(seed)
    return rng.choice([1, 6, 8], n), spread_atoms(rng, n, np.array([6.0, 5.0, 5.0]), 1.0,
                                                  False)


def write_data(path, numbers, pos, box):
    """A LAMMPS data file (atom_style atomic); box is [lo, hi] per axis."""
    lines = ["tessera test structure", "", f"{len(numbers)} atoms", f"{len(ELEMENTS)} atom types",
             ""]
    for axis, (lo, hi) in zip("xyz", box):
        lines.append(f"{lo!r} {hi!r} {axis}lo {axis}hi")
    lines += ["", "Masses", ""]
    lines += [f"{t + 1} {MASSES[z]}" for t, z in enumerate([1, 6, 8])]
    lines += ["", "Atoms # atomic", ""]
    type_of = {1: 1, 6: 2, 8: 3}
    for i, (z, p) in enumerate(zip(numbers, pos)):
        lines.append(f"{i + 1} {type_of[int(z)]} {p[0]!r} {p[1]!r} {p[2]!r}")
    path.write_text("\n".join(lines) + "\n")


def run_lammps(tmp_path, script, ranks=1, name="in.lmp", timeout=120):
    (tmp_path / name).write_text(script)
    cmd = [lammps_bin(), "-in", name, "-log", "none", "-echo", "none"]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(ranks)] + cmd
        if os.geteuid() == 0:
            cmd.insert(1, "--allow-run-as-root")
    # The sanitizer pass preloads ASan for the ctypes-loaded library; the
    # release tessera-lammps has no use for it, and under it an MPI exit
    # after a LAMMPS error can hang.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**env, "OMP_NUM_THREADS": "1"})


def single_point(tmp_path, model, boundary, ranks, extra="", virials=False):
    """Energy, pressure tensor, forces, per-atom energies and (virials) the six columns of
    compute stress/atom's pair term, in id order."""
    columns = "id fx fy fz c_atom_pe"
    compute_virials = ""
    if virials:
        columns += "".join(f" c_atom_virial[{k}]" for k in range(1, 7))
        compute_virials = "compute atom_virial all stress/atom NULL pair\n"
    script = f"""units metal
atom_style atomic
atom_modify map array
boundary {boundary}
read_data data.lmp
pair_style tessera/ictp {extra}
pair_coeff * * {model} {' '.join(ELEMENTS)}
thermo_style custom step pe pxx pyy pzz pxy pxz pyz
compute atom_pe all pe/atom
{compute_virials}dump forces all custom 1 forces.dump {columns}
dump_modify forces sort id format float %.17g
run 0
print "RESULT $(pe:%.17g) $(pxx:%.17g) $(pyy:%.17g) $(pzz:%.17g) $(pxy:%.17g) $(pxz:%.17g) $(pyz:%.17g)"
"""
    r = run_lammps(tmp_path, script, ranks)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    values = [float(v) for v in r.stdout.split("RESULT")[-1].split()[:7]]
    dump = (tmp_path / "forces.dump").read_text().split("ITEM: ATOMS " + columns)[-1]
    table = np.array([[float(v) for v in line.split()[1:]] for line in dump.strip().splitlines()])
    return values[0], np.array(values[1:]), table[:, :3], table[:, 3], table[:, 4:]


def tessera_eval(tmp_path, model, numbers, pos, lengths=None, extra=()):
    atoms = tsr.Atoms(numbers, pos, None if lengths is None else np.diag(lengths),
                      None if lengths is None else [1, 1, 1])
    tsr.write_extxyz(tmp_path / "ref.extxyz", [atoms])
    args = [tessera_bin(), "ictp", "eval", model, tmp_path / "ref.extxyz", "--json",
            "--threads", "1", *extra]
    if lengths is not None:
        args.append("--stress")
    r = subprocess.run(list(map(str, args)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def assert_close(got, want, tol, what):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("ranks", [1, 2])
def test_periodic_cell_matches_tessera_eval(model, tmp_path, ranks):
    numbers, pos, lengths = periodic_cell()
    write_data(tmp_path / "data.lmp", numbers, pos, [(0.0, L) for L in lengths])
    energy, pressure, forces, energies, _ = single_point(tmp_path, model, "p p p", ranks)
    want = tessera_eval(tmp_path, model, numbers, pos, lengths)
    assert_close(energy, want["energy"], 1e-8, "energy")
    assert_close(forces, want["forces"], 1e-8, "forces")
    per_atom = tsr.IctpModel(model).evaluate(tsr.Atoms(numbers, pos, np.diag(lengths),
                                                       [1, 1, 1]))["energies"]
    assert_close(energies, per_atom, 1e-8, "per-atom energies (compute pe/atom)")
    stress = np.array(want["stress"]).reshape(3, 3)
    want_pressure = -NKTV2P_METAL * stress[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
    assert_close(pressure, want_pressure, 1e-8, "pressure tensor")


def test_radial_table_matches_tessera_eval(model, tmp_path):
    """pair_style's radial_table gives what `tessera ictp eval --radial-table` gives, over
    two ranks, and moves off the exact MLPs by no more than the spline's error."""
    numbers, pos, lengths = periodic_cell()
    write_data(tmp_path / "data.lmp", numbers, pos, [(0.0, L) for L in lengths])
    energy, _, forces, _, _ = single_point(tmp_path, model, "p p p", 2,
                                           extra="radial_table 512")
    want = tessera_eval(tmp_path, model, numbers, pos, lengths, ["--radial-table", "512"])
    assert_close(energy, want["energy"], 1e-8, "energy")
    assert_close(forces, want["forces"], 1e-8, "forces")
    exact = tessera_eval(tmp_path, model, numbers, pos, lengths)
    assert_close(forces, exact["forces"], 1e-4, "forces against the exact MLPs")
    assert np.abs(np.asarray(forces) - exact["forces"]).max() > 0, "the table had no effect"


def c_api_virials(model, numbers, pos, lengths):
    """The periodic cell's per-atom virials from tsr_ictp_evaluate_local_virial."""
    ictp = tsr.IctpModel(model)
    atoms = tsr.Atoms(numbers, pos, np.diag(lengths), [1, 1, 1])
    n = len(numbers)
    energy, forces, energies, virials = C.c_double(), np.zeros((n, 3)), np.zeros(n), \
        np.zeros((n, 6))
    ptr = lambda a: a.ctypes.data_as(C.c_void_p)  # noqa: E731
    assert tsr.lib().tsr_ictp_evaluate_local_virial(
        ictp.evaluator, atoms.handle, C.c_int64(n), C.byref(energy), ptr(forces),
        ptr(energies), ptr(virials)) == tsr.OK, tsr.lib().tsr_last_error().decode()
    return virials


@pytest.mark.parametrize("ranks", [1, 2])
def test_per_atom_virials_match_the_c_api(model, tmp_path, ranks):
    numbers, pos, lengths = periodic_cell()
    write_data(tmp_path / "data.lmp", numbers, pos, [(0.0, L) for L in lengths])
    energy, pressure, forces, _, stress_atom = single_point(tmp_path, model, "p p p", ranks,
                                                            virials=True)
    want = tessera_eval(tmp_path, model, numbers, pos, lengths)
    assert_close(energy, want["energy"], 1e-8, "energy")
    assert_close(forces, want["forces"], 1e-8, "forces")
    # compute stress/atom is minus the virial in pressure x volume; its sum over the
    # atoms is minus the pressure tensor (here all virial: no velocities) times V.
    assert_close(-stress_atom.sum(axis=0) / np.prod(lengths), pressure, 1e-8,
                 "compute stress/atom summed against the pressure tensor")
    stress = np.array(want["stress"]).reshape(3, 3)
    assert_close(stress_atom.sum(axis=0),
                 NKTV2P_METAL * np.prod(lengths) * stress[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]],
                 1e-8, "compute stress/atom summed against tessera ictp eval's stress")
    assert_close(stress_atom, -NKTV2P_METAL * c_api_virials(model, numbers, pos, lengths),
                 1e-8, "compute stress/atom against tsr_ictp_evaluate_local_virial")


@pytest.mark.parametrize("ranks", [1, 2])
def test_molecule_in_a_box_matches_tessera_eval(model, tmp_path, ranks):
    numbers, pos = molecule()
    write_data(tmp_path / "data.lmp", numbers, pos, [(-2.0, 8.0), (-2.0, 7.0), (-2.0, 7.0)])
    energy, _, forces, _, _ = single_point(tmp_path, model, "f f f", ranks)
    want = tessera_eval(tmp_path, model, numbers, pos)
    assert_close(energy, want["energy"], 1e-8, "energy")
    assert_close(forces, want["forces"], 1e-8, "forces")
    assert np.abs(forces.sum(axis=0)).max() < 1e-10, "an isolated molecule feels no net force"


@pytest.mark.parametrize("steps", [40, pytest.param(1000, marks=pytest.mark.slow)])
def test_nve_conserves_energy(model, tmp_path, steps):
    """Velocity Verlet at 0.2 fs on 2 ranks, atoms crossing between the ranks' domains."""
    numbers, pos, lengths = periodic_cell(seed=4, n=24, lengths=(7.0, 6.5, 6.0))
    write_data(tmp_path / "data.lmp", numbers, pos, [(0.0, L) for L in lengths])
    script = f"""units metal
atom_style atomic
boundary p p p
read_data data.lmp
pair_style tessera/ictp
pair_coeff * * {model} {' '.join(ELEMENTS)}
velocity all create 300.0 7 mom yes rot no dist gaussian
timestep 0.0002
fix nve all nve
thermo_style custom step pe ke etotal
thermo {steps // 10}
thermo_modify format float %.15g
run {steps}
"""
    r = run_lammps(tmp_path, script, ranks=2, timeout=3 * steps + 60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].isdigit():
            rows.append([float(v) for v in parts])
    rows = np.array(rows)
    assert len(rows) == 11, r.stdout[-2000:]
    kinetic, total = rows[:, 2], rows[:, 3]
    # Measured: the total's spread is 6e-5 (40 steps) and 1e-4 (1000 steps, 0.2 ps) of the
    # kinetic energy's, with no drift; it falls 4x at half the step, as velocity Verlet's
    # error does.
    assert np.ptp(kinetic) > 1e-3, "the atoms should exchange energy"
    assert np.ptp(total) < 2e-4 * np.ptp(kinetic), \
        f"total energy moved by {np.ptp(total):.3g} eV, kinetic by {np.ptp(kinetic):.3g} eV"


def lammps_error(tmp_path, model, style_args="", coeff_args=None, commands=""):
    numbers, pos = molecule(n=4)
    write_data(tmp_path / "data.lmp", numbers, pos, [(-2.0, 8.0), (-2.0, 7.0), (-2.0, 7.0)])
    coeff = f"{model} {' '.join(ELEMENTS)}" if coeff_args is None else coeff_args
    script = f"""units metal
atom_style atomic
boundary f f f
read_data data.lmp
pair_style tessera/ictp {style_args}
pair_coeff * * {coeff}
{commands}
run 0
"""
    r = run_lammps(tmp_path, script)
    assert r.returncode != 0
    return r.stdout + r.stderr


def test_bad_pair_coeff_and_style_errors(model, tmp_path):
    out = lammps_error(tmp_path, model, coeff_args=f"{model} H C N")
    assert "atom type 3 is 'N', which the model does not know" in out
    assert "species are H C O" in out
    out = lammps_error(tmp_path, model, coeff_args=f"{model} H C Xx")
    assert "'Xx', not a chemical element" in out
    out = lammps_error(tmp_path, model, coeff_args=f"{model} H C")
    assert "2 element names for 3 atom types" in out
    out = lammps_error(tmp_path, model, coeff_args=f"{tmp_path}/none.npz H C O")
    assert "none" in out and "pair_coeff for tessera/ictp" in out
    out = lammps_error(tmp_path, model, style_args="dtype float16")
    assert "dtype is 'float16'" in out
    out = lammps_error(tmp_path, model, style_args="radial_table 8")
    assert "radial_table is '8', not a count of intervals from 16" in out
    out = lammps_error(tmp_path, model, style_args="colour blue")
    assert "unknown keyword 'colour'" in out
    # The per-atom virial halves each edge's term: not the centroid form of many-body terms.
    out = lammps_error(tmp_path, model, commands="compute c all centroid/stress/atom NULL\n"
                       "dump d all custom 1 c.dump c_c[1]")
    assert "does not support compute centroid/stress/atom" in out


def test_newton_off_is_refused(model, tmp_path):
    numbers, pos = molecule(n=4)
    write_data(tmp_path / "data.lmp", numbers, pos, [(-2.0, 8.0), (-2.0, 7.0), (-2.0, 7.0)])
    script = f"""units metal
atom_style atomic
boundary f f f
newton off
read_data data.lmp
pair_style tessera/ictp
pair_coeff * * {model} {' '.join(ELEMENTS)}
run 0
"""
    r = run_lammps(tmp_path, script)
    assert r.returncode != 0 and "requires newton pair on" in r.stdout + r.stderr

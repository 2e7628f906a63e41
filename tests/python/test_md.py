"""`tessera md` (include/tessera/md.h) on ICTP potentials: velocity Verlet against ASE's
VelocityVerlet driving tessera.ictp.Calculator on the same model and start, energy
conservation, forces after skin-list rebuilds against fresh evaluations, the Nosé-Hoover
chain's conserved energy, Langevin's temperature, the trajectory and log files, and the
errors for bad arguments and inputs. tests/c/test_md.c checks the integrators on a
Lennard-Jones solid with runs too long for an ICTP model here."""

import os
import subprocess

import numpy as np
import pytest

ase = pytest.importorskip("ase")
import ase.io  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

import ictp_reference as ref  # noqa: E402
import tsr  # noqa: E402
from tessera.ictp import Calculator  # noqa: E402
from test_ictp_model import config, crystal, molecule  # noqa: E402


def tessera_md(*args):
    build = os.environ.get("TESSERA_BUILD_DIR", "build")
    exe = os.environ.get("TESSERA_BIN", os.path.join(build, "bin", "tessera"))
    return subprocess.run([exe, "md", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ref.random_model(str(tmp_path_factory.mktemp("md") / "m"), config("nu3_full"),
                            seed=5)


def write(path, atoms):
    ase.io.write(str(path), atoms, format="extxyz")
    return path


def run_ok(*args):
    r = tessera_md(*args, "--threads", 1, "--no-plot")
    assert r.returncode == 0, r.stderr
    return r


def log_rows(path):
    return np.genfromtxt(path, delimiter=",", names=True)


def test_velocity_verlet_matches_ase(model, tmp_path):
    numbers, pos = molecule(11, n=8)
    start = write(tmp_path / "start.extxyz", ase.Atoms(numbers=numbers, positions=pos))
    traj = tmp_path / "traj.extxyz"
    r = run_ok(model, start, "--steps", 100, "--dt", 0.5, "--temperature", 300, "--seed", 3,
               "--trajectory", traj, "--every", 100)
    first, last = ase.io.read(str(traj), ":")
    v0 = first.arrays["velocities"]
    masses = ase.Atoms(numbers=numbers).get_masses()
    # Maxwell-Boltzmann start: zero momentum, exactly 300 K over 3N - 3 degrees of freedom
    assert np.abs(masses @ v0).max() < 1e-12
    assert first.info["temperature"] == pytest.approx(300.0, rel=1e-12)
    assert first.info["step"] == 0 and last.info["step"] == 100
    assert last.info["time"] == pytest.approx(50.0)

    # ASE's units are CODATA 2014, Tessera's 2018: e/amu differ by 4e-9 relative, which
    # moves these atoms by 2e-9 A over the run. Masses scaled by that ratio give ASE the
    # same accelerations, so that what is compared is the integration alone.
    codata_2018 = 1.602176634e-19 / 1.66053906660e-27 * 1e-10  # eV/A/amu in A/fs^2
    atoms = ase.Atoms(numbers=numbers, positions=first.positions,
                      masses=masses * ase.units.fs**2 / codata_2018)
    atoms.set_velocities(v0 / ase.units.fs)  # A/fs -> A per ASE time unit
    atoms.calc = Calculator(model, threads=1)
    VelocityVerlet(atoms, timestep=0.5 * ase.units.fs).run(100)
    moved = np.abs(atoms.positions - first.positions).max()
    assert moved > 0.05, "the atoms should have moved"
    assert np.abs(atoms.positions - last.positions).max() < 1e-10
    assert np.abs(atoms.get_velocities() * ase.units.fs - last.arrays["velocities"]).max() < 1e-9
    assert np.abs(atoms.get_forces() - last.arrays["forces"]).max() < 1e-8
    assert atoms.get_potential_energy() == pytest.approx(last.info["energy"], abs=1e-9)

    # NVE: the total energy of every report line, and the drift the run printed
    rows = log_rows(tmp_path / "traj.csv")
    assert len(rows) == 21 and rows["step"][-1] == 100
    assert np.ptp(rows["etot_eV"]) < 2e-3 * np.ptp(rows["epot_eV"])
    assert np.array_equal(rows["etot_eV"], rows["conserved_eV"])
    drift = float(r.stdout.split("drift of the total energy:")[1].split()[0])
    assert abs(drift) < 0.5  # meV/atom/ps; over 50 fs the fit mostly sees the fluctuation
    assert "ns/day" in r.stdout and "neighbour list builds" in r.stdout


def test_radial_table_matches_ase_and_conserves_energy(model, tmp_path):
    """--radial-table in `tessera md` and radial_table in the ASE calculator: the same
    trajectory, and NVE conserving the tabulated potential's energy as well as the MLPs'."""
    numbers, pos = molecule(12, n=8)
    start = write(tmp_path / "start.extxyz", ase.Atoms(numbers=numbers, positions=pos))
    traj = tmp_path / "traj.extxyz"
    run_ok(model, start, "--steps", 60, "--dt", 0.5, "--temperature", 300, "--seed", 4,
           "--trajectory", traj, "--every", 60, "--radial-table", 1024)
    first, last = ase.io.read(str(traj), ":")
    codata_2018 = 1.602176634e-19 / 1.66053906660e-27 * 1e-10
    masses = ase.Atoms(numbers=numbers).get_masses()
    atoms = ase.Atoms(numbers=numbers, positions=first.positions,
                      masses=masses * ase.units.fs**2 / codata_2018)
    atoms.set_velocities(first.arrays["velocities"] / ase.units.fs)
    atoms.calc = Calculator(model, threads=1, radial_table=1024)
    VelocityVerlet(atoms, timestep=0.5 * ase.units.fs).run(60)
    assert np.abs(atoms.get_forces() - last.arrays["forces"]).max() < 1e-8
    assert np.abs(atoms.positions - last.positions).max() < 1e-10
    rows = log_rows(tmp_path / "traj.csv")
    assert np.ptp(rows["etot_eV"]) < 2e-3 * np.ptp(rows["epot_eV"])
    with pytest.raises(ValueError, match="radial_table is 4"):
        Calculator(model, radial_table=4)


def test_forces_after_rebuilds_equal_fresh_evaluations(model, tmp_path):
    numbers, pos, cell = crystal(13, n=5)
    start = write(tmp_path / "c.extxyz",
                  ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True))
    traj = tmp_path / "t.extxyz"
    r = run_ok(model, start, "--steps", 40, "--dt", 0.5, "--temperature", 600, "--skin", 0.1,
               "--trajectory", traj, "--every", 4)
    builds = int(r.stdout.split("neighbour list builds")[0].split(";")[-1])
    assert builds > 3, r.stdout
    frames = ase.io.read(str(traj), ":")
    assert len(frames) == 11
    fresh = tsr.IctpModel(model, threads=1)
    for f in frames:
        got = fresh.evaluate(tsr.Atoms(f.numbers, f.positions, f.cell[:], (True,) * 3))
        assert np.abs(got["forces"] - f.arrays["forces"]).max() < 1e-12
        assert got["energy"] == pytest.approx(f.info["energy"], abs=1e-12)
        # wrapped into the cell up to half the skin
        c = f.cell[:]
        frac = np.linalg.solve(c.T, f.positions.T).T
        heights = abs(np.linalg.det(c)) / np.linalg.norm(np.cross(c[[1, 2, 0]], c[[2, 0, 1]]),
                                                          axis=1)
        reach = 0.05 / heights.min() + 1e-12
        assert frac.min() > -reach and frac.max() < 1 + reach


def test_nose_hoover_conserves_its_energy(model, tmp_path):
    numbers, pos, cell = crystal(13, n=5)
    start = write(tmp_path / "c.extxyz",
                  ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True))
    run_ok(model, start, "--steps", 80, "--dt", 0.25, "--ensemble", "nose-hoover",
           "--temperature", 300, "--tau", 5, "--trajectory", tmp_path / "nh.extxyz",
           "--report", 4)
    rows = log_rows(tmp_path / "nh.csv")
    # the thermostat moves energy in and out, the extended energy stays
    assert np.ptp(rows["etot_eV"]) > 100 * np.ptp(rows["conserved_eV"])
    assert np.ptp(rows["conserved_eV"]) < 1e-5


def test_langevin_heats_towards_the_target(model, tmp_path):
    numbers, pos, cell = crystal(13, n=5)
    cold = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    cold.arrays["velocities"] = np.zeros((5, 3))
    start = write(tmp_path / "c.extxyz", cold)
    run_ok(model, start, "--steps", 20, "--dt", 0.5, "--ensemble", "langevin",
           "--temperature", 500, "--friction", 50, "--trajectory", tmp_path / "l.extxyz",
           "--report", 20)
    rows = log_rows(tmp_path / "l.csv")
    assert rows["temperature_K"][0] == 0 and rows["temperature_K"][-1] > 50


@pytest.mark.slow
def test_langevin_reaches_the_target_temperature(tmp_path):
    """Mean temperature over the second half of 20 ps within 3 % of the target."""
    cfg = ref.default_config(n_hidden_feats=4, n_product_feats=4, radial_MLP=[8],
                             readout_MLP=[4], r_cutoff=3.0, n_interactions=1, correlation=2,
                             l_max_hidden_feats=1, l_max_edge_attrs=1)
    m = ref.random_model(str(tmp_path / "tiny"), cfg, seed=2)
    rng = np.random.default_rng(4)
    cell = np.eye(3) * 6.0
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = (grid + 0.5 + 0.05 * rng.standard_normal(grid.shape)) * 2.0
    start = write(tmp_path / "s.extxyz", ase.Atoms(numbers=[8] * 27, positions=pos, cell=cell,
                                                   pbc=True))
    run_ok(m, start, "--steps", 20000, "--dt", 1.0, "--ensemble", "langevin",
           "--temperature", 300, "--friction", 20, "--trajectory", tmp_path / "l.extxyz",
           "--every", 20000, "--report", 10)
    rows = log_rows(tmp_path / "l.csv")
    second = rows["temperature_K"][len(rows) // 2:]
    assert abs(second.mean() - 300) < 0.03 * 300, second.mean()


ETHANOL = "/work/data/ictp/ethanol_model.npz"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nve_drift_trained_molecule(tmp_path, dtype):
    """The issue's check: 10 ps at 0.5 fs with a trained ethanol model, drift below
    1e-5 eV/atom/ps in float64 (float32 reported)."""
    if not os.path.exists(ETHANOL):
        pytest.skip("no trained ethanol model at " + ETHANOL)
    data = ETHANOL.replace("_model.npz", ".extxyz")
    start = write(tmp_path / "e.extxyz", ase.io.read(data, 0))
    r = run_ok(ETHANOL, start, "--steps", 20000, "--dt", 0.5, "--temperature", 300,
               "--dtype", dtype, "--trajectory", tmp_path / "e_traj.extxyz", "--every", 1000)
    drift = float(r.stdout.split("drift of the total energy:")[1].split()[0])
    print(dtype, "drift", drift, "meV/atom/ps")
    if dtype == "float64":
        assert abs(drift) < 1e-2  # 1e-5 eV/atom/ps


def test_trajectory_keeps_frames_and_never_the_start(model, tmp_path):
    numbers, pos = molecule(11, n=8)
    start = write(tmp_path / "s.extxyz", ase.Atoms(numbers=numbers, positions=pos))
    before = start.read_bytes()
    r = tessera_md(model, start, "--steps", 2, "--dt", 0.5, "--trajectory", start)
    assert r.returncode == 2 and "is the start file; it is never overwritten" in r.stderr
    r = tessera_md(model, start, "--steps", 2, "--dt", 0.5, "--trajectory",
                   tmp_path / "t.extxyz", "--log", start)
    assert r.returncode == 2 and "is the start file" in r.stderr
    assert start.read_bytes() == before
    # an old trajectory is replaced, not appended to
    traj = tmp_path / "t.extxyz"
    traj.write_text("old\n")
    run_ok(model, start, "--steps", 4, "--dt", 0.5, "--trajectory", traj, "--every", 2,
           "--log", tmp_path / "log.csv")
    frames = ase.io.read(str(traj), ":")
    assert [f.info["step"] for f in frames] == [0, 2, 4]
    assert set(frames[0].arrays) >= {"velocities", "forces"}
    # a trajectory continues from its last frame, velocities included, every digit kept
    half = tmp_path / "half.extxyz"
    run_ok(model, start, "--steps", 2, "--dt", 0.5, "--trajectory", half, "--every", 2)
    run_ok(model, half, "--steps", 2, "--dt", 0.5, "--trajectory", tmp_path / "t2.extxyz",
           "--every", 2)
    again = ase.io.read(str(tmp_path / "t2.extxyz"), ":")
    assert np.array_equal(again[-1].positions, frames[-1].positions)
    assert np.array_equal(again[-1].arrays["velocities"], frames[-1].arrays["velocities"])


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_run_keeps_its_frames(model, tmp_path, sig):
    import signal
    import time
    numbers, pos = molecule(11, n=8)
    start = write(tmp_path / "s.extxyz", ase.Atoms(numbers=numbers, positions=pos))
    traj = tmp_path / "t.extxyz"
    build = os.environ.get("TESSERA_BUILD_DIR", "build")
    exe = os.environ.get("TESSERA_BIN", os.path.join(build, "bin", "tessera"))
    args = [model, start, "--steps", 10**6, "--dt", 0.1, "--trajectory", traj, "--every", 2,
            "--threads", 1, "--no-plot"]
    p = subprocess.Popen([exe, "md", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not traj.exists() or traj.read_text().count("step=") < 3):
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "interrupted at step" in err
    frames = ase.io.read(str(traj), ":")
    assert len(frames) >= 3
    assert [f.info["step"] for f in frames] == list(range(0, 2 * len(frames), 2))
    assert "drift of the total energy" in out


@pytest.mark.parametrize("args, message", [
    (["--dt", 0.5, "--trajectory", "T"], "--steps N is required"),
    (["--steps", 5, "--trajectory", "T"], "--dt FS is required"),
    (["--steps", 5, "--dt", 0.5], "--trajectory OUT.extxyz is required"),
    (["--steps", 5, "--dt", "fast", "--trajectory", "T"], "--dt expects a number"),
    (["--steps", 5, "--dt", -1, "--trajectory", "T"], "--dt must be between"),
    (["--steps", 5, "--dt", 1, "--trajectory", "T", "--ensemble", "npt"],
     "--ensemble must be nve, langevin or nose-hoover, not 'npt'"),
    (["--steps", 5, "--dt", 1, "--trajectory", "T", "--ensemble", "langevin"],
     "--ensemble langevin needs --temperature K > 0"),
    (["--steps", 5, "--dt", 1, "--trajectory", "T", "--chain", 0], "--chain must be"),
    (["--steps", 5, "--dt", 1, "--trajectory", "T", "--dtype", "float16"],
     "--dtype must be float32 or float64"),
    (["--steps", 5, "--dt", 1, "--trajectory", "T", "--bogus"], "unknown option '--bogus'"),
    (["--steps", 5, "--dt", 1, "--trajectory", "T", "--radial-table", 8],
     "--radial-table must be"),
])
def test_bad_arguments(model, tmp_path, args, message):
    numbers, pos = molecule(11, n=8)
    start = write(tmp_path / "s.extxyz", ase.Atoms(numbers=numbers, positions=pos))
    args = [tmp_path / "T.extxyz" if a == "T" else a for a in args]
    r = tessera_md(model, start, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_bad_inputs(model, tmp_path):
    out = ["--steps", 2, "--dt", 0.5, "--trajectory", tmp_path / "t.extxyz"]
    r = tessera_md(tmp_path / "nothere.npz", tmp_path / "s.extxyz", *out)
    assert r.returncode == 1 and "nothere" in r.stderr
    r = tessera_md(model, tmp_path / "missing.extxyz", *out)
    assert r.returncode == 1 and "missing.extxyz" in r.stderr
    nitrogen = write(tmp_path / "n.extxyz",
                     ase.Atoms(numbers=[7, 1], positions=[[0, 0, 0], [1.0, 0, 0]]))
    r = tessera_md(model, nitrogen, *out)
    assert r.returncode == 1 and "which the model does not know" in r.stderr
    assert "start structure" in r.stderr
    assert not (tmp_path / "t.extxyz").exists()
    bad = ase.Atoms(numbers=[1, 1], positions=[[0, 0, 0], [1.0, 0, 0]])
    bad.arrays["masses"] = np.array([1.0, -2.0])
    r = tessera_md(model, write(tmp_path / "m.extxyz", bad), *out)
    assert r.returncode == 1 and "the mass of atom 1 is -2" in r.stderr

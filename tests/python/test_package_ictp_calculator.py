"""tessera.ictp.Calculator: ASE's view of an ICTP model. Energies, forces and per-atom
energies against the independent PyTorch reference of the tests (float64, 1e-10) and the
C API, stress against ASE's finite strain, and ASE's own MD driving it."""

import numpy as np
import pytest

ase = pytest.importorskip("ase")
from ase.md.verlet import VelocityVerlet  # noqa: E402

import ictp_reference as ref  # noqa: E402
import tsr  # noqa: E402
from tessera.ictp import Calculator  # noqa: E402
from test_ictp_model import config, crystal, molecule  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ref.random_model(str(tmp_path_factory.mktemp("calc") / "m"), config("nu3_full"),
                            seed=5)


def rel(got, want):
    return float(np.abs(np.asarray(got) - want).max() / max(np.abs(want).max(), 1e-300))


def test_molecule_matches_reference_and_c_api(model):
    numbers, pos = molecule(11, n=8)
    atoms = ase.Atoms(numbers=numbers, positions=pos)
    atoms.calc = Calculator(model, threads=2)
    want = ref.load(model).evaluate(numbers, pos)
    assert rel(atoms.get_potential_energy(), want["energy"]) < 1e-10
    assert rel(atoms.get_forces(), want["forces"]) < 1e-10
    assert rel(atoms.get_potential_energies(), want["energies"]) < 1e-10
    c_api = tsr.IctpModel(model, threads=2).evaluate(tsr.Atoms(numbers, pos))
    assert atoms.get_potential_energy() == c_api["energy"]
    assert np.array_equal(atoms.get_forces(), c_api["forces"])


def test_periodic_stress_against_finite_strain(model):
    numbers, pos, cell = crystal(12, n=4)
    atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    atoms.calc = Calculator(model)
    want = ref.load(model).evaluate(numbers, pos, cell, (True, True, True), stress=True)
    assert rel(atoms.get_forces(), want["forces"]) < 1e-10
    stress = atoms.get_stress()
    assert rel(atoms.get_stress(voigt=False), want["stress"]) < 1e-10
    numeric = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    assert np.abs(stress - numeric).max() < 1e-6 * max(np.abs(stress).max(), 1e-3)
    assert atoms.get_stress(voigt=False).shape == (3, 3)


@pytest.mark.models
def test_ase_velocity_verlet_conserves_energy(model):
    numbers, pos, cell = crystal(13, n=5)
    atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    atoms.calc = Calculator(model, threads=2)
    rng = np.random.default_rng(0)
    atoms.set_momenta(0.02 * rng.standard_normal((len(atoms), 3)) * atoms.get_masses()[:, None])
    e0, k0 = atoms.get_total_energy(), atoms.get_kinetic_energy()
    VelocityVerlet(atoms, timestep=0.1 * ase.units.fs).run(50)
    # Measured: 1e-10 eV over the 50 steps, while the kinetic energy moves by 6e-4 eV.
    assert abs(atoms.get_kinetic_energy() - k0) > 1e-4, "the atoms should have moved"
    assert abs(atoms.get_total_energy() - e0) < 1e-7


def test_errors(model, tmp_path):
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        Calculator(model, dtype="float16")
    missing = tmp_path / "nothere.npz"
    with pytest.raises(Exception, match="nothere"):
        Calculator(missing)
    atoms = ase.Atoms(numbers=[7, 1], positions=[[0, 0, 0], [1.0, 0, 0]])
    atoms.calc = Calculator(model)
    with pytest.raises(Exception, match="which the model does not know"):
        atoms.get_potential_energy()
    molecule_atoms = ase.Atoms(numbers=[1, 1], positions=[[0, 0, 0], [0.8, 0, 0]])
    molecule_atoms.calc = Calculator(model)
    with pytest.raises(Exception, match="non-zero volume"):
        molecule_atoms.get_stress()

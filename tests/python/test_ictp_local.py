"""tsr_ictp_evaluate_local, the evaluation behind LAMMPS's domain decomposition: a
periodic cell's atoms as the local ones and their images out to the receptive field as
ghosts give the periodic energy, per-atom energies and (images folded back) forces; fewer
ghosts do not; and bad counts get clear errors. Runs without LAMMPS."""

import ctypes as C
import itertools

import numpy as np
import pytest

import ictp_reference as ref
import tsr
from tsr import lib


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = ref.default_config(n_hidden_feats=6, n_product_feats=5, radial_MLP=[12, 10],
                             readout_MLP=[7], r_cutoff=3.2, n_interactions=2, correlation=2,
                             l_max_hidden_feats=1, l_max_edge_attrs=2)
    return ref.random_model(str(tmp_path_factory.mktemp("local") / "m"), cfg, seed=8)


def crystal():
    rng = np.random.default_rng(3)
    cell = np.diag([4.6, 4.2, 5.0]) + 0.3 * rng.random((3, 3))
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                     [0.25, 0.25, 0.25], [0.75, 0.75, 0.25]]) + 0.03 * rng.random((6, 3))
    return rng.choice([1, 6, 8], len(frac)), frac @ cell, cell


def images(numbers, pos, cell, reach):
    """The cell's atoms, then every periodic image within `reach` of one of them."""
    ghosts_z, ghosts_r, owner = [], [], []
    for s in itertools.product(range(-3, 4), repeat=3):
        if s == (0, 0, 0):
            continue
        shifted = pos + np.array(s) @ cell
        d = np.linalg.norm(shifted[:, None, :] - pos[None, :, :], axis=-1).min(axis=1)
        for i in np.nonzero(d < reach)[0]:
            ghosts_z.append(numbers[i])
            ghosts_r.append(shifted[i])
            owner.append(i)
    z = np.concatenate([numbers, ghosts_z]).astype(np.int32)
    r = np.concatenate([pos, np.array(ghosts_r)])
    return z, r, np.concatenate([np.arange(len(numbers)), owner]).astype(int)


def evaluate_local(ictp, atoms, n_local):
    n = len(atoms)
    e, f, ea = C.c_double(), np.full((n, 3), np.nan), np.full(max(n_local, 0), np.nan)
    status = lib().tsr_ictp_evaluate_local(ictp.evaluator, atoms.handle, C.c_int64(n_local),
                                           C.byref(e), f.ctypes.data_as(C.c_void_p),
                                           ea.ctypes.data_as(C.c_void_p))
    return status, e.value, f, ea


def test_receptive_field_is_interactions_times_cutoff(model):
    ictp = tsr.IctpModel(model)
    lib().tsr_ictp_model_receptive_field.restype = C.c_double
    assert lib().tsr_ictp_model_receptive_field(ictp.model) == pytest.approx(2 * 3.2)


def test_images_out_to_the_receptive_field_give_the_periodic_result(model):
    numbers, pos, cell = crystal()
    ictp = tsr.IctpModel(model, threads=2)
    want = ictp.evaluate(tsr.Atoms(numbers, pos, cell, [1, 1, 1]))
    z, r, owner = images(numbers, pos, cell, reach=2 * 3.2 + 0.7)
    status, energy, forces, energies = evaluate_local(ictp, tsr.Atoms(z, r), len(numbers))
    assert status == tsr.OK, lib().tsr_last_error().decode()
    assert abs(energy - want["energy"]) < 1e-10 * abs(want["energy"])
    assert np.abs(energies - want["energies"]).max() < 1e-10 * np.abs(want["energies"]).max()
    folded = np.zeros_like(want["forces"])
    np.add.at(folded, owner, forces)
    assert np.abs(folded - want["forces"]).max() < 1e-9 * np.abs(want["forces"]).max()
    # Images more than two hops from the cell feel nothing.
    far = np.linalg.norm(r[:, None, :] - pos[None, :, :], axis=-1).min(axis=1) > 2 * 3.2
    assert far.any() and not forces[far].any()


def test_ghosts_short_of_the_receptive_field_change_the_energy(model):
    numbers, pos, cell = crystal()
    ictp = tsr.IctpModel(model)
    want = ictp.evaluate(tsr.Atoms(numbers, pos, cell, [1, 1, 1]))["energy"]
    z, r, _ = images(numbers, pos, cell, reach=3.2)
    _, energy, _, _ = evaluate_local(ictp, tsr.Atoms(z, r), len(numbers))
    assert abs(energy - want) > 1e-6 * abs(want)


def test_no_local_atoms_and_bad_counts(model):
    numbers, pos, cell = crystal()
    ictp = tsr.IctpModel(model)
    atoms = tsr.Atoms(numbers, pos)
    status, energy, forces, _ = evaluate_local(ictp, atoms, 0)
    assert status == tsr.OK and energy == 0 and not forces.any()
    for n_local in (-1, len(numbers) + 1):
        status, _, forces, _ = evaluate_local(ictp, atoms, n_local)
        assert status == tsr.ERR_INVALID_ARGUMENT
        assert f"n_local is {n_local}, the structure has {len(numbers)} atoms" in \
            lib().tsr_last_error().decode()
        assert np.isnan(forces).all(), "nothing is written on failure"

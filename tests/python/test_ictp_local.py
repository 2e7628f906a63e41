"""tsr_ictp_evaluate_local, the evaluation behind LAMMPS's domain decomposition: a
periodic cell's atoms as the local ones and their images out to the receptive field as
ghosts give the periodic energy, per-atom energies and (images folded back) forces; fewer
ghosts do not; and bad counts get clear errors. Per-atom virials
(tsr_ictp_evaluate_local_virial): against the PyTorch reference's edge-vector gradients,
adding up to -V stress, the ghosts' shares folded back giving the periodic ones, and
ASE's per-atom `stresses`. Runs without LAMMPS."""

import ctypes as C
import itertools

import numpy as np
import pytest
import torch

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


def evaluate_local_virial(ictp, atoms, n_local):
    n = len(atoms)
    e, f, ea = C.c_double(), np.full((n, 3), np.nan), np.full(max(n_local, 0), np.nan)
    w = np.full((n, 6), np.nan)
    ptr = lambda a: a.ctypes.data_as(C.c_void_p)  # noqa: E731
    status = lib().tsr_ictp_evaluate_local_virial(ictp.evaluator, atoms.handle,
                                                  C.c_int64(n_local), C.byref(e), ptr(f),
                                                  ptr(ea), ptr(w))
    return status, e.value, f, ea, w


# LAMMPS's order of the six components (vatom, compute stress/atom).
VOIGT = ([0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2])


def reference_virials(model, numbers, pos, cell, monkeypatch):
    """Per-atom virials from the PyTorch reference: the gradient with respect to each
    edge's Cartesian shift (v = r_i - r_j - shift, so dE/dv = -dE/dshift), each edge's
    -v (x) dE/dv symmetrized and halved between its two atoms."""
    m = ref.load(model)
    recv, send, S = ref.neighbor_list(pos, cell, (True, True, True), m.cfg["r_cutoff"])
    shifts = torch.tensor(S @ cell, dtype=torch.float64, requires_grad=True)
    # Edge list fixed, its shifts a leaf: the reference's own v then carries the gradient.
    monkeypatch.setattr(ref, "neighbor_list", lambda *args: (recv, send, shifts))
    energy = m.energy(numbers, torch.tensor(pos), np.eye(3), (False, False, False))
    (dshift,) = torch.autograd.grad(energy, [shifts])
    v = pos[recv] - pos[send] - S @ cell
    w = np.einsum("ea,eb->eab", v, dshift.numpy())
    w = 0.25 * (w + w.transpose(0, 2, 1))
    per_atom = np.zeros((len(numbers), 3, 3))
    np.add.at(per_atom, recv, w)
    np.add.at(per_atom, send, w)
    return per_atom[:, VOIGT[0], VOIGT[1]]


def test_per_atom_virials_of_a_periodic_cell(model, monkeypatch):
    numbers, pos, cell = crystal()
    ictp = tsr.IctpModel(model, threads=2)
    atoms = tsr.Atoms(numbers, pos, cell, [1, 1, 1])
    want = ictp.evaluate(atoms, stress=True)
    status, energy, forces, energies, virials = evaluate_local_virial(ictp, atoms, len(numbers))
    assert status == tsr.OK, lib().tsr_last_error().decode()
    assert abs(energy - want["energy"]) < 1e-12 * abs(want["energy"])
    assert np.abs(forces - want["forces"]).max() < 1e-12 * np.abs(want["forces"]).max()
    assert np.abs(energies - want["energies"]).max() < 1e-12 * np.abs(want["energies"]).max()
    total = -abs(np.linalg.det(cell)) * want["stress"][VOIGT]
    assert np.abs(virials.sum(axis=0) - total).max() < 1e-10 * np.abs(total).max()
    expected = reference_virials(model, numbers, pos, cell, monkeypatch)
    assert np.abs(virials - expected).max() < 1e-10 * np.abs(expected).max()
    assert np.abs(virials - virials.sum(axis=0) / len(numbers)).max() > \
        1e-3 * np.abs(total).max(), "the atoms of this cell should differ"
    # float32: the same split, to float32's rounding.
    status, _, _, _, virials32 = evaluate_local_virial(tsr.IctpModel(model, dtype=np.float32),
                                                       atoms, len(numbers))
    assert status == tsr.OK and np.abs(virials32 - virials).max() < 1e-4 * np.abs(virials).max()
    # Unpadded plans (no padding edges among the real ones) give the same.
    status, _, _, _, exact = evaluate_local_virial(tsr.IctpModel(model, exact_sizes=True),
                                                   atoms, len(numbers))
    assert status == tsr.OK and np.abs(exact - virials).max() < 1e-12 * np.abs(virials).max()


def test_ghosts_virials_folded_back_give_the_periodic_ones(model):
    numbers, pos, cell = crystal()
    ictp = tsr.IctpModel(model)
    _, _, _, _, want = evaluate_local_virial(ictp, tsr.Atoms(numbers, pos, cell, [1, 1, 1]),
                                             len(numbers))
    z, r, owner = images(numbers, pos, cell, reach=2 * 3.2 + 0.7)
    cluster = tsr.Atoms(z, r)
    status, energy, forces, energies, virials = evaluate_local_virial(ictp, cluster,
                                                                      len(numbers))
    assert status == tsr.OK, lib().tsr_last_error().decode()
    folded = np.zeros_like(want)
    np.add.at(folded, owner, virials)
    assert np.abs(folded - want).max() < 1e-9 * np.abs(want).max()
    # The cluster's own sum is its r . f (what LAMMPS's fdotr adds up per rank).
    fdotr = np.einsum("ia,ib->ab", r, forces)[VOIGT]
    assert np.abs(virials.sum(axis=0) - fdotr).max() < 1e-9 * np.abs(fdotr).max()
    far = np.linalg.norm(r[:, None, :] - pos[None, :, :], axis=-1).min(axis=1) > 2 * 3.2
    assert far.any() and not virials[far].any()
    # Asking for virials changes nothing else.
    _, energy0, forces0, energies0 = evaluate_local(ictp, cluster, len(numbers))
    assert abs(energy - energy0) <= 1e-13 * abs(energy0)
    assert np.abs(energies - energies0).max() <= 1e-13 * np.abs(energies0).max()
    assert np.abs(forces - forces0).max() <= 1e-13 * np.abs(forces0).max()


def test_ase_per_atom_stresses(model):
    ase = pytest.importorskip("ase")
    from tessera.ictp import Calculator

    numbers, pos, cell = crystal()
    atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    atoms.calc = Calculator(model, threads=1)
    stresses = atoms.get_stresses()
    stress = atoms.get_stress()
    assert stresses.shape == (len(numbers), 6)
    assert np.abs(stresses.sum(axis=0) - stress).max() < 1e-12 * np.abs(stress).max()
    _, _, _, _, virials = evaluate_local_virial(tsr.IctpModel(model), tsr.Atoms(
        numbers, pos, cell, [1, 1, 1]), len(numbers))
    voigt = -virials[:, [0, 1, 2, 5, 4, 3]] / abs(np.linalg.det(cell))
    assert np.abs(stresses - voigt).max() < 1e-12 * np.abs(voigt).max()
    molecule_atoms = ase.Atoms(numbers=[1, 1], positions=[[0, 0, 0], [0.8, 0, 0]])
    molecule_atoms.calc = Calculator(model)
    with pytest.raises(ValueError, match="per-atom stresses need a cell"):
        molecule_atoms.get_stresses()


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
        status, _, _, _, virials = evaluate_local_virial(ictp, atoms, n_local)
        assert status == tsr.ERR_INVALID_ARGUMENT and np.isnan(virials).all()
    status, energy, _, _, virials = evaluate_local_virial(ictp, atoms, 0)
    assert status == tsr.OK and energy == 0 and not virials.any()

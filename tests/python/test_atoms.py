"""Atoms against independent references: neighbour lists against ASE's
(ase.neighborlist.neighbor_list) on random periodic, mixed, non-periodic,
triclinic and tiny cells; extended XYZ both ways against ASE's reader and
writer; .npz against numpy's savez and load."""

import numpy as np
import pytest

import tsr

ase = pytest.importorskip("ase")
from ase import Atoms as AseAtoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
import ase.io  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402


def to_tsr(a):
    return tsr.Atoms(a.numbers, a.positions, a.cell.array if a.cell.rank else None, a.pbc)


def sorted_edges(i, j, S, v):
    """The edges as one integer key matrix (i, j, S) and vectors, sorted by key."""
    keys = np.column_stack([i, j, S]).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    return keys[order], np.asarray(v)[order]


def compare_with_ase(a, cutoff):
    i, j, S, D = neighbor_list("ijSD", a, cutoff)
    e = tsr.atoms_edges(to_tsr(a), cutoff)
    ref_keys, ref_v = sorted_edges(i, j, S, -D)  # ASE's D = r_j + S·cell - r_i; ours v = -D
    keys, v = sorted_edges(e["i"], e["j"], e["S"], e["v"])
    np.testing.assert_array_equal(keys, ref_keys)
    np.testing.assert_allclose(v, ref_v, rtol=0, atol=1e-12)
    # v is exactly r_i - r_j - S·cell (ictp-checkpoint.md §2), with the cell rows.
    cell = a.cell.array
    expect = a.positions[e["i"]] - a.positions[e["j"]] - e["S"] @ cell
    np.testing.assert_allclose(e["v"], expect, rtol=0, atol=1e-12)
    assert (np.linalg.norm(e["v"], axis=1) < cutoff).all() if len(e["v"]) else True
    # The documented order: receiver, then sender, then S lexicographic.
    np.testing.assert_array_equal(np.column_stack([e["i"], e["j"], e["S"]]), keys)
    n = len(a)
    assert e["offsets"][0] == 0 and e["offsets"][n] == len(e["i"])
    assert (np.diff(e["offsets"]) == np.bincount(e["i"], minlength=n)).all()
    return len(keys)


def random_structure(rng, n, pbc, scale=1.0, spill=0.3):
    cell = (rng.normal(size=(3, 3)) * 1.5 + np.diag(rng.uniform(2, 8, size=3))) * scale
    frac = rng.uniform(-spill, 1 + spill, size=(n, 3))
    return AseAtoms(numbers=rng.integers(1, 30, size=n), positions=frac @ cell, cell=cell,
                    pbc=pbc)


@pytest.mark.parametrize("pbc", [(1, 1, 1), (1, 1, 0), (1, 0, 0), (0, 0, 0), (0, 1, 1), (1, 0, 1)])
def test_neighbors_random_triclinic(pbc):
    rng = np.random.default_rng(sum(p << k for k, p in enumerate(pbc)))
    total = 0
    for _ in range(12):
        a = random_structure(rng, int(rng.integers(1, 60)), pbc)
        total += compare_with_ase(a, float(rng.uniform(0.5, 7.0)))
    assert total > 100  # the comparison saw edges


def test_neighbors_cells_smaller_than_cutoff():
    rng = np.random.default_rng(7)
    for _ in range(10):
        a = random_structure(rng, int(rng.integers(1, 5)), (1, 1, 1), scale=0.25)
        compare_with_ase(a, float(rng.uniform(2.0, 5.0)))  # many images per axis
    cell = [[1.1, 0, 0], [0.3, 0.9, 0], [0, 0.2, 1.3]]
    one = AseAtoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=cell, pbc=True)
    assert compare_with_ase(one, 3.5) > 50  # self-images only


def test_neighbors_molecule_and_empty():
    rng = np.random.default_rng(3)
    mol = AseAtoms(numbers=rng.integers(1, 9, size=21), positions=rng.normal(size=(21, 3)) * 2)
    compare_with_ase(mol, 5.0)
    empty = tsr.atoms_edges(tsr.Atoms([], np.zeros((0, 3)), np.eye(3) * 3, (1, 1, 1)), 2.0)
    assert len(empty["i"]) == 0 and list(empty["offsets"]) == [0]


def test_neighbors_bulk_fcc():
    from ase.build import bulk
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    a.rattle(0.05, seed=2)
    assert compare_with_ase(a, 5.0) > 40 * len(a)


def test_skin_list_follows_md():
    rng = np.random.default_rng(11)
    a = random_structure(rng, 80, (1, 1, 1), spill=0)
    nl = tsr.NeighborList(4.0, 0.6)
    rebuilds = 0
    for step in range(60):
        a.positions = a.positions + rng.normal(scale=0.02, size=a.positions.shape)
        t = to_tsr(a)
        got, rebuilt, _ = nl.update(t)
        rebuilds += rebuilt
        fresh = tsr.atoms_edges(t, 4.0)
        for k in ("i", "j", "S", "v", "offsets"):
            np.testing.assert_array_equal(got[k], fresh[k])
    assert 1 <= rebuilds < 30


def test_wrap_matches_ase():
    from ase.geometry import wrap_positions
    rng = np.random.default_rng(13)
    for pbc in [(1, 1, 1), (1, 0, 1), (0, 1, 0)]:
        a = random_structure(rng, 30, pbc, spill=2.5)
        t = to_tsr(a)
        t.wrap()
        ref = wrap_positions(a.positions, a.cell, pbc=a.pbc, eps=0)
        np.testing.assert_allclose(t.positions, ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ extxyz


def ase_frames():
    rng = np.random.default_rng(5)
    frames = []
    for k, (n, pbc) in enumerate([(5, True), (3, [True, False, True]), (4, False), (1, True)]):
        a = random_structure(rng, n, pbc)
        if not np.any(pbc):
            a.cell = np.zeros((3, 3))
        a.info["config_type"] = f"frame {k} \"quoted\""
        a.info["step"] = k
        a.info["temperature"] = 300.5 + k
        a.arrays["weight_x"] = rng.normal(size=n)
        a.arrays["tag2"] = rng.integers(-5, 5, size=n)
        stress = rng.normal(size=6)
        a.calc = SinglePointCalculator(a, energy=float(rng.normal() * 10),
                                       forces=rng.normal(size=(n, 3)), stress=stress)
        frames.append(a)
    return frames


def voigt_to_full(s):
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def test_extxyz_reads_what_ase_writes(tmp_path):
    frames = ase_frames()
    path = tmp_path / "ase.xyz"
    ase.io.write(path, frames, format="extxyz")
    ref = ase.io.read(path, index=":", format="extxyz")  # the same text, parsed by ASE
    got = tsr.read_extxyz(path)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert list(g.numbers) == list(r.numbers)
        np.testing.assert_array_equal(g.positions, r.positions)
        cell, pbc = g.cell()
        assert pbc == list(r.pbc)
        if r.cell.rank:
            np.testing.assert_array_equal(cell, r.cell.array)
        info, arrays = g.info(), g.arrays()
        assert info["energy"][0, 0] == r.get_potential_energy()
        np.testing.assert_array_equal(info["stress"].reshape(3, 3), r.get_stress(voigt=False))
        np.testing.assert_array_equal(arrays["forces"], r.get_forces())
        np.testing.assert_array_equal(arrays["weight_x"][:, 0], r.arrays["weight_x"])
        np.testing.assert_array_equal(arrays["tag2"][:, 0], r.arrays["tag2"])
        assert info["config_type"][0, 0] == r.info["config_type"]
        assert info["step"][0, 0] == r.info["step"]
        assert info["temperature"][0, 0] == r.info["temperature"]


def test_ase_reads_what_extxyz_writes(tmp_path):
    frames = ase_frames()
    ours = []
    for a in frames:
        t = to_tsr(a)
        t.set_value("info", "energy", np.array([a.get_potential_energy()]))
        t.set_value("info", "stress", a.get_stress(voigt=False).ravel())
        t.set_value("array", "forces", a.get_forces())
        t.set_value("array", "weight_x", a.arrays["weight_x"])
        t.set_value("array", "tag2", a.arrays["tag2"])
        t.set_value("info", "config_type", np.array([a.info["config_type"]], dtype=object))
        t.set_value("info", "step", np.array([a.info["step"]]))
        ours.append(t)
    path = tmp_path / "ours.xyz"
    tsr.write_extxyz(path, ours)
    back = ase.io.read(path, index=":", format="extxyz")
    assert len(back) == len(frames)
    for b, a in zip(back, frames):
        assert list(b.numbers) == list(a.numbers)
        np.testing.assert_array_equal(b.positions, a.positions)  # shortest round-trip digits
        assert list(b.pbc) == list(a.pbc)
        if a.cell.rank:
            np.testing.assert_array_equal(b.cell.array, a.cell.array)
        assert b.get_potential_energy() == a.get_potential_energy()
        np.testing.assert_array_equal(b.get_forces(), a.get_forces())
        np.testing.assert_array_equal(b.get_stress(), a.get_stress())
        np.testing.assert_array_equal(b.arrays["weight_x"], a.arrays["weight_x"])
        np.testing.assert_array_equal(b.arrays["tag2"], a.arrays["tag2"])
        assert b.info["config_type"] == a.info["config_type"]
        assert b.info["step"] == a.info["step"]
    # And our reader reads it back to the same values.
    again = tsr.read_extxyz(path)
    for g, t in zip(again, ours):
        np.testing.assert_array_equal(g.positions, t.positions)
        assert g.info().keys() == t.info().keys()
        for k, v in t.arrays().items():
            np.testing.assert_array_equal(g.arrays()[k], v)


def test_append_frame_by_frame_reads_in_ase(tmp_path):
    frames = ase_frames()
    path = tmp_path / "traj.xyz"
    for a in frames:
        t = to_tsr(a)
        t.set_value("info", "energy", np.array([a.get_potential_energy()]))
        tsr.append_extxyz(path, [t])
    back = ase.io.read(path, index=":", format="extxyz")
    assert len(back) == len(frames)
    for b, a in zip(back, frames):
        np.testing.assert_array_equal(b.positions, a.positions)
        assert b.get_potential_energy() == a.get_potential_energy()


@pytest.mark.parametrize("text,line,words", [
    ("2\n\nH 0 0 0\n", 3, "promised 2 atoms"),
    ("1\nProperties=species:S:1:pos:R:3:forces:R:3\nH 0 0 0 1 2\n", 3, "has 6 columns"),
    ("1\n\nH 0 0 zero\n", 3, "'zero' is not a real number"),
    ("2\n\nH 0 0 0\nXy 0 0 1\n", 4, "unknown species symbol 'Xy'"),
    ("1\n\nH 0 nan 0\n", 3, "non-finite position"),
])
def test_extxyz_errors_name_the_line(tmp_path, text, line, words):
    path = tmp_path / "bad.xyz"
    path.write_text("1\n\nHe 0 0 0\n" + text)  # a good frame first: nothing half-read comes back
    with pytest.raises(tsr.TesseraError) as err:
        tsr.read_extxyz(path)
    assert f"{path}:{line + 3}:" in str(err.value) and words in str(err.value)


# --------------------------------------------------------------------- npz


def test_npz_from_numpy(tmp_path):
    rng = np.random.default_rng(8)
    cell = np.diag([4.0, 5.0, 6.0]) + rng.normal(size=(3, 3)) * 0.3
    pos = rng.normal(size=(7, 3))
    path = tmp_path / "one.npz"
    np.savez(path, positions=pos, numbers=np.arange(1, 8, dtype=np.int32), cell=cell,
             pbc=np.array([True, False, True]), energy=np.float64(-3.25),
             forces=rng.normal(size=(7, 3)), other=np.zeros(2))
    (a,) = tsr.read_atoms_npz(path)
    np.testing.assert_array_equal(a.positions, pos)
    assert list(a.numbers) == list(range(1, 8))
    c, p = a.cell()
    np.testing.assert_array_equal(c, cell)
    assert p == [True, False, True]
    assert a.info()["energy"][0, 0] == -3.25

    many = tmp_path / "many.npz"
    P = rng.normal(size=(4, 5, 3)).astype(np.float32)
    np.savez_compressed(many, positions=P, numbers=np.full(5, 14, np.int64),
                        cell=np.tile(np.eye(3) * 9, (4, 1, 1)), energy=np.arange(4.0),
                        stress=rng.normal(size=(4, 6)))
    frames = tsr.read_atoms_npz(many)
    assert len(frames) == 4
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(f.positions, P[k].astype(np.float64))
        assert f.cell()[1] == [True, True, True]  # a cell without pbc: periodic
        assert f.info()["energy"][0, 0] == k


def test_npz_written_reads_in_numpy(tmp_path):
    rng = np.random.default_rng(9)
    cell = np.eye(3) * 5
    frames = [tsr.Atoms([8, 1, 1], rng.normal(size=(3, 3)), cell, (1, 1, 0)) for _ in range(3)]
    for k, f in enumerate(frames):
        f.set_value("info", "energy", np.array([float(k) - 0.5]))
    path = tmp_path / "out.npz"
    tsr.write_atoms_npz(path, frames)
    with np.load(path) as z:
        assert z["positions"].shape == (3, 3, 3)
        for k, f in enumerate(frames):
            np.testing.assert_array_equal(z["positions"][k], f.positions)
        assert list(z["numbers"]) == [8, 1, 1]
        np.testing.assert_array_equal(z["cell"], np.tile(cell, (3, 1, 1)))
        assert z["pbc"].dtype == np.bool_ and z["pbc"].tolist() == [[True, True, False]] * 3
        np.testing.assert_array_equal(z["energy"], [-0.5, 0.5, 1.5])
        assert "forces" not in z


def test_npz_errors(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, positions=np.zeros((3, 2)), numbers=np.ones(3, np.int64))
    with pytest.raises(tsr.TesseraError, match=r"'positions' has shape \[3, 2\]"):
        tsr.read_atoms_npz(path)
    np.savez(path, positions=np.zeros((3, 3)))
    with pytest.raises(tsr.TesseraError, match="no array named 'numbers'"):
        tsr.read_atoms_npz(path)
    np.savez(path, positions=np.full((1, 3), np.inf), numbers=np.ones(1, np.int64))
    with pytest.raises(tsr.TesseraError, match="non-finite position"):
        tsr.read_atoms_npz(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(tsr.TesseraError, match="not a valid .npz"):
        tsr.read_atoms_npz(path)



def test_extxyz_string_columns_keep_utf8(tmp_path):
    """A string column holding UTF-8 (bytes above 127) writes back and reads again: the writer
    once took those bytes for whitespace and refused what the reader had accepted (found by
    fuzz_extxyz)."""
    path = tmp_path / "utf8.xyz"
    path.write_text("2\nProperties=species:S:1:pos:R:3:label:S:1\n"
                    "Cu 0 0 0 α-site\nCu 1.8 1.8 0 Ω2\n", encoding="utf-8")
    frames = tsr.read_extxyz(path)
    assert list(frames[0].arrays()["label"].ravel()) == ["α-site", "Ω2"]
    copy = tmp_path / "copy.xyz"
    tsr.write_extxyz(copy, frames)
    again = tsr.read_extxyz(copy)
    assert list(again[0].arrays()["label"].ravel()) == ["α-site", "Ω2"]


def test_extxyz_splits_at_the_whitespace_ase_splits_at(tmp_path):
    """Vertical tab, form feed and \\x1c-\\x1f separate words as they do for Python's
    str.split(), hence ASE: the same file reads the same in both (the readers once took those
    bytes into the words, and the writer left such words bare, for ASE to split)."""
    import ase.io
    path = tmp_path / "ctl.xyz"
    path.write_bytes(b'2\nenergy=1.5\x0bLattice="4 0 0 0 4 0 0 0 4"\x0c'
                     b'Properties=species:S:1:pos:R:3:tag:S:1 pbc="T T T"\n'
                     b"Cu\x0b0 0\x0c0.5\x1ca\nCu 1.8 1.8 0\x1fc\x0b\n")
    want = ase.io.read(path)
    got = tsr.read_extxyz(path)[0]
    assert got.info()["energy"].item() == want.info["energy"]
    np.testing.assert_array_equal(got.positions, want.positions)
    cell, pbc = got.cell()
    np.testing.assert_array_equal(cell, want.cell.array)
    assert pbc == list(want.pbc)
    assert list(got.arrays()["tag"].ravel()) == list(want.arrays["tag"])
    copy = tmp_path / "copy.xyz"
    tsr.write_extxyz(copy, [got])
    assert list(ase.io.read(copy).arrays["tag"]) == ["a", "c"]

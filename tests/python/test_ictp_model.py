"""The ICTP model on Tessera (include/tessera/ictp.h) against the independent PyTorch
reference of ictp_reference.py, on random-weight models of several configurations, and by
the properties the math guarantees: forces against central differences of the energy,
stress against finite strain, rotation/reflection, translation and permutation invariance,
a periodic cell against its 2x2x2 supercell; and clear errors on malformed models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ictp_reference as ref
import tsr

# Small widths keep the ref backend quick; every structural option is covered.
SMALL = dict(n_hidden_feats=6, n_product_feats=5, radial_MLP=[12, 10], readout_MLP=[7],
             r_cutoff=3.2)
CONFIGS = {
    "nu1_T1": dict(correlation=1, n_interactions=1, l_max_hidden_feats=1, l_max_edge_attrs=2),
    "nu2_T3_sym": dict(correlation=2, n_interactions=3, l_max_hidden_feats=1,
                       l_max_edge_attrs=2),
    "nu3_full": dict(correlation=3, symmetric_product=False),
    "nu4_coupled": dict(correlation=4, coupled_product_feats=True, n_interactions=2),
    "nu3_T3_symbols": dict(correlation=3, n_interactions=3, atomic_types=["H", "C", "O"],
                           n_polynomial_cutoff=6, l_max_hidden_feats=3),
    "Le0": dict(correlation=2, l_max_hidden_feats=0, l_max_edge_attrs=0),
}


def config(name):
    return ref.default_config(**{**SMALL, **CONFIGS[name]})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ictp")
    return {name: ref.random_model(str(d / name), config(name), seed=k)
            for k, name in enumerate(CONFIGS)}


def molecule(seed, n=7):
    rng = np.random.default_rng(seed)
    pos = rng.random((n, 3)) * 3.0
    numbers = rng.choice([1, 6, 8], n)
    return numbers, pos


def crystal(seed, n=4):
    """A small triclinic periodic cell, shorter than the cutoff along some axis."""
    rng = np.random.default_rng(seed)
    cell = np.diag([2.9, 3.4, 3.7]) + 0.3 * rng.random((3, 3))
    pos = rng.random((n, 3)) @ cell
    numbers = rng.choice([1, 6, 8], n)
    return numbers, pos, cell


def assert_rel(got, want, tol, what):
    got, want = np.asarray(got), np.asarray(want)
    scale = max(np.abs(want).max(), 1e-300)
    err = np.abs(got - want).max() / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference_molecule(models, name):
    numbers, pos = molecule(1)
    want = ref.load(models[name]).evaluate(numbers, pos)
    got = tsr.IctpModel(models[name], device="ref").evaluate(tsr.Atoms(numbers, pos))
    assert_rel(got["energy"], want["energy"], 1e-10, name + " energy")
    assert_rel(got["forces"], want["forces"], 1e-10, name + " forces")
    assert_rel(got["energies"], want["energies"], 1e-10, name + " per-atom energies")
    assert abs(got["energies"].sum() - got["energy"]) <= 1e-12 * abs(got["energy"]) + 1e-14


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference_periodic(models, name):
    numbers, pos, cell = crystal(2)
    want = ref.load(models[name]).evaluate(numbers, pos, cell, (True, True, True), stress=True)
    model = tsr.IctpModel(models[name], device="ref")
    got = model.evaluate(tsr.Atoms(numbers, pos, cell, [1, 1, 1]), stress=True)
    assert_rel(got["energy"], want["energy"], 1e-10, name + " energy")
    assert_rel(got["forces"], want["forces"], 1e-10, name + " forces")
    assert_rel(got["stress"], want["stress"], 1e-10, name + " stress")


def test_reference_layout_matches_the_doc():
    """The numbers ictp-checkpoint.md gives for its reference configuration (F = G = 32,
    S = 4, T = 2, Le = 3, Lh = 2, nu = 3, symmetric): 111664 parameters, linear_second
    widths 32 * P with P = [1, 1, 1, 1] and [3, 5, 5, 4], a layer-1 radial output of
    17 * 32, and product paths [4, 3, 5, 3] then [15, 23, 26] in layer 0."""
    cfg = ref.default_config(atomic_types=[1, 6, 7, 8], n_species=4)
    st = ref.random_state(cfg, aliases=False)
    params = sum(v.size for k, v in st.items() if not any(
        w in k for w in ("radial_embedding", "scale_shift", ".eye", "conv_tp.weight")))
    assert params == 111664
    R = "representation.interactions."
    for t, paths in enumerate([[1, 1, 1, 1], [3, 5, 5, 4]]):
        for l, p in enumerate(paths):
            assert st[f"{R}{t}.linear_second.weight.{l}"].shape == (32, 32 * p)
    assert st[R + "1.conv_tp_weights.6.weight"].shape == (17 * 32, 64)
    Q = "representation.products.0.product_basis.blocks."
    assert [st[f"{Q}0.weighted_sum.weight.{l}"].shape[2] for l in range(3)] == [4, 3, 5]
    assert [st[f"{Q}1.weighted_sum.weight.{l}"].shape[2] for l in range(3)] == [15, 23, 26]


def test_published_configuration(tmp_path):
    """F = G = 32, 2 interactions, nu = 3, Le = 3, Lh = 2, symmetric, r_c = 5, radial MLP
    [64, 64, 64], readout [16]: the settings of the published models."""
    cfg = ref.default_config(atomic_types=[1, 6, 7, 8], n_species=4)
    path = ref.random_model(str(tmp_path / "published"), cfg, seed=3)
    numbers, pos, cell = crystal(10, n=6)
    pos = pos * 1.3
    want = ref.load(path).evaluate(numbers, pos, 1.3 * cell, (True, True, True), stress=True)
    got = tsr.IctpModel(path, device="ref").evaluate(
        tsr.Atoms(numbers, pos, 1.3 * cell, [1, 1, 1]), stress=True)
    for k in ("energy", "forces", "stress"):
        assert_rel(got[k], want[k], 1e-10, "published configuration " + k)


def test_published_configuration_cpu_kernels(tmp_path):
    """The published settings on the cpu device (its ICTProduct and SumTo kernels, float32 and
    float64, one and two threads) against the ref device."""
    cfg = ref.default_config(atomic_types=[1, 6, 7, 8], n_species=4)
    path = ref.random_model(str(tmp_path / "published"), cfg, seed=4)
    numbers, pos, cell = crystal(11, n=5)
    atoms = tsr.Atoms(numbers, 1.2 * pos, 1.2 * cell, [1, 1, 1])
    want = tsr.IctpModel(path, device="ref").evaluate(atoms, stress=True)
    for threads in (1, 2):
        got = tsr.IctpModel(path, device="cpu", threads=threads).evaluate(atoms, stress=True)
        f32 = tsr.IctpModel(path, device="cpu", dtype=np.float32, threads=threads).evaluate(
            atoms, stress=True)
        for k in ("energy", "forces", "stress"):
            assert_rel(got[k], want[k], 1e-12, f"cpu float64, {threads} threads, {k}")
            assert_rel(f32[k], want[k], 1e-4, f"cpu float32, {threads} threads, {k}")


def test_mixed_periodicity(models):
    """Periodic along x and z only (a slab), with atoms outside the cell."""
    numbers, pos, cell = crystal(3, n=5)
    pos = pos + np.array([0.0, 4.0, -3.0])
    pbc = (True, False, True)
    path = models["nu3_full"]
    want = ref.load(path).evaluate(numbers, pos, cell, pbc, stress=True)
    got = tsr.IctpModel(path, device="ref").evaluate(tsr.Atoms(numbers, pos, cell, pbc),
                                                     stress=True)
    assert_rel(got["energy"], want["energy"], 1e-10, "energy")
    assert_rel(got["forces"], want["forces"], 1e-10, "forces")
    assert_rel(got["stress"], want["stress"], 1e-10, "stress")


@pytest.mark.parametrize("name", ["nu3_full", "nu2_T3_sym"])
def test_batch_of_structures(models, name):
    """Structures of different sizes (a molecule, two cells, an isolated atom) in one
    evaluation give what each gives alone, and agree with the reference."""
    path = models[name]
    model = tsr.IctpModel(path, device="ref")
    z0, p0 = molecule(30, n=5)
    z1, p1, c1 = crystal(31, n=3)
    z2, p2, c2 = crystal(32, n=6)
    structures = [tsr.Atoms(z1, p1, c1, [1, 1, 1]), tsr.Atoms(z0, p0),
                  tsr.Atoms(z2, p2, c2, [1, 0, 1]), tsr.Atoms([8], [[0.0, 0.0, 0.0]])]
    batch = model.evaluate_batch(structures)
    oracle = ref.load(path)
    wants = [oracle.evaluate(z1, p1, c1, (True, True, True)), oracle.evaluate(z0, p0),
             oracle.evaluate(z2, p2, c2, (True, False, True)),
             oracle.evaluate([8], np.zeros((1, 3)))]
    for k, (atoms, got, want) in enumerate(zip(structures, batch, wants)):
        alone = model.evaluate(atoms)
        for key in ("energy", "forces", "energies"):
            assert_rel(got[key], alone[key], 1e-12, f"structure {k} {key}, batch vs alone")
            assert_rel(got[key], want[key], 1e-10, f"structure {k} {key}, batch vs reference")
    cells = [structures[0], structures[2]]
    stress = model.evaluate_batch(cells, stress=True)
    for got, atoms in zip(stress, cells):
        assert_rel(got["stress"], model.evaluate(atoms, stress=True)["stress"], 1e-12,
                   "batched stress")
    with pytest.raises(tsr.TesseraError, match="structure 1 has none"):
        model.evaluate_batch(structures, stress=True)
    with pytest.raises(tsr.TesseraError, match=r"atom 0 of structure 1 is N"):
        model.evaluate_batch([structures[0], tsr.Atoms([7], [[0.0, 0, 0]])])


@pytest.mark.parametrize("device", [pytest.param("ref", marks=pytest.mark.slow), "cpu"])
def test_size_classes_follow_md(models, device):
    """Padded to capacity classes (the default), structures whose atom and edge counts
    change at every call give exactly what plans at the exact counts give, single and
    batched, stress included, while the plan keeps a few specializations instead of one
    per count (which the exact-size evaluator shows it would need)."""
    path = models["nu3_full"]
    padded = tsr.IctpModel(path, device=device, threads=2)
    exact = tsr.IctpModel(path, device=device, threads=2, exact_sizes=True)
    rng = np.random.default_rng(7)
    for k in range(24):
        if k % 3 == 0:
            numbers, pos, cell = crystal(100 + k, n=int(rng.integers(2, 6)))
            atoms = tsr.Atoms(numbers, pos, cell, [1, 1, 1])
        else:
            numbers, pos = molecule(100 + k, n=int(rng.integers(3, 12)))
            atoms, cell = tsr.Atoms(numbers, pos), None
        got = padded.evaluate(atoms, stress=cell is not None)
        want = exact.evaluate(atoms, stress=cell is not None)
        for key in want:
            assert_rel(got[key], want[key], 1e-12, f"structure {k} {key}, padded vs exact")
    z0, p0 = molecule(200, n=9)
    z1, p1, c1 = crystal(201, n=5)
    batch = [tsr.Atoms(z0, p0), tsr.Atoms(z1, p1, c1, [1, 1, 1])]
    for got, want in zip(padded.evaluate_batch(batch), exact.evaluate_batch(batch)):
        for key in want:
            assert_rel(got[key], want[key], 1e-12, f"batched {key}, padded vs exact")
    # An MD-like run: one cell, its atoms rattled at every step, so the edge count moves.
    padded = tsr.IctpModel(path, device=device, threads=2)
    exact = tsr.IctpModel(path, device=device, threads=2, exact_sizes=True)
    numbers, pos, cell = crystal(300, n=5)
    for k in range(16):
        atoms = tsr.Atoms(numbers, pos + 0.25 * rng.standard_normal(pos.shape), cell, [1, 1, 1])
        got, want = padded.evaluate(atoms), exact.evaluate(atoms)
        for key in want:
            assert_rel(got[key], want[key], 1e-12, f"MD step {k} {key}, padded vs exact")
    assert padded.cached_specs() <= 3, f"{padded.cached_specs()} specializations for 16 steps"
    assert exact.cached_specs() >= 6, "the steps should need many exact sizes"


def test_float32_and_cpu_device(models):
    numbers, pos, cell = crystal(4)
    path = models["nu3_full"]
    atoms = tsr.Atoms(numbers, pos, cell, [1, 1, 1])
    want = tsr.IctpModel(path, device="ref").evaluate(atoms, stress=True)
    cpu = tsr.IctpModel(path, device="cpu", dtype=np.float64, threads=2).evaluate(atoms,
                                                                                  stress=True)
    for k in ("energy", "forces", "stress"):
        assert_rel(cpu[k], want[k], 1e-12, "cpu float64 " + k)
    f32 = tsr.IctpModel(path, dtype=np.float32).evaluate(atoms, stress=True)
    for k in ("energy", "forces", "stress"):
        assert_rel(f32[k], want[k], 1e-4, "float32 " + k)


def test_forces_are_minus_central_differences(models):
    numbers, pos, cell = crystal(5)
    model = tsr.IctpModel(models["nu4_coupled"], device="ref")

    def energy(p):
        return model.evaluate(tsr.Atoms(numbers, p, cell, [1, 1, 1]))["energy"]
    forces = model.evaluate(tsr.Atoms(numbers, pos, cell, [1, 1, 1]))["forces"]
    h = 1e-5
    fd = np.zeros_like(pos)
    for a in range(len(pos)):
        for k in range(3):
            d = np.zeros_like(pos)
            d[a, k] = h
            fd[a, k] = -(energy(pos + d) - energy(pos - d)) / (2 * h)
    assert_rel(forces, fd, 1e-7, "forces vs central differences")


def test_stress_against_finite_strain(models):
    numbers, pos, cell = crystal(6)
    model = tsr.IctpModel(models["nu3_full"], device="ref")
    stress = model.evaluate(tsr.Atoms(numbers, pos, cell, [1, 1, 1]), stress=True)["stress"]
    vol = abs(np.linalg.det(cell))
    h = 1e-5
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = h / 2 if i != j else h
            e = []
            for sgn in (1, -1):
                m = np.eye(3) + sgn * eps
                e.append(model.evaluate(tsr.Atoms(numbers, pos @ m, cell @ m, [1, 1, 1]))["energy"])
            fd[i, j] = (e[0] - e[1]) / (2 * h) / vol
    assert_rel(stress, fd, 1e-7, "stress vs finite strain")
    assert np.allclose(stress, stress.T, rtol=0, atol=1e-14)


@pytest.mark.parametrize("periodic", [False, True])
def test_rotation_translation_permutation(models, periodic):
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    q[:, 0] *= -1 if np.linalg.det(q) > 0 else 1  # include a reflection
    model = tsr.IctpModel(models["nu3_T3_symbols"], device="ref")
    if periodic:
        numbers, pos, cell = crystal(8)
        pbc = [1, 1, 1]
    else:
        (numbers, pos), cell, pbc = molecule(8), None, None
    base = model.evaluate(tsr.Atoms(numbers, pos, cell, pbc))
    rot = model.evaluate(tsr.Atoms(numbers, pos @ q.T + np.array([0.3, -1.2, 2.5]),
                                   None if cell is None else cell @ q.T, pbc))
    assert_rel(rot["energy"], base["energy"], 1e-12, "energy under rotation + translation")
    assert_rel(rot["forces"], base["forces"] @ q.T, 1e-12, "forces rotate with the structure")
    perm = rng.permutation(len(numbers))
    per = model.evaluate(tsr.Atoms(numbers[perm], pos[perm], cell, pbc))
    assert_rel(per["energy"], base["energy"], 1e-12, "energy under permutation")
    assert_rel(per["forces"], base["forces"][perm], 1e-12, "forces under permutation")
    assert_rel(per["energies"], base["energies"][perm], 1e-12, "per-atom energies")


def test_supercell_energy_is_eight_times(models):
    """A cell shorter than the cutoff (self-images) against its 2x2x2 supercell."""
    numbers, pos, cell = crystal(9, n=3)
    model = tsr.IctpModel(models["nu2_T3_sym"], device="ref")
    small = model.evaluate(tsr.Atoms(numbers, pos, cell, [1, 1, 1]), stress=True)
    shifts = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])
    big_pos = np.concatenate([pos + s @ cell for s in shifts])
    big = model.evaluate(tsr.Atoms(np.tile(numbers, 8), big_pos, 2 * cell, [1, 1, 1]),
                         stress=True)
    assert_rel(big["energy"], 8 * small["energy"], 1e-12, "supercell energy")
    assert_rel(big["forces"], np.tile(small["forces"], (8, 1)), 1e-11, "supercell forces")
    assert_rel(big["stress"], small["stress"], 1e-11, "supercell stress")


def test_isolated_atom_has_only_its_shift(models):
    path = models["nu3_full"]
    got = tsr.IctpModel(path, device="ref").evaluate(tsr.Atoms([6], [[0.0, 0.0, 0.0]]))
    want = ref.load(path).evaluate([6], np.zeros((1, 3)))
    assert_rel(got["energy"], want["energy"], 1e-12, "isolated atom")
    assert np.all(got["forces"] == 0)


def test_atomic_types_null(tmp_path):
    """atomic_types null: the species index is Z itself, S = n_species = 119."""
    cfg = ref.default_config(**{**SMALL, **CONFIGS["nu2_T3_sym"]}, atomic_types=None,
                             n_species=119)
    path = ref.random_model(str(tmp_path / "z"), cfg, seed=14)
    numbers, pos = molecule(15)
    numbers[0] = 92  # uranium: any Z up to 118 is a species
    want = ref.load(path).evaluate(numbers, pos)
    got = tsr.IctpModel(path, device="ref").evaluate(tsr.Atoms(numbers, pos))
    assert_rel(got["energy"], want["energy"], 1e-10, "energy")
    assert_rel(got["forces"], want["forces"], 1e-10, "forces")


def test_aliases_only(tmp_path):
    """A state_dict that holds only the `.blocks.<l>.weight` aliases loads the same."""
    cfg = config("nu3_full")
    st = ref.random_state(cfg, seed=11)
    aliased = {k for k in st if ".blocks." in k and k.endswith(".weight")}
    only = {k: v for k, v in st.items()
            if not any(a == k.replace(".weight.", ".blocks.", 1) + ".weight" for a in aliased)}
    assert len(only) < len(st)
    np.savez(tmp_path / "a.npz", **only)
    np.savez(tmp_path / "b.npz", **st)
    for stem in ("a", "b"):
        (tmp_path / (stem + ".json")).write_text(json.dumps({"config": cfg}))
    numbers, pos = molecule(12)
    ea = tsr.IctpModel(tmp_path / "a.npz", device="ref").evaluate(tsr.Atoms(numbers, pos))
    eb = tsr.IctpModel(tmp_path / "b.npz", device="ref").evaluate(tsr.Atoms(numbers, pos))
    assert ea["energy"] == eb["energy"]


def test_float32_checkpoint_loads(tmp_path):
    cfg = config("nu2_T3_sym")
    path = ref.random_model(str(tmp_path / "m32"), cfg, seed=5, dtype=np.float32)
    numbers, pos = molecule(13)
    want = ref.load(path).evaluate(numbers, pos)
    got = tsr.IctpModel(path, device="ref").evaluate(tsr.Atoms(numbers, pos))
    assert_rel(got["energy"], want["energy"], 1e-10, "float32 weights, float64 evaluation")


# ------------------------------------------------------------------- errors


def write_model(tmp_path, cfg, state, name="m"):
    np.savez(tmp_path / (name + ".npz"), **state)
    (tmp_path / (name + ".json")).write_text(json.dumps({"config": cfg}))
    return tmp_path / (name + ".npz")


def load_error(path):
    with pytest.raises(tsr.TesseraError) as e:
        tsr.IctpModel(path, device="ref")
    return str(e.value)


def test_missing_key_is_named(tmp_path):
    cfg = config("nu3_full")
    st = ref.random_state(cfg, aliases=False)
    del st["representation.interactions.1.linear_second.weight.2"]
    msg = load_error(write_model(tmp_path, cfg, st))
    assert "missing key 'representation.interactions.1.linear_second.weight.2'" in msg
    assert "blocks.2.weight" in msg  # the alias it also looked for


def test_wrong_shape_is_named(tmp_path):
    cfg = config("nu3_full")
    st = ref.random_state(cfg, aliases=False)
    key = "representation.products.0.product_basis.blocks.1.weighted_sum.weight.1"
    st[key] = st[key][:, :, :-1]
    msg = load_error(write_model(tmp_path, cfg, st))
    assert key in msg and "shape" in msg


@pytest.mark.parametrize("key,value,words", [
    ("correlation", 0, "correlation"),
    ("l_max_edge_attrs", 4, "l_max_edge_attrs"),
    ("symmetric_product", "yes", "symmetric_product"),
    ("atomic_types", ["H", "Qq"], "atomic_types"),
    ("default_dtype", "float16", "default_dtype"),
    ("radial_MLP", [64, -1], "radial_MLP"),
])
def test_bad_config_value_is_named(tmp_path, key, value, words):
    cfg = config("nu3_full")
    st = ref.random_state(cfg)
    cfg[key] = value
    assert words in load_error(write_model(tmp_path, cfg, st))


def test_missing_config_key_and_bad_json(tmp_path):
    cfg = config("nu3_full")
    st = ref.random_state(cfg)
    del cfg["avg_n_neighbors"]
    assert "'avg_n_neighbors'" in load_error(write_model(tmp_path, cfg, st))
    path = write_model(tmp_path, config("nu3_full"), st, "j")
    (tmp_path / "j.json").write_text('{"config": {"r_cutoff": 5.0,\n "n_basis": 8,,}}')
    msg = load_error(path)
    assert "j.json:2" in msg
    os.remove(tmp_path / "j.json")
    assert "j.json" in load_error(path)


def test_unknown_species_and_stress_without_cell(models):
    model = tsr.IctpModel(models["nu3_full"], device="ref")
    with pytest.raises(tsr.TesseraError, match=r"atom 1 is N \(Z = 7\)"):
        model.evaluate(tsr.Atoms([1, 7], [[0, 0, 0], [1.0, 0, 0]]))
    with pytest.raises(tsr.TesseraError, match="stress needs a cell"):
        model.evaluate(tsr.Atoms([1, 6], [[0, 0, 0], [1.0, 0, 0]]), stress=True)


# ---------------------------------------------------------------------- CLI


def tessera_bin():
    build = os.environ.get("TESSERA_BUILD_DIR", os.path.join(tsr.ROOT, "build"))
    return os.environ.get("TESSERA_BIN", os.path.join(build, "bin", "tessera"))


def run_cli(*args):
    return subprocess.run([tessera_bin(), "ictp", *map(str, args)], capture_output=True,
                          text=True)


def test_cli_eval_writes_energy_forces_stress(models, tmp_path):
    path = models["nu3_full"]
    frames = [crystal(20, n=3), crystal(21, n=5)]
    tsr.write_extxyz(tmp_path / "in.extxyz",
                     [tsr.Atoms(z, p, c, [1, 1, 1]) for z, p, c in frames])
    before = (tmp_path / "in.extxyz").read_bytes()
    r = run_cli("eval", path, tmp_path / "in.extxyz", "--stress", "--device", "ref",
                "--threads", 1, "--output", tmp_path / "out.extxyz", "--json")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    out = tsr.read_extxyz(tmp_path / "out.extxyz")
    assert (tmp_path / "in.extxyz").read_bytes() == before
    model = ref.load(path)
    for k, (z, p, c) in enumerate(frames):
        want = model.evaluate(z, p, c, (True, True, True), stress=True)
        assert_rel(printed[k]["energy"], want["energy"], 1e-10, "printed energy")
        assert_rel(printed[k]["forces"], want["forces"], 1e-10, "printed forces")
        assert_rel(np.array(printed[k]["stress"]), want["stress"], 1e-10, "printed stress")
        assert_rel(out[k].info()["energy"][0, 0], want["energy"], 1e-10, "written energy")
        assert_rel(out[k].arrays()["forces"], want["forces"], 1e-10, "written forces")
        assert_rel(out[k].info()["stress"].reshape(3, 3), want["stress"], 1e-10, "written stress")
    f32 = run_cli("eval", path, tmp_path / "in.extxyz", "--dtype", "float32", "--json")
    assert f32.returncode == 0, f32.stderr
    assert_rel(json.loads(f32.stdout)[1]["energy"], printed[1]["energy"], 1e-4, "float32")


def test_cli_eval_errors_write_nothing(models, tmp_path):
    path = models["nu3_full"]
    tsr.write_extxyz(tmp_path / "mol.extxyz", [tsr.Atoms(*molecule(22))])
    r = run_cli("eval", path, tmp_path / "mol.extxyz", "--stress", "--output",
                tmp_path / "o.extxyz")
    assert r.returncode == 1 and "frame 0" in r.stderr and "stress needs a cell" in r.stderr
    assert not (tmp_path / "o.extxyz").exists()
    r = run_cli("eval", path, tmp_path / "mol.extxyz", "--output", tmp_path / "mol.extxyz")
    assert r.returncode == 2 and "never overwritten" in r.stderr
    r = run_cli("eval", path, tmp_path / "mol.extxyz", "--dtype", "float16")
    assert r.returncode == 2 and "float16" in r.stderr
    r = run_cli("eval", tmp_path / "none.npz", tmp_path / "mol.extxyz")
    assert r.returncode == 1 and "none.json" in r.stderr


# ---------------------------------------------------------------- converter


def make_checkpoint(folder, cfg, state, parameters=True):
    """An authors'-style checkpoint folder: config.yaml and a plain pickle (protocol 3) of
    the state_dict, tensors embedding legacy torch storages."""
    import collections
    import pickle

    import torch
    import yaml
    os.makedirs(folder, exist_ok=True)
    sd = collections.OrderedDict()
    for k, v in state.items():
        t = torch.tensor(v)
        sd[k] = torch.nn.Parameter(t) if parameters and "weight" in k else t
    with open(os.path.join(folder, "params.pkl"), "wb") as f:
        pickle.dump(sd, f, protocol=3)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump({**cfg, "lr": 0.01, "ema": True, "batch_size": 5}, f)


def run_convert(*args):
    env = {**os.environ, "PYTHONPATH": os.path.join(tsr.ROOT, "python")}
    return subprocess.run([sys.executable, "-m", "tessera.ictp.convert", *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_convert_checkpoint(tmp_path):
    cfg = config("nu3_full")
    st = ref.random_state(cfg, seed=40)
    run = tmp_path / "run"
    make_checkpoint(run / "best" / "ckpt_12", cfg, st)
    make_checkpoint(run / "best" / "ckpt_9", cfg, ref.random_state(cfg, seed=41))
    make_checkpoint(run / "logs" / "ckpt_30", cfg, ref.random_state(cfg, seed=42))
    r = run_convert(run, "-o", tmp_path / "model.npz")
    assert r.returncode == 0, r.stderr
    assert "ckpt_12" in r.stdout  # best/ first, highest epoch
    saved = json.loads((tmp_path / "model.json").read_text())
    assert saved["config"]["lr"] == 0.01 and saved["config"]["correlation"] == 3
    numbers, pos, cell = crystal(43)
    want = ref.Model(cfg, st).evaluate(numbers, pos, cell, (True, True, True), stress=True)
    got = tsr.IctpModel(tmp_path / "model.npz", device="ref").evaluate(
        tsr.Atoms(numbers, pos, cell, [1, 1, 1]), stress=True)
    for k in ("energy", "forces", "stress"):
        assert_rel(got[k], want[k], 1e-10, "converted model " + k)
    # A float32 checkpoint stays float32; a checkpoint folder can be named directly.
    st32 = {k: np.asarray(v, dtype=np.float32) for k, v in st.items()}
    make_checkpoint(tmp_path / "ckpt_3", cfg, st32, parameters=False)
    r = run_convert(tmp_path / "ckpt_3", "-o", tmp_path / "m32.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "m32.npz") as z:
        assert z["representation.node_embedding.weight.0"].dtype == np.float32


def test_convert_errors(tmp_path):
    cfg = config("nu3_full")
    st = ref.random_state(cfg, seed=44)
    make_checkpoint(tmp_path / "ck", cfg, st)
    (tmp_path / "out.npz").write_bytes(b"keep")
    r = run_convert(tmp_path / "ck", "-o", tmp_path / "out.npz")
    assert r.returncode == 1 and "exists" in r.stderr
    assert (tmp_path / "out.npz").read_bytes() == b"keep"
    r = run_convert(tmp_path / "nothing", "-o", tmp_path / "x.npz")
    assert r.returncode == 1 and "not a directory" in r.stderr
    os.makedirs(tmp_path / "empty")
    r = run_convert(tmp_path / "empty", "-o", tmp_path / "x.npz")
    assert r.returncode == 1 and "no params.pkl" in r.stderr

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    import pickle
    os.makedirs(tmp_path / "evil")
    (tmp_path / "evil" / "config.yaml").write_text("r_cutoff: 5.0\n")
    with open(tmp_path / "evil" / "params.pkl", "wb") as f:
        pickle.dump({"a": Evil()}, f, protocol=3)
    r = run_convert(tmp_path / "evil", "-o", tmp_path / "x.npz")
    assert r.returncode == 1 and "refusing to unpickle" in r.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "x.npz").exists()


def test_cli_bench(models, tmp_path):
    path = models["nu3_full"]
    z, p, c = crystal(50)
    atoms = tsr.Atoms(z, p, c, [1, 1, 1])
    tsr.write_atoms_npz(tmp_path / "s.npz", [atoms])
    r = run_cli("bench", path, tmp_path / "s.npz", "--iters", 2, "--stress", "--device", "ref",
                "--threads", 1)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(": ", 1) for line in r.stdout.strip().splitlines())
    energy = tsr.IctpModel(path, device="ref").evaluate(atoms)["energy"]
    assert_rel(float(fields["energy"]), energy, 1e-14, "bench energy")
    mean = float(fields["ms per evaluation"].split()[0])
    assert 0 < float(fields["fastest evaluation"].split()[0]) <= mean
    assert float(fields["atom-steps per second"]) > 0
    assert float(fields["peak resident memory"].split()[0]) > 0
    r = run_cli("bench", path, tmp_path / "s.npz", "--iters", 2, "--radial-table", 1024)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(": ", 1) for line in r.stdout.strip().splitlines())
    assert "radial table of 1024 intervals" in fields["ms per evaluation"]
    table = tsr.IctpModel(path, radial_table=1024).evaluate(atoms)["energy"]
    assert_rel(float(fields["energy"]), table, 1e-12, "bench energy with a radial table")
    r = run_cli("bench", path, tmp_path / "s.npz", "--iters", 0)
    assert r.returncode == 2 and "--iters" in r.stderr
    r = run_cli("eval", path, tmp_path / "s.npz", "--radial-table", 8)
    assert r.returncode == 2 and "--radial-table" in r.stderr
    r = run_cli("frobnicate")
    assert r.returncode == 2 and "available: eval, bench" in r.stderr

"""Training ICTP models (issue 12 item 2): the training graph (every weight a
parameter, tsr_ictp_model_training_graph) computes what the inference graph
computes, and the gradient of the published loss,
    w_E (ΔE/N)^2 + w_F Σ |ΔF|^2,
whose force term goes through a second derivative (forces by
tsr_graph_gradient, then the loss's gradient with respect to the weights),
agrees with central finite differences of that loss (float64)."""

import ctypes as C
import json
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

import ictp_reference as ref
import tsr

CFG = dict(n_hidden_feats=4, n_product_feats=3, radial_MLP=[6], readout_MLP=[5], r_cutoff=3.0,
           correlation=3, n_interactions=2, l_max_hidden_feats=2, l_max_edge_attrs=2)
W_E, W_F = 1.0, 10.0


def graph_of(path, trainable):
    L = tsr.lib()
    m, g = C.c_void_p(), C.c_void_p()
    tsr.check(L.tsr_ictp_model_load(str(path).encode(), C.byref(m)))
    try:
        fn = L.tsr_ictp_model_training_graph if trainable else L.tsr_ictp_model_graph
        tsr.check(fn(m, 11, C.byref(g)))  # 11: TSR_FLOAT64
    finally:
        L.tsr_ictp_model_destroy(m)
    return tsr.Graph(g.value)


def molecule(seed=3, n=6):
    rng = np.random.default_rng(seed)
    pos = rng.random((n, 3)) * 2.5
    numbers = rng.choice([1, 6, 8], n)
    types = [1, 6, 8]
    species = np.array([types.index(z) for z in numbers], dtype=np.int64)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    recv, send = np.nonzero((d < CFG["r_cutoff"]) & ~np.eye(n, dtype=bool))
    return pos, species, recv.astype(np.int64), send.astype(np.int64)


def inputs(pos, species, recv, send):
    """The graph's inputs, each edge its own radial row."""
    n, ne = len(pos), len(recv)
    return [pos, species, np.zeros(n, np.int64), recv, send, np.zeros((ne, 3)),
            np.zeros((1, 3, 3)), np.arange(ne), np.arange(ne)]


def loss_graph(path):
    """The training graph, its forces, and the loss of one structure."""
    g = graph_of(path, True).gradient(["energy"], ["positions"])
    g.add_input("energy_ref", np.float64, [1])
    g.add_input("forces_ref", np.float64, [-1, 3])
    g.add_input("inv_atoms", np.float64, [1])
    g.add_constant("w_e", np.array([W_E]))
    g.add_constant("w_f", np.array([W_F]))
    g.add_node("Sub", ["energy", "energy_ref"], ["de"])
    g.add_node("Mul", ["de", "inv_atoms"], ["de_n"])
    g.add_node("Mul", ["de_n", "de_n"], ["de2"])
    g.add_node("ReduceSum", ["de2"], ["le"], {"keepdims": 0})
    # F = -grad, so ΔF = -(grad + F_ref).
    g.add_node("Add", ["positions__grad", "forces_ref"], ["df"])
    g.add_node("Mul", ["df", "df"], ["df2"])
    g.add_node("ReduceSum", ["df2"], ["lf"], {"keepdims": 0})
    g.add_node("Mul", ["le", "w_e"], ["le_w"])
    g.add_node("Mul", ["lf", "w_f"], ["lf_w"])
    g.add_node("Add", ["le_w", "lf_w"], ["loss"])
    g.add_output("loss")
    return g


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ictp_train")
    cfg = ref.default_config(**CFG)
    return ref.random_model(str(d / "m"), cfg, seed=5, aliases=False)


def test_training_graph_matches_inference_graph(model):
    x = inputs(*molecule())
    e_inf = tsr.Plan(graph_of(model, False), device="ref").run(x)
    e_tr = tsr.Plan(graph_of(model, True), device="ref").run(x)
    np.testing.assert_array_equal(e_tr[0], e_inf[0])
    np.testing.assert_array_equal(e_tr[1], e_inf[1])


def test_force_loss_gradient_against_finite_differences(model, tmp_path):
    mol = molecule()
    rng = np.random.default_rng(0)
    e_ref = np.array([0.3])
    f_ref = rng.normal(size=(len(mol[0]), 3))
    extra = [np.ones(1), e_ref, f_ref, np.array([1.0 / len(mol[0])])]
    state = dict(np.load(model))
    keys = ["representation.interactions.1.conv_tp_weights.0.weight",
            "representation.products.0.product_basis.blocks.0.weighted_sum.weight.1",
            "representation.interactions.0.skip_tp.weight.0",
            "readouts.1.2.weight"]
    g = loss_graph(model)
    grad = tsr.Plan(g.gradient(["loss"], keys), device="ref").run(
        inputs(*mol) + extra + [np.ones(1)])
    n_fwd = 4  # energy, energies, positions__grad, loss

    def loss_with(key, index, delta):
        st = dict(state)
        w = st[key].copy()
        w[index] += delta
        st[key] = w
        stem = str(tmp_path / "p")
        np.savez(stem + ".npz", **st)
        with open(stem + ".json", "w") as f, open(model[:-4] + ".json") as src:
            f.write(src.read())
        return tsr.Plan(loss_graph(stem + ".npz"), device="ref").run(inputs(*mol) + extra)[3]

    h = 1e-5
    for k, key in enumerate(keys):
        g_key = grad[n_fwd + k]
        assert g_key.shape == state[key].shape
        for _ in range(2):
            index = tuple(int(rng.integers(s)) for s in state[key].shape)
            fd = (loss_with(key, index, h) - loss_with(key, index, -h)) / (2 * h)
            assert abs(fd - g_key[index]) <= 1e-6 * max(1.0, abs(fd)), (key, index, fd,
                                                                         g_key[index])


def loss_model(path):
    """The published loss as a sum of squares of the output [atoms, 4] against
    its target: columns 0-2 √w_F F, column 3 √w_E E_b / N_b^1.5 (summed over
    the N_b atoms of structure b this gives w_E (ΔE_b / N_b)^2)."""
    g = graph_of(path, True).gradient(["energy"], ["positions"])
    g.add_input("energy_weight", np.float64, [-1])
    g.add_constant("force_scale", np.array([-np.sqrt(W_F)]))
    g.add_constant("column", np.array([-1, 1], np.int64))
    g.add_constant("rows3", np.array([-1, 3], np.int64))
    g.add_node("Gather", ["energy", "batch"], ["e_atoms"], {"axis": 0})
    g.add_node("Mul", ["e_atoms", "energy_weight"], ["e_w"])
    g.add_node("Reshape", ["e_w", "column"], ["e_col"])
    g.add_node("Mul", ["positions__grad", "force_scale"], ["f_any"])
    g.add_node("Reshape", ["f_any", "rows3"], ["f_w"])  # static sizes for Concat's gradient
    g.add_node("Concat", ["f_w", "e_col"], ["pred"], {"axis": 1})
    g.add_output("pred")
    return g


def test_trainer_fits_energies_and_forces(model, tmp_path):
    """tsr_trainer (Adam with AMSGrad, EMA) trains the ICTP training graph on
    the published loss; the labels come from another random model."""
    teacher = tsr.Plan(graph_of(ref.random_model(str(tmp_path / "t"), ref.default_config(**CFG),
                                                 seed=9, aliases=False), False)
                       .gradient(["energy"], ["positions"]), device="ref")
    trainer = tsr.Trainer(loss_model(model), loss={"kind": "mse", "reduction": "sum",
                                                   "output": "pred"},
                          optimizer={"kind": "adam", "lr": 0.01, "amsgrad": 1,
                                     "ema_decay": 0.99}, seed=1)
    data = []
    for k in range(3):
        mol = molecule(seed=10 + k)
        n = len(mol[0])
        x = inputs(*mol) + [np.ones(1)]
        e, _, grad = teacher.run(x)
        w = np.full(n, np.sqrt(W_E) / n ** 1.5)
        target = np.concatenate([-np.sqrt(W_F) * grad, (e[0] * w)[:, None]], axis=1)
        data.append((x + [w], target))
    losses = [sum(trainer.step(x, t) for x, t in data) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------- tessera ictp train / test

def cli_command(*args):
    build = os.environ.get("TESSERA_BUILD_DIR", os.path.join(tsr.ROOT, "build"))
    exe = os.environ.get("TESSERA_BIN", os.path.join(build, "bin", "tessera"))
    return [exe, "ictp", *map(str, args)]


def run_cli(*args):
    return subprocess.run(cli_command(*args), capture_output=True, text=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory, model):
    """Molecules labelled by a random teacher model through `ictp eval --output`,
    and a configuration for the student."""
    d = tmp_path_factory.mktemp("ictp_data")
    teacher = ref.random_model(str(d / "teacher"), ref.default_config(**CFG), seed=9)
    for name, seeds in (("train", range(20, 28)), ("valid", range(40, 43))):
        frames = []
        for s in seeds:
            pos, species, _, _ = molecule(seed=s, n=5 + s % 3)
            frames.append(tsr.Atoms(np.array([1, 6, 8])[species], pos))
        tsr.write_extxyz(d / f"{name}_in.extxyz", frames)
        r = run_cli("eval", teacher, d / f"{name}_in.extxyz", "--threads", 1, "--output",
                    d / f"{name}.extxyz")
        assert r.returncode == 0, r.stderr
    with open(d / "config.json", "w") as f:
        json.dump({"config": ref.default_config(**CFG)}, f)
    return d


def train_args(data, out, *extra):
    return ["train", data / "train.extxyz", "--valid", data / "valid.extxyz", "--config",
            data / "config.json", "--out", out, "--threads", 1, "--batch-size", 3, "--seed", 7,
            *extra]


def train(data, out, *extra):
    return run_cli(*train_args(data, out, *extra))


def csv_rows(path):
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("epoch,lr,train_loss,energy_mae")
    return [line.split(",")[:-1] for line in lines[1:]]  # without the time


def test_cli_train_loss_falls_and_test_matches_validation(data, tmp_path):
    r = train(data, tmp_path / "m.npz", "--epochs", 6, "--log", tmp_path / "log.csv")
    assert r.returncode == 0, r.stderr
    rows = csv_rows(tmp_path / "log.csv")
    assert len(rows) == 6
    assert float(rows[-1][2]) < float(rows[0][2])
    assert "validation: energy MAE" in r.stderr
    best = min(rows, key=lambda row: W_E * float(row[4]) ** 2 + 3 * W_F * float(row[6]) ** 2)
    t = run_cli("test", tmp_path / "m.npz", data / "valid.extxyz", "--threads", 1)
    assert t.returncode == 0, t.stderr
    got = [float(x) for x in t.stdout.split() if x.replace(".", "").isdigit() and "." in x]
    assert np.allclose(got, [float(x) for x in best[3:7]], atol=2e-3), (t.stdout, best)
    cfg = json.load(open(tmp_path / "m.json"))["config"]
    assert cfg["avg_n_neighbors"] > 1
    if shutil.which("gnuplot"):  # the curves, beside --out by default
        assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "gnuplot" in r.stderr


def test_cli_resume_is_bit_identical(data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    r = train(data, a / "m.npz", "--epochs", 3, "--log", a / "log.csv", "--checkpoint",
              a / "ckpt")
    assert r.returncode == 0, r.stderr
    r = train(data, b / "m.npz", "--epochs", 2, "--log", b / "log.csv", "--checkpoint",
              b / "ckpt")
    assert r.returncode == 0, r.stderr
    with open(b / "log.csv", "a") as f:  # a row logged after the checkpoint, then a crash
        f.write("3,0.01,99,9,9,9,9,1\n")
    r = train(data, b / "m.npz", "--epochs", 3, "--log", b / "log.csv", "--checkpoint",
              b / "ckpt")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert csv_rows(a / "log.csv") == csv_rows(b / "log.csv")
    ma, mb = np.load(a / "m.npz"), np.load(b / "m.npz")
    for k in ma.files:
        np.testing.assert_array_equal(ma[k], mb[k])


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_cli_signal_stops_after_the_epoch(data, tmp_path, sig):
    """The first SIGINT or SIGTERM ends the run after the epoch in progress, with that
    epoch's log row, best model and checkpoint written; the same command resumes there."""
    log, ckpt = tmp_path / "log.csv", tmp_path / "ckpt"
    args = train_args(data, tmp_path / "m.npz", "--epochs", 10**6, "--log", log,
                      "--checkpoint", ckpt, "--no-plot")
    p = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    assert "stopping after this epoch" in err, err
    m = re.search(rf"stopped by {sig} after epoch (\d+); the best model so far is ", err)
    assert m and str(ckpt) in err, err
    n = int(m.group(1))
    assert len(csv_rows(log)) == n and (tmp_path / "m.npz").exists()
    r = train(data, tmp_path / "m.npz", "--epochs", n + 1, "--log", log, "--checkpoint", ckpt,
              "--no-plot")
    assert r.returncode == 0, r.stderr
    assert f"resuming {ckpt} at epoch {n}" in r.stderr
    assert [int(row[0]) for row in csv_rows(log)] == list(range(1, n + 2))


def test_cli_corrupt_checkpoint_and_data(data, tmp_path):
    r = train(data, tmp_path / "m.npz", "--epochs", 1, "--checkpoint", tmp_path / "ckpt")
    assert r.returncode == 0, r.stderr
    blob = (tmp_path / "ckpt").read_bytes()
    (tmp_path / "ckpt").write_bytes(blob[: len(blob) // 2])
    r = train(data, tmp_path / "m.npz", "--epochs", 2, "--checkpoint", tmp_path / "ckpt")
    assert r.returncode == 1 and "ckpt" in r.stderr, r.stderr
    (tmp_path / "ckpt.loop").write_text("garbage\n")
    r = train(data, tmp_path / "m.npz", "--epochs", 2, "--checkpoint", tmp_path / "ckpt")
    assert r.returncode == 1 and "not a training loop state" in r.stderr, r.stderr
    r = run_cli("train", data / "train_in.extxyz", "--valid", data / "valid.extxyz", "--config",
                data / "config.json", "--out", tmp_path / "x.npz")
    assert r.returncode == 1 and "frame 0 has no energy or no forces" in r.stderr, r.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.fixture(scope="module")
def bulk(tmp_path_factory):
    """Periodic cells labelled with energy, forces and stress by a random
    teacher (`ictp eval --stress --output`), the stress given as a virial in
    one frame."""
    d = tmp_path_factory.mktemp("ictp_bulk")
    teacher = ref.random_model(str(d / "teacher"), ref.default_config(**CFG), seed=9)
    rng = np.random.default_rng(4)
    frames = []
    for k in range(4):
        cell = np.diag([4.0, 4.2, 3.8]) + rng.normal(scale=0.2, size=(3, 3))
        n = 5 + k % 2
        frames.append(tsr.Atoms(rng.choice([1, 6, 8], n), rng.random((n, 3)) @ cell, cell,
                                [True] * 3))
    tsr.write_extxyz(d / "in.extxyz", frames)
    r = run_cli("eval", teacher, d / "in.extxyz", "--stress", "--threads", 1, "--output",
                d / "labelled.extxyz")
    assert r.returncode == 0, r.stderr
    frames = tsr.read_extxyz(d / "labelled.extxyz")
    s = frames[1].info()["stress"].reshape(3, 3)
    c, _ = frames[1].cell()
    frames[1].set_value("info", "virial", -abs(np.linalg.det(c)) * s)
    lib = tsr.lib()
    tsr.check(lib.tsr_atoms_remove_info(frames[1].handle, b"stress"))
    tsr.write_extxyz(d / "train.extxyz", frames)
    with open(d / "config.json", "w") as f:
        json.dump({"config": ref.default_config(**CFG)}, f)
    return d, frames


@pytest.mark.parametrize("w_s", [0.0, 300.0])
def test_cli_stress_term_is_the_published_loss(bulk, tmp_path, w_s):
    """With a learning rate of 1e-12 the first epoch's training loss is the
    loss of the initial weights (the saved model): recomputed here from that
    model's energies, forces and stresses (tessera.ictp.Calculator), it
    checks the stress term's weight, volume, symmetrization and sign, and
    that a virial counts as −V·stress."""
    from ase import Atoms as AseAtoms
    import tessera.ictp

    d, frames = bulk
    r = run_cli("train", d / "train.extxyz", "--valid", d / "train.extxyz", "--config",
                d / "config.json", "--out", tmp_path / "m.npz", "--threads", 1, "--batch-size", 2,
                "--epochs", 1, "--lr", 1e-12, "--stress-weight", w_s, "--no-plot")
    assert r.returncode == 0, r.stderr
    assert ("stress MAE" in r.stderr) == (w_s > 0)  # validated only with the term
    row = open(tmp_path / "m.csv").read().splitlines()[1].split(",")
    calc = tessera.ictp.Calculator(str(tmp_path / "m.npz"), threads=1)
    loss = s_abs = 0.0
    for fr in frames:
        cell, _ = fr.cell()
        info = fr.info()
        ref_s = (info["stress"].reshape(3, 3) if "stress" in info
                 else -info["virial"].reshape(3, 3) / abs(np.linalg.det(cell)))
        at = AseAtoms(numbers=fr.numbers, positions=fr.positions, cell=cell, pbc=True)
        at.calc = calc
        n = len(fr)
        de = (at.get_potential_energy() - info["energy"][0]) / n
        df = at.get_forces() - fr.arrays()["forces"]
        ds = at.get_stress(voigt=False) - ref_s
        loss += W_E * de ** 2 + W_F * np.sum(df ** 2) + w_s * np.sum(ds ** 2)
        s_abs += np.abs(ds).sum()
    assert float(row[2]) == pytest.approx(loss / len(frames), rel=1e-6)
    s_mae = 1e3 * s_abs / (9 * len(frames))
    assert (float(row[7]) == pytest.approx(s_mae, rel=1e-6)) if w_s else row[7] == ""
    t = run_cli("test", tmp_path / "m.npz", d / "train.extxyz", "--threads", 1)
    assert t.returncode == 0, t.stderr
    assert f"stress MAE {s_mae:.4f}" in t.stdout, (t.stdout, s_mae)

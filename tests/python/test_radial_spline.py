"""Tabulated radial functions: the ops RadialSpline and RadialSplineDot (src/ops/radial.c,
the cpu kernels in kernels_ict_edge.c) and ICTP evaluators with `radial_table` (the
radial MLPs as cubic splines, docs/ictp.md).

The ops against numpy: a table holding one global cubic per column reproduces it and its
derivatives exactly at any r, knots and r = 0 included, and gives 0 from r_max on; the
columns come out in equal blocks; the contraction is Σ_k dy_k f_k^(d) over every block;
gradients of two orders against finite differences.
The evaluators against the PyTorch reference of the model (exact MLPs): errors that fall
as the fourth power of the intervals, within the bounds the docs state, float32 too."""

import math

import numpy as np
import pytest

import ictp_reference as ref
import tsr
from test_ict import DOMAIN, check_second_order
from test_ictp_model import config, crystal, molecule

R_MAX = 5.0


def cubic_table(rng, n, k, r_max=R_MAX):
    """[n, 4, k]: column j is the cubic Σ_m a[m, j] r^m on every interval; and a."""
    a = rng.standard_normal((4, k)) * np.array([[1.0], [0.6], [0.3], [0.1]])
    h = r_max / n
    c = np.zeros((n, 4, k))
    for i in range(n):
        for j in range(4):
            for m in range(j + 1):
                c[i, m] += a[j] * h ** j * math.comb(j, m) * float(i) ** (j - m)
    return c, a


def cubic_derivative(a, r, d):
    """f^(d)(r) of the cubics a [4, k] at r [e]: [e, k]."""
    out = np.zeros((len(r), a.shape[1]))
    for m in range(d, 4):
        out += np.outer(r ** (m - d), a[m]) * (math.factorial(m) / math.factorial(m - d))
    return out


def run(op, inputs, attrs, device="cpu", threads=1, n_outputs=1):
    g = tsr.Graph()
    g.set_opset(17)
    for i, x in enumerate(inputs):
        g.add_input(f"in{i}", x.dtype, list(x.shape))
    outs = [f"z{q}" for q in range(n_outputs)]
    g.add_node(op, [f"in{i}" for i in range(len(inputs))], outs, attrs, domain=DOMAIN,
               name="op")
    for o in outs:
        g.add_output(o)
    plan = tsr.Plan(g, device=device, threads=threads)
    z = plan.run(list(inputs))
    assert plan.node_backend("op") == device
    return z[0] if n_outputs == 1 else z


@pytest.mark.parametrize("device", ["ref", "cpu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 7, 16, 33])
def test_spline_reproduces_cubics(device, dtype, k):
    rng = np.random.default_rng(k)
    n = 11
    table, a = cubic_table(rng, n, k)
    h = R_MAX / n
    r = np.concatenate([[0.0, h, 3 * h, R_MAX * (1 - 1e-6)], rng.uniform(0, R_MAX, 25)])
    beyond = np.array([R_MAX, R_MAX + 1e-9, 7.5, 1e30])
    tol = 1e-11 if dtype == np.float64 else 3e-5
    for d in range(6):
        got = run("RadialSpline", [np.concatenate([r, beyond]).astype(dtype),
                                   table.astype(dtype)], {"r_max": R_MAX, "derivative": d},
                  device)
        want = cubic_derivative(a, r, d)
        assert got.shape == (len(r) + len(beyond), k)
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got[:len(r)], want, rtol=0, atol=tol * scale,
                                   err_msg=f"derivative {d}")
        assert not np.any(got[len(r):]), "nonzero from r_max on"


@pytest.mark.parametrize("device", ["ref", "cpu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spline_dot_is_the_contraction(device, dtype):
    rng = np.random.default_rng(3)
    table, a = cubic_table(rng, 9, 19)
    r = np.concatenate([rng.uniform(0, R_MAX, (4, 6)).ravel(), [6.0, R_MAX]]).reshape(2, 13)
    dy = rng.standard_normal((2, 13, 19))
    tol = 1e-11 if dtype == np.float64 else 3e-5
    inside = r.ravel() < R_MAX
    for d in range(4):
        got = run("RadialSplineDot", [r.astype(dtype), table.astype(dtype), dy.astype(dtype)],
                  {"r_max": R_MAX, "derivative": d}, device)
        f = cubic_derivative(a, r.ravel(), d) * inside[:, None]
        want = np.einsum("ek,ek->e", f, dy.reshape(-1, 19)).reshape(2, 13)
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, err_msg=f"order {d}")


@pytest.mark.parametrize("device", ["ref", "cpu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocks_are_the_columns(device, dtype):
    """m outputs (m dy inputs of the Dot): the table's K columns in m equal blocks."""
    rng = np.random.default_rng(4)
    m, kb = 5, 7
    table, a = cubic_table(rng, 8, m * kb)
    r = np.concatenate([rng.uniform(0, R_MAX, 30), [R_MAX, 9.0]])
    tol = 1e-11 if dtype == np.float64 else 3e-5
    for d in (0, 1):
        attrs = {"r_max": R_MAX, "derivative": d}
        blocks = run("RadialSpline", [r.astype(dtype), table.astype(dtype)], attrs, device,
                     n_outputs=m)
        whole = cubic_derivative(a, r, d) * (r < R_MAX)[:, None]
        scale = max(1.0, float(np.abs(whole).max()))
        for q, got in enumerate(blocks):
            np.testing.assert_allclose(got, whole[:, q * kb:(q + 1) * kb], rtol=0,
                                       atol=tol * scale, err_msg=f"block {q}")
        dys = [rng.standard_normal((len(r), kb)) for _ in range(m)]
        got = run("RadialSplineDot", [r.astype(dtype), table.astype(dtype)] +
                  [y.astype(dtype) for y in dys], attrs, device)
        want = np.einsum("ek,ek->e", whole, np.concatenate(dys, axis=1))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale * 10)
    with pytest.raises(tsr.TesseraError, match="do not split into 4 equal blocks"):
        run("RadialSpline", [r, table], {"r_max": R_MAX}, device, n_outputs=4)
    # the gradient's Dot takes two inputs more than there are blocks
    with pytest.raises(tsr.TesseraError, match="63 outputs, expected 1 to 62"):
        run("RadialSpline", [r, np.zeros((3, 4, 63))], {"r_max": R_MAX}, device, n_outputs=63)


def test_two_threads_match_one():
    rng = np.random.default_rng(5)
    table, _ = cubic_table(rng, 40, 32)
    r = rng.uniform(0, 6.0, 20000)
    dy = rng.standard_normal((20000, 32))
    for op, ins in [("RadialSpline", [r, table]), ("RadialSplineDot", [r, table, dy])]:
        one = run(op, ins, {"r_max": R_MAX, "derivative": 1}, threads=1)
        two = run(op, ins, {"r_max": R_MAX, "derivative": 1}, threads=2)
        assert np.array_equal(one, two), op


@pytest.mark.parametrize("op", ["RadialSpline", "RadialSplineDot"])
@pytest.mark.parametrize("d", [0, 1])
@pytest.mark.parametrize("m", [1, 2])
def test_gradients_second_order(op, d, m):
    rng = np.random.default_rng(7 + d)
    table, _ = cubic_table(rng, 6, 5 * m)
    r = rng.uniform(0.2, 4.8, (3, 4))
    dot = op == "RadialSplineDot"
    ins = [r] + ([rng.standard_normal((3, 4, 5)) for _ in range(m)] if dot else [])

    def build(g, names):
        g.add_constant("table", table)
        outs = ["out0"] if dot else [f"out{q}" for q in range(m)]
        g.add_node(op, [names[0], "table"] + names[1:], outs,
                   {"r_max": R_MAX, "derivative": d}, domain=DOMAIN)
        return outs
    hv = check_second_order(build, ins)
    assert max(float(np.max(np.abs(h))) for h in hv) > 1e-6


@pytest.mark.parametrize("device", ["ref", "cpu"])
@pytest.mark.parametrize("bad", [-1e-9, -2.0, np.nan])
def test_rejects_negative_distances(device, bad):
    table, _ = cubic_table(np.random.default_rng(0), 4, 3)
    r = np.array([1.0, 2.0, bad])
    with pytest.raises(tsr.TesseraError, match=r"r\[2\] is .*distances of at least 0"):
        run("RadialSpline", [r, table], {"r_max": R_MAX}, device)


def test_rejects_bad_tables_and_attributes():
    r = np.array([1.0, 2.0])
    with pytest.raises(tsr.TesseraError, match=r"must be \[n, 4, K\]"):
        run("RadialSpline", [r, np.zeros((3, 2, 5))], {"r_max": R_MAX})
    with pytest.raises(tsr.TesseraError, match="r_max is -1"):
        run("RadialSpline", [r, np.zeros((3, 4, 5))], {"r_max": -1.0})
    with pytest.raises(tsr.TesseraError, match="dy .* must be r's"):
        run("RadialSplineDot", [r, np.zeros((3, 4, 5)), np.zeros((2, 4))], {"r_max": R_MAX})
    g = tsr.Graph()
    g.add_input("r", np.float64, [2])
    g.add_input("table", np.float64, [3, 4, 5])
    g.add_node("RadialSpline", ["r", "table"], ["z"], {"r_max": R_MAX}, domain=DOMAIN)
    g.add_output("z")
    with pytest.raises(tsr.TesseraError, match="the table has no gradient"):
        tsr.gradient(g, ["z"], ["table"])


# ------------------------------------------------------------------- ICTP evaluators


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("spline")
    names = ["nu3_full", "nu3_T3_symbols", "Le0"]
    return {name: ref.random_model(str(d / name), config(name), seed=k)
            for k, name in enumerate(names)}


def errors(got, want):
    """Relative errors of every result against the reference's largest magnitude."""
    return {key: float(np.abs(np.asarray(got[key]) - want[key]).max() /
                       max(np.abs(want[key]).max(), 1e-300)) for key in want}


@pytest.mark.parametrize("name", ["nu3_full", "nu3_T3_symbols", "Le0"])
def test_tables_converge_to_the_model(models, name):
    """Against the PyTorch reference (exact MLPs): errors bounded at 2048 intervals as
    docs/ictp.md states, and falling with the intervals as a cubic spline's (h^4) and its
    derivative's (h^3) do: from 256 to 1024 intervals by well over 16x."""
    numbers, pos, cell = crystal(8, n=5)
    model = ref.load(models[name])
    want = model.evaluate(numbers, pos, cell, (True, True, True), stress=True)
    want = {k: want[k] for k in ("energy", "forces", "stress")}
    atoms = tsr.Atoms(numbers, pos, cell, [1, 1, 1])
    errs = {}
    for n in (256, 1024, 2048):
        got = tsr.IctpModel(models[name], threads=2, radial_table=n).evaluate(atoms, stress=True)
        errs[n] = errors(got, want)
    assert errs[2048]["energy"] < 1e-10 and errs[2048]["forces"] < 1e-6, errs[2048]
    assert errs[2048]["stress"] < 1e-6, errs[2048]
    assert errs[256]["energy"] / errs[1024]["energy"] > 32, errs
    assert errs[256]["forces"] / errs[1024]["forces"] > 16, errs
    assert errs[256]["stress"] / errs[1024]["stress"] > 16, errs
    assert errs[256]["forces"] > 1e-7, "the coarse table should show its error"


def test_tables_molecule_float32_and_batches(models):
    path = models["nu3_full"]
    numbers, pos = molecule(9, n=11)
    want = ref.load(path).evaluate(numbers, pos)
    atoms = tsr.Atoms(numbers, pos)
    got = tsr.IctpModel(path, threads=2, radial_table=2048, dtype=np.float32).evaluate(atoms)
    exact32 = tsr.IctpModel(path, threads=2, dtype=np.float32).evaluate(atoms)
    e_table, e_exact = errors(got, want), errors(exact32, want)
    for key in ("energy", "forces", "energies"):
        assert e_table[key] < max(4 * e_exact[key], 1e-6), (key, e_table, e_exact)
    z1, p1, c1 = crystal(10, n=4)
    batch = [atoms, tsr.Atoms(z1, p1, c1, [1, 1, 1])]
    table = tsr.IctpModel(path, threads=2, radial_table=1024)
    for alone, together in zip([table.evaluate(a) for a in batch], table.evaluate_batch(batch)):
        for key in ("energy", "forces"):
            np.testing.assert_allclose(together[key], alone[key], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("n", [-1, 1, 15, 65537])
def test_bad_interval_counts(models, n):
    with pytest.raises(tsr.TesseraError, match=f"radial_table is {n}; it must be 0"):
        tsr.IctpModel(models["Le0"], radial_table=n)

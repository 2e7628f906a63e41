"""The cpu backend's Silu and SiluGrad (kernels_eltwise.c, domain ai.tessera) against numpy in
float64 and against ref: lengths below, at and past every vector width, large and tiny
arguments (the vectorized exp's range and beyond, where float64 falls back to libm), +-inf
and NaN, float32 and float64, at each instruction set, one and two threads."""

import zlib

import numpy as np
import pytest

import tsr
from test_cpu_kernels import isa_params

D = "ai.tessera"


def graph(op, shape, dtype):
    g = tsr.Graph()
    g.set_opset(17)
    names = ["x"] if op == "Silu" else ["dy", "x"]
    for n in names:
        g.add_input(n, dtype, list(shape))
    g.add_node(op, names, ["y"], {}, domain=D, name="op")
    g.add_output("y")
    return g


def want(op, dy, x):
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        s = 1.0 / (1.0 + np.exp(-x))
        if op == "Silu":
            return x * s
        return dy.astype(np.float64) * s * (1.0 + x * (1.0 - s))


def values(rng, shape, dtype):
    x = rng.standard_normal(shape) * rng.choice([0.5, 4.0, 40.0])
    flat = x.reshape(-1)
    extremes = [0.0, -0.0, 88.0, -88.0, 103.0, -103.0, 709.0, -709.0, 800.0, -800.0]
    flat[:min(len(extremes), flat.size)] = extremes[:flat.size]
    return x.astype(dtype)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["Silu", "SiluGrad"])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 16), (5, 17), (2, 3, 33), (64, 1000)], ids=str)
def test_matches_numpy_and_ref(shape, op, dtype, isa, monkeypatch):
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(zlib.crc32(f"{shape}-{op}-{dtype.__name__}".encode()))
    x = values(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    feeds = [x] if op == "Silu" else [dy, x]
    g = graph(op, shape, dtype)
    plan = tsr.Plan(g, device="cpu", threads=2)
    got = plan.run(feeds)[0]
    assert plan.node_backend("op") == "cpu"
    ref = tsr.Plan(g, device="ref").run(feeds)[0]
    w = want(op, dy, x)
    tol = 2e-6 if dtype == np.float32 else 1e-14
    if dtype == np.float32:
        w = w.astype(np.float32).astype(np.float64)
    # SiluGrad's factor 1 + x (1 - s) cancels near x = -1.28: its error is bounded by the
    # rounding of terms of dY's size, not by the (small) result.
    floor = np.abs(dy.astype(np.float64)) if op == "SiluGrad" else 0.0
    for name, other in (("numpy", w), ("ref", ref.astype(np.float64))):
        err = np.abs(got - other)
        assert np.all(err <= tol * (np.abs(other) + floor) + 1e-37), \
            f"{name}: max error {float(np.max(err)):.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinities_and_nan_follow_ref(dtype):
    x = np.array([np.inf, -np.inf, np.nan, 1.0, -1.0] * 4, dtype)
    dy = np.ones_like(x)
    for op, feeds in (("Silu", [x]), ("SiluGrad", [dy, x])):
        g = graph(op, x.shape, dtype)
        got = tsr.Plan(g, device="cpu").run(feeds)[0]
        ref = tsr.Plan(g, device="ref").run(feeds)[0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        finite = ~np.isnan(ref)
        np.testing.assert_allclose(got[finite], ref[finite], rtol=2e-6)


def test_silu_grad_of_other_shapes_is_an_error():
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("dy", np.float32, [3, 4])
    g.add_input("x", np.float32, [3, 5])
    with pytest.raises(tsr.TesseraError,
                       match="'op' \\(SiluGrad\\): dY must have X's dtype and shape"):
        g.add_node("SiluGrad", ["dy", "x"], ["y"], {}, domain=D, name="op")

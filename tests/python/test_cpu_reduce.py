"""The cpu backend's ReduceSum and ReduceMean (kernels_reduce.c) against ref and numpy.

Random shapes with odd sizes, every pattern of reduced axes up to rank 4 (the innermost
axis kept: rows summed as vectors; the innermost axis reduced: contiguous runs summed),
size-1 and size-0 axes, keepdims 0 and 1, axes as the attribute (opset 13) and as a
constant input (opset 18), no axes at all (everything, or nothing with
noop_with_empty_axes), float32 and float64, one and two threads, symbolic dims run at
several sizes with one plan, and NaN propagating. Axes fed as a graph input
follow each run."""

import itertools
import zlib

import numpy as np
import pytest

import tsr
from test_cpu_kernels import pytestmark  # noqa: F401 (skipped where the build has no cpu device)


def graph(op, shape, dtype, axes, keepdims, opset, noop=0):
    g = tsr.Graph()
    g.set_opset(opset)
    g.add_input("x", dtype, list(shape))
    attrs = {"keepdims": keepdims}
    inputs = ["x"]
    if opset >= 18 or op == "ReduceSum" and opset >= 13:
        if axes is not None:
            g.add_constant("axes", np.array(axes, np.int64))
            inputs.append("axes")
        if noop:
            attrs["noop_with_empty_axes"] = noop
    elif axes is not None:
        attrs["axes"] = list(axes)
    g.add_node(op, inputs, ["y"], attrs, name="op")
    g.add_output("y")
    return g


def numpy_reduce(op, x, axes, keepdims):
    axes = None if axes is None else tuple(axes)
    x = x.astype(np.float64)
    f = np.sum if op == "ReduceSum" else np.mean
    return f(x, axis=axes, keepdims=bool(keepdims))


def check(op, x, axes, keepdims, opset, threads=1, noop=0):
    g = graph(op, x.shape, x.dtype, axes, keepdims, opset, noop)
    plan = tsr.Plan(g, device="cpu", threads=threads)
    got = plan.run([x])[0]
    assert plan.node_backend("op") == "cpu"
    ref = tsr.Plan(g, device="ref").run([x])[0]
    want = x.astype(np.float64) if noop and not axes else numpy_reduce(op, x, axes, keepdims)
    assert got.dtype == x.dtype
    assert got.shape == ref.shape == want.shape
    tol = 1e-6 if x.dtype == np.float32 else 1e-13
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale)


def axis_patterns(rank):
    for n in range(1, rank + 1):
        yield from itertools.combinations(range(rank), n)


SHAPES = [(7,), (3, 5), (4, 1, 33), (2, 17, 3), (5, 3, 257), (2, 3, 1, 7), (3, 4, 5, 6),
          (1, 300, 2, 1), (2, 2, 2, 600)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_axis_pattern_matches_numpy_and_ref(shape, op, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{shape}-{op}".encode()))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    for axes in axis_patterns(len(shape)):
        keepdims = int(rng.integers(2))
        check(op, x, list(axes), keepdims, 13)
        neg = [a - len(shape) if rng.integers(2) else a for a in axes]
        check(op, x, neg, 1 - keepdims, 18, threads=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
def test_no_axes_reduces_everything_or_nothing(op, dtype):
    x = np.random.default_rng(1).standard_normal((6, 5, 11)).astype(dtype)
    for keepdims in (0, 1):
        check(op, x, None, keepdims, 13)
        check(op, x, None, keepdims, 18, threads=2)
    check(op, x, None, 1, 18, noop=1)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
def test_large_rows_two_threads(op):
    """Enough work to start the second thread, rows longer than one accumulator piece."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 40, 700)).astype(np.float32)
    for axes in ([1], [0], [2], [0, 2]):
        check(op, x, axes, 0, 13, threads=2)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
def test_empty_axes_and_outputs(op):
    """A reduced axis of size 0: sums 0, means NaN as in numpy; no outputs: nothing."""
    x = np.zeros((3, 0, 4), np.float32)
    g = graph(op, x.shape, x.dtype, [1], 0, 13)
    plan = tsr.Plan(g, device="cpu")
    got = plan.run([x])[0]
    assert plan.node_backend("op") == "cpu"
    want = np.full((3, 4), 0.0 if op == "ReduceSum" else np.nan, np.float32)
    np.testing.assert_array_equal(got, want)
    g = graph(op, x.shape, x.dtype, [0], 0, 13)
    assert tsr.Plan(g, device="cpu").run([x])[0].shape == (0, 4)


def test_symbolic_dims_one_plan_many_sizes():
    """The dims are read at each run: one plan, inputs of several sizes."""
    g = tsr.Graph()
    g.set_opset(13)
    g.add_input("x", np.float32, ["n", 3, "c"])
    g.add_constant("axes", np.array([1], np.int64))
    g.add_node("ReduceSum", ["x", "axes"], ["y"], {"keepdims": 0}, name="op")
    g.add_output("y")
    plan = tsr.Plan(g, device="cpu", threads=2)
    rng = np.random.default_rng(9)
    for n, c in [(1, 1), (5, 17), (1000, 3), (2, 40)]:
        x = rng.standard_normal((n, 3, c)).astype(np.float32)
        got = plan.run([x])[0]
        np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=1), rtol=1e-6, atol=1e-6)
    assert plan.node_backend("op") == "cpu"


def test_nan_propagates():
    x = np.ones((4, 5, 6), np.float32)
    x[2, 3, 1] = np.nan
    for axes in ([1], [2], [0, 2]):
        got = tsr.Plan(graph("ReduceSum", x.shape, x.dtype, axes, 0, 13),
                       device="cpu").run([x])[0]
        want = x.astype(np.float64).sum(axis=tuple(axes))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_axes_as_a_graph_input():
    """Axes fed at run time: each run's axes are the ones reduced, on one plan."""
    g = tsr.Graph()
    g.set_opset(13)
    g.add_input("x", np.float32, [3, 4])
    g.add_input("axes", np.int64, [1])
    g.add_node("ReduceSum", ["x", "axes"], ["y"], {"keepdims": 0}, name="op")
    g.add_output("y")
    plan = tsr.Plan(g, device="cpu")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for axis in (1, 0, -1):
        got = plan.run([x, np.array([axis], np.int64)])[0]
        np.testing.assert_array_equal(got, x.sum(axis=axis))

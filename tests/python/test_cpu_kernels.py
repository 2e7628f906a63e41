"""The cpu backend's own kernels against the reference backend, on random
odd shapes, in every activation layout and on every instruction set this
machine has.

Layout and ISA are forced with the environment variables TSR_CPU_LAYOUT
and TSR_CPU_ISA, which the library reads at plan creation (not once per
process), so the tests switch them between plans in one process. Data
reaches an op in a blocked layout the way it does in a model: from a
convolution (oneDNN writes the device's layout), here a 1x1 convolution
with identity weights, which copies its input exactly, then a 1x1 MaxPool
(another exact copy, by this backend) so that the plan's passes cannot
fuse the op under test into the convolution."""

import ctypes
import os

import numpy as np
import pytest

import tsr

CHANNELS = [1, 3, 8, 13, 16, 24, 33]
LAYOUTS = ["plain", "nChw8c", "nChw16c"]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _isas():
    flags = cpu_flags()
    isas = ["portable"]
    if "avx2" in flags and "fma" in flags:
        isas.append("avx2")
    if "avx512f" in flags:
        isas.append("avx512")
    return isas


def _has_cpu_device():
    lib = tsr.lib()
    lib.tsr_device_names.restype = ctypes.c_char_p
    return "cpu" in lib.tsr_device_names().decode().split(",")


pytestmark = pytest.mark.skipif(not _has_cpu_device(), reason="this build has no cpu device")


@pytest.fixture(params=[(layout, isa) for layout in LAYOUTS for isa in _isas()],
                ids=lambda p: f"{p[0]}-{p[1]}")
def cpu_env(request, monkeypatch):
    layout, isa = request.param
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    return layout, isa


def shapes(rng, batches=(1, 3)):
    """(N, C, H, W) for every channel count, odd spatial sizes."""
    for c in CHANNELS:
        n = int(rng.choice(batches))
        h, w = (int(v) * 2 + 1 for v in rng.integers(2, 6, size=2))
        yield n, c, h, w


def blocked(g, name, c):
    """name -> identity Conv -> 1x1 MaxPool: the same values, blocked on the cpu device."""
    eye = name + "_eye"
    g.add_constant(eye, np.eye(c, dtype=np.float32).reshape(c, c, 1, 1))
    g.add_node("Conv", [name, eye], [name + "_c"], {"kernel_shape": [1, 1]})
    g.add_node("MaxPool", [name + "_c"], [name + "_b"], {"kernel_shape": [1, 1]})
    return name + "_b"


def graph_of(op, x_shape, attrs=None, extra=(), blocked_input=True, x2_same=False):
    """x -> [blocked()] -> op(x, *extra) -> y. extra holds numpy arrays
    (constants), None (omitted) or the string "input" (a second graph input
    of x's shape, also blocked when x2_same)."""
    c = x_shape[1]
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(x_shape))
    names = [blocked(g, "x", c) if blocked_input else "x"]
    for i, e in enumerate(extra):
        name = f"e{i}"
        if isinstance(e, str):
            g.add_input(name, np.float32, list(x_shape))
            if x2_same:
                name = blocked(g, name, c)
        elif e is None:
            name = ""
        else:
            g.add_constant(name, e)
        names.append(name)
    g.add_node(op, names, ["y"], attrs)
    g.add_output("y")
    return g


def run_both(g, feeds, threads=2):
    got = tsr.Plan(g, device="cpu", threads=threads).run(feeds)[0]
    want = tsr.Plan(g, device="ref", threads=1).run(feeds)[0]
    return got, want


def check_close(got, want, exact=False):
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
        return
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * scale + 1e-30)


UNARY = [
    ("Relu", {}, True),
    ("LeakyRelu", {"alpha": 0.07}, False),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.6}, False),
    ("HardSwish", {}, False),
    ("Sigmoid", {}, False),
    ("Tanh", {}, False),
    ("Exp", {}, False),
    ("Abs", {}, True),
    ("Neg", {}, True),
]


@pytest.mark.parametrize("op,attrs,exact", UNARY, ids=[u[0] for u in UNARY])
def test_unary(cpu_env, op, attrs, exact):
    rng = np.random.default_rng(1)
    for shape in shapes(rng):
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        got, want = run_both(graph_of(op, shape, attrs), [x])
        check_close(got, want, exact)


def test_unary_plain_input_any_rank(cpu_env):
    """Inputs that arrive plain (and rank != 4) stay plain."""
    rng = np.random.default_rng(2)
    for shape in [(5,), (3, 7), (2, 3, 5), (1, 1, 1, 1, 9)]:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        for op, attrs, exact in UNARY:
            got = tsr.run_op(op, [x], attrs, device="cpu", threads=2)[0]
            want = tsr.run_op(op, [x], attrs, device="ref")[0]
            check_close(got, want, exact)


def test_transcendentals_accuracy(cpu_env):
    """Exp, Sigmoid, Tanh against numpy in double, over wide ranges, near
    zero (tanh's small-argument branch) and at the overflow edges."""
    x = np.concatenate([
        np.linspace(-90, 90, 4001), np.linspace(-1, 1, 2001), np.logspace(-8, 0, 200),
        -np.logspace(-8, 0, 200), [0.0, 88.5, 88.7, -87.0, -103.0, np.inf, -np.inf]
    ]).astype(np.float32)
    xd = x.astype(np.float64)
    for op, ref in [("Exp", np.exp(xd)), ("Sigmoid", 1 / (1 + np.exp(-xd))),
                    ("Tanh", np.tanh(xd))]:
        with np.errstate(over="ignore"):
            want = ref.astype(np.float32)
        got = tsr.run_op(op, [x], device="cpu")[0]
        normal = np.abs(want) >= np.finfo(np.float32).tiny
        np.testing.assert_allclose(got[normal], want[normal], rtol=1e-6, err_msg=op)
        assert np.all(np.abs(got[~normal]) <= np.finfo(np.float32).tiny), op
    nan = np.array([np.nan, 1.0, np.nan], dtype=np.float32)
    for op in ["Relu", "Sigmoid", "Tanh", "Exp", "HardSigmoid", "LeakyRelu"]:
        got = tsr.run_op(op, [nan], device="cpu")[0]
        assert np.isnan(got[0]) and np.isnan(got[2]), op


def test_clip(cpu_env):
    rng = np.random.default_rng(3)
    for lo, hi in [(-0.5, 0.7), (0.2, 3.0), (None, 0.5), (-1.0, None), (1.0, -1.0)]:
        for shape in list(shapes(rng))[::2]:
            x = (rng.standard_normal(shape) * 2).astype(np.float32)
            extra = [np.array(lo, np.float32) if lo is not None else None,
                     np.array(hi, np.float32) if hi is not None else None]
            g = graph_of("Clip", shape, extra=extra)
            got, want = run_both(g, [x])
            check_close(got, want, exact=True)


BINARY = ["Add", "Sub", "Mul", "Div"]


@pytest.mark.parametrize("op", BINARY)
def test_binary_same_shape(cpu_env, op):
    rng = np.random.default_rng(4)
    for shape in list(shapes(rng))[1::2]:
        a = rng.standard_normal(shape).astype(np.float32)
        b = (rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
        # Both blocked, and one blocked with one plain (the plain one is blocked to match).
        for x2_same in (True, False):
            got, want = run_both(graph_of(op, shape, extra=["input"], x2_same=x2_same), [a, b])
            check_close(got, want)


@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcast(cpu_env, op):
    rng = np.random.default_rng(5)
    for i, shape in enumerate(shapes(rng)):
        n, c, h, w = shape
        a = rng.standard_normal(shape).astype(np.float32)
        for bshape in [(c, 1, 1), (1, c, 1, 1)] if i % 2 else [(), (1, 1, 1, 1)]:
            b = rng.uniform(0.5, 2.0, bshape).astype(np.float32)
            got, want = run_both(graph_of(op, shape, extra=[b]), [a])
            check_close(got, want)
            # The full-shape operand second: b OP x.
            g = tsr.Graph()
            g.set_opset(17)
            g.add_input("x", np.float32, list(shape))
            g.add_constant("b", b)
            g.add_node(op, ["b", blocked(g, "x", c)], ["y"])
            g.add_output("y")
            got, want = run_both(g, [np.abs(a) + 0.5])
            check_close(got, want)


def test_binary_refusals():
    """Broadcasts other than per-channel and scalar, and float64, go to ref
    (with a reason); the results still match."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    for b in [rng.standard_normal((1, 3, 1, 7)).astype(np.float32),
              rng.standard_normal((7,)).astype(np.float32)]:
        got = tsr.run_op("Add", [a, b], device="cpu")[0]
        np.testing.assert_allclose(got, a + b, rtol=1e-6)
    a64 = a.astype(np.float64)
    got = tsr.run_op("Mul", [a64, a64], device="cpu")[0]
    np.testing.assert_allclose(got, a64 * a64)


def pool_cases():
    return [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}),
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("MaxPool", {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [0, 1, 1, 0],
                     "ceil_mode": 1}),
        ("MaxPool", {"kernel_shape": [3, 2], "dilations": [2, 1], "pads": [2, 0, 1, 1]}),
        ("MaxPool", {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                         "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 0, 0, 2],
                         "ceil_mode": 1, "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [5, 5], "auto_pad": "SAME_LOWER"}),
    ]


@pytest.mark.parametrize("op,attrs", pool_cases(), ids=lambda v: str(v) if isinstance(v, str) else
                         "-".join(f"{k}{v[k]}" for k in v).replace(" ", ""))
def test_pool(cpu_env, op, attrs):
    rng = np.random.default_rng(7)
    for shape in shapes(rng):
        x = rng.standard_normal(shape).astype(np.float32)
        for blocked_input in (True, False):
            got, want = run_both(graph_of(op, shape, attrs, blocked_input=blocked_input), [x])
            check_close(got, want, exact=op == "MaxPool")


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(cpu_env, op):
    rng = np.random.default_rng(8)
    for shape in shapes(rng):
        x = (rng.standard_normal(shape) + 0.5).astype(np.float32)
        for blocked_input in (True, False):
            got, want = run_both(graph_of(op, shape, blocked_input=blocked_input), [x])
            check_close(got, want, exact=op == "GlobalMaxPool")


def test_max_pools_propagate_nan(cpu_env):
    x = np.zeros((1, 3, 5, 5), np.float32)
    x[0, 1, 2, 2] = np.nan
    x[0, 2, 0, 0] = np.nan
    for op, attrs in [("MaxPool", {"kernel_shape": [3, 3]}), ("GlobalMaxPool", {})]:
        got, want = run_both(graph_of(op, x.shape, attrs), [x])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_batchnorm(cpu_env):
    rng = np.random.default_rng(9)
    for shape in shapes(rng):
        c = shape[1]
        x = rng.standard_normal(shape).astype(np.float32)
        params = [rng.uniform(0.5, 2, c), rng.standard_normal(c), rng.standard_normal(c),
                  rng.uniform(0.5, 2, c)]
        params = [p.astype(np.float32) for p in params]
        got, want = run_both(graph_of("BatchNormalization", shape, {"epsilon": 1e-3},
                                      extra=params), [x])
        check_close(got, want)


def test_concat(cpu_env):
    rng = np.random.default_rng(10)
    for cs in [(8, 16), (16, 32, 16), (3, 13), (8, 5, 16)]:
        n, h, w = 2, 5, 7
        xs = [rng.standard_normal((n, c, h, w)).astype(np.float32) for c in cs]
        g = tsr.Graph()
        g.set_opset(17)
        names = []
        for i, (c, x) in enumerate(zip(cs, xs)):
            g.add_input(f"x{i}", np.float32, list(x.shape))
            names.append(blocked(g, f"x{i}", c))
        g.add_node("Concat", names, ["y"], {"axis": 1})
        g.add_output("y")
        got, want = run_both(g, xs)
        check_close(got, want, exact=True)
    # Plain concat on other axes and ranks, any dtype.
    a = rng.integers(0, 9, (2, 3, 4)).astype(np.int64)
    b = rng.integers(0, 9, (2, 5, 4)).astype(np.int64)
    got = tsr.run_op("Concat", [a, b], {"axis": -2}, device="cpu", threads=2)[0]
    np.testing.assert_array_equal(got, np.concatenate([a, b], axis=1))


def test_chain_stays_blocked(cpu_env):
    """Conv -> Relu -> MaxPool -> Add -> GlobalAveragePool: data flows
    blocked through the chain, with reorders only at the ends."""
    layout, _ = cpu_env
    rng = np.random.default_rng(11)
    for n, c, h, w in [(1, 13, 15, 17), (3, 32, 9, 11)]:
        g = tsr.Graph()
        g.set_opset(17)
        g.add_input("x", np.float32, [n, 3, h, w])
        g.add_constant("w", rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.3)
        g.add_constant("bias", rng.standard_normal(c).astype(np.float32))
        g.add_constant("shift", rng.standard_normal((c, 1, 1)).astype(np.float32))
        g.add_node("Conv", ["x", "w", "bias"], ["c"], {"kernel_shape": [3, 3], "pads": [1] * 4})
        g.add_node("Relu", ["c"], ["r"])
        g.add_node("MaxPool", ["r"], ["p"], {"kernel_shape": [3, 3], "strides": [2, 2]})
        g.add_node("Add", ["p", "shift"], ["a"])
        g.add_node("GlobalAveragePool", ["a"], ["y"])
        g.add_output("y")
        x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
        plan = tsr.Plan(g, device="cpu", threads=2)
        got = plan.run([x])[0]
        want = tsr.Plan(g, device="ref").run([x])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.max(np.abs(want)))
        # Nothing between the ops: the conv reads the plain input (3
        # channels) and the global pool writes plain.
        assert plan.stats().n_reorders == 0, layout

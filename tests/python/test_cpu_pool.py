"""The cpu backend's windowed pools (MaxPool, AveragePool) against the
reference backend on random windows: kernel sizes, strides, dilations,
pads, ceil_mode and count_include_pad drawn at random, odd widths
(1, 3, 17, 33, 57, ...) and channel counts with block tails, every
layout and instruction set; windows wider than the kernels' row buffer
(which then runs in segments along W) and rows longer than it (in
chunks); NaN and infinities at the borders and inside. MaxPool must
match exactly; AveragePool sums in another order than the reference, so
it is held to rounding: 1e-6 of the window's mean of |x| (the float64
reference's)."""

import numpy as np
import pytest

import tsr
from test_cpu_kernels import LAYOUTS, blocked, isa_params

WIDTHS = [1, 3, 17, 33, 57, 100]


def random_window(rng):
    """A random 2-D pooling window that fits its input."""
    k = [int(v) for v in rng.integers(1, 6, 2)]
    d = [int(v) for v in rng.integers(1, 3, 2)] if rng.random() < 0.3 else [1, 1]
    attrs = {"kernel_shape": k, "strides": [int(v) for v in rng.integers(1, 4, 2)]}
    if d != [1, 1]:
        attrs["dilations"] = d
    if rng.random() < 0.7:
        attrs["pads"] = [int(rng.integers(0, (k[i % 2] - 1) // 2 + 1)) for i in range(4)]
    if rng.random() < 0.3:
        attrs["ceil_mode"] = 1
    return attrs


def extent(attrs, i):
    return (attrs["kernel_shape"][i] - 1) * attrs.get("dilations", [1, 1])[i] + 1


def pool_graph(op, shape, attrs):
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(shape))
    g.add_node(op, [blocked(g, "x", shape[1])], ["y"], attrs, name="op")
    g.add_output("y")
    return g


def check(op, x, attrs, what):
    g = pool_graph(op, x.shape, attrs)
    plan = tsr.Plan(g, device="cpu", threads=2)
    got = plan.run([x])[0]
    assert plan.node_backend("op") == "cpu", what
    if op == "MaxPool":
        want = tsr.Plan(g, device="ref").run([x])[0]
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    g64 = tsr.Graph()
    g64.set_opset(17)
    g64.add_input("x", np.float64, list(x.shape))
    g64.add_node(op, ["x"], ["y"], attrs)
    g64.add_output("y")
    ref64 = tsr.Plan(g64, device="ref")
    want = ref64.run([x.astype(np.float64)])[0]
    bound = ref64.run([np.abs(x).astype(np.float64)])[0]
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=what)
    err = np.abs(got[finite] - want[finite])
    assert np.all(err <= 1e-6 * bound[finite] + 1e-30), f"{what}: error {err.max():.3g}"


def cases(seed, count):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        attrs = random_window(rng)
        w = int(rng.choice(WIDTHS))
        h = int(rng.integers(1, 12))
        pads = attrs.get("pads", [0, 0, 0, 0])
        if h + pads[0] + pads[2] < extent(attrs, 0) or w + pads[1] + pads[3] < extent(attrs, 1):
            continue
        c = int(rng.choice([1, 3, 13, 17]))
        if attrs.get("count_include_pad") is None and rng.random() < 0.4:
            attrs["count_include_pad"] = 1
        out.append((attrs, (int(rng.integers(1, 3)), c, h, w)))
    return out


@pytest.fixture(params=[pytest.param((layout, p.values[0]), id=f"{layout}-{p.id}", marks=p.marks)
                        for layout in LAYOUTS for p in isa_params()])
def cpu_env(request, monkeypatch):
    layout, isa = request.param
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    return layout, isa


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_random_windows(cpu_env, op):
    rng = np.random.default_rng(1)
    for i, (attrs, shape) in enumerate(cases(7 + len(op), 24)):
        attrs = dict(attrs)
        if op == "MaxPool":
            attrs.pop("count_include_pad", None)
            x = (rng.permutation(int(np.prod(shape))).reshape(shape) / 10 - 50).astype(np.float32)
        else:
            x = rng.standard_normal(shape).astype(np.float32)
        check(op, x, attrs, f"{op} {attrs} on {shape}, {cpu_env}")


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs,shape", [
    # wider than a plain row's buffer: taps in segments along W
    ({"kernel_shape": [1, 2100], "strides": [1, 7]}, (1, 2, 2, 2200)),
    # wider than a block's: 16 lanes x 256 pixels, also with dilation
    ({"kernel_shape": [2, 150], "strides": [1, 3], "pads": [1, 5, 0, 9]}, (1, 17, 3, 300)),
    ({"kernel_shape": [1, 40], "dilations": [1, 4], "pads": [0, 3, 0, 2]}, (1, 16, 2, 200)),
    # longer rows than the buffer: outputs in chunks
    ({"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}, (1, 3, 3, 5003)),
    ({"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 1]}, (1, 9, 2, 1111)),
])
def test_wide_windows_and_rows(cpu_env, op, attrs, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    check(op, x, attrs, f"{op} {attrs} on {shape}, {cpu_env}")


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_nan_and_infinities(cpu_env, op, stride):
    """A NaN anywhere in a window makes the max NaN, at the borders of a row
    (inside the vectors' tails) and inside it; infinities too."""
    rng = np.random.default_rng(5 + stride)
    shape = (1, 5, 7, 37)
    x = rng.standard_normal(shape).astype(np.float32)
    for c, h, w in [(0, 0, 0), (1, 3, 36), (2, 6, 17), (3, 2, 15), (4, 4, 16)]:
        x[0, c, h, w] = np.nan
    x[0, 1, 1, 1] = np.inf
    x[0, 2, 5, 35] = -np.inf
    x[0, 3, 0, 0] = np.inf
    x[0, 3, 0, 1] = -np.inf
    attrs = {"kernel_shape": [3, 3], "strides": [stride, stride], "pads": [1, 1, 1, 1]}
    g = pool_graph(op, shape, attrs)
    got = tsr.Plan(g, device="cpu", threads=2).run([x])[0]
    want = tsr.Plan(g, device="ref").run([x])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-6)

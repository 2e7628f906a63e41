"""What the op x backend harness (test_backend_ops.py) cannot express
about the cpu backend's own kernels: accuracy against numpy over wide
ranges, NaN propagation, refusals, a chain that stays blocked; and the
helpers the cpu tests share (layouts, instruction sets with the reason
each one this machine lacks is skipped, blocked inputs, run_both).

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
import platform

import numpy as np
import pytest

import tsr

LAYOUTS = ["plain", "nChw8c", "nChw16c"]


def cpu_flags():
    """The x86 feature flags of this CPU; none elsewhere (under qemu-user an aarch64 process
    reads the x86 host's /proc/cpuinfo)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# The CPU features each instruction set of the cpu backend needs.
ISA_FEATURES = {"portable": [], "avx2": ["avx2", "fma"], "avx512": ["avx512f"]}
ISA_ORDER = list(ISA_FEATURES)
# TSR_CPU_ISA set when the tests start caps them as it caps the library:
# TSR_CPU_ISA=avx2 on an AVX-512 machine tests as an AVX2-only one would.
ISA_CAP = os.environ.get("TSR_CPU_ISA") or "avx512"


def isa_skip_reason(isa):
    """Why the kernels of `isa` cannot run here, or None when they can."""
    missing = [f for f in ISA_FEATURES[isa] if f not in cpu_flags()]
    if missing:
        return f"machine lacks {' and '.join(missing)}: the {isa} kernels cannot run here"
    if ISA_CAP in ISA_ORDER and ISA_ORDER.index(isa) > ISA_ORDER.index(ISA_CAP):
        return f"TSR_CPU_ISA={ISA_CAP} in the environment caps the instruction set below {isa}"
    return None


def bf16_skip_reason():
    """Why bf16 kernels cannot run here, or None (oneDNN needs AVX512_BF16 or AMX-BF16)."""
    flags = cpu_flags()
    if not flags & {"avx512_bf16", "amx_bf16"}:
        return "machine lacks avx512_bf16 and amx_bf16: the bf16 kernels cannot run here"
    if ISA_CAP in ISA_ORDER and ISA_CAP != "avx512":
        return f"TSR_CPU_ISA={ISA_CAP} in the environment caps the instruction set below bf16"
    return None


def isa_params(isas=ISA_ORDER):
    """Every ISA as a pytest param, skipped with the reason where it cannot run."""
    return [pytest.param(isa, id=isa, marks=[pytest.mark.skip(reason=isa_skip_reason(isa))]
                         if isa_skip_reason(isa) else []) for isa in isas]


def _has_cpu_device():
    lib = tsr.lib()
    lib.tsr_device_names.restype = ctypes.c_char_p
    return "cpu" in lib.tsr_device_names().decode().split(",")


pytestmark = pytest.mark.skipif(not _has_cpu_device(), reason="this build has no cpu device")


@pytest.fixture(params=[pytest.param((layout, p.values[0]), id=f"{layout}-{p.id}", marks=p.marks)
                        for layout in LAYOUTS for p in isa_params()])
def cpu_env(request, monkeypatch):
    layout, isa = request.param
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    return layout, isa


def blocked(g, name, c):
    """name -> identity Conv -> 1x1 MaxPool: the same values, blocked on the cpu device."""
    eye = name + "_eye"
    g.add_constant(eye, np.eye(c, dtype=np.float32).reshape(c, c, 1, 1))
    g.add_node("Conv", [name, eye], [name + "_c"], {"kernel_shape": [1, 1]})
    g.add_node("MaxPool", [name + "_c"], [name + "_b"], {"kernel_shape": [1, 1]})
    return name + "_b"


def graph_of(op, x_shape, attrs=None):
    """x -> blocked() -> op -> y, the op's node named "op"."""
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(x_shape))
    g.add_node(op, [blocked(g, "x", x_shape[1])], ["y"], attrs, name="op")
    g.add_output("y")
    return g


def run_both(g, feeds, threads=2, ran_on=None):
    """Output 0 on the cpu device and on ref. ran_on: {node name: backend}
    that must hold on the cpu device (default: node "op" on cpu)."""
    plan = tsr.Plan(g, device="cpu", threads=threads)
    got = plan.run(feeds)[0]
    for node, backend in (ran_on or {"op": "cpu"}).items():
        assert plan.node_backend(node) == backend, f"{node} ran on {plan.node_backend(node)}"
    want = tsr.Plan(g, device="ref", threads=1).run(feeds)[0]
    return got, want


def run_op_on(op, inputs, backend="cpu", domain=""):
    """tsr.run_op on the cpu device, asserting which backend ran the node."""
    g = tsr.Graph()
    g.set_opset(17)
    for i, x in enumerate(inputs):
        g.add_input(f"in{i}", x.dtype, list(x.shape))
    g.add_node(op, [f"in{i}" for i in range(len(inputs))], ["y"], name="op", domain=domain)
    g.add_output("y")
    plan = tsr.Plan(g, device="cpu", threads=2)
    got = plan.run(list(inputs))[0]
    assert plan.node_backend("op") == backend, f"{op} ran on {plan.node_backend('op')}"
    return got


def test_transcendentals_accuracy(cpu_env):
    """Exp, Sigmoid, Tanh against numpy in double, over wide ranges, near
    zero (tanh's small-argument branch) and at the overflow edges (sigmoid's
    exp takes the exact scaling only below x = -86); Silu where its result
    keeps float32's precision (above x = -80, where sigmoid is normal)."""
    x = np.concatenate([
        np.linspace(-90, 90, 4001), np.linspace(-1, 1, 2001), np.logspace(-8, 0, 200),
        -np.logspace(-8, 0, 200), [0.0, 88.5, 88.7, -87.0, -103.0, np.inf, -np.inf]
    ]).astype(np.float32)
    xd = x.astype(np.float64)
    with np.errstate(over="ignore"):
        cases = [("Exp", x, np.exp(xd)), ("Sigmoid", x, 1 / (1 + np.exp(-xd))),
                 ("Tanh", x, np.tanh(xd))]
    xs = x[x > -80]
    cases.append(("Silu", xs, xs / (1 + np.exp(-xs.astype(np.float64)))))
    for op, arg, ref in cases:
        with np.errstate(over="ignore"):
            want = ref.astype(np.float32)
        got = run_op_on(op, [arg], domain="ai.tessera" if op == "Silu" else "")
        normal = np.abs(want) >= np.finfo(np.float32).tiny
        np.testing.assert_allclose(got[normal], want[normal], rtol=1e-6, err_msg=op)
        assert np.all(np.abs(got[~normal]) <= np.finfo(np.float32).tiny), op
    nan = np.array([np.nan, 1.0, np.nan], dtype=np.float32)
    for op in ["Relu", "Sigmoid", "Tanh", "Exp", "HardSigmoid", "LeakyRelu"]:
        got = run_op_on(op, [nan])
        assert np.isnan(got[0]) and np.isnan(got[2]), op


def test_binary_refusals():
    """Broadcasts other than per-channel, one repeated row and scalar go to ref (with a
    reason), in float32 and float64; the results still match."""
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
        for b in [rng.standard_normal((1, 3, 1, 7)).astype(dtype),
                  rng.standard_normal((2, 1, 5, 1)).astype(dtype)]:
            got = run_op_on("Add", [a, b], backend="ref")
            np.testing.assert_allclose(got, a + b, rtol=1e-6)


@pytest.mark.parametrize("isa", isa_params())
def test_binary_repeated_row(isa, monkeypatch):
    """An operand that is one row of the output's last dims (a bias over [..., N]; leading
    1s allowed), either operand first, every op, float32 and float64, against numpy; from a
    blocked convolution output too, which the backend must hand over plain."""
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(12)
    for dtype in (np.float32, np.float64):
        for shape, row in [((6, 5, 37), (37,)), ((4, 3, 16), (1, 3, 16)), ((300, 129), (129,)),
                           ((2, 3, 5, 7), (7,)), ((2, 3, 5, 7), (5, 7))]:
            x = rng.standard_normal(shape).astype(dtype)
            b = (rng.standard_normal(row) + 3).astype(dtype)
            for op, f in [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                          ("Div", np.divide)]:
                for pair in ([x, b], [b, x]):
                    np.testing.assert_allclose(run_op_on(op, pair), f(*pair), rtol=1e-6,
                                               err_msg=f"{op} {shape} {row}")
    x = rng.standard_normal((2, 19, 5, 7)).astype(np.float32)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(x.shape))
    g.add_constant("row", rng.standard_normal(7).astype(np.float32))
    g.add_node("Sub", ["row", blocked(g, "x", 19)], ["y"], name="op")
    g.add_output("y")
    got, want = run_both(g, [x])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("isa", isa_params())
def test_float64_elementwise_matches_ref(isa, monkeypatch):
    """float64 unary and binary ops (same shapes, per-channel, scalar, either
    operand first) on the cpu kernels give the ref kernels' values exactly
    (the same double formulas), Sigmoid and Exp (a vectorized exp) within
    a few ulp, also beyond that exp's range (overflow, subnormal results,
    inf, NaN), on odd shapes and on enough elements for two threads; the
    ops with parameters stay on ref."""
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(11)
    edges = [0.0, 707.9, 708.1, 709.7, 710.0, -707.9, -708.1, -740.0, -746.0, np.inf, -np.inf]
    for shape in [(3, 5, 7), (1, 1), (2, 9, 1, 13), (40, 1100)]:
        x = rng.standard_normal(shape) * 4
        for op in ["Relu", "Tanh", "Erf", "Abs", "Neg"]:
            np.testing.assert_array_equal(run_op_on(op, [x]), tsr.run_op(op, [x])[0],
                                          err_msg=op)
        wide = x * 60
        wide.flat[:min(wide.size, len(edges))] = edges[:wide.size]
        for op in ["Sigmoid", "Exp"]:
            for v in (x, wide):
                with np.errstate(over="ignore"):
                    np.testing.assert_allclose(run_op_on(op, [v]), tsr.run_op(op, [v])[0],
                                               rtol=1e-15, atol=0, err_msg=op)
        nan = np.full(shape, np.nan)
        for op in ["Sigmoid", "Exp"]:
            assert np.isnan(run_op_on(op, [nan])).all(), op
        c = np.ones(len(shape), dtype=int)
        c[1] = shape[1]
        others = [rng.standard_normal(shape) + 5, rng.standard_normal(tuple(c)) + 5,
                  rng.standard_normal(()) + 5]
        for op in ["Add", "Sub", "Mul", "Div"]:
            for y in others:
                for pair in ([x, y], [y, x]):
                    np.testing.assert_array_equal(run_op_on(op, pair),
                                                  tsr.run_op(op, pair)[0], err_msg=op)
    np.testing.assert_array_equal(run_op_on("LeakyRelu", [x], backend="ref"),
                                  np.where(x >= 0, x, 0.01 * x))


def test_row_ops_on_a_convolution_output(cpu_env):
    """Softmax and LogSoftmax along the last axis, and LayerNormalization, of a rank-4 tensor
    that a convolution leaves blocked: they read rows, so the backend must hand them plain
    memory (Softmax ran on the blocked one and was off by 0.4 before)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 19, 5, 7)).astype(np.float32)
    for op, attrs in [("Softmax", {"axis": -1}), ("LogSoftmax", {"axis": 3})]:
        got, want = run_both(graph_of(op, x.shape, attrs), [x])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=op)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(x.shape))
    g.add_constant("scale", rng.standard_normal(7).astype(np.float32))
    g.add_node("LayerNormalization", [blocked(g, "x", 19), "scale"], ["y"], {"axis": -1},
               name="op")
    g.add_output("y")
    got, want = run_both(g, [x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_max_pools_propagate_nan(cpu_env):
    x = np.zeros((1, 3, 5, 5), np.float32)
    x[0, 1, 2, 2] = np.nan
    x[0, 2, 0, 0] = np.nan
    for op, attrs in [("MaxPool", {"kernel_shape": [3, 3]}), ("GlobalMaxPool", {})]:
        got, want = run_both(graph_of(op, x.shape, attrs), [x])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def conv_act_graph(act, extra=(), name="conv", w_nan=False):
    """x [2, 16, 8, 8] and an unused graph input m -> 3x3 Conv -> act (its
    constant inputs `extra`) -> MaxPool 3x3 -> y; the passes fuse act into
    the Conv. Tests of it turn autotuning off (TSR_AUTOTUNE=0): Winograd,
    if timing picked it, spreads a NaN over its tile, where ref's pattern is
    exact."""
    rng = np.random.default_rng(5)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, [2, 16, 8, 8])
    g.add_input("m", np.float32, [4])
    w = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    if w_nan:
        w[2, 5, 1, 1] = np.nan
    g.add_constant("w", w)
    g.add_node("Conv", ["x", "w"], ["c"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
               name=name)
    names = ["c"]
    for i, e in enumerate(extra):
        g.add_constant(f"e{i}", np.array(e, np.float32))
        names.append(f"e{i}")
    g.add_node(act, names, ["a"])
    g.add_node("MaxPool", ["a"], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    g.add_node("Abs", ["m"], ["n"])
    g.add_output("y")
    g.add_output("n")
    return g


FLUSHING = [("Relu", ()), ("Clip", (0.0, 6.0)), ("HardSigmoid", ())]


@pytest.mark.parametrize("act,extra", FLUSHING)
def test_fused_activations_refuse_nan_they_would_hide(act, extra, monkeypatch):
    """oneDNN's fused ReLU, clip and hard-sigmoid take max and min, which give
    a number for NaN: the plan refuses NaN in the inputs reaching them,
    naming the input, the element and the node, and takes NaN in an input
    that does not reach them (m) as it is. (test_depth_first.py: inside a
    stack too.)"""
    monkeypatch.setenv("TSR_AUTOTUNE", "0")
    x = np.random.default_rng(6).standard_normal((2, 16, 8, 8)).astype(np.float32)
    m = np.array([1.0, np.nan, -2.0, 3.0], np.float32)
    plan = tsr.Plan(conv_act_graph(act, extra), device="cpu", threads=2)
    y, n = plan.run([x, m])
    assert plan.node_backend("conv").startswith("dnnl"), plan.node_backend("conv")
    want = tsr.Plan(conv_act_graph(act, extra), device="ref").run([x, m])
    np.testing.assert_allclose(y, want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(n), [False, True, False, False])
    x[0, 3, 2, 5] = np.nan
    with pytest.raises(tsr.TesseraError) as info:
        plan.run([x, m])
    msg = str(info.value)
    assert f"input 'x' holds NaN (element {3 * 64 + 2 * 8 + 5} of 2048)" in msg, msg
    assert f"FusedConv 'conv' fuses a {act}" in msg, msg
    assert np.isnan(tsr.Plan(conv_act_graph(act, extra), device="ref").run([x, m])[0]).any()


@pytest.mark.parametrize("act,extra", FLUSHING)
def test_fused_activations_leave_nan_weights_to_ref(act, extra, capfd, monkeypatch):
    """Weights holding NaN are constants, which the plan's check of its
    inputs does not see: the dnnl backend refuses such a convolution with
    a fused ReLU, clip or hard-sigmoid, and ref computes it, NaN where the
    weight reaches."""
    monkeypatch.setenv("TSR_AUTOTUNE", "0")
    monkeypatch.setenv("TSR_VERBOSE", "1")
    x = np.random.default_rng(8).standard_normal((2, 16, 8, 8)).astype(np.float32)
    m = np.ones(4, np.float32)
    plan = tsr.Plan(conv_act_graph(act, extra, w_nan=True), device="cpu", threads=2)
    got = plan.run([x, m])[0]
    assert "constant input 1 ('w') holds NaN" in capfd.readouterr().err
    assert plan.node_backend("conv") == "ref"
    want = tsr.Plan(conv_act_graph(act, extra, w_nan=True), device="ref").run([x, m])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want[:, 2]).all() and not np.isnan(want[:, 3]).any()


@pytest.mark.parametrize("act", ["LeakyRelu", "Sigmoid", "Tanh", "HardSwish"])
def test_fused_activations_that_keep_nan(act, monkeypatch):
    """The fused activations whose oneDNN kernels keep NaN run NaN inputs as
    they are, with NaN where the reference has it."""
    monkeypatch.setenv("TSR_AUTOTUNE", "0")
    x = np.random.default_rng(7).standard_normal((2, 16, 8, 8)).astype(np.float32)
    x[0, 3, 2, 5] = np.nan
    m = np.ones(4, np.float32)
    got = tsr.Plan(conv_act_graph(act), device="cpu", threads=2).run([x, m])[0]
    want = tsr.Plan(conv_act_graph(act), device="ref").run([x, m])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want).sum() > 1


@pytest.mark.parametrize("x_blocked", [True, False])
def test_max_pool_grad_ties_and_nan(cpu_env, x_blocked):
    """MaxPoolGrad routes each dY to the maximum the reference picks: the first of tied
    values, the first NaN of a window (as PyTorch), over overlapping windows and an odd
    channel count; dY holds integers, so every sum is exact whatever the order. dY comes
    blocked; X blocked too, or plain (as a value saved across tsr_graph_split comes),
    which the kernel takes reordered into blocks."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, (2, 19, 9, 8)).astype(np.float32)
    x[0, 1, 2, 2] = x[0, 1, 3, 3] = x[1, 18, 0, 0] = np.nan
    dy = rng.integers(-8, 9, (2, 19, 5, 4)).astype(np.float32)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(x.shape))
    g.add_input("dy", np.float32, list(dy.shape))
    g.add_node("MaxPoolGrad", [blocked(g, "x", 19) if x_blocked else "x", blocked(g, "dy", 19)],
               ["y"],
               {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
               domain="ai.tessera", name="op")
    g.add_output("y")
    got, want = run_both(g, [x, dy])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dy_blocked", [True, False])
@pytest.mark.parametrize("case", [
    # (X shape, kernel, strides, pads, count_include_pad, ceil_mode)
    ((2, 19, 9, 8), [3, 3], [2, 2], [1, 1, 1, 1], 0, 0),   # overlapping windows, odd C
    ((1, 5, 7, 11), [2, 3], [1, 2], [0, 1, 0, 1], 1, 0),   # uneven pads, padding counted
    ((3, 17, 6, 6), [3, 3], [2, 2], [1, 1, 1, 1], 1, 1),   # ceil_mode windows past the end
    ((1, 16, 5, 5), [5, 5], [1, 1], [2, 2, 2, 2], 0, 0),   # windows wider than half the plane
    ((2, 32, 8, 8), [2, 2], [2, 2], [0, 0, 0, 0], 0, 0),   # the downsampling of a CNN
])
def test_average_pool_grad_matches_ref(cpu_env, dy_blocked, case):
    """AveragePoolGrad spreads each dY over its window divided as the forward divides
    (count_include_pad, ceil_mode), on blocked and plain dY, against the reference."""
    shape, kernel, strides, pads, include_pad, ceil = case
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads,
             "count_include_pad": include_pad, "ceil_mode": ceil}
    rng = np.random.default_rng(sum(shape) + include_pad)
    x = rng.standard_normal(shape).astype(np.float32)
    pooled = tsr.Plan(graph_of("AveragePool", shape, attrs), device="ref").run([x])[0]
    dy = rng.standard_normal(pooled.shape).astype(np.float32)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("dy", np.float32, list(dy.shape))
    g.add_constant("shape", np.array(shape, np.int64))
    g.add_node("AveragePoolGrad", [blocked(g, "dy", shape[1]) if dy_blocked else "dy", "shape"],
               ["y"], attrs, domain="ai.tessera", name="op")
    g.add_output("y")
    got, want = run_both(g, [dy])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_batchnorm_train_large_mean(cpu_env):
    """BatchNormTrain on data whose mean is 3000 times its spread: the cpu kernel's
    shifted moments keep the variance (a float32 E[x^2] - mean^2 would lose it all),
    so Y and the saved statistics match ref, which sums in double."""
    rng = np.random.default_rng(12)
    c = 19
    x = (3000 + rng.standard_normal((3, c, 6, 5))).astype(np.float32)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(x.shape))
    for name, v in [("scale", rng.uniform(0.5, 2, c)), ("bias", rng.standard_normal(c)),
                    ("rm", np.zeros(c)), ("rv", np.ones(c))]:
        g.add_constant(name, v.astype(np.float32))
    outs = ["y", "rm_out", "rv_out", "mean", "inv"]
    g.add_node("BatchNormTrain", [blocked(g, "x", c), "scale", "bias", "rm", "rv"], outs,
               domain="ai.tessera", name="op")
    for o in outs:
        g.add_output(o)
    plan = tsr.Plan(g, device="cpu", threads=2)
    got = plan.run([x])
    assert plan.node_backend("op") == "cpu"
    want = tsr.Plan(g, device="ref").run([x])
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=2e-3)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-7)
    np.testing.assert_allclose(got[4], want[4], rtol=1e-4)


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
        g.add_node("Conv", ["x", "w", "bias"], ["c"], {"kernel_shape": [3, 3], "pads": [1] * 4},
                   name="conv")
        g.add_node("Relu", ["c"], ["r"], name="relu")
        g.add_node("MaxPool", ["r"], ["p"], {"kernel_shape": [3, 3], "strides": [2, 2]},
                   name="pool")
        g.add_node("Add", ["p", "shift"], ["a"], name="add")
        g.add_node("GlobalAveragePool", ["a"], ["y"], name="gap")
        g.add_output("y")
        x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
        plan = tsr.Plan(g, device="cpu", threads=2)
        got = plan.run([x])[0]
        want = tsr.Plan(g, device="ref").run([x])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.max(np.abs(want)))
        # Nothing between the ops: the conv reads the plain input (3
        # channels) and the global pool writes plain.
        assert plan.stats().n_reorders == 0, layout
        # The Relu runs fused into the convolution, on oneDNN; the rest on cpu.
        assert [plan.node_backend(n) for n in ("conv", "pool", "add", "gap")] == [
            "dnnl", "cpu", "cpu", "cpu"]
        with pytest.raises(tsr.TesseraError, match="fused it into another node"):
            plan.node_backend("relu")
        assert plan.backend_counts() == {"dnnl": 1, "cpu": 3, "ref": 0}

"""Dilated convolutions on the cpu device: the trim_conv_taps pass (taps that read only padding
at the plan's input sizes are dropped; a dilated 3x3 reduced to its centre is a 1x1) and oneDNN's
kernel for the dilated convolutions that remain (never its reference loops, which took seconds
per DeepLab ASPP convolution). The cpu device runs the passes and the ref device runs the graph
as given, so each case compares the rewritten graph with the original on seeded random shapes:
odd sizes, dilations where some or all off-centre taps fall in the padding, asymmetric pads,
auto_pad, groups, depthwise, stride 2, FusedConv with a residual and an activation, 1-D and 3-D
convolutions; and the gradient of a graph whose forward convolution the pass rewrote."""

import numpy as np
import pytest

import tsr
from test_cpu_dnnl import make_graph, make_plan, rand, run_plan
from test_grad import numeric_grad


def check(capfd, op_type, inputs, attrs, domain="", const_inputs=(1, 2)):
    """cpu against ref within 1e-4 of max |ref|; returns the cpu plan's --verbose log."""
    g, feeds = make_graph(op_type, inputs, attrs, domain, const_inputs)
    want = run_plan(g, feeds, "ref")[0]
    capfd.readouterr()
    got = make_plan(g, "cpu").run(feeds)[0]
    log = capfd.readouterr().err
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 1e-4 * scale, f"max error {err} vs max |ref| {scale}\n{log}"
    assert "(ref:" not in log, f"oneDNN fell back to its reference convolution:\n{log}"
    return log


def random_case(seed):
    """A 2-D convolution whose dilation reaches past a small input, so that some taps read
    only padding along some dims: inputs and attributes."""
    rng = np.random.default_rng(seed)
    kind = ["dense", "group", "dw"][seed % 3]
    c = int(rng.choice([3, 8, 17])) if kind == "dense" else int(rng.choice([6, 16]))
    group = {"dense": 1, "group": 2, "dw": c}[kind]
    m = int(rng.choice([5, 16])) if kind == "dense" else group * int(rng.integers(1, 3))
    size = [int(rng.integers(3, 12)) for _ in range(2)]
    kernel = [int(rng.choice([1, 2, 3, 5])) for _ in range(2)]
    dilation = [int(rng.integers(1, 2 * s + 2)) for s in size]
    strides = [int(rng.integers(1, 3)) for _ in range(2)]
    attrs = {"group": group, "strides": strides, "dilations": dilation}
    if seed % 5 == 4:
        attrs["auto_pad"] = ["SAME_UPPER", "SAME_LOWER"][seed % 2]
    else:
        pads = []
        for d in range(2):
            span = (kernel[d] - 1) * dilation[d] + 1
            # Enough padding for at least one output, sometimes far more than the map.
            least = max(0, span - size[d])
            total = least + int(rng.integers(0, span + 1))
            begin = int(rng.integers(0, total + 1))
            pads.append((begin, total - begin))
        attrs["pads"] = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    x = rand(rng, (int(rng.choice([1, 2])), c, *size))
    w = rand(rng, (m, c // group, *kernel))
    b = rand(rng, (m,)) if seed % 2 else None
    return rng, [x, w, b], attrs


@pytest.mark.parametrize("seed", range(30))
def test_random_dilated_conv(capfd, seed):
    _, inputs, attrs = random_case(seed)
    check(capfd, "Conv", inputs, attrs)


@pytest.mark.parametrize("dilation", [12, 24, 36])
def test_aspp_branches(capfd, monkeypatch, dilation):
    """DeepLab's ASPP at a 224x224 input: a 3x3 with dilation and padding 12, 24 or 36 on the
    14x14 map. From 24 on only the centre tap reads the map: a pointwise convolution, which
    oneDNN runs on its 1x1 kernel when autotuning (which may time another kernel faster)
    is off. At 12 every tap reaches it; on AVX2 oneDNN's blocked kernels refuse padding that
    wide, and it runs on the gemm kernel in the plain layout (check() asserts it is not ref)."""
    monkeypatch.setenv("TSR_AUTOTUNE", "0")
    rng = np.random.default_rng(dilation)
    x, w, b = rand(rng, (1, 40, 14, 14)), rand(rng, (24, 40, 3, 3)), rand(rng, (24,))
    log = check(capfd, "Conv", [x, w, b], {"dilations": [dilation] * 2, "pads": [dilation] * 4})
    if dilation > 12:
        assert "-> dnnl (jit_1x1" in log, log


@pytest.mark.parametrize("with_z", [False, True])
def test_fused_conv_trimmed(capfd, with_z):
    """FusedConv keeps its residual and activation when its taps are trimmed."""
    rng = np.random.default_rng(5 + with_z)
    x, w, b = rand(rng, (2, 16, 7, 9)), rand(rng, (8, 16, 3, 3)), rand(rng, (8,))
    attrs = {"dilations": [8, 3], "pads": [8, 3, 8, 3], "activation": "Relu"}
    inputs = [x, w, b] + ([rand(rng, (2, 8, 7, 9))] if with_z else [])
    check(capfd, "FusedConv", inputs, attrs, domain="ai.tessera")


def test_one_sided_trims_and_kept_dims(capfd):
    """Taps dropped on one side only; and a dim whose trim would need negative padding (the
    window's last tap hangs past the map but the output is one position) keeps every tap."""
    rng = np.random.default_rng(11)
    x, w = rand(rng, (1, 5, 9, 14)), rand(rng, (4, 5, 3, 3))
    check(capfd, "Conv", [x, w], {"dilations": [6, 12], "pads": [0, 0, 12, 11]})
    check(capfd, "Conv", [x, w], {"dilations": [5, 12], "pads": [10, 0, 1, 11],
                                  "strides": [2, 1]})


def test_weights_fed_at_run_time_are_left_alone(capfd):
    """W as a graph input (a training plan's parameter) is not sliced: the node stays dilated
    and still gets a real oneDNN kernel."""
    rng = np.random.default_rng(2)
    x, w = rand(rng, (1, 8, 10, 10)), rand(rng, (8, 8, 3, 3))
    check(capfd, "Conv", [x, w], {"dilations": [20, 20], "pads": [20] * 4}, const_inputs=())


@pytest.mark.parametrize("rank", [3, 5])
def test_other_spatial_ranks(capfd, rank):
    """1-D and 3-D convolutions run on the cpu device's ref kernels, after the pass."""
    rng = np.random.default_rng(rank)
    n = rank - 2
    x = rand(rng, (2, 4) + (7, 6, 5)[:n])
    w = rand(rng, (3, 4) + (3, 2, 3)[:n])
    dil = [9, 2, 6][:n]
    check(capfd, "Conv", [x, w, rand(rng, (3,))],
          {"dilations": dil, "pads": [9, 1, 6][:n] + [9, 2, 6][:n]})


def test_gradient_through_trimmed_conv():
    """Passes run on the gradient graph too: with W constant its forward Conv is trimmed while
    ConvGradInput reads the whole W. d/dX on the cpu device against finite differences of the
    forward graph on ref, in float64."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 5, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    g = tsr.Graph()
    g.add_input("x", x.dtype, list(x.shape))
    g.add_constant("w", w)
    g.add_node("Conv", ["x", "w"], ["y"], {"dilations": [6, 2], "pads": [6, 2, 6, 2],
                                           "strides": [1, 2]}, name="node0")
    g.add_output("y")
    forward = tsr.Plan(g, device="ref")
    y = forward.run([x])[0]
    seed = rng.standard_normal(y.shape)

    def loss(values):
        return float(np.sum(forward.run(values)[0] * seed))

    gg = tsr.gradient(g, ["y"], ["x"])
    got = tsr.Plan(gg, device="cpu", threads=2).run([x, seed])
    want = numeric_grad(loss, [x.copy()], 0)
    assert np.max(np.abs(got[0] - y)) <= 1e-12 * np.max(np.abs(y))
    assert np.max(np.abs(got[1] - want)) <= 1e-6 * np.max(np.abs(want))
    assert np.max(np.abs(want)) > 1e-2

"""The cpu device's oneDNN backend (Conv, ai.tessera.FusedConv, Gemm, MatMul)
against the ref device, the oracle, on seeded random odd shapes: every
activation, with and without B and Z, groups and depthwise, dilations,
strides, pads and auto_pad, batch 1 and 3, weights constant or fed at run
time; Gemm's transposes, alpha, beta
and C broadcasts; MatMul's batch broadcasts. Each test also checks, in the
plan (tsr_plan_node_backend), that the node did run on oneDNN."""

import numpy as np
import pytest

import tsr
from test_cpu_kernels import bf16_skip_reason, isa_skip_reason

ACTIVATIONS = ["", "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"]


def _cpu_device_exists():
    try:
        tsr.run_op("Relu", [np.ones(2, np.float32)], device="cpu")
        return True
    except tsr.TesseraError:
        return False


pytestmark = pytest.mark.skipif(not _cpu_device_exists(), reason="this build has no cpu device")


def make_plan(graph, device, precision=0, threads=2):
    """Like tsr.Graph's plans, with the precision (0 fp32, 1 bf16) and verbose options."""
    return tsr.Plan(graph, device=device, threads=threads, precision=("fp32", "bf16")[precision],
                    verbose=True)


def run_plan(graph, feeds, device, precision=0, threads=2):
    return make_plan(graph, device, precision, threads).run(feeds)


def make_graph(op_type, inputs, attrs, domain="", const_inputs=()):
    g = tsr.Graph()
    names, feeds = [], []
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
            continue
        name = f"in{i}"
        if i in const_inputs:
            g.add_constant(name, x)
        else:
            g.add_input(name, x.dtype, list(x.shape))
            feeds.append(x)
        names.append(name)
    g.add_node(op_type, names, ["out0"], attrs, domain=domain, name="node0")
    g.add_output("out0")
    return g, feeds


def check_against_ref(capfd, op_type, inputs, attrs, domain="", const_inputs=(), bf16=False,
                      backend="dnnl"):
    g, feeds = make_graph(op_type, inputs, attrs, domain, const_inputs)
    want = run_plan(g, feeds, "ref")[0]
    capfd.readouterr()
    plan = make_plan(g, "cpu", precision=1 if bf16 else 0)
    got = plan.run(feeds)[0]
    log = capfd.readouterr().err
    assert plan.node_backend("node0") == backend, log
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got.astype(np.float64) - want).max())
    tol = 2e-2 if bf16 else 1e-4
    assert err <= tol * scale, f"max error {err} vs max |ref| {scale}"
    return log


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def conv_case(seed):
    """A random 2-D convolution: inputs and Conv attributes."""
    rng = np.random.default_rng(seed)
    kind = ["dense", "group", "dw"][seed % 3]
    c = int(rng.choice([3, 5, 24, 33])) if kind == "dense" else int(rng.choice([6, 24, 34]))
    group = {"dense": 1, "group": 2, "dw": c}[kind]
    m = group * (1 if kind == "dw" else int(rng.integers(1, 4))) * (3 if kind == "dense" else 1)
    if kind == "dense":
        m = int(rng.choice([5, 16, 24, 33]))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    n = int(rng.choice([1, 3]))
    h, w = int(rng.integers(kh + 3, 14)), int(rng.integers(kw + 3, 14))
    x = rand(rng, (n, c, h, w))
    wt = rand(rng, (m, c // group, kh, kw))
    attrs = {"group": group, "strides": [int(rng.integers(1, 3)), int(rng.integers(1, 3))],
             "dilations": [int(rng.integers(1, 3)), int(rng.integers(1, 3))]}
    if seed % 4 == 3:
        attrs["auto_pad"] = "SAME_UPPER" if seed % 8 == 3 else "SAME_LOWER"
        attrs["dilations"] = [1, 1]
    else:
        attrs["pads"] = [int(v) for v in rng.integers(0, 3, size=4)]
    return rng, x, wt, attrs


@pytest.mark.parametrize("seed", range(12))
def test_conv(capfd, seed):
    rng, x, w, attrs = conv_case(seed)
    b = rand(rng, (w.shape[0],)) if seed % 2 else None
    check_against_ref(capfd, "Conv", [x, w, b], attrs, const_inputs=(1, 2))


def fused_inputs(seed, with_z):
    rng, x, w, attrs = conv_case(seed)
    b = rand(rng, (w.shape[0],)) if seed % 3 != 1 else None
    inputs = [x, w, b]
    if with_z:
        g, feeds = make_graph("Conv", [x, w, b], attrs, const_inputs=(1, 2))
        y_shape = run_plan(g, feeds, "ref")[0].shape
        inputs.append(rand(rng, y_shape))
    return rng, inputs, attrs


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("with_z", [False, True])
def test_fused_conv(capfd, activation, with_z):
    seed = ACTIVATIONS.index(activation) * 2 + with_z
    rng, inputs, attrs = fused_inputs(seed, with_z)
    attrs["activation"] = activation
    if activation in ("LeakyRelu", "HardSigmoid") and seed % 2:
        attrs["activation_alpha"] = 0.3
        if activation == "HardSigmoid":
            attrs["activation_beta"] = 0.4
    if activation == "Clip":
        attrs["activation_alpha"] = -0.5
        attrs["activation_beta"] = 0.75
    # Scaled so that the activations' bends are crossed.
    inputs[0] = inputs[0] * np.float32(0.3)
    check_against_ref(capfd, "FusedConv", inputs, attrs, domain="ai.tessera",
                      const_inputs=(1, 2))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_z", [False, True])
def test_conv_weights_fed_at_run_time(capfd, seed, with_z):
    """W and B as graph inputs (a training plan's parameters): reordered at
    every run, so a second run with new weights must see them."""
    rng, inputs, attrs = fused_inputs(seed, with_z)
    attrs["activation"] = "Relu" if seed % 2 else ""
    check_against_ref(capfd, "FusedConv", inputs, attrs, domain="ai.tessera")
    if not with_z:
        check_against_ref(capfd, "Conv", inputs[:3], {k: v for k, v in attrs.items()
                                                      if k != "activation"})
    g, feeds = make_graph("FusedConv", inputs, attrs, domain="ai.tessera")
    plan = make_plan(g, "cpu")
    plan.run(feeds)
    feeds[1] = rand(rng, feeds[1].shape)
    got = plan.run(feeds)[0]
    want = run_plan(g, feeds, "ref")[0]
    scale = max(float(np.abs(want).max()), 1e-6)
    assert float(np.abs(got - want).max()) <= 1e-4 * scale


def test_first_layer_plain_and_resnet_block(capfd):
    """An RGB stem (plain input) and a 64-channel conv with a residual."""
    rng = np.random.default_rng(7)
    x = rand(rng, (3, 3, 21, 19))
    w = rand(rng, (64, 3, 7, 7))
    check_against_ref(capfd, "Conv", [x, w, rand(rng, (64,))],
                      {"strides": [2, 2], "pads": [3, 3, 3, 3]}, const_inputs=(1, 2))
    x = rand(rng, (1, 64, 9, 9))
    w = rand(rng, (64, 64, 3, 3)) * np.float32(0.1)
    z = rand(rng, (1, 64, 9, 9))
    check_against_ref(capfd, "FusedConv", [x, w, rand(rng, (64,)), z],
                      {"pads": [1, 1, 1, 1], "activation": "Relu"}, domain="ai.tessera",
                      const_inputs=(1, 2))


def test_refusals_are_explained(capfd):
    """What oneDNN does not take runs elsewhere, and --verbose says why."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 4, 6, 6)), rng.standard_normal((5, 4, 3, 3))
    log = check_against_ref(capfd, "Conv", [x, w], {}, const_inputs=(1,), backend="ref")
    assert "dnnl refused: X is float64" in log
    x, w = rand(rng, (2, 4, 9)), rand(rng, (5, 4, 3))
    log = check_against_ref(capfd, "Conv", [x, w], {}, const_inputs=(1,), backend="ref")
    assert "dnnl refused: X has rank 3" in log
    a, b = rand(rng, (2, 1, 2, 1, 3, 4)), rand(rng, (4, 5))
    log = check_against_ref(capfd, "MatMul", [a, b], {}, backend="ref")
    assert "dnnl refused: A has rank 6 and B rank 2" in log
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    log = check_against_ref(capfd, "Gemm", [a, b], {}, backend="ref")
    assert "dnnl refused: A is float64" in log


C_SHAPES = [None, (), ("n",), (1, "n"), ("m", 1), ("m", "n"), (1, 1)]


@pytest.mark.parametrize("trans", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("c_index", range(len(C_SHAPES)))
def test_gemm(capfd, trans, c_index):
    seed = trans[0] * 2 + trans[1] + 4 * c_index
    rng = np.random.default_rng(seed)
    m, k, n = int(rng.integers(1, 9)), int(rng.integers(1, 40)), int(rng.integers(1, 20))
    a = rand(rng, (k, m) if trans[0] else (m, k))
    b = rand(rng, (n, k) if trans[1] else (k, n))
    shape = C_SHAPES[c_index]
    c = None if shape is None else rand(rng, tuple({"m": m, "n": n}.get(d, d) for d in shape))
    attrs = {"transA": trans[0], "transB": trans[1]}
    if seed % 3:
        attrs["alpha"] = float(rng.choice([0.5, -1.5]))
        attrs["beta"] = float(rng.choice([0.0, 2.0, -0.5]))
    # B and C constant (a classifier layer) or graph inputs.
    const = (1, 2) if seed % 2 == 0 else ()
    check_against_ref(capfd, "Gemm", [a, b, c], attrs, const_inputs=const)


@pytest.mark.parametrize("with_z", [False, True])
def test_dilated_convolution_image_by_image(capfd, with_z):
    """A 3x3 convolution with dilation and padding 12 on a 28x28 map, 512 -> 32 channels
    (deeplabv3's ASPP, narrowed), at batch 3: on AVX-512 oneDNN's blocked jit kernel takes one
    image but not the batch, so the node runs that kernel image by image ("/image" in its
    kernel name) instead of the plain gemm convolution; bias, residual Z and Relu moved on with
    each image, against ref."""
    rng = np.random.default_rng(21)
    x, w, b = rand(rng, (3, 512, 28, 28)), rand(rng, (32, 512, 3, 3)) * 0.05, rand(rng, (32,))
    z = rand(rng, (3, 32, 28, 28)) if with_z else None
    attrs = {"dilations": [12, 12], "pads": [12] * 4, "kernel_shape": [3, 3],
             "activation": "Relu"}
    log = check_against_ref(capfd, "FusedConv", [x, w, b, z], attrs, domain="ai.tessera",
                            const_inputs=(1, 2))
    if isa_skip_reason("avx512") is None:
        assert "jit:avx512_core/image" in log, log


def test_gemm_classifier(capfd):
    rng = np.random.default_rng(11)
    a, b, c = rand(rng, (3, 512)), rand(rng, (1000, 512)), rand(rng, (1000,))
    check_against_ref(capfd, "Gemm", [a, b, c], {"transB": 1}, const_inputs=(1, 2))


MATMUL_SHAPES = [((5, 7), (7, 3)), ((4, 5, 7), (4, 7, 3)), ((4, 5, 7), (7, 3)),
                 ((2, 1, 5, 7), (1, 3, 7, 6)), ((4, 5, 7), (1, 7, 3)), ((7,), (7, 3)),
                 ((4, 5, 7), (7,)), ((3, 1, 7), (2, 1, 7, 9)), ((1, 1), (1, 1))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
@pytest.mark.parametrize("b_const", [False, True])
def test_matmul(capfd, shapes, b_const):
    rng = np.random.default_rng(len(shapes[0]) * 10 + len(shapes[1]))
    a, b = rand(rng, shapes[0]), rand(rng, shapes[1])
    check_against_ref(capfd, "MatMul", [a, b], {}, const_inputs=(1,) if b_const else ())


@pytest.mark.skipif(bf16_skip_reason() is not None, reason=str(bf16_skip_reason()))
def test_bf16(capfd):
    for seed in (0, 1, 2, 5):
        rng, inputs, attrs = fused_inputs(seed, with_z=True)
        attrs["activation"] = "Relu"
        check_against_ref(capfd, "FusedConv", inputs, attrs, domain="ai.tessera",
                          const_inputs=(1, 2), bf16=True)
        check_against_ref(capfd, "FusedConv", inputs, attrs, domain="ai.tessera", bf16=True)
    rng = np.random.default_rng(5)
    a, b, c = rand(rng, (3, 64)), rand(rng, (10, 64)), rand(rng, (10,))
    check_against_ref(capfd, "Gemm", [a, b, c], {"transB": 1}, const_inputs=(1, 2), bf16=True)
    check_against_ref(capfd, "MatMul", [rand(rng, (2, 5, 33)), rand(rng, (33, 7))], {},
                      const_inputs=(1,), bf16=True)


@pytest.mark.parametrize("c", [16, 19])
def test_reorder_of_a_reshape_that_took_over_its_input(capfd, c):
    """A blocked convolution plus a Reshape of a rank-2 intermediate: the Reshape's output
    takes over the arena buffer of its input, and the reorder into the residual's blocked
    layout must read it with the Reshape's shape, not the rank-2 shape of the buffer's first
    value (which failed: "blocked layouts hold rank-4 float tensors, got rank 2")."""
    rng = np.random.default_rng(c)
    x, w, y = rand(rng, (2, c, 5, 7)), rand(rng, (c, c, 3, 3)), rand(rng, (2, c * 35))
    g = tsr.Graph()
    g.add_input("x", "float32", [2, c, 5, 7])
    g.add_input("y", "float32", [2, c * 35])
    g.add_constant("w", w)
    g.add_constant("shape", np.array([2, c, 5, 7], np.int64))
    g.add_node("Conv", ["x", "w"], ["conv"], {"pads": [1, 1, 1, 1]})
    g.add_node("Relu", ["y"], ["y_relu"])
    g.add_node("Reshape", ["y_relu", "shape"], ["r"])
    g.add_node("Add", ["conv", "r"], ["z"])
    g.add_output("z")
    want = run_plan(g, [x, y], "ref")[0]
    got = run_plan(g, [x, y], "cpu")[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))

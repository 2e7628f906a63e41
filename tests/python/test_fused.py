"""FusedConv (domain ai.tessera), the op the conv fusion pass produces,
against the same chain composed in PyTorch: conv, then + Z, then the
activation. Seeded random odd shapes, float32 and float64."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tsr

DTYPES = [np.float32, np.float64]

# name -> (attrs, torch function of the pre-activation tensor)
ACTIVATIONS = {
    "": ({}, lambda t: t),
    "Relu": ({}, F.relu),
    "LeakyRelu": ({"activation_alpha": 0.13}, lambda t: F.leaky_relu(t, 0.13)),
    "LeakyRelu_default": ({}, lambda t: F.leaky_relu(t, 0.01)),
    "Clip": ({"activation_alpha": 0.0, "activation_beta": 6.0}, lambda t: t.clamp(0.0, 6.0)),
    "Clip_lower_only": ({"activation_alpha": -0.25}, lambda t: t.clamp(min=-0.25)),
    "Sigmoid": ({}, torch.sigmoid),
    "HardSigmoid": ({"activation_alpha": 0.3, "activation_beta": 0.4},
                    lambda t: (0.3 * t + 0.4).clamp(0.0, 1.0)),
    "HardSigmoid_default": ({}, lambda t: (0.2 * t + 0.5).clamp(0.0, 1.0)),
    "HardSwish": ({}, F.hardswish),
    "Tanh": ({}, torch.tanh),
}


def close(got, ref):
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == ref.dtype
    scale = max(float(np.abs(ref).max()), 1.0)
    tol = 1e-4 if ref.dtype == np.float32 else 1e-10
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= tol * scale, f"max error {err} vs scale {scale}"


def torch_fused(x, w, b, z, act, stride, dilation, group, pads):
    n = x.ndim - 2
    tpad = []
    for i in reversed(range(n)):
        tpad += [pads[i], pads[n + i]]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    bt = torch.from_numpy(b) if b is not None else None
    y = conv(F.pad(torch.from_numpy(x), tpad), torch.from_numpy(w), bt, stride=stride,
             dilation=dilation, groups=group)
    if z is not None:
        y = y + torch.from_numpy(z)
    return ACTIVATIONS[act][1](y).numpy()


def run_fused(x, w, b, z, attrs):
    return tsr.run_op("FusedConv", [x, w, b, z], attrs, domain="ai.tessera",
                      const_inputs=(1, 2))[0]


def conv_case(rng, dtype, spatial=2):
    """Random Conv geometry with odd sizes: returns x, w, b, attrs, torch args."""
    group = int(rng.choice([1, 3]))
    c = group * int(rng.integers(1, 4))
    m = group * int(rng.integers(1, 4))
    ks = [int(rng.integers(1, 4)) for _ in range(spatial)]
    stride = [int(rng.integers(1, 3)) for _ in range(spatial)]
    dilation = [int(rng.integers(1, 3)) for _ in range(spatial)]
    pads = [int(rng.integers(0, 2)) for _ in range(2 * spatial)]
    size = [int(rng.integers(5, 10)) for _ in range(spatial)]
    x = rng.standard_normal([int(rng.integers(1, 3)), c] + size).astype(dtype)
    w = rng.standard_normal([m, c // group] + ks).astype(dtype)
    b = rng.standard_normal([m]).astype(dtype)
    attrs = {"group": group, "strides": stride, "dilations": dilation, "pads": pads,
             "kernel_shape": ks}
    return x, w, b, attrs, (stride, dilation, group, pads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("with_b,with_z", [(True, True), (False, True), (True, False),
                                           (False, False)])
def test_fused_conv(dtype, act, with_b, with_z):
    rng = np.random.default_rng([sorted(ACTIVATIONS).index(act), with_b, with_z])
    x, w, b, attrs, targs = conv_case(rng, dtype)
    b = b if with_b else None
    ref_no_z = torch_fused(x, w, b, None, "", *targs)
    z = rng.standard_normal(ref_no_z.shape).astype(dtype) if with_z else None
    ref = torch_fused(x, w, b, z, act, *targs)
    attrs = dict(attrs, **ACTIVATIONS[act][0])
    if act:
        attrs["activation"] = act.split("_")[0]
    close(run_fused(x, w, b, z, attrs), ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spatial", [1, 3])
def test_fused_conv_other_ranks(dtype, spatial):
    rng = np.random.default_rng(10 + spatial)
    x, w, b, attrs, targs = conv_case(rng, dtype, spatial)
    z = rng.standard_normal(torch_fused(x, w, b, None, "", *targs).shape).astype(dtype)
    attrs = dict(attrs, activation="Relu")
    close(run_fused(x, w, b, z, attrs), torch_fused(x, w, b, z, "Relu", *targs))


def test_fused_conv_depthwise_auto_pad():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 9, 7)).astype(np.float32)
    w = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    z = rng.standard_normal((2, 5, 9, 7)).astype(np.float32)
    attrs = {"group": 5, "auto_pad": "SAME_UPPER", "activation": "Clip", "activation_alpha": 0.0,
             "activation_beta": 6.0}
    ref = torch_fused(x, w, None, z, "Clip", [1, 1], [1, 1], 5, [1, 1, 1, 1])
    close(run_fused(x, w, None, z, attrs), ref)


def test_fused_conv_nan_propagates():
    x = np.full((1, 1, 3, 3), np.nan, np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    for act in ["Relu", "Clip", "HardSwish"]:
        y = run_fused(x, w, None, None, {"activation": act})
        assert np.isnan(y).all(), act


def test_fused_conv_errors():
    x = np.zeros((1, 3, 5, 5), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="activation 'Gelu' is not supported"):
        run_fused(x, w, None, None, {"activation": "Gelu"})
    with pytest.raises(tsr.TesseraError, match=r"Z has shape \[1, 4, 5, 5\].*\[1, 4, 3, 3\]"):
        run_fused(x, w, None, np.zeros((1, 4, 5, 5), np.float32), {})
    with pytest.raises(tsr.TesseraError, match="does not broadcast"):
        run_fused(x, w, None, np.zeros((4, 1, 1), np.float32), {})
    with pytest.raises(tsr.TesseraError, match="Z is float64"):
        run_fused(x, w, None, np.zeros((1, 4, 3, 3), np.float64), {})
    with pytest.raises(tsr.TesseraError, match="channels"):
        run_fused(np.zeros((1, 2, 5, 5), np.float32), w, None, None, {"activation": "Relu"})


def test_fused_conv_threads():
    """A large output with two threads: the parallel epilogue loop."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 101, 99)).astype(np.float32)
    w = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    z = rng.standard_normal((1, 7, 99, 97)).astype(np.float32)
    ref = torch_fused(x, w, None, z, "Sigmoid", [1, 1], [1, 1], 1, [0, 0, 0, 0])
    got = tsr.run_op("FusedConv", [x, w, None, z], {"activation": "Sigmoid"},
                     domain="ai.tessera", const_inputs=(1,), threads=2)[0]
    close(got, ref)

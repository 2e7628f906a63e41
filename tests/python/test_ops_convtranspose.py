"""ConvTranspose against torch.nn.ConvTranspose1d/2d/3d exported to ONNX (odd sizes, groups,
dilation, output_padding, stride larger than the kernel, padding), against a numpy reading of
the ONNX spec for what torch does not export (auto_pad SAME_UPPER/SAME_LOWER/VALID,
output_shape, kernel_shape), the cpu device (oneDNN's deconvolution for 2-D float32) against
ref, gradients of X, W and B against finite differences in float64, a symbolic batch, and
the errors for bad attributes."""

import io
import itertools
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn

import tsr

DEVICES = ["ref", "cpu"]


def close(got, want, rel):
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert got.shape == want.shape, (got.shape, want.shape)
    assert err <= rel * scale, f"error {err:.3g} exceeds {rel:g} of max |y| = {scale:.3g}"


def onnx_bytes(module, x, opset=13):
    buf = io.BytesIO()
    module.eval()
    torch.onnx.export(module, (x,), buf, opset_version=opset)
    return buf.getvalue()


# (dims, in_channels, out_channels, kernel, stride, padding, output_padding, groups, dilation,
#  bias, spatial size)
TORCH_CASES = [
    (1, 3, 5, 3, 1, 0, 0, 1, 1, True, (7,)),
    (1, 4, 6, 4, 3, 2, 1, 2, 1, False, (9,)),
    (1, 2, 3, 2, 5, 0, 3, 1, 2, True, (4,)),  # stride > kernel
    (2, 3, 4, 3, 2, 1, 1, 1, 1, True, (5, 7)),
    (2, 4, 6, (3, 2), (2, 3), (1, 0), (1, 2), 2, (1, 2), True, (6, 5)),
    (2, 6, 6, 3, 1, 1, 0, 6, 1, True, (8, 9)),  # depthwise
    (2, 2, 3, (1, 2), (4, 3), 0, (3, 1), 1, 1, False, (3, 4)),  # stride > kernel
    (2, 3, 2, 3, 2, 0, 1, 1, 3, True, (4, 5)),
    (2, 3, 2, 3, (1, 2), 0, (2, 1), 1, 3, True, (4, 5)),  # output_padding below dilation only
    (3, 2, 4, 2, 2, 0, 1, 2, 1, True, (3, 4, 3)),
    (3, 3, 2, (3, 1, 2), (1, 2, 3), (1, 0, 1), (0, 1, 2), 1, (2, 1, 1), True, (4, 3, 5)),
]


def torch_module(case, dtype):
    dims, cin, cout, k, s, p, op, groups, dil, bias, _ = case
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
    return cls(cin, cout, k, stride=s, padding=p, output_padding=op, groups=groups,
               dilation=dil, bias=bias).to(dtype)


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: f"{c[0]}d-" + "-".join(
    str(v) for v in c[1:10]))
def test_against_torch(case):
    torch.manual_seed(zlib.crc32(str(case).encode()))
    m = torch_module(case, torch.float64)
    x = torch.randn((2, case[1]) + case[10], dtype=torch.float64)
    with torch.no_grad():
        want = m(x).numpy()
    g = tsr.Graph.load_bytes(onnx_bytes(m, x))
    for device in DEVICES:
        close(tsr.Plan(g, device=device).run([x.numpy()])[0], want, 1e-12)
    m32 = m.float()
    g32 = tsr.Graph.load_bytes(onnx_bytes(m32, x.float()))
    for device in DEVICES:
        close(tsr.Plan(g32, device=device).run([x.float().numpy()])[0], want, 1e-5)


def random_case(rng):
    """A valid torch ConvTranspose configuration of random sizes."""
    dims = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    k = tuple(int(v) for v in rng.integers(1, 5, dims))
    s = tuple(int(v) for v in rng.integers(1, 5, dims))
    d = tuple(int(v) for v in rng.integers(1, 4, dims))
    op = tuple(int(rng.integers(0, max(a, b))) for a, b in zip(s, d))
    size = tuple(int(v) for v in rng.integers(1, 8 if dims < 3 else 5, dims))
    # pads of at most half the kernel's span, none where they would empty the output
    p = tuple(int(rng.integers(0, ((kk - 1) * dd + 1) // 2 + 1)) for kk, dd in zip(k, d))
    p = tuple(pp if ss * (n - 1) + oo + (kk - 1) * dd + 1 - 2 * pp >= 1 else 0
              for pp, ss, n, oo, kk, dd in zip(p, s, size, op, k, d))
    return (dims, cin, cout, k, s, p, op, groups, d, bool(rng.integers(0, 2)), size)


@pytest.mark.parametrize("seed", range(12))
def test_random_configurations_against_torch(seed):
    rng = np.random.default_rng(1000 + seed)
    case = random_case(rng)
    m = torch_module(case, torch.float64)
    torch.manual_seed(seed)
    x = torch.randn((int(rng.integers(1, 3)), case[1]) + case[10], dtype=torch.float64)
    with torch.no_grad():
        want = m(x).numpy()
    g = tsr.Graph.load_bytes(onnx_bytes(m, x))
    for device in DEVICES:
        close(tsr.Plan(g, device=device).run([x.numpy()])[0], want, 1e-12)
    g32 = tsr.Graph.load_bytes(onnx_bytes(m.float(), x.float()))
    close(tsr.Plan(g32, device="cpu").run([x.float().numpy()])[0], want, 1e-5)


def test_cpu_runs_2d_float32_on_onednn():
    torch.manual_seed(3)
    m = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    x = torch.randn(3, 8, 11, 13)
    with torch.no_grad():
        want = m(x).numpy().astype(np.float64)
    g = tsr.Graph.load_bytes(onnx_bytes(m, x))
    plan = tsr.Plan(g, device="cpu", threads=2)
    close(plan.run([x.numpy()])[0], want, 1e-5)
    assert plan.backend_counts().get("dnnl", 0) == 1


# ------------------------------------------------- numpy reading of the spec

def spec_geometry(x_sizes, kernel, attrs):
    """Y's spatial sizes and the pads at its beginning, by the ONNX spec's equations."""
    n = len(x_sizes)
    s = attrs.get("strides", [1] * n)
    d = attrs.get("dilations", [1] * n)
    op = attrs.get("output_padding", [0] * n)
    pads = attrs.get("pads", [0] * 2 * n)
    auto = attrs.get("auto_pad", "NOTSET")
    out_shape = attrs.get("output_shape")
    sizes, begins = [], []
    for i in range(n):
        span = (kernel[i] - 1) * d[i] + 1
        reach = s[i] * (x_sizes[i] - 1) + op[i] + span
        if out_shape is not None:
            out = out_shape[-n:][i]
            total = max(reach - out, 0)
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            out = x_sizes[i] * s[i]
            total = max(reach - out, 0)
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
        else:
            begin = pads[i]
            out = reach - pads[i] - pads[n + i]
        sizes.append(out)
        begins.append(begin)
    return sizes, begins


def reference(x, w, b, attrs):
    """Every input position scatters W's taps into Y; taps outside Y are dropped."""
    n = x.ndim - 2
    group = attrs.get("group", 1)
    s = attrs.get("strides", [1] * n)
    d = attrs.get("dilations", [1] * n)
    sizes, begins = spec_geometry(x.shape[2:], w.shape[2:], attrs)
    N, C = x.shape[:2]
    cg, mg = C // group, w.shape[1]
    y = np.zeros((N, mg * group) + tuple(sizes))
    for pos in itertools.product(*[range(v) for v in x.shape[2:]]):
        for tap in itertools.product(*[range(v) for v in w.shape[2:]]):
            at = [pos[i] * s[i] + tap[i] * d[i] - begins[i] for i in range(n)]
            if not all(0 <= at[i] < sizes[i] for i in range(n)):
                continue
            for gr in range(group):
                xs = x[(slice(None), slice(gr * cg, (gr + 1) * cg)) + pos]
                ws = w[(slice(gr * cg, (gr + 1) * cg), slice(None)) + tap]
                y[(slice(None), slice(gr * mg, (gr + 1) * mg)) + tuple(at)] += xs @ ws
    if b is not None:
        y += b.reshape((1, -1) + (1,) * n)
    return y


# (X shape, W shape, attrs, bias)
SPEC_CASES = [
    ((2, 3, 5, 6), (3, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 3]}, True),
    ((1, 2, 5, 4), (2, 3, 2, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 1]}, True),
    ((1, 2, 4, 3), (2, 2, 2, 2), {"auto_pad": "SAME_UPPER", "strides": [3, 4]}, False),
    ((1, 2, 4, 3), (2, 2, 4, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2],
                                  "output_padding": [1, 1], "dilations": [1, 2]}, True),
    ((2, 4, 3, 5), (4, 1, 3, 2), {"auto_pad": "VALID", "strides": [2, 2], "group": 2}, True),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"output_shape": [9, 10], "strides": [2, 2]}, True),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"output_shape": [1, 2, 8, 12], "strides": [2, 2],
                                  "auto_pad": "SAME_UPPER"}, False),
    ((1, 2, 3, 3), (2, 2, 2, 2), {"output_shape": [9, 8], "strides": [2, 2]}, True),
    ((1, 2, 7), (2, 3, 3), {"kernel_shape": [3], "pads": [2, 1], "strides": [2],
                            "output_padding": [1]}, True),
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [1, 2, 3]}, True),
    ((2, 4, 3, 4), (4, 3, 3, 3), {"strides": [3, 2], "dilations": [2, 1], "pads": [1, 0, 2, 1],
                                  "output_padding": [2, 1], "group": 2}, True),
]


def spec_id(c):
    return "x" + "x".join(map(str, c[0])) + "-" + "-".join(
        f"{k}{v if not isinstance(v, list) else '_'.join(map(str, v))}" for k, v in c[2].items())


def spec_inputs(case, dtype):
    xs, ws, attrs, bias = case
    rng = np.random.default_rng(zlib.crc32(spec_id(case).encode()))
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[1] * attrs.get("group", 1)) if bias else None
    return [a.astype(dtype) if a is not None else None for a in (x, w, b)]


@pytest.mark.parametrize("case", SPEC_CASES, ids=[spec_id(c) for c in SPEC_CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_against_numpy_spec(case, dtype):
    x, w, b = spec_inputs(case, dtype)
    want = reference(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), case[2])
    ins = [x, w] + ([b] if b is not None else [])
    rel = 1e-12 if dtype == np.float64 else 1e-5
    for device in DEVICES:
        got = tsr.run_op("ConvTranspose", ins, case[2], device=device, const_inputs=(1, 2))[0]
        close(got, want, rel)


def test_shape_inference_with_a_symbolic_batch():
    g = tsr.Graph()
    g.add_input("X", np.float32, ["N", 4, 5, 7])
    g.add_constant("W", np.ones((4, 3, 3, 2), np.float32))
    g.add_node("ConvTranspose", ["X", "W"], ["Y"], {"strides": [2, 3], "pads": [1, 0, 0, 1],
                                                    "output_padding": [1, 2], "group": 2})
    g.add_output("Y")
    assert g.outputs()[0].shape == ["N", 6, 11, 21]
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 7)).astype(np.float32)
    want = reference(x.astype(np.float64), np.ones((4, 3, 3, 2)), None,
                     {"strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 2],
                      "group": 2})
    close(tsr.Plan(g, device="cpu").run([x])[0], want, 1e-5)


# --------------------------------------------------------------- gradients

GRAD_CASES = [
    ((2, 2, 3), (2, 3, 2), {"strides": [2], "pads": [1, 0], "output_padding": [1]}, True),
    ((1, 4, 3, 2), (4, 1, 2, 3), {"strides": [2, 3], "dilations": [2, 1], "group": 2,
                                  "pads": [0, 1, 1, 0]}, True),
    ((1, 2, 2, 3), (2, 2, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, False),
    ((1, 2, 2, 2), (2, 1, 2, 2), {"strides": [3, 3], "output_padding": [2, 1]}, True),
    ((1, 2, 2, 2, 2), (2, 2, 2, 1, 2), {"strides": [2, 1, 2], "auto_pad": "SAME_LOWER"}, True),
    ((1, 2, 2, 3), (2, 2, 2, 2), {"strides": [2, 2], "output_shape": [5, 7]}, True),
    # Y reaches a stride or more past the kernel: dY's tail is sliced off
    ((1, 1, 3), (1, 1, 2), {"strides": [1], "dilations": [3], "output_padding": [2]}, True),
    ((1, 2, 2, 2), (2, 1, 2, 2), {"strides": [2, 2], "output_shape": [8, 5]}, True),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[spec_id(c) for c in GRAD_CASES])
def test_gradient_against_finite_differences(case):
    x, w, b = spec_inputs(case, np.float64)
    names = ["X", "W", "B"][:2 + (b is not None)]
    feeds = [a for a in (x, w, b) if a is not None]
    g = tsr.Graph()
    for name, a in zip(names, feeds):
        g.add_input(name, np.float64, list(a.shape))
    g.add_node("ConvTranspose", names, ["Y"], case[2])
    g.add_output("Y")
    plan = tsr.Plan(g)
    rng = np.random.default_rng(7)
    seed = rng.standard_normal(plan.run(feeds)[0].shape)
    grads = tsr.Plan(tsr.gradient(g, ["Y"], names)).run(feeds + [seed])[1:]

    def loss(values):
        return float(np.sum(plan.run(values)[0] * seed))

    eps = 1e-6
    for k, name in enumerate(names):
        xs = [f.copy() for f in feeds]
        fd = np.zeros_like(xs[k])
        for idx in np.ndindex(fd.shape):
            saved = xs[k][idx]
            xs[k][idx] = saved + eps
            hi = loss(xs)
            xs[k][idx] = saved - eps
            lo = loss(xs)
            xs[k][idx] = saved
            fd[idx] = (hi - lo) / (2 * eps)
        err = float(np.max(np.abs(grads[k] - fd)))
        assert err <= 1e-6 * max(float(np.max(np.abs(fd))), 1e-3), f"d/d{name}: error {err:.3g}"


def test_cpu_gradient_matches_ref_with_a_symbolic_batch():
    rng = np.random.default_rng(11)
    g = tsr.Graph()
    g.add_input("X", np.float32, ["N", 4, 6, 5])
    g.add_input("W", np.float32, [4, 3, 3, 3])
    g.add_node("ConvTranspose", ["X", "W"], ["Y"], {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                                    "output_padding": [1, 0]})
    g.add_output("Y")
    grad = tsr.gradient(g, ["Y"], ["X", "W"])
    x = rng.standard_normal((3, 4, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    seed = rng.standard_normal((3, 3, 12, 9)).astype(np.float32)
    want = tsr.Plan(grad, device="ref").run([x, w, seed])
    got = tsr.Plan(grad, device="cpu", threads=2).run([x, w, seed])
    for a, e in zip(got, want):
        close(a, e.astype(np.float64), 1e-5)


def test_gradient_refuses_output_shape_over_unknown_spatial_sizes():
    g = tsr.Graph()
    g.add_input("X", np.float64, [1, 1, "L"])
    g.add_input("W", np.float64, [1, 1, 2])
    g.add_node("ConvTranspose", ["X", "W"], ["Y"], {"strides": [2], "output_shape": [9]})
    g.add_output("Y")
    with pytest.raises(tsr.TesseraError, match="pads depend on spatial sizes"):
        tsr.gradient(g, ["Y"], ["X"])


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("xs, ws, attrs, message", [
    ((1, 2, 4), (2, 1, 3), {"output_padding": [2], "strides": [2]}, "output_padding"),
    ((1, 3, 4), (2, 1, 3), {}, "X has 3 channels"),
    ((1, 4, 4), (4, 1, 3), {"group": 3}, "not divisible by group"),
    ((1, 2, 4), (2, 1, 3), {"auto_pad": "SAME_UPPER", "pads": [1, 1]}, "cannot be combined"),
    ((1, 2, 4), (2, 1, 3), {"auto_pad": "FULL"}, "auto_pad 'FULL'"),
    ((1, 2, 4), (2, 1, 3), {"kernel_shape": [2]}, "kernel_shape"),
    ((1, 2, 4), (2, 1, 3), {"output_shape": [1, 9]}, "output_shape has 2 values"),
    ((1, 2, 2), (2, 1, 3), {"pads": [3, 3]}, "output size"),
    ((1, 2), (2, 1), {}, "rank 2"),
])
def test_bad_nodes_are_refused_with_a_reason(xs, ws, attrs, message):
    with pytest.raises(tsr.TesseraError, match=message):
        tsr.run_op("ConvTranspose", [np.zeros(xs), np.zeros(ws)], attrs)

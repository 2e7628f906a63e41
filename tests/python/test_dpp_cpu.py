"""Detail-Preserving Pooling on the cpu device (src/backends/cpu/kernels_dpp.c)
against the reference backend, forward and backward, on seeded random shapes
and every variant (lite/full, paper/ratio, symmetric/asymmetric, windows,
strides, pads, ceil_mode, auto_pad), with the data reaching the op blocked
(nChw8c, nChw16c) or plain and on every instruction set this machine has;
a few cases also against the float64 PyTorch implementation (dpp_torch.py),
and large inputs (|x| ~ 1e3). float64 stays on the reference backend.

Data reaches the op blocked the way test_cpu_kernels.py does it: an identity
1x1 Conv, then a 1x1 MaxPool so that the passes cannot fuse anything into
the op under test."""

import math

import numpy as np
import pytest
import torch

import dpp_torch
import test_cpu_kernels as ck
import tsr

DOMAIN = "ai.tessera"
CHANNELS = [1, 3, 8, 13, 16, 24, 33]

pytestmark = pytest.mark.skipif(not ck._has_cpu_device(), reason="this build has no cpu device")


cpu_env = ck.cpu_env  # every layout and instruction set, those the machine lacks as skips


def variant(seed):
    """Attributes and filter size of case `seed`, cycling through the variants."""
    rng = np.random.default_rng(1000 + seed)
    kernel = [(2, 2), (3, 3), (3, 2), (2, 2), (1, 2)][seed % 5]
    if seed % 7 == 6:
        attrs = dict(kernel_shape=list(kernel), auto_pad="SAME_UPPER")
    else:
        stride = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        pads = [int(rng.integers(0, kernel[i % 2])) if seed % 4 >= 2 else 0 for i in range(4)]
        attrs = dict(kernel_shape=list(kernel), pads=pads, ceil_mode=int(seed % 3 == 1))
        if seed % 5 != 3:  # otherwise the default: strides = kernel
            attrs["strides"] = stride
    attrs.update(symmetric=int(seed % 2 == 0), normalization=["paper", "ratio"][(seed // 2) % 2],
                 epsilon=math.sqrt(1e-3) * float(rng.uniform(0.5, 2.0)))
    return attrs, (seed // 3) % 2 == 1


def out_size(size, kernel, stride, pad_begin, pad_end, ceil_mode, auto_pad):
    if auto_pad == "SAME_UPPER":
        return -(-size // stride)
    return dpp_torch.pooled_size(size, kernel, stride, pad_begin, pad_end, ceil_mode)


def filter_for(attrs, h, w):
    """A pre-filter size (fh, fw) whose output matches the pooling's, or None."""
    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs.get("strides", [kh, kw])
    pads = attrs.get("pads", [0, 0, 0, 0])
    ceil, auto = attrs.get("ceil_mode", 0), attrs.get("auto_pad", "NOTSET")
    oh = out_size(h, kh, sh, pads[0], pads[2], ceil, auto)
    ow = out_size(w, kw, sw, pads[1], pads[3], ceil, auto)
    sizes = []
    for size, out, s in ((h, oh, sh), (w, ow, sw)):
        fit = [f for f in (3, 2, 1, 4, 5) if (size + 2 * ((f - 1) // 2) - f) // s + 1 == out]
        if not fit:
            return None, (oh, ow)
        sizes.append(fit[0])
    return tuple(sizes), (oh, ow)


def case(seed, scale=1.0):
    """(attrs, x, alpha, lambda, filter or None, dy) for case `seed`."""
    rng = np.random.default_rng(seed)
    attrs, full = variant(seed)
    c = CHANNELS[seed % len(CHANNELS)]
    n = int(rng.integers(1, 3))
    for tries in range(40):
        if tries == 20 and "pads" in attrs:
            # No pre-filter fits these pads: keep the variant, drop the padding.
            attrs.update(pads=[0, 0, 0, 0], ceil_mode=0)
        h, w = (int(v) for v in rng.integers(3, 12, size=2))
        fsize, (oh, ow) = filter_for(attrs, h, w)
        if not full or fsize:
            break
    else:
        full = False
    x = (rng.standard_normal((n, c, h, w)) * scale).astype(np.float32)
    alpha = (rng.standard_normal(c) * 0.7).astype(np.float32)
    lam = (rng.standard_normal(c) * 0.7).astype(np.float32)
    filt = (rng.standard_normal((c, 1) + fsize) * 0.3).astype(np.float32) if full else None
    dy = rng.standard_normal((n, c, oh, ow)).astype(np.float32)
    return attrs, x, alpha, lam, filt, dy


def build(attrs, x, alpha, lam, filt, dy=None, params_as_inputs=False, blocked=True):
    """Graph x [, dy] -> blocked -> DPP or its backward; the parameters are
    constants or graph inputs. Returns the graph and its feeds."""
    c = x.shape[1]
    g = tsr.Graph()
    g.set_opset(17)
    feeds, names = [], []
    main = [("dy", dy)] if dy is not None else []
    main.append(("x", x))
    for name, arr in main:
        g.add_input(name, np.float32, list(arr.shape))
        feeds.append(arr)
        names.append(ck.blocked(g, name, c) if blocked else name)
    params = [("alpha", alpha), ("lambda", lam)] + ([("filter", filt)] if filt is not None else [])
    for name, arr in params:
        if params_as_inputs:
            g.add_input(name, np.float32, list(arr.shape))
            feeds.append(arr)
        else:
            g.add_constant(name, arr)
        names.append(name)
    if dy is None:
        outs = ["y"]
        g.add_node("DetailPreservingPool", names, outs, attrs, domain=DOMAIN, name="dpp")
    else:
        outs = ["dx", "dalpha", "dlambda"] + (["dfilter"] if filt is not None else [])
        g.add_node("DetailPreservingPoolGrad", names, outs, attrs, domain=DOMAIN, name="dpp")
    for o in outs:
        g.add_output(o)
    return g, feeds


def run_cpu(g, feeds, depth_first=-1):
    """The outputs on the cpu device, whose cpu backend must run the DPP node."""
    plan = tsr.Plan(g, device="cpu", threads=2, depth_first=depth_first)
    got = plan.run(feeds)
    assert plan.node_backend("dpp") == "cpu", plan.node_backend("dpp")
    return got


def run_both(g, feeds, depth_first=-1):
    return run_cpu(g, feeds, depth_first), tsr.Plan(g, device="ref", threads=1).run(feeds)


def check_close(got, want, rtol=1e-5, what=""):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.all(np.isfinite(got)), what
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    assert err <= rtol * scale + 1e-30, f"{what}: max error {err:.3g} vs max |ref| {scale:.3g}"


# Every variant: 22 is the full, symmetric, ratio one.
SEEDS = list(range(14)) + [22]


def test_forward(cpu_env):
    """Whole (depth_first 0) and by bands in a depth-first stack with the
    MaxPool in front of it (1)."""
    for seed in SEEDS:
        attrs, x, alpha, lam, filt, _ = case(seed)
        g, feeds = build(attrs, x, alpha, lam, filt, params_as_inputs=seed % 2 == 1)
        for depth_first in (0, 1):
            got, want = run_both(g, feeds, depth_first)
            check_close(got[0], want[0], what=f"seed {seed} {attrs} full={filt is not None} "
                        f"depth_first={depth_first}")


def test_backward(cpu_env):
    for seed in SEEDS:
        attrs, x, alpha, lam, filt, dy = case(seed)
        g, feeds = build(attrs, x, alpha, lam, filt, dy, params_as_inputs=seed % 3 == 0)
        got, want = run_both(g, feeds)
        for name, a, b in zip(["dx", "dalpha", "dlambda", "dfilter"], got, want):
            check_close(a, b, what=f"seed {seed} {name} {attrs} full={filt is not None}")


@pytest.mark.parametrize("layout", ck.LAYOUTS)
def test_large_inputs(monkeypatch, layout):
    """|x| ~ 1e3: finite and as the reference, forward and backward."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    for seed in range(8):
        attrs, x, alpha, lam, filt, dy = case(seed, scale=1e3)
        g, feeds = build(attrs, x, alpha, lam, filt)
        got, want = run_both(g, feeds)
        check_close(got[0], want[0], what=f"seed {seed} forward")
        g, feeds = build(attrs, x, alpha, lam, filt, dy)
        got, want = run_both(g, feeds)
        for name, a, b in zip(["dx", "dalpha", "dlambda", "dfilter"], got, want):
            check_close(a, b, rtol=2e-5, what=f"seed {seed} {name}")


def test_against_torch(monkeypatch):
    """The cpu kernels against the float64 PyTorch implementation directly."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", "nChw16c")
    for seed in range(6):
        attrs, x, alpha, lam, filt, dy = case(seed)
        if "auto_pad" in attrs:
            continue
        ts = [None if v is None else torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for v in (x, alpha, lam, filt)]
        out = dpp_torch.dpp(*ts, **torch_config(attrs))
        out.backward(torch.from_numpy(dy.astype(np.float64)))
        g, feeds = build(attrs, x, alpha, lam, filt)
        check_close(run_cpu(g, feeds)[0], out.detach().numpy(),
                    rtol=1e-5, what=f"seed {seed} forward")
        g, feeds = build(attrs, x, alpha, lam, filt, dy)
        got = run_cpu(g, feeds)
        for name, a, t in zip(["dx", "dalpha", "dlambda", "dfilter"], got,
                              [t for t in ts if t is not None]):
            check_close(a, t.grad.numpy(), rtol=1e-4, what=f"seed {seed} {name}")


def torch_config(attrs):
    """dpp_torch.dpp's keyword arguments for the op's attributes (no auto_pad)."""
    kh, kw = attrs["kernel_shape"]
    return dict(kernel_size=(kh, kw), stride=tuple(attrs.get("strides", [kh, kw])),
                padding=tuple(attrs.get("pads", [0] * 4)),
                ceil_mode=bool(attrs.get("ceil_mode", 0)), symmetric=bool(attrs["symmetric"]),
                normalization=attrs["normalization"], epsilon=attrs["epsilon"])


def test_special_values(cpu_env):
    """NaN and infinities in the input: the cpu kernels take the logs of a
    window's taps without testing each for special values and retake the
    window's when its sum of y is not finite. Their outputs are NaN, infinite
    or finite where the reference's are, and equal or close to them."""
    for seed in SEEDS:
        attrs, x, alpha, lam, filt, _ = case(seed)
        flat = x.reshape(-1)
        at = np.random.default_rng(seed + 77).choice(flat.size, size=3, replace=False)
        flat[at] = [np.nan, np.inf, -np.inf]
        g, feeds = build(attrs, x, alpha, lam, filt)
        got, want = (r[0] for r in run_both(g, feeds))
        what = f"seed {seed} {attrs} full={filt is not None}"
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
        inf = np.isinf(want)
        np.testing.assert_array_equal(got[inf], want[inf], err_msg=what)
        fin = np.isfinite(want)
        check_close(np.where(fin, got, 0), np.where(fin, want, 0), what=what)


def test_smallest_epsilon(cpu_env):
    """The smallest epsilon float32 takes (its square just above FLT_MIN) on
    windows of equal taps, where every d is 0 and y is eps^2 alone, against
    the float64 PyTorch implementation."""
    for seed in [s for s in SEEDS if "auto_pad" not in case(s)[0]]:
        attrs, x, alpha, lam, filt, _ = case(seed)
        attrs["epsilon"] = 1.1e-19
        x[..., ::2, :] = 0.5
        ts = [None if v is None else torch.tensor(v, dtype=torch.float64)
              for v in (x, alpha, lam, filt)]
        want = dpp_torch.dpp(*ts, **torch_config(attrs)).numpy()
        g, feeds = build(attrs, x, alpha, lam, filt)
        for got, dev in zip(run_both(g, feeds), ("cpu", "ref")):
            check_close(got[0], want, what=f"{dev} seed {seed} {attrs} full={filt is not None}")


def test_plain_input_straight_in(monkeypatch):
    """A graph input fed straight to the op arrives plain: the forward
    reorders it into the blocked layout (it is compute-bound, and blocked
    lanes are channels side by side), the backward takes it as it is."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", "nChw16c")
    attrs, x, alpha, lam, filt, dy = case(4)
    for grad in (False, True):
        g, feeds = build(attrs, x, alpha, lam, filt, dy if grad else None, blocked=False)
        got, want = run_both(g, feeds)
        for a, b in zip(got, want):
            check_close(a, b)


def test_float64_runs_on_ref(capfd, monkeypatch):
    """float64 is refused by the cpu backend with its reason and runs on ref."""
    monkeypatch.setenv("TSR_VERBOSE", "1")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 6, 6))
    alpha, lam = rng.standard_normal(5) * 0.5, rng.standard_normal(5) * 0.5
    got = tsr.run_op("DetailPreservingPool", [x, alpha, lam], {}, domain=DOMAIN, device="cpu")[0]
    err = capfd.readouterr().err
    assert "cpu refused: float64: the ref backend runs float64" in err, err
    want = tsr.run_op("DetailPreservingPool", [x, alpha, lam], {}, domain=DOMAIN)[0]
    np.testing.assert_array_equal(got, want)



@pytest.mark.parametrize("layout", ["nChw8c", "nChw16c"])
def test_thread_counts_agree(monkeypatch, layout):
    """1, 2 and 3 threads (each with its own scratch lines) give the same
    forward and backward, bit for bit, on odd heights and widths."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 24, 21, 19)).astype(np.float32)
    alpha, lam = (rng.standard_normal(24) * 0.7).astype(np.float32), (
        rng.standard_normal(24) * 0.7).astype(np.float32)
    filt = (rng.standard_normal((24, 1, 2, 2)) * 0.3).astype(np.float32)
    dy = rng.standard_normal((2, 24, 10, 9)).astype(np.float32)
    for f in (None, filt):
        for grad in (None, dy):
            g, feeds = build(dict(kernel_shape=[2, 2], strides=[2, 2]), x, alpha, lam, f, grad)
            want = tsr.Plan(g, device="ref", threads=1).run(feeds)
            runs = [tsr.Plan(g, device="cpu", threads=t, depth_first=0).run(feeds)
                    for t in (1, 2, 3)]
            for got in runs:
                for a, b, r in zip(got, runs[0], want):
                    np.testing.assert_array_equal(a, b)
                    check_close(a, r, rtol=2e-5, what=f"full={f is not None} grad={grad is not None}")

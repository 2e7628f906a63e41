"""DetailPreservingPool and DetailPreservingPoolGrad (domain ai.tessera)
against the PyTorch implementation in dpp_torch.py, written from the
formulas with unfold (autograd gives the reference gradients); finite
differences of Tessera's own forward against its backward op; the limits
(average and max pooling); large inputs; errors; and a small CNN with DPP
layers exported from PyTorch to ONNX and run in Tessera."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dpp_torch
import tsr

DOMAIN = "ai.tessera"


def run_dpp(x, alpha, lam, filt, attrs, threads=1):
    inputs = [x, alpha, lam] + ([filt] if filt is not None else [])
    return tsr.run_op("DetailPreservingPool", inputs, attrs, domain=DOMAIN, threads=threads)[0]


def run_grad(dy, x, alpha, lam, filt, attrs, threads=1):
    inputs = [dy, x, alpha, lam] + ([filt] if filt is not None else [])
    return tsr.run_op("DetailPreservingPoolGrad", inputs, attrs, domain=DOMAIN,
                      n_outputs=4 if filt is not None else 3, threads=threads)


def close(got, ref, tol):
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = max(float(np.abs(ref).max()), 1.0)
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= tol * scale, f"max error {err} vs scale {scale}"


def torch_reference(x, alpha, lam, filt, cfg, dy):
    """Forward and the gradients of sum(dy * out) for every input, in float64."""
    ts = [None if v is None else torch.tensor(v, dtype=torch.float64, requires_grad=True)
          for v in (x, alpha, lam, filt)]
    out = dpp_torch.dpp(*ts, **cfg)
    out.backward(torch.from_numpy(dy.astype(np.float64)))
    return out.detach().numpy(), [t.grad.numpy() for t in ts if t is not None]


def to_attrs(cfg):
    kh, kw = cfg["kernel_size"]
    return dict(kernel_shape=[kh, kw], strides=list(cfg["stride"]), pads=list(cfg["padding"]),
                ceil_mode=int(cfg["ceil_mode"]), symmetric=int(cfg["symmetric"]),
                normalization=cfg["normalization"], epsilon=cfg["epsilon"])


def filter_size(size, out, stride):
    """A pre-filter size along one dim whose output matches the pooling's."""
    for f in (3, 2, 1, 4, 5):
        if (size + 2 * ((f - 1) // 2) - f) // stride + 1 == out:
            return f
    return None


def random_case(seed, dtype=np.float64, small=False):
    """A seeded case cycling through windows, strides, padding, ceil_mode,
    symmetry, lite/full and both normalizations (small: one image, two
    channels, for finite differences)."""
    rng = np.random.default_rng(seed)
    kernel = [(2, 2), (3, 3), (3, 2)][seed % 3]
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    padded = seed % 4 >= 2
    pads = tuple(int(rng.integers(0, kernel[i % 2])) if padded else 0 for i in range(4))
    ceil_mode = seed % 5 in (1, 3)
    cfg = dict(kernel_size=kernel, stride=stride, padding=pads, ceil_mode=ceil_mode,
               symmetric=seed % 2 == 0, normalization=["paper", "ratio"][(seed // 2) % 2],
               epsilon=math.sqrt(1e-3) * float(rng.uniform(0.5, 2.0)))
    full = (seed // 3) % 2 == 1
    n, c = (1, 2) if small else (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    # A pre-filter's output has ceil(H / s) or (H - 2) // s + 1 positions;
    # where no filter size fits, the full variant tries other padding.
    other = [((ph, pw, ph, pw), False) for ph in (0, 1) for pw in (0, 1)]
    tries = [(pads, ceil_mode)] + (other if full else [])
    for pads, ceil_mode in tries:
        for h in range((5 if small else 6) + seed % 4, 20):
            w = h + 1 + seed % 3
            oh = dpp_torch.pooled_size(h, kernel[0], stride[0], pads[0], pads[2], ceil_mode)
            ow = dpp_torch.pooled_size(w, kernel[1], stride[1], pads[1], pads[3], ceil_mode)
            fh, fw = filter_size(h, oh, stride[0]), filter_size(w, ow, stride[1])
            if not full or (fh and fw):
                break
        if not full or (fh and fw):
            break
    cfg["padding"], cfg["ceil_mode"] = pads, ceil_mode
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    alpha = (rng.standard_normal(c) * 0.7).astype(dtype)
    lam = (rng.standard_normal(c) * 0.5 + 0.3).astype(dtype)
    filt = rng.standard_normal((c, 1, fh, fw)).astype(dtype) * 0.5 if full else None
    dy = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    return x, alpha, lam, filt, cfg, dy


# ------------------------------------------------------------ against torch


@pytest.mark.parametrize("seed", range(24))
def test_forward_and_gradients_float64(seed):
    x, alpha, lam, filt, cfg, dy = random_case(seed)
    ref, grads = torch_reference(x, alpha, lam, filt, cfg, dy)
    attrs = to_attrs(cfg)
    close(run_dpp(x, alpha, lam, filt, attrs, threads=1 + seed % 2), ref, 1e-10)
    got = run_grad(dy, x, alpha, lam, filt, attrs, threads=1 + seed % 2)
    assert len(got) == len(grads)
    for g, r in zip(got, grads):
        close(g, r, 1e-10)


@pytest.mark.parametrize("seed", range(0, 24, 5))
def test_forward_and_gradients_float32(seed):
    x, alpha, lam, filt, cfg, dy = random_case(seed, np.float32)
    ref, grads = torch_reference(x, alpha, lam, filt, cfg, dy)
    attrs = to_attrs(cfg)
    out = run_dpp(x, alpha, lam, filt, attrs)
    assert out.dtype == np.float32
    close(out, ref, 1e-4)
    for g, r in zip(run_grad(dy, x, alpha, lam, filt, attrs), grads):
        assert g.dtype == np.float32
        close(g, r, 1e-4)


def test_defaults():
    """No attributes: 2x2 window, stride 2, epsilon sqrt(1e-3), symmetric, paper."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 8, 7))
    alpha, lam = rng.standard_normal(3), rng.standard_normal(3)
    ref = dpp_torch.dpp(*(torch.from_numpy(v) for v in (x, alpha, lam)))
    close(run_dpp(x, alpha, lam, None, {}), ref.numpy(), 1e-10)


def test_thread_count_does_not_change_results():
    x, alpha, lam, filt, cfg, dy = random_case(7)
    attrs = to_attrs(cfg)
    one = run_grad(dy, x, alpha, lam, filt, attrs, threads=1)
    three = run_grad(dy, x, alpha, lam, filt, attrs, threads=3)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------ finite differences


@pytest.mark.parametrize("seed", [3, 4, 10, 17])
def test_backward_matches_finite_differences(seed):
    """Central differences of Tessera's forward (float64) against its
    backward op, for every input element of a small case."""
    x, alpha, lam, filt, cfg, dy = random_case(seed, small=True)
    attrs = to_attrs(cfg)
    grads = run_grad(dy, x, alpha, lam, filt, attrs)
    inputs = [x, alpha, lam] + ([filt] if filt is not None else [])
    h = 1e-6
    for arr, grad in zip(inputs, grads):
        numeric = np.empty_like(arr)
        for i in range(arr.size):
            saved = arr.flat[i]
            arr.flat[i] = saved + h
            up = float((dy * run_dpp(x, alpha, lam, filt, attrs)).sum())
            arr.flat[i] = saved - h
            down = float((dy * run_dpp(x, alpha, lam, filt, attrs)).sum())
            arr.flat[i] = saved
            numeric.flat[i] = (up - down) / (2 * h)
        close(grad, numeric, 1e-6)


# ------------------------------------------------------------------ limits


@pytest.mark.parametrize("normalization", ["paper", "ratio"])
@pytest.mark.parametrize("full", [False, True])
def test_lambda_to_zero_is_average_pooling(normalization, full):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 9, 11))
    alpha = rng.standard_normal(3)
    lam = np.full(3, -40.0)
    filt = rng.standard_normal((3, 1, 3, 3)) if full else None
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                 normalization=normalization)
    ref = F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True, count_include_pad=False)
    close(run_dpp(x, alpha, lam, filt, attrs), ref.numpy(), 1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalization", ["paper", "ratio"])
def test_asymmetric_large_lambda_is_max_pooling(dtype, normalization):
    """alpha = 0 exactly (raw -inf): for a fixed alpha > 0 a large lambda
    drives every reward below 1 to zero and leaves the average."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 10, 9)).astype(dtype)
    alpha = np.full(3, -np.inf, dtype)
    ref = F.max_pool2d(torch.from_numpy(x.astype(np.float64)), 2, 2).numpy()
    errors = []
    for lam in (1.0, 3.0, 6.0, 9.0):  # lambda = e^1 ... e^9
        out = run_dpp(x, alpha, np.full(3, lam, dtype), None,
                      dict(symmetric=0, normalization=normalization))
        assert np.isfinite(out).all()
        errors.append(float(np.abs(out - ref).max()))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 1e-3, errors


@pytest.mark.parametrize("normalization", ["paper", "ratio"])
@pytest.mark.parametrize("symmetric", [0, 1])
def test_large_inputs_float32(normalization, symmetric):
    """|x| around 1e3 and lambda up to e^3: finite and accurate in float32,
    where evaluating the paper form directly in float32 overflows."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 4, 12, 12)) * 1e3
    alpha = rng.standard_normal(4) * 0.5
    lam = np.array([0.0, 1.0, 2.0, 3.0])
    cfg = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), ceil_mode=False,
               symmetric=bool(symmetric), normalization=normalization,
               epsilon=math.sqrt(1e-3))
    dy = rng.standard_normal((2, 4, 6, 6))
    ref, grads = torch_reference(x, alpha, lam, None, cfg, dy)
    f32 = [v.astype(np.float32) for v in (x, alpha, lam, dy)]
    attrs = to_attrs(cfg)
    out = run_dpp(f32[0], f32[1], f32[2], None, attrs)
    assert np.isfinite(out).all()
    close(out, ref, 1e-4)
    for g, r in zip(run_grad(f32[3], f32[0], f32[1], f32[2], None, attrs), grads):
        assert np.isfinite(g).all()
        close(g, r, 1e-4)


# ------------------------------------------------------------------ errors


def expect_error(fragment, *args, grad=False, **kwargs):
    with pytest.raises(tsr.TesseraError) as info:
        (run_grad if grad else run_dpp)(*args, **kwargs)
    assert fragment in str(info.value), str(info.value)


def test_errors():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 2, 8, 8))
    a, lam = np.zeros(2), np.zeros(2)
    expect_error("rank 3", x[0], a, lam, None, {})
    expect_error("alpha must have shape [C] = [2]", x, np.zeros(3), lam, None, {})
    expect_error("lambda must have shape", x, a, np.zeros((2, 1)), None, {})
    expect_error("normalization 'cuda'", x, a, lam, None, dict(normalization="cuda"))
    expect_error("symmetric is 2", x, a, lam, None, dict(symmetric=2))
    expect_error("epsilon is 0", x, a, lam, None, dict(epsilon=0.0))
    # Squares below the dtype's smallest normal number (the weights of a
    # window of equal taps would be 0 / 0).
    f32 = [v.astype(np.float32) for v in (x, a, lam)]
    expect_error("epsilon is 1e-20: its square is below the smallest normal float32 number",
                 *f32, None, dict(epsilon=1e-20))
    expect_error("epsilon must be at least 1.49", x, a, lam, None, dict(epsilon=1e-160))
    run_dpp(*f32, None, dict(epsilon=1.1e-19))
    run_dpp(x, a, lam, None, dict(epsilon=1e-20))
    expect_error("kernel_shape has 1 values", x, a, lam, None, dict(kernel_shape=[2]))
    expect_error("must be smaller than the kernel", x, a, lam, None, dict(pads=[2, 0, 0, 0]))
    expect_error("dtype float32", x, a.astype(np.float32), lam, None, {})
    expect_error("dtype int64", x.astype(np.int64), a, lam, None, {})
    # On 9x9 at stride 2, a 2x2 filter gives 4x4 like the pool, 3x3 gives 5x5.
    x9 = rng.standard_normal((1, 2, 9, 9))
    run_dpp(x9, a, lam, np.zeros((2, 1, 2, 2)), {})
    expect_error("gives 5 positions along spatial dim 0 of size 9, but the pooling output has 4",
                 x9, a, lam, np.zeros((2, 1, 3, 3)), {})
    expect_error("filter must have shape [C, 1, kh, kw]", x, a, lam, np.zeros((2, 2, 3, 3)), {})
    dy = np.zeros((1, 2, 4, 4))
    expect_error("dY has shape [1, 2, 3, 4]", np.zeros((1, 2, 3, 4)), x, a, lam, None, {},
                 grad=True)
    with pytest.raises(tsr.TesseraError, match="no filter input"):
        tsr.run_op("DetailPreservingPoolGrad", [dy, x, a, lam], {}, domain=DOMAIN, n_outputs=4)
    with pytest.raises(tsr.TesseraError, match="unknown op|no op|DetailPreservingPool"):
        tsr.run_op("DetailPreservingPool", [x, a, lam], {})  # default domain


# ------------------------------------------------------ PyTorch to ONNX


class SmallDppNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = dpp_torch.DetailPreservingPool2d(8, kernel_size=2)
        self.conv2 = torch.nn.Conv2d(8, 12, 3, padding=1)
        self.pool2 = dpp_torch.DetailPreservingPool2d(12, kernel_size=3, stride=2, padding=1,
                                                      symmetric=False, full=True,
                                                      normalization="ratio")
        self.fc = torch.nn.Linear(12, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_export_small_cnn(tmp_path):
    torch.manual_seed(0)
    model = SmallDppNet().eval()
    with torch.no_grad():
        for layer in (model.pool1, model.pool2):
            layer.alpha.normal_(0.0, 0.5)
            layer.lambda_.normal_(0.5, 0.3)
        model.pool2.filter.add_(0.05 * torch.randn_like(model.pool2.filter))
    x = torch.randn(2, 3, 17, 16)
    path = tmp_path / "dpp_cnn.onnx"
    dpp_torch.export(model, x, path, input_names=["x"], output_names=["y"])

    import onnx

    proto = onnx.load(str(path))
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    assert ops.count((DOMAIN, "DetailPreservingPool")) == 2, ops
    assert any(o.domain == DOMAIN and o.version == 1 for o in proto.opset_import)

    with torch.no_grad():
        ref = model(x).numpy()
    got = tsr.run_onnx(path, [x.numpy()])[0]
    close(got, ref, 1e-4)

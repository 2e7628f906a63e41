"""Conv, MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool against
torch.nn.functional, on seeded random odd shapes in float32 and float64."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tsr

DTYPES = [np.float32, np.float64]


def close(got, ref):
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == ref.dtype
    scale = max(float(np.abs(ref).max()), 1.0)
    tol = 1e-4 if ref.dtype == np.float32 else 1e-10
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= tol * scale, f"max error {err} vs scale {scale}"


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def torch_conv(x, w, b, stride, dilation, group, pads):
    """pads in ONNX order (begins, then ends) applied with F.pad."""
    n = x.ndim - 2
    tpad = []
    for i in reversed(range(n)):
        tpad += [pads[i], pads[n + i]]
    xt = F.pad(torch.from_numpy(x), tpad)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    bt = torch.from_numpy(b) if b is not None else None
    return conv(xt, torch.from_numpy(w), bt, stride=stride, dilation=dilation, groups=group).numpy()


def run_conv(x, w, b, attrs, threads=1):
    inputs = [x, w] if b is None else [x, w, b]
    return tsr.run_op("Conv", inputs, attrs, const_inputs=(1, 2), threads=threads)[0]


# ------------------------------------------------------------------- Conv


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(8))
def test_conv2d_random(dtype, seed):
    rng = np.random.default_rng(seed)
    group = [1, 2, "dw"][seed % 3]
    c = int(rng.choice([4, 5, 6])) if group != 2 else 6
    group = c if group == "dw" else group
    m = group * int(rng.integers(1, 7))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    dilation = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    pads = [int(v) for v in rng.integers(0, 3, size=4)]
    x = rand(rng, (2, c, 7 + seed % 3, 9), dtype)
    w = rand(rng, (m, c // group, kh, kw), dtype)
    b = rand(rng, (m,), dtype) if seed % 2 == 0 else None
    attrs = dict(strides=stride, dilations=dilation, group=group, pads=pads)
    if seed % 4 == 1:
        attrs["kernel_shape"] = [kh, kw]
    got = run_conv(x, w, b, attrs, threads=1 + seed % 2)
    close(got, torch_conv(x, w, b, stride, dilation, group, pads))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d(dtype):
    rng = np.random.default_rng(11)
    x = rand(rng, (3, 5, 23), dtype)
    w = rand(rng, (7, 5, 4), dtype)
    b = rand(rng, (7,), dtype)
    attrs = dict(strides=[2], dilations=[3], pads=[2, 1])
    close(run_conv(x, w, b, attrs), torch_conv(x, w, b, [2], [3], 1, [2, 1]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv3d(dtype):
    rng = np.random.default_rng(12)
    x = rand(rng, (2, 4, 5, 7, 6), dtype)
    w = rand(rng, (6, 2, 2, 3, 3), dtype)
    b = rand(rng, (6,), dtype)
    pads = [1, 0, 2, 0, 1, 1]
    attrs = dict(strides=[1, 2, 1], dilations=[2, 1, 1], group=2, pads=pads)
    close(run_conv(x, w, b, attrs), torch_conv(x, w, b, [1, 2, 1], [2, 1, 1], 2, pads))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_pointwise_and_long_rows(dtype):
    """1x1 convs run as one flat row per plane, longer than a chunk; long
    1-D rows are chunked too."""
    rng = np.random.default_rng(13)
    x = rand(rng, (2, 9, 37, 41), dtype)
    w = rand(rng, (10, 9, 1, 1), dtype)
    b = rand(rng, (10,), dtype)
    close(run_conv(x, w, b, {}, threads=2), torch_conv(x, w, b, 1, 1, 1, [0] * 4))
    x = rand(rng, (1, 3, 2501), dtype)
    w = rand(rng, (5, 3, 3), dtype)
    close(run_conv(x, w, None, dict(pads=[1, 2])), torch_conv(x, w, None, 1, 1, 1, [1, 2]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_wide_rows_direct(dtype):
    """Rows of 64 or more outputs at stride 1 run the direct loop nest
    (narrower or strided ones go through a column buffer)."""
    rng = np.random.default_rng(17)
    x = rand(rng, (2, 3, 6, 71), dtype)
    w = rand(rng, (9, 3, 3, 4), dtype)
    b = rand(rng, (9,), dtype)
    pads = [2, 1, 0, 3]
    attrs = dict(pads=pads, dilations=[2, 1])
    close(run_conv(x, w, b, attrs, threads=2), torch_conv(x, w, b, 1, [2, 1], 1, pads))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_depthwise_multiplier(dtype):
    rng = np.random.default_rng(14)
    x = rand(rng, (2, 5, 11, 13), dtype)
    w = rand(rng, (10, 1, 3, 3), dtype)
    b = rand(rng, (10,), dtype)
    attrs = dict(group=5, pads=[1, 1, 1, 1], strides=[2, 2])
    close(run_conv(x, w, b, attrs), torch_conv(x, w, b, 2, 1, 5, [1] * 4))


def same_pads(size, kernel, stride, dilation, upper):
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_auto_pad(auto_pad, dtype):
    rng = np.random.default_rng(15)
    x = rand(rng, (2, 3, 8, 9), dtype)
    w = rand(rng, (4, 3, 4, 3), dtype)
    b = rand(rng, (4,), dtype)
    stride, dilation = [2, 3], [1, 2]
    if auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    else:
        (h0, h1), (w0, w1) = [same_pads(s, k, st, d, auto_pad == "SAME_UPPER")
                              for s, k, st, d in zip((8, 9), (4, 3), stride, dilation)]
        pads = [h0, w0, h1, w1]
    got = run_conv(x, w, b, dict(auto_pad=auto_pad, strides=stride, dilations=dilation))
    ref = torch_conv(x, w, b, stride, dilation, 1, pads)
    close(got, ref)
    if auto_pad != "VALID":
        assert got.shape[2:] == (4, 3)


def test_conv_symbolic_batch_and_flops():
    rng = np.random.default_rng(16)
    g = tsr.Graph()
    g.add_input("x", np.float32, ["batch", 6, 9, 7])
    g.add_input("y", np.float32, ["batch", 6, "h", "w"])
    w = rand(rng, (8, 3, 3, 3), np.float32)
    g.add_constant("w", w)
    g.add_constant("w1", rand(rng, (8, 6, 1, 1), np.float32))
    g.add_node("Conv", ["x", "w"], ["c"], dict(group=2, pads=[1, 1, 1, 1], strides=[2, 2]))
    g.add_node("Conv", ["y", "w1"], ["p"], {})
    g.add_output("c")
    g.add_output("p")
    outs = {name: shape for name, _, shape in g.outputs()}
    assert outs["c"] == ["batch", 8, 5, 4]
    assert outs["p"] == ["batch", 8, "h", "w"]  # a 1x1 window keeps symbolic sizes
    plan = tsr.Plan(g)
    x = rand(rng, (3, 6, 9, 7), np.float32)
    y = rand(rng, (3, 6, 4, 5), np.float32)
    got = plan.run([x, y])
    close(got[0], torch_conv(x, w, None, 2, 1, 2, [1] * 4))
    assert plan.stats().flops >= 2 * 3 * 8 * 5 * 4 * 3 * 9
    assert plan.stats().flops == 2 * 3 * 8 * 5 * 4 * 3 * 9 + 2 * 3 * 8 * 4 * 5 * 6


@pytest.mark.parametrize(
    "xs, ws, bs, attrs, words",
    [
        ((1, 5, 7, 7), (4, 3, 3, 3), None, {}, "5 channels"),
        ((1, 6, 7, 7), (5, 3, 3, 3), None, dict(group=2), "divisible by group 2"),
        ((1, 6, 7, 7), (4, 3, 3, 3), None, dict(group=0), "group is 0"),
        ((6, 7, 7), (4, 6, 3, 3), None, {}, "rank"),
        ((1, 6, 7), (4, 6, 3, 3), None, {}, "rank"),
        ((1, 3, 4, 4), (2, 3, 5, 3), None, dict(pads=[0, 0, 0, 0]), "larger than the padded"),
        ((1, 3, 4, 4), (2, 3, 3, 3), (3,), {}, "B has 3 values"),
        ((1, 3, 4, 4), (2, 3, 3, 3), None, dict(pads=[1, 1]), "'pads' has 2 values"),
        ((1, 3, 4, 4), (2, 3, 3, 3), None, dict(strides=[0, 1]), "'strides'[0] is 0"),
        ((1, 3, 4, 4), (2, 3, 3, 3), None, dict(kernel_shape=[3, 2]), "kernel_shape[1] is 2"),
        ((1, 3, 4, 4), (2, 3, 3, 3), None, dict(auto_pad="SAME"), "auto_pad 'SAME'"),
        ((1, 3, 4, 4, 4, 4), (2, 3, 1, 1, 1, 1), None, {}, "1 to 3 spatial dims"),
    ],
)
def test_conv_errors(xs, ws, bs, attrs, words):
    x = np.zeros(xs, np.float32)
    w = np.zeros(ws, np.float32)
    b = np.zeros(bs, np.float32) if bs else None
    with pytest.raises(tsr.TesseraError, match=None) as e:
        run_conv(x, w, b, attrs)
    assert words in str(e.value), str(e.value)


def test_conv_dtype_errors():
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(tsr.TesseraError, match="float64"):
        run_conv(x, np.zeros((2, 3, 3, 3), np.float64), None, {})
    with pytest.raises(tsr.TesseraError, match="int64"):
        run_conv(x.astype(np.int64), np.zeros((2, 3, 3, 3), np.int64), None, {})


# ------------------------------------------------------------------ pools


def torch_pad(x, pads, value):
    n = x.ndim - 2
    tpad = []
    for i in reversed(range(n)):
        tpad += [pads[i], pads[n + i]]
    return F.pad(torch.from_numpy(x), tpad, value=value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(6))
def test_maxpool2d_torch(dtype, seed):
    rng = np.random.default_rng(100 + seed)
    k = [int(rng.integers(2, 4)), int(rng.integers(1, 4))]
    stride = [int(rng.integers(1, 4)), int(rng.integers(1, 3))]
    dilation = [1 + seed % 2, 1]
    pad = [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))]
    ceil = seed % 3 != 0
    x = rand(rng, (2, 5, 7 + seed % 4, 9), dtype)
    attrs = dict(kernel_shape=k, strides=stride, dilations=dilation, pads=pad + pad,
                 ceil_mode=int(ceil))
    y, idx = tsr.run_op("MaxPool", [x], attrs, n_outputs=2, threads=1 + seed % 2)
    ref, ref_idx = F.max_pool2d(torch.from_numpy(x), k, stride, pad, dilation, ceil_mode=ceil,
                                return_indices=True)
    close(y, ref.numpy())
    plane = x.shape[2] * x.shape[3]
    offsets = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[0], x.shape[1], 1, 1) * plane
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx.numpy() + offsets)
    close(tsr.run_op("MaxPool", [x], attrs)[0], ref.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_asymmetric_pads_1d_3d(dtype):
    rng = np.random.default_rng(7)
    x = rand(rng, (2, 3, 6, 7), dtype)
    pads = [0, 2, 1, 1]
    got = tsr.run_op("MaxPool", [x], dict(kernel_shape=[2, 3], pads=pads, strides=[2, 1]))[0]
    ref = F.max_pool2d(torch_pad(x, pads, -math.inf), [2, 3], [2, 1])
    close(got, ref.numpy())
    x = rand(rng, (2, 3, 17), dtype)
    got = tsr.run_op("MaxPool", [x], dict(kernel_shape=[4], strides=[3], pads=[1, 2]))[0]
    close(got, F.max_pool1d(torch_pad(x, [1, 2], -math.inf), 4, 3).numpy())
    got = tsr.run_op("MaxPool", [x], dict(kernel_shape=[4], strides=[3], pads=[1, 1],
                                          ceil_mode=1))[0]
    close(got, F.max_pool1d(torch.from_numpy(x), 4, 3, 1, ceil_mode=True).numpy())
    x = rand(rng, (1, 2, 5, 6, 7), dtype)
    attrs = dict(kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[1, 1, 0, 1, 1, 0])
    got = tsr.run_op("MaxPool", [x], attrs)[0]
    ref = F.max_pool3d(torch.from_numpy(x), [2, 3, 2], [1, 2, 2], [1, 1, 0])
    close(got, ref.numpy())


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_pool_auto_pad(auto_pad):
    rng = np.random.default_rng(8)
    x = rand(rng, (2, 3, 8, 7), np.float32)
    k, stride = [3, 2], [2, 2]
    if auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    else:
        (h0, h1), (w0, w1) = [same_pads(s, kk, st, 1, auto_pad == "SAME_UPPER")
                              for s, kk, st in zip((8, 7), k, stride)]
        pads = [h0, w0, h1, w1]
    attrs = dict(kernel_shape=k, strides=stride, auto_pad=auto_pad)
    got = tsr.run_op("MaxPool", [x], attrs)[0]
    close(got, F.max_pool2d(torch_pad(x, pads, -math.inf), k, stride).numpy())
    got = tsr.run_op("AveragePool", [x], dict(attrs, count_include_pad=1))[0]
    close(got, F.avg_pool2d(torch_pad(x, pads, 0.0), k, stride).numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(8))
def test_avgpool2d_torch(dtype, seed):
    rng = np.random.default_rng(200 + seed)
    k = [int(rng.integers(2, 5)), int(rng.integers(1, 4))]
    stride = [int(rng.integers(1, 4)), int(rng.integers(1, 3))]
    pad = [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))]
    include = seed % 2 == 1
    ceil = seed % 4 >= 2
    x = rand(rng, (2, 5, 7 + seed % 3, 9), dtype)
    attrs = dict(kernel_shape=k, strides=stride, pads=pad + pad, ceil_mode=int(ceil),
                 count_include_pad=int(include))
    got = tsr.run_op("AveragePool", [x], attrs, threads=1 + seed % 2)[0]
    ref = F.avg_pool2d(torch.from_numpy(x), k, stride, pad, ceil_mode=ceil,
                       count_include_pad=include)
    close(got, ref.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_avgpool_asymmetric_pads_1d_3d(dtype):
    rng = np.random.default_rng(9)
    x = rand(rng, (2, 3, 7, 8), dtype)
    pads, k, stride = [2, 0, 1, 1], [3, 2], [2, 1]
    with_pad = tsr.run_op("AveragePool", [x], dict(kernel_shape=k, strides=stride, pads=pads,
                                                   count_include_pad=1))[0]
    without = tsr.run_op("AveragePool", [x], dict(kernel_shape=k, strides=stride, pads=pads))[0]
    sums = F.avg_pool2d(torch_pad(x, pads, 0.0), k, stride) * (k[0] * k[1])
    counts = F.avg_pool2d(torch_pad(np.ones_like(x), pads, 0.0), k, stride) * (k[0] * k[1])
    close(with_pad, (sums / (k[0] * k[1])).numpy())
    close(without, (sums / counts).numpy())
    x = rand(rng, (2, 3, 13), dtype)
    got = tsr.run_op("AveragePool", [x], dict(kernel_shape=[4], strides=[3], pads=[1, 1],
                                              ceil_mode=1, count_include_pad=1))[0]
    ref = F.avg_pool1d(torch.from_numpy(x), 4, 3, 1, ceil_mode=True, count_include_pad=True)
    close(got, ref.numpy())
    x = rand(rng, (1, 2, 5, 6, 7), dtype)
    attrs = dict(kernel_shape=[2, 3, 3], strides=[2, 2, 1], pads=[1, 1, 0, 1, 1, 0])
    got = tsr.run_op("AveragePool", [x], attrs)[0]
    ref = F.avg_pool3d(torch.from_numpy(x), [2, 3, 3], [2, 2, 1], [1, 1, 0],
                       count_include_pad=False)
    close(got, ref.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (3, 4, 11), (2, 3, 4, 5, 3)])
def test_global_pools(dtype, shape):
    rng = np.random.default_rng(len(shape))
    x = rand(rng, shape, dtype)
    n = x.ndim - 2
    xt = torch.from_numpy(x)
    avg = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[n]
    mx = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[n]
    close(tsr.run_op("GlobalAveragePool", [x], threads=2)[0], avg(xt, 1).numpy())
    close(tsr.run_op("GlobalMaxPool", [x])[0], mx(xt, 1).numpy())


def test_pool_symbolic_batch():
    g = tsr.Graph()
    g.add_input("x", np.float32, ["batch", 4, 9, 7])
    g.add_node("MaxPool", ["x"], ["m"], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    g.add_node("GlobalAveragePool", ["m"], ["g"])
    g.add_output("m")
    g.add_output("g")
    outs = {name: shape for name, _, shape in g.outputs()}
    assert outs["m"] == ["batch", 4, 4, 3]
    assert outs["g"] == ["batch", 4, 1, 1]


@pytest.mark.parametrize(
    "op, shape, attrs, n_out, words",
    [
        ("MaxPool", (1, 2, 5, 5), dict(kernel_shape=[2, 2], storage_order=1), 2, "storage_order"),
        ("MaxPool", (1, 2, 5, 5), dict(kernel_shape=[2, 2], pads=[2, 0, 0, 0]), 1, "smaller"),
        ("MaxPool", (1, 2, 5, 5), dict(kernel_shape=[2]), 1, "kernel_shape has 1 values"),
        ("MaxPool", (2, 5), dict(kernel_shape=[2]), 1, "rank 2"),
        ("MaxPool", (1, 2, 3, 3), dict(kernel_shape=[4, 2]), 1, "larger than the padded"),
        ("MaxPool", (1, 2, 5, 5), dict(kernel_shape=[2, 2], ceil_mode=2), 1, "ceil_mode is 2"),
        ("AveragePool", (1, 2, 5, 5), dict(kernel_shape=[2, 2], count_include_pad=3), 1,
         "count_include_pad is 3"),
        ("AveragePool", (1, 2, 5, 5), dict(kernel_shape=[2, 0]), 1, "kernel_shape[1] is 0"),
        ("AveragePool", (1, 2, 5, 5), dict(kernel_shape=[2, 2], strides=[1]), 1, "'strides'"),
        ("GlobalMaxPool", (3, 4), None, 1, "rank 2"),
    ],
)
def test_pool_errors(op, shape, attrs, n_out, words):
    with pytest.raises(tsr.TesseraError) as e:
        tsr.run_op(op, [np.zeros(shape, np.float32)], attrs, n_outputs=n_out)
    assert words in str(e.value), str(e.value)


def test_pool_dtype_error():
    with pytest.raises(tsr.TesseraError, match="int64"):
        tsr.run_op("AveragePool", [np.zeros((1, 1, 4, 4), np.int64)], dict(kernel_shape=[2, 2]))


@pytest.mark.parametrize("include", [0, 1])
def test_pool_ceil_mode_drops_window_in_padding(include):
    """in 5, kernel 2, stride 2, pad 1: ceil gives 4 windows, but the last
    would start in the right padding, so PyTorch (and ONNX) keep 3."""
    rng = np.random.default_rng(10)
    x = rand(rng, (1, 2, 5, 6), np.float64)
    attrs = dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    got = tsr.run_op("MaxPool", [x], attrs)[0]
    ref = F.max_pool2d(torch.from_numpy(x), [2, 3], 2, 1, ceil_mode=True)
    assert got.shape == (1, 2, 3, 4)
    close(got, ref.numpy())
    got = tsr.run_op("AveragePool", [x], dict(attrs, count_include_pad=include))[0]
    ref = F.avg_pool2d(torch.from_numpy(x), [2, 3], 2, 1, ceil_mode=True,
                       count_include_pad=bool(include))
    close(got, ref.numpy())

"""ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp and ReduceSumSquare against numpy on the ref
and cpu devices: odd shapes, negative axes, keepdims 0 and 1, all axes, empty axes with and
without noop_with_empty_axes, the axes attribute (opset 13) and input (opset 18), every dtype
Tessera gives each; the edge values (LogSumExp of large, infinite and -inf inputs, ReduceL2 of
zeros and its gradient, LogSum of an empty group); the refusals; torch.onnx.export of
F.normalize, torch.logsumexp and torch.norm against PyTorch; torchvision's ssd300_vgg16 (slow).
op_cases.py checks ref against cpu and the gradient rules against finite differences."""

import io

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import tsr
from test_onnx_opset18 import close, one

DEVICES = ["ref", "cpu"]
I64 = np.int64


def l1(x, axis, keepdims):
    return np.sum(np.abs(x), axis=axis, keepdims=keepdims)


def l2(x, axis, keepdims):
    return np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))


def log_sum(x, axis, keepdims):
    return np.log(np.sum(x, axis=axis, keepdims=keepdims))


def log_sum_exp(x, axis, keepdims):
    top = np.max(x, axis=axis, keepdims=True)
    y = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
    return y if keepdims else np.squeeze(y, axis=axis)


def sum_square(x, axis, keepdims):
    return np.sum(np.square(x), axis=axis, keepdims=keepdims)


NUMPY = {"ReduceL1": l1, "ReduceL2": l2, "ReduceLogSum": log_sum, "ReduceLogSumExp": log_sum_exp,
         "ReduceSumSquare": sum_square}
INTEGER_OPS = ("ReduceL1", "ReduceSumSquare")


def want(op, x, axes, keepdims, noop):
    """numpy's result; with noop_with_empty_axes and no axes, each element is its own group, so
    the function before and after the sum still applies (ONNX's corrected spec)."""
    if axes is None or len(axes) == 0:
        if noop:
            return NUMPY[op](x[..., None], -1, False).astype(x.dtype)
        axes = range(x.ndim)
    return np.asarray(NUMPY[op](x, tuple(int(a) for a in axes), bool(keepdims))).astype(x.dtype)


def values(rng, op, shape, dtype):
    if np.dtype(dtype).kind != "f":
        return rng.integers(-9, 10, shape).astype(dtype)
    if op == "ReduceLogSum":
        return rng.uniform(0.5, 2.0, shape).astype(dtype)
    return (rng.standard_normal(shape) * 3).astype(dtype)


SHAPES = [((3, 5, 7), [1]), ((2, 3, 1, 5), [-1, 0]), ((7,), [0]), ((4, 3, 5), [2, -3, 1]),
          ((3, 5), None), ((2, 9, 3), [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", sorted(NUMPY))
def test_against_numpy(tmp_path, op, device):
    rng = np.random.default_rng(len(op))
    dtypes = [np.float32, np.float64] + ([np.int32, np.int64] if op in INTEGER_OPS else [])
    for dtype in dtypes:
        for shape, axes in SHAPES:
            for keepdims in (0, 1):
                x = values(rng, op, shape, dtype)
                attrs = {"keepdims": keepdims}
                if axes:
                    attrs["axes"] = axes
                (y,) = one(tmp_path, op, [x], attrs, 13, device)
                close(y, want(op, x, axes, keepdims, 0), dtype)
                for noop in (0, 1):
                    axes_in = None if axes is None else np.array(axes, I64)
                    attrs = {"keepdims": keepdims, "noop_with_empty_axes": noop}
                    (y,) = one(tmp_path, op, [x, axes_in], attrs, 18, device, consts=(1,))
                    close(y, want(op, x, axes, keepdims, noop), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_log_sum_exp_extremes(tmp_path, device):
    """The max is subtracted: 1e4 does not overflow; rows of -inf give -inf, a +inf gives +inf,
    a NaN gives NaN, without NaNs from inf - inf."""
    inf = np.inf
    x = np.array([[1e4, 1e4 - 1.0, -3.0], [-inf, -inf, -inf], [inf, 2.0, -inf],
                  [np.nan, 0.0, 1.0]], np.float32)
    (y,) = one(tmp_path, "ReduceLogSumExp", [x], {"axes": [1], "keepdims": 0}, 13, device)
    assert y[0] == pytest.approx(1e4 + np.log1p(np.exp(-1.0) + np.exp(-3.0 - 1e4)), rel=1e-7)
    assert y[1] == -inf and y[2] == inf and np.isnan(y[3])


@pytest.mark.parametrize("device", DEVICES)
def test_empty_groups(tmp_path, device):
    """Reducing a zero-sized axis: L1, L2 and SumSquare give 0, LogSum and LogSumExp -inf."""
    x = np.zeros((0, 3), np.float32)
    for op, value in [("ReduceL1", 0.0), ("ReduceL2", 0.0), ("ReduceSumSquare", 0.0),
                      ("ReduceLogSum", -np.inf), ("ReduceLogSumExp", -np.inf)]:
        (y,) = one(tmp_path, op, [x], {"axes": [0], "keepdims": 0}, 13, device)
        np.testing.assert_array_equal(y, np.full(3, value, np.float32))


def test_l2_of_zeros_has_zero_gradient():
    """||0|| = 0, and the gradient there is 0 (the norm taken as 1 where it is 0), not NaN; the
    other group's gradient is x / ||x||."""
    g = tsr.Graph()
    g.set_opset(13)
    g.add_input("x", np.float64, [2, 3])
    g.add_node("ReduceL2", ["x"], ["y"], {"axes": [1], "keepdims": 0})
    g.add_output("y")
    x = np.array([[0.0, 0.0, 0.0], [3.0, -4.0, 12.0]])
    gg = tsr.gradient(g, ["y"], ["x"])
    y, dx = tsr.Plan(gg).run([x, np.ones(2)])
    np.testing.assert_array_equal(y, [0.0, 13.0])
    np.testing.assert_allclose(dx, [[0.0, 0.0, 0.0], [3 / 13, -4 / 13, 12 / 13]], rtol=1e-15)


@pytest.mark.parametrize("op", ["ReduceL2", "ReduceLogSum", "ReduceLogSumExp"])
def test_integers_refused(tmp_path, op):
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    with pytest.raises(tsr.TesseraError) as err:
        one(tmp_path, op, [x], {"axes": [1]}, 13)
    assert op in str(err.value) and "int64" in str(err.value)


def test_axes_form_must_match_opset(tmp_path):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError) as err:
        one(tmp_path, "ReduceL1", [x], {"axes": [1]}, 18)
    assert "second input" in str(err.value)
    with pytest.raises(tsr.TesseraError) as err:
        one(tmp_path, "ReduceL2", [x, np.array([1], I64)], {}, 13, consts=(1,))
    assert "attribute" in str(err.value)


class Norms(torch.nn.Module):
    def forward(self, x):
        return (F.normalize(x, dim=1), torch.logsumexp(x, dim=-1, keepdim=True),
                torch.norm(x, p=1, dim=(1, 2)), torch.norm(x, p=2, dim=-1),
                torch.logsumexp(x * 30.0, dim=(0, 2)))


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_torch_exports(opset):
    torch.manual_seed(opset)
    x = torch.randn(2, 5, 7)
    x[0, :, 3] = 0.0  # F.normalize's zero vectors: eps keeps them 0
    buf = io.BytesIO()
    torch.onnx.export(Norms().eval(), (x,), buf, opset_version=opset)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert {"ReduceL1", "ReduceL2", "ReduceLogSumExp"} <= ops
    g = tsr.Graph.load_bytes(buf.getvalue())
    with torch.no_grad():
        wants = [t.numpy() for t in Norms()(x)]
    for device in DEVICES:
        gots = tsr.Plan(g, device=device).run([x.numpy()])
        for got, w in zip(gots, wants):
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


@pytest.mark.slow
def test_ssd300_vgg16():
    """torchvision's ssd300_vgg16 (its L2Norm is a ReduceL2; random weights), opset 11, one
    300x300 image on the cpu device: the detections in score order against PyTorch's."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None).eval()
    image = torch.rand(3, 300, 300)
    buf = io.BytesIO()
    torch.onnx.export(model, ([image],), buf, opset_version=11)
    boxes, scores, labels = tsr.Plan(tsr.Graph.load_bytes(buf.getvalue()), device="cpu").run(
        [image.numpy()])
    with torch.no_grad():
        w = {k: v.numpy() for k, v in model([image])[0].items()}
    assert boxes.shape == w["boxes"].shape and len(scores) > 0
    o, ow = np.argsort(-scores, kind="stable"), np.argsort(-w["scores"], kind="stable")
    np.testing.assert_allclose(scores[o], w["scores"][ow], atol=1e-4 * np.abs(w["scores"]).max())
    np.testing.assert_array_equal(labels[o], w["labels"][ow])
    np.testing.assert_allclose(boxes[o], w["boxes"][ow], atol=1e-4 * np.abs(w["boxes"]).max())

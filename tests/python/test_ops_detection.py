"""The detection ops torchvision's exports need (issue 14): RoiAlign against
torchvision.ops.roi_align (aligned=True is half_pixel, aligned=False opset 10's
output_half_pixel) and against a numpy transcription of ONNX's definition for the max mode
torchvision lacks, on random odd shapes, every sampling ratio (0: adaptive) and scale, in
float32 and float64; its gradient with respect to X against finite differences and torch's
autograd. NonMaxSuppression against torchvision.ops.nms / batched_nms per image and class
(distinct scores: torchvision keeps exact ties in another order), with both box encodings,
score thresholds and per-class limits; a model NonMaxSuppression -> Gather of the kept boxes
run at several counts by one plan; torch.onnx.export of torchvision.ops.roi_align and
torchvision.ops.nms (opsets 11 and 16) against PyTorch; the errors for bad inputs; and the
comparison of whole models' detections (detections.py): any order among ties, and a failure
on one moved box, a swapped label, a score or a count."""

import io

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto as T
from onnx import helper as h

import tsr
from detections import assert_detections_match

DEVICES = ["ref", "cpu"]
FLOATS = [np.float32, np.float64]


def random_rois(rng, n_rois, batch, height, width, scale):
    """Boxes in image coordinates (X's pixels / scale), some reaching past the map's edge,
    some thinner than a pixel, and their batch indices."""
    x1 = rng.uniform(-2, width / scale, n_rois)
    y1 = rng.uniform(-2, height / scale, n_rois)
    w = rng.uniform(0.3, width / scale, n_rois)
    hh = rng.uniform(0.3, height / scale, n_rois)
    rois = np.stack([x1, y1, x1 + w, y1 + hh], axis=1)
    return rois, rng.integers(0, batch, n_rois).astype(np.int64)


def roialign_numpy(x, rois, bi, out_h, out_w, ratio, scale, mode, half_pixel):
    """ONNX's RoiAlign, sample by sample (vectorized over channels only)."""
    n_rois, channels, height, width = len(rois), x.shape[1], x.shape[2], x.shape[3]
    y = np.zeros((n_rois, channels, out_h, out_w))
    off = 0.5 if half_pixel else 0.0
    for r in range(n_rois):
        x1, y1, x2, y2 = (float(v) * scale - off for v in rois[r])
        rw, rh = x2 - x1, y2 - y1
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out_h, rw / out_w
        gh = ratio if ratio > 0 else int(np.ceil(bh))
        gw = ratio if ratio > 0 else int(np.ceil(bw))
        img = x[bi[r]].astype(np.float64)
        for ph in range(out_h):
            for pw in range(out_w):
                vals = []
                for iy in range(gh):
                    for ix in range(gw):
                        sy = y1 + ph * bh + (iy + 0.5) * bh / gh
                        sx = x1 + pw * bw + (ix + 0.5) * bw / gw
                        if sy < -1 or sy > height or sx < -1 or sx > width:
                            vals.append(np.zeros((4, channels)))
                            continue
                        sy, sx = max(sy, 0.0), max(sx, 0.0)
                        y0, x0 = int(sy), int(sx)
                        if y0 >= height - 1:
                            y0 = y1_ = height - 1
                            sy = float(y0)
                        else:
                            y1_ = y0 + 1
                        if x0 >= width - 1:
                            x0 = x1_ = width - 1
                            sx = float(x0)
                        else:
                            x1_ = x0 + 1
                        ly, lx = sy - y0, sx - x0
                        taps = [(1 - ly) * (1 - lx) * img[:, y0, x0],
                                (1 - ly) * lx * img[:, y0, x1_],
                                ly * (1 - lx) * img[:, y1_, x0], ly * lx * img[:, y1_, x1_]]
                        vals.append(np.stack(taps))
                if not vals:
                    continue
                v = np.stack(vals)
                y[r, :, ph, pw] = (v.max(axis=(0, 1)) if mode == "max"
                                   else v.sum(axis=(0, 1)) / max(gh * gw, 1))
    return y


def roialign(x, rois, bi, attrs, device="ref", opset=17):
    return tsr.run_op("RoiAlign", [x, rois, bi], attrs, device=device, opset=opset)[0]


# (N, C, H, W), rois, output (h, w), sampling_ratio, spatial_scale
ROI_CASES = [((1, 3, 7, 9), 5, (3, 2), 0, 1.0), ((2, 5, 11, 6), 7, (2, 3), 2, 0.5),
             ((3, 2, 5, 5), 4, (1, 1), 1, 0.25), ((2, 1, 13, 10), 6, (4, 5), 3, 0.625),
             ((1, 4, 1, 8), 3, (2, 2), 0, 1.0)]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("shape, n_rois, out, ratio, scale", ROI_CASES)
def test_roialign_against_torchvision(shape, n_rois, out, ratio, scale, aligned, dtype):
    rng = np.random.default_rng(sum(shape) * 10 + n_rois + aligned)
    x = rng.standard_normal(shape).astype(dtype)
    rois, bi = random_rois(rng, n_rois, shape[0], shape[2], shape[3], scale)
    rois = rois.astype(dtype)
    boxes = torch.from_numpy(np.concatenate([bi[:, None].astype(dtype), rois], axis=1))
    want = torchvision.ops.roi_align(torch.from_numpy(x), boxes, out, scale, ratio,
                                     aligned).numpy()
    attrs = {"output_height": out[0], "output_width": out[1], "sampling_ratio": ratio,
             "spatial_scale": scale}
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for device in DEVICES:
        if aligned:
            got = roialign(x, rois, bi, dict(attrs, coordinate_transformation_mode="half_pixel"),
                           device)
        else:  # RoiAlign-10, which opsets 11 to 15 use, has only output_half_pixel
            got = roialign(x, rois, bi, attrs, device, opset=11)
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=tol * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("shape, n_rois, out, ratio, scale", ROI_CASES[:4])
def test_roialign_against_the_onnx_definition(shape, n_rois, out, ratio, scale, ctm, mode):
    rng = np.random.default_rng(sum(shape) + n_rois * 3 + len(ctm) + len(mode))
    x = rng.standard_normal(shape)
    rois, bi = random_rois(rng, n_rois, shape[0], shape[2], shape[3], scale)
    want = roialign_numpy(x, rois, bi, out[0], out[1], ratio, scale, mode, ctm == "half_pixel")
    attrs = {"output_height": out[0], "output_width": out[1], "sampling_ratio": ratio,
             "spatial_scale": scale, "mode": mode, "coordinate_transformation_mode": ctm}
    for device in DEVICES:
        np.testing.assert_allclose(roialign(x, rois, bi, attrs, device), want, atol=1e-12)
    got32 = roialign(x.astype(np.float32), rois.astype(np.float32), bi, attrs, "cpu")
    np.testing.assert_allclose(got32, want, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_roialign_defaults_and_empty_regions():
    """Opset 16's defaults (avg, 1x1, adaptive, half_pixel); no regions; a region wholly off
    the map pools zeros."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 5))
    rois = np.array([[1.0, 1.5, 4.0, 5.0], [30.0, 30.0, 40.0, 41.0]])
    bi = np.array([1, 0], np.int64)
    want = roialign_numpy(x, rois, bi, 1, 1, 0, 1.0, "avg", True)
    np.testing.assert_allclose(roialign(x, rois, bi, {}), want, atol=1e-12)
    assert not roialign(x, rois, bi, {"mode": "max"})[1].any()
    empty = roialign(x, np.zeros((0, 4)), np.zeros(0, np.int64), {"output_height": 2})
    assert empty.shape == (0, 3, 2, 1)


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def roialign_graph(shape, attrs, rois, bi):
    g = tsr.Graph()
    g.add_input("X", np.float64, list(shape))
    g.add_constant("rois", rois)
    g.add_constant("bi", bi)
    g.add_node("RoiAlign", ["X", "rois", "bi"], ["Y"], attrs, name="roialign")
    g.add_output("Y")
    return g


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("ratio", [0, 2])
def test_roialign_gradient_against_finite_differences(ratio, ctm, mode):
    rng = np.random.default_rng(ratio * 7 + len(ctm) + len(mode))
    shape = (2, 2, 6, 5)
    x = rng.permutation(np.prod(shape)).reshape(shape) / 10.0 - 2.0  # distinct: maxima never tie
    rois, bi = random_rois(rng, 4, 2, 6, 5, 0.5)
    attrs = {"output_height": 2, "output_width": 3, "sampling_ratio": ratio, "spatial_scale": 0.5,
             "mode": mode, "coordinate_transformation_mode": ctm}
    g = roialign_graph(shape, attrs, rois, bi)
    seed = rng.standard_normal((4, 2, 2, 3))
    grad = tsr.gradient(g, ["Y"], ["X"])
    plan = tsr.Plan(g)
    fd = numeric_grad(lambda a: float(np.sum(plan.run([a])[0] * seed)), x)
    for device in DEVICES:
        dx = tsr.Plan(grad, device=device).run([x, seed])[-1]
        np.testing.assert_allclose(dx, fd, atol=1e-8)


def test_roialign_gradient_against_torch_autograd():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 7))
    rois, bi = random_rois(rng, 6, 2, 9, 7, 1.0)
    attrs = {"output_height": 3, "output_width": 2, "coordinate_transformation_mode": "half_pixel"}
    g = roialign_graph(x.shape, attrs, rois, bi)
    seed = rng.standard_normal((6, 3, 3, 2))
    dx = tsr.Plan(tsr.gradient(g, ["Y"], ["X"])).run([x, seed])[-1]
    tx = torch.from_numpy(x).requires_grad_()
    boxes = torch.from_numpy(np.concatenate([bi[:, None].astype(np.float64), rois], axis=1))
    y = torchvision.ops.roi_align(tx, boxes, (3, 2), 1.0, 0, True)
    (y * torch.from_numpy(seed)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-12)


def test_roialign_second_derivative_in_avg_mode():
    """RoiAlignGrad's own rule (RoiAlign of the incoming gradient): the gradient of <dX, v>
    with respect to the seed."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 5, 6))
    rois, bi = random_rois(rng, 3, 1, 5, 6, 1.0)
    attrs = {"output_height": 2, "output_width": 2, "sampling_ratio": 2,
             "coordinate_transformation_mode": "output_half_pixel"}
    g = roialign_graph(x.shape, attrs, rois, bi)
    grad = tsr.gradient(g, ["Y"], ["X"])
    second = tsr.gradient(grad, ["X__grad"], ["Y__seed"])
    seed, v = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal(x.shape)
    got = tsr.Plan(second).run([x, seed, v])[-1]
    want = roialign_numpy(v, rois, bi, 2, 2, 2, 1.0, "avg", False)
    np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(tsr.TesseraError, match="second derivative of RoiAlign in max mode"):
        first = tsr.gradient(roialign_graph(x.shape, {"mode": "max"}, rois, bi), ["Y"], ["X"])
        tsr.gradient(first, ["X__grad"], ["Y__seed"])


# ------------------------------------------------------------ NonMaxSuppression


def random_boxes(rng, batch, n, spread=10.0):
    """Corners (y1, x1, y2, x2) in either order, crowded enough to overlap."""
    a = rng.uniform(0, spread, (batch, n, 2))
    b = a + rng.uniform(0.5, 4.0, (batch, n, 2))
    flip = rng.random((batch, n, 1)) < 0.3
    return np.where(flip, np.concatenate([b, a], -1), np.concatenate([a, b], -1))


def distinct_scores(rng, shape):
    return (rng.permutation(int(np.prod(shape))).reshape(shape) + 1.0) / np.prod(shape)


def nms_torchvision(boxes, scores, max_out, iou, score_threshold=None):
    """Per image and class, torchvision.ops.nms on (x1, y1, x2, y2) boxes, as ONNX's triples."""
    out = []
    for b in range(boxes.shape[0]):
        yx = boxes[b]
        xyxy = np.stack([np.minimum(yx[:, 1], yx[:, 3]), np.minimum(yx[:, 0], yx[:, 2]),
                         np.maximum(yx[:, 1], yx[:, 3]), np.maximum(yx[:, 0], yx[:, 2])], 1)
        for c in range(scores.shape[1]):
            s = scores[b, c]
            idx = (np.arange(len(s)) if score_threshold is None
                   else np.nonzero(s > score_threshold)[0])
            keep = torchvision.ops.nms(torch.from_numpy(xyxy[idx]), torch.from_numpy(s[idx]),
                                       iou).numpy()
            out += [[b, c, int(idx[k])] for k in keep[:max_out]]
    return np.array(out, np.int64).reshape(-1, 3)


def nms(inputs, attrs=None, device="ref", const_inputs=(2, 3, 4)):
    return tsr.run_op("NonMaxSuppression", inputs, attrs, device=device, opset=11,
                      const_inputs=const_inputs)[0]


NMS_CASES = [(1, 1, 7, 100, 0.5, None), (2, 3, 13, 4, 0.3, None), (3, 2, 9, 2, 0.0, 0.4),
             (1, 4, 25, 25, 0.7, 0.1), (2, 1, 1, 1, 0.5, None), (1, 2, 0, 3, 0.5, None)]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("batch, classes, n, max_out, iou, score_th", NMS_CASES)
def test_nms_against_torchvision(batch, classes, n, max_out, iou, score_th, dtype):
    rng = np.random.default_rng(batch * 100 + classes * 10 + n)
    boxes = random_boxes(rng, batch, n).astype(dtype)
    scores = distinct_scores(rng, (batch, classes, n)).astype(dtype)
    # the thresholds as the node reads them: float32
    want = nms_torchvision(boxes.astype(np.float64), scores.astype(np.float64), max_out,
                           float(np.float32(iou)),
                           None if score_th is None else float(np.float32(score_th)))
    ins = [boxes, scores, np.array([max_out], np.int64), np.array([iou], np.float32)]
    if score_th is not None:
        ins.append(np.array([score_th], np.float32))
    for device in DEVICES:
        got = nms(ins, device=device)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    # the limits as graph inputs: the plan cannot bound the count by max_output_boxes_per_class
    np.testing.assert_array_equal(nms(ins, const_inputs=()), want)


def test_nms_center_point_boxes_and_batched_nms():
    rng = np.random.default_rng(8)
    corners = random_boxes(rng, 1, 30)[0]
    yx_lo, yx_hi = np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2],
                                                                          corners[:, 2:])
    center = np.concatenate([(yx_lo + yx_hi)[:, ::-1] / 2, (yx_hi - yx_lo)[:, ::-1]], 1)
    scores = distinct_scores(rng, (1, 3, 30))
    lim = [np.array([30], np.int64), np.array([0.45], np.float32)]
    got = nms([center[None], scores] + lim, {"center_point_box": 1})
    np.testing.assert_array_equal(got, nms([corners[None], scores] + lim))
    # batched_nms: every class at once, kept boxes in decreasing score over all classes
    xyxy = np.concatenate([yx_lo[:, ::-1], yx_hi[:, ::-1]], 1)
    flat_scores = scores[0].reshape(-1)
    keep = torchvision.ops.batched_nms(torch.from_numpy(np.tile(xyxy, (3, 1))),
                                       torch.from_numpy(flat_scores),
                                       torch.arange(3).repeat_interleave(30), 0.45).numpy()
    want = sorted((int(k) // 30, int(k) % 30) for k in keep)
    assert sorted(map(tuple, got[:, 1:].tolist())) == want


def test_nms_omitted_inputs_and_limits():
    rng = np.random.default_rng(2)
    boxes, scores = random_boxes(rng, 2, 6), distinct_scores(rng, (2, 2, 6))
    assert nms([boxes, scores]).shape == (0, 3)  # max_output_boxes_per_class 0 by default
    assert nms([boxes, scores, np.array([-3], np.int64)]).shape == (0, 3)
    every = nms([boxes, scores, np.array([6], np.int64)])  # iou_threshold 0: no overlap allowed
    np.testing.assert_array_equal(every, nms_torchvision(boxes, scores, 6, 0.0))
    high = nms([boxes, scores, np.array([6], np.int64), None, np.array([0.5], np.float32)])
    assert (scores[high[:, 0], high[:, 1], high[:, 2]] > 0.5).all()
    folded = tsr.run_op("NonMaxSuppression", [boxes, scores, np.array([2], np.int64)],
                        const_inputs=(0, 1, 2))[0]
    np.testing.assert_array_equal(folded, nms_torchvision(boxes, scores, 2, 0.0))


def nms_gather_model():
    """The kept boxes of image 0: NonMaxSuppression -> Gather(column 2) -> Gather of boxes."""
    nodes = [h.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["sel"]),
             h.make_node("Gather", ["sel", "two"], ["box_idx"], axis=1),
             h.make_node("Squeeze", ["boxes", "zero"], ["boxes0"]),
             h.make_node("Gather", ["boxes0", "box_idx"], ["kept"], axis=0),
             h.make_node("ReduceSum", ["kept"], ["area_sum"], keepdims=0)]
    inits = [h.make_tensor("two", T.INT64, [], [2]), h.make_tensor("zero", T.INT64, [1], [0]),
             h.make_tensor("max_out", T.INT64, [1], [50]),
             h.make_tensor("iou", T.FLOAT, [1], [0.4])]
    graph = h.make_graph(nodes, "nms_gather",
                         [h.make_tensor_value_info("boxes", T.FLOAT, [1, 20, 4]),
                          h.make_tensor_value_info("scores", T.FLOAT, [1, 1, 20])],
                         [h.make_tensor_value_info("kept", T.FLOAT, None),
                          h.make_tensor_value_info("area_sum", T.FLOAT, None)], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize("device", DEVICES)
def test_nms_then_gather_at_several_counts(device):
    plan = tsr.Plan(tsr.Graph.load_bytes(nms_gather_model()), device=device)
    counts = set()
    for seed, spread in ((0, 10.0), (1, 40.0), (2, 3.0), (3, 40.0)):
        rng = np.random.default_rng(seed)
        boxes = random_boxes(rng, 1, 20, spread).astype(np.float32)
        scores = distinct_scores(rng, (1, 1, 20)).astype(np.float32)
        kept, total = plan.run([boxes, scores])
        idx = nms_torchvision(boxes.astype(np.float64), scores.astype(np.float64), 50, 0.4)[:, 2]
        np.testing.assert_array_equal(kept, boxes[0, idx])
        np.testing.assert_allclose(total, boxes[0, idx].sum(), rtol=1e-5)
        counts.add(len(idx))
    assert len(counts) >= 3


class Detector(torch.nn.Module):
    """Boxes kept by nms, pooled from the feature map by roi_align."""

    def __init__(self, aligned):
        super().__init__()
        self.aligned = aligned

    def forward(self, features, boxes, scores):
        keep = torchvision.ops.nms(boxes, scores, 0.5)
        kept = boxes[keep]
        rois = torch.cat([torch.zeros_like(kept[:, :1]), kept], dim=1)
        pooled = torchvision.ops.roi_align(features, rois, (3, 2), 0.5, 2, self.aligned)
        return pooled, keep


# torchvision 0.14 writes RoiAlign without coordinate_transformation_mode, so at opset 16 an
# aligned=False module (fasterrcnn's MultiScaleRoIAlign) exports as half_pixel, ONNX's default
# there, which every ONNX runtime computes as aligned=True.
@pytest.mark.parametrize("opset, aligned, as_onnx_reads_it",
                         [(16, True, True), (11, False, False), (16, False, True)])
def test_torch_export_of_nms_and_roi_align(opset, aligned, as_onnx_reads_it):
    rng = np.random.default_rng(opset)
    feats = torch.from_numpy(rng.standard_normal((1, 4, 9, 11)).astype(np.float32))

    def inputs(seed, spread):
        r = np.random.default_rng(seed)
        b = random_boxes(r, 1, 15, spread)[0]
        xyxy = np.concatenate([np.minimum(b[:, 1::-1], b[:, 3:1:-1]),
                               np.maximum(b[:, 1::-1], b[:, 3:1:-1])], 1)
        return (torch.from_numpy(xyxy.astype(np.float32)),
                torch.from_numpy(distinct_scores(r, (15,)).astype(np.float32)))

    model = Detector(aligned).eval()
    buf = io.BytesIO()
    torch.onnx.export(model, (feats,) + inputs(0, 10.0), buf, opset_version=opset,
                      input_names=["features", "boxes", "scores"])
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert {"NonMaxSuppression", "RoiAlign"} <= ops
    g = tsr.Graph.load_bytes(buf.getvalue())
    for device in DEVICES:
        plan = tsr.Plan(g, device=device)
        for seed, spread in ((0, 10.0), (1, 25.0), (2, 4.0)):
            boxes, scores = inputs(seed, spread)
            with torch.no_grad():
                want = [t.numpy() for t in Detector(as_onnx_reads_it)(feats, boxes, scores)]
            got = plan.run([feats.numpy(), boxes.numpy(), scores.numpy()])
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_allclose(got[0], want[0], atol=1e-5)


# ---------------------------------------------------------------------- errors

X = np.zeros((2, 3, 5, 5), np.float32)
ROIS = np.array([[0, 0, 2, 2], [1, 1, 3, 4]], np.float32)
BI = np.array([0, 1], np.int64)


@pytest.mark.parametrize("inputs, attrs, message", [
    ([X, ROIS, np.array([0, 1, 1], np.int64)], {}, "rois hold 2 boxes but batch_indices 3"),
    ([X[0], ROIS, BI], {}, r"X must be \[N, C, H, W\], not of rank 3"),
    ([X, ROIS[:, :3], BI], {}, r"rois must be \[num_rois, 4\]"),
    ([X, ROIS, BI[:, None]], {}, r"batch_indices must be \[num_rois\]"),
    ([X, ROIS.astype(np.float64), BI], {}, "rois are float64 but X is float32"),
    ([X, ROIS, BI.astype(np.int32)], {}, "int32"),
    ([X, ROIS, BI], {"mode": "min"}, "mode is 'avg' or 'max', not 'min'"),
    ([X, ROIS, BI], {"coordinate_transformation_mode": "asymmetric"}, "not 'asymmetric'"),
    ([X, ROIS, BI], {"output_height": 0}, "output_height and output_width must be >= 1"),
    ([X, ROIS, BI], {"sampling_ratio": -1}, "sampling_ratio must be >= 0"),
])
def test_roialign_bad_inputs_are_refused(inputs, attrs, message):
    with pytest.raises(tsr.TesseraError, match=message):
        tsr.run_op("RoiAlign", inputs, attrs)


def test_roialign_batch_indices_outside_the_batch():
    for bad in ([0, -1], [2, 0]):
        bi = np.array(bad, np.int64)
        with pytest.raises(tsr.TesseraError, match=f"batch_indices\\[\\d\\] is {max(bad, key=abs)}"
                                                   r", outside X's batch of 2"):
            tsr.run_op("RoiAlign", [X, ROIS, bi])  # found by the kernel
        with pytest.raises(tsr.TesseraError, match="outside X's batch of 2"):
            tsr.run_op("RoiAlign", [X, ROIS, bi], const_inputs=(2,))  # found by inference


def test_roialign_opset10_has_no_coordinate_transformation_mode():
    with pytest.raises(tsr.TesseraError, match="from opset 16 on, not at 11"):
        tsr.run_op("RoiAlign", [X, ROIS, BI], {"coordinate_transformation_mode": "half_pixel"},
                   opset=11)


BOXES = np.zeros((2, 5, 4), np.float32)
SCORES = np.zeros((2, 3, 5), np.float32)
MAX1 = np.array([1], np.int64)


@pytest.mark.parametrize("inputs, message", [
    ([BOXES[:, :4], SCORES, MAX1], "boxes hold 2 images of 4 boxes but scores 2 images of 5"),
    ([BOXES[:1], SCORES, MAX1], "boxes hold 1 images of 5 boxes but scores 2 images of 5"),
    ([BOXES[0], SCORES, MAX1], r"boxes must be \[B, N, 4\], not of rank 2"),
    ([BOXES[..., :3], SCORES, MAX1], "last dim other than 4"),
    ([BOXES, SCORES[0], MAX1], r"scores must be \[B, C, N\], not of rank 2"),
    ([BOXES, SCORES, np.array([1, 2], np.int64)], "max_output_boxes_per_class must hold one"),
    ([BOXES, SCORES, MAX1.astype(np.int32)], "int32"),
    ([BOXES, SCORES, MAX1, np.array([1.5], np.float32)], r"iou_threshold is 1.5; it must lie in"),
])
def test_nms_bad_inputs_are_refused(inputs, message):
    with pytest.raises(tsr.TesseraError, match=message):
        nms(inputs, const_inputs=())


def test_nms_bad_center_point_box():
    with pytest.raises(tsr.TesseraError, match="center_point_box is 0 or 1, not 2"):
        nms([BOXES, SCORES, MAX1], {"center_point_box": 2})


# ------------------------------------------------------------ whole-model detection comparison


def detections(rng, n=12, tied=(3, 7)):
    """n detections whose scores [tied[0], tied[1]) are one tie."""
    scores = np.sort(rng.uniform(0.1, 0.9, n))[::-1].astype(np.float32)
    scores[tied[0]:tied[1]] = scores[tied[0]]
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (n, 2))], 1).astype(np.float32)
    return {"boxes": boxes, "scores": scores, "labels": rng.integers(1, 5, n)}


def permuted(det, order):
    return {k: v[order] for k, v in det.items()}


def test_detection_comparison_allows_any_order_among_ties():
    rng = np.random.default_rng(0)
    want = detections(rng)
    order = rng.permutation(12)  # scores in another order too: the comparison sorts them
    got = permuted(want, order)
    got["scores"] = got["scores"] + np.float32(1e-7)
    assert_detections_match(got, want, score_atol=1e-6, box_atol=1e-3)
    ties_reversed = permuted(want, np.r_[0:3, 6:2:-1, 7:12])
    assert_detections_match(ties_reversed, want, score_atol=1e-6, box_atol=1e-3)


@pytest.mark.parametrize("change, message", [
    ("box", "detection 5 .* has no counterpart among the 4 expected"),
    ("untied box", "detection 9 .* has no counterpart among the 1 expected"),
    ("label", "has no counterpart among the 4 expected"),
    ("untied order", "has no counterpart among the 1 expected"),
    ("score", "score 10 in decreasing order is"),
    ("count", "11 detections, expected 12"),
])
def test_detection_comparison_fails_on_a_real_mismatch(change, message):
    rng = np.random.default_rng(1)
    want = detections(rng)
    got = {k: v.copy() for k, v in want.items()}
    if change == "box":
        got["boxes"][5, 2] += 0.01  # one box of the tie moved by 10x the tolerance
    elif change == "untied box":
        got["boxes"][9, 0] -= 0.01
    elif change == "label":
        i = np.nonzero(want["labels"][3:7] != want["labels"][3])[0][0] + 3
        got["labels"][[3, i]] = got["labels"][[i, 3]]  # two tied detections swap labels
    elif change == "untied order":
        got["boxes"][[8, 9]] = got["boxes"][[9, 8]]  # distinct scores: the order is data
    elif change == "score":
        got["scores"][10] -= np.float32(1e-5)
    else:
        got = {k: v[:-1] for k, v in got.items()}
    with pytest.raises(AssertionError, match=message):
        assert_detections_match(got, want, score_atol=1e-6, box_atol=1e-3)

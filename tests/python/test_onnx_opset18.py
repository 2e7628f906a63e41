"""ONNX opsets 18 to 21: models built with onnx.helper at the opset that changed each op Tessera
has, imported from file and run on the ref and cpu devices, against numpy loops written from the
ONNX changelog (Debian's onnx 1.12 knows opset 17 at most, so neither its checker nor a
reference evaluator can judge these models). Reduce* with axes as an input and
noop_with_empty_axes (18), ReduceMax/ReduceMin on bool (20), Split's num_outputs (18), Pad's axes
input (18) and wrap mode (19), Resize's antialias and keep_aspect_ratio_policy (18),
ScatterElements/ScatterND max and min (18), GroupNormalization per group (18) and per channel
(21), Cast's saturate (19) and CastLike, AveragePool's dilations (19), the Bitwise ops and
Col2Im (18); the ops whose newer versions only widened the type list; gradients against finite
differences; and the clear refusals: opset 22 on, float8 types, DeformConv, the old forms at the
new opsets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import tsr
from test_grad import Case, check_case
from test_import import ONNX_TYPE, load_error, save

DEVICES = ["ref", "cpu"]
I64 = np.int64


def model(nodes, inputs, outputs, opset, initializers=()):
    """inputs: (name, array) fed at run time; initializers: (name, array) constants;
    outputs: names (their types are left to the importer)."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, ONNX_TYPE[a.dtype], list(a.shape)) for n, a in inputs],
        [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in initializers])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="tessera-test")
    m.ir_version = 8
    return m


def run(tmp_path, m, feeds, device="ref"):
    return tsr.run_onnx(save(m, tmp_path), feeds, device=device)


def one(tmp_path, op, inputs, attrs, opset, device="ref", consts=(), n_outputs=1):
    """One node: inputs is a list of arrays (None for omitted ones); those at positions in
    consts become initializers."""
    names, feeds, inits = [], [], []
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
            continue
        names.append(f"in{i}")
        (inits if i in consts else feeds).append((f"in{i}", np.asarray(x)))
    outs = [f"out{o}" for o in range(n_outputs)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    return run(tmp_path, model([node], feeds, outs, opset, inits), [a for _, a in feeds], device)


def refusal(tmp_path, m, status=tsr.ERR_UNSUPPORTED):
    return load_error(save(m, tmp_path), status)


def node_refusal(tmp_path, op, inputs, attrs, opset, consts=(), n_outputs=1, match=""):
    with pytest.raises(tsr.TesseraError, match=match):
        one(tmp_path, op, inputs, attrs, opset, consts=consts, n_outputs=n_outputs)


def close(got, want, dtype):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape,
                                                                 want.dtype)
    if np.dtype(dtype).kind == "f":
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max(
            initial=0.0)))
    else:
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ the opset range

@pytest.mark.parametrize("opset", [18, 19, 20, 21])
def test_new_opsets_import(tmp_path, opset):
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    (y,) = one(tmp_path, "Relu", [x], {}, opset)
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("opset", [22, 25])
def test_newer_opsets_refused(tmp_path, opset):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.zeros(2, np.float32))], ["y"],
              opset)
    msg = refusal(tmp_path, m)
    assert f"opset {opset}" in msg and "11 to 21" in msg


def test_old_opset_still_imports(tmp_path):
    """Opset 13's ReduceMean with its axes attribute beside opset 18's with an axes input."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    old = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)
    (y13,) = run(tmp_path, model([old], [("x", x)], ["y"], 13), [x])
    new = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    (y18,) = run(tmp_path, model([new], [("x", x)], ["y"], 18, [("axes", np.array([1], I64))]),
                 [x])
    close(y13, x.mean(axis=1), np.float32)
    close(y18, y13, np.float32)


# ------------------------------------------------------------------ reductions

REDUCE = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min,
          "ReduceProd": np.prod}


def reduce_ref(op, x, axes, keepdims, noop):
    if axes is None or len(axes) == 0:
        if noop:
            return x.copy()
        axes = tuple(range(x.ndim))
    with np.errstate(over="ignore"):
        y = REDUCE[op](x, axis=tuple(int(a) for a in axes), keepdims=bool(keepdims))
    return np.asarray(y).astype(x.dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduce_axes_input(tmp_path, op, device):
    rng = np.random.default_rng(len(op))
    dtypes = [np.float32, np.float64] + ([] if op == "ReduceMean" else [np.int64, np.int32])
    shapes = [((3, 5, 7), [1]), ((2, 3, 1, 5), [-1, 0]), ((7,), [0]), ((4, 3, 5), [2, -3, 1]),
              ((3, 5), None), ((2, 9, 3), [])]
    for dtype in dtypes:
        for shape, axes in shapes:
            for keepdims in (0, 1):
                for noop in (0, 1):
                    if np.dtype(dtype).kind == "f":
                        x = rng.uniform(0.5, 1.5, shape).astype(dtype)
                    else:
                        x = rng.integers(-4, 5, shape).astype(dtype)
                    axes_in = None if axes is None else np.array(axes, I64)
                    attrs = {"keepdims": keepdims, "noop_with_empty_axes": noop}
                    (y,) = one(tmp_path, op, [x, axes_in], attrs, 18, device, consts=(1,))
                    close(y, reduce_ref(op, x, axes, keepdims, noop), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_bool(tmp_path, op, device):
    rng = np.random.default_rng(5)
    x = rng.random((4, 7, 3)) < 0.6
    for axes in ([1], [0, 2], []):
        (y,) = one(tmp_path, op, [x, np.array(axes, I64)], {"keepdims": 0}, 20, device,
                   consts=(1,))
        want = (np.any if op == "ReduceMax" else np.all)(x, axis=tuple(axes) or None)
        close(y, np.asarray(want), np.bool_)


@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduce_old_forms_refused(tmp_path, op):
    x = np.ones((2, 3), np.float32)
    node_refusal(tmp_path, op, [x], {"axes": [1]}, 18,
                 match=f"from opset {13 if op == 'ReduceSum' else 18} on, {op} takes axes as its "
                       "second input, not as an attribute")
    if op != "ReduceSum":
        node_refusal(tmp_path, op, [x, np.array([1], I64)], {}, 17, consts=(1,),
                     match=f"{op} at opset 17 takes axes as an attribute, not as an input")
        node_refusal(tmp_path, op, [x], {"noop_with_empty_axes": 1}, 17,
                     match="at opset 17 has no attribute .noop_with_empty_axes.")


@pytest.mark.parametrize("op,axes,keepdims", [("ReduceMean", [1], 0), ("ReduceMean", [-1, 0], 1),
                                              ("ReduceMax", [2], 0), ("ReduceMin", [0, 1], 1),
                                              ("ReduceProd", [1], 1), ("ReduceSum", [0], 0)])
def test_reduce_gradient(op, axes, keepdims):
    rng = np.random.default_rng(11)
    x = rng.permutation(60).reshape(3, 4, 5) / 30.0 + 0.5  # distinct values: max/min unique
    check_case(Case(op, [x, np.array(axes, I64)], {"keepdims": keepdims}, opset=18),
               second_order=op != "ReduceMax" and op != "ReduceMin")


def test_reduce_noop_gradient():
    x = np.random.default_rng(2).standard_normal((3, 2))
    check_case(Case("ReduceMean", [x, np.zeros(0, I64)], {"noop_with_empty_axes": 1}, opset=18),
               second_order=False)


# ------------------------------------------------------------------ Split

def split_ref(x, axis, n):
    dim = x.shape[axis]
    piece = -(-dim // n)
    return np.split(x, [piece * (j + 1) for j in range(n - 1)], axis=axis)


@pytest.mark.parametrize("device", DEVICES)
def test_split_num_outputs(tmp_path, device):
    rng = np.random.default_rng(8)
    for shape, axis, n in [((7, 3), 0, 3), ((2, 8, 5), 1, 3), ((3, 5, 11), -1, 4), ((4, 6), 1, 2),
                           ((9,), 0, 1), ((2, 4, 3), 1, 3)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got = one(tmp_path, "Split", [x], {"axis": axis, "num_outputs": n}, 18, device,
                  n_outputs=n)
        want = split_ref(x, axis, n)
        assert len(got) == n
        for g, w in zip(got, want):
            close(g, w, np.float32)


def test_split_errors(tmp_path):
    x = np.zeros((5, 2), np.float32)
    node_refusal(tmp_path, "Split", [x], {"num_outputs": 4}, 18, n_outputs=4,
                 match="axis 0 of size 5 does not split into 4 pieces of 2")
    node_refusal(tmp_path, "Split", [x], {"num_outputs": 3}, 18, n_outputs=2,
                 match="num_outputs is 3 but the node has 2 outputs")
    node_refusal(tmp_path, "Split", [x, np.array([2, 3], I64)], {"num_outputs": 2}, 18,
                 consts=(1,), n_outputs=2, match="split and num_outputs are both given")
    node_refusal(tmp_path, "Split", [x], {"num_outputs": 5}, 17, n_outputs=5,
                 match="num_outputs is an attribute of Split from opset 18 on")


def test_split_gradient():
    x = np.random.default_rng(9).standard_normal((2, 7, 3))
    check_case(Case("Split", [x], {"axis": 1, "num_outputs": 3}, n_outputs=3, opset=18))


# ------------------------------------------------------------------ Pad

def pad_ref(x, pads, axes, mode, value=0):
    r = x.ndim
    full = [[0, 0] for _ in range(r)]
    axes = range(r) if axes is None else [a % r for a in axes]
    for i, a in enumerate(axes):
        full[a] = [pads[i], pads[len(pads) // 2 + i]]
    # np.pad takes no negative widths: pad the positive part, then crop.
    grow = [[max(b, 0), max(e, 0)] for b, e in full]
    kw = {"constant_values": value} if mode == "constant" else {}
    y = np.pad(x, grow, mode=mode, **kw)
    crop = tuple(slice(-min(b, 0), y.shape[d] + min(e, 0)) for d, (b, e) in enumerate(full))
    return y[crop]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_axes_and_wrap(tmp_path, mode, device):
    rng = np.random.default_rng(len(mode))
    cases = [((3, 5), [1], [2, 1]), ((2, 4, 7), [-1, 1], [1, 0, 2, 3]),
             ((3, 6, 5), [0, 2], [1, -1, 0, 2]), ((5, 3, 4, 3), None, [0, 1, 2, 0, 1, 0, 1, 2])]
    if mode == "wrap":
        cases.append(((3, 4), [1], [6, 9]))  # wider than the axis: wraps around twice
    for shape, axes, pads in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        pads_in = np.array(pads, I64)
        axes_in = None if axes is None else np.array(axes, I64)
        value = np.array(1.5, np.float32) if mode == "constant" else None
        (y,) = one(tmp_path, "Pad", [x, pads_in, value, axes_in], {"mode": mode}, 19, device,
                   consts=(1, 2, 3))
        close(y, pad_ref(x, pads, axes, mode, 1.5), np.float32)


def test_pad_errors(tmp_path):
    x = np.zeros((2, 3), np.float32)
    node_refusal(tmp_path, "Pad", [x, np.array([1, 1], I64), None, np.array([0], I64)],
                 {"mode": "constant"}, 17, consts=(1, 3),
                 match="Pad takes an axes input from opset 18 on")
    node_refusal(tmp_path, "Pad", [x, np.array([1, 1, 1], I64), None, np.array([0, 1], I64)], {},
                 18, consts=(1, 3), match="pads has 3 entries for 2 axes")
    node_refusal(tmp_path, "Pad", [x, np.array([1, 1, 1, 1], I64), None, np.array([1, -1], I64)],
                 {}, 18, consts=(1, 3), match="axis 1 is given twice in axes")
    node_refusal(tmp_path, "Pad", [x, np.array([1, 1], I64), None, np.array([2], I64)], {}, 18,
                 consts=(1, 3), match="axes\\[0\\] is 2, out of range for rank 2")
    node_refusal(tmp_path, "Pad", [x, np.array([1, 1, 1, 1], I64)], {"mode": "wrap"}, 18,
                 consts=(1,), match="Pad mode 'wrap' is not supported at opset 18")


def test_pad_axes_gradient():
    x = np.random.default_rng(4).standard_normal((3, 4, 2))
    check_case(Case("Pad", [x, np.array([1, 2, -1, 1], I64), None, np.array([-1, 1], I64)],
                    opset=18))


# ------------------------------------------------------------------ Resize

def test_resize_antialias_against_torch(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 3, 23, 19)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x), size=(7, 5), mode="bilinear", align_corners=False,
                         antialias=True).numpy()
    for device in DEVICES:
        attrs = {"mode": "linear", "antialias": 1, "exclude_outside": 1, "axes": [2, 3]}
        (y,) = one(tmp_path, "Resize", [x, None, None, np.array([7, 5], I64)], attrs, 18, device,
                   consts=(3,))
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_resize_keep_aspect_ratio(tmp_path, policy):
    """Nearest with the asymmetric transform and floor rounding: output pixel i reads input
    floor(i / scale), one scale for both axes."""
    x = np.random.default_rng(7).standard_normal((2, 3, 6, 8)).astype(np.float32)
    scale = (min if policy == "not_larger" else max)(9 / 6, 10 / 8)
    out = (int(round(6 * scale)), int(round(8 * scale)))
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
             "nearest_mode": "floor", "keep_aspect_ratio_policy": policy, "axes": [3, 2]}
    (y,) = one(tmp_path, "Resize", [x, None, None, np.array([10, 9], I64)], attrs, 19,
               consts=(3,))
    rows = np.minimum(np.floor(np.arange(out[0]) / scale).astype(int), 5)
    cols = np.minimum(np.floor(np.arange(out[1]) / scale).astype(int), 7)
    close(y, x[:, :, rows][:, :, :, cols], np.float32)


# ------------------------------------------------------------------ scatters

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["max", "min"])
def test_scatter_max_min(tmp_path, reduction, device):
    rng = np.random.default_rng(len(reduction))
    pick = np.maximum if reduction == "max" else np.minimum
    data = rng.standard_normal((5, 7)).astype(np.float32)
    idx = rng.integers(-5, 5, (3, 7)).astype(I64)
    upd = rng.standard_normal((3, 7)).astype(np.float32)
    want = data.copy()
    for i, j in np.ndindex(idx.shape):
        want[idx[i, j] % 5, j] = pick(want[idx[i, j] % 5, j], upd[i, j])
    (y,) = one(tmp_path, "ScatterElements", [data, idx, upd], {"reduction": reduction, "axis": 0},
               18, device, consts=(1,))
    close(y, want, np.float32)

    data = rng.standard_normal((4, 3, 2))
    idx = np.array([[1], [3], [1], [-4]], I64)
    upd = rng.standard_normal((4, 3, 2))
    want = data.copy()
    for k in range(4):
        want[idx[k, 0] % 4] = pick(want[idx[k, 0] % 4], upd[k])
    (y,) = one(tmp_path, "ScatterND", [data, idx, upd], {"reduction": reduction}, 18, device,
               consts=(1,))
    close(y, want, np.float64)


# ------------------------------------------------------------------ GroupNormalization

@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization(tmp_path, opset):
    rng = np.random.default_rng(opset)
    for shape, groups in [((2, 6, 5, 3), 3), ((3, 4, 7), 2), ((1, 9, 2, 3, 2), 3)]:
        C = shape[1]
        n = groups if opset == 18 else C
        x = rng.standard_normal(shape).astype(np.float32)
        scale = rng.standard_normal(n).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        sc, bc = (scale, bias) if opset == 21 else (np.repeat(scale, C // groups),
                                                    np.repeat(bias, C // groups))
        want = F.group_norm(torch.from_numpy(x).double(), groups, torch.from_numpy(sc).double(),
                            torch.from_numpy(bc).double(), eps=1e-3).float().numpy()
        for device in DEVICES:
            (y,) = one(tmp_path, "GroupNormalization", [x, scale, bias],
                       {"num_groups": groups, "epsilon": 1e-3}, opset, device, consts=(1, 2))
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
        wrong = np.ones(C if opset == 18 else groups, np.float32)
        with pytest.raises(tsr.TesseraError, match=f"opset {opset} takes one per"):
            one(tmp_path, "GroupNormalization", [x, wrong, wrong], {"num_groups": groups}, opset,
                consts=(1, 2))


def test_group_normalization_gradient():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 6, 3))
    check_case(Case("GroupNormalization", [x, rng.standard_normal(6), rng.standard_normal(6)],
                    {"num_groups": 3}, opset=21), second_order=False)


# ------------------------------------------------------------------ Cast, AveragePool

def test_cast_saturate(tmp_path):
    x = np.array([-3.7, 0.2, 1e10, 5.5], np.float32)
    for saturate in (0, 1):
        (y,) = one(tmp_path, "Cast", [x], {"to": TensorProto.DOUBLE, "saturate": saturate}, 19)
        close(y, x.astype(np.float64), np.float64)
        (y,) = one(tmp_path, "Cast", [x[:2]], {"to": TensorProto.INT32, "saturate": saturate}, 21)
        close(y, x[:2].astype(np.int32), np.int32)
    node_refusal(tmp_path, "Cast", [x], {"to": TensorProto.DOUBLE, "saturate": 0}, 18,
                 match="Cast takes saturate from opset 19 on")
    node_refusal(tmp_path, "Cast", [x], {"to": 17}, 19,
                 match="Cast to float8e4m3fn \\(ONNX type 17\\) is not supported")


def test_castlike(tmp_path):
    x = np.array([[-3.7, 0.2, 2.5], [7.9, -0.6, 1e3]], np.float32)
    for like, saturate in [(np.zeros(2, np.int32), 0), (np.zeros((), np.float64), 1),
                           (np.zeros(1, np.bool_), 1), (np.zeros(3, np.int8), 0)]:
        (y,) = one(tmp_path, "CastLike", [x, like], {"saturate": saturate}, 19, consts=(1,))
        close(y, x.astype(like.dtype), like.dtype)
    node_refusal(tmp_path, "CastLike", [x, np.zeros(1, np.float64)], {"saturate": 1}, 17,
                 consts=(1,), match="CastLike takes saturate from opset 19 on")


def test_castlike_gradient():
    x = np.random.default_rng(15).standard_normal((3, 4))
    check_case(Case("CastLike", [x, np.zeros(2, np.float64)], opset=19, wrt=[0]),
               second_order=False)


def avgpool_ref(x, kernel, strides, dilations, pads, ceil_mode, include_pad):
    """ONNX AveragePool-19 on (N, C, H, W): the mean over the window's taps inside the input, or
    with count_include_pad over those inside the padded input."""
    n_sp = len(kernel)
    outs, taps = [], []
    for d in range(n_sp):
        size, pb, pe = x.shape[2 + d], pads[d], pads[n_sp + d]
        span = (kernel[d] - 1) * dilations[d] + 1
        room = size + pb + pe - span
        out = (-(-room // strides[d]) if ceil_mode else room // strides[d]) + 1
        if ceil_mode and (out - 1) * strides[d] >= size + pb:
            out -= 1
        outs.append(out)
        taps.append([[o * strides[d] - pb + k * dilations[d] for k in range(kernel[d])]
                     for o in range(out)])
    y = np.zeros(x.shape[:2] + tuple(outs))
    for oh in range(outs[0]):
        for ow in range(outs[1]):
            rows, cols = taps[0][oh], taps[1][ow]
            r_in = [r for r in rows if 0 <= r < x.shape[2]]
            c_in = [c for c in cols if 0 <= c < x.shape[3]]
            total = x[:, :, r_in][:, :, :, c_in].sum(axis=(2, 3))
            if include_pad:
                div = (len([r for r in rows if r < x.shape[2] + pads[2]]) *
                       len([c for c in cols if c < x.shape[3] + pads[3]]))
            else:
                div = len(r_in) * len(c_in)
            y[:, :, oh, ow] = total / div
    return y.astype(x.dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_average_pool_dilations(tmp_path, device):
    rng = np.random.default_rng(19)
    for shape, kernel, strides, dilations, pads in [
            ((2, 3, 9, 7), [3, 2], [2, 1], [2, 3], [1, 0, 2, 2]),
            ((1, 17, 11, 13), [2, 3], [1, 2], [3, 2], [0, 2, 2, 1]),
            ((1, 5, 8, 31), [3, 3], [3, 2], [1, 4], [1, 1, 2, 7]),
            ((2, 2, 6, 6), [2, 2], [1, 1], [1, 1], [0, 0, 0, 0])]:
        x = rng.standard_normal(shape).astype(np.float32)
        for ceil_mode in (0, 1):
            for include_pad in (0, 1):
                attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dilations,
                         "pads": pads, "ceil_mode": ceil_mode, "count_include_pad": include_pad}
                (y,) = one(tmp_path, "AveragePool", [x], attrs, 19, device)
                want = avgpool_ref(x, kernel, strides, dilations, pads, ceil_mode, include_pad)
                np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6, err_msg=str(attrs))


@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool_dilations_gradient(include_pad):
    x = np.random.default_rng(23).standard_normal((1, 2, 7, 6))
    attrs = {"kernel_shape": [2, 3], "strides": [2, 1], "dilations": [3, 2], "pads": [1, 2, 2, 1],
             "ceil_mode": 1, "count_include_pad": include_pad}
    check_case(Case("AveragePool", [x], attrs, opset=19))


# ------------------------------------------------------------------ bitwise ops

BITWISE = {"BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or,
           "BitwiseXor": np.bitwise_xor}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint8])
def test_bitwise(tmp_path, dtype, device):
    rng = np.random.default_rng(np.dtype(dtype).itemsize)
    info = np.iinfo(dtype)
    draw = lambda shape: rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    for op, fn in BITWISE.items():
        for sa, sb in [((3, 5), (5,)), ((2, 1, 7), (1, 3, 1)), ((), (4,))]:
            a, b = draw(sa), draw(sb)
            (y,) = one(tmp_path, op, [a, b], {}, 18, device)
            close(y, fn(a, b), dtype)
    x = draw((3, 4, 5))
    (y,) = one(tmp_path, "BitwiseNot", [x], {}, 18, device)
    close(y, np.invert(x), dtype)


def test_bitwise_refuses_floats_and_bool(tmp_path):
    node_refusal(tmp_path, "BitwiseAnd", [np.ones(3, np.float32)] * 2, {}, 18,
                 match="float32, which BitwiseAnd does not take")
    node_refusal(tmp_path, "BitwiseNot", [np.ones(3, np.bool_)], {}, 18,
                 match="bool, which BitwiseNot does not take")


# ------------------------------------------------------------------ Col2Im

def col2im_ref(x, image, block, strides, dilations, pads):
    """The ONNX definition, one tap at a time."""
    n = len(image)
    grid = [(image[i] + pads[i] + pads[n + i] - (block[i] - 1) * dilations[i] - 1) // strides[i]
            + 1 for i in range(n)]
    taps = int(np.prod(block))
    y = np.zeros((x.shape[0], x.shape[1] // taps) + tuple(image), x.dtype)
    for c in range(y.shape[1]):
        for k, tap in enumerate(np.ndindex(*block)):
            for l, cell in enumerate(np.ndindex(*grid)):
                pos = tuple(cell[i] * strides[i] - pads[i] + tap[i] * dilations[i]
                            for i in range(n))
                if all(0 <= pos[i] < image[i] for i in range(n)):
                    y[(slice(None), c) + pos] += x[:, c * taps + k, l]
    return y


@pytest.mark.parametrize("device", DEVICES)
def test_col2im_against_torch_fold(tmp_path, device):
    rng = np.random.default_rng(24)
    for image, block, strides, dilations, pads, C in [
            ([5, 7], [2, 3], [1, 2], [2, 1], [1, 0, 0, 2], 3), ([9, 4], [3, 1], [2, 1], [1, 1],
                                                                 [1, 0, 1, 0], 1),
            ([6, 6], [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 2)]:
        grid = [(image[i] + pads[i] + pads[2 + i] - (block[i] - 1) * dilations[i] - 1)
                // strides[i] + 1 for i in range(2)]
        x = rng.standard_normal((2, C * block[0] * block[1], grid[0] * grid[1])).astype(np.float32)
        attrs = {"strides": strides, "dilations": dilations, "pads": pads}
        (y,) = one(tmp_path, "Col2Im", [x, np.array(image, I64), np.array(block, I64)], attrs, 18,
                   device, consts=(1, 2))
        want = col2im_ref(x.astype(np.float64), image, block, strides, dilations, pads)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        if pads[:2] == pads[2:]:  # torch pads both ends alike
            folded = F.fold(torch.from_numpy(x), image, block, dilation=dilations,
                            padding=pads[:2], stride=strides).numpy()
            np.testing.assert_allclose(y, folded, rtol=1e-5, atol=1e-5)


def test_col2im_1d_and_3d(tmp_path):
    rng = np.random.default_rng(25)
    for image, block, strides, dilations, pads in [
            ([11], [3], [2], [2], [1, 2]), ([4, 5, 3], [2, 2, 1], [1, 2, 1], [2, 1, 1],
                                            [1, 0, 0, 0, 1, 1])]:
        n = len(image)
        grid = [(image[i] + pads[i] + pads[n + i] - (block[i] - 1) * dilations[i] - 1)
                // strides[i] + 1 for i in range(n)]
        x = rng.standard_normal((1, 2 * int(np.prod(block)), int(np.prod(grid))))
        attrs = {"strides": strides, "dilations": dilations, "pads": pads}
        (y,) = one(tmp_path, "Col2Im", [x, np.array(image, I64), np.array(block, I64)], attrs, 18,
                   consts=(1, 2))
        close(y, col2im_ref(x, image, block, strides, dilations, pads), np.float64)


def test_col2im_errors(tmp_path):
    x = np.zeros((1, 6, 20), np.float32)
    image, block = np.array([5, 6], I64), np.array([2, 3], I64)
    node_refusal(tmp_path, "Col2Im", [x, image, block], {}, 18, consts=(1, 2),
                 match="the input has 20 block positions \\(dim 2\\), the image and block give 16")
    node_refusal(tmp_path, "Col2Im", [np.zeros((1, 7, 16), np.float32), image, block], {}, 18,
                 consts=(1, 2), match="dim 1 \\(7\\) is not a multiple of the 6 taps")
    node_refusal(tmp_path, "Col2Im", [x, image, np.array([2], I64)], {}, 18, consts=(1, 2),
                 match="image_shape has 2 values but block_shape has 1")
    node_refusal(tmp_path, "Col2Im", [x, image, np.array([7, 1], I64)], {}, 18, consts=(1, 2),
                 match="a block spanning 7 does not fit image dim 0 of 5")


# ------------------------------------------------------------------ type-list-only changes

def test_ops_with_widened_type_lists(tmp_path):
    """Reshape, Shape, Size-free shape arithmetic, Flatten, Squeeze, Unsqueeze, Transpose,
    Identity, ConstantOfShape, Constant and Equal, whose versions 19 to 21 only added types."""
    x = np.random.default_rng(20).standard_normal((2, 3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
        helper.make_node("Shape", ["t"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["z"],
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Add", ["t", "z"], ["a"]),
        helper.make_node("Constant", [], ["shape"],
                         value=numpy_helper.from_array(np.array([4, 6], I64))),
        helper.make_node("Reshape", ["a", "shape"], ["r"]),
        helper.make_node("Unsqueeze", ["r", "ax"], ["u"]),
        helper.make_node("Squeeze", ["u", "ax"], ["q"]),
        helper.make_node("Flatten", ["q"], ["f"], axis=1),
        helper.make_node("Identity", ["f"], ["y"]),
        helper.make_node("Equal", ["y", "y"], ["e"]),
    ]
    m = model(nodes, [("x", x)], ["y", "e"], 21, [("ax", np.array([0], I64))])
    y, e = run(tmp_path, m, [x])
    close(y, (x.transpose(2, 0, 1) + 0.5).reshape(4, 6), np.float32)
    assert e.all()


# ------------------------------------------------------------------ refusals

def test_float8_initializer_refused(tmp_path):
    t = TensorProto(name="w", data_type=17, dims=[2], raw_data=b"\x01\x02")
    m = model([helper.make_node("Identity", ["w"], ["y"])], [], ["y"], 19)
    m.graph.initializer.append(t)
    msg = refusal(tmp_path, m)
    assert "float8e4m3fn" in msg and "'w'" in msg


def test_deform_conv_refused(tmp_path):
    x = np.zeros((1, 1, 4, 4), np.float32)
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="deform")
    m = model([node], [("x", x)], ["y"], 19,
              [("w", np.zeros((1, 1, 3, 3), np.float32)),
               ("offset", np.zeros((1, 18, 2, 2), np.float32))])
    msg = refusal(tmp_path, m)
    assert "'DeformConv'" in msg and "node 'deform'" in msg

"""The reductions and comparisons on every integer dtype Tessera has, and the ops that
detection and sequence exports bring: ReduceMin/Max/Sum/Prod on int8, uint8, int32 and int64
(the ones ONNX allows each), ReduceProd with its gradient (zeros included), the comparisons
(Equal, Less, Greater, LessOrEqual, GreaterOrEqual) on every numeric dtype, And/Or/Xor/Not,
CumSum and OneHot: reference kernels against numpy and PyTorch on odd and broadcast shapes,
gradients against finite differences (test_grad's harness), and the errors for bad input."""
import zlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import tsr
from test_cli import ok
from test_grad import Case, check_case

INT_DTYPES = [np.int8, np.uint8, np.int32, np.int64]
NUMERIC_DTYPES = [np.float32, np.float64] + INT_DTYPES


def rng(seed):
    return np.random.default_rng(seed)


def random_of(r, shape, dtype, lo=-50, hi=50):
    if np.issubdtype(dtype, np.floating):
        return r.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return r.integers(max(lo, info.min), min(hi, info.max) + 1, shape).astype(dtype)


def assert_close(out, ref):
    ref = np.asarray(ref)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    if np.issubdtype(ref.dtype, np.floating):
        tol = 1e-5 if ref.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(out, ref)


# ------------------------------------------------------------- reductions

REDUCE_NP = {"ReduceSum": np.sum, "ReduceProd": np.prod, "ReduceMax": np.max,
             "ReduceMin": np.min}
REDUCE_DTYPES = {"ReduceSum": [np.float32, np.float64, np.int32, np.int64],
                 "ReduceProd": [np.float32, np.float64, np.int32, np.int64],
                 "ReduceMax": NUMERIC_DTYPES, "ReduceMin": NUMERIC_DTYPES}
SHAPES = [(7,), (3, 5), (2, 3, 5), (3, 1, 4, 5), (2, 3, 1, 3, 2)]


def run_reduce(op, x, axes, keepdims, opset):
    if op == "ReduceSum" and opset >= 13:
        inputs = [x, np.array(axes, np.int64)] if axes is not None else [x]
        return tsr.run_op(op, inputs, {"keepdims": keepdims}, opset=opset, const_inputs=(1,))[0]
    attrs = {"keepdims": keepdims}
    if axes is not None:
        attrs["axes"] = axes
    return tsr.run_op(op, [x], attrs, opset=opset, threads=2)[0]


@pytest.mark.parametrize("op, dtype", [(op, d) for op in REDUCE_NP for d in REDUCE_DTYPES[op]])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("opset", [11, 13])
def test_reduce_every_dtype(op, dtype, keepdims, opset):
    r = rng(zlib.crc32(f"{op} {np.dtype(dtype).name} {keepdims} {opset}".encode()))
    for shape in SHAPES:
        for n_axes in range(len(shape) + 1):
            axes = sorted(r.choice(len(shape), n_axes, replace=False).tolist())
            axes = [a - len(shape) if r.random() < 0.5 else a for a in axes]
            # small magnitudes keep products inside float precision; integers wrap like numpy
            x = random_of(r, shape, dtype, -3, 3) if op == "ReduceProd" else random_of(r, shape,
                                                                                      dtype)
            y = run_reduce(op, x, axes or None, keepdims, opset)
            ref = REDUCE_NP[op](x, axis=tuple(axes) if axes else None, keepdims=bool(keepdims))
            assert_close(y, np.asarray(ref).astype(dtype))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_integer_sums_wrap_like_numpy(dtype):
    info = np.iinfo(dtype)
    x = np.array([[info.max, 1, 5], [info.min, -1, 7]], dtype)
    for op in ("ReduceSum", "ReduceProd"):
        for axes in ([0], [1], None):
            y = run_reduce(op, x, axes, 0, 11)
            ref = REDUCE_NP[op](x, axis=tuple(axes) if axes else None, dtype=dtype)
            assert_close(y, np.asarray(ref, dtype))
    # extremes of the narrow types are kept exactly
    for dt in (np.int8, np.uint8, np.int64):
        i = np.iinfo(dt)
        x = np.array([[i.min, i.max, 0], [i.max, i.min, 1]], dt)
        assert_close(run_reduce("ReduceMax", x, [1], 0, 11), x.max(1))
        assert_close(run_reduce("ReduceMin", x, [0], 1, 11), x.min(0, keepdims=True))


def test_reduce_empty_groups_give_the_identity():
    for dt in (np.float32, np.int32, np.int64):
        x = np.zeros((3, 0, 2), dt)
        assert_close(run_reduce("ReduceSum", x, [1], 0, 11), np.zeros((3, 2), dt))
        assert_close(run_reduce("ReduceProd", x, [1], 0, 11), np.ones((3, 2), dt))
    for dt in INT_DTYPES:
        x = np.zeros((0, 4), dt)
        assert_close(run_reduce("ReduceMax", x, [0], 0, 11), np.full(4, np.iinfo(dt).min, dt))
        assert_close(run_reduce("ReduceMin", x, [0], 1, 11), np.full((1, 4), np.iinfo(dt).max, dt))
    x = np.zeros((0, 2), np.float64)
    assert_close(run_reduce("ReduceMax", x, [0], 0, 11), np.full(2, -np.inf))


def test_reduce_prod_matches_torch_and_noop_sum_on_ints():
    r = rng(3)
    x = r.standard_normal((4, 3, 5))
    y = run_reduce("ReduceProd", x, [-1, 0], 0, 13)
    assert_close(y, torch.from_numpy(x).prod(-1).prod(0).numpy())
    xi = random_of(r, (3, 4), np.int64)
    (y,) = tsr.run_op("ReduceSum", [xi, np.zeros(0, np.int64)], {"noop_with_empty_axes": 1},
                      opset=13, const_inputs=(1,))
    assert_close(y, xi)


def test_reduce_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="keepdims is 2, must be 0 or 1"):
        tsr.run_op("ReduceProd", [x], {"keepdims": 2})
    with pytest.raises(tsr.TesseraError, match="noop_with_empty_axes is 3"):
        tsr.run_op("ReduceSum", [x], {"noop_with_empty_axes": 3}, opset=13)
    with pytest.raises(tsr.TesseraError, match="no attribute 'noop_with_empty_axes'"):
        tsr.run_op("ReduceMax", [x], {"noop_with_empty_axes": 1})
    with pytest.raises(tsr.TesseraError, match="given twice"):
        tsr.run_op("ReduceProd", [x], {"axes": [0, -2]})
    with pytest.raises(tsr.TesseraError, match="axis 2 is out of range"):
        tsr.run_op("ReduceMin", [np.ones((2, 3), np.int8)], {"axes": [2]})
    with pytest.raises(tsr.TesseraError, match="uint8, which ReduceSum does not take"):
        tsr.run_op("ReduceSum", [np.ones((2, 3), np.uint8)])
    with pytest.raises(tsr.TesseraError, match="int64, which ReduceMean does not take"):
        tsr.run_op("ReduceMean", [np.ones((2, 3), np.int64)])
    with pytest.raises(tsr.TesseraError, match="bool, which ReduceMax does not take"):
        tsr.run_op("ReduceMax", [np.ones((2, 3), bool)])


def factors(seed, shape):
    """Magnitudes near 1 so that products of a dozen stay near 1, with random signs."""
    r = rng(seed)
    return r.uniform(0.8, 1.3, shape) * r.choice([-1.0, 1.0], shape)


REDUCE_GRAD_CASES = [
    Case("ReduceProd", [factors(1, (3, 4, 5))], {"axes": [0, 2], "keepdims": 0}),
    Case("ReduceProd", [factors(2, (2, 5))], {"axes": [-1]}),
    Case("ReduceProd", [factors(3, (4, 3))], {"axes": [0], "keepdims": 0}),
    Case("ReduceProd", [factors(4, (3, 1, 4))], {"axes": [1]}),
]


@pytest.mark.parametrize("case", REDUCE_GRAD_CASES, ids=lambda c: str(c.attrs))
def test_reduce_prod_gradient_against_finite_differences(case):
    check_case(case)


NO_ZERO = [[1.5, -2.0, 0.5], [1.2, 0.9, -1.1]]
ONE_ZERO = [[1.5, 0.0, 0.5], [1.2, 0.9, -1.1]]
ZERO_ROWS = [[1.5, -2.0, 0.5, 3.0], [1.5, 0.0, 2.0, -1.0], [0.0, 2.0, 0.0, 1.5]]  # 0, 1, 2 zeros


@pytest.mark.parametrize("x, axes", [(ZERO_ROWS, [1]), (ZERO_ROWS, [0]), (ONE_ZERO, [0, 1]),
                                     (ONE_ZERO, None), (NO_ZERO, None), (ZERO_ROWS, None)])
def test_reduce_prod_gradient_with_zeros_matches_torch(x, axes):
    x = np.array(x)
    attrs = {"keepdims": 1} if axes is None else {"axes": axes, "keepdims": 1}
    g = tsr.Graph()
    g.add_input("x", x.dtype, list(x.shape))
    g.add_node("ReduceProd", ["x"], ["y"], attrs, name="prod")
    g.add_output("y")
    grad = tsr.gradient(g, ["y"], ["x"])
    y = tsr.Plan(g).run([x])[0]
    seed = rng(5).uniform(0.5, 1.5, y.shape)
    dx = tsr.Plan(grad).run([x, seed])[-1]
    xt = torch.from_numpy(x).requires_grad_()
    yt = xt
    for a in sorted(axes if axes is not None else [0, 1], reverse=True):
        yt = yt.prod(a, keepdim=True)
    yt.backward(torch.from_numpy(seed))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert np.any(dx != 0) == (axes is not None or np.count_nonzero(x == 0) < 2)


def test_reduce_min_on_int64_carries_no_gradient():
    """fasterrcnn's ReduceMin is on int64 sizes; a float loss beside it still differentiates."""
    g = tsr.Graph()
    g.add_input("x", np.float64, [3, 4])
    g.add_input("n", np.int64, [3])
    g.add_node("ReduceMin", ["n"], ["m"], {"keepdims": 1}, name="min")
    g.add_node("Cast", ["m"], ["mf"], {"to": TensorProto.DOUBLE}, name="cast")
    g.add_node("Mul", ["x", "mf"], ["y"], name="mul")
    g.add_output("y")
    grad = tsr.gradient(g, ["y"], ["x"])
    x, n = rng(6).standard_normal((3, 4)), np.array([7, 3, 9])
    seed = rng(7).standard_normal((3, 4))
    np.testing.assert_allclose(tsr.Plan(grad).run([x, n, seed])[-1], 3 * seed)


# ------------------------------------------------------------ comparisons, logic

COMPARE_NP = {"Equal": np.equal, "Less": np.less, "Greater": np.greater,
              "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal}
BROADCASTS = [((3, 5), (3, 5)), ((2, 3, 5), (5,)), ((4, 1), (1, 7)), ((2, 1, 3), (4, 1)),
              ((), (3, 2)), ((1,), ()), ((3, 0), (1,))]


@pytest.mark.parametrize("op", list(COMPARE_NP))
@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_comparisons_every_dtype_broadcast(op, dtype):
    r = rng(len(op) + NUMERIC_DTYPES.index(dtype))
    for sa, sb in BROADCASTS:
        a, b = random_of(r, sa, dtype, -4, 4), random_of(r, sb, dtype, -4, 4)  # many ties
        (y,) = tsr.run_op(op, [a, b], threads=2)
        assert_close(y, COMPARE_NP[op](a, b))
        (y,) = tsr.run_op(op, [b, a])
        assert_close(y, COMPARE_NP[op](b, a))


def test_comparisons_extremes_and_nan():
    for dt in INT_DTYPES:
        i = np.iinfo(dt)
        a = np.array([i.min, i.max, i.min, 0], dt)
        b = np.array([i.max, i.min, i.min, i.max], dt)
        for op, fn in COMPARE_NP.items():
            assert_close(tsr.run_op(op, [a, b])[0], fn(a, b))
    a = np.array([np.nan, 1.0, np.inf, -np.inf], np.float32)
    b = np.array([np.nan, np.nan, np.inf, 0.0], np.float32)
    for op, fn in COMPARE_NP.items():
        assert_close(tsr.run_op(op, [a, b])[0], fn(a, b))
    x = rng(8).random((3, 4)) > 0.5
    assert_close(tsr.run_op("Equal", [x, x[:1]])[0], x == x[:1])


LOGIC_NP = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}


@pytest.mark.parametrize("op", list(LOGIC_NP))
def test_logic_broadcast(op):
    r = rng(len(op))
    for sa, sb in BROADCASTS + [((7, 9, 33), (9, 1))]:
        a, b = r.random(sa) > 0.5, r.random(sb) > 0.5
        (y,) = tsr.run_op(op, [a, b], threads=2)
        assert_close(y, LOGIC_NP[op](a, b))
    x = r.random((2, 3, 4)) > 0.3
    assert_close(tsr.run_op("Not", [x])[0], ~x)


def test_logic_and_comparison_errors():
    f = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="float32, which And does not take"):
        tsr.run_op("And", [f, f])
    with pytest.raises(tsr.TesseraError, match="int64, which Xor does not take"):
        tsr.run_op("Xor", [np.ones(3, np.int64), np.ones(3, np.int64)])
    with pytest.raises(tsr.TesseraError, match="Not does not take"):
        tsr.run_op("Not", [np.ones(3, np.int8)])
    with pytest.raises(tsr.TesseraError, match="one dtype"):
        tsr.run_op("GreaterOrEqual", [np.ones(3, np.int8), np.ones(3, np.uint8)])
    with pytest.raises(tsr.TesseraError, match="bool, which LessOrEqual does not take"):
        tsr.run_op("LessOrEqual", [np.ones(3, bool), np.ones(3, bool)])
    with pytest.raises(tsr.TesseraError, match="does not broadcast"):
        tsr.run_op("Or", [np.ones((2, 3), bool), np.ones((4,), bool)])


# ------------------------------------------------------------------ CumSum


def cumsum_np(x, axis, exclusive, reverse):
    x = np.flip(x, axis) if reverse else x
    acc = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:
        acc = acc - x if np.issubdtype(x.dtype, np.floating) else (acc - x).astype(x.dtype)
    return np.flip(acc, axis) if reverse else acc


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum(dtype, exclusive, reverse):
    r = rng(exclusive * 2 + reverse)
    for shape in [(7,), (3, 5), (2, 3, 5), (3, 1, 4, 5), (2, 0, 3)]:
        x = random_of(r, shape, dtype)
        for axis in range(-len(shape), len(shape)):
            adt = np.int32 if axis % 2 else np.int64
            ax = np.array(axis, adt) if r.random() < 0.5 else np.array([axis], adt)
            (y,) = tsr.run_op("CumSum", [x, ax], {"exclusive": exclusive, "reverse": reverse},
                              opset=14, const_inputs=(1,) if axis % 3 else (), threads=2)
            ref = cumsum_np(x, axis, exclusive, reverse)
            if np.issubdtype(dtype, np.floating):
                ref = cumsum_np(x.astype(np.float64), axis, exclusive, reverse).astype(dtype)
            assert_close(y, ref)


def test_cumsum_matches_torch():
    x = rng(9).standard_normal((4, 6, 5)).astype(np.float32)
    (y,) = tsr.run_op("CumSum", [x, np.array(1)], opset=11)
    assert_close(y, torch.cumsum(torch.from_numpy(x), 1).numpy())


CUMSUM_GRAD_CASES = [
    Case("CumSum", [rng(10).standard_normal((3, 4, 5)), np.array(1)], {}),
    Case("CumSum", [rng(11).standard_normal((3, 4)), np.array(-1)], {"exclusive": 1}),
    Case("CumSum", [rng(12).standard_normal((5, 2)), np.array([0], np.int32)], {"reverse": 1}),
    Case("CumSum", [rng(13).standard_normal((2, 7)), np.array(1)], {"exclusive": 1, "reverse": 1}),
]


@pytest.mark.parametrize("case", CUMSUM_GRAD_CASES, ids=lambda c: str(c.attrs))
def test_cumsum_gradient_against_finite_differences(case):
    check_case(case)


def test_cumsum_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="axis 2 is out of range for rank 2"):
        tsr.run_op("CumSum", [x, np.array(2)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="axis -3 is out of range"):
        tsr.run_op("CumSum", [x, np.array(-3)])
    with pytest.raises(tsr.TesseraError, match="axis must be a scalar"):
        tsr.run_op("CumSum", [x, np.array([0, 1])])
    with pytest.raises(tsr.TesseraError, match="exclusive is 2, must be 0 or 1"):
        tsr.run_op("CumSum", [x, np.array(0)], {"exclusive": 2})
    with pytest.raises(tsr.TesseraError, match="reverse is -1"):
        tsr.run_op("CumSum", [x, np.array(0)], {"reverse": -1})
    with pytest.raises(tsr.TesseraError, match="float32, which CumSum does not take"):
        tsr.run_op("CumSum", [x, np.array(0.0, np.float32)])
    with pytest.raises(tsr.TesseraError, match="uint8, which CumSum does not take"):
        tsr.run_op("CumSum", [np.ones(3, np.uint8), np.array(0)])
    with pytest.raises(tsr.TesseraError, match="rank 1 or more"):
        tsr.run_op("CumSum", [np.array(1.0), np.array(0)])


# ------------------------------------------------------------------ OneHot


def onehot_np(indices, depth, values, axis):
    idx = np.trunc(indices.astype(np.float64)).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    valid = (idx >= 0) & (idx < depth)
    hot = (idx[..., None] == np.arange(depth)) & valid[..., None]
    out = np.where(hot, values[1], values[0]).astype(values.dtype)
    return np.moveaxis(out, -1, axis if axis >= 0 else axis + out.ndim)


@pytest.mark.parametrize("index_dtype", NUMERIC_DTYPES)
def test_onehot(index_dtype):
    r = rng(NUMERIC_DTYPES.index(index_dtype))
    for shape in [(7,), (3, 5), (2, 3, 4), ()]:
        for depth in (1, 5, 10):
            lo = 0 if index_dtype == np.uint8 else -depth - 2
            indices = r.integers(lo, depth + 3, shape).astype(index_dtype)
            rank = len(shape) + 1
            for axis in range(-rank, rank):
                for values in (np.array([-1.5, 2.0], np.float32), np.array([3, 7], np.int64),
                               np.array([False, True]), np.array([9, 4], np.uint8)):
                    depth_t = np.array([depth], [np.int64, np.float32, np.int32][axis % 3])
                    (y,) = tsr.run_op("OneHot", [indices, depth_t, values], {"axis": axis},
                                      const_inputs=(1,))
                    assert_close(y, onehot_np(indices, depth, values, axis))


def test_onehot_float_indices_and_depth_truncate_and_match_torch():
    indices = np.array([[0.7, 2.9, -0.5], [-1.2, 3.5, 4.0]], np.float64)
    (y,) = tsr.run_op("OneHot", [indices, np.array(4.8), np.array([0.0, 1.0])],
                      const_inputs=(1,))
    assert_close(y, onehot_np(indices, 4, np.array([0.0, 1.0]), -1))
    idx = rng(14).integers(0, 6, (5, 3))
    (y,) = tsr.run_op("OneHot", [idx, np.array(6), np.array([0, 1])], const_inputs=(1,))
    assert_close(y, torch.nn.functional.one_hot(torch.from_numpy(idx), 6).numpy())


def test_onehot_depth_as_graph_input():
    """A class count known only at run time: the plan takes it as a constant of its tail."""
    for depth in (4, 6):
        (y,) = tsr.run_op("OneHot", [np.array([1, 0, 3]), np.array([depth]), np.array([0.0, 1.0])])
        assert_close(y, onehot_np(np.array([1, 0, 3]), depth, np.array([0.0, 1.0]), -1))


def test_onehot_errors():
    i, d, v = np.array([0, 1]), np.array(3), np.array([0.0, 1.0])
    with pytest.raises(tsr.TesseraError, match="axis 2 is out of range for an output of rank 2"):
        tsr.run_op("OneHot", [i, d, v], {"axis": 2}, const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="axis -3 is out of range"):
        tsr.run_op("OneHot", [i, d, v], {"axis": -3}, const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="two elements"):
        tsr.run_op("OneHot", [i, d, np.array([0.0, 1.0, 2.0])], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="depth must be a positive integer"):
        tsr.run_op("OneHot", [i, np.array(0), v], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="depth must hold one value"):
        tsr.run_op("OneHot", [i, np.array([2, 3]), v], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="bool, which OneHot does not take"):
        tsr.run_op("OneHot", [np.array([True]), d, v], const_inputs=(1,))


def test_onehot_values_gradient_is_a_clear_error():
    g = tsr.Graph()
    g.add_input("v", np.float64, [2])
    g.add_constant("i", np.array([0, 2]))
    g.add_constant("d", np.array(3))
    g.add_node("OneHot", ["i", "d", "v"], ["y"], name="oh")
    g.add_output("y")
    with pytest.raises(tsr.TesseraError, match="node 'oh' \\(OneHot\\): OneHot has no gradient"):
        tsr.gradient(g, ["y"], ["v"])


# --------------------------------------------------- one ONNX model, tessera info --ops

NEW_OPS = ["ReduceProd", "ReduceMin", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor",
           "Not", "CumSum", "OneHot"]


def test_onnx_model_and_info_ops(tmp_path):
    """A model as fasterrcnn's postprocessing writes them: int64 sizes reduced, compared and
    combined; it loads, runs against numpy and `tessera info --ops` lists every op."""
    X = helper.make_tensor_value_info("x", TensorProto.INT64, [3, 4])
    Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("ReduceProd", ["x"], ["p"], axes=[1], keepdims=1),
        helper.make_node("ReduceMin", ["x"], ["m"], axes=[0], keepdims=1),
        helper.make_node("GreaterOrEqual", ["x", "m"], ["ge"]),
        helper.make_node("LessOrEqual", ["x", "p"], ["le"]),
        helper.make_node("And", ["ge", "le"], ["a"]),
        helper.make_node("Or", ["ge", "le"], ["o"]),
        helper.make_node("Xor", ["a", "o"], ["xo"]),
        helper.make_node("Not", ["xo"], ["n"]),
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("CumSum", ["nf", "ax"], ["c"], reverse=1),
        helper.make_node("OneHot", ["x", "depth", "vals"], ["oh"], axis=1),
        helper.make_node("ReduceSum", ["oh", "axes"], ["s"], keepdims=0),
        helper.make_node("Add", ["c", "s"], ["y"]),
    ]
    inits = [helper.make_tensor("ax", TensorProto.INT64, [], [1]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
             helper.make_tensor("depth", TensorProto.INT64, [1], [4]),
             helper.make_tensor("vals", TensorProto.FLOAT, [2], [0.0, 2.0])]
    model = helper.make_model(helper.make_graph(nodes, "g", [X], [Y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "int_ops.onnx"
    onnx.save(model, path)
    x = rng(15).integers(-2, 4, (3, 4)).astype(np.int64)
    (y,) = tsr.run_onnx(str(path), [x])
    p, m = x.prod(1, keepdims=True), x.min(0, keepdims=True)
    ge, le = x >= m, x <= p
    n = ~((ge & le) ^ (ge | le))
    c = np.flip(np.cumsum(np.flip(n.astype(np.float32), 1), 1), 1)
    s = onehot_np(x, 4, np.array([0.0, 2.0], np.float32), 1).sum(1)
    assert_close(y, (c + s).astype(np.float32))
    out = ok("info", path, "--ops", "--device", "ref").stdout
    for op in NEW_OPS:
        assert op in out, f"{op} missing from tessera info --ops:\n{out}"

"""TopK against torch.topk (exported to ONNX at opsets 11, 13 and 17, and run by hand on every
numeric dtype, axis, largest and K including 0 and the whole axis), ties (the lower index
first, as ONNX specifies and ONNX Runtime does) against a stable numpy sort, NaN (ranked above
every number, as torch and numpy do), the gradient (dValues scattered back to X's indices)
against finite differences in float64 with a symbolic batch, and the errors for bad K, axis and
dtypes, including a K known only at run time."""

import io

import numpy as np
import pytest
import torch

import tsr

DEVICES = ["ref", "cpu"]
DTYPES = [np.float32, np.float64, np.uint8, np.int8, np.int32, np.int64]


def distinct(rng, shape, dtype):
    """Values with no ties, in range of every dtype of DTYPES."""
    n = int(np.prod(shape))
    vals = rng.permutation(n).reshape(shape) - (0 if dtype == np.uint8 else n // 2)
    if np.dtype(dtype).kind == "f":
        return (vals / 4).astype(dtype)
    return vals.astype(dtype)


def topk(x, k, attrs, device="ref"):
    return tsr.run_op("TopK", [x, np.array([k], np.int64)], attrs, n_outputs=2, device=device,
                      const_inputs=(1,))


def numpy_topk(x, k, axis, largest):
    """The stable sort: equal values keep their order, so lower indices come first; NaN sorts
    above every number."""
    vals = x.astype(np.float64)
    nan = np.isnan(vals)
    vals = np.where(nan, 0.0, -vals if largest else vals)
    order = np.lexsort((vals, ~nan if largest else nan), axis=axis)
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx


CASES = [((7,), 3, -1), ((4, 9), 4, 1), ((5, 3, 4), 2, 0), ((3, 6, 5), 6, 1), ((2, 3, 4), 0, 2),
         ((1, 33, 2), 17, -2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("shape, k, axis", CASES)
def test_against_torch_topk(shape, k, axis, largest, dtype):
    rng = np.random.default_rng(len(shape) * 100 + k)
    x = distinct(rng, shape, dtype)
    t = torch.from_numpy(x.astype(np.int64) if dtype == np.uint8 else x)
    want_v, want_i = torch.topk(t, k, dim=axis, largest=bool(largest), sorted=True)
    for device in DEVICES:
        v, i = topk(x, k, {"axis": axis, "largest": largest}, device)
        assert v.dtype == dtype and i.dtype == np.int64
        np.testing.assert_array_equal(v, want_v.numpy().astype(dtype))
        np.testing.assert_array_equal(i, want_i.numpy())


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_torch_export(opset):
    class M(torch.nn.Module):
        def forward(self, x):
            v, i = torch.topk(x, 5, dim=1, largest=True, sorted=True)
            w, j = torch.topk(x, 2, dim=-1, largest=False)
            return v * 2, i, w, j

    x = torch.from_numpy(distinct(np.random.default_rng(opset), (3, 8, 6), np.float32))
    buf = io.BytesIO()
    torch.onnx.export(M(), (x,), buf, opset_version=opset)
    g = tsr.Graph.load_bytes(buf.getvalue())
    want = [t.numpy() for t in M()(x)]
    for device in DEVICES:
        got = tsr.Plan(g, device=device).run([x.numpy()])
        for a, w in zip(got, want):
            np.testing.assert_array_equal(a, w)


@pytest.mark.parametrize("largest", [1, 0])
def test_ties_take_the_lower_index_first(largest):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (4, 11, 3)).astype(np.float32)
    for dtype in (np.float32, np.int32, np.uint8):
        xs = x.astype(dtype)
        v, i = topk(xs, 7, {"axis": 1, "largest": largest})
        want_v, want_i = numpy_topk(xs, 7, 1, largest)
        np.testing.assert_array_equal(v, want_v)
        np.testing.assert_array_equal(i, want_i)


@pytest.mark.parametrize("largest", [1, 0])
def test_nan_ranks_above_every_number(largest):
    x = np.array([[1.0, np.nan, 3.0, -np.inf, np.nan, np.inf, 2.0],
                  [np.nan, np.nan, np.nan, 0.0, 1.0, np.nan, -1.0]], np.float64)
    for k in (2, 4, 7):
        v, i = topk(x, k, {"largest": largest})
        want_v, want_i = numpy_topk(x, k, 1, largest)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_array_equal(v, want_v)
        tv, ti = torch.topk(torch.from_numpy(x), k, largest=bool(largest))
        np.testing.assert_array_equal(v, tv.numpy())
        # Among equal NaNs torch picks any; its indices still point at the same values.
        np.testing.assert_array_equal(np.take_along_axis(x, ti.numpy(), axis=1), v)


def test_sorted_zero_still_returns_the_top_k():
    x = distinct(np.random.default_rng(9), (3, 10), np.float64)
    v, i = topk(x, 4, {"sorted": 0})
    want_v, _ = numpy_topk(x, 4, 1, 1)
    np.testing.assert_array_equal(np.sort(v, axis=1), np.sort(want_v, axis=1))
    np.testing.assert_array_equal(np.take_along_axis(x, i, axis=1), v)


def test_gradient_against_finite_differences_with_a_symbolic_batch():
    rng = np.random.default_rng(3)
    g = tsr.Graph()
    g.add_input("X", np.float64, ["N", 6, 4])
    g.add_constant("K", np.array([3], np.int64))
    g.add_node("TopK", ["X", "K"], ["V", "I"], {"axis": 1, "largest": 0})
    g.add_output("V")
    g.add_output("I")
    assert g.outputs()[0].shape == ["N", 3, 4]
    x = distinct(rng, (2, 6, 4), np.float64)
    seed = rng.standard_normal((2, 3, 4))
    grad = tsr.gradient(g, ["V"], ["X"])
    dx = tsr.Plan(grad).run([x, seed])[-1]
    plan = tsr.Plan(g)

    def loss(a):
        return float(np.sum(plan.run([a])[0] * seed))

    fd = np.zeros_like(x)
    eps = 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd[idx] = (loss(xp) - loss(xm)) / (2 * eps)
    np.testing.assert_allclose(dx, fd, atol=1e-8)
    np.testing.assert_allclose(tsr.Plan(grad, device="cpu").run([x, seed])[-1], fd, atol=1e-8)


def test_k_from_a_shape_folds_at_plan_time():
    g = tsr.Graph()
    g.add_input("X", np.float32, ["N", 5])
    g.add_node("Shape", ["X"], ["S"])
    g.add_constant("first", np.array([0], np.int64))
    g.add_node("Gather", ["S", "first"], ["K"], {"axis": 0})
    g.add_node("TopK", ["X", "K"], ["V", "I"], {"axis": 0})
    g.add_output("V")
    g.add_output("I")
    x = distinct(np.random.default_rng(1), (4, 5), np.float32)
    v, i = tsr.Plan(g).run([x])
    want_v, want_i = numpy_topk(x, 4, 0, 1)
    np.testing.assert_array_equal(v, want_v)
    np.testing.assert_array_equal(i, want_i)


def test_k_known_only_at_run_time():
    """A K that is a graph input sizes the plan's tail at each run (cached per K)."""
    g = tsr.Graph()
    g.add_input("X", np.float32, [3, 5])
    g.add_input("K", np.int64, [1])
    g.add_node("TopK", ["X", "K"], ["V", "I"], name="topk")
    g.add_output("V")
    g.add_output("I")
    plan = tsr.Plan(g)
    x = distinct(np.random.default_rng(2), (3, 5), np.float32)
    for k in (2, 4, 2):
        v, i = plan.run([x, np.array([k], np.int64)])
        want_v, want_i = numpy_topk(x, k, 1, 1)
        np.testing.assert_array_equal(v, want_v)
        np.testing.assert_array_equal(i, want_i)
    assert plan.stats().n_builds == 3  # the spec and one tail per K


@pytest.mark.parametrize("x, k, attrs, message", [
    (np.zeros((3, 4), np.float32), [5], {}, "K is 5 but axis 1 of X has only 4"),
    (np.zeros((3, 4), np.float32), [-1], {}, "K is -1"),
    (np.zeros((3, 4), np.float32), [1, 2], {}, "K must hold one value"),
    (np.zeros((3, 4), np.float32), np.array([1], np.int32), {}, "int32"),
    (np.zeros((3, 4), np.float32), [1], {"axis": 2}, "axis 2 is out of range"),
    (np.zeros((3, 4), np.float32), [1], {"largest": 2}, "largest and sorted"),
    (np.zeros((3, 4), np.bool_), [1], {}, "bool"),
    (np.float32(1.0), [1], {}, "scalar"),
])
def test_bad_inputs_are_refused_with_a_reason(x, k, attrs, message):
    k = np.asarray(k, dtype=np.asarray(k).dtype if isinstance(k, np.ndarray) else np.int64)
    with pytest.raises(tsr.TesseraError, match=message):
        tsr.run_op("TopK", [x, k], attrs, n_outputs=2, const_inputs=(1,))

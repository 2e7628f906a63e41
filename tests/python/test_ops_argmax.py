"""ArgMax and ArgMin (topk.c) against numpy on random shapes (odd sizes, every axis, negative
axes, keepdims 0 and 1, select_last_index with ties, every dtype), NaNs picked as PyTorch and
numpy pick them, a PyTorch export (Keypoint R-CNN's heatmaps use argmax), and bad attributes."""

import io

import numpy as np
import pytest

import tsr

DTYPES = [np.float32, np.float64, np.uint8, np.int8, np.int32, np.int64]


def run(op, x, device="ref", **attrs):
    g = tsr.Graph()
    g.add_input("x", x.dtype, list(x.shape))
    g.add_node(op, ["x"], ["y"], attrs, name="node0")
    g.add_output("y")
    return tsr.Plan(g, device=device, threads=2).run([x])[0]


def expect(op, x, axis, keepdims, last):
    """numpy's argmax/argmin; the last of equal ones by flipping the axis."""
    pick = np.argmax if op == "ArgMax" else np.argmin
    if last:
        y = x.shape[axis] - 1 - pick(np.flip(x, axis), axis=axis)
    else:
        y = pick(x, axis=axis)
    return np.expand_dims(y, axis) if keepdims else y


@pytest.mark.parametrize("device", ["ref", "cpu"])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("seed", range(12))
def test_against_numpy(op, seed, device):
    rng = np.random.default_rng(seed)
    dtype = DTYPES[seed % len(DTYPES)]
    shape = tuple(int(d) for d in rng.integers(1, 8, size=int(rng.integers(1, 5))))
    # Few distinct values, so that ties are common and select_last_index matters.
    x = rng.integers(0, 4 if seed % 2 else 100, size=shape).astype(dtype)
    axis = int(rng.integers(-len(shape), len(shape)))
    keepdims, last = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    got = run(op, x, device, axis=axis, keepdims=keepdims, select_last_index=last)
    want = expect(op, x, axis, keepdims, last)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_defaults_are_axis_0_with_keepdims():
    x = np.array([[1, 5, 3], [4, 2, 6]], dtype=np.float32)
    np.testing.assert_array_equal(run("ArgMax", x), [[1, 0, 1]])
    np.testing.assert_array_equal(run("ArgMin", x), [[0, 1, 0]])


@pytest.mark.parametrize("op,pick", [("ArgMax", np.argmax), ("ArgMin", np.argmin)])
def test_nan_is_picked_like_numpy_and_torch(op, pick):
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, np.nan, 3.0, np.nan], [2.0, 0.5, 7.0, -1.0]], dtype=np.float32)
    got = run(op, x, axis=1, keepdims=0)
    np.testing.assert_array_equal(got, pick(x, axis=1))
    t = torch.argmax if op == "ArgMax" else torch.argmin
    np.testing.assert_array_equal(got, t(torch.from_numpy(x), dim=1).numpy())
    last = run(op, x, axis=1, keepdims=0, select_last_index=1)
    np.testing.assert_array_equal(last, [3, 2 if op == "ArgMax" else 3])


def test_torch_export():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x):
            return torch.argmax(x.flatten(2), dim=2), torch.argmin(x, dim=1, keepdim=True)

    x = torch.randn(2, 5, 7, 3)
    buf = io.BytesIO()
    torch.onnx.export(Net(), (x,), buf, opset_version=13)
    got = tsr.Plan(tsr.Graph.load_bytes(buf.getvalue()), device="cpu").run([x.numpy()])
    for a, b in zip(got, Net()(x)):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("shape,attrs,message", [
    ((3, 4), {"axis": 2}, "axis 2 is out of range"),
    ((3, 0), {"axis": 1}, "axis 1 of X is empty"),
    ((3, 4), {"keepdims": 2}, "keepdims and select_last_index are 0 or 1"),
    ((), {}, "out of range for X of rank 0"),
])
def test_bad_attributes(shape, attrs, message):
    with pytest.raises(tsr.TesseraError, match=message):
        run("ArgMax", np.zeros(shape, np.float32), **attrs)

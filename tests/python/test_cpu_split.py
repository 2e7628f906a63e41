"""The cpu backend's Split (kernels_misc.c) against numpy: random ranks, axes and piece sizes
(empty pieces, one piece, size-1 axes), every element size, pieces large enough to be split
between threads, the three ways ONNX gives the sizes (attribute, input, num_outputs), and
the gradient, which concatenates the pieces' gradients back."""

import numpy as np
import pytest

import tsr
from test_cpu_transpose import DTYPES, sample


def split(x, axis, sizes=None, opset=13, num_outputs=None, threads=2, n_out=None):
    """x through one Split node on the cpu device, asserting the cpu backend ran it."""
    g = tsr.Graph()
    g.set_opset(opset)
    g.add_input("x", x.dtype, list(x.shape))
    attrs = {"axis": axis}
    inputs = ["x"]
    if num_outputs is not None:
        attrs["num_outputs"] = num_outputs
    elif sizes is not None and opset < 13:
        attrs["split"] = list(sizes)
    elif sizes is not None:
        g.add_constant("sizes", np.array(sizes, np.int64))
        inputs.append("sizes")
    n = n_out or num_outputs or len(sizes)
    outs = [f"y{i}" for i in range(n)]
    g.add_node("Split", inputs, outs, attrs, name="op")
    for o in outs:
        g.add_output(o)
    plan = tsr.Plan(g, device="cpu", threads=threads)
    got = plan.run([x])
    assert plan.node_backend("op") == "cpu", plan.node_backend("op")
    return got


def numpy_split(x, axis, sizes):
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def random_sizes(rng, dim, n):
    cuts = np.sort(rng.integers(0, dim + 1, n - 1))
    return [int(b - a) for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [dim]]))]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_random_splits_match_numpy(dtype):
    rng = np.random.default_rng(11)
    for _ in range(40):
        rank = int(rng.integers(1, 6))
        shape = tuple(int(d) for d in rng.choice([1, 2, 3, 5, 16, 17, 33], rank))
        while np.prod(shape) > 100_000:
            shape = tuple(max(1, d // 2) for d in shape)
        axis = int(rng.integers(-rank, rank))
        sizes = random_sizes(rng, shape[axis], int(rng.integers(1, 5)))
        x = sample(rng, shape, dtype)
        got = split(x, axis, sizes, threads=int(rng.integers(1, 3)))
        for g, want in zip(got, numpy_split(x, axis, sizes)):
            np.testing.assert_array_equal(g, want, err_msg=f"{shape} axis {axis} {sizes}")


@pytest.mark.parametrize("threads", [1, 2])
def test_large_pieces_across_threads(threads):
    """Pieces of several 64 KiB copies each and odd tails, as a radial MLP's output."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4001, 3, 97)).astype(np.float32)
    for axis, sizes in [(2, [32, 1, 64]), (0, [2000, 1, 2000]), (1, [1, 2])]:
        got = split(x, axis, sizes, threads=threads)
        for g, want in zip(got, numpy_split(x, axis, sizes)):
            np.testing.assert_array_equal(g, want)


def test_sizes_as_attribute_num_outputs_and_none():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 10, 4)).astype(np.float64)
    for g, want in zip(split(x, 1, [3, 7], opset=11), numpy_split(x, 1, [3, 7])):
        np.testing.assert_array_equal(g, want)
    # opset 18: ceil(10 / 3) = 4 per piece, the last one the rest
    for g, want in zip(split(x, 1, opset=18, num_outputs=3), numpy_split(x, 1, [4, 4, 2])):
        np.testing.assert_array_equal(g, want)
    # no sizes: equal pieces
    for g, want in zip(split(x, 2, None, n_out=2), numpy_split(x, 2, [2, 2])):
        np.testing.assert_array_equal(g, want)


def test_gradient_concatenates_the_pieces_gradients():
    """In a gradient graph the cpu Split runs forward and its rule's Concat backward: dx is
    the seeds of the pieces side by side, zeros for the piece not differentiated."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 7, 3)).astype(np.float32)
    g = tsr.Graph()
    g.set_opset(13)
    g.add_input("x", np.float32, [5, 7, 3])
    g.add_constant("sizes", np.array([2, 1, 4], np.int64))
    g.add_node("Split", ["x", "sizes"], ["a", "b", "c"], {"axis": 1}, name="op")
    g.add_output("a")
    g.add_output("b")
    g.add_output("c")
    grad = g.gradient(["a", "c"], ["x"])
    plan = tsr.Plan(grad, device="cpu", threads=2)
    sa = rng.standard_normal((5, 2, 3)).astype(np.float32)
    sc = rng.standard_normal((5, 4, 3)).astype(np.float32)
    got = plan.run([x, sa, sc])
    assert plan.node_backend("op") == "cpu"
    for y, want in zip(got[:3], numpy_split(x, 1, [2, 1, 4])):
        np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(got[3], np.concatenate([sa, np.zeros((5, 1, 3), np.float32), sc],
                                                         axis=1))

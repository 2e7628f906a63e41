"""Thread counts of the cpu device: the same results whatever the team size.

A kernel's split of its work across threads (or its choice to run on one
thread below a work threshold) must not change its answer. Shapes are odd
and large enough that the copies split into several pieces and more than
one thread takes part; the answers are compared exactly with the ref
device, since the kernels here only move data."""

import numpy as np
import pytest

import tsr
from tessera import _capi


def concat_graph(shapes, blocked):
    """Concat along channels of inputs of the given shapes; blocked: each input
    first goes through an identity 1x1 Conv so it arrives in nChw16c or nChw8c."""
    g = tsr.Graph()
    g.set_opset(17)
    names = []
    for i, shape in enumerate(shapes):
        g.add_input(f"x{i}", np.float32, list(shape))
        name = f"x{i}"
        if blocked:
            c = shape[1]
            g.add_constant(f"eye{i}", np.eye(c, dtype=np.float32).reshape(c, c, 1, 1))
            g.add_node("Conv", [name, f"eye{i}"], [f"c{i}"], {"kernel_shape": [1, 1]})
            name = f"c{i}"
        names.append(name)
    g.add_node("Concat", names, ["y"], {"axis": 1}, name="op")
    g.add_output("y")
    return g


# Batch 1 and 3; channel counts odd (plain) or whole 16-channel blocks (so
# the blocked layout is kept); inputs from under one piece to several.
CONCATS = [
    ("plain-b1", [(1, 41, 37, 33), (1, 23, 37, 33), (1, 3, 37, 33)], False),
    ("plain-b3", [(3, 17, 29, 31), (3, 5, 29, 31)], False),
    ("blocked-b1", [(1, 64, 27, 29), (1, 32, 27, 29), (1, 16, 27, 29)], True),
    ("blocked-b3", [(3, 48, 19, 23), (3, 16, 19, 23)], True),
]


@pytest.mark.parametrize("shapes,blocked", [c[1:] for c in CONCATS], ids=[c[0] for c in CONCATS])
def test_concat_same_for_any_thread_count(shapes, blocked):
    rng = np.random.default_rng(13)
    feeds = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g = concat_graph(shapes, blocked)
    want = tsr.Plan(g, device="ref", threads=1).run(feeds)[0]
    np.testing.assert_array_equal(want, np.concatenate(feeds, axis=1))
    for threads in (1, 2, 3):
        plan = tsr.Plan(g, device="cpu", threads=threads)
        # NaN first, so a byte that no thread wrote shows.
        got = np.full(want.shape, np.nan, np.float32)
        plan.run(_capi.tensor_array([_capi.tensor_of(x) for x in feeds]),
                 _capi.tensor_array([_capi.tensor_of(got)]))
        assert plan.node_backend("op") == "cpu"
        np.testing.assert_array_equal(got, want, err_msg=f"threads={threads}")


def test_input_shape_errors_name_both_shapes():
    """The run formats shapes only for an error; the messages still say both."""
    g = tsr.Graph()
    g.add_input("x", np.float32, [2, 5])
    g.add_node("Relu", ["x"], ["y"])
    g.add_output("y")
    plan = tsr.Plan(g, device="cpu", threads=2)
    with pytest.raises(tsr.TesseraError, match=r"input 'x' must have shape \[2, 5\], got \[2, 4\] "
                       r"\(dim 1\)"):
        plan.run([np.zeros((2, 4), np.float32)])
    with pytest.raises(tsr.TesseraError, match=r"input 'x' must have shape \[2, 5\], got \[10\]"):
        plan.run([np.zeros(10, np.float32)])
    np.testing.assert_array_equal(plan.run([np.ones((2, 5), np.float32)])[0], np.ones((2, 5)))

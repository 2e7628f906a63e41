"""Values handed from one plan to another in their producer's layout
(tsr_plan_keep_output_layouts, tsr_plan_output_layout,
tsr_plan_set_input_layouts): a convolution's output left blocked by one plan
and fed blocked to another gives what the plain hand-over gives, with
fewer reorders, on an odd channel count (the blocked buffer is larger than
the plain one); specializations are cached by input layout; bad calls are
refused naming what is wrong; devices without blocked layouts keep
everything plain."""

import numpy as np
import pytest

import tessera
from tessera import _capi
from tessera.graph import Plan

SHAPE = (2, 19, 7, 6)
FLOAT32 = _capi.DTYPES[np.dtype(np.float32)]


def producer():
    """x -> Conv 3x3 -> y (kept), and Relu(y) (plain)."""
    rng = np.random.default_rng(1)
    g = tessera.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(SHAPE))
    g.add_constant("w", (0.2 * rng.standard_normal((19, 19, 3, 3))).astype(np.float32))
    g.add_node("Conv", ["x", "w"], ["y"], {"pads": [1, 1, 1, 1]})
    g.add_node("Relu", ["y"], ["r"])
    g.add_output("y")
    g.add_output("r")
    return g


def consumer():
    """y -> MaxPool 3x3 (a blocked kernel) and y -> Transpose (plain only)."""
    g = tessera.Graph()
    g.set_opset(17)
    g.add_input("y", np.float32, list(SHAPE))
    g.add_node("MaxPool", ["y"], ["m"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    g.add_node("Transpose", ["y"], ["t"], {"perm": [0, 2, 3, 1]})
    g.add_output("m")
    g.add_output("t")
    return g


def packed_tensor(raw, shape):
    t = _capi.Tensor(dtype=FLOAT32, rank=len(shape), data=raw.ctypes.data)
    for d, n in enumerate(shape):
        t.dims[d] = n
    return t


def run_producer(plan, x):
    """Runs the producer; y comes back as (raw bytes, layout code)."""
    ins = _capi.tensor_array([_capi.tensor_of(x)])
    descs = plan.reshape(ins)
    layout, nbytes = plan.output_layout(0)
    raw = np.empty(nbytes, np.uint8)
    r = np.empty(descs[1][1], np.float32)
    plan.run(ins, _capi.tensor_array([packed_tensor(raw, SHAPE), _capi.tensor_of(r)]))
    return raw, layout, r


def run_consumer(plan, y):
    ins = _capi.tensor_array([y])
    descs = plan.reshape(ins)
    outs = [np.empty(shape, dt) for dt, shape in descs]
    plan.run(ins, _capi.tensor_array([_capi.tensor_of(o) for o in outs]))
    return outs


def test_blocked_hand_over_matches_plain():
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    want_y, want_r = Plan(producer(), "cpu", 2).run([x])
    want_m, want_t = Plan(consumer(), "cpu", 2).run([want_y])
    plain_producer = Plan(producer(), "cpu", 2)
    plain_producer.run([x])
    first = Plan(producer(), "cpu", 2)
    first.keep_output_layouts([True, False])
    raw, layout, r = run_producer(first, x)
    if layout == 0:
        pytest.skip("the cpu device has no blocked layout on this ISA")
    assert first.output_layout(1) == (0, want_r.nbytes)  # not kept: plain
    assert raw.nbytes > want_y.nbytes  # 19 channels padded to whole blocks
    np.testing.assert_array_equal(r, want_r)
    assert first.stats()["n_reorders"] < plain_producer.stats()["n_reorders"]
    second = Plan(consumer(), "cpu", 2)
    second.set_input_layouts([layout])
    m, t = run_consumer(second, packed_tensor(raw, SHAPE))
    np.testing.assert_allclose(m, want_m, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t, want_t, rtol=1e-6, atol=1e-6)
    # Plain again: another specialization, the same answers.
    second.set_input_layouts(None)
    m2, t2 = run_consumer(second, _capi.tensor_of(want_y))
    np.testing.assert_array_equal(m2, want_m)
    np.testing.assert_array_equal(t2, want_t)
    assert second.stats()["n_cached_specs"] == 2
    second.set_input_layouts([layout])
    m3, _ = run_consumer(second, packed_tensor(raw, SHAPE))
    np.testing.assert_array_equal(m3, m)
    assert second.stats()["n_builds"] == 2


def test_ref_keeps_everything_plain():
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    plan = Plan(producer(), "ref")
    plan.keep_output_layouts([True, True])
    raw, layout, _ = run_producer(plan, x)
    assert layout == 0 and raw.nbytes == x.nbytes
    np.testing.assert_allclose(raw.view(np.float32).reshape(SHAPE),
                               Plan(producer(), "ref").run([x])[0], rtol=0, atol=0)


def test_bad_calls_are_refused():
    plan = Plan(producer(), "cpu", 2)
    with pytest.raises(_capi.InvalidArgumentError, match="2 outputs"):
        plan.keep_output_layouts([True])
    plan.run([np.zeros(SHAPE, np.float32)])
    with pytest.raises(_capi.InvalidArgumentError, match="before the plan's first reshape"):
        plan.keep_output_layouts([True, False])
    second = Plan(consumer(), "cpu", 2)
    with pytest.raises(_capi.InvalidArgumentError, match="2 layouts for a model with 1 inputs"):
        second.set_input_layouts([0, 0])
    with pytest.raises(_capi.InvalidArgumentError, match="no layout has code 7"):
        second.set_input_layouts([7])
    g = tessera.Graph()
    g.set_opset(17)
    g.add_input("v", np.float32, [3, 5])
    g.add_node("Relu", ["v"], ["o"])
    g.add_output("o")
    flat = Plan(g, "cpu", 2)
    flat.set_input_layouts([2])
    with pytest.raises(_capi.InvalidArgumentError,
                       match="input 'v' is fed in layout nChw16c, which holds rank-4 float32"):
        flat.run([np.zeros((3, 5), np.float32)])

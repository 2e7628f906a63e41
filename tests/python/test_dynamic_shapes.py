"""Data-dependent shapes (issue 14 item 2, docs/dynamic_shapes.md): NonZero against
numpy.nonzero on every dtype, odd and empty shapes and all-zero inputs; models whose sizes
the data decides (NonZero -> Transpose -> GatherND / Gather, a Reshape to a shape summed
from an input, Range(0, ReduceMax(x)) -> Cast -> Add, Expand / ConstantOfShape / Tile /
Slice sized by computed tensors, ReduceSum over axes given at run time, a NonZero of a
NonZero's gather), each run at several sizes so that tails are both reused from the plan's
cache and planned anew, against numpy; a torch export of torch.nonzero and x[x > 0] against
PyTorch; `tessera run` writing them; the plan's cache limits with tails; and the errors: a
buffer given for an output the plan allocates, a bound or shape found bad only at run
time."""

import ctypes as C
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

import tessera
import tsr

DEVICES = ["ref", "cpu"]
DTYPES = [np.float32, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_]
ONNX_TYPE = {np.float32: T.FLOAT, np.int64: T.INT64}


def sparse(rng, shape, dtype, density=0.4):
    """Random values of `dtype`, about `density` of them nonzero."""
    keep = rng.random(shape) < density
    vals = rng.integers(1, 5, shape) * np.where(rng.random(shape) < 0.5, -1, 1)
    if dtype == np.bool_:
        return keep
    if dtype == np.uint8:
        vals = np.abs(vals)
    return np.where(keep, vals, 0).astype(dtype)


def model(nodes, inputs, outputs, inits=(), opset=13):
    graph = h.make_graph(nodes, "dynamic", inputs, outputs, list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)]).SerializeToString()


def vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 1, 9), (4, 3, 2, 3), (1, 1), (3, 0, 2)])
def test_nonzero_against_numpy(shape, dtype):
    rng = np.random.default_rng(sum(shape) * 7 + DTYPES.index(dtype))
    for x in (sparse(rng, shape, dtype), np.zeros(shape, dtype), np.ones(shape, dtype)):
        want = np.array(np.nonzero(x), np.int64).reshape(len(shape), -1)
        for device in DEVICES:
            (got,) = tsr.run_op("NonZero", [x], device=device, opset=13)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want)
        (folded,) = tsr.run_op("NonZero", [x], const_inputs=(0,), opset=11)
        np.testing.assert_array_equal(folded, want)


def test_nonzero_floats_nan_and_negative_zero():
    x = np.array([[np.nan, -0.0, 0.0], [np.inf, 1e-30, -2.5]], np.float32)
    for device in DEVICES:
        (got,) = tsr.run_op("NonZero", [x], device=device)
        np.testing.assert_array_equal(got, np.array(np.nonzero(x)))


def gather_model():
    """x[x > 0] by NonZero -> Transpose -> GatherND; the rows holding them by a Gather of
    NonZero's first row; their sum (a known shape computed after the unknown ones); and
    Relu(x), which the plan's prefix computes."""
    return model(
        [h.make_node("Greater", ["x", "zero"], ["mask"]),
         h.make_node("NonZero", ["mask"], ["nz"]),
         h.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]),
         h.make_node("GatherND", ["x", "idx"], ["vals"]),
         h.make_node("Gather", ["nz", "zero_i"], ["rows"], axis=0),
         h.make_node("Gather", ["x", "rows"], ["picked"], axis=0),
         h.make_node("ReduceSum", ["vals"], ["total"], keepdims=0),
         h.make_node("Relu", ["x"], ["relu"])],
        [vi("x", T.FLOAT, ["n", 5])],
        [vi("vals", T.FLOAT, None), vi("picked", T.FLOAT, None), vi("total", T.FLOAT, []),
         vi("relu", T.FLOAT, ["n", 5])],
        [h.make_tensor("zero", T.FLOAT, [], [0.0]), h.make_tensor("zero_i", T.INT64, [], [0])])


@pytest.mark.parametrize("device", DEVICES)
def test_nonzero_gathers_against_numpy(device):
    sess = tessera.Session(gather_model(), device=device, threads=1)
    assert [o.shape for o in sess.outputs] == [[None], [None, 5], [], ["n", 5]]
    rng = np.random.default_rng(3)
    ones = np.ones((2, 5), np.float32)
    # (x, specs built so far): a new batch size is a new spec and tail, a new count a new
    # tail, a count seen before at that batch size reuses its tail
    runs = [(ones, 2), (-ones, 3), (np.eye(2, 5, dtype=np.float32), 4),
            (np.eye(2, 5, k=2, dtype=np.float32), 4), (ones, 4),
            (rng.standard_normal((7, 5)).astype(np.float32), 6)]
    for x, builds in runs:
        vals, picked, total, relu = sess.run(None, {"x": x})
        np.testing.assert_array_equal(vals, x[x > 0])
        np.testing.assert_array_equal(picked, x[np.nonzero(x > 0)[0]])
        np.testing.assert_allclose(total, x[x > 0].sum(), rtol=1e-6)
        np.testing.assert_array_equal(relu, np.maximum(x, 0))
        assert sess.stats()["n_builds"] == builds


def test_nonzero_gathers_on_a_device_with_its_own_memory(monkeypatch):
    """testdev: the prefix's frontier comes back to the host, the tail uploads it again."""
    monkeypatch.setenv("TSR_TESTDEV", "1")
    sess = tessera.Session(gather_model(), device="testdev", threads=1)
    x = np.random.default_rng(4).standard_normal((3, 5)).astype(np.float32)
    vals, picked, total, relu = sess.run(None, {"x": x})
    np.testing.assert_array_equal(vals, x[x > 0])
    np.testing.assert_array_equal(picked, x[np.nonzero(x > 0)[0]])
    np.testing.assert_allclose(total, x[x > 0].sum(), rtol=1e-6)
    np.testing.assert_array_equal(relu, np.maximum(x, 0))


def test_stats_and_profile_cover_the_tail():
    """The prefix's steps and those of the tail the last run used, together."""
    sess = tessera.Session(gather_model(), device="ref", threads=1)
    x = np.random.default_rng(8).standard_normal((3, 5)).astype(np.float32)
    report = sess.profile({"x": x}, iters=2)
    for op in ("NonZero", "Relu", "Transpose", "GatherND", "Gather", "ReduceSum"):
        assert op in report
    stats = sess.stats()
    assert stats["n_steps"] == sum(stats["backend_steps"].values()) == 8


def test_reshape_to_a_shape_summed_from_an_input():
    """Reshape(x, [-1, ReduceSum(s)]): the sum becomes a constant of the tail, one per sum."""
    m = model(
        [h.make_node("ReduceSum", ["s"], ["k"], keepdims=1),
         h.make_node("Concat", ["minus1", "k"], ["shape"], axis=0),
         h.make_node("Reshape", ["x", "shape"], ["y"]),
         h.make_node("Mul", ["y", "two"], ["z"])],
        [vi("x", T.FLOAT, [6, 4]), vi("s", T.INT64, [3])], [vi("z", T.FLOAT, None)],
        [h.make_tensor("minus1", T.INT64, [1], [-1]), h.make_tensor("two", T.FLOAT, [], [2.0])])
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    for device in DEVICES:
        sess = tessera.Session(m, device=device, threads=1)
        for s, builds in (([1, 1, 1], 2), ([0, 2, 0], 3), ([2, 1, 0], 3), ([3, 3, 2], 4)):
            (z,) = sess.run(None, {"x": x, "s": np.array(s, np.int64)})
            np.testing.assert_array_equal(z, 2 * x.reshape(-1, sum(s)))
            assert sess.stats()["n_builds"] == builds


@pytest.mark.parametrize("dtype", [np.int64, np.float32], ids=["int64", "float32"])
def test_range_to_a_reduce_max(dtype):
    """Range(0, ReduceMax(x)) -> Cast -> Add(y): the bound is a scalar of the tail."""
    m = model(
        [h.make_node("ReduceMax", ["x"], ["limit"], keepdims=0),
         h.make_node("Range", ["start", "limit", "delta"], ["r"]),
         h.make_node("Cast", ["r"], ["rf"], to=T.FLOAT),
         h.make_node("Add", ["rf", "y"], ["out"])],
        [vi("x", ONNX_TYPE[dtype], ["n"]), vi("y", T.FLOAT, [])], [vi("out", T.FLOAT, ["k"])],
        [h.make_tensor("start", ONNX_TYPE[dtype], [], [0]),
         h.make_tensor("delta", ONNX_TYPE[dtype], [], [1])])
    y = np.array(0.5, np.float32)
    for device in DEVICES:
        sess = tessera.Session(m, device=device, threads=1)
        for x in ([3, 1, 2], [5, 0, 4, 1], [3, 2, 2], [0, -1, 0]):
            x = np.array(x, dtype)
            (out,) = sess.run(None, {"x": x, "y": y})
            np.testing.assert_array_equal(out, np.arange(0, x.max(), dtype=dtype) + y)
        assert sess.stats()["n_builds"] == 5  # two specs (n = 3, 4); tails for 3, 5, 0


def shape_op_model(op):
    """op with its shape (or bound) input computed from the int64 input k."""
    shape = h.make_node("Concat", ["two", "k"], ["shape"], axis=0)
    nodes = {
        "Expand": [shape, h.make_node("Expand", ["x1", "shape"], ["y"])],
        "ConstantOfShape": [shape, h.make_node("ConstantOfShape", ["shape"], ["c"],
                                               value=h.make_tensor("v", T.FLOAT, [1], [1.5])),
                            h.make_node("Add", ["c", "x1"], ["y"])],
        "Tile": [shape, h.make_node("Tile", ["x2", "shape"], ["y"])],
        "Slice": [h.make_node("ReduceMax", ["k"], ["end"], keepdims=1),
                  h.make_node("Slice", ["x2", "zero", "end", "one"], ["y"])],  # axes [1]
    }[op]
    return model(nodes, [vi("x1", T.FLOAT, [1]), vi("x2", T.FLOAT, [2, 3]),
                         vi("k", T.INT64, [1])], [vi("y", T.FLOAT, None)],
                 [h.make_tensor("two", T.INT64, [1], [2]), h.make_tensor("zero", T.INT64, [1], [0]),
                  h.make_tensor("one", T.INT64, [1], [1])])


@pytest.mark.parametrize("op", ["Expand", "ConstantOfShape", "Tile", "Slice"])
def test_shapes_computed_from_inputs(op):
    x1, x2 = np.array([0.25], np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    want = {"Expand": lambda k: np.broadcast_to(x1, (2, k)),
            "ConstantOfShape": lambda k: np.full((2, k), 1.5, np.float32) + x1,
            "Tile": lambda k: np.tile(x2, (2, k)),
            "Slice": lambda k: x2[:, :k]}[op]
    for device in DEVICES:
        sess = tessera.Session(shape_op_model(op), device=device, threads=1)
        for k in (3, 1, 3, 2):
            (y,) = sess.run(None, {"x1": x1, "x2": x2, "k": np.array([k], np.int64)})
            np.testing.assert_array_equal(y, want(k))


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_sum_over_axes_given_at_run_time(keepdims):
    m = model([h.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=keepdims)],
              [vi("x", T.FLOAT, [2, 3, 4]), vi("axes", T.INT64, [1])], [vi("y", T.FLOAT, None)])
    sess = tessera.Session(m, device="cpu", threads=1)
    assert sess.outputs[0].shape == [None] * (3 - (1 - keepdims))
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for axis in (0, 2, -2, 2):
        (y,) = sess.run(None, {"x": x, "axes": np.array([axis], np.int64)})
        np.testing.assert_array_equal(y, x.sum(axis=axis, keepdims=bool(keepdims)))
    assert sess.stats()["n_builds"] == 4  # the spec, a tail per axis


def test_nonzero_of_a_nonzero_gather_splits_twice():
    """vals = x[x > 0]; vals[vals > 1]: the tail of the first NonZero splits again."""
    m = model(
        [h.make_node("Greater", ["x", "zero"], ["m1"]),
         h.make_node("NonZero", ["m1"], ["nz1"]),
         h.make_node("Transpose", ["nz1"], ["i1"], perm=[1, 0]),
         h.make_node("GatherND", ["x", "i1"], ["vals"]),
         h.make_node("Greater", ["vals", "one"], ["m2"]),
         h.make_node("NonZero", ["m2"], ["nz2"]),
         h.make_node("Squeeze", ["nz2", "axes"], ["i2"]),
         h.make_node("Gather", ["vals", "i2"], ["big"], axis=0),
         h.make_node("Shape", ["big"], ["count"])],
        [vi("x", T.FLOAT, [4, 6])], [vi("big", T.FLOAT, None), vi("count", T.INT64, [1])],
        [h.make_tensor("zero", T.FLOAT, [], [0.0]), h.make_tensor("one", T.FLOAT, [], [1.0]),
         h.make_tensor("axes", T.INT64, [1], [0])])
    rng = np.random.default_rng(5)
    for device in DEVICES:
        sess = tessera.Session(m, device=device, threads=1)
        for _ in range(3):
            x = rng.standard_normal((4, 6)).astype(np.float32)
            big, count = sess.run(None, {"x": x})
            v = x[x > 0]
            np.testing.assert_array_equal(big, v[v > 1])
            np.testing.assert_array_equal(count, [len(v[v > 1])])


class Masking(torch.nn.Module):
    def forward(self, x):
        idx = torch.nonzero(x > 0.5)
        return x[x > 0], idx, (x[x < 0] * 2).sum()


def test_torch_nonzero_and_boolean_masking_against_pytorch():
    buf = io.BytesIO()
    torch.onnx.export(Masking(), torch.zeros(3, 7), buf, input_names=["x"], opset_version=13,
                      dynamic_axes={"x": {0: "n"}})
    rng = np.random.default_rng(9)
    for device in DEVICES:
        sess = tessera.Session(buf.getvalue(), device=device, threads=1)
        for n in (3, 5, 3):
            x = rng.standard_normal((n, 7)).astype(np.float32)
            got = sess.run(None, {"x": x})
            with torch.no_grad():
                want = Masking()(torch.from_numpy(x))
            assert [g.shape for g in got] == [tuple(w.shape) for w in want]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w.numpy(), rtol=1e-6)


def test_tessera_run_writes_outputs_sized_by_the_data(tmp_path):
    from test_cli import ok

    model_path = tmp_path / "gather.onnx"
    model_path.write_bytes(gather_model())
    x = np.random.default_rng(6).standard_normal((4, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ok("run", model_path, "--input", tmp_path / "x.npy", "--output-dir", tmp_path / "out")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "vals.npy"), x[x > 0])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "picked.npy"),
                                  x[np.nonzero(x > 0)[0]])


def test_cache_limits_evict_tails_with_their_specs():
    plan = tsr.Plan(tsr.Graph.load_bytes(gather_model()))
    plan.set_cache_limits(2, 1 << 30)
    rng = np.random.default_rng(11)
    for n in (2, 3, 2, 4, 3):
        x = rng.standard_normal((n, 5)).astype(np.float32)
        vals, picked, total, relu = plan.run([x])
        np.testing.assert_array_equal(vals, x[x > 0])
        np.testing.assert_array_equal(picked, x[np.nonzero(x > 0)[0]])
        assert plan.stats().n_cached_specs <= 2  # the current spec and the tail it ran


def test_a_buffer_for_an_output_the_plan_allocates_is_refused():
    plan = tsr.Plan(tsr.Graph.load_bytes(gather_model()))
    x = np.ones((2, 5), np.float32)
    ins = tessera._capi.tensor_array([tessera._capi.tensor_of(x)])
    descs = plan.reshape(ins)
    assert descs[0][1] == (-1,) and descs[1][1] == (-1, 5)
    arrays = [np.empty([max(d, 0) for d in shape], dtype=dt) for dt, shape in descs]
    outs = tessera._capi.tensor_array([tessera._capi.tensor_of(a) for a in arrays])
    with pytest.raises(tessera.InvalidArgumentError,
                       match="output 'vals': its shape is known only after the run.*data NULL"):
        plan.run(ins, outs)
    outs = plan.output_array(descs, plan.empty_outputs(descs))
    plan.run(ins, outs)
    assert outs[0].shape() == (10,) and outs[1].shape() == (10, 5) and outs[1].data
    got = np.ctypeslib.as_array(C.cast(outs[1].data, C.POINTER(C.c_float)), (10, 5))
    np.testing.assert_array_equal(got, np.ones((10, 5)))


def test_errors_found_at_run_time_name_the_node():
    m = model(
        [h.make_node("ReduceMin", ["d"], ["delta"], keepdims=0),
         h.make_node("Range", ["start", "limit", "delta"], ["r"], name="range")],
        [vi("d", T.INT64, [2])], [vi("r", T.INT64, None)],
        [h.make_tensor("start", T.INT64, [], [0]), h.make_tensor("limit", T.INT64, [], [4])])
    sess = tessera.Session(m, device="cpu", threads=1)
    (r,) = sess.run(None, {"d": np.array([2, 3], np.int64)})
    np.testing.assert_array_equal(r, [0, 2])
    with pytest.raises(tessera.Error, match="range.*Range.*delta"):
        sess.run(None, {"d": np.array([0, 3], np.int64)})
    m = model(
        [h.make_node("ReduceSum", ["s"], ["k"], keepdims=1),
         h.make_node("Reshape", ["x", "k"], ["y"], name="reshape")],
        [vi("x", T.FLOAT, [6]), vi("s", T.INT64, [2])], [vi("y", T.FLOAT, None)])
    sess = tessera.Session(m, device="cpu", threads=1)
    (y,) = sess.run(None, {"x": np.arange(6, dtype=np.float32), "s": np.array([4, 2], np.int64)})
    np.testing.assert_array_equal(y, np.arange(6))
    with pytest.raises(tessera.ShapeError, match="reshape.*Reshape"):
        sess.run(None, {"x": np.arange(6, dtype=np.float32), "s": np.array([4, 1], np.int64)})

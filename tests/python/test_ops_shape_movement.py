"""Shape, data-movement and constant ops (shape.c, movement.c, constant.c)
against numpy: every dtype, odd random shapes, every mode and attribute,
symbolic dims carried through shape inference, and the errors they raise."""

import numpy as np
import pytest

import tsr

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
FLOATS = [np.float32, np.float64]
MAIN_DTYPES = [np.float32, np.float64, np.int64, np.bool_]
ALL_DTYPES = [np.float32, np.float64, np.int64, np.int32, np.bool_, np.uint8, np.int8]


def rand(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape,
                            endpoint=True).astype(dtype)
    return rng.uniform(-3, 3, size=shape).astype(dtype)


def i64(*values):
    return np.array(values, dtype=np.int64)


def run1(op, inputs, attrs=None, **kw):
    return tsr.run_op(op, inputs, attrs, **kw)[0]


def same(got, ref):
    ref = np.asarray(ref)
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_array_equal(got, ref)


def symbolic_graph(op, x_shape, other_inputs, attrs=None, n_outputs=1, dtype=np.float32):
    """A graph whose input 'x' has symbolic dims (strings in x_shape); the
    other inputs are constants. Returns the graph and the outputs' info."""
    g = tsr.Graph()
    g.add_input("x", dtype, x_shape)
    names = ["x"]
    for i, v in enumerate(other_inputs):
        if v is None:
            names.append("")
            continue
        g.add_constant(f"c{i}", np.asarray(v))
        names.append(f"c{i}")
    outs = [f"y{o}" for o in range(n_outputs)]
    g.add_node(op, names, outs, attrs)
    for o in outs:
        g.add_output(o)
    return g, [info[2] for info in g.outputs()]


# ---------------------------------------------------------------- Shape


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 7), (1, 0, 4, 3)], ids=str)
def test_shape(shape):
    x = np.zeros(shape, np.float32)
    same(run1("Shape", [x]), np.array(shape, dtype=np.int64))
    same(run1("Shape", [x], const_inputs=(0,)), np.array(shape, dtype=np.int64))


@pytest.mark.parametrize("start,end", [(0, None), (1, None), (-2, None), (1, 3), (0, -1),
                                       (-10, 10), (3, 1), (4, 5)])
def test_shape_start_end(start, end):
    shape = (2, 3, 5, 7)
    attrs = {"start": start} if end is None else {"start": start, "end": end}
    ref = np.array(shape[start:] if end is None else shape[start:end], dtype=np.int64)
    same(run1("Shape", [np.zeros(shape, np.int64)], attrs, opset=15), ref)


def test_shape_of_symbolic_input_runs_at_plan_time():
    g, out = symbolic_graph("Shape", ["batch", 3, "n"], [])
    assert out == [[3]]
    for b, n in [(2, 5), (7, 1)]:
        same(g.run([np.zeros((b, 3, n), np.float32)])[0], i64(b, 3, n))


# -------------------------------------------------------------- Reshape

RESHAPES = [
    ((2, 3, 4), (4, 6)),
    ((2, 3, 4), (-1,)),
    ((2, 3, 4), (0, -1)),
    ((2, 3, 4), (0, 0, 2, 2)),
    ((2, 3, 4), (-1, 3, 1, 2)),
    ((7, 5), (5, 1, 7)),
    ((1,), ()),
    ((), (1, 1, 1)),
    ((0, 3), (0, 1, 3)),
]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shapes", RESHAPES, ids=str)
def test_reshape(dtype, shapes):
    x_shape, new_shape = shapes
    rng = np.random.default_rng(3)
    x = rand(rng, x_shape, dtype)
    # ONNX's 0 copies the input dim; numpy's 0 is a size.
    np_shape = [x_shape[i] if s == 0 and i < len(x_shape) else s for i, s in enumerate(new_shape)]
    got = run1("Reshape", [x, np.array(new_shape, dtype=np.int64)], const_inputs=(1,))
    same(got, x.reshape(np_shape))


def test_reshape_allowzero():
    x = np.zeros((0, 4), np.float32)
    same(run1("Reshape", [x, i64(4, 0)], {"allowzero": 1}, const_inputs=(1,), opset=14),
         x.reshape(4, 0))
    with pytest.raises(tsr.TesseraError, match="0 and a -1"):
        run1("Reshape", [x, i64(0, -1)], {"allowzero": 1}, const_inputs=(1,), opset=14)


def test_reshape_errors():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(tsr.TesseraError, match=r"cannot reshape .*\[2, 3, 4\].*24 elements.*\[5, 5\]"):
        run1("Reshape", [x, i64(5, 5)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="cannot reshape"):
        run1("Reshape", [x, i64(5, -1)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match=r"\[0, 3\], which resolves to \[2, 3\] \(6 elements\)"):
        run1("Reshape", [x, i64(0, 3)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="ambiguous"):
        run1("Reshape", [np.zeros((0, 3)), i64(0, -1)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="more than one -1"):
        run1("Reshape", [x, i64(-1, -1)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="-3"):
        run1("Reshape", [x, i64(-3, 8)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="no such dim"):
        run1("Reshape", [x, i64(1, 1, 1, 0)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="int64"):
        run1("Reshape", [x, np.array([24.0])], const_inputs=(1,))


def test_reshape_symbolic():
    _, out = symbolic_graph("Reshape", ["batch", 512, 1, 1], [i64(0, -1)])
    assert out == [["batch", 512]]
    _, out = symbolic_graph("Reshape", ["batch", 8, 6], [i64(-1, 6)])
    assert out == [[-1, 6]]
    _, out = symbolic_graph("Reshape", ["batch", 8, 6], [i64(0, 4, -1)])
    assert out == [["batch", 4, 12]]
    _, out = symbolic_graph("Reshape", [4, "n", 3], [i64(-1, 12)])
    assert out == [["n", 12]]
    with pytest.raises(tsr.TesseraError, match="cannot reshape"):
        symbolic_graph("Reshape", ["batch", 6], [i64(0, 4)])


def test_reshape_non_constant_shape_gives_unknown_dims():
    g = tsr.Graph()
    g.add_input("x", np.float32, [2, 3, 4])
    g.add_input("s", np.int64, [3])
    g.add_node("Reshape", ["x", "s"], ["y"])
    g.add_output("y")
    assert g.outputs()[0][2] == [-1, -1, -1]


def test_view_of_batch_computed_from_shape():
    """x.view(x.size(0), -1) as PyTorch exports it: the shape is computed
    from Shape at plan time, when the batch is known."""
    g = tsr.Graph()
    g.add_input("x", np.float32, ["batch", 4, 3, 5])
    g.add_constant("zero", np.int64(0))
    g.add_constant("axes", i64(0))
    g.add_constant("minus1", i64(-1))
    g.add_node("Shape", ["x"], ["s"])
    g.add_node("Gather", ["s", "zero"], ["b"], {"axis": 0})
    g.add_node("Unsqueeze", ["b", "axes"], ["b1"])
    g.add_node("Concat", ["b1", "minus1"], ["shape"], {"axis": 0})
    g.add_node("Reshape", ["x", "shape"], ["y"])
    g.add_output("y")
    assert g.outputs()[0][2] == [-1, -1]
    rng = np.random.default_rng(4)
    plan = tsr.Plan(g)
    for b in (1, 3, 2):
        x = rand(rng, (b, 4, 3, 5), np.float32)
        same(plan.run([x])[0], x.reshape(b, -1))


# -------------------------------------------------------------- Flatten


@pytest.mark.parametrize("dtype", MAIN_DTYPES)
@pytest.mark.parametrize("axis", [-4, -3, -1, 0, 1, 2, 4])
def test_flatten(dtype, axis):
    rng = np.random.default_rng(5)
    x = rand(rng, (2, 3, 5, 7), dtype)
    a = axis + 4 if axis < 0 else axis
    same(run1("Flatten", [x], {"axis": axis}), x.reshape(int(np.prod(x.shape[:a])), -1))


def test_flatten_symbolic_and_errors():
    assert symbolic_graph("Flatten", ["batch", 512, 1, 1], [], {"axis": 1})[1] == [["batch", 512]]
    assert symbolic_graph("Flatten", ["batch", 4, "n"], [], {"axis": 1})[1] == [["batch", -1]]
    assert symbolic_graph("Flatten", [2, "n", 3], [], {"axis": 0})[1] == [[1, -1]]
    with pytest.raises(tsr.TesseraError, match="axis 5 is out of range"):
        run1("Flatten", [np.zeros((2, 3, 4, 5))], {"axis": 5})


# ---------------------------------------------------- Squeeze, Unsqueeze


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("dtype", MAIN_DTYPES)
@pytest.mark.parametrize("axes", [None, (0,), (-1,), (0, 2), (2, -5), (4, 0, 2)], ids=str)
def test_squeeze(opset, dtype, axes):
    rng = np.random.default_rng(6)
    x = rand(rng, (1, 3, 1, 5, 1), dtype)
    ref = np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))
    if axes is None:
        got = run1("Squeeze", [x], opset=opset)
    elif opset < 13:
        got = run1("Squeeze", [x], {"axes": list(axes)}, opset=opset)
    else:
        got = run1("Squeeze", [x, np.array(axes, np.int64)], const_inputs=(1,), opset=opset)
    same(got, ref)


def test_squeeze_errors():
    x = np.zeros((1, 3, 1), np.float32)
    with pytest.raises(tsr.TesseraError, match="cannot squeeze axis 1 of size 3"):
        run1("Squeeze", [x, i64(1)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="out of range"):
        run1("Squeeze", [x, i64(3)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="input, not an attribute"):
        run1("Squeeze", [x], {"axes": [0]}, opset=13)
    with pytest.raises(tsr.TesseraError, match="attribute, not an input"):
        run1("Squeeze", [x, i64(0)], const_inputs=(1,), opset=11)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("dtype", MAIN_DTYPES)
@pytest.mark.parametrize("axes", [(0,), (-1,), (1, 3), (-1, 0), (4, 0, 2)], ids=str)
def test_unsqueeze(opset, dtype, axes):
    rng = np.random.default_rng(7)
    x = rand(rng, (3, 5), dtype)
    ref = np.expand_dims(x, axis=tuple(axes))
    if opset < 13:
        got = run1("Unsqueeze", [x], {"axes": list(axes)}, opset=opset)
    else:
        got = run1("Unsqueeze", [x, np.array(axes, np.int64)], const_inputs=(1,), opset=opset)
    same(got, ref)


def test_unsqueeze_scalar_symbolic_and_errors():
    same(run1("Unsqueeze", [np.int64(7), i64(0)], const_inputs=(1,)), i64(7))
    assert symbolic_graph("Unsqueeze", ["batch", 3], [i64(1, -1)])[1] == [["batch", 1, 3, 1]]
    with pytest.raises(tsr.TesseraError, match="given twice"):
        run1("Unsqueeze", [np.zeros((2, 3)), i64(1, 1)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="out of range"):
        run1("Unsqueeze", [np.zeros((2, 3)), i64(3)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="needs axes"):
        run1("Unsqueeze", [np.zeros((2, 3))])


# --------------------------------------------------------------- Expand

EXPANDS = [((3, 1), (2, 3, 6)), ((3, 4), (1, 1)), ((1,), (5, 4)), ((), (2, 3)),
           ((2, 1, 3), (4, 2, 5, 3)), ((5, 1), (5, 0)), ((1, 7, 1), (3, 1, 2))]


@pytest.mark.parametrize("dtype", MAIN_DTYPES)
@pytest.mark.parametrize("shapes", EXPANDS, ids=str)
def test_expand(dtype, shapes):
    rng = np.random.default_rng(8)
    x = rand(rng, shapes[0], dtype)
    ref = x * np.ones(shapes[1], dtype=dtype) if dtype != np.bool_ else \
        np.logical_and(x, np.ones(shapes[1], dtype=bool))
    same(run1("Expand", [x, np.array(shapes[1], np.int64)], const_inputs=(1,)), ref)


def test_expand_errors_and_symbolic():
    with pytest.raises(tsr.TesseraError, match="broadcast"):
        run1("Expand", [np.zeros((3, 2)), i64(4, 4)], const_inputs=(1,))
    assert symbolic_graph("Expand", ["batch", 1, 4], [i64(3, 1)])[1] == [["batch", 3, 4]]
    g = tsr.Graph()
    g.add_input("x", np.float32, [3, 1])
    g.add_input("s", np.int64, [3])
    g.add_node("Expand", ["x", "s"], ["y"])
    g.add_output("y")
    assert g.outputs()[0][2] == [-1, 3, -1]


def test_expand_threaded_large():
    rng = np.random.default_rng(9)
    x = rand(rng, (1, 301, 1), np.float32)
    got = run1("Expand", [x, i64(5, 301, 97)], const_inputs=(1,), threads=2)
    same(got, np.broadcast_to(x, (5, 301, 97)))


# ----------------------------------------------------- Identity, Dropout


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_identity(dtype):
    x = rand(np.random.default_rng(10), (3, 0, 2) if dtype == np.int8 else (3, 5, 2), dtype)
    same(run1("Identity", [x]), x)


@pytest.mark.parametrize("dtype", FLOATS)
def test_dropout_inference(dtype):
    x = rand(np.random.default_rng(11), (4, 7), dtype)
    same(run1("Dropout", [x], {"ratio": 0.3}, opset=11), x)
    y, mask = tsr.run_op("Dropout", [x, np.array(0.4, dtype)], n_outputs=2, opset=13)
    same(y, x)
    same(mask, np.ones(x.shape, bool))
    y, mask = tsr.run_op("Dropout", [x, np.array(0.5, dtype), np.array(False)], {"seed": 3},
                         n_outputs=2, const_inputs=(1, 2))
    same(y, x)
    same(mask, np.ones(x.shape, bool))
    # swin_t exports Dropout(p=0) in training mode: a plain copy.
    y, mask = tsr.run_op("Dropout", [x, np.array(0.0, dtype), np.array(True)], n_outputs=2,
                         const_inputs=(1, 2))
    same(y, x)
    same(mask, np.ones(x.shape, bool))


def test_dropout_training_is_refused():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="training mode.*not supported"):
        run1("Dropout", [x, np.array(0.5, np.float32), np.array(True)], const_inputs=(1, 2))
    with pytest.raises(tsr.TesseraError, match="training mode.*not supported"):
        run1("Dropout", [x, None, np.array(True)], const_inputs=(2,))
    # Not constant: the kernel refuses it when it sees the values.
    with pytest.raises(tsr.TesseraError, match="training mode.*not supported"):
        run1("Dropout", [x, np.array(0.5, np.float32), np.array(True)])
    same(run1("Dropout", [x, np.array(0.5, np.float32), np.array(False)]), x)
    with pytest.raises(tsr.TesseraError, match="int64"):
        run1("Dropout", [x.astype(np.int64)])


# ------------------------------------------------------------ Transpose


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_transpose_random_perms(dtype):
    rng = np.random.default_rng(12)
    for rank in range(0, 6):
        shape = tuple(int(d) for d in rng.integers(1, 6, size=rank))
        x = rand(rng, shape, dtype)
        perm = [int(p) for p in rng.permutation(rank)]
        same(run1("Transpose", [x], {"perm": perm}), np.transpose(x, perm))
        same(run1("Transpose", [x]), np.transpose(x))


def test_transpose_large_threaded_and_symbolic():
    rng = np.random.default_rng(13)
    x = rand(rng, (3, 67, 5, 131), np.float32)
    for threads in (1, 2):
        same(run1("Transpose", [x], {"perm": [0, 3, 1, 2]}, threads=threads),
             x.transpose(0, 3, 1, 2))
    assert symbolic_graph("Transpose", ["b", 3, "n"], [], {"perm": [2, 0, 1]})[1] == \
        [["n", "b", 3]]


def test_transpose_bad_perm():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(tsr.TesseraError, match=r"perm \[0, 0, 1\] is not a permutation"):
        run1("Transpose", [x], {"perm": [0, 0, 1]})
    with pytest.raises(tsr.TesseraError, match="2 entries for an input of rank 3"):
        run1("Transpose", [x], {"perm": [1, 0]})
    with pytest.raises(tsr.TesseraError, match="not a permutation"):
        run1("Transpose", [x], {"perm": [0, 1, 3]})


# --------------------------------------------------------------- Concat


@pytest.mark.parametrize("dtype", MAIN_DTYPES + [np.int32])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_concat(dtype, axis):
    rng = np.random.default_rng(14)
    parts = []
    for size in (3, 1, 0, 5):
        shape = [2, 3, 4]
        shape[axis] = size
        parts.append(rand(rng, tuple(shape), dtype))
    same(run1("Concat", parts, {"axis": axis}), np.concatenate(parts, axis=axis))
    same(run1("Concat", parts[:1], {"axis": axis}), parts[0])
    same(run1("Concat", parts, {"axis": axis}, const_inputs=(0, 1, 2, 3)),
         np.concatenate(parts, axis=axis))


def test_concat_errors():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="rank 3"):
        run1("Concat", [a, np.zeros((2, 3, 1), np.float32)], {"axis": 0})
    with pytest.raises(tsr.TesseraError, match="differs from input 0's .* on axis 1"):
        run1("Concat", [a, np.zeros((2, 4), np.float32)], {"axis": 0})
    with pytest.raises(tsr.TesseraError, match="float64"):
        run1("Concat", [a, np.zeros((2, 3))], {"axis": 0})
    with pytest.raises(tsr.TesseraError, match="out of range"):
        run1("Concat", [a, a], {"axis": 2})


def test_concat_symbolic():
    g = tsr.Graph()
    g.add_input("a", np.float32, ["batch", 3, 4])
    g.add_input("b", np.float32, ["batch", 5, 4])
    g.add_input("c", np.float32, [2, "n"])
    g.add_node("Concat", ["a", "b"], ["y"], {"axis": 1})
    g.add_node("Concat", ["a", "a"], ["z"], {"axis": 0})
    g.add_node("Concat", ["c", "c"], ["w"], {"axis": 0})
    for o in "yzw":
        g.add_output(o)
    assert [info[2] for info in g.outputs()] == [["batch", 8, 4], [-1, 3, 4], [4, "n"]]


# ---------------------------------------------------------------- Split


@pytest.mark.parametrize("dtype", MAIN_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("opset", [11, 13])
def test_split_sizes(dtype, axis, opset):
    rng = np.random.default_rng(15)
    x = rand(rng, (6, 9, 7), dtype)
    n = x.shape[axis]
    sizes = [1, 0, n - 3, 2]
    refs = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    if opset < 13:
        outs = tsr.run_op("Split", [x], {"axis": axis, "split": sizes}, n_outputs=4, opset=opset)
    else:
        outs = tsr.run_op("Split", [x, np.array(sizes, np.int64)], {"axis": axis}, n_outputs=4,
                          const_inputs=(1,), opset=opset)
    for got, ref in zip(outs, refs):
        same(got, ref)


@pytest.mark.parametrize("n", [1, 3])
def test_split_equal(n):
    x = rand(np.random.default_rng(16), (6, 3, 9), np.float64)
    outs = tsr.run_op("Split", [x], {"axis": 2}, n_outputs=n)
    for got, ref in zip(outs, np.split(x, n, axis=2)):
        same(got, ref)


def test_split_errors():
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(tsr.TesseraError, match="size 5 does not split into 2 equal parts"):
        tsr.run_op("Split", [x], {"axis": 0}, n_outputs=2)
    with pytest.raises(tsr.TesseraError, match="add up to 4 but axis 0 has size 5"):
        tsr.run_op("Split", [x, i64(1, 3)], n_outputs=2, const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="3 entries for 2 outputs"):
        tsr.run_op("Split", [x], {"split": [1, 2, 2]}, n_outputs=2, opset=11)


def test_split_symbolic():
    outs = symbolic_graph("Split", ["batch", 6], [i64(2, 4)], {"axis": 1}, n_outputs=2)[1]
    assert outs == [["batch", 2], ["batch", 4]]


# ---------------------------------------------------------------- Slice


def onnx_slice(x, starts, ends, axes, steps):
    """Slice's clamping as the ONNX spec words it, then a numpy slice. It
    differs from plain numpy slicing in one case: with a negative step, a
    start before the first element clamps to 0 (ONNX, onnxruntime) instead
    of giving an empty result (numpy)."""
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        d = x.shape[a]
        s, e = (s + d if s < 0 else s), (e + d if e < 0 else e)
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        index[a] = slice(s, None if e < 0 else e, st)
    return x[tuple(index)]


@pytest.mark.parametrize("dtype", MAIN_DTYPES)
def test_slice_random(dtype):
    rng = np.random.default_rng(17)
    for trial in range(40):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(d) for d in rng.integers(0, 8, size=rank))
        x = rand(rng, shape, dtype)
        n = int(rng.integers(1, rank + 1))
        axes = [int(a) for a in rng.permutation(rank)[:n]]
        starts, ends, steps = [], [], []
        for a in axes:
            d = shape[a]
            starts.append(int(rng.integers(-d - 3, d + 4)))
            ends.append(int(rng.integers(-d - 3, d + 4)))
            steps.append(int(rng.choice([1, 1, 2, 3, -1, -2, -5])))
        neg_axes = [a - rank if rng.random() < 0.5 else a for a in axes]
        ref = onnx_slice(x, starts, ends, axes, steps)
        got = run1("Slice", [x, np.array(starts), np.array(ends), np.array(neg_axes),
                             np.array(steps)], const_inputs=(1, 2, 3, 4))
        same(got, ref)


@pytest.mark.parametrize("case", [
    ((0,), (INT64_MAX,), (1,), (1,)),
    ((-1,), (-INT64_MAX,), (1,), (-1,)),
    ((-1,), (INT64_MIN,), (0,), (-1,)),
    ((INT64_MAX,), (INT64_MIN,), (2,), (-2,)),
    ((2, 1), (INT64_MAX, -1), (0, 2), (1, 1)),
    ((-INT64_MAX,), (3,), (-1,), (INT64_MAX,)),
    ((5,), (0,), (1,), (INT64_MIN,)),
], ids=str)
def test_slice_sentinels(case):
    starts, ends, axes, steps = case
    x = rand(np.random.default_rng(18), (4, 6, 5), np.int64)
    ref = onnx_slice(x, starts, ends, [a % 3 for a in axes], steps)
    if case[0] == (-INT64_MAX,) or case[0] == (INT64_MAX,):
        # Sentinels spell "from the end" and "from the start" here.
        assert ref.size > 0
    got = run1("Slice", [x, i64(*starts), i64(*ends), i64(*axes), i64(*steps)],
               const_inputs=(1, 2, 3, 4))
    same(got, ref)


def test_slice_defaults_int32_and_threads():
    x = rand(np.random.default_rng(19), (5, 60, 300), np.float32)
    same(run1("Slice", [x, i64(1, -50), i64(4, 1000)], const_inputs=(1, 2)), x[1:4, -50:])
    same(run1("Slice", [x, np.array([2], np.int32), np.array([-1], np.int32), None,
                        np.array([3], np.int32)], const_inputs=(1, 2, 4)), x[2:-1:3])
    same(run1("Slice", [x, i64(299), i64(-INT64_MAX), i64(2), i64(-1)], const_inputs=(1, 2, 3, 4),
              threads=2), x[:, :, ::-1])


def test_slice_symbolic_and_non_constant():
    out = symbolic_graph("Slice", ["batch", 10, "n"], [i64(0, 2), i64(INT64_MAX, 7), i64(0, 1)])[1]
    assert out == [["batch", 5, "n"]]
    out = symbolic_graph("Slice", ["batch", 10], [i64(-1, 0), i64(-INT64_MAX, 3), i64(0, 1),
                                                   i64(-1, 1)])[1]
    assert out == [["batch", 3]]
    out = symbolic_graph("Slice", ["batch", 10], [i64(1), i64(INT64_MAX), i64(0)])[1]
    assert out == [[-1, 10]]
    g = tsr.Graph()
    g.add_input("x", np.float32, [4, "n", 6])
    g.add_input("s", np.int64, [1])
    g.add_constant("e", i64(3))
    g.add_constant("a", i64(2))
    g.add_node("Slice", ["x", "s", "e", "a"], ["y"])
    g.add_output("y")
    assert g.outputs()[0][2] == [4, "n", -1]


def test_slice_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(tsr.TesseraError, match="step of axis 1 is 0"):
        run1("Slice", [x, i64(0), i64(2), i64(1), i64(0)], const_inputs=(1, 2, 3, 4))
    with pytest.raises(tsr.TesseraError, match="sliced twice"):
        run1("Slice", [x, i64(0, 0), i64(2, 2), i64(1, -1)], const_inputs=(1, 2, 3))
    with pytest.raises(tsr.TesseraError, match="axis 2 is out of range"):
        run1("Slice", [x, i64(0), i64(2), i64(2)], const_inputs=(1, 2, 3))
    with pytest.raises(tsr.TesseraError, match="starts has 2 entries but ends has 1"):
        run1("Slice", [x, i64(0, 0), i64(2)], const_inputs=(1, 2))


# --------------------------------------------------------------- Gather


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather(dtype, axis):
    rng = np.random.default_rng(20)
    x = rand(rng, (4, 5, 3), dtype)
    d = x.shape[axis]
    for ind_shape in [(), (1,), (7,), (2, 3)]:
        ind = rng.integers(-d, d, size=ind_shape).astype(np.int64)
        ref = np.take(x, ind, axis=axis)
        same(run1("Gather", [x, ind], {"axis": axis}), ref)
        same(run1("Gather", [x, ind.astype(np.int32)], {"axis": axis}, const_inputs=(1,)), ref)
        same(run1("Gather", [x, ind], {"axis": axis}, const_inputs=(0, 1)), ref)


def test_gather_out_of_range():
    x = np.zeros((4, 5), np.float32)
    # Indices known at run time only: the kernel reports it.
    with pytest.raises(tsr.TesseraError, match="index 5 .*out of range for axis 1 of size 5"):
        run1("Gather", [x, i64(0, 5)], {"axis": 1})
    with pytest.raises(tsr.TesseraError, match="index -5 .*out of range for axis 0 of size 4"):
        run1("Gather", [x, i64(-5)], {"axis": 0})
    with pytest.raises(tsr.TesseraError, match="out of range"):
        run1("Gather", [x, i64(9)], {"axis": 0}, const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="axis 2 is out of range"):
        run1("Gather", [x, i64(0)], {"axis": 2})
    with pytest.raises(tsr.TesseraError, match="float32"):
        run1("Gather", [x, np.array([0.0], np.float32)])


def test_gather_symbolic():
    assert symbolic_graph("Gather", ["batch", 7, 3], [i64(0, 2)], {"axis": 1})[1] == \
        [["batch", 2, 3]]
    assert symbolic_graph("Gather", ["batch", 7], [np.int64(1)], {"axis": 1})[1] == [["batch"]]


# ------------------------------------------------------------------ Pad


@pytest.mark.parametrize("dtype", MAIN_DTYPES + [np.uint8])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(dtype, mode):
    rng = np.random.default_rng(21)
    x = rand(rng, (3, 4, 5), dtype)
    for pads in [(0, 1, 2, 1, 0, 3), (1, 3, 4, 2, 2, 0), (0, 0, 0, 0, 0, 0)]:
        width = [(pads[i], pads[i + 3]) for i in range(3)]
        if mode == "constant":
            value = rand(rng, (), dtype)
            ref = np.pad(x, width, mode="constant", constant_values=value)
            got = run1("Pad", [x, np.array(pads), np.array(value)], {"mode": mode},
                       const_inputs=(1,))
            same(got, ref)
            same(run1("Pad", [x, np.array(pads)], const_inputs=(1,)), np.pad(x, width))
        else:
            got = run1("Pad", [x, np.array(pads)], {"mode": mode}, const_inputs=(1,))
            same(got, np.pad(x, width, mode=mode))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_negative_crops(mode):
    x = rand(np.random.default_rng(22), (4, 6), np.float32)
    pads = (-1, 2, 1, -3)
    got = run1("Pad", [x, np.array(pads)], {"mode": mode}, const_inputs=(1,))
    np_mode = "constant" if mode == "constant" else mode
    same(got, np.pad(x, [(0, 1), (2, 0)], mode=np_mode)[1:, :-3])


def test_pad_threaded_and_symbolic():
    x = rand(np.random.default_rng(23), (2, 3, 97, 211), np.float32)
    pads = (0, 0, 2, 3, 0, 0, 1, 4)
    width = [(pads[i], pads[i + 4]) for i in range(4)]
    for mode in ("constant", "reflect"):
        same(run1("Pad", [x, np.array(pads)], {"mode": mode}, const_inputs=(1,), threads=2),
             np.pad(x, width, mode=mode))
    assert symbolic_graph("Pad", ["batch", 3, 8], [i64(0, 0, 1, 0, 0, 2)])[1] == \
        [["batch", 3, 11]]


def test_pad_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="'wrap' is not supported"):
        run1("Pad", [x, i64(0, 0, 0, 0)], {"mode": "wrap"}, const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="smaller than axis 1 of size 3"):
        run1("Pad", [x, i64(0, 3, 0, 0)], {"mode": "reflect"}, const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="3 entries for an input of rank 2"):
        run1("Pad", [x, i64(0, 1, 0)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="negative"):
        run1("Pad", [x, i64(0, -2, 0, -2)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="float64"):
        run1("Pad", [x, i64(0, 1, 0, 0), np.float64(1)], const_inputs=(1,))


# ----------------------------------------------------------------- Tile


@pytest.mark.parametrize("dtype", MAIN_DTYPES)
def test_tile(dtype):
    rng = np.random.default_rng(24)
    for shape, reps in [((3,), (4,)), ((2, 3), (2, 1)), ((2, 1, 3), (1, 5, 2)), ((), ()),
                        ((2, 3), (0, 2)), ((4, 5, 6), (3, 2, 2))]:
        x = rand(rng, shape, dtype)
        same(run1("Tile", [x, np.array(reps, np.int64)], const_inputs=(1,)), np.tile(x, reps))


def test_tile_threaded_symbolic_errors():
    x = rand(np.random.default_rng(25), (5, 61, 97), np.float32)
    same(run1("Tile", [x, i64(2, 3, 2)], const_inputs=(1,), threads=2), np.tile(x, (2, 3, 2)))
    assert symbolic_graph("Tile", ["batch", 3], [i64(1, 4)])[1] == [["batch", 12]]
    with pytest.raises(tsr.TesseraError, match="1 entries for an input of rank 2"):
        run1("Tile", [np.zeros((2, 3)), i64(2)], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="negative"):
        run1("Tile", [np.zeros((2, 3)), i64(2, -1)], const_inputs=(1,))


# ------------------------------------------------------------ ScatterND


def numpy_scatter_nd(data, indices, updates):
    out = data.copy()
    for idx in np.ndindex(indices.shape[:-1]):
        out[tuple(indices[idx])] = updates[idx]
    return out


@pytest.mark.parametrize("dtype", MAIN_DTYPES)
def test_scatter_nd(dtype):
    rng = np.random.default_rng(26)
    data = rand(rng, (4, 5, 3), dtype)
    for k, ind_lead in [(1, (2,)), (2, (3,)), (3, (2, 2)), (1, (1, 1)), (2, ())]:
        # Distinct index tuples, so that the order of writes cannot matter.
        flat = rng.permutation(int(np.prod(data.shape[:k])))[:int(np.prod(ind_lead))]
        idx = np.stack(np.unravel_index(flat, data.shape[:k]), axis=-1).reshape(ind_lead + (k,))
        idx = np.where(rng.random(idx.shape) < 0.3, idx - np.array(data.shape[:k]), idx)
        updates = rand(rng, ind_lead + data.shape[k:], dtype)
        ref = numpy_scatter_nd(data, idx % np.array(data.shape[:k]), updates)
        same(run1("ScatterND", [data, idx.astype(np.int64), updates]), ref)
        same(run1("ScatterND", [data, idx.astype(np.int64), updates], const_inputs=(1,)), ref)


def test_scatter_nd_errors():
    data = np.zeros((4, 5), np.float32)
    with pytest.raises(tsr.TesseraError, match="reduction 'sum' is not one of"):
        run1("ScatterND", [data, i64(1).reshape(1, 1), np.zeros((1, 5), np.float32)],
             {"reduction": "sum"}, opset=16)
    with pytest.raises(tsr.TesseraError, match="index 4 .*out of range for axis 0 of size 4"):
        run1("ScatterND", [data, i64(4).reshape(1, 1), np.zeros((1, 5), np.float32)])
    with pytest.raises(tsr.TesseraError, match="do not fit"):
        run1("ScatterND", [data, i64(1).reshape(1, 1), np.zeros((1, 4), np.float32)])


# ------------------------------------------------- Constant, ConstantOfShape


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_constant_tensor(dtype):
    value = rand(np.random.default_rng(27), (2, 3), dtype)
    same(run1("Constant", [], {"value": value}), value)


def test_constant_scalar_forms():
    same(run1("Constant", [], {"value_float": 2.5}), np.array(2.5, np.float32))
    same(run1("Constant", [], {"value_floats": [1.5, -2.0]}), np.array([1.5, -2.0], np.float32))
    same(run1("Constant", [], {"value_int": -7}), np.array(-7, np.int64))
    same(run1("Constant", [], {"value_ints": [3, INT64_MAX]}), i64(3, INT64_MAX))
    same(run1("Constant", [], {"value": np.zeros((0, 2))}), np.zeros((0, 2)))


def test_constant_errors():
    with pytest.raises(tsr.TesseraError, match="string constants are not supported"):
        run1("Constant", [], {"value_string": "hi"})
    with pytest.raises(tsr.TesseraError, match="exactly one .* it has 2"):
        run1("Constant", [], {"value_int": 1, "value_float": 1.0})
    with pytest.raises(tsr.TesseraError, match="it has 0"):
        run1("Constant", [])
    with pytest.raises(tsr.TesseraError, match="sparse_value"):
        run1("Constant", [], {"sparse_value": np.zeros(2)})


@pytest.mark.parametrize("value", [None, np.array([3.5], np.float64), np.array([-4], np.int64),
                                   np.array([True]), np.array([2], np.int32)], ids=str)
def test_constant_of_shape(value):
    attrs = {} if value is None else {"value": value}
    for shape in [(2, 3), (0, 4), ()]:
        got = run1("ConstantOfShape", [np.array(shape, np.int64)], attrs, const_inputs=(0,))
        ref = np.zeros(shape, np.float32) if value is None else np.full(shape, value[0])
        same(got, ref)


def test_constant_of_shape_from_symbolic_shape():
    g = tsr.Graph()
    g.add_input("x", np.float32, ["batch", 3])
    g.add_node("Shape", ["x"], ["s"])
    g.add_node("ConstantOfShape", ["s"], ["y"], {"value": np.array([7], np.int64)})
    g.add_output("y")
    assert g.outputs()[0][2] == [-1, -1]
    same(g.run([np.zeros((5, 3), np.float32)])[0], np.full((5, 3), 7, np.int64))
    with pytest.raises(tsr.TesseraError, match="one element"):
        run1("ConstantOfShape", [i64(2)], {"value": np.zeros(2)}, const_inputs=(0,))
    with pytest.raises(tsr.TesseraError, match="negative"):
        run1("ConstantOfShape", [i64(2, -1)], const_inputs=(0,))


# ----------------------------------------------------------------- Cast

ONNX_CODES = {np.float32: 1, np.uint8: 2, np.int8: 3, np.int32: 6, np.int64: 7, np.bool_: 9,
              np.float64: 11}


@pytest.mark.parametrize("src", ALL_DTYPES)
@pytest.mark.parametrize("dst", ALL_DTYPES)
def test_cast(src, dst):
    rng = np.random.default_rng(28)
    x = rand(rng, (3, 37), src)
    if np.issubdtype(dst, np.integer) and not np.issubdtype(src, np.bool_):
        # Keep values inside the target's range, where numpy is defined.
        info = np.iinfo(dst)
        x = np.clip(x, max(info.min, -1000), min(info.max, 1000)).astype(src)
    got = run1("Cast", [x], {"to": ONNX_CODES[dst]})
    same(got, x.astype(dst))


def test_cast_truncates_toward_zero_and_wraps():
    x = np.array([-2.7, -0.5, 0.5, 2.7, 1e30, -1e30, np.nan], np.float64)
    same(run1("Cast", [x[:4]], {"to": 7}), i64(-2, 0, 0, 2))
    same(run1("Cast", [x[:4].astype(np.float32)], {"to": 6}), np.array([-2, 0, 0, 2], np.int32))
    same(run1("Cast", [x], {"to": 9}), np.array([1, 1, 1, 1, 1, 1, 1], bool))
    same(run1("Cast", [x[4:6]], {"to": 7}), i64(INT64_MAX, INT64_MIN))
    same(run1("Cast", [i64(300, -1, 2**40 + 5)], {"to": 2}), np.array([44, 255, 5], np.uint8))
    same(run1("Cast", [i64(2**53 + 1)], {"to": 1}), np.array([2**53 + 1], np.float32))
    big = rand(np.random.default_rng(29), (70001,), np.float32)
    same(run1("Cast", [big], {"to": 11}, threads=2), big.astype(np.float64))


@pytest.mark.parametrize("to,name", [(10, "float16"), (8, "string"), (16, "bfloat16"),
                                     (99, "an unknown type")])
def test_cast_unsupported_targets(to, name):
    with pytest.raises(tsr.TesseraError, match=f"Cast to {name}.*not supported"):
        run1("Cast", [np.zeros(3, np.float32)], {"to": to})


# ---------------------------------------------------------------- Range


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
@pytest.mark.parametrize("args", [(0, 10, 1), (3, 17, 4), (10, 0, -3), (5, 5, 1), (5, 0, 2),
                                  (-7, 8, 5), (2.5, 9.1, 0.7)], ids=str)
def test_range(dtype, args):
    if np.issubdtype(dtype, np.integer) and any(isinstance(a, float) for a in args):
        pytest.skip("fractional bounds need a float type")
    start, limit, delta = (np.array(a, dtype) for a in args)
    ref = np.arange(start, limit, delta, dtype=dtype)
    if np.issubdtype(dtype, np.floating):
        # ONNX defines element i as start + i * delta (numpy's arange steps
        # by a rounded delta); Tessera evaluates it in double precision.
        n = len(ref)
        ref = (np.float64(start) + np.arange(n) * np.float64(delta)).astype(dtype)
    same(run1("Range", [start, limit, delta], const_inputs=(0, 1, 2)), ref)


def test_range_errors():
    z = np.array(0, np.int64)
    with pytest.raises(tsr.TesseraError, match="zero delta"):
        run1("Range", [z, np.array(5, np.int64), z], const_inputs=(0, 1, 2))
    with pytest.raises(tsr.TesseraError, match="limit is float32 but start is int64"):
        run1("Range", [z, np.array(5, np.float32), z], const_inputs=(0, 1, 2))
    with pytest.raises(tsr.TesseraError, match="scalar"):
        run1("Range", [z, i64(5, 6), z], const_inputs=(0, 1, 2))

"""The ONNX importer: small models built with onnx.helper, loaded through
libtessera, checked against numpy; and malformed models, each of which must
give a clear TesseraError instead of a crash."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tsr

RNG = np.random.default_rng(20240611)
ONNX_TYPE = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int8): TensorProto.INT8,
}


def make_model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=(),
               graph_inputs_extra=()):
    """inputs/outputs: (name, numpy dtype, shape) with None or strings for free dims."""
    def info(name, dtype, shape):
        return helper.make_tensor_value_info(name, ONNX_TYPE[np.dtype(dtype)], shape)

    graph = helper.make_graph(
        nodes, "g", [info(*i) for i in inputs] + list(graph_inputs_extra),
        [info(*o) for o in outputs], initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] if opset is not None else []
    opsets += [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tessera-test")
    model.ir_version = 8
    return model


def save(model, tmp_path, name="model.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def load_error(path_or_bytes, status, base_dir=None):
    """The message of the load's TesseraError, which must carry `status`."""
    with pytest.raises(tsr.TesseraError) as err:
        if isinstance(path_or_bytes, (bytes, bytearray)):
            tsr.Graph.load_bytes(path_or_bytes, base_dir)
        else:
            tsr.Graph.load(path_or_bytes)
    assert err.value.status == status, f"status {err.value.status}, not {status}: {err.value}"
    return str(err.value)


def random_array(dtype, shape):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return RNG.random(shape) < 0.5
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)


def add_model(w, shape_in=None):
    """y = x + w, with w an initializer."""
    shape_in = list(w.shape) if shape_in is None else shape_in
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    return make_model([node], [("x", w.dtype, shape_in)], [("y", w.dtype, None)],
                      [numpy_helper.from_array(w, "w")])


def const_output_model(tensor, dtype):
    """A graph whose only output is the initializer itself."""
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info(
        tensor.name, ONNX_TYPE[np.dtype(dtype)], None)], initializer=[tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# ------------------------------------------------------------------ initializers

ALL_DTYPES = [np.float32, np.float64, np.int64, np.int32, np.bool_, np.uint8, np.int8]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_initializer_raw_data(tmp_path, dtype):
    w = random_array(dtype, (3, 5, 2))
    tensor = numpy_helper.from_array(w, "w")
    assert tensor.HasField("raw_data")
    (out,) = tsr.run_onnx(save(const_output_model(tensor, dtype), tmp_path), [])
    assert out.dtype == w.dtype
    np.testing.assert_array_equal(out, w)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_initializer_typed_fields(tmp_path, dtype):
    w = random_array(dtype, (4, 3))
    vals = w.flatten().tolist()
    tensor = helper.make_tensor("w", ONNX_TYPE[np.dtype(dtype)], w.shape, vals, raw=False)
    assert not tensor.HasField("raw_data")
    (out,) = tsr.run_onnx(save(const_output_model(tensor, dtype), tmp_path), [])
    assert out.dtype == w.dtype
    np.testing.assert_array_equal(out, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_initializer_feeds_a_node(tmp_path, dtype):
    w = random_array(dtype, (2, 7))
    x = random_array(dtype, (2, 7))
    (y,) = tsr.run_onnx(save(add_model(w), tmp_path), [x])
    np.testing.assert_allclose(y, x + w, rtol=1e-6)


def test_empty_initializer(tmp_path):
    w = np.zeros((0, 3), np.float32)
    (out,) = tsr.run_onnx(save(const_output_model(numpy_helper.from_array(w, "w"), np.float32),
                               tmp_path), [])
    assert out.shape == (0, 3)
    # An empty tensor needs no data at all.
    tensor = helper.make_tensor("e", TensorProto.FLOAT, [2, 0], [])
    (out,) = tsr.run_onnx(save(const_output_model(tensor, np.float32), tmp_path, "e.onnx"), [])
    assert out.shape == (2, 0)


def test_scalar_initializer(tmp_path):
    w = np.array(2.5, np.float64)
    x = random_array(np.float64, (3, 2))
    (y,) = tsr.run_onnx(save(add_model(w, [3, 2]), tmp_path), [x])
    np.testing.assert_allclose(y, x + 2.5)


def test_raw_data_size_mismatch(tmp_path):
    tensor = numpy_helper.from_array(np.ones((2, 3), np.float32), "weights")
    tensor.raw_data = tensor.raw_data[:-4]
    msg = load_error(save(const_output_model(tensor, np.float32), tmp_path), tsr.ERR_PARSE)
    assert "weights" in msg and "raw_data" in msg and "20" in msg and "24" in msg


def test_typed_count_mismatch(tmp_path):
    tensor = TensorProto(name="weights", data_type=TensorProto.INT64, dims=[5],
                         int64_data=[1, 2, 3])
    msg = load_error(save(const_output_model(tensor, np.int64), tmp_path), tsr.ERR_PARSE)
    assert "weights" in msg and "int64_data" in msg and "3" in msg and "5" in msg


def test_initializer_without_data(tmp_path):
    tensor = TensorProto(name="hollow", data_type=TensorProto.FLOAT, dims=[2, 2])
    msg = load_error(save(const_output_model(tensor, np.float32), tmp_path), tsr.ERR_PARSE)
    assert "hollow" in msg and "no data" in msg


def test_unsupported_initializer_dtype(tmp_path):
    tensor = numpy_helper.from_array(np.ones(3, np.float16), "half")
    msg = load_error(save(const_output_model(tensor, np.float32), tmp_path),
                     tsr.ERR_UNSUPPORTED)
    assert "half" in msg and "float16" in msg
    tensor = helper.make_tensor("words", TensorProto.STRING, [1], [b"a"])
    msg = load_error(save(const_output_model(tensor, np.float32), tmp_path, "s.onnx"),
                     tsr.ERR_UNSUPPORTED)
    assert "words" in msg and "string" in msg


def test_out_of_range_int8_field(tmp_path):
    tensor = TensorProto(name="small", data_type=TensorProto.INT8, dims=[2], int32_data=[1, 300])
    msg = load_error(save(const_output_model(tensor, np.int8), tmp_path), tsr.ERR_PARSE)
    assert "small" in msg and "300" in msg


def test_initializer_listed_as_input(tmp_path):
    # Exporters before IR version 4 list every weight among the graph inputs.
    w = random_array(np.float32, (3, 4))
    model = add_model(w)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4]))
    graph = tsr.Graph.load(save(model, tmp_path))
    assert [name for name, _, _ in graph.inputs()] == ["x"]
    x = random_array(np.float32, (3, 4))
    (y,) = graph.run([x])
    np.testing.assert_allclose(y, x + w, rtol=1e-6)


def test_missing_initializer(tmp_path):
    node = helper.make_node("Add", ["x", "bias"], ["y"], name="add_bias")
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, [2])])
    msg = load_error(save(model, tmp_path), tsr.ERR_NOT_FOUND)
    assert "add_bias" in msg and "'bias'" in msg


def test_output_not_produced(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    model = make_model([node], [("x", np.float32, [2])], [("z", np.float32, [2])])
    msg = load_error(save(model, tmp_path), tsr.ERR_NOT_FOUND)
    assert "'z'" in msg


# ----------------------------------------------------------------- external data

def external_model(tmp_path):
    w1 = random_array(np.float32, (8, 16))
    w2 = random_array(np.float64, (5,))
    n1 = helper.make_node("Add", ["x", "w1"], ["y1"], name="add1")
    n2 = helper.make_node("Add", ["x2", "w2"], ["y2"], name="add2")
    model = make_model([n1, n2], [("x", np.float32, [8, 16]), ("x2", np.float64, [5])],
                       [("y1", np.float32, None), ("y2", np.float64, None)],
                       [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=16)
    return path, w1, w2


def test_external_data(tmp_path):
    path, w1, w2 = external_model(tmp_path)
    stored = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    x = random_array(np.float32, (8, 16))
    x2 = random_array(np.float64, (5,))
    y1, y2 = tsr.run_onnx(path, [x, x2])
    np.testing.assert_allclose(y1, x + w1, rtol=1e-6)
    np.testing.assert_allclose(y2, x2 + w2, rtol=1e-12)
    # From memory with a base directory, the same; without one, a clear refusal.
    data = path.read_bytes()
    y1, _ = tsr.Graph.load_bytes(data, tmp_path).run([x, x2])
    np.testing.assert_allclose(y1, x + w1, rtol=1e-6)
    msg = load_error(data, tsr.ERR_INVALID_ARGUMENT)
    assert "weights.bin" in msg and "base directory" in msg


def test_external_data_from_other_cwd(tmp_path, monkeypatch):
    path, w1, _ = external_model(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    rel = os.path.relpath(path, other)
    x = random_array(np.float32, (8, 16))
    y1, _ = tsr.run_onnx(rel, [x, np.zeros(5)])
    np.testing.assert_allclose(y1, x + w1, rtol=1e-6)


def test_external_file_missing(tmp_path):
    path, _, _ = external_model(tmp_path)
    (tmp_path / "weights.bin").unlink()
    msg = load_error(path, tsr.ERR_IO)
    assert "weights.bin" in msg and "No such file" in msg


def test_external_file_too_short(tmp_path):
    path, _, _ = external_model(tmp_path)
    blob = tmp_path / "weights.bin"
    blob.write_bytes(blob.read_bytes()[:100])
    msg = load_error(path, tsr.ERR_IO)
    assert "weights.bin" in msg and "short" in msg


def _set_location(path, location):
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("location", ["../weights.bin", "sub/../../weights.bin"])
def test_external_path_escaping(tmp_path, location):
    inner = tmp_path / "inner"
    inner.mkdir()
    path, _, _ = external_model(inner)
    (inner / "weights.bin").rename(tmp_path / "weights.bin")
    _set_location(path, location)
    msg = load_error(path, tsr.ERR_PARSE)
    assert location in msg and "escapes" in msg


def test_external_path_absolute(tmp_path):
    path, _, _ = external_model(tmp_path)
    _set_location(path, str(tmp_path / "weights.bin"))
    msg = load_error(path, tsr.ERR_PARSE)
    assert "absolute" in msg


def test_external_length_mismatch(tmp_path):
    path, _, _ = external_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "length":
            e.value = "12"
    path.write_bytes(model.SerializeToString())
    msg = load_error(path, tsr.ERR_PARSE)
    assert "w1" in msg and "length 12" in msg


# ---------------------------------------------------------------- nodes, attrs

def test_constant_node(tmp_path):
    c = random_array(np.float32, (2, 3))
    nodes = [helper.make_node("Constant", [], ["c"], name="const",
                              value=numpy_helper.from_array(c)),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    model = make_model(nodes, [("x", np.float32, [2, 3])], [("y", np.float32, None)])
    x = random_array(np.float32, (2, 3))
    (y,) = tsr.run_onnx(save(model, tmp_path), [x])
    np.testing.assert_allclose(y, x + c, rtol=1e-6)


def test_constant_node_bad_tensor(tmp_path):
    bad = numpy_helper.from_array(np.ones((2, 2), np.float32))
    bad.raw_data = bad.raw_data[:8]
    node = helper.make_node("Constant", [], ["c"], name="const_bad", value=bad)
    model = make_model([node], [], [("c", np.float32, None)])
    msg = load_error(save(model, tmp_path), tsr.ERR_PARSE)
    assert "const_bad" in msg and "'value'" in msg and "raw_data" in msg


def test_float_and_int_attributes(tmp_path):
    a = random_array(np.float32, (3, 4))
    b = random_array(np.float32, (5, 4))
    node = helper.make_node("Gemm", ["a", "b"], ["y"], name="gemm", alpha=0.25, transB=1)
    model = make_model([node], [("a", np.float32, [3, 4]), ("b", np.float32, [5, 4])],
                       [("y", np.float32, None)])
    (y,) = tsr.run_onnx(save(model, tmp_path), [a, b])
    np.testing.assert_allclose(y, 0.25 * a @ b.T, rtol=1e-5, atol=1e-6)


def test_float_attribute_unary(tmp_path):
    node = helper.make_node("LeakyRelu", ["x"], ["y"], name="lrelu", alpha=0.3)
    model = make_model([node], [("x", np.float64, [4, 5])], [("y", np.float64, None)])
    x = random_array(np.float64, (4, 5))
    (y,) = tsr.run_onnx(save(model, tmp_path), [x])
    # ONNX stores attributes as float32: the importer widens that value, exactly.
    alpha = float(np.float32(0.3))
    np.testing.assert_allclose(y, np.where(x >= 0, x, alpha * x), rtol=1e-12)


def test_unknown_attribute_reaches_user(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu7", bogus=3)
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, None)])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "relu7" in msg and "bogus" in msg


def test_graph_attribute_unsupported(tmp_path):
    body = helper.make_graph([], "body", [], [])
    node = helper.make_node("Relu", ["x"], ["y"], name="relu_g", branch=body)
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, None)])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "relu_g" in msg and "'branch'" in msg and "graph" in msg


def test_unknown_op(tmp_path):
    node = helper.make_node("FrobnicateV2", ["x"], ["y"], name="frob")
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, None)])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "FrobnicateV2" in msg and "frob" in msg and "ai.onnx" in msg


def test_unknown_domain(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="vendor_relu", domain="com.vendor")
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, None)],
                       extra_opsets=[("com.vendor", 1)])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "com.vendor" in msg and "Relu" in msg and "vendor_relu" in msg


def test_tessera_domain_unknown_op(tmp_path):
    node = helper.make_node("NoSuchFusedOp", ["x"], ["y"], name="fused0", domain="ai.tessera")
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, None)],
                       extra_opsets=[("ai.tessera", 1)])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "NoSuchFusedOp" in msg and "ai.tessera" in msg and "fused0" in msg


def test_domain_not_imported(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, None)], opset=None,
                       extra_opsets=[("ai.tessera", 1)])
    msg = load_error(save(model, tmp_path), tsr.ERR_PARSE)
    assert "relu" in msg and "opset_import" in msg


@pytest.mark.parametrize("opset", [10, 22])
def test_opset_out_of_range(tmp_path, opset):
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], [("x", np.float32, [2])], [("y", np.float32, None)], opset=opset)
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert f"opset {opset}" in msg and "11 to 21" in msg


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_opsets_in_range(tmp_path, opset):
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], [("x", np.float32, [3])], [("y", np.float32, None)], opset=opset)
    model.opset_import[0].domain = "ai.onnx" if opset == 13 else ""
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    (y,) = tsr.run_onnx(save(model, tmp_path), [x])
    np.testing.assert_array_equal(y, np.maximum(x, 0))


# ---------------------------------------------------------------------- inputs

def test_symbolic_dims(tmp_path):
    node = helper.make_node("Exp", ["x"], ["y"], name="exp")
    model = make_model([node], [("x", np.float32, ["batch", 3, None])],
                       [("y", np.float32, None)])
    graph = tsr.Graph.load(save(model, tmp_path))
    (name, dtype, shape), = graph.inputs()
    assert name == "x" and dtype == np.float32
    assert shape == ["batch", 3, "unk_x_2"]
    (_, _, out_shape), = graph.outputs()
    assert out_shape[0] == "batch" and out_shape[1] == 3
    for batch, last in [(2, 5), (7, 1)]:
        x = random_array(np.float32, (batch, 3, last))
        (y,) = graph.run([x])
        np.testing.assert_allclose(y, np.exp(x), rtol=1e-6)


def test_unsupported_input_dtype(tmp_path):
    node = helper.make_node("Relu", ["h"], ["y"])
    half_input = helper.make_tensor_value_info("h", TensorProto.FLOAT16, [2])
    model = make_model([node], [], [("y", np.float32, None)], graph_inputs_extra=[half_input])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "'h'" in msg and "float16" in msg


def test_input_without_shape(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    no_shape = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    model = make_model([node], [], [("y", np.float32, None)], graph_inputs_extra=[no_shape])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "'x'" in msg and "shape" in msg


def test_sequence_input_unsupported(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    seq = helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [2])
    model = make_model([node], [], [("y", np.float32, None)], graph_inputs_extra=[seq])
    msg = load_error(save(model, tmp_path), tsr.ERR_UNSUPPORTED)
    assert "'x'" in msg and "tensor" in msg


# ------------------------------------------------------------ malformed files

def small_real_model():
    w = random_array(np.float32, (4, 6))
    nodes = [helper.make_node("Add", ["x", "w"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    return make_model(nodes, [("x", np.float32, ["batch", 6])], [("y", np.float32, None)],
                      [numpy_helper.from_array(w, "w")])


def test_truncated_file(tmp_path):
    data = small_real_model().SerializeToString()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    msg = load_error(path, tsr.ERR_PARSE)
    assert "not an ONNX model" in msg and "half.onnx" in msg


def test_every_prefix_fails_cleanly():
    data = small_real_model().SerializeToString()
    tsr.Graph.load_bytes(data)
    for cut in range(1, len(data)):
        msg = load_error(data[:cut], tsr.ERR_PARSE)
        # A cut between fields leaves a valid message that lacks the rest.
        assert "not an ONNX model" in msg or "opset_import does not list" in msg, (cut, msg)


def test_random_bytes(tmp_path):
    rng = np.random.default_rng(7)
    for size in [1, 7, 64, 1000, 5000]:
        path = tmp_path / f"noise{size}.onnx"
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        msg = load_error(path, tsr.ERR_PARSE)
        assert "not an ONNX model" in msg or "opset" in msg


def test_text_file(tmp_path):
    path = tmp_path / "readme.onnx"
    path.write_text("this is not a model\n")
    assert "not an ONNX model" in load_error(path, tsr.ERR_PARSE)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    msg = load_error(path, tsr.ERR_PARSE)
    assert "empty" in msg and "empty.onnx" in msg


def test_missing_file(tmp_path):
    msg = load_error(tmp_path / "nowhere.onnx", tsr.ERR_IO)
    assert "nowhere.onnx" in msg and "No such file" in msg


def test_directory(tmp_path):
    msg = load_error(tmp_path, tsr.ERR_IO)
    assert str(tmp_path) in msg and "directory" in msg


def test_no_graph():
    model = onnx.ModelProto(ir_version=8)
    model.opset_import.append(helper.make_opsetid("", 17))
    msg = load_error(model.SerializeToString(), tsr.ERR_PARSE)
    assert "not an ONNX model" in msg and "no graph" in msg


# ------------------------------------------------------------ exporter output

def torch_export(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(module, torch.zeros(2, 6), str(path), opset_version=13,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return torch, module, path


def test_torch_export(tmp_path):
    torch, module, path = torch_export(tmp_path)
    graph = tsr.Graph.load(path)
    assert graph.inputs() == [("x", np.float32, ["batch", 6])]
    x = random_array(np.float32, (7, 6))
    (y,) = graph.run([x])
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_truncated_torch_export(tmp_path):
    _, _, path = torch_export(tmp_path)
    data = path.read_bytes()
    half = tmp_path / "half.onnx"
    half.write_bytes(data[: len(data) // 2])
    msg = load_error(half, tsr.ERR_PARSE)
    assert "not an ONNX model" in msg and "half.onnx" in msg

"""Control flow and variadic ops past a node's input limit (issue 14): If with a constant
cond, with a cond on a symbolic dim (Shape -> Gather -> Equal, hand-built and exported by
torch.onnx.export with dynamic axes) run at sizes taking both branches, nested If, branches
reading outer values and giving different shapes, NonMaxSuppression then If on the count of
kept boxes (torchvision's batched_nms) at counts 0 and > 0, a cond on input values (planned
per value in a tail), the errors; Concat, Sum, Max and Min of 90 and 200 inputs; all against
numpy or PyTorch."""

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

import tessera
from tessera.graph import Graph

DEVICES = ["ref", "cpu"]


def model(nodes, inputs, outputs, inits=(), opset=13):
    graph = h.make_graph(nodes, "control", inputs, outputs, list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)]).SerializeToString()


def vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def branch(name, nodes, outputs, inits=()):
    return h.make_graph(nodes, name, [], outputs, list(inits))


def dim_is_one_model():
    """y = x[0] * 2 (x's first dim squeezed) when that dim is 1, else x + bias: shapes differ
    between the branches, and both read outer values."""
    then_g = branch("then", [h.make_node("Squeeze", ["x", "axes0"], ["sq"]),
                             h.make_node("Mul", ["sq", "two"], ["y_then"])],
                    [vi("y_then", T.FLOAT, None)],
                    [h.make_tensor("axes0", T.INT64, [1], [0])])
    else_g = branch("else", [h.make_node("Add", ["x", "bias"], ["y_else"])],
                    [vi("y_else", T.FLOAT, None)])
    nodes = [h.make_node("Shape", ["x"], ["shape"]),
             h.make_node("Gather", ["shape", "zero"], ["n"]),
             h.make_node("Equal", ["n", "one"], ["cond"]),
             h.make_node("If", ["cond"], ["y"], name="if_n_is_1", then_branch=then_g,
                         else_branch=else_g),
             h.make_node("Relu", ["y"], ["out"])]
    inits = [h.make_tensor("zero", T.INT64, [], [0]), h.make_tensor("one", T.INT64, [], [1]),
             h.make_tensor("two", T.FLOAT, [], [2.0]),
             h.make_tensor("bias", T.FLOAT, [3], [0.5, -1.0, 2.0])]
    return model(nodes, [vi("x", T.FLOAT, ["n", 3])], [vi("out", T.FLOAT, None)], inits)


@pytest.mark.parametrize("device", DEVICES)
def test_if_on_a_symbolic_dim_takes_both_branches(device):
    sess = tessera.Session(dim_is_one_model(), device=device, threads=1)
    rng = np.random.default_rng(1)
    for n in (1, 4, 1, 7):
        x = rng.standard_normal((n, 3)).astype(np.float32)
        (got,) = sess.run(None, {"x": x})
        want = np.maximum(x[0] * 2, 0) if n == 1 else np.maximum(x + [0.5, -1.0, 2.0], 0)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_if_with_a_constant_cond_is_expanded_at_import():
    for value, want in ((True, 3.0), (False, -3.0)):
        then_g = branch("then", [h.make_node("Mul", ["x", "three"], ["a"])],
                        [vi("a", T.FLOAT, None)])
        else_g = branch("else", [h.make_node("Mul", ["x", "minus3"], ["b"])],
                        [vi("b", T.FLOAT, None)])
        m = model([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                  [vi("x", T.FLOAT, [2, 5])], [vi("y", T.FLOAT, None)],
                  [h.make_tensor("c", T.BOOL, [], [value]),
                   h.make_tensor("three", T.FLOAT, [], [3.0]),
                   h.make_tensor("minus3", T.FLOAT, [], [-3.0])])
        assert "If" not in Graph.from_bytes(m).stats()["op_counts"]
        sess = tessera.Session(m, device="ref", threads=1)
        x = np.arange(10, dtype=np.float32).reshape(2, 5)
        (y,) = sess.run(None, {"x": x})
        np.testing.assert_allclose(y, x * want)


def nested_model():
    """out = (n == 1 ? (m == 1 ? x + 1 : x * 3) : x) summed over axis 1 and kept: nested
    branches reading values of both enclosing scopes, one giving an outer value straight."""
    inner_then = branch("it", [h.make_node("Add", ["x", "onef"], ["it_y"])],
                        [vi("it_y", T.FLOAT, None)])
    inner_else = branch("ie", [h.make_node("Mul", ["x", "threef"], ["ie_y"])],
                        [vi("ie_y", T.FLOAT, None)])
    outer_then = branch("ot", [h.make_node("Gather", ["shape", "onei"], ["m"]),
                               h.make_node("Equal", ["m", "onei"], ["c2"]),
                               h.make_node("If", ["c2"], ["ot_y"], then_branch=inner_then,
                                           else_branch=inner_else)],
                        [vi("ot_y", T.FLOAT, None)])
    outer_else = branch("oe", [], [vi("x", T.FLOAT, None)])
    nodes = [h.make_node("Shape", ["x"], ["shape"]),
             h.make_node("Gather", ["shape", "zeroi"], ["n"]),
             h.make_node("Equal", ["n", "onei"], ["c1"]),
             h.make_node("If", ["c1"], ["y"], then_branch=outer_then, else_branch=outer_else),
             h.make_node("ReduceSum", ["y"], ["out"], axes=[1], keepdims=1)]
    inits = [h.make_tensor("zeroi", T.INT64, [], [0]), h.make_tensor("onei", T.INT64, [], [1]),
             h.make_tensor("onef", T.FLOAT, [], [1.0]),
             h.make_tensor("threef", T.FLOAT, [], [3.0])]
    return model(nodes, [vi("x", T.FLOAT, ["n", "m"])], [vi("out", T.FLOAT, None)], inits,
                 opset=11)


def test_nested_if_against_numpy():
    rng = np.random.default_rng(2)
    for device in DEVICES:
        sess = tessera.Session(nested_model(), device=device, threads=1)
        for n, m in ((1, 1), (1, 4), (3, 1), (3, 4)):
            x = rng.standard_normal((n, m)).astype(np.float32)
            (got,) = sess.run(None, {"x": x})
            y = (x + 1 if m == 1 else x * 3) if n == 1 else x
            np.testing.assert_allclose(got, y.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


class SqueezeIfOne(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] == 1:
            return x.squeeze(0) * 2.0
        return x.sum(0) - 1.0


def test_torch_export_with_dynamic_axes_against_pytorch():
    module = torch.jit.script(SqueezeIfOne())
    buf = io.BytesIO()
    torch.onnx.export(module, torch.zeros(2, 5), buf, input_names=["x"], opset_version=13,
                      dynamic_axes={"x": {0: "n"}})
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert "If" in ops
    rng = np.random.default_rng(3)
    for device in DEVICES:
        sess = tessera.Session(buf.getvalue(), device=device, threads=1)
        for n in (1, 3, 1):
            x = rng.standard_normal((n, 5)).astype(np.float32)
            (got,) = sess.run(None, {"x": x})
            want = SqueezeIfOne()(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def nms_then_if_model():
    """batched_nms's pattern: boxes kept by NonMaxSuppression, then If numel == 0 gives an
    empty int64 tensor, else the kept indices."""
    then_g = branch("empty", [h.make_node("Constant", [], ["none"],
                                          value=h.make_tensor("e", T.INT64, [0], []))],
                    [vi("none", T.INT64, None)])
    else_g = branch("kept", [h.make_node("Squeeze", ["sel_col", "ax1"], ["kept_idx"])],
                    [vi("kept_idx", T.INT64, None)], [h.make_tensor("ax1", T.INT64, [1], [1])])
    nodes = [h.make_node("NonMaxSuppression", ["boxes", "scores", "limit", "iou", "thr"],
                         ["sel"]),
             h.make_node("Gather", ["sel", "two"], ["sel_col"], axis=1),
             h.make_node("Shape", ["sel_col"], ["sel_shape"]),
             h.make_node("ReduceProd", ["sel_shape"], ["count"], keepdims=0),
             h.make_node("Equal", ["count", "zero"], ["none_kept"]),
             h.make_node("If", ["none_kept"], ["idx"], name="if_empty", then_branch=then_g,
                         else_branch=else_g)]
    inits = [h.make_tensor("limit", T.INT64, [1], [100]),
             h.make_tensor("iou", T.FLOAT, [1], [0.5]),
             h.make_tensor("thr", T.FLOAT, [1], [0.5]),
             h.make_tensor("two", T.INT64, [1], [2]), h.make_tensor("zero", T.INT64, [], [0])]
    return model(nodes, [vi("boxes", T.FLOAT, [1, "b", 4]), vi("scores", T.FLOAT, [1, 1, "b"])],
                 [vi("idx", T.INT64, None)], inits)


def test_nms_then_if_on_the_count_at_zero_and_more():
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(4)
    for device in DEVICES:
        sess = tessera.Session(nms_then_if_model(), device=device, threads=1)
        for b, above in ((6, True), (6, False), (9, True), (6, False)):
            xy = rng.uniform(0, 20, (b, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(1, 8, (b, 2))], 1).astype(np.float32)
            scores = rng.uniform(0.6 if above else 0.0, 1.0 if above else 0.4, b)
            scores = scores.astype(np.float32)
            (got,) = sess.run(None, {"boxes": boxes[None], "scores": scores[None, None]})
            keep = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
            want = keep[scores[keep.numpy()] > 0.5].numpy() if above else np.zeros(0, np.int64)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(np.sort(got), np.sort(want))


def value_cond_model():
    then_g = branch("pos", [h.make_node("Mul", ["x", "x"], ["sq"])], [vi("sq", T.FLOAT, None)])
    else_g = branch("neg", [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0)],
                    [vi("s", T.FLOAT, None)])
    nodes = [h.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             h.make_node("Greater", ["total", "zero"], ["positive"]),
             h.make_node("If", ["positive"], ["y"], name="if_positive", then_branch=then_g,
                         else_branch=else_g)]
    return model(nodes, [vi("x", T.FLOAT, [4])], [vi("y", T.FLOAT, None)],
                 [h.make_tensor("zero", T.FLOAT, [], [0.0])])


def test_if_on_input_values_is_planned_per_value():
    for device in DEVICES:
        sess = tessera.Session(value_cond_model(), device=device, threads=1)
        for x in ([1.0, 2.0, -0.5, 3.0], [-1.0, -2.0, 0.5, 0.0], [2.0, 2.0, 2.0, 2.0]):
            x = np.array(x, np.float32)
            (got,) = sess.run(None, {"x": x})
            want = x * x if x.sum() > 0 else np.float32(x.sum())
            assert got.shape == np.shape(want)
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_if_errors_name_the_node():
    then_g = branch("t", [h.make_node("Identity", ["x"], ["a"])], [vi("a", T.FLOAT, None)])
    else_g = branch("e", [h.make_node("Identity", ["undefined_value"], ["b"])],
                    [vi("b", T.FLOAT, None)])
    m = model([h.make_node("If", ["c"], ["y"], name="bad_if", then_branch=then_g,
                           else_branch=else_g)],
              [vi("x", T.FLOAT, [2]), vi("c", T.BOOL, [])], [vi("y", T.FLOAT, None)])
    with pytest.raises(tessera.Error, match="bad_if.*undefined_value"):
        tessera.Session(m, device="ref", threads=1)
    two_g = branch("two", [h.make_node("Identity", ["x"], ["a"]),
                           h.make_node("Identity", ["x"], ["a2"])],
                   [vi("a", T.FLOAT, None), vi("a2", T.FLOAT, None)])
    m = model([h.make_node("If", ["c"], ["y"], name="arity_if", then_branch=two_g,
                           else_branch=then_g)],
              [vi("x", T.FLOAT, [2]), vi("c", T.BOOL, [])], [vi("y", T.FLOAT, None)])
    with pytest.raises(tessera.Error, match="arity_if.*outputs"):
        tessera.Session(m, device="ref", threads=1)
    m = model([h.make_node("If", ["c"], ["y"], name="float_cond", then_branch=then_g,
                           else_branch=then_g)],
              [vi("x", T.FLOAT, [2]), vi("c", T.FLOAT, [])], [vi("y", T.FLOAT, None)])
    with pytest.raises(tessera.Error, match="float_cond"):
        tessera.Session(m, device="ref", threads=1)
    m = model([h.make_node("If", ["c"], ["y"], name="empty_cond", then_branch=then_g,
                           else_branch=then_g)],
              [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, None)],
              [h.make_tensor("c", T.BOOL, [0], [])])
    with pytest.raises(tessera.ShapeError, match="empty_cond.*one element"):
        tessera.Session(m, device="ref", threads=1)


@pytest.mark.parametrize("op", ["Concat", "Sum", "Max", "Min"])
def test_variadic_ops_of_90_inputs(op):
    rng = np.random.default_rng(5)
    n = 90
    xs = [rng.standard_normal((2, 1 + i % 3 if op == "Concat" else 3)).astype(np.float32)
          for i in range(n)]
    names = [f"x{i}" for i in range(n)]
    attrs = {"axis": 1} if op == "Concat" else {}
    m = model([h.make_node(op, names, ["y"], name="wide", **attrs)],
              [vi(nm, T.FLOAT, list(x.shape)) for nm, x in zip(names, xs)],
              [vi("y", T.FLOAT, None)])
    want = {"Concat": lambda: np.concatenate(xs, 1), "Sum": lambda: np.sum(xs, 0),
            "Max": lambda: np.max(xs, 0), "Min": lambda: np.min(xs, 0)}[op]()
    for device in DEVICES:
        sess = tessera.Session(m, device=device, threads=1)
        (got,) = sess.run(None, dict(zip(names, xs)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_concat_of_200_inputs_builds_two_levels():
    n = 200
    names = [f"x{i}" for i in range(n)]
    m = model([h.make_node("Concat", names, ["y"], axis=0)],
              [vi(nm, T.FLOAT, [1]) for nm in names], [vi("y", T.FLOAT, None)])
    sess = tessera.Session(m, device="cpu", threads=1)
    (got,) = sess.run(None, {nm: np.array([i], np.float32) for i, nm in enumerate(names)})
    np.testing.assert_array_equal(got, np.arange(n))

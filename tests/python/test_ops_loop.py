"""ONNX Loop (issue 14), unrolled where its trip count and conditions are known: a fixed trip
count with scan outputs and loop-carried values of several dtypes, cond only (a while-loop on
a counter), both, zero iterations, past 64 scan pieces, outer-scope captures, Loop nested in
If and If in Loop, a trip count and a condition found at run time (planned in a tail),
torch.jit.script'ed loops exported by torch.onnx against PyTorch, gradients of an unrolled
loop against finite differences, and the errors naming the node."""

import io

import numpy as np
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

import tessera
import tsr
from tessera.graph import Graph

DEVICES = ["ref", "cpu"]


def model(nodes, inputs, outputs, inits=(), opset=13):
    graph = h.make_graph(nodes, "loop", inputs, outputs, list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)]).SerializeToString()


def vi(name, elem, shape=None):
    return h.make_tensor_value_info(name, elem, shape)


def body(nodes, inputs, outputs, inits=()):
    """A Loop body: inputs (iter_num, cond, loop-carried...) as (name, elem) pairs."""
    return h.make_graph(nodes, "body", [vi(n, e) for n, e in inputs],
                        [vi(n, e) for n, e in outputs], list(inits))


def run(m, feeds, device="ref"):
    return tessera.Session(m, device=device, threads=1).run(None, feeds)


def op_counts(m):
    return Graph.from_bytes(m).stats()["op_counts"]


def scaled_sum_model(trips=4, elem=T.FLOAT):
    """acc += iter_num, scan acc * w; M given, cond omitted."""
    b = body([h.make_node("Identity", ["c"], ["c_out"]),
              h.make_node("Cast", ["i"], ["fi"], to=elem),
              h.make_node("Add", ["acc", "fi"], ["acc_out"]),
              h.make_node("Mul", ["acc_out", "w"], ["scan"])],
             [("i", T.INT64), ("c", T.BOOL), ("acc", elem)],
             [("c_out", T.BOOL), ("acc_out", elem), ("scan", elem)])
    return model([h.make_node("Loop", ["M", "", "x"], ["y", "ys"], name="loop", body=b)],
                 [vi("x", elem, [2, 3]), vi("w", elem, [2, 3])], [vi("y", elem), vi("ys", elem)],
                 [h.make_tensor("M", T.INT64, [], [trips])])


def scaled_sum_numpy(x, w, trips):
    acc, scans = x.copy(), []
    for i in range(trips):
        acc = acc + np.asarray(i, x.dtype)
        scans.append(acc * w)
    ys = np.stack(scans) if scans else np.zeros((0,) + x.shape, x.dtype)
    return acc, ys


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("elem,dtype", [(T.FLOAT, np.float32), (T.DOUBLE, np.float64),
                                        (T.INT64, np.int64), (T.INT32, np.int32)])
def test_fixed_trip_count_with_scan_outputs(device, elem, dtype):
    rng = np.random.default_rng(1)
    m = scaled_sum_model(4, elem)
    assert "Loop" not in op_counts(m)
    x = (rng.standard_normal((2, 3)) * 4).astype(dtype)
    w = (rng.standard_normal((2, 3)) * 4).astype(dtype)
    y, ys = run(m, {"x": x, "w": w}, device)
    want_y, want_ys = scaled_sum_numpy(x, w, 4)
    assert y.dtype == dtype and ys.shape == (4, 2, 3)
    np.testing.assert_allclose(y, want_y, rtol=1e-6)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-6)


@pytest.mark.parametrize("trips", [0, 1, 150])
def test_zero_one_and_many_iterations(trips):
    """No iteration gives the initial values and an empty scan; 150 goes past 64 pieces."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3)).astype(np.float32)
    y, ys = run(scaled_sum_model(trips), {"x": x, "w": w})
    want_y, want_ys = scaled_sum_numpy(x, w, trips)
    assert ys.shape == (trips, 2, 3)
    np.testing.assert_allclose(y, want_y, rtol=1e-6)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-6)


def counter_model(m_value=None, limit=5, first_cond=True):
    """A while-loop on a counter: k += 1, x = x * 2 - 1, keep going while k < limit; M
    given or not, the first cond a constant."""
    b = body([h.make_node("Add", ["k", "one"], ["k_out"]),
              h.make_node("Less", ["k_out", "limit"], ["c_out"]),
              h.make_node("Mul", ["v", "two"], ["v2"]),
              h.make_node("Sub", ["v2", "onef"], ["v_out"]),
              h.make_node("Identity", ["i"], ["i_scan"])],
             [("i", T.INT64), ("c", T.BOOL), ("k", T.INT64), ("v", T.FLOAT)],
             [("c_out", T.BOOL), ("k_out", T.INT64), ("v_out", T.FLOAT), ("i_scan", T.INT64)])
    inits = [h.make_tensor("k0", T.INT64, [], [0]), h.make_tensor("one", T.INT64, [], [1]),
             h.make_tensor("limit", T.INT64, [], [limit]),
             h.make_tensor("two", T.FLOAT, [], [2.0]), h.make_tensor("onef", T.FLOAT, [], [1.0]),
             h.make_tensor("cond0", T.BOOL, [], [first_cond])]
    if m_value is not None:
        inits.append(h.make_tensor("M", T.INT64, [1], [m_value]))
    node = h.make_node("Loop", ["M" if m_value is not None else "", "cond0", "k0", "x"],
                       ["k", "y", "iters"], name="while_loop", body=b)
    return model([node], [vi("x", T.FLOAT, [3])],
                 [vi("k", T.INT64), vi("y", T.FLOAT), vi("iters", T.INT64)], inits)


@pytest.mark.parametrize("m_value,limit,first_cond,trips", [
    (None, 5, True, 5),    # cond only
    (10, 3, True, 3),      # both, cond stops first
    (2, 5, True, 2),       # both, M stops first
    (None, 5, False, 0),   # cond false from the start
    (-1, 5, True, 0),      # a negative trip count runs nothing
])
def test_while_loops_on_a_counter(m_value, limit, first_cond, trips):
    x = np.array([0.5, 2.0, -1.0], np.float32)
    m = counter_model(m_value, limit, first_cond)
    assert "Loop" not in op_counts(m)
    for device in DEVICES:
        k, y, iters = run(m, {"x": x}, device)
        want = x.copy()
        for _ in range(trips):
            want = want * 2 - 1
        assert int(k) == trips
        np.testing.assert_allclose(y, want, rtol=1e-6)
        np.testing.assert_array_equal(iters, np.arange(trips))


def captures_model():
    """The body reads an outer input (w), an initializer (bias) and an outer node's output
    (s = x.sum()); M comes from x's symbolic first dim (Shape -> Gather), so the loop unrolls
    at plan time, and the body gathers row iter_num of x."""
    b = body([h.make_node("Gather", ["x", "i"], ["row"], axis=0),
              h.make_node("Mul", ["row", "w"], ["rw"]),
              h.make_node("Add", ["acc", "rw"], ["a1"]),
              h.make_node("Add", ["a1", "bias"], ["a2"]),
              h.make_node("Add", ["a2", "s"], ["acc_out"]),
              h.make_node("Identity", ["c"], ["c_out"])],
             [("i", T.INT64), ("c", T.BOOL), ("acc", T.FLOAT)],
             [("c_out", T.BOOL), ("acc_out", T.FLOAT)])
    nodes = [h.make_node("Shape", ["x"], ["shape"]),
             h.make_node("Gather", ["shape", "zero"], ["n"]),
             h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             h.make_node("Loop", ["n", "", "acc0"], ["y"], name="rows", body=b)]
    inits = [h.make_tensor("zero", T.INT64, [], [0]),
             h.make_tensor("bias", T.FLOAT, [3], [0.5, -1.0, 2.0]),
             h.make_tensor("acc0", T.FLOAT, [3], [0.0, 0.0, 0.0])]
    return model(nodes, [vi("x", T.FLOAT, ["n", 3]), vi("w", T.FLOAT, [3])], [vi("y", T.FLOAT)],
                 inits)


def test_outer_scope_captures_and_a_symbolic_trip_count():
    rng = np.random.default_rng(3)
    w = rng.standard_normal(3).astype(np.float32)
    for device in DEVICES:
        sess = tessera.Session(captures_model(), device=device, threads=1)
        for n in (1, 4, 0, 4):
            x = rng.standard_normal((n, 3)).astype(np.float32)
            (y,) = sess.run(None, {"x": x, "w": w})
            want = np.zeros(3, np.float32)
            for i in range(n):
                want = want + x[i] * w + [0.5, -1.0, 2.0] + x.sum()
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def nested_model():
    """out = (n == 1) ? Loop_3(v -> v * 2 + If(iter_num == 1, v, 0)) : x: a Loop in an If
    branch, an If in the Loop's body reading the body's own values."""
    inner_then = h.make_graph([h.make_node("Identity", ["v"], ["t"])], "t", [], [vi("t", T.FLOAT)])
    inner_else = h.make_graph([h.make_node("Mul", ["v", "zerof"], ["e"])], "e", [],
                              [vi("e", T.FLOAT)])
    b = body([h.make_node("Equal", ["i", "onei"], ["is_one"]),
              h.make_node("If", ["is_one"], ["extra"], then_branch=inner_then,
                          else_branch=inner_else),
              h.make_node("Mul", ["v", "twof"], ["v2"]),
              h.make_node("Add", ["v2", "extra"], ["v_out"]),
              h.make_node("Identity", ["c"], ["c_out"])],
             [("i", T.INT64), ("c", T.BOOL), ("v", T.FLOAT)],
             [("c_out", T.BOOL), ("v_out", T.FLOAT)])
    then_g = h.make_graph([h.make_node("Loop", ["three", "", "x"], ["lo"], body=b)], "then", [],
                          [vi("lo", T.FLOAT)])
    else_g = h.make_graph([h.make_node("Identity", ["x"], ["xo"])], "else", [],
                          [vi("xo", T.FLOAT)])
    nodes = [h.make_node("Shape", ["x"], ["shape"]),
             h.make_node("Gather", ["shape", "zeroi"], ["n"]),
             h.make_node("Equal", ["n", "onei"], ["n_is_1"]),
             h.make_node("If", ["n_is_1"], ["out"], then_branch=then_g, else_branch=else_g)]
    inits = [h.make_tensor("zeroi", T.INT64, [], [0]), h.make_tensor("onei", T.INT64, [], [1]),
             h.make_tensor("three", T.INT64, [], [3]), h.make_tensor("zerof", T.FLOAT, [], [0.0]),
             h.make_tensor("twof", T.FLOAT, [], [2.0])]
    return model(nodes, [vi("x", T.FLOAT, ["n", 2])], [vi("out", T.FLOAT)], inits, opset=11)


def test_loop_in_if_and_if_in_loop():
    rng = np.random.default_rng(4)
    for device in DEVICES:
        sess = tessera.Session(nested_model(), device=device, threads=1)
        for n in (1, 3, 1):
            x = rng.standard_normal((n, 2)).astype(np.float32)
            (got,) = sess.run(None, {"x": x})
            want = x
            if n == 1:
                for i in range(3):
                    want = want * 2 + (want if i == 1 else 0)
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_trip_count_and_cond_found_at_run_time():
    """M = the sum of an int64 input, cond = a float input > 0: both known only from the
    values, so a plan's tail unrolls the loop, once per value seen."""
    b = body([h.make_node("Mul", ["v", "twof"], ["v_out"]),
              h.make_node("Identity", ["c"], ["c_out"]),
              h.make_node("Identity", ["v"], ["seen"])],
             [("i", T.INT64), ("c", T.BOOL), ("v", T.FLOAT)],
             [("c_out", T.BOOL), ("v_out", T.FLOAT), ("seen", T.FLOAT)])
    nodes = [h.make_node("ReduceSum", ["counts"], ["M"], keepdims=0),
             h.make_node("Greater", ["gate", "zerof"], ["go"]),
             h.make_node("Loop", ["M", "go", "x"], ["y", "ys"], name="data_loop", body=b)]
    m = model(nodes, [vi("counts", T.INT64, [2]), vi("gate", T.FLOAT, []),
                      vi("x", T.FLOAT, [3])], [vi("y", T.FLOAT), vi("ys", T.FLOAT)],
              [h.make_tensor("twof", T.FLOAT, [], [2.0]),
               h.make_tensor("zerof", T.FLOAT, [], [0.0])])
    x = np.array([1.0, -2.0, 0.5], np.float32)
    for device in DEVICES:
        sess = tessera.Session(m, device=device, threads=1)
        for counts, gate in (([1, 2], 1.0), ([0, 0], 1.0), ([2, 3], -1.0), ([1, 2], 1.0)):
            trips = sum(counts) if gate > 0 else 0
            y, ys = sess.run(None, {"counts": np.array(counts, np.int64),
                                    "gate": np.float32(gate), "x": x})
            np.testing.assert_allclose(y, x * 2.0 ** trips)
            assert ys.shape == (trips, 3)
            np.testing.assert_allclose(ys, np.reshape([x * 2.0 ** t for t in range(trips)],
                                                      (trips, 3)))


class ScriptedLoops(torch.nn.Module):
    """A for-loop over the rows of x (trip count from x's size) and a while-loop on a
    counter, as torch.jit.script exports them."""

    def forward(self, x):
        acc = torch.zeros_like(x[0])
        for i in range(x.size(0)):
            acc = acc * 0.5 + torch.tanh(x[i])
        k = 0
        y = x
        while k < 3:
            y = y * 1.5 - acc
            k += 1
        return acc, y


def test_torch_scripted_loops_against_pytorch():
    module = torch.jit.script(ScriptedLoops())
    buf = io.BytesIO()
    torch.onnx.export(module, torch.zeros(4, 5), buf, input_names=["x"], opset_version=13,
                      dynamic_axes={"x": {0: "n"}})
    import onnx
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert ops.count("Loop") == 2
    rng = np.random.default_rng(5)
    for device in DEVICES:
        sess = tessera.Session(buf.getvalue(), device=device, threads=1)
        for n in (4, 1, 7):
            x = rng.standard_normal((n, 5)).astype(np.float32)
            got = sess.run(None, {"x": x})
            want = ScriptedLoops()(torch.from_numpy(x))
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-6)


def gradient_model():
    """Three iterations of v = tanh(v * w + iter_num), scan v * v; float64."""
    b = body([h.make_node("Mul", ["v", "w"], ["vw"]),
              h.make_node("Cast", ["i"], ["fi"], to=T.DOUBLE),
              h.make_node("Add", ["vw", "fi"], ["pre"]),
              h.make_node("Tanh", ["pre"], ["v_out"]),
              h.make_node("Mul", ["v_out", "v_out"], ["sq"]),
              h.make_node("Identity", ["c"], ["c_out"])],
             [("i", T.INT64), ("c", T.BOOL), ("v", T.DOUBLE)],
             [("c_out", T.BOOL), ("v_out", T.DOUBLE), ("sq", T.DOUBLE)])
    return model([h.make_node("Loop", ["M", "", "x"], ["y", "ys"], body=b)],
                 [vi("x", T.DOUBLE, [2, 3]), vi("w", T.DOUBLE, [2, 3])],
                 [vi("y", T.DOUBLE), vi("ys", T.DOUBLE)], [h.make_tensor("M", T.INT64, [], [3])])


def test_gradient_of_an_unrolled_loop_against_finite_differences():
    rng = np.random.default_rng(6)
    g = tsr.Graph.load_bytes(gradient_model())
    gg = tsr.gradient(g, ["y", "ys"], ["x", "w"])
    x, w = rng.standard_normal((2, 3)) * 0.5, rng.standard_normal((2, 3))
    seed_y, seed_ys = rng.standard_normal((2, 3)), rng.standard_normal((3, 2, 3))
    _, _, gx, gw = gg.run([x, w, seed_y, seed_ys])

    def loss(x, w):
        y, ys = g.run([x, w])
        return float((y * seed_y).sum() + (ys * seed_ys).sum())

    eps = 1e-6
    for got, which in ((gx, 0), (gw, 1)):
        want = np.zeros((2, 3))
        for k in np.ndindex(2, 3):
            args_p, args_m = [x.copy(), w.copy()], [x.copy(), w.copy()]
            args_p[which][k] += eps
            args_m[which][k] -= eps
            want[k] = (loss(*args_p) - loss(*args_m)) / (2 * eps)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def identity_body(n_carried=1):
    names = [f"v{k}" for k in range(n_carried)]
    return body([h.make_node("Identity", ["c"], ["c_out"])] +
                [h.make_node("Identity", [n], [n + "_out"]) for n in names],
                [("i", T.INT64), ("c", T.BOOL)] + [(n, T.FLOAT) for n in names],
                [("c_out", T.BOOL)] + [(n + "_out", T.FLOAT) for n in names])


def test_malformed_loops_name_the_node():
    inits = [h.make_tensor("M", T.INT64, [], [2])]
    x = [vi("x", T.FLOAT, [2])]
    cases = [
        (h.make_node("Loop", ["M", "", "x", "x"], ["y"], name="arity_loop",
                     body=identity_body(1)), "arity_loop.*body takes 3 inputs"),
        (h.make_node("Loop", ["M", "", "x"], ["y", "z"], name="outputs_loop",
                     body=identity_body(1)), "outputs_loop.*outputs"),
        (h.make_node("Loop", ["M", "", "x"], ["y"], name="bodiless_loop"),
         "bodiless_loop.*body"),
        (h.make_node("Loop", ["x", "", "x"], ["y"], name="float_trips", body=identity_body(1)),
         "float_trips"),
    ]
    for node, message in cases:
        with pytest.raises(tessera.Error, match=message):
            tessera.Session(model([node], x, [vi("y", T.FLOAT)], inits), device="ref")
    bad_cond = body([h.make_node("Cast", ["c"], ["c_out"], to=T.FLOAT),
                     h.make_node("Identity", ["v"], ["v_out"])],
                    [("i", T.INT64), ("c", T.BOOL), ("v", T.FLOAT)],
                    [("c_out", T.FLOAT), ("v_out", T.FLOAT)])
    with pytest.raises(tessera.Error, match="float_cond.*int64, bool and bool"):
        tessera.Session(model([h.make_node("Loop", ["M", "", "x"], ["y"], name="float_cond",
                                           body=bad_cond)], x, [vi("y", T.FLOAT)], inits))


def test_loops_that_cannot_unroll_are_refused():
    """A loop whose cond never turns false stops at the cap; one whose cond depends on a
    large value known only at run time is refused naming the node."""
    forever = model([h.make_node("Loop", ["", "", "x"], ["y"], name="forever",
                                 body=identity_body(1))],
                    [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT)])
    with pytest.raises(tessera.UnsupportedError, match="forever.*4096 iterations"):
        tessera.Session(forever, device="ref")
    b = body([h.make_node("ReduceSum", ["v"], ["total"], keepdims=0),
              h.make_node("Less", ["total", "hundred"], ["c_out"]),
              h.make_node("Mul", ["v", "twof"], ["v_out"])],
             [("i", T.INT64), ("c", T.BOOL), ("v", T.FLOAT)],
             [("c_out", T.BOOL), ("v_out", T.FLOAT)])
    data_cond = model([h.make_node("Loop", ["", "", "x"], ["y"], name="until_large", body=b)],
                      [vi("x", T.FLOAT, [100])], [vi("y", T.FLOAT)],
                      [h.make_tensor("hundred", T.FLOAT, [], [100.0]),
                       h.make_tensor("twof", T.FLOAT, [], [2.0])])
    with pytest.raises(tessera.UnsupportedError,
                       match="until_large.*condition 'c_out' after iteration 0.*run"):
        tessera.Session(data_cond, device="ref")


def test_gradient_reaches_a_parameter_the_body_reads():
    """An initializer the body reads stays one parameter: its gradient sums the iterations'.
    A Loop left whole (trip count from a symbolic dim) is refused by name."""
    b = body([h.make_node("Mul", ["v", "W"], ["v_out"]),
              h.make_node("Identity", ["c"], ["c_out"])],
             [("i", T.INT64), ("c", T.BOOL), ("v", T.DOUBLE)],
             [("c_out", T.BOOL), ("v_out", T.DOUBLE)])
    w = np.array([0.5, 2.0, -1.0])
    m = model([h.make_node("Loop", ["M", "", "x"], ["y"], body=b)], [vi("x", T.DOUBLE, [3])],
              [vi("y", T.DOUBLE)],
              [h.make_tensor("M", T.INT64, [], [3]), h.make_tensor("W", T.DOUBLE, [3], w)])
    gg = tsr.gradient(tsr.Graph.load_bytes(m), ["y"], ["W"])
    x, seed = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    y, gw = gg.run([x, seed])
    np.testing.assert_allclose(y, x * w ** 3)
    np.testing.assert_allclose(gw, 3 * w ** 2 * x * seed)
    with pytest.raises(tessera.Error, match="'rows' \\(Loop\\)"):
        tsr.gradient(tsr.Graph.load_bytes(captures_model()), ["y"], ["w"])

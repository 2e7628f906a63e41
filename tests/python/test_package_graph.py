"""tessera.Graph and tessera.Plan (python/tessera/graph.py) as users build and run
graphs op by op: Plan.run on numpy arrays or torch tensors returns new arrays equal to
numpy's result and to the low-level run on Tensor arrays; models without inputs run
(through Plan and Session); verbose plans log the kernel each node got; gradient graphs
keep the class of the graph they came from."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

import tessera
from tessera import _capi

RNG = np.random.default_rng(23)


def affine_graph():
    """y = Relu(x @ W + b), z = Exp(x); x: [batch, 7], W: [7, 5] constant."""
    w = RNG.standard_normal((7, 5)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float32)
    g = tessera.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, ["batch", 7])
    g.add_constant("W", w)
    g.add_constant("b", b)
    g.add_node("MatMul", ["x", "W"], ["m"], name="matmul")
    g.add_node("Add", ["m", "b"], ["a"])
    g.add_node("Relu", ["a"], ["y"])
    g.add_node("Exp", ["x"], ["z"])
    g.add_output("y")
    g.add_output("z")
    return g, w, b


@pytest.mark.parametrize("batch", [1, 3, 10])
def test_run_on_arrays_returns_new_outputs(batch):
    g, w, b = affine_graph()
    plan = tessera.Plan(g, device="ref", threads=1)
    x = RNG.standard_normal((batch, 7)).astype(np.float32)
    y, z = plan.run([x])
    np.testing.assert_allclose(y, np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, np.exp(x), rtol=1e-6)
    again, _ = plan.run([x])
    assert again is not y and np.array_equal(again, y)
    ins = _capi.tensor_array([_capi.tensor_of(x)])
    outs = [np.empty(shape, dt) for dt, shape in plan.reshape(ins)]
    plan.run(ins, _capi.tensor_array([_capi.tensor_of(o) for o in outs]))
    assert np.array_equal(outs[0], y) and np.array_equal(outs[1], z)


def test_run_reads_torch_tensors_and_strided_arrays():
    g, w, b = affine_graph()
    plan = tessera.Plan(g, device="ref", threads=1)
    x = RNG.standard_normal((4, 14)).astype(np.float32)[:, ::2]
    want = np.maximum(x @ w + b, 0)
    np.testing.assert_allclose(plan.run([x])[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plan.run([torch.from_numpy(x)])[0], want, rtol=1e-5, atol=1e-6)


def test_run_errors_name_the_problem():
    g, _, _ = affine_graph()
    plan = tessera.Plan(g, device="ref", threads=1)
    with pytest.raises(tessera.InvalidArgumentError, match="1 input"):
        plan.run([])
    with pytest.raises(tessera.ShapeError):
        plan.run([np.ones((2, 6), np.float32)])
    with pytest.raises(TypeError, match="float16"):
        plan.run([np.ones((2, 7), np.float16)])


def test_models_without_inputs_run(tmp_path):
    c = RNG.standard_normal((2, 3)).astype(np.float32)
    g = tessera.Graph()
    g.add_constant("c", c)
    g.add_node("Neg", ["c"], ["y"])
    g.add_output("y")
    (y,) = tessera.Plan(g, device="ref").run([])
    assert np.array_equal(y, -c)
    node = helper.make_node("Constant", [], ["y"], value_floats=[1.5, -2.0])
    model = helper.make_model(helper.make_graph(
        [node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 13)])
    (y,) = tessera.Session(model.SerializeToString(), device="ref").run(None, {})
    assert np.array_equal(y, np.array([1.5, -2.0], np.float32))


def test_verbose_plans_log_each_nodes_kernel(capfd):
    g, _, _ = affine_graph()
    capfd.readouterr()
    tessera.Plan(g, device="ref", threads=1, verbose=True).run([np.ones((2, 7), np.float32)])
    log = capfd.readouterr().err
    assert "matmul" in log
    tessera.Plan(g, device="ref", threads=1).run([np.ones((2, 7), np.float32)])
    assert "matmul" not in capfd.readouterr().err


def test_gradient_keeps_the_graph_class():
    class Mine(tessera.Graph):
        pass

    g = Mine()
    g.add_input("x", np.float64, [3])
    g.add_node("Mul", ["x", "x"], ["y"])
    g.add_output("y")
    gg = g.gradient(["y"], ["x"])
    assert type(gg) is Mine
    x = RNG.standard_normal(3)
    seed = RNG.standard_normal(3)
    y, dx = tessera.Plan(gg, device="ref").run([x, seed])
    np.testing.assert_allclose(dx, 2 * x * seed, rtol=1e-12)

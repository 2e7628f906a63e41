"""The fuse_layernorm pass (src/passes/fuse_layernorm.c) and the cpu backend's
LayerNormalization: torch's nn.LayerNorm exported below opset 17 (nine nodes) becomes one
LayerNormalization node, run by the cpu backend; chains the pass must leave alone (a value of
the chain read elsewhere, other exponents or axes, a per-row scale) run unfused and still right;
the kernel against ref on random shapes and axes, with and without a bias, on every ISA."""

import io

import numpy as np
import pytest

import tsr
from test_cpu_kernels import isa_params

torch = pytest.importorskip("torch")


def profiled_ops(plan, feeds):
    """{op type: backends} of the plan's steps after one profiled run, and the outputs."""
    plan.set_profiling(True)
    outs = plan.run(feeds)
    ops = {}
    for line in plan.profile_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0].isdigit():
            ops.setdefault(fields[4], set()).add(fields[3].split("/")[0])
    return ops, outs


def export(module, x, opset):
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.from_numpy(x),), buf, opset_version=opset,
                      input_names=["x"], output_names=["y"])
    return tsr.Graph.load_bytes(buf.getvalue())


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("shape,normalized", [((4, 7, 128), (128,)), ((3, 37), (37,)),
                                              ((2, 5, 6, 9), (6, 9)), ((2, 3, 1), (1,))])
def test_torch_layernorm_is_fused_and_matches(opset, shape, normalized):
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(normalized, eps=1e-5 if opset == 13 else 1e-3)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 3 + 1
    graph = export(ln, x, opset)
    # Against float64: over one element, float32 torch's x - mean is rounding noise, which
    # 1/sqrt(eps) amplifies to 1e-4; the exact answer is the bias.
    want = ln.double()(torch.from_numpy(x).double()).detach().numpy()
    ops, (got,) = profiled_ops(tsr.Plan(graph, device="cpu", threads=2), [x])
    assert ops.get("LayerNormalization") == {"cpu"}, ops
    assert "ReduceMean" not in ops and "Pow" not in ops, ops
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_float64_layernorm_is_fused_and_exact():
    ln = torch.nn.LayerNorm(33).double()
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = np.random.default_rng(2).standard_normal((5, 33))
    want = ln(torch.from_numpy(x)).detach().numpy()
    ops, (got,) = profiled_ops(tsr.Plan(export(ln, x, 13), device="cpu", threads=2), [x])
    assert ops.get("LayerNormalization") == {"ref"}, ops
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_layernorm_without_affine_is_left_alone():
    """No scale Mul: nothing to give LayerNormalization's required scale, so no fusion."""
    ln = torch.nn.LayerNorm(16, elementwise_affine=False)
    x = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    ops, (got,) = profiled_ops(tsr.Plan(export(ln, x, 13), device="cpu", threads=2), [x])
    assert "LayerNormalization" not in ops and "ReduceMean" in ops, ops
    np.testing.assert_allclose(got, ln(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def decomposed(shape, axes=(-1,), exponent=2.0, scale_shape=None, extra_output=None,
               bias=True):
    """The chain as torch writes it, by hand, with one thing changed per test."""
    rng = np.random.default_rng(4)
    g = tsr.Graph()
    g.set_opset(13)
    g.add_input("x", np.float32, list(shape))
    g.add_constant("two", np.array(exponent, np.float32))
    g.add_constant("eps", np.array(1e-5, np.float32))
    scale_shape = scale_shape or shape[-1:]
    g.add_constant("scale", rng.standard_normal(scale_shape).astype(np.float32))
    g.add_constant("bias", rng.standard_normal(shape[-1:]).astype(np.float32))
    mean = {"axes": list(axes), "keepdims": 1}
    g.add_node("ReduceMean", ["x"], ["m"], mean)
    g.add_node("Sub", ["x", "m"], ["d"])
    g.add_node("Pow", ["d", "two"], ["p"])
    g.add_node("ReduceMean", ["p"], ["v"], mean)
    g.add_node("Add", ["v", "eps"], ["e"])
    g.add_node("Sqrt", ["e"], ["s"])
    g.add_node("Div", ["d", "s"], ["n"])
    g.add_node("Mul", ["n", "scale"], ["ys" if bias else "y"])
    if bias:
        g.add_node("Add", ["ys", "bias"], ["y"])
    g.add_output("y")
    if extra_output:
        g.add_output(extra_output)
    return g


@pytest.mark.parametrize("case", ["fused", "no_bias", "deviation_read_elsewhere",
                                  "variance_read_elsewhere", "cube", "leading_axis",
                                  "per_row_scale"])
def test_decomposed_chains(case):
    shape = (6, 5, 24)
    kwargs, fused = {
        "fused": ({}, True),
        "no_bias": ({"bias": False}, True),
        "deviation_read_elsewhere": ({"extra_output": "d"}, False),
        "variance_read_elsewhere": ({"extra_output": "v"}, False),
        "cube": ({"exponent": 3.0}, False),
        "leading_axis": ({"axes": (1,)}, False),
        "per_row_scale": ({"scale_shape": (5, 24)}, False),
    }[case]
    g = decomposed(shape, **kwargs)
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    ops, got = profiled_ops(tsr.Plan(g, device="cpu", threads=2), [x])
    want = tsr.Plan(g, device="ref").run([x])
    assert ("LayerNormalization" in ops) == fused, ops
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def layernorm_graph(shape, axis, bias, scale_shape=None):
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, list(shape))
    g.add_input("scale", np.float32, list(scale_shape or shape[axis:]))
    inputs = ["x", "scale"]
    if bias:
        g.add_input("bias", np.float32, list(shape[axis:]))
        inputs.append("bias")
    g.add_node("LayerNormalization", inputs, ["y"], {"axis": axis, "epsilon": 1e-4}, name="op")
    g.add_output("y")
    return g


@pytest.mark.parametrize("isa", isa_params())
def test_cpu_kernel_matches_ref(isa, monkeypatch):
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(6)
    for _ in range(12):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(d) for d in rng.choice([1, 3, 8, 17, 33, 64], rank))
        axis = int(rng.integers(-rank, rank))
        bias = bool(rng.integers(2))
        g = layernorm_graph(shape, axis, bias)
        norm = shape[axis:]
        feeds = [rng.standard_normal(shape).astype(np.float32) * 4 + 2,
                 rng.standard_normal(norm).astype(np.float32)]
        if bias:
            feeds.append(rng.standard_normal(norm).astype(np.float32))
        plan = tsr.Plan(g, device="cpu", threads=2)
        got = plan.run(feeds)[0]
        assert plan.node_backend("op") == "cpu"
        want = tsr.Plan(g, device="ref").run(feeds)[0]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5,
                                   err_msg=f"{shape} axis {axis} bias {bias}")


def test_broadcast_scale_runs_on_ref():
    g = layernorm_graph((4, 6), -1, False, scale_shape=(1,))
    x = np.random.default_rng(7).standard_normal((4, 6)).astype(np.float32)
    feeds = [x, np.array([2.0], np.float32)]
    plan = tsr.Plan(g, device="cpu", threads=2)
    got = plan.run(feeds)[0]
    assert plan.node_backend("op") == "ref"
    np.testing.assert_allclose(got, tsr.Plan(g, device="ref").run(feeds)[0], rtol=1e-6)

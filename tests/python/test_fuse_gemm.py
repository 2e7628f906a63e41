"""The fuse_gemm pass (src/passes/fuse_gemm.c): Add(MatMul(A, B), C) of two-dimensional A and
B becomes Gemm(A, B, C), run by oneDNN with C as a bias (one row) or accumulated onto in place
(a C of the product's shape, read last there, lends its buffer); chains of such sums, as reverse
mode writes them, accumulate in one buffer; the few-rows matrix-vector path reads its C before
overwriting it; float64 runs on the cpu backend's kernel, accumulating in place too; patterns
the pass must leave alone run unfused. Every answer against numpy in float64 and the ref
device.""" 

import numpy as np
import pytest

import tsr
from test_fuse_layernorm import profiled_ops


def _graph():
    g = tsr.Graph()
    g.set_opset(17)
    return g


def _check(g, feeds, want, rtol=1e-5):
    ops, got = profiled_ops(tsr.Plan(g, device="cpu", threads=2), feeds)
    ref = tsr.Plan(g, device="ref").run(feeds)
    for y, w, r in zip(got, want, ref):
        scale = float(np.max(np.abs(w))) or 1.0
        np.testing.assert_allclose(y, w, rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(r, w, rtol=rtol, atol=rtol * scale)
    return ops


C_SHAPES = ["MN", "N", "1N", "M1", "scalar"]


@pytest.mark.parametrize("c_form", C_SHAPES)
@pytest.mark.parametrize("c_left", [False, True])
@pytest.mark.parametrize("m, k, n", [(37, 19, 23), (1, 64, 9), (130, 7, 65)])
def test_matmul_add_is_one_gemm(m, k, n, c_form, c_left):
    rng = np.random.default_rng([m, k, n, C_SHAPES.index(c_form), int(c_left)])
    c_shape = {"MN": (m, n), "N": (n,), "1N": (1, n), "M1": (m, 1), "scalar": ()}[c_form]
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = rng.standard_normal(c_shape).astype(np.float32)
    g = _graph()
    g.add_input("a", np.float32, [m, k])
    g.add_input("b", np.float32, [k, n])
    feeds = [a, b]
    if c_form in ("N", "scalar"):
        g.add_constant("c", c)
    else:
        g.add_input("c", np.float32, list(c_shape))
        feeds.append(c)
    g.add_node("MatMul", ["a", "b"], ["p"])
    g.add_node("Add", ["c", "p"] if c_left else ["p", "c"], ["y"])
    g.add_output("y")
    want = a.astype(np.float64) @ b.astype(np.float64) + c
    ops = _check(g, feeds, [want])
    assert ops.get("Gemm") == {"dnnl"}, ops
    assert "MatMul" not in ops and "Add" not in ops, ops


def test_sum_of_products_accumulates_in_place(capfd, monkeypatch):
    """acc = A1 B1 + A2 B2 + A3 B3 + A4 B4, as the gradient of a value read by four MatMuls:
    three Gemms, each taking over the buffer of the sum before it."""
    monkeypatch.setenv("TSR_VERBOSE", "1")
    rng = np.random.default_rng(7)
    m, n, ks = 301, 33, [17, 64, 5, 40]
    g = _graph()
    feeds, want = [], np.zeros((m, n))
    for i, k in enumerate(ks):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        g.add_input(f"a{i}", np.float32, [m, k])
        g.add_constant(f"b{i}", b)
        g.add_node("MatMul", [f"a{i}", f"b{i}"], [f"p{i}"])
        feeds.append(a)
        want += a.astype(np.float64) @ b.astype(np.float64)
    g.add_node("Add", ["p0", "p1"], ["s1"])
    g.add_node("Add", ["s1", "p2"], ["s2"])
    g.add_node("Add", ["p3", "s2"], ["y"])
    g.add_output("y")
    capfd.readouterr()
    ops = _check(g, feeds, [want])
    err = capfd.readouterr().err
    assert ops.get("Gemm") == {"dnnl"} and "Add" not in ops, ops
    assert err.count("takes over the buffer") >= 2, err


def test_matvec_path_in_place(capfd, monkeypatch):
    """Two rows against a B too large for the caches run on the matrix-vector path; its C is
    a value before it, whose buffer the output takes over."""
    monkeypatch.setenv("TSR_VERBOSE", "1")
    rng = np.random.default_rng(8)
    m, k, n = 2, 1024, 3072
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = (rng.standard_normal((k, n)) / 32).astype(np.float32)
    a2 = rng.standard_normal((m, 24)).astype(np.float32)
    b2 = rng.standard_normal((24, n)).astype(np.float32)
    g = _graph()
    g.add_input("a", np.float32, [m, k])
    g.add_input("a2", np.float32, [m, 24])
    g.add_constant("b", b)
    g.add_input("b2", np.float32, [24, n])
    g.add_node("MatMul", ["a2", "b2"], ["c"])
    g.add_node("Relu", ["c"], ["r"])
    g.add_node("MatMul", ["a", "b"], ["p"])
    g.add_node("Add", ["p", "r"], ["y"])
    g.add_node("Neg", ["y"], ["z"])
    g.add_output("z")
    want = -(a.astype(np.float64) @ b + np.maximum(a2.astype(np.float64) @ b2, 0))
    capfd.readouterr()
    plan = tsr.Plan(g, device="cpu", threads=2)
    plan.set_profiling(True)
    got = plan.run([a, a2, b2])[0]
    err = capfd.readouterr().err
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    steps = [line.split() for line in plan.profile_text().splitlines()]
    assert any(len(f) >= 6 and f[4] == "Gemm" and "matvec" in f[3] for f in steps), steps
    assert "'y' takes over the buffer of 'r'" in err, err


def test_patterns_left_alone_stay_right():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((11, 6)).astype(np.float32)
    b = rng.standard_normal((6, 13)).astype(np.float32)
    a3 = rng.standard_normal((2, 11, 6)).astype(np.float32)
    c3 = rng.standard_normal((2, 11, 13)).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    # The product read twice.
    g = _graph()
    g.add_input("a", np.float32, [11, 6])
    g.add_constant("b", b)
    g.add_node("MatMul", ["a", "b"], ["p"])
    g.add_node("Add", ["p", "p"], ["y"])
    g.add_node("Sigmoid", ["p"], ["z"])
    g.add_output("y")
    g.add_output("z")
    ops = _check(g, [a], [2 * (a64 @ b64), 1 / (1 + np.exp(-(a64 @ b64)))])
    assert "Gemm" not in ops and "Add" in ops, ops
    # A batched product, and a C that broadcasts the product to a larger shape.
    g = _graph()
    g.add_input("a3", np.float32, [2, 11, 6])
    g.add_input("a", np.float32, [11, 6])
    g.add_input("c3", np.float32, [2, 11, 13])
    g.add_constant("b", b)
    g.add_node("MatMul", ["a3", "b"], ["p3"])
    g.add_node("Add", ["p3", "c3"], ["y3"])
    g.add_node("MatMul", ["a", "b"], ["p"])
    g.add_node("Add", ["p", "c3"], ["y"])
    g.add_output("y3")
    g.add_output("y")
    ops = _check(g, [a3, a, c3], [a3.astype(np.float64) @ b64 + c3, a64 @ b64 + c3])
    assert "Gemm" not in ops, ops


@pytest.mark.parametrize("isa", ["", "avx2", "portable"])
def test_float64_accumulates_in_place(isa, capfd, monkeypatch):
    """float64: the cpu backend's own kernel runs Gemm with C of the product's shape,
    accumulating onto it (in place along a chain of sums, onto a copy of a graph input), at
    odd sizes and every ISA; a C that broadcasts stays MatMul and Add there."""
    monkeypatch.setenv("TSR_VERBOSE", "1")
    if isa:
        monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(10)
    m, n, ks = 29, 13, [5, 17, 3]
    g = _graph()
    feeds, bs, want = [], [], np.zeros((m, n))
    for i, k in enumerate(ks):
        a = rng.standard_normal((m, k))
        bs.append(rng.standard_normal((k, n)))
        g.add_input(f"a{i}", np.float64, [m, k])
        g.add_constant(f"b{i}", bs[-1])
        g.add_node("MatMul", [f"a{i}", f"b{i}"], [f"p{i}"])
        feeds.append(a)
        want += a @ bs[-1]
    c = rng.standard_normal((m, n))
    g.add_input("c", np.float64, [m, n])
    feeds.append(c)
    g.add_node("Add", ["p0", "c"], ["s0"])
    g.add_node("Add", ["p1", "s0"], ["s1"])
    g.add_node("Add", ["s1", "p2"], ["y"])
    g.add_output("y")
    row = rng.standard_normal(n)
    g.add_constant("row", row)
    g.add_node("MatMul", ["a0", "b0"], ["q"])
    g.add_node("Add", ["q", "row"], ["z"])
    g.add_output("z")
    capfd.readouterr()
    ops = _check(g, feeds, [want + c, feeds[0] @ bs[0] + row], rtol=1e-12)
    assert ops.get("Gemm") == {"cpu"} and ops.get("Add") == {"cpu"}, ops
    err = capfd.readouterr().err
    assert "'s1' takes over the buffer of 's0'" in err, err

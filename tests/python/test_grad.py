"""Reverse-mode autodiff (tsr_graph_gradient) against central finite differences in float64:
for every op with a gradient rule the gradient of sum(output * seed), then the gradient graph
differentiated again, with respect to all its inputs (the op's and the seeds): the gradient of
<gradient, v> (Hessian-vector products and the mixed terms) and of the squared gradient norm;
plus torch.autograd on a few ops and the API's error cases."""

import numpy as np
import pytest

import tsr

EPS = 1e-6


def away(rng, shape, margin=0.1):
    """Values with |x| >= margin, so that finite differences never cross a kink at 0."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + margin, x - margin)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


class Case:
    """One node: float inputs listed in `wrt` are graph inputs, the rest constants."""

    def __init__(self, op, inputs, attrs=None, wrt=None, n_outputs=1, opset=17, domain="",
                 zero_gradient=False):
        self.op, self.inputs, self.attrs = op, inputs, attrs or {}
        self.zero_gradient = zero_gradient
        self.wrt = wrt if wrt is not None else [
            i for i, x in enumerate(inputs) if x is not None and x.dtype == np.float64]
        self.n_outputs, self.opset, self.domain = n_outputs, opset, domain

    def graph(self):
        g = tsr.Graph()
        g.set_opset(self.opset)
        names = []
        for i, x in enumerate(self.inputs):
            if x is None:
                names.append("")
                continue
            name = f"in{i}"
            if i in self.wrt:
                g.add_input(name, x.dtype, list(x.shape))
            else:
                g.add_constant(name, x)
            names.append(name)
        outs = [f"out{o}" for o in range(self.n_outputs)]
        g.add_node(self.op, names, outs, self.attrs, domain=self.domain, name="node0")
        for o in outs:
            g.add_output(o)
        return g, outs, [f"in{i}" for i in self.wrt]

    def feeds(self):
        return [self.inputs[i] for i in self.wrt]


def numeric_grad(f, xs, k):
    """Central differences of the scalar f(xs) with respect to xs[k]."""
    x = xs[k]
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = saved + EPS
        hi = f(xs)
        x[idx] = saved - EPS
        lo = f(xs)
        x[idx] = saved
        grad[idx] = (hi - lo) / (2 * EPS)
    return grad


def assert_close(got, want, what, rtol=1e-6):
    scale = max(np.max(np.abs(want)) if want.size else 0.0, 1e-3)
    err = np.max(np.abs(got - want)) if want.size else 0.0
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert err <= rtol * scale, f"{what}: max error {err:.3g} vs max |ref| {scale:.3g}"


def assert_checks_something(quantities, what):
    """A comparison of zeros with zeros passes whatever the rules do: the reference values
    must reach well past assert_close's floor."""
    scale = max(float(np.max(np.abs(q))) for q in quantities if q.size)
    assert scale > 1e-2, f"{what}: the reference values are all (nearly) zero, max {scale:.3g}"


def check_case(case, second_order=True):
    rng = np.random.default_rng(7)
    g, outs, wrt = case.graph()
    plan = tsr.Plan(g)
    xs = [np.array(x) for x in case.feeds()]
    ys = plan.run(xs)
    seeds = [rng.standard_normal(y.shape) for y in ys]

    def loss(values):
        return sum(float(np.sum(y * s)) for y, s in zip(plan.run(values), seeds))

    gg = tsr.gradient(g, outs, wrt)
    n_fwd = len(outs)
    firsts = [f"{w}__grad" for w in wrt]
    seed_names = [f"{o}__seed" for o in outs]
    assert [o[0] for o in gg.outputs()] == outs + firsts
    assert [i[0] for i in gg.inputs()] == wrt + seed_names
    grad_plan = tsr.Plan(gg)
    results = grad_plan.run(xs + seeds)
    want = [numeric_grad(loss, xs, k) for k in range(len(wrt))]
    for k, w in enumerate(wrt):
        assert_close(results[n_fwd + k], want[k], f"d/d{w}")
    if case.zero_gradient:
        assert all(not np.any(r) for r in results[n_fwd:]), "the gradient must be exactly zero"
        return
    assert_checks_something(want, "first order")
    if not second_order:
        return

    # Second order with respect to every input of the gradient graph, the seeds included:
    # with respect to the first input alone, the second derivatives of linear, bilinear and
    # piecewise linear ops are all zero, and so would be those of a rule returning zeros.
    zs = wrt + seed_names
    values = xs + seeds
    vs = [rng.standard_normal(x.shape) for x in xs]
    hg = tsr.gradient(gg, firsts, zs)
    got = tsr.Plan(hg).run(values + vs)[-len(zs):]

    def grad_dot_v(point):
        return sum(float(np.sum(gr * v)) for gr, v in zip(grad_plan.run(point)[n_fwd:], vs))

    want = [numeric_grad(grad_dot_v, [v.copy() for v in values], k) for k in range(len(zs))]
    for k, z in enumerate(zs):
        assert_close(got[k], want[k], f"d<gradient, v>/d{z}", rtol=1e-5)
    assert_checks_something(want, "d<gradient, v>")

    # Gradient of the squared gradient norm, built onto the gradient graph.
    for k, first in enumerate(firsts):
        gg.add_node("Mul", [first, first], [f"grad_sq{k}"])
        gg.add_node("ReduceSum", [f"grad_sq{k}"], [f"grad_norm{k}"], {"keepdims": 0})
    gg.add_node("Sum", [f"grad_norm{k}" for k in range(len(firsts))], ["grad_norm"])
    gg.add_output("grad_norm")
    ng = tsr.gradient(gg, ["grad_norm"], zs)
    norm_plan = tsr.Plan(gg)
    got = tsr.Plan(ng).run(values + [np.array(1.0)])[-len(zs):]

    def norm(point):
        return float(norm_plan.run(point)[-1])

    want = [numeric_grad(norm, [v.copy() for v in values], k) for k in range(len(zs))]
    for k, z in enumerate(zs):
        assert_close(got[k], want[k], f"d|gradient|^2/d{z}", rtol=1e-5)
    assert_checks_something(want, "d|gradient|^2")


R = np.random.default_rng(0)
I64 = np.int64


def cases():
    c = []
    add = lambda *a, **k: c.append(pytest.param(Case(*a, **k), id=a[0] + str(len(c))))
    for op, attrs in [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}),
                      ("Selu", {}), ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
                      ("HardSwish", {}), ("Tanh", {}), ("Erf", {}), ("Exp", {}), ("Softplus", {}),
                      ("Abs", {}), ("Neg", {})]:
        add(op, [away(R, (3, 5)) * 2], attrs)
    add("Silu", [R.standard_normal((3, 5)) * 2], domain="ai.tessera")
    add("SiluGrad", [R.standard_normal((3, 5)), R.standard_normal((3, 5)) * 2],
        domain="ai.tessera")
    for op in ("Floor", "Ceil"):
        add(op, [away(R, (3, 5)) * 2], zero_gradient=True)
    for op in ("Log", "Sqrt", "Reciprocal"):
        add(op, [positive(R, (4, 3))])
    add("Clip", [away(R, (3, 4)), np.array(-0.5), np.array(0.6)])
    add("Clip", [away(R, (3, 4)), np.array(-0.5), None], wrt=[0, 1])
    add("Add", [R.standard_normal((3, 4)), R.standard_normal((4,))])
    add("Sub", [R.standard_normal((2, 3, 4)), R.standard_normal((3, 1))])
    add("Mul", [R.standard_normal((3, 4)), R.standard_normal((1, 4))])
    add("Div", [R.standard_normal((3, 4)), positive(R, (3, 1))])
    add("Pow", [positive(R, (3, 4)), R.standard_normal((4,))])
    add("Pow", [R.standard_normal((3, 4)), np.array(3, dtype=I64)])
    add("Max", [R.standard_normal((3, 4)), R.standard_normal((4,)), R.standard_normal((3, 1))])
    add("Min", [R.standard_normal((3, 4)), R.standard_normal((3, 4))])
    add("Sum", [R.standard_normal((3, 4)), R.standard_normal((4,)), R.standard_normal((3, 4))])
    add("Where", [R.standard_normal((3, 4)) > 0, R.standard_normal((3, 4)), R.standard_normal((4,))])
    add("Mod", [R.uniform(0.1, 0.9, (3, 4)) + 2 * R.integers(-2, 3, (3, 4)),
                np.full((3, 4), 2.0)], {"fmod": 1})
    add("Conv", [R.standard_normal((2, 4, 7, 6)), R.standard_normal((3, 4, 3, 2)),
                 R.standard_normal((3,))],
        {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]})
    add("Conv", [R.standard_normal((1, 4, 6, 5)), R.standard_normal((6, 2, 3, 3))],
        {"group": 2, "pads": [1, 1, 1, 1]})
    add("Conv", [R.standard_normal((2, 3, 9)), R.standard_normal((2, 3, 3))],
        {"strides": [2], "auto_pad": "SAME_UPPER"})
    add("MaxPool", [R.permutation(150).reshape(2, 3, 5, 5) / 10.0],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    add("MaxPool", [R.permutation(98).reshape(1, 2, 7, 7) / 10.0],
        {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1})
    add("AveragePool", [R.standard_normal((2, 2, 6, 5))],
        {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]})
    add("AveragePool", [R.standard_normal((1, 2, 7, 7))],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
         "count_include_pad": 1, "ceil_mode": 1})
    add("GlobalAveragePool", [R.standard_normal((2, 3, 4, 5))])
    add("GlobalMaxPool", [R.standard_normal((2, 3, 4, 5))])
    add("BatchNormalization", [R.standard_normal((2, 3, 4, 5)), R.standard_normal((3,)),
                               R.standard_normal((3,)), R.standard_normal((3,)),
                               positive(R, (3,))], {"epsilon": 1e-3})
    add("LayerNormalization", [R.standard_normal((3, 4, 5)), R.standard_normal((4, 5)),
                               R.standard_normal((5,))], {"axis": -2})
    add("Gemm", [R.standard_normal((3, 4)), R.standard_normal((5, 4)), R.standard_normal((5,))],
        {"transB": 1, "alpha": 0.7, "beta": 1.3})
    add("Gemm", [R.standard_normal((4, 3)), R.standard_normal((4, 5)), R.standard_normal((3, 1))],
        {"transA": 1})
    add("MatMul", [R.standard_normal((2, 3, 4)), R.standard_normal((4, 5))])
    add("MatMul", [R.standard_normal((2, 1, 3, 4)), R.standard_normal((3, 4, 2))])
    add("MatMul", [R.standard_normal((4,)), R.standard_normal((2, 4, 3))])
    add("MatMul", [R.standard_normal((2, 3, 4)), R.standard_normal((4,))])
    add("Einsum", [R.standard_normal((2, 3, 4)), R.standard_normal((2, 4, 5))],
        {"equation": "bij,bjk->bik"})
    add("ReduceSum", [R.standard_normal((3, 4, 5)), np.array([0, 2], dtype=I64)],
        {"keepdims": 0})
    add("ReduceMean", [R.standard_normal((3, 4, 5))], {"axes": [1]})
    add("ReduceMax", [R.standard_normal((3, 4, 5))], {"axes": [0, 2], "keepdims": 0})
    add("ReduceMin", [R.standard_normal((3, 4, 5))], {"axes": [-1]})
    add("Softmax", [R.standard_normal((3, 4, 5))], {"axis": 1})
    add("Softmax", [R.standard_normal((3, 4, 5))], {"axis": 1}, opset=11)
    add("LogSoftmax", [R.standard_normal((3, 4, 5))], {"axis": -1})
    add("Reshape", [R.standard_normal((3, 4, 5)), np.array([4, -1], dtype=I64)])
    add("Flatten", [R.standard_normal((2, 3, 4))], {"axis": 2})
    add("Squeeze", [R.standard_normal((3, 1, 4)), np.array([1], dtype=I64)])
    add("Unsqueeze", [R.standard_normal((3, 4)), np.array([0, 3], dtype=I64)])
    add("Expand", [R.standard_normal((3, 1)), np.array([2, 3, 4], dtype=I64)])
    add("Identity", [R.standard_normal((3, 4))])
    add("Dropout", [R.standard_normal((3, 4))])
    add("Transpose", [R.standard_normal((2, 3, 4))], {"perm": [1, 2, 0]})
    add("Concat", [R.standard_normal((2, 3)), R.standard_normal((2, 1)), R.standard_normal((2, 2))],
        {"axis": 1})
    add("Split", [R.standard_normal((5, 3)), np.array([2, 3], dtype=I64)], {"axis": 0},
        n_outputs=2)
    add("Slice", [R.standard_normal((5, 6)), np.array([1, -4], dtype=I64),
                  np.array([4, 100], dtype=I64), np.array([0, 1], dtype=I64)])
    add("Gather", [R.standard_normal((4, 3)), np.array([[3, 0], [3, 1]], dtype=I64)],
        {"axis": 0})
    add("Gather", [R.standard_normal((2, 5)), np.array([4, -1, 2], dtype=I64)], {"axis": 1})
    add("Pad", [R.standard_normal((3, 4)), np.array([1, 0, 2, -1], dtype=I64)])
    add("Tile", [R.standard_normal((2, 3)), np.array([2, 3], dtype=I64)])
    add("ScatterND", [R.standard_normal((4, 3)), np.array([[1], [3]], dtype=I64),
                      R.standard_normal((2, 3))], wrt=[0])
    return c


@pytest.mark.parametrize("case", cases())
def test_gradient_against_finite_differences(case):
    check_case(case)


def test_composition_reuses_and_sums_gradients():
    """A value read by several nodes gets the sum of their contributions."""
    rng = np.random.default_rng(1)
    g = tsr.Graph()
    g.add_input("x", np.float64, [3, 4])
    g.add_input("w", np.float64, [4, 2])
    g.add_node("MatMul", ["x", "w"], ["h"])
    g.add_node("Tanh", ["h"], ["t"])
    g.add_node("Mul", ["t", "h"], ["y"])
    g.add_node("Add", ["y", "h"], ["z"])
    g.add_output("z")
    x, w, seed = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    gg = tsr.gradient(g, ["z"], ["x", "w"])
    _, gx, gw = gg.run([x, w, seed])
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    h = tx @ tw
    (torch.tanh(h) * h + h).backward(torch.tensor(seed))
    assert_close(gx, tx.grad.numpy(), "dx", rtol=1e-12)
    assert_close(gw, tw.grad.numpy(), "dw", rtol=1e-12)


def test_symbolic_batch_and_unused_wrt():
    g = tsr.Graph()
    g.add_input("x", np.float32, ["batch", 3])
    g.add_input("unused", np.float32, ["batch", 2])
    g.add_node("Relu", ["x"], ["y"])
    g.add_output("y")
    gg = tsr.gradient(g, ["y"], ["x", "unused"])
    assert gg.inputs()[-1] == ("y__seed", np.float32, ["batch", 3])
    assert gg.outputs()[1] == ("x__grad", np.float32, ["batch", 3])
    for batch in (1, 4):
        x = np.linspace(-1, 1, batch * 3, dtype=np.float32).reshape(batch, 3)
        u = np.ones((batch, 2), np.float32)
        seed = np.full((batch, 3), 2.0, np.float32)
        y, gx, gu = gg.run([x, u, seed])
        np.testing.assert_array_equal(gx, np.where(x > 0, seed, 0))
        np.testing.assert_array_equal(gu, np.zeros((batch, 2), np.float32))


def test_parameters_stay_parameters():
    """Gradients reach parameters, and the result can be differentiated again."""
    rng = np.random.default_rng(2)
    g = tsr.Graph()
    g.add_input("x", np.float64, [2, 3])
    w = rng.standard_normal((3, 3))
    t = tsr.tensor_of(w)
    tsr.check(tsr.lib().tsr_graph_add_parameter(g.handle, b"w", tsr.C.byref(t)))
    g.add_node("MatMul", ["x", "w"], ["h"])
    g.add_node("Mul", ["h", "h"], ["y"])
    g.add_output("y")
    gg = tsr.gradient(g, ["y"], ["w"])
    x, seed = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    _, gw = gg.run([x, seed])
    h = x @ w
    assert_close(gw, x.T @ (2 * h * seed), "dw", rtol=1e-12)
    hess = tsr.gradient(gg, ["w__grad"], ["w"])
    v = rng.standard_normal((3, 3))
    got = hess.run([x, seed, v])[-1]
    assert_close(got, x.T @ (2 * (x @ v) * seed), "Hessian-vector product in w", rtol=1e-12)


def graph_relu():
    g = tsr.Graph()
    g.add_input("x", np.float32, [2, 3])
    g.add_input("k", np.int64, [2, 3])
    g.add_node("Relu", ["x"], ["y"])
    g.add_node("Cast", ["k"], ["kf"], {"to": 1})
    g.add_node("Add", ["y", "kf"], ["z"])
    g.add_node("Shape", ["x"], ["s"])
    g.add_output("z")
    g.add_output("s")
    return g


@pytest.mark.parametrize("outputs, wrt, message, status", [
    (["nope"], ["x"], "no value 'nope'", tsr.ERR_NOT_FOUND),
    (["z"], ["nope"], "no input or parameter 'nope'", tsr.ERR_NOT_FOUND),
    (["s"], ["x"], "cannot differentiate 's' of dtype int64", tsr.ERR_DTYPE),
    (["z"], ["k"], "'k' is int64", tsr.ERR_DTYPE),
    (["z"], ["y"], "'y' is neither a graph input nor a parameter", tsr.ERR_INVALID_ARGUMENT),
    (["z", "z"], ["x"], "output 'z' is given twice", tsr.ERR_INVALID_ARGUMENT),
    (["z"], ["x", "x"], "'x' is given twice", tsr.ERR_INVALID_ARGUMENT),
    ([], ["x"], "at least one output", tsr.ERR_INVALID_ARGUMENT),
])
def test_bad_requests(outputs, wrt, message, status):
    with pytest.raises(tsr.TesseraError, match=message) as err:
        tsr.gradient(graph_relu(), outputs, wrt)
    assert err.value.status == status


def test_integer_paths_carry_no_gradient():
    """The int64 input of Cast lies on no gradient path; x's gradient is unaffected."""
    gg = tsr.gradient(graph_relu(), ["z"], ["x"])
    x = np.array([[1, -1, 2], [-2, 3, -3]], np.float32)
    k = np.ones((2, 3), np.int64)
    seed = np.ones((2, 3), np.float32)
    outs = gg.run([x, k, seed])
    np.testing.assert_array_equal(outs[2], (x > 0).astype(np.float32))


def test_unsupported_rule_names_the_node():
    g = tsr.Graph()
    g.add_input("x", np.float64, [4, 4])
    g.add_constant("pads", np.array([1, 1, 1, 1], dtype=np.int64))
    g.add_node("Pad", ["x", "pads"], ["y"], {"mode": "reflect"}, name="reflect_pad")
    g.add_output("y")
    with pytest.raises(tsr.TesseraError, match=r"reflect_pad.*Pad mode 'reflect'") as err:
        tsr.gradient(g, ["y"], ["x"])
    assert err.value.status == tsr.ERR_UNSUPPORTED


def dpp_case():
    rng = np.random.default_rng(11)
    return Case("DetailPreservingPool", [rng.standard_normal((1, 2, 6, 6)),
                                         rng.standard_normal(2) * 0.3, rng.standard_normal(2) * 0.3],
                {"kernel_shape": [2, 2], "strides": [2, 2]}, domain="ai.tessera")


def test_dpp_gradient_against_finite_differences():
    """DPP's rule emits DetailPreservingPoolGrad; its gradients of X, alpha and lambda."""
    check_case(dpp_case(), second_order=False)


def test_dpp_second_order_is_a_clear_error():
    g, outs, wrt = dpp_case().graph()
    gg = tsr.gradient(g, outs, wrt)
    with pytest.raises(tsr.TesseraError,
                       match="DetailPreservingPoolGrad has no gradient rule") as err:
        tsr.gradient(gg, [f"{wrt[0]}__grad"], [wrt[0]])
    assert err.value.status == tsr.ERR_UNSUPPORTED


def test_broadcast_decided_at_run_time():
    """With dims only known at run time, which axes were broadcast is decided then (SumTo)."""
    g = tsr.Graph()
    g.add_input("x", np.float64, ["batch", 3])
    g.add_input("y", np.float64, [-1, 3])
    g.add_node("Mul", ["x", "y"], ["z"])
    g.add_output("z")
    gg = tsr.gradient(g, ["z"], ["x", "y"])
    rng = np.random.default_rng(3)
    for nx, ny in ((1, 4), (4, 1), (2, 2)):
        x, y = rng.standard_normal((nx, 3)), rng.standard_normal((ny, 3))
        seed = rng.standard_normal((max(nx, ny), 3))
        _, gx, gy = gg.run([x, y, seed])
        np.testing.assert_allclose(gx, (seed * y).sum(0, keepdims=True) if nx == 1 < ny
                                   else seed * y, rtol=1e-12)
        np.testing.assert_allclose(gy, (seed * x).sum(0, keepdims=True) if ny == 1 < nx
                                   else seed * x, rtol=1e-12)


def test_concat_of_sizes_known_at_run_time():
    """Concat along an axis whose sizes are known only at run time: the
    gradient splits at the inputs' run-time sizes (checked against finite
    differences at several sizes with one gradient graph)."""
    g = tsr.Graph()
    g.add_input("x", np.float64, ["n", 3])
    g.add_input("y", np.float64, [-1, 3])
    g.add_node("Concat", ["x", "y"], ["z"], {"axis": 0})
    g.add_node("Mul", ["z", "z"], ["z2"])
    g.add_output("z2")
    gg = tsr.gradient(g, ["z2"], ["x", "y"])
    rng = np.random.default_rng(5)
    for nx, ny in ((1, 4), (3, 2), (2, 0)):
        xs = [rng.standard_normal((nx, 3)), rng.standard_normal((ny, 3))]
        seed = rng.standard_normal((nx + ny, 3))
        _, gx, gy = gg.run(xs + [seed])

        def loss(v):
            return float(np.sum(g.run(v)[0] * seed))
        assert_close(gx, numeric_grad(loss, xs, 0), "x")
        assert_close(gy, numeric_grad(loss, xs, 1), "y")


@pytest.mark.parametrize("op, attrs", [("ReduceMean", {"axes": [0, 2], "keepdims": 1}),
                                       ("ReduceMean", {"keepdims": 0}),
                                       ("GlobalAveragePool", {})])
def test_averages_over_sizes_known_at_run_time(op, attrs):
    """Means over dims known only at run time (dynamic-batch exports) divide
    by the count computed at run time; one gradient graph at several sizes."""
    g = tsr.Graph()
    g.set_opset(13)
    g.add_input("x", np.float64, ["n", 3, "h", "w"])
    g.add_node(op, ["x"], ["y"], attrs)
    g.add_output("y")
    gg = tsr.gradient(g, ["y"], ["x"])
    rng = np.random.default_rng(6)
    for shape in ((1, 3, 2, 5), (4, 3, 3, 1)):
        xs = [rng.standard_normal(shape)]
        y = g.run(xs)[0]
        seed = rng.standard_normal(y.shape)
        _, gx = gg.run(xs + [seed])

        def loss(v):
            return float(np.sum(g.run(v)[0] * seed))
        assert_close(gx, numeric_grad(loss, xs, 0), op)


def test_slice_with_bounds_computed_at_run_time():
    """x[:, c/2:] with c known only at run time, as torch exports chunk():
    the gradient scatters dY at the bounds computed then."""
    g = tsr.Graph()
    g.set_opset(13)
    g.add_input("x", np.float64, ["n", "c"])
    g.add_constant("one", np.array([1], np.int64))
    g.add_constant("two", np.array([2], np.int64))
    g.add_constant("end", np.array([2 ** 62], np.int64))
    g.add_node("Shape", ["x"], ["shape"])
    g.add_node("Gather", ["shape", "one"], ["c"], {"axis": 0})
    g.add_node("Div", ["c", "two"], ["half"])
    g.add_node("Slice", ["x", "half", "end", "one"], ["y"])
    g.add_output("y")
    gg = tsr.gradient(g, ["y"], ["x"])
    rng = np.random.default_rng(7)
    for shape in ((2, 6), (3, 5)):
        xs = [rng.standard_normal(shape)]
        seed = rng.standard_normal(g.run(xs)[0].shape)
        _, gx = gg.run(xs + [seed])
        want = np.zeros(shape)
        want[:, shape[1] // 2:] = seed
        np.testing.assert_array_equal(gx, want)

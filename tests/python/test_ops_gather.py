"""GatherElements, GatherND (batch_dims), ScatterElements and ScatterND with
every reduction (gather.c) against loops written from the ONNX spec, in
every dtype Tessera has, on odd random shapes with negative and repeated
indices; InstanceNormalization and GroupNormalization (norm.c) against
torch.nn.InstanceNorm2d and GroupNorm exported to ONNX and against
torch.nn.functional.group_norm; the gradient rules against central finite
differences in float64; and the errors bad indices and shapes raise."""

import io
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn

import tsr

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_]
REDUCTIONS = ["none", "add", "mul", "max", "min"]
DEVICES = ["ref", "cpu"]


def rng_for(*parts):
    return np.random.default_rng(zlib.crc32(" ".join(map(str, parts)).encode()))


def rand(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), size=shape,
                            endpoint=True).astype(dtype)
    return rng.uniform(-3, 3, size=shape).astype(dtype)


def run1(op, inputs, attrs=None, **kw):
    return tsr.run_op(op, inputs, attrs, **kw)[0]


def same(got, ref):
    ref = np.asarray(ref)
    assert got.dtype == ref.dtype and got.shape == ref.shape, (got.dtype, got.shape, ref.dtype,
                                                               ref.shape)
    np.testing.assert_array_equal(got, ref)


def negate_some(rng, idx, bound):
    """Writes about a third of the indices in their negative form."""
    return np.where(rng.random(idx.shape) < 0.35, idx - bound, idx)


def combine(a, b, reduction):
    with np.errstate(over="ignore"):
        if reduction == "none":
            return b
        if reduction == "add":
            return np.add(a, b)
        if reduction == "mul":
            return np.multiply(a, b)
        return (np.maximum if reduction == "max" else np.minimum)(a, b)


# ------------------------------------------------------ spec references

def ref_gather_elements(data, idx, axis):
    out = np.empty(idx.shape, data.dtype)
    for pos in np.ndindex(idx.shape):
        src = list(pos)
        src[axis] = idx[pos] % data.shape[axis]
        out[pos] = data[tuple(src)]
    return out


def ref_scatter_elements(data, idx, upd, axis, reduction):
    out = data.copy()
    for pos in np.ndindex(idx.shape):
        dst = list(pos)
        dst[axis] = idx[pos] % data.shape[axis]
        out[tuple(dst)] = combine(out[tuple(dst)], upd[pos], reduction)
    return out


def ref_gather_nd(data, idx, b):
    k = idx.shape[-1]
    out = np.empty(idx.shape[:-1] + data.shape[b + k:], data.dtype)
    for pos in np.ndindex(idx.shape[:-1]):
        tup = tuple(int(v) % data.shape[b + j] for j, v in enumerate(idx[pos]))
        out[pos] = data[pos[:b] + tup]
    return out


def ref_scatter_nd(data, idx, upd, reduction):
    out = data.copy()
    for pos in np.ndindex(idx.shape[:-1]):
        tup = tuple(int(v) % data.shape[j] for j, v in enumerate(idx[pos]))
        out[tup] = combine(out[tup], upd[pos], reduction)
    return out


# ------------------------------------------------------------ GatherElements

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("const", [False, True], ids=["input", "constant"])
def test_gather_elements(dtype, const):
    rng = rng_for("gather_elements", np.dtype(dtype).name, const)
    for shape in [(7,), (3, 5), (4, 1, 6), (2, 3, 5, 3)]:
        data = rand(rng, shape, dtype)
        for axis in range(-len(shape), len(shape)):
            a = axis % len(shape)
            # Shorter than data along the other axes, any length along the axis.
            ishape = tuple(rng.integers(1, s + 1) if d != a else rng.integers(1, 9)
                           for d, s in enumerate(shape))
            idx = rng.integers(0, shape[a], ishape)
            idx = negate_some(rng, idx, shape[a])
            want = ref_gather_elements(data, idx, a)
            for itype in (np.int64, np.int32):
                got = run1("GatherElements", [data, idx.astype(itype)], {"axis": axis},
                           const_inputs=(1,) if const else ())
                same(got, want)


def test_gather_elements_matches_torch_gather():
    rng = rng_for("torch_gather")
    x = rng.standard_normal((4, 6, 5))
    idx = rng.integers(0, 6, (3, 9, 2))
    want = torch.gather(torch.from_numpy(x), 1, torch.from_numpy(idx)).numpy()
    same(run1("GatherElements", [x, idx], {"axis": 1}), want)


# ---------------------------------------------------------------- GatherND

GATHER_ND_SHAPES = [  # data shape, leading index shape (after the batch dims), k, batch_dims
    ((5,), (3,), 1, 0), ((4, 3), (), 2, 0), ((4, 3, 5), (2, 3), 1, 0), ((4, 3, 5), (7,), 3, 0),
    ((2, 5, 3), (4,), 1, 1), ((3, 4, 5, 2), (2, 3), 2, 1), ((2, 3, 5, 4), (3,), 1, 2),
    ((2, 3, 4, 5), (), 2, 2), ((1, 3, 2), (5,), 2, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", GATHER_ND_SHAPES, ids=lambda c: f"{c[0]}-k{c[2]}-b{c[3]}")
def test_gather_nd(dtype, case):
    shape, lead, k, b = case
    rng = rng_for("gather_nd", np.dtype(dtype).name, case)
    data = rand(rng, shape, dtype)
    bounds = np.array(shape[b:b + k])
    idx = rng.integers(0, bounds, shape[:b] + lead + (k,))
    idx = negate_some(rng, idx, bounds)
    want = ref_gather_nd(data, idx, b)
    attrs = {"batch_dims": b}
    same(run1("GatherND", [data, idx], attrs), want)
    same(run1("GatherND", [data, idx], attrs, const_inputs=(1,)), want)


def test_gather_nd_symbolic_batch():
    """The output's batch dim is the data's symbol; the plan runs any size."""
    g = tsr.Graph()
    g.add_input("x", np.float32, ["batch", 4, 3])
    g.add_input("i", np.int64, ["batch", 2, 1])
    g.add_node("GatherND", ["x", "i"], ["y"], {"batch_dims": 1})
    g.add_output("y")
    assert g.outputs()[0].shape == [-1, 2, 3] or g.outputs()[0].shape[1:] == [2, 3]
    rng = rng_for("symbolic")
    plan = tsr.Plan(g)
    for n in (1, 5):
        x = rng.standard_normal((n, 4, 3)).astype(np.float32)
        i = rng.integers(-4, 4, (n, 2, 1))
        same(plan.run([x, i])[0], ref_gather_nd(x, i, 1))


# ----------------------------------------------------------------- scatters

def distinct_positions(rng, n_positions, count):
    return rng.permutation(n_positions)[:count]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scatter_elements(dtype, reduction):
    rng = rng_for("scatter_elements", np.dtype(dtype).name, reduction)
    for shape in [(7,), (3, 5), (4, 2, 5), (3, 1, 4, 3)]:
        data = rand(rng, shape, dtype)
        for axis in range(-len(shape), len(shape)):
            a = axis % len(shape)
            ishape = tuple(rng.integers(1, s + 1) for s in shape)
            if reduction == "none":
                # Distinct targets along the axis: the winner of repeats is unspecified.
                ishape = ishape[:a] + (min(ishape[a], shape[a]),) + ishape[a + 1:]
                idx = np.moveaxis(np.stack([
                    distinct_positions(rng, shape[a], ishape[a])
                    for _ in np.ndindex(ishape[:a] + ishape[a + 1:])]).reshape(
                        ishape[:a] + ishape[a + 1:] + (ishape[a],)), -1, a)
            else:
                # Repeats on purpose: each reduction must fold all of them.
                ishape = ishape[:a] + (ishape[a] + 3,) + ishape[a + 1:]
                idx = rng.integers(0, shape[a], ishape)
            idx = negate_some(rng, idx, shape[a])
            upd = rand(rng, ishape, dtype)
            want = ref_scatter_elements(data, idx, upd, a, reduction)
            for itype in (np.int64, np.int32):
                got = run1("ScatterElements", [data, idx.astype(itype), upd],
                           {"axis": axis, "reduction": reduction}, opset=16)
                same(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scatter_nd(dtype, reduction):
    rng = rng_for("scatter_nd", np.dtype(dtype).name, reduction)
    data = rand(rng, (4, 5, 3), dtype)
    for k, lead in [(1, (2,)), (2, (3,)), (3, (2, 2)), (1, (1, 1)), (2, ())]:
        n = int(np.prod(lead))
        total = int(np.prod(data.shape[:k]))
        if reduction == "none":
            flat = distinct_positions(rng, total, min(n, total))
        else:
            flat = rng.integers(0, min(total, 3), n)  # repeats
        idx = np.stack(np.unravel_index(flat, data.shape[:k]), axis=-1).reshape(lead + (k,))
        idx = negate_some(rng, idx, np.array(data.shape[:k]))
        upd = rand(rng, lead + data.shape[k:], dtype)
        want = ref_scatter_nd(data, idx, upd, reduction)
        attrs = {"reduction": reduction}
        same(run1("ScatterND", [data, idx, upd], attrs), want)
        same(run1("ScatterND", [data, idx, upd], attrs, const_inputs=(1,)), want)


def test_scatter_reductions_keep_nan_and_wrap_integers():
    data = np.array([1.0, np.nan, 3.0])
    idx = np.array([[0], [1], [2]])
    upd = np.array([np.nan, 2.0, 1.0])
    same(run1("ScatterND", [data, idx, upd], {"reduction": "max"}), [np.nan, np.nan, 3.0])
    same(run1("ScatterND", [data, idx, upd], {"reduction": "min"}), [np.nan, np.nan, 1.0])
    i8 = np.array([120, -120], np.int8)
    same(run1("ScatterElements", [i8, np.array([0, 1, 0]), np.array([10, -10, 10], np.int8)],
              {"reduction": "add"}), np.array([-116, 126], np.int8))


def test_scatter_add_matches_torch():
    rng = rng_for("torch_scatter")
    x = rng.standard_normal((4, 6))
    idx = rng.integers(0, 6, (3, 8))
    src = rng.standard_normal((3, 8))
    want = torch.from_numpy(x).scatter_add(1, torch.from_numpy(idx), torch.from_numpy(src))
    same(run1("ScatterElements", [x, idx, src], {"axis": 1, "reduction": "add"}), want.numpy())
    for red, name in [("mul", "prod"), ("max", "amax"), ("min", "amin")]:
        want = torch.from_numpy(x).scatter_reduce(1, torch.from_numpy(idx), torch.from_numpy(src),
                                                  name)
        same(run1("ScatterElements", [x, idx, src], {"axis": 1, "reduction": red}),
             want.numpy())


# ---------------------------------------------------------------- gradients

def finite_difference_check(g, feeds, names, wrt, outs=("y",)):
    plan = tsr.Plan(g)
    ys = plan.run(feeds)
    rng = rng_for("seed", *wrt)
    seeds = [rng.standard_normal(y.shape) for y in ys]

    def loss(values):
        return sum(float(np.sum(y * s)) for y, s in zip(plan.run(values), seeds))

    grads = tsr.Plan(tsr.gradient(g, list(outs), wrt)).run(feeds + seeds)[len(outs):]
    eps = 1e-6
    for k, w in enumerate(wrt):
        pos = names.index(w)
        xs = [f.copy() for f in feeds]
        fd = np.zeros_like(xs[pos])
        for idx in np.ndindex(fd.shape):
            saved = xs[pos][idx]
            xs[pos][idx] = saved + eps
            hi = loss(xs)
            xs[pos][idx] = saved - eps
            lo = loss(xs)
            xs[pos][idx] = saved
            fd[idx] = (hi - lo) / (2 * eps)
        err = float(np.max(np.abs(grads[k] - fd)))
        assert err <= 1e-6 * max(float(np.max(np.abs(fd))), 1e-3), f"d/d{w}: error {err:.3g}"


def one_node(op, inputs, attrs, const=()):
    """A graph of one node on inputs named a, b, c, ...; `const` ones are constants."""
    g = tsr.Graph()
    names, feeds = [], []
    for i, x in enumerate(inputs):
        name = "abcdef"[i]
        if i in const:
            g.add_constant(name, x)
        else:
            g.add_input(name, x.dtype, list(x.shape))
            feeds.append(x)
        names.append(name)
    g.add_node(op, names, ["y"], attrs)
    g.add_output("y")
    return g, feeds, [n for i, n in enumerate(names) if i not in const]


def distinct_values(rng, shape, offset=0.0):
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) - n / 2) / 10 + offset


def test_gather_elements_gradient_with_repeats():
    rng = rng_for("grad gather_elements")
    x = rng.standard_normal((3, 5, 2))
    idx = np.array([[[4, -1], [0, 4], [4, 2]], [[1, 1], [-5, 3], [0, 0]]])
    g, feeds, names = one_node("GatherElements", [x, idx], {"axis": 1}, const=(1,))
    finite_difference_check(g, feeds, names, ["a"])


@pytest.mark.parametrize("b", [0, 1, 2])
def test_gather_nd_gradient_with_repeats(b):
    rng = rng_for("grad gather_nd", b)
    shape = (2, 3, 4, 2)
    x = rng.standard_normal(shape)
    k = 2 if b < 2 else 1
    bounds = np.array(shape[b:b + k])
    idx = negate_some(rng, rng.integers(0, bounds, shape[:b] + (4, k)), bounds)
    idx[..., 1, :] = idx[..., 0, :]  # a repeated tuple
    g, feeds, names = one_node("GatherND", [x, idx], {"batch_dims": b}, const=(1,))
    finite_difference_check(g, feeds, names, ["a"])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("op", ["ScatterElements", "ScatterND"])
def test_scatter_gradient(op, reduction):
    rng = rng_for("grad", op, reduction)
    if op == "ScatterElements":
        attrs = {"axis": 1, "reduction": reduction}
        idx = (np.array([[1, 0, 3, 4], [2, 4, 0, 1], [0, 3, 2, -1]]) if reduction == "none"
               else np.array([[1, 1, 3, -4], [2, 2, 2, 0], [0, 3, 3, -1]]))
        data_shape, upd_shape = (3, 5), idx.shape
    else:
        attrs = {"reduction": reduction}
        idx = (np.array([[2], [0], [-1]]) if reduction == "none"
               else np.array([[2], [0], [-2], [0]]))
        data_shape, upd_shape = (4, 3), (idx.shape[0], 3)
    if reduction in ("max", "min"):
        data = distinct_values(rng, data_shape)
        upd = distinct_values(rng, upd_shape, offset=0.03)
    else:
        data = rng.standard_normal(data_shape)
        upd = rng.uniform(0.5, 1.5, upd_shape) * rng.choice([-1, 1], upd_shape)
    g, feeds, names = one_node(op, [data, idx, upd], attrs, const=(1,))
    wrt = ["a"] if reduction == "mul" else ["a", "c"]
    finite_difference_check(g, feeds, names, wrt)
    if reduction == "mul":
        with pytest.raises(tsr.TesseraError, match="reduction 'mul' has no rule yet"):
            tsr.gradient(g, ["y"], ["c"])


def test_scatter_max_gradient_splits_ties():
    """A tie between data and an update shares the gradient, as PyTorch's amax does."""
    data = np.array([[1.0, 2.0, 3.0]])
    idx = np.array([[0, 0, 2]])
    upd = np.array([[1.0, 0.5, 3.0]])
    g, feeds, names = one_node("ScatterElements", [data, idx, upd],
                               {"axis": 1, "reduction": "max"}, const=(1,))
    grads = tsr.Plan(tsr.gradient(g, ["y"], ["a", "c"])).run(feeds + [np.ones((1, 3))])[1:]
    td = torch.tensor(data, requires_grad=True)
    tu = torch.tensor(upd, requires_grad=True)
    td.scatter_reduce(1, torch.from_numpy(idx), tu, "amax").sum().backward()
    np.testing.assert_allclose(grads[0], td.grad.numpy())
    np.testing.assert_allclose(grads[1], tu.grad.numpy())


# --------------------------------------------------------------------- errors

def test_out_of_range_indices_name_op_index_and_bound():
    x = np.zeros((3, 5), np.float32)
    cases = [
        ("GatherElements", [x, np.array([[0, 5]])], {"axis": 1}, "index 5 at \\[0, 1\\].*"
         "axis 1 of size 5"),
        ("GatherElements", [x, np.array([[-4], [0]])], {"axis": 0}, "index -4 at \\[0, 0\\].*"
         "axis 0 of size 3"),
        ("GatherND", [x, np.array([[1, 2], [3, 0]])], {}, "index 3 at \\[1, 0\\].*axis 0 of "
         "size 3"),
        ("GatherND", [np.zeros((2, 3, 4)), np.array([[[1]], [[-4]]])], {"batch_dims": 1},
         "index -4 at \\[1, 0, 0\\].*axis 1 of size 3"),
        ("ScatterElements", [x, np.array([[7]]), np.ones((1, 1), np.float32)],
         {"reduction": "add"}, "index 7 .*axis 0 of size 3"),
        ("ScatterND", [x, np.array([[0, -6]]), np.ones(1, np.float32)], {"reduction": "max"},
         "index -6 .*axis 1 of size 5"),
    ]
    for op, inputs, attrs, message in cases:
        for const in ((), (1,)):  # found at run time, and when the graph is built
            with pytest.raises(tsr.TesseraError, match=f"{op}.*{message}"):
                run1(op, inputs, attrs, const_inputs=const)


def test_shape_errors():
    x = np.zeros((3, 5), np.float32)
    with pytest.raises(tsr.TesseraError, match="indices have rank 1, data rank 2"):
        run1("GatherElements", [x, np.array([0])])
    with pytest.raises(tsr.TesseraError, match="size 4 along axis 0, past data's 3"):
        run1("GatherElements", [x, np.zeros((4, 1), np.int64)], {"axis": 1})
    with pytest.raises(tsr.TesseraError, match="updates of shape \\[1, 2\\], indices of shape "
                       "\\[1, 1\\]"):
        run1("ScatterElements", [x, np.zeros((1, 1), np.int64), np.zeros((1, 2), np.float32)])
    with pytest.raises(tsr.TesseraError, match="updates are float64 but data is float32"):
        run1("ScatterElements", [x, np.zeros((1, 1), np.int64), np.zeros((1, 1))])
    with pytest.raises(tsr.TesseraError, match="reduction 'sum' is not one of"):
        run1("ScatterElements", [x, np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32)],
             {"reduction": "sum"})
    with pytest.raises(tsr.TesseraError, match="index tuples of length 3 for data of rank 2"):
        run1("GatherND", [x, np.zeros((1, 3), np.int64)])
    with pytest.raises(tsr.TesseraError, match="batch axis 0 has size 2 in the indices but 3"):
        run1("GatherND", [x, np.zeros((2, 1), np.int64)], {"batch_dims": 1})
    with pytest.raises(tsr.TesseraError, match="int32.*GatherND does not take"):
        run1("GatherND", [x, np.zeros((2, 1), np.int32)])


# ---------------------------------------- InstanceNormalization, GroupNormalization

def onnx_bytes(module, args, opset):
    buf = io.BytesIO()
    module.eval()
    torch.onnx.export(module, args, buf, opset_version=opset)
    return buf.getvalue()


def onnx_ops(data):
    import onnx
    return {n.op_type for n in onnx.load_from_string(data).graph.node}


def close(got, want, rel):
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert err <= rel * scale, f"error {err:.3g} exceeds {rel:g} of max |y| = {scale:.3g}"


def seeded_affine(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    return module


NORM_MODULES = [
    ("InstanceNorm2d", lambda: seeded_affine(nn.InstanceNorm2d(5, affine=True), 1), (2, 5, 7, 9)),
    ("InstanceNorm1d", lambda: seeded_affine(nn.InstanceNorm1d(3, affine=True, eps=1e-3), 2),
     (4, 3, 11)),
    ("GroupNorm", lambda: seeded_affine(nn.GroupNorm(3, 6), 3), (2, 6, 5, 7)),
    ("GroupNorm-1", lambda: seeded_affine(nn.GroupNorm(1, 4, eps=1e-3), 4), (3, 4, 9)),
    ("GroupNorm-C", lambda: seeded_affine(nn.GroupNorm(5, 5), 5), (2, 5, 3, 3, 2)),
]


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("case", NORM_MODULES, ids=lambda c: c[0])
def test_norm_against_torch_export(case, opset):
    name, make, shape = case
    module = make()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(len(name)))
    with torch.no_grad():
        want = module(x).numpy()
    data = onnx_bytes(module, (x,), opset)
    # torch 1.13 exports GroupNorm as InstanceNormalization on [N, groups, -1]
    # with unit scale, then Reshape, Mul and Add.
    assert "InstanceNormalization" in onnx_ops(data)
    g = tsr.Graph.load_bytes(data)
    for device in DEVICES:
        close(tsr.Plan(g, device=device).run([x.numpy()])[0], want, 1e-5)
    # ONNX holds epsilon as a float32 attribute: 1e-3 moves by 5e-11 relative.
    g64 = tsr.Graph.load_bytes(onnx_bytes(module.double(), (x.double(),), opset))
    close(tsr.Plan(g64).run([x.double().numpy()])[0], module(x.double()).detach().numpy(), 1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per", ["channel", "group"])
def test_group_normalization_node(per, dtype):
    """Scale and bias per channel (opset 21) or per group (opset 18), against F.group_norm."""
    rng = rng_for("groupnorm", per, np.dtype(dtype).name)
    for shape, groups in [((2, 6, 5, 3), 3), ((3, 4, 7), 2), ((1, 9, 2, 3, 2), 9), ((2, 4), 4),
                          ((2, 8, 5), 1)]:
        C = shape[1]
        n = C if per == "channel" else groups
        x = rng.standard_normal(shape).astype(dtype)
        scale = rng.standard_normal(n).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        sc, bc = (scale, bias) if per == "channel" else (np.repeat(scale, C // groups),
                                                          np.repeat(bias, C // groups))
        want = torch.nn.functional.group_norm(torch.from_numpy(x).double(), groups,
                                              torch.from_numpy(sc).double(),
                                              torch.from_numpy(bc).double(), eps=1e-4).numpy()
        got = run1("GroupNormalization", [x, scale, bias],
                   {"num_groups": groups, "epsilon": 1e-4})
        assert got.dtype == dtype
        close(got, want, 1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("case", [
    ("InstanceNormalization", (2, 3, 4, 5), {}, 3),
    ("InstanceNormalization", (3, 2, 7), {"epsilon": 1e-2}, 2),
    ("GroupNormalization", (2, 6, 3, 2), {"num_groups": 3}, 6),
    ("GroupNormalization", (2, 6, 5), {"num_groups": 2, "epsilon": 1e-2}, 2),
    ("GroupNormalization", (3, 4), {"num_groups": 2}, 4),
], ids=lambda c: f"{c[0]}-{c[1]}-{c[3]}")
def test_norm_gradient(case):
    op, shape, attrs, n = case
    rng = rng_for("grad", op, shape, n)
    x = rng.standard_normal(shape)
    scale = rng.standard_normal(n)
    bias = rng.standard_normal(n)
    g, feeds, names = one_node(op, [x, scale, bias], attrs)
    finite_difference_check(g, feeds, names, ["a", "b", "c"])


def test_norm_errors():
    x = np.zeros((2, 6, 4), np.float32)
    p = np.ones(6, np.float32)
    with pytest.raises(tsr.TesseraError, match="GroupNormalization.*num_groups 4 does not divide "
                       "the 6 channels"):
        run1("GroupNormalization", [x, p, p], {"num_groups": 4})
    with pytest.raises(tsr.TesseraError, match="scale has 4 values, expected one per channel "
                       "\\(6, as from opset 21\\) or one per group \\(3, as in opset 18\\)"):
        run1("GroupNormalization", [x, np.ones(4, np.float32), p], {"num_groups": 3})
    with pytest.raises(tsr.TesseraError, match="num_groups is 0"):
        run1("GroupNormalization", [x, p, p], {"num_groups": 0})
    with pytest.raises(tsr.TesseraError, match="B has 5 values but X has 6 channels"):
        run1("InstanceNormalization", [x, p, np.ones(5, np.float32)])
    with pytest.raises(tsr.TesseraError, match="X must have rank >= 3"):
        run1("InstanceNormalization", [np.zeros((2, 6), np.float32), p, p])
    with pytest.raises(tsr.TesseraError, match="scale is float64 but X is float32"):
        run1("InstanceNormalization", [x, np.ones(6), p])

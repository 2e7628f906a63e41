"""Reference kernels of norm.c, matmul.c and reduce.c against numpy and
PyTorch: BatchNormalization, LayerNormalization, Gemm, MatMul, Einsum,
ReduceMean/Sum/Max/Min, Softmax and LogSoftmax."""
import itertools
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tsr

DTYPES = [np.float32, np.float64]


def rng(seed):
    return np.random.default_rng(seed)


def randn(r, shape, dtype):
    return r.standard_normal(shape).astype(dtype)


def assert_close(out, ref, dtype=None):
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if dtype is not None:
        assert out.dtype == dtype
    tol = 1e-4 if out.dtype == np.float32 else 1e-10
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    err = float(np.nanmax(np.abs(out.astype(np.float64) - ref))) if ref.size else 0.0
    assert err <= tol * scale, f"max error {err} (scale {scale})"


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# ------------------------------------------------------------ BatchNormalization


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5), (2, 7, 9), (2, 3, 5, 7), (1, 4, 3, 2, 5)])
def test_batchnorm(dtype, shape):
    r = rng(zlib.crc32(str(shape).encode()) % 1000)
    c = shape[1]
    x = randn(r, shape, dtype)
    scale, bias, mean = (randn(r, (c,), dtype) for _ in range(3))
    var = (r.random(c) + 0.1).astype(dtype)
    eps = 1e-3
    (y,) = tsr.run_op("BatchNormalization", [x, scale, bias, mean, var], {"epsilon": eps})
    ref = F.batch_norm(t(x), t(mean), t(var), t(scale), t(bias), training=False, eps=eps)
    assert_close(y, ref.numpy(), dtype)


def test_batchnorm_opset11_and_constants():
    r = rng(1)
    x = randn(r, (2, 3, 4, 5), np.float32)
    p = [randn(r, (3,), np.float32) for _ in range(3)] + [np.full(3, 0.5, np.float32)]
    (y,) = tsr.run_op("BatchNormalization", [x] + p, opset=11, const_inputs=(1, 2, 3, 4))
    ref = F.batch_norm(t(x), t(p[2]), t(p[3]), t(p[0]), t(p[1]), training=False, eps=1e-5)
    assert_close(y, ref.numpy())


def bn_inputs(c_params=3):
    r = rng(2)
    x = randn(r, (2, 3, 4), np.float32)
    return [x] + [np.ones(c_params, np.float32) for _ in range(4)]


def test_batchnorm_errors():
    with pytest.raises(tsr.TesseraError, match="training"):
        tsr.run_op("BatchNormalization", bn_inputs(), {"training_mode": 1})
    with pytest.raises(tsr.TesseraError, match="training"):
        tsr.run_op("BatchNormalization", bn_inputs(), n_outputs=3, opset=14)
    with pytest.raises(tsr.TesseraError, match="4 elements but X has 3 channels"):
        tsr.run_op("BatchNormalization", bn_inputs(4))
    with pytest.raises(tsr.TesseraError, match="rank >= 2"):
        tsr.run_op("BatchNormalization", [np.ones(3, np.float32)] + bn_inputs()[1:])
    inputs = bn_inputs()
    inputs[4] = inputs[4].astype(np.float64)
    with pytest.raises(tsr.TesseraError, match="float64"):
        tsr.run_op("BatchNormalization", inputs)


# ------------------------------------------------------------ LayerNormalization


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((5, 7), -1), ((2, 3, 9), -1), ((2, 3, 5), 1),
                                        ((3, 2, 5, 3), -3), ((4, 6), 0)])
def test_layernorm(dtype, shape, axis):
    r = rng(len(shape) * 10 + axis)
    x = randn(r, shape, dtype) * 3 + 1
    norm_shape = shape[axis:]
    scale, bias = randn(r, norm_shape, dtype), randn(r, norm_shape, dtype)
    eps = 1e-4
    y, mean, inv = tsr.run_op("LayerNormalization", [x, scale, bias],
                              {"axis": axis, "epsilon": eps}, n_outputs=3)
    ref = F.layer_norm(t(x), norm_shape, t(scale), t(bias), eps)
    assert_close(y, ref.numpy(), dtype)
    red = tuple(range(len(shape) + axis if axis < 0 else axis, len(shape)))
    x64 = x.astype(np.float64)
    ref_mean = x64.mean(axis=red, keepdims=True)
    ref_inv = 1.0 / np.sqrt(x64.var(axis=red, keepdims=True) + eps)
    # stash_type 1 (the default) makes Mean and InvStdDev float32
    assert_close(mean, ref_mean, np.float32)
    assert_close(inv, ref_inv, np.float32)


def test_layernorm_no_bias_broadcast_scale_and_stash64():
    r = rng(3)
    x = randn(r, (3, 4, 5), np.float64)
    scale = randn(r, (5,), np.float64)  # broadcast over the normalized dim of size 4
    y, mean = tsr.run_op("LayerNormalization", [x, scale, None],
                         {"axis": -2, "stash_type": 11}, n_outputs=2)
    mu = x.mean(axis=(1, 2), keepdims=True)
    ref = (x - mu) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5) * scale
    assert_close(y, ref, np.float64)
    assert_close(mean, mu, np.float64)


def test_layernorm_errors():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(tsr.TesseraError, match="axis 3 is out of range for rank 3"):
        tsr.run_op("LayerNormalization", [x, np.ones(4, np.float32)], {"axis": 3})
    with pytest.raises(tsr.TesseraError, match="does not broadcast"):
        tsr.run_op("LayerNormalization", [x, np.ones(5, np.float32)])
    with pytest.raises(tsr.TesseraError, match="B"):
        tsr.run_op("LayerNormalization", [x, np.ones(4, np.float32), np.ones(3, np.float32)])
    with pytest.raises(tsr.TesseraError, match="stash_type"):
        tsr.run_op("LayerNormalization", [x, np.ones(4, np.float32)], {"stash_type": 16})


# ------------------------------------------------------------------ Gemm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([0, 1], repeat=2)))
@pytest.mark.parametrize("c_shape", [None, (), (1,), "n", "1n", "m1", "mn"])
def test_gemm(dtype, trans_a, trans_b, c_shape):
    r = rng(trans_a * 2 + trans_b)
    m, k, n = 7, 13, 5
    a = randn(r, (k, m) if trans_a else (m, k), dtype)
    b = randn(r, (n, k) if trans_b else (k, n), dtype)
    alpha, beta = 0.7, -1.3
    if isinstance(c_shape, str):
        c_shape = tuple({"m": m, "n": n, "1": 1}[ch] for ch in c_shape)
    c = None if c_shape is None else randn(r, c_shape, dtype)
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta}
    (y,) = tsr.run_op("Gemm", [a, b] if c is None else [a, b, c], attrs)
    ref = alpha * ((a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b))
    if c is not None:
        ref = ref + beta * c.astype(np.float64)
    assert_close(y, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_tiles_and_threads(dtype, trans_b):
    # crosses the 64 x 256 x 256 tile edges, with two threads
    r = rng(4)
    m, k, n = 67, 301, 270
    a = randn(r, (m, k), dtype)
    b = randn(r, (n, k) if trans_b else (k, n), dtype)
    c = randn(r, (n,), dtype)
    (y,) = tsr.run_op("Gemm", [a, b, c], {"transB": trans_b}, threads=2, const_inputs=(1, 2))
    ref = a.astype(np.float64) @ (b.T if trans_b else b) + c
    assert_close(y, ref, dtype)


def test_gemm_errors():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(tsr.TesseraError, match="inner dims differ.*K=4.*K=5"):
        tsr.run_op("Gemm", [a, np.ones((5, 2), np.float32)])
    with pytest.raises(tsr.TesseraError, match="does not broadcast"):
        tsr.run_op("Gemm", [a, np.ones((4, 2), np.float32), np.ones((3,), np.float32)])
    with pytest.raises(tsr.TesseraError, match="2-D"):
        tsr.run_op("Gemm", [np.ones((2, 3, 4), np.float32), np.ones((4, 2), np.float32)])
    with pytest.raises(tsr.TesseraError, match="float64"):
        tsr.run_op("Gemm", [a, np.ones((4, 2), np.float64)])


# ---------------------------------------------------------------- MatMul

MATMUL_SHAPES = [
    ((5,), (5,)),
    ((5,), (5, 3)),
    ((4, 5), (5,)),
    ((3, 5), (5, 7)),
    ((2, 3, 5), (5, 7)),
    ((3, 5), (4, 5, 7)),
    ((2, 1, 3, 5), (3, 5, 2)),
    ((6, 3, 5), (5,)),
    ((1, 2, 1, 2, 1, 2, 3, 4), (2, 1, 2, 1, 2, 1, 4, 3)),
    ((3, 70, 300), (1, 300, 260)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul(dtype, shapes, threads):
    r = rng(len(shapes[0]) * 7 + len(shapes[1]))
    a, b = randn(r, shapes[0], dtype), randn(r, shapes[1], dtype)
    (y,) = tsr.run_op("MatMul", [a, b], threads=threads)
    assert_close(y, torch.matmul(t(a).double(), t(b).double()).numpy(), dtype)


def test_matmul_errors():
    with pytest.raises(tsr.TesseraError, match="inner dims differ.*K=5.*K=4"):
        tsr.run_op("MatMul", [np.ones((3, 5), np.float32), np.ones((4, 2), np.float32)])
    with pytest.raises(tsr.TesseraError, match="batch dims.*do not broadcast"):
        tsr.run_op("MatMul", [np.ones((2, 3, 5), np.float32), np.ones((3, 5, 2), np.float32)])
    with pytest.raises(tsr.TesseraError, match="rank >= 1"):
        tsr.run_op("MatMul", [np.ones((), np.float32), np.ones((3,), np.float32)])
    with pytest.raises(tsr.TesseraError, match="int64"):
        tsr.run_op("MatMul", [np.ones((2, 2), np.int64), np.ones((2, 2), np.int64)])


# ---------------------------------------------------------------- Einsum

EINSUM_CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("B G H I D, B G H J D -> B G H I J", [(2, 1, 3, 4, 5), (2, 1, 3, 6, 5)]),
    ("bij,bjk->bik", [(3, 2, 5), (3, 5, 4)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(5, 5)]),
    ("ij->ji", [(3, 7)]),
    ("ij", [(3, 7)]),
    ("ji", [(3, 7)]),
    ("ij,ij->", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ijk->", [(2, 3, 4)]),
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 3)]),
    ("bA,Ab", [(3, 4), (4, 3)]),
    ("zB,Ba", [(3, 4), (4, 2)]),
    ("iij->j", [(3, 3, 2)]),
    ("nchw,kc->nkhw", [(2, 3, 4, 5), (6, 3)]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("equation,shapes", EINSUM_CASES)
def test_einsum(dtype, equation, shapes):
    r = rng(len(equation))
    xs = [randn(r, s, dtype) for s in shapes]
    (y,) = tsr.run_op("Einsum", xs, {"equation": equation})
    ref = np.einsum(equation.replace(" ", ""), *[x.astype(np.float64) for x in xs])
    assert_close(y, ref, dtype)
    ref_torch = torch.einsum(equation.replace(" ", ""), *[t(x).double() for x in xs])
    assert_close(y, ref_torch.numpy(), dtype)


def test_einsum_errors():
    a, b = np.ones((3, 4), np.float32), np.ones((5, 2), np.float32)
    with pytest.raises(tsr.TesseraError, match="ellipsis"):
        tsr.run_op("Einsum", [a], {"equation": "...j->j"})
    with pytest.raises(tsr.TesseraError, match="label 'j' has size 4 in input 0 and 5 in input 1"):
        tsr.run_op("Einsum", [a, b], {"equation": "ij,jk->ik"})
    with pytest.raises(tsr.TesseraError, match="rank 2 but its equation term has 3"):
        tsr.run_op("Einsum", [a], {"equation": "ijk->i"})
    with pytest.raises(tsr.TesseraError, match="output label 'q' is in no input"):
        tsr.run_op("Einsum", [a], {"equation": "ij->q"})
    with pytest.raises(tsr.TesseraError, match="2 input terms but the node has 1"):
        tsr.run_op("Einsum", [a], {"equation": "ij,jk->ik"})
    with pytest.raises(tsr.TesseraError, match="size 3 in input 0 and 4"):
        tsr.run_op("Einsum", [a], {"equation": "ii->i"})


# ------------------------------------------------------------- Reductions

REDUCE_NP = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max,
             "ReduceMin": np.min}


def reduce_cases():
    r = rng(5)
    cases = []
    for shape in [(7,), (3, 5), (2, 3, 5), (3, 1, 4, 5)]:
        for n_axes in range(len(shape) + 1):
            axes = sorted(r.choice(len(shape), n_axes, replace=False).tolist())
            axes = [a - len(shape) if r.random() < 0.5 else a for a in axes]
            cases.append((shape, axes))
    return cases


@pytest.mark.parametrize("op", list(REDUCE_NP))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("opset", [11, 17])
def test_reduce(op, dtype, keepdims, opset):
    r = rng(6)
    for shape, axes in reduce_cases():
        x = randn(r, shape, dtype)
        if op == "ReduceSum" and opset >= 13:
            inputs = [x, np.array(axes, np.int64)] if axes else [x]
            (y,) = tsr.run_op(op, inputs, {"keepdims": keepdims}, opset=opset, const_inputs=(1,))
        else:
            attrs = {"keepdims": keepdims}
            if axes:
                attrs["axes"] = axes
            (y,) = tsr.run_op(op, [x], attrs, opset=opset, threads=2)
        ref = REDUCE_NP[op](x.astype(np.float64), axis=tuple(axes) if axes else None,
                            keepdims=bool(keepdims))
        assert_close(y, ref, dtype)


def test_reduce_torch_and_nan():
    r = rng(7)
    x = randn(r, (4, 6, 5), np.float32)
    (y,) = tsr.run_op("ReduceMean", [x], {"axes": [1, 2], "keepdims": 0})
    assert_close(y, t(x).mean(dim=(1, 2)).numpy())
    x[1, 2, 3] = np.nan
    (mx,) = tsr.run_op("ReduceMax", [x], {"axes": [-1]})
    assert_close(mx, t(x).amax(dim=-1, keepdim=True).numpy())
    (mn,) = tsr.run_op("ReduceMin", [x], {"axes": [0, 1]})
    assert_close(mn, t(x).amin(dim=(0, 1), keepdim=True).numpy())


def test_reduce_sum_noop_and_empty_axes():
    x = rng(8).standard_normal((3, 4))
    (y,) = tsr.run_op("ReduceSum", [x], {"noop_with_empty_axes": 1})
    assert_close(y, x)
    (y,) = tsr.run_op("ReduceSum", [x, np.zeros(0, np.int64)], {"keepdims": 0},
                      const_inputs=(1,))
    assert_close(y, x.sum())


def test_reduce_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="axis 2 is out of range for rank 2"):
        tsr.run_op("ReduceMean", [x], {"axes": [2]})
    with pytest.raises(tsr.TesseraError, match="axis -3 is out of range"):
        tsr.run_op("ReduceSum", [x, np.array([-3])], const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="given twice"):
        tsr.run_op("ReduceMax", [x], {"axes": [1, -1]})
    with pytest.raises(tsr.TesseraError, match="second input"):
        tsr.run_op("ReduceSum", [x], {"axes": [0]}, opset=13)
    with pytest.raises(tsr.TesseraError, match="attribute"):
        tsr.run_op("ReduceSum", [x, np.array([0])], opset=11, const_inputs=(1,))
    with pytest.raises(tsr.TesseraError, match="int64"):
        tsr.run_op("ReduceMean", [np.ones((2, 3), np.int64)])


# ------------------------------------------------------- Softmax, LogSoftmax


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((7,), None), ((3, 5), None), ((2, 3, 5), 1),
                                        ((2, 3, 5), 0), ((2, 3, 4, 5), -2), ((4, 3, 5), -1)])
def test_softmax_opset13(op, dtype, shape, axis):
    r = rng(len(shape) * 3 + (axis or 0))
    x = randn(r, shape, dtype) * 4
    attrs = {} if axis is None else {"axis": axis}
    (y,) = tsr.run_op(op, [x], attrs, opset=13, threads=2)
    fn = torch.softmax if op == "Softmax" else torch.log_softmax
    assert_close(y, fn(t(x).double(), dim=-1 if axis is None else axis).numpy(), dtype)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((3, 5), None), ((2, 3, 5), None), ((2, 3, 4, 5), 2),
                                        ((2, 3, 5), 0), ((4, 3, 5), -1)])
def test_softmax_opset11_coerces_to_2d(op, dtype, shape, axis):
    r = rng(len(shape) * 5 + (axis or 0))
    x = randn(r, shape, dtype) * 4
    attrs = {} if axis is None else {"axis": axis}
    (y,) = tsr.run_op(op, [x], attrs, opset=11)
    a = 1 if axis is None else axis % len(shape)
    x2 = x.astype(np.float64).reshape(int(np.prod(shape[:a])), -1)
    shifted = x2 - x2.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    ref = np.exp(shifted - logsum) if op == "Softmax" else shifted - logsum
    assert_close(y, ref.reshape(shape), dtype)


def test_softmax_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1e4, -999.0]], np.float32)
    (y,) = tsr.run_op("Softmax", [x])
    assert_close(y, torch.softmax(t(x), dim=-1).numpy())
    (y,) = tsr.run_op("LogSoftmax", [x])
    assert_close(y, torch.log_softmax(t(x), dim=-1).numpy())


def test_softmax_errors():
    with pytest.raises(tsr.TesseraError, match="axis 2 is out of range for rank 2"):
        tsr.run_op("Softmax", [np.ones((2, 3), np.float32)], {"axis": 2})
    with pytest.raises(tsr.TesseraError, match="axis -3 is out of range"):
        tsr.run_op("LogSoftmax", [np.ones((2, 3), np.float32)], {"axis": -3}, opset=11)
    with pytest.raises(tsr.TesseraError, match="rank >= 1"):
        tsr.run_op("Softmax", [np.ones((), np.float32)])
    with pytest.raises(tsr.TesseraError, match="int64"):
        tsr.run_op("Softmax", [np.ones((2, 3), np.int64)])


# ------------------------------------------------- symbolic shape inference


def symbolic_output(op, inputs, attrs=None, n_outputs=1, opset=17):
    """Builds one node over inputs given as shapes (float32), (dtype, shape)
    pairs or numpy constants; returns the inferred output shapes (symbols by
    name, -1 unknown)."""
    g = tsr.Graph()
    g.set_opset(opset)
    names = []
    for i, x in enumerate(inputs):
        name = f"in{i}"
        if isinstance(x, np.ndarray):
            g.add_constant(name, x)
        elif isinstance(x, tuple):
            g.add_input(name, x[0], x[1])
        else:
            g.add_input(name, np.float32, x)
        names.append(name)
    outs = [f"out{o}" for o in range(n_outputs)]
    g.add_node(op, names, outs, attrs)
    for o in outs:
        g.add_output(o)
    return [shape for _, _, shape in g.outputs()]


def test_symbolic_shapes():
    assert symbolic_output("MatMul", [["batch", 3, 4], [4, 5]]) == [["batch", 3, 5]]
    assert symbolic_output("MatMul", [["n"], ["n", 6]]) == [[6]]
    assert symbolic_output("Gemm", [["batch", 4], [6, 4]], {"transB": 1}) == [["batch", 6]]
    assert symbolic_output("Einsum", [["b", 3, 4], ["b", 4, 5]], {"equation": "bij,bjk->bik"}) \
        == [["b", 3, 5]]
    assert symbolic_output("ReduceMean", [["batch", 3, 4]], {"axes": [1]}) == [["batch", 1, 4]]
    # axes from a graph input: known only at run time, the rank follows from keepdims
    assert symbolic_output("ReduceSum", [["batch", 3, 4], (np.int64, ["k"])]) == [[-1, -1, -1]]
    assert symbolic_output("ReduceSum", [["batch", 3, 4], (np.int64, [1])],
                           {"keepdims": 0}) == [[-1, -1]]
    assert symbolic_output("Softmax", [["batch", 10]]) == [["batch", 10]]
    assert symbolic_output("BatchNormalization", [["batch", 3, 5]] + [[3]] * 4) \
        == [["batch", 3, 5]]
    assert symbolic_output("LayerNormalization", [["batch", "seq", 8], [8]], n_outputs=3) \
        == [["batch", "seq", 8], ["batch", "seq", 1], ["batch", "seq", 1]]
    with pytest.raises(tsr.TesseraError, match="inner dims differ"):
        symbolic_output("MatMul", [["batch", 3, 4], [5, 2]])
    with pytest.raises(tsr.TesseraError, match="channels"):
        symbolic_output("BatchNormalization", [["batch", 3, 5]] + [[4]] * 4)

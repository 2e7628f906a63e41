"""Element-wise ops (unary.c and binary.c) against numpy and PyTorch:
broadcasting patterns, dtypes, attributes and the errors they must raise."""

import zlib

import numpy as np
import pytest
import torch

import tsr

FLOATS = [np.float32, np.float64]
INTS = [np.int64, np.int32]

# Pairs of broadcastable shapes: same shape, scalars, per-channel, rank
# differences, size-1 dims on both sides, empty tensors, rank 8.
SHAPE_PAIRS = [
    ((3, 5, 7), (3, 5, 7)),
    ((2, 3, 5, 7), ()),
    ((), (4, 3)),
    ((), ()),
    ((1,), (5, 3)),
    ((2, 3, 5, 7), (3, 1, 1)),
    ((2, 3, 5, 7), (1, 3, 1, 1)),
    ((3, 1, 1), (2, 3, 5, 7)),
    ((4, 5), (3, 4, 5)),
    ((3, 1, 5), (1, 4, 1)),
    ((6, 1), (1, 7)),
    ((2, 1, 3, 1), (5, 1, 4)),
    ((5, 7), (7,)),
    ((5, 7), (5, 1)),
    ((0, 3), (3,)),
    ((2, 1, 2, 1, 3, 1, 2, 1), (1, 2, 1, 2, 1, 3, 1, 2)),
]


def rand(rng, shape, dtype, low=-3.0, high=3.0):
    if np.issubdtype(dtype, np.integer):
        return rng.integers(int(low) * 10, int(high) * 10 + 1, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    return rng.uniform(low, high, size=shape).astype(dtype)


def assert_close(got, ref, dtype=None):
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == (dtype or ref.dtype), (got.dtype, dtype or ref.dtype)
    if got.dtype == np.float32:
        scale = max(1.0, float(np.nanmax(np.abs(ref)))) if ref.size and not np.isnan(ref).all() else 1.0
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * scale)
    elif got.dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)
    else:
        np.testing.assert_array_equal(got, ref)


def run1(op, inputs, attrs=None, **kw):
    return tsr.run_op(op, inputs, attrs, **kw)[0]


def trunc_div(a, b):
    q = np.abs(a) // np.abs(b)
    return (np.sign(a) * np.sign(b) * q).astype(a.dtype)


BINARY_REFS = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: trunc_div(a, b) if np.issubdtype(a.dtype, np.integer) else a / b,
}


@pytest.mark.parametrize("op", list(BINARY_REFS))
@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_arithmetic_broadcast(op, dtype, shapes):
    rng = np.random.default_rng(zlib.crc32(f"{op} {shapes}".encode()))
    a = rand(rng, shapes[0], dtype)
    b = rand(rng, shapes[1], dtype)
    if op == "Div":
        b = np.where(b == 0, 3, b).astype(dtype)
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(dtype)
    with np.errstate(over="ignore"):
        assert_close(run1(op, [a, b]), BINARY_REFS[op](a, b))


@pytest.mark.parametrize("op", list(BINARY_REFS))
def test_arithmetic_constants_fold(op):
    """Both inputs constant: the node is folded at build time by the same kernel."""
    rng = np.random.default_rng(1)
    a = rand(rng, (3, 4), np.float64)
    b = rand(rng, (4,), np.float64) + 5.0
    assert_close(run1(op, [a, b], const_inputs=(0, 1)), BINARY_REFS[op](a, b))


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Where"])
@pytest.mark.parametrize("shapes", [((3, 20011), (3, 1)), ((2, 9, 61, 67), (9, 1, 1)),
                                    ((40000,), ()), ((7, 3, 4099), (7, 3, 4099))], ids=str)
def test_large_threaded(op, shapes):
    """Long rows cut into blocks, odometer over outer dims, several threads."""
    rng = np.random.default_rng(2)
    a = rand(rng, shapes[0], np.float32)
    b = np.asarray(rand(rng, shapes[1], np.float32) + 4.0, dtype=np.float32)
    for threads in (1, 2, 3):
        if op == "Where":
            cond = rng.random(shapes[1]) < 0.5
            assert_close(run1(op, [cond, a, b], threads=threads), np.where(cond, a, b))
        else:
            assert_close(run1(op, [a, b], threads=threads), BINARY_REFS[op](a, b))


def test_integer_semantics():
    a = np.array([7, -7, 7, -7, 0, 5, np.iinfo(np.int64).min], dtype=np.int64)
    b = np.array([2, 2, -2, -2, 3, -1, -1], dtype=np.int64)
    # Division truncates toward zero like C and ONNX, not floor like Python;
    # INT64_MIN / -1 wraps instead of trapping.
    got = run1("Div", [a, b])
    np.testing.assert_array_equal(got[:6], [3, -3, -3, 3, 0, -5])
    assert got[6] == np.iinfo(np.int64).min
    big = np.array([np.iinfo(np.int64).max], dtype=np.int64)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(run1("Add", [big, big]), big + big)
        np.testing.assert_array_equal(run1("Mul", [big, big]), big * big)
    i32 = np.array([np.iinfo(np.int32).max, -9], dtype=np.int32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(run1("Add", [i32, i32]), i32 + i32)
    np.testing.assert_array_equal(run1("Div", [i32, np.int32(4)]), [536870911, -2])


@pytest.mark.parametrize("op,attrs", [("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1})])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_integer_division_by_zero_is_an_error(op, attrs, dtype):
    a = np.array([7, -7, 3], dtype=dtype)
    b = np.array([2, 0, 1], dtype=dtype)
    with pytest.raises(tsr.TesseraError, match="division by zero"):
        tsr.run_op(op, [a, b], attrs)


def test_floor_division_of_shape_values():
    """PyTorch exports floor division of non-negative shape values as Div."""
    shape = np.array([224, 37, 5], dtype=np.int64)
    two = np.array(2, dtype=np.int64)
    np.testing.assert_array_equal(run1("Div", [shape, two], const_inputs=(0, 1)), shape // 2)
    np.testing.assert_array_equal(run1("Div", [shape, two]), shape // 2)


# ------------------------------------------------------------------ Pow

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("exp_dtype", FLOATS + INTS)
@pytest.mark.parametrize("shapes", [((3, 5, 7), (3, 5, 7)), ((2, 3, 5), ()), ((2, 3, 5), (3, 1)),
                                    ((), (4, 1)), ((5, 1, 3), (1, 4, 1))], ids=str)
def test_pow(dtype, exp_dtype, shapes):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.1, 3.0, size=shapes[0]).astype(dtype)
    if np.issubdtype(exp_dtype, np.integer):
        e = rng.integers(-3, 5, size=shapes[1]).astype(exp_dtype)
        base = np.asarray(base * np.where(rng.random(shapes[0]) < 0.5, -1, 1), dtype=dtype)
    else:
        e = rng.uniform(-2.0, 3.0, size=shapes[1]).astype(exp_dtype)
    got = run1("Pow", [base, e])
    ref = torch.pow(torch.from_numpy(base.astype(np.float64)),
                    torch.from_numpy(e.astype(np.float64))).numpy().astype(dtype)
    assert_close(got, ref, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, 1.0, 0.0, -1.0])
def test_pow_scalar_exponents(dtype, exponent):
    rng = np.random.default_rng(4)
    x = rng.uniform(-3.0, 3.0, size=(4, 9, 11)).astype(dtype)
    if exponent == 0.5:
        x = np.abs(x)
    got = run1("Pow", [x, np.array(exponent, dtype=dtype)], const_inputs=(1,))
    assert_close(got, np.power(x.astype(np.float64), exponent).astype(dtype), dtype)
    got = run1("Pow", [x, np.array([exponent], dtype=np.float32)])
    assert_close(got, np.power(x.astype(np.float64), np.float32(exponent)).astype(dtype), dtype)


def test_pow_errors():
    with pytest.raises(tsr.TesseraError, match="int64"):
        run1("Pow", [np.arange(3, dtype=np.int64), np.int64(2)])
    with pytest.raises(tsr.TesseraError, match="bool"):
        run1("Pow", [np.ones(3, np.float32), np.ones(3, np.bool_)])
    with pytest.raises(tsr.TesseraError, match="broadcast"):
        run1("Pow", [np.ones((2, 3), np.float32), np.ones(2, np.float32)])


# ------------------------------------------------------ Max / Min / Sum

VARIADIC_REFS = {
    "Max": np.maximum,
    "Min": np.minimum,
    "Sum": np.add,
}

VARIADIC_SHAPES = [
    [(3, 5, 7)],
    [(3, 5, 7), (3, 5, 7)],
    [(2, 3, 5, 7), (3, 1, 1), ()],
    [(1,), (4, 1), (1, 5), (3, 4, 5)],
    [(5, 1, 3), (4, 1), (1,), (5, 4, 3), ()],
    [(), ()],
]


@pytest.mark.parametrize("op", list(VARIADIC_REFS))
@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("shapes", VARIADIC_SHAPES, ids=str)
def test_variadic(op, dtype, shapes):
    rng = np.random.default_rng(len(shapes) + 17 * len(op))
    xs = [rand(rng, s, dtype) for s in shapes]
    ref = xs[0]
    for x in xs[1:]:
        ref = VARIADIC_REFS[op](ref, x)
    assert_close(run1(op, xs), np.asarray(ref, dtype=dtype))


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_max_min_nan(op, dtype):
    a = np.array([np.nan, 1.0, 2.0, np.nan, -np.inf], dtype=dtype)
    b = np.array([1.0, np.nan, 3.0, np.nan, 0.0], dtype=dtype)
    fn = torch.maximum if op == "Max" else torch.minimum
    ref = fn(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(run1(op, [a, b]), ref)


def test_variadic_flops_and_errors():
    g = tsr.Graph()
    for name, shape in (("a", [2, 3, 4]), ("b", [3, 1]), ("c", [4])):
        g.add_input(name, np.float32, shape)
    g.add_node("Sum", ["a", "b", "c"], ["y"])
    g.add_output("y")
    plan = tsr.Plan(g)
    rng = np.random.default_rng(5)
    a, b, c = (rand(rng, s, np.float32) for s in ((2, 3, 4), (3, 1), (4,)))
    assert_close(plan.run([a, b, c])[0], a + b + c)
    assert plan.stats().flops == pytest.approx(2 * 24)
    with pytest.raises(tsr.TesseraError, match="broadcast"):
        run1("Max", [np.ones((2, 3), np.float32), np.ones(3, np.float32), np.ones(2, np.float32)])
    with pytest.raises(tsr.TesseraError, match="float64"):
        run1("Min", [np.ones(3, np.float32), np.ones(3, np.float32), np.ones(3, np.float64)])
    with pytest.raises(tsr.TesseraError, match="bool"):
        run1("Sum", [np.ones(3, np.bool_), np.ones(3, np.bool_)])


# ------------------------------------------------------------ comparisons

COMPARE_REFS = {"Equal": np.equal, "Less": np.less, "Greater": np.greater}


@pytest.mark.parametrize("op", list(COMPARE_REFS))
@pytest.mark.parametrize("dtype", FLOATS + INTS + [np.bool_])
@pytest.mark.parametrize("shapes", SHAPE_PAIRS[:12], ids=str)
def test_compare(op, dtype, shapes):
    rng = np.random.default_rng(6)
    if dtype == np.bool_:
        a, b = rand(rng, shapes[0], dtype), rand(rng, shapes[1], dtype)
    else:
        # Small integer values so that equal pairs occur.
        a = rng.integers(-2, 3, size=shapes[0]).astype(dtype)
        b = rng.integers(-2, 3, size=shapes[1]).astype(dtype)
    if dtype == np.bool_ and op != "Equal":
        with pytest.raises(tsr.TesseraError, match="bool"):
            run1(op, [a, b])
        return
    assert_close(run1(op, [a, b]), COMPARE_REFS[op](a, b), np.bool_)


def test_compare_nan():
    a = np.array([np.nan, 1.0, np.nan], dtype=np.float32)
    b = np.array([np.nan, np.nan, 0.0], dtype=np.float32)
    for op, fn in COMPARE_REFS.items():
        np.testing.assert_array_equal(run1(op, [a, b]), fn(a, b))


# ------------------------------------------------------------------ Where

WHERE_SHAPES = [
    ((3, 5, 7), (3, 5, 7), (3, 5, 7)),
    ((2, 1, 5, 7), (3, 1, 1), ()),
    ((), (4, 3), (4, 1)),
    ((1, 7), (5, 1), (7,)),
    ((4, 1, 6), (1, 5, 1), (1, 1, 6)),
    ((0, 3), (3,), ()),
]


@pytest.mark.parametrize("dtype", FLOATS + INTS + [np.bool_])
@pytest.mark.parametrize("shapes", WHERE_SHAPES, ids=str)
def test_where(dtype, shapes):
    rng = np.random.default_rng(7)
    cond = rng.random(shapes[0]) < 0.5
    x, y = rand(rng, shapes[1], dtype), rand(rng, shapes[2], dtype)
    assert_close(run1("Where", [cond, x, y]), np.where(cond, x, y))


def test_where_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="float32"):
        run1("Where", [x, x, x])
    with pytest.raises(tsr.TesseraError, match="int64"):
        run1("Where", [x > 0, x, np.ones(3, np.int64)])
    with pytest.raises(tsr.TesseraError, match="broadcast"):
        run1("Where", [np.ones(4, np.bool_), x, x])


# -------------------------------------------------------------------- Mod

@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS[:12], ids=str)
def test_mod_integers(dtype, shapes):
    rng = np.random.default_rng(8)
    a = rand(rng, shapes[0], dtype)
    b = rand(rng, shapes[1], dtype)
    b = np.where(b == 0, 7, b).astype(dtype)
    assert_close(run1("Mod", [a, b]), np.mod(a, b))  # sign of the divisor
    assert_close(run1("Mod", [a, b], {"fmod": 1}), np.fmod(a, b))  # sign of the dividend


@pytest.mark.parametrize("dtype", FLOATS)
def test_mod_floats(dtype):
    rng = np.random.default_rng(9)
    a = rng.uniform(-10, 10, size=(3, 4, 5)).astype(dtype)
    b = rng.uniform(0.5, 3, size=(4, 1)).astype(dtype) * np.where(rng.random((4, 1)) < 0.5, -1, 1)
    b = b.astype(dtype)
    assert_close(run1("Mod", [a, b], {"fmod": 1}), np.fmod(a, b))
    with pytest.raises(tsr.TesseraError, match="fmod"):
        run1("Mod", [a, b])
    with pytest.raises(tsr.TesseraError, match="fmod"):
        run1("Mod", [a, b], {"fmod": 2})


# ------------------------------------------------------ common errors

@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Equal", "Less",
                                "Greater", "Mod"])
def test_binary_errors(op):
    a = np.ones((3, 4), np.int64)
    with pytest.raises(tsr.TesseraError, match=r"\[3, 4\].*do(es)? not broadcast|"
                                               r"do(es)? not broadcast.*\[3, 4\]"):
        run1(op, [a, np.ones((5,), np.int64)])
    with pytest.raises(tsr.TesseraError, match="broadcast"):
        run1(op, [np.ones((2, 3, 1), np.int64), np.ones((4, 2), np.int64)])
    with pytest.raises(tsr.TesseraError, match="int32"):
        run1(op, [a, np.ones((4,), np.int32)])
    if op in ("Equal", "Less", "Greater"):
        return  # they take uint8 (test_ops_int.py)
    with pytest.raises(tsr.TesseraError, match=op):
        run1(op, [a.astype(np.uint8), a.astype(np.uint8)])


def test_symbolic_shapes():
    g = tsr.Graph()
    g.add_input("x", np.float32, ["batch", 3, 1])
    g.add_input("y", np.float32, [1, 4])
    g.add_input("z", np.float32, ["batch", 1, 1])
    g.add_node("Mul", ["x", "y"], ["xy"])
    g.add_node("Sum", ["xy", "z", "y"], ["s"])
    g.add_output("s")
    assert g.outputs()[0][2] == ["batch", 3, 4]
    rng = np.random.default_rng(10)
    for batch in (1, 5):
        x, y, z = (rand(rng, s, np.float32) for s in ((batch, 3, 1), (1, 4), (batch, 1, 1)))
        assert_close(g.run([x, y, z])[0], x * y + z + y)
    g.add_input("w", np.float32, ["batch", 4, 5])
    with pytest.raises(tsr.TesseraError, match="broadcast"):
        g.add_node("Add", ["x", "w"], ["bad"])


# ------------------------------------------------------------------ unary

def t(x):
    return torch.from_numpy(np.require(x, requirements="C"))


# ONNX's Selu defaults (float32-rounded; PyTorch's constants differ in the 8th digit).
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def softplus(x):
    return t(np.logaddexp(0.0, x.numpy()))


UNARY_CASES = {
    # op: (attrs, torch reference, input range)
    "Abs": ({}, torch.abs, (-3, 3)),
    "Neg": ({}, torch.neg, (-3, 3)),
    "Relu": ({}, torch.relu, (-3, 3)),
    "LeakyRelu": ({}, lambda x: torch.nn.functional.leaky_relu(x, 0.01), (-3, 3)),
    "Elu": ({}, torch.nn.functional.elu, (-3, 3)),
    "Selu": ({}, lambda x: SELU_GAMMA * torch.where(x > 0, x, SELU_ALPHA * torch.expm1(x)),
             (-3, 3)),
    "Sigmoid": ({}, torch.sigmoid, (-20, 20)),
    "HardSigmoid": ({}, lambda x: torch.clamp(0.2 * x + 0.5, 0, 1), (-4, 4)),
    "HardSwish": ({}, torch.nn.functional.hardswish, (-5, 5)),
    "Tanh": ({}, torch.tanh, (-4, 4)),
    "Erf": ({}, torch.erf, (-3, 3)),
    "Exp": ({}, torch.exp, (-5, 5)),
    "Log": ({}, torch.log, (0.01, 10)),
    "Sqrt": ({}, torch.sqrt, (0, 10)),
    "Reciprocal": ({}, torch.reciprocal, (0.1, 5)),
    "Floor": ({}, torch.floor, (-5, 5)),
    "Ceil": ({}, torch.ceil, (-5, 5)),
    "Softplus": ({}, softplus, (-30, 30)),
}


@pytest.mark.parametrize("op", list(UNARY_CASES))
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(3, 5, 7), (), (1,), (2, 1, 13, 1, 3), (0, 4)], ids=str)
def test_unary(op, dtype, shape):
    attrs, fn, (lo, hi) = UNARY_CASES[op]
    rng = np.random.default_rng(11)
    x = rng.uniform(lo, hi, size=shape).astype(dtype)
    ref = fn(t(x.astype(np.float64))).numpy().astype(dtype)
    assert_close(run1(op, [x], attrs), ref, dtype)


@pytest.mark.parametrize("op,attrs,fn", [
    ("LeakyRelu", {"alpha": 0.2}, lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
    ("Elu", {"alpha": 0.7}, lambda x: torch.nn.functional.elu(x, 0.7)),
    ("Selu", {"alpha": 1.5, "gamma": 2.0}, lambda x: 2.0 * torch.where(x > 0, x, 1.5 * torch.expm1(x))),
    ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, torch.nn.functional.hardsigmoid),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.2}, lambda x: torch.clamp(0.3 * x + 0.2, 0, 1)),
])
@pytest.mark.parametrize("dtype", FLOATS)
def test_unary_attributes(op, attrs, fn, dtype):
    rng = np.random.default_rng(12)
    x = rng.uniform(-5, 5, size=(4, 6, 9)).astype(dtype)
    ref = fn(t(x.astype(np.float64))).numpy().astype(dtype)
    assert_close(run1(op, [x], attrs), ref, dtype)


def test_unary_extremes():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float64)
    assert_close(run1("Softplus", [x]), np.logaddexp(0.0, x))
    assert_close(run1("Sigmoid", [x]), torch.sigmoid(t(x)).numpy())
    nan = np.array([np.nan, -1.0, 2.0], dtype=np.float32)
    for op in ("Relu", "HardSigmoid", "HardSwish", "Abs", "Neg", "Tanh", "LeakyRelu", "Exp"):
        assert np.isnan(run1(op, [nan])[0]), op


@pytest.mark.parametrize("op,fn", [("Abs", np.abs), ("Neg", np.negative)])
@pytest.mark.parametrize("dtype", INTS)
def test_unary_integers(op, fn, dtype):
    x = np.array([[-5, 0, 7], [np.iinfo(dtype).max, np.iinfo(dtype).min, -1]], dtype=dtype)
    with np.errstate(over="ignore"):
        assert_close(run1(op, [x]), fn(x))


def test_unary_threaded():
    rng = np.random.default_rng(13)
    x = rng.uniform(-3, 3, size=(5, 20011)).astype(np.float32)
    assert_close(run1("Tanh", [x], threads=3), np.tanh(x))
    assert_close(run1("Clip", [x, np.float32(-1), np.float32(0.5)], threads=2), np.clip(x, -1, 0.5))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bounds", [(None, None), (-1.0, None), (None, 0.5), (-0.5, 1.5),
                                    (1.0, -1.0)], ids=str)
@pytest.mark.parametrize("const", [False, True])
def test_clip(dtype, bounds, const):
    rng = np.random.default_rng(14)
    x = rng.uniform(-3, 3, size=(3, 7, 5)).astype(dtype)
    x[0, 0, 0] = np.nan
    lo, hi = bounds
    inputs = [x] + [None if v is None else np.array(v, dtype=dtype) for v in bounds]
    while inputs[-1] is None and len(inputs) > 1:
        inputs.pop()
    kw = {"const_inputs": (1, 2)} if const else {}
    ref = torch.clamp(t(x), min=lo, max=hi).numpy() if bounds != (None, None) else x
    assert_close(run1("Clip", inputs, **kw), ref, dtype)


def test_not_and_unary_errors():
    b = np.array([[True, False, True]])
    np.testing.assert_array_equal(run1("Not", [b]), ~b)
    with pytest.raises(tsr.TesseraError, match="float32"):
        run1("Not", [np.ones(3, np.float32)])
    with pytest.raises(tsr.TesseraError, match="int64"):
        run1("Relu", [np.ones(3, np.int64)])
    with pytest.raises(tsr.TesseraError, match="bool"):
        run1("Abs", [np.ones(3, np.bool_)])
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tsr.TesseraError, match="float64"):
        run1("Clip", [x, np.float64(0.0)])
    with pytest.raises(tsr.TesseraError, match="scalar"):
        run1("Clip", [x, np.zeros(3, np.float32)])
    with pytest.raises(tsr.TesseraError, match="min"):
        run1("Clip", [x], {"min": 0.0})

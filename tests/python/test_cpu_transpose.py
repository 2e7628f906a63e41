"""The cpu backend's Transpose (kernels_misc.c) against numpy: random ranks, permutations and
odd sizes (size-1 axes, axes that merge, tails of the tiles), every element size, inputs large
enough to be split between threads, and the attention shapes it was written for."""

import itertools

import numpy as np
import pytest

import tsr
from test_cpu_kernels import isa_params

DTYPES = [np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.bool_]


def transpose(x, perm, threads=2):
    """x through one Transpose node on the cpu device, asserting the cpu backend ran it."""
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", x.dtype, list(x.shape))
    g.add_node("Transpose", ["x"], ["y"], None if perm is None else {"perm": list(perm)},
               name="op")
    g.add_output("y")
    plan = tsr.Plan(g, device="cpu", threads=threads)
    got = plan.run([x])[0]
    assert plan.node_backend("op") == "cpu", plan.node_backend("op")
    return got


def sample(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.standard_normal(shape) > 0
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_random_permutations_match_numpy(dtype):
    rng = np.random.default_rng(7)
    for _ in range(40):
        rank = int(rng.integers(1, 7))
        shape = tuple(int(d) for d in rng.choice([1, 2, 3, 5, 16, 17, 33], rank))
        while np.prod(shape) > 100_000:
            shape = tuple(max(1, d // 2) for d in shape)
        perm = tuple(int(a) for a in rng.permutation(rank))
        x = sample(rng, shape, dtype)
        got = transpose(x, perm)
        np.testing.assert_array_equal(got, np.transpose(x, perm), err_msg=f"{shape} {perm}")


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("threads", [1, 2])
def test_every_permutation_of_rank_4(isa, threads, monkeypatch):
    """Each of the 24 orders of [3, 17, 1, 20]: merged axes, a size-1 axis, tile tails."""
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(1)
    shape = (3, 17, 1, 20)
    x = rng.standard_normal(shape).astype(np.float32)
    for perm in itertools.permutations(range(4)):
        got = transpose(x, perm, threads)
        np.testing.assert_array_equal(got, np.transpose(x, perm), err_msg=str(perm))


@pytest.mark.parametrize("shape,perm", [
    ((8, 32, 128), (1, 0, 2)),        # a transformer's [B, T, E] -> [T, B, E]
    ((32, 32, 32), (0, 2, 1)),        # K^T of 32 heads: [B*h, T, d] -> [B*h, d, T]
    ((2, 4, 32, 33), (0, 2, 3, 1)),   # odd tails on both tiled axes
    ((257, 129), None),               # default perm: reversed axes
    ((3, 1000, 70), (2, 1, 0)),       # large enough for both threads
])
def test_large_and_model_shapes(shape, perm):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    got = transpose(x, perm)
    np.testing.assert_array_equal(got, np.transpose(x, perm))


def test_empty_tensor():
    x = np.zeros((3, 0, 4), np.float32)
    got = transpose(x, (2, 0, 1))
    assert got.shape == (4, 3, 0)

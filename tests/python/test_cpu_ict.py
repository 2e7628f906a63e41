"""The cpu kernel of ICTProduct (src/backends/cpu/kernels_ict.c) against the ref kernel.

In coordinates, with channels on both inputs (the product basis of ICTP and its
gradients), the cpu kernel runs the nonzero couplings one vector of channels at a time
(16 float32 or 8 float64 lanes) with a tail for the channels past the last whole vector;
channel-less inputs fold the coupling first, sum_channels sums the channels first. Every
path up to rank 3 and some to rank 5, channel counts below, at and around the vector
widths, float32 and float64, one and two threads, every vector level of this machine."""

import numpy as np
import pytest

import tsr
from test_ict import DOMAIN, paths

CHANNELS = [1, 3, 8, 16, 17, 40]


def run(x, y, attrs, device, threads=1):
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", x.dtype, list(x.shape))
    g.add_input("y", y.dtype, list(y.shape))
    g.add_node("ICTProduct", ["x", "y"], ["z"], attrs, domain=DOMAIN, name="op")
    g.add_output("z")
    plan = tsr.Plan(g, device=device, threads=threads)
    z = plan.run([x, y])[0]
    assert plan.node_backend("op") == device, f"ICTProduct ran on {plan.node_backend('op')}"
    return z


def check(x, y, attrs, threads=1):
    got = run(x, y, attrs, "cpu", threads)
    want = run(x, y, attrs, "ref")
    tol = 1e-12 if x.dtype == np.float64 else 2e-5
    scale = max(1.0, float(np.abs(want).max()))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ls", paths(3) + [(4, 3, 5), (5, 5, 4), (2, 4, 2)])
def test_coordinates_with_channels_matches_ref(ls, dtype):
    rng = np.random.default_rng(sum(ls))
    l1, l2, l3 = ls
    for c in CHANNELS:
        n = 1 + c % 5
        x = rng.standard_normal((n, 2 * l1 + 1, c)).astype(dtype)
        y = rng.standard_normal((n, 2 * l2 + 1, c)).astype(dtype)
        check(x, y, dict(l1=l1, l2=l2, l3=l3, alpha=0.7, coordinates=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ls", [(1, 1, 2), (3, 2, 1), (2, 2, 0), (3, 3, 2)])
def test_coordinates_broadcast_and_sums_match_ref(ls, dtype):
    """A channel axis of 1 (folded), no channel axis, and sum_channels."""
    rng = np.random.default_rng(7)
    l1, l2, l3 = ls
    attrs = dict(l1=l1, l2=l2, l3=l3, coordinates=1)
    for c in (1, 5, 17):
        x = rng.standard_normal((3, 2 * l1 + 1, c)).astype(dtype)
        y = rng.standard_normal((3, 2 * l2 + 1, c)).astype(dtype)
        check(x, y[:, :, :1], attrs)
        check(x[:, :, :1], y, attrs)
        check(x, y[:, :, 0], attrs)
        check(x, y, dict(attrs, sum_channels=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_rows_two_threads(dtype):
    """Enough rows for the kernel to start a second thread; each row its own output."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 7, 37)).astype(dtype)
    y = rng.standard_normal((300, 5, 37)).astype(dtype)
    check(x, y, dict(l1=3, l2=2, l3=3, coordinates=1), threads=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_components_with_channels_match_ref(dtype):
    """Without coordinates the same coupling runs between the projections."""
    rng = np.random.default_rng(5)
    for c in (1, 17):
        x = rng.standard_normal((2, 27, c)).astype(dtype)
        y = rng.standard_normal((2, 9, c)).astype(dtype)
        check(x, y, dict(l1=3, l2=2, l3=1))

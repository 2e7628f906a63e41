"""The cpu kernels of ICTProduct (src/backends/cpu/kernels_ict.c) and BesselBasis
(kernels_ict_edge.c) against the ref kernels.

In coordinates, with channels on both inputs (the product basis of ICTP and its
gradients), the cpu kernel runs the nonzero couplings on tiles of 4 or 8 vectors of
channels (16 float32 or 8 float64 lanes) across rows, each row's last vector
zero-padded: rows and channels that fill no tile, whole tiles, and a partial last one;
channel-less inputs fold the coupling first, sum_channels sums the channels first. Every
path up to rank 3 and some to rank 5, channel counts below, at and around the vector
widths, float32 and float64, one and two threads, every vector level of this machine.
BesselBasis and its first derivative (the forces' radial term) on distances below, at and
beyond the cutoff; higher derivatives stay on ref."""

import numpy as np
import pytest

import tsr
from test_ict import DOMAIN, paths

CHANNELS = [1, 3, 8, 16, 17, 40]


def run(x, y, attrs, device, threads=1, op="ICTProduct", backend=None):
    g = tsr.Graph()
    g.set_opset(17)
    inputs = [x] if y is None else [x, y]
    for i, t in enumerate(inputs):
        g.add_input(f"in{i}", t.dtype, list(t.shape))
    g.add_node(op, [f"in{i}" for i in range(len(inputs))], ["z"], attrs, domain=DOMAIN,
               name="op")
    g.add_output("z")
    plan = tsr.Plan(g, device=device, threads=threads)
    z = plan.run(inputs)[0]
    want = backend or device
    assert plan.node_backend("op") == want, f"{op} ran on {plan.node_backend('op')}"
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
        for n in (1 + c % 5, 11):
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("derivative", [0, 1])
@pytest.mark.parametrize("n_basis,p", [(8, 5), (1, 1), (20, 6)])
def test_bessel_matches_ref(n_basis, p, derivative, dtype):
    rng = np.random.default_rng(n_basis + p)
    rc = 4.5
    r = np.concatenate([rng.uniform(0.05, 6.0, 37), [1e-3, rc, rc * (1 - 1e-9), 7.0]])
    r = r.reshape(41, 1).astype(dtype)
    attrs = dict(r_cutoff=rc, n_basis=n_basis, p=p, derivative=derivative)
    got = run(r, None, attrs, "cpu", op="BesselBasis")
    want = run(r, None, attrs, "ref", op="BesselBasis")
    assert got.shape == want.shape == (41, 1, n_basis)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * float(np.abs(want).max()))
    assert not np.any(got[[-3, -1]])  # r_c and beyond


def test_bessel_two_threads_and_higher_derivative_on_ref():
    rng = np.random.default_rng(2)
    r = rng.uniform(0.1, 5.5, (3000, 3))
    attrs = dict(r_cutoff=5.0)
    np.testing.assert_allclose(run(r, None, attrs, "cpu", threads=2, op="BesselBasis"),
                               run(r, None, attrs, "ref", op="BesselBasis"), rtol=0, atol=1e-12)
    run(r, None, dict(attrs, derivative=2), "cpu", op="BesselBasis", backend="ref")


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_bessel_rejects_bad_distance_on_cpu(bad):
    r = np.array([1.0, 2.0, bad, 3.0])
    with pytest.raises(tsr.TesseraError, match=r"r\[2\] is .*positive distances"):
        run(r, None, dict(r_cutoff=5.0), "cpu", op="BesselBasis")

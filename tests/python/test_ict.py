"""The ICTP ops (domain ai.tessera): ICT, ICTProduct and BesselBasis, the scaled SiLU as a
composition and the segment sum (GatherGrad) over edges.

References are written here from docs/ictp.md and ictp-checkpoint.md, independently of the C
code: T^l from the delta-term formula with explicit einsums over every placement of the
deltas, the symmetric traceless projection as the null space of the symmetry and trace
constraints (an SVD), the products from the contraction, that projection and the constant
c(l1, l2, l3) binom(l3, l1 - k). Gradients and Hessian-vector products (tsr_graph_gradient
applied twice, with respect to every input at once) against central finite differences in
float64."""

import itertools
import math

import numpy as np
import pytest

import tsr

DOMAIN = "ai.tessera"
EPS = 1e-6
SILU_SCALE = 1.6765324703310907


# ----------------------------------------------------------------- references


def dfact(n):
    return 1 if n <= 0 else n * dfact(n - 2)


def matchings(positions, m):
    """Every set of m disjoint pairs of `positions`."""
    if m == 0:
        yield []
        return
    if len(positions) < 2 * m:
        return
    first, rest = positions[0], positions[1:]
    yield from matchings(rest, m)  # first stays unpaired
    for j, other in enumerate(rest):
        for tail in matchings(rest[:j] + rest[j + 1:], m - 1):
            yield [(first, other)] + tail


LETTERS = "abcdefghijklmnop"


def ict_ref(n, l):
    """T^l(n) of one unit vector, [3] * l, by the general construction of ictp.md."""
    if l == 0:
        return np.array(1.0)
    total = np.zeros((3,) * l)
    for m in range(l // 2 + 1):
        coef = (-1) ** m * dfact(2 * l - 2 * m - 1) / dfact(2 * l - 1)
        for pairs in matchings(list(range(l)), m):
            paired = {p for pair in pairs for p in pair}
            ops, subs = [], []
            for a, b in pairs:
                ops.append(np.eye(3))
                subs.append(LETTERS[a] + LETTERS[b])
            for p in range(l):
                if p not in paired:
                    ops.append(n)
                    subs.append(LETTERS[p])
            total += coef * np.einsum(",".join(subs) + "->" + LETTERS[:l], *ops)
    return dfact(2 * l - 1) / math.factorial(l) * total


_STF = {}


def stf_projector(l):
    """Orthogonal projector onto the symmetric traceless rank-l tensors, [3^l, 3^l]: the
    null space of the constraints x = swap of two neighbouring indices, trace = 0."""
    if l not in _STF:
        size = 3 ** l
        eye = np.eye(size).reshape((size,) + (3,) * l)
        gram = np.zeros((size, size))
        for i in range(l - 1):
            perm = list(range(l + 1))
            perm[i + 1], perm[i + 2] = perm[i + 2], perm[i + 1]
            a = np.eye(size) - np.transpose(eye, perm).reshape(size, size)
            gram += a.T @ a
        if l >= 2:
            tr = np.einsum("zii...->z...", eye).reshape(size, -1).T
            gram += tr.T @ tr
        vals, vecs = np.linalg.eigh(gram)
        null = vecs[:, vals < 1e-8]
        assert null.shape[1] == 2 * l + 1 and np.min(vals[vals >= 1e-8], initial=1.0) > 1e-3
        _STF[l] = null @ null.T
    return _STF[l]


def path_constant(l1, l2, l3):
    """c(l1, l2, l3) binom(l3, l1 - k) of ictp-checkpoint.md §3."""
    k = (l1 + l2 - l3) // 2
    a, b = l2 - k, l1 - k
    f = math.factorial
    c = (f(l1) * f(l2) * dfact(2 * l3 - 1) * f(a) * f(b)
         / (f(l3) * dfact(2 * a - 1) * dfact(2 * b - 1) * dfact(2 * k - 1) * f(a + b + k)))
    return c * math.comb(l3, b)


def contract(x, y, l1, l2, k):
    """Last k indices of x with the first k of y (flat rows of 3^l)."""
    xs = x.reshape(3 ** (l1 - k), 3 ** k)
    ys = y.reshape(3 ** k, 3 ** (l2 - k))
    return (xs @ ys).reshape(-1)


def product_ref(x, y, l1, l2, l3, alpha=1.0):
    """The op's definition on rows x [3^l1], y [3^l2]: alpha K Π(contract_k(Πx, Πy))."""
    k = (l1 + l2 - l3) // 2
    px, py = stf_projector(l1) @ x, stf_projector(l2) @ y
    return alpha * path_constant(l1, l2, l3) * stf_projector(l3) @ contract(px, py, l1, l2, k)


def paths(lmax):
    return [(a, b, c) for a in range(lmax + 1) for b in range(lmax + 1) for c in range(lmax + 1)
            if abs(a - b) <= c <= a + b and (a + b - c) % 2 == 0]


def unit_vectors(rng, e):
    v = rng.standard_normal((e, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_orthogonal(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if rng.random() < 0.5:
        q = -q  # a reflection half of the time
    return q


def rotate(t, rot, l):
    """R acting on every Cartesian index of rows [N, 3^l, ...]."""
    n = t.shape[0]
    rest = t.shape[2:]
    a = t.reshape((n,) + (3,) * l + rest)
    for ax in range(l):
        a = np.moveaxis(np.tensordot(rot, a, axes=([1], [ax + 1])), 0, ax + 1)
    return a.reshape(t.shape)


def stf_random(rng, l, n, c):
    """Random symmetric traceless rows [n, 3^l, c]."""
    raw = rng.standard_normal((n, 3 ** l, c))
    return np.einsum("ij,njc->nic", stf_projector(l), raw)


# ---------------------------------------------------------------- the ops


def ict(v, l, normalize=1):
    return tsr.run_op("ICT", [v], {"l": l, "normalize": normalize}, domain=DOMAIN)[0]


def product(x, y, l1, l2, l3, alpha=1.0):
    return tsr.run_op("ICTProduct", [x, y], {"l1": l1, "l2": l2, "l3": l3, "alpha": alpha},
                      domain=DOMAIN)[0]


def bessel(r, rc=5.0, n_basis=8, p=5, derivative=0):
    return tsr.run_op("BesselBasis", [r], {"r_cutoff": rc, "n_basis": n_basis, "p": p,
                                           "derivative": derivative}, domain=DOMAIN)[0]


def assert_close(got, want, what, rtol=1e-12):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-300)
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert err <= rtol * scale, f"{what}: max error {err:.3g} vs max |ref| {scale:.3g}"


# -------------------------------------------------------------------- ICT


@pytest.mark.parametrize("l", range(7))
def test_ict_matches_delta_formula(l):
    rng = np.random.default_rng(l)
    v = rng.standard_normal((5, 3)) * rng.uniform(0.3, 4.0, (5, 1))
    got = ict(v, l)
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    want = np.stack([ict_ref(row, l).reshape(-1) for row in n])
    assert_close(got, want, f"T^{l}")
    # normalize = 0 on the unit vectors is the same tensor
    assert_close(ict(n, l, normalize=0), want, f"T^{l} of unit vectors", rtol=1e-13)
    # off the sphere it is C_l Π(v^⊗l), homogeneous of degree l
    cl = dfact(2 * l - 1) / math.factorial(l)
    outer = np.stack([np.einsum(",".join(LETTERS[i] for i in range(l)) + "->" + LETTERS[:l],
                                *([row] * l)).reshape(-1) if l else np.ones(1) for row in v])
    assert_close(ict(v, l, normalize=0), cl * outer @ stf_projector(l), f"C_l Π(v^⊗{l})")


@pytest.mark.parametrize("l", range(7))
def test_ict_symmetric_traceless_unit_contraction(l):
    rng = np.random.default_rng(10 + l)
    n = unit_vectors(rng, 4)
    t = ict(n, l)
    assert t.shape == (4, 3 ** l)
    for row, nr in zip(t, n):
        a = row.reshape((3,) * l)
        for perm in itertools.permutations(range(l)):
            assert np.max(np.abs(np.transpose(a, perm) - a)) < 1e-13
        if l >= 2:
            assert np.max(np.abs(np.einsum("ii...->...", a))) < 1e-13
        full = a
        for _ in range(l):
            full = np.tensordot(full, nr, axes=([0], [0]))
        assert abs(float(full) - 1.0) < 1e-13  # T^l contracted with n over all indices is 1


@pytest.mark.parametrize("l", range(7))
def test_ict_equivariant(l):
    rng = np.random.default_rng(20 + l)
    v = rng.standard_normal((6, 3))
    for _ in range(3):
        rot = random_orthogonal(rng)
        assert_close(ict(v @ rot.T, l), rotate(ict(v, l), rot, l), f"R T^{l}", rtol=1e-12)


def test_ict_rejects_bad_input():
    with pytest.raises(tsr.TesseraError, match="vector 1"):
        ict(np.array([[1.0, 0, 0], [0, 0, 0]]), 2)
    with pytest.raises(tsr.TesseraError, match="\\[E, 3\\]"):
        ict(np.zeros((4, 2)), 2)
    with pytest.raises(tsr.TesseraError, match="l is 9"):
        ict(np.ones((1, 3)), 9)


# -------------------------------------------------------------- ICTProduct


@pytest.mark.parametrize("l1,l2,l3", paths(6))
def test_product_of_icts_is_ict(l1, l2, l3):
    """Rule 3 of ictp.md: T^l1(n) ⊗ T^l2(n) = T^l3(n), every path with ranks <= 6."""
    rng = np.random.default_rng(100 * l1 + 10 * l2 + l3)
    n = unit_vectors(rng, 3)
    got = product(ict(n, l1), ict(n, l2), l1, l2, l3)
    assert_close(got, ict(n, l3), f"T^{l1} x T^{l2} -> T^{l3}", rtol=1e-12)
    # on any inputs the output is symmetric and traceless
    z = product(rng.standard_normal((2, 3 ** l1)), rng.standard_normal((2, 3 ** l2)), l1, l2, l3)
    assert np.max(np.abs(z)) > 1e-6
    assert_close(z @ stf_projector(l3), z, f"{l1}x{l2}->{l3} is STF")


def test_constants_agree_with_authors_steps():
    """l3 = 2 and 3 with both inputs keeping free indices: the authors' explicit steps."""
    rng = np.random.default_rng(3)
    cases = [(a, b, c) for a, b, c in paths(3) if c >= 2 and min(a, b) > (a + b - c) // 2]
    assert len(cases) == 7
    for l1, l2, l3 in cases:
        k = (l1 + l2 - l3) // 2
        x, y = stf_random(rng, l1, 1, 1)[0, :, 0], stf_random(rng, l2, 1, 1)[0, :, 0]
        k_ = path_constant(l1, l2, l3) / math.comb(l3, l1 - k)  # c alone
        m = contract(x, y, l1, l2, k).reshape((3,) * l3)
        if l3 == 2:
            steps = m + m.T - 2 / 3 * np.eye(3) * np.trace(m)
        else:
            z = contract(x, y, l1, l2, k + 1)
            zd = np.einsum("i,jk->ijk", z, np.eye(3))
            cyc = lambda t: t + np.transpose(t, (1, 2, 0)) + np.transpose(t, (2, 0, 1))
            steps = cyc(m) - 2 / 5 * cyc(zd)
        got = product(x[None, :], y[None, :], l1, l2, l3)[0]
        assert_close(got, k_ * steps.reshape(-1), f"authors' steps {l1}x{l2}->{l3}")


@pytest.mark.parametrize("l1,l2,l3", paths(3) + [(4, 2, 6), (6, 6, 0), (5, 3, 4), (2, 4, 4)])
def test_product_matches_reference_and_is_stf(l1, l2, l3):
    rng = np.random.default_rng(7 * l1 + 3 * l2 + l3)
    c = 3
    for x, y in [(stf_random(rng, l1, 4, c), stf_random(rng, l2, 4, c)),
                 (rng.standard_normal((4, 3 ** l1, c)), rng.standard_normal((4, 3 ** l2, c)))]:
        got = product(x, y, l1, l2, l3, alpha=0.7)
        want = np.stack([np.stack([product_ref(x[i, :, ch], y[i, :, ch], l1, l2, l3, 0.7)
                                   for ch in range(c)], axis=1) for i in range(4)])
        assert_close(got, want, f"{l1}x{l2}->{l3}")
        assert np.max(np.abs(got)) > 1e-3
        assert_close(np.einsum("ij,njc->nic", stf_projector(l3), got), got, "output is STF")
    # broadcast channels: y without a channel axis, or with one channel
    y2 = stf_random(rng, l2, 4, 1)
    want = product(x, np.repeat(y2, c, axis=2), l1, l2, l3)
    assert_close(product(x, y2, l1, l2, l3), want, "y of one channel")
    assert_close(product(x, y2[:, :, 0], l1, l2, l3), want, "y without channels")


def coordinate_basis(l):
    """Q [3^l, 2l+1] of the ops' coordinates, T = Q t, fitted from ICTs of random vectors."""
    n = unit_vectors(np.random.default_rng(40 + l), 6 * l + 6)
    t = tsr.run_op("ICT", [n], {"l": l, "coordinates": 1}, domain=DOMAIN)[0]
    q = np.linalg.lstsq(t, ict(n, l), rcond=None)[0].T
    assert_close(t @ q.T, ict(n, l), f"rank {l}: T = Q t", rtol=1e-11)
    return q


@pytest.mark.parametrize("l", range(7))
def test_coordinates_orthonormal_basis(l):
    """coordinates = 1 stores the 2l+1 coordinates in an orthonormal basis of the STF tensors
    (the identity at rank 1, 1 at rank 0)."""
    q = coordinate_basis(l)
    assert q.shape == (3 ** l, 2 * l + 1)
    assert_close(q.T @ q, np.eye(2 * l + 1), f"rank {l}: Q^T Q = I", rtol=1e-11)
    assert_close(q @ q.T, stf_projector(l), f"rank {l}: Q Q^T = the STF projector", rtol=1e-11)
    if l <= 1:
        assert_close(q, np.eye(2 * l + 1), f"rank {l}: the standard basis", rtol=1e-14)


@pytest.mark.parametrize("l1,l2,l3", paths(4))
def test_product_in_coordinates(l1, l2, l3):
    """The product of coordinates is the coordinates of the product, with channels, broadcast
    and sum_channels alike."""
    rng = np.random.default_rng(70 + 25 * l1 + 5 * l2 + l3)
    q1, q2, q3 = coordinate_basis(l1), coordinate_basis(l2), coordinate_basis(l3)
    x, y = rng.standard_normal((3, 2 * l1 + 1, 4)), rng.standard_normal((3, 2 * l2 + 1, 4))
    comp = lambda q, t: np.einsum("ij,nj...->ni...", q, t)
    for yy, extra in [(y, {}), (y[:, :, 0], {}), (y, {"sum_channels": 1})]:
        attrs = dict(l1=l1, l2=l2, l3=l3, alpha=0.6, **extra)
        got = tsr.run_op("ICTProduct", [x, yy], dict(attrs, coordinates=1), domain=DOMAIN)[0]
        want = tsr.run_op("ICTProduct", [comp(q1, x), comp(q2, yy)], attrs, domain=DOMAIN)[0]
        assert_close(comp(q3, got), want, f"{l1}x{l2}->{l3} {extra or yy.ndim}")


@pytest.mark.parametrize("l1,l2,l3", [(2, 1, 3), (3, 3, 2), (1, 1, 0), (3, 2, 1)])
def test_coordinates_gradient_second_order(l1, l2, l3):
    rng = np.random.default_rng(90 + l1 + l2 + l3)
    x, yv = rng.standard_normal((2, 2 * l1 + 1, 3)), rng.standard_normal((2, 3))

    def chain(g, names):
        g.add_node("ICT", [names[1]], ["t"], {"l": l2, "coordinates": 1}, domain=DOMAIN)
        g.add_node("ICTProduct", [names[0], "t"], ["out0"],
                   {"l1": l1, "l2": l2, "l3": l3, "coordinates": 1}, domain=DOMAIN)
        return ["out0"]
    hv = check_second_order(chain, [x, yv])
    assert max(float(np.max(np.abs(h))) for h in hv) > 1e-6


@pytest.mark.parametrize("l1,l2,l3", paths(6))
def test_product_equivariant(l1, l2, l3):
    rng = np.random.default_rng(50 + 9 * l1 + 3 * l2 + l3)
    x, y = rng.standard_normal((3, 3 ** l1, 2)), rng.standard_normal((3, 3 ** l2, 2))
    z = product(x, y, l1, l2, l3)
    for _ in range(2):
        rot = random_orthogonal(rng)
        got = product(rotate(x, rot, l1), rotate(y, rot, l2), l1, l2, l3)
        assert_close(got, rotate(z, rot, l3), f"R ({l1}x{l2}->{l3})", rtol=1e-12)


def test_product_rejects_bad_paths_and_shapes():
    x = np.ones((2, 9, 3))
    with pytest.raises(tsr.TesseraError, match="not a product path"):
        product(x, x, 2, 2, 3)
    with pytest.raises(tsr.TesseraError, match="rank-1 input"):
        product(x, np.ones((2, 9, 3)), 2, 1, 1)
    with pytest.raises(tsr.TesseraError, match="channels"):
        product(x, np.ones((2, 3, 2)), 2, 1, 1)
    with pytest.raises(tsr.TesseraError, match="rows"):
        product(x, np.ones((3, 3, 3)), 2, 1, 1)


# -------------------------------------------------------------- Bessel basis


def bessel_ref(r, rc, n_basis, p):
    x = r / rc
    f = (1 - (p + 1) * (p + 2) / 2 * x ** p + p * (p + 2) * x ** (p + 1)
         - p * (p + 1) / 2 * x ** (p + 2))
    f = np.where(r < rc, f, 0.0)
    w = np.arange(1, n_basis + 1) * np.pi / rc
    return np.sqrt(2 / rc) * np.sin(w * r[..., None]) / r[..., None] * f[..., None]


def test_bessel_matches_formula_and_derivatives():
    rng = np.random.default_rng(5)
    r = np.concatenate([rng.uniform(0.4, 4.9, 20), [5.0, 5.5]]).reshape(2, 11)
    for p, rc in [(5, 5.0), (6, 3.7)]:
        got = bessel(r, rc, 8, p)
        assert got.shape == (2, 11, 8)
        assert_close(got, bessel_ref(r, rc, 8, p), "basis")
        inside = r < rc - 1e-3
        for d in (1, 2, 3):
            h = 1e-4
            fd = (bessel(r + h, rc, 8, p, d - 1) - bessel(r - h, rc, 8, p, d - 1)) / (2 * h)
            got = bessel(r, rc, 8, p, d)
            assert_close(got[inside], fd[inside], f"derivative {d}", rtol=1e-6)
            assert np.all(got[~(r < rc)] == 0)
    with pytest.raises(tsr.TesseraError, match="positive distances"):
        bessel(np.array([1.0, 0.0]))


# ------------------------------------------------------ gradients, second order


def graph_of(build, inputs):
    """A graph with float64 inputs in0.. (ints as constants) and the outputs build adds."""
    g = tsr.Graph()
    g.set_opset(17)
    names, wrt = [], []
    for i, x in enumerate(inputs):
        name = f"in{i}"
        if x.dtype == np.float64:
            g.add_input(name, x.dtype, list(x.shape))
            wrt.append(name)
        else:
            g.add_constant(name, x)
        names.append(name)
    outs = build(g, names)
    for o in outs:
        g.add_output(o)
    return g, outs, wrt


def numeric_grads(f, xs):
    grads = []
    for k, x in enumerate(xs):
        grad = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            saved = x[idx]
            x[idx] = saved + EPS
            hi = f(xs)
            x[idx] = saved - EPS
            lo = f(xs)
            x[idx] = saved
            grad[idx] = (hi - lo) / (2 * EPS)
        grads.append(grad)
    return grads


def check_second_order(build, inputs, rtol=1e-6):
    """Gradient of sum(out * seed) and the Hessian-vector product, both with respect to
    every float input at once, against central differences; the checked values must not
    all vanish."""
    rng = np.random.default_rng(11)
    g, outs, wrt = graph_of(build, inputs)
    xs = [np.array(x) for x in inputs if x.dtype == np.float64]
    plan = tsr.Plan(g)
    seeds = [rng.standard_normal(y.shape) for y in plan.run(xs)]

    def loss(values):
        return sum(float(np.sum(y * s)) for y, s in zip(plan.run(values), seeds))

    gg = tsr.gradient(g, outs, wrt)
    grad_plan = tsr.Plan(gg)
    n_out = len(outs)
    grads = grad_plan.run(xs + seeds)[n_out:]
    for got, want, w in zip(grads, numeric_grads(loss, [x.copy() for x in xs]), wrt):
        assert_close(got, want, f"d/d{w}", rtol)
    assert max(float(np.max(np.abs(x))) for x in grads) > 1e-6, "the gradient vanishes"

    grad_names = [f"{w}__grad" for w in wrt]
    vs = [rng.standard_normal(x.shape) for x in xs]
    hg = tsr.gradient(gg, grad_names, wrt)
    hv = tsr.Plan(hg).run(xs + seeds + vs)[-len(wrt):]
    plus = [x + EPS * v for x, v in zip(xs, vs)]
    minus = [x - EPS * v for x, v in zip(xs, vs)]
    hi, lo = grad_plan.run(plus + seeds)[n_out:], grad_plan.run(minus + seeds)[n_out:]
    for got, a, b, w in zip(hv, hi, lo, wrt):
        assert_close(got, (a - b) / (2 * EPS), f"Hessian-vector product in {w}", rtol * 10)
    return hv


def node(op, attrs, domain=DOMAIN):
    def build(g, names):
        g.add_node(op, names, ["out0"], attrs, domain=domain)
        return ["out0"]
    return build


@pytest.mark.parametrize("l", range(7))
@pytest.mark.parametrize("normalize", [1, 0])
def test_ict_gradient_second_order(l, normalize):
    rng = np.random.default_rng(l)
    v = rng.standard_normal((3, 3)) * 1.3
    build = node("ICT", {"l": l, "normalize": normalize})
    if l == 0:
        g, outs, wrt = graph_of(build, [v])
        got = tsr.Plan(tsr.gradient(g, outs, wrt)).run([v, np.ones((3, 1))])[-1]
        assert np.all(got == 0)
        return
    hv = check_second_order(build, [v])
    if l >= 2 or normalize:
        assert np.max(np.abs(hv[0])) > 1e-3, "the Hessian-vector product vanishes"


# The two highest-rank paths take a minute each under the sanitizer build.
GRAD_PATHS = paths(3) + [pytest.param(4, 2, 6, marks=pytest.mark.models), (5, 3, 4),
                         pytest.param(6, 6, 0, marks=pytest.mark.models)]


@pytest.mark.parametrize("l1,l2,l3", GRAD_PATHS)
def test_product_gradient_second_order(l1, l2, l3):
    rng = np.random.default_rng(31 * l1 + 7 * l2 + l3)
    small = l1 + l2 > 6
    n, c = (1, 1) if small else (2, 3)
    x = rng.standard_normal((n, 3 ** l1, c))
    y = rng.standard_normal((n, 3 ** l2, c if small else 1))
    hv = check_second_order(node("ICTProduct", {"l1": l1, "l2": l2, "l3": l3, "alpha": 0.8}),
                            [x, y])
    assert max(float(np.max(np.abs(h))) for h in hv) > 1e-6
    if not small:
        # y without a channel axis (an edge ICT), x through an ICT of its own
        yv = rng.standard_normal((n, 3))

        def chain(g, names):
            g.add_node("ICT", [names[1]], ["t"], {"l": l2}, domain=DOMAIN)
            g.add_node("ICTProduct", [names[0], "t"], ["out0"], {"l1": l1, "l2": l2, "l3": l3},
                       domain=DOMAIN)
            return ["out0"]
        check_second_order(chain, [x, yv])


@pytest.mark.parametrize("derivative", [0, 1, 2])
def test_bessel_gradient_second_order(derivative):
    rng = np.random.default_rng(derivative)
    r = rng.uniform(0.6, 4.6, (3, 4))
    check_second_order(node("BesselBasis", {"r_cutoff": 5.0, "n_basis": 8, "p": 5,
                                            "derivative": derivative}), [r])


def test_scaled_silu_composition():
    """σ(x) = 1.6765324703310907 x sigmoid(x) from Sigmoid and Mul: values and two orders."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 5)) * 2

    def build(g, names):
        g.add_constant("scale", np.array(SILU_SCALE))
        g.add_node("Sigmoid", [names[0]], ["s"])
        g.add_node("Mul", [names[0], "s"], ["xs"])
        g.add_node("Mul", ["xs", "scale"], ["out0"])
        return ["out0"]
    g, _, _ = graph_of(build, [x])
    got = tsr.Plan(g).run([x])[0]
    assert_close(got, SILU_SCALE * x / (1 + np.exp(-x)), "scaled SiLU")
    check_second_order(build, [x])


def test_segment_sum_is_gather_grad():
    """Scatter-add over edges [E, F] -> [N, F] by receiver index: GatherGrad, whose gradient
    is Gather (and back); second order through a nonlinear message."""
    rng = np.random.default_rng(4)
    e, n, f = 9, 4, 3
    idx = rng.integers(0, n, e).astype(np.int64)
    idx[:n] = np.arange(n)
    x = rng.standard_normal((e, f))
    want = np.zeros((n, f))
    np.add.at(want, idx, x)

    def build(g, names):
        g.add_constant("shape", np.array([n, f], dtype=np.int64))
        g.add_node("Mul", [names[0], names[0]], ["sq"])
        g.add_node("GatherGrad", [names[0], names[1], "shape"], ["out0"], {"axis": 0},
                   domain=DOMAIN)
        g.add_node("GatherGrad", ["sq", names[1], "shape"], ["out1"], {"axis": 0},
                   domain=DOMAIN)
        return ["out0", "out1"]
    g, _, _ = graph_of(build, [x, idx])
    got = tsr.Plan(g).run([x])
    assert_close(got[0], want, "segment sum")
    check_second_order(build, [x, idx])


# -------------------------------------------------------------------- float32


def test_float32_within_rounding_of_float64():
    """Kernels compute in double and round once: float32 results are within one float32
    rounding of the float64 results on the same (float32-representable) inputs."""
    rng = np.random.default_rng(9)
    u = 2.0 ** -24
    v = rng.standard_normal((7, 3)).astype(np.float32)
    for l in range(5):
        want = ict(v.astype(np.float64), l)
        got = ict(v, l)
        assert got.dtype == np.float32
        assert np.all(np.abs(got - want) <= u * np.abs(want) + 1e-300)
    for l1, l2, l3 in [(1, 1, 2), (2, 3, 3), (3, 3, 0), (2, 2, 2)]:
        x = rng.standard_normal((5, 3 ** l1, 4)).astype(np.float32)
        y = rng.standard_normal((5, 3 ** l2, 4)).astype(np.float32)
        want = product(x.astype(np.float64), y.astype(np.float64), l1, l2, l3)
        got = product(x, y, l1, l2, l3)
        assert np.all(np.abs(got - want) <= u * np.abs(want) + 1e-30)
    r = rng.uniform(0.5, 4.9, (6,)).astype(np.float32)
    want, got = bessel(r.astype(np.float64)), bessel(r)
    assert np.all(np.abs(got - want) <= u * np.abs(want) + 1e-30)


def test_species_linear_map_is_gather_and_matmul():
    """The per-species skip map sc[a, k, d] = Σ_c W[c, s(a), d] h[a, k, c] needs no op of its
    own: Transpose + Gather of W by species + batched MatMul, two orders of derivatives."""
    rng = np.random.default_rng(6)
    n, k, f, s = 5, 9, 3, 4
    species = np.array([0, 3, 1, 3, 2], dtype=np.int64)
    h, w = rng.standard_normal((n, k, f)), rng.standard_normal((f, s, f))

    def build(g, names):
        g.add_node("Transpose", [names[1]], ["wt"], {"perm": [1, 0, 2]})
        g.add_node("Gather", ["wt", names[2]], ["ws"], {"axis": 0})
        g.add_node("MatMul", [names[0], "ws"], ["out0"])
        return ["out0"]
    g, _, _ = graph_of(build, [h, w, species])
    got = tsr.Plan(g).run([h, w])[0]
    assert_close(got, np.einsum("cad,akc->akd", w[:, species, :], h), "species map")
    check_second_order(build, [h, w, species])


def test_results_do_not_depend_on_threads():
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((37, 27, 5)), rng.standard_normal((37, 9))
    v, r = rng.standard_normal((37, 3)), rng.uniform(0.5, 6.0, 37)
    for op, ins, attrs in [("ICTProduct", [x, y], {"l1": 3, "l2": 2, "l3": 3}),
                           ("ICT", [v], {"l": 4}),
                           ("BesselBasis", [r], {"r_cutoff": 5.0})]:
        one = tsr.run_op(op, ins, attrs, domain=DOMAIN, threads=1)[0]
        two = tsr.run_op(op, ins, attrs, domain=DOMAIN, threads=2)[0]
        assert np.array_equal(one, two), op

"""The fused edge convolution of ICTP (domain ai.tessera): ICTEdgeMessage and
ICTEdgeMessageGrad (src/ops/ict_edge.c), on the ref and cpu backends.

The reference is the unfused composition the model used before: Gather of the sender's
features, ICTProduct (coordinates = 1) with the edge ICT, the product by the radial weights
and the sum into each receiver (numpy's add.at). ICTProduct itself is tested against
references written from the docs in test_ict.py. Every op is one derivative of the form
T(a, y, w, b) = Σ_e Σ b[ib_e] ⊙ w_e ⊙ (a[ia_e] ⊗ y_e), so the transposed message and the
gradient op are checked against that form, and the gradient rules (first and second order,
through tsr_graph_gradient twice) against central differences in float64."""

import numpy as np
import pytest

import tsr
from test_ict import DOMAIN, check_second_order, paths

CONV_PATHS = paths(3)


def attrs_of(l1, l2, l3, alpha, **extra):
    return dict(l1=l1, l2=l2, l3=l3, alpha=alpha, **extra)


def product(x, y, l1, l2, l3, alpha):
    if x.shape[0] == 0:
        return np.zeros((0, 2 * l3 + 1) + x.shape[2:])
    return tsr.run_op("ICTProduct", [x, y], dict(attrs_of(l1, l2, l3, alpha), coordinates=1),
                      domain=DOMAIN)[0]


def message_ref(x, y, w, src, dst, l1, l2, l3, alpha):
    """Σ_{e -> i} w_e ⊙ (x[src_e] ⊗ y_e -> l3), unfused."""
    per_edge = product(x[src], y, l1, l2, l3, alpha) * w[:, None, :]
    z = np.zeros((x.shape[0], 2 * l3 + 1, x.shape[2]))
    np.add.at(z, dst, per_edge)
    return z


def form_ref(a, y, w, b, ia, ib, ls, alpha):
    return float(np.sum(message_ref(a, y, w, ia, ib, *ls, alpha) * b))


def random_case(rng, ls, n, e, c, dtype=np.float64):
    l1, l2, l3 = ls
    x = rng.standard_normal((n, 2 * l1 + 1, c))
    y = rng.standard_normal((e, 2 * l2 + 1))
    w = rng.standard_normal((e, c))
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
    return x.astype(dtype), y.astype(dtype), w.astype(dtype), src, dst


def message(x, y, w, src, dst, ls, alpha, device="ref", threads=1, transpose=0):
    return tsr.run_op("ICTEdgeMessage", [x, y, w, src, dst],
                      attrs_of(*ls, alpha, transpose=transpose), domain=DOMAIN,
                      device=device, threads=threads)[0]


def edge_grad(a, y, w, b, ia, ib, ls, alpha, device="ref", threads=1):
    return tsr.run_op("ICTEdgeMessageGrad", [a, y, w, b, ia, ib], attrs_of(*ls, alpha),
                      n_outputs=2, domain=DOMAIN, device=device, threads=threads)


def assert_close(got, want, what, tol):
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-300)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want))) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3g} against scale {scale:.3g}"


@pytest.mark.parametrize("ls", CONV_PATHS)
def test_message_matches_unfused(ls):
    rng = np.random.default_rng(sum(10 ** i * l for i, l in enumerate(ls)))
    x, y, w, src, dst = random_case(rng, ls, 6, 23, 5)
    want = message_ref(x, y, w, src, dst, *ls, 0.7)
    assert_close(message(x, y, w, src, dst, ls, 0.7), want, f"{ls} ref", 1e-13)


@pytest.mark.parametrize("device,threads", [("ref", 1), ("cpu", 1), ("cpu", 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
# 1500 edges of 40 channels: enough work on the paths of rank 1 and up for two threads,
# which the ICT kernels start only on far more work than other kernels.
@pytest.mark.parametrize("c,n,e", [(1, 3, 5), (17, 7, 40), (33, 11, 301), (40, 13, 1500),
                                   (64, 5, 0)])
def test_message_and_grad_backends(device, threads, dtype, c, n, e):
    """Every convolution path, odd channel counts (vector tails, channel slices of two
    threads), no edges at all, both directions and the gradient op, against the float64
    reference; float32 within a few float32 roundings."""
    rng = np.random.default_rng(c * 1000 + e)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for ls in CONV_PATHS:
        x, y, w, src, dst = random_case(rng, ls, n, e, c)
        b = rng.standard_normal((n, 2 * ls[2] + 1, c))
        cast = [t.astype(dtype) for t in (x, y, w, b)]
        want = message_ref(x, y, w, src, dst, *ls, 1.3)
        got = message(cast[0], cast[1], cast[2], src, dst, ls, 1.3, device, threads)
        assert got.dtype == dtype
        assert_close(got, want, f"{ls} message", tol)
        # The transposed message is the form's derivative in a: <a, EM^T(b)> = T.
        zt = message(cast[3], cast[1], cast[2], dst, src, ls, 1.3, device, threads, transpose=1)
        assert zt.shape == x.shape
        t = form_ref(x, y, w, b, src, dst, ls, 1.3)
        assert_close(np.array(np.sum(zt * x)), np.array(t), f"{ls} transposed", tol * 10)
        dw, dy = edge_grad(cast[0], cast[1], cast[2], cast[3], src, dst, ls, 1.3, device,
                           threads)
        assert dw.shape == w.shape and dy.shape == y.shape
        # T is linear in w and in y: the derivatives are T at unit w and unit y.
        want_dw = (product(x[src], y, *ls, 1.3) * b[dst]).sum(axis=1)
        want_dy = np.zeros_like(y)
        for k in range(y.shape[1]):
            unit = np.zeros_like(y)
            unit[:, k] = 1.0
            want_dy[:, k] = np.einsum("erc,ec,erc->e", product(x[src], unit, *ls, 1.3), w,
                                      b[dst])
        assert_close(dw, want_dw, f"{ls} dw", tol)
        assert_close(dy, want_dy, f"{ls} dy", tol)


def message_rows(x, y, w, src, dst, rows, ls, alpha, device, threads, transpose=0):
    return tsr.run_op("ICTEdgeMessage", [x, y, w, src, dst, rows],
                      attrs_of(*ls, alpha, transpose=transpose), domain=DOMAIN,
                      device=device, threads=threads)[0]


@pytest.mark.parametrize("device,threads", [("ref", 1), ("cpu", 1), ("cpu", 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("c,n,e,n_rows", [(17, 7, 40, 23), (40, 13, 1500, 700), (5, 3, 9, 30),
                                          (8, 4, 0, 3)])
def test_shared_weight_rows(device, threads, dtype, c, n, e, n_rows):
    """Edges taking their weights from rows of w (an edge and its reverse share one): the
    message reads row rows[e], the gradient op sums each row's edges into dw[row] and leaves
    unused rows zero; rows shared by many edges, by none, more rows than edges, no edges;
    against the reference on w[rows] and numpy's add.at."""
    rng = np.random.default_rng(c + e + n_rows)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for ls in CONV_PATHS:
        x, y, _, src, dst = random_case(rng, ls, n, e, c)
        dst = np.sort(dst)
        w = rng.standard_normal((n_rows, c))
        rows = rng.integers(0, max(n_rows // 2, 1), e)
        b = rng.standard_normal((n, 2 * ls[2] + 1, c))
        cast = [t.astype(dtype) for t in (x, y, w, b)]
        want = message_ref(x, y, w[rows], src, dst, *ls, 1.1)
        got = message_rows(cast[0], cast[1], cast[2], src, dst, rows, ls, 1.1, device, threads)
        assert_close(got, want, f"{ls} message", tol)
        zt = message_rows(cast[3], cast[1], cast[2], dst, src, rows, ls, 1.1, device, threads,
                          transpose=1)
        t = form_ref(x, y, w[rows], b, src, dst, ls, 1.1)
        assert_close(np.array(np.sum(zt * x)), np.array(t), f"{ls} transposed", tol * 10)
        # The output buffer of a first run must not leak into the sums of the second.
        for _ in range(2):
            dw, dy = tsr.run_op("ICTEdgeMessageGrad", cast + [src, dst, rows],
                                attrs_of(*ls, 1.1), n_outputs=2, domain=DOMAIN, device=device,
                                threads=threads)
        per_edge = (product(x[src], y, *ls, 1.1) * b[dst]).sum(axis=1)
        want_dw = np.zeros_like(w)
        np.add.at(want_dw, rows, per_edge)
        assert dw.shape == w.shape
        assert_close(dw, want_dw, f"{ls} dw", tol)
        assert not np.any(dw[max(n_rows // 2, 1):]), "rows no edge uses must be zero"
        plain_dw, plain_dy = edge_grad(cast[0], cast[1], cast[2][rows], cast[3], src, dst, ls,
                                       1.1, device, threads)
        assert_close(dy, plain_dy.astype(np.float64), f"{ls} dy", tol)


@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("pattern", ["pairs", "block", "random"])
def test_shared_weight_rows_threads(threads, pattern):
    """The gradient's threads each own the rows their edges start and add into the others'
    rows in later rounds: an edge and its reverse anywhere (rows numbered by first edge, as
    ictp_radial_rows numbers them), one row shared by a block of edges across several
    threads' runs (the padding edges), and rows at random, on 2 to 4 threads."""
    rng = np.random.default_rng(threads * 10 + len(pattern))
    ls, n, e, c = (2, 1, 3), 9, 6000, 20
    if pattern == "pairs":
        partner = rng.permutation(e)
        rows, n_rows = -np.ones(e, np.int64), 0
        for k in range(e):
            if rows[k] < 0:
                rows[k] = n_rows
                if rows[partner[k]] < 0:
                    rows[partner[k]] = n_rows
                n_rows += 1
    elif pattern == "block":
        rows = np.arange(e) // 2
        rows[1000:4500] = 1000
        n_rows = int(rows.max()) + 5
    else:
        n_rows = 1500
        rows = rng.integers(0, n_rows, e)
    x, y, w, src, dst = random_case(rng, ls, n, e, c)
    b = rng.standard_normal((n, 7, c))
    w = rng.standard_normal((n_rows, c))
    for dtype, tol in [(np.float64, 1e-12), (np.float32, 2e-5)]:
        dw, dy = tsr.run_op("ICTEdgeMessageGrad",
                            [t.astype(dtype) for t in (x, y, w, b)] + [src, dst, rows],
                            attrs_of(*ls, 1.1), n_outputs=2, domain=DOMAIN, device="cpu",
                            threads=threads)
        want_dw = np.zeros((n_rows, c))
        np.add.at(want_dw, rows, (product(x[src], y, *ls, 1.1) * b[dst]).sum(axis=1))
        assert_close(dw, want_dw, f"{pattern} dw", tol)
        _, want_dy = edge_grad(x, y, w[rows], b, src, dst, ls, 1.1)
        assert_close(dy, want_dy, f"{pattern} dy", tol)


@pytest.mark.parametrize("transpose", [0, 1])
def test_shared_weight_rows_second_order(transpose):
    """Gradients with respect to x, y and the shared rows of w, first and second order,
    against central differences: each row's derivative sums its edges'."""
    ls = (2, 1, 1)
    rng = np.random.default_rng(11 + transpose)
    width = 2 * (ls[2] if transpose else ls[0]) + 1
    x = rng.standard_normal((4, width, 3))
    y = rng.standard_normal((6, 2 * ls[1] + 1))
    w = rng.standard_normal((4, 3))
    src, dst = np.array([0, 1, 1, 3, 0, 1]), np.array([1, 0, 3, 3, 1, 0])
    rows = np.array([0, 2, 0, 1, 2, 0])

    def build(g, names):
        g.add_node("ICTEdgeMessage", names, ["out0"], attrs_of(*ls, 0.9, transpose=transpose),
                   domain=DOMAIN)
        return ["out0"]
    hv = check_second_order(build, [x, y, w, src, dst, rows])
    assert max(float(np.max(np.abs(h))) for h in hv) > 1e-6


def test_shared_weight_rows_gradient_op_second_order():
    rng = np.random.default_rng(13)
    a, y = rng.standard_normal((3, 5, 2)), rng.standard_normal((5, 3))
    w, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 7, 2))
    ia, ib, rows = np.array([0, 1, 2, 2, 0]), np.array([2, 2, 0, 1, 1]), np.array([1, 0, 1, 1, 0])

    def build(g, names):
        g.add_node("ICTEdgeMessageGrad", names, ["out0", "out1"], attrs_of(2, 1, 3, 0.8),
                   domain=DOMAIN)
        return ["out0", "out1"]
    check_second_order(build, [a, y, w, b, ia, ib, rows])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["neighbour_list", "one_hub", "empty_atoms"])
def test_message_sorted_by_destination_two_threads(layout, dtype):
    """Destinations in order (a neighbour list's receivers): two threads take runs of edges
    cut where the destination changes, each zeroing the atoms it owns. Atoms without edges
    between the runs and at both ends, one atom receiving most edges (the cut moves past
    it), against the float64 reference."""
    rng = np.random.default_rng(len(layout))
    n, e, c = 40, 3000, 40
    if layout == "neighbour_list":
        dst = np.sort(rng.integers(0, n, e))
    elif layout == "one_hub":
        dst = np.sort(np.concatenate([np.full(e - 20, 17), rng.integers(0, n, 20)]))
    else:
        dst = np.sort(rng.integers(5, n - 5, e))
        dst[(dst > 15) & (dst < 25)] = 15
        dst = np.sort(dst)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for ls in [(0, 0, 0), (1, 2, 3), (2, 3, 3), (3, 3, 2)]:
        g = tsr.Graph()
        g.set_opset(17)
        names = ["x", "y", "w", "src", "dst"]
        shapes = [(n, 2 * ls[0] + 1, c), (e, 2 * ls[1] + 1), (e, c), (e,), (e,)]
        for name, shape in zip(names, shapes):
            g.add_input(name, np.int64 if name in ("src", "dst") else dtype, list(shape))
        g.add_node("ICTEdgeMessage", names, ["z"], attrs_of(*ls, 1.3), domain=DOMAIN)
        g.add_output("z")
        plan = tsr.Plan(g, device="cpu", threads=2)
        # A first run leaves its output in the buffer: the second must zero every row.
        first = random_case(rng, ls, n, e, c)
        plan.run([t.astype(dtype) for t in first[:3]] + [first[3], dst])
        x, y, w, src, _ = random_case(rng, ls, n, e, c)
        want = message_ref(x, y, w, src, dst, *ls, 1.3)
        got = plan.run([t.astype(dtype) for t in (x, y, w)] + [src, dst])[0]
        assert_close(got, want, f"{ls} {layout}", tol)


@pytest.mark.parametrize("n", [40, 75000])
def test_message_unsorted_two_threads(n):
    """Destinations out of order (a transposed message's senders), two threads: each takes
    a run of edges into its own copy of the output, summed at the end, run twice on one plan
    so that a copy left from the first run cannot leak; with 75000 atoms the copies would
    pass 64 MiB and the threads take slices of the channels instead."""
    rng = np.random.default_rng(n)
    ls, e, c = (3, 2, 3), 2000, 32
    g = tsr.Graph()
    g.set_opset(17)
    names = ["x", "y", "w", "src", "dst"]
    shapes = [(n, 7, c), (e, 5), (e, c), (e,), (e,)]
    for name, shape in zip(names, shapes):
        g.add_input(name, np.int64 if name in ("src", "dst") else np.float32, list(shape))
    g.add_node("ICTEdgeMessage", names, ["z"], attrs_of(*ls, 1.3), domain=DOMAIN)
    g.add_output("z")
    plan = tsr.Plan(g, device="cpu", threads=2)
    for _ in range(2):
        x, y, w, src, dst = random_case(rng, ls, n, e, c)
        want = message_ref(x, y, w, src, dst, *ls, 1.3)
        got = plan.run([t.astype(np.float32) for t in (x, y, w)] + [src, dst])[0]
        assert_close(got, want, f"{n} atoms", 2e-5)


def test_message_high_rank_on_ref():
    """Ranks above 3 (a coupling too large for the cpu kernel's stack) run on ref."""
    ls = (4, 2, 6)
    rng = np.random.default_rng(5)
    x, y, w, src, dst = random_case(rng, ls, 4, 9, 3)
    want = message_ref(x, y, w, src, dst, *ls, 0.5)
    assert_close(message(x, y, w, src, dst, ls, 0.5, "cpu"), want, "(4, 2, 6) on cpu", 1e-12)


@pytest.mark.parametrize("ls", [(0, 0, 0), (1, 1, 0), (2, 1, 3), (3, 3, 2), (2, 2, 2),
                                (1, 2, 1)])
@pytest.mark.parametrize("transpose", [0, 1])
def test_message_gradient_second_order(ls, transpose):
    """With respect to x, y and w at once (repeated and unused nodes included), then the
    Hessian-vector product, which runs through ICTEdgeMessageGrad's own rule."""
    rng = np.random.default_rng(7 * ls[0] + 3 * ls[1] + ls[2] + 50 * transpose)
    width = 2 * (ls[2] if transpose else ls[0]) + 1
    x = rng.standard_normal((4, width, 3))
    y = rng.standard_normal((6, 2 * ls[1] + 1))
    w = rng.standard_normal((6, 3))
    src, dst = np.array([0, 1, 1, 3, 0, 1]), np.array([1, 0, 3, 3, 1, 0])

    def build(g, names):
        g.add_node("ICTEdgeMessage", names, ["out0"], attrs_of(*ls, 0.9, transpose=transpose),
                   domain=DOMAIN)
        return ["out0"]
    hv = check_second_order(build, [x, y, w, src, dst])
    assert max(float(np.max(np.abs(h))) for h in hv) > 1e-6


def test_message_through_edge_ict_second_order():
    """The model's use: the edge ICT of a vector, so the positions' second derivatives pass
    through ICT and both fused ops."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 2))
    v = rng.standard_normal((4, 3))
    w = rng.standard_normal((4, 2))
    src, dst = np.array([0, 2, 1, 2]), np.array([1, 1, 0, 2])

    def build(g, names):
        g.add_node("ICT", [names[1]], ["t"], {"l": 3, "coordinates": 1}, domain=DOMAIN)
        g.add_node("ICTEdgeMessage", [names[0], "t", names[2], names[3], names[4]], ["out0"],
                   attrs_of(2, 3, 1, 1.0), domain=DOMAIN)
        return ["out0"]
    check_second_order(build, [x, v, w, src, dst])


def test_gradient_op_second_order():
    rng = np.random.default_rng(9)
    a, y = rng.standard_normal((3, 5, 2)), rng.standard_normal((5, 3))
    w, b = rng.standard_normal((5, 2)), rng.standard_normal((3, 7, 2))
    ia, ib = np.array([0, 1, 2, 2, 0]), np.array([2, 2, 0, 1, 1])

    def build(g, names):
        g.add_node("ICTEdgeMessageGrad", names, ["out0", "out1"], attrs_of(2, 1, 3, 0.8),
                   domain=DOMAIN)
        return ["out0", "out1"]
    check_second_order(build, [a, y, w, b, ia, ib])


@pytest.mark.parametrize("device", ["ref", "cpu"])
def test_errors(device):
    rng = np.random.default_rng(1)
    x, y, w, src, dst = random_case(rng, (1, 1, 2), 3, 4, 2)
    bad = dst.copy()
    bad[2] = 3
    with pytest.raises(tsr.TesseraError, match="destination index 3 of edge 2"):
        message(x, y, w, src, bad, (1, 1, 2), 1.0, device)
    with pytest.raises(tsr.TesseraError, match="not a product path"):
        message(x, y, w, src, dst, (1, 1, 1), 1.0, device)
    with pytest.raises(tsr.TesseraError, match=r"y \('in1'\) has shape"):
        message(x, y[:, :2], w, src, dst, (1, 1, 2), 1.0, device)
    with pytest.raises(tsr.TesseraError, match=r"w \('in2'\) has shape"):
        message(x, y, w[:3], src, dst, (1, 1, 2), 1.0, device)
    with pytest.raises(tsr.TesseraError, match="weight row index 3 of edge 1 is out of range "
                                               "for 3 rows of w"):
        message_rows(x, y, w[:3], src, dst, np.array([0, 3, 1, 2]), (1, 1, 2), 1.0, device, 1)
    with pytest.raises(tsr.TesseraError, match=r"the weight rows \('in5'\) has shape"):
        message_rows(x, y, w[:3], src, dst, np.array([0, 1, 2]), (1, 1, 2), 1.0, device, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_backend_runs_both_ops(dtype):
    """The cpu backend takes both ops in both dtypes (not the ref fallback)."""
    ls = (2, 1, 3)
    g = tsr.Graph()
    g.set_opset(17)
    for name, shape in [("x", [4, 5, 8]), ("y", [6, 3]), ("w", [6, 8]), ("b", [4, 7, 8])]:
        g.add_input(name, dtype, shape)
    for name in ("src", "dst"):
        g.add_input(name, np.int64, [6])
    g.add_node("ICTEdgeMessage", ["x", "y", "w", "src", "dst"], ["z"], attrs_of(*ls, 1.0),
               domain=DOMAIN)
    g.add_node("ICTEdgeMessageGrad", ["x", "y", "w", "b", "src", "dst"], ["dw", "dy"],
               attrs_of(*ls, 1.0), domain=DOMAIN)
    for o in ("z", "dw", "dy"):
        g.add_output(o)
    plan = tsr.Plan(g, device="cpu")
    rng = np.random.default_rng(2)
    plan.run([rng.standard_normal(s).astype(dtype) for s in ([4, 5, 8], [6, 3], [6, 8], [4, 7, 8])]
             + [rng.integers(0, 4, 6), rng.integers(0, 4, 6)])
    counts = plan.backend_counts()
    assert counts["cpu"] == 2 and counts["ref"] == 0, counts


@pytest.mark.parametrize("l", range(9))
@pytest.mark.parametrize("normalize", [1, 0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_edge_ict_in_coordinates_on_cpu(l, normalize, dtype):
    """ICT in coordinates on the cpu backend (a polynomial whose coefficients are built once)
    against the ref kernel; float32 within float32 rounding of the float64 values."""
    rng = np.random.default_rng(l + 10 * normalize)
    v = rng.standard_normal((37, 3)) * 1.7
    attrs = {"l": l, "normalize": normalize, "coordinates": 1}
    want = tsr.run_op("ICT", [v], attrs, domain=DOMAIN)[0]
    got = tsr.run_op("ICT", [v.astype(dtype)], attrs, domain=DOMAIN, device="cpu", threads=2)[0]
    assert got.dtype == dtype
    assert_close(got, want, f"ICT l={l}", 1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("l", [0, 1])
def test_edge_ict_components_up_to_rank_1_on_cpu(l):
    """Up to rank 1 components and coordinates agree, so the cpu kernel runs both."""
    v = np.random.default_rng(l).standard_normal((9, 3))
    attrs = {"l": l, "normalize": 1}
    want = tsr.run_op("ICT", [v], attrs, domain=DOMAIN)[0]
    assert_close(tsr.run_op("ICT", [v], attrs, domain=DOMAIN, device="cpu")[0], want,
                 f"ICT l={l}", 1e-15)


def test_edge_ict_rejects_zero_vector_on_cpu():
    v = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(tsr.TesseraError, match=r"vector 1 is \(0, 0, 0\)"):
        tsr.run_op("ICT", [v], {"l": 2, "coordinates": 1}, domain=DOMAIN, device="cpu")

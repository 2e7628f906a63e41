"""The op x backend harness: every op of the op table, from its case
description in op_cases.py, on every backend of every device, against the
reference backend; and every gradient rule against central finite
differences in float64.

On the cpu device each case runs in float64 (which the device mostly
leaves to ref) and in float32 in every activation layout (TSR_CPU_LAYOUT;
blocked inputs come out of an identity Conv and a 1x1 MaxPool, as in a
model) and, when one of the device's own backends runs it, on every
instruction set (TSR_CPU_ISA) and channel count of CHANNELS, plus bf16
precision where oneDNN runs it. The oracle is the reference device in
float64 on the same values. Each test asserts that the node ran on the backend its case names
(tsr_plan_node_backend): a backend that starts or stops taking an op
fails here until the case says so. Instruction sets and bf16 this machine
lacks show as skips with the reason."""

import ctypes
import zlib

import numpy as np
import pytest

import tsr
from op_cases import CASES, Case
from test_cpu_kernels import LAYOUTS, bf16_skip_reason, blocked, isa_params

OPS = tsr.op_table()
DOMAIN = {o["name"]: o["domain"] for o in OPS}
HAS_GRADIENT = {o["name"]: bool(o["has_gradient"]) for o in OPS}
# Channel counts ("C" in a case) where a backend of the device runs the
# case: below, at and past both block sizes, with tails of every kind.
CHANNELS = [1, 3, 8, 13, 16, 24, 33]
REF_CHANNELS = [13]
GRAD_CHANNELS = 3
EPS = 1e-6


def case_id(case):
    return case.op + (f"-{case.label}" if case.label else "")


def seed_of(text):
    """A seed that is the same in every process (hash() is not)."""
    return zlib.crc32(text.encode())


def test_every_op_has_a_case():
    """A new op in the op table must come with its case description."""
    missing = [o["name"] for o in OPS if not any(c.op == o["name"] for c in CASES)]
    assert not missing, f"ops of src/ops/op_table.h without a case in op_cases.py: {missing}"
    unknown = sorted({c.op for c in CASES} - set(DOMAIN))
    assert not unknown, f"op_cases.py describes ops the op table lacks: {unknown}"
    ids = [case_id(c) for c in CASES]
    assert len(ids) == len(set(ids)), "two cases of one op need different labels"


def test_every_device_is_covered():
    """A new device needs its configurations here and its backend in each case."""
    tsr.lib().tsr_device_names.restype = ctypes.c_char_p
    devices = {d.strip() for d in tsr.lib().tsr_device_names().decode().split(",")}
    # cuda: tests/gpu (test_cuda_gpu.py runs its ops against ref on a GPU).
    unknown = devices - {"ref", "cpu", "cuda"}
    assert not unknown, f"devices the harness does not run: {sorted(unknown)}"


def inputs_of(case, dtype, channels):
    rng = np.random.default_rng(seed_of(f"{case_id(case)} {channels}"))
    return [None if s is None else s.array(rng, dtype, channels) for s in case.inputs]


def channel_counts(case):
    if not any(s is not None and "C" in s.shape for s in case.inputs):
        return REF_CHANNELS
    return CHANNELS if case.cpu != "ref" else REF_CHANNELS


def build(case, arrays, block=False, outputs=None):
    """The case's node, named node0, on `arrays`; returns the graph and its feeds.
    block: float32 4-D inputs reach the node through blocked() (the
    device's blocked layout). outputs: the node outputs that are graph
    outputs (default all)."""
    g = tsr.Graph()
    g.set_opset(case.opset)
    names, feeds = [], []
    for i, (spec, a) in enumerate(zip(case.inputs, arrays)):
        if spec is None:
            names.append("")
            continue
        name = f"in{i}"
        if spec.const:
            g.add_constant(name, a)
        else:
            g.add_input(name, a.dtype, list(a.shape))
            feeds.append(a)
            if block and a.dtype == np.float32 and a.ndim == 4 and not spec.plain:
                name = blocked(g, name, a.shape[1])
        names.append(name)
    outs = [f"out{o}" for o in range(case.n_outputs)]
    g.add_node(case.op, names, outs, case.attrs, domain=DOMAIN[case.op], name="node0")
    for o in outputs if outputs is not None else range(case.n_outputs):
        g.add_output(outs[o])
    return g, feeds


def configs():
    """(case, device config) pairs: dtype, layout, ISA, precision."""
    params = []
    for case in CASES:
        cid = case_id(case)
        if case.folded:
            params.append(pytest.param(case, None, id=f"{cid}-folded"))
            continue
        params.append(pytest.param(case, ("float64", "plain", None, "fp32"), id=f"{cid}-float64"))
        if case.cpu64 == "cpu":
            # the float64 kernels have portable variants too
            params.append(pytest.param(case, ("float64", "plain", "portable", "fp32"),
                                       id=f"{cid}-float64-portable"))
        # The instruction set matters only to the device's own backends.
        isas = isa_params() if case.cpu != "ref" else [pytest.param(None, id="")]
        for layout in LAYOUTS:
            for isa in isas:
                params.append(pytest.param(case, ("float32", layout, isa.values[0], "fp32"),
                                           id="-".join(filter(None, (cid, layout, isa.id))),
                                           marks=isa.marks))
        if case.cpu == "dnnl":
            reason = bf16_skip_reason()
            params.append(pytest.param(case, ("float32", "plain", None, "bf16"), id=f"{cid}-bf16",
                                       marks=[pytest.mark.skip(reason=reason)] if reason else []))
    return params


def tolerance(case, arrays, want, precision):
    """The largest error allowed per element of want (an array)."""
    if case.tol == "sum":
        # Sums of products: rounding is bounded by the same sums of |terms|,
        # which the op computes on |inputs| (activations are 1-Lipschitz or
        # less). float32: 2^-17 is 128 units of rounding, sums of up to 128
        # terms in the worst case. bf16 rounds each input to 8 bits, each
        # product by up to 2^-8 relative; 2^-7 leaves a factor of two for
        # the float32 accumulation.
        attrs = {k: v for k, v in case.attrs.items() if not k.startswith("activation")}
        if "activation" in case.attrs:
            attrs["activation"] = ""
        abs_case = Case(case.op, case.inputs, attrs, n_outputs=case.n_outputs, opset=case.opset)
        g, feeds = build(abs_case, [None if a is None else np.abs(a) for a in arrays])
        bound = tsr.Plan(g).run([np.abs(f) for f in feeds])[0]
        unit = 2.0 ** -7 if precision == "bf16" else 2.0 ** -17
        return unit * bound + 1e-30
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return case.rtol * (np.abs(want) + scale) + 1e-30


def compare(case, got, want, arrays, precision, what):
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if case.tol == "exact" or want.dtype.kind not in "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    allowed = tolerance(case, arrays, want, precision)
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - allowed), err.shape) if err.size else ()
    assert np.all(err <= allowed), (
        f"{what}: error {err[worst]:.3g} at {worst} exceeds {np.asarray(allowed)[worst]:.3g}")


@pytest.mark.parametrize("case,config", configs())
def test_backend_against_ref(case, config, monkeypatch):
    if config is None:
        for device in ("ref", "cpu"):
            arrays = inputs_of(case, np.float64, REF_CHANNELS[0])
            g, feeds = build(case, arrays)
            plan = tsr.Plan(g, device=device)
            got = plan.run(feeds)[0]
            np.testing.assert_array_equal(got, case.expect(*arrays))
            with pytest.raises(tsr.TesseraError, match="no node named 'node0'"):
                plan.node_backend("node0")
        return
    dtype, layout, isa, precision = config
    if isa:
        monkeypatch.setenv("TSR_CPU_ISA", isa)
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    for channels in channel_counts(case):
        check_on_cpu(case, config, channels)


def check_on_cpu(case, config, channels):
    dtype, layout, isa, precision = config
    what = f"{case_id(case)} with C={channels} on {config}"
    arrays = inputs_of(case, np.dtype(dtype), channels)
    g, feeds = build(case, arrays, block=layout != "plain")
    plan = tsr.Plan(g, device="cpu", threads=2, precision=precision)
    got = plan.run(feeds)
    want_backend = case.cpu if dtype == "float32" else case.cpu64
    if case.expanded:
        with pytest.raises(tsr.TesseraError, match="no node named 'node0'"):
            plan.node_backend("node0")
    elif case.identity and layout != "plain" and dtype == "float32":
        with pytest.raises(tsr.TesseraError, match="the optimization passes removed it"):
            plan.node_backend("node0")
    else:
        assert plan.node_backend("node0") == want_backend, (
            f"{what}: ran on {plan.node_backend('node0')}, its case in op_cases.py says "
            f"{want_backend}")
    # The oracle: the reference device on the float64 version of the same values.
    ref_arrays = [None if a is None else (a.astype(np.float64) if a.dtype == np.float32 else a)
                  for a in arrays]
    ref_g, ref_feeds = build(case, ref_arrays)
    want = tsr.Plan(ref_g, device="ref").run(ref_feeds)
    if case.bf16 and precision == "bf16":
        fp32 = tsr.Plan(g, device="cpu", threads=2).run(feeds)[0]
        assert not np.array_equal(got[0], fp32), f"{what}: precision bf16 computed in float32"
    for o, (x, w) in enumerate(zip(got, want)):
        if w.dtype == np.float64 and x.dtype == np.float32:
            if case.tol == "exact":
                w = w.astype(np.float32)
            else:
                x = x.astype(np.float64)
        compare(case, x, w, ref_arrays, precision, f"{what}, output {o}")


def grad_cases():
    params = []
    for case in CASES:
        differentiable = [s for s in case.inputs if s is not None and not s.const and s.float]
        if not HAS_GRADIENT.get(case.op) or case.folded or not differentiable:
            continue
        marks = [] if case.grad is True else [pytest.mark.skip(reason=case.grad)]
        params.append(pytest.param(case, id=case_id(case), marks=marks))
    return params


def numeric_grad(loss, xs, k):
    """Central differences of the scalar loss(xs) with respect to xs[k]."""
    x = xs[k]
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = saved + EPS
        hi = loss(xs)
        x[idx] = saved - EPS
        lo = loss(xs)
        x[idx] = saved
        grad[idx] = (hi - lo) / (2 * EPS)
    return grad


@pytest.mark.parametrize("case", grad_cases())
def test_gradient_rule_against_finite_differences(case):
    """d sum(outputs * seeds) / d every float graph input, float64 on ref."""
    arrays = inputs_of(case, np.float64, GRAD_CHANNELS)
    float_outs = case.grad_outputs
    if float_outs is None:
        probe, probe_feeds = build(case, arrays)
        float_outs = [o for o, y in enumerate(tsr.Plan(probe).run(probe_feeds))
                      if y.dtype == np.float64]
    g, feeds = build(case, arrays, outputs=float_outs)
    wrt = [f"in{i}" for i, s in enumerate(case.inputs)
           if s is not None and not s.const and arrays[i].dtype == np.float64]
    plan = tsr.Plan(g)
    ys = plan.run(feeds)
    rng = np.random.default_rng(seed_of("seed " + case_id(case)))
    seeds = [rng.standard_normal(y.shape) for y in ys]

    def loss(values):
        return sum(float(np.sum(y * s)) for y, s in zip(plan.run(values), seeds))

    gg = tsr.gradient(g, [f"out{o}" for o in float_outs], wrt)
    grads = tsr.Plan(gg).run(feeds + seeds)[len(float_outs):]
    xs = [f.copy() for f in feeds]
    positions = [i for i, s in enumerate(case.inputs) if s is not None and not s.const]
    for k, w in enumerate(wrt):
        fd = numeric_grad(loss, xs, positions.index(int(w[2:])))
        scale = max(float(np.max(np.abs(fd))) if fd.size else 0.0, 1e-3)
        err = float(np.max(np.abs(grads[k] - fd))) if fd.size else 0.0
        assert err <= 1e-6 * scale, (
            f"{case_id(case)} d/d{w}: max error {err:.3g} against finite differences, "
            f"max |grad| {scale:.3g}")


def test_node_backend_answers():
    """tsr_plan_node_backend and the per-backend step counts the harness relies on."""
    rng = np.random.default_rng(3)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, [1, 8, 5, 5])
    g.add_constant("w", rng.standard_normal((8, 8, 3, 3)).astype(np.float32))
    g.add_node("Conv", ["x", "w"], ["c"], {"pads": [1, 1, 1, 1]}, name="conv")
    g.add_node("Relu", ["c"], ["r"], name="relu")
    g.add_node("Sigmoid", ["r"], ["s"], name="sigmoid")
    g.add_node("Softplus", ["s"], ["y"], name="softplus")
    g.add_output("y")
    plan = tsr.Plan(g, device="cpu")
    with pytest.raises(tsr.TesseraError, match="call tsr_plan_reshape before"):
        plan.node_backend("conv")
    plan.run([rng.standard_normal((1, 8, 5, 5)).astype(np.float32)])
    assert [plan.node_backend(n) for n in ("conv", "sigmoid", "softplus")] == ["dnnl", "cpu",
                                                                               "ref"]
    with pytest.raises(tsr.TesseraError, match="'relu' does not run in this plan: the "
                       "optimization passes removed it or fused it into another node"):
        plan.node_backend("relu")
    with pytest.raises(tsr.TesseraError, match="the graph has no node named 'nope'"):
        plan.node_backend("nope")
    assert plan.backend_counts() == {"dnnl": 1, "cpu": 1, "ref": 1}
    assert sum(plan.backend_counts().values()) == plan.stats().n_steps
    ref_plan = tsr.Plan(g, device="ref")
    ref_plan.run([np.zeros((1, 8, 5, 5), np.float32)])
    assert ref_plan.node_backend("relu") == "ref"
    assert ref_plan.backend_counts() == {"ref": 4}


@pytest.mark.parametrize("device", ["ref", "cpu"])
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_gather_index_out_of_range_names_it(device, index_dtype):
    """Indices that arrive at run time (a neighbour list's atoms) are checked by the kernel:
    the first one outside [-dim, dim) is named, on ref and on the cpu kernel alike."""
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    for bad, at in ((5, 1), (-6, 2)):
        idx = np.array([0, bad, bad, 1], dtype=index_dtype)
        if at == 2:
            idx[1] = 4
        with pytest.raises(tsr.TesseraError, match=rf"index {bad} \(element {at} of the "
                           r"indices\) is out of range for axis 0 of size 5"):
            tsr.run_op("Gather", [x, idx], {"axis": 0}, device=device, threads=2)
    ok = np.array([4, -5, 2], dtype=index_dtype)
    np.testing.assert_array_equal(
        tsr.run_op("Gather", [x, ok], {"axis": 0}, device=device, threads=2)[0], x[ok])

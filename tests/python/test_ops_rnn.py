"""LSTM, GRU and RNN against torch.nn.LSTM/GRU/RNN exported to ONNX (layers, directions,
batch_first, initial states, odd sizes) and against an independent numpy reading of the ONNX
spec for what torch does not export (sequence_lens, clip, every activation with its alpha and
beta, linear_before_reset=0, peepholes, input_forget, layout=1, missing bias); their gradients
through the expansion against finite differences in float64; float32 nodes with constant
weights run whole (oneDNN's RNN primitives on the cpu device, or step by step for LSTMs of a few
sequences) against their reference kernel and the spec, the rest expanded, and differentiated through the expansion; a symbolic sequence length;
Trilu against numpy triu/tril; and transformer blocks (nn.TransformerEncoderLayer and
TransformerDecoderLayer, nn.MultiheadAttention, a GPT block with a torch.triu causal mask,
embedding, LayerNorm and GELU) exported at opset 13 (14 where triu needs it) and 17, against
PyTorch."""

import io
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn

import tsr
from test_cpu_kernels import isa_params

DEVICES = ["ref", "cpu"]


def onnx_bytes(module, args, opset, **kw):
    buf = io.BytesIO()
    module.eval()
    torch.onnx.export(module, args, buf, opset_version=opset, **kw)
    return buf.getvalue()


def close(got, want, rel):
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert got.shape == want.shape, (got.shape, want.shape)
    assert err <= rel * scale, f"error {err:.3g} exceeds {rel:g} of max |y| = {scale:.3g}"


# ------------------------------------------------ numpy reading of the spec

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


ACTS = {
    "relu": lambda x, a, b: np.maximum(x, 0),
    "tanh": lambda x, a, b: np.tanh(x),
    "sigmoid": lambda x, a, b: _sigmoid(x),
    "affine": lambda x, a, b: a * x + b,
    "leakyrelu": lambda x, a, b: np.where(x >= 0, x, a * x),
    "thresholdedrelu": lambda x, a, b: np.where(x > a, x, 0),
    "scaledtanh": lambda x, a, b: a * np.tanh(b * x),
    "hardsigmoid": lambda x, a, b: np.clip(a * x + b, 0, 1),
    "elu": lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)),
    "softsign": lambda x, a, b: x / (1 + np.abs(x)),
    "softplus": lambda x, a, b: np.log1p(np.exp(x)),
}
# How many of (alpha, beta) each takes, and the defaults of the ONNX op of that name.
PARAMS = {"affine": (1.0, 0.0), "leakyrelu": (0.01,), "thresholdedrelu": (1.0,),
          "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0,)}
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def activation_fns(op, n_dirs, names, alphas, betas):
    names = names or DEFAULT_ACTS[op] * n_dirs
    alphas, betas = list(alphas or []), list(betas or [])
    fns = []
    for n in names:
        key = n.lower()
        defaults = PARAMS.get(key, ())
        a = alphas.pop(0) if len(defaults) >= 1 and alphas else (defaults + (0, 0))[0]
        b = betas.pop(0) if len(defaults) >= 2 and betas else (defaults + (0, 0))[1]
        fns.append(lambda x, f=ACTS[key], a=a, b=b: f(x, a, b))
    per = len(DEFAULT_ACTS[op])
    return [fns[d * per:(d + 1) * per] for d in range(n_dirs)]


def reference(op, X, W, R, B=None, seq=None, h0=None, c0=None, P=None, direction="forward",
              activations=None, alpha=None, beta=None, clip=None, input_forget=0,
              linear_before_reset=0, layout=0, **_):
    """Y, Y_h (and Y_c for LSTM) of ONNX's op, one batch element and time step at a time."""
    if layout:
        X = X.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    T, N, _ = X.shape
    D, H = W.shape[0], R.shape[2]
    G = GATES[op]
    acts = activation_fns(op, D, activations, alpha, beta)
    cl = (lambda v: np.clip(v, -clip, clip)) if clip else (lambda v: v)
    Y = np.zeros((T, D, N, H), X.dtype)
    Yh = np.zeros((D, N, H), X.dtype)
    Yc = np.zeros((D, N, H), X.dtype)
    for d in range(D):
        f = acts[d][0]
        g = acts[d][1] if op != "RNN" else None
        hfn = acts[d][2] if op == "LSTM" else None
        Wb = B[d, :G * H] if B is not None else np.zeros(G * H)
        Rb = B[d, G * H:] if B is not None else np.zeros(G * H)
        backward = direction == "reverse" or d == 1
        for b in range(N):
            L = T if seq is None else int(seq[b])
            h = h0[d, b].copy() if h0 is not None else np.zeros(H)
            c = c0[d, b].copy() if c0 is not None else np.zeros(H)
            for t in (reversed(range(L)) if backward else range(L)):
                xw = W[d] @ X[t, b] + Wb
                hr = R[d] @ h + Rb
                if op == "RNN":
                    h = f(cl(xw + hr))
                elif op == "GRU":
                    z = f(cl(xw[:H] + hr[:H]))
                    r = f(cl(xw[H:2 * H] + hr[H:2 * H]))
                    if linear_before_reset:
                        hh = g(cl(xw[2 * H:] + r * hr[2 * H:]))
                    else:
                        hh = g(cl(xw[2 * H:] + R[d, 2 * H:] @ (r * h) + Rb[2 * H:]))
                    h = (1 - z) * hh + z * h
                else:
                    gates = xw + hr
                    pi, po, pf = (P[d, :H], P[d, H:2 * H], P[d, 2 * H:]) if P is not None else (0, 0, 0)
                    i = f(cl(gates[:H] + pi * c))
                    fg = 1 - i if input_forget else f(cl(gates[2 * H:3 * H] + pf * c))
                    cc = g(cl(gates[3 * H:]))
                    c = fg * c + i * cc
                    o = f(cl(gates[H:2 * H] + po * c))
                    h = o * hfn(c)
                Y[t, d, b] = h
            Yh[d, b], Yc[d, b] = h, c
    if layout:
        return Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2), Yc.transpose(1, 0, 2)
    return Y, Yh, Yc


def make_case(op, rng, T=5, N=3, I=4, H=3, direction="forward", bias=True, seq=False, h0=False,
              c0=False, peep=False, layout=0, dtype=np.float64):
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    X = rng.standard_normal((N, T, I) if layout else (T, N, I))
    arrays = {"X": X, "W": rng.standard_normal((D, G * H, I)) * 0.6,
              "R": rng.standard_normal((D, G * H, H)) * 0.6}
    if bias:
        arrays["B"] = rng.standard_normal((D, 2 * G * H)) * 0.5
    if seq:
        arrays["seq"] = rng.integers(1, T + 1, N).astype(np.int32)
        arrays["seq"][0] = T
    state = (N, D, H) if layout else (D, N, H)
    if h0:
        arrays["h0"] = rng.standard_normal(state) * 0.5
    if c0:
        arrays["c0"] = rng.standard_normal(state) * 0.5
    if peep:
        arrays["P"] = rng.standard_normal((D, 3 * H)) * 0.5
    return {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in arrays.items()}


INPUT_ORDER = ["X", "W", "R", "B", "seq", "h0", "c0", "P"]


WEIGHTS = ("W", "R", "B", "P")


def build(op, arrays, attrs, n_outputs, symbolic_time=False, weights=None):
    """The node named rnn on graph inputs (every array; the weights W, R, B and P are constants
    with weights="constant", parameters with "parameter"); returns graph and feeds."""
    g = tsr.Graph()
    g.set_opset(17)
    last = max(INPUT_ORDER.index(k) for k in arrays)
    names, feeds = [], []
    for k in INPUT_ORDER[:last + 1]:
        if k not in arrays:
            names.append("")
            continue
        a = arrays[k]
        if weights and k in WEIGHTS:
            (g.add_constant if weights == "constant" else g.add_parameter)(k, a)
            names.append(k)
            continue
        shape = list(a.shape)
        if symbolic_time and k == "X":
            shape[1 if attrs.get("layout") else 0] = "time"
        g.add_input(k, a.dtype, shape)
        names.append(k)
        feeds.append(a)
    outs = ["Y", "Y_h", "Y_c"][:n_outputs]
    g.add_node(op, names, outs, attrs, name="rnn")
    for o in outs:
        g.add_output(o)
    return g, feeds


def run_spec_case(op, arrays, attrs, device, rel):
    n_out = 3 if op == "LSTM" else 2
    g, feeds = build(op, arrays, attrs, n_out)
    got = tsr.Plan(g, device=device).run(feeds)
    opts = dict(attrs)
    if "activations" in opts:
        opts["activations"] = opts["activations"].split(",")
    opts["alpha"] = opts.pop("activation_alpha", None)
    opts["beta"] = opts.pop("activation_beta", None)
    f64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    want = reference(op, f64.pop("X"), f64.pop("W"), f64.pop("R"), **f64, **opts)
    for o in range(n_out):
        close(got[o], want[o], rel)


SPEC_CASES = [
    ("LSTM", {}, {}),
    ("LSTM", {"direction": "bidirectional"}, dict(seq=True, h0=True, c0=True, peep=True)),
    ("LSTM", {"direction": "reverse", "clip": 0.7}, dict(seq=True, peep=True)),
    ("LSTM", {"input_forget": 1, "layout": 1}, dict(h0=True, c0=True, layout=1)),
    ("LSTM", {"activations": "HardSigmoid,Softsign,ScaledTanh",
              "activation_alpha": [0.3, 0.8], "activation_beta": [0.4, 1.3]}, dict(bias=False)),
    ("LSTM", {"activations": "Affine,Elu,LeakyRelu,sigmoid,Softplus,ThresholdedRelu",
              "activation_alpha": [0.2, 0.9, 0.2, 0.1], "activation_beta": [0.25],
              "direction": "bidirectional"}, dict(seq=True)),
    ("GRU", {}, {}),
    ("GRU", {"linear_before_reset": 1}, dict(h0=True)),
    ("GRU", {"direction": "bidirectional", "clip": 0.5}, dict(seq=True, h0=True)),
    ("GRU", {"direction": "reverse", "linear_before_reset": 1, "layout": 1},
     dict(seq=True, layout=1, bias=False)),
    ("GRU", {"activations": "Relu,Affine", "activation_alpha": [0.5],
             "activation_beta": [0.1]}, {}),
    ("RNN", {}, dict(h0=True)),
    ("RNN", {"direction": "bidirectional", "activations": "Relu,LeakyRelu",
             "activation_alpha": [0.2]}, dict(seq=True)),
    ("RNN", {"direction": "reverse", "layout": 1, "clip": 0.4}, dict(layout=1, h0=True,
                                                                      seq=True)),
]


def spec_id(c):
    return c[0] + "-" + "-".join(f"{k}" for k in list(c[1]) + [k for k, v in c[2].items() if v])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", SPEC_CASES, ids=[spec_id(c) for c in SPEC_CASES])
def test_against_numpy_spec(case, device, dtype):
    op, attrs, shape = case
    rng = np.random.default_rng(zlib.crc32(spec_id(case).encode()))
    arrays = make_case(op, rng, dtype=dtype, direction=attrs.get("direction", "forward"), **shape)
    attrs = dict(attrs, hidden_size=3)
    run_spec_case(op, arrays, attrs, device, 1e-12 if dtype == np.float64 else 2e-6)


@pytest.mark.slow
def test_long_sequence_and_odd_sizes():
    """Past 64 steps the outputs are concatenated in groups (Concat's input limit)."""
    rng = np.random.default_rng(5)
    arrays = make_case("LSTM", rng, T=70, N=2, I=5, H=7, direction="bidirectional",
                       dtype=np.float32, seq=True)
    run_spec_case("LSTM", arrays, {"direction": "bidirectional"}, "cpu", 2e-6)


# ------------------------------------------------------------ whole nodes

WHOLE_CASES = [(op, direction, states, extra)
               for op, extras in (("LSTM", [{}, {"peep": True}]),
                                  ("GRU", [{"linear_before_reset": 0}, {"linear_before_reset": 1}]),
                                  ("RNN", [{}, {"activations": "Relu"}, {"activations": "Sigmoid"}]))
               for direction in ("forward", "reverse", "bidirectional")
               for states in (False, True)
               for extra in extras]


def whole_id(c):
    op, direction, states, extra = c
    return "-".join([op, direction, "states" if states else "zero"] +
                    [f"{k}={v}" for k, v in extra.items()])


@pytest.mark.parametrize("case", WHOLE_CASES, ids=[whole_id(c) for c in WHOLE_CASES])
def test_whole_node_against_ref(case):
    """float32 with constant weights and the default activations: the node stays whole, runs
    on the dnnl backend (one oneDNN RNN primitive, or step by step: a plain LSTM of these few
    sequences) on the cpu device and its own reference kernel on ref; random
    odd sizes, every direction, with and without initial states, peepholes, both GRU
    variants, RNN's three activations."""
    op, direction, states, extra = case
    extra = dict(extra)
    peep = extra.pop("peep", False)
    if "activations" in extra and direction == "bidirectional":
        extra["activations"] = ",".join([extra["activations"]] * 2)
    rng = np.random.default_rng(zlib.crc32(whole_id(case).encode()))
    T, N, I, H = (int(v) for v in rng.integers([1, 1, 1, 1], [10, 6, 10, 12]))
    arrays = make_case(op, rng, T=T, N=N, I=I, H=H, direction=direction, dtype=np.float32,
                       h0=states, c0=states and op == "LSTM", peep=peep)
    attrs = dict(extra, direction=direction)
    n_out = 3 if op == "LSTM" else 2
    g, feeds = build(op, arrays, attrs, n_out, weights="constant")
    assert g.stats()["op_counts"] == {op: 1}
    got = {}
    for device, backend in (("ref", "ref"), ("cpu", "dnnl")):
        plan = tsr.Plan(g, device=device, threads=2)
        got[device] = plan.run(feeds)
        assert plan.node_backend("rnn") == backend
    opts = dict(attrs)
    if "activations" in opts:
        opts["activations"] = opts["activations"].split(",")
    f64 = {k: v.astype(np.float64) for k, v in arrays.items()}
    want = reference(op, f64.pop("X"), f64.pop("W"), f64.pop("R"), **f64, **opts)
    for o in range(n_out):
        close(got["ref"][o], want[o], 1e-6)
        close(got["cpu"][o], got["ref"][o], 1e-5)


@pytest.mark.parametrize("op,attrs", [("LSTM", {"direction": "bidirectional"}),
                                       ("GRU", {"linear_before_reset": 1})])
def test_whole_node_with_large_steps_against_ref(op, attrs):
    """Steps large enough that oneDNN splits them over threads (the small ones run on one)."""
    rng = np.random.default_rng(len(op))
    arrays = make_case(op, rng, T=3, N=9, I=13, H=67, direction=attrs.get("direction", "forward"),
                       dtype=np.float32, h0=True)
    n_out = 3 if op == "LSTM" else 2
    g, feeds = build(op, arrays, attrs, n_out, weights="constant")
    want = tsr.Plan(g, device="ref").run(feeds)
    plan = tsr.Plan(g, device="cpu", threads=2)
    got = plan.run(feeds)
    assert plan.node_backend("rnn") == "dnnl"
    for a, w in zip(got, want):
        close(a, w, 1e-5)


def lstm_kernel(plan, feeds):
    """The kernel that ran node "rnn" (the profile's backend column)."""
    plan.set_profiling(True)
    plan.run(feeds)
    for line in plan.profile_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[-1] == "rnn":
            return fields[3]
    raise AssertionError(plan.profile_text())


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("N,threads", [(1, 2), (3, 2), (7, 2), (8, 1), (8, 2)])
def test_small_batch_lstm_runs_step_by_step(isa, direction, N, threads, monkeypatch):
    """A plain LSTM of at most 8 sequences with H = 45 (recurrent weights in L2) runs step by
    step (dnnl_rnn.c: the inputs' products as one sgemm, then the cpu backend's matrix-vector
    and LSTMCell tiles, each thread its own sequences): all three outputs against ref, every
    direction, batches that split unevenly between threads and over the tile's four rows, no
    bias and random initial states in turn; 9 sequences go to oneDNN's primitive."""
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(N * 10 + threads)
    states = N % 2 == 1
    arrays = make_case("LSTM", rng, T=6, N=N, I=13, H=45, direction=direction, bias=not states,
                       dtype=np.float32, h0=states, c0=states)
    g, feeds = build("LSTM", arrays, {"direction": direction}, 3, weights="constant")
    want = tsr.Plan(g, device="ref").run(feeds)
    plan = tsr.Plan(g, device="cpu", threads=threads)
    got = plan.run(feeds)
    assert lstm_kernel(plan, feeds) == "dnnl/cpu:lstm-steps"
    for a, w in zip(got, want):
        close(a, w, 1e-5)
    big = make_case("LSTM", rng, T=2, N=9, I=13, H=45, direction=direction, dtype=np.float32)
    g, feeds = build("LSTM", big, {"direction": direction}, 3, weights="constant")
    assert lstm_kernel(tsr.Plan(g, device="cpu", threads=threads), feeds) != "dnnl/cpu:lstm-steps"


@pytest.mark.parametrize("attrs,shape,why", [
    ({"clip": 0.5}, {}, "clip"),
    ({}, dict(seq=True), "sequence_lens"),
    ({"layout": 1}, dict(layout=1), "layout"),
    ({"input_forget": 1}, {}, "input_forget"),
    ({"activations": "Sigmoid,Tanh,Relu"}, {}, "activations"),
    ({}, dict(dtype=np.float64), "float64"),
])
def test_nodes_oneDNN_cannot_run_expand(attrs, shape, why):
    """What oneDNN's RNN primitives lack (sequence_lens, clip, other activations, ...) keeps the
    expansion, whose kernels run it as before."""
    rng = np.random.default_rng(len(why))
    arrays = make_case("LSTM", rng, **dict(dict(dtype=np.float32), **shape))
    g, feeds = build("LSTM", arrays, attrs, 3, weights="constant")
    assert "LSTM" not in g.stats()["op_counts"], why
    g, _ = build("LSTM", make_case("LSTM", rng, dtype=np.float32), {}, 3)
    assert "LSTM" not in g.stats()["op_counts"], "weights fed at run time"


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_whole_node_is_expanded_for_its_gradient(op):
    """Trainable weights (parameters) keep the node whole for inference plans, and the
    gradient graph differentiates its expansion: the gradients match those of the same node
    on weights fed as inputs (expanded at build)."""
    rng = np.random.default_rng(21)
    arrays = make_case(op, rng, T=4, N=3, I=5, H=6, direction="bidirectional", h0=True,
                       c0=op == "LSTM", dtype=np.float32)
    n_out = 3 if op == "LSTM" else 2
    outs = ["Y", "Y_h", "Y_c"][:n_out]
    whole, feeds = build(op, arrays, {"direction": "bidirectional"}, n_out, weights="parameter")
    assert whole.stats()["op_counts"] == {op: 1}
    plan = tsr.Plan(whole, device="cpu")
    seeds = [rng.standard_normal(y.shape).astype(np.float32) for y in plan.run(feeds)]
    assert plan.node_backend("rnn") == "dnnl"
    wrt = ["X", "W", "R", "B"]
    got = tsr.Plan(tsr.gradient(whole, outs, wrt), device="cpu").run(feeds + seeds)[n_out:]
    expanded, all_feeds = build(op, arrays, {"direction": "bidirectional"}, n_out)
    want = tsr.Plan(tsr.gradient(expanded, outs, wrt), device="cpu").run(all_feeds + seeds)
    for a, w in zip(got, want[n_out:]):
        close(a, w, 1e-5)


# ---------------------------------------------------------- against torch

class Wrapped(nn.Module):
    def __init__(self, rnn, states):
        super().__init__()
        self.rnn, self.states = rnn, states

    def forward(self, x, *state):
        if not state:
            y, s = self.rnn(x)
        else:
            y, s = self.rnn(x, state if len(state) > 1 else state[0])
        return (y,) + (tuple(s) if isinstance(s, tuple) else (s,))


TORCH_CASES = [
    ("LSTM", dict(num_layers=1), False, False),
    ("LSTM", dict(num_layers=2, bidirectional=True), True, False),
    ("LSTM", dict(num_layers=1, batch_first=True, bidirectional=True), True, True),
    ("GRU", dict(num_layers=2), True, False),
    ("GRU", dict(num_layers=1, batch_first=True, bidirectional=True), False, True),
    ("RNN", dict(num_layers=2, nonlinearity="relu", bidirectional=True), True, False),
    ("RNN", dict(num_layers=1, batch_first=True), False, True),
]


@pytest.mark.parametrize("opset", [13, pytest.param(17, marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1].values()))}-h{int(c[2])}")
def test_against_torch(case, opset):
    op, kw, states, batch_first = case
    torch.manual_seed(len(str(case)))
    I, H, T, N = 5, 7, 6, 3
    rnn = getattr(nn, op)(I, H, **kw).double()
    D = 2 if kw.get("bidirectional") else 1
    L = kw["num_layers"]
    x = torch.randn((N, T, I) if batch_first else (T, N, I), dtype=torch.float64)
    args = [x]
    if states:
        args.append(torch.randn(L * D, N, H, dtype=torch.float64))
        if op == "LSTM":
            args.append(torch.randn(L * D, N, H, dtype=torch.float64))
    m = Wrapped(rnn, states)
    with torch.no_grad():
        want = [t.numpy() for t in m(*args)]
    g = tsr.Graph.load_bytes(onnx_bytes(m, tuple(args), opset))
    for device in DEVICES:
        got = tsr.Plan(g, device=device).run([a.numpy() for a in args])
        for o, (a, w) in enumerate(zip(got, want)):
            close(a, w, 1e-12)
    g32 = tsr.Graph.load_bytes(onnx_bytes(m.float(), tuple(a.float() for a in args), opset))
    got = tsr.Plan(g32, device="cpu").run([a.float().numpy() for a in args])
    for a, w in zip(got, want):
        close(a, w, 1e-5)


# --------------------------------------------------------------- gradients

GRAD_CASES = [
    ("LSTM", {"direction": "bidirectional"}, dict(seq=True, h0=True, c0=True, peep=True)),
    ("LSTM", {"input_forget": 1, "clip": 1.5, "layout": 1}, dict(layout=1)),
    ("GRU", {"linear_before_reset": 0, "direction": "reverse"}, dict(seq=True, h0=True)),
    ("GRU", {"linear_before_reset": 1}, dict(h0=True)),
    ("RNN", {"direction": "bidirectional"}, dict(h0=True, seq=True)),
    # Plain LSTMs: each step's gate math is one LSTMCell, so its gradient rule is the one used.
    ("LSTM", {}, dict(seq=True, h0=True, c0=True)),
    ("LSTM", {"direction": "bidirectional", "layout": 1}, dict(layout=1, bias=False)),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[spec_id(c) for c in GRAD_CASES])
def test_gradient_against_finite_differences(case):
    op, attrs, shape = case
    rng = np.random.default_rng(zlib.crc32(spec_id(case).encode()))
    arrays = make_case(op, rng, T=3, N=2, I=2, H=2, direction=attrs.get("direction", "forward"),
                       **shape)
    n_out = 3 if op == "LSTM" else 2
    g, feeds = build(op, arrays, attrs, n_out)
    wrt = [k for k in INPUT_ORDER if k in arrays and arrays[k].dtype == np.float64]
    outs = ["Y", "Y_h", "Y_c"][:n_out]
    plan = tsr.Plan(g)
    seeds = [rng.standard_normal(y.shape) for y in plan.run(feeds)]
    names = [k for k in INPUT_ORDER if k in arrays]

    def loss(values):
        return sum(float(np.sum(y * s)) for y, s in zip(plan.run(values), seeds))

    grads = tsr.Plan(tsr.gradient(g, outs, wrt)).run(feeds + seeds)[n_out:]
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


# ------------------------------------------------------------- LSTMCell

def cell_reference(gates, c_prev):
    H = gates.shape[1] // 4
    i, o, f, g = (gates[:, k * H:(k + 1) * H] for k in range(4))
    c = _sigmoid(i) * np.tanh(g)
    if c_prev is not None:
        c = c + _sigmoid(f) * c_prev
    return _sigmoid(o) * np.tanh(c), c


def cell_graph(dtype, B, H, with_c):
    g = tsr.Graph()
    g.add_input("gates", dtype, [B, 4 * H])
    ins = ["gates"]
    if with_c:
        g.add_input("c_prev", dtype, [B, H])
        ins.append("c_prev")
    g.add_node("LSTMCell", ins, ["h", "c"], {}, domain="ai.tessera", name="cell")
    g.add_output("h")
    g.add_output("c")
    return g


@pytest.mark.parametrize("with_c", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("isa", [None] + isa_params())
@pytest.mark.parametrize("B,H", [(1, 1), (3, 5), (2, 17), (5, 33), (1, 128), (4, 7), (9, 67)])
def test_lstm_cell_against_numpy(B, H, isa, dtype, with_c, monkeypatch):
    """On ref (isa None) and on the cpu device at each instruction set (float32; float64 falls
    back to ref). Odd hidden sizes leave partial vectors at every level (16, 8 and 1 lanes),
    (9, 67) is split over two threads; large pre-activations saturate the gates."""
    rng = np.random.default_rng(zlib.crc32(f"{B}-{H}-{with_c}".encode()))
    gates = (rng.standard_normal((B, 4 * H)) * 3.0).astype(dtype)
    c_prev = (rng.standard_normal((B, H)) * 2.0).astype(dtype)
    feeds = [gates, c_prev] if with_c else [gates]
    if isa:
        monkeypatch.setenv("TSR_CPU_ISA", isa)
    g = cell_graph(dtype, B, H, with_c)
    plan = tsr.Plan(g, device="cpu" if isa else "ref", threads=2)
    got = plan.run(feeds)
    if isa:
        assert plan.node_backend("cell") == ("cpu" if dtype == np.float32 else "ref")
    want = cell_reference(gates.astype(np.float64), c_prev if with_c else None)
    for y, w in zip(got, want):
        assert y.dtype == dtype
        close(y, w, 1e-12 if dtype == np.float64 else 2e-6)


@pytest.mark.parametrize("seeded", ["both", "h", "c"])
@pytest.mark.parametrize("with_c", [True, False])
def test_lstm_cell_gradient_against_finite_differences(with_c, seeded):
    """Either output alone (the other's gradient absent) or both, with and without c_prev;
    then the gradient of that gradient, through the element-wise ops the rule writes."""
    rng = np.random.default_rng(zlib.crc32(f"cell-{with_c}-{seeded}".encode()))
    B, H = 2, 3
    feeds = [rng.standard_normal((B, 4 * H))] + ([rng.standard_normal((B, H))] if with_c else [])
    g = cell_graph(np.float64, B, H, with_c)
    outs = {"both": ["h", "c"], "h": ["h"], "c": ["c"]}[seeded]
    keep = [["h", "c"].index(o) for o in outs]
    wrt = ["gates", "c_prev"][:len(feeds)]
    seeds = [rng.standard_normal((B, H)) for _ in outs]
    plan = tsr.Plan(g)

    def loss(values):
        ys = plan.run(values)
        return sum(float(np.sum(ys[k] * s)) for k, s in zip(keep, seeds))

    gg = tsr.gradient(g, outs, wrt)
    grads = tsr.Plan(gg).run(feeds + seeds)[2:]
    eps = 1e-6
    for k, x in enumerate(feeds):
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xs = [f.copy() for f in feeds]
            xs[k][idx] += eps
            hi = loss(xs)
            xs[k][idx] -= 2 * eps
            fd[idx] = (hi - loss(xs)) / (2 * eps)
        err = float(np.max(np.abs(grads[k] - fd)))
        assert err <= 1e-7 * max(float(np.max(np.abs(fd))), 1e-3), f"d/d{wrt[k]}: {err:.3g}"
    # Second order: the Hessian-vector product against differences of the first gradient.
    grad_plan = tsr.Plan(gg)
    vs = [rng.standard_normal(x.shape) for x in feeds]
    hv = tsr.Plan(tsr.gradient(gg, [f"{w}__grad" for w in wrt], wrt)).run(feeds + seeds + vs)
    hi = grad_plan.run([x + eps * v for x, v in zip(feeds, vs)] + seeds)[2:]
    lo = grad_plan.run([x - eps * v for x, v in zip(feeds, vs)] + seeds)[2:]
    for got, a, b, w in zip(hv[-len(wrt):], hi, lo, wrt):
        want = (a - b) / (2 * eps)
        err = float(np.max(np.abs(got - want)))
        assert err <= 1e-6 * max(float(np.max(np.abs(want))), 1e-3), f"Hv in {w}: {err:.3g}"


def test_plain_lstm_steps_are_one_cell_each():
    rng = np.random.default_rng(13)
    g, _ = build("LSTM", make_case("LSTM", rng, T=4, c0=True), {}, 3)
    ops = g.stats()["op_counts"]
    assert ops["LSTMCell"] == 4 and "Sigmoid" not in ops and "Tanh" not in ops
    g, _ = build("LSTM", make_case("LSTM", rng, T=4, peep=True), {}, 3)
    assert "LSTMCell" not in g.stats()["op_counts"]


def test_lstm_cell_refuses_bad_shapes():
    g = tsr.Graph()
    g.add_input("gates", np.float32, [2, 6])
    with pytest.raises(tsr.TesseraError, match=r"gates \('gates'\) has shape \[2, 6\]; it "
                                               r"must be \[batch, 4 \* hidden\]"):
        g.add_node("LSTMCell", ["gates"], ["h", "c"], {}, domain="ai.tessera")
    g = tsr.Graph()
    g.add_input("gates", np.float32, [2, 8])
    g.add_input("c_prev", np.float32, [2, 3])
    with pytest.raises(tsr.TesseraError, match=r"c_prev \('c_prev'\) has shape \[2, 3\], "
                                               r"expected \[2, 2\]"):
        g.add_node("LSTMCell", ["gates", "c_prev"], ["h", "c"], {}, domain="ai.tessera")


# ------------------------------------------------- symbolic sequence length

def test_symbolic_sequence_length_expands_per_plan_shape():
    rng = np.random.default_rng(11)
    arrays = make_case("GRU", rng, T=4, direction="bidirectional", h0=True)
    attrs = {"direction": "bidirectional"}
    g, _ = build("GRU", arrays, attrs, 2, symbolic_time=True)
    assert g.inputs()[0].shape[0] == "time"
    assert g.outputs()[0].shape[0] == "time"
    plan = tsr.Plan(g, device="cpu")
    for T in (4, 9):
        arrays["X"] = rng.standard_normal((T,) + arrays["X"].shape[1:])
        feeds = [arrays[k] for k in INPUT_ORDER if k in arrays]
        got = plan.run(feeds)
        want = reference("GRU", arrays["X"], arrays["W"], arrays["R"], arrays["B"],
                         h0=arrays["h0"], **attrs)
        close(got[0], want[0], 1e-12)
        close(got[1], want[1], 1e-12)
    with pytest.raises(tsr.TesseraError, match="sequence length is symbolic"):
        tsr.gradient(g, ["Y"], ["W"])


def test_symbolic_sequence_length_runs_whole_per_plan_shape():
    """Constant float32 weights: the node stays whole at every plan shape, on oneDNN."""
    rng = np.random.default_rng(14)
    arrays = make_case("LSTM", rng, T=4, N=2, I=3, H=5, h0=True, c0=True, peep=True,
                       dtype=np.float32)
    g, _ = build("LSTM", arrays, {}, 3, symbolic_time=True, weights="constant")
    plan = tsr.Plan(g, device="cpu")
    for T in (4, 9):
        arrays["X"] = rng.standard_normal((T, 2, 3)).astype(np.float32)
        got = plan.run([arrays[k] for k in ("X", "h0", "c0")])
        assert plan.node_backend("rnn") == "dnnl"
        f64 = {k: v.astype(np.float64) for k, v in arrays.items()}
        want = reference("LSTM", f64.pop("X"), f64.pop("W"), f64.pop("R"), **f64)
        for o in range(3):
            close(got[o], want[o], 1e-5)
    with pytest.raises(tsr.TesseraError, match="sequence length is symbolic"):
        tsr.gradient(g, ["Y"], ["h0"])


def test_static_sequence_is_expanded_at_build():
    rng = np.random.default_rng(12)
    g, _ = build("LSTM", make_case("LSTM", rng, T=3), {}, 3)
    ops = g.stats()["op_counts"]
    assert "LSTM" not in ops and ops["Gemm"] == 1 + 2  # the projection, then steps 2 and 3
    g, _ = build("LSTM", make_case("LSTM", rng, T=3), {}, 3, symbolic_time=True)
    assert g.stats()["op_counts"] == {"LSTM": 1}


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("attrs,shape,message", [
    ({"direction": "sideways"}, {}, "direction 'sideways' is not one of"),
    ({"activations": "Sigmoid,Tanh"}, {}, "activations lists 2 functions; LSTM with 1 direction "
                                          "takes 3"),
    ({"activations": "Sigmoid,Tanh,Swish"}, {}, "unknown activation 'Swish'"),
    ({"hidden_size": 5}, {}, "R .* has 3 at axis 2, expected 5"),
    ({"clip": -1.0}, {}, "clip is -1; it must be positive"),
    ({"layout": 2}, {}, "layout is 2"),
])
def test_bad_nodes_are_refused_with_a_reason(attrs, shape, message):
    rng = np.random.default_rng(0)
    arrays = make_case("LSTM", rng, **shape)
    with pytest.raises(tsr.TesseraError, match=message):
        build("LSTM", arrays, attrs, 3)


def test_empty_sequence_is_refused():
    arrays = make_case("RNN", np.random.default_rng(0))
    arrays["X"] = arrays["X"][:0]
    with pytest.raises(tsr.TesseraError, match="X holds a sequence of length 0; RNN needs"):
        build("RNN", arrays, {}, 2)


def test_wrong_weight_shape_is_refused():
    rng = np.random.default_rng(0)
    arrays = make_case("GRU", rng)
    arrays["W"] = arrays["W"][:, :5]
    with pytest.raises(tsr.TesseraError, match=r"W \[num_directions, gates\*hidden_size, "
                                               r"input_size\] has 5 at axis 1, expected 9"):
        build("GRU", arrays, {}, 2)


# ------------------------------------------------------------------- Trilu

@pytest.mark.parametrize("upper", [1, 0])
@pytest.mark.parametrize("k", [None, -2, -1, 0, 1, 3, 9])
@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (2, 3, 6, 4)])
def test_trilu_against_numpy(shape, k, upper):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    ins = [x] if k is None else [x, np.array(k, np.int64)]
    kk = 0 if k is None else k
    want = np.triu(x, kk) if upper else np.tril(x, kk)
    for device in DEVICES:
        got = tsr.run_op("Trilu", ins, {"upper": upper}, device=device)[0]
        np.testing.assert_array_equal(got, want)
    as_int = tsr.run_op("Trilu", [(x * 10).astype(np.int64)] + ins[1:], {"upper": upper})[0]
    np.testing.assert_array_equal(as_int, np.triu((x * 10).astype(np.int64), kk) if upper
                                  else np.tril((x * 10).astype(np.int64), kk))


def test_trilu_with_a_runtime_k_and_its_gradient():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5))
    got = tsr.run_op("Trilu", [x, np.array(-1, np.int64)], {"upper": 0})[0]
    np.testing.assert_array_equal(got, np.tril(x, -1))
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float64, [3, 4, 5])
    g.add_input("k", np.int64, [])
    g.add_node("Trilu", ["x", "k"], ["y"], {"upper": 1})
    g.add_output("y")
    seed = rng.standard_normal((3, 4, 5))
    dx = tsr.Plan(tsr.gradient(g, ["y"], ["x"])).run([x, np.array(1, np.int64), seed])[1]
    np.testing.assert_array_equal(dx, np.triu(seed, 1))


def test_trilu_refuses_a_vector():
    with pytest.raises(tsr.TesseraError, match="Trilu needs rank 2 or more"):
        tsr.run_op("Trilu", [np.zeros(4)])


# ------------------------------------------------------ transformer blocks

class GPTBlock(nn.Module):
    def __init__(self, vocab=50, dim=32, heads=4, length=10):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.1)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.emb(idx) + self.pos[:, :t]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return self.head(x + self.mlp(self.ln2(x)))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = nn.MultiheadAttention(16, 4, kdim=12, vdim=10)

    def forward(self, q, k, v):
        return self.m(q, k, v)[0]


def transformer(name):
    torch.manual_seed(7)
    if name == "encoder":
        return nn.TransformerEncoderLayer(16, 4, 40, dropout=0.0, activation="gelu",
                                          batch_first=True), (torch.randn(2, 7, 16),)
    if name == "decoder":
        causal = torch.triu(torch.full((5, 5), float("-inf")), 1)
        m = nn.TransformerDecoderLayer(16, 4, 40, dropout=0.0, norm_first=True)

        class Dec(nn.Module):
            def __init__(self):
                super().__init__()
                self.m = m

            def forward(self, tgt, memory):
                return self.m(tgt, memory, tgt_mask=causal)
        return Dec(), (torch.randn(5, 2, 16), torch.randn(7, 2, 16))
    if name == "attention":
        return Attention(), (torch.randn(5, 2, 16), torch.randn(7, 2, 12), torch.randn(7, 2, 10))
    return GPTBlock(), (torch.randint(0, 50, (2, 10)),)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", ["encoder", "decoder", "attention", "gpt"])
def test_transformer_blocks_against_torch(name, opset):
    module, args = transformer(name)
    if name == "gpt" and opset == 13:
        opset = 14  # torch exports aten::triu from opset 14 (Trilu)
    module.eval()
    with torch.no_grad():
        want = module(*args).numpy()
    g = tsr.Graph.load_bytes(onnx_bytes(module, args, opset))
    for device in DEVICES:
        got = tsr.Plan(g, device=device).run([a.numpy() for a in args])[0]
        close(got, want, 1e-4)


# -------------------------------------- the sequence models of the bench cache

@pytest.mark.slow
@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", ["lstm", "gru", "transformer_encoder"])
def test_cached_sequence_models_match_torch(name, opset, tmp_path):
    """The 2-layer LSTM and GRU and the transformer encoder of bench/cpu.py, dynamic batch, on
    the cpu device through the CLI, at the batches the cache entry holds PyTorch's outputs for."""
    import models

    if not models.tessera_bin().is_file():
        pytest.fail(f"{models.tessera_bin()} does not exist: build Tessera first")
    entry = models.export(name, opset, None, True)
    assert entry.meta["input_sensitivity"] >= 1e-2, "the output ignores the input"
    for batch in entry.run_batches:
        out = tmp_path / f"out{batch}.npy"
        proc, _ = models.run_tessera(entry.onnx_path, entry.input_path(batch), out, device="cpu")
        assert proc.returncode == 0, f"tessera run failed: {proc.stderr[-4000:]}"
        close(np.load(out), np.load(entry.torch_output_path(batch)).astype(np.float64), 1e-4)

"""One case description per op of the op table, for the op x backend
harness (test_backend_ops.py). A case is one node: its inputs as value
specs (shape, odd sizes, and the range the values must lie in), its
attributes, and the backend that must run it on the cpu device in float32.
Adding an op to src/ops/op_table.h means adding its case here; the
harness fails naming any op that has none. Adding a backend, or teaching
one a new op, means changing `cpu=` of the cases it now runs."""

import math

import numpy as np
from tessera.graph import Graph

I64 = np.int64


class Spec:
    """How to make one input. Float specs follow the dtype under test;
    `const` inputs become graph constants (shape tensors, axes, bounds),
    the others graph inputs (differentiated when float). A dim "C" is the
    channel count, which the harness varies over block sizes and their
    tails where a backend of the device runs the case."""

    def __init__(self, shape, make, const=False, float_=True):
        self.shape, self.make, self.const, self.float = tuple(shape), make, const, float_
        self.plain = False

    def array(self, rng, dtype, channels):
        shape = tuple(channels if d == "C" else d for d in self.shape)
        a = np.asarray(self.make(rng, shape))
        return a.astype(dtype) if self.float else a

    def unblocked(self):
        """Reaches the node plain even when the other inputs come blocked."""
        self.plain = True
        return self


def normal(*shape, scale=1.0):
    return Spec(shape, lambda r, s: r.standard_normal(s) * scale)


def away(*shape, margin=0.1, scale=1.0):
    """|x| >= margin: finite differences never cross a kink at 0."""
    def make(r, s):
        x = r.standard_normal(s) * scale
        return np.where(x >= 0, x + margin, x - margin)
    return Spec(shape, make)


# Finite differences over a million weights would take minutes; the small
# Gemm and MatMul cases check the same gradient rules.
MATVEC_GRAD = "too large for finite differences; the small cases check the rule"


def weights(*shape):
    """Normal values held as a graph constant (inference weights, which
    backends may prepack), where normal() makes a graph input (training)."""
    spec = normal(*shape)
    spec.const = True
    return spec


def positive(*shape, lo=0.5, hi=2.0):
    return Spec(shape, lambda r, s: r.uniform(lo, hi, s))


def running_var(*shape):
    """positive() held as a graph constant: BatchNormTrain's running variance (no gradient)."""
    spec = positive(*shape)
    spec.const = True
    return spec


def distinct(*shape, offset=0.0):
    """Distinct values 0.1 apart (plus `offset`, so that inputs with
    different offsets never tie either): no ties for max and min to break."""
    def make(r, s):
        n = int(np.prod(s))
        return (r.permutation(n).reshape(s) - n / 2) / 10 + offset
    return Spec(shape, make)


def fractional(*shape):
    """Values at least 0.1 away from every integer (Floor, Ceil, Mod)."""
    return Spec(shape, lambda r, s: r.integers(-3, 4, s) + r.uniform(0.1, 0.9, s))


def const(value):
    """A constant of exactly this value and dtype (floats follow the dtype under test)."""
    v = np.asarray(value)
    return Spec(v.shape, lambda r, s: v.copy(), const=True, float_=v.dtype.kind == "f")


def spline_table(n, r_max=5.0, blocks=1):
    """RadialSpline's table [n, 4, blocks·C] of one smooth cubic per column, f(r) = Σ_j a_j
    r^j with random a_j, in each interval's coefficients (f = Σ_m c_m t^m, r = (i + t) h):
    a table whose functions are smooth across the knots, so that finite differences of r
    hold anywhere below r_max."""
    def make(rng, s):
        s = (s[0], s[1], s[2] * blocks)
        h = r_max / n
        a = rng.standard_normal((4, s[2])) * np.array([[1.0], [0.5], [0.2], [0.05]])
        c = np.zeros(s)
        for i in range(n):
            for j in range(4):
                for m in range(j + 1):
                    c[i, m] += a[j] * h ** j * math.comb(j, m) * float(i) ** (j - m)
        return c
    return Spec((n, 4, "C"), make, const=True)


def shape_of(*dims):
    """A constant int64 shape whose "C" entries follow the channel count."""
    return Spec(("C",), lambda r, s: np.array([s[0] if d == "C" else d for d in dims], dtype=I64),
                const=True, float_=False)


def ints(*shape, lo=0, hi=3, constant=False):
    return Spec(shape, lambda r, s: r.integers(lo, hi, s).astype(I64), const=constant,
                float_=False)


def mask(*shape):
    return Spec(shape, lambda r, s: r.standard_normal(s) > 0, float_=False)


def branch_graph(op):
    """A sub-graph applying `op` to the If node's one outer value."""
    g = Graph()
    g.add_input("x", np.float32, [3, 5])
    g.add_node(op, ["x"], ["y"])
    g.add_output("y")
    return g


def loop_body_graph():
    """A Loop body adding iter_num to its one int64 loop-carried value [3, 5], which it also
    gives as a scan output; cond passed through."""
    g = Graph()
    g.add_input("i", np.int64, [])
    g.add_input("c", np.bool_, [])
    g.add_input("x", np.int64, [3, 5])
    g.add_node("Identity", ["c"], ["c_out"])
    g.add_node("Add", ["x", "i"], ["y"])
    g.add_node("Identity", ["y"], ["scan"])
    for name in ("c_out", "y", "scan"):
        g.add_output(name)
    return g


class Case:
    """One node of `op` on `inputs` (Spec or None for an omitted input).

    cpu, cpu64: the backend that must run it on the cpu device in float32,
    in float64. rtol: the "close" tolerance, relative to max |ref| (float32
    sums of many terms need more than the default). grad: True to check the gradient rule
    against finite differences, or a string saying why this case is not
    differentiated. grad_outputs: the outputs differentiated (default all
    float outputs). tol: "close" (a few ulps of max |ref|), "exact", or
    "sum" for sums of products (bounded by the op applied to |inputs|).
    folded: every input is constant, so the graph builder computes the
    node; `expect` is then an independent numpy reference. bf16: oneDNN
    computes the case in bf16 under precision bf16, so its result must move
    off the float32 one (else precision bf16 only has to stay correct).
    expanded: the graph builder replaces the node by the ops it is defined by
    (op.h's expand hook), so no node0 remains to name a backend.
    identity: at the case's shapes the node changes nothing, so identity
    removal drops it wherever its input is not a graph input: when its
    input arrives through a blocked() reorder, no node0 runs."""

    def __init__(self, op, inputs, attrs=None, *, cpu="ref", cpu64="ref", n_outputs=1, opset=17,
                 grad=True, grad_outputs=None, tol="close", rtol=1e-6, folded=False, expect=None,
                 bf16=False, label="", expanded=False, identity=False):
        self.op, self.inputs, self.attrs = op, list(inputs), dict(attrs or {})
        self.cpu, self.cpu64, self.n_outputs, self.opset = cpu, cpu64, n_outputs, opset
        self.grad, self.rtol, self.bf16 = grad, rtol, bf16
        self.grad_outputs, self.tol, self.folded, self.expect = grad_outputs, tol, folded, expect
        self.label, self.expanded, self.identity = label, expanded, identity


CONV = {"kernel_shape": [3, 2], "pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]}
POOL = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
ROIS = np.array([[0.5, 1.0, 4.0, 5.5], [-1.0, 0.0, 3.0, 2.5], [2.0, 1.5, 6.0, 7.0]],
                dtype=np.float32)
ROI_ALIGN = {"output_height": 2, "output_width": 3, "sampling_ratio": 2, "spatial_scale": 0.75}

CASES = [
    # unary.c
    Case("Abs", [away(2, "C", 5, 7)], cpu="cpu", cpu64="cpu", tol="exact"),
    Case("Neg", [normal(2, "C", 5, 7)], cpu="cpu", cpu64="cpu", tol="exact"),
    Case("Relu", [away(3, "C", 7, 5)], cpu="cpu", cpu64="cpu", tol="exact"),
    Case("Relu", [away(3, 5, 7)], cpu="cpu", cpu64="cpu", tol="exact", label="rank3"),
    Case("ReluGrad", [normal(3, "C", 7, 5), away(3, "C", 7, 5)], cpu="cpu", tol="exact"),
    Case("ReluGrad", [normal(3, 5, 7), away(3, 5, 7)], cpu="cpu", tol="exact", label="rank3"),
    Case("ClipGrad", [normal(2, "C", 5, 7), normal(2, "C", 5, 7, scale=2),
                      const(np.float32(-0.5)), const(np.float32(0.7))], cpu="cpu", tol="exact"),
    Case("ClipGrad", [normal(3, 5, 7), normal(3, 5, 7, scale=2), None, const(np.float32(0.5))],
         cpu="cpu", tol="exact", label="max_only"),
    Case("ClipGrad", [normal(2, "C", 5, 7), normal(2, "C", 5, 7, scale=2),
                      const(np.float32(-1.0))], cpu="cpu", tol="exact", label="min_only"),
    Case("Abs", [away(9)], cpu="cpu", cpu64="cpu", tol="exact", label="rank1"),
    Case("LeakyRelu", [away(2, "C", 5, 7)], {"alpha": 0.07}, cpu="cpu"),
    Case("Elu", [away(3, 5, 7)], {"alpha": 0.7}),
    Case("Selu", [away(3, 5, 7)]),
    Case("Clip", [normal(2, "C", 5, 7, scale=2), const(np.float32(-0.5)), const(np.float32(0.7))],
         cpu="cpu", tol="exact"),
    Case("Clip", [normal(3, 5, 7, scale=2), None, const(np.float32(0.5))], cpu="cpu", tol="exact",
         label="max_only"),
    Case("Clip", [normal(2, "C", 5, 7, scale=2), const(np.float32(-1.0))], cpu="cpu",
         tol="exact", label="min_only"),
    Case("Clip", [normal(2, "C", 5, 7, scale=2), const(np.float32(1.0)), const(np.float32(-1.0))],
         cpu="cpu", tol="exact", label="empty_range"),
    Case("Sigmoid", [normal(2, "C", 5, 7, scale=3)], cpu="cpu", cpu64="cpu"),
    Case("Sigmoid", [normal(1, 1, 1, 1, 9, scale=3)], cpu="cpu", cpu64="cpu", label="rank5"),
    Case("Silu", [normal(2, "C", 5, 7, scale=3)], cpu="cpu", cpu64="cpu"),
    Case("Silu", [normal(3, 37, scale=3)], cpu="cpu", cpu64="cpu", label="rank2"),
    Case("SiluGrad", [normal(3, "C", 7, 5), normal(3, "C", 7, 5, scale=3)], cpu="cpu",
         cpu64="cpu"),
    Case("SiluGrad", [normal(5, 33), normal(5, 33, scale=3)], cpu="cpu", cpu64="cpu",
         label="rank2"),
    Case("HardSigmoid", [away(2, "C", 5, 7)], {"alpha": 0.3, "beta": 0.6}, cpu="cpu"),
    Case("HardSwish", [normal(2, "C", 5, 7, scale=3)], cpu="cpu"),
    Case("Tanh", [normal(2, "C", 5, 7, scale=3)], cpu="cpu", cpu64="cpu"),
    Case("Erf", [normal(3, "C", 7, scale=2.0)], cpu="cpu", cpu64="cpu"),
    Case("Exp", [normal(2, "C", 5, 7, scale=3)], cpu="cpu", cpu64="cpu"),
    Case("Log", [positive(3, 5, 7)]),
    Case("Sqrt", [positive(3, 5, 7)]),
    Case("Reciprocal", [positive(3, 5, 7)]),
    Case("Floor", [fractional(3, 5, 7)], tol="exact"),
    Case("Ceil", [fractional(3, 5, 7)], tol="exact"),
    Case("Softplus", [normal(3, 5, 7, scale=3)]),
    Case("Not", [mask(3, 5, 7)], tol="exact"),
    Case("BitwiseNot", [ints(3, 5, 7, lo=-40, hi=40)], opset=18, tol="exact"),
    # binary.c
    Case("Add", [normal(2, "C", 5, 7), normal(2, "C", 5, 7)], cpu="cpu", cpu64="cpu"),
    Case("Add", [normal(2, "C", 5, 7), normal(2, "C", 5, 7).unblocked()], cpu="cpu", cpu64="cpu",
         label="mixed_layouts"),
    Case("Add", [normal(2, "C", 5, 7), normal("C", 1, 1)], cpu="cpu", cpu64="cpu",
         label="per_channel"),
    Case("Add", [normal(3, 5, 7), normal(5, 1)], cpu="cpu", cpu64="cpu", label="broadcast"),
    Case("Sub", [normal(2, "C", 5, 7), normal(1, "C", 1, 1)], cpu="cpu", cpu64="cpu"),
    Case("Sub", [normal("C", 1, 1), normal(2, "C", 5, 7)], cpu="cpu", cpu64="cpu",
         label="broadcast_first"),
    Case("Sub", [normal(3, 5, 7), normal(7)], cpu="cpu", cpu64="cpu", label="row"),
    Case("Sub", [normal(1, 5, 7), normal(2, "C", 5, 7)], cpu="cpu", cpu64="cpu",
         label="row_first"),
    Case("Sub", [normal(3, 5, 7), normal(3, 1, 7)], label="broadcast"),
    Case("Mul", [normal(2, "C", 5, 7), normal(2, "C", 5, 7).unblocked()], cpu="cpu", cpu64="cpu"),
    Case("Mul", [normal(2, "C", 5, 7), normal()], cpu="cpu", cpu64="cpu", label="scalar"),
    Case("Mul", [normal(2, "C", 5, 7), normal(1, 1, 1, 1)], cpu="cpu", cpu64="cpu",
         label="scalar4d"),
    Case("Div", [normal(2, "C", 5, 7), positive(2, "C", 5, 7)], cpu="cpu", cpu64="cpu"),
    Case("Div", [normal(), positive(1, "C", 5, 7)], cpu="cpu", cpu64="cpu", label="scalar_first"),
    Case("Div", [normal(3, 5, 7), positive(5, 1)], cpu="cpu", cpu64="cpu", label="broadcast"),
    # One value per image and channel (squeeze-and-excitation), either side.
    Case("Mul", [normal(3, "C", 5, 7), normal(3, "C", 1, 1)], cpu="cpu", cpu64="cpu",
         label="per_image"),
    Case("Mul", [normal(2, "C", 1, 1), normal(2, "C", 6, 5)], cpu="cpu", cpu64="cpu",
         label="per_image_first"),
    Case("Sub", [normal(2, "C", 1, 1), normal(2, "C", 5, 7)], cpu="cpu", cpu64="cpu",
         label="per_image_first"),
    Case("Div", [normal(3, "C", 5, 7), positive(3, "C", 1, 1)], cpu="cpu", cpu64="cpu",
         label="per_image"),
    Case("Pow", [positive(3, 5, 7), normal(7)]),
    Case("Pow", [normal(3, 5), const(np.array(3, dtype=I64))], label="int_exponent"),
    Case("Max", [distinct(3, 5), distinct(5, offset=0.03), distinct(3, 1, offset=0.06)]),
    Case("Min", [distinct(3, 5), distinct(3, 5, offset=0.05)]),
    Case("Sum", [normal(3, 5), normal(5), normal(3, 5)]),
    Case("Equal", [ints(3, 5), ints(5)], tol="exact"),
    Case("Less", [distinct(3, 5), distinct(5, offset=0.05)], tol="exact"),
    Case("Greater", [distinct(3, 5), distinct(3, 1, offset=0.05)], tol="exact"),
    Case("LessOrEqual", [ints(3, 5), ints(5)], tol="exact"),
    Case("GreaterOrEqual", [ints(3, 1, 5), ints(4, 1)], tol="exact"),
    Case("And", [mask(3, 5), mask(5)], tol="exact"),
    Case("Or", [mask(3, 1), mask(1, 5)], tol="exact"),
    Case("Xor", [mask(2, 3, 5), mask(3, 5)], tol="exact"),
    Case("BitwiseAnd", [ints(3, 5, lo=-40, hi=40), ints(5, lo=-40, hi=40)], opset=18,
         tol="exact"),
    Case("BitwiseOr", [ints(3, 1, lo=-40, hi=40), ints(1, 5, lo=-40, hi=40)], opset=18,
         tol="exact"),
    Case("BitwiseXor", [ints(2, 3, 5, lo=-40, hi=40), ints(3, 5, lo=-40, hi=40)], opset=18,
         tol="exact"),
    Case("Where", [mask(3, 5), normal(3, 5), normal(5)]),
    Case("Mod", [fractional(3, 5), const(np.full((3, 5), 2.0))], {"fmod": 1}),
    # conv.c
    Case("Conv", [normal(2, "C", 9, 7), normal(6, "C", 3, 2), normal(6)], CONV, cpu="dnnl",
         tol="sum", bf16=True),
    Case("Conv", [normal(2, "C", 9, 7), weights(6, "C", 3, 2), weights(6)], CONV, cpu="dnnl",
         tol="sum", bf16=True, label="const_weights"),
    Case("Conv", [normal(1, 6, 7, 5), normal(9, 2, 3, 3)], {"group": 3, "pads": [1, 1, 1, 1]},
         cpu="dnnl", tol="sum", bf16=True, label="grouped"),
    Case("Conv", [normal(2, 3, 9), normal(5, 3, 3)], {"strides": [2], "auto_pad": "SAME_UPPER"},
         tol="sum", label="1d"),
    # conv_transpose.c
    Case("ConvTranspose", [normal(2, "C", 5, 4), normal("C", 3, 3, 2), normal(3)],
         {"strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 2], "dilations": [1, 2]},
         cpu="dnnl", tol="sum"),
    Case("ConvTranspose", [normal(1, 4, 3, 5), weights(4, 3, 2, 3)],
         {"group": 2, "auto_pad": "SAME_UPPER", "strides": [2, 2]}, cpu="dnnl", tol="sum",
         label="grouped_same"),
    Case("ConvTranspose", [normal(2, 3, 4), normal(3, 2, 3), normal(2)],
         {"strides": [3], "output_shape": [12]}, tol="sum", label="1d_output_shape"),
    # pool.c
    Case("MaxPool", [distinct(2, "C", 9, 7)], POOL, cpu="cpu", tol="exact"),
    Case("MaxPool", [distinct(1, "C", 7, 7)], {"kernel_shape": [2, 3], "strides": [2, 1],
                                               "pads": [0, 1, 1, 0], "ceil_mode": 1},
         cpu="cpu", tol="exact", label="ceil"),
    Case("MaxPool", [distinct(1, "C", 9, 7)], {"kernel_shape": [3, 2], "dilations": [2, 1],
                                              "pads": [2, 0, 1, 1]}, cpu="cpu", tol="exact",
         label="dilated"),
    Case("MaxPool", [distinct(2, "C", 9, 7)], {"kernel_shape": [2, 2], "strides": [2, 2],
                                                "auto_pad": "SAME_UPPER"},
         cpu="cpu", tol="exact", label="same_upper"),
    Case("AveragePool", [normal(2, "C", 9, 7)], POOL, cpu="cpu"),
    Case("AveragePool", [normal(1, "C", 9, 7)], {"kernel_shape": [2, 3], "strides": [2, 2],
                                                  "pads": [1, 0, 0, 2], "ceil_mode": 1,
                                                  "count_include_pad": 1},
         cpu="cpu", label="ceil_include_pad"),
    Case("AveragePool", [normal(2, "C", 9, 7)], {"kernel_shape": [5, 5], "auto_pad": "SAME_LOWER"},
         cpu="cpu", label="same_lower"),
    Case("AveragePool", [normal(1, "C", 7, 7)], dict(POOL, count_include_pad=1, ceil_mode=1),
         cpu="cpu", label="include_pad"),
    # stride 1 on rows wider than a vector: plain layouts run runs of output columns as vectors
    Case("MaxPool", [distinct(1, "C", 6, 37)], {"kernel_shape": [3, 3], "strides": [1, 1],
                                                "pads": [1, 1, 1, 1]},
         cpu="cpu", tol="exact", label="wide"),
    Case("MaxPool", [distinct(1, "C", 5, 45)], {"kernel_shape": [2, 3], "strides": [1, 1],
                                                "dilations": [1, 3], "pads": [1, 2, 0, 4],
                                                "ceil_mode": 1},
         cpu="cpu", tol="exact", label="wide_dilated"),
    Case("AveragePool", [normal(2, "C", 5, 37)], {"kernel_shape": [3, 3], "strides": [1, 1],
                                                  "pads": [1, 1, 1, 1]},
         cpu="cpu", label="wide"),
    Case("AveragePool", [normal(1, "C", 4, 41)], {"kernel_shape": [3, 5], "strides": [1, 1],
                                                  "pads": [1, 2, 1, 2], "count_include_pad": 1},
         cpu="cpu", label="wide_include_pad"),
    Case("GlobalAveragePool", [normal(2, "C", 5, 7)], cpu="cpu"),
    Case("GlobalMaxPool", [distinct(2, "C", 5, 7)], cpu="cpu", tol="exact"),
    # norm.c
    Case("BatchNormalization", [normal(2, "C", 5, 7), positive("C"), normal("C"), normal("C"),
                                positive("C")], {"epsilon": 1e-3}, cpu="cpu"),
    Case("LayerNormalization", [normal(3, 5, 7), normal(5, 7), normal(7)], {"axis": -2}),
    Case("LayerNormalization", [normal(3, 5, 37), normal(37), normal(37)], {"axis": -1},
         cpu="cpu", label="rows"),
    Case("InstanceNormalization", [normal(2, "C", 5, 7), normal("C"), normal("C")],
         {"epsilon": 1e-3}),
    Case("GroupNormalization", [normal(2, 6, 3, 5), normal(6), normal(6)], {"num_groups": 3}),
    Case("GroupNormalization", [normal(2, 6, 4), normal(2), normal(2)],
         {"num_groups": 2, "epsilon": 1e-3}, label="per_group"),
    # matmul.c
    Case("Gemm", [normal(3, 7), normal(5, 7), normal(5)], {"transB": 1, "alpha": 0.7, "beta": 1.3},
         cpu="dnnl", tol="sum"),
    Case("Gemm", [normal(3, 37), weights(5, 37), weights(5)], {"transB": 1}, cpu="dnnl",
         tol="sum", bf16=True, label="classifier"),
    Case("Gemm", [normal(7, 3), normal(7, 5), normal(3, 1)], {"transA": 1}, cpu="dnnl",
         tol="sum", label="transA"),
    Case("MatMul", [normal(2, 3, 7), normal(7, 5)], cpu="dnnl", cpu64="cpu", tol="sum"),
    Case("MatMul", [normal(2, 5, 33), weights(33, 7)], cpu="dnnl", cpu64="cpu", tol="sum",
         bf16=True, label="const_b"),
    # float64 on the cpu kernel (kernels_gemm.c): row and column tails, equal batch dims,
    # and enough rows for two threads.
    Case("MatMul", [normal(3, 11, 13), normal(13, 21)], cpu="dnnl", cpu64="cpu", tol="sum",
         label="tails"),
    Case("MatMul", [normal(5, 3, 6), normal(5, 6, 9)], cpu="dnnl", cpu64="cpu", tol="sum",
         label="batched"),
    Case("MatMul", [normal(2, 301, 64), weights(64, 70)], cpu="dnnl", cpu64="cpu", tol="sum",
         label="threads", grad="large: the small cases check the same rule"),
    Case("MatMul", [normal(2, 1, 3, 7), normal(3, 7, 5)], cpu="dnnl", tol="sum",
         label="batch_broadcast"),
    Case("MatMul", [normal(7), normal(2, 7, 3)], cpu="dnnl", tol="sum", label="vector"),
    # A few rows against a B past the caches: the cpu matrix-vector path
    # (kernels_matvec.c), B in both orders, odd K tails and column slices.
    Case("Gemm", [normal(2, 517), weights(509, 517), weights(509)], {"transB": 1}, cpu="dnnl",
         tol="sum", label="matvec_nt", grad=MATVEC_GRAD),
    Case("Gemm", [normal(4, 1031), normal(257, 1031), normal(257)],
         {"transB": 1, "alpha": 0.5, "beta": 2.0}, cpu="dnnl", tol="sum", label="matvec_nt_m4",
         grad=MATVEC_GRAD),
    Case("Gemm", [normal(3, 513), normal(513, 515), normal(3, 515)], {"alpha": 0.7, "beta": 1.3},
         cpu="dnnl", tol="sum", label="matvec_nn", grad=MATVEC_GRAD),
    Case("MatMul", [normal(1, 2, 515), weights(515, 517)], cpu="dnnl", cpu64="cpu", tol="sum",
         label="matvec", grad=MATVEC_GRAD),
    # One row against a B the caches hold, with a full row of C: a recurrent step (rnn.c).
    Case("Gemm", [normal(1, 37), weights(131, 37), normal(1, 131)], {"transB": 1}, cpu="dnnl",
         tol="sum", label="matvec_m1_cached"),
    Case("Einsum", [normal(2, 3, 7), normal(2, 7, 5)], {"equation": "bij,bjk->bik"}, tol="sum"),
    # reduce.c
    Case("ReduceMean", [normal(3, 5, 7)], {"axes": [1]}, cpu="cpu", cpu64="cpu"),
    Case("ReduceSum", [normal(3, 5, 7), const(np.array([0, 2], dtype=I64))], {"keepdims": 0},
         cpu="cpu", cpu64="cpu"),
    Case("ReduceMax", [distinct(3, 5, 7)], {"axes": [0, 2], "keepdims": 0}, tol="exact"),
    Case("ReduceMin", [distinct(3, 5, 7)], {"axes": [-1]}, tol="exact"),
    # test_ops_int.py has every integer dtype, and the gradient at zeros
    Case("ReduceProd", [positive(3, 5, 7, lo=0.8, hi=1.25)], {"axes": [1], "keepdims": 0}),
    # test_reduce_norms.py has numpy, the integer dtypes, PyTorch's exports and the edge values;
    # ReduceL1's kink at 0 kept away from finite differences
    Case("ReduceL1", [away(3, 5, 7)], {"axes": [0, -1]}),
    Case("ReduceL1", [away(4, 9)], {"keepdims": 0}, label="all_axes"),
    Case("ReduceL2", [normal(3, 5, 7)], {"axes": [1], "keepdims": 0}),
    Case("ReduceL2", [normal(2, 3, 5), const(np.array([-1, 0], dtype=I64))], opset=18,
         label="opset18"),
    Case("ReduceLogSum", [positive(3, 5, 7)], {"axes": [2]}),
    Case("ReduceLogSumExp", [normal(3, 5, 7, scale=4.0)], {"axes": [1, 2], "keepdims": 0}),
    Case("ReduceSumSquare", [normal(3, 5, 7)], {"axes": [-2]}),
    Case("ReduceSumSquare", [normal(3, 5, 7), const(np.array([], dtype=I64))],
         {"noop_with_empty_axes": 1}, opset=18, label="noop"),
    Case("Softmax", [normal(3, 5, 7)], {"axis": 1}),
    Case("Softmax", [normal(3, 5, 7)], {"axis": 1}, opset=11, cpu="cpu", label="opset11"),
    Case("Softmax", [normal(4, 3, 37, scale=4.0)], {"axis": -1}, cpu="cpu", label="last_axis"),
    Case("LogSoftmax", [normal(3, 5, 7)], {"axis": -1}, cpu="cpu"),
    Case("LogSoftmax", [normal(2, 100, scale=4.0)], {"axis": 1}, cpu="cpu", label="wide"),
    # shape.c
    Case("Shape", [normal(3, 5, 7)], folded=True,
         expect=lambda x: np.array(x.shape, dtype=I64)),
    Case("Reshape", [normal(3, 5, 7), const(np.array([5, -1], dtype=I64))], tol="exact"),
    Case("Flatten", [normal(3, 5, 7)], {"axis": 2}, tol="exact"),
    Case("Squeeze", [normal(3, 1, 5), const(np.array([1], dtype=I64))], tol="exact"),
    Case("Unsqueeze", [normal(3, 5), const(np.array([0, 3], dtype=I64))], tol="exact"),
    Case("Expand", [normal(3, 1), const(np.array([2, 3, 5], dtype=I64))], tol="exact"),
    Case("Identity", [normal(3, 5)], tol="exact"),
    # control.c: If expands into its taken branch (cond constant), Loop unrolls (trip count
    # constant); test_ops_control.py and test_ops_loop.py have the rest
    Case("If", [const(np.array(True)), normal(3, 5)],
         {"then_branch": branch_graph("Neg"), "else_branch": branch_graph("Exp")},
         expanded=True),
    Case("Loop", [const(np.array(3, dtype=I64)), const(np.array(True)), ints(3, 5, hi=9)],
         {"body": loop_body_graph()}, n_outputs=2, tol="exact", expanded=True),
    Case("Dropout", [normal(3, 5)], tol="exact"),
    # movement.c
    Case("Transpose", [normal(2, 3, 5)], {"perm": [1, 2, 0]}, cpu="cpu", cpu64="cpu",
         tol="exact"),
    Case("Transpose", [normal(2, 17, 3, 21)], {"perm": [0, 3, 2, 1]}, cpu="cpu", cpu64="cpu",
         tol="exact", label="tiled"),
    Case("Transpose", [ints(3, 4, 5, hi=9)], {"perm": [0, 2, 1]}, cpu="cpu", cpu64="cpu",
         tol="exact", label="int64"),
    Case("Concat", [normal(2, 13, 5, 7), normal(2, 19, 5, 7), normal(2, 8, 5, 7)], {"axis": 1},
         cpu="cpu", cpu64="cpu", tol="exact"),
    Case("Concat", [normal(2, 16, 5, 7), normal(2, 32, 5, 7), normal(2, 8, 5, 7)], {"axis": 1},
         cpu="cpu", cpu64="cpu", tol="exact", label="whole_blocks"),
    Case("Concat", [ints(2, 3, 5, hi=9), ints(2, 1, 5, hi=9)], {"axis": -2}, cpu="cpu",
         cpu64="cpu", tol="exact", label="int64"),
    Case("Concat", [normal(2, 3), normal(2, 1), normal(2, 5)], {"axis": 1}, cpu="cpu",
         cpu64="cpu", tol="exact", label="rank2"),
    Case("Split", [normal(5, 3), const(np.array([2, 3], dtype=I64))], {"axis": 0}, n_outputs=2,
         cpu="cpu", cpu64="cpu", tol="exact"),
    Case("Slice", [normal(5, 7), const(np.array([1, -5], dtype=I64)),
                   const(np.array([4, 100], dtype=I64)), const(np.array([0, 1], dtype=I64))],
         tol="exact"),
    Case("Slice", [normal(5, 7), const(np.array([4, 0], dtype=I64)),
                   const(np.array([0, 7], dtype=I64)), const(np.array([0, 1], dtype=I64)),
                   const(np.array([-2, 3], dtype=I64))], tol="exact", label="steps"),
    Case("SliceGrad", [normal(2, 3), const(np.array([5, 7], dtype=I64)),
                       const(np.array([4, 0], dtype=I64)), const(np.array([0, 7], dtype=I64)),
                       const(np.array([0, 1], dtype=I64)), const(np.array([-2, 3], dtype=I64))],
         tol="exact"),
    Case("Gather", [normal(5, 3), const(np.array([[3, 0], [3, 1]], dtype=I64))], {"axis": 0},
         cpu="cpu", cpu64="cpu", tol="exact"),
    Case("Gather", [normal(3, 5), const(np.array([4, -1, 2], dtype=I64))], {"axis": 1},
         cpu="cpu", cpu64="cpu", tol="exact", label="axis1"),
    # The cpu kernel: slices of the fixed sizes it copies by moves (3 and 6 elements) and of
    # other sizes, int32 indices, indices from a graph input, enough slices for two threads.
    Case("Gather", [normal(2, 7, 3, 2), const(np.array([6, -7, 0, 3, 3], dtype=np.int32))],
         {"axis": 1}, cpu="cpu", cpu64="cpu", tol="exact", label="int32"),
    Case("Gather", [normal(9, 5, 3), ints(4, 3, lo=-9, hi=9)], {"axis": 0}, cpu="cpu",
         cpu64="cpu", tol="exact", label="input_indices"),
    Case("Gather", [normal(4000, 3), ints(4, 3001, lo=-4000, hi=4000)], {"axis": 0}, cpu="cpu",
         cpu64="cpu", tol="exact", label="threads", grad="large: the small cases check the rule"),
    Case("Pad", [normal(3, 5), const(np.array([1, 0, 2, -1], dtype=I64))], tol="exact"),
    Case("Tile", [normal(2, 3), const(np.array([2, 3], dtype=I64))], tol="exact"),
    # gather.c (test_ops_gather.py has numpy references for every dtype and reduction)
    Case("GatherElements", [normal(4, 5, 3), const(np.array([[[3, -1, 0], [-4, 2, 3]]] * 2,
                                                            dtype=I64))], {"axis": 1},
         tol="exact"),
    Case("GatherND", [normal(3, 4, 5), const(np.array([[1, -2], [0, 3], [1, 2]], dtype=I64))],
         tol="exact"),
    Case("GatherND", [normal(2, 4, 3), const(np.array([[[1], [-1], [1]], [[0], [2], [3]]],
                                                      dtype=I64))], {"batch_dims": 1},
         tol="exact", label="batch_dims"),
    Case("GatherNDGrad", [normal(3, 5), const(np.array([[1, 2], [1, -2], [0, 3]], dtype=I64)),
                          const(np.array([3, 4, 5], dtype=I64))]),
    # No repeated positions under 'none', whose winner among repeats is unspecified.
    Case("ScatterElements", [normal(4, 5), const(np.array([[1, 0, 3, -1, 2], [-1, 2, 0, 1, 3]],
                                                          dtype=I64)), normal(2, 5)],
         {"axis": 0}, tol="exact"),
    Case("ScatterElements", [normal(4, 5), const(np.array([[1, 0, 3], [-3, 2, 0], [2, 2, -1]],
                                                          dtype=I64)), normal(3, 3)],
         {"axis": 1, "reduction": "add"}, label="add"),
    # The updates of 'mul' are a constant: their gradient has no rule yet.
    Case("ScatterElements", [normal(4, 5), const(np.array([[1, 0, 3], [-3, 2, 0], [2, 2, -1]],
                                                          dtype=I64)), const(np.full((3, 3), 1.5))],
         {"axis": 1, "reduction": "mul"}, label="mul"),
    Case("ScatterElements", [distinct(4, 5), const(np.array([[1, 0, 3], [-3, 2, 0], [2, 2, -1]],
                                                            dtype=I64)), distinct(3, 3, offset=0.03)],
         {"axis": 1, "reduction": "max"}, tol="exact", label="max"),
    Case("ScatterElements", [distinct(4, 5), const(np.array([[1, 0, 3], [-3, 2, 0], [2, 2, -1]],
                                                            dtype=I64)), distinct(3, 3, offset=0.03)],
         {"axis": 1, "reduction": "min"}, tol="exact", label="min"),
    Case("ScatterND", [normal(5, 3), const(np.array([[1], [3]], dtype=I64)), normal(2, 3)],
         tol="exact"),
    Case("ScatterND", [normal(4, 3), const(np.array([[1, 2], [-3, -1], [0, 0]], dtype=I64)),
                       normal(3)], {"reduction": "add"}, label="add"),
    Case("ScatterND", [normal(4, 3), const(np.array([[1], [-3], [0]], dtype=I64)),
                       const(np.full((3, 3), -0.5))], {"reduction": "mul"}, label="mul"),
    Case("ScatterND", [distinct(4, 3), const(np.array([[1], [-3], [0]], dtype=I64)),
                       distinct(3, 3, offset=0.03)], {"reduction": "max"}, tol="exact",
         label="max"),
    Case("ScatterND", [distinct(4, 3), const(np.array([[1], [-3], [0]], dtype=I64)),
                       distinct(3, 3, offset=0.03)], {"reduction": "min"}, tol="exact",
         label="min"),
    # resize.c (test_ops_resize.py has the references for every mode)
    Case("Resize", [normal(2, "C", 5, 7), None, None, const(np.array([8, 11], dtype=I64))],
         {"mode": "linear", "axes": [2, 3]}, cpu="cpu"),
    Case("Resize", [normal(2, "C", 5, 7), None, const(np.array([1, 1, 2, 2], dtype=np.float32))],
         {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
          "nearest_mode": "floor"}, cpu="cpu", tol="exact", label="nearest2x"),
    Case("Resize", [normal(1, "C", 9, 8), None, const(np.array([1, 1, 0.5, 0.75],
                                                               dtype=np.float32))],
         {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, cpu="cpu",
         label="down_align_corners"),
    Case("Resize", [normal(2, 3, 4, 5), None, None, const(np.array([2, 3, 7, 3], dtype=I64))],
         {"mode": "cubic", "exclude_outside": 1}, label="cubic"),
    Case("Resize", [normal(2, 3, 9, 8), None, None, const(np.array([2, 3, 4, 3], dtype=I64))],
         {"mode": "linear", "antialias": 1}, label="antialias"),
    Case("Resize", [normal(1, 3, 5, 6), const(np.array([0, 0, 0.25, -0.25, 1, 1, 0.75, 1.25])),
                    None, const(np.array([1, 3, 4, 7], dtype=I64))],
         {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
          "extrapolation_value": 0.5}, label="crop"),
    Case("Upsample", [normal(2, "C", 5, 7), const(np.array([1, 1, 2, 1.5], dtype=np.float32))],
         {"mode": "linear"}, cpu="cpu", opset=11),
    Case("ResizeGrad", [normal(2, 3, 8, 11), const(np.array([2, 3, 5, 7], dtype=I64)), None, None,
                        const(np.array([2, 3, 8, 11], dtype=I64))], {"mode": "linear"}),
    # constant.c
    Case("Constant", [], {"value": np.arange(15.0).reshape(3, 5)}, folded=True,
         expect=lambda: np.arange(15.0).reshape(3, 5)),
    Case("ConstantOfShape", [const(np.array([3, 5], dtype=I64))],
         {"value": np.array([2.5])}, folded=True,
         expect=lambda s: np.full((3, 5), 2.5)),
    Case("Cast", [normal(3, 5)], {"to": 11}, tol="exact"),
    Case("CastLike", [normal(3, 5), Spec((2,), lambda r, s: r.standard_normal(s), const=True,
                                         float_=False)], tol="exact"),
    Case("Range", [const(np.array(1, dtype=I64)), const(np.array(14, dtype=I64)),
                   const(np.array(3, dtype=I64))], folded=True,
         expect=lambda a, b, c: np.arange(a, b, c, dtype=I64)),
    # dpp.c
    Case("DetailPreservingPool", [positive(2, "C", 9, 7), normal("C", scale=0.3),
                                  normal("C", scale=0.3)],
         {"kernel_shape": [3, 3], "strides": [2, 2]}, cpu="cpu"),
    Case("DetailPreservingPoolGrad", [normal(2, "C", 4, 3), positive(2, "C", 9, 7),
                                      normal("C", scale=0.3), normal("C", scale=0.3)],
         {"kernel_shape": [3, 3], "strides": [2, 2]}, n_outputs=3, cpu="cpu", rtol=1e-5,
         grad="second derivatives of DPP are not written (a clear error, test_dpp.py)"),
    # grad_*.c
    Case("ConvGradInput", [normal(2, 6, 5, 6), normal(6, 5, 3, 2),
                           const(np.array([2, 5, 9, 7], dtype=I64))], CONV, cpu="dnnl", tol="sum"),
    Case("ConvGradFilter", [normal(2, 5, 9, 7), normal(2, 6, 5, 6),
                            const(np.array([6, 5, 3, 2], dtype=I64))], CONV, cpu="dnnl", tol="sum"),
    Case("MaxPoolGrad", [distinct(2, "C", 9, 7), normal(2, "C", 5, 4)], POOL, cpu="cpu"),
    Case("MaxPoolGrad", [distinct(2, "C", 8, 9), normal(2, "C", 4, 3)],
         {"kernel_shape": [2, 3], "strides": [2, 3], "dilations": [2, 1], "ceil_mode": 1},
         cpu="cpu", label="ceil_dilated"),
    Case("MaxPoolGather", [distinct(2, 3, 9, 7), normal(2, 3, 9, 7)], POOL, tol="exact"),
    Case("AveragePoolGrad", [normal(2, 3, 5, 4), const(np.array([2, 3, 9, 7], dtype=I64))], POOL,
         cpu="cpu"),
    Case("GatherGrad", [normal(2, 2, 3), const(np.array([[3, 0], [3, 1]], dtype=I64)),
                        const(np.array([5, 3], dtype=I64))], {"axis": 0}),
    Case("SumTo", [normal(3, 5, 7), const(np.array([5, 1], dtype=I64))], cpu="cpu", cpu64="cpu",
         tol="sum"),
    Case("SumTo", [normal(4, 9, "C"), const(np.array([4, 1, 1], dtype=I64))], cpu="cpu",
         cpu64="cpu", tol="sum", label="rows"),
    Case("SumTo", [normal(2, 3, "C"), const(np.array([1, 1], dtype=I64))], cpu="cpu",
         cpu64="cpu", tol="sum", label="lead_axis"),
    Case("SumTo", [normal(2, "C", 5, 4), shape_of(2, "C", 5, 4)], cpu="cpu", cpu64="cpu",
         tol="exact", label="same_shape", identity=True),
    # training.c
    Case("BatchNormTrain", [normal(3, "C", 4, 3, scale=2), positive("C"), normal("C"),
                            weights("C"), running_var("C")],
         {"epsilon": 1e-3, "momentum": 0.8}, n_outputs=5, grad_outputs=[0], cpu="cpu", rtol=1e-5),
    Case("BatchNormTrain", [normal(4, 5, 6), positive(5), normal(5), weights(5), running_var(5)],
         n_outputs=5, grad_outputs=[0], cpu="cpu", rtol=1e-5, label="rank3"),
    Case("BatchNormTrainGrad", [normal(3, "C", 4, 3), normal(3, "C", 4, 3), positive("C"),
                                normal("C"), positive("C")], n_outputs=3, cpu="cpu", rtol=1e-5),
    Case("DropoutTrain", [normal(5, 7), const(np.array(7, dtype=I64))], {"ratio": 0.3},
         n_outputs=2, grad_outputs=[0]),
    # loss.c
    Case("SoftmaxCrossEntropy", [normal(3, 5, 2), ints(3, 2, hi=5, constant=True)],
         {"label_smoothing": 0.1}),
    Case("SoftmaxCrossEntropyGrad", [normal(), normal(3, 5, 2), ints(3, 2, hi=5, constant=True)]),
    Case("RegressionLoss", [normal(3, 5), normal(3, 5)], {"kind": "huber", "delta": 0.7,
                                                          "reduction": "sum"}),
    Case("RegressionLoss", [normal(3, 5), normal(3, 5)], {"kind": "mse"}, label="mse"),
    Case("RegressionLossGrad", [normal(), normal(3, 5), normal(3, 5)], {"kind": "l1"}),
    # fused.c
    Case("FusedConv", [normal(2, 5, 9, 7), normal(6, 5, 3, 2), normal(6), normal(2, 6, 5, 6)],
         dict(CONV, activation="Relu"), cpu="dnnl", tol="sum", bf16=True),
    Case("FusedConv", [normal(2, "C", 9, 7), weights(6, "C", 3, 2), weights(6), normal(2, 6, 5, 6)],
         dict(CONV, activation="Tanh"), cpu="dnnl", tol="sum", bf16=True, label="const_weights"),
    Case("FusedConv", [normal(2, 5, 9, 7), normal(6, 5, 3, 2)],
         dict(CONV, activation="HardSigmoid", activation_alpha=0.3, activation_beta=0.5),
         cpu="dnnl", tol="sum", bf16=True, label="hardsigmoid"),
    Case("FusedConv", [normal(2, 5, 9, 7), normal(6, 5, 3, 2), normal(6)],
         dict(CONV, activation="Silu"), cpu="dnnl", tol="sum", bf16=True, label="silu"),
    # ict.c (test_ict.py has the references, equivariance and ranks up to 6)
    Case("ICT", [normal(5, 3)], {"l": 3}),
    Case("ICT", [normal(4, 3)], {"l": 2, "normalize": 0}, label="unnormalized"),
    Case("ICTProduct", [normal(3, 9, "C"), normal(3, 3, "C")], {"l1": 2, "l2": 1, "l3": 3},
         cpu="cpu", cpu64="cpu"),
    Case("ICTProduct", [normal(3, 27, "C"), normal(3, 9)], {"l1": 3, "l2": 2, "l3": 1,
                                                           "alpha": 0.5},
         cpu="cpu", cpu64="cpu", label="broadcast"),
    Case("ICTProduct", [normal(2, 9), normal(2, 27, "C")], {"l1": 2, "l2": 3, "l3": 3},
         cpu="cpu", cpu64="cpu", label="broadcast_x"),
    Case("ICTProduct", [normal(3, 27, 1), normal(3, 27, "C")], {"l1": 3, "l2": 3, "l3": 2},
         cpu="cpu", cpu64="cpu", label="one_channel_x"),
    Case("ICTProduct", [normal(4, 3), normal(4, 9)], {"l1": 1, "l2": 2, "l3": 1}, cpu="cpu",
         cpu64="cpu", label="no_channels"),
    Case("ICTProduct", [normal(3, 27, "C"), normal(3, 9, "C")],
         {"l1": 3, "l2": 2, "l3": 3, "sum_channels": 1}, cpu="cpu", cpu64="cpu", rtol=1e-5,
         label="sum_channels"),
    Case("ICTProduct", [normal(3, 9, "C"), normal(3, 3)],
         {"l1": 2, "l2": 1, "l3": 1, "alpha": 0.3, "sum_channels": 1}, cpu="cpu", cpu64="cpu",
         rtol=1e-5, label="sum_channels_broadcast"),
    Case("ICT", [normal(5, 3)], {"l": 3, "coordinates": 1}, cpu="cpu", cpu64="cpu",
         label="coordinates"),
    Case("ICTProduct", [normal(3, 5, "C"), normal(3, 7)], {"l1": 2, "l2": 3, "l3": 3,
                                                          "coordinates": 1},
         cpu="cpu", cpu64="cpu", label="coordinates"),
    Case("ICTProduct", [normal(3, 7, "C"), normal(3, 5, "C")], {"l1": 3, "l2": 2, "l3": 1,
                                                               "coordinates": 1},
         cpu="cpu", cpu64="cpu", label="coordinates_channels"),
    Case("ICTProduct", [normal(3, 7, "C"), normal(3, 7, "C")],
         {"l1": 3, "l2": 3, "l3": 2, "sum_channels": 1, "coordinates": 1}, cpu="cpu",
         cpu64="cpu", rtol=1e-5, label="coordinates_sum_channels"),
    # ict_edge.c (test_ict_edge.py has the unfused reference and second-order checks)
    Case("ICTEdgeMessage", [normal(4, 5, "C"), normal(6, 3), normal(6, "C"),
                            ints(6, hi=4, constant=True), ints(6, hi=4, constant=True)],
         {"l1": 2, "l2": 1, "l3": 3, "alpha": 0.7}, cpu="cpu", cpu64="cpu", rtol=1e-5),
    Case("ICTEdgeMessage", [normal(4, 7, "C"), normal(6, 3), normal(6, "C"),
                            ints(6, hi=4, constant=True), ints(6, hi=4, constant=True)],
         {"l1": 2, "l2": 1, "l3": 3, "transpose": 1}, cpu="cpu", cpu64="cpu", rtol=1e-5,
         label="transpose"),
    Case("ICTEdgeMessageGrad", [normal(4, 5, "C"), normal(6, 3), normal(6, "C"),
                                normal(4, 7, "C"), ints(6, hi=4, constant=True),
                                ints(6, hi=4, constant=True)],
         {"l1": 2, "l2": 1, "l3": 3, "alpha": 0.7}, n_outputs=2, cpu="cpu", cpu64="cpu",
         rtol=1e-5),
    # rnn.c (test_ops_rnn.py has the spec reference, torch and every attribute)
    Case("LSTM", [normal(3, 2, 3), normal(2, 8, 3), normal(2, 8, 2), normal(2, 16),
                  const(np.array([3, 2], dtype=np.int32)), normal(2, 2, 2), normal(2, 2, 2),
                  normal(2, 6)], {"direction": "bidirectional", "hidden_size": 2}, n_outputs=3,
         rtol=1e-5, expanded=True),
    Case("GRU", [normal(3, 2, 3), normal(1, 6, 3), normal(1, 6, 2), normal(1, 12)],
         {"linear_before_reset": 1}, n_outputs=2, rtol=1e-5, expanded=True),
    Case("GRU", [normal(2, 3, 3), normal(1, 6, 3), normal(1, 6, 2), normal(1, 12),
                 const(np.array([1, 3], dtype=np.int32)), normal(2, 1, 2)],
         {"direction": "reverse", "layout": 1}, n_outputs=2, rtol=1e-5, expanded=True,
         label="reverse_batch_major"),
    Case("RNN", [normal(4, 2, 3), normal(1, 2, 3), normal(1, 2, 2), normal(1, 4), None,
                 normal(1, 2, 2)], {}, n_outputs=2, rtol=1e-5, expanded=True),
    Case("LSTMCell", [normal(3, 20, scale=2.0), normal(3, 5)], n_outputs=2, cpu="cpu",
         rtol=2e-6),
    Case("LSTMCell", [normal(2, 44, scale=2.0)], n_outputs=2, cpu="cpu", rtol=2e-6,
         label="zero_state"),
    # trilu.c
    Case("Trilu", [normal(2, 4, 5), const(np.array(1, dtype=I64))], {"upper": 0}),
    Case("Trilu", [normal(5, 3)], label="upper"),
    # cumsum.c, onehot.c
    Case("CumSum", [normal(3, 5, 7), const(np.array(1, dtype=I64))],
         {"exclusive": 1, "reverse": 1}),
    # col2im.c: image [5, 6], block [2, 3], dilations [2, 1], pads [1, 0, 0, 1] -> 4 x 5 blocks
    Case("Col2Im", [normal(2, 12, 20), const(np.array([5, 6], dtype=I64)),
                    const(np.array([2, 3], dtype=I64))],
         {"dilations": [2, 1], "pads": [1, 0, 0, 1]}, opset=18,
         grad="no gradient rule: unfolding is no op yet"),
    Case("OneHot", [ints(3, 5, lo=-5, hi=5), const(np.array(4, dtype=I64)),
                    const(np.array([0.5, -2.0]))], {"axis": 1}, tol="exact"),
    # nonzero.c: the output's count is known only at run time (plans run it first)
    Case("NonZero", [ints(3, 4, 5, lo=-1, hi=2)], grad="the output is a set of indices",
         tol="exact"),
    Case("NonZero", [mask(2, 7)], grad="the output is a set of indices", tol="exact",
         label="bool"),
    # topk.c
    Case("TopK", [distinct(3, 7, 5), const(np.array([3], dtype=I64))], {"axis": 1}, n_outputs=2,
         grad_outputs=[0], tol="exact"),
    Case("TopK", [distinct(4, 6), const(np.array([2], dtype=I64))], {"largest": 0}, n_outputs=2,
         grad_outputs=[0], tol="exact", label="smallest"),
    Case("ArgMax", [distinct(3, 7, 5)], {"axis": 1}, tol="exact",
         grad="an index: no gradient"),
    Case("ArgMin", [normal(4, 6)], {"axis": -1, "keepdims": 0}, tol="exact",
         grad="an index: no gradient"),
    Case("TopKGrad", [normal(2, 2, 3), const(np.array([[[3, 0, 1], [0, 2, 4]],
                                                       [[1, 1, 0], [4, 3, 2]]], dtype=I64)),
                      const(np.array([2, 5, 3], dtype=I64))], {"axis": 1}),
    # radial.c
    Case("BesselBasis", [positive(3, 4, lo=0.5, hi=4.5)], {"r_cutoff": 5.0, "n_basis": 6},
         cpu="cpu", cpu64="cpu"),
    Case("BesselBasis", [positive(2, 5, lo=0.5, hi=4.5)],
         {"r_cutoff": 4.0, "n_basis": 7, "p": 6, "derivative": 1}, cpu="cpu", cpu64="cpu",
         label="derivative1"),
    Case("RadialSpline", [positive(3, 5, lo=0.0, hi=4.9), spline_table(7)], {"r_max": 5.0},
         cpu="cpu", cpu64="cpu"),
    Case("RadialSpline", [positive(4, lo=0.1, hi=4.9), spline_table(3, r_max=5.0)],
         {"r_max": 5.0, "derivative": 2}, cpu="cpu", cpu64="cpu", label="derivative2"),
    Case("RadialSpline", [positive(2, 3, lo=4.0, hi=7.0), spline_table(5, r_max=5.0)],
         {"r_max": 5.0}, cpu="cpu", cpu64="cpu", label="beyond",
         grad="zero from r_max on, where finite differences would cross the cutoff"),
    Case("RadialSplineDot", [positive(3, 5, lo=0.1, hi=4.9), spline_table(6), normal(3, 5, "C")],
         {"r_max": 5.0, "derivative": 1}, cpu="cpu", cpu64="cpu"),
    Case("RadialSpline", [positive(5, lo=0.0, hi=4.9), spline_table(4, blocks=3)], {"r_max": 5.0},
         n_outputs=3, cpu="cpu", cpu64="cpu", label="blocks"),
    Case("RadialSplineDot", [positive(2, 3, lo=0.1, hi=4.9), spline_table(5, blocks=2),
                             normal(2, 3, "C"), normal(2, 3, "C")],
         {"r_max": 5.0}, cpu="cpu", cpu64="cpu", label="blocks"),
    # roialign.c, nms.c: detection; NonMaxSuppression's count is known only at run time
    Case("RoiAlign", [normal(2, "C", 6, 5), const(ROIS), const(np.array([1, 0, 1], dtype=I64))],
         ROI_ALIGN),
    Case("RoiAlign", [distinct(2, 3, 6, 5, offset=0.05), const(ROIS),
                      const(np.array([0, 0, 1], dtype=I64))],
         dict(ROI_ALIGN, mode="max", coordinate_transformation_mode="output_half_pixel"),
         label="max"),
    Case("RoiAlignGrad", [normal(3, "C", 2, 3), const(ROIS), const(np.array([1, 1, 0], dtype=I64)),
                          weights(2, "C", 6, 5)], ROI_ALIGN),
    Case("NonMaxSuppression",
         [Spec((2, 9, 4), lambda r, s: np.cumsum(r.uniform(0.2, 2.0, s), axis=-1)),
          distinct(2, 3, 9), const(np.array([4], dtype=I64)), const(np.array([0.3]))],
         grad="the output is a set of indices", tol="exact"),
]

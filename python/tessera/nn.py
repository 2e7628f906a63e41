"""Tessera's own layers as drop-in torch.nn modules.

DetailPreservingPool2d runs Tessera's Detail-Preserving Pooling kernels
(ai.tessera.DetailPreservingPool and its backward op) on CPU tensors and
exports to that ONNX op, so that tessera.optimize and `tessera run` take the
models that contain it."""

import math
import os

import torch

from . import _capi, _feeds
from .graph import Graph, Plan

DOMAIN = "ai.tessera"
DEFAULT_EPSILON = math.sqrt(1e-3)
NORMALIZATIONS = ("paper", "ratio")


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pads(padding):
    """(top, left, bottom, right) from an int, a pair or ONNX's four pads."""
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (int(padding[0]), int(padding[1])) * 2
    return tuple(int(p) for p in padding)


def _onnx_attrs(config):
    """The ai.tessera.DetailPreservingPool attributes of a layer config."""
    kh, kw = _pair(config["kernel_size"])
    stride = _pair(config["stride"] if config["stride"] is not None else (kh, kw))
    return {"kernel_shape": [kh, kw], "strides": list(stride),
            "pads": list(_pads(config["padding"])), "ceil_mode": int(config["ceil_mode"]),
            "symmetric": int(config["symmetric"]), "epsilon": float(config["epsilon"]),
            "normalization": config["normalization"]}


_PLANS = {}


def _plan(op, config, dtype, full):
    """The cached one-node plan of `op` (forward or backward) for a config."""
    key = (op, tuple(sorted(config.items())), dtype, full)
    plan = _PLANS.get(key)
    if plan is None:
        import numpy as np

        npt = np.dtype(np.float32 if dtype == torch.float32 else np.float64)
        g = Graph()
        names = (["dy"] if op == "backward" else []) + ["x", "alpha", "lambda"]
        names += ["filter"] if full else []
        for n in names:
            shape = {"dy": ["n", "c", "oh", "ow"], "x": ["n", "c", "h", "w"],
                     "filter": ["c", 1, "fh", "fw"]}.get(n, ["c"])
            g.add_input(n, npt, shape)
        k = len(names) - (1 if op == "backward" else 0)
        outs = ["y"] if op == "forward" else ["dx", "dalpha", "dlambda", "dfilter"][:k]
        g.add_node("DetailPreservingPool" + ("Grad" if op == "backward" else ""), names, outs,
                   _onnx_attrs(config), domain=DOMAIN, name="dpp")
        for o in outs:
            g.add_output(o)
        plan = Plan(g)
        _PLANS[key] = plan
    return plan


def _run(plan, feeds):
    views = [_feeds.view(x, None, str(i)) for i, x in enumerate(feeds)]
    ins = _capi.tensor_array([v for v, _ in views])
    descs = plan.reshape(ins)
    outs = [torch.empty(shape, dtype=feeds[-1].dtype) for _, shape in descs]
    plan.run(ins, _capi.tensor_array([_feeds.view(o, None, "out")[0] for o in outs]))
    return outs


def detail_preserving_pool(x, alpha, lam, filt, config):
    """DPP of x [N, C, H, W] on Tessera's kernels, without autograd: raw
    per-channel alpha and lam, the full variant's filter or None, and a
    layer config (DetailPreservingPool2d's arguments as a dict)."""
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"DetailPreservingPool2d takes float32 or float64, got {x.dtype}")
    params = [alpha, lam] + ([filt] if filt is not None else [])
    feeds = [x] + [p.to(x.dtype) for p in params]
    return _run(_plan("forward", config, x.dtype, filt is not None), feeds)[0]


class _DppFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, config, x, alpha, lam, filt):
        ctx.config = config
        ctx.save_for_backward(x, alpha, lam, filt)
        return detail_preserving_pool(x, alpha, lam, filt, config)

    @staticmethod
    def backward(ctx, dy):
        x, alpha, lam, filt = ctx.saved_tensors
        params = [alpha, lam] + ([filt] if filt is not None else [])
        feeds = [dy.contiguous().to(x.dtype), x] + [p.to(x.dtype) for p in params]
        grads = _run(_plan("backward", ctx.config, x.dtype, filt is not None), feeds)
        grads = [g.to(p.dtype) for g, p in zip(grads, [x] + params)]
        return (None, *grads) + ((None,) if filt is None else ())


class _DppExport(torch.autograd.Function):
    """Exports as one ai.tessera node; used only under torch.onnx.export.

    The forward runs untraced on detached inputs and hands back a copy:
    traced, its ops would land in a subgraph that torch 1.13's ONNX passes
    fail on, and the symbolic replaces them anyway."""

    @staticmethod
    def forward(ctx, x, alpha, lam, filt, config):
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            with torch.no_grad():
                out = detail_preserving_pool(x.detach(), alpha.detach(), lam.detach(),
                                             None if filt is None else filt.detach(),
                                             dict(config))
        finally:
            torch._C._set_tracing_state(state)
        return out.clone()

    @staticmethod
    def symbolic(g, x, alpha, lam, filt, config):
        a = _onnx_attrs(dict(config))
        full = filt is not None and not (hasattr(filt, "node") and filt.node().mustBeNone())
        inputs = [x, alpha, lam] + ([filt] if full else [])
        return g.op(f"{DOMAIN}::DetailPreservingPool", *inputs, kernel_shape_i=a["kernel_shape"],
                    strides_i=a["strides"], pads_i=a["pads"], ceil_mode_i=a["ceil_mode"],
                    symmetric_i=a["symmetric"], epsilon_f=a["epsilon"],
                    normalization_s=a["normalization"])


class DetailPreservingPool2d(torch.nn.Module):
    """Detail-Preserving Pooling (Saeedan et al., CVPR 2018) over [N, C, H, W],
    a drop-in replacement for a pooling layer, running on Tessera's kernels.

    channels: C. kernel_size, stride (None: the kernel size), padding (an
    int, a pair or ONNX's (top, left, bottom, right)) and ceil_mode as in
    nn.MaxPool2d. symmetric: the symmetric reward (False: asymmetric, which
    rewards only values above the window's mean). full: a learned 3x3
    depthwise pre-filter `filter` [C, 1, 3, 3] (initialized to the
    normalized binomial) instead of the window mean (lite). normalization:
    "paper" or "ratio". epsilon: the reward's epsilon, whose square must be
    a normal number of the dtype (at least 1.1e-19 in float32, 1.5e-154 in
    float64).

    Learnable: `alpha` and `lambda_` [C], raw (the layer uses exp of
    each), initialized to 0. Forward and backward run on CPU float32 or
    float64 tensors; under torch.onnx.export the layer becomes one
    ai.tessera::DetailPreservingPool node (register custom_opsets
    {"ai.tessera": 1}, as tessera.nn.export does)."""

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 symmetric=True, full=False, normalization="paper", epsilon=DEFAULT_EPSILON):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization {normalization!r} is not 'paper' or 'ratio'")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.symmetric, self.full = ceil_mode, symmetric, full
        self.normalization, self.epsilon = normalization, epsilon
        self.alpha = torch.nn.Parameter(torch.zeros(channels))
        self.lambda_ = torch.nn.Parameter(torch.zeros(channels))
        if full:
            b = torch.tensor([1.0, 2.0, 1.0])
            k = torch.outer(b, b) / 16
            self.filter = torch.nn.Parameter(k.repeat(channels, 1, 1, 1))
        else:
            self.register_parameter("filter", None)

    def _config(self):
        return (("kernel_size", self.kernel_size), ("stride", self.stride),
                ("padding", self.padding), ("ceil_mode", self.ceil_mode),
                ("symmetric", self.symmetric), ("normalization", self.normalization),
                ("epsilon", self.epsilon))

    def extra_repr(self):
        return (f"{self.alpha.shape[0]}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, symmetric={self.symmetric}, full={self.full}, "
                f"normalization={self.normalization!r}")

    def eager(self, x):
        """The layer's computation outside ONNX export: Tessera's kernels."""
        return _DppFunction.apply(dict(self._config()), x, self.alpha, self.lambda_, self.filter)

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return _DppExport.apply(x, self.alpha, self.lambda_, self.filter, self._config())
        return self.eager(x)


def export(model, example, f, opset=13, **kwargs):
    """torch.onnx.export of `model` in eval mode with the ai.tessera domain
    registered (for models with Tessera layers) to `f`, a path or a binary
    file object; kwargs go to the exporter."""
    model.eval()
    target = os.fspath(f) if isinstance(f, (str, os.PathLike)) else f
    torch.onnx.export(model, example, target, opset_version=opset,
                      custom_opsets={DOMAIN: 1}, **kwargs)

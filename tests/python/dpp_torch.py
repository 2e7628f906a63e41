"""Detail-Preserving Pooling in PyTorch, written from the formulas with
standard torch ops (unfold), and its export to ONNX as Tessera's custom op
ai.tessera::DetailPreservingPool (opset 1).

The module is the tests' independent reference (autograd gives the reference
gradients) and the way to bring DPP networks from PyTorch into Tessera:

    layer = DetailPreservingPool2d(64, kernel_size=2, full=True)
    ...
    export(model, example_input, "model.onnx")
"""

import math

import torch
import torch.nn.functional as F

DEFAULT_EPSILON = math.sqrt(1e-3)
DOMAIN = "ai.tessera"


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pads(padding):
    """(top, left, bottom, right) from an int, a pair or ONNX's four pads."""
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (int(padding[0]), int(padding[1])) * 2
    return tuple(int(p) for p in padding)


def pooled_size(size, kernel, stride, pad_begin, pad_end, ceil_mode):
    """Output size along one dim by MaxPool's rule (PyTorch's for ceil_mode)."""
    room = size + pad_begin + pad_end - kernel
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def dpp(x, alpha, lam, filt=None, kernel_size=2, stride=None, padding=0, ceil_mode=False,
        symmetric=True, normalization="paper", epsilon=DEFAULT_EPSILON):
    """DPP of x [N, C, H, W] with raw per-channel alpha and lam (alpha = exp(alpha),
    lambda = exp(lam)) and, for the full variant, the depthwise pre-filter filt
    [C, 1, fh, fw] (stride = the pooling stride, zero padding (f - 1) // 2).
    padding: an int, (ph, pw) or ONNX's (top, left, bottom, right)."""
    if normalization not in ("paper", "ratio"):
        raise ValueError(f"normalization {normalization!r} is not 'paper' or 'ratio'")
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else (kh, kw))
    pt, pl, pb, pr = _pads(padding)
    n, c, h, w = x.shape
    oh = pooled_size(h, kh, sh, pt, pb, ceil_mode)
    ow = pooled_size(w, kw, sw, pl, pr, ceil_mode)
    # Zero padding plus, for ceil_mode, room for the last window; a mask of
    # ones marks the positions inside the input.
    extra_h = max(0, (oh - 1) * sh + kh - (h + pt + pb))
    extra_w = max(0, (ow - 1) * sw + kw - (w + pl + pr))
    pad = (pl, pr + extra_w, pt, pb + extra_h)
    cols = F.unfold(F.pad(x, pad), (kh, kw), stride=(sh, sw)).view(n, c, kh * kw, -1)
    ones = torch.ones(1, 1, h, w, dtype=x.dtype)
    mask = F.unfold(F.pad(ones, pad), (kh, kw), stride=(sh, sw)).view(1, 1, kh * kw, -1)
    assert cols.shape[-1] == oh * ow, (cols.shape, oh, ow)

    if filt is None:
        tilde = (cols * mask).sum(2, keepdim=True) / mask.sum(2, keepdim=True)
    else:
        fh, fw = filt.shape[2], filt.shape[3]
        tilde = F.conv2d(x, filt, stride=(sh, sw), padding=((fh - 1) // 2, (fw - 1) // 2),
                         groups=c)
        if tilde.shape[2:] != (oh, ow):
            raise ValueError(f"the {fh}x{fw} filter gives {tuple(tilde.shape[2:])}, "
                             f"the pooling output is {(oh, ow)}")
        tilde = tilde.reshape(n, c, 1, oh * ow)
    d = cols - tilde
    if not symmetric:
        d = torch.clamp(d, min=0)
    y = (d * d + epsilon * epsilon) * mask + (1 - mask)
    if normalization == "ratio":
        y = y / (y * mask).sum(2, keepdim=True)
    half_lambda = 0.5 * torch.exp(lam).view(1, c, 1, 1)
    weights = (torch.exp(alpha).view(1, c, 1, 1) + y ** half_lambda) * mask
    out = (weights * cols).sum(2) / weights.sum(2)
    return out.view(n, c, oh, ow)


class _DppExport(torch.autograd.Function):
    """Exports as one ai.tessera node; used only under torch.onnx.export.

    The forward runs the torch implementation untraced on detached inputs
    and hands back a copy: traced, its ops would land in a subgraph that
    torch 1.13's ONNX passes fail on, and the symbolic replaces them anyway."""

    @staticmethod
    def forward(ctx, x, alpha, lam, filt, config):
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            with torch.no_grad():
                out = dpp(x.detach(), alpha.detach(), lam.detach(),
                          None if filt is None else filt.detach(), **dict(config))
        finally:
            torch._C._set_tracing_state(state)
        return out.clone()

    @staticmethod
    def symbolic(g, x, alpha, lam, filt, config):
        cfg = dict(config)
        kh, kw = _pair(cfg["kernel_size"])
        stride = _pair(cfg["stride"] if cfg["stride"] is not None else (kh, kw))
        pads = _pads(cfg["padding"])
        full = filt is not None and not (hasattr(filt, "node") and filt.node().mustBeNone())
        inputs = [x, alpha, lam] + ([filt] if full else [])
        return g.op(f"{DOMAIN}::DetailPreservingPool", *inputs, kernel_shape_i=[kh, kw],
                    strides_i=list(stride), pads_i=list(pads),
                    ceil_mode_i=int(cfg["ceil_mode"]), symmetric_i=int(cfg["symmetric"]),
                    epsilon_f=float(cfg["epsilon"]), normalization_s=cfg["normalization"])


class DetailPreservingPool2d(torch.nn.Module):
    """DPP over [N, C, H, W] with learned raw alpha and lambda per channel
    (alpha = exp(alpha), lambda = exp(lambda)) and, with full=True, a learned
    3x3 depthwise pre-filter (initialized to a normalized binomial)."""

    def __init__(self, channels, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                 symmetric=True, full=False, normalization="paper", epsilon=DEFAULT_EPSILON):
        super().__init__()
        if normalization not in ("paper", "ratio"):
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

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return _DppExport.apply(x, self.alpha, self.lambda_, self.filter, self._config())
        return dpp(x, self.alpha, self.lambda_, self.filter, **dict(self._config()))


def export(model, example, path, opset=13, **kwargs):
    """torch.onnx.export with the ai.tessera domain registered."""
    model.eval()
    torch.onnx.export(model, example, str(path), opset_version=opset,
                      custom_opsets={DOMAIN: 1}, **kwargs)

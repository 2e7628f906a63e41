"""Detail-Preserving Pooling in PyTorch, written from the formulas with
standard torch ops (unfold): the tests' independent reference (autograd
gives the reference gradients) for Tessera's DPP kernels.

The drop-in layer that runs on Tessera and exports to ai.tessera's
DetailPreservingPool is tessera.nn.DetailPreservingPool2d; the
DetailPreservingPool2d here is that layer with this file's reference
computation in place of Tessera's kernels (same parameters, same export):

    layer = DetailPreservingPool2d(64, kernel_size=2, full=True)
    ...
    export(model, example_input, "model.onnx")
"""

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "python"))

import tessera.nn  # noqa: E402
from tessera.nn import _pads, _pair  # noqa: E402

DEFAULT_EPSILON = math.sqrt(1e-3)
DOMAIN = tessera.nn.DOMAIN


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


class DetailPreservingPool2d(tessera.nn.DetailPreservingPool2d):
    """tessera.nn.DetailPreservingPool2d computed by dpp() above (pure
    PyTorch, autograd for the gradients); exports like the Tessera layer."""

    def eager(self, x):
        return dpp(x, self.alpha, self.lambda_, self.filter, **dict(self._config()))


export = tessera.nn.export

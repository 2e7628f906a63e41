"""Turning numpy arrays and CPU torch tensors into tsr_tensor views.

A feed that is C-contiguous and of the dtype the model expects is passed by
pointer: Tessera reads the caller's memory. Anything else (another dtype, a
non-contiguous view, a Python list) is converted once, into a new
C-contiguous buffer that lives as long as the call. torch is imported only
when a torch tensor is seen, so numpy-only users never load it."""

import sys

import numpy as np

from . import _capi

_TORCH_CODES = None


def _torch_codes():
    global _TORCH_CODES
    if _TORCH_CODES is None:
        import torch

        _TORCH_CODES = {
            torch.float32: 1, torch.uint8: 2, torch.int8: 3, torch.int32: 6,
            torch.int64: 7, torch.bool: 9, torch.float64: 11,
        }
    return _TORCH_CODES


def is_torch(x):
    """Whether x is a torch.Tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def torch_dtype(code):
    """The torch dtype of a tsr_dtype code."""
    for dt, c in _torch_codes().items():
        if c == code:
            return dt
    raise TypeError(f"Tessera dtype {code} has no torch equivalent")


def view(x, dtype, name):
    """(Tensor, owner): a tsr_tensor over x as `dtype` (a numpy dtype; None
    keeps x's own), and the object that must stay alive while it is used:
    x itself when no copy was needed, else the converted copy."""
    if is_torch(x):
        return _torch_view(x, dtype, name)
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if dtype is not None and arr.dtype != dtype:
        arr = np.ascontiguousarray(arr, dtype=dtype)
    elif not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    if arr.dtype not in _capi.DTYPES:
        raise TypeError(f"input {name}: dtype {arr.dtype} has no Tessera equivalent")
    return _capi.tensor_of(arr), arr


def _torch_view(x, dtype, name):
    if x.device.type != "cpu":
        raise ValueError(f"input {name}: a tensor on {x.device}; Tessera reads CPU tensors")
    x = x.detach()
    codes = _torch_codes()
    if dtype is not None:
        want = torch_dtype(_capi.DTYPES[dtype])
        if x.dtype != want:
            x = x.to(want)
    if not x.is_contiguous():
        x = x.contiguous()
    if x.dtype not in codes:
        raise TypeError(f"input {name}: dtype {x.dtype} has no Tessera equivalent")
    if x.dim() > _capi.MAX_RANK:
        raise ValueError(f"input {name}: rank {x.dim()} is more than Tessera's {_capi.MAX_RANK}")
    t = _capi.Tensor()
    t.dtype = codes[x.dtype]
    t.rank = x.dim()
    for d, n in enumerate(x.shape):
        t.dims[d] = n
    t.data = x.data_ptr()
    return t, x

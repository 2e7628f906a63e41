"""Tessera from Python: run ONNX models (tessera.Session) and make PyTorch
modules run on Tessera for inference and training (tessera.optimize).

    import tessera
    sess = tessera.Session("model.onnx")
    (y,) = sess.run(None, {"input": x})

    fast = tessera.optimize(model, (example,))   # an nn.Module: forward, backward, state_dict

The package is pure Python over libtessera.so (ctypes); see
tessera._capi.library_path for where the library is looked up. Errors from
the library raise subclasses of tessera.Error."""

import sys

from ._capi import (DtypeError, Error, FileError, InternalError, InvalidArgumentError,
                    NotFoundError, OutOfMemoryError, ParseError, ShapeError, UnsupportedError,
                    library_path)
from .graph import DeviceTensor, Graph, Plan, ValueSpec
from .session import Session

__version__ = "0.1.0"

if "torch" in sys.modules:
    # A torch user: register the torch.compile backend "tessera" now (PyTorch 2.x).
    from . import bridge as _bridge  # noqa: F401


def __getattr__(name):
    # The PyTorch side loads torch only when asked for, so numpy-only users of
    # Session never import it.
    if name in ("optimize", "OptimizedModule", "CaptureError", "compile_backend"):
        from . import bridge

        return getattr(bridge, name)
    if name in ("export_for_training", "unshare_initializers"):
        from . import export

        return getattr(export, name)
    if name == "nn":
        from . import nn

        return nn
    raise AttributeError(f"module 'tessera' has no attribute {name!r}")


__all__ = [
    "Session", "Graph", "Plan", "ValueSpec", "DeviceTensor", "optimize", "OptimizedModule",
    "CaptureError", "compile_backend",
    "export_for_training", "unshare_initializers", "nn", "library_path", "Error",
    "InvalidArgumentError", "ParseError", "UnsupportedError", "ShapeError", "DtypeError",
    "NotFoundError", "FileError", "OutOfMemoryError", "InternalError",
]

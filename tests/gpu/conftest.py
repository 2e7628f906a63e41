"""The GPU tests (run.sh): the Python tests' helpers (tests/python) and the
checkout's tessera package on the path. PyTorch 2.9 and later export with
the dynamo exporter by default, which starts at opset 18; the models here
are exported at opset 13 with the TorchScript exporter, as on Debian's 1.13."""

import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

try:
    import torch.onnx

    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        _export = torch.onnx.export

        def _torchscript_export(*args, **kwargs):
            kwargs.setdefault("dynamo", False)
            return _export(*args, **kwargs)

        torch.onnx.export = _torchscript_export
except ImportError:
    pass

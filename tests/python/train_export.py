"""Exporting PyTorch models to ONNX for training with Tessera: the tests'
name for tessera.export_for_training (see python/tessera/export.py)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "python"))

from tessera.export import export_for_training as export  # noqa: E402,F401
from tessera.export import unshare_initializers  # noqa: E402,F401

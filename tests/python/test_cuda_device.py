"""The cuda device (src/backends/cuda, docs/hal.md "CUDA") on a machine
without a GPU: creating a plan fails with an error that names what is
missing, never a crash. Skipped where a GPU is present (tests/gpu/run.sh
covers the device there); absent from libraries built without CUDA."""

import ctypes

import numpy as np
import pytest

import tessera
import tsr


def device_names():
    tsr.lib().tsr_device_names.restype = ctypes.c_char_p
    return [d.strip() for d in tsr.lib().tsr_device_names().decode().split(",")]


if "cuda" not in device_names():
    pytest.skip("libtessera was built without CUDA", allow_module_level=True)


def test_without_a_gpu_the_plan_says_what_is_missing():
    g = tsr.Graph()
    g.add_input("x", np.float32, [3])
    g.add_node("Relu", ["x"], ["y"])
    g.add_output("y")
    try:
        tessera.Plan(g, device="cuda")
    except tessera.UnsupportedError as e:
        assert "the cuda device needs an NVIDIA GPU and driver: cudaGetDeviceCount" in str(e)
        return
    pytest.skip("a GPU is present: tests/gpu/run.sh tests the cuda device")

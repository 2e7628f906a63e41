"""The cpu backend's Softmax and LogSoftmax (kernels_eltwise.c) against ref on random shapes:
row lengths below, at and past every vector width (1, 8 and 16 lanes), large ranges of
values, opset 11 (the input flattened to 2-D at the axis) and 13 (one axis), at each
instruction set; a softmax axis that is not the last one stays on ref."""

import zlib

import numpy as np
import pytest

import tsr
from test_cpu_kernels import isa_params


def graph(op, shape, axis, opset):
    g = tsr.Graph()
    g.set_opset(opset)
    g.add_input("x", np.float32, list(shape))
    g.add_node(op, ["x"], ["y"], {"axis": axis}, name="op")
    g.add_output("y")
    return g


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis,opset", [
    ((7, 1), -1, 13), ((3, 5), 1, 13), ((2, 3, 15), -1, 13), ((4, 16), -1, 13),
    ((5, 17), 1, 13), ((2, 4, 33), 2, 13), ((3, 257), -1, 13), ((64, 2, 31), -1, 13),
    ((2, 3, 5, 7), 1, 11), ((3, 6, 6), 2, 11)])
def test_against_ref(shape, axis, opset, op, isa, monkeypatch):
    monkeypatch.setenv("TSR_CPU_ISA", isa)
    rng = np.random.default_rng(zlib.crc32(f"{shape}-{axis}-{opset}-{op}".encode()))
    x = (rng.standard_normal(shape) * rng.choice([0.1, 3.0, 30.0])).astype(np.float32)
    g = graph(op, shape, axis, opset)
    plan = tsr.Plan(g, device="cpu", threads=2)
    got = plan.run([x])[0]
    assert plan.node_backend("op") == "cpu"
    want = tsr.Plan(g, device="ref").run([x])[0].astype(np.float64)
    scale = float(np.max(np.abs(want)))
    err = np.abs(got - want)
    assert np.all(err <= 2e-6 * (np.abs(want) + scale)), float(np.max(err))


def test_strided_axis_stays_on_ref():
    g = graph("Softmax", (3, 5, 7), 1, 13)
    plan = tsr.Plan(g, device="cpu")
    plan.run([np.zeros((3, 5, 7), np.float32)])
    assert plan.node_backend("op") == "ref"

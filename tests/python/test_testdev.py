"""The test device (src/backends/testdev/testdev.c, docs/hal.md): the cpu
device's kernels on a memory pool that the host side must never touch,
mapped PROT_NONE outside the device's own hooks, so that a value reaching
a host kernel without a transfer faults and one reaching a device kernel
without a transfer is refused. It exists while TSR_TESTDEV is set.

Every op case of op_cases.py and a few real models run on it and give the
cpu device's results bit for bit (the same kernels, which the op harness
checks against the reference backend), through transfer steps the plan
counts; constants are uploaded once, not transferred per run."""

import ctypes
import subprocess

import numpy as np
import pytest

import models
import tessera
import tsr
from op_cases import CASES
from test_backend_ops import build, case_id, inputs_of

CHANNELS = 13
PLAN_OPTIONS = {"threads": 2, "depth_first": False, "autotune": False}


@pytest.fixture(autouse=True)
def testdev(monkeypatch):
    monkeypatch.setenv("TSR_TESTDEV", "1")


def device_names():
    tsr.lib().tsr_device_names.restype = ctypes.c_char_p
    return [d.strip() for d in tsr.lib().tsr_device_names().decode().split(",")]


def test_registered_only_when_asked(monkeypatch):
    assert "testdev" in device_names()
    monkeypatch.setenv("TSR_TESTDEV", "0")
    assert "testdev" not in device_names()
    g = tsr.Graph()
    g.add_input("x", np.float32, [2])
    g.add_node("Relu", ["x"], ["y"])
    g.add_output("y")
    with pytest.raises(tsr.TesseraError, match="unknown device 'testdev'"):
        tessera.Plan(g, device="testdev")


def op_configs():
    params = []
    for case in CASES:
        if case.folded:
            continue
        params.append(pytest.param(case, "plain", id=f"{case_id(case)}-plain"))
        # Blocked inputs come from the device; a ref node gets them converted
        # there and transferred (the host side of testdev has no reorderer).
        if any(s is not None and "C" in s.shape for s in case.inputs):
            params.append(pytest.param(case, "nChw16c", id=f"{case_id(case)}-nChw16c"))
    return params


@pytest.mark.parametrize("case,layout", op_configs())
def test_op_on_testdev_matches_cpu(case, layout, monkeypatch):
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    arrays = inputs_of(case, np.dtype("float32"), CHANNELS)
    g, feeds = build(case, arrays, block=layout != "plain")
    dev = tessera.Plan(g, device="testdev", **PLAN_OPTIONS)
    got = dev.run(feeds)
    want = tessera.Plan(g, device="cpu", **PLAN_OPTIONS).run(feeds)
    for o, (x, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(x, w, err_msg=f"{case_id(case)} output {o}")
    stats = dev.stats()
    if case.expanded:
        return
    backend = dev.node_backend("node0")
    assert backend == (case.cpu if case.cpu == "ref" else f"testdev-{case.cpu}")
    if backend != "ref":
        # Each output leaves the device through a transfer step.
        assert stats["n_transfers"] >= case.n_outputs
    elif layout == "plain":
        assert stats["n_transfers"] == 0 and stats["uploaded_bytes"] == 0


def chain():
    """x -> Relu (device) -> Selu (host: no cpu kernel) -> Add with a
    constant (device): values cross both ways, the constant is uploaded."""
    g = tsr.Graph()
    g.add_input("x", np.float32, [3, 5])
    g.add_constant("c", np.arange(15, dtype=np.float32).reshape(3, 5))
    g.add_node("Relu", ["x"], ["r"])
    g.add_node("Selu", ["r"], ["e"], name="host")
    g.add_node("Add", ["e", "c"], ["y"])
    g.add_node("Neg", ["r"], ["z"])
    g.add_output("y")
    g.add_output("z")
    g.add_output("r")
    return g


def test_transfers_are_shared_and_counted():
    g = chain()
    x = np.linspace(-0.9, 0.9, 15, dtype=np.float32).reshape(3, 5)
    dev = tessera.Plan(g, device="testdev", **PLAN_OPTIONS)
    got = dev.run([x])
    want = tsr.Plan(g, device="ref").run([x])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert dev.node_backend("host") == "ref"
    stats = dev.stats()
    # x up; r down once for Selu and the output r (shared); e up; y and z down.
    assert stats["n_transfers"] == 5, stats
    assert stats["uploaded_bytes"] == 15 * 4
    assert stats["n_reorders"] == 0


def test_profile_and_verbose_show_transfers(capfd):
    g = chain()
    x = np.ones((3, 5), np.float32) * 0.5
    plan = tessera.Plan(g, device="testdev", verbose=True, **PLAN_OPTIONS)
    plan.run([x])
    err = capfd.readouterr().err
    assert "transfer 'x' host -> testdev" in err
    assert "upload 'c' host -> testdev" in err
    plan.set_profiling(True)
    plan.run([x])
    assert plan.profile_text().count("Transfer->") == 5


def test_constants_are_uploaded_once_per_plan(capfd):
    """A second specialization (another batch) reuses the first one's
    device copy of the weight, and an evicted one gives its copies back
    only once no other specialization reads them."""
    g = tsr.Graph()
    g.add_input("x", np.float32, ["N", 5])
    w = np.arange(5, dtype=np.float32)
    g.add_constant("w", w)
    g.add_node("Add", ["x", "w"], ["y"])
    g.add_output("y")
    plan = tessera.Plan(g, device="testdev", verbose=True, **PLAN_OPTIONS)
    plan.set_cache_limits(2, 1 << 30)
    for n in (2, 3, 4, 2):
        x = np.full((n, 5), float(n), np.float32)
        np.testing.assert_array_equal(plan.run([x])[0], x + w)
        assert plan.stats()["uploaded_bytes"] == 20
    lines = [line for line in capfd.readouterr().err.splitlines()
             if "constants on the device" in line]
    # Batches 2, 3 and 4 each build a specialization (2 again after its eviction).
    assert lines[0].endswith("1 uploaded (20 bytes), 0 already there (0 bytes)"), lines
    assert all(line.endswith("0 uploaded (0 bytes), 1 already there (20 bytes)")
               for line in lines[1:]), lines
    assert len(lines) == 4, lines


def model_configs():
    for name in ("squeezenet1_1", "mobilenet_v2", "resnet18"):
        yield pytest.param(name, 11, False, (1,), id=name)
    for name in ("lstm", "transformer_encoder"):
        yield pytest.param(name, 13, True, models.DYNAMIC_RUN_BATCHES, id=name)


@pytest.mark.parametrize("model,opset,dynamic,batches", model_configs())
def test_model_on_testdev_matches_cpu(model, opset, dynamic, batches):
    pytest.importorskip("onnx")
    entry = models.export(model, opset, None if dynamic else batches[0], dynamic)
    dev = tessera.Session(str(entry.onnx_path), device="testdev", **PLAN_OPTIONS)
    cpu = tessera.Session(str(entry.onnx_path), device="cpu", **PLAN_OPTIONS)
    name = dev.inputs[0].name
    for batch in batches:
        feeds = {name: np.load(entry.input_path(batch))}
        got = dev.run(feeds=feeds, fresh=True)
        want = cpu.run(feeds=feeds, fresh=True)
        for x, w in zip(got, want):
            np.testing.assert_array_equal(x, w, err_msg=f"{model} batch {batch}")
        expected = np.load(entry.torch_output_path(batch))
        ratio = float(np.max(np.abs(got[0] - expected)) / np.max(np.abs(expected)))
        assert ratio < 1e-3, f"{model} batch {batch}: {ratio:.3g} from PyTorch"
        stats = dev.stats(feeds)
        steps = stats["backend_steps"]
        assert steps["testdev-dnnl"] + steps["testdev-cpu"] > 0, steps
        assert stats["n_transfers"] >= 2, stats  # at least the input up and the output down
        assert stats["uploaded_bytes"] > 0, stats


def test_cli_shows_transfers():
    pytest.importorskip("onnx")
    entry = models.export("squeezenet1_1", 11, 1, False)
    tool = str(models.tessera_bin())
    info = subprocess.run([tool, "info", str(entry.onnx_path), "--device", "testdev"],
                          capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    assert "Transfers: 2 per run" in info.stdout and "Uploaded to the device:" in info.stdout
    bench = subprocess.run([tool, "bench", str(entry.onnx_path), "--device", "testdev",
                            "--iters", "1", "--profile"], capture_output=True, text=True,
                           timeout=300)
    assert bench.returncode == 0, bench.stderr
    assert "Transfer->testdev" in bench.stderr and "Transfer->host" in bench.stderr
    cpu = subprocess.run([tool, "info", str(entry.onnx_path)], capture_output=True, text=True,
                         timeout=300)
    assert cpu.returncode == 0 and "Transfers:" not in cpu.stdout

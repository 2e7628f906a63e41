"""The test device (src/backends/testdev/testdev.c, docs/hal.md): the cpu
device's kernels on a memory pool that the host side must never touch,
mapped PROT_NONE outside the device's own hooks, so that a value reaching
a host kernel without a transfer faults and one reaching a device kernel
without a transfer is refused. It exists while TSR_TESTDEV is set.

Every op case of op_cases.py and a few real models run on it and give the
cpu device's results bit for bit (the same kernels, which the op harness
checks against the reference backend), through transfer steps the plan
counts; constants are uploaded once, not transferred per run. Inputs and
outputs may live in the device's memory (tsr_tensor.memory): the same
results without their transfers, and clear errors for the wrong space."""

import ctypes
import os
import signal
import subprocess
import sys

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
    if case.expanded or (case.identity and layout != "plain"):
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


# Device-resident caller buffers (docs/hal.md): tsr_tensor.memory names the
# space data points into; tsr_device_alloc/copy/free move data through the
# device's hooks.

def to_device(plan, array):
    """A Tensor in the plan's device memory holding `array`'s contents."""
    t = tsr.Tensor(dtype=tsr.DTYPES[array.dtype], rank=array.ndim)
    t.dims[:array.ndim] = array.shape
    tsr.check(tsr.lib().tsr_device_alloc(plan.handle, ctypes.byref(t)))
    assert t.memory == b"testdev"
    tsr.check(tsr.lib().tsr_device_copy(plan.handle, ctypes.byref(t),
                                        ctypes.byref(tsr.tensor_of(array))))
    return t


def from_device(plan, t):
    """A numpy copy of device tensor t, which is freed."""
    out = np.empty(t.shape(), dtype=tsr.NUMPY_OF[t.dtype])
    tsr.check(tsr.lib().tsr_device_copy(plan.handle, ctypes.byref(tsr.tensor_of(out)),
                                        ctypes.byref(t)))
    tsr.check(tsr.lib().tsr_device_free(plan.handle, ctypes.byref(t)))
    assert t.data is None and t.memory is None
    return out


def run_tensors(plan, ins, outs):
    plan.run(tsr._capi.tensor_array(ins), tsr._capi.tensor_array(outs))


def residency_graph():
    """x -> Relu (device) -> Selu (host) -> Add s (device); Neg of the Relu
    (device); the Relu and s itself are outputs too."""
    g = tsr.Graph()
    g.add_input("x", np.float32, ["N", "C"])
    g.add_input("s", np.float32, ["N", "C"])
    g.add_node("Relu", ["x"], ["r"])
    g.add_node("Selu", ["r"], ["e"], name="host")
    g.add_node("Add", ["e", "s"], ["y"])
    g.add_node("Neg", ["r"], ["z"])
    for name in ("y", "z", "r", "s"):
        g.add_output(name)
    return g


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 13), (2, 33)])
def test_device_buffers_match_host_buffers(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    s = rng.standard_normal(shape).astype(np.float32)
    plan = tessera.Plan(residency_graph(), device="testdev", **PLAN_OPTIONS)
    want = plan.run([x, s])
    host = plan.stats()
    # x up; r down for Selu; e up; y, z and r down (s is the host's).
    assert host["n_transfers"] == 6, host

    ins = [to_device(plan, x), to_device(plan, s)]
    outs = [to_device(plan, np.zeros_like(w)) for w in want]
    run_tensors(plan, ins, outs)
    stats = plan.stats()
    # Only the host node's crossings are left: r down, e up.
    assert stats["n_transfers"] == 2, stats
    assert stats["uploaded_bytes"] == host["uploaded_bytes"]
    for o, (t, w) in enumerate(zip(outs, want)):
        np.testing.assert_array_equal(from_device(plan, t), w, err_msg=f"output {o}")

    # Mixed: x on the host, s on the device; y and s come back to the host.
    host_outs = [np.empty_like(w) for w in want]
    outs = [tsr.tensor_of(host_outs[0]), to_device(plan, np.zeros_like(want[1])),
            to_device(plan, np.zeros_like(want[2])), tsr.tensor_of(host_outs[3])]
    run_tensors(plan, [tsr.tensor_of(x), ins[1]], outs)
    np.testing.assert_array_equal(host_outs[0], want[0])
    np.testing.assert_array_equal(host_outs[3], want[3])
    np.testing.assert_array_equal(from_device(plan, outs[1]), want[1])
    np.testing.assert_array_equal(from_device(plan, outs[2]), want[2])
    for t in ins:
        from_device(plan, t)


def test_device_buffers_of_the_wrong_space_are_refused():
    x = np.ones((7, 5), np.float32)
    plan = tessera.Plan(residency_graph(), device="testdev", **PLAN_OPTIONS)
    outs = [np.empty((7, 5), np.float32) for _ in range(4)]
    out_t = [tsr.tensor_of(o) for o in outs]

    other = tsr.tensor_of(x)
    other.memory = b"cuda"
    with pytest.raises(tsr.TesseraError, match="input 'x' is in cuda memory, which this plan's "
                       "device does not use"):
        run_tensors(plan, [other, tsr.tensor_of(x)], out_t)
    declared = tsr.tensor_of(x)
    declared.memory = b"testdev"
    with pytest.raises(tsr.TesseraError, match="input 's' is declared testdev memory, but its "
                       "data"):
        run_tensors(plan, [tsr.tensor_of(x), declared], out_t)
    dev = to_device(plan, x)
    undeclared = tsr.Tensor.from_buffer_copy(dev)
    undeclared.memory = None
    with pytest.raises(tsr.TesseraError, match="output 'z' is declared host memory, but its "
                       "data .* is testdev memory"):
        run_tensors(plan, [tsr.tensor_of(x), tsr.tensor_of(x)],
                    [out_t[0], undeclared, out_t[2], out_t[3]])
    small = to_device(plan, np.ones((1, 5), np.float32))  # 64 bytes with its alignment
    small.dims[0] = 7
    with pytest.raises(tsr.TesseraError, match="output 'y' is declared testdev memory, but its "
                       "data .* is not an allocation"):
        run_tensors(plan, [dev, tsr.tensor_of(x)], [small] + out_t[1:])
    small.dims[0] = 1
    from_device(plan, small)

    cpu = tessera.Plan(residency_graph(), device="cpu", **PLAN_OPTIONS)
    with pytest.raises(tsr.TesseraError, match="input 'x' is in testdev memory, which this plan's "
                       "device does not use \\(it uses host memory\\)"):
        run_tensors(cpu, [dev, tsr.tensor_of(x)], out_t)
    with pytest.raises(tsr.TesseraError, match="computes in host memory"):
        to_device(cpu, x)
    from_device(plan, dev)


def test_host_touching_device_memory_still_faults():
    """A transfer the plan missed cannot pass silently: the host reading a
    device buffer outside the device's hooks dies of SIGSEGV."""
    code = (
        "import ctypes, numpy as np, tsr, tessera\n"
        "g = tsr.Graph(); g.add_input('x', np.float32, [4]); g.add_node('Relu', ['x'], ['y'])\n"
        "g.add_output('y')\n"
        "plan = tessera.Plan(g, device='testdev')\n"
        "t = tsr.Tensor(dtype=tsr.DTYPES[np.dtype('float32')], rank=1)\n"
        "t.dims[0] = 4\n"
        "tsr.check(tsr.lib().tsr_device_alloc(plan.handle, ctypes.byref(t)))\n"
        "print('allocated', flush=True)\n"
        "ctypes.string_at(t.data, 4)\n")
    # Under the sanitizer build AddressSanitizer would catch the signal and exit with 1.
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":handle_segv=0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)), env=env)
    assert "allocated" in done.stdout, done.stderr
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stderr)


@pytest.mark.models
def test_model_with_device_buffers():
    """squeezenet with its image in device memory: the input's transfer
    goes. Its last node (the Flatten) runs on the host, so the output is
    written there and, asked for in device memory, transferred up."""
    pytest.importorskip("onnx")
    entry = models.export("squeezenet1_1", 11, 1, False)
    g = tessera.Graph.load(str(entry.onnx_path))
    plan = tessera.Plan(g, device="testdev", **PLAN_OPTIONS)
    x = np.load(entry.input_path(1))
    want = plan.run([x])
    assert plan.stats()["n_transfers"] == 2  # the image up, the pooled features down
    ins = [to_device(plan, x)]
    got = np.empty_like(want[0])
    run_tensors(plan, ins, [tsr.tensor_of(got)])
    assert plan.stats()["n_transfers"] == 1
    np.testing.assert_array_equal(got, want[0])
    outs = [to_device(plan, np.zeros_like(want[0]))]
    run_tensors(plan, ins, outs)
    assert plan.stats()["n_transfers"] == 2
    np.testing.assert_array_equal(from_device(plan, outs[0]), want[0])
    from_device(plan, ins[0])


def test_host_only_calls_refuse_device_tensors(tmp_path):
    """The calls that read or write a tensor's data on the host (a graph's
    constants and parameters, a trainer's parameters, .npy files) refuse a
    device tensor by name instead of faulting, and write nothing."""
    plan = tessera.Plan(residency_graph(), device="testdev", **PLAN_OPTIONS)
    dev = to_device(plan, np.ones((2, 3), np.float32))
    g = tsr.Graph()
    for fn in ("tsr_graph_add_constant", "tsr_graph_add_parameter"):
        with pytest.raises(tsr.TesseraError, match="constant 'w': the tensor is in testdev "
                           "memory, and this call reads host memory only"):
            tsr.check(getattr(tsr.lib(), fn)(g.handle, b"w", ctypes.byref(dev)))
    assert g.stats()["n_parameters"] == 0
    g.add_constant("w", np.zeros((2, 3), np.float32))  # the name is still free
    out = tmp_path / "w.npy"
    with pytest.raises(tsr.TesseraError, match="w.npy: the tensor is in testdev memory"):
        tsr.check(tsr.lib().tsr_npy_write(str(out).encode(), ctypes.byref(dev)))
    assert not out.exists()

    m = tsr.Graph()
    m.add_input("x", np.float32, ["N", 3])
    m.add_parameter("w", np.full((3, 2), 0.5, np.float32))
    m.add_node("MatMul", ["x", "w"], ["y"])
    m.add_output("y")
    tr = tsr.Trainer(m, {"kind": "mse"}, {"kind": "sgd", "lr": 0.1})
    before = tr.params()["w"][1]
    dev_w = to_device(plan, np.ones((3, 2), np.float32))
    for fn in ("tsr_trainer_set_param", "tsr_trainer_get_param"):
        with pytest.raises(tsr.TesseraError, match="parameter 'w': the tensor is in testdev "
                           "memory"):
            tsr.check(getattr(tsr.lib(), fn)(tr.handle, b"w", ctypes.byref(dev_w)))
    np.testing.assert_array_equal(tr.params()["w"][1], before)
    from_device(plan, dev_w)
    from_device(plan, dev)


def test_plan_takes_device_tensors():
    """The package's side: DeviceTensor feeds read where they are, and
    device_outputs=True gives DeviceTensors back, equal to the host run."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    s = rng.standard_normal((3, 7)).astype(np.float32)
    plan = tessera.Plan(residency_graph(), device="testdev", **PLAN_OPTIONS)
    want = plan.run([x, s])
    dx, ds = plan.to_device(x), plan.to_device(s)
    assert (dx.memory, dx.shape, dx.dtype) == ("testdev", (3, 7), np.float32)
    got = plan.run([dx, ds], device_outputs=True)
    assert all(isinstance(t, tessera.DeviceTensor) for t in got)
    assert plan.stats()["n_transfers"] == 2
    for t, w in zip(got, want):
        np.testing.assert_array_equal(t.numpy(), w)
    np.testing.assert_array_equal(plan.run([dx, s])[0], want[0])  # mixed, host outputs


@pytest.mark.models
def test_session_takes_device_tensors():
    pytest.importorskip("onnx")
    entry = models.export("squeezenet1_1", 11, 1, False)
    sess = tessera.Session(str(entry.onnx_path), device="testdev", **PLAN_OPTIONS)
    image = np.load(entry.input_path(1))
    name = sess.inputs[0].name
    (host,) = sess.run(None, {name: image})
    (dev,) = sess.run(None, {name: sess.to_device(image)}, device_outputs=True)
    np.testing.assert_array_equal(dev.numpy(), host)
    with pytest.raises(tessera.UnsupportedError, match="computes in host memory"):
        tessera.Session(str(entry.onnx_path), device="cpu").to_device(image)

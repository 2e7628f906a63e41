"""The `tessera` command line program, driven as a user would: small ONNX models made with
onnx.helper, inputs and expected outputs computed with numpy, and every kind of bad input,
which must give a non-zero exit, one clear message, no crash and no output file.

The binary is $TESSERA_BIN, else $TESSERA_BUILD_DIR/bin/tessera, else build/bin/tessera."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[2]


def tessera_bin():
    if os.environ.get("TESSERA_BIN"):
        return os.environ["TESSERA_BIN"]
    build = Path(os.environ.get("TESSERA_BUILD_DIR", REPO_ROOT / "build"))
    return str(build / "bin" / "tessera")


def tessera(*args, cwd=None):
    return subprocess.run(
        [tessera_bin(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def ok(*args, **kw):
    r = tessera(*args, **kw)
    assert r.returncode == 0, f"tessera {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


def save_model(path, nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


BIAS = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32)


@pytest.fixture
def relu_add(tmp_path):
    """y = Relu(x) + b, x: [batch, 4]."""
    return save_model(
        tmp_path / "relu_add.onnx",
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "b"], ["y"])],
        [value("x", ["batch", 4])],
        [value("y", ["batch", 4])],
        [numpy_helper.from_array(BIAS, "b")],
    )


@pytest.fixture
def two_in_three_out(tmp_path):
    """Outputs whose names need sanitizing and collide once sanitized."""
    return save_model(
        tmp_path / "multi.onnx",
        [
            helper.make_node("Add", ["a", "b"], ["out/sum:0"]),
            helper.make_node("Mul", ["a", "b"], ["out:sum/0"]),
            helper.make_node("Sigmoid", ["a"], ["Sig"]),
        ],
        [value("a", ["n", 3]), value("b", ["n", 3])],
        [value("out/sum:0", ["n", 3]), value("out:sum/0", ["n", 3]), value("Sig", ["n", 3])],
    )


def relu_add_ref(x):
    return np.maximum(x, 0) + BIAS


def rand(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- run


def test_run_positional_input_to_output(tmp_path, relu_add):
    x = rand((2, 4), 1)
    np.save(tmp_path / "x.npy", x)
    ok("run", relu_add, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == (2, 4)
    np.testing.assert_allclose(y, relu_add_ref(x), rtol=1e-6)
    # Byte for byte what numpy writes, header padding included.
    np.save(tmp_path / "numpy.npy", y)
    assert (tmp_path / "y.npy").read_bytes() == (tmp_path / "numpy.npy").read_bytes()


@pytest.mark.parametrize("batch", [1, 5])
def test_symbolic_batch_takes_the_files_size(tmp_path, relu_add, batch):
    x = rand((batch, 4), batch)
    np.save(tmp_path / "x.npy", x)
    # --batch is for random inputs only; the file decides here.
    ok("run", relu_add, "--input", f"x={tmp_path / 'x.npy'}", "--batch", 3,
       "--output", tmp_path / "y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), relu_add_ref(x), rtol=1e-6)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_versions_written_by_numpy(tmp_path, relu_add, version):
    x = rand((3, 4), 7)
    with open(tmp_path / "x.npy", "wb") as f:
        np.lib.format.write_array(f, x, version=version)
    ok("run", relu_add, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), relu_add_ref(x), rtol=1e-6)


def test_run_named_inputs_and_output_dir(tmp_path, two_in_three_out):
    a, b = rand((2, 3), 2), rand((2, 3), 3)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "outs" / "nested"
    # Named, in the opposite order of the model's inputs.
    r = ok("run", two_in_three_out, "--input", f"b={tmp_path / 'b.npy'}",
           "--input", f"a={tmp_path / 'a.npy'}", "--output-dir", out)
    assert sorted(p.name for p in out.iterdir()) == ["Sig.npy", "out_sum_0.npy", "out_sum_0_1.npy"]
    np.testing.assert_allclose(np.load(out / "out_sum_0.npy"), a + b, rtol=1e-6)
    np.testing.assert_allclose(np.load(out / "out_sum_0_1.npy"), a * b, rtol=1e-6)
    np.testing.assert_allclose(np.load(out / "Sig.npy"), 1 / (1 + np.exp(-a)), rtol=1e-5)
    assert "out/sum:0" in r.stdout and "out_sum_0.npy" in r.stdout


def test_run_positional_and_named_mixed(tmp_path, two_in_three_out):
    a, b = rand((1, 3), 4), rand((1, 3), 5)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    # The unnamed --input binds the first input.
    ok("run", two_in_three_out, "--input", f"b={tmp_path / 'b.npy'}", "--input",
       tmp_path / "a.npy", "--output-dir", tmp_path / "o")
    np.testing.assert_allclose(np.load(tmp_path / "o" / "out_sum_0_1.npy"), a * b, rtol=1e-6)


def test_random_inputs_follow_the_seed(tmp_path, relu_add):
    def run(seed, batch, name):
        ok("run", relu_add, "--seed", seed, "--batch", batch, "--output", tmp_path / name)
        return np.load(tmp_path / name)

    first, again, other = run(7, 3, "a.npy"), run(7, 3, "b.npy"), run(8, 3, "c.npy")
    assert first.shape == (3, 4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # relu(x) + b >= b, with equality where x <= 0: about half the time for normal(0, 1).
    assert np.all(first >= BIAS)
    assert 0 < np.sum(first == BIAS) < first.size
    assert run(7, 1, "d.npy").shape == (1, 4)
    tessera_default = ok("run", relu_add, "--output", tmp_path / "e.npy")
    assert tessera_default.stdout == ""
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), run(0, 1, "f.npy"))


def test_random_input_beside_a_file_input(tmp_path, two_in_three_out):
    """A random input's symbolic dim takes the size another input's file gave it."""
    a = rand((4, 3), 6)
    np.save(tmp_path / "a.npy", a)
    ok("run", two_in_three_out, "--input", f"a={tmp_path / 'a.npy'}", "--output-dir",
       tmp_path / "o")
    total = np.load(tmp_path / "o" / "out_sum_0.npy")
    assert total.shape == (4, 3)
    b = total - a
    assert np.all(np.isfinite(b)) and 0.2 < b.std() < 3


def test_run_prints_a_summary(tmp_path, relu_add):
    x = np.array([[-1.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = ok("run", relu_add, "--input", tmp_path / "x.npy")
    y = relu_add_ref(x)
    line = r.stdout.strip()
    assert line.startswith("y: float32 [1, 4]")
    fields = dict(f.split("=") for f in line.split("]", 1)[1].split())
    assert float(fields["min"]) == pytest.approx(y.min(), rel=1e-5)
    assert float(fields["max"]) == pytest.approx(y.max(), rel=1e-5)
    assert float(fields["mean"]) == pytest.approx(y.mean(), rel=1e-5)
    assert int(fields["argmax"]) == int(np.argmax(y))


# --------------------------------------------------------------- info


def test_info(relu_add):
    r = ok("info", relu_add, "--batch", 2)
    out = r.stdout
    assert "x: float32 [batch, 4]" in out
    assert "y: float32 [batch, 4]" in out
    assert "Nodes: 2" in out
    assert "Relu 1" in out and "Add 1" in out
    assert "Parameters: 4 " in out
    assert "Plan (device cpu, batch 2)" in out
    assert "GFLOPs" in out and "Arena:" in out and "Constants: 16 bytes" in out
    graph = ok("info", relu_add, "--graph").stdout
    assert "Relu(%x)" in graph.replace(" ", "")


def test_info_ops_names_the_backend_of_every_node(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Neg", ["r"], ["n"], name="neg"),
             helper.make_node("Sqrt", ["x"], ["s"]),
             helper.make_node("ReduceSum", ["n"], ["y"], name="sum", keepdims=0)]
    m = save_model(tmp_path / "m.onnx", nodes, [value("x", ["batch", 3, 5, 5])],
                   [value("y", []), value("s", ["batch", 3, 5, 5])], [w])
    out = ok("info", m, "--ops", "--batch", 2).stdout
    rows = {}
    device = None
    for line in out.split("Ops (op, nodes, backends running them):")[1].splitlines():
        if line.startswith("  on "):
            device = line.split()[1]
        elif line.strip() and ": cannot plan the model" not in line:  # cuda without a GPU
            op, count, backends = line.split(None, 2)
            rows[device, op] = (int(count), backends)
    assert {"cpu", "ref"} <= set(d for d, _ in rows)
    for op in ("Conv", "Relu", "Neg", "ReduceSum"):
        assert rows["ref", op] == (1, "ref 1")
    assert rows["cpu", "Conv"] == (1, "dnnl 1")
    assert rows["cpu", "Relu"] == (1, "fused 1")
    assert rows["cpu", "Sqrt"] == rows["ref", "Sqrt"] == (1, "unnamed 1")


def test_info_builtin_resnet50_is_torchvisions_architecture():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet50()
    params = sum(p.numel() for p in net.parameters())
    stats = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("_mean", "_var")))
    out = ok("info", "builtin:resnet50").stdout
    assert f"Parameters: {params + stats} " in out
    assert "input: float32 [batch, 3, 224, 224]" in out
    assert "output: float32 [batch, 1000]" in out
    n_conv = sum(isinstance(m, torch_nn().Conv2d) for m in net.modules())
    n_bn = sum(isinstance(m, torch_nn().BatchNorm2d) for m in net.modules())
    assert f"Conv {n_conv}," in out and f"BatchNormalization {n_bn}," in out
    assert "Add 16," in out and "Gemm 1" in out and "MaxPool 1" in out
    # 2 x 4.09 GMACs at 224x224.
    gflops = float(out.split("FLOPs: ")[1].split("(")[1].split()[0])
    assert 8.0 < gflops < 8.4


def torch_nn():
    import torch

    return torch.nn


class CliRng:
    """tools/cli_common.c's generator, vectorized: splitmix64 (a counter, mixed), uniforms in
    (0, 1) from its top 53 bits, Box-Muller normals, cos first, the sin kept for the next
    call."""

    GOLDEN = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, seed):
        self.seed, self.count, self.spare = np.uint64(seed), 0, None

    def uniform(self, n):
        with np.errstate(over="ignore"):
            z = self.seed + np.arange(self.count + 1, self.count + n + 1,
                                      dtype=np.uint64) * self.GOLDEN
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z ^= z >> np.uint64(31)
        self.count += n
        return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, n):
        head = [] if self.spare is None else [self.spare]
        self.spare = None
        pairs = (n - len(head) + 1) // 2
        u = self.uniform(2 * pairs).reshape(pairs, 2)
        radius = np.sqrt(-2.0 * np.log(u[:, 0]))
        angle = 6.283185307179586 * u[:, 1]
        values = np.concatenate([head, np.stack([radius * np.cos(angle),
                                                 radius * np.sin(angle)], 1).reshape(-1)])
        if len(values) > n:
            self.spare = values[-1]
        return values[:n]


def builtin_resnet50_weights():
    """The built-in ResNet-50's weights, drawn in the order and from the distributions of
    tools/builtin_resnet50.c, under torchvision's names."""
    rng = CliRng(0x7E55E4A50)
    weights = {}

    def param(name, shape, normal, mean, scale):
        n = int(np.prod(shape))
        r = rng.normal(n) if normal else rng.uniform(n)
        weights[name] = (mean + scale * r).astype(np.float32).reshape(shape)

    def conv_bn(conv, bn, cin, cout, k, gamma):
        param(f"{conv}.weight", (cout, cin, k, k), True, 0.0, np.sqrt(2.0 / (cin * k * k)))
        param(f"{bn}.weight", (cout,), False, 0.75 * gamma, 0.5 * gamma)
        param(f"{bn}.bias", (cout,), True, 0.0, 0.1)
        param(f"{bn}.running_mean", (cout,), True, 0.0, 0.1)
        param(f"{bn}.running_var", (cout,), False, 0.75, 0.5)

    conv_bn("conv1", "bn1", 3, 64, 7, 1.0)
    cin = 64
    for layer, blocks in enumerate((3, 4, 6, 3)):
        width = 64 << layer
        for block in range(blocks):
            p = f"layer{layer + 1}.{block}"
            conv_bn(f"{p}.conv1", f"{p}.bn1", cin, width, 1, 1.0)
            conv_bn(f"{p}.conv2", f"{p}.bn2", width, width, 3, 1.0)
            conv_bn(f"{p}.conv3", f"{p}.bn3", width, width * 4, 1, 0.3)
            if (block == 0 and layer > 0) or cin != width * 4:
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", cin, width * 4, 1, 1.0)
            cin = width * 4
    param("fc.weight", (1000, 2048), True, 0.0, np.sqrt(1.0 / 2048.0))
    param("fc.bias", (1000,), True, 0.0, 0.01)
    return weights


@pytest.mark.models
def test_builtin_resnet50_matches_torchvision(tmp_path):
    """The built-in model against torchvision's ResNet-50 given the same weights (drawn
    again here from the built-in's seeded generator): in float64, to four times what
    PyTorch's own float32 run differs from that, plus float32 resolution."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    x = rand((2, 3, 224, 224), 11)
    np.save(tmp_path / "x2.npy", x)
    np.save(tmp_path / "x1.npy", x[1:])
    ok("run", "builtin:resnet50", "--input", tmp_path / "x2.npy", "--output", tmp_path / "y2.npy")
    ok("run", "builtin:resnet50", "--input", tmp_path / "x1.npy", "--output", tmp_path / "y1.npy")
    y2, y1 = np.load(tmp_path / "y2.npy"), np.load(tmp_path / "y1.npy")
    assert y2.shape == (2, 1000) and y1.shape == (1, 1000)

    net = torchvision.models.resnet50()
    missing, unexpected = net.load_state_dict(
        {k: torch.from_numpy(v) for k, v in builtin_resnet50_weights().items()}, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    net.eval()
    with torch.no_grad():
        want32 = net(torch.from_numpy(x)).numpy().astype(np.float64)
        want = net.double()(torch.from_numpy(x).double()).numpy()
    scale = float(np.abs(want).max())
    assert 0.1 < want.std() < 100
    atol = 4 * float(np.abs(want32 - want).max()) + 8 * float(np.finfo(np.float32).eps) * scale
    err = float(np.abs(y2 - want).max())
    assert err <= atol, f"max error {err:.3g} > {atol:.3g} (max |y| {scale:.3g})"
    # Inference-mode batch norm: each image's logits do not depend on the others.
    assert float(np.abs(y1[0] - want[1]).max()) <= atol


# -------------------------------------------------------------- bench


def test_bench_json(relu_add):
    r = ok("bench", relu_add, "--iters", 2, "--warmup", 1, "--batch", 3, "--threads", 1, "--json")
    last = r.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("model", "device", "batch", "threads", "min_ms", "median_ms", "arena_bytes"):
        assert key in result
    assert result["model"] == str(relu_add)
    assert result["device"] == "cpu" and result["batch"] == 3 and result["threads"] == 1
    assert 0 <= result["min_ms"] <= result["median_ms"]
    assert result["arena_bytes"] >= 3 * 4 * 4
    assert r.stderr == ""


def test_bench_reports_progress(relu_add):
    r = ok("bench", relu_add, "--iters", 2, "--warmup", 1)
    assert "warming up" in r.stderr and "timing" in r.stderr
    assert "median:" in r.stdout and "images/s" in r.stdout and "arena:" in r.stdout


def test_help_and_version():
    r = ok("--help")
    assert "run" in r.stdout and "info" in r.stdout and "bench" in r.stdout
    assert "[A-Za-z0-9._-]" in ok("help", "run").stdout
    assert "--json" in ok("bench", "--help").stdout
    assert ok("--version").stdout.startswith("tessera ")


# ---------------------------------------------------------- bad input


def write_npy_raw(path, header, data):
    header = header.encode("latin1")
    pad = (64 - (10 + len(header) + 1) % 64) % 64
    header += b" " * pad + b"\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data)


def bad_inputs(tmp, model_src):
    """(name, args, text the message must hold, exit code) for each kind of bad input."""
    t = Path(tmp)
    data = model_src.read_bytes()
    (t / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (t / "text.onnx").write_text("this is not an ONNX model\n")
    x = rand((2, 4), 0)
    np.save(t / "x.npy", x)
    np.save(t / "x64.npy", x.astype(np.float64))
    np.save(t / "x25.npy", rand((2, 5), 0))
    np.save(t / "x3d.npy", rand((2, 4, 1), 0))
    np.save(t / "xf2.npy", x.astype(np.float16))
    np.save(t / "xfortran.npy", np.asfortranarray(rand((3, 4), 1)))
    (t / "magic.npy").write_bytes(b"\x93NUMPZ\x01\x00" + (t / "x.npy").read_bytes()[8:])
    (t / "trunc.npy").write_bytes((t / "x.npy").read_bytes()[:-5])
    (t / "extra.npy").write_bytes((t / "x.npy").read_bytes() + b"\0\0\0\0")
    write_npy_raw(t / "baddict.npy", "{'descr': '<f4', 'shape': (2, 4)}", x.tobytes())
    save_model(t / "unknown_op.onnx", [helper.make_node("FrobnicateOp", ["x"], ["y"])],
               [value("x", ["batch", 4])], [value("y", ["batch", 4])])
    save_model(t / "unknown_ops.onnx",
               [helper.make_node("FrobnicateOp", ["x"], ["a"], name="f1"),
                helper.make_node("Relu", ["a"], ["b"]),
                helper.make_node("Twiddle", ["b"], ["c"], name="t1", domain="com.example"),
                helper.make_node("FrobnicateOp", ["c"], ["y"], name="f2")],
               [value("x", ["batch", 4])], [value("y", ["batch", 4])])
    save_model(t / "no_init.onnx", [helper.make_node("Add", ["x", "W"], ["y"])],
               [value("x", ["batch", 4])], [value("y", ["batch", 4])])
    save_model(t / "two_out.onnx",
               [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])],
               [value("x", ["batch", 4])], [value("y", ["batch", 4]), value("z", ["batch", 4])])
    (t / "afile").write_text("not a directory")
    m = model_src
    return [
        ("truncated model", ["run", t / "trunc.onnx"], f"'{t / 'trunc.onnx'}': not an ONNX", 1),
        ("not onnx", ["run", t / "text.onnx"], f"'{t / 'text.onnx'}': not an ONNX model", 1),
        ("missing model", ["run", t / "nothere.onnx"], f"cannot open '{t / 'nothere.onnx'}'", 1),
        ("unknown op", ["run", t / "unknown_op.onnx"], "1 unknown op: 'FrobnicateOp'", 1),
        ("every unknown op at once", ["info", t / "unknown_ops.onnx", "--ops"],
         "2 unknown ops: 'FrobnicateOp' in domain 'ai.onnx' (2 nodes, first node 'f1' "
         "(FrobnicateOp)); 'Twiddle' in domain 'com.example' (1 node, first node 't1' (Twiddle))",
         1),
        ("missing initializer", ["run", t / "no_init.onnx"], "input 'W' is not defined", 1),
        ("wrong shape", ["run", m, "--input", t / "x25.npy"], f"{t / 'x25.npy'} holds [2, 5]", 1),
        ("wrong rank", ["run", m, "--input", t / "x3d.npy"], "holds [2, 4, 1] (rank 3, not 2)", 1),
        ("wrong dtype", ["run", m, "--input", t / "x64.npy"],
         f"must be float32, but {t / 'x64.npy'} holds float64", 1),
        ("bad magic", ["run", m, "--input", t / "magic.npy"], f"{t / 'magic.npy'}: not a .npy", 1),
        ("truncated npy", ["run", m, "--input", t / "trunc.npy"],
         f"{t / 'trunc.npy'}: file is truncated", 1),
        ("extra data npy", ["run", m, "--input", t / "extra.npy"],
         f"{t / 'extra.npy'}: 4 bytes of extra data", 1),
        ("fortran npy", ["run", m, "--input", t / "xfortran.npy"], f"{t / 'xfortran.npy'}: Fortran",
         1),
        ("float16 npy", ["run", m, "--input", t / "xf2.npy"], f"{t / 'xf2.npy'}: dtype '<f2'", 1),
        ("bad npy dict", ["run", m, "--input", t / "baddict.npy"],
         "missing key 'fortran_order'", 1),
        ("missing npy", ["run", m, "--input", t / "nothere.npy"],
         f"{t / 'nothere.npy'}: cannot open", 1),
        ("unknown input", ["run", m, "--input", f"nope={t / 'x.npy'}"], "no input named 'nope'", 1),
        ("duplicate input",
         ["run", m, "--input", t / "x.npy", "--input", f"x={t / 'x.npy'}"],
         "input 'x' is given twice", 1),
        ("too many inputs",
         ["run", m, "--input", t / "x.npy", "--input", t / "x.npy"],
         "too many inputs, the model has 1", 1),
        ("--output with two outputs", ["run", t / "two_out.onnx", "--output", t / "out.npy"],
         f"one output, {t / 'two_out.onnx'} has 2: use --output-dir", 1),
        ("unknown device", ["run", m, "--device", "tpu9"], "unknown device 'tpu9'", 1),
        ("output dir is a file", ["run", m, "--output-dir", t / "afile"],
         f"--output-dir {t / 'afile'}: exists and is not a directory", 1),
        ("output in missing dir", ["run", m, "--output", t / "no" / "dir" / "y.npy"],
         f"{t / 'no' / 'dir' / 'y.npy'}: cannot create", 1),
        ("unknown option", ["run", m, "--frobnicate"], "unknown option '--frobnicate'", 2),
        ("missing value", ["run", m, "--seed"], "option '--seed' needs a value", 2),
        ("bad number", ["run", m, "--threads", "many"],
         "--threads expects an integer, got 'many'", 2),
        ("no model", ["run"], "missing MODEL", 2),
        ("both outputs", ["run", m, "--output-dir", t / "d", "--output", t / "y.npy"],
         "--output and --output-dir exclude each other", 2),
        ("info unknown option", ["info", m, "--verbose"], "unknown option '--verbose'", 2),
        ("info bad model", ["info", t / "text.onnx"], f"'{t / 'text.onnx'}': not an ONNX", 1),
        ("bench bad iters", ["bench", m, "--iters", "0"],
         "--iters must be between 1 and 1000000, got 0", 2),
        ("bench bad model", ["bench", t / "trunc.onnx", "--json"], f"'{t / 'trunc.onnx'}': not an",
         1),
        ("unknown command", ["frobnicate"], "unknown command 'frobnicate'", 2),
        ("help unknown command", ["help", "frobnicate"], "unknown command 'frobnicate'", 2),
    ]


def _case_names():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = save_model(Path(tmp) / "m.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                         [value("x", ["batch", 4])], [value("y", ["batch", 4])])
        return [c[0] for c in bad_inputs(tmp, src)]


@pytest.mark.parametrize("case", _case_names())
def test_bad_input_fails_cleanly(tmp_path, relu_add, case):
    cases = {c[0]: c for c in bad_inputs(tmp_path, relu_add)}
    _, args, needle, code = cases[case]
    out_file = tmp_path / "out.npy"
    out_dir = tmp_path / "outdir"
    # An existing output must survive a failed run untouched.
    np.save(out_file, np.arange(3.0))
    before = out_file.read_bytes()
    if args[0] == "run" and "--output" not in args and "--output-dir" not in args:
        args = args + ["--output", out_file]
    r = tessera(*args)
    assert r.returncode == code, f"exit {r.returncode}, stderr:\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert lines and lines[0].startswith("tessera: error: "), r.stderr
    assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert "Traceback" not in r.stderr and "Assertion" not in r.stderr
    assert out_file.read_bytes() == before
    assert not out_dir.exists()
    assert not list(tmp_path.glob("**/*.tmp-*")), "a temporary file was left behind"


# ----------------------------------------------------- precision, verbose


@pytest.fixture
def small_conv(tmp_path):
    """A convolution and a classifier: compute-bound ops that bf16 changes."""
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32)
    fc = rng.normal(0, 0.1, (10, 16)).astype(np.float32)
    return save_model(
        tmp_path / "small_conv.onnx",
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
        ],
        [value("x", ["batch", 3, 12, 12])],
        [value("y", ["batch", 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")],
    )


def test_bench_bf16_reports_error_against_fp32(small_conv):
    r = tessera("bench", small_conv, "--precision", "bf16", "--iters", 2, "--warmup", 1,
                "--threads", 1, "--json")
    if r.returncode != 0 and "no bf16 arithmetic" in r.stderr:
        pytest.skip("this CPU has no bf16 arithmetic")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["precision"] == "bf16"
    # bf16 keeps 8 bits of mantissa: visible, but small, error.
    assert 0 < result["max_rel_error_vs_fp32"] < 5e-2


def test_bad_precision_is_a_usage_error(small_conv):
    for cmd in ("run", "bench"):
        r = tessera(cmd, small_conv, "--precision", "fp16")
        assert r.returncode == 2
        assert "--precision must be fp32 or bf16, not 'fp16'" in r.stderr


def test_run_verbose_names_each_nodes_kernel(small_conv):
    r = ok("run", small_conv, "--device", "cpu", "--verbose")
    assert "(FusedConv) -> dnnl" in r.stderr
    assert "(GlobalAveragePool) -> cpu" in r.stderr
    assert "refused:" in r.stderr

"""`tessera grad`: gradients of whole models against PyTorch autograd (input and parameter
gradients of the torchvision classifiers at batch 1, float32, 1e-4 relative to max |grad|),
of a small float64 net at 1e-8, and the command line's errors.

The binary is $TESSERA_BIN, else $TESSERA_BUILD_DIR/bin/tessera, else build/bin/tessera."""

import copy
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from test_cli import tessera, tessera_bin

FAST_MODELS = ("resnet18", "mobilenet_v2", "squeezenet1_1", "densenet121")
SLOW_MODELS = ("resnet50", "vgg16")


def run_grad(model, inputs, seeds, wrt, out_dir, threads=2):
    args = [str(tessera_bin()), "grad", str(model), "--output-dir", str(out_dir),
            "--wrt", ",".join(wrt), "--threads", str(threads), "--device", "ref"]
    for i in inputs:
        args += ["--input", i]
    for s in seeds:
        args += ["--seed-grad", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


def assert_rel(got, want, rtol, what):
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert scale > 0, f"{what}: the reference gradient is all zeros"
    assert err <= rtol * scale, f"{what}: max error {err:.3g}, max |grad| {scale:.3g}"


def check_model(name, tmp_path, dtype=np.float32):
    """Input and parameter gradients against PyTorch autograd. Parameters are the
    initializers that are PyTorch parameters as they are: not folded into others (BatchNorm
    folded into Conv) and not shared (the exporter merges identical initializers).

    In float32 the forward results differ from PyTorch's by rounding; where that moves an
    activation across a kink of ReLU or ReLU6 a whole gradient element differs, which is
    well above 1e-4 of max |grad| in the models with the most activations near a kink.
    Those are compared in float64 instead, where rounding stays far below any kink."""
    torch = pytest.importorskip("torch")
    entry = models.export(name, 13, None, True)
    model = models._make_model(name)
    x = np.load(entry.input_path(1)).astype(dtype)
    seed = np.random.default_rng(5).standard_normal((1, 1000)).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "seed.npy", seed)
    onnx_path = entry.onnx_path
    if dtype == np.float64:
        # Exported from the float64 model itself (folding BatchNorm in float32 would round
        # the weights); the export changes the module, hence the copies.
        model = copy.deepcopy(model).double()
        onnx_path = tmp_path / "model64.onnx"
        torch.onnx.export(copy.deepcopy(model), torch.from_numpy(x), str(onnx_path),
                          opset_version=13, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    onnx_model = onnx.load(str(onnx_path))
    shared = {i for n in onnx_model.graph.node if n.op_type == "Identity" for i in n.input}
    initializers = {i.name for i in onnx_model.graph.initializer} - shared
    params = {n: p for n, p in model.named_parameters() if n in initializers}
    wrt = ["input"] + sorted(params)
    start = time.perf_counter()
    proc = run_grad(onnx_path, [f"input={tmp_path / 'x.npy'}"],
                    [f"output={tmp_path / 'seed.npy'}"], wrt, tmp_path / "grads")
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr

    named = dict(model.named_parameters())
    xt = torch.from_numpy(x).requires_grad_(True)
    model.zero_grad()
    model(xt).backward(torch.from_numpy(seed))
    rtol = 1e-4 if dtype == np.float32 else 1e-8
    assert_rel(np.load(tmp_path / "grads" / "input.npy"), xt.grad.numpy(), rtol, "d/dinput")
    for n in params:
        assert_rel(np.load(tmp_path / "grads" / f"{n}.npy"), named[n].grad.numpy(), rtol,
                   f"d/d{n}")
    print(f"{name}: tessera grad took {took:.1f} s for {len(wrt)} gradients")


MODEL_DTYPES = {"resnet18": np.float32, "squeezenet1_1": np.float32, "resnet50": np.float64,
                "vgg16": np.float64, "mobilenet_v2": np.float64, "densenet121": np.float64}


@pytest.mark.parametrize("name", FAST_MODELS)
def test_model_gradients_match_pytorch(name, tmp_path):
    check_model(name, tmp_path, MODEL_DTYPES[name])


@pytest.mark.models
@pytest.mark.parametrize("name", SLOW_MODELS)
def test_large_model_gradients_match_pytorch(name, tmp_path):
    check_model(name, tmp_path, MODEL_DTYPES[name])


# ------------------------------------------------------------ a small float64 net


def small_net(path):
    """Conv, BatchNorm, Relu, MaxPool, Pad, AveragePool, Concat, GlobalAveragePool, Flatten,
    Gemm, Clip: the ops of the six models, in float64."""
    rng = np.random.default_rng(3)
    D = TensorProto.DOUBLE
    inits = {
        "w1": rng.standard_normal((4, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(4),
        "scale": rng.uniform(0.5, 1.5, 4), "bias": rng.standard_normal(4),
        "mean": rng.standard_normal(4) * 0.1, "var": rng.uniform(0.5, 1.5, 4),
        "w2": rng.standard_normal((4, 4, 1, 1)) * 0.3, "fc_w": rng.standard_normal((5, 8)) * 0.3,
        "fc_b": rng.standard_normal(5), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1]),
        "lo": np.array(0.0), "hi": np.array(6.0),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "scale", "bias", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["mp", "w2"], ["c2"]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["cl"]),
        helper.make_node("Pad", ["cl", "pads"], ["pd"]),
        helper.make_node("AveragePool", ["pd"], ["ap"], kernel_shape=[3, 3]),
        helper.make_node("GlobalAveragePool", ["ap"], ["g1"]),
        helper.make_node("GlobalAveragePool", ["mp"], ["g2"]),
        helper.make_node("Concat", ["g1", "g2"], ["cat"], axis=1),
        helper.make_node("Flatten", ["cat"], ["fl"]),
        helper.make_node("Gemm", ["fl", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", D, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", D, [2, 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return inits


def test_small_float64_net_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    inits = small_net(tmp_path / "net.onnx")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 8, 8))
    seed = rng.standard_normal((2, 5))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "seed.npy", seed)
    wrt = ["x", "w1", "b1", "scale", "bias", "mean", "var", "w2", "fc_w", "fc_b"]
    proc = run_grad(tmp_path / "net.onnx", [str(tmp_path / "x.npy")], [str(tmp_path / "seed.npy")],
                    wrt, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr

    t = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in inits.items()}
    xt = torch.tensor(x, requires_grad=True)
    c1 = F.conv2d(xt, t["w1"], t["b1"], padding=1)
    ch = lambda v: v[None, :, None, None]  # noqa: E731
    # By hand: PyTorch's batch_norm does not differentiate by the running statistics.
    bn = (c1 - ch(t["mean"])) / torch.sqrt(ch(t["var"]) + 1e-5) * ch(t["scale"]) + ch(t["bias"])
    mp = F.max_pool2d(F.relu(bn), 2)
    cl = torch.clamp(F.conv2d(mp, t["w2"]), 0.0, 6.0)
    ap = F.avg_pool2d(F.pad(cl, (1, 1, 1, 1)), 3, stride=1)
    cat = torch.cat([ap.mean((2, 3), keepdim=True), mp.mean((2, 3), keepdim=True)], 1)
    y = F.linear(cat.flatten(1), t["fc_w"], t["fc_b"])
    y.backward(torch.tensor(seed))
    for name in wrt:
        want = (xt if name == "x" else t[name]).grad.numpy()
        assert_rel(np.load(tmp_path / "out" / f"{name}.npy"), want, 1e-8, f"d/d{name}")


# ------------------------------------------------------------------ command line


@pytest.fixture
def net(tmp_path):
    small_net(tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
    np.save(tmp_path / "seed.npy", np.ones((2, 5)))
    return tmp_path


def test_grad_writes_sanitized_names_and_zeros_for_unused(net):
    proc = tessera("grad", net / "net.onnx", "--input", f"x={net / 'x.npy'}", "--seed-grad",
                   f"y={net / 'seed.npy'}", "--wrt", "fc_b", "--wrt", "x", "--output-dir",
                   net / "out")
    assert proc.returncode == 0, proc.stderr
    assert "fc_b ->" in proc.stdout
    # d(sum(y))/d(fc_b) = batch size for every class
    np.testing.assert_allclose(np.load(net / "out" / "fc_b.npy"), np.full(5, 2.0), rtol=1e-12)
    assert np.load(net / "out" / "x.npy").shape == (2, 3, 8, 8)


@pytest.mark.parametrize("args, message", [
    (["--wrt", "nope"], "no input or parameter 'nope'"),
    (["--wrt", "pads"], "'pads' is int64"),
    (["--wrt", "x,"], "empty name"),
    (["--wrt", "x", "--seed-grad-extra"], "unknown option"),
])
def test_grad_bad_names(net, args, message):
    proc = tessera("grad", net / "net.onnx", "--input", net / "x.npy", "--seed-grad",
                   net / "seed.npy", "--output-dir", net / "out", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (net / "out").exists()


def test_grad_bad_seed_output_name(net):
    proc = tessera("grad", net / "net.onnx", "--seed-grad", f"nope={net / 'seed.npy'}", "--wrt",
                   "x", "--output-dir", net / "out")
    assert proc.returncode == 1
    assert "no output named 'nope'" in proc.stderr


@pytest.mark.parametrize("seed, message", [
    (np.ones((2, 4)), "must have shape [2, 5]"),
    (np.ones((2, 5), np.float32), "must be float64"),
])
def test_grad_malformed_seed(net, seed, message):
    np.save(net / "bad.npy", seed)
    proc = tessera("grad", net / "net.onnx", "--seed-grad", net / "bad.npy", "--wrt", "x",
                   "--output-dir", net / "out")
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not (net / "out").exists()


def test_grad_seed_file_not_npy(net):
    (net / "junk.npy").write_bytes(b"not a npy file")
    proc = tessera("grad", net / "net.onnx", "--seed-grad", net / "junk.npy", "--wrt", "x",
                   "--output-dir", net / "out")
    assert proc.returncode == 1
    assert "junk.npy" in proc.stderr


@pytest.mark.parametrize("missing", ["--seed-grad", "--wrt", "--output-dir"])
def test_grad_required_options(net, missing):
    args = {"--seed-grad": str(net / "seed.npy"), "--wrt": "x", "--output-dir": str(net / "o")}
    rest = [a for k, v in args.items() if k != missing for a in (k, v)]
    proc = tessera("grad", net / "net.onnx", *rest)
    assert proc.returncode == 2
    assert f"missing {missing}" in proc.stderr

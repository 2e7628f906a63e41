"""`tessera grad`: gradients of whole models against PyTorch autograd (the input's and every
parameter's gradient of the torchvision classifiers at batch 1, float64, 1e-8 relative to
max |grad|), of a small float64 net at 1e-8, and the command line's errors.

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


def check_model(name, tmp_path):
    """Input and parameter gradients against PyTorch autograd, in float64: in float32 the
    forward results differ from PyTorch's by rounding, and where that moves an activation
    across a kink of ReLU or ReLU6 a whole gradient element differs, by an amount that
    depends on the machine's float32 kernels. In float64 rounding stays far below any kink.

    The model is exported with BatchNorm kept as it is (not folded into Conv), so that every
    PyTorch parameter is an initializer of its own name; the exporter merges identical
    initializers into one, read by the others through Identity nodes, and the gradient of
    the one kept is the sum of the gradients of all that share it."""
    torch = pytest.importorskip("torch")
    model = copy.deepcopy(models._make_model(name)).double()
    x = models._input(name, 1).astype(np.float64)
    seed = np.random.default_rng(5).standard_normal((1, 1000))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "seed.npy", seed)
    onnx_path = tmp_path / "model64.onnx"
    # The export changes the module, hence the copy.
    torch.onnx.export(copy.deepcopy(model), torch.from_numpy(x), str(onnx_path),
                      opset_version=13, input_names=["input"], output_names=["output"],
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    onnx_model = onnx.load(str(onnx_path))
    initializers = {i.name for i in onnx_model.graph.initializer}
    named = dict(model.named_parameters())
    owner = {n: n for n in named if n in initializers}
    for node in onnx_model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            owner[node.output[0]] = node.input[0]
    assert set(owner) == set(named), f"parameters not found: {sorted(set(named) - set(owner))}"
    wrt = ["input"] + sorted(set(owner.values()))
    start = time.perf_counter()
    proc = run_grad(onnx_path, [f"input={tmp_path / 'x.npy'}"],
                    [f"output={tmp_path / 'seed.npy'}"], wrt, tmp_path / "grads")
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr

    xt = torch.from_numpy(x).requires_grad_(True)
    model.zero_grad()
    model(xt).backward(torch.from_numpy(seed))
    assert_rel(np.load(tmp_path / "grads" / "input.npy"), xt.grad.numpy(), 1e-8, "d/dinput")
    for kept in wrt[1:]:
        sharing = sorted(n for n, o in owner.items() if o == kept)
        want = sum(named[n].grad.numpy() for n in sharing)
        assert_rel(np.load(tmp_path / "grads" / f"{kept}.npy"), want, 1e-8,
                   f"d/d{'+'.join(sharing)}")
    print(f"{name}: tessera grad took {took:.1f} s for {len(wrt)} gradients "
          f"({len(named)} parameters)")


@pytest.mark.models
@pytest.mark.parametrize("name", FAST_MODELS)
def test_model_gradients_match_pytorch(name, tmp_path):
    check_model(name, tmp_path)


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_MODELS)
def test_large_model_gradients_match_pytorch(name, tmp_path):
    check_model(name, tmp_path)


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


def test_grad_writes_sanitized_names_and_zeros_for_unused(tmp_path):
    """y = x @ W + b: parameters whose names are no file names ('lin/w:0', and 'lin:w/0',
    which sanitizes to the same), and an input that nothing reads."""
    rng = np.random.default_rng(6)
    w, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    D = TensorProto.DOUBLE
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "lin/w:0"], ["m"]),
         helper.make_node("Add", ["m", "lin:w/0"], ["y"])], "g",
        [helper.make_tensor_value_info("x", D, [2, 4]),
         helper.make_tensor_value_info("aux", D, [2, 2])],
        [helper.make_tensor_value_info("y", D, [2, 3])],
        [numpy_helper.from_array(w, "lin/w:0"), numpy_helper.from_array(b, "lin:w/0")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              str(tmp_path / "m.onnx"))
    x, aux, seed = (rng.standard_normal(s) for s in ((2, 4), (2, 2), (2, 3)))
    for name, v in (("x", x), ("aux", aux), ("seed", seed)):
        np.save(tmp_path / f"{name}.npy", v)
    out = tmp_path / "out"
    proc = tessera("grad", tmp_path / "m.onnx", "--input", f"x={tmp_path / 'x.npy'}",
                   "--input", f"aux={tmp_path / 'aux.npy'}", "--seed-grad",
                   f"y={tmp_path / 'seed.npy'}", "--wrt", "lin/w:0,lin:w/0", "--wrt",
                   "aux,x", "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    files = {"lin/w:0": "lin_w_0.npy", "lin:w/0": "lin_w_0_1.npy", "aux": "aux.npy",
             "x": "x.npy"}
    assert sorted(p.name for p in out.iterdir()) == sorted(files.values())
    for name, file in files.items():
        assert f"{name} -> {out / file}" in proc.stdout, proc.stdout
    want = {"lin/w:0": x.T @ seed, "lin:w/0": seed.sum(0), "x": seed @ w.T,
            "aux": np.zeros((2, 2))}
    for name, file in files.items():
        got = np.load(out / file)
        assert got.dtype == np.float64 and got.shape == want[name].shape, name
        np.testing.assert_allclose(got, want[name], rtol=1e-12, atol=0, err_msg=name)


@pytest.mark.parametrize("args, message, code", [
    (["--wrt", "nope"], "no input or parameter 'nope'", 1),
    (["--wrt", "pads"], "'pads' is int64", 1),
    (["--wrt", "x,"], "--wrt: empty name", 1),
    (["--wrt", "x", "--seed-grad-extra"], "unknown option '--seed-grad-extra'", 2),
])
def test_grad_bad_names(net, args, message, code):
    proc = tessera("grad", net / "net.onnx", "--input", net / "x.npy", "--seed-grad",
                   net / "seed.npy", "--output-dir", net / "out", *args)
    assert proc.returncode == code, proc.stderr
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

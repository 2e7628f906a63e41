"""The fuse_silu pass (src/passes/fuse_silu.c): torch's nn.SiLU, exported as Mul(x, Sigmoid(x)),
becomes one ai.tessera::Silu node run by the cpu backend, and after a convolution the
convolution's activation (a oneDNN swish post-op); patterns the pass must leave alone (the
Sigmoid read elsewhere, a gate Mul(y, Sigmoid(x))) run unfused and still right; float64; and
FusedConv's Silu activation on ref against numpy."""

import io

import numpy as np
import pytest

import tsr
from test_fuse_layernorm import profiled_ops

torch = pytest.importorskip("torch")


def export(module, *xs, opset=17):
    buf = io.BytesIO()
    names = [f"x{i}" for i in range(len(xs))]
    torch.onnx.export(module, tuple(torch.from_numpy(x) for x in xs), buf, opset_version=opset,
                      input_names=names, output_names=["y"])
    return tsr.Graph.load_bytes(buf.getvalue())


def run_both(module, *xs, threads=2):
    want = module(*[torch.from_numpy(x) for x in xs]).detach().numpy()
    ops, (got,) = profiled_ops(tsr.Plan(export(module, *xs), device="cpu", threads=threads),
                               list(xs))
    return ops, got, want


@pytest.mark.parametrize("shape", [(5, 37), (3, 64), (2, 4, 17)], ids=str)
def test_mlp_silu_is_one_cpu_node(shape):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(shape[-1], 48), torch.nn.SiLU(),
                            torch.nn.Linear(48, 9)).eval()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 3
    ops, got, want = run_both(m, x)
    assert ops.get("Silu") == {"cpu"}, ops
    assert "Sigmoid" not in ops and "Mul" not in ops, ops
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_bn_silu_becomes_one_fused_convolution():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(5, 24, 3, padding=1), torch.nn.BatchNorm2d(24),
                            torch.nn.SiLU(), torch.nn.Conv2d(24, 8, 1), torch.nn.SiLU()).eval()
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(2).standard_normal((2, 5, 13, 11)).astype(np.float32)
    ops, got, want = run_both(m, x)
    assert {op for op in ops if not op.startswith("Reorder")} == {"FusedConv"}, ops
    assert ops["FusedConv"] == {"dnnl"}, ops
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


class SharedSigmoid(torch.nn.Module):
    def forward(self, x):
        s = torch.sigmoid(x)
        return x * s + s


class Gate(torch.nn.Module):
    def forward(self, x, y):
        return y * torch.sigmoid(x)


def test_patterns_left_alone_stay_right():
    x = np.random.default_rng(3).standard_normal((4, 19)).astype(np.float32) * 3
    y = np.random.default_rng(4).standard_normal((4, 19)).astype(np.float32)
    ops, got, want = run_both(SharedSigmoid(), x)
    assert "Silu" not in ops and "Sigmoid" in ops, ops
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    ops, got, want = run_both(Gate(), x, y)
    assert "Silu" not in ops and "Sigmoid" in ops, ops
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_float64_silu_is_fused():
    m = torch.nn.Sequential(torch.nn.Linear(11, 30), torch.nn.SiLU()).double().eval()
    x = np.random.default_rng(5).standard_normal((6, 11)) * 4
    ops, got, want = run_both(m, x)
    assert ops.get("Silu") == {"cpu"}, ops
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_fused_conv_silu_on_ref_matches_numpy():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 5, 4))
    w = rng.standard_normal((3, 2, 1, 1))
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float64, list(x.shape))
    g.add_constant("w", w)
    g.add_node("FusedConv", ["x", "w"], ["y"], {"activation": "Silu"}, domain="ai.tessera",
               name="conv")
    g.add_output("y")
    got = tsr.Plan(g, device="ref").run([x])[0]
    pre = np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0])
    np.testing.assert_allclose(got, pre / (1 + np.exp(-pre)), rtol=1e-13, atol=1e-13)

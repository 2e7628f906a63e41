"""Gradients of dynamic-batch exports, whose sizes are known only at run
time (issue 14 item 4): shufflenet_v2 (chunk() slices with bounds from
Shape, means over the batch) and swin_t (window slices, means), through
`tessera grad`, against PyTorch autograd. Slow: each export takes tens of
seconds."""
import os
import subprocess

import numpy as np
import pytest

import tsr

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_0", "swin_t"])
def test_dynamic_batch_gradient_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, torch.randn(2, 3, 224, 224), str(path), opset_version=13,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 224, 224)).astype(np.float32)  # not the export's batch
    seed = rng.standard_normal((3, 1000)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "seed.npy", seed)
    build = os.environ.get("TESSERA_BUILD_DIR", os.path.join(tsr.ROOT, "build"))
    r = subprocess.run([os.path.join(build, "bin", "tessera"), "grad", str(path), "--input",
                        f"x={tmp_path / 'x.npy'}", "--seed-grad", str(tmp_path / "seed.npy"),
                        "--wrt", "x", "--output-dir", str(tmp_path / "g"), "--threads", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    xt = torch.from_numpy(x).requires_grad_()
    (model(xt) * torch.from_numpy(seed)).sum().backward()
    want = xt.grad.numpy()
    got = np.load(tmp_path / "g" / "x.npy")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()

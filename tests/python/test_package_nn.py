"""tessera.nn.DetailPreservingPool2d, the drop-in layer on Tessera's DPP kernels, against the
pure-PyTorch reference in dpp_torch.py (autograd gives the reference gradients), in float64:
outputs and the gradients of the input, alpha, lambda and the filter to 1e-10, over both
variants, both rewards, both normalizations and windows, strides and paddings with odd
sizes. Then as part of networks: its ONNX export runs in tessera.Session, and
tessera.optimize takes a model that contains it."""

import copy
import io

import numpy as np
import onnx
import pytest
import torch

import dpp_torch
import tessera
import tessera.nn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, symmetric=False, full=True, normalization="ratio"),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), ceil_mode=True, full=True),
    dict(kernel_size=2, stride=1, symmetric=False, normalization="ratio"),
    dict(kernel_size=3, stride=3, ceil_mode=True, epsilon=0.1),
]


def pair(config, channels, seed):
    torch.manual_seed(seed)
    layer = tessera.nn.DetailPreservingPool2d(channels, **config).double()
    with torch.no_grad():
        layer.alpha.normal_(0.0, 0.5)
        layer.lambda_.normal_(0.5, 0.3)
        if layer.filter is not None:
            layer.filter.add_(0.05 * torch.randn_like(layer.filter))
    ref = dpp_torch.DetailPreservingPool2d(channels, **config).double()
    ref.load_state_dict(layer.state_dict())
    return layer, ref


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 5, 8, 6)])
def test_forward_and_gradients_match_reference(config, shape):
    layer, ref = pair(config, shape[1], seed=len(str(config)) + shape[2])
    x = torch.randn(*shape, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), ref(xb)
    assert ya.shape == yb.shape
    assert (ya - yb).abs().max().item() < 1e-10
    seed = torch.randn_like(yb)
    (ya * seed).sum().backward()
    (yb * seed).sum().backward()
    assert (xa.grad - xb.grad).abs().max().item() < 1e-10
    for (name, p), q in zip(layer.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max().item() < 1e-10, name


def test_float32_and_errors():
    layer = tessera.nn.DetailPreservingPool2d(4, full=True)
    ref = dpp_torch.DetailPreservingPool2d(4, full=True)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError):
        layer(torch.zeros(1, 4, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError):
        tessera.nn.DetailPreservingPool2d(4, normalization="softmax")
    with pytest.raises(tessera.ShapeError):
        layer(torch.randn(1, 3, 6, 6))  # 3 channels, the layer has 4


class DppNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        # An epsilon that float32 holds exactly: ONNX stores float attributes as float32,
        # which would move sqrt(1e-3) by 1e-9 relative in the exported graph.
        self.pool = tessera.nn.DetailPreservingPool2d(6, kernel_size=3, stride=2, padding=1,
                                                      full=True, symmetric=False,
                                                      epsilon=0.03125)
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).mean((2, 3)))


def test_export_runs_in_session():
    torch.manual_seed(1)
    model = DppNet().eval()
    x = torch.randn(2, 3, 9, 10)
    f = io.BytesIO()
    tessera.nn.export(model, x, f, input_names=["x"], output_names=["y"])
    proto = onnx.load_from_string(f.getvalue())
    assert [n.op_type for n in proto.graph.node if n.domain == tessera.nn.DOMAIN] == [
        "DetailPreservingPool"]
    (y,) = tessera.Session(f.getvalue(), device="ref").run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_optimize_takes_the_layer_and_trains_it():
    torch.manual_seed(2)
    model = DppNet().double().train()
    eager = copy.deepcopy(model)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    fast = tessera.optimize(model, (x,))
    (fast(x) ** 2).sum().backward()
    (eager(x) ** 2).sum().backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        err = ((p.grad - q.grad).abs().max() / q.grad.abs().max()).item()
        assert err < 1e-10, (name, err)

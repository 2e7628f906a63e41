"""Training through tessera.optimize in PyTorch's own loop: the same network trained eagerly
and optimized, from the same initial state, in float64 for 20 steps with SGD (momentum 0.9)
and Adam; losses and final parameters (and BatchNorm's running statistics) within 1e-8.
The optimized module's gradients are Tessera's (tsr_graph_gradient); PyTorch only runs the
loss and the optimizer. A small ResNet (torchvision's BasicBlock, BatchNorm in training mode)
and a DPP CNN (DetailPreservingPool lite and full, against the pure-PyTorch reference)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

import dpp_torch
import tessera

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def small_resnet():
    """resnet18's structure at a small size: stem, a basic block, a strided block with a
    1x1 downsampling, global average pooling, a classifier."""
    down = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, stride=2, bias=False),
                               torch.nn.BatchNorm2d(16))
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(), BasicBlock(8, 8), BasicBlock(8, 16, stride=2, downsample=down),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))


def dpp_cnn():
    """conv -> ReLU -> DPP lite -> conv -> ReLU -> DPP full (asymmetric, ratio) -> fc."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
        dpp_torch.DetailPreservingPool2d(6, kernel_size=2),
        torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(),
        dpp_torch.DetailPreservingPool2d(8, kernel_size=3, stride=2, padding=1, symmetric=False,
                                         full=True, normalization="ratio"),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))


def perturb(model):
    """Moves DPP's alpha/lambda and BatchNorm's affine parameters off their initial values,
    so that every parameter matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, dpp_torch.DetailPreservingPool2d):
                m.alpha.normal_(0.0, 0.5)
                m.lambda_.normal_(0.5, 0.3)
                if m.filter is not None:
                    m.filter.add_(0.05 * torch.randn_like(m.filter))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return model


def batches(n, batch, size, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64),
             torch.randint(0, 10, (batch,), generator=g)) for _ in range(n)]


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
}


def train(model, data, make_opt):
    opt = make_opt(model.parameters())
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("net", ["small_resnet", "dpp_cnn"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_matches_eager_in_float64(net, optimizer):
    torch.manual_seed(3)
    eager = perturb({"small_resnet": small_resnet, "dpp_cnn": dpp_cnn}[net]()).double().train()
    twin = copy.deepcopy(eager)
    data = batches(20, 4, 12, seed=5)
    fast = tessera.optimize(twin, (data[0][0],), device="cpu")
    assert fast.training
    got = train(fast, data, OPTIMIZERS[optimizer])
    want = train(eager, data, OPTIMIZERS[optimizer])
    for step, (a, b) in enumerate(zip(got, want)):
        assert abs(a - b) <= 1e-8 * max(1.0, abs(b)), (step, a, b)
    assert want[-1] != want[0]  # it trained
    ref = eager.state_dict()
    for name, value in twin.state_dict().items():
        if value.is_floating_point():
            err = (value - ref[name]).abs().max().item()
            assert err <= 1e-8, (name, err)
        else:
            assert torch.equal(value, ref[name]), name  # num_batches_tracked


def test_gradients_reach_every_parameter_and_the_input():
    torch.manual_seed(4)
    eager = perturb(small_resnet()).double().train()
    twin = copy.deepcopy(eager)
    x = torch.randn(3, 3, 10, 10, dtype=torch.float64)
    fast = tessera.optimize(twin, (x,))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    seed = torch.randn(3, 10, dtype=torch.float64)
    (fast(xa) * seed).sum().backward()
    (eager(xb) * seed).sum().backward()
    assert (xa.grad - xb.grad).abs().max().item() < 1e-10
    for (name, p), q in zip(twin.named_parameters(), eager.parameters()):
        assert p.grad is not None, name
        assert (p.grad - q.grad).abs().max().item() < 1e-10, name


def test_backward_reads_saved_values_instead_of_running_the_forward_again():
    torch.manual_seed(5)
    model = small_resnet().double().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fast = tessera.optimize(model, (x,))
    fast(x).sum().backward()
    cap = next(iter(fast._captures.values()))
    (halves,) = cap.halves.values()
    assert any(kind == "saved" for kind, _ in halves.backward_feeds)
    for conv in ("/0/Conv", "/3/conv1/Conv", "/4/downsample/downsample.0/Conv"):
        assert halves.forward.node_backend(conv)
        with pytest.raises(tessera.NotFoundError, match="no node named"):
            halves.backward.node_backend(conv)


def test_saved_values_cross_in_the_blocked_layout():
    """In float32 the forward half leaves its convolutions' outputs in the cpu device's
    blocked layout (no reorder on either side of the split), and the gradients still
    match eager's."""
    torch.manual_seed(8)
    eager = perturb(small_resnet()).train()
    twin = copy.deepcopy(eager)
    x = torch.randn(2, 3, 12, 12)
    fast = tessera.optimize(twin, (x,))
    fast(x).sum().backward()
    eager(x).sum().backward()
    cap = next(iter(fast._captures.values()))
    ((wrt, halves),) = cap.halves.items()
    n = halves.n_outputs
    if not any(halves.forward.output_layout(k)[0] for k in range(n, halves.forward.n_outputs)):
        pytest.skip("the cpu device keeps nothing blocked here (no oneDNN blocked kernels)")
    # The same forward half with every output plain reorders more.
    diff = [o.name for o in cap.graph.outputs()[:cap.n_model_outputs]]
    first, _ = cap.graph.gradient(diff, wrt).split(n)
    plain = tessera.graph.Plan(first, **cap.compile)
    rng = np.random.default_rng(0)
    plain.run([rng.standard_normal([d if isinstance(d, int) else 2 for d in spec.shape])
               .astype(spec.dtype) if spec.dtype.kind == "f" else np.zeros(spec.shape, spec.dtype)
               for spec in first.inputs()])
    assert halves.forward.stats()["n_reorders"] < plain.stats()["n_reorders"]
    for (name, p), q in zip(twin.named_parameters(), eager.parameters()):
        scale = max(q.grad.abs().max().item(), 1e-6)
        assert (p.grad - q.grad).abs().max().item() <= 1e-4 * scale, name


def test_inputs_changed_in_place_before_backward_are_refused():
    torch.manual_seed(5)
    model = small_resnet().double().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fast = tessera.optimize(model, (x,))
    loss = fast(x).sum()
    x.mul_(2.0)
    with pytest.raises(RuntimeError, match="'input_0' was modified in place"):
        loss.backward()


def test_frozen_parameters_get_no_gradient():
    torch.manual_seed(6)
    model = small_resnet().double().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fast = tessera.optimize(model, (x,))
    model[0].weight.requires_grad_(False)
    fast(x).sum().backward()
    assert model[0].weight.grad is None
    assert model[-1].weight.grad is not None


def test_float32_losses_within_1e3():
    torch.manual_seed(7)
    eager = perturb(small_resnet()).train()
    twin = copy.deepcopy(eager)
    data = [(x.float(), y) for x, y in batches(5, 4, 12, seed=8)]
    fast = tessera.optimize(twin, (data[0][0],))
    got = train(fast, data, OPTIMIZERS["sgd"])
    want = train(eager, data, OPTIMIZERS["sgd"])
    for a, b in zip(got, want):
        assert abs(a - b) <= 1e-3 * max(1.0, abs(b)), (a, b)


def test_dropout_trains_with_tessera_masks():
    torch.manual_seed(9)
    model = torch.nn.Sequential(torch.nn.Linear(6, 400), torch.nn.Dropout(0.25)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    fast = tessera.optimize(model, (x,))
    fast.eval()
    plain = fast(x)
    torch.testing.assert_close(plain, model(x), rtol=1e-12, atol=1e-12)
    fast.train()
    y = fast(x)
    kept = y != 0
    frac = kept.double().mean().item()
    assert 0.65 < frac < 0.85, frac  # about 1 - 0.25 kept
    torch.testing.assert_close(y[kept], plain[kept] / 0.75, rtol=1e-12, atol=1e-12)
    torch.manual_seed(1)
    a = fast(x)
    torch.manual_seed(1)
    b = fast(x)
    assert torch.equal(a, b)  # masks follow torch's generator
    assert not torch.equal(a, fast(x))
    # The backward pass uses the forward's mask.
    xg = x.clone().requires_grad_()
    out = fast(xg)
    out.sum().backward()
    mask = (out != 0).double()
    want = (mask / 0.75) @ model[0].weight
    torch.testing.assert_close(xg.grad, want, rtol=1e-10, atol=1e-10)

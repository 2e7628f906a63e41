"""tessera.optimize for inference and as a module: torchvision classifiers against eager
PyTorch at batch 1 and 3 from one optimized module (within 1e-4 of max |y|), the module's
state shared with the original (state_dict keys, the same Parameter objects, load_state_dict,
in-place edits seen without recapture), train/eval semantics, capture failures naming the
submodule and the op, and the torch.compile backend's answer on this PyTorch."""

import copy

import numpy as np
import pytest
import torch

import models
import tessera

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def rel_err(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


def check_batches(model, size, device="cpu"):
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(1, 3, size, size, generator=g)
    x3 = torch.randn(3, 3, size, size, generator=g)
    fast = tessera.optimize(model, (x1,), device=device)
    with torch.no_grad():
        for x in (x1, x3, x1):
            err = rel_err(fast(x), model(x))
            assert err < 1e-4, (x.shape[0], err)
    assert len(fast._captures) == 1  # batch 3 reused the capture


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_small_torchvision_models(name):
    check_batches(models._make_model(name), 64)


@pytest.mark.models
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg16" else n
                                  for n in models.MODEL_NAMES])
def test_torchvision_models(name):
    check_batches(models._make_model(name), 224)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1),
                                            torch.nn.BatchNorm2d(6), torch.nn.ReLU())
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.drop(self.features(x).mean((2, 3))))


def net64():
    torch.manual_seed(0)
    m = Net().double()
    with torch.no_grad():
        m.features[1].running_mean.normal_()
        m.features[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


X = torch.randn(2, 3, 5, 5, dtype=torch.float64)


def test_state_is_the_modules_own():
    model = net64()
    fast = tessera.optimize(model, (X,))
    assert list(fast.state_dict()) == list(model.state_dict())
    assert [id(p) for p in fast.parameters()] == [id(p) for p in model.parameters()]
    for (a, t), (b, u) in zip(fast.state_dict().items(), model.state_dict().items()):
        assert a == b and t.data_ptr() == u.data_ptr()


def test_state_dict_round_trip_and_load_changes_outputs():
    model = net64()
    fast = tessera.optimize(model, (X,))
    with torch.no_grad():
        before = fast(X)
        other = Net().double().eval()
        other.load_state_dict(fast.state_dict())
        torch.testing.assert_close(other(X), before, rtol=1e-12, atol=1e-12)
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
        fast.load_state_dict(other.state_dict())
        after = fast(X)
        assert (after - before).abs().max() > 1e-3
        torch.testing.assert_close(after, other(X), rtol=1e-12, atol=1e-12)
    assert len(fast._captures) == 1


def test_in_place_updates_are_read_without_recapture():
    model = net64()
    fast = tessera.optimize(model, (X,))
    with torch.no_grad():
        fast(X)
        model.head.weight.mul_(-2.0)
        model.features[1].running_mean.add_(1.0)
        torch.testing.assert_close(fast(X), model(X), rtol=1e-12, atol=1e-12)
    assert len(fast._captures) == 1


def test_eval_bakes_parameters_and_replans_only_when_they_change():
    model = net64()
    ref = copy.deepcopy(model)
    fast = tessera.optimize(model, (X,))
    cap = next(iter(fast._captures.values()))
    with torch.no_grad():
        fast(X)
        plan = cap.baked[0]
        # The parameters are constants of the plan: BatchNorm is folded into the Conv.
        with pytest.raises(tessera.NotFoundError, match="removed it or fused it"):
            plan.node_backend("/features/features.1/BatchNormalization")
        fast(X[:1])
        assert cap.baked[0] is plan  # nothing changed: no re-planning
    # With gradients wanted, eval mode differentiates through the parameters.
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for m, o in ((fast, opt), (ref, ref_opt)):
        o.zero_grad()
        (m(X) ** 2).sum().backward()
        o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(fast(X), ref(X), rtol=1e-12, atol=1e-12)  # the step is seen
        assert cap.baked[0] is not plan
        plan = cap.baked[0]
        # A parameter given new storage or replaced by another tensor is seen too.
        model.head.weight.data = 2.0 * model.head.weight.data
        ref.head.weight.data = 2.0 * ref.head.weight.data
        torch.testing.assert_close(fast(X), ref(X), rtol=1e-12, atol=1e-12)
        model.head.bias = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
        ref.head.bias = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
        torch.testing.assert_close(fast(X), ref(X), rtol=1e-12, atol=1e-12)
    assert cap.baked[0] is not plan
    assert len(fast._captures) == 1


def test_eval_and_train_semantics():
    model = net64()
    fast = tessera.optimize(model, (X,))
    assert not fast.training
    ref = copy.deepcopy(model)
    with torch.no_grad():
        torch.testing.assert_close(fast(X), ref(X), rtol=1e-12, atol=1e-12)
    stats = model.features[1].running_mean.clone()
    fast(X)
    assert torch.equal(model.features[1].running_mean, stats)  # eval: no update
    fast.train()
    assert fast.training and model.training and model.features[1].training
    model.drop.p = 0.0  # so that eager and Tessera agree exactly in train mode
    ref.train()
    ref.drop.p = 0.0
    fresh = tessera.optimize(model, (X,))
    torch.testing.assert_close(fresh(X), ref(X), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.features[1].running_mean, ref.features[1].running_mean,
                               rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(model.features[1].running_var, ref.features[1].running_var,
                               rtol=1e-14, atol=1e-14)
    assert model.features[1].num_batches_tracked.item() == 1
    fresh.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(X), ref(X), rtol=1e-12, atol=1e-12)


def test_capture_leaves_the_module_as_it_was():
    model = net64().train()
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    tessera.optimize(model, (X,))
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


class Outer(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.stem = torch.nn.Linear(4, 4)
        self.body = torch.nn.Sequential(torch.nn.ReLU(), inner)

    def forward(self, x):
        return self.body(self.stem(x))


class Svd(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x)[0]


class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class Sine(torch.nn.Module):
    def forward(self, x):
        return torch.sin(x)


@pytest.mark.parametrize("inner,op,words", [
    (Svd(), "aten::linalg_svd", "Exporting the operator"),
    (Branchy(), None, "Python boolean"),
    (Sine(), "Sin", "1 unknown op: 'Sin'"),
])
def test_capture_failure_names_the_submodule(inner, op, words):
    with pytest.raises(tessera.CaptureError) as e:
        tessera.optimize(Outer(inner), (torch.randn(3, 4),))
    assert e.value.submodule == "body.1", str(e.value)
    assert e.value.op == op
    assert "body.1" in str(e.value) and words in str(e.value)


def test_other_dtypes_and_shapes():
    model = net64().float()
    x = torch.randn(4, 3, 7, 7)
    fast = tessera.optimize(model, (x,))
    with torch.no_grad():
        assert rel_err(fast(x), model(x)) < 1e-5
        assert rel_err(fast(x[:1]), model(x[:1])) < 1e-5
        model.double()
        xd = x.double()
        torch.testing.assert_close(fast(xd), model(xd), rtol=1e-12, atol=1e-12)
        assert fast(xd).dtype == torch.float64
    with pytest.raises(TypeError):
        fast(xd, xd)
    fixed = tessera.optimize(model, (xd,), dynamic_batch=False)
    with pytest.raises(tessera.ShapeError):
        fixed(xd[:1])


def test_outputs_as_tuples():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x):
            y = self.lin(x)
            return y, torch.relu(y)

    m = Two().double()
    ref = copy.deepcopy(m)
    x = torch.randn(5, 3, dtype=torch.float64)
    a, b = tessera.optimize(m, (x,))(x)
    ra, rb = ref(x)
    torch.testing.assert_close(a, ra)
    torch.testing.assert_close(b, rb)
    (a.sum() + 3.0 * (b * b).sum()).backward()  # both outputs seed the backward pass
    (ra.sum() + 3.0 * (rb * rb).sum()).backward()
    torch.testing.assert_close(m.lin.weight.grad, ref.lin.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.lin.bias.grad, ref.lin.bias.grad, rtol=1e-12, atol=1e-12)


def test_numpy_free_round_trip_of_outputs_is_fresh():
    model = net64()
    fast = tessera.optimize(model, (X,))
    with torch.no_grad():
        a = fast(X)
        b = fast(X)
    assert a.data_ptr() != b.data_ptr()  # every call returns new tensors
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_compile_backend_on_this_torch():
    if hasattr(torch, "compile"):
        pytest.skip("PyTorch 2.x: covered by test_compile_backend_registered")
    with pytest.raises(RuntimeError, match="PyTorch 2"):
        tessera.compile_backend(None, [])

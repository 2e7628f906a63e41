"""Training: training-mode BatchNorm and Dropout, losses, optimizers, schedules,
EMA, checkpoints and trained ONNX files, each against PyTorch (torch.nn,
torch.optim) or against an uninterrupted run."""

import contextlib
import copy
import os

import numpy as np
import pytest
import torch

import tsr

torch.set_num_threads(1)
T = "ai.tessera"


def tol(dtype):
    return 1e-9 if dtype == np.float64 else 2e-5


def close(a, b, dtype, what=""):
    scale = max(float(np.abs(b).max()), 1e-12)
    err = float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())
    assert err <= tol(dtype) * max(scale, 1.0), f"{what}: error {err:.3g} (scale {scale:.3g})"


@contextlib.contextmanager
def fails(status, match):
    """The block must raise a TesseraError with `status` and a message matching `match`."""
    with pytest.raises(tsr.TesseraError, match=match) as err:
        yield
    assert err.value.status == status, f"status {err.value.status}, not {status}: {err.value}"



# ------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (4, 3), (2, 4, 9)])
def test_batchnorm_train_matches_torch(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype) * 2 + 0.5
    scale = rng.uniform(0.5, 1.5, c).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = rng.uniform(0.5, 2, c).astype(dtype)
    y, rm_out, rv_out, mean, inv = tsr.run_op(
        "BatchNormTrain", [x, scale, bias, rm, rv], {"momentum": 0.8, "epsilon": 1e-3},
        domain=T, n_outputs=5)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    tx = torch.tensor(x, requires_grad=True)
    ts, tb = torch.tensor(scale, requires_grad=True), torch.tensor(bias, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, ts, tb, training=True, momentum=0.2,
                                        eps=1e-3)
    close(y, ty.detach().numpy(), dtype, "Y")
    close(rm_out, trm.numpy(), dtype, "running_mean")
    close(rv_out, trv.numpy(), dtype, "running_var")
    dy = rng.standard_normal(shape).astype(dtype)
    ty.backward(torch.tensor(dy))
    dx, dscale, db = tsr.run_op("BatchNormTrainGrad", [dy, x, scale, mean, inv], domain=T,
                                n_outputs=3)
    close(dx, tx.grad.numpy(), dtype, "dX")
    close(dscale, ts.grad.numpy(), dtype, "dscale")
    close(db, tb.grad.numpy(), dtype, "dB")


def test_batchnorm_train_errors():
    x = np.ones((1, 3), np.float32)
    p = np.ones(3, np.float32)
    with fails(tsr.ERR_SHAPE, "more than one value per channel"):
        tsr.run_op("BatchNormTrain", [x, p, p, p, p], domain=T)
    with fails(tsr.ERR_SHAPE, "has 4 elements but X has 3 channels"):
        q = np.ones(4, np.float32)
        tsr.run_op("BatchNormTrain", [np.ones((2, 3), np.float32), q, p, p, p], domain=T)
    with fails(tsr.ERR_INVALID_ARGUMENT, "momentum must be in"):
        tsr.run_op("BatchNormTrain", [np.ones((2, 3), np.float32), p, p, p, p], {"momentum": 2.0},
                   domain=T)


def test_dropout_train_mask_and_scale():
    x = np.random.default_rng(0).standard_normal((64, 257)).astype(np.float32)
    seed = np.array([1234], np.int64)
    y, mask = tsr.run_op("DropoutTrain", [x, seed], {"ratio": 0.3}, domain=T, n_outputs=2)
    y2, _ = tsr.run_op("DropoutTrain", [x, seed], {"ratio": 0.3}, domain=T, n_outputs=2,
                       threads=2)
    assert np.array_equal(y, y2), "the mask must not depend on the thread count"
    kept = mask != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(mask[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_allclose(y, x * mask, rtol=1e-6)
    y3, _ = tsr.run_op("DropoutTrain", [x, seed + 1], {"ratio": 0.3}, domain=T, n_outputs=2)
    assert not np.array_equal(y, y3)
    with fails(tsr.ERR_INVALID_ARGUMENT, "ratio must be in"):
        tsr.run_op("DropoutTrain", [x, seed], {"ratio": 1.0}, domain=T)


# ----------------------------------------------------------------- losses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 2, 3)])
def test_cross_entropy_matches_torch(dtype, reduction, smoothing, shape):
    rng = np.random.default_rng(len(shape) * 7 + int(smoothing * 100))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    lab = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.int64)
    attrs = {"reduction": reduction, "label_smoothing": smoothing}
    (loss,) = tsr.run_op("SoftmaxCrossEntropy", [x, lab], attrs, domain=T)
    tx = torch.tensor(x, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tx, torch.tensor(lab), reduction=reduction,
                                           label_smoothing=smoothing)
    close(loss, tl.item(), dtype, "loss")
    tl.backward(torch.tensor(1.7, dtype=tx.dtype))
    (dx,) = tsr.run_op("SoftmaxCrossEntropyGrad", [np.array(1.7, dtype), x, lab], attrs, domain=T)
    close(dx, tx.grad.numpy(), dtype, "dlogits")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["mse", "l1", "huber"])
def test_regression_losses_match_torch(dtype, reduction, kind):
    rng = np.random.default_rng(3)
    y = rng.standard_normal((4, 3, 5)).astype(dtype) * 2
    t = rng.standard_normal((4, 3, 5)).astype(dtype)
    attrs = {"kind": kind, "reduction": reduction, "delta": 0.7}
    (loss,) = tsr.run_op("RegressionLoss", [y, t], attrs, domain=T)
    ty = torch.tensor(y, requires_grad=True)
    fn = {"mse": lambda a, b: torch.nn.functional.mse_loss(a, b, reduction=reduction),
          "l1": lambda a, b: torch.nn.functional.l1_loss(a, b, reduction=reduction),
          "huber": lambda a, b: torch.nn.functional.huber_loss(a, b, reduction=reduction,
                                                              delta=0.7)}[kind]
    tl = fn(ty, torch.tensor(t))
    close(loss, tl.item(), dtype, "loss")
    tl.backward(torch.tensor(0.5, dtype=ty.dtype))
    (dy,) = tsr.run_op("RegressionLossGrad", [np.array(0.5, dtype), y, t], attrs, domain=T)
    close(dy, ty.grad.numpy(), dtype, "dy")


def test_loss_errors():
    x = np.zeros((2, 3), np.float32)
    with fails(tsr.ERR_INVALID_ARGUMENT, "out of range for 3 classes"):
        tsr.run_op("SoftmaxCrossEntropy", [x, np.array([0, 3], np.int64)], domain=T)
    with fails(tsr.ERR_SHAPE, "labels must have rank 1"):
        tsr.run_op("SoftmaxCrossEntropy", [x, np.zeros((2, 3), np.int64)], domain=T)
    with fails(tsr.ERR_UNSUPPORTED, "reduction 'none'"):
        tsr.run_op("SoftmaxCrossEntropy", [x, np.zeros(2, np.int64)], {"reduction": "none"},
                   domain=T)
    with fails(tsr.ERR_SHAPE, "shapes"):
        tsr.run_op("RegressionLoss", [x, np.zeros((3, 2), np.float32)], domain=T)
    with fails(tsr.ERR_UNSUPPORTED, "loss kind 'l3'"):
        tsr.run_op("RegressionLoss", [x, x], {"kind": "l3"}, domain=T)


# ------------------------------------------------------------- optimizers


def mlp(dtype, seed=0, dropout=0.0):
    """A Tessera graph and the same torch module: Gemm, Relu, (Dropout), MatMul+Add."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((6, 5)).astype(dtype) * 0.5
    b1 = rng.standard_normal(6).astype(dtype) * 0.1
    w2 = rng.standard_normal((6, 3)).astype(dtype) * 0.5
    b2 = rng.standard_normal(3).astype(dtype) * 0.1
    g = tsr.Graph()
    g.add_input("x", dtype, ["batch", 5])
    for name, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        tsr.add_parameter(g, name, v)
    g.add_node("Gemm", ["x", "w1", "b1"], ["h"], {"transB": 1})
    g.add_node("Relu", ["h"], ["r"])
    last = "r"
    if dropout:
        g.add_constant("ratio", np.array(dropout, dtype))
        g.add_node("Dropout", ["r", "ratio"], ["d"])
        last = "d"
    g.add_node("MatMul", [last, "w2"], ["m"])
    g.add_node("Add", ["m", "b2"], ["y"])
    g.add_output("y")
    params = {n: torch.tensor(v, requires_grad=True) for n, v in
              (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))}
    return g, params, lambda x: mlp_forward(params, x)


def mlp_forward(params, x):
    """The torch module of mlp() with the parameters `params`."""
    h = torch.relu(x @ params["w1"].T + params["b1"])
    return h @ params["w2"] + params["b2"]


def batches(dtype, n, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((4, 5)).astype(dtype), rng.integers(0, 3, 4)) for _ in range(n)]


OPTIM_CASES = {
    "sgd": ({"kind": "sgd", "lr": 0.1}, lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum_wd": ({"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01,
                         "dampening": 0.1},
                        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01,
                                                  dampening=0.1)),
    "sgd_nesterov": ({"kind": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": 1},
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": ({"kind": "adam", "lr": 0.01, "weight_decay": 0.02, "beta1": 0.8, "beta2": 0.99},
             lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.02, betas=(0.8, 0.99))),
    "adamw_amsgrad": ({"kind": "adamw", "lr": 0.01, "weight_decay": 0.1, "amsgrad": 1,
                       "eps": 1e-6},
                      lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True,
                                                  eps=1e-6)),
}


def tessera_step(tr, inputs, target):
    """One training step: (loss, {name: value after - value before}) in float64."""
    before = {n: v.astype(np.float64) for n, (_, v) in tr.params().items()}
    loss = tr.step(inputs, target)
    return loss, {n: v.astype(np.float64) - before[n] for n, (_, v) in tr.params().items()}


def torch_step(params, opt, loss_of, clip_norm=None):
    """One torch step of loss_of(): (loss, {name: value after - value before}) in float64."""
    before = {n: p.detach().double().clone() for n, p in params.items()}
    opt.zero_grad()
    loss = loss_of()
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(params.values()), clip_norm)
    opt.step()
    return loss.item(), {n: (p.detach().double() - before[n]).numpy() for n, p in params.items()}


def assert_update(got, want, what, atol, can_be_zero=False):
    """An optimizer's update against the reference's, to `atol` (derived from the update
    itself, not from the parameter, or an update wrong by a few percent would pass). Unless
    `can_be_zero`, the reference update must be well above `atol`, or the check is void."""
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    assert can_be_zero or scale > 100 * atol, f"{what}: the reference update is {scale:.3g}"
    assert err <= atol, f"{what}: update error {err:.3g} > {atol:.3g} (max |update| {scale:.3g})"


def derived_tolerance(ref32, ref64, floor_scale):
    """For float32 results compared with a float64 reference: four times what PyTorch's own
    float32 run differs from its float64 run, plus a few units of float32 resolution at
    `floor_scale` (what a float32 value is only known to)."""
    eps = float(np.finfo(np.float32).eps)
    ref32, ref64 = np.asarray(ref32, np.float64), np.asarray(ref64, np.float64)
    return 4 * float(np.abs(ref32 - ref64).max()) + 8 * eps * floor_scale


def torch_copy(params, dtype):
    return {n: p.detach().to(dtype).clone().requires_grad_(True) for n, p in params.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(OPTIM_CASES))
def test_optimizer_matches_torch(case, dtype):
    """Every step's update of every parameter against torch.optim's: in float64 to 1e-9 of
    the update, in float32 against a float64 run of torch to a tolerance derived from torch's
    own float32 run."""
    opts, make = OPTIM_CASES[case]
    g, params, _ = mlp(dtype)
    tr = tsr.Trainer(g, {"kind": "cross_entropy"}, opts)
    runs = {np.float64: torch_copy(params, torch.float64)}
    if dtype == np.float32:
        runs[np.float32] = torch_copy(params, torch.float32)
    optims = {d: make(list(ps.values())) for d, ps in runs.items()}
    for k, (x, lab) in enumerate(batches(dtype, 10)):
        before = {n: v for n, (_, v) in tr.params().items()}
        loss, got = tessera_step(tr, [x], lab)
        ref = {}
        for d, ps in runs.items():
            def loss_of(ps=ps, d=d):
                out = mlp_forward(ps, torch.tensor(x.astype(d)))
                return torch.nn.functional.cross_entropy(out, torch.tensor(lab))
            ref[d] = torch_step(ps, optims[d], loss_of)
        close(loss, ref[np.float64][0], dtype, f"step {k}: loss")
        for n in params:
            want = ref[np.float64][1][n]
            atol = (1e-9 * float(np.abs(want).max()) if dtype == np.float64 else
                    derived_tolerance(ref[np.float32][1][n], want,
                                      np.abs(before[n]).max() + np.abs(want).max()))
            assert_update(got[n], want, f"step {k}: {n}", atol)
    assert tr.step_count() == 10


def test_groups_clipping_and_regression_loss():
    dtype = np.float64
    g, params, forward = mlp(dtype)
    opts = {"kind": "sgd", "lr": 0.1, "momentum": 0.5, "weight_decay": 0.05, "clip_norm": 0.3,
            "groups": [{"pattern": "b*", "weight_decay": 0.0, "lr_scale": 0.5}]}
    tr = tsr.Trainer(g, {"kind": "huber", "huber_delta": 0.5, "reduction": "sum"}, opts)
    decay = [params["w1"], params["w2"]]
    nodecay = [params["b1"], params["b2"]]
    topt = torch.optim.SGD([{"params": decay, "weight_decay": 0.05},
                            {"params": nodecay, "weight_decay": 0.0, "lr": 0.05}],
                           lr=0.1, momentum=0.5)
    rng = np.random.default_rng(5)
    for k in range(8):
        x = rng.standard_normal((4, 5))
        t = rng.standard_normal((4, 3))
        loss, got = tessera_step(tr, [x], t)
        tl, want = torch_step(params, topt, lambda: torch.nn.functional.huber_loss(
            forward(torch.tensor(x)), torch.tensor(t), delta=0.5, reduction="sum"), 0.3)
        close(loss, tl, dtype, "loss")
        for n in params:
            assert_update(got[n], want[n], f"step {k}: {n}", 1e-9 * float(np.abs(want[n]).max()))


def test_schedules_match_torch():
    dtype = np.float64
    for sched, make in (
        ({"schedule": "step", "step_size": 2, "gamma": 0.5},
         lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)),
        ({"schedule": "cosine", "t_max": 5, "min_lr": 0.01},
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 5, eta_min=0.01)),
    ):
        g, params, forward = mlp(dtype)
        tr = tsr.Trainer(g, {"kind": "cross_entropy"}, {"kind": "sgd", "lr": 0.2, **sched})
        topt = torch.optim.SGD(list(params.values()), lr=0.2)
        ts = make(topt)
        for epoch in range(5):
            assert abs(tr.lr() - topt.param_groups[0]["lr"]) < 1e-12, (sched, epoch)
            for x, lab in batches(dtype, 2, seed=epoch):
                _, got = tessera_step(tr, [x], lab)
                _, want = torch_step(params, topt, lambda: torch.nn.functional.cross_entropy(
                    forward(torch.tensor(x)), torch.tensor(lab)))
                for n in params:
                    assert_update(got[n], want[n], f"{sched} epoch {epoch}: {n}",
                                  1e-9 * float(np.abs(want[n]).max()))
            tr.epoch_end()
            ts.step()
    # reduce on plateau
    g, params, _ = mlp(dtype)
    tr = tsr.Trainer(g, {"kind": "cross_entropy"},
                     {"kind": "sgd", "lr": 1.0, "schedule": "plateau", "patience": 1,
                      "factor": 0.5, "threshold": 0.0})
    topt = torch.optim.SGD(list(params.values()), lr=1.0)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, patience=1, factor=0.5, threshold=0.0)
    for metric in [5, 4, 4, 4, 3, 3, 3, 3, 2]:
        tr.epoch_end(metric)
        ts.step(metric)
        assert abs(tr.lr() - topt.param_groups[0]["lr"]) < 1e-12
    with fails(tsr.ERR_INVALID_ARGUMENT, "needs a metric"):
        tr.epoch_end()


def test_ema_and_evaluate():
    dtype = np.float64
    g, params, forward = mlp(dtype)
    tr = tsr.Trainer(g, {"kind": "cross_entropy"}, {"kind": "sgd", "lr": 0.1, "ema_decay": 0.9})
    ema = {n: p.detach().numpy().copy() for n, p in params.items()}
    for x, lab in batches(dtype, 5):
        tr.step([x], lab)
        for n, (_, v) in tr.params().items():
            ema[n] = 0.9 * ema[n] + 0.1 * v
    x, lab = batches(dtype, 1, seed=9)[0]
    live = tr.params()
    tr.use_ema(True)
    got = tr.params()
    for n in ema:
        close(got[n][1], ema[n], dtype, n)
    loss, out = tr.evaluate([x], lab)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(torch.tensor(ema[n]))
        ref = forward(torch.tensor(x))
    close(out, ref.numpy(), dtype, "EMA output")
    close(loss, torch.nn.functional.cross_entropy(ref, torch.tensor(lab)).item(), dtype, "loss")
    tr.use_ema(False)
    _, out_live = tr.evaluate([x])
    assert not np.allclose(out_live, out)
    assert not np.allclose(live["w1"][1], got["w1"][1])


def test_trainer_errors():
    g, _, _ = mlp(np.float32)
    with fails(tsr.ERR_INVALID_ARGUMENT, "Nesterov momentum needs momentum > 0"):
        tsr.Trainer(g, None, {"nesterov": 1})
    with fails(tsr.ERR_NOT_FOUND, "no output 'nope'"):
        tsr.Trainer(g, {"output": "nope"}, None)
    with fails(tsr.ERR_INVALID_ARGUMENT, "label_smoothing must be in"):
        tsr.Trainer(g, {"label_smoothing": 1.5}, None)
    with fails(tsr.ERR_INVALID_ARGUMENT, "t_max >= 1"):
        tsr.Trainer(g, None, {"schedule": "cosine"})
    tr = tsr.Trainer(g, None, None)
    with pytest.raises(tsr.TesseraError, match="no moving average") as err:
        tr.use_ema(True)
    assert err.value.status == tsr.ERR_INVALID_ARGUMENT

def state(tr, tmp_path):
    """Everything a trainer holds (parameters, optimizer slots, step and epoch counts, the
    schedule, the Dropout generator), as its checkpoint's bytes."""
    path = tmp_path / "state.ckpt"
    tr.save_checkpoint(path)
    return path.read_bytes()


def test_failed_calls_leave_the_trainer_as_it_was(tmp_path):
    g, _, _ = mlp(np.float32, dropout=0.3)
    tr = tsr.Trainer(g, None, {"kind": "adam", "lr": 0.01, "ema_decay": 0.9}, seed=3)
    x, lab = batches(np.float32, 1)[0]
    tr.step([x], lab)
    before = state(tr, tmp_path)
    params = tr.params()
    for call, status, message in (
        (lambda: tr.step([x], lab.astype(np.float32)), tsr.ERR_DTYPE,
         "input 'target' must be int64, got float32"),
        (lambda: tr.step([x], np.array([0, 1, 2, 3])), tsr.ERR_INVALID_ARGUMENT,
         r"node 'loss' \(SoftmaxCrossEntropy\): label 3 at position 3 is out of range"),
        (lambda: tr.step([x[:, :4]], lab), tsr.ERR_SHAPE,
         r"input 'x' must have shape \[s0, 5\], got \[4, 4\]"),
        (lambda: tr.step([x], lab[:3]), tsr.ERR_SHAPE, "input 'target' dim 0 .* is 3"),
        (lambda: tr.step([x, x], lab), tsr.ERR_INVALID_ARGUMENT, "1 inputs, 2 were given"),
        (lambda: tr.set_param("w1", np.zeros((5, 6), np.float32)), tsr.ERR_SHAPE,
         r"'w1' is float32 \[6, 5\], the tensor given is float32 \[5, 6\]"),
        (lambda: tr.set_param("w1", np.zeros((6, 5))), tsr.ERR_DTYPE,
         r"'w1' is float32 \[6, 5\], the tensor given is float64 \[6, 5\]"),
        (lambda: tr.set_param("zz", np.zeros(3, np.float32)), tsr.ERR_NOT_FOUND,
         "the trainer has no parameter 'zz'"),
    ):
        with pytest.raises(tsr.TesseraError, match=message) as err:
            call()
        assert err.value.status == status, (message, str(err.value))
        assert state(tr, tmp_path) == before, f"{message}: the trainer changed"
    for n, (trainable, v) in tr.params().items():
        assert params[n][0] == trainable and np.array_equal(params[n][1], v), n
    assert tr.step_count() == 1


# ------------------------------------------------------------ checkpoints


def test_checkpoint_resumes_bit_exactly(tmp_path):
    dtype = np.float32
    opts = {"kind": "adamw", "lr": 0.01, "amsgrad": 1, "weight_decay": 0.01, "ema_decay": 0.5,
            "schedule": "step", "step_size": 1, "gamma": 0.9}
    data = batches(dtype, 8)

    def make():
        g, _, _ = mlp(dtype, dropout=0.4)
        return tsr.Trainer(g, {"kind": "cross_entropy"}, opts, seed=7)

    full = make()
    for i, (x, lab) in enumerate(data):
        full.step([x], lab)
        if i == 3:
            full.epoch_end()
    first = make()
    for x, lab in data[:4]:
        first.step([x], lab)
    first.epoch_end()
    path = tmp_path / "run.ckpt"
    first.save_checkpoint(path)
    del first
    resumed = make()
    resumed.load_checkpoint(path)
    assert resumed.step_count() == 4
    for x, lab in data[4:]:
        resumed.step([x], lab)
    a, b = full.params(), resumed.params()
    for n in a:
        assert np.array_equal(a[n][1], b[n][1]), n
    full.use_ema(True)
    resumed.use_ema(True)
    a, b = full.params(), resumed.params()
    for n in a:
        assert np.array_equal(a[n][1], b[n][1]), n
    assert full.lr() == resumed.lr()


def test_checkpoint_errors(tmp_path):
    g, _, _ = mlp(np.float32)
    tr = tsr.Trainer(g, None, {"kind": "adam"})
    x, lab = batches(np.float32, 1)[0]
    tr.step([x], lab)
    path = tmp_path / "c.ckpt"
    tr.save_checkpoint(path)
    blob = path.read_bytes()
    before = state(tr, tmp_path)
    bad = tmp_path / "bad"
    for data, msg in ((blob[:len(blob) // 2], "the checkpoint is corrupt or truncated"),
                      (blob[:5], "not a Tessera checkpoint"),
                      (blob[:100] + bytes([blob[100] ^ 1]) + blob[101:],
                       "the checkpoint is corrupt or truncated")):
        bad.write_bytes(data)
        with pytest.raises(tsr.TesseraError, match=f"{bad}: {msg}") as err:
            tr.load_checkpoint(bad)
        assert err.value.status == tsr.ERR_PARSE
    with pytest.raises(tsr.TesseraError, match=f"{tmp_path / 'missing'}: cannot open") as err:
        tr.load_checkpoint(tmp_path / "missing")
    assert err.value.status == tsr.ERR_IO
    assert state(tr, tmp_path) == before, "a failed load changed the trainer"
    sgd = tsr.Trainer(mlp(np.float32)[0], None, {"kind": "sgd"})
    sgd_before = state(sgd, tmp_path)
    with pytest.raises(tsr.TesseraError, match=f"{path}: the checkpoint was written by Adam, "
                                               "this trainer uses SGD") as err:
        sgd.load_checkpoint(path)
    assert err.value.status == tsr.ERR_INVALID_ARGUMENT
    assert state(sgd, tmp_path) == sgd_before
    g64, _, _ = mlp(np.float64)
    with pytest.raises(tsr.TesseraError, match="parameter 'w1' is float32 in the checkpoint "
                                               "but float64 in the model") as err:
        tsr.Trainer(g64, None, {"kind": "adam"}).load_checkpoint(path)
    assert err.value.status == tsr.ERR_DTYPE
    (tmp_path / "state.ckpt").unlink()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p], "temporary files left behind"


# ------------------------------------------------------------ ONNX models


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.conv2 = torch.nn.Conv2d(6, 4, 3, stride=2)
        self.bn2 = torch.nn.BatchNorm2d(4, momentum=0.3)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def export(model, x, path):
    model.eval()
    torch.onnx.export(model, torch.from_numpy(x), str(path), opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)


def assert_backends(tr, onnx_path):
    """The cpu device's training step runs every convolution, forward and backward, on
    oneDNN (the gradient nodes of node N are named N/grad), and training-mode BatchNorm
    and the Relu gradients on the cpu backend's own kernels."""
    import onnx
    nodes = onnx.load(str(onnx_path)).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    assert convs
    counts = tr.step_backend_counts()
    for name in convs:
        assert tr.step_node_backend(name) == "dnnl", name
        assert tr.step_node_backend(f"{name}/grad") == "dnnl", f"{name}/grad"
    for n in nodes:
        if n.op_type == "BatchNormalization":
            assert tr.step_node_backend(n.name) == "cpu", n.name
        if n.op_type in ("BatchNormalization", "Relu"):
            assert tr.step_node_backend(f"{n.name}/grad") == "cpu", f"{n.name}/grad"
    # forward, weight gradient, and the input gradient of all but the first
    assert counts.get("dnnl", 0) >= 3 * len(convs) - 1, counts


@pytest.mark.parametrize("device,dtype,tied", [("ref", np.float64, False),
                                               ("cpu", np.float32, False),
                                               ("cpu", np.float32, True)])
def test_cnn_with_batchnorm_trains_like_torch_and_saves_onnx(tmp_path, device, dtype, tied):
    """tied: freshly initialized BatchNorms, whose equal initializers PyTorch's
    exporter merges into one, given to the others through Identity nodes; the
    trainer unties them again, and the saved model has them all.

    On ref in float64 against PyTorch in float64. The cpu device takes float32 only (in
    float64 every node falls back to ref): there, against PyTorch in float64 from the same
    float32 weights, to a tolerance derived from PyTorch's own float32 run."""
    torch.manual_seed(0)
    model = SmallCNN()
    if not tied:
        randomize_bn(model)
    models = {np.float64: model.double()}
    if dtype == np.float32:
        models[np.float32] = copy.deepcopy(model).float()
        models[np.float64] = copy.deepcopy(models[np.float32]).double()
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 3, 9, 9)).astype(dtype)
    export(copy.deepcopy(models[dtype]), x0, tmp_path / "cnn.onnx")
    tr = tsr.Trainer(tsr.Graph.load(tmp_path / "cnn.onnx"), {"kind": "cross_entropy"},
                     {"kind": "sgd", "lr": 0.05, "momentum": 0.9}, device=device, threads=2)
    initial = {n: v.astype(np.float64) for n, (_, v) in tr.params().items()}
    optims = {}
    for d, m in models.items():
        m.train()
        optims[d] = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    for k in range(4):
        x = rng.standard_normal((3, 3, 9, 9)).astype(dtype)
        lab = rng.integers(0, 5, 3)
        loss = tr.step([x], lab)
        ref = {}
        for d, m in models.items():
            optims[d].zero_grad()
            tl = torch.nn.functional.cross_entropy(m(torch.from_numpy(x.astype(d))),
                                                   torch.from_numpy(lab))
            tl.backward()
            optims[d].step()
            ref[d] = tl.item()
        atol = (1e-6 * max(1.0, abs(ref[np.float64])) if dtype == np.float64 else
                derived_tolerance(ref[np.float32], ref[np.float64], max(1.0, abs(ref[np.float64]))))
        assert abs(loss - ref[np.float64]) <= atol, f"step {k}: loss {loss} vs {ref[np.float64]}"
    if device == "cpu":
        assert_backends(tr, tmp_path / "cnn.onnx")
    got = tr.params()
    sd = {d: m.state_dict() for d, m in models.items()}
    for name, (trainable, v) in got.items():
        assert trainable == (not name.endswith(("running_mean", "running_var"))), name
        update = v.astype(np.float64) - initial[name]
        want = sd[np.float64][name].numpy() - initial[name]
        resolution = max(float(np.abs(initial[name]).max()),
                         float(np.abs(initial[name] + want).max()))
        if dtype == np.float64:
            # ONNX stores BatchNorm's momentum as a float32 attribute
            atol = ((1e-9 if trainable else 1e-6) * float(np.abs(want).max()) +
                    8 * float(np.finfo(np.float64).eps) * resolution)
        else:
            atol = derived_tolerance(sd[np.float32][name].numpy().astype(np.float64) -
                                     initial[name], want, resolution)
        # A bias before a training-mode BatchNorm has a zero gradient: rounding noise only.
        assert_update(update, want, name, atol, can_be_zero=name in ("conv.bias", "conv2.bias"))
    x = rng.standard_normal((2, 3, 9, 9)).astype(dtype)
    ref = {}
    for d, m in models.items():
        m.eval()
        with torch.no_grad():
            ref[d] = m(torch.from_numpy(x.astype(d))).numpy()
    scale = float(np.abs(ref[np.float64]).max())
    # the running statistics, through the float32 momentum, round at 1e-8
    atol = (1e-6 * scale if dtype == np.float64 else
            derived_tolerance(ref[np.float32], ref[np.float64], scale))
    _, out = tr.evaluate([x])
    assert np.abs(out - ref[np.float64]).max() <= atol
    tr.save_onnx(tmp_path / "cnn.onnx", tmp_path / "trained.onnx")
    (reloaded,) = tsr.run_onnx(tmp_path / "trained.onnx", [x])
    assert np.abs(reloaded - ref[np.float64]).max() <= atol
    import onnx
    names = {i.name for i in onnx.load(str(tmp_path / "trained.onnx")).graph.initializer}
    assert set(got) <= names
    assert tr.stats().arena_bytes > 0


def resnet18_steps(tmp_path, kind, device, dtype, steps):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    randomize_bn(model)
    models = {np.float64: model.double()}
    if dtype == np.float32:
        models[np.float32] = copy.deepcopy(model).float()
        models[np.float64] = copy.deepcopy(models[np.float32]).double()
    rng = np.random.default_rng(1)
    export(copy.deepcopy(models[dtype]), rng.standard_normal((2, 3, 48, 48)).astype(dtype),
           tmp_path / "r18.onnx")
    if kind == "sgd":
        opts = {"kind": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
        make = lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4)  # noqa
    else:
        opts = {"kind": "adam", "lr": 1e-3}
        make = lambda p: torch.optim.Adam(p, lr=1e-3)  # noqa
    tr = tsr.Trainer(tsr.Graph.load(tmp_path / "r18.onnx"), {"kind": "cross_entropy"}, opts,
                     device=device, threads=2)
    initial = {n: v.astype(np.float64) for n, (_, v) in tr.params().items()}
    optims = {d: make(m.parameters()) for d, m in models.items()}
    for m in models.values():
        m.train()
    for _ in range(steps):
        x = rng.standard_normal((2, 3, 48, 48)).astype(dtype)
        lab = rng.integers(0, 10, 2)
        tr.step([x], lab)
        for d, m in models.items():
            optims[d].zero_grad()
            torch.nn.functional.cross_entropy(m(torch.from_numpy(x.astype(d))),
                                              torch.from_numpy(lab)).backward()
            optims[d].step()
    if device == "cpu":
        assert_backends(tr, tmp_path / "r18.onnx")
    sd = {d: m.state_dict() for d, m in models.items()}
    for name, (_, v) in tr.params().items():
        want = sd[np.float64][name].numpy() - initial[name]
        if dtype == np.float64:
            # Float64 rounding grows over ten steps to a few 1e-9 of the update with SGD and
            # a few 1e-7 with Adam, which divides gradient elements near zero by their own
            # size. ONNX stores BatchNorm's momentum as a float32 attribute, which the
            # running statistics show at 1e-8.
            atol = 1e-5 * float(np.abs(want).max())
        else:
            resolution = max(float(np.abs(initial[name]).max()),
                             float(np.abs(initial[name] + want).max()))
            atol = derived_tolerance(sd[np.float32][name].numpy().astype(np.float64) -
                                     initial[name], want, resolution)
        assert_update(v.astype(np.float64) - initial[name], want, name, atol)


@pytest.mark.models
@pytest.mark.parametrize("kind,device,dtype,steps", [("sgd", "ref", np.float64, 10),
                                                    ("adam", "ref", np.float64, 10),
                                                    ("sgd", "cpu", np.float32, 2)])
def test_resnet18_steps_match_torch(tmp_path, kind, device, dtype, steps):
    """48x48 images (at 32x32 the last BatchNorm sees two values per channel, whose
    gradient is exactly zero, i.e. pure rounding noise). The updates against PyTorch in
    float64: on ref in float64, over ten steps; on the cpu device (float32 only: oneDNN's
    forward and backward convolutions) to a tolerance derived from how far PyTorch's own
    float32 run strays from its float64 run. That grows with every step of a batch-2
    BatchNorm network, to the size of the update itself after ten (PyTorch's float32 run is
    then no closer to its float64 run than a wrong answer; on an AVX2-only Zen 3 already
    3 % of conv1's update after three steps, which voids the check), so two steps, of SGD:
    Adam's first steps divide each gradient element by its own size, which turns the rounding noise
    of gradients that are nearly zero into whole updates."""
    resnet18_steps(tmp_path, kind, device, dtype, steps)

"""Training: training-mode BatchNorm and Dropout, losses, optimizers, schedules,
EMA, checkpoints and trained ONNX files, each against PyTorch (torch.nn,
torch.optim) or against an uninterrupted run."""

import io
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
    with pytest.raises(tsr.TesseraError, match="more than one value per channel"):
        tsr.run_op("BatchNormTrain", [x, p, p, p, p], domain=T)
    with pytest.raises(tsr.TesseraError, match="has 4 elements but X has 3 channels"):
        q = np.ones(4, np.float32)
        tsr.run_op("BatchNormTrain", [np.ones((2, 3), np.float32), q, p, p, p], domain=T)
    with pytest.raises(tsr.TesseraError, match="momentum must be in"):
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
    with pytest.raises(tsr.TesseraError, match="ratio must be in"):
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
    with pytest.raises(tsr.TesseraError, match="out of range for 3 classes"):
        tsr.run_op("SoftmaxCrossEntropy", [x, np.array([0, 3], np.int64)], domain=T)
    with pytest.raises(tsr.TesseraError, match="labels must have rank 1"):
        tsr.run_op("SoftmaxCrossEntropy", [x, np.zeros((2, 3), np.int64)], domain=T)
    with pytest.raises(tsr.TesseraError, match="reduction 'none'"):
        tsr.run_op("SoftmaxCrossEntropy", [x, np.zeros(2, np.int64)], {"reduction": "none"},
                   domain=T)
    with pytest.raises(tsr.TesseraError, match="shapes"):
        tsr.run_op("RegressionLoss", [x, np.zeros((3, 2), np.float32)], domain=T)
    with pytest.raises(tsr.TesseraError, match="loss kind 'l3'"):
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

    def forward(x):
        h = torch.relu(x @ params["w1"].T + params["b1"])
        return h @ params["w2"] + params["b2"]
    return g, params, forward


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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(OPTIM_CASES))
def test_optimizer_matches_torch(case, dtype):
    opts, make = OPTIM_CASES[case]
    g, params, forward = mlp(dtype)
    tr = tsr.Trainer(g, {"kind": "cross_entropy"}, opts)
    topt = make(list(params.values()))
    for x, lab in batches(dtype, 10):
        loss = tr.step([x], lab)
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(forward(torch.tensor(x)), torch.tensor(lab))
        tl.backward()
        topt.step()
        close(loss, tl.item(), dtype, "loss")
    got = tr.params()
    for name, p in params.items():
        close(got[name][1], p.detach().numpy(), dtype if dtype == np.float64 else np.float32,
              name)
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
    for _ in range(8):
        x = rng.standard_normal((4, 5))
        t = rng.standard_normal((4, 3))
        loss = tr.step([x], t)
        topt.zero_grad()
        tl = torch.nn.functional.huber_loss(forward(torch.tensor(x)), torch.tensor(t), delta=0.5,
                                            reduction="sum")
        tl.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 0.3)
        topt.step()
        close(loss, tl.item(), dtype, "loss")
    got = tr.params()
    for name, p in params.items():
        close(got[name][1], p.detach().numpy(), dtype, name)


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
                tr.step([x], lab)
                topt.zero_grad()
                torch.nn.functional.cross_entropy(forward(torch.tensor(x)),
                                                  torch.tensor(lab)).backward()
                topt.step()
            tr.epoch_end()
            ts.step()
        got = tr.params()
        for name, p in params.items():
            close(got[name][1], p.detach().numpy(), dtype, name)
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
    with pytest.raises(tsr.TesseraError, match="needs a metric"):
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
    with pytest.raises(tsr.TesseraError, match="Nesterov momentum needs momentum > 0"):
        tsr.Trainer(g, None, {"nesterov": 1})
    with pytest.raises(tsr.TesseraError, match="no output 'nope'"):
        tsr.Trainer(g, {"output": "nope"}, None)
    with pytest.raises(tsr.TesseraError, match="label_smoothing must be in"):
        tsr.Trainer(g, {"label_smoothing": 1.5}, None)
    with pytest.raises(tsr.TesseraError, match="t_max >= 1"):
        tsr.Trainer(g, None, {"schedule": "cosine"})
    tr = tsr.Trainer(g, None, None)
    x = np.zeros((4, 5), np.float32)
    with pytest.raises(tsr.TesseraError, match="must be int64"):
        tr.step([x], np.zeros(4, np.float32))
    with pytest.raises(tsr.TesseraError, match="out of range"):
        tr.step([x], np.array([0, 1, 2, 3]))
    assert tr.step_count() == 0, "a failed step must change nothing"
    with pytest.raises(tsr.TesseraError, match="no parameter 'zz'"):
        tr.set_param("zz", np.zeros(3, np.float32))
    with pytest.raises(tsr.TesseraError, match="no moving average"):
        tr.use_ema(True)


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
    before = tr.params()
    for bad, msg in ((blob[:len(blob) // 2], "corrupt or truncated"),
                     (blob[:5], "not a Tessera checkpoint"),
                     (blob[:100] + bytes([blob[100] ^ 1]) + blob[101:], "corrupt or truncated")):
        (tmp_path / "bad").write_bytes(bad)
        with pytest.raises(tsr.TesseraError, match=msg):
            tr.load_checkpoint(tmp_path / "bad")
    sgd = tsr.Trainer(mlp(np.float32)[0], None, {"kind": "sgd"})
    with pytest.raises(tsr.TesseraError, match="written by Adam, this trainer uses SGD"):
        sgd.load_checkpoint(path)
    g64, _, _ = mlp(np.float64)
    with pytest.raises(tsr.TesseraError, match="float32 in the checkpoint but float64"):
        tsr.Trainer(g64, None, {"kind": "adam"}).load_checkpoint(path)
    with pytest.raises(tsr.TesseraError, match="cannot open"):
        tr.load_checkpoint(tmp_path / "missing")
    after = tr.params()
    for n in before:
        assert np.array_equal(before[n][1], after[n][1])
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


@pytest.mark.parametrize("device,tied", [("ref", False), ("cpu", False), ("cpu", True)])
def test_cnn_with_batchnorm_trains_like_torch_and_saves_onnx(tmp_path, device, tied):
    """tied: freshly initialized BatchNorms, whose equal initializers PyTorch's
    exporter merges into one, given to the others through Identity nodes; the
    trainer unties them again, and the saved model has them all."""
    torch.manual_seed(0)
    model = SmallCNN().double()
    if not tied:
        randomize_bn(model)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 3, 9, 9))
    export(model, x0, tmp_path / "cnn.onnx")
    tr = tsr.Trainer(tsr.Graph.load(tmp_path / "cnn.onnx"), {"kind": "cross_entropy"},
                     {"kind": "sgd", "lr": 0.05, "momentum": 0.9}, device=device, threads=2)
    model.train()
    topt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(4):
        x = rng.standard_normal((3, 3, 9, 9))
        lab = rng.integers(0, 5, 3)
        loss = tr.step([x], lab)
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(lab))
        tl.backward()
        topt.step()
        assert abs(loss - tl.item()) < 1e-6 * max(1.0, abs(tl.item()))
    got = tr.params()
    sd = model.state_dict()
    for name, (trainable, v) in got.items():
        assert trainable == (not name.endswith(("running_mean", "running_var"))), name
        # ONNX stores BatchNorm's momentum as a float32 attribute
        np.testing.assert_allclose(v, sd[name].numpy(), rtol=1e-6, atol=1e-6, err_msg=name)
    model.eval()
    x = rng.standard_normal((2, 3, 9, 9))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    _, out = tr.evaluate([x])
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    tr.save_onnx(tmp_path / "cnn.onnx", tmp_path / "trained.onnx")
    (reloaded,) = tsr.run_onnx(tmp_path / "trained.onnx", [x])
    np.testing.assert_allclose(reloaded, ref, rtol=1e-6, atol=1e-6)
    import onnx
    names = {i.name for i in onnx.load(str(tmp_path / "trained.onnx")).graph.initializer}
    assert set(got) <= names
    assert tr.stats().arena_bytes > 0


def resnet18_steps(tmp_path, kind):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).double()
    randomize_bn(model)
    rng = np.random.default_rng(1)
    export(model, rng.standard_normal((2, 3, 48, 48)), tmp_path / "r18.onnx")
    if kind == "sgd":
        opts = {"kind": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
        topt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    else:
        opts = {"kind": "adam", "lr": 1e-3}
        topt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tr = tsr.Trainer(tsr.Graph.load(tmp_path / "r18.onnx"), {"kind": "cross_entropy"}, opts,
                     device="cpu", threads=2)
    model.train()
    for _ in range(10):
        x = rng.standard_normal((2, 3, 48, 48))
        lab = rng.integers(0, 10, 2)
        tr.step([x], lab)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                          torch.from_numpy(lab)).backward()
        topt.step()
    sd = model.state_dict()
    for name, (_, v) in tr.params().items():
        ref = sd[name].numpy()
        err = np.abs(v - ref).max() / max(np.abs(ref).max(), 1e-12)
        assert err < 1e-4, f"{name}: relative error {err:.3g}"


@pytest.mark.models
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_resnet18_ten_steps_match_torch(tmp_path, kind):
    """float64, 48x48 images: in float32, rounding differences of the backward
    pass grow over ten steps of a batch-2 BatchNorm network beyond 1e-4 in
    PyTorch itself (its float32 run differs from its float64 run as much),
    and at 32x32 the last BatchNorm sees two values per channel, whose
    gradient is exactly zero, i.e. pure rounding noise."""
    resnet18_steps(tmp_path, kind)

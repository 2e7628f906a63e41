"""Models exported by PyTorch for training (torch.onnx.export(..., training=TRAINING)):
BatchNormalization's training forms (five outputs before opset 14, training_mode=1 from 14)
and Dropout with training_mode import as Tessera's BatchNormTrain and DropoutTrain, so that
tessera.Session computes what PyTorch's train mode computes (batch statistics, the
running-average update, a dropout mask) and `tessera train` trains such a file exactly as it
trains the same model exported by tessera.export_for_training."""

import copy
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import tessera
from test_cli import tessera as tessera_cli
from test_train_cli import make_data, read_log

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def small_cnn(seed=0, p=0.0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Dropout(p),
        torch.nn.Linear(4 * 4 * 4, 3))


def training_export(model, x, opset, f=None):
    f = f if f is not None else io.BytesIO()
    model = copy.deepcopy(model).train()
    torch.onnx.export(model, x, f, opset_version=opset, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return f.getvalue() if isinstance(f, io.BytesIO) else f


@pytest.mark.parametrize("opset", [13, 14, 15])
def test_batchnorm_training_form_runs_as_pytorch_trains(opset):
    model = small_cnn().double()
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    data = training_export(model, x, opset)
    ops = tessera.Graph.from_bytes(data).stats()["op_counts"]
    assert ops.get("BatchNormTrain") == 1 and "BatchNormalization" not in ops, ops
    eager = copy.deepcopy(model).train()
    with torch.no_grad():
        want = eager(x).numpy()
    (got,) = tessera.Session(data, device="ref").run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_running_statistics_update_as_onnx_defines_it():
    """Y and the running-mean/var outputs of a five-output BatchNormalization made with
    onnx.helper, against numpy: batch statistics, running = m * running + (1 - m) * batch,
    the running variance unbiased."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 2))
    scale, bias = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((scale, "s"), (bias, "b"), (mean, "m"), (var, "v"))]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"],
                            ["y", "m_out", "v_out", "saved_mean", "saved_var"], epsilon=2.0**-10,
                            momentum=0.75)  # float32-exact: ONNX float attributes are float32
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 11, x.shape)],
                          [helper.make_tensor_value_info(n, 11, None)
                           for n in ("y", "m_out", "v_out", "saved_mean")], inits)
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    y, m_out, v_out, saved_mean = tessera.Session(data, device="ref").run(None, {"x": x})
    bm, bv = x.mean((0, 2, 3)), x.var((0, 2, 3))
    c = (1, 3, 1, 1)
    want = (x - bm.reshape(c)) / np.sqrt(bv.reshape(c) + 2.0**-10) * scale.reshape(c) + \
        bias.reshape(c)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(saved_mean, bm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m_out, 0.75 * mean + 0.25 * bm, rtol=1e-12, atol=1e-12)
    unbiased = x.var((0, 2, 3), ddof=1)
    np.testing.assert_allclose(v_out, 0.75 * var + 0.25 * unbiased, rtol=1e-12, atol=1e-12)

    # saved_var (ONNX's) is not Tessera's saved_inv_std: reading it is an error.
    g.output.append(helper.make_tensor_value_info("saved_var", 11, None))
    bad = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    with pytest.raises(tessera.Error, match="saved_var"):
        tessera.Session(bad)


def test_dropout_training_mode_draws_a_mask():
    # 0.25: the export writes the ratio as a float32 constant
    model = torch.nn.Sequential(torch.nn.Linear(3, 2000), torch.nn.Dropout(0.25)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    data = training_export(model, x, 13)
    assert "DropoutTrain" in tessera.Graph.from_bytes(data).stats()["op_counts"]
    (y,) = tessera.Session(data, device="ref").run(None, {"x": x.numpy()})
    with torch.no_grad():
        plain = model.eval()(x).numpy()
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8, kept.mean()
    np.testing.assert_allclose(y[kept], plain[kept] / 0.75, rtol=1e-12)


def test_tessera_train_takes_training_exports(tmp_path):
    """The same model and weights, exported for training by PyTorch's own training mode and
    by tessera.export_for_training: `tessera train` computes the same losses, epoch by
    epoch, and the same trained weights."""
    model = small_cnn(seed=4)
    x0 = torch.zeros(2, 1, 8, 8)
    a = training_export(model, x0, 13, str(tmp_path / "training_mode.onnx"))
    b = tessera.export_for_training(copy.deepcopy(model), x0, tmp_path / "preserve.onnx",
                                    input_names=("x",), output_names=("logits",))
    x, y = make_data(64, 1)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    logs = []
    for src in (a, b):
        out = tmp_path / f"trained_{tmp_path.joinpath(src).stem}.onnx"
        r = tessera_cli("train", src, "--data", tmp_path / "train.npz", "--out", out,
                        "--threads", "1", "--batch", "16", "--optimizer", "sgd", "--lr", "0.1",
                        "--momentum", "0.9", "--seed", "3", "--epochs", "2", "--no-plot")
        assert r.returncode == 0, r.stderr
        logs.append([float(row["train_loss"]) for row in read_log(out.with_suffix(".csv"))])
    assert logs[0] == logs[1], logs
    assert logs[0][1] < logs[0][0]

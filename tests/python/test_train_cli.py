"""`tessera train` end to end: a tiny CNN exported from PyTorch, trained on tiny synthetic data
sets written by the test (.npz stored and deflated, IDX plain and gzipped), then checked
against numpy: the loss goes down, the CSV log has its rows and its validation loss and
accuracy match what numpy computes from the trained ONNX model's logits, the model loads and
runs, --resume continues exactly where a run stopped, and bad data fails with a clear
message, a non-zero exit and no file written.

The binary is $TESSERA_BIN, else $TESSERA_BUILD_DIR/bin/tessera, else build/bin/tessera."""

import csv
import gzip
import re
import shutil
import signal
import struct
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import train_export
import tsr
from test_cli import tessera, tessera_bin

torch = pytest.importorskip("torch")

N_CLASSES = 3
SIZE = 8


def make_model(path, seed=0):
    """conv 4 -> BN -> ReLU -> max pool -> fc 3 on [batch, 1, 8, 8]."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, N_CLASSES))
    return train_export.export(model, torch.zeros(2, 1, SIZE, SIZE), path)


def make_data(n, seed):
    """Images whose class says which third of the rows is bright, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = rng.uniform(0, 0.3, (n, SIZE, SIZE))
    for i, c in enumerate(y):
        x[i, 3 * c:3 * c + 2, :] += 0.7
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


def write_idx(path, array, code=0x08):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(">u1" if code == 0x08 else ">f4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def write_idx_set(directory, prefix, x, y, gz=True):
    directory.mkdir(exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", np.round(x * 255).astype(np.uint8))
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", y.astype(np.uint8))


def train_args(model, data, out, *extra):
    return ["train", model, "--data", data, "--out", out, "--threads", "1", "--batch", "16",
            "--optimizer", "adam", "--lr", "0.01", "--seed", "3", *extra]


def train(model, data, out, *extra):
    return tessera(*train_args(model, data, out, *extra))


def read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def onnx_weights(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def cross_entropy(logits, labels):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def test_npz_training(model_path, tmp_path):
    x, y = make_data(96, 1)
    vx, vy = make_data(40, 2)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    # The validation set: deflated, with [N, 1, 8, 8] samples and int32 labels.
    np.savez_compressed(tmp_path / "val.npz", x=vx[:, None], y=vy.astype(np.int32))
    out = tmp_path / "trained.onnx"
    r = train(model_path, tmp_path / "train.npz", out, "--val", tmp_path / "val.npz",
              "--epochs", "3")
    assert r.returncode == 0, r.stderr
    assert "epoch 3/3" in r.stderr
    rows = read_log(tmp_path / "trained.csv")
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [int(row["step"]) for row in rows] == [6, 12, 18]  # 96 / 16 steps per epoch
    losses = [float(row["train_loss"]) for row in rows]
    assert losses[2] < losses[0], losses
    assert float(rows[-1]["train_acc"]) > 0.8
    # The logged validation numbers against numpy on the trained model's own logits.
    (logits,) = tsr.run_onnx(out, [vx[:, None]])
    assert abs(float(rows[-1]["val_loss"]) - cross_entropy(logits, vy)) < 1e-4
    # Training ran on the default device, this on ref: a sample whose two largest logits are
    # within rounding of each other may be classified either way.
    correct = np.argmax(logits, axis=1) == vy
    top2 = np.sort(logits, axis=1)[:, -2:]
    tied = top2[:, 1] - top2[:, 0] <= 1e-5 * float(np.abs(logits).max())
    val_acc = float(rows[-1]["val_acc"])
    assert np.mean(correct & ~tied) - 1e-9 <= val_acc <= np.mean(correct | tied) + 1e-9
    assert np.mean(correct) > 0.8
    before, after = onnx_weights(model_path), onnx_weights(out)
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_idx_training_and_plot(model_path, tmp_path):
    x, y = make_data(64, 4)
    vx, vy = make_data(32, 5)
    write_idx_set(tmp_path / "d", "train", x, y, gz=True)
    write_idx_set(tmp_path / "d", "t10k", vx, vy, gz=False)
    out = tmp_path / "m.onnx"
    r = train(model_path, tmp_path / "d", out, "--val", tmp_path / "d", "--epochs", "2",
              "--log", tmp_path / "log.csv", "--plot", tmp_path / "curves.png")
    assert r.returncode == 0, r.stderr
    rows = read_log(tmp_path / "log.csv")
    assert len(rows) == 2 and float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    (logits,) = tsr.run_onnx(out, [(np.round(vx * 255) / 255).astype(np.float32)[:, None]])
    assert abs(float(rows[-1]["val_loss"]) - cross_entropy(logits, vy)) < 1e-4
    if shutil.which("gnuplot"):
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "gnuplot" in r.stderr


def test_resume_continues_exactly(model_path, tmp_path):
    x, y = make_data(48, 6)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    data = tmp_path / "train.npz"
    straight = tmp_path / "straight.onnx"
    r = train(model_path, data, straight, "--epochs", "2", "--no-plot")
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "ckpt"
    first = tmp_path / "resumed.onnx"
    r = train(model_path, data, first, "--epochs", "1", "--checkpoint", ckpt, "--no-plot")
    assert r.returncode == 0, r.stderr
    assert len(read_log(tmp_path / "resumed.csv")) == 1
    r = train(model_path, data, first, "--epochs", "2", "--checkpoint", ckpt, "--resume",
              "--no-plot")
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch 1" in r.stderr
    a, b = onnx_weights(straight), onnx_weights(first)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    rows = read_log(tmp_path / "resumed.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [r["train_loss"] for r in rows] == \
        [r["train_loss"] for r in read_log(tmp_path / "straight.csv")]
    # A changed seed cannot continue exactly: refused.
    r = tessera("train", model_path, "--data", data, "--out", first, "--threads", "1",
                "--batch", "16", "--optimizer", "adam", "--seed", "4", "--epochs", "3",
                "--checkpoint", ckpt, "--resume", "--no-plot")
    assert r.returncode == 1, r.stderr
    assert "was made with seed 3," in r.stderr and "this run has 4," in r.stderr, r.stderr
    assert "(--seed differs)" in r.stderr, r.stderr


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_stops_after_the_epoch(model_path, tmp_path, sig):
    """The first SIGINT or SIGTERM ends the run after the epoch in progress: the model
    trained so far is written, the log and checkpoint have that epoch, --resume goes on."""
    x, y = make_data(48, 6)
    data, out, ckpt = tmp_path / "train.npz", tmp_path / "m.onnx", tmp_path / "ckpt"
    np.savez(data, x=x, y=y)
    log = tmp_path / "m.csv"
    args = train_args(model_path, data, out, "--epochs", "1000000", "--checkpoint", ckpt,
                      "--no-plot")
    p = subprocess.Popen([tessera_bin(), *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(read_log(log)) < 1):
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    m = re.search(rf"stopped by {sig} after epoch (\d+) of 1000000; --resume continues", err)
    assert m and "stopping after this epoch" in err, err
    n = int(m.group(1))
    assert f"trained model -> {out}" in stdout
    assert [int(row["epoch"]) for row in read_log(log)] == list(range(1, n + 1))
    tsr.run_onnx(out, [x[:2, None]])
    r = train(model_path, data, out, "--epochs", str(n + 1), "--checkpoint", ckpt, "--resume",
              "--no-plot")
    assert r.returncode == 0, r.stderr
    assert f"resuming after epoch {n}" in r.stderr
    assert len(read_log(log)) == n + 1


def _bad_idx(tmp_path, kind):
    x, y = make_data(20, 7)
    d = tmp_path / "bad"
    write_idx_set(d, "train", x, y, gz=False)
    images = d / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    if kind == "truncated":
        images.write_bytes(raw[:-10])
    elif kind == "magic":
        images.write_bytes(b"\x01\x02" + raw[2:])
    elif kind == "count":
        write_idx(d / "train-labels-idx1-ubyte", y[:-1].astype(np.uint8))
    elif kind == "label":
        y[5] = N_CLASSES
        write_idx(d / "train-labels-idx1-ubyte", y.astype(np.uint8))
    elif kind == "gz-truncated":
        images.unlink()
        write_idx(d / "train-images-idx3-ubyte.gz", np.round(x * 255).astype(np.uint8))
        gz = d / "train-images-idx3-ubyte.gz"
        gz.write_bytes(gz.read_bytes()[:-30])
    return d


def _bad_npz(tmp_path, kind):
    x, y = make_data(20, 8)
    path = tmp_path / "bad.npz"
    if kind == "nan":
        x[3, 2, 1] = np.nan
        np.savez(path, x=x, y=y)
    elif kind == "count":
        np.savez_compressed(path, x=x, y=y[:-2])
    elif kind == "label":
        y[0] = -1
        np.savez(path, x=x, y=y)
    elif kind == "missing":
        np.savez(path, x=x, labels=y)
    elif kind == "shape":
        np.savez(path, x=x[:, :, :5], y=y)
    elif kind == "corrupt":
        np.savez(path, x=x, y=y)
        raw = bytearray(path.read_bytes())
        raw[200] ^= 0xFF  # inside x's data: the CRC no longer matches
        path.write_bytes(bytes(raw))
    return path


BAD_DATA = [
    ("idx", "truncated", "truncated"),
    ("idx", "gz-truncated", "truncated"),
    ("idx", "magic", "bad magic"),
    ("idx", "count", "20 samples but y holds 19"),
    ("idx", "label", "outside the model's 3 classes"),
    ("npz", "nan", "NaN at sample 3"),
    ("npz", "count", "20 samples but y holds 18"),
    ("npz", "label", "label -1 of sample 0"),
    ("npz", "missing", "no array named 'y'"),
    ("npz", "shape", "the model takes [1, 8, 8]"),
    ("npz", "corrupt", "CRC-32"),
]


@pytest.mark.parametrize("fmt,kind,message", BAD_DATA, ids=[f"{f}-{k}" for f, k, _ in BAD_DATA])
def test_bad_data(model_path, tmp_path, fmt, kind, message):
    data = _bad_idx(tmp_path, kind) if fmt == "idx" else _bad_npz(tmp_path, kind)
    out = tmp_path / "out.onnx"
    r = train(model_path, data, out, "--checkpoint", tmp_path / "ck")
    assert r.returncode == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1, r.stderr
    assert not out.exists() and not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "ck").exists()


def test_bad_command_lines(model_path, tmp_path):
    x, y = make_data(8, 9)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cases = [
        (["--data", tmp_path / "d.npz"], "missing --out", 2),
        (["--out", tmp_path / "o.onnx"], "missing --data", 2),
        (["--data", tmp_path / "d.npz", "--out", tmp_path / "o.onnx", "--optimizer", "rmsprop"],
         "sgd, adam or adamw, got 'rmsprop'", 2),
        (["--data", tmp_path / "d.npz", "--out", tmp_path / "o.onnx", "--resume"],
         "--resume needs --checkpoint", 2),
        (["--data", tmp_path / "nowhere", "--out", tmp_path / "o.onnx"],
         f"--data {tmp_path / 'nowhere'}: no such file", 1),
        (["--data", tmp_path / "d.npz", "--out", tmp_path / "no" / "o.onnx"],
         f"the directory '{tmp_path / 'no'}' does not exist", 1),
        (["--data", tmp_path / "d.npz", "--out", tmp_path / "o.onnx", "--checkpoint",
          tmp_path / "ck", "--resume"], f"no checkpoint in {tmp_path / 'ck'}", 1),
    ]
    for args, message, code in cases:
        r = tessera("train", model_path, *args)
        assert r.returncode == code and message in r.stderr, (args, r.returncode, r.stderr)
        assert not (tmp_path / "o.onnx").exists()

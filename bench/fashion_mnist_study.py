"""The Fashion-MNIST pooling study: one small CNN trained with `tessera train` with its two
pooling layers as max pooling, average pooling, DPP lite and DPP full (symmetric; the
ai.tessera DetailPreservingPool op, from tests/python/dpp_torch.py), several seeds each, on
Debian's dataset-fashion-mnist (60,000 training and 10,000 test images, 28x28, IDX). Writes
test accuracy (mean and spread over seeds) and time per epoch to docs/fashion_mnist.md.

    /usr/bin/python3 bench/fashion_mnist_study.py [--epochs 2] [--seeds 3] [--width 8]

Each run: the model is built in PyTorch with torch.manual_seed(seed), exported to ONNX with
its random initialization (BatchNormalization kept as a node), then trained from the command
line:

    tessera train cnn.onnx --data DATA --val DATA --epochs E --batch B --optimizer adam
                  --lr LR --schedule cosine --seed S --no-train-acc --out trained.onnx

--val DATA is the test set (t10k-*), evaluated after every epoch; the accuracy reported is
the one after the last epoch (no model selection on the test set). The time per epoch is
the log's `seconds` column: training only, validation excluded, averaged over the epochs.
--subset N trains on the first N training images (an .npz written once) for quick checks."""

import argparse
import csv
import gzip
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
import dpp_torch  # noqa: E402
import train_export  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")
VARIANTS = {
    "max": "max pooling 2x2",
    "avg": "average pooling 2x2",
    "dpp_lite": "DPP lite 2x2, symmetric",
    "dpp_full": "DPP full 2x2 (3x3 pre-filter), symmetric",
}


def pool(kind, channels):
    if kind == "max":
        return torch.nn.MaxPool2d(2)
    if kind == "avg":
        return torch.nn.AvgPool2d(2)
    return dpp_torch.DetailPreservingPool2d(channels, 2, symmetric=True,
                                            full=kind == "dpp_full")


def make_cnn(kind, width):
    """conv w -> BN -> ReLU -> pool -> conv 2w -> BN -> ReLU -> pool -> fc 128 -> ReLU -> fc 10."""
    c1, c2 = width, 2 * width
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, c1, 3, padding=1), torch.nn.BatchNorm2d(c1), torch.nn.ReLU(),
        pool(kind, c1),
        torch.nn.Conv2d(c1, c2, 3, padding=1), torch.nn.BatchNorm2d(c2), torch.nn.ReLU(),
        pool(kind, c2),
        torch.nn.Flatten(), torch.nn.Linear(c2 * 7 * 7, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))


def export(kind, width, seed, path):
    torch.manual_seed(seed)
    model = make_cnn(kind, width)
    n_params = sum(p.numel() for p in model.parameters())
    train_export.export(model, torch.zeros(2, 1, 28, 28), path, input_names=["image"])
    return n_params


def read_idx_gz(path):
    raw = gzip.open(path, "rb").read()
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(rank)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * rank).reshape(dims)


def subset_npz(n, work):
    path = work / f"train_{n}.npz"
    if not path.exists():
        x = read_idx_gz(DATA / "train-images-idx3-ubyte.gz")[:n]
        y = read_idx_gz(DATA / "train-labels-idx1-ubyte.gz")[:n]
        np.savez(path, x=x, y=y.astype(np.int64))
    return path


def tessera_bin():
    if os.environ.get("TESSERA_BIN"):
        return os.environ["TESSERA_BIN"]
    build = Path(os.environ.get("TESSERA_BUILD_DIR", ROOT / "build"))
    return str(build / "bin" / "tessera")


def train_one(args, kind, seed, data):
    stem = args.work / f"{kind}_s{seed}"
    export(kind, args.width, seed, f"{stem}_init.onnx")
    cmd = [args.tessera, "train", f"{stem}_init.onnx", "--data", str(data), "--val", str(DATA),
           "--epochs", str(args.epochs), "--batch", str(args.batch), "--optimizer", "adam",
           "--lr", str(args.lr), "--schedule", "cosine", "--seed", str(seed),
           "--threads", str(args.threads), "--no-train-acc", "--out", f"{stem}.onnx"]
    if args.device:
        cmd += ["--device", args.device]
    print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"tessera train failed for {kind}, seed {seed}")
    return collect(args, kind, seed)


def collect(args, kind, seed):
    """One run's results from its CSV log, or None when the run has none."""
    path = args.work / f"{kind}_s{seed}.csv"
    if not path.exists():
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if len(rows) != args.epochs:
        return None
    return {
        "acc": float(rows[-1]["val_acc"]),
        "loss": float(rows[-1]["val_loss"]),
        "train_loss": float(rows[-1]["train_loss"]),
        "epoch_s": statistics.mean(float(r["seconds"]) for r in rows),
        "run_s": sum(float(r["seconds"]) + float(r["val_seconds"]) for r in rows),
        "curve": [float(r["val_acc"]) for r in rows],
        "params": sum(p.numel() for p in make_cnn(kind, args.width).parameters()),
    }


def mean_std(values):
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(args, results, n_train, total_s):
    lines = [
        "# Fashion-MNIST: DPP against max and average pooling",
        "",
        "Written by `bench/fashion_mnist_study.py` (rerun it to regenerate this page).",
        "",
        "## Setup",
        "",
        f"- Data: Debian's `dataset-fashion-mnist` ({DATA}), {n_train:,} training images, "
        "the 10,000 test images as the evaluation set; bytes scaled to [0, 1], no "
        "augmentation, no normalization.",
        f"- Model (PyTorch, exported to ONNX with its random initialization): conv 3x3 "
        f"{args.width} -> BatchNorm -> ReLU -> **pool** -> conv 3x3 {2 * args.width} -> "
        "BatchNorm -> ReLU -> **pool** -> fc 128 -> ReLU -> fc 10. Only the two pooling "
        "layers differ between variants: "
        + "; ".join(f"`{k}`: {v}" for k, v in VARIANTS.items() if k in results) + ". "
        "DPP layers are `DetailPreservingPool2d` from `tests/python/dpp_torch.py`, exported "
        "as `ai.tessera::DetailPreservingPool` (alpha = lambda = 1 at the start; full: a "
        "learned 3x3 binomial pre-filter).",
        f"- Training: `tessera train`, Adam, lr {args.lr} with a cosine schedule to 0 over "
        f"{args.epochs} epochs, batch {args.batch}, softmax cross-entropy, shuffled per "
        f"epoch with the run's seed; seeds {', '.join(map(str, range(args.seeds_done)))} (the "
        "seed sets both the PyTorch initialization and the shuffling).",
        "- Test accuracy: after the last epoch (no early stopping or model selection on "
        "the test set).",
        f"- Machine: {cpu_name()}, {args.threads} thread{'s' if args.threads != 1 else ''} "
        f"(`--threads {args.threads}`), "
        f"device `{args.device or 'default'}`; the machine's cores were shared with other "
        f"jobs{args.machine_note}, so times are indicative. Time per epoch: training only "
        "(the log's `seconds`), validation excluded, mean over epochs and seeds.",
        f"- Whole study: {total_s / 60:.1f} minutes of training and evaluation (the sum of "
        "the logs' times, without the exports and data loading).",
        "- Why so small a network and so few epochs: the study had to fit in about 25 "
        "minutes on a shared 2-core machine. In training plans the weights are plan inputs, "
        "not constants, so oneDNN refuses the convolutions (it prepacks constant weights) and "
        "they and their gradients run on the reference kernels; the 32/64-channel network of "
        "the plan trained at about 55 images/s there (2 threads, busy machine). One thread, because with the cores busy "
        "`--threads 2` was 4 to 15 times slower (OpenMP barriers wait for descheduled "
        "threads). Rerun with `--width 32 --epochs 5` where time allows.",
        "",
        "## Results",
        "",
        "| pooling | parameters | test accuracy (mean ± std) | per seed | "
        "time per epoch |",
        "|---|---:|---:|---|---:|",
    ]
    for kind, runs in results.items():
        m, s = mean_std([r["acc"] for r in runs])
        t, _ = mean_std([r["epoch_s"] for r in runs])
        per_seed = ", ".join(f"{100 * r['acc']:.2f}" for r in runs)
        lines.append(f"| {VARIANTS[kind]} | {runs[0]['params']:,} | "
                     f"{100 * m:.2f} % ± {100 * s:.2f} | {per_seed} | {t:.1f} s |")
    lines += ["", "Test accuracy after each epoch (mean over seeds):", "",
              "| pooling | " + " | ".join(f"epoch {e + 1}" for e in range(args.epochs)) + " |",
              "|---|" + "---:|" * args.epochs]
    for kind, runs in results.items():
        curve = np.mean([r["curve"] for r in runs], axis=0)
        lines.append(f"| {kind} | " + " | ".join(f"{100 * a:.2f}" for a in curve) + " |")
    lines += ["", "## What it means", ""] + interpret(results) + [""]
    return "\n".join(lines)


def interpret(results):
    """What the numbers say, computed from them: no verdict is written in advance."""
    stats = {k: mean_std([r["acc"] for r in runs]) for k, runs in results.items()}
    times = {k: statistics.mean(r["epoch_s"] for r in runs) for k, runs in results.items()}
    n_seeds = min(len(runs) for runs in results.values())
    reached = [k for k, (m, _) in stats.items() if m >= 0.90]
    out = [f"- Target (>= 90 % mean test accuracy): reached by {', '.join(reached) or 'none'}."]
    bases = [k for k in ("max", "avg") if k in stats]
    for k in ("dpp_lite", "dpp_full"):
        if k not in stats:
            continue
        m, s = stats[k]
        parts = []
        for b in bases:
            bm, bs = stats[b]
            diff = m - bm
            # The standard error of a difference of two means over n seeds each.
            se = ((s ** 2 + bs ** 2) / n_seeds) ** 0.5 if n_seeds > 1 else float("nan")
            parts.append(f"{100 * diff:+.2f} points against {b}"
                         + (f" (standard error {100 * se:.2f})" if n_seeds > 1 else ""))
        cost = ", ".join(f"{times[k] / times[b]:.1f}x the time per epoch of {b}" for b in bases)
        out.append(f"- {VARIANTS[k]}: {100 * m:.2f} %, " + "; ".join(parts)
                   + (f"; {cost}." if cost else "."))
    if not bases or not any(k in stats for k in ("dpp_lite", "dpp_full")):
        return out
    means = [m for m, _ in stats.values()]
    spread = max(sd for _, sd in stats.values())
    gap = max(means) - min(means)
    dpp_best = max(stats[k][0] for k in ("dpp_lite", "dpp_full") if k in stats)
    base_best = max(stats[b][0] for b in bases)
    claim = "The paper (Saeedan et al., CVPR 2018) claims that DPP at least matches max and " \
            "average pooling."
    if n_seeds < 2:
        out.append(f"- {claim} With one seed there is no spread to judge the differences by "
                   f"(all variants lie within {100 * gap:.2f} points).")
    elif gap <= 2 * spread:
        out.append(f"- {claim} Here all variants lie within {100 * gap:.2f} points of each "
                   f"other, inside about twice the seed-to-seed spread (standard deviations up "
                   f"to {100 * spread:.2f} points): on this small network and short schedule "
                   "DPP matches max and average pooling, consistent with the claim, but the "
                   "study shows no advantage for either; more seeds and epochs would be "
                   "needed to resolve differences of a few tenths of a point.")
    elif dpp_best >= base_best:
        out.append(f"- {claim} Here the better DPP variant leads the better baseline by "
                   f"{100 * (dpp_best - base_best):.2f} points, more than twice the largest "
                   f"seed-to-seed spread ({100 * spread:.2f}): the study supports the claim.")
    else:
        out.append(f"- {claim} Here the better DPP variant trails the better baseline by "
                   f"{100 * (base_best - dpp_best):.2f} points, more than twice the largest "
                   f"seed-to-seed spread ({100 * spread:.2f}): on this setup the study does not "
                   "support the claim.")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--width", type=int, default=8, help="channels of the first conv")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--work", type=Path, default=Path("/tmp/tessera_fashion_mnist"))
    p.add_argument("--tessera", default=tessera_bin())
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "fashion_mnist.md")
    p.add_argument("--machine-note", default="",
                   help="appended to the machine's description, e.g. ' (load average 5)'")
    p.add_argument("--report-only", action="store_true",
                   help="write the page from the logs of an earlier study in --work")
    args = p.parse_args()
    if not (DATA / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"{DATA}: not found; install it with apt-get install "
                         "dataset-fashion-mnist")
    args.work.mkdir(parents=True, exist_ok=True)
    data = subset_npz(args.subset, args.work) if args.subset else DATA
    n_train = args.subset or 60000
    variants = args.variants.split(",")
    results = {k: [] for k in variants}
    # Seeds outermost: a study cut short still has every variant for the seeds done, and the
    # page is rewritten after every seed.
    for seed in range(args.seeds):
        runs = {k: collect(args, k, seed) if args.report_only else train_one(args, k, seed, data)
                for k in variants}
        if any(r is None for r in runs.values()):
            break
        for k, r in runs.items():
            results[k].append(r)
            print(f"{k} seed {seed}: test accuracy {100 * r['acc']:.2f} %, "
                  f"{r['epoch_s']:.1f} s per epoch", flush=True)
        args.seeds_done = seed + 1
        total = sum(r["run_s"] for rs in results.values() for r in rs)
        args.out.write_text(report(args, results, n_train, total))
    if not results[variants[0]]:
        raise SystemExit("no complete seed to report")
    print(args.out.read_text())


if __name__ == "__main__":
    main()

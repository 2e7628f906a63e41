"""The full-size DPP study (issue 11 item 8): does Detail-Preserving Pooling beat max, average
and strided-convolution downsampling on Fashion-MNIST? Each network is built in PyTorch,
wrapped by `tessera.optimize` and trained in PyTorch's own loop (Adam, cosine schedule,
cross-entropy; forward and backward run by Tessera), the downsampling layers being one of:

    max        MaxPool2d 2x2            avg       AvgPool2d 2x2
    strided    the convolution before it at stride 2 (no pooling layer)
    dpp_lite   tessera.nn.DetailPreservingPool2d 2x2, symmetric
    dpp_full   the same with the 3x3 pre-filter

Two networks: `cnn`, conv 32 -> BN -> ReLU -> down -> conv 64 -> BN -> ReLU -> down -> fc 128
-> fc 10; `resnet`, a 3x3 stem of 16 channels and three stages of two basic blocks (16, 32,
64 channels) whose second and third stages start by downsampling, then global average
pooling and fc 10. Seed s sets the initialization and the order of the batches, so variant
runs of one seed start from the same random state and see the same batches (a paired
comparison). Test accuracy (Debian's dataset-fashion-mnist, 10,000 images) is measured after
every epoch; the figure reported is the one after the last epoch (no selection on the test
set).

    /usr/bin/python3 bench/dpp_study.py --nets cnn resnet --epochs 10 --seeds 5

Each finished run is one JSON line in WORK/runs.jsonl (default build/dpp_study), and runs
already there are not repeated: a study of hours can stop and go on. --report-only writes the
Markdown report (mean +- std per variant, each variant against max pooling seed by seed) and
WORK/curves.png (gnuplot) from what is there."""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
import tessera  # noqa: E402
from fashion_mnist_study import DATA, read_idx_gz  # noqa: E402
from tessera.nn import DetailPreservingPool2d  # noqa: E402

VARIANTS = ["max", "avg", "strided", "dpp_lite", "dpp_full"]
NETS = ["cnn", "resnet"]


def down(kind, channels):
    if kind == "max":
        return torch.nn.MaxPool2d(2)
    if kind == "avg":
        return torch.nn.AvgPool2d(2)
    return DetailPreservingPool2d(channels, 2, symmetric=True, full=kind == "dpp_full")


def conv_bn_relu(cin, cout, stride):
    return [torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout),
            torch.nn.ReLU()]


def make_cnn(kind):
    layers = []
    for cin, cout in ((1, 32), (32, 64)):
        layers += conv_bn_relu(cin, cout, 2 if kind == "strided" else 1)
        if kind != "strided":
            layers.append(down(kind, cout))
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 128),
                               torch.nn.ReLU(), torch.nn.Linear(128, 10))


class Block(torch.nn.Module):
    """A basic block; `kind` set: it downsamples (strided convolutions, or the pooling layer
    in front of it) and widens from cin to cout, with a 1x1 convolution on the shortcut."""

    def __init__(self, cin, cout, kind=None):
        super().__init__()
        stride = 2 if kind == "strided" else 1
        self.pool = down(kind, cin) if kind not in (None, "strided") else torch.nn.Identity()
        self.body = torch.nn.Sequential(*conv_bn_relu(cin, cout, stride),
                                        torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                        torch.nn.BatchNorm2d(cout))
        self.short = torch.nn.Identity() if kind is None else torch.nn.Sequential(
            torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        x = self.pool(x)
        return torch.relu(self.body(x) + self.short(x))


def make_resnet(kind):
    return torch.nn.Sequential(*conv_bn_relu(1, 16, 1), Block(16, 16), Block(16, 16),
                               Block(16, 32, kind), Block(32, 32), Block(32, 64, kind),
                               Block(64, 64), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(64, 10))


def load(split, subset):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx_gz(DATA / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx_gz(DATA / f"{prefix}-labels-idx1-ubyte.gz")
    if subset:
        x, y = x[:subset], y[:subset]
    x = torch.from_numpy((x.astype(np.float32) / 255.0 - 0.2860) / 0.3530).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))


def accuracy(model, x, y):
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            right += int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
    model.train()
    return right / len(x)


def train_one(args, net, kind, seed, data):
    torch.manual_seed(seed)
    model = (make_cnn if net == "cnn" else make_resnet)(kind)
    (xt, yt), (xv, yv) = data
    fast = tessera.optimize(model, (xt[:args.batch],))
    opt = torch.optim.Adam(fast.parameters(), lr=args.lr)
    steps = args.epochs * (len(xt) // args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    order = torch.Generator().manual_seed(seed)
    curve, seconds = [], 0.0
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xt), generator=order)
        t0 = time.perf_counter()
        total = 0.0
        for b in range(len(xt) // args.batch):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(fast(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss)
        seconds += time.perf_counter() - t0
        curve.append(accuracy(fast, xv, yv))
        print(f"  {net} {kind} seed {seed} epoch {epoch + 1}: train loss "
              f"{total / (len(xt) // args.batch):.4f}, test accuracy {curve[-1]:.4f}",
              flush=True)
    return {"net": net, "variant": kind, "seed": seed, "epochs": args.epochs,
            "batch": args.batch, "lr": args.lr, "train_images": len(xt), "test_acc": curve,
            "seconds_per_epoch": seconds / args.epochs,
            "params": sum(p.numel() for p in model.parameters())}


def read_runs(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_std(values):
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plot(runs, work):
    """Mean test accuracy per epoch, one panel per network, one curve per variant."""
    if not shutil.which("gnuplot"):
        print("no gnuplot: no plot", file=sys.stderr)
        return None
    nets = [n for n in NETS if any(r["net"] == n for r in runs)]
    cmds = ["set terminal pngcairo size 1100,420 font ',10'",
            f"set output '{work / 'curves.png'}'", f"set multiplot layout 1,{len(nets)}",
            "set xlabel 'epoch'", "set ylabel 'test accuracy (mean over seeds)'",
            "set key bottom right", "set grid", "set termoption noenhanced", "set xtics 1"]
    for net in nets:
        series = []
        for kind in VARIANTS:
            rs = [r for r in runs if r["net"] == net and r["variant"] == kind]
            if not rs:
                continue
            n = min(len(r["test_acc"]) for r in rs)
            path = work / f"curve_{net}_{kind}.dat"
            path.write_text("".join(f"{e + 1} {statistics.mean(r['test_acc'][e] for r in rs)}\n"
                                    for e in range(n)))
            series.append(f"'{path}' with linespoints title '{kind}'")
        cmds += [f"set title '{net}'", "plot " + ", ".join(series)]
    subprocess.run(["gnuplot"], input="\n".join(cmds) + "\n", text=True, check=True)
    return work / "curves.png"


def report(runs, work):
    lines = []
    for net in NETS:
        by = {k: sorted((r for r in runs if r["net"] == net and r["variant"] == k),
                        key=lambda r: r["seed"]) for k in VARIANTS}
        if not any(by.values()):
            continue
        base = {r["seed"]: r["test_acc"][-1] for r in by["max"]}
        lines += [f"### {net}", "",
                  "| variant | runs | epochs | test accuracy % (mean +- std) | s / epoch (median) | "
                  "against max, seed by seed: mean difference (points) | better / worse |",
                  "|---|---|---|---|---|---|---|"]
        for kind in VARIANTS:
            rs = by[kind]
            if not rs:
                continue
            m, s = mean_std([100 * r["test_acc"][-1] for r in rs])
            pair = [100 * (r["test_acc"][-1] - base[r["seed"]]) for r in rs if r["seed"] in base]
            diff = "-" if kind == "max" or not pair else "{:+.2f} +- {:.2f}".format(
                *mean_std(pair))
            wins = "-" if kind == "max" or not pair else \
                f"{sum(d > 0 for d in pair)} / {sum(d < 0 for d in pair)}"
            sec = statistics.median(r["seconds_per_epoch"] for r in rs)
            lines.append(f"| {kind} | {len(rs)} | {rs[0]['epochs']} | {m:.2f} +- {s:.2f} | "
                         f"{sec:.1f} | {diff} | {wins} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", choices=NETS, default=NETS)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch's; Tessera uses every core")
    ap.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "dpp_study")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if not DATA.exists():
        sys.exit(f"{DATA} is missing: apt-get install dataset-fashion-mnist")
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "runs.jsonl"
    torch.set_num_threads(args.threads)
    if not args.report_only:
        data = load("train", args.subset), load("test", 0)
        for seed in range(args.seeds):
            for net in args.nets:
                for kind in args.variants:
                    done = read_runs(log)
                    if any(r["net"] == net and r["variant"] == kind and r["seed"] == seed and
                           r["epochs"] == args.epochs and r["train_images"] == len(data[0][0])
                           for r in done):
                        continue
                    print(f"{net} {kind} seed {seed}", flush=True)
                    run = train_one(args, net, kind, seed, data)
                    with open(log, "a") as f:
                        f.write(json.dumps(run) + "\n")
    runs = read_runs(log)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"torch {torch.__version__}; Tessera {tessera.__version__}\n")
    print(report(runs, args.work))
    png = plot(runs, args.work)
    if png:
        print(f"curves: {png}")


if __name__ == "__main__":
    main()

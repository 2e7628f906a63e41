"""ICTP training time per epoch: `tessera ictp train` against the PyTorch
reference model of the tests (tests/python/ictp_reference.py) trained with
the same recipe on the same frames, side by side in one run.

    /usr/bin/python3 bench/ictp_train.py DATA.extxyz [--train 200] [--valid 20]
        [--epochs 2] [--batch-size 5] [--threads 2] [--dtype float64]

DATA.extxyz holds labelled frames (energy and forces), e.g. from
`tools/ictp_data.py xtb --smiles CCO --frames 1000 --out ethanol.extxyz`.
The first --train frames train, the next --valid validate. Tessera trains
first (published settings, seed 0) and its CSV log gives the seconds of
each epoch; the reference then starts from the weights Tessera wrote and
runs the same epochs: per batch the loss w_E sum (dE/N)^2 + w_F sum |dF|^2
with forces by autograd with create_graph, backward, Adam with AMSGrad
(lr 0.01, the recipe's weight decay is left out: it costs nothing), then
energies and forces of the validation frames. The reference is float64
only; with --dtype float32 Tessera trains in float32 against it. Prints a
markdown table; the ratio is the reference's time over Tessera's (above 1:
Tessera is faster)."""

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from ase.io import read, write

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
import ictp_reference  # noqa: E402
import models  # noqa: E402

W_E, W_F, LR = 1.0, 10.0, 0.01
# State entries the model uses as constants, not trained.
FIXED = ("radial_embedding.", "linear_first.eye", "conv_tp.weight", "scale_shift.")


def tessera_train(train, valid, out, args):
    cmd = [str(models.tessera_bin()), "ictp", "train", train, "--valid", valid, "--out", out,
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--dtype", args.dtype, "--seed", "0", "--no-plot"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit("tessera ictp train failed:\n" + proc.stderr)
    with open(out[:-4] + ".csv") as f:
        rows = list(csv.DictReader(f))
    return [float(r["seconds"]) for r in rows]


def frames_tensors(frames):
    return [(f.numbers, f.positions, float(f.get_potential_energy()), f.get_forces())
            for f in frames]


def reference_train(model_path, train, valid, args):
    model = ictp_reference.load(model_path)
    params = []
    for key, value in model.state.items():
        if value.numel() > 1 and not any(tag in key for tag in FIXED):
            value.requires_grad_(True)
            params.append(value)
    opt = torch.optim.Adam(params, lr=LR, amsgrad=True)
    cell = np.zeros((3, 3))
    pbc = (False, False, False)
    seconds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for b in range(0, len(train), args.batch_size):
            loss = 0.0
            for numbers, positions, e_ref, f_ref in train[b:b + args.batch_size]:
                pos = torch.tensor(positions, requires_grad=True)
                e = model.energy(numbers, pos, cell, pbc)
                (g,) = torch.autograd.grad(e, pos, create_graph=True)
                n = len(numbers)
                loss = loss + W_E * ((e - e_ref) / n) ** 2 + \
                    W_F * ((-g - torch.as_tensor(f_ref)) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for numbers, positions, _, _ in valid:
            pos = torch.tensor(positions, requires_grad=True)
            e = model.energy(numbers, pos, cell, pbc)
            torch.autograd.grad(e, pos)
        seconds.append(time.perf_counter() - t0)
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--valid", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    args = ap.parse_args()
    frames = read(args.data, index=":")
    if len(frames) < args.train + args.valid:
        sys.exit("%s holds %d frames, fewer than --train %d + --valid %d"
                 % (args.data, len(frames), args.train, args.valid))
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        train_path, valid_path = os.path.join(d, "train.extxyz"), os.path.join(d, "valid.extxyz")
        write(train_path, frames[:args.train])
        write(valid_path, frames[args.train:args.train + args.valid])
        out = os.path.join(d, "model.npz")
        print("tessera ictp train: %d epochs of %d frames ..." % (args.epochs, args.train),
              file=sys.stderr)
        ts = tessera_train(train_path, valid_path, out, args)
        print("reference (PyTorch) ...", file=sys.stderr)
        rs = reference_train(out, frames_tensors(frames[:args.train]),
                             frames_tensors(frames[args.train:args.train + args.valid]), args)
    print("machine: %s, %d cpus, %d threads; %d training + %d validation frames of %s "
          "(%d atoms), batch %d; reference: PyTorch %s float64; load average %.2f"
          % (platform.machine(), os.cpu_count(), args.threads, args.train, args.valid,
             os.path.basename(args.data), len(frames[0]), args.batch_size, torch.__version__,
             os.getloadavg()[0]))
    print()
    print("| epoch | Tessera %s s | reference s | speed-up |" % args.dtype)
    print("|---|---|---|---|")
    for i, (t, r) in enumerate(zip(ts, rs)):
        print("| %d | %.2f | %.2f | %.2fx |" % (i + 1, t, r, r / t))


if __name__ == "__main__":
    main()

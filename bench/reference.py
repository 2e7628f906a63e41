"""The reference backend on the six torchvision models of the test suite,
side by side with PyTorch on the same thread count.

    /usr/bin/python3 bench/reference.py [--threads 2] [--batch 1] [--iters 5]

Models come from the test suite's export cache (build/models, generated
on first use: opset 13, dynamic batch). For each model: `tessera info`
(FLOPs and arena bytes of the plan), `tessera bench --device ref` and
PyTorch eager timings of the same model with the same weights. Prints a
markdown table; the ratio is PyTorch's time over Tessera's (above 1:
Tessera is faster)."""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import models  # noqa: E402


def tessera(*args):
    proc = subprocess.run([str(models.tessera_bin()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tessera {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def torch_min_ms(model, batch, iters, warmup):
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=list(models.MODEL_NAMES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"batch {args.batch}, {args.threads} threads, min of {args.iters} after "
          f"{args.warmup} warm-up", file=sys.stderr)
    rows = []
    for name in args.models:
        print(f"{name}: exporting (cached)...", file=sys.stderr, flush=True)
        entry = models.export(name, 13, None, True)
        info = tessera("info", str(entry.onnx_path), "--batch", str(args.batch))
        flops = float(re.search(r"FLOPs: (\d+)", info).group(1))
        arena = int(re.search(r"Arena: (\d+) bytes", info).group(1))
        print(f"{name}: tessera bench...", file=sys.stderr, flush=True)
        bench = json.loads(tessera("bench", str(entry.onnx_path), "--device", "ref", "--threads",
                                   str(args.threads), "--batch", str(args.batch), "--iters",
                                   str(args.iters), "--warmup", str(args.warmup),
                                   "--json").strip().splitlines()[-1])
        print(f"{name}: pytorch...", file=sys.stderr, flush=True)
        torch_ms = torch_min_ms(models._make_model(name), args.batch, args.iters, args.warmup)
        rows.append((name, flops, arena, bench["min_ms"], bench["median_ms"], torch_ms))

    print(f"| model | GFLOPs (batch {args.batch}) | arena MiB | ref min ms | ref median ms "
          f"| PyTorch min ms | PyTorch / ref |")
    print("|---|---|---|---|---|---|---|")
    for name, flops, arena, mn, med, tm in rows:
        print(f"| {name} | {flops / 1e9:.2f} | {arena / 2**20:.1f} | {mn:.1f} | {med:.1f} "
              f"| {tm:.1f} | {tm / mn:.2f} |")


if __name__ == "__main__":
    np.random.seed(0)
    main()

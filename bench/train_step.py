"""One training step of resnet18 or mobilenet_v2 (forward, backward, SGD with momentum
update; fp32), Tessera beside PyTorch eager, side by side in one run.

    /usr/bin/python3 bench/train_step.py [--model resnet18] [--batch 8] [--size 224]
        [--threads 2] [--iters 5] [--warmup 1] [--device cpu]

The model is torchvision's --model (1000 classes, seeded random weights), exported to ONNX
(opset 17, BatchNormalization kept) once; each framework then runs in its own process with
the same thread count, times `warmup` steps and then `iters` steps on the same seeded batch,
and keeps the min. Peak memory is the max resident set of each process (VmHWM), model
loading included; Tessera's arena is its training plan's activation memory. Both processes
also report their first step's loss, which must agree (same weights, same batch; but
mobilenet_v2's Dropout draws its own masks in each, so there they differ a little).

stdout: a line describing the machine and versions, then a markdown table. The ratio is
PyTorch's min time over Tessera's: above 1, Tessera is faster."""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "python"))


def batch_of(args):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    return x, rng.integers(0, 1000, args.batch).astype(np.int64)


def export(path, name, size):
    import torch
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    torch.save(model.state_dict(), str(path) + ".pt")


def time_steps(step, args):
    times, losses = [], []
    for i in range(args.warmup + args.iters):
        start = time.perf_counter()
        losses.append(step())
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return times, losses[0]


def worker_tessera(args):
    import tsr
    x, lab = batch_of(args)
    tr = tsr.Trainer(tsr.Graph.load(args.onnx), {"kind": "cross_entropy"},
                     {"kind": "sgd", "lr": 0.01, "momentum": 0.9}, device=args.device,
                     threads=args.threads)
    times, loss = time_steps(lambda: tr.step([x], lab), args)
    s = tr.stats()
    return {"times": times, "loss": loss, "arena": s.arena_bytes,
            "optimizer": s.optimizer_bytes + s.grad_bytes + s.param_bytes}


def worker_torch(args):
    import torch
    import torchvision
    torch.set_num_threads(args.threads)
    model = getattr(torchvision.models, args.model)()
    model.load_state_dict(torch.load(args.onnx + ".pt"))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, lab = (torch.from_numpy(a) for a in batch_of(args))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), lab)
        loss.backward()
        opt.step()
        return loss.item()
    times, loss = time_steps(step, args)
    return {"times": times, "loss": loss, "torch": torch.__version__}


def peak_rss():
    """VmHWM: unlike getrusage's ru_maxrss, it starts afresh at exec, so the parent's
    memory does not count."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(name, args):
    cmd = [sys.executable, __file__, "--worker", name, "--onnx", args.onnx]
    for k in ("model", "batch", "size", "threads", "iters", "warmup", "device"):
        cmd += [f"--{k}", str(getattr(args, k))]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} worker failed:\n{proc.stderr}")
    out = proc.stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["resnet18", "mobilenet_v2"], default="resnet18")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", choices=["tessera", "torch"])
    p.add_argument("--onnx")
    args = p.parse_args()
    if args.worker:
        result = (worker_tessera if args.worker == "tessera" else worker_torch)(args)
        result["peak_rss"] = peak_rss()
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.onnx = str(Path(tmp) / f"{args.model}.onnx")
        export(args.onnx, args.model, args.size)
        print(f"exported {args.model} to {args.onnx}", file=sys.stderr)
        tsr_r = run_worker("tessera", args)
        torch_r = run_worker("torch", args)
    cpu = platform.processor() or platform.machine()
    print(f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs; PyTorch {torch_r['torch']}; "
          f"{args.model} batch {args.batch} at {args.size}x{args.size}, fp32, {args.threads} "
          f"threads, min of {args.iters} steps after {args.warmup} warm-up")
    t_min, p_min = min(tsr_r["times"]), min(torch_r["times"])
    print()
    print("| | step (ms, min) | peak RSS (MB) | first loss |")
    print("|---|---:|---:|---:|")
    print(f"| Tessera ({args.device}) | {t_min * 1e3:.1f} | {tsr_r['peak_rss'] / 1e6:.0f} | "
          f"{tsr_r['loss']:.5f} |")
    print(f"| PyTorch eager | {p_min * 1e3:.1f} | {torch_r['peak_rss'] / 1e6:.0f} | "
          f"{torch_r['loss']:.5f} |")
    print()
    print(f"PyTorch / Tessera time: {p_min / t_min:.2f}x; Tessera's training arena "
          f"{tsr_r['arena'] / 1e6:.1f} MB, parameters + gradients + optimizer state "
          f"{tsr_r['optimizer'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

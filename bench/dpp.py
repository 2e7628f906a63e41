"""Detail-Preserving Pooling: Tessera's reference kernels against Tessera's
MaxPool on the same shapes and against the composed PyTorch implementation
of the tests (tests/python/dpp_torch.py), side by side in one run.

    /usr/bin/python3 bench/dpp.py [--threads 2] [--iters 5]

Tessera runs through tests/python/tsr.py: a one-node graph, a plan with the
given threads, the minimum of --iters runs of Plan.run (all measurements
taken in turns). Forward+backward is
DetailPreservingPool plus DetailPreservingPoolGrad; PyTorch's is the
module's forward and autograd's backward. float32, 2x2 windows at stride 2,
symmetric, paper normalization; "full" adds the 3x3 pre-filter. Targets:
forward at most 2x MaxPool; forward+backward at least 5x faster than
PyTorch (the last column)."""

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
import dpp_torch  # noqa: E402
import tsr  # noqa: E402

SHAPES = [(8, 64, 112, 112), (8, 256, 56, 56)]


def min_ms_interleaved(fns, iters):
    """Minimum time of each callable, running them in turns (one warm-up
    each), so that a burst of load on a shared machine hits all alike."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], (time.perf_counter() - start) * 1e3)
    return best


def one_node_plan(op, inputs, n_outputs, attrs, domain, threads):
    g = tsr.Graph()
    names = []
    for i, x in enumerate(inputs):
        names.append(f"in{i}")
        g.add_input(names[-1], x.dtype, list(x.shape))
    outs = [f"out{o}" for o in range(n_outputs)]
    g.add_node(op, names, outs, attrs, domain=domain)
    for o in outs:
        g.add_output(o)
    plan = tsr.Plan(g, threads=threads)
    return lambda: plan.run(inputs)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); Tessera reference backend "
          f"({args.threads} threads); float32; min of {args.iters} runs\n")
    print("| shape | variant | MaxPool ms | DPP fwd ms | fwd / MaxPool | DPP fwd+bwd ms "
          "| PyTorch fwd ms | PyTorch fwd+bwd ms | PyTorch / Tessera fwd+bwd |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        n, c, h, w = shape
        x = rng.standard_normal(shape, dtype=np.float32)
        alpha = (rng.standard_normal(c) * 0.5).astype(np.float32)
        lam = (rng.standard_normal(c) * 0.5).astype(np.float32)
        dy = rng.standard_normal((n, c, h // 2, w // 2), dtype=np.float32)
        fns = {"maxpool": one_node_plan("MaxPool", [x], 1, dict(kernel_shape=[2, 2],
                                                                 strides=[2, 2]), "",
                                         args.threads)}
        xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
        for variant in ("lite", "full"):
            full = variant == "full"
            filt = np.full((c, 1, 3, 3), 1 / 9, np.float32) if full else None
            params = [alpha, lam] + ([filt] if full else [])
            fns[variant, "fwd"] = one_node_plan("DetailPreservingPool", [x] + params, 1, {},
                                                "ai.tessera", args.threads)
            fns[variant, "bwd"] = one_node_plan("DetailPreservingPoolGrad", [dy, x] + params,
                                                4 if full else 3, {}, "ai.tessera", args.threads)
            layer = dpp_torch.DetailPreservingPool2d(c, full=full)
            with torch.no_grad():
                layer.alpha.copy_(torch.from_numpy(alpha))
                layer.lambda_.copy_(torch.from_numpy(lam))
            fns[variant, "torch fwd"] = torch_forward(layer, xt)
            fns[variant, "torch fwd+bwd"] = torch_forward_backward(layer, xt, dyt)
        t = min_ms_interleaved(fns, args.iters)
        for variant in ("lite", "full"):
            fwd, both = t[variant, "fwd"], t[variant, "fwd"] + t[variant, "bwd"]
            t_both = t[variant, "torch fwd+bwd"]
            print(f"| {list(shape)} | {variant} | {t['maxpool']:.1f} | {fwd:.1f} "
                  f"| {fwd / t['maxpool']:.2f}x | {both:.1f} | {t[variant, 'torch fwd']:.1f} "
                  f"| {t_both:.1f} | {t_both / both:.1f}x |", flush=True)


def torch_forward(layer, x):
    def run():
        with torch.no_grad():
            layer(x)

    return run


def torch_forward_backward(layer, x, dy):
    def run():
        layer(x.clone().requires_grad_()).backward(dy)

    return run

if __name__ == "__main__":
    main()

"""Detail-Preserving Pooling: Tessera's kernels (cpu device and reference
backend) against Tessera's MaxPool on the same shapes and against the
composed PyTorch implementation of the tests (tests/python/dpp_torch.py),
side by side in one run.

    /usr/bin/python3 bench/dpp.py [--threads 2] [--iters 5]

Tessera runs through tests/python/tsr.py with plan profiling on, and each
number is the op's own node time (the minimum over --iters runs, 4 per
turn on the cpu device; all measurements taken in turns). On the cpu device the op gets its input the
way it does in a model, blocked (nChw16c with AVX-512): a depthwise 1x1
identity Conv (oneDNN) then a 1x1 MaxPool in front of it, for DPP and for
the MaxPool it is compared with alike; depth-first stacks are off so that
the node times are the op's alone. On the reference device the plans are
one node on plain data. Forward+backward is DetailPreservingPool plus
DetailPreservingPoolGrad; PyTorch's is the module's forward and autograd's
backward. float32, 2x2 windows at stride 2, symmetric, paper normalization;
"full" adds the 3x3 pre-filter. Targets: forward at most 2x MaxPool;
forward+backward at least 5x faster than PyTorch (the last column)."""

import argparse
import ctypes
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
import dpp_torch  # noqa: E402
import tsr  # noqa: E402

SHAPES = [(8, 64, 112, 112), (8, 256, 56, 56)]
TARGET = "target"  # the measured node's name

_libc = ctypes.CDLL(None)
_libc.fopen.restype = ctypes.c_void_p
_libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
_libc.fclose.argtypes = [ctypes.c_void_p]


def min_ms_interleaved(fns, iters):
    """Minimum time of each callable (its return value in ms, or its wall
    time when it returns None), running them in turns (one warm-up each),
    so that a burst of load on a shared machine hits all alike."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            start = time.perf_counter()
            ms = fn()
            if ms is None:
                ms = (time.perf_counter() - start) * 1e3
            best[k] = min(best[k], ms)
    return best


def node_ms(plan, inputs, path):
    """Runs the plan once with profiling on; the TARGET node's time in ms."""
    lib = tsr.lib()
    tsr.check(lib.tsr_plan_set_profiling(plan.handle, 1))
    plan.run(inputs)
    f = _libc.fopen(path.encode(), b"w")
    try:
        tsr.check(lib.tsr_plan_print_profile(plan.handle, ctypes.c_void_p(f)))
    finally:
        _libc.fclose(f)
    with open(path) as fh:
        for line in fh:
            cols = line.split()
            if len(cols) >= 6 and cols[-1] == TARGET:
                return float(cols[1])
    raise RuntimeError(f"no node {TARGET!r} in the profile:\n{open(path).read()}")


def measured_plan(op, inputs, n_outputs, attrs, domain, device, threads, blocked, path):
    """A plan of `op` over graph inputs `inputs` (on the cpu device, the
    first `blocked` of them pass through an identity depthwise Conv and a
    1x1 MaxPool first) whose call returns the op's node time."""
    g = tsr.Graph()
    g.set_opset(17)
    names = []
    for i, x in enumerate(inputs):
        name = f"in{i}"
        g.add_input(name, x.dtype, list(x.shape))
        if i < blocked:
            c = x.shape[1]
            g.add_constant(name + "_w", np.ones((c, 1, 1, 1), x.dtype))
            g.add_node("Conv", [name, name + "_w"], [name + "_c"],
                       {"kernel_shape": [1, 1], "group": c})
            g.add_node("MaxPool", [name + "_c"], [name + "_b"], {"kernel_shape": [1, 1]})
            name += "_b"
        names.append(name)
    outs = [f"out{o}" for o in range(n_outputs)]
    g.add_node(op, names, outs, attrs, domain=domain, name=TARGET)
    for o in outs:
        g.add_output(o)
    plan = tsr.Plan(g, device=device, threads=threads, depth_first=0)
    # The cpu device's runs take a few ms, where one preemption on a
    # shared machine doubles a reading: take the best of several per turn.
    turns = 4 if device == "cpu" else 1
    return lambda: min(node_ms(plan, inputs, path) for _ in range(turns))


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
    load = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); Tessera {args.threads} threads; float32; "
          f"min of {args.iters} runs; load average at start {load[0]:.2f}\n")
    print("| shape | variant | device | MaxPool ms | DPP fwd ms | fwd / MaxPool | DPP fwd+bwd ms "
          "| PyTorch fwd ms | PyTorch fwd+bwd ms | PyTorch / Tessera fwd+bwd |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    fd, path = tempfile.mkstemp(suffix=".txt")
    os.close(fd)
    for shape in SHAPES:
        n, c, h, w = shape
        x = rng.standard_normal(shape, dtype=np.float32)
        alpha = (rng.standard_normal(c) * 0.5).astype(np.float32)
        lam = (rng.standard_normal(c) * 0.5).astype(np.float32)
        dy = rng.standard_normal((n, c, h // 2, w // 2), dtype=np.float32)
        xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
        fns = {}
        for dev in ("cpu", "ref"):
            blocked = dev == "cpu"
            fns[dev, "maxpool"] = measured_plan("MaxPool", [x], 1,
                                                dict(kernel_shape=[2, 2], strides=[2, 2]), "",
                                                dev, args.threads, int(blocked), path)
            for variant in ("lite", "full"):
                full = variant == "full"
                filt = np.full((c, 1, 3, 3), 1 / 9, np.float32) if full else None
                params = [alpha, lam] + ([filt] if full else [])
                fns[dev, variant, "fwd"] = measured_plan(
                    "DetailPreservingPool", [x] + params, 1, {}, "ai.tessera", dev, args.threads,
                    int(blocked), path)
                fns[dev, variant, "bwd"] = measured_plan(
                    "DetailPreservingPoolGrad", [dy, x] + params, 4 if full else 3, {},
                    "ai.tessera", dev, args.threads, 2 * int(blocked), path)
        for variant in ("lite", "full"):
            layer = dpp_torch.DetailPreservingPool2d(c, full=variant == "full")
            with torch.no_grad():
                layer.alpha.copy_(torch.from_numpy(alpha))
                layer.lambda_.copy_(torch.from_numpy(lam))
            fns[variant, "torch fwd"] = torch_forward(layer, xt)
            fns[variant, "torch fwd+bwd"] = torch_forward_backward(layer, xt, dyt)
        t = min_ms_interleaved(fns, args.iters)
        for variant in ("lite", "full"):
            for dev in ("cpu", "ref"):
                mp = t[dev, "maxpool"]
                fwd, both = t[dev, variant, "fwd"], t[dev, variant, "fwd"] + t[dev, variant, "bwd"]
                t_both = t[variant, "torch fwd+bwd"]
                print(f"| {list(shape)} | {variant} | {dev} | {mp:.1f} | {fwd:.1f} "
                      f"| {fwd / mp:.2f}x | {both:.1f} | {t[variant, 'torch fwd']:.1f} "
                      f"| {t_both:.1f} | {t_both / both:.1f}x |", flush=True)
    os.unlink(path)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)")


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

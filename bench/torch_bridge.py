"""tessera.optimize against eager PyTorch, in the same process: inference at batch 1 and 8
per model, one training step (forward, cross-entropy, backward, SGD with momentum) at
batch 8, and the bridge's own overhead per call on a one-op model.

    /usr/bin/python3 bench/torch_bridge.py [--models resnet18,mobilenet_v2,...] [--size 224]
        [--threads 2] [--iters 10] [--warmup 2] [--device cpu] [--no-train] [--no-inference]

Models are torchvision's with seeded random weights (the six of the test suite by default).
Eager and optimized runs of one configuration alternate, each timed `iters` times after
`warmup` untimed calls; the table has the min and median milliseconds of each and the ratio
of eager's min over Tessera's (above 1: Tessera is faster). Every optimized output is
checked against eager before timing (max |diff| / max |y|, printed). The overhead row is a
model of one ReLU on a [1, 16] tensor: the time of an optimized call minus that of a
tessera.Session run of the same graph, i.e. what capture, parameter feeding and torch
tensor handling add per call.

Timings are only meaningful on an otherwise idle machine (see docs/benchmarks.md)."""

import argparse
import copy
import io
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vgg16", "densenet121", "squeezenet1_1")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--no-inference", action="store_true")
    return p.parse_args(argv)


def timed(fn, iters, warmup):
    return timed_pair(fn, None, iters, warmup)[0]


def timed_pair(first, second, iters, warmup):
    """(min, median) milliseconds of each function (second may be None), their calls
    alternating, so that a load that changes during the run weighs on both alike."""
    fns = [fn for fn in (first, second) if fn is not None]
    for _ in range(warmup):
        for fn in fns:
            fn()
    out = [[] for _ in fns]
    for _ in range(iters):
        for fn, times in zip(fns, out):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return [(min(t), statistics.median(t)) for t in out]


def row(label, eager, fast, note=""):
    return (f"| {label} | {eager[0]:.2f} | {eager[1]:.2f} | {fast[0]:.2f} | {fast[1]:.2f} "
            f"| {eager[0] / fast[0]:.2f} | {note} |")


def inference_rows(torch, tessera, name, model, args):
    rows = []
    fast = None
    for batch in (1, 8):
        x = torch.randn(batch, 3, args.size, args.size)
        if fast is None:
            fast = tessera.optimize(model, (x,), device=args.device)
        with torch.no_grad():
            want = model(x)
            err = ((fast(x) - want).abs().max() / want.abs().max()).item()
            e, f = timed_pair(lambda: model(x), lambda: fast(x), args.iters, args.warmup)
        rows.append(row(f"{name} inference, batch {batch}", e, f, f"rel err {err:.1e}"))
    return rows


def train_row(torch, tessera, name, model, args):
    x = torch.randn(8, 3, args.size, args.size)
    y = torch.randint(0, 1000, (8,))
    eager = copy.deepcopy(model).train()
    fast_module = copy.deepcopy(model).train()
    fast = tessera.optimize(fast_module, (x,), device=args.device)
    losses = {}

    def step_of(m, key):
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            losses.setdefault(key, loss.item())

        return step

    e, f = timed_pair(step_of(eager, "eager"), step_of(fast, "tessera"), args.iters,
                      args.warmup)
    note = f"first loss {losses['eager']:.5f} / {losses['tessera']:.5f}"
    return row(f"{name} training step, batch 8", e, f, note)


def overhead_row(torch, tessera, args):
    model = torch.nn.ReLU()
    x = torch.randn(1, 16)
    fast = tessera.optimize(model, (x,), device=args.device)
    f = io.BytesIO()
    torch.onnx.export(model, x, f, input_names=["x"])
    sess = tessera.Session(f.getvalue(), device=args.device, threads=args.threads)
    feeds = {"x": x}
    n = max(args.iters * 100, 100)
    with torch.no_grad():
        s = timed(lambda: sess.run(None, feeds), n, args.warmup)
        o = timed(lambda: fast(x), n, args.warmup)
        e = timed(lambda: model(x), n, args.warmup)
    return (f"| bridge overhead per call (one ReLU, [1, 16]) | {e[0] * 1e3:.1f} us eager | "
            f"{s[0] * 1e3:.1f} us Session | {o[0] * 1e3:.1f} us optimize() | | "
            f"| {(o[0] - s[0]) * 1e3:.1f} us over Session |")


def main(argv=None):
    args = parse(argv if argv is not None else sys.argv[1:])
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    import torchvision

    import tessera

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads; torch {torch.__version__}, device {args.device}, "
          f"{args.size}x{args.size}, min and median of {args.iters}")
    print()
    print("| what | eager min ms | eager median ms | tessera min ms | tessera median ms "
          "| eager / tessera | check |")
    print("|---|---|---|---|---|---|---|")
    for name in [m for m in args.models.split(",") if m]:
        model = getattr(torchvision.models, name)(weights=None).eval()
        if not args.no_inference:
            for r in inference_rows(torch, tessera, name, model, args):
                print(r, flush=True)
        if not args.no_train:
            print(train_row(torch, tessera, name, model, args), flush=True)
    print(overhead_row(torch, tessera, args))


if __name__ == "__main__":
    main()

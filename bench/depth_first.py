"""Depth-first stacks against layer-by-layer execution, side by side in one run.

    /usr/bin/python3 bench/depth_first.py [--threads 2] [--iters 5] [--warmup 2] [--rounds 2]
        [--batches 1 8 32] [--synthetic conv plain] [--models ...] [--model-batches 1 8 32]
        [--build build]

Two parts, each timing both modes of the same plan (`depth_first` on and off) in alternation,
`rounds` times, keeping the min:

1. A synthetic net dominated by memory-bound stacks, built through the C API by
   bench/synthetic_net.c (compiled here against <build>/lib/libtessera.so): a 1x1 Conv to
   [N, 128, 56, 56], then four blocks of scale-shift, Relu, MaxPool 3x3/1, residual Add,
   SiLU, AveragePool 3x3/1, then GlobalAveragePool; `--synthetic plain` runs it without the
   Conv, on the plain NCHW input (issue 13 item 6). The same graph with the same weights is
   exported to ONNX (onnx.helper) and run by ONNX Runtime 1.30's CPU provider
   (bench/ort_bench.mjs; bench/cpu.py installs it into <build>/bench-node) in the same
   script; the outputs of both engines are compared.
2. The six models of the test suite (opset 13, dynamic batch) through `tessera bench --json
   --profile`, with and without --no-depth-first.

Per-stack times come from the plans' step profiles: a stack's time in the depth-first plan
against the summed times of the same nodes (named by `tessera info --stacks` or the plan's
own stack listing) in the layer-by-layer plan. "In stacks" is the sum over all stacks.
Arena bytes are each plan's activation memory. Prints a description of the machine (with its
load average before and after, as other jobs may share it) and markdown tables on stdout."""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
import models  # noqa: E402

CHANNELS, SIZE, BLOCKS = 128, 56, 4


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {proc.stderr[-2000:]}")
    return proc


def parse_profile(text):
    """[(op, name, ms)] of the step profile table in `text`."""
    steps = []
    for line in text.splitlines():
        parts = line.split(None, 6)
        if len(parts) >= 6 and parts[0].isdigit():
            op, name = parts[4], parts[6].strip() if len(parts) > 6 else ""
            steps.append((op, name, float(parts[1])))
    return steps


def parse_stacks(text):
    """[[node names]] from tsr_plan_print_stacks' listing."""
    stacks = []
    for line in text.splitlines():
        if line.startswith("stack of "):
            stacks.append({"members": [], "line": line})
        elif line.startswith("  ") and stacks:
            parts = line.split()
            if len(parts) >= 2:
                stacks[-1]["members"].append(parts[1])
    return stacks


def stack_times(df_profile, lbl_profile, stacks):
    """Per stack: (ops, ms depth-first, ms layer by layer of the same nodes)."""
    lbl = {}
    for op, name, ms in lbl_profile:
        lbl[name] = lbl.get(name, 0.0) + ms
    df = [ms for op, _, ms in df_profile if op == "Stack"]
    out = []
    for k, st in enumerate(stacks):
        if k < len(df):
            out.append((len(st["members"]), df[k], sum(lbl.get(n, 0.0) for n in st["members"])))
    return out


def machine():
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        l2 = int(subprocess.run(["getconf", "LEVEL2_CACHE_SIZE"], capture_output=True,
                                text=True).stdout.strip() or 0)
    except (OSError, ValueError):
        l2 = 0
    return f"{cpu}, {os.cpu_count()} cores, L2 {l2 // 1024} KiB per core"


def load():
    return "%.2f %.2f %.2f" % os.getloadavg()


# ------------------------------------------------------------ synthetic net


def synthetic_weights(work):
    rng = np.random.default_rng(1234)
    w = {"conv_w": rng.standard_normal((CHANNELS, CHANNELS, 1, 1)) / np.sqrt(CHANNELS)}
    for i in range(BLOCKS):
        w[f"scale{i}"] = rng.uniform(0.5, 1.5, (CHANNELS, 1, 1))
        w[f"shift{i}"] = rng.normal(0.0, 0.1, (CHANNELS, 1, 1))
    for name, value in w.items():
        np.save(work / f"{name}.npy", value.astype(np.float32))
    return {k: v.astype(np.float32) for k, v in w.items()}


def synthetic_onnx(work, weights, conv):
    """The graph bench/synthetic_net.c builds, node for node, as ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pool = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["h0"], kernel_shape=[1, 1])] if conv else []
    if not conv:
        weights = {k: v for k, v in weights.items() if k != "conv_w"}
    for i in range(BLOCKS):
        v = [f"b{i}_{j}" for j in range(7)]
        h, nxt = f"h{i}" if conv or i else "x", f"h{i + 1}"
        nodes += [
            helper.make_node("Mul", [h, f"scale{i}"], [v[0]]),
            helper.make_node("Add", [v[0], f"shift{i}"], [v[1]]),
            helper.make_node("Relu", [v[1]], [v[2]]),
            helper.make_node("MaxPool", [v[2]], [v[3]], kernel_shape=[3, 3], strides=[1, 1],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Add", [v[3], h], [v[4]]),
            helper.make_node("Sigmoid", [v[4]], [v[5]]),
            helper.make_node("Mul", [v[4], v[5]], [v[6]]),
            helper.make_node("AveragePool", [v[6]], [nxt], **pool),
        ]
    nodes.append(helper.make_node("GlobalAveragePool", [f"h{BLOCKS}"], ["y"]))
    graph = helper.make_graph(
        nodes, "synthetic_depth_first",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CHANNELS, 1, 1])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path = work / f"synthetic{'' if conv else '_plain'}.onnx"
    onnx.save(model, str(path))
    return path


def build_synthetic(work, build):
    exe = work / "synthetic_net"
    cc = shutil.which("cc") or shutil.which("gcc")
    lib = build / "lib"
    run([cc, "-O2", "-I", ROOT / "include", BENCH_DIR / "synthetic_net.c", "-L", lib,
         "-ltessera", f"-Wl,-rpath,{lib}", "-o", exe])
    return exe


def bench_synthetic(args, work, rows, variant):
    conv = variant == "conv"
    weights = synthetic_weights(work)
    onnx_path = synthetic_onnx(work, weights, conv)
    exe = build_synthetic(work, args.build)
    env = dict(os.environ, TSR_VERBOSE="0")
    name = "synthetic (C API)" if conv else "synthetic, plain input, no Conv (C API)"
    for batch in args.batches:
        x = np.random.default_rng(batch).standard_normal((batch, CHANNELS, SIZE, SIZE))
        x_path = work / f"x{batch}.npy"
        np.save(x_path, x.astype(np.float32))
        best = {}
        for r in range(args.rounds):
            for df in (1, 0):
                log(f"{name}, batch {batch}, depth_first={df}, round {r + 1}")
                out = work / f"tessera_y{batch}_{df}.npy"
                proc = run([exe, work, x_path, args.threads, args.iters, df, int(conv), out],
                           env=env)
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res["profile"] = parse_profile(proc.stderr)
                res["stacks"] = parse_stacks(proc.stderr)
                if df not in best or res["min_ms"] < best[df]["min_ms"]:
                    best[df] = res
        log(f"{name}, batch {batch}, ONNX Runtime")
        ort_out = work / f"ort_y{batch}.npy"
        ort = json.loads(run(["node", BENCH_DIR / "ort_bench.mjs", "--ort-dir",
                              args.ort_dir, "--model", onnx_path, "--input", x_path,
                              "--threads", args.threads, "--iters", args.iters * args.rounds,
                              "--warmup", args.warmup, "--output", ort_out]).stdout.splitlines()[-1])
        y_t, y_o = np.load(work / f"tessera_y{batch}_1.npy"), np.load(ort_out)
        y_l = np.load(work / f"tessera_y{batch}_0.npy")
        err = float(np.max(np.abs(y_t - y_o)) / np.max(np.abs(y_o)))
        err_modes = float(np.max(np.abs(y_t - y_l)) / np.max(np.abs(y_l)))
        per = stack_times(best[1]["profile"], best[0]["profile"], best[1]["stacks"])
        rows.append(dict(name=name, batch=batch, df=best[1], lbl=best[0], per=per,
                         ort_ms=ort["min_ms"], ort_err=err, modes_err=err_modes,
                         ort_version=ort.get("ort_version", "?")))


# ------------------------------------------------------------------ models


def bench_model(args, name, batch, rows):
    entry = models.export(name, 13, None, True)
    tessera = args.build / "bin" / "tessera"
    info = run([tessera, "info", entry.onnx_path, "--stacks", "--batch", batch]).stdout
    stacks = parse_stacks(info)
    best = {}
    for r in range(args.rounds):
        for df in (1, 0):
            log(f"{name}, batch {batch}, depth_first={df}, round {r + 1}")
            cmd = [tessera, "bench", entry.onnx_path, "--batch", batch, "--threads", args.threads,
                   "--iters", args.model_iters, "--warmup", 1, "--json", "--profile"]
            proc = run(cmd + ([] if df else ["--no-depth-first"]))
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["profile"] = parse_profile(proc.stderr)
            if df not in best or res["min_ms"] < best[df]["min_ms"]:
                best[df] = res
    per = stack_times(best[1]["profile"], best[0]["profile"], stacks)
    rows.append(dict(name=name, batch=batch, df=best[1], lbl=best[0], per=per))


# ------------------------------------------------------------------ report


def ratio(a, b):
    return f"{a / b:.2f}x" if b > 0 else "-"


def report(args, rows, load_before, load_after, ort_version):
    print(f"Machine: {machine()}; {args.threads} threads; load average before "
          f"{load_before}, after {load_after} (1, 5, 15 min). ONNX Runtime {ort_version} "
          f"(CPU provider, graph optimizations 'all'). Min of {args.rounds} rounds, depth-first "
          f"and layer-by-layer alternating.\n")
    print("| net | batch | stacks (ops) | in stacks: layer-by-layer ms | depth-first ms | "
          "speedup | whole net: layer-by-layer ms | depth-first ms | speedup | ONNX Runtime ms "
          "| vs ORT | arena layer-by-layer | arena depth-first |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        in_lbl = sum(p[2] for p in r["per"])
        in_df = sum(p[1] for p in r["per"])
        n_ops = sum(p[0] for p in r["per"])
        ort = f"{r['ort_ms']:.1f}" if "ort_ms" in r else "-"
        vs_ort = ratio(r["ort_ms"], r["df"]["min_ms"]) if "ort_ms" in r else "-"
        print(f"| {r['name']} | {r['batch']} | {len(r['per'])} ({n_ops}) | {in_lbl:.2f} | "
              f"{in_df:.2f} | {ratio(in_lbl, in_df)} | {r['lbl']['min_ms']:.2f} | "
              f"{r['df']['min_ms']:.2f} | {ratio(r['lbl']['min_ms'], r['df']['min_ms'])} | "
              f"{ort} | {vs_ort} | {r['lbl']['arena_bytes'] / 2**20:.1f} MiB | "
              f"{r['df']['arena_bytes'] / 2**20:.1f} MiB |")
    synth = [r for r in rows if "ort_ms" in r]
    if synth:
        print("\nSynthetic net, answers: max |y - y_ort| / max |y_ort| = "
              + ", ".join(f"{r['ort_err']:.1e} ({r['name']}, batch {r['batch']})" for r in synth)
              + "; depth-first against layer-by-layer: "
              + ", ".join(f"{r['modes_err']:.1e}" for r in synth) + ".")
    print("\nPer stack, at batch 8 (ms per run; largest layer-by-layer time first):\n")
    print("| net | stack ops | layer-by-layer ms | depth-first ms | speedup |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        if r["batch"] != 8:
            continue
        for n_ops, df_ms, lbl_ms in sorted(r["per"], key=lambda p: -p[2])[:args.top]:
            print(f"| {r['name']} | {n_ops} | {lbl_ms:.3f} | {df_ms:.3f} | {ratio(lbl_ms, df_ms)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--model-iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--synthetic", nargs="*", choices=["conv", "plain"], default=["conv", "plain"],
                    help="synthetic nets: with the 1x1 Conv in front, and without it (plain input)")
    ap.add_argument("--model-batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--models", nargs="*", default=list(models.MODEL_NAMES))
    ap.add_argument("--top", type=int, default=3, help="stacks listed per net")
    ap.add_argument("--build", type=Path, default=ROOT / "build")
    ap.add_argument("--ort-dir", type=Path, default=None,
                    help="holds node_modules/onnxruntime-node (default <build>/bench-node)")
    args = ap.parse_args()
    args.build = args.build.resolve()
    args.ort_dir = (args.ort_dir or args.build / "bench-node").resolve()
    work = args.build / "bench" / "depth_first"
    work.mkdir(parents=True, exist_ok=True)
    load_before = load()
    rows = []
    for variant in args.synthetic:
        bench_synthetic(args, work, rows, variant)
    for name in args.models:
        for batch in args.model_batches:
            bench_model(args, name, batch, rows)
    ort_version = next((r["ort_version"] for r in rows if "ort_version" in r), "?")
    report(args, rows, load_before, load(), ort_version)


if __name__ == "__main__":
    main()

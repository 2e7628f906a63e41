"""Tessera beside ONNX Runtime and PyTorch on the six models of the test suite.

    /usr/bin/python3 bench/cpu.py [--threads 2] [--iters 5] [--warmup 2] [--rounds 1]
        [--batches 1 8] [--models ...] [--device cpu] [--precision fp32|bf16]

--models also takes the segmentation models and the sequence models of models.py: lstm and
gru (2 layers of 128 with a linear head on the last of 32 steps) and transformer_encoder.

For each model and batch, three processes run one after the other with the same thread count:
`tessera bench` (the device and precision asked for; on its own seeded random input, as it
takes no input file), ONNX Runtime 1.30's CPU execution provider (bench/ort_bench.mjs under
Node.js, graph optimizations 'all') and PyTorch eager (bench/torch_bench.py) on a seeded
input of this script, each timing warm-up runs and then N runs, keeping the min. Each
framework's peak memory is the max resident set of its own process, model loading included
(reported by /usr/bin/time); Tessera's arena bytes are the plan's activation memory. A
`tessera run` of this script's input checks the answers: the error columns are
max |y - y_torch| / max |y_torch| for Tessera's and ONNX Runtime's outputs, so a fast wrong
answer shows.

ONNX Runtime comes from npm (onnxruntime-node@1.30.0, CPU library inside the package;
installed with --ignore-scripts, since the install script only fetches CUDA and TensorRT
providers) into WORK/bench-node on first use. Models come from the test suite's export cache
(opset 13, dynamic batch); inputs, weights for PyTorch and outputs live in WORK/bench.

Progress goes to stderr; stdout gets a line describing the machine and versions, then a
markdown table. Ratios are the other framework's min time over Tessera's: above 1, Tessera is
faster. The exit status is 1 when any measurement failed (the table shows 'fail')."""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "python"))
import models  # noqa: E402

ORT_PACKAGE = "onnxruntime-node"
ORT_VERSION = "1.30.0"
FRAMEWORKS = ("tessera", "ort", "torch")


class MeasureError(RuntimeError):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# Runs argv[2:] and writes its max RSS in KiB to argv[1]: the fallback for /usr/bin/time.
RSS_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(cmd, env=None):
    """Runs cmd; returns (stdout, max RSS in KiB of that process alone) or raises MeasureError.

    Linux starts an exec'd process's peak RSS at its parent's RSS at fork time (this script
    has PyTorch loaded: ~250 MiB), and RUSAGE_CHILDREN is the max over all children, so the
    child is started by a small launcher that reports its peak: /usr/bin/time (~1 MiB of its
    own) or, without it, a bare Python (~10 MiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        if os.access("/usr/bin/time", os.X_OK):
            launcher = ["/usr/bin/time", "-o", rss.name, "-f", "%M"]
        else:
            launcher = [sys.executable, "-I", "-S", "-c", RSS_LAUNCHER, rss.name]
        start = time.perf_counter()
        proc = subprocess.run(launcher + list(cmd), stdout=out, stderr=err, env=env)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        rss_lines = rss.read().split()
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-5:] or stdout.strip().splitlines()[-5:]
        raise MeasureError(f"{Path(cmd[0]).name} exited with {proc.returncode} after "
                           f"{wall:.1f} s: " + " | ".join(tail))
    if not rss_lines or not rss_lines[-1].isdigit():
        raise MeasureError(f"no max RSS reported for {Path(cmd[0]).name}")
    return stdout, int(rss_lines[-1])


def last_json(stdout, what):
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise MeasureError(f"{what}: expected a JSON line, got {stdout.strip()[-300:]!r}")


def ensure_ort(node_dir):
    """Installs onnxruntime-node into node_dir unless that version is there; checks it loads."""
    pkg = node_dir / "node_modules" / ORT_PACKAGE / "package.json"
    if not shutil.which("node"):
        sys.exit("bench/cpu.py: Node.js ('node') not found; ONNX Runtime runs under it")
    installed = json.loads(pkg.read_text()).get("version") if pkg.is_file() else None
    if installed != ORT_VERSION:
        npm = shutil.which("npm")
        if not npm:
            sys.exit(f"bench/cpu.py: npm not found; it installs {ORT_PACKAGE}@{ORT_VERSION}")
        log(f"installing {ORT_PACKAGE}@{ORT_VERSION} into {node_dir} (first use; ~300 MB, "
            f"--ignore-scripts: the CPU library ships in the package)...")
        node_dir.mkdir(parents=True, exist_ok=True)
        manifest = node_dir / "package.json"
        if not manifest.exists():
            manifest.write_text('{"private": true, "description": "bench/cpu.py: ONNX Runtime"}\n')
        proc = subprocess.run(
            [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix",
             str(node_dir), f"{ORT_PACKAGE}@{ORT_VERSION}"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            registry = subprocess.run([npm, "config", "get", "registry"], capture_output=True,
                                      text=True).stdout.strip()
            sys.exit(f"bench/cpu.py: npm could not install {ORT_PACKAGE}@{ORT_VERSION} from "
                     f"{registry or 'its registry'} (unreachable?):\n{proc.stderr.strip()[-1500:]}")
    module = json.dumps(str(node_dir / "node_modules" / ORT_PACKAGE))
    probe = subprocess.run(["node", "-e", f"console.log(require({module}).env.versions.node)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"bench/cpu.py: {ORT_PACKAGE} in {node_dir} does not load (its native binding "
                 f"bin/napi-v6/{sys.platform}/...):\n{probe.stderr.strip()[-1500:]}")
    return probe.stdout.strip()


def read_text(path, default=""):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def machine_line(threads):
    cpuinfo = read_text("/proc/cpuinfo")
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in ("", platform.machine()):
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        if read_text(index / "type") != "Instruction":
            caches[f"L{read_text(index / 'level')}"] = read_text(index / "size")
    mem_kib = next((int(line.split()[1]) for line in read_text("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    os_name = next((line.split("=", 1)[1].strip('"') for line in
                    read_text("/etc/os-release").splitlines() if line.startswith("PRETTY_NAME=")),
                   platform.system())
    yes = lambda *names: "yes" if any(n in flags for n in names) else "no"  # noqa: E731
    cores = len(os.sched_getaffinity(0))
    cache_text = ", ".join(f"{k} {v}" for k, v in caches.items() if k != "L1")
    return (f"{model}, {cores} cores usable ({os.cpu_count()} online), {cache_text} "
            f"(per cache instance), {mem_kib / 2**20:.0f} GiB, {os_name}; "
            f"avx512f {yes('avx512f')}, avx512_bf16 {yes('avx512_bf16')}, "
            f"amx {yes('amx_tile', 'amx_bf16')}; "
            f"{threads} thread{'s' if threads != 1 else ''} per framework")


def git_describe():
    proc = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "describe", "--always", "--dirty",
                           "--tags"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def bench_input(work, name, entry, batch):
    path = work / "inputs" / f"{entry.path.name}-b{batch}.npy"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}.npy")
        np.save(tmp, models.sample(name, models._seed(name, "bench", batch), batch))
        os.replace(tmp, path)
    return path


def torch_weights(work, name, entry):
    """The state dict of the exported model, made once in a child process of its own."""
    path = work / "weights" / f"{entry.path.name}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"{name}: saving PyTorch weights (once)...")
        run_measured([sys.executable, str(BENCH_DIR / "torch_bench.py"), "--save-weights", name,
                      str(path)])
    return path


def rel_err(y, ref):
    if y.shape != ref.shape:
        return f"shape {y.shape} vs {ref.shape}"
    return float(np.max(np.abs(y.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def measure(args, name, entry, batch, node_dir, work):
    """One model at one batch: times, peak memory and answers of the three frameworks."""
    x = bench_input(work, name, entry, batch)
    outs = work / "outputs"
    outs.mkdir(parents=True, exist_ok=True)
    common = ["--threads", str(args.threads)]
    timing = common + ["--iters", str(args.iters), "--warmup", str(args.warmup)]
    tsr_opts = ["--device", args.device] + (["--precision", args.precision]
                                            if args.precision != "fp32" else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    row = {"model": name, "batch": batch, "errors": {}}
    out_paths = {fw: outs / f"{name}_b{batch}_{fw}.npy" for fw in FRAMEWORKS}
    for path in out_paths.values():
        path.unlink(missing_ok=True)
    steps = {
        "tessera": lambda: run_measured([str(args.tessera), "bench", str(entry.onnx_path),
                                         "--batch", str(batch), *tsr_opts, *timing, "--json"],
                                        env),
        "ort": lambda: run_measured(["node", str(BENCH_DIR / "ort_bench.mjs"), "--ort-dir",
                                     str(node_dir), "--model", str(entry.onnx_path), "--input",
                                     str(x), "--output", str(out_paths["ort"]), *timing], env),
        "torch": lambda: run_measured([sys.executable, str(BENCH_DIR / "torch_bench.py"), name,
                                       str(torch_weights(work, name, entry)), str(x), "--output",
                                       str(out_paths["torch"]), *timing], env),
    }
    # Rounds alternate the frameworks, so a burst of load from other processes on a shared
    # machine slows one round of each rather than all runs of one.
    for rnd in range(args.rounds):
        for fw, step in steps.items():
            if fw in row["errors"]:
                continue
            log(f"{name} batch {batch}: {fw}" + (f", round {rnd + 1}" if args.rounds > 1 else "")
                + "...")
            try:
                stdout, rss_kib = step()
                result = last_json(stdout, fw)
                new = {"min_ms": result["min_ms"], "median_ms": result["median_ms"],
                       "rss_kib": rss_kib, "arena_bytes": result.get("arena_bytes")}
            except (MeasureError, KeyError) as e:
                row["errors"][fw] = str(e)
                row.pop(fw, None)
                log(f"{name} batch {batch}: {fw} FAILED: {e}")
                continue
            old = row.get(fw)
            if old:
                new["rss_kib"] = max(new["rss_kib"], old["rss_kib"])
                for key in ("min_ms", "median_ms"):
                    new[key] = min(new[key], old[key])
            row[fw] = new
    try:
        log(f"{name} batch {batch}: tessera run (answer check)...")
        run_measured([str(args.tessera), "run", str(entry.onnx_path), "--input", str(x),
                      "--output", str(out_paths["tessera"]), *tsr_opts, *common], env)
    except MeasureError as e:
        row["errors"]["tessera run"] = str(e)
        log(f"{name} batch {batch}: tessera run FAILED: {e}")
    if out_paths["torch"].is_file():
        ref = np.load(out_paths["torch"]).astype(np.float64)
        for fw in ("tessera", "ort"):
            if out_paths[fw].is_file():
                row[f"{fw}_err"] = rel_err(np.load(out_paths[fw]), ref)
    return row


def fmt_ms(row, fw):
    r = row.get(fw)
    return f"{r['min_ms']:.1f} ({r['median_ms']:.1f})" if r else "fail"


def ratio(row, fw):
    if row.get(fw) and row.get("tessera"):
        return row[fw]["min_ms"] / row["tessera"]["min_ms"]
    return None


def fmt_err(row, fw):
    e = row.get(f"{fw}_err")
    return "fail" if e is None else (e if isinstance(e, str) else f"{e:.1e}")


def table(rows, batches):
    mib = lambda kib: f"{kib / 1024:.0f}"  # noqa: E731
    lines = [
        "| model | batch | Tessera ms | ORT ms | PyTorch ms | ORT / Tessera | PyTorch / Tessera "
        "| Tessera arena MiB | max RSS MiB: Tessera / ORT / PyTorch | error vs PyTorch: "
        "Tessera / ORT |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratios = [ratio(row, fw) for fw in ("ort", "torch")]
        rss = " / ".join(mib(row[fw]["rss_kib"]) if row.get(fw) else "fail" for fw in FRAMEWORKS)
        arena = f"{row['tessera']['arena_bytes'] / 2**20:.1f}" if row.get("tessera") else "fail"
        lines.append(
            f"| {row['model']} | {row['batch']} | {fmt_ms(row, 'tessera')} | {fmt_ms(row, 'ort')} "
            f"| {fmt_ms(row, 'torch')} | "
            + " | ".join(f"{r:.2f}" if r is not None else "fail" for r in ratios)
            + f" | {arena} | {rss} | {fmt_err(row, 'tessera')} / {fmt_err(row, 'ort')} |")
    for batch in batches:
        cells = []
        for fw in ("ort", "torch"):
            rs = [ratio(row, fw) for row in rows if row["batch"] == batch]
            ok = [r for r in rs if r is not None]
            cells.append(f"{math.exp(sum(map(math.log, ok)) / len(ok)):.2f}" if ok else "fail")
        lines.append(f"| geometric mean | {batch} | | | | {cells[0]} | {cells[1]} | | | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="timed runs; the min is kept")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each framework's process, alternating; reported: the "
                             "lowest min and lowest median over rounds, the highest max RSS")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--models", nargs="+", default=list(models.MODEL_NAMES),
                        choices=models.MODEL_NAMES + models.SEGMENTATION_NAMES
                        + models.SEQUENCE_NAMES + models.zoo_names("classification"))
    parser.add_argument("--device", default="cpu", help="Tessera's device (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="Tessera's precision; ONNX Runtime and PyTorch stay fp32")
    parser.add_argument("--tessera", type=Path, default=models.tessera_bin(),
                        help="the tessera binary (default: $TESSERA_BIN or <build>/bin/tessera)")
    parser.add_argument("--work-dir", type=Path, default=models.build_dir(),
                        help="where bench-node/ (ONNX Runtime) and bench/ (inputs, weights, "
                             "outputs) go (default: the build directory)")
    args = parser.parse_args()
    if min(args.threads, args.iters, args.rounds, *args.batches) < 1 or args.warmup < 0:
        parser.error("--threads, --iters, --rounds and --batches must be >= 1, --warmup >= 0")
    if not args.tessera.is_file():
        parser.error(f"{args.tessera} not found; build it first (make build)")

    args.tessera, args.work_dir = args.tessera.resolve(), args.work_dir.resolve()
    node_dir, work = args.work_dir / "bench-node", args.work_dir / "bench"
    ort_version = ensure_ort(node_dir)
    import torch  # after the checks above: slow to import

    node_version = subprocess.run(["node", "--version"], capture_output=True,
                                  text=True).stdout.strip()
    header = (f"Machine: {machine_line(args.threads)}. Tessera {git_describe()} (device "
              f"{args.device}, {args.precision}), ONNX Runtime {ort_version} (CPU EP, Node.js "
              f"{node_version}), PyTorch {torch.__version__} (eager, fp32). Min (median) ms of "
              f"{args.iters} run{'s' if args.iters != 1 else ''} after {args.warmup} warm-up"
              + (f", best of {args.rounds} alternating rounds." if args.rounds > 1 else "."))
    log(header)
    rows = []
    for name in args.models:
        log(f"{name}: export (cached in {models.models_dir()})...")
        entry = models.export(name, 13, None, True)
        for batch in args.batches:
            rows.append(measure(args, name, entry, batch, node_dir, work))
            r = rows[-1]
            log(f"{name} batch {batch}: " + ", ".join(
                f"{fw} {r[fw]['min_ms']:.1f} ms" if r.get(fw) else f"{fw} failed"
                for fw in FRAMEWORKS))
    print(header)
    print()
    print(table(rows, args.batches))
    failures = [(row["model"], row["batch"], fw, msg) for row in rows
                for fw, msg in row["errors"].items()]
    if failures:
        print()
        for model, batch, fw, msg in failures:
            print(f"- {model} batch {batch}, {fw}: {msg}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

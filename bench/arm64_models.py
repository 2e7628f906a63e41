"""The six models of the test suite on the cpu device of the aarch64 cross build, under qemu.

    /usr/bin/python3 bench/arm64_models.py [--models resnet18 ...] [--cpus neon sve512]
        [--opset 13] [--threads 2] [--arm64-dir build-arm64] [--build-dir build]

Each model is the tests' cached export (tests/python/models.py: torchvision weights seeded,
BatchNorm statistics calibrated, one 224x224 image at batch 1, PyTorch's output beside it;
made on the host first where it is missing). `tessera run MODEL --input input.npy --output
y.npy --verbose` runs under `qemu-aarch64-static -L <sysroot>` with QEMU_CPU set as
docs/arm64.md lists, and the table gives, per model and emulated CPU, the vector level the
cpu backend's nodes report (`cpu (neon)`, `cpu (sve 512-bit)`), the largest difference from
PyTorch's output over max |y|, whether the top-1 class agrees, and qemu's wall time, which
says nothing about Arm hardware. Build the cross tree first (`make cross-arm64`).
Output: a markdown table on stdout, progress on stderr."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

QEMU_CPUS = {
    "neon": "cortex-a72",
    "sve128": "max,sve-default-vector-length=16",
    "sve256": "max,sve-default-vector-length=32",
    "sve512": "max,sve-default-vector-length=64",
}
LEVEL = re.compile(r"-> cpu \(([^)]*)\)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+",
                    default=["squeezenet1_1", "mobilenet_v2", "resnet18", "densenet121",
                             "resnet50", "vgg16"])
    ap.add_argument("--cpus", nargs="+", default=["neon", "sve512"], choices=sorted(QEMU_CPUS))
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arm64-dir", default=str(ROOT / "build-arm64"))
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    args = ap.parse_args()
    os.environ.setdefault("TESSERA_BUILD_DIR", args.build_dir)
    import models

    arm = Path(args.arm64_dir)
    exe, sysroot = arm / "build" / "bin" / "tessera", arm / "sysroot"
    if not exe.is_file():
        sys.exit(f"{exe} is missing: run `make cross-arm64` first")
    print("| model | CPU | cpu nodes' level (--verbose) | max abs diff / max abs y | top-1 | "
          "qemu s |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for name in args.models:
        entry = models.export(name, args.opset, 1, False)
        want = np.load(entry.torch_output_path(1))
        for cpu in args.cpus:
            print(f"{name} on {cpu} ...", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "y.npy"
                cmd = ["qemu-aarch64-static", "-L", str(sysroot), str(exe), "run",
                       str(entry.onnx_path), "--input", str(entry.input_path(1)), "--output",
                       str(out), "--threads", str(args.threads), "--verbose"]
                start = time.monotonic()
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      env=dict(os.environ, QEMU_CPU=QEMU_CPUS[cpu]))
                seconds = time.monotonic() - start
                if done.returncode != 0:
                    sys.exit(f"{name} on {cpu} failed ({done.returncode}):\n{done.stderr[-3000:]}")
                got = np.load(out)
            levels = sorted(set(LEVEL.findall(done.stderr)))
            scale = float(np.abs(want).max())
            rel = float(np.abs(got.astype(np.float64) - want).max()) / scale
            worst = max(worst, rel)
            top1 = "same" if (got.argmax(-1) == want.argmax(-1)).all() else "differs"
            print(f"| {name} | {cpu} | {', '.join(levels) or 'none'} | {rel:.2e} | {top1} | "
                  f"{seconds:.0f} |", flush=True)
    print(f"\nlargest difference over max |y|: {worst:.2e}")


if __name__ == "__main__":
    main()

#!/bin/sh
# The GPU run (issue 15, docs/hal.md "CUDA"): builds Tessera with the cuda
# device, runs the GPU test subset (test_cuda_gpu.py: every op the cuda
# backend claims against ref, the fallback's transfers, the six
# classifiers against PyTorch; test_cuda_device.py) and writes into OUTDIR:
#   machine.txt  nvidia-smi, nvcc and cmake versions
#   build.log    configure and build
#   pytest.log   the tests' output (-rA: every case's outcome)
#   junit.xml    the same, per case
#   summary.txt  one line per stage and its exit status
# Usage: tests/gpu/run.sh OUTDIR. TESSERA_BUILD_DIR: use that build
# instead of building one (configured with -DTSR_WITH_CUDA=ON);
# PYTHON: the interpreter (python3).
# Stays well under 10 minutes on the H200 machine: one build with every
# core, single-node op cases, models at batch 1 exported once each.
set -u
OUT=${1:?usage: tests/gpu/run.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/summary.txt"
stage() { echo "$1: exit $2" >> "$OUT/summary.txt"; }

{ nvidia-smi; nvcc --version || /usr/local/cuda/bin/nvcc --version; cmake --version; } \
    > "$OUT/machine.txt" 2>&1

if [ -z "${TESSERA_BUILD_DIR:-}" ]; then
    TESSERA_BUILD_DIR=$ROOT/build-gpu
    { cmake -S "$ROOT" -B "$TESSERA_BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DTSR_WITH_CUDA=ON &&
      cmake --build "$TESSERA_BUILD_DIR" -j"$(nproc)"; } > "$OUT/build.log" 2>&1
    rc=$?
    stage build $rc
    if [ $rc -ne 0 ]; then
        echo "build failed (the library needs oneDNN, protobuf-c, protoc-c and onnx.proto" \
             "besides CUDA): see build.log" >> "$OUT/summary.txt"
        cat "$OUT/summary.txt"
        exit $rc
    fi
    if ! grep -q "cuda device: built" "$OUT/build.log"; then
        echo "CMake found no CUDA toolkit: the cuda device was not built" >> "$OUT/summary.txt"
        cat "$OUT/summary.txt"
        exit 1
    fi
fi
export TESSERA_BUILD_DIR

cd "$ROOT/tests/gpu" &&
    timeout 480 "${PYTHON:-python3}" -m pytest -q -rA -p no:cacheprovider test_cuda_gpu.py \
        "$ROOT/tests/python/test_cuda_device.py" --junitxml="$OUT/junit.xml" \
        > "$OUT/pytest.log" 2>&1
rc=$?
stage pytest $rc
tail -n 3 "$OUT/pytest.log" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"
exit $rc

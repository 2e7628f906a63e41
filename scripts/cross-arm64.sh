#!/bin/sh
# Cross build for aarch64 and its tests under qemu-user (docs/arm64.md).
# Usage: scripts/cross-arm64.sh [sysroot|build|test-short|test]
#   sysroot     unpack Debian's arm64 packages of the dependencies into
#               $ARM64_DIR/sysroot (made once, from apt-get download)
#   build       sysroot, then configure and build $ARM64_DIR/build
#   test-short  build, then the quick C tests on an emulated NEON CPU
#   test        build, then every C test on NEON and on SVE at 128, 256
#               and 512 bits; one log per CPU in $ARM64_DIR
# CPUS picks the emulated CPUs of either test (test-short: neon; test:
# neon sve128 sve256 sve512), e.g. CPUS="sve128 sve512" for the SVE level.
# The arm64 packages are unpacked, never installed: installing :arm64 -dev
# packages with dpkg can replace their amd64 versions.
set -eu

ARM64_DIR=${ARM64_DIR:-build-arm64}
JOBS=${JOBS:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mkdir -p "$ARM64_DIR"
dir=$(cd "$ARM64_DIR" && pwd)
sysroot=$dir/sysroot

# The libraries the build links and the tests load, with their runtime
# dependencies; libonnx-dev for onnx.proto.
pkgs="libdnnl-dev libdnnl2 libprotobuf-c-dev libprotobuf-c1 zlib1g-dev zlib1g libonnx-dev
libc6 libc6-dev linux-libc-dev libcrypt1 libcrypt-dev libnsl-dev libtirpc-dev
libgcc-s1 libgomp1 libstdc++6"

make_sysroot() {
    [ -f "$sysroot/.complete" ] && return 0
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "dpkg has no arm64 architecture; as root: dpkg --add-architecture arm64 && apt-get update" >&2
            exit 1
        fi
        dpkg --add-architecture arm64
        apt-get update -q
    fi
    debs=$dir/debs
    rm -rf "$debs" "$sysroot"
    mkdir -p "$debs" "$sysroot"
    # shellcheck disable=SC2046
    (cd "$debs" && apt-get download -q $(for p in $pkgs; do printf '%s:arm64 ' "$p"; done))
    for deb in "$debs"/*.deb; do
        dpkg-deb -x "$deb" "$sysroot"
    done
    # Absolute links (libz.so -> /lib/aarch64-linux-gnu/...) point into the
    # host: make them point into the sysroot, or the linker misses them.
    find "$sysroot" -type l | while read -r link; do
        target=$(readlink "$link")
        case $target in
        /*) ln -sfn "$sysroot$target" "$link" ;;
        esac
    done
    touch "$sysroot/.complete"
}

build() {
    scripts/install-deps.sh cross
    make_sysroot
    cmake -S . -B "$dir/build" -DCMAKE_TOOLCHAIN_FILE="$here/cmake/aarch64-linux-gnu.cmake" \
        -DTSR_SYSROOT="$sysroot" -DCMAKE_BUILD_TYPE=Release -DTSR_LAMMPS=OFF
    cmake --build "$dir/build" -j"$JOBS"
}

# QEMU_CPU for each emulated CPU: a Cortex-A72 has NEON and no SVE; "max"
# has SVE, its default vector length set in bytes.
cpu_of() {
    case $1 in
    neon) echo cortex-a72 ;;
    sve128) echo max,sve-default-vector-length=16 ;;
    sve256) echo max,sve-default-vector-length=32 ;;
    sve512) echo max,sve-default-vector-length=64 ;;
    esac
}

# The quick subset: the kernels against ref, oneDNN, the passes and plans.
short_tests="^(test_simd_math|test_cpu_kernels|test_dnnl|test_graph|test_autodiff|test_plan|test_passes|readme_example)$"

run_ctest() { # name, extra ctest arguments
    name=$1
    shift
    echo "== $name (QEMU_CPU=$(cpu_of "$name"))"
    QEMU_CPU=$(cpu_of "$name") ctest --test-dir "$dir/build" -j"$JOBS" --timeout 1200 \
        --output-on-failure "$@" >"$dir/ctest-$name.log" 2>&1 || {
        tail -40 "$dir/ctest-$name.log"
        return 1
    }
    tail -3 "$dir/ctest-$name.log"
}

case "${1:-build}" in
sysroot) make_sysroot ;;
build) build ;;
test-short | test)
    build
    if [ "$1" = test-short ]; then
        cpus=${CPUS:-neon}
        set -- -R "$short_tests"
    else
        cpus=${CPUS:-neon sve128 sve256 sve512}
        set --
    fi
    failed=""
    for name in $cpus; do
        [ -n "$(cpu_of "$name")" ] || { echo "unknown CPU $name (neon, sve128, sve256, sve512)" >&2; exit 2; }
        run_ctest "$name" "$@" || failed="$failed $name"
    done
    [ -z "$failed" ] || { echo "failed on:$failed" >&2; exit 1; }
    ;;
*) echo "usage: $0 sysroot|build|test-short|test" >&2; exit 2 ;;
esac

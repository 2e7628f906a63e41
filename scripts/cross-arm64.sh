#!/bin/sh
# Cross build for aarch64 and its tests under qemu-user (docs/arm64.md).
# Usage: scripts/cross-arm64.sh [sysroot|build|test-short|test|test-python]
#   sysroot     unpack Debian's arm64 packages of the dependencies, and of
#               Python with numpy and pytest for the Python tests, into
#               $ARM64_DIR/sysroot (made once, from apt-get download)
#   build       sysroot, then configure and build $ARM64_DIR/build
#   test-short  build, then the quick C tests on an emulated NEON CPU and
#               a slice of the op x backend harness on 256-bit SVE
#   test        build, then every C test on NEON and on SVE at 128, 256
#               and 512 bits; one log per CPU in $ARM64_DIR
#   test-python build, then the Python tests PY_TESTS (default: the op x
#               backend harness and the cpu kernel tests) with the arm64
#               Python and libtessera.so, on each CPU
# CPUS picks the emulated CPUs (test-short: neon for the C tests; test and
# test-python: neon sve128 sve256 sve512), e.g. CPUS="sve128 sve512";
# PYTEST_ARGS are passed on to pytest.
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
# dependencies; libonnx-dev for onnx.proto. Then Python 3.11 with numpy
# (its BLAS and LAPACK) and pytest (all-architecture packages) for the
# Python tests: qemu resolves every absolute path inside the sysroot first,
# so the interpreter finds its modules there.
pkgs="libdnnl-dev libdnnl2 libprotobuf-c-dev libprotobuf-c1 zlib1g-dev zlib1g libonnx-dev
libc6 libc6-dev linux-libc-dev libcrypt1 libcrypt-dev libnsl-dev libtirpc-dev
libgcc-s1 libgomp1 libstdc++6"
py_pkgs="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3-numpy libblas3
liblapack3 libgfortran5 libexpat1 libffi8 libbz2-1.0 liblzma5 libssl3 libsqlite3-0 libuuid1
libncursesw6 libtinfo6 libreadline8 libdb5.3 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3
libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1"
py_all="python3-pytest python3-pluggy python3-iniconfig python3-packaging python3-attr python3-py
python3-more-itertools python3-pkg-resources python3-setuptools"

make_sysroot() {
    # Remade when the package lists change.
    want="$pkgs $py_pkgs $py_all"
    [ -f "$sysroot/.complete" ] && [ "$(cat "$sysroot/.complete")" = "$want" ] && return 0
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
    (cd "$debs" && apt-get download -q $(for p in $pkgs $py_pkgs; do printf '%s:arm64 ' "$p"; done) \
        $py_all)
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
    # What update-alternatives would link for numpy.
    lib=$sysroot/usr/lib/aarch64-linux-gnu
    ln -sfn blas/libblas.so.3 "$lib/libblas.so.3"
    ln -sfn lapack/liblapack.so.3 "$lib/liblapack.so.3"
    printf '%s' "$want" >"$sysroot/.complete"
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

# The Python tests with the arm64 interpreter and library, under qemu:
# name, then pytest's arguments.
run_pytest() {
    name=$1
    shift
    echo "== $name, pytest (QEMU_CPU=$(cpu_of "$name"))"
    (cd tests/python && QEMU_CPU=$(cpu_of "$name") TESSERA_LIB="$dir/build/lib/libtessera.so" \
        TESSERA_BUILD_DIR="$dir/build" \
        qemu-aarch64-static -L "$sysroot" "$sysroot/usr/bin/python3.11" -m pytest -q \
        -p no:cacheprovider "$@") >"$dir/pytest-$name.log" 2>&1 || {
        tail -40 "$dir/pytest-$name.log"
        return 1
    }
    tail -1 "$dir/pytest-$name.log"
}

check_cpu() {
    [ -n "$(cpu_of "$1")" ] || { echo "unknown CPU $1 (neon, sve128, sve256, sve512)" >&2; exit 2; }
}

failed=""
case "${1:-build}" in
sysroot) make_sysroot ;;
build) build ;;
test-short)
    build
    for name in ${CPUS:-neon}; do
        check_cpu "$name"
        run_ctest "$name" -R "$short_tests" || failed="$failed $name"
    done
    # A slice of the op x backend harness: a few op families, every case and layout.
    run_pytest sve256 test_backend_ops.py -k "Relu or Add or MaxPool or Softmax or Conv" \
        ${PYTEST_ARGS:-} || failed="$failed sve256-python"
    ;;
test)
    build
    for name in ${CPUS:-neon sve128 sve256 sve512}; do
        check_cpu "$name"
        run_ctest "$name" || failed="$failed $name"
    done
    ;;
test-python)
    build
    for name in ${CPUS:-neon sve128 sve256 sve512}; do
        check_cpu "$name"
        # shellcheck disable=SC2086
        run_pytest "$name" ${PY_TESTS:-test_backend_ops.py test_cpu_kernels.py} ${PYTEST_ARGS:-} ||
            failed="$failed $name"
    done
    ;;
*) echo "usage: $0 sysroot|build|test-short|test|test-python" >&2; exit 2 ;;
esac
[ -z "$failed" ] || { echo "failed on:$failed" >&2; exit 1; }

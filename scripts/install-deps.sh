#!/bin/sh
# Installs the Debian packages a target needs, if any are missing.
# Usage: scripts/install-deps.sh build|test|fuzz|data|lammps|cross
# As root it runs apt-get; otherwise it names what is missing and fails.
set -eu

# gnuplot draws the PNG curves of the training and MD logs.
build_pkgs="gcc make cmake pkg-config libprotobuf-c-dev protobuf-c-compiler libonnx-dev libdnnl-dev zlib1g-dev gnuplot-nox"
# fuzz: libFuzzer and the sanitizer runtimes come with clang; clang's OpenMP
# is libomp; the seed corpora are written with numpy, onnx, ASE and the
# ICTP reference (torch).
fuzz_pkgs="$build_pkgs clang-14 libclang-rt-14-dev libomp-14-dev python3 python3-numpy python3-onnx python3-ase python3-torch"
# data: labelled ICTP training data (tools/ictp_data.py): xtb, Open Babel, ASE.
data_pkgs="python3 python3-numpy python3-ase xtb openbabel python3-openbabel"
# lammps: tessera-lammps, pair_style tessera/ictp (docs/lammps.md); the
# build skips it when liblammps-dev is missing.
lammps_extra="g++ lammps liblammps-dev mpi-default-dev mpi-default-bin"
lammps_pkgs="$build_pkgs $lammps_extra"
# cross: the aarch64 cross compiler and qemu-user to run its tests
# (scripts/cross-arm64.sh, docs/arm64.md); the arm64 libraries are unpacked
# into a sysroot there, not installed.
cross_pkgs="cmake make pkg-config protobuf-c-compiler gcc-aarch64-linux-gnu qemu-user-static"
# test: the whole suite, LAMMPS on 1 and 2 MPI ranks included.
test_pkgs="$fuzz_pkgs python3-pytest python3-torchvision $lammps_extra"

case "${1:-build}" in
build) want=$build_pkgs ;;
test) want=$test_pkgs ;;
fuzz) want=$fuzz_pkgs ;;
data) want=$data_pkgs ;;
lammps) want=$lammps_pkgs ;;
cross) want=$cross_pkgs ;;
*) echo "usage: $0 build|test|fuzz|data|lammps|cross" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages:$missing" >&2
    echo "Install them with: sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "Installing missing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q $missing

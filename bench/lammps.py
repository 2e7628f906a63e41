"""MD steps per second of pair_style tessera/ictp in LAMMPS (tessera-lammps) on 1 and 2 MPI
ranks, beside `tessera ictp bench` on the same periodic structure (no ghost atoms).

    /usr/bin/python3 bench/lammps.py [--atoms 1000] [--steps 5] [--ranks 1 2] [--threads 1]
        [--dtype float64] [--build-dir DIR]

The model and structures are bench/ictp.py's: the published configuration (F = G = 32,
2 interactions, nu = 3, r_c = 5 A, four species) with random weights, and fcc bulk
(lattice constant 3.8 A, atoms displaced by up to 0.1 A). LAMMPS runs velocity Verlet at
0.5 fs from 300 K (units metal, neighbor skin 1 A); one step first, untimed, builds the
plans, then --steps steps are timed by LAMMPS's own loop time. Each rank evaluates its atoms
with the ghosts within two hops (tsr_ictp_evaluate_local), so a rank's cost is that of a
cluster larger than its share of the cell (the table gives LAMMPS's ghost count per rank,
out to the receptive field plus the skin; those beyond two hops are dropped).

Progress goes to stderr; stdout gets a markdown table."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "python"))

import ictp as ictp_bench  # noqa: E402
import ictp_reference as ref  # noqa: E402

MASSES = {1: 1.008, 6: 12.011, 7: 14.007, 8: 15.999}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write_data(path, numbers, pos, cell):
    type_of = {z: t + 1 for t, z in enumerate(ictp_bench.SPECIES)}
    lines = ["bench/lammps.py fcc bulk", "", f"{len(numbers)} atoms",
             f"{len(ictp_bench.SPECIES)} atom types", ""]
    for axis, length in zip("xyz", np.diag(cell)):
        lines.append(f"0.0 {length!r} {axis}lo {axis}hi")
    lines += ["", "Masses", ""]
    lines += [f"{type_of[z]} {MASSES[z]}" for z in ictp_bench.SPECIES]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {type_of[int(z)]} {p[0]!r} {p[1]!r} {p[2]!r}"
              for i, (z, p) in enumerate(zip(numbers, pos))]
    path.write_text("\n".join(lines) + "\n")


def run_lammps(args, work, model, ranks):
    elements = " ".join(ictp_bench.SYMBOLS[z] for z in ictp_bench.SPECIES)
    script = f"""units metal
atom_style atomic
boundary p p p
read_data data.lmp
pair_style tessera/ictp dtype {args.dtype} threads {args.threads}
pair_coeff * * {model} {elements}
neighbor 1.0 bin
velocity all create 300.0 1 mom yes rot no
timestep 0.0005
fix nve all nve
thermo_style custom step pe ke etotal
run 1
run {args.steps}
"""
    (work / "in.lmp").write_text(script)
    exe = Path(args.build_dir) / "bin" / "tessera-lammps"
    cmd = [str(exe), "-in", "in.lmp", "-log", "none", "-echo", "none"]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(ranks)] + \
              (["--allow-run-as-root"] if os.geteuid() == 0 else []) + cmd
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                       env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", r.stdout)
    seconds, steps = float(loops[-1][0]), int(loops[-1][1])
    ghosts = re.findall(r"Nghost:\s+([0-9.]+) ave", r.stdout)
    return steps / seconds, float(ghosts[-1]) if ghosts else float("nan")


def run_tessera(args, model, xyz):
    exe = Path(args.build_dir) / "bin" / "tessera"
    r = subprocess.run([str(exe), "ictp", "bench", model, str(xyz), "--iters", "3", "--dtype",
                        args.dtype, "--threads", str(args.threads)], capture_output=True,
                       text=True, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return 1000.0 / float(re.search(r"ms per evaluation: ([0-9.]+)", r.stdout).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--atoms", type=int, default=1000, choices=sorted(ictp_bench.FCC_CELLS))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="Tessera threads per rank")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--build-dir", default=os.environ.get("TESSERA_BUILD_DIR",
                                                         str(BENCH_DIR.parent / "build")))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = ref.default_config(atomic_types=ictp_bench.SPECIES,
                                 n_species=len(ictp_bench.SPECIES))
        model = ref.random_model(str(work / "model"), cfg, seed=0)
        numbers, pos, cell = ictp_bench.bulk(args.atoms)
        write_data(work / "data.lmp", numbers, pos, cell)
        ictp_bench.write_extxyz(work / "bulk.extxyz", numbers, pos, cell)
        rows = []
        log(f"tessera ictp bench, {args.atoms} atoms ...")
        rows.append(("tessera ictp bench (periodic, no ghosts)", 1, run_tessera(
            args, model, work / "bulk.extxyz"), float("nan")))
        for ranks in args.ranks:
            log(f"tessera-lammps, {ranks} rank(s), {args.steps} steps ...")
            rate, ghosts = run_lammps(args, work, model, ranks)
            rows.append(("LAMMPS pair_style tessera/ictp", ranks, rate, ghosts))
    print(f"{args.atoms}-atom fcc bulk, {args.dtype}, {args.threads} thread(s) per rank\n")
    print("| run | ranks | steps/s | ns/day at 0.5 fs | ghost atoms per rank |")
    print("|---|---|---|---|---|")
    for name, ranks, rate, ghosts in rows:
        print(f"| {name} | {ranks} | {rate:.3f} | {rate * 0.5e-6 * 86400:.4f} | "
              f"{'' if ghosts != ghosts else f'{ghosts:.0f}'} |")


if __name__ == "__main__":
    main()

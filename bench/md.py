"""MD speed: `tessera md` and ASE's VelocityVerlet driving tessera.ictp.Calculator.

    /usr/bin/python3 bench/md.py [--sizes 21 1000] [--steps 200 3] [--dtypes float64 float32]
        [--threads 2] [--ase] [--model MODEL.npz] [--build-dir DIR]

The structures and the model of bench/ictp.py: the published configuration with random
weights (seed 0, 4 species), a 21-atom molecule (C9H8O4) and periodic fcc bulk of 1000 atoms
(5x5x10 cells, a = 3.8 A), or --model with the structure of its own species (the 21-atom
molecule needs H, C and O). NVE from Maxwell-Boltzmann velocities at 300 K with a 0.5 fs
step, one frame at the end, skin 1 A. Steps per second and ns/day are tessera md's own
summary line, which times the steps only (the model load, the plan and the first forces
are not in it); --steps gives the step count per size, in the order of --sizes. With
--ase, the same run through ASE (tessera.ictp.Calculator, which builds a fresh neighbour
list each evaluation) after one untimed evaluation. Random weights make fast, unphysical
motion; the timings do not depend on it. Output: a markdown table on stdout."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "python"))
sys.path.insert(0, str(BENCH_DIR.parent / "python"))

import ictp as bench_ictp  # noqa: E402


def run_tessera(exe, model, xyz, steps, dtype, threads, workdir):
    traj = os.path.join(workdir, "traj.extxyz")
    cmd = [str(exe), "md", model, xyz, "--steps", str(steps), "--dt", "0.5", "--temperature",
           "300", "--trajectory", traj, "--every", str(steps), "--report", str(steps),
           "--dtype", dtype, "--threads", str(threads), "--no-plot"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    m = re.search(r"# (\d+) steps in ([0-9.]+) s: ([0-9.e+-]+) steps/s, ([0-9.e+-]+) ns/day",
                  r.stdout)
    return float(m.group(3)), float(m.group(4))


def run_ase(model, numbers, pos, cell, steps, dtype, threads):
    import ase
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from tessera.ictp import Calculator
    atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=cell is not None)
    atoms.calc = Calculator(model, dtype=dtype, threads=threads)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300)
    atoms.get_forces()
    dyn = VelocityVerlet(atoms, timestep=0.5 * ase.units.fs)
    t = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - t
    return steps / seconds, steps * 0.5e-6 * 86400 / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[21, 1000])
    ap.add_argument("--steps", type=int, nargs="+", default=[200, 3])
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ase", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--build-dir")
    args = ap.parse_args()
    if len(args.steps) != len(args.sizes):
        raise SystemExit("bench/md.py: give one --steps count per size")
    exe = bench_ictp.tessera_bin(args)
    print(f"tessera md, NVE, dt 0.5 fs, {args.threads} threads, "
          f"{os.cpu_count()} cpus ({bench_ictp.platform.machine()})")
    print("\n| atoms | dtype | driver | steps | steps/s | ns/day |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        model = args.model
        if not model:
            import ictp_reference as ref
            cfg = ref.default_config(atomic_types=bench_ictp.SPECIES,
                                     n_species=len(bench_ictp.SPECIES))
            model = ref.random_model(os.path.join(d, "model"), cfg, seed=0)
        for n, steps in zip(args.sizes, args.steps):
            numbers, pos, cell = bench_ictp.structure(n)
            xyz = os.path.join(d, f"s{n}.extxyz")
            bench_ictp.write_extxyz(xyz, numbers, pos, cell)
            for dtype in args.dtypes:
                rows = [("tessera md", lambda: run_tessera(exe, model, xyz, steps, dtype,
                                                            args.threads, d))]
                if args.ase:
                    rows.append(("ASE + Calculator",
                                 lambda: run_ase(model, numbers, pos, cell, steps, dtype,
                                                 args.threads)))
                for name, fn in rows:
                    bench_ictp.log(f"{n} atoms, {dtype}, {name} ...")
                    sps, nsd = fn()
                    print(f"| {n} | {dtype} | {name} | {steps} | {sps:.3g} | {nsd:.3g} |",
                          flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Labelled data for training ICTP potentials (issue 12 item 1).

Molecules (GFN2-xTB through Debian's `xtb`):
    tools/ictp_data.py xtb --smiles CCO --frames 1000 --out ethanol.extxyz
makes an Open Babel 3D geometry from the SMILES, optimizes it with
`xtb --opt`, runs xtb's own MD at 500 K (0.5 fs step, real hydrogen masses,
no SHAKE) for 2 ps of equilibration and then `frames` x 10 fs, keeps a frame
every 10 fs after the equilibration, and computes one `xtb --grad` single
point per frame. Energies are written in eV and forces in eV/Å
(F = -gradient, converted from Hartree/Bohr). `--check-forces` compares one
frame's forces with central finite differences of xtb energies.

Metals (ASE's EMT):
    tools/ictp_data.py emt --element Cu --lattice fcc --frames 200 --out cu.extxyz
rattled positions in randomly strained supercells: energies, forces, stress.

Both are deterministic for a given --seed (xtb's MD starts from the seeded,
slightly rattled optimized geometry; xtb itself is deterministic). Progress
goes to stderr. Install the tools with `scripts/install-deps.sh data`.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HARTREE_EV = 27.211386245988
BOHR_A = 0.529177210903
MD_STEP_FS = 0.5
DUMP_FS = 10.0
EQUIL_PS = 2.0

SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 16: "S"}


def progress(label, i, n):
    if sys.stderr.isatty():
        width = 30
        done = int(width * i / max(n, 1))
        sys.stderr.write(f"\r{label} [{'#' * done}{'.' * (width - done)}] {i}/{n}")
        if i == n:
            sys.stderr.write("\n")
    elif i == n or i % max(n // 10, 1) == 0:
        sys.stderr.write(f"{label}: {i}/{n}\n")
    sys.stderr.flush()


def need(tool):
    if shutil.which(tool) is None:
        sys.exit(f"ictp_data: '{tool}' is not installed (scripts/install-deps.sh data)")


def run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_STACKSIZE="500M")
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr)[-2000:]
        sys.exit(f"ictp_data: {' '.join(cmd)} failed (exit {r.returncode}):\n{tail}")
    return r.stdout


def write_xyz(path, symbols, pos, comment=""):
    with open(path, "w") as f:
        f.write(f"{len(symbols)}\n{comment}\n")
        for s, p in zip(symbols, pos):
            f.write(f"{s} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}\n")


def read_xyz_frames(path):
    """All frames of an xyz file: (symbols, positions [n, 3]) each."""
    frames = []
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i])
        rows = [lines[i + 2 + k].split() for k in range(n)]
        frames.append(([r[0].capitalize() for r in rows],
                       np.array([[float(x) for x in r[1:4]] for r in rows])))
        i += n + 2
    return frames


def read_gradient(path, n):
    """Energy (Hartree) and gradient (Hartree/Bohr) of the last cycle of a
    Turbomole-style `gradient` file."""
    with open(path) as f:
        lines = f.read().splitlines()
    cycles = [k for k, line in enumerate(lines) if "cycle" in line and "energy" in line]
    if not cycles:
        sys.exit(f"ictp_data: no energy in {path}")
    k = cycles[-1]
    energy = float(lines[k].split("=")[2].split()[0].replace("D", "E"))
    grad = [[float(x.replace("D", "E")) for x in lines[k + 1 + n + a].split()[:3]]
            for a in range(n)]
    return energy, np.array(grad)


def xtb_single_point(work, symbols, pos, acc):
    """Energy (eV) and forces (eV/Å) of one geometry."""
    write_xyz(os.path.join(work, "sp.xyz"), symbols, pos)
    for stale in ("gradient", "energy"):
        if os.path.exists(os.path.join(work, stale)):
            os.remove(os.path.join(work, stale))
    run(["xtb", "sp.xyz", "--grad", "--acc", str(acc), "--norestart"], work)
    e, g = read_gradient(os.path.join(work, "gradient"), len(symbols))
    return e * HARTREE_EV, -g * (HARTREE_EV / BOHR_A)


def xtb_energy(work, symbols, pos, acc):
    write_xyz(os.path.join(work, "fd.xyz"), symbols, pos)
    out = run(["xtb", "fd.xyz", "--sp", "--acc", str(acc), "--norestart"], work)
    for line in out.splitlines():
        if "TOTAL ENERGY" in line:
            return float(line.split()[3]) * HARTREE_EV
    sys.exit("ictp_data: no TOTAL ENERGY in xtb's output")


def write_extxyz(f, symbols, pos, energy, forces, cell=None, stress=None):
    props = "Properties=species:S:1:pos:R:3:forces:R:3"
    info = f"energy={energy:.12f}"
    if cell is not None:
        lat = " ".join(f"{x:.10f}" for x in np.asarray(cell).reshape(9))
        info = f'Lattice="{lat}" pbc="T T T" ' + info
    else:
        info = 'pbc="F F F" ' + info
    if stress is not None:
        info += ' stress="' + " ".join(f"{x:.12e}" for x in np.asarray(stress).reshape(9)) + '"'
    f.write(f"{len(symbols)}\n{props} {info}\n")
    for s, p, F in zip(symbols, pos, forces):
        f.write(f"{s} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f} {F[0]:.10f} {F[1]:.10f} {F[2]:.10f}\n")


def check_forces(work, symbols, pos, forces, acc, rng, n_checks=6, h=1e-3):
    """Largest |F - F_fd| (eV/Å) over random components."""
    worst = 0.0
    for _ in range(n_checks):
        a, k = int(rng.integers(len(symbols))), int(rng.integers(3))
        p, m = pos.copy(), pos.copy()
        p[a, k] += h
        m[a, k] -= h
        fd = -(xtb_energy(work, symbols, p, acc) - xtb_energy(work, symbols, m, acc)) / (2 * h)
        worst = max(worst, abs(fd - forces[a, k]))
        sys.stderr.write(f"  atom {a} axis {k}: F = {forces[a, k]:+.6f}, "
                         f"finite differences {fd:+.6f} eV/A\n")
    return worst


def cmd_xtb(args):
    for tool in ("xtb", "obabel"):
        need(tool)
    rng = np.random.default_rng(args.seed)
    work = tempfile.mkdtemp(prefix="ictp_xtb_")
    try:
        run(["obabel", f"-:{args.smiles}", "-O", "start.xyz", "--gen3d", "-h"], work)
        symbols, pos = read_xyz_frames(os.path.join(work, "start.xyz"))[0]
        sys.stderr.write(f"{args.smiles}: {len(symbols)} atoms, optimizing\n")
        run(["xtb", "start.xyz", "--opt", "tight"], work)
        symbols, pos = read_xyz_frames(os.path.join(work, "xtbopt.xyz"))[0]
        pos = pos + rng.normal(scale=0.01, size=pos.shape)
        write_xyz(os.path.join(work, "md.xyz"), symbols, pos)
        total_ps = EQUIL_PS + args.frames * DUMP_FS / 1000.0
        with open(os.path.join(work, "md.inp"), "w") as f:
            f.write(f"$md\n   temp={args.temperature}\n   time={total_ps}\n   dump={DUMP_FS}\n"
                    f"   step={MD_STEP_FS}\n   hmass=1\n   shake=0\n   nvt=true\n"
                    f"   velo=false\n$end\n")
        sys.stderr.write(f"MD at {args.temperature} K for {total_ps:g} ps\n")
        run(["xtb", "md.xyz", "--md", "--input", "md.inp"], work)
        frames = read_xyz_frames(os.path.join(work, "xtb.trj"))
        skip = int(round(EQUIL_PS * 1000.0 / DUMP_FS))
        frames = frames[skip:skip + args.frames]
        if len(frames) < args.frames:
            sys.exit(f"ictp_data: xtb's MD gave {len(frames)} frames after equilibration, "
                     f"{args.frames} wanted")
        tmp = args.out + ".tmp"
        with open(tmp, "w") as out:
            for i, (sym, p) in enumerate(frames):
                e, F = xtb_single_point(work, sym, p, args.acc)
                write_extxyz(out, sym, p, e, F)
                if i == 0 and args.check_forces:
                    worst = check_forces(work, sym, p, F, args.acc, rng)
                    sys.stderr.write(f"forces vs finite differences: max error {worst:.2e} eV/A\n")
                    if worst > 1e-3:
                        sys.exit("ictp_data: xtb's forces disagree with its energies")
                progress("single points", i + 1, len(frames))
        os.replace(tmp, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cmd_emt(args):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(args.seed)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as out:
        for i in range(args.frames):
            atoms = bulk(args.element, args.lattice, cubic=True).repeat(args.repeat)
            eps = rng.uniform(-args.strain, args.strain, size=(3, 3))
            eps = 0.5 * (eps + eps.T)
            atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
            atoms.positions += rng.normal(scale=args.rattle, size=atoms.positions.shape)
            atoms.calc = EMT()
            e = atoms.get_potential_energy()
            F = atoms.get_forces()
            s = atoms.get_stress(voigt=False)
            write_extxyz(out, atoms.get_chemical_symbols(), atoms.positions, e, F,
                         cell=atoms.cell[:], stress=s)
            progress("EMT frames", i + 1, args.frames)
    os.replace(tmp, args.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    x = sub.add_parser("xtb", help="GFN2-xTB MD frames of a molecule")
    x.add_argument("--smiles", default="CCO", help="molecule (default ethanol)")
    x.add_argument("--frames", type=int, default=1000)
    x.add_argument("--temperature", type=float, default=500.0)
    x.add_argument("--acc", type=float, default=0.01, help="xtb accuracy (lower is tighter)")
    x.add_argument("--check-forces", action="store_true",
                   help="compare the first frame's forces with finite differences")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--out", required=True)
    m = sub.add_parser("emt", help="ASE EMT frames of a rattled, strained metal")
    m.add_argument("--element", default="Cu")
    m.add_argument("--lattice", default="fcc", choices=["fcc", "bcc"])
    m.add_argument("--repeat", type=int, default=2)
    m.add_argument("--frames", type=int, default=100)
    m.add_argument("--rattle", type=float, default=0.05, help="position noise, Å")
    m.add_argument("--strain", type=float, default=0.02, help="largest strain component")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.frames < 1:
        sys.exit("ictp_data: --frames must be at least 1")
    cmd_xtb(args) if args.cmd == "xtb" else cmd_emt(args)


if __name__ == "__main__":
    main()

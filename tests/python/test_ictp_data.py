"""tools/ictp_data.py: labelled data for ICTP training. EMT frames carry energy,
forces and stress that Tessera's extxyz reader takes and that agree with ASE;
xtb frames (slow) have forces that agree with finite differences of xtb's
energies, in eV and eV/Å, and the same seed gives the same file."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tsr

SCRIPT = os.path.join(tsr.ROOT, "tools", "ictp_data.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True)


def test_emt_frames(tmp_path):
    pytest.importorskip("ase")
    from ase.calculators.emt import EMT
    from ase import Atoms

    out = tmp_path / "cu.extxyz"
    r = run("emt", "--element", "Cu", "--frames", 3, "--seed", 4, "--out", out)
    assert r.returncode == 0, r.stderr
    frames = tsr.read_extxyz(out)
    assert len(frames) == 3
    f = frames[1]
    a = Atoms(numbers=f.numbers, positions=f.positions, cell=f.cell()[0], pbc=True)
    a.calc = EMT()
    np.testing.assert_allclose(f.info()["energy"][0, 0], a.get_potential_energy(), atol=1e-9)
    np.testing.assert_allclose(f.arrays()["forces"], a.get_forces(), atol=1e-8)
    np.testing.assert_allclose(f.info()["stress"].reshape(3, 3), a.get_stress(voigt=False),
                               atol=1e-10)
    again = tmp_path / "again.extxyz"
    assert run("emt", "--element", "Cu", "--frames", 3, "--seed", 4, "--out", again).returncode == 0
    assert out.read_bytes() == again.read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xtb") is None or shutil.which("obabel") is None,
                    reason="xtb and Open Babel (scripts/install-deps.sh data)")
def test_xtb_frames_and_forces(tmp_path):
    out = tmp_path / "ethanol.extxyz"
    r = run("xtb", "--smiles", "CCO", "--frames", 2, "--check-forces", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "forces vs finite differences: max error" in r.stderr
    frames = tsr.read_extxyz(out)
    assert len(frames) == 2 and len(frames[0].numbers) == 9
    e = frames[0].info()["energy"][0, 0]
    assert -320 < e < -300  # eV: GFN2-xTB ethanol is about -11.4 Hartree
    assert np.abs(frames[0].arrays()["forces"]).max() < 20  # eV/Å at 500 K

"""An ASE calculator over Tessera's ICTP evaluator (include/tessera/ictp.h).

    from tessera.ictp import Calculator
    atoms.calc = Calculator("model.npz", dtype="float64", threads=2)
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()

Energies in eV, forces in eV/Å, stress in eV/Å³ as ASE's Voigt vector
(xx, yy, zz, yz, xz, xy), the derivative of the energy with respect to strain
over the volume; `stresses`, per-atom stresses in the same order that add up
to the stress: each atom's share of the virial (tsr_ictp_evaluate_local_virial:
half of each edge's term to either of its atoms) over minus the volume, as
ASE's LennardJones has them. A structure with no cell is a molecule; periodic axes follow
`atoms.pbc`. Every evaluation runs in C (no part of the model runs in Python);
atom and edge counts that change between calls, as in MD, reuse the
evaluator's plans (its size classes)."""

import ctypes as C

import numpy as np
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes

from .. import _capi

_DTYPES = {"float32": _capi.DTYPES[np.dtype(np.float32)],
           "float64": _capi.DTYPES[np.dtype(np.float64)]}


class Calculator(_AseCalculator):
    """ASE calculator for an ICTP model file (MODEL.npz with MODEL.json beside it).

    dtype: "float64" (default) or "float32"; threads: None for all cores;
    device: None for the library's default ("cpu"), or "ref"; radial_table: None (the
    model's radial MLPs, exact) or a number of intervals (16 to 65536) on which they are
    tabulated as cubic splines when the calculator is created: faster, within the
    spline's error (docs/ictp.md; 2048 keeps forces within about 1e-7 relative)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "stresses",
                              "energies"]

    def __init__(self, model_path, dtype="float64", threads=None, device=None,
                 radial_table=None, **kwargs):
        super().__init__(**kwargs)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads is {threads}; use None for all cores")
        if radial_table is not None and not 16 <= radial_table <= 65536:
            raise ValueError(f"radial_table is {radial_table}; use None for the MLPs or "
                             "16 to 65536 intervals")
        lib = _capi.lib()
        self._model = self._evaluator = None
        model, evaluator = C.c_void_p(), C.c_void_p()
        _capi.check(lib.tsr_ictp_model_load(str(model_path).encode(), C.byref(model)))
        self._model = model
        opt = _capi.IctpOptions()
        lib.tsr_ictp_options_init(C.byref(opt))
        opt.dtype = _DTYPES[dtype]
        opt.threads = threads or 0
        opt.device = device.encode() if device else None
        opt.radial_table = radial_table or 0
        _capi.check(lib.tsr_ictp_evaluator_create(model, C.byref(opt), C.byref(evaluator)))
        self._evaluator = evaluator
        self.cutoff = lib.tsr_ictp_model_cutoff(model)

    def __del__(self):
        if not _capi.loaded():
            return
        if getattr(self, "_evaluator", None):
            _capi.lib().tsr_ictp_evaluator_destroy(self._evaluator)
        if getattr(self, "_model", None):
            _capi.lib().tsr_ictp_model_destroy(self._model)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        lib = _capi.lib()
        n = len(atoms)
        numbers = np.ascontiguousarray(atoms.numbers, dtype=np.int32)
        positions = np.ascontiguousarray(atoms.positions, dtype=np.float64)
        has_cell = atoms.cell.rank == 3
        if not has_cell and atoms.pbc.any():
            raise ValueError("periodic axes need a cell of three lattice vectors")
        cell = np.ascontiguousarray(atoms.cell.array, dtype=np.float64) if has_cell else None
        pbc = (C.c_int * 3)(*[int(p) for p in atoms.pbc])
        handle = C.c_void_p()
        ptr = lambda a: a.ctypes.data_as(C.c_void_p)  # noqa: E731
        _capi.check(lib.tsr_atoms_create(n, ptr(numbers), ptr(positions),
                                         ptr(cell) if has_cell else None,
                                         C.cast(pbc, C.c_void_p) if has_cell else None,
                                         C.byref(handle)))
        want_stress = "stress" in properties
        want_stresses = "stresses" in properties
        if want_stresses and not (has_cell and abs(atoms.get_volume()) > 0):
            raise ValueError("per-atom stresses need a cell of non-zero volume")
        energy = C.c_double()
        forces, energies, stress = np.zeros((n, 3)), np.zeros(n), np.zeros(9)
        virials = np.zeros((n, 6))
        try:
            if want_stresses:
                _capi.check(lib.tsr_ictp_evaluate_local_virial(
                    self._evaluator, handle, n, C.byref(energy), ptr(forces), ptr(energies),
                    ptr(virials)))
            else:
                _capi.check(lib.tsr_ictp_evaluate(
                    self._evaluator, handle, C.byref(energy), ptr(forces),
                    ptr(stress) if want_stress else None, ptr(energies)))
        finally:
            lib.tsr_atoms_destroy(handle)
        self.results = {"energy": energy.value, "free_energy": energy.value, "forces": forces,
                        "energies": energies}
        if want_stresses:
            # vatom's xx yy zz xy xz yz to ASE's Voigt order, stress = -virial / V.
            stresses = -virials[:, [0, 1, 2, 5, 4, 3]] / abs(atoms.get_volume())
            self.results["stresses"] = stresses
            self.results["stress"] = stresses.sum(axis=0)
        elif want_stress:
            s = stress.reshape(3, 3)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2],
                                               s[0, 1]])

"""ICTP interatomic potentials: `tessera.ictp.Calculator`, an ASE calculator
over Tessera's evaluator, and `python3 -m tessera.ictp.convert`, which turns an
authors' checkpoint into the MODEL.npz + MODEL.json pair that Tessera loads
(include/tessera/ictp.h, `tessera ictp eval`)."""


def __getattr__(name):
    # ASE is imported only when the calculator is asked for.
    if name == "Calculator":
        from .calculator import Calculator
        return Calculator
    raise AttributeError(f"module 'tessera.ictp' has no attribute {name!r}")

"""ICTP interatomic potentials: `python3 -m tessera.ictp.convert` turns an
authors' checkpoint into the MODEL.npz + MODEL.json pair that Tessera loads
(include/tessera/ictp.h, `tessera ictp eval`)."""

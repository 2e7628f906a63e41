"""Converts a checkpoint of the ICTP authors' code into MODEL.npz + MODEL.json.

    python3 -m tessera.ictp.convert CKPT_DIR -o MODEL.npz

CKPT_DIR is a checkpoint folder (config.yaml + params.pkl), or a folder of
ckpt_<epoch> folders, or a training run (then <run>/best is used, else
<run>/logs); where there are several checkpoints the highest epoch is taken
(docs/ictp-checkpoint.md §1). params.pkl is a plain pickle of the state_dict
whose tensors embed legacy torch storages, often saved on a GPU: they are
read onto the CPU. MODEL.npz holds every tensor under the authors' key, in
its dtype; MODEL.json holds {"config": <config.yaml>, "source": CKPT}.

Unpickling runs code named by the file; the unpickler only admits the few
callables a state_dict needs, but convert only checkpoints you trust.
Nothing is overwritten unless --force is given; files are written whole or
not at all."""

import argparse
import collections
import io
import json
import os
import pickle
import re
import sys
import tempfile


class ConvertError(Exception):
    pass


def find_checkpoint(path):
    """The checkpoint folder that `path` names or holds (the highest epoch)."""
    if not os.path.isdir(path):
        raise ConvertError(f"{path}: not a directory")
    if os.path.isfile(os.path.join(path, "params.pkl")):
        return path
    for sub in ("best", "logs", "."):
        d = os.path.normpath(os.path.join(path, sub))
        if not os.path.isdir(d):
            continue
        epochs = []
        for name in os.listdir(d):
            m = re.fullmatch(r"ckpt_(\d+)", name)
            if m and os.path.isfile(os.path.join(d, name, "params.pkl")):
                epochs.append((int(m.group(1)), name))
        if epochs:
            return os.path.join(d, max(epochs)[1])
    raise ConvertError(f"{path}: no params.pkl here, and no ckpt_<epoch> folder holding one "
                       "(looked in best/, logs/ and the folder itself)")


class _Unpickler(pickle.Unpickler):
    """Admits only what a state_dict of tensors needs; storages go to the CPU."""

    def __init__(self, f, torch):
        super().__init__(f)
        self.torch = torch

    def find_class(self, module, name):
        torch = self.torch
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda b: torch.load(io.BytesIO(b), map_location="cpu")
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
            return getattr(torch._utils, name)
        raise ConvertError(f"params.pkl refers to {module}.{name}, which a state_dict of "
                           "tensors does not need; refusing to unpickle it")


def read_checkpoint(folder):
    """(config dict, {key: numpy array}) of a checkpoint folder."""
    import torch
    import yaml
    cfg_path = os.path.join(folder, "config.yaml")
    params_path = os.path.join(folder, "params.pkl")
    try:
        with open(cfg_path) as f:
            cfg = yaml.safe_load(f)
    except OSError as e:
        raise ConvertError(f"{cfg_path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConvertError(f"{cfg_path}: not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ConvertError(f"{cfg_path}: the configuration is not a mapping")
    try:
        with open(params_path, "rb") as f:
            state = _Unpickler(f, torch).load()
    except OSError as e:
        raise ConvertError(f"{params_path}: {e.strerror}") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        raise ConvertError(f"{params_path}: cannot read the state_dict: {e}") from None
    if not isinstance(state, dict):
        raise ConvertError(f"{params_path}: holds a {type(state).__name__}, not a state_dict")
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConvertError(f"{params_path}: key '{key}' is a {type(value).__name__}, "
                               "not a tensor")
        arrays[key] = value.detach().cpu().numpy()
    return cfg, arrays


def _write_atomic(path, write, force):
    if os.path.exists(path) and not force:
        raise ConvertError(f"{path} exists (use --force to replace it)")
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def convert(ckpt, out, force=False):
    """Writes OUT (.npz) and the .json beside it; returns the checkpoint folder used."""
    import numpy as np
    if not out.endswith(".npz"):
        raise ConvertError(f"{out}: the output must end in .npz")
    folder = find_checkpoint(ckpt)
    cfg, arrays = read_checkpoint(folder)
    json_path = out[:-4] + ".json"
    for p in (out, json_path):
        if os.path.exists(p) and not force:
            raise ConvertError(f"{p} exists (use --force to replace it)")
    text = json.dumps({"config": cfg, "source": os.path.abspath(folder)}, indent=1,
                      default=str).encode()
    _write_atomic(out, lambda f: np.savez(f, **arrays), force)
    _write_atomic(json_path, lambda f: f.write(text), force)
    return folder


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tessera.ictp.convert",
                                 description="ICTP checkpoint (config.yaml + params.pkl) to "
                                 "MODEL.npz + MODEL.json")
    ap.add_argument("ckpt", metavar="CKPT_DIR")
    ap.add_argument("-o", "--output", required=True, metavar="MODEL.npz")
    ap.add_argument("--force", action="store_true", help="replace existing output files")
    args = ap.parse_args(argv)
    try:
        folder = convert(args.ckpt, args.output, args.force)
    except ConvertError as e:
        print(f"tessera.ictp.convert: error: {e}", file=sys.stderr)
        return 1
    print(f"{folder} -> {args.output} (+ {args.output[:-4]}.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-model fixtures: torchvision classifiers exported to ONNX with PyTorch's outputs.

Each export is a cache entry, a directory under <build>/models/ named by everything that
decides its content (model, opset, export batch, dynamic batch axis, torch and torchvision
versions, GENERATOR_VERSION). An entry is written into a temporary directory and renamed into
place when complete, so an interrupted run never leaves a half-written entry behind.

Run as a script to (re)generate entries and print what each piece cost:
    /usr/bin/python3 tests/python/models.py [MODEL ...]
"""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

# Bump whenever a change here changes what an entry holds, so old caches are not reused.
GENERATOR_VERSION = "2"

MODEL_NAMES = ("resnet18", "resnet50", "mobilenet_v2", "vgg16", "densenet121", "squeezenet1_1")
# torchvision.models.segmentation; the export's output is the "out" logits (N, 21, H, W).
SEGMENTATION_NAMES = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50",
                      "deeplabv3_resnet50")
# Sequence models of torch.nn on (batch, SEQUENCE_SHAPE) inputs: a 2-layer LSTM and a 2-layer
# GRU with a linear head on the last step, and a 2-layer transformer encoder (GELU, no dropout).
SEQUENCE_NAMES = ("lstm", "gru", "transformer_encoder")
SEQUENCE_SHAPE = {"lstm": (32, 64), "gru": (32, 64), "transformer_encoder": (32, 128)}

# A dynamic export is traced at this batch and run at the others, so a batch size baked into
# the graph by mistake cannot go unnoticed.
DYNAMIC_EXPORT_BATCH = 2
DYNAMIC_RUN_BATCHES = (1, 3)

IMAGE_SHAPE = (3, 224, 224)
# Zoo models that need larger images than IMAGE_SHAPE (their kernels outgrow 224's maps).
IMAGE_SHAPES = {"inception_v3": (3, 299, 299)}


@functools.lru_cache(maxsize=None)
def zoo_names(kind):
    """Every model torchvision (the installed version) builds for `kind`: "classification"
    or "segmentation" (torchvision.models.list_models of that module)."""
    import torchvision.models

    module = {"classification": torchvision.models,
              "segmentation": torchvision.models.segmentation}[kind]
    return tuple(torchvision.models.list_models(module=module))
REPO_ROOT = Path(__file__).resolve().parents[2]


def build_dir():
    return Path(os.environ.get("TESSERA_BUILD_DIR", REPO_ROOT / "build"))


def models_dir():
    return build_dir() / "models"


def tessera_bin():
    return Path(os.environ.get("TESSERA_BIN", build_dir() / "bin" / "tessera"))


def _versions():
    import torch
    import torchvision

    return torch.__version__, torchvision.__version__


def entry_key(model, opset, batch, dynamic):
    torch_version, vision_version = _versions()
    key = (
        f"{model}-op{opset}-b{batch}-{'dynamic' if dynamic else 'static'}"
        f"-torch{torch_version}-tv{vision_version}-gen{GENERATOR_VERSION}"
    )
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


class Entry:
    """One cached export: model.onnx, input_b{N}.npy and torch_b{N}.npy, meta.json."""

    def __init__(self, path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())

    @property
    def onnx_path(self):
        return self.path / "model.onnx"

    @property
    def run_batches(self):
        return tuple(self.meta["run_batches"])

    def input_path(self, batch):
        return self.path / f"input_b{batch}.npy"

    def torch_output_path(self, batch):
        return self.path / f"torch_b{batch}.npy"


def _seed(*parts):
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def _image(seed, batch, shape=IMAGE_SHAPE):
    """Seeded normal images (mean 0, variance 1) with spatial correlation, float32.

    Independent pixels would let global average pooling wash out the input, leaving outputs
    that hardly depend on it and hide mistakes in the layers before; half of the variance
    comes from a coarse grid upsampled bilinearly, the other half is pixel noise.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    channels, height, width = shape
    coarse = torch.from_numpy(rng.standard_normal((batch, channels, 7, 7)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    smooth = smooth.numpy() / smooth.std().item()
    noise = rng.standard_normal((batch,) + shape)
    return ((smooth + noise) / np.sqrt(2.0)).astype(np.float32)


def sample(name, seed, batch):
    """A seeded input batch of the model: images, or normal sequences for SEQUENCE_NAMES."""
    if name in SEQUENCE_NAMES:
        shape = (batch,) + SEQUENCE_SHAPE[name]
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return _image(seed, batch, IMAGE_SHAPES.get(name, IMAGE_SHAPE))


def _input(name, batch):
    return sample(name, _seed(name, "input", batch), batch)


def _logits_only(model):
    """A segmentation model's "out" entry alone: one tensor to export and compare."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["out"]

    return Logits()


def architecture(name):
    """The torchvision model `name` with fresh weights (segmentation: its logits only)."""
    import torchvision

    if name in SEGMENTATION_NAMES or name in zoo_names("segmentation"):
        segmentation = torchvision.models.segmentation
        return _logits_only(getattr(segmentation, name)(weights=None, weights_backbone=None))
    if name in SEQUENCE_NAMES:
        return _sequence_model(name)
    return getattr(torchvision.models, name)(weights=None)


def _sequence_model(name):
    import torch

    features = SEQUENCE_SHAPE[name][1]
    if name == "transformer_encoder":
        layer = torch.nn.TransformerEncoderLayer(features, 4, 4 * features, dropout=0.0,
                                                 activation="gelu", batch_first=True)
        return torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    class LastStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # Named after the model ("lstm", "gru"): the state dicts cached before the GRU
            # came hold the LSTM's weights under "lstm".
            recurrent = torch.nn.GRU if name == "gru" else torch.nn.LSTM
            self.add_module(name, recurrent(features, 128, 2, batch_first=True))
            self.head = torch.nn.Linear(128, 10)

        def forward(self, x):
            return self.head(getattr(self, name)(x)[0][:, -1])

    return LastStep()


@functools.lru_cache(maxsize=1)
def _make_model(name):
    """The model in eval mode; kept for the next export, as the tests export model by model."""
    import torch

    # Same weights for every export of a model, whatever the opset or batch.
    torch.manual_seed(_seed(name))
    model = architecture(name)
    # Weights torchvision initializes to zero (ViT's classifier head) would make the output
    # constant: drawn as small normals instead.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, 0.02)
    batchnorm = torch.nn.modules.batchnorm._BatchNorm
    batchnorms = [m for m in model.modules() if isinstance(m, batchnorm)]
    with torch.no_grad():
        for bn in batchnorms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calibration pass
        if batchnorms:
            # Statistics measured on data, as training leaves them: with arbitrary ones the
            # activations blow up or die (ReLU6 saturates) and the output ignores the input.
            model.train()
            model(torch.from_numpy(sample(name, _seed(name, "calibration"), 4)))
        # Then, for the models of the fast tests, moved off the data's statistics, so that a
        # kernel normalizing with the batch's own statistics instead of the running ones cannot
        # pass. Not for the zoo: over deeper nets the shifts compound until float32 itself is
        # chaotic (efficientnet_v2_s: PyTorch's float32 output 9 % off its float64 one).
        for bn in batchnorms if name in MODEL_NAMES + SEGMENTATION_NAMES else ():
            bn.momentum = 0.1
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn_like(bn.running_mean) * 0.1 * std)
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.5, 1.5))
    return model.eval()


def _sensitivity(model, name):
    """How much the output depends on the input: max |y(a) - y(b)| / max |y| for two images.

    The comparison's tolerance is relative to max |y|, so this bounds how small a mistake in
    the input-dependent part of the network the tests can see.
    """
    import torch

    with torch.no_grad():
        y = model(torch.from_numpy(sample(name, _seed(name, "sensitivity"), 2))).numpy()
    return float(np.max(np.abs(y[0] - y[1])) / np.max(np.abs(y)))


def _generate(tmp, model_name, opset, batch, dynamic):
    import torch

    timings = {}
    start = time.perf_counter()
    model = _make_model(model_name)
    timings["build_s"] = time.perf_counter() - start

    n_params = sum(p.numel() for p in model.parameters())
    n_bn_stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    )

    # Not under torch.no_grad(): that changes what some exports look like.
    start = time.perf_counter()
    dummy = torch.from_numpy(_input(model_name, batch))
    torch.onnx.export(
        model,
        dummy,
        str(tmp / "model.onnx"),
        opset_version=opset,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None,
    )
    timings["export_s"] = time.perf_counter() - start

    run_batches = DYNAMIC_RUN_BATCHES if dynamic else (batch,)
    start = time.perf_counter()
    for b in run_batches:
        x = _input(model_name, b)
        with torch.no_grad():
            y = model(torch.from_numpy(x)).numpy()
        if not np.all(np.isfinite(y)) or float(np.ptp(y)) == 0.0:
            raise RuntimeError(f"{model_name}: PyTorch output at batch {b} is degenerate")
        np.save(tmp / f"input_b{b}.npy", x)
        np.save(tmp / f"torch_b{b}.npy", y.astype(np.float32))
    timings["reference_s"] = time.perf_counter() - start
    sensitivity = _sensitivity(model, model_name)

    meta = {
        "model": model_name,
        "opset": opset,
        "export_batch": batch,
        "dynamic": dynamic,
        "run_batches": list(run_batches),
        "torch_version": torch.__version__,
        "generator_version": GENERATOR_VERSION,
        "torch_parameters": n_params,
        "torch_bn_running_stats": n_bn_stats,
        "input_sensitivity": sensitivity,
        "timings": timings,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _remove_abandoned(root):
    """Deletes what killed runs left; a live generation takes a minute, not an hour."""
    for tmp in root.glob(".tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > 3600:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            pass


def export(model_name, opset, batch, dynamic):
    """The cache entry for this export, generating it first when it does not exist yet."""
    known = MODEL_NAMES + SEGMENTATION_NAMES + SEQUENCE_NAMES
    if model_name not in known + zoo_names("classification") + zoo_names("segmentation"):
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(known)}")
    if dynamic:
        batch = DYNAMIC_EXPORT_BATCH
    root = models_dir()
    final = root / entry_key(model_name, opset, batch, dynamic)
    if (final / "meta.json").is_file():
        return Entry(final)
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        _generate(tmp, model_name, opset, batch, dynamic)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same entry first; theirs is as good as ours.
            if not (final / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Entry(final)


def run_tessera(onnx_path, input_path, output_path, threads=2, timeout=900, device="ref"):
    """Runs `tessera run` on `device`; returns (CompletedProcess, seconds)."""
    cmd = [
        str(tessera_bin()),
        "run",
        str(onnx_path),
        "--input",
        f"input={input_path}",
        "--output",
        str(output_path),
        "--device",
        device,
        "--threads",
        str(threads),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - start


def _main(argv):
    names = argv or list(MODEL_NAMES)
    configs = [(11, 1, False), (13, 3, False), (11, None, True), (13, None, True)]
    for name in names:
        for opset, batch, dynamic in configs:
            start = time.perf_counter()
            entry = export(name, opset, batch, dynamic)
            took = time.perf_counter() - start
            t = entry.meta["timings"]
            print(
                f"{entry.path.name}: {took:.1f} s here; when generated: build {t['build_s']:.1f} s,"
                f" export {t['export_s']:.1f} s, reference {t['reference_s']:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    _main(sys.argv[1:])

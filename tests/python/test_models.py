"""Whole torchvision classifiers: Tessera's CLI on the ref backend against PyTorch.

The ONNX files and PyTorch's outputs are generated into <build>/models/ on first use and cached
(see models.py). Each model is covered at both opsets, both batches and with and without a
dynamic batch axis, without running every combination: the ref backend is slow.
"""

import re
import subprocess

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
onnx = pytest.importorskip("onnx")

import models  # noqa: E402

pytestmark = pytest.mark.models

TOLERANCE = 1e-4  # of max |torch output|

# (opset, dynamic batch axis, batch to run). Static exports are traced at the batch they run;
# dynamic ones at models.DYNAMIC_EXPORT_BATCH.
CONFIGS = (
    (11, False, 1),
    (13, False, 3),
    (11, True, 3),
    (13, True, 1),
    (13, True, 3),
)


# Outputs must depend on the input far more than the tolerance, or a wrong backbone could pass.
MIN_SENSITIVITY = 100 * TOLERANCE


def _entry(model, opset, dynamic, batch):
    return models.export(model, opset, None if dynamic else batch, dynamic)


def _require_tessera():
    path = models.tessera_bin()
    if not path.is_file():
        pytest.fail(f"{path} does not exist: build Tessera first (or set TESSERA_BIN)")
    return path


def _cli_failure(proc):
    return (
        f"exit status {proc.returncode}\n"
        f"stderr: {proc.stderr[-4000:].strip()}\nstdout: {proc.stdout[-2000:].strip()}"
    )


# The reference backend takes 10-25 s per run of these; it runs them in one configuration
# by default and in every one under `make test-slow` (the cpu device runs every one always).
REF_SLOW_MODELS = ("vgg16", "densenet121", "resnet50")


def _model_cases():
    for model in models.MODEL_NAMES:
        for device in ("ref", "cpu"):
            for opset, dynamic, batch in CONFIGS:
                slow = device == "ref" and model in REF_SLOW_MODELS and \
                    (opset, dynamic, batch) != (13, True, 1)
                yield pytest.param(
                    model, device, opset, dynamic, batch,
                    marks=[pytest.mark.slow] if slow else [],
                    id=f"{model}-{device}-op{opset}-{'dynamic' if dynamic else 'static'}-b{batch}")


@pytest.mark.parametrize("model,device,opset,dynamic,batch", _model_cases())
def test_model_matches_torch(model, opset, dynamic, batch, device, tmp_path):
    _require_tessera()
    entry = _entry(model, opset, dynamic, batch)
    expected = np.load(entry.torch_output_path(batch))
    out_path = tmp_path / "out.npy"

    proc, seconds = models.run_tessera(entry.onnx_path, entry.input_path(batch), out_path,
                                       device=device)
    assert proc.returncode == 0, f"tessera run failed on {entry.path.name}: {_cli_failure(proc)}"

    got = np.load(out_path)
    assert got.dtype == np.float32, f"output dtype {got.dtype}, expected float32"
    assert got.shape == expected.shape, f"output shape {got.shape}, expected {expected.shape}"
    assert not np.isnan(got).any(), f"{int(np.isnan(got).sum())} NaN in the output"
    err = float(np.max(np.abs(got.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    ratio = err / scale
    print(
        f"{entry.path.name} b{batch} {device}: ratio {ratio:.3g} (max err {err:.3g}, "
        f"max |torch| {scale:.3g}), tessera {seconds:.1f} s"
    )
    assert ratio <= TOLERANCE, (
        f"max|tessera - torch| / max|torch| = {ratio:.3g} > {TOLERANCE:g} "
        f"(max err {err:.3g}, max |torch| {scale:.3g})"
    )


@pytest.mark.parametrize("model", models.MODEL_NAMES)
def test_exports_are_valid(model):
    """The generator itself: valid ONNX, the batch axis as asked, sane reference outputs."""
    for opset, dynamic, batch in CONFIGS:
        entry = _entry(model, opset, dynamic, batch)
        proto = onnx.load(str(entry.onnx_path))
        assert proto.opset_import[0].version == opset
        onnx.checker.check_model(proto)
        for value in (proto.graph.input[0], proto.graph.output[0]):
            dim0 = value.type.tensor_type.shape.dim[0]
            if dynamic:
                assert dim0.dim_param == "batch", f"{value.name}: dim 0 is not symbolic"
            else:
                assert dim0.dim_value == batch, f"{value.name}: dim 0 is {dim0}"
        for b in entry.run_batches:
            x = np.load(entry.input_path(b))
            y = np.load(entry.torch_output_path(b))
            assert x.shape == (b,) + models.IMAGE_SHAPE and x.dtype == np.float32
            assert y.shape == (b, 1000) and np.isfinite(y).all() and np.ptp(y) > 0
        sensitivity = entry.meta["input_sensitivity"]
        assert sensitivity >= MIN_SENSITIVITY, (
            f"{entry.path.name}: the output hardly depends on the input "
            f"(max |y(a) - y(b)| / max |y| = {sensitivity:.3g} < {MIN_SENSITIVITY:g})"
        )


def _number_on_line(text, word):
    """The first number on the first line mentioning `word`, a K/M/G/T suffix applied."""
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for line in text.splitlines():
        if word in line.lower():
            m = re.search(r"(\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([KMGT]?)", line)
            if m:
                return float(m.group(1).replace(",", "")) * scale[m.group(2)], line
    return None, None


def _onnx_float_parameters(proto):
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type in float_types)


def test_info_resnet18():
    path = _require_tessera()
    entry = _entry("resnet18", 13, True, None)
    cmd = [str(path), "info", str(entry.onnx_path), "--batch", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"tessera info failed: {_cli_failure(proc)}"
    out = proc.stdout

    shapes = re.findall(r"^\s*(input|output)\b.*\[\s*(\w+)\s*,", out, re.MULTILINE)
    assert ("input", "batch") in shapes and ("output", "batch") in shapes, (
        f"the symbolic dim 'batch' is not named in the input and output shapes:\n{out}"
    )

    proto = onnx.load(str(entry.onnx_path))
    expected = _onnx_float_parameters(proto)
    # The export must have kept the weights: BatchNorm may be folded into the convolutions,
    # which moves at most the BN parameters and statistics.
    torch_params = entry.meta["torch_parameters"]
    assert abs(expected - torch_params) <= entry.meta["torch_bn_running_stats"] * 2
    params, line = _number_on_line(out, "param")
    assert params is not None, f"no parameter count in:\n{out}"
    assert params == expected, f"parameters: {line!r}, expected {expected} (ONNX initializers)"

    flops, line = _number_on_line(out, "flop")
    assert flops is not None, f"no FLOP count in:\n{out}"
    assert 3.0e9 <= flops <= 4.0e9, f"FLOPs: {line!r}, expected 3.0e9..4.0e9 at batch 1"

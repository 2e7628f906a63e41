"""torchvision's segmentation models (their "out" logits, upsampled by Resize to the input's
size) through Tessera's CLI against PyTorch, at opset 13 and at the highest opset the exporter
writes, static and with a dynamic batch axis. The default run holds the smallest model once on
the cpu device; the rest are slow (TESSERA_SLOW=1). Exports are cached as in models.py."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

import models  # noqa: E402

pytestmark = pytest.mark.models

TOLERANCE = 1e-4  # of max |torch output|
HIGHEST_OPSET = 17


def _params():
    params = []
    for model in models.SEGMENTATION_NAMES:
        for opset, dynamic, batch in ((13, False, 1), (HIGHEST_OPSET, True, 3)):
            for device in ("cpu", "ref"):
                fast = (model, opset, device) == ("lraspp_mobilenet_v3_large", 13, "cpu")
                name = f"{model}-op{opset}-{'dynamic' if dynamic else 'static'}-b{batch}-{device}"
                params.append(pytest.param(model, opset, dynamic, batch, device, id=name,
                                           marks=[] if fast else [pytest.mark.slow]))
    return params


@pytest.mark.parametrize("model,opset,dynamic,batch,device", _params())
def test_segmentation_matches_torch(model, opset, dynamic, batch, device, tmp_path):
    if not models.tessera_bin().is_file():
        pytest.fail(f"{models.tessera_bin()} does not exist: build Tessera first")
    entry = models.export(model, opset, None if dynamic else batch, dynamic)
    assert entry.meta["input_sensitivity"] >= 100 * TOLERANCE, "the output ignores the input"
    expected = np.load(entry.torch_output_path(batch))
    out = tmp_path / "out.npy"
    proc, seconds = models.run_tessera(entry.onnx_path, entry.input_path(batch), out,
                                       device=device)
    assert proc.returncode == 0, f"tessera run failed: {proc.stderr[-4000:]}"
    got = np.load(out)
    assert got.shape == expected.shape == (batch, 21) + models.IMAGE_SHAPE[1:]
    ratio = float(np.max(np.abs(got.astype(np.float64) - expected)) / np.max(np.abs(expected)))
    print(f"{entry.path.name} b{batch} {device}: ratio {ratio:.3g}, tessera {seconds:.1f} s")
    assert ratio <= TOLERANCE, f"max|tessera - torch| / max|torch| = {ratio:.3g}"

"""The cpu device's oneDNN backward convolutions (ai.tessera.ConvGradInput,
ConvGradFilter) against the ref device on the seeded random 2-D
convolutions of test_cpu_dnnl (dense, group 2 and depthwise; strides,
dilations, pads and auto_pad; odd sizes, where a stride leaves the last
rows unread), plus a resnet-like 3x3 stride-2 layer; refusals fall back to
ref with a reason."""

import numpy as np
import pytest

import test_cpu_dnnl as base
import tsr

pytestmark = base.pytestmark

DOMAIN = "ai.tessera"


def conv_output(x, w, attrs):
    g, feeds = base.make_graph("Conv", [x, w], attrs, const_inputs=(1,))
    return base.run_plan(g, feeds, "ref")[0]


def check_both(capfd, rng, x, w, attrs, backend="dnnl"):
    dy = base.rand(rng, conv_output(x, w, attrs).shape)
    x_shape = np.array(x.shape, np.int64)
    w_shape = np.array(w.shape, np.int64)
    base.check_against_ref(capfd, "ConvGradInput", [dy, w, x_shape], attrs, domain=DOMAIN,
                           const_inputs=(2,), backend=backend)
    base.check_against_ref(capfd, "ConvGradFilter", [x, dy, w_shape], attrs, domain=DOMAIN,
                           const_inputs=(2,), backend=backend)


@pytest.mark.parametrize("seed", range(12))
def test_conv_grads(capfd, seed):
    rng, x, w, attrs = base.conv_case(seed)
    check_both(capfd, rng, x, w, attrs)


def test_resnet_downsample(capfd):
    rng = np.random.default_rng(11)
    x = base.rand(rng, (2, 16, 15, 13))
    w = base.rand(rng, (32, 16, 3, 3))
    check_both(capfd, rng, x, w, {"strides": [2, 2], "pads": [1, 1, 1, 1]})


def test_refusals_are_explained(capfd):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 4, 6, 6)), rng.standard_normal((6, 2, 3, 3))
    dy = rng.standard_normal((1, 6, 4, 4))
    log = base.check_against_ref(capfd, "ConvGradInput", [dy, w, np.array(x.shape)],
                                 {"group": 2}, domain=DOMAIN, const_inputs=(2,), backend="ref")
    assert "dnnl refused: dY is float64" in log
    x, dy = base.rand(rng, (2, 4, 9)), base.rand(rng, (2, 5, 7))
    log = base.check_against_ref(capfd, "ConvGradFilter", [x, dy, np.array([5, 4, 3])], {},
                                 domain=DOMAIN, const_inputs=(2,), backend="ref")
    assert "dnnl refused: rank 3" in log
    # dY of the wrong size: refused, and ref reports the mismatch.
    x, dy = base.rand(rng, (1, 4, 8, 8)), base.rand(rng, (1, 5, 5, 6))
    g, feeds = base.make_graph("ConvGradFilter", [x, dy, np.array([5, 4, 3, 3])], {},
                               domain=DOMAIN, const_inputs=(2,))
    with pytest.raises(tsr.TesseraError, match="dY has 5 positions"):
        base.run_plan(g, feeds, "cpu")
    assert "dnnl refused: X, W and dY do not fit" in capfd.readouterr().err

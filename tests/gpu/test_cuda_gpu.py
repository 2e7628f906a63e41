"""The cuda device on a GPU (run.sh): each op its backend claims against
the reference device on random shapes, odd ones included, with the node
checked to have run on the cuda backend; refused nodes falling back to
ref through transfer steps; the six classifiers against PyTorch."""

import numpy as np
import pytest

import tessera
import tsr
from test_backend_ops import seed_of

ATOL = {"fp32": 1e-5, "tf32": 2e-2}


def _gpu_present():
    g = tsr.Graph()
    g.add_input("x", np.float32, [1])
    g.add_node("Relu", ["x"], ["y"])
    g.add_output("y")
    try:
        tessera.Plan(g, device="cuda")
    except tsr.TesseraError as e:
        return str(e)
    return None


_why = _gpu_present()
if _why is not None:
    pytest.skip(f"no usable cuda device: {_why}", allow_module_level=True)


def one_node(op, shapes, attrs=None, opset=17):
    g = tsr.Graph()
    g.set_opset(opset)
    while shapes and shapes[-1] is None:
        shapes = shapes[:-1]
    names = []
    for i, shape in enumerate(shapes):
        if shape is None:
            names.append("")
            continue
        g.add_input(f"in{i}", np.float32, list(shape))
        names.append(f"in{i}")
    g.add_node(op, names, ["out"], attrs or {}, name="node0")
    g.add_output("out")
    rng = np.random.default_rng(seed_of(f"{op} {shapes} {attrs}"))
    feeds = [rng.standard_normal(s).astype(np.float32) for s in shapes if s is not None]
    return g, feeds


def check(op, shapes, attrs=None, opset=17, backend="cuda", precision="fp32"):
    g, feeds = one_node(op, shapes, attrs, opset)
    plan = tessera.Plan(g, device="cuda")
    got = plan.run(feeds)[0]
    want = tsr.Plan(g, device="ref").run(feeds)[0]
    assert plan.node_backend("node0") == backend
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL[precision] * scale)
    return plan


ELEMENTWISE = [[7], [3, 5, 17], [2, 3, 33, 65], [0, 4]]


@pytest.mark.parametrize("op", ["Relu", "Sigmoid"])
@pytest.mark.parametrize("shape", ELEMENTWISE, ids=str)
def test_unary(op, shape):
    check(op, [shape])


BROADCAST = [([3, 5], [3, 5]), ([2, 3, 4, 5], [3, 1, 5]), ([1], [7, 9]), ([4, 1, 6], [5, 1]),
             ([2, 1, 3, 1, 5, 1, 7, 1], [3, 1, 5, 1, 7, 2])]


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
def test_binary(op, shapes):
    check(op, list(shapes))


@pytest.mark.parametrize("shape,axis,opset", [([5, 1000], -1, 13), ([3, 4, 37], 2, 13),
                                              ([2, 3, 5], 1, 11), ([1, 1], -1, 13),
                                              ([2, 700], 1, 13)], ids=str)
def test_softmax(shape, axis, opset):
    check("Softmax", [shape], {"axis": axis}, opset)


def test_softmax_over_another_axis_runs_on_ref():
    check("Softmax", [[3, 4, 5]], {"axis": 1}, 13, backend="ref")


@pytest.mark.parametrize("shape", [[2, 3, 7, 9], [1, 1280, 7, 7], [2, 5, 11], [1, 2, 3, 4, 5]],
                         ids=str)
def test_global_average_pool(shape):
    check("GlobalAveragePool", [shape])


MATMUL = [([5, 7], [7, 3]), ([2, 3, 33, 17], [17, 9]), ([4, 5, 6], [4, 6, 7]), ([1, 1], [1, 1]),
          ([3, 0], [0, 4]), ([129, 257], [257, 65])]


@pytest.mark.parametrize("shapes", MATMUL, ids=str)
def test_matmul(shapes):
    check("MatMul", list(shapes))


def test_matmul_tf32(monkeypatch):
    monkeypatch.setenv("TSR_CUDA_TF32", "1")
    check("MatMul", [[64, 513], [513, 33]], precision="tf32")


@pytest.mark.parametrize("a,b", [([5], [5, 3]), ([2, 3, 4], [1, 4, 5])], ids=str)
def test_matmul_refused_shapes_run_on_ref(a, b):
    plan = check("MatMul", [a, b], backend="ref")
    assert plan.stats()["n_transfers"] == 0


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("c", [None, [9], [5, 9], [1], [5, 1]], ids=str)
def test_gemm(ta, tb, c):
    a = [7, 5] if ta else [5, 7]
    b = [9, 7] if tb else [7, 9]
    check("Gemm", [a, b, c], {"transA": ta, "transB": tb, "alpha": 0.5, "beta": 2.0})


def test_fallback_crosses_through_transfers():
    """Relu (cuda) -> Selu (ref, host) -> Add (cuda): every crossing is a transfer."""
    g = tsr.Graph()
    g.add_input("x", np.float32, [3, 5])
    g.add_constant("c", np.arange(15, dtype=np.float32).reshape(3, 5))
    g.add_node("Relu", ["x"], ["r"])
    g.add_node("Selu", ["r"], ["e"], name="host")
    g.add_node("Add", ["e", "c"], ["y"])
    g.add_output("y")
    x = np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5)
    plan = tessera.Plan(g, device="cuda")
    np.testing.assert_allclose(plan.run([x])[0], tsr.Plan(g, device="ref").run([x])[0],
                               rtol=1e-6, atol=1e-6)
    assert plan.node_backend("host") == "ref"
    stats = plan.stats()
    assert stats["n_transfers"] == 4 and stats["uploaded_bytes"] == 15 * 4, stats


models = pytest.importorskip("models")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "vgg16", "densenet121",
                                  "squeezenet1_1"])
def test_model_matches_torch(name, tmp_path):
    pytest.importorskip("torchvision")
    entry = models.export(name, 13, 1, False)
    expected = np.load(entry.torch_output_path(1))
    out = tmp_path / "out.npy"
    proc, seconds = models.run_tessera(entry.onnx_path, entry.input_path(1), out, threads=16,
                                       timeout=300, device="cuda")
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = np.load(out)
    ratio = float(np.max(np.abs(got.astype(np.float64) - expected))) / float(np.max(np.abs(expected)))
    print(f"{name} b1 cuda: ratio {ratio:.3g}, tessera {seconds:.1f} s")
    assert ratio <= 1e-4

"""tsr_graph_split (tessera.Graph.split): the two halves of a gradient graph
give the gradients the whole graph gives, and the second half reads the
first's saved values instead of computing them again."""

import numpy as np
import pytest

import tessera


def test_split_gradient_matches_whole_graph():
    g = tessera.Graph()
    g.add_input("x", "float64", ["n", 4])
    g.add_input("w", "float64", [4, 3])
    g.add_node("MatMul", ["x", "w"], ["y"])
    g.add_node("Relu", ["y"], ["z"])
    g.add_output("z")
    whole = g.gradient(["z"], ["w", "x"])
    first, second = whole.split(1)
    assert [s.name for s in first.inputs()] == ["x", "w"]
    # Relu's gradient reads its output z, so the backward half needs nothing else saved.
    assert [s.name for s in first.outputs()] == ["z"]
    assert [s.name for s in second.outputs()] == ["w__grad", "x__grad"]
    rng = np.random.default_rng(0)
    x, w, seed = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    want = tessera.Plan(whole, device="ref").run([x, w, seed])
    saved = dict(zip([s.name for s in first.outputs()],
                     tessera.Plan(first, device="ref").run([x, w])))
    saved.update(x=x, w=w, z__seed=seed)
    got = tessera.Plan(second, device="ref").run([saved[s.name] for s in second.inputs()])
    for a, b in zip(want[1:], got):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_split_rejects_bad_count():
    g = tessera.Graph()
    g.add_input("x", "float32", [2])
    g.add_node("Relu", ["x"], ["y"])
    g.add_output("y")
    with pytest.raises(tessera.Error, match="first outputs"):
        g.split(2)

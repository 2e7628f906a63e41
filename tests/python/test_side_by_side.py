"""Steps side by side (src/runtime/dag.c): a plan of small steps runs independent steps
at the same time, one thread each, each step starting once the steps whose memory it
reads or overwrites are done. The answers must be the same bits on every run (a missing
dependency shows as a race), within rounding of the plan run one step after another (its
kernels are prepared for the whole team, so they may round differently), and of the ref
device; failures inside a run are reported as in order; the plan chooses the mode only
where it pays (wide graphs of small nodes)."""

import numpy as np
import pytest

import ictp_reference as ref
import tsr
from tessera import _capi


def wide_graph(branches=12, depth=6, n=37, seed=0):
    """Branches of small element-wise and MatMul nodes over one input, each reading its
    neighbour's previous value too, summed at the end: many steps that can run at once,
    and many that must wait for two others."""
    rng = np.random.default_rng(seed)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float64, [n, 5])
    g.add_constant("w", rng.standard_normal((5, 5)) / 3)
    prev = ["x"] * branches
    for d in range(depth):
        cur = []
        for b in range(branches):
            name = f"v{d}_{b}"
            g.add_constant(f"c{d}_{b}", rng.standard_normal((1, 5)))
            op = ("Tanh", "Sigmoid", "MatMul")[(b + d) % 3]
            g.add_node("Mul", [prev[b], f"c{d}_{b}"], [name + "m"])
            g.add_node("Add", [name + "m", prev[(b + 1) % branches]], [name + "a"])
            if op == "MatMul":
                g.add_node("MatMul", [name + "a", "w"], [name])
            else:
                g.add_node(op, [name + "a"], [name])
            cur.append(name)
        prev = cur
    g.add_node("Sum", prev, ["y"])
    g.add_node("ReduceSum", ["y"], ["total"], {"keepdims": 0})
    g.add_output("y")
    g.add_output("total")
    return g


def plan(g, monkeypatch, mode, threads=2):
    if mode is None:
        monkeypatch.delenv("TSR_INTER_OP", raising=False)
    else:
        monkeypatch.setenv("TSR_INTER_OP", mode)
    return tsr.Plan(g, device="cpu", threads=threads)


def test_wide_graph_matches_one_step_at_a_time_on_every_run(monkeypatch):
    g = wide_graph()
    x = np.random.default_rng(1).standard_normal((37, 5))
    want = tsr.Plan(g, device="ref").run([x])
    in_order = plan(g, monkeypatch, "0")
    seq = in_order.run([x])
    side = plan(g, monkeypatch, None)
    got = side.run([x])
    assert side.stats().side_by_side == 1
    # Memory is shared where the dependencies order the buffers: more than by liveness
    # in the steps' order, far less than a buffer each (216 values of 1536 bytes).
    assert in_order.stats().arena_bytes < side.stats().arena_bytes < 216 * 1536 / 3
    # Kernels prepared for one thread may round differently from the team's; the same
    # plan, though, gives the same bits on every run.
    for a, b, w in zip(got, seq, want):
        np.testing.assert_allclose(a, w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for _ in range(300):
        again = side.run([x])
        for a, b in zip(again, got):
            np.testing.assert_array_equal(a, b)


def test_other_batch_sizes_and_threads(monkeypatch):
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float64, ["N", 5])
    for b in range(8):
        g.add_node("Tanh", ["x"], [f"t{b}"])
        g.add_node("Mul", [f"t{b}", "x"], [f"m{b}"])
    g.add_node("Sum", [f"m{b}" for b in range(8)], ["y"])
    g.add_output("y")
    rng = np.random.default_rng(2)
    for threads in (2, 3):
        p = plan(g, monkeypatch, "1", threads)
        for n in (1, 7, 40):
            x = rng.standard_normal((n, 5))
            np.testing.assert_allclose(p.run([x])[0], 8 * np.tanh(x) * x, rtol=1e-14)
            assert p.stats().side_by_side == 1


def test_chosen_only_where_it_pays(monkeypatch):
    """A chain has nothing to run side by side; a large node wants the whole team; one
    thread has no team; TSR_INTER_OP=0 turns it off."""
    chain = tsr.Graph()
    chain.set_opset(17)
    chain.add_input("x", np.float32, [64, 64])
    prev = "x"
    for k in range(10):
        chain.add_node("Tanh", [prev], [f"t{k}"])
        prev = f"t{k}"
    chain.add_output(prev)
    x = np.ones((64, 64), np.float32)
    p = plan(chain, monkeypatch, None)
    p.run([x])
    assert p.stats().side_by_side == 0

    big = wide_graph()
    big.add_input("a", np.float32, [256, 512])
    big.add_constant("b", np.ones((512, 512), np.float32))
    big.add_node("MatMul", ["a", "b"], ["ab"])
    big.add_output("ab")
    p = plan(big, monkeypatch, None)
    p.run([np.ones((37, 5)), np.ones((256, 512), np.float32)])
    assert p.stats().side_by_side == 0

    g = wide_graph()
    x = np.ones((37, 5))
    for mode, threads, want in ((None, 2, 1), (None, 1, 0), ("0", 2, 0), ("1", 2, 1)):
        p = plan(g, monkeypatch, mode, threads)
        p.run([x])
        assert p.stats().side_by_side == want, (mode, threads)


def test_a_failing_step_is_reported_and_the_plan_runs_again(monkeypatch):
    g = wide_graph()
    g.add_input("idx", np.int64, [3])
    g.add_node("Gather", ["y", "idx"], ["picked"], {"axis": 0})
    g.add_output("picked")
    p = plan(g, monkeypatch, None)
    x = np.random.default_rng(3).standard_normal((37, 5))
    good = p.run([x, np.array([0, 5, 36])])
    assert p.stats().side_by_side == 1
    with pytest.raises(tsr.TesseraError, match="Gather"):
        p.run([x, np.array([0, 99, 1])])
    again = p.run([x, np.array([0, 5, 36])])
    for a, b in zip(again, good):
        np.testing.assert_array_equal(a, b)


def test_outputs_sharing_the_inputs_memory(monkeypatch):
    """The steps know the caller's tensors by index: where an output is an input's memory
    the run keeps the steps' order, as one step at a time does. Here a node in the middle
    overwrites the input that the branches after it read (they see -x, those before x)."""
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float64, [256, 100])
    for b in range(8):
        if b == 4:
            g.add_node("Neg", ["x"], ["y"])
        g.add_node("Tanh", ["x"], [f"t{b}"])
        g.add_node("Sigmoid", [f"t{b}"], [f"u{b}"])
    g.add_node("Sum", [f"u{b}" for b in range(8)], ["z"])
    g.add_output("y")
    g.add_output("z")
    x0 = np.random.default_rng(4).standard_normal((256, 100))
    sig = lambda v: 1 / (1 + np.exp(-np.tanh(v)))  # noqa: E731
    want_z = 4 * sig(x0) + 4 * sig(-x0)
    for mode in ("0", "1"):
        p = plan(g, monkeypatch, mode)
        for _ in range(50):
            buf, z = x0.copy(), np.zeros_like(x0)
            p.run(_capi.tensor_array([_capi.tensor_of(buf)]),
                  _capi.tensor_array([_capi.tensor_of(buf), _capi.tensor_of(z)]))
            np.testing.assert_array_equal(buf, -x0)
            np.testing.assert_allclose(z, want_z, rtol=1e-13, err_msg=f"TSR_INTER_OP={mode}")


def test_ictp_molecule_side_by_side(monkeypatch, tmp_path):
    """The published configuration on a molecule: the evaluator's plan runs side by side
    and gives what one step at a time gives, in float64 and float32."""
    cfg = ref.default_config(atomic_types=[1, 6, 7, 8], n_species=4)
    path = ref.random_model(str(tmp_path / "published"), cfg, seed=4)
    rng = np.random.default_rng(5)
    atoms = tsr.Atoms(rng.choice([1, 6, 8], 12), rng.random((12, 3)) * 4.0)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        monkeypatch.setenv("TSR_INTER_OP", "0")
        seq = tsr.IctpModel(path, device="cpu", dtype=dtype, threads=2)
        want = seq.evaluate(atoms)
        assert seq.plan_stats().side_by_side == 0
        monkeypatch.delenv("TSR_INTER_OP")
        side = tsr.IctpModel(path, device="cpu", dtype=dtype, threads=2)
        for _ in range(5):
            got = side.evaluate(atoms)
            for k in ("energy", "forces", "energies"):
                scale = max(np.abs(want[k]).max(), 1e-300)
                assert np.abs(np.asarray(got[k]) - want[k]).max() <= tol * scale, k
        assert side.plan_stats().side_by_side == 1


def test_a_step_overwriting_its_input_waits_for_the_other_readers(monkeypatch):
    """Add(MatMul(x, U), v) becomes a Gemm that accumulates into v's memory where it is
    v's last reader in the steps' order; side by side that quick Gemm must still wait for
    the long MatMul that reads v before it."""
    rng = np.random.default_rng(6)
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, [96, 1])
    g.add_constant("U", rng.standard_normal((1, 64)).astype(np.float32))
    g.add_constant("W", (rng.standard_normal((64, 512)) / 8).astype(np.float32))
    g.add_constant("axis1", np.array([1], np.int64))
    outs = []
    for k in range(4):
        g.add_constant(f"c{k}", np.full((1, 64), 0.5 + 0.1 * k, np.float32))
        g.add_node("Mul", ["x", f"c{k}"], [f"m{k}"])
        g.add_node("Tanh", [f"m{k}"], [f"v{k}"])
        g.add_node("MatMul", [f"v{k}", "W"], [f"a{k}"])
        g.add_node("MatMul", ["x", "U"], [f"p{k}"])
        g.add_node("Add", [f"p{k}", f"v{k}"], [f"w{k}"])
        g.add_node("ReduceSum", [f"a{k}", "axis1"], [f"r{k}"])
        g.add_node("Mul", [f"r{k}", f"w{k}"], [f"o{k}"])
        outs.append(f"o{k}")
    g.add_node("Sum", outs, ["y"])
    g.add_output("y")
    x = rng.standard_normal((96, 1)).astype(np.float32)
    want = plan(g, monkeypatch, "0").run([x])[0]
    p = plan(g, monkeypatch, "1")
    first = p.run([x])[0]
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    for _ in range(100):
        np.testing.assert_array_equal(p.run([x])[0], first)
    assert p.stats().side_by_side == 1

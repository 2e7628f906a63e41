"""Concat inputs written in place (schedule.c, concat_in_place): where each input of a Concat is
one contiguous, aligned slice of its output (a batch of 1 before the axis, whole channel blocks
in a blocked layout), the producers write there and the Concat step does nothing. Each case is
a SqueezeNet-style fire module (squeeze 1x1, then 1x1 and 3x3 expands concatenated) or a
variant that must not be assembled in place (batch 2, a channel count that is no whole block,
the same input twice, an input that is a graph output, an input read after the Concat), on every
cpu layout, checked against the ref device (which never assembles in place) and, for the cases
that qualify, for the --verbose line saying it happened."""

import numpy as np
import pytest

import tsr

IN_PLACE = "are written in place"


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def conv(g, rng, name, x, c_in, c_out, k):
    g.add_constant(f"{name}_w", rand(rng, (c_out, c_in, k, k)) * np.float32(0.3))
    g.add_constant(f"{name}_b", rand(rng, (c_out,)))
    g.add_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], {"pads": [k // 2] * 4},
               name=f"{name}_conv")
    g.add_node("Relu", [f"{name}_c"], [name], {}, name=f"{name}_relu")
    return name


def fire(shape, expand, variant, seed=0):
    """x -> squeeze -> (e1 1x1, e3 3x3) -> Concat -> 1x1 conv; returns the graph and feeds."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    g = tsr.Graph()
    g.add_input("x", np.float32, list(shape))
    s = conv(g, rng, "squeeze", "x", c, 16, 1)
    e1 = conv(g, rng, "e1", s, 16, expand[0], 1)
    e3 = conv(g, rng, "e3", s, 16, expand[1], 3)
    parts = [e1, e1] if variant == "same_input_twice" else [e1, e3]
    g.add_node("Concat", parts, ["cat"], {"axis": 1}, name="fire_concat")
    total = 2 * expand[0] if variant == "same_input_twice" else sum(expand)
    head = conv(g, rng, "head", "cat", total, 8, 1)
    g.add_output(head)
    if variant == "input_is_output":
        g.add_output(e3)
    if variant == "input_read_after":
        g.add_node("GlobalAveragePool", [e1], ["e1_pool"], {}, name="e1_pool")
        g.add_output("e1_pool")
    return g, [rand(rng, shape)]


# (shape, expand channels, variant, whether it is assembled in place without depth-first stacks:
# True, False, or None where the cpu backend may choose the plain layout for channel counts
# that are no whole block, which decides it)
CASES = [
    ((1, 24, 13, 13), (64, 64), "fire", True),
    ((1, 24, 7, 9), (24, 40), "fire", False),  # 24 x 63 floats: no 64-byte boundary
    ((1, 8, 4, 4), (17, 15), "fire", None),  # 17 x 16 floats: aligned, but no whole blocks
    ((1, 8, 4, 4), (24, 8), "fire", None),
    ((2, 24, 13, 13), (64, 64), "fire", False),  # two images: two ranges per input
    ((1, 24, 13, 13), (32, 32), "same_input_twice", False),
    ((1, 24, 8, 8), (32, 32), "input_read_after", True),
]


def check_against_ref(capfd, g, feeds, depth_first):
    """The cpu plan's outputs against ref's; returns the cpu plan's --verbose log."""
    want = tsr.Plan(g, device="ref", threads=1).run(feeds)
    capfd.readouterr()
    got = tsr.Plan(g, device="cpu", threads=2, depth_first=depth_first, verbose=True).run(feeds)
    log = capfd.readouterr().err
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
    return log


@pytest.mark.parametrize("layout", ["plain", "nChw8c", "nChw16c"])
@pytest.mark.parametrize("shape,expand,variant,in_place", CASES)
def test_fire_concat_against_ref(capfd, monkeypatch, layout, shape, expand, variant, in_place):
    """Without stacks each case is in place or not as listed; with them (where a stack may
    take the Concat in instead) the outputs are checked only."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    g, feeds = fire(shape, expand, variant)
    log = check_against_ref(capfd, g, feeds, depth_first=0)
    if in_place is not None or layout == "plain":
        assert (IN_PLACE in log) == (in_place is not False), log
    check_against_ref(capfd, g, feeds, depth_first=1)


def test_graph_output_input_is_not_a_slice(capfd, monkeypatch):
    """An expand that is also a graph output is written to the caller's buffer in the plain
    layout, which is no slice of the arena's Concat output: the Concat copies it."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", "plain")
    g, feeds = fire((1, 24, 13, 13), (32, 32), "input_is_output")
    assert IN_PLACE not in check_against_ref(capfd, g, feeds, depth_first=0)


def test_arena_holds_the_inputs_inside_the_output():
    """In place, the expands' outputs take no arena bytes of their own: the plan's arena is
    smaller than with the Concat copying (the same graph at batch 2 cannot be in place, so
    compare the batch-1 arena with half the batch-2 one)."""
    arenas = []
    for n in (1, 2):
        g, feeds = fire((n, 24, 13, 13), (64, 64), "fire")
        plan = tsr.Plan(g, device="cpu", threads=1, depth_first=0)
        plan.run(feeds)
        arenas.append(plan.stats().arena_bytes)
    assert arenas[0] < arenas[1] / 2

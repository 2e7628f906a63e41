"""The plan cache through the tessera package: Plan.set_cache_limits bounds the
specializations a plan keeps, Plan.stats() reports them (the ctypes mirror of
tsr_plan_stats must be as long as the C struct, which get_stats fills whole), and
bad limits raise the library's error."""

import numpy as np
import pytest

import tessera
from tessera import _capi
from tessera.graph import Graph, Plan


def tanh_plan():
    g = Graph()
    g.add_input("x", np.float64, ["E", 3])
    g.add_node("Tanh", ["x"], ["y"])
    g.add_output("y")
    return Plan(g, device="ref", threads=1)


def run(plan, x):
    y = np.empty_like(x)
    ins = _capi.tensor_array([_capi.tensor_of(x)])
    plan.reshape(ins)
    plan.run(ins, _capi.tensor_array([_capi.tensor_of(y)]))
    return y


def test_limits_and_stats():
    rng = np.random.default_rng(3)
    plan = tanh_plan()
    plan.set_cache_limits(2, 1 << 30)
    for n_edges in (1, 5, 9, 5, 13):
        x = rng.standard_normal((n_edges, 3))
        np.testing.assert_allclose(run(plan, x), np.tanh(x), rtol=1e-15, atol=1e-15)
    s = plan.stats()
    # 5 was a hit; 1 and 9 were evicted as the least recently used.
    assert (s["n_cached_specs"], s["n_builds"], s["n_evictions"]) == (2, 4, 2)
    assert s["cached_bytes"] > 0 and s["cached_bytes"] >= s["arena_bytes"]
    plan.set_cache_limits(1, 0)
    s = plan.stats()
    assert (s["n_cached_specs"], s["n_evictions"]) == (1, 3)


def test_bad_limit():
    with pytest.raises(tessera.InvalidArgumentError, match="max_specs must be at least 1, got 0"):
        tanh_plan().set_cache_limits(0, 1 << 20)

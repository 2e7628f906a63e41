"""Plan-time autotuning of the cpu device's convolutions (docs/autotune.md):
results match the ref device with autotuning on and off on random odd
shapes (constant and fed weights, bias, residual, activations); the
on-disk cache is written, read, and survives corrupt or foreign files,
which it never overwrites; the option and TSR_AUTOTUNE turn it off; and
a CPU without Winograd (oneDNN capped at AVX2, as on Zen 3) plans the
direct algorithm without timing anything. Assertions about Winograd
itself are skipped where oneDNN has no Winograd kernel for this CPU."""

import functools
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import tessera
import tsr
from test_cpu_dnnl import make_graph, rand, run_plan

HEADER = "tessera-autotune 1\n"


def _cpu_device_exists():
    try:
        tsr.run_op("Relu", [np.ones(2, np.float32)], device="cpu")
        return True
    except tsr.TesseraError:
        return False


pytestmark = pytest.mark.skipif(not _cpu_device_exists(), reason="this build has no cpu device")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """A private cache directory (XDG_CACHE_HOME), autotuning at its default."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TSR_AUTOTUNE", raising=False)
    return tmp_path / "xdg"


def cache_file(home):
    return home / "tessera" / "autotune.txt"


def plan_cpu(graph, autotune):
    return tessera.Plan(graph, "cpu", 2, "fp32", None, verbose=True, autotune=autotune)


def resnet_conv(rng, c=32, h=15, w=13, with_z=False, fed=False):
    """A 3x3, stride-1, pad-1 FusedConv with bias and ReLU (the shape
    Winograd takes), weights constant or fed."""
    x = rand(rng, (1, c, h, w))
    wt = rand(rng, (c, c, 3, 3)) * np.float32(0.1)
    inputs = [x, wt, rand(rng, (c,))]
    if with_z:
        inputs.append(rand(rng, (1, c, h, w)))
    return make_graph("FusedConv", inputs, {"pads": [1, 1, 1, 1], "activation": "Relu"},
                      domain="ai.tessera", const_inputs=() if fed else (1, 2))


def check(capfd, graph, feeds, autotune):
    """Runs on cpu with the option and on ref; returns the cpu plan's log."""
    want = run_plan(graph, feeds, "ref")[0]
    capfd.readouterr()
    got = plan_cpu(graph, autotune).run(feeds)[0]
    log = capfd.readouterr().err
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 1e-4 * scale, f"max error {err} vs max |ref| {scale}\n{log}"
    return log


@functools.lru_cache(maxsize=None)
def winograd_skip_reason():
    """None when oneDNN has a Winograd kernel for a 3x3 convolution here
    (autotuning then times it and writes a decision)."""
    old = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory() as d:
        os.environ["XDG_CACHE_HOME"] = d
        try:
            g, feeds = resnet_conv(np.random.default_rng(0), c=16, h=6, w=6)
            plan_cpu(g, True).run(feeds)
            has = cache_file(pathlib.Path(d)).exists()
        finally:
            if old is None:
                del os.environ["XDG_CACHE_HOME"]
            else:
                os.environ["XDG_CACHE_HOME"] = old
    return None if has else ("oneDNN 2.6 has no Winograd convolution for this CPU "
                             "(it implements it for AVX-512 only)")


def needs_winograd():
    reason = winograd_skip_reason()
    if reason:
        pytest.skip(reason)


def conv_cases():
    """(seed, kernel, stride, pad, groups): odd channel counts and sizes."""
    return [(0, 3, 1, 1, 1), (1, 3, 1, 1, 1), (2, 3, 1, 0, 1), (3, 3, 2, 1, 1), (4, 1, 1, 0, 1),
            (5, 3, 1, 1, 3), (6, 5, 1, 2, 1), (7, 3, 1, 1, 1)]


@pytest.mark.parametrize("autotune", [False, True])
@pytest.mark.parametrize("case", conv_cases())
def test_matches_ref(capfd, cache_home, autotune, case):
    seed, k, stride, pad, group = case
    rng = np.random.default_rng(seed)
    c = int(rng.choice([3, 5, 17, 33, 48])) * group
    m = int(rng.choice([5, 16, 19, 40])) * group
    n = int(rng.choice([1, 2]))
    h, w = int(rng.integers(k + 2, 20)), int(rng.integers(k + 2, 20))
    x = rand(rng, (n, c, h, w))
    wt = rand(rng, (m, c // group, k, k)) * np.float32(0.2)
    inputs = [x, wt, rand(rng, (m,))]
    attrs = {"pads": [pad] * 4, "strides": [stride, stride], "group": group,
             "activation": ["", "Relu", "Clip"][seed % 3]}
    if seed % 2:
        g0, f0 = make_graph("Conv", inputs, {k_: v for k_, v in attrs.items()
                                             if k_ != "activation"}, const_inputs=(1, 2))
        inputs.append(rand(rng, run_plan(g0, f0, "ref")[0].shape))
    fed = seed == 7
    g, feeds = make_graph("FusedConv", inputs, attrs, domain="ai.tessera",
                          const_inputs=() if fed else (1, 2))
    log = check(capfd, g, feeds, autotune)
    if not autotune:
        assert "autotune" not in log
        assert not cache_file(cache_home).exists()


def measured_candidates(log, node="node0"):
    """The implementations a measured decision timed, the default first,
    from its --verbose line ("autotune 'n': IMPL 1.2 ms, IMPL 0.9 ms
    (error ...) -> IMPL")."""
    line = [ln for ln in log.splitlines() if f"autotune '{node}':" in ln][0]
    timed = line.split(":", 2)[2].rsplit(" (error", 1)[0]
    return [part.split()[0] for part in timed.split(",")]


def test_winograd_chosen_and_cached(capfd, cache_home):
    """A 3x3 conv's decision among oneDNN's implementations (direct and
    Winograd) is measured once, written, then read back."""
    needs_winograd()
    g, feeds = resnet_conv(np.random.default_rng(1), c=64, h=28, w=28)
    log = check(capfd, g, feeds, True)
    assert "(cached)" not in log, log
    names = measured_candidates(log)
    assert len(names) >= 2 and any("wino" in n for n in names), log
    assert "wino" not in names[0], log
    text = cache_file(cache_home).read_text()
    assert text.startswith(HEADER)
    lines = text.splitlines()[1:]
    assert len(lines) == 1
    key, value = lines[0].split("\t")
    assert "onednn=" in key and "isa=" in key and "x=1x64x28x28" in key and "w=64x64x3x3" in key
    algorithm, t_default, t_other, err = value.split()
    assert algorithm in names
    assert float(t_default) > 0 and float(t_other) > 0 and 0 <= float(err) <= 1e-4
    log = check(capfd, g, feeds, True)
    assert "(cached)" in log and f"-> {algorithm} (cached)" in log, log
    assert cache_file(cache_home).read_text() == text


def follow_each_candidate(capfd, cache_home, tmp_path, monkeypatch, graph, feeds, log,
                          op="FusedConv"):
    """After the node's decision was measured (log), plans it once per
    candidate with the cache edited to that one: each is the kernel the
    plan runs, and matches ref (check). Returns the candidates' names."""
    names = measured_candidates(log)
    key = cache_file(cache_home).read_text().splitlines()[1].split("\t")[0]
    for i, name in enumerate(names):
        home = tmp_path / f"edited{i}"
        cache_file(home).parent.mkdir(parents=True)
        cache_file(home).write_text(f"{HEADER}{key}\t{name} 0.002 0.001 1e-07\n")
        monkeypatch.setenv("XDG_CACHE_HOME", str(home))
        log = check(capfd, graph, feeds, True)
        assert f"-> {name} (cached)" in log, log
        kernel = [ln for ln in log.splitlines() if f"'node0' ({op}) -> dnnl" in ln][0]
        assert f"dnnl ({name}" in kernel, kernel
    return names


def test_cached_choice_is_followed(capfd, cache_home, monkeypatch, tmp_path):
    """An entry edited to any candidate (direct or Winograd) decides the
    kernel, untimed, and gives the ref device's answer."""
    needs_winograd()
    g, feeds = resnet_conv(np.random.default_rng(2), c=32, h=14, w=14)
    log = check(capfd, g, feeds, True)
    names = follow_each_candidate(capfd, cache_home, tmp_path, monkeypatch, g, feeds, log)
    assert any("wino" in n for n in names), names


@pytest.mark.parametrize("case", [
    # (seed, n, c, m, h, w, kernel, stride, pad, activation, residual)
    (10, 1, 33, 47, 7, 7, 3, 1, 1, "Relu", False),     # Winograd 2x3 and 4x3 tiles, odd sizes
    (11, 1, 37, 21, 13, 11, 1, 1, 0, "", False),       # 1x1: the 1x1 and the general kernel
    (12, 2, 19, 40, 9, 15, 1, 1, 0, "Relu", False),    # 1x1 at batch 2
    (13, 2, 17, 33, 14, 13, 3, 1, 1, "Relu", False),   # Winograd at batch 2
    (14, 1, 48, 16, 5, 9, 1, 1, 0, "Relu", True),      # a residual (one kernel here)
    (15, 2, 33, 47, 9, 11, 3, 1, 1, "Relu", True),     # a residual: Winograd adds it by a sum
    (16, 1, 40, 24, 7, 7, 3, 1, 1, "", True),          # the same at batch 1, no activation
])
def test_every_candidate_matches_ref(capfd, cache_home, monkeypatch, tmp_path, case):
    """Each implementation autotuning can choose, forced through the
    cache, on odd channel counts and sizes, batch 1 and 2. (Plain inputs,
    3x3 with a residual and strided 3x3 have one implementation on
    AVX-512, which test_matches_ref covers untimed.) A 3x3 stride-1
    residual has Winograd candidates that copy Z into Y and add it by a
    sum post-op."""
    seed, n, c, m, h, w, k, stride, pad, act, residual = case
    rng = np.random.default_rng(seed)
    inputs = [rand(rng, (n, c, h, w)), rand(rng, (m, c, k, k)) * np.float32(0.2),
              rand(rng, (m,))]
    attrs = {"pads": [pad] * 4, "strides": [stride, stride], "activation": act}
    if residual:
        g0, f0 = make_graph("Conv", inputs, {"pads": [pad] * 4, "strides": [stride, stride]},
                            const_inputs=(1, 2))
        inputs.append(rand(rng, run_plan(g0, f0, "ref")[0].shape))
    g, feeds = make_graph("FusedConv", inputs, attrs, domain="ai.tessera", const_inputs=(1, 2))
    log = check(capfd, g, feeds, True)
    if "autotune 'node0'" not in log:
        pytest.skip("oneDNN has one implementation for this node here")
    names = follow_each_candidate(capfd, cache_home, tmp_path, monkeypatch, g, feeds, log)
    if residual and k == 3 and not winograd_skip_reason():
        assert any("wino" in n and n.endswith("+sum") for n in names), names


@pytest.mark.parametrize("op", ["ConvGradInput", "ConvGradFilter"])
@pytest.mark.parametrize("case", [
    # (seed, n, c, m, h, w): odd channel counts and sizes, batch 1 to 3
    (20, 1, 33, 47, 7, 7),
    (21, 2, 17, 33, 14, 13),
    (22, 3, 64, 48, 12, 9),
])
def test_backward_candidates_match_ref(capfd, cache_home, monkeypatch, tmp_path, op, case):
    """The backward convolutions of a 3x3 stride-1 layer (fed weights, as
    in training) choose between oneDNN's direct and Winograd kernels: the
    decision is measured and cached, and each candidate, forced through
    the cache, gives the ref device's answer."""
    needs_winograd()
    seed, n, c, m, h, w = case
    rng = np.random.default_rng(seed)
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (m, c, 3, 3)) * np.float32(0.2)
    dy = rand(rng, (n, m, h, w))
    inputs = ([dy, wt, np.array(x.shape, np.int64)] if op == "ConvGradInput"
              else [x, dy, np.array(wt.shape, np.int64)])
    g, feeds = make_graph(op, inputs, {"pads": [1, 1, 1, 1]}, domain="ai.tessera",
                          const_inputs=(2,))
    log = check(capfd, g, feeds, True)
    key = cache_file(cache_home).read_text().splitlines()[1].split("\t")[0]
    assert key.startswith("conv-bwd-data " if op == "ConvGradInput" else "conv-bwd-weights ")
    assert f"x={n}x{c}x{h}x{w}" in key and f"w={m}x{c}x3x3" in key, key
    names = follow_each_candidate(capfd, cache_home, tmp_path, monkeypatch, g, feeds, log, op)
    assert len(names) == 2 and "wino" not in names[0] and "wino" in names[1], names


@pytest.mark.parametrize("content", [
    b"not a cache\n",                                       # someone else's file
    b"\x00\xff garbage",                                    # binary
    HEADER.encode() + b"conv broken line without tab\n"      # malformed entries
    + b"k\twinograd nan 1 1\nk\tdirect -1 1 1\nk\twinograd 1 2\nconv partial\tdire",
    b"",                                                    # empty
])
def test_corrupt_cache_is_ignored(capfd, cache_home, content):
    """Planning works and is right; a file without the header is left as
    it was; one with it keeps its lines and gains the new decision."""
    path = cache_file(cache_home)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    g, feeds = resnet_conv(np.random.default_rng(3), c=16, h=9, w=7)
    check(capfd, g, feeds, True)
    after = path.read_bytes()
    if not content.startswith(HEADER.encode()):
        assert after == content
        return
    assert after.startswith(content)
    if winograd_skip_reason() is None:
        new = after[len(content):].decode()
        assert new.startswith("\n") and new.count("\n") == 2 and "\t" in new, new


def test_unusable_cache_location(capfd, cache_home, monkeypatch, tmp_path):
    """A cache path that is a directory, or under a file, or no absolute
    XDG_CACHE_HOME and no HOME: planning goes on, nothing is written."""
    cache_file(cache_home).mkdir(parents=True)
    g, feeds = resnet_conv(np.random.default_rng(4), c=16, h=8, w=8)
    check(capfd, g, feeds, True)
    assert cache_file(cache_home).is_dir()
    blocker = tmp_path / "a_file"
    blocker.write_text("mine\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    check(capfd, g, feeds, True)
    assert blocker.read_text() == "mine\n"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    monkeypatch.delenv("HOME")
    check(capfd, g, feeds, True)
    assert not (tmp_path / "relative").exists()


def test_off_by_option_and_environment(capfd, cache_home, monkeypatch):
    g, feeds = resnet_conv(np.random.default_rng(5), c=32, h=10, w=10)
    log = check(capfd, g, feeds, False)
    assert "autotune" not in log and "wino" not in log
    monkeypatch.setenv("TSR_AUTOTUNE", "0")
    log = check(capfd, g, feeds, None)
    assert "autotune" not in log and "wino" not in log
    assert not cache_file(cache_home).exists()
    monkeypatch.setenv("TSR_AUTOTUNE", "1")
    log = check(capfd, g, feeds, None)
    assert ("autotune 'node0'" in log) == (winograd_skip_reason() is None), log


def test_fed_weights_and_residual(capfd, cache_home):
    """Weights fed at run time (a training plan's) and a residual Z: each
    candidate reorders W at every run, and a second run sees new weights."""
    rng = np.random.default_rng(6)
    g, feeds = resnet_conv(rng, c=24, h=11, w=9, with_z=True, fed=True)
    check(capfd, g, feeds, True)
    plan = plan_cpu(g, True)
    plan.run(feeds)
    feeds[1] = rand(rng, feeds[1].shape)
    got = plan.run(feeds)[0]
    want = run_plan(g, feeds, "ref")[0]
    assert float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())


SCRIPT = """
import numpy as np, sys
sys.path.insert(0, {tests!r})
import tsr
import tessera
from test_cpu_dnnl import make_graph, rand, run_plan
rng = np.random.default_rng(0)
inputs = [rand(rng, (1, 32, 12, 12)), rand(rng, (32, 32, 3, 3)), rand(rng, (32,))]
g, feeds = make_graph("FusedConv", inputs, {{"pads": [1, 1, 1, 1], "activation": "Relu"}},
                      domain="ai.tessera", const_inputs=(1, 2))
got = tessera.Plan(g, "cpu", 2, "fp32", None, verbose=True, autotune=True).run(feeds)[0]
want = run_plan(g, feeds, "ref")[0]
print(float(np.abs(got - want).max() / np.abs(want).max()))
"""


def test_avx2_only_cpu_plans_direct(cache_home):
    """oneDNN capped at AVX2 (DNNL_MAX_CPU_ISA, read once per process, so in
    a child) has no Winograd kernel: nothing is timed or cached and the
    result is right, as on an AVX2-only machine."""
    env = dict(os.environ, DNNL_MAX_CPU_ISA="AVX2", TSR_CPU_ISA="avx2")
    tests = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) <= 1e-4
    assert "autotune" not in out.stderr and "wino" not in out.stderr
    assert "avx2" in out.stderr, out.stderr
    assert not cache_file(cache_home).exists()


@pytest.mark.parametrize("autotune", [False, True])
def test_optimize_passes_the_option(cache_home, autotune):
    """tessera.optimize(autotune=...) reaches the plans it builds."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(16, 24, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Conv2d(24, 24, 3, padding=1)).eval()
    x = torch.randn(2, 16, 13, 11)
    fast = tessera.optimize(module, x, autotune=autotune)
    with torch.no_grad():
        want, got = module(x), fast(x)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
    tuned = cache_file(cache_home).exists()
    assert tuned == (autotune and winograd_skip_reason() is None)

"""Depth-first stacks on the cpu device: the same graph run tile by tile
(depth_first=1) and layer by layer (depth_first=0) must agree to 1e-6
relative, on random stacks of pooling (random windows, strides, padding,
dilations, ceil_mode), element-wise, per-channel, BatchNormalization,
residual Adds and Concats, at odd sizes, in plain and blocked layouts, with
tiles down to one row so that every tile touches an image border; and on
the six models. The reference device checks both, more loosely."""

import ctypes

import numpy as np
import pytest

import tsr

LAYOUTS = ["plain", "nChw8c", "nChw16c"]


def _has_cpu_device():
    lib = tsr.lib()
    lib.tsr_device_names.restype = ctypes.c_char_p
    return "cpu" in lib.tsr_device_names().decode().split(",")


pytestmark = pytest.mark.skipif(not _has_cpu_device(), reason="this build has no cpu device")


def blocked(g, name, c):
    """name -> identity 1x1 Conv: the same values, in the device's layout."""
    eye = name + "_eye"
    g.add_constant(eye, np.eye(c, dtype=np.float32).reshape(c, c, 1, 1))
    g.add_node("Conv", [name, eye], [name + "_c"], {"kernel_shape": [1, 1]})
    return name + "_c"


def _pool_out(size, k, s, pb, pe, d, ceil):
    span = size + pb + pe - ((k - 1) * d + 1)
    if span < 0:
        return 0
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + pb:
        out -= 1
    return out


class Builder:
    """A random stack: each step adds one op on the current value."""

    def __init__(self, rng, layout, channels=(3, 8, 13, 16, 24, 32), reciprocal=True,
                 batches=(1, 2, 3)):
        self.rng = rng
        # reciprocal: constant / value too (1/x of a convolution's output
        # near 0 magnifies its rounding past what a comparison with ref takes)
        self.reciprocal = reciprocal
        self.g = tsr.Graph()
        self.g.set_opset(17)
        n = int(rng.choice(batches))
        c = int(rng.choice(channels))
        h, w = (int(v) for v in rng.integers(5, 30, size=2))
        self.x_shape = (n, c, h, w)
        self.g.add_input("x", np.float32, list(self.x_shape))
        self.feeds = [rng.standard_normal(self.x_shape).astype(np.float32)]
        self.cur = blocked(self.g, "x", c) if layout != "plain" else "x"
        self.shape = {"x": (c, h, w), self.cur: (c, h, w)}
        self.count = 0
        self.outputs = []

    def name(self):
        self.count += 1
        return f"v{self.count}"

    def add(self, op, inputs, attrs=None, shape=None):
        out = self.name()
        self.g.add_node(op, inputs, [out], attrs)
        self.shape[out] = shape or self.shape[inputs[0]]
        self.cur = out
        return out

    def const(self, array):
        name = self.name()
        self.g.add_constant(name, array.astype(np.float32))
        return name

    def step(self):
        rng = self.rng
        c, h, w = self.shape[self.cur]
        kind = rng.choice(["pool", "pool", "unary", "channel", "bn", "residual", "concat"])
        if kind == "pool":
            k = [int(v) for v in rng.integers(1, 5, size=2)]
            s = [int(v) for v in rng.choice([1, 1, 2, 3], size=2)]
            d = [int(v) for v in rng.choice([1, 1, 2], size=2)]
            op = "MaxPool" if rng.random() < 0.5 else "AveragePool"
            if op == "AveragePool":
                d = [1, 1]
            pads = [int(rng.integers(0, k[i] // 2 + 1)) for i in (0, 1)]
            pads += [int(rng.integers(0, k[i] // 2 + 1)) for i in (0, 1)]
            ceil = int(rng.random() < 0.5)
            oh = _pool_out(h, k[0], s[0], pads[0], pads[2], d[0], ceil)
            ow = _pool_out(w, k[1], s[1], pads[1], pads[3], d[1], ceil)
            if oh < 2 or ow < 2:
                return
            attrs = {"kernel_shape": k, "strides": s, "pads": pads, "ceil_mode": ceil}
            if op == "MaxPool":
                attrs["dilations"] = d
            else:
                attrs["count_include_pad"] = int(rng.random() < 0.5)
            self.add(op, [self.cur], attrs, (c, oh, ow))
        elif kind == "unary":
            op = str(rng.choice(["Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish", "Abs"]))
            self.add(op, [self.cur], {"alpha": 0.1} if op == "LeakyRelu" else None)
        elif kind == "channel":
            op = str(rng.choice(["Mul", "Add", "Sub", "Div"]))
            shape = [(c, 1, 1), (1, c, 1, 1), (1,)][int(rng.integers(0, 3))]
            values = rng.uniform(0.5, 1.5, size=shape)
            other = self.const(values)
            inputs = [self.cur, other] if rng.random() < 0.7 else [other, self.cur]
            if not self.reciprocal and op == "Div":
                inputs = [self.cur, other]
            self.add(op, inputs, shape=(c, h, w))
        elif kind == "bn":
            params = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                      rng.uniform(0.5, 1.5, c)]
            names = [self.const(p) for p in params]
            self.add("BatchNormalization", [self.cur] + names, {"epsilon": 1e-5})
        elif kind == "residual":
            same = [v for v in self.shape if v != self.cur and self.shape[v] == (c, h, w)]
            if not same:
                # A small diamond: y = relu(x) + x.
                x = self.cur
                same = [self.add("Relu", [x])]
                self.cur = x
            other = str(rng.choice(same))
            self.add("Add", [self.cur, other] if rng.random() < 0.5 else [other, self.cur])
        else:
            same = [v for v in self.shape if self.shape[v][1:] == (h, w)]
            parts = [self.cur, str(rng.choice(same))]
            rng.shuffle(parts)
            total = sum(self.shape[p][0] for p in parts)
            self.add("Concat", parts, {"axis": 1}, (total, h, w))
        if rng.random() < 0.15:
            self.outputs.append(self.cur)
        if rng.random() < 0.1:
            out = self.name()
            self.g.add_node("GlobalAveragePool", [self.cur], [out])
            self.outputs.append(out)

    def conv(self, oc, k, stride, depthwise=False):
        """A convolution of the current value (square kernel k, padding
        k // 2), with a bias and maybe a clip, as MobileNet's and
        DenseNet's; depthwise keeps the channels."""
        rng = self.rng
        c, h, w = self.shape[self.cur]
        oc = c if depthwise else oc
        oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
        fan = k * k * (1 if depthwise else c)
        wname = self.const(rng.standard_normal((oc, 1 if depthwise else c, k, k)) / np.sqrt(fan))
        attrs = {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [k // 2] * 4}
        if depthwise:
            attrs["group"] = c
        self.add("Conv", [self.cur, wname, self.const(rng.normal(0, 0.1, oc))], attrs, (oc, oh, ow))
        if rng.random() < 0.5:
            self.add("Clip", [self.cur, self.const(np.zeros(())), self.const(np.full((), 6.0))])

    def finish(self):
        for o in dict.fromkeys(self.outputs + [self.cur]):
            self.g.add_output(o)
        return self.g


def add_peak(g, name):
    """A value four times as large as `name` (a Concat along W, which
    stacks do not take) and an output from it, so that the arena's peak
    lies after the stacks before it. A stack must not raise that peak, and
    one holds its input, its output and its scratch at once: a chain of
    equal values at the peak stays layer by layer."""
    g.add_node("Concat", [name] * 4, [name + "_wide"], {"axis": 3})
    g.add_node("Neg", [name + "_wide"], [name + "_peak"])
    g.add_output(name + "_peak")


def run_modes(g, feeds, threads=2, on_ref=0):
    """Layer by layer (0) and depth-first (1); both run every node but
    `on_ref` of them on the device's own backends (the blocking Conv on
    dnnl, the rest on cpu), so neither mode is the reference comparing with
    itself."""
    results, stats = {}, {}
    for df in (0, 1):
        plan = tsr.Plan(g, device="cpu", threads=threads, depth_first=df)
        results[df] = plan.run(feeds)
        stats[df] = plan.stats()
        assert plan.backend_counts()["ref"] == on_ref, plan.backend_counts()
    return results, stats


def check_close(got, want, rtol=1e-6):
    assert got.shape == want.shape
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale + 1e-30)


@pytest.mark.parametrize("band_rows", ["", "1", "2", "3"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_random_stacks(layout, band_rows, monkeypatch):
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    if band_rows:
        monkeypatch.setenv("TSR_DF_BAND_ROWS", band_rows)
    else:
        monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    rng = np.random.default_rng([LAYOUTS.index(layout), len(band_rows) and int(band_rows)])
    stacks = 0
    for case in range(12):
        b = Builder(rng, layout)
        for _ in range(int(rng.integers(3, 9))):
            b.step()
        g = b.finish()
        results, stats = run_modes(g, b.feeds)
        assert stats[0].n_stacks == 0
        stacks += stats[1].n_stacks
        want = tsr.Plan(g, device="ref").run(b.feeds)
        for got_df, got_lbl, ref in zip(results[1], results[0], want):
            check_close(got_df, got_lbl)
            check_close(got_df, ref, rtol=1e-4)
    assert stacks >= 6, f"only {stacks} stacks formed in 12 random graphs"


def test_chain_has_no_full_intermediates(monkeypatch):
    """A stack's inner values have no buffers: the arena shrinks, the plan says so."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", "nChw16c")
    monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    g = tsr.Graph()
    g.set_opset(17)
    shape = (2, 32, 57, 57)
    g.add_input("x", np.float32, list(shape))
    x = blocked(g, "x", 32)
    g.add_constant("s", np.full((32, 1, 1), 0.5, np.float32))
    g.add_node("Mul", [x, "s"], ["a"])
    g.add_node("Relu", ["a"], ["b"])
    g.add_node("MaxPool", ["b"], ["c"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    g.add_node("Add", ["c", x], ["d"])
    g.add_node("Sigmoid", ["d"], ["e"])
    g.add_node("Mul", ["d", "e"], ["f"])
    g.add_node("AveragePool", ["f"], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    g.add_output("y")
    feeds = [np.random.default_rng(5).standard_normal(shape).astype(np.float32)]
    results, stats = run_modes(g, feeds)
    check_close(results[1][0], results[0][0])
    # Mul(d, Sigmoid(d)) is one Silu (fuse_silu): six ops in the stack.
    assert stats[1].n_stacks == 1 and stats[1].n_stack_ops == 6
    assert [stats[1].backend_steps[b] for b in ("dnnl", "cpu", "ref")] == [1, 6, 0]
    assert stats[1].n_steps == stats[0].n_steps
    assert stats[1].arena_bytes < stats[0].arena_bytes


def test_ref_device_and_off_form_no_stacks():
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, [1, 4, 9, 9])
    g.add_node("Relu", ["x"], ["a"])
    g.add_node("MaxPool", ["a"], ["y"], {"kernel_shape": [2, 2]})
    g.add_output("y")
    x = np.random.default_rng(1).standard_normal((1, 4, 9, 9)).astype(np.float32)
    for device, df, want in (("ref", 1, 0), ("cpu", 0, 0), ("cpu", -1, 1), ("cpu", 1, 1)):
        plan = tsr.Plan(g, device=device, depth_first=df)
        plan.run([x])
        assert plan.stats().n_stacks == want, (device, df)


MODEL_NAMES = ("resnet18", "resnet50", "mobilenet_v2", "vgg16", "densenet121", "squeezenet1_1")


@pytest.mark.models
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_models_agree(model, monkeypatch):
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    import models

    monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    monkeypatch.delenv("TSR_CPU_LAYOUT", raising=False)
    # Autotuning may time different oneDNN kernels best in the two plans, and their
    # roundings differ by more than the 1e-6 this compares at.
    monkeypatch.setenv("TSR_AUTOTUNE", "0")
    entry = models.export(model, 11, 1, False)
    x = np.load(entry.input_path(1))
    g = tsr.Graph.load(entry.onnx_path)
    # Flatten before the classifier has no cpu kernel: it is a copy on ref.
    flattens = sum(n.op_type == "Flatten" for n in onnx.load(entry.onnx_path).graph.node)
    results, stats = run_modes(g, [x], on_ref=flattens)
    check_close(results[1][0], results[0][0])
    # The arena is its peak: it shrinks where stacks remove a value live at the peak
    # (DenseNet's concatenations), and never grows.
    assert stats[1].arena_bytes <= stats[0].arena_bytes
    if model == "densenet121":
        assert stats[1].n_stacks >= 50
        assert stats[1].arena_bytes < 0.95 * stats[0].arena_bytes


def test_cli_stacks_and_no_depth_first(tmp_path, monkeypatch):
    """`tessera info --stacks` lists the stack; --no-depth-first runs without it, same answer."""
    import json
    import subprocess

    onnx = pytest.importorskip("onnx")
    import models
    from onnx import TensorProto, helper

    monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("MaxPool", ["a"], ["b"], name="pool", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 11, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 11, 13])])
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    exe = str(models.tessera_bin())

    info = subprocess.run([exe, "info", str(path), "--stacks"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "stack of 3 ops" in info.stdout
    for name in ("relu", "pool", "sigmoid"):
        assert name in info.stdout

    x = np.random.default_rng(3).standard_normal((1, 8, 11, 13)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = []
    for flag in ([], ["--no-depth-first"]):
        out = tmp_path / f"y{len(flag)}.npy"
        proc = subprocess.run([exe, "run", str(path), "--device", "cpu", "--input",
                               str(tmp_path / "x.npy"), "--output", str(out)] + flag,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        outs.append(np.load(out))
        bench = subprocess.run([exe, "bench", str(path), "--device", "cpu", "--iters", "1",
                                "--warmup", "0", "--json"] + flag, capture_output=True, text=True)
        assert bench.returncode == 0, bench.stderr
        res = json.loads(bench.stdout.strip().splitlines()[-1])
        assert res["depth_first"] == (not flag) and res["n_stacks"] == (0 if flag else 1)
    check_close(outs[0], outs[1])
    pooled = np.full_like(x, -np.inf)
    xp = np.pad(np.maximum(x, 0), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    for dh in range(3):
        for dw in range(3):
            pooled = np.maximum(pooled, xp[:, :, dh:dh + 11, dw:dw + 13])
    want = 1.0 / (1.0 + np.exp(-pooled))
    check_close(outs[0], want, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_band_error_comes_out_of_the_stack(layout, monkeypatch):
    """A band kernel's failure (injected by TSR_TEST_FAIL_BAND on the batch's
    last image, a worker thread's tiles) stops the stack and comes out of
    run with the node named; the same graph without the hook runs."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_DF_BAND_ROWS", "2")
    g = tsr.Graph()
    g.set_opset(17)
    shape = (3, 16, 13, 11)
    g.add_input("x", np.float32, list(shape))
    x = blocked(g, "x", 16) if layout != "plain" else "x"
    g.add_node("Relu", [x], ["a"], name="relu")
    g.add_node("MaxPool", ["a"], ["b"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
               name="the_pool")
    g.add_node("Sigmoid", ["b"], ["y"], name="sigmoid")
    g.add_output("y")
    add_peak(g, "y")
    feeds = [np.random.default_rng(7).standard_normal(shape).astype(np.float32)]
    monkeypatch.setenv("TSR_TEST_FAIL_BAND", "the_pool")
    plan = tsr.Plan(g, device="cpu", threads=2, depth_first=1)
    with pytest.raises(tsr.TesseraError) as err:
        plan.run(feeds)
    assert plan.stats().n_stacks == 1
    message = str(err.value)
    assert "the_pool" in message and "depth-first stack" in message, message
    assert "image 2" in message and "TSR_TEST_FAIL_BAND" in message, message
    monkeypatch.delenv("TSR_TEST_FAIL_BAND")
    results, _ = run_modes(g, feeds)
    check_close(results[1][0], results[0][0])


def _convs_blocked(capfd):
    """Whether the cpu device's convolutions write the blocked layout
    (TSR_CPU_LAYOUT=nChw16c on an AVX2-only CPU runs them plain, on
    oneDNN's gemm kernels), so that they can compute by bands."""
    g = tsr.Graph()
    g.set_opset(17)
    g.add_input("x", np.float32, [1, 3, 9, 9])
    g.add_constant("w", np.ones((16, 3, 3, 3), np.float32))
    g.add_node("Conv", ["x", "w"], ["y"], {"kernel_shape": [3, 3]})
    g.add_output("y")
    capfd.readouterr()
    tsr.Plan(g, device="cpu").run([np.ones((1, 3, 9, 9), np.float32)])
    return "gemm" not in capfd.readouterr().err


def _stacked_ops(err):
    """The ops of every stack TSR_VERBOSE printed, one list per stack."""
    stacks = []
    for line in err.splitlines():
        if line.startswith("stack of "):
            stacks.append([])
        elif stacks and line.startswith("  "):
            stacks[-1].append(line.split()[0])
    return stacks


@pytest.mark.parametrize("band_rows", ["", "1", "2", "5"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv_opens_stacks(layout, band_rows, monkeypatch, capfd):
    """A convolution (random kernel, stride, dilation, padding, bias,
    activation; plain or blocked input, of 3 to 32 channels, a partial
    block among them) opens a stack of the random ops after it, computing
    its output by bands of rows of every channel block: it must agree with
    layer by layer and with ref; so must a depthwise convolution after it
    (inside the stack). Plain activations (one channel per block) leave
    the convolution out; so does a batch smaller than the threads (see
    test_stem_and_depthwise_stack)."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_VERBOSE", "1")
    if band_rows:
        monkeypatch.setenv("TSR_DF_BAND_ROWS", band_rows)
    else:
        monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    rng = np.random.default_rng([10 + LAYOUTS.index(layout), len(band_rows) and int(band_rows)])
    blocked_convs = layout != "plain" and _convs_blocked(capfd)
    opened = 0
    for case in range(10):
        b = Builder(rng, "plain", channels=[3, 16, 32, 13], reciprocal=False, batches=(2, 3))
        n, c, h, w = b.x_shape
        oc = int(rng.choice([16, 32, 48]))
        k = [int(v) for v in rng.integers(1, 8, size=2)]
        s = [int(v) for v in rng.choice([1, 1, 2, 3], size=2)]
        d = [int(v) for v in rng.choice([1, 1, 2], size=2)]
        pads = [int(rng.integers(0, k[i] // 2 + 1)) for i in (0, 1, 0, 1)]
        oh = (h + pads[0] + pads[2] - (k[0] - 1) * d[0] - 1) // s[0] + 1
        ow = (w + pads[1] + pads[3] - (k[1] - 1) * d[1] - 1) // s[1] + 1
        if oh < 2 or ow < 2:
            continue
        wname = b.const(rng.standard_normal((oc, c) + tuple(k)) / np.sqrt(c * k[0] * k[1]))
        inputs = ["x", wname]
        if rng.random() < 0.7:
            inputs.append(b.const(rng.standard_normal(oc)))
        b.add("Conv", inputs, {"kernel_shape": k, "strides": s, "dilations": d, "pads": pads},
              (oc, oh, ow))
        if rng.random() < 0.5:
            b.add("Relu", [b.cur])
        if rng.random() < 0.5:
            # Depthwise, as MobileNet's after its expand convolution.
            kd = [int(v) for v in rng.integers(1, 6, size=2)]
            sd = [int(v) for v in rng.choice([1, 2], size=2)]
            pd = [int(rng.integers(0, kd[i] // 2 + 1)) for i in (0, 1, 0, 1)]
            dh = (oh + pd[0] + pd[2] - kd[0]) // sd[0] + 1
            dw = (ow + pd[1] + pd[3] - kd[1]) // sd[1] + 1
            if dh >= 2 and dw >= 2:
                wd = b.const(rng.standard_normal((oc, 1) + tuple(kd)) / np.sqrt(kd[0] * kd[1]))
                b.add("Conv", [b.cur, wd, b.const(rng.standard_normal(oc))],
                      {"kernel_shape": kd, "strides": sd, "pads": pd, "group": oc}, (oc, dh, dw))
                if rng.random() < 0.5:
                    b.add("Clip", [b.cur, b.const(np.zeros(())), b.const(np.full((), 6.0))])
        for _ in range(int(rng.integers(1, 5))):
            b.step()
        g = b.finish()
        add_peak(g, b.cur)
        capfd.readouterr()
        results, stats = run_modes(g, b.feeds)
        stacks = _stacked_ops(capfd.readouterr().err)
        with_conv = [ops for ops in stacks if {"Conv", "FusedConv"} & set(ops)]
        assert blocked_convs or not with_conv, stacks
        opened += len(with_conv)
        want = tsr.Plan(g, device="ref").run(b.feeds)
        for got_df, got_lbl, ref in zip(results[1], results[0], want):
            check_close(got_df, got_lbl, rtol=1e-5)
            check_close(got_df, ref, rtol=1e-4)
    if blocked_convs:
        assert opened >= 3, f"only {opened} stacks opened by a convolution in 10 random graphs"


@pytest.mark.parametrize("band_rows", ["", "1", "3"])
@pytest.mark.parametrize("layout", ["nChw8c", "nChw16c"])
def test_convs_inside_stacks(layout, band_rows, monkeypatch, capfd):
    """Convolutions anywhere in a stack, as MobileNet's blocks (1x1 expand,
    depthwise, 1x1 project) and DenseNet's (Concat, BatchNormalization,
    ReLU, 1x1): tiles of every channel, the convolutions reading their
    bands of every block (copied where a band holds more rows than they
    read, or a whole image's planes) and writing them (computed aside
    where the output is a full buffer), among random ops. They must agree
    with layer by layer and with ref, and some stacks must hold two
    convolutions, or one after another op."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_VERBOSE", "1")
    if band_rows:
        monkeypatch.setenv("TSR_DF_BAND_ROWS", band_rows)
    else:
        monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    if not _convs_blocked(capfd):
        pytest.skip(f"oneDNN runs convolutions plain with {layout} on this CPU")
    rng = np.random.default_rng([20 + len(layout), len(band_rows) and int(band_rows)])
    inner = 0
    for case in range(8):
        b = Builder(rng, layout, channels=[16, 24, 32, 40], reciprocal=False, batches=(2, 3))
        for _ in range(int(rng.integers(2, 6))):
            kind = rng.choice(["step", "expand", "depthwise", "project", "bottleneck"])
            c = b.shape[b.cur][0]
            if kind == "step":
                b.step()
            elif kind == "expand":
                b.conv(int(rng.choice([2, 4, 6])) * c // 8 * 8 or 16, 1, 1)
            elif kind == "depthwise":
                b.conv(c, 3, int(rng.choice([1, 2])), depthwise=True)
            elif kind == "project":
                b.conv(int(rng.choice([16, 32, 48])), 1, 1)
            else:
                x = b.cur
                params = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                          rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)]
                b.add("BatchNormalization", [x] + [b.const(p) for p in params],
                      {"epsilon": 1e-5})
                b.add("Relu", [b.cur])
                b.conv(int(rng.choice([16, 32])), int(rng.choice([1, 3])), 1)
                b.add("Concat", [x, b.cur], {"axis": 1},
                      (b.shape[x][0] + b.shape[b.cur][0],) + b.shape[b.cur][1:])
        g = b.finish()
        add_peak(g, b.cur)
        capfd.readouterr()
        results, _ = run_modes(g, b.feeds)
        for ops in _stacked_ops(capfd.readouterr().err):
            convs = [i for i, op in enumerate(ops) if op in ("Conv", "FusedConv")]
            inner += len(convs) > 1 or any(i > 0 for i in convs)
        want = tsr.Plan(g, device="ref").run(b.feeds)
        for got_df, got_lbl, ref in zip(results[1], results[0], want):
            check_close(got_df, got_lbl, rtol=1e-5)
            check_close(got_df, ref, rtol=1e-4)
    assert inner >= 2, f"only {inner} stacks with a convolution inside in 8 random graphs"


def _stem_graph(batch, rng):
    """MobileNet's stem: conv 3 -> 32 (stride 2) + ReLU6, depthwise 3x3 +
    ReLU6, at an odd size."""
    g = tsr.Graph()
    g.set_opset(17)
    shape = (batch, 3, 61, 47)
    g.add_input("x", np.float32, list(shape))
    g.add_constant("w", (rng.standard_normal((32, 3, 3, 3)) / 5).astype(np.float32))
    g.add_constant("wd", (rng.standard_normal((32, 1, 3, 3)) / 3).astype(np.float32))
    g.add_constant("bd", rng.standard_normal(32).astype(np.float32))
    g.add_constant("lo", np.zeros((), np.float32))
    g.add_constant("hi", np.full((), 6.0, np.float32))
    g.add_node("Conv", ["x", "w"], ["c"], {"kernel_shape": [3, 3], "strides": [2, 2],
                                            "pads": [1, 1, 1, 1]})
    g.add_node("Clip", ["c", "lo", "hi"], ["r"])
    g.add_node("Conv", ["r", "wd", "bd"], ["d"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                  "group": 32})
    g.add_node("Clip", ["d", "lo", "hi"], ["y"])
    g.add_output("y")
    return g, [rng.standard_normal(shape).astype(np.float32)]


@pytest.mark.parametrize("layout", ["nChw8c", "nChw16c"])
def test_stack_refuses_nan_its_fused_clip_would_hide(layout, monkeypatch, capfd):
    """The stem's convolutions fuse their ReLU6 (Clip), which oneDNN computes
    by max and min: run inside a stack, the plan refuses NaN in x as layer by
    layer does (test_cpu_kernels.py), where it would answer numbers."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_VERBOSE", "1")
    monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    if not _convs_blocked(capfd):
        pytest.skip(f"oneDNN runs convolutions plain with {layout} on this CPU")
    g, feeds = _stem_graph(8, np.random.default_rng(12))
    plan = tsr.Plan(g, device="cpu", threads=2, depth_first=1)
    plan.run(feeds)
    assert plan.stats().n_stacks == 1
    feeds[0][5, 1, 30, 20] = np.nan
    with pytest.raises(tsr.TesseraError, match="input 'x' holds NaN .* fuses a Clip"):
        plan.run(feeds)


@pytest.mark.parametrize("layout", ["nChw8c", "nChw16c"])
def test_stem_and_depthwise_stack(layout, monkeypatch, capfd):
    """The stem at batch 8 on 2 threads: one stack of both convolutions
    (a whole image per tile, no halo rows for the stem to compute twice),
    the stem's output without a buffer, the answer as layer by layer's;
    none at batch 1 (bands of the one image would recompute halos and copy
    rows), and none when the stem's output is read outside too."""
    monkeypatch.setenv("TSR_CPU_LAYOUT", layout)
    monkeypatch.setenv("TSR_VERBOSE", "1")
    monkeypatch.delenv("TSR_DF_BAND_ROWS", raising=False)
    if not _convs_blocked(capfd):
        pytest.skip(f"oneDNN runs convolutions plain with {layout} on this CPU")
    rng = np.random.default_rng(11)
    g, feeds = _stem_graph(8, rng)
    capfd.readouterr()
    results, stats = run_modes(g, feeds)
    assert _stacked_ops(capfd.readouterr().err) == [["FusedConv", "FusedConv"]]
    assert stats[1].arena_bytes < stats[0].arena_bytes
    check_close(results[1][0], results[0][0], rtol=1e-5)
    check_close(results[1][0], tsr.Plan(g, device="ref").run(feeds)[0], rtol=1e-4)
    g1, feeds1 = _stem_graph(1, rng)
    capfd.readouterr()
    results, _ = run_modes(g1, feeds1)
    assert not any("FusedConv" in ops for ops in _stacked_ops(capfd.readouterr().err))
    check_close(results[1][0], results[0][0])
    # The stem's output also read outside: it would keep its buffer, the
    # stack would not pay, so the convolution stays out of it.
    g.add_output("r")
    capfd.readouterr()
    results, _ = run_modes(g, feeds)
    assert not any("FusedConv" == ops[0] for ops in _stacked_ops(capfd.readouterr().err))
    check_close(results[1][1], results[0][1])

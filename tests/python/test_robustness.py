"""Hostile inputs through the `tessera` command line: tiny hand-made ONNX models whose shapes
or sizes pass what memory can hold, initializers and .npy/.npz/IDX/checkpoint files whose
headers promise more than they hold, and a tiny model whose load-time folding would take
gigabytes. Each must end in seconds and megabytes with a non-zero exit and one message that
says what is wrong (checked here), never a signal, a sanitizer report or exit 0 with made-up
output. Memory is the child's peak resident set (wait4), so one case cannot hide another, and
outside sanitizer builds (whose shadow memory needs terabytes of address space) the child's
address space is capped too, so that an allocation made from a declared size before the
bytes are checked fails even when its pages are never touched.

The binary is $TESSERA_BIN, else $TESSERA_BUILD_DIR/bin/tessera, else build/bin/tessera."""

import io
import os
import re
import signal
import struct
import subprocess
import tempfile
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from test_cli import tessera_bin

# Far above what the binary needs for these tiny models (about 10 MB), far below the
# gigabytes that the defects allocated.
MAX_RSS_MB = 200
MAX_ADDRESS_SPACE = 3 << 29  # 1.5 GiB
P62 = 1 << 62


def sanitized():
    with open(tessera_bin(), "rb") as f:
        return b"__asan_init" in f.read()


# The peak RSS of a process counts the memory of the one it was forked from, so tessera is
# started by this small launcher rather than by pytest (hundreds of MB once torch is loaded):
# it forks the command, optionally caps its address space, and writes the child's peak RSS
# (KB) to a file, exiting as the child did.
LAUNCHER = """
import os, resource, signal, sys
rss_path, cap, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
pid = os.fork()
if pid == 0:
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    os.execv(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
with open(rss_path, "w") as f:
    f.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"""


def measured(*args, env=None, timeout=120):
    """Runs tessera; returns (exit code or -signal, stdout, stderr, peak RSS in MB)."""
    rss_file = tempfile.NamedTemporaryFile(delete=False)
    rss_file.close()
    cap = 0 if sanitized() else MAX_ADDRESS_SPACE
    cmd = ["/usr/bin/python3", "-c", LAUNCHER, rss_file.name, str(cap), tessera_bin(),
           *map(str, args)]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ, **(env or {})),
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    with open(rss_file.name) as f:
        text = f.read()
    os.unlink(rss_file.name)
    rss = int(text) / 1024 if text else float("inf")
    return p.returncode, out.decode(), err.decode(), rss


def expect_clean_error(args, needles, env=None):
    rc, out, err, rss = measured(*args, env=env)
    assert rc > 0, f"exit {rc} (negative: a signal)\nstdout: {out}\nstderr: {err}"
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert err.count("error:") == 1, err
    for needle in needles:
        assert needle in err, f"wanted {needle!r} in: {err}"
    # A count that wrapped prints as a huge negative number.
    assert not re.search(r"-\d{12,}", err), err
    assert rss < MAX_RSS_MB, f"peak RSS {rss:.0f} MB"
    return out, err


def save(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def const(name, values, dtype=TensorProto.INT64, dims=None):
    dims = [len(values)] if dims is None else dims
    return helper.make_node("Constant", [], [name], name=name,
                            value=helper.make_tensor(name + "_v", dtype, dims, values))


def out(name, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, None)


def inp(name, dims, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, dims)


# ------------------------------------------------------- shapes past memory


def model_range(path):
    nodes = [const("s", [0], dims=[]), const("l", [P62], dims=[]), const("d", [1], dims=[]),
             helper.make_node("Range", ["s", "l", "d"], ["r"], name="range")]
    return save(path, nodes, [], [out("r", TensorProto.INT64)])


def model_constant_of_shape(path, relu):
    nodes = [const("shape", [P62]),
             helper.make_node("ConstantOfShape", ["shape"], ["c"], name="cos")]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    return save(path, nodes, [], [out("y" if relu else "c")])


def model_expand(path, shape):
    nodes = [const("shape", shape), helper.make_node("Expand", ["x", "shape"], ["y"],
                                                     name="expand")]
    return save(path, nodes, [inp("x", [1])], [out("y")])


def model_reshape(path, shape):
    nodes = [const("shape", shape), helper.make_node("Reshape", ["x", "shape"], ["y"],
                                                     name="reshape")]
    return save(path, nodes, [inp("x", [6])], [out("y")])


def model_pad(path, pads):
    nodes = [const("pads", pads), helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")]
    return save(path, nodes, [inp("x", [3])], [out("y")])


def model_tile(path):
    nodes = [const("reps", [1 << 40, 1 << 40]),
             helper.make_node("Tile", ["x", "reps"], ["y"], name="tile")]
    return save(path, nodes, [inp("x", [2, 2])], [out("y")])


def model_conv_pads(path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3], [1.0, 2.0, 3.0])
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[P62, P62])
    return save(path, [conv], [inp("x", [1, 1, 8])], [out("y")], [w])


def model_huge_input(path):
    relu = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return save(path, [relu], [inp("x", [1 << 40, 1 << 40])], [out("y")])


SHAPES = {
    "input": (model_huge_input, ["input 'x'", "[1099511627776, 1099511627776]", "2^62"]),
    # Range(0, 2^62, 1) in int64 used to write past a wrapped allocation (range_ref).
    "range": (model_range, ["node 'range' (Range)", "2^62"]),
    "cos-relu": (lambda p: model_constant_of_shape(p, True), ["(ConstantOfShape)", "2^62"]),
    "cos-output": (lambda p: model_constant_of_shape(p, False), ["(ConstantOfShape)", "2^62"]),
    "expand-62": (lambda p: model_expand(p, [P62]), ["node 'expand' (Expand)", "2^62"]),
    "expand-31": (lambda p: model_expand(p, [1 << 31, 1 << 31, 4]),
                  ["node 'expand' (Expand)", "[2147483648, 2147483648, 4]"]),
    "reshape": (lambda p: model_reshape(p, [1 << 32, 1 << 32]),
                ["node 'reshape' (Reshape)", "more than 2^62 elements"]),
    "reshape-infer": (lambda p: model_reshape(p, [1 << 40, 1 << 40, -1]),
                      ["node 'reshape' (Reshape)", "more than 2^62 elements"]),
    "pad": (lambda p: model_pad(p, [(1 << 63) - 1, (1 << 63) - 1]),
            ["node 'pad' (Pad)", "larger than 2^62"]),
    "tile": (model_tile, ["node 'tile' (Tile)", "2^62"]),
    "conv-pads": (model_conv_pads, ["node 'conv' (Conv)", "with pads 4611686018427387904",
                                    "passes 2^62"]),
}


@pytest.mark.parametrize("command", ["info", "run"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_shapes_past_memory(tmp_path, case, command):
    build, needles = SHAPES[case]
    path = build(tmp_path / f"{case}.onnx")
    assert path.stat().st_size < 400
    stdout, _ = expect_clean_error([command, path], needles)
    assert "(empty)" not in stdout


# ---------------------------------------------------- initializers that lie


def initializer_model(path, tensor):
    node = helper.make_node("Identity", [tensor.name], ["y"], name="id")
    return save(path, [node], [], [out("y", tensor.data_type)], [tensor])


def tensor_proto(dtype, dims, raw=None, int64s=None):
    """A TensorProto whose dims say what they like (onnx.helper would check them)."""
    t = TensorProto(name="w", data_type=dtype, dims=dims)
    if raw is not None:
        t.raw_data = raw
    if int64s is not None:
        t.int64_data.extend(int64s)
    return t


def lying_initializers():
    raw = tensor_proto(TensorProto.FLOAT, [1 << 20, 1 << 12], raw=b"\0\0\0\0")
    typed = tensor_proto(TensorProto.INT64, [1 << 31], int64s=[1, 2])
    huge = tensor_proto(TensorProto.FLOAT, [1 << 40, 1 << 40], raw=b"\0\0\0\0")
    return {
        "raw-16GB": (raw, ["'w'", "4 bytes of raw_data", "17179869184 bytes"]),
        "typed-16GB": (typed, ["'w'", "2 values in int64_data", "2147483648"]),
        "dims-past-2^62": (huge, ["'w'", "2^62"]),
    }


@pytest.mark.parametrize("case", list(lying_initializers()))
def test_initializer_sizes_checked_before_allocating(tmp_path, case):
    tensor, needles = lying_initializers()[case]
    path = initializer_model(tmp_path / "m.onnx", tensor)
    expect_clean_error(["info", path], needles)


# ------------------------------------------------------------------ folding


def range_sum_model(path, n):
    """A float Range(0, n, 1) reduced to its maximum: n - 1."""
    nodes = [const("s", [0.0], TensorProto.FLOAT, []),
             const("l", [float(n)], TensorProto.FLOAT, []),
             const("d", [1.0], TensorProto.FLOAT, []),
             helper.make_node("Range", ["s", "l", "d"], ["r"], name="range"),
             helper.make_node("ReduceMax", ["r"], ["y"], name="max", keepdims=0)]
    return save(path, nodes, [], [out("y")])


def test_tiny_model_cannot_make_loading_expensive(tmp_path):
    # 2^27 floats (512 MiB) from a model of about 250 bytes: folding it while loading
    # took seconds and as much memory; past the fold limit it becomes a plan step instead,
    # whose arena `info` reports but never touches (small enough that the shadow memory of
    # a sanitizer build stays under the bound too).
    path = range_sum_model(tmp_path / "big.onnx", 1 << 27)
    assert path.stat().st_size < 400
    rc, stdout, err, rss = measured("info", path)
    assert rc == 0, err
    assert "Ops: Range 1, ReduceMax 1" in stdout, stdout
    assert "Arena: 536870912 bytes" in stdout, stdout
    assert rss < MAX_RSS_MB, f"peak RSS {rss:.0f} MB"


def test_fold_limit_option_gives_the_same_answer(tmp_path):
    # 2^23 floats (32 MiB) pass the default limit of 16 MiB: run as a step, not folded;
    # a raised TSR_FOLD_LIMIT folds it; TSR_FOLD_LIMIT=0 still folds the Constants (their
    # bytes are in the model already) and leaves the Range to the plan. The value (n - 1,
    # exact in float32) is the same every way.
    n = 1 << 23
    path = range_sum_model(tmp_path / "m.onnx", n)
    ops = {}
    for limit in (None, "0", str(1 << 30)):
        env = {"TSR_FOLD_LIMIT": limit} if limit else {}
        result = tmp_path / f"y{limit}.npy"
        rc, _, err, _ = measured("run", path, "--output", result, env=env)
        assert rc == 0, err
        y = np.load(result)
        assert y.shape == () and y.dtype == np.float32 and float(y) == n - 1
        rc, info, err, _ = measured("info", path, env=env)
        assert rc == 0, err
        ops[limit] = re.search(r"^Ops: (.*)$", info, re.M).group(1)
    assert ops[None] == "Range 1, ReduceMax 1"
    assert ops["0"] == "Range 1, ReduceMax 1"
    assert ops[str(1 << 30)] == "none"


# ---------------------------------------------------------- .npy inputs


def npy_bytes(header, data=b""):
    text = header.encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def test_npy_input_promising_more_than_it_holds(tmp_path):
    model = save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                 [inp("x", ["n"])], [out("y")])
    bad = tmp_path / "x.npy"
    bad.write_bytes(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1073741824,), }",
                              b"\0" * 64))
    expect_clean_error(["run", model, "--input", f"x={bad}"],
                       [str(bad), "truncated", "8589934592 bytes"])
    bad.write_bytes(npy_bytes(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1099511627776, 1099511627776), }"))
    expect_clean_error(["run", model, "--input", f"x={bad}"], [str(bad), "absurdly large"])


# ------------------------------------------------------- training data


def train_model(path):
    """x [batch, 1, 4, 4] -> Flatten -> Gemm -> logits [batch, 3]."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 16], rng.normal(size=48).tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w", "b"], ["logits"], name="fc", transB=1)]
    return save(path, nodes, [inp("x", ["batch", 1, 4, 4])], [out("logits")], [w, b])


def train(tmp_path, data, *extra):
    model = train_model(tmp_path / "m.onnx")
    out_path = tmp_path / "trained.onnx"
    return ["train", model, "--data", data, "--out", out_path, "--epochs", "1", "--threads", "1",
            "--batch", "4", "--no-plot", *extra], out_path


def good_data(n=8):
    rng = np.random.default_rng(1)
    return rng.uniform(size=(n, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_training_runs_on_the_good_data(tmp_path):
    # The cases below differ from this one only in the file they break.
    x, y = good_data()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    args, out_path = train(tmp_path, tmp_path / "d.npz")
    rc, _, err, _ = measured(*args)
    assert rc == 0, err
    assert out_path.exists()


def test_npz_member_promising_gigabytes(tmp_path):
    # A stored member of 128 bytes whose header promises 8 GiB: bounded by the member's
    # length (the in-memory stream has no file size to fstat).
    x, y = good_data()
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("x.npy", npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1073741824,), }", b"\0" * 64))
        buf = io.BytesIO()
        np.save(buf, y)
        z.writestr("y.npy", buf.getvalue())
    args, out_path = train(tmp_path, path)
    expect_clean_error(args, ["array 'x'", "truncated", "8589934592 bytes"])
    assert not out_path.exists()


def test_npz_zip64_local_header_outside_the_file(tmp_path):
    # A zip64 extra field moves the first member's local header far past the end of the
    # file: refused before any pointer into the file is formed from the offset.
    x, y = good_data()
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x01\x02")
    name_len, extra_len = struct.unpack_from("<HH", raw, at + 28)
    assert raw[at + 20:at + 28] != b"\xff" * 8, "the sizes are not in a zip64 field"
    raw[at + 42:at + 46] = b"\xff\xff\xff\xff"
    struct.pack_into("<H", raw, at + 30, extra_len + 12)
    extra = at + 46 + name_len
    raw[extra:extra] = struct.pack("<HHQ", 1, 8, 1 << 60)
    path.write_bytes(bytes(raw))
    args, _ = train(tmp_path, path)
    expect_clean_error(args, [str(path), "local header is damaged or outside the file"])


def write_idx(path, dims, payload):
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d)
                                                                   for d in dims)
    path.write_bytes(header + payload)


def test_idx_with_an_empty_dim(tmp_path):
    # (0, 2^32 - 1, 2^32 - 1): no elements, so the other dims went unchecked and the
    # per-sample size overflowed in training.
    d = tmp_path / "data"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte", [0, 0xFFFFFFFF, 0xFFFFFFFF], b"")
    write_idx(d / "train-labels-idx1-ubyte", [0], b"")
    args, out_path = train(tmp_path, d)
    expect_clean_error(args, ["train-images-idx3-ubyte", "dim 0", "is 0"])
    assert not out_path.exists()


def test_idx_promising_more_than_it_holds(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte", [0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b"\0" * 16)
    write_idx(d / "train-labels-idx1-ubyte", [1], b"\0")
    args, _ = train(tmp_path, d)
    expect_clean_error(args, ["train-images-idx3-ubyte", "truncated"])


def test_truncated_checkpoint(tmp_path):
    x, y = good_data()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ckpt = tmp_path / "ck"
    args, _ = train(tmp_path, tmp_path / "d.npz", "--checkpoint", ckpt)
    rc, _, err, _ = measured(*args)
    assert rc == 0, err
    files = [p for p in ckpt.iterdir() if p.is_file()]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    rc, out_text, err, rss = measured(*args, "--resume")
    assert rc > 0, err
    assert "corrupt or truncated" in err or "truncated" in err, err
    assert rss < MAX_RSS_MB

"""tessera.Session (python/tessera) against the `tessera` program on the same files: the same
outputs bit for bit on one thread, feeds read in place when their layout allows (the pointer
the plan is given is the caller's), one conversion otherwise, output buffers reused unless
fresh ones are asked for, and errors raised as tessera.Error subclasses whose text is the
library's own (the CLI prints the same message)."""

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import tessera
from models import tessera_bin

RNG = np.random.default_rng(11)


def value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def save(path, nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


@pytest.fixture
def conv_model(tmp_path):
    """y = Relu(Conv(x, W, b)), z = ReduceMean(y) over H, W; x: [batch, 3, h, w]."""
    w = RNG.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float32)
    return save(tmp_path / "conv.onnx",
                [helper.make_node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c"], ["y"]),
                 helper.make_node("ReduceMean", ["y"], ["z"], axes=[2, 3], keepdims=0)],
                [value("x", ["batch", 3, "h", "w"])],
                [value("y", ["batch", 5, "h", "w"]), value("z", ["batch", 5])],
                [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])


def cli(*args):
    return subprocess.run([str(tessera_bin()), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def cli_error(*args):
    r = cli(*args)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("tessera: error: "), r.stderr
    return line[len("tessera: error: "):]


@pytest.mark.parametrize("device", ["cpu", "ref"])
def test_session_matches_tessera_run(conv_model, tmp_path, device):
    x = RNG.standard_normal((2, 3, 9, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    r = cli("run", conv_model, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", out,
            "--device", device, "--threads", "1")
    assert r.returncode == 0, r.stderr
    sess = tessera.Session(conv_model, device=device, threads=1)
    y, z = sess.run(None, {"x": x})
    np.testing.assert_array_equal(y, np.load(out / "y.npy"))
    np.testing.assert_array_equal(z, np.load(out / "z.npy"))
    from_bytes = tessera.Session(conv_model.read_bytes(), device=device, threads=1)
    np.testing.assert_array_equal(from_bytes.run(["z"], {"x": x})[0], z)


def test_inputs_outputs_describe_the_model(conv_model):
    sess = tessera.Session(conv_model)
    assert sess.inputs == [tessera.ValueSpec("x", np.dtype(np.float32), ["batch", 3, "h", "w"])]
    f32 = np.dtype(np.float32)
    assert sess.outputs == [tessera.ValueSpec("y", f32, ["batch", 5, "h", "w"]),
                            tessera.ValueSpec("z", f32, ["batch", 5])]
    name, dtype, shape = sess.inputs[0]  # a ValueSpec unpacks like a tuple
    assert (name, shape[0]) == ("x", "batch")


def test_feeds_are_read_in_place(conv_model):
    sess = tessera.Session(conv_model, device="ref", threads=1)
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    y_np = sess.run(["y"], {"x": x}, fresh=True)[0]
    assert sess._last_inputs[0].data == x.ctypes.data
    t = torch.from_numpy(x.copy())
    y_t = sess.run(["y"], {"x": t}, fresh=True)[0]
    assert isinstance(y_t, torch.Tensor)
    assert sess._last_inputs[0].data == t.data_ptr()
    np.testing.assert_array_equal(y_t.numpy(), y_np)


def test_other_layouts_are_converted_once(conv_model):
    sess = tessera.Session(conv_model, device="ref", threads=1)
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    want = sess.run(["y"], {"x": x}, fresh=True)[0]
    # Not C-contiguous: a transposed view of the same values.
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not xt.flags.c_contiguous
    np.testing.assert_array_equal(sess.run(["y"], {"x": xt}, fresh=True)[0], want)
    assert sess._last_inputs[0].data != xt.ctypes.data
    # Another dtype: float64 values exactly representable in float32.
    np.testing.assert_array_equal(sess.run(["y"], {"x": x.astype(np.float64)}, fresh=True)[0],
                                  want)
    tt = torch.from_numpy(x.astype(np.float64)).transpose(2, 3).contiguous().transpose(2, 3)
    np.testing.assert_array_equal(sess.run(["y"], {"x": tt}, fresh=True)[0].numpy(), want)


def test_output_buffers_are_reused_unless_fresh(conv_model):
    sess = tessera.Session(conv_model, device="ref", threads=1)
    a = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    b = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    ya = sess.run(["y"], {"x": a})[0]
    ya_copy = ya.copy()
    yb = sess.run(["y"], {"x": b})[0]
    assert yb is ya  # the same buffer, overwritten by the second run
    np.testing.assert_array_equal(yb, sess.run(["y"], {"x": b}, fresh=True)[0])
    assert not np.array_equal(ya_copy, yb)
    fresh = sess.run(["y"], {"x": a}, fresh=True)[0]
    np.testing.assert_array_equal(fresh, ya_copy)
    sess.run(["y"], {"x": b})
    np.testing.assert_array_equal(fresh, ya_copy)  # the session never touches it again
    # Another shape gets buffers of its own.
    c = RNG.standard_normal((3, 3, 4, 4)).astype(np.float32)
    assert sess.run(["y"], {"x": c})[0].shape == (3, 5, 4, 4)
    assert sess.run(["y"], {"x": b})[0] is ya
    # Only the last MAX_BUFFER_SETS shapes keep their buffers.
    for h in range(3, 3 + tessera.session.MAX_BUFFER_SETS):
        sess.run(["y"], {"x": np.zeros((1, 3, h, 2), np.float32)})
    assert len(sess._buffers) == tessera.session.MAX_BUFFER_SETS
    assert sess.run(["y"], {"x": b})[0] is not ya


def test_profile_and_stats(conv_model):
    sess = tessera.Session(conv_model, device="cpu", threads=1)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(tessera.InvalidArgumentError):
        sess.stats()
    report = sess.profile({"x": x}, iters=2)
    assert "ms/run" in report and "runs: 2" in report
    stats = sess.stats()
    assert stats["n_steps"] >= 1
    assert stats["flops"] > 0
    assert sum(stats["backend_steps"].values()) == stats["n_steps"]


def test_error_classes_on_malformed_files(tmp_path, conv_model):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a model at all\xff\xff")
    with pytest.raises(tessera.ParseError) as e:
        tessera.Session(garbage)
    assert e.value.status == 2 and e.value.status_name
    assert e.value.message == cli_error("info", garbage)

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(conv_model.read_bytes()[:200])
    with pytest.raises(tessera.ParseError) as e:
        tessera.Session(truncated.read_bytes())
    assert isinstance(e.value, tessera.Error) and e.value.status == 2

    unknown = save(tmp_path / "unknown.onnx", [helper.make_node("NoSuchOp", ["x"], ["y"])],
                   [value("x", [2])], [value("y", [2])])
    with pytest.raises(tessera.UnsupportedError) as e:
        tessera.Session(unknown)
    assert "NoSuchOp" in str(e.value) and e.value.status == 3
    assert e.value.message == cli_error("info", unknown)

    with pytest.raises(tessera.FileError) as e:
        tessera.Session(tmp_path / "missing.onnx")
    assert "missing.onnx" in str(e.value) and isinstance(e.value, OSError)


def test_error_classes_at_run_time(conv_model):
    sess = tessera.Session(conv_model, device="ref")
    with pytest.raises(tessera.ShapeError) as e:
        sess.run(None, {"x": np.zeros((1, 4, 5, 5), np.float32)})
    assert e.value.status == 4 and "x" in str(e.value)
    with pytest.raises(tessera.NotFoundError):
        sess.run(["nope"], {"x": np.zeros((1, 3, 5, 5), np.float32)})
    with pytest.raises(tessera.NotFoundError):
        sess.run(None, {"x": np.zeros((1, 3, 5, 5), np.float32), "extra": np.zeros(1)})
    with pytest.raises(tessera.InvalidArgumentError):
        sess.run(None, {})
    with pytest.raises(ValueError):
        tessera.Session(conv_model, precision="fp8")
    with pytest.raises(TypeError):
        tessera.Session(42)


def test_library_location_is_reported():
    assert os.path.isfile(tessera.library_path())


@pytest.mark.models
def test_pip_install_into_a_venv(tmp_path, conv_model):
    """`pip install` of python/ into a virtual environment (system site packages, no build
    isolation: no network) copies the library into the package, which then finds it without
    TESSERA_LIB or a build tree."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(Path(tessera.__file__).parents[1], src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    env = dict(os.environ, TESSERA_LIB=tessera.library_path())
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
                        "--no-build-isolation", str(src)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items()
           if k not in ("TESSERA_LIB", "TESSERA_BUILD_DIR", "PYTHONPATH")}
    script = ("import numpy as np, tessera, sys; "
              "print(tessera.library_path()); "
              f"s = tessera.Session({str(conv_model)!r}, device='ref'); "
              "print(s.run(['z'], {'x': np.ones((1, 3, 4, 4), np.float32)})[0].shape)")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    lib_path, shape = r.stdout.strip().split("\n")
    assert lib_path.startswith(str(venv)) and lib_path.endswith("tessera/libtessera.so")
    assert shape == "(1, 5)"

"""Writes the seed corpora of the file-format fuzz targets: tiny valid ONNX
models, .npy files, .npz archives, IDX files, extended XYZ files and an
ICTP model, each made by the format's own writer (onnx, numpy, zlib, ASE,
the test suite's ICTP reference) rather than by Tessera, so the fuzzers
start from what users actually feed Tessera.

Usage: make_seeds.py SEEDS_DIR REGRESSIONS_DIR
writes SEEDS_DIR/<target>/<name>, SEEDS_DIR/onnx.dict (a libFuzzer
dictionary of the op types in Tessera's op table and the attribute names
its op files use) and REGRESSIONS_DIR/<target>/<name>: every input that
once crashed, overflowed or allocated gigabytes, rebuilt here from what it
broke so that run.sh replays it before fuzzing.
The checkpoint seeds come from tests/fuzz/seed_checkpoint.c, which saves a
real trainer's state through the library."""

import glob
import gzip
import io
import os
import re
import struct
import sys
import tempfile

import ase
import ase.io
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def model(nodes, inputs, outputs, inits=(), opset=13, domains=()):
    graph = helper.make_graph(nodes, "seed", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="tessera-fuzz-seeds")
    m.ir_version = 8
    return m.SerializeToString()


def t(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def onnx_seeds(out):
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    i64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    N = helper.make_node
    seeds = {}
    seeds["mlp.onnx"] = model(
        [N("MatMul", ["x", "W"], ["m"]), N("Add", ["m", "b"], ["a"]), N("Relu", ["a"], ["y"])],
        [t("x", ["batch", 3])], [t("y", ["batch", 2])],
        [init("W", f32(3, 2)), init("b", f32(2))])
    seeds["cnn.onnx"] = model(
        [N("Conv", ["x", "w", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         N("BatchNormalization", ["c", "s", "o", "mu", "var"], ["n"]),
         N("Relu", ["n"], ["r"]),
         N("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         N("AveragePool", ["p"], ["q"], kernel_shape=[1, 1]),
         N("GlobalAveragePool", ["q"], ["g"]),
         N("Flatten", ["g"], ["f"]),
         N("Gemm", ["f", "gw", "gb"], ["y"], transB=1)],
        [t("x", [1, 2, 5, 5])], [t("y", [1, 3])],
        [init("w", f32(4, 2, 3, 3)), init("cb", f32(4)), init("s", f32(4)), init("o", f32(4)),
         init("mu", f32(4)), init("var", np.abs(f32(4)) + 0.5), init("gw", f32(3, 4)),
         init("gb", f32(3))])
    seeds["shapes.onnx"] = model(
        [N("Shape", ["x"], ["s"]),
         N("Gather", ["s", "zero"], ["n"], axis=0),
         N("Unsqueeze", ["n", "ax0"], ["n1"]),
         N("Concat", ["n1", "rest"], ["shape"], axis=0),
         N("Reshape", ["x", "shape"], ["r"]),
         N("Transpose", ["r"], ["tr"], perm=[1, 0]),
         N("Slice", ["tr", "st", "en", "ax0"], ["sl"]),
         N("Split", ["sl"], ["a", "b"], axis=0),
         N("Concat", ["b", "a"], ["c"], axis=0),
         N("Tile", ["c", "reps"], ["ti"]),
         N("Unsqueeze", ["ti", "ax0"], ["ti2"]),
         N("Squeeze", ["ti2", "ax0"], ["y"])],
        [t("x", ["batch", 2, 3])], [t("y", None)],
        [init("zero", i64(0)), init("ax0", i64([0])), init("rest", i64([6])),
         init("st", i64([0])), init("en", i64([4])), init("reps", i64([1, 2]))])
    seeds["generators.onnx"] = model(
        [N("Range", ["start", "limit", "delta"], ["r"]),
         N("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
         N("ConstantOfShape", ["cs"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                        [1], [0.5])),
         N("Expand", ["rf", "es"], ["e"]),
         N("Add", ["e", "c"], ["y"]),
         N("Constant", [], ["k"], value=init("kv", f32(1))),
         N("Mul", ["y", "k"], ["z"])],
        [], [t("z", None)],
        [init("start", i64(0)), init("limit", i64(4)), init("delta", i64(1)),
         init("cs", i64([3, 4])), init("es", i64([3, 4]))])
    seeds["math.onnx"] = model(
        [N("Sigmoid", ["x"], ["a"]), N("Tanh", ["a"], ["b"]), N("Exp", ["b"], ["c"]),
         N("Log", ["c"], ["d"]), N("Sqrt", ["c"], ["e"]), N("Div", ["d", "e"], ["f"]),
         N("Sub", ["f", "x"], ["g"]), N("Pow", ["g", "two"], ["h"]),
         N("Clip", ["h", "lo", "hi"], ["i"]), N("Softmax", ["i"], ["j"], axis=-1),
         N("LogSoftmax", ["j"], ["k"], axis=1), N("ReduceMean", ["k"], ["l"], axes=[1]),
         N("ReduceSum", ["x", "ax"], ["m"], keepdims=1), N("ReduceMax", ["x"], ["n"], axes=[0]),
         N("Max", ["l", "m"], ["o"]), N("Less", ["x", "g"], ["cond0"]),
         N("Not", ["cond0"], ["cond"]), N("Where", ["cond", "o", "n"], ["p"]),
         N("LayerNormalization", ["p", "ls", "lb"], ["y"], axis=-1),
         N("Erf", ["y"], ["z"]), N("HardSwish", ["z"], ["z2"]),
         N("LeakyRelu", ["z2"], ["z3"], alpha=0.1)],
        [t("x", [2, 4])], [t("z3", None)],
        [init("two", np.float32(2)), init("lo", np.float32(-1)), init("hi", np.float32(1)),
         init("ax", i64([1])), init("ls", f32(4)), init("lb", f32(4))])
    seeds["pad_gather.onnx"] = model(
        [N("Pad", ["x", "pads"], ["p"], mode="constant"),
         N("Gather", ["p", "idx"], ["g"], axis=1),
         N("ScatterND", ["g", "sidx", "upd"], ["s"]),
         N("Einsum", ["s", "w"], ["e"], equation="ij,jk->ik"),
         N("Dropout", ["e"], ["y"])],
        [t("x", [2, 3])], [t("y", None)],
        [init("pads", i64([0, 1, 0, 1])), init("idx", i64([0, 2, 4])),
         init("sidx", i64([[0, 1]])), init("upd", f32(1)), init("w", f32(3, 2))],
        opset=13)
    seeds["dpp.onnx"] = model(
        [N("DetailPreservingPool", ["x", "alpha", "lam"], ["y"], domain="ai.tessera",
           kernel_shape=[2, 2], strides=[2, 2])],
        [t("x", [1, 1, 4, 4])], [t("y", None)],
        [init("alpha", np.full(1, 0.5, np.float32)), init("lam", np.ones(1, np.float32))],
        domains=["ai.tessera"])
    seeds["double.onnx"] = model(
        [N("MatMul", ["x", "W"], ["y"])],
        [t("x", [2, 2], TensorProto.DOUBLE)], [t("y", [2, 2], TensorProto.DOUBLE)],
        [init("W", np.eye(2))])
    for name, data in seeds.items():
        write(out, "onnx", name, data)


def onnx_dict(out):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "ops")
    with open(os.path.join(src, "op_table.h")) as f:
        words = set(re.findall(r"^TSR_OP\((\w+)\)", f.read(), re.M))
    for path in glob.glob(os.path.join(src, "*.c")):
        with open(path) as f:
            words |= set(re.findall(r'"([a-z_][a-z_0-9]{2,30})"', f.read()))
    words |= {"ai.tessera", "ai.onnx"}
    with open(os.path.join(out, "onnx.dict"), "w") as f:
        f.writelines(f'"{w}"\n' for w in sorted(words))


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_seeds(out):
    arrays = {
        "f32.npy": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f64.npy": np.linspace(0, 1, 5),
        "i64.npy": np.arange(4, dtype=np.int64).reshape(2, 1, 2),
        "i32.npy": np.arange(3, dtype=np.int32),
        "u8.npy": np.arange(8, dtype=np.uint8).reshape(2, 2, 2),
        "i8.npy": np.array([-1, 0, 1], dtype=np.int8),
        "bool.npy": np.array([True, False]),
        "scalar.npy": np.float32(3.5),
        "empty.npy": np.zeros((0, 3), dtype=np.float32),
        "fortran.npy": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    }
    for name, a in arrays.items():
        write(out, "npy", name, npy_bytes(a))
    # Format version 2.0 (4-byte header length), as numpy writes for long headers.
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ones(2, dtype=np.float32), version=(2, 0))
    write(out, "npy", "v2.npy", buf.getvalue())


def npz_seeds(out):
    x = np.random.default_rng(1).random((3, 1, 2, 2)).astype(np.float32)
    y = np.array([0, 2, 1], dtype=np.int64)
    for name, save in (("stored.npz", np.savez), ("deflated.npz", np.savez_compressed)):
        buf = io.BytesIO()
        save(buf, x=x, y=y)
        write(out, "npz", name, buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(3 * 4, dtype=np.uint8).reshape(3, 4), y=y.astype(np.int32))
    write(out, "npz", "ints.npz", buf.getvalue())


def idx_bytes(array, code):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def idx_seeds(out):
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write(out, "idx", "images-idx3-ubyte", idx_bytes(images, 0x08))
    write(out, "idx", "labels-idx1-ubyte", idx_bytes(np.array([1, 0], dtype=np.uint8), 0x08))
    write(out, "idx", "sbyte-idx1", idx_bytes(np.array([-3, 3], dtype=np.int8), 0x09))
    write(out, "idx", "short-idx2", idx_bytes(np.array([[1, -2]], dtype=np.int16), 0x0B))
    write(out, "idx", "int-idx1", idx_bytes(np.array([7, -7, 9], dtype=np.int32), 0x0C))
    write(out, "idx", "float-idx2", idx_bytes(np.ones((2, 2), dtype=np.float32), 0x0D))
    write(out, "idx", "double-idx1", idx_bytes(np.array([0.5, 2.0]), 0x0E))
    write(out, "idx", "images-idx3-ubyte.gz",
          gzip.compress(idx_bytes(images, 0x08), mtime=0))


def extxyz_seeds(out):
    water = ase.Atoms("H2O", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]])
    bulk = ase.Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0.1]],
                     cell=[[3.6, 0, 0], [0, 3.6, 0], [0.2, 0, 3.6]], pbc=True)
    bulk.info["energy"] = -7.25
    bulk.info["config_type"] = "bulk fcc"
    bulk.info["stress"] = np.arange(9.0).reshape(3, 3)
    bulk.arrays["forces"] = np.array([[0.1, -0.2, 0.3], [-0.1, 0.2, -0.3]])
    slab = ase.Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]],
                     cell=[5.6, 5.6, 12.0], pbc=[True, True, False])
    slab.arrays["charges"] = np.array([1, -1])
    slab.info["fixed"] = True
    for name, frames in (("molecule.xyz", [water]), ("bulk.xyz", [bulk]),
                         ("slab.xyz", [slab]), ("frames.xyz", [water, bulk, slab])):
        buf = io.StringIO()
        ase.io.write(buf, frames, format="extxyz")
        write(out, "extxyz", name, buf.getvalue().encode())


def ictp_seeds(out):
    """A tiny random ICTP model (two species, one interaction) by the test
    suite's reference writer, as the ictp target's container: u32 length,
    the JSON, then the .npz."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import ictp_reference as ref

    cfg = ref.default_config(n_hidden_feats=2, n_product_feats=2, radial_MLP=[4],
                             readout_MLP=[2], r_cutoff=2.0, correlation=1, n_interactions=1,
                             l_max_hidden_feats=1, l_max_edge_attrs=1, atomic_types=[1, 8],
                             n_species=2)
    with tempfile.TemporaryDirectory() as d:
        npz = ref.random_model(os.path.join(d, "m"), cfg, seed=0)
        with open(os.path.join(d, "m.json"), "rb") as f:
            js = f.read()
        with open(npz, "rb") as f:
            arrays = f.read()
    write(out, "ictp", "tiny.model", struct.pack("<I", len(js)) + js + arrays)


def raw_tensor(name, dtype, dims, raw):
    """An initializer whose raw_data is exactly `raw`, whatever its dims
    promise (onnx.helper would refuse a mismatch)."""
    tensor = TensorProto(name=name, data_type=dtype, dims=dims)
    tensor.raw_data = raw
    return tensor


def i64_bytes(*values):
    return struct.pack(f"<{len(values)}q", *values)


def onnx_regressions(out):
    """Issue 9's hand-made size attacks and the fuzzers' finds
    (docs/fuzzing.md, Results)."""
    N = helper.make_node
    one = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    shape_2p62 = raw_tensor("s", TensorProto.INT64, [1], i64_bytes(1 << 62))
    ranges = lambda limit: [raw_tensor("a", TensorProto.INT64, [], i64_bytes(0)),  # noqa: E731
                            raw_tensor("b", TensorProto.INT64, [], i64_bytes(limit)),
                            raw_tensor("c", TensorProto.INT64, [], i64_bytes(1))]
    cases = {
        "range-int64-2p62.onnx": ([N("Range", ["a", "b", "c"], ["y"])], [],
                                  [t("y", None, TensorProto.INT64)], ranges(1 << 62)),
        "range-fold-4gb.onnx": ([N("Range", ["a", "b", "c"], ["y"])], [],
                                [t("y", None, TensorProto.INT64)], ranges(500000000)),
        "constantofshape-2p62-output.onnx": ([N("ConstantOfShape", ["s"], ["y"], value=one)],
                                             [], [t("y", None)], [shape_2p62]),
        "constantofshape-2p62-relu.onnx": ([N("ConstantOfShape", ["s"], ["c"], value=one),
                                            N("Relu", ["c"], ["y"])],
                                           [], [t("y", None)], [shape_2p62]),
        # An arena of exactly 1 GiB, which ASan's limit allowed and the fuzzer reported.
        "constantofshape-1gib-relu.onnx": (
            [N("ConstantOfShape", ["s"], ["c"], value=one), N("Relu", ["c"], ["y"])],
            [], [t("y", None)], [raw_tensor("s", TensorProto.INT64, [1], i64_bytes(1 << 28))]),
        "expand-2p62.onnx": ([N("Expand", ["x", "s"], ["y"])], [t("x", [1])], [t("y", None)],
                             [shape_2p62]),
        "expand-2p31-2p31-4.onnx": (
            [N("Expand", ["x", "s"], ["y"])], [t("x", [1])], [t("y", None)],
            [raw_tensor("s", TensorProto.INT64, [3], i64_bytes(1 << 31, 1 << 31, 4))]),
        "initializer-dims-past-raw-data.onnx": (
            [N("Relu", ["w"], ["y"])], [], [t("y", None)],
            [raw_tensor("w", TensorProto.FLOAT, [1 << 30, 2], bytes(8))]),
        "reshape-overflow.onnx": (
            [N("Reshape", ["x", "s"], ["y"])], [t("x", [2, 3])], [t("y", None)],
            [raw_tensor("s", TensorProto.INT64, [3], i64_bytes(-1, 1 << 62, 4))]),
        "pad-overflow.onnx": (
            [N("Pad", ["x", "p"], ["y"])], [t("x", [2, 3])], [t("y", None)],
            [raw_tensor("p", TensorProto.INT64, [4], i64_bytes(0, 1 << 62, 0, 1 << 62))]),
        # Pad's negative pad leaves an empty tensor for Gather and ScatterND;
        # no indices, so that the index check lets the kernel run.
        "scatternd-empty-data.onnx": (
            [N("Pad", ["x", "pads"], ["p"], mode="constant"),
             N("Gather", ["p", "idx"], ["g"], axis=1),
             N("ScatterND", ["g", "sidx", "upd"], ["s"]),
             N("Einsum", ["s", "w"], ["e"], equation="ij,jk->ik"),
             N("Dropout", ["e"], ["y"])],
            [t("x", [2, 1])], [t("y", None)],
            [init("pads", np.array([-2, 0x0A710047, 0, 1], np.int64)),
             init("idx", np.array([0, 2, 4], np.int64)),
             init("sidx", np.zeros((0, 2), np.int64)),
             init("upd", np.zeros(0, np.float32)),
             init("w", np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2))]),
    }
    # The math seed with an empty batch: LayerNormalization over rows of no
    # elements, and a one-input Max on an empty tensor.
    for name, ln_axis, max_inputs, where in (("layernorm-empty-rows.onnx", -2, ["l", "m"], "n"),
                                             ("max-one-input-empty.onnx", -1, ["l"], "o")):
        cases[name] = (
            [N("Sigmoid", ["x"], ["a"]), N("Tanh", ["a"], ["b"]), N("Exp", ["b"], ["c"]),
             N("Log", ["c"], ["d"]), N("Sqrt", ["c"], ["e"]), N("Div", ["d", "e"], ["f"]),
             N("Sub", ["f", "x"], ["g"]), N("Pow", ["g", "two"], ["h"]),
             N("Clip", ["h", "lo", "hi"], ["i"]), N("Softmax", ["i"], ["j"], axis=-1),
             N("LogSoftmax", ["j"], ["k"], axis=1), N("ReduceMean", ["k"], ["l"], axes=[1]),
             N("ReduceSum", ["x", "ax"], ["m"], keepdims=1), N("ReduceMax", ["x"], ["n"]),
             N("Max", max_inputs, ["o"]), N("Less", ["x", "g"], ["cond0"]),
             N("Not", ["cond0"], ["cond"]), N("Where", ["cond", "o", where], ["p"]),
             N("LayerNormalization", ["p" if ln_axis == -1 else "i", "lb"], ["y"], axis=ln_axis),
             N("Erf", ["y"], ["z"]), N("HardSwish", ["z"], ["z2"]),
             N("LeakyRelu", ["z2"], ["z3"], alpha=0.1)],
            [t("x", [0, 4])], [t("z3", None)],
            [init("two", np.float32(2)), init("lo", np.float32(-1)), init("hi", np.float32(1)),
             init("ax", np.array([1], np.int64)), init("lb", np.ones(4, np.float32))])
    for name, (nodes, inputs, outputs, inits) in cases.items():
        write(out, "onnx", name, model(nodes, inputs, outputs, inits))


def npz_zip64_offset(out):
    """A valid two-member .npz whose first central-directory entry moves
    its local-header offset into a zip64 extra field holding 2^63."""
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((3, 1, 2, 2), np.float32), y=np.arange(3))
    data = bytearray(buf.getvalue())
    cd = data.index(b"PK\x01\x02")
    name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, cd + 28)
    struct.pack_into("<H", data, cd + 30, extra_len + 12)
    struct.pack_into("<I", data, cd + 42, 0xFFFFFFFF)
    extra_at = cd + 46 + name_len + extra_len
    data[extra_at:extra_at] = struct.pack("<HHQ", 0x0001, 8, 1 << 63)
    eocd = data.rindex(b"PK\x05\x06")
    cd_size = struct.unpack_from("<I", data, eocd + 12)[0]
    struct.pack_into("<I", data, eocd + 12, cd_size + 12)
    write(out, "npz", "zip64-offset-2p63.npz", bytes(data))


def regressions(out):
    onnx_regressions(out)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30, 2)})
    write(out, "npy", "header-promises-8gb.npy", header.getvalue())
    npz_zip64_offset(out)
    # ubyte images of dims 0, 2^32 - 1, 2^32 - 1 and no data.
    write(out, "idx", "zero-dim-then-huge.idx",
          struct.pack(">IIII", 0x0803, 0, 0xFFFFFFFF, 0xFFFFFFFF))


def main():
    out, regressions_out = sys.argv[1], sys.argv[2]
    onnx_seeds(out)
    onnx_dict(out)
    npy_seeds(out)
    npz_seeds(out)
    idx_seeds(out)
    extxyz_seeds(out)
    ictp_seeds(out)
    regressions(regressions_out)


if __name__ == "__main__":
    main()

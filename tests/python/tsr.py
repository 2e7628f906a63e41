"""Test helpers over libtessera: build a graph through the C builder API, run it on a
device, get numpy arrays back. The ctypes bindings themselves (structures, the library,
errors) are the tessera package's (python/tessera/_capi.py), so the tests exercise what
users import; the library is found as the package finds it ($TESSERA_LIB, then
$TESSERA_BUILD_DIR/lib, then build/lib)."""

import ctypes as C
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

import tessera  # noqa: E402
from tessera import _capi  # noqa: E402
from tessera._capi import (  # noqa: E402,F401
    ATTR_FLOAT, ATTR_FLOATS, ATTR_INT, ATTR_INTS, ATTR_STRING, ATTR_TENSOR, DTYPES, MAX_RANK,
    NUMPY_OF, Attr, CompileOptions, OpInfo, PlanStats, Tensor, ValueInfo, check, lib, tensor_of)

# tsr_status
(OK, ERR_INVALID_ARGUMENT, ERR_PARSE, ERR_UNSUPPORTED, ERR_SHAPE, ERR_DTYPE, ERR_NOT_FOUND, ERR_IO,
 ERR_OUT_OF_MEMORY, ERR_INTERNAL) = range(10)


# A failed call raises the package's error for its status (tessera.Error subclasses):
# `status` is the tsr_status, the message tsr_last_error().
TesseraError = tessera.Error


def op_table():
    """Every op of the op table as a dict (name, domain, min/max inputs and
    outputs, has_gradient), in table order."""
    ops = []
    for i in range(lib().tsr_op_table_size()):
        info = OpInfo()
        check(lib().tsr_op_table_entry(i, C.byref(info)))
        ops.append({f: getattr(info, f) for f, _ in OpInfo._fields_})
        ops[-1]["name"], ops[-1]["domain"] = info.name.decode(), info.domain.decode()
    return ops


_attr = _capi.make_attr


class Graph:
    """A graph owned by Python; destroyed with the object."""

    def __init__(self, handle=None):
        self.handle = C.c_void_p(handle)
        if handle is None:
            check(lib().tsr_graph_create(C.byref(self.handle)))

    def __del__(self):
        if _capi.loaded() and self.handle:
            lib().tsr_graph_destroy(self.handle)
            self.handle = C.c_void_p()

    @classmethod
    def load(cls, path):
        h = C.c_void_p()
        check(lib().tsr_graph_load_onnx_file(str(path).encode(), C.byref(h)))
        return cls(h.value)

    @classmethod
    def load_bytes(cls, data, base_dir=None):
        h = C.c_void_p()
        buf = C.create_string_buffer(bytes(data), len(data))
        bd = str(base_dir).encode() if base_dir is not None else None
        check(lib().tsr_graph_load_onnx_buffer(buf, C.c_size_t(len(data)), bd, C.byref(h)))
        return cls(h.value)

    def set_opset(self, opset):
        check(lib().tsr_graph_set_opset(self.handle, opset))

    def add_input(self, name, dtype, shape):
        """shape entries are ints or strings (symbolic dims)."""
        dims = (C.c_int64 * MAX_RANK)(*[d if isinstance(d, int) else -1 for d in shape])
        names = (C.c_char_p * MAX_RANK)(*[d.encode() if isinstance(d, str) else None for d in shape])
        check(lib().tsr_graph_add_input(self.handle, name.encode(), DTYPES[np.dtype(dtype)],
                                        len(shape), dims, names))

    def add_constant(self, name, array):
        arr = np.require(array, requirements="C")
        t = tensor_of(arr)
        check(lib().tsr_graph_add_constant(self.handle, name.encode(), C.byref(t)))

    def add_node(self, op_type, inputs, outputs, attrs=None, domain="", name=None):
        keep = []
        ins = (C.c_char_p * max(len(inputs), 1))(*[(i or "").encode() for i in inputs])
        outs = (C.c_char_p * max(len(outputs), 1))(*[o.encode() for o in outputs])
        items = list((attrs or {}).items())
        arr = (Attr * max(len(items), 1))(*[_attr(k, v, keep) for k, v in items])
        check(lib().tsr_graph_add_node(self.handle, op_type.encode(), domain.encode(),
                                       name.encode() if name else None, len(inputs), ins,
                                       len(outputs), outs, len(items), arr))

    def add_output(self, name):
        check(lib().tsr_graph_add_output(self.handle, name.encode()))

    def _info(self, fn, index):
        info = ValueInfo()
        check(fn(self.handle, index, C.byref(info)))
        shape = []
        for d in range(info.rank):
            n = info.dim_names[d]
            shape.append(n.decode() if n else int(info.dims[d]))
        return info.name.decode(), NUMPY_OF.get(info.dtype), shape

    def inputs(self):
        n = lib().tsr_graph_num_inputs(self.handle)
        return [self._info(lib().tsr_graph_input_info, i) for i in range(n)]

    def outputs(self):
        n = lib().tsr_graph_num_outputs(self.handle)
        return [self._info(lib().tsr_graph_output_info, i) for i in range(n)]

    def run(self, inputs, device="ref", threads=1, depth_first=-1):
        plan = Plan(self, device=device, threads=threads, depth_first=depth_first)
        return plan.run(inputs)


class Plan:
    def __init__(self, graph, device="ref", threads=1, depth_first=-1, precision="fp32"):
        self.graph = graph
        opts = CompileOptions()
        lib().tsr_compile_options_init(C.byref(opts))
        opts.device = device.encode()
        opts.threads = threads
        opts.depth_first = depth_first
        opts.precision = {"fp32": 0, "bf16": 1}[precision]
        self.handle = C.c_void_p()
        check(lib().tsr_plan_create(graph.handle, C.byref(opts), C.byref(self.handle)))

    def __del__(self):
        if _capi.loaded() and self.handle:
            lib().tsr_plan_destroy(self.handle)
            self.handle = C.c_void_p()

    def run(self, inputs):
        arrays = [np.require(a, requirements="C") for a in inputs]
        ins = (Tensor * max(len(arrays), 1))(*[tensor_of(a) for a in arrays])
        check(lib().tsr_plan_reshape(self.handle, len(arrays), ins))
        n_out = lib().tsr_graph_num_outputs(self.graph.handle)
        results = []
        for o in range(n_out):
            desc = Tensor()
            check(lib().tsr_plan_output_desc(self.handle, o, C.byref(desc)))
            shape = tuple(desc.dims[d] for d in range(desc.rank))
            results.append(np.empty(shape, dtype=NUMPY_OF[desc.dtype]))
        outs = (Tensor * max(n_out, 1))(*[tensor_of(r) for r in results])
        check(lib().tsr_plan_run(self.handle, len(arrays), ins, n_out, outs))
        return results

    def stats(self):
        s = PlanStats()
        check(lib().tsr_plan_get_stats(self.handle, C.byref(s)))
        return s

    def node_backend(self, name):
        """The backend that runs node `name` in the current specialization
        (after run); TesseraError when no node of that name runs."""
        out = C.c_char_p()
        check(lib().tsr_plan_node_backend(self.handle, name.encode(), C.byref(out)))
        return out.value.decode()

    def backend_counts(self):
        """{backend: kernel calls per run} over the device's backends."""
        s = self.stats()
        return {s.backend_names[b].decode(): s.backend_steps[b] for b in range(s.n_backends)}


def run_op(op_type, inputs, attrs=None, *, n_outputs=1, domain="", opset=17, const_inputs=(),
           threads=1, device="ref", depth_first=-1):
    """Runs one node on `inputs` (None for an omitted optional input) and
    returns its outputs as numpy arrays."""
    g = Graph()
    g.set_opset(opset)
    names, feeds = [], []
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
            continue
        name = f"in{i}"
        x = np.asarray(x)
        if i in const_inputs:
            g.add_constant(name, x)
        else:
            g.add_input(name, x.dtype, list(x.shape))
            feeds.append(x)
        names.append(name)
    outs = [f"out{o}" for o in range(n_outputs)]
    g.add_node(op_type, names, outs, attrs, domain=domain, name="node0")
    for o in outs:
        g.add_output(o)
    return g.run(feeds, device=device, threads=threads, depth_first=depth_first)


def run_onnx(path, inputs, device="ref", threads=1, depth_first=-1):
    """Loads an ONNX file and runs it on `inputs` (in graph input order)."""
    return Graph.load(path).run(inputs, device=device, threads=threads, depth_first=depth_first)


# ------------------------------------------------------------------ autodiff


def gradient(graph, outputs, wrt):
    """tsr_graph_gradient: a new Graph computing graph's outputs, then the
    gradient of sum(output * seed) for each name in `wrt` ("<wrt>__grad"),
    with one extra input "<output>__seed" per differentiated output."""
    outs = (C.c_char_p * max(len(outputs), 1))(*[o.encode() for o in outputs])
    ws = (C.c_char_p * max(len(wrt), 1))(*[w.encode() for w in wrt])
    h = C.c_void_p()
    check(lib().tsr_graph_gradient(graph.handle, len(outputs), outs, len(wrt), ws, C.byref(h)))
    return Graph(h.value)


# ------------------------------------------------------------------ training


LOSS_KINDS = {"cross_entropy": 0, "mse": 1, "l1": 2, "huber": 3}
OPTIMIZERS = {"sgd": 0, "adam": 1, "adamw": 2}
SCHEDULES = {"none": 0, "step": 1, "cosine": 2, "plateau": 3}
from tessera._capi import (  # noqa: E402,F401
    MAX_PARAM_GROUPS, LossOptions, OptimizerOptions, ParamGroup, TrainerParam,
    TrainerStats)


def add_parameter(graph, name, array):
    """tsr_graph_add_parameter: a trainable constant."""
    arr = np.require(array, requirements="C")
    t = tensor_of(arr)
    check(lib().tsr_graph_add_parameter(graph.handle, name.encode(), C.byref(t)))


class Trainer:
    """tsr_trainer: loss is a dict (kind, reduction, output, label_smoothing,
    huber_delta), optimizer a dict of tsr_optimizer_options fields (kind as
    "sgd"/"adam"/"adamw", schedule by name, groups as a list of dicts)."""

    def __init__(self, graph, loss=None, optimizer=None, device="ref", threads=1, seed=0,
                 depth_first=-1):
        L = lib()
        L.tsr_trainer_destroy.restype = None
        L.tsr_loss_options_init.restype = None
        L.tsr_optimizer_options_init.restype = None
        L.tsr_trainer_lr.restype = C.c_double
        L.tsr_trainer_step_count.restype = C.c_int64
        L.tsr_trainer_epoch_count.restype = C.c_int64
        L.tsr_trainer_epoch_end.argtypes = [C.c_void_p, C.c_double]
        self._keep = []
        lo = LossOptions()
        L.tsr_loss_options_init(C.byref(lo))
        for k, v in (loss or {}).items():
            if k == "kind":
                v = LOSS_KINDS[v]
            elif k == "reduction":
                v = {"mean": 0, "sum": 1}[v]
            elif k == "output":
                v = v.encode()
                self._keep.append(v)
            setattr(lo, k, v)
        oo = OptimizerOptions()
        L.tsr_optimizer_options_init(C.byref(oo))
        for k, v in (optimizer or {}).items():
            if k == "kind":
                v = OPTIMIZERS[v]
            elif k == "schedule":
                v = SCHEDULES[v]
            elif k == "groups":
                oo.n_groups = len(v)
                for i, gdict in enumerate(v):
                    pat = gdict.get("pattern")
                    pat = pat.encode() if pat is not None else None
                    self._keep.append(pat)
                    oo.groups[i] = ParamGroup(pat, gdict.get("max_rank", 0),
                                              gdict.get("weight_decay", 0.0),
                                              gdict.get("lr_scale", 1.0))
                continue
            setattr(oo, k, v)
        co = CompileOptions()
        L.tsr_compile_options_init(C.byref(co))
        co.device = device.encode()
        co.threads = threads
        co.depth_first = depth_first
        self.graph = graph
        self.handle = C.c_void_p()
        check(L.tsr_trainer_create(graph.handle, C.byref(lo), C.byref(oo), C.byref(co),
                                   C.c_uint64(seed), C.byref(self.handle)))

    def __del__(self):
        if _capi.loaded() and getattr(self, "handle", None):
            lib().tsr_trainer_destroy(self.handle)
            self.handle = C.c_void_p()

    @staticmethod
    def _tensors(arrays):
        arrays = [np.require(a, requirements="C") for a in arrays]
        return arrays, (Tensor * max(len(arrays), 1))(*[tensor_of(a) for a in arrays])

    def step(self, inputs, target):
        arrays, ins = self._tensors(inputs)
        tgt = np.require(target, requirements="C")
        t = tensor_of(tgt)
        loss = C.c_double()
        check(lib().tsr_trainer_step(self.handle, len(arrays), ins, C.byref(t), C.byref(loss)))
        return loss.value

    def evaluate(self, inputs, target=None):
        """(loss or None, model output)"""
        arrays, ins = self._tensors(inputs)
        desc = Tensor()
        check(lib().tsr_trainer_output_desc(self.handle, len(arrays), ins, C.byref(desc)))
        out = np.empty(tuple(desc.dims[d] for d in range(desc.rank)), dtype=NUMPY_OF[desc.dtype])
        ot = tensor_of(out)
        loss = C.c_double()
        if target is None:
            check(lib().tsr_trainer_evaluate(self.handle, len(arrays), ins, None, None,
                                             C.byref(ot)))
            return None, out
        tgt = np.require(target, requirements="C")
        t = tensor_of(tgt)
        check(lib().tsr_trainer_evaluate(self.handle, len(arrays), ins, C.byref(t),
                                         C.byref(loss), C.byref(ot)))
        return loss.value, out

    def epoch_end(self, metric=float("nan")):
        check(lib().tsr_trainer_epoch_end(self.handle, C.c_double(metric)))

    def lr(self):
        return lib().tsr_trainer_lr(self.handle)

    def step_count(self):
        return lib().tsr_trainer_step_count(self.handle)

    def params(self):
        """{name: (trainable, copy of the value)}"""
        out = {}
        for i in range(lib().tsr_trainer_num_params(self.handle)):
            p = TrainerParam()
            check(lib().tsr_trainer_param_info(self.handle, i, C.byref(p)))
            name = p.name.decode()
            arr = np.empty(tuple(p.value.dims[d] for d in range(p.value.rank)),
                           dtype=NUMPY_OF[p.value.dtype])
            t = tensor_of(arr)
            check(lib().tsr_trainer_get_param(self.handle, p.name, C.byref(t)))
            out[name] = (bool(p.trainable), arr)
        return out

    def set_param(self, name, array):
        arr = np.require(array, requirements="C")
        t = tensor_of(arr)
        check(lib().tsr_trainer_set_param(self.handle, name.encode(), C.byref(t)))

    def use_ema(self, enabled):
        check(lib().tsr_trainer_use_ema(self.handle, int(enabled)))

    def save_onnx(self, source, out):
        check(lib().tsr_trainer_save_onnx(self.handle, str(source).encode(), str(out).encode()))

    def save_checkpoint(self, path):
        check(lib().tsr_trainer_save_checkpoint(self.handle, str(path).encode()))

    def load_checkpoint(self, path):
        check(lib().tsr_trainer_load_checkpoint(self.handle, str(path).encode()))

    def stats(self):
        s = TrainerStats()
        check(lib().tsr_trainer_get_stats(self.handle, C.byref(s)))
        return s

    def _step_plan(self):
        lib().tsr_trainer_step_plan.restype = C.c_void_p
        return C.c_void_p(lib().tsr_trainer_step_plan(self.handle))

    def step_backend_counts(self):
        """{backend: kernel calls per training step} (tsr_trainer_step_plan's stats; after
        a step)."""
        s = PlanStats()
        check(lib().tsr_plan_get_stats(self._step_plan(), C.byref(s)))
        return {s.backend_names[b].decode(): s.backend_steps[b] for b in range(s.n_backends)}

    def step_node_backend(self, name):
        """The backend that runs node `name` of the training step (after a step); the
        gradient nodes of a node are named "<name>/grad"."""
        out = C.c_char_p()
        check(lib().tsr_plan_node_backend(self._step_plan(), name.encode(), C.byref(out)))
        return out.value.decode()


# ------------------------------------------------------------ atoms (tessera/atoms.h)

ATOMS_REAL, ATOMS_INT, ATOMS_BOOL, ATOMS_STRING = range(4)


class AtomsValue(C.Structure):
    _fields_ = [("name", C.c_char_p), ("type", C.c_int), ("rows", C.c_int64),
                ("cols", C.c_int64), ("reals", C.POINTER(C.c_double)),
                ("ints", C.POINTER(C.c_int64)), ("strings", C.POINTER(C.c_char_p))]

    def numpy(self):
        n = self.rows * self.cols
        if self.type == ATOMS_STRING:
            out = np.array([self.strings[k].decode() for k in range(n)], dtype=object)
        elif self.type == ATOMS_REAL:
            out = np.ctypeslib.as_array(self.reals, (n,)).copy() if n else np.zeros(0)
        else:
            out = np.ctypeslib.as_array(self.ints, (n,)).copy() if n else np.zeros(0, np.int64)
            out = out.astype(bool) if self.type == ATOMS_BOOL else out
        return out.reshape(self.rows, self.cols)


class Edges(C.Structure):
    _fields_ = [("count", C.c_int64), ("capacity", C.c_int64),
                ("receivers", C.POINTER(C.c_int64)), ("senders", C.POINTER(C.c_int64)),
                ("shifts", C.POINTER(C.c_int32)), ("vectors", C.POINTER(C.c_double)),
                ("n_atoms", C.c_int64), ("offsets", C.POINTER(C.c_int64)),
                ("offsets_capacity", C.c_int64)]

    def numpy(self):
        """{i, j, S, v, offsets}: copies of the rows in use."""
        n, a = self.count, np.ctypeslib.as_array

        def take(p, shape, dtype):
            return a(p, shape).copy() if n else np.zeros(shape, dtype)
        return {"i": take(self.receivers, (n,), np.int64), "j": take(self.senders, (n,), np.int64),
                "S": take(self.shifts, (n, 3), np.int32), "v": take(self.vectors, (n, 3), float),
                "offsets": a(self.offsets, (self.n_atoms + 1,)).copy()}


class Atoms:
    """A tsr_atoms structure; frames read from files are Atoms too."""

    def __init__(self, numbers=None, positions=None, cell=None, pbc=None, handle=None):
        if handle is None:
            z = np.ascontiguousarray(numbers, dtype=np.int32)
            r = np.ascontiguousarray(positions, dtype=np.float64).reshape(len(z), 3)
            c = None if cell is None else np.ascontiguousarray(cell, dtype=np.float64)
            p = None if pbc is None else (C.c_int * 3)(*[int(bool(x)) for x in pbc])
            h = C.c_void_p()
            check(lib().tsr_atoms_create(C.c_int64(len(z)), z.ctypes.data_as(C.c_void_p),
                                         r.ctypes.data_as(C.c_void_p),
                                         None if c is None else c.ctypes.data_as(C.c_void_p),
                                         p, C.byref(h)))
            handle = h.value
        self.handle = C.c_void_p(handle)

    def __del__(self):
        if self.handle:
            lib().tsr_atoms_destroy(self.handle)

    def __len__(self):
        lib().tsr_atoms_count.restype = C.c_int64
        return lib().tsr_atoms_count(self.handle)

    def _copy(self, fn, shape, ctype, dtype):
        getattr(lib(), fn).restype = C.POINTER(ctype)
        n = int(np.prod(shape))
        if not n:
            return np.zeros(shape, dtype)
        return np.ctypeslib.as_array(getattr(lib(), fn)(self.handle), (n,)).reshape(shape).copy()

    @property
    def numbers(self):
        return self._copy("tsr_atoms_numbers", (len(self),), C.c_int32, np.int32)

    @property
    def positions(self):
        return self._copy("tsr_atoms_positions", (len(self), 3), C.c_double, float)

    def wrap(self):
        check(lib().tsr_atoms_wrap(self.handle))

    def cell(self):
        """(3x3 cell or None, pbc as 3 bools)."""
        c, p = (C.c_double * 9)(), (C.c_int * 3)()
        has = lib().tsr_atoms_cell(self.handle, c, p)
        return (np.array(c[:]).reshape(3, 3) if has else None), [bool(x) for x in p]

    def _values(self, kind):
        L, out = lib(), {}
        for k in range(getattr(L, f"tsr_atoms_{kind}_count")(self.handle)):
            v = AtomsValue()
            check(getattr(L, f"tsr_atoms_{kind}_at")(self.handle, k, C.byref(v)))
            out[v.name.decode()] = v.numpy()
        return out

    def info(self):
        return self._values("info")

    def arrays(self):
        return self._values("array")

    def set_value(self, kind, name, values):
        """Sets info (kind 'info', one row) or a per-atom array (kind 'array')."""
        a = np.asarray(values)
        a = a.reshape(1, -1) if kind == "info" else a.reshape(len(self), -1)
        v = AtomsValue(name=name.encode(), rows=a.shape[0], cols=a.shape[1])
        if a.dtype.kind in "USO":
            keep = (C.c_char_p * a.size)(*[str(s).encode() for s in a.ravel()])
            v.type, v.strings = ATOMS_STRING, keep
        elif a.dtype.kind == "f":
            keep = np.ascontiguousarray(a, np.float64)
            v.type, v.reals = ATOMS_REAL, keep.ctypes.data_as(C.POINTER(C.c_double))
        else:
            keep = np.ascontiguousarray(a, np.int64)
            v.type = ATOMS_BOOL if a.dtype.kind == "b" else ATOMS_INT
            v.ints = keep.ctypes.data_as(C.POINTER(C.c_int64))
        check(getattr(lib(), f"tsr_atoms_set_{kind}")(self.handle, C.byref(v)))


def _read_frames(fn, path):
    n, frames = C.c_int64(), C.POINTER(C.c_void_p)()
    check(getattr(lib(), fn)(str(path).encode(), C.byref(n), C.byref(frames)))
    out = [Atoms(handle=frames[k]) for k in range(n.value)]
    libc = C.CDLL(None)
    libc.free.argtypes = [C.c_void_p]
    libc.free(C.cast(frames, C.c_void_p))
    return out


def _write_frames(fn, path, frames):
    arr = (C.c_void_p * len(frames))(*[f.handle.value for f in frames])
    check(getattr(lib(), fn)(str(path).encode(), C.c_int64(len(frames)), arr))


def read_extxyz(path):
    return _read_frames("tsr_extxyz_read", path)


def write_extxyz(path, frames):
    _write_frames("tsr_extxyz_write", path, frames)


def append_extxyz(path, frames):
    _write_frames("tsr_extxyz_append", path, frames)


def read_atoms_npz(path):
    return _read_frames("tsr_atoms_read_npz", path)


def write_atoms_npz(path, frames):
    _write_frames("tsr_atoms_write_npz", path, frames)


def atoms_edges(atoms, cutoff):
    """The edges of tsr_atoms_edges as numpy arrays (see Edges.numpy)."""
    e = Edges()
    try:
        check(lib().tsr_atoms_edges(atoms.handle, C.c_double(cutoff), C.byref(e)))
        return e.numpy()
    finally:
        lib().tsr_edges_free(C.byref(e))


class NeighborList:
    """tsr_neighbor_list with a skin; update() returns (edges, rebuilt, capacity)."""

    def __init__(self, cutoff, skin):
        h = C.c_void_p()
        check(lib().tsr_neighbor_list_create(C.c_double(cutoff), C.c_double(skin), C.byref(h)))
        self.handle, self.edges = h, Edges()

    def __del__(self):
        lib().tsr_neighbor_list_destroy(self.handle)
        lib().tsr_edges_free(C.byref(self.edges))

    def update(self, atoms):
        rebuilt = C.c_int()
        check(lib().tsr_neighbor_list_update(self.handle, atoms.handle, C.byref(self.edges),
                                             C.byref(rebuilt)))
        return self.edges.numpy(), bool(rebuilt.value), self.edges.capacity


# ------------------------------------------------------------- ICTP (tessera/ictp.h)


class IctpOptions(C.Structure):
    _fields_ = [("device", C.c_char_p), ("dtype", C.c_int), ("threads", C.c_int)]


class IctpModel:
    """tsr_ictp_model + one tsr_ictp_evaluator: evaluate(atoms) -> dict."""

    def __init__(self, path, device=None, dtype=np.float64, threads=1):
        L = lib()
        L.tsr_ictp_model_cutoff.restype = C.c_double
        m, ev = C.c_void_p(), C.c_void_p()
        self.model = self.evaluator = None
        check(L.tsr_ictp_model_load(str(path).encode(), C.byref(m)))
        self.model = m
        opt = IctpOptions()
        L.tsr_ictp_options_init(C.byref(opt))
        opt.device = device.encode() if device else None
        opt.dtype = DTYPES[np.dtype(dtype)]
        opt.threads = threads
        check(L.tsr_ictp_evaluator_create(m, C.byref(opt), C.byref(ev)))
        self.evaluator = ev
        self.cutoff = L.tsr_ictp_model_cutoff(m)

    def __del__(self):
        if self.evaluator:
            lib().tsr_ictp_evaluator_destroy(self.evaluator)
        if self.model:
            lib().tsr_ictp_model_destroy(self.model)

    def evaluate(self, atoms, stress=False):
        n = len(atoms)
        e = C.c_double()
        f = np.zeros((n, 3))
        ea = np.zeros(n)
        s = np.zeros(9)
        ptr = lambda a: a.ctypes.data_as(C.c_void_p)  # noqa: E731
        check(lib().tsr_ictp_evaluate(self.evaluator, atoms.handle, C.byref(e), ptr(f),
                                      ptr(s) if stress else None, ptr(ea)))
        out = {"energy": e.value, "forces": f, "energies": ea}
        if stress:
            out["stress"] = s.reshape(3, 3)
        return out

    def evaluate_batch(self, structures, stress=False):
        """tsr_ictp_evaluate_batch: one dict per structure, as evaluate gives."""
        counts = [len(a) for a in structures]
        n, nb = sum(counts), len(structures)
        e, f, ea, s = np.zeros(nb), np.zeros((n, 3)), np.zeros(n), np.zeros((nb, 9))
        arr = (C.c_void_p * max(nb, 1))(*[a.handle.value for a in structures])
        ptr = lambda a: a.ctypes.data_as(C.c_void_p)  # noqa: E731
        check(lib().tsr_ictp_evaluate_batch(self.evaluator, C.c_int64(nb), arr, ptr(e), ptr(f),
                                            ptr(s) if stress else None, ptr(ea)))
        out, first = [], 0
        for b, c in enumerate(counts):
            r = {"energy": e[b], "forces": f[first:first + c], "energies": ea[first:first + c]}
            if stress:
                r["stress"] = s[b].reshape(3, 3)
            out.append(r)
            first += c
        return out


def ictp_model_graph(path, dtype=np.float64):
    """The energy graph of tsr_ictp_model_graph, as a Graph."""
    L = lib()
    m, g = C.c_void_p(), C.c_void_p()
    check(L.tsr_ictp_model_load(str(path).encode(), C.byref(m)))
    try:
        check(L.tsr_ictp_model_graph(m, DTYPES[np.dtype(dtype)], C.byref(g)))
    finally:
        L.tsr_ictp_model_destroy(m)
    return Graph(g.value)

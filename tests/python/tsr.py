"""Test helpers over libtessera: build a graph through the C builder API, run it on a
device, get numpy arrays back. Graph and Plan are the tessera package's
(python/tessera/graph.py) with the tests' defaults, and the ctypes bindings (structures,
the library, errors) are python/tessera/_capi.py's, so the tests exercise what users
import; the library is found as the package finds it ($TESSERA_LIB, then
$TESSERA_BUILD_DIR/lib, then build/lib)."""

import ctypes as C
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

import tessera  # noqa: E402
from tessera import _capi  # noqa: E402
from tessera._capi import (  # noqa: E402
    DTYPES, NUMPY_OF, OpInfo, PlanStats, Tensor, check, lib, tensor_of)

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


class Graph(tessera.Graph):
    """tessera.Graph with the tests' conventions: load_bytes, run(inputs) on a
    fresh Plan, and input/output shapes whose unknown sizes read -1 (the
    package's None; an unknown rank reads [])."""

    @classmethod
    def load_bytes(cls, data, base_dir=None):
        return cls.from_bytes(data, base_dir)

    def _info(self, fn, index):
        spec = super()._info(fn, index)
        return spec._replace(shape=[-1 if d is None else d for d in spec.shape or []])

    def run(self, inputs, device="ref", threads=1, depth_first=-1):
        return Plan(self, device=device, threads=threads, depth_first=depth_first).run(inputs)


class Plan(tessera.Plan):
    """tessera.Plan with the tests' defaults (the reference device, one thread;
    depth_first -1 for the device's default, else 0 or 1); stats() reads as
    attributes (n_steps, flops, ..., backend_steps as {backend: calls})."""

    def __init__(self, graph, device="ref", threads=1, depth_first=-1, precision="fp32",
                 verbose=False):
        super().__init__(graph, device, threads, precision,
                         None if depth_first == -1 else depth_first, verbose=verbose)

    def stats(self):
        return types.SimpleNamespace(**super().stats())

    def backend_counts(self):
        """{backend: kernel calls per run} over the device's backends."""
        return super().stats()["backend_steps"]


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


# gradient(graph, outputs, wrt): tessera.Graph.gradient, a new graph of graph's class.
gradient = tessera.Graph.gradient


# ------------------------------------------------------------------ training


LOSS_KINDS = {"cross_entropy": 0, "mse": 1, "l1": 2, "huber": 3}
OPTIMIZERS = {"sgd": 0, "adam": 1, "adamw": 2}
SCHEDULES = {"none": 0, "step": 1, "cosine": 2, "plateau": 3}
from tessera._capi import (  # noqa: E402
    LossOptions, OptimizerOptions, ParamGroup, TrainerParam, TrainerStats)


# add_parameter(graph, name, array): tessera.Graph.add_parameter, a trainable constant.
add_parameter = tessera.Graph.add_parameter


class Trainer:
    """tsr_trainer: loss is a dict (kind, reduction, output, label_smoothing,
    huber_delta), optimizer a dict of tsr_optimizer_options fields (kind as
    "sgd"/"adam"/"adamw", schedule by name, groups as a list of dicts)."""

    def __init__(self, graph, loss=None, optimizer=None, device="ref", threads=1, seed=0,
                 depth_first=-1):
        L = lib()
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
        co = _capi.compile_options(device, threads,
                                   depth_first=None if depth_first == -1 else depth_first)
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


class IctpModel:
    """tsr_ictp_model + one tsr_ictp_evaluator: evaluate(atoms) -> dict."""

    def __init__(self, path, device=None, dtype=np.float64, threads=1, exact_sizes=False,
                 radial_table=0):
        L = lib()
        L.tsr_ictp_model_cutoff.restype = C.c_double
        m, ev = C.c_void_p(), C.c_void_p()
        self.model = self.evaluator = None
        check(L.tsr_ictp_model_load(str(path).encode(), C.byref(m)))
        self.model = m
        opt = _capi.IctpOptions()
        L.tsr_ictp_options_init(C.byref(opt))
        opt.device = device.encode() if device else None
        opt.dtype = DTYPES[np.dtype(dtype)]
        opt.threads = threads
        opt.exact_sizes = int(exact_sizes)
        opt.radial_table = radial_table
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

    def plan_stats(self):
        """tsr_ictp_evaluator_stats: the plan's statistics at the last evaluation."""
        stats = _capi.PlanStats()
        check(lib().tsr_ictp_evaluator_stats(self.evaluator, C.byref(stats)))
        return stats

    def cached_specs(self):
        """How many plan specializations the evaluator holds."""
        return self.plan_stats().n_cached_specs


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

"""Graphs and plans: thin Python objects over tsr_graph and tsr_plan.

Most users want tessera.Session (ONNX models) or tessera.optimize (PyTorch
modules); these classes are what both are built on, and what builds graphs
op by op through the C builder API."""

import collections
import ctypes as C
import os

import numpy as np

from . import _capi, _feeds
from ._capi import check, lib

ValueSpec = collections.namedtuple("ValueSpec", ["name", "dtype", "shape"])
ValueSpec.__doc__ = """A graph input or output: `name`; `dtype`, a numpy dtype (None where
Tessera's type has no numpy equivalent); `shape`, a list whose entries are
ints (fixed sizes), strs (symbolic dims, by name, e.g. "batch") or None
(sizes known only at run time); None when even the rank is unknown."""


class Graph:
    """A tsr_graph owned by Python and destroyed with the object.

    Graph() starts an empty graph for the builder methods; Graph.load and
    Graph.from_bytes import ONNX models."""

    def __init__(self, handle=None):
        self.handle = C.c_void_p(handle)
        if handle is None:
            check(lib().tsr_graph_create(C.byref(self.handle)))

    def __del__(self):
        if _capi.loaded() and getattr(self, "handle", None):
            lib().tsr_graph_destroy(self.handle)
            self.handle = C.c_void_p()

    @classmethod
    def load(cls, path):
        """Imports an ONNX file (external data files are looked up beside it)."""
        h = C.c_void_p()
        check(lib().tsr_graph_load_onnx_file(os.fsencode(path), C.byref(h)))
        return cls(h.value)

    @classmethod
    def from_bytes(cls, data, base_dir=None):
        """Imports an ONNX model held in memory; `base_dir` is where external
        data files are looked up (None forbids them)."""
        data = bytes(data)
        h = C.c_void_p()
        bd = os.fsencode(base_dir) if base_dir is not None else None
        check(lib().tsr_graph_load_onnx_buffer(data, len(data), bd, C.byref(h)))
        return cls(h.value)

    def set_opset(self, opset):
        """The ONNX default-domain version of nodes added from now on."""
        check(lib().tsr_graph_set_opset(self.handle, opset))

    def add_input(self, name, dtype, shape):
        """A graph input; `shape` entries are ints or strs (symbolic dims)."""
        dtype = np.dtype(dtype)
        if dtype not in _capi.DTYPES:
            raise TypeError(f"input {name}: dtype {dtype} has no Tessera equivalent")
        dims = (C.c_int64 * _capi.MAX_RANK)(*[d if isinstance(d, int) else -1 for d in shape])
        names = (C.c_char_p * _capi.MAX_RANK)(
            *[d.encode() if isinstance(d, str) else None for d in shape])
        check(lib().tsr_graph_add_input(self.handle, name.encode(), _capi.DTYPES[dtype],
                                        len(shape), dims, names))

    def _add_value(self, fn, name, array):
        arr = np.require(array, requirements="C")
        t = _capi.tensor_of(arr)
        check(fn(self.handle, name.encode(), C.byref(t)))

    def add_constant(self, name, array):
        """A constant (the data is copied into the graph)."""
        self._add_value(lib().tsr_graph_add_constant, name, array)

    def add_parameter(self, name, array):
        """A trainable constant (tsr_graph_add_parameter; the data is copied)."""
        self._add_value(lib().tsr_graph_add_parameter, name, array)

    def add_node(self, op_type, inputs, outputs, attrs=None, domain="", name=None):
        """A node; `inputs` may hold None or "" for omitted optional inputs;
        `attrs` maps names to ints, floats, strs, lists or numpy arrays."""
        keep = []
        ins = _capi.c_strings([i or "" for i in inputs])
        outs = _capi.c_strings(list(outputs))
        items = list((attrs or {}).items())
        arr = (_capi.Attr * max(len(items), 1))(*[_capi.make_attr(k, v, keep) for k, v in items])
        check(lib().tsr_graph_add_node(self.handle, op_type.encode(), domain.encode(),
                                       name.encode() if name else None, len(inputs), ins,
                                       len(outputs), outs, len(items), arr))

    def add_output(self, name):
        """Marks an existing value as a graph output."""
        check(lib().tsr_graph_add_output(self.handle, name.encode()))

    def _info(self, fn, index):
        info = _capi.ValueInfo()
        check(fn(self.handle, index, C.byref(info)))
        shape = None
        if info.rank >= 0:
            shape = []
            for d in range(info.rank):
                n = info.dim_names[d]
                size = int(info.dims[d])
                shape.append(n.decode() if n else (size if size >= 0 else None))
        return ValueSpec(info.name.decode(), _capi.NUMPY_OF.get(info.dtype), shape)

    def inputs(self):
        """The graph's inputs, as ValueSpecs, in order."""
        n = lib().tsr_graph_num_inputs(self.handle)
        return [self._info(lib().tsr_graph_input_info, i) for i in range(n)]

    def outputs(self):
        """The graph's outputs, as ValueSpecs, in order."""
        n = lib().tsr_graph_num_outputs(self.handle)
        return [self._info(lib().tsr_graph_output_info, i) for i in range(n)]

    def stats(self):
        """tsr_graph_get_stats as a dict: n_nodes, n_parameters, op_counts
        ({op type: count}, most frequent first)."""
        s = _capi.GraphStats()
        check(lib().tsr_graph_get_stats(self.handle, C.byref(s)))
        ops = {s.op_types[i].decode(): s.op_counts[i] for i in range(s.n_op_types)}
        return {"n_nodes": s.n_nodes, "n_parameters": s.n_parameters, "op_counts": ops}

    def gradient(self, outputs, wrt):
        """tsr_graph_gradient: a new Graph computing this graph's outputs,
        then the gradient of sum(output * seed) for each name in `wrt`
        (outputs "<wrt>__grad"), with one extra input "<output>__seed" per
        differentiated output."""
        outs = _capi.c_strings(list(outputs))
        ws = _capi.c_strings(list(wrt))
        h = C.c_void_p()
        check(lib().tsr_graph_gradient(self.handle, len(outputs), outs, len(wrt), ws,
                                       C.byref(h)))
        return type(self)(h.value)

    def split(self, n_first):
        """tsr_graph_split: (first, second), two Graphs. `first` computes
        this graph's first `n_first` outputs, then the values it computes
        that `second` reads (by their names here); `second` computes the
        other outputs from those values and this graph's inputs, without
        computing again what `first` did. Each one's inputs are the values
        it reads and does not compute, matched by name."""
        a, b = C.c_void_p(), C.c_void_p()
        check(lib().tsr_graph_split(self.handle, n_first, C.byref(a), C.byref(b)))
        return type(self)(a.value), type(self)(b.value)


class DeviceTensor:
    """A tensor in the memory of a plan's device (tsr_device_alloc), for
    inputs and outputs that stay on the device between runs (docs/hal.md,
    "Device-resident caller buffers"): runs read and write it there, with
    no copy through the host. Plan.to_device and Session.to_device make
    one holding an array; numpy() copies it back. It keeps its plan alive
    and is freed when dropped."""

    def __init__(self, plan, dtype, shape):
        shape = tuple(int(d) for d in shape)
        self.tensor = _capi.Tensor(dtype=_capi.DTYPES[np.dtype(dtype)], rank=len(shape))
        self.tensor.dims[:len(shape)] = shape
        check(lib().tsr_device_alloc(plan.handle, C.byref(self.tensor)))
        self._plan = plan

    def __del__(self):
        if _capi.loaded() and getattr(self, "_plan", None) and self.tensor.data:
            lib().tsr_device_free(self._plan.handle, C.byref(self.tensor))

    @property
    def dtype(self):
        return np.dtype(_capi.NUMPY_OF[self.tensor.dtype])

    @property
    def shape(self):
        return self.tensor.shape()

    @property
    def memory(self):
        """The device memory it lives in ("testdev", "cuda")."""
        return self.tensor.memory.decode()

    def copy_from(self, array):
        """Overwrites the contents with `array`'s (same shape; converted to
        this tensor's dtype)."""
        host = np.ascontiguousarray(array, dtype=self.dtype)
        check(lib().tsr_device_copy(self._plan.handle, C.byref(self.tensor),
                                    C.byref(_capi.tensor_of(host))))
        return self

    def numpy(self):
        """A new numpy array holding the contents."""
        host = np.empty(self.shape, dtype=self.dtype)
        check(lib().tsr_device_copy(self._plan.handle, C.byref(_capi.tensor_of(host)),
                                    C.byref(self.tensor)))
        return host


def feed_view(x, dtype, name):
    """_feeds.view, with a DeviceTensor passed as it is."""
    if isinstance(x, DeviceTensor):
        return x.tensor, x
    return _feeds.view(x, dtype, name)


class Plan:
    """A tsr_plan compiled from a Graph (which may be dropped afterwards:
    the plan keeps its own copy). The options are tessera.Session's;
    `verbose` prints the kernel each node got, and why others refused it,
    to stderr (as TSR_VERBOSE=1 in the environment does)."""

    def __init__(self, graph, device=None, threads=None, precision="fp32", depth_first=None,
                 *, verbose=False, autotune=None):
        opts = _capi.compile_options(device, threads, precision, depth_first, verbose, autotune)
        self.n_outputs = lib().tsr_graph_num_outputs(graph.handle)
        self.handle = C.c_void_p()
        check(lib().tsr_plan_create(graph.handle, C.byref(opts), C.byref(self.handle)))

    def __del__(self):
        if _capi.loaded() and getattr(self, "handle", None):
            lib().tsr_plan_destroy(self.handle)
            self.handle = C.c_void_p()

    def reshape(self, inputs):
        """Specializes to the shapes of `inputs` (a C array of Tensor) and
        returns the outputs' descriptions, [(numpy dtype, shape)]; a dim the
        data decides (a NonZero's count) reads -1 (see empty_outputs)."""
        check(lib().tsr_plan_reshape(self.handle, len(inputs), inputs))
        descs = []
        for o in range(self.n_outputs):
            d = _capi.Tensor()
            check(lib().tsr_plan_output_desc(self.handle, o, C.byref(d)))
            descs.append((_capi.NUMPY_OF[d.dtype], d.shape()))
        return descs

    @staticmethod
    def empty_outputs(descs):
        """New numpy arrays for the outputs reshape() described, None for
        those whose shape only the run finds."""
        return [None if any(d < 0 for d in shape) else np.empty(shape, dtype=dt)
                for dt, shape in descs]

    @staticmethod
    def output_array(descs, arrays):
        """The C array of Tensor that run() writes: the arrays, and for each
        None a Tensor without data, which the run points at the plan's own
        memory (tsr_plan_run)."""
        return _capi.tensor_array([
            _capi.Tensor(dtype=_capi.DTYPES[np.dtype(dt)], rank=0, data=None) if a is None
            else _capi.tensor_of(a) for (dt, _), a in zip(descs, arrays)])

    @staticmethod
    def take_outputs(outputs, descs, arrays):
        """arrays with each None replaced by a copy of what the run left in
        the plan's memory for it (the next run reuses that memory)."""
        taken = []
        for o, ((dt, _), a) in enumerate(zip(descs, arrays)):
            if a is None:
                t = outputs[o]
                a = np.empty(t.shape(), dtype=dt)
                if a.nbytes:
                    C.memmove(a.ctypes.data, t.data, a.nbytes)
            taken.append(a)
        return taken

    def to_device(self, array):
        """A DeviceTensor in this plan's device memory holding `array`."""
        array = np.asarray(array)
        return DeviceTensor(self, array.dtype, array.shape).copy_from(array)

    def device_outputs(self, descs):
        """New DeviceTensors for the outputs reshape() described."""
        if any(d < 0 for _, shape in descs for d in shape):
            raise _capi.UnsupportedError(3, "outputs whose shape the data decides come back in "
                                            "host memory only")
        return [DeviceTensor(self, dt, shape) for dt, shape in descs]

    def run(self, inputs, outputs=None, *, device_outputs=False):
        """Runs the plan on `inputs`, in graph input order.

        Without `outputs`: `inputs` is a sequence of numpy arrays, CPU
        torch tensors (read in place where C-contiguous; no dtype
        conversion) or DeviceTensors, and the outputs come back as a list
        of new numpy arrays, or with device_outputs=True of new
        DeviceTensors. With `outputs`: both are C arrays of Tensor, outputs
        sized as reshape() described (output_array), written in place (no
        allocation) but for those whose shape the run finds (take_outputs)."""
        if outputs is None:
            views = [feed_view(x, None, f"#{i}") for i, x in enumerate(inputs)]
            ins = _capi.tensor_array([t for t, _ in views])
            descs = self.reshape(ins)
            if device_outputs:
                result = self.device_outputs(descs)
                self.run(ins, _capi.tensor_array([t.tensor for t in result]))
                return result
            arrays = self.empty_outputs(descs)
            outs = self.output_array(descs, arrays)
            self.run(ins, outs)
            return self.take_outputs(outs, descs, arrays)
        check(lib().tsr_plan_run(self.handle, len(inputs), inputs, self.n_outputs, outputs))

    def keep_output_layouts(self, keep):
        """Lets each output whose flag in `keep` is true leave in the layout
        its producer wrote (tsr_plan_keep_output_layouts), for values
        handed to another plan; before the first reshape or run."""
        flags = (C.c_int * max(len(keep), 1))(*[int(bool(k)) for k in keep])
        check(lib().tsr_plan_keep_output_layouts(self.handle, len(keep), flags))

    def output_layout(self, index):
        """After reshape: (layout code, bytes) of output `index`
        (tsr_plan_output_layout); code 0 is the plain layout."""
        code, size = C.c_int(), C.c_size_t()
        check(lib().tsr_plan_output_layout(self.handle, index, C.byref(code), C.byref(size)))
        return code.value, size.value

    def set_input_layouts(self, codes):
        """The layout code of each input the next runs feed
        (tsr_plan_set_input_layouts); None: all plain."""
        if codes is None:
            check(lib().tsr_plan_set_input_layouts(self.handle, 0, None))
            return
        arr = (C.c_int * max(len(codes), 1))(*[int(c) for c in codes])
        check(lib().tsr_plan_set_input_layouts(self.handle, len(codes), arr))

    def stats(self):
        """tsr_plan_get_stats of the current specialization, as a dict."""
        s = _capi.PlanStats()
        check(lib().tsr_plan_get_stats(self.handle, C.byref(s)))
        out = {k: getattr(s, k) for k, _ in _capi.PlanStats._fields_[:7]}
        out["backend_steps"] = {s.backend_names[i].decode(): s.backend_steps[i]
                                for i in range(s.n_backends)}
        for k in ("n_cached_specs", "cached_bytes", "n_builds", "n_evictions", "n_transfers",
                  "uploaded_bytes", "side_by_side"):
            out[k] = getattr(s, k)
        return out

    def set_cache_limits(self, max_specs, max_bytes):
        """Bounds the cache of specializations (tsr_plan_set_cache_limits)."""
        check(lib().tsr_plan_set_cache_limits(self.handle, int(max_specs), int(max_bytes)))

    def node_backend(self, node_name):
        """The backend that runs `node_name` in the current specialization."""
        b = C.c_char_p()
        check(lib().tsr_plan_node_backend(self.handle, node_name.encode(), C.byref(b)))
        return b.value.decode()

    def set_profiling(self, enabled):
        """Turns per-step timing on or off (tsr_plan_set_profiling)."""
        check(lib().tsr_plan_set_profiling(self.handle, int(bool(enabled))))

    def profile_text(self):
        """tsr_plan_print_profile's report, as a str."""
        return _capi.read_c_stream(lambda f: check(lib().tsr_plan_print_profile(self.handle, f)))

    def stacks_text(self):
        """tsr_plan_print_stacks's report, as a str."""
        return _capi.read_c_stream(lambda f: check(lib().tsr_plan_print_stacks(self.handle, f)))

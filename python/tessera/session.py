"""tessera.Session: run an ONNX model, the way ONNX Runtime users know."""

import collections
import os
import time

import numpy as np

from . import _capi, _feeds
from .graph import Graph, Plan, feed_view

MAX_BUFFER_SETS = 16  # output buffer sets kept per session, one per input shape


class Session:
    """An ONNX model compiled for a device.

        sess = tessera.Session("resnet18.onnx")
        (logits,) = sess.run(None, {"input": images})

    `path_or_bytes`: a file path (external data files are looked up beside
    it) or the bytes of a model (external data forbidden). `device`: "cpu"
    or "ref" (None: the library's default). `threads`: None for all cores.
    `precision`: "fp32" or "bf16". `depth_first`: None for the device's
    default, else True/False. `autotune`: None for the library's default,
    else True/False: time each convolution's algorithms (direct, Winograd)
    when a shape is first planned and keep the fastest accurate one, cached
    on disk (docs/autotune.md).

    .inputs and .outputs list ValueSpec(name, dtype, shape), with symbolic
    dims by name. Plans are specialized per input shape and cached, so
    changing the batch size back and forth is cheap.

    Errors from the library raise tessera.Error subclasses carrying the C
    status and tsr_last_error()'s text (a malformed file: ParseError; an op
    Tessera lacks: UnsupportedError; a wrong input shape: ShapeError)."""

    def __init__(self, path_or_bytes, device="cpu", threads=None, precision="fp32",
                 depth_first=None, autotune=None):
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            self._graph = Graph.from_bytes(path_or_bytes)
        elif isinstance(path_or_bytes, (str, os.PathLike)):
            self._graph = Graph.load(path_or_bytes)
        else:
            raise TypeError("Session takes a path or the bytes of an ONNX model, got "
                            f"{type(path_or_bytes).__name__}")
        self.inputs = self._graph.inputs()
        self.outputs = self._graph.outputs()
        self.device = device
        self._plan = Plan(self._graph, device, threads, precision, depth_first,
                          autotune=autotune)
        # input shapes -> output numpy arrays, reused across runs; the most recently
        # used MAX_BUFFER_SETS shapes are kept (inputs whose size changes at every
        # call must not grow memory without end).
        self._buffers = collections.OrderedDict()
        self._last_inputs = None  # the Tensor array of the last run, for tests

    def _inputs(self, feeds):
        if not isinstance(feeds, dict):
            raise TypeError("feeds must be a dict {input name: array or tensor}")
        names = [i.name for i in self.inputs]
        unknown = sorted(set(feeds) - set(names))
        if unknown:
            raise _capi.NotFoundError(6, f"feeds name {', '.join(map(repr, unknown))}, which "
                                         f"the model's inputs ({', '.join(names)}) do not")
        missing = [n for n in names if n not in feeds]
        if missing:
            raise _capi.InvalidArgumentError(1, "no feed for input "
                                             + ", ".join(map(repr, missing)))
        views, owners = [], []
        for spec in self.inputs:
            t, owner = feed_view(feeds[spec.name], spec.dtype, spec.name)
            views.append(t)
            owners.append(owner)
        return _capi.tensor_array(views), owners

    def to_device(self, array):
        """A DeviceTensor holding `array` in the memory of the session's
        device, for feeds that stay there (devices with memory of their
        own: docs/hal.md)."""
        return self._plan.to_device(array)

    def run(self, outputs=None, feeds=None, *, fresh=False, device_outputs=False):
        """Runs the model and returns a list of outputs, those named in
        `outputs` (None: all, in model order).

        `feeds` maps every input name to a numpy array or a CPU torch tensor.
        A feed that is C-contiguous and of the input's dtype is read in place
        (no copy); any other is converted once into a temporary contiguous
        buffer of the input's dtype.

        What comes back: numpy arrays, or torch tensors sharing their memory
        when any feed was a torch tensor. By default they are the session's
        own output buffers, one set per input shape (for the 16 shapes used
        last), reused by the next run at the same shapes (which overwrites
        them): copy what must outlive that call, or pass fresh=True to get
        newly allocated outputs that the session never touches again.
        Outputs whose shape depends on the data (a NonZero's indices,
        .outputs shows their unknown dims as None) are new at every run.

        On a device with memory of its own a feed may be a DeviceTensor
        (to_device), read where it is, and device_outputs=True returns new
        DeviceTensors, written there, instead of arrays."""
        names = [o.name for o in self.outputs]
        wanted = names if outputs is None else list(outputs)
        for w in wanted:
            if w not in names:
                raise _capi.NotFoundError(6, f"{w!r} is not an output of the model (outputs: "
                                             f"{', '.join(names)})")
        ins, owners = self._inputs(feeds or {})
        if device_outputs:
            result = self._plan.device_outputs(self._plan.reshape(ins))
            self._plan.run(ins, _capi.tensor_array([t.tensor for t in result]))
            self._last_inputs = ins
            return [result[names.index(w)] for w in wanted]
        key = tuple(ins[i].shape() for i in range(len(owners)))
        cached = None if fresh else self._buffers.get(key)
        if cached is not None:
            self._buffers.move_to_end(key)
        else:
            descs = self._plan.reshape(ins)
            cached = (descs, self._plan.empty_outputs(descs))
            if not fresh:
                self._buffers[key] = cached
                if len(self._buffers) > MAX_BUFFER_SETS:
                    self._buffers.popitem(last=False)
        descs, arrays = cached
        outs = self._plan.output_array(descs, arrays)
        self._plan.run(ins, outs)
        # Outputs whose shape the data decides come back new at every run.
        arrays = self._plan.take_outputs(outs, descs, arrays)
        self._last_inputs = ins
        result = [arrays[names.index(w)] for w in wanted]
        if any(_feeds.is_torch(f) for f in owners):
            import torch

            result = [torch.from_numpy(a) for a in result]
        return result

    def profile(self, feeds, iters=10, warmup=1):
        """Times `iters` runs on `feeds` after `warmup` untimed ones and
        returns the per-step report of `tessera bench --profile`: every
        kernel call, layout reorder and copy with its mean milliseconds per
        run, followed by a line with the min and median of the whole run."""
        if iters < 1 or warmup < 0:
            raise ValueError("iters must be >= 1 and warmup >= 0")
        for _ in range(warmup):
            self.run(None, feeds)
        times = []
        self._plan.set_profiling(True)
        try:
            for _ in range(iters):
                t0 = time.perf_counter()
                self.run(None, feeds)
                times.append((time.perf_counter() - t0) * 1e3)
            report = self._plan.profile_text()
        finally:
            self._plan.set_profiling(False)
        times.sort()
        return report + (f"runs: {iters}, min {times[0]:.3f} ms, "
                         f"median {times[len(times) // 2]:.3f} ms (profiling on)\n")

    def stats(self, feeds=None):
        """tsr_plan_get_stats of the specialization for `feeds` (None: the
        last one run) as a dict: arena_bytes, constant_bytes, flops, n_steps,
        n_reorders, n_stacks, n_stack_ops, backend_steps ({backend: kernel
        calls per run}), the plan's cache: n_cached_specs, cached_bytes,
        n_builds, n_evictions, and for devices with memory of their own
        n_transfers and uploaded_bytes."""
        if feeds is not None:
            ins, _ = self._inputs(feeds)
            self._plan.reshape(ins)
        elif self._last_inputs is None:
            raise _capi.InvalidArgumentError(1, "stats() before any run needs feeds (the "
                                                "statistics are per input shape)")
        return self._plan.stats()

    def node_backend(self, node_name):
        """The backend ("cpu", "dnnl", "ref", ...) running node `node_name`
        in the last specialization run."""
        return self._plan.node_backend(node_name)

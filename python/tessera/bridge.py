"""tessera.optimize: a PyTorch module that runs on Tessera, for inference
and training.

How it works. The module is captured with torch.onnx.export into memory,
with export_params=False, so every parameter and buffer is a graph input
named by its state_dict key. A module is captured once per mode
(train/eval) and dtype; Tessera caches plans per input shape, so other
batch sizes reuse the capture.

Eval mode without gradients (torch.no_grad, inference_mode, or no tensor
requiring grad) runs a plan in which the parameters and buffers are
constants: the graph passes fold BatchNorm into the convolutions and the
backend lays the weights out once. That plan holds its own copy of the
weights, taken when it is built. It is rebuilt at the next call after any
parameter or buffer changed: written in place (an optimizer step,
load_state_dict, an edit under no_grad; torch's version counter says so),
given new storage (`.data = ...`) or replaced by another tensor.

Every other call feeds the module's own tensors to a plan by pointer: no
second copy of the weights, and changes are seen by the next call without
re-planning. When gradients are wanted (train mode, or eval mode with grad
enabled), the forward runs the first half of tsr_graph_gradient's graph
split by tsr_graph_split: it computes the outputs and the values the
backward reads, which stay on the autograd context until backward; the
backward runs the second half on those values and the output gradients,
without running the forward pass again. The saved values cross in the
layout their producer wrote (tsr_plan_keep_output_layouts; the cpu
device's blocked activations), not reordered into the plain layout and
back. One gradient graph is built per set of tensors that require grad
(parameters and inputs).

In train mode the capture is the exporter's training export, whose
BatchNormalization and Dropout the importer turns into Tessera's training
ops (ai.tessera.BatchNormTrain, DropoutTrain; see _to_training_ops). The
forward produces the outputs and the BatchNorm running-statistic updates,
which are written into the module's buffers (num_batches_tracked counts up
as in PyTorch). Dropout masks come from Tessera's seeded generator (seeded
from torch's, so torch.manual_seed makes runs repeatable), not from
PyTorch's: with p > 0 the masks differ from eager; the backward uses the
forward's masks.

Fallback: none. What the exporter or Tessera cannot take fails at
optimize() (or at the first call in the other mode) with a CaptureError
naming the submodule and the op; there is no partial execution in PyTorch.
"""

import io
import re
import warnings

import numpy as np
import torch

from . import _capi, _feeds
from .graph import Graph, Plan
from .nn import DOMAIN

OPSET = 14
SEED_INPUT = "tessera_dropout_seed"


class CaptureError(RuntimeError):
    """A module could not be captured: `submodule` is its dotted name ("" for
    the top module), `op` the operator that failed (None when unknown), and
    the message says why."""

    def __init__(self, message, submodule=None, op=None):
        super().__init__(message)
        self.submodule = submodule
        self.op = op


# ------------------------------------------------------------------ capture


class _Preserved:
    """Keeps tracing from changing the module: BatchNorm running statistics
    and torch's random state are restored after the export's trace run."""

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        with torch.no_grad():
            self.buffers = [(b, b.clone()) for b in self.module.buffers()]
        self.rng = torch.get_rng_state()
        self.training = self.module.training

    def __exit__(self, *exc):
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        torch.set_rng_state(self.rng)
        self.module.train(self.training)


def _export(module, inputs, training, dynamic_batch, n_outputs):
    """The module's ONNX bytes (parameters as inputs), in train or eval mode."""
    input_names = [f"input_{i}" for i in range(len(inputs))]
    output_names = [f"output_{i}" for i in range(n_outputs)]
    axes = {}
    if dynamic_batch:
        axes = {n: {0: "batch"} for n in input_names + output_names}
    f = io.BytesIO()
    module.train(training)
    # PRESERVE on a module in eval mode keeps BatchNormalization (EVAL would fold
    # it into the convolution as new constants, not the module's buffers).
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.PRESERVE
    with warnings.catch_warnings():
        # A tensor turned into a Python value in the module's own code is
        # data-dependent control flow, which a trace would silently freeze;
        # torch's own checks (batch sizes in F.batch_norm) are harmless.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.")
        torch.onnx.export(module, tuple(inputs), f, export_params=False, training=mode,
                          do_constant_folding=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=axes, custom_opsets={DOMAIN: 1})
    return f.getvalue()


def _describe(exc):
    """The text of an export failure; a TracerWarning turned error (a tensor
    converted to a Python value) is named as data-dependent control flow."""
    seen = exc
    while seen is not None:
        if isinstance(seen, torch.jit.TracerWarning):
            return ("data-dependent control flow (a tensor's value decides what runs, which a "
                    f"capture cannot follow): {str(seen).splitlines()[0]}")
        seen = seen.__cause__ or seen.__context__
    return str(exc)


def _node_of(message):
    """The first node a library error names, as (name, op): its labels read "node 'NAME' (OP)"."""
    m = re.search(r"node '([^']*)' \(([^)]*)\)", message)
    return (m.group(1), m.group(2)) if m else ("", None)


def _op_of(exc):
    text = str(exc)
    if "operator '" in text:
        return text.split("operator '", 1)[1].split("'", 1)[0]
    return None


def _locate(module, inputs, training, dynamic_batch):
    """The dotted name of the deepest submodule whose own export fails (each
    child is exported alone on the inputs it got in an eager run)."""
    seen = {}

    def recorder(name):
        def hook(_module, inputs):
            seen.setdefault(name, inputs)

        return hook

    handles = [m.register_forward_pre_hook(recorder(name)) for name, m in module.named_modules()]
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception:
        pass
    finally:
        for h in handles:
            h.remove()
    path = ""
    while True:
        failing = None
        for name, child in module.named_children():
            full = f"{path}.{name}" if path else name
            if full not in seen or not all(isinstance(t, torch.Tensor) for t in seen[full]):
                continue
            try:
                with torch.no_grad():
                    n_out = len(_flatten(child(*seen[full]))[0])
                _export(child, seen[full], training, dynamic_batch, n_out)
            except Exception:
                failing = (full, child)
                break
        if failing is None:
            return path
        path, module = failing


def _flatten(out):
    """(list of tensors, rebuild function) for a tensor, tuple or list."""
    if isinstance(out, torch.Tensor):
        return [out], lambda ts: ts[0]
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        kind = type(out)
        return list(out), lambda ts: kind(ts)
    raise CaptureError(f"the module returns {type(out).__name__}; tessera.optimize supports "
                       "modules returning a tensor or a tuple or list of tensors", "")


def _attr(node, name, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _constant_value(model, name):
    import onnx.numpy_helper

    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return onnx.numpy_helper.to_array(_attr(n, "value", None))
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    return None


def _to_training_ops(data, module):
    """Prepares a training export for the importer, which turns training-mode
    BatchNormalization into BatchNormTrain and Dropout into DropoutTrain.
    Two changes: each BatchNorm gets momentum 0, so that its running-mean and
    running-var outputs are the batch statistics themselves (the variance
    unbiased) and the running average is taken in Python with the module's
    own momentum, exactly (ONNX stores it as a float32), those outputs
    becoming graph outputs; and Dropout becomes DropoutTrain here, with its
    seed as a new int64 [1] input, so that every call draws a fresh mask
    (the importer's seed is a constant). Returns (bytes, [(running_mean,
    running_var, batch_mean, batch_var, momentum)])."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(data)
    nodes, stats, has_dropout = [], [], False
    for n in model.graph.node:
        if n.op_type == "BatchNormalization" and len(n.output) > 1:
            momentum = 1.0 - float(_attr(n, "momentum", 0.9))
            kept = [a for a in n.attribute if a.name != "momentum"]
            del n.attribute[:]
            n.attribute.extend(kept + [helper.make_attribute("momentum", 0.0)])
            stats.append((n.input[3], n.input[4], n.output[1], n.output[2], momentum))
            nodes.append(n)
        elif n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
            mode = _constant_value(model, n.input[2])
            ratio = _constant_value(model, n.input[1]) if n.input[1] else np.array(0.5)
            if mode is None or ratio is None:
                raise CaptureError(f"Dropout node '{n.name}': its ratio and training mode must "
                                   "be constants", _scope(n.name, module), "Dropout")
            if not bool(mode) or float(ratio) == 0.0:
                nodes.append(helper.make_node("Identity", [n.input[0]], [n.output[0]],
                                              name=n.name))
                continue
            has_dropout = True
            nodes.append(helper.make_node("DropoutTrain", [n.input[0], SEED_INPUT],
                                          [n.output[0], f"{n.output[0]}__mask"], name=n.name,
                                          domain=DOMAIN, ratio=float(ratio)))
        else:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if has_dropout:
        model.graph.input.append(helper.make_tensor_value_info(SEED_INPUT, onnx.TensorProto.INT64,
                                                               [1]))
    for _, _, m, v, _ in stats:
        model.graph.output.extend([helper.make_empty_tensor_value_info(m),
                                   helper.make_empty_tensor_value_info(v)])
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model.SerializeToString(), stats


def _scope(node_name, module):
    """The submodule an exported node came from: '/layer1/layer1.0/conv1/Conv'
    -> 'layer1.0.conv1' (the exporter names children of containers by their
    full path, others by attribute, and a module's second call 'relu_1')."""
    names = dict(module.named_modules())
    path = ""
    for part in [p for p in (node_name or "").split("/") if p][:-1]:
        if path and part.startswith(path + "."):
            path = part
        else:
            path = f"{path}.{part}" if path else part
        if path not in names and "_" in path:
            stem, _, count = path.rpartition("_")
            if count.isdigit() and stem in names:
                path = stem
    return path if path in names else ""


class _Capture:
    """One captured mode and dtype: the graph, its forward plan, and the
    backward plans (per set of differentiated names) built on demand."""

    def __init__(self, owner, inputs, training):
        module = owner._orig
        failure = None
        try:
            with _Preserved(module):
                data = _export(module, inputs, training, owner._dynamic_batch, owner._n_outputs)
        except CaptureError:
            raise
        except Exception as e:
            failure = e
        if failure is not None:
            # Outside the except block: exports run while the exporter's failure is
            # being handled fail themselves (torch 1.13's JIT objects in its frames).
            failure.__traceback__ = None
            with _Preserved(module):
                sub = _locate(module, inputs, training, owner._dynamic_batch)
            where = f"submodule '{sub}' ({type(module.get_submodule(sub)).__name__})" if sub \
                else f"the module ({type(module).__name__})"
            op = _op_of(failure)
            raise CaptureError(f"tessera.optimize could not capture {where}"
                               + (f", op {op}" if op else "") + f": {_describe(failure)}",
                               sub, op) from failure
        self.stats = []
        if training:
            data, self.stats = _to_training_ops(data, module)
        try:
            self.graph = Graph.from_bytes(data)
        except _capi.Error as e:
            node, op = _node_of(e.message)
            sub = _scope(node, module)
            raise CaptureError(f"Tessera cannot run submodule '{sub}'" + (f", op {op}" if op else "")
                               + f": {e.message}", sub, op) from e
        self.input_specs = self.graph.inputs()
        self.n_user = len(inputs)
        self.names = [s.name for s in self.input_specs]
        # Where each parameter or buffer input lives: (submodule, attribute), read
        # at every call (cheaper than state_dict(), and it follows reassignment).
        self.sources = []
        for spec in self.input_specs[self.n_user:]:
            if spec.name == SEED_INPUT:
                self.sources.append(None)
                continue
            path, _, attr = spec.name.rpartition(".")
            try:
                owner_module = module.get_submodule(path)
            except AttributeError:
                owner_module = None
            if owner_module is None or not isinstance(getattr(owner_module, attr, None),
                                                      torch.Tensor):
                raise CaptureError(f"the captured graph reads '{spec.name}', which is not a "
                                   "parameter or buffer of the module", path)
            self.sources.append((spec.name, owner_module, attr))
        self.n_model_outputs = owner._n_outputs
        self.compile = owner._compile
        self.onnx = data
        self.training = training
        self._plan = None
        self.halves = {}
        self.baked = None  # (plan, [(tensor, _version, data_ptr)]) in eval mode

    @property
    def plan(self):
        """The plan of the graph itself, parameters as inputs (train mode without gradients)."""
        if self._plan is None:
            self._plan = Plan(self.graph, **self.compile)
        return self._plan

    def halves_for(self, wrt):
        """The forward and backward halves that differentiate with respect to `wrt`."""
        halves = self.halves.get(wrt)
        if halves is None:
            halves = self.halves[wrt] = _Halves(self, wrt)
        return halves

    def baked_plan(self, tensors):
        """The eval plan with `tensors` (the parameter and buffer feeds) as
        constants, so that the graph passes fold BatchNorm into the
        convolutions and the backend lays the weights out once. It is
        rebuilt when any of them is another tensor, moved to other storage
        or written since (torch's version counter counts in-place writes:
        optimizer steps, load_state_dict, edits under no_grad)."""
        state = [(t, t._version, t.data_ptr()) for t in tensors]
        if self.baked is not None and len(state) == len(self.baked[1]) and all(
                a is b and va == vb and pa == pb
                for (a, va, pa), (b, vb, pb) in zip(state, self.baked[1])):
            return self.baked[0]
        self.baked = None  # the old plan's constants go before the new ones are made
        self.baked = (Plan(self._graph_with_constants(tensors), **self.compile), state)
        return self.baked[0]

    def _graph_with_constants(self, tensors):
        import onnx
        import onnx.numpy_helper

        model = onnx.load_from_string(self.onnx)
        values = dict(zip(self.names[self.n_user:], tensors))
        kept = [i for i in model.graph.input if i.name not in values]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        for name, t in values.items():
            model.graph.initializer.append(
                onnx.numpy_helper.from_array(t.detach().contiguous().numpy(), name))
        return Graph.from_bytes(model.SerializeToString())


class _Halves:
    """tsr_graph_gradient of a capture's graph with respect to `wrt`, split
    (tsr_graph_split) into the forward half, which computes the graph's
    outputs and the values the backward reads (kept between the two calls),
    and the backward half, which computes the gradients from those values,
    the capture's feeds and the output gradients without running the
    forward pass again."""

    def __init__(self, capture, wrt):
        outs = capture.graph.outputs()
        self.n_outputs = len(outs)
        diff = [o.name for o in outs[:capture.n_model_outputs]
                if o.dtype is not None and o.dtype.kind == "f"]
        first, second = capture.graph.gradient(diff, wrt).split(self.n_outputs)
        self.forward = Plan(first, **capture.compile)
        self.backward = Plan(second, **capture.compile)
        # The saved values cross in the layout their producer wrote (_Packed).
        self.forward.keep_output_layouts([k >= self.n_outputs
                                          for k in range(len(first.outputs()))])
        feed_of = {name: i for i, name in enumerate(capture.names)}
        self.forward_feeds = [feed_of[s.name] for s in first.inputs()]
        saved_of = {o.name: k for k, o in enumerate(first.outputs())}
        output_of = {f"{o.name}__seed": k for k, o in enumerate(outs) if o.name in diff}
        # What the backward half reads, in its input order: ("grad", output index),
        # ("feed", capture feed index) or ("saved", forward-half output index).
        self.backward_feeds = []
        for spec in second.inputs():
            if spec.name in output_of:
                self.backward_feeds.append(("grad", output_of[spec.name]))
            elif spec.name in feed_of:
                self.backward_feeds.append(("feed", feed_of[spec.name]))
            else:
                self.backward_feeds.append(("saved", saved_of[spec.name]))
        # The model outputs that the backward reads are saved through
        # save_for_backward (an output kept on ctx otherwise would keep its own
        # graph alive); the other saved values are plain tensors on ctx.
        self.saved_outputs = sorted({k for kind, k in self.backward_feeds
                                     if kind == "saved" and k < self.n_outputs})
        # The feeds the backward half reads again, but the BatchNorm running
        # statistics (which the forward itself updates): their versions are
        # checked, as autograd checks those of saved tensors.
        stats = {name for mean, var, *_ in capture.stats for name in (mean, var)}
        self.reread = sorted({k for kind, k in self.backward_feeds
                              if kind == "feed" and capture.names[k] not in stats})


# ------------------------------------------------------------------ running


class _Packed:
    """A float32 value the forward half left in its producer's layout (the
    cpu device's blocked one, tsr_plan_keep_output_layouts) for the
    backward half: its bytes, its logical shape and the layout's code."""

    __slots__ = ("raw", "shape", "layout")

    def __init__(self, nbytes, shape, layout):
        self.raw = torch.empty(nbytes, dtype=torch.uint8)
        self.shape, self.layout = tuple(shape), layout

    def tensor(self):
        t = _capi.Tensor(dtype=_capi.DTYPES[np.dtype(np.float32)], rank=len(self.shape),
                         data=self.raw.data_ptr())
        for d, n in enumerate(self.shape):
            t.dims[d] = n
        return t


def _tensor(x, name):
    return x.tensor() if isinstance(x, _Packed) else _feeds.view(x, None, name)[0]


def _run(plan, feeds, packed_from=None):
    """Runs `plan` on a list of tensors (zero-copy views where possible, or
    _Packed) and returns newly allocated torch outputs; from output index
    `packed_from` on, an output the plan kept in another layout than plain
    comes as a _Packed. The views keep their tensors alive: `feeds` holds
    them, and contiguous copies made here live in the list."""
    views = [_feeds.view(x, None, str(i)) if not isinstance(x, _Packed) else (x.tensor(), x)
             for i, x in enumerate(feeds)]
    ins = _capi.tensor_array([t for t, _ in views])
    descs = plan.reshape(ins)
    outs = []
    for k, (dt, shape) in enumerate(descs):
        layout, nbytes = plan.output_layout(k) if packed_from is not None and k >= packed_from \
            else (0, 0)
        outs.append(_Packed(nbytes, shape, layout) if layout else
                    torch.empty(shape, dtype=_feeds.torch_dtype(_capi.DTYPES[np.dtype(dt)])))
    plan.run(ins, _capi.tensor_array([_tensor(o, "out") for o in outs]))
    return outs


class _TesseraFunction(torch.autograd.Function):
    """Forward on the forward half of the capture's gradient graph, which
    also returns the values the backward needs; backward on the backward
    half, fed those values and the output gradients as seeds."""

    @staticmethod
    def forward(ctx, call, *diff):
        halves = call.halves
        outs = _run(halves.forward, [call.feeds[i] for i in halves.forward_feeds],
                    packed_from=halves.n_outputs)
        call.outputs = outs[:halves.n_outputs]
        n = halves.n_outputs
        ctx.call = call
        ctx.saved = {k: outs[k] for k in range(n, len(outs))}
        ctx.output_descs = [(o.shape, o.dtype) for o in call.outputs]
        ctx.save_for_backward(*diff, *[outs[k] for k in halves.saved_outputs])
        ctx.versions = [call.feeds[k]._version for k in halves.reread]
        ctx.n_diff = len(diff)
        # Integer outputs and the BatchNorm statistics after the model's outputs
        # carry no gradient.
        n_model = call.capture.n_model_outputs
        ctx.mark_non_differentiable(*[o for k, o in enumerate(call.outputs)
                                      if k >= n_model or not o.is_floating_point()])
        return tuple(call.outputs)

    @staticmethod
    def backward(ctx, *grads):
        call, halves = ctx.call, ctx.call.halves
        for k, version in zip(halves.reread, ctx.versions):
            if call.feeds[k]._version != version:
                raise RuntimeError(f"'{call.capture.names[k]}' was modified in place between the "
                                   "forward and the backward of a tessera.optimize module, which "
                                   "reads it again to compute the gradients")
        saved = dict(ctx.saved)
        saved.update(zip(halves.saved_outputs, ctx.saved_tensors[ctx.n_diff:]))
        feeds = []
        for kind, k in halves.backward_feeds:
            if kind == "feed":
                feeds.append(call.feeds[k])
            elif kind == "saved":
                feeds.append(saved[k])
            elif grads[k] is None:
                shape, dtype = ctx.output_descs[k]
                feeds.append(torch.zeros(shape, dtype=dtype))
            else:
                feeds.append(grads[k])
        ctx.saved = None
        halves.backward.set_input_layouts([x.layout if isinstance(x, _Packed) else 0
                                           for x in feeds])
        return (None,) + tuple(_run(halves.backward, feeds))


class _Call:
    """The feeds of one forward call (and its halves, when it differentiates)."""

    def __init__(self, capture, feeds, wrt):
        self.capture, self.feeds = capture, feeds
        self.halves = capture.halves_for(wrt) if wrt else None
        self.outputs = None


class OptimizedModule(torch.nn.Module):
    """A module that runs on Tessera; made by tessera.optimize (see there).

    It shares the wrapped module's parameter, buffer and submodule tables:
    state_dict() has the same keys, parameters() are the same Parameter
    objects, load_state_dict(), .to(), .train()/.eval() and optimizers act on
    the original module's tensors."""

    def __init__(self, module, example_inputs, device, dynamic_batch, precision, depth_first,
                 autotune=None):
        super().__init__()
        self._modules = module._modules
        self._parameters = module._parameters
        self._buffers = module._buffers
        self._non_persistent_buffers_set = module._non_persistent_buffers_set
        object.__setattr__(self, "_orig", module)
        self._dynamic_batch = dynamic_batch
        self._compile = dict(device=device, threads=None, precision=precision,
                             depth_first=depth_first, autotune=autotune)
        self._captures = {}
        self.training = module.training
        inputs = tuple(example_inputs)
        with _Preserved(module), torch.no_grad():
            module.eval()
            outs, self._rebuild = _flatten(module(*inputs))
        self._n_outputs = len(outs)
        self._n_inputs = len(inputs)
        self._capture(inputs, module.training)

    def train(self, mode=True):
        """Train mode (batch statistics in BatchNorm, Dropout on) or eval."""
        super().train(mode)
        self._orig.training = mode
        return self

    def _capture(self, inputs, training):
        dtypes = tuple(str(x.dtype) for x in inputs)
        pdtypes = tuple(sorted({str(p.dtype) for p in self._orig.parameters()}))
        key = (training, dtypes, pdtypes)
        cap = self._captures.get(key)
        if cap is None:
            examples = [x.detach() for x in inputs]
            cap = _Capture(self, examples, training)
            self._captures[key] = cap
        return cap

    def forward(self, *inputs):
        """Runs the module on Tessera: torch tensors in (CPU), torch tensors out."""
        if len(inputs) != self._n_inputs:
            raise TypeError(f"forward takes {self._n_inputs} inputs (as captured), got "
                            f"{len(inputs)}")
        cap = self._capture(inputs, self.training)
        feeds, by_name = list(inputs), {}
        for source in cap.sources:
            if source is None:
                feeds.append(torch.randint(0, 2**62, (1,), dtype=torch.int64))
                continue
            name, owner_module, attr = source
            t = getattr(owner_module, attr)
            feeds.append(t)
            by_name[name] = t
        names = cap.names
        wrt = tuple(names[i] for i, x in enumerate(feeds)
                    if torch.is_grad_enabled() and x.requires_grad and x.is_floating_point())
        call = _Call(cap, [x.detach() for x in feeds], wrt)
        if wrt:
            diff = [feeds[names.index(w)] for w in wrt]
            outs = list(_TesseraFunction.apply(call, *diff))
        elif cap.training:
            outs = call.outputs = _run(cap.plan, call.feeds)
        else:
            plan = cap.baked_plan(feeds[cap.n_user:])
            outs = call.outputs = _run(plan, call.feeds[:cap.n_user])
        if cap.stats:
            self._update_running_stats(cap, call.outputs, by_name)
        # The autograd context keeps `call`; outputs held there would keep their
        # own graph alive (a reference cycle through C++ that Python cannot collect).
        call.outputs = None
        return self._rebuild(outs[:self._n_outputs])

    def _update_running_stats(self, cap, outs, by_name):
        """PyTorch's BatchNorm update, with the module's momentum (None: the
        cumulative average) and num_batches_tracked counted first."""
        out_names = [o.name for o in cap.graph.outputs()]
        with torch.no_grad():
            for mean, var, batch_mean, batch_var, momentum in cap.stats:
                bn = None
                if mean.endswith("running_mean"):
                    prefix = mean[:-len("running_mean")]
                    try:
                        bn = self._orig.get_submodule(prefix.rstrip("."))
                    except AttributeError:
                        bn = None
                if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                    if bn.num_batches_tracked is not None:
                        bn.num_batches_tracked.add_(1)
                    momentum = bn.momentum
                    if momentum is None:
                        momentum = 1.0 / float(bn.num_batches_tracked)
                for name, new in ((mean, batch_mean), (var, batch_var)):
                    buf = by_name[name]
                    buf.mul_(1.0 - momentum).add_(outs[out_names.index(new)], alpha=momentum)


def optimize(module, example_inputs, *, device="cpu", dynamic_batch=True, precision="fp32",
             depth_first=None, autotune=None):
    """Returns an nn.Module that computes what `module` computes, on Tessera.

    module: a torch.nn.Module whose forward takes tensors and returns a
        tensor or a tuple or list of tensors.
    example_inputs: a tensor or a tuple of tensors to capture with (their
        shapes and dtypes; with dynamic_batch, other sizes of dim 0 run too).
    device: "cpu" or "ref"; precision: "fp32" or "bf16"; depth_first: None
        (the device's default), True or False; autotune: None (the
        library's default), True or False (docs/autotune.md).

    The result behaves like the module: forward takes and returns CPU torch
    tensors (batch sizes other than the example's reuse the capture; plans
    are cached per shape); state_dict() has the same keys and
    load_state_dict() changes its outputs; parameters() are the module's own
    Parameters, so any torch.optim optimizer, scheduler or gradient clipping
    works unchanged. .train() switches to Tessera's training-mode BatchNorm
    (running statistics updated in the module's buffers) and Dropout;
    loss.backward() then fills the .grad of every parameter with gradients
    computed by Tessera, from values the forward kept (or, where saving them
    costs more than computing them, by running the forward again inside the
    backward's plan; the feeds must then not change in place in between).

    Eval mode without gradients runs a plan with the weights baked in as
    constants (BatchNorm folded into the convolutions, weights laid out
    once), a copy taken when it is built; it is built again at the next call
    after any parameter or buffer was written in place (an optimizer step,
    load_state_dict), given new storage or replaced. Everywhere else
    Tessera reads the module's tensors in place at every call.

    What cannot be captured (an op the exporter or Tessera lacks,
    data-dependent control flow) raises CaptureError naming the submodule
    and the op. There is no fallback to PyTorch for parts of the module."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"optimize takes an nn.Module, got {type(module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    return OptimizedModule(module, example_inputs, device, dynamic_batch, precision, depth_first,
                           autotune)


def compile_backend(gm, example_inputs):
    """The torch.compile backend "tessera" (PyTorch 2.x): compiles each graph
    TorchDynamo captures with tessera.optimize. Registered when the PyTorch
    side of the package is imported (tessera.optimize, or `import tessera`
    after `import torch`), so `torch.compile(model, backend="tessera")`
    works. PyTorch 1.x has no torch.compile: calling this raises a
    RuntimeError that says so."""
    if not hasattr(torch, "compile"):
        raise RuntimeError(f"torch.compile needs PyTorch 2.x; this is PyTorch {torch.__version__}"
                           ". Use tessera.optimize(module, example_inputs) instead")
    return optimize(gm, tuple(example_inputs))


def _register_compile_backend():
    if not hasattr(torch, "compile"):
        return
    from torch._dynamo import list_backends, register_backend

    if "tessera" not in list_backends(exclude_tags=()):
        register_backend(compiler_fn=compile_backend, name="tessera")


_register_compile_backend()

"""The ctypes bindings to libtessera: every C structure the package passes,
the library's location, status codes turned into exceptions, and tensor
views of numpy arrays and torch tensors. Nothing else in the package calls
ctypes on the library directly.

The library is found, in this order, at $TESSERA_LIB; next to this file
(where `pip install` puts it); in $TESSERA_BUILD_DIR/lib; in the build tree
of the checkout this file lies in (build/lib/libtessera.so).
"""

import ctypes as C
import os

import numpy as np

MAX_RANK = 8
LIB_NAME = "libtessera.so"
_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(os.path.dirname(_HERE))

# numpy dtype -> tsr_dtype code (ONNX's TensorProto codes)
DTYPES = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.bool_): 9,
    np.dtype(np.float64): 11,
}
NUMPY_OF = {code: dt for dt, code in DTYPES.items()}

ATTR_INT, ATTR_FLOAT, ATTR_STRING, ATTR_INTS, ATTR_FLOATS, ATTR_TENSOR, ATTR_GRAPH = range(1, 8)
PRECISIONS = {"fp32": 0, "bf16": 1}

# ------------------------------------------------------------------ errors


class Error(Exception):
    """A call into libtessera failed.

    `status` is the C tsr_status code (an int), `status_name` its name
    (tsr_status_name), `message` the text of tsr_last_error(). Each status
    has its own subclass, so callers can catch e.g. tessera.ParseError."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.status_name = _status_name(status)
        self.message = message


class InvalidArgumentError(Error, ValueError):
    """TSR_ERR_INVALID_ARGUMENT: a caller passed something unusable."""


class ParseError(Error, ValueError):
    """TSR_ERR_PARSE: a model or data file is malformed."""


class UnsupportedError(Error):
    """TSR_ERR_UNSUPPORTED: valid, but not something Tessera runs."""


class ShapeError(Error, ValueError):
    """TSR_ERR_SHAPE: shapes do not fit together."""


class DtypeError(Error, TypeError):
    """TSR_ERR_DTYPE: element types do not fit together."""


class NotFoundError(Error, KeyError):
    """TSR_ERR_NOT_FOUND: a name that does not exist."""

    def __str__(self):
        return self.message


class FileError(Error, OSError):
    """TSR_ERR_IO: reading or writing a file failed."""

    def __str__(self):
        return self.message


class OutOfMemoryError(Error, MemoryError):
    """TSR_ERR_OUT_OF_MEMORY."""


class InternalError(Error):
    """TSR_ERR_INTERNAL: a bug in Tessera; please report it."""


ERROR_CLASSES = {
    1: InvalidArgumentError,
    2: ParseError,
    3: UnsupportedError,
    4: ShapeError,
    5: DtypeError,
    6: NotFoundError,
    7: FileError,
    8: OutOfMemoryError,
    9: InternalError,
}

# --------------------------------------------------------------- structures


class Tensor(C.Structure):
    """tsr_tensor; memory None is host memory, else a device's ("testdev")."""

    _fields_ = [
        ("dtype", C.c_int),
        ("rank", C.c_int),
        ("dims", C.c_int64 * MAX_RANK),
        ("data", C.c_void_p),
        ("memory", C.c_char_p),
    ]

    def shape(self):
        return tuple(int(self.dims[d]) for d in range(self.rank))


class Attr(C.Structure):
    """tsr_attr"""

    _fields_ = [
        ("name", C.c_char_p),
        ("type", C.c_int),
        ("i", C.c_int64),
        ("f", C.c_double),
        ("s", C.c_char_p),
        ("count", C.c_size_t),
        ("ints", C.POINTER(C.c_int64)),
        ("floats", C.POINTER(C.c_double)),
        ("t", C.POINTER(Tensor)),
        ("graph", C.c_void_p),
    ]


class ValueInfo(C.Structure):
    """tsr_value_info"""

    _fields_ = [
        ("name", C.c_char_p),
        ("dtype", C.c_int),
        ("rank", C.c_int),
        ("dims", C.c_int64 * MAX_RANK),
        ("dim_names", C.c_char_p * MAX_RANK),
    ]


class CompileOptions(C.Structure):
    """tsr_compile_options"""

    _fields_ = [
        ("device", C.c_char_p),
        ("threads", C.c_int),
        ("depth_first", C.c_int),
        ("precision", C.c_int),
        ("verbose", C.c_int),
        ("autotune", C.c_int),
        ("inter_op", C.c_int),
    ]


class PlanStats(C.Structure):
    """tsr_plan_stats"""

    _fields_ = [
        ("arena_bytes", C.c_size_t),
        ("constant_bytes", C.c_size_t),
        ("flops", C.c_double),
        ("n_steps", C.c_int),
        ("n_reorders", C.c_int),
        ("n_stacks", C.c_int),
        ("n_stack_ops", C.c_int),
        ("n_backends", C.c_int),
        ("backend_names", C.c_char_p * 8),
        ("backend_steps", C.c_int * 8),
        ("n_cached_specs", C.c_int),
        ("cached_bytes", C.c_size_t),
        ("n_builds", C.c_int64),
        ("n_evictions", C.c_int64),
        ("n_transfers", C.c_int),
        ("uploaded_bytes", C.c_size_t),
        ("side_by_side", C.c_int),
    ]


class GraphStats(C.Structure):
    """tsr_graph_stats"""

    _fields_ = [
        ("n_nodes", C.c_int),
        ("n_parameters", C.c_int64),
        ("n_op_types", C.c_int),
        ("op_types", C.c_char_p * 128),
        ("op_counts", C.c_int * 128),
    ]


class OpInfo(C.Structure):
    """tsr_op_info"""

    _fields_ = [
        ("name", C.c_char_p),
        ("domain", C.c_char_p),
        ("min_inputs", C.c_int),
        ("max_inputs", C.c_int),
        ("min_outputs", C.c_int),
        ("max_outputs", C.c_int),
        ("has_gradient", C.c_int),
    ]


MAX_PARAM_GROUPS = 8


class LossOptions(C.Structure):
    """tsr_loss_options"""

    _fields_ = [
        ("kind", C.c_int),
        ("reduction", C.c_int),
        ("output", C.c_char_p),
        ("label_smoothing", C.c_double),
        ("huber_delta", C.c_double),
    ]


class ParamGroup(C.Structure):
    """tsr_param_group"""

    _fields_ = [
        ("pattern", C.c_char_p),
        ("max_rank", C.c_int),
        ("weight_decay", C.c_double),
        ("lr_scale", C.c_double),
    ]


class OptimizerOptions(C.Structure):
    """tsr_optimizer_options"""

    _fields_ = [
        ("kind", C.c_int),
        ("lr", C.c_double),
        ("weight_decay", C.c_double),
        ("momentum", C.c_double),
        ("dampening", C.c_double),
        ("nesterov", C.c_int),
        ("beta1", C.c_double),
        ("beta2", C.c_double),
        ("eps", C.c_double),
        ("amsgrad", C.c_int),
        ("n_groups", C.c_int),
        ("groups", ParamGroup * MAX_PARAM_GROUPS),
        ("schedule", C.c_int),
        ("schedule_per_step", C.c_int),
        ("step_size", C.c_int),
        ("gamma", C.c_double),
        ("t_max", C.c_int),
        ("min_lr", C.c_double),
        ("patience", C.c_int),
        ("factor", C.c_double),
        ("threshold", C.c_double),
        ("clip_norm", C.c_double),
        ("ema_decay", C.c_double),
    ]


class TrainerParam(C.Structure):
    """tsr_trainer_param"""

    _fields_ = [("name", C.c_char_p), ("trainable", C.c_int), ("value", Tensor)]


class TrainerStats(C.Structure):
    """tsr_trainer_stats"""

    _fields_ = [
        ("arena_bytes", C.c_size_t),
        ("eval_arena_bytes", C.c_size_t),
        ("param_bytes", C.c_size_t),
        ("grad_bytes", C.c_size_t),
        ("optimizer_bytes", C.c_size_t),
        ("constant_bytes", C.c_size_t),
        ("flops", C.c_double),
        ("n_kernel_calls", C.c_int),
        ("n_trainable", C.c_int),
        ("n_trainable_elements", C.c_int64),
    ]


# ------------------------------------------------------------------ library


class IctpOptions(C.Structure):
    """tsr_ictp_options (tessera/ictp.h)."""
    _fields_ = [("device", C.c_char_p), ("dtype", C.c_int), ("threads", C.c_int),
                ("exact_sizes", C.c_int), ("radial_table", C.c_int)]


def library_path():
    """Where libtessera.so is taken from (see the module docstring); raises
    FileNotFoundError naming every place looked at when it is nowhere."""
    if os.environ.get("TESSERA_LIB"):
        return os.environ["TESSERA_LIB"]
    places = [os.path.join(_HERE, LIB_NAME)]
    if os.environ.get("TESSERA_BUILD_DIR"):
        places.append(os.path.join(os.environ["TESSERA_BUILD_DIR"], "lib", LIB_NAME))
    places.append(os.path.join(_CHECKOUT, "build", "lib", LIB_NAME))
    for p in places:
        if os.path.exists(p):
            return p
    raise FileNotFoundError(
        "libtessera.so not found; looked at " + ", ".join(places)
        + ". Build it with `make`, or set TESSERA_LIB to its path")


def _declare(lib):
    v, p, i = None, C.c_void_p, C.c_int
    pp = C.POINTER(C.c_void_p)
    sig = {
        "tsr_last_error": (C.c_char_p, []),
        "tsr_status_name": (C.c_char_p, [i]),
        "tsr_dtype_name": (C.c_char_p, [i]),
        "tsr_default_device": (C.c_char_p, []),
        "tsr_graph_load_onnx_file": (i, [C.c_char_p, pp]),
        "tsr_graph_load_onnx_buffer": (i, [p, C.c_size_t, C.c_char_p, pp]),
        "tsr_graph_create": (i, [pp]),
        "tsr_graph_destroy": (v, [p]),
        "tsr_graph_num_inputs": (i, [p]),
        "tsr_graph_num_outputs": (i, [p]),
        "tsr_graph_input_info": (i, [p, i, C.POINTER(ValueInfo)]),
        "tsr_graph_output_info": (i, [p, i, C.POINTER(ValueInfo)]),
        "tsr_graph_get_stats": (i, [p, C.POINTER(GraphStats)]),
        "tsr_graph_set_opset": (i, [p, i]),
        "tsr_graph_set_fold_limit": (i, [p, C.c_int64]),
        "tsr_graph_add_input": (i, [p, C.c_char_p, i, i, C.POINTER(C.c_int64),
                                    C.POINTER(C.c_char_p)]),
        "tsr_graph_add_constant": (i, [p, C.c_char_p, C.POINTER(Tensor)]),
        "tsr_graph_add_parameter": (i, [p, C.c_char_p, C.POINTER(Tensor)]),
        "tsr_graph_add_node": (i, [p, C.c_char_p, C.c_char_p, C.c_char_p, i,
                                   C.POINTER(C.c_char_p), i, C.POINTER(C.c_char_p), i,
                                   C.POINTER(Attr)]),
        "tsr_graph_add_output": (i, [p, C.c_char_p]),
        "tsr_graph_gradient": (i, [p, i, C.POINTER(C.c_char_p), i, C.POINTER(C.c_char_p), pp]),
        "tsr_graph_split": (i, [p, i, pp, pp]),
        "tsr_compile_options_init": (v, [C.POINTER(CompileOptions)]),
        "tsr_plan_create": (i, [p, C.POINTER(CompileOptions), pp]),
        "tsr_plan_destroy": (v, [p]),
        "tsr_plan_reshape": (i, [p, i, C.POINTER(Tensor)]),
        "tsr_plan_output_desc": (i, [p, i, C.POINTER(Tensor)]),
        "tsr_plan_run": (i, [p, i, C.POINTER(Tensor), i, C.POINTER(Tensor)]),
        "tsr_plan_keep_output_layouts": (i, [p, i, C.POINTER(C.c_int)]),
        "tsr_plan_output_layout": (i, [p, i, C.POINTER(C.c_int), C.POINTER(C.c_size_t)]),
        "tsr_plan_set_input_layouts": (i, [p, i, C.POINTER(C.c_int)]),
        "tsr_device_alloc": (i, [p, C.POINTER(Tensor)]),
        "tsr_device_free": (i, [p, C.POINTER(Tensor)]),
        "tsr_device_copy": (i, [p, C.POINTER(Tensor), C.POINTER(Tensor)]),
        "tsr_plan_get_stats": (i, [p, C.POINTER(PlanStats)]),
        "tsr_plan_set_cache_limits": (i, [p, i, C.c_size_t]),
        "tsr_plan_node_backend": (i, [p, C.c_char_p, C.POINTER(C.c_char_p)]),
        "tsr_plan_set_profiling": (i, [p, i]),
        "tsr_plan_print_profile": (i, [p, p]),
        "tsr_plan_print_stacks": (i, [p, p]),
        "tsr_op_table_size": (i, []),
        "tsr_op_table_entry": (i, [i, C.POINTER(OpInfo)]),
        "tsr_loss_options_init": (v, [C.POINTER(LossOptions)]),
        "tsr_optimizer_options_init": (v, [C.POINTER(OptimizerOptions)]),
        "tsr_trainer_destroy": (v, [p]),
        "tsr_trainer_lr": (C.c_double, [p]),
        "tsr_trainer_step_count": (C.c_int64, [p]),
        "tsr_trainer_epoch_count": (C.c_int64, [p]),
        "tsr_trainer_epoch_end": (i, [p, C.c_double]),
        "tsr_atoms_create": (i, [C.c_int64, p, p, p, p, pp]),
        "tsr_atoms_destroy": (v, [p]),
        "tsr_ictp_model_load": (i, [C.c_char_p, pp]),
        "tsr_ictp_model_destroy": (v, [p]),
        "tsr_ictp_model_cutoff": (C.c_double, [p]),
        "tsr_ictp_options_init": (v, [C.POINTER(IctpOptions)]),
        "tsr_ictp_evaluator_create": (i, [p, C.POINTER(IctpOptions), pp]),
        "tsr_ictp_evaluator_destroy": (v, [p]),
        "tsr_ictp_evaluator_stats": (i, [p, C.POINTER(PlanStats)]),
        "tsr_ictp_evaluate": (i, [p, p, C.POINTER(C.c_double), p, p, p]),
        "tsr_ictp_evaluate_local_virial": (i, [p, p, C.c_int64, C.POINTER(C.c_double), p, p, p]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


_lib = None


def lib():
    """The loaded library (loaded on first use, so that importing tessera
    works without it)."""
    global _lib
    if _lib is None:
        _lib = _declare(C.CDLL(library_path()))
    return _lib


def loaded():
    """Whether the library is loaded (for destructors at interpreter exit)."""
    return _lib is not None


def _status_name(status):
    name = lib().tsr_status_name(status)
    return name.decode() if name else str(status)


def check(status):
    """Raises the Error subclass of a non-zero tsr_status, with
    tsr_last_error()'s text."""
    if status != 0:
        message = lib().tsr_last_error().decode(errors="replace")
        raise ERROR_CLASSES.get(status, Error)(status, message)


# ------------------------------------------------------------------ tensors


def tensor_of(array):
    """A Tensor viewing a C-contiguous numpy array (the caller keeps the
    array alive while the Tensor is in use)."""
    if array.dtype not in DTYPES:
        raise TypeError(f"dtype {array.dtype} has no Tessera equivalent "
                        f"(supported: {', '.join(str(d) for d in DTYPES)})")
    if not array.flags.c_contiguous:
        raise ValueError("tensor_of needs a C-contiguous array")
    if array.ndim > MAX_RANK:
        raise ValueError(f"rank {array.ndim} is more than Tessera's {MAX_RANK}")
    t = Tensor()
    t.dtype = DTYPES[array.dtype]
    t.rank = array.ndim
    for d, n in enumerate(array.shape):
        t.dims[d] = n
    t.data = array.ctypes.data
    return t


def tensor_array(tensors):
    """A C array of Tensor structs, as long as `tensors` (its len() is the
    count the C calls are given, so a model without inputs gets 0)."""
    return (Tensor * len(tensors))(*tensors)


def c_strings(names):
    """A C array of char* for a list of str (keep the result alive)."""
    return (C.c_char_p * max(len(names), 1))(*[n.encode() if n is not None else None
                                                for n in names])


def compile_options(device=None, threads=None, precision="fp32", depth_first=None,
                    verbose=False, autotune=None):
    """tsr_compile_options from Python values: device None = the library's
    default, threads None = all cores, depth_first None = the device's
    default, precision "fp32" or "bf16", verbose True to print the kernel
    each node got (and why others refused it) to stderr (False keeps the
    library's default: on when the environment sets TSR_VERBOSE=1),
    autotune None = the library's default (TSR_AUTOTUNE in the environment,
    else the device's), else True/False (docs/autotune.md)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads must be None or an int >= 0, got {threads!r}")
    opts = CompileOptions()
    lib().tsr_compile_options_init(C.byref(opts))
    opts.device = device.encode() if device is not None else None
    opts.threads = 0 if threads is None else threads
    opts.depth_first = -1 if depth_first is None else int(bool(depth_first))
    opts.precision = PRECISIONS[precision]
    if verbose:
        opts.verbose = 1
    if autotune is not None:
        opts.autotune = int(bool(autotune))
    return opts


def make_attr(name, value, keep):
    """A tsr_attr from a Python value: int/bool, float, str, numpy array
    (tensor), list of ints or list of floats, a Graph (If's branches,
    copied). Objects the attribute points at are appended to `keep`."""
    a = Attr()
    a.name = name.encode()
    keep.append(a.name)
    if isinstance(value, (bool, int, np.integer)):
        a.type, a.i = ATTR_INT, int(value)
    elif isinstance(value, (float, np.floating)):
        a.type, a.f = ATTR_FLOAT, float(value)
    elif isinstance(value, str):
        a.type, a.s = ATTR_STRING, value.encode()
        keep.append(a.s)
    elif isinstance(value, np.ndarray):
        arr = np.require(value, requirements="C")
        t = tensor_of(arr)
        keep += [arr, t]
        a.type, a.t = ATTR_TENSOR, C.pointer(t)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in value):
        arr = (C.c_int64 * max(len(value), 1))(*value)
        keep.append(arr)
        a.type, a.count, a.ints = ATTR_INTS, len(value), arr
    elif isinstance(value, (list, tuple)):
        arr = (C.c_double * max(len(value), 1))(*[float(v) for v in value])
        keep.append(arr)
        a.type, a.count, a.floats = ATTR_FLOATS, len(value), arr
    elif isinstance(getattr(value, "handle", None), C.c_void_p):
        keep.append(value)
        a.type, a.graph = ATTR_GRAPH, value.handle
    else:
        raise TypeError(f"attribute {name}: cannot pass {type(value)}")
    return a


def read_c_stream(write):
    """Calls write(FILE*) on a temporary C stream and returns what it wrote
    (for tsr_plan_print_profile and tsr_plan_print_stacks)."""
    libc = C.CDLL(None)
    libc.tmpfile.restype = C.c_void_p
    libc.fflush.argtypes = [C.c_void_p]
    libc.rewind.argtypes = [C.c_void_p]
    libc.fread.argtypes = [C.c_void_p, C.c_size_t, C.c_size_t, C.c_void_p]
    libc.fread.restype = C.c_size_t
    libc.fclose.argtypes = [C.c_void_p]
    f = libc.tmpfile()
    if not f:
        raise OSError("tmpfile() failed")
    try:
        write(f)
        libc.fflush(f)
        libc.rewind(f)
        chunks, buf = [], C.create_string_buffer(65536)
        while True:
            n = libc.fread(buf, 1, len(buf), f)
            if n == 0:
                break
            chunks.append(buf.raw[:n])
        return b"".join(chunks).decode(errors="replace")
    finally:
        libc.fclose(f)

/* Tessera: a deep-learning compiler and runtime.
 *
 * Life cycle: load or build a graph, create a plan for a device, give the
 * plan concrete input shapes (tsr_plan_reshape), then run it as often as
 * needed with caller-owned buffers. Every fallible call returns a
 * tsr_status; on failure tsr_last_error() says what went wrong and where.
 *
 * Threads. Different objects may be used on different threads at once:
 * any number of graphs, plans (of the same graph or of different ones)
 * and trainers, one thread per object at a time. A graph that no thread
 * modifies may be read by several at once (e.g. tsr_plan_create from one
 * graph on every thread). tsr_last_error() is per thread. A plan used by
 * several threads at once is safe but runs one call at a time: see
 * tsr_plan_run. Each plan sets the OpenMP thread count (compile option
 * `threads`) of the thread that runs it only. The environment (TSR_*
 * variables) is read when graphs and plans are created: do not change it
 * while other threads use Tessera. */
#ifndef TESSERA_H
#define TESSERA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TSR_API marks the public API: libtessera.so is built with hidden
 * visibility and exports only the functions declared with it here and in
 * the other public headers (include/tessera/). */
#if defined(__GNUC__) || defined(__clang__)
#define TSR_API __attribute__((visibility("default")))
#else
#define TSR_API
#endif

#define TSR_VERSION_STRING "0.1.0"
#define TSR_MAX_RANK 8

typedef enum tsr_status {
    TSR_OK = 0,
    TSR_ERR_INVALID_ARGUMENT, /* a caller passed something unusable */
    TSR_ERR_PARSE,            /* a model or data file is malformed */
    TSR_ERR_UNSUPPORTED,      /* valid, but not something Tessera runs */
    TSR_ERR_SHAPE,            /* shapes do not fit together */
    TSR_ERR_DTYPE,            /* element types do not fit together */
    TSR_ERR_NOT_FOUND,        /* a name that does not exist */
    TSR_ERR_IO,               /* reading or writing a file failed */
    TSR_ERR_OUT_OF_MEMORY,
    TSR_ERR_INTERNAL /* a bug in Tessera: please report it */
} tsr_status;

/* The message of the last failure on this thread; never NULL. */
TSR_API const char *tsr_last_error(void);
TSR_API const char *tsr_status_name(tsr_status status);

/* Element types; the values are ONNX's TensorProto codes. */
typedef enum tsr_dtype {
    TSR_DTYPE_UNDEFINED = 0,
    TSR_FLOAT32 = 1,
    TSR_UINT8 = 2,
    TSR_INT8 = 3,
    TSR_INT32 = 6,
    TSR_INT64 = 7,
    TSR_BOOL = 9,
    TSR_FLOAT64 = 11
} tsr_dtype;

TSR_API size_t tsr_dtype_size(tsr_dtype dtype); /* 0 for unknown types */
TSR_API const char *tsr_dtype_name(tsr_dtype dtype);

/* A dense, C-ordered tensor that the caller owns. `memory` says where
 * `data` points: NULL (what a zero-initialised tensor holds) is host
 * memory; a device with memory of its own names its space ("testdev",
 * "cuda"), as tsr_device_alloc sets it. Only tsr_plan_run and the
 * tsr_device_* calls take tensors outside host memory (docs/hal.md). */
typedef struct tsr_tensor {
    tsr_dtype dtype;
    int rank;
    int64_t dims[TSR_MAX_RANK];
    void *data;
    const char *memory;
} tsr_tensor;

/* No tensor may take more than 2^62 bytes (shapes past that are errors
 * wherever Tessera meets them). numel is -1 for negative dims or a count
 * past 2^62; bytes is 0 for negative dims and SIZE_MAX past 2^62, which no
 * allocation satisfies. */
TSR_API int64_t tsr_tensor_numel(const tsr_tensor *t);
TSR_API size_t tsr_tensor_bytes(const tsr_tensor *t);

/* ---------------------------------------------------------------- graph */

typedef struct tsr_graph tsr_graph;

TSR_API tsr_status tsr_graph_load_onnx_file(const char *path, tsr_graph **graph_out);
/* base_dir is where external data files are looked up; NULL forbids them. */
TSR_API tsr_status tsr_graph_load_onnx_buffer(const void *data, size_t size, const char *base_dir,
                                              tsr_graph **graph_out);
TSR_API tsr_status tsr_graph_create(tsr_graph **graph_out);
TSR_API void tsr_graph_destroy(tsr_graph *graph);

/* Attributes of a node under construction. Lists point at caller memory
 * that only needs to live for the duration of tsr_graph_add_node. */
typedef enum tsr_attr_type {
    TSR_ATTR_INT = 1,
    TSR_ATTR_FLOAT,
    TSR_ATTR_STRING,
    TSR_ATTR_INTS,
    TSR_ATTR_FLOATS,
    TSR_ATTR_TENSOR,
    TSR_ATTR_GRAPH /* a sub-graph (If's branches), copied into the node */
} tsr_attr_type;

typedef struct tsr_attr {
    const char *name;
    tsr_attr_type type;
    int64_t i;
    double f;
    const char *s;
    size_t count; /* length of ints or floats */
    const int64_t *ints;
    const double *floats;
    const tsr_tensor *t;
    const tsr_graph *graph;
} tsr_attr;

#define TSR_ATTR_I(n, v) ((tsr_attr){.name = (n), .type = TSR_ATTR_INT, .i = (v)})
#define TSR_ATTR_F(n, v) ((tsr_attr){.name = (n), .type = TSR_ATTR_FLOAT, .f = (v)})
#define TSR_ATTR_S(n, v) ((tsr_attr){.name = (n), .type = TSR_ATTR_STRING, .s = (v)})
#define TSR_ATTR_INTS(n, p, c)                                                                   \
    ((tsr_attr){.name = (n), .type = TSR_ATTR_INTS, .ints = (p), .count = (c)})
#define TSR_ATTR_FLOATS(n, p, c)                                                                 \
    ((tsr_attr){.name = (n), .type = TSR_ATTR_FLOATS, .floats = (p), .count = (c)})
#define TSR_ATTR_T(n, p) ((tsr_attr){.name = (n), .type = TSR_ATTR_TENSOR, .t = (p)})

/* The version of ONNX's default domain that nodes added from now on follow
 * (the importer takes it from the model; default 17). Opsets 11 to 17. */
TSR_API tsr_status tsr_graph_set_opset(tsr_graph *graph, int opset);

/* Constant folding: a node whose inputs are all constants is computed
 * while the graph is built (and, for nodes that read parameters, when a
 * plan is made), unless its outputs, or its estimated FLOPs, pass `bytes`
 * plus the bytes its constant inputs and attributes hold. Such a node (a Range or
 * ConstantOfShape asking for gigabytes) becomes a step that plans run, so
 * loading a tiny model never costs much time or memory. -1: no limit.
 * Default 16 MiB, or TSR_FOLD_LIMIT (bytes) from the environment when the
 * graph is created, which is how the ONNX importer's limit is set. Plans
 * and clones keep the graph's limit. */
TSR_API tsr_status tsr_graph_set_fold_limit(tsr_graph *graph, int64_t bytes);

/* Graph inputs. A dim with dim_names[i] != NULL is symbolic (e.g. "batch");
 * its dims[i] is ignored. dim_names may be NULL when every dim is fixed. */
TSR_API tsr_status tsr_graph_add_input(tsr_graph *graph, const char *name, tsr_dtype dtype,
                                       int rank, const int64_t *dims, const char *const *dim_names);
/* A constant (weights, initializers); the data is copied. */
TSR_API tsr_status tsr_graph_add_constant(tsr_graph *graph, const char *name,
                                          const tsr_tensor *value);
/* A trainable constant (weights): like a constant, but never folded into
 * the constants computed from it, so gradients reach it and its value can
 * be updated. The ONNX importer makes float initializers parameters. */
TSR_API tsr_status tsr_graph_add_parameter(tsr_graph *graph, const char *name,
                                           const tsr_tensor *value);
/* A node of op `op_type` in `domain` ("" or "ai.onnx" for ONNX's own ops).
 * Inputs must already exist; an empty input name marks an omitted
 * optional input. Outputs are new values. node_name may be NULL. */
TSR_API tsr_status tsr_graph_add_node(tsr_graph *graph, const char *op_type, const char *domain,
                                      const char *node_name, int n_inputs,
                                      const char *const *inputs, int n_outputs,
                                      const char *const *outputs, int n_attrs,
                                      const tsr_attr *attrs);
TSR_API tsr_status tsr_graph_add_output(tsr_graph *graph, const char *name);

/* Description of a graph input or output. dims[i] is -1 where the size is
 * not known before run time; dim_names[i] names a symbolic dim, else NULL. */
typedef struct tsr_value_info {
    const char *name;
    tsr_dtype dtype;
    int rank; /* -1 when not known */
    int64_t dims[TSR_MAX_RANK];
    const char *dim_names[TSR_MAX_RANK];
} tsr_value_info;

TSR_API int tsr_graph_num_inputs(const tsr_graph *graph);
TSR_API int tsr_graph_num_outputs(const tsr_graph *graph);
TSR_API tsr_status tsr_graph_input_info(const tsr_graph *graph, int index,
                                        tsr_value_info *info_out);
TSR_API tsr_status tsr_graph_output_info(const tsr_graph *graph, int index,
                                         tsr_value_info *info_out);

/* The graph's nodes in execution order (nodes folded into constants at
 * load are gone): node `index` (0 .. tsr_graph_num_nodes() - 1) has the
 * name the model gave it (NULL when none) and an op type. */
TSR_API int tsr_graph_num_nodes(const tsr_graph *graph);
TSR_API tsr_status tsr_graph_node_info(const tsr_graph *graph, int index, const char **name_out,
                                       const char **op_type_out);

/* Summary of a graph, as `tessera info` prints it. */
typedef struct tsr_graph_stats {
    int n_nodes;
    int64_t n_parameters; /* elements of all floating-point constants */
    int n_op_types;
    const char *op_types[128]; /* op type names, most frequent first */
    int op_counts[128];
} tsr_graph_stats;

TSR_API tsr_status tsr_graph_get_stats(const tsr_graph *graph, tsr_graph_stats *stats_out);
/* Checks the graph's invariants; every load and build already ran it. */
TSR_API tsr_status tsr_graph_verify(const tsr_graph *graph);
/* One line per node: outputs, op, inputs, attributes, shapes. */
TSR_API tsr_status tsr_graph_print(const tsr_graph *graph, FILE *out);

/* ------------------------------------------------------------- autodiff */

/* Reverse-mode differentiation. Builds a new graph that computes, besides
 * every output of `graph` (first, in their order), the gradient of
 *     sum_k sum(outputs[k] * seed_k)
 * with respect to each value in `wrt` (graph inputs or parameters, float
 * only). The new graph has the inputs of `graph` followed by one input per
 * differentiated output, "<output>__seed", of that output's dtype and
 * shape (symbolic dims included), and after the forward outputs one output
 * per wrt value, "<wrt>__grad", of the wrt value's shape. (Where such a
 * name is taken already, "_1", "_2", ... is appended.) Parameters stay
 * parameters, so the result can be differentiated again (Hessian-vector
 * products, gradients of gradient norms) or trained.
 *
 * A wrt value that no differentiated output depends on gets a gradient of
 * zeros (not an error). Errors: names that do not exist, a wrt value that
 * is neither an input nor a parameter, integer outputs or wrt values, an
 * output given twice, and, naming the node, an op on the way from a wrt
 * value to an output that has no gradient rule. */
TSR_API tsr_status tsr_graph_gradient(const tsr_graph *graph, int n_outputs,
                                      const char *const *outputs, int n_wrt, const char *const *wrt,
                                      tsr_graph **grad_graph_out);

/* Splits `graph` in two for engines that run the forward and the backward
 * pass as separate calls (an autograd.Function around a graph from
 * tsr_graph_gradient): the first graph computes the first `n_first`
 * outputs of `graph` with only the nodes they need; the second computes
 * the other outputs with the remaining nodes, reading the values the first
 * computed instead of computing them again. The first graph's outputs are
 * those n_first outputs, then every value it computes that the second
 * reads (the saved values; the backward's activations), under their names
 * in `graph`. Each graph's inputs are the values it reads, does not
 * compute and that are no constants: inputs of `graph` first (in their
 * order; the second's include the seeds), then, in the second, the saved
 * values. Constants are shared, not copied. Errors: n_first outside 0 ..
 * the number of outputs, a saved value of unknown rank. */
TSR_API tsr_status tsr_graph_split(const tsr_graph *graph, int n_first, tsr_graph **first_out,
                                   tsr_graph **second_out);

/* ----------------------------------------------------------------- plan */

typedef struct tsr_plan tsr_plan;

typedef enum tsr_precision { TSR_PRECISION_FP32 = 0, TSR_PRECISION_BF16 } tsr_precision;

typedef struct tsr_compile_options {
    const char *device; /* "ref"; NULL picks the default device */
    int threads;        /* 0: all cores */
    int depth_first;    /* -1: the device's default, 0: off, 1: on */
    tsr_precision precision;
    int verbose; /* print the kernel each node got, and why others refused it, to stderr
                    (default: on when the environment sets TSR_VERBOSE=1) */
    int autotune; /* time each convolution's algorithms (direct, Winograd) at plan time and
                     keep the fastest within the accuracy guard, cached on disk
                     (docs/autotune.md). -1: the device's default (TSR_AUTOTUNE=0 or 1 in
                     the environment sets it), 0: off, 1: on */
    int inter_op; /* run independent steps side by side, one thread each, instead of one
                     after another on every thread, where steps are too small to split
                     (README, "Steps side by side"). -1: the default, chosen per
                     specialization by step size (TSR_INTER_OP=0 or 1 in the environment
                     sets it), 0: off, 1: on wherever it applies */
} tsr_compile_options;

TSR_API void tsr_compile_options_init(tsr_compile_options *options);
TSR_API const char *tsr_default_device(void);
/* The device names tsr_compile_options.device accepts, comma-separated
 * ("cpu, ref"). */
TSR_API const char *tsr_device_names(void);

/* The plan keeps its own copy of the graph: the graph may be destroyed. */
TSR_API tsr_status tsr_plan_create(const tsr_graph *graph, const tsr_compile_options *options,
                                   tsr_plan **plan_out);
TSR_API void tsr_plan_destroy(tsr_plan *plan);

/* Specializes the plan to the shapes of `inputs` (their data is not read).
 * Specializations are cached by shape, so switching back and forth is
 * cheap; past the cache's limits (tsr_plan_set_cache_limits) the least
 * recently used ones are dropped and rebuilt if their shape comes back. */
TSR_API tsr_status tsr_plan_reshape(tsr_plan *plan, int n_inputs, const tsr_tensor *inputs);
/* After reshape: the dtype and concrete shape of output `index`; a dim
 * that the data decides (a NonZero's count, a Reshape to a shape computed
 * from an input's values) is -1 (docs/dynamic_shapes.md). */
TSR_API tsr_status tsr_plan_output_desc(const tsr_plan *plan, int index, tsr_tensor *desc_out);

/* Values handed from one plan to another, such as the values the forward
 * half of tsr_graph_split saves for the backward half, can stay in the
 * layout their producer wrote (the cpu device's blocked [N, C/16, H, W, 16]
 * activations) instead of being reordered into the plain layout by the
 * first plan and back by the second. A layout is an opaque code; 0 is the
 * plain layout, the only one a caller may read or write element by
 * element.
 *
 * tsr_plan_keep_output_layouts lets each output o with keep[o] nonzero
 * leave in its producer's layout; it must come before the plan's first
 * reshape or run. After a reshape, tsr_plan_output_layout gives output
 * `index`'s layout code and the bytes its buffer must hold (more than its
 * plain size where a blocked layout pads C to whole blocks); an output
 * the plan cannot keep (in device memory, or of a graph whose shapes the
 * data decides) is plain. tsr_plan_set_input_layouts sets the layout
 * code of each input the following reshapes and runs feed (NULL: all
 * plain): a code that tsr_plan_output_layout reported, for a tensor of
 * that output's dtype and shape, from a plan of the same device.
 * Specializations are cached by input layouts as well as shapes. */
TSR_API tsr_status tsr_plan_keep_output_layouts(tsr_plan *plan, int n_outputs, const int *keep);
TSR_API tsr_status tsr_plan_output_layout(const tsr_plan *plan, int index, int *layout_out,
                                          size_t *bytes_out);
TSR_API tsr_status tsr_plan_set_input_layouts(tsr_plan *plan, int n_inputs, const int *layouts);
/* Runs on the shapes of `inputs` (reshaping first if they changed) and
 * writes every output into the caller's buffers, whose dtype and shape
 * must match tsr_plan_output_desc.
 *
 * Outputs with a -1 dim there are allocated by the plan: pass them with
 * data NULL (rank and dims are not read). The run sets their rank, dims
 * and data, which points into the plan's memory and stays valid until the
 * next call that uses the plan (reshape, run, set_cache_limits, destroy).
 *
 * One plan on several threads: tsr_plan_reshape, tsr_plan_run,
 * tsr_plan_set_profiling and tsr_plan_set_cache_limits hold the plan's
 * lock, so calls from different threads wait for one another and each
 * run is correct (its outputs are checked against the shapes of its own
 * inputs). They do not run in parallel: for that, give each thread its
 * own plan. The calls that describe the current specialization
 * (tsr_plan_output_desc, tsr_plan_get_stats, tsr_plan_node_backend,
 * tsr_plan_print_stacks, tsr_plan_print_profile) see whatever shape the
 * last reshape or run on any thread chose (and another thread's reshape
 * may evict the one they read): call them only while no other thread
 * uses the plan. */
TSR_API tsr_status tsr_plan_run(tsr_plan *plan, int n_inputs, const tsr_tensor *inputs,
                                int n_outputs, tsr_tensor *outputs);

/* Device-resident buffers, for callers that keep data on a device with
 * memory of its own (docs/hal.md). tsr_plan_run takes any input and
 * output in that memory (tsr_tensor.memory), reading and writing it there
 * without a copy through the host; host and device tensors mix freely.
 * A tensor whose memory the plan's device does not use, or whose data is
 * not where its memory says, is refused naming the tensor. Work the
 * caller issued on the device must be complete before the run; the
 * outputs are when it returns. Graphs whose shapes the data decides take
 * host tensors only.
 *
 * tsr_device_alloc allocates data for `tensor`'s dtype and dims in the
 * memory of the plan's device and sets its memory; TSR_ERR_UNSUPPORTED on
 * a device that computes in host memory. tsr_device_free frees it (with a
 * plan of the same device) and clears data and memory. tsr_device_copy
 * copies src into dst (the same dtype and shape), each in host memory or
 * the plan's device's, and returns once the copy is complete. */
TSR_API tsr_status tsr_device_alloc(tsr_plan *plan, tsr_tensor *tensor);
TSR_API tsr_status tsr_device_free(tsr_plan *plan, tsr_tensor *tensor);
TSR_API tsr_status tsr_device_copy(tsr_plan *plan, tsr_tensor *dst, const tsr_tensor *src);

typedef struct tsr_plan_stats {
    size_t arena_bytes;    /* shared memory of all intermediates */
    size_t constant_bytes; /* weights and folded constants */
    double flops;          /* estimated floating-point operations per run */
    int n_steps;           /* kernel calls per run */
    int n_reorders;        /* layout conversions per run */
    int n_stacks;          /* depth-first stacks (see tsr_plan_print_stacks) */
    int n_stack_ops;       /* kernel calls run inside them, tile by tile */
    /* The device's backends, best first, and the kernel calls per run each
     * makes (stack members included; they add up to n_steps). */
    int n_backends;
    const char *backend_names[8];
    int backend_steps[8];
    /* The plan's cache of specializations (see tsr_plan_set_cache_limits):
     * how many it holds, their bytes as counted against its limit, and
     * how many were built and evicted since the plan was created. */
    int n_cached_specs;
    size_t cached_bytes;
    int64_t n_builds;
    int64_t n_evictions;
    /* Devices with memory of their own (see docs/hal.md): copies between
     * the host and the device per run, and the constants uploaded to the
     * device once per plan (counted apart from constant_bytes). */
    int n_transfers;
    size_t uploaded_bytes;
    /* 1: the specialization runs its steps side by side, one thread each
     * (tsr_compile_options.inter_op). */
    int side_by_side;
} tsr_plan_stats;

TSR_API tsr_status tsr_plan_get_stats(const tsr_plan *plan, tsr_plan_stats *stats_out);

/* The cache of specializations: a plan keeps at most `max_specs` (>= 1)
 * of them, holding at most `max_bytes` in all (SIZE_MAX: no byte limit),
 * and drops the least recently used first, at once and whenever a reshape
 * or run adds one. A specialization counts its arena, the constants it
 * folded at its shapes (weights shared with the plan count for none) and
 * its tables; memory that backends keep behind their handles (oneDNN
 * primitives) is not counted. The current specialization is never
 * dropped: one larger than max_bytes still runs, alone in the cache. While
 * a new one is built the others stay, so memory peaks at the limit plus
 * the new one. Defaults: TSR_PLAN_CACHE_MAX_SPECS, TSR_PLAN_CACHE_MAX_BYTES
 * (enough for a model run at a handful of batch sizes, or in MD at the
 * few capacity classes atom and edge counts move between; an input whose
 * size changes at every call stays bounded). */
#define TSR_PLAN_CACHE_MAX_SPECS 16
#define TSR_PLAN_CACHE_MAX_BYTES ((size_t)512 << 20)
TSR_API tsr_status tsr_plan_set_cache_limits(tsr_plan *plan, int max_specs, size_t max_bytes);

/* The backend ("ref", "cpu", "dnnl", ...) that runs the node named
 * `node_name` in the current specialization. TSR_ERR_NOT_FOUND when no
 * node of that name runs: a name the graph never had, or a node the
 * optimization passes removed or fused into another (a Relu fused into
 * the convolution before it runs as that convolution's node). */
TSR_API tsr_status tsr_plan_node_backend(const tsr_plan *plan, const char *node_name,
                                         const char **backend_out);
/* The depth-first stacks of the current specialization: which ops formed
 * each, and its tiles (compile option depth_first, on by default on the
 * cpu device: runs of memory-bound ops computed tile by tile in cache,
 * their intermediates never stored whole). */
TSR_API tsr_status tsr_plan_print_stacks(const tsr_plan *plan, FILE *out);

/* Per-step timing. While on, every run adds each step's time; the report
 * lists each kernel call, layout reorder and copy of the current
 * specialization with its mean milliseconds per run. */
TSR_API tsr_status tsr_plan_set_profiling(tsr_plan *plan, int enabled);
TSR_API tsr_status tsr_plan_print_profile(const tsr_plan *plan, FILE *out);

/* ------------------------------------------------------------------ ops */

/* The op table: every op Tessera knows, for tools and tests that cover
 * them all. */
typedef struct tsr_op_info {
    const char *name;
    const char *domain; /* "" for ONNX's default domain */
    int min_inputs, max_inputs;
    int min_outputs, max_outputs;
    int has_gradient; /* whether tsr_graph_gradient differentiates through it */
} tsr_op_info;

TSR_API int tsr_op_table_size(void);
/* Entry `index` (0 .. tsr_op_table_size() - 1) of the op table. */
TSR_API tsr_status tsr_op_table_entry(int index, tsr_op_info *info_out);

/* ------------------------------------------------------------------ npy */

/* Reads a .npy file (float32, float64 or int64, C order) into a tensor
 * whose data the caller frees with free(). */
TSR_API tsr_status tsr_npy_read(const char *path, tsr_tensor *tensor_out);
/* The same from the bytes of a .npy file in memory (e.g. a member of an
 * .npz archive); `name` names it in error messages. */
TSR_API tsr_status tsr_npy_read_buffer(const void *data, size_t size, const char *name,
                                       tsr_tensor *tensor_out);
/* Writes atomically: a temporary file beside `path`, then a rename. */
TSR_API tsr_status tsr_npy_write(const char *path, const tsr_tensor *tensor);

#ifdef __cplusplus
}
#endif

#include "tessera/train.h" /* training: trainer, losses, optimizers */
#endif

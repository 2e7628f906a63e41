/* The oneDNN backend's shared pieces: one engine and stream for the
 * process, status translation, and the per-node state every primitive
 * (convolution, matmul) is run through. */
#ifndef TSR_BACKENDS_CPU_DNNL_INTERNAL_H
#define TSR_BACKENDS_CPU_DNNL_INTERNAL_H

#include "backends/cpu/cpu.h"

#include <dnnl.h>

/* The CPU engine, created once, and the calling thread's stream (each
 * thread gets its own, so plans may run concurrently on different threads). */
tsr_status tsr_dnnl_engine(dnnl_engine_t *engine_out, dnnl_stream_t *stream_out);

/* The calling thread's scratchpad, grown to at least `bytes` (NULL when
 * there is no room); kept for the thread's next primitive, freed when it
 * exits. */
void *tsr_dnnl_thread_scratchpad(size_t bytes);

/* TSR_OK for dnnl_success; else records "oneDNN <what>: <status>" with a
 * status of TSR_ERR_UNSUPPORTED for unimplemented, TSR_ERR_INTERNAL
 * otherwise. */
tsr_status tsr_dnnl_check(dnnl_status_t status, const char *what);
#define TSR_DNNL_CHECK(call, what) TSR_CHECK(tsr_dnnl_check((call), (what)))

/* The name of the implementation oneDNN chose for pd ("" if it says none). */
const char *tsr_dnnl_impl_name(const_dnnl_primitive_desc_t pd);
/* A jit or gemm kernel, not oneDNN's reference loops. */
bool tsr_dnnl_impl_is_fast(const_dnnl_primitive_desc_t pd);

/* A plain (row-major) memory descriptor of `rank` dims. */
tsr_status tsr_dnnl_plain_md(dnnl_memory_desc_t *md, int rank, const int64_t *dims,
                             dnnl_data_type_t type);
/* The descriptor of a rank-4 activation in a tsr_layout. */
tsr_status tsr_dnnl_layout_md(dnnl_memory_desc_t *md, const int64_t *dims, tsr_layout layout,
                              dnnl_data_type_t type);

/* Where a memory's buffer comes from at each run. */
typedef enum {
    TSR_DNNL_FROM_INPUT,  /* the kernel's input `index` */
    TSR_DNNL_FROM_OUTPUT, /* the kernel's output `index` */
    TSR_DNNL_OWNED,       /* a buffer this exec owns (prepacked weights, scratchpad) */
    TSR_DNNL_FIXED,       /* a buffer that something else owns and keeps */
    TSR_DNNL_THREAD       /* the running thread's scratchpad, shared by every primitive it runs */
} tsr_dnnl_source;

#define TSR_DNNL_MAX_ARGS 12

/* One primitive with its arguments: memories whose handles are set from
 * the kernel's tensors at each run, or point at buffers owned here. */
typedef struct tsr_dnnl_exec {
    dnnl_primitive_t primitive;
    const char *what; /* for error messages: "convolution", "matmul" */
    int n_args;
    dnnl_exec_arg_t args[TSR_DNNL_MAX_ARGS];
    tsr_dnnl_source sources[TSR_DNNL_MAX_ARGS];
    int indices[TSR_DNNL_MAX_ARGS];
    void *owned[TSR_DNNL_MAX_ARGS]; /* aligned buffers, freed with the state */
    /* The handle each memory holds: setting one costs oneDNN a pass that
     * zeroes a blocked tensor's padding, so unchanged ones are kept. */
    void *current[TSR_DNNL_MAX_ARGS];
    /* Set before tsr_dnnl_exec_finish: the scratchpad is the running
     * thread's (TSR_DNNL_THREAD), of scratch_bytes, not owned per exec. */
    bool thread_scratchpad;
    size_t scratch_bytes;
    /* oneDNN's name for the implementation it chose ("jit:avx2",
     * "gemm:jit", "ref:any"), for --verbose and profiles. */
    char impl[32];
} tsr_dnnl_exec;

/* Adds argument `arg` described by `md`. OWNED arguments get a zeroed
 * buffer of the descriptor's size, returned in *data if data is not NULL;
 * FIXED ones use *data. */
tsr_status tsr_dnnl_exec_arg(tsr_dnnl_exec *e, int arg, const dnnl_memory_desc_t *md,
                             tsr_dnnl_source source, int index, void **data);
/* Creates the primitive from `pd` (which it takes over) and a user
 * scratchpad owned by the exec, or the running thread's one when
 * e->thread_scratchpad is set. */
tsr_status tsr_dnnl_exec_finish(tsr_dnnl_exec *e, dnnl_primitive_desc_t pd, const char *what);
/* Sets the handles from the kernel's tensors and executes. */
tsr_status tsr_dnnl_exec_run(tsr_dnnl_exec *e, const tsr_kernel_ctx *k);
void tsr_dnnl_exec_release(tsr_dnnl_exec *e);

/* Copies `src` (plain, f32) into a new owned buffer laid out as `dst_md`
 * (the format a primitive chose for its weights, maybe bf16), scaled by
 * `scale`. */
tsr_status tsr_dnnl_pack(tsr_dnnl_exec *e, int arg, const dnnl_memory_desc_t *src_md,
                         const void *src, const dnnl_memory_desc_t *dst_md, float scale);

/* A per-run reorder of input `index` (f32, laid out as f32_md) into a
 * buffer the exec owns, laid out as bf16_md: bf16 activations, or weights
 * fed at run time in the format (f32 or bf16) a primitive chose. The main
 * primitive then reads that buffer. */
typedef struct tsr_dnnl_convert {
    tsr_dnnl_exec exec;
    bool active;
} tsr_dnnl_convert;

tsr_status tsr_dnnl_convert_init(tsr_dnnl_convert *c, const dnnl_memory_desc_t *f32_md,
                                 const dnnl_memory_desc_t *bf16_md, int index, void **bf16_out);

/* Whether a node should compute in bf16: asked for, and the CPU has it. */
bool tsr_dnnl_use_bf16(const tsr_prepare_ctx *ctx);

/* The ops: each decides support and layouts and prepares its state,
 * a struct whose first member is a tsr_dnnl_kind (so that release can
 * tell them apart). */
typedef enum {
    TSR_DNNL_KIND_MATMUL,
    TSR_DNNL_KIND_CONV,
    TSR_DNNL_KIND_CONV_BWD,
    TSR_DNNL_KIND_DECONV,
    TSR_DNNL_KIND_RNN
} tsr_dnnl_kind;

bool tsr_dnnl_conv_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size);
void tsr_dnnl_conv_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced);
tsr_status tsr_dnnl_conv_prepare(const tsr_prepare_ctx *ctx, void **state_out);
tsr_status tsr_dnnl_conv_run(void *state, const tsr_kernel_ctx *k);
void tsr_dnnl_conv_release(void *state);
const char *tsr_dnnl_conv_kernel_name(const void *state);
bool tsr_dnnl_conv_flushes_nan(const void *state);
/* Depth-first stacks: a convolution computing output rows of one output
 * channel block from its whole input, opening a stack. */
bool tsr_dnnl_conv_band_info(const void *state, tsr_band_info *info_out);
tsr_status tsr_dnnl_conv_run_band(const void *state, const tsr_band_call *call);

bool tsr_dnnl_matmul_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size);
tsr_status tsr_dnnl_matmul_prepare(const tsr_prepare_ctx *ctx, void **state_out);
tsr_status tsr_dnnl_matmul_run(void *state, const tsr_kernel_ctx *k);
void tsr_dnnl_matmul_release(void *state);
const char *tsr_dnnl_matmul_kernel_name(const void *state);

/* ai.tessera.ConvGradInput and ConvGradFilter, all operands plain. */
bool tsr_dnnl_conv_bwd_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size);
void tsr_dnnl_conv_bwd_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                               uint8_t *wanted, uint8_t *produced);
tsr_status tsr_dnnl_conv_bwd_prepare(const tsr_prepare_ctx *ctx, void **state_out);
tsr_status tsr_dnnl_conv_bwd_run(void *state, const tsr_kernel_ctx *k);
void tsr_dnnl_conv_bwd_release(void *state);
const char *tsr_dnnl_conv_bwd_kernel_name(const void *state);

/* ConvTranspose, 2-D float32 (dnnl_deconv.c). */
bool tsr_dnnl_deconv_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size);
void tsr_dnnl_deconv_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                             uint8_t *wanted, uint8_t *produced);
tsr_status tsr_dnnl_deconv_prepare(const tsr_prepare_ctx *ctx, void **state_out);
tsr_status tsr_dnnl_deconv_run(void *state, const tsr_kernel_ctx *k);
void tsr_dnnl_deconv_release(void *state);
const char *tsr_dnnl_deconv_kernel_name(const void *state);

/* LSTM, GRU and RNN nodes that stay whole (rnn.h), float32 (dnnl_rnn.c). */
bool tsr_dnnl_rnn_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size);
tsr_status tsr_dnnl_rnn_prepare(const tsr_prepare_ctx *ctx, void **state_out);
tsr_status tsr_dnnl_rnn_run(void *state, const tsr_kernel_ctx *k);
void tsr_dnnl_rnn_release(void *state);
const char *tsr_dnnl_rnn_kernel_name(const void *state);

#endif

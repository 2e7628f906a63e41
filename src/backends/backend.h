/* The hardware abstraction layer: a backend is this table and nothing
 * else. A device is an ordered list of backends tried per node, ending in
 * the reference backend. */
#ifndef TSR_BACKENDS_BACKEND_H
#define TSR_BACKENDS_BACKEND_H

#include "ops/op.h"

/* A memory space: where a backend's buffers live and the hooks that move
 * data into and out of it. Backends of one space share buffers; where a
 * value crosses spaces the plan inserts a transfer step. Every hook takes
 * the space's device context, created once per plan: what the space's
 * backends need at prepare and run time (for CUDA: the context, a stream,
 * library handles). Host memory (tsr_host_memory) has none. */
typedef struct tsr_memory_space {
    const char *name; /* "host", "testdev", ... */
    /* NULL: the space needs no context (its hooks get NULL). */
    tsr_status (*context_create)(void **ctx_out);
    void (*context_destroy)(void *ctx);
    /* NULL with the message recorded by tsr_error on failure. */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *ptr);
    tsr_status (*copy_to_host)(void *ctx, void *host_dst, const void *src, size_t bytes);
    tsr_status (*copy_from_host)(void *ctx, void *dst, const void *host_src, size_t bytes);
    tsr_status (*copy)(void *ctx, void *dst, const void *src, size_t bytes); /* within the space */
    /* Waits until every copy and kernel issued so far has completed. */
    tsr_status (*synchronize)(void *ctx);
    /* Whether [ptr, ptr + bytes) is memory of this space (as far as the
     * space can tell: within one allocation where it keeps them), so
     * that a caller's tensor in the wrong space is refused, not run.
     * NULL: host memory, anything no device space holds. */
    bool (*holds)(void *ctx, const void *ptr, size_t bytes);
} tsr_memory_space;

extern const tsr_memory_space tsr_host_memory;

/* What a backend knows when it prepares a node at plan time. */
typedef struct tsr_prepare_ctx {
    const tsr_graph *graph;
    const tsr_node *node;
    void *device; /* the device context of the backend's memory space */
    const uint8_t *input_layouts; /* the layouts the node's kernel will see */
    const uint8_t *output_layouts;
    int threads;
    tsr_precision precision;
    bool autotune; /* kernels with several algorithms may time them (compile option autotune) */
    bool verbose;
} tsr_prepare_ctx;

/* Depth-first stacks: how a node computed band by band maps its output
 * rows to input rows. Output rows [r0, r1) of one image's channel block
 * read, from each streamed input, rows [r0 * stride - pad,
 * (r1 - 1) * stride - pad + extent) clipped to the input, in the same
 * channel block (Concat: in the block it routes the output block to).
 * A node that computes every block in one call (a convolution) gets
 * those rows of every block of its streamed inputs; a stack holding one
 * runs tiles of all channels. */
typedef struct tsr_band_info {
    int64_t stride, pad, extent;
    unsigned streamed;   /* bit i: input i is read band by band */
    bool routes_blocks;  /* Concat along channels: output blocks are the inputs' blocks in order */
    bool all_blocks;     /* one call computes every block */
    bool mixes_channels; /* every output block reads every input block (compute-bound) */
} tsr_band_info;

/* Rows of channel block planes: `data` holds row `row0` onward of the
 * first block, rows `pitch` floats apart (width x block lanes); the next
 * block's plane starts `plane` floats later (calls of a channel-mixing
 * node, which see every block; plane == (rows held) x pitch: the band is
 * one dense tensor). */
typedef struct tsr_band {
    float *data;
    int64_t row0;
    int64_t plane;
} tsr_band;

/* One band of one node: output rows [r0, r1) of channel block cb of
 * image n (a node computing every block: of all of them, cb 0). Streamed
 * inputs come as bands of the block they are read in (Concat: only the
 * input holding the block, the others NULL; a node computing every block:
 * of all blocks); the others as their whole tensor (row0 0). */
typedef struct tsr_band_call {
    int64_t n, cb, r0, r1;
    tsr_band in[TSR_MAX_NODE_IO];
    tsr_band out;
} tsr_band_call;

typedef struct tsr_backend {
    const char *name;
    /* Whether this backend runs `node` at its concrete shapes; if not,
     * writes the reason into `why`. */
    bool (*supports)(const tsr_graph *g, const tsr_node *node, char *why, size_t why_size);
    /* Given the layout each input is available in (tsr_layout values),
     * the layout the node wants each input in (the planner reorders where
     * they differ) and the layout it writes each output in. NULL: plain
     * everywhere. Omitted inputs have entries too; ignore them. */
    void (*layouts)(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                    uint8_t *wanted, uint8_t *produced);
    /* The input whose buffer output 0 may take over when the node is that
     * input's last reader (an accumulating kernel: oneDNN's sum post-op),
     * or -1; that input holds as many bytes as output 0. NULL: never. */
    int (*inplace_input)(const tsr_graph *g, const tsr_node *node);
    /* Per-node state built once at plan time (NULL if none is needed). */
    tsr_status (*prepare)(const struct tsr_prepare_ctx *ctx, void **state_out);
    void (*release)(void *state);
    /* The kernel a prepared node got where the backend chooses among
     * several (oneDNN's implementation: "jit:avx2", "gemm:jit", "ref:any"),
     * for --verbose and profiles. NULL, or a NULL or empty name: nothing
     * to add to the backend's name. */
    const char *(*kernel_name)(const void *state);
    tsr_status (*run)(void *state, const tsr_kernel_ctx *ctx);
    /* Converts src (logical shape and dtype as dst's) between layouts;
     * needed by any backend whose layouts() asks for non-plain ones. */
    tsr_status (*reorder)(const tsr_tensor *src, tsr_layout from, tsr_tensor *dst, tsr_layout to,
                          int threads);
    /* Depth-first stacks (NULL: the backend computes no node by bands).
     * band_info says whether the prepared node runs by bands and how;
     * run_band computes one band, on the calling thread (maybe not the
     * one that called tsr_plan_run): on failure it records the message
     * with tsr_error on that thread and returns the status, which the
     * stack carries out with the node named. */
    bool (*band_info)(const void *state, tsr_band_info *info_out);
    tsr_status (*run_band)(const void *state, const tsr_band_call *call);
    /* Whether the prepared kernel can turn a NaN it reads into a finite
     * value (oneDNN's fused ReLU and clip take max and min, which drop
     * NaN); the plan then refuses NaN in the inputs that reach it rather
     * than answer as if they were numbers. NULL: never. */
    bool (*flushes_nan)(const void *state);
    /* Where the buffers this backend's kernels read and write live. */
    const tsr_memory_space *memory;
} tsr_backend;

extern const tsr_backend tsr_backend_ref;

/* The backends of `device`, best first, NULL-terminated; NULL if unknown. */
const tsr_backend *const *tsr_device_backends(const char *device);
/* Whether plans for `device` run the optimization passes (the reference
 * device runs graphs as they are: it is the oracle). */
bool tsr_device_optimizes(const char *device);
/* Whether `device` computes in `precision`; if not, `why` says so. */
bool tsr_device_supports_precision(const char *device, tsr_precision precision, char *why,
                                   size_t why_size);

#endif

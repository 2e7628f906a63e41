/* The cpu backend's pieces: each op family (kernels_eltwise.c,
 * kernels_pool.c, kernels_misc.c) gives the backend table in kernels.c
 * what it needs per node: whether it runs it, in which layouts, and the
 * per-node state built at plan time. Tiles are picked per ISA at prepare. */
#ifndef TSR_BACKENDS_CPU_KERNELS_INTERNAL_H
#define TSR_BACKENDS_CPU_KERNELS_INTERNAL_H

#include "backends/cpu/cpu.h"

#include <stdio.h>

typedef struct tsr_cpu_state tsr_cpu_state;
typedef tsr_status (*tsr_cpu_run_fn)(const tsr_cpu_state *s, const tsr_kernel_ctx *k);
typedef void (*tsr_cpu_band_fn)(const tsr_cpu_state *s, const tsr_band_call *call);

/* What prepare leaves for run: the kernel, the tile variant it picked and
 * op-specific data (freed with free()); for nodes a depth-first stack can
 * hold, the band kernel and how its rows map (band NULL: none). */
struct tsr_cpu_state {
    tsr_cpu_run_fn run;
    tsr_isa isa;
    void *data;
    tsr_cpu_band_fn band;
    tsr_band_info band_info;
    int64_t fail_image; /* TSR_TEST_FAIL_BAND (kernels.c): the image whose bands fail, else -1 */
};

/* A rank-4 tensor's plane per (image, channel block) in a band kernel:
 * plain layouts have one channel per block. */
typedef struct tsr_cpu_planes {
    int64_t pitch; /* floats per row: width x block */
    int64_t channels, cbs;
    int block;
    int pad_from; /* first padded lane of the last block; == block when none */
} tsr_cpu_planes;

/* The planes of `v` in `layout`; false unless v is rank 4. */
bool tsr_cpu_planes_of(const tsr_value *v, uint8_t layout, tsr_cpu_planes *p);
/* The element-wise band info: row r of the output reads row r of the
 * inputs in `streamed`. */
tsr_band_info tsr_cpu_pointwise_band(unsigned streamed);

/* One op family's entry for one op. */
typedef struct tsr_cpu_op {
    const tsr_op_def *op;
    bool (*supports)(const tsr_graph *g, const tsr_node *node, char *why, size_t why_size);
    /* NULL: the op's main input (0) keeps the blocked layout it arrives
     * in, every other input is plain, the outputs follow input 0. */
    void (*layouts)(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                    uint8_t *wanted, uint8_t *produced);
    tsr_status (*prepare)(const tsr_prepare_ctx *ctx, tsr_cpu_state *state);
    /* Whether the family has SVE tiles; without them an SVE CPU runs its
     * NEON ones (docs/arm64.md). */
    bool sve;
} tsr_cpu_op;

extern const tsr_cpu_op tsr_cpu_eltwise_ops[];
extern const tsr_cpu_op tsr_cpu_pool_ops[];
extern const tsr_cpu_op tsr_cpu_misc_ops[];
extern const tsr_cpu_op tsr_cpu_dpp_ops[];
extern const tsr_cpu_op tsr_cpu_resize_ops[];
extern const tsr_cpu_op tsr_cpu_ict_ops[];
extern const tsr_cpu_op tsr_cpu_ict_edge_ops[];
extern const tsr_cpu_op tsr_cpu_gemm_ops[];
/* Whether node is a Gemm the float64 kernel runs by accumulating onto C
 * (kernels_gemm.c), so that its output may take over C's buffer. */
bool tsr_cpu_gemm_accumulates(const tsr_graph *g, const tsr_node *node);
extern const tsr_cpu_op tsr_cpu_train_ops[];
extern const tsr_cpu_op tsr_cpu_reduce_ops[];

/* Helpers shared by the families. */
static inline const tsr_value *tsr_cpu_input(const tsr_graph *g, const tsr_node *n, int i)
{
    return i < n->n_inputs && n->inputs[i] >= 0 ? &g->values[n->inputs[i]] : NULL;
}
static inline const tsr_value *tsr_cpu_output(const tsr_graph *g, const tsr_node *n, int o)
{
    return &g->values[n->outputs[o]];
}
/* Refuses anything but float32 input `i`, naming who runs it instead. */
bool tsr_cpu_require_f32(const tsr_graph *g, const tsr_node *n, int i, char *why, size_t size);
/* The blocked layout to keep for a value that arrives in `available`:
 * that layout when it is blocked and the value is a rank-4 tensor, else
 * plain. */
tsr_layout tsr_cpu_keep_layout(const tsr_value *v, uint8_t available);
/* The layouts of an op that reads and writes plain memory only (row-wise
 * ops, whose rows a blocked layout would interleave). */
void tsr_cpu_plain_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced);
/* Threads worth starting for `work` elements of streaming work. */
int tsr_cpu_threads_for(int threads, int64_t work);
/* The tile variant for data in `layout`: blocks narrower than the ISA's
 * vectors use the narrower ISA that matches them. */
tsr_isa tsr_cpu_isa_for_block(tsr_isa isa, int block);

/* reorder.c: plain <-> nChw8c <-> nChw16c for rank-4 tensors of 4- or
 * 8-byte elements, zero-filling the lanes past C. */
tsr_status tsr_cpu_reorder(const tsr_tensor *src, tsr_layout from, tsr_tensor *dst, tsr_layout to,
                           int threads);

#endif

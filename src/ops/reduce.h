/* Softmax and LogSoftmax's geometry (reduce.c), shared with the backends'
 * kernels, the reduced axes of a node, for the passes and kernels, and the
 * runs a reduction walks. */
#ifndef TSR_OPS_REDUCE_H
#define TSR_OPS_REDUCE_H

#include "ops/op.h"

/* The node's input of `rank` dims seen as [outer, n, inner]: softmax over
 * n, values of one row `inner` apart (before opset 13 the whole trailing
 * block from the axis on is one contiguous row, inner = 1). */
tsr_status tsr_softmax_geometry(const tsr_node *node, int rank, const int64_t *dims, int64_t *outer,
                                int64_t *n, int64_t *inner);

/* Which axes of its input reduction node n (ReduceMean, ReduceSum, ...)
 * reduces, from its axes attribute or a constant axes input; false when the
 * axes are known only at run time or the node is malformed. */
bool tsr_reduce_graph_mask(const tsr_graph *g, const tsr_node *n, bool mask[TSR_MAX_RANK]);

/* Input dims split into runs of kept and reduced axes, innermost first;
 * adjacent axes of the same kind merge into one run, size-1 axes vanish.
 * Shared by the reduction kernels of every backend. */
typedef struct tsr_reduce_runs {
    int n_kept, n_red;
    int64_t kept_size[TSR_MAX_RANK], kept_stride[TSR_MAX_RANK];
    int64_t red_size[TSR_MAX_RANK], red_stride[TSR_MAX_RANK];
    int64_t out_count, red_count;
} tsr_reduce_runs;

void tsr_reduce_runs_of(int rank, const int64_t *dims, const bool *mask, tsr_reduce_runs *r);

#endif

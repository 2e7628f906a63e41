/* Optimization passes over the graph IR. Each pass returns whether it
 * changed the graph and changes nothing when run a second time. They keep
 * the names of graph inputs and outputs, never write constant data in
 * place (a plan's specialized graph borrows its constants) and leave
 * values they orphan to tsr_graph_remove_dead. Run on inference graphs:
 * they drop what only training needs (Dropout) and fold constants that a
 * training step would update. */
#ifndef TSR_PASSES_PASSES_H
#define TSR_PASSES_PASSES_H

#include "ir/graph.h"

/* Removes exact no-ops: Identity, inference-mode Dropout whose mask
 * nobody reads, Cast to the same dtype, Pad by zero, Clip without bounds,
 * Transpose by the identity permutation, and shape ops (Reshape, Flatten,
 * Squeeze, Unsqueeze, Expand) whose output shape is their input shape. */
bool tsr_pass_remove_identities(tsr_graph *g);
/* Folds an inference BatchNormalization with constant statistics into the
 * Conv (or FusedConv without activation or Z) whose output only it reads:
 * new, graph-owned weights and bias replace the old ones. */
bool tsr_pass_fold_batchnorm(tsr_graph *g);
/* Turns Conv, then an Add of a same-shaped tensor (the residual), then an
 * activation into one FusedConv, for each of those steps that is there. */
bool tsr_pass_fuse_conv(tsr_graph *g);
/* Turns a layer normalization written out op by op (ReduceMean, Sub, Pow,
 * ReduceMean, Add, Sqrt, Div, Mul by the scale, Add of the bias: torch's
 * export below opset 17) into one LayerNormalization. */
bool tsr_pass_fuse_layernorm(tsr_graph *g);
/* Turns Mul(x, Sigmoid(x)), SiLU as torch exports it, into one
 * ai.tessera::Silu. */
bool tsr_pass_fuse_silu(tsr_graph *g);
/* Turns Add(MatMul(A, B), C) of two-dimensional A and B into Gemm(A, B,
 * C), when nothing else reads the product and C broadcasts to it (in
 * float64: has its shape). */
bool tsr_pass_fuse_gemm(tsr_graph *g);
/* Drops the kernel taps of a Conv or FusedConv with constant W that read
 * only padding at the graph's static input sizes (a dilated 3x3 whose
 * off-centre taps all fall in the padding becomes a 1x1), when the
 * padding left is not negative. */
bool tsr_pass_trim_conv_taps(tsr_graph *g);

/* For the passes: fuse_one(g, n) at every node n, again at the same index
 * after it fused (the fused node moved on or was removed, and the node now
 * there is new to it); whether any did. */
bool tsr_pass_fuse_each(tsr_graph *g, bool (*fuse_one)(tsr_graph *g, int n));

/* Runs the passes above to a fixed point, then removes dead code. In
 * debug builds the verifier checks the graph after each pass and a
 * failure becomes TSR_ERR_INTERNAL naming the pass. */
tsr_status tsr_passes_run(tsr_graph *g);

#endif

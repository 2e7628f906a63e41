/* Conv's pieces that ops built around a convolution reuse (FusedConv in
 * fused.c): they read inputs X, W and optional B at indices 0 to 2 and the
 * node's Conv attributes, and ignore any further inputs. */
#ifndef TSR_OPS_CONV_H
#define TSR_OPS_CONV_H

#include "ops/op.h"
#include "ops/window.h"

/* The input checks Conv and ConvTranspose share: W given, X, W and B of
 * one float dtype, group >= 1, and X's rank (W's while X's is unknown; -1
 * when neither is known) that of (N, C, 1 to 3 spatial dims), W's the same. */
tsr_status tsr_conv_infer_inputs(tsr_infer_ctx *c, int64_t *group, int *rank);
tsr_status tsr_conv_infer(tsr_infer_ctx *c);
tsr_status tsr_conv_ref(const tsr_kernel_ctx *k);
double tsr_conv_flops(const tsr_infer_ctx *c);

/* ConvGradInput's kernel over a window already computed: win's in and
 * out are dX's and dY's spatial dims, pad_begin is read, pad_end is not
 * (it may be negative). ConvTranspose runs on it. */
tsr_status tsr_conv_grad_input_window(const tsr_window *win, int64_t group, const tsr_tensor *dy,
                                      const tsr_tensor *wt, tsr_tensor *dx, int threads);

/* A ConvTranspose node's geometry as the Conv it transposes: `in` holds
 * Y's spatial sizes (TSR_DIM_UNKNOWN where they are not known yet), out
 * X's, pad_begin and pad_end that Conv's (pad_end negative where
 * output_padding or output_shape asks for positions the kernel never
 * reaches). `x` holds X's spatial sizes, `kernel` W's. *pads_known is
 * false where the pads depend on sizes not known yet (output_shape with an
 * unknown X or kernel). */
tsr_status tsr_conv_transpose_window(const tsr_node *node, int n, const int64_t *x,
                                     const int64_t *kernel, tsr_window *w, bool *pads_known);
/* The pads of a Conv (both >= 0) whose output over Y has X's size: the
 * window's, pad_end raised to 0 where that keeps the output size. False
 * when no such pads exist (Y reaches a stride or more past the kernel). */
bool tsr_conv_transpose_conv_pads(const tsr_window *w, int64_t *pads);

#endif

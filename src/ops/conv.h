/* Conv's pieces that ops built around a convolution reuse (FusedConv in
 * fused.c): they read inputs X, W and optional B at indices 0 to 2 and the
 * node's Conv attributes, and ignore any further inputs. */
#ifndef TSR_OPS_CONV_H
#define TSR_OPS_CONV_H

#include "ops/op.h"

tsr_status tsr_conv_infer(tsr_infer_ctx *c);
tsr_status tsr_conv_ref(const tsr_kernel_ctx *k);
double tsr_conv_flops(const tsr_infer_ctx *c);

#endif

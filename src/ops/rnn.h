/* LSTMCell (rnn.c), shared with the backends' kernels. */
#ifndef TSR_OPS_RNN_H
#define TSR_OPS_RNN_H

#include "ops/op.h"

/* c_prev, or NULL when the node has none (a zero state). */
const tsr_tensor *tsr_lstm_cell_c_prev(const tsr_kernel_ctx *k);
/* Checks the run-time shapes: gates [B, 4H], c_prev [B, H]. */
tsr_status tsr_lstm_cell_check_run(const tsr_kernel_ctx *k, int64_t *batch, int64_t *hidden);

#endif

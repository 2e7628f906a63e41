/* LSTM, GRU and RNN run whole, and LSTMCell (rnn.c), shared with the
 * backends' kernels. */
#ifndef TSR_OPS_RNN_H
#define TSR_OPS_RNN_H

#include "ops/op.h"

/* The inputs of LSTM (GRU and RNN stop at TSR_RNN_IN_H0). */
enum {
    TSR_RNN_IN_X,
    TSR_RNN_IN_W,
    TSR_RNN_IN_R,
    TSR_RNN_IN_B,
    TSR_RNN_IN_SEQ,
    TSR_RNN_IN_H0,
    TSR_RNN_IN_C0,
    TSR_RNN_IN_P
};

typedef enum tsr_rnn_kind { TSR_RNN_LSTM, TSR_RNN_GRU, TSR_RNN_SIMPLE } tsr_rnn_kind;
/* The activations a whole RNN node may have (the same in every direction). */
typedef enum tsr_rnn_act { TSR_RNN_ACT_TANH, TSR_RNN_ACT_RELU, TSR_RNN_ACT_SIGMOID } tsr_rnn_act;

/* A node that stays whole instead of being expanded: float32, layout 0,
 * constant W, R, B and P, no sequence_lens, clip or input_forget, the
 * default activations (an RNN's may be Relu or Sigmoid too). */
typedef struct tsr_rnn_whole {
    tsr_rnn_kind kind;
    int gates; /* LSTM 4 (i, o, f, c), GRU 3 (z, r, h), RNN 1 */
    int n_dirs;
    bool reverse;   /* the only direction is reverse */
    bool lbr;       /* GRU: linear_before_reset */
    bool peepholes; /* LSTM: P is given */
    tsr_rnn_act act;
    int64_t T, B, I, H; /* T and B may be symbolic */
} tsr_rnn_whole;

/* Whether `node` (LSTM, GRU, RNN) is one that stays whole, described in
 * *out; if not, says why. */
bool tsr_rnn_runs_whole(const tsr_graph *g, const tsr_node *node, tsr_rnn_whole *out, char *why,
                        size_t why_size);

/* c_prev, or NULL when the node has none (a zero state). */
const tsr_tensor *tsr_lstm_cell_c_prev(const tsr_kernel_ctx *k);
/* Checks the run-time shapes: gates [B, 4H], c_prev [B, H]. */
tsr_status tsr_lstm_cell_check_run(const tsr_kernel_ctx *k, int64_t *batch, int64_t *hidden);

#endif

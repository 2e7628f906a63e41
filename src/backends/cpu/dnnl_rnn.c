/* LSTM, GRU and RNN nodes that stay whole (rnn.h: float32, constant
 * weights, the default activations, no sequence_lens or clip) as one
 * oneDNN RNN primitive over the whole sequence: the per-step Gemms of
 * the expansion were 90 % of an LSTM's time at batch 8, each too small
 * for oneDNN's matmul to run well, where the RNN primitive batches the
 * input products of all steps and keeps the recurrent weights packed.
 *
 * ONNX's gate order differs from oneDNN's (LSTM i, o, f, c against i, f,
 * c~, o; peepholes i, o, f against i, f, o; GRU z, r, h and u, r, o are the
 * same), so W, R, P and the biases are rearranged once at plan time and
 * W and R reordered into the format the primitive chose. Bidirectional
 * nodes run as one primitive whose output concatenates the directions
 * per row ([T, B, 2H]); it is copied into Y's [T, 2, B, H]. Initial and
 * final states are ONNX's [D, B, H] as they are (oneDNN's ldnc with one
 * layer). A plain LSTM of a few sequences runs step by step instead
 * (steps_fit below). */
#include "backends/cpu/dnnl_internal.h"
#include "backends/cpu/matvec.h"
#include "ops/rnn.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Multiply-adds of one step's recurrent product (B x GH x H) below which
 * the primitive runs on one thread: a single sequence's step (an LSTM or
 * GRU of 128 at batch 1, 50-65 thousand) is about a microsecond of work,
 * less than what splitting it costs in barriers. Loaded 2-core SPR, 2
 * threads, three alternated rounds: batch 1 LSTM 0.50-0.52 -> 0.45-0.50 ms,
 * GRU median 0.46-0.54 -> 0.35-0.41 ms. */
#define RNN_SERIAL_STEP_MACS (1 << 17)

/* An LSTM of at most STEPS_MAX_B sequences whose W and R fill at most
 * half a core's L2 (512 KiB on Zen 4) runs step by step instead
 * (steps_run): each step is one product of [x_t, h_prev, 1] (copied side
 * by side) with [W; R; biases] transposed, through the cpu backend's
 * matrix-vector tile, then the LSTMCell tile. Sequences are independent,
 * so with several each thread takes its own through all the steps without
 * a barrier. One sequence is split by hidden units instead: each thread
 * keeps the columns of the weights for its units' four gates (its "part",
 * packed [I + H + 1, 4 units], the gates of its units contiguous), and the
 * threads meet once per step. On Zen 4 oneDNN's primitive spent 5.5 us per
 * step on one sequence of H = 128, 2.4 times what reading R from L2 takes,
 * and ran 8 sequences at 65 % of the two cores' fp32 peak; this path runs
 * them at 83 %, as ONNX Runtime does. */
#define STEPS_MAX_B 8
/* When the L2's size is not known: 512 KiB of weights. */
#define STEPS_DEFAULT_WEIGHT_FLOATS (1 << 17)
#define STEPS_MAX_PARTS 8

typedef struct {
    tsr_dnnl_kind kind; /* first, see dnnl_release */
    tsr_dnnl_exec exec;
    int64_t T, B, H;
    bool serial; /* run on one thread (RNN_SERIAL_STEP_MACS) */
    /* Bidirectional: the primitive writes y_rows [T, B, 2H], copied into Y. */
    float *y_rows;
    /* The step-by-step path, when steps: no primitive. Gate columns are
     * in part order: part p holds units [unit[p], unit[p + 1]), its four
     * gates' columns from 4 unit[p] on (one part: ONNX's order). */
    bool steps, reverse;
    int64_t D, I;
    int parts;
    int64_t unit[STEPS_MAX_PARTS + 1];
    tsr_isa isa;
    float *buf;   /* the arrays below, in one allocation */
    float *wr;    /* [D, I + H + 1, 4H]: per part, [W; R; Wb + Rb]'s rows for it transposed */
    float *xh;    /* [max(B, parts), I + H + 1]: [x_t, h_prev, 1] of a row, or of a part's thread */
    float *gates; /* [B, 4H] */
    float *c;     /* [B, H] */
    float *zeros; /* [B, H]: the initial h when the node has none */
} rnn_state;

/* Which ONNX gate each of oneDNN's gates is. */
static const int lstm_gates[] = {0, 2, 3, 1};
static const int gru_gates[] = {0, 1, 2};
static const int rnn_gates[] = {0};
static const int peephole_gates[] = {0, 2, 1};

static const int *gate_map(tsr_rnn_kind kind)
{
    return kind == TSR_RNN_LSTM ? lstm_gates : kind == TSR_RNN_GRU ? gru_gates : rnn_gates;
}

static bool has_input(const tsr_node *node, int i)
{
    return i < node->n_inputs && node->inputs[i] >= 0;
}

bool tsr_dnnl_rnn_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    tsr_rnn_whole w;
    char reason[160];
    if (!tsr_rnn_runs_whole(g, node, &w, reason, sizeof reason)) {
        snprintf(why, size, "the node is expanded (%s)", reason);
        return false;
    }
    if (w.T <= 0 || w.B <= 0) {
        snprintf(why, size, "an empty sequence or batch is left to ref");
        return false;
    }
    return true;
}

/* W [D, G*H, K] (ONNX) as oneDNN's ldigo [1, D, K, G, H], reordered into
 * the format the primitive chose. */
static tsr_status pack_weights(tsr_dnnl_exec *e, int arg, const tsr_rnn_whole *w, int64_t K,
                               const float *src, const dnnl_memory_desc_t *chosen)
{
    int G = w->gates;
    const int *map = gate_map(w->kind);
    int64_t D = w->n_dirs, H = w->H;
    float *plain = tsr_aligned_alloc(sizeof(float) * (size_t)(D * K * G * H));
    if (!plain)
        return TSR_ERR_OUT_OF_MEMORY;
    for (int64_t d = 0; d < D; d++)
        for (int64_t k = 0; k < K; k++)
            for (int g = 0; g < G; g++)
                for (int64_t o = 0; o < H; o++)
                    plain[((d * K + k) * G + g) * H + o] =
                        src[(d * G * H + map[g] * H + o) * K + k];
    dnnl_memory_desc_t md;
    int64_t dims[5] = {1, D, K, G, H};
    tsr_status st = tsr_dnnl_plain_md(&md, 5, dims, dnnl_f32);
    if (st == TSR_OK)
        st = tsr_dnnl_pack(e, arg, &md, plain, chosen, 1.0f);
    tsr_aligned_free(plain);
    return st;
}

/* oneDNN's bias [1, D, G, H] from ONNX's B [D, 2GH] (Wb then Rb): their
 * sum, except that linear-before-reset GRU keeps Rb of the h gate apart,
 * as a fourth gate. */
static void fill_bias(float *dst, const tsr_rnn_whole *w, const float *b)
{
    int G = w->gates, GB = G + (w->lbr ? 1 : 0);
    const int *map = gate_map(w->kind);
    int64_t H = w->H, GH = G * H;
    for (int64_t d = 0; b && d < w->n_dirs; d++) {
        const float *wb = b + d * 2 * GH, *rb = wb + GH;
        float *out = dst + d * GB * H;
        for (int g = 0; g < G; g++)
            for (int64_t o = 0; o < H; o++) {
                int64_t j = map[g] * H + o;
                out[g * H + o] = wb[j] + (w->lbr && g == 2 ? 0.0f : rb[j]);
            }
        for (int64_t o = 0; w->lbr && o < H; o++)
            out[3 * H + o] = rb[2 * H + o];
    }
}

/* A state [1, D, B, H]: the node's input or output `index`, or (absent)
 * a zeroed buffer of ours. */
static tsr_status state_arg(tsr_dnnl_exec *e, int arg, const dnnl_memory_desc_t *md,
                            tsr_dnnl_source source, bool present, int index)
{
    return tsr_dnnl_exec_arg(e, arg, md, present ? source : TSR_DNNL_OWNED, index, NULL);
}

/* With src_iter NULL the initial states are zero; dst_iter is always
 * written (the node's Y_h and Y_c, or buffers of ours). */
static tsr_status rnn_desc(dnnl_rnn_desc_t *desc, const tsr_rnn_whole *w, dnnl_rnn_direction_t dir,
                           const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *src_iter,
                           const dnnl_memory_desc_t *wl, const dnnl_memory_desc_t *wi,
                           const dnnl_memory_desc_t *peep, const dnnl_memory_desc_t *bias,
                           const dnnl_memory_desc_t *dst, const dnnl_memory_desc_t *dst_iter)
{
    dnnl_prop_kind_t prop = dnnl_forward_inference;
    unsigned flags = dnnl_rnn_flags_undef;
    if (w->kind == TSR_RNN_LSTM) {
        TSR_DNNL_CHECK(dnnl_lstm_forward_desc_init_v2(desc, prop, dir, src, src_iter, src_iter, wl,
                                                      wi, peep, bias, dst, dst_iter, dst_iter,
                                                      flags),
                       "LSTM descriptor");
    } else if (w->kind == TSR_RNN_GRU && w->lbr) {
        TSR_DNNL_CHECK(dnnl_lbr_gru_forward_desc_init(desc, prop, dir, src, src_iter, wl, wi, bias,
                                                      dst, dst_iter, flags),
                       "linear-before-reset GRU descriptor");
    } else if (w->kind == TSR_RNN_GRU) {
        TSR_DNNL_CHECK(dnnl_gru_forward_desc_init(desc, prop, dir, src, src_iter, wl, wi, bias, dst,
                                                  dst_iter, flags),
                       "GRU descriptor");
    } else {
        dnnl_alg_kind_t act = w->act == TSR_RNN_ACT_TANH   ? dnnl_eltwise_tanh
                              : w->act == TSR_RNN_ACT_RELU ? dnnl_eltwise_relu
                                                           : dnnl_eltwise_logistic;
        TSR_DNNL_CHECK(dnnl_vanilla_rnn_forward_desc_init(desc, prop, act, dir, src, src_iter, wl,
                                                          wi, bias, dst, dst_iter, flags, 0.0f,
                                                          0.0f),
                       "RNN descriptor");
    }
    return TSR_OK;
}

static tsr_status rnn_build(const tsr_prepare_ctx *ctx, rnn_state *st, const tsr_rnn_whole *w)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    int G = w->gates;
    int64_t D = w->n_dirs, T = w->T, B = w->B, I = w->I, H = w->H;
    bool lstm = w->kind == TSR_RNN_LSTM;
    dnnl_memory_desc_t src_md, iter_md, wl_md, wi_md, peep_md, bias_md, dst_md;
    int64_t src_dims[3] = {T, B, I}, dst_dims[3] = {T, B, D * H}, iter_dims[4] = {1, D, B, H};
    int64_t peep_dims[4] = {1, D, 3, H}, bias_dims[4] = {1, D, G + (w->lbr ? 1 : 0), H};
    TSR_CHECK(tsr_dnnl_plain_md(&src_md, 3, src_dims, dnnl_f32));
    TSR_CHECK(tsr_dnnl_plain_md(&dst_md, 3, dst_dims, dnnl_f32));
    TSR_CHECK(tsr_dnnl_plain_md(&iter_md, 4, iter_dims, dnnl_f32));
    TSR_CHECK(tsr_dnnl_plain_md(&peep_md, 4, peep_dims, dnnl_f32));
    TSR_CHECK(tsr_dnnl_plain_md(&bias_md, 4, bias_dims, dnnl_f32));
    dnnl_dims_t wl_dims = {1, D, I, G, H}, wi_dims = {1, D, H, G, H};
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&wl_md, 5, wl_dims, dnnl_f32, dnnl_format_tag_any),
                   "weights descriptor");
    TSR_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&wi_md, 5, wi_dims, dnnl_f32, dnnl_format_tag_any),
                   "weights descriptor");
    dnnl_rnn_direction_t dir = D == 2       ? dnnl_bidirectional_concat
                               : w->reverse ? dnnl_unidirectional_right2left
                                            : dnnl_unidirectional_left2right;
    bool h0 = has_input(node, TSR_RNN_IN_H0), c0 = lstm && has_input(node, TSR_RNN_IN_C0);
    bool states_in = h0 || c0;
    dnnl_rnn_desc_t desc;
    TSR_CHECK(rnn_desc(&desc, w, dir, &src_md, states_in ? &iter_md : NULL, &wl_md, &wi_md,
                       w->peepholes ? &peep_md : NULL, &bias_md, &dst_md, &iter_md));

    dnnl_engine_t engine = NULL;
    TSR_CHECK(tsr_dnnl_engine(&engine, NULL));
    dnnl_primitive_attr_t attr;
    TSR_DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attribute creation");
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t ds = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (ds == dnnl_success)
        ds = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    TSR_DNNL_CHECK(ds, "RNN primitive");

    tsr_dnnl_exec *e = &st->exec;
    e->thread_scratchpad = true;
    const float *wdata = g->values[node->inputs[TSR_RNN_IN_W]].data;
    const float *rdata = g->values[node->inputs[TSR_RNN_IN_R]].data;
    const float *bdata =
        has_input(node, TSR_RNN_IN_B) ? g->values[node->inputs[TSR_RNN_IN_B]].data : NULL;
    float *bias = NULL, *peep = NULL;
    tsr_status status =
        tsr_dnnl_exec_arg(e, DNNL_ARG_SRC_LAYER, &src_md, TSR_DNNL_FROM_INPUT, TSR_RNN_IN_X, NULL);
    if (status == TSR_OK && states_in)
        status = state_arg(e, DNNL_ARG_SRC_ITER, &iter_md, TSR_DNNL_FROM_INPUT, h0, TSR_RNN_IN_H0);
    if (status == TSR_OK && states_in && lstm)
        status =
            state_arg(e, DNNL_ARG_SRC_ITER_C, &iter_md, TSR_DNNL_FROM_INPUT, c0, TSR_RNN_IN_C0);
    if (status == TSR_OK)
        status = pack_weights(
            e, DNNL_ARG_WEIGHTS_LAYER, w, I, wdata,
            dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, DNNL_ARG_WEIGHTS_LAYER));
    if (status == TSR_OK)
        status = pack_weights(
            e, DNNL_ARG_WEIGHTS_ITER, w, H, rdata,
            dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, DNNL_ARG_WEIGHTS_ITER));
    if (status == TSR_OK && w->peepholes) {
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_WEIGHTS_PEEPHOLE, &peep_md, TSR_DNNL_OWNED, 0,
                                   (void **)&peep);
        const float *p = g->values[node->inputs[TSR_RNN_IN_P]].data;
        for (int64_t d = 0; status == TSR_OK && d < D; d++)
            for (int k = 0; k < 3; k++)
                memcpy(peep + (d * 3 + k) * H, p + (d * 3 + peephole_gates[k]) * H,
                       sizeof(float) * (size_t)H);
    }
    if (status == TSR_OK)
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_BIAS, &bias_md, TSR_DNNL_OWNED, 0, (void **)&bias);
    if (status == TSR_OK)
        fill_bias(bias, w, bdata);
    if (status == TSR_OK && D == 2) {
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_DST_LAYER, &dst_md, TSR_DNNL_OWNED, 0,
                                   (void **)&st->y_rows);
    } else if (status == TSR_OK) {
        status = tsr_dnnl_exec_arg(e, DNNL_ARG_DST_LAYER, &dst_md, TSR_DNNL_FROM_OUTPUT, 0, NULL);
    }
    if (status == TSR_OK)
        status =
            state_arg(e, DNNL_ARG_DST_ITER, &iter_md, TSR_DNNL_FROM_OUTPUT, node->n_outputs > 1, 1);
    if (status == TSR_OK && lstm)
        status = state_arg(e, DNNL_ARG_DST_ITER_C, &iter_md, TSR_DNNL_FROM_OUTPUT,
                           node->n_outputs > 2, 2);
    if (status != TSR_OK) {
        dnnl_primitive_desc_destroy(pd);
        return status;
    }
    return tsr_dnnl_exec_finish(e, pd, "RNN");
}

/* floats rounded up to whole cache lines, so that what two threads write
 * never shares a line (the rows of xh, the arrays of the buffer). */
static int64_t lines(int64_t floats)
{
    return (floats + 15) / 16 * 16;
}

static bool steps_fit(const tsr_rnn_whole *w)
{
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    int64_t max_floats =
        l2 > 0 ? (int64_t)l2 / 2 / (int64_t)sizeof(float) : STEPS_DEFAULT_WEIGHT_FLOATS;
    return w->kind == TSR_RNN_LSTM && !w->peepholes && w->B <= STEPS_MAX_B &&
           (w->I + w->H) * 4 * w->H <= max_floats;
}

static tsr_status steps_build(const tsr_prepare_ctx *ctx, rnn_state *st, const tsr_rnn_whole *w)
{
    const tsr_graph *g = ctx->graph;
    const tsr_node *node = ctx->node;
    int64_t D = w->n_dirs, B = w->B, I = w->I, H = w->H, G4 = 4 * H, K = I + H + 1;
    st->steps = true;
    st->reverse = w->reverse;
    st->D = D;
    st->I = I;
    st->isa = tsr_cpu_isa();
    /* Parts of whole 16-unit groups (a cache line of floats). */
    int parts = B == 1 ? ctx->threads : 1;
    parts = parts < H / 16 ? parts : (int)(H / 16);
    st->parts = parts = parts < 1 ? 1 : parts > STEPS_MAX_PARTS ? STEPS_MAX_PARTS : parts;
    for (int p = 0; p <= parts; p++)
        st->unit[p] = p == parts ? H : H / 16 * p / parts * 16;
    int64_t rows = B > parts ? B : parts;
    int64_t pitch = lines(K); /* of an xh row */
    size_t floats =
        (size_t)(lines(D * K * G4) + rows * pitch + lines(B * G4) + 2 * lines(B * H));
    st->buf = tsr_aligned_alloc(sizeof(float) * floats);
    if (!st->buf)
        return TSR_ERR_OUT_OF_MEMORY;
    memset(st->buf, 0, sizeof(float) * floats);
    st->wr = st->buf;
    st->xh = st->wr + lines(D * K * G4);
    for (int64_t row = 0; row < rows; row++)
        st->xh[row * pitch + K - 1] = 1.0f;
    st->gates = st->xh + rows * pitch;
    st->c = st->gates + lines(B * G4);
    st->zeros = st->c + lines(B * H);
    const float *wsrc = g->values[node->inputs[TSR_RNN_IN_W]].data;
    const float *r = g->values[node->inputs[TSR_RNN_IN_R]].data;
    const float *b = has_input(node, TSR_RNN_IN_B) ? g->values[node->inputs[TSR_RNN_IN_B]].data
                                                   : NULL;
    for (int64_t d = 0; d < D; d++)
        for (int p = 0; p < parts; p++) {
            int64_t u0 = st->unit[p], units = st->unit[p + 1] - u0;
            float *wr = st->wr + d * K * G4 + K * 4 * u0;
            for (int64_t gate = 0; gate < 4; gate++)
                for (int64_t u = 0; u < units; u++) {
                    int64_t from = d * G4 + gate * H + u0 + u, col = gate * units + u;
                    for (int64_t k = 0; k < I; k++)
                        wr[k * 4 * units + col] = wsrc[from * I + k];
                    for (int64_t k = 0; k < H; k++)
                        wr[(I + k) * 4 * units + col] = r[from * H + k];
                    if (b)
                        wr[(K - 1) * 4 * units + col] = b[from + d * G4] + b[from + d * G4 + G4];
                }
        }
    snprintf(st->exec.impl, sizeof st->exec.impl, "cpu:lstm-steps");
    return TSR_OK;
}

/* Step t of part p for sequences [b0, b1) of direction d, their [x_t,
 * h_prev, 1] in xh's rows: gates = [x_t, h_prev, 1] [W; R; biases]^T, then
 * the cell. */
static void steps_part(const rnn_state *st, const float *xh, float *ho, int64_t d, int p,
                       int64_t b0, int64_t b1)
{
    int64_t H = st->H, G4 = 4 * H, K = st->I + H + 1;
    int64_t u0 = st->unit[p], units = st->unit[p + 1] - u0;
    const float *wr = st->wr + d * K * G4 + K * 4 * u0;
    for (int64_t r0 = b0; r0 < b1; r0 += TSR_MATVEC_MAX_M) {
        /* Several rows only with one part: then each gates row is dense. */
        int64_t m = b1 - r0 < TSR_MATVEC_MAX_M ? b1 - r0 : TSR_MATVEC_MAX_M;
        float *gates = st->gates + r0 * G4 + 4 * u0;
        tsr_cpu_matvec mv = {
            .m = m, .k = K, .n = 4 * units, .lda = lines(K), .alpha = 1.0f, .isa = st->isa};
        tsr_cpu_matvec_run(&mv, xh + (r0 - b0) * lines(K), wr, NULL, gates, 1);
        tsr_cpu_lstm_cell_rows(st->isa, gates, st->c + r0 * H + u0, ho + r0 * H + u0, m, units);
    }
}

/* [x_t, h_prev] of rows [b0, b1) into xh (the 1 after them stays). */
static void steps_gather(const rnn_state *st, const float *x, const float *hp, float *xh,
                         int64_t b0, int64_t b1)
{
    int64_t I = st->I, H = st->H, pitch = lines(I + H + 1);
    for (int64_t b = b0; b < b1; b++) {
        memcpy(xh + (b - b0) * pitch, x + b * I, sizeof(float) * (size_t)I);
        memcpy(xh + (b - b0) * pitch + I, hp + b * H, sizeof(float) * (size_t)H);
    }
}

static tsr_status steps_run(const rnn_state *st, const tsr_kernel_ctx *k)
{
    int64_t T = st->T, B = st->B, H = st->H, D = st->D, I = st->I, pitch = lines(I + H + 1);
    const tsr_tensor *h0t = k->n_inputs > TSR_RNN_IN_H0 ? k->inputs[TSR_RNN_IN_H0] : NULL;
    const tsr_tensor *c0 = k->n_inputs > TSR_RNN_IN_C0 ? k->inputs[TSR_RNN_IN_C0] : NULL;
    const float *h0 = h0t ? h0t->data : NULL, *x = k->inputs[TSR_RNN_IN_X]->data;
    float *y = k->outputs[0]->data;
    int parts = st->parts;
    int nt = parts > 1 ? parts : k->threads < B ? k->threads : (int)B;
    for (int64_t d = 0; d < D; d++) {
        bool reverse = D == 2 ? d == 1 : st->reverse;
        if (c0)
            memcpy(st->c, (const float *)c0->data + d * B * H, sizeof(float) * (size_t)(B * H));
        else
            memset(st->c, 0, sizeof(float) * (size_t)(B * H));
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int id = omp_get_thread_num(), team = omp_get_num_threads();
            /* One part: this thread's sequences; parts: its parts of the one. */
            int64_t b0 = parts > 1 ? 0 : B * id / team, b1 = parts > 1 ? B : B * (id + 1) / team;
            float *xh = st->xh + (parts > 1 ? id : b0) * pitch;
            const float *hp = h0 ? h0 + d * B * H : st->zeros;
            for (int64_t s = 0; s < T; s++) {
                int64_t t = reverse ? T - 1 - s : s;
                float *ho = y + (t * D + d) * B * H;
                steps_gather(st, x + t * B * I, hp, xh, b0, b1);
                for (int p = parts > 1 ? id : 0; p < parts; p += parts > 1 ? team : parts)
                    steps_part(st, xh, ho, d, p, b0, b1);
                if (parts > 1) {
#pragma omp barrier
                }
                hp = ho;
            }
        }
        int64_t last = reverse ? 0 : T - 1;
        if (k->n_outputs > 1 && k->outputs[1])
            memcpy((float *)k->outputs[1]->data + d * B * H, y + (last * D + d) * B * H,
                   sizeof(float) * (size_t)(B * H));
        if (k->n_outputs > 2 && k->outputs[2])
            memcpy((float *)k->outputs[2]->data + d * B * H, st->c,
                   sizeof(float) * (size_t)(B * H));
    }
    return TSR_OK;
}

void tsr_dnnl_rnn_release(void *state)
{
    rnn_state *st = state;
    tsr_dnnl_exec_release(&st->exec);
    tsr_aligned_free(st->buf);
    free(st);
}

tsr_status tsr_dnnl_rnn_prepare(const tsr_prepare_ctx *ctx, void **state_out)
{
    tsr_rnn_whole w;
    char why[160];
    if (!tsr_rnn_runs_whole(ctx->graph, ctx->node, &w, why, sizeof why))
        return tsr_error(TSR_ERR_INTERNAL, "%s runs expanded (%s)", ctx->node->op->name, why);
    rnn_state *st = tsr_calloc(1, sizeof *st);
    if (!st)
        return TSR_ERR_OUT_OF_MEMORY;
    st->kind = TSR_DNNL_KIND_RNN;
    st->T = w.T;
    st->B = w.B;
    st->H = w.H;
    st->serial = w.B * w.gates * w.H * w.H < RNN_SERIAL_STEP_MACS;
    tsr_status status = steps_fit(&w) ? steps_build(ctx, st, &w) : rnn_build(ctx, st, &w);
    if (status != TSR_OK) {
        tsr_dnnl_rnn_release(st);
        return status;
    }
    *state_out = st;
    return TSR_OK;
}

tsr_status tsr_dnnl_rnn_run(void *state, const tsr_kernel_ctx *k)
{
    rnn_state *st = state;
    if (st->steps)
        return steps_run(st, k);
    int threads = omp_get_max_threads();
    if (st->serial)
        omp_set_num_threads(1);
    tsr_status status = tsr_dnnl_exec_run(&st->exec, k);
    omp_set_num_threads(threads);
    TSR_CHECK(status);
    if (!st->y_rows)
        return TSR_OK;
    int64_t B = st->B, H = st->H;
    float *y = k->outputs[0]->data;
    for (int64_t t = 0; t < st->T; t++)
        for (int64_t d = 0; d < 2; d++)
            for (int64_t b = 0; b < B; b++)
                memcpy(y + ((t * 2 + d) * B + b) * H, st->y_rows + (t * B + b) * 2 * H + d * H,
                       sizeof(float) * (size_t)H);
    return TSR_OK;
}

const char *tsr_dnnl_rnn_kernel_name(const void *state)
{
    const rnn_state *st = state;
    return st->exec.impl;
}

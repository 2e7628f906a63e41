/* LSTM, GRU and RNN with ONNX's semantics (versions 7 and 14 of each, the
 * ones the importer's opsets 11 to 21 hold; layout, new in 14, is read at
 * any opset): forward, reverse and bidirectional, initial states,
 * sequence_lens, layout, every activation ONNX lists with
 * activation_alpha/beta, clip, input_forget, linear_before_reset, LSTM
 * peepholes, all outputs.
 *
 * Design: these ops are defined by other ops. Once the sequence length is
 * known the graph builder expands the node (op.h's expand hook), unrolled
 * over time, into Gemm, Gather, Split, Add, Mul, the activations, Clip,
 * Where (sequence_lens), Unsqueeze, Concat and Transpose. Gradients,
 * second-order ones included, then come from those ops' rules, and every
 * backend runs the nodes with the kernels it already has: the input
 * projection of all time steps is one Gemm of [T*B, I] by [I, G*H]
 * (oneDNN on the cpu device), each step one more Gemm of [B, H] by
 * [H, G*H] with the projection as its addend. A real op would have needed
 * its own backward op (BPTT, whose own gradient ICTP-style second order
 * training would need again), its own cpu kernel around the same Gemms and
 * a reference kernel: three engines for what the IR already expresses.
 * The cost is one node per gate operation per step, a few microseconds of
 * dispatch each; an LSTM with the default activations and no clip,
 * peepholes or input_forget (what torch exports) has its gate math as one
 * LSTMCell node per step instead (below), an op whose gradient is again
 * written in the element-wise ops.
 *
 * Inference is the exception: a float32 node with constant weights, the
 * default activations and no sequence_lens, clip or input_forget (what
 * torch exports; peepholes and either GRU variant too) stays whole, so
 * that the cpu device runs it as one oneDNN RNN primitive (dnnl_rnn.c):
 * the expansion's per-step Gemms, each too small for oneDNN to run well,
 * were 90 % of an LSTM's time. It has a reference kernel for the other
 * devices; graphs to differentiate (expand_all) expand it still.
 *
 * A symbolic sequence length leaves the node in the graph (shapes are
 * inferred symbolically); each plan replays the graph at concrete input
 * shapes and expands it there (or keeps it whole), so such exports run;
 * only their gradient is refused, with an error saying why.
 *
 * ONNX gives activations as a list of strings; the importer passes it as
 * one comma-separated string ("Sigmoid,Tanh,Tanh"), the form the C and
 * Python builders take too. activation_alpha and activation_beta are
 * consumed in order by the activations that take them; once a list runs
 * out, the defaults of the ONNX operator of the same name apply. clip
 * bounds every gate's pre-activation (peephole terms included) but not the
 * cell state, as ONNX Runtime reads the spec. */
#include "ops/rnn.h"
#include "autodiff/autodiff.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The opset the expansion's nodes are written against (Split, Squeeze,
 * Unsqueeze with their axes as inputs). */
#define EXPAND_OPSET 17
#define NAME_LEN 320
#define MAX_ACTIVATIONS 6

static tsr_rnn_kind kind_of(const tsr_op_def *op)
{
    return strcmp(op->name, "LSTM") == 0  ? TSR_RNN_LSTM
           : strcmp(op->name, "GRU") == 0 ? TSR_RNN_GRU
                                          : TSR_RNN_SIMPLE;
}

/* Gates per direction: LSTM i, o, f, c; GRU z, r, h; RNN one. */
static int gate_count(tsr_rnn_kind k)
{
    return k == TSR_RNN_LSTM ? 4 : k == TSR_RNN_GRU ? 3 : 1;
}
/* Activations per direction: LSTM f, g, h; GRU f, g; RNN f. */
static int activation_count(tsr_rnn_kind k)
{
    return k == TSR_RNN_LSTM ? 3 : k == TSR_RNN_GRU ? 2 : 1;
}

static const tsr_value *input(const tsr_infer_ctx *c, int i)
{
    return i < c->n_inputs ? c->inputs[i] : NULL;
}

static int directions(const tsr_node *n, int *count_out, bool *reverse_first)
{
    const char *d = tsr_attr_string(n, "direction");
    *reverse_first = strcmp(d, "reverse") == 0;
    if (strcmp(d, "forward") == 0 || *reverse_first)
        *count_out = 1;
    else if (strcmp(d, "bidirectional") == 0)
        *count_out = 2;
    else
        return -1;
    return 0;
}

/* ------------------------------------------------------------ activations */

typedef enum act_kind {
    ACT_RELU,
    ACT_TANH,
    ACT_SIGMOID,
    ACT_AFFINE,
    ACT_LEAKY_RELU,
    ACT_THRESHOLDED_RELU,
    ACT_SCALED_TANH,
    ACT_HARD_SIGMOID,
    ACT_ELU,
    ACT_SOFTSIGN,
    ACT_SOFTPLUS
} act_kind;

typedef struct act_def {
    const char *name;
    act_kind kind;
    int n_params; /* alpha, then beta */
    double alpha, beta;
} act_def;

static const act_def act_defs[] = {
    {"Relu", ACT_RELU, 0, 0, 0},
    {"Tanh", ACT_TANH, 0, 0, 0},
    {"Sigmoid", ACT_SIGMOID, 0, 0, 0},
    {"Affine", ACT_AFFINE, 2, 1.0, 0.0},
    {"LeakyRelu", ACT_LEAKY_RELU, 1, 0.01, 0},
    {"ThresholdedRelu", ACT_THRESHOLDED_RELU, 1, 1.0, 0},
    {"ScaledTanh", ACT_SCALED_TANH, 2, 1.0, 1.0},
    {"HardSigmoid", ACT_HARD_SIGMOID, 2, 0.2, 0.5},
    {"Elu", ACT_ELU, 1, 1.0, 0},
    {"Softsign", ACT_SOFTSIGN, 0, 0, 0},
    {"Softplus", ACT_SOFTPLUS, 0, 0, 0},
};

typedef struct activation {
    act_kind kind;
    double alpha, beta;
} activation;

/* The node's activations, D * activation_count of them; the defaults
 * (Sigmoid, Tanh, Tanh for LSTM) when the attribute is absent. Errors name
 * the unknown activation or the wrong count. */
static tsr_status parse_activations(const tsr_node *n, tsr_rnn_kind k, int n_dirs,
                                    activation acts[MAX_ACTIVATIONS], char *err, size_t err_size)
{
    static const char *const defaults[] = {"Sigmoid,Tanh,Tanh", "Sigmoid,Tanh", "Tanh"};
    int per_dir = activation_count(k), want = per_dir * n_dirs;
    char list[512];
    if (tsr_attr_has(n, "activations")) {
        snprintf(list, sizeof list, "%s", tsr_attr_string(n, "activations"));
    } else {
        snprintf(list, sizeof list, "%s", defaults[k]);
        if (n_dirs == 2)
            snprintf(list, sizeof list, "%s,%s", defaults[k], defaults[k]);
    }
    size_t n_alpha = 0, n_beta = 0;
    const double *alphas = tsr_attr_floats(n, "activation_alpha", &n_alpha);
    const double *betas = tsr_attr_floats(n, "activation_beta", &n_beta);
    size_t next_alpha = 0, next_beta = 0;
    int count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        size_t len = strlen(tok);
        while (len && isspace((unsigned char)tok[len - 1]))
            tok[--len] = '\0';
        const act_def *def = NULL;
        for (size_t d = 0; d < sizeof act_defs / sizeof act_defs[0]; d++)
            if (strcasecmp(tok, act_defs[d].name) == 0)
                def = &act_defs[d];
        if (!def) {
            snprintf(err, err_size,
                     "unknown activation '%s' (ONNX's are Relu, Tanh, Sigmoid, Affine, LeakyRelu, "
                     "ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus)",
                     tok);
            return TSR_ERR_UNSUPPORTED;
        }
        if (count == MAX_ACTIVATIONS) {
            count++;
            break;
        }
        activation *a = &acts[count++];
        a->kind = def->kind;
        a->alpha = def->alpha;
        a->beta = def->beta;
        if (def->n_params >= 1 && next_alpha < n_alpha)
            a->alpha = alphas[next_alpha++];
        if (def->n_params >= 2 && next_beta < n_beta)
            a->beta = betas[next_beta++];
    }
    if (count != want) {
        snprintf(err, err_size, "activations lists %d functions; %s with %d direction%s takes %d",
                 count, n->op->name, n_dirs, n_dirs == 1 ? "" : "s", want);
        return TSR_ERR_PARSE;
    }
    return TSR_OK;
}

/* -------------------------------------------------------------- inference */

typedef struct rnn_shape {
    tsr_rnn_kind kind;
    int n_dirs;
    bool reverse;     /* the only direction is reverse */
    bool batch_major; /* layout = 1: X [B, T, I], Y [B, T, D, H], states [B, D, H] */
    int64_t T, B, I, H;
} rnn_shape;

static tsr_status check_dim(const tsr_infer_ctx *c, const char *what, const tsr_value *v, int axis,
                            int64_t want)
{
    int64_t got = v->dims[axis];
    if (tsr_dim_known(got) && tsr_dim_known(want) && got != want)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "%s has %lld at axis %d, expected %lld", what,
                               (long long)got, axis, (long long)want);
    return TSR_OK;
}

static tsr_status read_shape(const tsr_infer_ctx *c, rnn_shape *s)
{
    const tsr_node *n = c->node;
    s->kind = kind_of(n->op);
    if (directions(n, &s->n_dirs, &s->reverse) != 0)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "direction '%s' is not one of forward, reverse, bidirectional",
                               tsr_attr_string(n, "direction"));
    int64_t layout = tsr_attr_int(n, "layout");
    if (layout != 0 && layout != 1)
        return tsr_infer_error(c, TSR_ERR_PARSE, "layout is %lld; ONNX allows 0 and 1",
                               (long long)layout);
    s->batch_major = layout == 1;
    for (int i = TSR_RNN_IN_X; i <= TSR_RNN_IN_R; i++)
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
    const tsr_value *x = input(c, TSR_RNN_IN_X), *w = input(c, TSR_RNN_IN_W),
                    *r = input(c, TSR_RNN_IN_R);
    static const char *const names[] = {"X", "W", "R"};
    const tsr_value *vs[] = {x, w, r};
    for (int i = 0; i < 3; i++) {
        if (vs[i]->rank != 3)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s has rank %d; it must have rank 3",
                                   names[i], vs[i]->rank);
        if (vs[i]->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "%s and X have different dtypes", names[i]);
    }
    int G = gate_count(s->kind);
    s->T = x->dims[s->batch_major ? 1 : 0];
    s->B = x->dims[s->batch_major ? 0 : 1];
    s->I = x->dims[2];
    s->H = r->dims[2];
    if (tsr_attr_has(n, "hidden_size")) {
        int64_t hs = tsr_attr_int(n, "hidden_size");
        if (hs <= 0)
            return tsr_infer_error(c, TSR_ERR_PARSE, "hidden_size is %lld", (long long)hs);
        TSR_CHECK(check_dim(c, "R [num_directions, gates*hidden_size, hidden_size]", r, 2, hs));
        s->H = hs;
    }
    if (!tsr_dim_known(s->H))
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "the hidden size is not known (R's last dim is symbolic and "
                               "hidden_size is not given)");
    TSR_CHECK(check_dim(c, "W [num_directions, gates*hidden_size, input_size]", w, 0, s->n_dirs));
    TSR_CHECK(check_dim(c, "W [num_directions, gates*hidden_size, input_size]", w, 1, G * s->H));
    TSR_CHECK(check_dim(c, "W [num_directions, gates*hidden_size, input_size]", w, 2, s->I));
    TSR_CHECK(check_dim(c, "R [num_directions, gates*hidden_size, hidden_size]", r, 0, s->n_dirs));
    TSR_CHECK(check_dim(c, "R [num_directions, gates*hidden_size, hidden_size]", r, 1, G * s->H));
    const tsr_value *b = input(c, TSR_RNN_IN_B);
    if (b) {
        TSR_CHECK(tsr_infer_require_dtype(c, TSR_RNN_IN_B, TSR_FLOAT_TYPES));
        if (b->rank != 2 || b->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "B must be [num_directions, 2*gates*hidden_size] of X's dtype");
        TSR_CHECK(check_dim(c, "B [num_directions, 2*gates*hidden_size]", b, 0, s->n_dirs));
        TSR_CHECK(check_dim(c, "B [num_directions, 2*gates*hidden_size]", b, 1, 2 * G * s->H));
    }
    const tsr_value *seq = input(c, TSR_RNN_IN_SEQ);
    if (seq) {
        TSR_CHECK(tsr_infer_require_dtype(c, TSR_RNN_IN_SEQ,
                                          TSR_DTYPE_BIT(TSR_INT32) | TSR_DTYPE_BIT(TSR_INT64)));
        if (seq->rank != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "sequence_lens has rank %d, expected 1 [%s]",
                                   seq->rank, "batch_size");
        TSR_CHECK(check_dim(c, "sequence_lens [batch_size]", seq, 0, s->B));
    }
    for (int i = TSR_RNN_IN_H0; i <= TSR_RNN_IN_C0; i++) {
        const tsr_value *h = input(c, i);
        if (!h)
            continue;
        const char *what = i == TSR_RNN_IN_H0 ? "initial_h" : "initial_c";
        if (i == TSR_RNN_IN_C0 && s->kind != TSR_RNN_LSTM)
            return tsr_infer_error(c, TSR_ERR_PARSE, "%s takes no initial_c", n->op->name);
        TSR_CHECK(tsr_infer_require_dtype(c, i, TSR_FLOAT_TYPES));
        if (h->rank != 3 || h->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_SHAPE, "%s must have rank 3 (%s) and X's dtype", what,
                                   s->batch_major ? "[batch_size, num_directions, hidden_size]"
                                                  : "[num_directions, batch_size, hidden_size]");
        TSR_CHECK(check_dim(c, what, h, s->batch_major ? 1 : 0, s->n_dirs));
        TSR_CHECK(check_dim(c, what, h, s->batch_major ? 0 : 1, s->B));
        TSR_CHECK(check_dim(c, what, h, 2, s->H));
    }
    const tsr_value *p = input(c, TSR_RNN_IN_P);
    if (p) {
        TSR_CHECK(tsr_infer_require_dtype(c, TSR_RNN_IN_P, TSR_FLOAT_TYPES));
        if (p->rank != 2 || p->dtype != x->dtype)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "P must be [num_directions, 3*hidden_size] of X's dtype");
        TSR_CHECK(check_dim(c, "P [num_directions, 3*hidden_size]", p, 0, s->n_dirs));
        TSR_CHECK(check_dim(c, "P [num_directions, 3*hidden_size]", p, 1, 3 * s->H));
    }
    if (s->kind == TSR_RNN_LSTM) {
        int64_t f = tsr_attr_int(n, "input_forget");
        if (f != 0 && f != 1)
            return tsr_infer_error(c, TSR_ERR_PARSE, "input_forget is %lld; it is 0 or 1",
                                   (long long)f);
    }
    if (s->kind == TSR_RNN_GRU) {
        int64_t lbr = tsr_attr_int(n, "linear_before_reset");
        if (lbr != 0 && lbr != 1)
            return tsr_infer_error(c, TSR_ERR_PARSE, "linear_before_reset is %lld; it is 0 or 1",
                                   (long long)lbr);
    }
    if (tsr_attr_has(n, "clip") && !(tsr_attr_float(n, "clip") > 0))
        return tsr_infer_error(c, TSR_ERR_PARSE, "clip is %g; it must be positive",
                               tsr_attr_float(n, "clip"));
    activation acts[MAX_ACTIVATIONS];
    char err[400];
    tsr_status st = parse_activations(n, s->kind, s->n_dirs, acts, err, sizeof err);
    if (st != TSR_OK)
        return tsr_infer_error(c, st, "%s", err);
    return TSR_OK;
}

static tsr_status rnn_infer(tsr_infer_ctx *c)
{
    rnn_shape s;
    TSR_CHECK(read_shape(c, &s));
    tsr_dtype dt = c->inputs[TSR_RNN_IN_X]->dtype;
    int64_t D = s.n_dirs;
    int64_t y[4] = {s.T, D, s.B, s.H}, yb[4] = {s.B, s.T, D, s.H};
    int64_t h[3] = {D, s.B, s.H}, hb[3] = {s.B, D, s.H};
    tsr_infer_set(c, 0, dt, 4, s.batch_major ? yb : y);
    for (int o = 1; o < c->n_outputs; o++)
        tsr_infer_set(c, o, dt, 3, s.batch_major ? hb : h);
    return TSR_OK;
}

/* ----------------------------------------------------------- whole nodes */

/* The inference context of a node already in the graph. */
static tsr_infer_ctx node_ctx(const tsr_graph *g, const tsr_node *node)
{
    tsr_infer_ctx c = {.graph = g, .node = node, .n_inputs = node->n_inputs};
    for (int i = 0; i < node->n_inputs; i++)
        c.inputs[i] = node->inputs[i] >= 0 ? &g->values[node->inputs[i]] : NULL;
    return c;
}

static bool rnn_act_of(const activation *a, tsr_rnn_act *out)
{
    static const act_kind kinds[] = {ACT_TANH, ACT_RELU, ACT_SIGMOID};
    static const tsr_rnn_act acts[] = {TSR_RNN_ACT_TANH, TSR_RNN_ACT_RELU, TSR_RNN_ACT_SIGMOID};
    for (int i = 0; i < 3; i++)
        if (a->kind == kinds[i]) {
            *out = acts[i];
            return true;
        }
    return false;
}

/* A whole node is one a backend runs as one sequence (oneDNN's RNN
 * primitives); everything else is expanded, which covers all of ONNX. */
static bool whole_info(const tsr_infer_ctx *c, tsr_rnn_whole *w, char *why, size_t size)
{
    const tsr_node *n = c->node;
    rnn_shape s;
    activation acts[MAX_ACTIVATIONS];
    char err[400];
    if (read_shape(c, &s) != TSR_OK ||
        parse_activations(n, s.kind, s.n_dirs, acts, err, sizeof err) != TSR_OK) {
        snprintf(why, size, "the node is malformed");
        return false;
    }
    const char *refused = NULL;
    if (c->inputs[TSR_RNN_IN_X]->dtype != TSR_FLOAT32)
        refused = "X is not float32";
    else if (s.batch_major)
        refused = "layout is 1";
    else if (input(c, TSR_RNN_IN_SEQ))
        refused = "sequence_lens is given";
    else if (tsr_attr_has(n, "clip"))
        refused = "clip is given";
    else if (s.kind == TSR_RNN_LSTM && tsr_attr_int(n, "input_forget"))
        refused = "input_forget is set";
    for (int i = TSR_RNN_IN_W; !refused && i <= TSR_RNN_IN_P; i++)
        if (i != TSR_RNN_IN_SEQ && i != TSR_RNN_IN_H0 && i != TSR_RNN_IN_C0 && input(c, i) &&
            !input(c, i)->data)
            refused = "W, R, B or P is not a constant";
    static const act_kind defaults[][3] = {
        {ACT_SIGMOID, ACT_TANH, ACT_TANH}, {ACT_SIGMOID, ACT_TANH}, {ACT_TANH}};
    int per_dir = activation_count(s.kind);
    for (int a = 0; !refused && a < per_dir * s.n_dirs; a++) {
        bool ok = s.kind == TSR_RNN_SIMPLE
                      ? rnn_act_of(&acts[a], &w->act) && acts[a].kind == acts[0].kind
                      : acts[a].kind == defaults[s.kind][a % per_dir];
        if (!ok)
            refused = "its activations are not the default ones";
    }
    if (refused) {
        snprintf(why, size, "%s", refused);
        return false;
    }
    w->kind = s.kind;
    w->gates = gate_count(s.kind);
    w->n_dirs = s.n_dirs;
    w->reverse = s.reverse;
    w->lbr = s.kind == TSR_RNN_GRU && tsr_attr_int(n, "linear_before_reset");
    w->peepholes = s.kind == TSR_RNN_LSTM && input(c, TSR_RNN_IN_P);
    if (s.kind != TSR_RNN_SIMPLE)
        w->act = TSR_RNN_ACT_TANH;
    w->T = s.T;
    w->B = s.B;
    w->I = s.I;
    w->H = s.H;
    return true;
}

bool tsr_rnn_runs_whole(const tsr_graph *g, const tsr_node *node, tsr_rnn_whole *out, char *why,
                        size_t why_size)
{
    tsr_infer_ctx c = node_ctx(g, node);
    return whole_info(&c, out, why, why_size);
}

/* The node expands once the sequence length and the sizes of the weights'
 * products are known (the batch may stay symbolic), unless it stays
 * whole for a backend to run as one sequence; graphs to differentiate
 * expand it all the same. */
static bool rnn_expandable(const tsr_infer_ctx *c)
{
    const tsr_value *x = c->inputs[TSR_RNN_IN_X];
    bool batch_major = tsr_attr_int(c->node, "layout") == 1;
    if (!tsr_dim_known(x->dims[batch_major ? 1 : 0]) || !tsr_dim_known(x->dims[2]))
        return false;
    tsr_rnn_whole w;
    char why[128];
    return c->graph->expand_all || !whole_info(c, &w, why, sizeof why);
}

static double sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

static double rnn_act(tsr_rnn_act a, double x)
{
    return a == TSR_RNN_ACT_TANH ? tanh(x) : a == TSR_RNN_ACT_RELU ? (x > 0 ? x : 0) : sigmoid(x);
}

/* Row j of a [G*H, K] weight of direction d times the vector v [K]. */
static double row_dot(const float *w, int64_t d, int64_t rows, int64_t j, int64_t K,
                      const double *v)
{
    const float *r = w + (d * rows + j) * K;
    double acc = 0;
    for (int64_t k = 0; k < K; k++)
        acc += (double)r[k] * v[k];
    return acc;
}

/* The reference kernel of a whole node (float32), straight from ONNX's
 * equations, in double. */
static tsr_status rnn_ref(const tsr_kernel_ctx *k)
{
    const tsr_node *n = k->node;
    tsr_rnn_kind kind = kind_of(n->op);
    int D = 1;
    bool reverse = false;
    if (directions(n, &D, &reverse) != 0)
        return tsr_error(TSR_ERR_PARSE, "%s: bad direction", n->op->name);
    activation acts[MAX_ACTIVATIONS];
    char err[400];
    if (parse_activations(n, kind, D, acts, err, sizeof err) != TSR_OK)
        return tsr_error(TSR_ERR_PARSE, "%s: %s", n->op->name, err);
    tsr_rnn_act act = TSR_RNN_ACT_TANH;
    if (kind == TSR_RNN_SIMPLE && !rnn_act_of(&acts[0], &act))
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s: the whole node runs Tanh, Relu or Sigmoid",
                         n->op->name);
    const tsr_tensor *X = k->inputs[TSR_RNN_IN_X], *W = k->inputs[TSR_RNN_IN_W],
                     *R = k->inputs[TSR_RNN_IN_R];
    const tsr_tensor *Bt = k->n_inputs > TSR_RNN_IN_B ? k->inputs[TSR_RNN_IN_B] : NULL;
    const tsr_tensor *H0 = k->n_inputs > TSR_RNN_IN_H0 ? k->inputs[TSR_RNN_IN_H0] : NULL;
    const tsr_tensor *C0 = k->n_inputs > TSR_RNN_IN_C0 ? k->inputs[TSR_RNN_IN_C0] : NULL;
    const tsr_tensor *P = k->n_inputs > TSR_RNN_IN_P ? k->inputs[TSR_RNN_IN_P] : NULL;
    if (X->dtype != TSR_FLOAT32 || X->rank != 3 || R->rank != 3)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s: the whole node runs float32 [T, B, I] only",
                         n->op->name);
    int64_t T = X->dims[0], B = X->dims[1], I = X->dims[2], H = R->dims[2];
    int G = gate_count(kind);
    int64_t GH = G * H;
    if (T == 0)
        return tsr_error(TSR_ERR_SHAPE,
                         "X holds a sequence of length 0; %s needs at least one step", n->op->name);
    bool lbr = kind == TSR_RNN_GRU && tsr_attr_int(n, "linear_before_reset");
    const float *x = X->data, *w = W->data, *r = R->data;
    const float *bias = Bt ? Bt->data : NULL, *p = P ? P->data : NULL;
    double *buf = tsr_calloc((size_t)(I + 4 * H + 2 * GH), sizeof *buf);
    double *hs = tsr_calloc((size_t)(2 * B * H), sizeof *hs);
    if (!buf || !hs) {
        free(buf);
        free(hs);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    double *xt = buf, *h = buf + I, *c = h + H, *rh = c + H, *hn = rh + H, *gx = hn + H,
           *gh = gx + GH;
    float *y = k->n_outputs > 0 ? k->outputs[0]->data : NULL;
    for (int d = 0; d < D; d++) {
        bool backward = d == 1 || reverse;
        double *hb = hs, *cb = hs + B * H;
        for (int64_t i = 0; i < B * H; i++) {
            hb[i] = H0 ? ((const float *)H0->data)[d * B * H + i] : 0.0;
            cb[i] = C0 ? ((const float *)C0->data)[d * B * H + i] : 0.0;
        }
        const float *wb = bias ? bias + d * 2 * GH : NULL, *rb = wb ? wb + GH : NULL;
        const float *pd = p ? p + d * 3 * H : NULL;
        for (int64_t pos = 0; pos < T; pos++) {
            int64_t t = backward ? T - 1 - pos : pos;
            for (int64_t b = 0; b < B; b++) {
                for (int64_t i = 0; i < I; i++)
                    xt[i] = x[(t * B + b) * I + i];
                memcpy(h, hb + b * H, sizeof *h * (size_t)H);
                memcpy(c, cb + b * H, sizeof *c * (size_t)H);
                for (int64_t j = 0; j < GH; j++) {
                    gx[j] = row_dot(w, d, GH, j, I, xt) + (wb ? wb[j] : 0.0);
                    gh[j] = row_dot(r, d, GH, j, H, h) + (rb ? rb[j] : 0.0);
                }
                for (int64_t j = 0; j < H; j++) {
                    if (kind == TSR_RNN_SIMPLE) {
                        hn[j] = rnn_act(act, gx[j] + gh[j]);
                    } else if (kind == TSR_RNN_LSTM) {
                        double gi = gx[j] + gh[j] + (pd ? pd[j] * c[j] : 0.0);
                        double gf =
                            gx[2 * H + j] + gh[2 * H + j] + (pd ? pd[2 * H + j] * c[j] : 0.0);
                        double cn =
                            sigmoid(gf) * c[j] + sigmoid(gi) * tanh(gx[3 * H + j] + gh[3 * H + j]);
                        double go = gx[H + j] + gh[H + j] + (pd ? pd[H + j] * cn : 0.0);
                        hn[j] = sigmoid(go) * tanh(cn);
                        cb[b * H + j] = cn;
                    } else {
                        rh[j] = sigmoid(gx[H + j] + gh[H + j]) * h[j];
                    }
                }
                for (int64_t j = 0; kind == TSR_RNN_GRU && j < H; j++) {
                    double z = sigmoid(gx[j] + gh[j]), rr = sigmoid(gx[H + j] + gh[H + j]);
                    double a = lbr ? gx[2 * H + j] + rr * gh[2 * H + j]
                                   : gx[2 * H + j] + row_dot(r, d, GH, 2 * H + j, H, rh) +
                                         (rb ? rb[2 * H + j] : 0.0);
                    hn[j] = (1 - z) * tanh(a) + z * h[j];
                }
                for (int64_t j = 0; j < H; j++) {
                    hb[b * H + j] = hn[j];
                    if (y)
                        y[((t * D + d) * B + b) * H + j] = (float)hn[j];
                }
            }
        }
        for (int o = 1; o < k->n_outputs; o++) {
            float *out = (float *)k->outputs[o]->data + d * B * H;
            const double *src = o == 1 ? hb : cb;
            for (int64_t i = 0; i < B * H; i++)
                out[i] = (float)src[i];
        }
    }
    free(buf);
    free(hs);
    return TSR_OK;
}

static tsr_status rnn_grad(tsr_grad_ctx *c)
{
    return tsr_grad_unsupported(c, "the sequence length is symbolic, so the node is not unrolled "
                                   "into ops with gradients yet; export the model with a fixed "
                                   "sequence length (no dynamic axis on it) to differentiate it");
}

/* -------------------------------------------------------------- expansion */

typedef struct name {
    char s[NAME_LEN];
} name;

typedef struct expander {
    tsr_graph *g;
    const char *stem; /* the node's name, or its op's */
    tsr_dtype dtype;
} expander;

static tsr_status fresh(const expander *e, const char *what, name *out)
{
    char stem[NAME_LEN];
    snprintf(stem, sizeof stem, "%.200s/%.60s", e->stem, what);
    return tsr_graph_unique_name(e->g, stem, out->s, sizeof out->s);
}

/* One node of `op` writing n_out outputs; each is named final[o] when
 * given, else a fresh name from `what`. Inputs may alias outs. */
static tsr_status emit_n(const expander *e, const tsr_op_def *op, const char *what, int n_in,
                         const char *const *ins, int n_attrs, const tsr_attr *attrs, int n_out,
                         const char *const *final, name *outs)
{
    name made[TSR_MAX_NODE_IO];
    const char *out_names[TSR_MAX_NODE_IO];
    for (int o = 0; o < n_out; o++) {
        if (final && final[o])
            snprintf(made[o].s, sizeof made[o].s, "%s", final[o]);
        else {
            /* Fresh names are unique in the graph, so each output needs its own stem. */
            char stem[64];
            snprintf(stem, sizeof stem, o ? "%.40s_%d" : "%.40s", what, o);
            TSR_CHECK(fresh(e, stem, &made[o]));
        }
        out_names[o] = made[o].s;
    }
    TSR_CHECK(tsr_graph_add_node_op(e->g, op, EXPAND_OPSET, made[0].s, n_in, ins, n_out, out_names,
                                    n_attrs, attrs));
    for (int o = 0; o < n_out && outs; o++)
        outs[o] = made[o];
    return TSR_OK;
}

static tsr_status emit(const expander *e, const tsr_op_def *op, const char *what, int n_in,
                       const char *const *ins, int n_attrs, const tsr_attr *attrs,
                       const char *final, name *out)
{
    return emit_n(e, op, what, n_in, ins, n_attrs, attrs, 1, final ? &final : NULL, out);
}

static tsr_status unary(const expander *e, const tsr_op_def *op, const char *x, name *out)
{
    return emit(e, op, op->name, 1, &x, 0, NULL, NULL, out);
}

static tsr_status binary(const expander *e, const tsr_op_def *op, const char *a, const char *b,
                         name *out)
{
    return emit(e, op, op->name, 2, (const char *[]){a, b}, 0, NULL, NULL, out);
}

static tsr_status const_ints(const expander *e, int rank, int n, const int64_t *vals, name *out)
{
    TSR_CHECK(fresh(e, "const", out));
    tsr_tensor t = {.dtype = TSR_INT64, .rank = rank, .dims = {n}, .data = (void *)vals};
    return tsr_graph_add_constant(e->g, out->s, &t);
}

static tsr_status const_scalar(const expander *e, double v, name *out)
{
    TSR_CHECK(fresh(e, "const", out));
    float f = (float)v;
    tsr_tensor t = {
        .dtype = e->dtype, .rank = 0, .data = e->dtype == TSR_FLOAT32 ? (void *)&f : (void *)&v};
    return tsr_graph_add_constant(e->g, out->s, &t);
}

/* x[index] along axis 0 (the axis dropped). */
static tsr_status take(const expander *e, const char *x, int64_t index, name *out)
{
    name idx;
    TSR_CHECK(const_ints(e, 0, 1, &index, &idx));
    tsr_attr axis = TSR_ATTR_I("axis", 0);
    return emit(e, &tsr_op_Gather, "Gather", 2, (const char *[]){x, idx.s}, 1, &axis, NULL, out);
}

/* x[..., start:end] along the last axis. */
static tsr_status slice_last(const expander *e, const char *x, int64_t start, int64_t end,
                             name *out)
{
    name s, en, ax;
    int64_t axis = -1;
    TSR_CHECK(const_ints(e, 1, 1, &start, &s));
    TSR_CHECK(const_ints(e, 1, 1, &end, &en));
    TSR_CHECK(const_ints(e, 1, 1, &axis, &ax));
    return emit(e, &tsr_op_Slice, "Slice", 4, (const char *[]){x, s.s, en.s, ax.s}, 0, NULL, NULL,
                out);
}

/* x split along the last axis into n equal parts. */
static tsr_status split_last(const expander *e, const char *x, int n, int64_t part, name *outs)
{
    int64_t sizes[4] = {part, part, part, part};
    name split;
    TSR_CHECK(const_ints(e, 1, n, sizes, &split));
    tsr_attr axis = TSR_ATTR_I("axis", -1);
    return emit_n(e, &tsr_op_Split, "Split", 2, (const char *[]){x, split.s}, 1, &axis, n, NULL,
                  outs);
}

static tsr_status unsqueeze(const expander *e, const char *x, int n_axes, const int64_t *axes,
                            name *out)
{
    name ax;
    TSR_CHECK(const_ints(e, 1, n_axes, axes, &ax));
    return emit(e, &tsr_op_Unsqueeze, "Unsqueeze", 2, (const char *[]){x, ax.s}, 0, NULL, NULL,
                out);
}

static tsr_status transpose(const expander *e, const char *x, int rank, const int64_t *perm,
                            const char *final, name *out)
{
    tsr_attr p = TSR_ATTR_INTS("perm", perm, (size_t)rank);
    return emit(e, &tsr_op_Transpose, "Transpose", 1, &x, 1, &p, final, out);
}

/* Concat of n values along `axis`, in groups of at most TSR_MAX_NODE_IO. */
static tsr_status concat(const expander *e, name *parts, int n, int64_t axis, const char *final,
                         name *out)
{
    tsr_attr a = TSR_ATTR_I("axis", axis);
    while (n > TSR_MAX_NODE_IO) {
        int groups = (n + TSR_MAX_NODE_IO - 1) / TSR_MAX_NODE_IO;
        for (int gi = 0; gi < groups; gi++) {
            int first = gi * TSR_MAX_NODE_IO;
            int count = n - first < TSR_MAX_NODE_IO ? n - first : TSR_MAX_NODE_IO;
            const char *ins[TSR_MAX_NODE_IO];
            for (int i = 0; i < count; i++)
                ins[i] = parts[first + i].s;
            TSR_CHECK(emit(e, &tsr_op_Concat, "Concat", count, ins, 1, &a, NULL, &parts[gi]));
        }
        n = groups;
    }
    if (n == 1 && !final) {
        *out = parts[0];
        return TSR_OK;
    }
    const char *ins[TSR_MAX_NODE_IO];
    for (int i = 0; i < n; i++)
        ins[i] = parts[i].s;
    if (n == 1)
        return emit(e, &tsr_op_Identity, "Identity", 1, ins, 0, NULL, final, out);
    return emit(e, &tsr_op_Concat, "Concat", n, ins, 1, &a, final, out);
}

static tsr_status activate(const expander *e, const activation *a, const char *x, name *out)
{
    name k1, k2, t;
    switch (a->kind) {
    case ACT_RELU: return unary(e, &tsr_op_Relu, x, out);
    case ACT_TANH: return unary(e, &tsr_op_Tanh, x, out);
    case ACT_SIGMOID: return unary(e, &tsr_op_Sigmoid, x, out);
    case ACT_SOFTPLUS: return unary(e, &tsr_op_Softplus, x, out);
    case ACT_AFFINE:
        TSR_CHECK(const_scalar(e, a->alpha, &k1));
        TSR_CHECK(const_scalar(e, a->beta, &k2));
        TSR_CHECK(binary(e, &tsr_op_Mul, x, k1.s, &t));
        return binary(e, &tsr_op_Add, t.s, k2.s, out);
    case ACT_LEAKY_RELU: {
        tsr_attr p = TSR_ATTR_F("alpha", a->alpha);
        return emit(e, &tsr_op_LeakyRelu, "LeakyRelu", 1, &x, 1, &p, NULL, out);
    }
    case ACT_THRESHOLDED_RELU: {
        name above, zero;
        TSR_CHECK(const_scalar(e, a->alpha, &k1));
        TSR_CHECK(const_scalar(e, 0.0, &zero));
        TSR_CHECK(binary(e, &tsr_op_Greater, x, k1.s, &above));
        return emit(e, &tsr_op_Where, "Where", 3, (const char *[]){above.s, x, zero.s}, 0, NULL,
                    NULL, out);
    }
    case ACT_SCALED_TANH:
        TSR_CHECK(const_scalar(e, a->alpha, &k1));
        TSR_CHECK(const_scalar(e, a->beta, &k2));
        TSR_CHECK(binary(e, &tsr_op_Mul, x, k2.s, &t));
        TSR_CHECK(unary(e, &tsr_op_Tanh, t.s, &t));
        return binary(e, &tsr_op_Mul, t.s, k1.s, out);
    case ACT_HARD_SIGMOID: {
        tsr_attr p[2] = {TSR_ATTR_F("alpha", a->alpha), TSR_ATTR_F("beta", a->beta)};
        return emit(e, &tsr_op_HardSigmoid, "HardSigmoid", 1, &x, 2, p, NULL, out);
    }
    case ACT_ELU: {
        tsr_attr p = TSR_ATTR_F("alpha", a->alpha);
        return emit(e, &tsr_op_Elu, "Elu", 1, &x, 1, &p, NULL, out);
    }
    case ACT_SOFTSIGN:
        TSR_CHECK(const_scalar(e, 1.0, &k1));
        TSR_CHECK(unary(e, &tsr_op_Abs, x, &t));
        TSR_CHECK(binary(e, &tsr_op_Add, t.s, k1.s, &t));
        return binary(e, &tsr_op_Div, x, t.s, out);
    }
    return TSR_ERR_INTERNAL;
}

/* What every step of one direction reads. */
typedef struct direction {
    tsr_rnn_kind kind;
    const activation *acts;        /* activation_count of them */
    const char *clip_lo, *clip_hi; /* NULL: no clip */
    const char *zero;              /* a scalar 0 of the dtype */
    int64_t H;
    name proj;      /* X W^T + biases, [T, B, G*H] */
    name r;         /* R of this direction, [G*H, H] */
    name r_zr, r_h; /* GRU, linear_before_reset = 0: R's z, r rows and h rows */
    name rec_bias;  /* GRU, linear_before_reset = 1: Rb [3H]; else unset */
    bool has_rec_bias;
    bool lbr;
    bool input_forget;
    bool has_peep;
    name p_i, p_o, p_f; /* LSTM peepholes, [H] each */
    bool has_seq;
    name seq; /* sequence_lens as int64 [B] */
    /* LSTM with Sigmoid, Tanh, Tanh and no clip, input_forget or
     * peepholes: each step's gate math is one LSTMCell. */
    bool plain_cell;
} direction;

static tsr_status pre_activation(const expander *e, const direction *d, const char *x, int which,
                                 name *out)
{
    name clipped;
    const char *v = x;
    if (d->clip_lo) {
        TSR_CHECK(emit(e, &tsr_op_Clip, "Clip", 3, (const char *[]){x, d->clip_lo, d->clip_hi}, 0,
                       NULL, NULL, &clipped));
        v = clipped.s;
    }
    return activate(e, &d->acts[which], v, out);
}

/* New state where step t is inside the batch element's sequence, the old
 * one (or zero) past its end. */
static tsr_status masked(const expander *e, const char *mask, const char *fresh_v, const char *old,
                         name *out)
{
    return emit(e, &tsr_op_Where, "Where", 3, (const char *[]){mask, fresh_v, old}, 0, NULL, NULL,
                out);
}

/* One time step: h (and c) from the previous ones (NULL: zero); y gets
 * the step's output. */
static tsr_status step(const expander *e, const direction *d, int64_t t, name *h, bool *h_zero,
                       name *c, bool *c_zero, name *y)
{
    name xt, gates, parts[4], tmp, tmp2, h_new, c_new, mask;
    TSR_CHECK(take(e, d->proj.s, t, &xt));
    if (d->has_seq) {
        name tc;
        TSR_CHECK(const_ints(e, 0, 1, &t, &tc));
        TSR_CHECK(binary(e, &tsr_op_Less, tc.s, d->seq.s, &mask));
        TSR_CHECK(unsqueeze(e, mask.s, 1, (const int64_t[]){1}, &mask));
    }
    tsr_attr trans_b = TSR_ATTR_I("transB", 1);
    int64_t H = d->H;
    if (d->kind == TSR_RNN_LSTM || d->kind == TSR_RNN_SIMPLE) {
        if (*h_zero)
            gates = xt;
        else
            TSR_CHECK(emit(e, &tsr_op_Gemm, "Gemm", 3, (const char *[]){h->s, d->r.s, xt.s}, 1,
                           &trans_b, NULL, &gates));
    }
    if (d->kind == TSR_RNN_SIMPLE) {
        TSR_CHECK(pre_activation(e, d, gates.s, 0, &h_new));
    } else if (d->kind == TSR_RNN_LSTM && d->plain_cell) {
        name hc[2];
        TSR_CHECK(emit_n(e, &tsr_op_LSTMCell, "LSTMCell", *c_zero ? 1 : 2,
                         (const char *[]){gates.s, *c_zero ? NULL : c->s}, 0, NULL, 2, NULL, hc));
        h_new = hc[0];
        c_new = hc[1];
    } else if (d->kind == TSR_RNN_LSTM) {
        name gi, go, gf, gc, i, f, cc, o;
        TSR_CHECK(split_last(e, gates.s, 4, H, parts));
        gi = parts[0], go = parts[1], gf = parts[2], gc = parts[3];
        if (d->has_peep && !*c_zero) {
            TSR_CHECK(binary(e, &tsr_op_Mul, c->s, d->p_i.s, &tmp));
            TSR_CHECK(binary(e, &tsr_op_Add, gi.s, tmp.s, &gi));
        }
        TSR_CHECK(pre_activation(e, d, gi.s, 0, &i));
        if (d->input_forget) {
            name one;
            TSR_CHECK(const_scalar(e, 1.0, &one));
            TSR_CHECK(binary(e, &tsr_op_Sub, one.s, i.s, &f));
        } else {
            if (d->has_peep && !*c_zero) {
                TSR_CHECK(binary(e, &tsr_op_Mul, c->s, d->p_f.s, &tmp));
                TSR_CHECK(binary(e, &tsr_op_Add, gf.s, tmp.s, &gf));
            }
            TSR_CHECK(pre_activation(e, d, gf.s, 0, &f));
        }
        TSR_CHECK(pre_activation(e, d, gc.s, 1, &cc));
        TSR_CHECK(binary(e, &tsr_op_Mul, i.s, cc.s, &c_new));
        if (!*c_zero) {
            TSR_CHECK(binary(e, &tsr_op_Mul, f.s, c->s, &tmp));
            TSR_CHECK(binary(e, &tsr_op_Add, tmp.s, c_new.s, &c_new));
        }
        if (d->has_peep) {
            TSR_CHECK(binary(e, &tsr_op_Mul, c_new.s, d->p_o.s, &tmp));
            TSR_CHECK(binary(e, &tsr_op_Add, go.s, tmp.s, &go));
        }
        TSR_CHECK(pre_activation(e, d, go.s, 0, &o));
        TSR_CHECK(pre_activation(e, d, c_new.s, 2, &tmp));
        TSR_CHECK(binary(e, &tsr_op_Mul, o.s, tmp.s, &h_new));
    } else {
        name xz, xr, xh, z, r, hh, rz, rr, rh;
        TSR_CHECK(split_last(e, xt.s, 3, H, parts));
        xz = parts[0], xr = parts[1], xh = parts[2];
        if (!*h_zero) {
            if (d->lbr)
                TSR_CHECK(emit(e, &tsr_op_Gemm, "Gemm", d->has_rec_bias ? 3 : 2,
                               (const char *[]){h->s, d->r.s, d->rec_bias.s}, 1, &trans_b, NULL,
                               &tmp));
            else
                TSR_CHECK(emit(e, &tsr_op_Gemm, "Gemm", 2, (const char *[]){h->s, d->r_zr.s}, 1,
                               &trans_b, NULL, &tmp));
            TSR_CHECK(split_last(e, tmp.s, d->lbr ? 3 : 2, H, parts));
            rz = parts[0], rr = parts[1], rh = parts[2];
            TSR_CHECK(binary(e, &tsr_op_Add, xz.s, rz.s, &xz));
            TSR_CHECK(binary(e, &tsr_op_Add, xr.s, rr.s, &xr));
        } else if (d->lbr && d->has_rec_bias) {
            /* H_prev = 0: its product is the recurrent bias alone. */
            TSR_CHECK(split_last(e, d->rec_bias.s, 3, H, parts));
            rz = parts[0], rr = parts[1], rh = parts[2];
            TSR_CHECK(binary(e, &tsr_op_Add, xz.s, rz.s, &xz));
            TSR_CHECK(binary(e, &tsr_op_Add, xr.s, rr.s, &xr));
        }
        TSR_CHECK(pre_activation(e, d, xz.s, 0, &z));
        TSR_CHECK(pre_activation(e, d, xr.s, 0, &r));
        if (d->lbr && (!*h_zero || d->has_rec_bias)) {
            TSR_CHECK(binary(e, &tsr_op_Mul, r.s, rh.s, &tmp));
            TSR_CHECK(binary(e, &tsr_op_Add, xh.s, tmp.s, &xh));
        } else if (!d->lbr && !*h_zero) {
            TSR_CHECK(binary(e, &tsr_op_Mul, r.s, h->s, &tmp));
            TSR_CHECK(emit(e, &tsr_op_Gemm, "Gemm", 3, (const char *[]){tmp.s, d->r_h.s, xh.s}, 1,
                           &trans_b, NULL, &xh));
        }
        TSR_CHECK(pre_activation(e, d, xh.s, 1, &hh));
        /* (1 - z) hh + z h_prev, written as hh + z (h_prev - hh). */
        if (*h_zero) {
            TSR_CHECK(binary(e, &tsr_op_Mul, z.s, hh.s, &tmp));
            TSR_CHECK(binary(e, &tsr_op_Sub, hh.s, tmp.s, &h_new));
        } else {
            TSR_CHECK(binary(e, &tsr_op_Sub, h->s, hh.s, &tmp));
            TSR_CHECK(binary(e, &tsr_op_Mul, z.s, tmp.s, &tmp2));
            TSR_CHECK(binary(e, &tsr_op_Add, hh.s, tmp2.s, &h_new));
        }
    }
    if (d->has_seq) {
        TSR_CHECK(masked(e, mask.s, h_new.s, d->zero, y));
        TSR_CHECK(masked(e, mask.s, h_new.s, *h_zero ? d->zero : h->s, h));
        if (d->kind == TSR_RNN_LSTM)
            TSR_CHECK(masked(e, mask.s, c_new.s, *c_zero ? d->zero : c->s, c));
    } else {
        *y = h_new;
        *h = h_new;
        if (d->kind == TSR_RNN_LSTM)
            *c = c_new;
    }
    *h_zero = false;
    if (d->kind == TSR_RNN_LSTM)
        *c_zero = false;
    return TSR_OK;
}

static const char *node_input(const tsr_graph *g, const tsr_node *n, int i)
{
    return i < n->n_inputs && n->inputs[i] >= 0 ? g->values[n->inputs[i]].name : NULL;
}

static tsr_status rnn_expand(tsr_graph *g, const tsr_node *node, const char *const *outputs)
{
    tsr_infer_ctx ic = node_ctx(g, node);
    rnn_shape s;
    TSR_CHECK(read_shape(&ic, &s));
    activation acts[MAX_ACTIVATIONS];
    char err[400];
    TSR_CHECK(parse_activations(node, s.kind, s.n_dirs, acts, err, sizeof err));
    if (s.T == 0)
        return tsr_error(TSR_ERR_SHAPE,
                         "X holds a sequence of length 0; %s needs at least one "
                         "step",
                         node->op->name);
    /* Names of the inputs, copied: the value array moves as nodes are added. */
    name in[8];
    bool has[8];
    for (int i = 0; i < 8; i++) {
        const char *nm = node_input(g, node, i);
        has[i] = nm != NULL;
        snprintf(in[i].s, sizeof in[i].s, "%s", nm ? nm : "");
    }
    expander e = {.g = g,
                  .stem = node->name && *node->name ? node->name : node->op->name,
                  .dtype = g->values[node->inputs[TSR_RNN_IN_X]].dtype};
    int G = gate_count(s.kind), A = activation_count(s.kind);
    int64_t T = s.T, H = s.H, GH = G * H;
    name x = in[TSR_RNN_IN_X], x2, zero, clip_lo, clip_hi, seq;
    if (s.batch_major)
        TSR_CHECK(transpose(&e, in[TSR_RNN_IN_X].s, 3, (const int64_t[]){1, 0, 2}, NULL, &x));
    TSR_CHECK(const_ints(&e, 1, 2, (const int64_t[]){-1, s.I}, &x2));
    TSR_CHECK(
        emit(&e, &tsr_op_Reshape, "Reshape", 2, (const char *[]){x.s, x2.s}, 0, NULL, NULL, &x2));
    TSR_CHECK(const_scalar(&e, 0.0, &zero));
    bool clip = tsr_attr_has(node, "clip");
    if (clip) {
        TSR_CHECK(const_scalar(&e, -tsr_attr_float(node, "clip"), &clip_lo));
        TSR_CHECK(const_scalar(&e, tsr_attr_float(node, "clip"), &clip_hi));
    }
    if (has[TSR_RNN_IN_SEQ]) {
        tsr_attr to = TSR_ATTR_I("to", TSR_INT64);
        TSR_CHECK(emit(&e, &tsr_op_Cast, "Cast", 1, (const char *[]){in[TSR_RNN_IN_SEQ].s}, 1, &to,
                       NULL, &seq));
    }
    name h0 = in[TSR_RNN_IN_H0], c0 = in[TSR_RNN_IN_C0];
    if (s.batch_major && has[TSR_RNN_IN_H0])
        TSR_CHECK(transpose(&e, in[TSR_RNN_IN_H0].s, 3, (const int64_t[]){1, 0, 2}, NULL, &h0));
    if (s.batch_major && has[TSR_RNN_IN_C0])
        TSR_CHECK(transpose(&e, in[TSR_RNN_IN_C0].s, 3, (const int64_t[]){1, 0, 2}, NULL, &c0));

    name *ys = tsr_calloc((size_t)(T * s.n_dirs), sizeof *ys);
    if (!ys)
        return TSR_ERR_OUT_OF_MEMORY;
    name hs[2], cs[2];
    tsr_status st = TSR_OK;
    for (int dir = 0; dir < s.n_dirs && st == TSR_OK; dir++) {
        direction d = {.kind = s.kind,
                       .acts = &acts[dir * A],
                       .clip_lo = clip ? clip_lo.s : NULL,
                       .clip_hi = clip ? clip_hi.s : NULL,
                       .zero = zero.s,
                       .H = H,
                       .lbr = s.kind == TSR_RNN_GRU && tsr_attr_int(node, "linear_before_reset"),
                       .input_forget = s.kind == TSR_RNN_LSTM && tsr_attr_int(node, "input_forget"),
                       .has_peep = s.kind == TSR_RNN_LSTM && has[TSR_RNN_IN_P],
                       .has_seq = has[TSR_RNN_IN_SEQ]};
        if (has[TSR_RNN_IN_SEQ])
            d.seq = seq;
        d.plain_cell = s.kind == TSR_RNN_LSTM && !clip && !d.input_forget && !d.has_peep &&
                       d.acts[0].kind == ACT_SIGMOID && d.acts[1].kind == ACT_TANH &&
                       d.acts[2].kind == ACT_TANH;
        name w, bias, wb, rb;
        bool has_x_bias = false;
#define DIR_TRY(expr)                                                                              \
    if ((st = (expr)) != TSR_OK)                                                                   \
    break
        DIR_TRY(take(&e, in[TSR_RNN_IN_W].s, dir, &w));
        DIR_TRY(take(&e, in[TSR_RNN_IN_R].s, dir, &d.r));
        if (has[TSR_RNN_IN_B]) {
            DIR_TRY(take(&e, in[TSR_RNN_IN_B].s, dir, &bias));
            DIR_TRY(slice_last(&e, bias.s, 0, GH, &wb));
            DIR_TRY(slice_last(&e, bias.s, GH, 2 * GH, &rb));
            has_x_bias = true;
            if (d.lbr) {
                d.rec_bias = rb;
                d.has_rec_bias = true;
            } else {
                DIR_TRY(binary(&e, &tsr_op_Add, wb.s, rb.s, &wb));
            }
        }
        if (s.kind == TSR_RNN_GRU && !d.lbr) {
            /* Rows of R: z and r together, then h. */
            name starts, ends, axes;
            int64_t axis0 = 0;
            DIR_TRY(const_ints(&e, 1, 1, (const int64_t[]){0}, &starts));
            DIR_TRY(const_ints(&e, 1, 1, (const int64_t[]){2 * H}, &ends));
            DIR_TRY(const_ints(&e, 1, 1, &axis0, &axes));
            DIR_TRY(emit(&e, &tsr_op_Slice, "Slice", 4,
                         (const char *[]){d.r.s, starts.s, ends.s, axes.s}, 0, NULL, NULL,
                         &d.r_zr));
            DIR_TRY(const_ints(&e, 1, 1, (const int64_t[]){2 * H}, &starts));
            DIR_TRY(const_ints(&e, 1, 1, (const int64_t[]){3 * H}, &ends));
            DIR_TRY(emit(&e, &tsr_op_Slice, "Slice", 4,
                         (const char *[]){d.r.s, starts.s, ends.s, axes.s}, 0, NULL, NULL, &d.r_h));
        }
        if (d.has_peep) {
            name p;
            DIR_TRY(take(&e, in[TSR_RNN_IN_P].s, dir, &p));
            DIR_TRY(slice_last(&e, p.s, 0, H, &d.p_i));
            DIR_TRY(slice_last(&e, p.s, H, 2 * H, &d.p_o));
            DIR_TRY(slice_last(&e, p.s, 2 * H, 3 * H, &d.p_f));
        }
        tsr_attr trans_b = TSR_ATTR_I("transB", 1);
        DIR_TRY(emit(&e, &tsr_op_Gemm, "Gemm", has_x_bias ? 3 : 2,
                     (const char *[]){x2.s, w.s, wb.s}, 1, &trans_b, NULL, &d.proj));
        name shape;
        DIR_TRY(const_ints(&e, 1, 3, (const int64_t[]){T, -1, GH}, &shape));
        DIR_TRY(emit(&e, &tsr_op_Reshape, "Reshape", 2, (const char *[]){d.proj.s, shape.s}, 0,
                     NULL, NULL, &d.proj));
        bool h_zero = !has[TSR_RNN_IN_H0], c_zero = !has[TSR_RNN_IN_C0];
        if (!h_zero)
            DIR_TRY(take(&e, h0.s, dir, &hs[dir]));
        if (!c_zero)
            DIR_TRY(take(&e, c0.s, dir, &cs[dir]));
        bool backward = dir == 1 || s.reverse;
        for (int64_t k = 0; k < T && st == TSR_OK; k++) {
            int64_t t = backward ? T - 1 - k : k;
            name y;
            st = step(&e, &d, t, &hs[dir], &h_zero, &cs[dir], &c_zero, &y);
            if (st == TSR_OK)
                st = unsqueeze(&e, y.s, 2, (const int64_t[]){0, 1}, &ys[dir * T + t]);
        }
#undef DIR_TRY
    }
    /* Y [T, D, B, H]: time steps along axis 0 per direction, directions along 1. */
    name yd[2], y, hcat[2];
    for (int dir = 0; dir < s.n_dirs && st == TSR_OK; dir++)
        st = concat(&e, &ys[dir * T], (int)T, 0, NULL, &yd[dir]);
    free(ys);
    bool batch_major = s.batch_major;
    static const int64_t y_perm[4] = {2, 0, 1, 3}, h_perm[3] = {1, 0, 2};
    if (st == TSR_OK && node->n_outputs >= 1) {
        st = concat(&e, yd, s.n_dirs, 1, batch_major ? NULL : outputs[0], &y);
        if (st == TSR_OK && batch_major)
            st = transpose(&e, y.s, 4, y_perm, outputs[0], &y);
    }
    for (int o = 1; o < node->n_outputs && st == TSR_OK; o++) {
        name *states = o == 1 ? hs : cs;
        for (int dir = 0; dir < s.n_dirs && st == TSR_OK; dir++)
            st = unsqueeze(&e, states[dir].s, 1, (const int64_t[]){0}, &hcat[dir]);
        if (st == TSR_OK)
            st = concat(&e, hcat, s.n_dirs, 0, batch_major ? NULL : outputs[o], &y);
        if (st == TSR_OK && batch_major)
            st = transpose(&e, y.s, 3, h_perm, outputs[o], &y);
    }
    return st;
}

static const tsr_attr_def rnn_attrs[] = {{"activation_alpha", TSR_ATTR_FLOATS},
                                         {"activation_beta", TSR_ATTR_FLOATS},
                                         {"activations", TSR_ATTR_STRING},
                                         {"clip", TSR_ATTR_FLOAT},
                                         {"direction", TSR_ATTR_STRING, .s = "forward"},
                                         {"hidden_size", TSR_ATTR_INT},
                                         {"layout", TSR_ATTR_INT, .i = 0},
                                         {NULL}};
static const tsr_attr_def lstm_attrs[] = {{"activation_alpha", TSR_ATTR_FLOATS},
                                          {"activation_beta", TSR_ATTR_FLOATS},
                                          {"activations", TSR_ATTR_STRING},
                                          {"clip", TSR_ATTR_FLOAT},
                                          {"direction", TSR_ATTR_STRING, .s = "forward"},
                                          {"hidden_size", TSR_ATTR_INT},
                                          {"input_forget", TSR_ATTR_INT, .i = 0},
                                          {"layout", TSR_ATTR_INT, .i = 0},
                                          {NULL}};
static const tsr_attr_def gru_attrs[] = {{"activation_alpha", TSR_ATTR_FLOATS},
                                         {"activation_beta", TSR_ATTR_FLOATS},
                                         {"activations", TSR_ATTR_STRING},
                                         {"clip", TSR_ATTR_FLOAT},
                                         {"direction", TSR_ATTR_STRING, .s = "forward"},
                                         {"hidden_size", TSR_ATTR_INT},
                                         {"layout", TSR_ATTR_INT, .i = 0},
                                         {"linear_before_reset", TSR_ATTR_INT, .i = 0},
                                         {NULL}};

#define RNN_OP(ID, ATTRS, MAX_IN, MAX_OUT)                                                         \
    const tsr_op_def tsr_op_##ID = {                                                               \
        .name = #ID,                                                                               \
        .domain = "",                                                                              \
        .min_inputs = 3,                                                                           \
        .max_inputs = MAX_IN,                                                                      \
        .min_outputs = 1,                                                                          \
        .max_outputs = MAX_OUT,                                                                    \
        .attrs = ATTRS,                                                                            \
        .locality = TSR_LOCALITY_COMPUTE,                                                          \
        .infer = rnn_infer,                                                                        \
        .grad = rnn_grad,                                                                          \
        .expandable = rnn_expandable,                                                              \
        .expand = rnn_expand,                                                                      \
        .ref = rnn_ref,                                                                            \
    };

RNN_OP(LSTM, lstm_attrs, 8, 3)
RNN_OP(GRU, gru_attrs, 6, 2)
RNN_OP(RNN, rnn_attrs, 6, 2)
/* ---------------------------------------------------------------- LSTMCell */

/* LSTMCell (domain ai.tessera): one step of ONNX's LSTM with its default
 * activations, no clip, peepholes or input_forget, after the products:
 *
 *   LSTMCell(gates [B, 4H], c_prev [B, H] (optional: zero)) -> h [B, H], c [B, H]
 *   i = σ(gates[:, 0:H]), o = σ(gates[:, H:2H]), f = σ(gates[:, 2H:3H]),
 *   g = tanh(gates[:, 3H:4H]), c = f c_prev + i g, h = o tanh(c)
 *
 * The expansion writes each such step as Gemm then this one node instead
 * of ten element-wise nodes (one dispatch instead of ten, and the gates
 * read once). Its gradient is written in those element-wise ops, so
 * derivatives of every order follow from theirs. */
static const tsr_attr_def lstm_cell_attrs[] = {{NULL}};

static tsr_status lstm_cell_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *g = c->inputs[0], *cp = c->n_inputs > 1 ? c->inputs[1] : NULL;
    if (g->rank != 2 || (tsr_dim_known(g->dims[1]) && g->dims[1] % 4)) {
        char got[128];
        tsr_shape_format(got, sizeof got, g->rank, g->dims);
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "gates ('%s') has shape %s; it must be [batch, 4 * hidden]", g->name,
                               got);
    }
    int64_t h[2] = {g->dims[0], tsr_dim_known(g->dims[1]) ? g->dims[1] / 4 : TSR_DIM_UNKNOWN};
    if (cp) {
        if (cp->dtype != g->dtype)
            return tsr_infer_error(c, TSR_ERR_DTYPE, "c_prev is %s but gates are %s",
                                   tsr_dtype_name(cp->dtype), tsr_dtype_name(g->dtype));
        bool ok = cp->rank == 2;
        for (int d = 0; ok && d < 2; d++)
            ok = !tsr_dim_known(cp->dims[d]) || !tsr_dim_known(h[d]) || cp->dims[d] == h[d];
        if (!ok) {
            char got[128], want[128];
            tsr_shape_format(got, sizeof got, cp->rank, cp->dims);
            tsr_shape_format(want, sizeof want, 2, h);
            return tsr_infer_error(c, TSR_ERR_SHAPE, "c_prev ('%s') has shape %s, expected %s",
                                   cp->name, got, want);
        }
    }
    tsr_infer_set(c, 0, g->dtype, 2, h);
    tsr_infer_set(c, 1, g->dtype, 2, h);
    return TSR_OK;
}

const tsr_tensor *tsr_lstm_cell_c_prev(const tsr_kernel_ctx *k)
{
    return k->n_inputs > 1 ? k->inputs[1] : NULL;
}

tsr_status tsr_lstm_cell_check_run(const tsr_kernel_ctx *k, int64_t *batch, int64_t *hidden)
{
    const tsr_tensor *g = k->inputs[0], *cp = tsr_lstm_cell_c_prev(k);
    if (g->rank != 2 || g->dims[1] % 4 ||
        (cp && (cp->rank != 2 || cp->dims[0] != g->dims[0] || cp->dims[1] != g->dims[1] / 4)))
        return tsr_error(TSR_ERR_SHAPE, "LSTMCell: gates must be [B, 4H] and c_prev [B, H]");
    *batch = g->dims[0];
    *hidden = g->dims[1] / 4;
    return TSR_OK;
}

static double cell_at(const tsr_tensor *t, int64_t i)
{
    return t->dtype == TSR_FLOAT64 ? ((const double *)t->data)[i] : ((const float *)t->data)[i];
}

static void cell_put(tsr_tensor *t, int64_t i, double v)
{
    if (t->dtype == TSR_FLOAT64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

static tsr_status lstm_cell_ref(const tsr_kernel_ctx *k)
{
    int64_t B = 0, H = 0;
    TSR_CHECK(tsr_lstm_cell_check_run(k, &B, &H));
    const tsr_tensor *g = k->inputs[0], *cp = tsr_lstm_cell_c_prev(k);
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < H; j++) {
            int64_t row = b * 4 * H;
            double i = sigmoid(cell_at(g, row + j)), o = sigmoid(cell_at(g, row + H + j));
            double f = sigmoid(cell_at(g, row + 2 * H + j)), gg = tanh(cell_at(g, row + 3 * H + j));
            double c = i * gg + (cp ? f * cell_at(cp, b * H + j) : 0.0);
            cell_put(k->outputs[1], b * H + j, c);
            cell_put(k->outputs[0], b * H + j, o * tanh(c));
        }
    return TSR_OK;
}

/* With a gate's activation s = σ(x): ds/dx = s (1 - s) = s - s². */
static tsr_status sigmoid_slope(tsr_grad_ctx *c, const char *s, const char **out)
{
    const char *sq;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, s, s, &sq));
    return tsr_grad_binary(c, &tsr_op_Sub, s, sq, out);
}

/* tanh: 1 - t². */
static tsr_status tanh_slope(tsr_grad_ctx *c, const char *t, tsr_dtype dt, const char **out)
{
    const char *sq, *one;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, t, t, &sq));
    TSR_CHECK(tsr_grad_scalar(c, 1.0, dt, &one));
    return tsr_grad_binary(c, &tsr_op_Sub, one, sq, out);
}

static tsr_status lstm_cell_grad(tsr_grad_ctx *c)
{
    const char *gates = tsr_grad_input(c, 0), *cp = tsr_grad_input(c, 1);
    const char *dh = tsr_grad_dy(c, 0), *dc = tsr_grad_dy(c, 1);
    const tsr_value *gv = tsr_grad_value(c, gates);
    if (!tsr_dim_known(gv->dims[1]))
        return tsr_grad_unsupported(c, "the hidden size is not known before run time");
    int64_t H = gv->dims[1] / 4;
    tsr_dtype dt = gv->dtype;
    if (!dh && !dc)
        return TSR_OK;
    const char *split, *x[4], *i, *o, *f, *g, *cn, *tc;
    TSR_CHECK(tsr_grad_ints(c, 4, (const int64_t[]){H, H, H, H}, &split));
    tsr_attr axis = TSR_ATTR_I("axis", 1);
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Split, 2, (const char *[]){gates, split}, 1, &axis, 4, x));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sigmoid, x[0], &i));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sigmoid, x[1], &o));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Sigmoid, x[2], &f));
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Tanh, x[3], &g));
    /* The outputs' own values would do for c and h, but the rule must not
     * assume them kept: recomputed from the gates, as the forward did. */
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, i, g, &cn));
    if (cp) {
        const char *fc;
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, f, cp, &fc));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, cn, fc, &cn));
    }
    TSR_CHECK(tsr_grad_unary(c, &tsr_op_Tanh, cn, &tc));
    /* The total gradient of the new cell state: dc + dh o (1 - tanh(c)²). */
    const char *dct = dc, *d[4], *slope, *t;
    if (dh) {
        TSR_CHECK(tanh_slope(c, tc, dt, &slope));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dh, o, &t));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, t, slope, &t));
        if (dct)
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, dct, t, &dct));
        else
            dct = t;
    }
    if (tsr_grad_wants(c, 0)) {
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dct, g, &t));
        TSR_CHECK(sigmoid_slope(c, i, &slope));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, t, slope, &d[0]));
        TSR_CHECK(sigmoid_slope(c, o, &slope));
        if (dh) {
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dh, tc, &t));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, t, slope, &d[1]));
        } else {
            TSR_CHECK(tsr_grad_zeros_like(c, x[1], &d[1]));
        }
        if (cp) {
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dct, cp, &t));
            TSR_CHECK(sigmoid_slope(c, f, &slope));
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, t, slope, &d[2]));
        } else {
            TSR_CHECK(tsr_grad_zeros_like(c, x[2], &d[2]));
        }
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dct, i, &t));
        TSR_CHECK(tanh_slope(c, g, dt, &slope));
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, t, slope, &d[3]));
        const char *dg;
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Concat, 4, d, 1, &axis, 1, &dg));
        TSR_CHECK(tsr_grad_contribute(c, 0, dg));
    }
    if (cp && tsr_grad_wants(c, 1)) {
        TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, dct, f, &t));
        TSR_CHECK(tsr_grad_contribute(c, 1, t));
    }
    return TSR_OK;
}

const tsr_op_def tsr_op_LSTMCell = {
    .name = "LSTMCell",
    .domain = "ai.tessera",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 2,
    .max_outputs = 2,
    .attrs = lstm_cell_attrs,
    .locality = TSR_LOCALITY_COMPUTE,
    .infer = lstm_cell_infer,
    .ref = lstm_cell_ref,
    .grad = lstm_cell_grad,
};

/* Fusing what follows a convolution into it: an Add of a same-shaped
 * tensor (ResNet's residual), then an activation (Relu, Clip(0, 6) in
 * MobileNet, ...). The result is one FusedConv, which the cpu backend runs
 * as one oneDNN convolution with post-ops, so the output makes one trip
 * through memory instead of three. Only a convolution output that nothing
 * else reads is fused: another reader needs the unfused value. */
#include "passes/passes.h"

#include "ir/rewrite.h"

#include <math.h>

/* The FusedConv opset: the ai.tessera domain has one version so far. */
#define FUSED_OPSET 1

static bool same_shape(const tsr_value *a, const tsr_value *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank || a->rank < 0)
        return false;
    for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d] || a->dims[d] == TSR_DIM_UNKNOWN)
            return false;
    return true;
}

/* A constant scalar bound of Clip, or `absent` when the input is omitted. */
static bool clip_bound(const tsr_graph *g, const tsr_node *n, int input, double absent, double *out)
{
    if (input >= n->n_inputs || n->inputs[input] < 0) {
        *out = absent;
        return true;
    }
    const tsr_value *v = &g->values[n->inputs[input]];
    if (!v->data || !tsr_dtype_is_float(v->dtype) || tsr_shape_numel(v->rank, v->dims) != 1)
        return false;
    tsr_tensor t = tsr_value_tensor(v);
    *out = tsr_get_f(&t, 0);
    return true;
}

/* The FusedConv attributes that reproduce activation node `act`; false
 * if FusedConv has no such activation. attrs has room for three. */
static bool activation_attrs(const tsr_graph *g, const tsr_node *act, tsr_attr *attrs, int *count)
{
    const tsr_op_def *op = act->op;
    double alpha = 0.0, beta = 0.0;
    bool params = false;
    if (op == &tsr_op_LeakyRelu) {
        alpha = tsr_attr_float(act, "alpha");
        params = true;
    } else if (op == &tsr_op_HardSigmoid) {
        alpha = tsr_attr_float(act, "alpha");
        beta = tsr_attr_float(act, "beta");
        params = true;
    } else if (op == &tsr_op_Clip) {
        /* An empty range (min > max, or NaN) is left to the unfused Clip,
         * whose meaning ONNX pins down; fused epilogues assume min <= max. */
        if (!clip_bound(g, act, 1, -INFINITY, &alpha) || !clip_bound(g, act, 2, INFINITY, &beta) ||
            !(alpha <= beta))
            return false;
        params = true;
    } else if (op != &tsr_op_Relu && op != &tsr_op_Sigmoid && op != &tsr_op_HardSwish &&
               op != &tsr_op_Tanh && op != &tsr_op_Silu) {
        return false;
    }
    attrs[0] = TSR_ATTR_S("activation", op->name);
    *count = 1;
    if (params) {
        attrs[1] = TSR_ATTR_F("activation_alpha", alpha);
        attrs[2] = TSR_ATTR_F("activation_beta", beta);
        *count = 3;
    }
    return true;
}

/* Fuses the sole reader of convolution c's output into c; true if it did
 * (c then sits where the reader was). */
static bool fuse_one(tsr_graph *g, int c)
{
    const tsr_node *conv = &g->nodes[c];
    if (conv->op != &tsr_op_Conv && conv->op != &tsr_op_FusedConv)
        return false;
    bool has_z = conv->n_inputs > 3 && conv->inputs[3] >= 0;
    bool has_act = conv->op == &tsr_op_FusedConv && *tsr_attr_string(conv, "activation");
    int y = conv->outputs[0];
    int r = tsr_rewrite_sole_reader(g, y);
    if (has_act || r < 0)
        return false;
    const tsr_node *reader = &g->nodes[r];
    int inputs[4] = {conv->inputs[0], conv->inputs[1], conv->n_inputs > 2 ? conv->inputs[2] : -1,
                     has_z ? conv->inputs[3] : -1};
    tsr_attr attrs[3];
    int n_attrs = 0;
    if (reader->op == &tsr_op_Add && reader->n_inputs == 2) {
        int other = reader->inputs[0] == y ? reader->inputs[1] : reader->inputs[0];
        /* The residual joins before any activation, and only once. The
         * other operand is an input of the Add, so it exists before the
         * Add's place, where the fused node goes. */
        if (has_z || !same_shape(&g->values[other], &g->values[y]))
            return false;
        inputs[3] = other;
    } else if (reader->inputs[0] != y || !activation_attrs(g, reader, attrs, &n_attrs)) {
        return false;
    }
    int n_inputs = inputs[3] >= 0 ? 4 : conv->n_inputs;
    if (tsr_rewrite_change_node(g, c, &tsr_op_FusedConv, FUSED_OPSET, n_inputs, inputs, n_attrs,
                                attrs) != TSR_OK)
        return false;
    tsr_rewrite_absorb(g, c, r);
    return true;
}

bool tsr_pass_fuse_conv(tsr_graph *g)
{
    /* A fused node moves forward to its reader's place, where the loop
     * meets it again and can fuse the next step of the chain. */
    return tsr_pass_fuse_each(g, fuse_one);
}

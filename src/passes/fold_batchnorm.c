/* Folding inference BatchNormalization into the convolution before it:
 * BN(conv(x)) = conv(x) * s + (beta - mean * s) with s = scale / sqrt(var
 * + eps) per output channel, so scaling W's output channels by s and
 * setting the bias to (B - mean) * s + beta gives the same result with one
 * pass over the output fewer. */
#include "passes/passes.h"

#include "ir/rewrite.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A constant that folding may read: not a parameter, whose contents a
 * training step could still change. */
static const tsr_value *foldable_const(const tsr_graph *g, int v)
{
    if (v < 0 || !g->values[v].data || g->values[v].is_param)
        return NULL;
    return &g->values[v];
}

/* A convolution whose output BN may scale: a Conv, or a FusedConv that
 * adds nothing and applies no activation after the convolution. */
static bool plain_conv(const tsr_node *n)
{
    if (n->op == &tsr_op_Conv)
        return true;
    return n->op == &tsr_op_FusedConv && !*tsr_attr_string(n, "activation") &&
           (n->n_inputs < 4 || n->inputs[3] < 0);
}

static bool vector_of(const tsr_value *v, tsr_dtype dtype, int64_t length)
{
    return v && v->dtype == dtype && v->rank == 1 && v->dims[0] == length;
}

/* Folds BN node `bn` into the convolution that produces its input, if
 * everything it needs is constant. */
static bool fold_one(tsr_graph *g, int bn)
{
    const tsr_node *norm = &g->nodes[bn];
    int x = norm->inputs[0];
    int c = g->values[x].producer;
    if (c < 0 || !plain_conv(&g->nodes[c]) || tsr_rewrite_sole_reader(g, x) != bn)
        return false;
    const tsr_node *conv = &g->nodes[c];
    const tsr_value *w = foldable_const(g, conv->inputs[1]);
    if (!w || !tsr_dtype_is_float(w->dtype) || w->rank < 3)
        return false;
    int64_t m = w->dims[0];
    int has_bias = conv->n_inputs > 2 && conv->inputs[2] >= 0;
    const tsr_value *bias = has_bias ? foldable_const(g, conv->inputs[2]) : NULL;
    if (has_bias && !vector_of(bias, w->dtype, m))
        return false;
    const tsr_value *params[4];
    for (int i = 0; i < 4; i++) {
        params[i] = foldable_const(g, norm->inputs[1 + i]);
        if (!vector_of(params[i], w->dtype, m))
            return false;
    }
    double eps = tsr_attr_float(norm, "epsilon");

    tsr_tensor wt = tsr_value_tensor(w), new_w = wt;
    tsr_tensor new_b = {.dtype = w->dtype, .rank = 1, .dims = {m}};
    int64_t per_channel = tsr_tensor_numel(&wt) / (m > 0 ? m : 1);
    new_w.data = tsr_malloc(tsr_tensor_bytes(&wt) + 1);
    new_b.data = tsr_malloc(tsr_tensor_bytes(&new_b) + 1);
    bool done = false;
    if (!new_w.data || !new_b.data)
        goto cleanup;
    tsr_tensor scale = tsr_value_tensor(params[0]), beta = tsr_value_tensor(params[1]);
    tsr_tensor mean = tsr_value_tensor(params[2]), var = tsr_value_tensor(params[3]);
    tsr_tensor old_b = bias ? tsr_value_tensor(bias) : new_b;
    for (int64_t ch = 0; ch < m; ch++) {
        double s = tsr_get_f(&scale, ch) / sqrt(tsr_get_f(&var, ch) + eps);
        double b0 = bias ? tsr_get_f(&old_b, ch) : 0.0;
        tsr_set_f(&new_b, ch, (b0 - tsr_get_f(&mean, ch)) * s + tsr_get_f(&beta, ch));
        for (int64_t i = ch * per_channel; i < (ch + 1) * per_channel; i++)
            tsr_set_f(&new_w, i, tsr_get_f(&wt, i) * s);
    }

    /* Adding constants may move g->values: take what is needed first. */
    char w_stem[256], b_stem[256];
    snprintf(w_stem, sizeof w_stem, "%s_bn", w->name);
    snprintf(b_stem, sizeof b_stem, "%s_bn", bias ? bias->name : g->values[conv->outputs[0]].name);
    int op_inputs[4] = {conv->inputs[0], -1, -1, -1};
    int n_inputs = conv->n_inputs > 3 ? conv->n_inputs : 3;
    const tsr_op_def *op = conv->op;
    int opset = conv->opset;
    if (tsr_rewrite_add_constant(g, w_stem, &new_w, &op_inputs[1]) != TSR_OK ||
        tsr_rewrite_add_constant(g, b_stem, &new_b, &op_inputs[2]) != TSR_OK ||
        tsr_rewrite_change_node(g, c, op, opset, n_inputs, op_inputs, 0, NULL) != TSR_OK)
        goto cleanup;
    tsr_rewrite_absorb(g, c, bn);
    done = true;
cleanup:
    free(new_w.data);
    free(new_b.data);
    return done;
}

bool tsr_pass_fold_batchnorm(tsr_graph *g)
{
    bool changed = false;
    int n = 0;
    while (n < g->n_nodes) {
        /* A fold removes the BN node, moving the next one into slot n. */
        if (g->nodes[n].op == &tsr_op_BatchNormalization && g->nodes[n].n_outputs == 1 &&
            fold_one(g, n))
            changed = true;
        else
            n++;
    }
    return changed;
}

/* Folding SiLU as exporters write it, Mul(x, Sigmoid(x)) (torch's
 * nn.SiLU and F.silu below opset 24, which has no such op), into one
 * ai.tessera::Silu node: one pass through memory instead of two, and a
 * convolution before it can then take it as its activation (fuse_conv).
 * Only a Sigmoid whose output the Mul alone reads is folded. */
#include "passes/passes.h"

#include "ir/rewrite.h"

/* The Silu opset: the ai.tessera domain has one version so far. */
#define SILU_OPSET 1

/* Folds the Sigmoid node s and the Mul reading it; true if it did. */
static bool fuse_one(tsr_graph *g, int s)
{
    const tsr_node *sig = &g->nodes[s];
    if (sig->op != &tsr_op_Sigmoid)
        return false;
    int x = sig->inputs[0], sy = sig->outputs[0];
    int m = tsr_rewrite_sole_reader(g, sy);
    if (m < 0)
        return false;
    const tsr_node *mul = &g->nodes[m];
    if (mul->op != &tsr_op_Mul || mul->n_inputs != 2 ||
        !((mul->inputs[0] == x && mul->inputs[1] == sy) ||
          (mul->inputs[0] == sy && mul->inputs[1] == x)))
        return false;
    const tsr_value *xv = &g->values[x];
    if (xv->dtype != TSR_FLOAT32 && xv->dtype != TSR_FLOAT64)
        return false;
    if (tsr_rewrite_change_node(g, m, &tsr_op_Silu, SILU_OPSET, 1, &x, 0, NULL) != TSR_OK)
        return false;
    tsr_rewrite_remove_node(g, s);
    return true;
}

bool tsr_pass_fuse_silu(tsr_graph *g)
{
    return tsr_pass_fuse_each(g, fuse_one);
}

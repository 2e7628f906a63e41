/* Fusing an Add after a two-dimensional MatMul into Gemm's C: Add(A B, C)
 * is Gemm(A, B, C) with alpha = beta = 1, which the cpu backend runs as
 * one oneDNN matmul: C as a bias when it is one row, else accumulated
 * onto in place with a sum post-op (the matmul's output takes over C's
 * buffer where the Gemm reads C last). Sums of matrix products are what
 * reverse mode writes for a value that several MatMuls read (the forces
 * of an interatomic potential: one per path of the radial weights), and
 * a linear layer exported as MatMul then Add of its bias is one too.
 * Only a MatMul output that nothing else reads is fused, and only a C
 * that broadcasts to the product's shape (the Add's output is then the
 * product's shape too); in float64, only a C of the product's shape, the
 * one the cpu backend's float64 kernel accumulates onto. */
#include "passes/passes.h"

#include "ir/rewrite.h"

/* Whether c broadcasts to [m, n] without growing it: rank 2 or less,
 * each of its trailing dims 1 or the product's. */
static bool broadcasts_to(const tsr_value *c, const tsr_value *y)
{
    if (c->rank < 0 || c->rank > 2 || y->rank != 2)
        return false;
    for (int d = 0; d < c->rank; d++) {
        int64_t v = c->dims[d], want = y->dims[2 - c->rank + d];
        if (v != 1 && (v != want || v == TSR_DIM_UNKNOWN))
            return false;
    }
    return true;
}

/* Fuses the Add reading MatMul m's output into m; true if it did (m then
 * sits where the Add was). */
static bool fuse_one(tsr_graph *g, int m)
{
    const tsr_node *mm = &g->nodes[m];
    if (mm->op != &tsr_op_MatMul)
        return false;
    const tsr_value *a = &g->values[mm->inputs[0]], *b = &g->values[mm->inputs[1]];
    int y = mm->outputs[0];
    const tsr_value *yv = &g->values[y];
    if (a->rank != 2 || b->rank != 2 || (yv->dtype != TSR_FLOAT32 && yv->dtype != TSR_FLOAT64))
        return false;
    int r = tsr_rewrite_sole_reader(g, y);
    if (r < 0)
        return false;
    const tsr_node *add = &g->nodes[r];
    if (add->op != &tsr_op_Add || add->n_inputs != 2 || add->inputs[0] == add->inputs[1])
        return false;
    /* The other operand is an input of the Add, so it exists before the
     * Add's place, where the fused node goes. */
    int c = add->inputs[0] == y ? add->inputs[1] : add->inputs[0];
    const tsr_value *cv = &g->values[c];
    if (cv->dtype != yv->dtype || !broadcasts_to(cv, yv) ||
        (yv->dtype == TSR_FLOAT64 &&
         (cv->rank != 2 || cv->dims[0] != yv->dims[0] || cv->dims[1] != yv->dims[1])))
        return false;
    int inputs[3] = {mm->inputs[0], mm->inputs[1], c};
    tsr_attr attrs[2] = {TSR_ATTR_F("alpha", 1.0), TSR_ATTR_F("beta", 1.0)};
    if (tsr_rewrite_change_node(g, m, &tsr_op_Gemm, mm->opset, 3, inputs, 2, attrs) != TSR_OK)
        return false;
    tsr_rewrite_absorb(g, m, r);
    return true;
}

bool tsr_pass_fuse_gemm(tsr_graph *g)
{
    return tsr_pass_fuse_each(g, fuse_one);
}

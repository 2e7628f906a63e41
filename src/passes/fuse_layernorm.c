/* Folding a layer normalization that an exporter wrote out op by op into
 * one LayerNormalization node. torch 1.13 writes nn.LayerNorm below opset
 * 17 (where the op does not exist) as
 *
 *     m = ReduceMean(x)        over the trailing axes, keepdims
 *     d = Sub(x, m)
 *     v = ReduceMean(Pow(d, 2))
 *     n = Div(d, Sqrt(Add(v, eps)))
 *     y = Add(Mul(n, scale), bias)
 *
 * nine nodes and nine trips through memory, where the cpu backend runs
 * LayerNormalization as one pass over each row. Only a chain whose
 * intermediate values nothing else reads is folded; the bias Add is
 * optional, the scale Mul is not (LayerNormalization needs a scale). */
#include "passes/passes.h"

#include "ir/rewrite.h"
#include "ops/reduce.h"

/* LayerNormalization comes with opset 17. */
#define LAYERNORM_OPSET 17

/* The first reduced axis when ReduceMean node n reduces exactly the
 * trailing axes [axis, rank) of its input and keeps them; else -1. */
static int trailing_axis(const tsr_graph *g, const tsr_node *n)
{
    bool mask[TSR_MAX_RANK];
    if (n->op != &tsr_op_ReduceMean || tsr_attr_int(n, "keepdims") != 1 ||
        !tsr_reduce_graph_mask(g, n, mask))
        return -1;
    int rank = g->values[n->inputs[0]].rank, axis = rank;
    while (axis > 0 && mask[axis - 1])
        axis--;
    for (int d = 0; d < axis; d++)
        if (mask[d])
            return -1;
    return axis < rank ? axis : -1;
}

static bool scalar_constant(const tsr_graph *g, int v, double *out)
{
    const tsr_value *c = &g->values[v];
    if (!c->data || !tsr_dtype_is_float(c->dtype) || tsr_shape_numel(c->rank, c->dims) != 1)
        return false;
    tsr_tensor t = tsr_value_tensor(c);
    *out = tsr_get_f(&t, 0);
    return true;
}

/* The sole reader of value v when it is an `op` node, else -1. */
static int reader_of(const tsr_graph *g, int v, const tsr_op_def *op)
{
    int r = tsr_rewrite_sole_reader(g, v);
    return r >= 0 && g->nodes[r].op == op ? r : -1;
}

/* The operand of binary node n other than v, when v is exactly one of the
 * two; else -1. */
static int other_operand(const tsr_graph *g, int n, int v)
{
    if (n < 0)
        return -1;
    const tsr_node *b = &g->nodes[n];
    if (b->n_inputs != 2 || (b->inputs[0] == v) == (b->inputs[1] == v))
        return -1;
    return b->inputs[0] == v ? b->inputs[1] : b->inputs[0];
}

/* Whether p (the scale or the bias) varies along the normalized axes of x
 * only: at most rank - axis dims, each 1 or x's, and x's dtype. */
static bool per_feature(const tsr_value *p, const tsr_value *x, int axis)
{
    if (p->dtype != x->dtype || p->rank < 0 || p->rank > x->rank - axis)
        return false;
    for (int d = 0; d < p->rank; d++) {
        int64_t pd = p->dims[d], xd = x->dims[x->rank - p->rank + d];
        if (pd == TSR_DIM_UNKNOWN || (pd != 1 && pd != xd))
            return false;
    }
    return true;
}

/* The node after `from` reading value v as input `slot` with op `op`. */
static int find_reader(const tsr_graph *g, int from, int v, const tsr_op_def *op, int slot)
{
    for (int n = from + 1; n < g->n_nodes; n++)
        if (g->nodes[n].op == op && g->nodes[n].n_inputs > slot && g->nodes[n].inputs[slot] == v)
            return n;
    return -1;
}

/* Folds the chain that starts at ReduceMean node m0; true if it did. */
static bool fuse_one(tsr_graph *g, int m0)
{
    int axis = trailing_axis(g, &g->nodes[m0]);
    if (axis < 0)
        return false;
    int x = g->nodes[m0].inputs[0];
    const tsr_value *xv = &g->values[x];
    if (xv->dtype != TSR_FLOAT32 && xv->dtype != TSR_FLOAT64)
        return false;
    int mean = g->nodes[m0].outputs[0];
    int sub = reader_of(g, mean, &tsr_op_Sub);
    if (sub < 0 || g->nodes[sub].inputs[0] != x || g->nodes[sub].inputs[1] != mean)
        return false;
    /* The deviation is read twice: squared, and divided by its spread. */
    int dev = g->nodes[sub].outputs[0];
    if (g->values[dev].n_uses != 2 || tsr_rewrite_is_output(g, dev))
        return false;
    int pow = find_reader(g, sub, dev, &tsr_op_Pow, 0);
    int div = find_reader(g, sub, dev, &tsr_op_Div, 0);
    double two, eps;
    if (pow < 0 || div < 0 || !scalar_constant(g, g->nodes[pow].inputs[1], &two) || two != 2.0)
        return false;
    int var = reader_of(g, g->nodes[pow].outputs[0], &tsr_op_ReduceMean);
    if (var < 0 || trailing_axis(g, &g->nodes[var]) != axis)
        return false;
    int add = reader_of(g, g->nodes[var].outputs[0], &tsr_op_Add);
    int eps_value = other_operand(g, add, g->nodes[var].outputs[0]);
    if (eps_value < 0 || !scalar_constant(g, eps_value, &eps))
        return false;
    int sqrt = reader_of(g, g->nodes[add].outputs[0], &tsr_op_Sqrt);
    if (sqrt < 0 || reader_of(g, g->nodes[sqrt].outputs[0], &tsr_op_Div) != div ||
        g->nodes[div].inputs[1] != g->nodes[sqrt].outputs[0])
        return false;
    int normed = g->nodes[div].outputs[0];
    int mul = reader_of(g, normed, &tsr_op_Mul);
    int scale = other_operand(g, mul, normed);
    if (scale < 0 || !per_feature(&g->values[scale], xv, axis))
        return false;
    int last = mul, bias = -1;
    int bias_add = reader_of(g, g->nodes[mul].outputs[0], &tsr_op_Add);
    int b = other_operand(g, bias_add, g->nodes[mul].outputs[0]);
    if (b >= 0 && per_feature(&g->values[b], xv, axis)) {
        last = bias_add;
        bias = b;
    }
    int inputs[3] = {x, scale, bias};
    tsr_attr attrs[2] = {TSR_ATTR_I("axis", axis), TSR_ATTR_F("epsilon", eps)};
    if (tsr_rewrite_change_node(g, last, &tsr_op_LayerNormalization, LAYERNORM_OPSET,
                                bias >= 0 ? 3 : 2, inputs, 2, attrs) != TSR_OK)
        return false;
    /* Everything the chain computed on the way, latest first so that the
     * indices of the earlier ones stay put. */
    int dead[] = {last == bias_add ? mul : -1, div, sqrt, add, var, pow, sub, m0};
    for (size_t i = 0; i < sizeof dead / sizeof dead[0]; i++)
        if (dead[i] >= 0)
            tsr_rewrite_remove_node(g, dead[i]);
    return true;
}

bool tsr_pass_fuse_layernorm(tsr_graph *g)
{
    bool changed = false;
    for (int n = 0; n < g->n_nodes; n++)
        changed |= fuse_one(g, n);
    return changed;
}

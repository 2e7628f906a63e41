/* Removing nodes whose output is exactly their first input: exporters
 * leave Identity and Dropout behind, shape arithmetic that became
 * constant often leaves Reshapes and Casts that change nothing, and
 * autodiff leaves a SumTo wherever only the run's sizes decide whether a
 * gradient was broadcast (at a plan's concrete shapes, one of equal
 * shapes sums nothing). */
#include "passes/passes.h"

#include "ir/rewrite.h"

#include <math.h>
#include <string.h>

/* Whether two values have the same dtype and the same shape: equal known
 * or symbolic dims (an unknown dim proves nothing) unless `same_by_rule`,
 * where the op copies its input's dims whatever they are. */
static bool same_type(const tsr_value *a, const tsr_value *b, bool same_by_rule)
{
    if (a->dtype != b->dtype || a->rank != b->rank || a->rank < 0)
        return false;
    for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d] || (!same_by_rule && a->dims[d] == TSR_DIM_UNKNOWN))
            return false;
    return true;
}

/* A constant input's single element as double; false if absent, not
 * constant or not one element. */
static bool const_scalar(const tsr_graph *g, const tsr_node *n, int input, double *out)
{
    if (input >= n->n_inputs || n->inputs[input] < 0)
        return false;
    const tsr_value *v = &g->values[n->inputs[input]];
    tsr_tensor t = tsr_value_tensor(v);
    if (!v->data || tsr_shape_numel(v->rank, v->dims) != 1)
        return false;
    switch (v->dtype) {
    case TSR_FLOAT32:
    case TSR_FLOAT64: *out = tsr_get_f(&t, 0); return true;
    case TSR_BOOL:
    case TSR_UINT8: *out = *(const uint8_t *)v->data; return true;
    default: return false;
    }
}

static bool input_absent(const tsr_node *n, int input)
{
    return input >= n->n_inputs || n->inputs[input] < 0;
}

static bool dropout_is_noop(const tsr_graph *g, const tsr_node *n)
{
    if (n->n_outputs > 1 && g->values[n->outputs[1]].n_uses > 0)
        return false;
    double training;
    return input_absent(n, 2) || (const_scalar(g, n, 2, &training) && training == 0.0);
}

static bool pad_is_noop(const tsr_graph *g, const tsr_node *n)
{
    if (input_absent(n, 1))
        return false;
    const tsr_value *pads = &g->values[n->inputs[1]];
    int64_t count = tsr_shape_numel(pads->rank, pads->dims);
    if (!pads->data || count < 0)
        return false;
    for (int64_t i = 0; i < count; i++) {
        int64_t p = pads->dtype == TSR_INT64   ? ((const int64_t *)pads->data)[i]
                    : pads->dtype == TSR_INT32 ? ((const int32_t *)pads->data)[i]
                                               : -1;
        if (p != 0)
            return false;
    }
    return true;
}

static bool clip_is_noop(const tsr_graph *g, const tsr_node *n)
{
    double lo = -INFINITY, hi = INFINITY;
    if (!input_absent(n, 1) && !const_scalar(g, n, 1, &lo))
        return false;
    if (!input_absent(n, 2) && !const_scalar(g, n, 2, &hi))
        return false;
    return lo == -INFINITY && hi == INFINITY;
}

static bool transpose_is_noop(const tsr_node *n, int rank)
{
    size_t count;
    const int64_t *perm = tsr_attr_ints(n, "perm", &count);
    if (!perm)
        return rank <= 1; /* the default reverses the axes */
    for (size_t i = 0; i < count; i++)
        if (perm[i] != (int64_t)i)
            return false;
    return true;
}

static bool is_noop(const tsr_graph *g, const tsr_node *n)
{
    const tsr_op_def *op = n->op;
    if (n->n_inputs < 1 || n->inputs[0] < 0)
        return false;
    const tsr_value *in = &g->values[n->inputs[0]], *out = &g->values[n->outputs[0]];
    if (op == &tsr_op_Identity)
        return same_type(in, out, true);
    if (op == &tsr_op_Dropout)
        return same_type(in, out, true) && dropout_is_noop(g, n);
    if (op == &tsr_op_Cast)
        return same_type(in, out, true);
    if (op == &tsr_op_Pad)
        return same_type(in, out, true) && pad_is_noop(g, n);
    if (op == &tsr_op_Clip)
        return same_type(in, out, true) && clip_is_noop(g, n);
    if (op == &tsr_op_Transpose)
        return same_type(in, out, false) && transpose_is_noop(n, in->rank);
    if (op == &tsr_op_SumTo)
        return same_type(in, out, false);
    if (op == &tsr_op_Reshape || op == &tsr_op_Flatten || op == &tsr_op_Squeeze ||
        op == &tsr_op_Unsqueeze || op == &tsr_op_Expand)
        return same_type(in, out, false);
    return false;
}

bool tsr_pass_remove_identities(tsr_graph *g)
{
    bool changed = false;
    int n = 0;
    while (n < g->n_nodes) {
        const tsr_node *node = &g->nodes[n];
        /* On removal the next node moves into slot n. */
        if (is_noop(g, node) && tsr_rewrite_bypass(g, n, node->inputs[0], node->outputs[0]))
            changed = true;
        else
            n++;
    }
    return changed;
}

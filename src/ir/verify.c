/* The graph's invariants, checked after every load, build and pass. */
#include "ir/graph.h"

#include "ops/op.h"

tsr_status tsr_graph_verify(const tsr_graph *g)
{
    if (!g)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_verify: graph is NULL");
    for (int v = 0; v < g->n_values; v++) {
        const tsr_value *val = &g->values[v];
        if (val->rank > TSR_MAX_RANK)
            return tsr_error(TSR_ERR_INTERNAL, "value '%s' has rank %d", val->name, val->rank);
        if (val->data && (val->producer >= 0 || val->is_input))
            return tsr_error(TSR_ERR_INTERNAL, "value '%s' is constant and also computed", val->name);
        if (!val->data && val->producer < 0 && !val->is_input && val->n_uses > 0)
            return tsr_error(TSR_ERR_INTERNAL, "value '%s' is read but never defined", val->name);
    }
    for (int n = 0; n < g->n_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        char desc[320];
        tsr_node_describe(node, desc, sizeof desc);
        if (node->n_inputs < node->op->min_inputs || node->n_inputs > node->op->max_inputs ||
            node->n_outputs < node->op->min_outputs || node->n_outputs > node->op->max_outputs)
            return tsr_error(TSR_ERR_INTERNAL, "%s: arity outside its schema", desc);
        for (int i = 0; i < node->n_inputs; i++) {
            int v = node->inputs[i];
            if (v < -1 || v >= g->n_values)
                return tsr_error(TSR_ERR_INTERNAL, "%s: input %d refers to no value", desc, i);
            if (v >= 0 && g->values[v].producer >= n)
                return tsr_error(TSR_ERR_INTERNAL, "%s: input '%s' is produced later (not topological)",
                                 desc, g->values[v].name);
        }
        for (int o = 0; o < node->n_outputs; o++) {
            int v = node->outputs[o];
            if (v < 0 || v >= g->n_values || g->values[v].producer != n)
                return tsr_error(TSR_ERR_INTERNAL, "%s: output %d is not owned by the node", desc, o);
            if (g->values[v].dtype == TSR_DTYPE_UNDEFINED || g->values[v].rank < 0)
                return tsr_error(TSR_ERR_INTERNAL, "%s: output '%s' has no inferred type", desc,
                                 g->values[v].name);
        }
    }
    for (int i = 0; i < g->n_inputs; i++)
        if (g->inputs[i] < 0 || g->inputs[i] >= g->n_values || !g->values[g->inputs[i]].is_input)
            return tsr_error(TSR_ERR_INTERNAL, "graph input %d refers to no input value", i);
    for (int o = 0; o < g->n_outputs; o++)
        if (g->outputs[o] < 0 || g->outputs[o] >= g->n_values)
            return tsr_error(TSR_ERR_INTERNAL, "graph output %d refers to no value", o);
    return TSR_OK;
}

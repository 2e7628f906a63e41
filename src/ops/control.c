/* Control flow: If. A node holds its two branches as sub-graphs
 * (then_branch, else_branch); its inputs are cond and then the outer
 * values the branches read, which are the inputs of both sub-graphs in the
 * same order (the ONNX importer gathers them). Exported detection models
 * branch on shapes only (batched_nms's numel() == 0, the exporter's
 * Squeeze of a dim that may be 1), so the node expands, like LSTM, into
 * the taken branch's nodes once cond is a constant: at import when shapes
 * are fixed, in a plan's replay at concrete input shapes, or in the tail a
 * plan builds once a size known only at run time is known (runtime/plan.c
 * plans an unsized node's small inputs, cond among them, as constants
 * there, so a cond on input values works too, one tail per value). Until
 * then its outputs' dims are unknown, since the branches may give
 * different shapes; where their ranks differ too, shape inference before
 * the plan follows then_branch's rank. No kernel runs a branch: a cond
 * that stays unknown even in a tail is refused when the node runs. */
#include "ops/op.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tsr_attr_def if_attrs[] = {{"then_branch", TSR_ATTR_GRAPH, true},
                                        {"else_branch", TSR_ATTR_GRAPH, true},
                                        {NULL}};

static const tsr_graph *branch(const tsr_node *n, const char *name)
{
    for (int a = 0; a < n->n_attrs; a++)
        if (strcmp(n->attrs[a].name, name) == 0)
            return n->attrs[a].graph;
    return NULL;
}

static bool cond_known(const tsr_infer_ctx *c, bool *taken_out)
{
    const tsr_value *cond = c->inputs[0];
    if (!cond->data || cond->rank < 0)
        return false;
    tsr_tensor t = tsr_value_tensor(cond);
    if (tsr_tensor_numel(&t) != 1)
        return false;
    *taken_out = ((const uint8_t *)cond->data)[0] != 0;
    return true;
}

static tsr_status if_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_DTYPE_BIT(TSR_BOOL)));
    const tsr_value *cond = c->inputs[0];
    for (int d = 0; d < cond->rank; d++)
        if (cond->dims[d] >= 0 && cond->dims[d] != 1)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "cond must hold one element, its dim %d is %" PRId64, d,
                                   cond->dims[d]);
    const tsr_graph *then_g = branch(c->node, "then_branch");
    const tsr_graph *else_g = branch(c->node, "else_branch");
    if (!then_g || !else_g)
        return tsr_infer_error(c, TSR_ERR_PARSE, "a branch holds no graph");
    if (then_g->n_outputs != c->n_outputs || else_g->n_outputs != c->n_outputs)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "the node has %d outputs, then_branch %d and else_branch %d",
                               c->n_outputs, then_g->n_outputs, else_g->n_outputs);
    if (then_g->n_inputs != c->n_inputs - 1 || else_g->n_inputs != c->n_inputs - 1)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "the branches read %d and %d outer values, the node gives %d",
                               then_g->n_inputs, else_g->n_inputs, c->n_inputs - 1);
    bool taken = false, known = cond_known(c, &taken);
    for (int o = 0; o < c->n_outputs; o++) {
        const tsr_value *tv = &then_g->values[then_g->outputs[o]];
        const tsr_value *ev = &else_g->values[else_g->outputs[o]];
        const tsr_value *v = known && !taken ? ev : tv;
        if (!known && tv->dtype != ev->dtype)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "output %d is %s in then_branch but %s in else_branch", o,
                                   tsr_dtype_name(tv->dtype), tsr_dtype_name(ev->dtype));
        int64_t dims[TSR_MAX_RANK];
        for (int d = 0; d < v->rank; d++)
            dims[d] = TSR_DIM_UNKNOWN;
        tsr_infer_set(c, o, v->dtype, v->rank, dims);
    }
    return TSR_OK;
}

static bool if_expandable(const tsr_infer_ctx *c)
{
    bool taken = false;
    return cond_known(c, &taken);
}

/* Adds the taken branch's nodes to g under fresh names ("<node>/<name>"),
 * its inputs read as the node's inputs and its outputs written as the
 * node's; an output the branch takes straight from an input or constant
 * (or gives twice) goes through Identity. */
static tsr_status if_expand(tsr_graph *g, const tsr_node *node, const char *const *outputs)
{
    const tsr_value *cond = &g->values[node->inputs[0]];
    const tsr_graph *b =
        branch(node, ((const uint8_t *)cond->data)[0] ? "then_branch" : "else_branch");
    char **names = tsr_calloc((size_t)b->n_values + 1, sizeof *names);
    if (!names)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = TSR_OK;
    for (int i = 0; i < b->n_inputs && st == TSR_OK; i++)
        if (!(names[b->inputs[i]] = tsr_strdup(g->values[node->inputs[1 + i]].name)))
            st = TSR_ERR_OUT_OF_MEMORY;
    for (int o = 0; o < b->n_outputs && st == TSR_OK; o++) {
        int v = b->outputs[o];
        if (b->values[v].producer >= 0 && !names[v] && !(names[v] = tsr_strdup(outputs[o])))
            st = TSR_ERR_OUT_OF_MEMORY;
    }
    const char *prefix = node->name && *node->name ? node->name : "If";
    for (int v = 0; v < b->n_values && st == TSR_OK; v++) {
        if (names[v])
            continue;
        char stem[600], buf[700];
        snprintf(stem, sizeof stem, "%s/%s", prefix, b->values[v].name);
        st = tsr_graph_unique_name(g, stem, buf, sizeof buf);
        if (st == TSR_OK && !(names[v] = tsr_strdup(buf)))
            st = TSR_ERR_OUT_OF_MEMORY;
        const tsr_value *val = &b->values[v];
        if (st == TSR_OK && val->data && val->producer < 0 && !val->is_input)
            st = tsr_graph_share_constant_as(g, names[v], val, false);
    }
    for (int n = 0; n < b->n_nodes && st == TSR_OK; n++)
        st = tsr_graph_replay_node_as(b, n, g, (const char *const *)names);
    for (int o = 0; o < b->n_outputs && st == TSR_OK; o++) {
        const char *from = names[b->outputs[o]];
        if (strcmp(from, outputs[o]) != 0)
            st = tsr_graph_add_node_op(g, &tsr_op_Identity, 13, node->name, 1, &from, 1,
                                       &outputs[o], 0, NULL);
    }
    for (int v = 0; v < b->n_values; v++)
        free(names[v]);
    free(names);
    return st;
}

static tsr_status if_ref(const tsr_kernel_ctx *c)
{
    return tsr_error(TSR_ERR_UNSUPPORTED,
                     "node '%s' (If): its condition is known only at run time, and Tessera "
                     "expands an If into its taken branch when the plan is made (conditions on "
                     "shapes, and on sizes known once a data-dependent node has run, are known "
                     "then)",
                     c->node->name);
}

const tsr_op_def tsr_op_If = {
    .name = "If",
    .domain = "",
    .min_inputs = 1,
    .max_inputs = TSR_MAX_NODE_IO,
    .min_outputs = 1,
    .max_outputs = TSR_MAX_NODE_IO,
    .attrs = if_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .flags = TSR_OP_NO_FOLD,
    .infer = if_infer,
    .ref = if_ref,
    .expandable = if_expandable,
    .expand = if_expand,
};

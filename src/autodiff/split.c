/* Splitting a graph in two calls, for engines that run the forward pass
 * and the backward pass separately (PyTorch's autograd.Function): the first
 * graph computes the first outputs with only the nodes they need; the
 * second computes the other outputs with the other nodes, reading what the
 * first computed (its saved values) instead of computing it again. */
#include "autodiff/autodiff.h"

#include <stdlib.h>
#include <string.h>

/* Marks, in `part`, the nodes that the outputs [from, to) need and that
 * carry no mark yet with `which`. */
static void mark_needed(const tsr_graph *g, int from, int to, int which, int *part, bool *need)
{
    memset(need, 0, (size_t)g->n_values * sizeof *need);
    for (int k = from; k < to; k++)
        need[g->outputs[k]] = true;
    for (int n = g->n_nodes - 1; n >= 0; n--) {
        const tsr_node *node = &g->nodes[n];
        bool used = false;
        for (int o = 0; o < node->n_outputs; o++)
            used |= need[node->outputs[o]];
        if (!used || part[n] >= 0)
            continue;
        part[n] = which;
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                need[node->inputs[i]] = true;
    }
}

static tsr_status add_input_like(tsr_graph *dst, const tsr_graph *src, int v)
{
    const tsr_value *val = &src->values[v];
    if (val->rank < 0)
        return tsr_error(TSR_ERR_SHAPE, "cannot split the graph at '%s': its rank is unknown",
                         val->name);
    const char *names[TSR_MAX_RANK] = {0};
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < val->rank; d++) {
        dims[d] = tsr_dim_known(val->dims[d]) ? val->dims[d] : TSR_DIM_UNKNOWN;
        if (tsr_dim_is_sym(val->dims[d]))
            names[d] = src->symbols[TSR_DIM_SYM_INDEX(val->dims[d])];
    }
    return tsr_graph_add_input(dst, val->name, val->dtype, val->rank, dims, names);
}

/* The graph of src's nodes in part `which`, with outputs `outs`. Its
 * inputs are the values those nodes read (or outs name) that they do not
 * compute and that are no constants: src's inputs first, in their order,
 * then computed values in the order of the nodes computing them. */
static tsr_status build_part(const tsr_graph *src, const int *part, int which, int n_outs,
                             const int *outs, bool *reads, tsr_graph **out)
{
    memset(reads, 0, (size_t)src->n_values * sizeof *reads);
    for (int n = 0; n < src->n_nodes; n++)
        for (int i = 0; part[n] == which && i < src->nodes[n].n_inputs; i++)
            if (src->nodes[n].inputs[i] >= 0)
                reads[src->nodes[n].inputs[i]] = true;
    for (int k = 0; k < n_outs; k++)
        reads[outs[k]] = true;
    tsr_graph *g;
    TSR_CHECK(tsr_graph_create(&g));
    g->default_opset = src->default_opset;
    g->fold_limit = src->fold_limit;
    tsr_status st = TSR_OK;
    for (int i = 0; i < src->n_inputs && st == TSR_OK; i++)
        if (reads[src->inputs[i]])
            st = add_input_like(g, src, src->inputs[i]);
    for (int n = 0; n < src->n_nodes && st == TSR_OK; n++)
        for (int o = 0; part[n] != which && o < src->nodes[n].n_outputs && st == TSR_OK; o++)
            if (reads[src->nodes[n].outputs[o]])
                st = add_input_like(g, src, src->nodes[n].outputs[o]);
    for (int v = 0; v < src->n_values && st == TSR_OK; v++) {
        const tsr_value *val = &src->values[v];
        if (reads[v] && val->data && val->producer < 0 && !val->is_input)
            st = tsr_graph_share_constant(g, val, false);
    }
    for (int n = 0; n < src->n_nodes && st == TSR_OK; n++)
        if (part[n] == which)
            st = tsr_graph_replay_node(src, n, g);
    for (int k = 0; k < n_outs && st == TSR_OK; k++)
        st = tsr_graph_add_output(g, src->values[outs[k]].name);
    if (st == TSR_OK) {
        tsr_graph_remove_dead(g);
        st = tsr_graph_verify(g);
    }
    if (st != TSR_OK) {
        tsr_graph_destroy(g);
        return st;
    }
    *out = g;
    return TSR_OK;
}

tsr_status tsr_graph_split(const tsr_graph *graph, int n_first, tsr_graph **first_out,
                           tsr_graph **second_out)
{
    if (!graph || !first_out || !second_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_split: NULL argument");
    *first_out = *second_out = NULL;
    if (n_first < 0 || n_first > graph->n_outputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_graph_split: %d first outputs of a graph with %d outputs", n_first,
                         graph->n_outputs);
    const tsr_graph *g = graph;
    int *part = tsr_malloc((size_t)(g->n_nodes + 1) * sizeof *part);
    bool *flags = tsr_malloc((size_t)(g->n_values + 1) * sizeof *flags);
    int *outs = tsr_malloc((size_t)(g->n_outputs + g->n_values + 1) * sizeof *outs);
    tsr_status st = TSR_OK;
    if (!part || !flags || !outs) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (int n = 0; n < g->n_nodes; n++)
        part[n] = -1;
    mark_needed(g, 0, n_first, 0, part, flags);
    mark_needed(g, n_first, g->n_outputs, 1, part, flags);
    /* The first graph's outputs: the first outputs, then the values it
     * computes that the second reads (its own outputs included). */
    bool *saved = flags;
    memset(saved, 0, (size_t)g->n_values * sizeof *saved);
    for (int n = 0; n < g->n_nodes; n++)
        for (int i = 0; part[n] == 1 && i < g->nodes[n].n_inputs; i++)
            if (g->nodes[n].inputs[i] >= 0)
                saved[g->nodes[n].inputs[i]] = true;
    for (int k = n_first; k < g->n_outputs; k++)
        saved[g->outputs[k]] = true;
    int n_outs = 0;
    for (int k = 0; k < n_first; k++) {
        outs[n_outs++] = g->outputs[k];
        saved[g->outputs[k]] = false;
    }
    for (int n = 0; n < g->n_nodes; n++)
        for (int o = 0; part[n] == 0 && o < g->nodes[n].n_outputs; o++)
            if (saved[g->nodes[n].outputs[o]]) {
                outs[n_outs++] = g->nodes[n].outputs[o];
                saved[g->nodes[n].outputs[o]] = false;
            }
    st = build_part(g, part, 0, n_outs, outs, flags, first_out);
    if (st == TSR_OK)
        st = build_part(g, part, 1, g->n_outputs - n_first, g->outputs + n_first, flags,
                        second_out);
    if (st != TSR_OK && *first_out) {
        tsr_graph_destroy(*first_out);
        *first_out = NULL;
    }
done:
    free(part);
    free(flags);
    free(outs);
    return st;
}

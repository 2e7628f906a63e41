/* Graph editing primitives for the passes (see rewrite.h). */
#include "ir/rewrite.h"

#include <stdlib.h>
#include <string.h>

bool tsr_rewrite_is_output(const tsr_graph *g, int v)
{
    for (int o = 0; o < g->n_outputs; o++)
        if (g->outputs[o] == v)
            return true;
    return false;
}

int tsr_rewrite_sole_reader(const tsr_graph *g, int v)
{
    if (g->values[v].n_uses != 1 || tsr_rewrite_is_output(g, v))
        return -1;
    for (int n = 0; n < g->n_nodes; n++)
        for (int i = 0; i < g->nodes[n].n_inputs; i++)
            if (g->nodes[n].inputs[i] == v)
                return n;
    return -1;
}

void tsr_rewrite_replace_uses(tsr_graph *g, int from, int to)
{
    for (int n = 0; n < g->n_nodes; n++)
        for (int i = 0; i < g->nodes[n].n_inputs; i++)
            if (g->nodes[n].inputs[i] == from)
                g->nodes[n].inputs[i] = to;
    tsr_graph_recount(g);
}

void tsr_rewrite_remove_node(tsr_graph *g, int n)
{
    tsr_node_free(&g->nodes[n]);
    memmove(&g->nodes[n], &g->nodes[n + 1], (size_t)(g->n_nodes - n - 1) * sizeof *g->nodes);
    g->n_nodes--;
    tsr_graph_recount(g);
}

bool tsr_rewrite_bypass(tsr_graph *g, int n, int in, int out)
{
    if (!tsr_rewrite_is_output(g, out)) {
        tsr_rewrite_replace_uses(g, out, in);
        tsr_rewrite_remove_node(g, n);
        return true;
    }
    int producer = g->values[in].producer;
    if (producer < 0 || tsr_rewrite_is_output(g, in))
        return false;
    tsr_node *p = &g->nodes[producer];
    for (int o = 0; o < p->n_outputs; o++)
        if (p->outputs[o] == in)
            p->outputs[o] = out;
    tsr_rewrite_replace_uses(g, in, out);
    tsr_rewrite_remove_node(g, n);
    return true;
}

void tsr_rewrite_absorb(tsr_graph *g, int n, int later)
{
    tsr_node *first = &g->nodes[n], *last = &g->nodes[later];
    for (int o = 0; o < first->n_outputs && o < last->n_outputs; o++)
        first->outputs[o] = last->outputs[o];
    tsr_node_free(last);
    tsr_node moved = *first;
    /* Shift the nodes between up by one and put n where `later` was. */
    memmove(&g->nodes[n], &g->nodes[n + 1], (size_t)(later - n - 1) * sizeof *g->nodes);
    g->nodes[later - 1] = moved;
    memmove(&g->nodes[later], &g->nodes[later + 1],
            (size_t)(g->n_nodes - later - 1) * sizeof *g->nodes);
    g->n_nodes--;
    tsr_graph_recount(g);
}

tsr_status tsr_rewrite_add_constant(tsr_graph *g, const char *stem, const tsr_tensor *t,
                                    int *index_out)
{
    char name[256];
    TSR_CHECK(tsr_graph_unique_name(g, stem, name, sizeof name));
    /* The builder validates, copies and owns the data; nothing reads it
     * yet, so it starts with no uses. */
    TSR_CHECK(tsr_graph_add_constant(g, name, t));
    *index_out = g->n_values - 1;
    return TSR_OK;
}

static void attr_release(tsr_node_attr *a)
{
    free(a->name);
    free(a->s);
    free(a->ints);
    free(a->floats);
    tsr_aligned_free(a->t.data);
    tsr_graph_destroy(a->graph);
    memset(a, 0, sizeof *a);
}

/* Deep copy of a builder attribute, or of a stored one viewed as such. */
static tsr_status attr_copy(const tsr_attr *src, tsr_node_attr *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    dst->i = src->i;
    dst->f = src->f;
    dst->count = src->count;
    dst->name = tsr_strdup(src->name);
    bool ok = dst->name != NULL;
    if (ok && src->type == TSR_ATTR_STRING)
        ok = (dst->s = tsr_strdup(src->s ? src->s : "")) != NULL;
    if (ok && src->type == TSR_ATTR_INTS && src->count) {
        ok = (dst->ints = tsr_malloc(src->count * sizeof(int64_t))) != NULL;
        if (ok)
            memcpy(dst->ints, src->ints, src->count * sizeof(int64_t));
    }
    if (ok && src->type == TSR_ATTR_FLOATS && src->count) {
        ok = (dst->floats = tsr_malloc(src->count * sizeof(double))) != NULL;
        if (ok)
            memcpy(dst->floats, src->floats, src->count * sizeof(double));
    }
    if (ok && src->type == TSR_ATTR_TENSOR && src->t) {
        dst->t = *src->t;
        size_t bytes = tsr_tensor_bytes(src->t);
        ok = (dst->t.data = tsr_aligned_alloc(bytes)) != NULL;
        if (ok && bytes)
            memcpy(dst->t.data, src->t->data, bytes);
    }
    tsr_status st = ok ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    /* If's branches and Loop's body: the node owns its sub-graphs. */
    if (st == TSR_OK && src->type == TSR_ATTR_GRAPH && src->graph)
        st = tsr_graph_clone(src->graph, &dst->graph);
    if (st != TSR_OK)
        attr_release(dst);
    return st;
}

static tsr_status attr_check(const tsr_op_def *op, const tsr_attr *a)
{
    for (const tsr_attr_def *d = op->attrs; d && d->name; d++)
        if (strcmp(d->name, a->name) == 0) {
            if (d->type != a->type)
                return tsr_error(TSR_ERR_INTERNAL, "%s attribute '%s' has the wrong type", op->name,
                                 a->name);
            return TSR_OK;
        }
    return tsr_error(TSR_ERR_INTERNAL, "%s has no attribute '%s'", op->name, a->name);
}

/* The new node's attributes: the old ones not in `extra`, then `extra`. */
static tsr_status merge_attrs(const tsr_node *node, const tsr_op_def *op, int n_extra,
                              const tsr_attr *extra, tsr_node_attr **attrs_out, int *count_out)
{
    tsr_node_attr *attrs = tsr_calloc((size_t)(node->n_attrs + n_extra) + 1, sizeof *attrs);
    if (!attrs)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_attr views[64];
    if (tsr_node_attr_views(node, views, 64) < node->n_attrs) {
        free(attrs);
        return tsr_error(TSR_ERR_UNSUPPORTED, "node '%s' has more than 64 attributes", node->name);
    }
    int count = 0;
    tsr_status st = TSR_OK;
    for (int a = 0; a < node->n_attrs && st == TSR_OK; a++) {
        bool replaced = false;
        for (int e = 0; e < n_extra; e++)
            replaced |= strcmp(extra[e].name, node->attrs[a].name) == 0;
        if (replaced)
            continue;
        tsr_attr view = views[a];
        st = attr_check(op, &view);
        if (st == TSR_OK && (st = attr_copy(&view, &attrs[count])) == TSR_OK)
            count++;
    }
    for (int e = 0; e < n_extra && st == TSR_OK; e++) {
        st = attr_check(op, &extra[e]);
        if (st == TSR_OK && (st = attr_copy(&extra[e], &attrs[count])) == TSR_OK)
            count++;
    }
    if (st != TSR_OK) {
        for (int a = 0; a < count; a++)
            attr_release(&attrs[a]);
        free(attrs);
        return st;
    }
    *attrs_out = attrs;
    *count_out = count;
    return TSR_OK;
}

/* Runs the candidate node's inference on scratch copies of its outputs
 * and checks that they keep their dtype and shape; `dims_out` receives
 * the inferred dims. */
static tsr_status check_inference(const tsr_graph *g, const tsr_node *cand,
                                  int64_t dims_out[][TSR_MAX_RANK])
{
    tsr_value scratch[TSR_MAX_NODE_IO];
    tsr_infer_ctx c = {
        .graph = g, .node = cand, .n_inputs = cand->n_inputs, .n_outputs = cand->n_outputs};
    for (int i = 0; i < cand->n_inputs; i++)
        c.inputs[i] = cand->inputs[i] >= 0 ? &g->values[cand->inputs[i]] : NULL;
    for (int o = 0; o < cand->n_outputs; o++) {
        scratch[o] = g->values[cand->outputs[o]];
        scratch[o].dtype = TSR_DTYPE_UNDEFINED;
        scratch[o].rank = -1;
        c.outputs[o] = &scratch[o];
    }
    char desc[320];
    tsr_node_describe(cand, desc, sizeof desc);
    tsr_status st = cand->op->infer(&c);
    if (st != TSR_OK) {
        tsr_error_prefix("%s: ", desc);
        return st;
    }
    for (int o = 0; o < cand->n_outputs; o++) {
        const tsr_value *old = &g->values[cand->outputs[o]], *now = &scratch[o];
        bool same = old->dtype == now->dtype && old->rank == now->rank;
        for (int d = 0; same && d < old->rank; d++)
            same = old->dims[d] == now->dims[d] || !tsr_dim_known(old->dims[d]);
        if (!same)
            return tsr_error(TSR_ERR_INTERNAL, "%s: the rewrite changes the type of output '%s'",
                             desc, old->name);
        memcpy(dims_out[o], now->dims, sizeof now->dims);
    }
    return TSR_OK;
}

tsr_status tsr_rewrite_change_node(tsr_graph *g, int n, const tsr_op_def *op, int opset,
                                   int n_inputs, const int *inputs, int n_extra,
                                   const tsr_attr *extra)
{
    tsr_node *node = &g->nodes[n];
    if (n_inputs < op->min_inputs || n_inputs > op->max_inputs || n_inputs > TSR_MAX_NODE_IO)
        return tsr_error(TSR_ERR_INTERNAL, "%s takes %d to %d inputs, not %d", op->name,
                         op->min_inputs, op->max_inputs, n_inputs);
    tsr_node cand = *node;
    cand.op = op;
    cand.opset = opset;
    cand.n_inputs = n_inputs;
    cand.inputs = tsr_calloc((size_t)n_inputs + 1, sizeof(int));
    if (!cand.inputs)
        return TSR_ERR_OUT_OF_MEMORY;
    memcpy(cand.inputs, inputs, (size_t)n_inputs * sizeof(int));
    tsr_status st = merge_attrs(node, op, n_extra, extra, &cand.attrs, &cand.n_attrs);
    if (st != TSR_OK) {
        free(cand.inputs);
        return st;
    }
    int64_t dims[TSR_MAX_NODE_IO][TSR_MAX_RANK];
    st = check_inference(g, &cand, dims);
    if (st != TSR_OK) {
        free(cand.inputs);
        for (int a = 0; a < cand.n_attrs; a++)
            attr_release(&cand.attrs[a]);
        free(cand.attrs);
        return st;
    }
    for (int o = 0; o < cand.n_outputs; o++)
        memcpy(g->values[cand.outputs[o]].dims, dims[o], sizeof dims[o]);
    free(node->inputs);
    for (int a = 0; a < node->n_attrs; a++)
        attr_release(&node->attrs[a]);
    free(node->attrs);
    *node = cand;
    tsr_graph_recount(g);
    return TSR_OK;
}

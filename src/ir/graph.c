/* Graph construction. Every node goes through tsr_graph_add_node_op, which
 * checks it against its op's schema, infers its outputs and, when all its
 * inputs are constants, evaluates it on the spot with the reference kernel
 * (constant folding at build time, so shape subgraphs vanish as soon as
 * the shapes they read are known). Replaying a graph's nodes into a graph
 * with concrete input shapes is how plans specialize. */
#include "ir/graph.h"

#include "ops/op.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static tsr_status rebuild_name_index(tsr_graph *g)
{
    int cap = 64;
    while (cap < 2 * g->n_values + 2)
        cap *= 2;
    if (cap != g->name_index_cap) {
        int *idx = tsr_malloc((size_t)cap * sizeof *idx);
        if (!idx)
            return TSR_ERR_OUT_OF_MEMORY;
        free(g->name_index);
        g->name_index = idx;
        g->name_index_cap = cap;
    }
    for (int i = 0; i < cap; i++)
        g->name_index[i] = -1;
    for (int v = 0; v < g->n_values; v++) {
        size_t slot = hash_name(g->values[v].name) & (size_t)(cap - 1);
        while (g->name_index[slot] >= 0)
            slot = (slot + 1) & (size_t)(cap - 1);
        g->name_index[slot] = v;
    }
    return TSR_OK;
}

int tsr_graph_find_value(const tsr_graph *g, const char *name)
{
    if (!g->name_index_cap)
        return -1;
    size_t mask = (size_t)g->name_index_cap - 1;
    for (size_t slot = hash_name(name) & mask; g->name_index[slot] >= 0; slot = (slot + 1) & mask)
        if (strcmp(g->values[g->name_index[slot]].name, name) == 0)
            return g->name_index[slot];
    return -1;
}

tsr_status tsr_graph_new_value(tsr_graph *g, const char *name, int *index_out)
{
    if (!name || !*name)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "a value needs a non-empty name");
    if (tsr_graph_find_value(g, name) >= 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "value '%s' is defined twice", name);
    TSR_CHECK(tsr_grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof *g->values));
    tsr_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = tsr_strdup(name);
    if (!v->name)
        return TSR_ERR_OUT_OF_MEMORY;
    v->rank = -1;
    v->producer = -1;
    g->n_values++;
    if (2 * g->n_values + 2 > g->name_index_cap)
        TSR_CHECK(rebuild_name_index(g));
    else {
        size_t mask = (size_t)g->name_index_cap - 1;
        size_t slot = hash_name(name) & mask;
        while (g->name_index[slot] >= 0)
            slot = (slot + 1) & mask;
        g->name_index[slot] = g->n_values - 1;
    }
    *index_out = g->n_values - 1;
    return TSR_OK;
}

tsr_status tsr_graph_unique_name(const tsr_graph *g, const char *stem, char *buf, size_t size)
{
    for (int k = 0; k < 1000000; k++) {
        snprintf(buf, size, k ? "%s_%d" : "%s", stem, k);
        if (tsr_graph_find_value(g, buf) < 0)
            return TSR_OK;
    }
    return tsr_error(TSR_ERR_INTERNAL, "no free value name for '%s'", stem);
}

static void free_values_from(tsr_graph *g, int first)
{
    for (int v = first; v < g->n_values; v++) {
        free(g->values[v].name);
        tsr_shared_release(g->values[v].data);
    }
    g->n_values = first;
}

static void free_node(tsr_node *n)
{
    free(n->name);
    free(n->inputs);
    free(n->outputs);
    for (int a = 0; a < n->n_attrs; a++) {
        tsr_node_attr *at = &n->attrs[a];
        free(at->name);
        free(at->s);
        free(at->ints);
        free(at->floats);
        tsr_aligned_free(at->t.data);
        tsr_graph_destroy(at->graph);
    }
    free(n->attrs);
}

void tsr_node_free(tsr_node *n) { free_node(n); }

/* TSR_FOLD_LIMIT (bytes, -1 for none) when the environment sets it to a
 * number, else TSR_FOLD_LIMIT_DEFAULT. */
static int64_t default_fold_limit(void)
{
    const char *env = getenv("TSR_FOLD_LIMIT");
    if (env && *env) {
        char *end;
        long long v = strtoll(env, &end, 10);
        if (*end == '\0' && v >= -1)
            return v;
    }
    return TSR_FOLD_LIMIT_DEFAULT;
}

tsr_status tsr_graph_create(tsr_graph **graph_out)
{
    if (!graph_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_create: graph_out is NULL");
    *graph_out = NULL;
    tsr_graph *g = tsr_calloc(1, sizeof *g);
    if (!g)
        return TSR_ERR_OUT_OF_MEMORY;
    g->default_opset = 17;
    g->fold_limit = default_fold_limit();
    if (rebuild_name_index(g) != TSR_OK) {
        free(g);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    *graph_out = g;
    return TSR_OK;
}

void tsr_graph_destroy(tsr_graph *g)
{
    if (!g)
        return;
    free_values_from(g, 0);
    for (int n = 0; n < g->n_nodes; n++)
        free_node(&g->nodes[n]);
    for (int s = 0; s < g->n_symbols; s++)
        free(g->symbols[s]);
    free(g->values);
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    free(g->symbols);
    free(g->name_index);
    free(g);
}

tsr_status tsr_graph_set_fold_limit(tsr_graph *g, int64_t bytes)
{
    if (!g || bytes < -1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_graph_set_fold_limit: graph is NULL or the limit is below -1");
    g->fold_limit = bytes;
    return TSR_OK;
}

tsr_status tsr_graph_set_opset(tsr_graph *g, int opset)
{
    if (!g)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_set_opset: graph is NULL");
    if (opset < 11 || opset > 21)
        return tsr_error(TSR_ERR_UNSUPPORTED, "opset %d is not supported (11 to 21 are)", opset);
    g->default_opset = opset;
    return TSR_OK;
}

tsr_status tsr_graph_symbol(tsr_graph *g, const char *name, int *index_out)
{
    for (int s = 0; s < g->n_symbols; s++)
        if (strcmp(g->symbols[s], name) == 0) {
            *index_out = s;
            return TSR_OK;
        }
    TSR_CHECK(tsr_grow((void **)&g->symbols, &g->cap_symbols, g->n_symbols + 1, sizeof *g->symbols));
    g->symbols[g->n_symbols] = tsr_strdup(name);
    if (!g->symbols[g->n_symbols])
        return TSR_ERR_OUT_OF_MEMORY;
    *index_out = g->n_symbols++;
    return TSR_OK;
}

tsr_status tsr_graph_add_input(tsr_graph *g, const char *name, tsr_dtype dtype, int rank,
                               const int64_t *dims, const char *const *dim_names)
{
    if (!g || !name)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_add_input: graph or name is NULL");
    if (!tsr_dtype_size(dtype))
        return tsr_error(TSR_ERR_DTYPE, "input '%s': unsupported dtype %d", name, (int)dtype);
    if (rank < 0 || rank > TSR_MAX_RANK)
        return tsr_error(TSR_ERR_UNSUPPORTED, "input '%s': rank %d is outside 0..%d", name, rank,
                         TSR_MAX_RANK);
    int64_t d[TSR_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        if (dim_names && dim_names[i] && *dim_names[i]) {
            int s;
            TSR_CHECK(tsr_graph_symbol(g, dim_names[i], &s));
            d[i] = TSR_DIM_SYM(s);
        } else if (dims && dims[i] >= 0) {
            d[i] = dims[i];
        } else if (dims && dims[i] == TSR_DIM_UNKNOWN) {
            d[i] = TSR_DIM_UNKNOWN;
        } else {
            return tsr_error(TSR_ERR_SHAPE, "input '%s': dim %d has no size and no name", name, i);
        }
    }
    char what[300];
    snprintf(what, sizeof what, "input '%s'", name);
    int64_t numel;
    TSR_CHECK(tsr_shape_numel_checked(rank, d, dtype, what, &numel));
    TSR_CHECK(tsr_grow((void **)&g->inputs, &g->cap_inputs, g->n_inputs + 1, sizeof *g->inputs));
    int v;
    TSR_CHECK(tsr_graph_new_value(g, name, &v));
    tsr_value *val = &g->values[v];
    val->dtype = dtype;
    val->rank = rank;
    memcpy(val->dims, d, sizeof(int64_t) * (size_t)rank);
    val->is_input = true;
    g->inputs[g->n_inputs++] = v;
    return TSR_OK;
}

tsr_status tsr_value_set_constant(tsr_value *v, const tsr_tensor *t)
{
    size_t bytes = tsr_tensor_bytes(t);
    void *data = tsr_shared_alloc(bytes);
    if (!data)
        return TSR_ERR_OUT_OF_MEMORY;
    if (bytes)
        memcpy(data, t->data, bytes);
    tsr_shared_release(v->data);
    v->data = data;
    v->dtype = t->dtype;
    v->rank = t->rank;
    memcpy(v->dims, t->dims, sizeof v->dims);
    return TSR_OK;
}

tsr_tensor tsr_value_tensor(const tsr_value *v)
{
    tsr_tensor t = {.dtype = v->dtype, .rank = v->rank, .data = v->data};
    memcpy(t.dims, v->dims, sizeof t.dims);
    return t;
}

tsr_status tsr_graph_add_constant(tsr_graph *g, const char *name, const tsr_tensor *value)
{
    if (!g || !name || !value)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_add_constant: NULL argument");
    char what[300];
    snprintf(what, sizeof what, "constant '%.200s'", name);
    TSR_CHECK(tsr_tensor_require_host(value, what));
    if (!tsr_dtype_size(value->dtype))
        return tsr_error(TSR_ERR_DTYPE, "constant '%s': unsupported dtype %d", name,
                         (int)value->dtype);
    if (value->rank < 0 || value->rank > TSR_MAX_RANK)
        return tsr_error(TSR_ERR_UNSUPPORTED, "constant '%s': rank %d is outside 0..%d", name,
                         value->rank, TSR_MAX_RANK);
    for (int i = 0; i < value->rank; i++)
        if (value->dims[i] < 0)
            return tsr_error(TSR_ERR_SHAPE, "constant '%s': negative dimension", name);
    int64_t numel;
    TSR_CHECK(tsr_shape_numel_checked(value->rank, value->dims, value->dtype, what, &numel));
    if (numel > 0 && !value->data)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "constant '%s': data is NULL", name);
    int v;
    TSR_CHECK(tsr_graph_new_value(g, name, &v));
    tsr_status st = tsr_value_set_constant(&g->values[v], value);
    if (st != TSR_OK) {
        free_values_from(g, v);
        rebuild_name_index(g);
    }
    return st;
}

tsr_status tsr_graph_add_parameter(tsr_graph *g, const char *name, const tsr_tensor *value)
{
    if (value && !tsr_dtype_is_float(value->dtype))
        return tsr_error(TSR_ERR_DTYPE, "parameter '%s' must be float32 or float64, got %s",
                         name ? name : "", tsr_dtype_name(value->dtype));
    TSR_CHECK(tsr_graph_add_constant(g, name, value));
    g->values[g->n_values - 1].is_param = true;
    return TSR_OK;
}

static tsr_status copy_attr(const tsr_op_def *op, const tsr_attr *src, tsr_node_attr *dst)
{
    memset(dst, 0, sizeof *dst);
    if (!src->name)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "an attribute of %s has no name", op->name);
    const tsr_attr_def *def = NULL;
    for (const tsr_attr_def *d = op->attrs; d && d->name; d++)
        if (strcmp(d->name, src->name) == 0)
            def = d;
    if (!def)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s has no attribute '%s'", op->name, src->name);
    if (def->type != src->type)
        return tsr_error(TSR_ERR_PARSE, "%s attribute '%s' has the wrong type (%d, expected %d)",
                         op->name, src->name, (int)src->type, (int)def->type);
    dst->name = tsr_strdup(src->name);
    if (!dst->name)
        return TSR_ERR_OUT_OF_MEMORY;
    dst->type = src->type;
    dst->i = src->i;
    dst->f = src->f;
    switch (src->type) {
    case TSR_ATTR_STRING:
        dst->s = tsr_strdup(src->s ? src->s : "");
        if (!dst->s)
            return TSR_ERR_OUT_OF_MEMORY;
        break;
    case TSR_ATTR_INTS:
        dst->count = src->count;
        dst->ints = tsr_malloc(src->count * sizeof(int64_t));
        if (!dst->ints)
            return TSR_ERR_OUT_OF_MEMORY;
        if (src->count)
            memcpy(dst->ints, src->ints, src->count * sizeof(int64_t));
        break;
    case TSR_ATTR_FLOATS:
        dst->count = src->count;
        dst->floats = tsr_malloc(src->count * sizeof(double));
        if (!dst->floats)
            return TSR_ERR_OUT_OF_MEMORY;
        if (src->count)
            memcpy(dst->floats, src->floats, src->count * sizeof(double));
        break;
    case TSR_ATTR_TENSOR: {
        if (!src->t || src->t->rank < 0 || src->t->rank > TSR_MAX_RANK ||
            !tsr_dtype_size(src->t->dtype) || tsr_tensor_numel(src->t) < 0)
            return tsr_error(TSR_ERR_PARSE, "%s attribute '%s' holds no usable tensor", op->name,
                             src->name);
        dst->t = *src->t;
        size_t bytes = tsr_tensor_bytes(src->t);
        dst->t.data = tsr_aligned_alloc(bytes);
        if (!dst->t.data)
            return TSR_ERR_OUT_OF_MEMORY;
        if (bytes)
            memcpy(dst->t.data, src->t->data, bytes);
        break;
    }
    case TSR_ATTR_GRAPH:
        if (!src->graph)
            return tsr_error(TSR_ERR_PARSE, "%s attribute '%s' holds no graph", op->name,
                             src->name);
        return tsr_graph_clone(src->graph, &dst->graph);
    default: break;
    }
    return TSR_OK;
}

void tsr_node_describe(const tsr_node *n, char *buf, size_t size)
{
    snprintf(buf, size, "node '%s' (%s)", n->name && *n->name ? n->name : "<unnamed>", n->op->name);
}

/* Runs the reference kernel of a node whose inputs are all known, turning
 * its outputs into constants. */
static tsr_status fold_node(tsr_graph *g, const tsr_node *n)
{
    tsr_kernel_ctx k = {.node = n, .n_inputs = n->n_inputs, .n_outputs = n->n_outputs, .threads = 1};
    tsr_tensor ins[TSR_MAX_NODE_IO], outs[TSR_MAX_NODE_IO];
    tsr_status st = TSR_OK;
    for (int i = 0; i < n->n_inputs; i++) {
        if (n->inputs[i] < 0)
            continue;
        ins[i] = tsr_value_tensor(&g->values[n->inputs[i]]);
        k.inputs[i] = &ins[i];
    }
    int done = 0;
    for (; done < n->n_outputs; done++) {
        outs[done] = tsr_value_tensor(&g->values[n->outputs[done]]);
        outs[done].data = tsr_shared_alloc(tsr_tensor_bytes(&outs[done]));
        if (!outs[done].data) {
            st = TSR_ERR_OUT_OF_MEMORY;
            goto cleanup;
        }
        k.outputs[done] = &outs[done];
    }
    st = n->op->ref(&k);
    if (st != TSR_OK)
        goto cleanup;
    for (int o = 0; o < n->n_outputs; o++) {
        g->values[n->outputs[o]].data = outs[o].data;
        outs[o].data = NULL;
    }
cleanup:
    for (int o = 0; o < done; o++)
        tsr_shared_release(outs[o].data);
    return st;
}

/* Folding runs the reference kernel while the graph is built, so it may
 * only make (and spend in FLOPs) the fold limit beyond the bytes its
 * constant inputs and attributes already hold: Constant, views and casts
 * of weights and shape computations always fold, while a node that makes
 * a large tensor out of a few scalars (Range, ConstantOfShape, Expand,
 * Tile) is left for the plan to run. A tiny model cannot make loading or
 * planning it take long or much memory. */
static bool node_foldable(const tsr_graph *g, const tsr_infer_ctx *ctx)
{
    const tsr_node *n = ctx->node;
    if (n->op->flags & TSR_OP_NO_FOLD)
        return false;
    int64_t budget = g->fold_limit, made = 0;
    for (int a = 0; a < n->n_attrs && budget >= 0; a++) {
        const tsr_node_attr *at = &n->attrs[a];
        int64_t held = at->type == TSR_ATTR_TENSOR ? (int64_t)tsr_tensor_bytes(&at->t)
                       : at->type == TSR_ATTR_INTS || at->type == TSR_ATTR_FLOATS
                           ? (int64_t)at->count * 8
                           : 0;
        if (!tsr_size_add(budget, held, &budget))
            budget = TSR_MAX_TENSOR_BYTES;
    }
    for (int i = 0; i < n->n_inputs; i++) {
        if (n->inputs[i] < 0)
            continue;
        const tsr_value *v = &g->values[n->inputs[i]];
        bool shape_known = tsr_shape_numel(v->rank, v->dims) >= 0;
        if (!((v->data && !v->is_param) || ((n->op->flags & TSR_OP_SHAPE_ONLY) && shape_known)))
            return false;
        tsr_tensor t = tsr_value_tensor(v);
        if (v->data && budget >= 0 && !tsr_size_add(budget, (int64_t)tsr_tensor_bytes(&t), &budget))
            budget = TSR_MAX_TENSOR_BYTES;
    }
    if (n->op->flags & TSR_OP_SHAPE_ONLY)
        budget = -1; /* at most TSR_MAX_RANK integers, whatever the input */
    for (int o = 0; o < n->n_outputs; o++) {
        tsr_tensor t = tsr_value_tensor(&g->values[n->outputs[o]]);
        if (tsr_tensor_numel(&t) < 0)
            return false;
        if (budget >= 0 &&
            (!tsr_size_add(made, (int64_t)tsr_tensor_bytes(&t), &made) || made > budget))
            return false;
    }
    return budget < 0 || !n->op->flops || n->op->flops(ctx) <= (double)budget;
}

/* Every output's element count and bytes must be representable before
 * anything is allocated for it (folding, plans, kernels), and a size an op
 * took from the data must not pass for a symbol the graph lacks. */
static tsr_status check_output_sizes(const tsr_graph *g, const tsr_node *n)
{
    for (int o = 0; o < n->n_outputs; o++) {
        const tsr_value *v = &g->values[n->outputs[o]];
        for (int d = 0; d < v->rank; d++)
            if (tsr_dim_is_sym(v->dims[d]) && -2 - v->dims[d] >= (int64_t)g->n_symbols)
                return tsr_error(TSR_ERR_SHAPE, "output '%s' would get the invalid size %lld",
                                 v->name, (long long)v->dims[d]);
        char what[300];
        snprintf(what, sizeof what, "output '%s'", v->name);
        int64_t numel;
        TSR_CHECK(tsr_shape_numel_checked(v->rank, v->dims, v->dtype, what, &numel));
    }
    return TSR_OK;
}

/* A node of an op defined by other ops (op.h) becomes the nodes its
 * expansion adds. Its output values, made for inference, give way to the
 * expansion's of the same names; a failed expansion takes back every node
 * it added (the caller frees the values). */
static tsr_status expand_node(tsr_graph *g, const tsr_node *node, int first_value)
{
    char **names = tsr_calloc((size_t)node->n_outputs, sizeof *names);
    if (!names)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = TSR_OK;
    for (int o = 0; o < node->n_outputs && st == TSR_OK; o++)
        if (!(names[o] = tsr_strdup(g->values[node->outputs[o]].name)))
            st = TSR_ERR_OUT_OF_MEMORY;
    int first_node = g->n_nodes;
    if (st == TSR_OK) {
        free_values_from(g, first_value);
        st = rebuild_name_index(g);
    }
    if (st == TSR_OK)
        st = node->op->expand(g, node, (const char *const *)names);
    if (st != TSR_OK) {
        for (int n = first_node; n < g->n_nodes; n++) {
            for (int i = 0; i < g->nodes[n].n_inputs; i++)
                if (g->nodes[n].inputs[i] >= 0)
                    g->values[g->nodes[n].inputs[i]].n_uses--;
            free_node(&g->nodes[n]);
        }
        g->n_nodes = first_node;
    }
    for (int o = 0; o < node->n_outputs; o++)
        free(names[o]);
    free(names);
    return st;
}

tsr_status tsr_graph_add_node_op(tsr_graph *g, const tsr_op_def *op, int opset,
                                 const char *node_name, int n_inputs, const char *const *inputs,
                                 int n_outputs, const char *const *outputs, int n_attrs,
                                 const tsr_attr *attrs)
{
    const char *label = node_name && *node_name ? node_name : "<unnamed>";
    if (n_inputs < op->min_inputs || n_inputs > op->max_inputs)
        return tsr_error(TSR_ERR_PARSE, "node '%s' (%s): %d inputs, expected %d to %d", label,
                         op->name, n_inputs, op->min_inputs, op->max_inputs);
    if (n_outputs < op->min_outputs || n_outputs > op->max_outputs)
        return tsr_error(TSR_ERR_PARSE, "node '%s' (%s): %d outputs, expected %d to %d", label,
                         op->name, n_outputs, op->min_outputs, op->max_outputs);
    if (n_inputs > TSR_MAX_NODE_IO || n_outputs > TSR_MAX_NODE_IO)
        return tsr_error(TSR_ERR_UNSUPPORTED, "node '%s' (%s): more than %d inputs or outputs",
                         label, op->name, TSR_MAX_NODE_IO);
    TSR_CHECK(tsr_grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes));

    int first_value = g->n_values;
    tsr_node node = {.op = op, .opset = opset, .n_inputs = n_inputs, .n_outputs = n_outputs};
    tsr_status st = TSR_OK;
    node.name = tsr_strdup(node_name ? node_name : "");
    node.inputs = tsr_calloc((size_t)n_inputs + 1, sizeof(int));
    node.outputs = tsr_calloc((size_t)n_outputs + 1, sizeof(int));
    node.attrs = tsr_calloc((size_t)n_attrs + 1, sizeof(tsr_node_attr));
    if (!node.name || !node.inputs || !node.outputs || !node.attrs) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto fail;
    }
    for (int a = 0; a < n_attrs; a++) {
        for (int b = 0; b < a; b++)
            if (attrs[a].name && strcmp(attrs[a].name, attrs[b].name) == 0) {
                st = tsr_error(TSR_ERR_PARSE, "attribute '%s' is given twice", attrs[a].name);
                goto fail;
            }
        node.n_attrs = a + 1;
        st = copy_attr(op, &attrs[a], &node.attrs[a]);
        if (st != TSR_OK)
            goto fail;
    }
    for (const tsr_attr_def *d = op->attrs; d && d->name; d++)
        if (d->required && !tsr_attr_has(&node, d->name)) {
            st = tsr_error(TSR_ERR_PARSE, "required attribute '%s' is missing", d->name);
            goto fail;
        }
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i] || !*inputs[i]) {
            if (i < op->min_inputs) {
                st = tsr_error(TSR_ERR_PARSE, "required input %d is missing", i);
                goto fail;
            }
            node.inputs[i] = -1;
            continue;
        }
        node.inputs[i] = tsr_graph_find_value(g, inputs[i]);
        if (node.inputs[i] < 0) {
            st = tsr_error(TSR_ERR_NOT_FOUND,
                           "input '%s' is not defined before use (missing initializer or "
                           "producer)",
                           inputs[i]);
            goto fail;
        }
    }
    for (int o = 0; o < n_outputs; o++) {
        if (!outputs[o] || !*outputs[o]) {
            char buf[256];
            st = tsr_graph_unique_name(g, "unused_output", buf, sizeof buf);
            if (st == TSR_OK)
                st = tsr_graph_new_value(g, buf, &node.outputs[o]);
        } else {
            st = tsr_graph_new_value(g, outputs[o], &node.outputs[o]);
        }
        if (st != TSR_OK)
            goto fail;
    }

    tsr_infer_ctx ctx = {.graph = g, .node = &node, .n_inputs = n_inputs, .n_outputs = n_outputs};
    for (int i = 0; i < n_inputs; i++)
        ctx.inputs[i] = node.inputs[i] >= 0 ? &g->values[node.inputs[i]] : NULL;
    for (int o = 0; o < n_outputs; o++)
        ctx.outputs[o] = &g->values[node.outputs[o]];
    st = op->infer(&ctx);
    if (st == TSR_OK)
        st = check_output_sizes(g, &node);
    if (st != TSR_OK)
        goto fail;

    if (op->expand && op->expandable(&ctx)) {
        st = expand_node(g, &node, first_value);
        if (st != TSR_OK)
            goto fail;
        free_node(&node);
        return TSR_OK;
    }
    if (node_foldable(g, &ctx)) {
        st = fold_node(g, &node);
        if (st != TSR_OK)
            goto fail;
        free_node(&node);
        return TSR_OK;
    }
    for (int o = 0; o < n_outputs; o++)
        g->values[node.outputs[o]].producer = g->n_nodes;
    for (int i = 0; i < n_inputs; i++)
        if (node.inputs[i] >= 0)
            g->values[node.inputs[i]].n_uses++;
    g->nodes[g->n_nodes++] = node;
    return TSR_OK;

fail: {
    char where[320];
    snprintf(where, sizeof where, "node '%s' (%s): ", label, op->name);
    if (st != TSR_ERR_OUT_OF_MEMORY && strncmp(tsr_last_error(), where, strlen(where)) != 0)
        tsr_error_prefix("%s", where);
}
    free_node(&node);
    free_values_from(g, first_value);
    rebuild_name_index(g);
    return st;
}

tsr_status tsr_graph_add_node(tsr_graph *g, const char *op_type, const char *domain,
                              const char *node_name, int n_inputs, const char *const *inputs,
                              int n_outputs, const char *const *outputs, int n_attrs,
                              const tsr_attr *attrs)
{
    if (!g || !op_type || (n_inputs && !inputs) || (n_outputs && !outputs) || (n_attrs && !attrs) ||
        n_inputs < 0 || n_outputs < 0 || n_attrs < 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_add_node: bad arguments");
    const char *dom = domain && strcmp(domain, "ai.onnx") != 0 ? domain : "";
    const tsr_op_def *op = tsr_op_find(dom, op_type);
    if (!op)
        return tsr_error(TSR_ERR_UNSUPPORTED, "node '%s': unknown op '%s'%s%s%s",
                         node_name ? node_name : "<unnamed>", op_type, *dom ? " in domain '" : "",
                         dom, *dom ? "'" : "");
    return tsr_graph_add_node_op(g, op, g->default_opset, node_name, n_inputs, inputs, n_outputs,
                                 outputs, n_attrs, attrs);
}

tsr_status tsr_graph_add_output(tsr_graph *g, const char *name)
{
    if (!g || !name)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_add_output: NULL argument");
    int v = tsr_graph_find_value(g, name);
    if (v < 0)
        return tsr_error(TSR_ERR_NOT_FOUND, "graph output '%s' is not produced by any node", name);
    TSR_CHECK(tsr_grow((void **)&g->outputs, &g->cap_outputs, g->n_outputs + 1, sizeof *g->outputs));
    g->outputs[g->n_outputs++] = v;
    g->values[v].n_uses++;
    return TSR_OK;
}

int tsr_graph_num_inputs(const tsr_graph *g) { return g ? g->n_inputs : 0; }
int tsr_graph_num_outputs(const tsr_graph *g) { return g ? g->n_outputs : 0; }
int tsr_graph_num_nodes(const tsr_graph *g) { return g ? g->n_nodes : 0; }

tsr_status tsr_graph_node_info(const tsr_graph *g, int index, const char **name_out,
                               const char **op_type_out)
{
    if (!g || !name_out || !op_type_out || index < 0 || index >= g->n_nodes)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "node index %d out of range", index);
    *name_out = g->nodes[index].name && *g->nodes[index].name ? g->nodes[index].name : NULL;
    *op_type_out = g->nodes[index].op->name;
    return TSR_OK;
}

static void value_info(const tsr_graph *g, const tsr_value *v, tsr_value_info *info)
{
    memset(info, 0, sizeof *info);
    info->name = v->name;
    info->dtype = v->dtype;
    info->rank = v->rank;
    for (int i = 0; i < v->rank; i++) {
        info->dims[i] = tsr_dim_known(v->dims[i]) ? v->dims[i] : -1;
        if (tsr_dim_is_sym(v->dims[i]))
            info->dim_names[i] = g->symbols[TSR_DIM_SYM_INDEX(v->dims[i])];
    }
}

tsr_status tsr_graph_input_info(const tsr_graph *g, int index, tsr_value_info *info_out)
{
    if (!g || !info_out || index < 0 || index >= g->n_inputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "input index %d out of range", index);
    value_info(g, &g->values[g->inputs[index]], info_out);
    return TSR_OK;
}

tsr_status tsr_graph_output_info(const tsr_graph *g, int index, tsr_value_info *info_out)
{
    if (!g || !info_out || index < 0 || index >= g->n_outputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "output index %d out of range", index);
    value_info(g, &g->values[g->outputs[index]], info_out);
    return TSR_OK;
}

void tsr_graph_recount(tsr_graph *g)
{
    for (int v = 0; v < g->n_values; v++) {
        g->values[v].producer = -1;
        g->values[v].n_uses = 0;
    }
    for (int n = 0; n < g->n_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                g->values[node->inputs[i]].n_uses++;
        for (int o = 0; o < node->n_outputs; o++)
            g->values[node->outputs[o]].producer = n;
    }
    for (int o = 0; o < g->n_outputs; o++)
        g->values[g->outputs[o]].n_uses++;
}

bool tsr_graph_remove_dead(tsr_graph *g)
{
    bool changed = false;
    tsr_graph_recount(g);
    /* Nodes are topologically ordered: one backward sweep suffices. */
    for (int n = g->n_nodes - 1; n >= 0; n--) {
        tsr_node *node = &g->nodes[n];
        bool used = false;
        for (int o = 0; o < node->n_outputs; o++)
            used |= g->values[node->outputs[o]].n_uses > 0;
        if (used)
            continue;
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                g->values[node->inputs[i]].n_uses--;
        free_node(node);
        node->op = NULL;
        changed = true;
    }
    int kept = 0;
    for (int n = 0; n < g->n_nodes; n++)
        if (g->nodes[n].op)
            g->nodes[kept++] = g->nodes[n];
    g->n_nodes = kept;
    tsr_graph_recount(g);
    /* Drop unread constants and orphaned outputs by compacting values. */
    int *remap = tsr_malloc((size_t)(g->n_values + 1) * sizeof *remap);
    if (!remap)
        return changed; /* keeping dead values is harmless */
    int nv = 0;
    for (int v = 0; v < g->n_values; v++) {
        tsr_value *val = &g->values[v];
        bool keep = val->is_input || val->n_uses > 0 || val->producer >= 0;
        if (keep) {
            remap[v] = nv;
            g->values[nv++] = *val;
        } else {
            remap[v] = -1;
            free(val->name);
            tsr_shared_release(val->data);
            changed = true;
        }
    }
    g->n_values = nv;
    for (int n = 0; n < g->n_nodes; n++) {
        tsr_node *node = &g->nodes[n];
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                node->inputs[i] = remap[node->inputs[i]];
        for (int o = 0; o < node->n_outputs; o++)
            node->outputs[o] = remap[node->outputs[o]];
    }
    for (int i = 0; i < g->n_inputs; i++)
        g->inputs[i] = remap[g->inputs[i]];
    for (int o = 0; o < g->n_outputs; o++)
        g->outputs[o] = remap[g->outputs[o]];
    free(remap);
    rebuild_name_index(g);
    tsr_graph_recount(g);
    return changed;
}

int tsr_node_attr_views(const tsr_node *n, tsr_attr *attrs, int max)
{
    int count = n->n_attrs < max ? n->n_attrs : max;
    for (int i = 0; i < count; i++) {
        const tsr_node_attr *a = &n->attrs[i];
        attrs[i] = (tsr_attr){.name = a->name, .type = a->type, .i = a->i, .f = a->f, .s = a->s,
                              .count = a->count, .ints = a->ints, .floats = a->floats, .t = &a->t,
                              .graph = a->graph};
    }
    return count;
}

tsr_status tsr_graph_share_constant(tsr_graph *dst, const tsr_value *val, bool freeze_params)
{
    return tsr_graph_share_constant_as(dst, val->name, val, freeze_params);
}

tsr_status tsr_graph_share_constant_as(tsr_graph *dst, const char *name, const tsr_value *val,
                                       bool freeze_params)
{
    int idx;
    TSR_CHECK(tsr_graph_new_value(dst, name, &idx));
    tsr_value *copy = &dst->values[idx];
    copy->dtype = val->dtype;
    copy->rank = val->rank;
    memcpy(copy->dims, val->dims, sizeof copy->dims);
    copy->data = val->data;
    tsr_shared_retain(copy->data);
    copy->is_param = val->is_param && !freeze_params;
    return TSR_OK;
}

tsr_status tsr_graph_replay_node(const tsr_graph *src, int n, tsr_graph *dst)
{
    return tsr_graph_replay_node_as(src, n, dst, NULL);
}

tsr_status tsr_graph_replay_node_as(const tsr_graph *src, int n, tsr_graph *dst,
                                    const char *const *names)
{
    const tsr_node *node = &src->nodes[n];
    const char *ins[TSR_MAX_NODE_IO], *outs[TSR_MAX_NODE_IO];
    tsr_attr attrs[64];
    if (node->n_attrs > 64)
        return tsr_error(TSR_ERR_UNSUPPORTED, "node '%s' has more than 64 attributes", node->name);
    for (int i = 0; i < node->n_inputs; i++)
        ins[i] = node->inputs[i] < 0 ? ""
                 : names             ? names[node->inputs[i]]
                                     : src->values[node->inputs[i]].name;
    for (int o = 0; o < node->n_outputs; o++)
        outs[o] = names ? names[node->outputs[o]] : src->values[node->outputs[o]].name;
    tsr_node_attr_views(node, attrs, 64);
    return tsr_graph_add_node_op(dst, node->op, node->opset, node->name, node->n_inputs, ins,
                                 node->n_outputs, outs, node->n_attrs, attrs);
}

tsr_status tsr_graph_replay(const tsr_graph *src, tsr_graph *dst, bool freeze_params)
{
    dst->fold_limit = src->fold_limit;
    for (int v = 0; v < src->n_values; v++) {
        const tsr_value *val = &src->values[v];
        if (val->data && val->producer < 0 && !val->is_input)
            TSR_CHECK(tsr_graph_share_constant(dst, val, freeze_params));
    }
    for (int n = 0; n < src->n_nodes; n++)
        TSR_CHECK(tsr_graph_replay_node(src, n, dst));
    for (int o = 0; o < src->n_outputs; o++)
        TSR_CHECK(tsr_graph_add_output(dst, src->values[src->outputs[o]].name));
    tsr_graph_remove_dead(dst);
    return TSR_OK;
}

static tsr_status clone_graph(const tsr_graph *g, bool expand_all, tsr_graph **out)
{
    tsr_graph *c;
    TSR_CHECK(tsr_graph_create(&c));
    tsr_status st = TSR_OK;
    c->default_opset = g->default_opset;
    c->fold_limit = g->fold_limit;
    c->expand_all = expand_all;
    for (int s = 0; s < g->n_symbols && st == TSR_OK; s++) {
        int idx;
        st = tsr_graph_symbol(c, g->symbols[s], &idx);
    }
    for (int i = 0; i < g->n_inputs && st == TSR_OK; i++) {
        const tsr_value *v = &g->values[g->inputs[i]];
        const char *names[TSR_MAX_RANK] = {0};
        for (int d = 0; d < v->rank; d++)
            if (tsr_dim_is_sym(v->dims[d]))
                names[d] = g->symbols[TSR_DIM_SYM_INDEX(v->dims[d])];
        st = tsr_graph_add_input(c, v->name, v->dtype, v->rank, v->dims, names);
    }
    if (st == TSR_OK)
        st = tsr_graph_replay(g, c, false);
    if (st != TSR_OK) {
        tsr_graph_destroy(c);
        return st;
    }
    *out = c;
    return TSR_OK;
}

tsr_status tsr_graph_clone(const tsr_graph *g, tsr_graph **out)
{
    return clone_graph(g, g->expand_all, out);
}

tsr_status tsr_graph_clone_expanded(const tsr_graph *g, tsr_graph **out)
{
    return clone_graph(g, true, out);
}

/* Reverse-mode autodiff: the forward graph is cloned, one input per
 * differentiated output receives its seed gradient, and the forward nodes
 * are visited in reverse order, each through its op's gradient rule, which
 * appends ordinary nodes to the same graph. The result computes the
 * forward outputs and the gradients in one run and can be differentiated
 * again, since every node it holds has a rule of its own. */
#include "autodiff/autodiff.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tsr_grad_ctx {
    tsr_graph *g;
    int node;         /* the forward node whose rule runs */
    int n_fwd_values; /* values of the forward graph: the ones with gradients */
    int *grad;        /* per forward value: its accumulated gradient, or -1 */
    bool *wants;      /* per forward value: leads to a wanted value */
};

#define NAME_MAX_LEN 512

const tsr_node *tsr_grad_node(const tsr_grad_ctx *c)
{
    return c->node >= 0 ? &c->g->nodes[c->node] : NULL;
}

const char *tsr_grad_input(const tsr_grad_ctx *c, int i)
{
    const tsr_node *n = tsr_grad_node(c);
    if (i < 0 || i >= n->n_inputs || n->inputs[i] < 0)
        return NULL;
    return c->g->values[n->inputs[i]].name;
}

const char *tsr_grad_output(const tsr_grad_ctx *c, int o)
{
    const tsr_node *n = tsr_grad_node(c);
    return o >= 0 && o < n->n_outputs ? c->g->values[n->outputs[o]].name : NULL;
}

const tsr_value *tsr_grad_value(const tsr_grad_ctx *c, const char *name)
{
    int v = name ? tsr_graph_find_value(c->g, name) : -1;
    return v >= 0 ? &c->g->values[v] : NULL;
}

const char *tsr_grad_dy(const tsr_grad_ctx *c, int o)
{
    const tsr_node *n = tsr_grad_node(c);
    if (o < 0 || o >= n->n_outputs)
        return NULL;
    int gv = c->grad[n->outputs[o]];
    return gv >= 0 ? c->g->values[gv].name : NULL;
}

bool tsr_grad_wants(const tsr_grad_ctx *c, int i)
{
    const tsr_node *n = tsr_grad_node(c);
    return i >= 0 && i < n->n_inputs && n->inputs[i] >= 0 && c->wants[n->inputs[i]];
}

tsr_status tsr_grad_unsupported(const tsr_grad_ctx *c, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)c; /* the transform names the node in front */
    return tsr_error(TSR_ERR_UNSUPPORTED, "%s", msg);
}

int tsr_grad_node_attrs(const tsr_grad_ctx *c, tsr_attr *attrs, int max)
{
    return tsr_node_attr_views(tsr_grad_node(c), attrs, max);
}

/* Emits a node whose outputs get exactly the names in `names`. */
static tsr_status emit_named(tsr_grad_ctx *c, const tsr_op_def *op, int n_in,
                             const char *const *ins, int n_attrs, const tsr_attr *attrs, int n_out,
                             const char *const *names)
{
    const tsr_node *fwd = tsr_grad_node(c);
    const char *fwd_name = fwd ? fwd->name : "";
    char node_name[NAME_MAX_LEN];
    snprintf(node_name, sizeof node_name, "%s%sgrad", fwd_name, *fwd_name ? "/" : "");
    int opset = *op->domain ? 1 : TSR_GRAD_OPSET;
    return tsr_graph_add_node_op(c->g, op, opset, node_name, n_in, ins, n_out, names, n_attrs,
                                 attrs);
}

tsr_status tsr_grad_emit(tsr_grad_ctx *c, const tsr_op_def *op, int n_in, const char *const *ins,
                         int n_attrs, const tsr_attr *attrs, int n_out, const char **outs)
{
    if (n_out > TSR_MAX_NODE_IO)
        return tsr_error(TSR_ERR_INTERNAL, "a gradient node with %d outputs", n_out);
    char bufs[TSR_MAX_NODE_IO][NAME_MAX_LEN];
    const char *names[TSR_MAX_NODE_IO];
    const char *base = c->node >= 0 ? tsr_grad_output(c, 0) : "grad";
    for (int o = 0; o < n_out; o++) {
        char stem[NAME_MAX_LEN];
        if (n_out > 1)
            snprintf(stem, sizeof stem, "%s__d%s_%d", base, op->name, o);
        else
            snprintf(stem, sizeof stem, "%s__d%s", base, op->name);
        TSR_CHECK(tsr_graph_unique_name(c->g, stem, bufs[o], NAME_MAX_LEN));
        names[o] = bufs[o];
    }
    TSR_CHECK(emit_named(c, op, n_in, ins, n_attrs, attrs, n_out, names));
    for (int o = 0; o < n_out; o++)
        outs[o] = c->g->values[tsr_graph_find_value(c->g, names[o])].name;
    return TSR_OK;
}

tsr_status tsr_grad_unary(tsr_grad_ctx *c, const tsr_op_def *op, const char *x, const char **out)
{
    return tsr_grad_emit(c, op, 1, &x, 0, NULL, 1, out);
}

tsr_status tsr_grad_binary(tsr_grad_ctx *c, const tsr_op_def *op, const char *a, const char *b,
                           const char **out)
{
    const char *ins[2] = {a, b};
    return tsr_grad_emit(c, op, 2, ins, 0, NULL, 1, out);
}

static tsr_status add_constant(tsr_grad_ctx *c, const char *stem, const tsr_tensor *t,
                               const char **out)
{
    char name[NAME_MAX_LEN];
    TSR_CHECK(tsr_graph_unique_name(c->g, stem, name, sizeof name));
    TSR_CHECK(tsr_graph_add_constant(c->g, name, t));
    *out = c->g->values[c->g->n_values - 1].name;
    return TSR_OK;
}

tsr_status tsr_grad_scalar(tsr_grad_ctx *c, double value, tsr_dtype dtype, const char **out)
{
    float f = (float)value;
    tsr_tensor t = {.dtype = dtype, .rank = 0, .data = dtype == TSR_FLOAT32 ? (void *)&f : &value};
    if (!tsr_dtype_is_float(dtype))
        return tsr_error(TSR_ERR_INTERNAL, "scalar constant of dtype %s", tsr_dtype_name(dtype));
    return add_constant(c, "grad_const", &t, out);
}

tsr_status tsr_grad_ints(tsr_grad_ctx *c, int n, const int64_t *vals, const char **out)
{
    int64_t none = 0;
    tsr_tensor t = {.dtype = TSR_INT64, .rank = 1, .dims = {n}, .data = n ? (void *)vals : &none};
    return add_constant(c, "grad_ints", &t, out);
}

tsr_status tsr_grad_shape(tsr_grad_ctx *c, const char *x, const char **out)
{
    return tsr_grad_unary(c, &tsr_op_Shape, x, out);
}

tsr_status tsr_grad_zeros_like(tsr_grad_ctx *c, const char *like, const char **out)
{
    const tsr_value *v = tsr_grad_value(c, like);
    double zero = 0.0;
    float zero_f = 0.0f;
    tsr_tensor t = {.dtype = v->dtype, .rank = 1, .dims = {1}};
    t.data = v->dtype == TSR_FLOAT32 ? (void *)&zero_f : &zero;
    tsr_attr attr = TSR_ATTR_T("value", &t);
    const char *shape;
    TSR_CHECK(tsr_grad_shape(c, like, &shape));
    return tsr_grad_emit(c, &tsr_op_ConstantOfShape, 1, &shape, 1, &attr, 1, out);
}

tsr_status tsr_grad_inverse_count(tsr_grad_ctx *c, const char *x, int n, const int *axes,
                                  tsr_dtype dt, const char **out)
{
    const tsr_value *v = tsr_grad_value(c, x);
    int64_t count = 1;
    bool known = true;
    for (int k = 0; k < n; k++) {
        known &= tsr_dim_known(v->dims[axes[k]]);
        if (known)
            count *= v->dims[axes[k]];
    }
    if (known)
        return tsr_grad_scalar(c, count ? 1.0 / (double)count : 0.0, dt, out);
    const char *shape, *sizes, *prod = NULL;
    tsr_attr to = TSR_ATTR_I("to", dt), axis0 = TSR_ATTR_I("axis", 0);
    TSR_CHECK(tsr_grad_shape(c, x, &shape));
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_Cast, 1, &shape, 1, &to, 1, &sizes));
    for (int k = 0; k < n; k++) {
        int64_t index = axes[k];
        const char *at, *size;
        TSR_CHECK(tsr_grad_ints(c, 1, &index, &at));
        const char *ins[2] = {sizes, at};
        TSR_CHECK(tsr_grad_emit(c, &tsr_op_Gather, 2, ins, 1, &axis0, 1, &size));
        if (prod)
            TSR_CHECK(tsr_grad_binary(c, &tsr_op_Mul, prod, size, &size));
        prod = size;
    }
    if (!prod)
        return tsr_grad_scalar(c, 1.0, dt, out);
    return tsr_grad_unary(c, &tsr_op_Reciprocal, prod, out);
}

tsr_status tsr_grad_sum_to(tsr_grad_ctx *c, const char *g, const char *like, const char **out)
{
    const tsr_value *gv = tsr_grad_value(c, g), *lv = tsr_grad_value(c, like);
    int gr = gv->rank, lr = lv->rank;
    if (gr < 0 || lr < 0)
        return tsr_grad_unsupported(c, "the gradient of '%s' needs its rank and that of '%s'", like,
                                    g);
    if (lr > gr)
        return tsr_error(TSR_ERR_INTERNAL, "'%s' has rank %d, above its gradient's %d", like, lr,
                         gr);
    int64_t axes[TSR_MAX_RANK];
    int n_axes = 0;
    for (int d = 0; d < gr; d++) {
        int ld = d - (gr - lr);
        int64_t s = gv->dims[d];
        if (ld < 0) {
            axes[n_axes++] = d;
            continue;
        }
        int64_t t = lv->dims[ld];
        if (t == s && t != TSR_DIM_UNKNOWN) /* two unknown sizes need not be equal */
            continue;
        if (t == 1) {
            axes[n_axes++] = d;
            continue;
        }
        if (tsr_dim_known(t) && tsr_dim_known(s))
            return tsr_error(TSR_ERR_INTERNAL, "'%s' does not broadcast to its gradient", like);
        /* Which axes were broadcast is decided by sizes known only at run time. */
        const char *shape;
        TSR_CHECK(tsr_grad_shape(c, like, &shape));
        return tsr_grad_binary(c, &tsr_op_SumTo, g, shape, out);
    }
    if (n_axes == 0) {
        *out = gv->name;
        return TSR_OK;
    }
    const char *axes_name, *reduced;
    TSR_CHECK(tsr_grad_ints(c, n_axes, axes, &axes_name));
    tsr_attr keep = TSR_ATTR_I("keepdims", 1);
    const char *ins[2] = {g, axes_name};
    TSR_CHECK(tsr_grad_emit(c, &tsr_op_ReduceSum, 2, ins, 1, &keep, 1, &reduced));
    if (gr == lr) {
        *out = reduced;
        return TSR_OK;
    }
    int64_t lead[TSR_MAX_RANK];
    for (int d = 0; d < gr - lr; d++)
        lead[d] = d;
    const char *lead_name;
    TSR_CHECK(tsr_grad_ints(c, gr - lr, lead, &lead_name));
    const char *sq[2] = {reduced, lead_name};
    return tsr_grad_emit(c, &tsr_op_Squeeze, 2, sq, 0, NULL, 1, out);
}

tsr_status tsr_grad_contribute(tsr_grad_ctx *c, int i, const char *g)
{
    if (!g || !tsr_grad_wants(c, i))
        return TSR_OK;
    int v = tsr_grad_node(c)->inputs[i];
    int gv = tsr_graph_find_value(c->g, g);
    if (gv < 0)
        return tsr_error(TSR_ERR_INTERNAL, "gradient '%s' does not exist", g);
    const tsr_value *x = &c->g->values[v], *gval = &c->g->values[gv];
    if (gval->dtype != x->dtype)
        return tsr_error(TSR_ERR_INTERNAL, "gradient '%s' of '%s' is %s, not %s", g, x->name,
                         tsr_dtype_name(gval->dtype), tsr_dtype_name(x->dtype));
    bool shape_ok = gval->rank == x->rank;
    for (int d = 0; shape_ok && d < x->rank; d++)
        shape_ok = gval->dims[d] == x->dims[d] || !tsr_dim_known(gval->dims[d]) ||
                   !tsr_dim_known(x->dims[d]);
    if (!shape_ok) {
        char sg[160], sx[160];
        tsr_shape_format(sg, sizeof sg, gval->rank, gval->dims);
        tsr_shape_format(sx, sizeof sx, x->rank, x->dims);
        return tsr_error(TSR_ERR_INTERNAL, "gradient '%s' %s does not have the shape of '%s' %s", g,
                         sg, x->name, sx);
    }
    if (c->grad[v] < 0) {
        c->grad[v] = gv;
        return TSR_OK;
    }
    const char *sum;
    TSR_CHECK(tsr_grad_binary(c, &tsr_op_Add, c->g->values[c->grad[v]].name, g, &sum));
    c->grad[v] = tsr_graph_find_value(c->g, sum);
    return TSR_OK;
}

tsr_status tsr_grad_contribute_sum(tsr_grad_ctx *c, int i, const char *g)
{
    if (!g || !tsr_grad_wants(c, i))
        return TSR_OK;
    const char *reduced;
    TSR_CHECK(tsr_grad_sum_to(c, g, tsr_grad_input(c, i), &reduced));
    return tsr_grad_contribute(c, i, reduced);
}

/* ------------------------------------------------------------ transform */

static tsr_status check_request(const tsr_graph *graph, int n_outputs, const char *const *outputs,
                                int n_wrt, const char *const *wrt)
{
    if (n_outputs < 1 || !outputs || n_wrt < 1 || !wrt)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_graph_gradient needs at least one output and one wrt value");
    for (int k = 0; k < n_outputs; k++) {
        if (!outputs[k])
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "output name %d is NULL", k);
        int v = tsr_graph_find_value(graph, outputs[k]);
        if (v < 0)
            return tsr_error(TSR_ERR_NOT_FOUND, "the graph has no value '%s' to differentiate",
                             outputs[k]);
        if (!tsr_dtype_is_float(graph->values[v].dtype))
            return tsr_error(TSR_ERR_DTYPE, "cannot differentiate '%s' of dtype %s (float only)",
                             outputs[k], tsr_dtype_name(graph->values[v].dtype));
        if (graph->values[v].rank < 0)
            return tsr_error(TSR_ERR_SHAPE, "'%s' has an unknown rank", outputs[k]);
        for (int j = 0; j < k; j++)
            if (strcmp(outputs[j], outputs[k]) == 0)
                return tsr_error(TSR_ERR_INVALID_ARGUMENT, "output '%s' is given twice",
                                 outputs[k]);
    }
    for (int k = 0; k < n_wrt; k++) {
        if (!wrt[k])
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "wrt name %d is NULL", k);
        int v = tsr_graph_find_value(graph, wrt[k]);
        if (v < 0)
            return tsr_error(TSR_ERR_NOT_FOUND,
                             "the graph has no input or parameter '%s' to differentiate by",
                             wrt[k]);
        const tsr_value *val = &graph->values[v];
        if (!tsr_dtype_is_float(val->dtype))
            return tsr_error(TSR_ERR_DTYPE, "'%s' is %s: only float values have gradients", wrt[k],
                             tsr_dtype_name(val->dtype));
        if (!val->is_input && !val->is_param)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "'%s' is neither a graph input nor a parameter (a float "
                             "initializer); gradients are taken with respect to those",
                             wrt[k]);
        for (int j = 0; j < k; j++)
            if (strcmp(wrt[j], wrt[k]) == 0)
                return tsr_error(TSR_ERR_INVALID_ARGUMENT, "wrt value '%s' is given twice", wrt[k]);
    }
    return TSR_OK;
}

static tsr_status add_seed(tsr_grad_ctx *c, const char *output)
{
    tsr_graph *g = c->g;
    int v = tsr_graph_find_value(g, output);
    if (v < 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "'%s' does not lead to any graph output, so it cannot be differentiated",
                         output);
    char stem[NAME_MAX_LEN], name[NAME_MAX_LEN];
    snprintf(stem, sizeof stem, "%s__seed", output);
    TSR_CHECK(tsr_graph_unique_name(g, stem, name, sizeof name));
    const tsr_value *val = &g->values[v];
    const char *dim_names[TSR_MAX_RANK] = {0};
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < val->rank; d++) {
        dims[d] = tsr_dim_known(val->dims[d]) ? val->dims[d] : TSR_DIM_UNKNOWN;
        if (tsr_dim_is_sym(val->dims[d]))
            dim_names[d] = g->symbols[TSR_DIM_SYM_INDEX(val->dims[d])];
    }
    TSR_CHECK(tsr_graph_add_input(g, name, val->dtype, val->rank, dims, dim_names));
    /* The output's gradient is its seed: "contribute" to the output value. */
    int seed = g->n_values - 1;
    c->grad[v] = seed;
    return TSR_OK;
}

/* Runs the rules of forward nodes [0, n_fwd_nodes) in reverse order. */
static tsr_status backward(tsr_grad_ctx *c, int n_fwd_nodes)
{
    tsr_graph *g = c->g;
    for (int n = n_fwd_nodes - 1; n >= 0; n--) {
        const tsr_node *node = &g->nodes[n];
        bool has_dy = false, wanted = false;
        for (int o = 0; o < node->n_outputs; o++)
            has_dy |= c->grad[node->outputs[o]] >= 0;
        for (int i = 0; i < node->n_inputs; i++)
            wanted |= node->inputs[i] >= 0 && c->wants[node->inputs[i]];
        if (!has_dy || !wanted)
            continue;
        c->node = n;
        char desc[320];
        tsr_node_describe(node, desc, sizeof desc);
        if (!node->op->grad)
            return tsr_error(TSR_ERR_UNSUPPORTED, "gradient of %s: %s%s%s has no gradient rule",
                             desc, *node->op->domain ? node->op->domain : "",
                             *node->op->domain ? "::" : "", node->op->name);
        tsr_status st = node->op->grad(c);
        if (st != TSR_OK) {
            if (st != TSR_ERR_OUT_OF_MEMORY)
                tsr_error_prefix("gradient of %s: ", desc);
            return st;
        }
    }
    return TSR_OK;
}

/* Makes "<wrt>__grad" an output holding the gradient of `wrt` (zeros when
 * no differentiated output depends on it). */
static tsr_status add_gradient_output(tsr_grad_ctx *c, const tsr_graph *src, const char *wrt)
{
    tsr_graph *g = c->g;
    char stem[NAME_MAX_LEN], name[NAME_MAX_LEN];
    snprintf(stem, sizeof stem, "%s__grad", wrt);
    TSR_CHECK(tsr_graph_unique_name(g, stem, name, sizeof name));
    int v = tsr_graph_find_value(g, wrt);
    if (v < 0) {
        /* An unused parameter: the clone dropped it; its shape is known. */
        const tsr_value *p = &src->values[tsr_graph_find_value(src, wrt)];
        tsr_tensor t = tsr_value_tensor(p);
        t.data = tsr_aligned_alloc(tsr_tensor_bytes(&t));
        if (!t.data)
            return TSR_ERR_OUT_OF_MEMORY;
        memset(t.data, 0, tsr_tensor_bytes(&t));
        tsr_status st = tsr_graph_add_constant(g, name, &t);
        tsr_aligned_free(t.data);
        TSR_CHECK(st);
        return tsr_graph_add_output(g, name);
    }
    const char *grad_name;
    if (c->grad[v] >= 0) {
        grad_name = g->values[c->grad[v]].name;
    } else {
        TSR_CHECK(tsr_grad_zeros_like(c, wrt, &grad_name));
    }
    const char *names[1] = {name};
    TSR_CHECK(emit_named(c, &tsr_op_Identity, 1, &grad_name, 0, NULL, 1, names));
    return tsr_graph_add_output(g, name);
}

tsr_status tsr_graph_gradient(const tsr_graph *graph, int n_outputs, const char *const *outputs,
                              int n_wrt, const char *const *wrt, tsr_graph **grad_graph_out)
{
    if (!graph || !grad_graph_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_graph_gradient: graph or output is NULL");
    *grad_graph_out = NULL;
    TSR_CHECK(check_request(graph, n_outputs, outputs, n_wrt, wrt));
    tsr_grad_ctx c = {0};
    TSR_CHECK(tsr_graph_clone_expanded(graph, &c.g));
    tsr_graph *g = c.g;
    tsr_status st = TSR_OK;
    int n_fwd_nodes = g->n_nodes;
    c.n_fwd_values = g->n_values;
    /* Seeds add values: size the tables for them too. */
    c.grad = tsr_malloc((size_t)(g->n_values + n_outputs + 1) * sizeof *c.grad);
    c.wants = tsr_calloc((size_t)(g->n_values + n_outputs + 1), sizeof *c.wants);
    if (!c.grad || !c.wants) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (int v = 0; v < g->n_values + n_outputs + 1; v++)
        c.grad[v] = -1;
    for (int k = 0; k < n_wrt; k++) {
        int v = tsr_graph_find_value(g, wrt[k]);
        if (v >= 0)
            c.wants[v] = true;
    }
    for (int n = 0; n < n_fwd_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        bool any = false;
        for (int i = 0; i < node->n_inputs; i++)
            any |= node->inputs[i] >= 0 && c.wants[node->inputs[i]];
        for (int o = 0; any && o < node->n_outputs; o++)
            c.wants[node->outputs[o]] = tsr_dtype_is_float(g->values[node->outputs[o]].dtype);
    }
    for (int k = 0; k < n_outputs && st == TSR_OK; k++)
        st = add_seed(&c, outputs[k]);
    if (st == TSR_OK)
        st = backward(&c, n_fwd_nodes);
    c.node = -1; /* the nodes emitted from here on belong to no forward node */
    for (int k = 0; k < n_wrt && st == TSR_OK; k++)
        st = add_gradient_output(&c, graph, wrt[k]);
    if (st == TSR_OK) {
        tsr_graph_remove_dead(g);
        st = tsr_graph_verify(g);
    }
done:
    free(c.grad);
    free(c.wants);
    if (st != TSR_OK) {
        tsr_graph_destroy(g);
        return st;
    }
    *grad_graph_out = g;
    return TSR_OK;
}

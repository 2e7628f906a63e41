/* Control flow: If and Loop, whose sub-graphs (If's then_branch and
 * else_branch, Loop's body) the node holds as graph attributes. Their
 * inputs are the ONNX node's and then the outer values the sub-graphs read
 * (the ONNX importer gathers them), which are also the last inputs of each
 * sub-graph, in the same order.
 *
 * If: exported detection models branch on shapes only (batched_nms's
 * numel() == 0, the exporter's Squeeze of a dim that may be 1), so the
 * node expands, like LSTM, into the taken branch's nodes once cond is a
 * constant: at import when shapes are fixed, in a plan's replay at
 * concrete input shapes, or in the tail a plan builds once a size known
 * only at run time is known (runtime/plan.c plans an unsized node's small
 * inputs, cond among them, as constants there, so a cond on input values
 * works too, one tail per value). Until then its outputs' dims are
 * unknown, since the branches may give different shapes; where their
 * ranks differ too, shape inference before the plan follows then_branch's
 * rank. No kernel runs a branch: a cond that stays unknown even in a tail
 * is refused when the node runs.
 *
 * Loop: unrolled the same way, the body replayed once per iteration with
 * iter_num a constant, as soon as the trip count, the initial condition
 * and the body's condition after each iteration fold to constants (a
 * for-loop over a shape, a while-loop on a counter, a count found at run
 * time in a tail); scan outputs are the Concat of each iteration's output
 * Unsqueezed on axis 0. The unrolled graph is an ordinary one, so
 * gradients and kernels come with it. A condition that depends on large
 * values known only at run time is refused naming the node. */
#include "ops/op.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Iterations past which an unrolled Loop is refused rather than grown
 * (a while-loop whose condition never turns false). */
#define LOOP_MAX_ITERATIONS 4096

static const tsr_attr_def if_attrs[] = {
    {"then_branch", TSR_ATTR_GRAPH, true}, {"else_branch", TSR_ATTR_GRAPH, true}, {NULL}};

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

/* outer_inputs: how many of the node's last inputs are outer values the
 * body reads (the importer sets it); the body's inputs are iter_num, cond,
 * the loop-carried values and those, its outputs cond, the loop-carried
 * values and the scan outputs. */
static const tsr_attr_def loop_attrs[] = {
    {"body", TSR_ATTR_GRAPH, true}, {"outer_inputs", TSR_ATTR_INT, false, 0}, {NULL}};

typedef struct loop_arity {
    int carried, scans, outer;
} loop_arity;

static loop_arity arity(const tsr_node *n, const tsr_graph *body)
{
    loop_arity a = {.outer = (int)tsr_attr_int(n, "outer_inputs")};
    a.carried = n->n_inputs - 2 - a.outer;
    a.scans = body->n_outputs - 1 - a.carried;
    return a;
}

static bool holds_one(const tsr_value *v)
{
    for (int d = 0; d < v->rank; d++)
        if (v->dims[d] >= 0 && v->dims[d] != 1)
            return false;
    return true;
}

static tsr_status loop_infer(tsr_infer_ctx *c)
{
    const tsr_graph *body = branch(c->node, "body");
    if (!body)
        return tsr_infer_error(c, TSR_ERR_PARSE, "the body holds no graph");
    int64_t outer = tsr_attr_int(c->node, "outer_inputs");
    if (c->n_inputs < 2 || outer < 0 || outer > c->n_inputs - 2)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "a Loop takes M and cond (either may be empty), then its "
                               "loop-carried values; it has %d inputs, %" PRId64
                               " of them outer values",
                               c->n_inputs, outer);
    loop_arity a = arity(c->node, body);
    if (body->n_inputs != c->n_inputs)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "the body takes %d inputs, but the node gives iter_num, cond and "
                               "%d loop-carried values (and %d outer values)",
                               body->n_inputs - a.outer, a.carried, a.outer);
    if (a.scans < 0 || c->n_outputs != a.carried + a.scans)
        return tsr_infer_error(c, TSR_ERR_PARSE,
                               "the body gives %d outputs and the node has %d: the body gives "
                               "cond, the %d loop-carried values and the scan outputs, the node "
                               "all but cond",
                               body->n_outputs, c->n_outputs, a.carried);
    if (c->inputs[0]) {
        TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_DTYPE_BIT(TSR_INT64)));
        if (!holds_one(c->inputs[0]))
            return tsr_infer_error(c, TSR_ERR_SHAPE, "the trip count M must hold one element");
    }
    if (c->inputs[1]) {
        TSR_CHECK(tsr_infer_require_dtype(c, 1, TSR_DTYPE_BIT(TSR_BOOL)));
        if (!holds_one(c->inputs[1]))
            return tsr_infer_error(c, TSR_ERR_SHAPE, "cond must hold one element");
    }
    const tsr_value *iter = &body->values[body->inputs[0]];
    const tsr_value *cond_in = &body->values[body->inputs[1]];
    const tsr_value *cond_out = &body->values[body->outputs[0]];
    if (iter->dtype != TSR_INT64 || cond_in->dtype != TSR_BOOL || cond_out->dtype != TSR_BOOL)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "the body takes iter_num as %s and cond as %s and gives cond as "
                               "%s: int64, bool and bool",
                               tsr_dtype_name(iter->dtype), tsr_dtype_name(cond_in->dtype),
                               tsr_dtype_name(cond_out->dtype));
    int64_t dims[TSR_MAX_RANK];
    for (int d = 0; d < TSR_MAX_RANK; d++)
        dims[d] = TSR_DIM_UNKNOWN;
    for (int k = 0; k < a.carried; k++) {
        const tsr_value *init = c->inputs[2 + k];
        const tsr_value *in = &body->values[body->inputs[2 + k]];
        const tsr_value *out = &body->values[body->outputs[1 + k]];
        if (!init)
            return tsr_infer_error(c, TSR_ERR_PARSE, "loop-carried value %d is missing", k);
        if (in->dtype != init->dtype || out->dtype != init->dtype)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "loop-carried value %d is %s, but the body takes %s and "
                                   "gives %s",
                                   k, tsr_dtype_name(init->dtype), tsr_dtype_name(in->dtype),
                                   tsr_dtype_name(out->dtype));
        tsr_infer_set(c, k, out->dtype, out->rank, dims);
    }
    for (int j = 0; j < a.scans; j++) {
        const tsr_value *out = &body->values[body->outputs[1 + a.carried + j]];
        if (out->rank + 1 > TSR_MAX_RANK)
            return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                                   "scan output %d would have rank %d, past %d", j, out->rank + 1,
                                   TSR_MAX_RANK);
        tsr_infer_set(c, a.carried + j, out->dtype, out->rank + 1, dims);
    }
    return TSR_OK;
}

/* What an unrolling keeps across iterations: names in g, owned. */
typedef struct unrolling {
    tsr_graph *g;
    const tsr_node *node;
    const tsr_graph *body;
    loop_arity a;
    const char *prefix;
    char step_name[300];              /* of the nodes that Unsqueeze, Concat and give the outputs */
    char **names;                     /* body value -> its name in g at this iteration */
    char **carried;                   /* the loop-carried values so far */
    char *(*pieces)[TSR_MAX_NODE_IO]; /* per scan output: Unsqueezed outputs or partial Concats */
    int n_pieces;
    char *cond;
    char *axes0;
} unrolling;

static tsr_status set_name(char **slot, const char *name)
{
    char *copy = tsr_strdup(name);
    if (!copy)
        return TSR_ERR_OUT_OF_MEMORY;
    free(*slot);
    *slot = copy;
    return TSR_OK;
}

/* A name not yet in g: "<node>/<iteration>/<stem><suffix>", or
 * "<node>/<stem>" for what all iterations share (iteration < 0). */
static tsr_status fresh_name(const unrolling *u, int64_t iteration, const char *stem,
                             const char *suffix, char **slot)
{
    char want[600], buf[700];
    if (iteration < 0)
        snprintf(want, sizeof want, "%s/%s", u->prefix, stem);
    else
        snprintf(want, sizeof want, "%s/%" PRId64 "/%s%s", u->prefix, iteration, stem, suffix);
    TSR_CHECK(tsr_graph_unique_name(u->g, want, buf, sizeof buf));
    return set_name(slot, buf);
}

static tsr_status add_scalar(unrolling *u, const char *stem, tsr_dtype dtype, const void *value,
                             int64_t iteration, char **slot)
{
    TSR_CHECK(fresh_name(u, iteration, stem, "", slot));
    tsr_tensor t = {.dtype = dtype, .rank = 0, .data = (void *)value};
    return tsr_graph_add_constant(u->g, *slot, &t);
}

static tsr_status concat_pieces(unrolling *u, int j, const char *out)
{
    tsr_attr axis = TSR_ATTR_I("axis", 0);
    return tsr_graph_add_node_op(u->g, &tsr_op_Concat, 13, u->step_name, u->n_pieces,
                                 (const char *const *)u->pieces[j], 1, &out, 1, &axis);
}

/* Constants of the body: outer ones (captured by the importer) keep their
 * name where g holds them, so that a gradient reaches the same parameter;
 * the body's own are shared under fresh names. */
static tsr_status share_body_constants(unrolling *u)
{
    for (int v = 0; v < u->body->n_values; v++) {
        const tsr_value *val = &u->body->values[v];
        if (!val->data || val->producer >= 0 || val->is_input)
            continue;
        int there = tsr_graph_find_value(u->g, val->name);
        if (there >= 0 && u->g->values[there].data == val->data) {
            TSR_CHECK(set_name(&u->names[v], val->name));
            continue;
        }
        TSR_CHECK(fresh_name(u, -1, val->name, "", &u->names[v]));
        TSR_CHECK(tsr_graph_share_constant_as(u->g, u->names[v], val, false));
    }
    return TSR_OK;
}

/* One replay of the body; *go_out: the condition it gives. */
static tsr_status iterate(unrolling *u, int64_t it, bool *go_out, bool *pending)
{
    const tsr_graph *b = u->body;
    const loop_arity *a = &u->a;
    TSR_CHECK(
        add_scalar(u, b->values[b->inputs[0]].name, TSR_INT64, &it, it, &u->names[b->inputs[0]]));
    TSR_CHECK(set_name(&u->names[b->inputs[1]], u->cond));
    for (int k = 0; k < a->carried; k++)
        TSR_CHECK(set_name(&u->names[b->inputs[2 + k]], u->carried[k]));
    for (int v = 0; v < b->n_values; v++) {
        const tsr_value *val = &b->values[v];
        if (!val->is_input && (val->producer >= 0 || !val->data))
            TSR_CHECK(fresh_name(u, it, val->name, "", &u->names[v]));
    }
    for (int n = 0; n < b->n_nodes; n++)
        TSR_CHECK(tsr_graph_replay_node_as(b, n, u->g, (const char *const *)u->names));
    const char *cond = u->names[b->outputs[0]];
    const tsr_value *cv = &u->g->values[tsr_graph_find_value(u->g, cond)];
    tsr_tensor ct = tsr_value_tensor(cv);
    if (!cv->data || tsr_tensor_numel(&ct) != 1) {
        if (pending)
            *pending = cv->data == NULL;
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "node '%s' (Loop): the body's condition '%s' after iteration %" PRId64
                         " is %s: Tessera unrolls a Loop when the plan is made, so its trip "
                         "count and condition must follow from constants, shapes, or small "
                         "values known once a data-dependent node has run",
                         u->node->name, b->values[b->outputs[0]].name, it,
                         cv->data ? "not one element" : "known only when the model runs");
    }
    *go_out = ((const uint8_t *)cv->data)[0] != 0;
    TSR_CHECK(set_name(&u->cond, cond));
    for (int k = 0; k < a->carried; k++)
        TSR_CHECK(set_name(&u->carried[k], u->names[b->outputs[1 + k]]));
    for (int j = 0; j < a->scans; j++) {
        const tsr_value *sv = &b->values[b->outputs[1 + a->carried + j]];
        char **piece = &u->pieces[j][u->n_pieces];
        TSR_CHECK(fresh_name(u, it, sv->name, "_unsqueezed", piece));
        const char *ins[2] = {u->names[b->outputs[1 + a->carried + j]], u->axes0};
        TSR_CHECK(tsr_graph_add_node_op(u->g, &tsr_op_Unsqueeze, 13, u->step_name, 2, ins, 1,
                                        (const char *const *)piece, 0, NULL));
    }
    if (a->scans && ++u->n_pieces == TSR_MAX_NODE_IO) {
        for (int j = 0; j < a->scans; j++) {
            char *part = NULL;
            tsr_status st = fresh_name(u, it, "scan_part", "", &part);
            if (st == TSR_OK)
                st = concat_pieces(u, j, part);
            for (int p = 0; p < u->n_pieces; p++) {
                free(u->pieces[j][p]);
                u->pieces[j][p] = NULL;
            }
            u->pieces[j][0] = part;
            TSR_CHECK(st);
        }
        u->n_pieces = 1;
    }
    return TSR_OK;
}

/* The node's outputs once the loop has stopped after `trips` iterations. */
static tsr_status finish(unrolling *u, int64_t trips, const char *const *outputs)
{
    const loop_arity *a = &u->a;
    for (int k = 0; k < a->carried; k++)
        TSR_CHECK(tsr_graph_add_node_op(u->g, &tsr_op_Identity, 13, u->step_name, 1,
                                        (const char *const *)&u->carried[k], 1, &outputs[k], 0,
                                        NULL));
    for (int j = 0; j < a->scans; j++) {
        const char *out = outputs[a->carried + j];
        if (trips > 0 && u->n_pieces == 1)
            TSR_CHECK(tsr_graph_add_node_op(u->g, &tsr_op_Identity, 13, u->step_name, 1,
                                            (const char *const *)u->pieces[j], 1, &out, 0, NULL));
        else if (trips > 0)
            TSR_CHECK(concat_pieces(u, j, out));
        if (trips > 0)
            continue;
        const tsr_value *sv = &u->body->values[u->body->outputs[1 + a->carried + j]];
        tsr_tensor empty = {.dtype = sv->dtype, .rank = sv->rank + 1};
        for (int d = 0; d < sv->rank; d++) {
            if (!tsr_dim_known(sv->dims[d]))
                return tsr_error(TSR_ERR_UNSUPPORTED,
                                 "node '%s' (Loop): it runs no iteration, and the shape of scan "
                                 "output %d ('%s') is not known without one",
                                 u->node->name, j, sv->name);
            empty.dims[d + 1] = sv->dims[d];
        }
        TSR_CHECK(tsr_graph_add_constant(u->g, out, &empty));
    }
    return TSR_OK;
}

/* The trip count and first condition, constants or absent. */
static void loop_bounds(const tsr_graph *g, const char *const *inputs, int64_t *trips_out,
                        bool *go_out)
{
    *trips_out = INT64_MAX;
    *go_out = true;
    if (inputs[0])
        *trips_out = ((const int64_t *)g->values[tsr_graph_find_value(g, inputs[0])].data)[0];
    if (inputs[1])
        *go_out = ((const uint8_t *)g->values[tsr_graph_find_value(g, inputs[1])].data)[0] != 0;
}

static tsr_status unroll_steps(unrolling *u, const char *const *inputs, const char *const *outputs,
                               bool *pending)
{
    int64_t trips;
    bool go;
    loop_bounds(u->g, inputs, &trips, &go);
    for (int k = 0; k < u->a.carried; k++)
        TSR_CHECK(set_name(&u->carried[k], inputs[2 + k]));
    for (int o = 0; o < u->a.outer; o++) {
        int at = 2 + u->a.carried + o;
        TSR_CHECK(set_name(&u->names[u->body->inputs[at]], inputs[at]));
    }
    if (inputs[1])
        TSR_CHECK(set_name(&u->cond, inputs[1]));
    else
        TSR_CHECK(add_scalar(u, "cond", TSR_BOOL, &(uint8_t){1}, -1, &u->cond));
    if (u->a.scans) {
        int64_t zero = 0;
        TSR_CHECK(fresh_name(u, -1, "axes0", "", &u->axes0));
        tsr_tensor t = {.dtype = TSR_INT64, .rank = 1, .dims = {1}, .data = &zero};
        TSR_CHECK(tsr_graph_add_constant(u->g, u->axes0, &t));
    }
    TSR_CHECK(share_body_constants(u));
    int64_t it = 0;
    for (; go && it < trips; it++) {
        if (it == LOOP_MAX_ITERATIONS)
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "node '%s' (Loop): its condition is still true after %d "
                             "iterations (trip count %s), the most Tessera unrolls",
                             u->node->name, LOOP_MAX_ITERATIONS, inputs[0] ? "given" : "not given");
        TSR_CHECK(iterate(u, it, &go, pending));
    }
    return finish(u, it, outputs);
}

/* Unrolls the node, whose inputs are named `inputs` in g (NULL: omitted),
 * into g. *pending (when not NULL): the failure is a condition not known
 * yet, which a later plan may know. */
static tsr_status unroll(tsr_graph *g, const tsr_node *node, const char *const *inputs,
                         const char *const *outputs, bool *pending)
{
    const tsr_graph *body = branch(node, "body");
    unrolling u = {.g = g,
                   .node = node,
                   .body = body,
                   .a = arity(node, body),
                   .prefix = node->name && *node->name ? node->name : "Loop"};
    snprintf(u.step_name, sizeof u.step_name, "%s/unrolled", u.prefix);
    u.names = tsr_calloc((size_t)body->n_values + 1, sizeof *u.names);
    u.carried = tsr_calloc((size_t)u.a.carried + 1, sizeof *u.carried);
    u.pieces = tsr_calloc((size_t)u.a.scans + 1, sizeof *u.pieces);
    tsr_status st = u.names && u.carried && u.pieces ? unroll_steps(&u, inputs, outputs, pending)
                                                     : TSR_ERR_OUT_OF_MEMORY;
    for (int v = 0; u.names && v < body->n_values; v++)
        free(u.names[v]);
    for (int k = 0; u.carried && k < u.a.carried; k++)
        free(u.carried[k]);
    for (int j = 0; u.pieces && j < u.a.scans; j++)
        for (int p = 0; p < TSR_MAX_NODE_IO; p++)
            free(u.pieces[j][p]);
    free(u.names);
    free(u.carried);
    free(u.pieces);
    free(u.cond);
    free(u.axes0);
    return st;
}

/* Whether a later plan may know more of the node's inputs than g does: one
 * of a shape not yet concrete (a replay at concrete shapes folds what
 * depends on it), or a small integer or scalar, which the tail a plan
 * builds after a data-dependent node takes as a constant (runtime/plan.c). */
static bool inputs_may_fold_later(const tsr_infer_ctx *c)
{
    for (int i = 0; i < c->n_inputs; i++) {
        const tsr_value *v = c->inputs[i];
        if (!v || v->data)
            continue;
        int64_t n = tsr_shape_numel(v->rank, v->dims);
        if (n < 0 || (n <= 64 && (v->dtype == TSR_INT64 || v->dtype == TSR_INT32 || v->rank == 0)))
            return true;
    }
    return false;
}

/* Unrolls the node into a scratch graph holding its inputs: whether the
 * loop terminates at what g knows. A failure other than a condition not
 * known yet, or one no later plan can resolve, says yes too, so that the
 * expansion reports it naming the node. */
static bool loop_expandable(const tsr_infer_ctx *c)
{
    if ((c->inputs[0] && !c->inputs[0]->data) || (c->inputs[1] && !c->inputs[1]->data))
        return false;
    const tsr_graph *g = c->graph;
    tsr_graph *trial;
    if (tsr_graph_create(&trial) != TSR_OK)
        return true;
    trial->default_opset = g->default_opset;
    trial->fold_limit = g->fold_limit;
    tsr_status st = TSR_OK;
    for (int s = 0; s < g->n_symbols && st == TSR_OK; s++) {
        int idx;
        st = tsr_graph_symbol(trial, g->symbols[s], &idx);
    }
    const char *inputs[TSR_MAX_NODE_IO], *outputs[TSR_MAX_NODE_IO];
    for (int i = 0; i < c->n_inputs && st == TSR_OK; i++) {
        const tsr_value *v = c->inputs[i];
        inputs[i] = v ? v->name : NULL;
        if (!v || tsr_graph_find_value(trial, v->name) >= 0)
            continue;
        const char *dim_names[TSR_MAX_RANK] = {0};
        for (int d = 0; d < v->rank; d++)
            if (tsr_dim_is_sym(v->dims[d]))
                dim_names[d] = g->symbols[TSR_DIM_SYM_INDEX(v->dims[d])];
        st = v->data ? tsr_graph_share_constant(trial, v, false)
                     : tsr_graph_add_input(trial, v->name, v->dtype, v->rank, v->dims, dim_names);
    }
    for (int o = 0; o < c->n_outputs; o++)
        outputs[o] = c->outputs[o]->name;
    bool pending = false;
    if (st == TSR_OK)
        st = unroll(trial, c->node, inputs, outputs, &pending);
    tsr_graph_destroy(trial);
    return st == TSR_OK || !pending || !inputs_may_fold_later(c);
}

static tsr_status loop_expand(tsr_graph *g, const tsr_node *node, const char *const *outputs)
{
    const char *inputs[TSR_MAX_NODE_IO];
    for (int i = 0; i < node->n_inputs; i++)
        inputs[i] = node->inputs[i] >= 0 ? g->values[node->inputs[i]].name : NULL;
    return unroll(g, node, inputs, outputs, NULL);
}

static tsr_status loop_ref(const tsr_kernel_ctx *c)
{
    return tsr_error(TSR_ERR_UNSUPPORTED,
                     "node '%s' (Loop): its trip count or condition is known only at run time, "
                     "and Tessera unrolls a Loop when the plan is made (counts and conditions "
                     "on shapes, and on sizes known once a data-dependent node has run, are "
                     "known then)",
                     c->node->name);
}

const tsr_op_def tsr_op_Loop = {
    .name = "Loop",
    .domain = "",
    .min_inputs = 0,
    .max_inputs = TSR_MAX_NODE_IO,
    .min_outputs = 1,
    .max_outputs = TSR_MAX_NODE_IO,
    .attrs = loop_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .flags = TSR_OP_NO_FOLD,
    .infer = loop_infer,
    .ref = loop_ref,
    .expandable = loop_expandable,
    .expand = loop_expand,
};

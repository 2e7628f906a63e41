/* Plans: a graph specialized to concrete input shapes, its nodes assigned
 * to backends, and every intermediate placed in one arena by liveness.
 * Specializations are cached by input shape. */
#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { LOC_NONE, LOC_CONST, LOC_INPUT, LOC_OUTPUT, LOC_ARENA } loc_kind;

typedef struct {
    loc_kind kind;
    int index;     /* graph input or output index */
    size_t offset; /* within the arena */
} value_loc;

typedef struct {
    int node;
    const tsr_backend *backend;
    void *state;
} plan_step;

typedef struct spec {
    int n_inputs;
    int ranks[64];
    int64_t dims[64][TSR_MAX_RANK];
    tsr_graph *graph; /* concrete shapes, constants borrowed from plan->graph */
    plan_step *steps;
    int n_steps;
    value_loc *locs;
    size_t arena_bytes;
    void *arena;
    const tsr_backend *arena_owner;
    double flops;
    struct spec *next;
} spec;

struct tsr_plan {
    tsr_graph *graph;
    tsr_compile_options options;
    const tsr_backend *const *backends;
    int threads;
    spec *specs;
    spec *current;
};

void tsr_compile_options_init(tsr_compile_options *o)
{
    memset(o, 0, sizeof *o);
    o->depth_first = -1;
    o->precision = TSR_PRECISION_FP32;
}

static void spec_destroy(spec *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_steps; i++)
        if (s->steps[i].state && s->steps[i].backend->release)
            s->steps[i].backend->release(s->steps[i].state);
    if (s->arena)
        s->arena_owner->free(s->arena);
    free(s->steps);
    free(s->locs);
    tsr_graph_destroy(s->graph);
    free(s);
}

tsr_status tsr_plan_create(const tsr_graph *graph, const tsr_compile_options *options,
                           tsr_plan **plan_out)
{
    if (!graph || !plan_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_create: graph or plan_out is NULL");
    *plan_out = NULL;
    tsr_compile_options opts;
    if (options)
        opts = *options;
    else
        tsr_compile_options_init(&opts);
    if (!opts.device)
        opts.device = tsr_default_device();
    const tsr_backend *const *backends = tsr_device_backends(opts.device);
    if (!backends)
        return tsr_error(TSR_ERR_UNSUPPORTED, "unknown device '%s' (available: ref)", opts.device);
    if (opts.threads < 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "threads must be >= 0, got %d", opts.threads);
    if (opts.precision != TSR_PRECISION_FP32)
        return tsr_error(TSR_ERR_UNSUPPORTED, "device '%s' computes in fp32 only", opts.device);
    if (graph->n_inputs > 64)
        return tsr_error(TSR_ERR_UNSUPPORTED, "graphs with more than 64 inputs are not supported");
    TSR_CHECK(tsr_graph_verify(graph));
    tsr_plan *p = tsr_calloc(1, sizeof *p);
    if (!p)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = tsr_graph_clone(graph, &p->graph);
    if (st != TSR_OK) {
        free(p);
        return st;
    }
    p->options = opts;
    p->options.device = NULL; /* the caller's string may not outlive the plan */
    p->backends = backends;
    p->threads = tsr_thread_count(opts.threads);
    *plan_out = p;
    return TSR_OK;
}

void tsr_plan_destroy(tsr_plan *p)
{
    if (!p)
        return;
    while (p->specs) {
        spec *next = p->specs->next;
        spec_destroy(p->specs);
        p->specs = next;
    }
    tsr_graph_destroy(p->graph);
    free(p);
}

/* Checks the shapes of the caller's inputs against the graph's declared
 * inputs, binding each symbol to one size. */
static tsr_status check_inputs(const tsr_graph *g, int n_inputs, const tsr_tensor *inputs)
{
    if (n_inputs != g->n_inputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "the model has %d inputs, %d were given",
                         g->n_inputs, n_inputs);
    if (n_inputs && !inputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "inputs is NULL");
    int64_t sym_size[256];
    for (int s = 0; s < g->n_symbols && s < 256; s++)
        sym_size[s] = -1;
    for (int i = 0; i < n_inputs; i++) {
        const tsr_value *v = &g->values[g->inputs[i]];
        const tsr_tensor *t = &inputs[i];
        char want[256], got[256];
        tsr_shape_format(want, sizeof want, v->rank, v->dims);
        if (t->rank >= 0 && t->rank <= TSR_MAX_RANK)
            tsr_shape_format(got, sizeof got, t->rank, t->dims);
        else
            snprintf(got, sizeof got, "rank %d", t->rank);
        if (t->dtype != v->dtype)
            return tsr_error(TSR_ERR_DTYPE, "input '%s' must be %s, got %s", v->name,
                             tsr_dtype_name(v->dtype), tsr_dtype_name(t->dtype));
        if (t->rank != v->rank)
            return tsr_error(TSR_ERR_SHAPE, "input '%s' must have shape %s, got %s", v->name, want,
                             got);
        for (int d = 0; d < v->rank; d++) {
            if (t->dims[d] < 0)
                return tsr_error(TSR_ERR_SHAPE, "input '%s': negative dimension in %s", v->name, got);
            if (tsr_dim_known(v->dims[d]) && v->dims[d] != t->dims[d])
                return tsr_error(TSR_ERR_SHAPE, "input '%s' must have shape %s, got %s (dim %d)",
                                 v->name, want, got, d);
            if (tsr_dim_is_sym(v->dims[d])) {
                int s = TSR_DIM_SYM_INDEX(v->dims[d]);
                if (s < 256 && sym_size[s] >= 0 && sym_size[s] != t->dims[d])
                    return tsr_error(TSR_ERR_SHAPE,
                                     "input '%s' dim %d ('%s') is %lld, but another input gave "
                                     "'%s' = %lld",
                                     v->name, d, g->symbols[s], (long long)t->dims[d], g->symbols[s],
                                     (long long)sym_size[s]);
                if (s < 256)
                    sym_size[s] = t->dims[d];
            }
        }
    }
    return TSR_OK;
}

static bool spec_matches(const spec *s, int n_inputs, const tsr_tensor *inputs)
{
    for (int i = 0; i < n_inputs; i++) {
        if (s->ranks[i] != inputs[i].rank)
            return false;
        for (int d = 0; d < inputs[i].rank; d++)
            if (s->dims[i][d] != inputs[i].dims[d])
                return false;
    }
    return true;
}

static tsr_status assign_backends(tsr_plan *p, spec *s)
{
    const tsr_graph *g = s->graph;
    s->steps = tsr_calloc((size_t)g->n_nodes + 1, sizeof *s->steps);
    if (!s->steps)
        return TSR_ERR_OUT_OF_MEMORY;
    for (int n = 0; n < g->n_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        char desc[320];
        tsr_node_describe(node, desc, sizeof desc);
        const tsr_backend *chosen = NULL;
        for (const tsr_backend *const *b = p->backends; *b && !chosen; b++) {
            char why[256] = "";
            if ((*b)->supports(g, node, why, sizeof why))
                chosen = *b;
            else if (p->options.verbose)
                fprintf(stderr, "tessera: %s: %s refused: %s\n", desc, (*b)->name, why);
        }
        if (!chosen)
            return tsr_error(TSR_ERR_UNSUPPORTED, "%s: no backend of this device runs it", desc);
        if (p->options.verbose)
            fprintf(stderr, "tessera: %s -> %s\n", desc, chosen->name);
        s->steps[s->n_steps].node = n;
        s->steps[s->n_steps].backend = chosen;
        if (chosen->prepare) {
            tsr_status st = chosen->prepare(g, node, &s->steps[s->n_steps].state);
            if (st != TSR_OK) {
                tsr_error_prefix("%s: ", desc);
                return st;
            }
        }
        s->n_steps++;
        if (node->op->flops) {
            tsr_infer_ctx c = {.graph = g, .node = node, .n_inputs = node->n_inputs,
                               .n_outputs = node->n_outputs};
            for (int i = 0; i < node->n_inputs; i++)
                c.inputs[i] = node->inputs[i] >= 0 ? &g->values[node->inputs[i]] : NULL;
            for (int o = 0; o < node->n_outputs; o++)
                c.outputs[o] = &g->values[node->outputs[o]];
            s->flops += node->op->flops(&c);
        }
    }
    return TSR_OK;
}

typedef struct {
    int value;
    size_t bytes;
    int first, last; /* steps during which the buffer is live */
} lifetime;

static int by_size_desc(const void *a, const void *b)
{
    const lifetime *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes < y->bytes ? 1 : -1;
    return x->first - y->first;
}

static size_t align_up(size_t n) { return (n + TSR_ALIGNMENT - 1) / TSR_ALIGNMENT * TSR_ALIGNMENT; }

/* Greedy placement, largest first, at the lowest offset that overlaps no
 * placed buffer whose lifetime overlaps. */
static tsr_status plan_memory(spec *s)
{
    tsr_graph *g = s->graph;
    s->locs = tsr_calloc((size_t)g->n_values + 1, sizeof *s->locs);
    lifetime *lt = tsr_calloc((size_t)g->n_values + 1, sizeof *lt);
    size_t *offsets = tsr_calloc((size_t)g->n_values + 1, sizeof *offsets);
    tsr_status st = TSR_OK;
    if (!s->locs || !lt || !offsets) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (int v = 0; v < g->n_values; v++)
        s->locs[v].kind = g->values[v].data ? LOC_CONST : LOC_NONE;
    for (int i = 0; i < g->n_inputs; i++)
        s->locs[g->inputs[i]] = (value_loc){LOC_INPUT, i, 0};
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o];
        if (s->locs[v].kind == LOC_NONE)
            s->locs[v] = (value_loc){LOC_OUTPUT, o, 0};
    }
    int n_lt = 0;
    for (int step = 0; step < s->n_steps; step++) {
        const tsr_node *node = &g->nodes[s->steps[step].node];
        for (int o = 0; o < node->n_outputs; o++) {
            int v = node->outputs[o];
            if (s->locs[v].kind != LOC_NONE)
                continue;
            s->locs[v].kind = LOC_ARENA;
            s->locs[v].index = n_lt;
            lt[n_lt++] = (lifetime){v, align_up(tsr_shape_numel(g->values[v].rank, g->values[v].dims) *
                                               tsr_dtype_size(g->values[v].dtype)),
                                    step, step};
        }
        for (int i = 0; i < node->n_inputs; i++) {
            int v = node->inputs[i];
            if (v >= 0 && s->locs[v].kind == LOC_ARENA)
                lt[s->locs[v].index].last = step;
        }
    }
    qsort(lt, (size_t)n_lt, sizeof *lt, by_size_desc);
    size_t total = 0;
    for (int a = 0; a < n_lt; a++) {
        size_t offset = 0;
        bool moved = true;
        while (moved) {
            moved = false;
            for (int b = 0; b < a; b++) {
                bool time_overlap = lt[a].first <= lt[b].last && lt[b].first <= lt[a].last;
                bool space_overlap = offset < offsets[b] + lt[b].bytes && offsets[b] < offset + lt[a].bytes;
                if (time_overlap && space_overlap) {
                    offset = offsets[b] + lt[b].bytes;
                    moved = true;
                }
            }
        }
        offsets[a] = offset;
        s->locs[lt[a].value].offset = offset;
        if (offset + lt[a].bytes > total)
            total = offset + lt[a].bytes;
    }
    s->arena_bytes = total;
done:
    free(lt);
    free(offsets);
    return st;
}

static tsr_status spec_create(tsr_plan *p, int n_inputs, const tsr_tensor *inputs, spec **out)
{
    tsr_status st;
    spec *s = tsr_calloc(1, sizeof *s);
    if (!s)
        return TSR_ERR_OUT_OF_MEMORY;
    s->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++) {
        s->ranks[i] = inputs[i].rank;
        memcpy(s->dims[i], inputs[i].dims, sizeof(int64_t) * (size_t)inputs[i].rank);
    }
    st = tsr_graph_create(&s->graph);
    if (st != TSR_OK)
        goto fail;
    s->graph->default_opset = p->graph->default_opset;
    for (int i = 0; i < n_inputs && st == TSR_OK; i++) {
        const tsr_value *v = &p->graph->values[p->graph->inputs[i]];
        st = tsr_graph_add_input(s->graph, v->name, v->dtype, inputs[i].rank, inputs[i].dims, NULL);
    }
    if (st == TSR_OK)
        st = tsr_graph_replay(p->graph, s->graph, true);
    if (st != TSR_OK)
        goto fail;
    for (int v = 0; v < s->graph->n_values; v++) {
        const tsr_value *val = &s->graph->values[v];
        if (tsr_shape_numel(val->rank, val->dims) < 0) {
            char desc[320] = "an input";
            if (val->producer >= 0)
                tsr_node_describe(&s->graph->nodes[val->producer], desc, sizeof desc);
            st = tsr_error(TSR_ERR_UNSUPPORTED,
                           "%s: the shape of '%s' depends on the values of a non-constant input; "
                           "Tessera needs shapes that follow from the input shapes",
                           desc, val->name);
            goto fail;
        }
    }
    if ((st = tsr_graph_verify(s->graph)) != TSR_OK || (st = assign_backends(p, s)) != TSR_OK ||
        (st = plan_memory(s)) != TSR_OK)
        goto fail;
    s->arena_owner = p->backends[0];
    if (s->arena_bytes) {
        s->arena = s->arena_owner->alloc(s->arena_bytes);
        if (!s->arena) {
            st = TSR_ERR_OUT_OF_MEMORY;
            goto fail;
        }
    }
    *out = s;
    return TSR_OK;
fail:
    spec_destroy(s);
    return st;
}

tsr_status tsr_plan_reshape(tsr_plan *p, int n_inputs, const tsr_tensor *inputs)
{
    if (!p)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_reshape: plan is NULL");
    TSR_CHECK(check_inputs(p->graph, n_inputs, inputs));
    if (p->current && spec_matches(p->current, n_inputs, inputs))
        return TSR_OK;
    for (spec *s = p->specs; s; s = s->next)
        if (spec_matches(s, n_inputs, inputs)) {
            p->current = s;
            return TSR_OK;
        }
    spec *s = NULL;
    TSR_CHECK(spec_create(p, n_inputs, inputs, &s));
    s->next = p->specs;
    p->specs = s;
    p->current = s;
    return TSR_OK;
}

tsr_status tsr_plan_output_desc(const tsr_plan *p, int index, tsr_tensor *desc_out)
{
    if (!p || !desc_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_output_desc: NULL argument");
    if (!p->current)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "call tsr_plan_reshape before asking for outputs");
    const tsr_graph *g = p->current->graph;
    if (index < 0 || index >= g->n_outputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "output index %d out of range (%d outputs)", index,
                         g->n_outputs);
    *desc_out = tsr_value_tensor(&g->values[g->outputs[index]]);
    desc_out->data = NULL;
    return TSR_OK;
}

static tsr_tensor bind(const spec *s, int v, const tsr_tensor *inputs, tsr_tensor *outputs)
{
    const tsr_value *val = &s->graph->values[v];
    tsr_tensor t = tsr_value_tensor(val);
    const value_loc *loc = &s->locs[v];
    switch (loc->kind) {
    case LOC_INPUT: t.data = inputs[loc->index].data; break;
    case LOC_OUTPUT: t.data = outputs[loc->index].data; break;
    case LOC_ARENA: t.data = (char *)s->arena + loc->offset; break;
    default: break;
    }
    return t;
}

tsr_status tsr_plan_run(tsr_plan *p, int n_inputs, const tsr_tensor *inputs, int n_outputs,
                        tsr_tensor *outputs)
{
    TSR_CHECK(tsr_plan_reshape(p, n_inputs, inputs));
    spec *s = p->current;
    const tsr_graph *g = s->graph;
    if (n_outputs != g->n_outputs || (n_outputs && !outputs))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "the model has %d outputs, %d buffers were given",
                         g->n_outputs, n_outputs);
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i].data && tsr_tensor_numel(&inputs[i]) > 0)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "input %d has no data", i);
    for (int o = 0; o < n_outputs; o++) {
        const tsr_value *v = &g->values[g->outputs[o]];
        tsr_tensor want = tsr_value_tensor(v);
        bool same = outputs[o].dtype == want.dtype && outputs[o].rank == want.rank;
        for (int d = 0; same && d < want.rank; d++)
            same = outputs[o].dims[d] == want.dims[d];
        if (!same) {
            char buf[256];
            tsr_shape_format(buf, sizeof buf, want.rank, want.dims);
            return tsr_error(TSR_ERR_SHAPE, "output '%s' needs a %s buffer of shape %s", v->name,
                             tsr_dtype_name(want.dtype), buf);
        }
        if (!outputs[o].data && tsr_tensor_numel(&want) > 0)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "output %d has no buffer", o);
    }
    tsr_tensor ins[TSR_MAX_NODE_IO], outs[TSR_MAX_NODE_IO];
    for (int step = 0; step < s->n_steps; step++) {
        const tsr_node *node = &g->nodes[s->steps[step].node];
        tsr_kernel_ctx k = {.node = node, .n_inputs = node->n_inputs, .n_outputs = node->n_outputs,
                            .threads = p->threads};
        for (int i = 0; i < node->n_inputs; i++) {
            if (node->inputs[i] < 0)
                continue;
            ins[i] = bind(s, node->inputs[i], inputs, outputs);
            k.inputs[i] = &ins[i];
        }
        for (int o = 0; o < node->n_outputs; o++) {
            outs[o] = bind(s, node->outputs[o], inputs, outputs);
            k.outputs[o] = &outs[o];
        }
        tsr_status st = s->steps[step].backend->run(s->steps[step].state, &k);
        if (st != TSR_OK) {
            char desc[320];
            tsr_node_describe(node, desc, sizeof desc);
            tsr_error_prefix("%s: ", desc);
            return st;
        }
    }
    /* Outputs no kernel wrote: constants, inputs, or a value listed twice. */
    for (int o = 0; o < n_outputs; o++) {
        int v = g->outputs[o];
        if (s->locs[v].kind == LOC_OUTPUT && s->locs[v].index == o)
            continue;
        tsr_tensor src = bind(s, v, inputs, outputs);
        size_t bytes = tsr_tensor_bytes(&src);
        if (bytes && src.data != outputs[o].data)
            memcpy(outputs[o].data, src.data, bytes);
    }
    return TSR_OK;
}

tsr_status tsr_plan_get_stats(const tsr_plan *p, tsr_plan_stats *out)
{
    if (!p || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_get_stats: NULL argument");
    if (!p->current)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "call tsr_plan_reshape before asking for stats");
    const spec *s = p->current;
    memset(out, 0, sizeof *out);
    out->arena_bytes = s->arena_bytes;
    out->flops = s->flops;
    out->n_steps = s->n_steps;
    for (int v = 0; v < s->graph->n_values; v++) {
        const tsr_value *val = &s->graph->values[v];
        if (val->data && !val->is_input)
            out->constant_bytes += tsr_shape_numel(val->rank, val->dims) * tsr_dtype_size(val->dtype);
    }
    return TSR_OK;
}

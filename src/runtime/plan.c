/* Plans: a graph specialized to concrete input shapes, its nodes assigned
 * to backends, and every intermediate placed by liveness in one arena per
 * memory space the device's backends use.
 * Specializations are cached by input shape, least recently used evicted
 * past the cache's limits. Where the data decides sizes, a specialization
 * runs its prefix and plans its tail at the sizes found (spec_split in
 * plan_internal.h, docs/dynamic_shapes.md): re-planning the tail reuses
 * the whole planner (passes, layouts, stacks, the memory plan) at concrete
 * shapes, where sizing buffers at run time would need every pass and
 * backend to handle unknown sizes. */
#include "runtime/plan_internal.h"

#include "passes/passes.h"

#include <omp.h>
#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tsr_compile_options_init(tsr_compile_options *o)
{
    memset(o, 0, sizeof *o);
    o->depth_first = -1;
    o->precision = TSR_PRECISION_FP32;
    const char *verbose = getenv("TSR_VERBOSE");
    o->verbose = verbose && *verbose && strcmp(verbose, "0") != 0;
    const char *autotune = getenv("TSR_AUTOTUNE");
    o->autotune = !autotune || !*autotune ? -1 : strcmp(autotune, "0") != 0;
    const char *inter_op = getenv("TSR_INTER_OP");
    o->inter_op = !inter_op || !*inter_op ? -1 : strcmp(inter_op, "0") != 0;
}

/* Drops spec s's references to the uploads its BUF_UPLOAD buffers hold,
 * freeing those no spec reads any more. */
static void release_uploads(tsr_plan *p, spec *s)
{
    for (int b = 0; b < s->n_bufs; b++) {
        plan_buffer *pb = &s->bufs[b];
        if (pb->kind != BUF_UPLOAD || !pb->upload)
            continue;
        for (int u = 0; u < p->n_uploads; u++) {
            plan_upload *up = &p->uploads[u];
            if (up->device != pb->upload || --up->refs > 0)
                continue;
            const plan_space *sp = &p->spaces[up->space];
            sp->memory->free(sp->ctx, up->device);
            *up = p->uploads[--p->n_uploads];
            break;
        }
        pb->upload = NULL;
    }
}

/* Gives each BUF_UPLOAD buffer of s the device copy of its constant,
 * uploading those no other spec of the plan holds yet. */
static tsr_status acquire_uploads(tsr_plan *p, spec *s)
{
    bool uploaded[TSR_MAX_SPACES] = {false};
    int n_new = 0, n_shared = 0;
    size_t new_bytes = 0, shared_bytes = 0;
    for (int b = 0; b < s->n_bufs; b++) {
        plan_buffer *pb = &s->bufs[b];
        if (pb->kind != BUF_UPLOAD)
            continue;
        const tsr_value *v = &s->graph->values[pb->value];
        tsr_tensor t = tsr_value_tensor(v);
        size_t bytes = tsr_tensor_bytes(&t);
        plan_upload *found = NULL;
        for (int u = 0; u < p->n_uploads && !found; u++)
            if (p->uploads[u].host == v->data && p->uploads[u].space == pb->space &&
                p->uploads[u].bytes == bytes)
                found = &p->uploads[u];
        if (!found) {
            TSR_CHECK(tsr_grow((void **)&p->uploads, &p->cap_uploads, p->n_uploads + 1,
                               sizeof *p->uploads));
            const plan_space *sp = &p->spaces[pb->space];
            void *device = sp->memory->alloc(sp->ctx, bytes);
            if (!device)
                return TSR_ERR_OUT_OF_MEMORY;
            tsr_status st = sp->memory->copy_from_host(sp->ctx, device, v->data, bytes);
            if (st != TSR_OK) {
                sp->memory->free(sp->ctx, device);
                return st;
            }
            found = &p->uploads[p->n_uploads++];
            *found = (plan_upload){.host = v->data, .space = pb->space, .bytes = bytes,
                                   .device = device};
            uploaded[pb->space] = true;
            n_new++;
            new_bytes += bytes;
        } else {
            n_shared++;
            shared_bytes += bytes;
        }
        found->refs++;
        pb->upload = found->device;
    }
    for (int i = 0; i < p->n_spaces; i++)
        if (uploaded[i])
            TSR_CHECK(p->spaces[i].memory->synchronize(p->spaces[i].ctx));
    if (p->options.verbose && n_new + n_shared)
        fprintf(stderr,
                "tessera: constants on the device: %d uploaded (%zu bytes), %d already there "
                "(%zu bytes)\n",
                n_new, new_bytes, n_shared, shared_bytes);
    return TSR_OK;
}

static void split_destroy(spec_split *sp)
{
    if (!sp)
        return;
    for (int k = 0; sp->frontier && k < sp->n_frontier; k++)
        tsr_aligned_free(sp->frontier[k].data);
    tsr_graph_destroy(sp->full);
    free(sp->frontier_value);
    free(sp->as_constant);
    free(sp->frontier);
    free(sp->output_of);
    free(sp->tail_input);
    free(sp->tail_const);
    free(sp->tail_output);
    free(sp->tail_node);
    free(sp);
}

static void spec_destroy(tsr_plan *p, spec *s)
{
    if (!s)
        return;
    for (int c = 0; c < s->n_consts; c++)
        free(s->consts[c].data);
    free(s->consts);
    for (int o = 0; s->owned_outputs && o < s->graph->n_outputs; o++)
        tsr_aligned_free(s->owned_outputs[o]);
    free(s->owned_outputs);
    split_destroy(s->split);
    tsr_dag_destroy(s->dag);
    release_uploads(p, s);
    tsr_schedule_release(s);
    for (int i = 0; i < s->n_spaces; i++)
        if (s->arena[i])
            s->spaces[i].memory->free(s->spaces[i].ctx, s->arena[i]);
    tsr_graph_destroy(s->graph);
    free(s->ranks);
    free(s->dims);
    free(s->nan_guard);
    free(s->residency);
    free(s->input_layouts);
    free(s->output_layouts);
    free(s);
}

static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return (x > y) - (x < y);
}

/* Lists the constants of the plan's graph for plan_shares. */
static tsr_status list_shared(tsr_plan *p)
{
    const tsr_graph *g = p->graph;
    p->shared = tsr_calloc((size_t)g->n_values, sizeof *p->shared);
    if (!p->shared)
        return TSR_ERR_OUT_OF_MEMORY;
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].data)
            p->shared[p->n_shared++] = g->values[v].data;
    qsort(p->shared, (size_t)p->n_shared, sizeof *p->shared, compare_pointers);
    return TSR_OK;
}

static bool plan_shares(const tsr_plan *p, const void *data)
{
    return bsearch(&data, p->shared, (size_t)p->n_shared, sizeof *p->shared, compare_pointers);
}

/* What a specialization holds, as counted against the cache's byte limit:
 * its arena, the constants it folded at its shapes (those it shares with
 * the plan's graph belong to the plan and count for none), its graph's
 * tables, steps and buffers. State that backends keep behind their
 * handles (oneDNN primitives and the weights they reorder) is not seen. */
static size_t spec_bytes(const tsr_plan *p, const spec *s)
{
    const tsr_graph *g = s->graph;
    size_t bytes = sizeof *s +
                   (size_t)s->n_inputs * (sizeof *s->ranks + sizeof *s->dims) +
                   (size_t)s->cap_steps * sizeof *s->steps + (size_t)s->cap_bufs * sizeof *s->bufs +
                   sizeof *g + (size_t)g->cap_values * sizeof *g->values +
                   (size_t)g->cap_nodes * sizeof *g->nodes;
    for (int i = 0; i < s->n_spaces; i++)
        bytes += s->arena_bytes[i];
    for (int i = 0; i < s->n_steps; i++)
        bytes += (size_t)(s->steps[i].n_in + s->steps[i].n_out) * sizeof(int);
    for (int n = 0; n < g->n_nodes; n++)
        bytes += (size_t)(g->nodes[n].n_inputs + g->nodes[n].n_outputs) * sizeof(int) +
                 (size_t)g->nodes[n].n_attrs * sizeof(tsr_node_attr);
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].data && !plan_shares(p, g->values[v].data)) {
            tsr_tensor t = tsr_value_tensor(&g->values[v]);
            bytes += tsr_tensor_bytes(&t);
        }
    for (int k = 0; s->split && k < s->split->n_frontier; k++)
        bytes += tsr_tensor_bytes(&s->split->frontier[k]);
    return bytes;
}

/* The memory spaces of p's backends, the host first, each with its
 * device context. */
static tsr_status open_spaces(tsr_plan *p)
{
    p->spaces[0].memory = &tsr_host_memory;
    p->n_spaces = 1;
    for (const tsr_backend *const *b = p->backends; *b; b++) {
        if (!(*b)->memory)
            return tsr_error(TSR_ERR_INTERNAL, "backend '%s' declares no memory space", (*b)->name);
        int i = 0;
        while (i < p->n_spaces && p->spaces[i].memory != (*b)->memory)
            i++;
        if (i < p->n_spaces)
            continue;
        if (p->n_spaces == TSR_MAX_SPACES)
            return tsr_error(TSR_ERR_UNSUPPORTED, "a device's backends use more than %d memory spaces",
                             TSR_MAX_SPACES);
        plan_space *sp = &p->spaces[p->n_spaces];
        sp->memory = (*b)->memory;
        if (sp->memory->context_create)
            TSR_CHECK(sp->memory->context_create(&sp->ctx));
        p->n_spaces++;
    }
    return TSR_OK;
}

int tsr_spec_space(const spec *s, const tsr_backend *b)
{
    for (int i = 0; i < s->n_spaces; i++)
        if (s->spaces[i].memory == b->memory)
            return i;
    return TSR_HOST_SPACE; /* unreachable: open_spaces listed every backend's space */
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
        return tsr_error(TSR_ERR_UNSUPPORTED, "unknown device '%s' (available: %s)", opts.device,
                         tsr_device_names());
    if (opts.threads < 0)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "threads must be >= 0, got %d", opts.threads);
    char why[256];
    if (!tsr_device_supports_precision(opts.device, opts.precision, why, sizeof why))
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s", why);
    if (graph->n_inputs > TSR_PLAN_MAX_INPUTS)
        return tsr_error(TSR_ERR_UNSUPPORTED, "graphs with more than %d inputs are not supported",
                         TSR_PLAN_MAX_INPUTS);
    TSR_CHECK(tsr_graph_verify(graph));
    tsr_plan *p = tsr_calloc(1, sizeof *p);
    if (!p)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = tsr_graph_clone(graph, &p->graph);
    if (st != TSR_OK) {
        free(p);
        return st;
    }
    if ((st = list_shared(p)) != TSR_OK ||
        !(p->residency = tsr_calloc((size_t)(graph->n_inputs + graph->n_outputs) + 1, 1))) {
        tsr_graph_destroy(p->graph);
        free(p->shared);
        free(p);
        return st != TSR_OK ? st : TSR_ERR_OUT_OF_MEMORY;
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        tsr_graph_destroy(p->graph);
        free(p->shared);
        free(p->residency);
        free(p);
        return tsr_error(TSR_ERR_OUT_OF_MEMORY, "tsr_plan_create: no mutex for the plan");
    }
    p->max_specs = TSR_PLAN_CACHE_MAX_SPECS;
    p->max_bytes = TSR_PLAN_CACHE_MAX_BYTES;
    p->options = opts;
    p->optimize = tsr_device_optimizes(opts.device);
    p->options.device = NULL; /* the caller's string may not outlive the plan */
    p->backends = backends;
    p->threads = tsr_thread_count(opts.threads);
    if ((st = open_spaces(p)) != TSR_OK) {
        tsr_plan_destroy(p);
        return st;
    }
    *plan_out = p;
    return TSR_OK;
}

void tsr_plan_destroy(tsr_plan *p)
{
    if (!p)
        return;
    while (p->specs) {
        spec *next = p->specs->next;
        spec_destroy(p, p->specs);
        p->specs = next;
    }
    for (int i = 0; i < p->n_spaces; i++)
        if (p->spaces[i].ctx)
            p->spaces[i].memory->context_destroy(p->spaces[i].ctx);
    free(p->uploads);
    tsr_graph_destroy(p->graph);
    free(p->shared);
    free(p->residency);
    free(p->input_layouts);
    free(p->keep_layouts);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

typedef enum { INPUT_RANK, INPUT_DIM, INPUT_NEGATIVE_DIM } input_mismatch;

/* The error for input v's shape; shapes are formatted here only, so a run
 * whose inputs are right formats nothing. */
static tsr_status input_shape_error(const tsr_value *v, const tsr_tensor *t, input_mismatch why,
                                    int dim)
{
    char want[256], got[256];
    tsr_shape_format(want, sizeof want, v->rank, v->dims);
    if (t->rank >= 0 && t->rank <= TSR_MAX_RANK)
        tsr_shape_format(got, sizeof got, t->rank, t->dims);
    else
        snprintf(got, sizeof got, "rank %d", t->rank);
    if (why == INPUT_NEGATIVE_DIM)
        return tsr_error(TSR_ERR_SHAPE, "input '%s': negative dimension in %s", v->name, got);
    if (why == INPUT_RANK)
        return tsr_error(TSR_ERR_SHAPE, "input '%s' must have shape %s, got %s", v->name, want,
                         got);
    return tsr_error(TSR_ERR_SHAPE, "input '%s' must have shape %s, got %s (dim %d)", v->name, want,
                     got, dim);
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
        if (t->dtype != v->dtype)
            return tsr_error(TSR_ERR_DTYPE, "input '%s' must be %s, got %s", v->name,
                             tsr_dtype_name(v->dtype), tsr_dtype_name(t->dtype));
        if (t->rank != v->rank)
            return input_shape_error(v, t, INPUT_RANK, -1);
        for (int d = 0; d < v->rank; d++) {
            if (t->dims[d] < 0)
                return input_shape_error(v, t, INPUT_NEGATIVE_DIM, d);
            if (tsr_dim_known(v->dims[d]) && v->dims[d] != t->dims[d])
                return input_shape_error(v, t, INPUT_DIM, d);
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

/* Whether s serves a run whose tensors live in `residency` (NULL: all
 * in host memory). */
static bool residency_matches(const tsr_plan *p, const spec *s, const uint8_t *residency)
{
    size_t n = (size_t)(p->graph->n_inputs + p->graph->n_outputs);
    if (!s->residency || !residency)
        return !s->residency && !residency;
    return memcmp(s->residency, residency, n) == 0;
}

static bool shape_known(const tsr_value *v) { return tsr_shape_numel(v->rank, v->dims) >= 0; }

/* Tensors of at most this many elements, integers or scalars, that a node
 * of unknown output shape reads become the tail's constants: shapes,
 * bounds, starts and repeats. */
#define SHAPE_CONSTANT_MAX 64

static bool shape_sized(const tsr_value *v)
{
    int64_t n = tsr_shape_numel(v->rank, v->dims);
    return n >= 0 && n <= SHAPE_CONSTANT_MAX &&
           (v->dtype == TSR_INT64 || v->dtype == TSR_INT32 || v->rank == 0);
}

/* The error for a graph none of whose unknown shapes a run can find. */
static tsr_status unplannable(const tsr_graph *g)
{
    for (int v = 0; v < g->n_values; v++) {
        const tsr_value *val = &g->values[v];
        if (shape_known(val))
            continue;
        char desc[320] = "an input";
        if (val->producer >= 0)
            tsr_node_describe(&g->nodes[val->producer], desc, sizeof desc);
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s: the shape of '%s' is not known at these input shapes, and no node "
                         "before it finds it at run time (an op that reports its output dims, or "
                         "a shape computed from the inputs)",
                         desc, val->name);
    }
    return tsr_error(TSR_ERR_INTERNAL, "unplannable: every shape is known");
}

static bool has_unknown_shapes(const tsr_graph *g)
{
    for (int v = 0; v < g->n_values; v++)
        if (!shape_known(&g->values[v]))
            return true;
    return false;
}

/* Which nodes of the prefix (plan_internal.h: spec_split) each node is, and
 * which values the tail reads as constants (shape[v]); false when no
 * tail would know more than its spec. */
static bool split_nodes(const tsr_graph *g, bool *tail_node, bool *avail, bool *shape)
{
    bool progress = false;
    for (int v = 0; v < g->n_values; v++) {
        const tsr_value *val = &g->values[v];
        avail[v] = (val->is_input || (val->data && val->producer < 0)) && shape_known(val);
    }
    for (int n = 0; n < g->n_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        bool inputs_known = true, outputs_known = true;
        for (int i = 0; i < node->n_inputs; i++)
            inputs_known = inputs_known && (node->inputs[i] < 0 || avail[node->inputs[i]]);
        for (int o = 0; o < node->n_outputs; o++)
            outputs_known = outputs_known && shape_known(&g->values[node->outputs[o]]);
        tail_node[n] = !inputs_known || (!outputs_known && !node->op->bound);
        if (!tail_node[n]) {
            progress = progress || !outputs_known;
            for (int o = 0; o < node->n_outputs; o++)
                avail[node->outputs[o]] = shape_known(&g->values[node->outputs[o]]);
            continue;
        }
        for (int i = 0; inputs_known && i < node->n_inputs; i++) {
            int v = node->inputs[i];
            if (v >= 0 && !g->values[v].data && shape_sized(&g->values[v])) {
                shape[v] = true;
                progress = true;
            }
        }
    }
    return progress;
}

/* Gives g (a prefix or a tail) the constants of full, shared. */
static tsr_status share_constants(const tsr_graph *full, tsr_graph *g)
{
    for (int v = 0; v < full->n_values; v++) {
        const tsr_value *val = &full->values[v];
        if (val->data && val->producer < 0 && !val->is_input)
            TSR_CHECK(tsr_graph_share_constant(g, val, true));
    }
    return TSR_OK;
}

/* Splits spec s, whose graph has values sized by the data, into its prefix
 * (s->graph from now on) and the description of its tails. */
static tsr_status split_spec(spec *s)
{
    tsr_graph *full = s->graph, *g = NULL;
    int nv = full->n_values;
    spec_split *sp = tsr_calloc(1, sizeof *sp);
    bool *avail = tsr_calloc((size_t)nv, sizeof *avail);
    bool *shape = tsr_calloc((size_t)nv, sizeof *shape);
    bool *frontier = tsr_calloc((size_t)nv, sizeof *frontier);
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!sp || !avail || !shape || !frontier)
        goto done;
    sp->full = full;
    s->split = sp;
    s->graph = NULL;
    if (!(sp->tail_node = tsr_calloc((size_t)full->n_nodes + 1, sizeof *sp->tail_node)) ||
        !(sp->output_of = tsr_calloc((size_t)full->n_outputs + 1, sizeof *sp->output_of)))
        goto done;
    if (!split_nodes(full, sp->tail_node, avail, shape)) {
        st = unplannable(full);
        goto done;
    }
    /* The frontier: what prefix nodes make for the tail or the caller, and
     * the inputs the tail takes as constants; avail[v] from now on: a tail
     * node reads v. */
    memset(avail, 0, (size_t)nv * sizeof *avail);
    for (int n = 0; n < full->n_nodes; n++) {
        const tsr_node *node = &full->nodes[n];
        for (int i = 0; sp->tail_node[n] && i < node->n_inputs; i++) {
            int v = node->inputs[i];
            if (v < 0)
                continue;
            int producer = full->values[v].producer;
            avail[v] = true;
            frontier[v] = frontier[v] || (producer >= 0 && !sp->tail_node[producer]) ||
                          (full->values[v].is_input && shape[v]);
        }
    }
    for (int o = 0; o < full->n_outputs; o++) {
        int producer = full->values[full->outputs[o]].producer;
        frontier[full->outputs[o]] |= producer >= 0 && !sp->tail_node[producer];
    }
    for (int v = 0; v < nv; v++)
        sp->n_frontier += frontier[v];
    int n_in = full->n_inputs + sp->n_frontier;
    if (!(sp->frontier_value = tsr_calloc((size_t)sp->n_frontier + 1, sizeof(int))) ||
        !(sp->as_constant = tsr_calloc((size_t)sp->n_frontier + 1, sizeof(bool))) ||
        !(sp->frontier = tsr_calloc((size_t)sp->n_frontier + 1, sizeof(tsr_tensor))) ||
        !(sp->tail_input = tsr_calloc((size_t)n_in + 1, sizeof(int))) ||
        !(sp->tail_const = tsr_calloc((size_t)sp->n_frontier + 1, sizeof(int))) ||
        !(sp->tail_output = tsr_calloc((size_t)full->n_outputs + 1, sizeof(int))))
        goto done;
    for (int v = 0, k = 0; v < nv; v++)
        if (frontier[v]) {
            sp->frontier_value[k] = v;
            sp->as_constant[k++] = shape[v];
        }
    for (int o = 0; o < full->n_outputs; o++) {
        sp->output_of[o] = -1;
        for (int k = 0; k < sp->n_frontier && sp->output_of[o] < 0; k++)
            if (sp->frontier_value[k] == full->outputs[o] && !full->values[full->outputs[o]].is_input)
                sp->output_of[o] = k;
        if (sp->output_of[o] < 0)
            sp->tail_output[sp->n_tail_outputs++] = o;
    }
    for (int i = 0; i < full->n_inputs; i++)
        if (!shape[full->inputs[i]])
            sp->tail_input[sp->n_tail_inputs++] = i;
    for (int k = 0; k < sp->n_frontier; k++) {
        if (sp->as_constant[k])
            sp->tail_const[sp->n_tail_consts++] = k;
        else if (avail[sp->frontier_value[k]])
            sp->tail_input[sp->n_tail_inputs++] = -1 - k;
    }
    /* The prefix graph: the spec's inputs, the prefix nodes, the frontier out. */
    if ((st = tsr_graph_create(&g)) != TSR_OK)
        goto done;
    g->default_opset = full->default_opset;
    g->fold_limit = full->fold_limit;
    for (int i = 0; i < full->n_inputs && st == TSR_OK; i++) {
        const tsr_value *v = &full->values[full->inputs[i]];
        st = tsr_graph_add_input(g, v->name, v->dtype, v->rank, v->dims, NULL);
    }
    if (st == TSR_OK)
        st = share_constants(full, g);
    for (int n = 0; n < full->n_nodes && st == TSR_OK; n++)
        if (!sp->tail_node[n])
            st = tsr_graph_replay_node(full, n, g);
    for (int k = 0; k < sp->n_frontier && st == TSR_OK; k++)
        st = tsr_graph_add_output(g, full->values[sp->frontier_value[k]].name);
    if (st != TSR_OK)
        goto done;
    tsr_graph_remove_dead(g);
    s->graph = g;
    g = NULL;
done:
    tsr_graph_destroy(g);
    free(avail);
    free(shape);
    free(frontier);
    if (!s->split) {
        free(sp);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    if (!s->graph) { /* spec_destroy frees the graph it finds there */
        s->graph = sp->full;
        sp->full = NULL;
    }
    return st;
}

/* The prefix's nodes that report their output dims get outputs as large
 * as they can write (op.h: bound). */
static tsr_status bound_outputs(tsr_graph *g)
{
    for (int n = 0; n < g->n_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        bool known = true;
        for (int o = 0; o < node->n_outputs; o++)
            known = known && shape_known(&g->values[node->outputs[o]]);
        if (!node->op->bound || known)
            continue;
        tsr_infer_ctx c = tsr_node_infer_ctx(g, node);
        tsr_status st = node->op->bound(&c);
        if (st != TSR_OK) {
            char desc[320];
            tsr_node_describe(node, desc, sizeof desc);
            tsr_error_prefix("%s: ", desc);
            return st;
        }
    }
    return TSR_OK;
}

/* The frontier's host buffers, and a check that each op reporting its
 * dims writes its frontier values there itself (run_step reads the dims
 * there; the others have a known shape: a NonZero of a constant too large
 * to fold). */
static tsr_status frontier_buffers(spec *s)
{
    spec_split *sp = s->split;
    const tsr_graph *g = s->graph;
    for (int k = 0; k < sp->n_frontier; k++) {
        sp->frontier[k] = tsr_value_tensor(&g->values[g->outputs[k]]);
        sp->frontier[k].data = tsr_aligned_alloc(tsr_tensor_bytes(&sp->frontier[k]) + 1);
        if (!sp->frontier[k].data)
            return TSR_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < s->n_steps; i++) {
        const plan_step *st = &s->steps[i];
        if (st->kind != STEP_KERNEL || !g->nodes[st->node].op->bound)
            continue;
        for (int o = 0; o < st->n_out; o++) {
            int k = 0, v = s->bufs[st->out_bufs[o]].value;
            while (k < sp->n_frontier && g->outputs[k] != v)
                k++;
            if (k < sp->n_frontier && s->bufs[st->out_bufs[o]].kind != BUF_OUTPUT &&
                !shape_known(&sp->full->values[sp->frontier_value[k]]))
                return tsr_error(TSR_ERR_UNSUPPORTED,
                                 "node '%s' (%s): its output's size is known only after it runs, "
                                 "so it must be computed on the host in the plain layout",
                                 g->nodes[st->node].name, g->nodes[st->node].op->name);
        }
    }
    return TSR_OK;
}

/* Whether s's steps run side by side, one thread each (dag.c), rather
 * than one after another on the whole team; decided on its graph before
 * it is scheduled, since every kernel is then prepared for one thread
 * (oneDNN's kernels split their work, and some synchronize, by the thread
 * count they were created for). Only host plans can, without a split (its
 * prefix reports dims); stacks are not formed (they run tiles on the
 * team). By default only where every node is small enough that one thread
 * does it well (outputs of at most INTER_OP_ELEMENTS elements, at most
 * INTER_OP_FLOPS operations) and the nodes can keep the team busy: their
 * total cost (outputs' elements, plus INTER_OP_NODE per node) is
 * INTER_OP_WIDTH times the longest chain's; and at most INTER_OP_NODES
 * nodes (the placement keeps n^2 bits of dependencies, dag.c). */
#define INTER_OP_NODES 8192
#define INTER_OP_ELEMENTS 4194304.0
#define INTER_OP_FLOPS 67108864.0
#define INTER_OP_NODE 1024.0
#define INTER_OP_WIDTH 1.5
static bool side_by_side(const tsr_plan *p, const spec *s)
{
    const tsr_graph *g = s->graph;
    if (p->threads < 2 || p->n_spaces > 1 || s->split || !g->n_nodes || p->options.inter_op == 0)
        return false;
    if (p->options.inter_op > 0)
        return true;
    if (g->n_nodes > INTER_OP_NODES)
        return false;
    /* end: per value, the longest chain of costs that computes it. */
    double *end = tsr_calloc((size_t)g->n_values + 1, sizeof *end);
    if (!end)
        return false;
    double total = 0, longest = 0;
    bool small = true;
    for (int n = 0; n < g->n_nodes && small; n++) {
        const tsr_node *node = &g->nodes[n];
        double elements = 0, start = 0;
        for (int o = 0; o < node->n_outputs; o++) {
            const tsr_value *v = &g->values[node->outputs[o]];
            elements += (double)tsr_shape_numel(v->rank, v->dims);
        }
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0 && end[node->inputs[i]] > start)
                start = end[node->inputs[i]];
        double cost = elements + INTER_OP_NODE;
        for (int o = 0; o < node->n_outputs; o++)
            end[node->outputs[o]] = start + cost;
        total += cost;
        longest = start + cost > longest ? start + cost : longest;
        small = elements <= INTER_OP_ELEMENTS && tsr_node_flops(g, node) <= INTER_OP_FLOPS;
    }
    free(end);
    return small && total >= INTER_OP_WIDTH * longest;
}

/* Plans s->graph (a graph at concrete input shapes), splitting it first
 * where the data decides shapes. */
static tsr_status spec_build(tsr_plan *p, spec *s)
{
    s->spaces = p->spaces;
    s->n_spaces = p->n_spaces;
    if (has_unknown_shapes(s->graph)) {
        TSR_CHECK(split_spec(s));
        if (p->options.verbose)
            fprintf(stderr,
                    "tessera: sizes known only at run time: the plan runs %d of %d nodes first, "
                    "then plans the rest at the sizes found (%d values, %d taken as constants)\n",
                    s->graph->n_nodes, s->split->full->n_nodes, s->split->n_frontier,
                    s->split->n_tail_consts);
    }
    if (s->split && s->residency)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "the data decides some of this graph's shapes, so its inputs and "
                         "outputs must be in host memory (tsr_tensor.memory NULL)");
    if (s->split && s->input_layouts)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "the data decides some of this graph's shapes, so its inputs must be "
                         "fed in the plain layout (tsr_plan_set_input_layouts)");
    if (s->split)
        s->keep_layouts = NULL;
    if (p->optimize)
        TSR_CHECK(tsr_passes_run(s->graph));
    if (s->split)
        TSR_CHECK(bound_outputs(s->graph));
    TSR_CHECK(tsr_graph_verify(s->graph));
    bool apart = side_by_side(p, s);
    TSR_CHECK(tsr_schedule(s, p->backends, apart ? 1 : p->threads, p->options.precision,
                           p->options.depth_first != 0 && !apart, p->options.autotune != 0,
                           p->optimize, p->options.verbose));
    TSR_CHECK(tsr_spec_nan_guard(s));
    if (s->split)
        TSR_CHECK(frontier_buffers(s));
    if (apart) {
        TSR_CHECK(tsr_dag_place(s));
        TSR_CHECK(tsr_dag_build(s, &s->dag));
        s->single = true;
    }
    for (int i = 0; i < s->n_spaces; i++)
        if (s->arena_bytes[i] &&
            !(s->arena[i] = s->spaces[i].memory->alloc(s->spaces[i].ctx, s->arena_bytes[i])))
            return TSR_ERR_OUT_OF_MEMORY;
    TSR_CHECK(acquire_uploads(p, s));
    s->bytes = spec_bytes(p, s);
    return TSR_OK;
}

static tsr_status spec_create(tsr_plan *p, int n_inputs, const tsr_tensor *inputs,
                              const uint8_t *residency, spec **out)
{
    tsr_status st;
    spec *s = tsr_calloc(1, sizeof *s);
    if (!s)
        return TSR_ERR_OUT_OF_MEMORY;
    s->n_inputs = n_inputs;
    s->ranks = tsr_calloc((size_t)n_inputs, sizeof *s->ranks);
    s->dims = tsr_calloc((size_t)n_inputs, sizeof *s->dims);
    size_t n_tensors = (size_t)(n_inputs + p->graph->n_outputs);
    if (residency && (s->residency = tsr_malloc(n_tensors + 1)))
        memcpy(s->residency, residency, n_tensors);
    if (!s->ranks || !s->dims || (residency && !s->residency)) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto fail;
    }
    for (int i = 0; i < n_inputs; i++) {
        s->ranks[i] = inputs[i].rank;
        memcpy(s->dims[i], inputs[i].dims, sizeof(int64_t) * (size_t)inputs[i].rank);
    }
    st = tsr_spec_input_layouts(p, s, n_inputs, inputs, residency);
    if (st != TSR_OK)
        goto fail;
    s->keep_layouts = p->keep_layouts;
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
    if (st == TSR_OK)
        st = spec_build(p, s);
    if (st != TSR_OK)
        goto fail;
    *out = s;
    return TSR_OK;
fail:
    spec_destroy(p, s);
    return st;
}

/* Tail input j of parent's split: an input of the parent's run or a
 * frontier value. */
static const tsr_tensor *tail_source(const spec *parent, const tsr_tensor *inputs, int j)
{
    const spec_split *sp = parent->split;
    int from = sp->tail_input[j];
    return from >= 0 ? &inputs[from] : &sp->frontier[-1 - from];
}

static bool tensors_equal(const tsr_tensor *a, const tsr_tensor *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank ||
        memcmp(a->dims, b->dims, sizeof(int64_t) * (size_t)a->rank) != 0)
        return false;
    size_t bytes = tsr_tensor_bytes(a);
    return !bytes || memcmp(a->data, b->data, bytes) == 0;
}

static bool tail_matches(const spec *t, const spec *parent, const tsr_tensor *inputs)
{
    if (t->parent != parent)
        return false;
    const spec_split *sp = parent->split;
    for (int j = 0; j < t->n_inputs; j++) {
        const tsr_tensor *x = tail_source(parent, inputs, j);
        if (t->ranks[j] != x->rank ||
            memcmp(t->dims[j], x->dims, sizeof(int64_t) * (size_t)x->rank) != 0)
            return false;
    }
    for (int c = 0; c < t->n_consts; c++)
        if (!tensors_equal(&t->consts[c], &sp->frontier[sp->tail_const[c]]))
            return false;
    return true;
}

/* The tail of parent for the dims (and shape constants) its prefix just
 * found. */
static tsr_status tail_create(tsr_plan *p, spec *parent, const tsr_tensor *inputs, spec **out)
{
    const spec_split *sp = parent->split;
    const tsr_graph *full = sp->full;
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    spec *s = tsr_calloc(1, sizeof *s);
    if (!s)
        return st;
    s->parent = parent;
    s->n_inputs = sp->n_tail_inputs;
    if (!(s->ranks = tsr_calloc((size_t)s->n_inputs + 1, sizeof *s->ranks)) ||
        !(s->dims = tsr_calloc((size_t)s->n_inputs + 1, sizeof *s->dims)) ||
        !(s->consts = tsr_calloc((size_t)sp->n_tail_consts + 1, sizeof *s->consts)) ||
        (st = tsr_graph_create(&s->graph)) != TSR_OK)
        goto fail;
    s->graph->default_opset = full->default_opset;
    s->graph->fold_limit = full->fold_limit;
    for (int j = 0; j < s->n_inputs && st == TSR_OK; j++) {
        const tsr_tensor *x = tail_source(parent, inputs, j);
        int from = sp->tail_input[j];
        int v = from >= 0 ? full->inputs[from] : sp->frontier_value[-1 - from];
        s->ranks[j] = x->rank;
        memcpy(s->dims[j], x->dims, sizeof(int64_t) * (size_t)x->rank);
        st = tsr_graph_add_input(s->graph, full->values[v].name, x->dtype, x->rank, x->dims, NULL);
    }
    if (st == TSR_OK)
        st = share_constants(full, s->graph);
    for (int c = 0; c < sp->n_tail_consts && st == TSR_OK; c++) {
        int k = sp->tail_const[c], idx;
        const tsr_tensor *f = &sp->frontier[k];
        size_t bytes = tsr_tensor_bytes(f);
        s->consts[c] = *f;
        if (!(s->consts[c].data = tsr_malloc(bytes + 1))) {
            st = TSR_ERR_OUT_OF_MEMORY;
            break;
        }
        s->n_consts++;
        memcpy(s->consts[c].data, f->data, bytes);
        st = tsr_graph_new_value(s->graph, full->values[sp->frontier_value[k]].name, &idx);
        if (st == TSR_OK)
            st = tsr_value_set_constant(&s->graph->values[idx], f);
    }
    for (int n = 0; n < full->n_nodes && st == TSR_OK; n++)
        if (sp->tail_node[n])
            st = tsr_graph_replay_node(full, n, s->graph);
    for (int o = 0; o < sp->n_tail_outputs && st == TSR_OK; o++)
        st = tsr_graph_add_output(s->graph, full->values[full->outputs[sp->tail_output[o]]].name);
    if (st != TSR_OK)
        goto fail;
    tsr_graph_remove_dead(s->graph);
    if ((st = spec_build(p, s)) != TSR_OK)
        goto fail;
    *out = s;
    return TSR_OK;
fail:
    spec_destroy(p, s);
    return st;
}

/* Whether s is the current specialization or a tail its last run used. */
static bool in_use(const tsr_plan *p, const spec *s)
{
    for (const spec *c = p->current; c; c = c->last_tail)
        if (c == s)
            return true;
    return false;
}

/* Takes s and its tails out of the cache and destroys them. */
static void uncache(tsr_plan *p, spec *s)
{
    for (spec *t = p->specs; t;) {
        if (t->parent == s) {
            uncache(p, t);
            t = p->specs;
        } else {
            t = t->next;
        }
    }
    for (spec **link = &p->specs; *link; link = &(*link)->next)
        if (*link == s) {
            *link = s->next;
            break;
        }
    if (s->parent && s->parent->last_tail == s)
        s->parent->last_tail = NULL;
    p->n_specs--;
    p->cached_bytes -= s->bytes;
    p->n_evictions++;
    spec_destroy(p, s);
}

/* Destroys least recently used specializations (a spec with its tails)
 * while the cache holds more than its limits allow; the current one and
 * the tails of its last run stay whatever their size (the caller may be
 * reading its output shapes, or the outputs they hold). */
static void evict(tsr_plan *p)
{
    while (p->n_specs > 1 && (p->n_specs > p->max_specs || p->cached_bytes > p->max_bytes)) {
        spec *victim = NULL;
        for (spec *s = p->specs; s; s = s->next)
            if (!in_use(p, s))
                victim = s;
        if (!victim)
            return;
        uncache(p, victim);
    }
}

/* Puts s at the head of the cache, counting it in if new. */
static void cache_front(tsr_plan *p, spec *s, bool is_new)
{
    for (spec **link = &p->specs; !is_new && *link; link = &(*link)->next)
        if (*link == s) {
            *link = s->next;
            break;
        }
    if (is_new) {
        p->n_specs++;
        p->cached_bytes += s->bytes;
        p->n_builds++;
    }
    s->next = p->specs;
    p->specs = s;
}

/* tsr_plan_reshape with the plan's lock held: the spec for these input
 * shapes and, where `exact`, for tensors where `residency` says (NULL:
 * all in host memory); otherwise any spec of these shapes will do, a new
 * one built for `residency`. */
static tsr_status reshape_locked(tsr_plan *p, int n_inputs, const tsr_tensor *inputs,
                                 const uint8_t *residency, bool exact)
{
    TSR_CHECK(check_inputs(p->graph, n_inputs, inputs));
    if (p->current && spec_matches(p->current, n_inputs, inputs) &&
        tsr_plan_layouts_match(p, p->current) &&
        (!exact || residency_matches(p, p->current, residency)))
        return TSR_OK;
    spec *s = p->specs;
    while (s && (s->parent || !spec_matches(s, n_inputs, inputs) || !tsr_plan_layouts_match(p, s) ||
                 (exact && !residency_matches(p, s, residency))))
        s = s->next;
    bool is_new = !s;
    if (is_new)
        TSR_CHECK(spec_create(p, n_inputs, inputs, residency, &s));
    cache_front(p, s, is_new);
    p->current = s;
    evict(p);
    return TSR_OK;
}

tsr_status tsr_plan_set_cache_limits(tsr_plan *p, int max_specs, size_t max_bytes)
{
    if (!p)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_set_cache_limits: plan is NULL");
    if (max_specs < 1)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_plan_set_cache_limits: max_specs must be at least 1, got %d",
                         max_specs);
    pthread_mutex_lock(&p->lock);
    p->max_specs = max_specs;
    p->max_bytes = max_bytes;
    evict(p);
    pthread_mutex_unlock(&p->lock);
    return TSR_OK;
}

tsr_status tsr_plan_reshape(tsr_plan *p, int n_inputs, const tsr_tensor *inputs)
{
    if (!p)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_reshape: plan is NULL");
    pthread_mutex_lock(&p->lock);
    bool device = false;
    tsr_status st = tsr_plan_residency(p, n_inputs, inputs, 0, NULL, &device);
    if (st == TSR_OK)
        st = reshape_locked(p, n_inputs, inputs, device ? p->residency : NULL, false);
    pthread_mutex_unlock(&p->lock);
    return st;
}

tsr_status tsr_plan_output_desc(const tsr_plan *p, int index, tsr_tensor *desc_out)
{
    if (!p || !desc_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_output_desc: NULL argument");
    if (!p->current)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "call tsr_plan_reshape before asking for outputs");
    const spec *s = p->current;
    const tsr_graph *g = s->split ? s->split->full : s->graph;
    if (index < 0 || index >= g->n_outputs)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "output index %d out of range (%d outputs)", index,
                         g->n_outputs);
    *desc_out = tsr_value_tensor(&g->values[g->outputs[index]]);
    desc_out->data = NULL;
    return TSR_OK;
}

void *tsr_spec_buffer(const spec *s, int buf, const tsr_tensor *inputs, tsr_tensor *outputs)
{
    const plan_buffer *b = &s->bufs[buf];
    switch (b->kind) {
    case BUF_CONST: return s->graph->values[b->value].data;
    case BUF_INPUT: return inputs[b->index].data;
    case BUF_OUTPUT: return outputs[b->index].data;
    case BUF_ARENA: /* NULL: every buffer of the space is empty */
        return s->arena[b->space] ? (char *)s->arena[b->space] + b->offset : NULL;
    case BUF_UPLOAD: return b->upload;
    case BUF_BAND: return NULL;
    }
    return NULL;
}

static tsr_tensor buffer_tensor(const spec *s, int buf, const tsr_tensor *inputs,
                                tsr_tensor *outputs)
{
    tsr_tensor t = tsr_value_tensor(&s->graph->values[s->bufs[buf].value]);
    t.data = tsr_spec_buffer(s, buf, inputs, outputs);
    return t;
}

/* Value v (its own shape) in buffer buf: an output that took over its
 * input's buffer (a Reshape) has a shape of its own. */
static tsr_tensor value_in_buffer(const spec *s, int v, int buf, const tsr_tensor *inputs,
                                  tsr_tensor *outputs)
{
    tsr_tensor t = tsr_value_tensor(&s->graph->values[v]);
    t.data = tsr_spec_buffer(s, buf, inputs, outputs);
    return t;
}

/* A value copied between spaces in the layout it has on both sides (the
 * schedule refuses transfers between two device spaces). */
static tsr_status run_transfer(const spec *s, const plan_step *st, const tsr_tensor *inputs,
                               tsr_tensor *outputs)
{
    const plan_buffer *from = &s->bufs[st->in_bufs[0]], *to = &s->bufs[st->out_bufs[0]];
    tsr_tensor t = tsr_value_tensor(&s->graph->values[to->value]);
    size_t bytes = tsr_layout_bytes(&t, (tsr_layout)to->layout);
    if (!bytes)
        return TSR_OK;
    void *src = tsr_spec_buffer(s, st->in_bufs[0], inputs, outputs);
    void *dst = tsr_spec_buffer(s, st->out_bufs[0], inputs, outputs);
    if (to->space == TSR_HOST_SPACE) {
        const plan_space *sp = &s->spaces[from->space];
        return sp->memory->copy_to_host(sp->ctx, dst, src, bytes);
    }
    const plan_space *sp = &s->spaces[to->space];
    return sp->memory->copy_from_host(sp->ctx, dst, src, bytes);
}

static tsr_status run_step(const spec *s, const plan_step *st, int threads,
                           const tsr_tensor *inputs, tsr_tensor *outputs)
{
    if (st->kind == STEP_STACK)
        return tsr_stack_run(s, st, inputs, outputs, threads);
    if (st->kind == STEP_COPY || st->kind == STEP_REORDER) {
        /* The destination holds the value converted; the source buffer may
         * have been taken over by it from a value of another shape (a
         * Reshape's input), so it is read with the converted value's shape. */
        tsr_tensor dst = buffer_tensor(s, st->out_bufs[0], inputs, outputs);
        tsr_tensor src = value_in_buffer(s, s->bufs[st->out_bufs[0]].value, st->in_bufs[0],
                                         inputs, outputs);
        if (st->kind == STEP_REORDER)
            return st->backend->reorder(&src, (tsr_layout)s->bufs[st->in_bufs[0]].layout, &dst,
                                        (tsr_layout)s->bufs[st->out_bufs[0]].layout, threads);
        const plan_space *sp = &s->spaces[s->bufs[st->in_bufs[0]].space];
        return sp->memory->copy(sp->ctx, dst.data, src.data,
                                tsr_layout_bytes(&src, (tsr_layout)s->bufs[st->in_bufs[0]].layout));
    }
    if (st->kind == STEP_TRANSFER)
        return run_transfer(s, st, inputs, outputs);
    if (st->in_place)
        return TSR_OK;
    const tsr_node *node = &s->graph->nodes[st->node];
    tsr_tensor ins[TSR_MAX_NODE_IO], outs[TSR_MAX_NODE_IO];
    tsr_kernel_ctx k = {.node = node, .n_inputs = node->n_inputs, .n_outputs = node->n_outputs,
                        .threads = threads,
                        .device = s->spaces[tsr_spec_space(s, st->backend)].ctx};
    for (int i = 0; i < node->n_inputs; i++) {
        if (st->in_bufs[i] < 0)
            continue;
        ins[i] = value_in_buffer(s, node->inputs[i], st->in_bufs[i], inputs, outputs);
        k.inputs[i] = &ins[i];
        k.input_layouts[i] = s->bufs[st->in_bufs[i]].layout;
    }
    /* A node whose outputs are all empty has nothing to compute, so no
     * kernel ever sees the NULL buffers that empty values get. */
    bool all_empty = node->n_outputs > 0 && !node->op->bound;
    for (int o = 0; o < node->n_outputs; o++) {
        outs[o] = value_in_buffer(s, node->outputs[o], st->out_bufs[o], inputs, outputs);
        k.outputs[o] = &outs[o];
        k.output_layouts[o] = s->bufs[st->out_bufs[o]].layout;
        all_empty = all_empty && tsr_tensor_numel(&outs[o]) == 0;
    }
    if (all_empty)
        return TSR_OK;
    tsr_status status = st->backend->run(st->state, &k);
    if (status != TSR_OK) {
        char desc[320];
        tsr_node_describe(node, desc, sizeof desc);
        tsr_error_prefix("%s: ", desc);
    }
    /* The dims it wrote, for the tail (frontier_buffers: in the frontier). */
    for (int o = 0; node->op->bound && s->split && o < node->n_outputs; o++) {
        const plan_buffer *b = &s->bufs[st->out_bufs[o]];
        if (b->kind == BUF_OUTPUT)
            memcpy(outputs[b->index].dims, outs[o].dims, sizeof outs[o].dims);
    }
    return status;
}

/* The space whose queue a step runs on: a transfer's device side. */
static int step_space(const spec *s, const plan_step *st)
{
    if (st->kind == STEP_TRANSFER) {
        int to = s->bufs[st->out_bufs[0]].space;
        return to != TSR_HOST_SPACE ? to : s->bufs[st->in_bufs[0]].space;
    }
    if (st->kind == STEP_COPY)
        return s->bufs[st->in_bufs[0]].space;
    if (st->kind == STEP_STACK) /* bands live in the host's per-thread scratch */
        return TSR_HOST_SPACE;
    return tsr_spec_space(s, st->backend);
}

/* The caller's output buffers against g's outputs. An output whose shape
 * only the run finds comes without data; inside a split run (held), one
 * of rank -1 without data asks the spec to hold it. */
static tsr_status check_outputs(const tsr_graph *g, int n_outputs, const tsr_tensor *outputs,
                                bool held)
{
    if (n_outputs != g->n_outputs || (n_outputs && !outputs))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "the model has %d outputs, %d buffers were given",
                         g->n_outputs, n_outputs);
    for (int o = 0; o < n_outputs; o++) {
        const tsr_value *v = &g->values[g->outputs[o]];
        tsr_tensor want = tsr_value_tensor(v);
        if (held && outputs[o].rank < 0 && !outputs[o].data)
            continue;
        if (tsr_tensor_numel(&want) < 0) {
            if (outputs[o].data)
                return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                 "output '%s': its shape is known only after the run, so the plan "
                                 "allocates it: pass data NULL and read its dims and data after "
                                 "tsr_plan_run",
                                 v->name);
            continue;
        }
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
    return TSR_OK;
}

/* Step i of a run, timed when profiling (to its end on the device too). */
typedef struct {
    tsr_plan *p;
    spec *s;
    int threads;
    const tsr_tensor *inputs;
    tsr_tensor *outputs;
} step_run;

static tsr_status run_one(void *arg, int i)
{
    const step_run *r = arg;
    plan_step *st = &r->s->steps[i];
    double start = r->p->profiling ? omp_get_wtime() : 0.0;
    TSR_CHECK(run_step(r->s, st, r->threads, r->inputs, r->outputs));
    if (r->p->profiling && r->s->n_spaces > 1) {
        const plan_space *sp = &r->s->spaces[step_space(r->s, st)];
        TSR_CHECK(sp->memory->synchronize(sp->ctx));
    }
    if (r->p->profiling)
        st->seconds += omp_get_wtime() - start;
    return TSR_OK;
}

/* Whether a caller's output shares memory with an input or another
 * output: the steps' dependencies (dag.c) know the caller's tensors by
 * index only, so such a run keeps the steps' order. */
static bool caller_overlap(const spec *s, const tsr_tensor *inputs, const tsr_tensor *outputs)
{
    const tsr_graph *g = s->graph;
    for (int o = 0; o < g->n_outputs; o++) {
        const char *a = outputs[o].data;
        size_t na = a ? tsr_tensor_bytes(&outputs[o]) : 0;
        for (int t = 0; na && t < g->n_inputs + g->n_outputs; t++) {
            const tsr_tensor *x = t < g->n_inputs ? &inputs[t] : &outputs[t - g->n_inputs];
            const char *b = x->data;
            size_t nb = b && x != &outputs[o] ? tsr_tensor_bytes(x) : 0;
            if (nb && a < b + nb && b < a + na)
                return true;
        }
    }
    return false;
}

static tsr_status run_steps(tsr_plan *p, spec *s, const tsr_tensor *inputs, tsr_tensor *outputs)
{
    /* Each step forks and joins its own team rather than the plan running
     * in one parallel region: most regions of a CNN's run are oneDNN's own
     * (about 32 of squeezenet1_1's 44), and oneDNN called inside a region
     * runs on the calling thread alone. A fork and join costs about 1 us
     * on a warm team; small kernels skip it (tsr_cpu_threads_for). A spec
     * of small steps (side_by_side) runs them side by side
     * instead, one thread each. */
    bool dag = s->dag && !caller_overlap(s, inputs, outputs);
    step_run r = {.p = p, .s = s, .threads = s->single ? 1 : p->threads, .inputs = inputs,
                  .outputs = outputs};
    if (dag) {
        TSR_CHECK(tsr_dag_run(s->dag, p->threads, run_one, &r));
    } else {
        for (int i = 0; i < s->n_steps; i++)
            TSR_CHECK(run_one(&r, i));
    }
    /* The outputs are the caller's once every space has finished. */
    for (int i = 1; i < s->n_spaces; i++)
        TSR_CHECK(s->spaces[i].memory->synchronize(s->spaces[i].ctx));
    if (p->profiling)
        s->profiled_runs++;
    return TSR_OK;
}

/* Gives the outputs of s asked for with rank -1 buffers s holds. */
static tsr_status hold_outputs(tsr_plan *p, spec *s, tsr_tensor *outputs)
{
    const tsr_graph *g = s->graph;
    for (int o = 0; o < g->n_outputs; o++) {
        if (outputs[o].rank >= 0 || outputs[o].data)
            continue;
        if (!s->owned_outputs && !(s->owned_outputs = tsr_calloc((size_t)g->n_outputs,
                                                                 sizeof *s->owned_outputs)))
            return TSR_ERR_OUT_OF_MEMORY;
        tsr_tensor t = tsr_value_tensor(&g->values[g->outputs[o]]);
        size_t bytes = tsr_tensor_bytes(&t);
        if (!s->owned_outputs[o]) {
            if (!(s->owned_outputs[o] = tsr_aligned_alloc(bytes + 1)))
                return TSR_ERR_OUT_OF_MEMORY;
            s->bytes += bytes;
            p->cached_bytes += bytes;
        }
        t.data = s->owned_outputs[o];
        outputs[o] = t;
    }
    return TSR_OK;
}

/* Runs spec s; a split one runs its prefix, then the tail for the dims it
 * found (built now if new). */
static tsr_status run_spec(tsr_plan *p, spec *s, const tsr_tensor *inputs, tsr_tensor *outputs)
{
    if (!s->split) {
        if (s->parent)
            TSR_CHECK(check_outputs(s->graph, s->graph->n_outputs, outputs, true));
        TSR_CHECK(hold_outputs(p, s, outputs));
        return run_steps(p, s, inputs, outputs);
    }
    spec_split *sp = s->split;
    const tsr_graph *full = sp->full;
    for (int k = 0; k < sp->n_frontier; k++) {
        const tsr_value *v = &s->graph->values[s->graph->outputs[k]];
        memcpy(sp->frontier[k].dims, v->dims, sizeof v->dims);
    }
    TSR_CHECK(run_steps(p, s, inputs, sp->frontier));
    for (int o = 0; o < full->n_outputs; o++) {
        int k = sp->output_of[o];
        if (k < 0)
            continue;
        size_t bytes = tsr_tensor_bytes(&sp->frontier[k]);
        if (outputs[o].rank < 0 && !outputs[o].data)
            outputs[o] = sp->frontier[k];
        else if (bytes)
            memcpy(outputs[o].data, sp->frontier[k].data, bytes);
    }
    if (!sp->n_tail_outputs)
        return TSR_OK;
    spec *t = p->specs;
    while (t && !tail_matches(t, s, inputs))
        t = t->next;
    bool is_new = !t;
    if (is_new)
        TSR_CHECK(tail_create(p, s, inputs, &t));
    cache_front(p, t, is_new);
    s->last_tail = t;
    tsr_tensor *tail_in = tsr_calloc((size_t)sp->n_tail_inputs + 1, sizeof *tail_in);
    tsr_tensor *tail_out = tsr_calloc((size_t)sp->n_tail_outputs + 1, sizeof *tail_out);
    tsr_status st = tail_in && tail_out ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    for (int j = 0; j < sp->n_tail_inputs && st == TSR_OK; j++)
        tail_in[j] = *tail_source(s, inputs, j);
    for (int o = 0; o < sp->n_tail_outputs && st == TSR_OK; o++)
        tail_out[o] = outputs[sp->tail_output[o]];
    if (st == TSR_OK)
        st = run_spec(p, t, tail_in, tail_out);
    for (int o = 0; o < sp->n_tail_outputs && st == TSR_OK; o++)
        outputs[sp->tail_output[o]] = tail_out[o];
    free(tail_in);
    free(tail_out);
    return st;
}

/* tsr_plan_run with the plan's lock held. */
static tsr_status run_locked(tsr_plan *p, int n_inputs, const tsr_tensor *inputs, int n_outputs,
                             tsr_tensor *outputs)
{
    bool device = false;
    TSR_CHECK(tsr_plan_residency(p, n_inputs, inputs, n_outputs, outputs, &device));
    TSR_CHECK(reshape_locked(p, n_inputs, inputs, device ? p->residency : NULL, true));
    spec *s = p->current;
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i].data && tsr_tensor_numel(&inputs[i]) > 0)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "input %d has no data", i);
    const tsr_graph *g = s->split ? s->split->full : s->graph;
    TSR_CHECK(check_outputs(g, n_outputs, outputs, false));
    TSR_CHECK(tsr_spec_check_nan_inputs(s, inputs, p->threads));
    /* Libraries that size their own thread teams (oneDNN) follow this.
     * It sets the calling thread's OpenMP thread count only (an ICV of
     * its own), so plans on other threads keep theirs. */
    omp_set_num_threads(p->threads);
    if (!s->split)
        return run_steps(p, s, inputs, outputs);
    /* Outputs sized by the data: rank -1 asks the spec computing them to
     * hold them (run_spec), and the caller gets their dims and data. */
    tsr_tensor *outs = tsr_malloc((size_t)n_outputs * sizeof *outs + 1);
    if (!outs)
        return TSR_ERR_OUT_OF_MEMORY;
    memcpy(outs, outputs, (size_t)n_outputs * sizeof *outs);
    for (int o = 0; o < n_outputs; o++) {
        tsr_tensor want = tsr_value_tensor(&g->values[g->outputs[o]]);
        if (tsr_tensor_numel(&want) < 0)
            outs[o] = (tsr_tensor){.dtype = want.dtype, .rank = -1};
    }
    tsr_status st = run_spec(p, s, inputs, outs);
    if (st == TSR_OK)
        memcpy(outputs, outs, (size_t)n_outputs * sizeof *outs);
    free(outs);
    evict(p);
    return st;
}

tsr_status tsr_plan_run(tsr_plan *p, int n_inputs, const tsr_tensor *inputs, int n_outputs,
                        tsr_tensor *outputs)
{
    if (!p)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_plan_run: plan is NULL");
    pthread_mutex_lock(&p->lock);
    tsr_status st = run_locked(p, n_inputs, inputs, n_outputs, outputs);
    pthread_mutex_unlock(&p->lock);
    return st;
}

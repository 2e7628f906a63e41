/* From a specialized graph to steps over buffers: each node gets the first
 * backend of the device that supports it, each input arrives in that
 * backend's memory space and in the layout it wants (transfers and
 * reorders are inserted and shared between readers; constants are
 * uploaded once instead), graph outputs land in the caller's buffers
 * (plain, or in their producer's layout where the plan keeps it), and
 * arena buffers are placed by liveness, one arena per space. */
#include "runtime/plan_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    spec *s;
    const tsr_backend *const *backends;
    /* Per memory space, the device's backend there that converts layouts. */
    const tsr_backend *reorderer[TSR_MAX_SPACES];
    int *copies;                  /* [value][space][layout] -> buffer, -1 none */
    int *last_reader;             /* [value] -> last node reading it */
    tsr_precision precision;
    bool autotune;
    bool verbose;
} scheduler;

static size_t align_up(size_t n) { return (n + TSR_ALIGNMENT - 1) / TSR_ALIGNMENT * TSR_ALIGNMENT; }

/* The buffers holding value v in `space`, one per layout (-1: none). */
static int *copies_of(const scheduler *sc, int v, int space)
{
    return &sc->copies[(v * sc->s->n_spaces + space) * TSR_N_LAYOUTS];
}

static tsr_status new_buffer(scheduler *sc, buf_kind kind, int index, int value, tsr_layout layout,
                             int space, int *buf_out)
{
    spec *s = sc->s;
    TSR_CHECK(tsr_grow((void **)&s->bufs, &s->cap_bufs, s->n_bufs + 1, sizeof *s->bufs));
    tsr_tensor t = tsr_value_tensor(&s->graph->values[value]);
    size_t bytes = tsr_layout_bytes(&t, layout);
    if (bytes > (size_t)TSR_MAX_TENSOR_BYTES)
        return tsr_error(TSR_ERR_SHAPE, "'%s' would take more than 2^62 bytes in layout %s",
                         s->graph->values[value].name, tsr_layout_name(layout));
    s->bufs[s->n_bufs] = (plan_buffer){.kind = kind, .index = index, .value = value,
                                       .layout = (uint8_t)layout,
                                       .space = (uint8_t)space,
                                       .bytes = align_up(bytes),
                                       .first = -1, .last = -1};
    *buf_out = s->n_bufs++;
    return TSR_OK;
}

static tsr_status new_step(scheduler *sc, step_kind kind, int node, const tsr_backend *backend,
                           int n_in, int n_out, plan_step **step_out)
{
    spec *s = sc->s;
    TSR_CHECK(tsr_grow((void **)&s->steps, &s->cap_steps, s->n_steps + 1, sizeof *s->steps));
    plan_step *st = &s->steps[s->n_steps];
    memset(st, 0, sizeof *st);
    st->in_bufs = tsr_calloc((size_t)n_in + 1, sizeof(int));
    st->out_bufs = tsr_calloc((size_t)n_out + 1, sizeof(int));
    if (!st->in_bufs || !st->out_bufs) {
        free(st->in_bufs);
        free(st->out_bufs);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    st->kind = kind;
    st->node = node;
    st->backend = backend;
    st->n_in = n_in;
    st->n_out = n_out;
    s->n_steps++;
    *step_out = st;
    return TSR_OK;
}

static tsr_status buffer_in_layout(scheduler *sc, int v, int space, tsr_layout layout,
                                   int *buf_out);

/* Transfers go between the host and one device. */
static tsr_status check_crossing(const scheduler *sc, int v, int from, int to)
{
    const spec *s = sc->s;
    if (from == TSR_HOST_SPACE || to == TSR_HOST_SPACE)
        return TSR_OK;
    return tsr_error(TSR_ERR_UNSUPPORTED,
                     "'%s' would move from device memory '%s' to '%s': transfers go between "
                     "the host and one device",
                     s->graph->values[v].name, s->spaces[from].memory->name,
                     s->spaces[to].memory->name);
}

/* A copy of value v in `space`, which holds none yet, in `layout` where
 * another space has it so: a host constant is uploaded once (no step),
 * anything else transferred by a step. */
static tsr_status transfer_in(scheduler *sc, int v, int space, tsr_layout layout, int *buf_out)
{
    spec *s = sc->s;
    int src = -1;
    for (int pass = 0; pass < 2 && src < 0; pass++)
        for (int sp = 0; sp < s->n_spaces && src < 0; sp++)
            for (int l = 0; l < TSR_N_LAYOUTS && src < 0 && sp != space; l++)
                if (pass == 1 || l == (int)layout)
                    src = copies_of(sc, v, sp)[l];
    if (src < 0)
        return tsr_error(TSR_ERR_INTERNAL, "value '%s' has no buffer", s->graph->values[v].name);
    int from = s->bufs[src].space;
    tsr_layout held = (tsr_layout)s->bufs[src].layout;
    TSR_CHECK(check_crossing(sc, v, from, space));
    /* A layout the target space cannot convert (a host with only ref) is
     * converted before it leaves. */
    if (held != layout && !sc->reorderer[space] && sc->reorderer[from]) {
        TSR_CHECK(buffer_in_layout(sc, v, from, layout, &src));
        held = layout;
    }
    int dst;
    bool upload = s->bufs[src].kind == BUF_CONST;
    TSR_CHECK(new_buffer(sc, upload ? BUF_UPLOAD : BUF_ARENA, -1, v, held, space, &dst));
    if (!upload) {
        plan_step *st;
        TSR_CHECK(new_step(sc, STEP_TRANSFER, -1, NULL, 1, 1, &st));
        st->in_bufs[0] = src;
        st->out_bufs[0] = dst;
    }
    copies_of(sc, v, space)[held] = dst;
    if (sc->verbose)
        fprintf(stderr, "tessera:   %s '%s' %s -> %s\n", upload ? "upload" : "transfer",
                s->graph->values[v].name, s->spaces[from].memory->name,
                s->spaces[space].memory->name);
    *buf_out = dst;
    return TSR_OK;
}

/* The buffer holding value v in `space` and `layout`, transferring it
 * from another space and reordering a copy in another layout as needed. */
static tsr_status buffer_in_layout(scheduler *sc, int v, int space, tsr_layout layout,
                                   int *buf_out)
{
    int *row = copies_of(sc, v, space);
    if (row[layout] >= 0) {
        *buf_out = row[layout];
        return TSR_OK;
    }
    int src = -1;
    for (int l = 0; l < TSR_N_LAYOUTS && src < 0; l++)
        src = row[l];
    if (src < 0) {
        TSR_CHECK(transfer_in(sc, v, space, layout, &src));
        if (sc->s->bufs[src].layout == layout) {
            *buf_out = src;
            return TSR_OK;
        }
    }
    const tsr_backend *reorderer = sc->reorderer[space];
    if (!reorderer)
        return tsr_error(TSR_ERR_INTERNAL, "no backend of this device converts layouts in %s memory",
                         sc->s->spaces[space].memory->name);
    int dst;
    TSR_CHECK(new_buffer(sc, BUF_ARENA, -1, v, layout, space, &dst));
    plan_step *st;
    TSR_CHECK(new_step(sc, STEP_REORDER, -1, reorderer, 1, 1, &st));
    st->in_bufs[0] = src;
    st->out_bufs[0] = dst;
    row[layout] = dst;
    if (sc->verbose)
        fprintf(stderr, "tessera:   reorder '%s' %s -> %s\n", sc->s->graph->values[v].name,
                tsr_layout_name(sc->s->bufs[src].layout), tsr_layout_name(layout));
    *buf_out = dst;
    return TSR_OK;
}

/* Whether node n may write its output into buf, which holds value v: n
 * must be v's last reader and the buffer a piece of the arena in the
 * output's layout that is not a graph output. */
static bool takes_over(const scheduler *sc, int n, int v, int buf, uint8_t layout)
{
    const spec *s = sc->s;
    if (v < 0 || buf < 0 || sc->last_reader[v] != n)
        return false;
    const plan_buffer *pb = &s->bufs[buf];
    if (pb->kind != BUF_ARENA || pb->layout != layout)
        return false;
    for (int o = 0; o < s->graph->n_outputs; o++)
        if (s->graph->outputs[o] == v)
            return false;
    int reads = 0;
    const tsr_node *node = &s->graph->nodes[n];
    for (int i = 0; i < node->n_inputs; i++)
        reads += node->inputs[i] == v;
    return reads == 1;
}

static const tsr_backend *choose_backend(scheduler *sc, const tsr_node *node, const char *desc)
{
    for (const tsr_backend *const *b = sc->backends; *b; b++) {
        char why[256] = "";
        if ((*b)->supports(sc->s->graph, node, why, sizeof why))
            return *b;
        if (sc->verbose)
            fprintf(stderr, "tessera: %s: %s refused: %s\n", desc, (*b)->name, why);
    }
    return NULL;
}

tsr_infer_ctx tsr_node_infer_ctx(const tsr_graph *g, const tsr_node *node)
{
    tsr_infer_ctx c = {.graph = g, .node = node, .n_inputs = node->n_inputs,
                       .n_outputs = node->n_outputs};
    for (int i = 0; i < node->n_inputs; i++)
        c.inputs[i] = node->inputs[i] >= 0 ? &g->values[node->inputs[i]] : NULL;
    for (int o = 0; o < node->n_outputs; o++)
        c.outputs[o] = &g->values[node->outputs[o]];
    return c;
}

double tsr_node_flops(const tsr_graph *g, const tsr_node *node)
{
    if (!node->op->flops)
        return 0.0;
    tsr_infer_ctx c = tsr_node_infer_ctx(g, node);
    return node->op->flops(&c);
}

/* Whether graph output o may leave in its producer's layout. */
static bool keeps_layout(const spec *s, int o)
{
    return s->keep_layouts && s->keep_layouts[o] && tsr_spec_output_space(s, o) == TSR_HOST_SPACE;
}

static tsr_status schedule_node(scheduler *sc, int n, int threads)
{
    spec *s = sc->s;
    const tsr_graph *g = s->graph;
    const tsr_node *node = &g->nodes[n];
    char desc[320];
    tsr_node_describe(node, desc, sizeof desc);
    const tsr_backend *b = choose_backend(sc, node, desc);
    if (!b)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s: no backend of this device runs it", desc);
    int space = tsr_spec_space(s, b);

    /* The layout each input has in the backend's space, else anywhere. */
    uint8_t available[TSR_MAX_NODE_IO] = {0}, wanted[TSR_MAX_NODE_IO] = {0},
            produced[TSR_MAX_NODE_IO] = {0};
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        bool found = false;
        for (int k = 0; v >= 0 && k <= s->n_spaces && !found; k++) {
            const int *row = copies_of(sc, v, k == 0 ? space : k - 1);
            for (int l = 0; l < TSR_N_LAYOUTS && !found; l++)
                if (row[l] >= 0) {
                    available[i] = (uint8_t)l;
                    found = true;
                }
        }
    }
    if (b->layouts)
        b->layouts(g, node, available, wanted, produced);

    int ins[TSR_MAX_NODE_IO];
    for (int i = 0; i < node->n_inputs; i++) {
        ins[i] = -1;
        if (node->inputs[i] >= 0)
            TSR_CHECK(
                buffer_in_layout(sc, node->inputs[i], space, (tsr_layout)wanted[i], &ins[i]));
    }
    plan_step *st;
    TSR_CHECK(new_step(sc, STEP_KERNEL, n, b, node->n_inputs, node->n_outputs, &st));
    memcpy(st->in_bufs, ins, sizeof(int) * (size_t)node->n_inputs);
    for (int o = 0; o < node->n_outputs; o++) {
        int v = node->outputs[o];
        int graph_out = -1;
        for (int k = 0; k < g->n_outputs && graph_out < 0; k++)
            if (g->outputs[k] == v)
                graph_out = k;
        int buf;
        int k = o == 0 && b->inplace_input ? b->inplace_input(g, node) : -1;
        if (k >= 0 && k < node->n_inputs && takes_over(sc, n, node->inputs[k], ins[k], produced[0]) &&
            graph_out < 0) {
            buf = ins[k];
            if (sc->verbose)
                fprintf(stderr, "tessera:   '%s' takes over the buffer of '%s'\n",
                        g->values[v].name, g->values[node->inputs[k]].name);
        } else if (graph_out >= 0 &&
                   (produced[o] == TSR_LAYOUT_PLAIN || keeps_layout(s, graph_out)) &&
                   space == tsr_spec_output_space(s, graph_out))
            TSR_CHECK(new_buffer(sc, BUF_OUTPUT, graph_out, v, (tsr_layout)produced[o], space,
                                 &buf));
        else
            TSR_CHECK(new_buffer(sc, BUF_ARENA, -1, v, (tsr_layout)produced[o], space, &buf));
        s->steps[s->n_steps - 1].out_bufs[o] = buf;
        copies_of(sc, v, space)[produced[o]] = buf;
    }
    st = &s->steps[s->n_steps - 1];
    if (b->prepare) {
        uint8_t in_l[TSR_MAX_NODE_IO] = {0}, out_l[TSR_MAX_NODE_IO] = {0};
        for (int i = 0; i < node->n_inputs; i++)
            in_l[i] = ins[i] >= 0 ? s->bufs[ins[i]].layout : 0;
        for (int o = 0; o < node->n_outputs; o++)
            out_l[o] = s->bufs[st->out_bufs[o]].layout;
        tsr_prepare_ctx pc = {.graph = g, .node = node, .input_layouts = in_l,
                              .output_layouts = out_l, .threads = threads,
                              .device = s->spaces[space].ctx,
                              .precision = sc->precision, .autotune = sc->autotune,
                              .verbose = sc->verbose};
        tsr_status status = b->prepare(&pc, &st->state);
        if (status != TSR_OK) {
            tsr_error_prefix("%s: ", desc);
            return status;
        }
    }
    if (sc->verbose) {
        fprintf(stderr, "tessera: %s -> %s", desc, b->name);
        const char *kernel = b->kernel_name && st->state ? b->kernel_name(st->state) : NULL;
        if (kernel && *kernel)
            fprintf(stderr, " (%s)", kernel);
        for (int o = 0; o < node->n_outputs; o++)
            if (produced[o])
                fprintf(stderr, " [%s]", tsr_layout_name((tsr_layout)produced[o]));
        fputc('\n', stderr);
    }
    s->flops += tsr_node_flops(g, node);
    return TSR_OK;
}

int tsr_spec_output_space(const spec *s, int o)
{
    return s->residency ? s->residency[s->n_inputs + o] : TSR_HOST_SPACE;
}

/* Graph outputs no kernel wrote into the caller's buffer: constants,
 * inputs, values listed twice, held in another layout or in another
 * memory space only. */
static tsr_status finish_outputs(scheduler *sc)
{
    spec *s = sc->s;
    const tsr_graph *g = s->graph;
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o], space = tsr_spec_output_space(s, o);
        const int *row = copies_of(sc, v, space);
        bool written = false;
        for (int b = 0; b < s->n_bufs && !written; b++)
            written = s->bufs[b].kind == BUF_OUTPUT && s->bufs[b].index == o;
        if (written)
            continue;
        int dst;
        plan_step *st;
        int blocked = row[1] >= 0 ? row[1] : row[2];
        if (blocked >= 0 && keeps_layout(s, o)) {
            TSR_CHECK(new_buffer(sc, BUF_OUTPUT, o, v, (tsr_layout)s->bufs[blocked].layout, space,
                                 &dst));
            TSR_CHECK(new_step(sc, STEP_COPY, -1, NULL, 1, 1, &st));
            st->in_bufs[0] = blocked;
            st->out_bufs[0] = dst;
            continue;
        }
        TSR_CHECK(new_buffer(sc, BUF_OUTPUT, o, v, TSR_LAYOUT_PLAIN, space, &dst));
        if (row[TSR_LAYOUT_PLAIN] >= 0) {
            TSR_CHECK(new_step(sc, STEP_COPY, -1, NULL, 1, 1, &st));
            st->in_bufs[0] = row[TSR_LAYOUT_PLAIN];
        } else if (blocked >= 0 && sc->reorderer[space]) {
            TSR_CHECK(new_step(sc, STEP_REORDER, -1, sc->reorderer[space], 1, 1, &st));
            st->in_bufs[0] = blocked;
        } else {
            int from = 0;
            while (from < s->n_spaces &&
                   (from == space || (copies_of(sc, v, from)[TSR_LAYOUT_PLAIN] < 0 &&
                                      copies_of(sc, v, from)[1] < 0 && copies_of(sc, v, from)[2] < 0)))
                from++;
            if (from == s->n_spaces)
                return tsr_error(TSR_ERR_INTERNAL, "output '%s' has no buffer", g->values[v].name);
            TSR_CHECK(check_crossing(sc, v, from, space));
            int src;
            TSR_CHECK(buffer_in_layout(sc, v, from, TSR_LAYOUT_PLAIN, &src));
            TSR_CHECK(new_step(sc, STEP_TRANSFER, -1, NULL, 1, 1, &st));
            st->in_bufs[0] = src;
            if (sc->verbose)
                fprintf(stderr, "tessera:   transfer '%s' %s -> %s (output %d)\n",
                        g->values[v].name, s->spaces[from].memory->name,
                        s->spaces[space].memory->name, o);
        }
        st->out_bufs[0] = dst;
    }
    return TSR_OK;
}

/* s->output_layouts from the output buffers. */
static tsr_status note_output_layouts(spec *s)
{
    if (!(s->output_layouts = tsr_calloc((size_t)s->graph->n_outputs + 1, 1)))
        return TSR_ERR_OUT_OF_MEMORY;
    for (int b = 0; b < s->n_bufs; b++)
        if (s->bufs[b].kind == BUF_OUTPUT)
            s->output_layouts[s->bufs[b].index] = s->bufs[b].layout;
    return TSR_OK;
}

typedef struct {
    int buf;
    size_t bytes;
    int first;
} placement;

static int by_size_desc(const void *a, const void *b)
{
    const placement *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes < y->bytes ? 1 : -1;
    return x->first - y->first;
}

static bool lifetimes_overlap(const spec *s, int a, int b, void *arg)
{
    (void)arg;
    return s->bufs[a].first <= s->bufs[b].last && s->bufs[b].first <= s->bufs[a].last;
}

/* Greedy placement in each space's arena, largest first, at the lowest
 * offset that overlaps no placed buffer it conflicts with. */
static tsr_status place_arena(spec *s, int space, tsr_buffers_conflict conflict, void *arg)
{
    placement *order = tsr_calloc((size_t)s->n_bufs + 1, sizeof *order);
    bool *clash = tsr_calloc((size_t)s->n_bufs + 1, sizeof *clash);
    if (!order || !clash) {
        free(order);
        free(clash);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    int n = 0;
    for (int b = 0; b < s->n_bufs; b++)
        if (s->bufs[b].kind == BUF_ARENA && s->bufs[b].space == space && !s->bufs[b].slice)
            order[n++] = (placement){b, s->bufs[b].bytes, s->bufs[b].first};
    qsort(order, (size_t)n, sizeof *order, by_size_desc);
    size_t total = 0;
    for (int a = 0; a < n; a++) {
        plan_buffer *pa = &s->bufs[order[a].buf];
        for (int b = 0; b < a; b++)
            clash[b] = conflict(s, order[a].buf, order[b].buf, arg);
        size_t offset = 0;
        bool moved = true;
        while (moved) {
            moved = false;
            for (int b = 0; b < a; b++) {
                const plan_buffer *pb = &s->bufs[order[b].buf];
                bool space_overlap = offset < pb->offset + pb->bytes && pb->offset < offset + pa->bytes;
                if (clash[b] && space_overlap) {
                    offset = pb->offset + pb->bytes;
                    moved = true;
                }
            }
        }
        if (offset + pa->bytes > (size_t)TSR_MAX_TENSOR_BYTES) {
            free(order);
            free(clash);
            return tsr_error(TSR_ERR_SHAPE,
                             "the intermediates live at once take more than 2^62 bytes");
        }
        pa->offset = offset;
        if (offset + pa->bytes > total)
            total = offset + pa->bytes;
    }
    free(order);
    free(clash);
    s->arena_bytes[space] = total;
    return TSR_OK;
}

tsr_status tsr_place_arenas(spec *s, tsr_buffers_conflict conflict, void *arg)
{
    for (int step = 0; step < s->n_steps; step++) {
        const plan_step *st = &s->steps[step];
        for (int o = 0; o < st->n_out; o++)
            if (s->bufs[st->out_bufs[o]].first < 0)
                s->bufs[st->out_bufs[o]].first = s->bufs[st->out_bufs[o]].last = step;
        for (int i = 0; i < st->n_in; i++)
            if (st->in_bufs[i] >= 0)
                s->bufs[st->in_bufs[i]].last = step;
    }
    /* A slice is live while its parent is, which holds it. */
    for (int b = 0; b < s->n_bufs; b++) {
        plan_buffer *child = &s->bufs[b], *parent = child->slice ? &s->bufs[child->parent] : NULL;
        if (parent && child->first >= 0) {
            if (parent->first < 0 || child->first < parent->first)
                parent->first = child->first;
            if (child->last > parent->last)
                parent->last = child->last;
        }
    }
    for (int space = 0; space < s->n_spaces; space++)
        TSR_CHECK(place_arena(s, space, conflict ? conflict : lifetimes_overlap, arg));
    for (int b = 0; b < s->n_bufs; b++)
        if (s->bufs[b].slice)
            s->bufs[b].offset = s->bufs[s->bufs[b].parent].offset + s->bufs[b].slice_offset;
    return TSR_OK;
}

static bool step_writes(const plan_step *st, int buf)
{
    for (int o = 0; o < st->n_out; o++)
        if (st->out_bufs[o] == buf)
            return true;
    return false;
}

static bool is_parent(const spec *s, int buf)
{
    for (int b = 0; b < s->n_bufs; b++)
        if (s->bufs[b].slice && s->bufs[b].parent == buf)
            return true;
    return false;
}

/* The byte offset of each input of the Concat at step c in its output
 * buffer, when each is one contiguous, aligned range of it: nothing but a
 * batch of 1 before the axis, whole channel blocks in a blocked layout. */
static bool concat_slices(const spec *s, const plan_step *st, size_t *offsets)
{
    const tsr_graph *g = s->graph;
    const tsr_node *node = &g->nodes[st->node];
    const plan_buffer *out = &s->bufs[st->out_bufs[0]];
    const tsr_value *y = &g->values[node->outputs[0]];
    int axis;
    if (!tsr_axis_normalize(tsr_attr_int(node, "axis"), y->rank, &axis))
        return false;
    int block = tsr_layout_block((tsr_layout)out->layout);
    if (block > 1 && (y->rank != 4 || axis != 1))
        return false;
    int64_t inner = 1;
    for (int d = 0; d < y->rank; d++) {
        if (y->dims[d] < 0 || (d < axis && y->dims[d] != 1))
            return false;
        if (d > axis)
            inner *= y->dims[d];
    }
    size_t at = 0, elem = tsr_dtype_size(y->dtype);
    for (int i = 0; i < node->n_inputs; i++) {
        int64_t n = g->values[node->inputs[i]].dims[axis];
        if (n <= 0 || n % block != 0 || at % TSR_ALIGNMENT != 0)
            return false;
        offsets[i] = at;
        at += (size_t)(n * inner) * elem;
    }
    return true;
}

/* Each Concat whose inputs can all be written straight into its output:
 * the producers write the slices (the inputs' buffers become slices of
 * the output's) and the Concat step does nothing. An input qualifies when
 * its buffer is the arena's, in the output's space and layout, distinct
 * from the others, nobody's parent, and written only before the Concat;
 * the output must be written by nothing before the Concat and by nothing
 * after it while an input is still read. */
static void concat_in_place(spec *s, bool verbose)
{
    for (int c = 0; c < s->n_steps; c++) {
        plan_step *st = &s->steps[c];
        if (st->kind != STEP_KERNEL || s->graph->nodes[st->node].op != &tsr_op_Concat ||
            st->n_in < 2 || st->n_in > TSR_MAX_NODE_IO)
            continue;
        int ob = st->out_bufs[0];
        const plan_buffer *out = &s->bufs[ob];
        size_t offsets[TSR_MAX_NODE_IO];
        if (out->kind != BUF_ARENA || out->slice || !concat_slices(s, st, offsets))
            continue;
        bool ok = true;
        int last_read = c;
        for (int i = 0; i < st->n_in && ok; i++) {
            int ib = st->in_bufs[i];
            const plan_buffer *in = ib >= 0 ? &s->bufs[ib] : NULL;
            ok = in && in->kind == BUF_ARENA && !in->slice && in->space == out->space &&
                 in->layout == out->layout && !is_parent(s, ib);
            for (int k = 0; k < i && ok; k++)
                ok = st->in_bufs[k] != ib;
            for (int t = 0; t < s->n_steps && ok; t++) {
                const plan_step *other = &s->steps[t];
                ok = t < c || !step_writes(other, ib);
                for (int k = 0; k < other->n_in && ok && t > last_read; k++)
                    if (other->in_bufs[k] == ib)
                        last_read = t;
            }
        }
        for (int t = 0; t < s->n_steps && ok; t++)
            ok = t == c || !step_writes(&s->steps[t], ob) || t > last_read;
        if (!ok)
            continue;
        for (int i = 0; i < st->n_in; i++) {
            s->bufs[st->in_bufs[i]].slice = true;
            s->bufs[st->in_bufs[i]].parent = ob;
            s->bufs[st->in_bufs[i]].slice_offset = offsets[i];
        }
        st->in_place = true;
        if (verbose)
            fprintf(stderr, "tessera:   '%s': its %d inputs are written in place\n",
                    s->graph->nodes[st->node].name, st->n_in);
    }
}

tsr_status tsr_schedule(spec *s, const tsr_backend *const *backends, int threads,
                        tsr_precision precision, bool depth_first, bool autotune, bool optimize,
                        bool verbose)
{
    const tsr_graph *g = s->graph;
    scheduler sc = {.s = s, .backends = backends, .verbose = verbose, .precision = precision,
                    .autotune = autotune};
    for (const tsr_backend *const *b = backends; *b; b++)
        if ((*b)->reorder && !sc.reorderer[tsr_spec_space(s, *b)])
            sc.reorderer[tsr_spec_space(s, *b)] = *b;
    size_t n_copies = TSR_N_LAYOUTS * (size_t)s->n_spaces * ((size_t)g->n_values + 1);
    sc.copies = tsr_malloc(sizeof(int) * n_copies);
    sc.last_reader = tsr_malloc(sizeof(int) * ((size_t)g->n_values + 1));
    if (!sc.copies || !sc.last_reader) {
        free(sc.copies);
        free(sc.last_reader);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    for (int v = 0; v < g->n_values; v++)
        sc.last_reader[v] = -1;
    for (int n = 0; n < g->n_nodes; n++)
        for (int i = 0; i < g->nodes[n].n_inputs; i++)
            if (g->nodes[n].inputs[i] >= 0)
                sc.last_reader[g->nodes[n].inputs[i]] = n;
    for (size_t i = 0; i < n_copies; i++)
        sc.copies[i] = -1;
    tsr_status st = TSR_OK;
    for (int v = 0; v < g->n_values && st == TSR_OK; v++) {
        if (g->values[v].data)
            st = new_buffer(&sc, BUF_CONST, -1, v, TSR_LAYOUT_PLAIN, TSR_HOST_SPACE,
                            &copies_of(&sc, v, TSR_HOST_SPACE)[TSR_LAYOUT_PLAIN]);
    }
    /* The caller's inputs, each in the space it lives in: a reader there
     * takes it as it is, one elsewhere through a transfer. */
    for (int i = 0; i < g->n_inputs && st == TSR_OK; i++) {
        int space = s->residency ? s->residency[i] : TSR_HOST_SPACE;
        tsr_layout layout = s->input_layouts ? (tsr_layout)s->input_layouts[i] : TSR_LAYOUT_PLAIN;
        st = new_buffer(&sc, BUF_INPUT, i, g->inputs[i], layout, space,
                        &copies_of(&sc, g->inputs[i], space)[layout]);
    }
    for (int n = 0; n < g->n_nodes && st == TSR_OK; n++)
        st = schedule_node(&sc, n, threads);
    if (st == TSR_OK)
        st = finish_outputs(&sc);
    if (st == TSR_OK && s->keep_layouts)
        st = note_output_layouts(s);
    if (st == TSR_OK && depth_first)
        st = tsr_stacks_form(s, threads, verbose);
    if (st == TSR_OK && optimize)
        concat_in_place(s, verbose);
    if (st == TSR_OK)
        st = tsr_place_arenas(s, NULL, NULL);
    free(sc.copies);
    free(sc.last_reader);
    return st;
}

void tsr_schedule_release(spec *s)
{
    for (int i = 0; i < s->n_steps; i++) {
        plan_step *st = &s->steps[i];
        if (st->kind == STEP_KERNEL && st->state && st->backend->release)
            st->backend->release(st->state);
        if (st->kind == STEP_STACK)
            tsr_stack_destroy(st->stack);
        free(st->in_bufs);
        free(st->out_bufs);
    }
    free(s->steps);
    free(s->bufs);
    s->steps = NULL;
    s->bufs = NULL;
    s->n_steps = s->n_bufs = 0;
}

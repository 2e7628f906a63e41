/* Data movement in the cpu backend: Concat. Along the channels of rank-4
 * tensors whose channel counts are all multiples of the block, the
 * blocked layout concatenates exactly like plain memory does (whole
 * blocks, no padding in between), so one copy loop serves both. */
#include "backends/cpu/kernels_internal.h"

#include <string.h>

static bool concat_axis(const tsr_graph *g, const tsr_node *node, int *axis)
{
    const tsr_value *y = tsr_cpu_output(g, node, 0);
    return tsr_axis_normalize(tsr_attr_int(node, "axis"), y->rank, axis);
}

static bool concat_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    int axis;
    if (!concat_axis(g, node, &axis)) {
        snprintf(why, size, "Concat: axis out of range");
        return false;
    }
    for (int i = 0; i < node->n_inputs; i++)
        if (!tsr_cpu_input(g, node, i)) {
            snprintf(why, size, "Concat: input %d is missing", i);
            return false;
        }
    return true;
}

/* Blocked when some input arrives blocked and every input's channel count
 * fills whole blocks; else plain. */
static void concat_layouts(const tsr_graph *g, const tsr_node *node, const uint8_t *available,
                           uint8_t *wanted, uint8_t *produced)
{
    int axis;
    tsr_layout l = TSR_LAYOUT_PLAIN;
    const tsr_value *y = tsr_cpu_output(g, node, 0);
    if (concat_axis(g, node, &axis) && axis == 1 && y->rank == 4 && y->dtype == TSR_FLOAT32) {
        for (int i = 0; i < node->n_inputs && l == TSR_LAYOUT_PLAIN; i++)
            l = tsr_cpu_keep_layout(tsr_cpu_input(g, node, i), available[i]);
        for (int i = 0; i < node->n_inputs && l != TSR_LAYOUT_PLAIN; i++)
            if (tsr_cpu_input(g, node, i)->dims[1] % tsr_layout_block(l) != 0)
                l = TSR_LAYOUT_PLAIN;
    }
    for (int i = 0; i < node->n_inputs; i++)
        wanted[i] = (uint8_t)l;
    produced[0] = (uint8_t)l;
}

typedef struct {
    int axis;
    int64_t pitch; /* floats per row of a channel block's plane, for bands */
} concat_data;

/* Bytes moved per parallel piece: small enough that the pieces of a
 * batch-1 Concat split evenly across the threads, large enough that a
 * piece's copy outweighs handing it out. */
#define PIECE_BYTES (64 * 1024)

/* Every input's copies in one parallel region (one fork and join per
 * Concat, not one per input), as pieces numbered input by input. */
static tsr_status concat_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const concat_data *d = s->data;
    tsr_tensor *y = k->outputs[0];
    int axis = d->axis;
    size_t es = tsr_dtype_size(y->dtype);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++)
        outer *= y->dims[i];
    for (int i = axis + 1; i < y->rank; i++)
        inner *= y->dims[i];
    /* Blocked with every C a multiple of b: an image holds C * H * W
     * elements either way and each input's channels are one contiguous
     * run, so the copies are the plain ones. */
    size_t out_row = (size_t)y->dims[axis] * (size_t)inner * es;
    size_t chunk[TSR_MAX_NODE_IO], at[TSR_MAX_NODE_IO];
    int64_t pieces[TSR_MAX_NODE_IO], first[TSR_MAX_NODE_IO + 1];
    first[0] = 0;
    size_t offset = 0;
    for (int i = 0; i < k->n_inputs; i++) {
        chunk[i] = (size_t)k->inputs[i]->dims[axis] * (size_t)inner * es;
        at[i] = offset;
        offset += chunk[i];
        pieces[i] = (int64_t)((chunk[i] + PIECE_BYTES - 1) / PIECE_BYTES);
        first[i + 1] = first[i] + outer * pieces[i];
    }
    int64_t items = first[k->n_inputs];
    int nt = tsr_cpu_threads_for(k->threads, (int64_t)(outer * out_row / 4));
    if (nt > items)
        nt = (int)items;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t it = 0; it < items; it++) {
        int i = 0;
        while (it >= first[i + 1])
            i++;
        int64_t o = (it - first[i]) / pieces[i];
        size_t off = (size_t)((it - first[i]) % pieces[i]) * PIECE_BYTES;
        size_t len = chunk[i] - off < PIECE_BYTES ? chunk[i] - off : PIECE_BYTES;
        memcpy((char *)y->data + (size_t)o * out_row + at[i] + off,
               (const char *)k->inputs[i]->data + (size_t)o * chunk[i] + off, len);
    }
    return TSR_OK;
}

/* A band of the channel block the stack routed to one input: a copy. */
static void concat_band(const tsr_cpu_state *s, const tsr_band_call *c)
{
    const concat_data *d = s->data;
    const tsr_band *x = NULL;
    for (int i = 0; i < TSR_MAX_NODE_IO && !x; i++)
        if (c->in[i].data)
            x = &c->in[i];
    if (!x)
        return;
    memcpy(c->out.data + (c->r0 - c->out.row0) * d->pitch, x->data + (c->r0 - x->row0) * d->pitch,
           (size_t)((c->r1 - c->r0) * d->pitch) * sizeof(float));
}

static tsr_status concat_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    concat_data *d = tsr_calloc(1, sizeof *d);
    if (!d)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = d;
    s->run = concat_run;
    if (!concat_axis(ctx->graph, ctx->node, &d->axis))
        return tsr_error(TSR_ERR_INTERNAL, "cpu backend: Concat axis out of range");
    const tsr_value *y = tsr_cpu_output(ctx->graph, ctx->node, 0);
    tsr_cpu_planes p;
    /* Whole channel blocks per input: blocked layouts only get here with
     * every input's channels a multiple of the block, plain ones always. */
    if (d->axis == 1 && y->dtype == TSR_FLOAT32 && ctx->node->n_inputs <= 32 &&
        tsr_cpu_planes_of(y, ctx->output_layouts[0], &p)) {
        d->pitch = p.pitch;
        s->band = concat_band;
        s->band_info = (tsr_band_info){.stride = 1,
                                       .extent = 1,
                                       .streamed = (unsigned)((1ull << ctx->node->n_inputs) - 1),
                                       .routes_blocks = true};
    }
    return TSR_OK;
}

const tsr_cpu_op tsr_cpu_misc_ops[] = {
    {&tsr_op_Concat, concat_supports, concat_layouts, concat_prepare},
    {NULL},
};

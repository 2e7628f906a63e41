/* Data movement in the cpu backend: Concat, Split, Transpose and Gather. Along the
 * channels of rank-4 tensors whose channel counts are all multiples of the
 * block, the blocked layout concatenates exactly like plain memory does
 * (whole blocks, no padding in between), so one copy loop serves both. */
#include "backends/cpu/kernels_internal.h"
#include "ops/movement.h"

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

/* The copies between a tensor `whole` and its n parts along an axis: the
 * whole is `outer` rows, each row the parts' chunks side by side (chunk[i]
 * bytes of part i per row; a NULL part is skipped). Into the whole
 * (Concat) or out of it (Split), all in one parallel region (one fork and
 * join per node, not one per part), as pieces numbered part by part. */
static void move_parts(int threads, char *whole, int n, char *const *parts, const size_t *chunk,
                       int64_t outer, bool into_whole)
{
    size_t at[TSR_MAX_NODE_IO], row = 0;
    int64_t pieces[TSR_MAX_NODE_IO], first[TSR_MAX_NODE_IO + 1];
    first[0] = 0;
    for (int i = 0; i < n; i++) {
        at[i] = row;
        row += chunk[i];
        pieces[i] = parts[i] ? (int64_t)((chunk[i] + PIECE_BYTES - 1) / PIECE_BYTES) : 0;
        first[i + 1] = first[i] + outer * pieces[i];
    }
    int64_t items = first[n];
    int nt = tsr_cpu_threads_for(threads, (int64_t)((size_t)outer * row / 4));
    if (row <= PIECE_BYTES) {
        /* Short rows (the radial weights of an edge cut into paths): row
         * by row, every part's chunk in turn, without finding each piece's
         * part and row. */
        if (nt > outer)
            nt = (int)outer;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t o = 0; o < outer; o++)
            for (int i = 0; i < n; i++) {
                if (!parts[i])
                    continue;
                char *w = whole + (size_t)o * row + at[i], *p = parts[i] + (size_t)o * chunk[i];
                if (into_whole)
                    memcpy(w, p, chunk[i]);
                else
                    memcpy(p, w, chunk[i]);
            }
        return;
    }
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
        char *w = whole + (size_t)o * row + at[i] + off, *p = parts[i] + (size_t)o * chunk[i] + off;
        if (into_whole)
            memcpy(w, p, len);
        else
            memcpy(p, w, len);
    }
}

/* Rows before `axis` and bytes of one step along it. */
static void axis_geometry(const tsr_tensor *t, int axis, int64_t *outer, size_t *step)
{
    *outer = 1;
    for (int i = 0; i < axis; i++)
        *outer *= t->dims[i];
    *step = tsr_dtype_size(t->dtype);
    for (int i = axis + 1; i < t->rank; i++)
        *step *= (size_t)t->dims[i];
}

static tsr_status concat_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const concat_data *d = s->data;
    int64_t outer;
    size_t step, chunk[TSR_MAX_NODE_IO];
    char *parts[TSR_MAX_NODE_IO];
    /* Blocked with every C a multiple of b: an image holds C * H * W
     * elements either way and each input's channels are one contiguous
     * run, so the copies are the plain ones. */
    axis_geometry(k->outputs[0], d->axis, &outer, &step);
    for (int i = 0; i < k->n_inputs; i++) {
        chunk[i] = (size_t)k->inputs[i]->dims[d->axis] * step;
        parts[i] = k->inputs[i]->data;
    }
    move_parts(k->threads, k->outputs[0]->data, k->n_inputs, parts, chunk, outer, true);
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

/* ------------------------------------------------- Split and Gather */

/* Split's and Gather's `axis`, an axis of their first input. */
static bool input_axis(const tsr_graph *g, const tsr_node *node, int *axis)
{
    return tsr_axis_normalize(tsr_attr_int(node, "axis"), tsr_cpu_input(g, node, 0)->rank, axis);
}

static bool input_axis_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    int axis;
    if (!input_axis(g, node, &axis)) {
        snprintf(why, size, "%s: axis out of range", node->op->name);
        return false;
    }
    return true;
}

/* The state of both: the normalized axis. */
static tsr_status input_axis_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    int *axis = tsr_calloc(1, sizeof *axis);
    if (!axis)
        return TSR_ERR_OUT_OF_MEMORY;
    s->data = axis;
    if (!input_axis(ctx->graph, ctx->node, axis))
        return tsr_error(TSR_ERR_INTERNAL, "cpu backend: %s axis out of range",
                         ctx->node->op->name);
    return TSR_OK;
}

/* The pieces' sizes are the outputs' (shape inference checked them
 * against `split` or num_outputs); an output left out is skipped. */
static tsr_status split_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const int *axis = s->data;
    const tsr_tensor *x = k->inputs[0];
    int64_t outer;
    size_t step, chunk[TSR_MAX_NODE_IO], total = 0;
    char *parts[TSR_MAX_NODE_IO];
    axis_geometry(x, *axis, &outer, &step);
    for (int i = 0; i < k->n_outputs; i++) {
        const tsr_tensor *y = k->outputs[i];
        chunk[i] = (size_t)y->dims[*axis] * step;
        parts[i] = y->data;
        total += chunk[i];
    }
    if (total != (size_t)x->dims[*axis] * step)
        return tsr_error(TSR_ERR_INTERNAL, "Split outputs do not add up to the input along axis %d",
                         *axis);
    move_parts(k->threads, x->data, k->n_outputs, parts, chunk, outer, false);
    return TSR_OK;
}

static tsr_status split_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    s->run = split_run;
    return input_axis_prepare(ctx, s);
}

/* ----------------------------------------------------------- Transpose */

/* Transpose on plain layouts, every dtype (elements of 1, 4 or 8 bytes). The dims are
 * collapsed as tsr_copy_strided does (size-1 dims dropped, output neighbours
 * that are input neighbours merged). When the output's innermost axis is
 * the input's, rows are copied whole (tsr_copy_strided). Otherwise the
 * output's innermost axis walks the input with a stride, and the ref's
 * element-by-element copy reads one element per cache line: attention's
 * K^T ([B*h, T, d] -> [B*h, d, T]) ran at 1.5 GB/s. Here the two axes that
 * are innermost in either tensor are copied in TRANSPOSE_TILE x
 * TRANSPOSE_TILE tiles, which both sides touch as whole lines. */
#define TRANSPOSE_TILE 16

static bool transpose_supports(const tsr_graph *g, const tsr_node *node, char *why, size_t size)
{
    size_t es = tsr_dtype_size(tsr_cpu_input(g, node, 0)->dtype);
    if (es != 1 && es != 4 && es != 8) {
        snprintf(why, size, "Transpose: elements of %zu bytes are left to ref", es);
        return false;
    }
    return true;
}

#define TRANSPOSE_TILE_COPY(ES)                                                                    \
    for (int64_t j = j0; j < j1; j++)                                                              \
        for (int64_t i = i0; i < i1; i++)                                                          \
            memcpy(out + (i * op + j) * (ES), in + (i + j * so) * (ES), (ES));

/* out[i * op + j] = in[i + j * so] for i in [i0, i1), j in [j0, j1). */
static void transpose_tile(char *out, const char *in, size_t es, int64_t op, int64_t so,
                           int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    switch (es) {
    case 1: TRANSPOSE_TILE_COPY(1) break;
    case 4: TRANSPOSE_TILE_COPY(4) break;
    default: TRANSPOSE_TILE_COPY(8) break;
    }
}
#undef TRANSPOSE_TILE_COPY

static tsr_status transpose_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    (void)s;
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    size_t es = tsr_dtype_size(x->dtype), count;
    const int64_t *p = tsr_attr_ints(k->node, "perm", &count);
    int64_t in_strides[TSR_MAX_RANK], strides[TSR_MAX_RANK];
    tsr_contiguous_strides(x->rank, x->dims, in_strides);
    for (int d = 0; d < y->rank; d++)
        strides[d] = in_strides[p ? p[d] : x->rank - 1 - d];
    int64_t total = tsr_shape_numel(y->rank, y->dims);
    int64_t dims[TSR_MAX_RANK], st[TSR_MAX_RANK];
    int r = 0;
    for (int d = 0; d < y->rank; d++) {
        if (y->dims[d] == 1)
            continue;
        if (r > 0 && st[r - 1] == strides[d] * y->dims[d]) {
            dims[r - 1] *= y->dims[d];
            st[r - 1] = strides[d];
        } else {
            dims[r] = y->dims[d];
            st[r++] = strides[d];
        }
    }
    if (total == 0)
        return TSR_OK;
    if (r == 0 || st[r - 1] == 1) {
        tsr_copy_strided(y->data, x->data, es, y->rank, y->dims, strides, 0, k->threads);
        return TSR_OK;
    }
    /* The input's innermost axis, at output axis q < r - 1. */
    int q = 0;
    while (st[q] != 1)
        q++;
    int64_t ostr[TSR_MAX_RANK];
    tsr_contiguous_strides(r, dims, ostr);
    int64_t n_i = dims[q], n_j = dims[r - 1], so = st[r - 1], op = ostr[q];
    int64_t tiles = (n_i + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE, items = total / n_i / n_j * tiles;
    int nt = tsr_cpu_threads_for(k->threads, total);
    if (nt > items)
        nt = (int)items;
    const char *in = x->data;
    char *out = y->data;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t it = 0; it < items; it++) {
        int64_t rest = it / tiles, i0 = it % tiles * TRANSPOSE_TILE, ib = 0, ob = 0;
        int64_t i1 = i0 + TRANSPOSE_TILE < n_i ? i0 + TRANSPOSE_TILE : n_i;
        for (int d = r - 2; d >= 0; d--) {
            if (d == q)
                continue;
            int64_t idx = rest % dims[d];
            rest /= dims[d];
            ib += idx * st[d];
            ob += idx * ostr[d];
        }
        for (int64_t j0 = 0; j0 < n_j; j0 += TRANSPOSE_TILE)
            transpose_tile(out + (size_t)ob * es, in + (size_t)ib * es, es, op, so, i0, i1, j0,
                           j0 + TRANSPOSE_TILE < n_j ? j0 + TRANSPOSE_TILE : n_j);
    }
    return TSR_OK;
}

static tsr_status transpose_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    (void)ctx;
    s->run = transpose_run;
    return TSR_OK;
}

/* -------------------------------------------------------------- Gather */

/* Gather on plain layouts, every dtype: for each of the `outer` rows
 * before the axis and each index, one slice of `inner` elements after it.
 * ICTP gathers the positions of each edge's atoms (slices of 3) and each
 * atom's weights by species (slices of 1024), where the ref kernel's
 * memcpy call per slice on one thread took 0.18 ms for 45902 edges. Here
 * threads share the slices and the common small sizes copy by fixed-size
 * moves; the indices are checked first, so nothing is written for an
 * index out of range. */
static void copy_slice(char *dst, const char *src, size_t bytes)
{
    switch (bytes) {
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    case 12: memcpy(dst, src, 12); break;
    case 16: memcpy(dst, src, 16); break;
    case 24: memcpy(dst, src, 24); break;
    case 32: memcpy(dst, src, 32); break;
    default: memcpy(dst, src, bytes); break;
    }
}

static tsr_status gather_run(const tsr_cpu_state *s, const tsr_kernel_ctx *k)
{
    const int axis = *(const int *)s->data;
    const tsr_tensor *x = k->inputs[0], *ind = k->inputs[1];
    tsr_tensor *y = k->outputs[0];
    int64_t dim = x->dims[axis], outer = 1, inner = 1, n = tsr_tensor_numel(ind);
    for (int d = 0; d < axis; d++)
        outer *= x->dims[d];
    for (int d = axis + 1; d < x->rank; d++)
        inner *= x->dims[d];
    if (tsr_tensor_numel(y) != outer * n * inner)
        return tsr_error(TSR_ERR_SHAPE, "Gather: Y holds %lld values, %lld expected",
                         (long long)tsr_tensor_numel(y), (long long)(outer * n * inner));
    TSR_CHECK(tsr_gather_check_indices(ind, axis, dim));
    size_t slice = (size_t)inner * tsr_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = y->data;
    const int64_t *i64 = ind->dtype == TSR_INT64 ? ind->data : NULL;
    const int32_t *i32 = ind->dtype == TSR_INT64 ? NULL : ind->data;
    int nt = tsr_cpu_threads_for(k->threads, (int64_t)((size_t)(outer * n) * slice / 4));
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < n; i++) {
            int64_t v = i64 ? i64[i] : i32[i];
            v += v < 0 ? dim : 0;
            copy_slice(dst + (size_t)(o * n + i) * slice, src + (size_t)(o * dim + v) * slice,
                       slice);
        }
    return TSR_OK;
}

static tsr_status gather_prepare(const tsr_prepare_ctx *ctx, tsr_cpu_state *s)
{
    s->run = gather_run;
    return input_axis_prepare(ctx, s);
}

const tsr_cpu_op tsr_cpu_misc_ops[] = {
    {&tsr_op_Concat, concat_supports, concat_layouts, concat_prepare},
    {&tsr_op_Split, input_axis_supports, tsr_cpu_plain_layouts, split_prepare},
    {&tsr_op_Transpose, transpose_supports, tsr_cpu_plain_layouts, transpose_prepare},
    {&tsr_op_Gather, input_axis_supports, tsr_cpu_plain_layouts, gather_prepare},
    {NULL},
};

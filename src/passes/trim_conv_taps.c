/* Dropping the kernel taps of a convolution that only ever read padding.
 * A dilated convolution on a small map (DeepLab's ASPP: dilations 12 to
 * 36 on a 14x14 map) multiplies zeros with most of its kernel, and oneDNN
 * has no fast kernel for a dilation and padding that wide. Along each
 * spatial dim the taps that reach the input for some output position form
 * a range; convolving with that part of W, the padding in front shrunk by
 * the taps dropped before the range and the padding behind by those after
 * it, gives the same output. A dim left with one tap needs no dilation,
 * so a kernel reduced to its centre becomes a pointwise convolution. */
#include "passes/passes.h"

#include "ir/rewrite.h"
#include "ops/window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first and last tap of dim d that read the input for some output
 * position; false if none does. */
static bool used_taps(const tsr_window *w, int d, int64_t *first, int64_t *last)
{
    *first = w->kernel[d];
    *last = -1;
    for (int64_t o = 0; o < w->out[d]; o++) {
        int64_t lo, hi;
        tsr_window_taps_inside(o * w->stride[d] - w->pad_begin[d], w->dilation[d], w->kernel[d],
                               w->in[d], &lo, &hi);
        if (lo >= hi)
            continue;
        if (lo < *first)
            *first = lo;
        if (hi - 1 > *last)
            *last = hi - 1;
    }
    return *last >= *first;
}

/* The geometry of dim d with only taps [first, last]: false when it
 * would need negative padding (cropping the input) to keep the output
 * size, then the dim keeps all its taps. */
static bool trimmed_dim(const tsr_window *w, int d, int64_t first, int64_t last, int64_t *kernel,
                        int64_t *pad_begin, int64_t *pad_end)
{
    *kernel = last - first + 1;
    *pad_begin = w->pad_begin[d] - first * w->dilation[d];
    *pad_end = w->pad_end[d] - (w->kernel[d] - 1 - last) * w->dilation[d];
    if (*pad_begin < 0)
        return false;
    /* Negative padding behind can round away with a stride: the output
     * size decides. */
    if (*pad_end < 0)
        *pad_end = 0;
    int64_t span = (*kernel - 1) * w->dilation[d] + 1;
    int64_t room = w->in[d] + *pad_begin + *pad_end - span;
    return room >= 0 && room / w->stride[d] + 1 == w->out[d];
}

/* W's taps [first[d], first[d] + kernel[d]) along each of its n spatial
 * dims, for every output and input channel. */
static void slice_taps(const tsr_tensor *w, int n, const int64_t *first, const int64_t *kernel,
                       tsr_tensor *out)
{
    int64_t in_dims[3] = {1, 1, 1}, k[3] = {1, 1, 1}, at[3] = {0, 0, 0};
    for (int d = 0; d < n; d++) {
        in_dims[3 - n + d] = w->dims[2 + d];
        k[3 - n + d] = kernel[d];
        at[3 - n + d] = first[d];
    }
    size_t elem = tsr_dtype_size(w->dtype);
    int64_t channels = w->dims[0] * w->dims[1];
    int64_t plane = in_dims[0] * in_dims[1] * in_dims[2];
    const char *src = w->data;
    char *dst = out->data;
    for (int64_t c = 0; c < channels; c++)
        for (int64_t i = 0; i < k[0]; i++)
            for (int64_t j = 0; j < k[1]; j++) {
                int64_t from =
                    c * plane + ((at[0] + i) * in_dims[1] + at[1] + j) * in_dims[2] + at[2];
                memcpy(dst, src + (size_t)from * elem, (size_t)k[2] * elem);
                dst += (size_t)k[2] * elem;
            }
}

static bool trim_one(tsr_graph *g, int c)
{
    const tsr_node *conv = &g->nodes[c];
    const tsr_value *x = &g->values[conv->inputs[0]], *w = &g->values[conv->inputs[1]];
    if (!w->data || w->is_param || x->rank < 3 || x->rank != w->rank ||
        !tsr_dtype_is_float(w->dtype))
        return false;
    int n = x->rank - 2;
    for (int d = 0; d < n; d++)
        if (!tsr_dim_known(x->dims[2 + d]))
            return false;
    tsr_window win;
    if (tsr_window_init(conv, n, x->dims + 2, w->dims + 2, false, &win) != TSR_OK)
        return false;

    int64_t first[TSR_WINDOW_MAX_DIMS], kernel[TSR_WINDOW_MAX_DIMS];
    int64_t pads[2 * TSR_WINDOW_MAX_DIMS], dilations[TSR_WINDOW_MAX_DIMS];
    bool smaller = false;
    for (int d = 0; d < n; d++) {
        int64_t lo, hi;
        first[d] = 0;
        kernel[d] = win.kernel[d];
        pads[d] = win.pad_begin[d];
        pads[n + d] = win.pad_end[d];
        if (used_taps(&win, d, &lo, &hi) && hi - lo + 1 < win.kernel[d] &&
            trimmed_dim(&win, d, lo, hi, &kernel[d], &pads[d], &pads[n + d])) {
            first[d] = lo;
            smaller = true;
        }
        dilations[d] = kernel[d] > 1 ? win.dilation[d] : 1;
    }
    if (!smaller)
        return false;

    tsr_tensor wt = tsr_value_tensor(w), new_w = wt;
    for (int d = 0; d < n; d++)
        new_w.dims[2 + d] = kernel[d];
    new_w.data = tsr_malloc(tsr_tensor_bytes(&new_w) + 1);
    if (!new_w.data)
        return false;
    slice_taps(&wt, n, first, kernel, &new_w);

    /* Adding the constant may move g->values: take what is needed first. */
    char stem[256];
    snprintf(stem, sizeof stem, "%s_taps", w->name);
    int inputs[TSR_MAX_NODE_IO];
    memcpy(inputs, conv->inputs, sizeof(int) * (size_t)conv->n_inputs);
    const tsr_op_def *op = conv->op;
    int opset = conv->opset, n_inputs = conv->n_inputs;
    const tsr_attr extra[] = {
        {.name = "auto_pad", .type = TSR_ATTR_STRING, .s = "NOTSET"},
        {.name = "kernel_shape", .type = TSR_ATTR_INTS, .count = (size_t)n, .ints = kernel},
        {.name = "pads", .type = TSR_ATTR_INTS, .count = (size_t)(2 * n), .ints = pads},
        {.name = "dilations", .type = TSR_ATTR_INTS, .count = (size_t)n, .ints = dilations},
    };
    bool done = tsr_rewrite_add_constant(g, stem, &new_w, &inputs[1]) == TSR_OK &&
                tsr_rewrite_change_node(g, c, op, opset, n_inputs, inputs,
                                        (int)(sizeof extra / sizeof extra[0]), extra) == TSR_OK;
    free(new_w.data);
    return done;
}

bool tsr_pass_trim_conv_taps(tsr_graph *g)
{
    bool changed = false;
    for (int n = 0; n < g->n_nodes; n++) {
        const tsr_node *node = &g->nodes[n];
        if ((node->op == &tsr_op_Conv || node->op == &tsr_op_FusedConv) && node->n_inputs >= 2 &&
            trim_one(g, n))
            changed = true;
    }
    return changed;
}

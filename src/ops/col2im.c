/* Col2Im (opset 18): the adjoint of unfolding an image into blocks. Input
 * [N, C x prod(block_shape), L] holds, for each of the L block positions
 * (row-major over the grid that strides, dilations and pads give), every
 * tap of the block; each tap is added into the [N, C, image_shape...]
 * output where it lands, taps on padding are dropped (torch's fold).
 * image_shape and block_shape are inputs, so the output's size is known
 * when they are constants. No gradient rule yet: its adjoint, unfolding,
 * is no op of the table. */
#include "ops/movement.h"
#include "ops/window.h"

#include <string.h>

#define COL2IM_MAX_DIMS (TSR_MAX_RANK - 2)

static const tsr_attr_def col2im_attrs[] = {
    {"dilations", TSR_ATTR_INTS}, {"pads", TSR_ATTR_INTS}, {"strides", TSR_ATTR_INTS}, {NULL}};

typedef struct col2im_geom {
    int n; /* spatial dims */
    int64_t image[COL2IM_MAX_DIMS], block[COL2IM_MAX_DIMS], grid[COL2IM_MAX_DIMS];
    int64_t stride[COL2IM_MAX_DIMS], dilation[COL2IM_MAX_DIMS], pad_begin[COL2IM_MAX_DIMS];
    int64_t taps, positions; /* prod(block), prod(grid) */
} col2im_geom;

/* The block grid of `n` spatial dims from image and block sizes (known). */
static tsr_status col2im_geom_init(const tsr_node *node, int n, const int64_t *image,
                                   const int64_t *block, col2im_geom *g)
{
    if (n < 1 || n > COL2IM_MAX_DIMS)
        return tsr_error(TSR_ERR_SHAPE, "image_shape has %d values; 1 to %d are supported", n,
                         COL2IM_MAX_DIMS);
    g->n = n;
    int64_t pads[2 * COL2IM_MAX_DIMS] = {0};
    for (int i = 0; i < n; i++)
        g->stride[i] = g->dilation[i] = 1;
    TSR_CHECK(tsr_window_read_list(node, "strides", n, 1, g->stride));
    TSR_CHECK(tsr_window_read_list(node, "dilations", n, 1, g->dilation));
    TSR_CHECK(tsr_window_read_list(node, "pads", 2 * n, 0, pads));
    g->taps = g->positions = 1;
    for (int i = 0; i < n; i++) {
        if (image[i] < 1 || block[i] < 1 || image[i] > TSR_MAX_TENSOR_BYTES ||
            block[i] > TSR_MAX_TENSOR_BYTES)
            return tsr_error(TSR_ERR_SHAPE,
                             "image_shape[%d] is %lld and block_shape[%d] is %lld; both must be "
                             "at least 1",
                             i, (long long)image[i], i, (long long)block[i]);
        g->image[i] = image[i];
        g->block[i] = block[i];
        g->pad_begin[i] = pads[i];
        int64_t span = (block[i] - 1) * g->dilation[i] + 1;
        int64_t room = image[i] + pads[i] + pads[n + i] - span;
        if (room < 0)
            return tsr_error(TSR_ERR_SHAPE,
                             "a block spanning %lld does not fit image dim %d of %lld with pads "
                             "%lld and %lld",
                             (long long)span, i, (long long)image[i], (long long)pads[i],
                             (long long)pads[n + i]);
        g->grid[i] = room / g->stride[i] + 1;
        if (!tsr_size_mul(g->taps, block[i], &g->taps) ||
            !tsr_size_mul(g->positions, g->grid[i], &g->positions))
            return tsr_error(TSR_ERR_SHAPE, "the blocks hold more than 2^62 taps");
    }
    return TSR_OK;
}

static tsr_status col2im_infer(tsr_infer_ctx *c)
{
    TSR_CHECK(tsr_infer_require_inputs(c));
    TSR_CHECK(tsr_infer_require_dtype(c, 0, TSR_FLOAT_TYPES));
    const tsr_value *x = c->inputs[0];
    if (x->rank != 3)
        return tsr_infer_error(c, TSR_ERR_SHAPE,
                               "the input has rank %d; Col2Im takes [N, C x prod(block_shape), L]",
                               x->rank);
    int64_t image[TSR_MAX_RANK], block[TSR_MAX_RANK];
    int n_image, n_block;
    bool image_known, block_known;
    TSR_CHECK(
        tsr_infer_int_input(c, 1, "image_shape", image, TSR_MAX_RANK, &n_image, &image_known));
    TSR_CHECK(
        tsr_infer_int_input(c, 2, "block_shape", block, TSR_MAX_RANK, &n_block, &block_known));
    if (n_image < 0 && n_block < 0)
        return tsr_infer_error(c, TSR_ERR_UNSUPPORTED,
                               "image_shape and block_shape have unknown lengths, so the output's "
                               "rank is not known");
    int n = n_image >= 0 ? n_image : n_block;
    if (n_image >= 0 && n_block >= 0 && n_image != n_block)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "image_shape has %d values but block_shape has %d",
                               n_image, n_block);
    if (n < 1 || n > COL2IM_MAX_DIMS)
        return tsr_infer_error(c, TSR_ERR_SHAPE, "image_shape has %d values; 1 to %d are supported",
                               n, COL2IM_MAX_DIMS);
    int64_t dims[TSR_MAX_RANK] = {x->dims[0], TSR_DIM_UNKNOWN};
    for (int i = 0; i < n; i++)
        dims[2 + i] = image_known ? image[i] : TSR_DIM_UNKNOWN;
    if (image_known && block_known) {
        col2im_geom g;
        TSR_CHECK(col2im_geom_init(c->node, n, image, block, &g));
        int64_t rows = x->dims[1], cols = x->dims[2];
        if (tsr_dim_known(rows) && rows % g.taps != 0)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "the input's dim 1 (%lld) is not a multiple of the %lld taps "
                                   "of a block",
                                   (long long)rows, (long long)g.taps);
        if (tsr_dim_known(cols) && cols != g.positions)
            return tsr_infer_error(c, TSR_ERR_SHAPE,
                                   "the input has %lld block positions (dim 2), the image and "
                                   "block give %lld",
                                   (long long)cols, (long long)g.positions);
        if (tsr_dim_known(rows))
            dims[1] = rows / g.taps;
    }
    tsr_infer_set(c, 0, x->dtype, n + 2, dims);
    return TSR_OK;
}

/* clang-format off */
#define COL2IM_DEFINE(T)                                                                           \
    static void col2im_##T(const col2im_geom *g, int64_t planes, const T *x, T *y)                 \
    {                                                                                              \
        int64_t plane = 1, stride_out[COL2IM_MAX_DIMS];                                            \
        for (int i = g->n - 1; i >= 0; i--) {                                                      \
            stride_out[i] = plane;                                                                 \
            plane *= g->image[i];                                                                  \
        }                                                                                          \
        memset(y, 0, (size_t)(planes * plane) * sizeof(T));                                        \
        for (int64_t p = 0; p < planes; p++) {                                                     \
            T *yp = y + p * plane;                                                                 \
            for (int64_t k = 0; k < g->taps; k++) {                                                \
                const T *row = x + (p * g->taps + k) * g->positions;                               \
                for (int64_t l = 0; l < g->positions; l++) {                                       \
                    int64_t at = 0, kr = k, lr = l;                                                \
                    bool inside = true;                                                            \
                    for (int i = g->n - 1; i >= 0 && inside; i--) {                                \
                        int64_t pos = (lr % g->grid[i]) * g->stride[i] - g->pad_begin[i] +         \
                                      (kr % g->block[i]) * g->dilation[i];                         \
                        kr /= g->block[i];                                                         \
                        lr /= g->grid[i];                                                          \
                        inside = pos >= 0 && pos < g->image[i];                                    \
                        at += pos * stride_out[i];                                                 \
                    }                                                                              \
                    if (inside)                                                                    \
                        yp[at] += row[l];                                                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

COL2IM_DEFINE(float)
COL2IM_DEFINE(double)

static tsr_status col2im_ref(const tsr_kernel_ctx *k)
{
    const tsr_tensor *x = k->inputs[0];
    tsr_tensor *y = k->outputs[0];
    int64_t image[TSR_MAX_RANK], block[TSR_MAX_RANK];
    int n_image, n_block;
    TSR_CHECK(tsr_kernel_ints(k->inputs[1], image, TSR_MAX_RANK, &n_image));
    TSR_CHECK(tsr_kernel_ints(k->inputs[2], block, TSR_MAX_RANK, &n_block));
    if (n_image != n_block || n_image != y->rank - 2)
        return tsr_error(TSR_ERR_SHAPE,
                         "image_shape has %d values and block_shape %d for an output of rank %d",
                         n_image, n_block, y->rank);
    col2im_geom g;
    TSR_CHECK(col2im_geom_init(k->node, n_image, image, block, &g));
    if (x->dims[1] != y->dims[1] * g.taps || x->dims[2] != g.positions)
        return tsr_error(TSR_ERR_SHAPE,
                         "the input is [%lld, %lld, %lld], the image and block need [N, %lld, "
                         "%lld]",
                         (long long)x->dims[0], (long long)x->dims[1], (long long)x->dims[2],
                         (long long)(y->dims[1] * g.taps), (long long)g.positions);
    int64_t planes = y->dims[0] * y->dims[1];
    if (x->dtype == TSR_FLOAT64)
        col2im_double(&g, planes, x->data, y->data);
    else
        col2im_float(&g, planes, x->data, y->data);
    return TSR_OK;
}

const tsr_op_def tsr_op_Col2Im = {
    .name = "Col2Im",
    .domain = "",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = col2im_attrs,
    .locality = TSR_LOCALITY_MOVEMENT,
    .infer = col2im_infer,
    .ref = col2im_ref,
};

/* Resize's geometry, shared by the reference kernels (resize.c) and the
 * cpu backend's kernels (backends/cpu/kernels_resize.c), so both read the
 * same taps. Every mode of Resize is separable: output index o of an
 * axis reads a few input indices of that axis with weights (nearest: one
 * tap of weight 1; linear and cubic: their kernel at the distances,
 * stretched by 1/scale under antialias, normalized to sum 1), and an
 * output element is the sum over the product of its axes' taps. */
#ifndef TSR_OPS_RESIZE_H
#define TSR_OPS_RESIZE_H

#include "ops/op.h"

typedef enum { TSR_RESIZE_NEAREST, TSR_RESIZE_LINEAR, TSR_RESIZE_CUBIC } tsr_resize_mode;

/* What a Resize, Upsample or ResizeGrad node asks for at concrete shapes. */
typedef struct tsr_resize_params {
    int rank;
    int64_t in[TSR_MAX_RANK], out[TSR_MAX_RANK];
    double scale[TSR_MAX_RANK];                    /* the scale the coordinate formulas use */
    double roi_start[TSR_MAX_RANK], roi_end[TSR_MAX_RANK]; /* tf_crop_and_resize */
    tsr_resize_mode mode;
    const char *transform; /* coordinate_transformation_mode */
    const char *nearest;   /* nearest_mode */
    double cubic_a, extrapolation;
    bool exclude_outside, antialias;
} tsr_resize_params;

/* The params of `node` (Resize, Upsample or ResizeGrad) for an input of
 * dims in[rank]; roi, scales and sizes are the node's tensors (NULL when
 * omitted; empty ones count as omitted). Bad values are errors. */
tsr_status tsr_resize_params_init(const tsr_node *node, int rank, const int64_t *in,
                                  const tsr_tensor *roi, const tsr_tensor *scales,
                                  const tsr_tensor *sizes, tsr_resize_params *p);

/* The taps of one axis: output index o reads input indices
 * index[start[o] .. start[o + 1]) with those weights; `outside` output
 * indices (tf_crop_and_resize past the input) have no taps and take the
 * extrapolation value. */
typedef struct tsr_resize_axis {
    int64_t *start;
    int64_t *index;
    double *weight;
    bool *outside;
    int64_t max_taps; /* the most taps of one output index */
} tsr_resize_axis;

tsr_status tsr_resize_axis_init(const tsr_resize_params *p, int axis, tsr_resize_axis *a);
void tsr_resize_axis_free(tsr_resize_axis *a);

/* The params of a kernel's node from its tensors: input 0 is X (or dY,
 * whose dims are then the output's, with x_shape as input 1). */
tsr_status tsr_resize_kernel_params(const tsr_kernel_ctx *k, tsr_resize_params *p);

#endif

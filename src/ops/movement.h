/* Helpers shared by the data-movement op families (shape.c, movement.c,
 * constant.c). Kernels move elements as opaque bytes of the dtype's size,
 * so every op here works on every dtype without per-type code. */
#ifndef TSR_OPS_MOVEMENT_H
#define TSR_OPS_MOVEMENT_H

#include "ops/op.h"

/* Fills the contiguous tensor `dst` of shape dims[rank] from `src`: the
 * element at multi-index (i0, i1, ...) comes from element
 * offset + sum(i_d * strides[d]) of src. Strides count elements and may be
 * zero (broadcast) or negative (reversed slices). */
void tsr_copy_strided(void *dst, const void *src, size_t elem_size, int rank, const int64_t *dims,
                      const int64_t *strides, int64_t offset, int threads);

/* Element strides of a contiguous tensor of shape dims[rank]. */
void tsr_contiguous_strides(int rank, const int64_t *dims, int64_t *strides);

/* Reads an integer input (int32 or int64, rank 0 or 1, at most `max`
 * elements) that decides shapes or axes. *known is false when the input is
 * not a constant (its length is then in *count if the shape says it, else
 * -1); wrong dtypes, ranks or lengths are errors naming `what`. */
tsr_status tsr_infer_int_input(const tsr_infer_ctx *c, int input, const char *what, int64_t *vals,
                               int max, int *count, bool *known);

/* Writes "[1, -1, 3]"-style text of plain integers into buf. */
void tsr_format_ints(char *buf, size_t size, const int64_t *vals, int n);

/* Gather's indices (int32 or int64) against an axis of size `dim`: an
 * error naming the first one outside [-dim, dim). */
tsr_status tsr_gather_check_indices(const tsr_tensor *indices, int axis, int64_t dim);

/* Fails when one of the inputs the op's schema requires was omitted. */
tsr_status tsr_infer_require_inputs(const tsr_infer_ctx *c);

#endif

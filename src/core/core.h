/* Internal basics shared by every part of the library: errors, memory,
 * shape arithmetic. */
#ifndef TSR_CORE_H
#define TSR_CORE_H

#include "tessera.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define TSR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TSR_PRINTF(f, a)
#endif

#define TSR_ALIGNMENT 64

/* Records the message returned by tsr_last_error() and returns `status`,
 * so that callers can write `return tsr_error(TSR_ERR_SHAPE, ...)`. */
tsr_status tsr_error(tsr_status status, const char *fmt, ...) TSR_PRINTF(2, 3);
/* Puts context ("node 'conv1' (Conv): ") in front of the current message. */
void tsr_error_prefix(const char *fmt, ...) TSR_PRINTF(1, 2);

#define TSR_CHECK(expr)                                                                          \
    do {                                                                                         \
        tsr_status tsr_check_status_ = (expr);                                                   \
        if (tsr_check_status_ != TSR_OK)                                                         \
            return tsr_check_status_;                                                            \
    } while (0)

/* Allocation that records TSR_ERR_OUT_OF_MEMORY on failure. */
void *tsr_malloc(size_t size);
void *tsr_calloc(size_t count, size_t size);
void *tsr_realloc(void *ptr, size_t size);
char *tsr_strdup(const char *s);
void *tsr_aligned_alloc(size_t size); /* free with tsr_aligned_free */
void tsr_aligned_free(void *ptr);
/* Reference-counted aligned storage for constants, so that graphs, their
 * clones and the plans made from them share weights instead of copying
 * them. Starts with one reference; the last release frees it. */
void *tsr_shared_alloc(size_t size);
void tsr_shared_retain(void *ptr);
void tsr_shared_release(void *ptr); /* NULL is fine */
/* Grows *array (of elem_size elements, capacity *cap) to hold `need`. */
tsr_status tsr_grow(void **array, int *cap, int need, size_t elem_size);

/* Dims of values in the IR: >= 0 is a known size, TSR_DIM_UNKNOWN is a size
 * only known at run time, and values <= TSR_DIM_SYM(0) name a symbol of the
 * graph ("batch"), whose name the graph keeps. */
#define TSR_DIM_UNKNOWN ((int64_t)-1)
#define TSR_DIM_SYM(k) ((int64_t)-2 - (int64_t)(k))
#define TSR_DIM_SYM_INDEX(d) ((int)(-2 - (d)))
static inline bool tsr_dim_known(int64_t d) { return d >= 0; }
/* Two sizes of one axis that cannot both hold: both known and unequal. */
static inline bool tsr_dims_differ(int64_t a, int64_t b)
{
    return tsr_dim_known(a) && tsr_dim_known(b) && a != b;
}
static inline bool tsr_dim_is_sym(int64_t d) { return d <= -2; }

/* The largest tensor Tessera makes or reads, in bytes and in elements:
 * 2^62, far past any memory, so that sizes of accepted tensors (and their
 * sums in plans) never wrap. */
#define TSR_MAX_TENSOR_BYTES ((int64_t)1 << 62)
/* *out = a * b (or a + b) for sizes >= 0; false when the result would pass
 * TSR_MAX_TENSOR_BYTES (then *out is left alone). */
bool tsr_size_mul(int64_t a, int64_t b, int64_t *out);
bool tsr_size_add(int64_t a, int64_t b, int64_t *out);
/* Element count of a shape into *numel_out, -1 when a dim is not known.
 * TSR_ERR_SHAPE when the elements, or their bytes at `dtype` (undefined:
 * elements only), would pass TSR_MAX_TENSOR_BYTES; the message names
 * `what` ("output 'y'") and the shape, never a wrapped count. */
tsr_status tsr_shape_numel_checked(int rank, const int64_t *dims, tsr_dtype dtype,
                                   const char *what, int64_t *numel_out);
/* Bytes (and FLOPs) a folded node may make beyond what its constant
 * inputs hold; TSR_FOLD_LIMIT in the environment or
 * tsr_graph_set_fold_limit change it. */
#define TSR_FOLD_LIMIT_DEFAULT ((int64_t)16 << 20)
/* -1 if not all dims are known or the count passes TSR_MAX_TENSOR_BYTES. */
int64_t tsr_shape_numel(int rank, const int64_t *dims);
/* TSR_OK for a tensor in host memory; else TSR_ERR_INVALID_ARGUMENT naming
 * `what` and the tensor's memory, for the calls that read or write data
 * on the host (only tsr_plan_run and the tsr_device_* calls take device
 * tensors). */
tsr_status tsr_tensor_require_host(const tsr_tensor *t, const char *what);
/* Normalizes an axis in [-rank, rank) to [0, rank); false if out of range. */
bool tsr_axis_normalize(int64_t axis, int rank, int *axis_out);
/* Numpy broadcasting of two shapes; symbolic dims broadcast when equal. */
tsr_status tsr_shape_broadcast(int rank_a, const int64_t *a, int rank_b, const int64_t *b,
                               int *rank_out, int64_t *dims_out);
/* Writes "[1, batch, 224]"-style text (symbols as s<k>) into buf. */
void tsr_shape_format(char *buf, size_t size, int rank, const int64_t *dims);

bool tsr_dtype_is_float(tsr_dtype dtype);

/* Writes the parts one after another to `path` through a temporary file
 * beside it, fsync and rename: readers see the old file or the new one.
 * On failure the temporary file is gone and `path` is untouched. */
tsr_status tsr_write_file_atomic(const char *path, int n_parts, const void *const *parts,
                                 const size_t *sizes);

/* Number of threads to use when the caller said `requested` (0 = all). */
int tsr_thread_count(int requested);

#endif

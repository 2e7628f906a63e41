#include "core/core.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>

size_t tsr_dtype_size(tsr_dtype dtype)
{
    switch (dtype) {
    case TSR_FLOAT32: return 4;
    case TSR_FLOAT64: return 8;
    case TSR_INT64: return 8;
    case TSR_INT32: return 4;
    case TSR_UINT8:
    case TSR_INT8:
    case TSR_BOOL: return 1;
    case TSR_DTYPE_UNDEFINED: return 0;
    }
    return 0;
}

const char *tsr_dtype_name(tsr_dtype dtype)
{
    switch (dtype) {
    case TSR_FLOAT32: return "float32";
    case TSR_FLOAT64: return "float64";
    case TSR_INT64: return "int64";
    case TSR_INT32: return "int32";
    case TSR_UINT8: return "uint8";
    case TSR_INT8: return "int8";
    case TSR_BOOL: return "bool";
    case TSR_DTYPE_UNDEFINED: return "undefined";
    }
    return "unknown";
}

bool tsr_dtype_is_float(tsr_dtype dtype) { return dtype == TSR_FLOAT32 || dtype == TSR_FLOAT64; }

int64_t tsr_tensor_numel(const tsr_tensor *t) { return tsr_shape_numel(t->rank, t->dims); }

tsr_status tsr_tensor_require_host(const tsr_tensor *t, const char *what)
{
    if (!t->memory)
        return TSR_OK;
    return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                     "%s: the tensor is in %s memory, and this call reads host memory only "
                     "(tsr_device_copy brings it to the host)",
                     what, t->memory);
}

/* 0 for unknown dims; SIZE_MAX (which no allocation satisfies) past
 * TSR_MAX_TENSOR_BYTES. */
size_t tsr_tensor_bytes(const tsr_tensor *t)
{
    if (t->rank < 0 || t->rank > TSR_MAX_RANK)
        return 0;
    for (int i = 0; i < t->rank; i++)
        if (t->dims[i] < 0)
            return 0;
    int64_t n = tsr_shape_numel(t->rank, t->dims), bytes;
    if (n < 0 || !tsr_size_mul(n, (int64_t)tsr_dtype_size(t->dtype), &bytes))
        return SIZE_MAX;
    return (size_t)bytes;
}

bool tsr_size_mul(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || (a != 0 && b > TSR_MAX_TENSOR_BYTES / a))
        return false;
    *out = a * b;
    return true;
}

bool tsr_size_add(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || a > TSR_MAX_TENSOR_BYTES - b)
        return false;
    *out = a + b;
    return true;
}

/* A zero dim makes the count 0, but the other dims must still multiply
 * within bounds: code that loops over them (inner sizes, strides,
 * reductions) multiplies them without the zero. */
static bool numel_of(int rank, const int64_t *dims, int64_t *n_out)
{
    int64_t n = 1;
    bool empty = false;
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 0)
            empty = true;
        else if (!tsr_size_mul(n, dims[i], &n))
            return false;
    }
    *n_out = empty ? 0 : n;
    return true;
}

int64_t tsr_shape_numel(int rank, const int64_t *dims)
{
    if (rank < 0)
        return -1;
    for (int i = 0; i < rank; i++)
        if (dims[i] < 0)
            return -1;
    int64_t n;
    return numel_of(rank, dims, &n) ? n : -1;
}

tsr_status tsr_shape_numel_checked(int rank, const int64_t *dims, tsr_dtype dtype, const char *what,
                                   int64_t *numel_out)
{
    *numel_out = -1;
    if (rank < 0)
        return TSR_OK;
    int64_t known[TSR_MAX_RANK];
    int n_known = 0;
    for (int i = 0; i < rank && i < TSR_MAX_RANK; i++)
        if (tsr_dim_known(dims[i]))
            known[n_known++] = dims[i];
    int64_t n, nonzero, bytes;
    size_t elem = tsr_dtype_size(dtype);
    int64_t ones[TSR_MAX_RANK];
    for (int i = 0; i < n_known; i++)
        ones[i] = known[i] ? known[i] : 1;
    /* Known dims alone already too big fail even beside unknown ones. */
    if (!numel_of(n_known, known, &n) || !numel_of(n_known, ones, &nonzero) ||
        !tsr_size_mul(nonzero, elem ? (int64_t)elem : 1, &bytes)) {
        char shape[160];
        tsr_shape_format(shape, sizeof shape, rank, dims);
        return tsr_error(TSR_ERR_SHAPE,
                         "%s of shape %s (%s): its dims multiply to more than 2^62 %s, past "
                         "what memory can hold",
                         what, shape, tsr_dtype_name(dtype), elem ? "bytes" : "elements");
    }
    if (n_known == rank)
        *numel_out = n;
    return TSR_OK;
}

bool tsr_axis_normalize(int64_t axis, int rank, int *axis_out)
{
    if (axis < -rank || axis >= rank)
        return false;
    *axis_out = (int)(axis < 0 ? axis + rank : axis);
    return true;
}

tsr_status tsr_shape_broadcast(int rank_a, const int64_t *a, int rank_b, const int64_t *b,
                               int *rank_out, int64_t *dims_out)
{
    int rank = rank_a > rank_b ? rank_a : rank_b;
    for (int i = 0; i < rank; i++) {
        int ia = i - (rank - rank_a), ib = i - (rank - rank_b);
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        int64_t d;
        if (da == db)
            d = da;
        else if (da == 1)
            d = db;
        else if (db == 1)
            d = da;
        else if (tsr_dim_known(da) && tsr_dim_known(db)) {
            char sa[160], sb[160];
            tsr_shape_format(sa, sizeof sa, rank_a, a);
            tsr_shape_format(sb, sizeof sb, rank_b, b);
            return tsr_error(TSR_ERR_SHAPE, "shapes %s and %s do not broadcast (axis %d: %lld vs %lld)",
                             sa, sb, i, (long long)da, (long long)db);
        } else if (tsr_dim_known(da) && da != 1)
            d = da; /* the unknown side must be da or 1 */
        else if (tsr_dim_known(db) && db != 1)
            d = db;
        else
            d = TSR_DIM_UNKNOWN;
        dims_out[i] = d;
    }
    *rank_out = rank;
    return TSR_OK;
}

void tsr_shape_format(char *buf, size_t size, int rank, const int64_t *dims)
{
    size_t used = 0;
    if (rank < 0) {
        snprintf(buf, size, "[?]");
        return;
    }
    used += (size_t)snprintf(buf + used, size - used, "[");
    for (int i = 0; i < rank && used < size; i++) {
        const char *sep = i ? ", " : "";
        if (tsr_dim_known(dims[i]))
            used += (size_t)snprintf(buf + used, size - used, "%s%lld", sep, (long long)dims[i]);
        else if (tsr_dim_is_sym(dims[i]))
            used += (size_t)snprintf(buf + used, size - used, "%ss%d", sep, TSR_DIM_SYM_INDEX(dims[i]));
        else
            used += (size_t)snprintf(buf + used, size - used, "%s?", sep);
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

int tsr_thread_count(int requested)
{
    if (requested > 0)
        return requested;
    return omp_get_num_procs();
}

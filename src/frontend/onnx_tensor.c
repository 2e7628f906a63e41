/* TensorProto decoding: initializers and tensor attributes, from raw bytes,
 * from the typed repeated fields, or from an external data file beside the
 * model. Every size is checked against the shape before anything is read. */
#include "frontend/onnx_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool tsr_onnx_dtype(int32_t onnx_type, tsr_dtype *dtype_out)
{
    switch (onnx_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: *dtype_out = TSR_FLOAT32; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: *dtype_out = TSR_FLOAT64; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: *dtype_out = TSR_INT64; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: *dtype_out = TSR_INT32; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: *dtype_out = TSR_BOOL; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: *dtype_out = TSR_UINT8; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: *dtype_out = TSR_INT8; return true;
    default: return false;
    }
}

const char *tsr_onnx_dtype_name(int32_t onnx_type)
{
    static const char *const names[] = {
        "undefined",      "float",      "uint8",          "int8",       "uint16",   "int16",
        "int32",          "int64",      "string",         "bool",       "float16",  "double",
        "uint32",         "uint64",     "complex64",      "complex128", "bfloat16", "float8e4m3fn",
        "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "uint4",      "int4",     "float4e2m1"};
    if (onnx_type >= 0 && onnx_type < (int32_t)(sizeof names / sizeof names[0]))
        return names[onnx_type];
    return "unknown";
}

static bool host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* ONNX stores raw and external data little-endian whatever the host. */
static void little_endian_to_host(void *data, size_t count, size_t elem)
{
    if (elem == 1 || host_is_little_endian())
        return;
    unsigned char *d = data;
    for (size_t i = 0; i < count; i++, d += elem)
        for (size_t b = 0; b < elem / 2; b++) {
            unsigned char t = d[b];
            d[b] = d[elem - 1 - b];
            d[elem - 1 - b] = t;
        }
}

static tsr_status decode_shape(const Onnx__TensorProto *tp, const char *what, tsr_tensor *out,
                               int64_t *numel_out)
{
    if (!tp->has_data_type || tp->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED)
        return tsr_error(TSR_ERR_PARSE, "%s has no element type", what);
    if (!tsr_onnx_dtype(tp->data_type, &out->dtype))
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s has element type %s (%d), which Tessera does not support (float, "
                         "double, int64, int32, bool, uint8, int8 are)",
                         what, tsr_onnx_dtype_name(tp->data_type), (int)tp->data_type);
    if (tp->n_dims > TSR_MAX_RANK)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s has rank %zu, more than Tessera's %d", what,
                         tp->n_dims, TSR_MAX_RANK);
    if (tp->segment)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s is stored in segments, which Tessera does not read", what);
    out->rank = (int)tp->n_dims;
    for (size_t i = 0; i < tp->n_dims; i++) {
        int64_t d = tp->dims[i];
        if (d < 0)
            return tsr_error(TSR_ERR_PARSE, "%s has a negative dim (%" PRId64 " at axis %zu)", what,
                             d, i);
        out->dims[i] = d;
    }
    if (tsr_shape_numel_checked(out->rank, out->dims, out->dtype, what, numel_out) != TSR_OK)
        return TSR_ERR_PARSE;
    return TSR_OK;
}

static tsr_status parse_size(const char *text, const char *key, const char *what, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno || v < 0)
        return tsr_error(TSR_ERR_PARSE, "%s: external data %s '%s' is not a non-negative integer",
                         what, key, text);
    *out = (int64_t)v;
    return TSR_OK;
}

/* The file must stay inside base_dir: no absolute path, and no '..' that
 * climbs above it. Symbolic links are followed, as model caches use them. */
static tsr_status check_relative_path(const char *location, const char *what)
{
    if (!*location)
        return tsr_error(TSR_ERR_PARSE, "%s: external data location is empty", what);
    if (location[0] == '/')
        return tsr_error(TSR_ERR_PARSE,
                         "%s: external data location '%s' is an absolute path; it must be "
                         "relative to the model's directory",
                         what, location);
    int depth = 0;
    const char *p = location;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            depth--;
        else if (len && !(len == 1 && p[0] == '.'))
            depth++;
        if (depth < 0)
            return tsr_error(TSR_ERR_PARSE,
                             "%s: external data location '%s' escapes the model's directory", what,
                             location);
        p += len + (slash ? 1 : 0);
    }
    return TSR_OK;
}

/* Allocates *data_out only once the file is known to hold `bytes` bytes
 * at the offset. */
static tsr_status read_external(const Onnx__TensorProto *tp, const char *base_dir, const char *what,
                                size_t bytes, void **data_out)
{
    const char *location = NULL;
    int64_t offset = 0, length = -1;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[i];
        if (!e->key || !e->value)
            continue;
        if (strcmp(e->key, "location") == 0)
            location = e->value;
        else if (strcmp(e->key, "offset") == 0)
            TSR_CHECK(parse_size(e->value, "offset", what, &offset));
        else if (strcmp(e->key, "length") == 0)
            TSR_CHECK(parse_size(e->value, "length", what, &length));
    }
    if (!location)
        return tsr_error(TSR_ERR_PARSE, "%s: external data has no 'location' entry", what);
    TSR_CHECK(check_relative_path(location, what));
    if (!base_dir)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "%s: data is in external file '%s', but the model was loaded from "
                         "memory without a base directory",
                         what, location);
    if (length >= 0 && (uint64_t)length != bytes)
        return tsr_error(TSR_ERR_PARSE,
                         "%s: external data length %" PRId64 " does not match its shape (%zu "
                         "bytes)",
                         what, length, bytes);

    size_t path_len = strlen(base_dir) + strlen(location) + 2;
    char *path = tsr_malloc(path_len);
    if (!path)
        return TSR_ERR_OUT_OF_MEMORY;
    snprintf(path, path_len, "%s/%s", base_dir, location);
    tsr_status st = TSR_OK;
    FILE *f = fopen(path, "rb");
    struct stat sb;
    if (!f) {
        st = tsr_error(TSR_ERR_IO, "%s: cannot open external data file '%s': %s", what, path,
                       strerror(errno));
    } else if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = tsr_error(TSR_ERR_IO, "%s: external data file '%s' is not a regular file", what, path);
    } else if ((uint64_t)sb.st_size < (uint64_t)offset ||
               (uint64_t)sb.st_size - (uint64_t)offset < bytes) {
        st = tsr_error(TSR_ERR_IO,
                       "%s: external data file '%s' has %lld bytes, too short for %zu bytes at "
                       "offset %" PRId64,
                       what, path, (long long)sb.st_size, bytes, offset);
    } else if (fseeko(f, (off_t)offset, SEEK_SET) != 0) {
        st = tsr_error(TSR_ERR_IO, "%s: cannot seek to offset %" PRId64 " in '%s': %s", what,
                       offset, path, strerror(errno));
    } else if (!(*data_out = tsr_shared_alloc(bytes))) {
        st = TSR_ERR_OUT_OF_MEMORY;
    } else if (bytes && fread(*data_out, 1, bytes, f) != bytes) {
        st = tsr_error(TSR_ERR_IO, "%s: short read of %zu bytes from '%s'", what, bytes, path);
    }
    if (f)
        fclose(f);
    free(path);
    return st;
}

static tsr_status count_mismatch(const char *what, const char *field, size_t have, int64_t need)
{
    return tsr_error(TSR_ERR_PARSE, "%s holds %zu values in %s, but its shape needs %" PRId64, what,
                     have, field, need);
}

/* int32_data carries bool, uint8 and int8 too, one element per int32. */
static tsr_status decode_small_ints(const Onnx__TensorProto *tp, const char *what, tsr_dtype dtype,
                                    int64_t numel, void *dst)
{
    for (int64_t i = 0; i < numel; i++) {
        int32_t v = tp->int32_data[i];
        switch (dtype) {
        case TSR_INT32: ((int32_t *)dst)[i] = v; break;
        case TSR_BOOL: ((uint8_t *)dst)[i] = v != 0; break;
        case TSR_UINT8:
            if (v < 0 || v > 255)
                return tsr_error(TSR_ERR_PARSE, "%s: uint8 element %" PRId64 " is %d", what, i, v);
            ((uint8_t *)dst)[i] = (uint8_t)v;
            break;
        case TSR_INT8:
            if (v < -128 || v > 127)
                return tsr_error(TSR_ERR_PARSE, "%s: int8 element %" PRId64 " is %d", what, i, v);
            ((int8_t *)dst)[i] = (int8_t)v;
            break;
        default: return tsr_error(TSR_ERR_INTERNAL, "%s: int32_data for dtype %d", what, dtype);
        }
    }
    return TSR_OK;
}

/* The typed field that holds `dtype`, and how many values it has. */
static size_t typed_count(const Onnx__TensorProto *tp, tsr_dtype dtype, const char **field)
{
    switch (dtype) {
    case TSR_FLOAT32: *field = "float_data"; return tp->n_float_data;
    case TSR_FLOAT64: *field = "double_data"; return tp->n_double_data;
    case TSR_INT64: *field = "int64_data"; return tp->n_int64_data;
    default: *field = "int32_data"; return tp->n_int32_data;
    }
}

/* The count was checked against the shape already. */
static tsr_status decode_typed(const Onnx__TensorProto *tp, const char *what, tsr_dtype dtype,
                               int64_t numel, void *dst)
{
    switch (dtype) {
    case TSR_FLOAT32:
        if (numel)
            memcpy(dst, tp->float_data, (size_t)numel * sizeof(float));
        return TSR_OK;
    case TSR_FLOAT64:
        if (numel)
            memcpy(dst, tp->double_data, (size_t)numel * sizeof(double));
        return TSR_OK;
    case TSR_INT64:
        if (numel)
            memcpy(dst, tp->int64_data, (size_t)numel * sizeof(int64_t));
        return TSR_OK;
    default: return decode_small_ints(tp, what, dtype, numel, dst);
    }
}

tsr_status tsr_onnx_tensor_decode(const Onnx__TensorProto *tp, const char *base_dir,
                                  const char *what, tsr_tensor *out)
{
    memset(out, 0, sizeof *out);
    int64_t numel = 0;
    TSR_CHECK(decode_shape(tp, what, out, &numel));
    size_t elem = tsr_dtype_size(out->dtype);
    size_t bytes = (size_t)numel * elem;
    bool external =
        tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    const char *field;
    size_t typed = typed_count(tp, out->dtype, &field);

    /* Every source's length is compared with the shape before the buffer
     * is allocated, so declared dims alone never cost memory. */
    void *data = NULL;
    tsr_status st = TSR_OK;
    if (external) {
        st = read_external(tp, base_dir, what, bytes, &data);
        if (st == TSR_OK)
            little_endian_to_host(data, (size_t)numel, elem);
    } else if (tp->has_raw_data) {
        if (tp->raw_data.len != bytes)
            st = tsr_error(TSR_ERR_PARSE,
                           "%s has %zu bytes of raw_data, but its shape and type need %" PRId64
                           " x %zu = %zu bytes",
                           what, tp->raw_data.len, numel, elem, bytes);
        else if (!(data = tsr_shared_alloc(bytes)))
            st = TSR_ERR_OUT_OF_MEMORY;
        else if (bytes) {
            memcpy(data, tp->raw_data.data, bytes);
            little_endian_to_host(data, (size_t)numel, elem);
        }
    } else if (typed > 0) {
        if ((int64_t)typed != numel)
            st = count_mismatch(what, field, typed, numel);
        else if (!(data = tsr_shared_alloc(bytes)))
            st = TSR_ERR_OUT_OF_MEMORY;
        else
            st = decode_typed(tp, what, out->dtype, numel, data);
    } else if (numel > 0) {
        st = tsr_error(TSR_ERR_PARSE, "%s has no data for its %" PRId64 " %s elements", what, numel,
                       tsr_dtype_name(out->dtype));
    } else if (!(data = tsr_shared_alloc(0))) {
        st = TSR_ERR_OUT_OF_MEMORY;
    }
    if (st != TSR_OK) {
        tsr_shared_release(data);
        return st;
    }
    out->data = data;
    return TSR_OK;
}

/* The .npy format (numpy's NEP 1): a magic string, a version, a header
 * that is a Python dict literal, then the raw little-endian data. Files
 * come from users, so every field is checked and every allocation is
 * bounded by what the file can actually hold. */
#include "core/core.h"
#include "core/npz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader assumes a little-endian host"
#endif

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* Headers are a few dozen bytes; numpy itself refuses ones over 10 kB by
 * default. This bound keeps a hostile length field from allocating much. */
#define NPY_MAX_HEADER (1 << 20)

typedef struct {
    const char *descr;
    tsr_dtype dtype;
} npy_type;

static const npy_type npy_types[] = {
    {"<f4", TSR_FLOAT32}, {"<f8", TSR_FLOAT64}, {"<i8", TSR_INT64}, {"<i4", TSR_INT32},
    {"|u1", TSR_UINT8},   {"|i1", TSR_INT8},    {"|b1", TSR_BOOL},
};

static const char *npy_descr_of(tsr_dtype dtype)
{
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (npy_types[i].dtype == dtype)
            return npy_types[i].descr;
    return NULL;
}

/* Maps a descr to a dtype, or explains why it is not one Tessera reads. */
static tsr_status npy_dtype_of(const char *path, const char *descr, tsr_dtype *out)
{
    char d[8];
    size_t n = strlen(descr);
    if (n < sizeof d) {
        memcpy(d, descr, n + 1);
        /* '=' is native order and '<' little-endian: the same here. One-byte
         * types may come with any order mark. */
        if (d[0] == '=')
            d[0] = '<';
        if (n == 3 && d[2] == '1' && (d[0] == '<' || d[0] == '>'))
            d[0] = '|';
        for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
            if (strcmp(d, npy_types[i].descr) == 0) {
                *out = npy_types[i].dtype;
                return TSR_OK;
            }
    }
    if (descr[0] == '>')
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s: big-endian data ('%s') is not supported; save it as little-endian "
                         "(e.g. a.astype('<%s'))",
                         path, descr, descr + 1);
    if (strchr(descr, 'O'))
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s: object arrays ('%s') are not supported", path,
                         descr);
    return tsr_error(TSR_ERR_UNSUPPORTED,
                     "%s: dtype '%s' is not supported (float32 '<f4', float64 '<f8', int64 '<i8', "
                     "int32 '<i4', uint8, int8 and bool are)",
                     path, descr);
}

/* ------------------------------------------------------------ header */

typedef struct {
    const char *path;
    const char *s; /* NUL-terminated header text */
    size_t pos;
} npy_parser;

static tsr_status parse_fail(const npy_parser *p, const char *what)
{
    return tsr_error(TSR_ERR_PARSE, "%s: malformed .npy header: %s at offset %zu in \"%s\"",
                     p->path, what, p->pos, p->s);
}

static void skip_space(npy_parser *p)
{
    while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
           p->s[p->pos] == '\r')
        p->pos++;
}

static bool accept(npy_parser *p, char c)
{
    skip_space(p);
    if (p->s[p->pos] != c)
        return false;
    p->pos++;
    return true;
}

/* A Python string literal without escapes, in single or double quotes. */
static tsr_status parse_string(npy_parser *p, char *buf, size_t size)
{
    skip_space(p);
    char quote = p->s[p->pos];
    if (quote != '\'' && quote != '"')
        return parse_fail(p, "expected a quoted string");
    p->pos++;
    size_t n = 0;
    while (p->s[p->pos] && p->s[p->pos] != quote) {
        if (p->s[p->pos] == '\\')
            return parse_fail(p, "escapes in strings are not supported");
        if (n + 1 >= size)
            return parse_fail(p, "string too long");
        buf[n++] = p->s[p->pos++];
    }
    if (p->s[p->pos] != quote)
        return parse_fail(p, "unterminated string");
    p->pos++;
    buf[n] = '\0';
    return TSR_OK;
}

static tsr_status parse_bool(npy_parser *p, bool *out)
{
    skip_space(p);
    if (strncmp(p->s + p->pos, "True", 4) == 0) {
        p->pos += 4;
        *out = true;
    } else if (strncmp(p->s + p->pos, "False", 5) == 0) {
        p->pos += 5;
        *out = false;
    } else {
        return parse_fail(p, "expected True or False");
    }
    return TSR_OK;
}

/* A tuple of non-negative integers: (), (n,), (a, b), (a, b,). */
static tsr_status parse_shape(npy_parser *p, int *rank_out, int64_t *dims)
{
    if (!accept(p, '('))
        return parse_fail(p, "expected '(' to open the shape tuple");
    int rank = 0;
    bool trailing_comma = false;
    while (!accept(p, ')')) {
        skip_space(p);
        if (p->s[p->pos] < '0' || p->s[p->pos] > '9')
            return parse_fail(p, "expected a non-negative integer in the shape");
        int64_t v = 0;
        while (p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return parse_fail(p, "shape dimension too large");
            v = v * 10 + (p->s[p->pos++] - '0');
        }
        if (p->s[p->pos] == 'L') /* Python 2 longs */
            p->pos++;
        if (rank == TSR_MAX_RANK)
            return tsr_error(TSR_ERR_UNSUPPORTED,
                             "%s: arrays of more than %d dimensions are not supported", p->path,
                             TSR_MAX_RANK);
        dims[rank++] = v;
        trailing_comma = accept(p, ',');
        if (!trailing_comma) {
            if (accept(p, ')'))
                break;
            return parse_fail(p, "expected ',' or ')' in the shape");
        }
    }
    /* "(5)" is the integer 5 in Python, not a tuple. */
    if (rank == 1 && !trailing_comma)
        return parse_fail(p, "a one-element shape needs a trailing comma, like (n,)");
    *rank_out = rank;
    return TSR_OK;
}

typedef struct {
    char descr[64];
    bool fortran_order;
    int rank;
    int64_t dims[TSR_MAX_RANK];
} npy_header;

static tsr_status parse_header(const char *path, const char *text, npy_header *h)
{
    npy_parser p = {path, text, 0};
    bool seen_descr = false, seen_order = false, seen_shape = false;
    if (!accept(&p, '{'))
        return parse_fail(&p, "expected '{'");
    for (;;) {
        if (accept(&p, '}'))
            break;
        char key[32];
        TSR_CHECK(parse_string(&p, key, sizeof key));
        if (!accept(&p, ':'))
            return parse_fail(&p, "expected ':' after a key");
        if (strcmp(key, "descr") == 0 && !seen_descr) {
            skip_space(&p);
            if (p.s[p.pos] == '[')
                return tsr_error(TSR_ERR_UNSUPPORTED, "%s: structured arrays are not supported",
                                 path);
            TSR_CHECK(parse_string(&p, h->descr, sizeof h->descr));
            seen_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !seen_order) {
            TSR_CHECK(parse_bool(&p, &h->fortran_order));
            seen_order = true;
        } else if (strcmp(key, "shape") == 0 && !seen_shape) {
            TSR_CHECK(parse_shape(&p, &h->rank, h->dims));
            seen_shape = true;
        } else {
            return tsr_error(TSR_ERR_PARSE,
                             "%s: malformed .npy header: unexpected or repeated key "
                             "'%s'",
                             path, key);
        }
        if (accept(&p, ','))
            continue;
        if (accept(&p, '}'))
            break;
        return parse_fail(&p, "expected ',' or '}'");
    }
    skip_space(&p);
    if (p.s[p.pos] != '\0')
        return parse_fail(&p, "unexpected text after the dict");
    if (!seen_descr || !seen_order || !seen_shape)
        return tsr_error(TSR_ERR_PARSE, "%s: malformed .npy header: missing key '%s'", path,
                         !seen_descr   ? "descr"
                         : !seen_order ? "fortran_order"
                                       : "shape");
    return TSR_OK;
}

/* -------------------------------------------------------------- read */

static tsr_status read_exact(FILE *f, const char *path, void *buf, size_t n, const char *what)
{
    if (n && fread(buf, 1, n, f) != n) {
        if (ferror(f))
            return tsr_error(TSR_ERR_IO, "%s: read error: %s", path, strerror(errno));
        return tsr_error(TSR_ERR_PARSE, "%s: file is truncated (%s)", path, what);
    }
    return TSR_OK;
}

/* Reads `bytes` of data when the stream's length is not known (pipes): the
 * buffer grows with what actually arrives, so a header's promise alone
 * never allocates much. */
static tsr_status read_growing(FILE *f, const char *path, size_t bytes, void **data_out)
{
    size_t cap = bytes < ((size_t)1 << 20) ? bytes : ((size_t)1 << 20), got = 0;
    char *buf = tsr_malloc(cap ? cap : 1);
    if (!buf)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = TSR_OK;
    while (got < bytes) {
        if (got == cap) {
            size_t grown = cap > bytes - cap ? bytes : 2 * cap;
            char *bigger = tsr_realloc(buf, grown);
            if (!bigger) {
                st = TSR_ERR_OUT_OF_MEMORY;
                break;
            }
            buf = bigger;
            cap = grown;
        }
        size_t n = fread(buf + got, 1, cap - got, f);
        if (n == 0) {
            st = ferror(f) ? tsr_error(TSR_ERR_IO, "%s: read error: %s", path, strerror(errno))
                           : tsr_error(TSR_ERR_PARSE,
                                       "%s: file is truncated: the header promises %zu bytes of "
                                       "data, the file holds %zu",
                                       path, bytes, got);
            break;
        }
        got += n;
    }
    if (st != TSR_OK) {
        free(buf);
        return st;
    }
    *data_out = buf;
    return TSR_OK;
}

/* `avail` is the length of the whole stream, UINT64_MAX when not known. */
static tsr_status npy_read_file(FILE *f, const char *path, uint64_t avail, tsr_tensor *out,
                                void **data_out)
{
    unsigned char pre[10];
    size_t got = fread(pre, 1, 8, f);
    if (got < 6 || memcmp(pre, npy_magic, 6) != 0)
        return tsr_error(TSR_ERR_PARSE, "%s: not a .npy file (bad magic)", path);
    if (got < 8)
        return tsr_error(TSR_ERR_PARSE, "%s: file is truncated (version)", path);
    int major = pre[6], minor = pre[7];
    size_t header_len;
    size_t prefix_len;
    if (major == 1 && minor == 0) {
        TSR_CHECK(read_exact(f, path, pre + 8, 2, "header length"));
        header_len = (size_t)pre[8] | (size_t)pre[9] << 8;
        prefix_len = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        unsigned char len[4];
        TSR_CHECK(read_exact(f, path, len, 4, "header length"));
        uint32_t v = (uint32_t)len[0] | (uint32_t)len[1] << 8 | (uint32_t)len[2] << 16 |
                     (uint32_t)len[3] << 24;
        if (v > NPY_MAX_HEADER)
            return tsr_error(TSR_ERR_PARSE, "%s: .npy header length %u is implausibly large", path,
                             v);
        header_len = v;
        prefix_len = 12;
    } else {
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s: .npy format version %d.%d is not supported "
                         "(1.0, 2.0 and 3.0 are)",
                         path, major, minor);
    }
    if (header_len == 0)
        return tsr_error(TSR_ERR_PARSE, "%s: malformed .npy header: it is empty", path);

    char *text = tsr_malloc(header_len + 1);
    if (!text)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = read_exact(f, path, text, header_len, "header");
    if (st != TSR_OK) {
        free(text);
        return st;
    }
    text[header_len] = '\0';
    if (strlen(text) != header_len) {
        free(text);
        return tsr_error(TSR_ERR_PARSE, "%s: malformed .npy header: it holds a NUL byte", path);
    }
    npy_header h = {0};
    st = parse_header(path, text, &h);
    free(text);
    TSR_CHECK(st);

    tsr_dtype dtype = TSR_DTYPE_UNDEFINED;
    TSR_CHECK(npy_dtype_of(path, h.descr, &dtype));
    if (h.fortran_order && h.rank > 1)
        return tsr_error(TSR_ERR_UNSUPPORTED,
                         "%s: Fortran-ordered arrays are not supported; save "
                         "a C-ordered copy (numpy.ascontiguousarray)",
                         path);

    /* Bound the size by what the stream holds before allocating anything.
     * Zero-sized dims do not excuse absurd other dims: code downstream
     * multiplies them too. */
    int64_t numel;
    if (tsr_shape_numel_checked(h.rank, h.dims, dtype, "the array", &numel) != TSR_OK) {
        tsr_error_prefix("%s: the shape in the header is absurdly large: ", path);
        return TSR_ERR_PARSE;
    }
    uint64_t bytes = (uint64_t)numel * tsr_dtype_size(dtype);
    if (avail != UINT64_MAX) {
        uint64_t start = prefix_len + header_len;
        uint64_t data_len = avail > start ? avail - start : 0;
        if (data_len < bytes)
            return tsr_error(TSR_ERR_PARSE,
                             "%s: file is truncated: the header promises %llu bytes of data, the "
                             "file holds %llu",
                             path, (unsigned long long)bytes, (unsigned long long)data_len);
        if (data_len > bytes)
            return tsr_error(
                TSR_ERR_PARSE, "%s: %llu bytes of extra data after the %llu the header promises",
                path, (unsigned long long)(data_len - bytes), (unsigned long long)bytes);
    }
    if (bytes > SIZE_MAX / 2)
        return tsr_error(TSR_ERR_PARSE, "%s: the shape in the header is absurdly large", path);

    void *data = NULL;
    if (avail == UINT64_MAX) {
        st = read_growing(f, path, (size_t)bytes, &data);
        if (st != TSR_OK)
            return st;
    } else if (!(data = tsr_malloc(bytes ? (size_t)bytes : 1))) {
        tsr_error_prefix("%s: ", path);
        return TSR_ERR_OUT_OF_MEMORY;
    } else {
        st = read_exact(f, path, data, (size_t)bytes, "data");
    }
    if (st == TSR_OK && fgetc(f) != EOF)
        st = tsr_error(TSR_ERR_PARSE, "%s: extra data after the %llu bytes the header promises",
                       path, (unsigned long long)bytes);
    if (st == TSR_OK && dtype == TSR_BOOL)
        for (size_t i = 0; i < (size_t)bytes; i++)
            if (((unsigned char *)data)[i] > 1) {
                st = tsr_error(TSR_ERR_PARSE, "%s: bool element %zu holds %d, not 0 or 1", path, i,
                               ((unsigned char *)data)[i]);
                break;
            }
    if (st != TSR_OK) {
        free(data);
        return st;
    }
    memset(out, 0, sizeof *out);
    out->dtype = dtype;
    out->rank = h.rank;
    memcpy(out->dims, h.dims, sizeof(int64_t) * (size_t)h.rank);
    *data_out = data;
    return TSR_OK;
}

tsr_status tsr_npy_read(const char *path, tsr_tensor *tensor_out)
{
    if (!path || !tensor_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_npy_read: NULL argument");
    memset(tensor_out, 0, sizeof *tensor_out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    bool sized = fstat(fileno(f), &sb) == 0;
    if (sized && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return tsr_error(TSR_ERR_IO, "%s: is a directory, not a .npy file", path);
    }
    uint64_t avail = sized && S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : UINT64_MAX;
    tsr_tensor t;
    void *data = NULL;
    tsr_status st = npy_read_file(f, path, avail, &t, &data);
    fclose(f);
    if (st != TSR_OK)
        return st;
    t.data = data;
    *tensor_out = t;
    return TSR_OK;
}

tsr_status tsr_npy_read_buffer(const void *data, size_t size, const char *name,
                               tsr_tensor *tensor_out)
{
    if (!data || !name || !tensor_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_npy_read_buffer: NULL argument");
    memset(tensor_out, 0, sizeof *tensor_out);
    if (size == 0)
        return tsr_error(TSR_ERR_PARSE, "%s: not a .npy file (it is empty)", name);
    /* A stream over the bytes lets one parser serve files and buffers
     * (members of .npz archives); fmemopen never writes in "rb" mode. */
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f)
        return tsr_error(TSR_ERR_IO, "%s: cannot open the buffer: %s", name, strerror(errno));
    tsr_tensor t;
    void *out = NULL;
    tsr_status st = npy_read_file(f, name, (uint64_t)size, &t, &out);
    fclose(f);
    if (st != TSR_OK)
        return st;
    t.data = out;
    *tensor_out = t;
    return TSR_OK;
}

/* ------------------------------------------------------------- write */

tsr_status tsr_npy_encode_header(const tsr_tensor *t, const char *path, void *header_out,
                                 size_t *size_out)
{
    const char *descr = npy_descr_of(t->dtype);
    if (!descr)
        return tsr_error(TSR_ERR_UNSUPPORTED, "%s: cannot write dtype %s to .npy", path,
                         tsr_dtype_name(t->dtype));
    if (t->rank < 0 || t->rank > TSR_MAX_RANK)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "%s: tensor rank %d is out of range", path,
                         t->rank);
    for (int d = 0; d < t->rank; d++)
        if (t->dims[d] < 0)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "%s: tensor dim %d is negative (%lld)", path,
                             d, (long long)t->dims[d]);
    size_t bytes = tsr_tensor_bytes(t);
    if (bytes && !t->data)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "%s: tensor has no data", path);

    /* numpy pads the header so the data starts on a 64-byte boundary. */
    char header[512];
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     descr);
    for (int d = 0; d < t->rank; d++)
        n += snprintf(header + n, sizeof header - (size_t)n, "%s%lld", d ? ", " : "",
                      (long long)t->dims[d]);
    n += snprintf(header + n, sizeof header - (size_t)n, "%s), }", t->rank == 1 ? "," : "");
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    memset(header + n, ' ', padded - total);
    header[padded - 10 - 1] = '\n';
    size_t header_len = padded - 10;
    unsigned char *out = header_out;
    memcpy(out, npy_magic, 6);
    out[6] = 1;
    out[7] = 0;
    out[8] = (unsigned char)(header_len & 0xff);
    out[9] = (unsigned char)(header_len >> 8);
    memcpy(out + 10, header, header_len);
    *size_out = padded;
    return TSR_OK;
}

tsr_status tsr_npy_write(const char *path, const tsr_tensor *t)
{
    if (!path || !t || !*path)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_npy_write: NULL argument or empty path");
    TSR_CHECK(tsr_tensor_require_host(t, path));
    unsigned char header[TSR_NPY_HEADER_MAX];
    size_t header_len;
    TSR_CHECK(tsr_npy_encode_header(t, path, header, &header_len));
    const void *parts[2] = {header, t->data};
    const size_t sizes[2] = {header_len, tsr_tensor_bytes(t)};
    return tsr_write_file_atomic(path, 2, parts, sizes);
}

/* IDX files, the format of MNIST and Fashion-MNIST: two zero bytes, a type
 * byte, the number of dims, each dim as a big-endian uint32, then the
 * elements, big-endian. Debian ships them gzipped; zlib reads both. */
#include "cli.h"
#include "data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Files come from users: a hostile size field must not make us allocate
 * much before the data is there, so reading grows the buffer as bytes
 * arrive instead of trusting any header. */
int cli_read_file(const char *path, unsigned char **data_out, size_t *size_out)
{
    *data_out = NULL;
    *size_out = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return cli_fail("%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    gzbuffer(f, 1 << 16);
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    int rc = buf ? CLI_OK : cli_fail("out of memory reading %s", path);
    while (rc == CLI_OK) {
        if (n == cap) {
            unsigned char *bigger = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!bigger) {
                rc = cli_fail("out of memory reading %s (%zu bytes so far)", path, n);
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t want = cap - n < (1u << 30) ? cap - n : (1u << 30);
        int got = gzread(f, buf + n, (unsigned)want);
        if (got < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            rc = cli_fail("%s: read error: %s", path, err == Z_ERRNO ? strerror(errno) : msg);
            break;
        }
        n += (size_t)got;
        if (got == 0)
            break;
    }
    if (rc == CLI_OK) {
        /* zlib reports a gzip stream cut short only here, after the data
         * it could decode was handed out. */
        int err;
        const char *msg = gzerror(f, &err);
        if (err == Z_BUF_ERROR)
            rc = cli_fail("%s: the compressed file is truncated (unexpected end of the gzip "
                          "stream after %zu bytes of data)",
                          path, n);
        else if (err != Z_OK)
            rc = cli_fail("%s: read error: %s", path, msg);
    }
    int close_rc = gzclose_r(f);
    if (rc == CLI_OK && close_rc != Z_OK)
        rc = cli_fail("%s: the compressed file is corrupt or truncated", path);
    if (rc != CLI_OK) {
        free(buf);
        return rc;
    }
    *data_out = buf;
    *size_out = n;
    return CLI_OK;
}

typedef struct {
    unsigned char code;
    const char *name;
    int size;
    tsr_dtype dtype;
} idx_type;

static const idx_type idx_types[] = {
    {0x08, "ubyte", 1, TSR_UINT8},   {0x09, "sbyte", 1, TSR_INT8},
    {0x0B, "short", 2, TSR_INT32},   {0x0C, "int", 4, TSR_INT32},
    {0x0D, "float", 4, TSR_FLOAT32}, {0x0E, "double", 8, TSR_FLOAT64},
};

static uint64_t be_load(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int k = 0; k < n; k++)
        v = v << 8 | p[k];
    return v;
}

/* Converts n big-endian elements of `type` at `src` into `out`'s dtype. */
static void idx_convert(const idx_type *type, const unsigned char *src, int64_t n, void *out)
{
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = src + i * type->size;
        uint64_t bits = be_load(p, type->size);
        switch (type->code) {
        case 0x08: ((uint8_t *)out)[i] = (uint8_t)bits; break;
        case 0x09: ((int8_t *)out)[i] = (int8_t)bits; break;
        case 0x0B: ((int32_t *)out)[i] = (int16_t)bits; break;
        case 0x0C: ((int32_t *)out)[i] = (int32_t)(uint32_t)bits; break;
        case 0x0D: {
            uint32_t b = (uint32_t)bits;
            memcpy((float *)out + i, &b, 4);
            break;
        }
        default: memcpy((double *)out + i, &bits, 8); break;
        }
    }
}

int cli_idx_read(const char *path, tsr_tensor *out)
{
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t size;
    int rc = cli_read_file(path, &buf, &size);
    if (rc != CLI_OK)
        return rc;
    const idx_type *type = NULL;
    int rank = size >= 4 ? buf[3] : 0;
    if (size < 4 || buf[0] != 0 || buf[1] != 0) {
        rc = cli_fail("%s: not an IDX file (bad magic: it must start with two zero bytes, a "
                      "type byte and the number of dims)",
                      path);
        goto done;
    }
    for (size_t k = 0; k < sizeof idx_types / sizeof idx_types[0]; k++)
        if (idx_types[k].code == buf[2])
            type = &idx_types[k];
    if (!type) {
        rc = cli_fail("%s: not an IDX file (bad magic: unknown element type 0x%02x)", path, buf[2]);
        goto done;
    }
    if (rank < 1 || rank > TSR_MAX_RANK) {
        rc = cli_fail("%s: IDX files of %d dims are not supported (1 to %d are)", path, rank,
                      TSR_MAX_RANK);
        goto done;
    }
    size_t header = 4 + 4 * (size_t)rank;
    if (size < header) {
        rc = cli_fail("%s: the file is truncated (%zu bytes, the header alone needs %zu)", path,
                      size, header);
        goto done;
    }
    uint64_t count = 1;
    for (int d = 0; d < rank; d++)
        out->dims[d] = (int64_t)be_load(buf + 4 + 4 * d, 4);
    /* An empty axis would leave the other dims unchecked, and code that
     * loops over them (per-sample sizes, reductions) multiplies them. */
    for (int d = 0; d < rank; d++)
        if (out->dims[d] == 0) {
            char dims[256];
            cli_format_dims(rank, out->dims, dims, sizeof dims);
            rc = cli_fail("%s: dim %d of the header's shape %s is 0: the file holds no elements",
                          path, d, dims);
            goto done;
        }
    for (int d = 0; d < rank; d++) {
        count *= (uint64_t)out->dims[d]; /* dims < 2^32 and count <= size: no wrap */
        if (count > (uint64_t)size) {
            count = UINT64_MAX;
            break;
        }
    }
    uint64_t data = size - header, need = count == UINT64_MAX ? count : count * type->size;
    if (need != data) {
        char dims[256];
        cli_format_dims(rank, out->dims, dims, sizeof dims);
        if (need > data)
            rc = cli_fail("%s: the file is truncated: the header promises %s %s elements, the "
                          "file holds %llu bytes of data",
                          path, dims, type->name, (unsigned long long)data);
        else
            rc = cli_fail("%s: %llu bytes of extra data after the %s %s elements the header "
                          "promises",
                          path, (unsigned long long)(data - need), dims, type->name);
        goto done;
    }
    out->dtype = type->dtype;
    out->rank = rank;
    size_t bytes = tsr_tensor_bytes(out);
    out->data = malloc(bytes ? bytes : 1);
    if (!out->data) {
        rc = cli_fail("%s: out of memory for %zu bytes", path, bytes);
        goto done;
    }
    idx_convert(type, buf + header, (int64_t)count, out->data);
done:
    free(buf);
    return rc;
}

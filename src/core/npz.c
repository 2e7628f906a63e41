/* .npz archives: zip files whose members are .npy files. numpy.savez
 * stores them, numpy.savez_compressed deflates them, and both write zip64
 * records (numpy forces them), so the central directory, not the local
 * headers, is what this reader trusts for sizes and offsets. The writer
 * stores members uncompressed, in a classic zip (zip64 only where sizes
 * need it). */
#include "core/npz.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_END64_LOCATOR 0x07064b50u

/* Deflate cannot expand data more than about 1032 times; a member that
 * claims more is corrupt, and must not make us allocate for the claim. */
#define MAX_DEFLATE_RATIO 1100u

typedef struct {
    const char *path;
    const unsigned char *data;
    size_t size;
} zip_file;

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

/* True when [offset, offset + n) lies inside the file. */
static bool in_file(const zip_file *z, uint64_t offset, uint64_t n)
{
    return offset <= z->size && n <= z->size - offset;
}

typedef struct {
    char name[256];
    unsigned method, flags;
    uint32_t crc;
    uint64_t compressed, uncompressed, local_offset;
} zip_member;

static tsr_status corrupt(const zip_file *z, const char *what)
{
    return tsr_error(TSR_ERR_PARSE, "%s: not a valid .npz file (a zip archive): %s", z->path, what);
}

/* The central directory's offset and number of entries, from the end
 * record (and its zip64 version when the classic fields are saturated). */
static tsr_status find_directory(const zip_file *z, uint64_t *offset_out, uint64_t *count_out)
{
    if (z->size < 22)
        return corrupt(z, "too short to hold the end-of-archive record");
    size_t lowest = z->size > 22 + 65535 ? z->size - 22 - 65535 : 0;
    size_t end = SIZE_MAX;
    for (size_t at = z->size - 22 + 1; at-- > lowest;)
        if (le(z->data + at, 4) == SIG_END) {
            end = at;
            break;
        }
    if (end == SIZE_MAX)
        return corrupt(z, "no end-of-archive record (truncated, or not a zip file)");
    const unsigned char *e = z->data + end;
    uint64_t count = le(e + 10, 2), offset = le(e + 16, 4);
    if (le(e + 4, 2) != 0 || le(e + 6, 2) != 0)
        return corrupt(z, "multi-part archives are not supported");
    if (end >= 20 && le(e - 20, 4) == SIG_END64_LOCATOR) {
        uint64_t at = le(e - 20 + 8, 8);
        if (!in_file(z, at, 56) || le(z->data + at, 4) != SIG_END64)
            return corrupt(z, "the zip64 end record is missing or outside the file");
        count = le(z->data + at + 32, 8);
        offset = le(z->data + at + 48, 8);
    }
    if (!in_file(z, offset, 0))
        return corrupt(z, "the central directory lies outside the file (truncated?)");
    *offset_out = offset;
    *count_out = count;
    return TSR_OK;
}

/* Reads one central directory entry at *at and advances past it. */
static tsr_status read_member(const zip_file *z, uint64_t *at, zip_member *m)
{
    if (!in_file(z, *at, 46) || le(z->data + *at, 4) != SIG_CENTRAL)
        return corrupt(z, "a central directory entry is damaged or outside the file");
    const unsigned char *c = z->data + *at;
    uint64_t name_len = le(c + 28, 2), extra_len = le(c + 30, 2), comment_len = le(c + 32, 2);
    if (!in_file(z, *at + 46, name_len + extra_len + comment_len))
        return corrupt(z, "a central directory entry runs past the end of the file");
    m->flags = (unsigned)le(c + 8, 2);
    m->method = (unsigned)le(c + 10, 2);
    m->crc = (uint32_t)le(c + 16, 4);
    m->compressed = le(c + 20, 4);
    m->uncompressed = le(c + 24, 4);
    m->local_offset = le(c + 42, 4);
    size_t n = name_len < sizeof m->name ? (size_t)name_len : sizeof m->name - 1;
    memcpy(m->name, c + 46, n);
    m->name[n] = '\0';
    /* zip64: the saturated fields follow in the extra field, in order. */
    const unsigned char *x = c + 46 + name_len, *x_end = x + extra_len;
    while (x + 4 <= x_end) {
        uint64_t id = le(x, 2), len = le(x + 2, 2);
        const unsigned char *v = x + 4;
        if (len > (uint64_t)(x_end - v))
            return corrupt(z, "a member's extra field is damaged");
        if (id == 1) {
            uint64_t *fields[3] = {&m->uncompressed, &m->compressed, &m->local_offset};
            for (int k = 0; k < 3; k++) {
                if (*fields[k] != 0xFFFFFFFFu)
                    continue;
                if (8 > (uint64_t)(x + 4 + len - v))
                    return corrupt(z, "a member's zip64 field is too short");
                *fields[k] = le(v, 8);
                v += 8;
            }
        }
        x += 4 + len;
    }
    *at += 46 + name_len + extra_len + comment_len;
    return TSR_OK;
}

/* The member's bytes, inflated if needed and checked against its CRC. */
static tsr_status member_bytes(const zip_file *z, const zip_member *m, unsigned char **out)
{
    *out = NULL;
    if (m->flags & 1)
        return tsr_error(TSR_ERR_PARSE, "%s: member '%s' is encrypted", z->path, m->name);
    if (m->method != 0 && m->method != 8)
        return tsr_error(TSR_ERR_PARSE,
                         "%s: member '%s' uses compression method %u; only stored (0) and "
                         "deflated (8) members are supported",
                         z->path, m->name, m->method);
    if (!in_file(z, m->local_offset, 30) || le(z->data + m->local_offset, 4) != SIG_LOCAL)
        return corrupt(z, "a member's local header is damaged or outside the file");
    const unsigned char *l = z->data + m->local_offset;
    uint64_t start = m->local_offset + 30 + le(l + 26, 2) + le(l + 28, 2);
    if (!in_file(z, start, m->compressed))
        return tsr_error(TSR_ERR_PARSE, "%s: member '%s' is truncated (%llu bytes promised)",
                         z->path, m->name, (unsigned long long)m->compressed);
    if (m->method == 0 && m->compressed != m->uncompressed)
        return corrupt(z, "a stored member's sizes disagree");
    if (m->uncompressed / MAX_DEFLATE_RATIO > m->compressed || m->uncompressed > SIZE_MAX / 2)
        return corrupt(z, "a member claims an impossible uncompressed size");
    unsigned char *buf = tsr_malloc(m->uncompressed ? (size_t)m->uncompressed : 1);
    if (!buf)
        return tsr_error(TSR_ERR_OUT_OF_MEMORY, "%s: out of memory for member '%s' (%llu bytes)",
                         z->path, m->name, (unsigned long long)m->uncompressed);
    tsr_status rc = TSR_OK;
    if (m->method == 0) {
        memcpy(buf, z->data + start, (size_t)m->uncompressed);
    } else {
        z_stream s;
        memset(&s, 0, sizeof s);
        if (inflateInit2(&s, -MAX_WBITS) != Z_OK) {
            free(buf);
            return tsr_error(TSR_ERR_INTERNAL, "%s: cannot start zlib's inflate", z->path);
        }
        const unsigned char *in = z->data + start;
        uint64_t in_left = m->compressed, out_left = m->uncompressed;
        s.next_out = buf;
        int zrc = Z_OK;
        while (zrc == Z_OK) {
            /* zlib counts in unsigned int: feed big members in slices. */
            if (s.avail_in == 0 && in_left) {
                s.next_in = (unsigned char *)in;
                s.avail_in = in_left > UINT_MAX ? UINT_MAX : (unsigned)in_left;
                in += s.avail_in;
                in_left -= s.avail_in;
            }
            if (s.avail_out == 0 && out_left) {
                s.avail_out = out_left > UINT_MAX ? UINT_MAX : (unsigned)out_left;
                out_left -= s.avail_out;
            }
            zrc = inflate(&s, Z_NO_FLUSH);
            if (zrc == Z_BUF_ERROR && (in_left || out_left))
                zrc = Z_OK;
        }
        bool complete = zrc == Z_STREAM_END && s.total_out == m->uncompressed;
        inflateEnd(&s);
        if (!complete)
            rc = tsr_error(TSR_ERR_PARSE,
                           "%s: member '%s' does not inflate to its %llu bytes (corrupt or "
                           "truncated)",
                           z->path, m->name, (unsigned long long)m->uncompressed);
    }
    if (rc == TSR_OK) {
        uLong crc = crc32(0L, Z_NULL, 0);
        for (uint64_t done = 0; done < m->uncompressed;) {
            uint64_t n = m->uncompressed - done > UINT_MAX ? UINT_MAX : m->uncompressed - done;
            crc = crc32(crc, buf + done, (uInt)n);
            done += n;
        }
        if ((uint32_t)crc != m->crc)
            rc = tsr_error(TSR_ERR_PARSE, "%s: member '%s' is corrupt (CRC-32 mismatch)", z->path,
                           m->name);
    }
    if (rc != TSR_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return TSR_OK;
}

tsr_status tsr_npz_read_buffer(const void *bytes, size_t size, const char *path, int n,
                               const char *const *names, const bool *optional, tsr_tensor *out)
{
    memset(out, 0, sizeof *out * (size_t)n);
    zip_file z = {path, bytes, size};
    uint64_t at = 0, count = 0;
    char listed[512] = "";
    size_t listed_len = 0;
    bool *seen = tsr_calloc((size_t)n, sizeof *seen);
    if (!seen)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status rc = find_directory(&z, &at, &count);
    for (uint64_t k = 0; k < count && rc == TSR_OK; k++) {
        zip_member m;
        if ((rc = read_member(&z, &at, &m)) != TSR_OK)
            break;
        size_t len = strlen(m.name);
        if (listed_len < sizeof listed)
            listed_len +=
                (size_t)snprintf(listed + listed_len, sizeof listed - listed_len, "%s'%.*s'",
                                 k ? ", " : "", len > 4 ? (int)len - 4 : (int)len, m.name);
        for (int i = 0; i < n; i++) {
            if (len != strlen(names[i]) + 4 || strncmp(m.name, names[i], len - 4) != 0 ||
                strcmp(m.name + len - 4, ".npy") != 0)
                continue;
            if (seen[i]) {
                rc = tsr_error(TSR_ERR_PARSE, "%s: array '%s' appears twice", path, names[i]);
                break;
            }
            unsigned char *member;
            if ((rc = member_bytes(&z, &m, &member)) != TSR_OK)
                break;
            char what[1024];
            snprintf(what, sizeof what, "%s: array '%s'", path, names[i]);
            rc = tsr_npy_read_buffer(member, (size_t)m.uncompressed, what, &out[i]);
            seen[i] = rc == TSR_OK;
            free(member);
        }
    }
    for (int i = 0; i < n && rc == TSR_OK; i++)
        if (!seen[i] && !(optional && optional[i]))
            rc = tsr_error(TSR_ERR_NOT_FOUND, "%s: no array named '%s' (the archive holds %s)",
                           path, names[i], listed_len ? listed : "nothing");
    free(seen);
    if (rc != TSR_OK)
        for (int i = 0; i < n; i++) {
            free(out[i].data);
            memset(&out[i], 0, sizeof out[i]);
        }
    return rc;
}

tsr_status tsr_npz_read(const char *path, int n, const char *const *names, const bool *optional,
                        tsr_tensor *out)
{
    memset(out, 0, sizeof *out * (size_t)n);
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat info;
    if (fstat(fileno(f), &info) != 0 || !S_ISREG(info.st_mode) ||
        (uint64_t)info.st_size > SIZE_MAX / 2) {
        fclose(f);
        return tsr_error(TSR_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)info.st_size;
    unsigned char *data = tsr_malloc(size);
    tsr_status rc = data ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    if (rc == TSR_OK && fread(data, 1, size, f) != size)
        rc = tsr_error(TSR_ERR_IO, "%s: read error: %s", path,
                       ferror(f) ? strerror(errno) : "the file shrank while being read");
    fclose(f);
    if (rc == TSR_OK)
        rc = tsr_npz_read_buffer(data, size, path, n, names, optional, out);
    free(data);
    return rc;
}

/* ------------------------------------------------------------- writer */

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int k = 0; k < n; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

tsr_status tsr_npz_write(const char *path, int n, const char *const *names,
                         const tsr_tensor *tensors)
{
    if (!path || !*path || n < 0 || n > 1000 || (n > 0 && (!names || !tensors)))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_npz_write: bad arguments");
    /* Per member: a local header and name, the .npy header, the data; then
     * one central entry per member and the end record. */
    enum { LOCAL = 30, CENTRAL = 46, END = 22 };
    size_t n_parts = (size_t)n * 3 + 2;
    const void **parts = tsr_calloc(n_parts, sizeof *parts);
    size_t *sizes = tsr_calloc(n_parts, sizeof *sizes);
    unsigned char *headers = tsr_calloc((size_t)n, LOCAL + 256 + TSR_NPY_HEADER_MAX);
    unsigned char *central = tsr_calloc((size_t)n + 1, CENTRAL + 256);
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!parts || !sizes || !headers || !central)
        goto cleanup;
    uint64_t offset = 0;
    size_t central_len = 0;
    for (int i = 0; i < n; i++) {
        size_t name_len = strlen(names[i]) + 4;
        if (name_len > 200) {
            st = tsr_error(TSR_ERR_INVALID_ARGUMENT, "%s: array name '%s' is too long", path,
                           names[i]);
            goto cleanup;
        }
        unsigned char *h = headers + (size_t)i * (LOCAL + 256 + TSR_NPY_HEADER_MAX);
        unsigned char *npy = h + LOCAL + name_len;
        size_t npy_len;
        if ((st = tsr_npy_encode_header(&tensors[i], path, npy, &npy_len)) != TSR_OK)
            goto cleanup;
        size_t bytes = tsr_tensor_bytes(&tensors[i]);
        uint64_t member = (uint64_t)npy_len + bytes;
        if (member >= 0xFFFFFFFFu || offset + LOCAL + name_len + member >= 0xFFFFFFFFu) {
            st = tsr_error(TSR_ERR_UNSUPPORTED,
                           "%s: the archive would pass 4 GiB, which this writer does not do "
                           "(zip64)",
                           path);
            goto cleanup;
        }
        uLong crc = crc32(0L, Z_NULL, 0);
        crc = crc32(crc, npy, (uInt)npy_len);
        if (bytes)
            crc = crc32(crc, tensors[i].data, (uInt)bytes);
        put_le(h, 0x04034b50u, 4);
        put_le(h + 4, 20, 2); /* version needed: 2.0 */
        put_le(h + 14, crc, 4);
        put_le(h + 18, member, 4);
        put_le(h + 22, member, 4);
        put_le(h + 26, name_len, 2);
        memcpy(h + LOCAL, names[i], name_len - 4); /* no NUL: the .npy header follows */
        memcpy(h + LOCAL + name_len - 4, ".npy", 4);
        unsigned char *c = central + central_len;
        put_le(c, 0x02014b50u, 4);
        put_le(c + 4, 20, 2);
        put_le(c + 6, 20, 2);
        put_le(c + 16, crc, 4);
        put_le(c + 20, member, 4);
        put_le(c + 24, member, 4);
        put_le(c + 28, name_len, 2);
        put_le(c + 42, offset, 4);
        memcpy(c + CENTRAL, h + LOCAL, name_len);
        central_len += CENTRAL + name_len;
        parts[3 * i] = h;
        sizes[3 * i] = LOCAL + name_len;
        parts[3 * i + 1] = npy;
        sizes[3 * i + 1] = npy_len;
        parts[3 * i + 2] = tensors[i].data;
        sizes[3 * i + 2] = bytes;
        offset += LOCAL + name_len + member;
    }
    unsigned char end[END] = {0};
    put_le(end, 0x06054b50u, 4);
    put_le(end + 8, (uint64_t)n, 2);
    put_le(end + 10, (uint64_t)n, 2);
    put_le(end + 12, central_len, 4);
    put_le(end + 16, offset, 4);
    parts[3 * n] = central;
    sizes[3 * n] = central_len;
    parts[3 * n + 1] = end;
    sizes[3 * n + 1] = END;
    st = tsr_write_file_atomic(path, (int)n_parts, parts, sizes);
cleanup:
    free(parts);
    free(sizes);
    free(headers);
    free(central);
    return st;
}

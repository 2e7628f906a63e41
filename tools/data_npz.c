/* .npz archives: zip files whose members are .npy files. numpy.savez
 * stores them, numpy.savez_compressed deflates them, and both write zip64
 * records (numpy forces them), so the central directory, not the local
 * headers, is what this reader trusts for sizes and offsets. */
#include "cli.h"
#include "data.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
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

static int corrupt(const zip_file *z, const char *what)
{
    return cli_fail("%s: not a valid .npz file (a zip archive): %s", z->path, what);
}

/* The central directory's offset and number of entries, from the end
 * record (and its zip64 version when the classic fields are saturated). */
static int find_directory(const zip_file *z, uint64_t *offset_out, uint64_t *count_out)
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
    return CLI_OK;
}

/* Reads one central directory entry at *at and advances past it. */
static int read_member(const zip_file *z, uint64_t *at, zip_member *m)
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
    return CLI_OK;
}

/* The member's bytes, inflated if needed and checked against its CRC. */
static int member_bytes(const zip_file *z, const zip_member *m, unsigned char **out)
{
    *out = NULL;
    if (m->flags & 1)
        return cli_fail("%s: member '%s' is encrypted", z->path, m->name);
    if (m->method != 0 && m->method != 8)
        return cli_fail("%s: member '%s' uses compression method %u; only stored (0) and "
                        "deflated (8) members are supported",
                        z->path, m->name, m->method);
    if (!in_file(z, m->local_offset, 30) || le(z->data + m->local_offset, 4) != SIG_LOCAL)
        return corrupt(z, "a member's local header is damaged or outside the file");
    const unsigned char *l = z->data + m->local_offset;
    uint64_t start = m->local_offset + 30 + le(l + 26, 2) + le(l + 28, 2);
    if (!in_file(z, start, m->compressed))
        return cli_fail("%s: member '%s' is truncated (%llu bytes promised)", z->path, m->name,
                        (unsigned long long)m->compressed);
    if (m->method == 0 && m->compressed != m->uncompressed)
        return corrupt(z, "a stored member's sizes disagree");
    if (m->uncompressed / MAX_DEFLATE_RATIO > m->compressed || m->uncompressed > SIZE_MAX / 2)
        return corrupt(z, "a member claims an impossible uncompressed size");
    unsigned char *buf = malloc(m->uncompressed ? (size_t)m->uncompressed : 1);
    if (!buf)
        return cli_fail("%s: out of memory for member '%s' (%llu bytes)", z->path, m->name,
                        (unsigned long long)m->uncompressed);
    int rc = CLI_OK;
    if (m->method == 0) {
        memcpy(buf, z->data + start, (size_t)m->uncompressed);
    } else {
        z_stream s;
        memset(&s, 0, sizeof s);
        if (inflateInit2(&s, -MAX_WBITS) != Z_OK) {
            free(buf);
            return cli_fail("%s: cannot start zlib's inflate", z->path);
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
            rc = cli_fail("%s: member '%s' does not inflate to its %llu bytes (corrupt or "
                          "truncated)",
                          z->path, m->name, (unsigned long long)m->uncompressed);
    }
    if (rc == CLI_OK) {
        uLong crc = crc32(0L, Z_NULL, 0);
        for (uint64_t done = 0; done < m->uncompressed;) {
            uint64_t n = m->uncompressed - done > UINT_MAX ? UINT_MAX : m->uncompressed - done;
            crc = crc32(crc, buf + done, (uInt)n);
            done += n;
        }
        if ((uint32_t)crc != m->crc)
            rc = cli_fail("%s: member '%s' is corrupt (CRC-32 mismatch)", z->path, m->name);
    }
    if (rc != CLI_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return CLI_OK;
}

int cli_npz_read(const char *path, int n, const char *const *names, tsr_tensor *out)
{
    memset(out, 0, sizeof *out * (size_t)n);
    unsigned char *data;
    size_t size;
    int rc = cli_read_file(path, &data, &size);
    if (rc != CLI_OK)
        return rc;
    zip_file z = {path, data, size};
    uint64_t at = 0, count = 0;
    char listed[512] = "";
    size_t listed_len = 0;
    if ((rc = find_directory(&z, &at, &count)) != CLI_OK)
        goto done;
    for (uint64_t k = 0; k < count && rc == CLI_OK; k++) {
        zip_member m;
        if ((rc = read_member(&z, &at, &m)) != CLI_OK)
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
            if (out[i].data) {
                rc = cli_fail("%s: array '%s' appears twice", path, names[i]);
                break;
            }
            unsigned char *bytes;
            if ((rc = member_bytes(&z, &m, &bytes)) != CLI_OK)
                break;
            char what[1024];
            snprintf(what, sizeof what, "%s: array '%s'", path, names[i]);
            if (tsr_npy_read_buffer(bytes, (size_t)m.uncompressed, what, &out[i]) != TSR_OK)
                rc = cli_fail_status(NULL);
            free(bytes);
        }
    }
    for (int i = 0; i < n && rc == CLI_OK; i++)
        if (!out[i].data)
            rc = cli_fail("%s: no array named '%s' (the archive holds %s)", path, names[i],
                          listed_len ? listed : "nothing");
done:
    if (rc != CLI_OK)
        for (int i = 0; i < n; i++) {
            free(out[i].data);
            out[i].data = NULL;
        }
    free(data);
    return rc;
}

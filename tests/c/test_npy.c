/* The .npy reader and writer: round trips of every dtype and odd shapes,
 * the exact header numpy writes, and malformed files that must fail with a
 * message naming the file. */
#include "core/core.h"
#include "harness.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void path_in_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static size_t read_bytes(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* A .npy file made by hand: version, header text (padded here unless
 * `raw`), then `data_bytes` bytes of a counting pattern. */
static void write_npy(const char *path, int major, const char *header, size_t data_bytes, bool raw)
{
    unsigned char buf[8192];
    size_t prefix = major == 1 ? 10 : 12;
    size_t hlen = strlen(header);
    size_t total = raw ? prefix + hlen : (prefix + hlen + 1 + 63) / 64 * 64;
    size_t padded_len = total - prefix;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    if (major == 1) {
        buf[8] = (unsigned char)(padded_len & 0xff);
        buf[9] = (unsigned char)(padded_len >> 8);
    } else {
        for (int i = 0; i < 4; i++)
            buf[8 + i] = (unsigned char)(padded_len >> (8 * i));
    }
    memcpy(buf + prefix, header, hlen);
    if (!raw) {
        memset(buf + prefix + hlen, ' ', padded_len - hlen);
        buf[total - 1] = '\n';
    }
    for (size_t i = 0; i < data_bytes && total + i < sizeof buf; i++)
        buf[total + i] = (unsigned char)(i % 2 ? 0 : i % 251 % 2);
    write_bytes(path, buf, total + data_bytes);
}

static void test_round_trip(tsr_dtype dtype, int rank, const int64_t *dims)
{
    char path[512];
    path_in_dir(path, sizeof path, "rt.npy");
    tsr_tensor t = {.dtype = dtype, .rank = rank};
    if (rank > 0)
        memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    size_t bytes = tsr_tensor_bytes(&t);
    unsigned char *data = malloc(bytes + 1);
    for (size_t i = 0; i < bytes; i++)
        data[i] = dtype == TSR_BOOL ? (unsigned char)(i % 3 == 0) : (unsigned char)(i * 37 + 11);
    t.data = data;
    CHECK_OK(tsr_npy_write(path, &t));
    tsr_tensor back;
    CHECK_OK(tsr_npy_read(path, &back));
    CHECK(back.dtype == dtype);
    CHECK(back.rank == rank);
    for (int d = 0; d < rank && d < back.rank; d++)
        CHECK(back.dims[d] == dims[d]);
    CHECK(back.data != NULL);
    if (back.data && back.rank == rank)
        CHECK(memcmp(back.data, data, bytes) == 0);
    free(back.data);
    free(data);

    /* The file is exactly what numpy writes: header padded to 64 bytes. */
    unsigned char file[1 << 16];
    size_t n = read_bytes(path, file, sizeof file);
    CHECK(n >= 64 && (n - bytes) % 64 == 0);
    CHECK(memcmp(file, "\x93NUMPY\x01\x00", 8) == 0);
    size_t hlen = (size_t)file[8] | (size_t)file[9] << 8;
    CHECK(10 + hlen == n - bytes);
    CHECK(file[10 + hlen - 1] == '\n');
}

static void test_round_trips(void)
{
    const tsr_dtype dtypes[] = {TSR_FLOAT32, TSR_FLOAT64, TSR_INT64, TSR_INT32,
                                TSR_UINT8,   TSR_INT8,    TSR_BOOL};
    const int64_t s1[] = {7}, s2[] = {3, 5}, s3[] = {2, 0, 3}, s4[] = {1}, s5[] = {0};
    const int64_t s8[] = {1, 2, 3, 1, 2, 1, 3, 1};
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        test_round_trip(dtypes[i], 0, NULL);
        test_round_trip(dtypes[i], 1, s1);
        test_round_trip(dtypes[i], 2, s2);
        test_round_trip(dtypes[i], 3, s3);
        test_round_trip(dtypes[i], 1, s4);
        test_round_trip(dtypes[i], 1, s5);
        test_round_trip(dtypes[i], 8, s8);
    }
}

static void test_header_text(void)
{
    char path[512];
    path_in_dir(path, sizeof path, "hdr.npy");
    const int64_t dims[] = {4};
    float v[4] = {1, 2, 3, 4};
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = 1, .data = v};
    memcpy(t.dims, dims, sizeof dims);
    CHECK_OK(tsr_npy_write(path, &t));
    unsigned char file[256];
    size_t n = read_bytes(path, file, sizeof file);
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
    CHECK(n == 128 + 16);
    CHECK(memcmp(file + 10, want, strlen(want)) == 0);
}

/* Headers numpy or other writers may produce, all readable. */
static void test_header_variants(void)
{
    char path[512];
    path_in_dir(path, sizeof path, "var.npy");
    struct {
        int major;
        const char *header;
        int rank;
        int64_t d0, d1;
        size_t bytes;
    } cases[] = {
        {1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3)}", 2, 2, 3, 48},
        {1, "{'shape': (2, 3, ), 'fortran_order': False, 'descr': '<f4', }", 2, 2, 3, 24},
        {1, "{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (5,)}", 1, 5, 0, 40},
        {1, "{'descr':'<f4','fortran_order':False,'shape':()}", 0, 0, 0, 4},
        {1, "{'descr': '=f4', 'fortran_order': False, 'shape': (3L, 1L), }", 2, 3, 1, 12},
        {1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", 1, 3, 0, 12},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", 2, 1, 2, 8},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2), }", 2, 0, 2, 0},
        {1, "{'descr': '|b1', 'fortran_order': False, 'shape': (6,), }", 1, 6, 0, 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_npy(path, cases[i].major, cases[i].header, cases[i].bytes, false);
        tsr_tensor t;
        tsr_status st = tsr_npy_read(path, &t);
        CHECK(st == TSR_OK);
        if (st != TSR_OK) {
            fprintf(stderr, "  case %zu: %s\n", i, tsr_last_error());
            continue;
        }
        CHECK(t.rank == cases[i].rank);
        if (t.rank > 0)
            CHECK(t.dims[0] == cases[i].d0);
        if (t.rank > 1)
            CHECK(t.dims[1] == cases[i].d1);
        CHECK(tsr_tensor_bytes(&t) == cases[i].bytes);
        free(t.data);
    }
}

static void expect_error(const char *path, tsr_status want, const char *needle)
{
    tsr_tensor t = {0};
    tsr_status st = tsr_npy_read(path, &t);
    CHECK(st == want);
    CHECK(t.data == NULL);
    CHECK(strstr(tsr_last_error(), path) != NULL);
    if (needle && !strstr(tsr_last_error(), needle)) {
        CHECK(!"message names the problem");
        fprintf(stderr, "  wanted '%s' in: %s\n", needle, tsr_last_error());
    }
    if (st == TSR_OK)
        free(t.data);
}

static void test_malformed(void)
{
    char path[512];
    path_in_dir(path, sizeof path, "bad.npy");
    const char *f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

    write_bytes(path, "\x93NUMPZ\x01\x00\x10\x00", 10);
    expect_error(path, TSR_ERR_PARSE, "bad magic");
    write_bytes(path, "PK\x03\x04", 4);
    expect_error(path, TSR_ERR_PARSE, "bad magic");
    write_bytes(path, "", 0);
    expect_error(path, TSR_ERR_PARSE, "bad magic");
    write_bytes(path, "\x93NUMPY\x01", 7);
    expect_error(path, TSR_ERR_PARSE, "truncated");
    write_bytes(path, "\x93NUMPY\x01\x00\x40", 9);
    expect_error(path, TSR_ERR_PARSE, "truncated");
    write_bytes(path, "\x93NUMPY\x01\x00\x40\x00{'descr'", 17);
    expect_error(path, TSR_ERR_PARSE, "truncated");
    write_bytes(path, "\x93NUMPY\x04\x00\x40\x00", 10);
    expect_error(path, TSR_ERR_UNSUPPORTED, "version 4.0");
    write_bytes(path, "\x93NUMPY\x02\x00\xff\xff\xff\x7f", 12);
    expect_error(path, TSR_ERR_PARSE, "header length");
    write_bytes(path, "\x93NUMPY\x01\x00\x00\x00", 10);
    expect_error(path, TSR_ERR_PARSE, "empty");

    write_npy(path, 1, f4, 23, false);
    expect_error(path, TSR_ERR_PARSE, "truncated");
    write_npy(path, 1, f4, 0, false);
    expect_error(path, TSR_ERR_PARSE, "truncated");
    write_npy(path, 1, f4, 25, false);
    expect_error(path, TSR_ERR_PARSE, "extra data");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24, false);
    expect_error(path, TSR_ERR_UNSUPPORTED, "Fortran");
    write_npy(path, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", 12, false);
    expect_error(path, TSR_ERR_UNSUPPORTED, "'<f2'");
    write_npy(path, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24, false);
    expect_error(path, TSR_ERR_UNSUPPORTED, "big-endian");
    write_npy(path, 1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16, false);
    expect_error(path, TSR_ERR_UNSUPPORTED, "object");
    write_npy(path, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
              false);
    expect_error(path, TSR_ERR_UNSUPPORTED, "structured");
    write_npy(path, 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", 16, false);
    expect_error(path, TSR_ERR_UNSUPPORTED, "'<c8'");
    write_npy(path, 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (6,), }", 6, false);
    {
        /* A bool byte other than 0 or 1 (the pattern above has none). */
        unsigned char buf[512];
        size_t n = read_bytes(path, buf, sizeof buf);
        buf[n - 1] = 7;
        write_bytes(path, buf, n);
        expect_error(path, TSR_ERR_PARSE, "bool");
    }

    /* Dict syntax. */
    const char *bad_dicts[][2] = {
        {"'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", "expected '{'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", "expected ','"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3)}", "expected ','"},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3)}", "expected ':'"},
        {"{'descr': '<f4', 'fortran_order': False}", "missing key 'shape'"},
        {"{'fortran_order': False, 'shape': (2, 3)}", "missing key 'descr'"},
        {"{'descr': '<f4', 'shape': (2, 3)}", "missing key 'fortran_order'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", "repeated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", "'x'"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}", "True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (6)}", "trailing comma"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 6)}", "non-negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}", "'('"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,, 3)}", "non-negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", "expected ','"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}", "expected ','"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} x", "after the dict"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1)}",
         "more than 8"},
    };
    for (size_t i = 0; i < sizeof bad_dicts / sizeof bad_dicts[0]; i++) {
        write_npy(path, 1, bad_dicts[i][0], 24, false);
        tsr_tensor t = {0};
        tsr_status st = tsr_npy_read(path, &t);
        CHECK(st == TSR_ERR_PARSE || st == TSR_ERR_UNSUPPORTED);
        CHECK(strstr(tsr_last_error(), path) != NULL);
        if (!strstr(tsr_last_error(), bad_dicts[i][1])) {
            CHECK(!"message names the problem");
            fprintf(stderr, "  wanted '%s' in: %s\n", bad_dicts[i][1], tsr_last_error());
        }
    }

    /* Absurd shapes fail before anything of their size is allocated. */
    write_npy(
        path, 1,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4000000000, 4000000000, 4000000000), }",
        16, false);
    expect_error(path, TSR_ERR_PARSE, "absurdly large");
    write_npy(path, 1,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4000000000, 4000000000), }", 0,
              false);
    expect_error(path, TSR_ERR_PARSE, "absurdly large");
    write_npy(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }", 16,
              false);
    expect_error(path, TSR_ERR_PARSE, "truncated");

    /* A NUL inside the header. */
    {
        unsigned char buf[128 + 24] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', "
                                      "'fortran_order': False, 'shape': (2, 3)}";
        memset(buf + 68, ' ', 127 - 68); /* buf[67] stays NUL */
        buf[127] = '\n';
        write_bytes(path, buf, sizeof buf);
        expect_error(path, TSR_ERR_PARSE, "NUL");
    }

    char missing[512];
    path_in_dir(missing, sizeof missing, "no-such-file.npy");
    expect_error(missing, TSR_ERR_IO, "cannot open");
    expect_error(dir, TSR_ERR_IO, "directory");
}

static int count_temp_files(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp-"))
            n++;
    if (d)
        closedir(d);
    return n;
}

static void test_write_failures(void)
{
    char target[512], subdir[512], missing[512];
    path_in_dir(target, sizeof target, "keep.npy");
    path_in_dir(subdir, sizeof subdir, "adir");
    path_in_dir(missing, sizeof missing, "no-such-dir/out.npy");
    float v[3] = {1, 2, 3};
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = v};
    CHECK_OK(tsr_npy_write(target, &t));

    unsigned char before[256], after[256];
    size_t n_before = read_bytes(target, before, sizeof before);

    /* Failures of every kind leave the existing target as it was. */
    tsr_tensor bad = t;
    bad.dtype = TSR_DTYPE_UNDEFINED;
    CHECK(tsr_npy_write(target, &bad) == TSR_ERR_UNSUPPORTED);
    CHECK(strstr(tsr_last_error(), target) != NULL);
    bad = t;
    bad.data = NULL;
    CHECK(tsr_npy_write(target, &bad) == TSR_ERR_INVALID_ARGUMENT);
    bad = t;
    bad.dims[0] = -3;
    CHECK(tsr_npy_write(target, &bad) == TSR_ERR_INVALID_ARGUMENT);
    bad = t;
    bad.rank = TSR_MAX_RANK + 1;
    CHECK(tsr_npy_write(target, &bad) == TSR_ERR_INVALID_ARGUMENT);
    size_t n_after = read_bytes(target, after, sizeof after);
    CHECK(n_before == n_after && memcmp(before, after, n_before) == 0);

    /* Renaming over a directory fails after the data was written: the
     * temporary file must be gone. */
    CHECK(mkdir(subdir, 0755) == 0);
    CHECK(tsr_npy_write(subdir, &t) == TSR_ERR_IO);
    CHECK(strstr(tsr_last_error(), subdir) != NULL);
    CHECK(count_temp_files() == 0);
    rmdir(subdir);

    CHECK(tsr_npy_write(missing, &t) == TSR_ERR_IO);
    CHECK(strstr(tsr_last_error(), missing) != NULL);
    CHECK(count_temp_files() == 0);

    /* Overwriting replaces the contents. */
    float w[2] = {5, 6};
    tsr_tensor t2 = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {2}, .data = w};
    CHECK_OK(tsr_npy_write(target, &t2));
    tsr_tensor back;
    CHECK_OK(tsr_npy_read(target, &back));
    CHECK(back.rank == 1 && back.dims[0] == 2);
    if (back.rank == 1 && back.dims[0] == 2)
        CHECK(((float *)back.data)[1] == 6.0f);
    free(back.data);

    /* A relative path without a directory part. */
    char cwd[512];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(dir) == 0);
    CHECK_OK(tsr_npy_write("plain.npy", &t2));
    CHECK_OK(tsr_npy_read("plain.npy", &back));
    free(back.data);
    CHECK(chdir(cwd) == 0);
    CHECK(count_temp_files() == 0);
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/tsr_test_npy_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trips();
    test_header_text();
    test_header_variants();
    test_malformed();
    test_write_failures();
    remove_dir();
    return tsr_test_summary("test_npy");
}

/* Extended XYZ files through tsr_extxyz_read (bounded by fuzz_check_load:
 * a count line promising a billion atoms must not allocate for them).
 * What it reads must write back (tsr_extxyz_write) and read again with
 * the same frames and atom counts, and small frames get their edges
 * (tsr_atoms_edges, cutoff 1; it may refuse a frame with a clear error,
 * e.g. an atom 1e8 cells away): non-periodic ones up to 256 atoms,
 * periodic ones up to 64 atoms when every periodic axis's cell height is
 * at least 1, which bounds the images searched. */
#include "fuzz.h"

#include <tessera/atoms.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void fail(const char *what)
{
    printf("fuzz: %s: %s\n", what, tsr_last_error());
    fflush(stdout);
    abort();
}

static void cross(const double *a, const double *b, double *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

/* Whether the edge search of this frame is cheap enough to run. */
static int edges_bounded(const tsr_atoms *a)
{
    double cell[9];
    int pbc[3];
    int has_cell = tsr_atoms_cell(a, cell, pbc);
    int periodic = has_cell && (pbc[0] || pbc[1] || pbc[2]);
    if (!periodic)
        return tsr_atoms_count(a) <= 256;
    if (tsr_atoms_count(a) > 64)
        return 0;
    double bc[3];
    cross(cell + 3, cell + 6, bc);
    double volume = fabs(cell[0] * bc[0] + cell[1] * bc[1] + cell[2] * bc[2]);
    for (int k = 0; k < 3; k++) {
        double n[3];
        cross(cell + 3 * ((k + 1) % 3), cell + 3 * ((k + 2) % 3), n);
        double area = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
        if (pbc[k] && !(volume >= area))
            return 0;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file(data, size, ".xyz");
    const char *copy = fuzz_scratch_path(".copy.xyz");
    if (!path || !copy)
        return 0;
    int64_t n = 0, n_again = 0;
    tsr_atoms **frames = NULL, **again = NULL;
    size_t before = fuzz_allocated();
    tsr_status st = tsr_extxyz_read(path, &n, &frames);
    fuzz_check_load(before, size, "tsr_extxyz_read");
    if (st != TSR_OK)
        return 0;
    tsr_edges edges;
    tsr_edges_init(&edges);
    for (int64_t f = 0; f < n; f++)
        if (edges_bounded(frames[f]))
            (void)tsr_atoms_edges(frames[f], 1.0, &edges);
    tsr_edges_free(&edges);
    if (tsr_extxyz_write(copy, n, (const tsr_atoms *const *)frames) != TSR_OK)
        fail("tsr_extxyz_write of what tsr_extxyz_read made");
    if (tsr_extxyz_read(copy, &n_again, &again) != TSR_OK)
        fail("tsr_extxyz_read of what tsr_extxyz_write wrote");
    if (n_again != n)
        fail("the frame count changed through a write and a read");
    for (int64_t f = 0; f < n; f++)
        if (tsr_atoms_count(again[f]) != tsr_atoms_count(frames[f]))
            fail("an atom count changed through a write and a read");
    tsr_atoms_destroy_frames(n_again, again);
    tsr_atoms_destroy_frames(n, frames);
    return 0;
}

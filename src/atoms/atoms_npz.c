/* Structures in .npz archives: the arrays numpy users keep them in
 * (positions, numbers, cell, pbc, and energy, forces, stress labels), one
 * frame as [N, ...] or several frames of one size as [F, N, ...]. */
#include "atoms/atoms_internal.h"
#include "core/npz.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { POSITIONS, NUMBERS, CELL, PBC, ENERGY, FORCES, STRESS, N_ARRAYS };
static const char *const names[N_ARRAYS] = {"positions", "numbers", "cell",  "pbc",
                                            "energy",    "forces",  "stress"};

static void shape_text(const tsr_tensor *t, char *buf, size_t size)
{
    tsr_shape_format(buf, size, t->rank, t->dims);
}

static tsr_status bad_shape(const char *path, int k, const tsr_tensor *t, const char *expected)
{
    char s[128];
    shape_text(t, s, sizeof s);
    return tsr_error(TSR_ERR_SHAPE, "%s: array '%s' has shape %s; expected %s", path, names[k], s,
                     expected);
}

static bool is_int(tsr_dtype d)
{
    return d == TSR_INT64 || d == TSR_INT32 || d == TSR_INT8 || d == TSR_UINT8 || d == TSR_BOOL;
}

/* Element `k` of an integer or bool tensor. */
static int64_t int_at(const tsr_tensor *t, int64_t k)
{
    switch (t->dtype) {
    case TSR_INT64: return ((const int64_t *)t->data)[k];
    case TSR_INT32: return ((const int32_t *)t->data)[k];
    case TSR_INT8: return ((const int8_t *)t->data)[k];
    default: return ((const uint8_t *)t->data)[k]; /* uint8, bool */
    }
}

static double real_at(const tsr_tensor *t, int64_t k)
{
    return t->dtype == TSR_FLOAT64 ? ((const double *)t->data)[k]
                                   : (double)((const float *)t->data)[k];
}

static bool dims_are(const tsr_tensor *t, int rank, const int64_t *dims)
{
    if (t->rank != rank)
        return false;
    for (int d = 0; d < rank; d++)
        if (t->dims[d] != dims[d])
            return false;
    return true;
}

/* How many items per frame an optional array gives: `per` (the shapes
 * [per...] for every frame alike when `shared` is allowed, or [F, per...]). */
static tsr_status frame_stride(const char *path, int k, const tsr_tensor *t, int64_t frames,
                               bool multi, int rank, const int64_t *dims, bool shared,
                               int64_t *stride_out, const char *expected)
{
    int64_t with_f[4] = {frames, dims[0], dims[1], dims[2]};
    if (multi && dims_are(t, rank + 1, with_f)) {
        *stride_out = 1;
        for (int d = 0; d < rank; d++)
            *stride_out *= dims[d];
        return TSR_OK;
    }
    if ((!multi || shared) && dims_are(t, rank, dims)) {
        *stride_out = 0;
        return TSR_OK;
    }
    return bad_shape(path, k, t, expected);
}

static tsr_status check_dtype(const char *path, int k, const tsr_tensor *t, bool want_int)
{
    bool ok = want_int ? is_int(t->dtype) : tsr_dtype_is_float(t->dtype);
    if (!ok)
        return tsr_error(TSR_ERR_DTYPE, "%s: array '%s' is %s; expected %s", path, names[k],
                         tsr_dtype_name(t->dtype), want_int ? "integers" : "float32 or float64");
    return TSR_OK;
}

tsr_status tsr_atoms_read_npz(const char *path, int64_t *n_frames_out, tsr_atoms ***frames_out)
{
    if (!path || !n_frames_out || !frames_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_read_npz: NULL argument");
    *n_frames_out = 0;
    *frames_out = NULL;
    const bool optional[N_ARRAYS] = {false, false, true, true, true, true, true};
    tsr_tensor t[N_ARRAYS];
    TSR_CHECK(tsr_npz_read(path, N_ARRAYS, names, optional, t));
    tsr_atoms **frames = NULL;
    int32_t *z = NULL;
    double *r = NULL, *f = NULL;
    int64_t F = 0, N = 0, made = 0;
    tsr_status st = TSR_OK;
    const tsr_tensor *p = &t[POSITIONS];
    bool multi = p->rank == 3;
    if ((p->rank != 2 && p->rank != 3) || p->dims[p->rank - 1] != 3) {
        st = bad_shape(path, POSITIONS, p, "[N, 3] or [F, N, 3]");
        goto cleanup;
    }
    F = multi ? p->dims[0] : 1;
    N = p->dims[multi ? 1 : 0];
    int64_t s_numbers = 0, s_cell = 0, s_pbc = 0, s_energy = 0, s_forces = 0, s_stress = 0;
    int stress_cols = 9;
    const int64_t n_dims[3] = {N, 0, 0}, cell_dims[3] = {3, 3, 0}, pbc_dims[3] = {3, 0, 0},
                  e_dims[3] = {0, 0, 0}, f_dims[3] = {N, 3, 0}, voigt_dims[3] = {6, 0, 0};
    if ((st = check_dtype(path, POSITIONS, p, false)) != TSR_OK ||
        (st = check_dtype(path, NUMBERS, &t[NUMBERS], true)) != TSR_OK ||
        (st = frame_stride(path, NUMBERS, &t[NUMBERS], F, multi, 1, n_dims, true, &s_numbers,
                           "[N] or [F, N]")) != TSR_OK)
        goto cleanup;
    if (t[CELL].data && ((st = check_dtype(path, CELL, &t[CELL], false)) != TSR_OK ||
                         (st = frame_stride(path, CELL, &t[CELL], F, multi, 2, cell_dims, true,
                                            &s_cell, "[3, 3] or [F, 3, 3]")) != TSR_OK))
        goto cleanup;
    if (t[PBC].data && ((st = check_dtype(path, PBC, &t[PBC], true)) != TSR_OK ||
                        (st = frame_stride(path, PBC, &t[PBC], F, multi, 1, pbc_dims, true, &s_pbc,
                                           "[3] or [F, 3]")) != TSR_OK))
        goto cleanup;
    if (t[ENERGY].data) {
        const int64_t one[1] = {1};
        if ((st = check_dtype(path, ENERGY, &t[ENERGY], false)) != TSR_OK)
            goto cleanup;
        if (!(multi ? dims_are(&t[ENERGY], 1, &F)
                    : (dims_are(&t[ENERGY], 0, e_dims) || dims_are(&t[ENERGY], 1, one)))) {
            st = bad_shape(path, ENERGY, &t[ENERGY], multi ? "[F]" : "[] or [1]");
            goto cleanup;
        }
        s_energy = multi ? 1 : 0;
    }
    if (t[FORCES].data && ((st = check_dtype(path, FORCES, &t[FORCES], false)) != TSR_OK ||
                           (st = frame_stride(path, FORCES, &t[FORCES], F, multi, 2, f_dims, false,
                                              &s_forces, "the shape of positions")) != TSR_OK))
        goto cleanup;
    if (t[STRESS].data) {
        if ((st = check_dtype(path, STRESS, &t[STRESS], false)) != TSR_OK)
            goto cleanup;
        if (frame_stride(path, STRESS, &t[STRESS], F, multi, 2, cell_dims, false, &s_stress, "") !=
            TSR_OK) {
            stress_cols = 6;
            if (frame_stride(path, STRESS, &t[STRESS], F, multi, 1, voigt_dims, false, &s_stress,
                             "") != TSR_OK) {
                st = bad_shape(path, STRESS, &t[STRESS],
                               multi ? "[F, 3, 3] or [F, 6]" : "[3, 3] or [6]");
                goto cleanup;
            }
        }
    }
    if (F > 0 && !(frames = tsr_calloc((size_t)F, sizeof *frames)))
        goto oom;
    z = tsr_malloc((size_t)N * sizeof *z);
    r = tsr_malloc((size_t)N * 3 * sizeof *r);
    f = tsr_malloc((size_t)N * 3 * sizeof *f);
    if (!z || !r || !f)
        goto oom;
    for (made = 0; made < F; made++) {
        int64_t fr = made;
        for (int64_t i = 0; i < N; i++) {
            int64_t zi = int_at(&t[NUMBERS], fr * s_numbers + i);
            if (zi < 0 || zi > TSR_ATOMS_MAX_Z) {
                st = tsr_error(TSR_ERR_PARSE,
                               "%s: frame %lld, atom %lld: atomic number %lld is not in 0..%d",
                               path, (long long)fr, (long long)i, (long long)zi, TSR_ATOMS_MAX_Z);
                goto cleanup;
            }
            z[i] = (int32_t)zi;
            for (int c = 0; c < 3; c++) {
                r[3 * i + c] = real_at(p, (fr * N + i) * 3 + c);
                if (!isfinite(r[3 * i + c])) {
                    st = tsr_error(TSR_ERR_PARSE,
                                   "%s: frame %lld, atom %lld has a non-finite position", path,
                                   (long long)fr, (long long)i);
                    goto cleanup;
                }
            }
        }
        double cell[9];
        bool has_cell = false;
        for (int k = 0; t[CELL].data && k < 9; k++) {
            cell[k] = real_at(&t[CELL], fr * s_cell + k);
            has_cell = has_cell || cell[k] != 0;
        }
        int pbc[3];
        for (int k = 0; k < 3; k++)
            pbc[k] = t[PBC].data ? int_at(&t[PBC], fr * s_pbc + k) != 0 : has_cell;
        if ((st = tsr_atoms_create(N, z, r, has_cell ? cell : NULL, pbc, &frames[made])) !=
            TSR_OK) {
            tsr_error_prefix("%s: frame %lld: ", path, (long long)fr);
            st = TSR_ERR_PARSE;
            goto cleanup;
        }
        tsr_atoms *a = frames[made];
        if (t[ENERGY].data)
            st = tsr_atoms_set_energy(a, real_at(&t[ENERGY], fr * s_energy));
        if (st == TSR_OK && t[FORCES].data) {
            for (int64_t k = 0; k < N * 3; k++)
                f[k] = real_at(&t[FORCES], fr * s_forces + k);
            st = tsr_atoms_set_forces(a, f);
        }
        if (st == TSR_OK && t[STRESS].data) {
            double s[9];
            for (int k = 0; k < stress_cols; k++)
                s[k] = real_at(&t[STRESS], fr * s_stress + k);
            tsr_atoms_value v = {.name = "stress",
                                 .type = TSR_ATOMS_REAL,
                                 .rows = 1,
                                 .cols = stress_cols,
                                 .reals = s};
            st = tsr_atoms_set_info(a, &v);
        }
        if (st != TSR_OK)
            goto cleanup;
    }
    goto cleanup;
oom:
    st = TSR_ERR_OUT_OF_MEMORY;
cleanup:
    for (int k = 0; k < N_ARRAYS; k++)
        free(t[k].data);
    free(z);
    free(r);
    free(f);
    if (st != TSR_OK) {
        tsr_atoms_destroy_frames(F, frames);
        return st;
    }
    *n_frames_out = F;
    *frames_out = frames;
    return TSR_OK;
}

/* ---------------------------------------------------------------- write */

tsr_status tsr_atoms_write_npz(const char *path, int64_t n_frames, const tsr_atoms *const *frames)
{
    if (!path || !*path || n_frames < 1 || !frames)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_atoms_write_npz: NULL argument or no frames (an .npz holds at "
                         "least one)");
    int64_t F = n_frames, N = frames[0] ? frames[0]->n : 0;
    bool has_cell = false, same_numbers = true, all_energy = true, all_forces = true,
         all_stress = true;
    for (int64_t k = 0; k < F; k++) {
        const tsr_atoms *a = frames[k];
        if (!a)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_write_npz: frame %lld is NULL",
                             (long long)k);
        if (a->n != N)
            return tsr_error(TSR_ERR_SHAPE,
                             "%s: frame %lld has %lld atoms, frame 0 has %lld; an .npz holds "
                             "frames of one size (write extxyz instead)",
                             path, (long long)k, (long long)a->n, (long long)N);
        has_cell = has_cell || a->has_cell;
        same_numbers = same_numbers &&
                       memcmp(a->numbers, frames[0]->numbers, (size_t)N * sizeof(int32_t)) == 0;
        double e, s[9];
        const double *fo;
        all_energy = all_energy && tsr_atoms_energy(a, &e) == TSR_OK;
        all_forces = all_forces && tsr_atoms_forces(a, &fo) == TSR_OK;
        all_stress = all_stress && tsr_atoms_stress(a, s) == TSR_OK;
    }
    bool multi = F > 1;
    int64_t nz = same_numbers ? N : F * N;
    double *pos = tsr_malloc((size_t)(F * N * 3) * sizeof *pos);
    int64_t *num = tsr_malloc((size_t)nz * sizeof *num);
    double *cell = tsr_malloc((size_t)F * 9 * sizeof *cell);
    bool *pbc = tsr_malloc((size_t)F * 3 * sizeof *pbc);
    double *energy = tsr_malloc((size_t)F * sizeof *energy);
    double *forces = tsr_malloc((size_t)(F * N * 3) * sizeof *forces);
    double *stress = tsr_malloc((size_t)F * 9 * sizeof *stress);
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!pos || !num || !cell || !pbc || !energy || !forces || !stress)
        goto cleanup;
    for (int64_t k = 0; k < F; k++) {
        const tsr_atoms *a = frames[k];
        memcpy(pos + k * N * 3, a->positions, (size_t)N * 3 * sizeof *pos);
        if (!same_numbers || k == 0)
            for (int64_t i = 0; i < N; i++)
                num[(same_numbers ? 0 : k * N) + i] = a->numbers[i];
        memcpy(cell + 9 * k, a->cell, 9 * sizeof *cell);
        for (int c = 0; c < 3; c++)
            pbc[3 * k + c] = a->pbc[c] != 0;
        const double *fo;
        if (all_energy)
            tsr_atoms_energy(a, &energy[k]);
        if (all_forces && tsr_atoms_forces(a, &fo) == TSR_OK)
            memcpy(forces + k * N * 3, fo, (size_t)N * 3 * sizeof *forces);
        if (all_stress)
            tsr_atoms_stress(a, stress + 9 * k);
    }
    const char *out_names[N_ARRAYS];
    tsr_tensor out[N_ARRAYS];
    int n = 0;
#define ADD(nm, dt, ptr, ...)                                                                      \
    do {                                                                                           \
        const int64_t d_[] = {__VA_ARGS__};                                                        \
        int first_ = multi ? 0 : 1;                                                                \
        tsr_tensor t_ = {                                                                          \
            .dtype = dt, .rank = (int)(sizeof d_ / sizeof d_[0]) - first_, .data = ptr};           \
        for (int q_ = first_; q_ < (int)(sizeof d_ / sizeof d_[0]); q_++)                          \
            t_.dims[q_ - first_] = d_[q_];                                                         \
        out_names[n] = nm;                                                                         \
        out[n++] = t_;                                                                             \
    } while (0)
    ADD("positions", TSR_FLOAT64, pos, F, N, 3);
    if (same_numbers) {
        out_names[n] = "numbers";
        out[n++] = (tsr_tensor){.dtype = TSR_INT64, .rank = 1, .dims = {N}, .data = num};
    } else {
        ADD("numbers", TSR_INT64, num, F, N);
    }
    if (has_cell)
        ADD("cell", TSR_FLOAT64, cell, F, 3, 3);
    ADD("pbc", TSR_BOOL, pbc, F, 3);
    if (all_energy)
        ADD("energy", TSR_FLOAT64, energy, F);
    if (all_forces)
        ADD("forces", TSR_FLOAT64, forces, F, N, 3);
    if (all_stress)
        ADD("stress", TSR_FLOAT64, stress, F, 3, 3);
#undef ADD
    st = tsr_npz_write(path, n, out_names, out);
cleanup:
    free(pos);
    free(num);
    free(cell);
    free(pbc);
    free(energy);
    free(forces);
    free(stress);
    return st;
}

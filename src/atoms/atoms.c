/* Structures of atoms: numbers, positions, cell and periodic flags, and the
 * named per-frame and per-atom values that extended XYZ files carry. */
#include "atoms/atoms_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const symbols[TSR_ATOMS_MAX_Z + 1] = {
    "X",  "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si",
    "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
    "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru",
    "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr",
    "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",
    "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac",
    "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf",
    "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};

const char *tsr_atoms_symbol(int z)
{
    return z >= 0 && z <= TSR_ATOMS_MAX_Z ? symbols[z] : NULL;
}

int tsr_atoms_number_of(const char *symbol)
{
    if (!symbol)
        return -1;
    for (int z = 0; z <= TSR_ATOMS_MAX_Z; z++)
        if (strcmp(symbols[z], symbol) == 0)
            return z;
    return -1;
}

/* ---------------------------------------------------------------- cell */

static void cross(const double *a, const double *b, double *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

static double norm3(const double *a)
{
    return sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]);
}

tsr_status tsr_atoms_check_cell(const double *cell, const int *pbc, const char *what)
{
    if (!cell) {
        if (pbc && (pbc[0] || pbc[1] || pbc[2]))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "%s: periodic boundaries need a cell (pbc is %d %d %d, no cell)", what,
                             pbc[0], pbc[1], pbc[2]);
        return TSR_OK;
    }
    for (int k = 0; k < 9; k++)
        if (!isfinite(cell[k]))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "%s: the cell has a non-finite entry (%g)",
                             what, cell[k]);
    int periodic[3], n = 0;
    for (int k = 0; k < 3; k++)
        if (!pbc || pbc[k])
            periodic[n++] = k;
    /* The periodic lattice vectors must span a line, a plane or space:
     * relative to their lengths, the length, area or volume must not
     * vanish. */
    double measure = 1, scale = 1;
    if (n == 1) {
        measure = norm3(cell + 3 * periodic[0]);
        scale = measure > 0 ? measure : 1;
    } else if (n == 2) {
        double c[3];
        cross(cell + 3 * periodic[0], cell + 3 * periodic[1], c);
        measure = norm3(c);
        scale = norm3(cell + 3 * periodic[0]) * norm3(cell + 3 * periodic[1]);
    } else if (n == 3) {
        double c[3];
        cross(cell + 3, cell + 6, c);
        measure = fabs(cell[0] * c[0] + cell[1] * c[1] + cell[2] * c[2]);
        scale = norm3(cell) * norm3(cell + 3) * norm3(cell + 6);
    }
    if (n > 0 && (!(measure > 0) || measure <= 1e-10 * scale))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "%s: the periodic lattice vectors of the cell are degenerate "
                         "(cell rows [%g %g %g] [%g %g %g] [%g %g %g], pbc %d %d %d)",
                         what, cell[0], cell[1], cell[2], cell[3], cell[4], cell[5], cell[6],
                         cell[7], cell[8], pbc ? pbc[0] : 1, pbc ? pbc[1] : 1, pbc ? pbc[2] : 1);
    return TSR_OK;
}

static void store_cell(tsr_atoms *a, const double *cell, const int *pbc)
{
    a->has_cell = cell != NULL;
    for (int k = 0; k < 9; k++)
        a->cell[k] = cell ? cell[k] : 0;
    for (int k = 0; k < 3; k++)
        a->pbc[k] = pbc ? pbc[k] != 0 : cell != NULL;
}

tsr_status tsr_atoms_create(int64_t n_atoms, const int32_t *numbers, const double *positions,
                            const double *cell, const int *pbc, tsr_atoms **atoms_out)
{
    if (!atoms_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_create: atoms_out is NULL");
    *atoms_out = NULL;
    if (n_atoms < 0 || (n_atoms > 0 && (!numbers || !positions)))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_atoms_create: %lld atoms need numbers and positions",
                         (long long)n_atoms);
    if (n_atoms > INT64_MAX / 64)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_create: %lld atoms is too many",
                         (long long)n_atoms);
    for (int64_t i = 0; i < n_atoms; i++) {
        if (numbers[i] < 0 || numbers[i] > TSR_ATOMS_MAX_Z)
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "tsr_atoms_create: atom %lld has atomic number %d (not in 0..%d)",
                             (long long)i, (int)numbers[i], TSR_ATOMS_MAX_Z);
        for (int c = 0; c < 3; c++)
            if (!isfinite(positions[3 * i + c]))
                return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                 "tsr_atoms_create: atom %lld has a non-finite position",
                                 (long long)i);
    }
    TSR_CHECK(tsr_atoms_check_cell(cell, pbc, "tsr_atoms_create"));
    tsr_atoms *a = tsr_calloc(1, sizeof *a);
    if (!a)
        return TSR_ERR_OUT_OF_MEMORY;
    a->n = n_atoms;
    a->numbers = tsr_malloc((size_t)n_atoms * sizeof *a->numbers);
    a->positions = tsr_malloc((size_t)n_atoms * 3 * sizeof *a->positions);
    if (!a->numbers || !a->positions) {
        tsr_atoms_destroy(a);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    if (n_atoms) {
        memcpy(a->numbers, numbers, (size_t)n_atoms * sizeof *a->numbers);
        memcpy(a->positions, positions, (size_t)n_atoms * 3 * sizeof *a->positions);
    }
    store_cell(a, cell, pbc);
    *atoms_out = a;
    return TSR_OK;
}

/* -------------------------------------------------------------- items */

void tsr_atoms_item_free(atoms_item *item)
{
    if (item->strings) {
        int64_t n = item->rows * item->cols;
        for (int64_t k = 0; k < n; k++)
            free(item->strings[k]);
    }
    free(item->strings);
    free(item->name);
    free(item->reals);
    free(item->ints);
    memset(item, 0, sizeof *item);
}

static void items_free(atoms_items *list)
{
    for (int k = 0; k < list->count; k++)
        tsr_atoms_item_free(&list->items[k]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

static int items_find(const atoms_items *list, const char *name)
{
    for (int k = 0; k < list->count; k++)
        if (strcmp(list->items[k].name, name) == 0)
            return k;
    return -1;
}

tsr_status tsr_atoms_items_take(atoms_items *list, atoms_item *item)
{
    int at = items_find(list, item->name);
    if (at >= 0) {
        tsr_atoms_item_free(&list->items[at]);
        list->items[at] = *item;
        return TSR_OK;
    }
    tsr_status st =
        tsr_grow((void **)&list->items, &list->capacity, list->count + 1, sizeof *list->items);
    if (st != TSR_OK) {
        tsr_atoms_item_free(item);
        return st;
    }
    list->items[list->count++] = *item;
    return TSR_OK;
}

bool tsr_atoms_name_ok(const char *name)
{
    if (!name || !*name)
        return false;
    /* Unsigned: UTF-8 bytes (above 127) belong to the name. */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\'' || *p == ':' || *p == '{' ||
            *p == '}' || *p == '\\' || *p == 127)
            return false;
    return true;
}

static tsr_status item_copy(const tsr_atoms_value *v, atoms_item *out)
{
    memset(out, 0, sizeof *out);
    int64_t n = v->rows * v->cols;
    out->type = v->type;
    out->rows = v->rows;
    out->cols = v->cols;
    out->name = tsr_strdup(v->name);
    if (!out->name)
        return TSR_ERR_OUT_OF_MEMORY;
    if (v->type == TSR_ATOMS_REAL) {
        if (!(out->reals = tsr_malloc((size_t)n * sizeof(double))))
            goto oom;
        memcpy(out->reals, v->reals, (size_t)n * sizeof(double));
    } else if (v->type == TSR_ATOMS_STRING) {
        if (!(out->strings = tsr_calloc((size_t)n, sizeof(char *))))
            goto oom;
        for (int64_t k = 0; k < n; k++)
            if (!(out->strings[k] = tsr_strdup(v->strings[k])))
                goto oom;
    } else {
        if (!(out->ints = tsr_malloc((size_t)n * sizeof(int64_t))))
            goto oom;
        for (int64_t k = 0; k < n; k++)
            out->ints[k] = v->type == TSR_ATOMS_BOOL ? v->ints[k] != 0 : v->ints[k];
    }
    return TSR_OK;
oom:
    tsr_atoms_item_free(out);
    return TSR_ERR_OUT_OF_MEMORY;
}

static const char *const reserved_info[] = {"Lattice", "pbc", "Properties"};
static const char *const reserved_arrays[] = {"species", "pos", "positions", "numbers", "Z"};

static bool is_reserved(const char *name, const char *const *list, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(name, list[k]) == 0)
            return true;
    return false;
}

static tsr_status set_value(atoms_items *list, const tsr_atoms_value *v, int64_t rows,
                            const char *what, const char *const *reserved, size_t n_reserved)
{
    if (!list || !v)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_set_%s: NULL argument", what);
    if (!tsr_atoms_name_ok(v->name))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_atoms_set_%s: name '%s' is empty or has whitespace, '=', ':', "
                         "quotes, braces or backslashes",
                         what, v->name ? v->name : "(null)");
    if (is_reserved(v->name, reserved, n_reserved))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_atoms_set_%s: '%s' is reserved (it is the structure's own data)",
                         what, v->name);
    if (v->rows != rows || v->cols < 1 || v->cols > (1 << 20))
        return tsr_error(TSR_ERR_SHAPE,
                         "tsr_atoms_set_%s: '%s' is %lld x %lld; expected %lld row(s) and 1 to "
                         "2^20 columns",
                         what, v->name, (long long)v->rows, (long long)v->cols, (long long)rows);
    const void *data = v->type == TSR_ATOMS_REAL     ? (const void *)v->reals
                       : v->type == TSR_ATOMS_STRING ? (const void *)v->strings
                                                     : (const void *)v->ints;
    if ((unsigned)v->type > TSR_ATOMS_STRING || (rows > 0 && !data))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_atoms_set_%s: '%s' has an unknown type or no data", what, v->name);
    if (v->type == TSR_ATOMS_STRING)
        for (int64_t k = 0; k < rows * v->cols; k++)
            if (!v->strings[k])
                return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                 "tsr_atoms_set_%s: string %lld of '%s' is NULL", what,
                                 (long long)k, v->name);
    atoms_item item;
    TSR_CHECK(item_copy(v, &item));
    return tsr_atoms_items_take(list, &item);
}

static void item_view(const atoms_item *it, tsr_atoms_value *out)
{
    out->name = it->name;
    out->type = it->type;
    out->rows = it->rows;
    out->cols = it->cols;
    out->reals = it->reals;
    out->ints = it->ints;
    out->strings = (const char *const *)it->strings;
}

static tsr_status get_value(const atoms_items *list, const char *name, tsr_atoms_value *out,
                            const char *what)
{
    if (!list || !out || !name)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_get_%s: NULL argument", what);
    int k = items_find(list, name);
    if (k < 0)
        return tsr_error(TSR_ERR_NOT_FOUND, "the structure has no %s named '%s'", what, name);
    item_view(&list->items[k], out);
    return TSR_OK;
}

static tsr_status value_at(const atoms_items *list, int index, tsr_atoms_value *out,
                           const char *what)
{
    if (!list || !out || index < 0 || index >= list->count)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_atoms_%s_at: index %d out of range (the structure has %d)", what,
                         index, list->count);
    item_view(&list->items[index], out);
    return TSR_OK;
}

static void remove_value(atoms_items *list, const char *name)
{
    int k = name ? items_find(list, name) : -1;
    if (k < 0)
        return;
    tsr_atoms_item_free(&list->items[k]);
    memmove(list->items + k, list->items + k + 1,
            (size_t)(list->count - k - 1) * sizeof *list->items);
    list->count--;
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

int tsr_atoms_info_count(const tsr_atoms *a)
{
    return a ? a->info.count : 0;
}
int tsr_atoms_array_count(const tsr_atoms *a)
{
    return a ? a->arrays.count : 0;
}

tsr_status tsr_atoms_info_at(const tsr_atoms *a, int index, tsr_atoms_value *out)
{
    return value_at(a ? &a->info : NULL, index, out, "info");
}

tsr_status tsr_atoms_array_at(const tsr_atoms *a, int index, tsr_atoms_value *out)
{
    return value_at(a ? &a->arrays : NULL, index, out, "array");
}

tsr_status tsr_atoms_get_info(const tsr_atoms *a, const char *name, tsr_atoms_value *out)
{
    return get_value(a ? &a->info : NULL, name, out, "info");
}

tsr_status tsr_atoms_get_array(const tsr_atoms *a, const char *name, tsr_atoms_value *out)
{
    return get_value(a ? &a->arrays : NULL, name, out, "array");
}

tsr_status tsr_atoms_set_info(tsr_atoms *a, const tsr_atoms_value *v)
{
    if (v && v->type == TSR_ATOMS_STRING && v->cols != 1)
        return tsr_error(TSR_ERR_SHAPE,
                         "tsr_atoms_set_info: the string info '%s' has %lld strings; an info "
                         "string is one value",
                         v->name ? v->name : "(null)", (long long)v->cols);
    return set_value(a ? &a->info : NULL, v, 1, "info", reserved_info, N_OF(reserved_info));
}

tsr_status tsr_atoms_set_array(tsr_atoms *a, const tsr_atoms_value *v)
{
    return set_value(a ? &a->arrays : NULL, v, a ? a->n : 0, "array", reserved_arrays,
                     N_OF(reserved_arrays));
}

tsr_status tsr_atoms_remove_info(tsr_atoms *a, const char *name)
{
    if (!a)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_remove_info: atoms is NULL");
    remove_value(&a->info, name);
    return TSR_OK;
}

tsr_status tsr_atoms_remove_array(tsr_atoms *a, const char *name)
{
    if (!a)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_remove_array: atoms is NULL");
    remove_value(&a->arrays, name);
    return TSR_OK;
}

/* ------------------------------------------------------------ labels */

static tsr_status set_reals(atoms_items *list, const char *name, int64_t rows, int64_t cols,
                            const double *x, const char *what)
{
    tsr_atoms_value v = {
        .name = name, .type = TSR_ATOMS_REAL, .rows = rows, .cols = cols, .reals = x};
    return set_value(list, &v, rows, what, NULL, 0);
}

tsr_status tsr_atoms_energy(const tsr_atoms *a, double *out)
{
    if (!out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_energy: energy_out is NULL");
    tsr_atoms_value v;
    TSR_CHECK(tsr_atoms_get_info(a, "energy", &v));
    if (v.cols != 1 || (v.type != TSR_ATOMS_REAL && v.type != TSR_ATOMS_INT))
        return tsr_error(TSR_ERR_SHAPE, "info 'energy' is not one number");
    *out = v.type == TSR_ATOMS_REAL ? v.reals[0] : (double)v.ints[0];
    return TSR_OK;
}

tsr_status tsr_atoms_set_energy(tsr_atoms *a, double energy)
{
    return set_reals(a ? &a->info : NULL, "energy", 1, 1, &energy, "info");
}

tsr_status tsr_atoms_forces(const tsr_atoms *a, const double **out)
{
    if (!out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_forces: forces_out is NULL");
    tsr_atoms_value v;
    TSR_CHECK(tsr_atoms_get_array(a, "forces", &v));
    if (v.cols != 3 || v.type != TSR_ATOMS_REAL)
        return tsr_error(TSR_ERR_SHAPE, "array 'forces' is not 3 real numbers per atom");
    *out = v.reals;
    return TSR_OK;
}

tsr_status tsr_atoms_set_forces(tsr_atoms *a, const double *forces)
{
    return set_reals(a ? &a->arrays : NULL, "forces", a ? a->n : 0, 3, forces, "array");
}

/* A 3x3 from 9 numbers (row-major) or 6 in Voigt order xx yy zz yz xz xy. */
static tsr_status matrix_info(const tsr_atoms *a, const char *name, double *out)
{
    if (!out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_%s: output is NULL", name);
    tsr_atoms_value v;
    TSR_CHECK(tsr_atoms_get_info(a, name, &v));
    if ((v.cols != 9 && v.cols != 6) || (v.type != TSR_ATOMS_REAL && v.type != TSR_ATOMS_INT))
        return tsr_error(TSR_ERR_SHAPE, "info '%s' is not 9 (or 6 Voigt) numbers", name);
    double x[9];
    for (int k = 0; k < v.cols; k++)
        x[k] = v.type == TSR_ATOMS_REAL ? v.reals[k] : (double)v.ints[k];
    if (v.cols == 9) {
        memcpy(out, x, sizeof x);
    } else {
        const int voigt[9] = {0, 5, 4, 5, 1, 3, 4, 3, 2};
        for (int k = 0; k < 9; k++)
            out[k] = x[voigt[k]];
    }
    return TSR_OK;
}

tsr_status tsr_atoms_stress(const tsr_atoms *a, double *out)
{
    return matrix_info(a, "stress", out);
}
tsr_status tsr_atoms_virial(const tsr_atoms *a, double *out)
{
    return matrix_info(a, "virial", out);
}

tsr_status tsr_atoms_set_stress(tsr_atoms *a, const double *s)
{
    return set_reals(a ? &a->info : NULL, "stress", 1, 9, s, "info");
}

tsr_status tsr_atoms_set_virial(tsr_atoms *a, const double *s)
{
    return set_reals(a ? &a->info : NULL, "virial", 1, 9, s, "info");
}

/* -------------------------------------------------------------- basics */

int64_t tsr_atoms_count(const tsr_atoms *a)
{
    return a ? a->n : 0;
}
const int32_t *tsr_atoms_numbers(const tsr_atoms *a)
{
    return a->numbers;
}
const double *tsr_atoms_positions(const tsr_atoms *a)
{
    return a->positions;
}
double *tsr_atoms_positions_mutable(tsr_atoms *a)
{
    return a->positions;
}

int tsr_atoms_cell(const tsr_atoms *a, double *cell_out, int *pbc_out)
{
    if (!a)
        return 0;
    if (cell_out)
        memcpy(cell_out, a->cell, sizeof a->cell);
    if (pbc_out)
        memcpy(pbc_out, a->pbc, sizeof a->pbc);
    return a->has_cell;
}

tsr_status tsr_atoms_set_cell(tsr_atoms *a, const double *cell, const int *pbc)
{
    if (!a)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_set_cell: atoms is NULL");
    TSR_CHECK(tsr_atoms_check_cell(cell, pbc, "tsr_atoms_set_cell"));
    store_cell(a, cell, pbc);
    return TSR_OK;
}

tsr_status tsr_atoms_clone(const tsr_atoms *a, tsr_atoms **out)
{
    if (!a || !out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_clone: NULL argument");
    *out = NULL;
    tsr_atoms *c = NULL;
    TSR_CHECK(
        tsr_atoms_create(a->n, a->numbers, a->positions, a->has_cell ? a->cell : NULL, a->pbc, &c));
    tsr_status st = TSR_OK;
    for (int k = 0; k < a->info.count && st == TSR_OK; k++) {
        tsr_atoms_value v;
        item_view(&a->info.items[k], &v);
        st = tsr_atoms_set_info(c, &v);
    }
    for (int k = 0; k < a->arrays.count && st == TSR_OK; k++) {
        tsr_atoms_value v;
        item_view(&a->arrays.items[k], &v);
        st = tsr_atoms_set_array(c, &v);
    }
    if (st != TSR_OK) {
        tsr_atoms_destroy(c);
        return st;
    }
    *out = c;
    return TSR_OK;
}

void tsr_atoms_destroy(tsr_atoms *a)
{
    if (!a)
        return;
    items_free(&a->info);
    items_free(&a->arrays);
    free(a->numbers);
    free(a->positions);
    free(a);
}

void tsr_atoms_destroy_frames(int64_t n, tsr_atoms **frames)
{
    if (!frames)
        return;
    for (int64_t k = 0; k < n; k++)
        tsr_atoms_destroy(frames[k]);
    free(frames);
}

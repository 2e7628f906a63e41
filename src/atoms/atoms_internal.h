/* The structure behind tsr_atoms, shared by the readers, the writers and
 * the neighbour lists of src/atoms. */
#ifndef TSR_ATOMS_INTERNAL_H
#define TSR_ATOMS_INTERNAL_H

#include "core/core.h"
#include "tessera/atoms.h"

/* One named value (info or per-atom array); owns its name and data. */
typedef struct atoms_item {
    char *name;
    tsr_atoms_value_type type;
    int64_t rows, cols;
    double *reals;
    int64_t *ints;
    char **strings;
} atoms_item;

typedef struct atoms_items {
    atoms_item *items;
    int count, capacity;
} atoms_items;

struct tsr_atoms {
    int64_t n;
    int32_t *numbers;
    double *positions; /* [n][3] */
    int has_cell;
    double cell[9]; /* rows are lattice vectors; zeros without a cell */
    int pbc[3];
    atoms_items info;
    atoms_items arrays;
};

/* Checks a cell and flags as tsr_atoms_create documents; `what` names the
 * source in messages ("file.xyz:12"). */
tsr_status tsr_atoms_check_cell(const double *cell, const int *pbc, const char *what);

/* Adds an item, taking ownership of its name and data (freed on failure
 * too); replaces an item of the same name. */
tsr_status tsr_atoms_items_take(atoms_items *list, atoms_item *item);
void tsr_atoms_item_free(atoms_item *item);

/* True when a value name can be written as an extxyz key or column. */
bool tsr_atoms_name_ok(const char *name);

#endif

/* Tessera atoms: structures of atoms, neighbour lists, and the extended XYZ
 * and .npz files they come in. This is what interatomic potentials (ICTP)
 * and molecular dynamics build on.
 *
 * Units are whatever the caller uses (Å and eV in practice); nothing here
 * converts them.
 *
 * A structure (tsr_atoms) holds atomic numbers, Cartesian positions, an
 * optional 3x3 cell whose ROWS are the lattice vectors a, b, c, and one
 * periodic flag per axis. Besides, it carries named values as extended XYZ
 * does: per-frame "info" (energy, stress, virial, a configuration label,
 * ...) and per-atom arrays (forces, charges, ...).
 *
 * Edges follow ictp-checkpoint.md §2: every (i, j, S), S an integer vector,
 * with |r_j + S·cell − r_i| < cutoff, along periodic axes only (S_k = 0
 * where pbc_k is false), i = j kept when S ≠ 0. i is the receiver, j the
 * sender, and the edge vector is v = r_i − r_j − S·cell (pointing from the
 * neighbour to the centre), computed in double as
 *     v_c = (r_i,c − r_j,c) − (S_0·cell[0][c] + S_1·cell[1][c] + S_2·cell[2][c]).
 * The positions are used as given: atoms outside the cell are fine (they
 * are never wrapped; S accounts for it).
 *
 * Edge order (deterministic, independent of how the cell list is cut):
 * ascending receiver i, then ascending sender j, then S in lexicographic
 * order (S_0, then S_1, then S_2). Edges of receiver i are therefore
 * [offsets[i], offsets[i+1]).
 *
 * Every call returns a tsr_status; on failure tsr_last_error() names what
 * is wrong (for files: the file and the line), and no output is written:
 * a failed read returns nothing, a failed write leaves the file as it was
 * (writers go through a temporary file and a rename; a failed append is
 * cut back). */
#ifndef TESSERA_ATOMS_H
#define TESSERA_ATOMS_H

#include "tessera.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ structure */

typedef struct tsr_atoms tsr_atoms;

/* Highest atomic number with a symbol (Og). Z = 0 is the dummy atom "X". */
#define TSR_ATOMS_MAX_Z 118

/* A structure of n atoms (n may be 0). `numbers` [n] are atomic numbers in
 * 0..TSR_ATOMS_MAX_Z, `positions` [n][3] must be finite (either may be
 * NULL only when n = 0). `cell` [3][3] (rows = lattice vectors) may be
 * NULL: no cell, and then every pbc flag must be 0. `pbc` [3] may be NULL:
 * periodic along all three axes when a cell is given, none otherwise. A
 * periodic axis needs a cell whose periodic rows are linearly independent. */
TSR_API tsr_status tsr_atoms_create(int64_t n_atoms, const int32_t *numbers,
                                    const double *positions, const double *cell, const int *pbc,
                                    tsr_atoms **atoms_out);
TSR_API tsr_status tsr_atoms_clone(const tsr_atoms *atoms, tsr_atoms **clone_out);
TSR_API void tsr_atoms_destroy(tsr_atoms *atoms); /* NULL is fine */

TSR_API int64_t tsr_atoms_count(const tsr_atoms *atoms);
TSR_API const int32_t *tsr_atoms_numbers(const tsr_atoms *atoms);
/* [n][3] Cartesian positions; the mutable form lets MD move atoms in
 * place. */
TSR_API const double *tsr_atoms_positions(const tsr_atoms *atoms);
TSR_API double *tsr_atoms_positions_mutable(tsr_atoms *atoms);
/* 1 if the structure has a cell (then copied into cell_out [9] when not
 * NULL), 0 if not; pbc_out [3] (when not NULL) gets the periodic flags. */
TSR_API int tsr_atoms_cell(const tsr_atoms *atoms, double *cell_out, int *pbc_out);
/* Replaces the cell and flags, with the rules of tsr_atoms_create. */
TSR_API tsr_status tsr_atoms_set_cell(tsr_atoms *atoms, const double *cell, const int *pbc);
/* Moves every atom into the cell along the periodic axes by whole lattice
 * vectors: fractional coordinates (of the cell's three rows, as ASE's
 * wrap; when the non-periodic rows are degenerate, of the periodic rows
 * completed by orthogonal unit vectors) in [0, 1) there, up to rounding.
 * Other axes are untouched. Edges keep their vectors; their S change. */
TSR_API tsr_status tsr_atoms_wrap(tsr_atoms *atoms);
/* The chemical symbol of Z ("H", "He", ..., "X" for 0); NULL if out of
 * range. tsr_atoms_number_of is its inverse: -1 for an unknown symbol. */
TSR_API const char *tsr_atoms_symbol(int z);
TSR_API int tsr_atoms_number_of(const char *symbol);

/* -------------------------------------------------------- named values */

typedef enum tsr_atoms_value_type {
    TSR_ATOMS_REAL = 0, /* double */
    TSR_ATOMS_INT,      /* int64 */
    TSR_ATOMS_BOOL,     /* int64, 0 or 1 */
    TSR_ATOMS_STRING    /* NUL-terminated strings */
} tsr_atoms_value_type;

/* A named value: `rows` x `cols` items, row-major. Info values have one
 * row (energy: 1 x 1, stress: 1 x 9, a label: exactly one string); per-atom
 * arrays have one row per atom (forces: n x 3). The data pointer of the
 * type is used (`reals`; `ints` for INT and BOOL; `strings`), the others
 * are NULL. Values handed out by the getters point into the structure and
 * stay valid until it is changed or destroyed. */
typedef struct tsr_atoms_value {
    const char *name;
    tsr_atoms_value_type type;
    int64_t rows, cols;
    const double *reals;
    const int64_t *ints;
    const char *const *strings;
} tsr_atoms_value;

/* Info: per-frame values. `set` copies the value (replacing one of the same
 * name); rows must be 1, cols >= 1. Names are non-empty and have no
 * whitespace, '=' or quotes; "Lattice", "pbc" and "Properties" are
 * reserved (they are the cell and the columns). */
TSR_API int tsr_atoms_info_count(const tsr_atoms *atoms);
TSR_API tsr_status tsr_atoms_info_at(const tsr_atoms *atoms, int index, tsr_atoms_value *value_out);
TSR_API tsr_status tsr_atoms_get_info(const tsr_atoms *atoms, const char *name,
                                      tsr_atoms_value *value_out); /* TSR_ERR_NOT_FOUND if absent */
TSR_API tsr_status tsr_atoms_set_info(tsr_atoms *atoms, const tsr_atoms_value *value);
TSR_API tsr_status tsr_atoms_remove_info(tsr_atoms *atoms, const char *name); /* absent: TSR_OK */

/* Per-atom arrays, the same with rows = the number of atoms. "species",
 * "pos", "positions", "numbers" and "Z" are reserved (they are the
 * structure's own numbers and positions). */
TSR_API int tsr_atoms_array_count(const tsr_atoms *atoms);
TSR_API tsr_status tsr_atoms_array_at(const tsr_atoms *atoms, int index,
                                      tsr_atoms_value *value_out);
TSR_API tsr_status tsr_atoms_get_array(const tsr_atoms *atoms, const char *name,
                                       tsr_atoms_value *value_out);
TSR_API tsr_status tsr_atoms_set_array(tsr_atoms *atoms, const tsr_atoms_value *value);
TSR_API tsr_status tsr_atoms_remove_array(tsr_atoms *atoms, const char *name);

/* The usual labels, as extended XYZ files name them: info "energy" (one
 * number), info "stress" and "virial" (9 numbers, row-major 3x3; 6 in
 * Voigt order xx yy zz yz xz xy are read too), array "forces" (n x 3).
 * The getters return TSR_ERR_NOT_FOUND when the value is absent and
 * TSR_ERR_SHAPE when it has the wrong size or type. */
TSR_API tsr_status tsr_atoms_energy(const tsr_atoms *atoms, double *energy_out);
TSR_API tsr_status tsr_atoms_set_energy(tsr_atoms *atoms, double energy);
TSR_API tsr_status tsr_atoms_forces(const tsr_atoms *atoms, const double **forces_out);
TSR_API tsr_status tsr_atoms_set_forces(tsr_atoms *atoms, const double *forces);
TSR_API tsr_status tsr_atoms_stress(const tsr_atoms *atoms, double *stress_out); /* [9] */
TSR_API tsr_status tsr_atoms_set_stress(tsr_atoms *atoms, const double *stress);
TSR_API tsr_status tsr_atoms_virial(const tsr_atoms *atoms, double *virial_out); /* [9] */
TSR_API tsr_status tsr_atoms_set_virial(tsr_atoms *atoms, const double *virial);

/* ---------------------------------------------------------------- files */

/* Frames are arrays of structures; free them with tsr_atoms_destroy_frames. */
TSR_API void tsr_atoms_destroy_frames(int64_t n_frames, tsr_atoms **frames);

/* Extended XYZ: every frame is a count line, a comment line of key=value
 * pairs (values bare, "double-quoted" with \" and \\ escapes, or {braced};
 * a bare key means true), and one line per atom whose columns follow
 * Properties=name:type:cols:... (types S, R, I, L; the default is
 * species:S:1:pos:R:3). Lattice="9 numbers" gives the cell (rows), pbc="T T
 * F" the flags (default: T T T with a Lattice, F F F without). species
 * symbols (or a Z:I:1 column) give the atomic numbers. Other keys become
 * info: numbers -> REAL or INT arrays, T/F/True/False -> BOOL, the rest
 * STRING; other columns become per-atom arrays. Errors name the file and
 * line: truncated frames, wrong column counts, bad numbers, unknown
 * species, non-finite positions or cells, a Lattice, pbc or Properties
 * given twice (other repeated keys: the last one counts, as in ASE). Blank
 * lines between frames are skipped. */
TSR_API tsr_status tsr_extxyz_read(const char *path, int64_t *n_frames_out,
                                   tsr_atoms ***frames_out);
/* Writes every frame (species, pos, then the arrays in their order; the
 * info after Lattice and Properties; pbc last), every real in a form that
 * reads back as the same double (15 significant digits, 17 when needed). */
TSR_API tsr_status tsr_extxyz_write(const char *path, int64_t n_frames,
                                    const tsr_atoms *const *frames);
/* Appends the frames to `path` (created if absent) in one write, then
 * fsync: MD writes its trajectory frame by frame, and a run that stops
 * keeps every frame appended so far. On failure the file is cut back to
 * its old length. */
TSR_API tsr_status tsr_extxyz_append(const char *path, int64_t n_frames,
                                     const tsr_atoms *const *frames);

/* .npz (numpy.savez / savez_compressed): `positions` [N,3] (float64 or
 * float32) and `numbers` [N] (any integer type) for one frame, or [F,N,3]
 * and [N] or [F,N] for F frames; optional `cell` [3,3] or [F,3,3] (all
 * zeros: no cell), `pbc` [3] or [F,3] (bool or integer; default as for
 * extxyz), `energy` [] or [F], `forces` shaped as positions, `stress` [3,3]
 * or [F,3,3] (or 6 Voigt numbers per frame). Other arrays are ignored. */
TSR_API tsr_status tsr_atoms_read_npz(const char *path, int64_t *n_frames_out,
                                      tsr_atoms ***frames_out);
/* Writes those arrays (stored, uncompressed): frames of one atom count,
 * [N,...] shapes for one frame, [F,N,...] for several; cell and pbc when a
 * frame has a cell, energy, forces and stress when every frame has them.
 * Other info and arrays are not written (extxyz keeps them). */
TSR_API tsr_status tsr_atoms_write_npz(const char *path, int64_t n_frames,
                                       const tsr_atoms *const *frames);

/* ---------------------------------------------------------- neighbours */

/* Edges in caller-owned buffers that grow when needed and are reused
 * otherwise (during MD the count changes a little at every step; growing
 * by at least 1.25x keeps reallocations rare). Arrays have `capacity`
 * rows, the first `count` are used. Zero-initialize (or
 * tsr_edges_init) before first use; tsr_edges_free releases the buffers. */
typedef struct tsr_edges {
    int64_t count, capacity;
    int64_t *receivers; /* i [capacity] */
    int64_t *senders;   /* j [capacity] */
    int32_t *shifts;    /* S [capacity][3] */
    double *vectors;    /* v = r_i - r_j - S·cell [capacity][3] */
    int64_t n_atoms;    /* rows of offsets minus one */
    int64_t *offsets;   /* [n_atoms + 1]: receiver i owns [offsets[i], offsets[i+1]) */
    int64_t offsets_capacity;
} tsr_edges;

TSR_API void tsr_edges_init(tsr_edges *edges);
/* Makes room for `capacity` edges and `n_atoms` atoms (keeps the contents). */
TSR_API tsr_status tsr_edges_reserve(tsr_edges *edges, int64_t capacity, int64_t n_atoms);
TSR_API void tsr_edges_free(tsr_edges *edges);

/* All edges of `atoms` within `cutoff` (> 0), built from scratch by cell
 * lists in O(N). Positions that became non-finite (they are writable) are
 * an error naming the atom; so are cells so much thinner than the cutoff
 * that the list would pass 2^31 edges. */
TSR_API tsr_status tsr_atoms_edges(const tsr_atoms *atoms, double cutoff, tsr_edges *edges);

/* A neighbour list for MD: it keeps the pairs within cutoff + skin found
 * at its last build, and tsr_neighbor_list_update only rebuilds them when
 * an atom moved more than skin / 2 since then (or the atom count, the
 * cell or the flags changed); otherwise it refilters them with the current
 * positions. Either way the edges out are exactly those of
 * tsr_atoms_edges(atoms, cutoff), in the same order: every pair within
 * the cutoff now was within cutoff + skin at the build. Wrapping atoms
 * back into the cell (tsr_atoms_wrap) between updates is fine: the jump
 * counts as a displacement like any other. */
typedef struct tsr_neighbor_list tsr_neighbor_list;

TSR_API tsr_status tsr_neighbor_list_create(double cutoff, double skin,
                                            tsr_neighbor_list **list_out);
TSR_API void tsr_neighbor_list_destroy(tsr_neighbor_list *list);
/* rebuilt_out (may be NULL) is 1 when the pairs were rebuilt. */
TSR_API tsr_status tsr_neighbor_list_update(tsr_neighbor_list *list, const tsr_atoms *atoms,
                                            tsr_edges *edges, int *rebuilt_out);
/* Number of rebuilds so far. */
TSR_API int64_t tsr_neighbor_list_builds(const tsr_neighbor_list *list);
/* 1 when the next tsr_neighbor_list_update with `atoms` will rebuild the
 * pairs (nothing built yet, an atom moved more than skin / 2, or the atom
 * count, the cell or the flags changed), else 0 (also for NULL). MD wraps
 * atoms into the cell only when this says so, right before the update, so
 * that wrapping never causes a rebuild of its own. */
TSR_API int tsr_neighbor_list_stale(const tsr_neighbor_list *list, const tsr_atoms *atoms);

#ifdef __cplusplus
}
#endif

#endif

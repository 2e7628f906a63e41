/* Atoms: neighbour lists against a brute-force enumeration of periodic
 * images (an independent, obviously complete search), in the edge cases
 * cell lists get wrong (empty structures, one atom in a tiny cell, cutoffs
 * larger than the cell, mixed pbc, triclinic cells, atoms on the cell
 * faces or far outside it); the skin list against fresh builds; extxyz and
 * .npz round trips, and malformed files that must fail naming the line. */
#include "core/npz.h"
#include "harness.h"
#include "tessera/atoms.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

/* ------------------------------------------------------- brute force */

typedef struct {
    int64_t i, j;
    int s[3];
    double v[3];
} ref_edge;

static int ref_order(const void *pa, const void *pb)
{
    const ref_edge *a = pa, *b = pb;
    if (a->i != b->i)
        return a->i < b->i ? -1 : 1;
    if (a->j != b->j)
        return a->j < b->j ? -1 : 1;
    for (int k = 0; k < 3; k++)
        if (a->s[k] != b->s[k])
            return a->s[k] < b->s[k] ? -1 : 1;
    return 0;
}

/* Distance of the periodic row k from the span of the other periodic rows
 * (Gram-Schmidt): |S_k| times it bounds |S·cell| from below. */
static double height(const double *c, const int *pbc, int k)
{
    double basis[2][3], v[3] = {c[3 * k], c[3 * k + 1], c[3 * k + 2]};
    int nb = 0;
    for (int o = 0; o < 3; o++) {
        if (o == k || !pbc[o])
            continue;
        double u[3] = {c[3 * o], c[3 * o + 1], c[3 * o + 2]};
        for (int b = 0; b < nb; b++) {
            double d = u[0] * basis[b][0] + u[1] * basis[b][1] + u[2] * basis[b][2];
            for (int q = 0; q < 3; q++)
                u[q] -= d * basis[b][q];
        }
        double len = sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
        for (int q = 0; q < 3; q++)
            basis[nb][q] = u[q] / len;
        nb++;
    }
    for (int b = 0; b < nb; b++) {
        double d = v[0] * basis[b][0] + v[1] * basis[b][1] + v[2] * basis[b][2];
        for (int q = 0; q < 3; q++)
            v[q] -= d * basis[b][q];
    }
    return sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

/* Every (i, j, S) with S in a box wide enough for the farthest pair: the
 * fractional extent of the positions plus the cutoff in cell heights. */
static int64_t brute_force(int64_t n, const double *pos, const double *cell, const int *pbc,
                           double rc, ref_edge **out)
{
    int m[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++)
        if (pbc[k]) {
            double spread = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < n; j++) {
                    double d[3] = {pos[3 * i] - pos[3 * j], pos[3 * i + 1] - pos[3 * j + 1],
                                   pos[3 * i + 2] - pos[3 * j + 2]};
                    double len = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
                    spread = len > spread ? len : spread;
                }
            m[k] = (int)ceil((rc + spread) / height(cell, pbc, k)) + 1;
        }
    int64_t count = 0, cap = 1024;
    ref_edge *e = malloc((size_t)cap * sizeof *e);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            for (int a = -m[0]; a <= m[0]; a++)
                for (int b = -m[1]; b <= m[1]; b++)
                    for (int c = -m[2]; c <= m[2]; c++) {
                        if (i == j && a == 0 && b == 0 && c == 0)
                            continue;
                        double v[3], d2 = 0;
                        for (int q = 0; q < 3; q++) {
                            v[q] = (pos[3 * i + q] - pos[3 * j + q]) -
                                   (a * cell[q] + b * cell[3 + q] + c * cell[6 + q]);
                            d2 += v[q] * v[q];
                        }
                        if (!(d2 < rc * rc))
                            continue;
                        if (count == cap)
                            e = realloc(e, (size_t)(cap *= 2) * sizeof *e);
                        e[count] = (ref_edge){i, j, {a, b, c}, {v[0], v[1], v[2]}};
                        count++;
                    }
    qsort(e, (size_t)count, sizeof *e, ref_order);
    *out = e;
    return count;
}

/* The edges of tsr_atoms_edges equal the brute force ones, in order, with
 * the same vectors, and the offsets delimit each receiver's edges. */
static void check_against_brute_force(const char *what, int64_t n, const double *pos,
                                      const double *cell, const int *pbc, double rc)
{
    int32_t *z = calloc((size_t)n + 1, sizeof *z);
    for (int64_t i = 0; i < n; i++)
        z[i] = 1 + (int32_t)(i % 20);
    tsr_atoms *a = NULL;
    CHECK_OK(tsr_atoms_create(n, z, pos, cell, pbc, &a));
    free(z);
    if (!a)
        return;
    tsr_edges e;
    tsr_edges_init(&e);
    CHECK_OK(tsr_atoms_edges(a, rc, &e));
    static const double zero_cell[9];
    ref_edge *r = NULL;
    int64_t nr = brute_force(n, pos, cell ? cell : zero_cell, pbc, rc, &r);
    bool same = e.count == nr && e.n_atoms == n;
    for (int64_t k = 0; same && k < nr; k++) {
        same = e.receivers[k] == r[k].i && e.senders[k] == r[k].j;
        for (int q = 0; q < 3; q++)
            same = same && e.shifts[3 * k + q] == r[k].s[q] && e.vectors[3 * k + q] == r[k].v[q];
    }
    for (int64_t i = 0; same && i < n; i++)
        for (int64_t k = e.offsets[i]; k < e.offsets[i + 1]; k++)
            same = same && e.receivers[k] == i;
    same = same && e.offsets[0] == 0 && e.offsets[n] == e.count;
    if (!same)
        fprintf(stderr, "%s: %lld edges, brute force %lld\n", what, (long long)e.count,
                (long long)nr);
    CHECK(same);
    free(r);
    tsr_edges_free(&e);
    tsr_atoms_destroy(a);
}

static double uniform(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static void test_neighbors_edge_cases(void)
{
    const int all[3] = {1, 1, 1}, none[3] = {0, 0, 0}, mixed[3] = {1, 0, 1};
    const double cubic[9] = {3, 0, 0, 0, 3, 0, 0, 0, 3};
    check_against_brute_force("empty", 0, NULL, cubic, all, 2.0);
    check_against_brute_force("empty, no cell", 0, NULL, NULL, none, 2.0);

    /* One atom in a tiny cell: every edge is a self-image. */
    const double tiny[9] = {0.9, 0, 0, 0, 1.1, 0, 0.2, 0.3, 1.0};
    const double origin[3] = {0.05, -0.02, 0.4};
    check_against_brute_force("one atom, tiny cell", 1, origin, tiny, all, 2.7);
    check_against_brute_force("one atom, tiny cell, mixed pbc", 1, origin, tiny, mixed, 3.1);

    /* Simple cubic a = 1, rc just above 1: six self-images, v = -S·cell. */
    const double unit[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    tsr_atoms *a = NULL;
    const int32_t h = 1;
    CHECK_OK(tsr_atoms_create(1, &h, origin, unit, NULL, &a));
    tsr_edges e = {0};
    CHECK_OK(tsr_atoms_edges(a, 1.01, &e));
    CHECK(e.count == 6);
    const int expect[6][3] = {{-1, 0, 0}, {0, -1, 0}, {0, 0, -1}, {0, 0, 1}, {0, 1, 0}, {1, 0, 0}};
    for (int k = 0; k < 6 && k < e.count; k++) {
        CHECK(e.receivers[k] == 0 && e.senders[k] == 0);
        for (int q = 0; q < 3; q++) {
            CHECK(e.shifts[3 * k + q] == expect[k][q]);
            CHECK(e.vectors[3 * k + q] == -(double)expect[k][q]);
        }
    }
    /* rc exactly 1: |v| = 1 is not < 1, no edge. */
    CHECK_OK(tsr_atoms_edges(a, 1.0, &e));
    CHECK(e.count == 0);
    tsr_atoms_destroy(a);
    tsr_edges_free(&e);

    /* Atoms on the faces and corners of the cell, and outside it. */
    const double faces[] = {0,   0,   0,   3,   3,    3,   3,    0,   1.5, -1e-17, 1.5, 3,
                            1.5, 1.5, 1.5, 7.9, -4.1, 1.0, -3.0, 6.0, 9.0, 1.0,    1.0, -1e-300};
    check_against_brute_force("faces and outside", 8, faces, cubic, all, 2.5);
    check_against_brute_force("faces and outside, cutoff > cell", 8, faces, cubic, all, 7.3);
    check_against_brute_force("faces and outside, mixed", 8, faces, cubic, mixed, 4.0);
    check_against_brute_force("faces, no pbc", 8, faces, cubic, none, 4.0);
    check_against_brute_force("faces, no cell", 8, faces, NULL, none, 4.0);

    /* A cell with one non-periodic row of zeros (slab with no vacuum row). */
    const double slab[9] = {3, 0, 0, 1, 2.5, 0, 0, 0, 0};
    const int xy[3] = {1, 1, 0};
    check_against_brute_force("slab, zero third row", 8, faces, slab, xy, 3.3);
    const double wire[9] = {0, 0, 0, 0, 0, 0, 0.3, 0.4, 2.2};
    const int z_only[3] = {0, 0, 1};
    check_against_brute_force("wire", 8, faces, wire, z_only, 3.3);

    /* Random triclinic cells, every pbc combination, cutoffs from a
     * fraction of the cell to several cells. */
    uint64_t seed = 12345;
    for (int trial = 0; trial < 64; trial++) {
        int n = 1 + (int)(uniform(&seed) * 30);
        double cell[9], pos[3 * 31];
        for (int k = 0; k < 9; k++)
            cell[k] = (k % 4 == 0 ? 2 + 5 * uniform(&seed) : 0) + 2 * (uniform(&seed) - 0.5);
        for (int i = 0; i < n; i++)
            for (int q = 0; q < 3; q++) {
                double s0 = 1.6 * uniform(&seed) - 0.3, s1 = 1.6 * uniform(&seed) - 0.3,
                       s2 = 1.6 * uniform(&seed) - 0.3;
                pos[3 * i + q] = s0 * cell[q] + s1 * cell[3 + q] + s2 * cell[6 + q];
            }
        int pbc[3] = {trial & 1, (trial >> 1) & 1, (trial >> 2) & 1};
        double rc = 0.3 + 7 * uniform(&seed);
        char what[64];
        snprintf(what, sizeof what, "random triclinic %d", trial);
        check_against_brute_force(what, n, pos, cell, pbc, rc);
    }
}

/* Wrapping moves atoms by lattice vectors: the same edges (i, j, v) come
 * out, with other shifts, and the periodic fractional coordinates end up
 * in [0, 1). */
static void test_wrap(void)
{
    const double cell[9] = {4.1, 0.2, 0, -0.9, 3.7, 0.1, 0.5, -0.4, 5.2};
    const int pbc[3] = {1, 0, 1};
    enum { N = 40 };
    double pos[3 * N];
    int32_t z[N];
    uint64_t seed = 4242;
    for (int i = 0; i < N; i++) {
        z[i] = 6;
        for (int q = 0; q < 3; q++)
            pos[3 * i + q] = 20 * uniform(&seed) - 10;
    }
    tsr_atoms *a = NULL;
    CHECK_OK(tsr_atoms_create(N, z, pos, cell, pbc, &a));
    if (!a)
        return;
    tsr_edges before = {0}, after = {0};
    CHECK_OK(tsr_atoms_edges(a, 3.5, &before));
    CHECK_OK(tsr_atoms_wrap(a));
    CHECK_OK(tsr_atoms_edges(a, 3.5, &after));
    const double *r = tsr_atoms_positions(a);
    bool inside = true, moved_by_lattice = true;
    for (int i = 0; i < N; i++) {
        /* fractional coordinates along a and c (b is not periodic): solve
         * r = s0 a + s1 b + s2 c with Cramer's rule */
        double m[9], det, s[3];
        memcpy(m, cell, sizeof m);
        det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[3] * (m[1] * m[8] - m[2] * m[7]) +
              m[6] * (m[1] * m[5] - m[2] * m[4]);
        for (int k = 0; k < 3; k++) {
            double c[9];
            memcpy(c, m, sizeof c);
            for (int q = 0; q < 3; q++)
                c[3 * k + q] = r[3 * i + q];
            s[k] = (c[0] * (c[4] * c[8] - c[5] * c[7]) - c[3] * (c[1] * c[8] - c[2] * c[7]) +
                    c[6] * (c[1] * c[5] - c[2] * c[4])) /
                   det;
        }
        inside = inside && s[0] >= -1e-12 && s[0] < 1 + 1e-12 && s[2] >= -1e-12 && s[2] < 1 + 1e-12;
        double d[3], t[3];
        for (int q = 0; q < 3; q++)
            d[q] = pos[3 * i + q] - r[3 * i + q];
        for (int k = 0; k < 3; k++) { /* d in lattice units, integers on a and c, 0 on b */
            double c[9];
            memcpy(c, m, sizeof c);
            for (int q = 0; q < 3; q++)
                c[3 * k + q] = d[q];
            t[k] = (c[0] * (c[4] * c[8] - c[5] * c[7]) - c[3] * (c[1] * c[8] - c[2] * c[7]) +
                    c[6] * (c[1] * c[5] - c[2] * c[4])) /
                   det;
        }
        moved_by_lattice = moved_by_lattice && fabs(t[0] - round(t[0])) < 1e-9 &&
                           fabs(t[1]) < 1e-9 && fabs(t[2] - round(t[2])) < 1e-9;
    }
    CHECK(inside);
    CHECK(moved_by_lattice);
    /* Same (i, j) multiset and vectors: compare edges of each receiver by
     * sender and vector, order-independent through sorting by vector. */
    bool same = before.count == after.count;
    for (int64_t k = 0; same && k < before.count; k++) {
        bool found = false;
        for (int64_t q = after.offsets[before.receivers[k]];
             !found && q < after.offsets[before.receivers[k] + 1]; q++)
            found = after.senders[q] == before.senders[k] &&
                    fabs(after.vectors[3 * q] - before.vectors[3 * k]) < 1e-9 &&
                    fabs(after.vectors[3 * q + 1] - before.vectors[3 * k + 1]) < 1e-9 &&
                    fabs(after.vectors[3 * q + 2] - before.vectors[3 * k + 2]) < 1e-9;
        same = found;
    }
    CHECK(same && before.count > N);
    tsr_edges_free(&before);
    tsr_edges_free(&after);
    tsr_atoms_destroy(a);
}

static void test_neighbor_errors(void)
{
    const double flat[9] = {1, 0, 0, 0, 1, 0, 2, 0, 0}; /* c = 2a: singular */
    const double pos[3] = {0, 0, 0};
    const int32_t z = 1;
    tsr_atoms *a = NULL;
    CHECK(tsr_atoms_create(1, &z, pos, flat, NULL, &a) == TSR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(tsr_last_error(), "degenerate") != NULL);
    const int xy[3] = {1, 1, 0};
    CHECK_OK(tsr_atoms_create(1, &z, pos, flat, xy, &a)); /* the singular row is not periodic */
    tsr_edges e = {0};
    CHECK(tsr_atoms_edges(a, -1, &e) == TSR_ERR_INVALID_ARGUMENT);
    CHECK(tsr_atoms_edges(a, NAN, &e) == TSR_ERR_INVALID_ARGUMENT);
    tsr_atoms_destroy(a);
    const double thin[9] = {1e-7, 0, 0, 0, 1, 0, 0, 0, 1};
    CHECK_OK(tsr_atoms_create(1, &z, pos, thin, NULL, &a));
    CHECK(tsr_atoms_edges(a, 5, &e) == TSR_ERR_INVALID_ARGUMENT); /* refused, not hung */
    CHECK(strstr(tsr_last_error(), "thin") != NULL);
    tsr_atoms_destroy(a);
    const double inf_pos[3] = {INFINITY, 0, 0};
    CHECK(tsr_atoms_create(1, &z, inf_pos, NULL, NULL, &a) == TSR_ERR_INVALID_ARGUMENT);
    const int32_t bad_z = 119;
    CHECK(tsr_atoms_create(1, &bad_z, pos, NULL, NULL, &a) == TSR_ERR_INVALID_ARGUMENT);
    const int periodic[3] = {1, 0, 0};
    CHECK(tsr_atoms_create(1, &z, pos, NULL, periodic, &a) == TSR_ERR_INVALID_ARGUMENT);
    tsr_edges_free(&e);
}

/* MD-like motion: the skin list gives exactly the fresh edges at every
 * step, rebuilds rarely, and stops reallocating once warm. */
static void test_skin_list(void)
{
    enum { N = 64 };
    double cell[9] = {7.2, 0, 0, 0.6, 7.0, 0, -0.4, 0.3, 6.8}, pos[3 * N];
    int32_t z[N];
    uint64_t seed = 99;
    for (int i = 0; i < N; i++) {
        z[i] = 29;
        for (int q = 0; q < 3; q++)
            pos[3 * i + q] = 7 * uniform(&seed);
    }
    tsr_atoms *a = NULL;
    tsr_neighbor_list *list = NULL;
    CHECK_OK(tsr_atoms_create(N, z, pos, cell, NULL, &a));
    CHECK_OK(tsr_neighbor_list_create(3.0, 0.5, &list));
    if (!a || !list)
        return;
    tsr_edges got = {0}, fresh = {0};
    int rebuilt = 0, steps = 200, mismatches = 0;
    int64_t *buffer = NULL;
    int reallocs_late = 0;
    for (int step = 0; step < steps; step++) {
        double *r = tsr_atoms_positions_mutable(a);
        for (int k = 0; k < 3 * N; k++)
            r[k] += 0.02 * (uniform(&seed) - 0.5);
        CHECK_OK(tsr_neighbor_list_update(list, a, &got, &rebuilt));
        CHECK_OK(tsr_atoms_edges(a, 3.0, &fresh));
        bool same = got.count == fresh.count;
        for (int64_t k = 0; same && k < got.count; k++) {
            same = got.receivers[k] == fresh.receivers[k] && got.senders[k] == fresh.senders[k];
            for (int q = 0; q < 3; q++)
                same = same && got.shifts[3 * k + q] == fresh.shifts[3 * k + q] &&
                       got.vectors[3 * k + q] == fresh.vectors[3 * k + q];
        }
        mismatches += !same;
        if (step > 100 && got.receivers != buffer)
            reallocs_late++;
        buffer = got.receivers;
    }
    CHECK(mismatches == 0);
    int64_t builds = tsr_neighbor_list_builds(list);
    CHECK(builds >= 2 && builds < steps / 4);
    CHECK(reallocs_late <= 1);
    /* A cell thinner than half the skin, atoms wrapped back at every step:
     * jumps by lattice vectors shorter than skin / 2 reuse the pairs, and
     * the stored shifts must still give the fresh edges. */
    const double tiny[9] = {0.9, 0, 0, 0.2, 1.0, 0, 0, 0.1, 1.1};
    const double start[9] = {0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.8, 0.1, 0.9};
    tsr_atoms *t = NULL;
    tsr_neighbor_list *tl = NULL;
    CHECK_OK(tsr_atoms_create(3, z, start, tiny, NULL, &t));
    CHECK_OK(tsr_neighbor_list_create(2.0, 2.5, &tl));
    int tiny_mismatches = 0;
    for (int step = 0; t && tl && step < 100; step++) {
        double *r = tsr_atoms_positions_mutable(t);
        for (int k = 0; k < 9; k++)
            r[k] += 0.2 * (uniform(&seed) - 0.5);
        CHECK_OK(tsr_atoms_wrap(t));
        CHECK_OK(tsr_neighbor_list_update(tl, t, &got, &rebuilt));
        CHECK_OK(tsr_atoms_edges(t, 2.0, &fresh));
        bool same = got.count == fresh.count;
        for (int64_t k = 0; same && k < got.count; k++)
            same = got.senders[k] == fresh.senders[k] && got.receivers[k] == fresh.receivers[k] &&
                   memcmp(got.shifts + 3 * k, fresh.shifts + 3 * k, 3 * sizeof(int32_t)) == 0;
        tiny_mismatches += !same;
    }
    CHECK(tiny_mismatches == 0);
    CHECK(tsr_neighbor_list_builds(tl) < 50); /* the pairs were reused across wraps */
    tsr_neighbor_list_destroy(tl);
    tsr_atoms_destroy(t);
    /* A blown-up position is an error, not a silently shorter list. */
    double saved = tsr_atoms_positions_mutable(a)[4];
    tsr_atoms_positions_mutable(a)[4] = NAN;
    CHECK(tsr_neighbor_list_update(list, a, &got, &rebuilt) == TSR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(tsr_last_error(), "atom 1 has a non-finite position") != NULL);
    CHECK(tsr_atoms_edges(a, 3.0, &fresh) == TSR_ERR_INVALID_ARGUMENT);
    tsr_atoms_positions_mutable(a)[4] = saved;
    /* A changed cell forces a rebuild. */
    cell[0] = 7.3;
    CHECK_OK(tsr_atoms_set_cell(a, cell, NULL));
    CHECK_OK(tsr_neighbor_list_update(list, a, &got, &rebuilt));
    CHECK(rebuilt == 1);
    tsr_edges_free(&got);
    tsr_edges_free(&fresh);
    tsr_neighbor_list_destroy(list);
    tsr_atoms_destroy(a);
}

/* --------------------------------------------------------------- files */

static void path_in_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
}

/* The file fails to read with a message naming `file:line` and `words`,
 * and hands back nothing. */
static void expect_parse_error(const char *name, const char *text, int line, const char *words)
{
    char path[512], where[600];
    path_in_dir(path, sizeof path, name);
    write_text(path, text);
    int64_t n = 7;
    tsr_atoms **frames = (tsr_atoms **)&n;
    tsr_status st = tsr_extxyz_read(path, &n, &frames);
    snprintf(where, sizeof where, "%s:%d:", path, line);
    bool ok = st == TSR_ERR_PARSE && n == 0 && frames == NULL &&
              strstr(tsr_last_error(), where) != NULL && strstr(tsr_last_error(), words) != NULL;
    if (!ok)
        fprintf(stderr, "%s: status %d, message: %s\n", name, (int)st, tsr_last_error());
    CHECK(ok);
}

static void test_extxyz_errors(void)
{
    const char *good = "2\nProperties=species:S:1:pos:R:3\nH 0 0 0\nO 1 1 1\n";
    char text[1024];
    expect_parse_error("trunc.xyz", "3\nenergy=1\nH 0 0 0\nH 1 1 1\n", 4,
                       "promised 3 atoms, only 2");
    snprintf(text, sizeof text, "%s%s", good, "2\nenergy=1\nH 0 0 0\n");
    expect_parse_error("trunc2.xyz", text, 7, "only 1 atom lines");
    expect_parse_error("nocomment.xyz", "1\n", 1, "before the comment line");
    expect_parse_error("columns.xyz", "2\n\nH 0 0 0\nH 1 1\n", 4, "has 3 columns");
    expect_parse_error("columns2.xyz",
                       "1\nProperties=species:S:1:pos:R:3:forces:R:3\nH 0 0 0 1 2\n", 3, "wants 7");
    expect_parse_error("number.xyz", "1\n\nH 0 0.5.1 0\n", 3, "'0.5.1' is not a real number");
    expect_parse_error("int.xyz", "1\nProperties=species:S:1:pos:R:3:tag:I:1\nH 0 0 0 1.5\n", 3,
                       "is not an integer");
    expect_parse_error("species.xyz", "2\n\nH 0 0 0\nQq 1 1 1\n", 4, "unknown species symbol 'Qq'");
    expect_parse_error("nan.xyz", "1\n\nH nan 0 0\n", 3, "non-finite position");
    expect_parse_error("inf.xyz", "1\n\nH 0 0 -inf\n", 3, "non-finite position");
    expect_parse_error("count.xyz", "two\n\n", 1, "expected the atom count");
    expect_parse_error("count2.xyz", "-1\n\n", 1, "expected the atom count");
    expect_parse_error("huge.xyz", "100000\n\nH 0 0 0\n", 1, "more than the");
    expect_parse_error("lattice.xyz", "1\nLattice=\"1 0 0 0 1 0 0 0\"\nH 0 0 0\n", 2, "9 numbers");
    expect_parse_error("lattice2.xyz", "1\nLattice=\"1 0 0 0 1 0 0 0 nan\"\nH 0 0 0\n", 2,
                       "not a finite number");
    expect_parse_error("singular.xyz", "1\nLattice=\"1 0 0 2 0 0 0 0 1\"\nH 0 0 0\n", 2,
                       "degenerate");
    expect_parse_error("quote.xyz", "1\nname=\"abc\nH 0 0 0\n", 2, "not closed");
    expect_parse_error("type.xyz", "1\nProperties=species:S:1:pos:X:3\nH 0 0 0\n", 2, "type 'X'");
    expect_parse_error("props.xyz", "1\nProperties=species:S:1:pos:R\nH 0 0 0\n", 2,
                       "name:type:count");
    expect_parse_error("nopos.xyz", "1\nProperties=species:S:1:x:R:3\nH 0 0 0\n", 2, "no pos:R:3");
    expect_parse_error("pbc.xyz", "1\npbc=\"T T\"\nH 0 0 0\n", 2, "three of T and F");
    expect_parse_error("pbc2.xyz", "1\npbc=\"T F F\"\nH 0 0 0\n", 2, "no Lattice");
    expect_parse_error("twice.xyz",
                       "1\nLattice=\"1 0 0 0 1 0 0 0 1\" Lattice=\"2 0 0 0 2 0 0 0 2\"\nH 0 0 0\n",
                       2, "given twice");
    expect_parse_error("zmismatch.xyz", "1\nProperties=species:S:1:pos:R:3:Z:I:1\nH 0 0 0 8\n", 3,
                       "disagrees");
    char path[512];
    path_in_dir(path, sizeof path, "missing.xyz");
    int64_t n;
    tsr_atoms **frames;
    CHECK(tsr_extxyz_read(path, &n, &frames) == TSR_ERR_IO);
    CHECK(strstr(tsr_last_error(), "missing.xyz") != NULL);
}

static bool same_value(const tsr_atoms_value *a, const tsr_atoms_value *b)
{
    if (strcmp(a->name, b->name) || a->type != b->type || a->rows != b->rows || a->cols != b->cols)
        return false;
    for (int64_t k = 0; k < a->rows * a->cols; k++) {
        if (a->type == TSR_ATOMS_REAL && memcmp(&a->reals[k], &b->reals[k], sizeof(double)))
            return false;
        if ((a->type == TSR_ATOMS_INT || a->type == TSR_ATOMS_BOOL) && a->ints[k] != b->ints[k])
            return false;
        if (a->type == TSR_ATOMS_STRING && strcmp(a->strings[k], b->strings[k]))
            return false;
    }
    return true;
}

static bool same_atoms(const tsr_atoms *a, const tsr_atoms *b, bool values)
{
    int64_t n = tsr_atoms_count(a);
    if (n != tsr_atoms_count(b))
        return false;
    if (n && (memcmp(tsr_atoms_numbers(a), tsr_atoms_numbers(b), (size_t)n * sizeof(int32_t)) ||
              memcmp(tsr_atoms_positions(a), tsr_atoms_positions(b), (size_t)n * 3 * 8)))
        return false;
    double ca[9], cb[9];
    int pa[3], pb[3];
    if (tsr_atoms_cell(a, ca, pa) != tsr_atoms_cell(b, cb, pb) || memcmp(ca, cb, sizeof ca) ||
        memcmp(pa, pb, sizeof pa))
        return false;
    if (!values)
        return true;
    if (tsr_atoms_info_count(a) != tsr_atoms_info_count(b) ||
        tsr_atoms_array_count(a) != tsr_atoms_array_count(b))
        return false;
    for (int k = 0; k < tsr_atoms_info_count(a); k++) {
        tsr_atoms_value va, vb;
        if (tsr_atoms_info_at(a, k, &va) || tsr_atoms_get_info(b, va.name, &vb) ||
            !same_value(&va, &vb))
            return false;
    }
    for (int k = 0; k < tsr_atoms_array_count(a); k++) {
        tsr_atoms_value va, vb;
        if (tsr_atoms_array_at(a, k, &va) || tsr_atoms_array_at(b, k, &vb) || !same_value(&va, &vb))
            return false;
    }
    return true;
}

/* Three frames: periodic with every kind of value, a molecule, and an
 * empty frame. */
static void make_frames(tsr_atoms **f)
{
    const double cell[9] = {4.05, 0, 0, 0.1, 3.9, 0, -0.3, 0.2, 5.0};
    const double pos[9] = {0.1, 1.0 / 3.0, -2.5e-7, 3.999999999999, 1e-300, 2, -1, 7.5, 1e10};
    const int32_t z[3] = {1, 29, 0};
    const int pbc[3] = {1, 0, 1};
    CHECK_OK(tsr_atoms_create(3, z, pos, cell, pbc, &f[0]));
    CHECK_OK(tsr_atoms_create(2, z + 1, pos + 3, NULL, NULL, &f[1]));
    CHECK_OK(tsr_atoms_create(0, NULL, NULL, NULL, NULL, &f[2]));
    if (!f[0] || !f[1] || !f[2])
        return;
    const double forces[9] = {0.1, -0.2, 0.3, 1e-17, 5, 6, -7, 8.25, 0.1 + 0.2};
    const double stress[9] = {1, 2, 3, 2, 5, 6, 3, 6, 9};
    CHECK_OK(tsr_atoms_set_energy(f[0], -123.456789012345678));
    CHECK_OK(tsr_atoms_set_forces(f[0], forces));
    CHECK_OK(tsr_atoms_set_stress(f[0], stress));
    const int64_t tags[3] = {4, -5, 6}, flags[3] = {1, 0, 1}, counts[2] = {3, 4};
    const char *labels[3] = {"a", "bb", "c_1"};
    const char *text[1] = {"bulk \"fcc\" \\ test"};
    const double one = 1.0;
    tsr_atoms_value v[] = {
        {.name = "tags", .type = TSR_ATOMS_INT, .rows = 3, .cols = 1, .ints = tags},
        {.name = "fixed", .type = TSR_ATOMS_BOOL, .rows = 3, .cols = 1, .ints = flags},
        {.name = "label", .type = TSR_ATOMS_STRING, .rows = 3, .cols = 1, .strings = labels},
    };
    for (int k = 0; k < 3; k++)
        CHECK_OK(tsr_atoms_set_array(f[0], &v[k]));
    tsr_atoms_value info[] = {
        {.name = "config_type", .type = TSR_ATOMS_STRING, .rows = 1, .cols = 1, .strings = text},
        {.name = "counts", .type = TSR_ATOMS_INT, .rows = 1, .cols = 2, .ints = counts},
        {.name = "ok", .type = TSR_ATOMS_BOOL, .rows = 1, .cols = 1, .ints = flags},
        {.name = "weight", .type = TSR_ATOMS_REAL, .rows = 1, .cols = 1, .reals = &one},
    };
    for (int k = 0; k < 4; k++)
        CHECK_OK(tsr_atoms_set_info(f[0], &info[k]));
    CHECK_OK(tsr_atoms_set_energy(f[1], 2.0));
}

static void test_extxyz_round_trip(void)
{
    tsr_atoms *f[3] = {NULL, NULL, NULL};
    make_frames(f);
    if (!f[0] || !f[1] || !f[2])
        return;
    char path[512];
    path_in_dir(path, sizeof path, "round.xyz");
    CHECK_OK(tsr_extxyz_write(path, 3, (const tsr_atoms *const *)f));
    int64_t n = 0;
    tsr_atoms **back = NULL;
    CHECK_OK(tsr_extxyz_read(path, &n, &back));
    CHECK(n == 3);
    for (int k = 0; k < 3 && k < n; k++)
        CHECK(same_atoms(f[k], back[k], true));
    double e, s[9];
    const double *forces;
    if (n == 3) {
        CHECK_OK(tsr_atoms_energy(back[0], &e));
        CHECK(e == -123.456789012345678);
        CHECK_OK(tsr_atoms_stress(back[0], s));
        CHECK(s[5] == 6 && s[7] == 6);
        CHECK_OK(tsr_atoms_forces(back[0], &forces));
        CHECK(forces[8] == 0.1 + 0.2);
        CHECK(tsr_atoms_forces(back[1], &forces) == TSR_ERR_NOT_FOUND);
    }
    tsr_atoms_destroy_frames(n, back);

    /* A failed write leaves the old file alone: a string column with a
     * space cannot be written. */
    const char *bad[3] = {"x y", "b", "c"};
    tsr_atoms_value v = {
        .name = "label", .type = TSR_ATOMS_STRING, .rows = 3, .cols = 1, .strings = bad};
    CHECK_OK(tsr_atoms_set_array(f[0], &v));
    CHECK(tsr_extxyz_write(path, 3, (const tsr_atoms *const *)f) == TSR_ERR_INVALID_ARGUMENT);
    CHECK_OK(tsr_extxyz_read(path, &n, &back));
    CHECK(n == 3);
    tsr_atoms_destroy_frames(n, back);

    /* Appending: frames by frame, the file grows and reads back whole; a
     * failed append leaves it as it was. */
    path_in_dir(path, sizeof path, "traj.xyz");
    CHECK_OK(tsr_extxyz_append(path, 1, (const tsr_atoms *const *)&f[1]));
    CHECK_OK(tsr_extxyz_append(path, 2, (const tsr_atoms *const *)&f[1]));
    CHECK(tsr_extxyz_append(path, 1, (const tsr_atoms *const *)&f[0]) ==
          TSR_ERR_INVALID_ARGUMENT); /* f[0] still has the unwritable label */
    CHECK_OK(tsr_extxyz_read(path, &n, &back));
    CHECK(n == 3);
    if (n == 3)
        CHECK(same_atoms(back[0], f[1], true) && same_atoms(back[1], f[1], true) &&
              same_atoms(back[2], f[2], true));
    tsr_atoms_destroy_frames(n, back);

    /* A position that became NaN (through the mutable pointer) is refused
     * too, and the old file stays. */
    tsr_atoms *blown = NULL;
    CHECK_OK(tsr_atoms_clone(f[1], &blown));
    if (blown) {
        tsr_atoms_positions_mutable(blown)[2] = NAN;
        CHECK(tsr_extxyz_write(path, 1, (const tsr_atoms *const *)&blown) ==
              TSR_ERR_INVALID_ARGUMENT);
        CHECK(strstr(tsr_last_error(), "atom 0 has a non-finite position") != NULL);
        CHECK_OK(tsr_extxyz_read(path, &n, &back));
        CHECK(n == 3);
        tsr_atoms_destroy_frames(n, back);
        tsr_atoms_destroy(blown);
    }

    /* Voigt stress, bare keys, braces, default properties and pbc. */
    path_in_dir(path, sizeof path, "plain.xyz");
    write_text(path, "2\nLattice=\"2 0 0 0 2 0 0 0 2\" stress={1, 2, 3, 4, 5, 6} relaxed "
                     "\"odd key\"=x\nHe 0 0 0\nNe 1 1 1\n\n\n");
    CHECK_OK(tsr_extxyz_read(path, &n, &back));
    CHECK(n == 1);
    if (n == 1) {
        int pbc[3];
        CHECK(tsr_atoms_cell(back[0], NULL, pbc) == 1 && pbc[0] && pbc[1] && pbc[2]);
        CHECK(tsr_atoms_numbers(back[0])[1] == 10);
        CHECK_OK(tsr_atoms_stress(back[0], s));
        const double full[9] = {1, 6, 5, 6, 2, 4, 5, 4, 3};
        CHECK(memcmp(s, full, sizeof s) == 0);
        tsr_atoms_value b;
        CHECK_OK(tsr_atoms_get_info(back[0], "relaxed", &b));
        CHECK(b.type == TSR_ATOMS_BOOL && b.ints[0] == 1);
        CHECK_OK(tsr_atoms_get_info(back[0], "odd key", &b));
        CHECK(b.type == TSR_ATOMS_STRING && strcmp(b.strings[0], "x") == 0);
    }
    tsr_atoms_destroy_frames(n, back);
    for (int k = 0; k < 3; k++)
        tsr_atoms_destroy(f[k]);
}

static void test_npz(void)
{
    tsr_atoms *f[3] = {NULL, NULL, NULL};
    make_frames(f);
    if (!f[0] || !f[1] || !f[2])
        return;
    char path[512];
    path_in_dir(path, sizeof path, "one.npz");
    CHECK_OK(tsr_atoms_write_npz(path, 1, (const tsr_atoms *const *)f));
    int64_t n = 0;
    tsr_atoms **back = NULL;
    CHECK_OK(tsr_atoms_read_npz(path, &n, &back));
    CHECK(n == 1);
    if (n == 1) {
        CHECK(same_atoms(f[0], back[0], false));
        double e, s[9], s0[9];
        const double *fa, *fb;
        CHECK(tsr_atoms_energy(back[0], &e) == TSR_OK && e == -123.456789012345678);
        CHECK_OK(tsr_atoms_forces(back[0], &fb));
        CHECK_OK(tsr_atoms_forces(f[0], &fa));
        CHECK(memcmp(fa, fb, 9 * sizeof *fa) == 0);
        CHECK_OK(tsr_atoms_stress(back[0], s));
        CHECK_OK(tsr_atoms_stress(f[0], s0));
        CHECK(memcmp(s, s0, sizeof s) == 0);
    }
    tsr_atoms_destroy_frames(n, back);

    /* Frames of different sizes do not fit one array; the file stays. */
    CHECK(tsr_atoms_write_npz(path, 2, (const tsr_atoms *const *)f) == TSR_ERR_SHAPE);
    CHECK(strstr(tsr_last_error(), "frame 1 has 2 atoms") != NULL);
    CHECK_OK(tsr_atoms_read_npz(path, &n, &back));
    tsr_atoms_destroy_frames(n, back);

    /* Several frames of one size, one with a cell, one without. */
    tsr_atoms *g[2] = {f[1], NULL};
    CHECK_OK(tsr_atoms_clone(f[1], &g[1]));
    if (g[1]) {
        const double cell[9] = {5, 0, 0, 0, 5, 0, 0, 0, 5};
        tsr_atoms_positions_mutable(g[1])[4] = 0.125;
        CHECK_OK(tsr_atoms_set_cell(g[1], cell, NULL));
        CHECK_OK(tsr_atoms_set_energy(g[1], -1.5));
        path_in_dir(path, sizeof path, "two.npz");
        CHECK_OK(tsr_atoms_write_npz(path, 2, (const tsr_atoms *const *)g));
        CHECK_OK(tsr_atoms_read_npz(path, &n, &back));
        CHECK(n == 2);
        for (int k = 0; k < 2 && k < n; k++)
            CHECK(same_atoms(g[k], back[k], false));
        tsr_atoms_destroy_frames(n, back);
        tsr_atoms_destroy(g[1]);
    }

    /* Archives without positions, or with the wrong shapes, are errors
     * naming the array; nothing is returned. */
    path_in_dir(path, sizeof path, "bad.npz");
    int64_t z[2] = {1, 1};
    double p4[4] = {0, 0, 0, 1};
    tsr_tensor t[2] = {{.dtype = TSR_INT64, .rank = 1, .dims = {2}, .data = z},
                       {.dtype = TSR_FLOAT64, .rank = 2, .dims = {2, 2}, .data = p4}};
    const char *names[2] = {"numbers", "positions"};
    CHECK_OK(tsr_npz_write(path, 1, names, t));
    back = (tsr_atoms **)&n;
    CHECK(tsr_atoms_read_npz(path, &n, &back) == TSR_ERR_NOT_FOUND);
    CHECK(strstr(tsr_last_error(), "'positions'") != NULL && back == NULL && n == 0);
    CHECK_OK(tsr_npz_write(path, 2, names, t));
    CHECK(tsr_atoms_read_npz(path, &n, &back) == TSR_ERR_SHAPE);
    CHECK(strstr(tsr_last_error(), "'positions' has shape [2, 2]") != NULL);
    path_in_dir(path, sizeof path, "absent.npz");
    CHECK(tsr_atoms_read_npz(path, &n, &back) == TSR_ERR_IO);
    for (int k = 0; k < 3; k++)
        tsr_atoms_destroy(f[k]);
}

static void test_values(void)
{
    tsr_atoms *a = NULL;
    const int32_t z[2] = {6, 8};
    const double pos[6] = {0, 0, 0, 1.2, 0, 0};
    CHECK_OK(tsr_atoms_create(2, z, pos, NULL, NULL, &a));
    if (!a)
        return;
    const double x = 1;
    tsr_atoms_value v = {.name = "pos", .type = TSR_ATOMS_REAL, .rows = 2, .cols = 1, .reals = &x};
    CHECK(tsr_atoms_set_array(a, &v) == TSR_ERR_INVALID_ARGUMENT); /* reserved */
    v.name = "q";
    v.rows = 1;
    CHECK(tsr_atoms_set_array(a, &v) == TSR_ERR_SHAPE); /* one row for two atoms */
    v.name = "a b";
    CHECK(tsr_atoms_set_info(a, &v) == TSR_ERR_INVALID_ARGUMENT);
    v.name = "a\vb"; /* a vertical tab: whitespace to ASE's reader */
    CHECK(tsr_atoms_set_info(a, &v) == TSR_ERR_INVALID_ARGUMENT);
    v.name = "\xc3\xa9nergie"; /* UTF-8, as the extxyz reader takes it */
    CHECK_OK(tsr_atoms_set_info(a, &v));
    CHECK_OK(tsr_atoms_remove_info(a, v.name));
    v.name = "Lattice";
    CHECK(tsr_atoms_set_info(a, &v) == TSR_ERR_INVALID_ARGUMENT);
    const char *two[2] = {"x", "y"};
    tsr_atoms_value strings = {
        .name = "s", .type = TSR_ATOMS_STRING, .rows = 1, .cols = 2, .strings = two};
    CHECK(tsr_atoms_set_info(a, &strings) == TSR_ERR_SHAPE);
    v.name = "e";
    CHECK_OK(tsr_atoms_set_info(a, &v));
    CHECK_OK(tsr_atoms_set_energy(a, 3.5));
    CHECK_OK(tsr_atoms_set_energy(a, 4.5)); /* replaces */
    CHECK(tsr_atoms_info_count(a) == 2);
    double e = 0;
    CHECK(tsr_atoms_energy(a, &e) == TSR_OK && e == 4.5);
    CHECK_OK(tsr_atoms_remove_info(a, "e"));
    CHECK(tsr_atoms_info_count(a) == 1);
    tsr_atoms_value got;
    CHECK(tsr_atoms_get_info(a, "e", &got) == TSR_ERR_NOT_FOUND);
    double s[9];
    CHECK(tsr_atoms_stress(a, s) == TSR_ERR_NOT_FOUND);
    CHECK(strcmp(tsr_atoms_symbol(29), "Cu") == 0 && tsr_atoms_number_of("Og") == 118);
    CHECK(tsr_atoms_symbol(119) == NULL && tsr_atoms_number_of("cu") == -1);
    tsr_atoms_destroy(a);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/tsr_test_atoms_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_neighbors_edge_cases();
    test_neighbor_errors();
    test_wrap();
    test_skin_list();
    test_values();
    test_extxyz_errors();
    test_extxyz_round_trip();
    test_npz();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return tsr_test_summary("test_atoms");
}

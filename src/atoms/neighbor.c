/* Neighbour lists by cell lists, O(N).
 *
 * Atoms are binned in a parallelepiped grid spanned by the periodic lattice
 * vectors (non-periodic axes are completed by unit vectors orthogonal to
 * them, and span only the atoms' extent). Along every axis a bin is at
 * least the search radius thick, measured perpendicular to the bin's faces
 * (the plane spacing h_k = 1 / |reciprocal vector k|), so an atom's
 * neighbours lie in the bins at most m_k = 1 away; a periodic cell thinner
 * than the radius gets one bin along that axis and m_k = ceil(radius / h_k)
 * images on each side, self-images included. Atoms are binned by their
 * wrapped fractional coordinates, but every vector is computed from the
 * positions as given, v = r_i - r_j - S·cell with S corrected by the wrap
 * counts, and tested against the radius there, so the result does not
 * depend on how atoms were binned. Each receiver's edges are then sorted
 * by (j, S): the order is a property of the structure, not of the grid. */
#include "atoms/atoms_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* More edges than this is a mistake (a cell far thinner than the cutoff),
 * not a structure: refuse before allocating tens of gigabytes. */
#define MAX_EDGES ((int64_t)1 << 31)
/* Candidate pairs examined, likewise: a bound on the time a build takes. */
#define MAX_CANDIDATES 1e11
/* Bin geometry uses a slightly larger radius so that rounding in the
 * fractional coordinates cannot push a neighbour one bin further than the
 * search reaches; acceptance uses the exact radius. */
#define GEOMETRY_PAD (1 + 1e-9)

void tsr_edges_init(tsr_edges *e)
{
    memset(e, 0, sizeof *e);
}

void tsr_edges_free(tsr_edges *e)
{
    if (!e)
        return;
    free(e->receivers);
    free(e->senders);
    free(e->shifts);
    free(e->vectors);
    free(e->offsets);
    tsr_edges_init(e);
}

static tsr_status grow_array(void **p, int64_t n, size_t elem)
{
    void *q = tsr_realloc(*p, (size_t)n * elem);
    if (!q)
        return TSR_ERR_OUT_OF_MEMORY;
    *p = q;
    return TSR_OK;
}

tsr_status tsr_edges_reserve(tsr_edges *e, int64_t capacity, int64_t n_atoms)
{
    if (!e || capacity < 0 || n_atoms < 0 || capacity > MAX_EDGES || n_atoms > INT64_MAX / 64)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_edges_reserve: bad request (%lld edges, %lld atoms; at most 2^31 "
                         "edges)",
                         (long long)capacity, (long long)n_atoms);
    if (capacity > e->capacity) {
        TSR_CHECK(grow_array((void **)&e->receivers, capacity, sizeof *e->receivers));
        TSR_CHECK(grow_array((void **)&e->senders, capacity, sizeof *e->senders));
        TSR_CHECK(grow_array((void **)&e->shifts, capacity, 3 * sizeof *e->shifts));
        TSR_CHECK(grow_array((void **)&e->vectors, capacity, 3 * sizeof *e->vectors));
        e->capacity = capacity;
    }
    if (n_atoms + 1 > e->offsets_capacity) {
        TSR_CHECK(grow_array((void **)&e->offsets, n_atoms + 1, sizeof *e->offsets));
        e->offsets_capacity = n_atoms + 1;
    }
    return TSR_OK;
}

/* Room for one more edge, growing by 1.25x. */
static tsr_status edges_room(tsr_edges *e, int64_t need)
{
    if (need <= e->capacity)
        return TSR_OK;
    if (need > MAX_EDGES)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "the neighbour list would have more than 2^31 edges (is the cell far "
                         "thinner than the cutoff?)");
    int64_t cap = e->capacity + e->capacity / 4;
    if (cap < need)
        cap = need;
    if (cap < 256)
        cap = 256;
    if (cap > MAX_EDGES)
        cap = MAX_EDGES;
    return tsr_edges_reserve(e, cap, e->offsets_capacity > 0 ? e->offsets_capacity - 1 : 0);
}

/* ------------------------------------------------------------ geometry */

static void cross(const double *a, const double *b, double *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

static void normalize(double *a)
{
    double n = sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]);
    for (int c = 0; c < 3; c++)
        a[c] /= n;
}

/* The binning basis (rows): the periodic lattice vectors, completed by unit
 * vectors orthogonal to them. */
static void binning_basis(const tsr_atoms *a, double b[9])
{
    int per[3], non[3], np = 0, nn = 0;
    for (int k = 0; k < 3; k++) {
        if (a->pbc[k])
            per[np++] = k;
        else
            non[nn++] = k;
    }
    memset(b, 0, 9 * sizeof *b);
    for (int k = 0; k < np; k++)
        memcpy(b + 3 * per[k], a->cell + 3 * per[k], 3 * sizeof *b);
    if (np == 0) {
        b[0] = b[4] = b[8] = 1;
    } else if (np == 1) {
        double u[3], e[3] = {0, 0, 0}, w1[3], w2[3];
        memcpy(u, a->cell + 3 * per[0], sizeof u);
        normalize(u);
        int least = 0;
        for (int c = 1; c < 3; c++)
            if (fabs(u[c]) < fabs(u[least]))
                least = c;
        e[least] = 1;
        cross(u, e, w1);
        normalize(w1);
        cross(u, w1, w2);
        normalize(w2);
        memcpy(b + 3 * non[0], w1, sizeof w1);
        memcpy(b + 3 * non[1], w2, sizeof w2);
    } else if (np == 2) {
        double w[3];
        cross(a->cell + 3 * per[0], a->cell + 3 * per[1], w);
        normalize(w);
        memcpy(b + 3 * non[0], w, sizeof w);
    }
}

/* inv = b^-1 (b was checked to be regular by tsr_atoms_check_cell). */
static void invert3(const double b[9], double inv[9])
{
    double c0[3], c1[3], c2[3];
    cross(b + 3, b + 6, c0);
    cross(b + 6, b, c1);
    cross(b, b + 3, c2);
    double det = b[0] * c0[0] + b[1] * c0[1] + b[2] * c0[2];
    for (int r = 0; r < 3; r++) {
        inv[3 * r + 0] = c0[r] / det;
        inv[3 * r + 1] = c1[r] / det;
        inv[3 * r + 2] = c2[r] / det;
    }
}

tsr_status tsr_atoms_wrap(tsr_atoms *a)
{
    if (!a)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_atoms_wrap: atoms is NULL");
    if (!a->pbc[0] && !a->pbc[1] && !a->pbc[2])
        return TSR_OK;
    /* Fractional coordinates of the cell itself, as ASE wraps, when all
     * three rows span space; otherwise the non-periodic rows are replaced
     * as for binning. */
    double b[9], inv[9], c[3];
    cross(a->cell + 3, a->cell + 6, c);
    double det = a->cell[0] * c[0] + a->cell[1] * c[1] + a->cell[2] * c[2];
    double scale =
        sqrt(a->cell[0] * a->cell[0] + a->cell[1] * a->cell[1] + a->cell[2] * a->cell[2]) *
        sqrt(a->cell[3] * a->cell[3] + a->cell[4] * a->cell[4] + a->cell[5] * a->cell[5]) *
        sqrt(a->cell[6] * a->cell[6] + a->cell[7] * a->cell[7] + a->cell[8] * a->cell[8]);
    if (fabs(det) > 1e-10 * scale)
        memcpy(b, a->cell, sizeof b);
    else
        binning_basis(a, b);
    invert3(b, inv);
    for (int64_t i = 0; i < a->n; i++) {
        double *r = a->positions + 3 * i, t[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++)
            if (a->pbc[k])
                t[k] = floor(r[0] * inv[k] + r[1] * inv[3 + k] + r[2] * inv[6 + k]);
        for (int c = 0; c < 3; c++)
            r[c] -= t[0] * a->cell[c] + t[1] * a->cell[3 + c] + t[2] * a->cell[6 + c];
    }
    return TSR_OK;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* ---------------------------------------------------------------- build */

typedef struct {
    int64_t j;
    int32_t s[3];
    double v[3];
} candidate;

/* The edge vector v = r_i - r_j - S.cell (cell rows are the lattice
 * vectors); returns |v|^2. */
static double edge_vector(const double *pos, const double *cell, int64_t i, int64_t j,
                          const int32_t s[3], double v[3])
{
    double d2 = 0;
    for (int c = 0; c < 3; c++) {
        v[c] = (pos[3 * i + c] - pos[3 * j + c]) -
               (s[0] * cell[c] + s[1] * cell[3 + c] + s[2] * cell[6 + c]);
        d2 += v[c] * v[c];
    }
    return d2;
}

static int candidate_order(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    if (a->j != b->j)
        return a->j < b->j ? -1 : 1;
    for (int k = 0; k < 3; k++)
        if (a->s[k] != b->s[k])
            return a->s[k] < b->s[k] ? -1 : 1;
    return 0;
}

typedef struct {
    int64_t n[3];     /* bins per axis */
    int64_t m[3];     /* bin offsets searched on each side */
    int64_t *start;   /* [bins + 1] */
    int64_t *members; /* [n_atoms], by bin */
    int64_t *bin_of;  /* [n_atoms][3] */
    int32_t *wraps;   /* [n_atoms][3]: lattice vectors removed to wrap */
} grid;

static void grid_free(grid *g)
{
    free(g->start);
    free(g->members);
    free(g->bin_of);
    free(g->wraps);
}

static tsr_status grid_build(const tsr_atoms *a, double radius, grid *g)
{
    memset(g, 0, sizeof *g);
    int64_t n = a->n;
    double b[9], inv[9], h[3], lo[3], hi[3];
    binning_basis(a, b);
    invert3(b, inv);
    for (int k = 0; k < 3; k++) {
        h[k] = 1 / sqrt(inv[k] * inv[k] + inv[3 + k] * inv[3 + k] + inv[6 + k] * inv[6 + k]);
        lo[k] = INFINITY;
        hi[k] = -INFINITY;
    }
    double *frac = tsr_malloc((size_t)n * 3 * sizeof *frac);
    g->bin_of = tsr_malloc((size_t)n * 3 * sizeof *g->bin_of);
    g->wraps = tsr_calloc((size_t)n * 3, sizeof *g->wraps);
    g->members = tsr_malloc((size_t)n * sizeof *g->members);
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!frac || !g->bin_of || !g->wraps || !g->members)
        goto cleanup;
    for (int64_t i = 0; i < n; i++) {
        const double *r = a->positions + 3 * i;
        for (int k = 0; k < 3; k++) {
            double s = r[0] * inv[k] + r[1] * inv[3 + k] + r[2] * inv[6 + k];
            if (!isfinite(s)) { /* positions are writable: MD can blow up */
                st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                               "atom %lld has a non-finite position (%g %g %g)", (long long)i, r[0],
                               r[1], r[2]);
                goto cleanup;
            }
            if (a->pbc[k]) {
                double t = floor(s);
                if (fabs(t) > 1e8) {
                    st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                   "atom %lld lies %.3g cells away from the cell", (long long)i, t);
                    goto cleanup;
                }
                s -= t;
                if (s >= 1) { /* -1e-17 - floor(-1e-17) rounds to 1 */
                    s = 0;
                    t += 1;
                }
                g->wraps[3 * i + k] = (int32_t)t;
            } else {
                lo[k] = s < lo[k] ? s : lo[k];
                hi[k] = s > hi[k] ? s : hi[k];
            }
            frac[3 * i + k] = s;
        }
    }
    double rp = radius * GEOMETRY_PAD;
    double extent[3];
    for (int k = 0; k < 3; k++) {
        extent[k] = a->pbc[k] ? 1 : (n > 0 ? hi[k] - lo[k] : 0);
        double bins = floor(extent[k] * h[k] / rp);
        g->n[k] = bins < 1 ? 1 : bins > 1e6 ? 1000000 : (int64_t)bins;
    }
    /* At most about two bins per atom: sparse structures (a few atoms far
     * apart) get coarser bins instead of a huge grid. */
    int64_t max_bins = 2 * n + 8;
    while (g->n[0] * g->n[1] * g->n[2] > max_bins) {
        int k = g->n[0] >= g->n[1] && g->n[0] >= g->n[2] ? 0 : g->n[1] >= g->n[2] ? 1 : 2;
        g->n[k] = (g->n[k] + 1) / 2;
    }
    double visits = 1;
    for (int k = 0; k < 3; k++) {
        double width = extent[k] * h[k] / (double)g->n[k]; /* perpendicular bin thickness */
        double m = width > 0 ? ceil(rp / width) : 0;
        if (!a->pbc[k] && m > (double)(g->n[k] - 1))
            m = (double)(g->n[k] - 1);
        if (a->pbc[k] && m > 1e6) {
            st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                           "the cell is %.3g thick along axis %d, %.3g times thinner than the "
                           "cutoff %g: too many periodic images",
                           h[k], k, radius / h[k], radius);
            goto cleanup;
        }
        g->m[k] = (int64_t)m;
        visits *= 2 * m + 1;
    }
    int64_t bins = g->n[0] * g->n[1] * g->n[2];
    if ((double)n * (double)n / (double)bins * visits > MAX_CANDIDATES) {
        st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                       "a neighbour list of %lld atoms with cutoff %g in this cell would examine "
                       "about %.3g pairs; the cell is far thinner than the cutoff",
                       (long long)n, radius, (double)n * (double)n / (double)bins * visits);
        goto cleanup;
    }
    g->start = tsr_calloc((size_t)bins + 1, sizeof *g->start);
    if (!g->start)
        goto cleanup;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = 0;
        for (int k = 0; k < 3; k++) {
            double s = frac[3 * i + k];
            double u = a->pbc[k] ? s : (extent[k] > 0 ? (s - lo[k]) / extent[k] : 0);
            int64_t c = (int64_t)(u * (double)g->n[k]);
            c = c < 0 ? 0 : c >= g->n[k] ? g->n[k] - 1 : c;
            g->bin_of[3 * i + k] = c;
            id = id * g->n[k] + c;
        }
        g->start[id + 1]++;
    }
    for (int64_t c = 0; c < bins; c++)
        g->start[c + 1] += g->start[c];
    /* Counting sort, stable: atoms keep ascending order inside a bin. */
    int64_t *fill = tsr_malloc((size_t)bins * sizeof *fill);
    if (!fill)
        goto cleanup;
    memcpy(fill, g->start, (size_t)bins * sizeof *fill);
    for (int64_t i = 0; i < n; i++) {
        const int64_t *c = g->bin_of + 3 * i;
        g->members[fill[(c[0] * g->n[1] + c[1]) * g->n[2] + c[2]]++] = i;
    }
    free(fill);
    st = TSR_OK;
cleanup:
    free(frac);
    if (st != TSR_OK)
        grid_free(g);
    return st;
}

/* Every edge within `radius`, in the documented order, into `out`. */
static tsr_status build_edges(const tsr_atoms *a, double radius, tsr_edges *out)
{
    int64_t n = a->n;
    TSR_CHECK(tsr_edges_reserve(out, out->capacity, n));
    out->count = 0;
    out->n_atoms = n;
    out->offsets[0] = 0;
    if (n == 0)
        return TSR_OK;
    grid g;
    TSR_CHECK(grid_build(a, radius, &g));
    candidate *buf = NULL;
    int buf_cap = 0;
    tsr_status st = TSR_OK;
    const double r2 = radius * radius;
    const double *cell = a->cell, *pos = a->positions;
    for (int64_t i = 0; i < n && st == TSR_OK; i++) {
        int found = 0;
        const int64_t *bi = g.bin_of + 3 * i;
        const int32_t *ti = g.wraps + 3 * i;
        for (int64_t ox = -g.m[0]; ox <= g.m[0]; ox++) {
            int64_t cx = bi[0] + ox, sx = floor_div(cx, g.n[0]);
            if (sx != 0 && !a->pbc[0])
                continue;
            cx -= sx * g.n[0];
            for (int64_t oy = -g.m[1]; oy <= g.m[1]; oy++) {
                int64_t cy = bi[1] + oy, sy = floor_div(cy, g.n[1]);
                if (sy != 0 && !a->pbc[1])
                    continue;
                cy -= sy * g.n[1];
                for (int64_t oz = -g.m[2]; oz <= g.m[2]; oz++) {
                    int64_t cz = bi[2] + oz, sz = floor_div(cz, g.n[2]);
                    if (sz != 0 && !a->pbc[2])
                        continue;
                    cz -= sz * g.n[2];
                    int64_t bin = (cx * g.n[1] + cy) * g.n[2] + cz;
                    for (int64_t p = g.start[bin]; p < g.start[bin + 1]; p++) {
                        int64_t j = g.members[p];
                        const int32_t *tj = g.wraps + 3 * j;
                        int32_t s[3] = {(int32_t)(sx + ti[0] - tj[0]),
                                        (int32_t)(sy + ti[1] - tj[1]),
                                        (int32_t)(sz + ti[2] - tj[2])};
                        if (j == i && s[0] == 0 && s[1] == 0 && s[2] == 0)
                            continue;
                        double v[3], d2 = edge_vector(pos, cell, i, j, s, v);
                        if (!(d2 < r2))
                            continue;
                        if (found == buf_cap && (st = tsr_grow((void **)&buf, &buf_cap, found + 1,
                                                               sizeof *buf)) != TSR_OK)
                            goto cleanup;
                        candidate *c = buf + found++;
                        c->j = j;
                        memcpy(c->s, s, sizeof s);
                        memcpy(c->v, v, sizeof v);
                    }
                }
            }
        }
        if (found > 1)
            qsort(buf, (size_t)found, sizeof *buf, candidate_order);
        if ((st = edges_room(out, out->count + found)) != TSR_OK)
            goto cleanup;
        for (int k = 0; k < found; k++) {
            int64_t e = out->count++;
            out->receivers[e] = i;
            out->senders[e] = buf[k].j;
            memcpy(out->shifts + 3 * e, buf[k].s, sizeof buf[k].s);
            memcpy(out->vectors + 3 * e, buf[k].v, sizeof buf[k].v);
        }
        out->offsets[i + 1] = out->count;
    }
cleanup:
    free(buf);
    grid_free(&g);
    if (st != TSR_OK)
        out->count = 0;
    return st;
}

static tsr_status check_args(const tsr_atoms *a, double cutoff, const tsr_edges *e, const char *fn)
{
    if (!a || !e)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "%s: NULL argument", fn);
    if (!(cutoff > 0) || !isfinite(cutoff))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "%s: the cutoff must be positive and finite "
                         "(got %g)",
                         fn, cutoff);
    return TSR_OK;
}

tsr_status tsr_atoms_edges(const tsr_atoms *atoms, double cutoff, tsr_edges *edges)
{
    TSR_CHECK(check_args(atoms, cutoff, edges, "tsr_atoms_edges"));
    return build_edges(atoms, cutoff, edges);
}

/* ---------------------------------------------------------- with a skin */

struct tsr_neighbor_list {
    double cutoff, skin;
    tsr_edges pairs;   /* within cutoff + skin at the last build */
    double *reference; /* positions at the last build [n][3] */
    int64_t n;
    double cell[9];
    int pbc[3];
    int built;
    int64_t builds;
};

tsr_status tsr_neighbor_list_create(double cutoff, double skin, tsr_neighbor_list **out)
{
    if (!out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_neighbor_list_create: list_out is NULL");
    *out = NULL;
    if (!(cutoff > 0) || !isfinite(cutoff) || !(skin >= 0) || !isfinite(skin))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "tsr_neighbor_list_create: cutoff must be > 0 and skin >= 0, both "
                         "finite (got %g and %g)",
                         cutoff, skin);
    tsr_neighbor_list *l = tsr_calloc(1, sizeof *l);
    if (!l)
        return TSR_ERR_OUT_OF_MEMORY;
    l->cutoff = cutoff;
    l->skin = skin;
    *out = l;
    return TSR_OK;
}

void tsr_neighbor_list_destroy(tsr_neighbor_list *l)
{
    if (!l)
        return;
    tsr_edges_free(&l->pairs);
    free(l->reference);
    free(l);
}

int64_t tsr_neighbor_list_builds(const tsr_neighbor_list *l)
{
    return l ? l->builds : 0;
}

static bool needs_rebuild(const tsr_neighbor_list *l, const tsr_atoms *a)
{
    if (!l->built || a->n != l->n || memcmp(a->cell, l->cell, sizeof l->cell) != 0 ||
        memcmp(a->pbc, l->pbc, sizeof l->pbc) != 0)
        return true;
    double limit = 0.25 * l->skin * l->skin; /* (skin / 2)^2 */
    for (int64_t k = 0; k < a->n; k++) {
        double d2 = 0;
        for (int c = 0; c < 3; c++) {
            double d = a->positions[3 * k + c] - l->reference[3 * k + c];
            d2 += d * d;
        }
        if (!(d2 <= limit)) /* NaN too: the rebuild reports it */
            return true;
    }
    return false;
}

int tsr_neighbor_list_stale(const tsr_neighbor_list *l, const tsr_atoms *a)
{
    return l && a && needs_rebuild(l, a);
}

tsr_status tsr_neighbor_list_update(tsr_neighbor_list *l, const tsr_atoms *a, tsr_edges *out,
                                    int *rebuilt_out)
{
    if (rebuilt_out)
        *rebuilt_out = 0;
    TSR_CHECK(check_args(a, l ? l->cutoff : 1, out, "tsr_neighbor_list_update"));
    if (!l)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_neighbor_list_update: list is NULL");
    bool rebuild = needs_rebuild(l, a);
    if (rebuild) {
        l->built = 0;
        double *ref = tsr_realloc(l->reference, (size_t)a->n * 3 * sizeof *ref);
        if (!ref)
            return TSR_ERR_OUT_OF_MEMORY;
        l->reference = ref;
        TSR_CHECK(build_edges(a, l->cutoff + l->skin, &l->pairs));
        memcpy(l->reference, a->positions, (size_t)a->n * 3 * sizeof *ref);
        l->n = a->n;
        memcpy(l->cell, a->cell, sizeof l->cell);
        memcpy(l->pbc, a->pbc, sizeof l->pbc);
        l->built = 1;
        l->builds++;
    }
    /* The pairs are sorted as the edges must be: filtering keeps the order. */
    const tsr_edges *p = &l->pairs;
    TSR_CHECK(tsr_edges_reserve(out, out->capacity, a->n));
    out->count = 0;
    out->n_atoms = a->n;
    out->offsets[0] = 0;
    const double r2 = l->cutoff * l->cutoff;
    const double *cell = a->cell, *pos = a->positions;
    for (int64_t i = 0; i < a->n; i++) {
        for (int64_t q = p->offsets[i]; q < p->offsets[i + 1]; q++) {
            int64_t j = p->senders[q];
            const int32_t *s = p->shifts + 3 * q;
            double v[3], d2 = edge_vector(pos, cell, i, j, s, v);
            if (!(d2 < r2))
                continue;
            TSR_CHECK(edges_room(out, out->count + 1));
            int64_t e = out->count++;
            out->receivers[e] = i;
            out->senders[e] = j;
            memcpy(out->shifts + 3 * e, s, 3 * sizeof *s);
            memcpy(out->vectors + 3 * e, v, sizeof v);
        }
        out->offsets[i + 1] = out->count;
    }
    if (rebuilt_out)
        *rebuilt_out = rebuild;
    return TSR_OK;
}

/* The ICTP model through the C API (include/tessera/ictp.h), under the
 * sanitizers in the Debug build: a random-weight model written with every
 * key the loader expects, energies that add up, forces against central
 * differences of the energy, stress against finite strain, translation
 * invariance, float32 against float64, and the errors for bad models and
 * structures. tests/python/test_ictp_model.py compares against the
 * independent PyTorch reference. */
#include "core/npz.h"
#include "harness.h"
#include "models/ictp/ictp_internal.h"
#include "tessera/ictp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEM "test_ictp_model_tmp"

static const char *CONFIG =
    "{\"note\": \"random weights\", \"config\": {\n"
    "  \"atomic_types\": [\"H\", 6, \"O\"], \"n_species\": 3, \"r_cutoff\": 3.0,\n"
    "  \"n_basis\": 6, \"n_polynomial_cutoff\": 5, \"radial_MLP\": [8, 8],\n"
    "  \"readout_MLP\": [5], \"n_hidden_feats\": 4, \"n_product_feats\": 3,\n"
    "  \"n_interactions\": 2, \"l_max_hidden_feats\": 2, \"l_max_edge_attrs\": 3,\n"
    "  \"correlation\": 3, \"symmetric_product\": true, \"coupled_product_feats\": false,\n"
    "  \"avg_n_neighbors\": 6.5, \"default_dtype\": \"float64\", \"lr\": 0.01}}\n";

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static double next_random(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* Writes STEM.npz with every expected key, leaving out key `skip` (or none). */
static void write_weights(const char *skip)
{
    ictp_config cfg;
    int n = 0;
    ictp_weight *w = NULL;
    CHECK_OK(ictp_read_config(STEM ".json", &cfg));
    CHECK_OK(ictp_expected_weights(&cfg, &n, &w));
    const char **names = calloc((size_t)n, sizeof *names);
    tsr_tensor *t = calloc((size_t)n, sizeof *t);
    uint64_t state = 42;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (skip && strcmp(w[i].key, skip) == 0)
            continue;
        t[k] = (tsr_tensor){.dtype = TSR_FLOAT64, .rank = w[i].rank};
        memcpy(t[k].dims, w[i].dims, sizeof w[i].dims);
        int64_t numel = tsr_tensor_numel(&t[k]);
        double *d = malloc((size_t)numel * sizeof *d);
        for (int64_t e = 0; e < numel; e++)
            d[e] = 1.7 * next_random(&state) + (strstr(w[i].key, "scale") ? 2.0 : 0.0);
        t[k].data = d;
        names[k++] = w[i].key;
    }
    CHECK_OK(tsr_npz_write(STEM ".npz", k, names, t));
    for (int i = 0; i < k; i++)
        free(t[i].data);
    free(t);
    free(names);
    ictp_weights_free(n, w);
}

static const int32_t numbers[4] = {1, 6, 8, 6};
static const double cell[9] = {2.8, 0.1, 0.0, 0.2, 3.1, 0.1, -0.1, 0.3, 3.3};
static const double base_pos[12] = {0.1, 0.2, 0.3, 1.4, 0.9, 0.4, 0.6, 1.9, 1.7, 2.1, 2.4, 2.6};

static double energy_of(tsr_ictp_evaluator *ev, const double *pos, const double *c)
{
    tsr_atoms *atoms = NULL;
    double e = NAN;
    CHECK_OK(tsr_atoms_create(4, numbers, pos, c, NULL, &atoms));
    CHECK_OK(tsr_ictp_evaluate(ev, atoms, &e, NULL, NULL, NULL));
    tsr_atoms_destroy(atoms);
    return e;
}

static void test_model(void)
{
    write_text(STEM ".json", CONFIG);
    write_weights(NULL);
    tsr_ictp_model *model = NULL;
    CHECK_OK(tsr_ictp_model_load(STEM ".npz", &model));
    if (!model)
        return;
    CHECK(tsr_ictp_model_cutoff(model) == 3.0);
    int32_t types[3] = {0};
    CHECK(tsr_ictp_model_species(model, types, 3) == 3);
    CHECK(types[0] == 1 && types[1] == 6 && types[2] == 8);

    tsr_ictp_options opt;
    tsr_ictp_options_init(&opt);
    opt.device = "ref";
    opt.threads = 1;
    tsr_ictp_evaluator *ev = NULL, *ev32 = NULL;
    CHECK_OK(tsr_ictp_evaluator_create(model, &opt, &ev));
    opt.dtype = TSR_FLOAT32;
    CHECK_OK(tsr_ictp_evaluator_create(model, &opt, &ev32));
    tsr_ictp_model_destroy(model); /* evaluators do not need it */
    if (!ev || !ev32)
        goto cleanup;

    tsr_atoms *atoms = NULL;
    CHECK_OK(tsr_atoms_create(4, numbers, base_pos, cell, NULL, &atoms));
    double e = 0, forces[12], stress[9], energies[4];
    CHECK_OK(tsr_ictp_evaluate(ev, atoms, &e, forces, stress, energies));
    CHECK(isfinite(e) && e != 0);
    CHECK(fabs(energies[0] + energies[1] + energies[2] + energies[3] - e) <= 1e-12 * fabs(e));

    /* Given edges (what MD's skin list hands over) give the same results;
     * edges of another structure are refused. */
    tsr_edges edges;
    tsr_edges_init(&edges);
    CHECK(tsr_ictp_evaluator_cutoff(ev) == 3.0);
    CHECK_OK(tsr_atoms_edges(atoms, tsr_ictp_evaluator_cutoff(ev), &edges));
    double e_given = 0, f_given[12], s_given[9];
    CHECK_OK(tsr_ictp_evaluate_edges(ev, atoms, &edges, &e_given, f_given, s_given, NULL));
    CHECK(e_given == e && memcmp(f_given, forces, sizeof forces) == 0 &&
          memcmp(s_given, stress, sizeof stress) == 0);
    edges.n_atoms = 3;
    CHECK_FAILS(tsr_ictp_evaluate_edges(ev, atoms, &edges, &e_given, NULL, NULL, NULL),
                TSR_ERR_INVALID_ARGUMENT, "the edges are of 3 atoms, the structure has 4");
    edges.n_atoms = 4;
    edges.senders[0] = 4;
    CHECK_FAILS(tsr_ictp_evaluate_edges(ev, atoms, &edges, &e_given, NULL, NULL, NULL),
                TSR_ERR_INVALID_ARGUMENT, "edge 0 joins atoms");
    tsr_edges_free(&edges);

    /* Forces = -dE/dr by central differences. */
    const double h = 1e-5;
    double worst = 0, fbig = 0;
    for (int i = 0; i < 12; i++) {
        double p[12];
        memcpy(p, base_pos, sizeof p);
        p[i] += h;
        double ep = energy_of(ev, p, cell);
        p[i] -= 2 * h;
        double em = energy_of(ev, p, cell);
        worst = fmax(worst, fabs(-(ep - em) / (2 * h) - forces[i]));
        fbig = fmax(fbig, fabs(forces[i]));
    }
    CHECK(fbig > 0);
    CHECK(worst <= 1e-7 * fbig);

    /* Stress = (1/V) dE/dε, ε symmetric, on cell and positions. */
    double vol = cell[0] * (cell[4] * cell[8] - cell[5] * cell[7]) -
                 cell[1] * (cell[3] * cell[8] - cell[5] * cell[6]) +
                 cell[2] * (cell[3] * cell[7] - cell[4] * cell[6]);
    worst = 0;
    double smax = 0;
    for (int a = 0; a < 3; a++)
        for (int b = a; b < 3; b++) {
            double es[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                double m[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, pc[9], pp[12];
                double d = (sgn ? -h : h) * (a == b ? 1.0 : 0.5);
                m[3 * a + b] += d;
                if (a != b)
                    m[3 * b + a] += d;
                for (int r = 0; r < 3; r++)
                    for (int c = 0; c < 3; c++)
                        pc[3 * r + c] = cell[3 * r] * m[c] + cell[3 * r + 1] * m[3 + c] +
                                        cell[3 * r + 2] * m[6 + c];
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 3; c++)
                        pp[3 * r + c] = base_pos[3 * r] * m[c] + base_pos[3 * r + 1] * m[3 + c] +
                                        base_pos[3 * r + 2] * m[6 + c];
                es[sgn] = energy_of(ev, pp, pc);
            }
            double fd = (es[0] - es[1]) / (2 * h) / fabs(vol);
            worst = fmax(worst, fabs(fd - stress[3 * a + b]));
            smax = fmax(smax, fabs(stress[3 * a + b]));
        }
    CHECK(smax > 0);
    CHECK(worst <= 1e-7 * smax);
    CHECK(fabs(stress[1] - stress[3]) <= 1e-15 * smax);

    /* Translation invariance, and float32 within float32 accuracy. */
    double moved[12];
    for (int i = 0; i < 12; i++)
        moved[i] = base_pos[i] + (i % 3 == 0 ? 5.3 : -1.1);
    CHECK(fabs(energy_of(ev, moved, cell) - e) <= 1e-12 * fabs(e));
    double e32 = energy_of(ev32, base_pos, cell);
    CHECK(fabs(e32 - e) <= 1e-4 * fabs(e));

    /* A batch of two structures of different sizes gives what each gives alone. */
    tsr_atoms *pair[2] = {atoms, NULL};
    const int32_t two[2] = {8, 1};
    const double two_pos[6] = {0, 0, 0, 0.97, 0.1, -0.2};
    CHECK_OK(tsr_atoms_create(2, two, two_pos, NULL, NULL, &pair[1]));
    double be[2], bf[18], bae[6], e1 = 0, f1[6];
    CHECK_OK(tsr_ictp_evaluate_batch(ev, 2, (const tsr_atoms *const *)pair, be, bf, NULL, bae));
    CHECK_OK(tsr_ictp_evaluate(ev, pair[1], &e1, f1, NULL, NULL));
    CHECK(fabs(be[0] - e) <= 1e-12 * fabs(e) && fabs(be[1] - e1) <= 1e-12 * fabs(e1));
    worst = 0;
    for (int i = 0; i < 12; i++)
        worst = fmax(worst, fabs(bf[i] - forces[i]));
    for (int i = 0; i < 6; i++)
        worst = fmax(worst, fabs(bf[12 + i] - f1[i]));
    CHECK(worst <= 1e-12);
    CHECK(fabs(bae[4] + bae[5] - e1) <= 1e-12 * fabs(e1));
    tsr_atoms_destroy(pair[1]);

    /* Errors: an unknown element, stress without a cell. */
    tsr_atoms *bad = NULL;
    const int32_t with_n[4] = {1, 6, 7, 6};
    CHECK_OK(tsr_atoms_create(4, with_n, base_pos, cell, NULL, &bad));
    e = 123.0;
    CHECK_FAILS(tsr_ictp_evaluate(ev, bad, &e, forces, NULL, NULL), TSR_ERR_INVALID_ARGUMENT,
                "atom 2 is N (Z = 7)");
    CHECK(e == 123.0);
    tsr_atoms_destroy(bad);
    CHECK_OK(tsr_atoms_create(4, numbers, base_pos, NULL, NULL, &bad));
    CHECK_FAILS(tsr_ictp_evaluate(ev, bad, &e, NULL, stress, NULL), TSR_ERR_INVALID_ARGUMENT,
                "stress needs a cell");
    tsr_atoms_destroy(bad);
    tsr_atoms_destroy(atoms);
cleanup:
    tsr_ictp_evaluator_destroy(ev);
    tsr_ictp_evaluator_destroy(ev32);
}

static void test_bad_models(void)
{
    tsr_ictp_model *model = NULL;
    write_text(STEM ".json", CONFIG);
    write_weights("representation.interactions.1.conv_tp_weights.4.weight");
    CHECK_FAILS(tsr_ictp_model_load(STEM ".json", &model), TSR_ERR_PARSE,
                "missing key 'representation.interactions.1.conv_tp_weights.4.weight'");
    CHECK(model == NULL);
    write_text(STEM ".json", "{\"config\": {\"atomic_types\": [1, 6],\n\"r_cutoff\": -1}}");
    CHECK_FAILS(tsr_ictp_model_load(STEM, &model), TSR_ERR_PARSE,
                STEM ".json:2: config key 'r_cutoff' must be a positive number");
    write_text(STEM ".json", "{\"config\": {\"atomic_types\": [1, 6], \"r_cutoff\": 5.0,");
    CHECK_FAILS(tsr_ictp_model_load(STEM, &model), TSR_ERR_PARSE, STEM ".json:1:");
    write_text(STEM ".json", "[1, 2]");
    CHECK_FAILS(tsr_ictp_model_load(STEM, &model), TSR_ERR_PARSE, "no \"config\" object");
    remove(STEM ".json");
    CHECK_FAILS(tsr_ictp_model_load(STEM, &model), TSR_ERR_IO, STEM ".json");
    remove(STEM ".npz");
    CHECK(model == NULL);
    CHECK_FAILS(tsr_ictp_evaluator_create(NULL, NULL, NULL), TSR_ERR_INVALID_ARGUMENT, "NULL");
}

/* The radial rows of a neighbour list: every edge of a full list has its
 * reverse (j, i, -S), self-images of a cell smaller than the cutoff
 * included, and shares its row; rows are numbered in the order of their
 * first edges and the offsets added. An edge without a reverse gets a row
 * of its own. */
static void test_radial_rows(void)
{
    tsr_atoms *atoms = NULL;
    tsr_edges edges;
    tsr_edges_init(&edges);
    const int pbc[3] = {1, 1, 1};
    CHECK_OK(tsr_atoms_create(4, numbers, base_pos, cell, pbc, &atoms));
    CHECK_OK(tsr_atoms_edges(atoms, 3.0, &edges));
    int64_t n = edges.count, n_rows = -1;
    int64_t *rows = malloc((size_t)n * sizeof *rows), *reps = malloc((size_t)n * sizeof *reps);
    int *uses = calloc((size_t)n, sizeof *uses);
    CHECK(n > 40 && rows && reps && uses);
    CHECK_OK(ictp_radial_rows(&edges, 100, 7, rows, reps, &n_rows));
    CHECK(2 * n_rows == n);
    for (int64_t e = 0, next = 7; e < n; e++) {
        int64_t u = rows[e] - 7;
        CHECK(u >= 0 && u < n_rows);
        if (u < 0 || u >= n_rows)
            continue;
        if (u == next - 7) {
            CHECK(reps[u] == 100 + e);
            next++;
        }
        CHECK(u < next - 7);
        uses[u]++;
        int64_t r = reps[u] - 100;
        CHECK(edges.receivers[e] == (r == e ? edges.receivers[r] : edges.senders[r]));
        for (int k = 0; k < 3 && r != e; k++)
            CHECK(edges.shifts[3 * e + k] == -edges.shifts[3 * r + k]);
    }
    for (int64_t u = 0; u < n_rows; u++)
        CHECK(uses[u] == 2);
    /* 2 -> 2 across S = (1, 0, 0) without its reverse, between a pair. */
    const int64_t recv[3] = {0, 2, 1}, send[3] = {1, 2, 0};
    edges.count = 3;
    memcpy(edges.receivers, recv, sizeof recv);
    memcpy(edges.senders, send, sizeof send);
    memset(edges.shifts, 0, 9 * sizeof *edges.shifts);
    edges.shifts[3] = 1;
    CHECK_OK(ictp_radial_rows(&edges, 0, 0, rows, reps, &n_rows));
    CHECK(n_rows == 2 && rows[0] == 0 && rows[1] == 1 && rows[2] == 0 && reps[0] == 0 &&
          reps[1] == 1);
    free(rows);
    free(reps);
    free(uses);
    tsr_edges_free(&edges);
    tsr_atoms_destroy(atoms);
}

int main(void)
{
    test_radial_rows();
    test_model();
    test_bad_models();
    return tsr_test_summary("test_ictp_model");
}

/* The ICTP ops through the C API (under the sanitizers in the Debug build):
 * ICT against the explicit T^2 and T^3 of docs/ictp.md, rule 3 on every
 * path with ranks <= 3, the Bessel basis against its formula, results
 * independent of the thread count, a gradient against central
 * differences, and the errors for bad input. test_ict.py has the full
 * references, ranks up to 6 and second derivatives. */
#include "harness.h"
#include "tessera.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DOMAIN "ai.tessera"
#define E 4

static int64_t pow3(int l)
{
    return l == 0 ? 1 : 3 * pow3(l - 1);
}

static const double vecs[E][3] = {
    {0.3, -1.2, 0.8}, {2.0, 0.1, -0.4}, {-0.7, -0.2, -1.9}, {0.05, 1.1, 0.6}};

/* Runs a graph of float64 inputs and outputs; returns the status of the run. */
static tsr_status run(const tsr_graph *g, int threads, int n_in, tsr_tensor *ins, int n_out,
                      tsr_tensor *outs)
{
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.threads = threads;
    tsr_plan *plan = NULL;
    tsr_status st = tsr_plan_create(g, &opts, &plan);
    if (st == TSR_OK)
        st = tsr_plan_run(plan, n_in, ins, n_out, outs);
    tsr_plan_destroy(plan);
    return st;
}

/* v [E, 3] -> ICT of rank l (normalize 1) as output "t". */
static tsr_graph *ict_graph(int l)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[2] = {E, 3};
    CHECK_OK(tsr_graph_add_input(g, "v", TSR_FLOAT64, 2, dims, NULL));
    tsr_attr a = TSR_ATTR_I("l", l);
    CHECK_OK(tsr_graph_add_node(g, "ICT", DOMAIN, "ict", 1, (const char *[]){"v"}, 1,
                                (const char *[]){"t"}, 1, &a));
    CHECK_OK(tsr_graph_add_output(g, "t"));
    return g;
}

static void test_ict_explicit_ranks(void)
{
    for (int l = 2; l <= 3; l++) {
        tsr_graph *g = ict_graph(l);
        int64_t size = pow3(l);
        double t[E * 27], t2[E * 27];
        tsr_tensor in = {TSR_FLOAT64, 2, {E, 3}, (void *)vecs};
        tsr_tensor out = {TSR_FLOAT64, 2, {E, size}, t}, out2 = {TSR_FLOAT64, 2, {E, size}, t2};
        CHECK_OK(run(g, 1, 1, &in, 1, &out));
        CHECK_OK(run(g, 2, 1, &in, 1, &out2));
        CHECK(memcmp(t, t2, sizeof(double) * (size_t)(E * size)) == 0);
        double err = 0.0;
        for (int e = 0; e < E; e++) {
            const double *v = vecs[e];
            double len = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), n[3];
            for (int d = 0; d < 3; d++)
                n[d] = v[d] / len;
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) {
                    if (l == 2) {
                        double want = 1.5 * (n[i] * n[j] - (i == j) / 3.0);
                        err = fmax(err, fabs(t[e * 9 + i * 3 + j] - want));
                        continue;
                    }
                    for (int k = 0; k < 3; k++) {
                        double want =
                            2.5 * (n[i] * n[j] * n[k] -
                                   ((i == j) * n[k] + (j == k) * n[i] + (k == i) * n[j]) / 5.0);
                        err = fmax(err, fabs(t[e * 27 + i * 9 + j * 3 + k] - want));
                    }
                }
        }
        CHECK(err < 1e-14);
        tsr_graph_destroy(g);
    }
}

/* ICTProduct(T^l1(n), T^l2(n)) - T^l3(n) for one path, largest deviation. */
static double rule3_error(int l1, int l2, int l3)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[2] = {E, 3};
    CHECK_OK(tsr_graph_add_input(g, "v", TSR_FLOAT64, 2, dims, NULL));
    const int ls[3] = {l1, l2, l3};
    const char *names[3] = {"t1", "t2", "t3"};
    for (int i = 0; i < 3; i++) {
        tsr_attr a = TSR_ATTR_I("l", ls[i]);
        CHECK_OK(tsr_graph_add_node(g, "ICT", DOMAIN, names[i], 1, (const char *[]){"v"}, 1,
                                    &names[i], 1, &a));
    }
    tsr_attr pa[3] = {TSR_ATTR_I("l1", l1), TSR_ATTR_I("l2", l2), TSR_ATTR_I("l3", l3)};
    CHECK_OK(tsr_graph_add_node(g, "ICTProduct", DOMAIN, "prod", 2, (const char *[]){"t1", "t2"}, 1,
                                (const char *[]){"p"}, 3, pa));
    CHECK_OK(tsr_graph_add_output(g, "p"));
    CHECK_OK(tsr_graph_add_output(g, "t3"));
    int64_t size = pow3(l3);
    double p[E * 27], t3[E * 27];
    tsr_tensor in = {TSR_FLOAT64, 2, {E, 3}, (void *)vecs};
    tsr_tensor outs[2] = {{TSR_FLOAT64, 2, {E, size}, p}, {TSR_FLOAT64, 2, {E, size}, t3}};
    CHECK_OK(run(g, 2, 1, &in, 2, outs));
    tsr_graph_destroy(g);
    double err = 0.0;
    for (int64_t i = 0; i < E * size; i++)
        err = fmax(err, fabs(p[i] - t3[i]));
    return err;
}

static void test_rule3(void)
{
    int n_paths = 0;
    for (int l1 = 0; l1 <= 3; l1++)
        for (int l2 = 0; l2 <= 3; l2++)
            for (int l3 = abs(l1 - l2); l3 <= 3 && l3 <= l1 + l2; l3 += 2) {
                double err = rule3_error(l1, l2, l3);
                if (!(err < 1e-13))
                    fprintf(stderr, "path %d x %d -> %d: error %g\n", l1, l2, l3, err);
                CHECK(err < 1e-13);
                n_paths++;
            }
    CHECK(n_paths == 23); /* every path of ictp-checkpoint.md §3, full list */
}

static void test_bessel(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[1] = {5};
    CHECK_OK(tsr_graph_add_input(g, "r", TSR_FLOAT64, 1, dims, NULL));
    tsr_attr a[2] = {TSR_ATTR_F("r_cutoff", 5.0), TSR_ATTR_I("n_basis", 8)};
    CHECK_OK(tsr_graph_add_node(g, "BesselBasis", DOMAIN, "rbf", 1, (const char *[]){"r"}, 1,
                                (const char *[]){"b"}, 2, a));
    CHECK_OK(tsr_graph_add_output(g, "b"));
    double r[5] = {0.7, 1.5, 3.2, 4.99, 5.0}, b[40];
    tsr_tensor in = {TSR_FLOAT64, 1, {5}, r}, out = {TSR_FLOAT64, 2, {5, 8}, b};
    CHECK_OK(run(g, 1, 1, &in, 1, &out));
    double err = 0.0;
    for (int i = 0; i < 5; i++) {
        double x = r[i] / 5.0;
        double f = r[i] < 5.0 ? 1 - 21 * pow(x, 5) + 35 * pow(x, 6) - 15 * pow(x, 7) : 0.0;
        for (int n = 0; n < 8; n++) {
            double want =
                sqrt(2 / 5.0) * sin((n + 1) * 3.14159265358979323846 * r[i] / 5.0) / r[i] * f;
            err = fmax(err, fabs(b[i * 8 + n] - want));
        }
    }
    CHECK(err < 1e-14);
    r[2] = -1.0;
    CHECK(run(g, 1, 1, &in, 1, &out) == TSR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(tsr_last_error(), "r[2]") != NULL);
    tsr_graph_destroy(g);
}

/* d/dv of sum(seed * ICT(v, l = 3)) against central differences. */
static void test_gradient(void)
{
    tsr_graph *g = ict_graph(3), *gg = NULL;
    const char *outs[] = {"t"}, *wrt[] = {"v"};
    CHECK_OK(tsr_graph_gradient(g, 1, outs, 1, wrt, &gg));
    double seed[E * 27], t[E * 27], gv[E * 3], v[E * 3];
    for (int i = 0; i < E * 27; i++)
        seed[i] = sin(1.7 * i + 0.3);
    memcpy(v, vecs, sizeof v);
    tsr_tensor ins[2] = {{TSR_FLOAT64, 2, {E, 3}, v}, {TSR_FLOAT64, 2, {E, 27}, seed}};
    tsr_tensor res[2] = {{TSR_FLOAT64, 2, {E, 27}, t}, {TSR_FLOAT64, 2, {E, 3}, gv}};
    CHECK_OK(run(gg, 1, 2, ins, 2, res));
    double err = 0.0, scale = 0.0, h = 1e-6;
    for (int i = 0; i < E * 3; i++) {
        double sums[2];
        for (int s = 0; s < 2; s++) {
            v[i] = vecs[i / 3][i % 3] + (s ? -h : h);
            tsr_tensor tin = {TSR_FLOAT64, 2, {E, 3}, v}, tout = {TSR_FLOAT64, 2, {E, 27}, t};
            CHECK_OK(run(g, 1, 1, &tin, 1, &tout));
            sums[s] = 0.0;
            for (int j = 0; j < E * 27; j++)
                sums[s] += seed[j] * t[j];
        }
        v[i] = vecs[i / 3][i % 3];
        double fd = (sums[0] - sums[1]) / (2 * h);
        err = fmax(err, fabs(gv[i] - fd));
        scale = fmax(scale, fabs(fd));
    }
    CHECK(scale > 0.1 && err < 1e-7 * scale);
    tsr_graph_destroy(gg);
    tsr_graph_destroy(g);
}

static void test_errors(void)
{
    tsr_graph *g = ict_graph(2);
    double v[E * 3] = {0}, t[E * 9];
    v[0] = 1.0;
    tsr_tensor in = {TSR_FLOAT64, 2, {E, 3}, v}, out = {TSR_FLOAT64, 2, {E, 9}, t};
    CHECK(run(g, 1, 1, &in, 1, &out) == TSR_ERR_INVALID_ARGUMENT);
    CHECK(strstr(tsr_last_error(), "vector 1") != NULL);
    tsr_graph_destroy(g);

    g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dx[3] = {2, 9, 4}, dy[3] = {2, 3, 4};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT64, 3, dx, NULL));
    CHECK_OK(tsr_graph_add_input(g, "y", TSR_FLOAT64, 3, dy, NULL));
    tsr_attr bad[3] = {TSR_ATTR_I("l1", 2), TSR_ATTR_I("l2", 1), TSR_ATTR_I("l3", 2)};
    CHECK(tsr_graph_add_node(g, "ICTProduct", DOMAIN, "p", 2, (const char *[]){"x", "y"}, 1,
                             (const char *[]){"z"}, 3, bad) == TSR_ERR_UNSUPPORTED);
    CHECK(strstr(tsr_last_error(), "not a product path") != NULL);
    tsr_attr wrong[3] = {TSR_ATTR_I("l1", 1), TSR_ATTR_I("l2", 1), TSR_ATTR_I("l3", 2)};
    CHECK(tsr_graph_add_node(g, "ICTProduct", DOMAIN, "p", 2, (const char *[]){"x", "y"}, 1,
                             (const char *[]){"z"}, 3, wrong) == TSR_ERR_SHAPE);
    CHECK(strstr(tsr_last_error(), "[N, 3] or [N, 3, C]") != NULL);
    tsr_graph_destroy(g);
}

int main(void)
{
    test_ict_explicit_ranks();
    test_rule3();
    test_bessel();
    test_gradient();
    test_errors();
    return tsr_test_summary("test_ict");
}

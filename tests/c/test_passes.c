/* The optimization passes: each pattern they rewrite, the ones they must
 * leave alone, and for every rewrite that a plan of the rewritten graph on
 * the ref device computes what a plan of the original does (random inputs,
 * odd channel counts, float32 and float64), and that a second run of the
 * pass changes nothing. */
#include "harness.h"
#include "ir/rewrite.h"
#include "passes/passes.h"
#include "tessera.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- builders */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(double lo, double hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0;
}

static void fill(tsr_tensor *t, double lo, double hi)
{
    for (int64_t i = 0; i < tsr_tensor_numel(t); i++)
        tsr_set_f(t, i, uniform(lo, hi));
}

static tsr_tensor make_tensor(tsr_dtype dtype, int rank, const int64_t *dims)
{
    tsr_tensor t = {.dtype = dtype, .rank = rank};
    for (int d = 0; d < rank; d++)
        t.dims[d] = dims[d];
    t.data = calloc((size_t)tsr_tensor_numel(&t) + 1, tsr_dtype_size(dtype));
    return t;
}

/* A random constant with values in [lo, hi). */
static void add_const(tsr_graph *g, const char *name, tsr_dtype dtype, int rank,
                      const int64_t *dims, double lo, double hi)
{
    tsr_tensor t = make_tensor(dtype, rank, dims);
    fill(&t, lo, hi);
    CHECK_OK(tsr_graph_add_constant(g, name, &t));
    free(t.data);
}

static void add_scalar(tsr_graph *g, const char *name, tsr_dtype dtype, double value)
{
    tsr_tensor t = make_tensor(dtype, 0, NULL);
    tsr_set_f(&t, 0, value);
    CHECK_OK(tsr_graph_add_constant(g, name, &t));
    free(t.data);
}

static void add_ints(tsr_graph *g, const char *name, int count, const int64_t *values)
{
    tsr_tensor t = {.dtype = TSR_INT64, .rank = 1, .dims = {count}, .data = (void *)values};
    CHECK_OK(tsr_graph_add_constant(g, name, &t));
}

/* One node with one output and up to four inputs ("" for omitted). */
static void node(tsr_graph *g, const char *op, const char *in0, const char *in1, const char *in2,
                 const char *out, int n_attrs, const tsr_attr *attrs)
{
    const char *ins[3] = {in0, in1, in2};
    int n_in = in2 ? 3 : in1 ? 2 : 1;
    CHECK_OK(
        tsr_graph_add_node(g, op, "", out, n_in, ins, 1, (const char *[]){out}, n_attrs, attrs));
}

/* SumTo (domain ai.tessera) of `in` to the shape constant `shape`. */
static void sum_to(tsr_graph *g, const char *in, const char *shape, const char *out)
{
    CHECK_OK(tsr_graph_add_node(g, "SumTo", "ai.tessera", out, 2, (const char *[]){in, shape}, 1,
                                (const char *[]){out}, 0, NULL));
}

/* A graph with input x of shape [2, channels, 7, 9]. */
static tsr_graph *new_graph(tsr_dtype dtype, int64_t channels)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {2, channels, 7, 9};
    CHECK_OK(tsr_graph_add_input(g, "x", dtype, 4, dims, NULL));
    return g;
}

/* Conv of `in` to `out` with `m` output channels, weights named w_<out>,
 * bias b_<out> if `bias`; 3x3 with padding 1 keeps the spatial size. */
static void add_conv(tsr_graph *g, tsr_dtype dtype, const char *in, const char *out, int64_t c,
                     int64_t m, int64_t group, bool bias)
{
    char w[64], b[64];
    snprintf(w, sizeof w, "w_%s", out);
    snprintf(b, sizeof b, "b_%s", out);
    const int64_t wd[] = {m, c / group, 3, 3};
    add_const(g, w, dtype, 4, wd, -0.5, 0.5);
    if (bias)
        add_const(g, b, dtype, 1, &m, -1.0, 1.0);
    const int64_t pads[] = {1, 1, 1, 1};
    tsr_attr attrs[] = {TSR_ATTR_INTS("pads", pads, 4), TSR_ATTR_I("group", group)};
    node(g, "Conv", in, w, bias ? b : NULL, out, 2, attrs);
}

/* BatchNormalization of `in` with random constant statistics. */
static void add_bn(tsr_graph *g, tsr_dtype dtype, const char *in, const char *out, int64_t m)
{
    char names[4][64];
    const char *suffix[] = {"scale", "beta", "mean", "var"};
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], sizeof names[i], "%s_%s", out, suffix[i]);
        add_const(g, names[i], dtype, 1, &m, i == 3 ? 0.5 : -1.0, i == 3 ? 2.0 : 1.0);
    }
    const char *ins[] = {in, names[0], names[1], names[2], names[3]};
    tsr_attr eps = TSR_ATTR_F("epsilon", 1e-3);
    CHECK_OK(tsr_graph_add_node(g, "BatchNormalization", "", out, 5, ins, 1, (const char *[]){out},
                                1, &eps));
}

/* ------------------------------------------------------------- checkers */

#define MAX_IO 8

/* Runs g on the ref device; fills outs (allocated here) and returns how
 * many outputs there are, -1 on failure. */
static int run_ref(const tsr_graph *g, const tsr_tensor *ins, tsr_tensor *outs)
{
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = "ref";
    tsr_plan *p = NULL;
    int n_in = tsr_graph_num_inputs(g), n_out = tsr_graph_num_outputs(g);
    if (tsr_plan_create(g, &opts, &p) != TSR_OK || tsr_plan_reshape(p, n_in, ins) != TSR_OK) {
        fprintf(stderr, "plan failed: %s\n", tsr_last_error());
        tsr_plan_destroy(p);
        return -1;
    }
    for (int o = 0; o < n_out; o++) {
        tsr_plan_output_desc(p, o, &outs[o]);
        outs[o].data =
            calloc((size_t)tsr_tensor_numel(&outs[o]) + 1, tsr_dtype_size(outs[o].dtype));
    }
    tsr_status st = tsr_plan_run(p, n_in, ins, n_out, outs);
    if (st != TSR_OK)
        fprintf(stderr, "run failed: %s\n", tsr_last_error());
    tsr_plan_destroy(p);
    return st == TSR_OK ? n_out : -1;
}

/* Same outputs (names, shapes, values) for both graphs on the same random
 * inputs: relative to the largest magnitude, 1e-5 in float32, 1e-12 in
 * float64. */
static void check_same_outputs(const tsr_graph *a, const tsr_graph *b)
{
    int n_in = tsr_graph_num_inputs(a);
    CHECK(n_in == tsr_graph_num_inputs(b) && n_in <= MAX_IO);
    CHECK(tsr_graph_num_outputs(a) == tsr_graph_num_outputs(b));
    tsr_tensor ins[MAX_IO], outs_a[MAX_IO], outs_b[MAX_IO];
    for (int i = 0; i < n_in; i++) {
        tsr_value_info info;
        CHECK_OK(tsr_graph_input_info(a, i, &info));
        for (int d = 0; d < info.rank; d++)
            info.dims[d] = info.dims[d] < 0 ? 2 : info.dims[d]; /* symbolic: pick a size */
        ins[i] = make_tensor(info.dtype, info.rank, info.dims);
        fill(&ins[i], -2.0, 2.0);
    }
    int na = run_ref(a, ins, outs_a), nb = run_ref(b, ins, outs_b);
    CHECK(na >= 0 && na == nb);
    for (int o = 0; o < na && o < nb; o++) {
        tsr_value_info ia, ib;
        tsr_graph_output_info(a, o, &ia);
        tsr_graph_output_info(b, o, &ib);
        CHECK(strcmp(ia.name, ib.name) == 0);
        const tsr_tensor *x = &outs_a[o], *y = &outs_b[o];
        bool same_shape = x->dtype == y->dtype && x->rank == y->rank;
        for (int d = 0; same_shape && d < x->rank; d++)
            same_shape = x->dims[d] == y->dims[d];
        CHECK(same_shape);
        if (!same_shape)
            continue;
        double scale = 1.0, err = 0.0;
        for (int64_t i = 0; i < tsr_tensor_numel(x); i++) {
            scale = fmax(scale, fabs(tsr_get_f(x, i)));
            err = fmax(err, fabs(tsr_get_f(x, i) - tsr_get_f(y, i)));
        }
        double tol = x->dtype == TSR_FLOAT32 ? 1e-5 : 1e-12;
        if (err > tol * scale)
            fprintf(stderr, "output '%s': max error %g (scale %g)\n", ia.name, err, scale);
        CHECK(err <= tol * scale);
    }
    for (int i = 0; i < n_in; i++)
        free(ins[i].data);
    for (int o = 0; o < na; o++)
        free(outs_a[o].data);
    for (int o = 0; o < nb; o++)
        free(outs_b[o].data);
}

/* Copies g, runs `pass` on the copy (which must report `expect_change`),
 * verifies it, checks that a second run changes nothing and that it
 * computes what g does. The caller inspects and destroys the copy. */
static tsr_graph *run_pass(const tsr_graph *g, bool (*pass)(tsr_graph *), bool expect_change)
{
    tsr_graph *copy = NULL;
    CHECK_OK(tsr_graph_clone(g, &copy));
    CHECK(pass(copy) == expect_change);
    CHECK_OK(tsr_graph_verify(copy));
    CHECK(!pass(copy));
    tsr_graph_remove_dead(copy);
    CHECK_OK(tsr_graph_verify(copy));
    check_same_outputs(g, copy);
    return copy;
}

/* The graph's op types in order, space-separated. */
static const char *ops_of(const tsr_graph *g)
{
    static char buf[512];
    buf[0] = 0;
    for (int n = 0; n < g->n_nodes; n++) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s", n ? " " : "", g->nodes[n].op->name);
    }
    return buf;
}

static bool check_ops(const tsr_graph *g, const char *want)
{
    if (strcmp(ops_of(g), want) == 0)
        return true;
    fprintf(stderr, "nodes are '%s', expected '%s'\n", ops_of(g), want);
    return false;
}

static const tsr_node *find_op(const tsr_graph *g, const tsr_op_def *op)
{
    for (int n = 0; n < g->n_nodes; n++)
        if (g->nodes[n].op == op)
            return &g->nodes[n];
    return NULL;
}

static const char *input_name(const tsr_graph *g, const tsr_node *n, int i)
{
    return i < n->n_inputs && n->inputs[i] >= 0 ? g->values[n->inputs[i]].name : "";
}

static const char *output_name(const tsr_graph *g, int o)
{
    return g->values[g->outputs[o]].name;
}

/* ---------------------------------------------------------------- tests */

static const tsr_dtype dtypes[] = {TSR_FLOAT32, TSR_FLOAT64};

static void test_fold_batchnorm(void)
{
    for (int d = 0; d < 2; d++)
        for (int variant = 0; variant < 3; variant++) {
            /* 3 -> 5 channels with and without bias, and grouped 3 -> 9. */
            bool bias = variant != 1;
            int64_t group = variant == 2 ? 3 : 1, m = variant == 2 ? 9 : 5;
            tsr_graph *g = new_graph(dtypes[d], 3);
            add_conv(g, dtypes[d], "x", "c", 3, m, group, bias);
            add_bn(g, dtypes[d], "c", "y", m);
            CHECK_OK(tsr_graph_add_output(g, "y"));
            tsr_graph *f = run_pass(g, tsr_pass_fold_batchnorm, true);
            CHECK(check_ops(f, "Conv"));
            CHECK(strcmp(output_name(f, 0), "y") == 0);
            const tsr_node *conv = find_op(f, &tsr_op_Conv);
            CHECK(conv && conv->n_inputs == 3 && conv->inputs[2] >= 0);
            CHECK(conv && tsr_attr_int(conv, "group") == group);
            tsr_graph_destroy(f);
            tsr_graph_destroy(g);
        }
}

static void test_fold_batchnorm_refused(void)
{
    /* The conv output has a second reader: the BN cannot absorb it. */
    tsr_graph *g = new_graph(TSR_FLOAT32, 3);
    add_conv(g, TSR_FLOAT32, "x", "c", 3, 5, 1, true);
    add_bn(g, TSR_FLOAT32, "c", "y", 5);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    CHECK_OK(tsr_graph_add_output(g, "c"));
    tsr_graph *f = run_pass(g, tsr_pass_fold_batchnorm, false);
    CHECK(check_ops(f, "Conv BatchNormalization"));
    tsr_graph_destroy(f);
    tsr_graph_destroy(g);

    /* Trainable weights: folding would freeze them. */
    g = new_graph(TSR_FLOAT32, 3);
    const int64_t wd[] = {5, 3, 1, 1};
    tsr_tensor w = make_tensor(TSR_FLOAT32, 4, wd);
    fill(&w, -1, 1);
    CHECK_OK(tsr_graph_add_parameter(g, "w", &w));
    free(w.data);
    node(g, "Conv", "x", "w", NULL, "c", 0, NULL);
    add_bn(g, TSR_FLOAT32, "c", "y", 5);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    tsr_graph *copy = NULL;
    CHECK_OK(tsr_graph_clone(g, &copy));
    CHECK(!tsr_pass_fold_batchnorm(copy));
    tsr_graph_destroy(copy);
    tsr_graph_destroy(g);
}

static void test_fuse_activation(void)
{
    struct {
        const char *op;
        const char *activation;
        double alpha, beta;
    } cases[] = {{"Relu", "Relu", 0, 0},
                 {"LeakyRelu", "LeakyRelu", 0.2, 0},
                 {"Sigmoid", "Sigmoid", 0, 0},
                 {"HardSigmoid", "HardSigmoid", 0.2, 0.5},
                 {"HardSwish", "HardSwish", 0, 0},
                 {"Tanh", "Tanh", 0, 0},
                 {"Clip", "Clip", 0, 6}};
    for (int d = 0; d < 2; d++)
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            tsr_graph *g = new_graph(dtypes[d], 5);
            add_conv(g, dtypes[d], "x", "c", 5, 7, 1, k % 2 == 0);
            tsr_attr alpha = TSR_ATTR_F("alpha", 0.2);
            if (strcmp(cases[k].op, "Clip") == 0) {
                add_scalar(g, "lo", dtypes[d], 0.0);
                add_scalar(g, "hi", dtypes[d], 6.0);
                node(g, "Clip", "c", "lo", "hi", "y", 0, NULL);
            } else {
                node(g, cases[k].op, "c", NULL, NULL, "y", strcmp(cases[k].op, "LeakyRelu") == 0,
                     &alpha);
            }
            CHECK_OK(tsr_graph_add_output(g, "y"));
            tsr_graph *f = run_pass(g, tsr_pass_fuse_conv, true);
            CHECK(check_ops(f, "FusedConv"));
            CHECK(strcmp(output_name(f, 0), "y") == 0);
            const tsr_node *fc = find_op(f, &tsr_op_FusedConv);
            if (fc) {
                CHECK(strcmp(tsr_attr_string(fc, "activation"), cases[k].activation) == 0);
                if (cases[k].alpha || cases[k].beta) {
                    CHECK(fabs(tsr_attr_float(fc, "activation_alpha") - cases[k].alpha) < 1e-12);
                    CHECK(fabs(tsr_attr_float(fc, "activation_beta") - cases[k].beta) < 1e-12);
                }
                CHECK(fc->n_inputs < 4 || fc->inputs[3] < 0);
                CHECK(tsr_attr_ints(fc, "pads", &(size_t){0}) != NULL);
            }
            tsr_graph_destroy(f);
            tsr_graph_destroy(g);
        }
}

static void test_fuse_refused(void)
{
    /* The conv output is read twice: by the Relu and as a graph output. */
    tsr_graph *g = new_graph(TSR_FLOAT32, 3);
    add_conv(g, TSR_FLOAT32, "x", "c", 3, 5, 1, true);
    node(g, "Relu", "c", NULL, NULL, "y", 0, NULL);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    CHECK_OK(tsr_graph_add_output(g, "c"));
    tsr_graph *f = run_pass(g, tsr_pass_fuse_conv, false);
    CHECK(check_ops(f, "Conv Relu"));
    tsr_graph_destroy(f);
    tsr_graph_destroy(g);

    /* Read by two nodes; and added to itself. */
    g = new_graph(TSR_FLOAT64, 3);
    add_conv(g, TSR_FLOAT64, "x", "c", 3, 5, 1, true);
    node(g, "Relu", "c", NULL, NULL, "r", 0, NULL);
    node(g, "Sigmoid", "c", NULL, NULL, "s", 0, NULL);
    node(g, "Add", "r", "s", NULL, "y", 0, NULL);
    add_conv(g, TSR_FLOAT64, "y", "c2", 5, 5, 5, false);
    node(g, "Add", "c2", "c2", NULL, "y2", 0, NULL);
    CHECK_OK(tsr_graph_add_output(g, "y2"));
    f = run_pass(g, tsr_pass_fuse_conv, false);
    CHECK(check_ops(f, "Conv Relu Sigmoid Add Conv Add"));
    tsr_graph_destroy(f);
    tsr_graph_destroy(g);

    /* A broadcast Add is no residual; a Clip bound that is not constant
     * and an Elu have no FusedConv form. */
    g = new_graph(TSR_FLOAT32, 3);
    const int64_t one[] = {1, 5, 1, 1};
    add_conv(g, TSR_FLOAT32, "x", "c", 3, 5, 1, true);
    add_const(g, "shift", TSR_FLOAT32, 4, one, -1, 1);
    node(g, "Add", "c", "shift", NULL, "a", 0, NULL);
    add_conv(g, TSR_FLOAT32, "a", "c2", 5, 5, 1, true);
    node(g, "ReduceMax", "x", NULL, NULL, "hi", 1, (tsr_attr[]){TSR_ATTR_I("keepdims", 0)});
    node(g, "Clip", "c2", "", "hi", "b", 0, NULL);
    add_conv(g, TSR_FLOAT32, "b", "c3", 5, 5, 1, true);
    node(g, "Elu", "c3", NULL, NULL, "y", 0, NULL);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    f = run_pass(g, tsr_pass_fuse_conv, false);
    CHECK(check_ops(f, "Conv Add Conv ReduceMax Clip Conv Elu"));
    tsr_graph_destroy(f);
    tsr_graph_destroy(g);
}

static void test_fuse_residual(void)
{
    for (int d = 0; d < 2; d++) {
        /* Conv + Add(skip input) + Relu. */
        tsr_graph *g = NULL;
        CHECK_OK(tsr_graph_create(&g));
        const int64_t xd[] = {2, 3, 7, 9}, sd[] = {2, 5, 7, 9};
        CHECK_OK(tsr_graph_add_input(g, "x", dtypes[d], 4, xd, NULL));
        CHECK_OK(tsr_graph_add_input(g, "skip", dtypes[d], 4, sd, NULL));
        add_conv(g, dtypes[d], "x", "c", 3, 5, 1, d == 0);
        node(g, "Add", "skip", "c", NULL, "s", 0, NULL);
        node(g, "Relu", "s", NULL, NULL, "y", 0, NULL);
        CHECK_OK(tsr_graph_add_output(g, "y"));
        tsr_graph *f = run_pass(g, tsr_pass_fuse_conv, true);
        CHECK(check_ops(f, "FusedConv"));
        const tsr_node *fc = find_op(f, &tsr_op_FusedConv);
        CHECK(fc && fc->n_inputs == 4 && strcmp(input_name(f, fc, 3), "skip") == 0);
        CHECK(fc && strcmp(tsr_attr_string(fc, "activation"), "Relu") == 0);
        CHECK(strcmp(output_name(f, 0), "y") == 0);
        tsr_graph_destroy(f);
        tsr_graph_destroy(g);

        /* A ResNet block: conv-BN-relu, conv-BN, downsample conv-BN after
         * it (so the Add's other operand comes later), Add, Relu. */
        g = new_graph(dtypes[d], 3);
        add_conv(g, dtypes[d], "x", "c1", 3, 5, 1, false);
        add_bn(g, dtypes[d], "c1", "n1", 5);
        node(g, "Relu", "n1", NULL, NULL, "r1", 0, NULL);
        add_conv(g, dtypes[d], "r1", "c2", 5, 5, 1, false);
        add_bn(g, dtypes[d], "c2", "n2", 5);
        add_conv(g, dtypes[d], "x", "cd", 3, 5, 1, false);
        add_bn(g, dtypes[d], "cd", "nd", 5);
        node(g, "Add", "n2", "nd", NULL, "s", 0, NULL);
        node(g, "Relu", "s", NULL, NULL, "y", 0, NULL);
        CHECK_OK(tsr_graph_add_output(g, "y"));
        tsr_graph *copy = NULL;
        CHECK_OK(tsr_graph_clone(g, &copy));
        CHECK_OK(tsr_passes_run(copy));
        CHECK_OK(tsr_graph_verify(copy));
        CHECK(check_ops(copy, "FusedConv Conv FusedConv"));
        const tsr_node *last = &copy->nodes[copy->n_nodes - 1];
        CHECK(strcmp(tsr_attr_string(last, "activation"), "Relu") == 0);
        CHECK(strcmp(tsr_attr_string(&copy->nodes[0], "activation"), "Relu") == 0);
        CHECK(last->n_inputs == 4 && last->inputs[3] >= 0 && last->inputs[2] >= 0);
        CHECK(strcmp(output_name(copy, 0), "y") == 0);
        check_same_outputs(g, copy);
        CHECK(!tsr_pass_remove_identities(copy) && !tsr_pass_fold_batchnorm(copy) &&
              !tsr_pass_fuse_conv(copy));
        tsr_graph_destroy(copy);
        tsr_graph_destroy(g);
    }
}

static void test_mobilenet_chain(void)
{
    /* Conv-BN-Clip(0, 6), depthwise conv-BN-Clip, conv-BN, + block input. */
    for (int d = 0; d < 2; d++) {
        tsr_graph *g = new_graph(dtypes[d], 5);
        add_scalar(g, "zero", dtypes[d], 0.0);
        add_scalar(g, "six", dtypes[d], 6.0);
        add_conv(g, dtypes[d], "x", "e", 5, 15, 1, false);
        add_bn(g, dtypes[d], "e", "en", 15);
        node(g, "Clip", "en", "zero", "six", "er", 0, NULL);
        add_conv(g, dtypes[d], "er", "dw", 15, 15, 15, false);
        add_bn(g, dtypes[d], "dw", "dn", 15);
        node(g, "Clip", "dn", "zero", "six", "dr", 0, NULL);
        add_conv(g, dtypes[d], "dr", "p", 15, 5, 1, false);
        add_bn(g, dtypes[d], "p", "pn", 5);
        node(g, "Add", "x", "pn", NULL, "y", 0, NULL);
        CHECK_OK(tsr_graph_add_output(g, "y"));
        tsr_graph *copy = NULL;
        CHECK_OK(tsr_graph_clone(g, &copy));
        CHECK_OK(tsr_passes_run(copy));
        CHECK_OK(tsr_graph_verify(copy));
        CHECK(check_ops(copy, "FusedConv FusedConv FusedConv"));
        CHECK(strcmp(tsr_attr_string(&copy->nodes[1], "activation"), "Clip") == 0);
        CHECK(tsr_attr_float(&copy->nodes[1], "activation_beta") == 6.0);
        CHECK(strcmp(input_name(copy, &copy->nodes[2], 3), "x") == 0);
        check_same_outputs(g, copy);
        tsr_graph_destroy(copy);
        tsr_graph_destroy(g);
    }
}

static void test_remove_identities(void)
{
    for (int d = 0; d < 2; d++) {
        tsr_dtype dt = dtypes[d];
        tsr_graph *g = new_graph(dt, 3);
        const int64_t zeros[8] = {0}, same[] = {2, 3, 7, 9}, perm[] = {0, 1, 2, 3};
        add_ints(g, "zero_pads", 8, zeros);
        add_ints(g, "same_shape", 4, same);
        node(g, "Identity", "x", NULL, NULL, "i1", 0, NULL);
        node(g, "Dropout", "i1", NULL, NULL, "i2", 0, NULL);
        node(g, "Relu", "i2", NULL, NULL, "r", 0, NULL);
        node(g, "Cast", "r", NULL, NULL, "i3", 1, (tsr_attr[]){TSR_ATTR_I("to", dt)});
        node(g, "Pad", "i3", "zero_pads", NULL, "i4", 0, NULL);
        node(g, "Clip", "i4", NULL, NULL, "i5", 0, NULL);
        node(g, "Reshape", "i5", "same_shape", NULL, "i6", 0, NULL);
        node(g, "Transpose", "i6", NULL, NULL, "i7", 1,
             (tsr_attr[]){TSR_ATTR_INTS("perm", perm, 4)});
        sum_to(g, "i7", "same_shape", "i8");
        node(g, "Tanh", "i8", NULL, NULL, "t", 0, NULL);
        node(g, "Identity", "t", NULL, NULL, "y", 0, NULL);
        CHECK_OK(tsr_graph_add_output(g, "y"));
        tsr_graph *f = run_pass(g, tsr_pass_remove_identities, true);
        CHECK(check_ops(f, "Relu Tanh"));
        CHECK(strcmp(output_name(f, 0), "y") == 0);
        CHECK(f->nodes[0].inputs[0] == f->inputs[0]);
        tsr_graph_destroy(f);
        tsr_graph_destroy(g);
    }
}

static void test_identities_kept(void)
{
    /* A graph output straight from a graph input, a graph output copied
     * from another graph output, a Dropout whose mask is read, Cast, Pad,
     * Clip, Transpose and SumTo that do something. */
    tsr_graph *g = new_graph(TSR_FLOAT32, 3);
    const int64_t pads[8] = {0, 0, 1, 0, 0, 0, 0, 2}, per_channel[4] = {1, 3, 1, 1};
    add_ints(g, "pads", 8, pads);
    add_ints(g, "per_channel", 4, per_channel);
    add_scalar(g, "hi", TSR_FLOAT32, 0.5);
    node(g, "Identity", "x", NULL, NULL, "y0", 0, NULL);
    node(g, "Relu", "x", NULL, NULL, "r", 0, NULL);
    node(g, "Identity", "r", NULL, NULL, "y1", 0, NULL);
    CHECK_OK(tsr_graph_add_node(g, "Dropout", "", "drop", 1, (const char *[]){"r"}, 2,
                                (const char *[]){"d", "mask"}, 0, NULL));
    node(g, "Cast", "mask", NULL, NULL, "maskf", 1, (tsr_attr[]){TSR_ATTR_I("to", TSR_FLOAT32)});
    node(g, "Add", "d", "maskf", NULL, "y2", 0, NULL);
    node(g, "Pad", "r", "pads", NULL, "y3", 0, NULL);
    node(g, "Clip", "r", "", "hi", "y4", 0, NULL);
    node(g, "Transpose", "r", NULL, NULL, "y5", 0, NULL);
    sum_to(g, "r", "per_channel", "y6");
    const char *outs[] = {"y0", "y1", "r", "y2", "y3", "y4", "y5", "y6"};
    for (int o = 0; o < 8; o++)
        CHECK_OK(tsr_graph_add_output(g, outs[o]));
    tsr_graph *f = run_pass(g, tsr_pass_remove_identities, false);
    CHECK(check_ops(f, "Identity Relu Identity Dropout Cast Add Pad Clip Transpose SumTo"));
    for (int o = 0; o < 8; o++)
        CHECK(strcmp(output_name(f, o), outs[o]) == 0);
    tsr_graph_destroy(f);
    tsr_graph_destroy(g);
}

static void test_identity_output_renamed(void)
{
    /* y = Identity(Relu(x)) with y a graph output and the Relu's output
     * also read elsewhere: the Relu now writes y directly. */
    tsr_graph *g = new_graph(TSR_FLOAT64, 3);
    node(g, "Relu", "x", NULL, NULL, "r", 0, NULL);
    node(g, "Identity", "r", NULL, NULL, "y", 0, NULL);
    node(g, "Neg", "r", NULL, NULL, "z", 0, NULL);
    CHECK_OK(tsr_graph_add_output(g, "z"));
    CHECK_OK(tsr_graph_add_output(g, "y"));
    tsr_graph *f = run_pass(g, tsr_pass_remove_identities, true);
    CHECK(check_ops(f, "Relu Neg"));
    CHECK(strcmp(f->values[f->nodes[0].outputs[0]].name, "y") == 0);
    CHECK(strcmp(output_name(f, 1), "y") == 0);
    tsr_graph_destroy(f);
    tsr_graph_destroy(g);
}

static void test_borrowed_constants_untouched(void)
{
    /* Plans run the passes on a specialization that shares the plan
     * graph's constants: folding must make new ones, not write those. */
    tsr_graph *g = new_graph(TSR_FLOAT32, 3);
    add_conv(g, TSR_FLOAT32, "x", "c", 3, 5, 1, true);
    add_bn(g, TSR_FLOAT32, "c", "n", 5);
    node(g, "Relu", "n", NULL, NULL, "y", 0, NULL);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    int w = tsr_graph_find_value(g, "w_c"), b = tsr_graph_find_value(g, "b_c");
    float w_before[5 * 3 * 3 * 3], b_before[5];
    memcpy(w_before, g->values[w].data, sizeof w_before);
    memcpy(b_before, g->values[b].data, sizeof b_before);

    tsr_graph *spec = NULL;
    CHECK_OK(tsr_graph_create(&spec));
    const int64_t dims[] = {1, 3, 4, 6};
    CHECK_OK(tsr_graph_add_input(spec, "x", TSR_FLOAT32, 4, dims, NULL));
    CHECK_OK(tsr_graph_replay(g, spec, true));
    CHECK_OK(tsr_passes_run(spec));
    CHECK(check_ops(spec, "FusedConv"));
    const tsr_node *fc = &spec->nodes[0];
    for (int i = 1; i < 3; i++) {
        const tsr_value *v = &spec->values[fc->inputs[i]];
        CHECK(v->data && v->data != g->values[w].data && v->data != g->values[b].data);
    }
    CHECK(memcmp(w_before, g->values[w].data, sizeof w_before) == 0);
    CHECK(memcmp(b_before, g->values[b].data, sizeof b_before) == 0);
    tsr_graph_destroy(spec);
    tsr_graph_destroy(g);
}

static void test_symbolic_batch(void)
{
    /* Unspecialized graphs with a symbolic batch fuse too; the residual
     * needs shapes that are provably equal. */
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {-1, 3, 5, 5};
    const char *names[] = {"batch", NULL, NULL, NULL};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 4, dims, names));
    add_conv(g, TSR_FLOAT32, "x", "c", 3, 3, 1, true);
    node(g, "Add", "c", "x", NULL, "s", 0, NULL);
    node(g, "HardSwish", "s", NULL, NULL, "y", 0, NULL);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    tsr_graph *copy = NULL;
    CHECK_OK(tsr_graph_clone(g, &copy));
    CHECK(tsr_pass_fuse_conv(copy));
    CHECK_OK(tsr_graph_verify(copy));
    CHECK(check_ops(copy, "FusedConv"));
    tsr_value_info info;
    CHECK_OK(tsr_graph_output_info(copy, 0, &info));
    CHECK(info.dim_names[0] && strcmp(info.dim_names[0], "batch") == 0);
    check_same_outputs(g, copy);
    tsr_graph_destroy(copy);
    tsr_graph_destroy(g);
}

static void test_rewrite_change_node_refuses(void)
{
    /* A Z of the wrong shape fails inference and leaves the node as it was. */
    tsr_graph *g = new_graph(TSR_FLOAT32, 3);
    add_conv(g, TSR_FLOAT32, "x", "c", 3, 5, 1, true);
    CHECK_OK(tsr_graph_add_output(g, "c"));
    const tsr_node *conv = &g->nodes[0];
    int inputs[4] = {conv->inputs[0], conv->inputs[1], conv->inputs[2], g->inputs[0]};
    CHECK(tsr_rewrite_change_node(g, 0, &tsr_op_FusedConv, 1, 4, inputs, 0, NULL) == TSR_ERR_SHAPE);
    CHECK(strstr(tsr_last_error(), "Z has shape [2, 3, 7, 9]") != NULL);
    CHECK(g->nodes[0].op == &tsr_op_Conv && g->nodes[0].n_inputs == 3);
    CHECK_OK(tsr_graph_verify(g));
    tsr_graph_destroy(g);
}

/* A Conv of x [2, c, 7, 9] by a random constant 3x3 W, dilation and pads
 * given per dim (pads the same at both ends). */
static tsr_graph *dilated_conv_graph(tsr_dtype dtype, const int64_t *dilations, const int64_t *pads,
                                     bool weight_input)
{
    tsr_graph *g = new_graph(dtype, 3);
    const int64_t wd[] = {4, 3, 3, 3}, all_pads[] = {pads[0], pads[1], pads[0], pads[1]};
    if (weight_input)
        CHECK_OK(tsr_graph_add_input(g, "w", dtype, 4, wd, NULL));
    else
        add_const(g, "w", dtype, 4, wd, -0.5, 0.5);
    tsr_attr attrs[] = {TSR_ATTR_INTS("dilations", dilations, 2),
                        TSR_ATTR_INTS("pads", all_pads, 4)};
    node(g, "Conv", "x", "w", NULL, "y", 2, attrs);
    CHECK_OK(tsr_graph_add_output(g, "y"));
    return g;
}

static bool ints_are(const tsr_node *n, const char *name, int count, const int64_t *want)
{
    size_t got_count;
    const int64_t *got = tsr_attr_ints(n, name, &got_count);
    return got && got_count == (size_t)count && memcmp(got, want, sizeof *want * count) == 0;
}

static void test_trim_conv_taps(void)
{
    for (int d = 0; d < 2; d++) {
        /* Off-centre taps past the 7x9 map on both dims: a 1x1. */
        tsr_graph *g = dilated_conv_graph(dtypes[d], (const int64_t[]){9, 10},
                                          (const int64_t[]){9, 10}, false);
        tsr_graph *f = run_pass(g, tsr_pass_trim_conv_taps, true);
        const tsr_node *conv = find_op(f, &tsr_op_Conv);
        CHECK(conv && f->values[conv->inputs[1]].dims[2] == 1 &&
              f->values[conv->inputs[1]].dims[3] == 1);
        CHECK(conv && ints_are(conv, "dilations", 2, (const int64_t[]){1, 1}) &&
              ints_are(conv, "pads", 4, (const int64_t[]){0, 0, 0, 0}));
        tsr_graph_destroy(f);
        tsr_graph_destroy(g);

        /* Along H only the centre reads the map; along W every tap does. */
        g = dilated_conv_graph(dtypes[d], (const int64_t[]){7, 2}, (const int64_t[]){7, 2}, false);
        f = run_pass(g, tsr_pass_trim_conv_taps, true);
        conv = find_op(f, &tsr_op_Conv);
        CHECK(conv && f->values[conv->inputs[1]].dims[2] == 1 &&
              f->values[conv->inputs[1]].dims[3] == 3);
        CHECK(conv && ints_are(conv, "dilations", 2, (const int64_t[]){1, 2}) &&
              ints_are(conv, "pads", 4, (const int64_t[]){0, 2, 0, 2}) &&
              ints_are(conv, "kernel_shape", 2, (const int64_t[]){1, 3}));
        tsr_graph_destroy(f);
        tsr_graph_destroy(g);

        /* Every tap reads the map somewhere; W fed at run time. */
        g = dilated_conv_graph(dtypes[d], (const int64_t[]){3, 4}, (const int64_t[]){3, 4}, false);
        tsr_graph_destroy(run_pass(g, tsr_pass_trim_conv_taps, false));
        tsr_graph_destroy(g);
        g = dilated_conv_graph(dtypes[d], (const int64_t[]){9, 10}, (const int64_t[]){9, 10}, true);
        tsr_graph *copy = NULL;
        CHECK_OK(tsr_graph_clone(g, &copy));
        CHECK(!tsr_pass_trim_conv_taps(copy));
        tsr_graph_destroy(copy);
        tsr_graph_destroy(g);
    }
}

int main(void)
{
    test_fold_batchnorm();
    test_fold_batchnorm_refused();
    test_fuse_activation();
    test_fuse_refused();
    test_fuse_residual();
    test_mobilenet_chain();
    test_remove_identities();
    test_identities_kept();
    test_identity_output_renamed();
    test_borrowed_constants_untouched();
    test_symbolic_batch();
    test_rewrite_change_node_refuses();
    test_trim_conv_taps();
    CHECK(tsr_passes_run(NULL) == TSR_ERR_INVALID_ARGUMENT);
    return tsr_test_summary("test_passes");
}

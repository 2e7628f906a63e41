/* Sizes past what memory can hold, and work that a tiny model or file could
 * ask for: every case must give a clean error naming what is wrong (never a
 * wrapped count, a crash or a sanitizer report), and folding while building
 * must stop at the fold limit while plans still compute the right values. */
#include "core/core.h"
#include "harness.h"
#include "ir/graph.h"

#include <stdlib.h>
#include <string.h>

#define P2(k) ((int64_t)1 << (k))

/* The message holds every needle, and no negative number of a dozen
 * digits or more (a count that wrapped, such as -9223372036709301616). */
static void check_message(const char *const *needles, int n)
{
    const char *msg = tsr_last_error();
    for (int i = 0; i < n; i++)
        if (!strstr(msg, needles[i])) {
            CHECK(!"the message names the problem");
            fprintf(stderr, "  wanted '%s' in: %s\n", needles[i], msg);
        }
    for (const char *p = msg; *p; p++)
        if (p[0] == '-' && strspn(p + 1, "0123456789") >= 12) {
            CHECK(!"the message prints no wrapped count");
            fprintf(stderr, "  in: %s\n", msg);
            break;
        }
}

#define EXPECT(st, want, ...)                                                                      \
    do {                                                                                           \
        tsr_status got_ = (st);                                                                    \
        CHECK(got_ == (want));                                                                     \
        if (got_ != (want))                                                                        \
            fprintf(stderr, "  status %s, message: %s\n", tsr_status_name(got_),                   \
                    tsr_last_error());                                                             \
        const char *needles_[] = {__VA_ARGS__};                                                    \
        check_message(needles_, (int)(sizeof needles_ / sizeof needles_[0]));                      \
    } while (0)

static void test_size_helpers(void)
{
    int64_t r = -7;
    CHECK(tsr_size_mul(P2(31), P2(31), &r) && r == P2(62));
    CHECK(!tsr_size_mul(P2(31), P2(31) + 1, &r) && r == P2(62));
    CHECK(!tsr_size_mul(P2(62), 2, &r));
    CHECK(!tsr_size_mul(INT64_MAX, INT64_MAX, &r));
    CHECK(tsr_size_mul(0, INT64_MAX, &r) && r == 0);
    CHECK(!tsr_size_mul(-1, 2, &r));
    CHECK(tsr_size_add(P2(61), P2(61), &r) && r == P2(62));
    CHECK(!tsr_size_add(P2(62), 1, &r));
    CHECK(!tsr_size_add(INT64_MAX, INT64_MAX, &r));

    int64_t big[3] = {P2(31), P2(31), 4}, fits[2] = {P2(31), P2(31)};
    CHECK(tsr_shape_numel(3, big) == -1);
    CHECK(tsr_shape_numel(2, fits) == P2(62));
    /* A zero dim empties the tensor, but the others must still fit. */
    int64_t empty_ok[3] = {0, 5, 7}, empty_huge[3] = {0, P2(40), P2(40)};
    CHECK(tsr_shape_numel(3, empty_ok) == 0);
    CHECK(tsr_shape_numel(3, empty_huge) == -1);

    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {P2(60)}};
    CHECK(tsr_tensor_bytes(&t) == (size_t)P2(62));
    t.dims[0] = P2(61);
    CHECK(tsr_tensor_numel(&t) == P2(61) && tsr_tensor_bytes(&t) == SIZE_MAX);
    t.rank = 3;
    memcpy(t.dims, big, sizeof big);
    CHECK(tsr_tensor_numel(&t) == -1 && tsr_tensor_bytes(&t) == SIZE_MAX);
    /* No allocation satisfies SIZE_MAX, and none wraps to a small one. */
    CHECK(tsr_aligned_alloc(SIZE_MAX) == NULL && tsr_shared_alloc(SIZE_MAX) == NULL);
    CHECK(tsr_shared_alloc(SIZE_MAX - 10) == NULL);

    int64_t n = 0;
    EXPECT(tsr_shape_numel_checked(3, big, TSR_FLOAT32, "output 'y'", &n), TSR_ERR_SHAPE,
           "output 'y'", "[2147483648, 2147483648, 4]", "2^62");
    CHECK(n == -1);
    int64_t partly[2] = {TSR_DIM_UNKNOWN, 3};
    CHECK_OK(tsr_shape_numel_checked(2, partly, TSR_FLOAT64, "x", &n));
    CHECK(n == -1);
    int64_t partly_huge[3] = {TSR_DIM_UNKNOWN, P2(40), P2(40)};
    EXPECT(tsr_shape_numel_checked(3, partly_huge, TSR_INT8, "x", &n), TSR_ERR_SHAPE, "2^62");
}

/* ------------------------------------------------------------ builders */

static tsr_graph *new_graph(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    return g;
}

static void add_ints(tsr_graph *g, const char *name, int n, const int64_t *v)
{
    tsr_tensor t = {.dtype = TSR_INT64, .rank = 1, .dims = {n}, .data = (void *)v};
    CHECK_OK(tsr_graph_add_constant(g, name, &t));
}

static void add_scalar(tsr_graph *g, const char *name, int64_t v)
{
    tsr_tensor t = {.dtype = TSR_INT64, .rank = 0, .data = &v};
    CHECK_OK(tsr_graph_add_constant(g, name, &t));
}

static tsr_status add1(tsr_graph *g, const char *op, const char *name, int n_in,
                       const char *const *ins, const char *out)
{
    return tsr_graph_add_node(g, op, "", name, n_in, ins, 1, &out, 0, NULL);
}

/* The inputs of the issue: each shape inference must refuse the output,
 * naming the node, before anything is allocated. */
static void test_huge_outputs(void)
{
    tsr_graph *g = new_graph();
    add_scalar(g, "zero", 0);
    add_scalar(g, "p62", P2(62));
    add_scalar(g, "one", 1);
    const char *range_in[3] = {"zero", "p62", "one"};
    EXPECT(add1(g, "Range", "range", 3, range_in, "r"), TSR_ERR_SHAPE, "node 'range' (Range)",
           "output 'r'", "[4611686018427387904]", "2^62");

    int64_t s62[1] = {P2(62)}, s31[3] = {P2(31), P2(31), 4};
    add_ints(g, "s62", 1, s62);
    add_ints(g, "s31", 3, s31);
    const char *cos_in[1] = {"s62"};
    EXPECT(add1(g, "ConstantOfShape", "cos", 1, cos_in, "c"), TSR_ERR_SHAPE,
           "node 'cos' (ConstantOfShape)", "2^62");
    CHECK(tsr_graph_find_value(g, "c") < 0);

    int64_t x_dims[1] = {3};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 1, x_dims, NULL));
    const char *expand62[2] = {"x", "s62"}, *expand31[2] = {"x", "s31"};
    int64_t one_dims[1] = {1};
    CHECK_OK(tsr_graph_add_input(g, "x1", TSR_FLOAT32, 1, one_dims, NULL));
    expand62[0] = expand31[0] = "x1";
    EXPECT(add1(g, "Expand", "e62", 2, expand62, "e1"), TSR_ERR_SHAPE, "node 'e62' (Expand)",
           "2^62");
    EXPECT(add1(g, "Expand", "e31", 2, expand31, "e2"), TSR_ERR_SHAPE, "node 'e31' (Expand)",
           "[2147483648, 2147483648, 4]");

    /* Reshape: a target whose dims multiply past int64 (used to print a
     * wrapped element count). */
    int64_t rs[3] = {P2(40), P2(40), -1};
    add_ints(g, "rs", 3, rs);
    const char *reshape_in[2] = {"x", "rs"};
    EXPECT(add1(g, "Reshape", "reshape", 2, reshape_in, "rr"), TSR_ERR_SHAPE,
           "node 'reshape' (Reshape)", "more than 2^62 elements");
    int64_t rs2[2] = {P2(62), 4};
    add_ints(g, "rs2", 2, rs2);
    reshape_in[1] = "rs2";
    EXPECT(add1(g, "Reshape", "reshape2", 2, reshape_in, "rr2"), TSR_ERR_SHAPE, "2^62");

    /* Pad: pads that overflow int64 when added to the size. */
    int64_t pads[2] = {INT64_MAX, INT64_MAX}, pads62[2] = {P2(62), 0}, neg[2] = {-5, 0};
    add_ints(g, "pads", 2, pads);
    add_ints(g, "pads62", 2, pads62);
    add_ints(g, "neg", 2, neg);
    const char *pad_in[2] = {"x", "pads"};
    EXPECT(add1(g, "Pad", "pad", 2, pad_in, "p1"), TSR_ERR_SHAPE, "node 'pad' (Pad)",
           "larger than 2^62");
    pad_in[1] = "pads62";
    EXPECT(add1(g, "Pad", "pad62", 2, pad_in, "p2"), TSR_ERR_SHAPE, "larger than 2^62");
    pad_in[1] = "neg";
    EXPECT(add1(g, "Pad", "padneg", 2, pad_in, "p3"), TSR_ERR_SHAPE, "node 'padneg' (Pad)");

    /* Tile: repeats that multiply past the limit. */
    int64_t reps[1] = {P2(62)};
    add_ints(g, "reps", 1, reps);
    const char *tile_in[2] = {"x", "reps"};
    EXPECT(add1(g, "Tile", "tile", 2, tile_in, "t"), TSR_ERR_SHAPE, "node 'tile' (Tile)",
           "larger than 2^62");

    /* Concat of inputs that fit alone but not together. */
    int64_t half[1] = {P2(61)};
    CHECK_OK(tsr_graph_add_input(g, "a", TSR_UINT8, 1, half, NULL));
    const char *cat_in[4] = {"a", "a", "a", "a"};
    tsr_attr axis = TSR_ATTR_I("axis", 0);
    const char *cat_out = "cat";
    EXPECT(tsr_graph_add_node(g, "Concat", "", "concat", 4, cat_in, 1, &cat_out, 1, &axis),
           TSR_ERR_SHAPE, "node 'concat' (Concat)", "2^62");

    /* Split sizes that add up past int64. */
    int64_t split[2] = {P2(62), P2(62)};
    add_ints(g, "split", 2, split);
    const char *split_in[2] = {"x", "split"}, *split_out[2] = {"s1", "s2"};
    EXPECT(tsr_graph_add_node(g, "Split", "", "split_node", 2, split_in, 2, split_out, 0, NULL),
           TSR_ERR_SHAPE, "node 'split_node' (Split)", "more than 2^62");

    /* Graph inputs and constants too large to describe. */
    int64_t huge_in[2] = {P2(40), P2(40)};
    EXPECT(tsr_graph_add_input(g, "huge", TSR_FLOAT32, 2, huge_in, NULL), TSR_ERR_SHAPE,
           "input 'huge'", "2^62");
    CHECK(tsr_graph_find_value(g, "huge") < 0);
    float four[4] = {0};
    tsr_tensor lie = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {P2(62), 4}, .data = four};
    EXPECT(tsr_graph_add_constant(g, "lie", &lie), TSR_ERR_SHAPE, "constant 'lie'", "2^62");
    tsr_graph_destroy(g);
}

/* Shape inputs of the backward ops hold sizes from the data: a negative
 * one must not pass for a symbolic dim the graph does not have. */
static void test_negative_sizes(void)
{
    tsr_graph *g = new_graph();
    int64_t x_dims[2] = {0, 0};
    const char *names[2] = {"b", "n"};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, x_dims, names));
    int64_t shape[2] = {1, -7}, huge_neg[2] = {1, INT64_MIN};
    add_ints(g, "shape", 2, shape);
    add_ints(g, "huge_neg", 2, huge_neg);
    const char *ins[2] = {"x", "shape"}, *out = "y";
    EXPECT(tsr_graph_add_node(g, "SumTo", "ai.tessera", "sum_to", 2, ins, 1, &out, 0, NULL),
           TSR_ERR_SHAPE, "node 'sum_to' (SumTo)", "invalid size -7");
    ins[1] = "huge_neg"; /* the message prints it as given */
    CHECK(tsr_graph_add_node(g, "SumTo", "ai.tessera", "sum_to2", 2, ins, 1, &out, 0, NULL) ==
              TSR_ERR_SHAPE &&
          strstr(tsr_last_error(), "invalid size -9223372036854775808"));
    tsr_graph_destroy(g);
}

/* Conv and pooling windows with attributes that overflow the output size
 * arithmetic. */
static void test_window_arithmetic(void)
{
    tsr_graph *g = new_graph();
    int64_t x_dims[3] = {1, 1, 8};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 3, x_dims, NULL));
    float w[3] = {1, 2, 3};
    tsr_tensor wt = {.dtype = TSR_FLOAT32, .rank = 3, .dims = {1, 1, 3}, .data = w};
    CHECK_OK(tsr_graph_add_constant(g, "w", &wt));
    const char *ins[2] = {"x", "w"}, *out = "y";
    int64_t pads[2] = {INT64_MAX, INT64_MAX}, pads61[2] = {P2(61), P2(61) + 8};
    int64_t dil[1] = {P2(62)}, strides[1] = {INT64_MAX};
    tsr_attr a = TSR_ATTR_INTS("pads", pads, 2);
    EXPECT(tsr_graph_add_node(g, "Conv", "", "conv", 2, ins, 1, &out, 1, &a), TSR_ERR_SHAPE,
           "node 'conv' (Conv)", "'pads'[0]", "2^62");
    a = TSR_ATTR_INTS("pads", pads61, 2);
    EXPECT(tsr_graph_add_node(g, "Conv", "", "conv2", 2, ins, 1, &out, 1, &a), TSR_ERR_SHAPE,
           "node 'conv2' (Conv)", "passes 2^62");
    a = TSR_ATTR_INTS("dilations", dil, 1);
    EXPECT(tsr_graph_add_node(g, "Conv", "", "conv3", 2, ins, 1, &out, 1, &a), TSR_ERR_SHAPE,
           "node 'conv3' (Conv)", "passes 2^62");
    a = TSR_ATTR_INTS("strides", strides, 1);
    EXPECT(tsr_graph_add_node(g, "Conv", "", "conv4", 2, ins, 1, &out, 1, &a), TSR_ERR_SHAPE,
           "'strides'[0]");
    tsr_attr group = TSR_ATTR_I("group", INT64_MAX);
    EXPECT(tsr_graph_add_node(g, "Conv", "", "conv5", 2, ins, 1, &out, 1, &group), TSR_ERR_SHAPE,
           "node 'conv5' (Conv)");
    int64_t kernel[1] = {2};
    tsr_attr pool[2] = {TSR_ATTR_INTS("kernel_shape", kernel, 1), TSR_ATTR_INTS("pads", pads61, 2)};
    EXPECT(tsr_graph_add_node(g, "MaxPool", "", "pool", 1, ins, 1, &out, 2, pool), TSR_ERR_SHAPE,
           "node 'pool' (MaxPool)", "passes 2^62");
    tsr_graph_destroy(g);
}

/* ------------------------------------------------------------- folding */

static int n_nodes(const tsr_graph *g)
{
    tsr_graph_stats stats;
    CHECK_OK(tsr_graph_get_stats(g, &stats));
    return stats.n_nodes;
}

/* Builds Range(0, n, 1) into `g` as the output "r". */
static void build_range(tsr_graph *g, int64_t n)
{
    add_scalar(g, "start", 0);
    add_scalar(g, "limit", n);
    add_scalar(g, "delta", 1);
    const char *ins[3] = {"start", "limit", "delta"};
    CHECK_OK(add1(g, "Range", "range", 3, ins, "r"));
    CHECK_OK(tsr_graph_add_output(g, "r"));
}

/* Runs a graph without inputs on ref into `out` (allocated here). */
static void run_ref(const tsr_graph *g, tsr_tensor *out)
{
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = "ref";
    opts.threads = 1;
    tsr_plan *plan = NULL;
    memset(out, 0, sizeof *out);
    CHECK_OK(tsr_plan_create(g, &opts, &plan));
    if (!plan)
        return;
    CHECK_OK(tsr_plan_reshape(plan, 0, NULL));
    CHECK_OK(tsr_plan_output_desc(plan, 0, out));
    out->data = malloc(tsr_tensor_bytes(out) ? tsr_tensor_bytes(out) : 1);
    CHECK_OK(tsr_plan_run(plan, 0, NULL, 1, out));
    tsr_plan_destroy(plan);
}

static void test_fold_limit(void)
{
    /* 32 MiB of int64, past the default limit of 16 MiB: left to the plan,
     * which computes it correctly. */
    int64_t n = P2(22);
    CHECK(n * 8 > TSR_FOLD_LIMIT_DEFAULT);
    tsr_graph *g = new_graph();
    build_range(g, n);
    CHECK(n_nodes(g) == 1);
    tsr_tensor y;
    run_ref(g, &y);
    CHECK(y.dtype == TSR_INT64 && y.rank == 1 && y.dims[0] == n);
    bool right = y.data != NULL;
    for (int64_t i = 0; right && i < n; i++)
        right = ((const int64_t *)y.data)[i] == i;
    CHECK(right);
    free(y.data);
    tsr_graph_destroy(g);

    /* A small one folds away; with no limit the big one does too. */
    g = new_graph();
    build_range(g, 1000);
    CHECK(n_nodes(g) == 0);
    tsr_graph_destroy(g);
    g = new_graph();
    CHECK_OK(tsr_graph_set_fold_limit(g, -1));
    build_range(g, n);
    CHECK(n_nodes(g) == 0);
    tsr_graph_destroy(g);
    g = new_graph();
    EXPECT(tsr_graph_set_fold_limit(g, -2), TSR_ERR_INVALID_ARGUMENT, "tsr_graph_set_fold_limit");
    EXPECT(tsr_graph_set_fold_limit(NULL, 5), TSR_ERR_INVALID_ARGUMENT, "tsr_graph_set_fold_limit");
    tsr_graph_destroy(g);

    /* TSR_FOLD_LIMIT sets the limit of graphs created afterwards (the
     * importer's too); 0 folds nothing that takes bytes. */
    setenv("TSR_FOLD_LIMIT", "0", 1);
    g = new_graph();
    build_range(g, 10);
    CHECK(n_nodes(g) == 1);
    run_ref(g, &y);
    CHECK(y.dims[0] == 10 && y.data && ((const int64_t *)y.data)[9] == 9);
    free(y.data);
    tsr_graph_destroy(g);
    setenv("TSR_FOLD_LIMIT", "not a number", 1);
    g = new_graph();
    build_range(g, 10);
    CHECK(n_nodes(g) == 0);
    tsr_graph_destroy(g);
    unsetenv("TSR_FOLD_LIMIT");

    /* Work counts too: a MatMul of two 256 KiB constants (33.5 MFLOP) is
     * left to the plan; its result is 256 everywhere. */
    g = new_graph();
    int64_t shape[2] = {256, 256};
    add_ints(g, "shape", 2, shape);
    float one = 1.0f;
    tsr_tensor value = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {1}, .data = &one};
    tsr_attr va = TSR_ATTR_T("value", &value);
    const char *cos_in = "shape", *cos_out = "ones";
    CHECK_OK(tsr_graph_add_node(g, "ConstantOfShape", "", "cos", 1, &cos_in, 1, &cos_out, 1, &va));
    const char *mm_in[2] = {"ones", "ones"};
    CHECK_OK(add1(g, "MatMul", "mm", 2, mm_in, "prod"));
    CHECK_OK(tsr_graph_add_output(g, "prod"));
    CHECK(n_nodes(g) == 1);
    run_ref(g, &y);
    CHECK(y.rank == 2 && y.dims[0] == 256 && y.dims[1] == 256);
    right = y.data != NULL;
    for (int64_t i = 0; right && i < 256 * 256; i++)
        right = ((const float *)y.data)[i] == 256.0f;
    CHECK(right);
    free(y.data);
    tsr_graph_destroy(g);
}

/* -------------------------------------------------------------- plans */

/* Every intermediate is empty: the plan has no arena, and running it must
 * not form pointers from a NULL one. */
static void test_empty_intermediates(void)
{
    tsr_graph *g = new_graph();
    int64_t dims[2] = {0, 3};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, dims, NULL));
    const char *a = "x", *b = "h", *c = "y";
    CHECK_OK(add1(g, "Relu", "r1", 1, &a, "h"));
    CHECK_OK(add1(g, "Neg", "r2", 1, &b, "y"));
    CHECK_OK(tsr_graph_add_output(g, c));
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = "ref";
    tsr_plan *plan = NULL;
    CHECK_OK(tsr_plan_create(g, &opts, &plan));
    float dummy = 0;
    tsr_tensor x = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {0, 3}, .data = &dummy};
    tsr_tensor y = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {0, 3}, .data = &dummy};
    CHECK_OK(tsr_plan_run(plan, 1, &x, 1, &y));
    tsr_plan_stats stats;
    CHECK_OK(tsr_plan_get_stats(plan, &stats));
    CHECK(stats.arena_bytes == 0);
    /* Concrete input shapes past the limit are refused at reshape. */
    tsr_graph *g2 = new_graph();
    int64_t sym[1] = {0};
    const char *names[1] = {"n"};
    CHECK_OK(tsr_graph_add_input(g2, "x", TSR_FLOAT32, 1, sym, names));
    CHECK_OK(add1(g2, "Relu", "relu", 1, &a, "y"));
    CHECK_OK(tsr_graph_add_output(g2, "y"));
    tsr_plan *plan2 = NULL;
    CHECK_OK(tsr_plan_create(g2, &opts, &plan2));
    tsr_tensor big = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {P2(61)}, .data = &dummy};
    EXPECT(tsr_plan_reshape(plan2, 1, &big), TSR_ERR_SHAPE, "'x'", "2^62");
    tsr_plan_destroy(plan2);
    tsr_graph_destroy(g2);
    tsr_plan_destroy(plan);
    tsr_graph_destroy(g);
}

/* ------------------------------------------------------------- readers */

/* A .npy in memory whose header promises far more than the buffer holds:
 * refused from the buffer's own length (no fstat on an in-memory stream). */
static void test_npy_buffer_bounds(void)
{
    char buf[128];
    memset(buf, ' ', sizeof buf);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    const char *header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1073741824,), }";
    size_t header_len = 118;
    buf[8] = (char)header_len;
    buf[9] = 0;
    memcpy(buf + 10, header, strlen(header));
    buf[10 + header_len - 1] = '\n';
    tsr_tensor t = {0};
    EXPECT(tsr_npy_read_buffer(buf, sizeof buf, "member 'x'", &t), TSR_ERR_PARSE, "member 'x'",
           "truncated", "8589934592 bytes");
    CHECK(t.data == NULL);

    const char *empty_huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1099511627776, "
                             "1099511627776), }";
    memset(buf, ' ', sizeof buf);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)header_len;
    buf[9] = 0;
    memcpy(buf + 10, empty_huge, strlen(empty_huge));
    buf[10 + header_len - 1] = '\n';
    EXPECT(tsr_npy_read_buffer(buf, sizeof buf, "member 'y'", &t), TSR_ERR_PARSE, "member 'y'",
           "absurdly large", "2^62");
    CHECK(t.data == NULL);
}

int main(void)
{
    test_size_helpers();
    test_huge_outputs();
    test_window_arithmetic();
    test_negative_sizes();
    test_fold_limit();
    test_empty_intermediates();
    test_npy_buffer_bounds();
    return tsr_test_summary("test_limits");
}

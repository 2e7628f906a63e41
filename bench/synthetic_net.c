/* A network dominated by memory-bound stacks, built through the C API and
 * timed depth-first or layer by layer (bench/depth_first.py drives it and
 * runs the same graph, exported to ONNX, in ONNX Runtime):
 *
 *   x [N, 128, 56, 56] -> 1x1 Conv -> 4 x block -> GlobalAveragePool -> y
 *   block(h) = AvgPool3x3/1(SiLU(MaxPool3x3/1(Relu(h * scale + shift)) + h))
 *
 * with SiLU(a) = a * Sigmoid(a); CONV = 0 leaves the Conv out, so that the
 * blocks run on the plain NCHW input. Weights and input come from .npy
 * files, so that both engines see the same numbers.
 *
 *   cc -O2 -Iinclude bench/synthetic_net.c -Lbuild/lib -ltessera \
 *      -Wl,-rpath,$PWD/build/lib -o /tmp/synthetic_net
 *   /tmp/synthetic_net DIR X.npy THREADS ITERS DEPTH_FIRST CONV [OUT.npy]
 *
 * DIR holds conv_w.npy [128, 128, 1, 1] and scale{i}.npy, shift{i}.npy
 * [128, 1, 1] for i = 0..3. Prints one JSON line (min and median ms over
 * ITERS runs after two warm-up runs, arena bytes, stacks), then the step
 * profile of ITERS more runs and the plan's stacks on stderr. */
#include "tessera.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if ((expr) != TSR_OK) {                                                                    \
            fprintf(stderr, "synthetic_net: %s\n", tsr_last_error());                              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void add_weight(tsr_graph *g, const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    tsr_tensor t;
    CHECK(tsr_npy_read(path, &t));
    CHECK(tsr_graph_add_constant(g, name, &t));
    free(t.data);
}

static void node(tsr_graph *g, const char *op, const char *a, const char *b, const char *out,
                 int n_attrs, const tsr_attr *attrs)
{
    const char *ins[2] = {a, b};
    CHECK(tsr_graph_add_node(g, op, "", out, b ? 2 : 1, ins, 1, &out, n_attrs, attrs));
}

static tsr_graph *build(const char *dir, int64_t batch, int conv_first)
{
    tsr_graph *g;
    CHECK(tsr_graph_create(&g));
    int64_t dims[4] = {batch, 128, 56, 56};
    CHECK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 4, dims, NULL));
    int64_t k1[2] = {1, 1}, k3[2] = {3, 3}, ones[2] = {1, 1}, pads[4] = {1, 1, 1, 1};
    tsr_attr conv[1] = {{.name = "kernel_shape", .type = TSR_ATTR_INTS, .count = 2, .ints = k1}};
    if (conv_first) {
        add_weight(g, dir, "conv_w");
        node(g, "Conv", "x", "conv_w", "h0", 1, conv);
    }
    tsr_attr pool[4] = {
        {.name = "kernel_shape", .type = TSR_ATTR_INTS, .count = 2, .ints = k3},
        {.name = "strides", .type = TSR_ATTR_INTS, .count = 2, .ints = ones},
        {.name = "pads", .type = TSR_ATTR_INTS, .count = 4, .ints = pads},
        {.name = "count_include_pad", .type = TSR_ATTR_INT, .i = 0},
    };
    char h[16], v[8][32], w[2][16];
    snprintf(h, sizeof h, "%s", conv_first ? "h0" : "x");
    for (int i = 0; i < 4; i++) {
        snprintf(w[0], sizeof w[0], "scale%d", i);
        snprintf(w[1], sizeof w[1], "shift%d", i);
        add_weight(g, dir, w[0]);
        add_weight(g, dir, w[1]);
        for (int j = 0; j < 7; j++)
            snprintf(v[j], sizeof v[j], "b%d_%d", i, j);
        node(g, "Mul", h, w[0], v[0], 0, NULL);
        node(g, "Add", v[0], w[1], v[1], 0, NULL);
        node(g, "Relu", v[1], NULL, v[2], 0, NULL);
        node(g, "MaxPool", v[2], NULL, v[3], 3, pool);
        node(g, "Add", v[3], h, v[4], 0, NULL);
        node(g, "Sigmoid", v[4], NULL, v[5], 0, NULL);
        node(g, "Mul", v[4], v[5], v[6], 0, NULL);
        snprintf(h, sizeof h, "h%d", i + 1);
        node(g, "AveragePool", v[6], NULL, h, 4, pool);
    }
    node(g, "GlobalAveragePool", h, NULL, "y", 0, NULL);
    CHECK(tsr_graph_add_output(g, "y"));
    return g;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s DIR X.npy THREADS ITERS DEPTH_FIRST CONV [OUT.npy]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[3]), iters = atoi(argv[4]);
    if (iters < 1 || iters > 1000)
        iters = 5;
    tsr_tensor x;
    CHECK(tsr_npy_read(argv[2], &x));
    tsr_graph *g = build(argv[1], x.dims[0], atoi(argv[6]));
    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = "cpu";
    opts.threads = threads;
    opts.depth_first = atoi(argv[5]);
    tsr_plan *plan;
    CHECK(tsr_plan_create(g, &opts, &plan));
    CHECK(tsr_plan_reshape(plan, 1, &x));
    tsr_tensor y;
    CHECK(tsr_plan_output_desc(plan, 0, &y));
    y.data = malloc(tsr_tensor_bytes(&y));
    double *times = calloc((size_t)iters, sizeof *times);
    if (!y.data || !times)
        return 1;
    for (int i = 0; i < 2 + iters; i++) {
        double t0 = now_ms();
        CHECK(tsr_plan_run(plan, 1, &x, 1, &y));
        if (i >= 2)
            times[i - 2] = now_ms() - t0;
    }
    qsort(times, (size_t)iters, sizeof *times, compare_double);
    tsr_plan_stats stats;
    CHECK(tsr_plan_get_stats(plan, &stats));
    printf("{\"batch\": %lld, \"threads\": %d, \"depth_first\": %d, \"min_ms\": %.4f, "
           "\"median_ms\": %.4f, \"arena_bytes\": %zu, \"n_stacks\": %d, \"n_stack_ops\": %d}\n",
           (long long)x.dims[0], threads, opts.depth_first, times[0], times[iters / 2],
           stats.arena_bytes, stats.n_stacks, stats.n_stack_ops);
    fflush(stdout);
    CHECK(tsr_plan_set_profiling(plan, 1));
    for (int i = 0; i < iters; i++)
        CHECK(tsr_plan_run(plan, 1, &x, 1, &y));
    CHECK(tsr_plan_print_profile(plan, stderr));
    CHECK(tsr_plan_print_stacks(plan, stderr));
    if (argc > 7)
        CHECK(tsr_npy_write(argv[7], &y));
    tsr_plan_destroy(plan);
    tsr_graph_destroy(g);
    free(x.data);
    free(y.data);
    free(times);
    return 0;
}

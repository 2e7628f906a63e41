/* A complete use of the C API: build y = relu(x W + b) for any batch size,
 * plan it for the default device, run it on caller-owned buffers.
 * With a path argument it loads that ONNX model instead and lists its
 * inputs and outputs. Built and run by the test suite. */
#include <stdio.h>
#include <tessera.h>

#define TRY(call)                                                                                \
    do {                                                                                         \
        if ((call) != TSR_OK) {                                                                  \
            fprintf(stderr, "error: %s\n", tsr_last_error());                                    \
            goto done;                                                                           \
        }                                                                                        \
    } while (0)

static int describe(const char *path)
{
    tsr_graph *graph = NULL;
    int rc = 1;
    TRY(tsr_graph_load_onnx_file(path, &graph));
    for (int i = 0; i < tsr_graph_num_inputs(graph); i++) {
        tsr_value_info info;
        TRY(tsr_graph_input_info(graph, i, &info));
        printf("input %s: %s, rank %d\n", info.name, tsr_dtype_name(info.dtype), info.rank);
    }
    rc = 0;
done:
    tsr_graph_destroy(graph);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return describe(argv[1]);

    tsr_graph *graph = NULL;
    tsr_plan *plan = NULL;
    int rc = 1;

    /* Weights: W is 3x2, b is 2. */
    float w[6] = {1, -1, 0.5f, 2, -2, 0};
    float b[2] = {0.25f, -0.5f};
    tsr_tensor w_t = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {3, 2}, .data = w};
    tsr_tensor b_t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {2}, .data = b};

    TRY(tsr_graph_create(&graph));
    const int64_t dims[2] = {-1, 3};
    const char *dim_names[2] = {"batch", NULL}; /* any batch size */
    TRY(tsr_graph_add_input(graph, "x", TSR_FLOAT32, 2, dims, dim_names));
    TRY(tsr_graph_add_constant(graph, "W", &w_t));
    TRY(tsr_graph_add_constant(graph, "b", &b_t));
    TRY(tsr_graph_add_node(graph, "MatMul", "", "matmul", 2, (const char *[]){"x", "W"}, 1,
                           (const char *[]){"xw"}, 0, NULL));
    TRY(tsr_graph_add_node(graph, "Add", "", "bias", 2, (const char *[]){"xw", "b"}, 1,
                           (const char *[]){"pre"}, 0, NULL));
    TRY(tsr_graph_add_node(graph, "Relu", "", "relu", 1, (const char *[]){"pre"}, 1,
                           (const char *[]){"y"}, 0, NULL));
    TRY(tsr_graph_add_output(graph, "y"));

    tsr_compile_options options;
    tsr_compile_options_init(&options);
    options.threads = 1;
    TRY(tsr_plan_create(graph, &options, &plan));

    float x[2][3] = {{1, 2, 3}, {-1, 0, 1}};
    float y[2][2];
    tsr_tensor in = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {2, 3}, .data = x};
    tsr_tensor out = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {2, 2}, .data = y};
    TRY(tsr_plan_run(plan, 1, &in, 1, &out));

    /* relu([1,2,3] W + b) = relu([-3.75, 2.5]) = [0, 2.5], and so on. */
    const float expected[2][2] = {{0.0f, 2.5f}, {0.0f, 0.5f}};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            if (y[i][j] != expected[i][j]) {
                fprintf(stderr, "y[%d][%d] = %g, expected %g\n", i, j, y[i][j], expected[i][j]);
                goto done;
            }
    printf("y = [[%g, %g], [%g, %g]]\n", y[0][0], y[0][1], y[1][0], y[1][1]);
    rc = 0;
done:
    tsr_plan_destroy(plan);
    tsr_graph_destroy(graph);
    return rc;
}

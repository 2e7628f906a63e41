/* Plans: specialization by shape, the liveness arena, caller buffers and
 * run-time errors. */
#include "harness.h"
#include "tessera.h"

#include <math.h>
#include <string.h>

/* x -> Neg -> Exp -> Neg -> Exp ... : a chain needs two live buffers at a
 * time, however long it is. */
static tsr_graph *chain(int length)
{
    tsr_graph *g = NULL;
    if (tsr_graph_create(&g) != TSR_OK)
        return NULL;
    const int64_t dims[] = {-1, 7};
    const char *names[] = {"batch", NULL};
    tsr_graph_add_input(g, "x", TSR_FLOAT64, 2, dims, names);
    char prev[32] = "x", next[32];
    for (int i = 0; i < length; i++) {
        snprintf(next, sizeof next, "v%d", i);
        const char *op = i % 2 ? "Tanh" : "Neg";
        tsr_graph_add_node(g, op, "", NULL, 1, (const char *[]){prev}, 1, (const char *[]){next}, 0,
                           NULL);
        memcpy(prev, next, sizeof prev);
    }
    tsr_graph_add_output(g, prev);
    return g;
}

static double reference(double x, int length)
{
    for (int i = 0; i < length; i++)
        x = i % 2 ? tanh(x) : -x;
    return x;
}

static void test_arena_reuse(void)
{
    const int length = 9;
    tsr_graph *g = chain(length);
    CHECK(g != NULL);
    tsr_plan *p = NULL;
    CHECK_OK(tsr_plan_create(g, NULL, &p));
    tsr_graph_destroy(g); /* the plan keeps its own copy */
    double x[4 * 7], y[4 * 7];
    for (int i = 0; i < 4 * 7; i++)
        x[i] = 0.1 * i - 1.0;
    tsr_tensor in = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {4, 7}, .data = x};
    tsr_tensor out = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {4, 7}, .data = y};
    CHECK_OK(tsr_plan_run(p, 1, &in, 1, &out));
    for (int i = 0; i < 4 * 7; i++)
        CHECK(fabs(y[i] - reference(x[i], length)) < 1e-12);
    tsr_plan_stats st;
    CHECK_OK(tsr_plan_get_stats(p, &st));
    size_t one = 4 * 7 * sizeof(double);
    size_t one_aligned = (one + 63) / 64 * 64;
    CHECK(st.arena_bytes == 2 * one_aligned);
    CHECK(st.n_steps == length);

    /* Another batch size: a new specialization, same results. */
    tsr_tensor in1 = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {1, 7}, .data = x};
    tsr_tensor out1 = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {1, 7}, .data = y};
    CHECK_OK(tsr_plan_reshape(p, 1, &in1));
    tsr_tensor desc;
    CHECK_OK(tsr_plan_output_desc(p, 0, &desc));
    CHECK(desc.rank == 2 && desc.dims[0] == 1 && desc.dims[1] == 7 && desc.dtype == TSR_FLOAT64);
    CHECK_OK(tsr_plan_run(p, 1, &in1, 1, &out1));
    CHECK(fabs(y[3] - reference(x[3], length)) < 1e-12);
    CHECK_OK(tsr_plan_run(p, 1, &in, 1, &out));
    CHECK(fabs(y[20] - reference(x[20], length)) < 1e-12);
    tsr_plan_destroy(p);
}

static void test_run_errors(void)
{
    tsr_graph *g = chain(2);
    tsr_plan *p = NULL;
    CHECK_OK(tsr_plan_create(g, NULL, &p));
    double x[14], y[14];
    float xf[14];
    tsr_tensor out = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {2, 7}, .data = y};

    tsr_tensor wrong_dtype = {.dtype = TSR_FLOAT32, .rank = 2, .dims = {2, 7}, .data = xf};
    CHECK(tsr_plan_run(p, 1, &wrong_dtype, 1, &out) == TSR_ERR_DTYPE);
    CHECK(strstr(tsr_last_error(), "float64") && strstr(tsr_last_error(), "'x'"));
    tsr_tensor wrong_shape = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {2, 6}, .data = x};
    CHECK(tsr_plan_run(p, 1, &wrong_shape, 1, &out) == TSR_ERR_SHAPE);
    CHECK(strstr(tsr_last_error(), "[2, 6]") != NULL);
    tsr_tensor wrong_rank = {.dtype = TSR_FLOAT64, .rank = 1, .dims = {14}, .data = x};
    CHECK_FAILS(tsr_plan_run(p, 1, &wrong_rank, 1, &out), TSR_ERR_SHAPE, "got [14]");
    tsr_tensor in = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {2, 7}, .data = x};
    CHECK_FAILS(tsr_plan_run(p, 0, NULL, 1, &out), TSR_ERR_INVALID_ARGUMENT, "1 input");
    tsr_tensor small_out = {.dtype = TSR_FLOAT64, .rank = 2, .dims = {1, 7}, .data = y};
    CHECK(tsr_plan_run(p, 1, &in, 1, &small_out) == TSR_ERR_SHAPE);
    CHECK(strstr(tsr_last_error(), "[2, 7]") != NULL);

    tsr_compile_options opts;
    tsr_compile_options_init(&opts);
    opts.device = "tpu";
    tsr_plan *bad = NULL;
    CHECK(tsr_plan_create(g, &opts, &bad) == TSR_ERR_UNSUPPORTED && bad == NULL);
    CHECK(strstr(tsr_last_error(), "tpu") != NULL);
    tsr_plan_destroy(p);
    tsr_graph_destroy(g);
}

static void test_passthrough_outputs(void)
{
    /* Outputs that no kernel writes: an input, a constant, a value twice. */
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {3};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 1, dims, NULL));
    float c[3] = {1, 2, 3};
    tsr_tensor ct = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = c};
    CHECK_OK(tsr_graph_add_constant(g, "c", &ct));
    CHECK_OK(tsr_graph_add_node(g, "Relu", "", NULL, 1, (const char *[]){"x"}, 1,
                                (const char *[]){"r"}, 0, NULL));
    CHECK_OK(tsr_graph_add_output(g, "x"));
    CHECK_OK(tsr_graph_add_output(g, "c"));
    CHECK_OK(tsr_graph_add_output(g, "r"));
    CHECK_OK(tsr_graph_add_output(g, "r"));
    tsr_plan *p = NULL;
    CHECK_OK(tsr_plan_create(g, NULL, &p));
    float x[3] = {-1, 0.5f, 2}, o[4][3];
    memset(o, 0, sizeof o);
    tsr_tensor in = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = x};
    tsr_tensor outs[4];
    for (int i = 0; i < 4; i++)
        outs[i] = (tsr_tensor){.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = o[i]};
    CHECK_OK(tsr_plan_run(p, 1, &in, 4, outs));
    CHECK(o[0][0] == -1 && o[1][2] == 3 && o[2][0] == 0 && o[3][2] == 2 && o[3][0] == 0);
    tsr_plan_destroy(p);
    tsr_graph_destroy(g);
}

int main(void)
{
    test_arena_reuse();
    test_run_errors();
    test_passthrough_outputs();
    return tsr_test_summary("test_plan");
}

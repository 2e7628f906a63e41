/* tsr_graph_gradient: the graph it builds (names, inputs, outputs, a run)
 * and its errors, which leave no graph behind. */
#include "harness.h"
#include "tessera.h"

#include <stdlib.h>
#include <string.h>

/* y = Relu(x) * w + k (k an int64 input cast to float), w a parameter. */
static tsr_graph *build(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {2, 3};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, dims, NULL));
    CHECK_OK(tsr_graph_add_input(g, "k", TSR_INT64, 2, dims, NULL));
    float w[3] = {1.0f, -2.0f, 0.5f};
    tsr_tensor wt = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {3}, .data = w};
    CHECK_OK(tsr_graph_add_parameter(g, "w", &wt));
    CHECK_OK(tsr_graph_add_node(g, "Relu", "", "relu", 1, (const char *[]){"x"}, 1,
                                (const char *[]){"r"}, 0, NULL));
    CHECK_OK(tsr_graph_add_node(g, "Mul", "", "mul", 2, (const char *[]){"r", "w"}, 1,
                                (const char *[]){"m"}, 0, NULL));
    tsr_attr to = TSR_ATTR_I("to", TSR_FLOAT32);
    CHECK_OK(tsr_graph_add_node(g, "Cast", "", "cast", 1, (const char *[]){"k"}, 1,
                                (const char *[]){"kf"}, 1, &to));
    CHECK_OK(tsr_graph_add_node(g, "Add", "", "add", 2, (const char *[]){"m", "kf"}, 1,
                                (const char *[]){"y"}, 0, NULL));
    CHECK_OK(tsr_graph_add_output(g, "y"));
    return g;
}

static void test_gradient_graph(void)
{
    tsr_graph *g = build(), *gg = NULL;
    const char *outs[] = {"y"}, *wrt[] = {"x", "w"};
    CHECK_OK(tsr_graph_gradient(g, 1, outs, 2, wrt, &gg));
    tsr_graph_destroy(g); /* the result stands on its own */
    if (!gg)
        return;
    CHECK(tsr_graph_num_inputs(gg) == 3 && tsr_graph_num_outputs(gg) == 3);
    tsr_value_info info;
    CHECK_OK(tsr_graph_input_info(gg, 2, &info));
    CHECK(strcmp(info.name, "y__seed") == 0 && info.rank == 2 && info.dims[1] == 3);
    CHECK_OK(tsr_graph_output_info(gg, 1, &info));
    CHECK(strcmp(info.name, "x__grad") == 0);
    CHECK_OK(tsr_graph_output_info(gg, 2, &info));
    CHECK(strcmp(info.name, "w__grad") == 0 && info.rank == 1 && info.dims[0] == 3);

    float x[6] = {1, -1, 2, -2, 3, 0.5f}, seed[6] = {1, 1, 1, 2, 2, 2}, y[6], gx[6], gw[3];
    int64_t k[6] = {3, -1, 0, 7, 2, -4};
    tsr_tensor ins[3] = {
        {TSR_FLOAT32, 2, {2, 3}, x}, {TSR_INT64, 2, {2, 3}, k}, {TSR_FLOAT32, 2, {2, 3}, seed}};
    tsr_tensor outs_t[3] = {
        {TSR_FLOAT32, 2, {2, 3}, y}, {TSR_FLOAT32, 2, {2, 3}, gx}, {TSR_FLOAT32, 1, {3}, gw}};
    tsr_plan *plan = NULL;
    CHECK_OK(tsr_plan_create(gg, NULL, &plan));
    CHECK_OK(tsr_plan_run(plan, 3, ins, 3, outs_t));
    const float w[3] = {1.0f, -2.0f, 0.5f};
    /* the forward output comes along, and the int64 input feeds it but no gradient */
    for (int i = 0; i < 6; i++)
        CHECK(y[i] == (x[i] > 0 ? x[i] : 0.0f) * w[i % 3] + (float)k[i]);
    for (int i = 0; i < 6; i++)
        CHECK(gx[i] == (x[i] > 0 ? seed[i] * w[i % 3] : 0.0f));
    for (int j = 0; j < 3; j++) {
        float want = 0;
        for (int r = 0; r < 2; r++)
            want += (x[r * 3 + j] > 0 ? x[r * 3 + j] : 0) * seed[r * 3 + j];
        CHECK(gw[j] == want);
    }
    tsr_plan_destroy(plan);
    tsr_graph_destroy(gg);
}

static void expect_error(const char *const *outs, int n_outs, const char *const *wrt, int n_wrt,
                         tsr_status status, const char *text)
{
    tsr_graph *g = build(), *gg = (tsr_graph *)g; /* must come back NULL */
    tsr_status st = tsr_graph_gradient(g, n_outs, outs, n_wrt, wrt, &gg);
    CHECK(st == status);
    CHECK(gg == NULL);
    if (!strstr(tsr_last_error(), text)) {
        fprintf(stderr, "message '%s' lacks '%s'\n", tsr_last_error(), text);
        CHECK(!"error message");
    }
    tsr_graph_destroy(g);
}

static void test_errors(void)
{
    const char *y[] = {"y"}, *x[] = {"x"};
    expect_error((const char *[]){"nope"}, 1, x, 1, TSR_ERR_NOT_FOUND, "no value 'nope'");
    expect_error(y, 1, (const char *[]){"nope"}, 1, TSR_ERR_NOT_FOUND, "'nope'");
    expect_error(y, 1, (const char *[]){"k"}, 1, TSR_ERR_DTYPE, "'k' is int64");
    expect_error(y, 1, (const char *[]){"m"}, 1, TSR_ERR_INVALID_ARGUMENT,
                 "neither a graph input nor a parameter");
    expect_error((const char *[]){"y", "y"}, 2, x, 1, TSR_ERR_INVALID_ARGUMENT, "twice");
    expect_error(y, 0, x, 1, TSR_ERR_INVALID_ARGUMENT, "at least one output");
    expect_error(y, 1, (const char *[]){NULL}, 1, TSR_ERR_INVALID_ARGUMENT, "NULL");
    CHECK(tsr_graph_gradient(NULL, 1, y, 1, x, NULL) == TSR_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    test_gradient_graph();
    test_errors();
    return tsr_test_summary("test_autodiff");
}

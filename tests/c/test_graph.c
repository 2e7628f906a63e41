/* The builder, shape inference with symbolic dims, build-time folding,
 * the verifier, the printer and error reporting. */
#include "harness.h"
#include "ir/graph.h"
#include "ops/op.h"
#include "tessera.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_symbolic_dims(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {-1, 3, 5};
    const char *names[] = {"batch", NULL, NULL};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 3, dims, names));
    CHECK_OK(tsr_graph_add_node(g, "Relu", "", "relu", 1, (const char *[]){"x"}, 1,
                                (const char *[]){"y"}, 0, NULL));
    CHECK_OK(tsr_graph_add_node(g, "Sigmoid", "ai.onnx", "sig", 1, (const char *[]){"y"}, 1,
                                (const char *[]){"z"}, 0, NULL));
    CHECK_OK(tsr_graph_add_output(g, "z"));
    tsr_value_info info;
    CHECK_OK(tsr_graph_output_info(g, 0, &info));
    CHECK(info.rank == 3 && info.dims[0] == -1 && info.dim_names[0] &&
          strcmp(info.dim_names[0], "batch") == 0 && info.dims[1] == 3 && info.dims[2] == 5);
    CHECK(info.dtype == TSR_FLOAT32);
    CHECK(tsr_graph_num_inputs(g) == 1 && tsr_graph_num_outputs(g) == 1);
    CHECK_OK(tsr_graph_verify(g));
    tsr_graph_stats st;
    CHECK_OK(tsr_graph_get_stats(g, &st));
    CHECK(st.n_nodes == 2 && st.n_op_types == 2 && st.n_parameters == 0);

    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    CHECK_OK(tsr_graph_print(g, mem));
    fclose(mem);
    CHECK(text && strstr(text, "%z = Sigmoid(%y)") && strstr(text, "float32[batch,3,5]"));
    free(text);
    tsr_graph_destroy(g);
}

static void test_folding(void)
{
    /* A node whose inputs are all constants is evaluated at build time. */
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    float c[4] = {-1.0f, 0.0f, 2.0f, -3.5f};
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = 1, .dims = {4}, .data = c};
    CHECK_OK(tsr_graph_add_constant(g, "c", &t));
    CHECK_OK(tsr_graph_add_node(g, "Abs", "", NULL, 1, (const char *[]){"c"}, 1,
                                (const char *[]){"a"}, 0, NULL));
    CHECK(g->n_nodes == 0);
    int v = tsr_graph_find_value(g, "a");
    CHECK(v >= 0 && g->values[v].data != NULL);
    if (v >= 0 && g->values[v].data) {
        const float *a = g->values[v].data;
        CHECK(a[0] == 1.0f && a[1] == 0.0f && a[2] == 2.0f && a[3] == 3.5f);
    }
    /* The caller's buffer was copied, not kept. */
    c[0] = 42.0f;
    int cv = tsr_graph_find_value(g, "c");
    CHECK(cv >= 0 && ((const float *)g->values[cv].data)[0] == -1.0f);
    tsr_graph_destroy(g);
}

static void test_parameters_are_not_folded(void)
{
    /* Nodes reading a parameter stay nodes (gradients must reach it);
     * plans fold them like any constant. */
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    double w[3] = {-1.0, 2.0, -3.0};
    tsr_tensor t = {.dtype = TSR_FLOAT64, .rank = 1, .dims = {3}, .data = w};
    CHECK_OK(tsr_graph_add_parameter(g, "w", &t));
    CHECK_OK(tsr_graph_add_node(g, "Abs", "", NULL, 1, (const char *[]){"w"}, 1,
                                (const char *[]){"a"}, 0, NULL));
    CHECK_OK(tsr_graph_add_output(g, "a"));
    CHECK(g->n_nodes == 1);
    tsr_plan *p = NULL;
    CHECK_OK(tsr_plan_create(g, NULL, &p));
    CHECK_OK(tsr_plan_reshape(p, 0, NULL));
    tsr_plan_stats st;
    CHECK_OK(tsr_plan_get_stats(p, &st));
    CHECK(st.n_steps == 0);
    double a[3] = {0};
    tsr_tensor out = {.dtype = TSR_FLOAT64, .rank = 1, .dims = {3}, .data = a};
    CHECK_OK(tsr_plan_run(p, 0, NULL, 1, &out));
    CHECK(a[0] == 1.0 && a[1] == 2.0 && a[2] == 3.0);
    tsr_plan_destroy(p);
    tsr_tensor ints = {.dtype = TSR_INT64, .rank = 1, .dims = {3}, .data = w};
    CHECK_FAILS(tsr_graph_add_parameter(g, "i", &ints), TSR_ERR_DTYPE, "'i'");
    tsr_graph_destroy(g);
}

static void test_errors_leave_graph_intact(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {2, 2};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT32, 2, dims, NULL));
    int values_before = g->n_values;

    tsr_status st = tsr_graph_add_node(g, "NoSuchOp", "", "n1", 1, (const char *[]){"x"}, 1,
                                       (const char *[]){"y"}, 0, NULL);
    CHECK(st == TSR_ERR_UNSUPPORTED && strstr(tsr_last_error(), "NoSuchOp"));
    st = tsr_graph_add_node(g, "Relu", "", "n2", 1, (const char *[]){"missing"}, 1,
                            (const char *[]){"y"}, 0, NULL);
    CHECK(st == TSR_ERR_NOT_FOUND && strstr(tsr_last_error(), "missing") &&
          strstr(tsr_last_error(), "n2"));
    st = tsr_graph_add_node(g, "Relu", "", "n3", 1, (const char *[]){"x"}, 1, (const char *[]){"x"},
                            0, NULL);
    CHECK(st == TSR_ERR_INVALID_ARGUMENT && strstr(tsr_last_error(), "defined twice"));
    tsr_attr bad = TSR_ATTR_F("beta", 1.0);
    st = tsr_graph_add_node(g, "LeakyRelu", "", "n4", 1, (const char *[]){"x"}, 1,
                            (const char *[]){"y"}, 1, &bad);
    CHECK(st == TSR_ERR_UNSUPPORTED && strstr(tsr_last_error(), "beta"));
    tsr_attr wrong_type = TSR_ATTR_I("alpha", 1);
    st = tsr_graph_add_node(g, "LeakyRelu", "", "n5", 1, (const char *[]){"x"}, 1,
                            (const char *[]){"y"}, 1, &wrong_type);
    CHECK(st == TSR_ERR_PARSE && strstr(tsr_last_error(), "alpha"));
    st = tsr_graph_add_node(g, "Relu", "", "n6", 2, (const char *[]){"x", "x"}, 1,
                            (const char *[]){"y"}, 0, NULL);
    CHECK(st == TSR_ERR_PARSE && strstr(tsr_last_error(), "inputs"));
    st = tsr_graph_add_node(g, "Relu", "", "n7", 1, (const char *[]){""}, 1, (const char *[]){"y"},
                            0, NULL);
    CHECK(st == TSR_ERR_PARSE && strstr(tsr_last_error(), "required input 0"));
    CHECK_FAILS(tsr_graph_add_output(g, "nothing"), TSR_ERR_NOT_FOUND, "'nothing'");
    CHECK_FAILS(tsr_graph_add_input(g, "bad", (tsr_dtype)5, 1, dims, NULL), TSR_ERR_DTYPE, "'bad'");
    CHECK_FAILS(tsr_graph_set_opset(g, 10), TSR_ERR_UNSUPPORTED, "10");

    CHECK(g->n_values == values_before && g->n_nodes == 0);
    CHECK_OK(tsr_graph_add_node(g, "Relu", "", "ok", 1, (const char *[]){"x"}, 1,
                                (const char *[]){"y"}, 0, NULL));
    CHECK_OK(tsr_graph_verify(g));
    tsr_graph_destroy(g);
}

static void test_dead_code(void)
{
    tsr_graph *g = NULL;
    CHECK_OK(tsr_graph_create(&g));
    const int64_t dims[] = {3};
    CHECK_OK(tsr_graph_add_input(g, "x", TSR_FLOAT64, 1, dims, NULL));
    CHECK_OK(tsr_graph_add_node(g, "Exp", "", NULL, 1, (const char *[]){"x"}, 1,
                                (const char *[]){"unused"}, 0, NULL));
    CHECK_OK(tsr_graph_add_node(g, "Neg", "", NULL, 1, (const char *[]){"x"}, 1,
                                (const char *[]){"y"}, 0, NULL));
    CHECK_OK(tsr_graph_add_output(g, "y"));
    CHECK(tsr_graph_remove_dead(g));
    CHECK(g->n_nodes == 1 && tsr_graph_find_value(g, "unused") < 0);
    CHECK(!tsr_graph_remove_dead(g)); /* safe to run twice */
    CHECK_OK(tsr_graph_verify(g));
    tsr_graph_destroy(g);
}

static void test_registry(void)
{
    /* Every op in the table is complete enough to be used. */
    for (int i = 0; i < tsr_op_count(); i++) {
        const tsr_op_def *op = tsr_op_at(i);
        CHECK(op->name && op->domain && op->infer);
        CHECK(op->min_inputs <= op->max_inputs && op->min_outputs <= op->max_outputs);
        CHECK(tsr_op_find(op->domain, op->name) == op);
    }
}

int main(void)
{
    test_symbolic_dims();
    test_folding();
    test_parameters_are_not_folded();
    test_errors_leave_graph_intact();
    test_dead_code();
    test_registry();
    return tsr_test_summary("test_graph");
}
